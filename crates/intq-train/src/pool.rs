//! Training max pool (2-D, no dilation) as one autodiff op: the forward records each window's
//! winner as a `u32` offset in its plane, the backward adds `dy` there.
//!
//! Why: burn-flex 0.22.1's `max_pool2d` goes through its 3-D kernel with `i64` indices that it
//! then casts, clones and scatters, several full passes where one suffices. The
//! winner is flex's: the first maximum in row-major window order, a NaN always winning, so the
//! gradients are the same ones burn's op gives, ties (ReLU zeros) included.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Shape, Tensor, TensorData};

use crate::conv::{contiguous, tensor};
use intq_kernels::train_passes::{par_new, par_new2, with_avx512};

type Ad = Autodiff<Flex>;

/// Sizes of one pooling: `[n * c]` planes of `h x w` in, `ho x wo` out.
#[derive(Debug, Clone, Copy)]
struct PoolGeometry {
    planes: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    k: usize,
    s: usize,
    p: usize,
}

impl PoolGeometry {
    /// Input rows or columns `[lo, hi)` of output `o` (padding excluded).
    fn window(&self, o: usize, len: usize) -> (usize, usize) {
        let start = (o * self.s) as i64 - self.p as i64;
        let lo = start.max(0) as usize;
        let hi = ((start + self.k as i64).max(0) as usize).min(len);
        (lo, hi)
    }
}

/// `max_pool2d(x, [k, k], stride [s, s], padding [p, p])` for training; burn's op for anything
/// that is not an f32 `Autodiff<Flex>` tensor.
pub fn max_pool2d_train(x: Tensor<4>, k: usize, s: usize, p: usize) -> Tensor<4> {
    let burn_op = |x: Tensor<4>| {
        max_pool2d(
            x,
            MaxPoolOptions::new([k, k])
                .with_stride([s, s])
                .with_padding([p, p]),
        )
    };
    if x.dtype() != burn::tensor::DType::F32 || k == 0 || s == 0 || p * 2 > k {
        return burn_op(x);
    }
    let Ok(prim) = x.clone().try_into_primitive::<Ad>() else {
        return burn_op(x);
    };
    let (xi, xn) = prim.into_parts();
    let xi = contiguous(&xi);
    let [n, c, h, w] = x.dims();
    let (Some(ho), Some(wo)) = (
        (h + 2 * p).checked_sub(k).map(|r| r / s + 1),
        (w + 2 * p).checked_sub(k).map(|r| r / s + 1),
    ) else {
        return burn_op(x);
    };
    let g = PoolGeometry {
        planes: n * c,
        h,
        w,
        ho,
        wo,
        k,
        s,
        p,
    };
    let xs = xi.as_slice::<f32>().expect("contiguous f32");
    let (out, winners) = forward(&g, xs);
    let out = FlexTensor::from_data(TensorData::new(out, Shape::from(vec![n, c, ho, wo])));
    let state = PoolState {
        g,
        winners,
        shape: [n, c, h, w],
    };
    let y = match MaxPoolBackward
        .prepare::<NoCheckpointing>([xn])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive::<Ad>(y)
}

/// Window maxima and their winners' offsets in the plane, plane by plane in parallel.
fn forward(g: &PoolGeometry, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let (ip, op) = (g.h * g.w, g.ho * g.wo);
    par_new2(g.planes * op, op, |i, o, wi| {
        let xp = &x[i * ip..(i + 1) * ip];
        if g.k == 2 && g.s == 2 && g.p == 0 {
            with_avx512(
                #[inline(always)]
                || pool_2x2(g, xp, o, wi),
            );
            return;
        }
        for oh in 0..g.ho {
            let (h0, h1) = g.window(oh, g.h);
            for ow in 0..g.wo {
                let (w0, w1) = g.window(ow, g.w);
                let mut best = f32::NEG_INFINITY;
                let mut at = usize::MAX;
                for ih in h0..h1 {
                    for (iw, &v) in xp[ih * g.w + w0..ih * g.w + w1].iter().enumerate() {
                        if at == usize::MAX || v > best || v.is_nan() {
                            best = v;
                            at = ih * g.w + w0 + iw;
                        }
                    }
                }
                // p * 2 <= k keeps every window inside the image by at least one pixel.
                o[oh * g.wo + ow] = best;
                wi[oh * g.wo + ow] = at as u32;
            }
        }
    })
}

/// The 2x2, stride-2 pool of small-cnn: every window whole, its four taps in flex's order.
#[inline(always)]
fn pool_2x2(g: &PoolGeometry, xp: &[f32], o: &mut [f32], wi: &mut [u32]) {
    for oh in 0..g.ho {
        let (r0, r1) = (2 * oh * g.w, (2 * oh + 1) * g.w);
        let (o, wi) = (
            &mut o[oh * g.wo..(oh + 1) * g.wo],
            &mut wi[oh * g.wo..(oh + 1) * g.wo],
        );
        // Selects, not branches: which tap wins is data-dependent, and the compiler turns these
        // into vector blends.
        for (ow, (o, wi)) in o.iter_mut().zip(wi.iter_mut()).enumerate() {
            let t0 = r0 + 2 * ow;
            let taps = [t0, t0 + 1, r1 + 2 * ow, r1 + 2 * ow + 1];
            let (mut best, mut at) = (xp[t0], t0 as u32);
            for &t in &taps[1..] {
                let v = xp[t];
                let take = v > best || v.is_nan();
                best = if take { v } else { best };
                at = if take { t as u32 } else { at };
            }
            *o = best;
            *wi = at;
        }
    }
}

#[derive(Debug)]
struct MaxPoolBackward;

#[derive(Debug, Clone)]
struct PoolState {
    g: PoolGeometry,
    winners: Vec<u32>,
    shape: [usize; 4],
}

impl Backward<Flex, 1> for MaxPoolBackward {
    type State = PoolState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let Some(node) = node else {
            return;
        };
        let dy = contiguous(&dy);
        let dy = dy.as_slice::<f32>().expect("f32 gradient");
        let st = ops.state;
        let g = st.g;
        let (ip, op) = (g.h * g.w, g.ho * g.wo);
        let (dx, _) = par_new(
            g.planes * ip,
            ip,
            || (),
            |_, i, d| {
                let (gy, wi) = (&dy[i * op..(i + 1) * op], &st.winners[i * op..(i + 1) * op]);
                for (&v, &at) in gy.iter().zip(wi) {
                    d[at as usize] += v;
                }
            },
        );
        grads.register::<Flex>(node.id, tensor(dx, Shape::from(st.shape.to_vec())));
    }
}
