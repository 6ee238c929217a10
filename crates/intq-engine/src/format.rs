//! The `.intq` file format (specified in `docs/format.md`): a versioned, little-endian,
//! CRC-32-checksummed encoding of a [`Graph`], with constant data on 16-byte boundaries so a
//! future loader could map it instead of copying it.
//!
//! Reading trusts nothing: every count and length is checked against the bytes that remain
//! before anything is allocated for it, so a file of `n` bytes never makes the reader allocate
//! much more than `n` bytes, and no input makes it panic.

use crate::{
    Activation, ChannelParams, DType, DetectionPart, EngineError, Graph, Metadata, Op, OpKind,
    Padding, Quant, QuantParams, Tensor, TensorData, TensorId,
};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The first eight bytes of every `.intq` file. The high first byte and the CR LF / Ctrl-Z
/// sequence (as in PNG) make text-mode transfers and 7-bit channels visibly corrupt the magic.
pub const MAGIC: [u8; 8] = *b"\x89INTQ\r\n\x1a";
/// The major version this reader reads; any other major version is refused.
pub const VERSION_MAJOR: u16 = 1;
/// The newest minor version this writer writes (1.1 added the TFLite-exact op kinds, 1.2 the
/// narrowed code range of sub-8-bit activations, 1.3 the metadata section, 1.4 the op kinds
/// Mul, Sub, Relu, LeakyRelu, HardSwish, Tanh, ResizeNearest, ResizeBilinear, Prelu, Maximum,
/// Minimum, Transpose and Slice, 1.5 the op kinds TransposeConv, SpaceToBatch, BatchToSpace
/// and DepthToSpace). Minor versions only add tags, which older
/// readers refuse by name, so a reader accepts every minor version of its major; a file is
/// stamped with the lowest minor version whose tags it uses.
pub const VERSION_MINOR: u16 = 5;

/// The lowest minor version whose tags `graph` uses.
fn minor_version_of(graph: &Graph) -> u16 {
    let new_in_1_5 = |op: &Op| {
        matches!(
            op.kind(),
            OpKind::TransposeConv
                | OpKind::SpaceToBatch
                | OpKind::BatchToSpace
                | OpKind::DepthToSpace
                | OpKind::DetectionPostProcess
                | OpKind::Gather
                | OpKind::Sum
                | OpKind::ReduceMax
                | OpKind::ArgMax
                | OpKind::L2Normalization
        )
    };
    if graph.ops().iter().any(new_in_1_5) {
        return 5;
    }
    let new_in_1_4 = |op: &Op| {
        matches!(
            op.kind(),
            OpKind::Mul
                | OpKind::Sub
                | OpKind::Relu
                | OpKind::LeakyRelu
                | OpKind::HardSwish
                | OpKind::Tanh
                | OpKind::ResizeNearest
                | OpKind::ResizeBilinear
                | OpKind::Prelu
                | OpKind::Maximum
                | OpKind::Minimum
                | OpKind::Transpose
                | OpKind::Slice
        )
    };
    if graph.ops().iter().any(new_in_1_4) {
        return 4;
    }
    if !graph.metadata().is_empty() {
        return 3;
    }
    if graph.tensors().iter().any(|t| t.code_range.is_some()) {
        return 2;
    }
    let new_in_1_1 = |op: &Op| {
        matches!(
            op.kind(),
            OpKind::FullyConnectedF64 | OpKind::LogisticLut | OpKind::Pad | OpKind::Mean
        )
    };
    if graph.ops().iter().any(new_in_1_1) {
        1
    } else {
        0
    }
}
/// Bytes before the payload. A multiple of [`DATA_ALIGN`], so alignment within the payload is
/// alignment within the file.
pub const HEADER_LEN: usize = 32;
/// Every constant's data starts at a file offset that is a multiple of this.
pub const DATA_ALIGN: usize = 16;
/// Highest tensor rank a file may declare.
pub const MAX_RANK: usize = 8;
/// Most elements (and largest single dimension) a tensor may declare: 2^31.
pub const MAX_ELEMENTS: u64 = 1 << 31;
/// The tensor id written for an absent optional operand (a bias).
pub const NO_TENSOR: u32 = u32::MAX;

/// Smallest encodings, used to refuse counts that the remaining bytes cannot hold.
const MIN_TENSOR_RECORD: u64 = 8; // name length + dtype, rank, quant and data tags
const MIN_OP_RECORD: u64 = 8; // tag + body length
const TENSOR_ID_LEN: u64 = 4;
const MIN_METADATA_RECORD: u64 = 8; // key length + value length
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY: usize = 256;
const CHANNEL_PARAMS_LEN: u64 = 8; // f32 scale + i32 zero point

/// Why bytes are not a valid `.intq` model. Offsets are byte offsets from the start of the file.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum FormatError {
    #[error(
        "truncated: {needed} bytes needed at offset {offset}, but only {available} remain there"
    )]
    Truncated {
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("not an .intq file: it starts with {} where an .intq file starts with {}", hex(found), hex(&MAGIC))]
    BadMagic { found: Vec<u8> },
    #[error(
        "unsupported .intq version {major}.{minor}: this reader reads version {supported}.x only"
    )]
    UnsupportedVersion {
        major: u16,
        minor: u16,
        supported: u16,
    },
    #[error(
        "checksum mismatch: the header records CRC-32 {stored:#010x} but the payload's is \
         {computed:#010x} (the file is corrupt)"
    )]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("{count} trailing bytes at offset {offset}, after the end of the model")]
    TrailingBytes { offset: u64, count: u64 },
    #[error("tensor {tensor} ('{name}') has absurd dimensions: {reason}")]
    AbsurdDimensions {
        tensor: u32,
        name: String,
        reason: String,
    },
    #[error(
        "op {op} ({kind}) refers to tensor #{id}, but the file has only {tensor_count} tensors"
    )]
    DanglingTensorId {
        op: usize,
        kind: OpKind,
        id: u32,
        tensor_count: u32,
    },
    #[error("graph {role} {index} is tensor #{id}, but the file has only {tensor_count} tensors")]
    DanglingGraphTensor {
        /// `"input"` or `"output"`.
        role: &'static str,
        index: usize,
        id: u32,
        tensor_count: u32,
    },
    #[error("tensor {tensor} ('{name}'): unknown dtype tag {tag}")]
    UnknownDType { tensor: u32, name: String, tag: u8 },
    #[error("tensor {tensor} ('{name}'): unknown quantization tag {tag}")]
    UnknownQuant { tensor: u32, name: String, tag: u8 },
    #[error(
        "op {op} (record at offset {offset}): unknown op tag {tag}; this reader knows tags 0 to \
         {} (a newer writer may have made the file)", OP_TAGS.len() - 1
    )]
    UnknownOp { op: usize, tag: u32, offset: u64 },
    #[error("op {op} ({kind}): unknown padding tag {tag}")]
    UnknownPadding { op: usize, kind: OpKind, tag: u8 },
    #[error("op {op} ({kind}): unknown activation tag {tag}")]
    UnknownActivation { op: usize, kind: OpKind, tag: u8 },
    #[error("tensor {tensor}: name is not valid UTF-8 (bad byte at offset {offset})")]
    InvalidName { tensor: u32, offset: u64 },
    #[error("tensor {tensor} ('{name}'): bad quantization parameters: {message}")]
    BadQuant {
        tensor: u32,
        name: String,
        message: String,
    },
    #[error("tensor {tensor} ('{name}'): bad constant data: {message}")]
    BadData {
        tensor: u32,
        name: String,
        message: String,
    },
    #[error("malformed at offset {offset}: {message}")]
    Malformed { offset: u64, message: String },
}

fn hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!("[{}]", parts.join(" "))
}

/// CRC-32 (IEEE 802.3, as zlib and PNG: reflected polynomial 0xEDB88320, initial value and final
/// XOR 0xFFFFFFFF), one table lookup per byte.
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| {
        CRC_TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8)
    })
}

/// `CRC_TABLE[i]` is the remainder of the byte `i` shifted through eight steps of the
/// polynomial division, so the loop above can consume a byte per step.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

// Tags. Their numbers are the file format: never renumber, only append.

const OP_TAGS: [OpKind; 39] = [
    OpKind::Conv2d,
    OpKind::DepthwiseConv2d,
    OpKind::FullyConnected,
    OpKind::Add,
    OpKind::AveragePool2d,
    OpKind::MaxPool2d,
    OpKind::Concat,
    OpKind::Logistic,
    OpKind::Softmax,
    OpKind::Reshape,
    OpKind::Quantize,
    OpKind::Dequantize,
    // 1.1
    OpKind::FullyConnectedF64,
    OpKind::LogisticLut,
    OpKind::Pad,
    OpKind::Mean,
    // 1.4
    OpKind::Mul,
    OpKind::Sub,
    OpKind::Relu,
    OpKind::LeakyRelu,
    OpKind::HardSwish,
    OpKind::Tanh,
    OpKind::ResizeNearest,
    OpKind::ResizeBilinear,
    OpKind::Prelu,
    OpKind::Maximum,
    OpKind::Minimum,
    OpKind::Transpose,
    OpKind::Slice,
    OpKind::TransposeConv,
    OpKind::SpaceToBatch,
    OpKind::BatchToSpace,
    OpKind::DepthToSpace,
    OpKind::DetectionPostProcess,
    OpKind::Gather,
    OpKind::Sum,
    OpKind::ReduceMax,
    OpKind::ArgMax,
    OpKind::L2Normalization,
];

fn op_tag(kind: OpKind) -> u32 {
    OP_TAGS.iter().position(|&k| k == kind).unwrap_or(0) as u32
}

fn dtype_tag(d: DType) -> u8 {
    match d {
        DType::U8 => 0,
        DType::I8 => 1,
        DType::I32 => 2,
        DType::F32 => 3,
    }
}

fn dtype_of_tag(tag: u8) -> Option<DType> {
    Some(match tag {
        0 => DType::U8,
        1 => DType::I8,
        2 => DType::I32,
        3 => DType::F32,
        _ => return None,
    })
}

const QUANT_NONE: u8 = 0;
const QUANT_PER_TENSOR: u8 = 1;
const QUANT_PER_CHANNEL: u8 = 2;
/// Per-tensor params and a narrowed code range `qmin, qmax` (new in 1.2).
const QUANT_PER_TENSOR_CODES: u8 = 3;

fn activation_tag(a: Activation) -> u8 {
    match a {
        Activation::None => 0,
        Activation::Relu => 1,
        Activation::Relu6 => 2,
        Activation::ReluN1To1 => 3,
    }
}

fn activation_of_tag(tag: u8) -> Option<Activation> {
    Some(match tag {
        0 => Activation::None,
        1 => Activation::Relu,
        2 => Activation::Relu6,
        3 => Activation::ReluN1To1,
        _ => return None,
    })
}

const PADDING_SAME: u8 = 0;
const PADDING_VALID: u8 = 1;
const PADDING_EXPLICIT: u8 = 2;

fn align_up(offset: usize, align: usize) -> Option<usize> {
    offset.checked_add(align - 1).map(|x| x / align * align)
}

// ---------------------------------------------------------------------------------------------
// Writing

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    /// A count or length field. Nothing held in memory comes near 2^32 items; saturating keeps
    /// the writer total, and the reader refuses the result rather than misreading it.
    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn size(&mut self, n: usize) {
        self.u64(n as u64);
    }
    fn id(&mut self, id: TensorId) {
        self.u32(id.0);
    }
    fn opt_id(&mut self, id: Option<TensorId>) {
        self.u32(id.map_or(NO_TENSOR, |t| t.0));
    }
    fn pair(&mut self, v: [usize; 2]) {
        self.size(v[0]);
        self.size(v[1]);
    }
    fn padding(&mut self, p: Padding) {
        match p {
            Padding::Same => self.u8(PADDING_SAME),
            Padding::Valid => self.u8(PADDING_VALID),
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } => {
                self.u8(PADDING_EXPLICIT);
                for v in [top, bottom, left, right] {
                    self.size(v);
                }
            }
        }
    }
    fn activation(&mut self, a: Activation) {
        self.u8(activation_tag(a));
    }
    fn patch_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn patch_u64(&mut self, at: usize, v: u64) {
        self.buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
}

/// Encodes a graph as an `.intq` file (see `docs/format.md`). The encoding is canonical: equal
/// graphs give equal bytes, and `to_bytes(&from_bytes(b)?) == b`.
pub fn to_bytes(graph: &Graph) -> Vec<u8> {
    let mut w = Writer {
        buf: vec![0; HEADER_LEN],
    };
    // (position of the data-offset field, data) for each constant, in tensor order.
    let mut constants: Vec<(usize, &TensorData)> = Vec::new();

    w.count(graph.tensors().len());
    for t in graph.tensors() {
        w.count(t.name.len());
        w.buf.extend_from_slice(t.name.as_bytes());
        w.u8(dtype_tag(t.dtype));
        w.u8(u8::try_from(t.shape.len()).unwrap_or(u8::MAX));
        w.u8(match (&t.quant, t.code_range) {
            (None, _) => QUANT_NONE,
            (Some(Quant::PerTensor(_)), None) => QUANT_PER_TENSOR,
            // Validation allows a code range only with per-tensor params.
            (Some(Quant::PerTensor(_)), Some(_)) => QUANT_PER_TENSOR_CODES,
            (Some(Quant::PerChannel(_)), _) => QUANT_PER_CHANNEL,
        });
        w.u8(t.data.is_some() as u8);
        for &d in &t.shape {
            w.size(d);
        }
        match &t.quant {
            None => {}
            Some(Quant::PerTensor(p)) => {
                w.f32(p.scale);
                w.i32(p.zero_point);
                if let Some((lo, hi)) = t.code_range {
                    w.i32(lo);
                    w.i32(hi);
                }
            }
            Some(Quant::PerChannel(c)) => {
                w.size(c.axis());
                w.count(c.len());
                for &s in c.scales() {
                    w.f32(s);
                }
                for &z in c.zero_points() {
                    w.i32(z);
                }
            }
        }
        if let Some(data) = &t.data {
            constants.push((w.buf.len(), data));
            w.u64(0); // offset, patched once the data section is laid out
            w.size(data.len() * data.dtype().size_bytes());
        }
    }

    for ids in [graph.inputs(), graph.outputs()] {
        w.count(ids.len());
        for &id in ids {
            w.id(id);
        }
    }

    w.count(graph.ops().len());
    for op in graph.ops() {
        w.u32(op_tag(op.kind()));
        let len_at = w.buf.len();
        w.u32(0); // body length, patched below
        write_op_body(&mut w, op);
        let body_len = w.buf.len() - len_at - 4;
        w.patch_u32(len_at, u32::try_from(body_len).unwrap_or(u32::MAX));
    }

    // Files of minor version 1.3 and later carry the metadata section, empty or not.
    if minor_version_of(graph) >= 3 {
        w.count(graph.metadata().len());
        for (key, value) in graph.metadata() {
            for text in [key, value] {
                w.count(text.len());
                w.buf.extend_from_slice(text.as_bytes());
            }
        }
    }

    for (field_at, data) in constants {
        let start = align_up(w.buf.len(), DATA_ALIGN).unwrap_or(w.buf.len());
        w.buf.resize(start, 0);
        w.patch_u64(field_at, start as u64);
        match data {
            TensorData::U8(v) => w.buf.extend_from_slice(v),
            TensorData::I8(v) => w.buf.extend(v.iter().map(|&x| x as u8)),
            TensorData::I32(v) => v.iter().for_each(|&x| w.i32(x)),
            TensorData::F32(v) => v.iter().for_each(|&x| w.f32(x)),
        }
    }

    let payload_len = (w.buf.len() - HEADER_LEN) as u64;
    let crc = crc32(&w.buf[HEADER_LEN..]);
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..10].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
    header[10..12].copy_from_slice(&minor_version_of(graph).to_le_bytes());
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    header[16..24].copy_from_slice(&payload_len.to_le_bytes());
    w.buf[..HEADER_LEN].copy_from_slice(&header);
    w.buf
}

fn write_op_body(w: &mut Writer, op: &Op) {
    match op {
        Op::Gather {
            input,
            output,
            axis,
            indices,
        } => {
            w.id(*input);
            w.id(*output);
            w.size(*axis);
            w.count(indices.len());
            for &j in indices {
                w.size(j);
            }
        }
        Op::Sum {
            input,
            output,
            axes,
            keep_dims,
        }
        | Op::ReduceMax {
            input,
            output,
            axes,
            keep_dims,
        } => {
            w.id(*input);
            w.id(*output);
            w.count(axes.len());
            for &a in axes {
                w.size(a);
            }
            w.u8(*keep_dims as u8);
        }
        Op::ArgMax {
            input,
            output,
            axis,
        } => {
            w.id(*input);
            w.id(*output);
            w.size(*axis);
        }
        Op::L2Normalization { input, output } => {
            w.id(*input);
            w.id(*output);
        }
        Op::Conv2d {
            input,
            filter,
            bias,
            output,
            stride,
            dilation,
            padding,
            activation,
        } => {
            w.id(*input);
            w.id(*filter);
            w.opt_id(*bias);
            w.id(*output);
            w.pair(*stride);
            w.pair(*dilation);
            w.padding(*padding);
            w.activation(*activation);
        }
        Op::DepthwiseConv2d {
            input,
            filter,
            bias,
            output,
            stride,
            dilation,
            padding,
            depth_multiplier,
            activation,
        } => {
            w.id(*input);
            w.id(*filter);
            w.opt_id(*bias);
            w.id(*output);
            w.pair(*stride);
            w.pair(*dilation);
            w.padding(*padding);
            w.size(*depth_multiplier);
            w.activation(*activation);
        }
        Op::FullyConnected {
            input,
            weights,
            bias,
            output,
            activation,
        }
        | Op::FullyConnectedF64 {
            input,
            weights,
            bias,
            output,
            activation,
        } => {
            w.id(*input);
            w.id(*weights);
            w.opt_id(*bias);
            w.id(*output);
            w.activation(*activation);
        }
        Op::Add {
            lhs,
            rhs,
            output,
            activation,
        }
        | Op::Mul {
            lhs,
            rhs,
            output,
            activation,
        }
        | Op::Sub {
            lhs,
            rhs,
            output,
            activation,
        } => {
            w.id(*lhs);
            w.id(*rhs);
            w.id(*output);
            w.activation(*activation);
        }
        Op::AveragePool2d {
            input,
            output,
            filter,
            stride,
            padding,
            activation,
        }
        | Op::MaxPool2d {
            input,
            output,
            filter,
            stride,
            padding,
            activation,
        } => {
            w.id(*input);
            w.id(*output);
            w.pair(*filter);
            w.pair(*stride);
            w.padding(*padding);
            w.activation(*activation);
        }
        Op::Concat {
            inputs,
            output,
            axis,
        } => {
            w.count(inputs.len());
            for &id in inputs {
                w.id(id);
            }
            w.id(*output);
            w.size(*axis);
        }
        Op::Softmax {
            input,
            output,
            beta,
        } => {
            w.id(*input);
            w.id(*output);
            w.f32(*beta);
        }
        Op::Pad {
            input,
            output,
            paddings,
        } => {
            w.id(*input);
            w.id(*output);
            w.count(paddings.len());
            for &p in paddings {
                w.pair(p);
            }
        }
        Op::Mean {
            input,
            output,
            axes,
            keep_dims,
        } => {
            w.id(*input);
            w.id(*output);
            w.count(axes.len());
            for &a in axes {
                w.size(a);
            }
            w.u8(*keep_dims as u8);
        }
        Op::Relu {
            input,
            output,
            activation,
        } => {
            w.id(*input);
            w.id(*output);
            w.activation(*activation);
        }
        Op::LeakyRelu {
            input,
            output,
            alpha,
        } => {
            w.id(*input);
            w.id(*output);
            w.f32(*alpha);
        }
        Op::Prelu {
            input,
            alpha,
            output,
        } => {
            w.id(*input);
            w.id(*alpha);
            w.id(*output);
        }
        Op::Maximum { lhs, rhs, output } | Op::Minimum { lhs, rhs, output } => {
            w.id(*lhs);
            w.id(*rhs);
            w.id(*output);
        }
        Op::Transpose {
            input,
            output,
            perm,
        } => {
            w.id(*input);
            w.id(*output);
            w.count(perm.len());
            for &a in perm {
                w.size(a);
            }
        }
        Op::Slice {
            input,
            output,
            begin,
            strides,
        } => {
            w.id(*input);
            w.id(*output);
            w.count(begin.len());
            for (&b, &s) in begin.iter().zip(strides) {
                w.size(b);
                w.size(s);
            }
        }
        Op::TransposeConv {
            input,
            filter,
            bias,
            output,
            stride,
            padding,
            activation,
        } => {
            w.id(*input);
            w.id(*filter);
            w.opt_id(*bias);
            w.id(*output);
            w.pair(*stride);
            w.padding(*padding);
            w.activation(*activation);
        }
        Op::SpaceToBatch {
            input,
            output,
            block,
            paddings: edges,
        }
        | Op::BatchToSpace {
            input,
            output,
            block,
            crops: edges,
        } => {
            w.id(*input);
            w.id(*output);
            w.pair(*block);
            w.pair(edges[0]);
            w.pair(edges[1]);
        }
        Op::DepthToSpace {
            input,
            output,
            block,
        } => {
            w.id(*input);
            w.id(*output);
            w.size(*block);
        }
        Op::ResizeNearest {
            input,
            output,
            align_corners,
            half_pixel_centers,
        }
        | Op::ResizeBilinear {
            input,
            output,
            align_corners,
            half_pixel_centers,
        } => {
            w.id(*input);
            w.id(*output);
            w.u8(*align_corners as u8);
            w.u8(*half_pixel_centers as u8);
        }
        Op::Logistic { input, output }
        | Op::HardSwish { input, output }
        | Op::Tanh { input, output }
        | Op::LogisticLut { input, output }
        | Op::Reshape { input, output }
        | Op::Quantize { input, output }
        | Op::Dequantize { input, output } => {
            w.id(*input);
            w.id(*output);
        }
        Op::DetectionPostProcess {
            boxes,
            scores,
            anchors,
            output,
            part,
            options: o,
        } => {
            w.id(*boxes);
            w.id(*scores);
            w.id(*anchors);
            w.id(*output);
            let tag = DetectionPart::ALL.iter().position(|p| p == part);
            w.u8(tag.unwrap_or(0) as u8);
            w.size(o.max_detections);
            w.size(o.max_classes_per_detection);
            w.size(o.detections_per_class);
            w.u8(o.use_regular_nms as u8);
            w.f32(o.nms_score_threshold);
            w.f32(o.nms_iou_threshold);
            w.size(o.num_classes);
            for v in [o.y_scale, o.x_scale, o.h_scale, o.w_scale] {
                w.f32(v);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A cursor over `bytes[pos..end]`; offsets are file offsets. Invariant: `pos <= end <=
/// bytes.len()`, so every read is bounds-checked against `end` and none can panic.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn truncated(&self, needed: u64) -> FormatError {
        FormatError::Truncated {
            offset: self.pos as u64,
            needed,
            available: self.remaining() as u64,
        }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], FormatError> {
        if n > self.remaining() as u64 {
            return Err(self.truncated(n));
        }
        let n = n as usize; // fits: n <= remaining
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A reader over the next `n` bytes, which this one skips.
    fn sub(&mut self, n: u64) -> Result<Reader<'a>, FormatError> {
        let start = self.pos;
        self.take(n)?;
        Ok(Reader {
            bytes: self.bytes,
            pos: start,
            end: self.pos,
        })
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, FormatError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    fn f32(&mut self) -> Result<f32, FormatError> {
        Ok(f32::from_bits(self.u32()?))
    }

    /// A u64 size or attribute as `usize` (only fails where `usize` is narrower than 64 bits).
    fn size(&mut self) -> Result<usize, FormatError> {
        let at = self.pos as u64;
        let v = self.u64()?;
        usize::try_from(v).map_err(|_| FormatError::Malformed {
            offset: at,
            message: format!("value {v} does not fit this platform's usize"),
        })
    }

    /// Reads a u32 item count, refusing it unless `count` items of at least `min_len` bytes
    /// each fit in what remains: the guard that comes before any allocation sized by the file.
    fn count(&mut self, min_len: u64) -> Result<usize, FormatError> {
        let count = self.u32()? as u64;
        let needed = count.saturating_mul(min_len);
        if needed > self.remaining() as u64 {
            return Err(self.truncated(needed));
        }
        Ok(count as usize)
    }
}

/// Where a constant's data lies, as its tensor record declares.
struct DataRef {
    tensor: usize,
    offset: u64,
    len: u64,
}

struct Decoded {
    tensors: Vec<Tensor>,
    ops: Vec<Op>,
    inputs: Vec<TensorId>,
    outputs: Vec<TensorId>,
    metadata: Metadata,
}

/// Decodes an `.intq` file and validates the graph it holds. Structural problems are
/// [`EngineError::Format`]; a well-formed file whose graph is invalid is [`EngineError::Graph`].
pub fn from_bytes(bytes: &[u8]) -> Result<Graph, EngineError> {
    let d = decode(bytes)?;
    Ok(Graph::new(d.tensors, d.ops, d.inputs, d.outputs)?.with_metadata(d.metadata)?)
}

fn decode(bytes: &[u8]) -> Result<Decoded, FormatError> {
    // A file shorter than the magic is "truncated" only if what it has matches the magic.
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if head != &MAGIC[..head.len()] {
        return Err(FormatError::BadMagic {
            found: head.to_vec(),
        });
    }
    let mut r = Reader {
        bytes,
        pos: 0,
        end: bytes.len(),
    };
    r.take(MAGIC.len() as u64)?;
    let major = r.u16()?;
    let minor = r.u16()?;
    if major != VERSION_MAJOR {
        return Err(FormatError::UnsupportedVersion {
            major,
            minor,
            supported: VERSION_MAJOR,
        });
    }
    let stored_crc = r.u32()?;
    let payload_len = r.u64()?;
    let reserved_at = r.pos as u64;
    if r.array::<8>()? != [0; 8] {
        return Err(FormatError::Malformed {
            offset: reserved_at,
            message: "reserved header bytes 24..32 are not zero".into(),
        });
    }
    let available = r.remaining() as u64;
    if payload_len > available {
        return Err(r.truncated(payload_len));
    }
    if payload_len < available {
        return Err(FormatError::TrailingBytes {
            offset: HEADER_LEN as u64 + payload_len,
            count: available - payload_len,
        });
    }
    let computed = crc32(&bytes[HEADER_LEN..]);
    if computed != stored_crc {
        return Err(FormatError::ChecksumMismatch {
            stored: stored_crc,
            computed,
        });
    }

    let tensor_count = r.count(MIN_TENSOR_RECORD)?;
    let mut tensors = Vec::with_capacity(tensor_count);
    let mut data_refs = Vec::new();
    for i in 0..tensor_count {
        let (tensor, data) = read_tensor(&mut r, i as u32)?;
        tensors.push(tensor);
        data_refs.extend(data);
    }
    // tensor_count came from a u32, so it fits one.
    let tensor_count = tensor_count as u32;

    let inputs = read_graph_ids(&mut r, "input", tensor_count)?;
    let outputs = read_graph_ids(&mut r, "output", tensor_count)?;

    let op_count = r.count(MIN_OP_RECORD)?;
    let mut ops = Vec::with_capacity(op_count);
    for index in 0..op_count {
        ops.push(read_op(&mut r, index, tensor_count)?);
    }
    let metadata = if minor >= 3 {
        read_metadata(&mut r)?
    } else {
        Metadata::new()
    };

    for d in data_refs {
        let t = &tensors[d.tensor];
        let bad_data = |message: String| FormatError::BadData {
            tensor: d.tensor as u32,
            name: t.name.clone(),
            message,
        };
        let expected = align_up(r.pos, DATA_ALIGN).unwrap_or(usize::MAX) as u64;
        if d.offset != expected {
            return Err(bad_data(format!(
                "its record places the data at offset {}, but it must start at {expected}, the \
                 first {DATA_ALIGN}-byte boundary after the previous section",
                d.offset
            )));
        }
        let pad_at = r.pos as u64;
        if r.take(expected - pad_at)?.iter().any(|&b| b != 0) {
            return Err(FormatError::Malformed {
                offset: pad_at,
                message: format!("padding before the data of tensor {} is not zero", d.tensor),
            });
        }
        let raw = r.take(d.len)?;
        let data = decode_data(t.dtype, raw);
        tensors[d.tensor].data = Some(data);
    }

    if r.remaining() != 0 {
        return Err(FormatError::TrailingBytes {
            offset: r.pos as u64,
            count: r.remaining() as u64,
        });
    }
    Ok(Decoded {
        tensors,
        ops,
        inputs,
        outputs,
        metadata,
    })
}

/// The metadata section: a count, then per entry a key and a value, each a length and UTF-8
/// bytes; keys strictly ascending, so every map has one encoding.
fn read_metadata(r: &mut Reader) -> Result<Metadata, FormatError> {
    let count = r.count(MIN_METADATA_RECORD)?;
    let mut metadata = Metadata::new();
    let mut previous: Option<String> = None;
    for index in 0..count {
        let at = r.pos as u64;
        let key = read_text(r, index, "key")?;
        let value = read_text(r, index, "value")?;
        let malformed = |message: String| FormatError::Malformed {
            offset: at,
            message,
        };
        if key.is_empty() || key.len() > MAX_METADATA_KEY {
            return Err(malformed(format!(
                "metadata entry {index}: a key must have 1 to {MAX_METADATA_KEY} bytes, not {}",
                key.len()
            )));
        }
        if previous.as_ref().is_some_and(|p| *p >= key) {
            return Err(malformed(format!(
                "metadata entry {index}: key '{key}' is not after the previous key in byte order \
                 (keys are sorted and distinct)"
            )));
        }
        previous = Some(key.clone());
        metadata.insert(key, value);
    }
    Ok(metadata)
}

fn read_text(r: &mut Reader, index: usize, what: &str) -> Result<String, FormatError> {
    let at = r.pos as u64;
    let len = r.count(1)?;
    let raw = r.take(len as u64)?;
    String::from_utf8(raw.to_vec()).map_err(|e| FormatError::Malformed {
        offset: at,
        message: format!(
            "metadata entry {index}: the {what} is not valid UTF-8 (bad byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

fn read_tensor(r: &mut Reader, index: u32) -> Result<(Tensor, Option<DataRef>), FormatError> {
    let name_len = r.u32()?;
    let name_at = r.pos as u64;
    let raw = r.take(name_len as u64)?;
    let name = match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(e) => {
            return Err(FormatError::InvalidName {
                tensor: index,
                offset: name_at + e.valid_up_to() as u64,
            })
        }
    };
    let dtype_raw = r.u8()?;
    let rank = r.u8()? as usize;
    let quant_tag = r.u8()?;
    let data_flag_at = r.pos as u64;
    let data_flag = r.u8()?;

    let Some(dtype) = dtype_of_tag(dtype_raw) else {
        return Err(FormatError::UnknownDType {
            tensor: index,
            name,
            tag: dtype_raw,
        });
    };
    let absurd = |name: &str, reason: String| FormatError::AbsurdDimensions {
        tensor: index,
        name: name.to_owned(),
        reason,
    };
    if rank > MAX_RANK {
        return Err(absurd(
            &name,
            format!("rank {rank} exceeds the maximum of {MAX_RANK}"),
        ));
    }
    let mut dims = [0u64; MAX_RANK];
    for d in dims.iter_mut().take(rank) {
        *d = r.u64()?;
    }
    let dims = &dims[..rank];
    // Checked even for activations, which carry no data: a planner allocates for them.
    let mut elements: Option<u64> = Some(1);
    for &d in dims {
        if d > MAX_ELEMENTS {
            return Err(absurd(
                &name,
                format!("dimension {d} of shape {dims:?} exceeds 2^31"),
            ));
        }
        elements = elements.and_then(|e| e.checked_mul(d));
    }
    let elements = match elements {
        Some(e) if e <= MAX_ELEMENTS => e,
        Some(e) => {
            return Err(absurd(
                &name,
                format!("shape {dims:?} has {e} elements, more than 2^31"),
            ))
        }
        None => {
            return Err(absurd(
                &name,
                format!("the element count of shape {dims:?} overflows 64 bits"),
            ))
        }
    };
    // Each dimension is at most 2^31, which fits every usize this crate builds for (32 bits+).
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();

    let mut code_range = None;
    let quant = match quant_tag {
        QUANT_NONE => None,
        QUANT_PER_TENSOR | QUANT_PER_TENSOR_CODES => {
            let scale = r.f32()?;
            let zero_point = r.i32()?;
            if quant_tag == QUANT_PER_TENSOR_CODES {
                code_range = Some((r.i32()?, r.i32()?));
            }
            Some(Quant::PerTensor(QuantParams { scale, zero_point }))
        }
        QUANT_PER_CHANNEL => {
            let axis = r.size()?;
            let n = r.count(CHANNEL_PARAMS_LEN)?;
            let mut scales = Vec::with_capacity(n);
            for _ in 0..n {
                scales.push(r.f32()?);
            }
            let mut zero_points = Vec::with_capacity(n);
            for _ in 0..n {
                zero_points.push(r.i32()?);
            }
            let params = ChannelParams::new(scales, zero_points, axis).map_err(|e| {
                FormatError::BadQuant {
                    tensor: index,
                    name: name.clone(),
                    message: e.to_string(),
                }
            })?;
            Some(Quant::PerChannel(params))
        }
        tag => {
            return Err(FormatError::UnknownQuant {
                tensor: index,
                name,
                tag,
            })
        }
    };

    let data = match data_flag {
        0 => None,
        1 => {
            let offset = r.u64()?;
            let len = r.u64()?;
            let expected = elements * dtype.size_bytes() as u64;
            if len != expected {
                return Err(FormatError::BadData {
                    tensor: index,
                    name,
                    message: format!(
                        "its record declares {len} bytes, but {elements} {dtype} elements take \
                         {expected}"
                    ),
                });
            }
            Some(DataRef {
                tensor: index as usize,
                offset,
                len,
            })
        }
        v => {
            return Err(FormatError::Malformed {
                offset: data_flag_at,
                message: format!("tensor {index} ('{name}'): data flag {v} is neither 0 nor 1"),
            })
        }
    };
    let tensor = Tensor {
        name,
        dtype,
        shape,
        quant,
        code_range,
        data: None,
    };
    Ok((tensor, data))
}

fn decode_data(dtype: DType, raw: &[u8]) -> TensorData {
    let words = || {
        raw.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    };
    match dtype {
        DType::U8 => TensorData::U8(raw.to_vec()),
        DType::I8 => TensorData::I8(raw.iter().map(|&b| b as i8).collect()),
        DType::I32 => TensorData::I32(words().map(|w| w as i32).collect()),
        DType::F32 => TensorData::F32(words().map(f32::from_bits).collect()),
    }
}

fn read_graph_ids(
    r: &mut Reader,
    role: &'static str,
    tensor_count: u32,
) -> Result<Vec<TensorId>, FormatError> {
    let n = r.count(TENSOR_ID_LEN)?;
    let mut ids = Vec::with_capacity(n);
    for index in 0..n {
        let id = r.u32()?;
        if id >= tensor_count {
            return Err(FormatError::DanglingGraphTensor {
                role,
                index,
                id,
                tensor_count,
            });
        }
        ids.push(TensorId(id));
    }
    Ok(ids)
}

/// Reads the fields of one op's body, naming the op in its errors.
struct OpReader<'a> {
    r: Reader<'a>,
    op: usize,
    kind: OpKind,
    tensor_count: u32,
}

impl OpReader<'_> {
    fn id(&mut self) -> Result<TensorId, FormatError> {
        let id = self.r.u32()?;
        if id >= self.tensor_count {
            return Err(FormatError::DanglingTensorId {
                op: self.op,
                kind: self.kind,
                id,
                tensor_count: self.tensor_count,
            });
        }
        Ok(TensorId(id))
    }
    fn opt_id(&mut self) -> Result<Option<TensorId>, FormatError> {
        let at = self.r.pos;
        if self.r.u32()? == NO_TENSOR {
            return Ok(None);
        }
        self.r.pos = at;
        self.id().map(Some)
    }
    fn pair(&mut self) -> Result<[usize; 2], FormatError> {
        Ok([self.r.size()?, self.r.size()?])
    }
    fn padding(&mut self) -> Result<Padding, FormatError> {
        Ok(match self.r.u8()? {
            PADDING_SAME => Padding::Same,
            PADDING_VALID => Padding::Valid,
            PADDING_EXPLICIT => Padding::Explicit {
                top: self.r.size()?,
                bottom: self.r.size()?,
                left: self.r.size()?,
                right: self.r.size()?,
            },
            tag => {
                return Err(FormatError::UnknownPadding {
                    op: self.op,
                    kind: self.kind,
                    tag,
                })
            }
        })
    }
    fn activation(&mut self) -> Result<Activation, FormatError> {
        let tag = self.r.u8()?;
        activation_of_tag(tag).ok_or(FormatError::UnknownActivation {
            op: self.op,
            kind: self.kind,
            tag,
        })
    }
}

fn read_op(r: &mut Reader, index: usize, tensor_count: u32) -> Result<Op, FormatError> {
    let record_at = r.pos as u64;
    let tag = r.u32()?;
    let body_len = r.u32()?;
    let Some(&kind) = OP_TAGS.get(tag as usize) else {
        return Err(FormatError::UnknownOp {
            op: index,
            tag,
            offset: record_at,
        });
    };
    let mut b = OpReader {
        r: r.sub(body_len as u64)?,
        op: index,
        kind,
        tensor_count,
    };
    let op = match kind {
        OpKind::Gather => {
            let (input, output, axis) = (b.id()?, b.id()?, b.r.size()?);
            let n = b.r.count(8)?;
            let mut indices = Vec::with_capacity(n);
            for _ in 0..n {
                indices.push(b.r.size()?);
            }
            Op::Gather {
                input,
                output,
                axis,
                indices,
            }
        }
        OpKind::Sum | OpKind::ReduceMax => {
            let (input, output) = (b.id()?, b.id()?);
            let n = b.r.count(8)?;
            let mut axes = Vec::with_capacity(n);
            for _ in 0..n {
                axes.push(b.r.size()?);
            }
            let at = b.r.pos as u64;
            let keep_dims = match b.r.u8()? {
                0 => false,
                1 => true,
                v => {
                    return Err(FormatError::Malformed {
                        offset: at,
                        message: format!("op {index} ({kind}): keep_dims byte {v} is not 0 or 1"),
                    })
                }
            };
            if kind == OpKind::Sum {
                Op::Sum {
                    input,
                    output,
                    axes,
                    keep_dims,
                }
            } else {
                Op::ReduceMax {
                    input,
                    output,
                    axes,
                    keep_dims,
                }
            }
        }
        OpKind::ArgMax => Op::ArgMax {
            input: b.id()?,
            output: b.id()?,
            axis: b.r.size()?,
        },
        OpKind::L2Normalization => Op::L2Normalization {
            input: b.id()?,
            output: b.id()?,
        },
        OpKind::Conv2d => Op::Conv2d {
            input: b.id()?,
            filter: b.id()?,
            bias: b.opt_id()?,
            output: b.id()?,
            stride: b.pair()?,
            dilation: b.pair()?,
            padding: b.padding()?,
            activation: b.activation()?,
        },
        OpKind::DepthwiseConv2d => Op::DepthwiseConv2d {
            input: b.id()?,
            filter: b.id()?,
            bias: b.opt_id()?,
            output: b.id()?,
            stride: b.pair()?,
            dilation: b.pair()?,
            padding: b.padding()?,
            depth_multiplier: b.r.size()?,
            activation: b.activation()?,
        },
        OpKind::FullyConnected => Op::FullyConnected {
            input: b.id()?,
            weights: b.id()?,
            bias: b.opt_id()?,
            output: b.id()?,
            activation: b.activation()?,
        },
        OpKind::Add => Op::Add {
            lhs: b.id()?,
            rhs: b.id()?,
            output: b.id()?,
            activation: b.activation()?,
        },
        OpKind::AveragePool2d => Op::AveragePool2d {
            input: b.id()?,
            output: b.id()?,
            filter: b.pair()?,
            stride: b.pair()?,
            padding: b.padding()?,
            activation: b.activation()?,
        },
        OpKind::MaxPool2d => Op::MaxPool2d {
            input: b.id()?,
            output: b.id()?,
            filter: b.pair()?,
            stride: b.pair()?,
            padding: b.padding()?,
            activation: b.activation()?,
        },
        OpKind::Concat => {
            let n = b.r.count(TENSOR_ID_LEN)?;
            let mut inputs = Vec::with_capacity(n);
            for _ in 0..n {
                inputs.push(b.id()?);
            }
            Op::Concat {
                inputs,
                output: b.id()?,
                axis: b.r.size()?,
            }
        }
        OpKind::Logistic => Op::Logistic {
            input: b.id()?,
            output: b.id()?,
        },
        OpKind::Softmax => Op::Softmax {
            input: b.id()?,
            output: b.id()?,
            beta: b.r.f32()?,
        },
        OpKind::Reshape => Op::Reshape {
            input: b.id()?,
            output: b.id()?,
        },
        OpKind::Quantize => Op::Quantize {
            input: b.id()?,
            output: b.id()?,
        },
        OpKind::Dequantize => Op::Dequantize {
            input: b.id()?,
            output: b.id()?,
        },
        OpKind::FullyConnectedF64 => Op::FullyConnectedF64 {
            input: b.id()?,
            weights: b.id()?,
            bias: b.opt_id()?,
            output: b.id()?,
            activation: b.activation()?,
        },
        OpKind::LogisticLut => Op::LogisticLut {
            input: b.id()?,
            output: b.id()?,
        },
        OpKind::Pad => {
            let (input, output) = (b.id()?, b.id()?);
            let n = b.r.count(16)?;
            let mut paddings = Vec::with_capacity(n);
            for _ in 0..n {
                paddings.push(b.pair()?);
            }
            Op::Pad {
                input,
                output,
                paddings,
            }
        }
        OpKind::Mean => {
            let (input, output) = (b.id()?, b.id()?);
            let n = b.r.count(8)?;
            let mut axes = Vec::with_capacity(n);
            for _ in 0..n {
                axes.push(b.r.size()?);
            }
            let at = b.r.pos as u64;
            let keep_dims = match b.r.u8()? {
                0 => false,
                1 => true,
                v => {
                    return Err(FormatError::Malformed {
                        offset: at,
                        message: format!("op {index} (Mean): keep_dims byte {v} is not 0 or 1"),
                    })
                }
            };
            Op::Mean {
                input,
                output,
                axes,
                keep_dims,
            }
        }
        OpKind::Mul => Op::Mul {
            lhs: b.id()?,
            rhs: b.id()?,
            output: b.id()?,
            activation: b.activation()?,
        },
        OpKind::Sub => Op::Sub {
            lhs: b.id()?,
            rhs: b.id()?,
            output: b.id()?,
            activation: b.activation()?,
        },
        OpKind::Relu => Op::Relu {
            input: b.id()?,
            output: b.id()?,
            activation: b.activation()?,
        },
        OpKind::LeakyRelu => Op::LeakyRelu {
            input: b.id()?,
            output: b.id()?,
            alpha: b.r.f32()?,
        },
        OpKind::HardSwish => Op::HardSwish {
            input: b.id()?,
            output: b.id()?,
        },
        OpKind::Tanh => Op::Tanh {
            input: b.id()?,
            output: b.id()?,
        },
        OpKind::Prelu => Op::Prelu {
            input: b.id()?,
            alpha: b.id()?,
            output: b.id()?,
        },
        OpKind::Maximum => Op::Maximum {
            lhs: b.id()?,
            rhs: b.id()?,
            output: b.id()?,
        },
        OpKind::Minimum => Op::Minimum {
            lhs: b.id()?,
            rhs: b.id()?,
            output: b.id()?,
        },
        OpKind::Transpose => {
            let (input, output) = (b.id()?, b.id()?);
            let n = b.r.count(8)?;
            let mut perm = Vec::with_capacity(n);
            for _ in 0..n {
                perm.push(b.r.size()?);
            }
            Op::Transpose {
                input,
                output,
                perm,
            }
        }
        OpKind::Slice => {
            let (input, output) = (b.id()?, b.id()?);
            let n = b.r.count(16)?;
            let (mut begin, mut strides) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for _ in 0..n {
                begin.push(b.r.size()?);
                strides.push(b.r.size()?);
            }
            Op::Slice {
                input,
                output,
                begin,
                strides,
            }
        }
        OpKind::TransposeConv => Op::TransposeConv {
            input: b.id()?,
            filter: b.id()?,
            bias: b.opt_id()?,
            output: b.id()?,
            stride: b.pair()?,
            padding: b.padding()?,
            activation: b.activation()?,
        },
        OpKind::SpaceToBatch => Op::SpaceToBatch {
            input: b.id()?,
            output: b.id()?,
            block: b.pair()?,
            paddings: [b.pair()?, b.pair()?],
        },
        OpKind::BatchToSpace => Op::BatchToSpace {
            input: b.id()?,
            output: b.id()?,
            block: b.pair()?,
            crops: [b.pair()?, b.pair()?],
        },
        OpKind::DetectionPostProcess => {
            let (boxes, scores, anchors, output) = (b.id()?, b.id()?, b.id()?, b.id()?);
            let byte = |r: &mut Reader, what: &str, max: u8| -> Result<u8, FormatError> {
                let at = r.pos as u64;
                match r.u8()? {
                    v if v <= max => Ok(v),
                    v => Err(FormatError::Malformed {
                        offset: at,
                        message: format!("op {index} ({kind}): {what} byte {v} is above {max}"),
                    }),
                }
            };
            let part = DetectionPart::ALL[byte(&mut b.r, "output part", 3)? as usize];
            let (max_detections, max_classes_per_detection, detections_per_class) =
                (b.r.size()?, b.r.size()?, b.r.size()?);
            let use_regular_nms = byte(&mut b.r, "use_regular_nms", 1)? == 1;
            let options = crate::DetectionOptions {
                max_detections,
                max_classes_per_detection,
                detections_per_class,
                use_regular_nms,
                nms_score_threshold: b.r.f32()?,
                nms_iou_threshold: b.r.f32()?,
                num_classes: b.r.size()?,
                y_scale: b.r.f32()?,
                x_scale: b.r.f32()?,
                h_scale: b.r.f32()?,
                w_scale: b.r.f32()?,
            };
            Op::DetectionPostProcess {
                boxes,
                scores,
                anchors,
                output,
                part,
                options,
            }
        }
        OpKind::DepthToSpace => Op::DepthToSpace {
            input: b.id()?,
            output: b.id()?,
            block: b.r.size()?,
        },
        OpKind::ResizeNearest | OpKind::ResizeBilinear => {
            let (input, output) = (b.id()?, b.id()?);
            let mut flag = |what: &str| -> Result<bool, FormatError> {
                let at = b.r.pos as u64;
                match b.r.u8()? {
                    0 => Ok(false),
                    1 => Ok(true),
                    v => Err(FormatError::Malformed {
                        offset: at,
                        message: format!("op {index} ({kind}): {what} byte {v} is not 0 or 1"),
                    }),
                }
            };
            let (align_corners, half_pixel_centers) =
                (flag("align_corners")?, flag("half_pixel_centers")?);
            if kind == OpKind::ResizeNearest {
                Op::ResizeNearest {
                    input,
                    output,
                    align_corners,
                    half_pixel_centers,
                }
            } else {
                Op::ResizeBilinear {
                    input,
                    output,
                    align_corners,
                    half_pixel_centers,
                }
            }
        }
    };
    if b.r.remaining() != 0 {
        return Err(FormatError::Malformed {
            offset: b.r.pos as u64,
            message: format!(
                "op {index} ({kind}): its record declares a {body_len}-byte body, {} bytes more \
                 than its fields take",
                b.r.remaining()
            ),
        });
    }
    Ok(op)
}

// ---------------------------------------------------------------------------------------------
// Files

/// Writes `graph` to `path` atomically: to a temporary file in the same directory, flushed to
/// disk, then renamed over `path`, so a crash or error never leaves a half-written model (the
/// old file, if any, stays as it was). Errors are [`EngineError::Io`] naming `path`.
pub fn save(graph: &Graph, path: &Path) -> Result<(), EngineError> {
    let bytes = to_bytes(graph);
    write_atomically(path, |f| f.write_all(&bytes)).map_err(|source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and decodes the model at `path`. Every error is [`EngineError::File`] naming `path`.
pub fn load(path: &Path) -> Result<Graph, EngineError> {
    let in_file = |source: EngineError| EngineError::File {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    // The I/O error already names the file; wrapping it in `File` would name it twice.
    let bytes = fs::read(path).map_err(|source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&bytes).map_err(in_file)
}

/// Distinguishes temporary files of concurrent saves within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates `.<name>.<pid>.<n>.tmp` next to `path`, lets `write` fill it, syncs it, and renames it
/// over `path`. On any failure the temporary file is removed.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let Some(file_name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path does not name a file",
        ));
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (tmp_path, mut file) = create_temp(dir, file_name)?;
    let result = write(&mut file).and_then(|()| file.sync_all());
    drop(file);
    let result = result.and_then(|()| fs::rename(&tmp_path, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    // Make the rename itself durable. Not every platform or file system can sync a directory,
    // and the model is already complete under its name, so this is best effort.
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn create_temp(dir: &Path, file_name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    let mut last_err = None;
    for _ in 0..100 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = OsString::from(".");
        name.push(file_name);
        name.push(format!(".{}.{n}.tmp", std::process::id()));
        let tmp_path = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
        {
            Ok(f) => return Ok((tmp_path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("could not create a temporary file")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_values() {
        // The catalogue check value of CRC-32/ISO-HDLC (zlib's crc32).
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        // Empty input: init 0xFFFFFFFF, no steps, final XOR -> 0.
        assert_eq!(crc32(b""), 0);
        // One zero byte: table[0xFF] = 0x2D02EF8D, XOR 0x00FFFFFF, final XOR -> 0xD202EF8D.
        assert_eq!(crc32(&[0]), 0xD202_EF8D);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn crc32_table_matches_bitwise_division() {
        // Independent model: the CRC computed one bit at a time, no table.
        fn bitwise(bytes: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &b in bytes {
                crc ^= b as u32;
                for _ in 0..8 {
                    let mask = (crc & 1).wrapping_neg();
                    crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
                }
            }
            !crc
        }
        let data: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0, 1, 2, 3, 7, 64, 999, 1000] {
            assert_eq!(crc32(&data[..len]), bitwise(&data[..len]), "len {len}");
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("intq-format-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_write_that_fails_midway_leaves_the_old_file_and_no_temporary() {
        let dir = temp_dir("midway");
        let path = dir.join("model.intq");
        fs::write(&path, b"old model").unwrap();
        let err = write_atomically(&path, |f| {
            f.write_all(b"half of a new mod")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(fs::read(&path).unwrap(), b"old model");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("model.intq")]);

        write_atomically(&path, |f| f.write_all(b"new model")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new model");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
