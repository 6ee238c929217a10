//! Reference average and max pooling over NHWC (SPEC §4, "Average pool", "Max pool").

use crate::{PoolParams, QElem};

/// Average over the valid (unpadded) part of each window, rounded half away from zero, clamped.
pub fn average_pool<T: QElem>(
    input: &[T],
    input_shape: [usize; 4],
    params: &PoolParams,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    let _ = (input, input_shape, params, output, output_shape);
    unimplemented!("average_pool reference lands with the pooling kernels")
}

/// Maximum over the valid part of each window, clamped.
pub fn max_pool<T: QElem>(
    input: &[T],
    input_shape: [usize; 4],
    params: &PoolParams,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    let _ = (input, input_shape, params, output, output_shape);
    unimplemented!("max_pool reference lands with the pooling kernels")
}
