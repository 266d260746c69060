"""One system's results over several evaluation sets: challenge summary, JSON and Markdown.

The challenge figures are:

* EN: micro-averaged CER over LibriSpeech dev_clean, dev_other, test_clean, test_other
  (total errors / total reference characters); official only when all four were scored.
* ML: CER on ML-SUPERB ``test_1h``.
* Bitrate pooled over all evaluated sets together, plus ESPnet's mean of per-utterance bitrates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from espnet2_ext.scoring.bitrate import TokenStream, mean_utterance_bitrate, pooled_bitrate
from espnet2_ext.scoring.cer import ErrorCounts, SetScore
from espnet2_ext.utils.fileio import DataError

LIBRISPEECH_SETS = ("dev_clean", "dev_other", "test_clean", "test_other")
MLSUPERB_SET = "test_1h"


@dataclass(frozen=True)
class StreamTotal:
    """Pooled size of one input stream over all evaluated sets."""

    name: str
    vocab_size: int
    n_tokens: int


@dataclass(frozen=True)
class BitrateResult:
    """Both bitrate figures (bit/s) over all evaluated utterances.

    Attributes:
        pooled: challenge definition, ``sum_i (L_i / N) * log2(V_i)``.
        utterance_mean: mean of per-utterance bitrates (ESPnet helper's way).
        total_seconds: N, total evaluated audio.
        n_utts: utterances the bitrate covers.
        streams: per-stream vocabulary size and token total.
    """

    pooled: float
    utterance_mean: float
    total_seconds: float
    n_utts: int
    streams: tuple[StreamTotal, ...]


@dataclass(frozen=True)
class Report:
    """Everything scored for one system.

    Attributes:
        system: a label for the system (e.g. its decode dir).
        sets: per-set scores, in evaluation order.
        librispeech_sets: which of :data:`LIBRISPEECH_SETS` were scored, in canonical order.
        librispeech_micro: pooled counts over those sets, or None if none was scored.
        mlsuperb: counts of ``test_1h``, or None if it was not scored.
        bitrate: None unless token streams were given.
    """

    system: str
    sets: tuple[SetScore, ...]
    librispeech_sets: tuple[str, ...]
    librispeech_micro: ErrorCounts | None
    mlsuperb: ErrorCounts | None
    bitrate: BitrateResult | None

    @property
    def librispeech_complete(self) -> bool:
        """True when all four LibriSpeech sets went into the EN figure (the official definition)."""
        return self.librispeech_sets == LIBRISPEECH_SETS


def _pool_streams(
    set_names: Sequence[str],
    streams: Mapping[str, Sequence[TokenStream]],
    utt2seconds: Mapping[str, Mapping[str, float]],
) -> tuple[list[TokenStream], dict[str, float]]:
    """Merge per-set streams and durations into one pool keyed ``"<set>/<utt>"``.

    Keys are prefixed with the set so that equal utterance ids in two sets stay distinct.
    """
    for what, given in (("token streams", streams), ("durations", utt2seconds)):
        missing = [s for s in set_names if s not in given]
        extra = [s for s in given if s not in set_names]
        if missing or extra:
            raise DataError(f"bitrate: {what} missing for set(s) {missing} / given for unscored set(s) {extra}")
    first = [TokenStream(*s) for s in streams[set_names[0]]]
    pooled_counts: list[dict[str, int]] = [{} for _ in first]
    pooled_seconds: dict[str, float] = {}
    for set_name in set_names:
        per_set = [TokenStream(*s) for s in streams[set_name]]
        layout = [(s.name, s.vocab_size) for s in per_set]
        if layout != [(s.name, s.vocab_size) for s in first]:
            raise DataError(
                f"bitrate: set {set_name} has streams {layout} but {set_names[0]} has "
                f"{[(s.name, s.vocab_size) for s in first]}; every set must use the same streams"
            )
        for pool, s in zip(pooled_counts, per_set):
            pool.update((f"{set_name}/{u}", n) for u, n in s.counts.items())
        pooled_seconds.update((f"{set_name}/{u}", sec) for u, sec in utt2seconds[set_name].items())
    return [TokenStream(c, s.vocab_size, s.name) for c, s in zip(pooled_counts, first)], pooled_seconds


def build_report(
    scores: Sequence[SetScore],
    streams: Mapping[str, Sequence[TokenStream]] | None = None,
    utt2seconds: Mapping[str, Mapping[str, float]] | None = None,
    system: str = "",
) -> Report:
    """Combine per-set scores (and optionally token streams) into a system report.

    Args:
        scores: one :class:`SetScore` per evaluated set (names must be unique).
        streams: set name -> that set's token streams (same names and vocab sizes in every set).
        utt2seconds: set name -> utterance id -> seconds; required with ``streams``.
        system: label used in the Markdown heading and the JSON.

    Raises:
        DataError: duplicate set names, or streams/durations inconsistent with the sets.
    """
    names = [s.set_name for s in scores]
    if len(set(names)) != len(names):
        raise DataError(f"set names must be unique; got {names}")
    by_name = {s.set_name: s for s in scores}

    ls_sets = tuple(s for s in LIBRISPEECH_SETS if s in by_name)
    ls_micro = sum((by_name[s].total for s in ls_sets), ErrorCounts()) if ls_sets else None
    ml = by_name[MLSUPERB_SET].total if MLSUPERB_SET in by_name else None

    bitrate = None
    if streams is not None:
        if utt2seconds is None:
            raise DataError("bitrate: token streams given without utterance durations")
        if not names:
            raise DataError("bitrate: no sets were scored")
        pooled, seconds = _pool_streams(names, streams, utt2seconds)
        total_seconds = math.fsum(seconds.values())
        bitrate = BitrateResult(
            pooled=pooled_bitrate(pooled, total_seconds),
            utterance_mean=mean_utterance_bitrate(pooled, seconds),
            total_seconds=total_seconds,
            n_utts=len(seconds),
            streams=tuple(StreamTotal(s.name, s.vocab_size, sum(s.counts.values())) for s in pooled),
        )
    return Report(
        system=system,
        sets=tuple(scores),
        librispeech_sets=ls_sets,
        librispeech_micro=ls_micro,
        mlsuperb=ml,
        bitrate=bitrate,
    )


def _counts_json(c: ErrorCounts) -> dict[str, Any]:
    # Raw counts are the truth; the percentage is a convenience (null when undefined).
    return {
        "n_utts": c.n_utts,
        "ref_chars": c.ref_len,
        "sub": c.sub,
        "del": c.dele,
        "ins": c.ins,
        "errors": c.errors,
        "cer_percent": 100 * c.errors / c.ref_len if c.ref_len else None,
    }


def to_dict(report: Report) -> dict[str, Any]:
    """The report as plain JSON-ready data, keys in a fixed order."""
    sets = {}
    for s in report.sets:
        entry = _counts_json(s.total)
        entry["n_missing_hyps"] = s.n_missing
        entry["languages"] = {lang: _counts_json(c) for lang, c in s.per_language.items()}
        sets[s.set_name] = entry
    en = None
    if report.librispeech_micro is not None:
        en = {
            "sets": list(report.librispeech_sets),
            "complete": report.librispeech_complete,
            **_counts_json(report.librispeech_micro),
        }
    ml = None if report.mlsuperb is None else {"set": MLSUPERB_SET, **_counts_json(report.mlsuperb)}
    br = None
    if report.bitrate is not None:
        b = report.bitrate
        br = {
            "pooled_bps": b.pooled,
            "utterance_mean_bps": b.utterance_mean,
            "total_seconds": b.total_seconds,
            "n_utts": b.n_utts,
            "streams": [{"name": s.name, "vocab_size": s.vocab_size, "n_tokens": s.n_tokens} for s in b.streams],
        }
    return {
        "system": report.system,
        "sets": sets,
        "summary": {"librispeech_micro": en, "mlsuperb": ml, "bitrate": br},
    }


def to_json(report: Report) -> str:
    """Serialise the report (UTF-8 friendly, indented, trailing newline)."""
    return json.dumps(to_dict(report), indent=2, ensure_ascii=False) + "\n"


def _pct(num: int, den: int) -> str:
    return f"{100 * num / den:.2f}" if den else "n/a"


def _summary_lines(report: Report) -> list[str]:
    lines = []
    en = report.librispeech_micro
    if en is None:
        lines.append("- EN CER (LibriSpeech micro-average): n/a (no LibriSpeech set scored)")
    elif report.librispeech_complete:
        lines.append(
            f"- EN CER (LibriSpeech micro-average over {', '.join(LIBRISPEECH_SETS)}): **{_pct(en.errors, en.ref_len)} %**"
        )
    else:
        lines.append(
            f"- EN CER (LibriSpeech micro-average over {', '.join(report.librispeech_sets)} only; "
            f"not the official figure, which needs all four sets): {_pct(en.errors, en.ref_len)} %"
        )
    ml = report.mlsuperb
    if ml is None:
        lines.append(f"- ML CER (ML-SUPERB {MLSUPERB_SET}): n/a (not scored)")
    else:
        lines.append(f"- ML CER (ML-SUPERB {MLSUPERB_SET}): **{_pct(ml.errors, ml.ref_len)} %**")
    b = report.bitrate
    if b is None:
        lines.append("- Bitrate: n/a (no token streams given)")
    else:
        streams = ", ".join(f"{s.name or 'stream'} V={s.vocab_size} {s.n_tokens} tokens" for s in b.streams)
        lines.append(
            f"- Bitrate (challenge: pooled tokens / pooled seconds over all {len(report.sets)} sets, "
            f"{b.n_utts} utts, {b.total_seconds:.1f} s): **{b.pooled:.2f} bit/s**"
        )
        lines.append(f"- Bitrate (ESPnet helper: mean of per-utterance bitrates): {b.utterance_mean:.2f} bit/s")
        lines.append(f"- Streams: {streams}")
    return lines


def to_markdown(report: Report) -> str:
    """Markdown ready to paste into RESULTS.md: set table, language x set table, summary."""
    out = [f"### {report.system}" if report.system else "### Results", ""]
    out += ["| set | #utt | #ref chars | CER % | sub % | del % | ins % |", "|---|---:|---:|---:|---:|---:|---:|"]
    for s in report.sets:
        c = s.total
        out.append(
            f"| {s.set_name} | {c.n_utts} | {c.ref_len} | {_pct(c.errors, c.ref_len)} | "
            f"{_pct(c.sub, c.ref_len)} | {_pct(c.dele, c.ref_len)} | {_pct(c.ins, c.ref_len)} |"
        )
    missing = [f"{s.set_name}: {s.n_missing}" for s in report.sets if s.n_missing]
    if missing:
        out += ["", f"Missing hypotheses scored as empty: {', '.join(missing)}."]

    languages = sorted({lang for s in report.sets for lang in s.per_language})
    out += ["", "CER % by language:", ""]
    out.append("| language | " + " | ".join(s.set_name for s in report.sets) + " |")
    out.append("|---|" + "---:|" * len(report.sets))
    for lang in languages:
        cells = []
        for s in report.sets:
            c = s.per_language.get(lang)
            cells.append("-" if c is None else _pct(c.errors, c.ref_len))
        out.append(f"| {lang} | " + " | ".join(cells) + " |")

    out += ["", *_summary_lines(report)]
    return "\n".join(out) + "\n"
