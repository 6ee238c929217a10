//! The imported float graph: typed ops in NCHW (as ONNX writes them), constants folded, shapes
//! inferred, nodes in topological order.
//!
//! Dimension 0 of every activation is the batch. Shapes are stored for a batch of one; every op
//! keeps the batch as its first dimension, so the graph runs at any batch (a Reshape that would
//! move the batch is refused at import).

use std::fmt;

/// Index of an activation in [`Graph::values`].
pub type ValueId = usize;

/// An activation: its ONNX name and shape at batch 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A 2-D convolution (dense, depthwise or grouped), weights OIHW.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    pub weight: Vec<f32>,
    /// `[out channels, in channels / groups, kernel height, kernel width]`.
    pub weight_dims: [usize; 4],
    pub bias: Option<Vec<f32>>,
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Explicit zero padding `[top, left, bottom, right]` (auto_pad resolved).
    pub pads: [usize; 4],
    pub groups: usize,
}

/// A 2-D transposed convolution (ONNX ConvTranspose with group 1 and no dilation): input pixel
/// `(iy, ix)` adds `x · W[c, k, fy, fx]` to output pixel `(iy s_h - top + fy, ix s_w - left + fx)`,
/// weights IOHW as ONNX stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvTranspose {
    pub weight: Vec<f32>,
    /// `[in channels, out channels, kernel height, kernel width]`.
    pub weight_dims: [usize; 4],
    pub bias: Option<Vec<f32>>,
    pub stride: [usize; 2],
    /// Rows and columns cut from the full output `[top, left, bottom, right]` (auto_pad and
    /// output_shape resolved); `output_padding` rows and columns are added at the bottom and right
    /// before the cut.
    pub pads: [usize; 4],
    pub output_padding: [usize; 2],
}

/// A 2-D pooling window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pool {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Output size rounded up (MaxPool only); windows starting in the bottom/right padding are
    /// dropped as ONNX Runtime and PyTorch do.
    pub ceil_mode: bool,
    /// AveragePool: divide by the whole window, padding included, instead of the inside part.
    pub count_include_pad: bool,
}

/// The arithmetic of [`Op::ConstArith`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

impl Arith {
    pub fn name(self) -> &'static str {
        match self {
            Arith::Add => "Add",
            Arith::Sub => "Sub",
            Arith::Mul => "Mul",
            Arith::Div => "Div",
        }
    }

    /// `x (op) c`, or `c (op) x` when `reversed`, in f32 as ONNX Runtime computes it.
    pub fn apply(self, x: f32, c: f32, reversed: bool) -> f32 {
        let (a, b) = if reversed { (c, x) } else { (x, c) };
        match self {
            Arith::Add => a + b,
            Arith::Sub => a - b,
            Arith::Mul => a * b,
            Arith::Div => a / b,
        }
    }
}

/// An op of the imported graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Conv(Conv),
    ConvTranspose(ConvTranspose),
    /// Inference-form batch norm, kept as its own node so QAT can fold it into the conv before.
    BatchNorm {
        scale: Vec<f32>,
        bias: Vec<f32>,
        mean: Vec<f32>,
        var: Vec<f32>,
        epsilon: f32,
    },
    Relu,
    /// `x · relu6(x + 3) / 6` (ONNX HardSwish, opset 14).
    HardSwish,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `clamp(alpha x + beta, 0, 1)`. `x * HardSigmoid(x)` with MobileNetV3's `alpha = 1/6`,
    /// `beta = 1/2` (how torch exports Hardswish below opset 14) imports as one HardSwish.
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    Clip {
        min: f32,
        max: f32,
    },
    /// Elementwise sum of two activations of the same shape.
    Add,
    /// Elementwise difference of two activations of the same shape.
    Sub,
    /// Elementwise maximum of two activations of the same shape.
    Maximum,
    /// Elementwise minimum of two activations of the same shape.
    Minimum,
    /// `x` where `x >= 0`, else `alpha x`.
    LeakyRelu {
        alpha: f32,
    },
    /// Hyperbolic tangent.
    Tanh,
    /// `x` where `x >= 0`, else `slope x`, one slope for all or one per channel (axis 1).
    Prelu {
        slope: Vec<f32>,
    },
    /// Axis permutation of an activation, the batch staying first (`perm[0] == 0`).
    Transpose {
        perm: Vec<usize>,
    },
    /// Nearest-neighbour resize of H and W (NCHW): output row `y` is input row `src_h[y]`,
    /// output column `x` input column `src_w[x]` (ONNX Resize's coordinate transformation and
    /// nearest mode, resolved at import).
    ResizeNearest {
        src_h: Vec<usize>,
        src_w: Vec<usize>,
    },
    /// Bilinear resize of H and W (NCHW, ONNX Resize mode linear): output row `y` interpolates
    /// the input at row position `pos_h[y]`, output column `x` at column position `pos_w[x]`
    /// (ONNX's coordinate transformation resolved at import, in f32 as ONNX Runtime computes
    /// it; positions outside the picture clamp to its edge).
    ResizeLinear {
        pos_h: Vec<f32>,
        pos_w: Vec<f32>,
        /// The ONNX attribute the positions came from, for messages.
        coordinate_transformation_mode: String,
    },
    /// Elementwise product of two activations: the second of the first's shape, or `[N, C, 1, 1]`
    /// broadcast over H and W (squeeze-and-excitation's channel weights).
    Mul,
    /// Join along `axis` (never 0, the batch).
    Concat {
        axis: usize,
    },
    GlobalAveragePool,
    AveragePool(Pool),
    MaxPool(Pool),
    /// To `[batch, rest]`.
    Flatten,
    /// To `[batch] ++ shape`.
    Reshape {
        shape: Vec<usize>,
    },
    /// `y = x W^T + b` on `[batch, in]`; `weight` is `[out][in]` (Gemm with its alpha, beta and
    /// transposes applied, or MatMul with a constant weight and a following constant Add).
    Linear {
        weight: Vec<f32>,
        in_features: usize,
        out_features: usize,
        bias: Option<Vec<f32>>,
    },
    /// Constant padding: `pads[d] = (before, after)` for every dimension (the batch's is (0, 0)).
    Pad {
        pads: Vec<(usize, usize)>,
        value: f32,
    },
    /// Elementwise arithmetic of an activation with a constant of one value per channel (axis 1)
    /// or one for all: `x + c`, `x - c`, `c - x` (`reversed`), `x * c` or `x / c`. At a graph's
    /// start this is the input preprocessing some exporters bake in (ImageNet's `(x - m) / s`).
    ConstArith {
        arith: Arith,
        /// One value, or one per channel.
        value: Vec<f32>,
        /// The constant is the first operand (`c - x`; `c + x` and `c * x` read as `x + c`,
        /// `x * c`).
        reversed: bool,
    },
    /// Softmax or LogSoftmax, only at the end of the graph (never inside the trained part).
    /// `coerce_2d`: opsets below 13 normalize over all dimensions from `axis` on.
    Softmax {
        axis: usize,
        log: bool,
        coerce_2d: bool,
    },
}

impl Op {
    /// The op's name as intq reports it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(c) if c.groups == 1 => "Conv",
            Op::Conv(c) if c.groups == c.weight_dims[0] && c.weight_dims[1] == 1 => {
                "Conv(depthwise)"
            }
            Op::Conv(_) => "Conv(grouped)",
            Op::ConvTranspose(_) => "ConvTranspose",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Relu => "Relu",
            Op::HardSwish => "HardSwish",
            Op::Sigmoid => "Sigmoid",
            Op::HardSigmoid { .. } => "HardSigmoid",
            Op::Clip { .. } => "Clip",
            Op::Add => "Add",
            Op::Sub => "Sub",
            Op::Maximum => "Max",
            Op::Minimum => "Min",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::Tanh => "Tanh",
            Op::Prelu { .. } => "PRelu",
            Op::Transpose { .. } => "Transpose",
            Op::ResizeNearest { .. } => "Resize(nearest)",
            Op::ResizeLinear { .. } => "Resize(linear)",
            Op::Mul => "Mul",
            Op::Concat { .. } => "Concat",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::AveragePool(_) => "AveragePool",
            Op::MaxPool(_) => "MaxPool",
            Op::Flatten => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Linear { .. } => "Linear",
            Op::Pad { .. } => "Pad",
            Op::ConstArith { arith, .. } => match arith {
                Arith::Add => "Add(constant)",
                Arith::Sub => "Sub(constant)",
                Arith::Mul => "Mul(constant)",
                Arith::Div => "Div(constant)",
            },
            Op::Softmax { log: false, .. } => "Softmax",
            Op::Softmax { log: true, .. } => "LogSoftmax",
        }
    }

    /// Number of f32 parameters the op holds.
    pub fn param_count(&self) -> usize {
        match self {
            Op::Conv(c) => c.weight.len() + c.bias.as_ref().map_or(0, Vec::len),
            Op::ConvTranspose(c) => c.weight.len() + c.bias.as_ref().map_or(0, Vec::len),
            Op::BatchNorm { scale, .. } => 4 * scale.len(),
            Op::Linear { weight, bias, .. } => weight.len() + bias.as_ref().map_or(0, Vec::len),
            Op::Prelu { slope } => slope.len(),
            _ => 0,
        }
    }
}

/// The two input indices and the weight of the second that linear interpolation at each of
/// `pos` (positions along an axis of `n_in` elements, [`Op::ResizeLinear`]) takes, as ONNX
/// Runtime takes them: the position clamped to `[0, n_in - 1]`, the lower index its floor.
pub fn linear_taps(pos: &[f32], n_in: usize) -> Vec<(usize, usize, f32)> {
    let last = n_in.saturating_sub(1);
    pos.iter()
        .map(|&v| {
            let v = v.clamp(0.0, last as f32);
            let lo = (v.floor() as usize).min(last);
            let hi = (lo + 1).min(last);
            (lo, hi, if lo == hi { 0.0 } else { v - lo as f32 })
        })
        .collect()
}

/// A node: its ONNX name (or a made-up one where the file had none), the ONNX op it came from,
/// the op, its activation inputs and its output.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub onnx_op: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
}

/// The imported graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub values: Vec<Value>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// Topological order.
    pub nodes: Vec<Node>,
    /// The default-domain opset of the file.
    pub opset: i64,
    /// `producer_name producer_version` from the file.
    pub producer: String,
}

impl Graph {
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id]
    }

    /// The node producing `id`, if any (graph inputs have none).
    pub fn producer(&self, id: ValueId) -> Option<&Node> {
        self.nodes.iter().find(|n| n.output == id)
    }

    /// Total f32 parameters.
    pub fn param_count(&self) -> usize {
        self.nodes.iter().map(|n| n.op.param_count()).sum()
    }
}

impl fmt::Display for Graph {
    /// A readable listing: inputs, outputs, one line per node with its output shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = |id: ValueId| {
            let s = &self.values[id].shape;
            let mut out = String::from("[N");
            for d in &s[1..] {
                out.push_str(&format!(", {d}"));
            }
            out + "]"
        };
        writeln!(
            f,
            "opset {}, producer {:?}, {} nodes, {} parameters",
            self.opset,
            self.producer,
            self.nodes.len(),
            self.param_count()
        )?;
        writeln!(f, "inputs:")?;
        for &i in &self.inputs {
            writeln!(f, "  {} {} f32", self.values[i].name, shape(i))?;
        }
        writeln!(f, "outputs:")?;
        for &o in &self.outputs {
            writeln!(f, "  {} {} f32", self.values[o].name, shape(o))?;
        }
        writeln!(f, "nodes:")?;
        for (k, n) in self.nodes.iter().enumerate() {
            let ins: Vec<&str> = n
                .inputs
                .iter()
                .map(|&i| self.values[i].name.as_str())
                .collect();
            write!(f, "  #{k} {}", n.op.name())?;
            match &n.op {
                Op::Conv(c) => write!(
                    f,
                    " {}x{} stride {:?} dilation {:?} pads {:?} groups {}{}",
                    c.weight_dims[2],
                    c.weight_dims[3],
                    c.stride,
                    c.dilation,
                    c.pads,
                    c.groups,
                    if c.bias.is_some() { " +bias" } else { "" }
                )?,
                Op::ConvTranspose(c) => write!(
                    f,
                    " {}x{} stride {:?} pads {:?} output_padding {:?}{}",
                    c.weight_dims[2],
                    c.weight_dims[3],
                    c.stride,
                    c.pads,
                    c.output_padding,
                    if c.bias.is_some() { " +bias" } else { "" }
                )?,
                Op::Clip { min, max } => write!(f, " [{min}, {max}]")?,
                Op::AveragePool(p) | Op::MaxPool(p) => write!(
                    f,
                    " {}x{} stride {:?} pads {:?}",
                    p.kernel[0], p.kernel[1], p.stride, p.pads
                )?,
                Op::Linear {
                    in_features,
                    out_features,
                    bias,
                    ..
                } => write!(
                    f,
                    " {in_features} -> {out_features}{}",
                    if bias.is_some() { " +bias" } else { "" }
                )?,
                Op::Concat { axis } | Op::Softmax { axis, .. } => write!(f, " axis {axis}")?,
                _ => {}
            }
            writeln!(
                f,
                "  ({}) -> {} {}   [{} {:?}]",
                ins.join(", "),
                self.values[n.output].name,
                shape(n.output),
                n.onnx_op,
                n.name
            )?;
        }
        Ok(())
    }
}
