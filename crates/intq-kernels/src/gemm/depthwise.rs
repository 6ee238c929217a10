//! Depthwise convolution on the fast tiers: direct, for every output pixel the window's taps
//! accumulated across channels (contiguous in NHWC, so the loop vectorizes), the row finished by
//! the tier's vector output stage; with depth multiplier 1 on the x86 tiers, the pair kernels
//! (`vpmaddwd` on two taps at once, the input zero point folded into the bias).
//!
//! The pair kernels' tap layout and constants ([`dw_pairs`], [`DwConsts`]) are plain data made
//! here for every tier that has one; each tier derives its own layout from [`dw_pairs`] through
//! its table's `dw_layout`.

use super::{Code8, Epilogue, Kernels};
use crate::isa::Isa;
use crate::{ConvParams, OutputStage};

/// A depthwise convolution with its filter widened and zero-point-shifted once.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwisePlan {
    kernels: &'static Kernels,
    /// `w - Z_w[c]` per tap and output channel, `[kh * kw][out_c]`, wrapping.
    taps: Vec<i32>,
    filter_shape: [usize; 4],
    depth_multiplier: usize,
    params: ConvParams,
    input_zero_point: i32,
    epi: Epilogue,
    /// The pair kernel's data (the table's `dw_run`): the taps paired for `vpmaddwd` in the
    /// tier's layout, and the output constants with `Z_in` folded into the bias; `None` unless
    /// its preconditions hold (a tier with a pair kernel, depth multiplier 1, taps and `Z_in` in
    /// int16, a vector epilogue).
    pairs: Option<(Vec<i16>, DwConsts)>,
    /// The quad kernel's data (the table's `dw_quads`), preferred to the pair kernel where its
    /// preconditions hold (see [`DwQuads::new`]).
    quads: Option<DwQuads>,
}

impl DepthwisePlan {
    /// `filter` is `[1, kh, kw, out_c]` as the reference takes it.
    #[allow(clippy::too_many_arguments)]
    pub fn new<T: Code8>(
        filter: &[T],
        filter_shape: [usize; 4],
        filter_zero_points: &[i32],
        depth_multiplier: usize,
        input_zero_point: i32,
        params: &ConvParams,
        stage: &OutputStage,
        isa: Isa,
    ) -> DepthwisePlan {
        let kernels = Kernels::of(isa);
        let [one, kh, kw, oc] = filter_shape;
        assert_eq!(one, 1, "depthwise_conv2d: filter shape {filter_shape:?}");
        assert_eq!(
            filter.len(),
            kh * kw * oc,
            "depthwise_conv2d: filter length"
        );
        assert!(
            depth_multiplier >= 1 && oc % depth_multiplier == 0,
            "depthwise_conv2d: depth multiplier"
        );
        assert!(
            filter_zero_points.len() == 1 || filter_zero_points.len() == oc,
            "depthwise_conv2d: zero points"
        );
        assert!(
            params.stride_h >= 1
                && params.stride_w >= 1
                && params.dilation_h >= 1
                && params.dilation_w >= 1,
            "depthwise_conv2d: strides and dilations must be at least 1"
        );
        let zp = |c: usize| filter_zero_points[if filter_zero_points.len() == 1 { 0 } else { c }];
        let taps: Vec<i32> = filter
            .iter()
            .enumerate()
            .map(|(i, w)| w.to_i32().wrapping_sub(zp(i % oc)))
            .collect();
        // Whole 16-lane vectors; padding columns are never stored.
        let mut epi = Epilogue::plain(oc, 16, stage);
        kernels.lay_out(&mut epi);
        let pairs = match kernels.dw_layout {
            Some(layout) if depth_multiplier == 1 && epi.vector_ok => dw_pairs(&taps, kh * kw, oc)
                .and_then(|p| {
                    let k = DwConsts::new(&taps, kh * kw, oc, &epi, input_zero_point)?;
                    Some((layout(&p, kh * kw, oc), k))
                }),
            _ => None,
        };
        let quads = match kernels.ops::<T>().dw_quads {
            Some(_) if depth_multiplier == 1 => {
                // A 3x3 window stepping 1 or 2 along x, undilated: the blocks of 64 go by
                // columns (see `DwQuads::cols3`).
                let cols3 = kh == 3 && kw == 3 && params.dilation_w == 1 && params.stride_w <= 2;
                DwQuads::new::<T>(&taps, kh * kw, oc, stage, input_zero_point, kernels, cols3)
            }
            _ => None,
        };
        DepthwisePlan {
            kernels,
            taps,
            filter_shape,
            depth_multiplier,
            params: *params,
            input_zero_point,
            epi,
            pairs,
            quads,
        }
    }

    pub fn isa(&self) -> Isa {
        self.kernels.isa()
    }

    /// Equal to `reference::depthwise_conv2d` with the same arguments.
    pub fn run<T: Code8>(
        &self,
        input: &[T],
        input_shape: [usize; 4],
        output: &mut [T],
        output_shape: [usize; 4],
        threads: usize,
    ) {
        let [batches, in_h, in_w, in_c] = input_shape;
        let [_, _, _, oc] = self.filter_shape;
        let [ob, out_h, out_w, ooc] = output_shape;
        assert_eq!(
            in_c * self.depth_multiplier,
            oc,
            "depthwise_conv2d: input depth"
        );
        assert_eq!(
            (ob, ooc),
            (batches, oc),
            "depthwise_conv2d: output shape {output_shape:?}"
        );
        assert_eq!(
            input.len(),
            batches * in_h * in_w * in_c,
            "depthwise_conv2d: input length"
        );
        assert_eq!(
            output.len(),
            batches * out_h * out_w * oc,
            "depthwise_conv2d: output length"
        );
        let row_len = out_w * oc;
        let rows = batches * out_h;
        let ops = self.kernels.ops::<T>();
        let [_, kh, kw, _] = self.filter_shape;
        // A task's accumulators, and the pair kernel's window rows and tap offsets.
        let need = super::Need::default()
            .add::<i32>(oc)
            .add::<Option<usize>>(kh)
            .add::<usize>(kh * kw)
            .0;
        let work = |(r, out_row): (usize, &mut [T]), scratch: &mut super::threads::Bump| {
            if let (Some(q), Some(run)) = (&self.quads, ops.dw_quads) {
                let dw = DwQuadRun {
                    input,
                    step: self.params.stride_w * in_c,
                    ntaps: kh * kw,
                    oc,
                    w: &q.w,
                    epi: &q.epi,
                    zc: q.zc,
                    blocks: &q.blocks,
                    cols3: q.cols3,
                };
                let rows = scratch.filled(kh, None);
                let offsets = scratch.filled(kh * kw, usize::MAX);
                // SAFETY: the plan made `q` only on a tier whose table has `dw_quads` (which
                // the CPU has), for these taps and channels; every offset `dw_row_runs` hands
                // over is MAX or a whole in-bounds pixel of `oc` codes, advancing by `step`
                // within a run (see `dw_row_runs`).
                let pixels = |offsets: &[usize], n: usize, out: &mut [u8]| unsafe {
                    run(&dw, offsets, n, out)
                };
                dw_row_runs(self, pixels, input_shape, out_h, r, out_row, rows, offsets);
                return;
            }
            if let (Some((pairs, k)), Some(run)) = (&self.pairs, ops.dw_run) {
                let dw = DwRun {
                    input,
                    step: self.params.stride_w * in_c,
                    ntaps: self.filter_shape[1] * self.filter_shape[2],
                    oc,
                    pairs,
                    k,
                    epi: &self.epi,
                };
                let rows = scratch.filled(kh, None);
                let offsets = scratch.filled(kh * kw, usize::MAX);
                // SAFETY: the plan chose the pair kernel only on a tier the CPU has, with a
                // vector epilogue, and laid `dw.pairs` (and `dw.k`) out for that tier's kernel,
                // these taps and channels; the offsets are as `dw_row_runs` says.
                let pixels = |offsets: &[usize], n: usize, out: &mut [u8]| unsafe {
                    run(&dw, offsets, n, out)
                };
                dw_row_runs(self, pixels, input_shape, out_h, r, out_row, rows, offsets);
                return;
            }
            let acc = scratch.take::<i32>(oc);
            // SAFETY: the table is this plan's tier's, which the CPU has (checked when the plan
            // was made); the row and shapes are the ones `dw_row` takes (lengths checked above).
            unsafe { (ops.dw_row)(self, input, input_shape, out_h, r, out_row, acc) }
        };
        if oc == 0 || out_w == 0 {
            return;
        }
        let out_ptr = super::SendPtr(output.as_mut_ptr() as *mut u8);
        // One band of whole rows per thread: a task per row, or several bands per thread,
        // adds hand-offs that the depthwise layers' little work per row cannot pay for.
        let band = rows.div_ceil(threads.max(1));
        super::reserve_scratch(threads, 0, need);
        super::parallel_for(threads, rows.div_ceil(band), &|t: usize| {
            super::with_scratch(0, need, |scratch| {
                for r in t * band..((t + 1) * band).min(rows) {
                    let op = out_ptr;
                    // SAFETY: each row is written by one task only, inside `output` (length
                    // checked).
                    let out_row = unsafe {
                        std::slice::from_raw_parts_mut((op.0 as *mut T).add(r * row_len), row_len)
                    };
                    // Each row carves its scratch afresh from the same bytes.
                    let mut row_scratch = scratch.reborrow();
                    work((r, out_row), &mut row_scratch)
                }
            })
        });
    }
}

/// One output row of a depthwise convolution on a run kernel (the pair or quad kernel, called
/// through `pixels(offsets, n, out)`): the row's pixels whose windows lie inside the input along
/// x form one run whose tap offsets advance by a constant step (`stride_w * in_c`), which the
/// kernel takes whole; the border pixels are runs of one, their offsets found with the
/// padded-tap checks. Every offset is `usize::MAX` (a padded tap) or the start of a whole
/// in-bounds pixel of `oc` codes, for every pixel of its run. `rows` (`kh`) and `offsets`
/// (`kh * kw`) are scratch.
#[allow(clippy::too_many_arguments)]
fn dw_row_runs<T: Code8>(
    plan: &DepthwisePlan,
    pixels: impl Fn(&[usize], usize, &mut [u8]),
    input_shape: [usize; 4],
    out_h: usize,
    r: usize,
    out_row: &mut [T],
    rows: &mut [Option<usize>],
    offsets: &mut [usize],
) {
    let [_, in_h, in_w, in_c] = input_shape;
    let [_, _, kw, oc] = plan.filter_shape;
    debug_assert_eq!(in_c, oc);
    let p = &plan.params;
    let (b, oy) = (r / out_h, r % out_h);
    // The start of each window row's input row, `None` where it is padding.
    for (fy, row) in rows.iter_mut().enumerate() {
        *row = (oy * p.stride_h + fy * p.dilation_h)
            .checked_sub(p.padding.top)
            .filter(|&iy| iy < in_h)
            .map(|iy| (b * in_h + iy) * in_w * in_c);
    }
    let rows = &*rows;
    let fill = |offsets: &mut [usize], ox: usize| {
        for (fy, row) in rows.iter().enumerate() {
            for fx in 0..kw {
                let ix = (ox * p.stride_w + fx * p.dilation_w)
                    .checked_sub(p.padding.left)
                    .filter(|&ix| ix < in_w);
                offsets[fy * kw + fx] = match (row, ix) {
                    (Some(row), Some(ix)) => row + ix * in_c,
                    _ => usize::MAX,
                };
            }
        }
    };
    // Interior pixels: `ox * stride_w >= left` and the last tap `< in_w + left`.
    let out_w = out_row.len() / oc;
    let span = (kw - 1) * p.dilation_w;
    let x_lo = p.padding.left.div_ceil(p.stride_w).min(out_w);
    let x_hi = if in_w + p.padding.left > span {
        (in_w + p.padding.left - span)
            .div_ceil(p.stride_w)
            .clamp(x_lo, out_w)
    } else {
        x_lo
    };
    // SAFETY: T is one byte.
    let out_bytes =
        unsafe { std::slice::from_raw_parts_mut(out_row.as_mut_ptr() as *mut u8, out_row.len()) };
    // Every offset is MAX or a whole in-bounds pixel of `oc` codes (checked lengths in `run`;
    // inside the interior run, `offsets + i * step` is the pixel `fill` would give pixel
    // `x_lo + i`).
    for ox in (0..x_lo).chain(x_hi..out_w) {
        fill(offsets, ox);
        pixels(offsets, 1, &mut out_bytes[ox * oc..(ox + 1) * oc]);
    }
    if x_lo < x_hi {
        fill(offsets, x_lo);
        pixels(offsets, x_hi - x_lo, &mut out_bytes[x_lo * oc..x_hi * oc]);
    }
}

/// One output row (`out_w` pixels) of a depthwise convolution; `finish` applies the output
/// stage to a pixel's `out_c` accumulators.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dw_row<T: Code8>(
    plan: &DepthwisePlan,
    input: &[T],
    input_shape: [usize; 4],
    out_h: usize,
    r: usize,
    out_row: &mut [T],
    acc: &mut [i32],
    finish: impl Fn(&Epilogue, &[i32], &mut [u8]),
) {
    let [_, in_h, in_w, in_c] = input_shape;
    let [_, kh, kw, oc] = plan.filter_shape;
    let p = &plan.params;
    let zin = plan.input_zero_point;
    let dm = plan.depth_multiplier;
    let (b, oy) = (r / out_h, r % out_h);
    // SAFETY: T is one byte.
    let out_bytes =
        unsafe { std::slice::from_raw_parts_mut(out_row.as_mut_ptr() as *mut u8, out_row.len()) };
    for (ox, out_px) in out_bytes.chunks_exact_mut(oc).enumerate() {
        acc.fill(0);
        for fy in 0..kh {
            let Some(iy) = (oy * p.stride_h + fy * p.dilation_h).checked_sub(p.padding.top) else {
                continue;
            };
            if iy >= in_h {
                continue;
            }
            for fx in 0..kw {
                let Some(ix) = (ox * p.stride_w + fx * p.dilation_w).checked_sub(p.padding.left)
                else {
                    continue;
                };
                if ix >= in_w {
                    continue;
                }
                let s = ((b * in_h + iy) * in_w + ix) * in_c;
                let x = &input[s..s + in_c];
                let w = &plan.taps[(fy * kw + fx) * oc..(fy * kw + fx + 1) * oc];
                // The same wrapping steps as the reference, per channel; channels are
                // independent, so the loop vectorizes.
                if dm == 1 {
                    for ((a, &xv), &wv) in acc.iter_mut().zip(x).zip(w) {
                        *a = a.wrapping_add(xv.to_i32().wrapping_sub(zin).wrapping_mul(wv));
                    }
                } else {
                    for (c, (a, &wv)) in acc.iter_mut().zip(w).enumerate() {
                        let xv = x[c / dm].to_i32().wrapping_sub(zin);
                        *a = a.wrapping_add(xv.wrapping_mul(wv));
                    }
                }
            }
        }
        finish(&plan.epi, acc, out_px);
    }
}

/// `dw_row` finished by the scalar output stage: the portable tier's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dw_row_portable<T: Code8>(
    plan: &DepthwisePlan,
    input: &[T],
    input_shape: [usize; 4],
    out_h: usize,
    r: usize,
    out_row: &mut [T],
    acc: &mut [i32],
) {
    dw_row(
        plan,
        input,
        input_shape,
        out_h,
        r,
        out_row,
        acc,
        finish_scalar_row,
    )
}

fn finish_scalar_row(epi: &Epilogue, acc: &[i32], out: &mut [u8]) {
    for (n, (o, &a)) in out.iter_mut().zip(acc).enumerate() {
        *o = epi.scalar(a, 0, n);
    }
}

/// `dw_row` compiled for one tier (`$feature`), finished by that tier's vector output stage
/// (`$finish`, which needs the feature): a thin `#[target_feature]` wrapper per tier.
macro_rules! dw_row_on {
    ($arch:literal, $name:ident, $feature:literal, $finish:path) => {
        /// `dw_row` compiled for the tier and finished by its vector output stage.
        ///
        /// # Safety
        /// The CPU has the tier's features.
        #[cfg(target_arch = $arch)]
        #[target_feature(enable = $feature)]
        #[allow(clippy::too_many_arguments)]
        pub(crate) unsafe fn $name<T: Code8>(
            plan: &DepthwisePlan,
            input: &[T],
            input_shape: [usize; 4],
            out_h: usize,
            r: usize,
            out_row: &mut [T],
            acc: &mut [i32],
        ) {
            dw_row(
                plan,
                input,
                input_shape,
                out_h,
                r,
                out_row,
                acc,
                |e, a, o| {
                    // SAFETY: the tier's features are enabled here; `a` and `o` have one entry
                    // per column of `e`.
                    unsafe { $finish(e, a, o) }
                },
            )
        }
    };
}
dw_row_on!("x86_64", dw_row_avx2, "avx2", crate::isa::avx2::finish_row);
dw_row_on!(
    "x86_64",
    dw_row_avx512,
    "avx512f,avx512bw",
    crate::isa::avx512vnni::finish_row
);
dw_row_on!("aarch64", dw_row_neon, "neon", crate::isa::neon::finish_row);

/// Depthwise taps in the layout AVX2's pair kernel (`isa::avx2::dw_run`) reads, from which every
/// tier's layout is made: per block of 16 channels and per pair of
/// taps `(t0, t1) = (2p, 2p + 1)`, 32 int16 values: the `(w[t0][c], w[t1][c])` pairs of channels
/// 0-3 and 8-11 of the block, then those of 4-7 and 12-15 (the order `vpunpck{l,h}wd` gives the
/// activations). Missing taps and channels are 0. `None` when a tap `w - Z_w` does not fit
/// int16 (then `vpmaddwd` could not take it).
pub(crate) fn dw_pairs(taps: &[i32], ntaps: usize, oc: usize) -> Option<Vec<i16>> {
    if taps.iter().any(|&t| i16::try_from(t).is_err()) {
        return None;
    }
    let (blocks, pairs) = (oc.div_ceil(16), ntaps.div_ceil(2));
    let mut out = vec![0i16; blocks * pairs * 32];
    const ORDER: [usize; 16] = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15];
    for cb in 0..blocks {
        for p in 0..pairs {
            for (lane, &ch) in ORDER.iter().enumerate() {
                let c = cb * 16 + ch;
                for h in 0..2 {
                    let t = 2 * p + h;
                    if c < oc && t < ntaps {
                        out[((cb * pairs + p) * 16 + lane) * 2 + h] = taps[t * oc + c] as i16;
                    }
                }
            }
        }
    }
    Some(out)
}

/// What the depthwise pair kernels (the tables' `dw_run`) add to a
/// plain epilogue: the input zero point is folded into the bias, so no tap subtracts it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DwConsts {
    /// `Z_in` as the activations are widened (`x` for uint8, the signed code for int8), which
    /// is also what a padded tap reads: its `(x - Z_in) w` is then 0, as the reference skips it.
    pub(crate) zin: i16,
    /// `bias - Z_in Σ_t w_t`, wrapping, padded to whole blocks of 16 channels:
    /// `Σ_t (x_t - Z_in) w_t == Σ_t x_t w_t - Z_in Σ_t w_t` modulo 2^32, so the taps need no
    /// per-tap subtraction. It takes the place of the epilogue's `colconst`.
    pub(crate) bias: Vec<i32>,
}

impl DwConsts {
    /// `taps` is `w - Z_w`, `[ntaps][oc]`; `epi` a vector-ready plain epilogue over `oc`
    /// channels; `zin` the input zero point, which must fit int16 (`None` otherwise).
    pub(crate) fn new(
        taps: &[i32],
        ntaps: usize,
        oc: usize,
        epi: &Epilogue,
        zin: i32,
    ) -> Option<Self> {
        let zin16 = i16::try_from(zin).ok()?;
        debug_assert!(epi.vector_ok && taps.len() == ntaps * oc);
        let np = oc.div_ceil(16) * 16;
        let mut bias = epi.colconst[..np].to_vec();
        for c in 0..oc {
            let sum = (0..ntaps).fold(0i32, |s, t| s.wrapping_add(taps[t * oc + c]));
            bias[c] = bias[c].wrapping_sub(zin.wrapping_mul(sum));
        }
        Some(DwConsts { zin: zin16, bias })
    }
}

/// The operands of a pair kernel (the table's `dw_run`) shared by every run of pixels of a
/// depthwise convolution: pixel `i` of a run reads its taps at `offsets[t] + i * step`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct DwRun<'a, T> {
    pub(crate) input: &'a [T],
    pub(crate) step: usize,
    pub(crate) ntaps: usize,
    pub(crate) oc: usize,
    /// [`dw_pairs`] in the tier's layout.
    pub(crate) pairs: &'a [i16],
    pub(crate) k: &'a DwConsts,
    /// The plan's vector-ready epilogue.
    pub(crate) epi: &'a Epilogue,
}

/// The quad kernel's data (the table's `dw_quads`: `vpdpbusd` on four taps at once, depth
/// multiplier 1), made once per plan.
///
/// Activations are taken canonical (`a' = a + A_OFFSET`, u8) and the taps `w - Z_w` as s8, so
/// `Σ_t (a'_t - Z_a') w_t = Σ_t a'_t w_t - Z_a' Σ_t w_t` modulo 2^32: the second term goes into
/// the bias, and a padded tap reads `Z_a'`, whose product the bias then cancels, as the
/// reference skips it. The four taps' bytes of a lane meet in one 32-bit lane after two rounds
/// of byte and word unpacks, which leave the 64 byte lanes of a block in four vectors, dword
/// `4L + j` of vector `q` holding byte lane `16L + 4q + j`; the epilogue's columns are laid out
/// in that order, and two rounds of saturating packs (exact: the codes are in range after the
/// output stage) put the lanes back in order.
///
/// The channels are cut into blocks ([`dw_quad_blocks`]) of 64 byte lanes each: a block of
/// width 64 is 64 channels of one pixel, one of width 32 (16) the same 32 (16) channels of two
/// (four) consecutive pixels, so channel counts off the multiples of 64 (32, 96, 144) fill
/// whole vectors too.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DwQuads {
    /// Per block, per quad of taps `4p .. 4p + 4` (missing taps 0), the four vectors of 64
    /// bytes: byte `b` of dword `4L + j` of vector `q` is tap `4p + b` of the channel at byte
    /// lane `16L + 4q + j` (0 past the channels).
    pub(crate) w: Vec<i8>,
    /// The plain epilogue over 64 columns per block, column `64 k + n` the channel at byte
    /// lane `n` of block `k` in the vectors' order, its bias less `Z_a' Σ_t w_t`, laid out 16
    /// wide.
    pub(crate) epi: Epilogue,
    /// `Z_a'`: what a padded tap reads.
    pub(crate) zc: u8,
    /// [`dw_quad_blocks`] of the channels.
    pub(crate) blocks: Vec<(usize, usize)>,
    /// A 3x3 window stepping 1 or 2 along x, undilated: in the blocks of 64 channels, quad
    /// `fx` is column `fx` of the window, its bytes the taps `(0, fx)`, `(1, fx)`, `(2, fx)`
    /// and a zero. Along a run a column's unpacked codes are then those of a column of the
    /// previous pixel (the next one at stride 1, the one after at stride 2), and the kernel
    /// unpacks each input column once rather than once per window that reads it.
    pub(crate) cols3: bool,
}

/// The quad kernel's blocks of channels, `(first channel, width)`: blocks of 64 while 64 are
/// left, then, where the rest is a multiple of 16, a block of 32 and/or one of 16 (two or four
/// pixels per vector), else one last block of 64 loading and storing only its own channels.
pub(crate) fn dw_quad_blocks(oc: usize) -> Vec<(usize, usize)> {
    let mut blocks: Vec<(usize, usize)> = (0..oc / 64).map(|b| (64 * b, 64)).collect();
    let mut c0 = oc / 64 * 64;
    if !(oc - c0).is_multiple_of(16) {
        blocks.push((c0, 64));
        return blocks;
    }
    for width in [32, 16] {
        if oc - c0 >= width {
            blocks.push((c0, width));
            c0 += width;
        }
    }
    blocks
}

impl DwQuads {
    /// `taps` is `w - Z_w`, `[ntaps][oc]`; `cols3` as [`DwQuads::cols3`] (then `ntaps` is 9).
    /// `None` unless the channels fill the blocks nearly whole, every tap fits s8, `Z_a'` is a
    /// u8 code, the vector epilogue applies and its clamp keeps the codes in `T`'s range (so
    /// the packs are exact).
    fn new<T: Code8>(
        taps: &[i32],
        ntaps: usize,
        oc: usize,
        stage: &OutputStage,
        zin: i32,
        kernels: &Kernels,
        cols3: bool,
    ) -> Option<DwQuads> {
        let zc = u8::try_from(zin.checked_add(T::A_OFFSET)?).ok()?;
        // A last block of 64 channels that is partly empty: where it wastes more than a third
        // of the work (65 channels), the pair kernel's blocks of 32 are faster.
        if (!oc.is_multiple_of(16) && 3 * oc.next_multiple_of(64) > 4 * oc)
            || taps.iter().any(|&t| i8::try_from(t).is_err())
            || stage.clamp_min < T::MIN
            || stage.clamp_max > T::MAX
            || kernels.lane_width != 16
        {
            return None;
        }
        let plain = Epilogue::plain(oc, 64, stage);
        if !plain.vector_ok {
            return None;
        }
        let blocks = dw_quad_blocks(oc);
        let np = 64 * blocks.len();
        let quads = ntaps.div_ceil(4);
        // Column `n` of the laid-out epilogue is channel `chan(n)` (at or past `oc` only in a
        // last block of 64 that is partly empty, inside `plain`'s padding).
        let chan = |n: usize| {
            let (c0, width) = blocks[n / 64];
            let (v, l, j) = (n % 64 / 16, n % 16 / 4, n % 4);
            c0 + (16 * l + 4 * v + j) % width
        };
        let mut epi = plain.clone();
        epi.colconst.resize(np, 0);
        epi.zw.resize(np, 0);
        epi.m0.resize(np, 0);
        epi.lshift.resize(np, 0);
        epi.rshift.resize(np, 0);
        epi.pre_lo.resize(np, 0);
        epi.pre_hi.resize(np, 0);
        epi.rround.resize(np, 0);
        epi.mult.resize(np, intq_quant::QuantizedMultiplier::ONE);
        for n in 0..np {
            let c = chan(n);
            let mut bias = plain.colconst[c];
            if c < oc {
                let sum = (0..ntaps).fold(0i32, |s, t| s.wrapping_add(taps[t * oc + c]));
                bias = bias.wrapping_sub((zc as i32).wrapping_mul(sum));
            }
            epi.colconst[n] = bias;
            epi.zw[n] = plain.zw[c];
            epi.m0[n] = plain.m0[c];
            epi.lshift[n] = plain.lshift[c];
            epi.rshift[n] = plain.rshift[c];
            epi.pre_lo[n] = plain.pre_lo[c];
            epi.pre_hi[n] = plain.pre_hi[c];
            epi.rround[n] = plain.rround[c];
            epi.mult[n] = plain.mult[c];
        }
        kernels.lay_out(&mut epi);
        let mut w = vec![0i8; blocks.len() * quads * 256];
        for blk in 0..blocks.len() {
            for p in 0..quads {
                for n in 0..64 {
                    let c = chan(blk * 64 + n);
                    for b in 0..4 {
                        // Tap `t` of byte `b` of quad `p`, none where the byte is 0.
                        let t = if cols3 && blocks[blk].1 == 64 {
                            if b < 3 {
                                3 * b + p
                            } else {
                                ntaps
                            }
                        } else {
                            4 * p + b
                        };
                        if c < oc && t < ntaps {
                            w[((blk * quads + p) * 64 + n) * 4 + b] = taps[t * oc + c] as i8;
                        }
                    }
                }
            }
        }
        Some(DwQuads {
            w,
            epi,
            zc,
            blocks,
            cols3,
        })
    }
}

/// The operands of a quad kernel (the table's `dw_quads`) shared by every run of pixels of a
/// depthwise convolution: pixel `i` of a run reads its taps at `offsets[t] + i * step`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct DwQuadRun<'a, T> {
    pub(crate) input: &'a [T],
    pub(crate) step: usize,
    pub(crate) ntaps: usize,
    pub(crate) oc: usize,
    /// [`DwQuads::w`].
    pub(crate) w: &'a [i8],
    /// [`DwQuads::epi`].
    pub(crate) epi: &'a Epilogue,
    /// [`DwQuads::zc`].
    pub(crate) zc: u8,
    /// [`DwQuads::blocks`].
    pub(crate) blocks: &'a [(usize, usize)],
    /// [`DwQuads::cols3`].
    pub(crate) cols3: bool,
}

#[cfg(test)]
mod tests {
    use super::dw_quad_blocks;

    /// The quad kernel's blocks cover the channels in order, each 64 byte lanes wide: blocks of
    /// 64 first, then 32 and 16 for a rest that is a multiple of 16, else one last block of 64
    /// (checked on any CPU: plain data; the kernel itself is checked against the reference in
    /// `fast_tiers`).
    #[test]
    fn quad_blocks_cover_the_channels() {
        assert_eq!(dw_quad_blocks(32), [(0, 32)]);
        assert_eq!(dw_quad_blocks(96), [(0, 64), (64, 32)]);
        assert_eq!(dw_quad_blocks(144), [(0, 64), (64, 64), (128, 16)]);
        assert_eq!(dw_quad_blocks(48), [(0, 32), (32, 16)]);
        assert_eq!(
            dw_quad_blocks(200),
            [(0, 64), (64, 64), (128, 64), (192, 64)]
        );
        for oc in 1..=400 {
            let blocks = dw_quad_blocks(oc);
            let mut c = 0;
            for (i, &(c0, width)) in blocks.iter().enumerate() {
                assert_eq!(c0, c, "{oc} channels: {blocks:?}");
                assert!([16, 32, 64].contains(&width));
                let last = i + 1 == blocks.len();
                c += if last { (oc - c0).min(width) } else { width };
                // A block narrower than 64 holds whole channels of every pixel it takes.
                assert!(width == 64 || c0 + width <= oc);
            }
            assert_eq!(c, oc, "{oc} channels: {blocks:?}");
        }
    }
}
