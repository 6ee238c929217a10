//! Reference Logistic: TFLite's integer routine (gemmlowp fixed-point logistic on a Q4 input),
//! run once per possible input code at load time into a 256-entry table (docs/spec.md §4.10).
//!
//! The routine is TFLite's 8-bit fixed-point Logistic (uint8: `optimized_ops::Logistic`, which
//! TFLite's interpreter ran for uint8; int8: `reference_integer_ops::Logistic`) with the
//! parameters its Prepare computed from the input scale:
//!
//! - `input_multiplier`, `input_left_shift` = `QuantizeMultiplierGreaterThanOne(S_in * 2^27)`,
//!   which turns `q - Z_in` into Q4.27 (4 integer bits);
//! - `input_range_radius = CalculateInputRadius(4, input_left_shift, 31)
//!   = floor(15 * 2^27 / 2^input_left_shift)`, the largest `|q - Z_in|` whose rescaled value
//!   cannot overflow Q4.27.
//!
//! The two routines differ in one place: uint8 saturates inputs strictly *outside* the radius
//! (`optimized_ops`), int8 those *at or beyond* it (`reference_integer_ops`; also the
//! legacy uint8 `reference_ops`). They agree for `S_in < 2`; for larger scales the floor in the
//! radius makes the boundary codes' values differ, and each type follows its own TFLite kernel.

use crate::QElem;
use intq_quant::fixedpoint::{logistic as fixed_logistic, FixedPoint};
use intq_quant::{rounding_divide_by_pot, QuantParams, QuantizedMultiplier};

/// Integer bits of the rescaled input: Q4.27 covers `[-16, 16)`.
const INPUT_INTEGER_BITS: i32 = 4;

/// The Prepare-time integer parameters of TFLite's 8-bit Logistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogisticPrepared {
    pub input_zero_point: i32,
    pub input_multiplier: QuantizedMultiplier,
    pub input_range_radius: i32,
}

impl LogisticPrepared {
    /// TFLite's Prepare for an input with parameters `input`.
    ///
    /// Outside TFLite's domain the routine is extended rather than rejected, so that every
    /// positive scale gets a table: for `S_in <= 2^-27` (where TFLite's Prepare fails because the
    /// multiplier is not above 1) the multiplier keeps its negative shift and no input saturates;
    /// for `S_in >= 16` (a shift past 31) the radius is 0, the limit of TFLite's own formula, which
    /// already yields 0 for every `S_in >= 8` (and the multiplier is 0: only `q = Z` is computed,
    /// as logistic(0), and only by the uint8 routine).
    pub fn new(input: QuantParams) -> Self {
        let real = input.scale as f64 * (1i64 << (31 - INPUT_INTEGER_BITS)) as f64;
        let (input_multiplier, input_range_radius) = match QuantizedMultiplier::from_real(real) {
            Ok(m) if m.shift >= 0 => (m, calculate_input_radius(INPUT_INTEGER_BITS, m.shift)),
            Ok(m) => (m, i32::MAX),
            // Only non-finite or >= 2^31 multipliers fail: every input is far outside [-16, 16).
            Err(_) => (QuantizedMultiplier { m0: 0, shift: 0 }, 0),
        };
        LogisticPrepared {
            input_zero_point: input.zero_point,
            input_multiplier,
            input_range_radius,
        }
    }

    /// TFLite's per-element routine: the output code of input code `q` for an output type with
    /// limits `[qmin, qmax]` and zero point `qmin` (0 for uint8, -128 for int8), `S_out = 1/256`.
    /// `saturate_at_radius` picks int8's `|q - Z| >= radius` over uint8's `|q - Z| > radius`.
    pub fn eval(&self, q: i32, qmin: i32, qmax: i32, saturate_at_radius: bool) -> i32 {
        let centered = q - self.input_zero_point;
        let radius = self.input_range_radius;
        let (below, above) = if saturate_at_radius {
            (centered <= -radius, centered >= radius)
        } else {
            (centered < -radius, centered > radius)
        };
        if below {
            return qmin;
        }
        if above {
            return qmax;
        }
        // Shift >= 0 here is TFLite's MultiplyByQuantizedMultiplierGreaterThanOne exactly.
        let input_in_q4 = self.input_multiplier.apply(centered);
        let output_in_q0 =
            fixed_logistic(FixedPoint::<INPUT_INTEGER_BITS>::from_raw(input_in_q4)).raw();
        // Q0.31 to units of 1/256: a rounding shift by 31 - 8. The result is in [0, 256]; 256
        // (logistic rounding up to 1.0) is what uint8's `256 -> 255` and int8's clamp both catch.
        let in_256ths = rounding_divide_by_pot(output_in_q0, 31 - 8);
        (in_256ths + qmin).clamp(qmin, qmax)
    }
}

/// TFLite's `CalculateInputRadius(integer_bits, left_shift, 31)`:
/// `floor((2^integer_bits - 1) * 2^(31 - integer_bits) / 2^left_shift)`, the largest input whose
/// product with the multiplier (after the left shift) stays inside Q`integer_bits`.
pub(crate) fn calculate_input_radius(input_integer_bits: i32, input_left_shift: i32) -> i32 {
    debug_assert!((0..=31).contains(&input_left_shift));
    let max_input_rescaled = ((1i64 << input_integer_bits) - 1) as f64
        * (1i64 << (31 - input_integer_bits)) as f64
        / (1i64 << input_left_shift) as f64;
    max_input_rescaled.floor() as i32
}

/// Output codes for every input code; output params are fixed at `S = 1/256`, `Z = 0` (uint8) or
/// `Z = -128` (int8).
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticTable<T: QElem> {
    pub table: Vec<T>,
}

impl<T: QElem> LogisticTable<T> {
    pub fn new(input: QuantParams) -> Self {
        let prepared = LogisticPrepared::new(input);
        // int8 is the only signed code type: it gets reference_integer_ops' boundary.
        let saturate_at_radius = T::MIN < 0;
        let table = (T::MIN..=T::MAX)
            .map(|q| T::from_i32_saturating(prepared.eval(q, T::MIN, T::MAX, saturate_at_radius)))
            .collect();
        LogisticTable { table }
    }
}

/// `output[i] = table[input[i]]`.
pub fn logistic<T: QElem>(input: &[T], table: &LogisticTable<T>, output: &mut [T]) {
    assert_eq!(input.len(), output.len(), "logistic keeps the shape");
    assert_eq!(
        table.table.len(),
        (T::MAX - T::MIN + 1) as usize,
        "table size"
    );
    for (o, &q) in output.iter_mut().zip(input) {
        *o = table.table[(q.to_i32() - T::MIN) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qp(scale: f32, zero_point: i32) -> QuantParams {
        QuantParams::new(scale, zero_point).unwrap()
    }

    #[test]
    fn prepare_hand_cases() {
        // S = 1/16: 2^-4 * 2^27 = 2^23 = 0.5 * 2^24 -> m0 = 2^30, shift 24;
        // radius floor(15 * 2^27 / 2^24) = 120.
        let p = LogisticPrepared::new(qp(0.0625, 7));
        assert_eq!(
            p,
            LogisticPrepared {
                input_zero_point: 7,
                input_multiplier: QuantizedMultiplier {
                    m0: 1 << 30,
                    shift: 24
                },
                input_range_radius: 120,
            }
        );
        // S = 0.1f = 13421773 * 2^-27: times 2^27 it is 13421773 = 0.80000001 * 2^24, so
        // m0 = 13421773 * 2^7 = 1717986944 and the radius is 120 again.
        let p = LogisticPrepared::new(qp(0.1, 0));
        assert_eq!(p.input_multiplier.m0, 1_717_986_944);
        assert_eq!((p.input_multiplier.shift, p.input_range_radius), (24, 120));
        // S = 1: shift 28, radius floor(15 / 2) = 7.
        let p = LogisticPrepared::new(qp(1.0, 0));
        assert_eq!((p.input_multiplier.shift, p.input_range_radius), (28, 7));
    }

    #[test]
    fn radius_formula() {
        assert_eq!(calculate_input_radius(4, 0), 15 << 27);
        assert_eq!(calculate_input_radius(4, 27), 15);
        assert_eq!(calculate_input_radius(4, 31), 0);
        assert_eq!(calculate_input_radius(5, 26), 31);
        assert_eq!(calculate_input_radius(5, 23), 248);
    }

    /// The two boundary conventions agree for `S_in < 2`: the radius is then at least 3 and
    /// `radius * S_in >= 6.24`, where logistic already rounds to the saturated code. Above, they
    /// differ only at `|q - Z| == radius`.
    #[test]
    fn boundary_conventions_differ_only_at_the_radius_and_only_for_large_scales() {
        let mut s = 2f32.powi(-9);
        let mut differed = false;
        while s < 16.0 {
            for z in [0, 1, 77, 128, 200, 254, 255] {
                let p = LogisticPrepared::new(qp(s, z));
                for q in 0..=255 {
                    let strict = p.eval(q, 0, 255, false);
                    let inclusive = p.eval(q, 0, 255, true);
                    if strict != inclusive {
                        differed = true;
                        assert!(s >= 2.0, "S={s} Z={z} q={q}");
                        assert_eq!((q - z).abs(), p.input_range_radius, "S={s} Z={z} q={q}");
                    }
                }
            }
            s *= 1.37;
        }
        assert!(differed, "large scales must expose the boundary difference");
    }

    #[test]
    fn boundary_hand_case() {
        // S = 4: real multiplier 2^29 -> shift 30, radius floor(15 * 2^27 / 2^30) = 1.
        // q - Z = 1 is 4.0; logistic(4) = 0.98201 * 256 = 251.4 -> 251 with uint8's strict
        // boundary, 255 with int8's inclusive one. q - Z = -1 mirrors: 4.6 -> 5, or 0.
        let p = LogisticPrepared::new(qp(4.0, 100));
        assert_eq!(p.input_range_radius, 1);
        assert_eq!(p.eval(101, 0, 255, false), 251);
        assert_eq!(p.eval(101, 0, 255, true), 255);
        assert_eq!(p.eval(99, 0, 255, false), 5);
        assert_eq!(p.eval(99, 0, 255, true), 0);
        assert_eq!(p.eval(100, 0, 255, false), 128);
        assert_eq!(p.eval(102, 0, 255, false), 255);
    }
}
