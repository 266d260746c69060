"""Character error counts: one of each edit, spaces, empty sides, per-language pooling."""

from __future__ import annotations

import math

import pytest

from espnet2_ext.scoring.cer import ErrorCounts, count_errors, language_of, score_set
from espnet2_ext.utils.fileio import DataError


def test_identical_after_normalisation_is_zero_errors() -> None:
    c = count_errors("[eng] Hello, World!", "hello world")
    assert c == ErrorCounts(sub=0, dele=0, ins=0, ref_len=11, n_utts=1)
    assert c.cer == 0.0


def test_one_substitution() -> None:
    c = count_errors("abc", "abd")
    assert (c.sub, c.dele, c.ins, c.ref_len) == (1, 0, 0, 3)
    assert c.cer == pytest.approx(1 / 3)


def test_one_deletion() -> None:
    assert count_errors("abcd", "abd") == ErrorCounts(sub=0, dele=1, ins=0, ref_len=4, n_utts=1)


def test_one_insertion() -> None:
    assert count_errors("abc", "abxc") == ErrorCounts(sub=0, dele=0, ins=1, ref_len=3, n_utts=1)


def test_space_is_a_character() -> None:
    assert count_errors("AB CD", "ABCD") == ErrorCounts(sub=0, dele=1, ins=0, ref_len=5, n_utts=1)
    assert count_errors("ABCD", "AB CD") == ErrorCounts(sub=0, dele=0, ins=1, ref_len=4, n_utts=1)


def test_non_ascii_counted_per_code_point() -> None:
    assert count_errors("привет", "привед") == ErrorCounts(sub=1, dele=0, ins=0, ref_len=6, n_utts=1)
    # Hindi: only the final vowel sign differs (े vs ि).
    assert count_errors("नमस्ते", "नमस्ति") == ErrorCounts(sub=1, dele=0, ins=0, ref_len=6, n_utts=1)


def test_empty_reference_is_all_insertions() -> None:
    c = count_errors("[eng]", "ab")
    assert c == ErrorCounts(sub=0, dele=0, ins=2, ref_len=0, n_utts=1)
    assert math.isinf(c.cer)
    assert count_errors("", "").cer == 0.0


def test_empty_hypothesis_is_all_deletions() -> None:
    assert count_errors("a b", "") == ErrorCounts(sub=0, dele=3, ins=0, ref_len=3, n_utts=1)


def test_counts_add_and_errors() -> None:
    total = ErrorCounts(1, 2, 3, 10, 1) + ErrorCounts(0, 1, 0, 5, 2)
    assert total == ErrorCounts(sub=1, dele=3, ins=3, ref_len=15, n_utts=3)
    assert total.errors == 7


@pytest.mark.parametrize(
    ("utt", "lang"),
    [("fleurs_eng_000123", "eng"), ("A_B_fra_1", "fra"), ("x_y", "x"), ("1272-128104-0000", "unk")],
)
def test_language_from_id(utt: str, lang: str) -> None:
    assert language_of(utt) == lang


REFS = {"ds_eng_1": "abcd", "ds_eng_2": "ab", "ds_fra_1": "abc"}


def test_per_language_split_and_total() -> None:
    hyps = {"ds_eng_1": "abd", "ds_eng_2": "ab", "ds_fra_1": "xyz"}
    s = score_set(REFS, hyps, None, "test_1h")
    assert s.set_name == "test_1h"
    assert s.total == ErrorCounts(sub=3, dele=1, ins=0, ref_len=9, n_utts=3)
    assert s.per_language == {
        "eng": ErrorCounts(sub=0, dele=1, ins=0, ref_len=6, n_utts=2),
        "fra": ErrorCounts(sub=3, dele=0, ins=0, ref_len=3, n_utts=1),
    }
    assert s.n_missing == 0


def test_utt2lang_overrides_the_id_rule() -> None:
    s = score_set(REFS, dict(REFS), {"ds_eng_1": "en", "ds_eng_2": "en", "ds_fra_1": "en"}, "x")
    assert list(s.per_language) == ["en"]
    assert s.per_language["en"].n_utts == 3


def test_utt2lang_missing_an_utterance_is_an_error() -> None:
    with pytest.raises(DataError, match="ds_fra_1"):
        score_set(REFS, dict(REFS), {"ds_eng_1": "en", "ds_eng_2": "en"}, "x")


def test_missing_hypothesis_is_an_error_naming_set_count_and_ids() -> None:
    with pytest.raises(DataError) as e:
        score_set(REFS, {"ds_eng_1": "abcd"}, None, "test_1h")
    msg = str(e.value)
    assert "test_1h" in msg and "2 of 3" in msg and "ds_eng_2" in msg and "ds_fra_1" in msg and "decode" in msg


def test_allow_missing_scores_as_empty_hypothesis() -> None:
    s = score_set(REFS, {"ds_eng_1": "abcd"}, None, "test_1h", allow_missing=True)
    assert s.n_missing == 2
    assert s.total == ErrorCounts(sub=0, dele=5, ins=0, ref_len=9, n_utts=3)


def test_hypothesis_for_unknown_id_is_an_error() -> None:
    with pytest.raises(DataError, match="not in the reference.*ds_deu_9"):
        score_set(REFS, {**REFS, "ds_deu_9": "a"}, None, "test_1h")


def test_no_references_is_an_error() -> None:
    with pytest.raises(DataError, match="no reference"):
        score_set({}, {}, None, "dev_clean")
