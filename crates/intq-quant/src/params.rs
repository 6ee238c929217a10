//! Quantization parameters `(S, Z)` of one tensor or of each channel, and the edge conversions
//! between reals and codes.

use crate::QuantError;

/// Per-tensor affine parameters: `r = scale * (q - zero_point)`.
///
/// `scale` is f32 because that is what `.tflite` and `.intq` files store; multipliers derived
/// from it are computed in f64, as TFLite does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    pub scale: f32,
    pub zero_point: i32,
}

impl QuantParams {
    /// Checked constructor: the scale must be positive and finite.
    pub fn new(scale: f32, zero_point: i32) -> Result<Self, QuantError> {
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(QuantError::BadScale(scale as f64));
        }
        Ok(QuantParams { scale, zero_point })
    }

    /// Real to code as TFLite's reference Quantize: `clamp(round(x / S) + Z, qmin, qmax)`, the
    /// division in f32 and `round` half away from zero. NaN maps to `Z`.
    pub fn quantize(self, x: f32, qmin: i32, qmax: i32) -> i32 {
        round_half_away_saturating(x / self.scale)
            .saturating_add(self.zero_point)
            .clamp(qmin, qmax)
    }

    /// Code to real as TFLite's reference Dequantize: `S * (q - Z)` in f64, then rounded to f32.
    pub fn dequantize(self, q: i32) -> f32 {
        (self.scale as f64 * (q as i64 - self.zero_point as i64) as f64) as f32
    }
}

/// `v.round() as i32` (half away from zero; saturating; NaN to 0) without `round`, which is a
/// libm call on baseline x86-64 and dominated a model's input Quantize. `t = trunc(v)` is one
/// saturating conversion; `v - t` is exact (Sterbenz, or `v` already integral), so the tie test
/// is exact too.
#[inline]
fn round_half_away_saturating(v: f32) -> i32 {
    let t = v as i32;
    let frac = v - t as f32;
    if frac >= 0.5 {
        t.saturating_add(1)
    } else if frac <= -0.5 {
        t.saturating_sub(1)
    } else {
        t
    }
}

/// Per-channel affine parameters along one axis of a tensor (the output-channel axis of conv
/// weights, the last axis of depthwise weights).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelParams {
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    axis: usize,
}

impl ChannelParams {
    pub fn new(scales: Vec<f32>, zero_points: Vec<i32>, axis: usize) -> Result<Self, QuantError> {
        if scales.len() != zero_points.len() || scales.is_empty() {
            return Err(QuantError::ChannelMismatch {
                scales: scales.len(),
                zero_points: zero_points.len(),
            });
        }
        if let Some(&s) = scales.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
            return Err(QuantError::BadScale(s as f64));
        }
        Ok(ChannelParams {
            scales,
            zero_points,
            axis,
        })
    }

    pub fn scales(&self) -> &[f32] {
        &self.scales
    }
    pub fn zero_points(&self) -> &[i32] {
        &self.zero_points
    }
    pub fn axis(&self) -> usize {
        self.axis
    }
    pub fn len(&self) -> usize {
        self.scales.len()
    }
    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }
    /// The parameters of channel `c`.
    pub fn channel(&self, c: usize) -> QuantParams {
        QuantParams {
            scale: self.scales[c],
            zero_point: self.zero_points[c],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal to `round() as i32` on a sweep of every 251st f32 bit pattern (both signs, all
    /// exponents, NaNs and infinities) plus the ties and their neighbours near the edges.
    #[test]
    fn round_half_away_equals_round_then_saturating_cast() {
        let mut values: Vec<f32> = (0..=u32::MAX / 251)
            .map(|i| f32::from_bits(i * 251))
            .collect();
        for k in [
            0.0f32,
            1.0,
            2.0,
            127.0,
            8_388_607.0,
            16_777_215.0,
            2_147_483_520.0,
        ] {
            for v in [k + 0.5, k - 0.5, k + 0.25, k] {
                for w in [
                    v,
                    f32::from_bits(v.to_bits() + 1),
                    f32::from_bits(v.to_bits().max(1) - 1),
                ] {
                    values.extend([w, -w]);
                }
            }
        }
        values.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            2.1e9,
            -2.2e9,
            4.0e9,
        ]);
        for v in values {
            assert_eq!(
                round_half_away_saturating(v),
                v.round() as i32,
                "{v:e} ({:#x})",
                v.to_bits()
            );
        }
    }

    #[test]
    fn quantize_rounds_half_away_and_clamps() {
        let p = QuantParams::new(0.5, 10).unwrap();
        assert_eq!(p.quantize(0.25, 0, 255), 11); // 0.5 -> 1
        assert_eq!(p.quantize(-0.25, 0, 255), 9); // -0.5 -> -1
        assert_eq!(p.quantize(1e9, 0, 255), 255);
        assert_eq!(p.quantize(-1e9, 0, 255), 0);
        assert_eq!(p.quantize(f32::NAN, 0, 255), 10);
        assert_eq!(p.quantize(f32::INFINITY, -128, 127), 127);
        assert_eq!(p.dequantize(14), 2.0);
        assert_eq!(p.dequantize(10), 0.0);
    }

    #[test]
    fn round_trip_of_codes() {
        let p = QuantParams::new(0.0123, -7).unwrap();
        for q in -128..=127 {
            assert_eq!(p.quantize(p.dequantize(q), -128, 127), q);
        }
    }

    #[test]
    fn checked_constructors() {
        assert!(QuantParams::new(0.0, 0).is_err());
        assert!(QuantParams::new(-1.0, 0).is_err());
        assert!(QuantParams::new(f32::NAN, 0).is_err());
        assert!(ChannelParams::new(vec![1.0], vec![0, 0], 0).is_err());
        assert!(ChannelParams::new(vec![], vec![], 0).is_err());
        assert!(ChannelParams::new(vec![1.0, 0.0], vec![0, 0], 0).is_err());
        let c = ChannelParams::new(vec![1.0, 2.0], vec![0, 3], 3).unwrap();
        assert_eq!(
            c.channel(1),
            QuantParams {
                scale: 2.0,
                zero_point: 3
            }
        );
    }
}
