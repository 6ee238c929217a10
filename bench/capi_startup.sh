#!/usr/bin/env bash
# libintq as it ships: the stripped size of the shared library (release profile, and with
# --deploy the deploy profile: fat LTO, one codegen unit) and the start-up time through the C API
# (load + first run of a saved zoo model by crates/intq-capi/examples/run_model.c linked against
# the static library, one thread; the median of 5 processes), written as JSON to OUT.
#
# Usage: bench/capi_startup.sh OUT [--deploy] MODEL...   (MODEL: a zoo name, e.g. resnet20)
# Needs cc, strip, python3 and the intq binary ($INTQ_BIN, else target/release/intq).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${1:?usage: bench/capi_startup.sh OUT [--deploy] MODEL...}"
shift
deploy=0
if [ "${1:-}" = --deploy ]; then
  deploy=1
  shift
fi
intq="${INTQ_BIN:-$root/target/release/intq}"
target="${CARGO_TARGET_DIR:-$root/target}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release --locked -q -p intq-capi
strip -o "$work/libintq.so" "$target/release/libintq.so"
echo "release $(stat -c %s "$work/libintq.so")" >"$work/sizes.txt"
if [ "$deploy" = 1 ]; then
  cargo build --profile deploy --locked -q -p intq-capi
  strip -o "$work/libintq-deploy.so" "$target/deploy/libintq.so"
  echo "deploy $(stat -c %s "$work/libintq-deploy.so")" >>"$work/sizes.txt"
fi
cc -std=c11 -O2 -I crates/intq-capi/include crates/intq-capi/examples/run_model.c \
  "$target/release/libintq.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o "$work/run_model"

for m in "$@"; do
  "$intq" bench model --model "$m" --iters 1 --min-ms 0 --save "$work/$m.intq" >/dev/null
  # A fixed-seed input of the model's input shape and type, as .npy.
  "$intq" inspect "$work/$m.intq" | python3 -c '
import random, re, struct, sys
m = re.search(r"^inputs:\n  \x27[^\x27]*\x27 (uint8|int8) \[([\dx]+)\]", sys.stdin.read(), re.M)
dtype, shape = m.group(1), [int(d) for d in m.group(2).split("x")]
n = 1
for d in shape:
    n *= d
header = "{\x27descr\x27: \x27%s\x27, \x27fortran_order\x27: False, \x27shape\x27: (%s), }" % (
    "|u1" if dtype == "uint8" else "|i1", "".join(f"{d}, " for d in shape))
header += " " * (63 - (10 + len(header)) % 64) + "\n"
rng = random.Random(7)
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(bytes(rng.randrange(256) for _ in range(n)))
' "$work/$m.npy"
  for _ in 1 2 3 4 5; do
    "$work/run_model" --threads 1 "$work/$m.intq" "$work/$m.npy" | grep '^load ' >>"$work/startup-$m.txt"
  done
done

python3 - "$work" "$out" "$@" <<'PY'
import json, os, re, statistics, sys
work, out, models = sys.argv[1], sys.argv[2], sys.argv[3:]
sizes = dict(l.split() for l in open(os.path.join(work, "sizes.txt")))
result = {"stripped_bytes": {k: int(v) for k, v in sizes.items()}, "startup": {}}
for m in models:
    runs = [tuple(map(float, re.match(r"load ([\d.]+) ms, first run ([\d.]+) ms", l).groups()))
            for l in open(os.path.join(work, f"startup-{m}.txt"))]
    result["startup"][m] = {
        "load_ms": statistics.median(r[0] for r in runs),
        "first_run_ms": statistics.median(r[1] for r in runs),
        "total_ms": statistics.median(r[0] + r[1] for r in runs),
        "processes": len(runs),
    }
with open(out + ".tmp", "w") as f:
    json.dump(result, f)
os.replace(out + ".tmp", out)
PY
