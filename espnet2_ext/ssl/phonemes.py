"""espeak-ng IPA transcripts: the targets of the demo SSL model's pre-training.

The demo's SSL model stands in for XLS-R. Rather than masked prediction (which needs far more
compute than a CPU demo has, see CALIBRATION.md), it is pre-trained with multilingual phoneme
CTC on espeak-ng's own IPA output, the small analogue of the public XLSR-53 model fine-tuned on
espeak phonemes. The phoneme strings come from the same synthesiser that spoke the audio, so
they match it exactly.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from espnet2_ext.utils.fileio import DataError

logger = logging.getLogger(__name__)

WORD_BOUNDARY = "|"
# Stress marks carry prosody, not phone identity; they would only make the targets noisier.
_DROPPED = {"ˈ", "ˌ", "\u200d"}


def ipa(text: str, voice: str) -> str:
    """IPA of ``text`` as espeak-ng pronounces it with ``voice`` (clauses joined by spaces).

    Raises:
        DataError: espeak-ng failed; the message holds its stderr.
    """
    proc = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", voice, text], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DataError(f"espeak-ng --ipa -v {voice} failed on {text!r}: {proc.stderr.strip()}")
    return " ".join(proc.stdout.split())


def ipa_tokens(ipa_text: str) -> list[str]:
    """Split an IPA string into CTC targets: one token per code point, words joined by ``|``.

    Example:
        >>> ipa_tokens("ɡˈuːtən mˈɔɾɡən")
        ['ɡ', 'u', 'ː', 't', 'ə', 'n', '|', 'm', 'ɔ', 'ɾ', 'ɡ', 'ə', 'n']
    """
    out: list[str] = []
    for word in ipa_text.split():
        if out:
            out.append(WORD_BOUNDARY)
        out.extend(c for c in word if c not in _DROPPED)
    return out


def transcribe(
    texts: Mapping[str, str], utt2lang: Mapping[str, str], voices: Mapping[str, str], workers: int = 2
) -> dict[str, str]:
    """IPA transcripts for a whole data set, ``workers`` espeak-ng processes at a time.

    Args:
        texts: utterance id -> text.
        utt2lang: utterance id -> iso3 language.
        voices: iso3 language -> espeak-ng voice name.

    Returns:
        utterance id -> IPA (same order as ``texts``).
    """
    missing = sorted({utt2lang.get(u, "?") for u in texts} - set(voices))
    if missing:
        raise DataError(f"no espeak-ng voice for language(s) {missing}; add them to the SSL pre-training config")
    utts = list(texts)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            tqdm(
                pool.map(lambda u: ipa(texts[u], voices[utt2lang[u]]), utts),
                total=len(utts),
                desc="espeak-ng IPA",
                mininterval=5,
            )
        )
    return dict(zip(utts, results))
