#!/usr/bin/env bash
# Step time of small-cnn (or MODEL=tiny-mobilenet) on Fashion-MNIST at batch 128, float and QAT
# (int8, per-channel weights, the closest to PyTorch's x86 QAT qconfig): `intq train`/`intq qat`
# with --shards 1 and 2, interleaved with PyTorch eager on 2 threads (torch_small_cnn.py), ROUNDS
# times with the order of the intq variants rotating, so that all ratios come from the same
# stretch of (shared) load.
# Prints every measurement, then the median per variant and the ratios.
# Usage (repository root, after `cargo build --release -p intq-cli` and
# `intq data fetch fashion-mnist`):
#   [MODEL=tiny-mobilenet] PYTHON=/path/to/python-with-torch \
#     crates/intq-train/bench/dp_bench.sh [ROUNDS] [STEPS]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python3}"
intq="${INTQ:-target/release/intq}"
rounds="${1:-3}"
steps="${2:-10}"
model="${MODEL:-small-cnn}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
log="$tmp/log"
common=(--data fashion-mnist --batch-size 128 --quiet --log-every 0 --limit-test 1)
# A float checkpoint for `intq qat --from` (one step, written by --ckpt-every).
"$intq" train "${common[@]}" --model "$model" --max-steps 1 --ckpt-every 1 --out "$tmp/f.ckpt" >/dev/null
run() { # kind shards
  local out
  if [ "$1" = float ]; then
    out=$("$intq" train "${common[@]}" --model "$model" --shards "$2" --max-steps "$((steps + 1))" --out "$tmp/b.ckpt")
  else
    out=$("$intq" qat "${common[@]}" --from "$tmp/f.ckpt" --scheme int8 --per-channel \
      --shards "$2" --max-steps "$((steps + 1))" --out "$tmp/b.ckpt")
  fi
  echo "intq-$1-shards$2 $(grep -o 'median [0-9.]* ms/step' <<<"$out" | awk '{print $2}')" | tee -a "$log"
}
variants=("float 1" "float 2" "qat 1" "qat 2")
for r in $(seq 0 $((rounds - 1))); do
  "$py" "$here/torch_small_cnn.py" --model "$model" --threads 2 --steps "$((steps * 2))" |
    awk '{print "torch-" $5 " " $6}' | sed 's/:/ /; s/  */ /g' | tee -a "$log"
  for i in 0 1 2 3; do
    run ${variants[$(((i + r) % 4))]}
  done
done
echo "== medians over rounds (ms/step)"
awk '{v[$1]=v[$1] " " $2} END {for (k in v) print k, v[k]}' "$log" | while read -r k vals; do
  med=$(tr ' ' '\n' <<<"$vals" | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "$k $med"
done | sort | tee "$tmp/med"
m() { awk -v k="$1" '$1==k {print $2}' "$tmp/med"; }
for kind in float qat; do
  awk -v a="$(m intq-$kind-shards1)" -v b="$(m intq-$kind-shards2)" -v t="$(m torch-$kind)" -v k=$kind \
    'BEGIN {printf "%s: shards2/shards1 %.2f, intq/torch shards1 %.2f, shards2 %.2f\n", k, b/a, a/t, b/t}'
done
