//! Vectorized elementwise ops: quantized Add on equal shapes (the residual connections of CNNs).

use super::Code8;
use crate::isa::Isa;
use crate::reference::{self, AddParams};

/// Quantized Add, equal to `reference::add`; inputs of equal shape take the vector path on the
/// x86 tiers, anything else (broadcasting, the portable tier, parameters outside the vector
/// path's preconditions) runs the reference.
#[allow(clippy::too_many_arguments)]
pub fn add<T: Code8>(
    isa: Isa,
    lhs: &[T],
    lhs_shape: &[usize],
    rhs: &[T],
    rhs_shape: &[usize],
    params: &AddParams,
    output: &mut [T],
    output_shape: &[usize],
) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Portable
        && isa.is_available()
        && lhs_shape == rhs_shape
        && lhs_shape == output_shape
        && lhs.len() == output.len()
        && rhs.len() == output.len()
    {
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
                // SAFETY: every x86 tier above portable implies AVX2; lengths checked.
                unsafe { crate::isa::avx2::add_same_shape(params, lo, hi, lhs, rhs, output) };
                return;
            }
        }
    }
    let _ = isa;
    reference::add(lhs, lhs_shape, rhs, rhs_shape, params, output, output_shape)
}
