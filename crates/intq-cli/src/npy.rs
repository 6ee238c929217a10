//! Reading and writing NumPy `.npy` arrays (the CLI's interchange format for tensors) through
//! `ndarray-npy`, with the checks that keep a hostile file from making it allocate what the
//! file does not hold.

use anyhow::{bail, Context, Result};
use intq_engine::{DType, TensorData};
use ndarray_npy::npy::header::{Header, Layout, ParseHeaderError, ReadHeaderError};
use ndarray_npy::{ReadableElement, WritableElement};
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";
/// Longest header read. A plain array's header is under 1 500 bytes even with NumPy's 64
/// dimensions; the crate's header parser takes time in proportion to the length.
const MAX_HEADER_LEN: usize = 4096;
/// Deepest bracket nesting read: a plain array's header nests 2 deep (the dict, the shape
/// tuple), a structured dtype's 4. The parser under the crate (`py_literal`) takes time
/// exponential in the nesting, so a short hostile header could stall it for hours.
const MAX_HEADER_DEPTH: usize = 4;

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

/// Checks the preamble (magic, version, header length), that the header it announces lies
/// inside `bytes` (`ndarray-npy` allocates the announced length, up to 4 GiB, before reading
/// it), and that the header is short and shallow enough to parse quickly.
fn check_preamble(bytes: &[u8], what: &str) -> Result<()> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        bail!("{what}: not a .npy file (missing the \\x93NUMPY magic)");
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => match bytes.get(8..12) {
            Some(b) => (u32::from_le_bytes(b.try_into().unwrap()) as usize, 12),
            None => bail!("{what}: truncated .npy header"),
        },
        v => bail!("{what}: unsupported .npy format version {v}"),
    };
    if header_start + header_len > bytes.len() {
        bail!("{what}: truncated .npy header");
    }
    if header_len > MAX_HEADER_LEN {
        bail!(
            "{what}: .npy header of {header_len} bytes, more than the {MAX_HEADER_LEN} intq reads"
        );
    }
    let (mut depth, mut deepest) = (0usize, 0usize);
    for &b in &bytes[header_start..header_start + header_len] {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_HEADER_DEPTH {
        bail!(
            "{what}: .npy header nests brackets {deepest} deep, more than the {MAX_HEADER_DEPTH} \
             an array's header needs"
        );
    }
    Ok(())
}

/// The header error in words; `what` names the file.
fn header_error(e: ReadHeaderError, what: &str) -> anyhow::Error {
    match e {
        // ndarray-npy 0.10 spells the missing 'shape' key "shaper".
        ReadHeaderError::Parse(ParseHeaderError::MissingKey(k)) => {
            let k = if k == "shaper" { "shape" } else { k.as_str() };
            anyhow::anyhow!("{what}: .npy header has no '{k}'")
        }
        ReadHeaderError::Parse(e) => anyhow::anyhow!("{what}: bad .npy header: {e}"),
        ReadHeaderError::Io(e) => anyhow::anyhow!("{what}: truncated .npy header ({e})"),
    }
}

/// Parses `.npy` bytes; `what` names the source in errors.
pub fn parse(bytes: &[u8], what: &str) -> Result<Array> {
    check_preamble(bytes, what)?;
    let mut payload = bytes;
    let header = Header::from_reader(&mut payload).map_err(|e| header_error(e, what))?;
    let descr = &header.type_descriptor;
    let dtype = descr
        .as_string()
        .and_then(|d| parse_descr(d))
        .with_context(|| {
            format!("{what}: unsupported dtype {descr} (intq reads uint8, int8, int32 and float32)")
        })?;
    if header.layout == Layout::Fortran {
        bail!("{what}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
    }
    let shape = header.shape;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .with_context(|| format!("{what}: shape {shape:?} overflows"))?;
    // The crate allocates `count` elements before reading them: the file must hold them first.
    let need = count
        .checked_mul(dtype.size_bytes())
        .with_context(|| format!("{what}: shape {shape:?} overflows"))?;
    if payload.len() != need {
        bail!(
            "{what}: shape {shape:?} of {} needs {need} data bytes, the file has {}",
            dtype.name(),
            payload.len()
        );
    }
    let data = (|| {
        Ok::<_, ndarray_npy::ReadDataError>(match dtype {
            DType::U8 => TensorData::U8(u8::read_to_end_exact_vec(payload, descr, count)?),
            DType::I8 => TensorData::I8(i8::read_to_end_exact_vec(payload, descr, count)?),
            DType::I32 => TensorData::I32(i32::read_to_end_exact_vec(payload, descr, count)?),
            DType::F32 => TensorData::F32(f32::read_to_end_exact_vec(payload, descr, count)?),
        })
    })()
    .with_context(|| format!("{what}: cannot read the array data"))?;
    Ok(Array { shape, data })
}

/// Serializes an array as a `.npy` file (C order, the header padded so the data start on a
/// 64-byte boundary).
pub fn to_bytes(array: &Array) -> Result<Vec<u8>> {
    fn write<T: WritableElement>(shape: &[usize], v: &[T]) -> Result<Vec<u8>> {
        let header = Header {
            type_descriptor: T::type_descriptor(),
            layout: Layout::Standard,
            shape: shape.to_vec(),
        };
        let mut out = header.to_bytes().context("formatting the .npy header")?;
        out.reserve(std::mem::size_of_val(v));
        T::write_slice(v, &mut out).context("writing the .npy data")?;
        Ok(out)
    }
    let count = array
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(array.data.len()) {
        bail!(
            "shape {:?} does not match the {} elements of the array",
            array.shape,
            array.data.len()
        );
    }
    match &array.data {
        TensorData::U8(v) => write(&array.shape, v),
        TensorData::I8(v) => write(&array.shape, v),
        TensorData::I32(v) => write(&array.shape, v),
        TensorData::F32(v) => write(&array.shape, v),
    }
}

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
