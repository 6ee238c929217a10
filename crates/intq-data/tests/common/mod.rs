//! Helpers shared by the integration tests: IDX bytes written by hand, independent of the
//! crate's encoder, so tests check the reader against the format rather than against itself.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// An unsigned-byte IDX file: zero, zero, 0x08, ndim, big-endian dims, data.
pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

/// A small data set: `n_train` + `n_test` images of rows x cols with pixel values and labels
/// from simple formulas, written as the four IDX files into `dir/<kind>/` (gzipped if `gz`).
pub struct Tiny {
    pub train_images: Vec<u8>,
    pub train_labels: Vec<u8>,
    pub test_images: Vec<u8>,
    pub test_labels: Vec<u8>,
}

pub fn tiny(n_train: u32, n_test: u32, rows: u32, cols: u32) -> Tiny {
    let px = |n: u32, salt: u32| -> Vec<u8> {
        (0..n * rows * cols)
            .map(|i| (i.wrapping_mul(31).wrapping_add(salt) % 256) as u8)
            .collect()
    };
    let lab = |n: u32, salt: u32| -> Vec<u8> { (0..n).map(|i| ((i + salt) % 10) as u8).collect() };
    Tiny {
        train_images: px(n_train, 7),
        train_labels: lab(n_train, 3),
        test_images: px(n_test, 101),
        test_labels: lab(n_test, 5),
    }
}

pub fn write_tiny(dir: &Path, kind: &str, t: &Tiny, rows: u32, cols: u32, gz: bool) {
    let n_train = t.train_labels.len() as u32;
    let n_test = t.test_labels.len() as u32;
    let files = [
        (
            "train-images-idx3-ubyte",
            idx_bytes(&[n_train, rows, cols], &t.train_images),
        ),
        (
            "train-labels-idx1-ubyte",
            idx_bytes(&[n_train], &t.train_labels),
        ),
        (
            "t10k-images-idx3-ubyte",
            idx_bytes(&[n_test, rows, cols], &t.test_images),
        ),
        (
            "t10k-labels-idx1-ubyte",
            idx_bytes(&[n_test], &t.test_labels),
        ),
    ];
    for (stem, bytes) in files {
        if gz {
            write(&dir.join(kind).join(format!("{stem}.gz")), &gzip(&bytes));
        } else {
            write(&dir.join(kind).join(stem), &bytes);
        }
    }
}
