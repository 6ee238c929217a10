#!/usr/bin/env bash
# Converts the ONNX fixtures the QAT network takes (one epoch of `intq qat --from` on seeded
# pictures, `intq convert` to raw pixels in), exports each integer model with
# `intq export --tflite`, runs it in TensorFlow Lite's reference kernels (BUILTIN_REF) through
# tools/tflite-check (every op output compared with intq byte for byte) and stores the golden
# fixtures (model, inputs, outputs, a CRC-32 per tensor) that
# `cargo test -p intq-cli --test onnx_cli` checks without Python:
#   tools/onnx-fixtures/tflite_check.sh [--seeds N] [--no-save] [--only NAME]
# Environment: VENV (a venv with ai-edge-litert and numpy; default bench/peers/.venv) and INTQ
# (an intq binary; default: a release build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export VENV="${VENV:-$root/bench/peers/.venv}"
seeds=2
save=1
only=
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds="$2"; shift 2 ;;
        --no-save) save=0; shift ;;
        --only) only="$2"; shift 2 ;;
        *) echo "usage: $0 [--seeds N] [--no-save] [--only NAME]" >&2; exit 2 ;;
    esac
done
if [ -z "${INTQ:-}" ]; then
    (cd "$root" && cargo build --release --quiet -p intq-cli)
    INTQ="$root/target/release/intq"
fi
export INTQ
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# 32 training and 8 test pictures, RGB 32x32, a seeded pattern (Keras .npz layout).
"$VENV/bin/python" - "$work/rgb.npz" <<'PY'
import sys
import numpy as np
rng = np.random.default_rng(20261206)
x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
y = (np.arange(40) % 10).astype(np.uint8)
np.savez(sys.argv[1], x_train=x[:32], y_train=y[:32], x_test=x[32:], y_test=y[32:])
PY
fixtures="$root/crates/intq-onnx/tests/fixtures"
status=0
# mobilenetv2_tiny's, resize_qat's and resize_linear_qat's Concats requantize their inputs,
# which TFLite's int8 CONCATENATION cannot: they are checked as uint8. dilated_qat's AveragePool pads 1 on every
# side, which TFLite's pools (SAME or VALID) cannot express: its export is refused.
for spec in resnet_tiny:uint8 resnet_tiny:int8 mobilenetv2_tiny:uint8 grouped_qat:int8 \
    hardswish_qat:int8 sigmoid_qat:int8 se_qat:int8 mobilenetv3_tiny:int8 \
    preprocess_qat:int8 act_qat:int8 resize_qat:uint8 nhwc_qat:int8 prelu_qat:int8 \
    pool_ceil_qat:int8 decoder_qat:int8 decoder_qat:uint8 keras_cnn:int8 hsigmoid_se_qat:int8 \
    hsigmoid_se_qat:uint8 maxmin_qat:int8 maxmin_qat:uint8 resize_linear_qat:uint8 \
    convt_pads_qat:int8 convt_pads_qat:uint8; do
    name="${spec%%:*}"
    scheme="${spec##*:}"
    if [ -n "$only" ] && [ "$only" != "$name" ]; then continue; fi
    case "$scheme" in uint8) out="${name}_u8" ;; *) out="${name}_i8" ;; esac
    flags=(--scheme "$scheme")
    if [ "$scheme" = int8 ]; then flags+=(--per-channel); fi
    "$INTQ" qat --from "$fixtures/$name.onnx" --data "$work/rgb.npz" --epochs 1 --batch-size 8 \
        "${flags[@]}" --out "$work/$out.ckpt" >/dev/null
    "$INTQ" convert "$work/$out.ckpt" --out "$work/$out.intq" >/dev/null
    if ! "$INTQ" export "$work/$out.intq" --tflite "$work/$out.tflite" >/dev/null; then
        echo "$out: intq export --tflite refused it"
        status=1
        continue
    fi
    args=("$work/$out.tflite" --seeds "$seeds")
    if [ "$save" = 1 ]; then
        rm -rf "$fixtures/tflite/$out"
        args+=(--save "$fixtures/tflite/$out")
    fi
    "$root/tools/tflite-check/check.sh" "${args[@]}" || status=1
done
exit $status
