//! Int32 accumulator limits: a conv, depthwise conv or fully connected layer whose int32
//! accumulator could overflow for some input is refused when the graph is built or loaded.
//!
//! Every kernel tier accumulates `Σ (x - Z_x)(w - Z_w) + bias` modulo 2^32, exactly like the
//! reference (and TFLite), so all tiers agree bit for bit whatever K is. What they cannot do is
//! give the *true* sum once it leaves int32: the result then wraps to nonsense. The bound checked
//! here is exact for the model's constants and worst-case over inputs:
//!
//! ```text
//! for every output channel c, with d_k = w[k,c] - Z_w[c] and x ranging over [qmin, qmax]:
//! bias[c] + Σ_k max_x (x - Z_x)·d_k  ≤  2^31 - 1   and   bias[c] + Σ_k min_x (x - Z_x)·d_k  ≥  -2^31
//! ```
//!
//! With worst-case weights this caps the reduction length K (kh·kw·in_c for conv, kh·kw for
//! depthwise, depth for FC), for every tier alike:
//!
//! | scheme | max |x - Z_x| | max |w - Z_w| | largest K, no bias |
//! |---|---|---|---|
//! | uint8, narrow weights [1, 255] | 255 | 254 | 33,155 |
//! | uint8, full-range weights | 255 | 255 | 33,025 |
//! | int8, symmetric weights [-127, 127] | 255 | 127 | 66,311 |
//!
//! Real weights are far from all-extreme, so the limit on trained models is much larger; a
//! model is refused only when its own weights could overflow.

use crate::error::GraphError;
use crate::graph::{Graph, Op, Quant, TensorData, TensorId};
use crate::validate::code_range;

/// The check above for every accumulating op of `graph` (already validated).
pub(crate) fn check_accumulators(graph: &Graph) -> Result<(), GraphError> {
    for (index, op) in graph.ops().iter().enumerate() {
        let (input, weights, bias, channel_axis) = match *op {
            Op::Conv2d {
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
            } => (input, filter, bias, 0),
            Op::DepthwiseConv2d {
                input,
                filter,
                bias,
                ..
            } => (input, filter, bias, 3),
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
            } => (input, weights, bias, 0),
            _ => continue,
        };
        if let Some((channel, hi, lo, k)) =
            overflowing_channel(graph, input, weights, bias, channel_axis)
        {
            return Err(GraphError::Op {
                index,
                kind: op.kind().name(),
                message: format!(
                    "its int32 accumulator can overflow: output channel {channel} ranges over \
                     [{lo}, {hi}] for some inputs (K = {k} products per output), beyond int32; \
                     every kernel would wrap around. Split the reduction or use smaller weight \
                     ranges (docs: crates/intq-engine/src/limits.rs)"
                ),
            });
        }
    }
    Ok(())
}

/// The first output channel whose accumulator can leave int32, with its exact extremes over all
/// inputs and K. `None` when none can, or when an operand lacks what the bound needs
/// (validation reports that case itself).
fn overflowing_channel(
    graph: &Graph,
    input: TensorId,
    weights: TensorId,
    bias: Option<TensorId>,
    channel_axis: usize,
) -> Option<(usize, i64, i64, usize)> {
    let x = graph.tensor(input);
    let w = graph.tensor(weights);
    let (qmin, qmax) = code_range(x.dtype)?;
    let zx = x.params()?.zero_point;
    let codes: Vec<i64> = match w.data.as_ref()? {
        TensorData::U8(v) => v.iter().map(|&c| c as i64).collect(),
        TensorData::I8(v) => v.iter().map(|&c| c as i64).collect(),
        _ => return None,
    };
    let channels = *w.shape.get(channel_axis)?;
    if channels == 0 || codes.is_empty() {
        return None;
    }
    let zw = |c: usize| -> i64 {
        match w.quant.as_ref() {
            Some(Quant::PerTensor(p)) => p.zero_point as i64,
            Some(Quant::PerChannel(p)) => *p.zero_points().get(c).unwrap_or(&0) as i64,
            None => 0,
        }
    };
    // The channel index of element i: OHWI and [out, depth] put it first, depthwise's
    // [1, kh, kw, C] last.
    let inner: usize = w.shape[channel_axis + 1..].iter().product();
    // Exact extremes over inputs: each product (x - Z_x)·d is largest at one end of the input
    // range and smallest at the other, and inputs are independent (padding only adds zeros).
    let (lo_x, hi_x) = ((qmin - zx) as i64, (qmax - zx) as i64);
    let mut hi = vec![0i64; channels];
    let mut lo = vec![0i64; channels];
    for (i, &q) in codes.iter().enumerate() {
        let c = (i / inner) % channels;
        let d = q - zw(c);
        hi[c] += (hi_x * d).max(lo_x * d);
        lo[c] += (hi_x * d).min(lo_x * d);
    }
    let biases: Option<&Vec<i32>> = match bias.map(|b| graph.tensor(b).data.as_ref()) {
        Some(Some(TensorData::I32(v))) => Some(v),
        _ => None,
    };
    let k = codes.len() / channels;
    (0..channels)
        .map(|c| {
            let b = biases.and_then(|v| v.get(c)).map_or(0, |&b| b as i64);
            (c, hi[c] + b, lo[c] + b, k)
        })
        .find(|&(_, hi, lo, _)| hi > i32::MAX as i64 || lo < i32::MIN as i64)
}
