//! NumPy arrays in the layout of Keras' `load_data()`: `x_train`, `y_train`, `x_test`, `y_test`,
//! either as one `.npz` archive (`np.savez` or `np.savez_compressed`) or as four `.npy` files
//! in a folder.
//!
//! Images are uint8, `(N, H, W)` (grey) or `(N, H, W, C)` with C = 1 or 3, C-ordered; labels
//! are integers of any width and byte order, shape `(N,)` or `(N, 1)`. The class count is the
//! caller's, or the largest label plus one; every label must lie in `0..classes`.
//!
//! Headers are parsed with `npyz`; the archive is read with `zip`. Both are guarded against
//! hostile files before they run: the header length is capped, every integer in the header must
//! be a plain decimal whose product stays far below `u64::MAX` (so no shape arithmetic can
//! overflow), and the bytes an array declares are checked against what its file or archive
//! entry can hold before anything of that size is allocated.

use crate::{DataError, Split};
use npyz::{DType, Endianness, NpyHeader, Order, TypeChar};
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};

/// The four arrays, in the order train images, train labels, test images, test labels.
pub const ARRAYS: [&str; 4] = ["x_train", "y_train", "x_test", "y_test"];
/// Longest `.npy` header accepted; numpy writes under 200 bytes and refuses 10 kB by default.
pub const MAX_HEADER: usize = 64 << 10;
/// Largest array accepted (16 GiB), far above any data set this crate is for.
pub const MAX_ARRAY_BYTES: u64 = 16 << 30;
/// Deflate expands at most about 1032:1, so an entry declaring more than this multiple of its
/// compressed size is lying.
const MAX_DEFLATE_RATIO: u64 = 1100;
/// Most classes a label fits (labels are bytes).
pub const MAX_CLASSES: usize = 256;

const HINT: &str = "expected the Keras load_data() layout: x_train/x_test uint8 of shape (N, H, W) \
                    or (N, H, W, C) with C = 1 or 3, y_train/y_test integers of shape (N,) or (N, 1)";

/// The arrays of one data set read and checked.
#[derive(Debug, Clone)]
pub struct NumpyData {
    pub train: Split,
    pub test: Split,
}

/// An array's values: its bytes (uint8 images) or its values widened to i64 (labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Values {
    U8(Vec<u8>),
    Int(Vec<i64>),
}

/// One array read from a `.npy` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Values,
}

/// What an array is read as: uint8 pixels or integer labels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Images,
    Labels,
}

fn corrupt(path: &Path, problem: impl Into<String>) -> DataError {
    DataError::Corrupt {
        path: path.to_path_buf(),
        problem: problem.into(),
        hint: HINT.to_string(),
    }
}

/// `read_exact` whose early end reads as a truncated array.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8], path: &Path, what: &str) -> Result<(), DataError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            corrupt(
                path,
                format!("truncated: the {what} needs {} bytes", buf.len()),
            )
        } else {
            corrupt(path, format!("reading the {what}: {e}"))
        }
    })
}

/// Every integer written in the header must be a plain decimal, and their product (zeros left
/// out) must stay below 2^62: then no shape or size that `npyz` derives from them can overflow.
fn check_header_numbers(text: &[u8]) -> Result<(), String> {
    let mut product: u128 = 1;
    for token in text.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_')) {
        if !token.first().is_some_and(u8::is_ascii_digit) {
            continue;
        }
        let shown = String::from_utf8_lossy(token);
        if token.len() > 20 || !token.iter().all(u8::is_ascii_digit) {
            return Err(format!("unsupported number {shown:?} in the header"));
        }
        let n: u128 = shown.parse().map_err(|_| format!("bad number {shown:?}"))?;
        if n != 0 {
            product = product.saturating_mul(n);
            if product >= 1 << 62 {
                return Err("the header declares an impossibly large array".into());
            }
        }
    }
    Ok(())
}

/// Reads one `.npy` stream of which at most `available` bytes exist (the file or entry size).
fn read_npy<R: Read>(
    mut r: R,
    available: u64,
    path: &Path,
    want: Want,
) -> Result<Array, DataError> {
    let mut pre = [0u8; 10];
    read_full(&mut r, &mut pre[..8], path, "magic and version")?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err(corrupt(path, "not a .npy array (no \\x93NUMPY magic)"));
    }
    let (len_bytes, header_len) = match pre[6] {
        1 => {
            read_full(&mut r, &mut pre[8..10], path, "header length")?;
            (2, u16::from_le_bytes([pre[8], pre[9]]) as usize)
        }
        2 | 3 => {
            let mut l = [0u8; 4];
            read_full(&mut r, &mut l, path, "header length")?;
            (4, u32::from_le_bytes(l) as usize)
        }
        v => {
            return Err(corrupt(
                path,
                format!(".npy format version {v} (1 to 3 supported)"),
            ))
        }
    };
    let prefix = 8 + len_bytes;
    if header_len > MAX_HEADER || (prefix + header_len) as u64 > available {
        return Err(corrupt(
            path,
            format!(
                "header of {header_len} bytes is longer than the {} bytes that follow it (or \
                 than {MAX_HEADER})",
                available.saturating_sub(prefix as u64)
            ),
        ));
    }
    let mut head = Vec::with_capacity(prefix + header_len);
    head.extend_from_slice(&pre[..8]);
    match len_bytes {
        2 => head.extend_from_slice(&pre[8..10]),
        _ => head.extend_from_slice(&(header_len as u32).to_le_bytes()),
    }
    head.resize(prefix + header_len, 0);
    read_full(&mut r, &mut head[prefix..], path, "header")?;
    check_header_numbers(&head[prefix..]).map_err(|p| corrupt(path, p))?;
    let header =
        NpyHeader::from_reader(&head[..]).map_err(|e| corrupt(path, format!("bad header: {e}")))?;
    let descr = header.dtype().descr().trim_matches('\'').to_string();
    let DType::Plain(ts) = header.dtype() else {
        return Err(corrupt(
            path,
            format!("structured dtype {descr} is not an array of numbers"),
        ));
    };
    if header.order() == Order::Fortran && header.shape().iter().filter(|&&d| d > 1).count() > 1 {
        return Err(corrupt(
            path,
            "Fortran-ordered array; save it with np.ascontiguousarray(a) first",
        ));
    }
    let shape: Vec<usize> = header.shape().iter().map(|&d| d as usize).collect();
    let count: u64 = header.shape().iter().product();
    let size = ts.size_field();
    let int =
        matches!(ts.type_char(), TypeChar::Int | TypeChar::Uint) && matches!(size, 1 | 2 | 4 | 8);
    let ok = match want {
        Want::Images => ts.type_char() == TypeChar::Uint && size == 1,
        Want::Labels => int,
    };
    if !ok {
        let need = match want {
            Want::Images => "uint8 images",
            Want::Labels => "integer labels",
        };
        return Err(corrupt(
            path,
            format!("dtype {descr}, but {need} are needed"),
        ));
    }
    let bytes = count.saturating_mul(size);
    let body = available - (prefix + header_len) as u64;
    if bytes > body || bytes > MAX_ARRAY_BYTES {
        return Err(corrupt(
            path,
            format!(
                "shape {shape:?} of {descr} needs {bytes} bytes but only {body} follow the header"
            ),
        ));
    }
    let mut data = vec![0u8; bytes as usize];
    read_full(&mut r, &mut data, path, "array data")?;
    let values = if want == Want::Images {
        Values::U8(data)
    } else {
        let signed = ts.type_char() == TypeChar::Int;
        let big = ts.endianness() == Endianness::Big;
        let mut out = Vec::with_capacity(count as usize);
        for c in data.chunks_exact(size as usize) {
            let mut b = [0u8; 8];
            if big {
                for (i, &v) in c.iter().rev().enumerate() {
                    b[i] = v;
                }
            } else {
                b[..c.len()].copy_from_slice(c);
            }
            // Sign-extend a negative signed value.
            if signed && c.len() < 8 && b[c.len() - 1] & 0x80 != 0 {
                b[c.len()..].fill(0xff);
            }
            let v = u64::from_le_bytes(b);
            if !signed && v > i64::MAX as u64 {
                return Err(corrupt(path, format!("label {v} is out of range")));
            }
            out.push(v as i64);
        }
        Values::Int(out)
    };
    Ok(Array { shape, values })
}

/// Reads one `.npy` file held in memory: uint8 images, or (with `labels`) integer labels of any
/// width and byte order widened to i64. Shapes are not checked against a layout here.
pub fn read_npy_bytes(bytes: &[u8], path: &Path, labels: bool) -> Result<Array, DataError> {
    let want = if labels { Want::Labels } else { Want::Images };
    read_npy(bytes, bytes.len() as u64, path, want)
}

/// Checks the four arrays against each other and makes the two splits.
fn assemble(
    arrays: [Array; 4],
    paths: [PathBuf; 4],
    num_classes: Option<usize>,
) -> Result<NumpyData, DataError> {
    let [xtr, ytr, xte, yte] = arrays;
    let image_dims = |a: &Array, p: &Path| -> Result<[usize; 4], DataError> {
        match a.shape[..] {
            [n, h, w] => Ok([n, h, w, 1]),
            [n, h, w, c] if c == 1 || c == 3 => Ok([n, h, w, c]),
            _ => Err(corrupt(
                p,
                format!(
                    "images of shape {:?}; (N, H, W) or (N, H, W, C) with C = 1 or 3 needed",
                    a.shape
                ),
            )),
        }
    };
    let label_count = |a: &Array, p: &Path| -> Result<usize, DataError> {
        match a.shape[..] {
            [n] | [n, 1] => Ok(n),
            _ => Err(corrupt(
                p,
                format!("labels of shape {:?}; (N,) or (N, 1) needed", a.shape),
            )),
        }
    };
    let dtr = image_dims(&xtr, &paths[0])?;
    let dte = image_dims(&xte, &paths[2])?;
    if dtr[1..] != dte[1..] {
        return Err(corrupt(
            &paths[2],
            format!(
                "test images are {}x{}x{} (HxWxC) but train images are {}x{}x{}",
                dte[1], dte[2], dte[3], dtr[1], dtr[2], dtr[3]
            ),
        ));
    }
    if dtr[1] == 0 || dtr[2] == 0 {
        return Err(corrupt(&paths[0], "images of zero height or width"));
    }
    for (d, y, yp, xp) in [
        (dtr, &ytr, &paths[1], &paths[0]),
        (dte, &yte, &paths[3], &paths[2]),
    ] {
        let n = label_count(y, yp)?;
        if n != d[0] {
            return Err(corrupt(
                yp,
                format!("{n} labels but {} holds {} images", xp.display(), d[0]),
            ));
        }
    }
    if dtr[0] == 0 {
        return Err(corrupt(&paths[0], "no training images"));
    }
    let ints = |a: &Array| match &a.values {
        Values::Int(v) => v.clone(),
        Values::U8(v) => v.iter().map(|&x| x as i64).collect(),
    };
    let (ltr, lte) = (ints(&ytr), ints(&yte));
    for (l, p) in [(&ltr, &paths[1]), (&lte, &paths[3])] {
        if let Some(i) = l.iter().position(|&v| v < 0) {
            return Err(corrupt(
                p,
                format!("label {} at index {i} is negative", l[i]),
            ));
        }
    }
    let top = ltr.iter().chain(&lte).copied().max().unwrap_or(0) as usize;
    let classes = num_classes.unwrap_or(top + 1);
    if classes == 0 || classes > MAX_CLASSES {
        return Err(DataError::InvalidOption(format!(
            "{classes} classes; 1 to {MAX_CLASSES} are supported"
        )));
    }
    for (l, p) in [(&ltr, &paths[1]), (&lte, &paths[3])] {
        if let Some(i) = l.iter().position(|&v| v as usize >= classes) {
            return Err(corrupt(
                p,
                format!(
                    "label {} at index {i}; labels must be 0 to {}",
                    l[i],
                    classes - 1
                ),
            ));
        }
    }
    let names: Vec<String> = (0..classes).map(|c| c.to_string()).collect();
    let split = |x: Array, l: Vec<i64>, d: [usize; 4]| Split {
        images: match x.values {
            Values::U8(v) => v,
            Values::Int(_) => unreachable!("images are read as uint8"),
        },
        labels: l.into_iter().map(|v| v as u8).collect(),
        len: d[0],
        rows: d[1],
        cols: d[2],
        channels: d[3],
        class_names: names.clone(),
    };
    Ok(NumpyData {
        train: split(xtr, ltr, dtr),
        test: split(xte, lte, dte),
    })
}

fn want(i: usize) -> Want {
    if i.is_multiple_of(2) {
        Want::Images
    } else {
        Want::Labels
    }
}

/// Reads an `.npz` archive from any seekable reader; `path` names it in error messages.
pub fn read_npz<R: Read + Seek>(
    reader: R,
    path: &Path,
    num_classes: Option<usize>,
) -> Result<NumpyData, DataError> {
    let mut zip = zip::ZipArchive::new(reader)
        .map_err(|e| corrupt(path, format!("not a readable .npz (zip) archive: {e}")))?;
    let mut arrays = Vec::with_capacity(4);
    let mut paths = Vec::with_capacity(4);
    for (i, name) in ARRAYS.iter().enumerate() {
        let entry_name = format!("{name}.npy");
        let shown = PathBuf::from(format!("{}:{entry_name}", path.display()));
        if zip.index_for_name(&entry_name).is_none() {
            let have: Vec<&str> = zip.file_names().take(20).collect();
            return Err(corrupt(
                path,
                format!("no array {name} in the archive (it holds {have:?})"),
            ));
        }
        let entry = zip
            .by_name(&entry_name)
            .map_err(|e| corrupt(&shown, format!("reading the entry: {e}")))?;
        let declared = entry.size();
        let bound = match entry.compression() {
            zip::CompressionMethod::Stored => entry.compressed_size(),
            _ => entry.compressed_size().saturating_mul(MAX_DEFLATE_RATIO),
        };
        if declared > bound {
            return Err(corrupt(
                &shown,
                format!(
                    "the entry declares {declared} bytes from {} compressed bytes",
                    entry.compressed_size()
                ),
            ));
        }
        arrays.push(read_npy(entry, declared, &shown, want(i))?);
        paths.push(shown);
    }
    let arrays: [Array; 4] = arrays.try_into().expect("four arrays");
    let paths: [PathBuf; 4] = paths.try_into().expect("four paths");
    assemble(arrays, paths, num_classes)
}

/// Reads an `.npz` archive held in memory.
pub fn read_npz_bytes(
    bytes: &[u8],
    path: &Path,
    num_classes: Option<usize>,
) -> Result<NumpyData, DataError> {
    read_npz(Cursor::new(bytes), path, num_classes)
}

/// Reads an `.npz` file.
pub fn load_npz(path: &Path, num_classes: Option<usize>) -> Result<NumpyData, DataError> {
    let f = File::open(path).map_err(|e| DataError::io(path, e))?;
    read_npz(BufReader::new(f), path, num_classes)
}

/// The four `.npy` files of a folder, in the order of [`ARRAYS`].
pub fn npy_files(dir: &Path) -> [PathBuf; 4] {
    ARRAYS.map(|a| dir.join(format!("{a}.npy")))
}

/// Reads the four `.npy` files of a folder.
pub fn load_npy_dir(dir: &Path, num_classes: Option<usize>) -> Result<NumpyData, DataError> {
    let paths = npy_files(dir);
    let mut arrays = Vec::with_capacity(4);
    for (i, p) in paths.iter().enumerate() {
        let f = File::open(p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DataError::Missing {
                    path: p.clone(),
                    hint: HINT.into(),
                }
            } else {
                DataError::io(p, e)
            }
        })?;
        let len = f.metadata().map_err(|e| DataError::io(p, e))?.len();
        arrays.push(read_npy(BufReader::new(f), len, p, want(i))?);
    }
    let arrays: [Array; 4] = arrays.try_into().expect("four arrays");
    assemble(arrays, paths, num_classes)
}

/// The bytes of a `.npy` (format 1.0) file holding `data` with `shape` and dtype `descr`
/// (e.g. `|u1`, `<i8`); the data must already be in that dtype's bytes. For writing test data
/// and for tools that export a split.
pub fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // numpy pads the header with spaces so the data starts on a 64-byte boundary.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], want: Want) -> Result<Array, DataError> {
        read_npy(bytes, bytes.len() as u64, Path::new("a.npy"), want)
    }

    #[test]
    fn reads_uint8_and_every_integer_label_dtype() {
        let a = read(&npy_bytes("|u1", &[2, 2, 3], &[7; 12]), Want::Images).unwrap();
        assert_eq!(a.shape, vec![2, 2, 3]);
        assert_eq!(a.values, Values::U8(vec![7; 12]));
        let cases: [(&str, Vec<u8>); 5] = [
            ("|i1", vec![0xff, 3]),
            ("<i2", vec![0xff, 0xff, 3, 0]),
            (">i4", vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 3]),
            (
                "<u8",
                [1u64.wrapping_neg() >> 1, 3]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            (">u2", vec![0, 9, 0, 3]),
        ];
        let want = [-1, -1, -1, i64::MAX, 9];
        for ((descr, data), first) in cases.iter().zip(want) {
            let a = read(&npy_bytes(descr, &[2], data), Want::Labels).unwrap();
            assert_eq!(a.values, Values::Int(vec![first, 3]), "{descr}");
        }
    }

    #[test]
    fn refuses_wrong_dtypes_and_hostile_headers() {
        let e = read(&npy_bytes("<f4", &[1], &[0; 4]), Want::Labels).unwrap_err();
        assert!(e.to_string().contains("dtype <f4"), "{e}");
        let e = read(&npy_bytes("<i4", &[1], &[0; 4]), Want::Images).unwrap_err();
        assert!(e.to_string().contains("uint8 images are needed"), "{e}");
        // A shape whose product overflows u64 is refused before npyz computes it.
        let e = read(&npy_bytes("|u1", &[1 << 40, 1 << 40], &[]), Want::Images).unwrap_err();
        assert!(e.to_string().contains("impossibly large"), "{e}");
        // A large but representable shape is checked against the bytes present.
        let e = read(&npy_bytes("|u1", &[1 << 30, 4], &[0; 16]), Want::Images).unwrap_err();
        assert!(e.to_string().contains("only 16 follow"), "{e}");
        // A version-2 header claiming 4 GiB of text.
        let mut b = b"\x93NUMPY\x02\x00".to_vec();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = read(&b, Want::Images).unwrap_err();
        assert!(e.to_string().contains("header of 4294967295 bytes"), "{e}");
        let e = read(b"\x93NUMPY\x01", Want::Images).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let mut hex = npy_bytes("|u1", &[2], &[1, 2]);
        let at = hex.windows(3).position(|w| w == b"(2,").unwrap();
        hex[at + 1] = b'0';
        hex.splice(at + 2..at + 2, *b"x2");
        let e = read(&hex, Want::Images).unwrap_err();
        assert!(e.to_string().contains("unsupported number"), "{e}");
    }
}
