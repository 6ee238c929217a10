//! Reference standalone activations for 8-bit codes as TFLite computes them (docs/spec.md §11.3
//! to §11.6, §11.12): RELU / RELU6 / RELU_N1_TO_1 requantize then clamp (`ReluX`), LEAKY_RELU and
//! PRELU pick one of two multipliers by the sign of `q - Z_in` (`QuantizeLeakyRelu`,
//! `BroadcastPrelu4DSlow`), HARD_SWISH is TFLite's int16
//! fixed-point routine (`reference_ops::HardSwish`), and TANH looks codes up in a 256-entry table
//! built in f32 (`LUTPopulate` with `std::tanh`), as LOGISTIC's TFLite-exact variant does.

use super::LogisticTable;
use crate::QElem;
use intq_quant::{QuantError, QuantParams, QuantizedMultiplier};

/// Requantize-and-clamp parameters of RELU, RELU6 and RELU_N1_TO_1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReluParams {
    pub input_zero_point: i32,
    pub output_zero_point: i32,
    /// `QuantizeMultiplier(S_in / S_out)`, the quotient rounded in f32 (TFLite's `ReluPrepare`).
    pub multiplier: QuantizedMultiplier,
    pub clamp_min: i32,
    pub clamp_max: i32,
}

impl ReluParams {
    /// `clamp` is the activation's bounds in output codes (the caller's
    /// `CalculateActivationRange`-style clamp, intersected with the type's codes).
    pub fn new(
        input: QuantParams,
        output: QuantParams,
        clamp: (i32, i32),
    ) -> Result<Self, QuantError> {
        Ok(ReluParams {
            input_zero_point: input.zero_point,
            output_zero_point: output.zero_point,
            multiplier: QuantizedMultiplier::from_real((input.scale / output.scale) as f64)?,
            clamp_min: clamp.0,
            clamp_max: clamp.1,
        })
    }
}

/// `clamp(Z_out + M (q - Z_in))` per element (TFLite's `reference_ops::ReluX`).
pub fn relu_x<T: QElem>(input: &[T], params: &ReluParams, output: &mut [T]) {
    assert_eq!(input.len(), output.len(), "relu keeps the shape");
    for (o, &q) in output.iter_mut().zip(input) {
        let v = params.output_zero_point.wrapping_add(
            params
                .multiplier
                .apply(q.to_i32() - params.input_zero_point),
        );
        *o = T::from_i32_saturating(v.clamp(params.clamp_min, params.clamp_max));
    }
}

/// LEAKY_RELU's two multipliers, `S_in / S_out` and `S_in * alpha / S_out` (each formed in f32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakyReluParams {
    pub input_zero_point: i32,
    pub output_zero_point: i32,
    pub identity: QuantizedMultiplier,
    pub alpha: QuantizedMultiplier,
}

impl LeakyReluParams {
    /// `alpha` must be finite and non-negative (a negative alpha gives TFLite a negative
    /// fixed-point multiplier, which its kernels did not always handle alike).
    pub fn new(input: QuantParams, output: QuantParams, alpha: f32) -> Result<Self, QuantError> {
        if !(alpha >= 0.0 && alpha.is_finite()) {
            return Err(QuantError::MultiplierOutOfRange(alpha as f64));
        }
        Ok(LeakyReluParams {
            input_zero_point: input.zero_point,
            output_zero_point: output.zero_point,
            identity: QuantizedMultiplier::from_real((input.scale / output.scale) as f64)?,
            alpha: QuantizedMultiplier::from_real((input.scale * alpha / output.scale) as f64)?,
        })
    }
}

/// `Z_out + M_id x` for `x = q - Z_in >= 0`, else `Z_out + M_alpha x`, clamped to the type.
pub fn leaky_relu<T: QElem>(input: &[T], params: &LeakyReluParams, output: &mut [T]) {
    assert_eq!(input.len(), output.len(), "leaky relu keeps the shape");
    for (o, &q) in output.iter_mut().zip(input) {
        let x = q.to_i32() - params.input_zero_point;
        let m = if x >= 0 {
            params.identity
        } else {
            params.alpha
        };
        *o = T::from_i32_saturating(params.output_zero_point.wrapping_add(m.apply(x)));
    }
}

/// PRELU's two multipliers, `S_in / S_out` and `S_in * S_alpha / S_out` (each formed in f32,
/// TFLite's `PreluPrepare`), and the three zero points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreluParams {
    pub input_zero_point: i32,
    pub alpha_zero_point: i32,
    pub output_zero_point: i32,
    pub identity: QuantizedMultiplier,
    pub alpha: QuantizedMultiplier,
}

impl PreluParams {
    pub fn new(
        input: QuantParams,
        alpha: QuantParams,
        output: QuantParams,
    ) -> Result<Self, QuantError> {
        Ok(PreluParams {
            input_zero_point: input.zero_point,
            alpha_zero_point: alpha.zero_point,
            output_zero_point: output.zero_point,
            identity: QuantizedMultiplier::from_real((input.scale / output.scale) as f64)?,
            alpha: QuantizedMultiplier::from_real(
                (input.scale * alpha.scale / output.scale) as f64,
            )?,
        })
    }

    /// The output code of input code `q` with alpha code `a`, before the type's clamp.
    #[inline]
    pub fn apply(&self, q: i32, a: i32) -> i32 {
        let x = q - self.input_zero_point;
        let v = if x >= 0 {
            self.identity.apply(x)
        } else {
            self.alpha.apply(x * (a - self.alpha_zero_point))
        };
        v.wrapping_add(self.output_zero_point)
    }
}

/// PRELU: `alpha` (of `alpha_shape`) broadcasts NumPy-style onto `input`'s shape, which is the
/// output's.
pub fn prelu<T: QElem>(
    input: &[T],
    input_shape: &[usize],
    alpha: &[T],
    alpha_shape: &[usize],
    params: &PreluParams,
    output: &mut [T],
) {
    let rank = input_shape.len();
    assert!(alpha_shape.len() <= rank, "prelu: alpha of higher rank");
    let offset = rank - alpha_shape.len();
    for (k, &d) in alpha_shape.iter().enumerate() {
        assert!(
            d == 1 || d == input_shape[k + offset],
            "prelu: alpha does not broadcast"
        );
    }
    assert_eq!(input.len(), output.len(), "prelu keeps the shape");
    // Alpha's flat index for each input index: its own strides, 0 along broadcast axes.
    let mut astride = vec![0usize; rank];
    let mut s = 1;
    for k in (0..alpha_shape.len()).rev() {
        if alpha_shape[k] != 1 {
            astride[k + offset] = s;
        }
        s *= alpha_shape[k];
    }
    for (i, (o, &q)) in output.iter_mut().zip(input).enumerate() {
        let (mut rest, mut ai) = (i, 0);
        for d in (0..rank).rev() {
            ai += (rest % input_shape[d]) * astride[d];
            rest /= input_shape[d];
        }
        *o = T::from_i32_saturating(params.apply(q.to_i32(), alpha[ai].to_i32()));
    }
}

/// TFLite's `HardSwishParams`: two int16 fixed-point multipliers with their exponents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardSwishParams {
    pub input_zero_point: i32,
    pub output_zero_point: i32,
    pub output_multiplier: i16,
    pub output_exponent: i32,
    pub reluish_multiplier: i16,
    pub reluish_exponent: i32,
}

/// TFLite's `DownScaleInt32ToInt16Multiplier`: round a Q31 mantissa to Q15.
fn down_scale_to_i16(m: i32) -> i16 {
    const ROUNDING: i32 = 1 << 15;
    if m >= i32::MAX - ROUNDING {
        i16::MAX
    } else {
        ((m + ROUNDING) >> 16) as i16
    }
}

impl HardSwishParams {
    /// TFLite's `HardSwishPrepare`, in f32 as it is written there: the input on a "hires" scale
    /// `S_in / 128`, the output multiplier `hires / S_out` (its exponent must be <= 0, else
    /// TFLite refuses the model) and the "reluish" multiplier `hires / (3 / 32768)`.
    pub fn new(input: QuantParams, output: QuantParams) -> Result<Self, QuantError> {
        let hires_input_scale = (1.0f32 / 128.0) * input.scale;
        let reluish_scale = 3.0f32 / 32768.0;
        let out = QuantizedMultiplier::from_real((hires_input_scale / output.scale) as f64)?;
        if out.shift > 0 {
            return Err(QuantError::MultiplierOutOfRange(
                (hires_input_scale / output.scale) as f64,
            ));
        }
        let reluish = QuantizedMultiplier::from_real((hires_input_scale / reluish_scale) as f64)?;
        Ok(HardSwishParams {
            input_zero_point: input.zero_point,
            output_zero_point: output.zero_point,
            output_multiplier: down_scale_to_i16(out.m0),
            output_exponent: out.shift,
            reluish_multiplier: down_scale_to_i16(reluish.m0),
            reluish_exponent: reluish.shift,
        })
    }
}

/// gemmlowp's `SaturatingRoundingDoublingHighMul` on int16: `a b / 2^15` rounded to nearest,
/// ties toward +infinity, `MIN * MIN` saturating to `MAX`.
fn srdhm16(a: i16, b: i16) -> i16 {
    if a == i16::MIN && b == i16::MIN {
        return i16::MAX;
    }
    let ab = a as i32 * b as i32;
    let nudge = if ab >= 0 { 1 << 14 } else { 1 - (1 << 14) };
    ((ab + nudge) / (1 << 15)) as i16
}

/// gemmlowp's `RoundingDivideByPOT` instantiated for int16, with C++'s conversions kept: the
/// mask is `(1 << exponent) - 1` truncated to int16, and every result narrows to int16.
fn rdbp16(x: i16, exponent: i32) -> i16 {
    let mask = ((1i64 << exponent) - 1) as i16;
    let remainder = x & mask;
    let threshold = ((mask >> 1) as i32 + (x < 0) as i32) as i16;
    let shifted = if exponent >= 16 {
        if x < 0 {
            -1
        } else {
            0
        }
    } else {
        x >> exponent
    };
    (shifted as i32 + (remainder > threshold) as i32) as i16
}

/// TFLite's `SaturatingLeftShift`: `value * 2^amount` saturated to int16.
fn saturating_left_shift16(value: i16, amount: i32) -> i16 {
    (value as i64 * (1i64 << amount)).clamp(i16::MIN as i64, i16::MAX as i64) as i16
}

/// TFLite's `SaturatingDoublingHighMul` on int16: like [`srdhm16`] but truncating.
fn sdhm16(a: i16, b: i16) -> i16 {
    if a == i16::MIN && b == i16::MIN {
        return i16::MAX;
    }
    ((a as i32 * b as i32) / (1 << 15)) as i16
}

/// One code of TFLite's quantized HARD_SWISH (`reference_ops::HardSwish`), every intermediate
/// an int16 as there.
pub fn hard_swish_code(q: i32, p: &HardSwishParams, qmin: i32, qmax: i32) -> i32 {
    let input_value = (q - p.input_zero_point) as i16;
    let hires = (input_value as i32 * (1 << 7)) as i16;
    let preshift_output = srdhm16(hires, p.output_multiplier);
    let mut reluish = hires;
    if p.reluish_exponent > 0 {
        reluish = saturating_left_shift16(reluish, p.reluish_exponent - 1);
    }
    reluish = srdhm16(reluish, p.reluish_multiplier);
    if p.reluish_exponent > 0 {
        reluish = saturating_left_shift16(reluish, 1);
    }
    if p.reluish_exponent < 0 {
        reluish = rdbp16(reluish, -p.reluish_exponent);
    }
    reluish = ((reluish as i32 + (1 << 15)) >> 1) as i16;
    let preshift = sdhm16(reluish, preshift_output);
    let out = rdbp16(preshift, -p.output_exponent);
    let out = (out as i32 + p.output_zero_point) as i16;
    (out as i32).clamp(qmin, qmax)
}

/// Quantized HARD_SWISH, `x * relu6(x + 3) / 6` on codes.
pub fn hard_swish<T: QElem>(input: &[T], params: &HardSwishParams, output: &mut [T]) {
    assert_eq!(input.len(), output.len(), "hard swish keeps the shape");
    for (o, &q) in output.iter_mut().zip(input) {
        *o = T::from_i32_saturating(hard_swish_code(q.to_i32(), params, T::MIN, T::MAX));
    }
}

/// TFLite's `LUTPopulate` for an 8-bit type: for every code, dequantize in f32, apply `f`, and
/// requantize with `round(f(x) * (1 / S_out)) + Z_out` (round half away from zero, truncating
/// conversion, clamped to the type).
pub fn tflite_lut<T: QElem>(
    input: QuantParams,
    output: QuantParams,
    f: impl Fn(f32) -> f32,
) -> LogisticTable<T> {
    let inverse_scale = 1.0f32 / output.scale;
    let table = (T::MIN..=T::MAX)
        .map(|val| {
            let dequantized = input.scale * (val.wrapping_sub(input.zero_point)) as f32;
            let rescaled = (f(dequantized) * inverse_scale).round();
            // C++'s float-to-int conversion truncates; `as` does too (and saturates).
            let quantized = (rescaled + output.zero_point as f32) as i32;
            T::from_i32_saturating(quantized.clamp(T::MIN, T::MAX))
        })
        .collect();
    LogisticTable { table }
}

/// TANH's table: [`tflite_lut`] with the C library's f32 `tanh`, as TFLite's `TanhPrepare`.
pub fn tflite_tanh_table<T: QElem>(input: QuantParams, output: QuantParams) -> LogisticTable<T> {
    tflite_lut(input, output, f32::tanh)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(scale: f32, zero_point: i32) -> QuantParams {
        QuantParams { scale, zero_point }
    }

    #[test]
    fn int16_primitives_follow_gemmlowp() {
        assert_eq!(srdhm16(i16::MIN, i16::MIN), i16::MAX);
        assert_eq!(srdhm16(16384, 16384), 8192); // 0.5 * 0.5
        assert_eq!(srdhm16(-1, 16384), 0); // -0.5 ulp rounds toward +inf
        assert_eq!(sdhm16(-1, 16384), 0);
        assert_eq!(sdhm16(-3, 16384), -1); // -1.5 truncates to -1
        assert_eq!(rdbp16(5, 1), 3); // 2.5 away from zero
        assert_eq!(rdbp16(-5, 1), -3);
        assert_eq!(rdbp16(-4, 2), -1);
        assert_eq!(saturating_left_shift16(20000, 1), i16::MAX);
        assert_eq!(saturating_left_shift16(-20000, 2), i16::MIN);
        assert_eq!(down_scale_to_i16(1 << 30), 1 << 14);
        assert_eq!(down_scale_to_i16(i32::MAX), i16::MAX);
    }

    /// Against the real function: hard swish of every code within two output steps.
    #[test]
    fn hard_swish_tracks_the_real_function() {
        for (input, output) in [
            (p(0.05, 128), p(0.04, 30)),
            (p(0.1, 0), p(0.02, 10)),
            (p(0.5, 200), p(0.5, 10)),
        ] {
            let params = HardSwishParams::new(input, output).unwrap();
            for q in 0..=255 {
                let x = input.scale * (q - input.zero_point) as f32;
                let y = x * (x + 3.0).clamp(0.0, 6.0) / 6.0;
                let exact = (output.zero_point as f32 + y / output.scale).clamp(0.0, 255.0);
                let got = hard_swish_code(q, &params, 0, 255) as f32;
                assert!(
                    (got - exact).abs() <= 2.0,
                    "{input:?} {output:?} q={q}: {got} vs {exact}"
                );
            }
        }
        // An output scale below S_in / 128 needs a left shift, which TFLite refuses.
        assert!(HardSwishParams::new(p(1.0, 0), p(1.0 / 512.0, 0)).is_err());
    }

    #[test]
    fn prelu_broadcasts_per_channel_slopes() {
        // Equal scales, alpha S = 0.25, Z = 0: slopes 0.5 (code 2) and -1 (code -4) per channel.
        let p = PreluParams::new(p(1.0, 0), p(0.25, 0), p(1.0, 0)).unwrap();
        let mut out = [0i8; 4];
        prelu(
            &[-8i8, -8, 6, -100],
            &[2, 2],
            &[2i8, -4],
            &[2],
            &p,
            &mut out,
        );
        assert_eq!(out, [-4, 8, 6, 100]);
        // The type clamps: -128 * -1 = 128 -> 127.
        prelu(&[-128i8, 0, 0, 0], &[2, 2], &[-4i8, -4], &[2], &p, &mut out);
        assert_eq!(out[0], 127);
    }

    #[test]
    fn relu_leaky_and_tanh_hand_cases() {
        // Same scale: RELU6 of int8 with S = 0.1, Z = -10 clamps to [Z, Z + 60].
        let r = ReluParams::new(p(0.1, -10), p(0.1, -10), (-10, 50)).unwrap();
        let mut out = [0i8; 4];
        relu_x(&[-128i8, -10, 40, 127], &r, &mut out);
        assert_eq!(out, [-10, -10, 40, 50]);
        // Leaky: alpha 0.25 at equal scales: x = -8 -> -2, x = 8 -> 8.
        let l = LeakyReluParams::new(p(1.0, 0), p(1.0, 0), 0.25).unwrap();
        let mut out = [0i8; 3];
        leaky_relu(&[-8i8, 8, -128], &l, &mut out);
        assert_eq!(out, [-2, 8, -32]);
        assert!(LeakyReluParams::new(p(1.0, 0), p(1.0, 0), -0.5).is_err());
        // Tanh with the usual output (1/128, Z = 0 for int8): tanh(0) = 0, saturates at 127.
        let t = tflite_tanh_table::<i8>(p(0.05, 0), p(1.0 / 128.0, 0));
        assert_eq!(t.table[128], 0);
        assert_eq!(t.table[255], 127);
        assert_eq!(t.table[0], -128);
        assert!(t.table.windows(2).all(|w| w[0] <= w[1]));
    }
}
