"""Shared fixtures: the repository root and an environment for running the project's CLIs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from filelock import FileLock

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.recipe import STAGES_4_13_OPTS, SharedRun, run_recipe  # noqa: E402  (after the path above)
from tests.step2_fake import STEP2_ARGS, write_fake_workdir  # noqa: E402

# Test files whose setups run recipe stages for minutes, longest first (by their times in a
# 2-core `.ci/run`). tests/run_tests.sh hands files to the xdist workers in collection order
# (--dist loadfile --no-loadscope-reorder; xdist's default order, the files with most tests first,
# queued the SLURM comparison, 3 tests and the longest setup, behind most others): these go first.
SLOW_FILES = ("test_slurm_recipe.py", "test_recipe_e2e.py", "test_step0.py", "test_step2_reproducible.py",
              "test_step2.py", "test_step1.py", "test_units_stages.py", "test_units_kill.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))  # stable: files stay whole


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


def shared_tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temp dir of this test run common to all its xdist workers (their base temps' parent).

    Without xdist it is the run's own base temp: the parent would be shared with earlier runs.
    """
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def tiny_recipe_workdir(cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-recipe workdir with stages 1-3 done, built ONCE per test run.

    Shared by every xdist worker (a file lock in the run's common temp root): stages 1-3 are the
    slow part of every end-to-end test. Tests add their own outputs (their own exp/<name>, or the
    next stage) and must not remove what others read.
    """
    root = shared_tmp_root(tmp_path_factory)
    wd = root / "tiny_recipe"
    with FileLock(str(root / "tiny_recipe.lock")):
        if not (wd / "exp/ssl/upstream.json").is_file():
            r = run_recipe(["--workdir", str(wd), "--stop_stage", "3"], cli_env)
            assert r.returncode == 0, r.stderr[-3000:]
    return wd


def shared_run(root: Path, name: str, build: Callable[[Path], subprocess.CompletedProcess]) -> SharedRun:
    """``root/name``, built by ``build(workdir)`` (a run.sh run) ONCE per test run, whichever worker asks first.

    Under the file lock ``root/name.lock``; ``name.done`` marks a finished build and ``name.stderr``
    keeps run.sh's stderr for every later caller.
    """
    wd, done, log = root / name, root / f"{name}.done", root / f"{name}.stderr"
    lock = FileLock(str(root / f"{name}.lock"))
    with lock:
        if not done.is_file():
            r = build(wd)
            log.write_text(r.stderr)
            assert r.returncode == 0, r.stderr[-4000:]
            done.touch()
    return SharedRun(wd, log.read_text(), lock)


@pytest.fixture(scope="session")
def tiny_recipe_stages_4_13(cli_env: dict[str, str], tiny_recipe_workdir: Path,
                            tmp_path_factory: pytest.TempPathFactory) -> SharedRun:
    """Stages 4-13 of the tiny recipe (``STAGES_4_13_OPTS``, local backend), run ONCE per test run.

    From a copy of the shared stages 1-3 (``tiny_recipe_workdir``). The end-to-end tests check its
    artefacts and decode its pack; the SLURM test compares its own run of stages 4-11 with it.
    """
    def build(wd: Path) -> subprocess.CompletedProcess:
        if not wd.is_dir():
            tmp = wd.with_name(wd.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(tiny_recipe_workdir / "data", tmp / "data", ignore=shutil.ignore_patterns("token_list"))
            shutil.copytree(tiny_recipe_workdir / "exp/ssl", tmp / "exp/ssl")
            tmp.rename(wd)
        return run_recipe(["--workdir", str(wd), "--stage", "4", "--stop_stage", "13", *STAGES_4_13_OPTS], cli_env)

    return shared_run(shared_tmp_root(tmp_path_factory), "tiny_recipe_4_13", build)


@pytest.fixture(scope="session")
def step2_fake_run(cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> SharedRun:
    """Stages 9-11 (``STEP2_ARGS``) on tests/step2_fake.py's fake unit dump, run ONCE per test run.

    test_step2.py checks its outputs; test_step2_reproducible.py trains the same seed again and compares.
    """
    def build(wd: Path) -> subprocess.CompletedProcess:
        shutil.rmtree(wd, ignore_errors=True)
        write_fake_workdir(wd)
        return run_recipe(["--workdir", str(wd), "--stage", "9", "--stop_stage", "11", *STEP2_ARGS], cli_env)

    return shared_run(shared_tmp_root(tmp_path_factory), "step2_fake", build)


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
