//! `load`, `Split` and `DatasetKind` on small hand-made data sets: the happy path (plain, gzip,
//! mixed) and the consistency errors between files.

mod common;

use common::{gzip, idx_bytes, tiny, write, write_tiny};
use intq_data::{load, DataError, DatasetKind, Split};

#[test]
fn loads_plain_and_gz_alike() {
    let t = tiny(7, 3, 4, 5);
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path(), "fashion-mnist", &t, 4, 5, gz);
        let ds = load(DatasetKind::FashionMnist, dir.path()).unwrap();
        assert_eq!(ds.kind(), Some(DatasetKind::FashionMnist));
        assert_eq!((ds.train.len, ds.train.rows, ds.train.cols), (7, 4, 5));
        assert_eq!((ds.test.len, ds.test.rows, ds.test.cols), (3, 4, 5));
        assert_eq!(ds.train.images, t.train_images);
        assert_eq!(ds.train.labels, t.train_labels);
        assert_eq!(ds.test.images, t.test_images);
        assert_eq!(ds.test.labels, t.test_labels);
        assert_eq!(ds.train.image(2), &t.train_images[40..60]);
    }
}

#[test]
fn plain_file_wins_over_gz() {
    let t = tiny(2, 2, 2, 2);
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "mnist", &t, 2, 2, false);
    // A broken .gz beside a good plain file is never read.
    write(
        &dir.path().join("mnist/train-images-idx3-ubyte.gz"),
        b"garbage",
    );
    assert!(load(DatasetKind::Mnist, dir.path()).is_ok());
}

#[test]
fn missing_file_says_how_to_fetch() {
    let dir = tempfile::tempdir().unwrap();
    for kind in DatasetKind::ALL {
        let e = load(kind, dir.path()).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("intq data fetch {kind}")), "{msg}");
        assert!(msg.contains("--data-dir"), "{msg}");
        assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
    }
    // Only the test labels missing: named precisely.
    let t = tiny(2, 2, 2, 2);
    write_tiny(dir.path(), "mnist", &t, 2, 2, true);
    std::fs::remove_file(dir.path().join("mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
    let msg = load(DatasetKind::Mnist, dir.path())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("t10k-labels-idx1-ubyte"), "{msg}");
    assert!(msg.contains("file not found"), "{msg}");
}

#[test]
fn image_label_count_mismatch_is_an_error() {
    let t = tiny(5, 2, 3, 3);
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "mnist", &t, 3, 3, false);
    write(
        &dir.path().join("mnist/train-labels-idx1-ubyte"),
        &idx_bytes(&[4], &t.train_labels[..4]),
    );
    let e = load(DatasetKind::Mnist, dir.path()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::Corrupt { .. }), "{e:?}");
    assert!(msg.contains("train-labels-idx1-ubyte"), "{msg}");
    assert!(msg.contains("4 labels but"), "{msg}");
    assert!(msg.contains("5 images"), "{msg}");
    assert!(msg.contains("intq data fetch mnist"), "{msg}");
}

#[test]
fn label_out_of_range_is_an_error() {
    let t = tiny(4, 2, 2, 2);
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "fashion-mnist", &t, 2, 2, true);
    write(
        &dir.path().join("fashion-mnist/t10k-labels-idx1-ubyte.gz"),
        &gzip(&idx_bytes(&[2], &[3, 10])),
    );
    let msg = load(DatasetKind::FashionMnist, dir.path())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("t10k-labels-idx1-ubyte.gz"), "{msg}");
    assert!(msg.contains("label 10 at index 1"), "{msg}");
}

#[test]
fn wrong_ranks_and_mismatched_image_sizes_are_errors() {
    let t = tiny(2, 2, 2, 2);
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "mnist", &t, 2, 2, false);
    // Images with 2 dims.
    write(
        &dir.path().join("mnist/train-images-idx3-ubyte"),
        &idx_bytes(&[2, 4], &t.train_images),
    );
    let msg = load(DatasetKind::Mnist, dir.path())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("needs 3 dimensions"), "{msg}");
    // Labels with 2 dims.
    write_tiny(dir.path(), "mnist", &t, 2, 2, false);
    write(
        &dir.path().join("mnist/train-labels-idx1-ubyte"),
        &idx_bytes(&[2, 1], &t.train_labels),
    );
    let msg = load(DatasetKind::Mnist, dir.path())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("needs 1 dimension"), "{msg}");
    // Test images of another size than train images.
    write_tiny(dir.path(), "mnist", &t, 2, 2, false);
    write(
        &dir.path().join("mnist/t10k-images-idx3-ubyte"),
        &idx_bytes(&[2, 1, 4], &t.test_images),
    );
    let msg = load(DatasetKind::Mnist, dir.path())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("test images are 1x4"), "{msg}");
}

#[test]
fn split_helpers() {
    let s = Split {
        images: (0..12).collect(),
        labels: vec![3, 3, 9],
        len: 3,
        rows: 2,
        cols: 2,
        channels: 1,
        class_names: (0..10).map(|l| l.to_string()).collect(),
    };
    assert_eq!(s.image(1), &[4, 5, 6, 7]);
    let h = s.label_histogram();
    assert_eq!((h[3], h[9], h.iter().sum::<usize>()), (2, 1, 3));
    let sub = s.subset(2);
    assert_eq!(sub.len, 2);
    assert_eq!(sub.images, (0..8).collect::<Vec<u8>>());
    assert_eq!(sub.labels, vec![3, 3]);
    assert_eq!(s.subset(99), s);
    assert_eq!(s.subset(0).images.len(), 0);
}

#[test]
#[should_panic(expected = "image 3 of a split of 3")]
fn image_out_of_range_panics_like_indexing() {
    let s = Split {
        images: vec![0; 12],
        labels: vec![0; 3],
        len: 3,
        rows: 2,
        cols: 2,
        channels: 1,
        class_names: (0..10).map(|l| l.to_string()).collect(),
    };
    s.image(3);
}

#[test]
fn kind_names_round_trip() {
    for kind in DatasetKind::ALL {
        assert_eq!(kind.to_string().parse::<DatasetKind>().unwrap(), kind);
    }
    assert_eq!("mnist".parse::<DatasetKind>().unwrap(), DatasetKind::Mnist);
    assert_eq!(
        "fashion-mnist".parse::<DatasetKind>().unwrap(),
        DatasetKind::FashionMnist
    );
    assert_eq!(DatasetKind::FashionMnist.to_string(), "fashion-mnist");
    let e = "cifar10".parse::<DatasetKind>().unwrap_err().to_string();
    assert!(e.contains("cifar10") && e.contains("fashion-mnist"), "{e}");
}
