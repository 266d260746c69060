"""Real SIGKILLs for the fault tests: start a command in its own session, wait for its first output, kill it all.

``run.sh`` starts each parallel job in a session of its own (the job runner's ``start_new_session``),
so killing ``run.sh``'s process group alone would leave its jobs running. :func:`kill_tree` does
what a crash or the OOM killer of a whole job does: it stops the group (no new children), then
sends SIGKILL to the process group of every descendant and to the group itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` (started with ``start_new_session=True``), its process group and every descendant's group."""
    os.killpg(proc.pid, signal.SIGSTOP)  # nothing in the group spawns another job from now on
    groups = {proc.pid}
    for pid in descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            groups.add(os.getpgid(pid))
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def start(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """``cmd`` in a new session, stdout and stderr to ``log``."""
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 600) -> None:
    """Poll ``ready()`` (the first output is there), then :func:`kill_tree`; fail if ``proc`` ended first."""
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    finished = proc.poll()
    if finished is None:
        kill_tree(proc)
    assert proc.wait(timeout=60) == -signal.SIGKILL, f"the command ended (exit {finished}) before it could be killed"
