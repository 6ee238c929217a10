//! NumPy arrays in the layout of Keras' `load_data()`: `x_train`, `y_train`, `x_test`, `y_test`,
//! either as one `.npz` archive (`np.savez` or `np.savez_compressed`) or as four `.npy` files
//! in a folder.
//!
//! Images are uint8, `(N, H, W)` (grey) or `(N, H, W, C)` with C = 1 or 3, C-ordered; labels
//! are integers of any width and byte order, shape `(N,)` or `(N, 1)`. The class count is the
//! caller's, or the largest label plus one; every label must lie in `0..classes`.
//!
//! Each array is read by the guarded `.npy` reader of [`crate::npy`], which checks the header's
//! length and bracket nesting, the shape arithmetic and the data length before `ndarray-npy`
//! parses or allocates anything; the archive is read with `zip`, each entry's declared size
//! checked against its compressed size first, so no array is sized from bytes that are not there.

use crate::npy::{self, NpyError};
use crate::{DataError, Split};
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};

/// The four arrays, in the order train images, train labels, test images, test labels.
pub const ARRAYS: [&str; 4] = ["x_train", "y_train", "x_test", "y_test"];
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

/// Reads one `.npy` stream of `available` bytes in all (the file or entry size) through the
/// guarded reader in [`crate::npy`], as uint8 images or as integer labels widened to i64.
fn read_npy<R: Read>(
    mut r: R,
    available: u64,
    path: &Path,
    want: Want,
) -> Result<Array, DataError> {
    let bad = |e: NpyError| corrupt(path, e.to_string());
    let header = npy::read_header(&mut r, available).map_err(bad)?;
    let Some(descr) = header.descr_str().map(str::to_string) else {
        return Err(corrupt(
            path,
            format!(
                "structured dtype {} is not an array of numbers",
                header.descr
            ),
        ));
    };
    // C and Fortran order lay out the same bytes when at most one dimension exceeds 1.
    if header.fortran_order && header.shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(corrupt(
            path,
            "Fortran-ordered array; save it with np.ascontiguousarray(a) first",
        ));
    }
    if header.data_len > MAX_ARRAY_BYTES {
        return Err(corrupt(
            path,
            format!(
                "{} bytes of array data, more than the {MAX_ARRAY_BYTES} this reader takes",
                header.data_len
            ),
        ));
    }
    let values = match want {
        Want::Images if matches!(descr.as_str(), "|u1" | "u1" | "B") => {
            Values::U8(npy::read_data::<u8, R>(r, &header).map_err(bad)?)
        }
        Want::Labels => match read_labels(r, &header, &descr, path)? {
            Some(v) => Values::Int(v),
            None => {
                return Err(corrupt(
                    path,
                    format!("dtype {descr}, but integer labels are needed"),
                ))
            }
        },
        Want::Images => {
            return Err(corrupt(
                path,
                format!("dtype {descr}, but uint8 images are needed"),
            ))
        }
    };
    Ok(Array {
        shape: header.shape,
        values,
    })
}

/// Reads integer labels of any width and byte order widened to i64, or `None` if `descr` is not
/// an integer dtype.
fn read_labels<R: Read>(
    r: R,
    header: &npy::NpyHeader,
    descr: &str,
    path: &Path,
) -> Result<Option<Vec<i64>>, DataError> {
    fn wide<T, R>(r: R, header: &npy::NpyHeader, path: &Path) -> Result<Vec<i64>, DataError>
    where
        T: npy::ReadableElement + TryInto<i64> + Copy + std::fmt::Display,
        R: Read,
    {
        let v = npy::read_data::<T, R>(r, header).map_err(|e| corrupt(path, e.to_string()))?;
        v.iter()
            .map(|&x| {
                x.try_into()
                    .map_err(|_| corrupt(path, format!("label {x} is out of range")))
            })
            .collect()
    }
    // The descriptors `ndarray-npy` reads for each integer type.
    Ok(Some(match descr {
        "|i1" | "i1" | "b" => wide::<i8, R>(r, header, path)?,
        "|u1" | "u1" | "B" => wide::<u8, R>(r, header, path)?,
        "<i2" | ">i2" => wide::<i16, R>(r, header, path)?,
        "<u2" | ">u2" => wide::<u16, R>(r, header, path)?,
        "<i4" | ">i4" => wide::<i32, R>(r, header, path)?,
        "<u4" | ">u4" => wide::<u32, R>(r, header, path)?,
        "<i8" | ">i8" => wide::<i64, R>(r, header, path)?,
        "<u8" | ">u8" => wide::<u64, R>(r, header, path)?,
        _ => return Ok(None),
    }))
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
    // A label beyond what a byte holds names its file, like any other bad label.
    for (l, p) in [(&ltr, &paths[1]), (&lte, &paths[3])] {
        if let Some(i) = l.iter().position(|&v| v as usize >= MAX_CLASSES) {
            return Err(corrupt(
                p,
                format!(
                    "label {} at index {i}; labels must be 0 to {} (at most {MAX_CLASSES} classes)",
                    l[i],
                    MAX_CLASSES - 1
                ),
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
    npy::npy_bytes(descr, shape, data)
}

/// The bytes of a `.npz` archive of `(name, .npy bytes)` entries, stored uncompressed as
/// `numpy.savez` writes them (each entry is `name.npy`).
pub fn npz_bytes(arrays: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in arrays {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(bytes.len() as u64 >= u32::MAX as u64);
        zip.start_file(format!("{name}.npy"), opts)
            .and_then(|_| zip.write_all(bytes).map_err(Into::into))
            .expect("writing to memory succeeds");
    }
    zip.finish()
        .expect("writing to memory succeeds")
        .into_inner()
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
        // A shape whose element count overflows is refused before anything is sized from it.
        let e = read(&npy_bytes("|u1", &[1 << 40, 1 << 40], &[]), Want::Images).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
        // A large but representable shape is checked against the bytes present.
        let e = read(&npy_bytes("|u1", &[1 << 30, 4], &[0; 16]), Want::Images).unwrap_err();
        assert!(e.to_string().contains("only 16 follow"), "{e}");
        // A version-2 header claiming 4 GiB of text.
        let mut b = b"\x93NUMPY\x02\x00".to_vec();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = read(&b, Want::Images).unwrap_err();
        assert!(e.to_string().contains("truncated .npy header"), "{e}");
        let e = read(b"\x93NUMPY\x01", Want::Images).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        // A dimension that is not a whole number, or one no usize holds.
        for dim in ["2.5", "99999999999999999999999"] {
            let mut b = npy_bytes("|u1", &[2], &[1, 2]);
            let at = b.windows(3).position(|w| w == b"(2,").unwrap();
            b.splice(at + 1..at + 2, dim.bytes());
            let header_len = (b.len() - 12) as u16;
            b[8..10].copy_from_slice(&header_len.to_le_bytes());
            let e = read(&b, Want::Images).unwrap_err();
            assert!(e.to_string().contains("illegal value for key shape"), "{e}");
        }
    }

    /// An archive entry whose header nests brackets deeply is refused by counting them, before
    /// the exponential-time header parser could see it.
    #[test]
    fn npz_entry_with_a_deeply_nested_header_is_refused() {
        use std::io::Write;
        let mut deep = npy_bytes("|u1", &[1, 1, 1], &[0]);
        let at = deep.windows(9).position(|w| w == b"(1, 1, 1)").unwrap();
        let nested = format!("{}1{}", "(".repeat(40), ",)".repeat(40));
        deep.splice(at..at + 9, nested.bytes());
        let header_len = (deep.len() - 11) as u16;
        deep[8..10].copy_from_slice(&header_len.to_le_bytes());
        let labels = npy_bytes("<i8", &[1], &0i64.to_le_bytes());
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, b) in [
            ("x_train", &deep),
            ("y_train", &labels),
            ("x_test", &deep),
            ("y_test", &labels),
        ] {
            zip.start_file(
                format!("{name}.npy"),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            zip.write_all(b).unwrap();
        }
        let bytes = zip.finish().unwrap().into_inner();
        let e = read_npz_bytes(&bytes, Path::new("deep.npz"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("deep.npz:x_train.npy: .npy header nests brackets 41 deep"),
            "{e}"
        );
    }
}
