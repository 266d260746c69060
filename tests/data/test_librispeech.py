"""LibriSpeech parsing and set-name mapping on a tiny fixture tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from espnet2_ext.data.librispeech import challenge_name, prepare_librispeech, prepare_librispeech_set
from espnet2_ext.utils.fileio import DataError


def _chapter(root: Path, set_name: str, spk: str, chapter: str, n: int, skip: set[str] = frozenset()) -> list[str]:
    d = root / set_name / spk / chapter
    d.mkdir(parents=True, exist_ok=True)
    ids = [f"{spk}-{chapter}-{i:04d}" for i in range(n)]
    (d / f"{spk}-{chapter}.trans.txt").write_text("".join(f"{u} HELLO WORLD {i}\n" for i, u in enumerate(ids)))
    for u in ids:
        if u not in skip:
            sf.write(d / f"{u}.flac", np.zeros(160, dtype=np.int16), 16000, subtype="PCM_16")
    return ids


def test_challenge_names():
    assert challenge_name("train-clean-100") == "train_clean_100"
    assert challenge_name("dev-clean") == "dev_clean"
    assert challenge_name("dev-other") == "dev_other"
    assert challenge_name("test-clean") == "test_clean"
    assert challenge_name("test-other") == "test_other"
    with pytest.raises(DataError, match="unknown LibriSpeech set"):
        challenge_name("dev_clean")


def test_parse_sets(tmp_path):
    root = tmp_path / "LibriSpeech"
    _chapter(root, "dev-clean", "84", "121123", 2)
    _chapter(root, "dev-clean", "1272", "128104", 3)
    _chapter(root, "test-other", "1688", "142285", 1)
    dirs = prepare_librispeech(root, sets=["dev-clean", "test-other"])
    assert list(dirs) == ["dev_clean", "test_other"]
    dev = dirs["dev_clean"]
    assert dev.utt_ids == [
        "1272-128104-0000",
        "1272-128104-0001",
        "1272-128104-0002",
        "84-121123-0000",
        "84-121123-0001",
    ]
    assert dev.utt2spk["84-121123-0001"] == "84-121123"
    assert set(dev.tables["utt2lang"].values()) == {"eng"}
    assert dev.text["84-121123-0001"] == "HELLO WORLD 1"
    assert dev.wav_scp["84-121123-0001"] == str(
        (root / "dev-clean" / "84" / "121123" / "84-121123-0001.flac").resolve()
    )
    assert dev.spk2utt()["84-121123"] == ["84-121123-0000", "84-121123-0001"]
    lid = prepare_librispeech_set(root, "test-other", lid=True)
    assert lid.text["1688-142285-0000"] == "[eng] HELLO WORLD 0"


def test_errors_name_file_line_and_path(tmp_path):
    root = tmp_path / "LS"
    _chapter(root, "dev-clean", "84", "121123", 3, skip={"84-121123-0001"})
    with pytest.raises(DataError) as e:
        prepare_librispeech_set(root, "dev-clean")
    assert "84-121123.trans.txt:2" in str(e.value) and "84-121123-0001.flac" in str(e.value)
    with pytest.raises(DataError, match="dev-other: LibriSpeech set not found"):
        prepare_librispeech_set(root, "dev-other")
    trans = root / "dev-clean" / "84" / "121123" / "84-121123.trans.txt"
    trans.write_text("84-999-0000 WRONG CHAPTER\n")
    with pytest.raises(DataError, match=r"trans.txt:1: utterance '84-999-0000' does not belong to chapter 84-121123"):
        prepare_librispeech_set(root, "dev-clean")
