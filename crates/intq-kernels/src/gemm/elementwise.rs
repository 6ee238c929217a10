//! Vectorized elementwise ops: quantized Add on equal shapes (the residual connections of CNNs),
//! Mul on equal shapes and per-channel broadcasts (squeeze-and-excitation), HardSwish, bilinear
//! resize, pooling, and the model's input Quantize. Each equals its reference kernel bit for bit; what a tier's table lacks,
//! or parameters outside a vector path's preconditions, run the reference.

use super::{Code8, Kernels};
use crate::isa::Isa;
use crate::reference::{
    self, pool_window as window, AddParams, BilinearArithmetic, HardSwishParams, MulParams,
    ResizeMode,
};

#[cfg(target_arch = "aarch64")]
pub(super) mod neon;
#[cfg(target_arch = "x86_64")]
pub(super) mod x86;

/// Elements of an Add below which it runs on one thread: below this the work per thread is no
/// longer large against the cost of handing it to a helper.
const ADD_PAR_MIN: usize = 1 << 13;

/// Quantized Add, equal to `reference::add`; inputs of equal shape take the tier's vector path
/// where its table has one (split over `threads` when large, as a deep network's residual Adds
/// are), anything else (broadcasting, the portable tier, parameters outside the vector path's
/// preconditions) runs the reference.
#[allow(clippy::too_many_arguments)]
pub fn add<T: Code8>(
    isa: Isa,
    threads: usize,
    lhs: &[T],
    lhs_shape: &[usize],
    rhs: &[T],
    rhs_shape: &[usize],
    params: &AddParams,
    output: &mut [T],
    output_shape: &[usize],
) {
    let vector = Kernels::or_portable(isa).ops::<T>().add;
    if let Some(vector) = vector.filter(|_| {
        lhs_shape == rhs_shape
            && lhs_shape == output_shape
            && lhs.len() == output.len()
            && rhs.len() == output.len()
    }) {
        let ok_mult =
            |m: intq_quant::QuantizedMultiplier| m.m0 >= 0 && (-31..=31).contains(&m.shift);
        let lo = params.clamp_min as i64 - params.output_zero_point as i64;
        let hi = params.clamp_max as i64 - params.output_zero_point as i64;
        if let (Ok(lo), Ok(hi)) = (i32::try_from(lo), i32::try_from(hi)) {
            if ok_mult(params.lhs_multiplier)
                && ok_mult(params.rhs_multiplier)
                && ok_mult(params.output_multiplier)
                && (0..=31).contains(&params.left_shift)
                && params.clamp_min <= params.clamp_max
            {
                let n = output.len();
                let threads = if n >= ADD_PAR_MIN { threads.max(1) } else { 1 };
                let chunk = n
                    .div_ceil(threads * super::TASKS_PER_THREAD)
                    .next_multiple_of(64)
                    .max(64);
                let out_ptr = super::SendPtr(output.as_mut_ptr() as *mut u8);
                super::parallel_for(threads, n.div_ceil(chunk), &|t: usize| {
                    let op = out_ptr;
                    let (i0, i1) = (t * chunk, ((t + 1) * chunk).min(n));
                    // SAFETY: each task writes its own range of `output` (length n).
                    let out = unsafe {
                        std::slice::from_raw_parts_mut((op.0 as *mut T).add(i0), i1 - i0)
                    };
                    let (l, r) = (&lhs[i0..i1], &rhs[i0..i1]);
                    // SAFETY: the table is of a tier the CPU has; the three ranges have equal
                    // lengths; the parameters were checked above.
                    unsafe { vector(params, lo, hi, l, r, out) };
                });
                return;
            }
        }
    }
    reference::add(lhs, lhs_shape, rhs, rhs_shape, params, output, output_shape)
}

/// Splits `units` units of work (of `unit_len` elements each) into tasks over `threads` when
/// the op is large enough to pay for the helpers, and calls `f(u0, u1)` for each task's range.
fn split_units(threads: usize, units: usize, unit_len: usize, f: &(dyn Fn(usize, usize) + Sync)) {
    let threads = if units.saturating_mul(unit_len) >= ADD_PAR_MIN {
        threads.max(1)
    } else {
        1
    };
    let per = units.div_ceil(threads * super::TASKS_PER_THREAD).max(1);
    super::parallel_for(threads, units.div_ceil(per), &|t: usize| {
        f(t * per, ((t + 1) * per).min(units))
    });
}

/// `output[i0..i1]` as a slice, for a task that writes only that range.
///
/// # Safety
/// `out` points to at least `i1` elements of `T` that live for `'a`, and no other live
/// reference covers `i0..i1`.
unsafe fn task_range<'a, T>(out: super::SendPtr, i0: usize, i1: usize) -> &'a mut [T] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut((out.0 as *mut T).add(i0), i1 - i0) }
}

/// How an operand broadcasts against the output: the output seen as `[outer, mid, inner]`
/// and the operand as `[outer, 1, inner]` (equal shapes have `mid == 1`). `None` for any other
/// broadcast, or a shape that does not broadcast to the output.
fn outer_mid_inner(shape: &[usize], output_shape: &[usize]) -> Option<(usize, usize, usize)> {
    let rank = output_shape.len();
    if shape.len() > rank || rank > reference::MAX_BINARY_RANK {
        return None;
    }
    let (mut outer, mut mid, mut inner, mut state) = (1usize, 1usize, 1usize, 0);
    for (d, &o) in output_shape.iter().enumerate() {
        let s = (d + shape.len()).checked_sub(rank).map_or(1, |k| shape[k]);
        if o == 1 {
            if s != 1 {
                return None;
            }
        } else if s == o {
            match state {
                0 => outer *= o,
                _ => {
                    state = 2;
                    inner *= o
                }
            }
        } else if s == 1 && state < 2 {
            state = 1;
            mid *= o;
        } else {
            return None;
        }
    }
    Some((outer, mid, inner))
}

/// Quantized Mul, equal to `reference::mul`. On a tier whose table has a vector Mul, operands of
/// the output's shape, and one operand broadcast as `[outer, 1, inner]` against `[outer, mid,
/// inner]` (a per-channel gate `[N, 1, 1, C]` of an `[N, H, W, C]` map, a scalar, a row), run
/// it (split over `threads` when large); any other broadcast runs the reference.
#[allow(clippy::too_many_arguments)]
pub fn mul<T: Code8>(
    isa: Isa,
    threads: usize,
    lhs: &[T],
    lhs_shape: &[usize],
    rhs: &[T],
    rhs_shape: &[usize],
    params: &MulParams,
    output: &mut [T],
    output_shape: &[usize],
) {
    if let Some(vector) = Kernels::or_portable(isa).ops::<T>().mul {
        if mul_vector_ok(params) && params.clamp_min <= params.clamp_max {
            if let Some(()) = mul_broadcast(
                vector,
                threads,
                (lhs, lhs_shape),
                (rhs, rhs_shape),
                params,
                output,
                output_shape,
            ) {
                return;
            }
        }
    }
    reference::mul(lhs, lhs_shape, rhs, rhs_shape, params, output, output_shape)
}

/// Whether the tiers' vector Mul takes `p` (its multiplier within MultiplyByQuantizedMultiplier's
/// vector preconditions: `m0 >= 0`, shift in -31..=31).
fn mul_vector_ok(p: &MulParams) -> bool {
    p.multiplier.m0 >= 0 && (-31..=31).contains(&p.multiplier.shift)
}

/// Runs [`mul`]'s vector kernel where the shapes allow it; `None` (nothing written) otherwise.
fn mul_broadcast<T: Code8>(
    vector: super::table::MulFn<T>,
    threads: usize,
    lhs: (&[T], &[usize]),
    rhs: (&[T], &[usize]),
    params: &MulParams,
    output: &mut [T],
    output_shape: &[usize],
) -> Option<()> {
    let n: usize = output_shape.iter().product();
    if output.len() != n {
        return None;
    }
    // `big` has the output's shape; `small` broadcasts as [outer, 1, inner]. MUL's product
    // commutes, so swapping the operands with their zero points changes nothing.
    let full = |s: &[usize]| matches!(outer_mid_inner(s, output_shape), Some((_, 1, _)));
    let (big, small, p) = if full(lhs.1) && lhs.0.len() == n {
        (lhs.0, rhs, *params)
    } else if full(rhs.1) && rhs.0.len() == n {
        let swapped = MulParams {
            lhs_zero_point: params.rhs_zero_point,
            rhs_zero_point: params.lhs_zero_point,
            ..*params
        };
        (rhs.0, lhs, swapped)
    } else {
        return None;
    };
    let (outer, mid, inner) = outer_mid_inner(small.1, output_shape)?;
    let small = small.0;
    if small.len() != outer * inner || n == 0 {
        return None;
    }
    let out_ptr = super::SendPtr(output.as_mut_ptr() as *mut u8);
    if mid == 1 {
        // Equal shapes: contiguous ranges, 64 codes a unit.
        split_units(threads, n.div_ceil(64), 64, &|u0, u1| {
            let (i0, i1) = (u0 * 64, (u1 * 64).min(n));
            // SAFETY: each task writes its own range of `output` (length n).
            let out = unsafe { task_range::<T>(out_ptr, i0, i1) };
            // SAFETY: the table is of a tier the CPU has; equal lengths; parameters checked.
            unsafe { vector(&p, &big[i0..i1], &small[i0..i1], out) };
        });
        return Some(());
    }
    // A row of `inner` codes per (outer, mid) index; the small operand's row is its outer's.
    // Short rows are tiled so each kernel call covers at least 64 codes.
    const TILE: usize = 256;
    let rows = outer * mid;
    split_units(threads, rows, inner, &|r0, r1| {
        let mut tile = [T::default(); TILE];
        let (mut tiled_outer, reps) = (usize::MAX, (TILE / inner).max(1));
        let mut r = r0;
        while r < r1 {
            let o = r / mid;
            let row = &small[o * inner..(o + 1) * inner];
            let (count, gate): (usize, &[T]) = if inner >= 64 || reps == 1 {
                (1, row)
            } else {
                if tiled_outer != o {
                    for chunk in tile[..reps * inner].chunks_exact_mut(inner) {
                        chunk.copy_from_slice(row);
                    }
                    tiled_outer = o;
                }
                // Whole rows of the same outer index, within the task.
                let count = reps.min(r1 - r).min((o + 1) * mid - r);
                (count, &tile[..count * inner])
            };
            let (i0, i1) = (r * inner, (r + count) * inner);
            // SAFETY: each task writes its own rows of `output` (length n = rows * inner).
            let out = unsafe { task_range::<T>(out_ptr, i0, i1) };
            // SAFETY: the table is of a tier the CPU has; equal lengths; parameters checked.
            unsafe { vector(&p, &big[i0..i1], gate, out) };
            r += count;
        }
    });
    Some(())
}

/// Quantized HardSwish, equal to `reference::hard_swish`: TFLite's int16 steps in vector lanes
/// on a tier whose table has them (split over `threads` when large), else the reference.
pub fn hard_swish<T: Code8>(
    isa: Isa,
    threads: usize,
    input: &[T],
    params: &HardSwishParams,
    output: &mut [T],
) {
    let vector = Kernels::or_portable(isa).ops::<T>().hard_swish;
    match vector.filter(|_| hard_swish_vector_ok(params) && input.len() == output.len()) {
        Some(vector) => {
            let n = output.len();
            let out_ptr = super::SendPtr(output.as_mut_ptr() as *mut u8);
            split_units(threads, n.div_ceil(64), 64, &|u0, u1| {
                let (i0, i1) = (u0 * 64, (u1 * 64).min(n));
                // SAFETY: each task writes its own range of `output` (length n).
                let out = unsafe { task_range::<T>(out_ptr, i0, i1) };
                // SAFETY: the table is of a tier the CPU has; equal lengths; exponents checked.
                unsafe { vector(params, &input[i0..i1], out) };
            });
        }
        None => reference::hard_swish(input, params, output),
    }
}

/// HardSwish through a table of every code's output, made by the reference's own function (a
/// code's output depends on nothing else): the portable and AVX2 tiers' path. Inputs shorter
/// than the table run the reference's function directly.
///
/// # Safety
/// None beyond the table's: this is safe code behind the table's common signature.
pub(crate) unsafe fn hard_swish_table<T: Code8>(p: &HardSwishParams, input: &[T], out: &mut [T]) {
    let code = |q: i32| T::from_i32_saturating(reference::hard_swish_code(q, p, T::MIN, T::MAX));
    if input.len() < 256 {
        for (o, &q) in out.iter_mut().zip(input) {
            *o = code(q.to_i32());
        }
        return;
    }
    let mut table = [T::default(); 256];
    for (i, t) in table.iter_mut().enumerate() {
        *t = code(T::MIN + i as i32);
    }
    for (o, &q) in out.iter_mut().zip(input) {
        *o = table[(q.to_i32() - T::MIN) as usize];
    }
}

/// Whether the tiers' vector HardSwish takes `p`'s exponents (every model's: the output
/// exponent is at most 0 by construction, the reluish one is small).
fn hard_swish_vector_ok(p: &HardSwishParams) -> bool {
    (-31..=0).contains(&p.output_exponent) && (-31..=31).contains(&p.reluish_exponent)
}

/// Quantize of reals to codes, equal to `reference::quantize_to` (`clamp(round(x / S) + Z)`,
/// half away from zero, NaN to the zero point): the tier's vector lanes where its table has
/// them (split over `threads` when large), else the reference. A zero point beyond ±2^23 or an
/// empty code range runs the reference.
pub fn quantize<T: Code8>(
    isa: Isa,
    threads: usize,
    input: &[f32],
    params: intq_quant::QuantParams,
    (qmin, qmax): (i32, i32),
    output: &mut [T],
) {
    let vector = Kernels::or_portable(isa).ops::<T>().quantize;
    let ok = qmin <= qmax && params.zero_point.unsigned_abs() <= QUANTIZE_BOUND as u32;
    match vector.filter(|_| ok && input.len() == output.len()) {
        Some(vector) => {
            // The reference's clamp then saturation to the type, as one clamp.
            let q = QuantizeLanes {
                scale: params.scale,
                zero_point: params.zero_point,
                lo: qmin.clamp(T::MIN, T::MAX),
                hi: qmax.clamp(T::MIN, T::MAX),
            };
            let n = output.len();
            let out_ptr = super::SendPtr(output.as_mut_ptr() as *mut u8);
            split_units(threads, n.div_ceil(64), 64, &|u0, u1| {
                let (i0, i1) = (u0 * 64, (u1 * 64).min(n));
                // SAFETY: each task writes its own range of `output` (length n).
                let out = unsafe { task_range::<T>(out_ptr, i0, i1) };
                // SAFETY: the table is of a tier the CPU has; equal lengths; `q` is in range.
                unsafe { vector(&q, &input[i0..i1], out) };
            });
        }
        None => reference::quantize_to(input, params, (qmin, qmax), output),
    }
}

/// `x / S` is clamped to ±2^24 before rounding: every float that large is an integer, and with
/// `|Z| <= 2^23` both it and the reference's saturated value land beyond the codes on the
/// same side, so the clamp changes no code.
const QUANTIZE_BOUND: i32 = 1 << 23;

/// [`quantize`]'s parameters as the lanes use them: the code range `lo..=hi` is inside `T`'s,
/// and `|zero_point| <= QUANTIZE_BOUND`.
pub(crate) struct QuantizeLanes {
    scale: f32,
    zero_point: i32,
    lo: i32,
    hi: i32,
}

/// [`quantize`]'s arithmetic per real, branch-free so that the compiler vectorizes it: the
/// f32 division, truncation, the exact tie test on `v - trunc(v)` (as the reference's
/// `round_half_away_saturating`), the zero point and the clamp.
#[inline(always)]
pub(crate) fn quantize_body<T: Code8>(q: &QuantizeLanes, input: &[f32], out: &mut [T]) {
    const B: f32 = (2 * QUANTIZE_BOUND) as f32;
    let (s, z, lo, hi) = (q.scale, q.zero_point, q.lo, q.hi);
    for (o, &x) in out.iter_mut().zip(input) {
        let v = x / s;
        let v = if v.is_nan() { 0.0 } else { v };
        let v = if v > B { B } else { v };
        let v = if v < -B { -B } else { v };
        // SAFETY: `v` is a number within ±2^24 (see above), so it converts exactly.
        let t = unsafe { v.to_int_unchecked::<i32>() };
        let frac = v - t as f32;
        let r = t + i32::from(frac >= 0.5) - i32::from(frac <= -0.5);
        // Within `T`'s range, so the low byte is the code.
        *o = T::from_bits((r + z).clamp(lo, hi) as u8);
    }
}

/// [`quantize_body`] compiled for AVX2: 8 lanes.
///
/// # Safety
/// The CPU has AVX2; `input` and `out` have the same length; `q` meets [`QuantizeLanes`]'
/// bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_avx2<T: Code8>(q: &QuantizeLanes, input: &[f32], out: &mut [T]) {
    quantize_body(q, input, out)
}

/// [`quantize_body`] compiled for AVX-512: 16 lanes.
///
/// # Safety
/// The CPU has AVX-512 F/BW; `input` and `out` have the same length; `q` meets
/// [`QuantizeLanes`]' bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn quantize_avx512<T: Code8>(q: &QuantizeLanes, input: &[f32], out: &mut [T]) {
    quantize_body(q, input, out)
}

/// A bilinear resize made ready for the row kernels: per output column its two source columns
/// and weights, per output row its two source rows and weights, in the arithmetic TFLite uses.
pub(crate) struct Bilinear<'a, T> {
    input: &'a [T],
    input_shape: [usize; 4],
    output_shape: [usize; 4],
    /// Per output column, the offsets of its two source pixels in an input row.
    cols: Vec<(usize, usize)>,
    weights: BilinearWeights,
}

enum BilinearWeights {
    /// `ResizeBilinearInteger`: per column `(1024 - dx, dx)`, per row `(y0, y1, 1024 - dy, dy)`.
    /// The sum `(1-dy)((1-dx)p00 + dx p01) + dy((1-dx)p10 + dx p11)` is the reference's
    /// four-product sum regrouped, exact in int32 (checked against the weights' size).
    Integer {
        cols: Vec<(i32, i32)>,
        rows: Vec<(usize, usize, i32, i32)>,
    },
    /// `ResizeBilinear<uint8_t>` in f32: per code of an output row `1 - fx` and `fx`, per row
    /// `(y0, y1, 1 - fy, fy)`; the reference's expression, term by term and left to right.
    Float {
        wx0: Vec<f32>,
        wx1: Vec<f32>,
        rows: Vec<(usize, usize, f32, f32)>,
    },
}

impl<'a, T: Code8> Bilinear<'a, T> {
    /// `None` when the resize is not one the row kernels take (shapes that do not match, a
    /// source index outside the input, integer sums that might leave int32): the reference
    /// runs it.
    fn new(
        input: &'a [T],
        input_shape: [usize; 4],
        mode: ResizeMode,
        arithmetic: BilinearArithmetic,
        output_shape: [usize; 4],
    ) -> Option<Self> {
        let [n, h, w, c] = input_shape;
        let [on, oh, ow, oc] = output_shape;
        if n != on || c != oc || input.len() != n.checked_mul(h)?.checked_mul(w)?.checked_mul(c)? {
            return None;
        }
        if mode.align_corners && mode.half_pixel_centers || h == 0 || w == 0 {
            return None;
        }
        let inside = |i: i32, len: usize| i >= 0 && (i as usize) < len;
        match arithmetic {
            BilinearArithmetic::Integer => {
                let (hh, ww) = (i32::try_from(h).ok()?, i32::try_from(w).ok()?);
                let (ohh, oww) = (i32::try_from(oh).ok()?, i32::try_from(ow).ok()?);
                let axis = |out: i32, inp: i32, outn: i32, len: usize| {
                    let s = reference::bilinear_scale_10(inp, outn, mode.align_corners);
                    let (pos, lo, hi) =
                        reference::bilinear_integer_axis(out, s, mode.half_pixel_centers, inp);
                    let d = pos.checked_sub(lo.checked_mul(1 << 10)?)?;
                    (inside(lo, len) && inside(hi, len) && d.abs() <= 1 << 10).then_some((
                        lo as usize,
                        hi as usize,
                        (1 << 10) - d,
                        d,
                    ))
                };
                let mut cols = Vec::with_capacity(ow);
                let mut wcols = Vec::with_capacity(ow);
                for x in 0..oww {
                    let (x0, x1, a, b) = axis(x, ww, oww, w)?;
                    cols.push((x0 * c, x1 * c));
                    wcols.push((a, b));
                }
                let rows = (0..ohh)
                    .map(|y| axis(y, hh, ohh, h))
                    .collect::<Option<Vec<_>>>()?;
                // |sum| <= 255 * max(|a| + |b|) over columns * the same over rows, plus the
                // rounding half: all within int32.
                let span = |a: i32, b: i32| (a.abs() + b.abs()) as i64;
                let sx = wcols.iter().map(|&(a, b)| span(a, b)).max().unwrap_or(0);
                let sy = rows.iter().map(|r| span(r.2, r.3)).max().unwrap_or(0);
                if 255 * sx * sy + (1 << 19) > i32::MAX as i64 {
                    return None;
                }
                Some(Bilinear {
                    input,
                    input_shape,
                    output_shape,
                    cols,
                    weights: BilinearWeights::Integer { cols: wcols, rows },
                })
            }
            BilinearArithmetic::Float => {
                let axis = |out: usize, inp: usize, outn: usize| {
                    let s = reference::bilinear_float_scale(inp, outn, mode.align_corners);
                    let (pos, lo, hi) =
                        reference::bilinear_float_axis(out, s, mode.half_pixel_centers, inp);
                    (inside(lo, inp) && inside(hi, inp)).then(|| {
                        let f = pos - lo as f32;
                        (lo as usize, hi as usize, 1.0 - f, f)
                    })
                };
                let mut cols = Vec::with_capacity(ow);
                let (mut wx0, mut wx1) = (Vec::with_capacity(ow * c), Vec::with_capacity(ow * c));
                for x in 0..ow {
                    let (x0, x1, a, b) = axis(x, w, ow)?;
                    cols.push((x0 * c, x1 * c));
                    wx0.extend(std::iter::repeat_n(a, c));
                    wx1.extend(std::iter::repeat_n(b, c));
                }
                let rows = (0..oh)
                    .map(|y| axis(y, h, oh))
                    .collect::<Option<Vec<_>>>()?;
                Some(Bilinear {
                    input,
                    input_shape,
                    output_shape,
                    cols,
                    weights: BilinearWeights::Float { wx0, wx1, rows },
                })
            }
        }
    }
}

/// Bilinear resize, equal to `reference::resize_bilinear`: output rows as whole-row vector
/// arithmetic on source rows gathered (and, for the integer arithmetic, interpolated along x)
/// once per source row, on the tier's compilation of the row kernel, split over `threads` by
/// output rows when large. Resizes the row kernel does not take run the reference.
#[allow(clippy::too_many_arguments)]
pub fn resize_bilinear<T: Code8>(
    isa: Isa,
    threads: usize,
    input: &[T],
    input_shape: [usize; 4],
    mode: ResizeMode,
    arithmetic: BilinearArithmetic,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    let [n, _, _, _] = input_shape;
    let [_, oh, ow, c] = output_shape;
    let plan = Bilinear::new(input, input_shape, mode, arithmetic, output_shape).filter(|_| {
        let len = [oh, ow, c].iter().try_fold(n, |a, &d| a.checked_mul(d));
        len == Some(output.len())
    });
    let Some(plan) = plan else {
        return reference::resize_bilinear(
            input,
            input_shape,
            mode,
            arithmetic,
            output,
            output_shape,
        );
    };
    let kernel = Kernels::or_portable(isa).ops::<T>().resize_bilinear;
    let row_len = ow * c;
    if row_len == 0 {
        return;
    }
    let out_ptr = super::SendPtr(output.as_mut_ptr() as *mut u8);
    if n * oh == 0 {
        return;
    }
    split_units(threads, n * oh, row_len, &|r0, r1| {
        // SAFETY: each task writes its own output rows (the output holds n * oh rows).
        let out = unsafe { task_range::<T>(out_ptr, r0 * row_len, r1 * row_len) };
        // SAFETY: the table is of a tier the CPU has; `out` holds rows r0..r1.
        unsafe { kernel(&plan, r0, r1, out) };
    });
}

/// Two source rows made ready for the vertical step, kept while consecutive output rows reuse
/// them (an upscale reads each source row for several output rows).
struct RowCache<E> {
    keys: [usize; 2],
    rows: [Vec<E>; 2],
}

impl<E: Copy + Default> RowCache<E> {
    fn new(len: usize) -> Self {
        RowCache {
            keys: [usize::MAX; 2],
            rows: [vec![E::default(); len], vec![E::default(); len]],
        }
    }

    /// The rows of keys `k0` and `k1`, made by `fill(key, row)` where not kept.
    fn pair(
        &mut self,
        k0: usize,
        k1: usize,
        mut fill: impl FnMut(usize, &mut [E]),
    ) -> (&[E], &[E]) {
        let s0 = self.ensure(k0, k1, &mut fill);
        let s1 = self.ensure(k1, k0, &mut fill);
        (&self.rows[s0], &self.rows[s1])
    }

    fn ensure(&mut self, k: usize, keep: usize, fill: &mut impl FnMut(usize, &mut [E])) -> usize {
        if let Some(s) = self.keys.iter().position(|&x| x == k) {
            return s;
        }
        let s = usize::from(self.keys[0] == keep);
        fill(k, &mut self.rows[s]);
        self.keys[s] = k;
        s
    }
}

/// Output rows `r0..r1` (image-major: row `r` is image `r / oh`, row `r % oh`) of a bilinear
/// resize into `out`; every loop over a row's codes is plain slice arithmetic the compiler
/// vectorizes for the tier it is compiled for.
#[inline(always)]
pub(crate) fn bilinear_rows_body<T: Code8>(b: &Bilinear<T>, r0: usize, r1: usize, out: &mut [T]) {
    let [_, h, w, c] = b.input_shape;
    let [_, oh, ow, _] = b.output_shape;
    let row_len = ow * c;
    let source = |k: usize| &b.input[k * w * c..(k + 1) * w * c];
    match &b.weights {
        BilinearWeights::Integer { cols, rows } => {
            let mut cache = RowCache::<i32>::new(row_len);
            // One source row interpolated along x: (1-dx) p(x0) + dx p(x1) per code.
            let fill = |k: usize, dst: &mut [i32]| {
                let src = source(k);
                for ((d, &(x0, x1)), &(a, bw)) in dst.chunks_exact_mut(c).zip(&b.cols).zip(cols) {
                    let (p0, p1) = (&src[x0..x0 + c], &src[x1..x1 + c]);
                    for ((d, &u), &v) in d.iter_mut().zip(p0).zip(p1) {
                        *d = u.to_i32() * a + v.to_i32() * bw;
                    }
                }
            };
            for (r, o) in (r0..r1).zip(out.chunks_exact_mut(row_len)) {
                let (img, y) = (r / oh, r % oh);
                let (y0, y1, a, bw) = rows[y];
                let (h0, h1) = cache.pair(img * h + y0, img * h + y1, &fill);
                for ((o, &u), &v) in o.iter_mut().zip(h0).zip(h1) {
                    let sum = a * u + bw * v;
                    // (sum ± 2^19) / 2^20, truncating: half away from zero.
                    let q = (sum.abs() + (1 << 19)) >> 20;
                    *o = T::from_i32_saturating(if sum < 0 { -q } else { q });
                }
            }
        }
        BilinearWeights::Float { wx0, wx1, rows } => {
            // Per source row its codes at the columns x0 then at x1, as f32.
            let mut cache = RowCache::<f32>::new(2 * row_len);
            let fill = |k: usize, dst: &mut [f32]| {
                let src = source(k);
                let (g0, g1) = dst.split_at_mut(row_len);
                for ((d0, d1), &(x0, x1)) in g0
                    .chunks_exact_mut(c)
                    .zip(g1.chunks_exact_mut(c))
                    .zip(&b.cols)
                {
                    for (d, &v) in d0.iter_mut().zip(&src[x0..x0 + c]) {
                        *d = v.to_i32() as f32;
                    }
                    for (d, &v) in d1.iter_mut().zip(&src[x1..x1 + c]) {
                        *d = v.to_i32() as f32;
                    }
                }
            };
            let (wx0, wx1) = (&wx0[..row_len], &wx1[..row_len]);
            for (r, o) in (r0..r1).zip(out.chunks_exact_mut(row_len)) {
                let (img, y) = (r / oh, r % oh);
                let (y0, y1, a0, a1) = rows[y];
                let (top, bottom) = cache.pair(img * h + y0, img * h + y1, &fill);
                // Every slice exactly `row_len` long, so the loop runs without bounds checks.
                let (p00, p01) = (&top[..row_len], &top[row_len..2 * row_len]);
                let (p10, p11) = (&bottom[..row_len], &bottom[row_len..2 * row_len]);
                let o = &mut o[..row_len];
                for j in 0..row_len {
                    let v = p00[j] * a0 * wx0[j]
                        + p10[j] * a1 * wx0[j]
                        + p01[j] * a0 * wx1[j]
                        + p11[j] * a1 * wx1[j]
                        + 0.5;
                    // The reference's `as i32` then saturation to the type is the truncation of
                    // `v` clamped to the type's range first (its bounds are integers). `max`
                    // and `min` return a number for any operand, so the conversion is in range.
                    let v = v.max(T::MIN as f32).min(T::MAX as f32);
                    // SAFETY: `v` is a number within the type's range (see above).
                    o[j] = T::from_i32_saturating(unsafe { v.to_int_unchecked::<i32>() });
                }
            }
        }
    }
}

/// [`bilinear_rows_body`] for the portable tier (and NEON, which every aarch64 target has).
///
/// # Safety
/// None beyond the table's: this is safe code behind the table's common signature.
pub(crate) unsafe fn bilinear_rows_portable<T: Code8>(
    b: &Bilinear<T>,
    r0: usize,
    r1: usize,
    out: &mut [T],
) {
    bilinear_rows_body(b, r0, r1, out)
}

/// [`bilinear_rows_body`] compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn bilinear_rows_avx2<T: Code8>(
    b: &Bilinear<T>,
    r0: usize,
    r1: usize,
    out: &mut [T],
) {
    bilinear_rows_body(b, r0, r1, out)
}

/// [`bilinear_rows_body`] compiled for AVX-512.
///
/// # Safety
/// The CPU has AVX-512 F/BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn bilinear_rows_avx512<T: Code8>(
    b: &Bilinear<T>,
    r0: usize,
    r1: usize,
    out: &mut [T],
) {
    bilinear_rows_body(b, r0, r1, out)
}

/// Max pooling, equal to `reference::max_pool`: per output pixel, the running maximum over the
/// window's valid taps across all channels at once (a byte-wise max the compiler vectorizes),
/// then the clamp.
pub fn max_pool<T: Code8 + Ord>(
    isa: Isa,
    input: &[T],
    input_shape: [usize; 4],
    params: &crate::PoolParams,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    check_pool(input, input_shape, params, output, output_shape);
    let pool = Kernels::or_portable(isa).ops::<T>().max_pool;
    // SAFETY: the table is of a tier the CPU has; the shapes were checked.
    unsafe { pool(input, input_shape, params, output, output_shape) }
}

/// The shape and parameter checks of `reference::pool`, with its messages.
fn check_pool<T>(
    input: &[T],
    input_shape: [usize; 4],
    params: &crate::PoolParams,
    output: &[T],
    output_shape: [usize; 4],
) {
    let [batches, _, _, depth] = input_shape;
    let [out_batches, _, _, out_depth] = output_shape;
    assert_eq!(batches, out_batches, "pooling keeps the batch size");
    assert_eq!(depth, out_depth, "pooling keeps the channel count");
    assert_eq!(
        input.len(),
        input_shape.iter().product::<usize>(),
        "input length"
    );
    assert_eq!(
        output.len(),
        output_shape.iter().product::<usize>(),
        "output length"
    );
    assert!(
        params.stride_h > 0 && params.stride_w > 0,
        "pooling stride must be positive"
    );
    assert!(params.clamp_min <= params.clamp_max, "empty clamp range");
}

/// Average pooling, equal to `reference::average_pool`: per output pixel, int32 sums of the
/// window's valid taps across all channels at once (a loop the compiler vectorizes), then each
/// channel's rounded division and clamp. The reference walks one channel at a time across the
/// window, `depth` codes apart, which does not vectorize and is slow for a wide global pool.
/// Windows of 2^23 taps or more (where an int32 sum could overflow) go to the reference.
pub fn average_pool<T: Code8>(
    isa: Isa,
    input: &[T],
    input_shape: [usize; 4],
    params: &crate::PoolParams,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    check_pool(input, input_shape, params, output, output_shape);
    if params.filter_h.saturating_mul(params.filter_w) >= 1 << 23 {
        return reference::average_pool(input, input_shape, params, output, output_shape);
    }
    let pool = Kernels::or_portable(isa).ops::<T>().average_pool;
    // SAFETY: the table is of a tier the CPU has; the shapes were checked.
    unsafe { pool(input, input_shape, params, output, output_shape) }
}

/// [`average_pool_body`] compiled for AVX2 (every x86 tier's).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn average_pool_avx2<T: Code8>(
    input: &[T],
    input_shape: [usize; 4],
    params: &crate::PoolParams,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    average_pool_body(input, input_shape, params, output, output_shape)
}

#[inline(always)]
pub(crate) fn average_pool_body<T: Code8>(
    input: &[T],
    input_shape: [usize; 4],
    params: &crate::PoolParams,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    let [_, in_h, in_w, depth] = input_shape;
    let mut acc = super::ScratchBuf::<i32>::zeroed(0, depth);
    for_each_window(
        input_shape,
        output_shape,
        params,
        |b, o, (y0, y1), (x0, x1)| {
            acc.fill(0);
            for y in y0..y1 {
                let s = ((b * in_h + y) * in_w + x0) * depth;
                for px in input[s..s + (x1 - x0) * depth].chunks_exact(depth) {
                    for (a, &v) in acc.iter_mut().zip(px) {
                        *a += v.to_i32();
                    }
                }
            }
            // Fewer than 2^23 taps of at most 255 in magnitude: no sum (or sum plus half the
            // count) overflows.
            let count = ((y1 - y0) * (x1 - x0)) as i32;
            for (q, &sum) in output[o..o + depth].iter_mut().zip(&acc) {
                // Rounded half away from zero, as the reference's truncating division of the
                // sum moved half the count toward its sign.
                let avg = if sum > 0 {
                    (sum + count / 2) / count
                } else {
                    (sum - count / 2) / count
                };
                *q = T::from_i32_saturating(avg.clamp(params.clamp_min, params.clamp_max));
            }
        },
    );
}

/// [`max_pool_body`] compiled for AVX2 (every x86 tier's).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn max_pool_avx2<T: Code8 + Ord>(
    input: &[T],
    input_shape: [usize; 4],
    params: &crate::PoolParams,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    max_pool_body(input, input_shape, params, output, output_shape)
}

#[inline(always)]
pub(crate) fn max_pool_body<T: Code8 + Ord>(
    input: &[T],
    input_shape: [usize; 4],
    params: &crate::PoolParams,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    let [_, in_h, in_w, depth] = input_shape;
    let lowest = T::from_i32_saturating(T::MIN);
    let (lo, hi) = (
        T::from_i32_saturating(params.clamp_min),
        T::from_i32_saturating(params.clamp_max),
    );
    for_each_window(
        input_shape,
        output_shape,
        params,
        |b, o, (y0, y1), (x0, x1)| {
            let acc = &mut output[o..o + depth];
            acc.fill(lowest);
            for y in y0..y1 {
                for x in x0..x1 {
                    let s = ((b * in_h + y) * in_w + x) * depth;
                    for (a, &v) in acc.iter_mut().zip(&input[s..s + depth]) {
                        *a = (*a).max(v);
                    }
                }
            }
            // The clamp bounds may lie outside the code range; saturating them first
            // clamps the same way the reference's int32 clamp then saturating cast does.
            for a in acc.iter_mut() {
                *a = (*a).clamp(lo, hi);
            }
        },
    );
}

/// Calls `f(b, o, (y0, y1), (x0, x1))` for every output pixel of a pooling: its image `b`, the
/// index `o` of its first code in the output, and its window clipped to the input (as the
/// reference clips it). Nothing for zero channels; panics on a window wholly in the padding.
#[inline(always)]
fn for_each_window(
    input_shape: [usize; 4],
    output_shape: [usize; 4],
    params: &crate::PoolParams,
    mut f: impl FnMut(usize, usize, (usize, usize), (usize, usize)),
) {
    let [batches, in_h, in_w, depth] = input_shape;
    let [_, out_h, out_w, _] = output_shape;
    if depth == 0 {
        return;
    }
    for b in 0..batches {
        for oy in 0..out_h {
            let ys = window(
                oy,
                params.stride_h,
                params.padding.top,
                params.filter_h,
                in_h,
            );
            for ox in 0..out_w {
                let xs = window(
                    ox,
                    params.stride_w,
                    params.padding.left,
                    params.filter_w,
                    in_w,
                );
                assert!(
                    ys.0 < ys.1 && xs.0 < xs.1,
                    "pooling window at output ({oy}, {ox}) lies entirely in the padding"
                );
                f(b, ((b * out_h + oy) * out_w + ox) * depth, ys, xs);
            }
        }
    }
}
