//! `intq inspect` and `intq run` on float ONNX models: the fixtures of crates/intq-onnx run at
//! batch 4 equal ONNX Runtime's outputs, and an op intq cannot take is an error naming it.

mod common;
use common::intq;

use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../intq-onnx/tests/fixtures")
        .join(name)
}

fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let (h, v) = intq_data::npy::parse::<f32>(&std::fs::read(path).unwrap()).unwrap();
    (h.shape, v)
}

#[test]
fn inspect_lists_the_imported_graph() {
    let m = fixture("resnet_tiny.onnx");
    let out = intq(&["inspect", m.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("opset 17"), "{text}");
    assert!(text.contains("input [N, 3, 32, 32]"), "{text}");
    assert!(
        text.contains("BatchNormalization") && text.contains("Linear 32 -> 10"),
        "{text}"
    );
}

#[test]
fn run_matches_onnxruntime_at_any_batch() {
    let dir = common::scratch("onnx_cli", "run");
    for name in [
        "resnet_tiny",
        "mobilenetv2_tiny",
        "mobilenetv2_qat",
        "ops_helper",
        "grouped_qat",
        "hardswish_qat",
        "sigmoid_qat",
        "se_qat",
        "hsigmoid_mul",
        "mobilenetv3_tiny",
        "preprocess_qat",
        "dilated_qat",
        "act_qat",
        "resize_qat",
        "nhwc_qat",
        "prelu_qat",
        "pool_ceil_qat",
        "convt_ops",
        "decoder_qat",
        "keras_cnn",
        "hsigmoid_se_qat",
        "maxmin_qat",
        "resize_linear_qat",
        "convt_pads_qat",
        "mobilenetv3_dynamo",
    ] {
        let out_path = dir.join(format!("{name}.out.npy"));
        let out = intq(&[
            "run",
            fixture(&format!("{name}.onnx")).to_str().unwrap(),
            "-i",
            fixture(&format!("{name}.input.npy")).to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (shape, got) = read_f32(&out_path);
        let (want_shape, want) = read_f32(&fixture(&format!("{name}.output.npy")));
        assert_eq!(shape, want_shape);
        assert_eq!(shape[0], 4);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-5 * scale, "{name}: {diff} of {scale}");
    }
}

#[test]
fn an_unsupported_op_is_an_error_naming_it() {
    let dir = common::scratch("onnx_cli", "bad");
    // The helper fixture with its Relu renamed to an op intq does not take ("Relu" and "Selu"
    // have the same length, so the protobuf stays valid).
    let mut bytes = std::fs::read(fixture("ops_helper.onnx")).unwrap();
    let at = bytes.windows(5).position(|w| w == b"\x04Relu").unwrap();
    bytes[at + 1..at + 5].copy_from_slice(b"Selu");
    let m = dir.join("bad.onnx");
    std::fs::write(&m, bytes).unwrap();
    let out = intq(&["inspect", m.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.onnx") && err.contains("(Selu)") && err.contains("not supported"),
        "{err}"
    );
}

/// A Keras-layout `.npz` of RGB 32x32 pictures (a seeded pattern), labels `i % 10`.
fn write_rgb_npz(path: &Path, n_train: usize, n_test: usize) {
    use intq_data::numpy::{npy_bytes, npz_bytes};
    let images = |n: usize, salt: u64| {
        let px: Vec<u8> = (0..n as u64 * 32 * 32 * 3)
            .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(salt * 977)) >> 7) as u8)
            .collect();
        npy_bytes("|u1", &[n, 32, 32, 3], &px)
    };
    let labels = |n: usize| {
        let v: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        npy_bytes("|u1", &[n], &v)
    };
    let (xtr, ytr, xte, yte) = (
        images(n_train, 1),
        labels(n_train),
        images(n_test, 2),
        labels(n_test),
    );
    let bytes = npz_bytes(&[
        ("x_train", &xtr),
        ("y_train", &ytr),
        ("x_test", &xte),
        ("y_test", &yte),
    ]);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn qat_from_onnx_then_convert_equals_the_fake_quant_model() {
    use intq_train::graph_net::Layer;
    let dir = common::scratch("onnx_cli", "qat");
    let data = dir.join("rgb.npz");
    write_rgb_npz(&data, 24, 8);
    let ckpt = dir.join("q.ckpt");
    let model = fixture("resnet_tiny.onnx");
    let out = intq(&[
        "qat",
        "--from",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--out",
        ckpt.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("epoch 2/2"));
    let m = dir.join("m.intq");
    let out = intq(&[
        "convert",
        ckpt.to_str().unwrap(),
        "--out",
        m.to_str().unwrap(),
        "--float-edges",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The checkpoint alone rebuilds the fake-quant network; on the fixture's inputs the
    // integer model's logits are its exact evaluation's, code for code.
    let device = intq_train::train_device();
    let l = intq_train::graph_ckpt::load(&ckpt, intq_train::layers::LayerOpts::default(), &device)
        .unwrap();
    let q = intq_train::QuantCfg::uint8(8, 8).unwrap();
    let Some(Layer::Linear(fc)) = l.net.layers.last() else {
        panic!("the last layer is the classifier")
    };
    let s_out = fc.out_obs.params(q.act_scheme).unwrap().unwrap().scale;
    let engine = intq_engine::Model::load(&m).unwrap();
    let (shape, x) = read_f32(&fixture("resnet_tiny.input.npy"));
    let per = shape[1] * shape[2] * shape[3];
    let mut max_lsb = 0f32;
    for img in x.chunks(per) {
        let (c, hw) = (shape[1], shape[2] * shape[3]);
        let nhwc: Vec<f32> = (0..per).map(|k| img[(k % c) * hw + k / c]).collect();
        let int = match &engine.run(&[intq_engine::TensorData::F32(nhwc)]).unwrap()[0] {
            intq_engine::TensorData::F32(v) => v.clone(),
            other => panic!("{other:?}"),
        };
        let fq = l
            .net
            .logits_host(img, 1, &intq_train::Ctx::eval_exact(q), &device)
            .unwrap();
        for (a, b) in int.iter().zip(&fq) {
            max_lsb = max_lsb.max(((a - b) / s_out).abs().round());
        }
        let arg = |v: &[f32]| {
            v.iter()
                .enumerate()
                .fold(0, |b, (i, &x)| if x > v[b] { i } else { b })
        };
        assert_eq!(arg(&int), arg(&fq));
    }
    assert_eq!(max_lsb, 0.0);

    // `intq eval` on the checkpoint, and on the model against it, over the test pictures.
    let out = intq(&[
        "eval",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("on 8 ") && text.contains("fake-quantized"),
        "{text}"
    );
    let out = intq(&[
        "eval",
        m.to_str().unwrap(),
        "--compare",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"], 8, "{v}");
    assert_eq!(v["logits_total"], 80, "{v}");
    assert_eq!(v["top1_mismatch"], 0, "{v}");
    assert_eq!(v["max_lsb_diff"], 0, "{v}");
    // A checkpoint is not a model to compare.
    let out = intq(&[
        "eval",
        ckpt.to_str().unwrap(),
        "--compare",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a checkpoint, not a model"));
}

#[test]
fn ptq_from_onnx_approximates_the_float_model() {
    let dir = common::scratch("onnx_cli", "ptq");
    let data = dir.join("rgb.npz");
    write_rgb_npz(&data, 32, 4);
    let m = dir.join("p.intq");
    let out = intq(&[
        "ptq",
        "--from",
        fixture("resnet_tiny.onnx").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--calib",
        "32",
        "--out",
        m.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The integer model reads the fixture's inputs (in [0, 1]) as uint8 pixels NHWC; its
    // logit codes against ONNX Runtime's float outputs.
    let engine = intq_engine::Model::load(&m).unwrap();
    let g = engine.graph();
    assert_eq!(g.tensor(g.inputs()[0]).dtype, intq_engine::DType::U8);
    let out_p = g.tensor(g.outputs()[0]).params().unwrap();
    let (shape, x) = read_f32(&fixture("resnet_tiny.input.npy"));
    let (_, want) = read_f32(&fixture("resnet_tiny.output.npy"));
    let (c, hw) = (shape[1], shape[2] * shape[3]);
    let per = c * hw;
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (img, want) in x.chunks(per).zip(want.chunks(want.len() / shape[0])) {
        let nhwc: Vec<u8> = (0..per)
            .map(|k| (img[(k % c) * hw + k / c] * 255.0).round() as u8)
            .collect();
        let got: Vec<f32> = match &engine.run(&[intq_engine::TensorData::U8(nhwc)]).unwrap()[0] {
            intq_engine::TensorData::U8(v) => {
                v.iter().map(|&q| out_p.dequantize(q as i32)).collect()
            }
            other => panic!("{other:?}"),
        };
        let diff = got
            .iter()
            .zip(want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 0.1 * scale, "{diff} of {scale}");
    }
}

#[test]
fn export_onnx_writes_a_qdq_model_with_per_channel_weights() {
    use intq_onnx::proto::tensor_proto::DataType;
    let dir = common::scratch("onnx_cli", "qdq");
    let data = dir.join("rgb.npz");
    write_rgb_npz(&data, 16, 4);
    let m = dir.join("p.intq");
    let out = intq(&[
        "ptq",
        "--from",
        fixture("mobilenetv2_tiny.onnx").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--calib",
        "16",
        "--scheme",
        "int8",
        "--per-channel",
        "--out",
        m.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = dir.join("p.qdq.onnx");
    let out = intq(&["export", m.to_str().unwrap(), "--onnx", q.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model = intq_onnx::read::read_file(&q).unwrap().proto;
    let g = model.graph.unwrap();
    let count = |op: &str| {
        g.node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some(op))
            .count()
    };
    // Every conv (13), the Gemm, the two adds, the concat, the pools, the two pads (the Pad node
    // and the padding of the counting average pool) and the input are requantized.
    assert!(count("QuantizeLinear") >= 20, "{}", count("QuantizeLinear"));
    assert_eq!(count("Conv"), 13);
    assert_eq!(count("Gemm"), 1);
    assert_eq!(count("Pad"), 2);
    // The weights are int8 codes with one scale per output channel.
    let init = |name: &str| {
        g.initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
    };
    let conv = g
        .node
        .iter()
        .find(|n| n.op_type.as_deref() == Some("Conv"))
        .unwrap();
    let wdq = g
        .node
        .iter()
        .find(|n| n.output[0] == conv.input[1])
        .unwrap();
    assert_eq!(wdq.op_type.as_deref(), Some("DequantizeLinear"));
    let codes = init(&wdq.input[0]).unwrap();
    assert_eq!(codes.data_type, Some(DataType::Int8 as i32));
    assert_eq!(codes.dims, [16, 3, 3, 3]);
    assert_eq!(init(&wdq.input[1]).unwrap().dims, [16]);
    let inp = &g.input[0];
    assert_eq!(inp.name.as_deref(), Some("input"));
}

/// `intq qat --from`, `convert` and `eval --compare` on the fixtures with the newer layers
/// (Pad, grouped conv, HardSwish, Sigmoid, squeeze-and-excitation Mul, baked preprocessing,
/// dilated convs, pools in the engine's window arithmetic): the checkpoints carry them, and the
/// integer models (int8, raw pixels in) equal the exact fake-quant evaluation on the test
/// pictures.
#[test]
fn qat_convert_and_compare_every_layer_kind() {
    let dir = common::scratch("onnx_cli", "kinds");
    let data = dir.join("rgb.npz");
    write_rgb_npz(&data, 16, 8);
    for name in [
        "mobilenetv2_tiny",
        "grouped_qat",
        "hardswish_qat",
        "sigmoid_qat",
        "se_qat",
        "hsigmoid_mul",
        "mobilenetv3_tiny",
        "preprocess_qat",
        "dilated_qat",
        "act_qat",
        "resize_qat",
        "nhwc_qat",
        "prelu_qat",
        "pool_ceil_qat",
        "decoder_qat",
        "keras_cnn",
        "mobilenetv3_dynamo",
        "hsigmoid_se_qat",
        "maxmin_qat",
        "resize_linear_qat",
        "convt_pads_qat",
    ] {
        let ckpt = dir.join(format!("{name}.ckpt"));
        let m = dir.join(format!("{name}.intq"));
        let out = intq(&[
            "qat",
            "--from",
            fixture(&format!("{name}.onnx")).to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--scheme",
            "int8",
            "--per-channel",
            "--out",
            ckpt.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = intq(&[
            "convert",
            ckpt.to_str().unwrap(),
            "--out",
            m.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = intq(&[
            "eval",
            m.to_str().unwrap(),
            "--compare",
            ckpt.to_str().unwrap(),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["images"], 8, "{name}: {v}");
        assert_eq!(v["top1_mismatch"], 0, "{name}: {v}");
        assert_eq!(v["max_lsb_diff"], 0, "{name}: {v}");
        assert_layers_equal(name, &v);
    }
}

/// Every row of an imported network's per-layer comparison (`layers` of `eval --compare
/// --json`): present, each with elements, and with no code differing.
fn assert_layers_equal(what: &str, v: &serde_json::Value) {
    let rows = v["layers"].as_array().expect("a per-layer table");
    assert!(rows.len() >= 3, "{what}: {v}");
    for r in rows {
        assert!(r["elements"].as_u64().unwrap() > 0, "{what}: {r}");
        assert_eq!(r["max_lsb"], 0, "{what}: {r}");
        assert_eq!(r["differing"], 0, "{what}: {r}");
    }
}

/// `intq eval MODEL --compare CKPT` on an imported network lists every activation the engine
/// materializes in graph order, from the quantized input to the logits, each equal to the exact
/// fake-quant evaluation; a model whose one convolution computes something else (its bias codes
/// changed) shows that layer as the first that differs, and the layers before it still equal.
#[test]
fn compare_table_of_an_imported_network_finds_the_first_layer_that_differs() {
    let dir = common::scratch("onnx_cli", "layers");
    let data = dir.join("rgb.npz");
    write_rgb_npz(&data, 16, 8);
    let ckpt = dir.join("q.ckpt");
    let m = dir.join("m.intq");
    for args in [
        vec![
            "qat",
            "--from",
            fixture("resnet_tiny.onnx").to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--scheme",
            "int8",
            "--per-channel",
            "--out",
            ckpt.to_str().unwrap(),
        ],
        vec![
            "convert",
            ckpt.to_str().unwrap(),
            "--out",
            m.to_str().unwrap(),
        ],
    ] {
        let out = intq(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let compare = |model: &Path, json: bool| {
        let mut args = vec![
            "eval",
            model.to_str().unwrap(),
            "--compare",
            ckpt.to_str().unwrap(),
        ];
        if json {
            args.push("--json");
        }
        let out = intq(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let v: serde_json::Value = serde_json::from_slice(&compare(&m, true)).unwrap();
    assert_eq!(v["max_lsb_diff"], 0, "{v}");
    assert_layers_equal("resnet_tiny", &v);
    let rows = v["layers"].as_array().unwrap();
    // The int8 model's quantized input first, the logits last; every conv and add between.
    // (Elements are counted over the 8 test pictures.)
    assert_eq!(rows[0]["name"], "input_q", "{v}");
    assert_eq!(rows[0]["elements"], 8 * 32 * 32 * 3, "{v}");
    let last = &rows[rows.len() - 1];
    assert_eq!(last["op"], "FullyConnected", "{v}");
    assert_eq!(last["elements"], 8 * 10, "{v}");
    let ops: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert!(ops.contains(&"Conv2d") && ops.contains(&"Add"), "{ops:?}");
    let text = String::from_utf8_lossy(&compare(&m, false)).to_string();
    assert!(
        text.contains("SQNR fq dB") && text.contains("input_q"),
        "{text}"
    );

    // Change the bias codes of the second convolution: its output and what follows differ.
    let model = intq_engine::Model::load(&m).unwrap();
    let g = model.graph();
    let conv = rows
        .iter()
        .filter(|r| r["op"] == "Conv2d")
        .nth(1)
        .expect("two convolutions");
    let conv_at = rows.iter().position(|r| r == conv).unwrap();
    let bias_name = format!("{}/bias", conv["name"].as_str().unwrap());
    let mut tensors = g.tensors().to_vec();
    let bias = tensors
        .iter_mut()
        .find(|t| t.name == bias_name)
        .unwrap_or_else(|| panic!("no tensor {bias_name}"));
    let Some(intq_engine::TensorData::I32(codes)) = &mut bias.data else {
        panic!("int32 bias")
    };
    for c in codes.iter_mut() {
        *c = c.saturating_add(1 << 24);
    }
    let tampered = intq_engine::Graph::new(
        tensors,
        g.ops().to_vec(),
        g.inputs().to_vec(),
        g.outputs().to_vec(),
    )
    .unwrap()
    .with_metadata(g.metadata().clone())
    .unwrap();
    let bad = dir.join("bad.intq");
    intq_engine::Model::new(tampered)
        .unwrap()
        .save(&bad)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&compare(&bad, true)).unwrap();
    let rows = v["layers"].as_array().unwrap();
    let first = rows
        .iter()
        .position(|r| r["differing"] != 0)
        .expect("a layer differs");
    assert_eq!(first, conv_at, "{v}");
    assert!(rows[first]["max_lsb"].as_i64().unwrap() > 0, "{v}");
}

/// The pixel contract for imported networks: `qat --from MODEL.onnx` with and without
/// `--normalize` (one mean and std: the input's params; per channel: folded into the first
/// conv; composed with the Sub/Div the graph starts with), `convert` to a model reading raw
/// uint8 pixels NHWC, `eval --compare` 0 mismatches and 0 LSB, and `eval MODEL --data` alone
/// (its `intq.input` metadata) giving the same integer accuracy.
#[test]
fn converted_imported_models_read_raw_pixels() {
    let dir = common::scratch("onnx_cli", "pixels");
    let data = dir.join("rgb.npz");
    write_rgb_npz(&data, 16, 8);
    for (k, (name, normalize, scheme)) in [
        ("resnet_tiny", None, "uint8"),
        ("resnet_tiny", Some("0.4/0.25"), "int8"),
        ("resnet_tiny", Some("imagenet"), "uint8"),
        ("preprocess_qat", None, "int8"),
        ("preprocess_qat", Some("0.5/2"), "uint8"),
    ]
    .into_iter()
    .enumerate()
    {
        let what = format!("{name} --normalize {normalize:?} --scheme {scheme}");
        let ckpt = dir.join(format!("{k}.ckpt"));
        let m = dir.join(format!("{k}.intq"));
        let model = fixture(&format!("{name}.onnx"));
        let mut args = vec![
            "qat",
            "--from",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--scheme",
            scheme,
            "--out",
            ckpt.to_str().unwrap(),
        ];
        if let Some(n) = normalize {
            args.extend(["--normalize", n]);
        }
        let out = intq(&args);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = intq(&[
            "convert",
            ckpt.to_str().unwrap(),
            "--out",
            m.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let engine = intq_engine::Model::load(&m).unwrap();
        let g = engine.graph();
        let input = g.tensor(g.inputs()[0]);
        assert_eq!(input.dtype, intq_engine::DType::U8, "{what}");
        assert_eq!(input.shape, [1, 32, 32, 3], "{what}");
        let rec: serde_json::Value =
            serde_json::from_str(&g.metadata()["intq.input"]).expect("intq.input is JSON");
        assert_eq!(rec["dtype"], "uint8", "{what}: {rec}");
        assert_eq!(rec["layout"], "NHWC", "{what}: {rec}");
        // A uniform normalization sets the pixels' params: S = 1/(255 s), Z = round(255 m).
        let p = input.params().unwrap();
        if normalize == Some("0.4/0.25") {
            assert_eq!(
                (p.scale, p.zero_point),
                (1.0 / (255.0 * 0.25), 102),
                "{what}"
            );
        } else {
            assert_eq!((p.scale, p.zero_point), (1.0 / 255.0, 0), "{what}");
        }
        let out = intq(&[
            "eval",
            m.to_str().unwrap(),
            "--compare",
            ckpt.to_str().unwrap(),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        println!("{what}: {v}");
        assert_eq!(v["images"], 8, "{what}: {v}");
        assert_eq!(v["top1_mismatch"], 0, "{what}: {v}");
        assert_eq!(v["max_lsb_diff"], 0, "{what}: {v}");
        // The model alone: its metadata says how to feed it.
        let out = intq(&[
            "eval",
            m.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let alone: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(alone["int8_acc"], v["int8_acc"], "{what}: {alone} vs {v}");
    }
}

/// `--float-edges` keeps f32 edges: the model reads the real values of the pixel codes and
/// returns f32 logits, and `eval --compare` feeds it what its metadata records.
#[test]
fn float_edges_read_the_pixel_codes_reals() {
    let dir = common::scratch("onnx_cli", "float_edges");
    let data = dir.join("rgb.npz");
    write_rgb_npz(&data, 16, 8);
    let ckpt = dir.join("q.ckpt");
    let m = dir.join("m.intq");
    let out = intq(&[
        "qat",
        "--from",
        fixture("preprocess_qat.onnx").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--normalize",
        "0.2/0.5",
        "--out",
        ckpt.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = intq(&[
        "convert",
        ckpt.to_str().unwrap(),
        "--out",
        m.to_str().unwrap(),
        "--float-edges",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let engine = intq_engine::Model::load(&m).unwrap();
    let g = engine.graph();
    assert_eq!(g.tensor(g.inputs()[0]).dtype, intq_engine::DType::F32);
    assert_eq!(g.tensor(g.outputs()[0]).dtype, intq_engine::DType::F32);
    let rec: serde_json::Value = serde_json::from_str(&g.metadata()["intq.input"]).unwrap();
    assert_eq!(rec["dtype"], "float32", "{rec}");
    // The per-channel normalization folds into the first conv: the codes are the pixels.
    assert_eq!(rec["pixel_zero_point"], 0, "{rec}");
    let s = rec["pixel_scale"].as_f64().unwrap();
    assert!((s - 1.0 / 255.0).abs() < 1e-9, "{rec}");
    let out = intq(&[
        "eval",
        m.to_str().unwrap(),
        "--compare",
        ckpt.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["top1_mismatch"], 0, "{v}");
    assert_eq!(v["max_lsb_diff"], 0, "{v}");
}

/// A `--normalize` the network cannot take is refused naming why.
#[test]
fn a_normalization_the_network_cannot_fold_is_refused() {
    let dir = common::scratch("onnx_cli", "bad_normalize");
    let data = dir.join("rgb.npz");
    write_rgb_npz(&data, 8, 4);
    let ckpt = dir.join("q.ckpt");
    let out = intq(&[
        "qat",
        "--from",
        fixture("resnet_tiny.onnx").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--normalize",
        "0.5,0.5/1,1",
        "--out",
        ckpt.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains(
            "--normalize 0.5,0.5/1,1 has 2 values per channel; the network takes 3 channels"
        ),
        "{e}"
    );
}

/// What a checkpoint of an imported network holds, as comparable values: its integer model
/// (weights, folded BN, observer ranges), its float logits on a fixed batch (weights and BN
/// statistics) and its momentum, sorted.
fn ckpt_state(path: &Path) -> (intq_engine::Graph, Vec<f32>, Vec<Vec<f32>>) {
    let device = intq_train::train_device();
    let l = intq_train::graph_ckpt::load(path, intq_train::layers::LayerOpts::default(), &device)
        .unwrap();
    let q = intq_train::QuantCfg::uint8(8, 8).unwrap();
    let g = intq_train::graph_export::export_graph(&l.net, &q, false).unwrap();
    let x: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| (i % 251) as f32 / 255.0)
        .collect();
    let float = l
        .net
        .logits_host(&x, 2, &intq_train::Ctx::float(false), &device)
        .unwrap();
    let mut momentum: Vec<Vec<f32>> = l
        .velocity
        .by_id
        .values()
        .map(|t| intq_train::fake_quant::host_vec(t.clone()))
        .collect();
    momentum.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (g, float, momentum)
}

fn ckpt_meta(path: &Path) -> std::collections::HashMap<String, String> {
    let device = intq_train::train_device();
    intq_train::graph_ckpt::load(path, intq_train::layers::LayerOpts::default(), &device)
        .unwrap()
        .meta
}

/// The zoo trainer's options for imported networks: `--resume` continues a run to the same
/// network as the uninterrupted run's, `--augment` is applied and recorded, `--metrics` logs one
/// line per epoch, and `--shards` above 1 is refused.
#[test]
fn qat_from_onnx_resumes_augments_and_logs() {
    let dir = common::scratch("onnx_cli", "trainer_options");
    let data = dir.join("rgb.npz");
    write_rgb_npz(&data, 16, 4);
    let model = fixture("se_qat.onnx");
    let qat = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "qat",
            "--from",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--batch-size",
            "8",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        intq(&args)
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Two epochs straight, and the same run stopped after its first epoch (2 steps) then
    // resumed: the same network, observers and momentum.
    let straight = dir.join("straight.ckpt");
    ok(qat(&straight, &["--epochs", "2"]));
    let resumed = dir.join("resumed.ckpt");
    ok(qat(&resumed, &["--epochs", "2", "--max-steps", "2"]));
    assert_eq!(ckpt_meta(&resumed)["epoch"], "1");
    ok(qat(&resumed, &["--epochs", "2", "--resume"]));
    assert_eq!(ckpt_meta(&resumed)["epoch"], "2");
    assert_eq!(ckpt_state(&resumed), ckpt_state(&straight));
    let metrics = std::fs::read_to_string(dir.join("resumed.ckpt.metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{metrics}");
    assert_eq!(lines[0]["epoch"], 1);
    assert_eq!(lines[1]["epoch"], 2);
    assert_eq!(lines[1]["step"], 4);
    assert_eq!(lines[1]["qat"], true);
    assert!(lines[1]["train_loss"].as_f64().unwrap().is_finite());
    assert!(lines[1]["test_accuracy"].as_f64().is_some());
    // A resumed run keeps the quantization it started with.
    let out = qat(&resumed, &["--epochs", "3", "--resume", "--scheme", "int8"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("holds a run with scheme \"uint8\", not this run's \"int8\""),
        "{e}"
    );

    // --augment changes what the network trains on and is recorded; --metrics names the log.
    let aug = dir.join("aug.ckpt");
    let log = dir.join("aug.jsonl");
    ok(qat(
        &aug,
        &[
            "--epochs",
            "1",
            "--augment",
            "crop:2,flip",
            "--metrics",
            log.to_str().unwrap(),
        ],
    ));
    assert_eq!(ckpt_meta(&aug)["augment"], "crop:2,flip");
    assert_eq!(ckpt_meta(&straight)["augment"], "none");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
    let plain = dir.join("plain.ckpt");
    ok(qat(&plain, &["--epochs", "1"]));
    assert_ne!(ckpt_state(&aug).1, ckpt_state(&plain).1);

    let out = qat(&dir.join("shards.ckpt"), &["--shards", "2"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains(
            "--shards 2: an imported network trains each batch in one piece; leave --shards out \
             (or give 1)"
        ),
        "{e}"
    );
}

/// The raw bytes of a tensor, as TFLite stores them (little-endian).
fn tensor_bytes(t: &intq_engine::TensorData) -> Vec<u8> {
    use intq_engine::TensorData as D;
    match t {
        D::U8(v) => v.clone(),
        D::I8(v) => v.iter().map(|&x| x as u8).collect(),
        D::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        D::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// The converted fixtures exported to `.tflite` (tools/onnx-fixtures/tflite_check.sh): intq
/// runs each stored model on each stored input and gives TensorFlow Lite's reference kernels'
/// graph outputs byte for byte, and every op output with TFLite's CRC-32.
#[test]
fn converted_fixtures_exported_to_tflite_equal_tflite_reference() {
    let root = fixture("tflite");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("fixture.tsv").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "{dirs:?}");
    for dir in dirs {
        let what = dir.file_name().unwrap().to_string_lossy().to_string();
        let table = std::fs::read_to_string(dir.join("fixture.tsv")).unwrap();
        let mut model = None;
        // Per seed: inputs, (tensor, golden file) outputs, (tensor, crc) checks.
        type Seed = (Vec<PathBuf>, Vec<(String, PathBuf)>, Vec<(String, u32)>);
        let mut seeds: Vec<Seed> = Vec::new();
        for line in table.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            match f[0] {
                "model" => model = Some(intq_tflite::load(&dir.join(f[1])).unwrap()),
                "seed" => seeds.push(Default::default()),
                "input" => seeds.last_mut().unwrap().0.push(dir.join(f[1])),
                "output" => seeds
                    .last_mut()
                    .unwrap()
                    .1
                    .push((f[1].to_string(), dir.join(f[2]))),
                "crc32" => seeds
                    .last_mut()
                    .unwrap()
                    .2
                    .push((f[1].to_string(), u32::from_str_radix(f[2], 16).unwrap())),
                _ => {}
            }
        }
        let m = intq_engine::Model::new(model.expect("a model line")).unwrap();
        assert!(!seeds.is_empty(), "{what}");
        let mut checked = 0;
        for (inputs, outputs, crcs) in &seeds {
            let inputs: Vec<_> = inputs
                .iter()
                .map(|p| intq_cli::npy::read(p).unwrap().data)
                .collect();
            let names: Vec<&String> = outputs
                .iter()
                .map(|o| &o.0)
                .chain(crcs.iter().map(|c| &c.0))
                .collect();
            let ids: Vec<_> = names
                .iter()
                .map(|n| {
                    m.graph()
                        .tensor_by_name(n)
                        .unwrap_or_else(|| panic!("{what}: no tensor {n}"))
                })
                .collect();
            let got = m.run_with(&inputs, &ids).unwrap();
            for (k, (name, file)) in outputs.iter().enumerate() {
                let want = intq_cli::npy::read(file).unwrap().data;
                assert_eq!(got[k], want, "{what}: output {name}");
            }
            for (k, (name, crc)) in crcs.iter().enumerate() {
                let bytes = tensor_bytes(&got[outputs.len() + k]);
                assert_eq!(intq_engine::format::crc32(&bytes), *crc, "{what}: {name}");
                checked += 1;
            }
        }
        assert!(checked >= 2 * seeds.len(), "{what}: {checked} tensors");
    }
}

/// `intq ptq --from MODEL.onnx --normalize`: one mean and std set the pixels' params of the
/// model, which `intq eval` then runs from its metadata alone.
#[test]
fn ptq_from_onnx_takes_a_normalization() {
    let dir = common::scratch("onnx_cli", "ptq_normalize");
    let data = dir.join("rgb.npz");
    write_rgb_npz(&data, 16, 4);
    let m = dir.join("p.intq");
    let out = intq(&[
        "ptq",
        "--from",
        fixture("resnet_tiny.onnx").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--calib",
        "16",
        "--normalize",
        "0.4/0.25",
        "--out",
        m.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let engine = intq_engine::Model::load(&m).unwrap();
    let g = engine.graph();
    let p = g.tensor(g.inputs()[0]).params().unwrap();
    assert_eq!((p.scale, p.zero_point), (1.0 / (255.0 * 0.25), 102));
    let rec: serde_json::Value = serde_json::from_str(&g.metadata()["intq.input"]).unwrap();
    assert_eq!(rec["normalize"]["std"][0].as_f64().unwrap(), 0.25, "{rec}");
    let out = intq(&[
        "eval",
        m.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"], 4, "{v}");
}

/// The rest of the trainer's options for imported networks: a run cut within an epoch
/// (`--max-steps`, `--ckpt-every`) resumes to the uninterrupted run's network, under the
/// one-cycle schedule, label smoothing, frozen observers and step lines in the log; options an
/// imported network cannot take are refused by name.
#[test]
fn qat_from_onnx_resumes_within_an_epoch() {
    let dir = common::scratch("onnx_cli", "within_epoch");
    let data = dir.join("rgb.npz");
    write_rgb_npz(&data, 16, 4);
    let model = fixture("se_qat.onnx");
    let qat = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "qat",
            "--from",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--batch-size",
            "4",
            "--epochs",
            "2",
            "--schedule",
            "onecycle",
            "--freeze-observers-after",
            "1",
            "--log-every",
            "2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        if !extra.contains(&"--label-smoothing") {
            args.extend(["--label-smoothing", "0.1"]);
        }
        intq(&args)
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let straight = dir.join("straight.ckpt");
    ok(qat(&straight, &[]));
    // Four steps an epoch: cut after 3 (within epoch 1), resume and cut after 6 (within epoch
    // 2, with --ckpt-every writing at step 5 on the way), then resume to the end.
    let cut = dir.join("cut.ckpt");
    let said = ok(qat(&cut, &["--max-steps", "3"]));
    assert!(said.contains("3 steps into epoch 1"), "{said}");
    let m = ckpt_meta(&cut);
    assert_eq!(
        (m["epoch"].as_str(), m["epoch_batches"].as_str()),
        ("0", "3")
    );
    assert_eq!(m["schedule"], "onecycle");
    assert_eq!(m["label_smoothing"], "0.1");
    ok(qat(
        &cut,
        &["--resume", "--max-steps", "6", "--ckpt-every", "5"],
    ));
    let m = ckpt_meta(&cut);
    assert_eq!(
        (m["epoch"].as_str(), m["epoch_batches"].as_str()),
        ("1", "2")
    );
    assert_eq!(m["freeze_observers"], "true");
    ok(qat(&cut, &["--resume"]));
    let m = ckpt_meta(&cut);
    assert_eq!(m["epoch"], "2");
    assert!(!m.contains_key("epoch_batches"));
    assert_eq!(ckpt_state(&cut), ckpt_state(&straight));
    // Label smoothing changes the run.
    let plain = dir.join("plain.ckpt");
    ok(qat(&plain, &["--label-smoothing", "0"]));
    assert_ne!(ckpt_state(&plain).1, ckpt_state(&straight).1);
    // The log: a step line every 2 steps and an epoch line per epoch, the cut run's equal to
    // the straight run's but for timings.
    let lines = |p: &Path| -> Vec<serde_json::Value> {
        let mut m = p.as_os_str().to_owned();
        m.push(".metrics.jsonl");
        std::fs::read_to_string(m)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (a, b) = (lines(&straight), lines(&cut));
    let steps: Vec<u64> = a.iter().filter_map(|l| l["step"].as_u64()).collect();
    assert_eq!(steps, [2, 4, 4, 6, 8, 8], "{a:?}");
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["train_loss"], y["train_loss"], "{a:?}\n{b:?}");
    }
    // Refused: learned ranges and the streaming loader.
    for (flags, want) in [
        (
            &["--ranges", "lsq"][..],
            "--ranges lsq: an imported network keeps its activation ranges by EMA only",
        ),
        (
            &["--loader", "stream"][..],
            "--loader stream: an imported network trains from pictures decoded up front",
        ),
    ] {
        let out = qat(&dir.join("refused.ckpt"), flags);
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(want), "{e}");
    }
}

/// `intq train --from MODEL.onnx` fine-tunes in float; `intq qat --from` that checkpoint
/// fine-tunes it with fake quantization into a model that converts, and `intq ptq --from` it
/// calibrates it; a float checkpoint does not convert, and a QAT checkpoint is not a `--from`.
#[test]
fn train_from_onnx_then_qat_from_its_checkpoint() {
    let dir = common::scratch("onnx_cli", "float_then_qat");
    let data = dir.join("rgb.npz");
    write_rgb_npz(&data, 16, 4);
    let model = fixture("se_qat.onnx");
    let run = |args: &[&str]| intq(args);
    let float = dir.join("float.ckpt");
    let out = run(&[
        "train",
        "--from",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--out",
        float.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("float test accuracy"), "{said}");
    assert!(!ckpt_meta(&float).contains_key("scheme"));
    let out = run(&[
        "convert",
        float.to_str().unwrap(),
        "--out",
        dir.join("float.intq").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("not a QAT checkpoint"), "{e}");

    // QAT from the float checkpoint: its data is the default; the result converts.
    let q = dir.join("qat.ckpt");
    let out = run(&[
        "qat",
        "--from",
        float.to_str().unwrap(),
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--out",
        q.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ckpt_meta(&q)["scheme"], "uint8");
    assert_eq!(ckpt_meta(&q)["data"], ckpt_meta(&float)["data"]);
    let m = dir.join("qat.intq");
    let out = run(&["convert", q.to_str().unwrap(), "--out", m.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its float weights are the float run's, not the ONNX model's: QAT from the ONNX model
    // itself ends elsewhere.
    let direct = dir.join("direct.ckpt");
    let out = run(&[
        "qat",
        "--from",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--out",
        direct.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(ckpt_state(&q).1, ckpt_state(&direct).1);
    // PTQ calibrates the float fine-tune on its own data.
    let p = dir.join("ptq.intq");
    let out = run(&[
        "ptq",
        "--from",
        float.to_str().unwrap(),
        "--calib",
        "8",
        "--out",
        p.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(p.exists());
    // A QAT checkpoint is not a starting point.
    let out = run(&[
        "qat",
        "--from",
        q.to_str().unwrap(),
        "--out",
        dir.join("again.ckpt").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("is a QAT checkpoint (uint8)"), "{e}");
}
