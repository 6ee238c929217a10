//! Lowering of what the engine graph can say but TFLite cannot: explicit (per-side) padding,
//! which intq's QAT export uses, becomes SAME, VALID or a Pad op in front of a VALID op (for a
//! transposed convolution, a SLICE after a VALID one).

use intq_engine::{Graph, Op, Padding, Tensor, TensorId};

use crate::TfliteError;

/// `graph` with every explicit padding replaced by what TFLite has: SAME when it places the
/// windows the same way (same top/left offset, same output size), VALID when it is zero, else,
/// for convolutions, a Pad op (which pads with the input's zero point, a real 0, exactly what
/// explicit padding means) in front of a VALID op. A pool skips padded taps, so a Pad op in front
/// of one is only exact for a max pool whose input is never below its zero point (the output of a
/// ReLU or ReLU6, as in ResNet's stem); any other pool with such padding is refused.
pub fn lower_explicit_padding(graph: &Graph) -> Result<Graph, TfliteError> {
    let mut tensors: Vec<Tensor> = graph.tensors().to_vec();
    let mut ops = Vec::with_capacity(graph.ops().len());
    for (index, op) in graph.ops().iter().enumerate() {
        let mut op = op.clone();
        let kind = op.kind().name().to_string();
        let is_max = matches!(op, Op::MaxPool2d { .. });
        if let Op::TransposeConv {
            input,
            filter,
            output,
            stride,
            padding: padding @ Padding::Explicit { .. },
            ..
        } = &mut op
        {
            // TFLite's TRANSPOSE_CONV pads only SAME or VALID. An explicit cut is the VALID
            // transposed convolution of a larger output (requantization and the clamp are per
            // element) and a SLICE of the part kept, which shares its (S, Z).
            let Padding::Explicit { top, left, .. } = *padding else {
                unreachable!("matched above")
            };
            let (x, f) = (graph.tensor(*input), graph.tensor(*filter));
            let y = tensors[output.index()].clone();
            let full = [0, 1].map(|d| {
                (stride[d] * (x.shape[1 + d] - 1) + f.shape[1 + d])
                    .max([top, left][d] + y.shape[1 + d])
            });
            let mut t = y.clone();
            t.name = format!("{}/full", y.name);
            t.shape = vec![y.shape[0], full[0], full[1], y.shape[3]];
            let id = TensorId(tensors.len() as u32);
            tensors.push(t);
            let kept = *output;
            *output = id;
            *padding = Padding::Valid;
            ops.push(op);
            ops.push(Op::Slice {
                input: id,
                output: kept,
                begin: vec![0, top, left, 0],
                strides: vec![1; 4],
            });
            continue;
        }
        let (input, filter_hw, stride, dilation, padding, is_pool) = match &mut op {
            Op::Conv2d {
                input,
                filter,
                stride,
                dilation,
                padding,
                ..
            }
            | Op::DepthwiseConv2d {
                input,
                filter,
                stride,
                dilation,
                padding,
                ..
            } => {
                let f = &graph.tensor(*filter).shape;
                (input, [f[1], f[2]], *stride, *dilation, padding, false)
            }
            Op::AveragePool2d {
                input,
                filter,
                stride,
                padding,
                ..
            }
            | Op::MaxPool2d {
                input,
                filter,
                stride,
                padding,
                ..
            } => (input, *filter, *stride, [1, 1], padding, true),
            _ => {
                ops.push(op);
                continue;
            }
        };
        let Padding::Explicit {
            top,
            bottom,
            left,
            right,
        } = *padding
        else {
            ops.push(op);
            continue;
        };
        let x = tensors[input.index()].clone();
        let (h, w) = (x.shape[1], x.shape[2]);
        let resolve = |p: Padding| {
            p.resolve(
                (h, w),
                (filter_hw[0], filter_hw[1]),
                (stride[0], stride[1]),
                (dilation[0], dilation[1]),
            )
        };
        match (resolve(*padding), resolve(Padding::Same)) {
            (Some((out, pv)), Some((out_same, ps)))
                if out == out_same && pv.top == ps.top && pv.left == ps.left =>
            {
                *padding = Padding::Same;
            }
            _ if top + bottom + left + right == 0 => *padding = Padding::Valid,
            _ if is_pool && !(is_max && never_below_zero(graph, *input)) => {
                return Err(TfliteError::Unsupported {
                    index,
                    op: kind,
                    message: format!(
                        "padding top {top} bottom {bottom} left {left} right {right} is neither \
                         SAME nor VALID, and a pool cannot take it from a Pad op"
                    ),
                })
            }
            _ => {
                let mut padded = x.clone();
                padded.name = format!("{}/pad", x.name);
                padded.shape = vec![x.shape[0], h + top + bottom, w + left + right, x.shape[3]];
                let id = TensorId(tensors.len() as u32);
                tensors.push(padded);
                ops.push(Op::Pad {
                    input: *input,
                    output: id,
                    paddings: vec![[0, 0], [top, bottom], [left, right], [0, 0]],
                });
                *input = id;
                *padding = Padding::Valid;
            }
        }
        ops.push(op);
    }
    Ok(Graph::new(
        tensors,
        ops,
        graph.inputs().to_vec(),
        graph.outputs().to_vec(),
    )?)
}

/// Whether every code of `t` is at least its zero point: `t` is produced by a conv, depthwise
/// conv, FC or Add with a fused ReLU or ReLU6 (whose clamp starts at the zero point).
fn never_below_zero(graph: &Graph, t: TensorId) -> bool {
    use intq_engine::Activation;
    graph.ops().iter().any(|op| {
        let act = match op {
            Op::Conv2d { activation, .. }
            | Op::DepthwiseConv2d { activation, .. }
            | Op::FullyConnected { activation, .. }
            | Op::Add { activation, .. } => *activation,
            _ => return false,
        };
        op.output() == t && matches!(act, Activation::Relu | Activation::Relu6)
    })
}
