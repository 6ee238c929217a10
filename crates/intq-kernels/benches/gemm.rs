//! Criterion benchmarks of the fast kernels on every ISA tier this CPU has: GEMM (square and
//! FC-shaped), a 3x3 convolution and a depthwise convolution. Run with
//! `cargo bench -p intq-kernels --bench gemm` (the reference kernels are too slow to include at
//! these shapes; `intq bench gemm` measures them as a baseline).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use intq_kernels::gemm::{Conv2dPlan, DepthwisePlan, FullyConnectedPlan};
use intq_kernels::{ConvParams, Isa, Multipliers, OutputStage, PaddingValues};
use intq_quant::QuantizedMultiplier;

fn codes(n: usize, seed: u64) -> Vec<i8> {
    let mut rng = intq_testutil::TestRng::new(seed);
    (0..n).map(|_| rng.int(i8::MIN, i8::MAX)).collect()
}

fn stage(m: &QuantizedMultiplier) -> OutputStage<'_> {
    OutputStage {
        bias: None,
        multipliers: Multipliers::PerTensor(*m),
        output_zero_point: -3,
        clamp_min: -128,
        clamp_max: 127,
    }
}

fn gemm(c: &mut Criterion) {
    // The ceiling the AMX rows compare with: 1,024 multiply-adds a cycle when the tile unit
    // never waits (`intq_kernels::gemm::amx_peak`).
    #[cfg(target_arch = "x86_64")]
    if let Some(p) = intq_kernels::gemm::amx_peak(2_000_000) {
        println!(
            "amx peak (tdpbusd on tile registers, one core): {:.0} GOPS at {:.2} GHz",
            p.gops, p.ghz_under_amx
        );
    }
    let mult = QuantizedMultiplier::from_real(1e-4).unwrap();
    let mut g = c.benchmark_group("gemm_i8");
    g.sample_size(10);
    for &(m, k, n) in &[
        (256, 256, 256),
        (1024, 1024, 1024),
        (1, 2048, 1000),
        (3136, 576, 64),
    ] {
        let a = codes(m * k, 1);
        let w = codes(n * k, 2);
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        for isa in Isa::available() {
            let plan = FullyConnectedPlan::new(&w, n, k, &[0], 5, &stage(&mult), isa);
            let mut out = vec![0i8; m * n];
            g.bench_with_input(
                BenchmarkId::new(isa.name(), format!("{m}x{k}x{n}")),
                &(),
                |b, _| b.iter(|| plan.run(&a, m, &mut out, 1)),
            );
        }
    }
    g.finish();
}

fn conv(c: &mut Criterion) {
    let mult = QuantizedMultiplier::from_real(1e-3).unwrap();
    let mut g = c.benchmark_group("conv_i8");
    g.sample_size(10);
    let pad1 = ConvParams {
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        padding: PaddingValues {
            top: 1,
            bottom: 1,
            left: 1,
            right: 1,
        },
    };
    let (h, w, ci, co) = (56, 56, 64, 64);
    let x = codes(h * w * ci, 3);
    let f = codes(co * 9 * ci, 4);
    let dwf = codes(9 * ci, 5);
    for isa in Isa::available() {
        let plan = Conv2dPlan::new(&f, [co, 3, 3, ci], &[0], 5, &pad1, &stage(&mult), isa);
        let mut out = vec![0i8; h * w * co];
        g.bench_function(BenchmarkId::new(isa.name(), "conv3x3_56x56x64"), |b| {
            b.iter(|| plan.run(&x, [1, h, w, ci], &mut out, [1, h, w, co], 1))
        });
        let dw = DepthwisePlan::new(&dwf, [1, 3, 3, ci], &[0], 1, 5, &pad1, &stage(&mult), isa);
        let mut out = vec![0i8; h * w * ci];
        g.bench_function(BenchmarkId::new(isa.name(), "depthwise3x3_56x56x64"), |b| {
            b.iter(|| dw.run(&x, [1, h, w, ci], &mut out, [1, h, w, ci], 1))
        });
    }
    g.finish();
}

criterion_group!(benches, gemm, conv);
criterion_main!(benches);
