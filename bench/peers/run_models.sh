#!/usr/bin/env bash
# Runs models.py in a venv holding TensorFlow Lite's runtime (ai-edge-litert, numpy), created on
# first use under bench/peers/.venv from the package index with pip.
# INTQ_PEERS_PYTHON=python3 skips the venv and uses an interpreter that already has them;
# INTQ_BIN=path skips the release build of intq.
# Usage: bench/peers/run_models.sh [models.py options]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
py="$(peers_python "$here/.venv" "ai_edge_litert, numpy" numpy ai-edge-litert)"
intq="$(intq_bin "$here/../..")"
exec "$py" "$here/models.py" --intq "$intq" "$@"
