//! The IDX reader against hand-made files: round trips (plain and gzip) and every kind of
//! corruption, each of which must be a clear error naming the file, never a panic.

mod common;

use common::{gzip, idx_bytes, write};
use intq_data::idx::{encode_idx, read_idx, write_idx};
use intq_data::DataError;
use proptest::prelude::*;
use std::path::Path;

const HINT: &str = "HINT-TEXT";

fn err_of(path: &Path) -> String {
    match read_idx(path, HINT) {
        Ok(idx) => panic!("{} parsed as {:?}", path.display(), idx.dims),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "error does not name the file: {msg}"
            );
            assert!(msg.contains(HINT), "error lacks the hint: {msg}");
            msg
        }
    }
}

/// Writes `bytes` as a plain and as a gzipped file; both must fail with a message containing
/// `needle`.
fn both_fail(dir: &Path, name: &str, bytes: &[u8], needle: &str) {
    let plain = write(&dir.join(name), bytes);
    let gz = write(&dir.join(format!("{name}.gz")), &gzip(bytes));
    for p in [plain, gz] {
        let msg = err_of(&p);
        assert!(
            msg.contains(needle),
            "{}: expected '{needle}' in: {msg}",
            p.display()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn round_trip_plain_and_gz(
        dims in prop::collection::vec(0usize..6, 1..=4),
        seed in any::<u8>(),
        gz in any::<bool>(),
    ) {
        let n: usize = dims.iter().product();
        let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(seed).wrapping_add(i as u8 >> 3)).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(if gz { "x-ubyte.gz" } else { "x-ubyte" });
        write_idx(&path, &dims, &data).unwrap();
        let back = read_idx(&path, HINT).unwrap();
        prop_assert_eq!(&back.dims, &dims);
        prop_assert_eq!(&back.data, &data);
        // The encoder writes the format byte for byte as the hand-written reference does.
        let d32: Vec<u32> = dims.iter().map(|&d| d as u32).collect();
        prop_assert_eq!(encode_idx(&dims, &data).unwrap(), idx_bytes(&d32, &data));
        if !gz {
            prop_assert_eq!(std::fs::read(&path).unwrap(), idx_bytes(&d32, &data));
        }
    }
}

#[test]
fn reads_hand_made_file_plain_and_gz() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..24).collect();
    let bytes = idx_bytes(&[2, 3, 4], &data);
    for p in [
        write(&dir.path().join("a"), &bytes),
        write(&dir.path().join("a.gz"), &gzip(&bytes)),
    ] {
        let idx = read_idx(&p, HINT).unwrap();
        assert_eq!(idx.dims, vec![2, 3, 4]);
        assert_eq!(idx.data, data);
    }
}

#[test]
fn every_truncation_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = idx_bytes(&[3, 2, 2], &[9; 12]);
    for cut in 0..bytes.len() {
        let msg_needle = "truncated";
        both_fail(dir.path(), &format!("cut{cut}"), &bytes[..cut], msg_needle);
    }
}

#[test]
fn truncated_header_and_data_say_so() {
    let dir = tempfile::tempdir().unwrap();
    // Magic complete, one of three dims missing.
    let bytes = idx_bytes(&[3, 2, 2], &[1; 12]);
    both_fail(dir.path(), "hdr", &bytes[..10], "header");
    both_fail(dir.path(), "data", &bytes[..bytes.len() - 1], "truncated");
}

#[test]
fn trailing_data_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = idx_bytes(&[2], &[1, 2]);
    bytes.push(0);
    both_fail(dir.path(), "trail", &bytes, "trailing data");
}

#[test]
fn bad_magic_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = idx_bytes(&[2], &[1, 2]);
    bytes[1] = 0x01;
    both_fail(dir.path(), "magic", &bytes, "bad magic");
    // A gzip file read as plain (no .gz suffix) is caught by the magic check too.
    let gz = gzip(&idx_bytes(&[2], &[1, 2]));
    let p = write(&dir.path().join("gz-without-suffix"), &gz);
    assert!(err_of(&p).contains("bad magic"));
}

#[test]
fn wrong_dtype_and_ndim_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut f32_file = idx_bytes(&[1], &[0, 0, 128, 63]);
    f32_file[2] = 0x0D;
    both_fail(dir.path(), "f32", &f32_file, "dtype byte 0x0d");
    let mut zero_dims = idx_bytes(&[], &[]);
    zero_dims[3] = 0;
    both_fail(dir.path(), "nd0", &zero_dims, "0 dimensions");
    both_fail(
        dir.path(),
        "nd5",
        &idx_bytes(&[1, 1, 1, 1, 1], &[7]),
        "5 dimensions",
    );
}

#[test]
fn dims_product_overflow_is_an_error_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // 2^128 bytes: overflows u64.
    both_fail(
        dir.path(),
        "ovf",
        &idx_bytes(&[u32::MAX; 4], &[]),
        "declare more than",
    );
    // 2^48 bytes: fits u64 but is far beyond any data set.
    both_fail(
        dir.path(),
        "huge",
        &idx_bytes(&[65536, 65536, 65536], &[1, 2, 3]),
        "declare more than",
    );
    // 1 GiB declared in a tiny file: refused from the file length (plain) or the deflate
    // ratio (gzip) rather than by allocating and failing to fill it.
    let big = idx_bytes(&[1024, 1024, 1024], &[1, 2, 3]);
    let plain = write(&dir.path().join("big"), &big);
    let msg = err_of(&plain);
    assert!(msg.contains("need a 1073741840-byte file"), "{msg}");
    let gz = write(&dir.path().join("big.gz"), &gzip(&big));
    let msg = err_of(&gz);
    assert!(msg.contains("gzip file can hold"), "{msg}");
}

#[test]
fn corrupt_gzip_stream_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut gz = gzip(&idx_bytes(&[64], &[5; 64]));
    let mid = gz.len() / 2;
    gz[mid] ^= 0xFF;
    gz.truncate(gz.len() - 4);
    let p = write(&dir.path().join("bad.gz"), &gz);
    err_of(&p);
    let p = write(&dir.path().join("notgz.gz"), b"this is not gzip at all");
    err_of(&p);
}

#[test]
fn missing_file_is_a_missing_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope");
    match read_idx(&p, HINT) {
        Err(DataError::Missing { path, hint }) => {
            assert_eq!(path, p);
            assert_eq!(hint, HINT);
        }
        other => panic!("expected Missing, got {other:?}"),
    }
}

#[test]
fn writer_refuses_inconsistent_dims_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w");
    assert!(write_idx(&p, &[2, 2], &[1, 2, 3]).is_err());
    assert!(write_idx(&p, &[], &[]).is_err());
    assert!(write_idx(&p, &[1 << 33], &[]).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Arbitrary bytes, as plain and gzipped files: an error or a consistent result, never a
    /// panic.
    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..64), fix in any::<bool>()) {
        if fix && bytes.len() >= 4 {
            // Valid magic so the fuzzing reaches the dims and data checks.
            bytes[0] = 0; bytes[1] = 0; bytes[2] = 8; bytes[3] %= 5;
        }
        let dir = tempfile::tempdir().unwrap();
        for p in [write(&dir.path().join("f"), &bytes), write(&dir.path().join("f.gz"), &gzip(&bytes))] {
            if let Ok(idx) = read_idx(&p, HINT) {
                prop_assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>());
                prop_assert_eq!(4 + 4 * idx.dims.len() + idx.data.len(), bytes.len());
            }
        }
    }
}
