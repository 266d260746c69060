"""One task of a SLURM array submitted by the job runner (what the task script executes).

Usage::

    python -m espnet2_ext.bin.run_job_task logdir/q/name.json "$SLURM_ARRAY_TASK_ID"

Runs job ``TASK_ID`` of the array described in the JSON file (written by
``espnet2_ext.utils.slurm.SlurmBackend``) exactly as the local backend would: output in the job's
Kaldi log between a header and a footer, exit status in ``<log>.status``. Exits with the job's code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from espnet2_ext.utils.jobs import Job, Resources, job_env, run_job


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: run_job_task SPEC.json TASK_ID", file=sys.stderr)
        return 2
    spec_path, task = Path(argv[0]), argv[1]
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        entry = spec["jobs"][task]
        resources = Resources(**spec["resources"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"run_job_task: {spec_path}: no job {task!r} in a readable array description ({e!r}); "
              "it is written by the runner at submission: resubmit with the runner", file=sys.stderr)
        return 2
    job = Job(int(task), Path(entry["log"]), tuple(entry["command"]))
    return run_job(job, job_env(resources), resources).returncode


if __name__ == "__main__":
    sys.exit(main())
