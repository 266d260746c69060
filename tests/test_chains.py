"""run.sh --parallel_chains: an interrupted run stops both chains and every job they started.

That the chains run at once, each through its share of stages 4-10, is checked on the shared tiny
run (tests/test_recipe_e2e.py); which unit system goes to which chain in tests/tokenizer/test_systems.py.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

from tests.recipe import REPO_ROOT
from tests.sigkill import start


def _processes_naming(text: str) -> list[str]:
    """Command lines of the live processes that contain ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # exited meanwhile
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def test_sigterm_stops_both_chains_and_their_jobs(tiny_recipe_workdir: Path, cli_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    shutil.copytree(tiny_recipe_workdir / "data", wd / "data", ignore=shutil.ignore_patterns("token_list"))
    shutil.copytree(tiny_recipe_workdir / "exp/ssl", wd / "exp/ssl")
    log = tmp_path / "run.log"
    proc = start([str(REPO_ROOT / "run.sh"), "--config", "conf/recipe/tiny.yaml", "--workdir", str(wd),
                  "--stage", "4", "--stop_stage", "10", "--parallel_chains", "true"], cli_env, REPO_ROOT, log)
    try:
        # both chains are at work: step 0 trains in chain step0 while chain ssl runs
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and not (
                "[step0]" in (text := log.read_text()) and "step 0: training" in text and "[ssl]" in text):
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert len(_processes_naming(str(wd))) > 2
        proc.send_signal(signal.SIGTERM)  # to run.sh only, as a scheduler's time limit or `kill` does
        assert proc.wait(timeout=120) != 0
        out = log.read_text()
        assert "interrupted: stopped both chains" in out
        deadline = time.monotonic() + 30
        while _processes_naming(str(wd)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_naming(str(wd)) == [], "a chain or one of its jobs outlived the interrupted run"
        times = wd / "log/stage_times.tsv"
        assert not times.exists() or "\tchains\t" not in times.read_text(), "the chained stages never finished"
    finally:
        if proc.poll() is None:
            proc.kill()
