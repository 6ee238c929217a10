//! The AVX-512 VNNI tier: an 8 x 32 int32 tile accumulated with `vpdpbusd` (u8 x s8, four
//! products per lane), and the output stage in registers.
//!
//! `vpdpbusd` sums four u8 x s8 products into int32 without intermediate saturation (|sum| <=
//! 4 * 255 * 128), then adds with wrap-around, so it is exact like the reference. The operands
//! are the GEMM's canonical ones (activations u8, weights s8; see `gemm`), which is how uint8 x
//! uint8 and int8 x int8 models both reach this instruction.

use std::arch::x86_64::*;

use crate::gemm::{Epilogue, Kernel};

pub(crate) struct Vnni;

const MR: usize = 8;
const NR: usize = 32;
const KG: usize = 4;

impl Kernel for Vnni {
    const MR: usize = MR;
    const NR: usize = NR;
    const KG: usize = KG;
    type A = u8;
    type B = i8;
    fn a_elem(x: u8) -> u8 {
        x
    }
    fn b_elem(w: i8) -> i8 {
        w
    }
    unsafe fn tile(
        c: *mut i32,
        first: bool,
        last: bool,
        groups: usize,
        a: *const u8,
        b: *const i8,
        rowsum: *const i32,
        epi: &Epilogue,
        n0: usize,
        out: *mut u8,
        ldc: usize,
        rows: usize,
        cols: usize,
    ) {
        tile(
            c, first, last, groups, a, b, rowsum, epi, n0, out, ldc, rows, cols,
        )
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    c: *mut i32,
    first: bool,
    last: bool,
    groups: usize,
    a: *const u8,
    b: *const i8,
    rowsum: *const i32,
    epi: &Epilogue,
    n0: usize,
    out: *mut u8,
    ldc: usize,
    rows: usize,
    cols: usize,
) {
    let mut acc = [[_mm512_setzero_si512(); 2]; MR];
    if !first {
        for (i, acc_i) in acc.iter_mut().enumerate() {
            for (h, v) in acc_i.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(c.add(i * NR + 16 * h) as *const __m512i);
            }
        }
    }
    let (mut ap, mut bp) = (a, b);
    for _ in 0..groups {
        let b0 = _mm512_loadu_si512(bp as *const __m512i);
        let b1 = _mm512_loadu_si512(bp.add(16 * KG) as *const __m512i);
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_epi32((ap.add(i * KG) as *const i32).read_unaligned());
            acc_i[0] = _mm512_dpbusd_epi32(acc_i[0], av, b0);
            acc_i[1] = _mm512_dpbusd_epi32(acc_i[1], av, b1);
        }
        ap = ap.add(MR * KG);
        bp = bp.add(NR * KG);
    }
    if !last {
        for (i, acc_i) in acc.iter().enumerate() {
            for (h, &v) in acc_i.iter().enumerate() {
                _mm512_storeu_si512(c.add(i * NR + 16 * h) as *mut __m512i, v);
            }
        }
        return;
    }
    if epi.vector_ok {
        for (i, acc_i) in acc.iter().enumerate() {
            if i >= rows {
                break;
            }
            let rs = _mm512_set1_epi32(*rowsum.add(i));
            for (h, &v) in acc_i.iter().enumerate() {
                if 16 * h >= cols {
                    break;
                }
                let q = requant(v, rs, epi, n0 + 16 * h);
                let count = (cols - 16 * h).min(16);
                let mask: __mmask16 = if count == 16 {
                    0xffff
                } else {
                    (1u16 << count) - 1
                };
                _mm512_mask_cvtepi32_storeu_epi8(out.add(i * ldc + 16 * h) as *mut _, mask, q);
            }
        }
    } else {
        let mut raw = [0i32; MR * NR];
        for (i, acc_i) in acc.iter().enumerate() {
            for (h, &v) in acc_i.iter().enumerate() {
                _mm512_storeu_si512(raw.as_mut_ptr().add(i * NR + 16 * h) as *mut __m512i, v);
            }
        }
        epi.finish_scalar(&raw, NR, rowsum, n0, out, ldc, rows, cols);
    }
}

/// The output stage on 16 columns starting at `n`; the same steps as the AVX2 tier's.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn requant(acc: __m512i, rowsum: __m512i, epi: &Epilogue, n: usize) -> __m512i {
    let ld = |v: &Vec<i32>| _mm512_loadu_si512(v.as_ptr().add(n) as *const __m512i);
    let mut x = _mm512_add_epi32(acc, ld(&epi.colconst));
    x = _mm512_sub_epi32(x, _mm512_mullo_epi32(ld(&epi.zw), rowsum));
    x = _mm512_sllv_epi32(x, ld(&epi.lshift));
    let m = ld(&epi.m0);
    let nudge = _mm512_set1_epi64(1 << 30);
    let even = _mm512_add_epi64(_mm512_mul_epi32(x, m), nudge);
    let odd = _mm512_add_epi64(
        _mm512_mul_epi32(_mm512_srli_epi64::<32>(x), _mm512_srli_epi64::<32>(m)),
        nudge,
    );
    x = _mm512_mask_blend_epi32(
        0xAAAA,
        _mm512_srli_epi64::<31>(even),
        _mm512_slli_epi64::<1>(odd),
    );
    let e = ld(&epi.rshift);
    let one = _mm512_set1_epi32(1);
    let mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, e), one);
    let rem = _mm512_and_si512(x, mask);
    let neg = _mm512_cmplt_epi32_mask(x, _mm512_setzero_si512());
    let half = _mm512_srli_epi32::<1>(mask);
    let threshold = _mm512_mask_add_epi32(half, neg, half, one);
    let round = _mm512_cmpgt_epi32_mask(rem, threshold);
    let q = _mm512_srav_epi32(x, e);
    x = _mm512_mask_add_epi32(q, round, q, one);
    x = _mm512_max_epi32(x, _mm512_set1_epi32(epi.lo));
    x = _mm512_min_epi32(x, _mm512_set1_epi32(epi.hi));
    _mm512_add_epi32(x, _mm512_set1_epi32(epi.zout))
}

/// The output stage on one row of complete accumulators, with no row-sum term (the depthwise
/// kernel's finish).
///
/// # Safety
/// The CPU has AVX-512 F/BW; `epi`'s columns cover `acc.len()` rounded up to 16;
/// `out.len() == acc.len()`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn finish_row(epi: &Epilogue, acc: &[i32], out: &mut [u8]) {
    if !epi.vector_ok {
        for (n, (o, &a)) in out.iter_mut().zip(acc).enumerate() {
            *o = epi.scalar(a, 0, n);
        }
        return;
    }
    let zero = _mm512_setzero_si512();
    for n in (0..acc.len()).step_by(16) {
        let count = (acc.len() - n).min(16);
        let mask: __mmask16 = if count == 16 {
            0xffff
        } else {
            (1u16 << count) - 1
        };
        let v = _mm512_maskz_loadu_epi32(mask, acc.as_ptr().add(n));
        let q = requant(v, zero, epi, n);
        _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(n) as *mut _, mask, q);
    }
}
