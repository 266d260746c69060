"""Stages 5 (step 1) and 6 (weights) on the tiny recipe: train, export the layer weights, decode, score.

The module works on its own copy of the shared tiny workdir's data and SSL record (tests/conftest.py),
so it never races tests/test_step0.py over exp/step0: stage 4 runs with step 0 off (exp/step0 is
then stage 3's SSL model), and one step-1 run (on 'step0') decodes two test sets.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from espnet2_ext.frontend.layer_weights import LayerWeights
from espnet2_ext.ssl import checkpoint_sha256
from espnet2_ext.utils.fileio import read_kaldi_text
from tests.recipe import run_recipe

SETS = ["test_1h", "dev_clean"]
STEP1 = ["--step1_upstreams", "step0", "--test_sets", " ".join(SETS)]


@pytest.fixture(scope="module")
def workdir(repo_root: Path, cli_env: dict[str, str], tiny_recipe_workdir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("step1")
    shutil.copytree(tiny_recipe_workdir / "data", wd / "data", ignore=shutil.ignore_patterns("token_list"))
    shutil.copytree(tiny_recipe_workdir / "exp/ssl", wd / "exp/ssl")
    r = run_recipe(["--workdir", str(wd), "--stage", "4", "--stop_stage", "6", "--step0_config", "", *STEP1],
               cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    return wd


def test_stage_options_are_checked(repo_root: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    r = run_recipe(["--workdir", str(tmp_path), "--stage", "5", "--stop_stage", "5",
                           "--step1_upstreams", "ssl wavlm"], cli_env)
    assert r.returncode == 2 and "unknown upstream source 'wavlm'" in r.stderr
    r = run_recipe(["--workdir", str(tmp_path), "--stage", "5", "--stop_stage", "5",
                           "--step1_upstreams", "ssl"], cli_env)
    assert r.returncode == 2 and f"{tmp_path}/exp/ssl/upstream.json not found; run stage 3 (ssl) first" in r.stderr


def test_training_keeps_the_upstream_out_of_every_checkpoint(workdir: Path) -> None:
    exp = workdir / "exp/step1_step0"
    config = yaml.safe_load((exp / "config.yaml").read_text())
    record = json.loads((workdir / "exp/step0/upstream.json").read_text())
    assert config["frontend_conf"]["upstream"] == record["upstream"] and config["frontend_conf"]["freeze_upstream"]
    checkpoints = sorted(exp.glob("*.pth"))
    assert {"valid.loss.ave.pth", "checkpoint.pth"} <= {p.name for p in checkpoints}
    for path in checkpoints:
        state = torch.load(path, map_location="cpu", weights_only=False)
        model = state["model"] if path.name == "checkpoint.pth" else state
        assert "frontend.layer_weights" in model, path
        assert not [k for k in model if k.startswith("frontend.upstream.")], path


def test_exported_weights_match_the_checkpoint(workdir: Path) -> None:
    exp = workdir / "exp/step1_step0"
    lw = LayerWeights.read(exp / "layer_weights.json")
    record = json.loads((workdir / "exp/step0/upstream.json").read_text())
    state = torch.load(exp / "valid.loss.ave.pth", map_location="cpu", weights_only=True)
    assert len(lw.weights) == lw.num_hidden_states == record["num_hidden_states"]
    assert sum(lw.weights) == pytest.approx(1.0)
    torch.testing.assert_close(torch.tensor(lw.weights, dtype=torch.float32),
                               torch.softmax(state["frontend.layer_weights"], 0))
    assert lw.checkpoint == str(exp / "valid.loss.ave.pth")
    assert lw.checkpoint_sha256 == checkpoint_sha256(exp / "valid.loss.ave.pth")
    assert lw.upstream == record["upstream"] and lw.upstream_sha256 == record["sha256"]
    assert max(lw.weights) > min(lw.weights), "training moved the weights away from uniform"
    assert (exp / "layer_weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_test_sets_are_decoded_and_scored(workdir: Path) -> None:
    exp = workdir / "exp/step1_step0"
    for s in SETS:
        hyps = read_kaldi_text(exp / "decode" / s / "text", allow_empty_value=True)
        assert list(hyps) == list(read_kaldi_text(workdir / "data" / s / "text")), s
    # one job per shard decodes every set (ESPnet imported once per job): the shards' keys split each set
    for s in SETS:
        shards = [list(read_kaldi_text(k)) for k in sorted((exp / "decode" / s).glob("output.*/keys.scp"))]
        assert sorted(sum(shards, [])) == sorted(read_kaldi_text(workdir / "data" / s / "wav.scp")), s
    logs = sorted(p.name for p in (workdir / "log/step1_step0").glob("decode*.log"))
    assert logs == ["decode.1.log", "decode.2.log"]
    scores = json.loads((exp / "score/scores.json").read_text())
    assert sorted(scores["sets"]) == sorted(SETS)
    assert all(v["n_utts"] > 0 and v["ref_chars"] > 0 for v in scores["sets"].values())
    assert (exp / "score/scores.md").is_file()


def test_rerun_skips_both_stages(workdir: Path, repo_root: Path, cli_env: dict[str, str]) -> None:
    exp = workdir / "exp/step1_step0"
    before = {p: (exp / p).stat().st_mtime_ns for p in ("valid.loss.ave.pth", "layer_weights.json", "score/scores.json")}
    r = run_recipe(["--workdir", str(workdir), "--stage", "5", "--stop_stage", "6", *STEP1], cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step 1 on step0 already trained" in r.stderr and "already exported and scored" in r.stderr
    assert {p: (exp / p).stat().st_mtime_ns for p in before} == before
