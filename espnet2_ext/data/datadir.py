"""Kaldi-style data directories: load, validate, combine, subset, write; measure and finalize.

A data dir holds one line per utterance in each per-utterance file, keyed by utterance id:

==================== ==============================================================================
``wav.scp``          utt -> absolute path of one audio file (no pipes, no ``segments``)
``text``             utt -> transcript
``utt2spk``          utt -> speaker (ML-SUPERB has no speakers: utt -> utt)
``utt2lang``         utt -> ISO 639-3 language code (optional)
``utt2num_samples``  utt -> number of samples at the corpus rate (written by :func:`finalize_datadir`)
``spk2utt``          speaker -> its utterances; derived from ``utt2spk`` on every write
==================== ==============================================================================

Every file is sorted by id in C-locale byte order (what Kaldi's ``sort`` gives), ids are
unique, and every utterance is in every file. A directory is complete only once ``.done``
exists: :func:`finalize_datadir` writes it last, and any rewrite removes it first.

Lengths are measured in parallel shards (Kaldi style, shard ``J`` of ``N`` holds the
utterances whose index in the sorted id list satisfies ``i % N == J - 1``), each shard writing
``.measure/utt2num_samples.J``; :func:`finalize_datadir` merges them.

Example:
    >>> dd = DataDir({"wav.scp": {"u1": "/a/u1.wav"}, "text": {"u1": "HI"},
    ...               "utt2spk": {"u1": "u1"}})
    >>> dd.utt_ids, dd.spk2utt()
    (['u1'], {'u1': ['u1']})
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from espnet2_ext.utils.fileio import DataError, listing, read_kaldi_text, write_kaldi_text

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

REQUIRED_FILES = ("wav.scp", "text", "utt2spk")
OPTIONAL_FILES = ("utt2lang", "utt2num_samples")
PER_UTT_FILES = REQUIRED_FILES + OPTIONAL_FILES
DONE_MARKER = ".done"
MEASURE_DIR = ".measure"
# Evaluation sets of the challenge (and ML-SUPERB's local test dir): never length-filtered.
EVAL_SETS = ("test", "test_1h", "dev_clean", "dev_other", "test_clean", "test_other")
_MAX_LISTED = 20


def sort_ids(ids: Iterable[str]) -> list[str]:
    """Sort ids as Kaldi's ``LC_ALL=C sort`` does.

    Python orders ``str`` by code point, and UTF-8 preserves code-point order, so this is
    exactly C-locale byte order of the UTF-8 encoding.
    """
    return sorted(ids)


def select_utterances(ids: list[str], max_utts: int) -> list[str]:
    """``max_utts`` ids spread evenly over the sorted ``ids`` (all of them when 0 or more than there are).

    Kaldi data dirs are sorted by utterance id, which groups ML-SUPERB utterances by dataset and
    language, so an even spread keeps every language in the subset.

    Example:
        >>> select_utterances(["a", "b", "c", "d", "e", "f"], 3)
        ['a', 'c', 'e']
    """
    ids = sort_ids(ids)
    if max_utts <= 0 or max_utts >= len(ids):
        return ids
    return [ids[i * len(ids) // max_utts] for i in range(max_utts)]


def _first(ids: Iterable[str], n: int = 3) -> str:
    ids = list(ids)
    shown = ", ".join(ids[:n])
    return shown + (", ..." if len(ids) > n else "")


def shard_ids(ids: Sequence[str], shard: int, nshard: int) -> list[str]:
    """Ids of shard ``shard`` (1-based) of ``nshard``: sorted index ``i`` with ``i % nshard == shard - 1``."""
    if nshard < 1 or not 1 <= shard <= nshard:
        raise DataError(f"shard {shard} of {nshard}: need 1 <= shard <= nshard")
    return [u for i, u in enumerate(sort_ids(ids)) if i % nshard == shard - 1]


def is_complete(path: str | os.PathLike) -> bool:
    """Whether the data dir at ``path`` was finalized (``.done`` exists)."""
    return (Path(path) / DONE_MARKER).is_file()


def mark_complete(path: str | os.PathLike) -> None:
    """Write the ``.done`` marker; call this last, after every other file is in place."""
    write_kaldi_text(Path(path) / DONE_MARKER, [])


class DataDir:
    """An in-memory Kaldi data dir: one ``{utt: value}`` table per per-utterance file.

    Args:
        tables: file name (one of :data:`PER_UTT_FILES`) -> ``{utt_id: value}``; the three
            :data:`REQUIRED_FILES` must be present. Values are kept as strings.
        name: where the data came from (a path), used in error messages.
    """

    def __init__(self, tables: Mapping[str, Mapping[str, str]], name: str = "<memory>") -> None:
        unknown = set(tables) - set(PER_UTT_FILES)
        if unknown:
            raise DataError(f"{name}: unknown data-dir file(s) {sorted(unknown)}; known: {', '.join(PER_UTT_FILES)}")
        missing = [f for f in REQUIRED_FILES if f not in tables]
        if missing:
            raise DataError(f"{name}: missing {', '.join(missing)}; a data dir needs {', '.join(REQUIRED_FILES)}")
        self.tables: dict[str, dict[str, str]] = {f: dict(tables[f]) for f in PER_UTT_FILES if f in tables}
        self.name = name

    # ------------------------------------------------------------------ access
    @property
    def utt_ids(self) -> list[str]:
        """All utterance ids (those of ``wav.scp``), sorted."""
        return sort_ids(self.tables["wav.scp"])

    def __len__(self) -> int:
        return len(self.tables["wav.scp"])

    @property
    def wav_scp(self) -> dict[str, str]:
        return self.tables["wav.scp"]

    @property
    def text(self) -> dict[str, str]:
        return self.tables["text"]

    @property
    def utt2spk(self) -> dict[str, str]:
        return self.tables["utt2spk"]

    def spk2utt(self) -> dict[str, list[str]]:
        """Speaker -> sorted utterance ids, speakers sorted."""
        out: dict[str, list[str]] = {}
        for utt in self.utt_ids:
            out.setdefault(self.utt2spk[utt], []).append(utt)
        return {spk: out[spk] for spk in sort_ids(out)}

    def num_samples(self) -> dict[str, int]:
        """``utt2num_samples`` as integers (validated)."""
        if "utt2num_samples" not in self.tables:
            raise DataError(f"{self.name}: no utt2num_samples; run measure and finalize first")
        self.validate()
        return {u: int(n) for u, n in self.tables["utt2num_samples"].items()}

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check the directory is consistent.

        Raises:
            DataError: naming the file and the first offending ids.
        """
        ids = set(self.wav_scp)
        if not ids:
            raise DataError(f"{self.name}/wav.scp: no utterances")
        for fname, table in self.tables.items():
            if fname == "wav.scp":
                continue
            lacking = ids - set(table)
            extra = set(table) - ids
            if lacking:
                raise DataError(
                    f"{self.name}/{fname}: {len(lacking)} utterance(s) of wav.scp missing "
                    f"(first: {_first(sort_ids(lacking))}); every id must be in every file"
                )
            if extra:
                raise DataError(
                    f"{self.name}/{fname}: {len(extra)} id(s) not in wav.scp "
                    f"(first: {_first(sort_ids(extra))}); every id must be in every file"
                )
        for fname, table in self.tables.items():
            bad = [u for u in sort_ids(table) if not u or any(c.isspace() for c in u)]
            if bad:
                raise DataError(f"{self.name}/{fname}: id(s) with whitespace or empty: {bad[:3]}")
        bad = [u for u, p in self.wav_scp.items() if p.rstrip().endswith("|") or not os.path.isabs(p)]
        if bad:
            u = sort_ids(bad)[0]
            raise DataError(
                f"{self.name}/wav.scp: {len(bad)} entr(ies) are not absolute file paths (first: {u} -> "
                f"{self.wav_scp[u]!r}); wav.scp must map each utterance to an absolute audio path, no pipes"
            )
        for fname in ("text",):
            bad = [u for u, v in self.tables[fname].items() if not v.strip()]
            if bad:
                raise DataError(f"{self.name}/{fname}: empty value for {_first(sort_ids(bad))}")
        for fname in ("utt2spk", "utt2lang"):
            table = self.tables.get(fname, {})
            bad = [u for u, v in table.items() if not v or any(c.isspace() for c in v)]
            if bad:
                raise DataError(
                    f"{self.name}/{fname}: value must be one token without whitespace (first: {_first(sort_ids(bad))})"
                )
        if "utt2num_samples" in self.tables:
            table = self.tables["utt2num_samples"]
            bad = [u for u, v in table.items() if not (v.isdigit() and int(v) > 0)]
            if bad:
                u = sort_ids(bad)[0]
                raise DataError(
                    f"{self.name}/utt2num_samples: value must be a positive integer (first: {u} -> {table[u]!r}); "
                    "rerun measure and finalize"
                )
        # Kaldi requires that sorting utt2spk by speaker keeps the utterance order
        # (speaker id a prefix of the utterance id); its tools rely on it.
        by_spk = sorted(self.utt_ids, key=lambda u: (self.utt2spk[u], u))
        for a, b in zip(by_spk, self.utt_ids):
            if a != b:
                raise DataError(
                    f"{self.name}/utt2spk: sorting by speaker changes the utterance order (first at {a} "
                    f"[{self.utt2spk[a]}] vs {b} [{self.utt2spk[b]}]); make each speaker id a prefix of its "
                    "utterance ids"
                )

    # ------------------------------------------------------------------ I/O
    @classmethod
    def load(cls, path: str | os.PathLike) -> DataDir:
        """Read and validate the data dir at ``path`` (``spk2utt``, if present, must agree with ``utt2spk``)."""
        path = Path(path)
        if not path.is_dir():
            raise DataError(f"{path}: data dir not found; run the stage that prepares it first")
        if (path / "segments").exists():
            raise DataError(
                f"{path}/segments: segmented data dirs are not supported; write one audio file per utterance"
            )
        tables = {f: read_kaldi_text(path / f) for f in PER_UTT_FILES if f in REQUIRED_FILES or (path / f).is_file()}
        dd = cls(tables, name=str(path))
        dd.validate()
        spk2utt_path = path / "spk2utt"
        if spk2utt_path.is_file():
            on_disk = {spk: utts.split() for spk, utts in read_kaldi_text(spk2utt_path).items()}
            derived = dd.spk2utt()
            if on_disk != derived:
                spk = next(s for s in sort_ids(set(on_disk) | set(derived)) if on_disk.get(s) != derived.get(s))
                raise DataError(
                    f"{spk2utt_path}: disagrees with utt2spk (first at speaker {spk}); "
                    "delete spk2utt and rewrite the dir (e.g. with `prepare_data combine`)"
                )
        return dd

    def write(self, path: str | os.PathLike) -> None:
        """Validate, then write every table sorted plus ``spk2utt``, each file atomically.

        Rewriting a dir makes it incomplete: ``.done`` and stale ``.measure`` shards are removed
        first, as are per-utterance files this object does not have.
        """
        self.validate()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / DONE_MARKER).unlink(missing_ok=True)
        shutil.rmtree(path / MEASURE_DIR, ignore_errors=True)
        for fname in PER_UTT_FILES:
            if fname not in self.tables:
                (path / fname).unlink(missing_ok=True)
        ids = self.utt_ids
        for fname, table in self.tables.items():
            write_kaldi_text(path / fname, ((u, table[u]) for u in ids))
        write_kaldi_text(path / "spk2utt", ((s, " ".join(us)) for s, us in self.spk2utt().items()))
        logger.info("wrote %s: %d utterances, %d speakers", path, len(ids), len(self.spk2utt()))

    # ------------------------------------------------------------------ set operations
    def subset(self, keep: Iterable[str], name: str | None = None) -> DataDir:
        """A new dir with only the utterances in ``keep`` (all must exist)."""
        keep = set(keep)
        unknown = keep - set(self.wav_scp)
        if unknown:
            raise DataError(f"{self.name}: cannot subset to unknown id(s) {_first(sort_ids(unknown))}")
        tables = {f: {u: v for u, v in t.items() if u in keep} for f, t in self.tables.items()}
        return DataDir(tables, name=name or self.name)

    @classmethod
    def combine(cls, dirs: Sequence[DataDir], name: str = "<combined>") -> DataDir:
        """Merge dirs; ids must be unique across them.

        Files present in only some sources are dropped (with a warning): a merged dir must have
        every id in every file.

        Raises:
            DataError: on a duplicate id, naming both sources.
        """
        if not dirs:
            raise DataError(f"{name}: nothing to combine; give at least one source dir")
        common = [f for f in PER_UTT_FILES if all(f in d.tables for d in dirs)]
        dropped = sorted({f for d in dirs for f in d.tables} - set(common))
        if dropped:
            logger.warning("%s: dropping %s (not in every source dir)", name, ", ".join(dropped))
        owner: dict[str, str] = {}
        tables: dict[str, dict[str, str]] = {f: {} for f in common}
        for d in dirs:
            dups = [u for u in d.wav_scp if u in owner]
            if dups:
                u = sort_ids(dups)[0]
                raise DataError(
                    f"{name}: utterance id '{u}' is in both {owner[u]} and {d.name} ({len(dups)} duplicate(s)); "
                    "ids must be unique across combined dirs (give one source an id prefix)"
                )
            for u in d.wav_scp:
                owner[u] = d.name
            for f in common:
                tables[f].update(d.tables[f])
        return cls(tables, name=name)


# ---------------------------------------------------------------------- measure / finalize
def measure_audio(path: str, fs: int) -> tuple[int, list[str]]:
    """Decode one audio file fully and check it.

    Returns:
        ``(num_samples, problems)``: samples per channel actually decoded, and a list of
        problems (empty when the file is usable: decodable to its end, ``fs`` Hz, mono, >= 1 sample,
        not all zero).
    """
    import soundfile as sf  # lazy: keeps the data-prep CLI fast to start

    if not os.path.isfile(path):
        return 0, ["file not found"]
    if os.path.getsize(path) == 0:
        return 0, ["empty file (0 bytes)"]
    problems: list[str] = []
    try:
        with sf.SoundFile(path) as f:
            rate, channels, header_frames = f.samplerate, f.channels, f.frames
            n = 0
            peak = 0.0
            while True:
                block = f.read(frames=1 << 18, dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                n += len(block)
                peak = max(peak, float(abs(block).max()))
    except (RuntimeError, OSError, ValueError, EOFError) as e:  # libsndfile errors are RuntimeErrors
        return 0, [f"cannot decode ({str(e).strip() or type(e).__name__})"]
    if rate != fs:
        problems.append(f"sample rate {rate} Hz, expected {fs} Hz")
    if channels != 1:
        problems.append(f"{channels} channels, expected mono")
    if n == 0:
        problems.append("no samples")
    elif n < (declared := max(header_frames, _wav_declared_frames(path) or 0)):
        # a cut-off copy: the transcript would no longer match the audio
        problems.append(f"truncated: header says {declared} samples, only {n} decoded")
    elif peak == 0.0:
        # digital silence cannot carry its transcript (near-silent recordings are left alone)
        problems.append("silent (every sample is 0)")
    return n, problems


def _wav_declared_frames(path: str) -> int | None:
    """Frames a PCM WAV's ``data`` chunk header declares, or None (not PCM WAV, or length unknown).

    libsndfile silently shortens a WAV whose data chunk runs past the end of the file, so a
    cut-off copy reads as a shorter, valid file; the stdlib ``wave`` reader keeps the declared size.
    """
    import wave

    if not path.lower().endswith(".wav"):
        return None
    try:
        with wave.open(path, "rb") as w:
            declared = w.getnframes()
    except (wave.Error, EOFError, OSError):
        return None
    # streaming writers put 0 or 0xFFFFFFFF in the size field when the length is unknown
    return declared if 0 < declared < 0xFFFFFFFF // 8 else None


def _fix_hint(problems: Iterable[str], fs: int) -> str:
    hints = []
    text = " ".join(problems)
    if "sample rate" in text or "channels" in text:
        hints.append(f"resample/downmix to {fs} Hz mono, e.g. `sox IN -r {fs} -c 1 OUT.wav`")
    if any(w in text for w in ("decode", "empty", "no samples", "truncated", "silent")):
        hints.append("re-export or re-encode the broken files, or remove those utterances from the source transcripts")
    if "not found" in text:
        hints.append("check the paths in wav.scp and rerun data preparation")
    return "; ".join(hints)


def read_wav(path: str, utt: str, expected: int | None = None, fs: int = 16000) -> np.ndarray:
    """Read one utterance as float32, checking it is mono at ``fs`` and has the measured length.

    Args:
        path: the audio file (its ``wav.scp`` entry).
        utt: the utterance id (for messages).
        expected: samples ``utt2num_samples`` says it has (not checked when None).
        fs: the sampling rate it must have.

    Returns:
        (T,) float32 waveform.

    Raises:
        DataError: naming the file and what to do.
    """
    import soundfile as sf  # lazy, as in measure_audio

    audio, rate = sf.read(path, dtype="float32")
    if rate != fs or audio.ndim != 1:
        raise DataError(f"{path}: utterance '{utt}' must be {fs} Hz mono, got {rate} Hz with shape {audio.shape}")
    if expected is not None and len(audio) != expected:
        raise DataError(f"{path}: '{utt}' has {len(audio)} samples but utt2num_samples says {expected}; re-measure")
    if len(audio) == 0:
        raise DataError(f"{path}: utterance '{utt}' is empty")
    return audio


def measure_path(data_dir: str | os.PathLike, shard: int) -> Path:
    """Where shard ``shard`` writes its lengths."""
    return Path(data_dir) / MEASURE_DIR / f"utt2num_samples.{shard}"


def measure_shard(data_dir: str | os.PathLike, shard: int, nshard: int, fs: int = 16000) -> dict[str, int]:
    """Measure shard ``shard`` of ``nshard`` of a data dir and write ``.measure/utt2num_samples.J``.

    Every file of the shard is checked before failing, so one run lists all bad files.

    Returns:
        ``{utt_id: num_samples}`` of the shard.

    Raises:
        DataError: listing (up to 20) bad utterances with id, path and problem, and how to fix them.
    """
    data_dir = Path(data_dir)
    dd = DataDir.load(data_dir)
    ids = shard_ids(dd.utt_ids, shard, nshard)
    out = measure_path(data_dir, shard)
    out.unlink(missing_ok=True)  # a failed run must not leave an older, possibly stale shard behind
    lengths: dict[str, int] = {}
    bad: list[str] = []
    all_problems: list[str] = []
    for utt in tqdm(ids, desc=f"measure {data_dir.name} {shard}/{nshard}", unit="utt", mininterval=2.0):
        path = dd.wav_scp[utt]
        n, problems = measure_audio(path, fs)
        if problems:
            msg = f"{utt} ({path}): {', '.join(problems)}"
            logger.error("bad audio: %s", msg)
            bad.append(msg)
            all_problems.extend(problems)
        else:
            lengths[utt] = n
    if bad:
        listed = listing(bad, _MAX_LISTED)
        raise DataError(
            f"{data_dir} shard {shard}/{nshard}: {len(bad)} of {len(ids)} audio files unusable: {listed}. "
            f"Fix: {_fix_hint(all_problems, fs)}; then rerun measure for this shard"
        )
    write_kaldi_text(out, ((u, str(lengths[u])) for u in ids))
    logger.info("%s: measured %d utterances (%.1f h)", out, len(ids), sum(lengths.values()) / fs / 3600)
    return lengths


def finalize_datadir(
    data_dir: str | os.PathLike, nshard: int, fs: int = 16000, max_seconds: float | None = None
) -> DataDir:
    """Merge measurement shards into ``utt2num_samples``, optionally drop long utterances, write ``.done``.

    If no shard file exists but the dir already has a complete ``utt2num_samples`` (a dir
    finalized before, or combined from finalized dirs), that one is used, so re-running is safe.

    Args:
        data_dir: the data dir.
        nshard: number of shards ``measure`` was run with.
        fs: sample rate in Hz (to turn ``max_seconds`` into samples).
        max_seconds: drop utterances strictly longer than this; ``None`` keeps everything.
            Refused for evaluation sets (:data:`EVAL_SETS`), which are never filtered.

    Returns:
        The finalized dir.
    """
    data_dir = Path(data_dir)
    if max_seconds is not None and (data_dir.name in EVAL_SETS or data_dir.name.startswith("test")):
        raise DataError(f"{data_dir}: refusing --max_seconds on an evaluation set; test data is never filtered")
    dd = DataDir.load(data_dir)
    ids = dd.utt_ids
    shard_files = [measure_path(data_dir, j) for j in range(1, nshard + 1)]
    if any(p.is_file() for p in shard_files) or "utt2num_samples" not in dd.tables:
        missing = [j for j, p in enumerate(shard_files, start=1) if not p.is_file()]
        if missing:
            reruns = " ".join(str(j) for j in missing)
            raise DataError(
                f"{shard_files[missing[0] - 1]}: not found; shard(s) {reruns} of {nshard} were not measured or failed. "
                f"Rerun `python -m espnet2_ext.bin.prepare_data measure --data_dir {data_dir} --shard J --nshard {nshard}` "
                f"for J in {reruns}"
            )
        merged: dict[str, str] = {}
        for j, p in enumerate(shard_files, start=1):
            got = read_kaldi_text(p)
            expected = shard_ids(ids, j, nshard)
            if set(got) != set(expected):
                lacking = sort_ids(set(expected) - set(got))
                extra = sort_ids(set(got) - set(expected))
                raise DataError(
                    f"{p}: does not match shard {j}/{nshard} of {data_dir}/wav.scp (missing: {_first(lacking) or '-'}; "
                    f"unexpected: {_first(extra) or '-'}); the dir changed or --nshard differs from the measure run; "
                    f"rerun measure for shard {j} with --nshard {nshard}"
                )
            merged.update(got)
        dd.tables["utt2num_samples"] = merged
    else:
        logger.info("%s: no measurement shards; using the existing utt2num_samples", data_dir)
    dd.validate()
    if max_seconds is not None:
        limit = max_seconds * fs
        too_long = [u for u in ids if int(dd.tables["utt2num_samples"][u]) > limit]
        if len(too_long) == len(ids):
            raise DataError(
                f"{data_dir}: all {len(ids)} utterances are longer than {max_seconds} s; check --fs / --max_seconds"
            )
        logger.info(
            "%s: dropping %d of %d utterances longer than %g s%s",
            data_dir,
            len(too_long),
            len(ids),
            max_seconds,
            (": " + " ".join(too_long)) if too_long else "",
        )
        if too_long:
            dropped = set(too_long)
            dd = dd.subset([u for u in ids if u not in dropped], name=str(data_dir))
    hours = sum(int(n) for n in dd.tables["utt2num_samples"].values()) / fs / 3600
    dd.write(data_dir)
    mark_complete(data_dir)
    logger.info("%s: finalized, %d utterances, %.2f h", data_dir, len(dd), hours)
    return dd
