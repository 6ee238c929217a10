#!/usr/bin/env bash
# Runs onnx_qat.py (torchvision ResNet-18 and MobileNetV3-Small trained in PyTorch, exported to
# ONNX, quantized by `intq ptq|qat --from MODEL.onnx` and by PyTorch eager QAT) with a Python that
# has torch, torchvision, onnx (and, optionally, onnxruntime): PYTHON (or INTQ_PEERS_PYTHON) when
# set, else a venv created on first use under bench/peers/.venv-torch with `pip install torch
# torchvision onnx onnxruntime numpy` (torch is a large download). INTQ_BIN=path/to/intq skips
# building intq. The Fashion-MNIST IDX files come from `intq data fetch fashion-mnist`.
# Usage: bench/peers/run_onnx_qat.sh [onnx_qat.py options]   (e.g. --train-images 4000 --json-out F)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
. "$here/env.sh"
py="${PYTHON:-$(peers_python "$here/.venv-torch" "torch, torchvision, onnx, numpy" \
  torch torchvision onnx onnxruntime numpy)}"
bin="$(intq_bin "$root")"
"$bin" data fetch fashion-mnist >&2
exec "$py" "$here/onnx_qat.py" --intq "$bin" "$@"
