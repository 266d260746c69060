#!/usr/bin/env bash
# Idempotent environment setup, sourced by path.sh (so by run.sh and tests/run_tests.sh).
#
#  * Debian packages the recipe calls (espeak-ng, sox): installed with apt-get when missing.
#  * A Python venv with the pinned requirements.txt, reused while requirements.txt and the
#    Python version are unchanged (a hash stamp inside the venv says which set it holds).
#    Location: $ESPNET2_EXT_VENV, default ${XDG_CACHE_HOME:-$HOME/.cache}/espnet2_ext/venv,
#    so that every clone of the repository shares one ~7 GB environment.
#  * Python interpreter used to create it: $PYTHON (default python3, >= 3.10).
# Exports VENV_DIR.

_setup_env_main() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    local apt_pkgs=(espeak-ng sox)
    local missing=() p
    for p in "${apt_pkgs[@]}"; do
        command -v "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "setup_env: installing Debian packages: ${missing[*]}" >&2
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 || {
                echo "setup_env: apt-get install ${missing[*]} failed" >&2; return 1; }
        else
            echo "setup_env: missing programs: ${missing[*]}. Install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}) and rerun." >&2
            return 1
        fi
    fi

    local python=${PYTHON:-python3}
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "setup_env: need Python >= 3.10 as \$PYTHON (got: $("$python" --version 2>&1))" >&2
        return 1
    fi
    VENV_DIR=${ESPNET2_EXT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/espnet2_ext/venv}
    export VENV_DIR
    local want
    want=$( { cat "$root/requirements.txt"; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
    if _setup_env_stamped "$VENV_DIR/.requirements.sha256" "$want"; then
        _setup_env_optimized_bytecode "$want"
        return
    fi
    mkdir -p "$(dirname "$VENV_DIR")"
    (
        # One installer at a time: run.sh and the tests may start together on a fresh machine.
        flock 9
        _setup_env_stamped "$VENV_DIR/.requirements.sha256" "$want" && exit 0
        echo "setup_env: building the Python environment in $VENV_DIR (first run: a few minutes, ~7 GB)" >&2
        local start=$SECONDS
        [ -x "$VENV_DIR/bin/python" ] || "$python" -m venv "$VENV_DIR" || exit 1
        local pip=("$VENV_DIR/bin/python" -m pip --disable-pip-version-check -qq)
        # torch and torchaudio first, on their own: this keeps the resolver from backtracking
        # through torch releases that espnet's setuptools pin cannot join.
        "${pip[@]}" install $(grep -E '^(torch|torchaudio)==' "$root/requirements.txt") >&2 || exit 1
        "${pip[@]}" install -r "$root/requirements.txt" >&2 || exit 1
        "${pip[@]}" check >&2 || exit 1
        echo "$want" > "$VENV_DIR/.requirements.sha256.tmp" && mv "$VENV_DIR/.requirements.sha256.tmp" "$VENV_DIR/.requirements.sha256"
        echo "setup_env: environment ready in $((SECONDS - start)) s" >&2
    ) 9>"$VENV_DIR.lock" || return 1
    _setup_env_optimized_bytecode "$want"
}

# run.sh runs its jobs with PYTHONOPTIMIZE=1 (its --typecheck false), which imports *.opt-1.pyc
# files. pip writes only the plain ones, and with PYTHONDONTWRITEBYTECODE set, or a read-only venv,
# Python would recompile every module from source in every job (19 s instead of 7 to import
# ESPnet's MT task, measured). So they are compiled once here (~20 s on 2 cores), and a stamp says so.
_setup_env_optimized_bytecode() {
    local want=$1 stamp=$VENV_DIR/.opt1_pyc.sha256
    _setup_env_stamped "$stamp" "$want" && return 0
    (
        flock 9
        _setup_env_stamped "$stamp" "$want" && exit 0
        echo "setup_env: compiling the environment's optimized bytecode (python -O, once)" >&2
        # a failed file (packages ship the odd Python-2 test file) only costs its own compile per job
        "$VENV_DIR/bin/python" -O -m compileall -q -j 0 "$("$VENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
            >/dev/null 2>&1 || echo "setup_env: some files did not compile (python -O); carrying on" >&2
        echo "$want" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
    ) 9>"$VENV_DIR.lock"
}
_setup_env_stamped() {  # _setup_env_stamped STAMP HASH: STAMP exists and holds HASH
    [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]
}
_setup_env_main
