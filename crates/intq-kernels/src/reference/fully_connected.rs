//! Reference fully connected layer (docs/spec.md §4.4).
//!
//! The direct form of TFLite's `reference/fully_connected.h` (uint8) and
//! `integer_ops/fully_connected.h` (int8, per tensor or per channel): an int32 dot product of the
//! zero-point-shifted codes, then the fused output stage.

use super::conv::{check_stage, check_zero_points, zero_point_of};
use crate::{OutputStage, QElem};

/// `output[b][o] = stage(Σ_d (in[b][d] - Z_in) * (w[o][d] - Z_w[o]), o)` for `input` of
/// `batches * depth` codes and `weights` of `[out, depth]`. `weight_zero_points` has length 1
/// or `out`. `output` holds `batches * out_features` codes.
#[allow(clippy::too_many_arguments)]
pub fn fully_connected<T: QElem>(
    input: &[T],
    batches: usize,
    depth: usize,
    input_zero_point: i32,
    weights: &[T],
    out_features: usize,
    weight_zero_points: &[i32],
    stage: &OutputStage,
    output: &mut [T],
) {
    assert_eq!(
        input.len(),
        batches * depth,
        "fully_connected: input holds {} codes, expected batches {batches} * depth {depth}",
        input.len()
    );
    assert_eq!(
        weights.len(),
        out_features * depth,
        "fully_connected: weights hold {} codes, expected out {out_features} * depth {depth}",
        weights.len()
    );
    assert_eq!(
        output.len(),
        batches * out_features,
        "fully_connected: output holds {} codes, expected batches {batches} * out {out_features}",
        output.len()
    );
    check_zero_points(
        "fully_connected",
        "weight",
        weight_zero_points.len(),
        out_features,
    );
    check_stage("fully_connected", stage, out_features);

    for b in 0..batches {
        let row = &input[b * depth..(b + 1) * depth];
        for o in 0..out_features {
            let z_w = zero_point_of(weight_zero_points, o);
            let w_row = &weights[o * depth..(o + 1) * depth];
            let mut acc: i32 = 0;
            for (x, w) in row.iter().zip(w_row) {
                let x = x.to_i32().wrapping_sub(input_zero_point);
                let w = w.to_i32().wrapping_sub(z_w);
                acc = acc.wrapping_add(x.wrapping_mul(w));
            }
            output[b * out_features + o] = T::from_i32_saturating(stage.apply(acc, o));
        }
    }
}
