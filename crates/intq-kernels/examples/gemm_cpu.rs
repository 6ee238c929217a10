//! Int8 GEMM throughput by thread CPU time (best of several calls), for tuning on a busy machine.
//! `cargo run --release -p intq-kernels --example gemm_cpu -- [isa] [M,K,N ...]`

use intq_kernels::gemm::FullyConnectedPlan;
use intq_kernels::{Isa, Multipliers, OutputStage};
use intq_quant::QuantizedMultiplier;
use intq_testutil::cputime::thread_cpu;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let isa: Isa = args.first().map(|s| s.parse().unwrap()).unwrap_or(Isa::Amx);
    let shapes: Vec<(usize, usize, usize)> = if args.len() > 1 {
        args[1..]
            .iter()
            .map(|s| {
                let v: Vec<usize> = s.split(',').map(|x| x.parse().unwrap()).collect();
                (v[0], v[1], v[2])
            })
            .collect()
    } else {
        vec![(512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048)]
    };
    let mut rng = intq_testutil::TestRng::new(7);
    let mult = QuantizedMultiplier::from_real(1e-5).unwrap();
    for (m, k, n) in shapes {
        let a: Vec<i8> = (0..m * k).map(|_| rng.int(-128, 127)).collect();
        let w: Vec<i8> = (0..n * k).map(|_| rng.int(-128, 127)).collect();
        let stage = OutputStage {
            bias: None,
            multipliers: Multipliers::PerTensor(mult),
            output_zero_point: -3,
            clamp_min: -128,
            clamp_max: 127,
        };
        let plan = FullyConnectedPlan::new(&w, n, k, &[0], 5, &stage, isa);
        let mut out = vec![0i8; m * n];
        let ops = 2.0 * (m * n * k) as f64;
        let reps = ((4e10 / ops) as usize).clamp(5, 400);
        let mut best = f64::MAX;
        for _ in 0..reps {
            let t = thread_cpu().as_secs_f64();
            plan.run(&a, m, &mut out, 1);
            best = best.min(thread_cpu().as_secs_f64() - t);
        }
        println!(
            "{m}x{k}x{n} {isa}: {:.0} GOPS (best thread CPU time of {reps}: {:.3} ms)",
            ops / best / 1e9,
            best * 1e3
        );
    }
}
