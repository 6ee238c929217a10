//! The aarch64 NEON tier with the dot-product extension (ARMv8.2 `dotprod`): an 8 x 8 int32
//! tile accumulated with `sdot` (s8 x s8, four products per lane), and the output stage with
//! `sqrdmulh` and `srshl`, which are SaturatingRoundingDoublingHighMul and (after a sign fix-up)
//! RoundingDivideByPOT themselves.
//!
//! ## Signed activations
//! `sdot` multiplies signed by signed (`udot` unsigned by unsigned; the mixed `usdot` needs
//! the later `i8mm`), so packed activations are the canonical u8 codes flipped to s8,
//! `a' - 128` ([`Kernel::A_BIAS`]); weights are the canonical s8 `w'`. The tile then sums
//! `Σ(a' - 128)w' = Σa'w' - 128 Σw'`, and the second term, a per-column constant, is folded into
//! the epilogue's column constant at load time, so the epilogue sees exactly `Σa'w'`. Four
//! products of at most 128 * 128 cannot overflow a lane before it is added (with wrap-around)
//! to the int32 accumulator, so the sum equals the reference's modulo 2^32, as on every tier.
//!
//! `sdot` has no stable intrinsic in Rust 1.95 (`stdarch_neon_dotprod` is unstable), so it is
//! written as inline assembly inside functions compiled with `dotprod` enabled.

use std::arch::aarch64::*;

use crate::gemm::{Code8, Epilogue, ImplicitRows, Kernel, Tile, TileOut};

pub(crate) struct NeonDot;

pub(crate) const MR: usize = 8;
pub(crate) const NR: usize = 8;
pub(crate) const KG: usize = 4;

/// `acc += b · a` lane by lane, four s8 products per int32 lane (`sdot` vector form).
macro_rules! sdot {
    ($acc:expr, $b:expr, $a:expr) => {{
        let mut acc: int32x4_t = $acc;
        let (b, a): (int8x16_t, int8x16_t) = ($b, $a);
        std::arch::asm!(
            "sdot {acc:v}.4s, {b:v}.16b, {a:v}.16b",
            acc = inout(vreg) acc, b = in(vreg) b, a = in(vreg) a,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }};
}

/// `acc += b · a[lane]`: every lane of `b` against the four s8 of group `lane` of `a`
/// (`sdot` by-element form: one A register serves four rows).
macro_rules! sdot_lane {
    ($acc:expr, $b:expr, $a:expr, $lane:literal) => {{
        let mut acc: int32x4_t = $acc;
        let (b, a): (int8x16_t, int8x16_t) = ($b, $a);
        std::arch::asm!(
            concat!("sdot {acc:v}.4s, {b:v}.16b, {a:v}.4b[", $lane, "]"),
            acc = inout(vreg) acc, b = in(vreg) b, a = in(vreg) a,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }};
}

/// Whether this CPU (and OS) has the tier: aarch64 always has NEON, `dotprod` is ARMv8.2's.
pub(crate) fn available() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

impl Kernel for NeonDot {
    const MR: usize = MR;
    const NR: usize = NR;
    const KG: usize = KG;
    const A_BIAS: i32 = -128;
    type A = i8;
    type B = i8;
    fn a_elem(x: u8) -> i8 {
        (x ^ 0x80) as i8
    }
    fn b_elem(w: i8) -> i8 {
        w
    }
    /// # Safety
    /// As [`Kernel::pack_a_seg`].
    unsafe fn pack_a_seg<T: Code8>(src: &[T], panel: &mut [i8], i: usize, k0: usize) -> u32 {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { pack_a_seg(src, panel, i, k0) }
    }
    /// # Safety
    /// As [`Kernel::tile`].
    unsafe fn tile(t: &Tile<i8, i8>, o: &TileOut) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { tile(t, o) }
    }
}

/// [`Kernel::tile`] on `sdot`: each group's A codes are two registers (rows 0-3, rows 4-7),
/// and each row's four codes, taken by element, multiply both halves of the group's 8 columns.
///
/// # Safety
/// As [`Kernel::tile`], with `dotprod`.
#[target_feature(enable = "neon,dotprod")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(t: &Tile<i8, i8>, o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let (c, first, last, groups, a, b) = (t.c, t.first, t.last, t.groups, t.a, t.b);
        let mut acc = [[vdupq_n_s32(0); 2]; MR];
        if !first {
            for (i, acc_i) in acc.iter_mut().enumerate() {
                for (h, v) in acc_i.iter_mut().enumerate() {
                    *v = vld1q_s32(c.add(i * NR + 4 * h));
                }
            }
        }
        let (mut ap, mut bp) = (a, b);
        for _ in 0..groups {
            // A group: rows 0-3 then 4-7 (four codes each), columns 0-3 then 4-7.
            let a0 = vld1q_s8(ap);
            let a1 = vld1q_s8(ap.add(16));
            let b0 = vld1q_s8(bp);
            let b1 = vld1q_s8(bp.add(16));
            macro_rules! row {
                ($i:literal, $a:ident, $lane:literal) => {
                    acc[$i][0] = sdot_lane!(acc[$i][0], b0, $a, $lane);
                    acc[$i][1] = sdot_lane!(acc[$i][1], b1, $a, $lane);
                };
            }
            row!(0, a0, 0);
            row!(1, a0, 1);
            row!(2, a0, 2);
            row!(3, a0, 3);
            row!(4, a1, 0);
            row!(5, a1, 1);
            row!(6, a1, 2);
            row!(7, a1, 3);
            ap = ap.add(MR * KG);
            bp = bp.add(NR * KG);
        }
        if !last {
            for (i, acc_i) in acc.iter().enumerate() {
                for (h, &v) in acc_i.iter().enumerate() {
                    vst1q_s32(c.add(i * NR + 4 * h), v);
                }
            }
            return;
        }
        finish_tile(&acc, o);
    }
}

/// Codes `k0 ..` of row `i` of a packed A panel (groups of 4 codes of each of the 8 rows, as
/// s8 `a' - 128`): 16 codes at a time once `k0 + j` reaches a group boundary, summed as
/// canonical u8 with pairwise widening adds and stored as four groups 32 bytes apart. Returns
/// their `Σa'` (wrapping), as [`Kernel::pack_a_seg`].
///
/// # Safety
/// `panel` holds whole groups covering `k0 + src.len()` for row `i < MR`, and starts on a
/// 4-byte boundary (the GEMM's scratch is 64-byte aligned).
#[target_feature(enable = "neon")]
unsafe fn pack_a_seg<T: Code8>(src: &[T], panel: &mut [i8], i: usize, k0: usize) -> u32 {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let len = src.len();
        assert!(panel.len() >= (k0 + len).div_ceil(KG) * KG * MR && i < MR);
        let at = |kk: usize| ((kk / KG) * MR + i) * KG + kk % KG;
        let s = src.as_ptr() as *const u8;
        let d = panel.as_mut_ptr();
        // The canonical code is the byte ^ `to_canon` (0x80 for int8); stored, it is flipped again.
        let to_canon: u8 = if T::A_OFFSET != 0 { 0x80 } else { 0 };
        let mut sum = 0u32;
        let scalar = |j: usize, sum: &mut u32| {
            let v = *s.add(j) ^ to_canon;
            *sum = sum.wrapping_add(v as u32);
            *d.add(at(k0 + j)) = (v ^ 0x80) as i8;
        };
        let head = ((KG - k0 % KG) % KG).min(len);
        for j in 0..head {
            scalar(j, &mut sum);
        }
        let (canon, flip) = (vdupq_n_u8(to_canon), vdupq_n_u8(0x80));
        let mut sums = vdupq_n_u32(0);
        let mut j = head;
        while j + 16 <= len {
            let v = veorq_u8(vld1q_u8(s.add(j)), canon);
            sums = vpadalq_u16(sums, vpaddlq_u8(v));
            let packed = vreinterpretq_u32_u8(veorq_u8(v, flip));
            // `k0 + j` is a group boundary: four groups, MR * KG = 32 bytes (8 words) apart.
            let p = d.add(at(k0 + j)) as *mut u32;
            vst1q_lane_u32::<0>(p, packed);
            vst1q_lane_u32::<1>(p.add(8), packed);
            vst1q_lane_u32::<2>(p.add(16), packed);
            vst1q_lane_u32::<3>(p.add(24), packed);
            j += 16;
        }
        sum = sum.wrapping_add(vaddvq_u32(sums));
        for j in j..len {
            scalar(j, &mut sum);
        }
        sum
    }
}

/// The per-column constants of four columns, loaded once per tile.
#[derive(Clone, Copy)]
struct Cols4 {
    colconst: int32x4_t,
    zw: int32x4_t,
    lshift: int32x4_t,
    m0: int32x4_t,
    /// `-rshift`: `srshl` shifts right by a negative count, and its sign bit marks the lanes
    /// that divide at all (RoundingDivideByPOT's fix-up below).
    neg_rshift: int32x4_t,
}

impl Cols4 {
    /// # Safety
    /// The CPU has NEON; `epi` covers column `n + 3`.
    #[inline(always)]
    unsafe fn load(epi: &Epilogue, n: usize) -> Cols4 {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe {
            let ld = |v: &Vec<i32>| vld1q_s32(v.as_ptr().add(n));
            Cols4 {
                colconst: ld(&epi.colconst),
                zw: ld(&epi.zw),
                lshift: ld(&epi.lshift),
                m0: ld(&epi.m0),
                neg_rshift: vnegq_s32(ld(&epi.rshift)),
            }
        }
    }
}

/// The output stage (docs/spec.md §4.4) on four columns, as gemmlowp's and TFLite's NEON paths
/// compute it: the wrapping left shift (`shl` by lane counts), `sqrdmulh` (which is SRDHM,
/// saturation of `MIN x MIN` included), then RoundingDivideByPOT as a rounding shift right
/// (`srshl`, ties up) of `x - 1` for negative `x` in the lanes that divide (ties away from zero),
/// then the clamp (moved before the zero point, `lo`/`hi`) and the zero point.
///
/// # Safety
/// The CPU has NEON; `epi` is vector-ready and `k` holds its columns ([`Cols4::load`]).
#[inline(always)]
unsafe fn requant4(acc: int32x4_t, rowsum: int32x4_t, k: &Cols4, epi: &Epilogue) -> int32x4_t {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let mut x = vaddq_s32(acc, k.colconst);
        if !epi.zw_zero {
            x = vmlsq_s32(x, k.zw, rowsum);
        }
        if !epi.lshift_zero {
            x = vshlq_s32(x, k.lshift);
        }
        x = high_mul_divide(x, k.m0, k.neg_rshift);
        x = vminq_s32(vmaxq_s32(x, vdupq_n_s32(epi.lo)), vdupq_n_s32(epi.hi));
        vaddq_s32(x, vdupq_n_s32(epi.zout))
    }
}

/// RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, m0), -neg_rshift) lane by lane:
/// MultiplyByQuantizedMultiplier past its left shift.
///
/// # Safety
/// The CPU has NEON.
#[inline(always)]
unsafe fn high_mul_divide(x: int32x4_t, m0: int32x4_t, neg_rshift: int32x4_t) -> int32x4_t {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let x = vqrdmulhq_s32(x, m0);
        // -1 in lanes with x < 0 and a shift of at least 1; `sqadd` keeps i32::MIN there, whose
        // quotient is exact, so the lost 1 cannot change it.
        let fixup = vshrq_n_s32::<31>(vandq_s32(x, neg_rshift));
        vrshlq_s32(vqaddq_s32(x, fixup), neg_rshift)
    }
}

/// A per-tensor multiplier as lane vectors: left shift, `m0`, `-right shift`.
///
/// # Safety
/// The CPU has NEON.
#[inline(always)]
unsafe fn multiplier(m: intq_quant::QuantizedMultiplier) -> [int32x4_t; 3] {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        [
            vdupq_n_s32(m.shift.max(0)),
            vdupq_n_s32(m.m0),
            vdupq_n_s32(-((-m.shift).max(0))),
        ]
    }
}

/// MultiplyByQuantizedMultiplier (docs/spec.md §4.3) on four lanes, by a [`multiplier`].
///
/// # Safety
/// The CPU has NEON.
#[inline(always)]
unsafe fn mbqm4(x: int32x4_t, m: &[int32x4_t; 3]) -> int32x4_t {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe { high_mul_divide(vshlq_s32(x, m[0]), m[1], m[2]) }
}

/// TFLite's quantized Add on equal shapes, 8 codes at a time (the tail through
/// `AddParams::apply`). `lo`/`hi` are the clamp moved before the output zero point's add (the
/// caller checked they fit int32 and that every multiplier has `m0 >= 0`, shift in -31..=31,
/// and the left shift in 0..=31).
///
/// # Safety
/// The three slices have the same length.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn add_same_shape<T: Code8>(
    p: &crate::reference::AddParams,
    lo: i32,
    hi: i32,
    lhs: &[T],
    rhs: &[T],
    out: &mut [T],
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        assert!(lhs.len() == out.len() && rhs.len() == out.len());
        // Eight codes widened to two vectors of four int32.
        let widen = |ptr: *const T| -> [int32x4_t; 2] {
            let v = vld1_u8(ptr as *const u8);
            let h = if T::MIN == 0 {
                vreinterpretq_s16_u16(vmovl_u8(v))
            } else {
                vmovl_s8(vreinterpret_s8_u8(v))
            };
            [vmovl_s16(vget_low_s16(h)), vmovl_s16(vget_high_s16(h))]
        };
        let (zl, zr) = (vdupq_n_s32(p.lhs_zero_point), vdupq_n_s32(p.rhs_zero_point));
        let shift = vdupq_n_s32(p.left_shift);
        let (ml, mr, mo) = (
            multiplier(p.lhs_multiplier),
            multiplier(p.rhs_multiplier),
            multiplier(p.output_multiplier),
        );
        let (vlo, vhi, vz) = (
            vdupq_n_s32(lo),
            vdupq_n_s32(hi),
            vdupq_n_s32(p.output_zero_point),
        );
        let n = out.len();
        let whole = n / 8 * 8;
        for i in (0..whole).step_by(8) {
            let (a, b) = (widen(lhs.as_ptr().add(i)), widen(rhs.as_ptr().add(i)));
            let q: [int32x4_t; 2] = std::array::from_fn(|h| {
                let a = vshlq_s32(vsubq_s32(a[h], zl), shift);
                let b = vshlq_s32(vsubq_s32(b[h], zr), shift);
                let sum = vaddq_s32(mbqm4(a, &ml), mbqm4(b, &mr));
                let o = vminq_s32(vmaxq_s32(mbqm4(sum, &mo), vlo), vhi);
                vaddq_s32(o, vz)
            });
            vst1_s8(out.as_mut_ptr().add(i) as *mut i8, narrow8(q[0], q[1]));
        }
        for i in whole..n {
            out[i] = T::from_i32_saturating(p.apply(lhs[i].to_i32(), rhs[i].to_i32()));
        }
    }
}

/// Eight in-range codes from two vectors of four (truncating: the clamp put them in range).
///
/// # Safety
/// The CPU has NEON.
#[inline(always)]
unsafe fn narrow8(q0: int32x4_t, q1: int32x4_t) -> int8x8_t {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe { vmovn_s16(vcombine_s16(vmovn_s32(q0), vmovn_s32(q1))) }
}

/// Stores the first `n` (at most 8) codes of `v` at `out`.
///
/// # Safety
/// The CPU has NEON; `out` is valid for `n` (at most 8) byte stores.
#[inline(always)]
unsafe fn store_prefix(out: *mut u8, v: int8x8_t, n: usize) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        if n >= 8 {
            vst1_s8(out as *mut i8, v);
        } else {
            let mut tmp = [0i8; 8];
            vst1_s8(tmp.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(tmp.as_ptr() as *const u8, out, n);
        }
    }
}

/// The output stage on a tile's accumulators, stored as `rows x cols` codes at `out`.
///
/// # Safety
/// The CPU has NEON; `o` meets [`TileOut`]'s contract for this tier's tile.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_tile(acc: &[[int32x4_t; 2]; MR], o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let (rowsum, epi, n0, out, ldc, rows, cols) =
            (o.rowsum, o.epi, o.n0, o.out, o.ldc, o.rows, o.cols);
        if !epi.vector_ok {
            let mut raw = [0i32; MR * NR];
            for (i, acc_i) in acc.iter().enumerate() {
                for (h, &v) in acc_i.iter().enumerate() {
                    vst1q_s32(raw.as_mut_ptr().add(i * NR + 4 * h), v);
                }
            }
            epi.finish_scalar(&raw, NR, o);
            return;
        }
        let k = [Cols4::load(epi, n0), Cols4::load(epi, n0 + 4)];
        for (i, acc_i) in acc.iter().enumerate().take(rows) {
            let rs = vdupq_n_s32(*rowsum.add(i));
            let q0 = requant4(acc_i[0], rs, &k[0], epi);
            let q1 = requant4(acc_i[1], rs, &k[1], epi);
            store_prefix(out.add(i * ldc), narrow8(q0, q1), cols);
        }
    }
}

/// The output stage on one row of complete accumulators, with no row-sum term (the depthwise
/// kernel's finish).
///
/// # Safety
/// The CPU has NEON (every aarch64 CPU); `epi`'s columns cover `acc.len()` rounded up to 8;
/// `out.len() == acc.len()`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn finish_row(epi: &Epilogue, acc: &[i32], out: &mut [u8]) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        assert_eq!(acc.len(), out.len());
        if !epi.vector_ok {
            for (n, (o, &a)) in out.iter_mut().zip(acc).enumerate() {
                *o = epi.scalar(a, 0, n);
            }
            return;
        }
        let zero = vdupq_n_s32(0);
        for n in (0..acc.len()).step_by(8) {
            let count = (acc.len() - n).min(8);
            // A short last block is copied out so the loads stay inside `acc`.
            let mut tail = [0i32; 8];
            let src = if count == 8 {
                acc.as_ptr().add(n)
            } else {
                tail[..count].copy_from_slice(&acc[n..n + count]);
                tail.as_ptr()
            };
            let q0 = requant4(vld1q_s32(src), zero, &Cols4::load(epi, n), epi);
            let q1 = requant4(vld1q_s32(src.add(4)), zero, &Cols4::load(epi, n + 4), epi);
            store_prefix(out.as_mut_ptr().add(n), narrow8(q0, q1), count);
        }
    }
}

impl crate::gemm::ImplicitKernel for NeonDot {
    type E = i8;
    type B = i8;
    const MR: usize = MR;
    const NR: usize = NR;
    const KG: usize = KG;
    /// # Safety
    /// As [`crate::gemm::ImplicitKernel::canon_row`].
    unsafe fn canon_row<T: Code8>(codes: &[T], c: usize, dst: &mut [i8], sums: &mut [i32]) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { canon_row(codes, c, dst, sums) }
    }
    /// # Safety
    /// As [`crate::gemm::ImplicitKernel::tile_implicit`].
    unsafe fn tile_implicit(rows_a: &ImplicitRows<i8>, b: *const i8, o: &TileOut) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { tile_implicit(rows_a, b, o) }
    }
}

/// An implicit-GEMM tile (see [`ImplicitRows`]): [`tile`]'s products in the same order, with
/// each row's four codes read from the padded image (s8, `a' - 128`) and broadcast to every
/// lane in place of a packed panel's by-element operand.
///
/// # Safety
/// As [`crate::gemm::ImplicitKernel::tile_implicit`], with `dotprod`.
#[target_feature(enable = "neon,dotprod")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_implicit(rows_a: &ImplicitRows<i8>, b: *const i8, o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let mut acc = [[vdupq_n_s32(0); 2]; MR];
        let base = &rows_a.base[..MR];
        let mut bp = b;
        for fy in 0..rows_a.kh {
            let off = fy * rows_a.row_stride;
            let a: [*const i8; MR] = std::array::from_fn(|i| base[i].add(off));
            for g in 0..rows_a.run_groups {
                let b0 = vld1q_s8(bp);
                let b1 = vld1q_s8(bp.add(16));
                bp = bp.add(NR * KG);
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let word = (a[i].add(g * KG) as *const i32).read_unaligned();
                    let av = vreinterpretq_s8_s32(vdupq_n_s32(word));
                    acc_i[0] = sdot!(acc_i[0], b0, av);
                    acc_i[1] = sdot!(acc_i[1], b1, av);
                }
            }
        }
        finish_tile(&acc, o);
    }
}

/// One row of a padded image of s8 codes `a' - 128` (the canonical u8 flipped; for int8 input
/// that is the code itself), with the sum of each pixel's `c` canonical codes in `sums`.
///
/// # Safety
/// `dst.len() == codes.len() == sums.len() * c`.
#[target_feature(enable = "neon")]
unsafe fn canon_row<T: Code8>(codes: &[T], c: usize, dst: &mut [i8], sums: &mut [i32]) {
    assert!(dst.len() == codes.len() && sums.len() * c == codes.len());
    for ((px, d), sum) in codes
        .chunks_exact(c)
        .zip(dst.chunks_exact_mut(c))
        .zip(sums.iter_mut())
    {
        let mut s = 0u32;
        for (&x, o) in px.iter().zip(d.iter_mut()) {
            let v = x.canon_a();
            s = s.wrapping_add(v as u32);
            *o = (v ^ 0x80) as i8;
        }
        *sum = s as i32;
    }
}
