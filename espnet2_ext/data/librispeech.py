"""LibriSpeech -> Kaldi data dirs named as the challenge names them (no audio is read here).

Layout read (``ROOT`` holds the set folders, e.g. ``.../LibriSpeech``)::

    ROOT/<set>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac
    ROOT/<set>/<spk>/<chapter>/<spk>-<chapter>.trans.txt      lines: "<utt_id> TEXT"

Set names map to challenge names by ``-`` -> ``_`` (``train-clean-100`` -> ``train_clean_100``,
``dev-clean`` -> ``dev_clean``, ...). utt2spk is ``<spk>-<chapter>`` (the Kaldi/ESPnet
convention: one "speaker" per chapter), utt2lang is ``eng``; with LID the text becomes
``[eng] TEXT``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from espnet2_ext.data.datadir import DataDir
from espnet2_ext.utils.fileio import DataError, iter_kaldi_text, listing

logger = logging.getLogger(__name__)

LIBRISPEECH_SETS = (
    "train-clean-100", "train-clean-360", "train-other-500",
    "dev-clean", "dev-other", "test-clean", "test-other",
)  # fmt: skip
# The sets the challenge uses: training data and the four English evaluation sets.
CHALLENGE_SETS = ("train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other")
LANG = "eng"
_MAX_LISTED = 20


def challenge_name(set_name: str) -> str:
    """``"dev-clean"`` -> ``"dev_clean"``.

    Raises:
        DataError: not a LibriSpeech set name.
    """
    if set_name not in LIBRISPEECH_SETS:
        raise DataError(f"unknown LibriSpeech set '{set_name}'; choose from {', '.join(LIBRISPEECH_SETS)}")
    return set_name.replace("-", "_")


def prepare_librispeech_set(root: str | os.PathLike, set_name: str, lid: bool = False) -> DataDir:
    """Parse one LibriSpeech set.

    Raises:
        DataError: set folder or chapter transcript missing, an utterance id that does not
            belong to its chapter, or a listed ``.flac`` missing (``file:line`` and expected path).
    """
    name = challenge_name(set_name)
    set_dir = Path(root) / set_name
    if not set_dir.is_dir():
        raise DataError(
            f"{set_dir}: LibriSpeech set not found; download and unpack {set_name} (openslr.org/12) under {root}"
        )
    chapters = sorted(c for s in set_dir.iterdir() if s.is_dir() for c in s.iterdir() if c.is_dir())
    if not chapters:
        raise DataError(f"{set_dir}: no <speaker>/<chapter> folders; is this a LibriSpeech set folder?")
    wav: dict[str, str] = {}
    text: dict[str, str] = {}
    utt2spk: dict[str, str] = {}
    missing: list[str] = []
    for chapter_dir in tqdm(chapters, desc=f"LibriSpeech {set_name}", unit="chapter", mininterval=2.0):
        spk_chapter = f"{chapter_dir.parent.name}-{chapter_dir.name}"
        trans = chapter_dir / f"{spk_chapter}.trans.txt"
        if not trans.is_file():
            raise DataError(f"{trans}: chapter transcript not found; the {set_name} download looks incomplete")
        for lineno, utt, words in iter_kaldi_text(trans):
            where = f"{trans}:{lineno}"
            if not utt.startswith(spk_chapter + "-"):
                raise DataError(f"{where}: utterance '{utt}' does not belong to chapter {spk_chapter}")
            if utt in wav:
                raise DataError(f"{where}: duplicate utterance id '{utt}'")
            flac = chapter_dir / f"{utt}.flac"
            if not flac.is_file():
                missing.append(f"{where}: {flac}")
                continue
            wav[utt] = os.path.abspath(flac)
            text[utt] = f"[{LANG}] {words}" if lid else words
            utt2spk[utt] = spk_chapter
    if missing:
        listed = listing(missing, _MAX_LISTED)
        raise DataError(
            f"{set_dir}: {len(missing)} transcript entr(ies) have no audio file (transcript:line: expected path): {listed}"
        )
    dd = DataDir(
        {"wav.scp": wav, "text": text, "utt2spk": utt2spk, "utt2lang": dict.fromkeys(wav, LANG)},
        name=f"{set_dir} [{name}]",
    )
    dd.validate()
    logger.info("LibriSpeech %s -> %s: %d utterances, %d speakers", set_name, name, len(dd), len(set(utt2spk.values())))
    return dd


def prepare_librispeech(
    root: str | os.PathLike, sets: Iterable[str] = CHALLENGE_SETS, lid: bool = False
) -> dict[str, DataDir]:
    """Parse several LibriSpeech sets; returns ``{challenge_name: DataDir}``."""
    return {challenge_name(s): prepare_librispeech_set(root, s, lid=lid) for s in sets}
