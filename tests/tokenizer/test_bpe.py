"""Source BPE over unit strings: round trips, reproducible training, ESPnet's token list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from espnet2_ext.tokenizer.bpe import decode_pieces, encode_text, train_bpe, write_unit_text
from espnet2_ext.tokenizer.unit_text import dedup, text_to_units
from espnet2_ext.utils.fileio import DataError, read_kaldi_text


def write_units(path: Path, n: int, k: int, seed: int) -> dict[str, list[int]]:
    """Frame-level units with runs (as real units have), some patterns recurring so BPE has merges."""
    shared = np.random.default_rng(99)  # the same patterns in every set
    patterns = [shared.integers(0, k, 4).tolist() for _ in range(5)]
    rng = np.random.default_rng(seed)
    units = {}
    for i in range(n):
        seq = []
        while len(seq) < 60:
            for u in patterns[rng.integers(5)] if rng.random() < 0.6 else rng.integers(0, k, 3).tolist():
                seq += [int(u)] * int(rng.integers(1, 4))
        units[f"u{i:03d}"] = seq
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{u} {' '.join(map(str, s))}\n" for u, s in units.items()))
    return units


def test_unit_text_is_the_deduplicated_units_one_character_each(tmp_path: Path) -> None:
    units = write_units(tmp_path / "units", 5, 30, seed=0)
    written = write_unit_text(tmp_path / "units", tmp_path / "text")
    text = read_kaldi_text(tmp_path / "text")
    assert list(text) == list(units)
    assert all(text_to_units(text[u]) == dedup(units[u]) for u in units)
    assert written == sum(len(dedup(s)) for s in units.values()) < sum(len(s) for s in units.values())


def test_bpe_round_trips_and_training_is_reproducible(tmp_path: Path) -> None:
    write_units(tmp_path / "train/units", 80, 30, seed=1)
    write_unit_text(tmp_path / "train/units", tmp_path / "train/text")
    models = [train_bpe(tmp_path / "train/text", tmp_path / f"bpe{i}", 60) for i in (1, 2)]
    vocabs = [(m.parent / "bpe.vocab").read_text(encoding="utf-8") for m in models]
    assert vocabs[0] == vocabs[1], "same text, same BPE"
    assert not (models[0].parent / "train_strings.txt").exists()

    write_units(tmp_path / "test/units", 10, 30, seed=2)  # unseen utterances
    write_unit_text(tmp_path / "test/units", tmp_path / "test/text")
    pieces_total = encode_text(models[0], tmp_path / "test/text", tmp_path / "test/tokens")
    text, tokens = read_kaldi_text(tmp_path / "test/text"), read_kaldi_text(tmp_path / "test/tokens")
    assert list(tokens) == list(text)
    assert all(decode_pieces(models[0], tokens[u].split()) == text[u] for u in text)
    assert pieces_total == sum(len(t.split()) for t in tokens.values()) < sum(len(t) for t in text.values())

    token_list = (models[0].parent / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert token_list[:2] == ["<blank>", "<unk>"] and token_list[-1] == "<sos/eos>"
    assert len(token_list) == len(set(token_list)) <= 60 + 2
    sp = spm.SentencePieceProcessor(model_file=str(models[0]))
    train_pieces = {p for t in read_kaldi_text(tmp_path / "train/text").values() for p in sp.encode(t, out_type=str)}
    assert train_pieces == set(token_list[2:-1]), "the token list holds exactly the pieces of the train text"


def test_a_vocabulary_smaller_than_the_units_is_a_clear_error(tmp_path: Path) -> None:
    write_units(tmp_path / "units", 20, 30, seed=3)
    write_unit_text(tmp_path / "units", tmp_path / "text")
    with pytest.raises(DataError, match=r"bpe_vocab_size >= \d+"):
        train_bpe(tmp_path / "text", tmp_path / "bpe", 10)
