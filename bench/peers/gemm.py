#!/usr/bin/env python3
"""Times int8 GEMM in peer runtimes (ONNX Runtime MatMulInteger; PyTorch _int_mm with --torch)
interleaved with `intq bench gemm --json` at the same shapes and thread counts, and prints
intq/peer ratios. Nothing is hard-coded: every number comes from this run.

Usage: gemm.py --intq PATH [--shape M,K,N ...] [--threads 1,2] [--reps 5] [--min-ms 300]
               [--isa amx[,avx512vnni,...]] [--torch] [--json-out FILE]
Run it through run_gemm.sh, which makes the venv with the peers in it.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np


def median_time(fn, min_s):
    fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < 3 or time.perf_counter() - start < min_s:
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def ort_runner(m, k, n, threads):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])
    b = helper.make_tensor_value_info("B", TensorProto.INT8, [k, n])
    y = helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])
    azp = helper.make_tensor("azp", TensorProto.UINT8, [], [119])
    node = helper.make_node("MatMulInteger", ["A", "B", "azp"], ["Y"])
    graph = helper.make_graph([node], "g", [a, b], [y], initializer=[azp])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    A = rng.integers(0, 256, (m, k), dtype=np.uint8)
    B = rng.integers(-128, 128, (k, n), dtype=np.int8)
    feed = {"A": A, "B": B}

    def exact():
        # The timed operands, then the extremes (every u8 x s8 pair 255 * -128), against
        # numpy's int32 (A - 119) @ B.
        for what, a, b in [("random", A, B),
                           ("extremes", np.full_like(A, 255), np.full_like(B, -128))]:
            got = sess.run(None, {"A": a, "B": b})[0]
            want = (a.astype(np.int64) - 119) @ b.astype(np.int64)
            if not np.array_equal(got.astype(np.int64), want):
                return f"NO ({what})"
        return "yes"

    return (lambda: sess.run(None, feed), f"onnxruntime {ort.__version__} MatMulInteger",
            exact)


def torch_runner(m, k, n, threads):
    import torch

    torch.set_num_threads(threads)
    A = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    B = torch.randint(-128, 128, (k, n), dtype=torch.int8)
    torch._int_mm(A, B)

    def exact():
        for what, a, b in [("random", A, B),
                           ("extremes", torch.full_like(A, -128), torch.full_like(B, -128))]:
            want = a.numpy().astype(np.int64) @ b.numpy().astype(np.int64)
            if not np.array_equal(torch._int_mm(a, b).numpy().astype(np.int64), want):
                return f"NO ({what})"
        return "yes"

    return lambda: torch._int_mm(A, B), f"torch {torch.__version__} _int_mm", exact


def intq_run(args, isa, m, k, n, threads):
    cmd = [args.intq, "bench", "gemm", "--m", str(m), "--k", str(k), "--n", str(n),
           "--threads", str(threads), "--json", "--no-reference", "--no-portable",
           "--min-ms", str(args.min_ms)]
    if isa:
        cmd += ["--isa", isa]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--intq", required=True)
    p.add_argument("--shape", action="append", default=[])
    p.add_argument("--threads", default="1")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--min-ms", type=int, default=300)
    p.add_argument("--isa", default=None)
    p.add_argument("--torch", action="store_true")
    p.add_argument("--json-out", default=None)
    args = p.parse_args()
    # One or more tiers, comma-separated; each is timed in turn with the peers in every rep.
    isas = [i for i in (args.isa or "").split(",") if i] or [None]
    shapes = [tuple(int(x) for x in s.split(",")) for s in (args.shape or ["1024,1024,1024"])]
    rows = []
    for (m, k, n) in shapes:
        for threads in [int(t) for t in args.threads.split(",")]:
            peers = [ort_runner(m, k, n, threads)]
            if args.torch:
                peers.append(torch_runner(m, k, n, threads))
            intq_g, peer_g = {}, {name: [] for _, name, _ in peers}
            exact = {name: check() for _, name, check in peers}
            for _ in range(args.reps):
                for isa in isas:
                    r = intq_run(args, isa, m, k, n, threads)
                    intq_g.setdefault(r["isa"], []).append(r["gops"])
                for fn, name, _ in peers:
                    t = median_time(fn, args.min_ms / 1000)
                    peer_g[name].append(2 * m * n * k / t / 1e9)
            for isa, g_isa in intq_g.items():
                gi = statistics.median(g_isa)
                for name, g in peer_g.items():
                    gp = statistics.median(g)
                    rows.append(dict(m=m, k=k, n=n, threads=threads, isa=isa, intq_gops=gi,
                                     peer=name, peer_gops=gp, ratio=gi / gp,
                                     peer_exact=exact[name]))
    print(f"{'M':>6} {'K':>6} {'N':>6} {'thr':>3} {'intq isa':>10} {'intq GOPS':>10} "
          f"{'peer GOPS':>10} {'intq/peer':>9} {'peer exact':>14}  peer")
    for r in rows:
        print(f"{r['m']:>6} {r['k']:>6} {r['n']:>6} {r['threads']:>3} {r['isa']:>10} "
              f"{r['intq_gops']:>10.1f} {r['peer_gops']:>10.1f} {r['ratio']:>9.2f} "
              f"{r['peer_exact']:>14}  {r['peer']}")
    print("(intq: u8/i8 GEMM with the fused requantizing output stage to int8, equal to the "
          "reference; peers: GEMM to int32 only. 'peer exact': the peer's int32 result equals "
          "numpy's on the timed operands and on the extremes (u8 255 x s8 -128; s8 -128 x -128). "
          "Medians of interleaved runs.)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
