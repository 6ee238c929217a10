//! The AVX-512 VNNI depthwise quad kernel: four taps of 64 channels per `vpdpbusd`, canonical u8
//! activations against s8 taps, the layout and exactness argument in
//! [`crate::gemm::depthwise::DwQuads`].
//!
//! Per block of 64 byte lanes (64 channels of a pixel, or 32 or 16 channels of two or four
//! consecutive pixels) it loads each tap's 64 codes once (no widening), brings the four taps of
//! a quad together with two rounds of unpacks, and finishes the four vectors of
//! sums with the tier's output stage, packing them back into channel order with two rounds of
//! saturating packs: half the shuffles of the pair kernel per product, and a quarter of its
//! multiply-adds.
//!
//! A 3x3 window stepping 1 or 2 along x takes its quads by window columns in the blocks of 64
//! channels, so that a pixel unpacks only the input columns the previous pixel's window did not
//! read.

use std::arch::x86_64::*;

use crate::gemm::depthwise::DwQuadRun;
use crate::gemm::{Code8, Epilogue};
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
        // The blocks of 64 channels of one pixel come first, up to `end` (the last may be
        // partly empty); then blocks of 32 or 16 channels of two or four pixels.
        let end = match dw.blocks.last() {
            Some(&(c0, 64)) => c0 + (oc - c0).min(64),
            _ => oc / 64 * 64,
        };
        if dw.cols3 && end > 0 {
            // A 3x3 window stepping 1 or 2 along x (the plan's condition).
            if step == oc {
                cols3::<T, 1>(dw, offsets, npix, out, end);
            } else {
                cols3::<T, 2>(dw, offsets, npix, out, end);
            }
        }
        let end_rows = if dw.cols3 { 0 } else { end };
        for (blk, c0) in (0..end_rows).step_by(64).enumerate() {
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
                    acc = quad_dot(acc, [a, b, c, d], wb.add(p * 256));
                }
                let bytes = requant_pack::<T>(acc, &cols, epi);
                let o = dst.add(i * oc + c0);
                if full {
                    _mm512_storeu_si512(o as *mut __m512i, bytes);
                } else {
                    _mm512_mask_storeu_epi8(o as *mut i8, mask, bytes);
                }
            }
        }
        for (blk, &(c0, width)) in dw.blocks.iter().enumerate().skip(end.div_ceil(64)) {
            if width == 32 {
                block::<T, N, 2>(dw, offsets, npix, out, blk, c0);
            } else {
                block::<T, N, 4>(dw, offsets, npix, out, blk, c0);
            }
        }
    }
}

/// The blocks of 64 channels (up to channel `end`) of a run of a 3x3 window stepping `S` (1 or
/// 2) along x, undilated, their quads by columns ([`DwQuads::cols3`](crate::gemm::depthwise::DwQuads)):
/// each pixel unpacks its new input columns only (one at stride 1, two at stride 2), the
/// others being the previous pixel's.
///
/// # Safety
/// As [`dw_quads`], with a 3x3 window stepping `S` along x, undilated (`dw.step` is `S` pixels
/// of `dw.oc` channels) and `dw.cols3`.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn cols3<T: Code8, const S: usize>(
    dw: &DwQuadRun<T>,
    offsets: &[usize],
    npix: usize,
    out: &mut [u8],
    end: usize,
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
        debug_assert!(dw.ntaps == 9 && step == S * oc);
        let src = input.as_ptr() as *const u8;
        let flip = _mm512_set1_epi8(if T::A_OFFSET != 0 { -128 } else { 0 });
        let zcv = _mm512_set1_epi8(zc as i8);
        let zero = _mm512_setzero_si512();
        let dst = out.as_mut_ptr();
        for (blk, c0) in (0..end).step_by(64).enumerate() {
            let wb = w.as_ptr().add(blk * 3 * 256);
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
            let tap = |i: usize, t: usize| -> __m512i {
                let off = *offsets.get_unchecked(t);
                if off == usize::MAX {
                    zcv
                } else if full {
                    let v = _mm512_loadu_si512(src.add(off + i * step + c0) as *const __m512i);
                    _mm512_xor_si512(v, flip)
                } else {
                    let at = src.add(off + i * step + c0) as *const i8;
                    _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, at), flip)
                }
            };
            // Column `fx` of pixel `i`'s window: its three taps' codes of a lane in one dword
            // (the fourth byte 0, against a zero weight), in the quads' lane order.
            macro_rules! column {
                ($i:expr, $fx:expr) => {{
                    let (i, fx): (usize, usize) = ($i, $fx);
                    let (a, b, c) = (tap(i, fx), tap(i, 3 + fx), tap(i, 6 + fx));
                    let lo_ab = _mm512_unpacklo_epi8(a, b);
                    let hi_ab = _mm512_unpackhi_epi8(a, b);
                    let lo_c = _mm512_unpacklo_epi8(c, zero);
                    let hi_c = _mm512_unpackhi_epi8(c, zero);
                    [
                        _mm512_unpacklo_epi16(lo_ab, lo_c),
                        _mm512_unpackhi_epi16(lo_ab, lo_c),
                        _mm512_unpacklo_epi16(hi_ab, hi_c),
                        _mm512_unpackhi_epi16(hi_ab, hi_c),
                    ]
                }};
            }
            let wv = |fx: usize, q: usize| {
                _mm512_loadu_si512(wb.add(fx * 256 + 64 * q) as *const __m512i)
            };
            // Inside a run every tap of a window row is in the input or the row is padding
            // (`dw_row_runs`: border pixels come as runs of one), so column `fx` of pixel `i`
            // is column `fx + S` of pixel `i - 1`.
            let mut c0v: [__m512i; 4];
            let mut c1v = [zero; 4];
            let mut c2v = [zero; 4];
            for i in 0..npix {
                if i == 0 {
                    c0v = column!(0, 0);
                    c1v = column!(0, 1);
                } else if S == 1 {
                    c0v = c1v;
                    c1v = c2v;
                } else {
                    c0v = c2v;
                    c1v = column!(i, 1);
                }
                c2v = column!(i, 2);
                let mut acc = [zero; 4];
                for q in 0..4 {
                    acc[q] = _mm512_dpbusd_epi32(acc[q], c0v[q], wv(0, q));
                    acc[q] = _mm512_dpbusd_epi32(acc[q], c1v[q], wv(1, q));
                    acc[q] = _mm512_dpbusd_epi32(acc[q], c2v[q], wv(2, q));
                }
                let bytes = requant_pack::<T>(acc, &cols, epi);
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

/// Block `blk` of the plan's [`DwQuads::blocks`](crate::gemm::depthwise::DwQuads), channels
/// `c0 ..`, over the run: `P` (2 or 4) pixels of `64 / P` channels per vector.
///
/// # Safety
/// As [`dw_quads`], with `N` 0 or `dw.ntaps`; `(c0, 64 / P)` is block `blk` of the plan.
// Out of line: inlined into `run`, it slowed the blocks of 64 there.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn block<T: Code8, const N: usize, const P: usize>(
    dw: &DwQuadRun<T>,
    offsets: &[usize],
    npix: usize,
    out: &mut [u8],
    blk: usize,
    c0: usize,
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
        let wb = w.as_ptr().add(blk * quads * 256);
        // A pixel's share of the vector.
        let width = 64 / P;
        let mask = prefix_mask(width);
        // Consecutive pixels of the run adjacent in the input (stride 1, `width` channels in
        // all) or in the output: one whole vector for all `P`.
        let dense_in = step == width;
        let dense_out = oc == width;
        let cols = [
            Cols16::load(epi, 64 * blk),
            Cols16::load(epi, 64 * blk + 16),
            Cols16::load(epi, 64 * blk + 32),
            Cols16::load(epi, 64 * blk + 48),
        ];
        // Pixels `i .. i + n` (`n <= P`); a macro, so that each use is compiled in place and the
        // tests on `n` fold where it is `P` (a closure called twice was left out of line).
        macro_rules! group {
            ($i:expr, $n:expr) => {{
                let (i, n): (usize, usize) = ($i, $n);
                let tap = |t: usize| -> __m512i {
                    if t >= ntaps {
                        // A missing tap of the last quad: its weights are 0.
                        return zero;
                    }
                    let off = *offsets.get_unchecked(t);
                    if off == usize::MAX {
                        return zcv;
                    }
                    let s = src.add(off + i * step + c0);
                    let v = if n == P && dense_in {
                        _mm512_loadu_si512(s as *const __m512i)
                    } else if n == P && P == 2 {
                        let lo = _mm512_castsi256_si512(_mm256_loadu_si256(s as *const __m256i));
                        _mm512_inserti64x4::<1>(
                            lo,
                            _mm256_loadu_si256(s.add(step) as *const __m256i),
                        )
                    } else if n == P && P == 4 {
                        let ld = |p: usize| _mm_loadu_si128(s.add(p * step) as *const __m128i);
                        let v = _mm512_castsi128_si512(ld(0));
                        let v = _mm512_inserti32x4::<1>(v, ld(1));
                        let v = _mm512_inserti32x4::<2>(v, ld(2));
                        _mm512_inserti32x4::<3>(v, ld(3))
                    } else {
                        // Fewer than `P` pixels left: each present one into its share (the
                        // masked load touches only its own `width` bytes, in the pixel).
                        let mut v = zcv;
                        for p in 0..n {
                            let at = s.add(p * step).wrapping_sub(p * width);
                            v = _mm512_mask_loadu_epi8(v, mask << (p * width), at as *const i8);
                        }
                        v
                    };
                    _mm512_xor_si512(v, flip)
                };
                let mut acc = [zero; 4];
                for p in 0..quads {
                    let (a, b, c, d) = (tap(4 * p), tap(4 * p + 1), tap(4 * p + 2), tap(4 * p + 3));
                    acc = quad_dot(acc, [a, b, c, d], wb.add(p * 256));
                }
                let bytes = requant_pack::<T>(acc, &cols, epi);
                let o = dst.add(i * oc + c0);
                if n == P && dense_out {
                    _mm512_storeu_si512(o as *mut __m512i, bytes);
                } else {
                    // Each pixel's share to its own `width` bytes (the masked store writes no
                    // other).
                    for p in 0..n {
                        let at = o.add(p * oc).wrapping_sub(p * width);
                        _mm512_mask_storeu_epi8(at as *mut i8, mask << (p * width), bytes);
                    }
                }
            }};
        }
        let whole = npix / P * P;
        for i in (0..whole).step_by(P) {
            group!(i, P);
        }
        if whole < npix {
            group!(whole, npix - whole);
        }
    }
}

/// Four taps' 64 lanes against a quad's weights at `wp` (four vectors): two rounds of unpacks
/// put each lane's four codes in one dword, in the quads' lane order, for `vpdpbusd`.
///
/// # Safety
/// AVX-512 F/BW/VNNI are available; `wp` is readable for 256 bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn quad_dot(acc: [__m512i; 4], [a, b, c, d]: [__m512i; 4], wp: *const i8) -> [__m512i; 4] {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let lo_ab = _mm512_unpacklo_epi8(a, b);
        let hi_ab = _mm512_unpackhi_epi8(a, b);
        let lo_cd = _mm512_unpacklo_epi8(c, d);
        let hi_cd = _mm512_unpackhi_epi8(c, d);
        let wv = |v: usize| _mm512_loadu_si512(wp.add(64 * v) as *const __m512i);
        [
            _mm512_dpbusd_epi32(acc[0], _mm512_unpacklo_epi16(lo_ab, lo_cd), wv(0)),
            _mm512_dpbusd_epi32(acc[1], _mm512_unpackhi_epi16(lo_ab, lo_cd), wv(1)),
            _mm512_dpbusd_epi32(acc[2], _mm512_unpacklo_epi16(hi_ab, hi_cd), wv(2)),
            _mm512_dpbusd_epi32(acc[3], _mm512_unpackhi_epi16(hi_ab, hi_cd), wv(3)),
        ]
    }
}

/// The four vectors of sums of a block finished by the output stage and packed back into lane
/// order. Lane by lane, the packs interleave vectors 0 and 1 (lanes 16L + 0..8), 2 and 3
/// (16L + 8..16), then the two: lanes 16L .. 16L + 16 in order. The codes are in T's range
/// (the plan's condition), so saturation never acts.
///
/// # Safety
/// AVX-512 F/BW are available; `cols` are `epi`'s columns of the block's lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn requant_pack<T: Code8>(acc: [__m512i; 4], cols: &[Cols16; 4], epi: &Epilogue) -> __m512i {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let zero = _mm512_setzero_si512();
        // Written out: a helper such as `array::from_fn`, compiled without this function's
        // features, would take the vectors through memory.
        let lo = _mm512_packs_epi32(
            cols[0].requant(acc[0], zero, epi),
            cols[1].requant(acc[1], zero, epi),
        );
        let hi = _mm512_packs_epi32(
            cols[2].requant(acc[2], zero, epi),
            cols[3].requant(acc[3], zero, epi),
        );
        if T::A_OFFSET != 0 {
            _mm512_packs_epi16(lo, hi)
        } else {
            _mm512_packus_epi16(lo, hi)
        }
    }
}
