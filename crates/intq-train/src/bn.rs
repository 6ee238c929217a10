//! Training-mode batch norm fused with the QAT fold's rescale and the clamp activation, as one
//! autodiff op over NCHW buffers.
//!
//! Why: burn 0.22.1's `batch_norm_train` reduces each channel through `swap_dims(0, 1)` +
//! `reshape`, which flex materializes as a transposed copy (`copy_2d_tiled`), twice forward and
//! twice backward; the rescale `y / sf` and the ReLU/ReLU6 clamp add a broadcast reduction and a
//! mask pass each. Here the statistics are per-(image, channel) partial sums over contiguous
//! planes, combined in a fixed order (so the result does not depend on the thread count), and the
//! backward is the closed form of docs/spec.md §3.2's normalization. Only the input `y` is kept for
//! the backward (shared, not copied); `y / sf` and `x_hat` are recomputed there.
//!
//! With `z = gamma * x_hat + beta`, `x_hat = (y0 - mean) * inv`, `y0 = y / div`,
//! `inv = 1 / sqrt(var + eps)` over the `m = N * H * W` values of a channel:
//! `dz = dout * [act passes z]`, `dbeta = sum dz`, `dgamma = sum dz * x_hat`,
//! `dy0 = gamma * inv / m * (m * dz - dbeta - x_hat * dgamma)`, `dy = dy0 / div`, and
//! `ddiv = -sum(dy0 * y0) / div = -gamma * dgamma * eps * inv^2 / div` (the batch statistics
//! make the output invariant to the scale of `y0` but for `eps`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::module::batch_norm_train;
use burn::tensor::{Shape, Tensor, TensorData};
use rayon::prelude::*;

use crate::conv::{contiguous, tensor};
use crate::layers::{ACT_RELU, ACT_RELU6};
use intq_kernels::train_passes::{bn_lane_sums8, par_new, with_avx512};

type Ad = Autodiff<Flex>;

/// Output and the batch statistics of `y / div` (mean, biased variance; untracked).
pub struct BnActTrain {
    pub output: Tensor<4>,
    pub mean: Tensor<1>,
    pub variance: Tensor<1>,
}

/// `act(batch_norm_train(y / div, gamma, beta, eps))` with `div` broadcast over channels
/// (`None`: 1), for tracked `Autodiff<Flex>` f32 tensors; anything else runs the same maths
/// as burn ops.
pub fn bn_act_train(
    y: Tensor<4>,
    div: Option<Tensor<1>>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    act: u8,
) -> BnActTrain {
    match fused(&y, div.as_ref(), &gamma, &beta, eps, act) {
        Some(r) => r,
        None => composed(y, div, gamma, beta, eps, act),
    }
}

/// The same function as burn ops (the reference the fused op is tested against).
pub fn composed(
    y: Tensor<4>,
    div: Option<Tensor<1>>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    act: u8,
) -> BnActTrain {
    let c = y.dims()[1];
    let y0 = match div {
        Some(d) => y / d.reshape([1, c, 1, 1]),
        None => y,
    };
    let r = batch_norm_train(y0, gamma, beta, eps);
    let output = match act {
        ACT_RELU => r.output.clamp_min(0.0),
        ACT_RELU6 => r.output.clamp(0.0, 6.0),
        _ => r.output,
    };
    BnActTrain {
        output,
        mean: r.mean,
        variance: r.variance,
    }
}

fn fused(
    y: &Tensor<4>,
    div: Option<&Tensor<1>>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    eps: f64,
    act: u8,
) -> Option<BnActTrain> {
    if y.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    let device = y.device();
    let (yi, yn) = y.clone().try_into_primitive::<Ad>().ok()?.into_parts();
    let (gi, gn) = gamma.clone().try_into_primitive::<Ad>().ok()?.into_parts();
    let (bi, bn) = beta.clone().try_into_primitive::<Ad>().ok()?.into_parts();
    let div = match div {
        Some(d) => Some(d.clone().try_into_primitive::<Ad>().ok()?.into_parts()),
        None => None,
    };
    let yi = contiguous(&yi);
    let dims = yi.layout().shape().to_vec();
    let (n, c) = (dims[0], dims[1]);
    let plane: usize = dims[2..].iter().product();
    let vec_of = |t: &FlexTensor| contiguous(t).as_slice::<f32>().map(|s| s.to_vec());
    let g = vec_of(&gi)?;
    let b = vec_of(&bi)?;
    let dv = match &div {
        Some((di, _)) => vec_of(di)?,
        None => vec![1.0; c],
    };
    let ys = yi.as_slice::<f32>()?;
    if g.len() != c || b.len() != c || dv.len() != c || ys.len() != n * c * plane || plane == 0 {
        return None;
    }
    let stats = Stats::new(ys, &dv, n, c, plane, eps);
    let (out, _) = par_new(
        ys.len(),
        c * plane,
        || (),
        |_, i, o| {
            let yimg = &ys[i * c * plane..(i + 1) * c * plane];
            with_avx512(
                #[inline(always)]
                || {
                    for ch in 0..c {
                        let (a, bx, gc, bc) = (stats.a[ch], stats.b[ch], g[ch], b[ch]);
                        let src = &yimg[ch * plane..(ch + 1) * plane];
                        let dst = &mut o[ch * plane..(ch + 1) * plane];
                        let z = |v: f32| gc * (v * a + bx) + bc;
                        // The activation is chosen outside the loop, so each loop vectorizes.
                        match act {
                            ACT_RELU => dst.iter_mut().zip(src).for_each(|(o, &v)| {
                                *o = z(v).max(0.0);
                            }),
                            ACT_RELU6 => dst.iter_mut().zip(src).for_each(|(o, &v)| {
                                *o = z(v).clamp(0.0, 6.0);
                            }),
                            _ => dst.iter_mut().zip(src).for_each(|(o, &v)| {
                                *o = z(v);
                            }),
                        }
                    }
                },
            )
        },
    );
    let mean = Tensor::<1>::from_data(TensorData::new(stats.mean.clone(), [c]), &device);
    let variance = Tensor::<1>::from_data(TensorData::new(stats.var.clone(), [c]), &device);
    let out = FlexTensor::from_data(TensorData::new(out, Shape::from(dims)));
    let state = BnState {
        y: yi,
        gamma: g,
        beta: b,
        div: dv,
        stats,
        act,
    };
    let output = match div {
        Some((_, dn)) => {
            match BnBackward::<4>
                .prepare::<NoCheckpointing>([yn, gn, bn, dn])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            }
        }
        None => match BnBackward::<3>
            .prepare::<NoCheckpointing>([yn, gn, bn])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
    };
    Some(BnActTrain {
        output: Tensor::from_primitive::<Ad>(output),
        mean,
        variance,
    })
}

/// The closed range in which the clamp passes the gradient (burn's clamp does the same).
fn pass_range(act: u8) -> (f32, f32) {
    match act {
        ACT_RELU => (0.0, f32::INFINITY),
        ACT_RELU6 => (0.0, 6.0),
        _ => (f32::NEG_INFINITY, f32::INFINITY),
    }
}

/// Per-channel batch statistics of `y0 = y / div`, and `x_hat = y * a + b` with
/// `a = inv / div`, `b = -mean(y) * a` (no division per element, the same expression in the
/// forward and the backward, so both see the same activation mask).
#[derive(Debug, Clone)]
struct Stats {
    n: usize,
    c: usize,
    plane: usize,
    mean: Vec<f32>,
    var: Vec<f32>,
    inv: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    eps: f64,
}

impl Stats {
    fn new(y: &[f32], div: &[f32], n: usize, c: usize, plane: usize, eps: f64) -> Self {
        let m = (n * plane) as f64;
        // Moments of y, then of y0 = y / div: mean0 = mean / div, var0 = var / div^2.
        let mu: Vec<f32> = per_channel_sums(y, n, c, plane, |_, p| lane_sum(p, |v| v))
            .into_iter()
            .map(|s| (s / m) as f32)
            .collect();
        let ss = per_channel_sums(y, n, c, plane, |ch, p| {
            let mc = mu[ch];
            lane_sum(p, |v| (v - mc) * (v - mc))
        });
        let mut st = Stats {
            n,
            c,
            plane,
            mean: vec![0.0; c],
            var: vec![0.0; c],
            inv: vec![0.0; c],
            a: vec![0.0; c],
            b: vec![0.0; c],
            eps,
        };
        for ch in 0..c {
            let d = div[ch] as f64;
            let var = ss[ch] / m / (d * d);
            let inv = 1.0 / (var + eps).sqrt();
            st.mean[ch] = (mu[ch] as f64 / d) as f32;
            st.var[ch] = var as f32;
            st.inv[ch] = inv as f32;
            st.a[ch] = (inv / d) as f32;
            st.b[ch] = (-(mu[ch] as f64) * inv / d) as f32;
        }
        st
    }
}

/// `sum f(v)` over a plane in eight f32 lanes (so it vectorizes), the lanes added in f64.
#[inline]
fn lane_sum(p: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0f32; 8];
    let mut chunks = p.chunks_exact(8);
    for ch in &mut chunks {
        // A fixed-size array, so the eight lanes become one vector.
        let ch: &[f32; 8] = ch.try_into().expect("chunks of eight");
        for l in 0..8 {
            acc[l] += f(ch[l]);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v) as f64).sum();
    acc.iter().map(|&a| a as f64).sum::<f64>() + tail
}

/// `sum f(ch, plane)` per channel of an NCHW buffer: per-image partials (in parallel), added
/// in image order, so the sums do not depend on how rayon splits the work.
fn per_channel_sums(
    buf: &[f32],
    n: usize,
    c: usize,
    plane: usize,
    f: impl Fn(usize, &[f32]) -> f64 + Sync,
) -> Vec<f64> {
    let parts: Vec<Vec<f64>> = buf[..n * c * plane]
        .par_chunks(c * plane)
        .map(|img| {
            with_avx512(
                #[inline(always)]
                || {
                    // A loop, not `collect`: `from_iter` would not inline into the AVX-512 copy.
                    let mut sums = Vec::with_capacity(c);
                    for ch in 0..c {
                        sums.push(f(ch, &img[ch * plane..(ch + 1) * plane]));
                    }
                    sums
                },
            )
        })
        .collect();
    let mut acc = vec![0f64; c];
    for p in &parts {
        acc.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    acc
}

/// Backward step; parents `[y, gamma, beta]` (`N` = 3) or `[y, gamma, beta, div]` (4).
#[derive(Debug)]
struct BnBackward<const N: usize>;

#[derive(Debug, Clone)]
struct BnState {
    y: FlexTensor,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    div: Vec<f32>,
    stats: Stats,
    act: u8,
}

impl<const N: usize> Backward<Flex, N> for BnBackward<N> {
    type State = BnState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let mut parents = ops.parents.into_iter();
        let node_y = parents.next().flatten();
        let node_g = parents.next().flatten();
        let node_b = parents.next().flatten();
        let node_d = parents.next().flatten();
        let dout = contiguous(&grads.consume::<Flex>(&ops.node));
        let st = ops.state;
        let s = &st.stats;
        let (n, c, plane) = (s.n, s.c, s.plane);
        let y = st.y.as_slice::<f32>().expect("f32 input");
        let dout = dout.as_slice::<f32>().expect("f32 gradient");
        let gm = &st.gamma;
        let (lo, hi) = pass_range(st.act);
        // Per channel: x_hat's a and b, gamma, beta (hoisted so the plane loops vectorize).
        let consts = |ch: usize| (s.a[ch], s.b[ch], gm[ch], st.beta[ch]);
        // dz and x_hat of one element.
        #[inline(always)]
        fn dz(
            v: f32,
            g: f32,
            (a, b, gamma, beta): (f32, f32, f32, f32),
            lo: f32,
            hi: f32,
        ) -> (f32, f32) {
            let xh = v * a + b;
            let z = gamma * xh + beta;
            // `&`, not `&&`: both compares always run, so the select needs no branch.
            (if (z >= lo) & (z <= hi) { g } else { 0.0 }, xh)
        }
        // Pass 1: dbeta = sum dz and dgamma = sum dz * x_hat, per image (eight f32 lanes per
        // plane) then in image order.
        let parts: Vec<Vec<(f64, f64)>> = y
            .par_chunks(c * plane)
            .zip(dout.par_chunks(c * plane))
            .map(|(yi, gi)| {
                with_avx512(
                    #[inline(always)]
                    || {
                        // A loop, not `collect` (see `per_channel_sums`).
                        let mut sums = Vec::with_capacity(c);
                        for ch in 0..c {
                            sums.push({
                                let k = consts(ch);
                                let r = ch * plane..(ch + 1) * plane;
                                let (yc, gc) =
                                    (yi[r.clone()].chunks_exact(8), gi[r].chunks_exact(8));
                                let (yt, gt) = (yc.remainder(), gc.remainder());
                                let (sb, sg) = bn_lane_sums8(yc, gc, k, lo, hi);
                                let (mut b, mut g) = (0f64, 0f64);
                                for (&v, &gr) in yt.iter().zip(gt) {
                                    let (d, xh) = dz(v, gr, k, lo, hi);
                                    b += d as f64;
                                    g += (d * xh) as f64;
                                }
                                (
                                    b + sb.iter().map(|&v| v as f64).sum::<f64>(),
                                    g + sg.iter().map(|&v| v as f64).sum::<f64>(),
                                )
                            });
                        }
                        sums
                    },
                )
            })
            .collect();
        let mut dbeta = vec![0f64; c];
        let mut dgamma = vec![0f64; c];
        for p in &parts {
            for (ch, &(b, g)) in p.iter().enumerate() {
                dbeta[ch] += b;
                dgamma[ch] += g;
            }
        }
        let m = (n * plane) as f32;
        if let Some(node) = node_y {
            let (db, dg): (Vec<f32>, Vec<f32>) = (
                dbeta.iter().map(|&v| v as f32).collect(),
                dgamma.iter().map(|&v| v as f32).collect(),
            );
            let cp = c * plane;
            let (dy, _) = par_new(
                y.len(),
                cp,
                || (),
                |_, i, o| {
                    let (yi, gi) = (&y[i * cp..(i + 1) * cp], &dout[i * cp..(i + 1) * cp]);
                    with_avx512(
                        #[inline(always)]
                        || {
                            for ch in 0..c {
                                let cs = consts(ch);
                                let k = gm[ch] * s.inv[ch] / m / st.div[ch];
                                let (km, kb, kg) = (k * m, k * db[ch], k * dg[ch]);
                                let r = ch * plane..(ch + 1) * plane;
                                for ((o, &v), &g) in
                                    o[r.clone()].iter_mut().zip(&yi[r.clone()]).zip(&gi[r])
                                {
                                    let (d, xh) = dz(v, g, cs, lo, hi);
                                    *o = km * d - (kb + xh * kg);
                                }
                            }
                        },
                    )
                },
            );
            let shape = Shape::from(st.y.layout().shape().to_vec());
            grads.register::<Flex>(node.id, tensor(dy, shape));
        }
        if let Some(node) = node_g {
            let v = dgamma.iter().map(|&v| v as f32).collect();
            grads.register::<Flex>(node.id, tensor(v, [c].into()));
        }
        if let Some(node) = node_b {
            let v = dbeta.iter().map(|&v| v as f32).collect();
            grads.register::<Flex>(node.id, tensor(v, [c].into()));
        }
        if let Some(node) = node_d {
            let v = (0..c)
                .map(|ch| {
                    let inv = s.inv[ch] as f64;
                    (-(st.gamma[ch] as f64) * dgamma[ch] * s.eps * inv * inv / st.div[ch] as f64)
                        as f32
                })
                .collect();
            grads.register::<Flex>(node.id, tensor(v, [c].into()));
        }
    }
}
