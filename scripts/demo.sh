#!/usr/bin/env bash
# Run trionet's main job on embedded defaults: no broker or server needed.
# Creates .venv if missing, installs trionet into it, runs `trionet demo` (extra args pass through).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import trionet, hypercorn, trio_websocket" >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[asgi]'
fi
exec .venv/bin/trionet demo "$@"
