//! Reference 2-D convolution and depthwise convolution (SPEC §4, "Conv / fully connected").

use crate::{ConvParams, OutputStage, QElem};

/// NHWC convolution with an OHWI filter. `filter_zero_points` has length 1 (per tensor) or
/// `out_c` (per channel); padded input positions contribute `(Z_in - Z_in) = 0`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d<T: QElem>(
    input: &[T],
    input_shape: [usize; 4],
    input_zero_point: i32,
    filter: &[T],
    filter_shape: [usize; 4],
    filter_zero_points: &[i32],
    params: &ConvParams,
    stage: &OutputStage,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    let _ = (
        input,
        input_shape,
        input_zero_point,
        filter,
        filter_shape,
        filter_zero_points,
    );
    let _ = (params, stage, output, output_shape);
    unimplemented!("conv2d reference lands with the conv kernels")
}

/// NHWC depthwise convolution: output channel `ic * depth_multiplier + m` reads input channel
/// `ic` through filter channel `ic * depth_multiplier + m` of a `[1, kh, kw, out_c]` filter.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_conv2d<T: QElem>(
    input: &[T],
    input_shape: [usize; 4],
    input_zero_point: i32,
    filter: &[T],
    filter_shape: [usize; 4],
    filter_zero_points: &[i32],
    depth_multiplier: usize,
    params: &ConvParams,
    stage: &OutputStage,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    let _ = (
        input,
        input_shape,
        input_zero_point,
        filter,
        filter_shape,
        filter_zero_points,
    );
    let _ = (depth_multiplier, params, stage, output, output_shape);
    unimplemented!("depthwise_conv2d reference lands with the conv kernels")
}
