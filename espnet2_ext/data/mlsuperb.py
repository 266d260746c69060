"""ML-SUPERB -> Kaldi data dirs ``train``, ``dev``, ``test`` (no audio is read here).

Layout read (``ROOT`` is the unpacked ML-SUPERB download)::

    ROOT/<dataset>/<iso3>/wav/<utt_id>.wav
    ROOT/<dataset>/<iso3>/transcript_{1h_train,10min_train,10min_dev,10min_test}.txt

Rules:

* Transcript lines are ``utt_id <field2> <text>``, split on whitespace at most twice; field 2
  is ignored. Lines with fewer than three fields are counted and logged with ``file:line``;
  preparation fails when more than ``max_bad_fraction`` of all lines read are bad. Blank lines
  count as bad lines too.
* The language of an utterance is ``utt_id.split("_")[-2]``; it must equal the ``<iso3>`` folder.
* Setup ``1h`` trains on ``transcript_1h_train.txt``, setup ``10min`` on
  ``transcript_10min_train.txt``. Dev and test always come from the 10-minute dev/test files
  (the test set of the ``1h`` setup is the challenge's ``test_1h``).
* Reserved (few-shot) languages keep only their first ``few_shot_utts`` (5) training
  utterances, by sorted id over all datasets of that language; dev and test are untouched.
  The default list is the 20 languages ESPnet's ``egs2/ml_superb/asr1`` recipe reserves.
  (That recipe picks 5 hand-selected ids per language; here the first 5 by id are kept.)
* With LID, text becomes ``[iso3] TEXT``. Text is otherwise kept as written (normalisation
  belongs to scoring).
* utt2spk is utt -> utt (no speaker information); utt2lang is utt -> iso3.

Length filtering (> 20 s dropped from train only) needs audio and happens later, in
``prepare_data measure`` / ``finalize``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from espnet2_ext.data.datadir import DataDir, sort_ids
from espnet2_ext.utils.fileio import DataError, iter_utf8_lines, listing

logger = logging.getLogger(__name__)

# Dataset folders of the ML-SUPERB release (anything else found is used, with a warning).
ML_SUPERB_DATASETS = (
    "ALFFA", "LAD", "M-AILABS", "NST", "commonvoice", "fleurs", "googlei18n_asr", "googlei18n_tts",
    "mls", "nchlt", "swc", "voxforge", "mexico-el", "voxpopuli",
)  # fmt: skip
# The 20 few-shot languages of ESPnet's egs2/ml_superb/asr1 recipe (local/data_prep.py).
RESERVED_LANGS = (
    "dan", "lit", "tur", "srp", "vie", "kaz", "zul", "tsn", "epo", "frr",
    "tok", "umb", "bos", "ful", "ceb", "luo", "kea", "sun", "tso", "tos",
)  # fmt: skip
SETUPS = ("1h", "10min")
TRAIN_TRANSCRIPT = {"1h": "transcript_1h_train.txt", "10min": "transcript_10min_train.txt"}
DEV_TRANSCRIPT = "transcript_10min_dev.txt"
TEST_TRANSCRIPT = "transcript_10min_test.txt"
FEW_SHOT_UTTS = 5
_MAX_LISTED = 20
_ISO3_RE = re.compile(r"^[a-z]{3}$")


def lang_of(utt_id: str) -> str:
    """Language code of an ML-SUPERB utterance id: ``"cv_lit_000026"`` -> ``"lit"``.

    Raises:
        ValueError: the id has no ``_``-separated language field.
    """
    parts = utt_id.split("_")
    if len(parts) < 2:
        raise ValueError(f"utterance id '{utt_id}' has no language field (expected <corpus>_<iso3>_<number>)")
    return parts[-2]


@dataclass(frozen=True)
class _Utt:
    utt_id: str
    text: str
    lang: str
    wav: Path
    where: str  # "transcript:line", for messages


@dataclass
class _LineStats:
    total: int = 0
    bad: list[str] = field(default_factory=list)


def _iter_transcript(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(lineno, fields)`` with at most 3 whitespace-separated fields.

    Not :func:`espnet2_ext.utils.fileio.iter_kaldi_text`: this is not a ``key value`` file, and
    blank or short lines must be counted against a tolerance instead of failing at once.
    """
    for lineno, line in iter_utf8_lines(path):
        yield lineno, line.strip().split(maxsplit=2)


def _read_transcript(path: Path, iso3: str, stats: _LineStats) -> list[_Utt]:
    if not path.is_file():
        raise DataError(f"{path}: transcript not found; every <dataset>/<iso3> folder needs it")
    out = []
    for lineno, fields in _iter_transcript(path):
        stats.total += 1
        where = f"{path}:{lineno}"
        if len(fields) < 3:
            logger.warning("%s: skipping line with %d field(s); expected 'utt_id <field2> <text>'", where, len(fields))
            stats.bad.append(where)
            continue
        utt_id, _, text = fields
        try:
            lang = lang_of(utt_id)
        except ValueError as e:
            raise DataError(f"{where}: {e}") from None
        if lang != iso3:
            raise DataError(
                f"{where}: utterance '{utt_id}' has language '{lang}' but is listed under the '{iso3}' folder; "
                "fix the transcript or move it to the right language folder"
            )
        out.append(_Utt(utt_id, text, lang, path.parent / "wav" / f"{utt_id}.wav", where))
    return out


def find_language_dirs(root: str | os.PathLike) -> list[tuple[str, str, Path]]:
    """``(dataset, iso3, folder)`` for every ``ROOT/<dataset>/<iso3>/`` holding transcript files, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: ML-SUPERB root not found; pass the folder that holds the dataset folders")
    found = []
    for ds in sorted(p for p in root.iterdir() if p.is_dir()):
        for lang_dir in sorted(p for p in ds.iterdir() if p.is_dir()):
            if any(lang_dir.glob("transcript_*.txt")):
                found.append((ds.name, lang_dir.name, lang_dir))
    if not found:
        raise DataError(
            f"{root}: no ML-SUPERB transcripts found; expected {root}/<dataset>/<iso3>/transcript_10min_train.txt"
        )
    bad = [f"{d}" for _, iso3, d in found if not _ISO3_RE.match(iso3)]
    if bad:
        raise DataError(
            f"{len(bad)} language folder(s) not named by an ISO 639-3 code (three lower-case letters): "
            f"{listing(bad, 5)}; ML-SUPERB names each <dataset>/<iso3> folder by its language code (rename them)"
        )
    unknown = sorted({ds for ds, _, _ in found} - set(ML_SUPERB_DATASETS))
    if unknown:
        logger.warning(
            "%s: dataset folder(s) not in the ML-SUPERB release list, used anyway: %s", root, ", ".join(unknown)
        )
    return found


def _to_datadir(utts: list[_Utt], lid: bool, name: str) -> DataDir:
    return DataDir(
        {
            "wav.scp": {u.utt_id: os.path.abspath(u.wav) for u in utts},
            "text": {u.utt_id: f"[{u.lang}] {u.text}" if lid else u.text for u in utts},
            "utt2spk": {u.utt_id: u.utt_id for u in utts},
            "utt2lang": {u.utt_id: u.lang for u in utts},
        },
        name=name,
    )


def _keep_few_shot(train: list[_Utt], reserved: Iterable[str], few_shot_utts: int) -> list[_Utt]:
    reserved = set(reserved)
    by_lang: dict[str, list[_Utt]] = {}
    for u in train:
        by_lang.setdefault(u.lang, []).append(u)
    absent = sort_ids(reserved - set(by_lang))
    if absent:
        logger.warning("reserved language(s) without training data: %s", ", ".join(absent))
    keep: set[str] = set()
    for lang, utts in by_lang.items():
        ids = sort_ids(u.utt_id for u in utts)
        if lang in reserved:
            logger.info(
                "reserved language %s: keeping %d of %d training utterances",
                lang,
                min(few_shot_utts, len(ids)),
                len(ids),
            )
            ids = ids[:few_shot_utts]
        keep.update(ids)
    return [u for u in train if u.utt_id in keep]


def prepare_mlsuperb(
    root: str | os.PathLike,
    setup: str = "1h",
    lid: bool = False,
    reserved_langs: Iterable[str] = RESERVED_LANGS,
    max_bad_fraction: float = 0.01,
    few_shot_utts: int = FEW_SHOT_UTTS,
) -> dict[str, DataDir]:
    """Parse ML-SUPERB into data dirs.

    Args:
        root: ML-SUPERB root (``ROOT/<dataset>/<iso3>/...``).
        setup: ``"1h"`` or ``"10min"`` (which training transcript to use).
        lid: prefix every text with ``[iso3] ``.
        reserved_langs: few-shot languages trimmed to ``few_shot_utts`` training utterances.
        max_bad_fraction: largest tolerated fraction of transcript lines with < 3 fields.
        few_shot_utts: training utterances kept per reserved language.

    Returns:
        ``{"train": ..., "dev": ..., "test": ...}``, validated, not yet written.

    Raises:
        DataError: naming ``file:line`` for a language mismatch, a duplicate id, a missing wav
            file (with its expected path) or too many bad lines.
    """
    if setup not in SETUPS:
        raise DataError(f"unknown ML-SUPERB setup '{setup}'; choose one of {', '.join(SETUPS)}")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise DataError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
    reserved_langs = list(reserved_langs)
    malformed = [code for code in reserved_langs if not _ISO3_RE.match(code)]
    if malformed:
        raise DataError(
            f"reserved languages: {', '.join(repr(c) for c in malformed)} not ISO 639-3 code(s) (three lower-case "
            "letters, e.g. 'lit'); fix --reserved_langs (space- or comma-separated codes)"
        )
    root = Path(root)
    files = {"train": TRAIN_TRANSCRIPT[setup], "dev": DEV_TRANSCRIPT, "test": TEST_TRANSCRIPT}
    stats = _LineStats()
    splits: dict[str, list[_Utt]] = {s: [] for s in files}
    for _, iso3, lang_dir in tqdm(find_language_dirs(root), desc="ML-SUPERB transcripts", unit="lang-dir"):
        for split, fname in files.items():
            splits[split].extend(_read_transcript(lang_dir / fname, iso3, stats))

    if stats.bad:
        fraction = len(stats.bad) / max(stats.total, 1)
        logger.warning(
            "%d of %d transcript lines have fewer than 3 fields and were skipped", len(stats.bad), stats.total
        )
        if fraction > max_bad_fraction:
            raise DataError(
                f"{root}: {len(stats.bad)} of {stats.total} transcript lines ({fraction:.2%}) have fewer than 3 fields, "
                f"more than --max_bad_fraction {max_bad_fraction}; first: {', '.join(stats.bad[:5])}. "
                "Fix the transcripts or raise --max_bad_fraction"
            )

    seen: dict[str, dict[str, str]] = {}
    for split, utts in splits.items():
        where: dict[str, str] = {}
        for u in utts:
            if u.utt_id in where:
                raise DataError(f"{u.where}: duplicate utterance id '{u.utt_id}' (first at {where[u.utt_id]})")
            where[u.utt_id] = u.where
        seen[split] = where
        if not utts:
            raise DataError(f"{root}: no {split} utterances found in any {files[split]}")
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        overlap = sort_ids(set(seen[a]) & set(seen[b]))
        if overlap:
            logger.warning("%d utterance id(s) are in both %s and %s (first: %s)", len(overlap), a, b, overlap[0])

    splits["train"] = _keep_few_shot(splits["train"], reserved_langs, few_shot_utts)

    missing = [f"{u.where}: {u.wav}" for utts in splits.values() for u in utts if not u.wav.is_file()]
    if missing:
        listed = listing(missing, _MAX_LISTED)
        raise DataError(
            f"{len(missing)} transcript entr(ies) have no audio file (transcript:line: expected path): {listed}"
        )

    out = {split: _to_datadir(utts, lid, name=f"{root} [{split}, {setup}]") for split, utts in splits.items()}
    for split, dd in out.items():
        dd.validate()
        logger.info(
            "ML-SUPERB %s (%s setup): %d utterances, %d languages",
            split,
            setup,
            len(dd),
            len(set(dd.tables["utt2lang"].values())),
        )
    return out
