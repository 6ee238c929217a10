//! Packed int8 GEMM with the zero-point decomposition (paper eq. 7, docs/spec.md §4.13) and the
//! fused output stage, for every ISA tier.
//!
//! `C[m][n] = stage(Σ_k (A[m][k] - Z_a)(B[n][k] - Z_b[n]), n)` for activations `A` (M x K,
//! row-major) and weights `B` (N x K, row-major: an OHWI filter or FC weights as stored).
//!
//! ## Canonical operands
//! Every tier multiplies unsigned activations by signed weights (what `vpdpbusd` and `tdpbusd`
//! take), so codes are mapped once: int8 activations become `a' = a + 128` (u8), uint8 weights
//! become `w' = w - 128` (i8); the other operand is unchanged. The zero points move with them
//! (`Z_a' = Z_a + 128`, `Z_b' = Z_b - 128`), so `(a - Z_a) = (a' - Z_a')` term by term.
//! NEON's `sdot` takes s8 x s8, so that tier packs `a' - 128` and its column constants absorb
//! the difference (`Kernel::A_BIAS`).
//!
//! ## Decomposition
//! `Σ(a' - Z_a')(w' - Z_b') = Σ a'w' - Z_b' Σa' - Z_a' Σw' + K Z_a' Z_b'`. Everything but `Σ a'w'`
//! and the row sum `Σa'` is known at load time and is folded, with the bias, into one constant
//! per column. All of it is int32 arithmetic modulo 2^32, like the reference's wrapping
//! accumulator, so the int32 accumulator equals the reference's exactly for any K and any zero
//! points (the raw products are exact: |a'w'| <= 255 * 128).
//!
//! ## Layout
//! A kernel declares its tile (`MR` rows x `NR` columns) and K-group `KG` (the number of
//! consecutive k one 32-bit lane holds). Packed weights: for each panel of `NR` columns, for each
//! group of `KG` k, the `NR` columns' `KG` codes column by column. Packed activations: for each
//! panel of `MR` rows, for each group, the `MR` rows' `KG` codes row by row. K is padded with
//! zeros to a multiple of `KG`, rows and columns to a multiple of the tile; a zero contributes
//! nothing to any sum, so padding is exact.

mod conv;
pub(crate) mod depthwise;
mod elementwise;
mod epilogue;
#[cfg(target_arch = "x86_64")]
mod gemv;
mod table;
mod threads;

/// The measured AMX-INT8 peak of one core, the ceiling the AMX GEMM is compared with.
#[cfg(target_arch = "x86_64")]
pub use crate::isa::amx::{amx_peak, AmxPeak};
/// The measured AVX-512 VNNI peak of one core, the ceiling that tier's kernels are compared with.
#[cfg(target_arch = "x86_64")]
pub use crate::isa::avx512vnni::{vnni_peak, VnniPeak};
pub use conv::{Conv2dPlan, FullyConnectedPlan};
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
pub(crate) use conv::{PointwiseKernel, StridedKernel};
pub use depthwise::DepthwisePlan;
pub use elementwise::{add, average_pool, hard_swish, max_pool, mul, quantize, resize_bilinear};
pub use threads::{all_cores, parallel_for, threads_for_work, with_threads, Workers};
pub(crate) use threads::{reserve_scratch, with_scratch, Need, ScratchBuf};

#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
pub(crate) use depthwise::DwRun;
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
pub(crate) use epilogue::field;
pub(crate) use epilogue::Epilogue;
pub(crate) use table::Kernels;
use table::PackedElem;

use crate::isa::Isa;
use crate::{Multipliers, OutputStage, QElem};
use std::sync::OnceLock;

/// The two 8-bit code types, with the mapping to canonical operands (see the module docs).
pub trait Code8: QElem + table::CodeTable {
    /// `a' - a` for an activation.
    const A_OFFSET: i32;
    /// `w' - w` for a weight.
    const W_OFFSET: i32;
    fn canon_a(self) -> u8;
    fn canon_w(self) -> i8;
    /// The code whose bit pattern is `b` (outputs are computed as in-range i32, then truncated).
    fn from_bits(b: u8) -> Self;
}

impl Code8 for u8 {
    const A_OFFSET: i32 = 0;
    const W_OFFSET: i32 = -128;
    #[inline(always)]
    fn canon_a(self) -> u8 {
        self
    }
    #[inline(always)]
    fn canon_w(self) -> i8 {
        (self ^ 0x80) as i8
    }
    #[inline(always)]
    fn from_bits(b: u8) -> Self {
        b
    }
}

impl Code8 for i8 {
    const A_OFFSET: i32 = 128;
    const W_OFFSET: i32 = 0;
    #[inline(always)]
    fn canon_a(self) -> u8 {
        (self as u8) ^ 0x80
    }
    #[inline(always)]
    fn canon_w(self) -> i8 {
        self
    }
    #[inline(always)]
    fn from_bits(b: u8) -> Self {
        b as i8
    }
}

/// One ISA's micro-kernel: its tile, its packed element types, and the tile computation with
/// the fused output stage.
pub(crate) trait Kernel {
    const MR: usize;
    const NR: usize;
    /// K is padded to a multiple of `KG`, and a kernel call covers whole groups of `KG`.
    const KG: usize;
    /// Bytes of a B sub-panel (`kc x NR`) meant to stay in L1 while A streams past it.
    const KC_BYTES: usize = 16 * 1024;
    /// [`Kernel::KC_BYTES`] for a GEMM whose M and N are both at least `LARGE_MN`: each B
    /// sub-panel is reused by many row tiles, and fewer K blocks save the partial sums' trips
    /// through memory.
    const KC_BYTES_LARGE: usize = Self::KC_BYTES;
    const LARGE_MN: usize = usize::MAX;
    /// Bytes of packed A and output rows a row chunk aims to keep in L2 while every B panel
    /// streams past it: the larger it is, the fewer times B is read from L3.
    const MC_BYTES: usize = 192 * 1024;
    /// Consecutive k of one row stored together in packed A (divides `KG`).
    const A_KG: usize = Self::KG;
    /// Consecutive k of one column stored together in packed B (divides `KG`).
    const B_KG: usize = Self::KG;
    /// What the kernel adds to every canonical activation before multiplying: it sums
    /// `Σ(a' + A_BIAS)w'`, and `-A_BIAS Σw'` is folded into the column constants at load time
    /// (`epilogue`), so the output stage sees `Σa'w'`. 0 on the u8 x s8 tiers; -128 on NEON,
    /// whose `sdot` takes s8 x s8.
    const A_BIAS: i32 = 0;
    type A: Pod;
    type B: PackedElem;
    fn a_elem(x: u8) -> Self::A;
    fn b_elem(w: i8) -> Self::B;
    /// Writes codes `k0 .. k0 + src.len()` of row `i` (< `MR`) of a packed A panel (`groups *
    /// KG * MR` elements) from `src`, and returns their `Σa'` (wrapping). Positions past K
    /// are never written and need not be zero: the packed weights are zero there, so whatever
    /// the panel holds multiplies to nothing.
    ///
    /// # Safety
    /// The CPU has the kernel's ISA; `panel` holds whole groups covering `k0 + src.len()`.
    #[inline]
    unsafe fn pack_a_seg<T: Code8>(src: &[T], panel: &mut [Self::A], i: usize, k0: usize) -> u32 {
        let mut sum = 0u32;
        for (j, &x) in src.iter().enumerate() {
            let kk = k0 + j;
            let v = x.canon_a();
            sum = sum.wrapping_add(v as u32);
            panel[((kk / Self::A_KG) * Self::MR + i) * Self::A_KG + kk % Self::A_KG] =
                Self::a_elem(v);
        }
        sum
    }
    /// Called once a task's tiles are done (AMX releases its tile registers).
    ///
    /// # Safety
    /// The CPU has the kernel's ISA.
    unsafe fn end_task() {}
    /// Multiplies one packed A panel (`t.groups` groups) by one packed B panel. The sum starts
    /// from zero when `t.first`, else from the partial tile at `t.c` (`MR x NR` int32,
    /// row-major). Unless `t.last`, the sum is stored back to `t.c`; when `t.last`, it is
    /// finished into `out` ([`TileOut`]).
    ///
    /// # Safety
    /// The CPU has the kernel's ISA; the panels hold `t.groups` full groups; `t.c` is valid for
    /// `MR * NR` int32; `out` meets [`TileOut`]'s contract for `NR` columns and `MR` rows.
    unsafe fn tile(t: &Tile<Self::A, Self::B>, out: &TileOut);
    /// [`Kernel::tile`] on each row tile of a chunk against one B sub-panel ([`Column`]). A tier
    /// may override it to work across the tiles (AMX prefetches the next sub-panel meanwhile).
    ///
    /// # Safety
    /// As [`Kernel::tile`] for every row tile of `col` (see [`Column`]).
    unsafe fn column(col: &Column<Self::A, Self::B>) {
        for i in 0..col.rows.div_ceil(Self::MR) {
            // SAFETY: the caller meets this function's `# Safety` contract, which covers the
            // tile of each row tile.
            unsafe { Self::tile(&col.tile(i, Self::MR, Self::NR), &col.out(i, Self::MR)) }
        }
    }
}

/// One B sub-panel against every row tile of a row chunk: row tile `i` (rows `i * MR ..`) reads
/// its A sub-panel at `a + i * a_stride`, keeps its partial sums at `c + (i % c_bufs) * MR * NR`
/// (each tile its own buffer while K is split into blocks, two buffers taken in turn when one
/// block covers K), and is finished like [`TileOut`] with the chunk's row sums from `rowsum + i * MR`
/// and its output rows from `out + i * MR * ldc`.
pub(crate) struct Column<'a, A, B> {
    pub c: *mut i32,
    pub c_bufs: usize,
    pub first: bool,
    pub last: bool,
    /// An odd K block: a kernel may run the row tiles last to first, so the partial sums it
    /// stored last (the ones still in L1) are the first it loads back.
    pub reverse: bool,
    pub groups: usize,
    pub a: *const A,
    pub a_stride: usize,
    pub b: *const B,
    pub rowsum: *const i32,
    pub epi: &'a Epilogue,
    pub n0: usize,
    pub out: *mut u8,
    pub ldc: usize,
    /// Rows of the chunk (the last row tile may be partial).
    pub rows: usize,
    pub cols: usize,
}

impl<'a, A, B> Column<'a, A, B> {
    /// Row tile `i`'s operands.
    pub(crate) fn tile(&self, i: usize, mr: usize, nr: usize) -> Tile<A, B> {
        Tile {
            c: self.c.wrapping_add((i % self.c_bufs) * mr * nr),
            first: self.first,
            last: self.last,
            groups: self.groups,
            a: self.a.wrapping_add(i * self.a_stride),
            b: self.b,
        }
    }
    /// Row tile `i`'s output.
    pub(crate) fn out(&self, i: usize, mr: usize) -> TileOut<'a> {
        TileOut {
            rowsum: self.rowsum.wrapping_add(i * mr),
            epi: self.epi,
            n0: self.n0,
            out: self.out.wrapping_add(i * mr * self.ldc),
            ldc: self.ldc,
            rows: mr.min(self.rows - i * mr),
            cols: self.cols,
        }
    }
}

/// The operands of one [`Kernel::tile`] call.
pub(crate) struct Tile<A, B> {
    /// The partial `MR x NR` int32 tile between K blocks.
    pub c: *mut i32,
    /// The first K block: the sum starts from zero, not from `c`.
    pub first: bool,
    /// The last K block: the sum is finished into the output, not stored to `c`.
    pub last: bool,
    /// Groups of `KG` k in this block.
    pub groups: usize,
    pub a: *const A,
    pub b: *const B,
}

/// Where and how a finished tile goes: the `rows x cols` top-left part of the tile's
/// accumulators is finished with `epi` (column `n0 + c`, row sum `rowsum[r]`) and the codes are
/// stored at `out + r * ldc + c`.
///
/// Contract (what every tile relies on): `rowsum` holds the tile's `MR` row sums; `epi`'s
/// columns cover `n0 + NR`; `out` is valid for the `rows x cols` byte stores at stride `ldc`.
pub(crate) struct TileOut<'a> {
    pub rowsum: *const i32,
    pub epi: &'a Epilogue,
    pub n0: usize,
    pub out: *mut u8,
    pub ldc: usize,
    pub rows: usize,
    pub cols: usize,
}

/// A tier's implicit-GEMM convolution tile: the rows of A are read in place from a padded image
/// of canonical codes (see `conv.rs`) instead of a packed panel.
pub(crate) trait ImplicitKernel {
    /// Image element: the canonical code as the tile reads it (int16 on AVX2, u8 on VNNI, s8
    /// `a' - 128` on NEON).
    type E: ImageElem;
    /// Packed weight element.
    type B: PackedElem;
    const MR: usize;
    const NR: usize;
    /// Codes per group: a window row's run in the packed filter is whole groups (the image's
    /// channels a multiple of it, or the run padded to it: `Conv2dPlan::row_run`).
    const KG: usize;
    /// The image bytes a chunk of a 1x1 layer may take (wider windows take 128 KiB): a 1x1
    /// window has no halo to repeat, so on a CPU with a large L2 fewer, larger chunks spread
    /// each chunk's setup and the panels' loads over more pixels.
    const CHUNK_1X1_BYTES: usize = 128 * 1024;
    /// One row of the padded image: `codes` mapped to canonical u8 (as `E`), with the sum of
    /// each pixel's `c` codes in `sums`.
    ///
    /// # Safety
    /// The CPU has the tier; `c % KG == 0` unless the tier takes other `c` (AVX2 does);
    /// `dst.len() == codes.len() == sums.len() * c`.
    unsafe fn canon_row<T: Code8>(codes: &[T], c: usize, dst: &mut [Self::E], sums: &mut [i32]);
    /// A row of 3-channel pixels widened to 4 (the fourth the code `zc_code`), with each pixel's
    /// code sum: a stem's RGB image, as `conv::widen_pixels` makes it, in the tier's lanes where
    /// it has them.
    ///
    /// # Safety
    /// The CPU has the tier; `codes.len() == 3 * sums.len()` and `dst.len() == 4 * sums.len()`.
    unsafe fn widen_3_4<T: Code8>(
        codes: &[T],
        zc_code: i32,
        dst: &mut [Self::E],
        sums: &mut [i32],
    ) {
        conv::widen_pixels::<_, _, 3, 4>(codes, zc_code, dst, sums)
    }
    /// One finished tile over the whole K (see [`ImplicitRows`]).
    ///
    /// # Safety
    /// The CPU has the tier; every row's `kh` runs are inside the image; `b` is a packed B
    /// panel of at least `kh * run_groups` groups; `out` meets [`TileOut`]'s contract.
    unsafe fn tile_implicit(rows_a: &ImplicitRows<Self::E>, b: *const Self::B, out: &TileOut);
}

/// An element of an implicit GEMM's padded image.
pub(crate) trait ImageElem: Pod {
    /// The canonical code `c` (0..=255) as an element.
    fn from_code(c: i32) -> Self;
}
impl ImageElem for i16 {
    fn from_code(c: i32) -> i16 {
        c as i16
    }
}
impl ImageElem for u8 {
    fn from_code(c: i32) -> u8 {
        c as u8
    }
}
/// The NEON tier's image holds `a' - 128` (its `Kernel::A_BIAS`).
impl ImageElem for i8 {
    fn from_code(c: i32) -> i8 {
        (c ^ 0x80) as u8 as i8
    }
}

/// Rows of an implicit-GEMM tile: row `i`'s k-th code is at
/// `base[i] + (k / run) * row_stride + k % run` for a run of `KG * run_groups` codes (one filter
/// row's taps, adjacent in NHWC): the same products in the same order as the packed tile, so the
/// same accumulators.
pub(crate) struct ImplicitRows<'a, E> {
    /// Each pixel's window origin (filter tap (0, 0), channel 0) in the padded image; `MR` of them.
    pub base: &'a [*const E],
    /// Filter rows, and the image elements between two of them.
    pub kh: usize,
    pub row_stride: usize,
    /// Groups of one filter row (`kw * in_c / KG`).
    pub run_groups: usize,
}

/// Weights packed for one ISA's kernel.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum Packed {
    I8(Aligned<i8>),
    I16(Aligned<i16>),
}

/// A zeroed buffer whose first element sits on a 64-byte boundary, so the kernels' vector and
/// tile loads never straddle cache lines.
#[derive(Debug)]
pub(crate) struct Aligned<T> {
    buf: Vec<T>,
    off: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    pub(crate) fn zeroed(len: usize) -> Self {
        let size = std::mem::size_of::<T>().max(1);
        let buf = vec![T::default(); len + 64 / size];
        let addr = buf.as_ptr() as usize;
        // A Vec's address is a multiple of T's alignment, which for the integer types here is
        // its size, so the gap to the boundary is a whole number of elements.
        let off = (addr.next_multiple_of(64) - addr) / size;
        Aligned { buf, off, len }
    }
    pub(crate) fn as_slice(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }
    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl<T: Copy + Default> Clone for Aligned<T> {
    fn clone(&self) -> Self {
        let mut c = Aligned::zeroed(self.len);
        c.as_mut_slice().copy_from_slice(self.as_slice());
        c
    }
}

impl<T: Copy + Default + PartialEq> PartialEq for Aligned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

/// A GEMM whose weights, zero points and output stage are fixed: weights packed once (at model
/// load) for one ISA tier, with the output stage's per-column constants precomputed.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedGemm {
    kernels: &'static Kernels,
    n: usize,
    k: usize,
    packed: Packed,
    epi: Epilogue,
}

fn zero_point_of(zps: &[i32], n: usize) -> i32 {
    if zps.len() == 1 {
        zps[0]
    } else {
        zps[n]
    }
}

impl PreparedGemm {
    /// Packs `weights` (`n x k`, row-major) for `isa` and folds the zero points, bias and
    /// requantization of `stage` into per-column constants.
    ///
    /// # Panics
    /// When `isa` is not available on this CPU, shapes disagree, or the clamp is empty — the
    /// same conditions under which the reference kernels panic.
    pub fn new<T: Code8>(
        weights: &[T],
        n: usize,
        k: usize,
        weight_zero_points: &[i32],
        input_zero_point: i32,
        stage: &OutputStage,
        isa: Isa,
    ) -> PreparedGemm {
        Self::with_packed_weights(
            weights,
            n,
            k,
            weight_zero_points,
            input_zero_point,
            stage,
            isa,
            None,
        )
    }

    /// [`new`](Self::new), packing `packed` (`n x k_packed`) instead of `weights` when given,
    /// with the output stage folded from `weights`: for a convolution whose packed filter has
    /// zero weights (canonical 0) the real one lacks, which add nothing to any product.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with_packed_weights<T: Code8>(
        weights: &[T],
        n: usize,
        k: usize,
        weight_zero_points: &[i32],
        input_zero_point: i32,
        stage: &OutputStage,
        isa: Isa,
        packed: Option<(&[T], usize)>,
    ) -> PreparedGemm {
        let kernels = Kernels::of(isa);
        assert_eq!(
            weights.len(),
            n * k,
            "gemm: weights hold {} codes, expected {n} x {k}",
            weights.len()
        );
        assert!(
            weight_zero_points.len() == 1 || weight_zero_points.len() == n,
            "gemm: {} weight zero points for {n} columns",
            weight_zero_points.len()
        );
        if let Some(b) = stage.bias {
            assert_eq!(
                b.len(),
                n,
                "gemm: bias has {} entries for {n} columns",
                b.len()
            );
        }
        if let Multipliers::PerChannel(ms) = stage.multipliers {
            assert_eq!(
                ms.len(),
                n,
                "gemm: {} multipliers for {n} columns",
                ms.len()
            );
        }
        assert!(
            stage.clamp_min <= stage.clamp_max,
            "gemm: empty clamp {}..={}",
            stage.clamp_min,
            stage.clamp_max
        );
        let pack = kernels.ops::<T>().pack;
        let packed = match packed {
            Some((w, k_packed)) => {
                assert_eq!(w.len(), n * k_packed, "gemm: packed weights");
                pack(w, n, k_packed)
            }
            None => pack(weights, n, k),
        };
        let nr = kernels.nr;
        let mut epi = epilogue::<T>(
            weights,
            n,
            k,
            weight_zero_points,
            input_zero_point,
            stage,
            n.div_ceil(nr) * nr,
            kernels.a_bias,
        );
        kernels.lay_out(&mut epi);
        PreparedGemm {
            kernels,
            n,
            k,
            packed,
            epi,
        }
    }

    pub fn isa(&self) -> Isa {
        self.kernels.isa()
    }
    pub fn n(&self) -> usize {
        self.n
    }
    pub fn k(&self) -> usize {
        self.k
    }

    /// `out` (`m x n`) from `a` (`m x k`, row-major), on up to `threads` threads of the current
    /// kernel team (see [`parallel_for`]). The result does not depend on `threads`.
    pub fn run<T: Code8>(&self, a: &[T], m: usize, out: &mut [T], threads: usize) {
        assert_eq!(
            a.len(),
            m * self.k,
            "gemm: A holds {} codes, expected {m} x {}",
            a.len(),
            self.k
        );
        let k = self.k;
        self.run_rows(m, out, threads, &|r: usize, emit: &mut dyn FnMut(&[T])| {
            emit(&a[r * k..(r + 1) * k])
        });
    }

    /// Like [`run`](Self::run), with row `r` of A handed by `row(r, emit)` to `emit` as
    /// consecutive runs of codes covering its K codes in order: how convolution feeds im2col
    /// rows straight into the packed panels, never materializing a patch.
    pub fn run_rows<T: Code8>(&self, m: usize, out: &mut [T], threads: usize, row: &RowSource<T>) {
        assert_eq!(
            out.len(),
            m * self.n,
            "gemm: output holds {} codes, expected {m} x {}",
            out.len(),
            self.n
        );
        if m == 0 || self.n == 0 {
            return;
        }
        // SAFETY: `out` is a byte slice of m x n codes; T is one byte.
        let out_bytes =
            unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, out.len()) };
        (self.kernels.ops::<T>().gemm)(self, m, out_bytes, threads, row)
    }

    /// The blocked GEMM on `K`'s micro-kernel, over `b`, this plan's panels in `K`'s layout.
    fn drive<K: Kernel, T: Code8>(
        &self,
        b: &[K::B],
        m: usize,
        out: &mut [u8],
        threads: usize,
        row: &RowSource<T>,
    ) {
        let (n, k) = (self.n, self.k);
        let groups = k.div_ceil(K::KG).max(1);
        let panels_n = n.div_ceil(K::NR);
        let a_bytes = std::mem::size_of::<K::A>() * groups * K::KG;
        // A chunk of rows small enough to stay in L2 while every B panel streams past it.
        // K is split into blocks whose B sub-panel (`kc x NR`) stays in L1 while the chunk's A
        // sub-panels stream past it; partial tiles wait in `cbuf` between blocks (the int32
        // sums wrap the same in any grouping, so blocking is exact).
        let (kc_override, mc_override) = blocking_overrides();
        // A row chunk whose packed A and output rows (`MC_BYTES` together) stay in L2 while
        // every B panel streams past them.
        let mc_bytes = mc_override.unwrap_or(K::MC_BYTES);
        let mut mc = (mc_bytes / (a_bytes + n).max(1)).clamp(K::MR, 1024) / K::MR * K::MR;
        let threads = threads.max(1);
        if threads > 1 {
            mc = mc
                .min(m.div_ceil(threads * TASKS_PER_THREAD).div_ceil(K::MR) * K::MR)
                .max(K::MR);
        }
        // Equal chunks: each chunk reads all of B once, and a short last one would pay that
        // for few rows (2048 rows of 384 left 128; six chunks of 352 leave 288).
        mc = m.div_ceil(m.div_ceil(mc)).div_ceil(K::MR) * K::MR;
        let chunks_m = m.div_ceil(mc);
        let kc_bytes = kc_override.unwrap_or(if m.min(n) >= K::LARGE_MN {
            K::KC_BYTES_LARGE
        } else {
            K::KC_BYTES
        });
        let gc_max = (kc_bytes / (K::NR * K::KG * std::mem::size_of::<K::B>())).max(1);
        let kblocks = groups.div_ceil(gc_max);
        // Equal blocks: a short last block would pay a partial-tile round trip for little work.
        let gc = groups.div_ceil(kblocks);
        let blocks_n = if chunks_m >= threads {
            1
        } else {
            threads.div_ceil(chunks_m).min(panels_n)
        };
        let panels_per_block = panels_n.div_ceil(blocks_n);
        let blocks_n = panels_n.div_ceil(panels_per_block);
        let out_ptr = SendPtr(out.as_mut_ptr());
        // One K block: two buffers, so a kernel may finish a tile's stored sums while it
        // multiplies the next one.
        let cbuf_len = |mrows: usize| {
            if kblocks > 1 {
                mrows * K::NR
            } else {
                (2 * K::MR).min(mrows) * K::NR
            }
        };
        // The largest task's packed A, row sums and partial tiles, reserved for every thread
        // before the job so no task allocates.
        let need = |mrows: usize| {
            Need::default()
                .add::<K::A>(mrows * groups * K::KG)
                .add::<i32>(mrows + cbuf_len(mrows))
        };
        let mrows_max = mc.min(m).div_ceil(K::MR) * K::MR;
        reserve_scratch(threads, 0, need(mrows_max).0);
        let task = |t: usize| {
            let (cm, bn) = (t / blocks_n, t % blocks_n);
            let r0 = cm * mc;
            let rows = mc.min(m - r0);
            let mrows = rows.div_ceil(K::MR) * K::MR;
            with_scratch(0, need(mrows).0, |scratch| {
                let apack = scratch.take::<K::A>(mrows * groups * K::KG);
                let ints = scratch.take::<i32>(mrows + cbuf_len(mrows));
                let (rowsum, cbuf) = ints.split_at_mut(mrows);
                pack_a::<K, T>(r0, rows, groups, row, apack, rowsum);
                let p_end = ((bn + 1) * panels_per_block).min(panels_n);
                let op = out_ptr;
                for p in bn * panels_per_block..p_end {
                    let n0 = p * K::NR;
                    let cols = K::NR.min(n - n0);
                    for kb in 0..kblocks {
                        let g0 = kb * gc;
                        let g = gc.min(groups - g0);
                        let bp = &b[(p * groups + g0) * K::KG * K::NR..];
                        let ap = &apack[g0 * K::KG * K::MR..];
                        // SAFETY: the tier is available (checked at prepare); each row tile's
                        // sub-panels hold `g` groups; `cbuf` holds `c_bufs` partial tiles (the
                        // first K block starts them from zero); rowsum holds the chunk's rows;
                        // the stores stay in rows r0 .. r0 + rows and columns n0 .. n0 + cols
                        // of `out`, disjoint between tasks.
                        unsafe {
                            K::column(&Column {
                                c: cbuf.as_mut_ptr(),
                                c_bufs: if kblocks > 1 {
                                    mrows / K::MR
                                } else {
                                    2.min(mrows / K::MR)
                                },
                                first: kb == 0,
                                last: kb + 1 == kblocks,
                                reverse: kb % 2 == 1,
                                groups: g,
                                a: ap.as_ptr(),
                                a_stride: groups * K::KG * K::MR,
                                b: bp.as_ptr(),
                                rowsum: rowsum.as_ptr(),
                                epi: &self.epi,
                                n0,
                                out: op.0.add(r0 * n + n0),
                                ldc: n,
                                rows,
                                cols,
                            });
                        }
                    }
                }
            });
            // SAFETY: the tier is available (checked at prepare).
            unsafe { K::end_task() };
        };
        let tasks = chunks_m * blocks_n;
        parallel_for(threads, tasks, &task);
    }
}

/// Byte counts from the environment, read once: `INTQ_GEMM_KC_BYTES` and
/// `INTQ_GEMM_MC_BYTES` override the blocking ([`Kernel::KC_BYTES`], [`Kernel::MC_BYTES`]) so a new
/// CPU's caches can be measured without a rebuild. Blocking never changes results (the int32
/// sums wrap the same in any grouping), only speed.
fn blocking_overrides() -> (Option<usize>, Option<usize>) {
    static V: OnceLock<(Option<usize>, Option<usize>)> = OnceLock::new();
    *V.get_or_init(|| {
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|&b: &usize| b > 0)
        };
        (read("INTQ_GEMM_KC_BYTES"), read("INTQ_GEMM_MC_BYTES"))
    })
}

#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut u8);
// SAFETY: tasks write disjoint tiles of the output through it.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Packs rows `r0 .. r0 + rows` of A (from `row`) into `K`'s layout, with each row's `Σa'`:
/// each run of codes `row` hands over goes straight into the panel by the kernel's
/// [`Kernel::pack_a_seg`].
fn pack_a<K: Kernel, T: Code8>(
    r0: usize,
    rows: usize,
    groups: usize,
    row: &RowSource<T>,
    apack: &mut [K::A],
    rowsum: &mut [i32],
) {
    let panel = groups * K::KG * K::MR;
    for (r, rs) in rowsum.iter_mut().enumerate().take(rows) {
        let (p, i) = (r / K::MR, r % K::MR);
        let dst = &mut apack[p * panel..(p + 1) * panel];
        let (mut k0, mut sum) = (0usize, 0u32);
        row(r0 + r, &mut |seg: &[T]| {
            assert!(
                k0 + seg.len() <= groups * K::KG,
                "gemm: a row source overran K"
            );
            // SAFETY: the tier is available (checked at prepare); the panel holds `groups`
            // groups, which cover k0 + seg.len() (checked above).
            sum = sum.wrapping_add(unsafe { K::pack_a_seg(seg, dst, i, k0) });
            k0 += seg.len();
        });
        *rs = sum as i32;
    }
    // K's padding and rows past the end keep whatever the scratch held: the packed weights are
    // zero past K, and results of padding rows are never stored.
}

/// Row chunks per thread when a layer is split: claimed dynamically, so a thread the OS delays
/// holds up one small chunk rather than its whole share.
pub(crate) const TASKS_PER_THREAD: usize = 4;

/// Row `r` of A handed to `emit` as consecutive runs of codes covering its K codes in order.
pub type RowSource<'a, T> = dyn Fn(usize, &mut dyn FnMut(&[T])) + Sync + 'a;

/// Plain integer types, for which any bit pattern is a value (so scratch need not be zeroed).
///
/// # Safety
/// Implementors have no padding, no invalid bit patterns and an alignment of at most 64.
pub(crate) unsafe trait Pod: Copy + Default + Send + Sync + 'static {}
// SAFETY: plain integers.
unsafe impl Pod for u8 {}
// SAFETY: plain integers.
unsafe impl Pod for i8 {}
// SAFETY: plain integers.
unsafe impl Pod for i16 {}
// SAFETY: plain integers.
unsafe impl Pod for i32 {}
// SAFETY: plain integers.
unsafe impl Pod for usize {}

/// Packs weights (`n x k`) into `K`'s panels.
fn pack_b<K: Kernel, T: Code8>(w: &[T], n: usize, k: usize) -> Aligned<K::B> {
    let groups = k.div_ceil(K::KG).max(1);
    let panels = n.div_ceil(K::NR);
    let mut buf = Aligned::<K::B>::zeroed(panels * groups * K::KG * K::NR);
    let out = buf.as_mut_slice();
    for col in 0..n {
        let (p, c) = (col / K::NR, col % K::NR);
        let base = p * groups * K::KG * K::NR;
        for (kk, &x) in w[col * k..(col + 1) * k].iter().enumerate() {
            out[base + ((kk / K::B_KG) * K::NR + c) * K::B_KG + kk % K::B_KG] =
                K::b_elem(x.canon_w());
        }
    }
    buf
}

/// The output stage of `PreparedGemm::new`, for a kernel that sums `Σ(a' + a_bias)w'`
/// ([`Kernel::A_BIAS`]).
#[allow(clippy::too_many_arguments)]
fn epilogue<T: Code8>(
    w: &[T],
    n: usize,
    k: usize,
    zps: &[i32],
    input_zero_point: i32,
    stage: &OutputStage,
    np: usize,
    a_bias: i32,
) -> Epilogue {
    let za = input_zero_point.wrapping_add(T::A_OFFSET);
    let kk = k as u32 as i32;
    let mut e = Epilogue::empty(np, stage);
    e.zw_zero = (0..n).all(|col| zero_point_of(zps, col).wrapping_add(T::W_OFFSET) == 0);
    for col in 0..n {
        let zw = zero_point_of(zps, col).wrapping_add(T::W_OFFSET);
        let sumw = w[col * k..(col + 1) * k]
            .iter()
            .fold(0i32, |s, &x| s.wrapping_add(x.canon_w() as i32));
        let bias = stage.bias.map_or(0, |b| b[col]);
        e.colconst[col] = bias
            .wrapping_add(kk.wrapping_mul(za).wrapping_mul(zw))
            .wrapping_sub(za.wrapping_mul(sumw))
            .wrapping_sub(a_bias.wrapping_mul(sumw));
        e.zw[col] = zw;
        let m = match stage.multipliers {
            Multipliers::PerTensor(m) => m,
            Multipliers::PerChannel(ms) => ms[col],
        };
        e.set_multiplier(col, m);
    }
    e.pad_columns(n);
    e.set_clamp();
    e
}
