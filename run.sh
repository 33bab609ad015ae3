#!/usr/bin/env bash
# One entry point that does its own set-up: creates .venv if missing, installs the pinned
# CPU build of torch first (a bare "torch" would pull a multi-GB CUDA build), then aekit.
#
#   ./run.sh demo      train a VAE on the embedded 5k MNIST digits; prints the run folder
#   ./run.sh test      run the whole test suite
#   ./run.sh setup     only set up .venv
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

cmd=${1:-help}
shift || true
case "$cmd" in
    setup) setup ;;
    demo)
        setup
        exec "$VENV/bin/aekit" train --model vae --data mnist-5k --epochs "${AEKIT_DEMO_EPOCHS:-10}" "$@"
        ;;
    test)
        setup
        exec "$VENV/bin/python" -m pytest -q "$@"
        ;;
    aekit)
        setup
        exec "$VENV/bin/aekit" "$@"
        ;;
    *)
        sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
        [ "$cmd" = help ] || exit 2
        ;;
esac
