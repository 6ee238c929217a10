//! TFLite's real-valued requantization `round((double) acc * M)` computed with integers only,
//! bit for bit, so that models imported from TFLite run without a float at inference.
//!
//! TFLite's reference FULLY_CONNECTED rescales with a double `M = S_in * S_w / S_out` instead of
//! the fixed-point multiplier of docs/spec.md §4.1 (docs/spec.md §6.1). A double is `m * 2^e` with
//! an integer mantissa `m < 2^53`, so the product the FPU forms is the exact integer `acc * m`
//! (below 2^84, held in i128) rounded to 53 significant bits with ties to even, times `2^e`; C's
//! `round` then rounds that exact value half away from zero. [`DoubleMultiplier::apply`] performs
//! exactly these two roundings on integers.

use crate::QuantError;

/// `M` split once (at model load) into `mantissa * 2^exponent`; applied with integers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoubleMultiplier {
    mantissa: u64,
    exponent: i32,
}

impl DoubleMultiplier {
    /// Splits a non-negative finite `m`; refuses NaN, infinities and negative values.
    pub fn from_f64(m: f64) -> Result<Self, QuantError> {
        if !m.is_finite() {
            return Err(QuantError::NonFinite {
                what: "real multiplier",
                value: m,
            });
        }
        if m < 0.0 {
            return Err(QuantError::MultiplierOutOfRange(m));
        }
        let bits = m.to_bits();
        let biased = ((bits >> 52) & 0x7ff) as i32;
        let fraction = bits & ((1u64 << 52) - 1);
        let (mantissa, exponent) = if biased == 0 {
            (fraction, -1074) // subnormal (or zero)
        } else {
            (fraction | (1u64 << 52), biased - 1075)
        };
        Ok(DoubleMultiplier { mantissa, exponent })
    }

    /// The double this multiplier came from (for display and tests).
    pub fn to_f64(self) -> f64 {
        let implicit = 1u64 << 52;
        if self.mantissa < implicit {
            f64::from_bits(self.mantissa) // subnormal or zero
        } else {
            f64::from_bits((((self.exponent + 1075) as u64) << 52) | (self.mantissa - implicit))
        }
    }

    /// `(acc as f64 * M).round() as i32`, computed exactly with integers: the product rounded to
    /// 53 significant bits (ties to even), then to an integer (ties away from zero), saturated
    /// to i32 as Rust's `as` does.
    pub fn apply(self, acc: i32) -> i32 {
        let negative = acc < 0;
        let product = (acc.unsigned_abs() as u128) * self.mantissa as u128;
        if product == 0 {
            return 0;
        }
        let r = round_to_53_bits(product);
        let magnitude: u128 = if self.exponent >= 0 {
            let e = self.exponent as u32;
            if e >= 128 || r > (u128::MAX >> e) {
                u128::MAX
            } else {
                r << e
            }
        } else {
            let shift = self.exponent.unsigned_abs();
            if shift >= 128 {
                0 // r < 2^86, so the value is below one half
            } else {
                // r < 2^86 and the half below 2^127: no overflow.
                (r + (1u128 << (shift - 1))) >> shift
            }
        };
        if negative {
            if magnitude >= 1u128 << 31 {
                i32::MIN
            } else {
                -(magnitude as i32)
            }
        } else if magnitude > i32::MAX as u128 {
            i32::MAX
        } else {
            magnitude as i32
        }
    }
}

/// `x` rounded to a multiple of the power of two that leaves 53 significant bits, ties to even
/// (IEEE-754's default rounding of a double result).
fn round_to_53_bits(x: u128) -> u128 {
    let bits = 128 - x.leading_zeros();
    if bits <= 53 {
        return x;
    }
    let s = bits - 53;
    let q = x >> s;
    let rem = x & ((1u128 << s) - 1);
    let half = 1u128 << (s - 1);
    let q = if rem > half || (rem == half && q & 1 == 1) {
        q + 1
    } else {
        q
    };
    q << s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(acc: i32, m: f64) -> i32 {
        (acc as f64 * m).round() as i32
    }

    fn edge_accs() -> Vec<i32> {
        let mut v = vec![
            0,
            1,
            -1,
            2,
            -2,
            3,
            i32::MAX,
            i32::MIN,
            i32::MIN + 1,
            i32::MAX - 1,
        ];
        for i in 0..31 {
            let p = 1i32 << i;
            v.extend([p, -p, p.wrapping_add(1), p - 1, -(p - 1), -p - 1]);
        }
        v
    }

    fn edge_multipliers() -> Vec<f64> {
        let mut v = vec![
            0.0,
            1.0,
            0.5,
            0.25,
            1.5,
            0.999_999_999_999,
            1e-10,
            3.7e-5,
            2.0,
            1e9,
        ];
        v.push(f64::MIN_POSITIVE);
        v.push(5e-324);
        v.push(f64::MAX);
        for i in -40..10 {
            let p = 2f64.powi(i);
            v.extend([
                p,
                p * (1.0 + f64::EPSILON),
                p * (1.0 - f64::EPSILON / 2.0),
                p * 0.75,
            ]);
        }
        // Products of f32 scales, as TFLite forms them.
        for (a, b, c) in [
            (0.0235f32, 0.0041f32, 0.1172f32),
            (1.0 / 255.0, 0.02, 0.05),
            (0.5, 0.5, 0.125),
        ] {
            v.push(a as f64 * b as f64 / c as f64);
        }
        v
    }

    #[test]
    fn equals_the_double_computation_on_edges() {
        for &m in &edge_multipliers() {
            let dm = DoubleMultiplier::from_f64(m).unwrap();
            assert_eq!(dm.to_f64(), m);
            for &acc in &edge_accs() {
                assert_eq!(dm.apply(acc), float(acc, m), "acc {acc}, M {m:e}");
            }
        }
    }

    #[test]
    fn ties_round_away_from_zero_after_the_product_rounds_to_even() {
        let half = DoubleMultiplier::from_f64(0.5).unwrap();
        assert_eq!((half.apply(5), half.apply(-5), half.apply(4)), (3, -3, 2));
        // acc * m needs 54 bits: the product rounds to even before `round` sees it.
        let m = 1.0 + f64::EPSILON; // mantissa 2^52 + 1
        let dm = DoubleMultiplier::from_f64(m).unwrap();
        for acc in [3, 5, 7, (1 << 30) + 1, i32::MAX, i32::MIN] {
            assert_eq!(dm.apply(acc), float(acc, m), "acc {acc}");
        }
    }

    #[test]
    fn refuses_non_finite_and_negative() {
        for m in [f64::NAN, f64::INFINITY, -1.0, f64::NEG_INFINITY] {
            assert!(DoubleMultiplier::from_f64(m).is_err(), "{m}");
        }
    }

    #[test]
    fn random_products_match() {
        let mut rng = intq_testutil::TestRng::new(0x9E37_79B9_7F4A_7C15);
        let mut next = move || rng.next_u64();
        for _ in 0..200_000 {
            let acc = next() as i32 >> (next() % 31);
            // Any positive finite double, weighted toward requantization's range.
            let m = f64::from_bits(next() >> 2 | 0x3000_0000_0000_0000)
                * 2f64.powi((next() % 64) as i32 - 32);
            if !m.is_finite() {
                continue;
            }
            let dm = DoubleMultiplier::from_f64(m).unwrap();
            assert_eq!(dm.apply(acc), float(acc, m), "acc {acc}, M {m:e}");
        }
    }
}
