//! MUL and HARD_SWISH on NEON vectors, step for step the reference's integer arithmetic
//! (docs/spec.md §11.1, §11.5). NEON has the gemmlowp primitives as instructions: `vqrdmulh` is
//! SaturatingRoundingDoublingHighMul (int32 and int16), `vqshl` the saturating left shift, and
//! `vrshl` a rounding shift that RoundingDivideByPOT equals once negative values are moved down
//! by one. The callers check each kernel's preconditions on the parameters.

use crate::gemm::Code8;
use crate::reference::{HardSwishParams, MulParams};
use std::arch::aarch64::*;

/// Eight codes widened to int16 lanes.
///
/// # Safety
/// `ptr` is valid for 8 reads.
#[inline(always)]
unsafe fn widen8<T: Code8>(ptr: *const T) -> int16x8_t {
    // SAFETY: the caller's contract.
    unsafe {
        if T::MIN == 0 {
            vreinterpretq_s16_u16(vmovl_u8(vld1_u8(ptr as *const u8)))
        } else {
            vmovl_s8(vld1_s8(ptr as *const i8))
        }
    }
}

/// Eight int16 lanes saturated to `T` and stored.
///
/// # Safety
/// `out` is valid for 8 writes.
#[inline(always)]
unsafe fn store8_sat<T: Code8>(v: int16x8_t, out: *mut T) {
    // SAFETY: the caller's contract.
    unsafe {
        if T::MIN == 0 {
            vst1_u8(out as *mut u8, vqmovun_s16(v))
        } else {
            vst1_s8(out as *mut i8, vqmovn_s16(v))
        }
    }
}

/// Quantized MUL of equal-length operands, 8 codes a step (the tail through
/// `MulParams::apply`): the wrapping int32 product, the wrapping left shift, `vqrdmulh` (no
/// saturation: `m0 >= 0`), RoundingDivideByPOT as `vrshl` of the value moved down by one where
/// negative, the zero point, the clamp, and saturating narrows to `T`.
///
/// # Safety
/// The CPU has NEON (every aarch64 does); the three slices have the same length;
/// `elementwise::mul_vector_ok` holds.
pub(crate) unsafe fn mul_neon<T: Code8>(p: &MulParams, lhs: &[T], rhs: &[T], out: &mut [T]) {
    let n = out.len();
    debug_assert!(lhs.len() == n && rhs.len() == n);
    let whole = n / 8 * 8;
    // SAFETY: NEON is part of the aarch64 baseline; every access is below n (equal lengths).
    unsafe {
        let (za, zb, zo) = (
            vdupq_n_s32(p.lhs_zero_point),
            vdupq_n_s32(p.rhs_zero_point),
            vdupq_n_s32(p.output_zero_point),
        );
        let (lo, hi) = (vdupq_n_s32(p.clamp_min), vdupq_n_s32(p.clamp_max));
        let m0 = vdupq_n_s32(p.multiplier.m0);
        let left = vdupq_n_s32(p.multiplier.shift.max(0));
        let right = (-p.multiplier.shift).max(0);
        let down = vdupq_n_s32(-right);
        let one = |a: int32x4_t, b: int32x4_t| {
            let prod = vmulq_s32(vsubq_s32(a, za), vsubq_s32(b, zb));
            let mut x = vqrdmulhq_s32(vshlq_s32(prod, left), m0);
            if right > 0 {
                x = vqaddq_s32(x, vshrq_n_s32::<31>(x));
                x = vrshlq_s32(x, down);
            }
            vminq_s32(vmaxq_s32(vaddq_s32(x, zo), lo), hi)
        };
        for i in (0..whole).step_by(8) {
            let (a, b) = (widen8(lhs.as_ptr().add(i)), widen8(rhs.as_ptr().add(i)));
            let r0 = one(vmovl_s16(vget_low_s16(a)), vmovl_s16(vget_low_s16(b)));
            let r1 = one(vmovl_high_s16(a), vmovl_high_s16(b));
            store8_sat(
                vcombine_s16(vqmovn_s32(r0), vqmovn_s32(r1)),
                out.as_mut_ptr().add(i),
            );
        }
    }
    for i in whole..n {
        out[i] = T::from_i32_saturating(p.apply(lhs[i].to_i32(), rhs[i].to_i32()));
    }
}

/// `rdbp16(x, e)` as the reference writes it (the int16-truncated mask and its threshold).
///
/// # Safety
/// NEON is available (every aarch64 has it).
#[inline(always)]
unsafe fn rdbp16(x: int16x8_t, e: i32) -> int16x8_t {
    let mask = ((1i64 << e) - 1) as i16;
    // SAFETY: NEON is part of the aarch64 baseline.
    unsafe {
        let rem = vandq_s16(x, vdupq_n_s16(mask));
        let neg = vreinterpretq_s16_u16(vcltzq_s16(x));
        let threshold = vsubq_s16(vdupq_n_s16(mask >> 1), neg);
        let round = vreinterpretq_s16_u16(vcgtq_s16(rem, threshold));
        // A right shift by 16 or more leaves the sign bits, as the reference's shift does.
        vsubq_s16(vshlq_s16(x, vdupq_n_s16(-e as i16)), round)
    }
}

/// `(a b) / 2^15` truncated toward zero, `MIN * MIN` saturated: the int32 products, biased by
/// `2^15 - 1` where negative, shifted, and narrowed with saturation.
///
/// # Safety
/// NEON is available (every aarch64 has it).
#[inline(always)]
unsafe fn sdhm16(a: int16x8_t, b: int16x8_t) -> int16x8_t {
    // SAFETY: NEON is part of the aarch64 baseline.
    unsafe {
        let trunc = |p: int32x4_t| {
            let bias = vshrq_n_u32::<17>(vreinterpretq_u32_s32(vshrq_n_s32::<31>(p)));
            vshrq_n_s32::<15>(vaddq_s32(p, vreinterpretq_s32_u32(bias)))
        };
        let lo = trunc(vmull_s16(vget_low_s16(a), vget_low_s16(b)));
        let hi = trunc(vmull_high_s16(a, b));
        vcombine_s16(vqmovn_s32(lo), vqmovn_s32(hi))
    }
}

/// TFLite's quantized HARD_SWISH, 8 codes a step in int16 lanes (the tail through
/// `hard_swish_code`).
///
/// # Safety
/// The CPU has NEON (every aarch64 does); `input` and `out` have the same length;
/// `elementwise::hard_swish_vector_ok` holds.
pub(crate) unsafe fn hard_swish_neon<T: Code8>(p: &HardSwishParams, input: &[T], out: &mut [T]) {
    let n = out.len();
    debug_assert_eq!(input.len(), n);
    let whole = n / 8 * 8;
    let e_r = p.reluish_exponent;
    // SAFETY: NEON is part of the aarch64 baseline; every access is below n (equal lengths).
    unsafe {
        let z_in = vdupq_n_s16(p.input_zero_point as i16);
        let z_out = vdupq_n_s16(p.output_zero_point as i16);
        let (m_out, m_relu) = (
            vdupq_n_s16(p.output_multiplier),
            vdupq_n_s16(p.reluish_multiplier),
        );
        let (t_lo, t_hi) = (vdupq_n_s16(T::MIN as i16), vdupq_n_s16(T::MAX as i16));
        for i in (0..whole).step_by(8) {
            let h = vshlq_n_s16::<7>(vsubq_s16(widen8(input.as_ptr().add(i)), z_in));
            let pre = vqrdmulhq_s16(h, m_out);
            let mut r = h;
            if e_r > 0 {
                r = vqshlq_s16(r, vdupq_n_s16((e_r - 1) as i16));
            }
            r = vqrdmulhq_s16(r, m_relu);
            if e_r > 0 {
                r = vqshlq_s16(r, vdupq_n_s16(1));
            }
            if e_r < 0 {
                r = rdbp16(r, -e_r);
            }
            // (r + 2^15) >> 1 on the unsigned 16-bit value r + 2^15.
            let r = vreinterpretq_s16_u16(vshrq_n_u16::<1>(vreinterpretq_u16_s16(veorq_s16(
                r,
                vdupq_n_s16(i16::MIN),
            ))));
            let o = vaddq_s16(rdbp16(sdhm16(r, pre), -p.output_exponent), z_out);
            store8_sat(vminq_s16(vmaxq_s16(o, t_lo), t_hi), out.as_mut_ptr().add(i));
        }
    }
    for i in whole..n {
        out[i] = T::from_i32_saturating(crate::reference::hard_swish_code(
            input[i].to_i32(),
            p,
            T::MIN,
            T::MAX,
        ));
    }
}
