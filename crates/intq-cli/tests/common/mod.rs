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

/// The one JSON object `text` holds.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}"))
}

/// The integer at `key` of a JSON object.
pub fn int(v: &serde_json::Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} is not an integer in {v}"))
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
