"""Unit ids as text: deduplication and the one unit-id -> character mapping.

ESPnet's asr2 recipes feed units to the discrete ASR model as source "text": consecutive repeats
are removed, then every unit id becomes one CJK character ``chr(0x4e00 + id)`` with no spaces, so
that sentencepiece can learn BPE merges over units (METHOD.md section 4). This module is the only
place in the project that maps ids to characters and back.

Example:
    >>> units_to_text(dedup([3, 3, 7, 7, 7, 3]))
    '七万七'
    >>> text_to_units('七万七')
    [3, 7, 3]
"""

from __future__ import annotations

from collections.abc import Sequence

UNIT_CHAR_BASE = 0x4E00
"""Code point of unit 0 (CJK Unified Ideographs start here)."""
MAX_UNITS = 0x9FFF - UNIT_CHAR_BASE + 1
"""Units that fit in the CJK Unified Ideographs block (20,992)."""


def dedup(units: Sequence[int]) -> list[int]:
    """Collapse runs of the same unit: ``[3, 3, 7, 3] -> [3, 7, 3]``."""
    return [u for i, u in enumerate(units) if i == 0 or u != units[i - 1]]


def units_to_text(units: Sequence[int]) -> str:
    """One character per unit id, no separators.

    Raises:
        ValueError: an id outside ``[0, MAX_UNITS)``.
    """
    bad = [u for u in units if not 0 <= u < MAX_UNITS]
    if bad:
        raise ValueError(f"unit id {bad[0]} cannot be written as a character: ids must lie in [0, {MAX_UNITS})")
    return "".join(chr(UNIT_CHAR_BASE + u) for u in units)


def text_to_units(text: str) -> list[int]:
    """Inverse of :func:`units_to_text`.

    Raises:
        ValueError: a character that is not a unit character (e.g. a space or a BPE marker).
    """
    units = [ord(c) - UNIT_CHAR_BASE for c in text]
    bad = [c for c, u in zip(text, units) if not 0 <= u < MAX_UNITS]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a unit character (U+4E00..U+9FFF)")
    return units
