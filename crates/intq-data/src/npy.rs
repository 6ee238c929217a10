//! The one guarded reader and writer of NumPy `.npy` arrays in intq, over `ndarray-npy`: the
//! data sets' `.npz`/`.npy` loader ([`crate::numpy`]) and the CLI's tensor files both use it.
//!
//! Everything a hostile file could use against the parser or the allocator is checked before
//! `ndarray-npy` sees it: the header must lie inside the bytes present and be short
//! ([`MAX_HEADER_LEN`]) and shallow ([`MAX_HEADER_DEPTH`]); the shape's element count and byte
//! size must not overflow; and the data bytes the shape needs must be exactly the bytes that
//! follow the header before anything of that size is allocated.

use ndarray_npy::npy::header::{Header, Layout, ParseHeaderError, ReadHeaderError};
use ndarray_npy::ReadDataError;
pub use ndarray_npy::{ReadableElement, WritableElement};
use py_literal::Value;
use std::io::Read;

const MAGIC: &[u8] = b"\x93NUMPY";
/// Longest header read. A plain array's header is under 1 500 bytes even with NumPy's 64
/// dimensions, and the header parser's time grows with the length.
pub const MAX_HEADER_LEN: usize = 4096;
/// Deepest bracket nesting read: a plain array's header nests 2 deep (the dict, the shape
/// tuple), a structured dtype's 4. The parser under `ndarray-npy` (`py_literal`) takes time
/// exponential in the nesting, so a short hostile header could stall it for hours.
pub const MAX_HEADER_DEPTH: usize = 4;

/// Why a `.npy` stream was refused. The messages name the problem, not the file: callers add
/// the file's name.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("not a .npy file (missing the \\x93NUMPY magic)")]
    NotNpy,
    #[error("unsupported .npy format version {0}")]
    Version(u8),
    #[error("truncated .npy header")]
    TruncatedHeader,
    #[error(".npy header of {0} bytes, more than the {MAX_HEADER_LEN} intq reads")]
    HeaderTooLong(usize),
    #[error(
        ".npy header nests brackets {0} deep, more than the {MAX_HEADER_DEPTH} an array's header \
         needs"
    )]
    HeaderTooDeep(usize),
    #[error(".npy header has no '{0}'")]
    MissingKey(String),
    #[error("bad .npy header: {0}")]
    BadHeader(ParseHeaderError),
    #[error("shape {0:?} overflows")]
    Overflow(Vec<usize>),
    /// The bytes after the header are not the bytes the shape and dtype need.
    #[error(
        "shape {shape:?} of {dtype} needs {need} bytes but {}{have} follow the header",
        if need > have { "only " } else { "" }
    )]
    DataLength {
        shape: Vec<usize>,
        dtype: String,
        need: u64,
        have: u64,
    },
    /// The stream ended before the bytes it was said to hold.
    #[error("truncated: the array data needs {0} bytes")]
    Truncated(u64),
    #[error("reading the .npy data: {0}")]
    Io(std::io::Error),
    #[error("cannot read the array data: {0}")]
    Data(ReadDataError),
    #[error("shape {shape:?} does not match the {len} elements of the array")]
    ShapeMismatch { shape: Vec<usize>, len: usize },
    #[error("writing the .npy data: {0}")]
    Write(ndarray_npy::WriteDataError),
}

/// A `.npy` header that passed every check.
#[derive(Debug, Clone)]
pub struct NpyHeader {
    /// The dtype as NumPy wrote it: a string such as `<f4` for an array of numbers, a list for a
    /// structured dtype.
    pub descr: Value,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
    /// The element count, the product of `shape`.
    pub len: usize,
    /// How many bytes follow the header.
    pub data_len: u64,
}

impl NpyHeader {
    /// The dtype string (`<f4`, `|u1`), or `None` for a structured dtype.
    pub fn descr_str(&self) -> Option<&str> {
        self.descr.as_string().map(String::as_str)
    }

    /// NumPy's name for the dtype (`uint8`, `float32`; byte order aside), else its descriptor.
    pub fn dtype_name(&self) -> String {
        let Some(d) = self.descr_str() else {
            return self.descr.to_string();
        };
        let body = d.trim_start_matches(['<', '>', '|', '=']);
        let kind = match body.get(..1) {
            Some("u") => "uint",
            Some("i") => "int",
            Some("f") => "float",
            Some("c") => "complex",
            Some("b") => "bool",
            _ => return d.to_string(),
        };
        match body[1..].parse::<u32>() {
            Ok(1) if kind == "bool" => kind.to_string(),
            Ok(n) if n > 0 && n <= 32 => format!("{kind}{}", n * 8),
            _ => d.to_string(),
        }
    }
}

/// Reads `buf.len()` bytes, an early end being a truncated header.
fn read_header_bytes<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), NpyError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => NpyError::TruncatedHeader,
        _ => NpyError::Io(e),
    })
}

/// Reads and checks the header at the start of `r`, a stream of `available` bytes in all (a
/// file's or an archive entry's size), leaving `r` at the first data byte.
pub fn read_header<R: Read>(r: &mut R, available: u64) -> Result<NpyHeader, NpyError> {
    let mut pre = [0u8; 12];
    let magic_len = (available.min(MAGIC.len() as u64)) as usize;
    read_header_bytes(r, &mut pre[..magic_len]).map_err(|e| match e {
        NpyError::TruncatedHeader => NpyError::NotNpy,
        e => e,
    })?;
    if &pre[..magic_len] != MAGIC {
        return Err(NpyError::NotNpy);
    }
    let short = |need: usize| available < need as u64;
    if short(8) {
        return Err(NpyError::TruncatedHeader);
    }
    read_header_bytes(r, &mut pre[6..8])?;
    let prefix = match pre[6] {
        1 => 10,
        2 | 3 => 12,
        v => return Err(NpyError::Version(v)),
    };
    if short(prefix) {
        return Err(NpyError::TruncatedHeader);
    }
    read_header_bytes(r, &mut pre[8..prefix])?;
    let header_len = match prefix {
        10 => u16::from_le_bytes([pre[8], pre[9]]) as usize,
        _ => u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]) as usize,
    };
    let total = prefix as u64 + header_len as u64;
    if total > available {
        return Err(NpyError::TruncatedHeader);
    }
    if header_len > MAX_HEADER_LEN {
        return Err(NpyError::HeaderTooLong(header_len));
    }
    let mut head = pre[..prefix].to_vec();
    head.resize(prefix + header_len, 0);
    read_header_bytes(r, &mut head[prefix..])?;
    let deepest = head[prefix..]
        .iter()
        .scan(0usize, |depth, &b| {
            match b {
                b'(' | b'[' | b'{' => *depth += 1,
                b')' | b']' | b'}' => *depth = depth.saturating_sub(1),
                _ => {}
            }
            Some(*depth)
        })
        .max()
        .unwrap_or(0);
    if deepest > MAX_HEADER_DEPTH {
        return Err(NpyError::HeaderTooDeep(deepest));
    }
    let header = Header::from_reader(&mut &head[..]).map_err(|e| match e {
        // ndarray-npy 0.10 spells the missing 'shape' key "shaper".
        ReadHeaderError::Parse(ParseHeaderError::MissingKey(k)) => {
            NpyError::MissingKey(if k == "shaper" { "shape".into() } else { k })
        }
        ReadHeaderError::Parse(e) => NpyError::BadHeader(e),
        // The whole header is in `head`, so the reader cannot run short.
        ReadHeaderError::Io(_) => NpyError::TruncatedHeader,
    })?;
    let len = header
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| NpyError::Overflow(header.shape.clone()))?;
    Ok(NpyHeader {
        descr: header.type_descriptor,
        fortran_order: header.layout == Layout::Fortran,
        shape: header.shape,
        len,
        data_len: available - total,
    })
}

/// Reads the data that follows `header` (see [`read_header`]) as elements of type `T`, after
/// checking that exactly the bytes they need follow the header. `T` must match the header's
/// dtype (`ndarray-npy` refuses any other).
pub fn read_data<T: ReadableElement, R: Read>(
    r: R,
    header: &NpyHeader,
) -> Result<Vec<T>, NpyError> {
    let need = header
        .len
        .checked_mul(std::mem::size_of::<T>())
        .ok_or_else(|| NpyError::Overflow(header.shape.clone()))? as u64;
    if need != header.data_len {
        return Err(NpyError::DataLength {
            shape: header.shape.clone(),
            dtype: header.dtype_name(),
            need,
            have: header.data_len,
        });
    }
    T::read_to_end_exact_vec(r.take(need), &header.descr, header.len).map_err(|e| match e {
        ReadDataError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            NpyError::Truncated(need)
        }
        ReadDataError::MissingData => NpyError::Truncated(need),
        ReadDataError::Io(e) => NpyError::Io(e),
        e => NpyError::Data(e),
    })
}

/// Reads a whole `.npy` file held in memory: its header and its data as elements of type `T`.
pub fn parse<T: ReadableElement>(bytes: &[u8]) -> Result<(NpyHeader, Vec<T>), NpyError> {
    let mut r = bytes;
    let header = read_header(&mut r, bytes.len() as u64)?;
    let data = read_data(r, &header)?;
    Ok((header, data))
}

/// The bytes of a C-ordered `.npy` file of `shape` whose dtype is `descr` (e.g. `|u1`, `>i4`)
/// and whose data are already `data`, the header padded as NumPy pads it so the data start on
/// a 64-byte boundary.
pub fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let header = Header {
        type_descriptor: Value::String(descr.to_string()),
        layout: Layout::Standard,
        shape: shape.to_vec(),
    };
    // Formatting fails only for a header longer than 4 GiB, which no shape here writes.
    let mut out = header.to_bytes().expect("a .npy header formats");
    out.extend_from_slice(data);
    out
}

/// The bytes of a C-ordered `.npy` file holding `data` with `shape`; the element count must be
/// the product of the shape.
pub fn to_bytes<T: WritableElement>(shape: &[usize], data: &[T]) -> Result<Vec<u8>, NpyError> {
    if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(data.len()) {
        return Err(NpyError::ShapeMismatch {
            shape: shape.to_vec(),
            len: data.len(),
        });
    }
    let header = Header {
        type_descriptor: T::type_descriptor(),
        layout: Layout::Standard,
        shape: shape.to_vec(),
    };
    let mut out = header.to_bytes().expect("a .npy header formats");
    out.reserve(std::mem::size_of_val(data));
    T::write_slice(data, &mut out).map_err(NpyError::Write)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_dtypes() {
        let b = to_bytes(&[2, 2], &[1i32, -2, 3, i32::MAX]).unwrap();
        assert_eq!(b.len() % 64, 16);
        let (h, v) = parse::<i32>(&b).unwrap();
        assert_eq!(
            (h.shape.as_slice(), h.len, h.fortran_order),
            (&[2, 2][..], 4, false)
        );
        assert_eq!(v, vec![1, -2, 3, i32::MAX]);
        assert_eq!(h.dtype_name(), "int32");
        let (h, v) = parse::<u16>(&npy_bytes(">u2", &[2], &[1, 2, 0, 3])).unwrap();
        assert_eq!((h.dtype_name(), v), ("uint16".to_string(), vec![258, 3]));
        let e = to_bytes(&[3], &[1u8, 2]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shape [3] does not match the 2 elements of the array"
        );
    }

    #[test]
    fn refuses_hostile_headers_before_parsing_them() {
        let good = npy_bytes("|u1", &[2], &[1, 2]);
        // Every prefix of a good file fails cleanly.
        for n in 0..good.len() {
            assert!(parse::<u8>(&good[..n]).is_err(), "{n} bytes read");
        }
        // Thirty nested brackets in the dict: refused from a byte count, never handed to the parser.
        let deep = format!("{}{}", "[".repeat(30), "]".repeat(30));
        let mut b = good.clone();
        let at = b.windows(4).position(|w| w == b"(2,)").unwrap();
        b.splice(at..at + 4, deep.bytes());
        let header_len = (b.len() - 12) as u16;
        b[8..10].copy_from_slice(&header_len.to_le_bytes());
        let e = parse::<u8>(&b).unwrap_err();
        assert!(matches!(e, NpyError::HeaderTooDeep(31)), "{e}");
        // A version-2 header claiming 4 GiB of text.
        let mut b = b"\x93NUMPY\x02\x00".to_vec();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse::<u8>(&b), Err(NpyError::TruncatedHeader)));
        let e = parse::<u8>(&npy_bytes("|u1", &[1 << 40, 1 << 40], &[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shape [1099511627776, 1099511627776] overflows"
        );
        let e = parse::<u8>(&npy_bytes("|u1", &[1 << 30, 4], &[0; 16])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shape [1073741824, 4] of uint8 needs 4294967296 bytes but only 16 follow the header"
        );
        let e = parse::<u8>(&npy_bytes("|u1", &[2], &[1, 2, 3])).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("needs 2 bytes but 3 follow the header"),
            "{e}"
        );
    }
}
