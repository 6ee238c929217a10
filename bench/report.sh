#!/usr/bin/env bash
# Measures every number the documentation states and writes them, stamped with the CPU, its ISA
# tiers, the date and the commit, into docs/performance.md and into README.md's results table
# (between the `<!-- report:begin -->` and `<!-- report:end -->` markers).
#
# Usage: bench/report.sh [--quick] [--peers] [--torch PYTHON] [--out DIR]
#   --quick          `quickstart --tiny`, one small model, short timings: checks this script in a
#                    few minutes; its numbers are marked as a smoke run and mean nothing.
#   --peers          also time the same int8 graphs in TensorFlow Lite (XNNPACK) and compare their
#                    output codes (bench/peers/run_models.sh: creates bench/peers/.venv and
#                    installs numpy and ai-edge-litert from PyPI on first use).
#   --torch PYTHON   also time a training step against PyTorch eager
#                    (crates/intq-train/bench/dp_bench.sh) with an interpreter that has torch.
#   --out DIR        write performance.md and README.md into DIR instead of the repository.
# INTQ_BIN=path/to/intq uses that binary instead of `cargo build --release -p intq-cli`.
# Needs python3. Outputs are written to a temporary file and renamed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

quick=0 peers=0 torch_py="" out_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --peers) peers=1 ;;
    --torch) torch_py="${2:?--torch needs the path of a python with torch}"; shift ;;
    --out) out_dir="${2:?--out needs a directory}"; shift ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/report.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
command -v python3 >/dev/null || { echo "bench/report.sh: needs python3" >&2; exit 1; }

log() { echo "== $*" >&2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ -n "${INTQ_BIN:-}" ]; then
  intq="$INTQ_BIN"
else
  log "cargo build --release -p intq-cli"
  cargo build --release --locked -q -p intq-cli
  intq="$root/target/release/intq"
fi
export INTQ_BIN="$intq"

# The stamp: what ran where, before anything loads the machine.
{
  echo "cpu=$(grep -m1 -E '^(model name|Model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
  echo "cores=$(nproc)"
  echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    echo "dirty=1"
  else
    echo "dirty=0"
  fi
  echo "rustc=$(rustc --version 2>/dev/null || echo unknown)"
  echo "intq=$("$intq" --version)"
  echo "isa_env=${INTQ_ISA:-}"
} >"$work/stamp.txt"

log "intq bench isa"
"$intq" bench isa >"$work/isa.txt"

if [ "$quick" = 1 ]; then
  qs_args=(--tiny) models=(small-cnn) iters=(--iters 3) gemm=256 gemm_ms=50 gemm_large=
  peer_args=(--model small-cnn --batch 1 --threads 1 --reps 1 --min-ms 50)
  ref_args=(--model small-cnn --batch 1 --threads 1 --reps 1 --min-ms 50)
  dp_args=(1 2)
  capi_args=(small-cnn)
else
  qs_args=() models=(resnet20 mobilenet-v2 resnet18) iters=() gemm=1024 gemm_ms=1000
  gemm_large=2048
  peer_args=(--model resnet20 --model mobilenet-v2 --model resnet18 --batch 1,32 --threads 1,2)
  # TFLite's reference kernels are slow: one small model, for the output codes.
  ref_args=(--model resnet20 --batch 1 --threads 1 --reps 1)
  dp_args=(3 10)
  capi_args=(--deploy resnet20 mobilenet-v2)
fi

log "intq quickstart --json ${qs_args[*]}"
"$intq" quickstart --json "${qs_args[@]}" --dir "$work/quickstart" >"$work/quickstart.out"
tail -n 1 "$work/quickstart.out" >"$work/quickstart.json"

for m in "${models[@]}"; do
  log "intq bench model --model $m --batch 1 --threads 1 --f32"
  "$intq" bench model --model "$m" --batch 1 --threads 1 --f32 --json "${iters[@]}" |
    tail -n 1 >"$work/model-$m.json"
done

log "intq bench gemm ${gemm}^3, 1 thread"
"$intq" bench gemm --m "$gemm" --k "$gemm" --n "$gemm" --threads 1 --no-reference \
  --min-ms "$gemm_ms" --json | tail -n 1 >"$work/gemm.json"
if [ -n "$gemm_large" ]; then
  log "intq bench gemm ${gemm_large}^3, 1 thread"
  "$intq" bench gemm --m "$gemm_large" --k "$gemm_large" --n "$gemm_large" --threads 1 \
    --no-reference --no-portable --min-ms "$gemm_ms" --json | tail -n 1 >"$work/gemm-large.json"
fi

log "bench/capi_startup.sh ${capi_args[*]}"
bench/capi_startup.sh "$work/capi.json" "${capi_args[@]}"

if [ "$peers" = 1 ]; then
  log "bench/peers/run_models.sh ${peer_args[*]}"
  bench/peers/run_models.sh "${peer_args[@]}" --json-out "$work/peers.json" >"$work/peers.txt"
  log "bench/peers/run_models.sh ${ref_args[*]} --resolvers ref"
  bench/peers/run_models.sh "${ref_args[@]}" --resolvers ref --json-out "$work/peers-ref.json" \
    >"$work/peers-ref.txt"
fi

if [ -n "$torch_py" ]; then
  log "crates/intq-train/bench/dp_bench.sh ${dp_args[*]} (PyTorch: $torch_py)"
  PYTHON="$torch_py" INTQ="$intq" crates/intq-train/bench/dp_bench.sh "${dp_args[@]}" \
    >"$work/dp.txt"
fi

readme_in="$root/README.md"
if [ -n "$out_dir" ]; then
  mkdir -p "$out_dir"
  perf_out="$out_dir/performance.md" readme_out="$out_dir/README.md"
else
  perf_out="$root/docs/performance.md" readme_out="$root/README.md"
fi

QUICK="$quick" WORK="$work" README_IN="$readme_in" README_OUT="$readme_out" PERF_OUT="$perf_out" \
  python3 - <<'PY'
import json, os, re, statistics

work, quick = os.environ["WORK"], os.environ["QUICK"] == "1"


def read(name):
    p = os.path.join(work, name)
    return open(p).read() if os.path.exists(p) else None


def load_json(name):
    text = read(name)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"bench/report.sh: {name} is not the JSON expected ({e}): {text[:200]!r}")


stamp = dict(l.split("=", 1) for l in read("stamp.txt").splitlines() if "=" in l)
isa = {}
for line in read("isa.txt").splitlines():
    if ":" in line:
        k, v = line.split(":", 1)
        isa[k.strip()] = v.strip()
qs = load_json("quickstart.json")
for key in ("float_acc", "ptq_acc", "fq_acc", "int8_acc", "top1_mismatch", "max_lsb_diff",
            "test_images"):
    if key not in qs:
        raise SystemExit(f"bench/report.sh: quickstart --json has no '{key}'")
models = {}
for f in sorted(os.listdir(work)):
    if f.startswith("model-") and f.endswith(".json"):
        models[f[6:-5]] = load_json(f)
gemm = load_json("gemm.json")
gemm_large = load_json("gemm-large.json")
capi = load_json("capi.json")
peers = load_json("peers.json")
if peers is not None:
    peers += load_json("peers-ref.json") or []
dp = read("dp.txt")


def pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


def num(x, d=2):
    return "n/a" if x is None else f"{x:.{d}f}"


def count(n):
    return f"{n:,}"


def secs(s):
    if s is None:
        return "n/a"
    s = round(s)
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


cpu = stamp.get("cpu") or "unknown CPU"
tiers = isa.get("available", "?")
running = isa.get("running", "?")
commit = stamp["commit"] + (" with uncommitted changes" if stamp["dirty"] == "1" else "")
stamp_line = (f"{cpu}, {stamp['cores']} cores (ISA tiers: {tiers}; ran `{running}`), "
              f"{stamp['date']}, commit {commit}")
smoke = ("**Smoke run of `bench/report.sh --quick` (a few hundred images, short timings): these "
         "numbers check the script and mean nothing.**\n\n") if quick else ""

# Peer rows: model -> {(batch, threads): row} for TFLite's XNNPACK resolver.
xnn = {}
for r in peers or []:
    if "xnnpack" in r["peer"]:
        xnn.setdefault(r["model"], {})[(r["batch"], r["threads"])] = r
dp_med, dp_ratio = {}, {}
if dp:
    in_medians = False
    for line in dp.splitlines():
        if line.startswith("== medians"):
            in_medians = True
            continue
        m = re.match(r"(float|qat): shards2/shards1 ([\d.]+), intq/torch shards1 ([\d.]+), "
                     r"shards2 ([\d.]+)", line)
        if m:
            dp_ratio[m.group(1)] = tuple(float(g) for g in m.groups()[1:])
            in_medians = False
        elif in_medians and len(line.split()) == 2:
            k, v = line.split()
            try:
                dp_med[k] = float(v)
            except ValueError:
                pass

n_test = qs["test_images"]
data_name = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}.get(qs.get("data"), qs.get("data"))
what = f"{qs.get('model', 'small-cnn')} on {data_name}, {qs.get('scheme', '?')} scheme"

# ---- README table: accuracy, fidelity, and speed as intq/peer ratios ----
rows = [
    ("float accuracy", pct(qs["float_acc"])),
    ("PTQ int8 accuracy (min/max calibration)", pct(qs["ptq_acc"])),
    ("QAT fake-quant accuracy", pct(qs["fq_acc"])),
    ("QAT int8 accuracy (integer engine)", pct(qs["int8_acc"])),
    ("fake-quant ↔ int8 top-1 mismatches", f"{count(qs['top1_mismatch'])} of {count(n_test)}"),
    ("fake-quant ↔ int8 max logit difference", f"{qs['max_lsb_diff']} LSB"),
    ("quickstart wall time", secs((qs.get("seconds") or {}).get("total"))),
]
for m, js in models.items():
    for (b, t) in [(1, 1), (1, 2)]:
        r = xnn.get(m, {}).get((b, t))
        if r:
            rows.append((f"{m} latency, intq / TFLite-XNNPACK (batch {b}, {t} thread{'s' * (t > 1)})",
                         num(r["ratio"])))
    if not xnn.get(m) and peers is None:
        rows.append((f"{m} latency, intq / TFLite-XNNPACK", "not measured (`--peers`)"))
    if js.get("f32_ms_median"):
        rows.append((f"{m} latency, int8 / intq's own f32 executor (batch 1, 1 thread)",
                     num(js["ms_median"] / js["f32_ms_median"])))
for r in peers or []:
    if r["peer"].endswith(" ref"):
        rows.append((f"{r['model']} output codes, intq vs TFLite's reference kernels "
                     f"(batch {r['batch']})", r["outputs"]))
if dp_ratio:
    rows.append(("training step, intq / PyTorch eager (float, 2 shards)", num(dp_ratio["float"][2])))
    rows.append(("training step, intq / PyTorch eager (QAT, 2 shards)", num(dp_ratio["qat"][2])))
else:
    rows.append(("training step, intq / PyTorch eager", "not measured (`--torch PYTHON`)"))

table = [f"{smoke}| {what}, {count(n_test)} test images | result |", "|---|---|"]
table += [f"| {k} | {v} |" for k, v in rows]
table.append("")
table.append(f"Measured by `bench/report.sh{' --quick' if quick else ''}"
             f"{' --peers' if peers is not None else ''}{' --torch …' if dp else ''}` on "
             f"{stamp_line}. Ratios below 1 mean intq is faster. Every number, with how it was "
             "measured: [docs/performance.md](docs/performance.md).")
block = "\n".join(table)

readme = open(os.environ["README_IN"]).read()
begin, end = "<!-- report:begin -->", "<!-- report:end -->"
if readme.count(begin) != 1 or readme.count(end) != 1 or readme.index(begin) > readme.index(end):
    raise SystemExit(f"bench/report.sh: {os.environ['README_IN']} needs exactly one "
                     f"'{begin}' ... '{end}' pair")
head, rest = readme.split(begin)
_, tail = rest.split(end)
readme = f"{head}{begin}\n{block}\n{end}{tail}"

# ---- docs/performance.md: every measured number ----
p = []
p.append("# Performance and accuracy, measured\n")
p.append("<!-- Written by bench/report.sh; edit the script, not this file. -->\n")
p.append(smoke.rstrip("\n") + ("\n" if smoke else ""))
p.append("| | |\n|---|---|")
p.append(f"| CPU | {cpu}, {stamp['cores']} cores |")
p.append(f"| ISA tiers | available: {tiers}; not on this CPU: {isa.get('not on this CPU', 'none')}; "
         f"ran: `{running}`{' (INTQ_ISA=' + stamp['isa_env'] + ')' if stamp['isa_env'] else ''} |")
peaks = [(k.split(" peak")[0], v.split(" GOPS")[0]) for k, v in isa.items() if " peak (" in k]
if peaks:
    p.append("| multiply peaks, one core (`intq bench isa`: the tier's multiply instruction on "
             "registers alone) | " + "; ".join(f"{t}: {v} GOPS" for t, v in peaks) + " |")
p.append(f"| load average at start | {stamp['loadavg']} |")
p.append(f"| date | {stamp['date']} |")
p.append(f"| commit | {stamp['commit']}{' (working tree had uncommitted changes)' if stamp['dirty'] == '1' else ''} |")
p.append(f"| toolchain | {stamp['rustc']}; {stamp['intq']} |")
p.append("")
p.append("Reproduce: `bench/report.sh` (add `--peers` for TensorFlow Lite, `--torch PYTHON` for "
         "PyTorch). Timings move with the machine's load; compare ratios from one run, not "
         "numbers across runs.\n")

p.append("## Accuracy and fidelity: `intq quickstart`\n")
p.append(f"`intq quickstart{' --tiny' if quick else ''}`: {what}, {qs.get('ranges', 'ema')} "
         f"activation ranges; float training on {count(qs.get('train_images', 0))} images "
         f"({qs.get('float_epochs', '?')} epoch(s)), QAT on {count(qs.get('qat_images', 0))} "
         f"({qs.get('qat_epochs', '?')} epoch(s)), evaluated on {count(n_test)} test images.\n")
p.append("| measure | value |\n|---|---|")
p.append(f"| float | {pct(qs['float_acc'])} |")
p.append(f"| PTQ int8 (min/max) | {pct(qs['ptq_acc'])} |")
p.append(f"| QAT network with quantization off | {pct(qs.get('qat_float_acc'))} |")
p.append(f"| QAT fake-quant (exact evaluation) | {pct(qs['fq_acc'])} |")
p.append(f"| QAT int8 (integer engine) | {pct(qs['int8_acc'])} |")
p.append(f"| fake-quant ↔ int8 top-1 mismatches | {count(qs['top1_mismatch'])} of {count(n_test)} |")
p.append(f"| fake-quant ↔ int8 max logit difference | {qs['max_lsb_diff']} LSB |")
cmp_ = qs.get("comparison") or {}
if "f32_top1_mismatch" in cmp_:
    p.append(f"| same, fake-quant in f32 as training computes it | "
             f"top-1 mismatches: {count(cmp_['f32_top1_mismatch'])} of {count(n_test)}, "
             f"max {cmp_.get('f32_max_lsb_diff')} LSB |")
if qs.get("intq_bytes"):
    p.append(f"| model size: `.intq` file / f32 weights | {count(qs['intq_bytes'])} / "
             f"{count(qs.get('f32_weight_bytes', 0))} bytes |")
if qs.get("int8_ms_per_image"):
    p.append(f"| engine time per image: int8 / f32 | {num(qs['int8_ms_per_image'], 3)} / "
             f"{num(qs.get('f32_ms_per_image'), 3)} ms |")
s = qs.get("seconds") or {}
if s:
    p.append(f"| wall time | {secs(s.get('total'))} (float {secs(s.get('float'))}, PTQ "
             f"{secs(s.get('ptq'))}, QAT {secs(s.get('qat'))}, convert {num(s.get('convert'), 1)} s, "
             f"evaluation {secs(s.get('eval'))}) |")
p.append("")
p.append("The exact evaluation runs the fake-quant network in f64 on the real values of its codes "
         "(docs/fidelity.md); the f32 row is training's own forward pass.\n")

p.append("## Inference: int8 against intq's own f32 executor\n")
p.append("`intq bench model --model M --batch 1 --threads 1 --f32`: the zoo architecture with "
         "random weights, exported as a trained model is (int8 scheme), timed on the integer "
         "executor and on the f32 executor (single-threaded sgemm) of the same graph, "
         "interleaved call by call.\n")
p.append("| model | tier | int8 ms | f32 ms | int8 / f32 | int8 GOPS |\n|---|---|---|---|---|---|")
for m, js in models.items():
    f32 = js.get("f32_ms_median")
    p.append(f"| {m} | {js.get('isa', '?')} | {num(js.get('ms_median'), 3)} | {num(f32, 3)} | "
             f"{num(js['ms_median'] / f32) if f32 else 'n/a'} | {num(js.get('gops'), 1)} |")
p.append("")
for g in (gemm, gemm_large):
    if not g:
        continue
    peak = g.get("amx_peak_gops")
    p.append(f"GEMM {g['m']}×{g['k']}×{g['n']} ({g['dtype']}, fused requantizing "
             f"output stage), `intq bench gemm`, 1 thread: {num(g['gops'], 1)} GOPS on "
             f"`{g['isa']}`"
             + (f", {num(g['speedup_vs_portable'], 1)}× the portable tier in the same run"
                if g.get("speedup_vs_portable") else "")
             + (f"; {pct(g['share_of_amx_peak'])} of the AMX peak measured after it "
                f"({num(peak, 0)} GOPS: `tdpbusd` on tile registers, one core)" if peak else "")
             + ".\n")

p.append("## Deployment: libintq\n")
if capi:
    p.append("`bench/capi_startup.sh`: the C library's size after `strip`, and the start-up of a "
             "C program (`crates/intq-capi/examples/run_model.c`, linked statically, one thread) "
             "on a saved zoo model: `intq_model_load` (read, validate, plan, pack the weights) "
             "plus the first `intq_model_run`, the median of "
             f"{next(iter(capi['startup'].values()), {}).get('processes', '?')} processes.\n")
    p.append("| measure | value |\n|---|---|")
    for profile, b in capi["stripped_bytes"].items():
        p.append(f"| libintq.so stripped, `{profile}` profile | {count(b)} bytes "
                 f"({num(b / 2**20, 1)} MiB) |")
    for m, st in capi["startup"].items():
        p.append(f"| {m} start-up: load, first run (together) | {num(st['load_ms'], 2)} ms, "
                 f"{num(st['first_run_ms'], 2)} ms ({num(st['total_ms'], 2)} ms) |")
    p.append("")

p.append("## Inference: against TensorFlow Lite\n")
if peers:
    p.append("`bench/peers/run_models.sh`: the same int8 graph exported with `intq export "
             "--tflite`, timed in TensorFlow Lite (`ai-edge-litert`) interleaved with "
             "`intq bench model --load`; medians of the interleaved runs, latency per call for the "
             "whole batch. *outputs vs intq*: the peer's output codes against `intq run` on the "
             "same `.tflite` file and input.\n")
    p.append("| model | batch | threads | intq tier | intq ms | peer | peer ms | intq / peer | "
             "outputs vs intq |\n|---|---|---|---|---|---|---|---|---|")
    for r in peers:
        p.append(f"| {r['model']} | {r['batch']} | {r['threads']} | {r['isa']} | "
                 f"{num(r['intq_ms'], 3)} | {r['peer']} | {num(r['peer_ms'], 3)} | "
                 f"{num(r['ratio'])} | {r['outputs']} |")
    p.append("")
else:
    p.append("Not measured in this run (`bench/report.sh --peers`).\n")

p.append("## Training: against PyTorch eager\n")
if dp_ratio:
    p.append("`crates/intq-train/bench/dp_bench.sh`: median ms per step at batch 128 on "
             "Fashion-MNIST, small-cnn; QAT with int8 per-channel weights (PyTorch: its x86 "
             "QAT qconfig); intq with 1 and 2 shards, PyTorch eager on 2 threads, interleaved.\n")
    p.append("| | float | QAT |\n|---|---|---|")
    for label, key in [("intq, 1 shard (ms)", "shards1"), ("intq, 2 shards (ms)", "shards2")]:
        p.append(f"| {label} | {num(dp_med.get('intq-float-' + key), 1)} | "
                 f"{num(dp_med.get('intq-qat-' + key), 1)} |")
    p.append(f"| PyTorch eager (ms) | {num(dp_med.get('torch-float'), 1)} | "
             f"{num(dp_med.get('torch-qat'), 1)} |")
    p.append(f"| intq / PyTorch, 1 shard | {num(dp_ratio['float'][1])} | {num(dp_ratio['qat'][1])} |")
    p.append(f"| intq / PyTorch, 2 shards | {num(dp_ratio['float'][2])} | {num(dp_ratio['qat'][2])} |")
    p.append(f"| 2 shards / 1 shard | {num(dp_ratio['float'][0])} | {num(dp_ratio['qat'][0])} |")
    p.append("")
else:
    p.append("Not measured in this run (`bench/report.sh --torch PYTHON`, with a Python that "
             "has torch).\n")
perf = "\n".join(p).rstrip("\n") + "\n"


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    print(f"wrote {path}")


write(os.environ["PERF_OUT"], perf)
write(os.environ["README_OUT"], readme)
PY
