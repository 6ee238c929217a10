"""PyTorch eager baseline for `small-cnn` (same layers, batch 128): median ms per training step,
float and QAT (torch.ao fused Conv+BN+ReLU with fake quant), with a fixed thread count.

    python3 -m venv venv && venv/bin/pip install torch
    venv/bin/python crates/intq-train/bench/torch_small_cnn.py --threads 2 --steps 30
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
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = SmallCnn().train()
    print(f"torch {torch.__version__} threads {a.threads} float: {time_steps(m, a.steps, a.batch):.1f} ms/step")
    q = SmallCnn().train()
    q.qconfig = tq.get_default_qat_qconfig("x86")
    q = tq.fuse_modules_qat(q, [["c1.0", "c1.1", "c1.2"], ["c2.0", "c2.1", "c2.2"], ["c3.0", "c3.1", "c3.2"]])
    tq.prepare_qat(q, inplace=True)
    print(f"torch {torch.__version__} threads {a.threads} qat:   {time_steps(q, a.steps, a.batch):.1f} ms/step")


if __name__ == "__main__":
    main()
