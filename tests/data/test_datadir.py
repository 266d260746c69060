"""DataDir: sorting, validation, combine/subset, write/load, measure and finalize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from espnet2_ext.data.datadir import (
    DataDir,
    finalize_datadir,
    is_complete,
    measure_audio,
    measure_path,
    measure_shard,
    shard_ids,
    sort_ids,
)
from espnet2_ext.utils.fileio import DataError, read_kaldi_text

FS = 1000  # a low rate keeps "long" test files tiny


def _wav(path: Path, seconds: float, fs: int = FS, channels: int = 1) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * fs))
    data = 0.1 * np.sin(np.arange(n) / 7.0)
    sf.write(path, np.stack([data] * channels, axis=1) if channels > 1 else data, fs, subtype="PCM_16")
    return str(path.resolve())


def _dd(ids: list[str], root: Path, spk=lambda u: u, seconds: float = 0.5) -> DataDir:
    return DataDir(
        {
            "wav.scp": {u: _wav(root / f"{u}.wav", seconds) for u in ids},
            "text": {u: f"TEXT OF {u}" for u in ids},
            "utt2spk": {u: spk(u) for u in ids},
            "utt2lang": dict.fromkeys(ids, "eng"),
        },
        name=str(root),
    )


def test_sort_ids_is_c_locale_byte_order():
    ids = ["b", "B", "a_1", "a-1", "ä", "a10", "a2", "Z"]
    assert sort_ids(ids) == sorted(ids, key=lambda s: s.encode("utf-8"))
    assert sort_ids(ids)[:2] == ["B", "Z"]  # upper case before lower case, as LC_ALL=C sort


def test_write_sorted_every_id_everywhere_and_roundtrip(tmp_path):
    dd = _dd(["s2-c-0002", "s1-c-0001", "s2-c-0001"], tmp_path / "audio", spk=lambda u: u.rsplit("-", 1)[0])
    out = tmp_path / "d"
    dd.write(out)
    for fname in ("wav.scp", "text", "utt2spk", "utt2lang"):
        keys = list(read_kaldi_text(out / fname))
        assert keys == ["s1-c-0001", "s2-c-0001", "s2-c-0002"], fname
    assert (out / "spk2utt").read_text() == "s1-c s1-c-0001\ns2-c s2-c-0001 s2-c-0002\n"
    back = DataDir.load(out)
    assert back.tables == dd.tables
    assert not is_complete(out)


def test_validate_names_file_and_first_missing_id(tmp_path):
    dd = _dd(["a", "b", "c"], tmp_path)
    del dd.tables["text"]["b"]
    with pytest.raises(DataError, match=r"text: 1 utterance\(s\) of wav.scp missing \(first: b\)"):
        dd.validate()


def test_validate_rejects_pipes_and_relative_paths(tmp_path):
    dd = _dd(["a"], tmp_path)
    dd.tables["wav.scp"]["a"] = "sox /x/a.wav -t wav - |"
    with pytest.raises(DataError, match="wav.scp.*absolute"):
        dd.validate()
    dd.tables["wav.scp"]["a"] = "rel/a.wav"
    with pytest.raises(DataError, match="first: a"):
        dd.validate()


def test_validate_rejects_bad_num_samples_and_kaldi_speaker_order(tmp_path):
    dd = _dd(["a", "b"], tmp_path)
    dd.tables["utt2num_samples"] = {"a": "10", "b": "0"}
    with pytest.raises(DataError, match=r"utt2num_samples.*b -> '0'"):
        dd.validate()
    dd = _dd(["a", "b"], tmp_path, spk=lambda u: {"a": "z", "b": "y"}[u])
    with pytest.raises(DataError, match="utt2spk: sorting by speaker"):
        dd.validate()


def test_load_rejects_inconsistent_spk2utt(tmp_path):
    _dd(["a", "b"], tmp_path / "audio").write(tmp_path / "d")
    (tmp_path / "d" / "spk2utt").write_text("a a\n")
    with pytest.raises(DataError, match="spk2utt: disagrees"):
        DataDir.load(tmp_path / "d")


def test_load_names_missing_required_file(tmp_path):
    _dd(["a"], tmp_path / "audio").write(tmp_path / "d")
    (tmp_path / "d" / "utt2spk").unlink()
    with pytest.raises(DataError, match="utt2spk: file not found"):
        DataDir.load(tmp_path / "d")


def test_combine_merges_and_duplicate_names_both_sources(tmp_path):
    a = _dd(["x1", "x2"], tmp_path / "A")
    b = _dd(["y1"], tmp_path / "B")
    del b.tables["utt2lang"]
    merged = DataDir.combine([a, b], name="out")
    assert merged.utt_ids == ["x1", "x2", "y1"]
    assert "utt2lang" not in merged.tables  # not in every source
    c = _dd(["x2", "z"], tmp_path / "C")
    with pytest.raises(DataError) as e:
        DataDir.combine([a, c], name="out")
    assert "'x2'" in str(e.value) and str(tmp_path / "A") in str(e.value) and str(tmp_path / "C") in str(e.value)


def test_subset_and_rewrite_clears_done_and_stale_files(tmp_path):
    dd = _dd(["a", "b", "c"], tmp_path / "audio")
    dd.tables["utt2num_samples"] = {"a": "5", "b": "6", "c": "7"}
    out = tmp_path / "d"
    dd.write(out)
    (out / ".done").write_text("")
    small = dd.subset(["a", "c"])
    del small.tables["utt2num_samples"]
    small.write(out)
    assert not is_complete(out)
    assert not (out / "utt2num_samples").exists()
    assert list(read_kaldi_text(out / "text")) == ["a", "c"]
    with pytest.raises(DataError, match="unknown id"):
        dd.subset(["nope"])


def test_shard_ids_partition_kaldi_style():
    ids = [f"u{i:02d}" for i in range(7)]
    shards = [shard_ids(ids, j, 3) for j in (1, 2, 3)]
    assert shards[0] == ["u00", "u03", "u06"]
    assert sorted(sum(shards, [])) == ids
    with pytest.raises(DataError):
        shard_ids(ids, 0, 3)
    with pytest.raises(DataError):
        shard_ids(ids, 4, 3)


def test_measure_audio_detects_each_problem(tmp_path):
    assert measure_audio(_wav(tmp_path / "ok.wav", 0.25), FS) == (250, [])
    assert "sample rate 2000 Hz, expected 1000 Hz" in measure_audio(_wav(tmp_path / "sr.wav", 0.25, fs=2000), FS)[1]
    assert "2 channels, expected mono" in measure_audio(_wav(tmp_path / "st.wav", 0.25, channels=2), FS)[1]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert measure_audio(str(corrupt), FS)[1][0].startswith("cannot decode")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert measure_audio(str(empty), FS)[1] == ["empty file (0 bytes)"]
    assert measure_audio(_wav(tmp_path / "zero.wav", 0.0), FS)[1] == ["no samples"]
    assert measure_audio(str(tmp_path / "missing.wav"), FS)[1] == ["file not found"]


def test_measure_shard_lists_all_bad_files_of_the_shard(tmp_path):
    dd = _dd(["a", "b", "c", "d"], tmp_path / "audio")
    dd.tables["wav.scp"]["a"] = _wav(tmp_path / "audio" / "a8k.wav", 0.2, fs=2000)
    bad = tmp_path / "audio" / "c.wav"
    bad.write_bytes(b"RIFF" + bytes(range(200)))
    data = tmp_path / "d"
    dd.write(data)
    with pytest.raises(DataError) as e:  # shard 1 of 2 = a, c: both bad, both reported
        measure_shard(data, 1, 2, fs=FS)
    msg = str(e.value)
    assert "2 of 2 audio files unusable" in msg and "a (" in msg and "c (" in msg
    assert "sox" in msg and "\n" not in msg
    assert not measure_path(data, 1).exists()
    assert measure_shard(data, 2, 2, fs=FS) == {"b": 500, "d": 500}
    assert read_kaldi_text(measure_path(data, 2)) == {"b": "500", "d": "500"}


def _measured(tmp_path: Path, name: str, lengths: dict[str, float], nshard: int = 2) -> Path:
    dd = DataDir(
        {
            "wav.scp": {u: _wav(tmp_path / "audio" / f"{u}.wav", s) for u, s in lengths.items()},
            "text": {u: "HI" for u in lengths},
            "utt2spk": {u: u for u in lengths},
        }
    )
    data = tmp_path / name
    dd.write(data)
    for j in range(1, nshard + 1):
        measure_shard(data, j, nshard, fs=FS)
    return data


def test_finalize_drops_long_only_when_asked(tmp_path):
    lengths = {"short": 1.0, "edge": 20.0, "long": 20.5}
    kept = finalize_datadir(_measured(tmp_path, "keep", lengths), 2, fs=FS)
    assert kept.utt_ids == ["edge", "long", "short"]
    data = _measured(tmp_path, "train", lengths)
    dd = finalize_datadir(data, 2, fs=FS, max_seconds=20)
    assert dd.utt_ids == ["edge", "short"]
    assert is_complete(data)
    for fname in ("wav.scp", "text", "utt2spk", "utt2num_samples"):
        assert list(read_kaldi_text(data / fname)) == ["edge", "short"], fname
    assert read_kaldi_text(data / "utt2num_samples") == {"edge": "20000", "short": "1000"}
    assert (data / "spk2utt").read_text() == "edge edge\nshort short\n"
    # re-running is safe: shards are merged already, the existing utt2num_samples is reused
    assert finalize_datadir(data, 2, fs=FS, max_seconds=20).utt_ids == ["edge", "short"]
    assert is_complete(data)


@pytest.mark.parametrize("name", ["test_1h", "test_clean", "dev_other", "test"])
def test_finalize_never_filters_evaluation_sets(tmp_path, name):
    data = _measured(tmp_path, name, {"long": 21.0, "short": 1.0})
    with pytest.raises(DataError, match="never filtered"):
        finalize_datadir(data, 2, fs=FS, max_seconds=20)
    assert finalize_datadir(data, 2, fs=FS).utt_ids == ["long", "short"]


def test_finalize_missing_or_mismatched_shard(tmp_path):
    data = _measured(tmp_path, "train", {"a": 1.0, "b": 1.0, "c": 1.0}, nshard=3)
    measure_path(data, 2).unlink()
    with pytest.raises(DataError, match=r"utt2num_samples.2: not found.*measure --data_dir .* --nshard 3"):
        finalize_datadir(data, 3, fs=FS)
    assert not is_complete(data)
    measure_shard(data, 2, 3, fs=FS)
    with pytest.raises(DataError, match="does not match shard 1/2"):
        finalize_datadir(data, 2, fs=FS)  # measured with 3 shards, finalized with 2
    assert finalize_datadir(data, 3, fs=FS).utt_ids == ["a", "b", "c"]
