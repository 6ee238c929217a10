//! AMX tiles that read a 1x1 convolution's activations in place: the pixels of an NHWC input are
//! the GEMM's rows, `in_c` bytes apart, and a tile load takes 16 rows at any stride, so no A
//! panel is packed and no canonical copy is made.
//!
//! int8 activations are multiplied as they are, signed, with `tdpbssd` (s8 x s8); the plan
//! adds `128 Σw'` to each column's constant, since `Σ(a + 128)w' = Σ a w' + 128 Σw'` modulo
//! 2^32 (docs/spec.md §4.13's canonical operands), so the output stage sees the canonical sums.
//! uint8 activations are canonical already and take `tdpbusd`. Each tile row reads whole 64-code
//! groups: past a pixel's `in_c` codes it reads the next pixels', which meet the zero weights
//! the packed filter is padded with.

use crate::gemm::{PointwiseKernel, TileOut};
use crate::isa::amx::{self, Amx};

/// The 32 x 32 sums of rows `a + r * lda` (`r < 32`) over `groups` groups of 64 codes against
/// the packed B panel `b`, stored to `c` (row-major, 32 int32 per row). `SIGNED` multiplies the
/// rows as s8 (`tdpbssd`), else as u8 (`tdpbusd`).
///
/// # Safety
/// AMX is available; for every row the `64 * groups` bytes at `a + r * lda` are readable; `b`
/// holds `groups` groups; `c` is valid for 32 x 32 int32.
unsafe fn tile<const SIGNED: bool>(
    a: *const u8,
    lda: usize,
    groups: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
    unsafe {
        amx::ensure_configured();
        amx::zero_acc();
        for g in 0..groups {
            amx::step::<SIGNED>(a.add(g * 64), lda, (b as *const u8).add(g * 64 * 32));
        }
        amx::store_acc(c);
    }
}

impl PointwiseKernel for Amx {
    const MR: usize = 32;
    const NR: usize = 32;
    const KG: usize = amx::KG;
    /// # Safety
    /// As [`PointwiseKernel::tile`].
    unsafe fn tile(
        a: *const u8,
        lda: usize,
        groups: usize,
        signed: bool,
        b: *const i8,
        c: *mut i32,
    ) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe {
            if signed {
                tile::<true>(a, lda, groups, b, c)
            } else {
                tile::<false>(a, lda, groups, b, c)
            }
        }
    }
    /// # Safety
    /// As [`PointwiseKernel::finish`].
    unsafe fn finish(c: *const i32, o: &TileOut) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { amx::finish(c, o) }
    }
    /// # Safety
    /// As [`PointwiseKernel::end_task`].
    unsafe fn end_task() {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe { amx::release() }
    }
}
