//! gemmlowp's fixed-point arithmetic (`fixedpoint/fixedpoint.h`), the subset TFLite's integer
//! Logistic and Softmax need, bit for bit, plus TFLite's `GetReciprocal` (`kernels/internal/common.h`).
//!
//! A [`FixedPoint<I>`] is a raw `i32` read as `raw / 2^(31 - I)`: `I` integer bits (not counting
//! the sign), so it covers `[-2^I, 2^I)`. Products add integer bits (`F<a> * F<b>` is an `F<a+b>`);
//! stable Rust cannot compute `a + b` in a type, so [`FixedPoint::mul`] takes the result's integer
//! bits as a parameter and checks the sum at compile time.
//!
//! Plain `+`, `-` and negation wrap, as gemmlowp's do on every target TFLite runs on (in C++ the
//! overflow is formally undefined); none of the routines here reaches it on the inputs TFLite
//! feeds them.

use crate::{rounding_divide_by_pot, saturating_rounding_doubling_high_mul};
use std::ops::{Add, BitAnd, Neg, Sub};

/// A Q`I`.`(31 - I)` fixed-point number stored in an `i32` (gemmlowp's `FixedPoint<int32_t, I>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FixedPoint<const INTEGER_BITS: i32> {
    raw: i32,
}

/// `x * 2^exponent` on a raw value: a saturating left shift for positive exponents, a rounding
/// (half away from zero) right shift for negative ones (gemmlowp's `SaturatingRoundingMultiplyByPOT`).
#[inline]
pub fn saturating_rounding_multiply_by_pot(x: i32, exponent: i32) -> i32 {
    debug_assert!((-31..=31).contains(&exponent), "exponent {exponent}");
    if exponent > 0 {
        // gemmlowp saturates by comparing against the largest magnitude that survives the shift.
        let threshold = (1i32 << (31 - exponent)) - 1;
        if x > threshold {
            i32::MAX
        } else if x < -threshold {
            i32::MIN
        } else {
            x << exponent
        }
    } else if exponent < 0 {
        rounding_divide_by_pot(x, -exponent)
    } else {
        x
    }
}

/// `(a + b) / 2` rounded half away from zero (gemmlowp's `RoundingHalfSum`, ARM's `VRHADD`).
#[inline]
pub fn rounding_half_sum(a: i32, b: i32) -> i32 {
    let sum = a as i64 + b as i64;
    let sign = if sum >= 0 { 1 } else { -1 };
    // Truncating division, as the C++ does.
    ((sum + sign) / 2) as i32
}

impl<const I: i32> FixedPoint<I> {
    /// Integer bits, excluding the sign bit.
    pub const INTEGER_BITS: i32 = I;
    /// Fractional bits: the raw value is the real value times `2^FRACTIONAL_BITS`.
    pub const FRACTIONAL_BITS: i32 = {
        assert!(I >= 0 && I < 32, "integer bits must be in 0..32");
        31 - I
    };

    #[inline]
    pub const fn from_raw(raw: i32) -> Self {
        FixedPoint { raw }
    }

    #[inline]
    pub const fn raw(self) -> i32 {
        self.raw
    }

    #[inline]
    pub const fn zero() -> Self {
        FixedPoint { raw: 0 }
    }

    /// 1.0; with no integer bits it is not representable, and gemmlowp uses the largest value.
    #[inline]
    pub const fn one() -> Self {
        if I == 0 {
            FixedPoint { raw: i32::MAX }
        } else {
            FixedPoint {
                raw: 1 << Self::FRACTIONAL_BITS,
            }
        }
    }

    /// `2^exponent`, which must be exactly representable (gemmlowp's `ConstantPOT<Exponent>`).
    #[inline]
    pub const fn constant_pot(exponent: i32) -> Self {
        let offset = Self::FRACTIONAL_BITS + exponent;
        assert!(
            offset >= 0 && offset < 31,
            "constant not exactly representable in this fixed-point format"
        );
        FixedPoint { raw: 1 << offset }
    }

    /// The product, an `F<C>` with `C = I + B` (gemmlowp's `operator*`): a saturating rounding
    /// doubling high multiply of the raw values.
    // Not `std::ops::Mul`: the output type depends on both operands' integer bits, which a
    // trait impl cannot express on stable Rust without overlapping impls.
    #[allow(clippy::should_implement_trait)]
    #[inline]
    pub fn mul<const B: i32, const C: i32>(self, rhs: FixedPoint<B>) -> FixedPoint<C> {
        const {
            assert!(
                C == I + B,
                "product integer bits must be the sum of the factors'"
            );
        }
        FixedPoint::from_raw(saturating_rounding_doubling_high_mul(self.raw, rhs.raw))
    }

    /// The same raw value read with `D` integer bits: multiplication by `2^(D - I)`, exact
    /// (gemmlowp's `ExactMulByPot<D - I>`).
    #[inline]
    pub const fn exact_mul_by_pot<const D: i32>(self) -> FixedPoint<D> {
        FixedPoint { raw: self.raw }
    }

    /// `self * 2^exponent` keeping the format: saturating up, rounding down.
    #[inline]
    pub fn saturating_rounding_multiply_by_pot(self, exponent: i32) -> Self {
        Self::from_raw(saturating_rounding_multiply_by_pot(self.raw, exponent))
    }

    /// The same real value in a format with `D` integer bits, saturating or rounding as needed.
    #[inline]
    pub fn rescale<const D: i32>(self) -> FixedPoint<D> {
        FixedPoint::from_raw(saturating_rounding_multiply_by_pot(self.raw, I - D))
    }

    /// The real value this number stands for.
    #[inline]
    pub fn to_f64(self) -> f64 {
        self.raw as f64 / (1i64 << Self::FRACTIONAL_BITS) as f64
    }

    /// The nearest representable value (half away from zero), saturated (gemmlowp's `FromDouble`).
    pub fn from_f64(x: f64) -> Self {
        let scaled = (x * (1i64 << Self::FRACTIONAL_BITS) as f64).round();
        Self::from_raw(scaled.clamp(i32::MIN as f64, i32::MAX as f64) as i32)
    }
}

impl<const I: i32> Add for FixedPoint<I> {
    type Output = Self;
    #[inline]
    fn add(self, rhs: Self) -> Self {
        Self::from_raw(self.raw.wrapping_add(rhs.raw))
    }
}

impl<const I: i32> Sub for FixedPoint<I> {
    type Output = Self;
    #[inline]
    fn sub(self, rhs: Self) -> Self {
        Self::from_raw(self.raw.wrapping_sub(rhs.raw))
    }
}

impl<const I: i32> Neg for FixedPoint<I> {
    type Output = Self;
    #[inline]
    fn neg(self) -> Self {
        Self::from_raw(self.raw.wrapping_neg())
    }
}

impl<const I: i32> BitAnd for FixedPoint<I> {
    type Output = Self;
    #[inline]
    fn bitand(self, rhs: Self) -> Self {
        Self::from_raw(self.raw & rhs.raw)
    }
}

/// Q0.31 with no integer bits: the format of every result in `[-1, 1)` below.
pub type F0 = FixedPoint<0>;

// gemmlowp's raw constants (its GEMMLOWP_CHECKED_FIXEDPOINT_CONSTANTs), each the rounded real
// value named; the tests re-derive every one from f64.
/// exp(-1/8) in Q0.31.
const EXP_MINUS_ONE_EIGHTH: i32 = 1_895_147_668;
/// 1/3 in Q0.31.
const ONE_THIRD: i32 = 715_827_883;
/// (k, exp(-2^k) in Q0.31) for the barrel shifter of `exp_on_negative_values`.
const EXP_MINUS_POT: [(i32, i32); 7] = [
    (-2, 1_672_461_947),
    (-1, 1_302_514_674),
    (0, 790_015_084),
    (1, 290_630_308),
    (2, 39_332_535),
    (3, 720_401),
    (4, 242),
];
/// 48/17 and -32/17 in Q2.29, the Newton–Raphson start for `1 / d` with `d` in `[1/2, 1]`.
const FORTY_EIGHT_OVER_17: i32 = 1_515_870_810;
const MINUS_THIRTY_TWO_OVER_17: i32 = -1_010_580_540;

/// `exp(a)` for `a` in `[-1/4, 0)`: a degree-4 Taylor expansion around `-1/8`.
pub fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: F0) -> F0 {
    let constant_term = F0::from_raw(EXP_MINUS_ONE_EIGHTH);
    let constant_1_over_3 = F0::from_raw(ONE_THIRD);
    let x = a + F0::constant_pot(-3);
    let x2: F0 = x.mul(x);
    let x3: F0 = x2.mul(x);
    let x4: F0 = x2.mul(x2);
    let x4_over_4 = x4.saturating_rounding_multiply_by_pot(-2);
    let x4_over_12_plus_x3_over_3: F0 = (x4_over_4 + x3).mul(constant_1_over_3);
    let x4_over_24_plus_x3_over_6_plus_x2_over_2 =
        (x4_over_12_plus_x3_over_3 + x2).saturating_rounding_multiply_by_pot(-1);
    let correction: F0 = constant_term.mul(x + x4_over_24_plus_x3_over_6_plus_x2_over_2);
    constant_term + correction
}

/// `exp(a)` for `a <= 0` (exactly 1.0's closest Q0.31 value, `i32::MAX`, at `a == 0`).
///
/// `a` is split into a multiple of 1/4 and a remainder in `[-1/4, 0)`; the remainder goes through
/// the polynomial and each set bit of the multiple multiplies in `exp(-2^k)` (a barrel shifter).
pub fn exp_on_negative_values<const I: i32>(a: FixedPoint<I>) -> F0 {
    let fractional_bits = FixedPoint::<I>::FRACTIONAL_BITS;
    let one_quarter = FixedPoint::<I>::constant_pot(-2);
    let mask = one_quarter - FixedPoint::from_raw(1);
    let a_mod_quarter_minus_one_quarter = (a & mask) - one_quarter;
    let mut result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        a_mod_quarter_minus_one_quarter.rescale::<0>(),
    );
    let remainder = (a_mod_quarter_minus_one_quarter - a).raw();

    for (exponent, multiplier) in EXP_MINUS_POT {
        if I > exponent {
            let shift = fractional_bits + exponent;
            if remainder & (1 << shift) != 0 {
                result = result.mul(F0::from_raw(multiplier));
            }
        }
    }

    if I > 5 {
        // exp(x) for x < -32 is below Q0.31's resolution.
        let clamp = FixedPoint::<I>::from_raw(-(1 << (36 - I)));
        if a.raw() < clamp.raw() {
            result = F0::zero();
        }
    }

    if a.raw() == 0 {
        F0::one()
    } else {
        result
    }
}

/// `1 / (1 + a)` for `a` in `[0, 1)`: three Newton–Raphson steps on the half denominator
/// `(1 + a) / 2`, from the initial guess `48/17 - 32/17 * d`.
pub fn one_over_one_plus_x_for_x_in_0_1(a: F0) -> F0 {
    type F2 = FixedPoint<2>;
    let half_denominator = F0::from_raw(rounding_half_sum(a.raw(), F0::one().raw()));
    let constant_48_over_17 = F2::from_raw(FORTY_EIGHT_OVER_17);
    let constant_neg_32_over_17 = F2::from_raw(MINUS_THIRTY_TWO_OVER_17);
    let mut x: F2 = constant_48_over_17 + half_denominator.mul(constant_neg_32_over_17);
    for _ in 0..3 {
        let half_denominator_times_x: F2 = half_denominator.mul(x);
        let one_minus_half_denominator_times_x = F2::one() - half_denominator_times_x;
        let product: FixedPoint<4> = x.mul(one_minus_half_denominator_times_x);
        x = x + product.rescale::<2>();
    }
    x.exact_mul_by_pot::<1>().rescale::<0>()
}

/// `1 / (1 + exp(-a))` for `a >= 0`.
pub fn logistic_on_positive_values<const I: i32>(a: FixedPoint<I>) -> F0 {
    one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-a))
}

/// `1 / (1 + exp(-a))` for any `a` (exactly 1/2 at 0), through the positive half and symmetry.
pub fn logistic<const I: i32>(a: FixedPoint<I>) -> F0 {
    let positive = a.raw() > 0;
    let abs_input = if positive { a } else { -a };
    let result_if_positive = logistic_on_positive_values(abs_input);
    let result_if_negative = F0::one() - result_if_positive;
    if a.raw() == 0 {
        F0::from_raw(1 << 30)
    } else if positive {
        result_if_positive
    } else {
        result_if_negative
    }
}

/// TFLite's `GetReciprocal`: `1 / x` for a positive `x` with `x_integer_digits` integer bits, as a
/// Q0.31 mantissa and the number of bits `x` reaches above 1.0:
/// `1/x ≈ raw / 2^31 / 2^num_bits_over_unit`. Returns `(raw, num_bits_over_unit)`.
///
/// `x` is normalized so its top bit is set, the leading 1.0 dropped, and what remains (in
/// `[0, 1)`) goes through [`one_over_one_plus_x_for_x_in_0_1`].
pub fn get_reciprocal(x: i32, x_integer_digits: i32) -> (i32, i32) {
    debug_assert!(x > 0, "get_reciprocal needs a positive value, got {x}");
    let headroom_plus_one = (x as u32).leading_zeros() as i32;
    let num_bits_over_unit = x_integer_digits - headroom_plus_one;
    let shifted_sum_minus_one =
        ((x as u32).wrapping_shl(headroom_plus_one as u32)).wrapping_sub(1u32 << 31) as i32;
    let shifted_scale = one_over_one_plus_x_for_x_in_0_1(F0::from_raw(shifted_sum_minus_one));
    (shifted_scale.raw(), num_bits_over_unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gemmlowp's own test values: `±2^i + {-2..2}`, the i32 extremes, and 1000 values of its
    /// linear congruential generator.
    fn testvals() -> Vec<i32> {
        let mut v = Vec::new();
        for i in 0..31 {
            let p = 1i32 << i;
            for d in -2..=2 {
                v.push(p.wrapping_add(d));
                v.push((-p).wrapping_add(d));
            }
        }
        v.extend([
            i32::MIN,
            i32::MIN + 1,
            i32::MIN + 2,
            i32::MAX - 2,
            i32::MAX - 1,
            i32::MAX,
        ]);
        let mut rng = intq_testutil::TestRng::new(1);
        v.extend((0..1000).map(|_| rng.next_u64() as i32));
        v.sort_unstable();
        v
    }

    #[test]
    fn constants_are_exact() {
        assert_eq!(F0::one().raw(), i32::MAX);
        assert_eq!(FixedPoint::<4>::one().raw(), 1 << 27);
        assert_eq!(FixedPoint::<12>::one().raw(), 1 << 19);
        assert_eq!(FixedPoint::<4>::constant_pot(-2).raw(), 1 << 25);
        assert_eq!(F0::constant_pot(-3).raw(), 1 << 28);
        assert_eq!(FixedPoint::<5>::FRACTIONAL_BITS, 26);
        assert_eq!(FixedPoint::<5>::from_f64(-1.5).raw(), -(3 << 25));
        assert_eq!(FixedPoint::<2>::from_f64(48.0 / 17.0).raw(), 1_515_870_810);
        assert_eq!(
            FixedPoint::<2>::from_f64(-32.0 / 17.0).raw(),
            -1_010_580_540
        );
    }

    #[test]
    fn gemmlowp_constants_match_their_real_values() {
        // gemmlowp asserts each raw constant equals FromDouble of its real value.
        assert_eq!(
            F0::from_f64((-1.0f64 / 8.0).exp()).raw(),
            EXP_MINUS_ONE_EIGHTH
        );
        assert_eq!(F0::from_f64(1.0 / 3.0).raw(), ONE_THIRD);
        for (k, raw) in EXP_MINUS_POT {
            assert_eq!(F0::from_f64((-(2f64.powi(k))).exp()).raw(), raw, "k={k}");
        }
        assert_eq!(
            FixedPoint::<2>::from_f64(48.0 / 17.0).raw(),
            FORTY_EIGHT_OVER_17
        );
        assert_eq!(
            FixedPoint::<2>::from_f64(-32.0 / 17.0).raw(),
            MINUS_THIRTY_TWO_OVER_17
        );
    }

    /// Raw results of a C++ transcription of gemmlowp's scalar fixedpoint.h and TFLite's
    /// GetReciprocal (compiled with g++ on x86-64), pinned so that any drift from that code,
    /// even by one unit in the last place, fails here.
    #[test]
    fn bit_exact_against_gemmlowp_transcription() {
        let xs = [
            -1,
            -(1 << 26),
            -(3 << 25),
            -123_456_789,
            -(1 << 30),
            -2_000_000_000,
            i32::MIN + 1,
        ];
        let q5 = xs.map(|x| exp_on_negative_values(FixedPoint::<5>::from_raw(x)).raw());
        assert_eq!(q5, [2147483124, 790015308, 479168506, 341177383, 242, 0, 0]);
        let q4 = xs.map(|x| exp_on_negative_values(FixedPoint::<4>::from_raw(x)).raw());
        assert_eq!(
            q4,
            [2147483140, 1302515042, 1014399735, 855963115, 720401, 725, 242]
        );
        let q0 = xs.map(|x| exp_on_negative_values(FixedPoint::<0>::from_raw(x)).raw());
        assert_eq!(
            q0,
            [2147483155, 2081412406, 2049143166, 2027508506, 1302515042, 846177772, 790015308]
        );
        let ls = [
            1,
            -1,
            1 << 27,
            -(1 << 27),
            123_456_789,
            -123_456_789,
            2_000_000_000,
            -2_000_000_000,
        ];
        let lg = ls.map(|x| logistic(FixedPoint::<4>::from_raw(x)).raw());
        assert_eq!(
            lg,
            [
                1073741948, 1073741699, 1569936226, 577547421, 1535464548, 612019099, 2147482924,
                723
            ]
        );
        let os = [0, 1, 1 << 30, 2_000_000_000, i32::MAX];
        let oo = os.map(|x| one_over_one_plus_x_for_x_in_0_1(F0::from_raw(x)).raw());
        assert_eq!(
            oo,
            [2147483647, 2147483647, 1431655762, 1111923858, 1073741820]
        );
        let rs = [(1 << 19) + 1, 717_163, 3 << 18, 157_286_400, i32::MAX];
        let rc = rs.map(|x| get_reciprocal(x, 12));
        assert_eq!(
            rc,
            [
                (2147479552, 0),
                (1569935852, 0),
                (1431655762, 0),
                (1832519382, 8),
                (1073741820, 11)
            ]
        );
    }

    #[test]
    fn saturating_multiply_by_pot_hand_cases() {
        // 2^29 << 1 = 2^30 fits; 2^30 << 1 would be 2^31: threshold is 2^30 - 1, so saturate.
        assert_eq!(saturating_rounding_multiply_by_pot(1 << 29, 1), 1 << 30);
        assert_eq!(saturating_rounding_multiply_by_pot(1 << 30, 1), i32::MAX);
        assert_eq!(
            saturating_rounding_multiply_by_pot(-(1 << 30) + 1, 1),
            i32::MIN + 2
        );
        assert_eq!(saturating_rounding_multiply_by_pot(-(1 << 30), 1), i32::MIN);
        // Right shifts round half away from zero: 5/4 -> 1, 6/4 -> 2, -6/4 -> -2.
        assert_eq!(saturating_rounding_multiply_by_pot(5, -2), 1);
        assert_eq!(saturating_rounding_multiply_by_pot(6, -2), 2);
        assert_eq!(saturating_rounding_multiply_by_pot(-6, -2), -2);
        assert_eq!(saturating_rounding_multiply_by_pot(-7, 0), -7);
    }

    #[test]
    fn rounding_half_sum_hand_cases() {
        assert_eq!(rounding_half_sum(1, 2), 2); // 1.5 -> 2
        assert_eq!(rounding_half_sum(-1, -2), -2); // -1.5 -> -2
        assert_eq!(rounding_half_sum(i32::MAX, i32::MAX), i32::MAX);
        assert_eq!(rounding_half_sum(0, i32::MAX), 1 << 30); // (2^31 - 1 + 1) / 2
        assert_eq!(rounding_half_sum(i32::MIN, i32::MIN), i32::MIN);
    }

    #[test]
    fn mul_is_within_one_of_the_rounded_real_product() {
        let v = testvals();
        fn check<const A: i32, const B: i32, const C: i32>(v: &[i32]) {
            for &a in v.iter().step_by(3) {
                for &b in v.iter().step_by(3) {
                    let fa = FixedPoint::<A>::from_raw(a);
                    let fb = FixedPoint::<B>::from_raw(b);
                    let ab: FixedPoint<C> = fa.mul(fb);
                    let expected = FixedPoint::<C>::from_f64(fa.to_f64() * fb.to_f64());
                    assert!(
                        (ab.raw() as i64 - expected.raw() as i64).abs() <= 1,
                        "{a} * {b}"
                    );
                }
            }
        }
        check::<0, 0, 0>(&v);
        check::<0, 1, 1>(&v);
        check::<2, 0, 2>(&v);
        check::<4, 4, 8>(&v);
        check::<3, 5, 8>(&v);
        check::<14, 15, 29>(&v);
    }

    #[test]
    fn rescale_equals_rounded_conversion() {
        fn check<const A: i32, const B: i32>(v: &[i32]) {
            for &a in v {
                let fa = FixedPoint::<A>::from_raw(a);
                assert_eq!(
                    fa.rescale::<B>(),
                    FixedPoint::<B>::from_f64(fa.to_f64()),
                    "{a}: Q{A} -> Q{B}"
                );
            }
        }
        let v = testvals();
        check::<0, 0>(&v);
        check::<0, 1>(&v);
        check::<2, 0>(&v);
        check::<4, 5>(&v);
        check::<6, 3>(&v);
        check::<13, 9>(&v);
        check::<0, 12>(&v);
    }

    #[test]
    fn exact_mul_by_pot_is_exact() {
        for &a in &testvals() {
            let f = FixedPoint::<4>::from_raw(a);
            assert_eq!(f.exact_mul_by_pot::<5>().to_f64(), f.to_f64() * 2.0);
            assert_eq!(f.exact_mul_by_pot::<1>().to_f64(), f.to_f64() / 8.0);
        }
    }

    #[test]
    fn exp_on_quarter_interval_within_gemmlowp_tolerance() {
        for &a in &testvals() {
            // gemmlowp's mapping of arbitrary raws into [-1/4, 0): a/8 - 1/8.
            let x = F0::from_raw(a).saturating_rounding_multiply_by_pot(-3) - F0::constant_pot(-3);
            let got = exp_on_interval_between_negative_one_quarter_and_0_excl(x).to_f64();
            let err = (x.to_f64().exp() - got).abs();
            assert!(err < 3e-7, "x={} err={err}", x.to_f64());
        }
    }

    #[test]
    fn exp_on_negative_values_within_gemmlowp_tolerance() {
        fn check<const I: i32>(v: &[i32]) {
            for &a in v.iter().filter(|&&a| a < 0) {
                let x = FixedPoint::<I>::from_raw(a);
                let got = exp_on_negative_values(x).to_f64();
                let err = (x.to_f64().exp() - got).abs();
                assert!(err < 3e-7, "Q{I} x={} err={err}", x.to_f64());
            }
        }
        let v = testvals();
        check::<1>(&v);
        check::<2>(&v);
        check::<3>(&v);
        check::<4>(&v);
        check::<5>(&v);
        check::<6>(&v);
    }

    #[test]
    fn exp_spot_values() {
        // exp(0) is exactly One (i32::MAX in Q0.31) whatever the input format.
        assert_eq!(exp_on_negative_values(FixedPoint::<4>::zero()), F0::one());
        assert_eq!(exp_on_negative_values(FixedPoint::<5>::zero()), F0::one());
        assert_eq!(exp_on_negative_values(FixedPoint::<0>::zero()), F0::one());
        // Q6 can hold -33; below -32 the result is clamped to exactly 0.
        assert_eq!(
            exp_on_negative_values(FixedPoint::<6>::from_f64(-33.0)),
            F0::zero()
        );
        // exp(-1/4): the remainder is exactly -1/4 and no barrel bit is set, so this is the
        // polynomial at its left end, within 3e-7 of 1672461947 / 2^31.
        let q = exp_on_negative_values(FixedPoint::<5>::from_f64(-0.25)).raw();
        assert!((q - 1_672_461_947).abs() < 700, "{q}");
        // exp(-16) in Q5: raw -2^30, so the remainder is -1/4 and 15.75 = 2^29..2^24 (bits 8, 4,
        // 2, 1, 1/2, 1/4) goes through the barrel; the exp(-16) step (bit 2^30) is not taken.
        // Before the exp(-8) step the result is about exp(-8) * 2^31 = 720401, and
        // 720401 * 720401 / 2^31 = 241.7, so about 242 = exp(-16) * 2^31.
        let q = exp_on_negative_values(FixedPoint::<5>::from_f64(-16.0)).raw();
        assert!((q - 242).abs() <= 1, "{q}");
    }

    #[test]
    fn one_over_one_plus_x_within_tolerance() {
        for &a in testvals().iter().filter(|&&a| a >= 0) {
            let x = F0::from_raw(a);
            let got = one_over_one_plus_x_for_x_in_0_1(x).to_f64();
            let err = (1.0 / (1.0 + x.to_f64()) - got).abs();
            assert!(err < 6e-9, "x={} err={err}", x.to_f64());
        }
        // 1/(1+0) = 1.0 saturates to One.
        assert_eq!(one_over_one_plus_x_for_x_in_0_1(F0::zero()), F0::one());
    }

    #[test]
    fn logistic_within_tolerance() {
        fn check<const I: i32>(v: &[i32]) {
            for &a in v {
                if a == i32::MIN {
                    continue; // -a wraps; TFLite never feeds it (inputs stay inside the radius)
                }
                let x = FixedPoint::<I>::from_raw(a);
                let got = logistic(x).to_f64();
                let want = 1.0 / (1.0 + (-x.to_f64()).exp());
                let err = (want - got).abs();
                assert!(err < 1.5e-7, "Q{I} x={} err={err}", x.to_f64());
            }
        }
        let v = testvals();
        check::<0>(&v);
        check::<1>(&v);
        check::<4>(&v);
        check::<5>(&v);
        check::<6>(&v);
    }

    #[test]
    fn logistic_spot_values_and_symmetry() {
        assert_eq!(logistic(FixedPoint::<4>::zero()).raw(), 1 << 30);
        for &a in testvals().iter().filter(|&&a| a > 0) {
            let pos = logistic(FixedPoint::<4>::from_raw(a)).raw();
            let neg = logistic(FixedPoint::<4>::from_raw(-a)).raw();
            // By construction logistic(-x) = One - logistic(x), exactly.
            assert_eq!(neg, i32::MAX - pos, "a={a}");
            assert!(pos >= 1 << 30);
        }
    }

    #[test]
    fn reciprocal_spot_values() {
        // 1.0 in Q12 is 2^19: 12 leading zeros, so 0 bits over unit and the mantissa is 1/(1+0),
        // which saturates to One.
        assert_eq!(get_reciprocal(1 << 19, 12), (i32::MAX, 0));
        // 2.0: one bit over unit, mantissa again 1/(1+0) (1/2 = One * 2^-1).
        assert_eq!(get_reciprocal(1 << 20, 12), (i32::MAX, 1));
        // 1.5: mantissa 1/1.5 = 2/3.
        let (raw, bits) = get_reciprocal(3 << 18, 12);
        assert_eq!(bits, 0);
        assert!((raw as f64 / 2f64.powi(31) - 2.0 / 3.0).abs() < 6e-9);
    }

    #[test]
    fn reciprocal_matches_f64() {
        for &x in testvals().iter().filter(|&&x| x > 0) {
            let (raw, bits) = get_reciprocal(x, 12);
            let real_x = x as f64 / 2f64.powi(19);
            let got = raw as f64 / 2f64.powi(31) / 2f64.powi(bits);
            let want = 1.0 / real_x;
            assert!(
                ((got - want) / want).abs() < 1.2e-8,
                "x={real_x} got={got} want={want}"
            );
        }
    }
}
