#!/usr/bin/env python3
"""Builds mobilenetv3_dynamo.onnx: make.py's MobileNetV3-style network (HardSwish, squeeze-and-
excitation, depthwise convolutions) exported by torch's dynamo exporter (`torch.export`, opset 18)
in eval mode, as `torch.onnx.export(..., dynamo=True)` writes models today: batch norm folded into
the convolutions, a symbolic batch, ops in their opset-18 forms. make.py's fixtures come from the
TorchScript exporter; this one covers the other. Writes it with ONNX Runtime's outputs on seeded
pictures into crates/intq-onnx/tests/fixtures:

  mobilenetv3_dynamo.onnx, mobilenetv3_dynamo.input.npy ([4, 3, 32, 32]), .output.npy

  tools/onnx-fixtures/.venv/bin/python tools/onnx-fixtures/dynamo_fixture.py [OUT_DIR]
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make  # noqa: E402

NAME = "mobilenetv3_dynamo"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(os.path.dirname(os.path.dirname(here)), "crates", "intq-onnx", "tests",
                       "fixtures")
    if len(sys.argv) > 1:
        out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    model = dict(make.torch_models())["mobilenetv3_tiny"]
    path = os.path.join(out, NAME + ".onnx")
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, 32, 32),),
        path,
        dynamo=True,
        external_data=False,
        input_names=["input"],
        output_names=["output"],
        dynamic_shapes={"x": {0: batch}},
        opset_version=18,
    )
    x = np.random.default_rng(make.SEED + 18).uniform(0.0, 1.0, (make.BATCH, 3, 32, 32))
    x = x.astype(np.float32)
    y = make.run_ort(path, x)
    np.save(os.path.join(out, NAME + ".input.npy"), x)
    np.save(os.path.join(out, NAME + ".output.npy"), y)
    print(f"{NAME}: {os.path.getsize(path)} bytes, output {y.shape}")


if __name__ == "__main__":
    main()
