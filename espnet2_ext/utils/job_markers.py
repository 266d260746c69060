"""Per-job done markers: what lets a rerun of a failed array run only the jobs that failed.

A job's status file (``<log>.status``, written when it ends) becomes its done marker when the
array it belongs to fails: the runner adds the job's command and a *fingerprint* of every file
and directory its command line names. The next invocation skips the job only if

* the marker says exit 0,
* the command is exactly the same (same JOB index, same options, same paths), and
* every path the command named is still there with the same content: a file by size and
  SHA-256 (size and mtime above 16 MiB), a directory by the names, sizes and hashes of its direct
  entries (entry count and mtime above 256 entries; subdirectories by name only).

So a stage that rewrites its inputs differently, or removes a job's output directory, before
calling the runner again gets every job rerun, while a stage that only redoes cheap, identical
preparation (an unchanged ``wav.scp`` rewritten) gets the failed jobs only. The check is
hand-written: it is a make-style freshness test over argv paths, which no library offers for
Kaldi-style commands.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
from pathlib import Path

from espnet2_ext.utils.fileio import atomic_write_text
from espnet2_ext.utils.jobs import Job, status_path

_HASH_MAX_BYTES = 16 << 20  # hash files up to this size; larger ones by size + mtime
_DIR_MAX_ENTRIES = 256  # look inside directories up to this many entries; larger ones by count + mtime


def _file_signature(path: Path, st: os.stat_result) -> list:
    if st.st_size > _HASH_MAX_BYTES:
        return ["f", st.st_size, st.st_mtime_ns]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return ["f", st.st_size, h.hexdigest()]


def path_signature(path: Path) -> list | None:
    """What a path's content looks like, for comparison; ``None`` when it does not exist.

    Args:
        path: a file or a directory.

    Returns:
        ``["f", size, sha256]`` for a file, ``["d", [[name, signature], ...]]`` for a directory
        (direct entries; a subdirectory is ``["d"]``), or the size/mtime forms for large ones.
    """
    try:
        st = path.stat()
        if not path.is_dir():
            return _file_signature(path, st)
        entries = sorted(os.scandir(path), key=lambda e: e.name)
        if len(entries) > _DIR_MAX_ENTRIES:
            return ["d", len(entries), st.st_mtime_ns]
        return ["d", [[e.name, ["d"] if e.is_dir() else _file_signature(Path(e.path), e.stat())] for e in entries]]
    except OSError:  # vanished or unreadable: never equal to a recorded signature
        return None


def command_paths(command: tuple[str, ...]) -> list[str]:
    """The arguments of a command that name existing paths (``--opt=PATH`` included).

    A one-string command (run by ``bash -c``) is split like a shell would split it.
    """
    args = list(command)
    if len(args) == 1:
        with contextlib.suppress(ValueError):
            args = shlex.split(args[0])
    found: list[str] = []
    for arg in args:
        for candidate in (arg, arg.partition("=")[2] if arg.startswith("-") else ""):
            if candidate and candidate not in found and os.path.lexists(candidate):
                found.append(candidate)
    return found


def fingerprint(command: tuple[str, ...]) -> dict[str, list | None]:
    """``{path: signature}`` for every path the command names (relative to the current directory)."""
    return {p: path_signature(Path(p)) for p in command_paths(command)}


def mark_done(job: Job) -> None:
    """Turn a succeeded job's status file into a done marker (command + fingerprint, now)."""
    marker = {"returncode": 0, "command": list(job.command), "cwd": os.getcwd(), "fingerprint": fingerprint(job.command)}
    atomic_write_text(status_path(job.log), json.dumps(marker) + "\n")


def is_done(job: Job) -> bool:
    """Whether the job's marker says the same command succeeded and its files are unchanged."""
    try:
        marker = json.loads(status_path(job.log).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("returncode") != 0 or "fingerprint" not in marker:
        return False
    if marker.get("command") != list(job.command) or marker.get("cwd") != os.getcwd():
        return False
    recorded = marker["fingerprint"]
    now = fingerprint(job.command)
    # a path that appeared since (an output the stage expects anew) also means: run again
    return set(recorded) == set(now) and all(now[p] is not None and now[p] == recorded[p] for p in recorded)


def clear(job: Job) -> None:
    """Remove the job's status file / marker (before it runs, and once its array has succeeded)."""
    with contextlib.suppress(FileNotFoundError):
        status_path(job.log).unlink()
