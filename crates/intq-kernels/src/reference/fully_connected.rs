//! Reference fully connected layer (SPEC §4, "Conv / fully connected").

use crate::{OutputStage, QElem};

/// `output[b][o] = stage(Σ_d (in[b][d] - Z_in) * (w[o][d] - Z_w[o]), o)` for `input` of
/// `batches * depth` codes and `weights` of `[out, depth]`. `weight_zero_points` has length 1
/// or `out`.
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
    let _ = (
        input,
        batches,
        depth,
        input_zero_point,
        weights,
        out_features,
    );
    let _ = (weight_zero_points, stage, output);
    unimplemented!("fully_connected reference lands with the conv kernels")
}
