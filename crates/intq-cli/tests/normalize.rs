//! `--normalize` through the `intq` binary: networks trained on normalized pictures convert to
//! integer models that read raw uint8 pixels, and equal their fake-quant checkpoints exactly (no
//! top-1 mismatch, no LSB of difference) with the normalization folded into the input params
//! (the same mean and std on every channel) or into the first layer (per-channel values), on the
//! uint8 and the int8 scheme; the model records its preprocessing, so it evaluates without its
//! checkpoint.

mod common;
use common::{int, intq, json};

use std::path::{Path, PathBuf};

fn ok(args: &[&str]) -> (String, String) {
    let o = intq(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "intq {args:?} failed:\n{err}");
    (String::from_utf8(o.stdout).unwrap(), err)
}

fn fail(args: &[&str]) -> String {
    let o = intq(args);
    assert!(!o.status.success(), "intq {args:?} should have failed");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("normalize", name)
}

/// An image folder `train/<class>/`, `test/<class>/` of 4 classes, 4 training and 3 test
/// pictures each, 32x32 RGB: a bright square at a class-specific corner over noise, bright up
/// to the picture's border so that padding matters.
fn picture_folder(root: &Path) {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (split, n) in [("train", 4), ("test", 3)] {
        for k in 0..4u32 {
            let dir = root.join(split).join(format!("class{k}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let img = image::RgbImage::from_fn(32, 32, |x, y| {
                    let inside = x / 16 == k % 2 && y / 16 == k / 2;
                    let noise = (next() % 64) as u8;
                    if inside {
                        image::Rgb([190 + noise, 40 * k as u8 + noise, 255 - noise])
                    } else {
                        image::Rgb([noise, 255 - noise, noise / 2])
                    }
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

/// `head` plus the options of a short run: one epoch of batches of 8, quiet.
fn short_run<'a>(head: &[&'a str], out: &'a str) -> Vec<&'a str> {
    let tail = [
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--quiet",
        "--out",
        out,
    ];
    head.iter().copied().chain(tail).collect()
}

/// Fine-tunes `float` with `scheme` options, converts (with `extra` convert options) and checks
/// the integer model against the checkpoint on `data`: no top-1 mismatch, no LSB of difference;
/// then the model alone on the same data gives the same accuracy. Returns the model's path.
fn qat_convert_compare(
    dir: &Path,
    float: &str,
    data: &str,
    tag: &str,
    scheme: &[&str],
    extra: &[&str],
) -> PathBuf {
    let qat = dir.join(format!("{tag}.ckpt"));
    let q = qat.to_str().unwrap();
    let mut head = vec!["qat", "--from", float];
    head.extend(scheme);
    ok(&short_run(&head, q));
    let model = dir.join(format!("{tag}.intq"));
    let m = model.to_str().unwrap();
    let mut args = vec!["convert", q, "--out", m];
    args.extend(extra);
    ok(&args);
    let (out, _) = ok(&["eval", m, "--compare", q, "--data", data, "--json"]);
    let cmp = json(&out);
    assert_eq!(int(&cmp, "images"), 12, "{tag}: {cmp}");
    assert_eq!(int(&cmp, "top1_mismatch"), 0, "{tag}: {cmp}");
    assert_eq!(int(&cmp, "max_lsb_diff"), 0, "{tag}: {cmp}");
    // Every materialized activation too, the input's codes (the pixels) included.
    for row in cmp["layers"].as_array().expect("layers") {
        assert_eq!(int(row, "differing"), 0, "{tag}: {row}");
    }
    assert!(
        cmp["layers"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("input"),
        "{cmp}"
    );
    // The model alone reads its preprocessing from its metadata.
    let (alone, _) = ok(&["eval", m, "--data", data, "--json"]);
    let alone = json(&alone);
    assert_eq!(
        alone["int8_acc"], cmp["int8_acc"],
        "{tag}: {alone} vs {cmp}"
    );
    assert_eq!(int(&alone, "images"), 12, "{tag}: {alone}");
    model
}

fn input_record(model: &Path) -> serde_json::Value {
    let m = intq_engine::Model::load(model).unwrap();
    let v = m.graph().metadata().get("intq.input").expect("intq.input");
    json(v)
}

#[test]
fn per_channel_normalization_folds_into_the_first_layer_exactly() {
    let dir = scratch("per_channel");
    let pics = dir.join("pictures");
    picture_folder(&pics);
    let p = pics.to_str().unwrap();
    let float = dir.join("float.ckpt");
    let f = float.to_str().unwrap();
    ok(&short_run(
        &[
            "train",
            "--model",
            "resnet20",
            "--data",
            p,
            "--normalize",
            "imagenet",
        ],
        f,
    ));

    let u8_model = qat_convert_compare(&dir, f, p, "u8", &[], &[]);
    let g = intq_engine::Model::load(&u8_model).unwrap();
    let graph = g.graph();
    let input = graph.tensor(graph.inputs()[0]);
    assert_eq!(input.dtype, intq_engine::DType::U8);
    assert_eq!(input.shape, vec![1, 32, 32, 3]);
    // Folded into the first layer: the input's codes are the pixels at S = 1/255, Z = 0.
    let pin = input.params().unwrap();
    assert_eq!((pin.scale, pin.zero_point), (1.0 / 255.0, 0));
    let rec = input_record(&u8_model);
    assert_eq!(rec["dtype"], "uint8", "{rec}");
    assert_eq!(rec["layout"], "NHWC", "{rec}");
    assert_eq!(rec["normalize"]["mean"][1].as_f64().unwrap() as f32, 0.456);
    assert_eq!(rec["normalize"]["std"][2].as_f64().unwrap() as f32, 0.225);
    let classes = g.graph().metadata().get("intq.classes").unwrap();
    assert_eq!(
        json(classes),
        serde_json::json!(["class0", "class1", "class2", "class3"])
    );

    // int8: the graph still reads uint8 pixels and shifts them to int8 inside.
    let i8_model = qat_convert_compare(
        &dir,
        f,
        p,
        "i8",
        &["--scheme", "int8", "--per-channel"],
        &[],
    );
    let g = intq_engine::Model::load(&i8_model).unwrap();
    let graph = g.graph();
    let input = graph.tensor(graph.inputs()[0]);
    assert_eq!(input.dtype, intq_engine::DType::U8);
    assert!(matches!(
        graph.ops()[0],
        intq_engine::Op::Quantize { input: i, .. } if i == graph.inputs()[0]
    ));

    // A fine-tuning run keeps the float run's normalization.
    let err = fail(&[
        "qat",
        "--from",
        f,
        "--normalize",
        "none",
        "--out",
        dir.join("x.ckpt").to_str().unwrap(),
    ]);
    assert!(
        err.contains("--normalize none") && err.contains("trained with --normalize imagenet"),
        "{err}"
    );
    // The same one spelled out is accepted (and the run is the plain one).
    ok(&short_run(
        &[
            "qat",
            "--from",
            f,
            "--normalize",
            "0.485,0.456,0.406/0.229,0.224,0.225",
            "--max-steps",
            "1",
        ],
        dir.join("y.ckpt").to_str().unwrap(),
    ));
}

#[test]
fn one_mean_and_std_set_the_input_params_exactly() {
    let dir = scratch("uniform");
    let pics = dir.join("pictures");
    picture_folder(&pics);
    let p = pics.to_str().unwrap();
    let float = dir.join("float.ckpt");
    let f = float.to_str().unwrap();
    ok(&short_run(
        &[
            "train",
            "--model",
            "mobilenet-v2@0.25",
            "--input-size",
            "32x32",
            "--data",
            p,
            "--normalize",
            "0.5/0.25",
        ],
        f,
    ));

    // uint8: S = 1/(255 * 0.25), Z = round(127.5) = 128, and the codes are the pixels.
    let u8_model = qat_convert_compare(&dir, f, p, "u8", &[], &[]);
    let g = intq_engine::Model::load(&u8_model).unwrap();
    let graph = g.graph();
    let pin = graph.tensor(graph.inputs()[0]).params().unwrap();
    assert_eq!((pin.scale, pin.zero_point), (1.0 / (255.0 * 0.25), 128));
    assert_eq!(input_record(&u8_model)["normalize"]["std"][0], 0.25);

    // int8: uint8 pixels shifted to int8 at the same scale, Z - 128.
    let i8_model = qat_convert_compare(&dir, f, p, "i8", &["--scheme", "int8"], &[]);
    let g = intq_engine::Model::load(&i8_model).unwrap();
    let graph = g.graph();
    let x = graph.tensor(graph.inputs()[0]);
    assert_eq!(x.dtype, intq_engine::DType::U8);
    let q = graph.tensor(graph.tensor_by_name("input_q").unwrap());
    assert_eq!(q.dtype, intq_engine::DType::I8);
    assert_eq!(q.params().unwrap().zero_point, 0);

    // Float edges: the f32 input is the real value of the pixel codes, recorded in the model.
    let fe = qat_convert_compare(&dir, f, p, "u8fe", &[], &["--float-edges"]);
    let rec = input_record(&fe);
    assert_eq!(rec["dtype"], "float32", "{rec}");
    assert_eq!(rec["pixel_zero_point"], 128, "{rec}");
}

#[test]
fn bad_normalizations_are_refused_before_training() {
    let dir = scratch("bad");
    let pics = dir.join("pictures");
    picture_folder(&pics);
    let p = pics.to_str().unwrap();
    let out = dir.join("x.ckpt");
    let o = out.to_str().unwrap();
    let err = fail(&["train", "--data", p, "--normalize", "0.5/0", "--out", o]);
    assert!(err.contains("not positive"), "{err}");
    // Three channels' values for the grey small-cnn.
    let err = fail(&[
        "train",
        "--model",
        "small-cnn",
        "--data",
        p,
        "--normalize",
        "imagenet",
        "--out",
        o,
    ]);
    assert!(
        err.contains("names 3 channels; the network reads 1"),
        "{err}"
    );
    assert!(!out.exists());
}
