//! Bad data through the `intq` binary: every problem stops `intq train` (or is reported, where
//! it does not stop it) with a message naming the file and the problem, never a panic, and no
//! checkpoint is written by a run that failed to read its data.

mod common;

use std::path::{Path, PathBuf};

use intq_data::numpy::{npy_bytes, npz_bytes};

fn scratch(name: &str) -> PathBuf {
    common::scratch("data_errors", name)
}

/// Runs `intq train` on `data` into `dir/model.ckpt`, with any `extra` options; returns the
/// exit success, stderr and the checkpoint's path.
fn train(dir: &Path, data: &Path, extra: &[&str]) -> (bool, String, PathBuf) {
    let ckpt = dir.join("model.ckpt");
    let mut args = vec![
        "train",
        "--model",
        "small-cnn",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--quiet",
        "--out",
        ckpt.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = common::intq(&args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "intq panicked:\n{err}");
    (o.status.success(), err, ckpt)
}

/// `intq train` on `data` must fail, write no checkpoint, and say every one of `expect`.
fn fails_saying(dir: &Path, data: &Path, extra: &[&str], expect: &[&str]) -> String {
    let (ok, err, ckpt) = train(dir, data, extra);
    assert!(
        !ok,
        "training on {} should have failed:\n{err}",
        data.display()
    );
    for e in expect {
        assert!(err.contains(e), "the error should say {e:?}:\n{err}");
    }
    assert!(
        !ckpt.exists(),
        "a failed run left a checkpoint at {}",
        ckpt.display()
    );
    let mut leftovers = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("model.ckpt"));
    assert!(leftovers.next().is_none(), "a failed run left files behind");
    err
}

/// A 28x28 grey PNG whose pixels depend on `v`.
fn png(path: &Path, v: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([v.wrapping_add((x * y) as u8)]))
        .save(path)
        .unwrap();
}

/// `ROOT/<split>/<class>/<i>.png` for each class, `n` pictures each.
fn folder(root: &Path, split: &str, classes: &[&str], n: usize) {
    for (k, c) in classes.iter().enumerate() {
        for i in 0..n {
            png(
                &root.join(split).join(c).join(format!("{i}.png")),
                (k * 50 + i) as u8,
            );
        }
    }
}

#[test]
fn a_truncated_picture_is_named_with_the_decoding_problem() {
    let dir = scratch("truncated");
    let data = dir.join("pics");
    folder(&data, "train", &["a", "b"], 4);
    folder(&data, "test", &["a", "b"], 1);
    let bad = data.join("train/b/2.png");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    fails_saying(
        &dir,
        &data,
        &[],
        &["train/b/2.png", "cannot decode the picture"],
    );
}

#[test]
fn a_file_that_is_no_picture_at_all_is_named() {
    let dir = scratch("garbage");
    let data = dir.join("pics");
    folder(&data, "train", &["a", "b"], 3);
    folder(&data, "test", &["a", "b"], 1);
    std::fs::write(data.join("train/a/notes.jpg"), b"this is text, not a JPEG").unwrap();
    fails_saying(&dir, &data, &[], &["train/a/notes.jpg"]);
}

#[test]
fn an_unreadable_file_is_named_with_the_reason() {
    let dir = scratch("unreadable");
    let data = dir.join("pics");
    folder(&data, "train", &["a", "b"], 3);
    folder(&data, "test", &["a", "b"], 1);
    // A link to nothing: reading it fails whatever the user's permissions (tests may run as
    // root, which reads files of any mode).
    std::os::unix::fs::symlink(dir.join("gone.png"), data.join("train/a/link.png")).unwrap();
    fails_saying(
        &dir,
        &data,
        &[],
        &["train/a/link.png", "cannot read the file"],
    );
}

#[test]
fn an_empty_class_folder_is_named() {
    let dir = scratch("empty_class");
    let data = dir.join("pics");
    folder(&data, "train", &["a", "b"], 3);
    folder(&data, "test", &["a", "b"], 1);
    std::fs::create_dir_all(data.join("train/c")).unwrap();
    fails_saying(
        &dir,
        &data,
        &[],
        &["train/c", "class folder has no pictures"],
    );
}

#[test]
fn a_held_out_class_that_training_lacks_is_named() {
    let dir = scratch("unknown_val_class");
    let data = dir.join("pics");
    folder(&data, "train", &["a", "b"], 3);
    folder(&data, "val", &["a", "b", "zebra"], 1);
    fails_saying(
        &dir,
        &data,
        &[],
        &["val/zebra", "\"zebra\" is not among the training classes"],
    );
}

#[test]
fn skip_bad_lists_every_left_out_file_and_trains_on_the_rest() {
    let dir = scratch("skip_bad");
    let data = dir.join("pics");
    folder(&data, "train", &["a", "b"], 4);
    folder(&data, "val", &["a", "b", "zebra"], 1);
    std::fs::write(data.join("train/a/bad.png"), b"\x89PNG but no more").unwrap();
    std::fs::create_dir_all(data.join("train/c")).unwrap();
    let (ok, err, ckpt) = train(&dir, &data, &["--skip-bad"]);
    assert!(ok, "--skip-bad should train on the good pictures:\n{err}");
    assert!(err.contains("3 pictures or folders left out"), "{err}");
    for s in ["train/a/bad.png", "train/c", "val/zebra"] {
        assert!(
            err.contains(&format!("skipped {s}")),
            "{s} not listed:\n{err}"
        );
    }
    assert!(ckpt.exists());
    // The record says so, and eval reads the folder the same way without being told again.
    let o = common::intq(&["eval", ckpt.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("unreadable pictures skipped"), "{out}");
}

#[test]
fn zero_images_is_an_error_naming_the_source() {
    let dir = scratch("zero_images");
    // Every picture bad: nothing is left even when skipping.
    let data = dir.join("pics");
    for c in ["a", "b"] {
        std::fs::create_dir_all(data.join("train").join(c)).unwrap();
        std::fs::write(data.join("train").join(c).join("x.png"), b"nope").unwrap();
    }
    fails_saying(
        &dir,
        &data,
        &["--skip-bad"],
        &["none of the 2 pictures could be read"],
    );
    // An .npz whose training arrays hold no images.
    let npz = dir.join("empty.npz");
    write_npz(&npz, 0, 0, 2, 2, &[]);
    fails_saying(&dir, &npz, &[], &["x_train.npy", "no training images"]);
}

/// An `.npz` of 28x28 grey images: `n_train` training images with `n_train_labels` labels and
/// `n_test` test images with as many labels; `train_labels` override the first labels.
fn write_npz(
    path: &Path,
    n_train: usize,
    n_train_labels: usize,
    n_test: usize,
    n_test_labels: usize,
    train_labels: &[i64],
) {
    let images = |n: usize| npy_bytes("|u1", &[n, 28, 28], &vec![7u8; n * 784]);
    let labels = |n: usize, first: &[i64]| {
        let v: Vec<u8> = (0..n)
            .flat_map(|i| {
                first
                    .get(i)
                    .copied()
                    .unwrap_or((i % 2) as i64)
                    .to_le_bytes()
            })
            .collect();
        npy_bytes("<i8", &[n], &v)
    };
    let (xtr, ytr) = (images(n_train), labels(n_train_labels, train_labels));
    let (xte, yte) = (images(n_test), labels(n_test_labels, &[]));
    let bytes = npz_bytes(&[
        ("x_train", &xtr),
        ("y_train", &ytr),
        ("x_test", &xte),
        ("y_test", &yte),
    ]);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn npz_labels_out_of_range_are_named_with_their_index() {
    let dir = scratch("npz_labels");
    let npz = dir.join("neg.npz");
    write_npz(&npz, 4, 4, 2, 2, &[0, 1, -3]);
    fails_saying(
        &dir,
        &npz,
        &[],
        &["y_train.npy", "label -3 at index 2 is negative"],
    );
    let npz = dir.join("big.npz");
    write_npz(&npz, 4, 4, 2, 2, &[0, 300]);
    fails_saying(
        &dir,
        &npz,
        &[],
        &[
            "y_train.npy",
            "label 300 at index 1",
            "labels must be 0 to 255",
        ],
    );
}

#[test]
fn npz_arrays_of_different_lengths_are_named() {
    let dir = scratch("npz_lengths");
    let npz = dir.join("short.npz");
    write_npz(&npz, 5, 4, 2, 2, &[]);
    fails_saying(
        &dir,
        &npz,
        &[],
        &["y_train.npy", "4 labels but", "x_train.npy holds 5 images"],
    );
}

/// A CIFAR-10 binary folder whose records carry `labels` (train) and label 0 (2 test records).
fn cifar10(root: &Path, labels: &[u8]) {
    std::fs::create_dir_all(root).unwrap();
    let records = |ls: &[u8]| -> Vec<u8> {
        ls.iter()
            .flat_map(|&l| std::iter::once(l).chain((0..3072).map(|p| (p % 251) as u8)))
            .collect()
    };
    std::fs::write(root.join("data_batch_1.bin"), records(labels)).unwrap();
    std::fs::write(root.join("test_batch.bin"), records(&[0, 1])).unwrap();
}

#[test]
fn a_cifar_label_out_of_range_is_named() {
    let dir = scratch("cifar_label");
    let data = dir.join("cifar");
    cifar10(&data, &[0, 1, 2, 12, 3]);
    fails_saying(
        &dir,
        &data,
        &[],
        &["data_batch_1.bin", "record 3 has label 12", "10 classes"],
    );
}

#[test]
fn a_cifar_checksum_that_differs_is_reported_and_training_goes_on() {
    let dir = scratch("cifar_checksum");
    let data = dir.join("cifar");
    cifar10(&data, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let (ok, err, ckpt) = train(&dir, &data, &["--limit-test", "2"]);
    assert!(ok, "a CIFAR folder of one's own trains:\n{err}");
    assert!(
        err.contains("data_batch_1.bin") && err.contains("differs from the published"),
        "the differing checksum is reported:\n{err}"
    );
    assert!(ckpt.exists());
    // --labels is CIFAR-100's: on CIFAR-10 it is refused before any checkpoint is written.
    let refused = dir.join("refused");
    std::fs::create_dir_all(&refused).unwrap();
    fails_saying(
        &refused,
        &data,
        &["--labels", "coarse"],
        &[
            "--labels picks CIFAR-100's fine or coarse labels",
            "CIFAR-10 binary",
        ],
    );
}
