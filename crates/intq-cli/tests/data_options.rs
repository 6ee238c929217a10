//! How `intq` reads a data source beyond its path, through the binary: the seeded held-out
//! split of a flat folder (recorded, so eval holds out the same pictures), CIFAR-100's coarse
//! labels, the scan manifest that spares decoding unchanged pictures, the augmentation recorded
//! for qat --from and eval, and the streaming loader, which trains the same network bit for bit
//! as the in-memory one.

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

fn scratch(name: &str) -> PathBuf {
    common::scratch("data_options", name)
}

fn meta(ckpt: &Path) -> DataMeta {
    let bytes = std::fs::read(ckpt).unwrap();
    let file = intq_train::ckpt_file::parse(&bytes, ckpt).unwrap();
    file.meta.data.expect("the data is recorded")
}

/// A flat folder `ROOT/<class>/<i>.png` of 28x28 grey pictures, `n` per class: class `k` is a
/// bright band at a class-specific height over noise.
fn flat_folder(root: &Path, classes: usize, n: usize) {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for k in 0..classes {
        let dir = root.join(format!("c{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let img = image::GrayImage::from_fn(28, 28, |_, y| {
                let band = (y as usize / 7) == k % 4;
                image::Luma([if band { 220 } else { (next() % 60) as u8 }])
            });
            img.save(dir.join(format!("{i:02}.png"))).unwrap();
        }
    }
}

/// `intq train` of small-cnn, batches of 8, quiet, with `extra` options (one epoch unless they
/// say otherwise).
fn train(data: &Path, out: &Path, extra: &[&str]) -> String {
    let epochs = if extra.contains(&"--epochs") {
        &[][..]
    } else {
        &["--epochs", "1"][..]
    };
    let mut args = vec![
        "train",
        "--model",
        "small-cnn",
        "--data",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(epochs);
    args.extend_from_slice(&[
        "--batch-size",
        "8",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    args.extend_from_slice(extra);
    ok(&args).1
}

#[test]
fn the_held_out_split_is_seeded_recorded_and_reused_by_eval_and_qat() {
    let dir = scratch("val_split");
    let data = dir.join("flat");
    flat_folder(&data, 3, 12);
    let ckpt = dir.join("f.ckpt");
    let log = train(&data, &ckpt, &["--val-split", "0.25", "--seed", "5"]);
    // 3 of each class's 12 held out.
    assert!(log.contains("27 train + 9 test pictures"), "{log}");
    let m = meta(&ckpt);
    assert_eq!((m.val_split, m.split_seed), (Some(0.25), Some(5)));
    // eval holds out the same nine without being told.
    let (out, _) = ok(&["eval", ckpt.to_str().unwrap(), "--json"]);
    assert_eq!(int(&json(&out), "images"), 9, "{out}");
    let (text, _) = ok(&["eval", ckpt.to_str().unwrap()]);
    assert!(
        text.contains("held out 0.25 of each class (seed 5)"),
        "{text}"
    );
    // QAT fine-tunes on the float run's training pictures and records the same split.
    let q = dir.join("q.ckpt");
    let (_, qlog) = ok(&[
        "qat",
        "--from",
        ckpt.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--quiet",
        "--out",
        q.to_str().unwrap(),
    ]);
    assert!(qlog.contains("27 train + 9 test pictures"), "{qlog}");
    let qm = meta(&q);
    assert_eq!((qm.val_split, qm.split_seed), (Some(0.25), Some(5)));
    // A fraction out of range is refused by the option parser.
    let o = intq(&["data", "info", data.to_str().unwrap(), "--val-split", "1.5"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("give a number in [0, 1)"));
}

#[test]
fn the_scan_manifest_spares_decoding_unchanged_pictures() {
    let dir = scratch("manifest");
    let data = dir.join("flat");
    flat_folder(&data, 2, 6);
    let info = |args: &[&str]| ok(&[&["data", "info", data.to_str().unwrap()], args].concat());
    info(&[]);
    let manifest = data.join("intq-manifest.json");
    assert!(manifest.is_file(), "the scan is saved beside the data");
    let ckpt = dir.join("m.ckpt");
    let log = train(&data, &ckpt, &[]);
    assert!(
        log.contains("12 of 12 pictures unchanged since the last scan"),
        "{log}"
    );
    // A changed picture is decoded again, the others are not.
    let changed = data.join("c1/03.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([9]))
        .save(&changed)
        .unwrap();
    let bump = std::fs::File::options().write(true).open(&changed).unwrap();
    bump.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    let log = train(&data, &ckpt, &[]);
    assert!(
        log.contains("11 of 12 pictures unchanged since the last scan"),
        "{log}"
    );
    // A broken manifest is a warning, and the folder is scanned afresh.
    std::fs::write(&manifest, b"{ not json").unwrap();
    let log = train(&data, &ckpt, &[]);
    assert!(log.contains("scanning afresh"), "{log}");
    assert!(log.contains("0 of 12 pictures unchanged"), "{log}");
}

#[test]
fn augmentation_is_recorded_reused_by_qat_and_shown_by_eval() {
    let dir = scratch("augment");
    let data = dir.join("flat");
    flat_folder(&data, 2, 8);
    let ckpt = dir.join("a.ckpt");
    train(&data, &ckpt, &["--augment", "flip,crop:2"]);
    assert_eq!(meta(&ckpt).augment.as_deref(), Some("crop:2,flip"));
    let (text, _) = ok(&["eval", ckpt.to_str().unwrap()]);
    assert!(text.contains("augment crop:2,flip"), "{text}");
    let q = dir.join("q.ckpt");
    let qat = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "qat",
            "--from",
            ckpt.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(&args).1
    };
    let log = qat(&q, &[]);
    assert!(
        log.contains("augment: crop:2,flip (as recorded in the checkpoint)"),
        "{log}"
    );
    assert_eq!(meta(&q).augment.as_deref(), Some("crop:2,flip"));
    // Given explicitly, the flag wins; none is recorded as no augmentation.
    let q2 = dir.join("q2.ckpt");
    qat(&q2, &["--augment", "none"]);
    assert_eq!(meta(&q2).augment, None);
    // An unaugmented run records none.
    let plain = dir.join("plain.ckpt");
    train(&data, &plain, &[]);
    assert_eq!(meta(&plain).augment, None);
}

/// CIFAR-100 binary records: coarse label, fine label, then 3072 pixel bytes.
fn cifar100(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let records = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let (coarse, fine) = ((i % 20) as u8, (i % 100) as u8);
                [coarse, fine]
                    .into_iter()
                    .chain((0..3072).map(move |p| ((p + i) % 251) as u8))
            })
            .collect()
    };
    std::fs::write(root.join("train.bin"), records(100)).unwrap();
    std::fs::write(root.join("test.bin"), records(20)).unwrap();
}

#[test]
fn cifar100_trains_on_coarse_labels_when_asked_and_eval_keeps_them() {
    let dir = scratch("cifar100");
    let data = dir.join("c100");
    cifar100(&data);
    let ckpt = dir.join("c.ckpt");
    train(&data, &ckpt, &["--labels", "coarse", "--limit-test", "20"]);
    let m = meta(&ckpt);
    assert_eq!((m.classes, m.labels.as_deref()), (Some(20), Some("coarse")));
    // eval reads the coarse labels the run recorded (fine ones would be 100 classes, refused).
    let (out, _) = ok(&["eval", ckpt.to_str().unwrap(), "--json"]);
    assert_eq!(int(&json(&out), "images"), 20, "{out}");
    let o = intq(&["eval", ckpt.to_str().unwrap(), "--labels", "fine"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("100 classes"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let fine = dir.join("fine.ckpt");
    train(&data, &fine, &["--limit-test", "20"]);
    assert_eq!(meta(&fine).classes, Some(100));
}

/// The tensors of a checkpoint file: the bytes after its safetensors header (the header's
/// metadata is a map whose key order may differ from file to file).
fn tensor_bytes(ckpt: &Path) -> Vec<u8> {
    let b = std::fs::read(ckpt).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    b[8 + n..].to_vec()
}

/// The per-step and per-epoch losses of a metrics log, without the timings.
fn losses(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            let v = json(l);
            format!("{} {}", v["step"], v["train_loss"])
        })
        .collect()
}

#[test]
fn streaming_the_pictures_trains_the_same_network_bit_for_bit() {
    let dir = scratch("stream");
    let data = dir.join("flat");
    flat_folder(&data, 3, 10);
    let run = |loader: &str| {
        let out = dir.join(format!("{loader}.ckpt"));
        let log = train(
            &data,
            &out,
            &[
                "--loader",
                loader,
                "--epochs",
                "2",
                "--augment",
                "crop:2,flip",
                "--seed",
                "3",
                "--log-every",
                "1",
            ],
        );
        (out, log)
    };
    let (mem, _) = run("memory");
    let (st, log) = run("stream");
    assert!(log.contains("read from disk as needed"), "{log}");
    assert_eq!(tensor_bytes(&mem), tensor_bytes(&st));
    let mut m1 = mem.clone().into_os_string();
    m1.push(".metrics.jsonl");
    let mut m2 = st.clone().into_os_string();
    m2.push(".metrics.jsonl");
    let (l1, l2) = (losses(Path::new(&m1)), losses(Path::new(&m2)));
    assert!(l1.len() >= 8, "{l1:?}");
    assert_eq!(l1, l2);
    // A registry name or a file cannot be streamed, and says so.
    let o = intq(&[
        "train",
        "--data",
        "fashion-mnist",
        "--loader",
        "stream",
        "--out",
        dir.join("x.ckpt").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--loader stream reads image folders"));
}

#[test]
fn bench_loader_measures_the_loader_and_the_step() {
    let dir = scratch("bench");
    let data = dir.join("flat");
    flat_folder(&data, 2, 8);
    let (out, _) = ok(&[
        "bench",
        "loader",
        "--data",
        data.to_str().unwrap(),
        "--batch",
        "4",
        "--batches",
        "2",
        "--augment",
        "crop:2",
        "--json",
    ]);
    let v = json(&out);
    for k in [
        "loader_images_per_s",
        "step_images_per_s",
        "streamed_step_images_per_s",
    ] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {out}");
    }
    assert_eq!(v["input"], serde_json::json!([1, 28, 28]));
}
