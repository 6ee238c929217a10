"""Agreement of intq's integer models with ONNX Runtime running their QDQ export.

For each fixture: an integer model, either `intq ptq --from FIXTURE.onnx` on a seeded picture
set (the float fixtures) or one epoch of `intq qat --from FIXTURE.onnx` then `intq convert` (the
fixtures the QAT network takes, with the ops of imported networks: transposed convolutions,
resizes, PReLU, Tanh, HardSigmoid gates, Max/Min, ...); `intq export --onnx` to QDQ form, then
the same test pictures through `intq run` (the integer engine) and through ONNX Runtime (which
requantizes in float), both fed the raw uint8 pixels the models read. Prints, per model, the
top-1 agreement and the largest difference of the output codes.

    tools/onnx-fixtures/.venv/bin/python tools/onnx-fixtures/qdq_agreement.py \
        [--images N] [--only NAME]

Needs a built `target/debug/intq` (or INTQ=path).
"""

import argparse
import os
import pathlib
import subprocess
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIX = ROOT / "crates/intq-onnx/tests/fixtures"
INTQ = os.environ.get("INTQ", str(ROOT / "target/debug/intq"))


def intq(*args):
    r = subprocess.run([INTQ, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"intq {' '.join(map(str, args[:1]))}: {r.stderr.strip()}")
    return r.stdout


def pictures(n, seed, shape):
    rng = np.random.default_rng(seed)
    # Smooth seeded patterns plus noise: varied enough to spread the logits.
    h, w, c = shape
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.empty((n, h, w, c), np.uint8)
    for i in range(n):
        f = rng.uniform(0.05, 0.5, size=(c, 2))
        ph = rng.uniform(0, 6.3, size=c)
        img = np.stack([np.sin(f[k, 0] * yy + f[k, 1] * xx + ph[k]) for k in range(c)], -1)
        img = 127.5 * (img + 1) + rng.normal(0, 20, size=img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


PTQ = ["resnet_tiny", "mobilenetv2_qat", "mobilenetv2_tiny", "grouped_qat", "hardswish_qat",
       "sigmoid_qat", "se_qat", "hsigmoid_mul", "mobilenetv3_tiny"]
# The fixtures `intq qat --from` takes (as tools/onnx-fixtures/tflite_check.sh converts them;
# convt_ops, a parity fixture with no classifier head, takes no labelled pictures).
QAT = ["resnet_tiny", "mobilenetv2_tiny", "grouped_qat", "hardswish_qat", "sigmoid_qat",
       "se_qat", "mobilenetv3_tiny", "mobilenetv3_dynamo", "preprocess_qat", "act_qat",
       "head_act_qat", "resize_qat", "resize_linear_qat", "nhwc_qat", "prelu_qat",
       "pool_ceil_qat", "dilated_qat", "decoder_qat", "convt_pads_qat",
       "keras_cnn", "hsigmoid_se_qat", "maxmin_qat"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--only", default=None)
    a = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="intq_qdq_"))
    sets = {}

    def picture_set(src):
        # The fixture's picture size: NCHW unless its last dimension holds the channels.
        dims = [d.dim_value for d in onnx.load(src).graph.input[0].type.tensor_type.shape.dim]
        shape = tuple(dims[1:]) if dims[3] in (1, 3) else (dims[2], dims[3], dims[1])
        if shape not in sets:
            x_tr, x_te = pictures(64, 1, shape), pictures(a.images, 2, shape)
            data = tmp / f"pics_{len(sets)}.npz"
            np.savez(
                data,
                x_train=x_tr,
                y_train=np.arange(len(x_tr)) % 10,
                x_test=x_te,
                y_test=np.arange(len(x_te)) % 10,
            )
            sets[shape] = (data, x_te)
        return sets[shape]

    runs = [("ptq", n) for n in PTQ] + [("qat", n) for n in QAT]
    for how, name in runs:
        if a.only and a.only != name:
            continue
        for scheme in ["uint8", "int8"]:
            tag = f"{name}_{how}_{scheme}"
            m = tmp / f"{tag}.intq"
            extra = ["--per-channel"] if scheme == "int8" else []
            src = FIX / f"{name}.onnx"
            data, x_te = picture_set(src)
            try:
                if how == "ptq":
                    intq("ptq", "--from", src, "--data", data, "--calib", 64,
                         "--scheme", scheme, *extra, "--out", m)
                else:
                    ck = tmp / f"{tag}.ckpt"
                    intq("qat", "--from", src, "--data", data, "--epochs", 1, "--batch-size", 8,
                         "--scheme", scheme, *extra, "--out", ck)
                    intq("convert", ck, "--out", m)
                q = tmp / f"{tag}.qdq.onnx"
                intq("export", m, "--onnx", q)
            except RuntimeError as e:
                print(f"{name} {how} {scheme}: {e}")
                continue
            model = onnx.load(q)
            onnx.checker.check_model(model)
            ops = sorted({n.op_type for n in model.graph.node} - {
                "QuantizeLinear", "DequantizeLinear", "Transpose", "Identity"})
            sess = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"])
            # The models read raw uint8 pixels NHWC and return the logits' codes.
            x = x_te
            got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            got = got.reshape(len(x), -1).astype(np.int64)
            agree, max_codes = 0, 0
            for i in range(len(x)):
                xi, yo = tmp / "x.npy", tmp / "y.npy"
                np.save(xi, x[i : i + 1])
                intq("run", m, "-i", xi, "-o", yo)
                want = np.load(yo).reshape(-1).astype(np.int64)
                agree += int(np.argmax(want) == np.argmax(got[i]))
                max_codes = max(max_codes, int(np.abs(want - got[i]).max()))
            print(
                f"{name} {how} {scheme}{' per-channel' if extra else ''}: top-1 agreement "
                f"{agree}/{len(x)}, max output difference {max_codes} codes  [{' '.join(ops)}]",
                flush=True,
            )


if __name__ == "__main__":
    main()
