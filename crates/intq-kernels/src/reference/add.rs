//! Reference residual Add with TFLite's integer semantics (SPEC §4, "Add").

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
    /// SPEC §4: `twice_max = 2 max(S1, S2)`, `m_i = S_i / twice_max`,
    /// `m_out = twice_max / (2^20 S_out)`, computed in f64 from the f32 scales.
    pub fn new(
        lhs: QuantParams,
        rhs: QuantParams,
        output: QuantParams,
        clamp_min: i32,
        clamp_max: i32,
    ) -> Result<Self, QuantError> {
        let _ = (lhs, rhs, output, clamp_min, clamp_max);
        unimplemented!("AddParams lands with the elementwise kernels")
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
    let _ = (lhs, lhs_shape, rhs, rhs_shape, params, output, output_shape);
    unimplemented!("add reference lands with the elementwise kernels")
}
