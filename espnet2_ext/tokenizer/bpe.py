"""Unit strings and source BPE: what the discrete ASR model reads.

Per set (``dump/units/<system>/<set>/``):

* ``text`` -- ``utt <string>``: the frame-level ``units`` deduplicated, one character per unit
  (:mod:`espnet2_ext.tokenizer.unit_text`), no spaces: the discrete-ASR source text;
* ``tokens`` -- ``utt piece piece ...``: that string cut by the source BPE (no dropout); the
  tokens the model consumes, the input of the bitrate.

The BPE model (``dump/units/<system>/src_bpe/bpe.model``) is trained with sentencepiece on the
training set's ``text`` with ESPnet's asr2 settings (``model_type=bpe``,
``character_coverage=1.0``); training is deterministic (no sentence sampling, one thread), so the
same text gives the same model. ``tokens.txt`` is ESPnet's token list for it, written by ESPnet's
own ``espnet2.bin.tokenize_text`` (``<blank>``, ``<unk>``, pieces by frequency, ``<sos/eos>``).

Example:
    >>> write_unit_text("dump/units/twostep/train/units", "dump/units/twostep/train/text")  # doctest: +SKIP
    >>> train_bpe("dump/units/twostep/train/text", "dump/units/twostep/src_bpe", 1000)     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from espnet2_ext.tokenizer.unit_text import dedup, units_to_text
from espnet2_ext.utils.fileio import DataError, atomic_open, atomic_write_text, iter_kaldi_text, write_kaldi_text

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<blank>:0", "<unk>:1", "<sos/eos>:-1")
"""ESPnet's token-list symbols (asr.sh / asr2.sh ``--add_symbol``)."""
_MAX_SENTENCE_BYTES = 1 << 20  # sentencepiece's default (4192 bytes ~ 1400 units) is too short for long test utterances


def read_units(path: str | os.PathLike) -> dict[str, list[int]]:
    """A ``units`` file (``utt u1 u2 ...``) as id -> unit ids.

    Raises:
        DataError: naming the file and line of a non-integer unit.
    """
    out = {}
    for lineno, utt, value in iter_kaldi_text(path, allow_empty_value=True):
        try:
            out[utt] = [int(u) for u in value.split()]
        except ValueError:
            raise DataError(f"{path}:{lineno}: '{utt}' holds a non-integer unit; rerun the unit dump") from None
    return out


def write_unit_text(units_file: str | os.PathLike, text_file: str | os.PathLike) -> int:
    """Deduplicate every utterance's units and write them as unit strings (``utt <string>``).

    Returns:
        Units written (after dedup).
    """
    rows = [(utt, units_to_text(dedup(units))) for utt, units in read_units(units_file).items()]
    write_kaldi_text(text_file, rows)
    return sum(len(s) for _, s in rows)


def train_bpe(text_file: str | os.PathLike, out_dir: str | os.PathLike, vocab_size: int) -> Path:
    """Train the source BPE on a ``text`` file; write ``bpe.model``, ``bpe.vocab`` and ``tokens.txt``.

    Args:
        text_file: ``utt <string>`` lines (the training set's unit strings).
        out_dir: the ``src_bpe`` directory.
        vocab_size: sentencepiece vocabulary size (at least the distinct units in the text + 3).

    Returns:
        The ``bpe.model`` path.

    Raises:
        DataError: the text is empty or the vocabulary is too small for its characters.
    """
    import sentencepiece as spm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    strings = [value for _, _, value in iter_kaldi_text(text_file)]
    if not strings:
        raise DataError(f"{text_file}: no unit strings to train the BPE on")
    chars = len(set("".join(strings)))
    if vocab_size < chars + 3:
        raise DataError(f"{text_file}: BPE vocab_size {vocab_size} is smaller than the {chars} distinct units + 3 "
                        f"special pieces; set bpe_vocab_size >= {chars + 3} in the units config")
    sentences = out_dir / "train_strings.txt"
    atomic_write_text(sentences, "".join(s + "\n" for s in strings))
    prefix = out_dir / ".bpe.tmp"
    try:
        spm.SentencePieceTrainer.train(
            input=str(sentences), model_prefix=str(prefix), vocab_size=vocab_size, model_type="bpe",
            character_coverage=1.0, input_sentence_size=100_000_000, shuffle_input_sentence=False,
            max_sentence_length=_MAX_SENTENCE_BYTES, num_threads=1, minloglevel=2,
        )
    except RuntimeError as e:
        raise DataError(f"{text_file}: sentencepiece could not train a BPE of size {vocab_size}: {e}") from None
    for ext in ("vocab", "model"):  # the model last: its presence means the BPE is complete
        os.replace(f"{prefix}.{ext}", out_dir / f"bpe.{ext}")
    sentences.unlink()
    write_token_list(text_file, out_dir / "bpe.model", out_dir / "tokens.txt")
    return out_dir / "bpe.model"


def write_token_list(text_file: str | os.PathLike, bpe_model: str | os.PathLike, out: str | os.PathLike) -> Path:
    """ESPnet's token list for the BPE, by ``espnet2.bin.tokenize_text`` (as asr2.sh makes it)."""
    from espnet2.bin.tokenize_text import tokenize

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    tokenize(input=str(text_file), output=str(tmp), field="2-", delimiter=None, token_type="bpe",
             space_symbol="<space>", non_linguistic_symbols=None, bpemodel=str(bpe_model), log_level="WARNING",
             write_vocabulary=True, vocabulary_size=0, remove_non_linguistic_symbols=False, cutoff=0,
             add_symbol=list(SPECIAL_TOKENS), cleaner=None, g2p=None, add_nonsplit_symbol=[])
    os.replace(tmp, out)
    return out


def encode_text(bpe_model: str | os.PathLike, text_file: str | os.PathLike, tokens_file: str | os.PathLike) -> int:
    """Cut every unit string of ``text_file`` into BPE pieces (``utt piece piece ...``), no dropout.

    Returns:
        Pieces written.
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(bpe_model))
    total = 0
    with atomic_open(tokens_file) as f:
        for _, utt, value in iter_kaldi_text(text_file, allow_empty_value=True):
            pieces = sp.encode(value, out_type=str) if value else []
            total += len(pieces)
            f.write(f"{utt} {' '.join(pieces)}\n" if pieces else f"{utt}\n")
    return total


def decode_pieces(bpe_model: str | os.PathLike, pieces: list[str]) -> str:
    """The unit string of BPE pieces (inverse of :func:`encode_text` for one utterance)."""
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(bpe_model)).decode_pieces(pieces)
