//! Reference SUM, REDUCE_MAX and ARG_MAX over codes, as TFLite's reference kernels compute them
//! (docs/spec.md §11.18 to §11.20): SUM rescales the int32 sum of codes by
//! `S_in / S_out` in fixed point (`QuantizedMeanOrSum` with `compute_sum`); REDUCE_MAX and
//! ARG_MAX compare codes.

use crate::QElem;
use intq_quant::QuantizedMultiplier;

/// Calls `f(input index, output index)` for every input element (row-major), the output index
/// being row-major once `axes` are reduced (to 1; keep_dims does not change the layout).
pub fn reduction_walk(input_shape: &[usize], axes: &[usize], mut f: impl FnMut(usize, usize)) {
    let rank = input_shape.len();
    let n: usize = input_shape.iter().product();
    if n == 0 {
        return;
    }
    // Output strides, 0 along reduced axes.
    let mut step = vec![0usize; rank];
    let mut s = 1;
    for a in (0..rank).rev() {
        if !axes.contains(&a) {
            step[a] = s;
            s *= input_shape[a];
        }
    }
    let mut index = vec![0usize; rank];
    let mut o = 0;
    for i in 0..n {
        f(i, o);
        for a in (0..rank).rev() {
            index[a] += 1;
            o += step[a];
            if index[a] < input_shape[a] {
                break;
            }
            o -= step[a] * input_shape[a];
            index[a] = 0;
        }
    }
}

/// The number of output elements once `axes` are reduced.
fn reduced_len(input_shape: &[usize], axes: &[usize]) -> usize {
    input_shape
        .iter()
        .enumerate()
        .filter(|(a, _)| !axes.contains(a))
        .map(|(_, &d)| d)
        .product()
}

/// The Prepare-time parameters of TFLite's quantized SUM: `QuantizeMultiplier(S_in / S_out)`
/// (formed in f64 from the f32 scales), the zero points, and `n`, the number of elements summed
/// into each output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SumParams {
    pub multiplier: QuantizedMultiplier,
    pub input_zero_point: i32,
    pub output_zero_point: i32,
    pub elements: usize,
}

/// Sum over `axes` of `input` (shape `input_shape`) into `output` (the reduced shape's
/// elements, row-major): `clamp(MBQM(sum - Z_in n, M) + Z_out, T::MIN, T::MAX)` with the sum in
/// int32 (TFLite's `QuantizedMeanOrSum` with `compute_sum`, MEAN's arithmetic without its `1/n`).
pub fn sum<T: QElem>(
    input: &[T],
    input_shape: &[usize],
    axes: &[usize],
    params: &SumParams,
    output: &mut [T],
) {
    assert_eq!(
        input.len(),
        input_shape.iter().product::<usize>(),
        "sum: input length"
    );
    assert_eq!(
        output.len(),
        reduced_len(input_shape, axes),
        "sum: output length"
    );
    let mut sums = vec![0i32; output.len()];
    reduction_walk(input_shape, axes, |i, o| {
        sums[o] = sums[o].wrapping_add(input[i].to_i32())
    });
    // Formed in int64 and narrowed, as the C++ does.
    let offset = (params.input_zero_point as i64 * params.elements as i64) as i32;
    for (y, s) in output.iter_mut().zip(sums) {
        let q = params
            .multiplier
            .apply(s.wrapping_sub(offset))
            .saturating_add(params.output_zero_point);
        *y = T::from_i32_saturating(q);
    }
}

/// Largest element over `axes` (TFLite's REDUCE_MAX: codes compared, `(S, Z)` shared).
pub fn reduce_max<T: Copy + PartialOrd>(
    input: &[T],
    input_shape: &[usize],
    axes: &[usize],
    output: &mut [T],
) {
    assert_eq!(
        input.len(),
        input_shape.iter().product::<usize>(),
        "reduce_max: input length"
    );
    assert_eq!(
        output.len(),
        reduced_len(input_shape, axes),
        "reduce_max: output length"
    );
    let mut seen = vec![false; output.len()];
    reduction_walk(input_shape, axes, |i, o| {
        if !seen[o] || input[i] > output[o] {
            output[o] = input[i];
            seen[o] = true;
        }
    });
}

/// Index of the largest element along `axis`, the first one on ties (TFLite's ARG_MAX, whose
/// comparison is strict); the output drops `axis`.
pub fn arg_max<T: Copy + PartialOrd>(
    input: &[T],
    input_shape: &[usize],
    axis: usize,
    output: &mut [i32],
) {
    assert!(axis < input_shape.len(), "arg_max: axis outside the rank");
    assert_eq!(
        input.len(),
        input_shape.iter().product::<usize>(),
        "arg_max: input length"
    );
    let outer: usize = input_shape[..axis].iter().product();
    let inner: usize = input_shape[axis + 1..].iter().product();
    let n = input_shape[axis];
    assert!(n > 0, "arg_max: empty axis");
    assert_eq!(output.len(), outer * inner, "arg_max: output length");
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| input[(o * n + k) * inner + i];
            let (mut best, mut value) = (0, at(0));
            for k in 1..n {
                if at(k) > value {
                    best = k;
                    value = at(k);
                }
            }
            output[o * inner + i] = best as i32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduction_walk_visits_the_kept_axes() {
        // [2, 3, 2] reduced over axis 1: element (a, b, c) lands on a * 2 + c.
        let mut got = vec![];
        reduction_walk(&[2, 3, 2], &[1], |i, o| got.push((i, o)));
        let want: Vec<(usize, usize)> = (0..12).map(|i| (i, i / 6 * 2 + i % 2)).collect();
        assert_eq!(got, want);
    }

    fn params(ratio: f64, z_in: i32, z_out: i32, n: usize) -> SumParams {
        SumParams {
            multiplier: QuantizedMultiplier::from_real(ratio).unwrap(),
            input_zero_point: z_in,
            output_zero_point: z_out,
            elements: n,
        }
    }

    #[test]
    fn sum_of_equal_params_saturates() {
        let p = params(1.0, 3, 3, 3);
        let mut y = [0u8; 2];
        // (200 + 100 + 1) - 9 + 3 = 295 -> 255; (0 + 1 + 2) - 9 + 3 = -3 -> 0.
        sum(&[200u8, 100, 1, 0, 1, 2], &[2, 3], &[1], &p, &mut y);
        assert_eq!(y, [255, 0]);
        let mut y = [0i8; 1];
        sum(&[10i8, 20, -27], &[3], &[0], &params(1.0, 0, 0, 3), &mut y);
        assert_eq!(y, [3]);
    }

    #[test]
    fn sum_rescales_with_the_scale_ratio() {
        // S_in / S_out = 0.25, Z_in = 128, Z_out = 0, n = 2: (sum - 256) / 4, rounded half away
        // from zero (MBQM's right shift).
        let p = params(0.25, 128, 0, 2);
        let mut y = [0u8; 3];
        // 261 - 256 = 5: 1.25, which MBQM's double rounding takes to 2 (5 / 2 = 2.5 -> 3, then
        // 3 / 2 = 1.5 -> 2); 510 -> 63.5 -> 64; 0 -> -64 -> 0 (clamped).
        sum(&[130u8, 131, 255, 255, 0, 0], &[3, 2], &[1], &p, &mut y);
        assert_eq!(y, [2, 64, 0]);
        // Zero points at the ends, scales far apart (S_in / S_out = 128), an odd count of 1.
        let p = params(128.0, -128, -128, 1);
        let mut y = [0i8; 3];
        sum(&[-128i8, -127, 127], &[3], &[], &p, &mut y);
        assert_eq!(y, [-128, 0, 127]);
        let p = params(1.0 / 512.0, 127, -128, 5);
        let mut y = [0i8; 1];
        // (5 * -128 - 635) / 512 = -2.49 -> -2, + Z_out -> -128 after the clamp.
        sum(&[-128i8; 5], &[5], &[0], &p, &mut y);
        assert_eq!(y, [-128]);
    }

    #[test]
    fn reduce_max_over_several_axes() {
        let x: Vec<i8> = vec![-5, 3, 7, -128, 0, 2, 9, -1, 4, 4, 4, -3];
        let mut y = [0i8; 2];
        reduce_max(&x, &[2, 3, 2], &[0, 1], &mut y);
        assert_eq!(y, [9, 4]);
        let mut y = [0u8; 1];
        reduce_max(&[0u8, 0, 0], &[3], &[0], &mut y);
        assert_eq!(y, [0]);
    }

    #[test]
    fn arg_max_takes_the_first_of_equal_maxima() {
        // [2, 3]: along axis 1 and along axis 0.
        let x = [5u8, 9, 9, 1, 1, 1];
        let mut y = [0i32; 2];
        arg_max(&x, &[2, 3], 1, &mut y);
        assert_eq!(y, [1, 0]);
        let mut y = [0i32; 3];
        arg_max(&x, &[2, 3], 0, &mut y);
        assert_eq!(y, [0, 0, 0]);
        let x = [-128i8, -128, 127, 127];
        let mut y = [0i32; 1];
        arg_max(&x, &[4], 0, &mut y);
        assert_eq!(y, [2]);
    }
}
