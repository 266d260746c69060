"""The whole recipe on the tiny corpus, stage 4 to 13, as a user runs it; then audio-in decoding of the pack.

Stages 1-3 come from the shared tiny workdir and stages 4-13 are the shared run
``tiny_recipe_stages_4_13`` (tests/conftest.py), which the SLURM test compares its own run with. Two
unit systems (the single-layer baseline and the two-step system) keep it to a few minutes. The tests
that hide the workdir or rerun the recipe on it hold the run's lock meanwhile.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from espnet2_ext.data.datadir import select_utterances
from espnet2_ext.utils.fileio import read_kaldi_text
from tests.recipe import STAGES_4_13_OPTS, SharedRun, run_recipe

TEST_SETS = ["test_1h", "dev_clean", "dev_other", "test_clean", "test_other"]


@pytest.fixture(scope="module")
def workdir(tiny_recipe_stages_4_13: SharedRun) -> Path:
    return tiny_recipe_stages_4_13.workdir


def test_every_stage_leaves_its_artefacts(workdir: Path) -> None:
    weights = json.loads((workdir / "exp/step1_step0/layer_weights.json").read_text())
    assert sum(weights["weights"]) == pytest.approx(1.0, abs=1e-5)
    for system in ("baseline", "twostep"):
        assert (workdir / f"exp/kmeans/{system}/centroids.npy").is_file()
        assert (workdir / f"dump/units/{system}/src_bpe/bpe.model").is_file()
        for s in TEST_SETS:
            refs = read_kaldi_text(workdir / "data" / s / "text")
            hyps = read_kaldi_text(workdir / f"exp/step2_{system}/decode/{s}/text", allow_empty_value=True)
            assert set(hyps) == set(refs), (system, s)
        scores = json.loads((workdir / f"exp/step2_{system}/score/scores.json").read_text())
        assert scores["summary"]["bitrate"]["pooled_bps"] > 0  # discrete systems carry a bitrate
    assert json.loads((workdir / "exp/step1_step0/score/scores.json").read_text())["summary"]["mlsuperb"]
    # steps 0-2 validate on valid_max_utts (conf/recipe/tiny.yaml: 10) of dev's 14, spread over it
    dev = list(read_kaldi_text(workdir / "data/dev/wav.scp"))
    expected = select_utterances(dev, 10)
    assert len(dev) > len(expected) == 10
    for stats in ("exp/step0/stats", "exp/step1_stats", "exp/step2_baseline/stats", "exp/step2_twostep/stats"):
        assert sorted(read_kaldi_text(workdir / stats / "valid/text_shape")) == expected, stats
    # stages 4-10 ran as two chains at once (STAGES_4_13_OPTS: --parallel_chains true), each through all of them
    rows = [line.split("\t") for line in (workdir / "log/stage_times.tsv").read_text().splitlines()]
    assert [r[0] for r in rows if not r[4]] == ["4-10", "11", "12", "13"]
    assert sorted((int(r[0]), r[4]) for r in rows if r[4]) == [(n, c) for n in range(4, 11) for c in ("ssl", "step0")]
    spans = {}
    for chain in ("ssl", "step0"):
        times = [line[:19] for line in (workdir / f"log/chain_{chain}.log").read_text().splitlines()
                 if line[19:28] == " run.sh: "]
        spans[chain] = (times[0], times[-1])
    assert spans["ssl"][0] < spans["step0"][1] and spans["step0"][0] < spans["ssl"][1], spans  # they overlapped
    # chain ssl: the single-layer baseline (pre-trained model); chain step0: step 0 and the two-step system
    assert "step 2 baseline: training" in (workdir / "log/chain_ssl.log").read_text()
    assert "step 2 twostep: training" in (workdir / "log/chain_step0.log").read_text()
    assert "step 0: training" in (workdir / "log/chain_step0.log").read_text()
    # every job ran under python -O (run.sh's default --typecheck false), which its log header says
    job_logs = sorted(p for p in workdir.glob("log/**/*.log") if not p.name.startswith("chain_"))  # run.sh's own
    assert len(job_logs) > 20
    assert [p for p in job_logs if "\n# PYTHONOPTIMIZE=1: " not in p.read_text()] == []


def test_results_md_compares_the_systems(workdir: Path) -> None:
    text = (workdir / "RESULTS.md").read_text(encoding="utf-8")
    for key in ("step2_baseline", "step2_twostep", "step1_step0"):
        assert f"(`{key}`)" in text
    assert "## The two-step effect" in text and "Two-step units vs single-layer units" in text
    # stage 12 writes RESULTS.md, so the wall-time table holds the stages before it
    assert "REAL data" in text and "| 11 | score |" in text and "| 4-10 | chains |" in text
    assert "| 4 | finetune (chain step0) | (" in text
    assert (workdir / "per_language_cer.png").read_bytes()[:4] == b"\x89PNG"


def test_recognize_on_the_moved_pack_reproduces_the_recipe(workdir: Path, cli_env: dict[str, str], tmp_path: Path,
                                                           tiny_recipe_stages_4_13: SharedRun) -> None:
    archive = workdir / "exp/pack/twostep.tar.gz"
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    pack = tmp_path / "unpacked/twostep"
    manifest = json.loads((pack / "pack.json").read_text())
    assert manifest["ssl"]["included"] and manifest["system"] == "twostep"
    # the recipe's work directory must not be needed: hide it while decoding
    hidden = workdir.with_name(workdir.name + ".hidden")
    wav_scp = tmp_path / "wav.scp"
    shutil.copy(workdir / "data/test_1h/wav.scp", wav_scp)
    expected = read_kaldi_text(workdir / "exp/step2_twostep/decode/test_1h/text", allow_empty_value=True)
    # the audio itself lives in the shared corpus, not in this workdir
    assert all(not p.startswith(str(workdir)) for p in read_kaldi_text(wav_scp).values())
    with tiny_recipe_stages_4_13.lock:  # no other module's test may look for it meanwhile
        workdir.rename(hidden)
        try:
            r = subprocess.run([sys.executable, "-m", "espnet2_ext.bin.recognize", "--model_dir", str(pack),
                                "--wav_scp", str(wav_scp), "--output", str(tmp_path / "hyp"), "--batch_size", "4"],
                               cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=900)
        finally:
            hidden.rename(workdir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_kaldi_text(tmp_path / "hyp", allow_empty_value=True) == expected


def test_rerun_skips_every_finished_stage(workdir: Path, cli_env: dict[str, str],
                                         tiny_recipe_stages_4_13: SharedRun) -> None:
    before = (workdir / "exp/step2_twostep/decode/test_1h/text").stat().st_mtime_ns
    with tiny_recipe_stages_4_13.lock:
        r = run_recipe(["--workdir", str(workdir), "--stage", "5", "--stop_stage", "10", *STAGES_4_13_OPTS], cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (workdir / "exp/step2_twostep/decode/test_1h/text").stat().st_mtime_ns == before
    assert "already" in r.stderr
