"""run.sh with wrong options and hostile paths: a clear rejection, or it works and no shell runs the data."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from espnet2_ext.data.datadir import DataDir, is_complete
from espnet2_ext.utils.fileio import read_kaldi_text
from tests.recipe import run_recipe

# Characters a shell would act on; the id has no whitespace (Kaldi ids cannot), the folder has.
WEIRD_ID = "fleurs_lit_0$(touch${IFS}pwned);'\"`x`&|<>*?!#"
WEIRD_DIR = "my corpus $(touch pwned); 'x' \"y\" `z` & |"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stage", "2", "--stop_stage", "2", "--corpus_config", "", "--mlsuperb_root", "/no/such/dir"],
         "--mlsuperb_root /no/such/dir is not a directory"),
        (["--stage", "2", "--stop_stage", "2", "--corpus_config", ""], "--mlsuperb_root is required for real data"),
        (["--stage", "5", "--stop_stage", "5", "--step1_config", "/no/such.yaml"], "--step1_config /no/such.yaml not found"),
        (["--stage", "4", "--stop_stage", "4"], "exp/ssl/upstream.json not found; run stage 3 (ssl) first"),
        (["--stage", "0"], "unknown stage 0"),
        (["--stage", "two"], "--stage and --stop_stage must be numbers"),
        (["--ngpu", "-1"], "--ngpu must be a non-negative integer"),
        (["--gpu_inference", "yes"], "--gpu_inference must be true or false (got 'yes')"),
        (["--step2_seeds", "1 two"], "--step2_seeds must be space-separated non-negative integers (got '1 two')"),
    ],
)  # fmt: skip
def test_missing_paths_and_wrong_values_are_named(
    repo_root: Path, cli_env: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    r = run_recipe(["--workdir", str(tmp_path / "wd"), *args], cli_env, cwd=repo_root)
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_config_file_is_named(repo_root: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    r = subprocess.run([str(repo_root / "run.sh"), "--config", "nope.yaml", "--stage", "11"], cwd=tmp_path,
                       env=cli_env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2
    assert f"{tmp_path}/nope.yaml" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", ["with space", "a,b"])
def test_workdir_that_espnet_cannot_take_is_rejected(
    repo_root: Path, cli_env: dict[str, str], tmp_path: Path, name: str
) -> None:
    r = run_recipe(["--workdir", str(tmp_path / name), "--stage", "11"], cli_env, cwd=repo_root)
    assert r.returncode == 2
    assert "contains whitespace or a comma" in r.stderr and "choose a path without them" in r.stderr


def _weird_mlsuperb(root: Path) -> list[str]:
    d = root / "fleurs" / "lit"
    (d / "wav").mkdir(parents=True)
    ids = {"1h_train": [WEIRD_ID, "fleurs_lit_000001"], "10min_train": ["fleurs_lit_000001"],
           "10min_dev": ["fleurs_lit_000100"], "10min_test": ["fleurs_lit_000200"]}  # fmt: skip
    for split, utts in ids.items():
        (d / f"transcript_{split}.txt").write_text("".join(f"{u} x labas rytas\n" for u in utts), encoding="utf-8")
        for u in utts:
            sf.write(d / "wav" / f"{u}.wav", 0.1 * np.sin(np.arange(4000) / 5.0), 16000, subtype="PCM_16")
    return [WEIRD_ID, "fleurs_lit_000001"]


def test_stage2_with_shell_characters_in_ids_and_paths(repo_root: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / WEIRD_DIR
    train_ids = _weird_mlsuperb(root)
    wd = tmp_path / "wd$(touch${IFS}pwned);'x'&"
    r = run_recipe(["--workdir", str(wd), "--stage", "2", "--stop_stage", "2", "--corpus_config", "",
                           "--mlsuperb_root", str(root), "--librispeech_root", "", "--nj", "2"], cli_env, cwd=repo_root)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    for d in (tmp_path, repo_root, wd):
        assert not (d / "pwned").exists(), "a shell ran part of a path or id"
    train = DataDir.load(wd / "data" / "train")
    assert is_complete(wd / "data" / "train") and train.utt_ids == sorted(train_ids)
    assert train.wav_scp[WEIRD_ID] == str(root / "fleurs" / "lit" / "wav" / f"{WEIRD_ID}.wav")
    # ESPnet's own reader of wav.scp (the training data loader's) gets the same path back
    from espnet2.fileio.read_text import read_2columns_text

    assert read_2columns_text(wd / "data" / "train" / "wav.scp")[WEIRD_ID] == train.wav_scp[WEIRD_ID]
    assert read_kaldi_text(wd / "data" / "train" / "utt2num_samples")[WEIRD_ID] == "4000"
