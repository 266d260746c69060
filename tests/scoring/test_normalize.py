"""ML-SUPERB CER normalisation: what is removed, what must stay untouched."""

from __future__ import annotations

import pytest

from espnet2_ext.scoring.normalize import normalize_for_cer


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello, world!", "HELLO WORLD"),
        ("don't stop.", "DONT STOP"),  # punctuation is deleted, not turned into a space
        ("[eng] hello", "HELLO"),
        ("[eng]hello", "HELLO"),
        ("[eng] a [noise] b", "A B"),
        ("  a \t b\n", "A B"),
        ("[eng]", ""),
        ("", ""),
        ('a-b_c (d) {e} "f" #1', "ABC D E F 1"),
    ],
)
def test_ascii_cases(raw: str, expected: str) -> None:
    assert normalize_for_cer(raw) == expected


def test_russian_is_upper_cased_and_its_punctuation_removed() -> None:
    assert normalize_for_cer("[rus] Привет, мир!") == "ПРИВЕТ МИР"


def test_hindi_matras_and_danda_are_kept() -> None:
    # The virama, vowel signs and the danda are not ASCII punctuation: they must survive.
    assert normalize_for_cer("नमस्ते, दुनिया।") == "नमस्ते दुनिया।"
    assert len(normalize_for_cer("नमस्ते")) == 6


def test_arabic_comma_is_kept_ascii_bang_removed() -> None:
    assert normalize_for_cer("مرحبا، بالعالم!") == "مرحبا، بالعالم"


def test_greek_final_sigma_upper_cases_to_sigma() -> None:
    assert normalize_for_cer("καλημέρα κόσμος") == "ΚΑΛΗΜΈΡΑ ΚΌΣΜΟΣ"


@pytest.mark.parametrize("raw", ["[eng] Hello, world!", "नमस्ते, दुनिया।", "Straße [x] ok", "a [b] [c"])
def test_idempotent(raw: str) -> None:
    once = normalize_for_cer(raw)
    assert normalize_for_cer(once) == once
