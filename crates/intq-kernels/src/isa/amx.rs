//! The AMX-INT8 tier: a 32 x 32 int32 tile as four 16 x 16 AMX tiles, accumulated with
//! `tdpbusd` (u8 x s8, four products per int32, exact and wrapping like `vpdpbusd`), then the
//! AVX-512 output stage row by row.
//!
//! AMX instructions are written as inline assembly (their intrinsics are not stable Rust). The
//! tile configuration is loaded once per thread; the OS must first grant the process the tile
//! data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), asked once per process;
//! if the kernel refuses, the tier is reported unavailable and intq falls back to the next one.
//!
//! Layout: A is packed in groups of 64 k (each row's 64 codes contiguous: one tile row), B in
//! groups of 4 k (`NR` columns x 4 codes per row: the VNNI layout `tdpbusd` reads), both padded
//! to a multiple of 64 k.

use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::Cell;
use std::sync::OnceLock;

use crate::gemm::{field, Column, Epilogue, Kernel, Tile, TileOut};
use crate::isa::avx512vnni::{canon_load, prefix_mask, Cols16, Lean16, StageFlags};

pub(crate) struct Amx;

const MR: usize = 32;
const NR: usize = 32;
/// K codes per group; also the padding of K in the packed panels.
pub(crate) const KG: usize = 64;

/// Whether the CPU has AMX-TILE and AMX-INT8 (and the AVX-512 the packing and the output
/// stage use: F, BW, VL, VBMI, VNNI) and Linux granted this process the tile data state.
pub(crate) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if !(std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vbmi")
            && std::is_x86_feature_detected!("avx512vnni"))
        {
            return false;
        }
        // SAFETY: cpuid leaf 7 exists on every CPU with AVX-512.
        let leaf7 = __cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
        tile && int8 && request_tile_permission()
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: true when granted.
#[cfg(target_os = "linux")]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a raw Linux syscall that only changes this process's permitted xsave features.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_permission() -> bool {
    false
}

/// The 64-byte tile configuration: palette 1; tmm0-3 the C tiles, tmm4-5 A, tmm6-7 B, each
/// 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

fn tile_config() -> TileConfig {
    let mut c = [0u8; 64];
    c[0] = 1;
    for t in 0..8 {
        c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
        c[48 + t] = 16; // rows
    }
    TileConfig(c)
}

thread_local! {
    static CONFIGURED: Cell<bool> = const { Cell::new(false) };
}

/// Releases the tiles at the end of a GEMM task, so the OS need not save and restore 8 KiB of
/// tile data at every context switch while this thread runs other code.
///
/// # Safety
/// AMX is available.
pub(crate) unsafe fn release() {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        CONFIGURED.with(|c| {
            if c.get() {
                asm!("tilerelease", options(nostack, nomem));
                c.set(false);
            }
        });
    }
}

/// Loads the tile configuration on this thread, once.
///
/// # Safety
/// AMX is available (see [`available`]).
#[inline]
pub(crate) unsafe fn ensure_configured() {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        CONFIGURED.with(|c| {
            if !c.get() {
                let cfg = tile_config();
                asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack));
                c.set(true);
            }
        });
    }
}

impl Kernel for Amx {
    const MR: usize = MR;
    const NR: usize = NR;
    const KG: usize = KG;
    /// Every AMX core so far (Sapphire Rapids and later) has 2 MiB of L2: chunks of most of it
    /// read B from L3 once per many rows, where small chunks read it once per few rows.
    const MC_BYTES: usize = 1536 * 1024;
    /// A large GEMM's B sub-panels hold up to 1,024 k (32 KiB of the 48 KiB L1): a 32 x 32
    /// tile's accumulators then go through memory once per 1,024 k, and draining the four
    /// accumulators costs the tile unit hundreds of cycles. [`column`] streams A past the
    /// sub-panel with non-temporal loads, so it stays in L1. A network's layers (M or N
    /// below 512) keep 16 KiB sub-panels, which ran them faster.
    const KC_BYTES_LARGE: usize = 32 * 1024;
    const LARGE_MN: usize = 512;
    const A_KG: usize = 64;
    const B_KG: usize = 4;
    type A = u8;
    type B = i8;
    fn a_elem(x: u8) -> u8 {
        x
    }
    fn b_elem(w: i8) -> i8 {
        w
    }
    /// # Safety
    /// As [`Kernel::end_task`].
    unsafe fn end_task() {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { release() }
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
        unsafe {
            let (c, first, last, groups, a, b) = (t.c, t.first, t.last, t.groups, t.a, t.b);
            ensure_configured();
            if first {
                zero_acc();
            } else {
                load_acc(c);
            }
            for g in 0..groups {
                step::<false>(a.add(g * MR * KG), KG, (b as *const u8).add(g * KG * NR));
            }
            store_acc(c);
            if last {
                finish(c, o);
            }
        }
    }
    /// # Safety
    /// As [`Kernel::column`].
    unsafe fn column(col: &Column<u8, i8>) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { column(col) }
    }
}

/// Every row tile of `col`, as [`Kernel::tile`], with the next B sub-panel (the one after this
/// in memory: this panel's next K block, or the next panel's first) prefetched towards L2 a
/// few lines a group. The row tiles reuse the current sub-panel from L1, but each new one comes
/// from L3 once per row chunk (the whole of B does not stay in L2 next to the chunk's A), and
/// the hardware prefetcher, which stops at page boundaries, left the tiles waiting on it.
/// Odd K blocks run the row tiles last to first ([`Column::reverse`]): the chunk's partial
/// sums outgrow L1, and the ones stored last are the ones still there.
///
/// In the last K block a tile's output stage runs a few rows at a time between the next
/// tile's groups: run whole after its `tilestored`, its vector loads wait for the store to
/// retire and fill the reorder buffer, so the next tile's `tdpbusd` could not start meanwhile.
/// The columns, and so the stage's constants, are the same for every tile of `col`: for the
/// usual flags ([`Lean16`]) they are loaded once and kept in registers across the loop.
///
/// # Safety
/// As [`Kernel::column`]; AMX is available.
unsafe fn column(col: &Column<u8, i8>) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let epi = col.epi;
        // Only the last K block finishes tiles; the others need no constants.
        if col.last && epi.vector_ok && epi.zw_zero && epi.lshift_zero && epi.clamp_first {
            column_lean(col);
        } else {
            column_with(col, &AnyRows);
        }
    }
}

/// [`column`] for an epilogue with [`Lean16`]'s flags.
///
/// # Safety
/// As [`column`]; the epilogue is vector-ready with `zw_zero`, `lshift_zero` and
/// `clamp_first`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn column_lean(col: &Column<u8, i8>) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let epi = col.epi;
        let (k0, k1) = (Lean16::load(epi, col.n0), Lean16::load(epi, col.n0 + 16));
        match (lean_nonneg(col.cols, &k0, &k1), epi.zout_folded) {
            (true, true) => column_with(col, &LeanRows::<true, true> { k0, k1 }),
            (true, false) => column_with(col, &LeanRows::<true, false> { k0, k1 }),
            (false, true) => column_with(col, &LeanRows::<false, true> { k0, k1 }),
            (false, false) => column_with(col, &LeanRows::<false, false> { k0, k1 }),
        }
    }
}

/// The output stage of rows `r0 .. r1` of a stored tile (those below `o.rows`).
trait RowStage {
    /// # Safety
    /// As [`finish`] for those rows.
    unsafe fn rows(&self, c: *const i32, o: &TileOut, r0: usize, r1: usize);
}

/// Any epilogue, through [`finish`].
struct AnyRows;

impl RowStage for AnyRows {
    #[inline(always)]
    unsafe fn rows(&self, c: *const i32, o: &TileOut, r0: usize, r1: usize) {
        // SAFETY: the caller meets this function's `# Safety` contract.
        unsafe { finish_rows(c, o, r0, r1) }
    }
}

/// An epilogue with [`Lean16`]'s flags, its two column groups' constants loaded.
struct LeanRows<const NN: bool, const ZF: bool> {
    k0: Lean16,
    k1: Lean16,
}

impl<const NN: bool, const ZF: bool> RowStage for LeanRows<NN, ZF> {
    #[inline(always)]
    unsafe fn rows(&self, c: *const i32, o: &TileOut, r0: usize, r1: usize) {
        // SAFETY: the caller meets this function's `# Safety` contract; this runs inlined in
        // `column_with`, which has the AVX-512 features `lean_rows` needs.
        unsafe { lean_rows::<NN, ZF>(c, o, r0, r1.min(o.rows), &self.k0, &self.k1) }
    }
}

/// Whether every stored column's clamp floor is at least 0 ([`Lean16::requant`]'s `NN`).
///
/// # Safety
/// The CPU has AVX-512 F.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn lean_nonneg(cols: usize, k0: &Lean16, k1: &Lean16) -> bool {
    // Only the stored columns' floors count: a padding column's result is never stored.
    let mask = prefix_mask(cols.min(NR));
    let zero = _mm512_setzero_si512();
    let neg = _mm512_mask_cmplt_epi32_mask(mask as __mmask16, k0.pre_lo, zero)
        | _mm512_mask_cmplt_epi32_mask((mask >> 16) as __mmask16, k1.pre_lo, zero);
    neg == 0
}

/// Rows `r0 .. r1` of [`finish_lean_as`].
///
/// # Safety
/// As [`finish_lean_as`], for rows `r0 .. r1` (`r1 <= o.rows`).
#[inline(always)]
unsafe fn lean_rows<const NN: bool, const ZF: bool>(
    c: *const i32,
    o: &TileOut,
    r0: usize,
    r1: usize,
    k0: &Lean16,
    k1: &Lean16,
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let idx = _mm512_loadu_si512(LOW_BYTES.as_ptr() as *const __m512i);
        let mask = prefix_mask(o.cols.min(NR)) as __mmask32;
        for i in r0..r1 {
            let v0 = _mm512_loadu_si512(c.add(i * NR) as *const __m512i);
            let v1 = _mm512_loadu_si512(c.add(i * NR + 16) as *const __m512i);
            let q0 = k0.requant::<NN, ZF>(v0, o.epi);
            let q1 = k1.requant::<NN, ZF>(v1, o.epi);
            let bytes = _mm512_castsi512_si256(_mm512_permutex2var_epi8(q0, idx, q1));
            _mm256_mask_storeu_epi8(o.out.add(i * o.ldc) as *mut i8, mask, bytes);
        }
    }
}

/// [`column`]'s loop with the output stage `stage`.
///
/// # Safety
/// As [`column`]; `stage` fits `col`'s epilogue.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn column_with<S: RowStage>(col: &Column<u8, i8>, stage: &S) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        // Early loads only for long sub-panels (a large GEMM's): with a network layer's few
        // groups a tile they ran the layer slower.
        if col.groups >= 16 {
            column_loop::<S, true>(col, stage)
        } else {
            column_loop::<S, false>(col, stage)
        }
    }
}

/// [`column_with`]'s loop; with `EARLY`, each tile's operands are loaded as early as the
/// tile unit's order allows.
///
/// # Safety
/// As [`column_with`].
#[inline(always)]
unsafe fn column_loop<S: RowStage, const EARLY: bool>(col: &Column<u8, i8>, stage: &S) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        ensure_configured();
        let groups = col.groups;
        let tiles = col.rows.div_ceil(MR);
        let b = col.b as *const u8;
        let sub = groups * KG * NR;
        // Prefetches never fault, so the address past the last sub-panel needs no check.
        let mut pf = b.wrapping_add(sub);
        let pf_end = pf.wrapping_add(sub);
        let pf_lines = (sub / 64).div_ceil(tiles * groups);
        // Rows of the pending tile finished after each group: spread over all the groups, as
        // fewer rows a group left the tile unit less often waiting.
        let per_group = MR.div_ceil(groups);
        // The previous tile's stored sums and output, waiting for their output stage.
        let mut pending: Option<(*const i32, TileOut)> = None;
        // Where the accumulators still in the tile registers go (null before the first tile).
        let mut held: *mut i32 = std::ptr::null_mut();
        for j in 0..tiles {
            let i = if col.reverse { tiles - 1 - j } else { j };
            let t = col.tile(i, MR, NR);
            // The tile unit takes tile instructions in order: with `EARLY`, this tile's first
            // operands are loaded before the last tile's accumulators are stored, and each
            // accumulator is started again right after its store, so the loads overlap the drain.
            if EARLY {
                load_ab(t.a, b);
                match (held.is_null(), t.first) {
                    (true, true) => zero_acc(),
                    (true, false) => load_acc(t.c),
                    (false, true) => store_zero_acc(held),
                    (false, false) => store_load_acc(held, t.c),
                }
            } else {
                if !held.is_null() {
                    store_acc(held);
                }
                if t.first {
                    zero_acc();
                } else {
                    load_acc(t.c);
                }
            }
            for g in 0..groups {
                if !EARLY {
                    load_ab(t.a.add(g * MR * KG), b.add(g * KG * NR));
                    mul4();
                } else if g + 1 < groups {
                    mul4_load_next(t.a.add((g + 1) * MR * KG), b.add((g + 1) * KG * NR));
                } else {
                    mul4();
                }
                for _ in 0..pf_lines {
                    if pf < pf_end {
                        _mm_prefetch::<_MM_HINT_T1>(pf as *const i8);
                        pf = pf.wrapping_add(64);
                    }
                }
                if let Some((c, o)) = &pending {
                    stage.rows(*c, o, g * per_group, (g + 1) * per_group);
                }
            }
            if let Some((c, o)) = &pending {
                stage.rows(*c, o, groups * per_group, MR);
            }
            // Stored at the start of the next tile, before the output stage reads it.
            held = t.c;
            pending = t.last.then(|| (t.c as *const i32, col.out(i, MR)));
        }
        if !held.is_null() {
            store_acc(held);
        }
        if let Some((c, o)) = &pending {
            stage.rows(*c, o, 0, MR);
        }
    }
}

/// [`finish`] on rows `r0 .. r1` of the tile (those of them below `o.rows`).
///
/// # Safety
/// As [`finish`].
#[inline]
unsafe fn finish_rows(c: *const i32, o: &TileOut, r0: usize, r1: usize) {
    let r1 = r1.min(o.rows);
    if r0 >= r1 {
        return;
    }
    let part = TileOut {
        rowsum: o.rowsum.wrapping_add(r0),
        epi: o.epi,
        n0: o.n0,
        out: o.out.wrapping_add(r0 * o.ldc),
        ldc: o.ldc,
        rows: r1 - r0,
        cols: o.cols,
    };
    // SAFETY: the caller meets this function's `# Safety` contract; rows r0 .. r1 of the
    // tile, its row sums and its output rows are a part of those `o` covers.
    unsafe { finish(c.add(r0 * NR), &part) }
}

/// Codes `k0 ..` of row `i` of a packed A panel, where a row's 64 codes of a group are one tile
/// row: each piece of the run up to the next group boundary is one masked load, `^ 0x80` for
/// int8, one `vpsadbw` for the sum and one masked store. Code-by-code packing would be slower
/// than the tiles' multiply.
///
/// # Safety
/// The CPU has AVX-512 F/BW; `panel` holds whole groups covering `k0 + src.len()` for row
/// `i < MR`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_a_seg<T: crate::gemm::Code8>(
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
        let flip = _mm512_set1_epi8(if T::A_OFFSET != 0 { -128 } else { 0 });
        let mut sums = _mm512_setzero_si512();
        let pf = PACK_PF_RUNS * len;
        let mut j = 0;
        while j < len {
            let kk = k0 + j;
            let n = (KG - kk % KG).min(len - j);
            let mask = prefix_mask(n);
            _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(j + pf) as *const i8);
            let v = canon_load(s.add(j), mask, flip, &mut sums);
            let dst = d.add(((kk / KG) * MR + i) * KG + kk % KG);
            _mm512_mask_storeu_epi8(dst as *mut i8, mask, v);
            j += n;
        }
        _mm512_reduce_add_epi64(sums) as u32
    }
}

/// How many runs ahead of the code being packed [`pack_a_seg`] prefetches its source: a row
/// chunk's A comes from L3 or memory in one burst, faster than the hardware prefetcher runs
/// ahead, and a GEMM's next rows usually follow in memory, where a convolution's short runs
/// (channels of one tap) then look only a few lines ahead. Prefetches never fault.
const PACK_PF_RUNS: usize = 4;

/// The output stage on the stored tile, a row at a time, in a loop specialised to the
/// epilogue's flags ([`StageFlags`]).
///
/// # Safety
/// AMX is available ([`available`], which checks the AVX-512 F/BW/VL/VBMI used here); `c`
/// holds `o.rows` rows of `NR` sums; `o` meets [`TileOut`]'s contract for those rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
pub(crate) unsafe fn finish(c: *const i32, o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let epi = o.epi;
        if !epi.vector_ok {
            let acc = std::slice::from_raw_parts(c, o.rows * NR);
            epi.finish_scalar(acc, NR, o);
            return;
        }
        if epi.zw_zero && epi.lshift_zero && epi.clamp_first {
            finish_lean(c, o);
            return;
        }
        macro_rules! flagged {
            ($($zw:literal $ls:literal $cf:literal),*) => {
                match StageFlags::of(epi) {
                    $(StageFlags { zw_zero: $zw, lshift_zero: $ls, clamp_first: $cf } => {
                        finish_as::<$zw, $ls, $cf>(c, o)
                    })*
                }
            };
        }
        flagged!(
            false false false, false false true, false true false, false true true,
            true false false, true false true, true true false, true true true
        );
    }
}

/// The `vpermt2b` indices that gather the low bytes of two vectors of int32 into 32 bytes.
static LOW_BYTES: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut j = 0;
    while j < 32 {
        t[j] = (4 * j) as u8;
        j += 1;
    }
    t
};

/// [`finish`] for an epilogue whose [`StageFlags`] are `ZW`, `LS`, `CF`.
///
/// # Safety
/// As [`finish`]; the epilogue is vector-ready with these flags.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn finish_as<const ZW: bool, const LS: bool, const CF: bool>(c: *const i32, o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let (rowsum, epi, n0, out, ldc, rows, cols) =
            (o.rowsum, o.epi, o.n0, o.out, o.ldc, o.rows, o.cols);
        let f = StageFlags {
            zw_zero: ZW,
            lshift_zero: LS,
            clamp_first: CF,
        };
        // Both halves of a row are finished together and their low bytes gathered by one
        // `vpermt2b` into one 32-byte store: a narrowing store per half cost more than the
        // output stage's arithmetic. The epilogue covers whole panels, so the second half's
        // constants exist even where `cols <= 16`.
        let idx = _mm512_loadu_si512(LOW_BYTES.as_ptr() as *const __m512i);
        let (k0, k1) = (Cols16::load(epi, n0), Cols16::load(epi, n0 + 16));
        let mask = prefix_mask(cols.min(NR)) as __mmask32;
        for i in 0..rows {
            let rs = if ZW {
                _mm512_setzero_si512()
            } else {
                _mm512_set1_epi32(*rowsum.add(i))
            };
            let v0 = _mm512_loadu_si512(c.add(i * NR) as *const __m512i);
            let v1 = _mm512_loadu_si512(c.add(i * NR + 16) as *const __m512i);
            let q0 = k0.requant_as(v0, rs, epi, f);
            let q1 = k1.requant_as(v1, rs, epi, f);
            let bytes = _mm512_castsi512_si256(_mm512_permutex2var_epi8(q0, idx, q1));
            _mm256_mask_storeu_epi8(out.add(i * ldc) as *mut i8, mask, bytes);
        }
    }
}

/// The 16 lanes of field `f` for the columns from `n`.
///
/// # Safety
/// The CPU has AVX-512 F; `epi` was laid out 16 wide and covers column `n + 15`; `n` is a
/// multiple of 16.
#[inline(always)]
unsafe fn lane(epi: &Epilogue, f: usize, n: usize) -> *const i32 {
    debug_assert!(n.is_multiple_of(16) && (n / 16 * field::COUNT + f + 1) * 16 <= epi.lanes.len());
    // SAFETY: the caller meets this function's `# Safety` contract: the lanes are inside.
    unsafe { epi.lanes.as_ptr().add((n / 16 * field::COUNT + f) * 16) }
}

impl Lean16 {
    /// The 16 columns from `n`.
    ///
    /// # Safety
    /// As [`lane`].
    #[inline(always)]
    unsafe fn load(epi: &Epilogue, n: usize) -> Lean16 {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe {
            let ld = |f: usize| _mm512_loadu_si512(lane(epi, f, n) as *const __m512i);
            Lean16 {
                colconst: ld(field::COLCONST),
                m0: ld(field::M0),
                m0_odd: ld(field::M0_ODD),
                rshift: ld(field::RSHIFT),
                pre_lo: ld(field::PRE_LO),
                pre_hi: ld(field::PRE_HI),
                rround: ld(if epi.zout_folded {
                    field::RROUND_Z
                } else {
                    field::RROUND
                }),
            }
        }
    }
}

/// [`finish`] for an epilogue with `zw_zero`, `lshift_zero` and `clamp_first` ([`Lean16`]).
///
/// # Safety
/// As [`finish`]; the epilogue is vector-ready with those flags.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn finish_lean(c: *const i32, o: &TileOut) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let (k0, k1) = (Lean16::load(o.epi, o.n0), Lean16::load(o.epi, o.n0 + 16));
        match (lean_nonneg(o.cols, &k0, &k1), o.epi.zout_folded) {
            (true, true) => finish_lean_as::<true, true>(c, o, k0, k1),
            (true, false) => finish_lean_as::<true, false>(c, o, k0, k1),
            (false, true) => finish_lean_as::<false, true>(c, o, k0, k1),
            (false, false) => finish_lean_as::<false, false>(c, o, k0, k1),
        }
    }
}

/// The row loop of [`finish_lean`], as [`finish_as`]'s.
///
/// # Safety
/// As [`finish_lean`]; `k0`, `k1` are the columns from `o.n0` and `o.n0 + 16`; with `NN`,
/// every stored column's `pre_lo` is at least 0; `ZF == o.epi.zout_folded`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn finish_lean_as<const NN: bool, const ZF: bool>(
    c: *const i32,
    o: &TileOut,
    k0: Lean16,
    k1: Lean16,
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        let (epi, out, ldc, rows, cols) = (o.epi, o.out, o.ldc, o.rows, o.cols);
        let idx = _mm512_loadu_si512(LOW_BYTES.as_ptr() as *const __m512i);
        let mask = prefix_mask(cols.min(NR)) as __mmask32;
        for i in 0..rows {
            let v0 = _mm512_loadu_si512(c.add(i * NR) as *const __m512i);
            let v1 = _mm512_loadu_si512(c.add(i * NR + 16) as *const __m512i);
            let q0 = k0.requant::<NN, ZF>(v0, epi);
            let q1 = k1.requant::<NN, ZF>(v1, epi);
            let bytes = _mm512_castsi512_si256(_mm512_permutex2var_epi8(q0, idx, q1));
            _mm256_mask_storeu_epi8(out.add(i * ldc) as *mut i8, mask, bytes);
        }
    }
}

/// Zeroes the four accumulator tiles `tmm0..tmm3` (one 32 x 32 int32 block).
///
/// # Safety
/// AMX is available and configured ([`ensure_configured`]).
#[inline(always)]
pub(crate) unsafe fn zero_acc() {
    // SAFETY: the caller meets this function's contract; tilezero touches only tile registers.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack)
        )
    };
}

/// Loads the accumulators from the 32 x 32 int32 block at `c` (row-major, `NR` per row).
///
/// # Safety
/// AMX is configured; `c` is readable for `MR * NR` int32.
#[inline(always)]
unsafe fn load_acc(c: *const i32) {
    let c8 = c as *const u8;
    let cs = NR * 4;
    // SAFETY: the caller meets this function's contract; the four 16-row tiles lie in `c`.
    unsafe {
        asm!(
            "tileloadd tmm0, [{c} + {s}*1]",
            "tileloadd tmm1, [{c1} + {s}*1]",
            "tileloadd tmm2, [{c2} + {s}*1]",
            "tileloadd tmm3, [{c3} + {s}*1]",
            c = in(reg) c8,
            c1 = in(reg) c8.add(64),
            c2 = in(reg) c8.add(16 * cs),
            c3 = in(reg) c8.add(16 * cs + 64),
            s = in(reg) cs,
            options(nostack, readonly),
        )
    };
}

/// Stores the accumulators to the 32 x 32 int32 block at `c` (row-major, `NR` per row).
///
/// # Safety
/// AMX is configured; `c` is writable for `MR * NR` int32.
#[inline(always)]
pub(crate) unsafe fn store_acc(c: *mut i32) {
    let c8 = c as *mut u8;
    let cs = NR * 4;
    // SAFETY: the caller meets this function's contract; the four 16-row tiles lie in `c`.
    unsafe {
        asm!(
            "tilestored [{c} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c = in(reg) c8,
            c1 = in(reg) c8.add(64),
            c2 = in(reg) c8.add(16 * cs),
            c3 = in(reg) c8.add(16 * cs + 64),
            s = in(reg) cs,
            options(nostack),
        )
    };
}

/// Stores the accumulators to `st` as [`store_acc`], each followed at once by its reload from
/// `ld` as [`load_acc`]: a reload waits only for its own tile's store.
///
/// # Safety
/// AMX is configured; `st` is writable and `ld` readable for `MR * NR` int32.
#[inline(always)]
unsafe fn store_load_acc(st: *mut i32, ld: *const i32) {
    let (s8, l8) = (st as *mut u8, ld as *const u8);
    let cs = NR * 4;
    // SAFETY: the caller meets this function's contract; the four 16-row tiles lie in `st`
    // and in `ld`.
    unsafe {
        asm!(
            "tilestored [{s0} + {s}*1], tmm0",
            "tileloadd tmm0, [{l0} + {s}*1]",
            "tilestored [{s1} + {s}*1], tmm1",
            "tileloadd tmm1, [{l1} + {s}*1]",
            "tilestored [{s2} + {s}*1], tmm2",
            "tileloadd tmm2, [{l2} + {s}*1]",
            "tilestored [{s3} + {s}*1], tmm3",
            "tileloadd tmm3, [{l3} + {s}*1]",
            s0 = in(reg) s8,
            s1 = in(reg) s8.add(64),
            s2 = in(reg) s8.add(16 * cs),
            s3 = in(reg) s8.add(16 * cs + 64),
            l0 = in(reg) l8,
            l1 = in(reg) l8.add(64),
            l2 = in(reg) l8.add(16 * cs),
            l3 = in(reg) l8.add(16 * cs + 64),
            s = in(reg) cs,
            options(nostack),
        )
    };
}

/// [`store_load_acc`] with the accumulators zeroed instead of reloaded.
///
/// # Safety
/// AMX is configured; `st` is writable for `MR * NR` int32.
#[inline(always)]
unsafe fn store_zero_acc(st: *mut i32) {
    let s8 = st as *mut u8;
    let cs = NR * 4;
    // SAFETY: the caller meets this function's contract; the four 16-row tiles lie in `st`.
    unsafe {
        asm!(
            "tilestored [{s0} + {s}*1], tmm0",
            "tilezero tmm0",
            "tilestored [{s1} + {s}*1], tmm1",
            "tilezero tmm1",
            "tilestored [{s2} + {s}*1], tmm2",
            "tilezero tmm2",
            "tilestored [{s3} + {s}*1], tmm3",
            "tilezero tmm3",
            s0 = in(reg) s8,
            s1 = in(reg) s8.add(64),
            s2 = in(reg) s8.add(16 * cs),
            s3 = in(reg) s8.add(16 * cs + 64),
            s = in(reg) cs,
            options(nostack),
        )
    };
}

/// One group of 64 codes into the accumulators: rows `a + r * lda` (`r < 32`, two 16-row A
/// tiles) against the packed B group `b` (64 x 32, two 16-column B tiles). `SIGNED` multiplies
/// the rows as s8 (`tdpbssd`), else as u8 (`tdpbusd`).
///
/// # Safety
/// AMX is configured; the 64 bytes at `a + r * lda` are readable for every `r < 32`, and `b`
/// holds one packed group (`KG * NR` bytes).
#[inline(always)]
pub(crate) unsafe fn step<const SIGNED: bool>(a: *const u8, lda: usize, b: *const u8) {
    let sb = NR * 4;
    // SAFETY: the caller meets this function's contract; the loads stay in the rows and group.
    unsafe {
        if SIGNED {
            asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbssd tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tdpbssd tmm1, tmm4, tmm7",
                "tdpbssd tmm2, tmm5, tmm6",
                "tdpbssd tmm3, tmm5, tmm7",
                a0 = in(reg) a,
                a1 = in(reg) a.add(16 * lda),
                b0 = in(reg) b,
                b1 = in(reg) b.add(64),
                sa = in(reg) lda,
                sb = in(reg) sb,
                options(nostack, readonly),
            )
        } else {
            asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tdpbusd tmm1, tmm4, tmm7",
                "tdpbusd tmm2, tmm5, tmm6",
                "tdpbusd tmm3, tmm5, tmm7",
                a0 = in(reg) a,
                a1 = in(reg) a.add(16 * lda),
                b0 = in(reg) b,
                b1 = in(reg) b.add(64),
                sa = in(reg) lda,
                sb = in(reg) sb,
                options(nostack, readonly),
            )
        }
    };
}

/// The operand tiles of one group for [`mul4`]: [`step`]'s (u8 rows) on a packed A sub-panel
/// (rows `KG` apart) that is read once per B sub-panel. A is loaded with the non-temporal hint
/// (`tileloaddt1`), so that its stream does not evict the B sub-panel, which every row tile of
/// the chunk reads from L1.
///
/// # Safety
/// AMX is configured; the 64 bytes at `a + r * KG` are readable for every `r < 32`, and `b`
/// holds one packed group (`KG * NR` bytes).
#[inline(always)]
unsafe fn load_ab(a: *const u8, b: *const u8) {
    let sb = NR * 4;
    // SAFETY: the caller meets this function's contract; the loads stay in the rows and group.
    unsafe {
        asm!(
            "tileloaddt1 tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm6, [{b0} + {sb}*1]",
            "tileloadd tmm7, [{b1} + {sb}*1]",
            "tileloaddt1 tmm5, [{a1} + {sa}*1]",
            a0 = in(reg) a,
            a1 = in(reg) a.add(16 * KG),
            b0 = in(reg) b,
            b1 = in(reg) b.add(64),
            sa = in(reg) KG,
            sb = in(reg) sb,
            options(nostack, readonly),
        )
    };
}

/// [`mul4`] with the next group's operands ([`load_ab`] at `a`, `b`) loaded right after each
/// operand tile's last product: the tile unit takes them in order, and a load placed after all
/// four products would start one product later.
///
/// # Safety
/// As [`load_ab`] for `a` and `b`.
#[inline(always)]
unsafe fn mul4_load_next(a: *const u8, b: *const u8) {
    let sb = NR * 4;
    // SAFETY: the caller meets this function's contract; the loads stay in the rows and group.
    unsafe {
        asm!(
            "tdpbusd tmm0, tmm4, tmm6",
            "tdpbusd tmm1, tmm4, tmm7",
            "tileloaddt1 tmm4, [{a0} + {sa}*1]",
            "tdpbusd tmm2, tmm5, tmm6",
            "tileloadd tmm6, [{b0} + {sb}*1]",
            "tdpbusd tmm3, tmm5, tmm7",
            "tileloadd tmm7, [{b1} + {sb}*1]",
            "tileloaddt1 tmm5, [{a1} + {sa}*1]",
            a0 = in(reg) a,
            a1 = in(reg) a.add(16 * KG),
            b0 = in(reg) b,
            b1 = in(reg) b.add(64),
            sa = in(reg) KG,
            sb = in(reg) sb,
            options(nostack, readonly),
        )
    };
}

/// The four products of one group on the operands [`load_ab`] loaded.
///
/// # Safety
/// AMX is configured.
#[inline(always)]
unsafe fn mul4() {
    // SAFETY: the caller meets this function's contract; only tile registers change.
    unsafe {
        asm!(
            "tdpbusd tmm0, tmm4, tmm6",
            "tdpbusd tmm1, tmm4, tmm7",
            "tdpbusd tmm2, tmm5, tmm6",
            "tdpbusd tmm3, tmm5, tmm7",
            options(nostack, nomem),
        )
    };
}

/// A 32 x 32 tile of a convolution whose 32 rows are read in place at one stride: step `s`
/// multiplies, for each row `r`, the 64 codes at `a + offs[s] + r * lda` by group `s` of the
/// packed B panel `b`; the sums are stored to `c` (`MR x NR` int32, row-major). A tile load
/// reads its 16 rows at any stride, overlapping ones included, so a stride-1 convolution's
/// rows (adjacent pixels of a padded image, `lda` its channels) need no packing.
///
/// # Safety
/// AMX is available; for every step and row the 64 bytes at `a + offs[s] + r * lda` are
/// readable; `b` holds `offs.len()` groups; `c` is valid for `MR * NR` int32.
pub(crate) unsafe fn tile_strided(
    a: *const u8,
    lda: usize,
    offs: &[usize],
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        ensure_configured();
        zero_acc();
        for (s, &off) in offs.iter().enumerate() {
            step::<false>(a.add(off), lda, (b as *const u8).add(s * KG * NR));
        }
        store_acc(c);
    }
}

impl crate::gemm::StridedKernel for Amx {
    const MR: usize = MR;
    const NR: usize = NR;
    const KG: usize = KG;
    /// # Safety
    /// As [`crate::gemm::StridedKernel::canon_row`].
    unsafe fn canon_row<T: crate::gemm::Code8>(
        codes: &[T],
        c: usize,
        dst: &mut [u8],
        sums: &mut [i32],
    ) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body
        // (AMX implies the AVX-512 the VNNI tier's row mapping uses).
        unsafe {
            <crate::isa::avx512vnni::Vnni as crate::gemm::ImplicitKernel>::canon_row(
                codes, c, dst, sums,
            )
        }
    }
    /// # Safety
    /// As [`crate::gemm::StridedKernel::widen_3_4`].
    unsafe fn widen_3_4<T: crate::gemm::Code8>(
        codes: &[T],
        zc_code: i32,
        dst: &mut [u8],
        sums: &mut [i32],
    ) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body
        // (AMX implies the AVX-512 VNNI the widening uses).
        unsafe { crate::isa::avx512vnni::widen_3_4(codes, zc_code, dst, sums) }
    }
    /// # Safety
    /// As [`crate::gemm::StridedKernel::tile`].
    unsafe fn tile(a: *const u8, lda: usize, offs: &[usize], b: *const i8, c: *mut i32) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { tile_strided(a, lda, offs, b, c) }
    }
    /// # Safety
    /// As [`crate::gemm::StridedKernel::finish`].
    unsafe fn finish(c: *const i32, o: &TileOut) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { finish(c, o) }
    }
    /// # Safety
    /// As [`crate::gemm::StridedKernel::end_task`].
    unsafe fn end_task() {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { release() }
    }
}

/// The measured AMX-INT8 peak of one core ([`amx_peak`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AmxPeak {
    /// Int8 operations (two per multiply-add) per second, in billions, of `tdpbusd` on tile
    /// registers alone.
    pub gops: f64,
    /// `tdpbusd` per core clock cycle at the clock measured under the AMX load: 1/16 when the
    /// unit takes one every 16 cycles (1,024 multiply-adds a cycle).
    pub tdp_per_cycle: f64,
    /// The core clock (GHz) from a dependent add chain before the AMX loop, interleaved with
    /// `tdpbusd` (the clock while the tile unit is busy), and after it.
    pub ghz_before: f64,
    pub ghz_under_amx: f64,
    pub ghz_after: f64,
}

/// Operations of one `tdpbusd`: a 16 x 16 int32 tile, 64 products each, two ops per product.
const TDP_OPS: f64 = 16.0 * 16.0 * 64.0 * 2.0;
/// Dependent adds per iteration of the clock loops.
const CHAIN: u64 = 128;

/// The AMX peak measured on the calling thread, or `None` without AMX: `iters` iterations of
/// four independent `tdpbusd` on tiles loaded once (no memory traffic in the loop), best of
/// five timings; the clock from a chain of dependent adds (one a cycle) alone before and after,
/// and interleaved with the same `tdpbusd` (the chain, twice as long as the multiplies, sets
/// the pace, so its rate is the clock while the tile unit is busy).
pub fn amx_peak(iters: u64) -> Option<AmxPeak> {
    if !available() {
        return None;
    }
    let iters = iters.max(1);
    let best = |f: &dyn Fn()| {
        (0..5)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    // Tiles hold arbitrary nonzero codes: all-zero operands may draw less power than real ones.
    let mut data = [0u8; 1024];
    let mut x = 0x9E37_79B9u32;
    for d in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *d = x as u8;
    }
    let chain_iters = iters * 64 / CHAIN;
    // SAFETY: AMX is available (checked above); the loops touch only registers, `data` is
    // 1 KiB, enough for a 16 x 64-byte tile at stride 64.
    unsafe {
        ensure_configured();
        load_peak_operands(data.as_ptr());
        let before = best(&|| add_chain(chain_iters));
        let t_amx = best(&|| tdp_loop(iters));
        let t_mixed = best(&|| tdp_chain_loop(chain_iters));
        let after = best(&|| add_chain(chain_iters));
        release();
        let adds = (chain_iters * CHAIN) as f64;
        let ghz_under_amx = adds / t_mixed / 1e9;
        let tdp = (iters * 4) as f64;
        Some(AmxPeak {
            gops: tdp * TDP_OPS / t_amx / 1e9,
            tdp_per_cycle: tdp / (t_amx * ghz_under_amx * 1e9),
            ghz_before: adds / before / 1e9,
            ghz_under_amx,
            ghz_after: adds / after / 1e9,
        })
    }
}

/// Loads `tmm4..tmm7` (the A and B operands of [`tdp_loop`]) from `p` and zeroes `tmm0..tmm3`.
///
/// # Safety
/// AMX is configured; `p` is readable for 1 KiB.
unsafe fn load_peak_operands(p: *const u8) {
    // SAFETY: the caller meets this function's contract; each load reads 16 rows of 64 bytes.
    unsafe {
        asm!(
            "tileloadd tmm4, [{p} + {s}*1]",
            "tileloadd tmm5, [{p} + {s}*1]",
            "tileloadd tmm6, [{p} + {s}*1]",
            "tileloadd tmm7, [{p} + {s}*1]",
            p = in(reg) p,
            s = in(reg) 64usize,
            options(nostack, readonly),
        );
        zero_acc();
    }
}

/// `iters` rounds of four independent `tdpbusd` on the tile registers.
///
/// # Safety
/// AMX is configured.
#[inline(never)]
unsafe fn tdp_loop(iters: u64) {
    // SAFETY: the caller meets this function's contract; only tile registers and `n` change.
    unsafe {
        asm!(
            "2:",
            "tdpbusd tmm0, tmm4, tmm6",
            "tdpbusd tmm1, tmm4, tmm7",
            "tdpbusd tmm2, tmm5, tmm6",
            "tdpbusd tmm3, tmm5, tmm7",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            options(nostack, nomem),
        );
    }
}

/// `iters` rounds of [`CHAIN`] dependent adds.
#[inline(never)]
fn add_chain(iters: u64) {
    // SAFETY: only two general registers change.
    unsafe {
        asm!(
            "2:",
            ".rept 128",
            "add {x}, {y}",
            ".endr",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            x = inout(reg) 0u64 => _,
            y = in(reg) 1u64,
            options(nostack, nomem),
        );
    }
}

/// [`add_chain`] with four `tdpbusd` (64 cycles of the tile unit) every [`CHAIN`] adds.
///
/// # Safety
/// AMX is configured.
#[inline(never)]
unsafe fn tdp_chain_loop(iters: u64) {
    // SAFETY: the caller meets this function's contract; only registers change.
    unsafe {
        asm!(
            "2:",
            "tdpbusd tmm0, tmm4, tmm6",
            ".rept 32",
            "add {x}, {y}",
            ".endr",
            "tdpbusd tmm1, tmm4, tmm7",
            ".rept 32",
            "add {x}, {y}",
            ".endr",
            "tdpbusd tmm2, tmm5, tmm6",
            ".rept 32",
            "add {x}, {y}",
            ".endr",
            "tdpbusd tmm3, tmm5, tmm7",
            ".rept 32",
            "add {x}, {y}",
            ".endr",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            x = inout(reg) 0u64 => _,
            y = in(reg) 1u64,
            options(nostack, nomem),
        );
    }
}
