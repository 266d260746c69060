"""Checkpoints are loaded with ``weights_only=True``: a pickle that would run code is refused, unexecuted.

The trust boundary (which files are still unpickled, and why) is documented in docs/robustness.md.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from espnet2_ext.ssl import SSLUpstream, UpstreamSpec
from espnet2_ext.ssl.upstream import infer_upstream_name
from espnet2_ext.tasks.common import load_model_file_checked


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint in s3prl's converted layout whose weights hide a payload, and its marker file."""
    marker = tmp_path / "code_ran"
    ckpt = tmp_path / "evil.pt"
    torch.save({"task_cfg": {}, "model_cfg": {}, "model_weight": {"w": _Payload(marker)}}, ckpt)
    with pytest.raises(Exception):  # noqa: B017  (sanity: the file really is a code-running pickle)
        torch.load(ckpt, weights_only=True)
    return ckpt, marker


def test_format_detection_refuses_a_code_running_pickle(evil: tuple[Path, Path]) -> None:
    ckpt, marker = evil
    with pytest.raises(ValueError, match=r"evil.pt: not a readable plain checkpoint \(UnpicklingError"):
        infer_upstream_name(ckpt)
    assert not marker.exists()


def test_upstream_loading_refuses_a_code_running_pickle(evil: tuple[Path, Path]) -> None:
    ckpt, marker = evil
    with pytest.raises(ValueError, match="evil.pt: could not load as s3prl upstream 'hubert_local'"):
        SSLUpstream(UpstreamSpec("hubert_local", path=ckpt))
    assert not marker.exists()


def test_model_files_of_our_tasks_refuse_a_code_running_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    pth = tmp_path / "valid.acc.ave.pth"
    torch.save({"linear.weight": torch.zeros(2, 2), "linear.bias": _Payload(marker)}, pth)
    model = torch.nn.Sequential()
    model.add_module("linear", torch.nn.Linear(2, 2))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_model_file_checked(model, pth)
    assert not marker.exists()
