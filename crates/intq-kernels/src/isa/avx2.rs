//! The AVX2 tier: a 6 x 16 int32 tile accumulated with `vpmaddwd`, and the output stage in
//! registers.
//!
//! ## The int16-saturation guard
//! `vpmaddubsw` (u8 x s8 pairs summed into int16) saturates: two products of 255 * -128 sum to
//! -65,280, far outside int16, so it cannot be exact for all codes. This tier never uses it.
//! Both operands are widened to int16 when they are packed (activations `a'` in 0..=255, weights
//! `w'` in -128..=127) and multiplied with `vpmaddwd`, which sums each pair of int16 products
//! into int32: |a0 w0 + a1 w1| <= 2 * 255 * 128 = 65,280, exact. The int32 accumulation then
//! wraps (`vpaddd`) exactly like the reference's. The tests drive the worst case (all
//! activations 255 against all weights -128 or 127, K up to 32,768).

use std::arch::x86_64::*;

use crate::gemm::{field, DwRun, Epilogue, ImplicitRows, Kernel, Tile, TileOut};

pub(crate) struct Avx2;

pub(crate) const MR: usize = 6;
pub(crate) const NR: usize = 16;
/// k per group: a group is 4 `vpmaddwd` pairs. Packed A keeps a row's 8 codes of a group
/// together (16 bytes), so packing moves 16-byte runs rather than 4-byte pairs: with pairs,
/// packing costs a large share of a conv-shaped GEMM.
pub(crate) const KG: usize = 8;
/// k of one `vpmaddwd` lane: packed B keeps each column's pair together.
const PAIR: usize = 2;

/// One pair step of a tile row: the row's pair of codes at `$a + $k` broadcast against the
/// step's two B vectors into the row's two accumulators. The tiles spell out their 12
/// accumulators as locals so they stay in registers (arrays are spilled to the stack on every
/// step).
macro_rules! row_step {
    ($a:expr, $k:expr, $b0:ident, $b1:ident, $x:ident, $y:ident) => {
        let av = _mm256_set1_epi32(($a.add($k) as *const i32).read_unaligned());
        $x = _mm256_add_epi32($x, _mm256_madd_epi16(av, $b0));
        $y = _mm256_add_epi32($y, _mm256_madd_epi16(av, $b1));
    };
}

/// [`row_step!`] for the first 8-column half alone.
macro_rules! half_step {
    ($a:expr, $k:expr, $b0:ident, $x:ident) => {
        let av = _mm256_set1_epi32(($a.add($k) as *const i32).read_unaligned());
        $x = _mm256_add_epi32($x, _mm256_madd_epi16(av, $b0));
    };
}

impl Kernel for Avx2 {
    const MR: usize = MR;
    const NR: usize = NR;
    const KG: usize = KG;
    const B_KG: usize = PAIR;
    /// A B panel of K up to 768 (24 KiB of int16) stays whole in a 32 KiB L1, so common conv
    /// depths (3x3x64 = 576) run without splitting K and round-tripping partial tiles.
    const KC_BYTES: usize = 24 * 1024;
    type A = i16;
    type B = i16;
    fn a_elem(x: u8) -> i16 {
        x as i16
    }
    /// # Safety
    /// As [`Kernel::pack_a_seg`].
    unsafe fn pack_a_seg<T: crate::gemm::Code8>(
        src: &[T],
        panel: &mut [i16],
        i: usize,
        k0: usize,
    ) -> u32 {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { pack_a_seg(src, panel, i, k0) }
    }
    fn b_elem(w: i8) -> i16 {
        w as i16
    }
    /// # Safety
    /// As [`Kernel::tile`].
    unsafe fn tile(t: &Tile<i16, i16>, o: &TileOut) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { tile(t, o) }
    }
}

/// # Safety
/// The CPU has AVX2; as [`Kernel::tile`].
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(t: &Tile<i16, i16>, o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let (c, first, last, groups, a, b) = (t.c, t.first, t.last, t.groups, t.a, t.b);
        let z = _mm256_setzero_si256();
        let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
        let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
        if !first {
            let ld =
                |i: usize, h: usize| _mm256_loadu_si256(c.add(i * NR + 8 * h) as *const __m256i);
            (c00, c01, c10, c11, c20, c21) =
                (ld(0, 0), ld(0, 1), ld(1, 0), ld(1, 1), ld(2, 0), ld(2, 1));
            (c30, c31, c40, c41, c50, c51) =
                (ld(3, 0), ld(3, 1), ld(4, 0), ld(4, 1), ld(5, 0), ld(5, 1));
        }
        let (mut ap, mut bp) = (a, b);
        for _ in 0..groups {
            for j in 0..KG / PAIR {
                let b0 = _mm256_loadu_si256(bp as *const __m256i);
                let b1 = _mm256_loadu_si256(bp.add(8 * PAIR) as *const __m256i);
                bp = bp.add(NR * PAIR);
                let k = j * PAIR;
                row_step!(ap, k, b0, b1, c00, c01);
                row_step!(ap.add(KG), k, b0, b1, c10, c11);
                row_step!(ap.add(2 * KG), k, b0, b1, c20, c21);
                row_step!(ap.add(3 * KG), k, b0, b1, c30, c31);
                row_step!(ap.add(4 * KG), k, b0, b1, c40, c41);
                row_step!(ap.add(5 * KG), k, b0, b1, c50, c51);
            }
            ap = ap.add(MR * KG);
        }
        let acc = [
            [c00, c01],
            [c10, c11],
            [c20, c21],
            [c30, c31],
            [c40, c41],
            [c50, c51],
        ];
        if !last {
            for (i, acc_i) in acc.iter().enumerate() {
                for (h, &v) in acc_i.iter().enumerate() {
                    _mm256_storeu_si256(c.add(i * NR + 8 * h) as *mut __m256i, v);
                }
            }
            return;
        }
        finish_tile(&acc, o);
    }
}

/// The output stage on a tile of raw accumulators, stored as codes (`rows x cols` at `out`,
/// stride `ldc`).
///
/// # Safety
/// The CPU has AVX2; `o` meets [`TileOut`]'s contract for this tier's tile.
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_tile(acc: &[[__m256i; 2]; MR], o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let (rowsum, epi, n0, out, ldc, rows, cols) =
            (o.rowsum, o.epi, o.n0, o.out, o.ldc, o.rows, o.cols);
        if epi.vector_ok && cols == NR && epi.zw_zero {
            // Whole rows of 16 columns of symmetric weights (the int8 scheme), two rows packed
            // together: 3 packs and a permute per 32 codes where `store16` takes 7 ops per 16.
            // The uint8 weights' case (row-sum term) keeps one row at a time below.
            let signed = epi.cmin < 0;
            let mut i = 0;
            while i + 2 <= rows {
                let (a, b) = (&acc[i], &acc[i + 1]);
                let q = [
                    requant_plain(a[0], epi, n0),
                    requant_plain(a[1], epi, n0 + 8),
                    requant_plain(b[0], epi, n0),
                    requant_plain(b[1], epi, n0 + 8),
                ];
                store16x2(q, signed, out.add(i * ldc), out.add((i + 1) * ldc));
                i += 2;
            }
            if i < rows {
                let a = &acc[i];
                store16(
                    requant_plain(a[0], epi, n0),
                    requant_plain(a[1], epi, n0 + 8),
                    out.add(i * ldc),
                );
            }
        } else if epi.vector_ok && cols == NR {
            // Whole rows of 16 columns: one 16-byte store per row.
            for (i, acc_i) in acc.iter().enumerate().take(rows) {
                let (q0, q1) = if epi.zw_zero {
                    // No row-sum term (symmetric weights): no `vpmulld` (two uops, ten cycles).
                    (
                        requant_plain(acc_i[0], epi, n0),
                        requant_plain(acc_i[1], epi, n0 + 8),
                    )
                } else {
                    let rs = _mm256_set1_epi32(*rowsum.add(i));
                    (
                        requant(acc_i[0], rs, epi, n0),
                        requant(acc_i[1], rs, epi, n0 + 8),
                    )
                };
                store16(q0, q1, out.add(i * ldc));
            }
        } else if epi.vector_ok && epi.zw_zero {
            for (i, acc_i) in acc.iter().enumerate().take(rows) {
                for (h, &v) in acc_i.iter().enumerate() {
                    if 8 * h >= cols {
                        break;
                    }
                    let q = requant_plain(v, epi, n0 + 8 * h);
                    store8(q, out.add(i * ldc + 8 * h), (cols - 8 * h).min(8));
                }
            }
        } else if epi.vector_ok {
            for (i, acc_i) in acc.iter().enumerate().take(rows) {
                let rs = _mm256_set1_epi32(*rowsum.add(i));
                for (h, &v) in acc_i.iter().enumerate() {
                    if 8 * h >= cols {
                        break;
                    }
                    let q = requant(v, rs, epi, n0 + 8 * h);
                    store8(q, out.add(i * ldc + 8 * h), (cols - 8 * h).min(8));
                }
            }
        } else {
            let mut raw = [0i32; MR * NR];
            for (i, acc_i) in acc.iter().enumerate() {
                for (h, &v) in acc_i.iter().enumerate() {
                    _mm256_storeu_si256(raw.as_mut_ptr().add(i * NR + 8 * h) as *mut __m256i, v);
                }
            }
            epi.finish_scalar(&raw, NR, o);
        }
    }
}

impl crate::gemm::ImplicitKernel for Avx2 {
    type E = i16;
    type B = i16;
    const MR: usize = MR;
    const NR: usize = NR;
    const KG: usize = KG;
    /// # Safety
    /// As [`crate::gemm::ImplicitKernel::canon_row`].
    unsafe fn canon_row<T: crate::gemm::Code8>(
        codes: &[T],
        c: usize,
        dst: &mut [i16],
        sums: &mut [i32],
    ) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { canon_row(codes, c, dst, sums) }
    }
    /// # Safety
    /// As [`crate::gemm::ImplicitKernel::tile_implicit`].
    unsafe fn tile_implicit(rows_a: &ImplicitRows<i16>, b: *const i16, o: &TileOut) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { tile_implicit(rows_a, b, o) }
    }
}

/// An implicit-GEMM tile (see [`ImplicitRows`]): like [`Kernel::tile`] over one K block,
/// finished.
///
/// # Safety
/// As [`crate::gemm::ImplicitKernel::tile_implicit`], on AVX2.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_implicit(rows_a: &ImplicitRows<i16>, b: *const i16, o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        if o.cols <= NR / 2 {
            tile_implicit_cols::<true>(rows_a, b, o)
        } else {
            tile_implicit_cols::<false>(rows_a, b, o)
        }
    }
}

/// [`tile_implicit`]'s body; with `HALF` (a panel of at most 8 columns: the last panel of 24
/// output channels, as MobileNetV2's 144 -> 24 projections have) only the first 8-column half
/// is multiplied (computing both halves would cost a 24-channel layer as much as 32).
///
/// # Safety
/// As [`tile_implicit`], with `HALF` only when `o.cols <= NR / 2`.
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_implicit_cols<const HALF: bool>(
    rows_a: &ImplicitRows<i16>,
    b: *const i16,
    o: &TileOut,
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let z = _mm256_setzero_si256();
        let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
        let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
        let mut bp = b;
        let steps = rows_a.run_groups * (KG / PAIR);
        for fy in 0..rows_a.kh {
            let off = fy * rows_a.row_stride;
            let b6 = &rows_a.base[..MR];
            let (a0, a1, a2) = (b6[0].add(off), b6[1].add(off), b6[2].add(off));
            let (a3, a4, a5) = (b6[3].add(off), b6[4].add(off), b6[5].add(off));
            for s in 0..steps {
                let k = s * PAIR;
                let b0 = _mm256_loadu_si256(bp as *const __m256i);
                if HALF {
                    half_step!(a0, k, b0, c00);
                    half_step!(a1, k, b0, c10);
                    half_step!(a2, k, b0, c20);
                    half_step!(a3, k, b0, c30);
                    half_step!(a4, k, b0, c40);
                    half_step!(a5, k, b0, c50);
                } else {
                    let b1 = _mm256_loadu_si256(bp.add(8 * PAIR) as *const __m256i);
                    row_step!(a0, k, b0, b1, c00, c01);
                    row_step!(a1, k, b0, b1, c10, c11);
                    row_step!(a2, k, b0, b1, c20, c21);
                    row_step!(a3, k, b0, b1, c30, c31);
                    row_step!(a4, k, b0, b1, c40, c41);
                    row_step!(a5, k, b0, b1, c50, c51);
                }
                bp = bp.add(NR * PAIR);
            }
        }
        let acc = [
            [c00, c01],
            [c10, c11],
            [c20, c21],
            [c30, c31],
            [c40, c41],
            [c50, c51],
        ];
        finish_tile(&acc, o);
    }
}

/// One row of a padded canonical image: `codes` mapped to canonical u8 and widened to int16,
/// with the sum of each pixel's `c` codes in `sums`.
///
/// # Safety
/// The CPU has AVX2; `dst.len() == codes.len()`; `sums.len() * c == codes.len()`.
#[target_feature(enable = "avx2")]
unsafe fn canon_row<T: crate::gemm::Code8>(
    codes: &[T],
    c: usize,
    dst: &mut [i16],
    sums: &mut [i32],
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        assert!(dst.len() == codes.len() && sums.len() * c == codes.len());
        let flip = _mm_set1_epi8(if T::A_OFFSET != 0 { -128 } else { 0 });
        let zero = _mm_setzero_si128();
        let s = codes.as_ptr() as *const u8;
        let d = dst.as_mut_ptr();
        if !c.is_multiple_of(8) {
            // Pixels off the 8-code groups (a row-padded plan's 1 or 3 channels): the row is one
            // run of codes either way, widened 16 at a time; the pixel sums add up bytes.
            let mut j = 0;
            while j + 16 <= codes.len() {
                let v = _mm_xor_si128(_mm_loadu_si128(s.add(j) as *const __m128i), flip);
                _mm256_storeu_si256(d.add(j) as *mut __m256i, _mm256_cvtepu8_epi16(v));
                j += 16;
            }
            for (o, &x) in dst[j..].iter_mut().zip(&codes[j..]) {
                *o = x.canon_a() as i16;
            }
            for (sum, px) in sums.iter_mut().zip(codes.chunks_exact(c)) {
                *sum = px.iter().map(|&x| x.canon_a() as i32).sum();
            }
            return;
        }
        for (px, sum) in sums.iter_mut().enumerate() {
            let mut acc = _mm_setzero_si128();
            let mut j = px * c;
            let end = j + c;
            while j + 16 <= end {
                let v = _mm_xor_si128(_mm_loadu_si128(s.add(j) as *const __m128i), flip);
                acc = _mm_add_epi64(acc, _mm_sad_epu8(v, zero));
                _mm256_storeu_si256(d.add(j) as *mut __m256i, _mm256_cvtepu8_epi16(v));
                j += 16;
            }
            if j < end {
                let v = _mm_xor_si128(_mm_loadl_epi64(s.add(j) as *const __m128i), flip);
                acc = _mm_add_epi64(acc, _mm_move_epi64(_mm_sad_epu8(v, zero)));
                _mm_storeu_si128(d.add(j) as *mut __m128i, _mm_cvtepu8_epi16(v));
            }
            *sum = (_mm_cvtsi128_si64(acc) as i32).wrapping_add(_mm_extract_epi64::<1>(acc) as i32);
        }
    }
}

/// Codes `k0 ..` of row `i` of a packed A panel, 16 codes at a time once `k0` reaches a group
/// boundary: mapped to canonical u8 (`^ 0x80` for int8), summed with `psadbw`, widened to int16
/// and stored as two 8-code group runs (then one 8-code run, then scalar), since packing with
/// scalar stores costs a large share of a conv-shaped GEMM; im2col hands its
/// window rows here directly (runs of `kw * in_c` codes, group-aligned when `in_c % 8 == 0`).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
unsafe fn pack_a_seg<T: crate::gemm::Code8>(
    src: &[T],
    panel: &mut [i16],
    i: usize,
    k0: usize,
) -> u32 {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let len = src.len();
        assert!(panel.len() >= (k0 + len).div_ceil(KG) * KG * MR && i < MR);
        let s = src.as_ptr() as *const u8;
        let d = panel.as_mut_ptr();
        let at = |kk: usize| ((kk / KG) * MR + i) * KG + kk % KG;
        let mut sum = 0u32;
        let scalar = |j: usize, sum: &mut u32| {
            let v = src[j].canon_a();
            *sum = sum.wrapping_add(v as u32);
            *d.add(at(k0 + j)) = v as i16;
        };
        let head = ((KG - k0 % KG) % KG).min(len);
        for j in 0..head {
            scalar(j, &mut sum);
        }
        let flip = _mm_set1_epi8(if T::A_OFFSET != 0 { -128 } else { 0 });
        let zero = _mm_setzero_si128();
        let mut sums = _mm_setzero_si128();
        let mut j = head;
        while j + 16 <= len {
            let v = _mm_xor_si128(_mm_loadu_si128(s.add(j) as *const __m128i), flip);
            sums = _mm_add_epi64(sums, _mm_sad_epu8(v, zero));
            let w = _mm256_cvtepu8_epi16(v);
            let p = d.add(at(k0 + j));
            _mm_storeu_si128(p as *mut __m128i, _mm256_castsi256_si128(w));
            _mm_storeu_si128(
                p.add(MR * KG) as *mut __m128i,
                _mm256_extracti128_si256::<1>(w),
            );
            j += 16;
        }
        if j + 8 <= len {
            let v = _mm_xor_si128(_mm_loadl_epi64(s.add(j) as *const __m128i), flip);
            // Only the low 8 lanes are codes; the high lane of the sum is the flipped zeros.
            sums = _mm_add_epi64(sums, _mm_move_epi64(_mm_sad_epu8(v, zero)));
            _mm_storeu_si128(d.add(at(k0 + j)) as *mut __m128i, _mm_cvtepu8_epi16(v));
            j += 8;
        }
        sum = sum
            .wrapping_add(_mm_cvtsi128_si64(sums) as u32)
            .wrapping_add(_mm_extract_epi64::<1>(sums) as u32);
        for j in j..len {
            scalar(j, &mut sum);
        }
        sum
    }
}

/// The output stage on 8 columns starting at `n`, equal to `Epilogue::scalar` lane by lane
/// under `vector_ok` (m0 >= 0 so the doubling high multiply never saturates; shifts in 0..=31).
///
/// # Safety
/// The CPU has AVX2; `epi` is vector-ready, laid out 8 wide, and covers column `n + 7`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn requant(acc: __m256i, rowsum: __m256i, epi: &Epilogue, n: usize) -> __m256i {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let ld = |f: usize| lane(epi, f, n);
        if epi.zw_zero {
            // Symmetric weights skip the two-uop, ten-cycle `vpmulld`.
            return requant_plain(acc, epi, n);
        }
        let x = _mm256_sub_epi32(acc, _mm256_mullo_epi32(ld(field::ZW), rowsum));
        requant_plain(x, epi, n)
    }
}

/// [`requant`] of complete accumulators (no row-sum term, as depthwise has): `vpmulld` is
/// slow, and multiplying by a zero row sum would be wasted work in every depthwise tile.
///
/// # Safety
/// The CPU has AVX2; `epi` is vector-ready, laid out 8 wide, and covers column `n + 7`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn requant_plain(acc: __m256i, epi: &Epilogue, n: usize) -> __m256i {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let colconst = lane(epi, field::COLCONST, n);
        scale_clamp(_mm256_add_epi32(acc, colconst), epi, n)
    }
}

/// The output stage past its additive terms, on 8 columns from `n`: the multiplier's left
/// shift, SaturatingRoundingDoublingHighMul, RoundingDivideByPOT, the clamp and the zero point.
///
/// # Safety
/// The CPU has AVX2; `epi` is vector-ready, laid out 8 wide, and covers column `n + 7`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scale_clamp(mut x: __m256i, epi: &Epilogue, n: usize) -> __m256i {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let ld = |f: usize| lane(epi, f, n);
        if !epi.lshift_zero {
            x = _mm256_sllv_epi32(x, ld(field::LSHIFT));
        }
        // SaturatingRoundingDoublingHighMul = floor((x m0 + 2^30) / 2^31): bits 31..62 of the
        // 64-bit sum, taken from even and odd lanes separately.
        let nudge = _mm256_set1_epi64x(1 << 30);
        let even = _mm256_add_epi64(_mm256_mul_epi32(x, ld(field::M0)), nudge);
        let odd = _mm256_add_epi64(
            _mm256_mul_epi32(_mm256_srli_epi64::<32>(x), ld(field::M0_ODD)),
            nudge,
        );
        x = _mm256_blend_epi32::<0b1010_1010>(
            _mm256_srli_epi64::<31>(even),
            _mm256_slli_epi64::<1>(odd),
        );
        if epi.clamp_first {
            // The clamp first, then RoundingDivideByPOT as one rounded shift (see
            // `Epilogue::clamp_first`): four ops where the divide took six, and no clamp after it.
            x = _mm256_max_epi32(x, ld(field::PRE_LO));
            x = _mm256_min_epi32(x, ld(field::PRE_HI));
            let t = _mm256_add_epi32(
                _mm256_add_epi32(x, ld(field::RROUND)),
                _mm256_srai_epi32::<31>(x),
            );
            return _mm256_add_epi32(
                _mm256_srav_epi32(t, ld(field::RSHIFT)),
                _mm256_set1_epi32(epi.zout),
            );
        }
        // RoundingDivideByPOT: (x >> e) + (x & mask > mask / 2 + (x < 0)).
        let rem = _mm256_and_si256(x, ld(field::RMASK));
        let neg = _mm256_cmpgt_epi32(_mm256_setzero_si256(), x);
        let threshold = _mm256_sub_epi32(ld(field::RHALF), neg);
        let round = _mm256_cmpgt_epi32(rem, threshold);
        x = _mm256_sub_epi32(_mm256_srav_epi32(x, ld(field::RSHIFT)), round);
        // clamp(sat(x + z), cmin, cmax) == clamp(x, cmin - z, cmax - z) + z.
        x = _mm256_max_epi32(x, _mm256_set1_epi32(epi.lo));
        x = _mm256_min_epi32(x, _mm256_set1_epi32(epi.hi));
        _mm256_add_epi32(x, _mm256_set1_epi32(epi.zout))
    }
}

/// Field `f` of [`Epilogue::lanes`] (laid out 8 columns wide, as this tier's table asks) for
/// the 8 columns from `n` (a multiple of 8).
///
/// # Safety
/// The CPU has AVX2; `epi` was laid out 8 wide and covers column `n + 7`.
#[inline(always)]
unsafe fn lane(epi: &Epilogue, f: usize, n: usize) -> __m256i {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        debug_assert!(n.is_multiple_of(8) && (n / 8 * field::COUNT + f + 1) * 8 <= epi.lanes.len());
        _mm256_loadu_si256(epi.lanes.as_ptr().add((n / 8 * field::COUNT + f) * 8) as *const __m256i)
    }
}

/// Stores the low byte of the first `count` lanes.
///
/// # Safety
/// The CPU has AVX2; `out` is valid for `count` (at most 8) byte stores.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store8(v: __m256i, out: *mut u8, count: usize) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let shuf = _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1,
            -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let p = _mm256_permutevar8x32_epi32(
            _mm256_shuffle_epi8(v, shuf),
            _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1),
        );
        let bytes = _mm_cvtsi128_si64(_mm256_castsi256_si128(p)) as u64;
        if count == 8 {
            (out as *mut u64).write_unaligned(bytes);
        } else {
            let b = bytes.to_le_bytes();
            std::ptr::copy_nonoverlapping(b.as_ptr(), out, count);
        }
    }
}

/// Stores the low bytes of `a`'s 8 lanes then `b`'s, as [`store8`] twice would: the lanes are
/// masked to their low byte first, so the saturating packs keep every byte as it is.
///
/// # Safety
/// The CPU has AVX2; `out` is valid for 16 byte stores.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store16(a: __m256i, b: __m256i, out: *mut u8) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let m = _mm256_set1_epi32(0xff);
        // [a0-3, b0-3 | a4-7, b4-7] as int16, reordered to [a0-7 | b0-7].
        let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(
            _mm256_and_si256(a, m),
            _mm256_and_si256(b, m),
        ));
        // Bytes [a0-7, a0-7 | b0-7, b0-7]; qwords 0 and 2 are the 16 codes in order.
        let p = _mm256_permute4x64_epi64::<0b00_00_10_00>(_mm256_packus_epi16(w, w));
        _mm_storeu_si128(out as *mut __m128i, _mm256_castsi256_si128(p));
    }
}

/// Stores two rows of 16 codes (`q[0]`, `q[1]` to `r0`; `q[2]`, `q[3]` to `r1`) with three
/// packs and one permute: the codes are in the output type's range (the clamp put them
/// there), so the saturating packs (signed for int8, `signed`; unsigned for uint8) keep them.
///
/// # Safety
/// The CPU has AVX2; `r0` and `r1` are each valid for 16 byte stores.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store16x2(q: [__m256i; 4], signed: bool, r0: *mut u8, r1: *mut u8) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        // [r0 0-3, r0 8-11 | r0 4-7, r0 12-15] and the same of r1, as int16.
        let w0 = _mm256_packs_epi32(q[0], q[1]);
        let w1 = _mm256_packs_epi32(q[2], q[3]);
        // Dwords [r0 0-3, r0 8-11, r1 0-3, r1 8-11 | r0 4-7, r0 12-15, r1 4-7, r1 12-15].
        let b = if signed {
            _mm256_packs_epi16(w0, w1)
        } else {
            _mm256_packus_epi16(w0, w1)
        };
        let p = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm_storeu_si128(r0 as *mut __m128i, _mm256_castsi256_si128(p));
        _mm_storeu_si128(r1 as *mut __m128i, _mm256_extracti128_si256::<1>(p));
    }
}

/// The output stage on one row of complete accumulators (`acc[n]` for column `n`), with no
/// row-sum term: how the depthwise kernel finishes a pixel.
///
/// # Safety
/// The CPU has AVX2; `epi`'s columns cover `acc.len()` rounded up to 8; `out.len() == acc.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn finish_row(epi: &Epilogue, acc: &[i32], out: &mut [u8]) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        if !epi.vector_ok {
            for (n, (o, &a)) in out.iter_mut().zip(acc).enumerate() {
                *o = epi.scalar(a, 0, n);
            }
            return;
        }
        for n in (0..acc.len()).step_by(8) {
            let count = (acc.len() - n).min(8);
            let v = if count == 8 {
                _mm256_loadu_si256(acc.as_ptr().add(n) as *const __m256i)
            } else {
                let mut t = [0i32; 8];
                t[..count].copy_from_slice(&acc[n..]);
                _mm256_loadu_si256(t.as_ptr() as *const __m256i)
            };
            store8(requant_plain(v, epi, n), out.as_mut_ptr().add(n), count);
        }
    }
}

/// MultiplyByQuantizedMultiplier on 8 lanes with per-lane `m0 >= 0`, left shift and right
/// shift (both in 0..=31): the same steps as [`requant`], without the GEMM's terms.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn mbqm(x: __m256i, m0: __m256i, left: __m256i, right: __m256i) -> __m256i {
    let x = _mm256_sllv_epi32(x, left);
    let nudge = _mm256_set1_epi64x(1 << 30);
    let even = _mm256_add_epi64(_mm256_mul_epi32(x, m0), nudge);
    let odd = _mm256_add_epi64(
        _mm256_mul_epi32(_mm256_srli_epi64::<32>(x), _mm256_srli_epi64::<32>(m0)),
        nudge,
    );
    let x = _mm256_blend_epi32::<0b1010_1010>(
        _mm256_srli_epi64::<31>(even),
        _mm256_slli_epi64::<1>(odd),
    );
    let one = _mm256_set1_epi32(1);
    let mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
    let rem = _mm256_and_si256(x, mask);
    let neg = _mm256_cmpgt_epi32(_mm256_setzero_si256(), x);
    let threshold = _mm256_sub_epi32(_mm256_srli_epi32::<1>(mask), neg);
    let round = _mm256_cmpgt_epi32(rem, threshold);
    _mm256_sub_epi32(_mm256_srav_epi32(x, right), round)
}

/// One quantized multiplier broadcast as `(m0, left, right)` vectors.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn multiplier(m: intq_quant::QuantizedMultiplier) -> (__m256i, __m256i, __m256i) {
    (
        _mm256_set1_epi32(m.m0),
        _mm256_set1_epi32(m.shift.max(0)),
        _mm256_set1_epi32((-m.shift).max(0)),
    )
}

/// TFLite's quantized Add on equal shapes, 8 codes at a time (the tail through
/// `AddParams::apply`). `lo`/`hi` are the clamp moved before the output zero point's add (the
/// caller checked they fit int32 and that every multiplier has `m0 >= 0`, shift in -31..=31).
///
/// # Safety
/// The CPU has AVX2; the three slices have the same length.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn add_same_shape<T: crate::gemm::Code8>(
    p: &crate::reference::AddParams,
    lo: i32,
    hi: i32,
    lhs: &[T],
    rhs: &[T],
    out: &mut [T],
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let widen = |ptr: *const T| {
            let v = _mm_loadl_epi64(ptr as *const __m128i);
            if T::MIN == 0 {
                _mm256_cvtepu8_epi32(v)
            } else {
                _mm256_cvtepi8_epi32(v)
            }
        };
        let (zl, zr) = (
            _mm256_set1_epi32(p.lhs_zero_point),
            _mm256_set1_epi32(p.rhs_zero_point),
        );
        let shift = _mm256_set1_epi32(p.left_shift);
        let (ml, ll, rl) = multiplier(p.lhs_multiplier);
        let (mr, lr, rr) = multiplier(p.rhs_multiplier);
        let (mo, lo_s, ro) = multiplier(p.output_multiplier);
        let (vlo, vhi, vz) = (
            _mm256_set1_epi32(lo),
            _mm256_set1_epi32(hi),
            _mm256_set1_epi32(p.output_zero_point),
        );
        let n = out.len();
        let whole = n / 8 * 8;
        for i in (0..whole).step_by(8) {
            let a = _mm256_sllv_epi32(_mm256_sub_epi32(widen(lhs.as_ptr().add(i)), zl), shift);
            let b = _mm256_sllv_epi32(_mm256_sub_epi32(widen(rhs.as_ptr().add(i)), zr), shift);
            let sum = _mm256_add_epi32(mbqm(a, ml, ll, rl), mbqm(b, mr, lr, rr));
            let mut o = mbqm(sum, mo, lo_s, ro);
            o = _mm256_min_epi32(_mm256_max_epi32(o, vlo), vhi);
            store8(
                _mm256_add_epi32(o, vz),
                out.as_mut_ptr().add(i) as *mut u8,
                8,
            );
        }
        for i in whole..n {
            out[i] = T::from_i32_saturating(p.apply(lhs[i].to_i32(), rhs[i].to_i32()));
        }
    }
}

/// The AVX2 pair kernel reads [`crate::gemm::depthwise::dw_pairs`]'s 16-channel layout as it is.
pub(crate) fn dw_layout(pairs16: &[i16], _ntaps: usize, _oc: usize) -> Vec<i16> {
    pairs16.to_vec()
}

/// A run of `npix` output pixels of a depthwise convolution with depth multiplier 1, pixel `i`'s
/// window at `offsets[t] + i * step` (the same taps padded for every pixel of the run), 16
/// channels at a time: the window's taps two by two, activations widened to int16 and
/// interleaved with the pair's weights for `vpmaddwd`. Each pair sum is exact modulo 2^32 (its
/// one overflow, 2 * (-32768)^2, wraps to the same bits), and the zero point is folded into
/// [`DwConsts::bias`], so the int32 sums equal the reference's wrapping ones; a padded tap reads
/// `Z_in`, whose difference is 0, as the reference skips it.
///
/// The channel block is the outer loop so that a run shares one block's weights and output
/// constants across its pixels; the common 3x3 window is unrolled (`N`), the rest loop.
///
/// # Safety
/// AVX2 is available; `offsets` holds `ntaps` entries, each `usize::MAX` (padded for the whole
/// run) or such that every `offsets[t] + i * step` (`i < npix`) starts a pixel of `oc` codes
/// inside `input`; `pairs` is [`dw_pairs`] of the plan (`ntaps`, `oc`); `k` is [`DwConsts`] of
/// the plan and `epi` its vector-ready epilogue; `out.len() == npix * oc`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dw_run<T: crate::gemm::Code8>(
    dw: &DwRun<T>,
    offsets: &[usize],
    npix: usize,
    out: &mut [u8],
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        debug_assert!(offsets.len() >= dw.ntaps && out.len() == npix * dw.oc);
        if dw.ntaps == 9 {
            dw_run_n::<T, 9>(dw, offsets, npix, out)
        } else {
            dw_run_n::<T, 0>(dw, offsets, npix, out)
        }
    }
}

/// [`dw_run`] with `N` taps (`N == ntaps`, or 0 for any count).
///
/// # Safety
/// As [`dw_run`], with `N` 0 or `dw.ntaps`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dw_run_n<T: crate::gemm::Code8, const N: usize>(
    dw: &DwRun<T>,
    offsets: &[usize],
    npix: usize,
    out: &mut [u8],
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let DwRun {
            input,
            step,
            oc,
            pairs,
            k,
            epi,
            ..
        } = *dw;
        let ntaps = if N > 0 { N } else { dw.ntaps };
        let npairs = ntaps.div_ceil(2);
        let src = input.as_ptr() as *const u8;
        let zin = _mm256_set1_epi16(k.zin);
        // int8 codes are widened as signed values and uint8 as unsigned, both exactly, so the
        // folded bias uses `Z_in` itself.
        let widen = |p: *const u8| {
            let v = _mm_loadu_si128(p as *const __m128i);
            if T::A_OFFSET != 0 {
                _mm256_cvtepi8_epi16(v)
            } else {
                _mm256_cvtepu8_epi16(v)
            }
        };
        let dst = out.as_mut_ptr();
        for (cb, c0) in (0..oc).step_by(16).enumerate() {
            let w = pairs.as_ptr().add(cb * npairs * 32);
            let full = c0 + 16 <= oc;
            for i in 0..npix {
                let base = i * step + c0;
                let tap = |t: usize| -> __m256i {
                    if t >= ntaps {
                        // The missing partner of an odd last tap: its weights are 0.
                        return _mm256_setzero_si256();
                    }
                    let off = *offsets.get_unchecked(t);
                    if off == usize::MAX {
                        zin
                    } else if full {
                        widen(src.add(off + base))
                    } else {
                        // The last, partial block: copy so as not to read past the input; lanes
                        // past `oc` are never stored.
                        let mut tmp = [0u8; 16];
                        std::ptr::copy_nonoverlapping(
                            src.add(off + base),
                            tmp.as_mut_ptr(),
                            oc - c0,
                        );
                        widen(tmp.as_ptr())
                    }
                };
                let mut lo = _mm256_setzero_si256();
                let mut hi = _mm256_setzero_si256();
                for p in 0..npairs {
                    let (a, b) = (tap(2 * p), tap(2 * p + 1));
                    let wp = w.add(p * 32);
                    lo = _mm256_add_epi32(
                        lo,
                        _mm256_madd_epi16(
                            _mm256_unpacklo_epi16(a, b),
                            _mm256_loadu_si256(wp as *const __m256i),
                        ),
                    );
                    hi = _mm256_add_epi32(
                        hi,
                        _mm256_madd_epi16(
                            _mm256_unpackhi_epi16(a, b),
                            _mm256_loadu_si256(wp.add(16) as *const __m256i),
                        ),
                    );
                }
                // The folded bias in place of `colconst`, then the epilogue's own steps.
                let finish = |v: __m256i, c: usize| {
                    let bias = _mm256_loadu_si256(k.bias.as_ptr().add(c) as *const __m256i);
                    scale_clamp(_mm256_add_epi32(v, bias), epi, c)
                };
                let first = finish(_mm256_permute2x128_si256::<0x20>(lo, hi), c0);
                let second = finish(_mm256_permute2x128_si256::<0x31>(lo, hi), c0 + 8);
                let o = dst.add(i * oc + c0);
                if full {
                    store16(first, second, o);
                } else {
                    store8(first, o, (oc - c0).min(8));
                    if c0 + 8 < oc {
                        store8(second, o.add(8), oc - c0 - 8);
                    }
                }
            }
        }
    }
}

/// [`crate::qat::RequantFakeQuant::block`]'s body compiled for AVX2 (the compiler vectorizes
/// it eight lanes wide; same operations, same bits).
///
/// # Safety
/// The CPU has AVX2; `fq` (and `mask`, if any) are as long as `x`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn fake_quant(
    k: &crate::qat::RequantFakeQuant,
    e: i32,
    x: &[f32],
    fq: &mut [f32],
    mask: Option<&mut [u8]>,
) -> bool {
    crate::qat::fake_quant_body(k, e, x, fq, mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use intq_quant::QuantizedMultiplier;

    /// The vector MultiplyByQuantizedMultiplier against the scalar one on edge-heavy int32
    /// values and every shift: Add's arithmetic hides most rounding slips (its output shift is
    /// large), so the primitive is tested on its own.
    #[test]
    fn vector_mbqm_equals_scalar() {
        if !intq_testutil::tier_runs(intq_testutil::Isa::Avx2, "vector_mbqm_equals_scalar") {
            return;
        }
        let mut rng = intq_testutil::TestRng::new(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next_u64();
        let edges = [
            0,
            1,
            -1,
            i32::MAX,
            i32::MIN,
            i32::MIN + 1,
            1 << 30,
            -(1 << 30),
            12345,
        ];
        for shift in -31..=31 {
            for _ in 0..200 {
                let m = QuantizedMultiplier {
                    m0: match next() % 4 {
                        0 => i32::MAX,
                        1 => 1 << 30,
                        _ => ((1u64 << 30) + next() % (1u64 << 30)) as i32,
                    },
                    shift,
                };
                let xs: [i32; 8] = std::array::from_fn(|i| {
                    if next() % 3 == 0 {
                        edges[i % edges.len()]
                    } else {
                        (next() as i32) >> (next() % 32)
                    }
                });
                let mut got = [0i32; 8];
                // SAFETY: AVX2 checked above.
                unsafe {
                    let (m0, l, r) = multiplier(m);
                    let v = mbqm(_mm256_loadu_si256(xs.as_ptr() as *const __m256i), m0, l, r);
                    _mm256_storeu_si256(got.as_mut_ptr() as *mut __m256i, v);
                }
                for (x, g) in xs.iter().zip(got) {
                    assert_eq!(g, m.apply(*x), "x {x}, {m:?}");
                }
            }
        }
    }
}
