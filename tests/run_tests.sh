#!/usr/bin/env bash
# The test command of the README: sets up the environment (idempotent), lints, runs the suite.
# Extra arguments go to pytest, e.g.  tests/run_tests.sh -k scoring -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=../path.sh
. ./path.sh
start=$SECONDS
echo "== ruff" >&2
ruff check .
echo "== pytest" >&2
# Two workers (the project's machines and CI have 2 cores); a file stays on one worker so its
# module-scoped fixtures (tiny corpus, tiny checkpoints) are built once; files are handed out in
# collection order, the slow ones first (tests/conftest.py: SLOW_FILES).
python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder --durations=10 "$@" tests
echo "tests/run_tests.sh: finished in $((SECONDS - start)) s" >&2
