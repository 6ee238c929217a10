//! Reference residual Add with TFLite's integer semantics (docs/spec.md §4.6).

use crate::QElem;
use intq_quant::{QuantError, QuantParams, QuantizedMultiplier};

/// Everything Add needs, derived once from the three tensors' parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddParams {
    pub lhs_zero_point: i32,
    pub rhs_zero_point: i32,
    pub output_zero_point: i32,
    /// 20, as TFLite uses for 8-bit inputs.
    pub left_shift: i32,
    pub lhs_multiplier: QuantizedMultiplier,
    pub rhs_multiplier: QuantizedMultiplier,
    pub output_multiplier: QuantizedMultiplier,
    pub clamp_min: i32,
    pub clamp_max: i32,
}

impl AddParams {
    /// docs/spec.md §4.6: `twice_max = 2 max(S1, S2)`, `m_i = S_i / twice_max`,
    /// `m_out = twice_max / (2^20 S_out)`, computed in f64 from the f32 scales.
    ///
    /// TFLite's Prepare forms `2 * max` and `2^20 * S_out` in f32 and divides in f64; scaling
    /// by a power of two is exact in either, so f64 throughout gives the same multipliers.
    /// TFLite also requires every multiplier to be below 1 (`QuantizeMultiplierSmallerThanOneExp`,
    /// which checks the quantized shift is `<= 0`); an output scale that breaks this (smaller
    /// than `2 max(S1, S2) / 2^20`) is an error here too.
    pub fn new(
        lhs: QuantParams,
        rhs: QuantParams,
        output: QuantParams,
        clamp_min: i32,
        clamp_max: i32,
    ) -> Result<Self, QuantError> {
        for s in [lhs.scale, rhs.scale, output.scale] {
            if !(s > 0.0 && s.is_finite()) {
                return Err(QuantError::BadScale(s as f64));
            }
        }
        const LEFT_SHIFT: i32 = 20;
        let twice_max_input_scale = 2.0 * (lhs.scale.max(rhs.scale) as f64);
        let smaller_than_one = |m: f64| -> Result<QuantizedMultiplier, QuantError> {
            let q = QuantizedMultiplier::from_real(m)?;
            if m >= 1.0 || q.shift > 0 {
                return Err(QuantError::MultiplierOutOfRange(m));
            }
            Ok(q)
        };
        Ok(AddParams {
            lhs_zero_point: lhs.zero_point,
            rhs_zero_point: rhs.zero_point,
            output_zero_point: output.zero_point,
            left_shift: LEFT_SHIFT,
            lhs_multiplier: smaller_than_one(lhs.scale as f64 / twice_max_input_scale)?,
            rhs_multiplier: smaller_than_one(rhs.scale as f64 / twice_max_input_scale)?,
            output_multiplier: smaller_than_one(
                twice_max_input_scale / ((1i64 << LEFT_SHIFT) as f64 * output.scale as f64),
            )?,
            clamp_min,
            clamp_max,
        })
    }

    /// The output code of one pair of input codes (TFLite's `AddElementwise` body).
    #[inline]
    pub fn apply(&self, lhs: i32, rhs: i32) -> i32 {
        // With codes and zero points of one 8-bit type |q - Z| <= 255, so the shifted values stay
        // below 2^28 and nothing overflows; wrapping only keeps nonsense zero points from panicking.
        let shifted_lhs = lhs.wrapping_sub(self.lhs_zero_point) << self.left_shift;
        let shifted_rhs = rhs.wrapping_sub(self.rhs_zero_point) << self.left_shift;
        let raw_sum = self
            .lhs_multiplier
            .apply(shifted_lhs)
            .wrapping_add(self.rhs_multiplier.apply(shifted_rhs));
        self.output_multiplier
            .apply(raw_sum)
            .saturating_add(self.output_zero_point)
            .clamp(self.clamp_min, self.clamp_max)
    }
}

/// The largest rank `add` broadcasts over, as TFLite's `BroadcastAdd6DSlow`.
const MAX_BROADCAST_RANK: usize = 6;

/// The NumPy broadcast of two shapes (aligned at their trailing dimensions; a dimension of 1
/// stretches) in the first `rank` entries, or `None` when they are incompatible or of a rank
/// past [`MAX_BROADCAST_RANK`]. An array, so a run allocates nothing.
fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<([usize; MAX_BROADCAST_RANK], usize)> {
    let rank = a.len().max(b.len());
    let mut out = [0; MAX_BROADCAST_RANK];
    for (i, o) in out.get_mut(..rank)?.iter_mut().enumerate() {
        // Dimension i of the result, counted from the front of the longer shape.
        let da = dim_from_back(a, rank - 1 - i);
        let db = dim_from_back(b, rank - 1 - i);
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some((out, rank))
}

/// Dimension `k` counted from the back (0 = last); missing leading dimensions are 1.
fn dim_from_back(shape: &[usize], k: usize) -> usize {
    if k < shape.len() {
        shape[shape.len() - 1 - k]
    } else {
        1
    }
}

/// Elementwise `lhs + rhs` with NumPy broadcasting of shapes (rank up to 6); `output_shape` is the
/// broadcast shape.
pub fn add<T: QElem>(
    lhs: &[T],
    lhs_shape: &[usize],
    rhs: &[T],
    rhs_shape: &[usize],
    params: &AddParams,
    output: &mut [T],
    output_shape: &[usize],
) {
    assert!(
        output_shape.len() <= MAX_BROADCAST_RANK,
        "add broadcasts up to rank {MAX_BROADCAST_RANK}, got {output_shape:?}"
    );
    let expected = broadcast_shape(lhs_shape, rhs_shape);
    assert_eq!(
        expected.as_ref().map(|(s, rank)| &s[..*rank]),
        Some(output_shape),
        "output shape must be the broadcast of {lhs_shape:?} and {rhs_shape:?}"
    );
    assert_eq!(lhs.len(), lhs_shape.iter().product::<usize>(), "lhs length");
    assert_eq!(rhs.len(), rhs_shape.iter().product::<usize>(), "rhs length");
    assert_eq!(
        output.len(),
        output_shape.iter().product::<usize>(),
        "output length"
    );

    super::mul_sub::broadcast_binary(
        lhs,
        lhs_shape,
        rhs,
        rhs_shape,
        output,
        output_shape,
        |a, b| params.apply(a, b),
    );
}
