"""Makes int8 .tflite models of today's edge architectures with TensorFlow's own converter:
Keras's MobileNetV3-Small, an EfficientNet-Lite-style network, a DeepLab-style segmenter and an
SSD-style detector ending in TFLite's custom TFLite_Detection_PostProcess op (fast and regular
NMS), random weights (seeded), full-integer quantization from a random representative set. The
converter, not intq, writes every op, so these test intq's importer on graphs as TensorFlow
lays them out. Run it through make.sh, which sets up the venv and saves the golden fixtures.

    python make.py OUT_DIR
"""

import os
import sys
import tempfile

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


SSD_CLASSES = 3  # plus a background class at index 0, which the post-process skips
SSD_ASPECTS = (1.0, 2.0, 0.5)


def ssd_anchors(grids, scales):
    """Center-size anchors (ycenter, xcenter, height, width), normalized to the image, one per
    aspect ratio at each cell of each feature map: the layout the post-process op reads."""
    rows = []
    for (h, w), scale in zip(grids, scales):
        for i in range(h):
            for j in range(w):
                for a in SSD_ASPECTS:
                    rows.append(((i + 0.5) / h, (j + 0.5) / w, scale / np.sqrt(a),
                                 scale * np.sqrt(a)))
    return np.array(rows, np.float32)


def ssd_style():
    """A small SSD: a MobileNetV2 backbone (alpha 0.35, 96x96) with box and class heads on two
    feature maps (6x6 and 3x3), box encodings and sigmoid class scores concatenated over both;
    the post-process is added in SsdModule, as TensorFlow's Object Detection API exports it.
    The heads are rescaled once built (calibrate_ssd_heads) so random weights give spread
    scores and boxes rather than saturated ones."""
    inp = keras.Input((96, 96, 3), batch_size=1)
    backbone = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None)
    body = keras.Model(backbone.input, [backbone.get_layer("block_13_expand_relu").output,
                                        backbone.get_layer("block_16_project_BN").output])
    maps = body(inp)
    k = len(SSD_ASPECTS)
    boxes, scores = [], []
    for n, fm in enumerate(maps):
        b = layers.Conv2D(k * 4, 3, padding="same", name=f"box_head{n}")(fm)
        boxes.append(layers.Reshape((-1, 4), name=f"box_reshape{n}")(b))
        c = layers.Conv2D(k * (SSD_CLASSES + 1), 3, padding="same", name=f"class_head{n}")(fm)
        scores.append(layers.Reshape((-1, SSD_CLASSES + 1), name=f"class_reshape{n}")(c))
    box = layers.Concatenate(axis=1, name="box_encodings")(boxes)
    cls = layers.Concatenate(axis=1, name="class_logits")(scores)
    cls = layers.Activation("sigmoid", name="class_predictions")(cls)
    return keras.Model(inp, [box, cls], name="ssd_style")


def calibrate_ssd_heads(model, rng):
    """Scales each head's output channels so that, on random pictures, box encodings spread
    about ±1.5 (boxes near their anchors) and class logits about -1 ± 1.5 (some scores over the
    threshold, few saturated)."""
    images = rng.uniform(0.0, 1.0, (8, *model.input_shape[1:])).astype(np.float32)
    for name, mean, std in [("box_head", 0.0, 1.5), ("class_head", -1.0, 1.5)]:
        for layer in all_layers(model):
            if layer.name.startswith(name):
                probe = keras.Model(model.input, layer.output)
                out = np.asarray(probe(images, training=False))
                out = out.reshape(-1, out.shape[-1])
                kernel, bias = layer.get_weights()
                # Per output channel: a random backbone's channels differ more in their means
                # than across positions, which would leave one class on top everywhere.
                a = std / np.maximum(out.std(axis=0), 1e-6)
                layer.set_weights([kernel * a, (bias - out.mean(axis=0)) * a + mean])


def postprocess_signature(use_regular_nms):
    """The `experimental_implements` text the MLIR converter legalizes into the custom op."""
    # Regular NMS zeroes the rows past its count, so there the score threshold leaves fewer
    # detections than max_detections; fast NMS leaves those rows as the arena held them, so
    # there every row is a detection. The converter writes no detections_per_class into the
    # op's options (TFLite then takes 100, the value here).
    attrs = [("max_detections", "i", 20 if use_regular_nms else 10),
             ("max_classes_per_detection", "i", 1),
             ("detections_per_class", "i", 100), ("use_regular_nms", "b", use_regular_nms),
             ("nms_score_threshold", "f", 0.85), ("nms_iou_threshold", "f", 0.6),
             ("num_classes", "i", SSD_CLASSES), ("y_scale", "f", 10.0), ("x_scale", "f", 10.0),
             ("h_scale", "f", 5.0), ("w_scale", "f", 5.0)]
    text = ['name: "TFLite_Detection_PostProcess"']
    for key, kind, value in attrs:
        if kind == "b":
            value = str(value).lower()
        text.append(f'attr {{ key: "{key}" value {{ {kind}: {value} }} }}')
    return " ".join(text)


class SsdModule:
    """The network, then an empty composite function standing for the post-process: TensorFlow
    has no such op, and the converter replaces the function by TFLite's custom op."""

    def __init__(self, model, anchors, use_regular_nms):
        self.model = model
        self.anchors = anchors

        @tf.function(experimental_implements=postprocess_signature(use_regular_nms))
        def postprocess(box_encodings, class_predictions, anchors):
            del box_encodings, class_predictions, anchors
            zero = tf.constant(0.0, tf.float32)
            return zero, zero, zero, zero

        self.postprocess = postprocess

    def detect(self, image):
        box, cls = self.model(image, training=False)
        # The op's outputs are boxes, classes, scores, count; reversed, as the Object Detection
        # API returns them, the model's signature lists the count first.
        return self.postprocess(box, cls, tf.constant(self.anchors))[::-1]

    def save(self, path):
        """A SavedModel with Keras's variables tracked, as the Object Detection API exports."""
        archive = keras.export.ExportArchive()
        archive.track(self.model)
        archive.add_endpoint("serve", self.detect,
                             [tf.TensorSpec(self.model.input_shape, tf.float32, name="image")])
        archive.write_out(path)


MODELS = {
    "mobilenet_v3_small": mobilenet_v3_small,
    "efficientnet_lite_style": efficientnet_lite_style,
    "deeplab_style": deeplab_style,
    "ssd_style": ssd_style,
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


def convert(model, rng, edges, module=None):
    shape = model.input_shape[1:]

    def representative():
        for _ in range(16):
            yield [rng.uniform(0.0, 1.0, (1, *shape)).astype(np.float32)]

    if module is None:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        return quantize(conv, representative, edges, detector=False)
    # Through a SavedModel, as the Object Detection API exports, so the weights freeze.
    with tempfile.TemporaryDirectory() as saved:
        module.save(saved)
        conv = tf.lite.TFLiteConverter.from_saved_model(saved)
        return quantize(conv, representative, edges, detector=True)


def quantize(conv, representative, edges, detector):
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if detector:
        # The post-process stays TFLite's custom op, reading the float box encodings, scores
        # and anchors dequantized; its outputs stay float.
        conv.allow_custom_ops = True
    if edges == "int8":
        conv.inference_input_type = tf.int8
        if not detector:
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
        if name == "ssd_style":
            calibrate_ssd_heads(model, rng)
        variants = [(edges, None) for edges in ("int8", "float")]
        if name == "ssd_style":
            anchors = ssd_anchors([(6, 6), (3, 3)], [0.3, 0.6])
            variants = [("int8", SsdModule(model, anchors, False)),
                        ("int8_regular_nms", SsdModule(model, anchors, True))]
        for edges, module in variants:
            data = convert(model, np.random.default_rng(seed), edges.split("_")[0], module)
            path = os.path.join(out, f"{name}_{edges}.tflite")
            with open(path, "wb") as f:
                f.write(data)
            print(f"{path}: {len(data)} bytes")


if __name__ == "__main__":
    main()
