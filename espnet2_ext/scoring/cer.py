"""Character error counts for one utterance, one set, and per language within a set.

Counts (not rates) are the primary result so that sets and languages can be pooled exactly:
a micro-average is ``sum(errors) / sum(ref_len)``, never a mean of rates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import jiwer
from tqdm import tqdm

from espnet2_ext.scoring.normalize import normalize_for_cer
from espnet2_ext.utils.fileio import DataError

UNKNOWN_LANGUAGE = "unk"
_MAX_IDS_SHOWN = 5


@dataclass(frozen=True)
class ErrorCounts:
    """Edit-operation counts over one or more utterances.

    Attributes:
        sub: substituted reference characters.
        dele: deleted reference characters (``del`` is a keyword).
        ins: inserted hypothesis characters.
        ref_len: reference characters after normalisation, spaces included.
        n_utts: utterances pooled into these counts.
    """

    sub: int = 0
    dele: int = 0
    ins: int = 0
    ref_len: int = 0
    n_utts: int = 0

    @property
    def errors(self) -> int:
        """Total edit operations ``sub + dele + ins``."""
        return self.sub + self.dele + self.ins

    @property
    def cer(self) -> float:
        """Character error rate as a fraction (``errors / ref_len``; can exceed 1).

        With no reference characters it is 0.0 when there are no errors and ``inf`` otherwise.
        """
        if self.ref_len == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.ref_len

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        if not isinstance(other, ErrorCounts):
            return NotImplemented
        return ErrorCounts(
            sub=self.sub + other.sub,
            dele=self.dele + other.dele,
            ins=self.ins + other.ins,
            ref_len=self.ref_len + other.ref_len,
            n_utts=self.n_utts + other.n_utts,
        )


@dataclass(frozen=True)
class SetScore:
    """Scores of one evaluation set.

    Attributes:
        set_name: e.g. ``test_1h`` or ``dev_clean``.
        total: counts over every reference utterance of the set.
        per_language: counts per language id, sorted by language.
        n_missing: reference utterances without a hypothesis, scored as empty (``allow_missing``).
    """

    set_name: str
    total: ErrorCounts
    per_language: dict[str, ErrorCounts] = field(default_factory=dict)
    n_missing: int = 0


def count_errors(ref: str, hyp: str) -> ErrorCounts:
    """Align one normalised reference/hypothesis pair character by character.

    Both strings are passed through :func:`normalize_for_cer` first, so raw text (with LID tags,
    punctuation, any case) is fine. Spaces count as characters.

    Example:
        >>> count_errors("ab cd", "ABCD")
        ErrorCounts(sub=0, dele=1, ins=0, ref_len=5, n_utts=1)
    """
    ref, hyp = normalize_for_cer(ref), normalize_for_cer(hyp)
    # Empty sides are handled here rather than by jiwer, whose behaviour on empty references
    # has changed between versions; the answer is unambiguous anyway.
    if not ref:
        return ErrorCounts(ins=len(hyp), n_utts=1)
    if not hyp:
        return ErrorCounts(dele=len(ref), ref_len=len(ref), n_utts=1)
    out = jiwer.process_characters(ref, hyp)
    # Guards against a jiwer transform silently dropping characters (e.g. spaces).
    aligned = out.hits + out.substitutions + out.deletions
    if aligned != len(ref):
        raise RuntimeError(f"jiwer aligned {aligned} of {len(ref)} reference characters of {ref!r}")
    return ErrorCounts(sub=out.substitutions, dele=out.deletions, ins=out.insertions, ref_len=len(ref), n_utts=1)


def language_of(utt_id: str) -> str:
    """ML-SUPERB language of an utterance id: ``utt_id.split("_")[-2]``, or ``"unk"`` without ``_``."""
    parts = utt_id.split("_")
    return parts[-2] if len(parts) > 1 else UNKNOWN_LANGUAGE


def _first_ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:_MAX_IDS_SHOWN])
    return shown + (", ..." if len(ids) > _MAX_IDS_SHOWN else "")


def score_set(
    refs: Mapping[str, str],
    hyps: Mapping[str, str],
    utt2lang: Mapping[str, str] | None = None,
    set_name: str = "",
    allow_missing: bool = False,
) -> SetScore:
    """Score every reference utterance of one set.

    Args:
        refs: utterance id -> reference text (raw; normalised here).
        hyps: utterance id -> hypothesis text (may be empty).
        utt2lang: utterance id -> language; if None, the language is taken from the id.
        set_name: used in error messages and stored in the result.
        allow_missing: score references without a hypothesis as empty hypotheses
            (all deletions) instead of failing.

    Returns:
        The set's total and per-language counts.

    Raises:
        DataError: no references, hypotheses for unknown ids, missing hypotheses
            (unless ``allow_missing``), or ids missing from ``utt2lang``.
    """
    if not refs:
        raise DataError(f"{set_name}: no reference utterances; check the set's text file")
    extra = [u for u in hyps if u not in refs]
    if extra:
        raise DataError(
            f"{set_name}: {len(extra)} hypothesis id(s) not in the reference ({_first_ids(extra)}); "
            "the hypotheses belong to another set or the data dir changed since decoding"
        )
    missing = [u for u in refs if u not in hyps]
    if missing and not allow_missing:
        raise DataError(
            f"{set_name}: {len(missing)} of {len(refs)} reference utterance(s) have no hypothesis "
            f"({_first_ids(missing)}); check that the decode stage finished for this set "
            "(or allow missing hypotheses to score them as empty)"
        )
    if utt2lang is not None:
        no_lang = [u for u in refs if u not in utt2lang]
        if no_lang:
            raise DataError(
                f"{set_name}: {len(no_lang)} utterance(s) have no language in utt2lang ({_first_ids(no_lang)})"
            )

    total = ErrorCounts()
    per_language: dict[str, ErrorCounts] = {}
    for utt, ref in tqdm(refs.items(), desc=f"score {set_name}", disable=None, leave=False):
        counts = count_errors(ref, hyps.get(utt, ""))
        lang = utt2lang[utt] if utt2lang is not None else language_of(utt)
        total += counts
        per_language[lang] = per_language.get(lang, ErrorCounts()) + counts
    return SetScore(
        set_name=set_name,
        total=total,
        per_language=dict(sorted(per_language.items())),
        n_missing=len(missing),
    )
