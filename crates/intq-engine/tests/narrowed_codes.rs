//! Activations narrowed below 8 bits (`Tensor::code_range`, what QAT at `--bits-a 4` trains):
//! every op that writes one clamps to it, on the reference executor and on every fast tier; the
//! `.intq` format keeps it; validation and a run refuse what would break it.

use intq_engine::examples::{random_input, small_cnn};
use intq_engine::format;
use intq_engine::{
    DType, EngineError, ExecOptions, Graph, GraphError, KernelTier, Model, OpKind, TensorData,
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

/// The reference tier and every fast tier this CPU has (see `intq_testutil::tiers`).
fn tiers() -> Vec<KernelTier> {
    let fast = intq_testutil::tiers("narrowed codes");
    std::iter::once(KernelTier::Reference)
        .chain(fast.into_iter().map(KernelTier::Fast))
        .collect()
}

fn codes(d: &TensorData) -> Vec<i32> {
    match d {
        TensorData::U8(v) => v.iter().map(|&c| c as i32).collect(),
        TensorData::I8(v) => v.iter().map(|&c| c as i32).collect(),
        other => panic!("not codes: {:?}", other.dtype()),
    }
}

/// Eight codes around the zero point, inside the type: narrow enough that real outputs clip.
fn range_around(g: &Graph, id: TensorId) -> (i32, i32) {
    let t = g.tensor(id);
    let z = t.params().unwrap().zero_point;
    let (tlo, thi) = t.code_limits().unwrap();
    let lo = (z - 3).max(tlo).min(thi - 7);
    (lo, lo + 7)
}

/// `g` with tensor `id` narrowed to `range`, and with it every tensor that ops passing codes
/// through (pools, Reshape, Pad) write from it, as validation requires.
fn narrowed(g: &Graph, id: TensorId, range: (i32, i32)) -> Graph {
    let mut tensors = g.tensors().to_vec();
    let mut chain = vec![id];
    while let Some(t) = chain.pop() {
        tensors[t.index()].code_range = Some(range);
        for op in g.ops() {
            let passes = matches!(
                op.kind(),
                OpKind::AveragePool2d | OpKind::MaxPool2d | OpKind::Reshape | OpKind::Pad
            );
            if passes && op.inputs()[0] == t {
                chain.push(op.output());
            }
        }
    }
    Graph::new(
        tensors,
        g.ops().to_vec(),
        g.inputs().to_vec(),
        g.outputs().to_vec(),
    )
    .expect("a narrowed graph is valid")
}

/// For each op that requantizes (Quantize, conv, depthwise, FC, Add) in small_cnn: narrowing its
/// output gives exactly the 8-bit output clamped to the range, on every tier and thread count.
#[test]
fn each_requantizing_op_clamps_to_its_narrowed_output() {
    let mut clipped = 0usize;
    for dtype in [DType::U8, DType::I8] {
        let g = small_cnn(dtype, true, 5);
        let wide = model(&g, KernelTier::Reference, 1);
        for op in g.ops() {
            if !matches!(
                op.kind(),
                OpKind::Quantize
                    | OpKind::Conv2d
                    | OpKind::DepthwiseConv2d
                    | OpKind::FullyConnected
                    | OpKind::Add
            ) {
                continue;
            }
            let out = op.output();
            let (lo, hi) = range_around(&g, out);
            let narrow = narrowed(&g, out, (lo, hi));
            for tier in tiers() {
                for threads in [1, 2] {
                    let m = model(&narrow, tier, threads);
                    for seed in 0..3 {
                        let input = random_input(&g, seed);
                        let want = codes(&wide.run_with(&input, &[out]).unwrap()[0]);
                        let got = codes(&m.run_with(&input, &[out]).unwrap()[0]);
                        let clamped: Vec<i32> = want.iter().map(|&c| c.clamp(lo, hi)).collect();
                        assert_eq!(
                            got,
                            clamped,
                            "{dtype} {}: tier {tier:?}, {threads} threads, seed {seed}, codes \
                             [{lo}, {hi}]",
                            op.kind().name()
                        );
                        clipped += want.iter().filter(|c| !(lo..=hi).contains(*c)).count();
                    }
                }
            }
        }
    }
    assert!(
        clipped > 0,
        "no output ever left its narrowed range: the test tests nothing"
    );
}

/// Narrowing every activation at once (4-bit-like ranges everywhere except the fixed-range
/// Softmax output): the fast tiers equal the reference and nothing leaves its range.
#[test]
fn a_wholly_narrowed_graph_stays_in_range_on_every_tier() {
    for dtype in [DType::U8, DType::I8] {
        let g = small_cnn(dtype, true, 9);
        let mut tensors = g.tensors().to_vec();
        let softmax_out = g
            .ops()
            .iter()
            .find(|op| op.kind() == OpKind::Softmax)
            .map(|op| op.output());
        for (i, t) in tensors.iter_mut().enumerate() {
            let id = TensorId(i as u32);
            if t.dtype == dtype && !t.is_constant() && Some(id) != softmax_out {
                t.code_range = Some(range_around(&g, id));
            }
        }
        let g = Graph::new(
            tensors,
            g.ops().to_vec(),
            g.inputs().to_vec(),
            g.outputs().to_vec(),
        )
        .expect("valid");
        let every: Vec<TensorId> = g.ops().iter().map(|op| op.output()).collect();
        let reference = model(&g, KernelTier::Reference, 1);
        for tier in tiers() {
            let m = model(&g, tier, 2);
            for seed in 0..3 {
                let input = random_input(&g, seed);
                let want = reference.run_with(&input, &every).unwrap();
                let got = m.run_with(&input, &every).unwrap();
                assert!(got == want, "{dtype}: tier {tier:?} seed {seed} differs");
                for (id, v) in every.iter().zip(&got) {
                    if let Some((lo, hi)) = g.tensor(*id).code_range {
                        let c = codes(v);
                        assert!(
                            c.iter().all(|c| (lo..=hi).contains(c)),
                            "{dtype}: {} left [{lo}, {hi}]",
                            g.tensor(*id).name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_format_keeps_the_range_and_stamps_minor_version_2() {
    let g = small_cnn(DType::U8, true, 3);
    let plain = format::to_bytes(&g);
    assert!(
        u16::from_le_bytes([plain[10], plain[11]]) < 2,
        "no narrowed tensor: older minor"
    );
    let conv = g.tensor_by_name("conv").unwrap();
    let n = narrowed(&g, conv, range_around(&g, conv));
    let bytes = format::to_bytes(&n);
    assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 2);
    let back = format::from_bytes(&bytes).unwrap();
    assert_eq!(back, n);
    assert_eq!(back.tensor(conv).code_range, n.tensor(conv).code_range);
    assert_eq!(format::to_bytes(&back), bytes);
}

fn with_range(g: &Graph, name: &str, range: (i32, i32)) -> Result<Graph, GraphError> {
    let mut tensors = g.tensors().to_vec();
    let id = g.tensor_by_name(name).unwrap();
    tensors[id.index()].code_range = Some(range);
    Graph::new(
        tensors,
        g.ops().to_vec(),
        g.inputs().to_vec(),
        g.outputs().to_vec(),
    )
}

#[track_caller]
fn refused(r: Result<Graph, GraphError>, needles: &[&str]) {
    let msg = r.expect_err("validation must refuse it").to_string();
    for n in needles {
        assert!(msg.contains(n), "'{n}' not in: {msg}");
    }
}

#[test]
fn validation_refuses_ranges_that_break_the_codes() {
    let g = small_cnn(DType::U8, true, 1);
    let z = g
        .tensor(g.tensor_by_name("conv").unwrap())
        .params()
        .unwrap()
        .zero_point;
    refused(
        with_range(&g, "conv", (-1, 15)),
        &["conv", "[-1, 15]", "uint8"],
    );
    refused(with_range(&g, "conv", (0, 256)), &["conv", "[0, 256]"]);
    refused(with_range(&g, "conv", (7, 7)), &["at least two codes"]);
    refused(
        with_range(&g, "conv", (z + 1, z + 9)),
        &["zero point", "outside its code range"],
    );
    refused(
        with_range(&g, "conv/weights", (0, 15)),
        &["only activations"],
    );
    refused(
        with_range(&g, "input", (0, 15)),
        &["float32", "cannot be narrowed"],
    );
    // Softmax writes fixed output params over the whole type.
    let probs = g
        .ops()
        .iter()
        .find(|op| op.kind() == OpKind::Softmax)
        .unwrap()
        .output();
    let name = g.tensor(probs).name.clone();
    let zp = g.tensor(probs).params().unwrap().zero_point;
    refused(
        with_range(&g, &name, (zp, zp + 15)),
        &["Softmax", "cannot write"],
    );
    // A pool passes codes through: its output cannot hold other codes than its input.
    let pool = g
        .ops()
        .iter()
        .find(|op| op.kind() == OpKind::AveragePool2d)
        .unwrap();
    let pool_out = g.tensor(pool.output()).name.clone();
    let zo = g.tensor(pool.output()).params().unwrap().zero_point;
    refused(
        with_range(&g, &pool_out, (zo.min(240), zo.min(240) + 15)),
        &["passes codes through"],
    );
}

#[test]
fn a_run_refuses_graph_input_codes_outside_the_narrowed_range() {
    let g = small_cnn(DType::I8, false, 2);
    let input = g.inputs()[0];
    let n = narrowed(&g, input, (-8, 7));
    let m = Model::new(n.clone()).unwrap();
    // random_input draws from the narrowed range, so this runs.
    m.run(&random_input(&n, 0)).unwrap();
    let mut bad = random_input(&n, 0);
    if let TensorData::I8(v) = &mut bad[0] {
        v[5] = 8;
    }
    let err = m.run(&bad).unwrap_err();
    assert!(matches!(err, EngineError::Run(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("[-8, 7]") && msg.contains("element 5 is 8"),
        "{msg}"
    );
}
