//! Convolution and fully connected layers on the fast tiers.
//!
//! Convolution is a GEMM whose rows are im2col patches, each output pixel's window. On a tier
//! with an implicit-GEMM tile (its table's `implicit`: AVX2 with channels a multiple of 8; VNNI,
//! AMX and NEON with a multiple of 4), when the window is undilated along x, the GEMM is
//! implicit: the input is mapped once into a padded image of canonical codes and the tile reads
//! each window in place (`run_implicit`). Otherwise the rows are handed to the packer as runs of
//! codes (gathered into one row first when the runs are off the 8-code groups), so scratch is
//! bounded by one packed row chunk, never the whole im2col matrix. Padded taps hold the input
//! zero point, whose `(q - Z_in)` is 0, the same as the reference skipping them.

use super::table::{ConvPolicy, PackedElem};
use super::{Code8, Epilogue, Kernels, PreparedGemm};
use crate::isa::Isa;
use crate::{ConvParams, OutputStage};

/// A convolution (NHWC input, OHWI filter) with its filter packed for one tier.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2dPlan {
    gemm: PreparedGemm,
    filter_shape: [usize; 4],
    params: ConvParams,
    input_zero_point: i32,
    /// Channels per pixel of the implicit GEMM's padded image: the input's, or for a narrow
    /// input (a stem's 1 or 3 channels) the next multiple of the tier's group, the extra
    /// channels holding the input zero point and the packed filter zero-point weights there.
    /// `(q - Z_in) = 0` on them, so every extra product is 0 and the result is the reference's;
    /// what it buys is the implicit GEMM (whole groups per filter row) instead of gathering
    /// and packing 27-code rows one pixel at a time, which starves the multiply units.
    /// See `padded_channels` for when.
    image_channels: usize,
    /// Codes of one filter row in the packed filter: `kw * image_channels`, or, for an AVX2
    /// plan over an input whose channels are not a multiple of 8 (a stem's 1 or 3), that
    /// rounded up to 8 with zero weights (canonical 0) after each filter row's real taps. The
    /// implicit GEMM then reads each window row as whole groups straight from the image: the
    /// extra codes it reads (the next pixel's) meet the zero weights, and the output stage
    /// keeps the real K and filter sums, so the result is the reference's. See `row_run`.
    row_run: usize,
    /// `kw * in_c` copies of the input zero point's bits: the im2col rows' padded taps.
    zero_taps: Vec<u8>,
    /// The tier's strided tile runs the plan (`ConvPolicy::strided_run`, [`strided_takes`]):
    /// its filter rows are padded to whole steps of that tile.
    strided: bool,
    /// The epilogue of the tier's pointwise tile (the table's `pointwise`, see
    /// [`Conv2dPlan::run_pointwise`]), where it takes the plan: a 1x1 convolution with
    /// symmetric weights. Its column constants add `A_OFFSET Σw'`, as that tile multiplies the
    /// codes as they are rather than their canonical `a' = a + A_OFFSET`.
    pointwise: Option<Epilogue>,
}

impl Conv2dPlan {
    /// Packs `filter` (`[out_c, kh, kw, in_c]`) and folds zero points and `stage` for `isa`.
    #[allow(clippy::too_many_arguments)]
    pub fn new<T: Code8>(
        filter: &[T],
        filter_shape: [usize; 4],
        filter_zero_points: &[i32],
        input_zero_point: i32,
        params: &ConvParams,
        stage: &OutputStage,
        isa: Isa,
    ) -> Conv2dPlan {
        let [oc, kh, kw, ic] = filter_shape;
        assert!(
            params.stride_h >= 1
                && params.stride_w >= 1
                && params.dilation_h >= 1
                && params.dilation_w >= 1,
            "conv2d: strides and dilations must be at least 1"
        );
        let kernels = Kernels::of(isa);
        let image_channels = padded_channels::<T>(kernels, filter_shape, params, input_zero_point);
        let strided = strided_takes(&kernels.conv, filter_shape, params);
        let row_run = row_run(&kernels.conv, filter_shape, image_channels, params);
        let channel_padded;
        let weights = if image_channels == ic {
            filter
        } else {
            // Extra channels get each output channel's weight zero point (a real 0; any code
            // would do, as they meet activations equal to the input zero point).
            let zw = |o: usize| {
                let z = filter_zero_points[if filter_zero_points.len() == 1 { 0 } else { o }];
                T::from_bits(z.clamp(T::MIN, T::MAX) as u8)
            };
            let mut padded = Vec::with_capacity(oc * kh * kw * image_channels);
            for (t, taps) in filter.chunks_exact(ic).enumerate() {
                padded.extend_from_slice(taps);
                padded.resize(padded.len() + image_channels - ic, zw(t / (kh * kw)));
            }
            channel_padded = padded;
            &channel_padded[..]
        };
        let row_padded = (row_run != kw * image_channels).then(|| {
            // The canonical weight 0 after each filter row's taps (u8 weights are offset by
            // 128; see `Code8::W_OFFSET`).
            let zero = T::from_bits(T::W_OFFSET.wrapping_neg() as u8);
            let mut padded = Vec::with_capacity(oc * kh * row_run);
            for taps in weights.chunks_exact(kw * image_channels) {
                padded.extend_from_slice(taps);
                padded.resize(padded.len() + row_run - kw * image_channels, zero);
            }
            padded
        });
        let gemm = PreparedGemm::with_packed_weights(
            weights,
            oc,
            kh * kw * image_channels,
            filter_zero_points,
            input_zero_point,
            stage,
            isa,
            row_padded.as_deref().map(|w| (w, kh * row_run)),
        );
        let pointwise =
            (kh == 1 && kw == 1 && kernels.ops::<T>().pointwise.is_some() && gemm.epi.zw_zero)
                .then(|| {
                    let mut epi = gemm.epi.clone();
                    for (n, w) in weights.chunks_exact(ic.max(1)).enumerate().take(oc) {
                        let sum = w
                            .iter()
                            .fold(0i32, |s, &x| s.wrapping_add(x.canon_w() as i32));
                        epi.colconst[n] =
                            epi.colconst[n].wrapping_add(T::A_OFFSET.wrapping_mul(sum));
                    }
                    kernels.lay_out(&mut epi);
                    epi
                });
        Conv2dPlan {
            gemm,
            filter_shape,
            params: *params,
            input_zero_point,
            image_channels,
            row_run,
            zero_taps: vec![input_zero_point as u8; kw * ic],
            strided,
            pointwise,
        }
    }

    /// The plan's packed filter rows are padded to whole groups (see
    /// [`row_run`](Self::row_run)); it runs only as an implicit GEMM.
    fn row_padded(&self) -> bool {
        self.row_run != self.filter_shape[2] * self.image_channels
    }

    pub fn isa(&self) -> Isa {
        self.gemm.isa()
    }

    /// Whether [`run`](Self::run) can handle this input: a padded window needs the input zero
    /// point to be a code of `T` (it always is for models built by the scheme's `choose_params`).
    pub fn supports<T: Code8>(&self, input_shape: [usize; 4], output_shape: [usize; 4]) -> bool {
        let padded = self.needs_padding(input_shape, output_shape);
        !padded || (T::MIN..=T::MAX).contains(&self.input_zero_point)
    }

    fn needs_padding(&self, input_shape: [usize; 4], output_shape: [usize; 4]) -> bool {
        let [_, in_h, in_w, _] = input_shape;
        let [_, out_h, out_w, _] = output_shape;
        let [_, kh, kw, _] = self.filter_shape;
        let p = &self.params;
        let reach = |out: usize, stride: usize, k: usize, dil: usize| {
            if out == 0 {
                0
            } else {
                (out - 1) * stride + (k - 1) * dil + 1
            }
        };
        p.padding.top > 0
            || p.padding.left > 0
            || reach(out_h, p.stride_h, kh, p.dilation_h) > in_h
            || reach(out_w, p.stride_w, kw, p.dilation_w) > in_w
    }

    /// Runs the convolution; equal to `reference::conv2d` with the same arguments.
    ///
    /// # Panics
    /// On shapes that disagree with the filter, or when [`supports`](Self::supports) is false.
    pub fn run<T: Code8>(
        &self,
        input: &[T],
        input_shape: [usize; 4],
        output: &mut [T],
        output_shape: [usize; 4],
        threads: usize,
    ) {
        let [batches, in_h, in_w, in_c] = input_shape;
        let [oc, kh, kw, fic] = self.filter_shape;
        let [ob, out_h, out_w, ooc] = output_shape;
        assert_eq!(
            fic, in_c,
            "conv2d: filter depth {fic} != input depth {in_c}"
        );
        assert_eq!(
            (ob, ooc),
            (batches, oc),
            "conv2d: output shape {output_shape:?} disagrees"
        );
        assert_eq!(
            input.len(),
            batches * in_h * in_w * in_c,
            "conv2d: input length"
        );
        assert!(
            self.supports::<T>(input_shape, output_shape),
            "conv2d: padded window with input zero point {} outside the code range",
            self.input_zero_point
        );
        let m = batches * out_h * out_w;
        let p = self.params;
        let kernels = self.gemm.kernels;
        let policy = &kernels.conv;
        // The tier's implicit GEMM, where it takes this plan: windows undilated along x, whole
        // groups per filter row (channels a multiple of the group, or rows padded to it), and a
        // layer the tier runs that way (`implicit_takes`).
        let padded = self.image_channels != in_c || self.row_padded();
        let implicit = kernels.ops::<T>().implicit.filter(|_| {
            p.dilation_w == 1
                && (self.image_channels.is_multiple_of(policy.implicit_group) || padded)
                && (padded || self.strided || implicit_takes(kernels, oc))
        });
        let direct = kh == 1
            && kw == 1
            && p.stride_h == 1
            && p.stride_w == 1
            && !self.needs_padding(input_shape, output_shape)
            && out_h == in_h
            && out_w == in_w
            && !(policy.implicit_1x1 && implicit.is_some());
        if direct {
            // A 1x1 convolution is a plain GEMM over pixels, on the tier's pointwise tile where
            // it takes the plan.
            if let Some(run) = kernels
                .ops::<T>()
                .pointwise
                .filter(|_| self.pointwise.is_some() && pointwise_on())
            {
                assert_eq!(output.len(), m * oc, "conv2d: output length");
                return run(self, input, m, output, threads);
            }
            return self.gemm.run(input, m, output, threads);
        }
        if let Some(run) = implicit {
            return run(self, input, input_shape, output, output_shape, threads);
        }
        assert!(
            self.image_channels == in_c && !self.row_padded(),
            "conv2d: a channel- or row-padded plan runs only as an implicit GEMM"
        );
        // Padded taps are runs of the zero point, handed from here.
        // SAFETY: T is one byte, and any byte is a code.
        let zps = unsafe {
            std::slice::from_raw_parts(self.zero_taps.as_ptr() as *const T, self.zero_taps.len())
        };
        let im2col = Im2col {
            input,
            zps,
            params: p,
            in_hwc: [in_h, in_w, in_c],
            window: [kh, kw],
            out_hw: [out_h, out_w],
        };
        let row = |r: usize, emit: &mut dyn FnMut(&[T])| im2col.runs(r, emit);
        if in_c % 8 == 0 {
            self.gemm.run_rows(m, output, threads, &row);
            return;
        }
        // Runs of `kw * in_c` codes off the 8-code groups would pack code by code (ResNet-20's
        // 3-channel stem); gathered into one row first, they pack 16 codes at a time. AMX, which
        // packs a run at any offset with masked moves, is also faster gathered.
        let k = kh * kw * in_c;
        super::reserve_scratch(threads, 1, super::Need::default().add::<u8>(k).0);
        let gathered = |r: usize, emit: &mut dyn FnMut(&[T])| {
            super::with_scratch(1, super::Need::default().add::<u8>(k).0, |scratch| {
                let buf = scratch.take::<u8>(k);
                let mut at = 0;
                // The runs' sink is a closure of its own type here, so it inlines into `runs`.
                im2col.runs(r, &mut |seg: &[T]| {
                    // SAFETY: T is one byte.
                    let bytes =
                        unsafe { std::slice::from_raw_parts(seg.as_ptr() as *const u8, seg.len()) };
                    buf[at..at + seg.len()].copy_from_slice(bytes);
                    at += seg.len();
                });
                debug_assert_eq!(at, k);
                // SAFETY: T is one byte, and any byte is a code.
                emit(unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const T, k) })
            })
        };
        self.gemm.run_rows(m, output, threads, &gathered);
    }
}

/// The im2col rows of a convolution, read from an NHWC input.
struct Im2col<'a, T> {
    input: &'a [T],
    /// `kw * in_c` copies of the input zero point: what padded taps read.
    zps: &'a [T],
    params: ConvParams,
    in_hwc: [usize; 3],
    window: [usize; 2],
    out_hw: [usize; 2],
}

impl<T: Code8> Im2col<'_, T> {
    /// Hands row `r` (output pixel `r` in (b, oy, ox) order) to `emit` as consecutive runs of
    /// codes, filter row by filter row.
    #[inline(always)]
    fn runs<F: FnMut(&[T]) + ?Sized>(&self, r: usize, emit: &mut F) {
        let (input, zps, p) = (self.input, self.zps, &self.params);
        let [in_h, in_w, in_c] = self.in_hwc;
        let [kh, kw] = self.window;
        let [out_h, out_w] = self.out_hw;
        // Two 32-bit divisions find the pixel (64-bit `div` is far slower and this runs per
        // row), 64-bit ones past u32 sizes.
        let (b, oy, ox) = if r <= u32::MAX as usize && out_h * out_w <= u32::MAX as usize {
            let (r32, w32, h32) = (r as u32, out_w as u32, out_h as u32);
            let q = r32 / w32;
            let b = q / h32;
            (b as usize, (q - b * h32) as usize, (r32 - q * w32) as usize)
        } else {
            (r / (out_h * out_w), (r / out_w) % out_h, r % out_w)
        };
        for fy in 0..kh {
            let iy = (oy * p.stride_h + fy * p.dilation_h).checked_sub(p.padding.top);
            let Some(iy) = iy.filter(|&iy| iy < in_h) else {
                emit(zps);
                continue;
            };
            if p.dilation_w == 1 {
                // Undilated taps of one filter row are adjacent pixels, contiguous in NHWC:
                // one run for the in-bounds part (a copy per tap is many tiny copies), the zero
                // point either side of it.
                let x0 = (ox * p.stride_w) as isize - p.padding.left as isize;
                let lo = (-x0).clamp(0, kw as isize) as usize;
                let hi = (in_w as isize - x0).clamp(lo as isize, kw as isize) as usize;
                if lo > 0 {
                    emit(&zps[..lo * in_c]);
                }
                if hi > lo {
                    let s = ((b * in_h + iy) * in_w + (x0 + lo as isize) as usize) * in_c;
                    emit(&input[s..s + (hi - lo) * in_c]);
                }
                if hi < kw {
                    emit(&zps[hi * in_c..]);
                }
                continue;
            }
            for fx in 0..kw {
                let ix = (ox * p.stride_w + fx * p.dilation_w).checked_sub(p.padding.left);
                match ix {
                    Some(ix) if ix < in_w => {
                        let s = ((b * in_h + iy) * in_w + ix) * in_c;
                        emit(&input[s..s + in_c]);
                    }
                    _ => emit(&zps[..in_c]),
                }
            }
        }
    }
}

/// The image channels of a convolution plan (see [`Conv2dPlan::image_channels`]): the input's,
/// or, for an input a little narrower than the tier's implicit-GEMM group (an RGB stem on VNNI),
/// that group, when the implicit GEMM can run it (a tier that has one, a window wider
/// than one pixel, undilated along x) and the zero point the extra channels hold is a code.
fn padded_channels<T: Code8>(
    kernels: &Kernels,
    filter_shape: [usize; 4],
    params: &ConvParams,
    input_zero_point: i32,
) -> usize {
    let [_, kh, kw, ic] = filter_shape;
    let group = kernels.conv.implicit_group;
    if kernels.ops::<T>().implicit.is_none() || group == 0 {
        return ic;
    }
    // At most a third more multiplies (3 -> 4 channels on VNNI, 6 or 7 -> 8 on AVX2); padding
    // 3 channels to 8 on AVX2 would waste more than gathering costs.
    let narrow =
        ic > 0 && ic < group && 3 * group <= 4 * ic && kh * kw > 1 && params.dilation_w == 1;
    if narrow && (T::MIN..=T::MAX).contains(&input_zero_point) {
        group
    } else {
        ic
    }
}

/// The codes of one filter row in a plan's packed filter (see [`Conv2dPlan::row_run`]):
/// rounded up to the implicit group on a tier that pads rows (AVX2) when its implicit GEMM
/// would otherwise not take the plan (channels not a multiple of the group), the window is
/// wider than one pixel and undilated along x. The gathered im2col copies each window row's few
/// codes into a row and packs it, pixel by pixel, which leaves the multiply units idle on a
/// stem's 3 channels.
fn row_run(
    policy: &ConvPolicy,
    filter_shape: [usize; 4],
    image_channels: usize,
    p: &ConvParams,
) -> usize {
    let [_, kh, kw, _] = filter_shape;
    let run = kw * image_channels;
    if strided_takes(policy, filter_shape, p) {
        return run.next_multiple_of(policy.strided_run);
    }
    let group = policy.implicit_group;
    if policy.pad_rows
        && group > 0
        && !image_channels.is_multiple_of(group)
        && kh * kw > 1
        && p.dilation_w == 1
    {
        run.next_multiple_of(group)
    } else {
        run
    }
}

/// Whether a convolution runs on the tier's strided tile (see `ConvPolicy::strided_run`): stride
/// 1, undilated along x, a window wider than one pixel (a 1x1 convolution is a plain GEMM).
fn strided_takes(policy: &ConvPolicy, filter_shape: [usize; 4], p: &ConvParams) -> bool {
    let [_, kh, kw, _] = filter_shape;
    policy.strided_run > 0 && p.stride_h == 1 && p.stride_w == 1 && p.dilation_w == 1 && kh * kw > 1
}

/// Whether the tier runs a convolution with `oc` output channels over an input of whole groups
/// as an implicit GEMM (see `ConvPolicy::implicit_max_oc`). `INTQ_AMX_CONV=implicit|packed`
/// (read once) forces one way on a tier that limits it, for measuring.
fn implicit_takes(kernels: &Kernels, oc: usize) -> bool {
    static FORCED: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let max = kernels.conv.implicit_max_oc;
    if max == usize::MAX {
        return true;
    }
    let forced = FORCED.get_or_init(|| {
        match std::env::var("INTQ_AMX_CONV")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            Ok("implicit") => Some(true),
            Ok("packed") => Some(false),
            _ => None,
        }
    });
    forced.unwrap_or(oc <= max)
}

/// Whether 1x1 convolutions take the tier's pointwise tile where it takes them;
/// `INTQ_POINTWISE=off` (read once) sends them to the packed GEMM instead, for measuring.
fn pointwise_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("INTQ_POINTWISE").map_or(true, |v| !v.trim().eq_ignore_ascii_case("off"))
    })
}

impl Conv2dPlan {
    /// Elements between two packed B panels of `nr` columns, K padded to `kg` codes.
    fn panel_stride(&self, kg: usize, nr: usize) -> usize {
        (self.filter_shape[1] * self.row_run).div_ceil(kg).max(1) * kg * nr
    }

    /// Implicit GEMM: each chunk of output pixels maps the input rows its windows read into a
    /// padded image of canonical codes (the padding holds the input zero point, whose
    /// `(q - Z_in)` is 0, as in the reference skipping it), with each pixel's code sum; the
    /// tile kernel then reads every output pixel's window in place (a filter row's taps are
    /// adjacent, `kw * in_c` codes, read as `row_run` codes: whole groups) and a row sum is
    /// the sum of its window's pixel sums.
    /// No im2col row is copied or packed; the products and their order are those of the packed
    /// tile, so the result is the same. `F` reads the plan's packed panels (its B layout is the
    /// tier GEMM's).
    pub(crate) fn run_implicit<F: super::ImplicitKernel, T: Code8>(
        &self,
        input: &[T],
        input_shape: [usize; 4],
        output: &mut [T],
        output_shape: [usize; 4],
        threads: usize,
    ) {
        use super::{ImplicitRows, TileOut};
        let (mr, nr, kg) = (F::MR, F::NR, F::KG);
        let b = F::B::of(&self.gemm.packed);
        let panel_stride = self.panel_stride(self.gemm.kernels.kg, nr);
        let [batches, in_h, in_w, real_c] = input_shape;
        // The image's channels per pixel (see `image_channels`); the input's own are `real_c`.
        let in_c = self.image_channels;
        let [oc, kh, kw, _] = self.filter_shape;
        let [_, out_h, out_w, _] = output_shape;
        let p = self.params;
        let m = batches * out_h * out_w;
        if m == 0 || oc == 0 {
            return;
        }
        let reach = |out: usize, stride: usize, k: usize, dil: usize| {
            (out - 1) * stride + (k - 1) * dil + 1
        };
        let (pt, pl) = (p.padding.top, p.padding.left);
        let wp = (pl + in_w).max(reach(out_w, p.stride_w, kw, 1));
        // In the code range whenever a window reaches the padding (`supports`); unused else.
        let zc_code = self.input_zero_point.wrapping_add(T::A_OFFSET);
        let epi = &self.gemm.epi;
        let run_groups = self.row_run / kg;
        // What the last window row of an image reads past it: the rest of its padded run.
        let slack = self.row_run - kw * in_c;
        let row_len = wp * in_c;
        // Image row `y` of batch `bi` (padding included) and its pixel sums.
        let rows_of = ImageRows {
            input,
            in_hw: [in_h, in_w],
            real_c,
            in_c,
            pt,
            pl,
            wp,
            zc_code,
        };
        let fill_row = |bi: usize, y: usize, dst: &mut [F::E], dsum: &mut [i32]| {
            // SAFETY: F's tier is this plan's (available) tier; in_c % KG == 0.
            unsafe { rows_of.fill(bi, y, dst, dsum, F::canon_row::<T>, F::widen_3_4::<T>) }
        };
        // A chunk of pixels whose windows (about kh image rows of its width) stay in L2
        // while every B panel streams past them; a 1x1 layer's as the tier sets
        // (`ImplicitKernel::CHUNK_1X1_BYTES`).
        let threads = threads.max(1);
        let elem = std::mem::size_of::<F::E>();
        let budget = if kh == 1 && kw == 1 {
            F::CHUNK_1X1_BYTES
        } else {
            128 * 1024
        };
        let mut chunk = (budget / (in_c * elem * kh).max(1)).clamp(mr, 2048) / mr * mr;
        // Whole rounds of one chunk per thread, as few rounds as the L2 budget allows (the
        // chunks are still claimed as threads come free): more chunks per thread cost each
        // its own kh - 1 rows of halo and its setup, and chunks capped by L2 alone can leave an
        // odd last round (7 chunks for 2 threads), hence whole rounds.
        if threads > 1 {
            let rounds = m.div_ceil(threads * chunk);
            chunk = m.div_ceil(threads * rounds).div_ceil(mr) * mr;
        }
        let chunks = m.div_ceil(chunk);
        let panels = oc.div_ceil(nr);
        let out_ptr = super::SendPtr(output.as_mut_ptr() as *mut u8);
        // The image rows a window starting at row `y0` reaches.
        let win_h = (kh - 1) * p.dilation_h + 1;
        // Task `t`'s pixels: its rows, batches and output rows, and the image rows it maps.
        let span = |t: usize| {
            let r0 = t * chunk;
            let rows = chunk.min(m - r0);
            let (b0, b1) = (r0 / (out_h * out_w), (r0 + rows - 1) / (out_h * out_w));
            let (oy0, oy1) = ((r0 / out_w) % out_h, ((r0 + rows - 1) / out_w) % out_h);
            let image_rows = (b0..=b1).fold(0, |n, bi| {
                let ylo = if bi == b0 { oy0 * p.stride_h } else { 0 };
                let last = if bi == b1 { oy1 } else { out_h - 1 };
                n + last * p.stride_h + win_h - ylo
            });
            (r0, rows, [b0, b1], [oy0, oy1], image_rows)
        };
        // A task's image, pixel sums, batch segments, and its tiles' row sums and window
        // pointers, carved from its thread's scratch.
        let need = |rows: usize, batches: usize, image_rows: usize| {
            let tiles = rows.div_ceil(mr) * mr;
            super::Need::default()
                .add::<F::E>(image_rows * row_len + slack)
                .add::<i32>(image_rows * wp)
                .add::<(usize, usize)>(batches)
                .add::<i32>(tiles)
                .add::<*const F::E>(tiles)
        };
        let most = (0..chunks)
            .map(|t| {
                let (_, rows, [b0, b1], _, image_rows) = span(t);
                need(rows, b1 - b0 + 1, image_rows).0
            })
            .max()
            .unwrap_or(0);
        super::reserve_scratch(threads, 0, most);
        // Each task maps the image rows its own windows read into its thread's buffer, then
        // runs its tiles: the rows are written and read by one core. A shared image filled by
        // a job of its own before the tiles would cost a hand-off and a wait per layer and send
        // every row across cores; the price is the kh - 1 rows either side of a chunk, mapped
        // by both tasks that read them.
        let task = |t: usize| {
            let op = out_ptr;
            let (r0, rows, [b0, b1], [oy0, _], image_rows) = span(t);
            super::with_scratch(0, need(rows, b1 - b0 + 1, image_rows).0, |scratch| {
                // Per batch of the chunk: its first image row, and where its rows start in the
                // task's image (in rows).
                let segs = scratch.filled(b1 - b0 + 1, (0usize, 0usize));
                let mut at = 0;
                for (bi, seg) in (b0..=b1).zip(segs.iter_mut()) {
                    let ylo = if bi == b0 { oy0 * p.stride_h } else { 0 };
                    *seg = (ylo, at);
                    at = if bi == b1 {
                        image_rows
                    } else {
                        at + (out_h - 1) * p.stride_h + win_h - ylo
                    };
                }
                let image = scratch.take::<F::E>(image_rows * row_len + slack);
                let sums = scratch.take::<i32>(image_rows * wp);
                let segs = &segs[..];
                for (bi, &(ylo, at)) in (b0..).zip(segs) {
                    let end = segs.get(bi + 1 - b0).map_or(image_rows, |s| s.1);
                    for (j, y) in (at..end).zip(ylo..) {
                        fill_row(
                            bi,
                            y,
                            &mut image[j * row_len..(j + 1) * row_len],
                            &mut sums[j * wp..(j + 1) * wp],
                        );
                    }
                }
                let (image, sums) = (&image[..], &sums[..]);
                let tiles = rows.div_ceil(mr);
                let rowsum = scratch.filled(tiles * mr, 0i32);
                let ptrs = scratch.filled(tiles * mr, std::ptr::null::<F::E>());
                // Pixels in (b, oy, ox) order, a run of one output row at a time: a pixel's
                // window starts `stride_w` pixels after its left neighbour's.
                let step = p.stride_w * in_c;
                let (mut bi, mut oy, mut ox) = (b0, oy0, r0 % out_w);
                let mut k = 0;
                while k < rows {
                    let (ylo, at) = segs[bi - b0];
                    let row = at + oy * p.stride_h - ylo;
                    let n = (out_w - ox).min(rows - k);
                    let mut ptr = image[(row * wp + ox * p.stride_w) * in_c..].as_ptr();
                    for slot in &mut ptrs[k..k + n] {
                        *slot = ptr;
                        ptr = ptr.wrapping_add(step);
                    }
                    // Symmetric weights (every zw 0) never read the row sum.
                    if !epi.zw_zero {
                        for (j, rs) in rowsum[k..k + n].iter_mut().enumerate() {
                            let at = row * wp + (ox + j) * p.stride_w;
                            *rs = window_sum(sums, at, p.dilation_h * wp, kh, kw);
                        }
                    }
                    k += n;
                    ox += n;
                    if ox == out_w {
                        ox = 0;
                        oy += 1;
                        if oy == out_h {
                            oy = 0;
                            bi += 1;
                        }
                    }
                }
                // Padding rows of the last tile repeat the chunk's last pixel (never stored).
                for j in rows..tiles * mr {
                    (ptrs[j], rowsum[j]) = (ptrs[rows - 1], rowsum[rows - 1]);
                }
                let ptrs = &ptrs[..];
                for pn in 0..panels {
                    let n0 = pn * nr;
                    let cols = nr.min(oc - n0);
                    let bp = &b[pn * panel_stride..];
                    for tile in 0..tiles {
                        let rows_a = ImplicitRows {
                            base: &ptrs[tile * mr..(tile + 1) * mr],
                            kh,
                            row_stride: p.dilation_h * wp * in_c,
                            run_groups,
                        };
                        let r = tile * mr;
                        // SAFETY: F's tier is this plan's tier; every window lies inside the
                        // task's image (its rows cover the reach of every pixel of the chunk,
                        // wp the reach of every column); the B panel holds
                        // `kh * run_groups` groups; the stores stay in this task's rows
                        // r0 + r .. and columns n0 .. n0 + cols, disjoint between tasks.
                        unsafe {
                            F::tile_implicit(
                                &rows_a,
                                bp.as_ptr(),
                                &TileOut {
                                    rowsum: rowsum.as_ptr().add(r),
                                    epi,
                                    n0,
                                    out: op.0.add((r0 + r) * oc + n0),
                                    ldc: oc,
                                    rows: mr.min(rows - r),
                                    cols,
                                },
                            )
                        };
                    }
                }
            });
        };
        super::parallel_for(threads, chunks, &task);
    }
}

/// A window's code sum (wrapping, as the accumulators): the pixel sums of its `kh` rows of `kw`
/// adjacent pixels, the first from pixel `at`, each row `row_step` pixels after the last.
#[inline]
fn window_sum(sums: &[i32], at: usize, row_step: usize, kh: usize, kw: usize) -> i32 {
    (0..kh).fold(0i32, |sum, fy| {
        let a = at + fy * row_step;
        sums[a..a + kw].iter().fold(sum, |s, &v| s.wrapping_add(v))
    })
}

/// How the implicit GEMMs map input rows into a padded image of canonical codes: `wp` pixels
/// per row (`pl` of them left padding), `in_c` channels per pixel (`real_c` of them the
/// input's), the padding and extra channels holding the input zero point `zc_code`.
struct ImageRows<'a, T> {
    input: &'a [T],
    in_hw: [usize; 2],
    real_c: usize,
    in_c: usize,
    pt: usize,
    pl: usize,
    wp: usize,
    zc_code: i32,
}

impl<T: Code8> ImageRows<'_, T> {
    /// Image row `y` (padded coordinates) of batch `bi` into `dst`, each pixel's code sum into
    /// `dsum`; `canon` maps a row of whole pixels (the tier's `canon_row`), `widen_3_4` a row of
    /// 3-channel pixels into 4 channels (the tier's `widen_3_4`).
    ///
    /// # Safety
    /// `canon` may be called with `in_c` channels (the CPU has its tier, and takes `in_c`), and
    /// `widen_3_4` may be called (the CPU has its tier).
    unsafe fn fill<E: super::ImageElem>(
        &self,
        bi: usize,
        y: usize,
        dst: &mut [E],
        dsum: &mut [i32],
        canon: unsafe fn(&[T], usize, &mut [E], &mut [i32]),
        widen_3_4: unsafe fn(&[T], i32, &mut [E], &mut [i32]),
    ) {
        let [in_h, in_w] = self.in_hw;
        let (in_c, real_c, pl, wp) = (self.in_c, self.real_c, self.pl, self.wp);
        // In the code range whenever a window reaches the padding (`supports`); unused else.
        let zc = E::from_code(self.zc_code);
        let zsum = (in_c as i32).wrapping_mul(self.zc_code);
        let iy = y.checked_sub(self.pt).filter(|&iy| iy < in_h);
        let Some(iy) = iy else {
            dst.fill(zc);
            dsum.fill(zsum);
            return;
        };
        let x1 = (pl + in_w).min(wp);
        dst[..pl * in_c].fill(zc);
        dsum[..pl].fill(zsum);
        dst[x1 * in_c..].fill(zc);
        dsum[x1..].fill(zsum);
        let s = (bi * in_h + iy) * in_w * real_c;
        let codes = &self.input[s..s + (x1 - pl) * real_c];
        if in_c == real_c {
            // SAFETY: the caller meets this function's contract; the lengths agree.
            unsafe {
                canon(
                    codes,
                    in_c,
                    &mut dst[pl * in_c..x1 * in_c],
                    &mut dsum[pl..x1],
                )
            };
        } else {
            let (dst, dsum) = (&mut dst[pl * in_c..x1 * in_c], &mut dsum[pl..x1]);
            // The channel counts `padded_channels` makes, unrolled with constant counts so
            // that widening a large RGB input stays cheap next to the stem itself.
            match (real_c, in_c) {
                // SAFETY: the caller meets this function's contract; the lengths agree.
                (3, 4) => unsafe { widen_3_4(codes, self.zc_code, dst, dsum) },
                (6, 8) => widen_pixels::<_, _, 6, 8>(codes, self.zc_code, dst, dsum),
                (7, 8) => widen_pixels::<_, _, 7, 8>(codes, self.zc_code, dst, dsum),
                _ => widen_pixels_any(codes, real_c, in_c, self.zc_code, dst, dsum),
            }
        }
    }
}

/// A tier's convolution tile whose rows are read in place at one stride (AMX's tile loads take
/// any row stride): for a stride-1 convolution over a padded image, output pixel `(y, x)`'s
/// window starts at image pixel `y * wp + x`, so consecutive pixels of the image, row ends
/// included, are rows `in_c` bytes apart, and a tile of them needs no packing (see
/// [`Conv2dPlan::run_strided`]).
pub(crate) trait StridedKernel {
    const MR: usize;
    const NR: usize;
    /// Codes one step of the tile reads per row: filter rows are padded to a multiple of it.
    const KG: usize;
    /// One row of the padded image as canonical u8, with each pixel's code sum.
    ///
    /// # Safety
    /// The CPU has the tier; `dst.len() == codes.len() == sums.len() * c`.
    unsafe fn canon_row<T: Code8>(codes: &[T], c: usize, dst: &mut [u8], sums: &mut [i32]);
    /// A row of 3-channel pixels widened to 4, as [`widen_pixels`] makes it.
    ///
    /// # Safety
    /// The CPU has the tier; `codes.len() == 3 * sums.len()` and `dst.len() == 4 * sums.len()`.
    unsafe fn widen_3_4<T: Code8>(codes: &[T], zc_code: i32, dst: &mut [u8], sums: &mut [i32]) {
        widen_pixels::<_, _, 3, 4>(codes, zc_code, dst, sums)
    }
    /// The `MR x NR` int32 sums of rows `a + r * lda` (`r < MR`), step `s` reading each row's
    /// `KG` codes from `offs[s]` against group `s` of the packed B panel `b`, stored to `c`.
    ///
    /// # Safety
    /// The CPU has the tier; every step's rows are readable for `KG` bytes; `b` holds
    /// `offs.len()` groups; `c` is valid for `MR * NR` int32.
    unsafe fn tile(a: *const u8, lda: usize, offs: &[usize], b: *const i8, c: *mut i32);
    /// The output stage on `o.rows` rows of `NR` sums at `c`.
    ///
    /// # Safety
    /// The CPU has the tier; `c` holds those rows; `o` meets [`super::TileOut`]'s contract
    /// for them.
    unsafe fn finish(c: *const i32, o: &super::TileOut);
    /// Called once a task's tiles are done.
    ///
    /// # Safety
    /// The CPU has the tier.
    unsafe fn end_task();
}

impl Conv2dPlan {
    /// Whether the plan runs on its tier's strided tile ([`run_strided`](Self::run_strided)).
    pub(crate) fn strided(&self) -> bool {
        self.strided
    }

    /// A stride-1 convolution on a [`StridedKernel`]: each task maps the image rows its output
    /// rows read (as [`run_implicit`](Self::run_implicit) does) and runs tiles over the
    /// image's pixels, `wp` per output row, pixel `q` a GEMM row starting at `q * in_c`; step
    /// `(fy, j)` of the K loop reads the `j`-th `KG` codes of filter row `fy`,
    /// `fy * dilation_h * wp * in_c + j * KG` past it. The `wp - out_w` pixels past each output
    /// row's end (and past the task's last row) are computed and never stored; what a row
    /// reads past its window (the next pixels, or slack past the image) meets the zero weights
    /// the filter rows are padded with. The products are the reference's, so the sums are.
    pub(crate) fn run_strided<K: StridedKernel, T: Code8>(
        &self,
        input: &[T],
        input_shape: [usize; 4],
        output: &mut [T],
        output_shape: [usize; 4],
        threads: usize,
    ) {
        use super::{Need, PackedElem, TileOut};
        let (mr, nr, kg) = (K::MR, K::NR, K::KG);
        assert!(self.row_run.is_multiple_of(kg));
        let b = i8::of(&self.gemm.packed);
        let panel_stride = self.panel_stride(self.gemm.kernels.kg, nr);
        let [batches, in_h, in_w, real_c] = input_shape;
        let in_c = self.image_channels;
        let [oc, kh, kw, _] = self.filter_shape;
        let [_, out_h, out_w, _] = output_shape;
        let p = self.params;
        assert!(p.stride_h == 1 && p.stride_w == 1 && p.dilation_w == 1);
        if batches * out_h * out_w == 0 || oc == 0 {
            return;
        }
        let (pt, pl) = (p.padding.top, p.padding.left);
        let wp = (pl + in_w).max(out_w + kw - 1);
        let row_len = wp * in_c;
        let win_h = (kh - 1) * p.dilation_h + 1;
        let run_groups = self.row_run / kg;
        let steps = kh * run_groups;
        let rows_of = ImageRows {
            input,
            in_hw: [in_h, in_w],
            real_c,
            in_c,
            pt,
            pl,
            wp,
            zc_code: self.input_zero_point.wrapping_add(T::A_OFFSET),
        };
        let epi = &self.gemm.epi;
        // Output rows per task: an image chunk that stays in L2 while every B panel streams
        // past it, split further so that each thread gets whole rounds of tasks.
        let threads = threads.max(1);
        let budget = (192 * 1024 / row_len.max(1)).saturating_sub(win_h - 1);
        let mut segs = out_h.div_ceil(budget.clamp(1, out_h));
        if threads > 1 && batches * segs < 4 * threads {
            while !(batches * segs).is_multiple_of(threads) && segs < out_h {
                segs += 1;
            }
        }
        let seg_rows = out_h.div_ceil(segs);
        let segs = out_h.div_ceil(seg_rows);
        let panels = oc.div_ceil(nr);
        let out_ptr = super::SendPtr(output.as_mut_ptr() as *mut u8);
        // A task of `nrows` output rows: its image rows, GEMM rows, tiles and image bytes (the
        // last tile's rows read up to its last row's last step).
        let span = |nrows: usize| {
            let img_rows = nrows + win_h - 1;
            let vrows = nrows * wp;
            let tiles = vrows.div_ceil(mr);
            let image_len = (img_rows * row_len)
                .max((tiles * mr - 1) * in_c + (win_h - 1) * row_len + self.row_run);
            (img_rows, vrows, tiles, image_len)
        };
        // Its image, pixel sums, row sums, step offsets and tile sums from its thread's scratch.
        let need = |nrows: usize| {
            let (img_rows, _, tiles, image_len) = span(nrows);
            Need::default()
                .add::<u8>(image_len)
                .add::<i32>(img_rows * wp)
                .add::<i32>(tiles * mr)
                .add::<usize>(steps)
                .add::<i32>(mr * nr)
        };
        super::reserve_scratch(threads, 0, need(seg_rows).0);
        let task = |t: usize| {
            let op = out_ptr;
            let (bi, sg) = (t / segs, t % segs);
            let oy0 = sg * seg_rows;
            let nrows = seg_rows.min(out_h - oy0);
            let (img_rows, vrows, tiles, image_len) = span(nrows);
            super::with_scratch(0, need(nrows).0, |scratch| {
                let image = scratch.take::<u8>(image_len);
                let sums = scratch.take::<i32>(img_rows * wp);
                let rowsum = scratch.take::<i32>(tiles * mr);
                let offs = scratch.take::<usize>(steps);
                let c = scratch.take::<i32>(mr * nr);
                for (s, off) in offs.iter_mut().enumerate() {
                    let (fy, j) = (s / run_groups, s % run_groups);
                    *off = fy * p.dilation_h * row_len + j * kg;
                }
                for j in 0..img_rows {
                    // SAFETY: K's tier is this plan's (available) tier, and its `canon_row`
                    // takes any channel count.
                    unsafe {
                        rows_of.fill(
                            bi,
                            oy0 + j,
                            &mut image[j * row_len..(j + 1) * row_len],
                            &mut sums[j * wp..(j + 1) * wp],
                            K::canon_row::<T>,
                            K::widen_3_4::<T>,
                        )
                    };
                }
                // Row sums of the stored pixels; symmetric weights (every zw 0) never read them.
                if !epi.zw_zero {
                    for oy in 0..nrows {
                        for ox in 0..out_w {
                            rowsum[oy * wp + ox] =
                                window_sum(sums, oy * wp + ox, p.dilation_h * wp, kh, kw);
                        }
                    }
                }
                let out_base = (bi * out_h + oy0) * out_w;
                for pn in 0..panels {
                    let n0 = pn * nr;
                    let cols = nr.min(oc - n0);
                    let bp = &b[pn * panel_stride..];
                    for tile in 0..tiles {
                        let q0 = tile * mr;
                        // SAFETY: the tier is this plan's; every row's reads end within
                        // `image_len` (its last step ends `row_run` codes past its window's
                        // last row's start); the B panel holds `steps` groups; `c` holds
                        // `mr * nr` int32.
                        unsafe {
                            K::tile(
                                image.as_ptr().add(q0 * in_c),
                                in_c,
                                offs,
                                bp.as_ptr(),
                                c.as_mut_ptr(),
                            )
                        };
                        // The stored pixels of the tile, one run per output row.
                        let (mut q, q1) = (q0, (q0 + mr).min(vrows));
                        while q < q1 {
                            let (oy, ox) = (q / wp, q % wp);
                            if ox >= out_w {
                                q = (oy + 1) * wp;
                                continue;
                            }
                            let end = q1.min(oy * wp + out_w);
                            let o = TileOut {
                                rowsum: rowsum[q..].as_ptr(),
                                epi,
                                n0,
                                // SAFETY: pixel (oy0 + oy, ox) of batch bi, column n0: this
                                // task's output rows, disjoint between tasks.
                                out: unsafe { op.0.add((out_base + oy * out_w + ox) * oc + n0) },
                                ldc: oc,
                                rows: end - q,
                                cols,
                            };
                            // SAFETY: rows q - q0 .. end - q0 of the tile's sums; the stores
                            // are `end - q` pixels of one output row, `cols` columns each.
                            unsafe { K::finish(c.as_ptr().add((q - q0) * nr), &o) };
                            q = end;
                        }
                    }
                }
            });
            // SAFETY: the tier is available.
            unsafe { K::end_task() };
        };
        super::parallel_for(threads, batches * segs, &task);
    }
}

/// A narrow input row widened to `C` channels (`R` real ones, then the zero point), as
/// canonical image elements with each pixel's code sum; [`widen_pixels_any`] with the channel
/// counts fixed.
#[inline(always)]
pub(crate) fn widen_pixels<E: super::ImageElem, T: Code8, const R: usize, const C: usize>(
    codes: &[T],
    zc_code: i32,
    dst: &mut [E],
    sums: &mut [i32],
) {
    let extra = zc_code.wrapping_mul((C - R) as i32);
    let zc = E::from_code(zc_code);
    for ((px, sum), src) in dst
        .chunks_exact_mut(C)
        .zip(sums.iter_mut())
        .zip(codes.chunks_exact(R))
    {
        let mut acc = extra;
        for c in 0..R {
            let v = src[c].canon_a() as i32;
            px[c] = E::from_code(v);
            acc = acc.wrapping_add(v);
        }
        px[R..].fill(zc);
        *sum = acc;
    }
}

/// [`widen_pixels`] for any channel counts (`real_c < in_c`).
fn widen_pixels_any<E: super::ImageElem, T: Code8>(
    codes: &[T],
    real_c: usize,
    in_c: usize,
    zc_code: i32,
    dst: &mut [E],
    sums: &mut [i32],
) {
    let extra = zc_code.wrapping_mul((in_c - real_c) as i32);
    let zc = E::from_code(zc_code);
    for ((px, sum), src) in dst
        .chunks_exact_mut(in_c)
        .zip(sums.iter_mut())
        .zip(codes.chunks_exact(real_c))
    {
        let mut acc = extra;
        for (d, &x) in px.iter_mut().zip(src) {
            let v = x.canon_a() as i32;
            *d = E::from_code(v);
            acc = acc.wrapping_add(v);
        }
        px[real_c..].fill(zc);
        *sum = acc;
    }
}

/// A fully connected layer (`weights` `[out, depth]`) with its weights packed for one tier.
#[derive(Debug, Clone, PartialEq)]
pub struct FullyConnectedPlan {
    gemm: PreparedGemm,
}

impl FullyConnectedPlan {
    pub fn new<T: Code8>(
        weights: &[T],
        out_features: usize,
        depth: usize,
        weight_zero_points: &[i32],
        input_zero_point: i32,
        stage: &OutputStage,
        isa: Isa,
    ) -> FullyConnectedPlan {
        FullyConnectedPlan {
            gemm: PreparedGemm::new(
                weights,
                out_features,
                depth,
                weight_zero_points,
                input_zero_point,
                stage,
                isa,
            ),
        }
    }

    /// Equal to `reference::fully_connected` with the same arguments.
    pub fn run<T: Code8>(&self, input: &[T], batches: usize, output: &mut [T], threads: usize) {
        self.gemm.run(input, batches, output, threads)
    }
}

/// A tier's tile for 1x1 convolutions that reads the input's pixels in place as its rows, one
/// row every `in_c` bytes (AMX's tile loads take any row stride; see
/// [`Conv2dPlan::run_pointwise`]).
pub(crate) trait PointwiseKernel {
    const MR: usize;
    const NR: usize;
    /// Codes of one step of the tile per row: K is padded to a multiple of it in the packed
    /// filter, with zero weights.
    const KG: usize;
    /// The `MR x NR` int32 sums of rows `a + r * lda` (`r < MR`) over `groups` steps of `KG`
    /// codes against the packed B panel `b`, stored to `c`; the codes are read as s8 when
    /// `signed`, else as u8.
    ///
    /// # Safety
    /// The CPU has the tier; every row's `groups * KG` bytes are readable; `b` holds `groups`
    /// groups; `c` is valid for `MR * NR` int32.
    unsafe fn tile(
        a: *const u8,
        lda: usize,
        groups: usize,
        signed: bool,
        b: *const i8,
        c: *mut i32,
    );
    /// The output stage on `o.rows` rows of `NR` sums at `c`.
    ///
    /// # Safety
    /// The CPU has the tier; `c` holds those rows; `o` meets [`super::TileOut`]'s contract.
    unsafe fn finish(c: *const i32, o: &super::TileOut);
    /// Called once a task's tiles are done.
    ///
    /// # Safety
    /// The CPU has the tier.
    unsafe fn end_task();
}

impl Conv2dPlan {
    /// A 1x1, stride-1, unpadded convolution of `m` pixels on a [`PointwiseKernel`]: pixel `q`
    /// is GEMM row `q`, its `in_c` codes at `q * in_c` in the input itself, multiplied as they
    /// are (s8 for int8: the plan's pointwise epilogue adds `A_OFFSET Σw'` to each column, which
    /// makes the sums those of the canonical codes, modulo 2^32 as the reference's). A row reads
    /// whole `KG`-code steps, so past its codes it reads the next pixels', which meet the zero
    /// weights K is padded with; a tile whose reads would pass the input's end (the last one or
    /// two) is copied into scratch first, its missing rows computed from whatever the scratch
    /// holds and never stored. The weights are symmetric (the plan's condition), so no row sum
    /// is needed. Work is split into (tile, panel) pairs, tile-major, in equal contiguous runs
    /// per thread: a tile's rows stay in L1 while the panels stream past them.
    pub(crate) fn run_pointwise<K: PointwiseKernel, T: Code8>(
        &self,
        input: &[T],
        m: usize,
        output: &mut [T],
        threads: usize,
    ) {
        use super::{Need, TileOut};
        let epi = self
            .pointwise
            .as_ref()
            .expect("conv2d: the pointwise tile runs a plan made for it");
        let (mr, nr, kg) = (K::MR, K::NR, K::KG);
        let [oc, _, _, k] = self.filter_shape;
        assert_eq!(input.len(), m * k, "conv2d: input length");
        assert_eq!(output.len(), m * oc, "conv2d: output length");
        if m == 0 || oc == 0 {
            return;
        }
        let b = i8::of(&self.gemm.packed);
        let groups = k.div_ceil(kg).max(1);
        let panel_stride = self.panel_stride(self.gemm.kernels.kg, nr);
        debug_assert_eq!(panel_stride, groups * kg * nr);
        let reach = groups * kg;
        let (tiles, panels) = (m.div_ceil(mr), oc.div_ceil(nr));
        // Tiles below `in_place` read only inside the input: rows `r` with
        // `r * k + reach <= m * k`, whole tiles of them.
        let in_place = if m * k >= reach {
            ((m * k - reach) / k.max(1) + 1).min(m) / mr
        } else {
            0
        };
        let units = tiles * panels;
        let threads = threads.max(1).min(units);
        let per = units.div_ceil(threads);
        let tasks = units.div_ceil(per);
        let need = Need::default()
            .add::<u8>(mr * k + reach)
            .add::<i32>(mr * nr)
            .add::<i32>(mr)
            .0;
        super::reserve_scratch(threads, 0, need);
        let src = input.as_ptr() as usize;
        let out_ptr = super::SendPtr(output.as_mut_ptr() as *mut u8);
        let signed = T::A_OFFSET != 0;
        let task = |t: usize| {
            let op = out_ptr;
            let (u0, u1) = (t * per, ((t + 1) * per).min(units));
            super::with_scratch(0, need, |scratch| {
                let tail = scratch.take::<u8>(mr * k + reach);
                let c = scratch.take::<i32>(mr * nr);
                // Symmetric weights: the output stage never reads the row sums.
                let rowsum = scratch.filled(mr, 0i32);
                let mut cur = usize::MAX;
                let mut a = src as *const u8;
                for u in u0..u1 {
                    let (tile, pn) = (u / panels, u % panels);
                    let q0 = tile * mr;
                    let rows = mr.min(m - q0);
                    if tile != cur {
                        cur = tile;
                        a = if tile < in_place {
                            (src as *const u8).wrapping_add(q0 * k)
                        } else {
                            // SAFETY: T is one byte; rows q0 .. q0 + rows are in the input.
                            let codes = unsafe {
                                std::slice::from_raw_parts((src as *const u8).add(q0 * k), rows * k)
                            };
                            tail[..rows * k].copy_from_slice(codes);
                            tail.as_ptr()
                        };
                    }
                    let n0 = pn * nr;
                    // SAFETY: the tier is this plan's (available) tier; every row's `reach`
                    // bytes lie inside the input (tiles below `in_place`) or the tail buffer
                    // (`mr * k + reach` bytes); the panel holds `groups` groups; `c` holds
                    // `mr * nr` int32; the stores are rows q0 .. q0 + rows, columns n0 ..
                    // n0 + cols of the output, one task's units, disjoint between tasks.
                    unsafe {
                        K::tile(
                            a,
                            k,
                            groups,
                            signed,
                            b.as_ptr().add(pn * panel_stride),
                            c.as_mut_ptr(),
                        );
                        K::finish(
                            c.as_ptr(),
                            &TileOut {
                                rowsum: rowsum.as_ptr(),
                                epi,
                                n0,
                                out: op.0.add(q0 * oc + n0),
                                ldc: oc,
                                rows,
                                cols: nr.min(oc - n0),
                            },
                        );
                    }
                }
            });
            // SAFETY: the tier is available.
            unsafe { K::end_task() };
        };
        super::parallel_for(threads, tasks, &task);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod widen_tests {
    use super::{widen_pixels, Code8, StridedKernel};
    use crate::gemm::ImplicitKernel;
    use crate::isa::{amx::Amx, avx512vnni::Vnni, avx512vnni::VnniWide, Isa};
    use proptest::prelude::*;

    /// Every AVX-512 tier's widening against [`widen_pixels`], bit for bit, for every in-range
    /// zero-point code and a few outside it (whose bytes truncate and sums wrap).
    fn check<T: Code8>(codes: &[T]) {
        let n = codes.len() / 3;
        let codes = &codes[..3 * n];
        let zcs = (0..=255).chain([256, -1, -129, 70_000, i32::MIN, i32::MAX]);
        for zc in zcs {
            let (mut want, mut want_sums) = (vec![0u8; 4 * n], vec![0i32; n]);
            widen_pixels::<u8, T, 3, 4>(codes, zc, &mut want, &mut want_sums);
            let run = |name: &str, f: unsafe fn(&[T], i32, &mut [u8], &mut [i32])| {
                // Filled with a marker, so a missed store shows.
                let (mut got, mut sums) = (vec![0xa5u8; 4 * n], vec![0x5a5a_5a5a; n]);
                // SAFETY: the caller checked the tier; the lengths are the contract's.
                unsafe { f(codes, zc, &mut got, &mut sums) };
                assert_eq!(got, want, "{name}: {n} pixels, zero-point code {zc}");
                assert_eq!(sums, want_sums, "{name}: sums of {n} pixels, code {zc}");
            };
            if Isa::Avx512Vnni.is_available() {
                run("vnni", <Vnni as ImplicitKernel>::widen_3_4::<T>);
                run("vnni wide", <VnniWide as ImplicitKernel>::widen_3_4::<T>);
            }
            if Isa::Amx.is_available() {
                run("amx", <Amx as StridedKernel>::widen_3_4::<T>);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Edge-heavy codes (the ends and middle of both types, where the int8 flip turns
        /// 127 into 255 and 128 into 0), any width, the row starting at any byte.
        #[test]
        fn widen_3_4_matches_scalar(
            pixels in 0usize..80,
            skip in 0usize..3,
            seed in any::<u64>(),
        ) {
            let mut rng = intq_testutil::TestRng::new(seed);
            let bytes: Vec<u8> = (0..3 * pixels + skip)
                .map(|_| {
                    let any = rng.int(0u8, 255);
                    rng.pick(&[0u8, 1, 127, 128, 129, 254, 255, any])
                })
                .collect();
            check::<u8>(&bytes[skip..]);
            let signed: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
            check::<i8>(&signed[skip..]);
        }
    }
}
