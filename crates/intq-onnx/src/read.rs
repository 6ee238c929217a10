//! Reading an ONNX file: the ModelProto, its opsets and its tensors (inline or external data).
//!
//! The reader is prost over message types generated from onnx.proto (`src/proto.rs`, by
//! `proto/regen.sh`, checked in so building needs no `protoc`). burn's `onnx-ir` (0.22.0) was
//! the other candidate: it depends on `burn-tensor` and builds its protobuf code with
//! `protobuf-codegen` at build time, which would put burn's tensor code under a crate meant to
//! have no training dependencies, and its own IR lowers and rewrites nodes with rules intq does
//! not control. prost decodes exactly the bytes it is given: lengths are checked against the
//! buffer before anything is allocated and nesting is capped, so a truncated or forged file is a
//! decode error.

use std::path::{Component, Path, PathBuf};

use prost::Message;

use crate::proto::{tensor_proto, ModelProto, TensorProto};
use crate::OnnxError;

/// The ONNX opsets (default domain) this importer reads.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// The largest model file read (protobuf's own limit is 2 GiB).
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// The most elements any tensor (a constant or an activation of one image) may have.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// The largest rank any tensor may have.
pub const MAX_RANK: usize = 8;

/// A decoded model with where it came from, so external data can be found.
pub struct ModelFile {
    pub proto: ModelProto,
    /// The folder external data is read from; `None` for a model decoded from bytes.
    pub dir: Option<PathBuf>,
    /// The default-domain opset the model imports.
    pub opset: i64,
}

/// Reads and decodes `path`.
pub fn read_file(path: &Path) -> Result<ModelFile, OnnxError> {
    let file_err = |msg: String| OnnxError::File {
        path: path.display().to_string(),
        msg,
    };
    let meta = std::fs::metadata(path).map_err(|e| file_err(e.to_string()))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(file_err(format!(
            "{} bytes, more than the {} an ONNX protobuf can hold",
            meta.len(),
            MAX_FILE_BYTES
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| file_err(e.to_string()))?;
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        })
        .unwrap_or_else(|| PathBuf::from("."));
    decode(&bytes, Some(dir)).map_err(|e| match e {
        OnnxError::Decode(msg) => file_err(msg),
        other => other,
    })
}

/// Decodes a model from memory; external data is refused (there is no folder to read it from).
pub fn read_bytes(bytes: &[u8]) -> Result<ModelFile, OnnxError> {
    decode(bytes, None)
}

fn decode(bytes: &[u8], dir: Option<PathBuf>) -> Result<ModelFile, OnnxError> {
    if bytes.is_empty() {
        return Err(OnnxError::Decode("empty file".into()));
    }
    let proto = ModelProto::decode(bytes)
        .map_err(|e| OnnxError::Decode(format!("not a valid ONNX protobuf ({e})")))?;
    if proto.graph.is_none() {
        return Err(OnnxError::Decode(
            "not an ONNX model: the ModelProto has no graph".into(),
        ));
    }
    let mut opset = None;
    for o in &proto.opset_import {
        match o.domain.as_deref().unwrap_or("") {
            "" | "ai.onnx" => opset = Some(o.version.unwrap_or(0)),
            _ => {}
        }
    }
    // IR version 3 and later must list their opsets; the oldest files imply opset 1.
    let opset = opset.ok_or_else(|| {
        OnnxError::Model("the model imports no default-domain (ai.onnx) opset".into())
    })?;
    if !OPSETS.contains(&opset) {
        return Err(OnnxError::Model(format!(
            "opset {opset} is not supported (intq reads opsets {}-{}; re-export the model with \
             one of them)",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    Ok(ModelFile { proto, dir, opset })
}

/// A constant's values, as f32 (weights) or i64 (shapes, indices).
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A constant tensor: dims and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Const {
    pub dims: Vec<usize>,
    pub data: Data,
}

impl Const {
    pub fn f32(dims: Vec<usize>, v: Vec<f32>) -> Const {
        Const {
            dims,
            data: Data::F32(v),
        }
    }

    pub fn i64(dims: Vec<usize>, v: Vec<i64>) -> Const {
        Const {
            dims,
            data: Data::I64(v),
        }
    }

    /// The values as f32 (integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The values as i64; floats must be integral.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match &self.data {
            Data::I64(v) => Some(v.clone()),
            Data::F32(v) => v
                .iter()
                .map(|&x| {
                    (x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15).then_some(x as i64)
                })
                .collect(),
        }
    }
}

/// Element count of `dims`, refusing overflow and anything above [`MAX_ELEMENTS`].
pub fn element_count(dims: &[usize]) -> Option<usize> {
    if dims.len() > MAX_RANK {
        return None;
    }
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
}

/// Decodes a TensorProto into a [`Const`], reading external data relative to `dir`.
pub fn tensor(t: &TensorProto, dir: Option<&Path>) -> Result<Const, OnnxError> {
    let name = t.name.clone().unwrap_or_default();
    let err = |msg: String| OnnxError::Tensor {
        name: name.clone(),
        msg,
    };
    if t.dims.len() > MAX_RANK {
        return Err(err(format!("rank {} is above {MAX_RANK}", t.dims.len())));
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(err(format!("negative dimension {d}")));
        }
        dims.push(usize::try_from(d).map_err(|_| err(format!("dimension {d} too large")))?);
    }
    let n = element_count(&dims).ok_or_else(|| {
        err(format!(
            "shape {dims:?} has more than {MAX_ELEMENTS} elements"
        ))
    })?;
    if t.segment.is_some() {
        return Err(err("segmented tensors are not supported".into()));
    }
    use tensor_proto::DataType as D;
    let dtype = D::try_from(t.data_type.unwrap_or(0))
        .map_err(|_| err(format!("unknown data type {}", t.data_type.unwrap_or(0))))?;
    let width = match dtype {
        D::Float | D::Int32 | D::Uint32 => 4,
        D::Double | D::Int64 | D::Uint64 => 8,
        D::Int16 | D::Uint16 | D::Float16 | D::Bfloat16 => 2,
        D::Int8 | D::Uint8 | D::Bool => 1,
        _ => {
            return Err(err(format!(
                "data type {} is not supported (intq imports float models)",
                dtype.as_str_name()
            )))
        }
    };
    let external = t.data_location == Some(tensor_proto::DataLocation::External as i32);
    let raw: Option<Vec<u8>> = if external {
        Some(external_bytes(t, dir, n * width).map_err(err)?)
    } else {
        t.raw_data.clone()
    };
    let data = if let Some(raw) = raw {
        if raw.len() != n * width {
            return Err(err(format!(
                "raw data holds {} bytes, shape {dims:?} of {} needs {}",
                raw.len(),
                dtype.as_str_name(),
                n * width
            )));
        }
        decode_raw(dtype, &raw)
    } else {
        let d = match dtype {
            D::Float => Data::F32(t.float_data.clone()),
            D::Double => Data::F32(t.double_data.iter().map(|&x| x as f32).collect()),
            D::Int64 => Data::I64(t.int64_data.clone()),
            D::Uint64 => Data::I64(t.uint64_data.iter().map(|&x| x as i64).collect()),
            D::Float16 => Data::F32(t.int32_data.iter().map(|&x| f16_to_f32(x as u16)).collect()),
            D::Bfloat16 => Data::F32(
                t.int32_data
                    .iter()
                    .map(|&x| f32::from_bits((x as u32 & 0xffff) << 16))
                    .collect(),
            ),
            // int32_data carries every narrower integer type and bool.
            _ => Data::I64(t.int32_data.iter().map(|&x| x as i64).collect()),
        };
        if d.len() != n {
            return Err(err(format!(
                "holds {} values, shape {dims:?} needs {n}",
                d.len()
            )));
        }
        d
    };
    Ok(Const { dims, data })
}

fn decode_raw(dtype: tensor_proto::DataType, raw: &[u8]) -> Data {
    use tensor_proto::DataType as D;
    macro_rules! le {
        ($t:ty, $w:expr) => {
            raw.chunks_exact($w)
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()))
        };
    }
    match dtype {
        D::Float => Data::F32(le!(f32, 4).collect()),
        D::Double => Data::F32(le!(f64, 8).map(|x| x as f32).collect()),
        D::Float16 => Data::F32(le!(u16, 2).map(f16_to_f32).collect()),
        D::Bfloat16 => Data::F32(
            le!(u16, 2)
                .map(|x| f32::from_bits((x as u32) << 16))
                .collect(),
        ),
        D::Int64 => Data::I64(le!(i64, 8).collect()),
        D::Uint64 => Data::I64(le!(u64, 8).map(|x| x as i64).collect()),
        D::Int32 => Data::I64(le!(i32, 4).map(i64::from).collect()),
        D::Uint32 => Data::I64(le!(u32, 4).map(i64::from).collect()),
        D::Int16 => Data::I64(le!(i16, 2).map(i64::from).collect()),
        D::Uint16 => Data::I64(le!(u16, 2).map(i64::from).collect()),
        D::Int8 => Data::I64(raw.iter().map(|&b| b as i8 as i64).collect()),
        _ => Data::I64(raw.iter().map(|&b| b as i64).collect()),
    }
}

/// IEEE half to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if frac == 0 => sign,
        0 => {
            // Subnormal: the value is frac * 2^-24.
            let v = frac as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        0x1f => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// The bytes of an externally stored tensor: `location` relative to the model's folder (never
/// absolute, never leaving it, symbolic links included), `offset` and `length` inside that
/// file, and exactly `expected` bytes.
fn external_bytes(t: &TensorProto, dir: Option<&Path>, expected: usize) -> Result<Vec<u8>, String> {
    let dir = dir.ok_or("external data needs the model's folder (load the model from a file)")?;
    let (mut location, mut offset, mut length) = (None, 0u64, None);
    for kv in &t.external_data {
        let value = kv.value.as_deref().unwrap_or("");
        match kv.key.as_deref().unwrap_or("") {
            "location" => location = Some(value.to_string()),
            "offset" => {
                offset = value
                    .parse()
                    .map_err(|_| format!("external data offset {value:?} is not a number"))?
            }
            "length" => {
                length = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("external data length {value:?} is not a number"))?,
                )
            }
            _ => {}
        }
    }
    let location = location.ok_or("external data without a location")?;
    let rel = Path::new(&location);
    if location.is_empty()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "external data location {location:?} is not a path inside the model's folder"
        ));
    }
    let full = dir.join(rel);
    let canon_dir = dir
        .canonicalize()
        .map_err(|e| format!("model folder {}: {e}", dir.display()))?;
    let canon = full
        .canonicalize()
        .map_err(|e| format!("external data {}: {e}", full.display()))?;
    if !canon.starts_with(&canon_dir) {
        return Err(format!(
            "external data location {location:?} resolves outside the model's folder"
        ));
    }
    let size = std::fs::metadata(&canon)
        .map_err(|e| format!("external data {}: {e}", full.display()))?
        .len();
    let length = length.unwrap_or(expected as u64);
    if length != expected as u64 {
        return Err(format!(
            "external data length {length} but the tensor's shape needs {expected} bytes"
        ));
    }
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "external data {}: bytes {offset}..{} lie beyond its {size} bytes",
            full.display(),
            offset.saturating_add(length)
        ));
    }
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&canon)
        .map_err(|e| format!("external data {}: {e}", full.display()))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("external data {}: {e}", full.display()))?;
    let mut buf = vec![0u8; expected];
    f.read_exact(&mut buf)
        .map_err(|e| format!("external data {}: {e}", full.display()))?;
    Ok(buf)
}
