"""Bitrate: the challenge's pooled definition versus the per-utterance mean."""

from __future__ import annotations

from pathlib import Path

import pytest

from espnet2_ext.scoring.bitrate import TokenStream, count_tokens, mean_utterance_bitrate, pooled_bitrate
from espnet2_ext.utils.fileio import DataError

COUNTS = {"u1": 20, "u2": 30}
SECONDS = {"u1": 2.0, "u2": 8.0}


def test_pooled_single_stream() -> None:
    # 50 tokens over 10 s, 10 bits each.
    assert pooled_bitrate([TokenStream(COUNTS, 1024)], 10.0) == pytest.approx(50.0)


def test_pooled_two_streams_and_plain_tuples() -> None:
    # (50 * 10 + 10 * 2) bits / 10 s.
    assert pooled_bitrate([(COUNTS, 1024), ({"u1": 4, "u2": 6}, 4)], 10.0) == pytest.approx(52.0)


def test_mean_utterance_differs_from_pooled() -> None:
    # u1: 20 * 10 / 2 = 100 bit/s, u2: 30 * 10 / 8 = 37.5 bit/s -> mean 68.75, pooled 50.
    assert mean_utterance_bitrate([TokenStream(COUNTS, 1024)], SECONDS) == pytest.approx(68.75)


def test_vocab_size_below_two_is_rejected() -> None:
    with pytest.raises(DataError, match="vocab_size"):
        pooled_bitrate([TokenStream(COUNTS, 1, "units")], 10.0)


def test_non_positive_seconds_are_rejected() -> None:
    with pytest.raises(DataError, match="> 0"):
        pooled_bitrate([TokenStream(COUNTS, 1024)], 0.0)
    with pytest.raises(DataError, match="u2"):
        mean_utterance_bitrate([TokenStream(COUNTS, 1024)], {"u1": 2.0, "u2": 0.0})


def test_streams_over_different_utterances_are_rejected() -> None:
    with pytest.raises(DataError, match="u2"):
        pooled_bitrate([TokenStream(COUNTS, 1024, "a"), TokenStream({"u1": 3}, 8, "b")], 10.0)


def test_durations_not_covering_the_stream_are_rejected() -> None:
    with pytest.raises(DataError, match="u2.*durations|durations.*u2"):
        mean_utterance_bitrate([TokenStream(COUNTS, 1024)], {"u1": 2.0})


def test_count_tokens_allows_empty_utterances(tmp_path: Path) -> None:
    path = tmp_path / "units.bpe"
    path.write_text("u1 a b c\nu2\nu3 x  y\n", encoding="utf-8")
    assert count_tokens(path) == {"u1": 3, "u2": 0, "u3": 2}


def test_count_tokens_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope"):
        count_tokens(tmp_path / "nope")
