#!/usr/bin/env bash
# Writes intq's elementwise zoo (MUL, SUB, RELU, RELU6, RELU_N1_TO_1, LEAKY_RELU, HARD_SWISH, TANH
# at edge parameters), resize zoo (RESIZE_NEAREST_NEIGHBOR, RESIZE_BILINEAR in every mode),
# layout zoo (PRELU, MAXIMUM, MINIMUM, TRANSPOSE, SLICE, STRIDED_SLICE), spatial zoo
# (TRANSPOSE_CONV, SPACE_TO_BATCH_ND, BATCH_TO_SPACE_ND, DEPTH_TO_SPACE) and the detector zoo
# (TFLite_Detection_PostProcess, fast and regular NMS), the reduce zoo (GATHER, REDUCE_MAX,
# ARG_MAX, L2_NORMALIZATION) and the sum zoo (SUM; int8 against TFLite's default kernel), in
# uint8 and int8, as .tflite
# (and SPLIT / SPLIT_V models written directly, which intq imports as Slices) with intq's exporter, runs each in TFLite's
# reference kernels (BUILTIN_REF) through tools/tflite-check, which compares every op output with
# intq byte for byte, and stores the golden fixtures (inputs, outputs, a CRC-32 per tensor) that
# `cargo test -p intq-tflite` checks without Python:
#   tools/tflite-ops/make_fixtures.sh [--seeds N] [--no-save]
# Environment: VENV and INTQ as for tools/tflite-check/check.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
seeds=2
save=1
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds="$2"; shift 2 ;;
        --no-save) save=0; shift ;;
        *) echo "usage: $0 [--seeds N] [--no-save]" >&2; exit 2 ;;
    esac
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$root" && cargo run --release --quiet -p intq-tflite --example make_models -- "$work" >/dev/null)
status=0
for name in elementwise_u8 elementwise_i8 resize_u8 resize_i8 layout_u8 layout_i8 split_u8 split_i8 \
    spatial_u8 spatial_i8 \
    reduce_u8 reduce_i8 sum_u8 sum_i8 \
    detector_u8 detector_i8; do
    n="$seeds"
    # The post-process's ties and overlaps vary with the picture: more seeds.
    case "$name" in detector_*) n=$((seeds > 4 ? seeds : 4)) ;; esac
    args=("$work/$name.tflite" --seeds "$n")
    # TFLite's reference int8 SUM reads the codes as uint8; its default kernel does not.
    case "$name" in sum_i8) args+=(--resolver builtin) ;; esac
    if [ "$save" = 1 ]; then
        args+=(--save "$root/crates/intq-tflite/tests/fixtures/$name")
    fi
    "$root/tools/tflite-check/check.sh" "${args[@]}" || status=1
done
exit $status
