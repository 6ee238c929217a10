#!/usr/bin/env bash
# Runs gemm.py in a venv holding the peer runtimes (onnxruntime, onnx; torch with --torch),
# created on first use under bench/peers/.venv from the package index with pip.
# INTQ_PEERS_PYTHON=python3 skips the venv and uses an interpreter that already has them.
# Usage: bench/peers/run_gemm.sh [gemm.py options]   (builds intq in release mode first)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
want_torch=0
for a in "$@"; do [ "$a" = "--torch" ] && want_torch=1; done
if [ -n "${INTQ_PEERS_PYTHON:-}" ]; then
  py="$INTQ_PEERS_PYTHON"
else
  venv="$here/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
  fi
  if ! "$venv/bin/python" -c "import numpy, onnx, onnxruntime" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q numpy onnx onnxruntime
  fi
  if [ "$want_torch" = 1 ] && ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q torch
  fi
  py="$venv/bin/python"
fi
intq="${INTQ_BIN:-}"
if [ -z "$intq" ]; then
  (cd "$root" && cargo build --release -q -p intq-cli)
  intq="$root/target/release/intq"
fi
exec "$py" "$here/gemm.py" --intq "$intq" "$@"
