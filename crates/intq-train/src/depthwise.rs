//! Depthwise convolution kernels (groups == in channels == out channels, weight `[C, 1, kh, kw]`)
//! for the training convolution ([`crate::conv::conv2d_train`]).
//!
//! Why: burn-flex 0.22.1 runs a grouped convolution as one convolution per group after permuting
//! and copying the input, forward and backward; for a depthwise layer every group is a single
//! plane, so nearly all of that time is copies and per-group setup. Here each (image, channel)
//! plane is computed on its own, planes in parallel.
//!
//! Each plane is first split into *phase planes* ([`Phases`]): with stride `s`, phase `(pi, pj)`
//! holds the padded input's rows `s r + pi` and columns `s c + pj` (zeros in the padding), in
//! rows `wq` long, `wq` being the output width plus the widest tap offset. Output `(oh, ow)`
//! under tap `(ki, kj)` then reads one phase plane at `(oh + a, ow + b)` for fixed `a`, `b`, so
//! over the flattened output (rows also `wq` long) every tap is one contiguous run: the forward
//! and the input gradient are `len`-long axpys and the weight gradient a `len`-long dot product,
//! with no bounds tests and no short rows (tiny-mobilenet's rows are 7 and 14 wide). The columns
//! past the output width are discarded (forward) or hold zeros (the gradient's copy of `dy`).
//!
//! The weight gradient is summed per (image, channel) plane and the partial sums are combined in
//! image order, so the result does not depend on the thread count.

use crate::conv::Geometry;
use rayon::prelude::*;

/// Planes per rayon task at least (a 14x14 plane is a few thousand flops).
const MIN_PLANES: usize = 8;

/// The phase-plane layout of one geometry (see the module documentation).
struct Phases {
    /// Rows and row length of each phase plane; the flattened output uses rows `wq` long too.
    hq: usize,
    wq: usize,
    /// Flattened output positions that hold an output: `(ho - 1) wq + wo`.
    len: usize,
    /// Per tap (row-major `ki, kj`): its phase plane and its offset in it.
    taps: Vec<(usize, usize)>,
    /// Phase planes some tap reads (the others are neither filled nor read).
    used: Vec<bool>,
}

impl Phases {
    /// `None` when the output is empty.
    fn new(g: &Geometry) -> Option<Phases> {
        if g.ho == 0 || g.wo == 0 {
            return None;
        }
        let [sh, sw] = g.stride;
        let hq = g.ho + (g.kh - 1) * g.dil[0] / sh;
        let wq = g.wo + (g.kw - 1) * g.dil[1] / sw;
        let mut used = vec![false; sh * sw];
        let mut taps = Vec::with_capacity(g.kh * g.kw);
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let (r, c) = (ki * g.dil[0], kj * g.dil[1]);
                let phase = (r % sh) * sw + c % sw;
                used[phase] = true;
                taps.push((phase, (r / sh) * wq + c / sw));
            }
        }
        Some(Phases {
            hq,
            wq,
            len: (g.ho - 1) * wq + g.wo,
            taps,
            used,
        })
    }

    fn plane(&self) -> usize {
        self.hq * self.wq
    }

    /// The input row of phase `phase`'s row `r`, `None` in the padding.
    fn row(&self, g: &Geometry, phase: usize, r: usize) -> Option<usize> {
        let ih = (g.stride[0] * r + phase / g.stride[1]).checked_sub(g.pad[0])?;
        (ih < g.h).then_some(ih)
    }

    /// Columns `[lo, hi)` of phase `phase`'s rows that lie inside the image, and the input
    /// column of column `lo` (the next ones are `stride` apart); `None` when there are none.
    fn cols(&self, g: &Geometry, phase: usize) -> Option<(usize, usize, usize)> {
        let (sw, pj, pad) = (g.stride[1], phase % g.stride[1], g.pad[1]);
        let lo = pad.saturating_sub(pj).div_ceil(sw);
        let hi = ((g.w + pad).checked_sub(pj + 1)? / sw + 1).min(self.wq);
        (lo < hi).then(|| (lo, hi, sw * lo + pj - pad))
    }

    /// The used phase planes of input plane `xp` into `out` (`sh sw` planes, zeros in the padding).
    fn split(&self, g: &Geometry, xp: &[f32], out: &mut [f32]) {
        let sw = g.stride[1];
        for (phase, dst) in out.chunks_exact_mut(self.plane()).enumerate() {
            if !self.used[phase] {
                continue;
            }
            let cols = self.cols(g, phase);
            for (r, row) in dst.chunks_exact_mut(self.wq).enumerate() {
                let (Some(ih), Some((lo, hi, iw))) = (self.row(g, phase, r), cols) else {
                    row.fill(0.0);
                    continue;
                };
                let src = &xp[ih * g.w..(ih + 1) * g.w];
                row[..lo].fill(0.0);
                row[hi..].fill(0.0);
                if sw == 1 {
                    row[lo..hi].copy_from_slice(&src[iw..iw + hi - lo]);
                } else {
                    for (d, v) in row[lo..hi].iter_mut().zip(src[iw..].iter().step_by(sw)) {
                        *d = *v;
                    }
                }
            }
        }
    }

    /// The input-plane gradient from the phase planes' gradients `dq` into `dxp`, which holds
    /// zeros (inverse of [`Phases::split`]; input pixels that no tap reads keep 0).
    fn merge(&self, g: &Geometry, dq: &[f32], dxp: &mut [f32]) {
        let sw = g.stride[1];
        for (phase, src) in dq.chunks_exact(self.plane()).enumerate() {
            let Some((lo, hi, iw)) = self.cols(g, phase).filter(|_| self.used[phase]) else {
                continue;
            };
            for (r, row) in src.chunks_exact(self.wq).enumerate() {
                let Some(ih) = self.row(g, phase, r) else {
                    continue;
                };
                let dst = &mut dxp[ih * g.w..(ih + 1) * g.w];
                if sw == 1 {
                    dst[iw..iw + hi - lo].copy_from_slice(&row[lo..hi]);
                } else {
                    for (d, v) in dst[iw..].iter_mut().step_by(sw).zip(&row[lo..hi]) {
                        *d = *v;
                    }
                }
            }
        }
    }
}

/// Per-task buffers, reused across the planes a rayon task computes.
#[derive(Default)]
struct Scratch {
    phases: Vec<f32>,
    flat: Vec<f32>,
    grad: Vec<f32>,
}

/// `v` as an `n`-long slice: zeros when it was not `n` long, else its contents as they were.
/// Within one call every plane has the same geometry, so a task's buffers are zeroed once.
fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() != n {
        v.clear();
        v.resize(n, 0.0);
    }
    v
}

/// `sum(a[i] * b[i])` in eight lanes (so it vectorizes), the lanes then added in order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y = depthwise(x, w) (+ b)`, NCHW in and out; `g.cin == g.cout` channels, `w` is
/// `[C, kh, kw]` contiguous.
pub fn forward(g: &Geometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (c, hw, p, t) = (g.cout, g.h * g.w, g.ho * g.wo, g.kh * g.kw);
    let mut y = vec![0.0f32; g.n * c * p];
    let Some(ph) = Phases::new(g) else {
        return y;
    };
    let pl = ph.plane();
    y.par_chunks_mut(p)
        .with_min_len(MIN_PLANES)
        .enumerate()
        .for_each_init(Scratch::default, |s, (pi, yp)| {
            let ch = pi % c;
            let wc = &w[ch * t..(ch + 1) * t];
            let phases = sized(&mut s.phases, g.stride[0] * g.stride[1] * pl);
            ph.split(g, &x[pi * hw..(pi + 1) * hw], phases);
            let flat = sized(&mut s.flat, ph.len);
            flat.fill(bias.map_or(0.0, |b| b[ch]));
            for (&wv, &(phase, off)) in wc.iter().zip(&ph.taps) {
                let src = &phases[phase * pl + off..][..ph.len];
                flat.iter_mut().zip(src).for_each(|(o, v)| *o += wv * v);
            }
            for (oh, row) in yp.chunks_exact_mut(g.wo).enumerate() {
                row.copy_from_slice(&flat[oh * ph.wq..][..g.wo]);
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
    let mut dx = vec![0.0f32; if want_dx { planes * hw } else { 0 }];
    let phases = Phases::new(g);
    let plane = |s: &mut Scratch, pi: usize, dxp: Option<&mut [f32]>, pp: &mut [f32]| {
        let Some(ph) = phases.as_ref() else { return };
        let pl = ph.plane();
        let ch = pi % c;
        let dyp = &dy[pi * p..(pi + 1) * p];
        let wc = &w[ch * t..(ch + 1) * t];
        if want_db {
            pp[t] = dyp.iter().sum();
        }
        // dy in rows wq long, zeros past the output width (never written, so zeros from
        // `sized`).
        let flat = sized(&mut s.flat, ph.len);
        for (oh, row) in dyp.chunks_exact(g.wo).enumerate() {
            flat[oh * ph.wq..][..g.wo].copy_from_slice(row);
        }
        if want_dw {
            let xq = sized(&mut s.phases, g.stride[0] * g.stride[1] * pl);
            ph.split(g, &x[pi * hw..(pi + 1) * hw], xq);
            for (dw, &(phase, off)) in pp[..t].iter_mut().zip(&ph.taps) {
                *dw = dot(flat, &xq[phase * pl + off..][..ph.len]);
            }
        }
        if let Some(dxp) = dxp {
            let dq = sized(&mut s.grad, g.stride[0] * g.stride[1] * pl);
            dq.fill(0.0);
            for (&wv, &(phase, off)) in wc.iter().zip(&ph.taps) {
                let dst = &mut dq[phase * pl + off..][..ph.len];
                dst.iter_mut()
                    .zip(flat.iter())
                    .for_each(|(o, v)| *o += wv * v);
            }
            ph.merge(g, dq, dxp);
        }
    };
    if p > 0 && (want_dw || want_db || want_dx) {
        if want_dx && hw > 0 {
            dx.par_chunks_mut(hw)
                .zip(part.par_chunks_mut(stride))
                .with_min_len(MIN_PLANES)
                .enumerate()
                .for_each_init(Scratch::default, |s, (pi, (dxp, pp))| {
                    plane(s, pi, Some(dxp), pp)
                });
        } else {
            part.par_chunks_mut(stride)
                .with_min_len(MIN_PLANES)
                .enumerate()
                .for_each_init(Scratch::default, |s, (pi, pp)| plane(s, pi, None, pp));
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
