"""Stages 7 (kmeans) and 8 (units) on the tiny recipe, for the two-step system (learned weights).

The module works on its own copy of the shared tiny workdir's data and SSL record (tests/conftest.py):
exp/step0 is stage 3's SSL model (step 0 off) and step 1's layer_weights.json is written here, so the
stages run without step 1's real outputs. Unit tests of each piece (all feature modes, sharding,
BPE, the frontend) are in tests/tokenizer/.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

from espnet2_ext.tokenizer.bpe import read_units
from espnet2_ext.tokenizer.features import FeatureExtractor
from espnet2_ext.tokenizer.unit_model import UnitModel
from espnet2_ext.tokenizer.unit_text import dedup, units_to_text
from espnet2_ext.utils.fileio import read_kaldi_text
from tests.recipe import run_recipe

SETS = ["test_1h", "dev_clean"]
LOGITS = [0.3, -0.8, 1.1]
ARGS = ["--unit_systems", "twostep", "--test_sets", " ".join(SETS)]


@pytest.fixture(scope="module")
def workdir(cli_env: dict[str, str], tiny_recipe_workdir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("units")
    shutil.copytree(tiny_recipe_workdir / "data", wd / "data", ignore=shutil.ignore_patterns("token_list"))
    shutil.copytree(tiny_recipe_workdir / "exp/ssl", wd / "exp/ssl")
    shutil.copytree(wd / "exp/ssl", wd / "exp/step0")
    info = json.loads((wd / "exp/ssl/upstream.json").read_text())
    w = np.exp(LOGITS) / np.exp(LOGITS).sum()
    (wd / "exp/step1_step0").mkdir(parents=True)
    (wd / "exp/step1_step0/layer_weights.json").write_text(json.dumps({
        "weights": w.tolist(), "logits": LOGITS, "layers": [0, 1, 2], "normalize_layers": False,
        "num_hidden_states": 3, "upstream": info["upstream"], "upstream_sha256": info["sha256"],
        "checkpoint": "valid.loss.ave.pth", "checkpoint_sha256": "0" * 64}))
    r = run_recipe(["--workdir", str(wd), "--stage", "7", "--stop_stage", "8", *ARGS], cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    return wd


def test_unit_model_holds_step_1s_weights_and_an_espnet_export(workdir: Path) -> None:
    exp = workdir / "exp/kmeans/twostep"
    model = UnitModel.load(exp)
    assert model.k == 16 and model.dim == 32
    assert model.spec.mode == "learned" and list(model.spec.logits) == LOGITS
    assert model.spec.upstream == json.loads((workdir / "exp/step0/upstream.json").read_text())["upstream"]
    assert model.meta["frames_dumped"] > model.meta["frames_fit"] == 16 * 256, "fit on a bounded sample"
    assert (exp / "km_16.mdl").is_file() and (exp / ".done").is_file()
    assert not (exp / "feats").exists(), "the feature dump is removed once the model is learned"
    assert not (workdir / "exp/kmeans/baseline").exists(), "--unit_systems selects the systems"


def test_every_set_has_units_strings_and_tokens_by_the_contract(workdir: Path) -> None:
    out = workdir / "dump/units/twostep"
    model = UnitModel.load(workdir / "exp/kmeans/twostep")
    extractor = FeatureExtractor(model.spec)
    sp = spm.SentencePieceProcessor(model_file=str(out / "src_bpe/bpe.model"))
    for name in ["train", "dev", *SETS]:
        samples = {u: int(n) for u, n in read_kaldi_text(workdir / f"data/{name}/utt2num_samples").items()}
        units = read_units(out / name / "units")
        assert list(units) == sorted(samples), name
        frames = extractor.num_frames(torch.tensor(list(samples.values()))).tolist()
        assert [len(units[u]) for u in samples] == frames, "one unit per frame"
        text, tokens = read_kaldi_text(out / name / "text"), read_kaldi_text(out / name / "tokens")
        assert all(text[u] == units_to_text(dedup(units[u])) for u in units)
        assert all(sp.decode_pieces(tokens[u].split()) == text[u] for u in units)
    token_list = (out / "src_bpe/tokens.txt").read_text(encoding="utf-8").splitlines()
    assert token_list[:2] == ["<blank>", "<unk>"] and token_list[-1] == "<sos/eos>"


def test_stats_give_rates_and_the_challenge_bitrate(workdir: Path) -> None:
    stats = json.loads((workdir / "dump/units/twostep/stats.json").read_text())
    assert list(stats["sets"]) == ["train", "dev", *SETS]
    for name, s in stats["sets"].items():
        units = read_units(workdir / f"dump/units/twostep/{name}/units")
        assert s["frames"] == s["units"]["tokens"] == sum(map(len, units.values()))
        assert s["units"]["tokens"] >= s["dedup"]["tokens"]
        assert s["units"]["bitrate"] == pytest.approx(s["units"]["tokens"] / s["seconds"] * math.log2(16))
        assert s["bpe"]["vocab_size"] == stats["bpe_vocab_size"]
    assert stats["summary"]["eval_sets"] == SETS
    assert "| test_1h |" in (workdir / "dump/units/twostep/stats.md").read_text()


def test_rerun_skips_and_unknown_systems_are_errors(workdir: Path, cli_env: dict[str, str]) -> None:
    before = (workdir / "dump/units/twostep/test_1h/units").stat().st_mtime_ns
    r = run_recipe(["--workdir", str(workdir), "--stage", "7", "--stop_stage", "8", *ARGS], cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "unit model twostep already learned" in r.stderr and "units of twostep already dumped" in r.stderr
    assert (workdir / "dump/units/twostep/test_1h/units").stat().st_mtime_ns == before
    r = run_recipe(["--workdir", str(workdir), "--stage", "7", "--stop_stage", "7", "--unit_systems", "twostp"],
               cli_env)
    assert r.returncode != 0 and "unknown unit system(s) ['twostp']" in r.stderr
