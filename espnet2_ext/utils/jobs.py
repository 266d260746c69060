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
parallelism limit, :class:`espnet2_ext.utils.slurm.SlurmBackend` submits them as a SLURM array
(:func:`make_backend` picks one by name).

Every job leaves its exit status in ``<log>.status`` next to its log. When an array fails, the
jobs that succeeded keep that file as a done marker (with their command and a fingerprint of the
files it names, :mod:`espnet2_ext.utils.job_markers`), so running the same invocation again runs
only the failed jobs; once every job has succeeded the markers are removed and the stage's own
``.done`` takes over.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
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
    partition: str | None = None  # cluster partition/queue; used by cluster backends


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
    log_template: str | None = None  # the log path as given, with the variable unsubstituted

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
        return JobArray([Job(1, Path(log), tuple(command))], resources, log_template=log)
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
    return JobArray(jobs, resources, var, log)


@dataclass(frozen=True)
class JobResult:
    index: int
    log: Path
    returncode: int
    seconds: float
    note: str = ""  # why there is no real exit code, e.g. the cluster killed the job

    def describe(self) -> str:
        """``JOB=3 (exit 1, log log/x.3.log)`` for failure messages."""
        status = self.note or f"exit {self.returncode}"
        if not self.note and self.returncode < 0:  # Popen's -N: killed by signal N
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            hint = " (out of memory? the kernel's OOM killer sends it)" if name == "SIGKILL" else ""
            status += f", killed by {name}{hint}"
        return f"JOB={self.index} ({status}, log {self.log})"


class JobsFailed(RuntimeError):
    """Some jobs of an array failed; the message names each one with its log."""

    def __init__(self, failed: list[JobResult], total: int):
        self.failed = failed
        names = ", ".join(r.describe() for r in failed)
        super().__init__(f"{len(failed)} of {total} jobs failed: {names}")


class SubmitError(RuntimeError):
    """A cluster refused or lost a submission (the message has the scheduler's own words)."""


class Backend(abc.ABC):
    """Runs a :class:`JobArray` and reports each job's exit status."""

    name: str

    @abc.abstractmethod
    def run(self, array: JobArray) -> list[JobResult]:
        """Run every job; return one result per job, in index order."""


def job_env(resources: Resources) -> dict[str, str]:
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
        def started(proc: subprocess.Popen) -> None:
            with self._lock:
                self._procs[job.index] = proc

        result = run_job(job, env, resources, on_start=None if self._stopping else started)
        with self._lock:
            self._procs.pop(job.index, None)
        return result

    def terminate(self) -> None:
        """Stop all running jobs (their whole process groups)."""
        self._stopping = True
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)

    def run(self, array: JobArray) -> list[JobResult]:
        env = job_env(array.resources)
        with ThreadPoolExecutor(max_workers=min(self.max_parallel, len(array.jobs))) as pool:
            futures = [pool.submit(self._run_one, job, env, array.resources) for job in array.jobs]
            return [f.result() for f in futures]


def status_path(log: Path) -> Path:
    """``log/x.3.log`` -> ``log/x.3.log.status``: the job's exit status (and done marker)."""
    return log.with_name(log.name + ".status")


def write_status(job: Job, returncode: int, seconds: float) -> None:
    """Record a finished job's exit status next to its log (atomically: a status file is complete)."""
    from espnet2_ext.utils.fileio import atomic_write_text

    atomic_write_text(status_path(job.log), json.dumps({"returncode": returncode, "seconds": round(seconds, 3)}) + "\n")


def keep_niceness(pid: int, autogroup: Path | None = None) -> None:
    """Give the job ``pid`` (a session of its own) this runner's niceness, also against other sessions.

    Linux with ``kernel.sched_autogroup_enabled`` (the default of common distribution kernels)
    schedules each session as a group whose share of the CPU does not depend on its processes' nice
    values; a new session's group starts at nice 0. So a job started by a niced runner (run.sh's
    chain ssl, ``nice -n 10``) would compete with every other job as an equal: its group gets the
    runner's nice (``/proc/<pid>/autogroup``). Without autogroups the file is missing, and the
    process's own inherited nice value already applies.
    """
    niceness = os.nice(0)
    if niceness <= 0:
        return
    with contextlib.suppress(OSError):  # no autogroup (not Linux, or disabled), or the job has ended
        (autogroup or Path(f"/proc/{pid}/autogroup")).write_text(str(niceness))


def run_job(
    job: Job, env: dict[str, str], resources: Resources,
    on_start: Callable[[subprocess.Popen], None] | None = lambda proc: None,
) -> JobResult:
    """Run one job with its output in its log, framed by a header and a footer; write its status.

    The same code runs a job on this machine and inside a SLURM task. The log is truncated and
    then appended to, so lines a scheduler appends to the same file (a time-limit kill) survive.

    Args:
        job: the job (JOB already substituted).
        env: its environment.
        resources: what it asked for (threads are logged).
        on_start: called with the started process (to be able to stop it); ``None`` means the
            runner is stopping and the job is not started (exit 130).
    """
    job.log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    open(job.log, "w").close()
    with open(job.log, "a", encoding="utf-8") as log:
        log.write(f"# {' '.join(job.command)}\n# Started at {_stamp()}\n")
        if env.get("PYTHONOPTIMIZE"):  # run.sh --typecheck false (its default)
            log.write(f"# PYTHONOPTIMIZE={env['PYTHONOPTIMIZE']}: Python jobs run without asserts and typeguard checks\n")
        log.write("#\n")
        log.flush()
        if on_start is None:
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
                keep_niceness(proc.pid)
                on_start(proc)
                rc = proc.wait()
        seconds = time.monotonic() - start
        log.write(f"# Accounting: time={seconds:.0f} threads={resources.num_threads}\n")
        log.write(f"# Ended (code {rc}) at {_stamp()}, elapsed time {seconds:.0f} seconds\n")
    write_status(job, rc, seconds)
    return JobResult(job.index, job.log, rc, seconds)


BACKEND_NAMES = ("local", "slurm")


def make_backend(name: str, max_parallel: int | None = None, config: str | None = None) -> Backend:
    """The backend called ``name``.

    Args:
        name: ``local`` or ``slurm``.
        max_parallel: at most this many jobs of an array at once.
        config: the SLURM option mapping (default ``conf/slurm.conf``); ignored by the local backend.

    Raises:
        JobSpecError: unknown name, or a bad SLURM config.
    """
    if name == "local":
        return LocalBackend(max_parallel=max_parallel)
    if name == "slurm":
        from espnet2_ext.utils.slurm import SlurmBackend

        return SlurmBackend(config=config, max_parallel=max_parallel)
    raise JobSpecError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")


def run_array(array: JobArray, backend: Backend, resume: bool = True) -> list[JobResult]:
    """Run ``array`` on ``backend``; raise :class:`JobsFailed` naming every failed job.

    Args:
        array: the jobs.
        backend: where they run.
        resume: skip jobs whose done marker says an earlier run of the same command succeeded
            with the files it names unchanged (what is left of a failed array).

    Returns:
        One result per job in index order; a skipped job has exit 0 and ``note`` "done before".
    """
    from espnet2_ext.utils import job_markers

    n = len(array.jobs)
    done = [job for job in array.jobs if resume and job_markers.is_done(job)]
    todo = [job for job in array.jobs if job not in done]
    if done:
        logger.info("JOB=%s succeeded in an earlier run of this command and its files are unchanged: not rerun "
                    "(markers: %s)", ",".join(str(j.index) for j in done), status_path(done[0].log))
    for job in todo:
        job_markers.clear(job)
    if todo:
        logger.info("running %d job(s) on %s backend (max %s at once); logs: %s", len(todo), backend.name,
                    getattr(backend, "max_parallel", None) or "all", array.log_pattern)
        results = backend.run(dataclasses.replace(array, jobs=todo))
    else:
        results = []
    results += [JobResult(job.index, job.log, 0, 0.0, "done before") for job in done]
    results.sort(key=lambda r: r.index)
    failed = [r for r in results if r.returncode != 0]
    by_index = {job.index: job for job in array.jobs}
    if failed:
        # the jobs that succeeded are not rerun by the next, identical invocation
        for r in results:
            if r.returncode == 0:
                job_markers.mark_done(by_index[r.index])
        raise JobsFailed(failed, n)
    for job in array.jobs:
        job_markers.clear(job)
    return results


def log_tail(path: Path, lines: int = 8) -> str:
    """The last ``lines`` lines of a job log before its footer, to show why a job failed."""
    try:
        content = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    body = [ln for ln in content if not ln.startswith("# ")]
    return "\n".join(body[-lines:])
