//! MobileNetV2's (224x224, width 1.0) pointwise and depthwise layers, batch 1, one thread, int8
//! with symmetric per-channel weights as TFLite's scheme has them, on the fast tiers this CPU
//! has: each distinct layer's CPU time (the thread's, so other processes on the machine slow it
//! less than wall time would), and per kind the sum over the network (each layer times how
//! often it occurs). Run with `cargo bench -p intq-kernels --bench mbv2_layers`; arguments name
//! the tiers (default: amx and avx512vnni where present), `QUICK` shortens the timing, and any
//! other argument keeps only the cases whose name contains it.

use intq_kernels::gemm::{Conv2dPlan, DepthwisePlan};
use intq_kernels::{ConvParams, Isa, Multipliers, OutputStage, PaddingValues};
use intq_quant::QuantizedMultiplier;
use intq_testutil::cputime::median_cpu;
use std::time::Duration;

fn codes(n: usize, seed: u64) -> Vec<i8> {
    let mut rng = intq_testutil::TestRng::new(seed);
    (0..n).map(|_| rng.code::<i8>()).collect()
}

/// `(size, in_c, out_c, occurrences)` of the 1x1 convolutions.
const POINTWISE: [(usize, usize, usize, usize); 19] = [
    (112, 32, 16, 1),
    (112, 16, 96, 1),
    (56, 96, 24, 1),
    (56, 24, 144, 2),
    (56, 144, 24, 1),
    (28, 144, 32, 1),
    (28, 32, 192, 3),
    (28, 192, 32, 2),
    (14, 192, 64, 1),
    (14, 64, 384, 4),
    (14, 384, 64, 3),
    (14, 384, 96, 1),
    (14, 96, 576, 3),
    (14, 576, 96, 2),
    (7, 576, 160, 1),
    (7, 160, 960, 3),
    (7, 960, 160, 2),
    (7, 960, 320, 1),
    (7, 320, 1280, 1),
];

/// `(input size, channels, stride, occurrences)` of the 3x3 depthwise convolutions (padding 1).
const DEPTHWISE: [(usize, usize, usize, usize); 10] = [
    (112, 32, 1, 1),
    (112, 96, 2, 1),
    (56, 144, 1, 1),
    (56, 144, 2, 1),
    (28, 192, 1, 2),
    (28, 192, 2, 1),
    (14, 384, 1, 4),
    (14, 576, 1, 2),
    (14, 576, 2, 1),
    (7, 960, 1, 3),
];

fn stage<'a>(bias: &'a [i32], ms: &'a [QuantizedMultiplier]) -> OutputStage<'a> {
    OutputStage {
        bias: Some(bias),
        multipliers: Multipliers::PerChannel(ms),
        output_zero_point: -3,
        clamp_min: -128,
        clamp_max: 127,
    }
}

fn columns(oc: usize, scale: f64) -> (Vec<i32>, Vec<QuantizedMultiplier>) {
    let bias = (0..oc as i32).map(|i| i * 7 - 100).collect();
    let ms = (0..oc)
        .map(|i| QuantizedMultiplier::from_real(scale * (1.0 + i as f64 / oc as f64)).unwrap())
        .collect();
    (bias, ms)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "QUICK");
    let named: Vec<Isa> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let filters: Vec<&String> = args
        .iter()
        .filter(|a| *a != "QUICK" && *a != "--bench" && a.parse::<Isa>().is_err())
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let tiers: Vec<Isa> = if named.is_empty() {
        [Isa::Amx, Isa::Avx512Vnni]
            .into_iter()
            .filter(|i| i.is_available())
            .collect()
    } else {
        named
    };
    let (repeats, target) = if quick {
        (3, Duration::from_millis(20))
    } else {
        (7, Duration::from_millis(80))
    };
    println!(
        "{:<28} {:>12} {:>12} {:>9}",
        "case", "tier", "µs (cpu)", "GOPS"
    );
    let mut totals = vec![[0.0f64; 2]; tiers.len()];
    let one = |p: usize| PaddingValues {
        top: p,
        bottom: p,
        left: p,
        right: p,
    };
    for (h, ic, oc, count) in POINTWISE {
        let name = format!("1x1 {h}x{h} {ic}->{oc}");
        if !wanted(&name) {
            continue;
        }
        let x = codes(h * h * ic, 3);
        let f = codes(oc * ic, 4);
        let (bias, ms) = columns(oc, 2e-3);
        let st = stage(&bias, &ms);
        let params = ConvParams {
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: one(0),
        };
        let ops = 2.0 * (h * h * ic * oc) as f64;
        for (ti, &isa) in tiers.iter().enumerate() {
            let plan = Conv2dPlan::new(&f, [oc, 1, 1, ic], &[0], 5, &params, &st, isa);
            let mut out = vec![0i8; h * h * oc];
            let t = median_cpu(repeats, target, || {
                plan.run(&x, [1, h, h, ic], &mut out, [1, h, h, oc], 1)
            });
            let us = t.as_secs_f64() * 1e6;
            totals[ti][0] += us * count as f64;
            println!(
                "{name:<28} {:>12} {us:>12.1} {:>9.0}",
                isa.name(),
                ops / us / 1e3
            );
        }
    }
    for (h, c, s, count) in DEPTHWISE {
        let name = format!("dw {h}x{h}x{c} s{s}");
        if !wanted(&name) {
            continue;
        }
        let x = codes(h * h * c, 5);
        let f = codes(9 * c, 6);
        let (bias, ms) = columns(c, 1e-2);
        let st = stage(&bias, &ms);
        let params = ConvParams {
            stride_h: s,
            stride_w: s,
            dilation_h: 1,
            dilation_w: 1,
            padding: one(1),
        };
        let o = (h + 2 - 3) / s + 1;
        let ops = 2.0 * (o * o * c * 9) as f64;
        for (ti, &isa) in tiers.iter().enumerate() {
            let plan = DepthwisePlan::new(&f, [1, 3, 3, c], &[0], 1, 5, &params, &st, isa);
            let mut out = vec![0i8; o * o * c];
            let t = median_cpu(repeats, target, || {
                plan.run(&x, [1, h, h, c], &mut out, [1, o, o, c], 1)
            });
            let us = t.as_secs_f64() * 1e6;
            totals[ti][1] += us * count as f64;
            println!(
                "{name:<28} {:>12} {us:>12.1} {:>9.0}",
                isa.name(),
                ops / us / 1e3
            );
        }
    }
    for (ti, isa) in tiers.iter().enumerate() {
        println!(
            "network sum on {}: 1x1 {:.0} µs, depthwise {:.0} µs",
            isa.name(),
            totals[ti][0],
            totals[ti][1]
        );
    }
}
