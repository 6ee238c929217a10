//! The graph IR: tensors (shape, type, quantization, optional constant data), ops, and the graph's
//! inputs and outputs. A [`Graph`] is validated when it is built; an invalid one never exists.

use crate::GraphError;
use intq_kernels::Padding;
use intq_quant::{ChannelParams, QuantParams};

/// Index of a tensor in [`Graph::tensors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub u32);

impl TensorId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for TensorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    U8,
    I8,
    I32,
    F32,
}

impl DType {
    pub fn size_bytes(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::I32 | DType::F32 => 4,
        }
    }
    /// The NumPy-style name (`uint8`, `int8`, `int32`, `float32`).
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::I32 => "int32",
            DType::F32 => "float32",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a tensor's codes map to reals.
#[derive(Debug, Clone, PartialEq)]
pub enum Quant {
    PerTensor(QuantParams),
    /// One `(S, Z)` per index of `axis` (conv: axis 0 of OHWI; depthwise: axis 3; FC: axis 0).
    PerChannel(ChannelParams),
}

/// The contents of a constant tensor, or a run-time tensor's value handed in or out.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    U8(Vec<u8>),
    I8(Vec<i8>),
    I32(Vec<i32>),
    F32(Vec<f32>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::U8(_) => DType::U8,
            TensorData::I8(_) => DType::I8,
            TensorData::I32(_) => DType::I32,
            TensorData::F32(_) => DType::F32,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            TensorData::U8(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::F32(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A zero-filled value of `dtype` with `len` elements.
    pub fn zeros(dtype: DType, len: usize) -> Self {
        match dtype {
            DType::U8 => TensorData::U8(vec![0; len]),
            DType::I8 => TensorData::I8(vec![0; len]),
            DType::I32 => TensorData::I32(vec![0; len]),
            DType::F32 => TensorData::F32(vec![0.0; len]),
        }
    }
}

/// A tensor of the graph. Constants (weights, bias) carry `data`; activations do not.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// `None` only for f32 tensors (the edges of a model) and for int32 bias without recorded
    /// params (their scale is implied: `S_in * S_w`).
    pub quant: Option<Quant>,
    /// Codes narrower than the dtype's: `Some((qmin, qmax))` for an activation of fewer than
    /// 8 bits (QAT at `--bits-a 4` trains with codes 0..=15). Every op that writes the tensor
    /// clamps to it, as training's fake quantization did. `None`: the dtype's whole range.
    pub code_range: Option<(i32, i32)>,
    pub data: Option<TensorData>,
}

impl Tensor {
    /// The codes the tensor may hold: its [`code_range`](Self::code_range), else the dtype's
    /// range; `None` for int32 and f32 tensors.
    pub fn code_limits(&self) -> Option<(i32, i32)> {
        self.code_range
            .or_else(|| crate::validate::code_range(self.dtype))
    }
    /// Number of elements (the product of the shape; 1 for a scalar).
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }
    /// Per-tensor params, if the tensor has them.
    pub fn params(&self) -> Option<QuantParams> {
        match &self.quant {
            Some(Quant::PerTensor(p)) => Some(*p),
            _ => None,
        }
    }
    pub fn is_constant(&self) -> bool {
        self.data.is_some()
    }
}

/// The activation fused into an op, applied as a clamp on output codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    None,
    Relu,
    Relu6,
    /// Clamp to [-1, 1] (TFLite's RELU_N1_TO_1).
    ReluN1To1,
}

/// An operation. Every op names its tensors by id; output shapes are stored on the output tensors
/// and checked against the shapes the op implies.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// NHWC input, OHWI filter, optional int32 bias `[out_c]`.
    Conv2d {
        input: TensorId,
        filter: TensorId,
        bias: Option<TensorId>,
        output: TensorId,
        stride: [usize; 2],
        dilation: [usize; 2],
        padding: Padding,
        activation: Activation,
    },
    /// NHWC input, `[1, kh, kw, in_c * depth_multiplier]` filter, optional int32 bias.
    DepthwiseConv2d {
        input: TensorId,
        filter: TensorId,
        bias: Option<TensorId>,
        output: TensorId,
        stride: [usize; 2],
        dilation: [usize; 2],
        padding: Padding,
        depth_multiplier: usize,
        activation: Activation,
    },
    /// Input of `batch * depth` elements (any rank), weights `[out, depth]`, output `[batch, out]`.
    FullyConnected {
        input: TensorId,
        weights: TensorId,
        bias: Option<TensorId>,
        output: TensorId,
        activation: Activation,
    },
    /// Elementwise sum with NumPy broadcasting.
    Add {
        lhs: TensorId,
        rhs: TensorId,
        output: TensorId,
        activation: Activation,
    },
    AveragePool2d {
        input: TensorId,
        output: TensorId,
        filter: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
        activation: Activation,
    },
    MaxPool2d {
        input: TensorId,
        output: TensorId,
        filter: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
        activation: Activation,
    },
    /// Concatenation along `axis` (non-negative, less than the rank).
    Concat {
        inputs: Vec<TensorId>,
        output: TensorId,
        axis: usize,
    },
    Logistic {
        input: TensorId,
        output: TensorId,
    },
    /// Softmax over the last axis of `beta * x`.
    Softmax {
        input: TensorId,
        output: TensorId,
        beta: f32,
    },
    /// Same elements, the output tensor's shape.
    Reshape {
        input: TensorId,
        output: TensorId,
    },
    /// f32 to codes, at the model's input edge.
    Quantize {
        input: TensorId,
        output: TensorId,
    },
    /// Codes to f32, at the model's output edge.
    Dequantize {
        input: TensorId,
        output: TensorId,
    },
    /// Fully connected with TFLite's reference requantization, `round(acc * M)` with `M` in f64,
    /// instead of the fixed-point multiplier (docs/spec.md §6.1). Operands as `FullyConnected`.
    FullyConnectedF64 {
        input: TensorId,
        weights: TensorId,
        bias: Option<TensorId>,
        output: TensorId,
        activation: Activation,
    },
    /// Logistic from TFLite's f32-built lookup table instead of the fixed-point routine
    /// (docs/spec.md §6.2). Operands as `Logistic`.
    LogisticLut {
        input: TensorId,
        output: TensorId,
    },
    /// Pads each axis with `[before, after]` elements of the output zero point (the code of
    /// 0.0); input and output share `(S, Z)`.
    Pad {
        input: TensorId,
        output: TensorId,
        paddings: Vec<[usize; 2]>,
    },
    /// Mean over `axes` (sorted, distinct), requantized to the output's `(S, Z)` as TFLite's
    /// reference MEAN; the output keeps the reduced axes as 1 when `keep_dims`, else drops them.
    Mean {
        input: TensorId,
        output: TensorId,
        axes: Vec<usize>,
        keep_dims: bool,
    },
    /// Elementwise product with NumPy broadcasting, requantized as TFLite's MUL
    /// (docs/spec.md §11.1).
    Mul {
        lhs: TensorId,
        rhs: TensorId,
        output: TensorId,
        activation: Activation,
    },
    /// Elementwise `lhs - rhs` with NumPy broadcasting, ADD's arithmetic (docs/spec.md §11.2).
    Sub {
        lhs: TensorId,
        rhs: TensorId,
        output: TensorId,
        activation: Activation,
    },
    /// A standalone RELU, RELU6 or RELU_N1_TO_1 (`activation`, never `None`): requantize to the
    /// output's `(S, Z)`, then clamp (docs/spec.md §11.3).
    Relu {
        input: TensorId,
        output: TensorId,
        activation: Activation,
    },
    /// `x` for `x >= 0`, else `alpha * x` (`alpha` finite, non-negative; docs/spec.md §11.4).
    LeakyRelu {
        input: TensorId,
        output: TensorId,
        alpha: f32,
    },
    /// `x * relu6(x + 3) / 6` in TFLite's int16 fixed point (docs/spec.md §11.5).
    HardSwish {
        input: TensorId,
        output: TensorId,
    },
    /// Hyperbolic tangent from TFLite's f32-built lookup table (docs/spec.md §11.6).
    Tanh {
        input: TensorId,
        output: TensorId,
    },
    /// NHWC resize of H and W to the output's, each output pixel a copy of its nearest source
    /// pixel (docs/spec.md §11.7); input and output share `(S, Z)`.
    ResizeNearest {
        input: TensorId,
        output: TensorId,
        align_corners: bool,
        half_pixel_centers: bool,
    },
    /// NHWC bilinear resize of H and W to the output's (docs/spec.md §11.8); input and output
    /// share `(S, Z)`; `align_corners` and `half_pixel_centers` are not both set.
    ResizeBilinear {
        input: TensorId,
        output: TensorId,
        align_corners: bool,
        half_pixel_centers: bool,
    },
    /// `x` for `x >= 0`, else `alpha * x`, with `alpha` a tensor broadcast onto the input
    /// (per-channel slopes; docs/spec.md §11.12).
    Prelu {
        input: TensorId,
        alpha: TensorId,
        output: TensorId,
    },
    /// Elementwise maximum of codes with NumPy broadcasting (rank up to 5); all three tensors
    /// share `(S, Z)` (docs/spec.md §11.9).
    Maximum {
        lhs: TensorId,
        rhs: TensorId,
        output: TensorId,
    },
    /// Elementwise minimum, as `Maximum`.
    Minimum {
        lhs: TensorId,
        rhs: TensorId,
        output: TensorId,
    },
    /// Output axis `a` is input axis `perm[a]` (docs/spec.md §11.10); `(S, Z)` shared.
    Transpose {
        input: TensorId,
        output: TensorId,
        perm: Vec<usize>,
    },
    /// `output[i] = input[begin + i * strides]` per axis, the output's shape giving the count
    /// (rank up to 5, strides at least 1; docs/spec.md §11.11); `(S, Z)` shared.
    Slice {
        input: TensorId,
        output: TensorId,
        begin: Vec<usize>,
        strides: Vec<usize>,
    },
    /// `output[o, j, i] = input[o, indices[j], i]` along `axis` with constant indices, each
    /// below the axis' size (docs/spec.md §11.17): the output's shape is the input's with
    /// `axis` replaced by the indices' shape; `(S, Z)` shared.
    Gather {
        input: TensorId,
        output: TensorId,
        axis: usize,
        indices: Vec<usize>,
    },
    /// Sum over `axes` (sorted, distinct) as TFLite's SUM (docs/spec.md §11.18); the output
    /// keeps the reduced axes as 1 when `keep_dims`, else drops them.
    Sum {
        input: TensorId,
        output: TensorId,
        axes: Vec<usize>,
        keep_dims: bool,
    },
    /// Largest code over `axes`, shaped as Sum's output (docs/spec.md §11.19); `(S, Z)`
    /// shared.
    ReduceMax {
        input: TensorId,
        output: TensorId,
        axes: Vec<usize>,
        keep_dims: bool,
    },
    /// Index of the largest code along `axis`, the first on ties (docs/spec.md §11.20): an
    /// int32 output of the input's shape without `axis`.
    ArgMax {
        input: TensorId,
        output: TensorId,
        axis: usize,
    },
    /// L2 normalization along the last axis (docs/spec.md §11.21); the output's
    /// `(S, Z)` is TFLite's fixed `(1/128, 128)` for uint8, `(1/128, 0)` for int8.
    L2Normalization {
        input: TensorId,
        output: TensorId,
    },
    /// One output of TFLite's `TFLite_Detection_PostProcess` (docs/spec.md §11): SSD box
    /// decoding against constant `anchors` `[A, 4]` and fast or regular non-max suppression, in
    /// f32 on the dequantized `boxes` `[1, A, >= 4]` and `scores` `[1, A, classes]` (uint8 or
    /// float32). The op's four outputs are four engine ops with the same operands, each writing
    /// its `part`.
    DetectionPostProcess {
        boxes: TensorId,
        scores: TensorId,
        anchors: TensorId,
        output: TensorId,
        part: DetectionPart,
        options: intq_kernels::reference::DetectionOptions,
    },
    /// NHWC transposed convolution (TFLite's TRANSPOSE_CONV): input `[N, H, W, C]`, OHWI filter
    /// `[O, kh, kw, C]`, optional int32 bias, output `[N, OH, OW, O]`, the output's size being
    /// part of the graph (docs/spec.md §11.13). SAME and VALID padding resolve against the output
    /// size as TFLite does; explicit padding gives top and left, and the output's size implies
    /// bottom and right.
    TransposeConv {
        input: TensorId,
        filter: TensorId,
        bias: Option<TensorId>,
        output: TensorId,
        stride: [usize; 2],
        padding: Padding,
        activation: Activation,
    },
    /// SPACE_TO_BATCH_ND on NHWC: `paddings` `[[top, bottom], [left, right]]` padded with the
    /// zero point, then each `block` cell moved into a batch of its own (docs/spec.md §11.14);
    /// `(S, Z)` shared.
    SpaceToBatch {
        input: TensorId,
        output: TensorId,
        block: [usize; 2],
        paddings: [[usize; 2]; 2],
    },
    /// BATCH_TO_SPACE_ND on NHWC, the inverse movement, then `crops` `[[top, bottom],
    /// [left, right]]` cut off (docs/spec.md §11.14); `(S, Z)` shared.
    BatchToSpace {
        input: TensorId,
        output: TensorId,
        block: [usize; 2],
        crops: [[usize; 2]; 2],
    },
    /// DEPTH_TO_SPACE on NHWC: `[N, H, W, C]` to `[N, H b, W b, C / b^2]` (docs/spec.md
    /// §11.15); `(S, Z)` shared.
    DepthToSpace {
        input: TensorId,
        output: TensorId,
        block: usize,
    },
}

/// Which output of `TFLite_Detection_PostProcess` a [`Op::DetectionPostProcess`] writes, in
/// TFLite's output order: boxes `[1, N, 4]`, classes `[1, N]`, scores `[1, N]`, count `[1]`
/// (float32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetectionPart {
    Boxes,
    Classes,
    Scores,
    Count,
}

impl DetectionPart {
    /// The four, in TFLite's output order.
    pub const ALL: [DetectionPart; 4] = [
        DetectionPart::Boxes,
        DetectionPart::Classes,
        DetectionPart::Scores,
        DetectionPart::Count,
    ];
    /// The output's shape for `n` detection entries.
    pub fn shape(self, n: usize) -> Vec<usize> {
        match self {
            DetectionPart::Boxes => vec![1, n, 4],
            DetectionPart::Classes | DetectionPart::Scores => vec![1, n],
            DetectionPart::Count => vec![1],
        }
    }
}

/// The kind of an op, without its operands: its name in messages and its tag in files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    Conv2d,
    DepthwiseConv2d,
    FullyConnected,
    Add,
    AveragePool2d,
    MaxPool2d,
    Concat,
    Logistic,
    Softmax,
    Reshape,
    Quantize,
    Dequantize,
    FullyConnectedF64,
    LogisticLut,
    Pad,
    Mean,
    Mul,
    Sub,
    Relu,
    LeakyRelu,
    HardSwish,
    Tanh,
    ResizeNearest,
    ResizeBilinear,
    Prelu,
    Maximum,
    Minimum,
    Transpose,
    Slice,
    DetectionPostProcess,
    TransposeConv,
    SpaceToBatch,
    BatchToSpace,
    DepthToSpace,
    Gather,
    Sum,
    ReduceMax,
    ArgMax,
    L2Normalization,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Conv2d => "Conv2d",
            OpKind::DepthwiseConv2d => "DepthwiseConv2d",
            OpKind::FullyConnected => "FullyConnected",
            OpKind::Add => "Add",
            OpKind::AveragePool2d => "AveragePool2d",
            OpKind::MaxPool2d => "MaxPool2d",
            OpKind::Concat => "Concat",
            OpKind::Logistic => "Logistic",
            OpKind::Softmax => "Softmax",
            OpKind::Reshape => "Reshape",
            OpKind::Quantize => "Quantize",
            OpKind::Dequantize => "Dequantize",
            OpKind::FullyConnectedF64 => "FullyConnectedF64",
            OpKind::LogisticLut => "LogisticLut",
            OpKind::Pad => "Pad",
            OpKind::Mean => "Mean",
            OpKind::Mul => "Mul",
            OpKind::Sub => "Sub",
            OpKind::Relu => "Relu",
            OpKind::LeakyRelu => "LeakyRelu",
            OpKind::HardSwish => "HardSwish",
            OpKind::Tanh => "Tanh",
            OpKind::ResizeNearest => "ResizeNearest",
            OpKind::ResizeBilinear => "ResizeBilinear",
            OpKind::Prelu => "Prelu",
            OpKind::Maximum => "Maximum",
            OpKind::Minimum => "Minimum",
            OpKind::Transpose => "Transpose",
            OpKind::Slice => "Slice",
            OpKind::Gather => "Gather",
            OpKind::Sum => "Sum",
            OpKind::ReduceMax => "ReduceMax",
            OpKind::ArgMax => "ArgMax",
            OpKind::L2Normalization => "L2Normalization",
            OpKind::DetectionPostProcess => "DetectionPostProcess",
            OpKind::TransposeConv => "TransposeConv",
            OpKind::SpaceToBatch => "SpaceToBatch",
            OpKind::BatchToSpace => "BatchToSpace",
            OpKind::DepthToSpace => "DepthToSpace",
        }
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Conv2d { .. } => OpKind::Conv2d,
            Op::DepthwiseConv2d { .. } => OpKind::DepthwiseConv2d,
            Op::FullyConnected { .. } => OpKind::FullyConnected,
            Op::Add { .. } => OpKind::Add,
            Op::AveragePool2d { .. } => OpKind::AveragePool2d,
            Op::MaxPool2d { .. } => OpKind::MaxPool2d,
            Op::Concat { .. } => OpKind::Concat,
            Op::Logistic { .. } => OpKind::Logistic,
            Op::Softmax { .. } => OpKind::Softmax,
            Op::Reshape { .. } => OpKind::Reshape,
            Op::Quantize { .. } => OpKind::Quantize,
            Op::Dequantize { .. } => OpKind::Dequantize,
            Op::FullyConnectedF64 { .. } => OpKind::FullyConnectedF64,
            Op::LogisticLut { .. } => OpKind::LogisticLut,
            Op::Pad { .. } => OpKind::Pad,
            Op::Mean { .. } => OpKind::Mean,
            Op::Mul { .. } => OpKind::Mul,
            Op::Sub { .. } => OpKind::Sub,
            Op::Relu { .. } => OpKind::Relu,
            Op::LeakyRelu { .. } => OpKind::LeakyRelu,
            Op::HardSwish { .. } => OpKind::HardSwish,
            Op::Tanh { .. } => OpKind::Tanh,
            Op::ResizeNearest { .. } => OpKind::ResizeNearest,
            Op::ResizeBilinear { .. } => OpKind::ResizeBilinear,
            Op::Prelu { .. } => OpKind::Prelu,
            Op::Maximum { .. } => OpKind::Maximum,
            Op::Minimum { .. } => OpKind::Minimum,
            Op::Transpose { .. } => OpKind::Transpose,
            Op::Slice { .. } => OpKind::Slice,
            Op::Gather { .. } => OpKind::Gather,
            Op::Sum { .. } => OpKind::Sum,
            Op::ReduceMax { .. } => OpKind::ReduceMax,
            Op::ArgMax { .. } => OpKind::ArgMax,
            Op::L2Normalization { .. } => OpKind::L2Normalization,
            Op::DetectionPostProcess { .. } => OpKind::DetectionPostProcess,
            Op::TransposeConv { .. } => OpKind::TransposeConv,
            Op::SpaceToBatch { .. } => OpKind::SpaceToBatch,
            Op::BatchToSpace { .. } => OpKind::BatchToSpace,
            Op::DepthToSpace { .. } => OpKind::DepthToSpace,
        }
    }

    /// The tensors this op reads, constants included, in operand order.
    pub fn inputs(&self) -> Vec<TensorId> {
        match self {
            Op::Conv2d {
                input,
                filter,
                bias,
                ..
            }
            | Op::DepthwiseConv2d {
                input,
                filter,
                bias,
                ..
            }
            | Op::TransposeConv {
                input,
                filter,
                bias,
                ..
            } => {
                let mut v = vec![*input, *filter];
                v.extend(bias);
                v
            }
            Op::FullyConnected {
                input,
                weights,
                bias,
                ..
            }
            | Op::FullyConnectedF64 {
                input,
                weights,
                bias,
                ..
            } => {
                let mut v = vec![*input, *weights];
                v.extend(bias);
                v
            }
            Op::Add { lhs, rhs, .. }
            | Op::Mul { lhs, rhs, .. }
            | Op::Sub { lhs, rhs, .. }
            | Op::Maximum { lhs, rhs, .. }
            | Op::Minimum { lhs, rhs, .. } => vec![*lhs, *rhs],
            Op::Prelu { input, alpha, .. } => vec![*input, *alpha],
            Op::DetectionPostProcess {
                boxes,
                scores,
                anchors,
                ..
            } => vec![*boxes, *scores, *anchors],
            Op::Concat { inputs, .. } => inputs.clone(),
            Op::AveragePool2d { input, .. }
            | Op::MaxPool2d { input, .. }
            | Op::Logistic { input, .. }
            | Op::LogisticLut { input, .. }
            | Op::Pad { input, .. }
            | Op::Mean { input, .. }
            | Op::Relu { input, .. }
            | Op::LeakyRelu { input, .. }
            | Op::HardSwish { input, .. }
            | Op::Tanh { input, .. }
            | Op::ResizeNearest { input, .. }
            | Op::ResizeBilinear { input, .. }
            | Op::Transpose { input, .. }
            | Op::Slice { input, .. }
            | Op::SpaceToBatch { input, .. }
            | Op::BatchToSpace { input, .. }
            | Op::DepthToSpace { input, .. }
            | Op::Softmax { input, .. }
            | Op::Reshape { input, .. }
            | Op::Quantize { input, .. }
            | Op::Dequantize { input, .. } => vec![*input],
            Op::Gather { input, .. }
            | Op::Sum { input, .. }
            | Op::ReduceMax { input, .. }
            | Op::ArgMax { input, .. }
            | Op::L2Normalization { input, .. } => vec![*input],
        }
    }

    /// The tensor this op writes.
    pub fn output(&self) -> TensorId {
        match self {
            Op::Gather { output, .. }
            | Op::Sum { output, .. }
            | Op::ReduceMax { output, .. }
            | Op::ArgMax { output, .. }
            | Op::L2Normalization { output, .. } => *output,
            Op::Conv2d { output, .. }
            | Op::DepthwiseConv2d { output, .. }
            | Op::TransposeConv { output, .. }
            | Op::SpaceToBatch { output, .. }
            | Op::BatchToSpace { output, .. }
            | Op::DepthToSpace { output, .. }
            | Op::FullyConnected { output, .. }
            | Op::Add { output, .. }
            | Op::AveragePool2d { output, .. }
            | Op::MaxPool2d { output, .. }
            | Op::Concat { output, .. }
            | Op::Logistic { output, .. }
            | Op::Softmax { output, .. }
            | Op::Reshape { output, .. }
            | Op::Quantize { output, .. }
            | Op::Dequantize { output, .. }
            | Op::FullyConnectedF64 { output, .. }
            | Op::LogisticLut { output, .. }
            | Op::Pad { output, .. }
            | Op::Mean { output, .. }
            | Op::Mul { output, .. }
            | Op::Sub { output, .. }
            | Op::Relu { output, .. }
            | Op::LeakyRelu { output, .. }
            | Op::HardSwish { output, .. }
            | Op::Tanh { output, .. }
            | Op::ResizeNearest { output, .. }
            | Op::ResizeBilinear { output, .. }
            | Op::Prelu { output, .. }
            | Op::Maximum { output, .. }
            | Op::Minimum { output, .. }
            | Op::Transpose { output, .. }
            | Op::Slice { output, .. }
            | Op::DetectionPostProcess { output, .. } => *output,
        }
    }
}

/// A validated graph. Build one with [`GraphBuilder`] or [`Graph::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    tensors: Vec<Tensor>,
    ops: Vec<Op>,
    inputs: Vec<TensorId>,
    outputs: Vec<TensorId>,
    metadata: Metadata,
}

/// Free-form `key → value` strings a model carries beside its graph: how its input was
/// preprocessed, its class names. The executors never read them. Keys are sorted, so a graph's
/// bytes do not depend on the order entries were added in.
pub type Metadata = std::collections::BTreeMap<String, String>;

impl Graph {
    /// Validates and builds a graph: every id in range, every shape, type and quantization
    /// parameter consistent with its op, each activation written once, no cycles.
    pub fn new(
        tensors: Vec<Tensor>,
        ops: Vec<Op>,
        inputs: Vec<TensorId>,
        outputs: Vec<TensorId>,
    ) -> Result<Graph, GraphError> {
        let graph = Graph {
            tensors,
            ops,
            inputs,
            outputs,
            metadata: Metadata::new(),
        };
        crate::validate::validate(&graph)?;
        crate::limits::check_accumulators(&graph)?;
        Ok(graph)
    }

    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }
    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.index()]
    }
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
    pub fn inputs(&self) -> &[TensorId] {
        &self.inputs
    }
    pub fn outputs(&self) -> &[TensorId] {
        &self.outputs
    }
    /// The graph's metadata (see [`Metadata`]).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// The graph with its metadata replaced by `metadata`; every key must have 1 to
    /// [`MAX_METADATA_KEY`](crate::format::MAX_METADATA_KEY) bytes.
    pub fn with_metadata(mut self, metadata: Metadata) -> Result<Graph, GraphError> {
        if let Some(bad) = metadata.keys().find(|k| !metadata_key_ok(k)) {
            return Err(bad_metadata_key(bad));
        }
        self.metadata = metadata;
        Ok(self)
    }
    /// Sets one metadata entry, replacing any earlier value of `key`.
    pub fn set_metadata(&mut self, key: &str, value: &str) -> Result<(), GraphError> {
        if !metadata_key_ok(key) {
            return Err(bad_metadata_key(key));
        }
        self.metadata.insert(key.into(), value.into());
        Ok(())
    }
    /// The tensor called `name`, if any.
    pub fn tensor_by_name(&self, name: &str) -> Option<TensorId> {
        self.tensors
            .iter()
            .position(|t| t.name == name)
            .map(|i| TensorId(i as u32))
    }
}

fn metadata_key_ok(key: &str) -> bool {
    (1..=crate::format::MAX_METADATA_KEY).contains(&key.len())
}

fn bad_metadata_key(key: &str) -> GraphError {
    GraphError::Graph(format!(
        "metadata key '{key}' has {} bytes; keys have 1 to {}",
        key.len(),
        crate::format::MAX_METADATA_KEY
    ))
}

/// Incremental construction of a [`Graph`]; validation happens in [`GraphBuilder::finish`].
#[derive(Debug, Default, Clone)]
pub struct GraphBuilder {
    tensors: Vec<Tensor>,
    ops: Vec<Op>,
    inputs: Vec<TensorId>,
    outputs: Vec<TensorId>,
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an activation (no data) tensor.
    pub fn tensor(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        quant: Option<Quant>,
    ) -> TensorId {
        self.push(Tensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            quant,
            code_range: None,
            data: None,
        })
    }

    /// The shape tensor `id` was made with. Panics if `id` is not this builder's.
    pub fn shape_of(&self, id: TensorId) -> &[usize] {
        &self.tensors[id.index()].shape
    }

    /// Narrows the codes of activation `id` to `qmin..=qmax` (see [`Tensor::code_range`]);
    /// [`finish`](Self::finish) checks the range. Panics if `id` is not this builder's.
    pub fn narrow_codes(&mut self, id: TensorId, qmin: i32, qmax: i32) -> &mut Self {
        self.tensors[id.index()].code_range = Some((qmin, qmax));
        self
    }

    /// Adds a constant tensor; its dtype is the data's.
    pub fn constant(
        &mut self,
        name: &str,
        shape: &[usize],
        quant: Option<Quant>,
        data: TensorData,
    ) -> TensorId {
        let dtype = data.dtype();
        self.push(Tensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            quant,
            code_range: None,
            data: Some(data),
        })
    }

    fn push(&mut self, t: Tensor) -> TensorId {
        self.tensors.push(t);
        TensorId(self.tensors.len() as u32 - 1)
    }

    pub fn op(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }
    pub fn input(&mut self, id: TensorId) -> &mut Self {
        self.inputs.push(id);
        self
    }
    pub fn output(&mut self, id: TensorId) -> &mut Self {
        self.outputs.push(id);
        self
    }

    pub fn finish(self) -> Result<Graph, GraphError> {
        Graph::new(self.tensors, self.ops, self.inputs, self.outputs)
    }
}
