//! Graphs of the ops MobileNetV3, EfficientNet-Lite and DeepLab run outside convolutions
//! (HardSwish, a squeeze-and-excitation Mul by a per-channel gate, an equal-shape Mul, and a
//! bilinear resize in each mode) on every ISA tier this CPU has with 1-3 threads, against the
//! reference executor: every op output byte for byte.

use intq_engine::examples::{random_input, seeded, Draws};
use intq_engine::{
    Activation, DType, ExecOptions, Graph, GraphBuilder, KernelTier, Model, Op, Quant, QuantParams,
    TensorId,
};

fn model(g: &Graph, kernels: KernelTier, threads: usize) -> Model {
    Model::with_options(
        g.clone(),
        ExecOptions {
            kernels: Some(kernels),
            threads,
        },
    )
    .expect("graph plans")
}

/// x -> HardSwish -> Mul by a gate [N, 1, 1, C] -> Mul by itself -> ResizeBilinear, with
/// parameters and sizes drawn from `seed`.
fn se_graph(dtype: DType, seed: u64, align_corners: bool, half_pixel_centers: bool) -> Graph {
    let mut rng = seeded(seed);
    let (lo, hi) = match dtype {
        DType::U8 => (0, 255),
        _ => (-128, 127),
    };
    let mut q = |scale_lo: f32, scale_hi: f32| {
        Some(Quant::PerTensor(QuantParams {
            scale: rng.uniform(scale_lo, scale_hi),
            zero_point: rng.int_in(lo, hi),
        }))
    };
    let (qx, qg, qh, qm, qmm) = (
        q(0.01, 0.1),
        q(0.002, 0.01),
        q(0.01, 0.1),
        q(0.001, 0.05),
        q(0.0001, 0.01),
    );
    let mut rng = seeded(seed + 1);
    let n = rng.int_in(1, 2) as usize;
    let (h, w) = (rng.int_in(1, 9) as usize, rng.int_in(1, 9) as usize);
    let c = [3usize, 16, 40, 72][rng.int_in(0, 3) as usize];
    let (oh, ow) = (rng.int_in(1, 25) as usize, rng.int_in(1, 25) as usize);
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", dtype, &[n, h, w, c], qx);
    let gate = b.tensor("gate", dtype, &[n, 1, 1, c], qg);
    let hs = b.tensor("hard_swish", dtype, &[n, h, w, c], qh);
    let m = b.tensor("gated", dtype, &[n, h, w, c], qm);
    let mm = b.tensor("squared", dtype, &[n, h, w, c], qmm.clone());
    let r = b.tensor("resized", dtype, &[n, oh, ow, c], qmm);
    b.input(x).input(gate).output(r);
    b.op(Op::HardSwish {
        input: x,
        output: hs,
    })
    .op(Op::Mul {
        lhs: hs,
        rhs: gate,
        output: m,
        activation: Activation::None,
    })
    .op(Op::Mul {
        lhs: m,
        rhs: m,
        output: mm,
        activation: Activation::Relu,
    })
    .op(Op::ResizeBilinear {
        input: mm,
        output: r,
        align_corners,
        half_pixel_centers,
    });
    b.finish().expect("valid graph")
}

#[test]
fn se_hard_swish_resize_fast_equals_reference() {
    for dtype in [DType::U8, DType::I8] {
        for (s, (align, half)) in [(false, false), (true, false), (false, true)]
            .into_iter()
            .enumerate()
        {
            for seed in 0..4u64 {
                let seed = 100 * s as u64 + seed;
                let g = se_graph(dtype, seed, align, half);
                let wanted: Vec<TensorId> = g.ops().iter().map(|op| op.output()).collect();
                let reference = model(&g, KernelTier::Reference, 1);
                let input = random_input(&g, seed);
                let want = reference.run_with(&input, &wanted).unwrap();
                for isa in intq_testutil::tiers("se_hard_swish_resize_fast_equals_reference") {
                    for threads in [1, 2, 3] {
                        let fast = model(&g, KernelTier::Fast(isa), threads);
                        let got = fast.run_with(&input, &wanted).unwrap();
                        for (i, (gv, wv)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                gv == wv,
                                "{dtype:?} seed {seed}: tier {isa}, {threads} threads: output \
                                 of op {i} ({}) differs from the reference executor's",
                                g.ops()[i].kind().name()
                            );
                        }
                    }
                }
            }
        }
    }
}
