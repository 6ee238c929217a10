//! Reference average and max pooling over NHWC (docs/spec.md §4.7).
//!
//! Both follow TFLite's reference `pooling.h`: the window is clipped to the input, so padded
//! positions are neither summed nor counted; input and output share `(S, Z)`, so the codes are
//! pooled directly.

use crate::{PoolParams, QElem};

/// The window of output position `out` along one axis, clipped to the input: the half-open range
/// of input coordinates it covers. The fast max pool clips the same way.
#[inline(always)]
pub(crate) fn window(
    out: usize,
    stride: usize,
    pad_before: usize,
    filter: usize,
    input: usize,
) -> (usize, usize) {
    // origin = out * stride - pad_before, possibly negative.
    let origin = (out * stride) as isize - pad_before as isize;
    let start = origin.max(0) as usize;
    let end = (origin + filter as isize).clamp(0, input as isize) as usize;
    (start, end.max(start))
}

/// Runs `reduce` over every clipped window of every channel and stores its result.
fn pool<T: QElem>(
    input: &[T],
    input_shape: [usize; 4],
    params: &PoolParams,
    output: &mut [T],
    output_shape: [usize; 4],
    mut reduce: impl FnMut(&mut dyn Iterator<Item = i32>) -> i32,
) {
    let [batches, in_h, in_w, depth] = input_shape;
    let [out_batches, out_h, out_w, out_depth] = output_shape;
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

    for b in 0..batches {
        for oy in 0..out_h {
            let (y0, y1) = window(
                oy,
                params.stride_h,
                params.padding.top,
                params.filter_h,
                in_h,
            );
            for ox in 0..out_w {
                let (x0, x1) = window(
                    ox,
                    params.stride_w,
                    params.padding.left,
                    params.filter_w,
                    in_w,
                );
                assert!(
                    y0 < y1 && x0 < x1,
                    "pooling window at output ({oy}, {ox}) lies entirely in the padding"
                );
                for c in 0..depth {
                    let mut taps = (y0..y1).flat_map(|y| {
                        (x0..x1)
                            .map(move |x| input[((b * in_h + y) * in_w + x) * depth + c].to_i32())
                    });
                    let v = reduce(&mut taps).clamp(params.clamp_min, params.clamp_max);
                    output[((b * out_h + oy) * out_w + ox) * depth + c] = T::from_i32_saturating(v);
                }
            }
        }
    }
}

/// Average over the valid (unpadded) part of each window, rounded half away from zero, clamped.
///
/// The codes themselves are averaged (not `q - Z`), as TFLite does; with shared `(S, Z)` this is
/// the average of the reals up to where ties round. Panics if a window holds no input pixel
/// (TFLite's kernel reports an error there; only explicit padding of a whole filter can cause it).
pub fn average_pool<T: QElem>(
    input: &[T],
    input_shape: [usize; 4],
    params: &PoolParams,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    pool(input, input_shape, params, output, output_shape, |taps| {
        // i64 so that no window size can overflow (TFLite's int32 sum would, past 2^23 taps).
        let (sum, count) = taps.fold((0i64, 0i64), |(s, n), q| (s + q as i64, n + 1));
        // Truncating division after adding half the count toward the sum's sign.
        let avg = if sum > 0 {
            (sum + count / 2) / count
        } else {
            (sum - count / 2) / count
        };
        avg as i32
    });
}

/// Maximum over the valid part of each window, clamped.
pub fn max_pool<T: QElem>(
    input: &[T],
    input_shape: [usize; 4],
    params: &PoolParams,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    pool(input, input_shape, params, output, output_shape, |taps| {
        taps.fold(T::MIN, i32::max)
    });
}
