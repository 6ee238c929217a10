//! Reading and writing NumPy `.npy` arrays (format versions 1–3, C order, little-endian), the
//! CLI's interchange format for tensors.

use anyhow::{bail, Context, Result};
use intq_engine::{DType, TensorData};
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// An array read from or written to a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

fn descr(dtype: DType) -> &'static str {
    match dtype {
        DType::U8 => "|u1",
        DType::I8 => "|i1",
        DType::I32 => "<i4",
        DType::F32 => "<f4",
    }
}

fn parse_descr(d: &str) -> Option<DType> {
    match d {
        "|u1" | "<u1" | "u1" | "B" => Some(DType::U8),
        "|i1" | "<i1" | "i1" | "b" => Some(DType::I8),
        "<i4" | "i4" => Some(DType::I32),
        "<f4" | "f4" => Some(DType::F32),
        _ => None,
    }
}

/// Parses `.npy` bytes; `what` names the source in errors.
pub fn parse(bytes: &[u8], what: &str) -> Result<Array> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        bail!("{what}: not a .npy file (missing the \\x93NUMPY magic)");
    }
    let major = bytes[6];
    let (header_len, header_start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                bail!("{what}: truncated .npy header");
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => bail!("{what}: unsupported .npy format version {v}"),
    };
    let header_end = header_start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .with_context(|| format!("{what}: truncated .npy header"))?;
    let header = std::str::from_utf8(&bytes[header_start..header_end])
        .with_context(|| format!("{what}: .npy header is not text"))?;
    let descr = dict_value(header, "descr")
        .and_then(|v| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .with_context(|| format!("{what}: .npy header has no 'descr'"))?;
    let dtype = parse_descr(descr).with_context(|| {
        format!("{what}: unsupported dtype '{descr}' (intq reads uint8, int8, int32 and float32)")
    })?;
    if dict_value(header, "fortran_order") == Some("True") {
        bail!("{what}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
    }
    let shape_text = dict_value(header, "shape")
        .with_context(|| format!("{what}: .npy header has no 'shape'"))?;
    let shape =
        parse_shape(shape_text).with_context(|| format!("{what}: bad shape {shape_text}"))?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .with_context(|| format!("{what}: shape {shape:?} overflows"))?;
    let payload = &bytes[header_end..];
    let need = count
        .checked_mul(dtype.size_bytes())
        .context("shape overflows")?;
    if payload.len() != need {
        bail!(
            "{what}: shape {shape:?} of {} needs {need} data bytes, the file has {}",
            dtype.name(),
            payload.len()
        );
    }
    let data = match dtype {
        DType::U8 => TensorData::U8(payload.to_vec()),
        DType::I8 => TensorData::I8(payload.iter().map(|&b| b as i8).collect()),
        DType::I32 => TensorData::I32(
            payload
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        DType::F32 => TensorData::F32(
            payload
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
    };
    Ok(Array { shape, data })
}

/// The raw text of `key`'s value in a Python dict literal such as NumPy's header.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let start = header.find(&pat)? + pat.len();
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

fn parse_shape(text: &str) -> Option<Vec<usize>> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse().ok())
        .collect()
}

/// Serializes an array as a version-1 `.npy` file.
pub fn to_bytes(array: &Array) -> Vec<u8> {
    let shape = match array.shape.len() {
        1 => format!("({},)", array.shape[0]),
        _ => format!(
            "({})",
            array
                .shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        descr(array.data.dtype()),
        shape
    );
    // NumPy pads the header with spaces so the data starts on a 64-byte boundary.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + array.data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match &array.data {
        TensorData::U8(v) => out.extend_from_slice(v),
        TensorData::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        TensorData::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
    out
}

pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes, &path.display().to_string())
}

/// Writes atomically: a temporary file beside `path`, then a rename, so a failed write never
/// leaves a half-written array under the final name.
pub fn write(path: &Path, array: &Array) -> Result<()> {
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
        f.write_all(&to_bytes(array))?;
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
            let bytes = to_bytes(&a);
            assert_eq!(
                (bytes.len() - a.data.len() * a.data.dtype().size_bytes()) % 64,
                0
            );
            assert_eq!(parse(&bytes, "mem").unwrap(), a);
        }
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
    }

    #[test]
    fn rejects_bad_files() {
        let good = to_bytes(&Array {
            shape: vec![2],
            data: TensorData::F32(vec![1.0, 2.0]),
        });
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
            let _ = parse(&good[..n], "prefix");
        }
    }
}
