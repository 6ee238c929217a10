//! Reference 2-D convolution and depthwise convolution (docs/spec.md §4.4).
//!
//! Both are the direct form of TFLite's reference kernels (`reference/conv.h`,
//! `integer_ops/conv.h`, `depthwiseconv_uint8.h`, `integer_ops/depthwise_conv.h`): for every output
//! element, `acc = Σ (q_in - Z_in) * (q_w - Z_w[k])` over the window in int32, then the fused
//! output stage. Window taps that fall outside the input are skipped, which is the same as padding
//! with `Z_in` (their `q_in - Z_in` would be 0), so real zero padding stays exact.

use crate::{ConvParams, Multipliers, OutputStage, QElem};

/// NHWC convolution with an OHWI filter. `filter_zero_points` has length 1 (per tensor) or
/// `out_c` (per channel); padded input positions contribute `(Z_in - Z_in) = 0`.
///
/// `input_shape` is `[batches, in_h, in_w, in_c]`, `filter_shape` `[out_c, kh, kw, in_c]`,
/// `output_shape` `[batches, out_h, out_w, out_c]`. Output pixel `(y, x)` reads input rows
/// `y * stride_h - pad_top + dy * dilation_h` (and likewise for columns).
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
    let [batches, in_h, in_w, in_c] = input_shape;
    let [out_c, kh, kw, filter_in_c] = filter_shape;
    let [out_batches, out_h, out_w, out_c_of_output] = output_shape;
    check_len("conv2d", "input", input.len(), input_shape);
    check_len("conv2d", "filter", filter.len(), filter_shape);
    check_len("conv2d", "output", output.len(), output_shape);
    assert_eq!(
        filter_in_c, in_c,
        "conv2d: filter input depth {filter_in_c} != input depth {in_c}"
    );
    assert_eq!(
        out_batches, batches,
        "conv2d: output batches {out_batches} != input batches {batches}"
    );
    assert_eq!(
        out_c_of_output, out_c,
        "conv2d: output depth {out_c_of_output} != filter output channels {out_c}"
    );
    check_zero_points("conv2d", "filter", filter_zero_points.len(), out_c);
    check_stage("conv2d", stage, out_c);
    check_geometry("conv2d", params);
    let (rows, cols) = (Axis::rows(params, in_h), Axis::cols(params, in_w));

    for b in 0..batches {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for oc in 0..out_c {
                    let z_w = zero_point_of(filter_zero_points, oc);
                    let mut acc: i32 = 0;
                    for fy in 0..kh {
                        let Some(iy) = rows.input_coord(oy, fy) else {
                            continue;
                        };
                        for fx in 0..kw {
                            let Some(ix) = cols.input_coord(ox, fx) else {
                                continue;
                            };
                            let in_base = ((b * in_h + iy) * in_w + ix) * in_c;
                            let f_base = ((oc * kh + fy) * kw + fx) * in_c;
                            for ic in 0..in_c {
                                let x = input[in_base + ic].to_i32().wrapping_sub(input_zero_point);
                                let w = filter[f_base + ic].to_i32().wrapping_sub(z_w);
                                acc = acc.wrapping_add(x.wrapping_mul(w));
                            }
                        }
                    }
                    output[((b * out_h + oy) * out_w + ox) * out_c + oc] =
                        T::from_i32_saturating(stage.apply(acc, oc));
                }
            }
        }
    }
}

/// NHWC depthwise convolution: output channel `ic * depth_multiplier + m` reads input channel
/// `ic` through filter channel `ic * depth_multiplier + m` of a `[1, kh, kw, out_c]` filter.
///
/// `input_shape` is `[batches, in_h, in_w, in_c]`, `output_shape`
/// `[batches, out_h, out_w, in_c * depth_multiplier]`; `filter_zero_points` has length 1 or
/// `out_c`. Geometry as in [`conv2d`].
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
    let [batches, in_h, in_w, in_c] = input_shape;
    let [filter_one, kh, kw, out_c] = filter_shape;
    let [out_batches, out_h, out_w, out_c_of_output] = output_shape;
    check_len("depthwise_conv2d", "input", input.len(), input_shape);
    check_len("depthwise_conv2d", "filter", filter.len(), filter_shape);
    check_len("depthwise_conv2d", "output", output.len(), output_shape);
    assert_eq!(
        filter_one, 1,
        "depthwise_conv2d: filter shape {filter_shape:?} must be [1, kh, kw, out_c]"
    );
    assert!(
        depth_multiplier >= 1,
        "depthwise_conv2d: depth_multiplier must be at least 1"
    );
    assert_eq!(
        out_c,
        in_c * depth_multiplier,
        "depthwise_conv2d: filter depth {out_c} != input depth {in_c} * depth_multiplier {depth_multiplier}"
    );
    assert_eq!(
        out_batches, batches,
        "depthwise_conv2d: output batches {out_batches} != input batches {batches}"
    );
    assert_eq!(
        out_c_of_output, out_c,
        "depthwise_conv2d: output depth {out_c_of_output} != filter depth {out_c}"
    );
    check_zero_points(
        "depthwise_conv2d",
        "filter",
        filter_zero_points.len(),
        out_c,
    );
    check_stage("depthwise_conv2d", stage, out_c);
    check_geometry("depthwise_conv2d", params);
    let (rows, cols) = (Axis::rows(params, in_h), Axis::cols(params, in_w));

    for b in 0..batches {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for ic in 0..in_c {
                    for m in 0..depth_multiplier {
                        let oc = ic * depth_multiplier + m;
                        let z_w = zero_point_of(filter_zero_points, oc);
                        let mut acc: i32 = 0;
                        for fy in 0..kh {
                            let Some(iy) = rows.input_coord(oy, fy) else {
                                continue;
                            };
                            for fx in 0..kw {
                                let Some(ix) = cols.input_coord(ox, fx) else {
                                    continue;
                                };
                                let x = input[((b * in_h + iy) * in_w + ix) * in_c + ic]
                                    .to_i32()
                                    .wrapping_sub(input_zero_point);
                                let w = filter[(fy * kw + fx) * out_c + oc]
                                    .to_i32()
                                    .wrapping_sub(z_w);
                                acc = acc.wrapping_add(x.wrapping_mul(w));
                            }
                        }
                        output[((b * out_h + oy) * out_w + ox) * out_c + oc] =
                            T::from_i32_saturating(stage.apply(acc, oc));
                    }
                }
            }
        }
    }
}

/// One spatial axis of a convolution's geometry.
struct Axis {
    stride: usize,
    pad_before: usize,
    dilation: usize,
    input_extent: usize,
}

impl Axis {
    fn rows(params: &ConvParams, in_h: usize) -> Axis {
        Axis {
            stride: params.stride_h,
            pad_before: params.padding.top,
            dilation: params.dilation_h,
            input_extent: in_h,
        }
    }

    fn cols(params: &ConvParams, in_w: usize) -> Axis {
        Axis {
            stride: params.stride_w,
            pad_before: params.padding.left,
            dilation: params.dilation_w,
            input_extent: in_w,
        }
    }

    /// The input coordinate that filter tap `tap` of output position `out` reads, or `None` when
    /// it falls into the padding, before the start or past the end of the input.
    #[inline]
    fn input_coord(&self, out: usize, tap: usize) -> Option<usize> {
        // TFLite's `out * stride - pad + tap * dilation` may go negative; in usize the padding
        // is subtracted last so "before the start" is a failed subtraction.
        let coord = (out * self.stride + tap * self.dilation).checked_sub(self.pad_before)?;
        (coord < self.input_extent).then_some(coord)
    }
}

/// `Z_w` of output channel `k`: the single per-tensor value, or channel `k`'s.
#[inline]
pub(super) fn zero_point_of(zero_points: &[i32], k: usize) -> i32 {
    if zero_points.len() == 1 {
        zero_points[0]
    } else {
        zero_points[k]
    }
}

fn check_len(op: &str, what: &str, len: usize, shape: [usize; 4]) {
    let expected: usize = shape.iter().product();
    assert_eq!(
        len, expected,
        "{op}: {what} holds {len} codes but its shape {shape:?} needs {expected}"
    );
}

pub(super) fn check_zero_points(op: &str, what: &str, len: usize, channels: usize) {
    assert!(
        len == 1 || len == channels,
        "{op}: {what} zero points must number 1 (per tensor) or {channels} (per channel), got {len}"
    );
}

/// The output stage must cover every output channel it will be asked about.
pub(super) fn check_stage(op: &str, stage: &OutputStage, channels: usize) {
    if let Some(bias) = stage.bias {
        assert_eq!(
            bias.len(),
            channels,
            "{op}: bias has {} entries for {channels} output channels",
            bias.len()
        );
    }
    if let Multipliers::PerChannel(ms) = stage.multipliers {
        assert_eq!(
            ms.len(),
            channels,
            "{op}: {} per-channel multipliers for {channels} output channels",
            ms.len()
        );
    }
}

fn check_geometry(op: &str, params: &ConvParams) {
    assert!(
        params.stride_h >= 1 && params.stride_w >= 1,
        "{op}: strides must be at least 1, got {}x{}",
        params.stride_h,
        params.stride_w
    );
    assert!(
        params.dilation_h >= 1 && params.dilation_w >= 1,
        "{op}: dilations must be at least 1, got {}x{}",
        params.dilation_h,
        params.dilation_w
    );
}
