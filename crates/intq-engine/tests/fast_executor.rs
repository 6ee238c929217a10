//! The fast executor (packed GEMM conv/FC, vectorized depthwise, on every ISA tier this CPU has,
//! with several thread counts) against the reference executor on whole graphs: every op output
//! byte for byte.

use intq_engine::examples::{random_input, seeded, small_cnn, Draws, SplitMix64};
use intq_engine::{
    Activation, ChannelParams, DType, ExecOptions, Graph, GraphBuilder, Isa, KernelTier, Model, Op,
    Padding, Quant, QuantParams, TensorData, TensorId,
};

/// Every op's output, so a difference is caught where it starts.
fn all_outputs(g: &Graph) -> Vec<TensorId> {
    g.ops().iter().map(|op| op.output()).collect()
}

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

/// Runs `g` on the reference executor and on every available tier with 1-3 threads.
fn check_graph(g: &Graph, seeds: std::ops::Range<u64>, what: &str) {
    let wanted = all_outputs(g);
    let reference = model(g, KernelTier::Reference, 1);
    for isa in intq_testutil::tiers(what) {
        for threads in [1, 2, 3] {
            let fast = model(g, KernelTier::Fast(isa), threads);
            assert_eq!(fast.kernel_tier(), KernelTier::Fast(isa));
            for seed in seeds.clone() {
                let input = random_input(g, seed);
                let want = reference.run_with(&input, &wanted).unwrap();
                let got = fast.run_with(&input, &wanted).unwrap();
                for (i, (gv, wv)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        gv == wv,
                        "{what}: tier {isa}, {threads} threads, seed {seed}: output of op {i} \
                         ({}) differs from the reference executor's",
                        g.ops()[i].kind().name()
                    );
                }
                // A plain run reuses the buffers the previous seed's run left behind.
                assert!(
                    fast.run(&input).unwrap() == reference.run(&input).unwrap(),
                    "{what}: tier {isa}, {threads} threads, seed {seed}: graph outputs differ \
                     on a run reusing the previous run's buffers"
                );
            }
        }
    }
}

#[test]
fn small_cnn_fast_equals_reference() {
    for dtype in [DType::U8, DType::I8] {
        for float_edges in [false, true] {
            let g = small_cnn(dtype, float_edges, 11);
            check_graph(
                &g,
                0..4,
                &format!("small_cnn {dtype:?} float_edges={float_edges}"),
            );
        }
    }
}

fn act_params(rng: &mut SplitMix64, dtype: DType, scale: f32) -> QuantParams {
    let zero_point = match dtype {
        DType::U8 => rng.int_in(0, 255),
        _ => rng.int_in(-128, 127),
    };
    QuantParams { scale, zero_point }
}

/// Random weights of `shape`, uint8 per tensor with any zero point or int8 symmetric per
/// channel (along axis `axis`); returns the constant and its per-channel scales.
fn weights(
    b: &mut GraphBuilder,
    rng: &mut SplitMix64,
    dtype: DType,
    name: &str,
    shape: &[usize],
    axis: usize,
) -> (TensorId, Vec<f32>) {
    let n: usize = shape.iter().product();
    let channels = shape[axis];
    match dtype {
        DType::U8 => {
            let p = QuantParams {
                scale: rng.uniform(0.005, 0.05),
                zero_point: rng.int_in(0, 255),
            };
            let data = (0..n).map(|_| rng.int_in(0, 255) as u8).collect();
            let id = b.constant(name, shape, Some(Quant::PerTensor(p)), TensorData::U8(data));
            (id, vec![p.scale; channels])
        }
        _ => {
            let scales: Vec<f32> = (0..channels).map(|_| rng.uniform(0.005, 0.05)).collect();
            let q = ChannelParams::new(scales.clone(), vec![0; channels], axis).unwrap();
            let data = (0..n).map(|_| rng.int_in(-127, 127) as i8).collect();
            let id = b.constant(
                name,
                shape,
                Some(Quant::PerChannel(q)),
                TensorData::I8(data),
            );
            (id, scales)
        }
    }
}

fn bias(b: &mut GraphBuilder, rng: &mut SplitMix64, name: &str, n: usize) -> Option<TensorId> {
    (rng.int_in(0, 3) > 0).then(|| {
        let v = (0..n).map(|_| rng.int_in(-5000, 5000)).collect();
        b.constant(name, &[n], None, TensorData::I32(v))
    })
}

/// input -> conv kxk -> depthwise -> conv 1x1 -> fully connected, with odd sizes, strides,
/// dilations, paddings and activations drawn from `seed`.
fn random_graph(dtype: DType, seed: u64) -> Option<Graph> {
    let mut rng = seeded(seed);
    let mut b = GraphBuilder::new();
    let batch = rng.int_in(1, 3) as usize;
    let (h, w, c) = (
        rng.int_in(1, 13) as usize,
        rng.int_in(1, 13) as usize,
        rng.int_in(1, 21) as usize,
    );
    let pick_act = |rng: &mut SplitMix64| {
        [Activation::None, Activation::Relu, Activation::Relu6][rng.int_in(0, 2) as usize]
    };
    let pick_pad =
        |rng: &mut SplitMix64| [Padding::Same, Padding::Valid][rng.int_in(0, 1) as usize];
    let mut scale = 0.02f32;
    let x = b.tensor(
        "input",
        dtype,
        &[batch, h, w, c],
        Some(Quant::PerTensor(act_params(&mut rng, dtype, scale))),
    );
    b.input(x);

    // conv kxk
    let (kh, kw) = (rng.int_in(1, 5) as usize, rng.int_in(1, 5) as usize);
    let (stride, dilation) = (
        [rng.int_in(1, 3) as usize, rng.int_in(1, 3) as usize],
        [rng.int_in(1, 2) as usize, rng.int_in(1, 2) as usize],
    );
    let padding = pick_pad(&mut rng);
    let ((oh, ow), _) = padding.resolve(
        (h, w),
        (kh, kw),
        (stride[0], stride[1]),
        (dilation[0], dilation[1]),
    )?;
    let oc = rng.int_in(1, 37) as usize;
    let (f, _) = weights(&mut b, &mut rng, dtype, "conv_w", &[oc, kh, kw, c], 0);
    let cb = bias(&mut b, &mut rng, "conv_b", oc);
    scale *= 0.02 * ((kh * kw * c) as f32).sqrt() * 40.0 / 30.0;
    let y = b.tensor(
        "conv",
        dtype,
        &[batch, oh, ow, oc],
        Some(Quant::PerTensor(act_params(&mut rng, dtype, scale))),
    );
    b.op(Op::Conv2d {
        input: x,
        filter: f,
        bias: cb,
        output: y,
        stride,
        dilation,
        padding,
        activation: pick_act(&mut rng),
    });

    // depthwise
    let dm = rng.int_in(1, 2) as usize;
    let (dkh, dkw) = (rng.int_in(1, 3) as usize, rng.int_in(1, 3) as usize);
    let dstride = [rng.int_in(1, 2) as usize, rng.int_in(1, 2) as usize];
    let dpad = pick_pad(&mut rng);
    let ((dh, dw), _) = dpad.resolve((oh, ow), (dkh, dkw), (dstride[0], dstride[1]), (1, 1))?;
    let dc = oc * dm;
    let (df, _) = weights(&mut b, &mut rng, dtype, "dw_w", &[1, dkh, dkw, dc], 3);
    let db = bias(&mut b, &mut rng, "dw_b", dc);
    scale *= 0.02 * ((dkh * dkw) as f32).sqrt() * 40.0 / 30.0;
    let z = b.tensor(
        "dw",
        dtype,
        &[batch, dh, dw, dc],
        Some(Quant::PerTensor(act_params(&mut rng, dtype, scale))),
    );
    b.op(Op::DepthwiseConv2d {
        input: y,
        filter: df,
        bias: db,
        output: z,
        stride: dstride,
        dilation: [1, 1],
        padding: dpad,
        depth_multiplier: dm,
        activation: pick_act(&mut rng),
    });

    // conv 1x1
    let pc = rng.int_in(1, 40) as usize;
    let (pf, _) = weights(&mut b, &mut rng, dtype, "pw_w", &[pc, 1, 1, dc], 0);
    let pb = bias(&mut b, &mut rng, "pw_b", pc);
    scale *= 0.02 * (dc as f32).sqrt() * 40.0 / 30.0;
    let u = b.tensor(
        "pw",
        dtype,
        &[batch, dh, dw, pc],
        Some(Quant::PerTensor(act_params(&mut rng, dtype, scale))),
    );
    b.op(Op::Conv2d {
        input: z,
        filter: pf,
        bias: pb,
        output: u,
        stride: [1, 1],
        dilation: [1, 1],
        padding: Padding::Valid,
        activation: pick_act(&mut rng),
    });

    // fully connected over each batch's pixels
    let depth = dh * dw * pc;
    let out = rng.int_in(1, 30) as usize;
    let (fw, _) = weights(&mut b, &mut rng, dtype, "fc_w", &[out, depth], 0);
    let fb = bias(&mut b, &mut rng, "fc_b", out);
    scale *= 0.02 * (depth as f32).sqrt() * 40.0 / 30.0;
    let v = b.tensor(
        "fc",
        dtype,
        &[batch, out],
        Some(Quant::PerTensor(act_params(&mut rng, dtype, scale))),
    );
    b.op(Op::FullyConnected {
        input: u,
        weights: fw,
        bias: fb,
        output: v,
        activation: pick_act(&mut rng),
    });
    b.output(v);
    Some(
        b.finish()
            .unwrap_or_else(|e| panic!("random graph {seed} invalid: {e}")),
    )
}

#[test]
fn random_graphs_fast_equals_reference() {
    let mut built = 0;
    for seed in 0..24 {
        for dtype in [DType::U8, DType::I8] {
            if let Some(g) = random_graph(dtype, seed) {
                check_graph(
                    &g,
                    seed..seed + 2,
                    &format!("random graph {seed} {dtype:?}"),
                );
                built += 1;
            }
        }
    }
    assert!(built >= 30, "only {built} random graphs had valid geometry");
}

#[test]
fn unavailable_tier_is_an_error() {
    let g = small_cnn(DType::U8, false, 1);
    for isa in Isa::ALL_BEST_FIRST {
        let r = Model::with_options(
            g.clone(),
            ExecOptions {
                kernels: Some(KernelTier::Fast(isa)),
                threads: 1,
            },
        );
        assert_eq!(r.is_ok(), isa.is_available(), "tier {isa}");
        if let Err(e) = r {
            assert!(
                e.to_string().contains(isa.name()),
                "error names the tier: {e}"
            );
        }
    }
}
