#!/usr/bin/env bash
# Makes (once) a venv with TFLite's Python interpreter (ai-edge-litert) and numpy, builds intq,
# and compares intq against TFLite's reference kernels on the given models:
#   tools/tflite-check/check.sh MODEL.tflite [MODEL.tflite ...] [--seeds N] [--save DIR]
# Environment: VENV (default tools/tflite-check/.venv), INTQ (an intq binary; default: build one).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet ai-edge-litert numpy
fi
if [ -z "${INTQ:-}" ]; then
    (cd "$root" && cargo build --release --quiet -p intq-cli)
    INTQ="$root/target/release/intq"
fi
exec "$venv/bin/python" "$here/check.py" --intq "$INTQ" "$@"
