//! Training on a user's own data through the `intq` binary: a folder of 32x32 RGB PNG pictures
//! written here, resnet20 trained and fine-tuned on it, converted, and the integer model checked
//! against its checkpoint; `intq data info` on the folder; the input and class count recorded
//! in the checkpoint, and data of another class count refused with a message saying what
//! differs.

mod common;
use common::{int, intq, json};

use std::path::{Path, PathBuf};

use intq_train::ckpt_file::DataMeta;

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

/// An image folder `train/<class>/`, `test/<class>/` of `classes` classes with `per_class`
/// training and 2 test pictures each, `size`x`size` RGB: class `k` is a colour-coded square at a
/// class-specific place over noise.
fn picture_folder(root: &Path, classes: usize, per_class: usize, size: u32) {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (split, n) in [("train", per_class), ("test", 2)] {
        for k in 0..classes {
            let dir = root.join(split).join(format!("class{k}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let img = image::RgbImage::from_fn(size, size, |x, y| {
                    let inside = (x / 8) as usize == k % 4 && (y / 8) as usize == k / 4;
                    let noise = (next() % 48) as u8;
                    if inside {
                        image::Rgb([200 + noise, (k * 40) as u8, 255 - noise])
                    } else {
                        image::Rgb([noise, noise / 2, noise])
                    }
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

/// The data a checkpoint records.
fn meta(ckpt: &Path) -> DataMeta {
    let bytes = std::fs::read(ckpt).unwrap();
    let file = intq_train::ckpt_file::parse(&bytes, ckpt).unwrap();
    file.meta.data.expect("the data is recorded")
}

/// `head` plus the options of a short run: one epoch, batches of 8, 8 test images, quiet.
fn short_run<'a>(head: &[&'a str], out: &'a str) -> Vec<&'a str> {
    let tail = [
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--limit-test",
        "8",
        "--quiet",
        "--out",
        out,
    ];
    head.iter().copied().chain(tail).collect()
}

fn train_args<'a>(model: &'a str, data: &'a str, out: &'a str) -> Vec<&'a str> {
    short_run(&["train", "--model", model, "--data", data], out)
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("own_data", name)
}

#[test]
fn resnet20_trains_converts_and_matches_on_an_rgb_picture_folder() {
    let dir = scratch("resnet20");
    let pics = dir.join("pictures");
    picture_folder(&pics, 5, 4, 32);
    let p = pics.to_str().unwrap();

    let (info, _) = ok(&["data", "info", p]);
    assert!(info.contains("image folder"), "{info}");
    assert!(info.contains("classes: 5"), "{info}");
    assert!(info.contains("32x32"), "{info}");
    // 5 classes x 4 training pictures, 5 x 2 held out.
    assert!(
        info.lines()
            .any(|l| l.contains("total") && l.contains("20") && l.contains("10")),
        "{info}"
    );

    let float = dir.join("float.ckpt");
    let f = float.to_str().unwrap();
    let (_, log) = ok(&train_args("resnet20", p, f));
    assert!(log.contains("is image folder"), "{log}");
    let m = meta(&float);
    assert_eq!(m.source, p);
    assert_eq!(m.input, Some([3, 32, 32]));
    assert_eq!(m.classes, Some(5));
    assert_eq!(m.resize.as_deref(), Some("stretch"));
    assert_eq!(
        m.class_names,
        ["class0", "class1", "class2", "class3", "class4"]
    );

    // QAT takes the data and the input from the checkpoint.
    let qat = dir.join("qat.ckpt");
    let q = qat.to_str().unwrap();
    ok(&short_run(&["qat", "--from", f], q));
    assert_eq!(meta(&qat).input, Some([3, 32, 32]));

    let model = dir.join("model.intq");
    let mp = model.to_str().unwrap();
    ok(&["convert", q, "--out", mp]);
    let g = intq_engine::Model::load(&model).unwrap();
    let graph = g.graph();
    assert_eq!(graph.tensor(graph.inputs()[0]).shape, vec![1, 32, 32, 3]);
    assert_eq!(*graph.tensor(graph.outputs()[0]).shape.last().unwrap(), 5);

    let (out, _) = ok(&["eval", mp, "--compare", q, "--data", p, "--json"]);
    let out = json(&out);
    assert_eq!(int(&out, "images"), 10, "{out}");
    assert_eq!(int(&out, "top1_mismatch"), 0, "{out}");
    assert_eq!(int(&out, "max_lsb_diff"), 0, "{out}");
    assert_eq!(int(&out, "logits_total"), 50, "{out}");
    // The model records its preprocessing and class names, so it evaluates on the folder without
    // its checkpoint, as accurately as the comparison measured.
    let rec: serde_json::Value =
        serde_json::from_str(&graph.metadata()["intq.input"]).expect("intq.input is JSON");
    assert_eq!(
        (
            &rec["dtype"],
            &rec["height"],
            &rec["channels"],
            &rec["resize"]
        ),
        (&"uint8".into(), &32.into(), &3.into(), &"stretch".into()),
        "{rec}"
    );
    assert_eq!(
        graph.metadata()["intq.classes"],
        r#"["class0","class1","class2","class3","class4"]"#
    );
    let (alone, _) = ok(&["eval", mp, "--data", p, "--json"]);
    let alone = json(&alone);
    assert_eq!(int(&alone, "images"), 10, "{alone}");
    assert_eq!(alone["int8_acc"], out["int8_acc"], "{alone} vs {out}");

    // The same pictures as 3 classes: the checkpoint's 5 classes do not fit.
    let three = dir.join("three");
    picture_folder(&three, 3, 2, 32);
    let err = fail(&["eval", q, "--data", three.to_str().unwrap()]);
    assert!(
        err.contains("expects 3x32x32 inputs (channels x height x width) and 5 classes")
            && err.contains("has 3x32x32 pictures and 3 classes"),
        "{err}"
    );
    // Grey 28x28 pictures: the message gives them as stored, not as converted.
    let grey = dir.join("grey");
    for split in ["train", "test"] {
        for k in 0..2 {
            let d = grey.join(split).join(format!("c{k}"));
            std::fs::create_dir_all(&d).unwrap();
            image::GrayImage::from_pixel(28, 28, image::Luma([40 * k as u8]))
                .save(d.join("0.png"))
                .unwrap();
        }
    }
    let err = fail(&["eval", q, "--data", grey.to_str().unwrap()]);
    assert!(err.contains("has 1x28x28 pictures and 2 classes"), "{err}");
}

#[test]
fn pictures_are_brought_to_the_input_each_model_takes() {
    let dir = scratch("shapes");
    let pics = dir.join("pictures");
    picture_folder(&pics, 3, 2, 40);
    let p = pics.to_str().unwrap();
    // small-cnn: RGB made grey, 40x40 stretched to its 28x28.
    let cnn = dir.join("cnn.ckpt");
    let (_, log) = ok(&train_args("small-cnn", p, cnn.to_str().unwrap()));
    assert!(log.contains("input: 1x28x28"), "{log}");
    assert_eq!(meta(&cnn).input, Some([1, 28, 28]));
    // resnet18 at the size asked for, cropped.
    let r18 = dir.join("r18.ckpt");
    let mut args = train_args("resnet18", p, r18.to_str().unwrap());
    args.extend(["--input-size", "32x32", "--resize", "crop"]);
    ok(&args);
    let m = meta(&r18);
    assert_eq!(m.input, Some([3, 32, 32]));
    assert_eq!(m.resize.as_deref(), Some("crop"));
    assert_eq!(m.classes, Some(3));
    // MobileNetV2 at the data's own size when none is asked for.
    let mb = dir.join("mb.ckpt");
    ok(&train_args("mobilenet-v2@0.25", p, mb.to_str().unwrap()));
    assert_eq!(meta(&mb).input, Some([3, 40, 40]));
    // The float checkpoint evaluates on the same folder, converted the way it was trained.
    let (out, _) = ok(&["eval", r18.to_str().unwrap(), "--json"]);
    assert_eq!(int(&json(&out), "images"), 6, "{out}");
}

/// A CIFAR-10 binary folder written by hand: records of a label byte and the red, green and blue
/// 32x32 planes.
fn cifar10_folder(root: &Path, train: usize, test: usize) {
    std::fs::create_dir_all(root).unwrap();
    for (file, n) in [("data_batch_1.bin", train), ("test_batch.bin", test)] {
        let mut bytes = Vec::new();
        for i in 0..n {
            let label = (i % 10) as u8;
            bytes.push(label);
            for plane in 0..3u8 {
                for p in 0..1024usize {
                    let on = p / 32 / 3 == label as usize;
                    bytes.push(if on {
                        180 + 20 * plane
                    } else {
                        (p % 7) as u8 * 5
                    });
                }
            }
        }
        std::fs::write(root.join(file), bytes).unwrap();
    }
}

#[test]
fn a_cifar10_folder_trains_a_grey_model_and_evaluates() {
    let dir = scratch("cifar10");
    let cifar = dir.join("cifar");
    cifar10_folder(&cifar, 20, 10);
    let c = cifar.to_str().unwrap();
    let (info, _) = ok(&["data", "info", c]);
    assert!(info.contains("CIFAR-10 binary"), "{info}");
    assert!(info.contains("classes: 10"), "{info}");
    // small-cnn takes 1x28x28: RGB made grey, 32x32 stretched.
    let ckpt = dir.join("cnn.ckpt");
    let (_, log) = ok(&train_args("small-cnn", c, ckpt.to_str().unwrap()));
    assert!(log.contains("is CIFAR-10 binary"), "{log}");
    assert!(log.contains("converted to the 1x28x28 inputs"), "{log}");
    let m = meta(&ckpt);
    assert_eq!((m.input, m.classes), (Some([1, 28, 28]), Some(10)));
    let (out, _) = ok(&["eval", ckpt.to_str().unwrap(), "--json"]);
    assert_eq!(int(&json(&out), "images"), 10, "{out}");
}
