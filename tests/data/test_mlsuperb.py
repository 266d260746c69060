"""ML-SUPERB parsing rules on a tiny fixture tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from espnet2_ext.data.mlsuperb import RESERVED_LANGS, lang_of, prepare_mlsuperb
from espnet2_ext.utils.fileio import DataError

FILES = ("1h_train", "10min_train", "10min_dev", "10min_test")


def _tree(root: Path, spec: dict[tuple[str, str], dict[str, list[str]]], skip_wav: set[str] = frozenset()) -> Path:
    """spec: (dataset, iso3) -> {"1h_train": [lines...], ...}; a wav is written for each line's first field."""
    for (dataset, iso3), files in spec.items():
        lang_dir = root / dataset / iso3
        (lang_dir / "wav").mkdir(parents=True, exist_ok=True)
        for key in FILES:
            lines = files.get(key, [])
            (lang_dir / f"transcript_{key}.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
            for line in lines:
                fields = line.split()
                if len(fields) >= 3 and fields[0] not in skip_wav:
                    sf.write(lang_dir / "wav" / f"{fields[0]}.wav", np.zeros(160), 16000, subtype="PCM_16")
    return root


def _lines(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix}_{i:06d} x words of {prefix} {i}" for i in range(start, start + n)]


def _basic(root: Path) -> Path:
    return _tree(
        root,
        {
            ("fleurs", "lit"): {
                "1h_train": _lines("fleurs_lit", 8),
                "10min_train": _lines("fleurs_lit", 2),
                "10min_dev": _lines("fleurs_lit", 2, start=100),
                "10min_test": _lines("fleurs_lit", 3, start=200),
            },
            ("commonvoice", "lit"): {"1h_train": _lines("cv_lit", 3)},
            ("mls", "deu"): {
                "1h_train": _lines("mls_deu", 7),
                "10min_train": _lines("mls_deu", 1),
                "10min_dev": _lines("mls_deu", 1, start=100),
                "10min_test": _lines("mls_deu", 2, start=200),
            },
        },
    )


def test_lang_of():
    assert lang_of("cv_lit_000026") == "lit"
    assert lang_of("googlei18n-tts_tsn_000026") == "tsn"
    assert lang_of("mexico-el_tos_000006") == "tos"
    with pytest.raises(ValueError):
        lang_of("nounderscore")


def test_default_reserved_list_has_the_20_languages():
    assert len(set(RESERVED_LANGS)) == 20 and "lit" in RESERVED_LANGS and "eng" not in RESERVED_LANGS


def test_setups_dev_test_and_outputs(tmp_path):
    root = _basic(tmp_path / "ml")
    one = prepare_mlsuperb(root, setup="1h", reserved_langs=[])
    ten = prepare_mlsuperb(root, setup="10min", reserved_langs=[])
    assert len(one["train"]) == 8 + 3 + 7 and len(ten["train"]) == 2 + 1
    for split in ("dev", "test"):  # always the 10-minute files, whatever the setup
        assert one[split].tables == ten[split].tables
    assert one["dev"].utt_ids == ["fleurs_lit_000100", "fleurs_lit_000101", "mls_deu_000100"]
    assert len(one["test"]) == 5
    train = one["train"]
    u = "mls_deu_000003"
    assert train.text[u] == "words of mls_deu 3"  # field 2 dropped, text kept as written
    assert train.utt2spk[u] == u
    assert train.tables["utt2lang"][u] == "deu"
    assert train.wav_scp[u] == str((root / "mls" / "deu" / "wav" / f"{u}.wav").resolve())
    assert set(train.utt_ids) & set(one["test"].utt_ids) == set()


def test_reserved_languages_keep_first_five_in_train_only(tmp_path):
    root = _basic(tmp_path / "ml")
    dirs = prepare_mlsuperb(root, setup="1h", reserved_langs=["lit"])
    lit_train = [u for u in dirs["train"].utt_ids if dirs["train"].tables["utt2lang"][u] == "lit"]
    # first 5 by sorted id over all datasets of the language ("cv_" < "fleurs_")
    assert lit_train == ["cv_lit_000000", "cv_lit_000001", "cv_lit_000002", "fleurs_lit_000000", "fleurs_lit_000001"]
    assert sum(dirs["train"].tables["utt2lang"][u] == "deu" for u in dirs["train"].utt_ids) == 7
    assert len(dirs["dev"]) == 3 and len(dirs["test"]) == 5
    assert len(prepare_mlsuperb(root, setup="1h", reserved_langs=["lit"], few_shot_utts=2)["train"]) == 2 + 7


def test_lid_prefix(tmp_path):
    dirs = prepare_mlsuperb(_basic(tmp_path / "ml"), setup="10min", lid=True, reserved_langs=[])
    assert dirs["train"].text["mls_deu_000000"] == "[deu] words of mls_deu 0"
    assert dirs["test"].text["fleurs_lit_000200"] == "[lit] words of fleurs_lit 200"


def test_short_lines_counted_and_threshold_enforced(tmp_path, caplog):
    lines = _lines("fleurs_lit", 30)
    lines[4] = "fleurs_lit_000004 onlytwo"
    root = _tree(tmp_path / "ml", {("fleurs", "lit"): {k: lines for k in FILES}})
    bad_file = root / "fleurs" / "lit" / "transcript_10min_dev.txt"
    # 3 bad of 90 lines read (1h train, dev, test): 3.3 %
    with pytest.raises(DataError) as e:
        prepare_mlsuperb(root, setup="1h", reserved_langs=[], max_bad_fraction=0.01)
    assert "3 of 90" in str(e.value) and "--max_bad_fraction" in str(e.value)
    caplog.clear()
    dirs = prepare_mlsuperb(root, setup="1h", reserved_langs=[], max_bad_fraction=0.05)
    assert len(dirs["dev"]) == 29 and "fleurs_lit_000004" not in dirs["dev"].utt_ids
    assert f"{bad_file}:5" in caplog.text


def test_language_mismatch_names_file_and_line(tmp_path):
    train = _lines("fleurs_lit", 3) + ["fleurs_lav_000009 x wrong folder"]
    root = _tree(
        tmp_path / "ml",
        {("fleurs", "lit"): {k: train if k == "1h_train" else _lines("fleurs_lit", 1, 50) for k in FILES}},
    )
    with pytest.raises(DataError, match=r"transcript_1h_train.txt:4: utterance 'fleurs_lav_000009' has language 'lav'"):
        prepare_mlsuperb(root, setup="1h", reserved_langs=[])


def test_missing_wav_names_transcript_line_and_expected_path(tmp_path):
    spec = {("fleurs", "lit"): {k: _lines("fleurs_lit", 3, start=10 * i) for i, k in enumerate(FILES)}}
    root = _tree(tmp_path / "ml", spec, skip_wav={"fleurs_lit_000031"})
    with pytest.raises(DataError) as e:
        prepare_mlsuperb(root, setup="1h", reserved_langs=[])
    msg = str(e.value)
    assert "transcript_10min_test.txt:2" in msg
    assert str(root / "fleurs" / "lit" / "wav" / "fleurs_lit_000031.wav") in msg


def test_duplicate_id_and_bad_setup(tmp_path):
    lines = _lines("fleurs_lit", 2)
    root = _tree(tmp_path / "ml", {("fleurs", "lit"): {k: lines + lines[:1] for k in FILES}})
    with pytest.raises(
        DataError, match=r"transcript_1h_train.txt:3: duplicate utterance id 'fleurs_lit_000000' \(first at .*:1\)"
    ):
        prepare_mlsuperb(root, setup="1h", reserved_langs=[])
    with pytest.raises(DataError, match="unknown ML-SUPERB setup"):
        prepare_mlsuperb(root, setup="2h")
    with pytest.raises(DataError, match="no ML-SUPERB transcripts"):
        prepare_mlsuperb(tmp_path, setup="1h")
