//! The AVX-512 VNNI tier: an 8 x 32 int32 tile accumulated with `vpdpbusd` (u8 x s8, four
//! products per lane), a 6 x 64 one for implicit convolutions wider than one panel, and the
//! output stage in registers.
//!
//! `vpdpbusd` sums four u8 x s8 products into int32 without intermediate saturation (|sum| <=
//! 4 * 255 * 128), then adds with wrap-around, so it is exact like the reference. The operands
//! are the GEMM's canonical ones (activations u8, weights s8; see `gemm`), which is how uint8 x
//! uint8 and int8 x int8 models both reach this instruction.

use std::arch::x86_64::*;

use crate::gemm::{field, DwRun, Epilogue, ImplicitRows, Kernel, Tile, TileOut};

pub(crate) struct Vnni;

/// The 8 x 32 tile's accumulators as 16 named locals, `$a(i)` giving the address of row `i`'s
/// four codes of each step and `$b(j)` the step's packed B: the steps run `$steps`, and the
/// accumulators come out as `[[__m512i; 2]; MR]`. Named locals stay in registers; an array
/// indexed in the loop was kept in memory (16 stores a step: it is passed on to the output
/// stage), which halved the multiply rate.
macro_rules! dot_tile {
    ($init:expr, $steps:expr, |$s:ident| $b:expr, |$i:ident, $s2:ident| $a:expr) => {{
        let init: [[__m512i; 2]; MR] = $init;
        let [[mut c00, mut c01], [mut c10, mut c11], [mut c20, mut c21], [mut c30, mut c31], [mut c40, mut c41], [mut c50, mut c51], [mut c60, mut c61], [mut c70, mut c71]] =
            init;
        for $s in $steps {
            let bp: *const i8 = $b;
            let b0 = _mm512_loadu_si512(bp as *const __m512i);
            let b1 = _mm512_loadu_si512(bp.add(16 * KG) as *const __m512i);
            macro_rules! row {
                ($row:expr, $x:ident, $y:ident) => {{
                    let $i: usize = $row;
                    let $s2 = $s;
                    let ap: *const u8 = $a;
                    let av = _mm512_set1_epi32((ap as *const i32).read_unaligned());
                    $x = _mm512_dpbusd_epi32($x, av, b0);
                    $y = _mm512_dpbusd_epi32($y, av, b1);
                }};
            }
            row!(0, c00, c01);
            row!(1, c10, c11);
            row!(2, c20, c21);
            row!(3, c30, c31);
            row!(4, c40, c41);
            row!(5, c50, c51);
            row!(6, c60, c61);
            row!(7, c70, c71);
        }
        [
            [c00, c01],
            [c10, c11],
            [c20, c21],
            [c30, c31],
            [c40, c41],
            [c50, c51],
            [c60, c61],
            [c70, c71],
        ]
    }};
}

pub(crate) const MR: usize = 8;
pub(crate) const NR: usize = 32;
pub(crate) const KG: usize = 4;

impl Kernel for Vnni {
    const MR: usize = MR;
    const NR: usize = NR;
    const KG: usize = KG;
    /// Server cores with AVX-512 have 1-2 MiB of L2 (Sapphire Rapids 2 MiB): a larger row chunk
    /// reads B from L3 fewer times (K = 4096: 32-row chunks read all of B once per 32 rows).
    const MC_BYTES: usize = 768 * 1024;
    type A = u8;
    type B = i8;
    fn a_elem(x: u8) -> u8 {
        x
    }
    fn b_elem(w: i8) -> i8 {
        w
    }
    /// # Safety
    /// As [`Kernel::pack_a_seg`].
    unsafe fn pack_a_seg<T: crate::gemm::Code8>(
        src: &[T],
        panel: &mut [u8],
        i: usize,
        k0: usize,
    ) -> u32 {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { pack_a_seg(src, panel, i, k0) }
    }
    /// # Safety
    /// As [`Kernel::tile`].
    unsafe fn tile(t: &Tile<u8, i8>, o: &TileOut) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { tile(t, o) }
    }
}

/// # Safety
/// The CPU has AVX-512 VNNI; as [`Kernel::tile`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(t: &Tile<u8, i8>, o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let (c, first, last, groups, a, b) = (t.c, t.first, t.last, t.groups, t.a, t.b);
        let mut init = [[_mm512_setzero_si512(); 2]; MR];
        if !first {
            for (i, acc_i) in init.iter_mut().enumerate() {
                for (h, v) in acc_i.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(c.add(i * NR + 16 * h) as *const __m512i);
                }
            }
        }
        let acc = dot_tile!(init, 0..groups, |g| b.add(g * NR * KG), |i, g| a
            .add((g * MR + i) * KG));
        if !last {
            for (i, acc_i) in acc.iter().enumerate() {
                for (h, &v) in acc_i.iter().enumerate() {
                    _mm512_storeu_si512(c.add(i * NR + 16 * h) as *mut __m512i, v);
                }
            }
            return;
        }
        finish_tile(&acc, o);
    }
}

/// `R` rows of canonical codes (row `r` at `a + r * lda`, `KG * steps` codes) times one packed B
/// panel (`steps` groups, this tier's layout), finished into `o`: a fully connected layer at a
/// batch of a few rows, where an 8-row tile (or a 32-row AMX tile) would multiply mostly
/// padding. Two sets of accumulators take alternate groups, so consecutive `vpdpbusd` do not
/// wait on each other; their int32 sum wraps the same in any order, so it is exact.
///
/// # Safety
/// The CPU has AVX-512 VNNI; the `KG * steps` bytes at `a + r * lda` are readable for every
/// `r < R`; `b` holds `steps` groups; `o` meets [`TileOut`]'s contract for `R` rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn gemv_tile<const R: usize>(
    a: *const u8,
    lda: usize,
    b: *const i8,
    steps: usize,
    o: &TileOut,
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let mut acc = [[[_mm512_setzero_si512(); 2]; R]; 2];
        let mut s = 0;
        while s < steps {
            let phases = (steps - s).min(2);
            for (u, acc_u) in acc.iter_mut().enumerate().take(phases) {
                let bp = b.add((s + u) * NR * KG);
                let b0 = _mm512_loadu_si512(bp as *const __m512i);
                let b1 = _mm512_loadu_si512(bp.add(16 * KG) as *const __m512i);
                for (r, acc_r) in acc_u.iter_mut().enumerate() {
                    let ap = a.add(r * lda + (s + u) * KG) as *const i32;
                    let av = _mm512_set1_epi32(ap.read_unaligned());
                    acc_r[0] = _mm512_dpbusd_epi32(acc_r[0], av, b0);
                    acc_r[1] = _mm512_dpbusd_epi32(acc_r[1], av, b1);
                }
            }
            s += phases;
        }
        let mut sum = [[_mm512_setzero_si512(); 2]; R];
        for (r, sum_r) in sum.iter_mut().enumerate() {
            for (h, v) in sum_r.iter_mut().enumerate() {
                *v = _mm512_add_epi32(acc[0][r][h], acc[1][r][h]);
            }
        }
        finish_acc(&sum, o);
    }
}

/// The output stage on a tile's accumulators, stored as `rows x cols` codes at `out`.
///
/// # Safety
/// The CPU has AVX-512 F/BW; `o` meets [`TileOut`]'s contract for this tier's tile.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn finish_tile(acc: &[[__m512i; 2]; MR], o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe { finish_acc(acc, o) }
}

/// The output stage on `R` rows of `H` vectors of 16 accumulators (columns `n0 ..` of
/// `o`), stored as `o.rows x o.cols` codes: column group by column group, so each group's
/// constants are loaded once for all rows.
///
/// # Safety
/// The CPU has AVX-512 F/BW; `o` meets [`TileOut`]'s contract for an `R x 16H` tile.
#[inline(always)]
unsafe fn finish_acc<const R: usize, const H: usize>(acc: &[[__m512i; H]; R], o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let (rowsum, epi, n0, out, ldc, rows, cols) =
            (o.rowsum, o.epi, o.n0, o.out, o.ldc, o.rows, o.cols);
        if epi.vector_ok {
            // Whole rows of 64 codes (or two of 32) from four vectors, where the clamp keeps
            // the codes in i8's or u8's range: two rounds of saturating packs (exact on those
            // codes) and one dword permute, four shuffles where a truncating `vpmovdb` store
            // per vector takes eight.
            let signed = epi.cmin >= -128 && epi.cmax <= 127;
            let unsigned = epi.cmin >= 0 && epi.cmax <= 255;
            let mut first = 0;
            // After the packs, dword `4L + s` is lane `L` of vector `s`; back to `4s + L`.
            let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
            let pack = |q: [__m512i; 4]| {
                let lo = _mm512_packs_epi32(q[0], q[1]);
                let hi = _mm512_packs_epi32(q[2], q[3]);
                let bytes = if signed {
                    _mm512_packs_epi16(lo, hi)
                } else {
                    _mm512_packus_epi16(lo, hi)
                };
                _mm512_permutexvar_epi32(order, bytes)
            };
            let packs = (signed || unsigned)
                && ((H == 1 && cols == 16 && ldc == 16) || ((H == 2 || H == 4) && cols == 16 * H));
            if packs && epi.zw_zero && epi.lshift_zero && epi.clamp_first {
                // The usual flags as constants, and RoundingDivideByPOT's sign term left out
                // under a floor of at least 0 (a ReLU's): tested per vector, the flags are
                // reloaded after every store, which may alias the epilogue.
                let k: [Cols16; 4] = [
                    Cols16::load(epi, n0),
                    Cols16::load(epi, n0 + 16 * 1.min(H - 1)),
                    Cols16::load(epi, n0 + 16 * (H / 2)),
                    Cols16::load(epi, n0 + 16 * (H - 1)),
                ];
                let zero = _mm512_setzero_si512();
                let mut neg = 0;
                for kh in &k {
                    neg |= _mm512_cmplt_epi32_mask(kh.pre_lo, zero);
                }
                first = match (neg == 0, epi.zout_folded) {
                    (true, true) => rows_lean::<R, H, true, true>(acc, o, &k, signed),
                    (true, false) => rows_lean::<R, H, true, false>(acc, o, &k, signed),
                    (false, true) => rows_lean::<R, H, false, true>(acc, o, &k, signed),
                    (false, false) => rows_lean::<R, H, false, false>(acc, o, &k, signed),
                };
            } else if (signed || unsigned) && H == 1 && cols == 16 && ldc == 16 {
                // Four rows of 16 codes, adjacent in the output, as one 64-code store.
                let k = Cols16::load(epi, n0);
                while first + 4 <= rows {
                    let i = first;
                    let v = pack([
                        k.requant(acc[i][0], _mm512_set1_epi32(*rowsum.add(i)), epi),
                        k.requant(acc[i + 1][0], _mm512_set1_epi32(*rowsum.add(i + 1)), epi),
                        k.requant(acc[i + 2][0], _mm512_set1_epi32(*rowsum.add(i + 2)), epi),
                        k.requant(acc[i + 3][0], _mm512_set1_epi32(*rowsum.add(i + 3)), epi),
                    ]);
                    _mm512_storeu_si512(out.add(first * 16) as *mut __m512i, v);
                    first += 4;
                }
            } else if (signed || unsigned) && (H == 2 || H == 4) && cols == 16 * H {
                let k: [Cols16; 4] = [
                    Cols16::load(epi, n0),
                    Cols16::load(epi, n0 + 16),
                    Cols16::load(epi, n0 + 16 * (H / 2)),
                    Cols16::load(epi, n0 + 16 * (H - 1)),
                ];
                if H == 4 {
                    for (i, acc_i) in acc.iter().enumerate().take(rows) {
                        let rs = _mm512_set1_epi32(*rowsum.add(i));
                        let v = pack([
                            k[0].requant(acc_i[0], rs, epi),
                            k[1].requant(acc_i[1], rs, epi),
                            k[2].requant(acc_i[H / 2], rs, epi),
                            k[3].requant(acc_i[H - 1], rs, epi),
                        ]);
                        _mm512_storeu_si512(out.add(i * ldc) as *mut __m512i, v);
                    }
                    first = rows;
                } else {
                    while first + 2 <= rows {
                        let i = first;
                        let rs0 = _mm512_set1_epi32(*rowsum.add(i));
                        let rs1 = _mm512_set1_epi32(*rowsum.add(i + 1));
                        let v = pack([
                            k[0].requant(acc[i][0], rs0, epi),
                            k[1].requant(acc[i][1], rs0, epi),
                            k[0].requant(acc[i + 1][0], rs1, epi),
                            k[1].requant(acc[i + 1][1], rs1, epi),
                        ]);
                        let lo = _mm512_castsi512_si256(v);
                        _mm256_storeu_si256(out.add(i * ldc) as *mut __m256i, lo);
                        // The upper half to the next row (the masked store writes only it).
                        let next = out.add((i + 1) * ldc).wrapping_sub(32);
                        _mm512_mask_storeu_epi8(next as *mut i8, !0u64 << 32, v);
                        first += 2;
                    }
                }
            }
            for h in 0..H {
                if 16 * h >= cols {
                    break;
                }
                let k = Cols16::load(epi, n0 + 16 * h);
                let mask = prefix_mask((cols - 16 * h).min(16)) as __mmask16;
                for (i, acc_i) in acc.iter().enumerate().take(rows).skip(first) {
                    let rs = _mm512_set1_epi32(*rowsum.add(i));
                    let q = k.requant(acc_i[h], rs, epi);
                    _mm512_mask_cvtepi32_storeu_epi8(out.add(i * ldc + 16 * h) as *mut _, mask, q);
                }
            }
        } else {
            let mut raw = [[0i32; 16]; 64];
            debug_assert!(R * H <= raw.len());
            for (i, acc_i) in acc.iter().enumerate() {
                for (h, &v) in acc_i.iter().enumerate() {
                    _mm512_storeu_si512(raw[i * H + h].as_mut_ptr() as *mut __m512i, v);
                }
            }
            epi.finish_scalar(raw.as_flattened(), 16 * H, o);
        }
    }
}

/// [`finish_acc`]'s rows packed four vectors to a 64-code store (one row of 64 codes, two of
/// 32 or four adjacent ones of 16) for an epilogue with `zw_zero`, `lshift_zero` and
/// `clamp_first` ([`Lean16::requant`]), `k` its column groups as `finish_acc` loads them;
/// returns the rows done.
///
/// # Safety
/// As [`finish_acc`], with `o.cols == 16 * H` (and `o.ldc == 16` when `H == 1`) and the clamp
/// inside i8's range (`signed`) or u8's; `NN` only when every `pre_lo` of the columns is at
/// least 0; `ZF == o.epi.zout_folded`.
#[inline(always)]
unsafe fn rows_lean<const R: usize, const H: usize, const NN: bool, const ZF: bool>(
    acc: &[[__m512i; H]; R],
    o: &TileOut,
    k: &[Cols16; 4],
    signed: bool,
) -> usize {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let (epi, out, ldc, rows) = (o.epi, o.out, o.ldc, o.rows);
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        let k = [k[0].lean(), k[1].lean(), k[2].lean(), k[3].lean()];
        let q = |c: &Lean16, v: __m512i| c.requant::<NN, ZF>(v, epi);
        let pack = |a: __m512i, b: __m512i, c: __m512i, d: __m512i| {
            let lo = _mm512_packs_epi32(a, b);
            let hi = _mm512_packs_epi32(c, d);
            let bytes = if signed {
                _mm512_packs_epi16(lo, hi)
            } else {
                _mm512_packus_epi16(lo, hi)
            };
            _mm512_permutexvar_epi32(order, bytes)
        };
        let (h1, h2, h3) = (1.min(H - 1), H / 2, H - 1);
        let mut i = 0;
        if H == 4 {
            while i < rows {
                let a = &acc[i];
                let v = pack(
                    q(&k[0], a[0]),
                    q(&k[1], a[h1]),
                    q(&k[2], a[h2]),
                    q(&k[3], a[h3]),
                );
                _mm512_storeu_si512(out.add(i * ldc) as *mut __m512i, v);
                i += 1;
            }
        } else if H == 2 {
            while i + 2 <= rows {
                let (a, b) = (&acc[i], &acc[i + 1]);
                let v = pack(
                    q(&k[0], a[0]),
                    q(&k[1], a[h1]),
                    q(&k[0], b[0]),
                    q(&k[1], b[h1]),
                );
                _mm256_storeu_si256(out.add(i * ldc) as *mut __m256i, _mm512_castsi512_si256(v));
                // The upper half to the next row (the masked store writes only it).
                let next = out.add((i + 1) * ldc).wrapping_sub(32);
                _mm512_mask_storeu_epi8(next as *mut i8, !0u64 << 32, v);
                i += 2;
            }
        } else {
            while i + 4 <= rows {
                let v = pack(
                    q(&k[0], acc[i][0]),
                    q(&k[0], acc[i + 1][0]),
                    q(&k[0], acc[i + 2][0]),
                    q(&k[0], acc[i + 3][0]),
                );
                _mm512_storeu_si512(out.add(i * 16) as *mut __m512i, v);
                i += 4;
            }
        }
        i
    }
}

/// [`Lean16::requant`]'s steps on `$v` with `$c`'s constants (`$nudge` is 2^30 in each 64-bit
/// lane, `$zout` the output zero point in each lane): a macro, so that tiles finishing many
/// vectors in registers get every step inline, where calls were left out of line.
macro_rules! lean_requant {
    ($c:expr, $v:expr, $nudge:expr, $zout:expr, $nn:expr, $zf:expr) => {{
        let c: &Lean16 = $c;
        let x = _mm512_add_epi32($v, c.colconst);
        let even = _mm512_add_epi64(_mm512_mul_epi32(x, c.m0), $nudge);
        let odd = _mm512_add_epi64(
            _mm512_mul_epi32(_mm512_srli_epi64::<32>(x), c.m0_odd),
            $nudge,
        );
        let mut x = _mm512_mask_blend_epi32(
            0xAAAA,
            _mm512_srli_epi64::<31>(even),
            _mm512_slli_epi64::<1>(odd),
        );
        x = _mm512_max_epi32(x, c.pre_lo);
        x = _mm512_min_epi32(x, c.pre_hi);
        let mut t = _mm512_add_epi32(x, c.rround);
        if !$nn {
            t = _mm512_add_epi32(t, _mm512_srai_epi32::<31>(x));
        }
        let r = _mm512_srav_epi32(t, c.rshift);
        if $zf {
            r
        } else {
            _mm512_add_epi32(r, $zout)
        }
    }};
}

/// [`finish_acc`] on accumulators held by value: a whole tile (`o.rows == R`) under the usual
/// flags and a packing clamp is finished with constant indices, so the accumulators stay in
/// registers; `finish_acc` indexes rows in a loop, which keeps them on the stack, and any other
/// tile takes it on a copy, stored only on that path.
///
/// # Safety
/// As [`finish_acc`].
#[inline(always)]
unsafe fn finish_regs<const R: usize, const H: usize>(acc: [[__m512i; H]; R], o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let epi = o.epi;
        let signed = epi.cmin >= -128 && epi.cmax <= 127;
        let unsigned = epi.cmin >= 0 && epi.cmax <= 255;
        let shape = if H == 1 {
            o.cols == 16 && o.ldc == 16 && R.is_multiple_of(4)
        } else {
            // A last panel's partial columns too (masked stores): the general stage would
            // finish them a vector at a time with the flags tested per vector.
            o.cols >= 1 && o.cols <= 16 * H && (H == 4 || (H == 2 && R.is_multiple_of(2)))
        };
        if o.rows == R
            && shape
            && epi.vector_ok
            && (signed || unsigned)
            && epi.zw_zero
            && epi.lshift_zero
            && epi.clamp_first
        {
            let n0 = o.n0;
            // Column groups past a partial panel's last reuse its constants (never stored).
            let last = (o.cols - 1) / 16;
            let k: [Lean16; 4] = [
                Cols16::load(epi, n0).lean(),
                Cols16::load(epi, n0 + 16 * 1.min(H - 1).min(last)).lean(),
                Cols16::load(epi, n0 + 16 * (H / 2).min(last)).lean(),
                Cols16::load(epi, n0 + 16 * (H - 1).min(last)).lean(),
            ];
            let zero = _mm512_setzero_si512();
            let mut neg = 0;
            for kh in &k {
                neg |= _mm512_cmplt_epi32_mask(kh.pre_lo, zero);
            }
            match (neg == 0, epi.zout_folded, signed) {
                (true, true, true) => lean_regs::<R, H, true, true, true>(acc, o, &k),
                (true, true, false) => lean_regs::<R, H, true, true, false>(acc, o, &k),
                (true, false, true) => lean_regs::<R, H, true, false, true>(acc, o, &k),
                (true, false, false) => lean_regs::<R, H, true, false, false>(acc, o, &k),
                (false, true, true) => lean_regs::<R, H, false, true, true>(acc, o, &k),
                (false, true, false) => lean_regs::<R, H, false, true, false>(acc, o, &k),
                (false, false, true) => lean_regs::<R, H, false, false, true>(acc, o, &k),
                (false, false, false) => lean_regs::<R, H, false, false, false>(acc, o, &k),
            }
        } else {
            let copy = acc;
            finish_acc(&copy, o);
        }
    }
}

/// [`rows_lean`] on a whole tile held by value, `S` for a clamp inside i8's range (else u8's).
///
/// # Safety
/// As [`rows_lean`], with `o.rows == R`, `H` 1 (`R % 4 == 0`), 2 (`R` even) or 4, and for `H`
/// 2 or 4 any `o.cols` from 1 to `16 * H` (`k`'s groups past the last column repeat it).
#[inline(always)]
unsafe fn lean_regs<
    const R: usize,
    const H: usize,
    const NN: bool,
    const ZF: bool,
    const S: bool,
>(
    acc: [[__m512i; H]; R],
    o: &TileOut,
    k: &[Lean16; 4],
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let (epi, out, ldc) = (o.epi, o.out, o.ldc);
        // A partial panel's rows store their first `o.cols` codes only.
        let full = o.cols == 16 * H;
        let cols_mask = prefix_mask(o.cols);
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        // Macros, not closures or calls: this many call sites are left out of line (closures
        // compiled without the target features, so none of their intrinsics inline).
        let nudge = _mm512_set1_epi64(1 << 30);
        let zout = _mm512_set1_epi32(epi.zout);
        macro_rules! q {
            ($c:expr, $v:expr) => {
                lean_requant!($c, $v, nudge, zout, NN, ZF)
            };
        }
        macro_rules! pack {
            ($a:expr, $b:expr, $c:expr, $d:expr $(,)?) => {{
                let lo = _mm512_packs_epi32($a, $b);
                let hi = _mm512_packs_epi32($c, $d);
                let bytes = if S {
                    _mm512_packs_epi16(lo, hi)
                } else {
                    _mm512_packus_epi16(lo, hi)
                };
                _mm512_permutexvar_epi32(order, bytes)
            }};
        }
        let (h1, h2, h3) = (1.min(H - 1), H / 2, H - 1);
        // One store of four vectors from row `$i`, a constant: a loop over the rows is not
        // unrolled, and indexing the array in it keeps it on the stack.
        macro_rules! store {
            ($i:expr) => {{
                let i: usize = $i;
                if H == 4 {
                    let a = &acc[i];
                    let v = pack!(
                        q!(&k[0], a[0]),
                        q!(&k[1], a[h1]),
                        q!(&k[2], a[h2]),
                        q!(&k[3], a[h3]),
                    );
                    if full {
                        _mm512_storeu_si512(out.add(i * ldc) as *mut __m512i, v);
                    } else {
                        _mm512_mask_storeu_epi8(out.add(i * ldc) as *mut i8, cols_mask, v);
                    }
                } else if H == 2 {
                    let (a, b) = (&acc[i], &acc[i + 1]);
                    let v = pack!(
                        q!(&k[0], a[0]),
                        q!(&k[1], a[h1]),
                        q!(&k[0], b[0]),
                        q!(&k[1], b[h1]),
                    );
                    // The upper half to the next row (the masked store writes only it).
                    let next = out.add((i + 1) * ldc).wrapping_sub(32);
                    if full {
                        _mm256_storeu_si256(
                            out.add(i * ldc) as *mut __m256i,
                            _mm512_castsi512_si256(v),
                        );
                        _mm512_mask_storeu_epi8(next as *mut i8, !0u64 << 32, v);
                    } else {
                        _mm512_mask_storeu_epi8(out.add(i * ldc) as *mut i8, cols_mask, v);
                        _mm512_mask_storeu_epi8(next as *mut i8, cols_mask << 32, v);
                    }
                } else {
                    let v = pack!(
                        q!(&k[0], acc[i][0]),
                        q!(&k[0], acc[i + 1][0]),
                        q!(&k[0], acc[i + 2][0]),
                        q!(&k[0], acc[i + 3][0]),
                    );
                    _mm512_storeu_si512(out.add(i * 16) as *mut __m512i, v);
                }
            }};
        }
        let per = if H == 4 { 1 } else { 4 / H };
        macro_rules! rows {
            ($($i:literal)*) => {$(
                if $i < R && $i % per == 0 {
                    store!($i);
                }
            )*};
        }
        debug_assert!(R <= 16);
        rows!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    }
}

/// Field `f` of [`Epilogue::lanes`] (laid out 16 columns wide, as this tier's table asks) for
/// the 16 columns from `n` (a multiple of 16).
///
/// # Safety
/// The CPU has AVX-512 F; `epi` was laid out 16 wide and covers column `n + 15`.
#[inline(always)]
unsafe fn lane(epi: &Epilogue, f: usize, n: usize) -> __m512i {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        debug_assert!(
            n.is_multiple_of(16) && (n / 16 * field::COUNT + f + 1) * 16 <= epi.lanes.len()
        );
        _mm512_loadu_si512(
            epi.lanes.as_ptr().add((n / 16 * field::COUNT + f) * 16) as *const __m512i
        )
    }
}

/// The [`Epilogue`] flags the vector output stage branches on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct StageFlags {
    pub zw_zero: bool,
    pub lshift_zero: bool,
    pub clamp_first: bool,
}

impl StageFlags {
    pub(crate) fn of(epi: &Epilogue) -> StageFlags {
        StageFlags {
            zw_zero: epi.zw_zero,
            lshift_zero: epi.lshift_zero,
            clamp_first: epi.clamp_first,
        }
    }
}

/// The output stage's constants for 16 columns, loaded once and kept in registers for every
/// row of a tile: loaded per vector, they cost more loads than the stage has arithmetic, and
/// the compiler cannot hoist them past the output stores. A field the epilogue's flags make
/// unused is left zero rather than loaded.
#[derive(Clone, Copy)]
pub(crate) struct Cols16 {
    colconst: __m512i,
    zw: __m512i,
    m0: __m512i,
    m0_odd: __m512i,
    lshift: __m512i,
    rshift: __m512i,
    rmask: __m512i,
    rhalf: __m512i,
    pre_lo: __m512i,
    pre_hi: __m512i,
    rround: __m512i,
}

impl Cols16 {
    /// The 16 columns from `n`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F; `epi` was laid out 16 wide and covers column `n + 15`.
    #[inline(always)]
    pub(crate) unsafe fn load(epi: &Epilogue, n: usize) -> Cols16 {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe {
            let zero = _mm512_setzero_si512();
            let ld = |f: usize| lane(epi, f, n);
            let (clamp_first, zw_zero, lshift_zero) =
                (epi.clamp_first, epi.zw_zero, epi.lshift_zero);
            Cols16 {
                colconst: ld(field::COLCONST),
                zw: if zw_zero { zero } else { ld(field::ZW) },
                m0: ld(field::M0),
                m0_odd: ld(field::M0_ODD),
                lshift: if lshift_zero { zero } else { ld(field::LSHIFT) },
                rshift: ld(field::RSHIFT),
                rmask: if clamp_first { zero } else { ld(field::RMASK) },
                rhalf: if clamp_first { zero } else { ld(field::RHALF) },
                pre_lo: if clamp_first { ld(field::PRE_LO) } else { zero },
                pre_hi: if clamp_first { ld(field::PRE_HI) } else { zero },
                rround: match (clamp_first, epi.zout_folded) {
                    (true, true) => ld(field::RROUND_Z),
                    (true, false) => ld(field::RROUND),
                    _ => zero,
                },
            }
        }
    }

    /// The output stage on 16 accumulators of these columns; the same steps as the AVX2
    /// tier's.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW; `epi` is vector-ready and these are its columns.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn requant(&self, acc: __m512i, rowsum: __m512i, epi: &Epilogue) -> __m512i {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { self.requant_as(acc, rowsum, epi, StageFlags::of(epi)) }
    }

    /// The constants [`Lean16`] needs, for an epilogue with `zw_zero`, `lshift_zero` and
    /// `clamp_first`.
    #[inline(always)]
    pub(crate) fn lean(&self) -> Lean16 {
        Lean16 {
            colconst: self.colconst,
            m0: self.m0,
            m0_odd: self.m0_odd,
            rshift: self.rshift,
            pre_lo: self.pre_lo,
            pre_hi: self.pre_hi,
            rround: self.rround,
        }
    }

    /// [`Cols16::requant`] with the epilogue's flags given, `f` being `StageFlags::of(epi)`: a
    /// loop that passes them as constants runs without their tests, which the compiler cannot
    /// hoist past the output stores.
    ///
    /// # Safety
    /// As [`Cols16::requant`]; `f == StageFlags::of(epi)`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn requant_as(
        &self,
        acc: __m512i,
        rowsum: __m512i,
        epi: &Epilogue,
        f: StageFlags,
    ) -> __m512i {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe {
            let mut x = _mm512_add_epi32(acc, self.colconst);
            if !f.zw_zero {
                // Symmetric weights (every `zw` 0) skip the two-uop, ten-cycle `vpmulld`.
                x = _mm512_sub_epi32(x, _mm512_mullo_epi32(self.zw, rowsum));
            }
            self.scale_clamp(x, epi, f)
        }
    }

    /// The output stage past its additive terms: AVX2's `scale_clamp`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW; `epi` is vector-ready and these are its columns;
    /// `f == StageFlags::of(epi)`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn scale_clamp(&self, mut x: __m512i, epi: &Epilogue, f: StageFlags) -> __m512i {
        if !f.lshift_zero {
            x = _mm512_sllv_epi32(x, self.lshift);
        }
        let nudge = _mm512_set1_epi64(1 << 30);
        let even = _mm512_add_epi64(_mm512_mul_epi32(x, self.m0), nudge);
        let odd = _mm512_add_epi64(
            _mm512_mul_epi32(_mm512_srli_epi64::<32>(x), self.m0_odd),
            nudge,
        );
        x = _mm512_mask_blend_epi32(
            0xAAAA,
            _mm512_srli_epi64::<31>(even),
            _mm512_slli_epi64::<1>(odd),
        );
        if f.clamp_first {
            // The clamp first, then RoundingDivideByPOT as one rounded shift (see
            // `Epilogue::clamp_first`): no compare masks and no clamp after the divide.
            x = _mm512_max_epi32(x, self.pre_lo);
            x = _mm512_min_epi32(x, self.pre_hi);
            let t = _mm512_add_epi32(_mm512_add_epi32(x, self.rround), _mm512_srai_epi32::<31>(x));
            let q = _mm512_srav_epi32(t, self.rshift);
            // With `zout_folded`, `rround` holds the zero point shifted up (`RROUND_Z`).
            return if epi.zout_folded {
                q
            } else {
                _mm512_add_epi32(q, _mm512_set1_epi32(epi.zout))
            };
        }
        let one = _mm512_set1_epi32(1);
        let rem = _mm512_and_si512(x, self.rmask);
        let neg = _mm512_cmplt_epi32_mask(x, _mm512_setzero_si512());
        let threshold = _mm512_mask_add_epi32(self.rhalf, neg, self.rhalf, one);
        let round = _mm512_cmpgt_epi32_mask(rem, threshold);
        let q = _mm512_srav_epi32(x, self.rshift);
        x = _mm512_mask_add_epi32(q, round, q, one);
        x = _mm512_max_epi32(x, _mm512_set1_epi32(epi.lo));
        x = _mm512_min_epi32(x, _mm512_set1_epi32(epi.hi));
        _mm512_add_epi32(x, _mm512_set1_epi32(epi.zout))
    }
}

/// The output stage's constants for 16 columns of an epilogue with symmetric weights, no left
/// shift and the clamp first: the flags of nearly every layer, whose stage is then the
/// multiply, the clamp and one rounded shift.
#[derive(Clone, Copy)]
pub(crate) struct Lean16 {
    pub(crate) colconst: __m512i,
    pub(crate) m0: __m512i,
    pub(crate) m0_odd: __m512i,
    pub(crate) rshift: __m512i,
    pub(crate) pre_lo: __m512i,
    pub(crate) pre_hi: __m512i,
    pub(crate) rround: __m512i,
}

impl Lean16 {
    /// The output stage on 16 sums, the same steps as [`Cols16::requant_as`] with these flags.
    /// `NN`: every stored column's clamp floor `pre_lo` is at least 0 (a ReLU's, whose real 0 is the
    /// lowest output code), so the clamped value is never negative and RoundingDivideByPOT's
    /// `x >> 31` term, always 0, is left out. `ZF`: the epilogue's `zout_folded` (`rround`
    /// holds the zero point), a parameter so that the loop has no add of a zero vector.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW; these are the columns of `epi`, which is vector-ready with
    /// `zw_zero`, `lshift_zero` and `clamp_first`; with `NN`, the columns whose results are
    /// stored have `pre_lo >= 0`; `ZF == epi.zout_folded`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn requant<const NN: bool, const ZF: bool>(
        &self,
        acc: __m512i,
        epi: &Epilogue,
    ) -> __m512i {
        lean_requant!(
            self,
            acc,
            _mm512_set1_epi64(1 << 30),
            _mm512_set1_epi32(epi.zout),
            NN,
            ZF
        )
    }
}

/// The output stage on 16 columns starting at `n`; the same steps as the AVX2 tier's.
///
/// # Safety
/// The CPU has AVX-512 F/BW; `epi` is vector-ready, laid out 16 wide, and covers `n + 15`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn requant(acc: __m512i, rowsum: __m512i, epi: &Epilogue, n: usize) -> __m512i {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe { Cols16::load(epi, n).requant(acc, rowsum, epi) }
}

/// The output stage past its additive terms, on 16 columns from `n`: AVX2's `scale_clamp`.
///
/// # Safety
/// The CPU has AVX-512 F/BW; `epi` is vector-ready, laid out 16 wide, and covers column
/// `n + 15`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn scale_clamp(x: __m512i, epi: &Epilogue, n: usize) -> __m512i {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe { Cols16::load(epi, n).scale_clamp(x, epi, StageFlags::of(epi)) }
}

/// The output stage on one row of complete accumulators, with no row-sum term (the depthwise
/// kernel's finish).
///
/// # Safety
/// The CPU has AVX-512 F/BW; `epi`'s columns cover `acc.len()` rounded up to 16;
/// `out.len() == acc.len()`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn finish_row(epi: &Epilogue, acc: &[i32], out: &mut [u8]) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        if !epi.vector_ok {
            for (n, (o, &a)) in out.iter_mut().zip(acc).enumerate() {
                *o = epi.scalar(a, 0, n);
            }
            return;
        }
        let zero = _mm512_setzero_si512();
        for n in (0..acc.len()).step_by(16) {
            let count = (acc.len() - n).min(16);
            let mask = prefix_mask(count) as __mmask16;
            let v = _mm512_maskz_loadu_epi32(mask, acc.as_ptr().add(n));
            let q = requant(v, zero, epi, n);
            _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(n) as *mut _, mask, q);
        }
    }
}

/// Codes `k0 ..` of row `i` of a packed A panel (groups of 4 codes of each of the 8 rows): 64
/// codes at a time once `k0 + j` reaches a group boundary, mapped to canonical u8 (`^ 0x80`
/// for int8), summed with `vpsadbw` and scattered as 16 four-code groups 32 bytes apart.
/// Code-by-code packing would make packing, not `vpdpbusd`, the cost of every GEMM with few
/// output channels.
///
/// # Safety
/// The CPU has AVX-512 F/BW; `panel` holds whole groups covering `k0 + src.len()` for row
/// `i < MR`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn pack_a_seg<T: crate::gemm::Code8>(
    src: &[T],
    panel: &mut [u8],
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
        let head = ((KG - k0 % KG) % KG).min(len);
        for (j, x) in src.iter().enumerate().take(head) {
            let v = x.canon_a();
            sum = sum.wrapping_add(v as u32);
            *d.add(at(k0 + j)) = v;
        }
        let flip = _mm512_set1_epi8(if T::A_OFFSET != 0 { -128 } else { 0 });
        // Group g of this run lands MR * KG = 32 bytes after group g - 1.
        let offsets = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32((MR * KG) as i32),
        );
        let mut sums = _mm512_setzero_si512();
        let mut j = head;
        while j < len {
            // Whole groups only: a last partial group is written code by code below.
            let n = ((len - j) / KG * KG).min(64);
            if n == 0 {
                break;
            }
            let v = canon_load(s.add(j), prefix_mask(n), flip, &mut sums);
            let groups: __mmask16 = if n == 64 {
                0xffff
            } else {
                (1u16 << (n / KG)) - 1
            };
            _mm512_mask_i32scatter_epi32::<1>(d.add(at(k0 + j)) as _, groups, offsets, v);
            j += n;
        }
        sum = sum.wrapping_add(_mm512_reduce_add_epi64(sums) as u32);
        for (j, x) in src.iter().enumerate().skip(j) {
            let v = x.canon_a();
            sum = sum.wrapping_add(v as u32);
            *d.add(at(k0 + j)) = v;
        }
        sum
    }
}

/// A 1x1 layer's chunk of image bytes on the AVX-512 tiers: CPUs with AVX-512 carry 1-2 MiB of
/// L2 per core, which the larger chunk uses (see `ImplicitKernel::CHUNK_1X1_BYTES`).
const CHUNK_1X1_BYTES: usize = 512 * 1024;

/// What every AVX-512 implicit tile shares as an [`crate::gemm::ImplicitKernel`]: its element
/// types, group, 1x1 chunk, and row fill ([`canon_row`], [`widen_3_4`]); the tiles differ only
/// in their shape and step.
macro_rules! avx512_implicit_shared {
    () => {
        type E = u8;
        type B = i8;
        const KG: usize = KG;
        const CHUNK_1X1_BYTES: usize = CHUNK_1X1_BYTES;
        /// # Safety
        /// As [`crate::gemm::ImplicitKernel::canon_row`].
        unsafe fn canon_row<T: crate::gemm::Code8>(
            codes: &[T],
            c: usize,
            dst: &mut [u8],
            sums: &mut [i32],
        ) {
            // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
            unsafe { canon_row(codes, c, dst, sums) }
        }
        /// # Safety
        /// As [`crate::gemm::ImplicitKernel::widen_3_4`].
        unsafe fn widen_3_4<T: crate::gemm::Code8>(
            codes: &[T],
            zc_code: i32,
            dst: &mut [u8],
            sums: &mut [i32],
        ) {
            // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
            unsafe { widen_3_4(codes, zc_code, dst, sums) }
        }
    };
}

impl crate::gemm::ImplicitKernel for Vnni {
    const MR: usize = MR;
    const NR: usize = NR;
    avx512_implicit_shared!();
    /// # Safety
    /// As [`crate::gemm::ImplicitKernel::tile_implicit`].
    unsafe fn tile_implicit(rows_a: &ImplicitRows<u8>, b: *const i8, o: &TileOut) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { tile_implicit(rows_a, b, o) }
    }
}

/// An implicit-GEMM tile (see [`ImplicitRows`]): [`tile`]'s products in the same order, with
/// each row's four codes read from the padded image in place of a packed panel.
///
/// # Safety
/// As [`crate::gemm::ImplicitKernel::tile_implicit`], on AVX-512 VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_implicit(rows_a: &ImplicitRows<u8>, b: *const i8, o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe { finish_tile(&implicit_steps(rows_a, b), o) }
}

/// [`tile_implicit`]'s products: the tile's accumulators.
///
/// # Safety
/// As [`tile_implicit`].
#[inline(always)]
unsafe fn implicit_steps(rows_a: &ImplicitRows<u8>, b: *const i8) -> [[__m512i; 2]; MR] {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let base = &rows_a.base[..MR];
        let (kh, run_groups, stride) = (rows_a.kh, rows_a.run_groups, rows_a.row_stride);
        // Step `s` is group `s % run_groups` of filter row `s / run_groups`; B is read in order.
        let mut acc = [[_mm512_setzero_si512(); 2]; MR];
        for fy in 0..kh {
            let rows: [*const u8; MR] = std::array::from_fn(|i| base[i].add(fy * stride));
            let bp = b.add(fy * run_groups * NR * KG);
            acc = dot_tile!(acc, 0..run_groups, |g| bp.add(g * NR * KG), |i, g| rows[i]
                .add(g * KG));
        }
        acc
    }
}

/// The 8 x 32 implicit tile as this tier runs it on its own layers: [`tile_implicit`]'s
/// products with [`finish_regs`]'s output stage. AMX runs its other convolutions on
/// [`Vnni`]'s, which keeps [`finish_tile`].
pub(crate) struct VnniMid;

impl crate::gemm::ImplicitKernel for VnniMid {
    const MR: usize = MR;
    const NR: usize = NR;
    avx512_implicit_shared!();
    /// # Safety
    /// As [`crate::gemm::ImplicitKernel::tile_implicit`].
    unsafe fn tile_implicit(rows_a: &ImplicitRows<u8>, b: *const i8, o: &TileOut) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { tile_mid(rows_a, b, o) }
    }
}

/// [`VnniMid`]'s tile.
///
/// # Safety
/// As [`tile_implicit`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_mid(rows_a: &ImplicitRows<u8>, b: *const i8, o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe { finish_regs(implicit_steps(rows_a, b), o) }
}

/// The implicit GEMM's wide tile: 6 rows by 64 columns (two of the packed filter's 32-column
/// panels), 24 accumulators. Each step's four B vectors serve six rows and each broadcast
/// four vectors, against two and eight for the 8 x 32 tile, so fewer of a step's loads and
/// loop instructions sit beside its `vpdpbusd`s; six rows also waste fewer padding rows on
/// small images (a 7x7 map is 49 pixels).
pub(crate) struct VnniWide;

const WMR: usize = 6;
const WNR: usize = 64;

impl crate::gemm::ImplicitKernel for VnniWide {
    const MR: usize = WMR;
    const NR: usize = WNR;
    avx512_implicit_shared!();
    /// # Safety
    /// As [`crate::gemm::ImplicitKernel::tile_implicit`], with `b` at a pair of this tier's
    /// packed panels (K padded to `KG`, so the second panel starts `kh * run_groups * KG * NR`
    /// bytes after the first), the second present when `o.cols > NR`.
    unsafe fn tile_implicit(rows_a: &ImplicitRows<u8>, b: *const i8, o: &TileOut) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { tile_wide(rows_a, b, o) }
    }
}

/// [`VnniWide`]'s tile: [`tile_implicit`]'s products over 64 columns (or 32 when the tile's
/// columns end in the first panel).
///
/// # Safety
/// As [`VnniWide`]'s `tile_implicit`, on AVX-512 VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_wide(rows_a: &ImplicitRows<u8>, b: *const i8, o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let base = &rows_a.base[..WMR];
        let (kh, run_groups, stride) = (rows_a.kh, rows_a.run_groups, rows_a.row_stride);
        // Groups of one filter row in a panel, and the distance between the two panels.
        let row_bytes = run_groups * NR * KG;
        let half = kh * row_bytes;
        let z = _mm512_setzero_si512();
        if o.cols <= NR {
            let mut acc = [[z; 2]; WMR];
            for fy in 0..kh {
                let r: [*const u8; WMR] = std::array::from_fn(|i| base[i].add(fy * stride));
                let bp = b.add(fy * row_bytes);
                for g in 0..run_groups {
                    let p = bp.add(g * NR * KG);
                    let b0 = _mm512_loadu_si512(p as *const __m512i);
                    let b1 = _mm512_loadu_si512(p.add(16 * KG) as *const __m512i);
                    for (i, acc_i) in acc.iter_mut().enumerate() {
                        let av =
                            _mm512_set1_epi32((r[i].add(g * KG) as *const i32).read_unaligned());
                        acc_i[0] = _mm512_dpbusd_epi32(acc_i[0], av, b0);
                        acc_i[1] = _mm512_dpbusd_epi32(acc_i[1], av, b1);
                    }
                }
            }
            finish_regs(acc, o);
            return;
        }
        let [[mut c00, mut c01, mut c02, mut c03], [mut c10, mut c11, mut c12, mut c13], [mut c20, mut c21, mut c22, mut c23], [mut c30, mut c31, mut c32, mut c33], [mut c40, mut c41, mut c42, mut c43], [mut c50, mut c51, mut c52, mut c53]] =
            [[z; 4]; WMR];
        for fy in 0..kh {
            let [r0, r1, r2, r3, r4, r5]: [*const u8; WMR] =
                std::array::from_fn(|i| base[i].add(fy * stride));
            let bp = b.add(fy * row_bytes);
            for g in 0..run_groups {
                let p = bp.add(g * NR * KG);
                let b0 = _mm512_loadu_si512(p as *const __m512i);
                let b1 = _mm512_loadu_si512(p.add(16 * KG) as *const __m512i);
                let b2 = _mm512_loadu_si512(p.add(half) as *const __m512i);
                let b3 = _mm512_loadu_si512(p.add(half + 16 * KG) as *const __m512i);
                macro_rules! row {
                    ($r:ident, $x0:ident, $x1:ident, $x2:ident, $x3:ident) => {{
                        let av = _mm512_set1_epi32(($r.add(g * KG) as *const i32).read_unaligned());
                        $x0 = _mm512_dpbusd_epi32($x0, av, b0);
                        $x1 = _mm512_dpbusd_epi32($x1, av, b1);
                        $x2 = _mm512_dpbusd_epi32($x2, av, b2);
                        $x3 = _mm512_dpbusd_epi32($x3, av, b3);
                    }};
                }
                row!(r0, c00, c01, c02, c03);
                row!(r1, c10, c11, c12, c13);
                row!(r2, c20, c21, c22, c23);
                row!(r3, c30, c31, c32, c33);
                row!(r4, c40, c41, c42, c43);
                row!(r5, c50, c51, c52, c53);
            }
        }
        let acc = [
            [c00, c01, c02, c03],
            [c10, c11, c12, c13],
            [c20, c21, c22, c23],
            [c30, c31, c32, c33],
            [c40, c41, c42, c43],
            [c50, c51, c52, c53],
        ];
        finish_regs(acc, o);
    }
}

/// The implicit GEMM's narrow tile: 16 rows by one vector of 16 columns, for layers of at most
/// 16 output channels, where the 8 x 32 tile's second vector multiplies zero columns: each
/// step's one B vector serves 16 rows.
pub(crate) struct VnniNarrow;

const NMR: usize = 16;

impl crate::gemm::ImplicitKernel for VnniNarrow {
    const MR: usize = NMR;
    /// The packed panels' width; the tile reads their first 16 columns.
    const NR: usize = NR;
    avx512_implicit_shared!();
    /// # Safety
    /// As [`crate::gemm::ImplicitKernel::tile_implicit`], with `o.cols <= 16`.
    unsafe fn tile_implicit(rows_a: &ImplicitRows<u8>, b: *const i8, o: &TileOut) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { tile_narrow(rows_a, b, o) }
    }
}

/// [`VnniNarrow`]'s tile: [`tile_implicit`]'s products on the panel's first 16 columns.
///
/// # Safety
/// As [`crate::gemm::ImplicitKernel::tile_implicit`], on AVX-512 VNNI, with `o.cols <= 16`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_narrow(rows_a: &ImplicitRows<u8>, b: *const i8, o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        debug_assert!(o.cols <= 16);
        let base = &rows_a.base[..NMR];
        let (kh, run_groups, stride) = (rows_a.kh, rows_a.run_groups, rows_a.row_stride);
        let mut acc = [[_mm512_setzero_si512(); 1]; NMR];
        // Rows `D` bytes apart (a tile inside one output row of a stride-1 layer over 16 or 32
        // channels, or a pointwise one over 32 or 64) read from one pointer at fixed offsets:
        // 16 row pointers do not fit the general registers, and reloading the spilled ones
        // sits beside every step's broadcasts.
        let p0 = base[0] as usize;
        let apart = |d: usize| {
            base.iter()
                .enumerate()
                .all(|(i, &r)| r as usize == p0 + i * d)
        };
        let d = (base[1] as usize).wrapping_sub(p0);
        if matches!(d, 16 | 32 | 64) && apart(d) {
            match d {
                16 => narrow_steps::<16>(base[0], kh, run_groups, stride, b, &mut acc),
                32 => narrow_steps::<32>(base[0], kh, run_groups, stride, b, &mut acc),
                _ => narrow_steps::<64>(base[0], kh, run_groups, stride, b, &mut acc),
            }
            finish_regs(acc, o);
            return;
        }
        for fy in 0..kh {
            let bp = b.add(fy * run_groups * NR * KG);
            for g in 0..run_groups {
                let bv = _mm512_loadu_si512(bp.add(g * NR * KG) as *const __m512i);
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let ap = base[i].add(fy * stride + g * KG) as *const i32;
                    acc_i[0] =
                        _mm512_dpbusd_epi32(acc_i[0], _mm512_set1_epi32(ap.read_unaligned()), bv);
                }
            }
        }
        finish_regs(acc, o);
    }
}

/// [`tile_narrow`]'s steps for rows `D` bytes apart from `a`, added to `acc`.
///
/// # Safety
/// The CPU has AVX-512 VNNI; row `i`'s runs start at `a + i * D` and are as
/// [`tile_narrow`]'s; `b` is its packed panel.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn narrow_steps<const D: usize>(
    a: *const u8,
    kh: usize,
    run_groups: usize,
    stride: usize,
    b: *const i8,
    acc: &mut [[__m512i; 1]; NMR],
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        for fy in 0..kh {
            let bp = b.add(fy * run_groups * NR * KG);
            let ap = a.add(fy * stride);
            for g in 0..run_groups {
                let bv = _mm512_loadu_si512(bp.add(g * NR * KG) as *const __m512i);
                let row = ap.add(g * KG);
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_epi32((row.add(i * D) as *const i32).read_unaligned());
                    acc_i[0] = _mm512_dpbusd_epi32(acc_i[0], av, bv);
                }
            }
        }
    }
}

/// This tier's implicit-GEMM convolution: layers of at most 16 output channels on
/// [`VnniNarrow`]'s 16 x 16 tile, layers wider than one panel on [`VnniWide`]'s 6 x 64 tile,
/// the rest on the 8 x 32 one, [`VnniMid`] (a 64-column tile over 32 real columns would
/// multiply half zeros), as do pointwise layers over few channels.
pub(crate) fn implicit_conv<T: crate::gemm::Code8>(
    plan: &crate::gemm::Conv2dPlan,
    input: &[T],
    input_shape: [usize; 4],
    output: &mut [T],
    output_shape: [usize; 4],
    threads: usize,
) {
    // A pointwise layer over 16 or fewer channels runs at most four steps per tile, where the
    // wide tile's output stage (its constants loaded per 6 rows, not 8) outweighs them: inputs
    // of 5 to 16 channels keep the 8 x 32 tile; a stem's 3 channels, padded to 4 under a
    // window wider than a pixel, take the wide one.
    let in_c = input_shape[3];
    if output_shape[3] <= 16 {
        plan.run_implicit::<VnniNarrow, T>(input, input_shape, output, output_shape, threads)
    } else if output_shape[3] > NR && (in_c > 16 || in_c <= KG) {
        plan.run_implicit::<VnniWide, T>(input, input_shape, output, output_shape, threads)
    } else {
        plan.run_implicit::<VnniMid, T>(input, input_shape, output, output_shape, threads)
    }
}

/// One row of a padded canonical u8 image: `codes` mapped to canonical u8 (`^ 0x80` for int8),
/// with the sum of each pixel's `c` codes in `sums`.
///
/// # Safety
/// The CPU has AVX-512 F/BW; `dst.len() == codes.len() == sums.len() * c`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn canon_row<T: crate::gemm::Code8>(
    codes: &[T],
    c: usize,
    dst: &mut [u8],
    sums: &mut [i32],
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        assert!(dst.len() == codes.len() && sums.len() * c == codes.len());
        let flip = _mm512_set1_epi8(if T::A_OFFSET != 0 { -128 } else { 0 });
        let s = codes.as_ptr() as *const u8;
        let d = dst.as_mut_ptr();
        let mut first = 0;
        if c == 8 || c == 16 || c == 32 {
            // Several pixels per vector: `vpsadbw`'s qword sums added up within each pixel's
            // 8, 16 or 32 bytes, then one permute gathers the pixels' sums, where a reduction
            // per pixel costs more than mapping its codes.
            let per = 64 / c;
            let idx = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32((c / 4) as i32),
            );
            let keep = ((1u32 << per) - 1) as __mmask16;
            let whole = sums.len() / per * per;
            while first < whole {
                let mut t = _mm512_setzero_si512();
                let v = canon_load(s.add(first * c), !0, flip, &mut t);
                _mm512_storeu_si512(d.add(first * c) as *mut __m512i, v);
                if c >= 16 {
                    t = _mm512_add_epi64(t, _mm512_shuffle_epi32::<0x4E>(t));
                }
                if c >= 32 {
                    t = _mm512_add_epi64(t, _mm512_shuffle_i64x2::<0xB1>(t, t));
                }
                let px_sums = _mm512_permutexvar_epi32(idx, t);
                _mm512_mask_storeu_epi32(sums.as_mut_ptr().add(first), keep, px_sums);
                first += per;
            }
        }
        for (px, sum) in sums.iter_mut().enumerate().skip(first) {
            let mut acc = _mm512_setzero_si512();
            let end = (px + 1) * c;
            let mut j = px * c;
            while j < end {
                let n = (end - j).min(64);
                let mask = prefix_mask(n);
                let v = canon_load(s.add(j), mask, flip, &mut acc);
                _mm512_mask_storeu_epi8(d.add(j) as *mut i8, mask, v);
                j += n;
            }
            *sum = _mm512_reduce_add_epi64(acc) as i32;
        }
    }
}

/// `conv::widen_pixels::<_, _, 3, 4>` 16 pixels a step: `vpermd` moves each four pixels' 12
/// codes into their own 128-bit lane, `vpshufb` spreads them to 4 bytes a pixel with the
/// zero-point code in the fourth, and `vpdpbusd` against bytes (1, 1, 1, 0) adds each pixel's
/// three codes to the zero point (its one extra channel). The last step is masked.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI; `codes.len() == 3 * sums.len()` and
/// `dst.len() == 4 * sums.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn widen_3_4<T: crate::gemm::Code8>(
    codes: &[T],
    zc_code: i32,
    dst: &mut [u8],
    sums: &mut [i32],
) {
    let n = sums.len();
    assert!(codes.len() == 3 * n && dst.len() == 4 * n);
    let flip = _mm512_set1_epi8(if T::A_OFFSET != 0 { -128 } else { 0 });
    let zc = _mm512_set1_epi8(zc_code as i8);
    let extra = _mm512_set1_epi32(zc_code);
    let ones = _mm512_set1_epi32(0x0001_0101);
    let dwords = _mm512_setr_epi32(0, 1, 2, 0, 3, 4, 5, 0, 6, 7, 8, 0, 9, 10, 11, 0);
    let spread = _mm512_broadcast_i32x4(_mm_setr_epi8(
        0, 1, 2, 0, 3, 4, 5, 0, 6, 7, 8, 0, 9, 10, 11, 0,
    ));
    // Every byte but each pixel's fourth comes from the codes.
    let real: __mmask64 = 0x7777_7777_7777_7777;
    let (s, d) = (codes.as_ptr() as *const i8, dst.as_mut_ptr() as *mut i8);
    let mut p = 0;
    while p < n {
        let k = (n - p).min(16);
        // SAFETY: the masks cover pixels p..p + k, inside all three slices (lengths checked).
        unsafe {
            let v = _mm512_maskz_loadu_epi8(prefix_mask(3 * k), s.add(3 * p));
            let v = _mm512_permutexvar_epi32(dwords, _mm512_xor_si512(v, flip));
            let w = _mm512_mask_shuffle_epi8(zc, real, v, spread);
            _mm512_mask_storeu_epi8(d.add(4 * p), prefix_mask(4 * k), w);
            let sum = _mm512_dpbusd_epi32(extra, w, ones);
            _mm512_mask_storeu_epi32(sums.as_mut_ptr().add(p), ((1u32 << k) - 1) as u16, sum);
        }
        p += k;
    }
}

/// The first `n` (at most 64) lanes.
#[inline]
pub(crate) fn prefix_mask(n: usize) -> __mmask64 {
    if n >= 64 {
        !0
    } else {
        (1u64 << n) - 1
    }
}

/// The codes at `src` under `mask` as canonical u8 (`^ flip`: 0x80 for int8, 0 for uint8), the
/// other lanes 0, with their sum added to `sums` (8 qword partial sums, `vpsadbw`): how every
/// AVX-512 packing and image row reads activations.
///
/// # Safety
/// The CPU has AVX-512 F/BW; the bytes under `mask` are readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn canon_load(
    src: *const u8,
    mask: __mmask64,
    flip: __m512i,
    sums: &mut __m512i,
) -> __m512i {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let v = _mm512_maskz_mov_epi8(
            mask,
            _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, src as *const i8), flip),
        );
        *sums = _mm512_add_epi64(*sums, _mm512_sad_epu8(v, _mm512_setzero_si512()));
        v
    }
}

/// `src` as canonical u8 codes in `dst` (`^ 0x80` for int8), returning their sum (wrapping):
/// one masked load, flip and store per 64 codes.
///
/// # Safety
/// The CPU has AVX-512 F/BW; `dst.len() >= src.len()`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn canon_codes<T: crate::gemm::Code8>(src: &[T], dst: &mut [u8]) -> u32 {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let len = src.len();
        assert!(dst.len() >= len);
        let (s, d) = (src.as_ptr() as *const u8, dst.as_mut_ptr());
        let flip = _mm512_set1_epi8(if T::A_OFFSET != 0 { -128 } else { 0 });
        let mut sums = _mm512_setzero_si512();
        for j in (0..len).step_by(64) {
            let mask = prefix_mask(len - j);
            let v = canon_load(s.add(j), mask, flip, &mut sums);
            _mm512_mask_storeu_epi8(d.add(j) as *mut i8, mask, v);
        }
        _mm512_reduce_add_epi64(sums) as u32
    }
}

/// One per-tensor quantized multiplier as broadcast vectors, with RoundingDivideByPOT's mask
/// and threshold made once rather than per vector.
#[derive(Clone, Copy)]
pub(crate) struct Mbqm {
    /// `m0` in every dword, so `vpmuldq` reads it from even and (shifted down) odd lanes alike.
    m0: __m512i,
    left: __m512i,
    right: __m512i,
    mask: __m512i,
    half: __m512i,
}

impl Mbqm {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) fn new(m: intq_quant::QuantizedMultiplier) -> Mbqm {
        let right = (-m.shift).clamp(0, 31);
        let mask = ((1i64 << right) - 1) as i32;
        Mbqm {
            m0: _mm512_set1_epi32(m.m0),
            left: _mm512_set1_epi32(m.shift.max(0)),
            right: _mm512_set1_epi32(right),
            mask: _mm512_set1_epi32(mask),
            half: _mm512_set1_epi32(mask >> 1),
        }
    }

    /// MultiplyByQuantizedMultiplier on 16 lanes (`m0 >= 0`, shifts in 0..=31): AVX2's
    /// `mbqm` steps, as [`requant`] takes them.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) fn apply(&self, x: __m512i) -> __m512i {
        let x = _mm512_sllv_epi32(x, self.left);
        let nudge = _mm512_set1_epi64(1 << 30);
        let even = _mm512_add_epi64(_mm512_mul_epi32(x, self.m0), nudge);
        let odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64::<32>(x), self.m0), nudge);
        let x = _mm512_mask_blend_epi32(
            0xAAAA,
            _mm512_srli_epi64::<31>(even),
            _mm512_slli_epi64::<1>(odd),
        );
        let one = _mm512_set1_epi32(1);
        let rem = _mm512_and_si512(x, self.mask);
        let neg = _mm512_cmplt_epi32_mask(x, _mm512_setzero_si512());
        let threshold = _mm512_mask_add_epi32(self.half, neg, self.half, one);
        let round = _mm512_cmpgt_epi32_mask(rem, threshold);
        let q = _mm512_srav_epi32(x, self.right);
        _mm512_mask_add_epi32(q, round, q, one)
    }
}

/// [`Mbqm`] for a multiplier below 1 (`m0 >= 0`, shift `<= 0`) on `|x| < 2^29`: no left shift,
/// and RoundingDivideByPOT as `(x + 2^(e-1) - (x < 0)) >> e` (`(x >> e) + (rem > half + (x <
/// 0))` rewritten; `x` stays below 2^29 + 2^30, so the sum cannot wrap).
struct MbqmLean {
    m0: __m512i,
    right: __m512i,
    rhalf: __m512i,
    sign: __m512i,
}

impl MbqmLean {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn new(m: intq_quant::QuantizedMultiplier) -> MbqmLean {
        let right = (-m.shift).clamp(0, 31);
        MbqmLean {
            m0: _mm512_set1_epi32(m.m0),
            right: _mm512_set1_epi32(right),
            rhalf: _mm512_set1_epi32(((1i64 << right) >> 1) as i32),
            // With no shift the result is `x`: no `- (x < 0)` term.
            sign: _mm512_set1_epi32(if right > 0 { -1 } else { 0 }),
        }
    }

    /// [`Mbqm::apply`] under [`MbqmLean`]'s bounds.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn apply(&self, x: __m512i) -> __m512i {
        let nudge = _mm512_set1_epi64(1 << 30);
        let even = _mm512_add_epi64(_mm512_mul_epi32(x, self.m0), nudge);
        // `vpmuldq` reads each quadword's low dword: the odd dwords moved there by a shuffle
        // (port 5) rather than a shift (port 0, which the shifts here need).
        let odd = _mm512_add_epi64(
            _mm512_mul_epi32(_mm512_shuffle_epi32::<0xF5>(x), self.m0),
            nudge,
        );
        let x = _mm512_mask_blend_epi32(
            0xAAAA,
            _mm512_srli_epi64::<31>(even),
            _mm512_slli_epi64::<1>(odd),
        );
        let neg = _mm512_and_si512(_mm512_srai_epi32::<31>(x), self.sign);
        let t = _mm512_add_epi32(_mm512_add_epi32(x, self.rhalf), neg);
        _mm512_srav_epi32(t, self.right)
    }
}

/// TFLite's quantized Add on equal shapes, 16 codes at a time: AVX2's `add_same_shape` (same
/// contract, same steps) on 512-bit vectors; the tail goes through `AddParams::apply`.
///
/// # Safety
/// The CPU has AVX-512 F/BW; the three slices have the same length; `lo`/`hi` and the
/// multipliers meet AVX2's `add_same_shape` preconditions.
#[target_feature(enable = "avx512f,avx512bw")]
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
            let v = _mm_loadu_si128(ptr as *const __m128i);
            if T::MIN == 0 {
                _mm512_cvtepu8_epi32(v)
            } else {
                _mm512_cvtepi8_epi32(v)
            }
        };
        let (zl, zr) = (
            _mm512_set1_epi32(p.lhs_zero_point),
            _mm512_set1_epi32(p.rhs_zero_point),
        );
        let shift = _mm512_set1_epi32(p.left_shift);
        let (ml, mr, mo) = (
            Mbqm::new(p.lhs_multiplier),
            Mbqm::new(p.rhs_multiplier),
            Mbqm::new(p.output_multiplier),
        );
        let (vlo, vhi, vz) = (
            _mm512_set1_epi32(lo),
            _mm512_set1_epi32(hi),
            _mm512_set1_epi32(p.output_zero_point),
        );
        let n = out.len();
        let whole = n / 16 * 16;
        let ms = [p.lhs_multiplier, p.rhs_multiplier, p.output_multiplier];
        if (0..=20).contains(&p.left_shift) && ms.iter().all(|m| m.shift <= 0 && m.m0 >= 0) {
            // The usual parameters (TFLite's: left shift 20, every multiplier below 1): the
            // divides as one rounded shift, `(x + 2^(e-1) - (x < 0)) >> e`, which equals
            // RoundingDivideByPOT; every sum stays below 2^31 (|x| < 2^29 after the multiply).
            let (ml, mr, mo) = (
                MbqmLean::new(p.lhs_multiplier),
                MbqmLean::new(p.rhs_multiplier),
                MbqmLean::new(p.output_multiplier),
            );
            let sh = _mm_cvtsi32_si128(p.left_shift);
            // A multiplier of exactly 0.5 * 2^-e (the input of the larger scale: m = 0.5) on
            // `(code - z) << L` with `1 + e <= L`: `(x * 2^30 + 2^30) >> 31` of an even `x` is
            // `x / 2`, and dividing `x / 2` by 2^e leaves no remainder, so the whole step is an
            // exact arithmetic shift by `1 + e`.
            let exact = |m: intq_quant::QuantizedMultiplier| {
                (m.m0 == 1 << 30 && 1 - m.shift <= p.left_shift)
                    .then(|| _mm_cvtsi32_si128(1 - m.shift))
            };
            let (el, er) = (exact(p.lhs_multiplier), exact(p.rhs_multiplier));
            let z128 = _mm_setzero_si128();
            let (cl, cr) = (el.unwrap_or(z128), er.unwrap_or(z128));
            macro_rules! lean_loop {
                ($xl:expr, $xr:expr) => {
                    for i in (0..whole).step_by(16) {
                        let a =
                            _mm512_sll_epi32(_mm512_sub_epi32(widen(lhs.as_ptr().add(i)), zl), sh);
                        let b =
                            _mm512_sll_epi32(_mm512_sub_epi32(widen(rhs.as_ptr().add(i)), zr), sh);
                        let a = if $xl {
                            _mm512_sra_epi32(a, cl)
                        } else {
                            ml.apply(a)
                        };
                        let b = if $xr {
                            _mm512_sra_epi32(b, cr)
                        } else {
                            mr.apply(b)
                        };
                        let o = mo.apply(_mm512_add_epi32(a, b));
                        let o = _mm512_min_epi32(_mm512_max_epi32(o, vlo), vhi);
                        _mm_storeu_si128(
                            out.as_mut_ptr().add(i) as *mut __m128i,
                            _mm512_cvtepi32_epi8(_mm512_add_epi32(o, vz)),
                        );
                    }
                };
            }
            match (el.is_some(), er.is_some()) {
                (true, true) => lean_loop!(true, true),
                (true, false) => lean_loop!(true, false),
                (false, true) => lean_loop!(false, true),
                (false, false) => lean_loop!(false, false),
            }
            for i in whole..n {
                out[i] = T::from_i32_saturating(p.apply(lhs[i].to_i32(), rhs[i].to_i32()));
            }
            return;
        }
        for i in (0..whole).step_by(16) {
            let a = _mm512_sllv_epi32(_mm512_sub_epi32(widen(lhs.as_ptr().add(i)), zl), shift);
            let b = _mm512_sllv_epi32(_mm512_sub_epi32(widen(rhs.as_ptr().add(i)), zr), shift);
            let o = mo.apply(_mm512_add_epi32(ml.apply(a), mr.apply(b)));
            let o = _mm512_min_epi32(_mm512_max_epi32(o, vlo), vhi);
            // The clamped codes fit a byte, so truncating them is the cast.
            _mm_storeu_si128(
                out.as_mut_ptr().add(i) as *mut __m128i,
                _mm512_cvtepi32_epi8(_mm512_add_epi32(o, vz)),
            );
        }
        for i in whole..n {
            out[i] = T::from_i32_saturating(p.apply(lhs[i].to_i32(), rhs[i].to_i32()));
        }
    }
}

/// Depthwise taps in the layout [`dw_run`] reads (this tier's table's `dw_layout`), made from
/// the 16-channel layout `pairs16` ([`crate::gemm::depthwise::dw_pairs`]): per block of 32 channels and pair of taps, 64
/// int16: the `vpunpcklwd` halves of the two 16-channel blocks, then their `vpunpckhwd` halves.
/// A 512-bit unpack works lane by lane, so its low half of 32 channels is channels 0-3, 8-11,
/// 16-19, 24-27: the first block's low half followed by the second's. Missing blocks are 0.
pub(crate) fn dw_layout(pairs16: &[i16], ntaps: usize, oc: usize) -> Vec<i16> {
    let (blocks16, npairs) = (oc.div_ceil(16), ntaps.div_ceil(2));
    let blocks32 = oc.div_ceil(32);
    let mut out = vec![0i16; blocks32 * npairs * 64];
    for cb in 0..blocks32 {
        for p in 0..npairs {
            for half in 0..2 {
                for sub in 0..2 {
                    let block = 2 * cb + sub;
                    if block < blocks16 {
                        let from = (block * npairs + p) * 32 + half * 16;
                        let to = (cb * npairs + p) * 64 + half * 32 + sub * 16;
                        out[to..to + 16].copy_from_slice(&pairs16[from..from + 16]);
                    }
                }
            }
        }
    }
    out
}

/// A run of `npix` output pixels of a depthwise convolution with depth multiplier 1: AVX2's
/// `dw_run` (same contract, same exactness argument: codes widened as they are, `Z_in` folded
/// into [`crate::gemm::depthwise::DwConsts::bias`], a padded tap reading `Z_in`) on 512-bit vectors, 32
/// channels per block, finished 16 channels at a time.
///
/// # Safety
/// AVX-512 F/BW are available; `offsets` holds `dw.ntaps` entries, each `usize::MAX` (padded
/// for the whole run) or such that every `offsets[t] + i * dw.step` (`i < npix`) starts a pixel
/// of `dw.oc` codes inside `dw.input`; `dw.pairs` is [`dw_layout`] of the plan's taps; `dw.k`
/// is the plan's `DwConsts` and `dw.epi` its vector-ready epilogue, laid out 16 wide;
/// `out.len() == npix * dw.oc`.
#[target_feature(enable = "avx512f,avx512bw")]
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
#[target_feature(enable = "avx512f,avx512bw")]
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
        let zin = _mm512_set1_epi16(k.zin);
        let zero = _mm512_setzero_si512();
        let widen = |v: __m256i| {
            if T::A_OFFSET != 0 {
                _mm512_cvtepi8_epi16(v)
            } else {
                _mm512_cvtepu8_epi16(v)
            }
        };
        // 128-bit lanes (as qword pairs) of `lo` and `hi` back in channel order.
        let first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
        let second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
        let dst = out.as_mut_ptr();
        for (cb, c0) in (0..oc).step_by(32).enumerate() {
            let w = pairs.as_ptr().add(cb * npairs * 64);
            let width = (oc - c0).min(32);
            let full = width == 32;
            // The last, partial block loads only its own channels (a masked load does not touch
            // the bytes it skips); lanes past `oc` are never stored.
            let load_mask = prefix_mask(width);
            for i in 0..npix {
                let base = i * step + c0;
                let tap = |t: usize| -> __m512i {
                    if t >= ntaps {
                        // The missing partner of an odd last tap: its weights are 0.
                        return zero;
                    }
                    let off = *offsets.get_unchecked(t);
                    if off == usize::MAX {
                        zin
                    } else if full {
                        widen(_mm256_loadu_si256(src.add(off + base) as *const __m256i))
                    } else {
                        let v =
                            _mm512_maskz_loadu_epi8(load_mask, src.add(off + base) as *const i8);
                        widen(_mm512_castsi512_si256(v))
                    }
                };
                let mut lo = zero;
                let mut hi = zero;
                for p in 0..npairs {
                    let (a, b) = (tap(2 * p), tap(2 * p + 1));
                    let wp = w.add(p * 64);
                    lo = _mm512_add_epi32(
                        lo,
                        _mm512_madd_epi16(
                            _mm512_unpacklo_epi16(a, b),
                            _mm512_loadu_si512(wp as *const __m512i),
                        ),
                    );
                    hi = _mm512_add_epi32(
                        hi,
                        _mm512_madd_epi16(
                            _mm512_unpackhi_epi16(a, b),
                            _mm512_loadu_si512(wp.add(32) as *const __m512i),
                        ),
                    );
                }
                for (h, idx) in [first, second].into_iter().enumerate() {
                    let c = c0 + 16 * h;
                    if c >= oc {
                        break;
                    }
                    // The folded bias in place of `colconst`, then the epilogue's own steps.
                    let bias = _mm512_loadu_si512(k.bias.as_ptr().add(c) as *const __m512i);
                    let v = _mm512_permutex2var_epi64(lo, idx, hi);
                    let q = scale_clamp(_mm512_add_epi32(v, bias), epi, c);
                    let count = (oc - c).min(16);
                    let mask = prefix_mask(count) as __mmask16;
                    _mm512_mask_cvtepi32_storeu_epi8(dst.add(i * oc + c) as *mut _, mask, q);
                }
            }
        }
    }
}

/// The measured AVX-512 VNNI peak of one core ([`vnni_peak`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VnniPeak {
    /// Int8 operations (two per multiply-add) per second, in billions, of 512-bit `vpdpbusd`
    /// on registers alone.
    pub gops: f64,
}

/// Independent accumulators of [`dp_loop`]: more than `vpdpbusd`'s latency times its
/// throughput, so no chain waits on itself.
const DP_CHAINS: u64 = 16;
/// Operations of one 512-bit `vpdpbusd`: 16 lanes of four products, two ops per product.
const DP_OPS: f64 = 16.0 * 4.0 * 2.0;

/// The AVX-512 VNNI peak measured on the calling thread, or `None` without the tier: `iters`
/// rounds of [`DP_CHAINS`] independent `vpdpbusd` on registers (no memory traffic), best of
/// five timings. The ceiling this tier's kernels are compared with, as
/// [`crate::gemm::amx_peak`] is AMX's.
pub fn vnni_peak(iters: u64) -> Option<VnniPeak> {
    if !crate::isa::Isa::Avx512Vnni.is_available() {
        return None;
    }
    let iters = iters.max(1);
    let t = (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            // SAFETY: the CPU has AVX-512 VNNI (checked above); the loop touches registers only.
            unsafe { dp_loop(iters) };
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min);
    Some(VnniPeak {
        gops: (iters * DP_CHAINS) as f64 * DP_OPS / t / 1e9,
    })
}

/// `iters` rounds of [`DP_CHAINS`] independent `vpdpbusd` on `zmm0..zmm15`, with nonzero
/// operands (all-zero ones may draw less power than real codes).
///
/// # Safety
/// The CPU has AVX-512 VNNI.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dp_loop(iters: u64) {
    // SAFETY: the caller meets this function's contract; only vector registers and `n` change.
    unsafe {
        std::arch::asm!(
            "vpternlogd zmm16, zmm16, zmm16, 0xff",
            "vpabsb zmm17, zmm16",
            ".irp r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
            "vpxord zmm\\r, zmm\\r, zmm\\r",
            ".endr",
            "2:",
            ".irp r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
            "vpdpbusd zmm\\r, zmm16, zmm17",
            ".endr",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
            out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
            out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
            out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
            out("zmm16") _, out("zmm17") _,
            options(nostack, nomem),
        );
    }
}

#[cfg(test)]
mod tests {
    /// The 512-bit depthwise layout puts each channel's tap pair where a lane-by-lane
    /// `vpunpck{l,h}wd` of 32 channels puts its activations (checked on any CPU: it is plain
    /// data; the kernel itself is checked against the reference in `fast_tiers`).
    #[test]
    fn dw_pairs_follow_the_512_bit_unpack_order() {
        for (ntaps, oc) in [(9, 1), (9, 17), (9, 32), (4, 33), (25, 70), (1, 96)] {
            let taps: Vec<i32> = (0..ntaps * oc)
                .map(|i| (i as i32 * 37) % 601 - 300)
                .collect();
            let p16 = crate::gemm::depthwise::dw_pairs(&taps, ntaps, oc).unwrap();
            let p32 = super::dw_layout(&p16, ntaps, oc);
            let npairs = ntaps.div_ceil(2);
            assert_eq!(p32.len(), oc.div_ceil(32) * npairs * 64);
            for c in 0..oc {
                let (cb, ch) = (c / 32, c % 32);
                // 128-bit lane `ch / 8`; its low four channels go to the low unpack.
                let (lane, j) = (ch / 8, ch % 8);
                let (half, idx) = if j < 4 {
                    (0, lane * 4 + j)
                } else {
                    (1, lane * 4 + j - 4)
                };
                for t in 0..ntaps {
                    let (p, h) = (t / 2, t % 2);
                    let at = (cb * npairs + p) * 64 + half * 32 + idx * 2 + h;
                    assert_eq!(p32[at] as i32, taps[t * oc + c], "tap {t} channel {c}");
                }
            }
        }
    }
}
