//! Depthwise convolution kernels (groups == in channels == out channels, weight `[C, 1, kh, kw]`)
//! for the training convolution ([`crate::conv::conv2d_train`]).
//!
//! Why: burn-flex 0.22.1 runs a grouped convolution as one convolution per group after permuting
//! and copying the input, forward and backward; for a depthwise layer every group is a single
//! plane, so nearly all of that time is copies and per-group setup. Here each (image, channel)
//! plane is computed with direct loops over the kernel taps, planes in parallel. For each tap the
//! output columns whose input column lies inside the image are one range (`Geometry::ow_range`),
//! so the inner loops over output columns carry no bounds branches; columns outside the range
//! read padding and contribute nothing.
//!
//! The weight gradient is summed per (image, channel) plane and the partial sums are combined in
//! image order, so the result does not depend on the thread count.

use crate::conv::Geometry;
use rayon::prelude::*;

/// Planes per rayon task at least (a 14x14 plane is a few thousand flops).
const MIN_PLANES: usize = 8;

/// Start and (exclusive) end of the strided input run read by output columns `[lo, hi)` for the
/// tap whose column offset is `off`.
fn span(g: &Geometry, lo: usize, hi: usize, off: i64) -> (usize, usize) {
    let s = g.stride[1];
    let start = (lo as i64 * s as i64 + off) as usize;
    (start, start + (hi - lo - 1) * s + 1)
}

/// Per kernel column: the output columns `[lo, hi)` inside the image and their input run
/// `[a, b)` (`None` when no output column reads the image for that tap).
fn runs(g: &Geometry) -> Vec<Option<[usize; 4]>> {
    (0..g.kw)
        .map(|kj| {
            let (lo, hi) = g.ow_range(kj);
            (lo < hi).then(|| {
                let (a, b) = span(g, lo, hi, (kj * g.dil[1]) as i64 - g.pad[1] as i64);
                [lo, hi, a, b]
            })
        })
        .collect()
}

/// `y = depthwise(x, w) (+ b)`, NCHW in and out; `g.cin == g.cout` channels, `w` is
/// `[C, kh, kw]` contiguous.
pub fn forward(g: &Geometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (c, hw, p, t) = (g.cout, g.h * g.w, g.ho * g.wo, g.kh * g.kw);
    let mut y = vec![0.0f32; g.n * c * p];
    let runs = runs(g);
    if p == 0 {
        return y;
    }
    y.par_chunks_mut(p)
        .with_min_len(MIN_PLANES)
        .enumerate()
        .for_each(|(pi, yp)| {
            let ch = pi % c;
            let xp = &x[pi * hw..(pi + 1) * hw];
            let wc = &w[ch * t..(ch + 1) * t];
            yp.fill(bias.map_or(0.0, |b| b[ch]));
            for oh in 0..g.ho {
                let dst = &mut yp[oh * g.wo..(oh + 1) * g.wo];
                for ki in 0..g.kh {
                    let Some(ih) = g.ih(oh, ki) else { continue };
                    let src = &xp[ih * g.w..(ih + 1) * g.w];
                    for kj in 0..g.kw {
                        let wv = wc[ki * g.kw + kj];
                        let Some([lo, hi, a, b]) = runs[kj] else {
                            continue;
                        };
                        let out = &mut dst[lo..hi];
                        if g.stride[1] == 1 {
                            out.iter_mut()
                                .zip(&src[a..b])
                                .for_each(|(o, v)| *o += wv * v);
                        } else {
                            out.iter_mut()
                                .zip(src[a..b].iter().step_by(g.stride[1]))
                                .for_each(|(o, v)| *o += wv * v);
                        }
                    }
                }
            }
        });
    y
}

/// Gradients of [`forward`]: dX (`[N, C, H, W]`), dW (`[C, kh, kw]`) and db (`[C]`), each only
/// when asked for. Each task owns whole dX planes (no atomics); dW and db are summed per plane
/// and combined in image order.
#[allow(clippy::type_complexity)]
pub fn backward(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want: [bool; 3],
) -> (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<f32>>) {
    let [want_dx, want_dw, want_db] = want;
    let (c, hw, p, t) = (g.cout, g.h * g.w, g.ho * g.wo, g.kh * g.kw);
    let planes = g.n * c;
    // Per plane: t weight-gradient partials, then the bias partial.
    let stride = t + 1;
    let mut part = vec![0.0f32; planes * stride];
    let runs = runs(g);
    let mut dx = vec![0.0f32; if want_dx { planes * hw } else { 0 }];
    let plane = |pi: usize, dxp: Option<&mut [f32]>, pp: &mut [f32]| {
        let ch = pi % c;
        let xp = &x[pi * hw..(pi + 1) * hw];
        let dyp = &dy[pi * p..(pi + 1) * p];
        let wc = &w[ch * t..(ch + 1) * t];
        if want_db {
            pp[t] = dyp.iter().sum();
        }
        if want_dw {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let Some([lo, hi, a, b]) = runs[kj] else {
                        continue;
                    };
                    let mut acc = 0.0f32;
                    for oh in 0..g.ho {
                        let Some(ih) = g.ih(oh, ki) else { continue };
                        let src = &xp[ih * g.w..(ih + 1) * g.w][a..b];
                        let d = &dyp[oh * g.wo..(oh + 1) * g.wo][lo..hi];
                        acc += if g.stride[1] == 1 {
                            d.iter().zip(src).map(|(d, v)| d * v).sum::<f32>()
                        } else {
                            d.iter()
                                .zip(src.iter().step_by(g.stride[1]))
                                .map(|(d, v)| d * v)
                                .sum::<f32>()
                        };
                    }
                    pp[ki * g.kw + kj] = acc;
                }
            }
        }
        if let Some(dxp) = dxp {
            for oh in 0..g.ho {
                let d = &dyp[oh * g.wo..(oh + 1) * g.wo];
                for ki in 0..g.kh {
                    let Some(ih) = g.ih(oh, ki) else { continue };
                    let dst = &mut dxp[ih * g.w..(ih + 1) * g.w];
                    for kj in 0..g.kw {
                        let wv = wc[ki * g.kw + kj];
                        let Some([lo, hi, a, b]) = runs[kj] else {
                            continue;
                        };
                        if g.stride[1] == 1 {
                            dst[a..b]
                                .iter_mut()
                                .zip(&d[lo..hi])
                                .for_each(|(o, v)| *o += wv * v);
                        } else {
                            dst[a..b]
                                .iter_mut()
                                .step_by(g.stride[1])
                                .zip(&d[lo..hi])
                                .for_each(|(o, v)| *o += wv * v);
                        }
                    }
                }
            }
        }
    };
    if p > 0 && (want_dw || want_db || want_dx) {
        if want_dx && hw > 0 {
            dx.par_chunks_mut(hw)
                .zip(part.par_chunks_mut(stride))
                .with_min_len(MIN_PLANES)
                .enumerate()
                .for_each(|(pi, (dxp, pp))| plane(pi, Some(dxp), pp));
        } else {
            part.par_chunks_mut(stride)
                .with_min_len(MIN_PLANES)
                .enumerate()
                .for_each(|(pi, pp)| plane(pi, None, pp));
        }
    }
    // Fixed order: image 0, 1, ... for every channel.
    let combine = |weights: bool| {
        let mut acc = vec![0.0f32; if weights { c * t } else { c }];
        for img in part.chunks_exact(c * stride) {
            for (ch, pp) in img.chunks_exact(stride).enumerate() {
                if weights {
                    acc[ch * t..(ch + 1) * t]
                        .iter_mut()
                        .zip(&pp[..t])
                        .for_each(|(a, v)| *a += v);
                } else {
                    acc[ch] += pp[t];
                }
            }
        }
        acc
    };
    let dw = want_dw.then(|| combine(true));
    let db = want_db.then(|| combine(false));
    (want_dx.then_some(dx), dw, db)
}
