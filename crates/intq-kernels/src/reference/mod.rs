//! The reference tier: one plain scalar implementation per op, the normative arithmetic that
//! every optimized tier must equal bit for bit.
//!
//! Layouts follow TFLite: activations NHWC; conv filters OHWI `[out_c, kh, kw, in_c]`; depthwise
//! filters `[1, kh, kw, in_c * multiplier]`; fully-connected weights `[out, depth]`.

mod activations;
mod add;
mod concat;
mod conv;
mod detection;
mod fully_connected;
mod gather;
mod l2norm;
mod layout;
mod logistic;
mod mul_sub;
mod pad_mean;
mod pool;
mod quantize;
mod reduce;
mod resize;
mod softmax;
mod space_batch;
mod tflite;
mod transpose_conv;

pub use activations::{
    hard_swish, hard_swish_code, leaky_relu, prelu, relu_x, tflite_lut, tflite_tanh_table,
    HardSwishParams, LeakyReluParams, PreluParams, ReluParams,
};
pub use add::{add, AddParams};
pub use concat::{concat, ConcatInput, RequantTable};
pub use conv::{conv2d, depthwise_conv2d};
pub use detection::{
    detection_postprocess, DetectionInput, DetectionOptions, Detections, MAX_DETECTIONS,
    MAX_DETECTION_ENTRIES,
};
pub use fully_connected::fully_connected;
pub use gather::gather;
pub use l2norm::{inv_sqrt_multiplier, l2_normalization};
pub use layout::{strided_slice, transpose};
pub use logistic::{logistic, LogisticTable};
pub use mul_sub::{maximum_minimum, mul, sub, MulParams, SubParams, MAX_BINARY_RANK};
pub use pad_mean::{mean, pad, MeanParams};
pub(crate) use pool::window as pool_window;
pub use pool::{average_pool, max_pool};
pub use quantize::{dequantize, quantize, quantize_to, reshape};
pub use reduce::{arg_max, reduce_max, reduction_walk, sum, SumParams};
pub(crate) use resize::{
    float_axis as bilinear_float_axis, float_scale as bilinear_float_scale,
    integer_axis as bilinear_integer_axis, scale_10 as bilinear_scale_10,
};
pub use resize::{nearest_source, resize_bilinear, resize_nearest, BilinearArithmetic, ResizeMode};
pub use softmax::{softmax, SoftmaxParams};
pub use space_batch::{batch_to_space, depth_to_space, space_to_batch};
pub use tflite::{fully_connected_real_scale, real_scale, tflite_logistic_table};
pub use transpose_conv::transpose_conv;
