//! Fully connected layers at a batch of a few rows on the AVX-512 tiers: every row against one
//! pass over each packed weight panel with `vpdpbusd` (`isa::avx512vnni::gemv_tile`), where a
//! GEMM tile of 8 rows (VNNI) or 32 rows (AMX) would multiply mostly padding.
//!
//! The panels are read in the GEMM's own layout (`NR` columns x 4 codes per row, K padded to
//! the table's `kg`), so a plan packed for the GEMM runs here unchanged.

use super::{parallel_for, reserve_scratch, with_scratch, Code8, Need, PreparedGemm, RowSource};
use super::{SendPtr, TileOut};
use crate::isa::avx512vnni::{self as vnni, canon_codes};

/// Batches of at most this many rows take [`gemv`].
pub(crate) const MAX_ROWS: usize = 4;

/// `out` (`m x n`, `1 <= m <= MAX_ROWS`) from the rows `row` hands over, against `b`, the plan's
/// panels in the VNNI layout; the panels are split over the threads.
///
/// # Panics
/// When `m` is outside `1..=MAX_ROWS` or `b` is shorter than the plan's panels.
pub(super) fn gemv<T: Code8>(
    g: &PreparedGemm,
    b: &[i8],
    m: usize,
    out: &mut [u8],
    threads: usize,
    row: &RowSource<T>,
) {
    assert!((1..=MAX_ROWS).contains(&m), "gemv: {m} rows");
    let (n, k) = (g.n, g.k);
    let kg = g.kernels.kg;
    let kp = k.div_ceil(kg).max(1) * kg;
    let steps = kp / vnni::KG;
    let panels = n.div_ceil(vnni::NR);
    assert!(b.len() >= panels * kp * vnni::NR, "gemv: packed weights");
    // Each task maps the rows itself: m x k codes against its panels' 32 x kp.
    let tasks = threads.max(1).min(panels);
    let per_task = panels.div_ceil(tasks);
    let tasks = panels.div_ceil(per_task);
    let need = Need::default().add::<u8>(m * kp).add::<i32>(m);
    reserve_scratch(threads, 0, need.0);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let task = |t: usize| {
        with_scratch(0, need.0, |scratch| {
            let rows = scratch.take::<u8>(m * kp);
            let sums = scratch.take::<i32>(m);
            for (r, sum) in sums.iter_mut().enumerate() {
                let dst = &mut rows[r * kp..(r + 1) * kp];
                let (mut k0, mut s) = (0usize, 0u32);
                row(r, &mut |seg: &[T]| {
                    assert!(k0 + seg.len() <= k, "gemm: a row source overran K");
                    // SAFETY: the tier has AVX-512 (checked at prepare); `dst` holds the
                    // segment from k0 (checked above).
                    s = s.wrapping_add(unsafe { canon_codes(seg, &mut dst[k0..]) });
                    k0 += seg.len();
                });
                *sum = s as i32;
            }
            // Codes past K keep whatever the scratch held: the packed weights are zero there.
            let op = out_ptr;
            for p in t * per_task..((t + 1) * per_task).min(panels) {
                let n0 = p * vnni::NR;
                let o = TileOut {
                    rowsum: sums.as_ptr(),
                    epi: &g.epi,
                    n0,
                    // SAFETY: column n0 < n of row 0 of `out`.
                    out: unsafe { op.0.add(n0) },
                    ldc: n,
                    rows: m,
                    cols: vnni::NR.min(n - n0),
                };
                let (a, bp) = (rows.as_ptr(), b[p * kp * vnni::NR..].as_ptr());
                // SAFETY: the tier has AVX-512 VNNI (checked at prepare); each of the m rows
                // holds kp codes; the panel holds `steps` groups; `sums` holds the m row sums;
                // the stores stay in rows 0..m and columns n0..n0 + cols of `out`, disjoint
                // between tasks.
                unsafe {
                    match m {
                        1 => vnni::gemv_tile::<1>(a, kp, bp, steps, &o),
                        2 => vnni::gemv_tile::<2>(a, kp, bp, steps, &o),
                        3 => vnni::gemv_tile::<3>(a, kp, bp, steps, &o),
                        _ => vnni::gemv_tile::<4>(a, kp, bp, steps, &o),
                    }
                }
            }
        });
    };
    parallel_for(threads, tasks, &task);
}
