//! Integer encodings (bit width, signedness, narrow range, symmetry) and choosing `(S, Z)` from a
//! real range with nudging (docs/spec.md §1.3), plus the fake-quantization that training applies
//! (docs/spec.md §2.1).

use crate::{ChannelParams, QuantError, QuantParams};

/// An integer encoding: which integers a quantized value may take and how `Z` is chosen.
///
/// `qmin = narrow ? 1 : 0`, `qmax = 2^bits - 1`, both shifted by `-2^(bits-1)` when signed.
/// Symmetric schemes fix `Z = 0` and use the narrow limits `±(2^(bits-1) - 1)` for the scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QScheme {
    bits: u8,
    signed: bool,
    narrow: bool,
    symmetric: bool,
}

/// A real interval `[min, max]`: after nudging, exactly the values fake quantization reproduces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

impl QScheme {
    /// A scheme of `bits` in `2..=8`. Symmetric schemes must be signed.
    pub fn new(bits: u8, signed: bool, narrow: bool, symmetric: bool) -> Result<Self, QuantError> {
        if !(2..=8).contains(&bits) {
            return Err(QuantError::BadBitWidth(bits));
        }
        if symmetric && !signed {
            return Err(QuantError::SymmetricUnsigned);
        }
        Ok(QScheme {
            bits,
            signed,
            narrow,
            symmetric,
        })
    }

    /// The paper's activations: uint8 in [0, 255], asymmetric.
    pub const UINT8: QScheme = QScheme {
        bits: 8,
        signed: false,
        narrow: false,
        symmetric: false,
    };
    /// The paper's weights: uint8 in the narrow range [1, 255], asymmetric.
    pub const UINT8_NARROW: QScheme = QScheme {
        bits: 8,
        signed: false,
        narrow: true,
        symmetric: false,
    };
    /// TFLite's int8 activations: [-128, 127], asymmetric.
    pub const INT8: QScheme = QScheme {
        bits: 8,
        signed: true,
        narrow: false,
        symmetric: false,
    };
    /// TFLite's int8 weights: [-127, 127], `Z = 0`.
    pub const INT8_SYMMETRIC: QScheme = QScheme {
        bits: 8,
        signed: true,
        narrow: true,
        symmetric: true,
    };

    pub fn bits(self) -> u8 {
        self.bits
    }
    pub fn is_signed(self) -> bool {
        self.signed
    }
    pub fn is_narrow(self) -> bool {
        self.narrow
    }
    pub fn is_symmetric(self) -> bool {
        self.symmetric
    }

    /// Smallest integer code.
    pub fn qmin(self) -> i32 {
        let base = if self.narrow || self.symmetric { 1 } else { 0 };
        base - self.offset()
    }

    /// Largest integer code.
    pub fn qmax(self) -> i32 {
        (1i32 << self.bits) - 1 - self.offset()
    }

    fn offset(self) -> i32 {
        if self.signed {
            1 << (self.bits - 1)
        } else {
            0
        }
    }

    /// `(S, Z)` for the real range `[min, max]`, nudged so that 0.0 is exactly `Z` (docs/spec.md
    /// §1.3).
    ///
    /// Computed in f32, step for step as TensorFlow's `Nudge` in FakeQuantWithMinMaxVars, so the
    /// scale training uses is the scale the integer model stores. The range is first widened to
    /// contain 0; an empty range (all zeros) gets `S = 1`.
    pub fn choose_params(self, min: f32, max: f32) -> Result<QuantParams, QuantError> {
        if !min.is_finite() {
            return Err(QuantError::NonFinite {
                what: "range minimum",
                value: min as f64,
            });
        }
        if !max.is_finite() {
            return Err(QuantError::NonFinite {
                what: "range maximum",
                value: max as f64,
            });
        }
        if min > max {
            return Err(QuantError::InvertedRange {
                min: min as f64,
                max: max as f64,
            });
        }
        let a = min.min(0.0);
        let b = max.max(0.0);
        let (qmin, qmax) = (self.qmin(), self.qmax());
        let zero_code = if self.symmetric { 0 } else { qmin };
        if self.symmetric {
            let scale = a.abs().max(b.abs()) / qmax as f32;
            if scale <= 0.0 || scale.is_nan() {
                return Ok(QuantParams {
                    scale: 1.0,
                    zero_point: zero_code,
                });
            }
            return Ok(QuantParams {
                scale,
                zero_point: 0,
            });
        }
        let scale = (b - a) / (qmax - qmin) as f32;
        // A range so small its scale underflows (or exactly [0, 0]) holds only zeros.
        if scale <= 0.0 || !scale.is_finite() {
            if !scale.is_finite() {
                return Err(QuantError::BadScale(scale as f64));
            }
            return Ok(QuantParams {
                scale: 1.0,
                zero_point: zero_code,
            });
        }
        let zero_point_from_min = qmin as f32 - a / scale;
        let zero_point = if zero_point_from_min < qmin as f32 {
            qmin
        } else if zero_point_from_min > qmax as f32 {
            qmax
        } else {
            zero_point_from_min.round() as i32
        };
        Ok(QuantParams { scale, zero_point })
    }

    /// Per-channel `(S, Z)`, one [`QScheme::choose_params`] per `(mins[c], maxs[c])`.
    pub fn choose_channel_params(
        self,
        mins: &[f32],
        maxs: &[f32],
        axis: usize,
    ) -> Result<ChannelParams, QuantError> {
        if mins.len() != maxs.len() || mins.is_empty() {
            return Err(QuantError::ChannelMismatch {
                scales: mins.len(),
                zero_points: maxs.len(),
            });
        }
        let mut scales = Vec::with_capacity(mins.len());
        let mut zero_points = Vec::with_capacity(mins.len());
        for (&lo, &hi) in mins.iter().zip(maxs) {
            let p = self.choose_params(lo, hi)?;
            scales.push(p.scale);
            zero_points.push(p.zero_point);
        }
        ChannelParams::new(scales, zero_points, axis)
    }

    /// The nudged range `[(qmin - Z) S, (qmax - Z) S]` of `params` under this scheme: what fake
    /// quantization clamps to.
    pub fn nudged_range(self, params: QuantParams) -> Range {
        Range {
            min: (self.qmin() - params.zero_point) as f32 * params.scale,
            max: (self.qmax() - params.zero_point) as f32 * params.scale,
        }
    }

    /// docs/spec.md §2.1's forward fake quantization: clamp to the nudged range, snap to the grid
    /// with round-half-up, map back to reals. The value is always one of the engine's dequantized
    /// codes.
    pub fn fake_quant(self, params: QuantParams, x: f32) -> f32 {
        let r = self.nudged_range(params);
        let clamped = x.clamp(r.min, r.max);
        let q = ((clamped - r.min) / params.scale + 0.5).floor();
        q * params.scale + r.min
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_schemes() -> Vec<QScheme> {
        let mut v = Vec::new();
        for bits in 2..=8 {
            for signed in [false, true] {
                for narrow in [false, true] {
                    for symmetric in [false, true] {
                        if let Ok(s) = QScheme::new(bits, signed, narrow, symmetric) {
                            v.push(s);
                        }
                    }
                }
            }
        }
        v
    }

    #[test]
    fn limits() {
        assert_eq!((QScheme::UINT8.qmin(), QScheme::UINT8.qmax()), (0, 255));
        assert_eq!(
            (QScheme::UINT8_NARROW.qmin(), QScheme::UINT8_NARROW.qmax()),
            (1, 255)
        );
        assert_eq!((QScheme::INT8.qmin(), QScheme::INT8.qmax()), (-128, 127));
        assert_eq!(
            (
                QScheme::INT8_SYMMETRIC.qmin(),
                QScheme::INT8_SYMMETRIC.qmax()
            ),
            (-127, 127)
        );
        let s4 = QScheme::new(4, true, false, false).unwrap();
        assert_eq!((s4.qmin(), s4.qmax()), (-8, 7));
        let u2 = QScheme::new(2, false, true, false).unwrap();
        assert_eq!((u2.qmin(), u2.qmax()), (1, 3));
        assert_eq!(
            QScheme::new(1, false, false, false),
            Err(QuantError::BadBitWidth(1))
        );
        assert_eq!(
            QScheme::new(9, false, false, false),
            Err(QuantError::BadBitWidth(9))
        );
        assert_eq!(
            QScheme::new(8, false, false, true),
            Err(QuantError::SymmetricUnsigned)
        );
    }

    #[test]
    fn hand_computed_uint8() {
        // [-1, 1]: S = 2/255 and Z = round(1/S); in exact arithmetic 1/S = 127.5, but f32's
        // 2/255 is slightly large, so 1/S lands just below 127.5 and Z = 127, as in TensorFlow.
        let p = QScheme::UINT8.choose_params(-1.0, 1.0).unwrap();
        assert_eq!(p.scale, 2.0f32 / 255.0);
        assert_eq!(p.zero_point, 127);
        // [-1, 3]: 1/S = 63.75 exactly enough to round to 64.
        let p = QScheme::UINT8.choose_params(-1.0, 3.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (4.0f32 / 255.0, 64));
        // [0, 6] (ReLU6): Z = 0, S = 6/255.
        let p = QScheme::UINT8.choose_params(0.0, 6.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (6.0f32 / 255.0, 0));
        // A range not containing zero is widened to contain it: [2, 5] -> [0, 5].
        let p = QScheme::UINT8.choose_params(2.0, 5.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (5.0f32 / 255.0, 0));
        let p = QScheme::INT8.choose_params(-5.0, -2.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (5.0f32 / 255.0, 127));
    }

    #[test]
    fn hand_computed_symmetric() {
        let p = QScheme::INT8_SYMMETRIC.choose_params(-0.5, 1.27).unwrap();
        assert_eq!((p.scale, p.zero_point), (1.27f32 / 127.0, 0));
    }

    #[test]
    fn all_zero_range() {
        let p = QScheme::UINT8.choose_params(0.0, 0.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (1.0, 0));
        let p = QScheme::INT8.choose_params(0.0, 0.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (1.0, -128));
        let p = QScheme::INT8_SYMMETRIC.choose_params(0.0, 0.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (1.0, 0));
    }

    #[test]
    fn bad_ranges() {
        assert!(matches!(
            QScheme::UINT8.choose_params(1.0, -1.0),
            Err(QuantError::InvertedRange { .. })
        ));
        assert!(matches!(
            QScheme::UINT8.choose_params(f32::NAN, 1.0),
            Err(QuantError::NonFinite { .. })
        ));
        assert!(matches!(
            QScheme::UINT8.choose_params(0.0, f32::INFINITY),
            Err(QuantError::NonFinite { .. })
        ));
        assert!(QScheme::UINT8.choose_params(-f32::MAX, f32::MAX).is_err());
    }

    fn zero_is_exact(s: QScheme, lo: f32, hi: f32) -> Result<(), TestCaseError> {
        let p = s.choose_params(lo, hi).unwrap();
        prop_assert!(p.scale > 0.0);
        prop_assert!(p.zero_point >= s.qmin() && p.zero_point <= s.qmax());
        let r = s.nudged_range(p);
        prop_assert!(r.min <= 0.0 && r.max >= 0.0, "{:?} {:?}", s, r);
        // 0.0 survives fake quantization and quantizes to Z exactly.
        prop_assert_eq!(
            s.fake_quant(p, 0.0),
            0.0,
            "{:?} [{}, {}] {:?}",
            s,
            lo,
            hi,
            p
        );
        prop_assert_eq!(p.quantize(0.0, s.qmin(), s.qmax()), p.zero_point);
        prop_assert_eq!(p.dequantize(p.zero_point), 0.0);
        Ok(())
    }

    #[test]
    fn zero_exact_on_edge_ranges() {
        let edges = [
            0.0f32, 1e-30, 1e-7, 0.1, 0.5, 1.0, 1.5, 2.0, 6.0, 127.5, 255.0, 1e6, 1e30,
        ];
        for s in all_schemes() {
            for &lo in &edges {
                for &hi in &edges {
                    zero_is_exact(s, -lo, hi).unwrap();
                    zero_is_exact(s, lo, lo + hi).unwrap(); // ranges entirely >= 0
                    zero_is_exact(s, -lo - hi, -lo).unwrap(); // ranges entirely <= 0
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn zero_exact_random(lo in -1e4f32..1e4, width in 0f32..1e4, idx in 0usize..56) {
            let schemes = all_schemes();
            zero_is_exact(schemes[idx % schemes.len()], lo, lo + width)?;
        }

        #[test]
        fn fake_quant_lands_on_codes(lo in -100f32..0.0, hi in 0f32..100.0, x in -200f32..200.0) {
            for s in [QScheme::UINT8, QScheme::INT8, QScheme::new(4, false, false, false).unwrap()] {
                let p = s.choose_params(lo, hi).unwrap();
                let fq = s.fake_quant(p, x);
                let q = p.quantize(fq, s.qmin(), s.qmax());
                // The fake-quantized value is (to f32 rounding) a dequantized code, and within
                // half a step of the clamped input.
                prop_assert!((p.dequantize(q) - fq).abs() <= p.scale * 1e-3);
                let r = s.nudged_range(p);
                prop_assert!((fq - x.clamp(r.min, r.max)).abs() <= p.scale * 0.5001);
            }
        }
    }
}
