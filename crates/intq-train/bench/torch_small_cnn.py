"""PyTorch eager baseline for `small-cnn` and `tiny-mobilenet` (same layers, batch 128): median ms
per training step, float and QAT (torch.ao fused Conv+BN(+ReLU) with fake quant), with a fixed
thread count. torch.ao's eager fusion has no Conv+BN+ReLU6, so tiny-mobilenet's ReLU6 stays a
module of its own there (one more fake-quant per activation than intq's fused clamp).

    python3 -m venv venv && venv/bin/pip install torch
    venv/bin/python crates/intq-train/bench/torch_small_cnn.py --threads 2 --steps 30 [--model tiny-mobilenet]
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.ao.quantization as tq


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.c1 = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.c3 = nn.Sequential(nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.pool(self.c1(x))
        x = self.pool(self.c2(x))
        x = self.c3(x)
        x = torch.flatten(self.gap(x), 1)
        return self.dequant(self.fc(x))


def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, t, cout, stride):
        super().__init__()
        hidden = cin * t
        self.expand = conv_bn(cin, hidden, 1)
        self.dw = conv_bn(hidden, hidden, 3, stride, hidden)
        self.project = conv_bn(hidden, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout
        self.add = nn.quantized.FloatFunctional()

    def forward(self, x):
        y = self.project(self.dw(self.expand(x)))
        return self.add.add(x, y) if self.residual else y


class TinyMobilenet(nn.Module):
    """intq's tiny-mobilenet (crates/intq-train/src/zoo.rs)."""

    BLOCKS = [(4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1), (4, 64, 1)]

    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.stem = conv_bn(1, 16, 3)
        blocks, c = [], 16
        for t, out, s in self.BLOCKS:
            blocks.append(InvertedResidual(c, t, out, s))
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn(64, 128, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.head(self.blocks(self.stem(self.quant(x))))
        return self.dequant(self.fc(torch.flatten(self.gap(x), 1)))

    def fusions(self):
        """Conv+BN pairs for fuse_modules_qat (ReLU6 cannot be fused in eager mode)."""
        names = [n for n, m in self.named_modules() if isinstance(m, nn.Sequential) and len(m) >= 2
                 and isinstance(m[0], nn.Conv2d)]
        return [[f"{n}.0", f"{n}.1"] for n in names]


def time_steps(model, steps, batch):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for i in range(steps + 3):
        t = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if i >= 3:
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--model", choices=["small-cnn", "tiny-mobilenet"], default="small-cnn")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = SmallCnn if a.model == "small-cnn" else TinyMobilenet
    m = net().train()
    print(f"torch {torch.__version__} threads {a.threads} float: {time_steps(m, a.steps, a.batch):.1f} ms/step")
    q = net().train()
    q.qconfig = tq.get_default_qat_qconfig("x86")
    if a.model == "small-cnn":
        fusions = [["c1.0", "c1.1", "c1.2"], ["c2.0", "c2.1", "c2.2"], ["c3.0", "c3.1", "c3.2"]]
    else:
        fusions = q.fusions()
    q = tq.fuse_modules_qat(q, fusions)
    tq.prepare_qat(q, inplace=True)
    print(f"torch {torch.__version__} threads {a.threads} qat:   {time_steps(q, a.steps, a.batch):.1f} ms/step")


if __name__ == "__main__":
    main()
