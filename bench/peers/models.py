#!/usr/bin/env python3
"""Times whole zoo models in TensorFlow Lite (ai-edge-litert) interleaved with
`intq bench model --json` on the very same int8 graph, and prints latency ratios intq/peer.

For each model and batch, `intq bench model --save` builds the graph once (the QAT network with a
fixed seed, calibrated on random images, exported as a trained model would be) and
`intq export --tflite` writes it as a .tflite file (from the `--save-tflite-ready` copy, whose
explicit paddings are SAME or Pad + VALID, which TFLite has; intq checks both compute the same); then, `--reps` times, intq and each TFLite
resolver run it in turn at each thread count. Ratios are medians of those interleaved runs.
Nothing is hard-coded: every number comes from this run. `--tflite FILE` times a .tflite file
someone else wrote the same way (intq on its `intq import`ed copy, the peers on the file).

Usage: models.py --intq PATH [--model resnet20 ...] [--batch 1,32] [--threads 1,2] [--reps 3]
                 [--min-ms 500] [--isa avx2[,amx,...]] [--resolvers xnnpack,builtin,ref]
                 [--scheme int8] [--json-out FILE] [--workdir DIR] [--tflite FILE ...]
Run it through run_models.sh, which makes the venv with the peers in it.
Resolvers: xnnpack = TFLite's default (XNNPACK delegate), builtin = TFLite's own optimized
kernels without the delegate, ref = TFLite's reference kernels (slow; small models only).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def median_time(fn, min_s):
    fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < 5 or time.perf_counter() - start < min_s:
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


RESOLVERS = {
    "xnnpack": "AUTO",
    "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
    "ref": "BUILTIN_REF",
}


def tflite_runner(path, threads, resolver):
    import ai_edge_litert
    from ai_edge_litert import interpreter as tfl

    kind = getattr(tfl.OpResolverType, RESOLVERS[resolver])
    it = tfl.Interpreter(model_path=path, num_threads=threads,
                         experimental_op_resolver_type=kind)
    it.allocate_tensors()
    # Which kernels really run: a delegate's partitions are listed as DELEGATE nodes after the
    # graph's own ops (those left outside every partition run on TFLite's builtin kernels).
    ops = [d["op_name"] for d in it._get_ops_details()]
    parts = sum(1 for o in ops if "DELEGATE" in o.upper())
    inp = it.get_input_details()[0]
    rng = np.random.default_rng(0)
    if np.issubdtype(inp["dtype"], np.floating):
        x = rng.random(inp["shape"], dtype=np.float32)
    else:
        info = np.iinfo(inp["dtype"])
        x = rng.integers(info.min, info.max + 1, inp["shape"], dtype=inp["dtype"])
    it.set_tensor(inp["index"], x)

    def run():
        it.invoke()

    def outputs():
        it.set_tensor(inp["index"], x)
        it.invoke()
        return x, it.get_tensor(it.get_output_details()[0]["index"]).copy()

    name = f"litert {getattr(ai_edge_litert, '__version__', '?')} {resolver}"
    return run, name, f"{len(ops) - parts} ops, {parts} delegate partitions", outputs


def agreement(args, tflite_path, outputs, work):
    """How the peer's output codes compare with intq's on the same .tflite graph and input:
    'same' when every code is equal, else how many differ and by how much."""
    x, theirs = outputs()
    xin, yout = os.path.join(work, "agree-in.npy"), os.path.join(work, "agree-out.npy")
    np.save(xin, x)
    subprocess.run([args.intq, "run", tflite_path, "-i", xin, "-o", yout], check=True,
                   capture_output=True)
    mine = np.load(yout)
    if mine.shape != theirs.shape:
        return f"shape {mine.shape} vs {theirs.shape}"
    diff = np.abs(mine.astype(np.float64) - theirs.astype(np.float64))
    n = int((diff != 0).sum())
    return "same" if n == 0 else f"{n}/{diff.size} differ (max {diff.max():g})"


def intq(args, *extra, isa=None):
    cmd = [args.intq, "bench", "model", "--json", *extra]
    if isa:
        cmd += ["--isa", isa]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--intq", required=True)
    p.add_argument("--model", action="append", default=[])
    p.add_argument("--batch", default="1")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--min-ms", type=int, default=500)
    p.add_argument("--isa", default=None)
    p.add_argument("--scheme", default="int8")
    p.add_argument("--resolvers", default="xnnpack")
    p.add_argument("--json-out", default=None)
    p.add_argument("--workdir", default=None)
    p.add_argument("--tflite", action="append", default=[],
                   help="also time this .tflite file as it is (imported into intq with "
                   "`intq import`); with only --tflite, no zoo model is built")
    args = p.parse_args()
    # One or more intq tiers, comma-separated; each is timed in turn with the peers in every rep.
    isas = [i for i in (args.isa or "").split(",") if i] or [None]
    models = args.model or ["resnet20", "mobilenet-v2", "resnet18"]
    resolvers = [r for r in args.resolvers.split(",") if r]
    for r in resolvers:
        if r not in RESOLVERS:
            p.error(f"unknown resolver {r!r}; known: {', '.join(RESOLVERS)}")
    work = args.workdir or tempfile.mkdtemp(prefix="intq-peers-")
    os.makedirs(work, exist_ok=True)
    # (name, batch, .intq timed by intq, .tflite timed by the peers)
    jobs = []
    for model in models if not args.tflite or args.model else []:
        for batch in [int(b) for b in args.batch.split(",")]:
            base = os.path.join(work, f"{model}-b{batch}-{args.scheme}")
            intq(args, "--model", model, "--batch", str(batch), "--scheme", args.scheme,
                 "--iters", "1", "--save", base + ".intq",
                 "--save-tflite-ready", base + "-tfl.intq", isa=isas[0])
            subprocess.run([args.intq, "export", base + "-tfl.intq", "--tflite",
                            base + ".tflite"], check=True, capture_output=True)
            jobs.append((model, batch, base + ".intq", base + ".tflite"))
    for path in args.tflite:
        name = os.path.splitext(os.path.basename(path))[0]
        converted = os.path.join(work, name + ".intq")
        subprocess.run([args.intq, "import", path, "--out", converted], check=True,
                       capture_output=True)
        jobs.append((name, 1, converted, path))
    rows, tier_rows = [], []
    for model, batch, intq_path, tflite_path in jobs:
        for threads in [int(t) for t in args.threads.split(",")]:
            peers = [tflite_runner(tflite_path, threads, r) for r in resolvers]
            agree = {name: agreement(args, tflite_path, out, work)
                     for _, name, _, out in peers}
            mine, shares, theirs = {}, {}, {name: [] for _, name, _, _ in peers}
            for _ in range(args.reps):
                for isa in isas:
                    r = intq(args, "--model", model, "--load", intq_path,
                             "--threads", str(threads), "--min-ms", str(args.min_ms),
                             isa=isa)
                    mine.setdefault(r["isa"], []).append(r["ms_median"])
                    if r.get("share_of_peak") is not None:
                        shares.setdefault(r["isa"], []).append(r["share_of_peak"])
                for fn, name, _, _ in peers:
                    theirs[name].append(median_time(fn, args.min_ms / 1000) * 1e3)
            for isa, ms in mine.items():
                mi = statistics.median(ms)
                share = statistics.median(shares[isa]) if isa in shares else None
                tier_rows.append(dict(model=model, batch=batch, threads=threads, isa=isa,
                                      intq_ms=mi, share_of_peak=share))
                for _, name, note, _ in peers:
                    tp = statistics.median(theirs[name])
                    rows.append(dict(model=model, batch=batch, threads=threads, isa=isa,
                                     intq_ms=mi, peer=name, peer_ms=tp, ratio=mi / tp,
                                     peer_note=note, outputs=agree[name]))
                    print(f"  {model} b{batch} t{threads}: intq {isa} {mi:.3f} ms, {name} "
                          f"{tp:.3f} ms ({note}), intq/peer {mi / tp:.2f}", file=sys.stderr)
    print(f"{'model':>14} {'batch':>5} {'thr':>3} {'intq isa':>9} {'intq ms':>9} "
          f"{'peer ms':>9} {'intq/peer':>9}  {'peer':<28} outputs vs intq")
    for r in rows:
        print(f"{r['model']:>14} {r['batch']:>5} {r['threads']:>3} {r['isa']:>9} "
              f"{r['intq_ms']:>9.3f} {r['peer_ms']:>9.3f} {r['ratio']:>9.2f}  {r['peer']:<28} "
              f"{r['outputs']}")
    print("(latency per call for the whole batch; intq/peer < 1 means intq is faster. Medians of "
          f"{args.reps} interleaved runs; both run the same int8 graph. 'outputs vs intq': the "
          "peer's output codes against `intq run` on the same .tflite file and input.)")
    if len({r["isa"] for r in tier_rows}) > 1:
        # Each tier against the first one asked for (e.g. avx512vnni against amx), and its
        # share of its own multiply peak (`intq bench model`'s `share_of_peak`).
        first = tier_rows[0]["isa"]
        print(f"\n{'model':>14} {'batch':>5} {'thr':>3} {'intq isa':>11} {'intq ms':>9} "
              f"{'/ ' + first:>12} {'of peak':>8}")
        for r in tier_rows:
            base = next(t["intq_ms"] for t in tier_rows if t["isa"] == first and
                        (t["model"], t["batch"], t["threads"]) ==
                        (r["model"], r["batch"], r["threads"]))
            share = f"{100 * r['share_of_peak']:.1f}%" if r["share_of_peak"] else "n/a"
            print(f"{r['model']:>14} {r['batch']:>5} {r['threads']:>3} {r['isa']:>11} "
                  f"{r['intq_ms']:>9.3f} {r['intq_ms'] / base:>12.2f} {share:>8}")
        print("('of peak': the model's GOPS over its tier's multiply instruction on registers "
              "alone, one core, times the threads, measured after each run.)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
