"""SLURM backend of the job runner: one ``sbatch --array`` per ``${cmd} JOB=1:N ...`` call.

Why sbatch directly and not submitit: submitit pickles Python callables and runs them with its
own ``python -m submitit.core._submit`` under ``srun``, keeps its logs and results in its own
folder (``%j_%t_log.out``), and reads job states from ``sacct`` (``SlurmInfoWatcher``). Our jobs
are argument vectors with Kaldi log paths given by the recipe, and ``sacct`` needs accounting
(slurmdbd), which many clusters and the single-node test cluster (``local/slurm_local.sh``) do not
run. Driving ``sbatch`` needs only the scheduler itself and about a hundred lines:

* the array's jobs go to ``<logdir>/q/<name>.json``; each SLURM task runs
  ``python -m espnet2_ext.bin.run_job_task <json> $SLURM_ARRAY_TASK_ID``, which runs its job with
  the same code as the local backend (log header/footer at the Kaldi log path) and writes the
  exit status to ``<log>.status``;
* SLURM's own output goes to the same log (``-o`` with ``%a`` where the log has ``JOB``,
  ``--open-mode=append``), so a task killed at its time or memory limit shows why in its log;
* the runner waits by watching the status files (every ``poll`` seconds) and asks ``squeue``
  (every ``squeue_every`` seconds) which tasks are still queued; a task that left the queue
  without writing its status was killed, and is reported as failed;
* resubmitting only the failed jobs is the runner's done markers (``jobs.run_array``): the array
  is submitted with just the indices still to do (``--array=2,4``).

Per-job resources are mapped to sbatch options by a Kaldi/ESPnet-style config (:class:`SlurmConfig`,
``conf/slurm.conf``).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from espnet2_ext.utils.jobs import Backend, JobArray, JobResult, JobSpecError, Resources, SubmitError, status_path

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "slurm.conf"
RESOURCE_NAMES = ("num_threads", "mem", "time", "gpu", "partition")
_RESOURCE_DEFAULTS = {name: getattr(Resources(), name) for name in RESOURCE_NAMES}


@dataclass
class SlurmConfig:
    """The mapping from job resources to sbatch options, in the format of Kaldi's ``conf/slurm.conf``.

    Lines (``#`` starts a comment)::

        command sbatch --export=ALL          # the submit command and options every job gets
        default time=24:00:00                # value used when a job does not give one
        option time=* --time $0              # any value: these options, $0 = the value
        option gpu=0                         # this exact value: these options (here none)
        option gpu=* -p gpu --gres=gpu:$0

    An exact-value rule wins over ``*``. A resource a job sets without a matching rule is an error,
    unless it is the runner's default (one thread, no GPU), which then adds nothing.
    """

    command: list[str] = field(default_factory=lambda: ["sbatch", "--export=ALL"])
    defaults: dict[str, str] = field(default_factory=dict)
    rules: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # name -> value or "*" -> options
    path: str = "<built-in>"

    @classmethod
    def load(cls, path: str | Path) -> SlurmConfig:
        """Read a config file.

        Raises:
            JobSpecError: missing file or a malformed line (named with its line number).
        """
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise JobSpecError(f"{path}: cannot read the SLURM config ({e.strerror}); see conf/slurm.conf") from e
        cfg = cls(command=[], path=str(path))
        for lineno, raw in enumerate(lines, 1):
            words = shlex.split(raw, comments=True)
            if not words:
                continue
            where = f"{path}:{lineno}"
            kind, rest = words[0], words[1:]
            if kind == "command" and rest:
                cfg.command = rest
                continue
            if kind not in ("default", "option") or not rest or "=" not in rest[0]:
                raise JobSpecError(f"{where}: expected 'command ...', 'default NAME=VALUE' or "
                                   f"'option NAME=VALUE|* [sbatch options]', got {raw.strip()!r}")
            name, _, value = rest[0].partition("=")
            if name not in RESOURCE_NAMES:
                raise JobSpecError(f"{where}: unknown resource {name!r}; known: {', '.join(RESOURCE_NAMES)}")
            if kind == "default":
                if len(rest) != 1:
                    raise JobSpecError(f"{where}: 'default' takes one NAME=VALUE, got {raw.strip()!r}")
                cfg.defaults[name] = value
            else:
                cfg.rules.setdefault(name, {})[value] = rest[1:]
        if not cfg.command:
            raise JobSpecError(f"{path}: no 'command sbatch ...' line")
        return cfg

    def options(self, resources: Resources) -> list[str]:
        """The sbatch options for ``resources`` (in the order num_threads, mem, time, gpu, partition).

        Raises:
            JobSpecError: a resource is set that the config has no rule for.
        """
        opts: list[str] = []
        for name in RESOURCE_NAMES:
            value = getattr(resources, name)
            value = self.defaults.get(name) if value is None else str(value)
            if value is None:
                continue
            rules = self.rules.get(name, {})
            rule = rules.get(value, rules.get("*"))
            if rule is None and value == str(_RESOURCE_DEFAULTS[name]):
                continue
            if rule is None:
                raise JobSpecError(f"{self.path}: no rule for {name}={value}; add 'option {name}=* ...' "
                                   f"or 'option {name}={value} ...'")
            opts += [word.replace("$0", value) for word in rule]
        return opts


def array_spec(indices: list[int], max_parallel: int | None) -> str:
    """``--array`` value: ``1-4``, ``2,4,7-9``; ``%K`` limits how many run at once."""
    parts: list[str] = []
    start = prev = indices[0]
    for i in [*indices[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        if i is not None:
            start = prev = i
    spec = ",".join(parts)
    return f"{spec}%{max_parallel}" if max_parallel else spec


def _output_pattern(array: JobArray) -> str:
    """sbatch's ``-o``: the log template with ``%a`` for the variable (``%`` escaped)."""
    template = (array.log_template or str(array.jobs[0].log)).replace("%", "%%")
    if array.variable:
        template = template.replace(array.variable, "%a")
    return str(Path(template).absolute())


def _job_name(array: JobArray) -> str:
    name = Path(array.log_template or array.jobs[0].log).name.removesuffix(".log")
    if array.variable:
        name = re.sub(rf"[._-]?{array.variable}", "", name)
    return name or "job"


class SlurmBackend(Backend):
    """Runs a job array as one SLURM array job and waits for it.

    Args:
        config: the option mapping file (default ``conf/slurm.conf`` of this repository).
        max_parallel: at most this many tasks at once (``--array=...%K``); ``None``: no limit.
        poll: seconds between looks at the status files.
        squeue_every: seconds between ``squeue`` calls (the scheduler is asked rarely).
        lost_grace: seconds a task may be gone from the queue before its missing status counts
            as a kill (status files written on another node may take a moment to appear).
    """

    name = "slurm"

    def __init__(self, config: str | Path | None = None, max_parallel: int | None = None, poll: float = 0.25,
                 squeue_every: float = 2.0, lost_grace: float = 10.0):
        self.config = SlurmConfig.load(config or DEFAULT_CONFIG)
        self.max_parallel = max_parallel
        self.poll, self.squeue_every, self.lost_grace = poll, squeue_every, lost_grace
        self.job_id: str | None = None
        self._stopping = False

    # ---- submission
    def sbatch_argv(self, array: JobArray, script: Path) -> list[str]:
        """The full sbatch command for ``array`` whose task script is ``script``."""
        indices = [job.index for job in array.jobs]
        return [*self.config.command, *self.config.options(array.resources), "--parsable",
                f"--array={array_spec(indices, self.max_parallel)}", f"--job-name={_job_name(array)}",
                f"--output={_output_pattern(array)}", "--open-mode=append", str(script)]

    def _write_task_files(self, array: JobArray) -> Path:
        from espnet2_ext.utils.fileio import atomic_write_text

        qdir = array.jobs[0].log.parent / "q"
        name = _job_name(array)
        spec = {
            "resources": {n: getattr(array.resources, n) for n in RESOURCE_NAMES},
            "jobs": {str(j.index): {"log": str(j.log.absolute()), "command": list(j.command)} for j in array.jobs},
        }
        atomic_write_text(qdir / f"{name}.json", json.dumps(spec, indent=1) + "\n")
        script = qdir / f"{name}.sh"
        atomic_write_text(script, "#!/bin/bash\n# written by espnet2_ext.utils.slurm: one task of the array\n"
                          f"exec {shlex.quote(sys.executable)} -m espnet2_ext.bin.run_job_task "
                          f"{shlex.quote(str((qdir / f'{name}.json').absolute()))} \"$SLURM_ARRAY_TASK_ID\"\n")
        return script

    def submit(self, array: JobArray) -> str:
        """Submit the array; return its SLURM job id.

        Raises:
            SubmitError: sbatch failed (its message is included).
        """
        for job in array.jobs:
            job.log.parent.mkdir(parents=True, exist_ok=True)  # slurmd does not create the -o directory
        argv = self.sbatch_argv(array, self._write_task_files(array))
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SubmitError(f"cannot run {argv[0]!r}: {e}; is SLURM installed here (and SLURM_CONF set)?") from e
        if r.returncode != 0:
            raise SubmitError(f"sbatch failed (exit {r.returncode}): {r.stderr.strip()}\ncommand: {shlex.join(argv)}")
        job_id = r.stdout.strip().split(";")[0]
        logger.info("submitted SLURM array job %s: --array=%s", job_id, array_spec([j.index for j in array.jobs],
                                                                                  self.max_parallel))
        return job_id

    # ---- waiting
    def queued_tasks(self, job_id: str) -> set[int] | None:
        """Array indices of ``job_id`` still pending or running; ``None`` when squeue gave no answer."""
        try:
            r = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%K"], capture_output=True, text=True,
                               timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if r.returncode != 0:
            # a job that has finished and been purged is "invalid" to squeue: nothing is queued
            return set() if "Invalid job id" in r.stderr else None
        return {int(t) for t in r.stdout.split() if t.isdigit()}

    def _status(self, log: Path) -> int | None:
        try:
            return int(json.loads(status_path(log).read_text(encoding="utf-8"))["returncode"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def run(self, array: JobArray) -> list[JobResult]:
        start = time.monotonic()
        self.job_id = job_id = self.submit(array)
        pending = {job.index: job for job in array.jobs}
        results: dict[int, JobResult] = {}
        gone_since: dict[int, float] = {}
        last_squeue = time.monotonic()
        while pending and not self._stopping:
            time.sleep(self.poll)
            for index, job in list(pending.items()):
                rc = self._status(job.log)
                if rc is not None:
                    results[index] = JobResult(index, job.log, rc, time.monotonic() - start)
                    del pending[index]
            if not pending or time.monotonic() - last_squeue < self.squeue_every:
                continue
            last_squeue = time.monotonic()
            queued = self.queued_tasks(job_id)
            if queued is None:
                continue
            now = time.monotonic()
            for index, job in list(pending.items()):
                if index in queued:
                    gone_since.pop(index, None)
                    continue
                rc = self._status(job.log)  # it may have finished since the last look
                if rc is not None:
                    results[index] = JobResult(index, job.log, rc, now - start)
                    del pending[index]
                elif now - gone_since.setdefault(index, now) >= self.lost_grace:
                    results[index] = JobResult(index, job.log, -1, now - start,
                                               f"killed by SLURM without an exit status: job {job_id}_{index}, "
                                               "see the end of the log (time/memory limit, node failure, scancel)")
                    del pending[index]
        for index, job in pending.items():  # interrupted
            results[index] = JobResult(index, job.log, 130, time.monotonic() - start, f"cancelled (job {job_id})")
        logger.info("SLURM array job %s finished in %.1f s", job_id, time.monotonic() - start)
        return [results[job.index] for job in array.jobs]

    def terminate(self) -> None:
        """Cancel the submitted array (every task) and stop waiting."""
        self._stopping = True
        if self.job_id:
            subprocess.run(["scancel", self.job_id], capture_output=True, timeout=60)
