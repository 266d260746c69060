"""End to end on the tiny corpus: run.sh stages corpus -> data -> score, as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from espnet2_ext.utils.fileio import read_kaldi_text
from tests.recipe import run_recipe

SETS = ["train", "dev", "test_1h", "dev_clean", "dev_other", "test_clean", "test_other"]
FILES = ["wav.scp", "text", "utt2spk", "spk2utt", "utt2lang", "utt2num_samples"]


@pytest.fixture(scope="module")
def workdir(tiny_recipe_workdir: Path) -> Path:
    return tiny_recipe_workdir


def test_data_dirs_are_complete_and_consistent(workdir: Path) -> None:
    for s in SETS:
        d = workdir / "data" / s
        assert (d / ".done").is_file(), s
        tables = {f: read_kaldi_text(d / f) for f in FILES if f != "spk2utt"}
        ids = list(tables["wav.scp"])
        assert ids and ids == sorted(ids), s
        for f, t in tables.items():
            assert list(t) == ids, (s, f)
        assert all(Path(p).is_file() for p in tables["wav.scp"].values())
    langs = set(read_kaldi_text(workdir / "data/train/utt2lang").values())
    assert "eng" in langs and len(langs) >= 4
    # train = ML-SUPERB train + LibriSpeech train-clean-100: both parts are there
    train_ids = read_kaldi_text(workdir / "data/train/text")
    assert any("_" in u for u in train_ids) and any("_" not in u for u in train_ids)
    # one log per measuring job
    assert (workdir / "log/data/measure_train.1.log").is_file() and (workdir / "log/data/measure_train.2.log").is_file()


def test_score_stage_scores_every_system(workdir: Path, repo_root: Path, cli_env: dict[str, str]) -> None:
    sets = ["test_1h", "dev_clean", "dev_other", "test_clean", "test_other"]
    for s in sets:  # an oracle system (hyp = ref) and a system that drops the last word
        refs = read_kaldi_text(workdir / "data" / s / "text")
        for system, fn in (("oracle", lambda t: t), ("chopped", lambda t: t.rsplit(" ", 1)[0])):
            out = workdir / "exp" / system / "decode" / s
            out.mkdir(parents=True, exist_ok=True)
            (out / "text").write_text("".join(f"{u} {fn(t)}\n" for u, t in refs.items()))
    r = run_recipe(["--workdir", str(workdir), "--stage", "11", "--stop_stage", "11"], cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    oracle = json.loads((workdir / "exp/oracle/score/scores.json").read_text())
    chopped = json.loads((workdir / "exp/chopped/score/scores.json").read_text())
    assert "test_1h" in (workdir / "exp/oracle/score/scores.md").read_text()
    assert set(oracle["sets"]) == set(sets)
    assert all(v["errors"] == 0 and v["ref_chars"] > 0 for v in oracle["sets"].values())
    # dropping the last word is pure deletion: the word and the space before it
    for v in chopped["sets"].values():
        assert v["del"] > 0 and v["sub"] == 0 and v["ins"] == 0
    en = chopped["summary"]["librispeech_micro"]
    assert en["complete"] and en["sets"] == ["dev_clean", "dev_other", "test_clean", "test_other"]
    assert en["errors"] == sum(chopped["sets"][s]["errors"] for s in en["sets"])
    assert chopped["summary"]["mlsuperb"]["errors"] == chopped["sets"]["test_1h"]["errors"]
    for system in ("oracle", "chopped"):  # the workdir is shared: remove only what this test made
        shutil.rmtree(workdir / "exp" / system)


def test_rerun_skips_completed_stages(workdir: Path, repo_root: Path, cli_env: dict[str, str]) -> None:
    before = (workdir / "data/train/text").stat().st_mtime_ns
    r = run_recipe(["--workdir", str(workdir), "--stop_stage", "2"], cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "corpus already complete" in r.stderr
    assert "data/train is complete" in r.stderr
    assert (workdir / "data/train/text").stat().st_mtime_ns == before


def test_ssl_stage_pretrains_and_records_the_upstream(workdir: Path, repo_root: Path, cli_env: dict[str, str]) -> None:
    info = json.loads((workdir / "exp/ssl/upstream.json").read_text())
    assert info["upstream"] == {"name": "hf_wav2vec2_custom", "path": str(workdir / "exp/ssl_pretrain/model"),
                                "cache_dir": None}
    assert info["num_hidden_states"] == 3 and info["hidden_size"] == 32 and info["frame_rate_hz"] == 50.0
    assert (workdir / "log/ssl_pretrain.log").read_text().count("dev PER") >= 1
    assert (workdir / "exp/ssl_pretrain/train.ipa").is_file()
    # a rerun reuses the pre-trained model
    r = run_recipe(["--workdir", str(workdir), "--stage", "3", "--stop_stage", "3"], cli_env)
    assert r.returncode == 0 and "pre-trained SSL model already in" in r.stderr
