#!/usr/bin/env bash
# Runs models.py in a venv holding TensorFlow Lite's runtime (ai-edge-litert, numpy), created on
# first use under bench/peers/.venv from the package index with pip.
# INTQ_PEERS_PYTHON=python3 skips the venv and uses an interpreter that already has them.
# Usage: bench/peers/run_models.sh [models.py options]   (builds intq in release mode first)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ -n "${INTQ_PEERS_PYTHON:-}" ]; then
  py="$INTQ_PEERS_PYTHON"
else
  venv="$here/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
  fi
  if ! "$venv/bin/python" -c "import ai_edge_litert, numpy" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q numpy ai-edge-litert
  fi
  py="$venv/bin/python"
fi
intq="${INTQ_BIN:-}"
if [ -z "$intq" ]; then
  (cd "$root" && cargo build --release -q -p intq-cli)
  intq="$root/target/release/intq"
fi
exec "$py" "$here/models.py" --intq "$intq" "$@"
