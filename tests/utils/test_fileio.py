"""Atomic writes (errors and a full disk leave nothing half-written) and Kaldi text readers that name file:line."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from espnet2_ext.utils import fileio
from espnet2_ext.utils.fileio import (
    DataError,
    atomic_open,
    atomic_write_text,
    read_kaldi_text,
    stale_temp_files,
    write_kaldi_text,
)


def _only(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_an_error_while_writing_keeps_the_previous_file(tmp_path: Path) -> None:
    out = tmp_path / "text"
    atomic_write_text(out, "utt1 OLD\n")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(out) as f:
        f.write("utt1 NEW\n")
        raise RuntimeError("boom")
    assert out.read_text() == "utt1 OLD\n"
    assert _only(tmp_path) == ["text"]  # no temporary file left


@pytest.mark.parametrize("call", ["fsync", "replace"])
def test_a_full_disk_names_the_file_and_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    out = tmp_path / "dump" / "units"
    write_kaldi_text(out, [("utt1", "1 2 3")])

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, call, full)
    with pytest.raises(OSError) as e:
        write_kaldi_text(out, [(f"utt{i}", "4 5 6") for i in range(1000)])
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC
    assert str(out) in str(e.value) and "Free space" in str(e.value) and "nothing was written" in str(e.value)
    assert out.read_text() == "utt1 1 2 3\n"
    assert _only(out.parent) == ["units"]


def test_other_os_errors_pass_through_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: object) -> None:
        raise PermissionError(errno.EACCES, "denied")

    monkeypatch.setattr(fileio.os, "replace", denied)
    with pytest.raises(PermissionError, match="denied"):
        atomic_write_text(tmp_path / "x", "y")
    monkeypatch.undo()
    assert _only(tmp_path) == []


def test_stale_temp_files_finds_only_atomic_open_leftovers(tmp_path: Path) -> None:
    (tmp_path / "a" / "wav").mkdir(parents=True)
    left = tmp_path / "a" / "wav" / ".u1.wav.k3_9zq0a.tmp"
    left.write_bytes(b"half")
    for keep in (".done", "notes.tmp", ".hidden.tmp", "u1.wav"):
        (tmp_path / "a" / keep).write_text("x")
    assert stale_temp_files(tmp_path) == [left]


def test_reader_names_file_and_line_of_each_malformed_input(tmp_path: Path) -> None:
    f = tmp_path / "text"
    cases = {
        "a X\na Y\n": r"text:2: duplicate id 'a' \(first on line 1\)",
        "a X\nb\n": r"text:2: 'b' has no value",
        "a X\n\nb Y\n": r"text:2: empty line",
    }
    for content, message in cases.items():
        f.write_text(content)
        with pytest.raises(DataError, match=message):
            read_kaldi_text(f)
    f.write_bytes("a GUT\nb GR\u00dcN\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"text:2: not valid UTF-8 .*re-encode the file as UTF-8"):
        read_kaldi_text(f)
    with pytest.raises(DataError, match=r"nope: file not found; run the stage that writes it first"):
        read_kaldi_text(tmp_path / "nope")


def test_writer_refuses_keys_with_whitespace(tmp_path: Path) -> None:
    for key in ("utt 1", "utt\t1", ""):
        with pytest.raises(DataError, match="keys must be non-empty without whitespace"):
            write_kaldi_text(tmp_path / "text", [("ok", "A"), (key, "B")])
        assert not (tmp_path / "text").exists()
