//! gemmlowp's two rounding primitives and their composition, exactly as docs/spec.md §4.2 and
//! §4.3 write them.
//!
//! Together they are the project's normative requantization ("double rounding", as TFLite's
//! reference kernels compute it). Every optimized kernel must reproduce them bit for bit.

/// `a * b / 2^31` rounded to nearest, ties toward +infinity (the nudge and truncating division
/// below amount to `floor((a*b + 2^30) / 2^31)`); the one overflowing case, `MIN * MIN`,
/// saturates to `MAX`. In Q31 terms: the high half of the doubled product.
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Rust's `/` truncates toward zero, as gemmlowp's C++ does; an arithmetic shift would not.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent` rounded to nearest, ties away from zero. `exponent` must be in `0..=31`.
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    debug_assert!(
        (0..=31).contains(&exponent),
        "exponent {exponent} outside 0..=31"
    );
    let mask = (1i64 << exponent) - 1;
    let remainder = x as i64 & mask;
    let threshold = (mask >> 1) + if x < 0 { 1 } else { 0 };
    (x >> exponent) + if remainder > threshold { 1 } else { 0 }
}

/// `x * m0 * 2^(shift - 31)` with TFLite's double rounding: a left shift (for `shift > 0`), the
/// rounding doubling high multiply, then a rounding right shift (for `shift < 0`).
///
/// The left shift wraps on overflow, as `x * (1 << left_shift)` does on every target TFLite runs
/// on; quantized models never reach it because `|x << shift|` stays far below 2^31 for sane
/// multipliers. `shift` must be in `-31..=31` (what [`crate::QuantizedMultiplier::from_real`]
/// produces).
#[inline]
pub fn multiply_by_quantized_multiplier(x: i32, m0: i32, shift: i32) -> i32 {
    debug_assert!(
        (-31..=31).contains(&shift),
        "shift {shift} outside -31..=31"
    );
    let left = shift.max(0);
    let right = (-shift).max(0);
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x.wrapping_shl(left as u32), m0),
        right,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The exact real value `a * b / 2^31`, rounded half up (`floor(v + 1/2)`), saturated: what
    /// SaturatingRoundingDoublingHighMul computes, without any of its tricks.
    fn srdhm_model(a: i32, b: i32) -> i32 {
        let p = a as i128 * b as i128;
        let v = (p + (1i128 << 30)).div_euclid(1i128 << 31);
        v.clamp(i32::MIN as i128, i32::MAX as i128) as i32
    }

    /// `x / 2^e` rounded half away from zero, in i128.
    fn rdbpot_model(x: i32, e: i32) -> i32 {
        let x = x as i128;
        let d = 1i128 << e;
        let q = x.abs() / d;
        let r = x.abs() % d;
        let mag = if 2 * r >= d { q + 1 } else { q };
        (if x < 0 { -mag } else { mag }) as i32
    }

    /// Edge-heavy int32 values: 0, ±1, 2^i and 2^i±1 for every i, both extremes.
    fn edge_values() -> Vec<i32> {
        let mut v = vec![0, 1, -1, i32::MIN, i32::MIN + 1, i32::MAX, i32::MAX - 1];
        for i in 0..31 {
            let p = 1i64 << i;
            for d in [-1i64, 0, 1] {
                for s in [1i64, -1] {
                    let x = s * (p + d);
                    if x >= i32::MIN as i64 && x <= i32::MAX as i64 {
                        v.push(x as i32);
                    }
                }
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    #[test]
    fn srdhm_min_times_min_saturates() {
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MAX),
            -i32::MAX,
            "MIN*MAX/2^31 = -(2^31 - 1) exactly"
        );
    }

    #[test]
    fn srdhm_matches_exact_model_on_edges() {
        let v = edge_values();
        for &a in &v {
            for &b in &v {
                assert_eq!(
                    saturating_rounding_doubling_high_mul(a, b),
                    srdhm_model(a, b),
                    "a={a} b={b}"
                );
            }
        }
    }

    #[test]
    fn srdhm_hand_cases() {
        // 0.5 * 0.5 in Q31 is 0.25.
        assert_eq!(
            saturating_rounding_doubling_high_mul(1 << 30, 1 << 30),
            1 << 29
        );
        // 3 * 2^30 / 2^31 = 1.5: ties go toward +infinity, so 2 and -1 (not -2).
        assert_eq!(saturating_rounding_doubling_high_mul(3, 1 << 30), 2);
        assert_eq!(saturating_rounding_doubling_high_mul(-3, 1 << 30), -1);
        // 0.5 -> 1, -0.5 -> 0; -0.75 -> -1.
        assert_eq!(saturating_rounding_doubling_high_mul(1, 1 << 30), 1);
        assert_eq!(saturating_rounding_doubling_high_mul(-1, 1 << 30), 0);
        assert_eq!(saturating_rounding_doubling_high_mul(-3, 1 << 29), -1);
    }

    #[test]
    fn rdbpot_matches_exact_model_for_every_shift() {
        for &x in &edge_values() {
            for e in 0..=31 {
                assert_eq!(
                    rounding_divide_by_pot(x, e),
                    rdbpot_model(x, e),
                    "x={x} e={e}"
                );
            }
        }
    }

    #[test]
    fn rdbpot_hand_cases() {
        assert_eq!(rounding_divide_by_pot(5, 1), 3); // 2.5 -> 3
        assert_eq!(rounding_divide_by_pot(-5, 1), -3); // -2.5 -> -3
        assert_eq!(rounding_divide_by_pot(-6, 2), -2); // -1.5 -> -2
        assert_eq!(rounding_divide_by_pot(-5, 2), -1); // -1.25 -> -1
        assert_eq!(rounding_divide_by_pot(7, 0), 7);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
    }

    /// Double rounding: the model rounds twice, exactly where docs/spec.md §4.3 says the kernel
    /// does.
    fn mbqm_model(x: i32, m0: i32, shift: i32) -> i32 {
        let left = shift.max(0);
        let right = (-shift).max(0);
        rdbpot_model(srdhm_model(x.wrapping_shl(left as u32), m0), right)
    }

    #[test]
    fn mbqm_matches_model_on_edges() {
        let xs = edge_values();
        let ms = [
            1 << 30,
            (1 << 30) + 1,
            i32::MAX,
            i32::MAX - 1,
            1_518_500_250,
            0,
        ];
        for &x in &xs {
            for &m in &ms {
                for shift in -31..=31 {
                    assert_eq!(
                        multiply_by_quantized_multiplier(x, m, shift),
                        mbqm_model(x, m, shift),
                        "x={x} m={m} shift={shift}"
                    );
                }
            }
        }
    }

    #[test]
    fn mbqm_double_rounding_is_not_single_rounding() {
        let m0 = 3 << 29; // 0.75 in Q31
                          // 5 * 0.75 / 2 = 1.875: SRDHM gives 4 (3.75 rounded), then 4 / 2 = 2; both roundings agree.
        assert_eq!(multiply_by_quantized_multiplier(5, m0, -1), 2);
        // 1 * 0.75 / 2 = 0.375 would round to 0 once; rounded twice (0.75 -> 1, then 0.5 -> 1)
        // it is 1. TFLite computes the latter, so do we.
        assert_eq!(multiply_by_quantized_multiplier(1, m0, -1), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn srdhm_random(a in any::<i32>(), b in any::<i32>()) {
            prop_assert_eq!(saturating_rounding_doubling_high_mul(a, b), srdhm_model(a, b));
        }

        #[test]
        fn rdbpot_random(x in any::<i32>(), e in 0i32..=31) {
            prop_assert_eq!(rounding_divide_by_pot(x, e), rdbpot_model(x, e));
        }

        #[test]
        fn mbqm_random_close_to_real(x in -(1i32 << 20)..(1 << 20), m in 1e-6f64..0.999) {
            let qm = crate::QuantizedMultiplier::from_real(m).unwrap();
            let got = multiply_by_quantized_multiplier(x, qm.m0, qm.shift) as f64;
            let exact = x as f64 * m;
            // Two roundings, each at most half an LSB, plus the multiplier's own rounding.
            prop_assert!((got - exact).abs() <= 1.0 + exact.abs() * 1e-9, "x={} m={} got={} exact={}", x, m, got, exact);
        }
    }
}
