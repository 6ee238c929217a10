//! Int8 GEMM throughput by thread CPU time (best of several calls), for tuning on a busy machine.
//! `cargo run --release -p intq-kernels --example gemm_cpu -- [isa] [M,K,N ...]`
//! On AMX it first measures the tile unit's peak ([`intq_kernels::gemm::amx_peak`]) and reports
//! each shape as a share of it and of the nominal peak (1,024 multiply-adds a cycle at 3.8 GHz).

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
    let peak = if isa == Isa::Amx { amx_peak() } else { None };
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
        let gops = ops / best / 1e9;
        let share = peak.map_or(String::new(), |p| {
            format!(
                ", {:.0}% of measured peak, {:.0}% of nominal",
                100.0 * gops / p,
                100.0 * gops / NOMINAL_GOPS
            )
        });
        println!(
            "{m}x{k}x{n} {isa}: {gops:.0} GOPS (best thread CPU time of {reps}: {:.3} ms){share}",
            best * 1e3
        );
    }
}

/// 1,024 int8 multiply-adds (2,048 ops) a cycle at 3.8 GHz.
const NOMINAL_GOPS: f64 = 2048.0 * 3.8;

/// Prints the measured AMX peak and returns its GOPS.
#[cfg(target_arch = "x86_64")]
fn amx_peak() -> Option<f64> {
    let p = intq_kernels::gemm::amx_peak(2_000_000)?;
    println!(
        "amx peak: {:.0} GOPS ({:.1}% of nominal), {:.4} tdpbusd/cycle at {:.2} GHz under AMX \
         (add chain: {:.2} GHz before, {:.2} GHz after)",
        p.gops,
        100.0 * p.gops / NOMINAL_GOPS,
        p.tdp_per_cycle,
        p.ghz_under_amx,
        p.ghz_before,
        p.ghz_after
    );
    Some(p.gops)
}

#[cfg(not(target_arch = "x86_64"))]
fn amx_peak() -> Option<f64> {
    None
}
