//! Reading and writing NumPy `.npy` arrays (the CLI's interchange format for tensors) through
//! the guarded `.npy` reader of `intq_data::npy`, which keeps a hostile file from stalling the
//! header parser or making it allocate what the file does not hold.

use anyhow::{bail, Context, Result};
use intq_data::npy;
use intq_engine::{DType, TensorData};
use std::io::Write;
use std::path::Path;

/// An array read from or written to a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// The dtype of a type descriptor; big-endian and byte-order-less multi-byte descriptors are
/// refused, as NumPy writes neither on the machines intq runs on.
fn parse_descr(d: &str) -> Option<DType> {
    match d {
        "|u1" | "u1" | "B" => Some(DType::U8),
        "|i1" | "i1" | "b" => Some(DType::I8),
        "<i4" => Some(DType::I32),
        "<f4" => Some(DType::F32),
        _ => None,
    }
}

/// Parses `.npy` bytes; `what` names the source in errors.
pub fn parse(bytes: &[u8], what: &str) -> Result<Array> {
    let mut payload = bytes;
    let header = npy::read_header(&mut payload, bytes.len() as u64)
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let descr = &header.descr;
    let dtype = header.descr_str().and_then(parse_descr).with_context(|| {
        format!("{what}: unsupported dtype {descr} (intq reads uint8, int8, int32 and float32)")
    })?;
    if header.fortran_order {
        bail!("{what}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
    }
    let data = match dtype {
        DType::U8 => npy::read_data(payload, &header).map(TensorData::U8),
        DType::I8 => npy::read_data(payload, &header).map(TensorData::I8),
        DType::I32 => npy::read_data(payload, &header).map(TensorData::I32),
        DType::F32 => npy::read_data(payload, &header).map(TensorData::F32),
    }
    .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    Ok(Array {
        shape: header.shape,
        data,
    })
}

/// Serializes an array as a `.npy` file (C order, the header padded so the data start on a
/// 64-byte boundary); the shape must hold exactly the array's elements.
pub fn to_bytes(array: &Array) -> Result<Vec<u8>> {
    let shape = &array.shape;
    match &array.data {
        TensorData::U8(v) => npy::to_bytes(shape, v),
        TensorData::I8(v) => npy::to_bytes(shape, v),
        TensorData::I32(v) => npy::to_bytes(shape, v),
        TensorData::F32(v) => npy::to_bytes(shape, v),
    }
    .map_err(anyhow::Error::from)
}

/// Reads a `.npy` file; errors name it.
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes, &path.display().to_string())
}

/// Writes atomically: a temporary file beside `path`, then a rename, so a failed write never
/// leaves a half-written array under the final name.
pub fn write(path: &Path, array: &Array) -> Result<()> {
    let bytes = to_bytes(array).with_context(|| format!("cannot write {}", path.display()))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_dtype() {
        for (shape, data) in [
            (vec![2, 3], TensorData::U8(vec![0, 1, 2, 253, 254, 255])),
            (vec![4], TensorData::I8(vec![-128, -1, 0, 127])),
            (vec![1, 1, 2], TensorData::I32(vec![i32::MIN, i32::MAX])),
            (vec![], TensorData::F32(vec![1.5])),
            (vec![0, 3], TensorData::F32(vec![])),
        ] {
            let a = Array { shape, data };
            let bytes = to_bytes(&a).unwrap();
            assert_eq!(
                (bytes.len() - a.data.len() * a.data.dtype().size_bytes()) % 64,
                0
            );
            assert_eq!(parse(&bytes, "mem").unwrap(), a);
        }
        let wrong = Array {
            shape: vec![3],
            data: TensorData::U8(vec![1, 2]),
        };
        assert!(to_bytes(&wrong).unwrap_err().to_string().contains("[3]"));
    }

    #[test]
    fn reads_numpy_written_header() {
        // Exactly what numpy 1.26 writes for np.arange(3, dtype=np.int8).
        let mut b = b"\x93NUMPY\x01\x00v\x00".to_vec();
        let mut h = "{'descr': '|i1', 'fortran_order': False, 'shape': (3,), }".to_string();
        h.push_str(&" ".repeat(118 - h.len() - 1));
        h.push('\n');
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(&[0, 1, 2]);
        let a = parse(&b, "mem").unwrap();
        assert_eq!(a.shape, vec![3]);
        assert_eq!(a.data, TensorData::I8(vec![0, 1, 2]));
        // What intq writes has numpy's layout: the data start at the same 64-byte boundary.
        let ours = to_bytes(&a).unwrap();
        assert_eq!(
            (ours.len(), &ours[..10], &ours[125..]),
            (b.len(), &b[..10], &b[125..])
        );
    }

    #[test]
    fn rejects_bad_files() {
        let good = to_bytes(&Array {
            shape: vec![2],
            data: TensorData::F32(vec![1.0, 2.0]),
        })
        .unwrap();
        assert!(parse(&good[..good.len() - 1], "x.npy")
            .unwrap_err()
            .to_string()
            .contains("x.npy"));
        assert!(parse(b"hello", "x.npy").is_err());
        let mut f64_header = good.clone();
        let at = good.windows(3).position(|w| w == b"<f4").unwrap();
        f64_header[at..at + 3].copy_from_slice(b"<f8");
        assert!(parse(&f64_header, "x.npy")
            .unwrap_err()
            .to_string()
            .contains("unsupported dtype"));
        for n in 0..good.len() {
            assert!(parse(&good[..n], "prefix").is_err(), "{n} bytes read");
        }
    }
}
