//! IDX files (LeCun's MNIST container): a validated reader for plain and gzipped files and an
//! atomic writer.
//!
//! Layout: two zero bytes, a dtype byte (only 0x08 = unsigned byte is accepted here), a byte with
//! the number of dimensions, then each dimension as a big-endian u32, then the data row-major.
//! The reader checks the header and the declared size against the file before allocating, so a
//! corrupt header cannot make it allocate gigabytes.

use crate::DataError;
use flate2::read::GzDecoder;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

/// The unsigned-byte dtype, the only one MNIST-style data sets use.
pub const DTYPE_U8: u8 = 0x08;
/// Most dimensions a header may declare; data sets here use 1 (labels) or 3 (images).
pub const MAX_DIMS: usize = 4;
/// Largest body the reader accepts (4 GiB), far above any data set this crate reads.
pub const MAX_BODY: u64 = 4 << 30;
/// Deflate cannot expand data by more than about 1032:1, so a gzip file whose declared body
/// exceeds this multiple of its compressed length is truncated or lying.
const MAX_DEFLATE_RATIO: u64 = 1100;

/// A decoded IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Why an IDX stream is bad, before a file name and hint are attached.
fn corrupt(path: &Path, problem: impl Into<String>, hint: &str) -> DataError {
    DataError::Corrupt {
        path: path.to_path_buf(),
        problem: problem.into(),
        hint: hint.to_string(),
    }
}

/// True when a path names a gzip file (by its `.gz` suffix).
pub fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// Parses and checks an IDX header; returns the dims and the body length in bytes.
fn parse_header<R: Read>(
    r: &mut R,
    path: &Path,
    hint: &str,
) -> Result<(Vec<usize>, u64), DataError> {
    let mut magic = [0u8; 4];
    read_full(r, &mut magic, path, hint, "header (4-byte magic)")?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(corrupt(
            path,
            format!(
                "bad magic {:02x} {:02x} {:02x} {:02x}: an IDX file starts with two zero bytes",
                magic[0], magic[1], magic[2], magic[3]
            ),
            hint,
        ));
    }
    if magic[2] != DTYPE_U8 {
        return Err(corrupt(
            path,
            format!(
                "IDX dtype byte 0x{:02x}, but only 0x08 (unsigned byte) is supported",
                magic[2]
            ),
            hint,
        ));
    }
    let ndim = magic[3] as usize;
    if ndim == 0 || ndim > MAX_DIMS {
        return Err(corrupt(
            path,
            format!("IDX header declares {ndim} dimensions (1 to {MAX_DIMS} supported)"),
            hint,
        ));
    }
    let mut raw = vec![0u8; 4 * ndim];
    read_full(r, &mut raw, path, hint, "header (dimensions)")?;
    let dims: Vec<usize> = raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let body = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&n| n <= MAX_BODY)
        .ok_or_else(|| {
            corrupt(
                path,
                format!("dimensions {dims:?} declare more than {MAX_BODY} bytes of data"),
                hint,
            )
        })?;
    Ok((dims, body))
}

/// `read_exact` whose early end of file is reported as a truncated file.
fn read_full<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    path: &Path,
    hint: &str,
    what: &str,
) -> Result<(), DataError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(corrupt(
                    path,
                    format!(
                        "truncated: the {what} needs {} bytes but only {filled} remain",
                        buf.len()
                    ),
                    hint,
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                // flate2 reports a corrupt deflate stream this way.
                return Err(corrupt(path, format!("corrupt gzip data: {e}"), hint));
            }
            Err(e) => return Err(corrupt(path, format!("read failed: {e}"), hint)),
        }
    }
    Ok(())
}

/// Reads and validates an IDX file of unsigned bytes, plain or gzipped (by `.gz` suffix).
/// `hint` is appended to every error message (how to get good data).
pub fn read_idx(path: &Path, hint: &str) -> Result<Idx, DataError> {
    let file = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path: path.to_path_buf(),
                hint: hint.to_string(),
            }
        } else {
            DataError::io(path, e)
        }
    })?;
    let file_len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    read_idx_from(BufReader::new(file), file_len, is_gz(path), path, hint)
}

/// [`read_idx`] on bytes already in memory (`gz` says whether they are gzipped); `path` only
/// names them in errors. The fuzz target and tools that hold files in memory use it.
pub fn parse_idx(bytes: &[u8], gz: bool, path: &Path, hint: &str) -> Result<Idx, DataError> {
    read_idx_from(bytes, bytes.len() as u64, gz, path, hint)
}

fn read_idx_from<R: Read>(
    input: R,
    file_len: u64,
    gz: bool,
    path: &Path,
    hint: &str,
) -> Result<Idx, DataError> {
    if gz {
        let mut r = GzDecoder::new(input);
        let (dims, body) = parse_header(&mut r, path, hint)?;
        if body > file_len.saturating_mul(MAX_DEFLATE_RATIO) {
            return Err(corrupt(
                path,
                format!(
                    "truncated: dimensions {dims:?} declare {body} bytes, more than a \
                     {file_len}-byte gzip file can hold"
                ),
                hint,
            ));
        }
        let mut data = vec![0u8; body as usize];
        read_full(&mut r, &mut data, path, hint, "data")?;
        let mut extra = [0u8; 1];
        let n = read_or_corrupt(&mut r, &mut extra, path, hint)?;
        if n != 0 {
            return Err(corrupt(
                path,
                format!("trailing data after the {body} bytes that dimensions {dims:?} declare"),
                hint,
            ));
        }
        Ok(Idx { dims, data })
    } else {
        let mut r = input;
        let (dims, body) = parse_header(&mut r, path, hint)?;
        let header = 4 + 4 * dims.len() as u64;
        let expected = header + body;
        if file_len != expected {
            let what = if file_len < expected {
                "truncated"
            } else {
                "trailing data"
            };
            return Err(corrupt(
                path,
                format!(
                    "{what}: dimensions {dims:?} need a {expected}-byte file, this one has \
                     {file_len} bytes"
                ),
                hint,
            ));
        }
        let mut data = vec![0u8; body as usize];
        read_full(&mut r, &mut data, path, hint, "data")?;
        Ok(Idx { dims, data })
    }
}

fn read_or_corrupt<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    path: &Path,
    hint: &str,
) -> Result<usize, DataError> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(path, format!("corrupt gzip data: {e}"), hint)),
        }
    }
}

/// Serializes an unsigned-byte IDX file (header then data) into memory.
///
/// Fails when the dims do not match the data length or do not fit an IDX header.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Result<Vec<u8>, String> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(format!(
            "{} dimensions (1 to {MAX_DIMS} supported)",
            dims.len()
        ));
    }
    if dims.iter().any(|&d| u32::try_from(d).is_err()) {
        return Err(format!("dimensions {dims:?} do not fit 32 bits"));
    }
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(data.len()) {
        return Err(format!(
            "dimensions {dims:?} do not match {} data bytes",
            data.len()
        ));
    }
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, DTYPE_U8, dims.len() as u8]);
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

/// Writes bytes to `path` atomically: a temporary file in the same folder, synced, then renamed,
/// so a reader never sees a half-written file. Gzips them when the path ends in `.gz`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".intq-tmp-")
        .tempfile_in(dir)
        .map_err(|e| DataError::io(dir, e))?;
    let res = if is_gz(path) {
        let mut enc =
            flate2::write::GzEncoder::new(tmp.as_file_mut(), flate2::Compression::default());
        enc.write_all(bytes).and_then(|_| enc.finish().map(|_| ()))
    } else {
        tmp.as_file_mut().write_all(bytes)
    };
    res.and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| DataError::io(path, e))?;
    // tempfile creates 0600 files; data sets are shared read-only material.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| DataError::io(path, e))?;
    }
    tmp.persist(path)
        .map_err(|e| DataError::io(path, e.error))?;
    Ok(())
}

/// Writes an unsigned-byte IDX file atomically (gzipped when the path ends in `.gz`).
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8]) -> Result<(), DataError> {
    let bytes = encode_idx(dims, data).map_err(|problem| DataError::Corrupt {
        path: path.to_path_buf(),
        problem: format!("refusing to write: {problem}"),
        hint: "this is a bug in the caller".to_string(),
    })?;
    write_atomic(path, &bytes)
}
