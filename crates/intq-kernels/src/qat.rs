//! Float kernels of quantization-aware training: the fused fake-quantization pass that
//! `intq-train` runs on every conv and fully-connected output.
//!
//! They live in this crate because ISA dispatch (and the `unsafe` it takes) lives here. Each
//! kernel is one generic body: the portable tier runs it as compiled for baseline x86-64 (SSE2
//! there), and the x86 tiers run the same body inside a `#[target_feature]` wrapper (AVX2 in
//! `isa/avx2.rs`, AVX-512 here; reached through the kernel table), where the compiler vectorizes
//! it two or four times as wide. The body uses only IEEE-exact operations (no fused
//! multiply-add: Rust never contracts), so every tier gives the same bits;
//! `tests/fast_tiers.rs` checks that on edge and random inputs.

use crate::gemm::Kernels;
use crate::isa::Isa;

/// The constants of one requantizing fake-quant pass over a conv or FC output: values are
/// clamped to the nudged range `[lo, hi]`, divided by `scale`, and rounded the way the integer
/// engine's requantization rounds (docs/spec.md §2.5): `t = floor(v 2^e + 0.5)`
/// (SaturatingRoundingDoublingHighMul), then `code = sign(t) floor(|t| 2^-e + 0.5)`
/// (RoundingDivideByPOT), where `e` is the output channel's right shift; the code, clamped to
/// `[qlo, qhi]` (the code range less the zero point), times `scale`, plus `zero`, is the result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequantFakeQuant {
    pub lo: f32,
    pub hi: f32,
    pub scale: f32,
    pub qlo: f32,
    pub qhi: f32,
    /// Added to every result: `+0.0` turns a `-0.0` result into `+0.0` (as autodiff's
    /// straight-through sum does), `-0.0` leaves every value as it is.
    pub zero: f32,
}

impl RequantFakeQuant {
    /// Fake-quantizes `x` (one output channel's values, right shift `e`) into `fq`, and with
    /// `mask` writes the straight-through mask (1 where `lo <= x <= hi`); returns whether every
    /// value of `x` is finite (the results for a non-finite value are unspecified). The same
    /// bits on every tier; `isa` is used only when the CPU has it.
    ///
    /// # Panics
    /// When `fq` or `mask` is not as long as `x`.
    pub fn block(
        &self,
        isa: Isa,
        e: i32,
        x: &[f32],
        fq: &mut [f32],
        mask: Option<&mut [u8]>,
    ) -> bool {
        assert_eq!(fq.len(), x.len(), "fake-quant output length");
        if let Some(m) = &mask {
            assert_eq!(m.len(), x.len(), "fake-quant mask length");
        }
        let kernels = Kernels::or_portable(isa);
        // SAFETY: the table is of a tier the CPU has; the lengths were checked above.
        unsafe { (kernels.fake_quant)(self, e, x, fq, mask) }
    }
}

/// [`RequantFakeQuant::block`] on the portable tier (baseline x86-64: SSE2 there).
pub(crate) fn fake_quant_portable(
    k: &RequantFakeQuant,
    e: i32,
    x: &[f32],
    fq: &mut [f32],
    mask: Option<&mut [u8]>,
) -> bool {
    fake_quant_body(k, e, x, fq, mask)
}

/// [`RequantFakeQuant::block`]'s body compiled for AVX-512 (the compiler vectorizes it sixteen
/// lanes wide; same operations, same bits): the table entry of the AVX-512 VNNI and AMX tiers.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512BW; `fq` (and `mask`, if any) are as long as `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn fake_quant_avx512(
    k: &RequantFakeQuant,
    e: i32,
    x: &[f32],
    fq: &mut [f32],
    mask: Option<&mut [u8]>,
) -> bool {
    fake_quant_body(k, e, x, fq, mask)
}

/// The one body of every tier's fake quantization: [`requant_fake_quant`] with or without the
/// mask.
#[inline(always)]
pub(crate) fn fake_quant_body(
    k: &RequantFakeQuant,
    e: i32,
    x: &[f32],
    fq: &mut [f32],
    mask: Option<&mut [u8]>,
) -> bool {
    match mask {
        Some(m) => requant_fake_quant::<true>(k, e, x, fq, m),
        None => requant_fake_quant::<false>(k, e, x, fq, &mut []),
    }
}

/// The body of [`RequantFakeQuant::block`] (`mask` is written only with `MASK`). Every branch
/// is a select the vectorizer can take, hence [`floor`].
#[inline(always)]
pub(crate) fn requant_fake_quant<const MASK: bool>(
    k: &RequantFakeQuant,
    e: i32,
    x: &[f32],
    fq: &mut [f32],
    mask: &mut [u8],
) -> bool {
    let RequantFakeQuant {
        lo,
        hi,
        scale,
        qlo,
        qhi,
        zero,
    } = *k;
    let p2 = 2f64.powi(e) as f32;
    let inv_p2 = 2f64.powi(-e) as f32;
    let one = |v: f32| {
        let xc = if v < lo {
            lo
        } else if v > hi {
            hi
        } else {
            v
        };
        let t = floor(xc / scale * p2 + 0.5);
        let sign = if t == 0.0 { 0.0 } else { 1f32.copysign(t) };
        let code = floor(t.abs() * inv_p2 + 0.5) * sign;
        code.clamp(qlo, qhi) * scale + zero
    };
    let mut finite = true;
    if MASK {
        for ((&v, f), m) in x.iter().zip(fq.iter_mut()).zip(mask.iter_mut()) {
            finite &= v.is_finite();
            *f = one(v);
            *m = u8::from(v >= lo && v <= hi);
        }
    } else {
        for (&v, f) in x.iter().zip(fq.iter_mut()) {
            finite &= v.is_finite();
            *f = one(v);
        }
    }
    finite
}

/// `y.floor()`, except that it is `+0.0` where `f32::floor` gives `-0.0` (the pass never
/// floors `-0.0`: its arguments are `v + 0.5`). Baseline x86-64 has no `roundps` (SSE4.1), so
/// `f32::floor` is a library call there, and a conversion through `i32` (saturating in Rust)
/// kept the loop scalar; this is float arithmetic only. Below 2^23 in magnitude, adding then
/// subtracting 2^23 (with `y`'s sign) rounds `y` to an integer exactly, and one step down where
/// that rounded up gives the floor; every float from 2^23 up is an integer (NaN stays NaN).
#[inline(always)]
fn floor(y: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let m = TWO_23.copysign(y);
    let r = (y + m) - m;
    let r = if r > y { r - 1.0 } else { r };
    if y.abs() < TWO_23 {
        r
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    /// [`super::floor`] equals `f32::floor` on every class of float (zero's sign aside),
    /// sampled across all 2^32 bit patterns with an odd stride, plus the integers and
    /// half-integers around 0, 2^22, 2^23 and 2^24.
    #[test]
    fn floor_is_f32_floor() {
        let check = |y: f32| {
            let (a, b) = (super::floor(y), y.floor());
            let same = a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0 && a.is_sign_positive());
            assert!(
                same || (a.is_nan() && b.is_nan()),
                "floor({y:e}) = {a:e}, expected {b:e}"
            );
        };
        let mut bits = 0u32;
        for _ in 0..(1u32 << 22) {
            check(f32::from_bits(bits));
            bits = bits.wrapping_add(1021);
        }
        for base in [
            0.0f32,
            1.0,
            4_194_304.0,
            8_388_607.0,
            8_388_608.0,
            16_777_216.0,
        ] {
            for s in [1.0f32, -1.0] {
                for d in [-1.5f32, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5] {
                    let y = base * s + d;
                    check(y);
                    check(f32::from_bits(y.to_bits().wrapping_add(1)));
                    check(f32::from_bits(y.to_bits().wrapping_sub(1)));
                }
            }
        }
    }
}
