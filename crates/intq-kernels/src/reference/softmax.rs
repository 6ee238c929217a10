//! Reference Softmax over the last axis: TFLite's integer routine (gemmlowp fixed-point exp on
//! scaled differences, a fixed-point reciprocal of their sum). Output params are fixed at
//! `S = 1/256`, `Z = 0` (uint8) or `Z = -128` (int8).

use crate::QElem;
use intq_quant::QuantError;

/// The integer parameters TFLite's Prepare derives from `beta` and the input scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftmaxParams {
    pub input_multiplier: i32,
    pub input_left_shift: i32,
    pub diff_min: i32,
}

impl SoftmaxParams {
    pub fn new(input_scale: f32, beta: f32) -> Result<Self, QuantError> {
        let _ = (input_scale, beta);
        unimplemented!("SoftmaxParams lands with the softmax kernel")
    }
}

/// Softmax of `outer` rows of `depth` codes each.
pub fn softmax<T: QElem>(
    input: &[T],
    outer: usize,
    depth: usize,
    params: &SoftmaxParams,
    output: &mut [T],
) {
    let _ = (input, outer, depth, params, output);
    unimplemented!("softmax reference lands with the softmax kernel")
}
