"""Job runner with the Kaldi calling convention, behind a pluggable backend.

A recipe stage runs per-utterance work as an array of ``N`` jobs::

    ${cmd} [--num_threads T] [--mem M] [--gpu G] JOB=1:N logdir/name.JOB.log command args ... JOB ...

Every occurrence of the array variable (``JOB`` here, plain substring replacement as in
Kaldi's ``run.pl``) in the log path and the command is replaced by the job index. Each job
writes one log with a header (the command, start time) and a footer (exit code, duration);
the runner's exit status is non-zero when any job failed, and its message names every failed
job with its log.

A command given as ONE argument is run by ``bash -c`` (so a recipe may use pipes); a command
given as several arguments is executed directly as an argument vector, never through a
shell, so paths with spaces or shell characters are safe.

Backends implement :class:`Backend`; :class:`LocalBackend` runs jobs on this machine with a
parallelism limit. A cluster backend plugs in through :data:`BACKENDS`.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

logger = logging.getLogger(__name__)

_ARRAY_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+)(?::(\d+))?$")


class JobSpecError(ValueError):
    """The runner was called with a malformed job specification."""


@dataclass(frozen=True)
class Resources:
    """What each job of an array asks for. Backends map these to their own options."""

    num_threads: int = 1
    mem: str | None = None  # e.g. "4G"; informational for the local backend
    gpu: int = 0
    time: str | None = None  # wall-clock limit, e.g. "4:00:00"; used by cluster backends


@dataclass(frozen=True)
class Job:
    """One job of an array: its index, its log file and its command (JOB already substituted)."""

    index: int
    log: Path
    command: tuple[str, ...]

    def argv(self) -> list[str]:
        """The argument vector to execute: a one-string command goes through ``bash -c``."""
        if len(self.command) == 1:
            return ["bash", "-c", self.command[0]]
        return list(self.command)


@dataclass
class JobArray:
    """A parsed ``${cmd}`` invocation."""

    jobs: list[Job]
    resources: Resources = field(default_factory=Resources)
    variable: str | None = None

    @property
    def log_pattern(self) -> str:
        return str(self.jobs[0].log) if len(self.jobs) == 1 else f"{self.jobs[0].log.parent}/..."


def parse_invocation(
    array_spec: str | None, log: str, command: Sequence[str], resources: Resources | None = None
) -> JobArray:
    """Build a :class:`JobArray` from ``JOB=1:N``, a log path and a command.

    Args:
        array_spec: ``"JOB=1:4"``, ``"JOB=3"`` or ``None`` for a single job.
        log: log path, containing the variable name when ``array_spec`` is given.
        command: the command; the variable name is replaced in every argument.
        resources: per-job resources.

    Raises:
        JobSpecError: malformed spec, empty command, or a log path without the variable.
    """
    if not command:
        raise JobSpecError("no command given; usage: run_jobs [opts] [JOB=1:N] log command ...")
    resources = resources or Resources()
    if array_spec is None:
        return JobArray([Job(1, Path(log), tuple(command))], resources)
    m = _ARRAY_RE.match(array_spec)
    if not m:
        raise JobSpecError(f"bad job array {array_spec!r}; expected NAME=START:END, e.g. JOB=1:4")
    var, start = m.group(1), int(m.group(2))
    end = int(m.group(3)) if m.group(3) is not None else start
    if end < start:
        raise JobSpecError(f"bad job array {array_spec!r}: end {end} < start {start}")
    if var not in log:
        raise JobSpecError(f"log path {log!r} does not contain {var}; every job needs its own log")
    jobs = [
        Job(i, Path(log.replace(var, str(i))), tuple(arg.replace(var, str(i)) for arg in command))
        for i in range(start, end + 1)
    ]
    return JobArray(jobs, resources, var)


@dataclass(frozen=True)
class JobResult:
    index: int
    log: Path
    returncode: int
    seconds: float


class JobsFailed(RuntimeError):
    """Some jobs of an array failed; the message names each one with its log."""

    def __init__(self, failed: list[JobResult], total: int):
        self.failed = failed
        names = ", ".join(f"JOB={r.index} (exit {r.returncode}, log {r.log})" for r in failed)
        super().__init__(f"{len(failed)} of {total} jobs failed: {names}")


class Backend(abc.ABC):
    """Runs a :class:`JobArray` and reports each job's exit status."""

    name: str

    @abc.abstractmethod
    def run(self, array: JobArray) -> list[JobResult]:
        """Run every job; return one result per job, in index order."""


def _job_env(resources: Resources) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(max(1, resources.num_threads))
    # Each job gets exactly the threads it asked for, so N parallel jobs do not oversubscribe cores.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = threads
    return env


def _stamp() -> str:
    return datetime.now().strftime("%a %b %d %H:%M:%S %Z %Y").replace("  ", " ")


class LocalBackend(Backend):
    """Runs jobs as subprocesses on this machine, at most ``max_parallel`` at once.

    Interrupting the runner (SIGINT/SIGTERM) terminates every running job's process group.
    """

    name = "local"

    def __init__(self, max_parallel: int | None = None):
        self.max_parallel = max(1, max_parallel or os.cpu_count() or 1)
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stopping = False

    def _run_one(self, job: Job, env: dict[str, str], resources: Resources) -> JobResult:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with open(job.log, "w", encoding="utf-8") as log:
            log.write(f"# {' '.join(job.command)}\n# Started at {_stamp()}\n#\n")
            log.flush()
            if self._stopping:
                rc = 130
            else:
                try:
                    proc = subprocess.Popen(
                        job.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        env=env, start_new_session=True,
                    )
                except OSError as e:  # e.g. the program does not exist
                    log.write(f"run_jobs: cannot start {job.argv()[0]!r}: {e}\n")
                    rc = 127
                else:
                    with self._lock:
                        self._procs[job.index] = proc
                    rc = proc.wait()
                    with self._lock:
                        self._procs.pop(job.index, None)
            seconds = time.monotonic() - start
            log.write(f"# Accounting: time={seconds:.0f} threads={resources.num_threads}\n")
            log.write(f"# Ended (code {rc}) at {_stamp()}, elapsed time {seconds:.0f} seconds\n")
        return JobResult(job.index, job.log, rc, seconds)

    def terminate(self) -> None:
        """Stop all running jobs (their whole process groups)."""
        self._stopping = True
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)

    def run(self, array: JobArray) -> list[JobResult]:
        env = _job_env(array.resources)
        with ThreadPoolExecutor(max_workers=min(self.max_parallel, len(array.jobs))) as pool:
            futures = [pool.submit(self._run_one, job, env, array.resources) for job in array.jobs]
            return [f.result() for f in futures]


def _slurm_not_built(**_: object) -> Backend:
    raise JobSpecError("the slurm backend is not built yet (tracked in the cluster-execution issue); use --backend local")


BACKENDS = {"local": LocalBackend, "slurm": _slurm_not_built}


def run_array(array: JobArray, backend: Backend) -> list[JobResult]:
    """Run ``array`` on ``backend``; raise :class:`JobsFailed` naming every failed job."""
    n = len(array.jobs)
    logger.info("running %d job(s) on %s backend (max %s at once); logs: %s", n, backend.name,
                getattr(backend, "max_parallel", "?"), array.log_pattern)
    results = backend.run(array)
    failed = [r for r in results if r.returncode != 0]
    if failed:
        raise JobsFailed(failed, n)
    return results


def log_tail(path: Path, lines: int = 8) -> str:
    """The last ``lines`` lines of a job log before its footer, to show why a job failed."""
    try:
        content = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    body = [ln for ln in content if not ln.startswith("# ")]
    return "\n".join(body[-lines:])
