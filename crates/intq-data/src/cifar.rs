//! CIFAR-10 and CIFAR-100 in their binary ("suitable for C programs") layout.
//!
//! - CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1.bin` ... `data_batch_5.bin` (whichever
//!   exist, read in numeric order) and `test_batch.bin`; each record is 1 label byte then 3072
//!   pixel bytes, the red, green and blue 32×32 planes one after the other. Class names come
//!   from `batches.meta.txt`, one a line.
//! - CIFAR-100 (`cifar-100-binary/`): `train.bin` and `test.bin`; each record is a coarse label
//!   byte (20 superclasses), a fine label byte (100 classes), then the same 3072 pixel bytes.
//!   Fine labels unless coarse ones are asked for; names from `fine_label_names.txt` /
//!   `coarse_label_names.txt`.
//!
//! Without a names file the classes are named by their numbers. Pixels come out HWC (RGB
//! interleaved), like every other source of this crate. Each file's SHA-256 is reported; the
//! six CIFAR-10 files are also checked against the MD5 sums that public download scripts pin
//! for the extracted files of the official `cifar-10-binary.tar.gz` (MD5
//! c32a1d4ab5d03f1284b67883e8d87530). No per-file sums of the CIFAR-100 binary files are
//! published that this crate knows of, so theirs are "unknown". A mismatch is only a warning:
//! a user's own data in this layout is as welcome as the original.

use crate::source::{ChecksumStatus, FileChecksum};
use crate::{DataError, Split};
use md5::Md5;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Image side of both data sets.
pub const SIDE: usize = 32;
/// Pixel bytes of one record (3 planes of 32×32).
pub const PIXELS: usize = 3 * SIDE * SIDE;
/// CIFAR-10 test file.
pub const CIFAR10_TEST: &str = "test_batch.bin";
/// CIFAR-10 class names file.
pub const CIFAR10_META: &str = "batches.meta.txt";
/// CIFAR-100 files.
pub const CIFAR100_TRAIN: &str = "train.bin";
pub const CIFAR100_TEST: &str = "test.bin";
pub const CIFAR100_FINE_NAMES: &str = "fine_label_names.txt";
pub const CIFAR100_COARSE_NAMES: &str = "coarse_label_names.txt";

/// MD5 of the extracted files of the official CIFAR-10 binary archive.
const CIFAR10_MD5: [(&str, &str); 6] = [
    ("data_batch_1.bin", "5dd7e06a14cb22eb9f671a540d1b7c25"),
    ("data_batch_2.bin", "5ea93a67294ea407fff1d09f752e9692"),
    ("data_batch_3.bin", "942cd6a4bcdd0dd3c604fbe906cb4421"),
    ("data_batch_4.bin", "ae636b3ba5c66a11e91e8cb52e771fcb"),
    ("data_batch_5.bin", "53f37980c15c3d472c316c40844f3f0d"),
    ("test_batch.bin", "803d5f7f4d78ea53de84dbe85f74fb6d"),
];

/// Which record layout and which labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CifarKind {
    /// 1 label byte (0..10) per record.
    Cifar10,
    /// Coarse (0..20) then fine (0..100) label byte per record; `coarse` picks which is used.
    Cifar100 { coarse: bool },
}

impl CifarKind {
    /// Bytes of one record.
    pub fn record_size(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1 + PIXELS,
            CifarKind::Cifar100 { .. } => 2 + PIXELS,
        }
    }

    /// How many classes the used label has.
    pub fn num_classes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 10,
            CifarKind::Cifar100 { coarse: false } => 100,
            CifarKind::Cifar100 { coarse: true } => 20,
        }
    }

    fn label(self, record: &[u8]) -> u8 {
        match self {
            CifarKind::Cifar10 | CifarKind::Cifar100 { coarse: true } => record[0],
            CifarKind::Cifar100 { coarse: false } => record[1],
        }
    }
}

/// A CIFAR directory read: both splits and the checksum of every file.
#[derive(Debug, Clone)]
pub struct CifarData {
    pub kind: CifarKind,
    pub train: Split,
    pub test: Split,
    pub checksums: Vec<FileChecksum>,
}

fn hint(kind: CifarKind) -> String {
    match kind {
        CifarKind::Cifar10 => format!(
            "a CIFAR-10 binary directory holds data_batch_1.bin ... data_batch_5.bin and \
             {CIFAR10_TEST}, each of 3073-byte records (label, then red, green, blue 32x32 planes)"
        ),
        CifarKind::Cifar100 { .. } => format!(
            "a CIFAR-100 binary directory holds {CIFAR100_TRAIN} and {CIFAR100_TEST}, each of \
             3074-byte records (coarse label, fine label, then red, green, blue 32x32 planes)"
        ),
    }
}

/// The CIFAR-10 training batches present in `dir`, in numeric order (`data_batch_2.bin`
/// before `data_batch_10.bin`).
pub fn cifar10_train_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(n) = name
            .strip_prefix("data_batch_")
            .and_then(|r| r.strip_suffix(".bin"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((n, entry.path()));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Turns the bytes of one CIFAR file into a split (HWC pixels, labels checked against the class
/// count). `path` is only used in error messages.
pub fn parse_records(
    bytes: &[u8],
    kind: CifarKind,
    class_names: &[String],
    path: &Path,
) -> Result<Split, DataError> {
    let rs = kind.record_size();
    let corrupt = |problem: String| DataError::Corrupt {
        path: path.to_path_buf(),
        problem,
        hint: hint(kind),
    };
    if bytes.is_empty() {
        return Err(corrupt("the file is empty".into()));
    }
    if !bytes.len().is_multiple_of(rs) {
        return Err(corrupt(format!(
            "{} bytes is not a whole number of {rs}-byte records ({} records and {} bytes left \
             over): the file is truncated or not in this layout",
            bytes.len(),
            bytes.len() / rs,
            bytes.len() % rs
        )));
    }
    let len = bytes.len() / rs;
    let classes = class_names.len();
    let mut images = vec![0u8; len * PIXELS];
    let mut labels = Vec::with_capacity(len);
    let plane = SIDE * SIDE;
    for (i, (record, out)) in bytes
        .chunks_exact(rs)
        .zip(images.chunks_exact_mut(PIXELS))
        .enumerate()
    {
        let label = kind.label(record);
        if label as usize >= classes {
            return Err(corrupt(format!(
                "record {i} has label {label}, but there are {classes} classes (0 to {})",
                classes - 1
            )));
        }
        labels.push(label);
        let px = &record[rs - PIXELS..];
        let (r, rest) = px.split_at(plane);
        let (g, b) = rest.split_at(plane);
        for (p, dst) in out.chunks_exact_mut(3).enumerate() {
            dst[0] = r[p];
            dst[1] = g[p];
            dst[2] = b[p];
        }
    }
    Ok(Split {
        images,
        labels,
        len,
        rows: SIDE,
        cols: SIDE,
        channels: 3,
        class_names: class_names.to_vec(),
    })
}

/// The class names of a names file (one a line, blank lines dropped), or the numbers 0..n when
/// the file is absent. A present file with the wrong count is an error.
fn class_names(
    dir: &Path,
    file: &str,
    n: usize,
    kind: CifarKind,
) -> Result<Vec<String>, DataError> {
    let path = dir.join(file);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((0..n).map(|l| l.to_string()).collect())
        }
        Err(e) => return Err(DataError::io(path, e)),
    };
    let names: Vec<String> = String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != n {
        return Err(DataError::Corrupt {
            path,
            problem: format!(
                "{} class names, but the labels have {n} classes",
                names.len()
            ),
            hint: hint(kind),
        });
    }
    Ok(names)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes` and, for the files whose MD5 is published, the comparison with it.
pub fn checksum(path: &Path, bytes: &[u8]) -> FileChecksum {
    let sha256 = hex(&Sha256::digest(bytes));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let status = match CIFAR10_MD5.iter().find(|(n, _)| *n == name) {
        Some((_, expected)) => {
            let actual = hex(&Md5::digest(bytes));
            if actual == *expected {
                ChecksumStatus::Match { algorithm: "MD5" }
            } else {
                ChecksumStatus::Mismatch {
                    algorithm: "MD5",
                    expected: expected.to_string(),
                    actual,
                }
            }
        }
        None => ChecksumStatus::Unknown,
    };
    FileChecksum {
        path: path.to_path_buf(),
        sha256,
        status,
    }
}

fn read(path: &Path, kind: CifarKind) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path: path.to_path_buf(),
                hint: hint(kind),
            }
        } else {
            DataError::io(path, e)
        }
    })
}

/// Reads a CIFAR binary directory. For CIFAR-10 every `data_batch_*.bin` present makes the
/// train split (at least one must exist) and `test_batch.bin` the test split.
pub fn load(dir: &Path, kind: CifarKind) -> Result<CifarData, DataError> {
    let (train_files, test_file, names) = match kind {
        CifarKind::Cifar10 => {
            let train = cifar10_train_files(dir)?;
            if train.is_empty() {
                return Err(DataError::Missing {
                    path: dir.join("data_batch_1.bin"),
                    hint: hint(kind),
                });
            }
            let names = class_names(dir, CIFAR10_META, 10, kind)?;
            (train, dir.join(CIFAR10_TEST), names)
        }
        CifarKind::Cifar100 { coarse } => {
            let (file, n) = if coarse {
                (CIFAR100_COARSE_NAMES, 20)
            } else {
                (CIFAR100_FINE_NAMES, 100)
            };
            let names = class_names(dir, file, n, kind)?;
            (
                vec![dir.join(CIFAR100_TRAIN)],
                dir.join(CIFAR100_TEST),
                names,
            )
        }
    };
    let mut checksums = Vec::new();
    let mut train: Option<Split> = None;
    for path in &train_files {
        let bytes = read(path, kind)?;
        checksums.push(checksum(path, &bytes));
        let part = parse_records(&bytes, kind, &names, path)?;
        match &mut train {
            None => train = Some(part),
            Some(t) => {
                t.images.extend_from_slice(&part.images);
                t.labels.extend_from_slice(&part.labels);
                t.len += part.len;
            }
        }
    }
    let bytes = read(&test_file, kind)?;
    checksums.push(checksum(&test_file, &bytes));
    let test = parse_records(&bytes, kind, &names, &test_file)?;
    Ok(CifarData {
        kind,
        train: train.expect("at least one training file"),
        test,
        checksums,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: u8, seed: u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend((0..PIXELS).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
        r
    }

    #[test]
    fn planes_become_interleaved_pixels() {
        let names: Vec<String> = (0..10).map(|l| l.to_string()).collect();
        let bytes = [record(3, 0), record(9, 5)].concat();
        let s = parse_records(&bytes, CifarKind::Cifar10, &names, Path::new("x.bin")).unwrap();
        assert_eq!((s.len, s.rows, s.cols, s.channels), (2, 32, 32, 3));
        assert_eq!(s.labels, vec![3, 9]);
        // Pixel (row 1, col 2) of image 1: R, G, B from the three planes.
        let p = 32 + 2;
        let img = s.image(1);
        let rec = &bytes[3073 + 1..2 * 3073];
        assert_eq!(
            &img[3 * p..3 * p + 3],
            &[rec[p], rec[1024 + p], rec[2048 + p]]
        );
        // And back to planes.
        assert_eq!(&s.images_chw()[3072..], rec);
    }

    #[test]
    fn cifar100_picks_fine_or_coarse_labels() {
        let mut rec = vec![7u8, 42];
        rec.extend(vec![1u8; PIXELS]);
        let fine: Vec<String> = (0..100).map(|l| l.to_string()).collect();
        let coarse: Vec<String> = (0..20).map(|l| l.to_string()).collect();
        let p = Path::new("train.bin");
        let f = parse_records(&rec, CifarKind::Cifar100 { coarse: false }, &fine, p).unwrap();
        let c = parse_records(&rec, CifarKind::Cifar100 { coarse: true }, &coarse, p).unwrap();
        assert_eq!((f.labels[0], c.labels[0]), (42, 7));
    }

    #[test]
    fn bad_sizes_and_labels_name_the_file() {
        let names: Vec<String> = (0..10).map(|l| l.to_string()).collect();
        let p = Path::new("/d/data_batch_1.bin");
        let mut bytes = record(1, 0);
        bytes.pop();
        let e = parse_records(&bytes, CifarKind::Cifar10, &names, p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/d/data_batch_1.bin") && e.contains("3073-byte records"),
            "{e}"
        );
        let e = parse_records(&record(10, 0), CifarKind::Cifar10, &names, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("record 0 has label 10"), "{e}");
        let e = parse_records(&[], CifarKind::Cifar10, &names, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn checksum_knows_only_the_published_cifar10_files() {
        let c = checksum(Path::new("x/data_batch_1.bin"), b"not cifar");
        assert!(
            matches!(c.status, ChecksumStatus::Mismatch { algorithm: "MD5", ref expected, .. }
                if expected == "5dd7e06a14cb22eb9f671a540d1b7c25"),
            "{c:?}"
        );
        assert_eq!(
            checksum(Path::new("train.bin"), b"").sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            checksum(Path::new("train.bin"), b"").status,
            ChecksumStatus::Unknown
        );
    }
}
