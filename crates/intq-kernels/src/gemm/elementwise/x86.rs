//! MUL on AVX2 and AVX-512 and HARD_SWISH on AVX-512 vectors, step for step the reference's
//! integer arithmetic: MUL's wrapping int32 product and MultiplyByQuantizedMultiplier
//! (docs/spec.md §11.1), HARD_SWISH's int16 fixed point with TFLite's truncating multiply and
//! truncated mask (§11.5). The callers check each kernel's preconditions on the parameters.

use crate::gemm::Code8;
use crate::reference::{HardSwishParams, MulParams};
use std::arch::x86_64::*;

/// MultiplyByQuantizedMultiplier's constants for 8 lanes (`m0 >= 0`, shift in -31..=31).
#[derive(Clone, Copy)]
struct Mbqm256 {
    m0: __m256i,
    left: __m256i,
    right: __m256i,
    mask: __m256i,
    half: __m256i,
}

impl Mbqm256 {
    #[inline]
    #[target_feature(enable = "avx2")]
    fn new(m: intq_quant::QuantizedMultiplier) -> Self {
        let right = (-m.shift).clamp(0, 31);
        let mask = ((1i64 << right) - 1) as i32;
        Mbqm256 {
            m0: _mm256_set1_epi32(m.m0),
            left: _mm256_set1_epi32(m.shift.max(0)),
            right: _mm256_set1_epi32(right),
            mask: _mm256_set1_epi32(mask),
            half: _mm256_set1_epi32(mask >> 1),
        }
    }

    /// The wrapping left shift, the 64-bit products of the even and odd lanes with the
    /// nudge (`m0 >= 0`, so no product saturates), then RoundingDivideByPOT.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn apply(&self, x: __m256i) -> __m256i {
        let x = _mm256_sllv_epi32(x, self.left);
        let nudge = _mm256_set1_epi64x(1 << 30);
        let even = _mm256_add_epi64(_mm256_mul_epi32(x, self.m0), nudge);
        let odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64::<32>(x), self.m0), nudge);
        let x = _mm256_blend_epi32::<0b1010_1010>(
            _mm256_srli_epi64::<31>(even),
            _mm256_slli_epi64::<1>(odd),
        );
        let rem = _mm256_and_si256(x, self.mask);
        let neg = _mm256_cmpgt_epi32(_mm256_setzero_si256(), x);
        let threshold = _mm256_sub_epi32(self.half, neg);
        let round = _mm256_cmpgt_epi32(rem, threshold);
        _mm256_sub_epi32(_mm256_srav_epi32(x, self.right), round)
    }
}

/// MultiplyByQuantizedMultiplier on 16 lanes: the AVX-512 GEMM output stage's own.
use crate::isa::avx512vnni::Mbqm as Mbqm512;

/// Eight codes widened to int32 lanes.
///
/// # Safety
/// The CPU has AVX2; `ptr` is valid for 8 reads.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn widen8<T: Code8>(ptr: *const T) -> __m256i {
    // SAFETY: the caller's contract.
    let v = unsafe { _mm_loadl_epi64(ptr as *const __m128i) };
    if T::MIN == 0 {
        _mm256_cvtepu8_epi32(v)
    } else {
        _mm256_cvtepi8_epi32(v)
    }
}

/// Sixteen int32 lanes (`a` then `b`) saturated to `T` and stored, as `from_i32_saturating`
/// does per code: the saturating packs to int16 then to 8 bits clamp to the type's range.
///
/// # Safety
/// The CPU has AVX2; `out` is valid for 16 writes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store16_sat<T: Code8>(a: __m256i, b: __m256i, out: *mut T) {
    let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
    let (lo, hi) = (_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
    let v = if T::MIN == 0 {
        _mm_packus_epi16(lo, hi)
    } else {
        _mm_packs_epi16(lo, hi)
    };
    // SAFETY: the caller's contract.
    unsafe { _mm_storeu_si128(out as *mut __m128i, v) }
}

/// Quantized MUL of equal-length operands, 16 codes a step (the tail through
/// `MulParams::apply`): `clamp(Z_out + M (a - Z_a)(b - Z_b))` with the int32 product wrapping
/// as the reference's does.
///
/// # Safety
/// The CPU has AVX2; the three slices have the same length; `elementwise::mul_vector_ok` holds.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn mul_avx2<T: Code8>(p: &MulParams, lhs: &[T], rhs: &[T], out: &mut [T]) {
    let (za, zb, zo) = (
        _mm256_set1_epi32(p.lhs_zero_point),
        _mm256_set1_epi32(p.rhs_zero_point),
        _mm256_set1_epi32(p.output_zero_point),
    );
    let (lo, hi) = (
        _mm256_set1_epi32(p.clamp_min),
        _mm256_set1_epi32(p.clamp_max),
    );
    let m = Mbqm256::new(p.multiplier);
    let n = out.len();
    debug_assert!(lhs.len() == n && rhs.len() == n);
    let one = |a: __m256i, b: __m256i| {
        let prod = _mm256_mullo_epi32(_mm256_sub_epi32(a, za), _mm256_sub_epi32(b, zb));
        let o = _mm256_add_epi32(m.apply(prod), zo);
        _mm256_min_epi32(_mm256_max_epi32(o, lo), hi)
    };
    let whole = n / 16 * 16;
    for i in (0..whole).step_by(16) {
        // SAFETY: i + 16 <= n for all three slices (equal lengths, the caller's contract).
        unsafe {
            let (a, b) = (lhs.as_ptr().add(i), rhs.as_ptr().add(i));
            let r0 = one(widen8(a), widen8(b));
            let r1 = one(widen8(a.add(8)), widen8(b.add(8)));
            store16_sat(r0, r1, out.as_mut_ptr().add(i));
        }
    }
    for i in whole..n {
        out[i] = T::from_i32_saturating(p.apply(lhs[i].to_i32(), rhs[i].to_i32()));
    }
}

/// [`mul_avx2`] on 512-bit vectors, 16 codes a step.
///
/// # Safety
/// The CPU has AVX-512 F/BW; the three slices have the same length; `elementwise::mul_vector_ok` holds.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn mul_avx512<T: Code8>(p: &MulParams, lhs: &[T], rhs: &[T], out: &mut [T]) {
    let (za, zb, zo) = (
        _mm512_set1_epi32(p.lhs_zero_point),
        _mm512_set1_epi32(p.rhs_zero_point),
        _mm512_set1_epi32(p.output_zero_point),
    );
    // The clamp, then the type's range: together `from_i32_saturating` of the clamped value.
    let (lo, hi) = (
        _mm512_set1_epi32(p.clamp_min.max(T::MIN).min(T::MAX)),
        _mm512_set1_epi32(p.clamp_max.max(T::MIN).min(T::MAX)),
    );
    let m = Mbqm512::new(p.multiplier);
    let n = out.len();
    debug_assert!(lhs.len() == n && rhs.len() == n);
    let widen = |ptr: *const T| {
        // SAFETY: every call reads 16 codes below n (see the loop).
        let v = unsafe { _mm_loadu_si128(ptr as *const __m128i) };
        if T::MIN == 0 {
            _mm512_cvtepu8_epi32(v)
        } else {
            _mm512_cvtepi8_epi32(v)
        }
    };
    let whole = n / 16 * 16;
    for i in (0..whole).step_by(16) {
        // SAFETY: i + 16 <= n for all three slices (equal lengths, the caller's contract).
        unsafe {
            let a = _mm512_sub_epi32(widen(lhs.as_ptr().add(i)), za);
            let b = _mm512_sub_epi32(widen(rhs.as_ptr().add(i)), zb);
            let o = _mm512_add_epi32(m.apply(_mm512_mullo_epi32(a, b)), zo);
            // clamp(clamp(o, cmin, cmax), T) = clamp(o, clamp(cmin, T), clamp(cmax, T)) when
            // cmin <= cmax; the caller checked that.
            let o = _mm512_min_epi32(_mm512_max_epi32(o, lo), hi);
            _mm_storeu_si128(
                out.as_mut_ptr().add(i) as *mut __m128i,
                _mm512_cvtepi32_epi8(o),
            );
        }
    }
    for i in whole..n {
        out[i] = T::from_i32_saturating(p.apply(lhs[i].to_i32(), rhs[i].to_i32()));
    }
}

/// HARD_SWISH's constants as the vector steps use them.
struct HardSwishConsts {
    z_in: i16,
    z_out: i16,
    m_out: i16,
    m_relu: i16,
    /// `e_r - 1` and 1 when `e_r > 0`: the two saturating left shifts.
    relu_shl: Option<(Shl16, Shl16)>,
    /// `-e_r` when `e_r < 0`.
    relu_div: Option<Rdbp16>,
    out_div: Rdbp16,
}

/// `sat_shl(v, k)`: values above `hi` saturate to the maximum, below `lo` to the minimum.
#[derive(Clone, Copy)]
struct Shl16 {
    k: i64,
    hi: i16,
    lo: i16,
}

impl Shl16 {
    fn new(k: i32) -> Self {
        Shl16 {
            k: k as i64,
            hi: if k >= 15 { 0 } else { i16::MAX >> k },
            lo: if k >= 16 {
                0
            } else {
                (-(32768i32 >> k)) as i16
            },
        }
    }
}

/// `rdbp16(x, e)` as the reference writes it: the mask `(1 << e) - 1` truncated to int16 (so
/// `-1` from `e = 16` on), the threshold `mask >> 1` plus one for negative `x`, and an
/// arithmetic shift by `e` (all sign bits from 16 on).
#[derive(Clone, Copy)]
struct Rdbp16 {
    e: i64,
    mask: i16,
}

impl Rdbp16 {
    fn new(e: i32) -> Self {
        Rdbp16 {
            e: e as i64,
            mask: ((1i64 << e) - 1) as i16,
        }
    }
}

impl HardSwishConsts {
    fn new(p: &HardSwishParams) -> Self {
        let e = p.reluish_exponent;
        HardSwishConsts {
            // The reference narrows `q - Z_in` and `o + Z_out` to int16, so the zero points
            // act modulo 2^16.
            z_in: p.input_zero_point as i16,
            z_out: p.output_zero_point as i16,
            m_out: p.output_multiplier,
            m_relu: p.reluish_multiplier,
            relu_shl: (e > 0).then(|| (Shl16::new(e - 1), Shl16::new(1))),
            relu_div: (e < 0).then(|| Rdbp16::new(-e)),
            out_div: Rdbp16::new(-p.output_exponent),
        }
    }
}

/// The int16 steps of HARD_SWISH on one vector type (AVX-512's 32 lanes; AVX2's 16 lanes are no
/// faster than the portable tier's table, which that tier runs instead).
macro_rules! hard_swish_steps {
    (
        $v:ty, $feature:literal, $name:ident,
        set1 = $set1:ident, add = $add:ident, sub = $sub:ident, and = $and:ident, or = $or:ident,
        xor = $xor:ident, mulhrs = $mulhrs:ident, mulhi = $mulhi:ident, mullo = $mullo:ident,
        slli = $slli:ident, srli = $srli:ident, sra = $sra:ident, sll = $sll:ident,
        max = $max:ident, min = $min:ident,
        gt = |$ga:ident, $gb:ident| $gt:expr,
        select = |$sm:ident, $sa:ident, $sb:ident| $select:expr,
        eq_min_fix = |$fx:ident| $fix:expr
    ) => {
        /// The int16 lanes of HARD_SWISH: codes in, output codes (clamped to `T`) out.
        #[inline]
        #[target_feature(enable = $feature)]
        fn $name<T: Code8>(c: &HardSwishConsts, q: $v) -> $v {
            // Every lane mask is all ones or all zeros.
            let gt = |$ga: $v, $gb: $v| -> $v { $gt };
            let select = |$sm: $v, $sa: $v, $sb: $v| -> $v { $select };
            // `MIN * MIN` is the one product a 16-bit high multiply wraps (to MIN); the
            // reference saturates it to MAX, which MIN - 1 wraps to.
            let fix = |$fx: $v| -> $v { $fix };
            let srdhm = |a: $v, b: $v| fix($mulhrs(a, b));
            // (a b) / 2^15 truncated: floor from the high and low halves of the product, plus
            // one where the product is negative and not a multiple of 2^15.
            let sdhm = |a: $v, b: $v| {
                let (hi, lo) = ($mulhi(a, b), $mullo(a, b));
                let floor = $or($slli::<1>(hi), $srli::<15>(lo));
                let zero = $set1(0);
                let inexact = gt($and(lo, $set1(0x7fff)), zero);
                let neg = gt(zero, hi);
                fix($sub(floor, $and(neg, inexact)))
            };
            let rdbp = |x: $v, d: Rdbp16| {
                let mask = $set1(d.mask);
                let rem = $and(x, mask);
                let threshold = $sub($set1(d.mask >> 1), gt($set1(0), x));
                $sub($sra(x, _mm_cvtsi64_si128(d.e)), gt(rem, threshold))
            };
            let shl = |x: $v, s: Shl16| {
                let v = $sll(x, _mm_cvtsi64_si128(s.k));
                let v = select(gt(x, $set1(s.hi)), $set1(i16::MAX), v);
                select(gt($set1(s.lo), x), $set1(i16::MIN), v)
            };
            let h = $slli::<7>($sub(q, $set1(c.z_in)));
            let pre = srdhm(h, $set1(c.m_out));
            let mut r = h;
            if let Some((s, _)) = c.relu_shl {
                r = shl(r, s);
            }
            r = srdhm(r, $set1(c.m_relu));
            if let Some((_, s)) = c.relu_shl {
                r = shl(r, s);
            }
            if let Some(d) = c.relu_div {
                r = rdbp(r, d);
            }
            // (r + 2^15) >> 1 on the unsigned 16-bit value r + 2^15.
            r = $srli::<1>($xor(r, $set1(i16::MIN)));
            let o = $add(rdbp(sdhm(r, pre), c.out_div), $set1(c.z_out));
            $min($max(o, $set1(T::MIN as i16)), $set1(T::MAX as i16))
        }
    };
}

hard_swish_steps!(
    __m512i,
    "avx512f,avx512bw",
    hard_swish_lanes_avx512,
    set1 = _mm512_set1_epi16,
    add = _mm512_add_epi16,
    sub = _mm512_sub_epi16,
    and = _mm512_and_si512,
    or = _mm512_or_si512,
    xor = _mm512_xor_si512,
    mulhrs = _mm512_mulhrs_epi16,
    mulhi = _mm512_mulhi_epi16,
    mullo = _mm512_mullo_epi16,
    slli = _mm512_slli_epi16,
    srli = _mm512_srli_epi16,
    sra = _mm512_sra_epi16,
    sll = _mm512_sll_epi16,
    max = _mm512_max_epi16,
    min = _mm512_min_epi16,
    gt = |a, b| _mm512_movm_epi16(_mm512_cmpgt_epi16_mask(a, b)),
    select = |m, a, b| _mm512_mask_mov_epi16(b, _mm512_movepi16_mask(m), a),
    eq_min_fix = |x| _mm512_add_epi16(
        x,
        _mm512_movm_epi16(_mm512_cmpeq_epi16_mask(x, _mm512_set1_epi16(i16::MIN)))
    )
);

/// TFLite's quantized HARD_SWISH, 32 codes a step in int16 lanes (the tail through
/// `hard_swish_code`).
///
/// # Safety
/// The CPU has AVX-512 F/BW; `input` and `out` have the same length; `elementwise::hard_swish_vector_ok`
/// holds.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn hard_swish_avx512<T: Code8>(p: &HardSwishParams, input: &[T], out: &mut [T]) {
    let c = HardSwishConsts::new(p);
    let n = out.len();
    debug_assert_eq!(input.len(), n);
    let whole = n / 32 * 32;
    for i in (0..whole).step_by(32) {
        // SAFETY: i + 32 <= n for both slices (equal lengths, the caller's contract).
        unsafe {
            let v = _mm256_loadu_si256(input.as_ptr().add(i) as *const __m256i);
            let q = if T::MIN == 0 {
                _mm512_cvtepu8_epi16(v)
            } else {
                _mm512_cvtepi8_epi16(v)
            };
            let o = hard_swish_lanes_avx512::<T>(&c, q);
            // In the type's range, so truncating each lane to a byte is the cast.
            _mm256_storeu_si256(
                out.as_mut_ptr().add(i) as *mut __m256i,
                _mm512_cvtepi16_epi8(o),
            );
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
