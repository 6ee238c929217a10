//! The AVX-512 VNNI depthwise quad kernel: four taps of 64 channels per `vpdpbusd`, canonical u8
//! activations against s8 taps, the layout and exactness argument in
//! [`crate::gemm::depthwise::DwQuads`].
//!
//! Per pixel and block of 64 channels it loads each tap's 64 codes once (no widening), brings
//! the four taps of a quad together with two rounds of unpacks, and finishes the four vectors of
//! sums with the tier's output stage, packing them back into channel order with two rounds of
//! saturating packs: half the shuffles of the pair kernel per product, and a quarter of its
//! multiply-adds.

use std::arch::x86_64::*;

use crate::gemm::depthwise::DwQuadRun;
use crate::gemm::Code8;
use crate::isa::avx512vnni::{prefix_mask, Cols16};

/// A run of `npix` output pixels of a depthwise convolution with depth multiplier 1 (the
/// table's `dw_quads`).
///
/// # Safety
/// AVX-512 F/BW/VNNI are available; `offsets` holds `dw.ntaps` entries, each `usize::MAX`
/// (padded for the whole run) or such that every `offsets[t] + i * dw.step` (`i < npix`) starts
/// a pixel of `dw.oc` codes inside `dw.input`; `dw.w`, `dw.epi` and `dw.zc` are the plan's
/// `DwQuads` for these taps and channels; `out.len() == npix * dw.oc`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dw_quads<T: Code8>(
    dw: &DwQuadRun<T>,
    offsets: &[usize],
    npix: usize,
    out: &mut [u8],
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        debug_assert!(offsets.len() >= dw.ntaps && out.len() == npix * dw.oc);
        if dw.ntaps == 9 {
            run::<T, 9>(dw, offsets, npix, out)
        } else {
            run::<T, 0>(dw, offsets, npix, out)
        }
    }
}

/// [`dw_quads`] with `N` taps (`N == ntaps`, or 0 for any count).
///
/// # Safety
/// As [`dw_quads`], with `N` 0 or `dw.ntaps`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn run<T: Code8, const N: usize>(
    dw: &DwQuadRun<T>,
    offsets: &[usize],
    npix: usize,
    out: &mut [u8],
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let DwQuadRun {
            input,
            step,
            oc,
            w,
            epi,
            zc,
            ..
        } = *dw;
        let ntaps = if N > 0 { N } else { dw.ntaps };
        let quads = ntaps.div_ceil(4);
        let src = input.as_ptr() as *const u8;
        let flip = _mm512_set1_epi8(if T::A_OFFSET != 0 { -128 } else { 0 });
        let zcv = _mm512_set1_epi8(zc as i8);
        let zero = _mm512_setzero_si512();
        let dst = out.as_mut_ptr();
        for (blk, c0) in (0..oc).step_by(64).enumerate() {
            let wb = w.as_ptr().add(blk * quads * 256);
            let width = (oc - c0).min(64);
            let full = width == 64;
            // The last, partial block loads and stores only its own channels.
            let mask = prefix_mask(width);
            let cols = [
                Cols16::load(epi, c0),
                Cols16::load(epi, c0 + 16),
                Cols16::load(epi, c0 + 32),
                Cols16::load(epi, c0 + 48),
            ];
            for i in 0..npix {
                let base = i * step + c0;
                let tap = |t: usize| -> __m512i {
                    if t >= ntaps {
                        // A missing tap of the last quad: its weights are 0.
                        return zero;
                    }
                    let off = *offsets.get_unchecked(t);
                    if off == usize::MAX {
                        zcv
                    } else if full {
                        let v = _mm512_loadu_si512(src.add(off + base) as *const __m512i);
                        _mm512_xor_si512(v, flip)
                    } else {
                        let v = _mm512_maskz_loadu_epi8(mask, src.add(off + base) as *const i8);
                        _mm512_xor_si512(v, flip)
                    }
                };
                let mut acc = [zero; 4];
                for p in 0..quads {
                    let (a, b, c, d) = (tap(4 * p), tap(4 * p + 1), tap(4 * p + 2), tap(4 * p + 3));
                    let lo_ab = _mm512_unpacklo_epi8(a, b);
                    let hi_ab = _mm512_unpackhi_epi8(a, b);
                    let lo_cd = _mm512_unpacklo_epi8(c, d);
                    let hi_cd = _mm512_unpackhi_epi8(c, d);
                    let wp = wb.add(p * 256);
                    let wv = |v: usize| _mm512_loadu_si512(wp.add(64 * v) as *const __m512i);
                    acc[0] =
                        _mm512_dpbusd_epi32(acc[0], _mm512_unpacklo_epi16(lo_ab, lo_cd), wv(0));
                    acc[1] =
                        _mm512_dpbusd_epi32(acc[1], _mm512_unpackhi_epi16(lo_ab, lo_cd), wv(1));
                    acc[2] =
                        _mm512_dpbusd_epi32(acc[2], _mm512_unpacklo_epi16(hi_ab, hi_cd), wv(2));
                    acc[3] =
                        _mm512_dpbusd_epi32(acc[3], _mm512_unpackhi_epi16(hi_ab, hi_cd), wv(3));
                }
                // Written out: a helper such as `array::from_fn`, compiled without this
                // function's features, would take the vectors through memory.
                let q = [
                    cols[0].requant(acc[0], zero, epi),
                    cols[1].requant(acc[1], zero, epi),
                    cols[2].requant(acc[2], zero, epi),
                    cols[3].requant(acc[3], zero, epi),
                ];
                // Lane by lane, the packs interleave vectors 0 and 1 (channels 16L + 0..8),
                // 2 and 3 (16L + 8..16), then the two: channels 16L .. 16L + 16 in order. The
                // codes are in T's range (the plan's condition), so saturation never acts.
                let lo = _mm512_packs_epi32(q[0], q[1]);
                let hi = _mm512_packs_epi32(q[2], q[3]);
                let bytes = if T::A_OFFSET != 0 {
                    _mm512_packs_epi16(lo, hi)
                } else {
                    _mm512_packus_epi16(lo, hi)
                };
                let o = dst.add(i * oc + c0);
                if full {
                    _mm512_storeu_si512(o as *mut __m512i, bytes);
                } else {
                    _mm512_mask_storeu_epi8(o as *mut i8, mask, bytes);
                }
            }
        }
    }
}
