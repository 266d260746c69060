"""Challenge submission files: vocabulary JSON, units per utterance, hypotheses; and their checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from espnet2_ext.scoring.submission import write_submission
from espnet2_ext.utils.fileio import DataError, write_kaldi_text


def test_writes_vocabulary_units_and_hypotheses(tmp_path: Path) -> None:
    write_kaldi_text(tmp_path / "tokens", [("u2", "▁a b"), ("u1", "b")])
    write_kaldi_text(tmp_path / "hyp", [("u1", "HELLO"), ("u2", "")])
    write_submission(tmp_path / "sub", [["▁a", "b"]], {"test": [tmp_path / "tokens"]}, {"test": tmp_path / "hyp"})
    assert json.loads((tmp_path / "sub/vocab.json").read_text(encoding="utf-8")) == {"0": ["▁a", "b"]}
    units = json.loads((tmp_path / "sub/test/units.json").read_text(encoding="utf-8"))
    assert units == {"u1": [["b"]], "u2": [["▁a", "b"]]}
    assert (tmp_path / "sub/test/text").read_text() == "u1 HELLO\nu2\n"


def test_a_token_outside_the_vocabulary_names_the_file_and_line(tmp_path: Path) -> None:
    write_kaldi_text(tmp_path / "tokens", [("u1", "a"), ("u2", "a zz")])
    write_kaldi_text(tmp_path / "hyp", [("u1", "X"), ("u2", "Y")])
    with pytest.raises(DataError, match=r"tokens:2: token 'zz' is not in the stream's vocabulary"):
        write_submission(tmp_path / "sub", [["a"]], {"t": [tmp_path / "tokens"]}, {"t": tmp_path / "hyp"})


def test_units_and_hypotheses_must_cover_the_same_utterances(tmp_path: Path) -> None:
    write_kaldi_text(tmp_path / "tokens", [("u1", "a"), ("u2", "a")])
    write_kaldi_text(tmp_path / "hyp", [("u1", "X")])
    with pytest.raises(DataError, match=r"1 utterance\(s\) in only one of them \(u2\)"):
        write_submission(tmp_path / "sub", [["a"]], {"t": [tmp_path / "tokens"]}, {"t": tmp_path / "hyp"})
