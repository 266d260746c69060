"""The prepare_data CLI end to end on a tiny ML-SUPERB + LibriSpeech tree."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from espnet2_ext.bin.prepare_data import get_parser, main
from espnet2_ext.data.datadir import DataDir, is_complete
from espnet2_ext.utils.fileio import read_kaldi_text

FS = 16000
REPO = Path(__file__).resolve().parents[2]


def _audio(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    sf.write(path, 0.1 * rng.standard_normal(int(seconds * FS)), FS, subtype="PCM_16")


def _corpora(tmp: Path) -> tuple[Path, Path]:
    ml = tmp / "mlsuperb"
    for dataset, iso3 in (("fleurs", "lit"), ("mls", "deu")):
        d = ml / dataset / iso3
        d.mkdir(parents=True)
        ids = {k: [f"{dataset}_{iso3}_{off + i:06d}" for i in range(3)] for off, k in
               ((0, "1h_train"), (0, "10min_train"), (100, "10min_dev"), (200, "10min_test"))}  # fmt: skip
        for key, utts in ids.items():
            (d / f"transcript_{key}.txt").write_text("".join(f"{u} - text {u}\n" for u in utts))
            for u in utts:
                long = u in ("mls_deu_000001", "fleurs_lit_000201")  # one long train and one long test utterance
                _audio(d / "wav" / f"{u}.wav", 21.0 if long else 0.3)
    ls = tmp / "LibriSpeech"
    for set_name, spk in (("train-clean-100", "19"), ("dev-clean", "84"), ("test-clean", "61")):
        d = ls / set_name / spk / "70968"
        utts = [f"{spk}-70968-{i:04d}" for i in range(2)]
        d.mkdir(parents=True)
        (d / f"{spk}-70968.trans.txt").write_text("".join(f"{u} SOME WORDS\n" for u in utts))
        for u in utts:
            _audio(d / f"{u}.flac", 0.2)
    return ml, ls


def _files(d: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(d.iterdir()) if p.is_file()}


def _run(*argv: str) -> int:
    return main([str(a) for a in argv])


def test_end_to_end(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    ml, ls = _corpora(tmp_path)
    local, data = tmp_path / "data" / "local", tmp_path / "data"
    assert (
        _run(
            "mlsuperb", "--root", ml, "--setup", "1h", "--out_dir", local / "mlsuperb", "--lid", "--reserved_langs", ""
        )
        == 0
    )
    first = _files(local / "mlsuperb" / "train")
    assert (
        _run(
            "mlsuperb", "--root", ml, "--setup", "1h", "--out_dir", local / "mlsuperb", "--lid", "--reserved_langs", ""
        )
        == 0
    )
    assert _files(local / "mlsuperb" / "train") == first  # idempotent
    assert (
        _run(
            "librispeech",
            "--root",
            ls,
            "--out_dir",
            local / "librispeech",
            "--sets",
            "train-clean-100,dev-clean,test-clean",
        )
        == 0
    )
    assert sorted(p.name for p in (local / "librispeech").iterdir()) == ["dev_clean", "test_clean", "train_clean_100"]
    assert read_kaldi_text(local / "librispeech" / "dev_clean" / "text")["84-70968-0000"] == "SOME WORDS"

    assert (
        _run(
            "combine",
            "--out_dir",
            data / "train",
            local / "mlsuperb" / "train",
            local / "librispeech" / "train_clean_100",
        )
        == 0
    )
    assert _run("combine", "--out_dir", data / "test_1h", local / "mlsuperb" / "test") == 0
    assert not is_complete(data / "train")
    for name in ("train", "test_1h"):
        for j in (1, 2):
            assert _run("measure", "--data_dir", data / name, "--shard", j, "--nshard", 2) == 0
    assert _run("finalize", "--data_dir", data / "train", "--nshard", 2, "--max_seconds", 20) == 0
    assert _run("finalize", "--data_dir", data / "test_1h", "--nshard", 2) == 0

    train = DataDir.load(data / "train")  # validates: every id in every file, spk2utt consistent
    assert is_complete(data / "train")
    assert len(train) == 6 - 1 + 2 and "mls_deu_000001" not in train.utt_ids
    assert "mls_deu_000001" in caplog.text  # the dropped id is logged
    assert train.text["fleurs_lit_000000"] == "[lit] text fleurs_lit_000000"
    assert train.tables["utt2lang"]["19-70968-0001"] == "eng"
    assert train.num_samples()["19-70968-0001"] == int(0.2 * FS)
    for fname in ("wav.scp", "text", "utt2spk", "utt2lang", "utt2num_samples"):
        keys = list(read_kaldi_text(data / "train" / fname))
        assert keys == sorted(keys, key=str.encode) == train.utt_ids, fname
    test = DataDir.load(data / "test_1h")
    assert len(test) == 6 and test.num_samples()["fleurs_lit_000201"] == 21 * FS  # test is never filtered

    caplog.clear()
    assert _run("finalize", "--data_dir", data / "test_1h", "--nshard", 2, "--max_seconds", 20) == 1
    assert "never filtered" in caplog.text
    assert len(DataDir.load(data / "test_1h")) == 6

    caplog.clear()
    assert _run("combine", "--out_dir", data / "dup", local / "mlsuperb" / "train", data / "train") == 1
    assert "fleurs_lit_000000" in caplog.text and str(data / "train") in caplog.text


def test_measure_reports_bad_files_by_utt_id(tmp_path, caplog):
    ml, _ = _corpora(tmp_path)
    out = tmp_path / "local"
    assert _run("mlsuperb", "--root", ml, "--setup", "10min", "--out_dir", out, "--reserved_langs", "") == 0
    (ml / "mls" / "deu" / "wav" / "mls_deu_000102.wav").write_bytes(np.random.default_rng(1).bytes(3000))
    sf.write(ml / "fleurs" / "lit" / "wav" / "fleurs_lit_000100.wav", np.zeros((800, 2)), 8000)
    caplog.set_level(logging.INFO)
    assert _run("measure", "--data_dir", out / "dev", "--shard", 1, "--nshard", 1) == 1
    assert "mls_deu_000102" in caplog.text and "cannot decode" in caplog.text
    assert "fleurs_lit_000100" in caplog.text and "8000 Hz" in caplog.text and "2 channels" in caplog.text
    assert _run("finalize", "--data_dir", out / "dev", "--nshard", 1) == 1
    assert "utt2num_samples.1: not found" in caplog.text


def test_subset_keeps_evenly_spread_lines_and_names_a_bad_line(tmp_path, caplog):
    table = tmp_path / "text"
    rows = {f"{lang}_{i:03d}": f"words of {lang} {i}" for lang in ("deu", "eng", "rus") for i in range(6)}
    table.write_text("".join(f"{u} {t}\n" for u, t in reversed(rows.items())))  # unsorted on disk
    assert _run("subset", "--table", table, "--max_utts", 6, "--out", tmp_path / "sub") == 0
    sub = read_kaldi_text(tmp_path / "sub")
    # spread over the sorted ids (every language), written in the table's order (ESPnet reads it forward)
    assert list(sub.items()) == [(u, rows[u]) for u in ("rus_003", "rus_000", "eng_003", "eng_000", "deu_003", "deu_000")]
    assert _run("subset", "--table", table, "--max_utts", 0, "--out", tmp_path / "all") == 0
    assert list(read_kaldi_text(tmp_path / "all").items()) == list(reversed(rows.items()))
    table.write_text("deu_000 a\ndeu_000 b\n")
    assert _run("subset", "--table", table, "--max_utts", 1, "--out", tmp_path / "bad") == 1
    assert f"{table}:2: duplicate id" in caplog.text and not (tmp_path / "bad").exists()


def test_cli_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "espnet2_ext.bin.prepare_data", "mlsuperb", "--root", str(tmp_path / "nope"),
         "--setup", "1h", "--out_dir", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "ML-SUPERB root not found" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["mlsuperb", "librispeech", "combine", "measure", "finalize", "subset"])
def test_help_documents_every_option(command, capsys):
    with pytest.raises(SystemExit) as e:
        get_parser().parse_args([command, "--help"])
    assert e.value.code == 0
    sub = next(a for a in get_parser()._subparsers._group_actions[0].choices.items() if a[0] == command)[1]
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"
