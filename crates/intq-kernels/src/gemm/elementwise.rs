//! Vectorized elementwise ops: quantized Add on equal shapes (the residual connections of CNNs).

use super::{Code8, Kernels};
use crate::isa::Isa;
use crate::reference::{self, pool_window as window, AddParams};

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
    let mut acc = vec![0i32; depth];
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
