#!/usr/bin/env python3
"""PyTorch eager-mode QAT on Fashion-MNIST with intq quickstart's small-cnn and recipe, so that
`intq quickstart` can be read beside it: float, PTQ int8, QAT fake-quant and QAT int8 accuracy,
fake-quant vs int8 top-1 mismatches and the largest logit difference in output LSB, and the wall
time of every stage. Nothing is hard-coded: every number printed comes from this run.

Recipe (crates/intq-cli/src/quickstart.rs): float 1 epoch on the first 30,000 training images,
batch 128, SGD momentum 0.9, weight decay 5e-4, lr 0.05 cosine-annealed to 0 per step, seed 0,
inputs byte/255. PTQ: min/max calibration on the first 1,000 training images. QAT: from the float
model, 1 epoch on the first 10,000 training images, lr 0.005 cosine, BN statistics frozen for the
whole epoch (the moving statistics are used). Test: the 10,000 test images.

Variants (--variants, comma-separated):
  per-tensor  activations quint8 [0,255] affine per-tensor (reduce_range=False), weights qint8
              [-128,127] per-tensor symmetric; moving-average min/max observers (fused
              observer+fake-quant modules, averaging constant 0.01). The closest to intq's uint8
              scheme (PyTorch's x86/fbgemm kernels take no uint8 weights). Converted and run with
              every engine in --engines.
  x86         torch.ao.quantization.get_default_qat_qconfig('x86') unchanged (per-channel
              symmetric weights, activations reduce_range=True, i.e. [0,127]); PTQ with the
              matching min/max observers. Converted and run with the x86 engine.

Usage: torch_qat.py [--data-dir DIR] [--variants per-tensor,x86] [--engines x86,qnnpack]
                    [--threads 2] [--train-images 30000] [--qat-images 10000] [--calib 1000]
                    [--test-images 10000] [--json-out FILE]
Run it through run_torch_qat.sh, which makes a venv with torch and numpy in it.
"""
import argparse
import copy
import gzip
import json
import math
import os
import sys
import time
import warnings

import numpy as np
import torch
import torch.ao.quantization as tq
from torch import nn

FUSE = [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"], ["conv3", "bn3", "relu3"]]


class SmallCnn(nn.Module):
    """intq's small-cnn: three conv3x3+BN+ReLU (32, 64, 128 channels, pad 1), max-pool 2 after
    the first two, global average pool, linear 128->10."""

    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(128)
        self.relu3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = torch.flatten(self.gap(x), 1)
        return self.dequant(self.fc(x))


def read_idx(path, want_dims):
    """Reads an IDX file (optionally .gz) into a uint8 array, checking magic and size."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        sys.exit(f"error: cannot read {path}: {e}")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != want_dims:
        sys.exit(f"error: {path}: not an IDX uint8 file with {want_dims} dimension(s)")
    head = 4 + 4 * want_dims
    if len(raw) < head:
        sys.exit(f"error: {path}: truncated header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(want_dims)]
    n = math.prod(dims)
    if len(raw) != head + n:
        sys.exit(f"error: {path}: header says {dims} ({n} bytes) but {len(raw) - head} follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def find(data_dir, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    sys.exit(f"error: {data_dir} holds neither {stem} nor {stem}.gz (run `intq data fetch`)")


def load(data_dir, prefix):
    x = read_idx(find(data_dir, f"{prefix}-images-idx3-ubyte"), 3)
    y = read_idx(find(data_dir, f"{prefix}-labels-idx1-ubyte"), 1)
    if x.shape[0] != y.shape[0] or x.shape[1:] != (28, 28):
        sys.exit(f"error: {data_dir}: {prefix} images {x.shape} do not match labels {y.shape}")
    if y.max() > 9:
        sys.exit(f"error: {data_dir}: {prefix} labels outside 0..9")
    xt = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)
    return xt, torch.from_numpy(y.astype(np.int64))


def train(model, x, y, lr0, batch, seed, log):
    """One epoch of SGD with a per-step cosine learning rate, as intq's trainer does."""
    opt = torch.optim.SGD(model.parameters(), lr=lr0, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(x.shape[0], generator=g)
    steps = math.ceil(x.shape[0] / batch)
    lossf = nn.CrossEntropyLoss()
    model.train()
    t = time.perf_counter()
    for s in range(steps):
        idx = order[s * batch : (s + 1) * batch]
        for pg in opt.param_groups:
            pg["lr"] = lr0 * 0.5 * (1.0 + math.cos(math.pi * s / steps))
        loss = lossf(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (s + 1) % 20 == 0 or s + 1 == steps:
            log(f"  step {s + 1}/{steps} loss {loss.item():.4f} ({time.perf_counter() - t:.0f}s)")


@torch.no_grad()
def outputs(model, x, batch=256):
    return torch.cat([model(x[i : i + batch]) for i in range(0, x.shape[0], batch)])


def acc(logits, y):
    return (logits.argmax(1) == y).float().mean().item()


def qconfigs(variant):
    """(PTQ qconfig, QAT qconfig, description) of a variant."""
    if variant == "per-tensor":
        ptq = tq.QConfig(
            activation=tq.MinMaxObserver.with_args(
                dtype=torch.quint8, qscheme=torch.per_tensor_affine, quant_min=0, quant_max=255,
                reduce_range=False),
            weight=tq.MinMaxObserver.with_args(
                dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-128,
                quant_max=127),
        )
        qat = tq.QConfig(
            activation=tq.FusedMovingAvgObsFakeQuantize.with_args(
                observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=False),
            weight=tq.default_fused_wt_fake_quant,
        )
        desc = ("act quint8 [0,255] per-tensor affine (MovingAverageMinMax, c=0.01), "
                "weight qint8 [-128,127] per-tensor symmetric")
    elif variant == "x86":
        ptq = tq.QConfig(
            activation=tq.MinMaxObserver.with_args(
                dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=True),
            weight=tq.PerChannelMinMaxObserver.with_args(
                dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
        )
        qat = tq.get_default_qat_qconfig("x86")
        desc = ("get_default_qat_qconfig('x86'): act quint8 reduce_range [0,127] per-tensor "
                "(MovingAverageMinMax, c=0.01), weight qint8 per-channel symmetric")
    else:
        sys.exit(f"error: unknown variant {variant!r} (per-tensor, x86)")
    return ptq, qat, desc


def lsb_compare(fq, q, qmodel):
    """Top-1 mismatches and the largest difference in output codes, the fake-quant logits put
    on the int8 model's output grid (the fc output scale and zero point)."""
    scale, zp = float(qmodel.fc.scale), int(qmodel.fc.zero_point)
    code_fq = torch.clamp(torch.round(fq / scale) + zp, 0, 255)
    code_q = torch.clamp(torch.round(q / scale) + zp, 0, 255)
    mism = int((fq.argmax(1) != q.argmax(1)).sum())
    return mism, int((code_fq - code_q).abs().max()), float((fq - q).abs().max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.path.expanduser("~/.cache/intq/data/fashion-mnist"))
    ap.add_argument("--variants", default="per-tensor,x86")
    ap.add_argument("--engines", default="x86,qnnpack",
                    help="engines the per-tensor variant is converted and run with")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-images", type=int, default=30000)
    ap.add_argument("--qat-images", type=int, default=10000)
    ap.add_argument("--calib", type=int, default=1000)
    ap.add_argument("--test-images", type=int, default=10000)
    ap.add_argument("--json-out")
    a = ap.parse_args()

    def log(m):
        print(m, file=sys.stderr, flush=True)

    # torch.ao.quantization's deprecation notices would bury the progress lines.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")
    warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
    torch.set_num_threads(a.threads)
    t_all = time.perf_counter()
    xtr, ytr = load(a.data_dir, "train")
    xte, yte = load(a.data_dir, "t10k")
    xte, yte = xte[: a.test_images], yte[: a.test_images]
    supported = torch.backends.quantized.supported_engines

    log(f"1 float training: 1 epoch on {min(a.train_images, len(xtr))} images")
    torch.manual_seed(0)
    t = time.perf_counter()
    fmodel = SmallCnn()
    train(fmodel, xtr[: a.train_images], ytr[: a.train_images], 0.05, 128, 0, log)
    float_train_s = time.perf_counter() - t
    fmodel.eval()
    t = time.perf_counter()
    float_acc = acc(outputs(fmodel, xte), yte)
    float_eval_s = time.perf_counter() - t
    log(f"  float acc {float_acc:.4f}")

    results = []
    for variant in a.variants.split(","):
        ptq_qc, qat_qc, desc = qconfigs(variant)
        engines = a.engines.split(",") if variant == "per-tensor" else ["x86"]
        for e in engines:
            if e not in supported:
                sys.exit(f"error: engine {e} not in this torch's {supported}")
        for e in engines:
            log(f"2 PTQ [{variant}, engine {e}]: min/max on {a.calib} images")
            torch.backends.quantized.engine = e
            t = time.perf_counter()
            m = copy.deepcopy(fmodel).eval()
            tq.fuse_modules(m, FUSE, inplace=True)
            m.qconfig = ptq_qc
            tq.prepare(m, inplace=True)
            outputs(m, xtr[: a.calib])
            tq.convert(m, inplace=True)
            ptq_acc = acc(outputs(m, xte), yte)
            ptq_s = time.perf_counter() - t
            log(f"  PTQ acc {ptq_acc:.4f} ({ptq_s:.1f}s)")
            results.append({"variant": variant, "engine": e, "ptq_acc": ptq_acc,
                            "seconds": {"ptq": ptq_s}})

        log(f"3 QAT [{variant}]: 1 epoch on {min(a.qat_images, len(xtr))} images, BN frozen")
        torch.backends.quantized.engine = engines[0]
        t = time.perf_counter()
        m = copy.deepcopy(fmodel).train()
        tq.fuse_modules_qat(m, FUSE, inplace=True)
        m.qconfig = qat_qc
        tq.prepare_qat(m, inplace=True)
        # Moving statistics from the first QAT step on, as intq's quickstart does.
        m.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        train(m, xtr[: a.qat_images], ytr[: a.qat_images], 0.005, 128, 1, log)
        qat_s = time.perf_counter() - t
        # Eval mode alone keeps the observers updating; freezing them makes the fake-quant
        # evaluation use the very ranges that convert() turns into scales.
        m.eval()
        m.apply(tq.disable_observer)
        t = time.perf_counter()
        fq = outputs(m, xte)
        fq_s = time.perf_counter() - t
        fq_acc = acc(fq, yte)
        log(f"  fake-quant acc {fq_acc:.4f}")
        for r in results:
            if r["variant"] != variant:
                continue
            e = r["engine"]
            torch.backends.quantized.engine = e
            t = time.perf_counter()
            qm = tq.convert(copy.deepcopy(m), inplace=False)
            conv_s = time.perf_counter() - t
            t = time.perf_counter()
            q = outputs(qm, xte)
            int8_s = time.perf_counter() - t
            mism, lsb, absdiff = lsb_compare(fq, q, qm)
            r.update({
                "qconfig": desc, "fq_acc": fq_acc, "int8_acc": acc(q, yte),
                "top1_mismatch": mism, "max_lsb_diff": lsb, "max_abs_logit_diff": absdiff,
                "output_scale": float(qm.fc.scale), "output_zero_point": int(qm.fc.zero_point),
            })
            r["seconds"].update({"qat_train": qat_s, "fq_eval": fq_s, "convert": conv_s,
                                 "int8_eval": int8_s})
            log(f"  int8 [{e}] acc {r['int8_acc']:.4f}, mismatches {mism}, max {lsb} LSB")

    total_s = time.perf_counter() - t_all
    out = {
        "torch": torch.__version__, "threads": a.threads, "data_dir": a.data_dir,
        "train_images": min(a.train_images, len(xtr)), "qat_images": min(a.qat_images, len(xtr)),
        "calib": a.calib, "test_images": len(xte), "float_acc": float_acc,
        "seconds": {"float_train": float_train_s, "float_eval": float_eval_s, "total": total_s},
        "variants": results,
    }
    print(f"\nPyTorch {torch.__version__} eager QAT, small-cnn on Fashion-MNIST, "
          f"{len(xte)} test images, {a.threads} threads")
    print(f"float accuracy {100 * float_acc:.2f}%  (train {float_train_s:.1f}s, "
          f"eval {float_eval_s:.1f}s)")
    hdr = (f"{'variant':<11} {'engine':<8} {'PTQ':>7} {'QAT fq':>7} {'QAT int8':>8} "
           f"{'top1 mism':>9} {'max LSB':>7} {'ptq s':>6} {'qat s':>6} {'conv s':>6} "
           f"{'int8 s':>6}")
    print(hdr)
    for r in results:
        s = r["seconds"]
        print(f"{r['variant']:<11} {r['engine']:<8} {100 * r['ptq_acc']:>6.2f}% "
              f"{100 * r['fq_acc']:>6.2f}% {100 * r['int8_acc']:>7.2f}% "
              f"{r['top1_mismatch']:>9} {r['max_lsb_diff']:>7} {s['ptq']:>6.1f} "
              f"{s['qat_train']:>6.1f} {s['convert']:>6.2f} {s['int8_eval']:>6.1f}")
    for v in dict.fromkeys(r["variant"] for r in results):
        print(f"  {v}: {next(r['qconfig'] for r in results if r['variant'] == v)}")
    print(f"total {total_s:.1f}s")
    line = json.dumps(out)
    print(line)
    if a.json_out:
        tmp = a.json_out + ".tmp"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, a.json_out)


if __name__ == "__main__":
    main()
