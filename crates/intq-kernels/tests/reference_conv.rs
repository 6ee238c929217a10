//! Tests of the reference conv2d, depthwise_conv2d and fully_connected kernels: hand-computed
//! cases, agreement with an f64 model of each op on random shapes in both integer encodings,
//! and edge cases (extreme zero points and codes, int32 extremes, equivalences between ops).

mod common_conv;

use common_conv::{
    assert_agrees_with_model, conv2d_f64, depthwise_f64, fully_connected_f64, model_code,
    random_geometry, Agreement, Geometry, ModelOut, Requant, Rng,
};
use intq_kernels::reference::{conv2d, depthwise_conv2d, fully_connected};
use intq_kernels::{ConvParams, Multipliers, OutputStage, Padding, PaddingValues, QElem};
use intq_quant::{QScheme, QuantParams, QuantizedMultiplier};
use intq_testutil::{codes, widen};

// ---------------------------------------------------------------------------------------------
// Helpers

fn qm(m: f64) -> QuantizedMultiplier {
    QuantizedMultiplier::from_real(m).unwrap()
}

fn per_tensor(m: QuantizedMultiplier, z_out: i32, clamp: (i32, i32)) -> OutputStage<'static> {
    OutputStage {
        bias: None,
        multipliers: Multipliers::PerTensor(m),
        output_zero_point: z_out,
        clamp_min: clamp.0,
        clamp_max: clamp.1,
    }
}

fn geometry_params(
    padding: Padding,
    input: (usize, usize),
    filter: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
) -> ((usize, usize), ConvParams) {
    let (out, pad) = padding
        .resolve(input, filter, stride, dilation)
        .expect("filter fits");
    (
        out,
        ConvParams {
            stride_h: stride.0,
            stride_w: stride.1,
            dilation_h: dilation.0,
            dilation_w: dilation.1,
            padding: pad,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Hand-computed cases

/// The 3x3 single-channel image and 2x2 filter most hand cases below use, in codes offset by
/// `shift` (0 for u8, -128 for i8, which leaves every `q - Z` unchanged).
///
/// Input codes 3..=11 with Z_in = 2 are the reals (in units) x =
///   1 2 3
///   4 5 6
///   7 8 9
/// Filter codes [11 12; 13 10] with Z_w = 10 (u8) are w = [1 2; 3 0]. For i8 the filter is
/// symmetric (Z_w = 0), so its codes are w itself.
fn small_image<T: QElem>(shift: i32) -> (Vec<T>, i32, Vec<T>, i32) {
    let input: Vec<i32> = (3..=11).map(|q| q + shift).collect();
    let (filter, z_w) = if shift == 0 {
        (vec![11, 12, 13, 10], 10)
    } else {
        (vec![1, 2, 3, 0], 0)
    };
    (codes(&input), 2 + shift, codes(&filter), z_w)
}

fn conv_small_image<T: QElem>(
    shift: i32,
    padding: Padding,
    stride: usize,
    dilation: usize,
    stage: &OutputStage,
) -> ((usize, usize), Vec<i32>) {
    let (input, z_in, filter, z_w) = small_image::<T>(shift);
    let ((oh, ow), params) = geometry_params(
        padding,
        (3, 3),
        (2, 2),
        (stride, stride),
        (dilation, dilation),
    );
    let mut out = vec![T::default(); oh * ow];
    conv2d(
        &input,
        [1, 3, 3, 1],
        z_in,
        &filter,
        [1, 2, 2, 1],
        &[z_w],
        &params,
        stage,
        &mut out,
        [1, oh, ow, 1],
    );
    ((oh, ow), widen(&out))
}

#[test]
fn conv_valid_stride_1_rounds_ties_up() {
    // VALID, stride 1: a 2x2 output, acc = Σ x*w over each 2x2 window:
    //   (0,0) 1*1 + 2*2 + 4*3 + 5*0 = 17     (0,1) 2 + 6 + 15 + 0 = 23
    //   (1,0) 4 + 10 + 21 + 0 = 35           (1,1) 5 + 12 + 24 + 0 = 41
    // M = 0.5 (m0 = 2^30, shift 0): SRDHM gives floor((acc * 2^30 + 2^30) / 2^31), so every
    // x.5 rounds up: 8.5 -> 9, 11.5 -> 12, 17.5 -> 18, 20.5 -> 21; plus Z_out = 100.
    let stage = per_tensor(qm(0.5), 100, (0, 255));
    let (hw, out) = conv_small_image::<u8>(0, Padding::Valid, 1, 1, &stage);
    assert_eq!(hw, (2, 2));
    assert_eq!(out, [109, 112, 118, 121]);
    // The same in i8: codes and zero points shifted by -128, so Z_out = -28.
    let stage = per_tensor(qm(0.5), -28, (-128, 127));
    let (_, out) = conv_small_image::<i8>(-128, Padding::Valid, 1, 1, &stage);
    assert_eq!(out, [-19, -16, -10, -7]);
}

#[test]
fn conv_same_stride_2_pads_with_the_input_zero_point() {
    // SAME, stride 2 on 3x3 with a 2x2 filter: out = ceil(3/2) = 2, padding needed
    // (2-1)*2 + 2 - 3 = 1, all of it at the bottom/right. Windows (rows, cols):
    //   (0,0) rows 0-1, cols 0-1: 17 (as in the VALID case)
    //   (0,1) rows 0-1, cols 2-3: x(0,2)*w(0,0) + x(1,2)*w(1,0) = 3*1 + 6*3 = 21
    //   (1,0) rows 2-3, cols 0-1: x(2,0)*1 + x(2,1)*2 = 7 + 16 = 23
    //   (1,1) rows 2-3, cols 2-3: x(2,2)*1 = 9
    // Padded taps contribute 0 (real zero). Had the padding been the code 0 instead of Z_in = 2,
    // (0,1) would also get (0 - 2) * (w(0,1) + w(1,1)) = -4, and (1,1) (0 - 2) * (2 + 3 + 0) = -10.
    let pad = Padding::Same
        .resolve((3, 3), (2, 2), (2, 2), (1, 1))
        .unwrap()
        .1;
    assert_eq!(
        pad,
        PaddingValues {
            top: 0,
            bottom: 1,
            left: 0,
            right: 1
        }
    );
    let identity = per_tensor(QuantizedMultiplier::ONE, 0, (0, 255));
    let (hw, out) = conv_small_image::<u8>(0, Padding::Same, 2, 1, &identity);
    assert_eq!(hw, (2, 2));
    assert_eq!(out, [17, 21, 23, 9]);
    let identity = per_tensor(QuantizedMultiplier::ONE, 0, (-128, 127));
    let (_, out) = conv_small_image::<i8>(-128, Padding::Same, 2, 1, &identity);
    assert_eq!(out, [17, 21, 23, 9]);
}

#[test]
fn conv_explicit_top_left_padding_offsets_the_window() {
    // Explicit top = left = 1, stride 2: padded extent 4, out (4 - 2)/2 + 1 = 2. Window origins
    // are at input (-1,-1), (-1,1), (1,-1), (1,1):
    //   (0,0) only tap (1,1) lands on x(0,0): 1*0 = 0
    //   (0,1) taps (1,0),(1,1) on x(0,1), x(0,2): 2*3 + 3*0 = 6
    //   (1,0) taps (0,1),(1,1) on x(1,0), x(2,0): 4*2 + 7*0 = 8
    //   (1,1) all four on x(1,1) x(1,2) x(2,1) x(2,2): 5*1 + 6*2 + 8*3 + 9*0 = 41
    let explicit = Padding::Explicit {
        top: 1,
        bottom: 0,
        left: 1,
        right: 0,
    };
    let identity = per_tensor(QuantizedMultiplier::ONE, 0, (0, 255));
    let (hw, out) = conv_small_image::<u8>(0, explicit, 2, 1, &identity);
    assert_eq!(hw, (2, 2));
    assert_eq!(out, [0, 6, 8, 41]);
}

#[test]
fn conv_dilation_2() {
    // Dilation 2 spreads the 2x2 filter over the corners of the 3x3 image; VALID gives 1x1:
    //   x(0,0)*1 + x(0,2)*2 + x(2,0)*3 + x(2,2)*0 = 1 + 6 + 21 = 28.
    let identity = per_tensor(QuantizedMultiplier::ONE, 0, (0, 255));
    let (hw, out) = conv_small_image::<u8>(0, Padding::Valid, 1, 2, &identity);
    assert_eq!(hw, (1, 1));
    assert_eq!(out, [28]);
    let identity = per_tensor(QuantizedMultiplier::ONE, 0, (-128, 127));
    let (_, out) = conv_small_image::<i8>(-128, Padding::Valid, 1, 2, &identity);
    assert_eq!(out, [28]);
}

#[test]
fn conv_per_channel_zero_points_multipliers_bias_and_relu() {
    // Input 1x1x2x2 with Z_in = 128: pixel 0 codes [130, 126] -> x [2, -2];
    // pixel 1 codes [128, 138] -> x [0, 10]. Filter [2, 1, 2, 2], VALID -> output 1x1x1x2.
    // Channel 0, Z_w = 100: taps [101, 99], [103, 100] -> w [1, -1], [3, 0]
    //   acc0 = 2*1 + (-2)*(-1) + 0*3 + 10*0 = 4;  + bias 10 = 14
    // Channel 1, Z_w = 50: taps [50, 52], [45, 51] -> w [0, 2], [-5, 1]
    //   acc1 = 2*0 + (-2)*2 + 0*(-5) + 10*1 = 6;  + bias -30 = -24
    // Channel 0, M = 0.25 (m0 = 2^30, shift -1): SRDHM(14, 2^30) = floor(15 * 2^30 / 2^31) = 7,
    //   RDBPOT(7, 1) = 3.5 rounded away = 4; + Z_out 20 = 24.
    // Channel 1, M = 0.75: -24 * 0.75 = -18 exactly; + 20 = 2, or 20 under ReLU [Z_out, 255].
    let input = codes::<u8>(&[130, 126, 128, 138]);
    let filter = codes::<u8>(&[101, 99, 103, 100, 50, 52, 45, 51]);
    let bias = [10, -30];
    let multipliers = [qm(0.25), qm(0.75)];
    assert_eq!(
        multipliers[0],
        QuantizedMultiplier {
            m0: 1 << 30,
            shift: -1
        }
    );
    let params = geometry_params(Padding::Valid, (1, 2), (1, 2), (1, 1), (1, 1)).1;
    for (clamp_min, expected) in [(0, [24, 2]), (20, [24, 20])] {
        let stage = OutputStage {
            bias: Some(&bias),
            multipliers: Multipliers::PerChannel(&multipliers),
            output_zero_point: 20,
            clamp_min,
            clamp_max: 255,
        };
        let mut out = [0u8; 2];
        conv2d(
            &input,
            [1, 1, 2, 2],
            128,
            &filter,
            [2, 1, 2, 2],
            &[100, 50],
            &params,
            &stage,
            &mut out,
            [1, 1, 1, 2],
        );
        assert_eq!(widen(&out), expected, "clamp_min {clamp_min}");
    }
}

/// Input 1x2x2x2 i8 with Z_in = -3, codes per pixel (y, x): (0,0) [-2, -3], (0,1) [0, 1],
/// (1,0) [-4, 2], (1,1) [7, -3]; so channel 0 holds x = [1, 3, -1, 10] and channel 1
/// x = [0, 4, 5, 0] in raster order. Filter [1, 2, 2, 4] (Z_w = 0), taps in raster order:
///   oc0 [1, 0, 2, 1]   oc1 [2, 1, 0, -1]   oc2 [0, 3, 1, 0]   oc3 [-1, 2, 1, 0]
fn depthwise_example(padding: Padding) -> Vec<i32> {
    let input = codes::<i8>(&[-2, -3, 0, 1, -4, 2, 7, -3]);
    let filter = codes::<i8>(&[
        1, 2, 0, -1, // tap (0,0)
        0, 1, 3, 2, // tap (0,1)
        2, 0, 1, 1, // tap (1,0)
        1, -1, 0, 0, // tap (1,1)
    ]);
    let ((oh, ow), params) = geometry_params(padding, (2, 2), (2, 2), (1, 1), (1, 1));
    let mut out = vec![0i8; oh * ow * 4];
    let stage = per_tensor(QuantizedMultiplier::ONE, 0, (-128, 127));
    depthwise_conv2d(
        &input,
        [1, 2, 2, 2],
        -3,
        &filter,
        [1, 2, 2, 4],
        &[0],
        2,
        &params,
        &stage,
        &mut out,
        [1, oh, ow, 4],
    );
    widen(&out)
}

#[test]
fn depthwise_multiplier_2_channel_order() {
    // Output channel ic * 2 + m reads input channel ic, so oc0, oc1 read channel 0 and oc2, oc3
    // channel 1. VALID gives one pixel:
    //   oc0 = [1,3,-1,10].[1,0,2,1]  = 1 + 0 - 2 + 10 = 9
    //   oc1 = [1,3,-1,10].[2,1,0,-1] = 2 + 3 + 0 - 10 = -5
    //   oc2 = [0,4,5,0].[0,3,1,0]    = 12 + 5 = 17
    //   oc3 = [0,4,5,0].[-1,2,1,0]   = 8 + 5 = 13
    assert_eq!(depthwise_example(Padding::Valid), [9, -5, 17, 13]);
}

#[test]
fn depthwise_same_padding() {
    // SAME, stride 1: 2x2 output, one padded row/column at the bottom/right. Pixel (0,1) sees
    // only taps (0,0) and (1,0) on x(0,1), x(1,1); (1,0) only (0,0), (0,1) on x(1,0), x(1,1);
    // (1,1) only tap (0,0) on x(1,1). Channel 0 x(0,1) = 3, x(1,0) = -1, x(1,1) = 10;
    // channel 1 x(0,1) = 4, x(1,0) = 5, x(1,1) = 0.
    //   (0,1): oc0 3*1 + 10*2 = 23   oc1 3*2 + 10*0 = 6   oc2 4*0 + 0*1 = 0  oc3 4*-1 + 0 = -4
    //   (1,0): oc0 -1*1 + 10*0 = -1  oc1 -1*2 + 10*1 = 8  oc2 5*0 + 0*3 = 0  oc3 5*-1 + 0 = -5
    //   (1,1): oc0 10*1 = 10         oc1 10*2 = 20        oc2 0             oc3 0
    assert_eq!(
        depthwise_example(Padding::Same),
        [9, -5, 17, 13, 23, 6, 0, -4, -1, 8, 0, -5, 10, 20, 0, 0]
    );
}

#[test]
fn fully_connected_per_channel_zero_points_and_ties() {
    // Z_in = 255 (the top code). Batch 0 codes [255, 254, 250] -> x [0, -1, -5];
    // batch 1 codes [0, 255, 253] -> x [-255, 0, -2].
    // Weights, per-channel Z_w = [1, 255]: o0 codes [2, 3, 1] -> w [1, 2, 0];
    // o1 codes [255, 254, 250] -> w [0, -1, -5].
    //   b0o0 = 0 - 2 + 0 = -2     b0o1 = 0 + 1 + 25 = 26
    //   b1o0 = -255 + 0 + 0 = -255 b1o1 = 0 + 0 + 10 = 10
    // Bias [6, -1]: 4, 25, -249, 9. M = 0.5 (m0 = 2^30, shift 0), so SRDHM alone rounds, ties
    // toward +inf: 2, 12.5 -> 13, -124.5 -> -124 (not -125: the nudge 1 - 2^30 and truncating
    // division round negative ties up), 4.5 -> 5. Plus Z_out = 128.
    let input = codes::<u8>(&[255, 254, 250, 0, 255, 253]);
    let weights = codes::<u8>(&[2, 3, 1, 255, 254, 250]);
    let bias = [6, -1];
    for (clamp, expected) in [
        ((0, 255), [130, 141, 4, 133]),
        ((128, 133), [130, 133, 128, 133]),
    ] {
        let stage = OutputStage {
            bias: Some(&bias),
            ..per_tensor(qm(0.5), 128, clamp)
        };
        let mut out = [0u8; 4];
        fully_connected(&input, 2, 3, 255, &weights, 2, &[1, 255], &stage, &mut out);
        assert_eq!(widen(&out), expected, "clamp {clamp:?}");
    }
}

#[test]
fn fully_connected_int8_per_channel_multipliers() {
    // One batch, depth 2, Z_in = -128: codes [-128, 127] -> x [0, 255]. Symmetric weights:
    // o0 [127, -127] -> acc -32385; o1 [1, 3] -> acc 765; o2 [-1, 1] -> acc 255.
    // Multipliers 2^-8, 2^-4, 1 and bias [1, -757, 0]; Z_out = 5:
    //   o0: -32384 / 256 = -126.5: SRDHM(-32384, 2^30) = -16192 (exact), then RDBPOT(., 7)
    //       rounds -126.5 away from zero -> -127; -122
    //   o1: 8 / 16 = 0.5: SRDHM(8, 2^30) = 4, RDBPOT(4, 3) rounds 0.5 away -> 1; 6
    //   o2: 255 + 5 = 260, clamped to 127
    let input = codes::<i8>(&[-128, 127]);
    let weights = codes::<i8>(&[127, -127, 1, 3, -1, 1]);
    let bias = [1, -757, 0];
    let ms = [qm(2f64.powi(-8)), qm(2f64.powi(-4)), qm(1.0)];
    let stage = OutputStage {
        bias: Some(&bias),
        multipliers: Multipliers::PerChannel(&ms),
        output_zero_point: 5,
        clamp_min: -128,
        clamp_max: 127,
    };
    let mut out = [0i8; 3];
    fully_connected(&input, 1, 2, -128, &weights, 3, &[0], &stage, &mut out);
    assert_eq!(widen(&out), [-122, 6, 127]);
}

// ---------------------------------------------------------------------------------------------
// 2. Agreement with an f64 model on random cases

/// One of the two integer encodings of docs/spec.md §1.1.
#[derive(Debug, Clone, Copy)]
struct Encoding {
    activations: QScheme,
    weight_min: i32,
    weight_max: i32,
    /// TFLite's int8: symmetric weights (Z_w = 0), one scale per output channel. Otherwise the
    /// paper's uint8: narrow-range weights with a non-zero Z_w, per tensor or per channel.
    symmetric_weights: bool,
}

const PAPER_U8: Encoding = Encoding {
    activations: QScheme::UINT8,
    weight_min: 1,
    weight_max: 255,
    symmetric_weights: false,
};

const TFLITE_I8: Encoding = Encoding {
    activations: QScheme::INT8,
    weight_min: -127,
    weight_max: 127,
    symmetric_weights: true,
};

/// What a random case's codes are drawn from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Draw {
    /// Any codes, random scales: requantization rounds.
    Rounding,
    /// Power-of-two scales and `q - Z` multiples of powers of two, so that every multiplier is a
    /// power of two that divides the accumulator: nothing rounds and the result is exact.
    Exact,
    /// Every zero point and code at its type's extremes.
    Extremes,
}

/// The operands of one random case, as codes and their parameters.
struct Operands {
    input_params: QuantParams,
    input: Vec<i32>,
    /// Length 1 (per tensor) or out_c.
    weight_params: Vec<QuantParams>,
    weights: Vec<i32>,
    bias: Vec<i32>,
    /// In `Draw::Exact`, every product (and the bias) is a multiple of `2^exact_exponent`.
    exact_exponent: i32,
}

impl Operands {
    fn weight_zero_points(&self) -> Vec<i32> {
        self.weight_params.iter().map(|p| p.zero_point).collect()
    }

    fn weight_param(&self, channel: usize) -> QuantParams {
        self.weight_params[if self.weight_params.len() == 1 {
            0
        } else {
            channel
        }]
    }

    fn real_input(&self) -> Vec<f64> {
        common_conv::dequantize_all(&self.input, |_| self.input_params)
    }

    fn real_weights(&self, channel_of: impl Fn(usize) -> usize) -> Vec<f64> {
        common_conv::dequantize_all(&self.weights, |i| self.weight_param(channel_of(i)))
    }

    /// `bias_q * S_in * S_w[k]`: the bias's real value (docs/spec.md §1.2: S_bias = S_in * S_w, Z =
    /// 0).
    fn real_bias(&self) -> Vec<f64> {
        self.bias
            .iter()
            .enumerate()
            .map(|(k, &b)| {
                b as f64 * self.input_params.scale as f64 * self.weight_param(k).scale as f64
            })
            .collect()
    }
}

fn draw_operands<T: QElem>(
    rng: &mut Rng,
    enc: Encoding,
    draw: Draw,
    input_len: usize,
    weight_len: usize,
    out_c: usize,
    channel_of_weight: impl Fn(usize) -> usize,
) -> Operands {
    assert_eq!(
        enc.activations.qmin(),
        T::MIN,
        "encoding and code type disagree"
    );
    let per_channel = enc.symmetric_weights || rng.chance(0.5);
    let n_params = if per_channel { out_c } else { 1 };
    let (a, b) = (rng.int(0, 3), rng.int(0, 3));
    let exact_exponent = a + b;

    let input_zero_point = match draw {
        Draw::Rounding => rng.code_in(T::MIN, T::MAX),
        Draw::Exact => rng.int(T::MIN + 64, T::MAX - 63),
        Draw::Extremes => rng.pick(&[T::MIN, T::MAX]),
    };
    let input_scale = match draw {
        Draw::Exact => 2f32.powi(-rng.int(2, 6)),
        _ => rng.log_scale(-8.0, -1.0),
    };
    let input_params = QuantParams::new(input_scale, input_zero_point).unwrap();
    let input = (0..input_len)
        .map(|_| match draw {
            Draw::Rounding => rng.code_in(T::MIN, T::MAX),
            Draw::Exact => input_zero_point + (1 << a) * rng.int(-1, 1),
            Draw::Extremes => rng.pick(&[T::MIN, T::MAX]),
        })
        .collect();

    let weight_params: Vec<QuantParams> = (0..n_params)
        .map(|_| {
            let zero_point = match (enc.symmetric_weights, draw) {
                (true, _) => 0,
                (false, Draw::Rounding) => rng.code_in(enc.weight_min, enc.weight_max),
                (false, Draw::Exact) => rng.int(64, 191),
                (false, Draw::Extremes) => rng.pick(&[enc.weight_min, enc.weight_max]),
            };
            let scale = match draw {
                Draw::Exact => 2f32.powi(-rng.int(3, 4)),
                _ => rng.log_scale(-9.0, -3.0),
            };
            QuantParams::new(scale, zero_point).unwrap()
        })
        .collect();
    let weights = (0..weight_len)
        .map(|i| {
            let z = weight_params[if per_channel { channel_of_weight(i) } else { 0 }].zero_point;
            match draw {
                Draw::Rounding => rng.code_in(enc.weight_min, enc.weight_max),
                Draw::Exact => z + (1 << b) * rng.int(-1, 1),
                Draw::Extremes => rng.pick(&[enc.weight_min, enc.weight_max]),
            }
        })
        .collect();
    let bias = (0..out_c)
        .map(|_| match draw {
            Draw::Rounding => rng.int(-20_000, 20_000),
            Draw::Exact => (1 << exact_exponent) * rng.int(-8, 8),
            Draw::Extremes => rng.pick(&[-20_000, 0, 20_000]),
        })
        .collect();
    Operands {
        input_params,
        input,
        weight_params,
        weights,
        bias,
        exact_exponent,
    }
}

/// Output params, clamp and multipliers `M_k = S_in * S_w[k] / S_out` for a case whose real
/// results are `model`.
fn choose_requant<T: QElem>(
    rng: &mut Rng,
    enc: Encoding,
    draw: Draw,
    ops: &Operands,
    model: &[ModelOut],
    out_c: usize,
) -> Requant {
    let s_in = ops.input_params.scale as f64;
    let output = if draw == Draw::Exact {
        // S_out = S_in * min S_w * 2^exact / up: every M_k = 2^(d_k) * up / 2^exact with
        // d_k >= 0, so acc * M_k is an integer (up = 2 also covers a multiplier above one).
        let min_w = ops
            .weight_params
            .iter()
            .map(|p| p.scale)
            .fold(f32::INFINITY, f32::min);
        let up = rng.pick(&[1.0f32, 2.0]);
        let scale = (ops.input_params.scale * min_w) * 2f32.powi(ops.exact_exponent) / up;
        QuantParams::new(scale, rng.int(T::MIN + 96, T::MAX - 95)).unwrap()
    } else {
        // The real results' range, stretched or shrunk a little so some outputs clamp.
        let lo = model.iter().map(|m| m.real).fold(0.0, f64::min);
        let hi = model.iter().map(|m| m.real).fold(0.0, f64::max);
        let f = 0.8 + 0.5 * rng.unit();
        enc.activations
            .choose_params((lo * f) as f32, (hi * f) as f32)
            .unwrap()
    };
    let multipliers = (0..out_c)
        .map(|k| qm(s_in * ops.weight_param(k).scale as f64 / output.scale as f64))
        .collect();
    let (clamp_min, clamp_max) = match rng.int(0, 2) {
        0 => (T::MIN, T::MAX),
        // ReLU: [Z_out, max].
        1 => (output.zero_point, T::MAX),
        _ => {
            let lo = rng.int(T::MIN, output.zero_point);
            (lo, rng.int(lo, T::MAX))
        }
    };
    Requant {
        output,
        clamp_min,
        clamp_max,
        multipliers,
    }
}

fn stage_for<'a>(bias: &'a [i32], rq: &'a Requant, per_tensor: bool) -> OutputStage<'a> {
    OutputStage {
        bias: Some(bias),
        multipliers: if per_tensor {
            Multipliers::PerTensor(rq.multipliers[0])
        } else {
            Multipliers::PerChannel(&rq.multipliers)
        },
        output_zero_point: rq.output.zero_point,
        clamp_min: rq.clamp_min,
        clamp_max: rq.clamp_max,
    }
}

/// Exact draws must match the model bit for bit, the model itself landing on integers; the
/// others within one LSB at rounding ties only.
fn check(
    got: &[i32],
    model: &[ModelOut],
    rq: &Requant,
    draw: Draw,
    ctx: &str,
    tally: &mut Agreement,
) {
    if draw == Draw::Exact {
        for (i, (&q, m)) in got.iter().zip(model).enumerate() {
            let v = m.real / rq.output.scale as f64;
            assert_eq!(v, v.round(), "{ctx}: output {i}: exact case rounds ({v})");
            let (expected, clamped) = model_code(m.real, rq);
            assert_eq!(q, expected, "{ctx}: output {i}");
            tally.outputs += 1;
            tally.unclamped += usize::from(!clamped);
        }
    } else {
        assert_agrees_with_model(got, model, rq, ctx, tally);
    }
}

fn conv_case<T: QElem>(rng: &mut Rng, enc: Encoding, draw: Draw, tally: &mut Agreement) {
    let g: Geometry = random_geometry(rng);
    let (in_c, out_c) = (rng.size(1, 4), rng.size(1, 4));
    let input_shape = [g.batches, g.in_h, g.in_w, in_c];
    let filter_shape = [out_c, g.kh, g.kw, in_c];
    let output_shape = [g.batches, g.out_h, g.out_w, out_c];
    let per_filter = g.kh * g.kw * in_c;
    let channel_of = |i: usize| i / per_filter;
    let ops = draw_operands::<T>(
        rng,
        enc,
        draw,
        input_shape.iter().product(),
        filter_shape.iter().product(),
        out_c,
        channel_of,
    );
    let model = conv2d_f64(
        &ops.real_input(),
        in_c,
        &ops.real_weights(channel_of),
        out_c,
        &ops.real_bias(),
        &g,
    );
    let rq = choose_requant::<T>(rng, enc, draw, &ops, &model, out_c);
    let stage = stage_for(&ops.bias, &rq, ops.weight_params.len() == 1);
    let mut out = vec![T::default(); output_shape.iter().product()];
    conv2d(
        &codes::<T>(&ops.input),
        input_shape,
        ops.input_params.zero_point,
        &codes::<T>(&ops.weights),
        filter_shape,
        &ops.weight_zero_points(),
        &g.params,
        &stage,
        &mut out,
        output_shape,
    );
    let ctx = format!(
        "conv2d {draw:?} {enc:?} in {input_shape:?} filter {filter_shape:?} {:?}",
        g.params
    );
    check(&widen(&out), &model, &rq, draw, &ctx, tally);
}

fn depthwise_case<T: QElem>(rng: &mut Rng, enc: Encoding, draw: Draw, tally: &mut Agreement) {
    let g: Geometry = random_geometry(rng);
    let (in_c, multiplier) = (rng.size(1, 4), rng.size(1, 3));
    let out_c = in_c * multiplier;
    let input_shape = [g.batches, g.in_h, g.in_w, in_c];
    let filter_shape = [1, g.kh, g.kw, out_c];
    let output_shape = [g.batches, g.out_h, g.out_w, out_c];
    let channel_of = |i: usize| i % out_c;
    let ops = draw_operands::<T>(
        rng,
        enc,
        draw,
        input_shape.iter().product(),
        filter_shape.iter().product(),
        out_c,
        channel_of,
    );
    let model = depthwise_f64(
        &ops.real_input(),
        in_c,
        &ops.real_weights(channel_of),
        multiplier,
        &ops.real_bias(),
        &g,
    );
    let rq = choose_requant::<T>(rng, enc, draw, &ops, &model, out_c);
    let stage = stage_for(&ops.bias, &rq, ops.weight_params.len() == 1);
    let mut out = vec![T::default(); output_shape.iter().product()];
    depthwise_conv2d(
        &codes::<T>(&ops.input),
        input_shape,
        ops.input_params.zero_point,
        &codes::<T>(&ops.weights),
        filter_shape,
        &ops.weight_zero_points(),
        multiplier,
        &g.params,
        &stage,
        &mut out,
        output_shape,
    );
    let ctx = format!(
        "depthwise {draw:?} {enc:?} in {input_shape:?} filter {filter_shape:?} x{multiplier} {:?}",
        g.params
    );
    check(&widen(&out), &model, &rq, draw, &ctx, tally);
}

fn fully_connected_case<T: QElem>(rng: &mut Rng, enc: Encoding, draw: Draw, tally: &mut Agreement) {
    let (batches, depth, out_features) = (rng.size(1, 3), rng.size(1, 40), rng.size(1, 6));
    let channel_of = |i: usize| i / depth;
    let ops = draw_operands::<T>(
        rng,
        enc,
        draw,
        batches * depth,
        out_features * depth,
        out_features,
        channel_of,
    );
    let model = fully_connected_f64(
        &ops.real_input(),
        batches,
        depth,
        &ops.real_weights(channel_of),
        out_features,
        &ops.real_bias(),
    );
    let rq = choose_requant::<T>(rng, enc, draw, &ops, &model, out_features);
    let stage = stage_for(&ops.bias, &rq, ops.weight_params.len() == 1);
    let mut out = vec![T::default(); batches * out_features];
    fully_connected(
        &codes::<T>(&ops.input),
        batches,
        depth,
        ops.input_params.zero_point,
        &codes::<T>(&ops.weights),
        out_features,
        &ops.weight_zero_points(),
        &stage,
        &mut out,
    );
    let ctx = format!("fully_connected {draw:?} {enc:?} {batches}x{depth} -> {out_features}");
    check(&widen(&out), &model, &rq, draw, &ctx, tally);
}

type Case = fn(&mut Rng, Encoding, Draw, &mut Agreement);

/// Runs `cases` random cases and checks the run as a whole exercised requantization: most
/// outputs (a third at least) inside the clamp, and off-by-one results (ties) rare.
fn run_cases(seed: u64, case: Case, enc: Encoding, draw: Draw, cases: usize) {
    let mut rng = Rng::new(seed);
    let mut tally = Agreement::default();
    for _ in 0..cases {
        case(&mut rng, enc, draw, &mut tally);
    }
    assert!(
        tally.unclamped * 3 >= tally.outputs,
        "too few unclamped outputs: {tally:?}"
    );
    assert!(
        tally.off_by_one * 100 <= tally.outputs,
        "off-by-one results are not rare: {tally:?}"
    );
}

const CASES: usize = 150;

#[test]
fn conv_agrees_with_float_model_uint8() {
    run_cases(1, conv_case::<u8>, PAPER_U8, Draw::Rounding, CASES);
}

#[test]
fn conv_agrees_with_float_model_int8() {
    run_cases(2, conv_case::<i8>, TFLITE_I8, Draw::Rounding, CASES);
}

#[test]
fn depthwise_agrees_with_float_model_uint8() {
    run_cases(3, depthwise_case::<u8>, PAPER_U8, Draw::Rounding, CASES);
}

#[test]
fn depthwise_agrees_with_float_model_int8() {
    run_cases(4, depthwise_case::<i8>, TFLITE_I8, Draw::Rounding, CASES);
}

#[test]
fn fully_connected_agrees_with_float_model_uint8() {
    run_cases(
        5,
        fully_connected_case::<u8>,
        PAPER_U8,
        Draw::Rounding,
        CASES,
    );
}

#[test]
fn fully_connected_agrees_with_float_model_int8() {
    run_cases(
        6,
        fully_connected_case::<i8>,
        TFLITE_I8,
        Draw::Rounding,
        CASES,
    );
}

#[test]
fn exact_where_nothing_rounds() {
    run_cases(7, conv_case::<u8>, PAPER_U8, Draw::Exact, CASES);
    run_cases(8, conv_case::<i8>, TFLITE_I8, Draw::Exact, CASES);
    run_cases(9, depthwise_case::<u8>, PAPER_U8, Draw::Exact, CASES);
    run_cases(10, depthwise_case::<i8>, TFLITE_I8, Draw::Exact, CASES);
    run_cases(11, fully_connected_case::<u8>, PAPER_U8, Draw::Exact, CASES);
    run_cases(
        12,
        fully_connected_case::<i8>,
        TFLITE_I8,
        Draw::Exact,
        CASES,
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Edge cases

#[test]
fn extreme_zero_points_and_codes_agree_with_float_model() {
    // Z_in in {0, 255} / {-128, 127}, Z_w in {1, 255} (u8) or 0 (i8), every code at an extreme.
    run_cases(13, conv_case::<u8>, PAPER_U8, Draw::Extremes, CASES);
    run_cases(14, conv_case::<i8>, TFLITE_I8, Draw::Extremes, CASES);
    run_cases(15, depthwise_case::<u8>, PAPER_U8, Draw::Extremes, CASES);
    run_cases(16, depthwise_case::<i8>, TFLITE_I8, Draw::Extremes, CASES);
    run_cases(
        17,
        fully_connected_case::<u8>,
        PAPER_U8,
        Draw::Extremes,
        CASES,
    );
    run_cases(
        18,
        fully_connected_case::<i8>,
        TFLITE_I8,
        Draw::Extremes,
        CASES,
    );
}

/// A fully connected layer of `depth` identical products `x * w`, bias `bias`, M = 2^-24.
fn long_dot<T: QElem>(depth: usize, x: (i32, i32), w: (i32, i32), bias: i32, z_out: i32) -> i32 {
    let input = codes::<T>(&vec![x.0; depth]);
    let weights = codes::<T>(&vec![w.0; depth]);
    let m = qm(2f64.powi(-24));
    assert_eq!(
        m,
        QuantizedMultiplier {
            m0: 1 << 30,
            shift: -23
        }
    );
    let bias = [bias];
    let stage = OutputStage {
        bias: Some(&bias),
        ..per_tensor(m, z_out, (T::MIN, T::MAX))
    };
    let mut out = [T::default()];
    fully_connected(&input, 1, depth, x.1, &weights, 1, &[w.1], &stage, &mut out);
    out[0].to_i32()
}

#[test]
fn accumulator_reaches_both_int32_extremes() {
    // docs/spec.md §4.4: int32 holds 33,025 products of 255^2: 33025 * 65025 = 2,147,450,625.
    // Positive: x = 255 - 0, w = 255 - 0 (u8) or x = 127 - (-128), w = 127 - (-128) (i8);
    // bias 33,022 brings acc to 2,147,483,647 = i32::MAX.
    //   SRDHM(MAX, 2^30) = floor(((2^31 - 1) * 2^30 + 2^30) / 2^31) = 2^30; RDBPOT(2^30, 23) = 128.
    assert_eq!(long_dot::<u8>(33_025, (255, 0), (255, 0), 33_022, 100), 228);
    assert_eq!(
        long_dot::<i8>(33_025, (127, -128), (127, -128), 33_022, -100),
        28
    );
    // Negative: w = 0 - 255 (u8, Z_w = 255) or -128 - 127 (i8, Z_w = 127); bias -33,023 brings
    // acc to -2^31 = i32::MIN.
    //   SRDHM(MIN, 2^30): (-2^61 + 1 - 2^30) / 2^31 truncates to -2^30; RDBPOT(-2^30, 23) = -128.
    assert_eq!(long_dot::<u8>(33_025, (255, 0), (0, 255), -33_023, 200), 72);
    assert_eq!(
        long_dot::<i8>(33_025, (127, -128), (-128, 127), -33_023, 127),
        -1
    );
}

#[test]
fn accumulator_wraps_like_int32() {
    // One product past that bound: 33026 * 65025 = 2,147,515,650 wraps (as TFLite's int32
    // adds do) to 2,147,515,650 - 2^32 = -2,147,451,646, instead of panicking or saturating.
    //   SRDHM(-2147451646, 2^30) = trunc(-1073725823 - (2^30 - 1) / 2^31) = -1073725823;
    //   RDBPOT(-1073725823, 23) = -127.998... rounded = -128; + Z_out.
    // A saturating accumulator would give +128 + Z_out instead.
    assert_eq!(long_dot::<u8>(33_026, (255, 0), (255, 0), 0, 255), 127);
    assert_eq!(long_dot::<i8>(33_026, (127, -128), (127, -128), 0, 127), -1);
}

fn one_by_one_conv_is_fully_connected<T: QElem>(seed: u64, enc: Encoding) {
    // A 1x1 conv is an FC over the batches * h * w pixels, the OHWI filter [out, 1, 1, in]
    // being the [out, depth] weight matrix: both must give identical codes.
    let mut rng = Rng::new(seed);
    for _ in 0..50 {
        let (batches, h, w) = (rng.size(1, 2), rng.size(1, 5), rng.size(1, 5));
        let (in_c, out_c) = (rng.size(1, 8), rng.size(1, 6));
        let pixels = batches * h * w;
        let ops = draw_operands::<T>(
            &mut rng,
            enc,
            Draw::Rounding,
            pixels * in_c,
            out_c * in_c,
            out_c,
            |i| i / in_c,
        );
        let model = fully_connected_f64(
            &ops.real_input(),
            pixels,
            in_c,
            &ops.real_weights(|i| i / in_c),
            out_c,
            &ops.real_bias(),
        );
        let rq = choose_requant::<T>(&mut rng, enc, Draw::Rounding, &ops, &model, out_c);
        let stage = stage_for(&ops.bias, &rq, ops.weight_params.len() == 1);
        let (input, weights) = (codes::<T>(&ops.input), codes::<T>(&ops.weights));
        let z_w = ops.weight_zero_points();
        let mut fc = vec![T::default(); pixels * out_c];
        fully_connected(
            &input,
            pixels,
            in_c,
            ops.input_params.zero_point,
            &weights,
            out_c,
            &z_w,
            &stage,
            &mut fc,
        );
        let params = geometry_params(Padding::Valid, (h, w), (1, 1), (1, 1), (1, 1)).1;
        let mut conv = vec![T::default(); pixels * out_c];
        conv2d(
            &input,
            [batches, h, w, in_c],
            ops.input_params.zero_point,
            &weights,
            [out_c, 1, 1, in_c],
            &z_w,
            &params,
            &stage,
            &mut conv,
            [batches, h, w, out_c],
        );
        assert_eq!(conv, fc);
    }
}

#[test]
fn one_by_one_conv_equals_fully_connected() {
    one_by_one_conv_is_fully_connected::<u8>(19, PAPER_U8);
    one_by_one_conv_is_fully_connected::<i8>(20, TFLITE_I8);
}

fn depthwise_is_diagonal_conv<T: QElem>(seed: u64, enc: Encoding) {
    // Depthwise with multiplier 1 is a conv whose filter is zero (in real terms: the code Z_w[o])
    // off the diagonal in (out, in): filter[o][y][x][i] = (i == o) ? dw[y][x][o] : Z_w[o].
    let mut rng = Rng::new(seed);
    for _ in 0..50 {
        let g = random_geometry(&mut rng);
        let c = rng.size(1, 5);
        let input_shape = [g.batches, g.in_h, g.in_w, c];
        let output_shape = [g.batches, g.out_h, g.out_w, c];
        let taps = g.kh * g.kw;
        let ops = draw_operands::<T>(
            &mut rng,
            enc,
            Draw::Rounding,
            input_shape.iter().product(),
            taps * c,
            c,
            |i| i % c,
        );
        let model = depthwise_f64(
            &ops.real_input(),
            c,
            &ops.real_weights(|i| i % c),
            1,
            &ops.real_bias(),
            &g,
        );
        let rq = choose_requant::<T>(&mut rng, enc, Draw::Rounding, &ops, &model, c);
        let stage = stage_for(&ops.bias, &rq, ops.weight_params.len() == 1);
        let input = codes::<T>(&ops.input);
        let z_w = ops.weight_zero_points();
        let mut depthwise = vec![T::default(); output_shape.iter().product()];
        depthwise_conv2d(
            &input,
            input_shape,
            ops.input_params.zero_point,
            &codes::<T>(&ops.weights),
            [1, g.kh, g.kw, c],
            &z_w,
            1,
            &g.params,
            &stage,
            &mut depthwise,
            output_shape,
        );
        let mut diagonal = Vec::with_capacity(c * taps * c);
        for o in 0..c {
            for t in 0..taps {
                for i in 0..c {
                    diagonal.push(if i == o {
                        ops.weights[t * c + o]
                    } else {
                        ops.weight_param(o).zero_point
                    });
                }
            }
        }
        let mut conv = vec![T::default(); output_shape.iter().product()];
        conv2d(
            &input,
            input_shape,
            ops.input_params.zero_point,
            &codes::<T>(&diagonal),
            [c, g.kh, g.kw, c],
            &z_w,
            &g.params,
            &stage,
            &mut conv,
            output_shape,
        );
        assert_eq!(depthwise, conv, "{g:?} channels {c}");
    }
}

#[test]
fn depthwise_multiplier_1_equals_diagonal_conv() {
    depthwise_is_diagonal_conv::<u8>(21, PAPER_U8);
    depthwise_is_diagonal_conv::<i8>(22, TFLITE_I8);
}

// Argument checks: bad shapes are caught with a message naming the problem.

#[test]
#[should_panic(expected = "zero points must number 1 (per tensor) or 2")]
fn conv_rejects_wrong_zero_point_count() {
    let params = geometry_params(Padding::Valid, (1, 1), (1, 1), (1, 1), (1, 1)).1;
    let stage = per_tensor(QuantizedMultiplier::ONE, 0, (0, 255));
    let mut out = [0u8; 2];
    conv2d(
        &[1u8],
        [1, 1, 1, 1],
        0,
        &[1u8, 2],
        [2, 1, 1, 1],
        &[0, 0, 0],
        &params,
        &stage,
        &mut out,
        [1, 1, 1, 2],
    );
}

#[test]
#[should_panic(expected = "filter input depth 2 != input depth 1")]
fn conv_rejects_mismatched_depth() {
    let params = geometry_params(Padding::Valid, (1, 1), (1, 1), (1, 1), (1, 1)).1;
    let stage = per_tensor(QuantizedMultiplier::ONE, 0, (0, 255));
    let mut out = [0u8; 1];
    conv2d(
        &[1u8],
        [1, 1, 1, 1],
        0,
        &[1u8, 2],
        [1, 1, 1, 2],
        &[0],
        &params,
        &stage,
        &mut out,
        [1, 1, 1, 1],
    );
}

#[test]
#[should_panic(expected = "filter depth 3 != input depth 2 * depth_multiplier 2")]
fn depthwise_rejects_wrong_filter_depth() {
    let params = geometry_params(Padding::Valid, (1, 1), (1, 1), (1, 1), (1, 1)).1;
    let stage = per_tensor(QuantizedMultiplier::ONE, 0, (-128, 127));
    let mut out = [0i8; 3];
    depthwise_conv2d(
        &[1i8, 2],
        [1, 1, 1, 2],
        0,
        &[1i8, 2, 3],
        [1, 1, 1, 3],
        &[0],
        2,
        &params,
        &stage,
        &mut out,
        [1, 1, 1, 3],
    );
}

#[test]
#[should_panic(expected = "bias has 1 entries for 2 output channels")]
fn fully_connected_rejects_short_bias() {
    let bias = [0];
    let stage = OutputStage {
        bias: Some(&bias),
        ..per_tensor(QuantizedMultiplier::ONE, 0, (0, 255))
    };
    let mut out = [0u8; 2];
    fully_connected(
        &[1u8, 2],
        1,
        2,
        0,
        &[1u8, 2, 3, 4],
        2,
        &[0],
        &stage,
        &mut out,
    );
}

#[test]
#[should_panic(expected = "weights hold 3 codes, expected out 2 * depth 2")]
fn fully_connected_rejects_short_weights() {
    let stage = per_tensor(QuantizedMultiplier::ONE, 0, (0, 255));
    let mut out = [0u8; 2];
    fully_connected(&[1u8, 2], 1, 2, 0, &[1u8, 2, 3], 2, &[0], &stage, &mut out);
}
