//! Reference MUL, SUB, MAXIMUM and MINIMUM for 8-bit codes with NumPy broadcasting, as TFLite's
//! reference kernels compute them (docs/spec.md §11.1, §11.2, §11.9): MUL rescales the product of
//! the offset codes by one fixed-point multiplier `S1 S2 / S_out` formed in f32
//! (`MulElementwise`); SUB is ADD's arithmetic with the second operand negated
//! (`SubElementwise`, `BroadcastQuantSubSlow`); MAXIMUM and MINIMUM compare raw codes
//! (`MaximumMinimumBroadcastSlow`), so all three tensors share `(S, Z)`.

use super::AddParams;
use crate::QElem;
use intq_quant::{QuantError, QuantParams, QuantizedMultiplier};

/// The largest rank the binary ops broadcast over, as TFLite's `BroadcastMul6DSlow`.
pub const MAX_BINARY_RANK: usize = 6;

/// Everything MUL needs, derived once from the three tensors' parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MulParams {
    pub lhs_zero_point: i32,
    pub rhs_zero_point: i32,
    pub output_zero_point: i32,
    /// `QuantizeMultiplier(S1 * S2 / S_out)`, the product and quotient rounded in f32.
    pub multiplier: QuantizedMultiplier,
    pub clamp_min: i32,
    pub clamp_max: i32,
}

impl MulParams {
    /// TFLite's Prepare: `double real_multiplier = S1 * S2 / S_out` evaluates in f32 (the
    /// scales are floats) before it is widened, so the f32 rounding is part of the multiplier.
    pub fn new(
        lhs: QuantParams,
        rhs: QuantParams,
        output: QuantParams,
        clamp_min: i32,
        clamp_max: i32,
    ) -> Result<Self, QuantError> {
        for s in [lhs.scale, rhs.scale, output.scale] {
            if !(s > 0.0 && s.is_finite()) {
                return Err(QuantError::BadScale(s as f64));
            }
        }
        let real = (lhs.scale * rhs.scale / output.scale) as f64;
        Ok(MulParams {
            lhs_zero_point: lhs.zero_point,
            rhs_zero_point: rhs.zero_point,
            output_zero_point: output.zero_point,
            multiplier: QuantizedMultiplier::from_real(real)?,
            clamp_min,
            clamp_max,
        })
    }

    /// The output code of one pair of input codes.
    #[inline]
    pub fn apply(&self, lhs: i32, rhs: i32) -> i32 {
        // |q - Z| <= 255 for codes and zero points of one 8-bit type: the product fits in i32.
        let product = lhs
            .wrapping_sub(self.lhs_zero_point)
            .wrapping_mul(rhs.wrapping_sub(self.rhs_zero_point));
        self.output_zero_point
            .wrapping_add(self.multiplier.apply(product))
            .clamp(self.clamp_min, self.clamp_max)
    }
}

/// SUB's parameters: those of ADD (docs/spec.md §4.6), which TFLite's `PrepareGeneralSubOp`
/// computes identically, with the same refusal of multipliers that are not below 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubParams {
    pub add: AddParams,
}

impl SubParams {
    pub fn new(
        lhs: QuantParams,
        rhs: QuantParams,
        output: QuantParams,
        clamp_min: i32,
        clamp_max: i32,
    ) -> Result<Self, QuantError> {
        Ok(SubParams {
            add: AddParams::new(lhs, rhs, output, clamp_min, clamp_max)?,
        })
    }

    /// The output code of `lhs - rhs` (TFLite's `SubElementwise` body).
    #[inline]
    pub fn apply(&self, lhs: i32, rhs: i32) -> i32 {
        let p = &self.add;
        let shifted_lhs = lhs.wrapping_sub(p.lhs_zero_point) << p.left_shift;
        let shifted_rhs = rhs.wrapping_sub(p.rhs_zero_point) << p.left_shift;
        let raw = p
            .lhs_multiplier
            .apply(shifted_lhs)
            .wrapping_sub(p.rhs_multiplier.apply(shifted_rhs));
        p.output_multiplier
            .apply(raw)
            .wrapping_add(p.output_zero_point)
            .clamp(p.clamp_min, p.clamp_max)
    }
}

/// Row-major strides of `shape` right-aligned to `rank`, 0 along broadcast (size-1) axes (an
/// array, so a run allocates nothing).
fn strides(shape: &[usize], rank: usize) -> [usize; MAX_BINARY_RANK] {
    let mut out = [0; MAX_BINARY_RANK];
    let mut stride = 1;
    for k in 0..shape.len() {
        let d = shape[shape.len() - 1 - k];
        out[rank - 1 - k] = if d == 1 { 0 } else { stride };
        stride *= d;
    }
    out
}

/// `output[i] = f(lhs[..], rhs[..])` over the NumPy broadcast of the two shapes: the one
/// broadcast walk of every binary reference op (ADD included).
pub(super) fn broadcast_binary<T: QElem>(
    lhs: &[T],
    lhs_shape: &[usize],
    rhs: &[T],
    rhs_shape: &[usize],
    output: &mut [T],
    output_shape: &[usize],
    f: impl Fn(i32, i32) -> i32,
) {
    let rank = output_shape.len();
    assert!(
        rank <= MAX_BINARY_RANK && lhs_shape.len() <= rank && rhs_shape.len() <= rank,
        "binary op: ranks {lhs_shape:?}, {rhs_shape:?} -> {output_shape:?}"
    );
    for (shape, what) in [(lhs_shape, "lhs"), (rhs_shape, "rhs")] {
        let offset = rank - shape.len();
        for (k, &d) in shape.iter().enumerate() {
            assert!(
                d == output_shape[k + offset] || d == 1,
                "binary op: {what} {shape:?} does not broadcast to {output_shape:?}"
            );
        }
    }
    assert_eq!(lhs.len(), lhs_shape.iter().product::<usize>(), "lhs length");
    assert_eq!(rhs.len(), rhs_shape.iter().product::<usize>(), "rhs length");
    assert_eq!(
        output.len(),
        output_shape.iter().product::<usize>(),
        "output length"
    );
    if lhs_shape == rhs_shape {
        for ((o, &a), &b) in output.iter_mut().zip(lhs).zip(rhs) {
            *o = T::from_i32_saturating(f(a.to_i32(), b.to_i32()));
        }
        return;
    }
    let (ls, rs) = (strides(lhs_shape, rank), strides(rhs_shape, rank));
    let mut index = [0usize; MAX_BINARY_RANK];
    let (mut li, mut ri) = (0usize, 0usize);
    for o in output.iter_mut() {
        *o = T::from_i32_saturating(f(lhs[li].to_i32(), rhs[ri].to_i32()));
        for d in (0..rank).rev() {
            index[d] += 1;
            li += ls[d];
            ri += rs[d];
            if index[d] < output_shape[d] {
                break;
            }
            li -= ls[d] * output_shape[d];
            ri -= rs[d] * output_shape[d];
            index[d] = 0;
        }
    }
}

/// Elementwise `lhs * rhs` with NumPy broadcasting (rank up to 6); `output_shape` is the
/// broadcast shape.
pub fn mul<T: QElem>(
    lhs: &[T],
    lhs_shape: &[usize],
    rhs: &[T],
    rhs_shape: &[usize],
    params: &MulParams,
    output: &mut [T],
    output_shape: &[usize],
) {
    broadcast_binary(
        lhs,
        lhs_shape,
        rhs,
        rhs_shape,
        output,
        output_shape,
        |a, b| params.apply(a, b),
    );
}

/// Elementwise `lhs - rhs` with NumPy broadcasting (rank up to 6); `output_shape` is the
/// broadcast shape.
pub fn sub<T: QElem>(
    lhs: &[T],
    lhs_shape: &[usize],
    rhs: &[T],
    rhs_shape: &[usize],
    params: &SubParams,
    output: &mut [T],
    output_shape: &[usize],
) {
    broadcast_binary(
        lhs,
        lhs_shape,
        rhs,
        rhs_shape,
        output,
        output_shape,
        |a, b| params.apply(a, b),
    );
}

/// Elementwise `max(lhs, rhs)` (or `min` when `maximum` is false) of codes with NumPy
/// broadcasting.
pub fn maximum_minimum<T: QElem>(
    lhs: &[T],
    lhs_shape: &[usize],
    rhs: &[T],
    rhs_shape: &[usize],
    maximum: bool,
    output: &mut [T],
    output_shape: &[usize],
) {
    broadcast_binary(
        lhs,
        lhs_shape,
        rhs,
        rhs_shape,
        output,
        output_shape,
        |a, b| if maximum { a.max(b) } else { a.min(b) },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(scale: f32, zero_point: i32) -> QuantParams {
        QuantParams { scale, zero_point }
    }

    #[test]
    fn mul_multiplier_is_formed_in_f32() {
        // 0.1f * 0.3f / 0.7f in f32 differs from the same in f64 in the last bits; the
        // multiplier must be the f32 result widened.
        let m = MulParams::new(p(0.1, 0), p(0.3, 0), p(0.7, 0), 0, 255).unwrap();
        let f32_real = (0.1f32 * 0.3f32 / 0.7f32) as f64;
        assert_eq!(
            m.multiplier,
            QuantizedMultiplier::from_real(f32_real).unwrap()
        );
    }

    #[test]
    fn mul_hand_cases() {
        // S1 = S2 = 0.5, S_out = 0.25: M = 1, so the output code is Z_out + (a-Z1)(b-Z2).
        let m = MulParams::new(p(0.5, 10), p(0.5, 0), p(0.25, 3), 0, 255).unwrap();
        assert_eq!(m.apply(12, 5), 3 + 2 * 5);
        assert_eq!(m.apply(9, 200), 0); // 3 - 200 clamps at 0
        assert_eq!(m.apply(255, 255), 255);
        // int8 extremes: Z = -128 and 127, S_out far larger: M = 1/1024.
        let m = MulParams::new(p(1.0, -128), p(1.0, 127), p(1024.0, 0), -128, 127).unwrap();
        // (127 + 128) * (-128 - 127) = -65025: the doubling high mul halves it to -32512.5,
        // ties toward +infinity (-32512), then the shift by 9 rounds -63.5 away from zero.
        assert_eq!(m.apply(127, -128), -64);
    }

    #[test]
    fn sub_negates_the_second_operand_of_add() {
        let (a, b, o) = (p(0.02, 128), p(0.05, 100), p(0.04, 120));
        let sub = SubParams::new(a, b, o, 0, 255).unwrap();
        // Real check: (q1 - 128) * 0.02 - (q2 - 100) * 0.05 within one step of the output.
        for q1 in (0..256).step_by(17) {
            for q2 in (0..256).step_by(13) {
                let real = (q1 - 128) as f64 * 0.02 - (q2 - 100) as f64 * 0.05;
                let exact = (120.0 + real / 0.04).clamp(0.0, 255.0);
                let got = sub.apply(q1, q2) as f64;
                assert!((got - exact).abs() <= 1.0, "{q1} {q2}: {got} vs {exact}");
            }
        }
        // An output scale too small for the 2^20 headroom is refused, as TFLite refuses it.
        assert!(SubParams::new(p(1.0, 0), p(1.0, 0), p(1e-7, 0), 0, 255).is_err());
    }

    #[test]
    fn broadcast_walks_numpy_order() {
        // [2, 1, 3] * [1, 2, 1] -> [2, 2, 3], with M = 1 and zero points 0.
        let m = MulParams::new(p(1.0, 0), p(1.0, 0), p(1.0, 0), -128, 127).unwrap();
        let a: Vec<i8> = vec![1, 2, 3, 4, 5, 6];
        let b: Vec<i8> = vec![10, -1];
        let mut out = vec![0i8; 12];
        mul(&a, &[2, 1, 3], &b, &[1, 2, 1], &m, &mut out, &[2, 2, 3]);
        assert_eq!(out, vec![10, 20, 30, -1, -2, -3, 40, 50, 60, -4, -5, -6]);
        // A scalar operand of rank 0 broadcasts to everything.
        let mut out = vec![0i8; 6];
        mul(&a, &[2, 3], &[-2i8], &[], &m, &mut out, &[2, 3]);
        assert_eq!(out, vec![-2, -4, -6, -8, -10, -12]);
    }
}
