"""Run an array of jobs, Kaldi style (what ``${cmd}`` in the recipe expands to).

Usage::

    python -m espnet2_ext.bin.run_jobs [--backend local|slurm] [--config conf/slurm.conf] \\
        [--max_jobs_run N] [--num_threads T] [--mem M] [--gpu G] [--time HH:MM:SS] [--partition P] \\
        [--resume true|false] [JOB=1:N] logdir/name.JOB.log command [args ...]

Options may be spelled with ``_`` or ``-`` (``--num-threads``), as Kaldi users type them.
``--backend`` defaults to ``$CMD_BACKEND`` or local; ``--config`` is the SLURM option mapping.
``--resume false`` reruns jobs that succeeded in an earlier, failed run of the same command
(by default only the failed ones run again; see ``espnet2_ext.utils.job_markers``).
Exit status 0 when every job succeeded, 1 when any failed (each failed JOB and its log are
named, with the end of the first failed log) or the cluster refused the submission, 2 for a
malformed call.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from espnet2_ext.utils.jobs import (
    JobsFailed,
    JobSpecError,
    Resources,
    SubmitError,
    log_tail,
    make_backend,
    parse_invocation,
    run_array,
)

_VALUE_OPTIONS = {"backend", "max_jobs_run", "num_threads", "mem", "gpu", "time", "partition", "config", "resume"}


def _parse(argv: list[str]) -> tuple[dict[str, str], str | None, str, list[str]]:
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("--"):
        name, _, value = argv[i][2:].partition("=")
        name = name.replace("-", "_")
        if name not in _VALUE_OPTIONS:
            raise JobSpecError(f"unknown option --{name}; known: {', '.join('--' + o for o in sorted(_VALUE_OPTIONS))}")
        if not value:
            if i + 1 >= len(argv):
                raise JobSpecError(f"option --{name} needs a value")
            value = argv[i + 1]
            i += 1
        opts[name] = value
        i += 1
    rest = argv[i:]
    array_spec = None
    if rest and "=" in rest[0] and not rest[0].startswith(("/", ".")):
        array_spec, rest = rest[0], rest[1:]
    if len(rest) < 2:
        raise JobSpecError("usage: run_jobs [options] [JOB=1:N] logdir/name.JOB.log command [args ...]")
    return opts, array_spec, rest[0], rest[1:]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s run_jobs: %(message)s", datefmt="%H:%M:%S")
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts, array_spec, log, command = _parse(argv)
        resources = Resources(
            num_threads=int(opts.get("num_threads", 1)),
            mem=opts.get("mem"),
            gpu=int(opts.get("gpu", 0)),
            time=opts.get("time"),
            partition=opts.get("partition"),
        )
        array = parse_invocation(array_spec, log, command, resources)
        backend_name = opts.get("backend") or os.environ.get("CMD_BACKEND") or "local"
        max_jobs = opts.get("max_jobs_run")
        backend = make_backend(backend_name, int(max_jobs) if max_jobs else None, opts.get("config"))
        resume = opts.get("resume", "true")
        if resume not in ("true", "false"):
            raise JobSpecError(f"--resume must be true or false (got {resume!r})")
    except (JobSpecError, ValueError) as e:
        print(f"run_jobs: {e}", file=sys.stderr)
        return 2

    def _stop(signum: int, _frame: object) -> None:
        terminate = getattr(backend, "terminate", None)
        if terminate:
            terminate()
        print(f"run_jobs: interrupted by signal {signum}; stopped running jobs", file=sys.stderr)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        run_array(array, backend, resume=resume == "true")
    except SubmitError as e:
        print(f"run_jobs: {e}", file=sys.stderr)
        return 1
    except JobsFailed as e:
        print(f"run_jobs: {e}", file=sys.stderr)
        tail = log_tail(e.failed[0].log)
        if tail:
            print(f"run_jobs: end of {e.failed[0].log}:\n{tail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
