"""Running ``./run.sh`` from the tests as a user does (imported by test modules and conftest)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_recipe(args: list[str], env: dict[str, str], *, config: str | None = "conf/recipe/tiny.yaml",
               cwd: Path | None = None, timeout: float = 3600) -> subprocess.CompletedProcess:
    """``run.sh --config CONFIG ARGS`` (``config=None``: run.sh's default) from ``cwd`` (default: the repo root).

    Returns:
        The finished process; stdout and stderr captured as text.
    """
    cmd = [str(REPO_ROOT / "run.sh"), *(["--config", config] if config else []), *args]
    return subprocess.run(cmd, cwd=cwd or REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


# Options of the tiny recipe's stages 4-13 that the end-to-end and SLURM tests share: the single-layer
# baseline and the two-step system, step 1 on the fine-tuned upstream only, the two-step pack, one
# thread per training (the local backend splits --train_threads between the trainings that run at
# once, slurm gives each job --train_threads: one thread each way is the same float arithmetic), and
# stages 4-10 as two chains at once, as the demo runs them.
STAGES_4_13_OPTS = ["--unit_systems", "baseline twostep", "--step1_upstreams", "step0", "--train_threads", "1",
                    "--pack_systems", "twostep", "--parallel_chains", "true"]


@dataclass
class SharedRun:
    """A recipe run shared by the tests of several modules (and xdist workers)."""

    workdir: Path
    stderr: str  # run.sh's
    lock: FileLock  # held by a test that hides, reruns or compares the workdir, so no other sees it half-way
