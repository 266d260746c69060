# Sourced by run.sh and tests/run_tests.sh (ESPnet convention): environment for every stage.
MAIN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MAIN_ROOT
# shellcheck source=local/setup_env.sh
. "$MAIN_ROOT/local/setup_env.sh" || { echo "path.sh: environment setup failed" >&2; return 1 2>/dev/null || exit 1; }
export PATH="$VENV_DIR/bin:$PATH"
export PYTHONPATH="$MAIN_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# Offline by design: model hubs are never contacted; real checkpoints are local files or caches.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export LC_ALL=C.UTF-8
