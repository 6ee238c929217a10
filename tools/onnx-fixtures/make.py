#!/usr/bin/env python3
"""Builds the float ONNX fixtures intq's importer is tested on, and ONNX Runtime's outputs.

Writes, into the output folder (default crates/intq-onnx/tests/fixtures):

  resnet_tiny.onnx       a ResNet-style net at 3x32x32 exported by torch.onnx.export: conv-BN-ReLU
                         stem, max pool, two basic blocks (one strided, with a 1x1 projection),
                         global average pool, x.view(x.size(0), -1) (Shape/Gather/Unsqueeze/
                         Concat/Reshape arithmetic), fully connected (Gemm), Dropout
  mobilenetv2_tiny.onnx  a MobileNetV2-style net at 3x32x32 exported by torch.onnx.export:
                         conv-BN-ReLU6 (Clip), inverted residuals (expand, depthwise, project,
                         residual Add), a two-branch Concat, asymmetric F.pad (Pad), average pool,
                         x.mean((2, 3)) (ReduceMean), Linear, trailing Softmax
  mobilenetv2_qat.onnx   the same network without the Pad and the padded average pool
  mobilenetv3_tiny.onnx  a MobileNetV3-style net at 3x32x32 exported by torch.onnx.export (opset
                         17): conv-BN-HardSwish, inverted residuals with HardSwish, squeeze-and-
                         excitation (x.mean keepdim, 1x1 convs, Sigmoid gate, Mul), Linear
  ops_helper.onnx        built with onnx.helper: auto_pad SAME_UPPER/SAME_LOWER, dilations,
                         grouped conv, asymmetric pads, AveragePool count_include_pad, MaxPool
                         ceil_mode, Flatten, Reshape to [0, -1], MatMul + Add, Gemm with alpha/beta/
                         transB, LogSoftmax, opset 11
  grouped_qat.onnx       built with onnx.helper from ops intq's QAT network takes: a grouped conv
                         (group 2) with BN and ReLU, a conv with asymmetric pads, a zero Pad, a
                         padded AveragePool counting its padding, GlobalAveragePool, Gemm
  hardswish_qat.onnx     built with onnx.helper, opset 14: conv-BN-HardSwish, depthwise conv-BN-
                         HardSwish, 1x1 conv-HardSwish, GlobalAveragePool, Gemm
  sigmoid_qat.onnx       built with onnx.helper: conv-BN-ReLU, conv-Sigmoid, GlobalAveragePool, Gemm
  se_qat.onnx            built with onnx.helper: conv-BN-ReLU, a squeeze-and-excitation block
                         (ReduceMean over H and W, 1x1 conv-ReLU, 1x1 conv-Sigmoid, Mul broadcast
                         over H and W), 1x1 conv, GlobalAveragePool, Gemm
  hsigmoid_mul.onnx      built with onnx.helper, opset 13: HardSwish spelled x * HardSigmoid(x)
                         (alpha 1/6, as torch exports Hardswish below opset 14) after two convs
  preprocess_qat.onnx    built with onnx.helper: ImageNet's normalization baked in as Sub and
                         Div by per-channel constants, an unpadded conv-BN-ReLU, a strided conv,
                         GlobalAveragePool, Gemm
  dilated_qat.onnx       built with onnx.helper: dilation-2 dense and depthwise convs, an
                         AveragePool with count_include_pad 0, a MaxPool with ceil_mode, GAP, Gemm
  act_qat.onnx           built with onnx.helper: conv-BN-LeakyRelu, conv-Tanh, the Sub of two 1x1
                         convs, GAP, Gemm
  resize_qat.onnx        built with onnx.helper: a strided branch brought back up by a nearest
                         Resize (asymmetric, floor) and concatenated with a full-size branch, a
                         nearest Resize down by sizes (half_pixel, round_prefer_floor), GAP, Gemm
  nhwc_qat.onnx          built with onnx.helper: an NHWC input transposed to NCHW, a scalar Sub,
                         two strided convs, a Transpose back to NHWC before the flattening
                         Reshape and the Gemm (as Keras models are exported)
  prelu_qat.onnx         built with onnx.helper: conv-BN-PRelu (a slope per channel), conv-PRelu
                         (one slope), GAP, Gemm
  pool_ceil_qat.onnx     built with onnx.helper: an AveragePool with ceil_mode whose last windows
                         run past the picture (count_include_pad 0), between convs, GAP, Gemm
  convt_ops.onnx         built with onnx.helper: ConvTranspose with asymmetric pads and
                         output_padding, auto_pad SAME_UPPER and SAME_LOWER, output_shape, unequal
                         strides and kernels, with and without bias, each output flattened and
                         concatenated (every element compared), on a 3x7x9 input
  decoder_qat.onnx       built with onnx.helper: an encoder-decoder body (two strided convs, a
                         4x4 stride-2 ConvTranspose with BN and ReLU, a 2x2 stride-2 ConvTranspose
                         with ReLU), a strided conv head, GAP, Gemm
  hsigmoid_se_qat.onnx   built with onnx.helper, opset 14: MobileNetV3-style blocks whose
                         squeeze-and-excitation gates are HardSigmoid (torchvision's: 1x1 conv
                         with bias, alpha 1/6; and a 1x1 conv-BN with the default alpha 0.2),
                         conv-BN-HardSwish, depthwise conv-BN-ReLU, a residual Add, GAP, Gemm
  maxmin_qat.onnx        built with onnx.helper: Max of a conv-BN-ReLU and a plain conv, Min of
                         two convs reading it (inputs of different ranges), GAP, Gemm
  resize_linear_qat.onnx built with onnx.helper: bilinear Resize up 2x (half_pixel, scales)
                         before a Concat, down 16 to 11 (align_corners), up 2x
                         (pytorch_half_pixel), between convs, GAP, Gemm
  convt_pads_qat.onnx    built with onnx.helper: ConvTransposes whose cut neither SAME nor VALID
                         places (3x3 stride 2 pads 1 output_padding 1, as torch writes a 2x
                         upsampling; stride 1 with asymmetric pads), between convs, GAP, Gemm
  NAME.input.npy         fixed float32 inputs, batch 4 (seeded)
  NAME.output.npy        ONNX Runtime's output on them (CPU execution provider, no graph
                         optimizations, so it runs the file's nodes as written)

Weights are random (seeded), BN statistics too, so BN is not an identity. Run with the venv this
folder's README names:

  tools/onnx-fixtures/.venv/bin/python tools/onnx-fixtures/make.py [OUT_DIR] [--only NAME]

--only NAME rebuilds that fixture alone (the inputs of each are seeded by its name).
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SEED = 20261205
BATCH = 4


def torch_models():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(SEED)

    def randomize_bn(m):
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                with torch.no_grad():
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.2, 0.2)
                    mod.running_mean.uniform_(-0.2, 0.2)
                    mod.running_var.uniform_(0.5, 1.5)

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            s = x if self.proj is None else self.proj(x)
            return F.relu(y + s)

    class ResNetTiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(16)
            self.pool = nn.MaxPool2d(2)
            self.l1 = Basic(16, 16, 1)
            self.l2 = Basic(16, 32, 2)
            self.drop = nn.Dropout(0.2)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.bn(self.stem(x))))
            x = self.l2(self.l1(x))
            x = F.adaptive_avg_pool2d(x, 1)
            x = x.view(x.size(0), -1)
            return self.fc(self.drop(x))

    class InvRes(nn.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hid = cin * t
            self.use_res = stride == 1 and cin == cout
            self.body = nn.Sequential(
                nn.Conv2d(cin, hid, 1, bias=False),
                nn.BatchNorm2d(hid),
                nn.ReLU6(),
                nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False),
                nn.BatchNorm2d(hid),
                nn.ReLU6(),
                nn.Conv2d(hid, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            )

        def forward(self, x):
            y = self.body(x)
            return x + y if self.use_res else y

    class MobileNetV2Tiny(nn.Module):
        def __init__(self, pad=True):
            super().__init__()
            self.pad = pad
            self.stem = nn.Sequential(
                nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()
            )
            self.b1 = InvRes(16, 16, 1, 1)
            self.b2 = InvRes(16, 24, 2, 4)
            self.b3 = InvRes(24, 24, 1, 4)
            self.left = nn.Conv2d(24, 16, 1)
            self.right = nn.Conv2d(24, 16, 3, 1, 1, dilation=1)
            self.head = nn.Sequential(
                nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6()
            )
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.b3(self.b2(self.b1(self.stem(x))))
            x = torch.cat([F.relu(self.left(x)), F.relu(self.right(x))], 1)
            if self.pad:
                x = F.pad(x, (0, 1, 0, 1))
                x = F.avg_pool2d(x, 3, 1, 1)
            x = self.head(x)
            x = x.mean((2, 3))
            return torch.softmax(self.fc(x), 1)

    class SqueezeExcite(nn.Module):
        def __init__(self, c, r):
            super().__init__()
            self.reduce = nn.Conv2d(c, r, 1)
            self.expand = nn.Conv2d(r, c, 1)

        def forward(self, x):
            s = x.mean((2, 3), keepdim=True)
            return x * torch.sigmoid(self.expand(F.relu(self.reduce(s))))

    class V3Block(nn.Module):
        def __init__(self, cin, hid, cout, stride, se):
            super().__init__()
            self.use_res = stride == 1 and cin == cout
            layers = [
                nn.Conv2d(cin, hid, 1, bias=False),
                nn.BatchNorm2d(hid),
                nn.Hardswish(),
                nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False),
                nn.BatchNorm2d(hid),
                nn.Hardswish(),
            ]
            if se:
                layers.append(SqueezeExcite(hid, hid // 4))
            layers += [nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.body = nn.Sequential(*layers)

        def forward(self, x):
            y = self.body(x)
            return x + y if self.use_res else y

    class MobileNetV3Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()
            )
            self.b1 = V3Block(16, 32, 16, 1, se=True)
            self.b2 = V3Block(16, 48, 24, 2, se=False)
            self.b3 = V3Block(24, 72, 24, 1, se=True)
            self.head = nn.Sequential(
                nn.Conv2d(24, 64, 1, bias=False), nn.BatchNorm2d(64), nn.Hardswish()
            )
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.head(self.b3(self.b2(self.b1(self.stem(x)))))
            return self.fc(x.mean((2, 3)))

    out = []
    nets = (
        ("resnet_tiny", ResNetTiny()),
        ("mobilenetv2_tiny", MobileNetV2Tiny()),
        ("mobilenetv2_qat", MobileNetV2Tiny(pad=False)),
    )
    for name, m in nets:
        randomize_bn(m)
        m.eval()
        out.append((name, m))
    # Built after the others are randomized, so their weights do not depend on it.
    v3 = MobileNetV3Tiny()
    randomize_bn(v3)
    out.append(("mobilenetv3_tiny", v3.eval()))
    return out


def export_torch(name, model, path):
    import torch

    x = torch.zeros(1, 3, 32, 32)
    kwargs = dict(
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        do_constant_folding=False,
    )
    # The TorchScript exporter writes the shape arithmetic (Shape, Gather, Unsqueeze, Concat)
    # users' files are full of, and keeps BatchNormalization when asked to preserve the mode.
    try:
        torch.onnx.export(
            model,
            (x,),
            path,
            dynamo=False,
            training=torch.onnx.TrainingMode.PRESERVE,
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            **kwargs,
        )
    except Exception as e:  # exporters move between torch versions
        print(f"{name}: TorchScript exporter failed ({e}); using the dynamo exporter")
        batch = torch.export.Dim("batch")
        torch.onnx.export(
            model,
            (x,),
            path,
            dynamo=True,
            external_data=False,
            dynamic_shapes={"x": {0: batch}},
            **kwargs,
        )


def helper_model(path):
    """Core ops with the attribute combinations torch does not emit, written node by node."""
    rng = np.random.default_rng(SEED)

    def w(name, *shape):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * 0.3).astype(np.float32), name
        )

    inits = [
        w("w_same", 8, 3, 3, 3),
        w("b_same", 8),
        w("w_dil", 8, 8, 3, 3),
        w("w_grp", 8, 4, 3, 3),
        w("b_grp", 8),
        w("w_low", 4, 8, 2, 2),
        w("bn_scale", 8),
        w("bn_bias", 8),
        w("bn_mean", 8),
        numpy_helper.from_array(
            rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_var"
        ),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"),
        w("mm_w", 80, 16),
        w("mm_b", 16),
        w("gemm_b", 10, 16),
        w("gemm_c", 10),
        numpy_helper.from_array(np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64), "pads"),
        numpy_helper.from_array(np.array(0.0, np.float32), "clip_min"),
        numpy_helper.from_array(np.array(6.0, np.float32), "clip_max"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_same", "b_same"], ["c1"], name="conv_same",
                         auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
                         ["bn1"], name="bn", epsilon=1e-3),
        helper.make_node("Clip", ["bn1", "clip_min", "clip_max"], ["r1"], name="relu6"),
        helper.make_node("Conv", ["r1", "w_dil"], ["c2"], name="conv_dilated",
                         pads=[2, 1, 2, 3], dilations=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu"),
        helper.make_node("Conv", ["r2", "w_grp", "b_grp"], ["c3"], name="conv_grouped",
                         group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c3", "r2"], ["a1"], name="residual"),
        helper.make_node("AveragePool", ["a1"], ["p1"], name="avgpool", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("MaxPool", ["a1"], ["p2"], name="maxpool", kernel_shape=[3, 3],
                         strides=[2, 2], ceil_mode=1),
        helper.make_node("Pad", ["p2", "pads"], ["p2p"], name="pad"),
        helper.make_node("Conv", ["p1", "w_low"], ["c4"], name="conv_same_lower",
                         auto_pad="SAME_LOWER"),
        helper.make_node("Conv", ["p2p", "w_low"], ["c5"], name="conv_valid",
                         auto_pad="VALID", strides=[3, 3]),
        helper.make_node("Flatten", ["c4"], ["f1"], name="flatten", axis=1),
        helper.make_node("Reshape", ["c5", "flat_shape"], ["f2"], name="reshape"),
        helper.make_node("Concat", ["f1", "f2"], ["cat"], name="concat", axis=1),
        helper.make_node("MatMul", ["cat", "mm_w"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "mm_b"], ["mmb"], name="matmul_bias"),
        helper.make_node("Relu", ["mmb"], ["r3"], name="relu_fc"),
        helper.make_node("Gemm", ["r3", "gemm_b", "gemm_c"], ["logits"], name="gemm",
                         alpha=0.5, beta=2.0, transB=1),
        helper.make_node("LogSoftmax", ["logits"], ["output"], name="logsoftmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "ops_helper",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def grouped_qat_model(path):
    """A grouped conv and the padding forms the QAT network takes, written node by node."""
    rng = np.random.default_rng(SEED + 7)

    def w(name, *shape, scale=0.3):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("w_stem", 8, 3, 3, 3),
        w("b_stem", 8),
        w("w_grp", 8, 4, 3, 3),
        w("bn_scale", 8),
        w("bn_bias", 8),
        w("bn_mean", 8),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_var"),
        w("w_asym", 12, 8, 2, 2),
        w("b_asym", 12),
        numpy_helper.from_array(np.array([0, 0, 0, 1, 0, 0, 1, 0], np.int64), "pads"),
        w("fc_w", 10, 12),
        w("fc_b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_stem", "b_stem"], ["c1"], name="stem",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="stem_relu"),
        helper.make_node("Conv", ["r1", "w_grp"], ["c2"], name="conv_grouped", group=2,
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c2", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
                         ["bn2"], name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["bn2"], ["r2"], name="relu"),
        helper.make_node("Conv", ["r2", "w_asym", "b_asym"], ["c3"], name="conv_asym",
                         pads=[0, 0, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu_asym"),
        helper.make_node("Pad", ["r3", "pads"], ["p3"], name="pad"),
        helper.make_node("AveragePool", ["p3"], ["a3"], name="avgpool", kernel_shape=[3, 3],
                         strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("GlobalAveragePool", ["a3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "grouped_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def hardswish_qat_model(path):
    """MobileNetV3's HardSwish after dense, depthwise and pointwise convs, node by node."""
    rng = np.random.default_rng(SEED + 11)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    def bn(prefix, c):
        return [
            numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), prefix + "_s"),
            w(prefix + "_b", c, scale=0.5),
            w(prefix + "_m", c, scale=0.2),
            numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), prefix + "_v"),
        ]

    inits = [
        w("w_stem", 8, 3, 3, 3),
        *bn("bn1", 8),
        w("w_dw", 8, 1, 3, 3),
        *bn("bn2", 8),
        w("w_pw", 16, 8, 1, 1),
        w("b_pw", 16),
        w("fc_w", 10, 16),
        w("fc_b", 10),
    ]
    bn_in = lambda p: [p + "_s", p + "_b", p + "_m", p + "_v"]  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w_stem"], ["c1"], name="stem", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", *bn_in("bn1")], ["b1"], name="bn1"),
        helper.make_node("HardSwish", ["b1"], ["h1"], name="hswish1"),
        helper.make_node("Conv", ["h1", "w_dw"], ["c2"], name="dw", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", *bn_in("bn2")], ["b2"], name="bn2"),
        helper.make_node("HardSwish", ["b2"], ["h2"], name="hswish2"),
        helper.make_node("Conv", ["h2", "w_pw", "b_pw"], ["c3"], name="pw"),
        helper.make_node("HardSwish", ["c3"], ["h3"], name="hswish3"),
        helper.make_node("GlobalAveragePool", ["h3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "hardswish_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def sigmoid_qat_model(path):
    """A Sigmoid between convolutions, node by node."""
    rng = np.random.default_rng(SEED + 13)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("w1", 8, 3, 3, 3),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_s"),
        w("bn_b", 8, scale=0.5),
        w("bn_m", 8, scale=0.2),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_v"),
        w("w2", 16, 8, 3, 3),
        w("b2", 16),
        w("fc_w", 10, 16, scale=2.0),
        w("fc_b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"],
                         name="bn"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["s2"], name="sigmoid"),
        helper.make_node("GlobalAveragePool", ["s2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "sigmoid_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def se_qat_model(path):
    """A squeeze-and-excitation block (Sigmoid gate, as EfficientNet's), node by node."""
    rng = np.random.default_rng(SEED + 17)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("w1", 8, 3, 3, 3),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_s"),
        w("bn_b", 8, scale=0.5),
        w("bn_m", 8, scale=0.2),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_v"),
        w("w_sq", 4, 8, 1, 1, scale=0.8),
        w("b_sq", 4),
        w("w_ex", 8, 4, 1, 1, scale=0.8),
        w("b_ex", 8),
        w("w3", 16, 8, 1, 1),
        w("b3", 16),
        w("fc_w", 10, 16),
        w("fc_b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"],
                         name="bn"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu"),
        helper.make_node("ReduceMean", ["r1"], ["m"], name="squeeze", axes=[2, 3], keepdims=1),
        helper.make_node("Conv", ["m", "w_sq", "b_sq"], ["sq"], name="se_reduce"),
        helper.make_node("Relu", ["sq"], ["sqr"], name="se_relu"),
        helper.make_node("Conv", ["sqr", "w_ex", "b_ex"], ["ex"], name="se_expand"),
        helper.make_node("Sigmoid", ["ex"], ["gate"], name="se_gate"),
        helper.make_node("Mul", ["r1", "gate"], ["scaled"], name="se_mul"),
        helper.make_node("Conv", ["scaled", "w3", "b3"], ["c3"], name="conv3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "se_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def hsigmoid_mul_model(path):
    """HardSwish as x * HardSigmoid(x), node by node."""
    rng = np.random.default_rng(SEED + 19)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("w1", 8, 3, 3, 3),
        w("b1", 8),
        w("w2", 16, 8, 3, 3),
        w("b2", 16),
        w("fc_w", 10, 16),
        w("fc_b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("HardSigmoid", ["c1"], ["g1"], name="hsig1", alpha=1.0 / 6.0),
        helper.make_node("Mul", ["c1", "g1"], ["h1"], name="hswish1"),
        helper.make_node("Conv", ["h1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("HardSigmoid", ["c2"], ["g2"], name="hsig2", alpha=1.0 / 6.0),
        helper.make_node("Mul", ["g2", "c2"], ["h2"], name="hswish2"),
        helper.make_node("GlobalAveragePool", ["h2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "hsigmoid_mul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def preprocess_qat_model(path):
    """ImageNet's normalization baked into the graph as Sub and Div by per-channel constants
    (what some exporters write), then an unpadded conv-BN-ReLU, a strided conv, GAP and Gemm."""
    rng = np.random.default_rng(SEED + 23)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        numpy_helper.from_array(
            np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1), "mean"
        ),
        numpy_helper.from_array(
            np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1), "std"
        ),
        w("w1", 8, 3, 3, 3, scale=0.2),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_s"),
        w("bn_b", 8, scale=0.5),
        w("bn_m", 8, scale=0.2),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_v"),
        w("w2", 16, 8, 3, 3),
        w("b2", 16),
        w("fc_w", 10, 16),
        w("fc_b", 10),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["xm"], name="sub_mean"),
        helper.make_node("Div", ["xm", "std"], ["xn"], name="div_std"),
        helper.make_node("Conv", ["xn", "w1"], ["c1"], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"],
                         name="bn"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "preprocess_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def dilated_qat_model(path):
    """Dilated dense and depthwise convs, an AveragePool leaving its padding out of the count
    and a MaxPool with ceil_mode, node by node."""
    rng = np.random.default_rng(SEED + 29)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("w1", 8, 3, 3, 3),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_s"),
        w("bn_b", 8, scale=0.5),
        w("bn_m", 8, scale=0.2),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_v"),
        w("w2", 16, 8, 3, 3, scale=0.3),
        w("b2", 16),
        w("w_dw", 16, 1, 3, 3),
        w("b_dw", 16),
        w("w3", 16, 16, 1, 1),
        w("b3", 16),
        w("fc_w", 10, 16),
        w("fc_b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"],
                         name="bn"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv_dilated",
                         pads=[2, 2, 2, 2], dilations=[2, 2], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w_dw", "b_dw"], ["c3"], name="dw_dilated",
                         pads=[2, 2, 2, 2], dilations=[2, 2], group=16),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("AveragePool", ["r3"], ["p1"], name="avgpool", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0),
        helper.make_node("MaxPool", ["p1"], ["p2"], name="maxpool_ceil", kernel_shape=[3, 3],
                         strides=[2, 2], ceil_mode=1),
        helper.make_node("Conv", ["p2", "w3", "b3"], ["c4"], name="conv3"),
        helper.make_node("Relu", ["c4"], ["r4"], name="relu4"),
        helper.make_node("GlobalAveragePool", ["r4"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "dilated_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def act_qat_model(path):
    """LeakyRelu, Tanh and the Sub of two activations between convolutions, node by node."""
    rng = np.random.default_rng(SEED + 31)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("w1", 8, 3, 3, 3),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_s"),
        w("bn_b", 8, scale=0.5),
        w("bn_m", 8, scale=0.2),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_v"),
        w("w2", 16, 8, 3, 3, scale=0.3),
        w("b2", 16),
        w("wa", 16, 16, 1, 1),
        w("ba", 16),
        w("wb", 16, 16, 1, 1),
        w("bb", 16),
        w("fc_w", 10, 16),
        w("fc_b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"],
                         name="bn"),
        helper.make_node("LeakyRelu", ["b1"], ["l1"], name="leaky", alpha=0.1),
        helper.make_node("Conv", ["l1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Tanh", ["c2"], ["t2"], name="tanh"),
        helper.make_node("Conv", ["t2", "wa", "ba"], ["ca"], name="conv_a"),
        helper.make_node("Conv", ["t2", "wb", "bb"], ["cb"], name="conv_b"),
        helper.make_node("Sub", ["ca", "cb"], ["d"], name="sub"),
        helper.make_node("GlobalAveragePool", ["d"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "act_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def head_act_qat_model(path):
    """Activations between fully connected layers (a classifier head as MobileNetV3's): HardSwish
    and LeakyRelu on [N, F] tensors, whose engine shape is 2-D, node by node."""
    rng = np.random.default_rng(SEED + 53)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("w1", 8, 3, 3, 3),
        w("b1", 8),
        w("fc1_w", 16, 8),
        w("fc1_b", 16),
        w("fc2_w", 16, 16),
        w("fc2_b", 16),
        w("fc3_w", 10, 16),
        w("fc3_b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r1"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc1_w", "fc1_b"], ["h1"], name="fc1", transB=1),
        helper.make_node("HardSwish", ["h1"], ["a1"], name="hardswish"),
        helper.make_node("Gemm", ["a1", "fc2_w", "fc2_b"], ["h2"], name="fc2", transB=1),
        helper.make_node("LeakyRelu", ["h2"], ["a2"], name="leaky", alpha=0.1),
        helper.make_node("Gemm", ["a2", "fc3_w", "fc3_b"], ["output"], name="fc3", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "head_act_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def resize_qat_model(path):
    """Nearest Resize and Concat: a strided branch brought back up by Resize (torch's
    asymmetric/floor) joined with a full-size branch, then Resize down by half (half_pixel,
    round_prefer_floor, the ONNX defaults), node by node."""
    rng = np.random.default_rng(SEED + 37)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("w1", 8, 3, 3, 3),
        w("b1", 8),
        w("w2", 8, 3, 3, 3),
        w("b2", 8),
        w("w3", 16, 16, 3, 3, scale=0.2),
        w("b3", 16),
        w("fc_w", 10, 16),
        w("fc_b", 10),
        numpy_helper.from_array(np.array([], np.float32), "no_roi"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up2"),
        numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], np.float32), "down2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv_down", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Resize", ["r1", "no_roi", "up2"], ["u1"], name="resize_up",
                         mode="nearest", coordinate_transformation_mode="asymmetric",
                         nearest_mode="floor"),
        helper.make_node("Conv", ["x", "w2", "b2"], ["c2"], name="conv_full", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Concat", ["u1", "r2"], ["cat"], name="concat", axis=1),
        helper.make_node("Conv", ["cat", "w3", "b3"], ["c3"], name="conv3", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("Resize", ["r3", "no_roi", "down2"], ["d3"], name="resize_down",
                         mode="nearest"),
        helper.make_node("GlobalAveragePool", ["d3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "resize_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def nhwc_qat_model(path):
    """A Keras-style NHWC model: its input transposed to NCHW, a scalar Sub, convs, then the
    NCHW activation transposed back to NHWC before the Flatten and Gemm, node by node."""
    rng = np.random.default_rng(SEED + 41)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        numpy_helper.from_array(np.array(0.4, np.float32), "center"),
        w("w1", 8, 3, 3, 3),
        w("b1", 8),
        w("w2", 8, 8, 3, 3, scale=0.3),
        w("b2", 8),
        w("fc_w", 10, 8 * 8 * 8, scale=0.05),
        w("fc_b", 10),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Sub", ["xt", "center"], ["xs"], name="center"),
        helper.make_node("Conv", ["xs", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Transpose", ["r2"], ["r2t"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["r2t", "flat"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "nhwc_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32, 32, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def prelu_qat_model(path):
    """PRelu with a slope per channel after conv-BN and one slope for all after a conv, node by
    node."""
    rng = np.random.default_rng(SEED + 43)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("w1", 8, 3, 3, 3),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_s"),
        w("bn_b", 8, scale=0.5),
        w("bn_m", 8, scale=0.2),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_v"),
        numpy_helper.from_array(
            rng.uniform(0.05, 0.4, (8, 1, 1)).astype(np.float32), "slope1"
        ),
        w("w2", 16, 8, 3, 3, scale=0.3),
        w("b2", 16),
        numpy_helper.from_array(np.array([0.2], np.float32), "slope2"),
        w("fc_w", 10, 16),
        w("fc_b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"],
                         name="bn"),
        helper.make_node("PRelu", ["b1", "slope1"], ["p1"], name="prelu_channels"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c2", "slope2"], ["p2"], name="prelu_one"),
        helper.make_node("GlobalAveragePool", ["p2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "prelu_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def pool_ceil_qat_model(path):
    """An AveragePool with ceil_mode whose last windows run past the picture (count_include_pad
    0: divided by their part inside it), node by node."""
    rng = np.random.default_rng(SEED + 47)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("w1", 8, 3, 3, 3),
        w("b1", 8),
        w("w2", 16, 8, 3, 3, scale=0.3),
        w("b2", 16),
        w("fc_w", 10, 16),
        w("fc_b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("AveragePool", ["r1"], ["p1"], name="avgpool_ceil",
                         kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "pool_ceil_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def convt_ops_model(path):
    """ConvTranspose attribute combinations, each output flattened and concatenated so that every
    element is compared, node by node."""
    rng = np.random.default_rng(SEED + 59)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("wa", 3, 4, 3, 3),
        w("ba", 4),
        w("wb", 3, 4, 3, 2),
        w("wc", 3, 4, 3, 3),
        w("bc", 4),
        w("wd", 3, 4, 3, 3),
        w("bd", 4),
        w("we", 3, 4, 2, 2),
        w("wf", 3, 4, 3, 3),
    ]
    nodes = [
        helper.make_node("ConvTranspose", ["x", "wa", "ba"], ["a"], name="convt_asym",
                         strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 1]),
        helper.make_node("ConvTranspose", ["x", "wb"], ["b"], name="convt_same_upper",
                         strides=[2, 3], auto_pad="SAME_UPPER"),
        helper.make_node("ConvTranspose", ["x", "wc", "bc"], ["c"], name="convt_same_lower",
                         strides=[2, 2], auto_pad="SAME_LOWER"),
        helper.make_node("ConvTranspose", ["x", "wd", "bd"], ["d"], name="convt_output_shape",
                         strides=[2, 2], output_shape=[14, 18]),
        helper.make_node("ConvTranspose", ["x", "we"], ["e"], name="convt_plain",
                         strides=[2, 2], kernel_shape=[2, 2]),
        helper.make_node("ConvTranspose", ["x", "wf"], ["f"], name="convt_stride1",
                         pads=[1, 1, 1, 1]),
    ]
    outs = []
    for v in "abcdef":
        nodes.append(helper.make_node("Flatten", [v], [v + "_flat"], name=v + "_flatten", axis=1))
        outs.append(v + "_flat")
    nodes.append(helper.make_node("Concat", outs, ["output"], name="concat", axis=1))
    graph = helper.make_graph(
        nodes,
        "convt_ops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 7, 9])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", None])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def decoder_qat_model(path):
    """An encoder-decoder body as segmentation and autoencoder nets have: two stride-2 convs down,
    a 4x4 stride-2 ConvTranspose (pads 1: TFLite's SAME) with BN and ReLU and a 2x2 stride-2
    ConvTranspose (TFLite's VALID) with ReLU back up, then a strided conv head, GAP and Gemm so
    that the network classifies, node by node."""
    rng = np.random.default_rng(SEED + 61)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    def bn(prefix, c):
        return [
            numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), prefix + "_s"),
            numpy_helper.from_array(rng.uniform(-0.2, 0.2, c).astype(np.float32), prefix + "_b"),
            numpy_helper.from_array(rng.uniform(-0.2, 0.2, c).astype(np.float32), prefix + "_m"),
            numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), prefix + "_v"),
        ]

    inits = [
        w("w1", 8, 3, 3, 3),
        w("b1", 8),
        w("w2", 16, 8, 3, 3, scale=0.3),
        w("b2", 16),
        w("wt1", 16, 8, 4, 4, scale=0.2),
        w("bt1", 8),
        *bn("bn_t1", 8),
        w("wt2", 8, 8, 2, 2, scale=0.3),
        w("w3", 16, 8, 3, 3, scale=0.3),
        w("b3", 16),
        w("fc_w", 10, 16),
        w("fc_b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="down1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="down2", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("ConvTranspose", ["r2", "wt1", "bt1"], ["t1"], name="up1",
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization",
                         ["t1", "bn_t1_s", "bn_t1_b", "bn_t1_m", "bn_t1_v"], ["n1"],
                         name="up1_bn"),
        helper.make_node("Relu", ["n1"], ["u1"], name="up1_relu"),
        helper.make_node("ConvTranspose", ["u1", "wt2"], ["t2"], name="up2", strides=[2, 2]),
        helper.make_node("Relu", ["t2"], ["u2"], name="up2_relu"),
        helper.make_node("Conv", ["u2", "w3", "b3"], ["c3"], name="head", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c3"], ["r3"], name="head_relu"),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "decoder_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def hsigmoid_se_qat_model(path):
    """MobileNetV3-style blocks whose squeeze-and-excitation gates are HardSigmoid, node by
    node: conv-BN-HardSwish, depthwise conv-BN-ReLU, a torchvision gate (GlobalAveragePool, 1x1
    conv-ReLU, 1x1 conv with bias, HardSigmoid alpha 1/6, Mul), 1x1 conv-BN and a residual Add,
    then a second gate whose 1x1 conv has BN and whose HardSigmoid keeps ONNX's default alpha
    0.2 (Keras's hard_sigmoid), GAP, Gemm."""
    rng = np.random.default_rng(SEED + 67)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    def bn(prefix, c):
        return [
            numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), prefix + "_s"),
            numpy_helper.from_array(rng.uniform(-0.3, 0.3, c).astype(np.float32), prefix + "_b"),
            numpy_helper.from_array(rng.uniform(-0.2, 0.2, c).astype(np.float32), prefix + "_m"),
            numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), prefix + "_v"),
        ]

    def bn_node(x, prefix, y):
        return helper.make_node("BatchNormalization",
                                [x, prefix + "_s", prefix + "_b", prefix + "_m", prefix + "_v"],
                                [y], name=prefix)

    inits = [
        w("w1", 16, 3, 3, 3), *bn("bn1", 16),
        w("w_dw", 16, 1, 3, 3, scale=0.6), *bn("bn_dw", 16),
        w("w_sq", 8, 16, 1, 1, scale=0.6), w("b_sq", 8),
        w("w_ex", 16, 8, 1, 1, scale=0.6), w("b_ex", 16, scale=0.8),
        w("w_pr", 16, 16, 1, 1), *bn("bn_pr", 16),
        w("w_sq2", 8, 16, 1, 1, scale=0.6), w("b_sq2", 8),
        w("w_ex2", 16, 8, 1, 1, scale=0.6), *bn("bn_ex2", 16),
        w("fc_w", 10, 16),
        w("fc_b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        bn_node("c1", "bn1", "b1"),
        helper.make_node("HardSwish", ["b1"], ["h1"], name="hswish1"),
        helper.make_node("Conv", ["h1", "w_dw"], ["cdw"], name="conv_dw", pads=[1, 1, 1, 1],
                         group=16),
        bn_node("cdw", "bn_dw", "bdw"),
        helper.make_node("Relu", ["bdw"], ["rdw"], name="relu_dw"),
        helper.make_node("GlobalAveragePool", ["rdw"], ["m"], name="se_pool"),
        helper.make_node("Conv", ["m", "w_sq", "b_sq"], ["sq"], name="se_fc1"),
        helper.make_node("Relu", ["sq"], ["sqr"], name="se_relu"),
        helper.make_node("Conv", ["sqr", "w_ex", "b_ex"], ["ex"], name="se_fc2"),
        helper.make_node("HardSigmoid", ["ex"], ["gate"], name="se_hsig", alpha=1.0 / 6.0),
        helper.make_node("Mul", ["gate", "rdw"], ["scaled"], name="se_mul"),
        helper.make_node("Conv", ["scaled", "w_pr"], ["cpr"], name="conv_project"),
        bn_node("cpr", "bn_pr", "bpr"),
        helper.make_node("Add", ["bpr", "h1"], ["res"], name="residual"),
        helper.make_node("GlobalAveragePool", ["res"], ["m2"], name="se2_pool"),
        helper.make_node("Conv", ["m2", "w_sq2", "b_sq2"], ["sq2"], name="se2_fc1"),
        helper.make_node("Relu", ["sq2"], ["sqr2"], name="se2_relu"),
        helper.make_node("Conv", ["sqr2", "w_ex2"], ["ex2"], name="se2_fc2"),
        bn_node("ex2", "bn_ex2", "bex2"),
        helper.make_node("HardSigmoid", ["bex2"], ["gate2"], name="se2_hsig"),
        helper.make_node("Mul", ["res", "gate2"], ["scaled2"], name="se2_mul"),
        helper.make_node("GlobalAveragePool", ["scaled2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "hsigmoid_se_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def maxmin_qat_model(path):
    """Max and Min of two activations whose ranges differ (each input requantized to the output's
    grid in the integer model), node by node: the Max of a conv-BN-ReLU and a plain conv, then
    the Min of two convs reading it, GAP, Gemm."""
    rng = np.random.default_rng(SEED + 71)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("w1", 8, 3, 3, 3),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_s"),
        w("bn_b", 8, scale=0.5),
        w("bn_m", 8, scale=0.2),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_v"),
        w("w2", 8, 3, 3, 3, scale=0.8),
        w("b2", 8),
        w("w3", 16, 8, 3, 3, scale=0.2),
        w("b3", 16),
        w("w4", 16, 8, 1, 1, scale=0.6),
        w("b4", 16, scale=0.8),
        w("fc_w", 10, 16),
        w("fc_b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"],
                         name="bn"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["x", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Max", ["r1", "c2"], ["mx"], name="max"),
        helper.make_node("Conv", ["mx", "w3", "b3"], ["c3"], name="conv3", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Conv", ["mx", "w4", "b4"], ["c4"], name="conv4", strides=[2, 2]),
        helper.make_node("Min", ["c3", "c4"], ["mn"], name="min"),
        helper.make_node("GlobalAveragePool", ["mn"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "maxmin_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def resize_linear_qat_model(path):
    """Bilinear Resize in the coordinate transformations torch writes, node by node: a strided
    branch brought back up 2x (half_pixel, by scales) and concatenated with a full-size branch,
    16x16 down to 11x11 (align_corners, by sizes), 11x11 up to 22x22 (pytorch_half_pixel), GAP,
    Gemm."""
    rng = np.random.default_rng(SEED + 73)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("w1", 8, 3, 3, 3),
        w("b1", 8),
        w("w2", 8, 3, 3, 3),
        w("b2", 8),
        w("w3", 16, 16, 3, 3, scale=0.2),
        w("b3", 16),
        w("w4", 16, 16, 3, 3, scale=0.2),
        w("b4", 16),
        w("fc_w", 10, 16),
        w("fc_b", 10),
        numpy_helper.from_array(np.array([], np.float32), "no_roi"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up2"),
        numpy_helper.from_array(np.array([1, 1, 0.6875, 0.6875], np.float32), "to11"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv_down", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Resize", ["r1", "no_roi", "up2"], ["u1"], name="resize_half_pixel",
                         mode="linear", coordinate_transformation_mode="half_pixel"),
        helper.make_node("Conv", ["x", "w2", "b2"], ["c2"], name="conv_full", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Concat", ["u1", "r2"], ["cat"], name="concat", axis=1),
        helper.make_node("Conv", ["cat", "w3", "b3"], ["c3"], name="conv3", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("Resize", ["r3", "no_roi", "to11"], ["d3"],
                         name="resize_align_corners", mode="linear",
                         coordinate_transformation_mode="align_corners"),
        helper.make_node("Conv", ["d3", "w4", "b4"], ["c4"], name="conv4", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c4"], ["r4"], name="relu4"),
        helper.make_node("Resize", ["r4", "no_roi", "up2"], ["u4"], name="resize_pytorch",
                         mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
        helper.make_node("GlobalAveragePool", ["u4"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "resize_linear_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def convt_pads_qat_model(path):
    """ConvTransposes whose cut TFLite's SAME and VALID cannot express (explicit padding in the
    engine): torch's 2x upsampling (3x3, stride 2, pads 1, output_padding 1) and a stride-1 one
    with asymmetric pads, node by node."""
    rng = np.random.default_rng(SEED + 67)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        w("w1", 8, 3, 3, 3),
        w("b1", 8),
        w("wt1", 8, 8, 3, 3, scale=0.3),
        w("bt1", 8),
        w("wt2", 8, 4, 3, 3, scale=0.3),
        w("bt2", 4),
        w("w3", 8, 4, 3, 3, scale=0.3),
        w("b3", 8),
        w("fc_w", 10, 8),
        w("fc_b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="down", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("ConvTranspose", ["r1", "wt1", "bt1"], ["t1"], name="up_torch",
                         strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
        helper.make_node("Relu", ["t1"], ["u1"], name="up_torch_relu"),
        helper.make_node("ConvTranspose", ["u1", "wt2", "bt2"], ["t2"], name="convt_asym",
                         pads=[2, 0, 0, 2]),
        helper.make_node("Relu", ["t2"], ["u2"], name="convt_asym_relu"),
        helper.make_node("Conv", ["u2", "w3", "b3"], ["c3"], name="head", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c3"], ["r3"], name="head_relu"),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "convt_pads_qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def run_ort(path, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: x})[0]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    out = os.path.join(root, "crates", "intq-onnx", "tests", "fixtures")
    only = None
    if "--only" in sys.argv:
        only = sys.argv[sys.argv.index("--only") + 1]
    args = [a for a in sys.argv[1:] if a not in ("--only", only)]
    if args:
        out = args[0]
    os.makedirs(out, exist_ok=True)
    models = []
    for name, m in torch_models():
        if only in (None, name):
            path = os.path.join(out, name + ".onnx")
            export_torch(name, m, path)
            models.append((name, (3, 32, 32)))
    if only in (None, "ops_helper"):
        helper_model(os.path.join(out, "ops_helper.onnx"))
        models.append(("ops_helper", (3, 16, 16)))
    if only in (None, "grouped_qat"):
        grouped_qat_model(os.path.join(out, "grouped_qat.onnx"))
        models.append(("grouped_qat", (3, 32, 32)))
    if only in (None, "hardswish_qat"):
        hardswish_qat_model(os.path.join(out, "hardswish_qat.onnx"))
        models.append(("hardswish_qat", (3, 32, 32)))
    if only in (None, "sigmoid_qat"):
        sigmoid_qat_model(os.path.join(out, "sigmoid_qat.onnx"))
        models.append(("sigmoid_qat", (3, 32, 32)))
    if only in (None, "se_qat"):
        se_qat_model(os.path.join(out, "se_qat.onnx"))
        models.append(("se_qat", (3, 32, 32)))
    if only in (None, "hsigmoid_mul"):
        hsigmoid_mul_model(os.path.join(out, "hsigmoid_mul.onnx"))
        models.append(("hsigmoid_mul", (3, 32, 32)))
    if only in (None, "preprocess_qat"):
        preprocess_qat_model(os.path.join(out, "preprocess_qat.onnx"))
        models.append(("preprocess_qat", (3, 32, 32)))
    if only in (None, "dilated_qat"):
        dilated_qat_model(os.path.join(out, "dilated_qat.onnx"))
        models.append(("dilated_qat", (3, 32, 32)))
    if only in (None, "act_qat"):
        act_qat_model(os.path.join(out, "act_qat.onnx"))
        models.append(("act_qat", (3, 32, 32)))
    if only in (None, "head_act_qat"):
        head_act_qat_model(os.path.join(out, "head_act_qat.onnx"))
        models.append(("head_act_qat", (3, 32, 32)))
    if only in (None, "resize_qat"):
        resize_qat_model(os.path.join(out, "resize_qat.onnx"))
        models.append(("resize_qat", (3, 32, 32)))
    if only in (None, "nhwc_qat"):
        nhwc_qat_model(os.path.join(out, "nhwc_qat.onnx"))
        models.append(("nhwc_qat", (32, 32, 3)))
    if only in (None, "prelu_qat"):
        prelu_qat_model(os.path.join(out, "prelu_qat.onnx"))
        models.append(("prelu_qat", (3, 32, 32)))
    if only in (None, "pool_ceil_qat"):
        pool_ceil_qat_model(os.path.join(out, "pool_ceil_qat.onnx"))
        models.append(("pool_ceil_qat", (3, 32, 32)))
    if only in (None, "convt_ops"):
        convt_ops_model(os.path.join(out, "convt_ops.onnx"))
        models.append(("convt_ops", (3, 7, 9)))
    if only in (None, "decoder_qat"):
        decoder_qat_model(os.path.join(out, "decoder_qat.onnx"))
        models.append(("decoder_qat", (3, 32, 32)))
    if only in (None, "convt_pads_qat"):
        convt_pads_qat_model(os.path.join(out, "convt_pads_qat.onnx"))
        models.append(("convt_pads_qat", (3, 32, 32)))
    if only in (None, "hsigmoid_se_qat"):
        hsigmoid_se_qat_model(os.path.join(out, "hsigmoid_se_qat.onnx"))
        models.append(("hsigmoid_se_qat", (3, 32, 32)))
    if only in (None, "maxmin_qat"):
        maxmin_qat_model(os.path.join(out, "maxmin_qat.onnx"))
        models.append(("maxmin_qat", (3, 32, 32)))
    if only in (None, "resize_linear_qat"):
        resize_linear_qat_model(os.path.join(out, "resize_linear_qat.onnx"))
        models.append(("resize_linear_qat", (3, 32, 32)))
    for name, chw in models:
        path = os.path.join(out, name + ".onnx")
        onnx.checker.check_model(onnx.load(path))
        seed = SEED + 1 + sum(name.encode())
        x = np.random.default_rng(seed).uniform(0.0, 1.0, (BATCH, *chw)).astype(np.float32)
        y = run_ort(path, x).astype(np.float32)
        np.save(os.path.join(out, name + ".input.npy"), x)
        np.save(os.path.join(out, name + ".output.npy"), y)
        ops = sorted({n.op_type for n in onnx.load(path).graph.node})
        print(f"{name}: {os.path.getsize(path)} bytes, output {y.shape}, ops {ops}")


if __name__ == "__main__":
    main()
