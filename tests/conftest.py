"""Shared fixtures: the repository root and an environment for running the project's CLIs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.recipe import run_recipe  # noqa: E402  (after the path above)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    """Environment for subprocesses: the package importable, offline, unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    # the python running the tests (the project venv) is the one the CLIs must use
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@pytest.fixture(scope="session")
def tiny_recipe_workdir(cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-recipe workdir with stages 1-3 done, built ONCE per test run.

    Shared by every xdist worker (a file lock in the run's common temp root): stages 1-3 are the
    slow part of every end-to-end test. Tests add their own outputs (their own exp/<name>, or the
    next stage) and must not remove what others read.
    """
    root = tmp_path_factory.getbasetemp().parent  # common to all workers of this run
    wd = root / "tiny_recipe"
    with FileLock(str(root / "tiny_recipe.lock")):
        if not (wd / "exp/ssl/upstream.json").is_file():
            r = run_recipe(["--workdir", str(wd), "--stop_stage", "3"], cli_env)
            assert r.returncode == 0, r.stderr[-3000:]
    return wd


@pytest.fixture(scope="session")
def slurm_env(cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real single-node SLURM (local/slurm_local.sh), for this worker; ``cli_env`` + ``SLURM_CONF``.

    Installs slurm-wlm and munge when missing (as root). Where SLURM can be neither found nor
    installed the tests using it FAIL: the cluster backend must not go untested silently.
    The daemons are stopped by their PIDs at the end of the session.
    """
    state = tmp_path_factory.mktemp("slurm")
    script = str(REPO_ROOT / "local/slurm_local.sh")
    r = subprocess.run([script, "start", str(state)], env=cli_env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        subprocess.run([script, "stop", str(state)], capture_output=True, timeout=120)
        pytest.fail(f"could not bring up a local SLURM with {script} (exit {r.returncode}):\n{r.stderr[-3000:]}")
    env = dict(cli_env, SLURM_CONF=str(state / "slurm.conf"))
    try:
        yield env
    finally:
        subprocess.run([script, "stop", str(state)], capture_output=True, timeout=120)
