//! Reference PAD and MEAN for 8-bit codes, as TFLite's reference kernels compute them: PAD fills
//! with the output zero point (the code of 0.0) and moves no arithmetic; MEAN sums raw codes in
//! int32, then rescales `sum - Z_in * n` by `S_in / S_out / n` folded into one fixed-point
//! multiplier (`reference_ops::QuantizedMeanOrSum`).

use crate::QElem;
use intq_quant::QuantizedMultiplier;

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// `output` (shape `input_shape[i] + before[i] + after[i]`) is `pad_code` everywhere except the
/// copy of `input` offset by `before`.
pub fn pad<T: QElem>(
    input: &[T],
    input_shape: &[usize],
    paddings: &[[usize; 2]],
    pad_code: T,
    output: &mut [T],
) {
    assert_eq!(input_shape.len(), paddings.len(), "pad: one pair per axis");
    let out_shape: Vec<usize> = input_shape
        .iter()
        .zip(paddings)
        .map(|(&d, p)| d + p[0] + p[1])
        .collect();
    assert_eq!(
        output.len(),
        out_shape.iter().product::<usize>(),
        "pad: output length"
    );
    assert_eq!(
        input.len(),
        input_shape.iter().product::<usize>(),
        "pad: input length"
    );
    output.fill(pad_code);
    let (si, so) = (strides(input_shape), strides(&out_shape));
    for (i, &v) in input.iter().enumerate() {
        let mut o = 0;
        for a in 0..input_shape.len() {
            o += ((i / si[a]) % input_shape[a] + paddings[a][0]) * so[a];
        }
        output[o] = v;
    }
}

/// The Prepare-time parameters of TFLite's quantized MEAN: `QuantizeMultiplier(S_in / S_out)`
/// with `1/n` folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeanParams {
    pub multiplier: QuantizedMultiplier,
    pub elements: usize,
}

impl MeanParams {
    /// `base` is `QuantizeMultiplier(S_in / S_out)`; `n` the number of elements averaged. As
    /// TFLite: `k = min(floor(log2 n), 32, 31 + shift)`, `m' = (m << k) / n` (truncating),
    /// `shift' = shift - k`.
    pub fn new(base: QuantizedMultiplier, n: usize) -> Self {
        assert!(n > 0, "mean over no elements");
        let k = (63 - (n as u64).leading_zeros() as i32)
            .min(32)
            .min(31 + base.shift);
        let m0 = (((base.m0 as i64) << k) / n as i64) as i32;
        MeanParams {
            multiplier: QuantizedMultiplier {
                m0,
                shift: base.shift - k,
            },
            elements: n,
        }
    }
}

/// Mean over `axes` of `input` (shape `input_shape`), `output` holding the reduced shape's
/// elements in row-major order (keep_dims does not change the layout).
pub fn mean<T: QElem>(
    input: &[T],
    input_shape: &[usize],
    axes: &[usize],
    input_zero_point: i32,
    output_zero_point: i32,
    params: &MeanParams,
    output: &mut [T],
) {
    let reduced_shape: Vec<usize> = input_shape
        .iter()
        .enumerate()
        .map(|(a, &d)| if axes.contains(&a) { 1 } else { d })
        .collect();
    assert_eq!(
        output.len(),
        reduced_shape.iter().product::<usize>(),
        "mean: output length"
    );
    assert_eq!(
        input.len(),
        input_shape.iter().product::<usize>(),
        "mean: input length"
    );
    let mut sums = vec![0i32; output.len()];
    // Wrapping i32 sums are associative, so the walk order does not change the result.
    let (first, last) = (axes.iter().min(), axes.iter().max());
    match (first, last) {
        (Some(&lo), Some(&hi)) if (lo..=hi).all(|a| axes.contains(&a)) => {
            // Reduced axes form one run (H and W of NHWC): `[outer, reduced, inner]`.
            let outer: usize = input_shape[..lo].iter().product();
            let reduced: usize = input_shape[lo..=hi].iter().product();
            let inner: usize = input_shape[hi + 1..].iter().product();
            for (o, block) in input
                .chunks_exact((reduced * inner).max(1))
                .enumerate()
                .take(outer)
            {
                let acc = &mut sums[o * inner..(o + 1) * inner];
                for row in block.chunks_exact(inner.max(1)) {
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a = a.wrapping_add(v.to_i32());
                    }
                }
            }
        }
        _ => {
            let (si, so) = (strides(input_shape), strides(&reduced_shape));
            for (i, &v) in input.iter().enumerate() {
                let mut o = 0;
                for a in 0..input_shape.len() {
                    if !axes.contains(&a) {
                        o += (i / si[a]) % input_shape[a] * so[a];
                    }
                }
                sums[o] = sums[o].wrapping_add(v.to_i32());
            }
        }
    }
    let offset = (input_zero_point as i64 * params.elements as i64) as i32;
    for (o, s) in output.iter_mut().zip(sums) {
        let shifted = s.wrapping_sub(offset);
        let q = params
            .multiplier
            .apply(shifted)
            .saturating_add(output_zero_point);
        *o = T::from_i32_saturating(q.clamp(T::MIN, T::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_places_the_input_and_fills_with_the_pad_code() {
        let input = [1u8, 2, 3, 4, 5, 6]; // [2, 3]
        let mut out = [0u8; 4 * 4];
        pad(&input, &[2, 3], &[[1, 1], [0, 1]], 9, &mut out);
        assert_eq!(out, [9, 9, 9, 9, 1, 2, 3, 9, 4, 5, 6, 9, 9, 9, 9, 9]);
    }

    #[test]
    fn mean_params_fold_in_one_over_n() {
        // m = 2^30 (0.5), shift 1: M = 1. n = 4: k = 2, m' = 2^32 / 4 = 2^30, shift' = -1.
        let base = QuantizedMultiplier {
            m0: 1 << 30,
            shift: 1,
        };
        let p = MeanParams::new(base, 4);
        assert_eq!(
            p.multiplier,
            QuantizedMultiplier {
                m0: 1 << 30,
                shift: -1
            }
        );
        // n = 3: k = 1, m' = 2^31 / 3 = 715827882.
        let p = MeanParams::new(base, 3);
        assert_eq!(
            p.multiplier,
            QuantizedMultiplier {
                m0: 715_827_882,
                shift: 0
            }
        );
    }

    #[test]
    fn mean_of_codes_with_equal_scales_is_the_rounded_average() {
        // S_in = S_out: M = 1 (m0 2^30, shift 1). Mean over axis 1 of [[1, 2], [3, 6]] with
        // Z_in = 1 and Z_out = 0: (0 + 1) / 2 = 0.5 -> 1; (2 + 5) / 2 = 3.5 -> 4.
        let p = MeanParams::new(
            QuantizedMultiplier {
                m0: 1 << 30,
                shift: 1,
            },
            2,
        );
        let mut out = [0i8; 2];
        mean(&[1i8, 2, 3, 6], &[2, 2], &[1], 1, 0, &p, &mut out);
        assert_eq!(out, [1, 4]);
    }

    /// The run-of-axes walk sums what an element-by-element walk sums, for every subset of the
    /// axes of rank-4 shapes with ones, odd sizes and extreme codes.
    #[test]
    fn mean_over_any_axes_equals_the_element_walk() {
        let p = MeanParams::new(
            QuantizedMultiplier {
                m0: 1_518_500_250,
                shift: -3,
            },
            1,
        );
        for shape in [[1, 1, 1, 1], [2, 3, 5, 7], [1, 4, 4, 9], [3, 1, 2, 1]] {
            let n: usize = shape.iter().product();
            let input: Vec<i8> = (0..n)
                .map(|i| ([-128, 127, 0, -1, 5][i % 5] + (i % 3) as i32).clamp(-128, 127) as i8)
                .collect();
            for mask in 1u32..16 {
                let axes: Vec<usize> = (0..4).filter(|a| mask & (1 << a) != 0).collect();
                let reduced: Vec<usize> = (0..4)
                    .map(|a| if axes.contains(&a) { 1 } else { shape[a] })
                    .collect();
                let (si, so) = (strides(&shape), strides(&reduced));
                let mut sums = vec![0i32; reduced.iter().product()];
                for (i, &v) in input.iter().enumerate() {
                    let o: usize = (0..4)
                        .filter(|a| !axes.contains(a))
                        .map(|a| (i / si[a]) % shape[a] * so[a])
                        .sum();
                    sums[o] += v as i32;
                }
                let count: usize = axes.iter().map(|&a| shape[a]).product();
                let params = MeanParams::new(p.multiplier, count);
                let expected: Vec<i8> = sums
                    .iter()
                    .map(|&s| {
                        let q = params.multiplier.apply(s - 3 * count as i32) - 7;
                        q.clamp(-128, 127) as i8
                    })
                    .collect();
                let mut out = vec![0i8; sums.len()];
                mean(&input, &shape, &axes, 3, -7, &params, &mut out);
                assert_eq!(out, expected, "shape {shape:?}, axes {axes:?}");
            }
        }
    }
}
