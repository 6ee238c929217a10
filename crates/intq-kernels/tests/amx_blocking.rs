//! Large GEMMs around the K block boundaries of the blocked kernels (sub-panels of 1,024 k
//! on AMX where M and N are both 512 or more, 512 k elsewhere), against the reference bit for
//! bit: partial sums carried across blocks, partial row and column tiles, per-tensor and
//! per-channel weight zero points, u8 and i8, 1 and 2 threads, on every tier this CPU has.

use intq_kernels::gemm::{Code8, FullyConnectedPlan};
use intq_kernels::{reference, Isa, Multipliers, OutputStage};
use intq_quant::QuantizedMultiplier;
use intq_testutil::TestRng as Rng;

/// The output stage of a typical layer: per-channel multipliers scaling accumulators of
/// about `acc_mag` to mid-range codes (a right shift), an in-range output zero point and,
/// with `relu`, a floor at it: the flags the vector kernels' lean stage takes.
struct Stage {
    bias: Vec<i32>,
    mults: Vec<QuantizedMultiplier>,
    zout: i32,
    cmin: i32,
    cmax: i32,
}

impl Stage {
    fn typical<T: Code8>(rng: &mut Rng, n: usize, acc_mag: f64, relu: bool) -> Stage {
        let zout = rng.int(T::MIN, T::MAX);
        Stage {
            bias: (0..n)
                .map(|_| rng.int(-(acc_mag as i64), acc_mag as i64) as i32)
                .collect(),
            mults: (0..n)
                .map(|_| {
                    let m = 2f64.powf(rng.int(300, 800) as f64 / 100.0) / acc_mag.max(1.0);
                    QuantizedMultiplier::from_real(m.min(0.99)).unwrap()
                })
                .collect(),
            zout,
            cmin: if relu { zout } else { T::MIN },
            cmax: T::MAX,
        }
    }
    fn get(&self) -> OutputStage<'_> {
        OutputStage {
            bias: Some(&self.bias),
            multipliers: Multipliers::PerChannel(&self.mults),
            output_zero_point: self.zout,
            clamp_min: self.cmin,
            clamp_max: self.cmax,
        }
    }
}

/// `T`'s codes for an `m x k` by `n x k` GEMM on `isa` with `threads` threads against the
/// reference; `asym`: per-channel weight zero points off the symmetric one.
fn check<T: Code8>(
    isa: Isa,
    rng: &mut Rng,
    (m, n, k): (usize, usize, usize),
    asym: bool,
    threads: usize,
) {
    let a = rng.codes::<T>(m * k);
    let w = rng.codes::<T>(n * k);
    let zin = rng.int(T::MIN, T::MAX);
    let sym = if T::MIN < 0 { 0 } else { 128 };
    let zw: Vec<i32> = if asym {
        (0..n).map(|_| rng.int(T::MIN, T::MAX)).collect()
    } else {
        vec![sym]
    };
    // About sqrt(k) products of codes some 70 off their zero points.
    let acc_mag = (k as f64).sqrt() * 70.0 * 70.0;
    let relu = rng.int(0, 1) == 1;
    let stage = Stage::typical::<T>(rng, n, acc_mag, relu);
    let st = stage.get();
    let mut want = vec![T::default(); m * n];
    reference::fully_connected(&a, m, k, zin, &w, n, &zw, &st, &mut want);
    let plan = FullyConnectedPlan::new(&w, n, k, &zw, zin, &st, isa);
    let mut got = vec![T::default(); m * n];
    intq_kernels::gemm::with_threads(threads, || plan.run(&a, m, &mut got, threads));
    if let Some(i) = got.iter().zip(&want).position(|(g, w)| g != w) {
        panic!(
            "{isa} gemm {m}x{n}x{k} {} (asym {asym}, {threads} threads) differs at row {} col {}: \
             got {:?} want {:?}",
            std::any::type_name::<T>(),
            i / n,
            i % n,
            got[i],
            want[i]
        );
    }
}

#[test]
fn gemm_k_block_boundaries_large_m_n() {
    let f: &dyn Fn(Isa) = &|isa| {
        let mut rng = Rng::new(1024);
        for (i, &shape) in [
            (515, 530, 1025),
            (530, 515, 2047),
            (520, 545, 2048),
            (545, 520, 2049),
            (513, 519, 3073),
        ]
        .iter()
        .enumerate()
        {
            check::<u8>(isa, &mut rng, shape, i % 2 == 1, 1 + i % 2);
            check::<i8>(isa, &mut rng, shape, i % 2 == 0, 2 - i % 2);
        }
    };
    intq_testutil::on_every_tier("gemm_k_block_boundaries_large_m_n", f);
}

/// One K block of 15, 16 and 17 groups of 64 around the AMX column's early operand loads
/// (blocks of 16 groups), and two blocks of 16 with a partial last row tile.
#[test]
fn gemm_early_loads_around_16_groups() {
    let f: &dyn Fn(Isa) = &|isa| {
        let mut rng = Rng::new(1600);
        for (i, &shape) in [
            (530, 515, 960),
            (515, 530, 961),
            (520, 545, 1024),
            (545, 520, 1025),
            (513, 519, 2048),
        ]
        .iter()
        .enumerate()
        {
            check::<u8>(isa, &mut rng, shape, i % 2 == 1, 1 + i % 2);
            check::<i8>(isa, &mut rng, shape, i % 2 == 0, 2 - i % 2);
        }
    };
    intq_testutil::on_every_tier("gemm_early_loads_around_16_groups", f);
}
