"""Utterances too short for step 1's encoder subsampling: named before training, never a traceback mid-run.

A tiny SSL model (3 hidden states x 32 dims, 20 ms frames) and step 1's tiny config with a
``conv2d`` input layer (4x subsampling, at least 7 SSL frames) over a data dir holding an
utterance of 400 samples (1 SSL frame: ESPnet would stop with TooShortUttError) and one of 0.2 s
with a 20-character transcript (1 encoder frame: CTC cannot emit it).
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from espnet2_ext.bin import step1
from tests.recipe import REPO_ROOT

FS = 16000
# utt -> (samples, transcript)
UTTS = {
    "a_long": (16000, "ab ab"),
    "b_tiny": (400, "a"),
    "c_dense": (3200, "abcdefghij" * 2),
    "d_long": (24000, "ba ba ba"),
    "e_long": (20000, "a b"),
}


@pytest.fixture(scope="module")
def upstream_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from espnet2_ext.ssl.checkpoints import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("ssl")
    path = write_tiny_checkpoint("hf_wav2vec2_custom", root / "model")
    out = root / "upstream.json"
    out.write_text(json.dumps({"upstream": {"name": "hf_wav2vec2_custom", "path": str(path), "cache_dir": None},
                               "sha256": "1" * 64, "num_hidden_states": 3, "hidden_size": 32}))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def conv2d_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = yaml.safe_load((REPO_ROOT / "conf/step1/tiny.yaml").read_text())
    config["encoder_conf"]["input_layer"] = "conv2d"  # 4x subsampling
    path = tmp_path_factory.mktemp("conf") / "conv2d.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_data(root: Path, utts: list[str]) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("wav.scp", []), ("text", []), ("utt2num_samples", [])):
        for utt in utts:
            n, text = UTTS[utt]
            if name == "wav.scp":
                sf.write(root / f"{utt}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32), FS)
            value = {"wav.scp": str(root / f"{utt}.wav"), "text": text, "utt2num_samples": str(n)}[name]
            rows.append(f"{utt} {value}\n")
        (root / name).write_text("".join(rows))
    return root


def check(config: Path, upstream: Path, data: Path, out: Path, max_infeasible: float) -> int:
    return step1.main(["check_lengths", "--config", str(config), "--upstream_json", str(upstream), "--data_dir",
                       str(data), "--max_infeasible", str(max_infeasible), "--out", str(out)])  # fmt: skip


def test_an_utterance_too_short_for_the_subsampling_is_named_with_the_fix(
    conv2d_config: Path, upstream_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = write_data(tmp_path / "train", list(UTTS))
    assert check(conv2d_config, upstream_json, data, tmp_path / "report.json", max_infeasible=1.0) == 1
    err = capsys.readouterr().err
    assert "1 utterance(s) of" in err and "b_tiny (400 samples, 1 SSL frames)" in err and "TooShortUttError" in err
    assert "input_layer with less subsampling" in err and "a_long" not in err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["encoder_subsampling"] == 4 and report["too_short_for_encoder"] == 1


def test_utterances_too_short_for_ctc_are_counted_logged_and_fail_above_the_threshold(
    conv2d_config: Path, upstream_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = write_data(tmp_path / "train", ["a_long", "c_dense", "d_long", "e_long"])
    with caplog.at_level(logging.WARNING):
        assert check(conv2d_config, upstream_json, data, tmp_path / "ok.json", max_infeasible=0.5) == 0
    assert "1 of 4 utterances" in caplog.text and "c_dense (1 encoder frames, CTC needs 20)" in caplog.text
    report = json.loads((tmp_path / "ok.json").read_text())
    assert report["ctc_infeasible"] == 1 and report["ctc_infeasible_fraction"] == 0.25
    assert report["ctc_infeasible_examples"] == ["c_dense (1 encoder frames, CTC needs 20)"]

    assert check(conv2d_config, upstream_json, data, tmp_path / "fail.json", max_infeasible=0.05) == 1
    err = capsys.readouterr().err
    assert "25.0% of the utterances" in err and "c_dense" in err and "--step1_max_ctc_infeasible" in err


def test_stage5_stops_before_training_naming_the_utterance(
    conv2d_config: Path, upstream_json: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    wd = tmp_path / "wd"
    write_data(wd / "data/train", list(UTTS))
    write_data(wd / "data/dev", ["a_long", "d_long"])
    (wd / "exp/ssl").mkdir(parents=True)
    (wd / "exp/ssl/upstream.json").write_text(upstream_json.read_text())
    r = subprocess.run([str(REPO_ROOT / "run.sh"), "--config", "conf/recipe/tiny.yaml", "--workdir", str(wd),
                        "--stage", "5", "--stop_stage", "5", "--step1_upstreams", "ssl", "--step1_config",
                        str(conv2d_config)], cwd=REPO_ROOT, env=cli_env, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert r.returncode != 0
    assert "b_tiny (400 samples, 1 SSL frames)" in r.stderr and "TooShortUttError" in r.stderr, r.stderr[-3000:]
    assert json.loads((wd / "exp/step1_ssl/length_check.json").read_text())["too_short_for_encoder"] == 1
    assert not (wd / "exp/step1_stats").exists() and not (wd / "exp/step1_ssl/.done").exists(), "no training ran"
