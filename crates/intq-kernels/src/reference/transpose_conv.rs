//! Reference transposed convolution (docs/spec.md §11.13), in the scatter form of TFLite's
//! reference TRANSPOSE_CONV kernels (`reference/transpose_conv.h`,
//! `reference/integer_ops/transpose_conv.h`): every input pixel adds its products into an int32
//! buffer of the output's shape, then each output element goes through the output stage of its
//! channel. The sums are exact integer sums (wrapping like int32), so their order is immaterial.

use super::conv::{check_stage, check_zero_points, zero_point_of};
use crate::{ConvParams, OutputStage, QElem};

/// NHWC transposed convolution with an OHWI filter `[out_c, kh, kw, in_c]`.
///
/// Input pixel `(iy, ix)` adds `(q_in - Z_in) * (q_w - Z_w[oc])` through filter tap `(fy, fx)`
/// into output pixel `(iy * stride_h - pad_top + fy, ix * stride_w - pad_left + fx)`; taps that
/// land outside the output are dropped. Only `padding.top` and `padding.left` are read (the
/// output shape fixes the rest); dilation must be 1.
#[allow(clippy::too_many_arguments)]
pub fn transpose_conv<T: QElem>(
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
    let len = |s: [usize; 4]| s.iter().product::<usize>();
    assert_eq!(
        input.len(),
        len(input_shape),
        "transpose_conv: input length"
    );
    assert_eq!(
        filter.len(),
        len(filter_shape),
        "transpose_conv: filter length"
    );
    assert_eq!(
        output.len(),
        len(output_shape),
        "transpose_conv: output length"
    );
    assert_eq!(
        filter_in_c, in_c,
        "transpose_conv: filter input depth {filter_in_c} != input depth {in_c}"
    );
    assert_eq!(out_batches, batches, "transpose_conv: batches differ");
    assert_eq!(
        out_c_of_output, out_c,
        "transpose_conv: output depth {out_c_of_output} != filter output channels {out_c}"
    );
    assert!(
        params.stride_h >= 1 && params.stride_w >= 1,
        "transpose_conv: strides must be at least 1"
    );
    assert!(
        params.dilation_h == 1 && params.dilation_w == 1,
        "transpose_conv: dilation must be 1"
    );
    check_zero_points("transpose_conv", "filter", filter_zero_points.len(), out_c);
    check_stage("transpose_conv", stage, out_c);

    // The filter as `[kh, kw, in_c, out_c]` with its zero points taken out, so each input code
    // adds one contiguous row of products into one contiguous row of sums.
    let mut taps = vec![0i32; filter.len()];
    for oc in 0..out_c {
        let z = zero_point_of(filter_zero_points, oc);
        for fy in 0..kh {
            for fx in 0..kw {
                for ic in 0..in_c {
                    taps[((fy * kw + fx) * in_c + ic) * out_c + oc] = filter
                        [((oc * kh + fy) * kw + fx) * in_c + ic]
                        .to_i32()
                        .wrapping_sub(z);
                }
            }
        }
    }
    let mut acc = vec![0i32; output.len()];
    let (pad_top, pad_left) = (params.padding.top as isize, params.padding.left as isize);
    for b in 0..batches {
        for iy in 0..in_h {
            for ix in 0..in_w {
                let in_base = ((b * in_h + iy) * in_w + ix) * in_c;
                let y0 = (iy * params.stride_h) as isize - pad_top;
                let x0 = (ix * params.stride_w) as isize - pad_left;
                for fy in 0..kh {
                    let oy = y0 + fy as isize;
                    if oy < 0 || oy >= out_h as isize {
                        continue;
                    }
                    for fx in 0..kw {
                        let ox = x0 + fx as isize;
                        if ox < 0 || ox >= out_w as isize {
                            continue;
                        }
                        let out_base = ((b * out_h + oy as usize) * out_w + ox as usize) * out_c;
                        let sums = &mut acc[out_base..out_base + out_c];
                        let tap = (fy * kw + fx) * in_c;
                        for ic in 0..in_c {
                            let x = input[in_base + ic].to_i32().wrapping_sub(input_zero_point);
                            let row = &taps[(tap + ic) * out_c..(tap + ic + 1) * out_c];
                            for (a, &w) in sums.iter_mut().zip(row) {
                                *a = a.wrapping_add(x.wrapping_mul(w));
                            }
                        }
                    }
                }
            }
        }
    }
    for (i, (o, &a)) in output.iter_mut().zip(&acc).enumerate() {
        *o = T::from_i32_saturating(stage.apply(a, i % out_c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Multipliers, PaddingValues};
    use intq_quant::QuantizedMultiplier;

    fn params(stride: usize, top: usize, left: usize) -> ConvParams {
        ConvParams {
            stride_h: stride,
            stride_w: stride,
            dilation_h: 1,
            dilation_w: 1,
            padding: PaddingValues {
                top,
                left,
                ..Default::default()
            },
        }
    }

    /// The gather form: output pixel `(oy, ox)` sums every input pixel and tap that reaches it,
    /// in i64, then applies the same output stage.
    #[allow(clippy::too_many_arguments)]
    fn gathered(
        x: &[i32],
        [n, h, w, c]: [usize; 4],
        z_in: i32,
        f: &[i32],
        [o, kh, kw, _]: [usize; 4],
        z_w: &[i32],
        stride: usize,
        (top, left): (usize, usize),
        [_, oh, ow, _]: [usize; 4],
    ) -> Vec<i64> {
        let mut out = vec![0i64; n * oh * ow * o];
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for oc in 0..o {
                        let mut s = 0i64;
                        for fy in 0..kh {
                            for fx in 0..kw {
                                let (ty, tx) = (oy + top, ox + left);
                                if ty < fy || tx < fx {
                                    continue;
                                }
                                let (ty, tx) = (ty - fy, tx - fx);
                                if ty % stride != 0 || tx % stride != 0 {
                                    continue;
                                }
                                let (iy, ix) = (ty / stride, tx / stride);
                                if iy >= h || ix >= w {
                                    continue;
                                }
                                for ic in 0..c {
                                    let xv = x[((b * h + iy) * w + ix) * c + ic] - z_in;
                                    let zw = z_w[if z_w.len() == 1 { 0 } else { oc }];
                                    let wv = f[((oc * kh + fy) * kw + fx) * c + ic] - zw;
                                    s += (xv * wv) as i64;
                                }
                            }
                        }
                        out[((b * oh + oy) * ow + ox) * o + oc] = s;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn one_pixel_scatters_the_filter() {
        // A 1x1 input of value 3 (Z = 1) through a 2x2 filter at stride 2: the output is the
        // filter times 2, with M = 1/2 (rounds half away from zero in MBQM).
        let m = QuantizedMultiplier::from_real(0.5).unwrap();
        let stage = OutputStage {
            bias: Some(&[1]),
            multipliers: Multipliers::PerTensor(m),
            output_zero_point: 10,
            clamp_min: 0,
            clamp_max: 255,
        };
        let mut y = [0u8; 4];
        transpose_conv(
            &[3u8],
            [1, 1, 1, 1],
            1,
            &[1u8, 2, 3, 4],
            [1, 2, 2, 1],
            &[0],
            &params(2, 0, 0),
            &stage,
            &mut y,
            [1, 2, 2, 1],
        );
        // (2 w + 1) / 2 rounded: 3/2 -> 2, 5/2 -> 3, 7/2 -> 4, 9/2 -> 5.
        assert_eq!(y, [12, 13, 14, 15]);
    }

    #[test]
    fn scatter_equals_gather_at_edge_parameters() {
        // Odd sizes, SAME-style padding at stride 2 and VALID at stride 1, zero points at both
        // ends of the range, per-channel zero points and multipliers far apart.
        // (input, filter, stride, (pad_top, pad_left), output) shapes.
        type Case = ([usize; 4], [usize; 4], usize, (usize, usize), [usize; 4]);
        let cases: [Case; 3] = [
            ([2, 3, 5, 3], [4, 3, 3, 3], 2, (1, 1), [2, 6, 10, 4]),
            ([1, 4, 3, 2], [3, 2, 3, 2], 1, (0, 0), [1, 5, 5, 3]),
            ([1, 3, 3, 1], [2, 5, 4, 1], 2, (2, 1), [1, 7, 7, 2]),
        ];
        let mut seed = 7u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as i32
        };
        for (xs, fs, stride, pads, ys) in cases {
            for z_in in [0, 255, 131] {
                let x: Vec<i32> = (0..xs.iter().product()).map(|_| next()).collect();
                let f: Vec<i32> = (0..fs.iter().product()).map(|_| next()).collect();
                let z_w: Vec<i32> = (0..fs[0]).map(|k| [0, 255, 77, 128][k % 4]).collect();
                let ms: Vec<QuantizedMultiplier> = (0..fs[0])
                    .map(|k| QuantizedMultiplier::from_real([1e-5, 0.3, 2e-3, 0.9][k % 4]).unwrap())
                    .collect();
                let stage = OutputStage {
                    bias: None,
                    multipliers: Multipliers::PerChannel(&ms),
                    output_zero_point: 255 - z_in,
                    clamp_min: 0,
                    clamp_max: 255,
                };
                let xu: Vec<u8> = x.iter().map(|&v| v as u8).collect();
                let fu: Vec<u8> = f.iter().map(|&v| v as u8).collect();
                let mut y = vec![0u8; ys.iter().product()];
                let p = params(stride, pads.0, pads.1);
                transpose_conv(&xu, xs, z_in, &fu, fs, &z_w, &p, &stage, &mut y, ys);
                let acc = gathered(&x, xs, z_in, &f, fs, &z_w, stride, pads, ys);
                for (i, (&got, &a)) in y.iter().zip(&acc).enumerate() {
                    let want = stage.apply(a as i32, i % fs[0]).clamp(0, 255);
                    assert_eq!(got as i32, want, "{xs:?} {fs:?} z_in {z_in}: element {i}");
                }
            }
        }
    }

    #[test]
    fn int8_per_channel_with_bias_and_clamp() {
        // int8 codes at the type's ends; bias and a ReLU-style clamp at Z_out.
        let m = [
            QuantizedMultiplier::from_real(0.25).unwrap(),
            QuantizedMultiplier::from_real(1.0 / 64.0).unwrap(),
        ];
        let stage = OutputStage {
            bias: Some(&[-100, 1000]),
            multipliers: Multipliers::PerChannel(&m),
            output_zero_point: -128,
            clamp_min: -128,
            clamp_max: 127,
        };
        let x = [-128i8, 127];
        // Filter [2, 1, 2, 1].
        let f = [127i8, -127, -1, 1];
        let mut y = [0i8; 3 * 2];
        transpose_conv(
            &x,
            [1, 1, 2, 1],
            -128,
            &f,
            [2, 1, 2, 1],
            &[0],
            &params(1, 0, 0),
            &stage,
            &mut y,
            [1, 1, 3, 2],
        );
        // x - Z: [0, 255]. Channel 0 taps [127, -127]: out x=0: 0; x=1: 255*127; x=2: -255*127.
        // Channel 1 taps [-1, 1]: x=0: 0; x=1: -255; x=2: 255.
        let want0 = |acc: i32| (stage.apply(acc, 0)).clamp(-128, 127) as i8;
        let want1 = |acc: i32| (stage.apply(acc, 1)).clamp(-128, 127) as i8;
        assert_eq!(
            y,
            [
                want0(0),
                want1(0),
                want0(255 * 127),
                want1(-255),
                want0(-255 * 127),
                want1(255)
            ]
        );
        // 255 * 127 - 100 = 32285; / 4 = 8071.25 -> saturates to 127.
        assert_eq!(y[2], 127);
        // (0 + 1000) / 64 = 15.6 -> 16 - 128 = -112.
        assert_eq!(y[1], -112);
    }
}
