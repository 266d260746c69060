"""Compare the outputs of two recipe work directories, e.g. the same stages run by two job backends.

Every file under ``a`` is compared with the file of the same relative path under ``b``, byte for
byte after each work directory's own absolute path is replaced by ``<WORKDIR>`` in both (configs,
``upstream.json`` and job specs name their work directory; sentencepiece models, which record their
training paths, are compared with those paths rewritten). Files matching ``skip`` (fnmatch on the
relative path) are listed but not compared: by default the job logs and the per-stage wall times
(``log/``), whose timestamps, durations and host names differ from run to run by nature.

ESPnet's resume checkpoints (``checkpoint.pth``) hold the reporter's wall-clock timings
(``iter_time``, ``train_time``, ``time``, ...) next to the model, optimizer and scheduler states, so
they never agree byte for byte; they count as ``equivalent`` when everything but those timings is
equal (tensors exactly).

Example::

    >>> d = compare_workdirs("egs2/tiny/local", "egs2/tiny/slurm")   # doctest: +SKIP
    >>> d.differing, d.only_in_a, d.only_in_b                         # doctest: +SKIP
    ([], [], [])
"""

from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SKIP = ("log/*",)
PLACEHOLDER = b"<WORKDIR>"


@dataclass
class WorkdirDiff:
    """Relative paths (POSIX, sorted) by outcome."""

    identical: list[str] = field(default_factory=list)
    equivalent: list[str] = field(default_factory=list)  # checkpoint.pth equal but for timings
    differing: list[str] = field(default_factory=list)
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        """True when every compared file is identical and both sides hold the same files."""
        return not (self.differing or self.only_in_a or self.only_in_b)


def _files(root: Path) -> set[str]:
    out = set()
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            if p.is_file():
                out.add(p.relative_to(root).as_posix())
    return out


def _without_workdir(data: bytes, root: Path) -> bytes:
    # the resolved path and the path as given (a symlinked /tmp) may both be written into files
    for form in {str(root.resolve()), str(root.absolute())}:
        data = data.replace(form.encode(), PLACEHOLDER)
    return data


def sentencepiece_without_workdir(data: bytes, root: str | os.PathLike) -> bytes:
    """A sentencepiece model (``bpe.model`` bytes) with ``root`` replaced by ``<WORKDIR>`` in its paths.

    sentencepiece records its training input files and output prefix in the model. A plain byte
    replacement is not enough there: each string field is preceded by its length, which differs when
    two work directories' paths differ in length, so the fields are rewritten and the model serialised
    again. Bytes that do not parse as a trained model are returned with the plain replacement.
    """
    from google.protobuf.message import DecodeError
    from sentencepiece import sentencepiece_model_pb2

    root = Path(root)
    model = sentencepiece_model_pb2.ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError:
        return _without_workdir(data, root)
    if not model.pieces or not model.trainer_spec.input:
        return _without_workdir(data, root)
    spec = model.trainer_spec
    paths = [_without_workdir(p.encode(), root).decode() for p in spec.input]
    del spec.input[:]
    spec.input.extend(paths)
    spec.model_prefix = _without_workdir(spec.model_prefix.encode(), root).decode()
    return model.SerializeToString()


def _content(root: Path, rel: str) -> bytes:
    data = (root / rel).read_bytes()
    if rel.endswith(".model"):  # sentencepiece models (dump/units/<system>/src_bpe/bpe.model)
        return sentencepiece_without_workdir(data, root)
    return _without_workdir(data, root)


def _is_timing(key: object) -> bool:
    return isinstance(key, str) and (key == "time" or key.endswith("_time"))


def _same_value(x: object, y: object) -> bool:
    """Deep equality with tensors compared exactly and reporter timings ignored."""
    import torch

    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == y.dtype
                and x.shape == y.shape):
            return False
        if x.is_floating_point():  # exactly equal, a NaN where the other has one
            return bool(torch.allclose(x, y, rtol=0.0, atol=0.0, equal_nan=True))
        return torch.equal(x, y)
    if isinstance(x, dict) and isinstance(y, dict):
        keys = {k for k in x if not _is_timing(k)}
        return keys == {k for k in y if not _is_timing(k)} and all(_same_value(x[k], y[k]) for k in keys)
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return type(x) is type(y) and len(x) == len(y) and all(map(_same_value, x, y))
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True  # a metric the reporter could not compute, in both
    return bool(x == y)


def same_checkpoint(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two ESPnet ``checkpoint.pth`` files agree in everything but the reporter's timings."""
    import torch

    # the recipe's own ESPnet checkpoints (the reporter holds numpy scalars and timedeltas, which
    # weights_only refuses), as espnet2_ext.bin.step0 reads them
    x, y = (torch.load(p, map_location="cpu", weights_only=False) for p in (a, b))
    return _same_value(x, y)


def compare_workdirs(a: str | os.PathLike, b: str | os.PathLike, skip: tuple[str, ...] = DEFAULT_SKIP,
                     only: tuple[str, ...] = ()) -> WorkdirDiff:
    """Compare every file of two work directories.

    Args:
        a: one work directory.
        b: the other.
        skip: fnmatch patterns of relative paths that are listed in ``skipped``, not compared.
        only: when given, only relative paths matching one of these patterns are looked at.

    Returns:
        The files by outcome.
    """
    a, b = Path(a), Path(b)
    fa, fb = _files(a), _files(b)
    if only:
        fa = {f for f in fa if any(fnmatch.fnmatch(f, p) for p in only)}
        fb = {f for f in fb if any(fnmatch.fnmatch(f, p) for p in only)}
    d = WorkdirDiff()
    for rel in sorted(fa | fb):
        if any(fnmatch.fnmatch(rel, p) for p in skip):
            d.skipped.append(rel)
        elif rel not in fb:
            d.only_in_a.append(rel)
        elif rel not in fa:
            d.only_in_b.append(rel)
        elif _content(a, rel) == _content(b, rel):
            d.identical.append(rel)
        elif Path(rel).name == "checkpoint.pth" and same_checkpoint(a / rel, b / rel):
            d.equivalent.append(rel)
        else:
            d.differing.append(rel)
    return d
