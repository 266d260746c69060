"""compare_workdirs: what counts as the same output in two work directories."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import torch

from espnet2_ext.utils.workdir_diff import compare_workdirs


def _checkpoint(path: Path, weight: float, seconds: float) -> None:
    """An ESPnet-like resume checkpoint: model, optimizer, reporter stats with timings and a NaN metric."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stats = {1: {"train": {"loss": np.float64(1.5), "iter_time": seconds, "train_time": seconds * 3,
                           "time": datetime.timedelta(seconds=seconds)},
                 "valid": {"loss": 1.25, "acc": float("nan")}}}
    torch.save({"model": {"w": torch.full((2, 2), weight)}, "optimizers": [{"state": {}, "param_groups": [{"lr": 1e-3}]}],
                "reporter": {"stats": stats, "epoch": 1}}, path)


def _workdir(root: Path) -> Path:
    (root / "exp/a").mkdir(parents=True)
    (root / "exp/a/config.yaml").write_text(f"output_dir: {root}/exp/a\nlr: 0.001\n")
    (root / "exp/a/text").write_text("u1 HELLO\n")
    (root / "log").mkdir()
    (root / "log/train.log").write_text(f"# started at {root.name}\n")
    return root


def test_paths_of_each_workdir_and_logs_do_not_count(tmp_path: Path) -> None:
    a, b = _workdir(tmp_path / "local"), _workdir(tmp_path / "slurm")
    d = compare_workdirs(a, b)
    assert d.same and d.identical == ["exp/a/config.yaml", "exp/a/text"] and d.skipped == ["log/train.log"]


def test_a_changed_or_missing_output_is_reported(tmp_path: Path) -> None:
    a, b = _workdir(tmp_path / "local"), _workdir(tmp_path / "slurm")
    (b / "exp/a/text").write_text("u1 HELO\n")
    (a / "exp/a/extra").write_text("x")
    (b / "exp/a/config.yaml").write_text(f"output_dir: {b}/exp/a\nlr: 0.002\n")
    d = compare_workdirs(a, b)
    assert not d.same
    assert d.differing == ["exp/a/config.yaml", "exp/a/text"] and d.only_in_a == ["exp/a/extra"] and not d.only_in_b


def test_checkpoints_differing_only_in_timings_are_equivalent(tmp_path: Path) -> None:
    a, b = _workdir(tmp_path / "local"), _workdir(tmp_path / "slurm")
    _checkpoint(a / "exp/a/checkpoint.pth", 0.5, 1.0)
    _checkpoint(b / "exp/a/checkpoint.pth", 0.5, 2.5)
    d = compare_workdirs(a, b)
    assert d.same and d.equivalent == ["exp/a/checkpoint.pth"]
    _checkpoint(b / "exp/a/checkpoint.pth", 0.5 + 1e-7, 1.0)  # other weights, same timings
    d = compare_workdirs(a, b)
    assert d.differing == ["exp/a/checkpoint.pth"] and not d.equivalent


def test_sentencepiece_models_compare_with_their_training_paths_relative_to_the_workdir(tmp_path: Path) -> None:
    """bpe.model records its input file and prefix: workdir paths of different lengths must not count."""
    from espnet2_ext.tokenizer.bpe import train_bpe

    def workdir(root: Path, text: str) -> Path:
        (root / "units").mkdir(parents=True)
        (root / "units/text").write_text("".join(f"u{i} {text}\n" for i in range(20)), encoding="utf-8")
        train_bpe(root / "units/text", root / "units/src_bpe", vocab_size=8)
        return root

    a = workdir(tmp_path / "a", "abcabd")
    b = workdir(tmp_path / "a_much_longer_name", "abcabd")
    assert (a / "units/src_bpe/bpe.model").read_bytes() != (b / "units/src_bpe/bpe.model").read_bytes()
    assert "units/src_bpe/bpe.model" in compare_workdirs(a, b).identical
    c = workdir(tmp_path / "c", "abcabe")  # other training text: another model
    assert "units/src_bpe/bpe.model" in compare_workdirs(a, c).differing
