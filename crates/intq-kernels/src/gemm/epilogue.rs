//! The fused output stage as per-column constants, after gemmlowp's output pipeline: what every
//! tier's tiles finish their int32 accumulators with.
//!
//! The [`Epilogue`] is tier-neutral: the columns and the facts that hold for all of them. A tier
//! that reads the columns in another layout (the x86 tiers read interleaved vectors, see
//! [`Epilogue::lay_out`]) derives it once, when the plan is made, through its kernel table.

use crate::{Multipliers, OutputStage};
use intq_quant::QuantizedMultiplier;

/// The per-column constants of the output stage, padded to whole panels (padding columns are
/// computed and never stored).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Epilogue {
    /// `bias + K Z_a' Z_b' - Z_a' Σw' - A_BIAS Σw'`, wrapping ([`super::Kernel::A_BIAS`]: the
    /// accumulators the tier hands over are `Σ(a' + A_BIAS)w'`).
    pub colconst: Vec<i32>,
    /// `Z_b'` per column (multiplies the row sum).
    pub zw: Vec<i32>,
    /// Every `zw` is 0 (symmetric int8 weights, TFLite's scheme): the row-sum term vanishes
    /// and the tiles skip its multiply.
    pub zw_zero: bool,
    pub m0: Vec<i32>,
    pub lshift: Vec<i32>,
    /// Every `lshift` is 0 (every multiplier below 1, the usual case): the tiles skip the shift.
    pub lshift_zero: bool,
    pub rshift: Vec<i32>,
    /// The clamp can move before RoundingDivideByPOT in every column: the divide is monotone,
    /// so clamping its input to `[pre_lo, pre_hi]` (the widest range it maps into `[lo, hi]`)
    /// and dividing gives the clamped result; and on that range `x + 2^(e-1)` cannot overflow,
    /// so the divide is one rounded arithmetic shift, `(x + rround + (x >> 31)) >> e` with
    /// `rround = 2^(e-1)`. True when every column has a right shift of at least 1 and such
    /// bounds.
    pub clamp_first: bool,
    pub pre_lo: Vec<i32>,
    pub pre_hi: Vec<i32>,
    pub rround: Vec<i32>,
    /// `clamp_first`, and in every column `x + rround + (x >> 31) + (zout << e)` fits int32 on
    /// the clamped range: adding a multiple of `2^e` before the arithmetic shift adds `zout`
    /// after it, so a tier may take the zero point into the rounding constant
    /// ([`field::RROUND_Z`]) and skip its add.
    pub zout_folded: bool,
    pub mult: Vec<QuantizedMultiplier>,
    pub zout: i32,
    pub cmin: i32,
    pub cmax: i32,
    /// `cmin - zout`, `cmax - zout`: the clamp moved before the zero-point add.
    pub lo: i32,
    pub hi: i32,
    /// The vector epilogue's preconditions hold (m0 >= 0, shifts in -31..=31, lo/hi in i32);
    /// otherwise the tiles finish with [`Epilogue::scalar`].
    pub vector_ok: bool,
    /// The columns interleaved for the tier that runs this epilogue ([`Epilogue::lay_out`]),
    /// or empty where the tier reads the plain columns.
    pub lanes: Vec<i32>,
}

/// The fields of [`Epilogue::lanes`], in order within a group of columns.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) mod field {
    pub const COLCONST: usize = 0;
    pub const ZW: usize = 1;
    pub const M0: usize = 2;
    /// `m0` of the odd columns moved to the even ones, where `vpmuldq` reads them.
    pub const M0_ODD: usize = 3;
    pub const LSHIFT: usize = 4;
    pub const RSHIFT: usize = 5;
    /// `2^rshift - 1` and half of it: RoundingDivideByPOT's mask and threshold, made once
    /// rather than three vector ops per output vector.
    pub const RMASK: usize = 6;
    pub const RHALF: usize = 7;
    pub const PRE_LO: usize = 8;
    pub const PRE_HI: usize = 9;
    pub const RROUND: usize = 10;
    /// `rround + (zout << rshift)`: the output zero point added before the divide's shift
    /// (see [`Epilogue::zout_folded`](super::Epilogue::zout_folded)).
    pub const RROUND_Z: usize = 11;
    /// Fields per group.
    pub const COUNT: usize = 12;
}

impl Epilogue {
    /// `np` identity columns (no bias, multiplier 1) with `stage`'s zero point and clamp;
    /// the caller sets the columns, then calls [`set_clamp`](Self::set_clamp) last.
    pub(crate) fn empty(np: usize, stage: &OutputStage) -> Epilogue {
        Epilogue {
            colconst: vec![0; np],
            zw: vec![0; np],
            zw_zero: false,
            m0: vec![0; np],
            lshift: vec![0; np],
            lshift_zero: true,
            rshift: vec![0; np],
            clamp_first: false,
            pre_lo: vec![0; np],
            pre_hi: vec![0; np],
            rround: vec![0; np],
            zout_folded: false,
            mult: vec![QuantizedMultiplier::ONE; np],
            zout: stage.output_zero_point,
            cmin: stage.clamp_min,
            cmax: stage.clamp_max,
            lo: 0,
            hi: 0,
            vector_ok: true,
            lanes: Vec::new(),
        }
    }

    /// An epilogue for complete accumulators (no decomposition, as depthwise sums them):
    /// `colconst` is the bias alone; `n` columns padded to whole groups of `pad`.
    pub(crate) fn plain(n: usize, pad: usize, stage: &OutputStage) -> Epilogue {
        assert!(
            stage.clamp_min <= stage.clamp_max,
            "empty clamp {}..={}",
            stage.clamp_min,
            stage.clamp_max
        );
        if let Some(b) = stage.bias {
            assert_eq!(b.len(), n, "bias has {} entries for {n} channels", b.len());
        }
        if let Multipliers::PerChannel(ms) = stage.multipliers {
            assert_eq!(ms.len(), n, "{} multipliers for {n} channels", ms.len());
        }
        let mut e = Epilogue::empty(n.div_ceil(pad) * pad, stage);
        e.zw_zero = true;
        for c in 0..n {
            e.colconst[c] = stage.bias.map_or(0, |b| b[c]);
            let m = match stage.multipliers {
                Multipliers::PerTensor(m) => m,
                Multipliers::PerChannel(ms) => ms[c],
            };
            e.set_multiplier(c, m);
        }
        e.pad_columns(n);
        e.set_clamp();
        e
    }

    /// Gives the padding columns from `n` on column 0's multiplier, before
    /// [`set_clamp`](Self::set_clamp): their results are never stored, and with the identity
    /// columns' shift of 0 they would turn `clamp_first` off for every column.
    pub(crate) fn pad_columns(&mut self, n: usize) {
        if n > 0 {
            let m = self.mult[0];
            for c in n..self.mult.len() {
                self.set_multiplier(c, m);
            }
        }
    }

    /// Column `c`'s multiplier; the vector epilogue is off unless `m0 >= 0` (so the doubling
    /// high multiply never saturates) and the shift is one the reference handles (-31..=31).
    pub(crate) fn set_multiplier(&mut self, c: usize, m: QuantizedMultiplier) {
        self.mult[c] = m;
        self.m0[c] = m.m0;
        self.lshift[c] = m.shift.max(0);
        self.lshift_zero &= m.shift <= 0;
        self.rshift[c] = (-m.shift).max(0);
        if m.m0 < 0 || !(-31..=31).contains(&m.shift) {
            self.vector_ok = false;
        }
    }

    /// The last step of making an epilogue, once every column is set: the clamp moved before
    /// the zero-point add (off the vector path if that leaves int32), then before the divide
    /// where every column allows it (`clamp_first`).
    pub(crate) fn set_clamp(&mut self) {
        let lo = self.cmin as i64 - self.zout as i64;
        let hi = self.cmax as i64 - self.zout as i64;
        match (i32::try_from(lo), i32::try_from(hi)) {
            (Ok(lo), Ok(hi)) => {
                self.lo = lo;
                self.hi = hi;
            }
            _ => self.vector_ok = false,
        }
        self.clamp_first = self.vector_ok && self.lo <= self.hi;
        // The bounds depend on the column only through its shift: one bisection per shift.
        let mut by_shift: [Option<Option<(i32, i32)>>; 32] = [None; 32];
        let (lo, hi) = (self.lo, self.hi);
        for c in 0..self.rshift.len() {
            let e = self.rshift[c];
            let bounds = match usize::try_from(e) {
                Ok(i @ 1..=31) => *by_shift[i].get_or_insert_with(|| divide_preimage(e, lo, hi)),
                _ => None,
            };
            match bounds {
                Some((plo, phi)) => {
                    (self.pre_lo[c], self.pre_hi[c], self.rround[c]) = (plo, phi, 1 << (e - 1))
                }
                None => self.clamp_first = false,
            }
        }
        let z = self.zout as i64;
        self.zout_folded = self.clamp_first
            && (0..self.rshift.len()).all(|c| {
                let shifted = z << self.rshift[c];
                let r = self.rround[c] as i64 + shifted;
                self.pre_lo[c] as i64 - 1 + r >= i32::MIN as i64
                    && self.pre_hi[c] as i64 + r <= i32::MAX as i64
            });
    }

    /// Lays the columns out for a tier that loads `width` columns per vector: per group of
    /// `width` columns, every [`field`] in order, `width` values each; group `g`'s field `f`
    /// at `(g * field::COUNT + f) * width`. One base pointer serves every load; with a pointer
    /// per field the output stage spilled them to the stack and reloaded one before each load.
    pub(crate) fn lay_out(&mut self, width: usize) {
        let np = self.m0.len();
        assert!(
            np.is_multiple_of(width),
            "epilogue of {np} columns in groups of {width}"
        );
        let m0_odd: Vec<i32> = (0..np)
            .map(|c| {
                if c % 2 == 0 && c + 1 < np {
                    self.m0[c + 1]
                } else {
                    0
                }
            })
            .collect();
        let rmask: Vec<i32> = self
            .rshift
            .iter()
            .map(|&e| ((1i64 << e.clamp(0, 31)) - 1) as i32)
            .collect();
        let rhalf: Vec<i32> = rmask.iter().map(|&m| m >> 1).collect();
        // Read only where `zout_folded` (then it fits); otherwise any value.
        let rround_z: Vec<i32> = (0..np)
            .map(|c| {
                let shifted = (self.zout as i64) << self.rshift[c].clamp(0, 31);
                (self.rround[c] as i64).wrapping_add(shifted) as i32
            })
            .collect();
        let fields: [&[i32]; field::COUNT] = [
            &self.colconst,
            &self.zw,
            &self.m0,
            &m0_odd,
            &self.lshift,
            &self.rshift,
            &rmask,
            &rhalf,
            &self.pre_lo,
            &self.pre_hi,
            &self.rround,
            &rround_z,
        ];
        let mut lanes = Vec::with_capacity(np * field::COUNT);
        for g in 0..np / width {
            for f in fields {
                lanes.extend_from_slice(&f[g * width..(g + 1) * width]);
            }
        }
        self.lanes = lanes;
    }

    /// The output code of the tier's accumulator `raw = Σ(a' + A_BIAS)w'` at column `n`, exactly
    /// as the reference's `OutputStage::apply` computes it.
    #[inline(always)]
    pub fn scalar(&self, raw: i32, rowsum: i32, n: usize) -> u8 {
        let acc = raw
            .wrapping_add(self.colconst[n])
            .wrapping_sub(self.zw[n].wrapping_mul(rowsum));
        self.mult[n]
            .apply(acc)
            .saturating_add(self.zout)
            .clamp(self.cmin, self.cmax) as u8
    }

    /// Finishes a tile of raw accumulators (`acc[r * nr + c]`) with the scalar epilogue.
    ///
    /// # Safety
    /// `out` meets [`super::TileOut`]'s contract.
    #[inline(always)]
    pub unsafe fn finish_scalar(&self, acc: &[i32], nr: usize, out: &super::TileOut) {
        for r in 0..out.rows {
            // SAFETY: `rowsum` holds the tile's rows; the store is one of `out`'s.
            unsafe {
                let rs = *out.rowsum.add(r);
                for c in 0..out.cols {
                    *out.out.add(r * out.ldc + c) = self.scalar(acc[r * nr + c], rs, out.n0 + c);
                }
            }
        }
    }
}

/// The widest `[a, b]` that RoundingDivideByPOT by `e` maps into `[lo, hi]`, when it reaches
/// both ends (it is monotone, so clamping to `[a, b]` before it is clamping to `[lo, hi]`
/// after) and `b + 2^(e-1)` fits int32 (so the divide is one rounded shift on that range).
fn divide_preimage(e: i32, lo: i32, hi: i32) -> Option<(i32, i32)> {
    use intq_quant::rounding_divide_by_pot as rdbpot;
    // The least x with rdbpot(x) >= v, by bisection over the monotone divide.
    let least = |v: i32| -> Option<i64> {
        if rdbpot(i32::MAX, e) < v {
            return None;
        }
        let (mut a, mut b) = (i32::MIN as i64, i32::MAX as i64);
        while a < b {
            let m = a + (b - a) / 2;
            if rdbpot(m as i32, e) >= v {
                b = m;
            } else {
                a = m + 1;
            }
        }
        Some(a)
    };
    let a = least(lo)?;
    // The greatest x with rdbpot(x) <= hi: one below the least that passes hi.
    let b = match hi.checked_add(1).and_then(least) {
        Some(x) => x - 1,
        None => i32::MAX as i64,
    };
    let fits = b + (1i64 << (e - 1)) <= i32::MAX as i64;
    (a <= b && fits).then_some((a as i32, b as i32))
}

#[cfg(test)]
mod clamp_first_tests {
    use super::divide_preimage;
    use intq_quant::rounding_divide_by_pot as rdbpot;

    /// The clamp moved before RoundingDivideByPOT: for every shift 1..=31 and clamps from
    /// narrow to the whole int32 range, clamping to the preimage then dividing (as the
    /// one-shift form `(x + 2^(e-1) + (x >> 31)) >> e`) equals dividing then clamping, on the
    /// int32 limits, around both bounds, around 0 and on random values; and the bounds are
    /// refused where `b + 2^(e-1)` would overflow.
    #[test]
    fn clamp_then_divide_equals_divide_then_clamp() {
        let mut rng = intq_testutil::TestRng::new(0x853c_49e6_748f_ea9b);
        let mut next = move || rng.next_u64();
        let mut checked = 0;
        for e in 1..=31 {
            let mut clamps = vec![
                (-128, 127),
                (0, 255),
                (-383, 0),
                (i32::MIN, i32::MAX),
                (5, 5),
            ];
            for _ in 0..20 {
                let (a, b) = ((next() % 1201) as i32 - 600, (next() % 1201) as i32 - 600);
                clamps.push((a.min(b), a.max(b)));
            }
            for (lo, hi) in clamps {
                let Some((a, b)) = divide_preimage(e, lo, hi) else {
                    // Refused only where the divide never reaches lo or the preimage's top
                    // is near the int32 limit (large shifts, wide clamps): never for code
                    // clamps under the shifts real layers have.
                    assert!(
                        rdbpot(i32::MAX, e) < lo || e > 20 || hi > 1 << 20,
                        "e {e} clamp {lo}..={hi} refused"
                    );
                    continue;
                };
                assert!(b as i64 + (1i64 << (e - 1)) <= i32::MAX as i64);
                let mut xs = vec![i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX - 1, i32::MAX];
                for d in -2..=2i64 {
                    for base in [a as i64, b as i64] {
                        xs.push((base + d).clamp(i32::MIN as i64, i32::MAX as i64) as i32);
                    }
                }
                xs.extend((0..50).map(|_| next() as i32 >> (next() % 32)));
                for x in xs {
                    let want = rdbpot(x, e).clamp(lo, hi);
                    let c = x.clamp(a, b);
                    let shifted = (c + (1 << (e - 1)) + (c >> 31)) >> e;
                    assert_eq!(
                        shifted, want,
                        "x {x} e {e} clamp {lo}..={hi} bounds {a}..={b}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000);
    }
}
