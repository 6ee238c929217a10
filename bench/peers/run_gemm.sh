#!/usr/bin/env bash
# Runs gemm.py in a venv holding the peer runtimes (onnxruntime, onnx; torch with --torch),
# created on first use under bench/peers/.venv from the package index with pip.
# INTQ_PEERS_PYTHON=python3 skips the venv and uses an interpreter that already has them;
# INTQ_BIN=path skips the release build of intq.
# Usage: bench/peers/run_gemm.sh [gemm.py options]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
py="$(peers_python "$here/.venv" "numpy, onnx, onnxruntime" numpy onnx onnxruntime)"
for a in "$@"; do
  if [ "$a" = "--torch" ]; then
    py="$(peers_python "$here/.venv" torch torch)"
  fi
done
intq="$(intq_bin "$here/../..")"
exec "$py" "$here/gemm.py" --intq "$intq" "$@"
