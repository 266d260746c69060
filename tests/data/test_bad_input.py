"""Bad audio and bad transcripts met in data preparation: each named with its file (and line) and the fix.

The rows of docs/robustness.md that point here. Audio is checked by ``prepare_data measure``
(every file decoded once); transcripts by the ML-SUPERB/LibriSpeech parsers and DataDir.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from espnet2_ext.bin.prepare_data import main as prepare_data
from espnet2_ext.data import datadir
from espnet2_ext.data.datadir import DataDir, measure_audio, measure_path, measure_shard
from espnet2_ext.data.mlsuperb import prepare_mlsuperb
from espnet2_ext.utils.fileio import DataError

FS = 16000


def _tone(path: Path, seconds: float = 0.5, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.sin(np.arange(int(seconds * FS)) / 7.0), FS, subtype="PCM_16", format=fmt)
    return path


def _cut(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_truncated_audio_is_rejected_not_shortened(tmp_path: Path, suffix: str) -> None:
    # libsndfile reads a cut WAV as a shorter valid file; the declared data size gives it away
    n, problems = measure_audio(str(_cut(_tone(tmp_path / f"cut{suffix}"))), FS)
    assert problems and problems[0].startswith("truncated: header says 8000 samples" if suffix == ".wav" else "cannot decode")


def test_digital_silence_is_rejected_quiet_audio_is_not(tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(FS // 2), FS, subtype="PCM_16")
    assert measure_audio(str(silent), FS) == (FS // 2, ["silent (every sample is 0)"])
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.full(FS // 2, 1 / 32768), FS, subtype="PCM_16")  # one LSB: a real, quiet file
    assert measure_audio(str(quiet), FS) == (FS // 2, [])


def test_unreadable_audio_names_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # simulated: the tests run as root, who can read a chmod 000 file
    path = _tone(tmp_path / "locked.wav")

    def denied(*args: object, **kwargs: object) -> None:
        raise sf.LibsndfileError(0, prefix=f"Error opening {str(path)!r}: Permission denied ")

    monkeypatch.setattr(sf, "SoundFile", denied)
    n, problems = measure_audio(str(path), FS)
    assert n == 0 and problems[0].startswith("cannot decode (Error opening") and "Permission denied" in problems[0]


def test_measure_lists_every_bad_file_with_its_problem_and_the_fix(tmp_path: Path, caplog) -> None:
    audio = tmp_path / "audio"
    files = {
        "a_ok": _tone(audio / "a.wav"),
        "b_cut": _cut(_tone(audio / "b.wav")),
        "c_silent": audio / "c.wav",
        "d_8k": audio / "d.wav",
        "e_stereo": audio / "e.wav",
        "f_missing": audio / "f.wav",
        "g_empty": audio / "g.wav",
    }
    sf.write(files["c_silent"], np.zeros(800), FS, subtype="PCM_16")
    sf.write(files["d_8k"], 0.1 * np.ones(800), 8000, subtype="PCM_16")
    sf.write(files["e_stereo"], 0.1 * np.ones((800, 2)), FS, subtype="PCM_16")
    files["g_empty"].write_bytes(b"")
    ids = list(files)
    DataDir({"wav.scp": {u: str(p) for u, p in files.items()}, "text": dict.fromkeys(ids, "T"),
             "utt2spk": {u: u for u in ids}}).write(tmp_path / "dev")  # fmt: skip
    caplog.set_level(logging.ERROR)
    assert prepare_data(["measure", "--data_dir", str(tmp_path / "dev"), "--shard", "1", "--nshard", "1"]) == 1
    msg = next(r.getMessage() for r in caplog.records if r.name == "prepare_data")
    assert "6 of 7 audio files unusable" in msg
    for utt, problem in [("b_cut", "truncated"), ("c_silent", "silent"), ("d_8k", "sample rate 8000 Hz"),
                         ("e_stereo", "2 channels"), ("f_missing", "file not found"), ("g_empty", "empty file")]:  # fmt: skip
        assert f"{utt} ({files[utt]}): {problem}" in msg
    assert "sox IN -r 16000 -c 1 OUT.wav" in msg and "re-export or re-encode" in msg and "check the paths" in msg
    assert not measure_path(tmp_path / "dev", 1).exists()  # no lengths file: finalize cannot run on it


def _mlsuperb(root: Path, files: dict[str, str], iso3: str = "lit") -> Path:
    d = root / "fleurs" / iso3
    d.mkdir(parents=True)
    for k, split in enumerate(("1h_train", "10min_train", "10min_dev", "10min_test")):
        text = files.get(split, f"fleurs_{iso3}_{100 * k:06d} x some words\n")
        (d / f"transcript_{split}.txt").write_text(text, encoding="utf-8")
        for line in text.splitlines():
            if len(line.split()) >= 3:
                _tone(d / "wav" / f"{line.split()[0]}.wav", 0.1)
    return root


def test_non_utf8_transcript_names_the_line(tmp_path: Path) -> None:
    root = _mlsuperb(tmp_path, {"10min_dev": "fleurs_lit_000001 x labas\n"})
    path = root / "fleurs" / "lit" / "transcript_10min_dev.txt"
    path.write_bytes("fleurs_lit_000001 x labas\nfleurs_lit_000002 x a\u010di\u016b\n".encode("cp1257"))
    with pytest.raises(DataError, match=rf"{path}:2: not valid UTF-8 .*re-encode the file as UTF-8"):
        prepare_mlsuperb(root, reserved_langs=[])


def test_empty_test_set_is_an_error(tmp_path: Path) -> None:
    root = _mlsuperb(tmp_path, {"10min_test": ""})
    with pytest.raises(DataError, match="no test utterances found in any transcript_10min_test.txt"):
        prepare_mlsuperb(root, reserved_langs=[])
    with pytest.raises(DataError, match=r"wav.scp: no utterances"):
        DataDir({"wav.scp": {}, "text": {}, "utt2spk": {}}, name="data/test_1h").validate()


def test_empty_text_is_an_error(tmp_path: Path) -> None:
    dd = DataDir({"wav.scp": {"u1": str(_tone(tmp_path / "u1.wav"))}, "text": {"u1": "  "}, "utt2spk": {"u1": "u1"}},
                 name="data/dev")  # fmt: skip
    with pytest.raises(DataError, match=r"data/dev/text: empty value for u1"):
        dd.validate()


def test_id_only_in_one_file_names_the_file(tmp_path: Path) -> None:
    wav = str(_tone(tmp_path / "u1.wav"))
    dd = DataDir({"wav.scp": {"u1": wav}, "text": {"u1": "A", "u2": "B"}, "utt2spk": {"u1": "u1"}}, name="data/dev")
    with pytest.raises(DataError, match=r"data/dev/text: 1 id\(s\) not in wav.scp \(first: u2\)"):
        dd.validate()


@pytest.mark.parametrize(
    "folder, reserved, message",
    [
        ("english", [], r"not named by an ISO 639-3 code .*fleurs/english.*rename them"),
        ("lit", ["lit", "Lith"], r"'Lith' not ISO 639-3 code\(s\) .*fix --reserved_langs"),
    ],
)
def test_unknown_language_codes_are_rejected(tmp_path: Path, folder: str, reserved: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        prepare_mlsuperb(_mlsuperb(tmp_path, {}, iso3=folder), reserved_langs=reserved)


def test_reserved_language_without_data_is_logged(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    prepare_mlsuperb(_mlsuperb(tmp_path, {}), reserved_langs=["lit", "xho"])
    assert "reserved language(s) without training data: xho" in caplog.text


def test_measure_shard_error_is_one_line(tmp_path: Path) -> None:
    # each line of a multi-line message would be a separate, confusing log line of a job
    bad = tmp_path / "x.wav"
    sf.write(bad, np.zeros(10), FS, subtype="PCM_16")
    DataDir({"wav.scp": {"x": str(bad)}, "text": {"x": "T"}, "utt2spk": {"x": "x"}}).write(tmp_path / "d")
    with pytest.raises(DataError) as e:
        measure_shard(tmp_path / "d", 1, 1, fs=FS)
    assert "\n" not in str(e.value) and datadir.MEASURE_DIR not in str(e.value)
