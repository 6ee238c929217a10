//! The convolutions that dominate ResNet-18, ResNet-20 and MobileNetV2 (3x3 bodies at every
//! width, the stems) and a square GEMM, int8 with symmetric per-channel weights as TFLite's
//! scheme has them, on the fast tiers this CPU has, one thread. Each case is timed in the
//! thread's CPU time (so other processes on the machine slow it less than wall time would),
//! repeated, and the median kept. Run with `cargo bench -p intq-kernels --bench conv_layers`;
//! arguments name the tiers to run (default: amx and avx512vnni where present), `QUICK` shortens
//! the timing, and any other argument keeps only the cases whose name contains it.

use intq_kernels::gemm::{Conv2dPlan, PreparedGemm};
use intq_kernels::{ConvParams, Isa, Multipliers, OutputStage, PaddingValues};
use intq_quant::QuantizedMultiplier;
use intq_testutil::cputime::median_cpu;
use std::time::Duration;

fn codes(n: usize, seed: u64) -> Vec<i8> {
    let mut rng = intq_testutil::TestRng::new(seed);
    (0..n).map(|_| rng.code::<i8>()).collect()
}

/// `(name, input [h, w, c], out_c, kernel, stride, padding)`.
type Layer = (&'static str, [usize; 3], usize, usize, usize, usize);

const LAYERS: [Layer; 9] = [
    ("resnet18 stem 7x7 s2", [224, 224, 3], 64, 7, 2, 3),
    ("resnet18 3x3 56x56x64", [56, 56, 64], 64, 3, 1, 1),
    ("resnet18 3x3 28x28x128", [28, 28, 128], 128, 3, 1, 1),
    ("resnet18 3x3 14x14x256", [14, 14, 256], 256, 3, 1, 1),
    ("resnet18 3x3 7x7x512", [7, 7, 512], 512, 3, 1, 1),
    ("resnet18 3x3 s2 56->28x128", [56, 56, 64], 128, 3, 2, 1),
    ("resnet20 stem 3x3", [32, 32, 3], 16, 3, 1, 1),
    ("resnet20 3x3 32x32x16", [32, 32, 16], 16, 3, 1, 1),
    ("mobilenet-v2 stem 3x3 s2", [224, 224, 3], 32, 3, 2, 1),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "QUICK");
    let named: Vec<Isa> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let filters: Vec<&String> = args
        .iter()
        .filter(|a| *a != "QUICK" && a.parse::<Isa>().is_err())
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
        (3, Duration::from_millis(30))
    } else {
        (7, Duration::from_millis(150))
    };
    let mult = QuantizedMultiplier::from_real(1e-3).unwrap();
    println!(
        "{:<28} {:>12} {:>12} {:>9}",
        "case", "tier", "µs (cpu)", "GOPS"
    );
    for (name, [h, w, c], oc, k, s, pad) in LAYERS {
        if !wanted(name) {
            continue;
        }
        let x = codes(h * w * c, 3);
        let f = codes(oc * k * k * c, 4);
        let bias: Vec<i32> = (0..oc as i32).map(|i| i * 7 - 100).collect();
        let ms: Vec<QuantizedMultiplier> = (0..oc)
            .map(|i| QuantizedMultiplier::from_real(1e-3 * (1.0 + i as f64 / oc as f64)).unwrap())
            .collect();
        let stage = OutputStage {
            bias: Some(&bias),
            multipliers: Multipliers::PerChannel(&ms),
            output_zero_point: -3,
            clamp_min: -128,
            clamp_max: 127,
        };
        let params = ConvParams {
            stride_h: s,
            stride_w: s,
            dilation_h: 1,
            dilation_w: 1,
            padding: PaddingValues {
                top: pad,
                bottom: pad,
                left: pad,
                right: pad,
            },
        };
        let (oh, ow) = ((h + 2 * pad - k) / s + 1, (w + 2 * pad - k) / s + 1);
        let ops = 2.0 * (oh * ow * oc * k * k * c) as f64;
        for &isa in &tiers {
            let plan = Conv2dPlan::new(&f, [oc, k, k, c], &[0], 5, &params, &stage, isa);
            let mut out = vec![0i8; oh * ow * oc];
            let t = median_cpu(repeats, target, || {
                plan.run(&x, [1, h, w, c], &mut out, [1, oh, ow, oc], 1)
            });
            let us = t.as_secs_f64() * 1e6;
            println!(
                "{name:<28} {:>12} {us:>12.1} {:>9.0}",
                isa.name(),
                ops / us / 1e3
            );
        }
    }
    if !wanted("gemm 2048^3") {
        return;
    }
    let n = 2048;
    let a = codes(n * n, 5);
    let b = codes(n * n, 6);
    let stage = OutputStage {
        bias: None,
        multipliers: Multipliers::PerTensor(mult),
        output_zero_point: 0,
        clamp_min: -128,
        clamp_max: 127,
    };
    for &isa in &tiers {
        let g = PreparedGemm::new(&b, n, n, &[0], 1, &stage, isa);
        let mut out = vec![0i8; n * n];
        let t = median_cpu(repeats.min(5), target, || g.run(&a, n, &mut out, 1));
        let us = t.as_secs_f64() * 1e6;
        let ops = 2.0 * (n * n * n) as f64;
        println!(
            "{:<28} {:>12} {us:>12.1} {:>9.0}",
            "gemm 2048^3",
            isa.name(),
            ops / us / 1e3
        );
    }
}
