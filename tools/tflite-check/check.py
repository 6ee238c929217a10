"""Compares intq with TensorFlow Lite's reference kernels (BUILTIN_REF op resolver), byte for
byte, on every op output of a .tflite model (graph outputs and intermediates), over fixed-seed
inputs. Run it through check.sh, which sets up the venv.

With --save DIR it also writes a golden fixture for intq's tests: per seed, the inputs and
TFLite's graph outputs as .npy, and (fixture.tsv) the CRC-32 of every op output TFLite computed,
intermediates included, plus the model itself copied next to them.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from ai_edge_litert import interpreter as litert


RESOLVERS = {
    "ref": litert.OpResolverType.BUILTIN_REF,
    # TFLite's default kernels, for ops whose reference kernel TFLite itself gets wrong.
    "builtin": litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
}


def make_interpreter(path, resolver="ref"):
    return litert.Interpreter(
        model_path=path,
        experimental_op_resolver_type=RESOLVERS[resolver],
        experimental_preserve_all_tensors=True,
    )


def float_input_range(interp, index):
    """The real range a float input is quantized into, from the QUANTIZE op that reads it."""
    details = {t["index"]: t for t in interp.get_tensor_details()}
    for op in interp._get_ops_details():
        if op["op_name"] == "QUANTIZE" and index in list(op["inputs"]):
            out = details[op["outputs"][0]]
            scale, zp = out["quantization"]
            info = np.iinfo(out["dtype"])
            return scale * (info.min - zp), scale * (info.max - zp)
    return -1.0, 1.0


def make_inputs(interp, seed):
    rng = np.random.default_rng(seed)
    values = []
    for d in interp.get_input_details():
        shape, dtype = tuple(d["shape"]), d["dtype"]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            v = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        else:
            # Slightly past the quantized range so the clamps are exercised too.
            lo, hi = float_input_range(interp, d["index"])
            pad = 0.05 * (hi - lo)
            v = rng.uniform(lo - pad, hi + pad, size=shape).astype(dtype)
        values.append(v)
    return values


def intq_tensor(intq, model, input_paths, name, workdir):
    out = os.path.join(workdir, "out.npy")
    cmd = [intq, "run", model, "--output", out, "--tensor", name]
    for p in input_paths:
        cmd += ["--input", p]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()
    return np.load(out), None


def check_model(args, model):
    interp = make_interpreter(model, args.resolver)
    interp.allocate_tensors()
    details = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    produced = []
    for op in ops:
        for o in op["outputs"]:
            produced.append((o, op["index"], op["op_name"]))
    graph_outputs = {d["index"] for d in interp.get_output_details()}
    name = os.path.basename(model)
    totals = {"tensors": 0, "equal_tensors": 0, "bytes": 0, "equal_bytes": 0,
              "output_bytes": 0, "equal_output_bytes": 0, "skipped": [], "mismatches": []}
    fixture = None
    if args.save:
        os.makedirs(args.save, exist_ok=True)
        shutil.copyfile(model, os.path.join(args.save, name))
        fixture = {"model": name, "seeds": []}
    with tempfile.TemporaryDirectory() as work:
        for seed in range(args.seeds):
            inputs = make_inputs(interp, seed)
            paths = []
            for k, (d, v) in enumerate(zip(interp.get_input_details(), inputs)):
                interp.set_tensor(d["index"], v)
                p = os.path.join(work, f"in{k}.npy")
                np.save(p, v)
                paths.append(p)
            interp.invoke()
            seed_entry = {"seed": seed, "inputs": [], "outputs": [], "crc32": {}}
            if fixture is not None:
                for k, v in enumerate(inputs):
                    f = f"seed{seed}_input{k}.npy"
                    np.save(os.path.join(args.save, f), v)
                    seed_entry["inputs"].append(f)
            for index, op_index, op_name in produced:
                t = details[index]
                expected = interp.get_tensor(index)
                got, err = intq_tensor(args.intq, args.intq_model or model, paths, t["name"], work)
                if got is None:
                    if seed == 0:
                        totals["skipped"].append(f"{t['name']} ({op_name} #{op_index}, "
                                                 f"{expected.dtype}): {err}")
                    continue
                nbytes = expected.nbytes
                eq_bytes = int(np.sum(np.frombuffer(expected.tobytes(), np.uint8)
                                      == np.frombuffer(got.tobytes(), np.uint8))) \
                    if got.dtype == expected.dtype and got.size == expected.size else 0
                totals["tensors"] += 1
                totals["bytes"] += nbytes
                totals["equal_bytes"] += eq_bytes
                if index in graph_outputs:
                    totals["output_bytes"] += nbytes
                    totals["equal_output_bytes"] += eq_bytes
                if eq_bytes == nbytes:
                    totals["equal_tensors"] += 1
                else:
                    diff = ""
                    if got.dtype == expected.dtype and got.size == expected.size:
                        d = np.abs(got.astype(np.float64).ravel() - expected.astype(np.float64).ravel())
                        diff = f", {int(np.sum(d > 0))} of {d.size} elements differ, max |diff| {d.max():g}"
                    else:
                        diff = f", intq gave {got.dtype}{list(got.shape)} vs {expected.dtype}{list(expected.shape)}"
                    totals["mismatches"].append(
                        f"seed {seed}: {t['name']} ({op_name} #{op_index}){diff}")
                if fixture is not None:
                    seed_entry["crc32"][t["name"]] = zlib.crc32(expected.tobytes())
                    if index in graph_outputs:
                        f = f"seed{seed}_output{len(seed_entry['outputs'])}.npy"
                        np.save(os.path.join(args.save, f), expected)
                        seed_entry["outputs"].append({"tensor": t["name"], "file": f})
            if fixture is not None:
                fixture["seeds"].append(seed_entry)
    if fixture is not None:
        # Tab-separated so the Rust test needs no JSON parser; TFLite names hold no tabs.
        with open(os.path.join(args.save, "fixture.tsv"), "w") as f:
            f.write(f"model\t{name}\n")
            for e in fixture["seeds"]:
                f.write(f"seed\t{e['seed']}\n")
                for p in e["inputs"]:
                    f.write(f"input\t{p}\n")
                for o in e["outputs"]:
                    f.write(f"output\t{o['tensor']}\t{o['file']}\n")
                for t, c in e["crc32"].items():
                    f.write(f"crc32\t{t}\t{c:08x}\n")
    ok = totals["equal_bytes"] == totals["bytes"] and totals["bytes"] > 0
    if args.strict and any("does not support" in s for s in totals["skipped"]):
        ok = False
    print(f"{name}: {'OK' if ok else 'MISMATCH'}  seeds={args.seeds}  "
          f"tensors {totals['equal_tensors']}/{totals['tensors']} equal, "
          f"bytes {totals['equal_bytes']}/{totals['bytes']} equal "
          f"(graph outputs {totals['equal_output_bytes']}/{totals['output_bytes']})")
    for s in totals["skipped"]:
        print(f"  not in intq's graph: {s}")
    for m in totals["mismatches"][: args.max_report]:
        print(f"  mismatch: {m}")
    if len(totals["mismatches"]) > args.max_report:
        print(f"  ... {len(totals['mismatches']) - args.max_report} more mismatches")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--intq", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--save", help="write a golden fixture (one model) to this directory")
    ap.add_argument("--max-report", type=int, default=20)
    ap.add_argument("--resolver", choices=sorted(RESOLVERS), default="ref",
                    help="TFLite's kernels to compare with: the reference ones (BUILTIN_REF, the "
                    "default) or its default optimized ones (builtin)")
    ap.add_argument("--strict", action="store_true",
                    help="fail when an op output is missing because intq lacks the op (folded "
                    "shape arithmetic still passes)")
    ap.add_argument("--intq-model", help="run this model (e.g. the .intq a .tflite was exported "
                    "from) in intq instead of the .tflite itself; tensors are matched by name")
    args = ap.parse_args()
    if (args.save or args.intq_model) and len(args.models) != 1:
        ap.error("--save and --intq-model take exactly one model")
    ok = all([check_model(args, m) for m in args.models])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
