//! The portable tier: the packed GEMM's micro-kernel in plain Rust (any CPU), the layout of the
//! VNNI tier (groups of 4 k) with a scalar epilogue.

use crate::gemm::{Kernel, Tile, TileOut};

pub(crate) struct Portable;

const MR: usize = 4;
const NR: usize = 16;
const KG: usize = 4;

impl Kernel for Portable {
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
    /// # Safety
    /// As [`Kernel::tile`].
    unsafe fn tile(t: &Tile<u8, i8>, o: &TileOut) {
        // SAFETY: the caller meets this function's `# Safety` contract, which covers the body.
        unsafe {
            let (c, first, last, groups, a, b) = (t.c, t.first, t.last, t.groups, t.a, t.b);
            let a = std::slice::from_raw_parts(a, groups * MR * KG);
            let b = std::slice::from_raw_parts(b, groups * NR * KG);
            let mut acc = [0i32; MR * NR];
            if !first {
                acc.copy_from_slice(std::slice::from_raw_parts(c, MR * NR));
            }
            for (ag, bg) in a.chunks_exact(MR * KG).zip(b.chunks_exact(NR * KG)) {
                for i in 0..MR {
                    let ai = &ag[i * KG..(i + 1) * KG];
                    for c in 0..NR {
                        let bc = &bg[c * KG..(c + 1) * KG];
                        // A group's 4 products cannot overflow (4 * 255 * 128 < 2^31); the running
                        // sum wraps like the reference's.
                        let s: i32 = (0..KG).map(|j| ai[j] as i32 * bc[j] as i32).sum();
                        acc[i * NR + c] = acc[i * NR + c].wrapping_add(s);
                    }
                }
            }
            if !last {
                std::slice::from_raw_parts_mut(c, MR * NR).copy_from_slice(&acc);
                return;
            }
            o.epi.finish_scalar(&acc, NR, o);
        }
    }
}
