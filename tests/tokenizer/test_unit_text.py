"""The one unit-id <-> character mapping and deduplication."""

from __future__ import annotations

import pytest

from espnet2_ext.tokenizer.unit_text import MAX_UNITS, dedup, text_to_units, units_to_text


def test_dedup_collapses_runs_only() -> None:
    assert dedup([5, 5, 5, 2, 2, 5, 0, 0]) == [5, 2, 5, 0]
    assert dedup([]) == [] and dedup([7]) == [7]


def test_unit_characters_are_espnets_cjk_mapping_and_round_trip() -> None:
    units = [0, 1, 1999, MAX_UNITS - 1]
    text = units_to_text(units)
    assert text[0] == "\u4e00" and text[2] == chr(0x4E00 + 1999) and " " not in text
    assert text_to_units(text) == units


def test_out_of_range_ids_and_foreign_characters_are_rejected() -> None:
    with pytest.raises(ValueError, match="unit id -1"):
        units_to_text([-1])
    with pytest.raises(ValueError, match=f"ids must lie in \\[0, {MAX_UNITS}\\)"):
        units_to_text([MAX_UNITS])
    with pytest.raises(ValueError, match="not a unit character"):
        text_to_units("\u4e00 \u4e01")
