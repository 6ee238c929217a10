//! The QAT pipeline end to end through the `intq` binary on a tiny synthetic IDX data set: float
//! training, QAT in both schemes, conversion, the fake-quant ↔ int8 comparison (bounded LSB
//! difference), PTQ, `intq eval` of checkpoints, the errors of `intq convert`, and
//! `intq quickstart --tiny`.

mod common;
use common::{int, intq, json};

use std::path::{Path, PathBuf};

use intq_engine::{DType, Model};
use serde_json::Value;

/// Largest difference accepted between the int8 logits and the fake-quant network evaluated in
/// f32 (as training computes it): f32 products and sums can move an accumulator across a
/// rounding boundary, and a one-code difference grows a little through later layers
/// (docs/fidelity.md has the measured counts). The exact (f64) evaluation must agree to 0 LSB.
const MAX_F32_LSB: i64 = 3;

fn ok(args: &[&str]) -> String {
    let o = intq(args);
    assert!(
        o.status.success(),
        "intq {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fail(args: &[&str]) -> String {
    let o = intq(args);
    assert!(!o.status.success(), "intq {args:?} should have failed");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("pipeline", name)
}

/// Deterministic 28x28 images: class `k` is a bright bar at a class-specific row or column,
/// over low noise, so a few SGD steps already separate some classes.
fn images(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    use intq_engine::examples::Rng as _;
    let mut rng = intq_engine::examples::seeded(seed);
    let mut next = || rng.next_u64();
    let mut px = Vec::with_capacity(n * 784);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let k = (i % 10) as u8;
        labels.push(k);
        for y in 0..28 {
            for x in 0..28 {
                let on = if k < 5 {
                    (4 + 5 * k as usize..7 + 5 * k as usize).contains(&y)
                } else {
                    (4 + 5 * (k as usize - 5)..7 + 5 * (k as usize - 5)).contains(&x)
                };
                let noise = (next() % 40) as u8;
                px.push(if on { 215 + noise } else { noise });
            }
        }
    }
    (px, labels)
}

/// A data dir holding `fashion-mnist/` with small train and test splits.
fn data_dir(name: &str) -> PathBuf {
    let d = scratch(name).join("data");
    let f = d.join("fashion-mnist");
    std::fs::create_dir_all(&f).unwrap();
    for (split, n, seed) in [("train", 256, 1), ("t10k", 100, 2)] {
        let (px, labels) = images(n, seed);
        common::write_split(&f, split, &px, &labels);
    }
    d
}

/// The number at `key` of a JSON object.
fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

fn train_float(dir: &Path, data: &Path) -> PathBuf {
    let ckpt = dir.join("float.ckpt");
    ok(&[
        "train",
        "--model",
        "small-cnn",
        "--data-dir",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--limit-train",
        "128",
        "--limit-test",
        "20",
        "--quiet",
        "--out",
        ckpt.to_str().unwrap(),
    ]);
    ckpt
}

/// QAT fine-tuning of `from` for two steps (the second with learned activation ranges when
/// `ranges` is minmax or lsq: they start from the EMA after the first).
/// `bits` is the width of weights and activations.
fn qat(dir: &Path, data: &Path, from: &Path, scheme: &str, ranges: &str, bits: &str) -> PathBuf {
    let ckpt = dir.join(format!("qat_{scheme}_{ranges}_{bits}.ckpt"));
    let mut args = vec![
        "qat",
        "--from",
        from.to_str().unwrap(),
        "--scheme",
        scheme,
        "--ranges",
        ranges,
        "--bits-a",
        bits,
        "--bits-w",
        bits,
        "--data-dir",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--limit-train",
        "128",
        "--limit-test",
        "20",
        "--quiet",
        "--out",
        ckpt.to_str().unwrap(),
    ];
    if scheme == "int8" {
        args.push("--per-channel");
    }
    ok(&args);
    ckpt
}

#[test]
fn both_schemes_convert_and_agree_with_fake_quant() {
    let dir = scratch("schemes");
    let data = data_dir("schemes_data");
    let d = data.to_str().unwrap();
    let float = train_float(&dir, &data);
    // Learned ranges convert as exactly as the EMA's: the learned forward uses the params
    // conversion stores.
    // At 4 bits the activations hold 16 codes; the engine must clamp where training did.
    for (scheme, dtype, ranges, bits) in [
        ("uint8", DType::U8, "ema", "8"),
        ("int8", DType::I8, "ema", "8"),
        ("uint8", DType::U8, "lsq", "8"),
        ("int8", DType::I8, "minmax", "8"),
        ("uint8", DType::U8, "ema", "4"),
        ("int8", DType::I8, "lsq", "4"),
    ] {
        let ckpt = qat(&dir, &data, &float, scheme, ranges, bits);
        let scheme = &format!("{scheme}/{ranges}/{bits}");
        let model_path = dir.join(format!("{}.intq", scheme.replace('/', "_")));
        let m = model_path.to_str().unwrap();
        ok(&["convert", ckpt.to_str().unwrap(), "--out", m]);
        let model = Model::load(&model_path).unwrap();
        let g = model.graph();
        // Raw uint8 pixels in; the int8 model shifts them to int8 codes inside.
        assert_eq!(
            g.tensor(g.inputs()[0]).dtype,
            DType::U8,
            "{scheme}: pixels in"
        );
        let input_name = if dtype == DType::I8 {
            "input_q"
        } else {
            "input"
        };
        assert!(g.tensor_by_name(input_name).is_some(), "{scheme}");
        let weights: Vec<_> = g
            .tensors()
            .iter()
            .filter(|t| t.name.ends_with("/weights"))
            .collect();
        assert!(
            weights.len() >= 4,
            "{scheme}: {} weight tensors",
            weights.len()
        );
        for t in &weights {
            assert_eq!(t.dtype, dtype, "{scheme}: {}", t.name);
        }
        let narrowed = match (bits, dtype) {
            ("4", DType::U8) => Some((0, 15)),
            ("4", _) => Some((-8, 7)),
            _ => None,
        };
        // Every activation but the input, whose codes are 8-bit pixels.
        for t in g
            .tensors()
            .iter()
            .filter(|t| t.dtype == dtype && !t.is_constant() && !t.name.starts_with("input"))
        {
            assert_eq!(t.code_range, narrowed, "{scheme}: {}", t.name);
        }
        if let Some((lo, hi)) = narrowed {
            let text = ok(&["inspect", m, "--tensors"]);
            assert!(text.contains(&format!("codes [{lo}, {hi}]")), "{text}");
            // TFLite cannot hold the narrowed range: refused by name, no file written.
            let tfl = dir.join(format!("{}.tflite", scheme.replace('/', "_")));
            let err = fail(&["export", m, "--tflite", tfl.to_str().unwrap()]);
            assert!(err.contains("fewer than 8 bits"), "{err}");
            assert!(!tfl.exists(), "{}", tfl.display());
        }
        let out = json(&ok(&[
            "eval",
            "--data-dir",
            d,
            "--compare",
            ckpt.to_str().unwrap(),
            m,
            "--json",
        ]));
        assert_eq!(out["model"], m, "{out}");
        assert_eq!(out["checkpoint"], ckpt.to_str().unwrap(), "{out}");
        assert_eq!(int(&out, "images"), 100);
        for key in ["float_acc", "fq_acc", "int8_acc"] {
            assert!((0.0..=1.0).contains(&num(&out, key)), "{key}: {out}");
        }
        // The fake-quant network, evaluated exactly, computes what the engine computes: the
        // same codes, bias on the int32 grid and requantization rounding (docs/fidelity.md).
        assert_eq!(int(&out, "max_lsb_diff"), 0, "{scheme}: {out}");
        assert_eq!(int(&out, "top1_mismatch"), 0, "{scheme}: {out}");
        assert_eq!(int(&out, "logits_differing"), 0, "{scheme}: {out}");
        assert_eq!(int(&out, "logits_total"), 1000, "{scheme}: {out}");
        assert!(int(&out, "f32_top1_mismatch") <= 100, "{scheme}: {out}");
        let lsb32 = int(&out, "f32_max_lsb_diff");
        assert!(
            lsb32 <= MAX_F32_LSB,
            "{scheme}: f32 logits differ by {lsb32}: {out}"
        );
        // Per-layer rows exist (input, three convs, two pools, gap, logits), every one exact.
        let layers = out["layers"].as_array().expect("a layers array");
        assert!(
            layers.len() >= 7,
            "{scheme}: {} per-layer rows: {out}",
            layers.len()
        );
        for row in layers {
            assert_eq!(int(row, "max_lsb"), 0, "{scheme}: layer {row}");
            assert_eq!(int(row, "differing"), 0, "{scheme}: layer {row}");
            assert!(int(row, "elements") > 0, "{scheme}: layer {row}");
            assert!(row["op"].is_string(), "{scheme}: layer {row}");
            // Equal values have an infinite SQNR, which JSON spells null.
            for key in ["sqnr_float_db", "sqnr_fq_db"] {
                assert!(
                    row[key].is_f64() || row[key].is_null(),
                    "{scheme}: layer {row}"
                );
            }
        }
        // The pixels are the input codes in both (S = 1/255, Z = 0, docs/spec.md §10).
        let input = layers
            .iter()
            .find(|r| r["name"] == input_name)
            .expect("a row for the quantized input");
        assert_eq!(int(input, "max_lsb"), 0, "{input}");
        assert_eq!(int(input, "differing"), 0, "{input}");
        // Plain evaluation gives the same int8 accuracy as the comparison.
        let plain = json(&ok(&["eval", "--data-dir", d, m, "--json"]));
        assert_eq!(plain["model"], m, "{plain}");
        assert_eq!(int(&plain, "images"), 100);
        assert_eq!(num(&plain, "int8_acc"), num(&out, "int8_acc"));
    }
}

#[test]
fn convert_errors_name_the_file_and_write_nothing() {
    let dir = scratch("errors");
    let out = dir.join("m.intq");
    let o = out.to_str().unwrap();
    let missing = dir.join("nope.ckpt");
    let e = fail(&["convert", missing.to_str().unwrap(), "--out", o]);
    assert!(
        e.contains("nope.ckpt") && e.contains("does not exist"),
        "{e}"
    );
    let junk = dir.join("junk.ckpt");
    std::fs::write(&junk, b"definitely not safetensors").unwrap();
    let e = fail(&["convert", junk.to_str().unwrap(), "--out", o]);
    assert!(e.contains("junk.ckpt"), "{e}");
    let data = data_dir("errors_data");
    let float = train_float(&dir, &data);
    let e = fail(&["convert", float.to_str().unwrap(), "--out", o]);
    assert!(e.contains("without quantization"), "{e}");
    let e = fail(&[
        "convert",
        float.to_str().unwrap(),
        "--out",
        o,
        "--scheme",
        "int4",
    ]);
    assert!(e.contains("float.ckpt") || e.contains("int4"), "{e}");
    assert!(!out.exists(), "a failed conversion left {}", out.display());
}

#[test]
fn ptq_minmax_and_percentile_make_runnable_models() {
    let dir = scratch("ptq");
    let data = data_dir("ptq_data");
    let d = data.to_str().unwrap();
    let float = train_float(&dir, &data);
    let f = float.to_str().unwrap();
    for (method, scheme) in [("minmax", "uint8"), ("percentile", "int8")] {
        let p = dir.join(format!("{method}.intq"));
        ok(&[
            "ptq",
            "--from",
            f,
            "--calib",
            "100",
            "--method",
            method,
            "--scheme",
            scheme,
            "--data-dir",
            d,
            "--out",
            p.to_str().unwrap(),
        ]);
        let out = json(&ok(&[
            "eval",
            "--data-dir",
            d,
            p.to_str().unwrap(),
            "--json",
            "--limit",
            "50",
        ]));
        assert_eq!(int(&out, "images"), 50);
        let acc = num(&out, "int8_acc");
        assert!((0.0..=1.0).contains(&acc), "{out}");
    }
    // PTQ refuses a QAT checkpoint, whose ranges were trained.
    let q = qat(&dir, &data, &float, "uint8", "ema", "8");
    let e = fail(&[
        "ptq",
        "--from",
        q.to_str().unwrap(),
        "--data-dir",
        d,
        "--out",
        dir.join("x.intq").to_str().unwrap(),
    ]);
    assert!(e.contains("QAT checkpoint"), "{e}");
}

/// The test accuracy training recorded in `ckpt` (on the `--limit-test` images).
fn recorded_accuracy(ckpt: &Path) -> f64 {
    let bytes = std::fs::read(ckpt).unwrap();
    intq_train::ckpt_file::parse(&bytes, ckpt)
        .unwrap()
        .meta
        .test_accuracy
        .expect("a test accuracy")
}

#[test]
fn eval_of_a_checkpoint_reports_what_training_measured() {
    let dir = scratch("eval_ckpt");
    let data = data_dir("eval_ckpt_data");
    let d = data.to_str().unwrap();
    let float = train_float(&dir, &data);
    let qat = qat(&dir, &data, &float, "int8", "ema", "8");
    // Training evaluated on the first 20 test images; so does `eval --limit 20`, with the
    // float network for a float checkpoint and the fake-quant one for a QAT checkpoint.
    for (ckpt, key, absent, kind) in [
        (&float, "float_acc", "fq_acc", "float"),
        (&qat, "fq_acc", "float_acc", "QAT, fake-quantized"),
    ] {
        let c = ckpt.to_str().unwrap();
        let out = json(&ok(&[
            "eval",
            c,
            "--data-dir",
            d,
            "--limit",
            "20",
            "--json",
        ]));
        assert_eq!(out["checkpoint"], c, "{out}");
        assert_eq!(int(&out, "images"), 20, "{out}");
        assert_eq!(num(&out, key), recorded_accuracy(ckpt), "{out}");
        assert!(out.get(absent).is_none(), "{out}");
        assert!(out.get("int8_acc").is_none(), "{out}");
        let text = ok(&["eval", c, "--data-dir", d, "--limit", "20"]);
        assert!(
            text.contains(kind) && text.contains("on 20 fashion-mnist test images"),
            "{text}"
        );
    }
    // `--codes` spells out convert's default (raw pixels in, logit codes out); `--float-edges`
    // reads f32 and returns f32 logits, and agrees with the checkpoint as exactly.
    let q = qat.to_str().unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (float_edges, default, codes) = (path("fe.intq"), path("d.intq"), path("c.intq"));
    ok(&["convert", q, "--out", &float_edges, "--float-edges"]);
    ok(&["convert", q, "--out", &default]);
    ok(&["convert", q, "--out", &codes, "--codes"]);
    let bytes = |p: &str| std::fs::read(p).unwrap();
    assert_eq!(bytes(&codes), bytes(&default));
    assert_ne!(bytes(&float_edges), bytes(&default));
    let fe = Model::load(Path::new(&float_edges)).unwrap();
    let g = fe.graph();
    assert_eq!(g.tensor(g.inputs()[0]).dtype, DType::F32);
    assert_eq!(g.tensor(g.outputs()[0]).dtype, DType::F32);
    for m in [&float_edges, &default] {
        let out = json(&ok(&[
            "eval",
            m,
            "--compare",
            q,
            "--data-dir",
            d,
            "--limit",
            "20",
            "--json",
        ]));
        assert_eq!(int(&out, "top1_mismatch"), 0, "{m}: {out}");
        assert_eq!(int(&out, "max_lsb_diff"), 0, "{m}: {out}");
    }
    fail(&["convert", q, "--out", &codes, "--codes", "--float-edges"]);
    // The deprecated spellings still work, with a note saying what replaces them.
    let old = path("old.intq");
    let o = intq(&["qat-export", "--ckpt", q, "--out", &old]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("deprecated"), "{err}");
    assert_eq!(bytes(&old), bytes(&codes));
    let o = intq(&[
        "train-eval",
        "--ckpt",
        q,
        "--data-dir",
        d,
        "--limit-test",
        "20",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success() && err.contains("deprecated"), "{err}");
    assert!(
        out.contains("QAT, fake-quantized") && out.contains("on 20 "),
        "{out}"
    );
    // A checkpoint is not a model to compare with its checkpoint.
    let e = fail(&[
        "eval",
        qat.to_str().unwrap(),
        "--compare",
        qat.to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    assert!(e.contains("is a checkpoint, not a model"), "{e}");
    // A file that is neither is refused by name.
    let junk = dir.join("junk.bin");
    std::fs::write(&junk, b"neither a model nor a checkpoint").unwrap();
    let e = fail(&["eval", junk.to_str().unwrap(), "--data-dir", d]);
    assert!(e.contains("junk.bin"), "{e}");
    // A damaged `.intq` file is reported as a model, not as a checkpoint.
    let broken = dir.join("broken.intq");
    std::fs::write(&broken, b"\x89INTQ").unwrap();
    let e = fail(&["eval", broken.to_str().unwrap(), "--data-dir", d]);
    assert!(
        e.contains("broken.intq") && !e.contains("checkpoint"),
        "{e}"
    );
}

#[test]
fn quickstart_tiny_runs_the_whole_pipeline() {
    let dir = scratch("quickstart");
    let data = data_dir("quickstart_data");
    let out = ok(&[
        "quickstart",
        "--tiny",
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
    ]);
    let line = json(&out);
    for key in [
        "float_acc",
        "ptq_acc",
        "qat_float_acc",
        "fq_acc",
        "int8_acc",
    ] {
        let v = num(&line, key);
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    assert_eq!(int(&line, "test_images"), 100);
    assert_eq!(int(&line, "max_lsb_diff"), 0, "{line}");
    assert_eq!(int(&line, "top1_mismatch"), 0, "{line}");
    assert_eq!(line["tiny"], true, "{line}");
    assert_eq!(line["model"], "small-cnn", "{line}");
    assert!(int(&line, "intq_bytes") > 0, "{line}");
    assert!(num(&line["seconds"], "total") > 0.0, "{line}");
    // The comparison object carries what `intq eval --compare --json` prints.
    let c = &line["comparison"];
    assert_eq!(int(c, "images"), 100, "{line}");
    assert_eq!(num(c, "int8_acc"), num(&line, "int8_acc"), "{line}");
    assert!(int(c, "f32_max_lsb_diff") <= MAX_F32_LSB, "{line}");
    for f in [
        "float.ckpt",
        "qat.ckpt",
        "ptq.intq",
        "model.intq",
        "curve.png",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    assert!(Model::load(&dir.join("model.intq")).is_ok());
}
