//! The elementwise ops of MobileNetV3, EfficientNet-Lite and DeepLab (Mul, the
//! squeeze-and-excitation gate, HardSwish, bilinear resize) and a model's input Quantize on every ISA tier this CPU has
//! against their reference kernels, on one thread. Each case is timed in the thread's CPU time
//! (so other processes on the machine slow it less than wall time would), repeated, and the
//! median kept; the table gives each tier's time and the reference's time over it. Run with
//! `cargo bench -p intq-kernels --bench elementwise` (`-- QUICK` for a short run).

use intq_kernels::gemm::{self, Code8};
use intq_kernels::reference::{self, BilinearArithmetic, HardSwishParams, MulParams, ResizeMode};
use intq_kernels::Isa;
use intq_quant::QuantParams;
use intq_testutil::cputime::median_cpu;
use std::time::Duration;

fn codes<T: Code8>(n: usize, seed: u64) -> Vec<T> {
    let mut rng = intq_testutil::TestRng::new(seed);
    (0..n).map(|_| rng.code::<T>()).collect()
}

fn qp(scale: f32, zero_point: i32) -> QuantParams {
    QuantParams { scale, zero_point }
}

/// One benchmark case: the reference and the fast kernel on a tier, for the same operands.
struct Case {
    name: String,
    reference: Box<dyn FnMut()>,
    fast: Box<dyn FnMut(Isa)>,
}

fn mul_case<T: Code8>(name: &str, big: &[usize], small: &[usize]) -> Case {
    let n: usize = big.iter().product();
    let (x, g) = (codes::<T>(n, 1), codes::<T>(small.iter().product(), 2));
    let zero = (T::MIN + T::MAX + 1) / 2;
    let p = MulParams::new(
        qp(0.05, zero + 3),
        qp(0.004, T::MIN),
        qp(0.03, zero - 5),
        T::MIN,
        T::MAX,
    )
    .unwrap();
    let (big, small) = (big.to_vec(), small.to_vec());
    let (x2, g2, big2, small2) = (x.clone(), g.clone(), big.clone(), small.clone());
    let mut out = vec![T::default(); n];
    let mut out2 = out.clone();
    Case {
        name: name.into(),
        reference: Box::new(move || reference::mul(&x, &big, &g, &small, &p, &mut out, &big)),
        fast: Box::new(move |isa| {
            gemm::mul(isa, 1, &x2, &big2, &g2, &small2, &p, &mut out2, &big2)
        }),
    }
}

fn hard_swish_case<T: Code8>(name: &str, n: usize) -> Case {
    let x = codes::<T>(n, 3);
    let zero = (T::MIN + T::MAX + 1) / 2;
    let p = HardSwishParams::new(qp(0.06, zero + 10), qp(0.04, zero - 40)).unwrap();
    let x2 = x.clone();
    let (mut out, mut out2) = (vec![T::default(); n], vec![T::default(); n]);
    Case {
        name: name.into(),
        reference: Box::new(move || reference::hard_swish(&x, &p, &mut out)),
        fast: Box::new(move |isa| gemm::hard_swish(isa, 1, &x2, &p, &mut out2)),
    }
}

/// A 224x224 RGB picture in [-1, 1] quantized at the input edge, as MobileNetV2's first op.
fn quantize_case<T: Code8>(name: &str, n: usize) -> Case {
    let x = intq_testutil::floats(5, n, -1.0, 1.0);
    let x2 = x.clone();
    let p = qp(1.0 / 128.0, (T::MIN + T::MAX + 1) / 2);
    let (mut out, mut out2) = (vec![T::default(); n], vec![T::default(); n]);
    Case {
        name: name.into(),
        reference: Box::new(move || reference::quantize(&x, p, &mut out)),
        fast: Box::new(move |isa| gemm::quantize(isa, 1, &x2, p, (T::MIN, T::MAX), &mut out2)),
    }
}

fn resize_case<T: Code8>(
    name: &str,
    input: [usize; 4],
    output: [usize; 4],
    mode: ResizeMode,
    arithmetic: BilinearArithmetic,
) -> Case {
    let x = codes::<T>(input.iter().product(), 4);
    let x2 = x.clone();
    let n = output.iter().product();
    let (mut out, mut out2) = (vec![T::default(); n], vec![T::default(); n]);
    Case {
        name: name.into(),
        reference: Box::new(move || {
            reference::resize_bilinear(&x, input, mode, arithmetic, &mut out, output)
        }),
        fast: Box::new(move |isa| {
            gemm::resize_bilinear(isa, 1, &x2, input, mode, arithmetic, &mut out2, output)
        }),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "QUICK");
    let (repeats, target) = if quick {
        (3, Duration::from_millis(20))
    } else {
        (15, Duration::from_millis(100))
    };
    let plain = ResizeMode::default();
    let half = ResizeMode {
        align_corners: false,
        half_pixel_centers: true,
    };
    let mut cases = vec![
        mul_case::<i8>(
            "mul i8 [1,56,56,72] same shape",
            &[1, 56, 56, 72],
            &[1, 56, 56, 72],
        ),
        mul_case::<u8>(
            "mul u8 [1,56,56,72] same shape",
            &[1, 56, 56, 72],
            &[1, 56, 56, 72],
        ),
        mul_case::<i8>(
            "mul i8 SE [1,28,28,240]x[1,1,1,240]",
            &[1, 28, 28, 240],
            &[1, 1, 1, 240],
        ),
        mul_case::<i8>(
            "mul i8 SE [1,56,56,16]x[1,1,1,16]",
            &[1, 56, 56, 16],
            &[1, 1, 1, 16],
        ),
        mul_case::<u8>(
            "mul u8 SE [1,14,14,672]x[1,1,1,672]",
            &[1, 14, 14, 672],
            &[1, 1, 1, 672],
        ),
        hard_swish_case::<i8>("hard_swish i8 [1,112,112,16]", 112 * 112 * 16),
        hard_swish_case::<u8>("hard_swish u8 [1,112,112,16]", 112 * 112 * 16),
        quantize_case::<u8>("quantize u8 [1,224,224,3]", 224 * 224 * 3),
        quantize_case::<i8>("quantize i8 [1,224,224,3]", 224 * 224 * 3),
        resize_case::<i8>(
            "resize i8 integer [1,33,33,21]->[1,257,257,21]",
            [1, 33, 33, 21],
            [1, 257, 257, 21],
            plain,
            BilinearArithmetic::Integer,
        ),
        resize_case::<u8>(
            "resize u8 float [1,33,33,21]->[1,257,257,21]",
            [1, 33, 33, 21],
            [1, 257, 257, 21],
            plain,
            BilinearArithmetic::Float,
        ),
        resize_case::<u8>(
            "resize u8 float half-pixel [1,17,17,256]->[1,65,65,256]",
            [1, 17, 17, 256],
            [1, 65, 65, 256],
            half,
            BilinearArithmetic::Float,
        ),
        resize_case::<i8>(
            "resize i8 integer half-pixel [1,17,17,256]->[1,65,65,256]",
            [1, 17, 17, 256],
            [1, 65, 65, 256],
            half,
            BilinearArithmetic::Integer,
        ),
    ];
    let tiers = Isa::available();
    println!(
        "one thread, CPU time per call, median of {repeats}; ratio = reference / tier \
         (timings move with the machine's load; compare ratios within one run)"
    );
    for case in &mut cases {
        let r = median_cpu(repeats, target, &mut case.reference);
        let mut line = format!(
            "{:<58} reference {:>9.1} us",
            case.name,
            r.as_secs_f64() * 1e6
        );
        for &isa in &tiers {
            let t = median_cpu(repeats, target, || (case.fast)(isa));
            line += &format!(
                " | {} {:.1} us x{:.1}",
                isa.name(),
                t.as_secs_f64() * 1e6,
                r.as_secs_f64() / t.as_secs_f64()
            );
        }
        println!("{line}");
    }
}
