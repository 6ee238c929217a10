//! The imported graph run in f32, NCHW, at any batch: the float model intq starts from, checked
//! against ONNX Runtime's outputs on the fixtures. Sums run in f64 so the result does not depend
//! on a summation order.

use crate::ir::{Conv, ConvTranspose, Graph, Op, Pool, ValueId};
use crate::OnnxError;

/// A dense f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Runs `graph` on one tensor per graph input (any batch, the same for all), returning one
/// tensor per graph output.
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, OnnxError> {
    run_values(graph, inputs, &graph.outputs)
}

/// [`run`] returning the activations `wanted` (graph inputs, outputs or anything between).
pub fn run_values(
    graph: &Graph,
    inputs: &[Tensor],
    wanted: &[ValueId],
) -> Result<Vec<Tensor>, OnnxError> {
    if let Some(&bad) = wanted.iter().find(|&&w| w >= graph.values.len()) {
        return Err(OnnxError::Run(format!("no activation {bad}")));
    }
    if inputs.len() != graph.inputs.len() {
        return Err(OnnxError::Run(format!(
            "the model takes {} input(s), {} given",
            graph.inputs.len(),
            inputs.len()
        )));
    }
    let batch = inputs
        .first()
        .and_then(|t| t.shape.first())
        .copied()
        .unwrap_or(0);
    let mut vals: Vec<Option<Tensor>> = vec![None; graph.values.len()];
    for (t, &id) in inputs.iter().zip(&graph.inputs) {
        let want = &graph.values[id];
        if t.shape.len() != want.shape.len()
            || t.shape[0] != batch
            || batch == 0
            || t.shape[1..] != want.shape[1..]
            || t.data.len() != t.shape.iter().product::<usize>()
        {
            return Err(OnnxError::Run(format!(
                "input {:?} has shape {:?}; the model takes [N{}] with one N for all inputs",
                want.name,
                t.shape,
                want.shape[1..]
                    .iter()
                    .map(|d| format!(", {d}"))
                    .collect::<String>()
            )));
        }
        vals[id] = Some(t.clone());
    }
    for node in &graph.nodes {
        let ins: Vec<&Tensor> = node
            .inputs
            .iter()
            .map(|&i| vals[i].as_ref().expect("topological order"))
            .collect();
        let mut out_shape = graph.values[node.output].shape.clone();
        out_shape[0] = batch;
        let data = eval_op(&node.op, &ins, &out_shape);
        debug_assert_eq!(data.len(), out_shape.iter().product::<usize>());
        vals[node.output] = Some(Tensor {
            shape: out_shape,
            data,
        });
    }
    wanted
        .iter()
        .map(|&o| {
            vals[o].clone().ok_or_else(|| {
                OnnxError::Run(format!(
                    "{:?} is not computed (no output depends on it)",
                    graph.values[o].name
                ))
            })
        })
        .collect()
}

fn eval_op(op: &Op, ins: &[&Tensor], out: &[usize]) -> Vec<f32> {
    let x = ins[0];
    match op {
        Op::Conv(c) => conv(c, x, out),
        Op::ConvTranspose(c) => conv_transpose(c, x, out),
        Op::BatchNorm {
            scale,
            bias,
            mean,
            var,
            epsilon,
        } => {
            let c = x.shape[1];
            let inner: usize = x.shape[2..].iter().product();
            let mut y = x.data.clone();
            for (k, v) in y.iter_mut().enumerate() {
                let ch = (k / inner) % c;
                let inv = 1.0 / ((var[ch] as f64) + (*epsilon as f64)).sqrt();
                *v = (((*v as f64) - mean[ch] as f64) * inv * scale[ch] as f64 + bias[ch] as f64)
                    as f32;
            }
            y
        }
        Op::Relu => x.data.iter().map(|&v| v.max(0.0)).collect(),
        Op::HardSigmoid { alpha, beta } => x
            .data
            .iter()
            .map(|&v| (alpha * v + beta).clamp(0.0, 1.0))
            .collect(),
        Op::Sigmoid => x
            .data
            .iter()
            .map(|&v| (1.0 / (1.0 + (-(v as f64)).exp())) as f32)
            .collect(),
        Op::HardSwish => x
            .data
            .iter()
            .map(|&v| v * (v + 3.0).clamp(0.0, 6.0) / 6.0)
            .collect(),
        Op::Clip { min, max } => x.data.iter().map(|&v| v.max(*min).min(*max)).collect(),
        Op::Add => x
            .data
            .iter()
            .zip(&ins[1].data)
            .map(|(a, b)| a + b)
            .collect(),
        Op::Sub => x
            .data
            .iter()
            .zip(&ins[1].data)
            .map(|(a, b)| a - b)
            .collect(),
        Op::Maximum => x
            .data
            .iter()
            .zip(&ins[1].data)
            .map(|(a, b)| a.max(*b))
            .collect(),
        Op::Minimum => x
            .data
            .iter()
            .zip(&ins[1].data)
            .map(|(a, b)| a.min(*b))
            .collect(),
        Op::LeakyRelu { alpha } => x
            .data
            .iter()
            .map(|&v| if v >= 0.0 { v } else { alpha * v })
            .collect(),
        Op::Tanh => x.data.iter().map(|&v| v.tanh()).collect(),
        Op::Prelu { slope } => {
            let c = x.shape.get(1).copied().unwrap_or(1);
            let inner: usize = x.shape.get(2..).map_or(1, |s| s.iter().product());
            x.data
                .iter()
                .enumerate()
                .map(|(k, &v)| {
                    let a = slope[if slope.len() == 1 { 0 } else { (k / inner) % c }];
                    if v >= 0.0 {
                        v
                    } else {
                        a * v
                    }
                })
                .collect()
        }
        Op::Transpose { perm } => {
            let r = x.shape.len();
            let mut stride = vec![1usize; r];
            for d in (0..r.saturating_sub(1)).rev() {
                stride[d] = stride[d + 1] * x.shape[d + 1];
            }
            // Output dimension d walks input dimension perm[d].
            let dims: Vec<usize> = perm.iter().map(|&a| x.shape[a]).collect();
            (0..x.data.len())
                .map(|flat| {
                    let (mut rem, mut off) = (flat, 0);
                    for d in (0..r).rev() {
                        off += (rem % dims[d]) * stride[perm[d]];
                        rem /= dims[d];
                    }
                    x.data[off]
                })
                .collect()
        }
        Op::ResizeNearest { src_h, src_w } => {
            let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
            let mut y = Vec::with_capacity(n * c * src_h.len() * src_w.len());
            for plane in 0..n * c {
                for &sy in src_h {
                    for &sx in src_w {
                        y.push(x.data[(plane * h + sy) * w + sx]);
                    }
                }
            }
            y
        }
        Op::ResizeLinear { pos_h, pos_w, .. } => {
            let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
            let (th, tw) = (
                crate::ir::linear_taps(pos_h, h),
                crate::ir::linear_taps(pos_w, w),
            );
            let mut y = Vec::with_capacity(n * c * th.len() * tw.len());
            for plane in 0..n * c {
                let at = |r: usize, col: usize| x.data[(plane * h + r) * w + col];
                for &(y0, y1, fy) in &th {
                    for &(x0, x1, fx) in &tw {
                        let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                        let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                        y.push(top * (1.0 - fy) + bottom * fy);
                    }
                }
            }
            y
        }
        Op::Mul => {
            let y = &ins[1].data;
            // [N, C, 1, 1] by channel, or the same shape element by element.
            let hw = if y.len() == x.data.len() {
                1
            } else {
                out[2..].iter().product()
            };
            x.data
                .iter()
                .enumerate()
                .map(|(k, a)| a * y[k / hw])
                .collect()
        }
        Op::ConstArith {
            arith,
            value,
            reversed,
        } => {
            let c = x.shape.get(1).copied().unwrap_or(1);
            let inner: usize = x.shape.get(2..).map_or(1, |s| s.iter().product());
            x.data
                .iter()
                .enumerate()
                .map(|(k, &v)| {
                    let ch = if value.len() == 1 { 0 } else { (k / inner) % c };
                    arith.apply(v, value[ch], *reversed)
                })
                .collect()
        }
        Op::Concat { axis } => {
            let outer: usize = out[..*axis].iter().product();
            let mut y = Vec::with_capacity(out.iter().product());
            for o in 0..outer {
                for t in ins {
                    let chunk: usize = t.shape[*axis..].iter().product();
                    y.extend_from_slice(&t.data[o * chunk..(o + 1) * chunk]);
                }
            }
            y
        }
        Op::GlobalAveragePool => {
            let plane: usize = x.shape[2..].iter().product();
            x.data
                .chunks(plane)
                .map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / plane as f64) as f32)
                .collect()
        }
        Op::AveragePool(p) => pool(p, x, out, false),
        Op::MaxPool(p) => pool(p, x, out, true),
        Op::Flatten | Op::Reshape { .. } => x.data.clone(),
        Op::Linear {
            weight,
            in_features,
            out_features,
            bias,
        } => {
            let (k, n) = (*in_features, *out_features);
            let mut y = Vec::with_capacity(out[0] * n);
            for row in x.data.chunks(k) {
                for o in 0..n {
                    let w = &weight[o * k..(o + 1) * k];
                    let mut s: f64 = bias.as_ref().map_or(0.0, |b| b[o] as f64);
                    for (a, b) in row.iter().zip(w) {
                        s += *a as f64 * *b as f64;
                    }
                    y.push(s as f32);
                }
            }
            y
        }
        Op::Pad { pads, value } => {
            let n: usize = out.iter().product();
            let mut y = vec![*value; n];
            let rank = out.len();
            for (src, &v) in x.data.iter().enumerate() {
                let (mut rem, mut off, mut stride) = (src, 0, 1);
                for d in (0..rank).rev() {
                    let i = rem % x.shape[d];
                    rem /= x.shape[d];
                    off += (i + pads[d].0) * stride;
                    stride *= out[d];
                }
                y[off] = v;
            }
            y
        }
        Op::Softmax {
            axis,
            log,
            coerce_2d,
        } => {
            // Normalized runs: `len` values `stride` apart.
            let (len, stride) = if *coerce_2d {
                (out[*axis..].iter().product::<usize>(), 1)
            } else {
                (out[*axis], out[*axis + 1..].iter().product::<usize>())
            };
            let mut y = x.data.clone();
            let block = len * stride;
            for b in 0..y.len() / block {
                for s in 0..stride {
                    let idx = |i: usize| b * block + i * stride + s;
                    let m = (0..len)
                        .map(|i| x.data[idx(i)])
                        .fold(f32::NEG_INFINITY, f32::max);
                    let sum: f64 = (0..len).map(|i| ((x.data[idx(i)] - m) as f64).exp()).sum();
                    for i in 0..len {
                        let z = (x.data[idx(i)] - m) as f64;
                        y[idx(i)] = if *log {
                            (z - sum.ln()) as f32
                        } else {
                            (z.exp() / sum) as f32
                        };
                    }
                }
            }
            y
        }
    }
}

fn conv(c: &Conv, x: &Tensor, out: &[usize]) -> Vec<f32> {
    let [oc, icg, kh, kw] = c.weight_dims;
    let (n, ic, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (oh, ow) = (out[2], out[3]);
    let ocg = oc / c.groups;
    let mut y = vec![0f32; n * oc * oh * ow];
    for b in 0..n {
        for o in 0..oc {
            let g = o / ocg;
            let bias = c.bias.as_ref().map_or(0.0, |v| v[o] as f64);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias;
                    for i in 0..icg {
                        let ch = g * icg + i;
                        let plane = &x.data[(b * ic + ch) * h * w..][..h * w];
                        let wk = &c.weight[((o * icg + i) * kh) * kw..][..kh * kw];
                        for ky in 0..kh {
                            let iy = (oy * c.stride[0] + ky * c.dilation[0]) as isize
                                - c.pads[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * c.stride[1] + kx * c.dilation[1]) as isize
                                    - c.pads[1] as isize;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                s += plane[iy as usize * w + ix as usize] as f64
                                    * wk[ky * kw + kx] as f64;
                            }
                        }
                    }
                    y[((b * oc + o) * oh + oy) * ow + ox] = s as f32;
                }
            }
        }
    }
    y
}

/// The scatter form: input pixel `(iy, ix)` adds to output `(iy s - top + fy, ix s - left + fx)`;
/// sums in f64.
fn conv_transpose(c: &ConvTranspose, x: &Tensor, out: &[usize]) -> Vec<f32> {
    let [ic, oc, kh, kw] = c.weight_dims;
    let (n, h, w) = (x.shape[0], x.shape[2], x.shape[3]);
    let (oh, ow) = (out[2], out[3]);
    let mut acc = vec![0f64; n * oc * oh * ow];
    for b in 0..n {
        for o in 0..oc {
            let bias = c.bias.as_ref().map_or(0.0, |v| v[o] as f64);
            let plane = &mut acc[(b * oc + o) * oh * ow..][..oh * ow];
            plane.iter_mut().for_each(|v| *v = bias);
            for i in 0..ic {
                let xs = &x.data[(b * ic + i) * h * w..][..h * w];
                let wk = &c.weight[(i * oc + o) * kh * kw..][..kh * kw];
                for iy in 0..h {
                    for ky in 0..kh {
                        let oy = (iy * c.stride[0] + ky) as isize - c.pads[0] as isize;
                        if oy < 0 || oy >= oh as isize {
                            continue;
                        }
                        for ix in 0..w {
                            let v = xs[iy * w + ix] as f64;
                            for kx in 0..kw {
                                let ox = (ix * c.stride[1] + kx) as isize - c.pads[1] as isize;
                                if ox < 0 || ox >= ow as isize {
                                    continue;
                                }
                                plane[oy as usize * ow + ox as usize] +=
                                    v * wk[ky * kw + kx] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

fn pool(p: &Pool, x: &Tensor, out: &[usize], max: bool) -> Vec<f32> {
    let (h, w) = (x.shape[2], x.shape[3]);
    let (oh, ow) = (out[2], out[3]);
    let planes = x.shape[0] * x.shape[1];
    let mut y = Vec::with_capacity(planes * oh * ow);
    for plane in x.data.chunks(h * w).take(planes) {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut m, mut s, mut inside) = (f32::NEG_INFINITY, 0f64, 0usize);
                let mut window = 0usize;
                for ky in 0..p.kernel[0] {
                    let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.pads[0] as isize;
                    for kx in 0..p.kernel[1] {
                        let ix =
                            (ox * p.stride[1] + kx * p.dilation[1]) as isize - p.pads[1] as isize;
                        // Count positions inside the padded extent for count_include_pad.
                        if iy < h as isize + p.pads[2] as isize
                            && ix < w as isize + p.pads[3] as isize
                        {
                            window += 1;
                        }
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let v = plane[iy as usize * w + ix as usize];
                        if v > m || v.is_nan() {
                            m = v;
                        }
                        s += v as f64;
                        inside += 1;
                    }
                }
                y.push(if max {
                    m
                } else if p.count_include_pad {
                    (s / window as f64) as f32
                } else {
                    (s / inside.max(1) as f64) as f32
                });
            }
        }
    }
    y
}
