//! Reference L2_NORMALIZATION over the last axis, as TFLite's reference kernels compute it
//! (docs/spec.md §11.21): the sum of squared offsets in int32, its inverse square
//! root as a fixed-point multiplier (`GetInvSqrtQuantizedMultiplierExp`, five Newton-Raphson
//! steps in gemmlowp's Q3.28), and each offset rescaled to the fixed output scale 1/128 (zero
//! point 128 for uint8, 0 for int8).

use crate::QElem;
use intq_quant::fixedpoint::FixedPoint;
use intq_quant::multiply_by_quantized_multiplier;

type F3 = FixedPoint<3>;
type F0 = FixedPoint<0>;

/// `1 / sqrt(x)` as `(m0, shift)` with `shift` a left shift (at most 0 here), as TFLite's
/// `GetInvSqrtQuantizedMultiplierExp(x, kReverseShift)`: `x <= 1` gives `(i32::MAX, 0)`.
pub fn inv_sqrt_multiplier(x: i32) -> (i32, i32) {
    assert!(x >= 0, "inv_sqrt_multiplier of a negative sum");
    if x <= 1 {
        return (i32::MAX, 0);
    }
    let mut input = x;
    let mut shift = 11;
    while input >= 1 << 29 {
        input /= 4;
        shift += 1;
    }
    let max_left_shift_bits = (input as u32).leading_zeros() as i32 - 1;
    let left_shift_bit_pairs = max_left_shift_bits / 2 - 1;
    shift -= left_shift_bit_pairs;
    input <<= 2 * left_shift_bit_pairs;
    debug_assert!(((1 << 27)..(1 << 29)).contains(&input));
    let half_input = F3::from_raw(input >> 1).saturating_rounding_multiply_by_pot(-1);
    let half_three = F3::from_raw((1 << 28) + (1 << 27));
    let mut v = F3::one();
    for _ in 0..5 {
        let v3: F3 = v.mul::<3, 6>(v).mul::<3, 9>(v).rescale::<3>();
        v = (half_three.mul::<3, 6>(v) - half_input.mul::<3, 6>(v3)).rescale::<3>();
    }
    let half_sqrt_2 = F0::from_raw(1_518_500_250);
    let mut m = v.mul::<0, 3>(half_sqrt_2).raw();
    if shift < 0 {
        // The C++ shifts a signed int here; it wraps on the targets TFLite runs on.
        m = m.wrapping_shl((-shift) as u32);
        shift = 0;
    }
    (m, -shift)
}

/// L2 normalization of each run of `depth` codes (the last axis): uint8 writes
/// `clamp(128 + MBQM(128 x, m, s), 0, 255)`, int8 `clamp(MBQM(x, m, s + 7), -128, 127)`, with
/// `x = q - Z_in` and `(m, s)` the inverse square root of the run's `sum x^2`.
pub fn l2_normalization<T: QElem>(
    input: &[T],
    depth: usize,
    input_zero_point: i32,
    output: &mut [T],
) {
    assert!(depth > 0, "l2_normalization: empty last axis");
    assert_eq!(input.len() % depth, 0, "l2_normalization: input length");
    assert_eq!(output.len(), input.len(), "l2_normalization: output length");
    let unsigned = T::MIN == 0;
    for (x, y) in input
        .chunks_exact(depth)
        .zip(output.chunks_exact_mut(depth))
    {
        let sq = x.iter().fold(0i32, |acc, &q| {
            let d = q.to_i32() - input_zero_point;
            acc.wrapping_add(d * d)
        });
        let (m, s) = inv_sqrt_multiplier(sq);
        for (&q, o) in x.iter().zip(y.iter_mut()) {
            let d = q.to_i32() - input_zero_point;
            let v = if unsigned {
                128 + multiply_by_quantized_multiplier(128 * d, m, s)
            } else {
                multiply_by_quantized_multiplier(d, m, s + 7)
            };
            *o = T::from_i32_saturating(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inv_sqrt_is_close_to_the_real_one() {
        for x in [
            2,
            3,
            4,
            100,
            12_345,
            65_025,
            1 << 28,
            (1 << 29) + 7,
            i32::MAX,
        ] {
            let (m, s) = inv_sqrt_multiplier(x);
            assert!(s <= 0, "{x}: shift {s}");
            let got = m as f64 * 2f64.powi(s - 31);
            let want = 1.0 / (x as f64).sqrt();
            assert!((got / want - 1.0).abs() < 1e-5, "{x}: {got} vs {want}");
        }
        assert_eq!(inv_sqrt_multiplier(0), (i32::MAX, 0));
        assert_eq!(inv_sqrt_multiplier(1), (i32::MAX, 0));
    }

    #[test]
    fn normalizes_each_row_to_scale_one_over_128() {
        // u8, Z_in = 0: (3, 4) / 5 = (0.6, 0.8) -> 128 + (77, 102).
        let mut y = [0u8; 4];
        l2_normalization(&[3u8, 4, 0, 0], 2, 0, &mut y);
        assert_eq!(&y[..2], &[128 + 77, 128 + 102]);
        // An all-zero row: the sum 0 is read as 1, every output is the zero point.
        assert_eq!(&y[2..], &[128, 128]);
        // i8 with Z_in = -128 at the end of the range: (-128, 127) is (0, 255) -> (0, 127).
        let mut y = [0i8; 2];
        l2_normalization(&[-128i8, 127], 2, -128, &mut y);
        assert_eq!(y, [0, 127]);
        // One element of an odd depth carrying the whole norm: -1.0 is the lowest int8 code.
        let mut y = [0i8; 3];
        l2_normalization(&[5i8, 5, -40], 3, 5, &mut y);
        assert_eq!(y, [0, 0, -128]);
    }
}
