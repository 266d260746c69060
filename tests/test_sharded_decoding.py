"""Decoding jobs over several sets and one shard each (espnet2_ext.bin.sharded_decoding), and their merge."""

from __future__ import annotations

from pathlib import Path

import pytest

from espnet2_ext.bin import sharded_decoding
from espnet2_ext.utils.fileio import read_kaldi_text, write_kaldi_text


def options(tmp_path: Path, **kw) -> dict:
    """The parsed options of an ESPnet decoding CLI, as far as decode_sets reads them."""
    return {"config": "decode.yaml", "log_level": "INFO", "key_file": None, "beam_size": 1,
            "data_path_and_name_and_type": [(str(tmp_path / "data/{set}/wav.scp"), "speech", "sound")],
            "output_dir": str(tmp_path / "dec/{set}/output.1"), "sets": None, "shard": None, "nshard": None, **kw}


def write_sets(tmp_path: Path, sizes: dict[str, int]) -> None:
    for name, n in sizes.items():
        write_kaldi_text(tmp_path / "data" / name / "wav.scp", [(f"{name}_u{i}", f"/w/{i}.wav") for i in range(n)])


def test_one_job_decodes_its_shard_of_every_set_and_the_shards_cover_each_set(tmp_path: Path) -> None:
    write_sets(tmp_path, {"a": 5, "b": 1})
    calls: dict[str, dict] = {}
    for shard in (1, 2, 3):
        kw = options(tmp_path, sets=["a", "b"], shard=shard, nshard=3,
                     output_dir=str(tmp_path / f"dec/{{set}}/output.{shard}"))
        sharded_decoding.decode_sets(kw, lambda **job: calls.__setitem__(job["output_dir"], job))
    # b has one utterance: shards 2 and 3 of it are empty and not decoded at all
    assert sorted(calls) == sorted([str(tmp_path / f"dec/a/output.{j}") for j in (1, 2, 3)]
                                   + [str(tmp_path / "dec/b/output.1")])
    for out, job in calls.items():
        set_name = Path(out).parent.name
        assert job["data_path_and_name_and_type"] == [(str(tmp_path / f"data/{set_name}/wav.scp"), "speech", "sound")]
        assert job["key_file"] == str(Path(out) / "keys.scp") and job["beam_size"] == 1
        assert not {"config", "sets", "shard", "nshard"} & set(job), "ESPnet's inference() must not see them"
    keys = [list(read_kaldi_text(tmp_path / f"dec/a/output.{j}/keys.scp")) for j in (1, 2, 3)]
    assert sorted(sum(keys, [])) == [f"a_u{i}" for i in range(5)] and all(keys)
    assert read_kaldi_text(tmp_path / "dec/a/output.1/keys.scp")["a_u0"] == "/w/0.wav"  # ESPnet's key-file lines


def test_without_sets_or_shards_the_options_go_to_espnet_unchanged(tmp_path: Path) -> None:
    calls = []
    kw = options(tmp_path, data_path_and_name_and_type=[("x/wav.scp", "speech", "sound")], output_dir="out")
    sharded_decoding.decode_sets(kw, lambda **job: calls.append(job))
    assert calls == [{k: v for k, v in kw.items() if k not in ("config", "sets", "shard", "nshard")}]


@pytest.mark.parametrize("shard, nshard", [(1, None), (None, 2), (0, 2), (3, 2)])
def test_a_wrong_shard_option_is_an_error(tmp_path: Path, shard: int | None, nshard: int | None) -> None:
    with pytest.raises(SystemExit, match="shard"):
        sharded_decoding.decode_sets(options(tmp_path, shard=shard, nshard=nshard), lambda **job: None)


def test_merge_names_the_utterances_without_a_hypothesis(tmp_path: Path) -> None:
    write_kaldi_text(tmp_path / "dec/test/output.1/1best_recog/text", [("u1", "a b")])
    write_kaldi_text(tmp_path / "src/test/text", [("u1", "x"), ("u2", "y")])
    args = ["merge", "--decode_dir", str(tmp_path / "dec"), "--sets", "test", "--src_pattern"]
    assert sharded_decoding.main([*args, str(tmp_path / "src/{set}/text")]) == 2
    assert not (tmp_path / "dec/test/text").exists()
    write_kaldi_text(tmp_path / "dec/test/output.2/1best_recog/text", [("u2", "")])
    assert sharded_decoding.main([*args, str(tmp_path / "src/{set}/text")]) == 0
    assert (tmp_path / "dec/test/text").read_text() == "u1 a b\nu2\n"
    write_kaldi_text(tmp_path / "dec/test/output.3/1best_recog/text", [("u2", "again")])
    assert sharded_decoding.main([*args, str(tmp_path / "src/{set}/text")]) == 2  # decoded by two shards
