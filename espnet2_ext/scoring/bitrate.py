"""Bitrate of the discrete input streams an ASR model consumes (Interspeech 2024 DSU challenge).

A stream is one sequence of tokens per utterance (after dedup/BPE, i.e. what the model actually
reads) with its vocabulary size V; each token carries ``log2(V)`` bits.

Two figures exist and they differ:

* :func:`pooled_bitrate` is the challenge definition, ``sum_i (L_i / N) * log2(V_i)`` with all
  tokens and all seconds pooled over every evaluated utterance.
* :func:`mean_utterance_bitrate` is the mean of per-utterance bitrates, which is how ESPnet's
  helper script computes it; short utterances weigh as much as long ones.

Example:
    >>> s = TokenStream({"a": 20, "b": 30}, 1024)
    >>> pooled_bitrate([s], total_seconds=10.0)   # 50 tokens / 10 s * 10 bits
    50.0
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from espnet2_ext.utils.fileio import DataError, read_kaldi_text

_MAX_IDS_SHOWN = 5


class TokenStream(NamedTuple):
    """One input stream: per-utterance token counts and its vocabulary size.

    A plain ``(counts, vocab_size)`` tuple is accepted wherever a TokenStream is.
    """

    counts: Mapping[str, int]
    vocab_size: int
    name: str = ""


def count_tokens(path: str | os.PathLike) -> dict[str, int]:
    """Count space-separated tokens per utterance in a Kaldi text file ``utt tok tok ...``.

    A line with only the utterance id is an utterance with zero tokens.
    """
    return {utt: len(value.split()) for utt, value in read_kaldi_text(path, allow_empty_value=True).items()}


def _label(stream: TokenStream, index: int) -> str:
    return f"stream '{stream.name}'" if stream.name else f"stream {index}"


def _diff_message(what: str, ids: set[str]) -> str:
    shown = sorted(ids)[:_MAX_IDS_SHOWN]
    return f"{len(ids)} utterance(s) {what} ({', '.join(shown)}{', ...' if len(ids) > _MAX_IDS_SHOWN else ''})"


def _check_streams(streams: Sequence[TokenStream | tuple], utt_ids: set[str] | None = None) -> list[TokenStream]:
    """Validate vocab sizes, counts and that every stream covers the same utterances."""
    if not streams:
        raise DataError("bitrate needs at least one token stream")
    checked = [TokenStream(*s) for s in streams]
    for i, s in enumerate(checked):
        if s.vocab_size < 2:
            raise DataError(
                f"{_label(s, i)}: vocab_size must be >= 2 (got {s.vocab_size}); a 1-symbol vocabulary carries no bits"
            )
        negative = [u for u, n in s.counts.items() if n < 0]
        if negative:
            raise DataError(f"{_label(s, i)}: negative token count for {negative[0]}")
    reference = set(checked[0].counts) if utt_ids is None else utt_ids
    ref_label = _label(checked[0], 0) if utt_ids is None else "the durations"
    for i, s in enumerate(checked):
        ids = set(s.counts)
        if ids != reference:
            parts = []
            if reference - ids:
                parts.append(_diff_message(f"in {ref_label} are missing from {_label(s, i)}", reference - ids))
            if ids - reference:
                parts.append(_diff_message(f"in {_label(s, i)} are missing from {ref_label}", ids - reference))
            raise DataError("bitrate: utterance sets differ: " + "; ".join(parts))
    return checked


def pooled_bitrate(streams: Sequence[TokenStream | tuple], total_seconds: float) -> float:
    """Challenge bitrate ``sum_i (L_i / N) * log2(V_i)`` in bit/s.

    Args:
        streams: token streams over the same utterances.
        total_seconds: N, total duration of those utterances (seconds).

    Raises:
        DataError: bad vocab size, non-positive duration or inconsistent utterance sets.
    """
    checked = _check_streams(streams)
    if not total_seconds > 0:
        raise DataError(f"bitrate: total duration must be > 0 seconds (got {total_seconds})")
    return sum(sum(s.counts.values()) / total_seconds * math.log2(s.vocab_size) for s in checked)


def mean_utterance_bitrate(streams: Sequence[TokenStream | tuple], utt2seconds: Mapping[str, float]) -> float:
    """Mean over utterances of ``sum_i (l_iu / n_u) * log2(V_i)`` in bit/s (ESPnet helper's way).

    Args:
        streams: token streams over exactly the utterances in ``utt2seconds``.
        utt2seconds: utterance id -> duration in seconds (each > 0).

    Raises:
        DataError: bad vocab size, a non-positive duration or inconsistent utterance sets.
    """
    if not utt2seconds:
        raise DataError("bitrate: no utterances to average over")
    checked = _check_streams(streams, set(utt2seconds))
    bad = [u for u, sec in utt2seconds.items() if not sec > 0]
    if bad:
        raise DataError(f"bitrate: {_diff_message('have a duration <= 0', set(bad))}")
    bits_per_token = [math.log2(s.vocab_size) for s in checked]
    per_utt = [sum(s.counts[u] * b for s, b in zip(checked, bits_per_token)) / sec for u, sec in utt2seconds.items()]
    return sum(per_utt) / len(per_utt)
