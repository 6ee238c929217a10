//! Reference Softmax over the last axis: TFLite's integer routine (gemmlowp fixed-point exp on
//! scaled differences, a fixed-point reciprocal of their sum). Output params are fixed at
//! `S = 1/256`, `Z = 0` (uint8) or `Z = -128` (int8).
//!
//! This is TFLite's quantized `reference_ops::Softmax` (`reference/softmax.h`) with the
//! parameters of its Prepare (`PreprocessSoftmaxScaling` and `CalculateInputRadius`): each
//! difference `q - max` is scaled by `beta * S_in` into Q5.26, exponentiated into Q0.31, summed
//! in Q12.19, and each exp is multiplied by the sum's reciprocal and rounded to 1/256.

use super::logistic::calculate_input_radius;
use crate::QElem;
use intq_quant::fixedpoint::{exp_on_negative_values, get_reciprocal, FixedPoint, F0};
use intq_quant::{multiply_by_quantized_multiplier, rounding_divide_by_pot};
use intq_quant::{QuantError, QuantizedMultiplier};

/// Q5.26 for the scaled differences: differences down to -32 fit before the cutoff.
const SCALED_DIFF_INTEGER_BITS: i32 = 5;
/// Q12.19 for the sum of exps: rows of up to 4096 ones.
const ACCUMULATION_INTEGER_BITS: i32 = 12;

/// The integer parameters TFLite's Prepare derives from `beta` and the input scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftmaxParams {
    pub input_multiplier: i32,
    pub input_left_shift: i32,
    pub diff_min: i32,
}

impl SoftmaxParams {
    /// `PreprocessSoftmaxScaling(beta, S_in, 5)`: the real multiplier
    /// `min(beta * S_in * 2^26, 2^31 - 1)`, in f64 from the f32 values, quantized as a multiplier
    /// greater than one; and `diff_min = -CalculateInputRadius(5, left_shift)`.
    ///
    /// TFLite's Prepare aborts when the multiplier is not above 1 (`beta * S_in <= 2^-26`); that
    /// is an error here, as are non-finite or non-positive scales and betas.
    pub fn new(input_scale: f32, beta: f32) -> Result<Self, QuantError> {
        if !(input_scale > 0.0 && input_scale.is_finite()) {
            return Err(QuantError::BadScale(input_scale as f64));
        }
        let max_real_multiplier = ((1i64 << 31) - 1) as f64;
        let real =
            beta as f64 * input_scale as f64 * (1i64 << (31 - SCALED_DIFF_INTEGER_BITS)) as f64;
        if real.is_nan() || real <= 1.0 {
            return Err(QuantError::MultiplierOutOfRange(real));
        }
        let m = QuantizedMultiplier::from_real(real.min(max_real_multiplier))?;
        debug_assert!(m.shift >= 1);
        Ok(SoftmaxParams {
            input_multiplier: m.m0,
            input_left_shift: m.shift,
            diff_min: -calculate_input_radius(SCALED_DIFF_INTEGER_BITS, m.shift),
        })
    }

    /// `exp(beta * S_in * diff)` in Q0.31 for a difference that passed the `diff_min` cutoff.
    #[inline]
    fn exp_of_diff(&self, diff: i32) -> F0 {
        // With a left shift this is TFLite's MultiplyByQuantizedMultiplierGreaterThanOne; the
        // cutoff keeps |diff << left_shift| <= 31 * 2^26, so the shift cannot overflow.
        let rescaled =
            multiply_by_quantized_multiplier(diff, self.input_multiplier, self.input_left_shift);
        exp_on_negative_values(FixedPoint::<SCALED_DIFF_INTEGER_BITS>::from_raw(rescaled))
    }
}

/// Softmax of `outer` rows of `depth` codes each.
///
/// Beyond TFLite's domain, two guards keep the result the correctly rounded one instead of
/// TFLite's undefined behaviour: the Q12.19 sum saturates (TFLite's overflows past 4096 ones), and
/// when the sum reaches 512 the final shift would exceed 31; every output is then below half an
/// LSB (`1/512 < 0.5/256`), so it is the zero code.
pub fn softmax<T: QElem>(
    input: &[T],
    outer: usize,
    depth: usize,
    params: &SoftmaxParams,
    output: &mut [T],
) {
    assert_eq!(input.len(), outer * depth, "input length");
    assert_eq!(output.len(), outer * depth, "output length");
    for (row_in, row_out) in input
        .chunks_exact(depth)
        .zip(output.chunks_exact_mut(depth))
    {
        let max_in_row = row_in.iter().map(|q| q.to_i32()).fold(T::MIN, i32::max);

        let mut sum_of_exps = 0i32; // Q12.19
        for q in row_in {
            let diff = q.to_i32() - max_in_row;
            if diff >= params.diff_min {
                let exp = params.exp_of_diff(diff);
                sum_of_exps =
                    sum_of_exps.saturating_add(exp.rescale::<ACCUMULATION_INTEGER_BITS>().raw());
            }
        }

        // The row's maximum contributes exp(0) = 1.0, so the sum is at least 2^19 > 0.
        let (reciprocal, num_bits_over_unit) =
            get_reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS);
        let shifted_scale = F0::from_raw(reciprocal);
        let exponent = num_bits_over_unit + 31 - 8;

        for (q, o) in row_in.iter().zip(row_out.iter_mut()) {
            let diff = q.to_i32() - max_in_row;
            let code = if diff >= params.diff_min {
                let exp = params.exp_of_diff(diff);
                let product: F0 = shifted_scale.mul(exp);
                let unsat = if exponent <= 31 {
                    rounding_divide_by_pot(product.raw(), exponent)
                } else {
                    0
                };
                unsat.saturating_add(T::MIN).clamp(T::MIN, T::MAX)
            } else {
                T::MIN
            };
            *o = T::from_i32_saturating(code);
        }
    }
}
