"""Makes int8 .tflite models of today's edge architectures with TensorFlow's own converter:
Keras's MobileNetV3-Small, an EfficientNet-Lite-style network and a DeepLab-style segmenter,
random weights (seeded), full-integer quantization from a random representative set. The
converter, not intq, writes every op, so these test intq's importer on graphs as TensorFlow
lays them out. Run it through make.sh, which sets up the venv and saves the golden fixtures.

    python make.py OUT_DIR
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

keras = tf.keras
layers = keras.layers


def mobilenet_v3_small():
    return keras.applications.MobileNetV3Small(
        input_shape=(96, 96, 3), alpha=0.5, weights=None, classes=10,
        include_preprocessing=False, dropout_rate=0.0)


def mbconv(x, out_c, expand, stride, name):
    """EfficientNet-Lite's block: ReLU6 in place of swish and no squeeze-and-excitation."""
    in_c = x.shape[-1]
    y = x
    if expand != 1:
        y = layers.Conv2D(in_c * expand, 1, use_bias=False, name=f"{name}_expand")(y)
        y = layers.BatchNormalization(name=f"{name}_expand_bn")(y)
        y = layers.ReLU(6.0, name=f"{name}_expand_relu6")(y)
    y = layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu6")(y)
    y = layers.Conv2D(out_c, 1, use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if stride == 1 and in_c == out_c:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def efficientnet_lite_style():
    inp = keras.Input((64, 64, 3), batch_size=1)
    x = layers.Conv2D(16, 3, 2, padding="same", use_bias=False, name="stem")(inp)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    for i, (c, e, s) in enumerate([(16, 1, 1), (24, 6, 2), (24, 6, 1), (40, 6, 2), (40, 6, 1),
                                   (80, 6, 2), (80, 6, 1)]):
        x = mbconv(x, c, e, s, f"block{i}")
    x = layers.Conv2D(256, 1, use_bias=False, name="head")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, layers.Softmax(name="probs")(x), name="efficientnet_lite_style")


def deeplab_style():
    """A MobileNetV2 backbone at output stride 8 with atrous spatial pyramid pooling (dilated
    convolutions and an image-pooling branch), a transposed-convolution decoder and a final
    bilinear resize to the input size: the ops DeepLab-v3 models deploy with."""
    inp = keras.Input((64, 64, 3), batch_size=1)
    backbone = keras.applications.MobileNetV2(
        input_shape=(64, 64, 3), alpha=0.35, include_top=False, weights=None)
    feat = keras.Model(backbone.input, backbone.get_layer("block_6_expand_relu").output)(inp)
    branches = [layers.Conv2D(32, 1, activation="relu", name="aspp0")(feat)]
    for rate in (2, 4):
        branches.append(layers.Conv2D(32, 3, padding="same", dilation_rate=rate,
                                      activation="relu", name=f"aspp_rate{rate}")(feat))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="image_pool")(feat)
    pooled = layers.Conv2D(32, 1, activation="relu", name="image_pool_conv")(pooled)
    pooled = layers.UpSampling2D(size=feat.shape[1:3], interpolation="bilinear",
                                 name="image_pool_up")(pooled)
    branches.append(pooled)
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = layers.Conv2D(32, 1, activation="relu", name="aspp_project")(x)
    x = layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu",
                               name="decoder_up")(x)
    x = layers.Conv2D(5, 1, name="classes")(x)
    x = layers.Resizing(64, 64, interpolation="bilinear", name="to_input_size")(x)
    return keras.Model(inp, x, name="deeplab_style")


MODELS = {
    "mobilenet_v3_small": mobilenet_v3_small,
    "efficientnet_lite_style": efficientnet_lite_style,
    "deeplab_style": deeplab_style,
}


def all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def randomize_batch_norm(model, rng):
    """Fresh batch norms are identities; spread their statistics so folding them is tested."""
    for layer in all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                rng.uniform(-0.2, 0.2, beta.shape).astype(np.float32),
                rng.uniform(-0.2, 0.2, mean.shape).astype(np.float32),
                rng.uniform(0.5, 1.5, var.shape).astype(np.float32),
            ])


def convert(model, rng, edges):
    shape = model.input_shape[1:]

    def representative():
        for _ in range(16):
            yield [rng.uniform(0.0, 1.0, (1, *shape)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if edges == "int8":
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for seed, (name, make) in enumerate(MODELS.items()):
        keras.utils.set_random_seed(seed)
        rng = np.random.default_rng(seed)
        model = make()
        randomize_batch_norm(model, rng)
        for edges in ("int8", "float"):
            data = convert(model, np.random.default_rng(seed), edges)
            path = os.path.join(out, f"{name}_{edges}.tflite")
            with open(path, "wb") as f:
                f.write(data)
            print(f"{path}: {len(data)} bytes")


if __name__ == "__main__":
    main()
