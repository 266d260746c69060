"""System report (EN micro-average, ML CER, pooled bitrate) and the scoring CLI end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from espnet2_ext.bin.score import main
from espnet2_ext.scoring.bitrate import TokenStream
from espnet2_ext.scoring.cer import ErrorCounts, SetScore
from espnet2_ext.scoring.report import build_report, to_dict, to_json, to_markdown
from espnet2_ext.utils.fileio import DataError

REPO = Path(__file__).resolve().parents[2]


def _set(name: str, errors: int, ref_len: int, lang: str = "unk") -> SetScore:
    c = ErrorCounts(sub=errors, dele=0, ins=0, ref_len=ref_len, n_utts=1)
    return SetScore(name, c, {lang: c})


LS = [_set("dev_clean", 1, 100), _set("dev_other", 4, 50), _set("test_clean", 0, 40), _set("test_other", 5, 10)]


def test_en_is_micro_average_not_mean_of_rates() -> None:
    r = build_report(LS)
    # 10 errors / 200 chars = 5 %; the mean of the four rates would be (1 + 8 + 0 + 50) / 4 = 14.75 %.
    assert r.librispeech_micro == ErrorCounts(sub=10, dele=0, ins=0, ref_len=200, n_utts=4)
    assert r.librispeech_micro.cer == pytest.approx(0.05)
    assert r.librispeech_complete
    md = to_markdown(r)
    assert "**5.00 %**" in md and "14.75" not in md


def test_incomplete_librispeech_is_recorded_and_flagged() -> None:
    r = build_report([LS[0], LS[2], _set("test_1h", 3, 12, "eng")])
    assert r.librispeech_sets == ("dev_clean", "test_clean")
    assert not r.librispeech_complete
    assert r.librispeech_micro.cer == pytest.approx(1 / 140)
    assert r.mlsuperb.cer == pytest.approx(0.25)
    d = to_dict(r)
    assert d["summary"]["librispeech_micro"]["complete"] is False
    assert d["summary"]["librispeech_micro"]["sets"] == ["dev_clean", "test_clean"]
    assert d["summary"]["mlsuperb"]["errors"] == 3 and d["summary"]["mlsuperb"]["ref_chars"] == 12
    assert "not the official figure" in to_markdown(r)


def test_no_librispeech_no_test_1h_no_streams() -> None:
    r = build_report([_set("dev_1h", 1, 10)])
    assert r.librispeech_micro is None and r.mlsuperb is None and r.bitrate is None
    assert to_dict(r)["summary"] == {"librispeech_micro": None, "mlsuperb": None, "bitrate": None}


def test_bitrate_pooled_over_sets_with_colliding_ids() -> None:
    # Both sets use the id "u1": they must stay two utterances (30 + 20 tokens over 3 + 7 s).
    scores = [_set("test_1h", 0, 5), _set("dev_clean", 0, 5)]
    streams = {
        "test_1h": [TokenStream({"u1": 30}, 1024, "units")],
        "dev_clean": [TokenStream({"u1": 20}, 1024, "units")],
    }
    seconds = {"test_1h": {"u1": 3.0}, "dev_clean": {"u1": 7.0}}
    b = build_report(scores, streams, seconds).bitrate
    assert b.pooled == pytest.approx(50.0)
    assert b.utterance_mean == pytest.approx((100.0 + 200.0 / 7) / 2)
    assert (b.n_utts, b.total_seconds, b.streams[0].n_tokens) == (2, 10.0, 50)


def test_bitrate_streams_must_agree_across_sets() -> None:
    scores = [_set("a", 0, 5), _set("b", 0, 5)]
    streams = {"a": [TokenStream({"u": 1}, 1024, "units")], "b": [TokenStream({"u": 1}, 512, "units")]}
    with pytest.raises(DataError, match="same streams"):
        build_report(scores, streams, {"a": {"u": 1.0}, "b": {"u": 1.0}})


def test_json_keeps_raw_counts_in_stable_order() -> None:
    d = json.loads(to_json(build_report(LS)))
    assert list(d) == ["system", "sets", "summary"]
    assert list(d["sets"]) == ["dev_clean", "dev_other", "test_clean", "test_other"]
    dev_other = d["sets"]["dev_other"]
    assert list(dev_other["languages"]) == ["unk"]
    del dev_other["languages"]
    assert dev_other == {
        "n_utts": 1, "ref_chars": 50, "sub": 4, "del": 0, "ins": 0, "errors": 4, "cer_percent": 8.0, "n_missing_hyps": 0,
    }  # fmt: skip


# ---------------------------------------------------------------- CLI end to end


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    """A tiny data/, decode/ and units/ tree: test_1h (eng, fra) and dev_clean."""
    _write(tmp_path / "data/test_1h/text", "fleurs_eng_0001 [eng] Hello world\nfleurs_fra_0002 [fra] Bonjour!\n")
    _write(tmp_path / "data/test_1h/utt2num_samples", "fleurs_eng_0001 32000\nfleurs_fra_0002 48000\n")
    _write(tmp_path / "data/dev_clean/text", "1272-1-0001 HELLO\n")
    _write(tmp_path / "data/dev_clean/utt2lang", "1272-1-0001 eng\n")
    _write(tmp_path / "data/dev_clean/utt2num_samples", "1272-1-0001 80000\n")
    # "HELLO WORD" drops one L; the French hypothesis is empty (a bare id line).
    _write(tmp_path / "decode/test_1h/text", "fleurs_eng_0001 [eng] hello word\nfleurs_fra_0002\n")
    _write(tmp_path / "decode/dev_clean/text", "1272-1-0001 hello\n")
    _write(
        tmp_path / "units/test_1h/units.bpe", "fleurs_eng_0001 " + "a " * 10 + "\nfleurs_fra_0002 " + "b " * 20 + "\n"
    )
    _write(tmp_path / "units/dev_clean/units.bpe", "1272-1-0001 " + "c " * 20 + "\n")
    return tmp_path


def _argv(root: Path, *extra: str) -> list[str]:
    return [
        "--data_dir", str(root / "data"), "--hyp_dir", str(root / "decode"),
        "--sets", "test_1h", "dev_clean", "--out_dir", str(root / "score"), *extra,
    ]  # fmt: skip


def test_cli_writes_json_and_markdown(recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stream = f"units:1024:{recipe}/units/{{set}}/units.bpe"
    assert main(_argv(recipe, "--stream", stream)) == 0
    d = json.loads((recipe / "score/scores.json").read_text(encoding="utf-8"))
    t = d["sets"]["test_1h"]
    assert (t["ref_chars"], t["del"], t["sub"], t["ins"], t["n_utts"]) == (18, 8, 0, 0, 2)
    assert t["languages"]["eng"]["del"] == 1 and t["languages"]["fra"]["del"] == 7
    assert d["sets"]["dev_clean"]["languages"] == {
        "eng": {"n_utts": 1, "ref_chars": 5, "sub": 0, "del": 0, "ins": 0, "errors": 0, "cer_percent": 0.0}
    }
    assert d["summary"]["mlsuperb"]["cer_percent"] == pytest.approx(800 / 18)
    assert d["summary"]["librispeech_micro"]["complete"] is False
    # 50 tokens over 2 + 3 + 5 s at 10 bits; per utterance 50, 66.67 and 40 bit/s.
    assert d["summary"]["bitrate"]["pooled_bps"] == pytest.approx(50.0)
    assert d["summary"]["bitrate"]["utterance_mean_bps"] == pytest.approx((50 + 200 / 3 + 40) / 3)
    md = (recipe / "score/scores.md").read_text(encoding="utf-8")
    assert "| test_1h | 2 | 18 | 44.44 | 0.00 | 44.44 | 0.00 |" in md
    assert "| eng | 9.09 | 0.00 |" in md and "| fra | 100.00 | - |" in md
    assert "**50.00 bit/s**" in md
    assert capsys.readouterr().out == md


def test_cli_missing_hypothesis_exits_1_naming_the_file(recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(recipe / "decode/test_1h/text", "fleurs_eng_0001 hello world\n")
    assert main(_argv(recipe)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "fleurs_fra_0002" in err and str(recipe / "decode/test_1h/text") in err and "decode stage" in err
    assert not (recipe / "score/scores.json").exists()


def test_cli_allow_missing_scores_as_empty(recipe: Path) -> None:
    _write(recipe / "decode/test_1h/text", "fleurs_eng_0001 hello world\n")
    assert main(_argv(recipe, "--allow_missing")) == 0
    d = json.loads((recipe / "score/scores.json").read_text(encoding="utf-8"))
    assert d["sets"]["test_1h"]["n_missing_hyps"] == 1 and d["sets"]["test_1h"]["del"] == 7


def test_cli_as_module_missing_hyp_file_no_traceback(recipe: Path) -> None:
    (recipe / "decode/dev_clean/text").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "espnet2_ext.bin.score", *_argv(recipe)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert str(recipe / "decode/dev_clean/text") in proc.stderr and "file not found" in proc.stderr
