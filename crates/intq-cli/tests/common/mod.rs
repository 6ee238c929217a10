//! Helpers shared by the `intq` CLI integration tests: running the binary and per-test scratch
//! directories.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `intq` binary under test with `args`.
pub fn intq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_intq"))
        .args(args)
        .output()
        .expect("run intq")
}

/// A fresh, empty directory `<cargo test tmp>/<suite>/<name>`.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(suite)
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes one split (`train` or `t10k`) of 28x28 images and their labels as the IDX files a
/// `fashion-mnist/` data directory holds, into `dir`.
pub fn write_split(dir: &Path, split: &str, px: &[u8], labels: &[u8]) {
    let n = labels.len();
    assert_eq!(
        px.len(),
        n * 784,
        "{split}: {n} labels but {} pixels",
        px.len()
    );
    intq_data::idx::write_idx(
        &dir.join(format!("{split}-images-idx3-ubyte")),
        &[n, 28, 28],
        px,
    )
    .unwrap();
    intq_data::idx::write_idx(
        &dir.join(format!("{split}-labels-idx1-ubyte")),
        &[n],
        labels,
    )
    .unwrap();
}
