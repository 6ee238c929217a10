//! `intq inspect`: a human-readable summary of a model's graph.

use anyhow::{Context, Result};
use intq_engine::{Activation, Graph, Model, Op, Padding, Quant, Tensor, TensorId};
use intq_tflite::import::UnsupportedOp;
use std::fmt::Write;
use std::path::Path;

/// What a `.tflite` file holds that intq cannot run: empty for a fully imported model.
#[derive(Default)]
pub struct LeftOut {
    /// The ops the importer lacks, in file order.
    pub ops: Vec<UnsupportedOp>,
    /// Every tensor left out, with the index in `ops` of an op it depends on.
    pub cut: Vec<(String, usize)>,
    /// The model's outputs that depend on an unsupported op.
    pub cut_outputs: Vec<String>,
}

impl LeftOut {
    /// The unsupported op `name` depends on, if it was left out.
    pub fn op_of(&self, name: &str) -> Option<&UnsupportedOp> {
        self.cut
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, u)| &self.ops[u])
    }
}

/// The label of an unsupported op in messages: index, name and operator code.
pub fn op_label(u: &UnsupportedOp) -> String {
    format!("op #{} {} (operator code {})", u.index, u.name, u.code)
}

/// Loads a `.intq` or `.tflite` model; a `.tflite` op intq lacks is left out with everything
/// that depends on it, so the rest can still be inspected and run.
pub fn load(path: &Path) -> Result<(Model, LeftOut)> {
    if !intq_tflite::is_tflite_path(path) {
        return Ok((crate::tflite_cmd::load_model(path)?, LeftOut::default()));
    }
    let p = intq_tflite::import::load_partial(path)?;
    let model = Model::new(p.graph)
        .with_context(|| format!("{}: planning the imported graph", path.display()))?;
    let left = LeftOut {
        ops: p.unsupported,
        cut: p.cut,
        cut_outputs: p.cut_outputs,
    };
    Ok((model, left))
}

pub fn inspect(path: &Path, all_tensors: bool) -> Result<()> {
    if crate::onnx_cmd::is_onnx(path) {
        return crate::onnx_cmd::inspect(path);
    }
    let (model, left) = load(path)?;
    let file_size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    print!(
        "{}",
        summary(model.graph(), &path.display().to_string(), file_size)
    );
    print!("{}", left_out_text(&left));
    if all_tensors {
        print!("{}", tensor_table(model.graph()));
    }
    Ok(())
}

/// The unsupported ops and the outputs they cut off; empty when there are none.
fn left_out_text(left: &LeftOut) -> String {
    let mut s = String::new();
    if left.ops.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "unsupported ops (left out with everything that depends on them; the outputs above \
         include the tensors they read):"
    );
    for u in &left.ops {
        let outs = u
            .outputs
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(s, "  {}  writes {outs}", op_label(u));
    }
    if !left.cut_outputs.is_empty() {
        let outs = left
            .cut_outputs
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(s, "  model outputs that depend on them: {outs}");
    }
    s
}

/// The whole report, as a string so tests can read it.
pub fn summary(graph: &Graph, name: &str, file_size: u64) -> String {
    let mut s = String::new();
    let tensors = graph.tensors();
    let const_bytes: usize = tensors
        .iter()
        .filter(|t| t.is_constant())
        .map(|t| t.num_elements() * t.dtype.size_bytes())
        .sum();
    let act_bytes: usize = tensors
        .iter()
        .filter(|t| !t.is_constant())
        .map(|t| t.num_elements() * t.dtype.size_bytes())
        .sum();
    let _ = writeln!(s, "model {name}: {file_size} bytes");
    let _ = writeln!(
        s,
        "  {} ops, {} tensors; constants {} bytes, activations {} bytes (before buffer reuse)",
        graph.ops().len(),
        tensors.len(),
        const_bytes,
        act_bytes
    );
    let _ = writeln!(s, "inputs:");
    for &id in graph.inputs() {
        let _ = writeln!(s, "  {}", tensor_line(graph.tensor(id)));
    }
    let _ = writeln!(s, "outputs:");
    for &id in graph.outputs() {
        let _ = writeln!(s, "  {}", tensor_line(graph.tensor(id)));
    }
    let _ = writeln!(s, "ops:");
    for (i, op) in graph.ops().iter().enumerate() {
        let _ = writeln!(s, "  #{i} {}{}", op.kind(), attributes(op));
        let inputs = op.inputs();
        for (role, id) in operand_roles(op).iter().zip(&inputs) {
            let _ = writeln!(s, "      {role:<7} {}", tensor_line(graph.tensor(*id)));
        }
        let _ = writeln!(
            s,
            "      {:<7} {}",
            "output",
            tensor_line(graph.tensor(op.output()))
        );
    }
    s
}

fn tensor_table(graph: &Graph) -> String {
    let mut s = String::from("tensors:\n");
    for (i, t) in graph.tensors().iter().enumerate() {
        let kind = if t.is_constant() { "const" } else { "act" };
        let _ = writeln!(
            s,
            "  {:>4} {kind:<5} {}",
            TensorId(i as u32),
            tensor_line(t)
        );
    }
    s
}

fn operand_roles(op: &Op) -> Vec<&'static str> {
    match op {
        Op::Conv2d { .. } | Op::DepthwiseConv2d { .. } => vec!["input", "filter", "bias"],
        Op::FullyConnected { .. } | Op::FullyConnectedF64 { .. } => {
            vec!["input", "weights", "bias"]
        }
        Op::Add { .. }
        | Op::Mul { .. }
        | Op::Sub { .. }
        | Op::Maximum { .. }
        | Op::Minimum { .. } => vec!["lhs", "rhs"],
        Op::Prelu { .. } => vec!["input", "alpha"],
        Op::DetectionPostProcess { .. } => vec!["boxes", "scores", "anchors"],
        Op::Concat { inputs, .. } => vec!["input"; inputs.len()],
        _ => vec!["input"],
    }
}

fn tensor_line(t: &Tensor) -> String {
    let dims = t
        .shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x");
    let bytes = t.num_elements() * t.dtype.size_bytes();
    // A narrowed activation (below 8 bits) says which codes it holds.
    let codes = match t.code_range {
        Some((lo, hi)) => format!(" codes [{lo}, {hi}]"),
        None => String::new(),
    };
    format!(
        "'{}' {} [{}] {}{codes}  ({} bytes)",
        t.name,
        t.dtype,
        dims,
        quant_text(&t.quant),
        bytes
    )
}

fn quant_text(q: &Option<Quant>) -> String {
    match q {
        None => "unquantized".into(),
        Some(Quant::PerTensor(p)) => format!("S={:.6e} Z={}", p.scale, p.zero_point),
        Some(Quant::PerChannel(c)) => {
            let (lo, hi) = c
                .scales()
                .iter()
                .fold((f32::INFINITY, 0f32), |(lo, hi), &s| (lo.min(s), hi.max(s)));
            let zs = c.zero_points();
            let zmin = zs.iter().min().unwrap_or(&0);
            let zmax = zs.iter().max().unwrap_or(&0);
            let z = if zmin == zmax {
                format!("Z={zmin}")
            } else {
                format!("Z in [{zmin}, {zmax}]")
            };
            format!(
                "per-channel(axis {}, {}) S in [{lo:.3e}, {hi:.3e}] {z}",
                c.axis(),
                c.len()
            )
        }
    }
}

fn padding_text(p: &Padding) -> String {
    match p {
        Padding::Same => "SAME".into(),
        Padding::Valid => "VALID".into(),
        Padding::Explicit {
            top,
            bottom,
            left,
            right,
        } => {
            format!("explicit(t{top} b{bottom} l{left} r{right})")
        }
    }
}

fn act_text(a: &Activation) -> &'static str {
    match a {
        Activation::None => "none",
        Activation::Relu => "relu",
        Activation::Relu6 => "relu6",
        Activation::ReluN1To1 => "relu_n1_to_1",
    }
}

fn attributes(op: &Op) -> String {
    match op {
        Op::Conv2d {
            stride,
            dilation,
            padding,
            activation,
            ..
        } => format!(
            "  stride {}x{} dilation {}x{} padding {} activation {}",
            stride[0],
            stride[1],
            dilation[0],
            dilation[1],
            padding_text(padding),
            act_text(activation)
        ),
        Op::DepthwiseConv2d {
            stride,
            dilation,
            padding,
            depth_multiplier,
            activation,
            ..
        } => {
            format!(
                "  stride {}x{} dilation {}x{} padding {} multiplier {} activation {}",
                stride[0],
                stride[1],
                dilation[0],
                dilation[1],
                padding_text(padding),
                depth_multiplier,
                act_text(activation)
            )
        }
        Op::FullyConnected { activation, .. }
        | Op::Add { activation, .. }
        | Op::Mul { activation, .. }
        | Op::Sub { activation, .. }
        | Op::Relu { activation, .. } => {
            format!("  activation {}", act_text(activation))
        }
        Op::LeakyRelu { alpha, .. } => format!("  alpha {alpha}"),
        Op::Transpose { perm, .. } => format!("  perm {perm:?}"),
        Op::Slice { begin, strides, .. } => format!("  begin {begin:?} strides {strides:?}"),
        Op::ResizeNearest {
            align_corners,
            half_pixel_centers,
            ..
        }
        | Op::ResizeBilinear {
            align_corners,
            half_pixel_centers,
            ..
        } => format!("  align_corners {align_corners} half_pixel_centers {half_pixel_centers}"),
        Op::AveragePool2d {
            filter,
            stride,
            padding,
            activation,
            ..
        }
        | Op::MaxPool2d {
            filter,
            stride,
            padding,
            activation,
            ..
        } => format!(
            "  filter {}x{} stride {}x{} padding {} activation {}",
            filter[0],
            filter[1],
            stride[0],
            stride[1],
            padding_text(padding),
            act_text(activation)
        ),
        Op::Concat { axis, .. } => format!("  axis {axis}"),
        Op::Softmax { beta, .. } => format!("  beta {beta}"),
        Op::DetectionPostProcess { part, options, .. } => format!(
            "  {part:?}, {} NMS, max_detections {}, score >= {}, IoU > {}, {} classes",
            if options.use_regular_nms {
                "regular"
            } else {
                "fast"
            },
            options.max_detections,
            options.nms_score_threshold,
            options.nms_iou_threshold,
            options.num_classes
        ),
        _ => String::new(),
    }
}
