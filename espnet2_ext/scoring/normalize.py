"""The one text normaliser used before counting character errors (ML-SUPERB convention).

Example:
    >>> normalize_for_cer("[eng] Hello,  world!")
    'HELLO WORLD'
    >>> normalize_for_cer("привет, мир")
    'ПРИВЕТ МИР'
"""

from __future__ import annotations

import re
import string

# Bracketed tags such as the LID prefix "[eng]" or "[noise]"; non-greedy so "[a] x [b]" keeps " x ".
_TAG_RE = re.compile(r"\[[^\]]*\]")
# Only ASCII punctuation is removed: Unicode marks (Devanagari matras, Arabic harakat) are letters
# for CER purposes, and removing them would hide real errors.
_ASCII_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_for_cer(text: str) -> str:
    """Normalise a reference or hypothesis for CER.

    Steps, in order: strip ``[...]`` tags, delete ASCII punctuation, upper-case, collapse
    whitespace runs to one space and strip the ends. Spaces that remain count as characters.

    Args:
        text: raw transcript or hypothesis, possibly with a ``[iso]`` LID prefix.

    Returns:
        The normalised string (idempotent: normalising it again changes nothing).
    """
    # Tags go first: "[" and "]" are punctuation, so deleting punctuation first would leave "eng".
    text = _TAG_RE.sub("", text)
    text = text.translate(_ASCII_PUNCT).upper()
    return " ".join(text.split())
