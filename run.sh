#!/usr/bin/env bash
# One entry point that does its own set-up: creates .venv if missing, installs the pinned
# CPU build of torch first (a bare "torch" would pull a multi-GB CUDA build), then aekit.
#
#   ./run.sh demo      train a VAE on the embedded 5k MNIST digits; prints the run folder
#   ./run.sh test      run the whole test suite (sets up Debian's chromium for the browser tests)
#   ./run.sh setup     only set up .venv and chromium
#   ./run.sh aekit ... run the aekit CLI inside .venv
set -euo pipefail
cd "$(dirname "$0")"

TORCH_VERSION=2.13.0
VENV=${AEKIT_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV" >&2
        "$PY" -m venv "$VENV"
    fi
    local stamp="$VENV/.aekit-installed"
    local want
    want="torch==$TORCH_VERSION $(cat pyproject.toml | cksum)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" >&2
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]" >&2
        echo "$want" > "$stamp"
    fi
}

# The browser tests drive the system's chromium (never a browser downloaded by Playwright). Install Debian's
# package when it is missing and apt-get can be used (as root, or with password-less sudo); otherwise those
# tests skip and say why.
setup_chromium() {
    if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then return 0; fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "note: no chromium and no apt-get: the browser tests will be skipped" >&2
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo=(sudo -n); else
            echo "note: no chromium, and installing it needs root (sudo apt-get install chromium): the browser tests will be skipped" >&2
            return 0
        fi
    fi
    echo "installing Debian's chromium for the browser tests" >&2
    local install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
                   chromium fonts-dejavu-core)
    "${install[@]}" >/dev/null 2>&1 \
        || { "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 && "${install[@]}" >/dev/null 2>&1; } \
        || echo "note: could not install chromium with apt-get: the browser tests will be skipped" >&2
}

cmd=${1:-help}
shift || true
case "$cmd" in
    setup) setup; setup_chromium ;;
    demo)
        setup
        exec "$VENV/bin/aekit" train --model vae --data mnist-5k --epochs "${AEKIT_DEMO_EPOCHS:-10}" "$@"
        ;;
    test)
        setup
        setup_chromium
        exec "$VENV/bin/python" -m pytest -q "$@"
        ;;
    aekit)
        setup
        exec "$VENV/bin/aekit" "$@"
        ;;
    *)
        sed -n '2,/^set -/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        [ "$cmd" = help ] || exit 2
        ;;
esac
