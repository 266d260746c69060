"""Sharded per-utterance jobs of the tokenizer: features for k-means, and units for every set.

Both jobs take shard ``J`` of ``N`` of a sorted id list (:func:`~espnet2_ext.data.datadir.shard_ids`)
so any shard can be rerun alone, and run exactly one forward pass of the
:class:`~espnet2_ext.tokenizer.features.FeatureExtractor` per utterance.

**Features for k-means** (:func:`dump_features`): a seeded ``portion`` of the training set;
unit systems on the same SSL model (and subset) are dumped together, one SSL forward per utterance
for all; shard ``J`` writes ``feats.J.npy`` (float32, (frames, D), streamed to disk through a memory map)
and ``lengths.J`` (``utt frames``). :func:`sample_frames` reads them back memory-mapped and keeps
at most ``max_frames`` random frames in RAM. Memory of k-means learning is therefore bounded by
the subset, not the corpus::

    disk = portion x train_frames x D x 4 bytes        (XLS-R: 0.3 x 50 h x 180k frames/h x 1024 x 4 = 11 GB)
           per system, times the systems dumped together
    RAM  = min(portion x train_frames, K x max_points_per_centroid) x D x 4 bytes
                                                       (K=2000, 256 per centroid: 512k x 1024 x 4 = 2.1 GB)

**Units** (:func:`dump_units`): every utterance of a set, shard ``J`` writing ``units.J``
(``utt u1 u2 ...``, one id per frame); :func:`merge_units` concatenates the shards in id order.
Unit systems on the same SSL model are dumped together, one SSL forward per utterance for all.

Example:
    >>> dump_features([(extractor, "exp/kmeans/twostep/feats")], "data/train", portion=0.3, seed=0,
    ...               shard=1, nshard=4)                                           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from espnet2_ext.data.datadir import read_wav, shard_ids, sort_ids
from espnet2_ext.tokenizer.features import FeatureExtractor
from espnet2_ext.tokenizer.unit_model import UnitModel
from espnet2_ext.utils.fileio import DataError, atomic_open, read_kaldi_text, write_kaldi_text

logger = logging.getLogger(__name__)


def learning_subset(utt_ids: list[str], portion: float, seed: int) -> list[str]:
    """Sorted seeded random ``portion`` (0 < portion <= 1) of ``utt_ids``, at least one utterance."""
    if not 0 < portion <= 1:
        raise ValueError(f"portion must be in (0, 1], got {portion}")
    ids = sort_ids(utt_ids)
    n = max(1, round(portion * len(ids)))
    return ids if n >= len(ids) else sort_ids(random.Random(seed).sample(ids, n))


def _read_set(data_dir: Path) -> tuple[dict[str, str], dict[str, int]]:
    """wav.scp and utt2num_samples of a finalized data dir, checked to cover the same utterances."""
    wav_scp = read_kaldi_text(data_dir / "wav.scp")
    samples_file = data_dir / "utt2num_samples"
    num_samples = {}
    for utt, n in read_kaldi_text(samples_file).items():
        try:
            num_samples[utt] = int(n)
        except ValueError:
            raise DataError(f"{samples_file}: '{utt}' has a non-integer length {n!r}; rerun data preparation") from None
    if set(wav_scp) != set(num_samples):
        raise DataError(f"{data_dir}: wav.scp and utt2num_samples list different utterances; rerun data preparation")
    if not wav_scp:
        raise DataError(f"{data_dir}/wav.scp: no utterances")
    return wav_scp, num_samples


def _check_shared_upstream(extractors: Sequence[FeatureExtractor]) -> None:
    if not extractors or len({id(e.upstream) for e in extractors}) != 1:
        raise ValueError("the extractors of one pass must share one loaded upstream (or all be MFCC)")


def _features(extractors: Sequence[FeatureExtractor], wav_scp: dict[str, str], num_samples: dict[str, int],
              utts: list[str], expected: np.ndarray, desc: str) -> Iterator[tuple[str, list[np.ndarray]]]:
    """(utt, [(F, D) float32 features of each extractor]) per utterance.

    One SSL forward per utterance, whatever the number of extractors: they share the upstream
    (:func:`_check_shared_upstream`) and each combines its hidden states.
    """
    _check_shared_upstream(extractors)
    upstream = extractors[0].upstream
    device = next(extractors[0].buffers(), torch.zeros(0)).device
    for utt, frames in zip(tqdm(utts, desc=desc, unit="utt", mininterval=5), expected):
        wav = torch.from_numpy(read_wav(wav_scp[utt], utt, num_samples[utt]))
        wavs, wav_lens = wav[None].to(device), torch.tensor([len(wav)], device=device)
        if upstream is None:
            outputs = [e(wavs, wav_lens) for e in extractors]
        else:
            states, lens = upstream(wavs, wav_lens)
            outputs = [e.combine(states, lens) for e in extractors]
        for _, lens in outputs:
            if int(lens[0]) != frames:
                raise RuntimeError(f"{utt}: the extractor gave {int(lens[0])} frames, num_frames() said {frames}")
        yield utt, [feats[0, :frames].cpu().numpy() for feats, _ in outputs]


def dump_features(systems: Sequence[tuple[FeatureExtractor, str | os.PathLike]], data_dir: str | os.PathLike,
                  portion: float, seed: int, shard: int, nshard: int) -> int:
    """Stream the features of shard ``shard`` of the learning subset to ``<out_dir>/feats.<shard>.npy``, per system.

    Args:
        systems: (extractor, out_dir) per unit system; the extractors share one loaded upstream, so
            each utterance goes through the SSL model once for all of them.
        data_dir: the training data dir (``wav.scp``, ``utt2num_samples``).
        portion: fraction of the training utterances k-means learns from (the same for all systems).
        seed: chooses the subset (the same in every shard).
        shard, nshard: this job's shard (1-based) of ``nshard``.

    Returns:
        Frames written (per system).
    """
    data_dir = Path(data_dir)
    extractors, out_dirs = [e for e, _ in systems], [Path(d) for _, d in systems]
    _check_shared_upstream(extractors)
    wav_scp, num_samples = _read_set(data_dir)
    utts = shard_ids(learning_subset(list(wav_scp), portion, seed), shard, nshard)
    frames = extractors[0].num_frames([num_samples[u] for u in utts]).numpy()
    for out_dir in out_dirs:
        out_dir.mkdir(parents=True, exist_ok=True)
    finals = [d / f"feats.{shard}.npy" for d in out_dirs]
    tmps = [d / f".feats.{shard}.npy.tmp" for d in out_dirs]
    if not utts:  # more shards than utterances
        for extractor, final, out_dir in zip(extractors, finals, out_dirs):
            with atomic_open(final, "wb") as f:
                np.save(f, np.zeros((0, extractor.dim), dtype=np.float32))
            write_kaldi_text(out_dir / f"lengths.{shard}", [])
        return 0
    try:
        feats = [np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(int(frames.sum()), e.dim))
                 for tmp, e in zip(tmps, extractors)]
        offset = 0
        for _, xs in _features(extractors, wav_scp, num_samples, utts, frames, f"features {shard}/{nshard}"):
            for out, x in zip(feats, xs):
                out[offset : offset + len(x)] = x
            offset += len(xs[0])
        for out in feats:
            out.flush()
        del feats, out  # closes the memory maps before the rename
        for tmp, final in zip(tmps, finals):
            os.replace(tmp, final)
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise
    for out_dir, final, extractor in zip(out_dirs, finals, extractors):  # lengths.J last: it marks the shard done
        write_kaldi_text(out_dir / f"lengths.{shard}", [(u, str(int(n))) for u, n in zip(utts, frames)])
        logger.info("shard %d/%d: %d utterances, %d frames x %d dims -> %s", shard, nshard, len(utts), offset,
                    extractor.dim, final)
    return offset


def open_features(feats_dir: str | os.PathLike) -> list[np.ndarray]:
    """The memory-mapped ``feats.J.npy`` of every shard, checked against its ``lengths.J``."""
    feats_dir = Path(feats_dir)
    shards = sorted(feats_dir.glob("feats.*.npy"), key=lambda p: int(p.name.split(".")[1]))
    if not shards:
        raise DataError(f"{feats_dir}: no feats.J.npy; run the feature dump (stage 7) first")
    arrays = []
    for path in shards:
        j = path.name.split(".")[1]
        x = np.load(path, mmap_mode="r")
        total = sum(int(n) for n in read_kaldi_text(feats_dir / f"lengths.{j}").values())
        if total != len(x):
            raise DataError(f"{path}: {len(x)} frames but lengths.{j} sums to {total}; rerun that shard")
        arrays.append(x)
    return arrays


def sample_frames(arrays: list[np.ndarray], max_frames: int, seed: int) -> np.ndarray:
    """At most ``max_frames`` frames of the shards, chosen uniformly at random (seeded), in RAM.

    Returns:
        (min(N, max_frames), D) float32; all frames, in order, when N <= max_frames.
    """
    sizes = [len(a) for a in arrays]
    total = sum(sizes)
    if total <= max_frames:
        return np.concatenate([np.asarray(a) for a in arrays]) if arrays else np.zeros((0, 0), np.float32)
    picked = np.sort(np.random.default_rng(seed).choice(total, size=max_frames, replace=False))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    out = np.empty((max_frames, arrays[0].shape[1]), dtype=np.float32)
    row = 0
    for a, start, end in zip(arrays, offsets[:-1], offsets[1:]):
        local = picked[(picked >= start) & (picked < end)] - start
        out[row : row + len(local)] = a[local]
        row += len(local)
    return out


def dump_units(systems: Sequence[tuple[UnitModel, FeatureExtractor, str | os.PathLike]],
               data_dir: str | os.PathLike, shard: int, nshard: int) -> int:
    """Units of shard ``shard`` of a set, per system, to ``<out_dir>/split/units.<shard>`` (``utt u1 u2 ...``).

    Args:
        systems: (unit model, its extractor, out_dir) per unit system; the extractors share one
            loaded upstream, so each utterance goes through the SSL model once for all of them.
        data_dir: the set's data dir.
        shard, nshard: this job's shard (1-based) of ``nshard``.

    Returns:
        Utterances written (per system).
    """
    data_dir = Path(data_dir)
    wav_scp, num_samples = _read_set(data_dir)
    utts = shard_ids(list(wav_scp), shard, nshard)
    extractors = [extractor for _, extractor, _ in systems]
    frames = extractors[0].num_frames([num_samples[u] for u in utts]).numpy()
    rows: list[list[tuple[str, str]]] = [[] for _ in systems]
    for utt, feats in _features(extractors, wav_scp, num_samples, utts, frames,
                                f"units {data_dir.name} {shard}/{nshard}"):
        for out, (model, _, _), x in zip(rows, systems, feats):
            out.append((utt, " ".join(map(str, model.assign(x).tolist()))))
    for out, (_, _, out_dir) in zip(rows, systems):
        write_kaldi_text(Path(out_dir) / "split" / f"units.{shard}", out)
    return len(utts)


def merge_units(out_dir: str | os.PathLike, nshard: int, data_dir: str | os.PathLike) -> Path:
    """Concatenate ``split/units.1..N`` into ``units`` in id order; every utterance of ``data_dir`` once.

    Raises:
        DataError: a shard is missing, or the shards do not cover the data dir exactly.
    """
    out_dir = Path(out_dir)
    merged: dict[str, str] = {}
    for j in range(1, nshard + 1):
        merged.update(read_kaldi_text(out_dir / "split" / f"units.{j}", allow_empty_value=True))
    expected = set(read_kaldi_text(Path(data_dir) / "wav.scp"))
    if set(merged) != expected:
        raise DataError(f"{out_dir}/split: units for {len(merged)} utterances, {data_dir} has {len(expected)}; "
                        "rerun the unit dump of this set")
    with atomic_open(out_dir / "units") as f:
        for utt in sort_ids(merged):
            f.write(f"{utt} {merged[utt]}\n" if merged[utt] else f"{utt}\n")
    return out_dir / "units"
