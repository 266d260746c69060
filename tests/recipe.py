"""Running ``./run.sh`` from the tests as a user does (imported by test modules and conftest)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_recipe(args: list[str], env: dict[str, str], *, config: str | None = "conf/recipe/tiny.yaml",
               cwd: Path | None = None, timeout: float = 3600) -> subprocess.CompletedProcess:
    """``run.sh --config CONFIG ARGS`` (``config=None``: run.sh's default) from ``cwd`` (default: the repo root).

    Returns:
        The finished process; stdout and stderr captured as text.
    """
    cmd = [str(REPO_ROOT / "run.sh"), *(["--config", config] if config else []), *args]
    return subprocess.run(cmd, cwd=cwd or REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
