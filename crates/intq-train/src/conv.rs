//! Training convolution (groups = 1) whose backward pass is this crate's own NCHW im2col + GEMM.
//!
//! Why: burn-flex 0.22.1's conv2d backward builds both gradients from permuted views that it then
//! copies to contiguous memory (`copy_2d_tiled`), a large share of a small-cnn step. Here the
//! weight gradient is `sum_n dY[n] x cols(X[n])^T` and the input gradient
//! `col2im(W^T x dY[n])`, both read straight from NCHW buffers with the transposes expressed as
//! GEMM strides, so nothing is permuted or copied. The forward stays flex's (already im2col +
//! GEMM). Depthwise convolutions (groups == in == out channels, weight `[C, 1, kh, kw]`) take
//! the direct per-plane kernels of [`crate::depthwise`], forward and backward. Anything else
//! (other grouped convolutions, tensors that are not tracked `Autodiff<Flex>`) goes to burn's
//! `conv2d` unchanged, so exact (f64) evaluation never reaches this code.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::{Autodiff, Flex};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Shape, Tensor, TensorData};
use intq_kernels::train_passes::{par_new, with_avx512};
use rayon::prelude::*;

type Ad = Autodiff<Flex>;

/// `conv2d` for training: same result as burn's, gradients from [`ConvBackward`].
pub fn conv2d_train(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    let (xd, wd) = (x.dims(), weight.dims());
    let depthwise = xd[1] == options.groups && wd[0] == options.groups && wd[1] == 1;
    if options.groups != 1 && !depthwise {
        return conv2d(x, weight, bias, options);
    }
    let xp = x.clone().try_into_primitive::<Ad>();
    let wp = weight.clone().try_into_primitive::<Ad>();
    let bp = bias.clone().map(|b| b.try_into_primitive::<Ad>());
    let (xp, wp, bp) = match (xp, wp, bp) {
        (Ok(xp), Ok(wp), None) => (xp, wp, None),
        (Ok(xp), Ok(wp), Some(Ok(bp))) => (xp, wp, Some(bp)),
        _ => return conv2d(x, weight, bias, options),
    };
    let (xi, xn) = xp.into_parts();
    let (wi, wn) = wp.into_parts();
    // Contiguous once: the forward reads these buffers and the backward keeps them.
    let (xi, wi) = (contiguous(&xi), contiguous(&wi));
    let state = ConvState {
        x: xi.clone(),
        w: wi.clone(),
        options: options.clone(),
    };
    let out = match bp {
        Some(bp) => {
            let (bi, bn) = bp.into_parts();
            match ConvBackward::<3>
                .prepare::<NoCheckpointing>([xn, wn, bn])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, forward(xi, wi, Some(bi), options)),
                OpsKind::UnTracked(prep) => prep.finish(forward(xi, wi, Some(bi), options)),
            }
        }
        None => match ConvBackward::<2>
            .prepare::<NoCheckpointing>([xn, wn])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, forward(xi, wi, None, options)),
            OpsKind::UnTracked(prep) => prep.finish(forward(xi, wi, None, options)),
        },
    };
    Tensor::from_primitive::<Ad>(out)
}

/// The forward on f32 buffers ([`conv_forward`]); flex's `conv2d` for anything else.
fn forward(
    x: FlexTensor,
    w: FlexTensor,
    b: Option<FlexTensor>,
    options: ConvOptions<2>,
) -> FlexTensor {
    let bc = b.as_ref().map(contiguous);
    let slices = (
        x.as_slice::<f32>(),
        w.as_slice::<f32>(),
        bc.as_ref().map(|b| b.as_slice::<f32>()),
    );
    let geometry = Geometry::forward(&x, &w, &options);
    match (slices, geometry) {
        ((Some(xs), Some(ws), bs), Some(g)) if !matches!(bs, Some(None)) => {
            let y = if options.groups == 1 {
                conv_forward(&g, xs, ws, bs.flatten())
            } else {
                crate::depthwise::forward(&g, xs, ws, bs.flatten())
            };
            tensor(y, [g.n, g.cout, g.ho, g.wo].into())
        }
        _ => Flex::conv2d(x, w, b, options),
    }
}

/// Backward step; `N` = 3 with a bias (its gradient is the third parent's), 2 without.
#[derive(Debug)]
struct ConvBackward<const N: usize>;

#[derive(Debug, Clone)]
struct ConvState {
    x: FlexTensor,
    w: FlexTensor,
    options: ConvOptions<2>,
}

impl<const N: usize> Backward<Flex, N> for ConvBackward<N> {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let mut parents = ops.parents.into_iter();
        let node_x = parents.next().flatten();
        let node_w = parents.next().flatten();
        let node_b = parents.next().flatten();
        let dy = grads.consume::<Flex>(&ops.node);
        let st = ops.state;
        // The forward ran, so its geometry is valid (flex rejects what `Geometry::forward` does).
        let g = Geometry::forward(&st.x, &st.w, &st.options).expect("the forward's geometry");
        let dy = contiguous(&dy);
        let (x, w, dy) = (
            st.x.as_slice::<f32>().expect("f32 input"),
            st.w.as_slice::<f32>().expect("f32 weight"),
            dy.as_slice::<f32>().expect("f32 gradient"),
        );
        let want = [node_x.is_some(), node_w.is_some(), node_b.is_some()];
        let (dx, dw, db) = if st.options.groups != 1 {
            crate::depthwise::backward(&g, x, w, dy, want)
        } else {
            let (dx, dw) = conv_backward(&g, x, w, dy, want[0], want[1]);
            let db = want[2].then(|| {
                let mut db = vec![0.0f32; g.cout];
                for img in dy.chunks_exact(g.cout * g.p()) {
                    for (d, row) in db.iter_mut().zip(img.chunks_exact(g.p())) {
                        *d += row.iter().sum::<f32>();
                    }
                }
                db
            });
            (dx, dw, db)
        };
        let shapes: [(_, _, Shape); 3] = [
            (node_x, dx, [g.n, g.cin, g.h, g.w].into()),
            (node_w, dw, st.w.layout().shape().to_vec().into()),
            (node_b, db, [g.cout].into()),
        ];
        for (node, v, shape) in shapes {
            if let (Some(node), Some(v)) = (node, v) {
                grads.register::<Flex>(node.id, tensor(v, shape));
            }
        }
    }
}

/// `t` itself when its f32 buffer is contiguous, else a contiguous copy (the custom ops read
/// buffers as plain slices).
pub(crate) fn contiguous(t: &FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t.clone()
    } else {
        t.to_contiguous()
    }
}

/// A flex tensor owning `v`.
pub(crate) fn tensor(v: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

/// Sizes of one convolution, NCHW input, OIHW weight.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub ho: usize,
    pub wo: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
}

impl Geometry {
    /// The geometry of `conv2d(x, w)` (output size from the options).
    /// `None` when the window does not fit (burn reports that).
    fn forward(x: &FlexTensor, w: &FlexTensor, o: &ConvOptions<2>) -> Option<Self> {
        let xs = x.layout().shape();
        let ws = w.layout().shape();
        if xs.len() != 4 || ws.len() != 4 || xs[1] != ws[1] * o.groups {
            return None;
        }
        let out = |i: usize, k: usize| {
            let span = i + o.padding[k].0 + o.padding[k].1;
            let window = o.dilation[k] * (ws[2 + k] - 1) + 1;
            span.checked_sub(window).map(|r| r / o.stride[k] + 1)
        };
        Some(Geometry {
            n: xs[0],
            cin: xs[1],
            h: xs[2],
            w: xs[3],
            cout: ws[0],
            kh: ws[2],
            kw: ws[3],
            ho: out(xs[2], 0)?,
            wo: out(xs[3], 1)?,
            stride: o.stride,
            pad: [o.padding[0].0, o.padding[1].0],
            dil: o.dilation,
        })
    }
    fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }
    fn p(&self) -> usize {
        self.ho * self.wo
    }
    /// Output columns `[lo, hi)` whose input column for kernel column `kj` lies inside the image.
    pub(crate) fn ow_range(&self, kj: usize) -> (usize, usize) {
        let (s, off) = (
            self.stride[1] as i64,
            (kj * self.dil[1]) as i64 - self.pad[1] as i64,
        );
        let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
        let last = self.w as i64 - 1 - off; // largest ow*s allowed
        let hi = if last < 0 { 0 } else { last / s + 1 };
        (
            lo.min(self.wo as i64) as usize,
            hi.min(self.wo as i64) as usize,
        )
    }
    pub(crate) fn ih(&self, oh: usize, ki: usize) -> Option<usize> {
        let ih = (oh * self.stride[0] + ki * self.dil[0]) as i64 - self.pad[0] as i64;
        (ih >= 0 && ih < self.h as i64).then_some(ih as usize)
    }
}

/// cols[(ci*kh + ki)*kw + kj][oh*wo + ow] = x[ci][ih][iw] (0 outside the image).
fn im2col(g: &Geometry, x: &[f32], cols: &mut [f32]) {
    with_avx512(
        #[inline(always)]
        || im2col_body(g, x, cols),
    )
}

#[inline(always)]
fn im2col_body(g: &Geometry, x: &[f32], cols: &mut [f32]) {
    let p = g.p();
    for ci in 0..g.cin {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &mut cols[((ci * g.kh + ki) * g.kw + kj) * p..][..p];
                let (lo, hi) = g.ow_range(kj);
                if g.stride == [1, 1] && g.dil == [1, 1] && g.wo == g.w {
                    shifted_row(g, plane, row, ki, kj, lo, hi);
                    continue;
                }
                let off = (kj * g.dil[1]) as i64 - g.pad[1] as i64;
                for oh in 0..g.ho {
                    let out = &mut row[oh * g.wo..(oh + 1) * g.wo];
                    let Some(ih) = g.ih(oh, ki) else {
                        out.fill(0.0);
                        continue;
                    };
                    let src = &plane[ih * g.w..(ih + 1) * g.w];
                    out[..lo].fill(0.0);
                    out[hi.max(lo)..].fill(0.0);
                    if g.stride[1] == 1 && lo < hi {
                        let s0 = (lo as i64 + off) as usize;
                        out[lo..hi].copy_from_slice(&src[s0..s0 + hi - lo]);
                    } else {
                        for (ow, o) in out.iter_mut().enumerate().take(hi).skip(lo) {
                            *o = src[(ow as i64 * g.stride[1] as i64 + off) as usize];
                        }
                    }
                }
            }
        }
    }
}

/// One im2col row (kernel tap `ki`, `kj`) of a stride-1, undilated convolution as wide as its
/// input: then `row[t] = plane[t + shift]` for one `shift`, so the row is one copy of the plane,
/// with the padding (rows outside the image, and the columns `[0, lo)`, `[hi, w)` where the
/// copy wrapped into a neighbouring row) zeroed after. One copy per row instead of one per
/// output row: for the 14- and 7-wide layers of small-cnn the short copies cost more in calls
/// than in data.
#[inline(always)]
fn shifted_row(
    g: &Geometry,
    plane: &[f32],
    row: &mut [f32],
    ki: usize,
    kj: usize,
    lo: usize,
    hi: usize,
) {
    let (w, hw) = (g.w as i64, (g.h * g.w) as i64);
    let off_h = ki as i64 - g.pad[0] as i64;
    let shift = off_h * w + kj as i64 - g.pad[1] as i64;
    // Output rows whose input row lies inside the image.
    let oh_lo = (-off_h).clamp(0, g.ho as i64);
    let oh_hi = (g.h as i64 - off_h).clamp(oh_lo, g.ho as i64);
    let (a, b) = (oh_lo * w, oh_hi * w);
    // Within them, the indices whose source lies inside the plane (the others are in padding
    // columns).
    let a2 = a.max(-shift).min(b);
    let b2 = b.min(hw - shift).max(a2);
    let (a, b, a2, b2) = (a as usize, b as usize, a2 as usize, b2 as usize);
    row[..a2].fill(0.0);
    if a2 < b2 {
        let s0 = (a2 as i64 + shift) as usize;
        row[a2..b2].copy_from_slice(&plane[s0..s0 + (b2 - a2)]);
    }
    row[b2..].fill(0.0);
    for oh in a / g.w..b / g.w {
        let r = &mut row[oh * g.w..(oh + 1) * g.w];
        r[..lo.min(g.w)].fill(0.0);
        r[hi.max(lo).min(g.w)..].fill(0.0);
    }
}

/// The adjoint of [`im2col`]: dx[ci][ih][iw] += dcols[row][col] (dx must start at 0).
fn col2im(g: &Geometry, dcols: &[f32], dx: &mut [f32]) {
    with_avx512(
        #[inline(always)]
        || col2im_body(g, dcols, dx),
    )
}

#[inline(always)]
fn col2im_body(g: &Geometry, dcols: &[f32], dx: &mut [f32]) {
    let p = g.p();
    for ci in 0..g.cin {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &dcols[((ci * g.kh + ki) * g.kw + kj) * p..][..p];
                let (lo, hi) = g.ow_range(kj);
                let off = (kj * g.dil[1]) as i64 - g.pad[1] as i64;
                for oh in 0..g.ho {
                    let Some(ih) = g.ih(oh, ki) else { continue };
                    let src = &row[oh * g.wo..(oh + 1) * g.wo];
                    let dst = &mut plane[ih * g.w..(ih + 1) * g.w];
                    if g.stride[1] == 1 && lo < hi {
                        let d0 = (lo as i64 + off) as usize;
                        let dst = &mut dst[d0..d0 + hi - lo];
                        dst.iter_mut().zip(&src[lo..hi]).for_each(|(d, v)| *d += v);
                    } else {
                        for (ow, v) in src.iter().enumerate().take(hi).skip(lo) {
                            dst[(ow as i64 * g.stride[1] as i64 + off) as usize] += v;
                        }
                    }
                }
            }
        }
    }
}

/// dst (m x n, row-major) = [dst +] lhs x rhs, lhs/rhs given by (row, column) strides.
#[allow(clippy::too_many_arguments)]
fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
) {
    assert!(dst.len() >= m * n);
    assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    assert!(n == 0 || k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the asserts above keep every index the GEMM reads or writes inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `y[n] = W x cols(X[n]) (+ b)` per image, images in parallel: NCHW in and out, no layout
/// change (flex's forward copies the input to NHWC on one thread first).
pub fn conv_forward(g: &Geometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let (xsz, ysz) = (g.cin * g.h * g.w, g.cout * p);
    // A 1x1, stride-1, unpadded window is the image itself. `pad` holds only the leading
    // padding: trailing padding (asymmetric, as burn allows) shows as a larger output.
    let pointwise = g.kh == 1
        && g.kw == 1
        && g.stride == [1, 1]
        && g.pad == [0, 0]
        && (g.ho, g.wo) == (g.h, g.w);
    // The GEMM scratch per thread; chunks are whole images.
    let (y, _) = par_new(
        g.n * ysz,
        ysz,
        || vec![0.0f32; if pointwise { 0 } else { k * p }],
        |cols, i, yi| {
            let xi = &x[i * xsz..(i + 1) * xsz];
            if let Some(b) = bias {
                for (row, &b) in yi.chunks_exact_mut(p).zip(b) {
                    row.fill(b);
                }
            }
            let cols: &[f32] = if pointwise {
                xi
            } else {
                im2col(g, xi, cols);
                cols
            };
            gemm_f32(g.cout, p, k, yi, bias.is_some(), w, k, 1, cols, p, 1);
        },
    );
    y
}

/// Image groups of the weight gradient: a fixed count, not the thread count, so the order of
/// its float sums (and so a seeded run) is the same on every machine and under every launcher.
const DW_GROUPS: usize = 8;

/// Input and weight gradients of a groups = 1 convolution, image groups spread over rayon's
/// threads.
pub fn conv_backward(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (k, p) = (g.k(), g.p());
    let (xsz, ysz) = (g.cin * g.h * g.w, g.cout * p);
    let per = g.n.div_ceil(DW_GROUPS).max(1);
    // Each task owns a run of images: their slice of dx and a private dW summed at the end.
    let task = |t: usize, mut dxc: Option<&mut [f32]>| {
        let mut cols = vec![0.0f32; k * p];
        let mut dw = if want_dw {
            vec![0.0f32; g.cout * k]
        } else {
            Vec::new()
        };
        let first = t * per;
        for i in first..(first + per).min(g.n) {
            let dyi = &dy[i * ysz..(i + 1) * ysz];
            if want_dw {
                im2col(g, &x[i * xsz..(i + 1) * xsz], &mut cols);
                // dW[co][r] += sum_p dY[co][p] cols[r][p]
                gemm_f32(g.cout, k, p, &mut dw, true, dyi, p, 1, &cols, 1, p);
            }
            if let Some(dxc) = dxc.as_deref_mut() {
                // dcols[r][p] = sum_co W[co][r] dY[co][p]
                gemm_f32(k, p, g.cout, &mut cols, false, w, 1, k, dyi, p, 1);
                col2im(g, &cols, &mut dxc[(i - first) * xsz..(i - first + 1) * xsz]);
            }
        }
        dw
    };
    let (dx, partial) = if want_dx {
        par_new(g.n * xsz, per * xsz, || (), |_, t, dxc| task(t, Some(dxc)))
    } else {
        let tasks = g.n.div_ceil(per);
        (
            Vec::new(),
            (0..tasks).into_par_iter().map(|t| task(t, None)).collect(),
        )
    };
    let dw = want_dw.then(|| {
        let mut it = partial.into_iter();
        let mut acc = it.next().unwrap_or_else(|| vec![0.0; g.cout * k]);
        for part in it {
            acc.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
        }
        acc
    });
    (want_dx.then_some(dx), dw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// im2col by its definition, one value at a time.
    fn im2col_by_definition(g: &Geometry, x: &[f32]) -> Vec<f32> {
        let mut cols = Vec::new();
        for ci in 0..g.cin {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    for oh in 0..g.ho {
                        for ow in 0..g.wo {
                            let ih = (oh * g.stride[0] + ki * g.dil[0]) as i64 - g.pad[0] as i64;
                            let iw = (ow * g.stride[1] + kj * g.dil[1]) as i64 - g.pad[1] as i64;
                            let inside =
                                (0..g.h as i64).contains(&ih) && (0..g.w as i64).contains(&iw);
                            cols.push(if inside {
                                x[(ci * g.h + ih as usize) * g.w + iw as usize]
                            } else {
                                0.0
                            });
                        }
                    }
                }
            }
        }
        cols
    }

    /// Every window size and leading/trailing padding up to 3 on small images, stride-1
    /// undilated ones (the single-copy rows) among them.
    #[test]
    fn im2col_matches_its_definition() {
        for (h, w) in [(1, 1), (3, 4), (5, 5), (7, 2)] {
            for (kh, kw) in [(1, 1), (1, 3), (3, 3), (2, 4)] {
                for (pt, pb, stride, dil) in
                    [(0, 0, 1, 1), (1, 1, 1, 1), (2, 0, 1, 1), (0, 3, 1, 1)]
                        .into_iter()
                        .chain([(1, 1, 2, 1), (1, 2, 1, 2)])
                {
                    let out = |i: usize, k: usize| {
                        (i + pt + pb)
                            .checked_sub(dil * (k - 1) + 1)
                            .map(|r| r / stride + 1)
                    };
                    let (Some(ho), Some(wo)) = (out(h, kh), out(w, kw)) else {
                        continue;
                    };
                    let g = Geometry {
                        n: 1,
                        cin: 2,
                        h,
                        w,
                        cout: 1,
                        kh,
                        kw,
                        ho,
                        wo,
                        stride: [stride; 2],
                        pad: [pt; 2],
                        dil: [dil; 2],
                    };
                    let x: Vec<f32> = (0..g.cin * h * w).map(|i| i as f32 + 1.0).collect();
                    let mut cols = vec![f32::NAN; g.k() * g.p()];
                    im2col(&g, &x, &mut cols);
                    assert_eq!(cols, im2col_by_definition(&g, &x), "{g:?}");
                }
            }
        }
    }
}
