//! Running a model built for one image on a batch of N: every output (and intermediate) equals
//! the one-image runs image by image, on the reference kernels and every fast tier; graphs whose
//! ops mix images are refused with the op named.

use intq_engine::examples::{random_input, small_cnn};
use intq_engine::{
    DType, ExecOptions, Graph, GraphBuilder, KernelTier, Model, Op, Quant, QuantParams, TensorData,
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

/// The values of several images, one after another, as one batch.
fn stack(images: &[TensorData]) -> TensorData {
    let mut all = images[0].clone();
    for image in &images[1..] {
        match (&mut all, image) {
            (TensorData::U8(a), TensorData::U8(b)) => a.extend_from_slice(b),
            (TensorData::I8(a), TensorData::I8(b)) => a.extend_from_slice(b),
            (TensorData::I32(a), TensorData::I32(b)) => a.extend_from_slice(b),
            (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
            _ => panic!("images of different types"),
        }
    }
    all
}

/// Image `k` of `n` in a batched value.
fn image(value: &TensorData, k: usize, n: usize) -> TensorData {
    let per = value.len() / n;
    let r = k * per..(k + 1) * per;
    match value {
        TensorData::U8(v) => TensorData::U8(v[r].to_vec()),
        TensorData::I8(v) => TensorData::I8(v[r].to_vec()),
        TensorData::I32(v) => TensorData::I32(v[r].to_vec()),
        TensorData::F32(v) => TensorData::F32(v[r].to_vec()),
    }
}

/// Runs `m` on `n` images at once and one at a time; every tensor in `wanted` must agree
/// image by image, and the float executor too.
fn check_batch(m: &Model, n: usize, wanted: &[TensorId], what: &str) {
    let g = m.graph();
    let singles: Vec<Vec<TensorData>> = (0..n).map(|k| random_input(g, 100 + k as u64)).collect();
    let batched: Vec<TensorData> = (0..g.inputs().len())
        .map(|i| stack(&singles.iter().map(|s| s[i].clone()).collect::<Vec<_>>()))
        .collect();
    assert_eq!(m.batch_of(&batched).unwrap(), n, "{what}");
    let got = m.run_with(&batched, wanted).unwrap();
    let got_float = m.run_float_with(&batched, wanted).unwrap();
    for (k, single) in singles.iter().enumerate() {
        let want = m.run_with(single, wanted).unwrap();
        let want_float = m.run_float_with(single, wanted).unwrap();
        for (j, &id) in wanted.iter().enumerate() {
            let shape = m.shape_at(id, n).unwrap();
            assert_eq!(shape[0], n, "{what}: {} at batch {n}", g.tensor(id).name);
            assert_eq!(shape[1..], g.tensor(id).shape[1..], "{what}");
            assert_eq!(
                image(&got[j], k, n),
                want[j],
                "{what}: tensor {} of image {k} of {n}",
                g.tensor(id).name
            );
            let per = want_float[j].len();
            assert_eq!(
                got_float[j][k * per..(k + 1) * per],
                want_float[j][..],
                "{what}: float tensor {} of image {k} of {n}",
                g.tensor(id).name
            );
        }
    }
    // The plain run gives the graph outputs at the batch.
    let outs = m.run(&batched).unwrap();
    for (j, &id) in g.outputs().iter().enumerate() {
        assert_eq!(outs[j].len(), m.shape_at(id, n).unwrap().iter().product());
    }
}

fn every_kernels(what: &str, mut body: impl FnMut(KernelTier, &str)) {
    body(KernelTier::Reference, &format!("{what} on reference"));
    intq_testutil::on_every_tier(what, |isa| {
        body(KernelTier::Fast(isa), &format!("{what} on {}", isa.name()))
    });
}

#[test]
fn small_cnn_batches_equal_single_images_on_every_tier() {
    for dtype in [DType::U8, DType::I8] {
        for float_edges in [false, true] {
            let g = small_cnn(dtype, float_edges, 7);
            let wanted: Vec<TensorId> = g.ops().iter().map(|op| op.output()).collect();
            every_kernels("small_cnn batches", |tier, what| {
                for threads in [1, 2] {
                    let m = model(&g, tier, threads);
                    assert_eq!(m.batch(), 1);
                    for n in [3, 8] {
                        check_batch(&m, n, &wanted, &format!("{what} {dtype} {float_edges}"));
                    }
                }
            });
        }
    }
}

fn q(scale: f32, zero_point: i32) -> Option<Quant> {
    Some(Quant::PerTensor(QuantParams { scale, zero_point }))
}

/// x [1,2,2,3] -> Reshape [1,12] -> Softmax: the reshape's `1` is the batch and moves with it.
#[test]
fn a_reshape_that_bakes_in_the_batch_keeps_it_leading() {
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::U8, &[1, 2, 2, 3], q(0.1, 128));
    let flat = b.tensor("flat", DType::U8, &[1, 12], q(0.1, 128));
    let probs = b.tensor("probs", DType::U8, &[1, 12], q(1.0 / 256.0, 0));
    b.op(Op::Reshape {
        input: x,
        output: flat,
    })
    .op(Op::Softmax {
        input: flat,
        output: probs,
        beta: 1.0,
    })
    .input(x)
    .output(probs);
    let g = b.finish().unwrap();
    let m = model(&g, KernelTier::Reference, 1);
    assert_eq!(m.shape_at(flat, 5).unwrap(), vec![5, 12]);
    check_batch(&m, 5, &[flat, probs], "reshape");
}

/// Two graph inputs joined along axis 0 (the batch): a second image would change what the
/// other image's output holds, so any batch but the graph's is refused, naming the op.
#[test]
fn ops_that_mix_images_refuse_another_batch() {
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::U8, &[1, 4], q(0.1, 128));
    let y = b.tensor("y", DType::U8, &[1, 4], q(0.1, 128));
    let xy = b.tensor("xy", DType::U8, &[2, 4], q(0.1, 128));
    b.op(Op::Concat {
        inputs: vec![x, y],
        output: xy,
        axis: 0,
    })
    .input(x)
    .input(y)
    .output(xy);
    let g = b.finish().unwrap();
    let m = model(&g, KernelTier::Reference, 1);
    let one = TensorData::U8(vec![1; 4]);
    assert_eq!(m.run(&[one.clone(), one]).unwrap()[0].len(), 8);
    let two = TensorData::U8(vec![1; 8]);
    let err = m.run(&[two.clone(), two]).unwrap_err().to_string();
    assert!(
        err.contains("batch 1") && err.contains("op 0 (Concat)") && err.contains("batch axis"),
        "{err}"
    );

    // A reshape that folds the batch into another axis: the batch no longer leads.
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::U8, &[1, 4], q(0.1, 128));
    let flat = b.tensor("flat", DType::U8, &[4], q(0.1, 128));
    b.op(Op::Reshape {
        input: x,
        output: flat,
    })
    .input(x)
    .output(flat);
    let m = model(&b.finish().unwrap(), KernelTier::Reference, 1);
    let err = m
        .run(&[TensorData::U8(vec![1; 12])])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3 image(s)") && err.contains("'flat'") && err.contains("[4]"),
        "{err}"
    );

    // Inputs that disagree on their batch, and sizes no batch explains.
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::U8, &[1, 4], q(0.1, 128));
    let y = b.tensor("y", DType::U8, &[1, 4], q(0.1, 128));
    let s = b.tensor("s", DType::U8, &[1, 4], q(0.2, 128));
    b.op(Op::Add {
        lhs: x,
        rhs: y,
        output: s,
        activation: intq_engine::Activation::None,
    })
    .input(x)
    .input(y)
    .output(s);
    let m = model(&b.finish().unwrap(), KernelTier::Reference, 1);
    let err = m
        .run(&[TensorData::U8(vec![1; 8]), TensorData::U8(vec![1; 12])])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2 image(s)") && err.contains("holds 3"),
        "{err}"
    );
    let err = m
        .run(&[TensorData::U8(vec![1; 6]), TensorData::U8(vec![1; 6])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("6 elements were given"), "{err}");
    // And the batched Add itself works.
    let out = m
        .run(&[TensorData::U8(vec![130; 8]), TensorData::U8(vec![129; 8])])
        .unwrap();
    assert_eq!(out[0].len(), 8);
}

/// A graph built for two images runs one or three: x [2,2,2,3] -> Reshape [2,12] -> Softmax.
#[test]
fn a_graph_built_for_two_images_runs_one_or_three() {
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::I8, &[2, 2, 2, 3], q(0.05, -3));
    let flat = b.tensor("flat", DType::I8, &[2, 12], q(0.05, -3));
    let probs = b.tensor("probs", DType::I8, &[2, 12], q(1.0 / 256.0, -128));
    b.op(Op::Reshape {
        input: x,
        output: flat,
    })
    .op(Op::Softmax {
        input: flat,
        output: probs,
        beta: 1.0,
    })
    .input(x)
    .output(probs);
    let g = b.finish().unwrap();
    every_kernels("batch 2 graph", |tier, what| {
        let m = model(&g, tier, 1);
        assert_eq!(m.batch(), 2);
        let images: Vec<TensorData> = (0..3)
            .map(|k| TensorData::I8((0..12).map(|i| ((i * 37 + k * 101) % 256) as i8).collect()))
            .collect();
        let one: Vec<TensorData> = images
            .iter()
            .map(|im| m.run(std::slice::from_ref(im)).unwrap().remove(0))
            .collect();
        assert_eq!(m.shape_at(probs, 1).unwrap(), vec![1, 12]);
        let two = m.run(&[stack(&images[..2])]).unwrap().remove(0);
        let three = m.run(&[stack(&images)]).unwrap().remove(0);
        assert_eq!(two, stack(&one[..2]), "{what}");
        assert_eq!(three, stack(&one), "{what}");
    });
}

/// A model keeps the plans of its eight most recently run batches; an evicted batch is planned
/// again and gives the same bytes.
#[test]
fn the_plans_of_recent_batches_are_kept() {
    let g = small_cnn(DType::U8, false, 2);
    let m = model(&g, KernelTier::Reference, 1);
    let image = random_input(&g, 4).remove(0);
    let run = |n: usize| {
        let x = stack(&vec![image.clone(); n]);
        m.run(std::slice::from_ref(&x)).unwrap().remove(0)
    };
    assert!(m.planned_batches().is_empty());
    let one = run(1);
    assert!(m.planned_batches().is_empty(), "batch 1 is the graph's own");
    let two = run(2);
    for n in 3..=10 {
        run(n);
    }
    assert_eq!(m.planned_batches(), (3..=10).collect::<Vec<_>>());
    run(4);
    assert_eq!(m.planned_batches(), vec![3, 5, 6, 7, 8, 9, 10, 4]);
    assert_eq!(run(2), two);
    assert_eq!(m.planned_batches(), vec![5, 6, 7, 8, 9, 10, 4, 2]);
    assert_eq!(two, stack(&[one.clone(), one]));
}
