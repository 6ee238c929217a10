#!/usr/bin/env bash
# Makes int8 models of today's edge architectures with TensorFlow's own converter (make.py:
# Keras's MobileNetV3-Small, an EfficientNet-Lite-style network, a DeepLab-style segmenter and
# an SSD-style detector ending in TFLite_Detection_PostProcess, random seeded weights), compares
# every op output of each with TensorFlow Lite's reference kernels byte for byte through
# tools/tflite-check (--strict: an op intq lacks is a failure), and stores the golden fixtures
# that `cargo test -p intq-tflite` checks without Python:
#   tools/tflite-models/make.sh [--seeds N] [--no-save]
# Environment: VENV (default tools/tflite-models/.venv: tensorflow-cpu, ai-edge-litert, numpy),
# INTQ as for tools/tflite-check/check.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VENV:-$here/.venv}"
seeds=3
save=1
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds="$2"; shift 2 ;;
        --no-save) save=0; shift ;;
        *) echo "usage: $0 [--seeds N] [--no-save]" >&2; exit 2 ;;
    esac
done
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet tensorflow-cpu ai-edge-litert==2.3.0 numpy
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" "$here/make.py" "$work" 2>/dev/null
status=0
# Each architecture is saved once (the other edge variant checks the same ops), the detector
# once per NMS kind; all are compared.
for model in "$work"/*.tflite; do
    name="$(basename "$model" .tflite)"
    args=("$model" --seeds "$seeds" --strict)
    case "$name" in
        mobilenet_v3_small_int8 | efficientnet_lite_style_float | deeplab_style_int8 | \
            ssd_style_int8 | ssd_style_int8_regular_nms)
            if [ "$save" = 1 ]; then
                args+=(--save "$root/crates/intq-tflite/tests/fixtures/converter_$name")
            fi ;;
    esac
    VENV="$venv" "$root/tools/tflite-check/check.sh" "${args[@]}" || status=1
done
exit $status
