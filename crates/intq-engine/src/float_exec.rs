//! The float executor: the same graph in f32 reals, the model the integer executor approximates.
//! Weights and biases are dequantized once; activations stay real (no requantization between
//! ops); fused activations are real clamps; Quantize and Dequantize are identities on reals.

use crate::plan::{Plan, Prepared};
use crate::{Activation, Graph, Op, Quant, TensorData, TensorId};
use intq_kernels::reference::{nearest_source, ResizeMode};
use intq_kernels::PaddingValues;

/// Real values of the graph's constants, computed once.
#[derive(Debug, Clone)]
pub(crate) struct FloatConstants {
    /// Per tensor: the dequantized data of a constant (`None` for run-time tensors).
    constants: Vec<Option<Vec<f32>>>,
    /// Per op: the real bias `q[k] * S_in * S_w[k]`, if the op has one.
    biases: Vec<Option<Vec<f32>>>,
}

/// `S * (q - Z)` of every element of a constant, per channel along the quantized axis.
fn dequantize_constant(shape: &[usize], quant: Option<&Quant>, data: &TensorData) -> Vec<f32> {
    let codes: Vec<i64> = match data {
        TensorData::U8(v) => v.iter().map(|&q| q as i64).collect(),
        TensorData::I8(v) => v.iter().map(|&q| q as i64).collect(),
        TensorData::I32(v) => v.iter().map(|&q| q as i64).collect(),
        TensorData::F32(v) => return v.clone(),
    };
    let real = |q: i64, scale: f32, zero_point: i32| {
        (scale as f64 * (q - zero_point as i64) as f64) as f32
    };
    match quant {
        None => codes.iter().map(|&q| q as f32).collect(),
        Some(Quant::PerTensor(p)) => codes
            .iter()
            .map(|&q| real(q, p.scale, p.zero_point))
            .collect(),
        Some(Quant::PerChannel(cp)) => {
            let inner: usize = shape[cp.axis() + 1..].iter().product();
            codes
                .iter()
                .enumerate()
                .map(|(i, &q)| {
                    let c = cp.channel((i / inner) % cp.len());
                    real(q, c.scale, c.zero_point)
                })
                .collect()
        }
    }
}

impl FloatConstants {
    pub fn new(graph: &Graph) -> FloatConstants {
        let constants = graph
            .tensors()
            .iter()
            .map(|t| {
                t.data
                    .as_ref()
                    .map(|d| dequantize_constant(&t.shape, t.quant.as_ref(), d))
            })
            .collect();
        let biases = graph
            .ops()
            .iter()
            .map(|op| {
                let (input, weights, bias) = match op {
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
                    } => (*input, *filter, (*bias)?),
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
                    } => (*input, *weights, (*bias)?),
                    _ => return None,
                };
                let s_in = graph.tensor(input).params()?.scale as f64;
                let w = graph.tensor(weights);
                let Some(TensorData::I32(q)) = &graph.tensor(bias).data else {
                    return None;
                };
                let s_w = |k: usize| match &w.quant {
                    Some(Quant::PerTensor(p)) => p.scale as f64,
                    Some(Quant::PerChannel(cp)) => cp.scales()[k] as f64,
                    None => 1.0,
                };
                Some(
                    q.iter()
                        .enumerate()
                        .map(|(k, &q)| (q as f64 * s_in * s_w(k)) as f32)
                        .collect(),
                )
            })
            .collect();
        FloatConstants { constants, biases }
    }
}

fn activate(activation: Activation, x: f32) -> f32 {
    match activation {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::Relu6 => x.clamp(0.0, 6.0),
        Activation::ReluN1To1 => x.clamp(-1.0, 1.0),
    }
}

/// Runs the graph in reals. `inputs` are checked: codes (dequantized here) or f32 reals.
pub(crate) fn run(
    graph: &Graph,
    plan: &Plan,
    consts: &FloatConstants,
    inputs: &[TensorData],
    wanted: &[TensorId],
) -> Vec<Vec<f32>> {
    let mut values: Vec<Option<Vec<f32>>> = vec![None; graph.tensors().len()];
    for (&id, value) in graph.inputs().iter().zip(inputs) {
        let t = graph.tensor(id);
        let reals = match value {
            TensorData::F32(v) => v.clone(),
            codes => dequantize_constant(&t.shape, t.quant.as_ref(), codes),
        };
        values[id.index()] = Some(reals);
    }
    let mut detections = None;
    for &i in &plan.order {
        let op = &graph.ops()[i];
        let get = |id: TensorId| -> &[f32] {
            consts.constants[id.index()]
                .as_deref()
                .or(values[id.index()].as_deref())
                .expect("validated: every input is computed before it is read")
        };
        let out = op.output();
        let out_shape = &graph.tensor(out).shape;
        let mut y = vec![0f32; graph.tensor(out).num_elements()];
        let shape = |id: TensorId| graph.tensor(id).shape.as_slice();
        match (op, &plan.prepared[i]) {
            (
                Op::Conv2d {
                    input,
                    filter,
                    activation,
                    ..
                },
                Prepared::Conv(p),
            ) => conv2d_gemm(
                get(*input),
                shape(*input),
                get(*filter),
                shape(*filter),
                consts.biases[i].as_deref(),
                [p.geometry.stride_h, p.geometry.stride_w],
                [p.geometry.dilation_h, p.geometry.dilation_w],
                p.geometry.padding,
                *activation,
                &mut y,
                out_shape,
            ),
            (
                Op::DepthwiseConv2d {
                    input,
                    filter,
                    depth_multiplier,
                    activation,
                    ..
                },
                Prepared::Depthwise(p),
            ) => conv2d(
                get(*input),
                shape(*input),
                get(*filter),
                shape(*filter),
                consts.biases[i].as_deref(),
                [p.geometry.stride_h, p.geometry.stride_w],
                [p.geometry.dilation_h, p.geometry.dilation_w],
                p.geometry.padding,
                Some(*depth_multiplier),
                *activation,
                &mut y,
                out_shape,
            ),
            (
                Op::FullyConnected {
                    input,
                    weights,
                    activation,
                    ..
                }
                | Op::FullyConnectedF64 {
                    input,
                    weights,
                    activation,
                    ..
                },
                _,
            ) => {
                let (out_features, depth) = (shape(*weights)[0], shape(*weights)[1]);
                fully_connected_gemm(
                    get(*input),
                    get(*weights),
                    consts.biases[i].as_deref(),
                    out_features,
                    depth,
                    *activation,
                    &mut y,
                );
            }
            (
                Op::Add {
                    lhs,
                    rhs,
                    activation,
                    ..
                },
                _,
            ) => {
                let (a, b) = (get(*lhs), get(*rhs));
                let ia = broadcast_index(shape(*lhs), out_shape);
                let ib = broadcast_index(shape(*rhs), out_shape);
                for (o, v) in y.iter_mut().enumerate() {
                    *v = activate(*activation, a[ia(o)] + b[ib(o)]);
                }
            }
            (
                Op::AveragePool2d {
                    input, activation, ..
                },
                Prepared::AveragePool(p),
            )
            | (
                Op::MaxPool2d {
                    input, activation, ..
                },
                Prepared::MaxPool(p),
            ) => {
                let average = matches!(op, Op::AveragePool2d { .. });
                let x = get(*input);
                let [n, h, w, c] = to4(shape(*input));
                let [_, oh, ow, _] = to4(out_shape);
                for b in 0..n {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let rows = window(oy, p.stride_h, p.padding.top, p.filter_h, h);
                            let cols = window(ox, p.stride_w, p.padding.left, p.filter_w, w);
                            for ch in 0..c {
                                let mut sum = 0f32;
                                let mut max = f32::NEG_INFINITY;
                                for iy in rows.clone() {
                                    for ix in cols.clone() {
                                        let v = x[((b * h + iy) * w + ix) * c + ch];
                                        sum += v;
                                        max = max.max(v);
                                    }
                                }
                                let count = (rows.len() * cols.len()) as f32;
                                let v = if average { sum / count } else { max };
                                y[((b * oh + oy) * ow + ox) * c + ch] = activate(*activation, v);
                            }
                        }
                    }
                }
            }
            (Op::Concat { inputs, axis, .. }, _) => {
                let outer: usize = out_shape[..*axis].iter().product();
                let inner: usize = out_shape[*axis + 1..].iter().product();
                let mut at = 0;
                for o in 0..outer {
                    for &id in inputs {
                        let chunk = shape(id)[*axis] * inner;
                        y[at..at + chunk].copy_from_slice(&get(id)[o * chunk..(o + 1) * chunk]);
                        at += chunk;
                    }
                }
            }
            (Op::Logistic { input, .. } | Op::LogisticLut { input, .. }, _) => {
                for (v, &x) in y.iter_mut().zip(get(*input)) {
                    *v = 1.0 / (1.0 + (-x).exp());
                }
            }
            (Op::Softmax { input, beta, .. }, _) => {
                let depth = *out_shape.last().expect("validated: rank >= 1");
                for (row, x) in y
                    .chunks_exact_mut(depth)
                    .zip(get(*input).chunks_exact(depth))
                {
                    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    for (v, &xi) in row.iter_mut().zip(x) {
                        *v = (beta * (xi - max)).exp();
                    }
                    let sum: f32 = row.iter().sum();
                    row.iter_mut().for_each(|v| *v /= sum);
                }
            }
            (
                Op::Pad {
                    input, paddings, ..
                },
                _,
            ) => {
                // Padding is the zero point, i.e. real 0.0.
                let (x, xs) = (get(*input), shape(*input));
                y.fill(0.0);
                for (i, &v) in x.iter().enumerate() {
                    let (mut o, mut rest) = (0, i);
                    let mut stride_in: usize = xs.iter().product();
                    for (a, &d) in xs.iter().enumerate() {
                        stride_in /= d.max(1);
                        let coord = rest / stride_in.max(1);
                        rest %= stride_in.max(1);
                        let stride_out: usize = out_shape[a + 1..].iter().product();
                        o += (coord + paddings[a][0]) * stride_out;
                    }
                    y[o] = v;
                }
            }
            (Op::Mean { input, axes, .. }, _) => {
                let (x, xs) = (get(*input), shape(*input));
                let n: usize = axes.iter().map(|&a| xs[a]).product();
                y.fill(0.0);
                for (i, &v) in x.iter().enumerate() {
                    let (mut o, mut rest) = (0, i);
                    let mut stride_in: usize = xs.iter().product();
                    let mut stride_out: usize = y.len();
                    for (a, &d) in xs.iter().enumerate() {
                        stride_in /= d.max(1);
                        let coord = rest / stride_in.max(1);
                        rest %= stride_in.max(1);
                        if !axes.contains(&a) {
                            stride_out /= d.max(1);
                            o += coord * stride_out;
                        }
                    }
                    y[o] += v / n as f32;
                }
            }
            (
                Op::Mul {
                    lhs,
                    rhs,
                    activation,
                    ..
                }
                | Op::Sub {
                    lhs,
                    rhs,
                    activation,
                    ..
                },
                _,
            ) => {
                let (a, b) = (get(*lhs), get(*rhs));
                let ia = broadcast_index(shape(*lhs), out_shape);
                let ib = broadcast_index(shape(*rhs), out_shape);
                let mul = matches!(op, Op::Mul { .. });
                for (o, v) in y.iter_mut().enumerate() {
                    let (x, z) = (a[ia(o)], b[ib(o)]);
                    *v = activate(*activation, if mul { x * z } else { x - z });
                }
            }
            (
                Op::Relu {
                    input, activation, ..
                },
                _,
            ) => {
                for (v, &x) in y.iter_mut().zip(get(*input)) {
                    *v = activate(*activation, x);
                }
            }
            (Op::LeakyRelu { input, alpha, .. }, _) => {
                for (v, &x) in y.iter_mut().zip(get(*input)) {
                    *v = if x >= 0.0 { x } else { alpha * x };
                }
            }
            (Op::HardSwish { input, .. }, _) => {
                for (v, &x) in y.iter_mut().zip(get(*input)) {
                    *v = x * (x + 3.0).clamp(0.0, 6.0) / 6.0;
                }
            }
            (Op::ResizeNearest { input, .. }, Prepared::Resize(mode, _)) => {
                let x = get(*input);
                let [n, h, w, c] = to4(shape(*input));
                let [_, oh, ow, _] = to4(out_shape);
                let mut o = 0;
                for b in 0..n {
                    for oy in 0..oh {
                        let iy = nearest_source(oy, h, oh, *mode);
                        for ox in 0..ow {
                            let ix = nearest_source(ox, w, ow, *mode);
                            let at = ((b * h + iy) * w + ix) * c;
                            y[o..o + c].copy_from_slice(&x[at..at + c]);
                            o += c;
                        }
                    }
                }
            }
            (Op::ResizeBilinear { input, .. }, Prepared::Resize(mode, _)) => {
                resize_bilinear_real(
                    get(*input),
                    to4(shape(*input)),
                    *mode,
                    &mut y,
                    to4(out_shape),
                );
            }
            (Op::Prelu { input, alpha, .. }, _) => {
                let (x, a) = (get(*input), get(*alpha));
                let ia = broadcast_index(shape(*alpha), out_shape);
                for (o, v) in y.iter_mut().enumerate() {
                    *v = if x[o] >= 0.0 { x[o] } else { x[o] * a[ia(o)] };
                }
            }
            (Op::Maximum { lhs, rhs, .. } | Op::Minimum { lhs, rhs, .. }, _) => {
                let (a, b) = (get(*lhs), get(*rhs));
                let ia = broadcast_index(shape(*lhs), out_shape);
                let ib = broadcast_index(shape(*rhs), out_shape);
                let max = matches!(op, Op::Maximum { .. });
                for (o, v) in y.iter_mut().enumerate() {
                    let (p, q) = (a[ia(o)], b[ib(o)]);
                    *v = if max { p.max(q) } else { p.min(q) };
                }
            }
            (Op::DetectionPostProcess { .. }, Prepared::Detection(anchors)) => {
                let input = |id: TensorId| intq_kernels::reference::DetectionInput::F32(get(id));
                crate::exec::detection_part(graph, op, anchors, input, &mut detections, &mut y);
            }
            (Op::Transpose { input, perm, .. }, _) => {
                intq_kernels::reference::transpose(get(*input), shape(*input), perm, &mut y);
            }
            (
                Op::TransposeConv {
                    input,
                    filter,
                    activation,
                    ..
                },
                Prepared::TransposeConv(p),
            ) => transpose_conv_real(
                get(*input),
                to4(shape(*input)),
                get(*filter),
                to4(shape(*filter)),
                consts.biases[i].as_deref(),
                &p.geometry,
                *activation,
                &mut y,
                to4(out_shape),
            ),
            (
                Op::SpaceToBatch {
                    input,
                    block,
                    paddings,
                    ..
                },
                _,
            ) => intq_kernels::reference::space_to_batch(
                get(*input),
                to4(shape(*input)),
                *block,
                [paddings[0][0], paddings[1][0]],
                0.0,
                &mut y,
                to4(out_shape),
            ),
            (
                Op::BatchToSpace {
                    input,
                    block,
                    crops,
                    ..
                },
                _,
            ) => intq_kernels::reference::batch_to_space(
                get(*input),
                to4(shape(*input)),
                *block,
                [crops[0][0], crops[1][0]],
                &mut y,
                to4(out_shape),
            ),
            (Op::DepthToSpace { input, block, .. }, _) => intq_kernels::reference::depth_to_space(
                get(*input),
                to4(shape(*input)),
                *block,
                &mut y,
                to4(out_shape),
            ),
            (
                Op::Slice {
                    input,
                    begin,
                    strides,
                    ..
                },
                _,
            ) => intq_kernels::reference::strided_slice(
                get(*input),
                shape(*input),
                begin,
                strides,
                &mut y,
                out_shape,
            ),
            (
                Op::Gather {
                    input,
                    axis,
                    indices,
                    ..
                },
                _,
            ) => {
                intq_kernels::reference::gather(get(*input), shape(*input), *axis, indices, &mut y)
            }
            (Op::Sum { input, axes, .. }, _) => {
                let x = get(*input);
                y.fill(0.0);
                intq_kernels::reference::reduction_walk(shape(*input), axes, |i, o| y[o] += x[i]);
            }
            (Op::ReduceMax { input, axes, .. }, _) => {
                intq_kernels::reference::reduce_max(get(*input), shape(*input), axes, &mut y)
            }
            (Op::ArgMax { input, axis, .. }, _) => {
                let mut index = vec![0i32; y.len()];
                intq_kernels::reference::arg_max(get(*input), shape(*input), *axis, &mut index);
                for (v, &j) in y.iter_mut().zip(&index) {
                    *v = j as f32;
                }
            }
            (Op::L2Normalization { input, .. }, _) => {
                let (x, xs) = (get(*input), shape(*input));
                let depth = xs[xs.len() - 1];
                for (row, out) in x.chunks_exact(depth).zip(y.chunks_exact_mut(depth)) {
                    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o = v / norm;
                    }
                }
            }
            (Op::Tanh { input, .. }, _) => {
                for (v, &x) in y.iter_mut().zip(get(*input)) {
                    *v = x.tanh();
                }
            }
            (Op::Reshape { input, .. }, _)
            | (Op::Quantize { input, .. }, _)
            | (Op::Dequantize { input, .. }, _) => y.copy_from_slice(get(*input)),
            (op, prep) => unreachable!("{} planned as {prep:?}", op.kind()),
        }
        values[out.index()] = Some(y);
    }
    wanted
        .iter()
        .map(|&id| {
            consts.constants[id.index()]
                .clone()
                .or_else(|| values[id.index()].clone())
                .expect("checked: every wanted tensor is computed")
        })
        .collect()
}

/// Bilinear interpolation of reals with TFLite's source positions (its float kernel without the
/// rounding offset).
fn resize_bilinear_real(
    x: &[f32],
    [n, h, w, c]: [usize; 4],
    mode: ResizeMode,
    y: &mut [f32],
    [_, oh, ow, _]: [usize; 4],
) {
    let scale = |i: usize, o: usize| {
        if mode.align_corners && o > 1 {
            (i - 1) as f32 / (o - 1) as f32
        } else {
            i as f32 / o as f32
        }
    };
    let axis = |out: usize, s: f32, size: usize| {
        let v = if mode.half_pixel_centers {
            (out as f32 + 0.5) * s - 0.5
        } else {
            out as f32 * s
        };
        let lo = (v.floor() as i64).max(0) as usize;
        let hi = (v.ceil() as i64).min(size as i64 - 1) as usize;
        (v - lo as f32, lo, hi)
    };
    let (sh, sw) = (scale(h, oh), scale(w, ow));
    let mut o = 0;
    for b in 0..n {
        for oy in 0..oh {
            let (fy, y0, y1) = axis(oy, sh, h);
            for ox in 0..ow {
                let (fx, x0, x1) = axis(ox, sw, w);
                let at = |yy: usize, xx: usize, ch: usize| x[((b * h + yy) * w + xx) * c + ch];
                for ch in 0..c {
                    y[o] = at(y0, x0, ch) * (1.0 - fy) * (1.0 - fx)
                        + at(y1, x0, ch) * fy * (1.0 - fx)
                        + at(y0, x1, ch) * (1.0 - fy) * fx
                        + at(y1, x1, ch) * fy * fx;
                    o += 1;
                }
            }
        }
    }
}

fn to4(s: &[usize]) -> [usize; 4] {
    [s[0], s[1], s[2], s[3]]
}

/// The input rows (or columns) of pooling window `out` that lie inside the input.
fn window(
    out: usize,
    stride: usize,
    pad: usize,
    filter: usize,
    extent: usize,
) -> std::ops::Range<usize> {
    let start = (out * stride) as isize - pad as isize;
    let end = (start + filter as isize).min(extent as isize);
    (start.max(0) as usize)..(end.max(0) as usize)
}

/// Maps a flat index of `out_shape` to the flat index of a NumPy-broadcast operand of `shape`.
fn broadcast_index(shape: &[usize], out_shape: &[usize]) -> impl Fn(usize) -> usize {
    let rank = out_shape.len();
    let offset = rank - shape.len();
    // Operand stride of each output axis; 0 where the operand is broadcast along it.
    let mut strides = vec![0usize; rank];
    let mut s = 1;
    for d in (0..shape.len()).rev() {
        if shape[d] != 1 {
            strides[d + offset] = s;
        }
        s *= shape[d];
    }
    let out_shape = out_shape.to_vec();
    move |mut o| {
        let mut i = 0;
        for d in (0..rank).rev() {
            i += (o % out_shape[d]) * strides[d];
            o /= out_shape[d];
        }
        i
    }
}

/// `C[m x n] = A[m x k] * W^T + C` with `W` an `[n, k]` row-major matrix (OHWI filters and
/// FC weights both are), through `matrixmultiply`'s packed, runtime-dispatched (AVX2/FMA where
/// the CPU has it) sgemm, so the float baseline is a tuned GEMM rather than naive loops and the
/// int8-vs-f32 speed ratio is honest. `c` must already hold the bias (or zeros).
fn sgemm_a_wt(m: usize, k: usize, n: usize, a: &[f32], w: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && w.len() >= n * k && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the slices are at least as long as the strided m x k, k x n and m x n views
    // (checked above); `c` does not alias `a` or `w` (it is a distinct `&mut`).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            // W^T viewed in place: element (kk, j) is w[j * k + kk].
            w.as_ptr(),
            1,
            k as isize,
            1.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Fills every `n`-wide row of `y` with the bias (or zeros), the GEMM's starting accumulator.
fn fill_bias(y: &mut [f32], bias: Option<&[f32]>, n: usize) {
    match bias {
        Some(b) => y.chunks_exact_mut(n).for_each(|row| row.copy_from_slice(b)),
        None => y.fill(0.0),
    }
}

/// Fully connected in reals: `y[b, o] = act(sum_d x[b, d] * w[o, d] + bias[o])`.
fn fully_connected_gemm(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out_features: usize,
    depth: usize,
    activation: Activation,
    y: &mut [f32],
) {
    let batch = y.len() / out_features.max(1);
    fill_bias(y, bias, out_features.max(1));
    if depth > 0 {
        sgemm_a_wt(batch, depth, out_features, x, w, y);
    }
    y.iter_mut().for_each(|v| *v = activate(activation, *v));
}

/// Convolution with an OHWI filter as one GEMM per image: the input is used in place when the
/// filter is 1x1 with unit stride and no padding (each pixel already is a row of the patch
/// matrix), otherwise it is unrolled (im2col) with zeros for taps in the padding, which
/// contribute nothing, as in [`conv2d`].
#[allow(clippy::too_many_arguments)]
fn conv2d_gemm(
    x: &[f32],
    x_shape: &[usize],
    w: &[f32],
    w_shape: &[usize],
    bias: Option<&[f32]>,
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: PaddingValues,
    activation: Activation,
    y: &mut [f32],
    y_shape: &[usize],
) {
    let [n, h, wd, c] = to4(x_shape);
    let [_, kh, kw, _] = to4(w_shape);
    let [_, oh, ow, oc] = to4(y_shape);
    let (m, k) = (oh * ow, kh * kw * c);
    fill_bias(y, bias, oc.max(1));
    let direct = kh == 1
        && kw == 1
        && stride == [1, 1]
        && pad.top == 0
        && pad.left == 0
        && (oh, ow) == (h, wd);
    let mut patches = if direct || k == 0 {
        Vec::new()
    } else {
        vec![0f32; m * k]
    };
    for b in 0..n {
        let image = &x[b * h * wd * c..(b + 1) * h * wd * c];
        let out = &mut y[b * m * oc..(b + 1) * m * oc];
        if k == 0 {
            continue;
        }
        let a: &[f32] = if direct {
            image
        } else {
            for oy in 0..oh {
                for ox in 0..ow {
                    let row = &mut patches[(oy * ow + ox) * k..(oy * ow + ox + 1) * k];
                    for fy in 0..kh {
                        let iy = (oy * stride[0] + fy * dilation[0]) as isize - pad.top as isize;
                        for fx in 0..kw {
                            let ix =
                                (ox * stride[1] + fx * dilation[1]) as isize - pad.left as isize;
                            let dst = &mut row[(fy * kw + fx) * c..(fy * kw + fx + 1) * c];
                            if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < wd {
                                let src = (iy as usize * wd + ix as usize) * c;
                                dst.copy_from_slice(&image[src..src + c]);
                            } else {
                                dst.fill(0.0);
                            }
                        }
                    }
                }
            }
            &patches
        };
        sgemm_a_wt(m, k, oc, a, w, out);
    }
    y.iter_mut().for_each(|v| *v = activate(activation, *v));
}

/// Convolution (`depth_multiplier == None`: OHWI filter) or depthwise convolution
/// (`[1, kh, kw, C*M]` filter) in reals; taps in the padding contribute nothing. The executor
/// uses it for depthwise; the tests keep it as the naive reference of [`conv2d_gemm`].
#[allow(clippy::too_many_arguments)]
fn conv2d(
    x: &[f32],
    x_shape: &[usize],
    w: &[f32],
    w_shape: &[usize],
    bias: Option<&[f32]>,
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: PaddingValues,
    depth_multiplier: Option<usize>,
    activation: Activation,
    y: &mut [f32],
    y_shape: &[usize],
) {
    let [n, h, wd, c] = to4(x_shape);
    let [_, kh, kw, _] = to4(w_shape);
    let [_, oh, ow, oc] = to4(y_shape);
    let coord = |o: usize, tap: usize, s: usize, d: usize, p: usize, extent: usize| {
        let v = (o * s + tap * d) as isize - p as isize;
        (v >= 0 && (v as usize) < extent).then_some(v as usize)
    };
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for k in 0..oc {
                    let mut acc = bias.map_or(0.0, |b| b[k]);
                    for fy in 0..kh {
                        let Some(iy) = coord(oy, fy, stride[0], dilation[0], pad.top, h) else {
                            continue;
                        };
                        for fx in 0..kw {
                            let Some(ix) = coord(ox, fx, stride[1], dilation[1], pad.left, wd)
                            else {
                                continue;
                            };
                            let xb = ((b * h + iy) * wd + ix) * c;
                            match depth_multiplier {
                                None => {
                                    let wb = ((k * kh + fy) * kw + fx) * c;
                                    for ic in 0..c {
                                        acc += x[xb + ic] * w[wb + ic];
                                    }
                                }
                                Some(m) => {
                                    acc += x[xb + k / m] * w[(fy * kw + fx) * oc + k];
                                }
                            }
                        }
                    }
                    y[((b * oh + oy) * ow + ox) * oc + k] = activate(activation, acc);
                }
            }
        }
    }
}

/// Transposed convolution in reals: every input pixel scatters its products (f64 sums) into
/// the output, then bias and the fused activation.
#[allow(clippy::too_many_arguments)]
fn transpose_conv_real(
    x: &[f32],
    [n, h, w, c]: [usize; 4],
    f: &[f32],
    [o, kh, kw, _]: [usize; 4],
    bias: Option<&[f32]>,
    geometry: &intq_kernels::ConvParams,
    activation: Activation,
    y: &mut [f32],
    [_, oh, ow, _]: [usize; 4],
) {
    let mut acc = vec![0f64; y.len()];
    let (top, left) = (
        geometry.padding.top as isize,
        geometry.padding.left as isize,
    );
    for b in 0..n {
        for iy in 0..h {
            for ix in 0..w {
                for fy in 0..kh {
                    let oy = (iy * geometry.stride_h + fy) as isize - top;
                    if oy < 0 || oy >= oh as isize {
                        continue;
                    }
                    for fx in 0..kw {
                        let ox = (ix * geometry.stride_w + fx) as isize - left;
                        if ox < 0 || ox >= ow as isize {
                            continue;
                        }
                        let at = ((b * oh + oy as usize) * ow + ox as usize) * o;
                        for oc in 0..o {
                            let mut s = 0f64;
                            for ic in 0..c {
                                s += x[((b * h + iy) * w + ix) * c + ic] as f64
                                    * f[((oc * kh + fy) * kw + fx) * c + ic] as f64;
                            }
                            acc[at + oc] += s;
                        }
                    }
                }
            }
        }
    }
    for (k, (v, a)) in y.iter_mut().zip(acc).enumerate() {
        let b = bias.map_or(0.0, |b| b[k % o] as f64);
        *v = activate(activation, (a + b) as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A naive fully connected, one dot per output: what the GEMM path is checked against.
    fn fully_connected_reference(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        out_features: usize,
        depth: usize,
        activation: Activation,
        y: &mut [f32],
    ) {
        for (b, row) in x.chunks_exact(depth).enumerate() {
            for o in 0..out_features {
                let dot: f32 = row
                    .iter()
                    .zip(&w[o * depth..(o + 1) * depth])
                    .map(|(a, b)| a * b)
                    .sum();
                let acc = dot + bias.map_or(0.0, |b| b[o]);
                y[b * out_features + o] = activate(activation, acc);
            }
        }
    }

    /// Deterministic reals in [-2, 2) from a seed, so cases are reproducible.
    fn reals(seed: u64, len: usize) -> Vec<f32> {
        intq_testutil::floats(seed, len, -2.0, 2.0)
    }

    /// GEMM and naive sums differ only by f32 summation order: bound by k ulps of the sum of
    /// absolute products (plus the bias), the standard a-priori bound for recursive summation.
    fn assert_close(gemm: &[f32], naive: &[f32], abs_sum: &[f32], k: usize) {
        assert_eq!(gemm.len(), naive.len());
        for (i, ((&g, &r), &s)) in gemm.iter().zip(naive).zip(abs_sum).enumerate() {
            let tol = (k as f32 + 2.0) * f32::EPSILON * s + 1e-6;
            assert!(
                (g - r).abs() <= tol,
                "element {i}: gemm {g} vs naive {r} (tol {tol})"
            );
        }
    }

    fn act(i: u8) -> Activation {
        [
            Activation::None,
            Activation::Relu,
            Activation::Relu6,
            Activation::ReluN1To1,
        ][i as usize % 4]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn conv_gemm_matches_the_naive_conv(
            (n, h, wd, c, oc) in (1usize..3, 1usize..8, 1usize..8, 1usize..6, 1usize..7),
            (kh, kw, sh, sw, dh, dw) in (1usize..4, 1usize..4, 1usize..3, 1usize..3, 1usize..3, 1usize..3),
            pads in [0usize..3, 0usize..3, 0usize..3, 0usize..3],
            with_bias: bool,
            a in 0u8..4,
            seed: u64,
        ) {
            let pad = PaddingValues { top: pads[0], bottom: pads[1], left: pads[2], right: pads[3] };
            let (ekh, ekw) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
            prop_assume!(h + pad.top + pad.bottom >= ekh && wd + pad.left + pad.right >= ekw);
            let oh = (h + pad.top + pad.bottom - ekh) / sh + 1;
            let ow = (wd + pad.left + pad.right - ekw) / sw + 1;
            let x = reals(seed, n * h * wd * c);
            let w = reals(seed ^ 1, oc * kh * kw * c);
            let bias = with_bias.then(|| reals(seed ^ 2, oc));
            let (xs, ws, ys) = ([n, h, wd, c], [oc, kh, kw, c], [n, oh, ow, oc]);
            let mut gemm = vec![f32::NAN; n * oh * ow * oc];
            let mut naive = vec![f32::NAN; gemm.len()];
            let mut abs_sum = vec![0f32; gemm.len()];
            conv2d_gemm(&x, &xs, &w, &ws, bias.as_deref(), [sh, sw], [dh, dw], pad, act(a), &mut gemm, &ys);
            conv2d(&x, &xs, &w, &ws, bias.as_deref(), [sh, sw], [dh, dw], pad, None, act(a), &mut naive, &ys);
            // The same naive conv on |x|, |w|, |bias| gives the magnitude the error scales with.
            let ax: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let aw: Vec<f32> = w.iter().map(|v| v.abs()).collect();
            let ab = bias.as_ref().map(|b| b.iter().map(|v| v.abs()).collect::<Vec<_>>());
            conv2d(&ax, &xs, &aw, &ws, ab.as_deref(), [sh, sw], [dh, dw], pad, None, Activation::None, &mut abs_sum, &ys);
            assert_close(&gemm, &naive, &abs_sum, kh * kw * c);
        }

        #[test]
        fn fully_connected_gemm_matches_the_naive_one(
            (batch, depth, out) in (1usize..5, 1usize..300, 1usize..40),
            with_bias: bool,
            a in 0u8..4,
            seed: u64,
        ) {
            let x = reals(seed, batch * depth);
            let w = reals(seed ^ 1, out * depth);
            let bias = with_bias.then(|| reals(seed ^ 2, out));
            let mut gemm = vec![f32::NAN; batch * out];
            let mut naive = vec![f32::NAN; batch * out];
            let mut abs_sum = vec![0f32; batch * out];
            fully_connected_gemm(&x, &w, bias.as_deref(), out, depth, act(a), &mut gemm);
            fully_connected_reference(&x, &w, bias.as_deref(), out, depth, act(a), &mut naive);
            let ax: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let aw: Vec<f32> = w.iter().map(|v| v.abs()).collect();
            let ab = bias.as_ref().map(|b| b.iter().map(|v| v.abs()).collect::<Vec<_>>());
            fully_connected_reference(&ax, &aw, ab.as_deref(), out, depth, Activation::None, &mut abs_sum);
            assert_close(&gemm, &naive, &abs_sum, depth);
        }
    }

    #[test]
    fn broadcast_index_maps_like_numpy() {
        // [2, 3] + [3]: output (i, j) reads rhs j.
        let f = broadcast_index(&[3], &[2, 3]);
        assert_eq!((0..6).map(&f).collect::<Vec<_>>(), vec![0, 1, 2, 0, 1, 2]);
        // [2, 1] broadcast to [2, 3]: output (i, j) reads i.
        let f = broadcast_index(&[2, 1], &[2, 3]);
        assert_eq!((0..6).map(&f).collect::<Vec<_>>(), vec![0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn windows_clip_to_the_input() {
        assert_eq!(window(0, 2, 1, 3, 5), 0..2);
        assert_eq!(window(2, 2, 1, 3, 5), 3..5);
        assert_eq!(window(1, 1, 0, 2, 4), 1..3);
    }

    #[test]
    fn per_channel_dequantization_uses_the_right_axis() {
        // Shape [2, 2] per channel along axis 1: column k has (S, Z) = (k + 1, k).
        let cp = crate::ChannelParams::new(vec![1.0, 2.0], vec![0, 1], 1).unwrap();
        let r = dequantize_constant(
            &[2, 2],
            Some(&Quant::PerChannel(cp)),
            &TensorData::I8(vec![3, 3, -1, -1]),
        );
        // (3-0)*1, (3-1)*2, (-1-0)*1, (-1-1)*2
        assert_eq!(r, vec![3.0, 4.0, -1.0, -4.0]);
    }
}
