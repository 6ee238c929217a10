//! Reference RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR on NHWC codes, as TFLite's reference
//! kernels compute them (docs/spec.md §11.7, §11.8): nearest neighbour copies codes from source
//! indices computed per output row and column; bilinear interpolates int8 codes in 10-bit fixed
//! point (`ResizeBilinearInteger`) and uint8 codes in f32 (`ResizeBilinear<uint8_t>`, which is
//! what TFLite's reference runs for uint8). Neither requantizes: output codes share the input's
//! `(S, Z)`.

use crate::QElem;

/// Where output and input pixel grids meet: TFLite's `align_corners` and `half_pixel_centers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResizeMode {
    pub align_corners: bool,
    pub half_pixel_centers: bool,
}

/// TFLite's `GetNearestNeighbor`: the source index of output index `out` along an axis.
pub fn nearest_source(out: usize, input: usize, output: usize, mode: ResizeMode) -> usize {
    let scale = if mode.align_corners && output > 1 {
        (input as f32 - 1.0) / (output - 1) as f32
    } else {
        input as f32 / output as f32
    };
    let offset = if mode.half_pixel_centers { 0.5f32 } else { 0.0 };
    let v = (out as f32 + offset) * scale;
    // `as` truncates like C++'s cast (and saturates); round() is TfLiteRound (half away).
    let i = if mode.align_corners {
        v.round() as i32
    } else {
        v.floor() as i32
    };
    i.clamp(0, input as i32 - 1) as usize
}

/// Nearest-neighbour resize of `input` (`[n, h, w, c]`) to `output` (`[n, oh, ow, c]`).
pub fn resize_nearest<T: QElem>(
    input: &[T],
    input_shape: [usize; 4],
    mode: ResizeMode,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    let [n, h, w, c] = input_shape;
    let [on, oh, ow, oc] = output_shape;
    assert!(n == on && c == oc, "resize keeps batch and channels");
    assert_eq!(input.len(), n * h * w * c, "input length");
    assert_eq!(output.len(), n * oh * ow * c, "output length");
    let cols: Vec<usize> = (0..ow).map(|x| nearest_source(x, w, ow, mode)).collect();
    let mut o = 0;
    for b in 0..n {
        for y in 0..oh {
            let iy = nearest_source(y, h, oh, mode);
            for &ix in &cols {
                let at = ((b * h + iy) * w + ix) * c;
                output[o..o + c].copy_from_slice(&input[at..at + c]);
                o += c;
            }
        }
    }
}

/// One axis of `ResizeBilinearInteger`: the source position in 1/1024 pixel and the two rows
/// (or columns) around it.
pub(crate) fn integer_axis(
    out: i32,
    scale_10: i32,
    half_pixel_centers: bool,
    input: i32,
) -> (i32, i32, i32) {
    let scaled = if half_pixel_centers {
        out * scale_10 + scale_10 / 2 - (1 << 9)
    } else {
        out * scale_10
    };
    let lower = (scaled / (1 << 10)).max(0);
    let upper = ((scaled + (1 << 10) - 1) / (1 << 10)).min(input - 1);
    (scaled, lower, upper)
}

/// TFLite's `height_scale_10` / `width_scale_10`: `input / output` in 1/1024, rounded.
pub(crate) fn scale_10(input: i32, output: i32, align_corners: bool) -> i32 {
    if align_corners && output > 1 {
        ((1 << 10) * (input - 1) + (output - 1) / 2) / (output - 1)
    } else {
        ((1 << 10) * input + output / 2) / output
    }
}

/// TFLite's f32 scale and source position of `ResizeBilinear` (its `ComputeInterpolationValues`).
pub(crate) fn float_axis(
    out: usize,
    scale: f32,
    half_pixel_centers: bool,
    input: usize,
) -> (f32, i32, i32) {
    let v = if half_pixel_centers {
        (out as f32 + 0.5) * scale - 0.5
    } else {
        out as f32 * scale
    };
    let lower = (v.floor() as i32).max(0);
    let upper = (v.ceil() as i32).min(input as i32 - 1);
    (v, lower, upper)
}

pub(crate) fn float_scale(input: usize, output: usize, align_corners: bool) -> f32 {
    if align_corners && output > 1 {
        (input - 1) as f32 / (output - 1) as f32
    } else {
        input as f32 / output as f32
    }
}

/// Which arithmetic [`resize_bilinear`] runs: TFLite's reference kernel differs by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BilinearArithmetic {
    /// `ResizeBilinearInteger` (TFLite's int8): weights in 1/1024, products in i64.
    Integer,
    /// `ResizeBilinear<uint8_t>` (TFLite's uint8): weights and the weighted sum in f32, plus
    /// 0.5, truncated.
    Float,
}

/// Bilinear resize of `input` (`[n, h, w, c]`) to `output` (`[n, oh, ow, c]`).
/// `align_corners` and `half_pixel_centers` must not both be set (TFLite refuses it).
pub fn resize_bilinear<T: QElem>(
    input: &[T],
    input_shape: [usize; 4],
    mode: ResizeMode,
    arithmetic: BilinearArithmetic,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    let [n, h, w, c] = input_shape;
    let [on, oh, ow, oc] = output_shape;
    assert!(n == on && c == oc, "resize keeps batch and channels");
    assert!(
        !(mode.align_corners && mode.half_pixel_centers),
        "align_corners with half_pixel_centers"
    );
    assert_eq!(input.len(), n * h * w * c, "input length");
    assert_eq!(output.len(), n * oh * ow * c, "output length");
    let at = |b: usize, y: i32, x: i32, ch: usize| {
        input[((b * h + y as usize) * w + x as usize) * c + ch].to_i32()
    };
    let mut o = 0;
    match arithmetic {
        BilinearArithmetic::Integer => {
            let sh = scale_10(h as i32, oh as i32, mode.align_corners);
            let sw = scale_10(w as i32, ow as i32, mode.align_corners);
            let one = 1i64 << 10;
            for b in 0..n {
                for y in 0..oh {
                    let (iy, y0, y1) =
                        integer_axis(y as i32, sh, mode.half_pixel_centers, h as i32);
                    let dy = (iy - (1 << 10) * y0) as i64;
                    for x in 0..ow {
                        let (ix, x0, x1) =
                            integer_axis(x as i32, sw, mode.half_pixel_centers, w as i32);
                        let dx = (ix - (1 << 10) * x0) as i64;
                        for ch in 0..c {
                            let sum = at(b, y0, x0, ch) as i64 * (one - dy) * (one - dx)
                                + at(b, y1, x0, ch) as i64 * dy * (one - dx)
                                + at(b, y0, x1, ch) as i64 * (one - dy) * dx
                                + at(b, y1, x1, ch) as i64 * dy * dx;
                            let round = if sum > 0 { 1i64 << 19 } else { -(1i64 << 19) };
                            output[o] = T::from_i32_saturating(((sum + round) / (1 << 20)) as i32);
                            o += 1;
                        }
                    }
                }
            }
        }
        BilinearArithmetic::Float => {
            let sh = float_scale(h, oh, mode.align_corners);
            let sw = float_scale(w, ow, mode.align_corners);
            for b in 0..n {
                for y in 0..oh {
                    let (iy, y0, y1) = float_axis(y, sh, mode.half_pixel_centers, h);
                    let fy = iy - y0 as f32;
                    for x in 0..ow {
                        let (ix, x0, x1) = float_axis(x, sw, mode.half_pixel_centers, w);
                        let fx = ix - x0 as f32;
                        for ch in 0..c {
                            // TFLite's expression, term by term and left to right, unfused.
                            let v = at(b, y0, x0, ch) as f32 * (1.0 - fy) * (1.0 - fx)
                                + at(b, y1, x0, ch) as f32 * fy * (1.0 - fx)
                                + at(b, y0, x1, ch) as f32 * (1.0 - fy) * fx
                                + at(b, y1, x1, ch) as f32 * fy * fx
                                + 0.5;
                            output[o] = T::from_i32_saturating(v as i32);
                            o += 1;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: ResizeMode = ResizeMode {
        align_corners: false,
        half_pixel_centers: false,
    };
    const ALIGN: ResizeMode = ResizeMode {
        align_corners: true,
        half_pixel_centers: false,
    };
    const HALF: ResizeMode = ResizeMode {
        align_corners: false,
        half_pixel_centers: true,
    };

    #[test]
    fn nearest_sources_follow_tflite() {
        // 3 -> 5 plain: floor(x * 0.6) = 0, 0, 1, 1, 2.
        let v: Vec<usize> = (0..5).map(|x| nearest_source(x, 3, 5, PLAIN)).collect();
        assert_eq!(v, [0, 0, 1, 1, 2]);
        // align_corners: round(x * 0.5) = 0, 1 (0.5 away), 1, 2 (1.5 away), 2.
        let v: Vec<usize> = (0..5).map(|x| nearest_source(x, 3, 5, ALIGN)).collect();
        assert_eq!(v, [0, 1, 1, 2, 2]);
        // half_pixel_centers: floor((x + 0.5) * 0.6) = 0, 0, 1, 2, 2.
        let v: Vec<usize> = (0..5).map(|x| nearest_source(x, 3, 5, HALF)).collect();
        assert_eq!(v, [0, 0, 1, 2, 2]);
        // Downscale 5 -> 2: floor(x * 2.5) = 0, 2.
        let v: Vec<usize> = (0..2).map(|x| nearest_source(x, 5, 2, PLAIN)).collect();
        assert_eq!(v, [0, 2]);
    }

    #[test]
    fn bilinear_2x_upscale_interpolates_both_ways_alike() {
        // A 1x2 row [0, 100] to 1x4, plain: x = 0, 0.5, 1, 1.5 (clamped) -> 0, 50, 100, 100.
        for arithmetic in [BilinearArithmetic::Integer, BilinearArithmetic::Float] {
            let mut out = [0u8; 4];
            resize_bilinear(
                &[0u8, 100],
                [1, 1, 2, 1],
                PLAIN,
                arithmetic,
                &mut out,
                [1, 1, 4, 1],
            );
            assert_eq!(out, [0, 50, 100, 100], "{arithmetic:?}");
        }
        // int8 rounds half away from zero: [-1, 0] at x = 0.5 is -0.5 -> -1.
        let mut out = [0i8; 4];
        resize_bilinear(
            &[-1i8, 0],
            [1, 1, 2, 1],
            PLAIN,
            BilinearArithmetic::Integer,
            &mut out,
            [1, 1, 4, 1],
        );
        assert_eq!(out, [-1, -1, 0, 0]);
        // Half-pixel centers: x = -0.25 (clamped to column 0 with weight 1.25 and -0.25).
        let mut out = [0i8; 4];
        resize_bilinear(
            &[-100i8, 100],
            [1, 1, 2, 1],
            HALF,
            BilinearArithmetic::Integer,
            &mut out,
            [1, 1, 4, 1],
        );
        assert_eq!(out, [-100, -50, 50, 100]);
    }
}
