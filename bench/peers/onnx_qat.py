#!/usr/bin/env python3
"""Bring-your-own-model benchmark: torchvision ResNet-18 and MobileNetV3-Small trained in float
with PyTorch, exported to ONNX, then quantized by intq (`intq ptq --from MODEL.onnx`, `intq qat
--from MODEL.onnx`, `intq convert`, `intq eval --compare --json`) and, for contrast, by PyTorch's
eager-mode QAT (torchvision's quantizable variants, `fuse_model`, `prepare_qat`, `convert`) from
the same float weights. Nothing is hard-coded: every number printed comes from this run.

Data: Fashion-MNIST (the IDX files `intq data fetch fashion-mnist` stores), each 28x28 picture
padded by 2 zero pixels on every side to 32x32 and replicated to 3 channels, the first
--train-images training and the first --test-images test pictures. They are written once as a
Keras-layout `.npz` (x_train, y_train, x_test, y_test; uint8 NHWC) that intq reads with
`--data`, and PyTorch trains on the very same pixels as byte/255 NCHW (no normalization, the
ONNX model takes pixels in [0, 1], as intq feeds it by default).

Models (10 classes, 3x32x32 input): torchvision.models.quantization's ResNet-18 and
MobileNetV3-Small built with quantize=False, i.e. the plain torchvision architectures (the
ImageNet stem unchanged: 7x7 stride-2 conv and max pool, so the last stage is 1x1 at 32x32)
with QuantStub/DeQuantStub and FloatFunctional adds/muls that are identities in float. The float
model is exported with torch.onnx.export (TorchScript exporter, opset 17, BatchNormalization
kept, dynamic batch) and checked against ONNX Runtime when it is installed.

Recipe, the same for both sides: float 1 epoch (--float-epochs), batch 128, SGD momentum 0.9,
weight decay 5e-4, lr 0.05 cosine per step, seed 0, then the BN running statistics re-estimated
over the training pictures (recalibrate_bn: MobileNetV3's BN momentum of 0.01 leaves them near
their initial values after a short run). QAT from the float weights: --qat-epochs
epochs at lr 0.005 cosine, BN statistics frozen from the first step (intq --freeze-bn-after 0,
PyTorch freeze_bn_stats). intq runs --intq-scheme (default int8 per-channel: symmetric int8
weights per output channel, int8 activations); PyTorch runs get_default_qat_qconfig('x86')
(per-channel symmetric qint8 weights, quint8 activations with reduce_range, i.e. [0,127]) on the
x86 engine. intq PTQ: min/max on the first --calib training pictures.

Where intq refuses a model for its HardSigmoid gates, intq runs once more on the ONNX file with
each gate rewritten as ReLU6 (gates_as_relu6, the same function in float), row `intq ReLU6`.

ms/step: intq's from its metrics log (`epoch_seconds` over the epoch's steps; qat is run with
--limit-test 1 so the epoch holds no test pass), PyTorch's from the wall time of its QAT loop.

Usage: onnx_qat.py --intq BIN [--data-dir DIR] [--work DIR] [--models resnet18,mobilenet_v3_small]
                   [--train-images 10000] [--test-images 2000] [--calib 1000]
                   [--float-epochs 1] [--qat-epochs 1] [--threads 2] [--json-out FILE]
Run it through run_onnx_qat.sh, which finds a Python with torch, torchvision and onnx.
"""
import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
import torch.ao.quantization as tq
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_qat import acc, find, outputs, read_idx  # noqa: E402

MODELS = ("resnet18", "mobilenet_v3_small")


def log(m):
    print(m, file=sys.stderr, flush=True)


def load_split(data_dir, prefix, n):
    """The first n pictures of a split, padded to 32x32 and replicated to 3 channels: uint8
    NHWC pixels and int64 labels."""
    x = read_idx(find(data_dir, f"{prefix}-images-idx3-ubyte"), 3)[:n]
    y = read_idx(find(data_dir, f"{prefix}-labels-idx1-ubyte"), 1)[:n]
    if x.shape[0] != y.shape[0] or x.shape[1:] != (28, 28):
        sys.exit(f"error: {data_dir}: {prefix} images {x.shape} do not match labels {y.shape}")
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(x[..., None], 3, axis=3)), y.astype(np.int64)


def to_torch(x_nhwc):
    return torch.from_numpy(x_nhwc.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


def build(name):
    """A torchvision model in its quantizable form (float until prepared), 10 classes."""
    import torchvision.models.quantization as qm

    if name == "resnet18":
        return qm.resnet18(weights=None, quantize=False, num_classes=10)
    if name == "mobilenet_v3_small":
        from torchvision.models.quantization.mobilenetv3 import (
            QuantizableInvertedResidual, QuantizableMobileNetV3, _mobilenet_v3_conf)

        setting, last_channel = _mobilenet_v3_conf("mobilenet_v3_small")
        return QuantizableMobileNetV3(setting, last_channel, num_classes=10,
                                      block=QuantizableInvertedResidual)
    sys.exit(f"error: unknown model {name!r} ({', '.join(MODELS)})")


def train(model, x, y, lr0, batch, seed, what):
    """SGD epochs with a per-step cosine learning rate; returns (seconds, steps)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr0, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    lossf = nn.CrossEntropyLoss()
    model.train()
    steps = math.ceil(x.shape[0] / batch)
    t = time.perf_counter()
    order = torch.randperm(x.shape[0], generator=g)
    for s in range(steps):
        idx = order[s * batch : (s + 1) * batch]
        for pg in opt.param_groups:
            pg["lr"] = lr0 * 0.5 * (1.0 + math.cos(math.pi * s / steps))
        loss = lossf(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (s + 1) % 20 == 0 or s + 1 == steps:
            log(f"    {what} step {s + 1}/{steps} loss {loss.item():.4f} "
                f"({time.perf_counter() - t:.0f}s)")
    return time.perf_counter() - t, steps


def recalibrate_bn(model, x, batch=128):
    """Sets every BatchNorm's running mean and variance to the plain average of its batch
    statistics over the pictures x (train mode, momentum None, no gradient), weights unchanged.
    torchvision's MobileNetV3 keeps BN momentum 0.01, so after a short float run its running
    statistics are still near their initial 0 and 1 and the eval-mode model is at chance."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            model(x[i : i + batch])
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


def export_onnx(model, path):
    x = torch.zeros(1, 3, 32, 32)
    torch.onnx.export(
        model.eval(), (x,), path, dynamo=False, input_names=["input"], output_names=["output"],
        opset_version=17, do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE,
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


def ort_check(path, model, x):
    """Largest |ORT - torch| over the logits of x, or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = s.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = (model.eval() if isinstance(model, nn.Module) else model)(x).numpy()
    return float(np.abs(got - want).max())


def gates_as_relu6(src, dst):
    """Rewrites each squeeze-and-excitation gate Conv -> HardSigmoid -> Mul -> Conv (torchvision's
    MobileNetV3) into Conv' -> Clip[0, 6] -> Mul -> Conv'', exact in float: HardSigmoid(z) =
    clip(a z + b, 0, 1) = relu6(6a z + 6b) / 6, so the gate conv's weights and bias take the 6a
    and 6b, and the 1/6 moves into the weights of the conv reading the product. Returns the count
    of gates rewritten, 0 (no file written) where a gate does not have that shape."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(src)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    readers = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)

    def arr(name):
        return numpy_helper.to_array(inits[name]).astype(np.float32)

    def put(name, v):
        inits[name].CopyFrom(numpy_helper.from_array(v.astype(np.float32), name))

    count = 0
    for n in [n for n in g.node if n.op_type == "HardSigmoid"]:
        conv = prod.get(n.input[0])
        mul = readers.get(n.output[0], [])
        if (conv is None or conv.op_type != "Conv" or len(conv.input) < 3
                or len(readers[n.input[0]]) != 1 or len(mul) != 1 or mul[0].op_type != "Mul"):
            return 0
        nxt = readers.get(mul[0].output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "Conv":
            return 0
        at = {x.name: x.f for x in n.attribute}
        a, b = at.get("alpha", 0.2), at.get("beta", 0.5)
        put(conv.input[1], arr(conv.input[1]) * 6 * a)
        put(conv.input[2], arr(conv.input[2]) * 6 * a + 6 * b)
        put(nxt[0].input[1], arr(nxt[0].input[1]) / 6)
        lo, hi = n.name + "/lo", n.name + "/hi"
        g.initializer.extend([numpy_helper.from_array(np.array(0, np.float32), lo),
                              numpy_helper.from_array(np.array(6, np.float32), hi)])
        at_index = list(g.node).index(n)
        g.node.remove(n)
        g.node.insert(at_index, helper.make_node("Clip", [n.input[0], lo, hi], list(n.output),
                                                 name=n.name + "/relu6"))
        count += 1
    if count:
        onnx.save(m, dst)
    return count


def intq(bin_, *args, capture=True):
    """Runs intq; returns (stdout, seconds). A failure stops with intq's own message."""
    t = time.perf_counter()
    cmd = [bin_, *map(str, args)]
    log("    $ " + " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise IntqError(" ".join(cmd), (r.stderr or r.stdout).strip())
    return r.stdout, dt


class IntqError(Exception):
    def __init__(self, cmd, msg):
        super().__init__(f"{cmd}\n{msg}")
        self.cmd, self.msg = cmd, msg


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON line in intq's output: {text[-500:]!r}")


def intq_f32(a, onnx_path, x, want, work):
    """Largest |intq f32 run of the ONNX file - torch| over the logits of x: the import alone."""
    xin, yout = os.path.join(work, "f32_in.npy"), os.path.join(work, "f32_out.npy")
    np.save(xin, x.numpy())
    intq(a.intq, "run", onnx_path, "-i", xin, "-o", yout)
    return float(np.abs(np.load(yout) - want).max())


def intq_side(a, name, onnx_path, npz, work, x, want):
    """f32 import check, PTQ, QAT, convert and compare in intq; the measures, or an 'error'
    entry naming the stage and intq's message."""
    r = {}
    scheme = ["--scheme", "int8", "--per-channel"] if a.intq_scheme == "int8-pc" else \
        ["--scheme", a.intq_scheme]
    stage = "run (f32)"
    try:
        r["f32_max_abs_diff"] = intq_f32(a, onnx_path, x, want, work)
        stage = "ptq"
        ptq = os.path.join(work, f"{name}.ptq.intq")
        _, r["ptq_s"] = intq(a.intq, "ptq", "--from", onnx_path, "--data", npz, "--calib",
                             a.calib, *scheme, "--out", ptq)
        stage = "eval ptq"
        out, _ = intq(a.intq, "eval", ptq, "--data", npz, "--json")
        r["ptq_int8_acc"] = last_json(out)["int8_acc" if "int8_acc" in out else "accuracy"]
        stage = "qat"
        ckpt = os.path.join(work, f"{name}.qat.ckpt")
        metrics = ckpt + ".metrics.jsonl"
        _, r["qat_wall_s"] = intq(
            a.intq, "qat", "--from", onnx_path, "--data", npz, "--epochs", a.qat_epochs,
            "--lr", 0.005, "--batch-size", 128, "--freeze-bn-after", 0, "--shards", 1,
            "--limit-test", 1, *scheme, "--quiet", "--log-every", 0, "--out", ckpt)
        with open(metrics) as f:
            lines = [json.loads(x) for x in f if x.strip().startswith("{")]
        epochs = [x for x in lines if "epoch_seconds" in x]
        r["qat_steps"] = epochs[-1]["step"]
        r["qat_train_s"] = sum(x["epoch_seconds"] for x in epochs)
        r["qat_ms_per_step"] = 1000 * r["qat_train_s"] / r["qat_steps"]
        stage = "convert"
        model = os.path.join(work, f"{name}.qat.intq")
        intq(a.intq, "convert", ckpt, "--out", model)
        stage = "eval --compare"
        out, r["compare_s"] = intq(a.intq, "eval", model, "--compare", ckpt, "--data", npz,
                                   "--json")
        cmp = last_json(out)
        r["compare"] = cmp
        for k in ("float_acc", "fq_acc", "int8_acc", "top1_mismatch", "max_lsb_diff"):
            r[k] = cmp.get(k)
    except IntqError as e:
        r["error"] = {"stage": stage, "command": e.cmd, "message": e.msg}
        log(f"    intq failed at {stage}:\n{e.msg}")
    return r


def intq_relu6(a, name, onnx_path, npz, x, want):
    """intq on the model whose HardSigmoid gates are rewritten as ReLU6 (gates_as_relu6), or
    an 'error' entry where they cannot be."""
    path = os.path.join(a.work, f"{name}.relu6.onnx")
    n = gates_as_relu6(onnx_path, path)
    if not n:
        return {"error": {"stage": "rewrite", "command": "gates_as_relu6",
                          "message": "a HardSigmoid is not a Conv -> HardSigmoid -> Mul -> Conv "
                                     "gate"}}
    log(f"    {n} HardSigmoid gates rewritten as ReLU6: {path}; |ORT - torch| max "
        f"{ort_check(path, lambda v: torch.from_numpy(want), x)}")
    r = intq_side(a, name + ".relu6", path, npz, a.work, x, want)
    r["gates_rewritten"] = n
    log(f"    intq (gates as ReLU6): "
        f"{json.dumps({k: v for k, v in r.items() if k != 'compare'})}")
    return r


def torch_qat(a, fmodel, xtr, ytr, xte, yte):
    """PyTorch eager QAT (x86 default qconfig) from the float model: fake-quant and int8
    accuracy, fake-quant vs int8 mismatches and the largest output-code difference."""
    torch.backends.quantized.engine = "x86"
    m = copy.deepcopy(fmodel).train()
    m.fuse_model(is_qat=True)
    m.qconfig = tq.get_default_qat_qconfig("x86")
    tq.prepare_qat(m, inplace=True)
    m.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
    secs, steps = 0.0, 0
    for e in range(a.qat_epochs):
        s, n = train(m, xtr, ytr, 0.005, 128, 100 + e, "torch QAT")
        secs, steps = secs + s, steps + n
    m.eval()
    m.apply(tq.disable_observer)
    fq = outputs(m, xte)
    qmodel = tq.convert(copy.deepcopy(m), inplace=False)
    # The int8 logits' grid: the quantized tensor the DeQuantStub reads.
    grid = {}
    h = qmodel.dequant.register_forward_hook(
        lambda mod, inp, out: grid.update(scale=inp[0].q_scale(), zp=inp[0].q_zero_point()))
    q = outputs(qmodel, xte)
    h.remove()
    scale, zp = float(grid["scale"]), int(grid["zp"])
    code = lambda v: torch.clamp(torch.round(v / scale) + zp, 0, 255)  # noqa: E731
    return {
        "qconfig": "get_default_qat_qconfig('x86'), engine x86",
        "fq_acc": acc(fq, yte), "int8_acc": acc(q, yte),
        "top1_mismatch": int((fq.argmax(1) != q.argmax(1)).sum()),
        "max_lsb_diff": int((code(fq) - code(q)).abs().max()),
        "qat_train_s": secs, "qat_steps": steps, "qat_ms_per_step": 1000 * secs / steps,
    }


def pct(v):
    return "-" if v is None else f"{100 * v:.2f}%"


def num(v, fmt="{}"):
    return "-" if v is None else fmt.format(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--intq", required=True, help="the intq binary")
    ap.add_argument("--data-dir", default=os.path.expanduser("~/.cache/intq/data/fashion-mnist"))
    ap.add_argument("--work", default="target/onnx-qat", help="folder for the .npz, models, ckpts")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--train-images", type=int, default=10000)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--calib", type=int, default=1000)
    ap.add_argument("--float-epochs", type=int, default=1)
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--intq-scheme", default="int8-pc", choices=["int8-pc", "int8", "uint8"],
                    help="int8-pc: --scheme int8 --per-channel")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-out")
    a = ap.parse_args()

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(a.threads)
    t_all = time.perf_counter()
    os.makedirs(a.work, exist_ok=True)
    xtr_u8, ytr = load_split(a.data_dir, "train", a.train_images)
    xte_u8, yte = load_split(a.data_dir, "t10k", a.test_images)
    npz = os.path.join(a.work, f"fmnist32x3_{len(ytr)}_{len(yte)}.npz")
    np.savez(npz + ".tmp.npz", x_train=xtr_u8, y_train=ytr.astype(np.uint8), x_test=xte_u8,
             y_test=yte.astype(np.uint8))
    os.replace(npz + ".tmp.npz", npz)
    xtr, xte = to_torch(xtr_u8), to_torch(xte_u8)
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    log(f"data: {npz} ({len(ytr)} train, {len(yte)} test, 3x32x32)")

    import torchvision
    rows = []
    for name in a.models.split(","):
        log(f"{name}:")
        torch.manual_seed(0)
        fmodel = build(name)
        secs, steps = 0.0, 0
        for e in range(a.float_epochs):
            s, n = train(fmodel, xtr, ytr, 0.05, 128, e, "float")
            secs, steps = secs + s, steps + n
        recalibrate_bn(fmodel, xtr)
        float_acc = acc(outputs(fmodel, xte), yte)
        log(f"    float acc {float_acc:.4f}")
        onnx_path = os.path.join(a.work, f"{name}.onnx")
        export_onnx(fmodel, onnx_path)
        ort_diff = ort_check(onnx_path, fmodel, xte[:8])
        log(f"    exported {onnx_path}; |ORT - torch| max {ort_diff}")
        r = {"model": name, "float_acc": float_acc, "float_train_s": secs,
             "float_ms_per_step": 1000 * secs / steps, "onnx": onnx_path,
             "ort_max_abs_diff": ort_diff}
        with torch.no_grad():
            want = fmodel(xte[:8]).numpy()
        r["intq"] = intq_side(a, name, onnx_path, npz, a.work, xte[:8], want)
        log(f"    intq: {json.dumps({k: v for k, v in r['intq'].items() if k != 'compare'})}")
        if "HardSigmoid" in r["intq"].get("error", {}).get("message", ""):
            r["intq_relu6"] = intq_relu6(a, name, onnx_path, npz, xte[:8], want)
        r["torch"] = torch_qat(a, fmodel, xtr, ytr, xte, yte)
        log(f"    torch: {json.dumps(r['torch'])}")
        rows.append(r)

    total_s = time.perf_counter() - t_all
    scheme = {"int8-pc": "int8 per-channel (--scheme int8 --per-channel)",
              "int8": "int8 per-tensor", "uint8": "uint8 (asymmetric uint8 weights)"}[a.intq_scheme]
    print(f"\nONNX models from torchvision {torchvision.__version__} (torch {torch.__version__}), "
          f"Fashion-MNIST padded to 32x32, grey replicated to 3 channels: the first "
          f"{len(ytr)} training and {len(yte)} test pictures; float {a.float_epochs} epoch(s), "
          f"QAT {a.qat_epochs} epoch(s), batch 128; {a.threads} torch threads. "
          f"intq: {scheme}; PyTorch: get_default_qat_qconfig('x86').")
    hdr = (f"{'model':<19} {'side':<10} {'float':>7} {'PTQ int8':>8} {'QAT fq':>7} "
           f"{'QAT int8':>8} {'top1 mism':>9} {'max LSB':>7} {'ms/step':>8}")
    print(hdr)
    for r in rows:
        i, t = r["intq"], r["torch"]
        print(f"{r['model']:<19} {'pytorch':<10} {pct(r['float_acc']):>7} {'':>8} {'':>7} "
              f"{'':>8} {'':>9} {'':>7} {r['float_ms_per_step']:>8.0f}  (float training)")
        print(f"{'':<19} {'intq':<10} {'':>7} "
              f"{pct(i.get('ptq_int8_acc')):>8} {pct(i.get('fq_acc')):>7} "
              f"{pct(i.get('int8_acc')):>8} {num(i.get('top1_mismatch')):>9} "
              f"{num(i.get('max_lsb_diff')):>7} {num(i.get('qat_ms_per_step'), '{:.0f}'):>8}")
        print(f"{'':<19} {'torch QAT':<10} {'':>7} {'':>8} {pct(t['fq_acc']):>7} "
              f"{pct(t['int8_acc']):>8} {t['top1_mismatch']:>9} {t['max_lsb_diff']:>7} "
              f"{t['qat_ms_per_step']:>8.0f}")
        if "error" in i:
            print(f"  intq failed at `{i['error']['stage']}`: {i['error']['message']}")
        if "intq_relu6" in r:
            j = r["intq_relu6"]
            print(f"{'':<19} {'intq ReLU6':<10} {'':>7} "
                  f"{pct(j.get('ptq_int8_acc')):>8} {pct(j.get('fq_acc')):>7} "
                  f"{pct(j.get('int8_acc')):>8} {num(j.get('top1_mismatch')):>9} "
                  f"{num(j.get('max_lsb_diff')):>7} {num(j.get('qat_ms_per_step'), '{:.0f}'):>8}"
                  f"  (HardSigmoid gates rewritten as ReLU6, exact in float)")
            if "error" in j:
                print(f"  intq failed at `{j['error']['stage']}`: {j['error']['message']}")
    print("float: PyTorch's test accuracy of the float model; ms/step: one QAT training step "
          "(batch 128), on the first row one float training step")
    for r in rows:
        i = r["intq"]
        print(f"{r['model']}: ONNX Runtime vs torch max |diff| {num(r['ort_max_abs_diff'], '{:.2e}')}, "
              f"intq f32 run vs torch {num(i.get('f32_max_abs_diff'), '{:.2e}')} (8 test logits); "
              f"intq float accuracy of the QAT checkpoint {pct(i.get('float_acc'))}")
    print(f"total {total_s:.0f}s")
    out = {"torch": torch.__version__, "torchvision": torchvision.__version__,
           "train_images": len(ytr), "test_images": len(yte), "calib": a.calib,
           "float_epochs": a.float_epochs, "qat_epochs": a.qat_epochs, "threads": a.threads,
           "intq_scheme": a.intq_scheme, "total_s": total_s, "models": rows}
    line = json.dumps(out)
    print(line)
    if a.json_out:
        tmp = a.json_out + ".tmp"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, a.json_out)


if __name__ == "__main__":
    main()
