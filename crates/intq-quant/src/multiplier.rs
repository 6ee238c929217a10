//! The fixed-point representation of a real multiplier: `M ≈ m0 * 2^(shift - 31)` (docs/spec.md
//! §4.1).

use crate::{multiply_by_quantized_multiplier, QuantError};

/// A real multiplier as an int32 mantissa `m0` in `[2^30, 2^31)` (or 0) and a power-of-two
/// exponent: `M ≈ m0 * 2^(shift - 31)`. A positive `shift` is a left shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuantizedMultiplier {
    pub m0: i32,
    pub shift: i32,
}

impl QuantizedMultiplier {
    /// The multiplier that leaves its input unchanged (`m0 = 2^30`, i.e. 0.5, shifted left once).
    pub const ONE: QuantizedMultiplier = QuantizedMultiplier {
        m0: 1 << 30,
        shift: 1,
    };

    /// docs/spec.md §4.1's conversion, as TFLite's `QuantizeMultiplier` does it: `frexp`, round the
    /// mantissa half away from zero to Q31, renormalize if it rounded up to 2^31, and flush
    /// multipliers below 2^-32 to zero (their every product rounds to 0 anyway).
    ///
    /// Multipliers of 2^31 or more are rejected: they would need a left shift past 31 bits,
    /// which no 8-bit model produces and int32 cannot hold.
    pub fn from_real(m: f64) -> Result<Self, QuantError> {
        if !m.is_finite() || m < 0.0 {
            return Err(QuantError::MultiplierOutOfRange(m));
        }
        if m == 0.0 {
            return Ok(QuantizedMultiplier { m0: 0, shift: 0 });
        }
        let (f, mut e) = frexp(m);
        let mut q = (f * (1i64 << 31) as f64).round() as i64;
        if q == 1i64 << 31 {
            q /= 2;
            e += 1;
        }
        if e < -31 {
            return Ok(QuantizedMultiplier { m0: 0, shift: 0 });
        }
        if e > 31 {
            return Err(QuantError::MultiplierOutOfRange(m));
        }
        Ok(QuantizedMultiplier {
            m0: q as i32,
            shift: e,
        })
    }

    /// The real value this pair stands for.
    pub fn to_real(self) -> f64 {
        self.m0 as f64 * 2f64.powi(self.shift - 31)
    }

    /// `x * M`, rounded as MultiplyByQuantizedMultiplier (docs/spec.md §4.3).
    #[inline]
    pub fn apply(self, x: i32) -> i32 {
        multiply_by_quantized_multiplier(x, self.m0, self.shift)
    }
}

/// `m = f * 2^e` with `f` in `[0.5, 1)`, for positive finite `m` (C's `frexp`). Done on the bit
/// pattern so the result is exact, including for subnormals.
pub(crate) fn frexp(m: f64) -> (f64, i32) {
    debug_assert!(m > 0.0 && m.is_finite());
    let bits = m.to_bits();
    let exp_field = ((bits >> 52) & 0x7ff) as i32;
    if exp_field == 0 {
        // Subnormal: scale into the normal range first.
        let (f, e) = frexp(m * 2f64.powi(64));
        return (f, e - 64);
    }
    let e = exp_field - 1022;
    let f = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (f, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frexp_matches_definition() {
        for m in [1.0, 0.5, 0.75, 3.0, 1e-300, 1e300, 0.1, 2f64.powi(-40)] {
            let (f, e) = frexp(m);
            assert!((0.5..1.0).contains(&f), "m={m} f={f}");
            assert_eq!(f * 2f64.powi(e), m, "m={m}");
        }
        // Subnormals: the smallest one is 2^-1074.
        assert_eq!(frexp(5e-324), (0.5, -1073));
        assert_eq!(frexp(3.0 * 5e-324), (0.75, -1072));
    }

    #[test]
    fn powers_of_two_are_exact() {
        for e in -31..=30 {
            let m = 2f64.powi(e);
            let qm = QuantizedMultiplier::from_real(m).unwrap();
            assert_eq!(qm.m0, 1 << 30, "m=2^{e}");
            assert_eq!(qm.shift, e + 1, "m=2^{e}");
            assert_eq!(qm.to_real(), m);
        }
        assert_eq!(
            QuantizedMultiplier::from_real(1.0).unwrap(),
            QuantizedMultiplier::ONE
        );
    }

    #[test]
    fn one_is_identity() {
        for x in [0, 1, -1, 12345, -98765, 1 << 29, -(1 << 29)] {
            assert_eq!(QuantizedMultiplier::ONE.apply(x), x);
        }
    }

    #[test]
    fn mantissa_rounding_up_to_two_pow_31_renormalizes() {
        // Just below 1.0: the Q31 mantissa rounds to 2^31, so it becomes 2^30 with shift + 1.
        let m = 1.0 - 2f64.powi(-40);
        let qm = QuantizedMultiplier::from_real(m).unwrap();
        assert_eq!(
            qm,
            QuantizedMultiplier {
                m0: 1 << 30,
                shift: 1
            }
        );
    }

    #[test]
    fn tiny_multipliers_flush_to_zero() {
        for m in [2f64.powi(-33), 1e-20, 5e-324] {
            assert_eq!(
                QuantizedMultiplier::from_real(m).unwrap(),
                QuantizedMultiplier { m0: 0, shift: 0 },
                "m={m}"
            );
        }
        // 2^-32 has frexp exponent -31 and is still representable.
        let qm = QuantizedMultiplier::from_real(2f64.powi(-32)).unwrap();
        assert_eq!(
            qm,
            QuantizedMultiplier {
                m0: 1 << 30,
                shift: -31
            }
        );
        assert_eq!(
            QuantizedMultiplier::from_real(0.0).unwrap().apply(1 << 30),
            0
        );
    }

    #[test]
    fn huge_and_invalid_multipliers_are_errors() {
        assert!(QuantizedMultiplier::from_real(2f64.powi(30)).is_ok());
        assert!(QuantizedMultiplier::from_real(2f64.powi(31)).is_err());
        assert!(QuantizedMultiplier::from_real(1e300).is_err());
        assert!(QuantizedMultiplier::from_real(f64::INFINITY).is_err());
        assert!(QuantizedMultiplier::from_real(f64::NAN).is_err());
        assert!(QuantizedMultiplier::from_real(-0.5).is_err());
    }

    proptest! {
        #[test]
        fn mantissa_normalized_and_close(m in 1e-9f64..1e9) {
            let qm = QuantizedMultiplier::from_real(m).unwrap();
            prop_assert!(qm.m0 >= 1 << 30);
            let rel = (qm.to_real() - m).abs() / m;
            prop_assert!(rel <= 2f64.powi(-31), "m={} rel={}", m, rel);
        }
    }
}
