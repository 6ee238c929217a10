#!/usr/bin/env python3
"""Builds keras_cnn.onnx: a small Keras CNN (Conv2D + BatchNormalization + ReLU, DepthwiseConv2D +
BatchNormalization + ReLU, a 1x1 Conv2D + ReLU, GlobalAveragePooling2D, Dense, softmax) at
32x32x3, converted by tf2onnx (opset 13) as Keras models reach ONNX: NHWC input transposed to NCHW
at the start, MatMul + Add for the Dense layer. Writes it with ONNX Runtime's outputs on seeded
NHWC pictures, into crates/intq-onnx/tests/fixtures:

  keras_cnn.onnx, keras_cnn.input.npy (batch 4, [N, 32, 32, 3]), keras_cnn.output.npy

Weights and BN statistics are seeded random, so BN is not an identity. Needs TensorFlow 2.15
(tf.keras, Keras 2: the Keras tf2onnx converts) and tf2onnx; see this folder's README:

  tools/onnx-fixtures/.venv-tf/bin/python tools/onnx-fixtures/keras_fixture.py [OUT_DIR]
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

SEED = 20261205
BATCH = 4


def model():
    tf.keras.utils.set_random_seed(SEED)
    L = tf.keras.layers
    x = tf.keras.Input((32, 32, 3), name="pixels")
    y = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv1")(x)
    y = L.BatchNormalization(name="bn1")(y)
    y = L.ReLU(name="relu1")(y)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(y)
    y = L.BatchNormalization(name="bn2")(y)
    y = L.ReLU(name="relu2")(y)
    y = L.Conv2D(32, 1, name="pw")(y)
    y = L.ReLU(name="relu3")(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    y = L.Dense(10, name="fc")(y)
    y = L.Softmax(name="softmax")(y)
    m = tf.keras.Model(x, y, name="keras_cnn")
    rng = np.random.default_rng(SEED)
    for layer in m.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, c).astype(np.float32),
                rng.uniform(-0.2, 0.2, c).astype(np.float32),
                rng.uniform(-0.2, 0.2, c).astype(np.float32),
                rng.uniform(0.5, 1.5, c).astype(np.float32),
            ])
        elif layer.name in ("pw", "fc"):
            w, b = layer.get_weights()
            layer.set_weights([w, rng.uniform(-0.2, 0.2, b.shape).astype(np.float32)])
    return m


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(os.path.dirname(os.path.dirname(here)), "crates", "intq-onnx", "tests",
                       "fixtures")
    if len(sys.argv) > 1:
        out = sys.argv[1]
    m = model()
    spec = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="pixels"),)
    proto, _ = tf2onnx.convert.from_keras(m, input_signature=spec, opset=13)
    proto.producer_name = "tf2onnx"
    path = os.path.join(out, "keras_cnn.onnx")
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)
    x = np.random.default_rng(SEED + 71).uniform(0.0, 1.0, (BATCH, 32, 32, 3)).astype(np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0].astype(np.float32)
    keras = m(x).numpy()
    np.save(os.path.join(out, "keras_cnn.input.npy"), x)
    np.save(os.path.join(out, "keras_cnn.output.npy"), y)
    ops = [n.op_type for n in proto.graph.node]
    print(f"keras_cnn: {os.path.getsize(path)} bytes, output {y.shape}, ops {ops}, "
          f"max |ort - keras| {np.abs(y - keras).max():.2e}, tf {tf.__version__}, "
          f"tf2onnx {tf2onnx.__version__}")


if __name__ == "__main__":
    main()
