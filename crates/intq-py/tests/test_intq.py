"""The Python module against the `intq` binary: `Model.run` returns the bytes `intq run` writes
for the same inputs (uint8 and int8 models, code and float edges, every ISA tier, several
threads at once), and hostile calls raise clear exceptions.

The binary is $INTQ_BIN, else target/debug/intq or target/release/intq of this repository.
"""

import concurrent.futures
import os
import pathlib
import subprocess

import numpy as np
import pytest

import intq

REPO = pathlib.Path(__file__).resolve().parents[3]
FIXTURES = REPO / "crates" / "intq-tflite" / "tests" / "fixtures"


@pytest.fixture(scope="module")
def intq_bin() -> pathlib.Path:
    candidates = [os.environ.get("INTQ_BIN")] if os.environ.get("INTQ_BIN") else [
        str(REPO / "target" / "debug" / "intq"),
        str(REPO / "target" / "release" / "intq"),
    ]
    for c in candidates:
        if pathlib.Path(c).is_file():
            return pathlib.Path(c)
    pytest.fail(f"no intq binary (tried {candidates}): build it with `cargo build -p intq-cli`")


@pytest.fixture(scope="module")
def models(intq_bin, tmp_path_factory) -> dict:
    """Models with uint8 and int8 code edges (zoo small-cnn through the export path) and
    committed TFLite fixtures (int8 codes; float input with uint8 and float outputs)."""
    out = tmp_path_factory.mktemp("models")
    found = {}
    for scheme in ["uint8", "int8"]:
        path = out / f"small_cnn_{scheme}.intq"
        subprocess.run(
            [str(intq_bin), "bench", "model", "--model", "small-cnn", "--scheme", scheme,
             "--iters", "1", "--min-ms", "0", "--save", str(path)],
            check=True, stdout=subprocess.DEVNULL,
        )
        found[f"small_cnn_{scheme}"] = path
    for name in ["image_classification", "op_zoo_u8", "op_zoo_i8"]:
        found[name] = FIXTURES / name / f"{name}.tflite"
    return found


def random_inputs(model: intq.Model, seed: int) -> list:
    rng = np.random.default_rng(seed)
    arrays = []
    for t in model.inputs:
        if t.dtype == "uint8":
            arrays.append(rng.integers(0, 256, size=t.shape, dtype=np.uint8))
        elif t.dtype == "int8":
            arrays.append(rng.integers(-128, 128, size=t.shape, dtype=np.int8))
        else:
            arrays.append(rng.uniform(-1.5, 1.5, size=t.shape).astype(np.float32))
    return arrays


def cli_run(intq_bin, model_path, inputs, tmp_path) -> list:
    args = [str(intq_bin), "run", str(model_path)]
    outs = []
    for i, a in enumerate(inputs):
        p = tmp_path / f"in{i}.npy"
        np.save(p, a)
        args += ["-i", str(p)]
    n_out = len(intq.Model(model_path).outputs)
    for k in range(n_out):
        p = tmp_path / f"out{k}.npy"
        args += ["-o", str(p)]
        outs.append(p)
    subprocess.run(args, check=True)
    return [np.load(p) for p in outs]


def assert_same_bytes(got: list, want: list, what: str):
    assert len(got) == len(want), what
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype, f"{what}: output {k} dtype {g.dtype} vs {w.dtype}"
        assert g.shape == w.shape, f"{what}: output {k} shape {g.shape} vs {w.shape}"
        assert g.tobytes() == w.tobytes(), f"{what}: output {k} differs"


MODEL_NAMES = ["small_cnn_uint8", "small_cnn_int8", "image_classification", "op_zoo_u8", "op_zoo_i8"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_run_matches_the_cli_byte_for_byte(name, models, intq_bin, tmp_path):
    model = intq.Model(models[name])
    for seed in range(2):
        inputs = random_inputs(model, seed)
        want = cli_run(intq_bin, models[name], inputs, tmp_path)
        assert_same_bytes(model.run(inputs), want, f"{name} seed {seed}")


def test_code_edge_models_take_and_return_codes(models):
    # Converted models take uint8 NHWC pixels whatever their scheme; the int8 scheme returns
    # int8 codes. The MLPerf model takes int8 codes.
    for name, dtype_in, dtype_out in [("small_cnn_uint8", "uint8", "uint8"),
                                      ("small_cnn_int8", "uint8", "int8"),
                                      ("image_classification", "int8", "int8")]:
        model = intq.Model(models[name])
        assert [t.dtype for t in model.inputs] == [dtype_in], name
        assert model.inputs[0].quantization == "per_tensor"
        assert model.inputs[0].scale > 0
        (out,) = model.run(random_inputs(model, 3))
        assert out.dtype == np.dtype(dtype_out), name
        assert out.dtype == np.dtype(model.outputs[0].dtype)


def test_input_forms_agree(models):
    model = intq.Model(models["op_zoo_u8"])
    x = random_inputs(model, 7)
    name = model.inputs[0].name
    want = model.run(x)
    assert_same_bytes(model.run(x[0]), want, "single array")
    assert_same_bytes(model.run(tuple(x)), want, "tuple")
    assert_same_bytes(model.run({name: x[0]}), want, "dict")
    assert_same_bytes(model.run([x[0].astype(np.float64)]), want, "float64 for a float edge")
    # A non-contiguous view gives the values it shows.
    wide = np.zeros(x[0].shape[:-1] + (2 * x[0].shape[-1],), np.float32)
    wide[..., ::2] = x[0]
    assert_same_bytes(model.run([wide[..., ::2]]), want, "strided view")


def test_any_batch_equals_one_image_at_a_time(models):
    model = intq.Model(models["image_classification"])
    t = model.inputs[0]
    rng = np.random.default_rng(5)
    batch = rng.integers(-128, 128, size=[3] + t.shape[1:], dtype=np.int8)
    (together,) = model.run(batch)
    assert together.shape[0] == 3
    for i in range(3):
        (alone,) = model.run(batch[i : i + 1])
        assert together[i : i + 1].tobytes() == alone.tobytes(), f"image {i}"
    # The run's reused buffers, grown to 3 and run at 1, give the batch of 3 again.
    (again,) = model.run(batch)
    assert again.tobytes() == together.tobytes()
    with pytest.raises(ValueError, match=r"any leading batch"):
        model.run(np.zeros([0] + t.shape[1:], np.int8))


def test_tensor_info(models):
    model = intq.Model(models["image_classification"])
    (t,) = model.inputs
    assert (t.name, t.dtype, t.shape) == ("input_1_int8", "int8", [1, 32, 32, 3])
    assert (t.scale, t.zero_point) == (np.float32(7.8125e-3), 0)
    assert (t.scales, t.zero_points, t.axis) == ([t.scale], [0], None)
    fz = intq.Model(models["op_zoo_u8"])
    assert fz.inputs[0].dtype == "float32"
    assert fz.inputs[0].quantization is None and fz.inputs[0].scale is None
    assert [o.dtype for o in fz.outputs] == ["float32", "uint8", "uint8", "uint8"]
    assert "TensorInfo(name=" in repr(t)


def test_every_tier_and_thread_count_gives_the_same_bytes(models):
    path = models["small_cnn_int8"]
    base = intq.Model(path, isa="reference", threads=1)
    x = random_inputs(base, 11)
    want = base.run(x)
    assert intq.available_isas()[-1] == "reference"
    for isa in intq.available_isas():
        for threads in [1, 2]:
            m = intq.Model(path, isa=isa, threads=threads)
            assert (m.isa, m.threads) == (isa, threads)
            assert_same_bytes(m.run(x), want, f"{isa} at {threads} threads")


def test_from_bytes_equals_from_file(models):
    for name in ["small_cnn_uint8", "op_zoo_i8"]:
        path = models[name]
        m = intq.Model(path)
        x = random_inputs(m, 5)
        data = pathlib.Path(path).read_bytes()
        fmt = "tflite" if str(path).endswith(".tflite") else "intq"
        for f in ["auto", fmt]:
            assert_same_bytes(intq.Model.from_bytes(data, format=f).run(x), m.run(x), f"{name} {f}")


def test_threads_share_one_model(models):
    model = intq.Model(models["small_cnn_uint8"], threads=2)
    inputs = [random_inputs(model, s) for s in range(24)]
    serial = [model.run(x) for x in inputs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(model.run, inputs))
    for s, (p, w) in enumerate(zip(parallel, serial)):
        assert_same_bytes(p, w, f"input {s} run concurrently")


def test_run_releases_the_interpreter_lock(models):
    """While `run` is in the engine, another Python thread runs. The interpreter's switch
    interval is made so long that it never takes the lock from a thread, so the counting thread
    gets it only when a holder gives it up: in `run`, if the engine gives it up, or in the
    counting thread's own `sleep(0)`. The count read just before and just after a call then
    differ only if the lock was released during it; a run of 64 images gives the thread time to
    take it (the call is repeated a few times in case the OS was slow to run it)."""
    import sys
    import threading
    import time

    model = intq.Model(models["image_classification"], threads=1)
    x = np.concatenate([random_inputs(model, s)[0] for s in range(64)])
    count, done, started = [0], threading.Event(), threading.Event()

    def counter():
        started.set()
        while not done.is_set():
            count[0] += 1
            time.sleep(0)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    thread = threading.Thread(target=counter)
    try:
        thread.start()
        started.wait()
        advanced = 0
        for _ in range(10):
            before = count[0]
            model.run(x)
            advanced += count[0] > before
            if advanced:
                break
    finally:
        done.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert advanced, "no other Python thread ran while the model ran"


def test_quantize_and_dequantize_are_the_engine_edges():
    x = np.array([-3.0, -0.75, -0.25, 0.0, 0.25, 0.75, 1.0, 1e9, np.nan], np.float32)
    q = intq.quantize(x, 0.5, 3, "uint8")
    # round half away from zero: -0.5 -> -1, 0.5 -> 1, 1.5 -> 2; NaN -> the zero point.
    assert q.dtype == np.uint8
    assert q.tolist() == [0, 1, 2, 3, 4, 5, 5, 255, 3]
    q8 = intq.quantize(x.reshape(3, 3), 0.5, -128, "int8")
    assert q8.dtype == np.int8 and q8.shape == (3, 3)
    assert q8.ravel().tolist() == [-128, -128, -128, -128, -127, -126, -126, 127, -128]
    r = intq.dequantize(q, 0.5, 3)
    assert r.dtype == np.float32
    assert r.tolist() == [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0, 126.0, 0.0]
    assert intq.dequantize(q8, 0.5, -128).shape == (3, 3)


def test_hostile_calls_raise_clear_exceptions(models, tmp_path):
    model = intq.Model(models["small_cnn_uint8"])
    (t,) = model.inputs
    good = random_inputs(model, 1)[0]

    with pytest.raises(ValueError, match=r"shape"):
        model.run(good[:, :-1])
    with pytest.raises(ValueError, match=r"shape"):
        model.run(good.reshape(-1))
    with pytest.raises(TypeError, match=r"uint8.*float32|float32.*uint8"):
        model.run(good.astype(np.float32))
    with pytest.raises(TypeError, match=r"int8"):
        model.run(good.astype(np.int8))
    with pytest.raises(TypeError, match=r"numpy.ndarray"):
        model.run([good.tolist()])
    with pytest.raises(ValueError, match=r"1 input\(s\), 2 given"):
        model.run([good, good])
    with pytest.raises(ValueError, match=r"no input named 'nope'"):
        model.run({"nope": good})
    with pytest.raises(TypeError, match=r"float64"):
        intq.Model(models["image_classification"]).run(np.zeros([1, 32, 32, 3]))

    missing = tmp_path / "missing.intq"
    with pytest.raises(FileNotFoundError, match="missing.intq"):
        intq.Model(missing)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        intq.Model(tmp_path / "missing.tflite")
    garbage = tmp_path / "garbage.intq"
    garbage.write_bytes(b"\x89INTQ\r\n\x1a" + b"\0" * 40)
    with pytest.raises(intq.ModelError, match="garbage.intq"):
        intq.Model(garbage)
    with pytest.raises(intq.ModelError):
        intq.Model.from_bytes(b"\0\0\0\0TFL3\0\0")
    with pytest.raises(ValueError, match="format"):
        intq.Model.from_bytes(b"", format="onnx")
    with pytest.raises(ValueError, match="sse9"):
        intq.Model(models["small_cnn_uint8"], isa="sse9")
    with pytest.raises(ValueError, match="scale"):
        intq.quantize([1.0], 0.0, 0)
    with pytest.raises(ValueError, match="uint8"):
        intq.quantize([1.0], 1.0, 0, "int32")
    with pytest.raises(TypeError):
        intq.dequantize(np.zeros(3, np.float32), 1.0, 0)
    # The model still runs after every refusal.
    assert model.run(good)[0].shape == tuple(model.outputs[0].shape)
