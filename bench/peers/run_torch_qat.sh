#!/usr/bin/env bash
# Runs torch_qat.py (PyTorch eager QAT with intq quickstart's small-cnn and recipe) in a venv
# created on first use under bench/peers/.venv-torch with `pip install torch numpy` (torch is a
# large download: about 1 GB with its CUDA wheels, several GB on disk).
# PYTHON (or INTQ_PEERS_PYTHON)=/path/to/python skips the venv and uses an interpreter that
# already has torch and numpy.
# Usage: bench/peers/run_torch_qat.sh [torch_qat.py options]   (e.g. --data-dir DIR --json-out F)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
py="${PYTHON:-$(peers_python "$here/.venv-torch" "torch, numpy" torch numpy)}"
exec "$py" "$here/torch_qat.py" "$@"
