//! The example CNN end to end, uint8 and int8, codes or floats at the edges: the executor against
//! a hand-written sequence of reference-kernel calls (an independent check of the planner and
//! executor), buffer reuse against keeping every tensor, the integer model against the float
//! executor, intermediates through `run_with`, a hand-computed graph, and input errors.

use intq_engine::{
    examples, Activation, DType, EngineError, Graph, GraphBuilder, Model, Op, Padding, Quant,
    QuantParams, TensorData, TensorId,
};
use intq_kernels::reference::{self as k, AddParams, SoftmaxParams};
use intq_kernels::{ConvParams, Multipliers, OutputStage, PaddingValues, PoolParams, QElem};
use intq_quant::QuantizedMultiplier;

const CONFIGS: [(DType, bool); 4] = [
    (DType::U8, false),
    (DType::U8, true),
    (DType::I8, false),
    (DType::I8, true),
];

/// Codes of one 8-bit type in and out of `TensorData`.
trait Code: QElem {
    fn get(d: &TensorData) -> Vec<Self>;
    fn wrap(v: Vec<Self>) -> TensorData;
}
impl Code for u8 {
    fn get(d: &TensorData) -> Vec<u8> {
        match d {
            TensorData::U8(v) => v.clone(),
            other => panic!("expected uint8, got {:?}", other.dtype()),
        }
    }
    fn wrap(v: Vec<u8>) -> TensorData {
        TensorData::U8(v)
    }
}
impl Code for i8 {
    fn get(d: &TensorData) -> Vec<i8> {
        match d {
            TensorData::I8(v) => v.clone(),
            other => panic!("expected int8, got {:?}", other.dtype()),
        }
    }
    fn wrap(v: Vec<i8>) -> TensorData {
        TensorData::I8(v)
    }
}

fn id(g: &Graph, name: &str) -> TensorId {
    g.tensor_by_name(name)
        .unwrap_or_else(|| panic!("no tensor '{name}'"))
}

fn params(g: &Graph, name: &str) -> QuantParams {
    g.tensor(id(g, name)).params().unwrap()
}

/// Scales and zero points of a weight tensor, one entry per output channel.
fn weight_params(g: &Graph, name: &str, channels: usize) -> (Vec<f32>, Vec<i32>) {
    match &g.tensor(id(g, name)).quant {
        Some(Quant::PerTensor(p)) => (vec![p.scale; channels], vec![p.zero_point; channels]),
        Some(Quant::PerChannel(cp)) => (cp.scales().to_vec(), cp.zero_points().to_vec()),
        None => panic!("{name} has no params"),
    }
}

fn constant<T: Code>(g: &Graph, name: &str) -> Vec<T> {
    T::get(g.tensor(id(g, name)).data.as_ref().unwrap())
}

fn bias(g: &Graph, name: &str) -> Vec<i32> {
    match g.tensor(id(g, name)).data.as_ref().unwrap() {
        TensorData::I32(v) => v.clone(),
        _ => panic!(),
    }
}

/// `M_k = S_in S_w[k] / S_out` (docs/spec.md §4.4), computed here from the tensors' params.
fn multipliers(s_in: f32, s_w: &[f32], s_out: f32) -> Vec<QuantizedMultiplier> {
    s_w.iter()
        .map(|&s| QuantizedMultiplier::from_real(s_in as f64 * s as f64 / s_out as f64).unwrap())
        .collect()
}

fn stage<'a>(
    bias: &'a [i32],
    ms: &'a [QuantizedMultiplier],
    z_out: i32,
    clamp: (i32, i32),
) -> OutputStage<'a> {
    OutputStage {
        bias: Some(bias),
        multipliers: Multipliers::PerChannel(ms),
        output_zero_point: z_out,
        clamp_min: clamp.0,
        clamp_max: clamp.1,
    }
}

/// Every activation of small_cnn, computed by calling the reference kernels in order with
/// parameters derived here, not by the planner.
struct Manual<T> {
    input: Vec<T>,
    conv: Vec<T>,
    dw: Vec<T>,
    add: Vec<T>,
    pool: Vec<T>,
    logits: Vec<T>,
    probs: Vec<T>,
    /// Set when the graph has float edges.
    probs_f32: Option<Vec<f32>>,
}

fn manual<T: Code>(g: &Graph, edges: bool, x: &TensorData) -> Manual<T> {
    let (qmin, qmax) = (T::MIN, T::MAX);
    let q_in_name = if edges { "input_q" } else { "input" };
    let p_in = params(g, q_in_name);
    let input: Vec<T> = match x {
        TensorData::F32(reals) => {
            let mut codes = vec![T::default(); reals.len()];
            k::quantize(reals, p_in, &mut codes);
            codes
        }
        codes => T::get(codes),
    };

    // conv 3x3 SAME stride 1 on 8x8: total padding (8-1)*1 + 3 - 8 = 2, so 1 on every side.
    let same_3x3 = ConvParams {
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
    let p_conv = params(g, "conv");
    let (s_w, z_w) = weight_params(g, "conv/weights", 8);
    let m = multipliers(p_in.scale, &s_w, p_conv.scale);
    // ReLU: [max(qmin, Z), qmax].
    let relu = (qmin.max(p_conv.zero_point), qmax);
    let mut conv = vec![T::default(); 512];
    let b = bias(g, "conv/bias");
    k::conv2d(
        &input,
        [1, 8, 8, 3],
        p_in.zero_point,
        &constant::<T>(g, "conv/weights"),
        [8, 3, 3, 3],
        &z_w,
        &same_3x3,
        &stage(&b, &m, p_conv.zero_point, relu),
        &mut conv,
        [1, 8, 8, 8],
    );

    let p_dw = params(g, "dw");
    let (s_w, z_w) = weight_params(g, "dw/weights", 8);
    let m = multipliers(p_conv.scale, &s_w, p_dw.scale);
    // ReLU6: [max(qmin, Z), min(qmax, Z + round(6 / S))].
    let six = p_dw.zero_point + (6.0f32 / p_dw.scale).round() as i32;
    let relu6 = (qmin.max(p_dw.zero_point), qmax.min(six));
    let mut dw = vec![T::default(); 512];
    let b = bias(g, "dw/bias");
    k::depthwise_conv2d(
        &conv,
        [1, 8, 8, 8],
        p_conv.zero_point,
        &constant::<T>(g, "dw/weights"),
        [1, 3, 3, 8],
        &z_w,
        1,
        &same_3x3,
        &stage(&b, &m, p_dw.zero_point, relu6),
        &mut dw,
        [1, 8, 8, 8],
    );

    let p_add = params(g, "add");
    let add_params = AddParams::new(p_dw, p_conv, p_add, qmin, qmax).unwrap();
    let mut add = vec![T::default(); 512];
    let s = [1, 8, 8, 8];
    k::add(&dw, &s, &conv, &s, &add_params, &mut add, &s);

    let pool_params = PoolParams {
        filter_h: 2,
        filter_w: 2,
        stride_h: 2,
        stride_w: 2,
        padding: PaddingValues::default(),
        clamp_min: qmin,
        clamp_max: qmax,
    };
    let mut pool = vec![T::default(); 128];
    k::average_pool(&add, [1, 8, 8, 8], &pool_params, &mut pool, [1, 4, 4, 8]);

    let p_pool = params(g, "pool");
    assert_eq!(p_pool, p_add, "average pool keeps (S, Z)");
    let p_logits = params(g, "logits");
    let (s_w, z_w) = weight_params(g, "fc/weights", 10);
    let m = multipliers(p_pool.scale, &s_w, p_logits.scale);
    let mut logits = vec![T::default(); 10];
    let b = bias(g, "fc/bias");
    k::fully_connected(
        &pool,
        1,
        128,
        p_pool.zero_point,
        &constant::<T>(g, "fc/weights"),
        10,
        &z_w,
        &stage(&b, &m, p_logits.zero_point, (qmin, qmax)),
        &mut logits,
    );

    let sp = SoftmaxParams::new(p_logits.scale, 1.0).unwrap();
    let mut probs = vec![T::default(); 10];
    k::softmax(&logits, 1, 10, &sp, &mut probs);

    let probs_f32 = edges.then(|| {
        let mut reals = vec![0f32; 10];
        k::dequantize(&probs, params(g, "probs_q"), &mut reals);
        reals
    });
    Manual {
        input,
        conv,
        dw,
        add,
        pool,
        logits,
        probs,
        probs_f32,
    }
}

fn check_against_manual<T: Code>(dtype: DType, edges: bool) {
    for seed in 0..2 {
        let g = examples::small_cnn(dtype, edges, seed);
        let model = Model::new(g.clone()).unwrap();
        for input_seed in 0..3 {
            let x = examples::random_input(&g, 100 + input_seed);
            let want = manual::<T>(&g, edges, &x[0]);
            let out = model.run(&x).unwrap();
            assert_eq!(out.len(), 1);
            match &want.probs_f32 {
                Some(reals) => assert_eq!(out[0], TensorData::F32(reals.clone())),
                None => assert_eq!(out[0], T::wrap(want.probs.clone())),
            }
            // Intermediates, through run_with (which re-plans memory to keep them).
            let q = |n: &str| {
                if edges {
                    format!("{n}_q")
                } else {
                    n.to_string()
                }
            };
            let names = [
                q("input"),
                "conv".into(),
                "dw".into(),
                "add".into(),
                "pool".into(),
                "logits".into(),
                q("probs"),
            ];
            let ids: Vec<TensorId> = names.iter().map(|n| id(&g, n)).collect();
            let got = model.run_with(&x, &ids).unwrap();
            let expected = [
                &want.input,
                &want.conv,
                &want.dw,
                &want.add,
                &want.pool,
                &want.logits,
                &want.probs,
            ];
            for ((name, got), want) in names.iter().zip(&got).zip(expected) {
                assert_eq!(
                    got,
                    &T::wrap(want.clone()),
                    "{dtype:?} edges={edges} seed={seed}: {name}"
                );
            }
        }
    }
}

#[test]
fn executor_equals_reference_kernels_called_by_hand() {
    check_against_manual::<u8>(DType::U8, false);
    check_against_manual::<u8>(DType::U8, true);
    check_against_manual::<i8>(DType::I8, false);
    check_against_manual::<i8>(DType::I8, true);
}

#[test]
fn buffer_reuse_does_not_change_results() {
    for (dtype, edges) in CONFIGS {
        let g = examples::small_cnn(dtype, edges, 5);
        let model = Model::new(g.clone()).unwrap();
        // Run-time tensors: input, conv, dw, add, pool, logits, probs (+ the two float edges).
        // Walking the plan: input's buffer is free once conv has run and takes dw; add needs a
        // third (conv and dw are both still live); pool, logits and probs reuse freed ones. With
        // float edges the f32 input gets an f32 buffer (codes never share with reals), which the
        // f32 output later reuses: one more buffer in all.
        let stats = model.memory_stats();
        assert_eq!(stats.buffers, if edges { 4 } else { 3 }, "{stats:?}");
        assert!(stats.bytes < stats.bytes_without_reuse, "{stats:?}");
        let all: Vec<TensorId> = (0..g.tensors().len() as u32).map(TensorId).collect();
        for s in 0..3 {
            let x = examples::random_input(&g, s);
            let plain = model.run(&x).unwrap();
            let everything = model.run_with(&x, &all).unwrap();
            for (i, &out) in g.outputs().iter().enumerate() {
                assert_eq!(plain[i], everything[out.index()]);
            }
            // Each intermediate kept alone agrees with it kept among all the others.
            for &t in &all {
                let alone = model.run_with(&x, &[t]).unwrap();
                assert_eq!(alone[0], everything[t.index()], "{}", g.tensor(t).name);
            }
            // Constants come back as stored; the graph input as given.
            let w = id(&g, "fc/weights");
            assert_eq!(
                Some(&everything[w.index()]),
                g.tensor(w).data.as_ref(),
                "constants are returned as they are"
            );
            assert_eq!(everything[g.inputs()[0].index()], x[0]);
        }
    }
}

#[test]
fn ops_stored_out_of_order_run_the_same() {
    for (dtype, edges) in CONFIGS {
        let g = examples::small_cnn(dtype, edges, 2);
        let mut ops = g.ops().to_vec();
        // Rotate: [pool, fc, softmax, ..., conv, dw, add] is still a valid DAG to sort.
        ops.rotate_left(3);
        let shuffled = Graph::new(
            g.tensors().to_vec(),
            ops,
            g.inputs().to_vec(),
            g.outputs().to_vec(),
        )
        .unwrap();
        let (a, b) = (
            Model::new(g.clone()).unwrap(),
            Model::new(shuffled).unwrap(),
        );
        let x = examples::random_input(&g, 11);
        assert_eq!(a.run(&x).unwrap(), b.run(&x).unwrap());
    }
}

/// Real value of each output code: `S (q - Z)`.
fn reals_of(d: &TensorData, p: QuantParams) -> Vec<f32> {
    let codes: Vec<i32> = match d {
        TensorData::U8(v) => v.iter().map(|&q| q as i32).collect(),
        TensorData::I8(v) => v.iter().map(|&q| q as i32).collect(),
        TensorData::F32(v) => return v.clone(),
        TensorData::I32(_) => panic!(),
    };
    codes.iter().map(|&q| p.dequantize(q)).collect()
}

fn argmaxes(v: &[f32]) -> Vec<usize> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (0..v.len()).filter(|&i| v[i] == max).collect()
}

/// How far the integer conv output may be from the float one, in LSB of the conv's output: the
/// integer result is the real accumulator rounded once (0.5 LSB; the fixed-point multiplier's
/// relative error of 2^-31 is far below that), plus, with float edges, the input's own rounding
/// (at most S_in / 2 per element) carried through the filter: at most
/// `S_in / 2 * max_k sum_j |w_kj|` in reals. ReLU cannot widen a difference.
fn conv_bound(g: &Graph, edges: bool) -> f32 {
    let slack = 1e-3; // f32 accumulation in the float executor
    if !edges {
        return 0.5 + slack;
    }
    let (s_w, z_w) = weight_params(g, "conv/weights", 8);
    let w: Vec<i32> = match g.tensor(id(g, "conv/weights")).data.as_ref().unwrap() {
        TensorData::U8(v) => v.iter().map(|&q| q as i32).collect(),
        TensorData::I8(v) => v.iter().map(|&q| q as i32).collect(),
        _ => panic!(),
    };
    let l1 = (0..8)
        .map(|k| {
            w[k * 27..(k + 1) * 27]
                .iter()
                .map(|&q| s_w[k] * (q - z_w[k]).abs() as f32)
                .sum::<f32>()
        })
        .fold(0f32, f32::max);
    let s_in = params(g, "input_q").scale;
    0.5 + 0.5 * s_in * l1 / params(g, "conv").scale + slack
}

/// Integer vs float executor on small_cnn.
///
/// The first layer is bounded analytically ([`conv_bound`]). Deeper layers are bounded
/// empirically, on exactly this test's deterministic inputs (3 models x 40 inputs per
/// configuration): errors grow with each requantization, which adds up to half an LSB of its
/// own scale on top of the inherited error carried through the layer; the FC sums 128
/// slightly-off inputs, and in the softmax output a logit error d moves p_i by about
/// p_i (d_i - sum_j p_j d_j). The bounds below leave room over the errors these inputs give
/// without hiding a real defect (an off-by-one multiplier shift or a wrong zero point shows up
/// as tens of LSB).
///
/// Top-1: the network is untrained and the inputs are noise, so its probabilities are flat (the
/// top two are often within 1/256 of each other) and some disagreement is expected exactly
/// where the float margin is below the integer error; a tie among the top integer codes that
/// includes the float winner counts as agreement in the second threshold.
#[test]
fn integer_model_tracks_the_float_model() {
    const LOGITS_LSB: f32 = 5.0;
    const PROBS_LSB: f32 = 8.0;
    for (dtype, edges) in CONFIGS {
        let (mut agree, mut agree_or_tied, mut total) = (0, 0, 0);
        let mut worst = [0f32; 3];
        for seed in 0..3 {
            let g = examples::small_cnn(dtype, edges, seed);
            let model = Model::new(g.clone()).unwrap();
            let probs_q = if edges { "probs_q" } else { "probs" };
            let ids = [id(&g, "conv"), id(&g, "logits"), id(&g, probs_q)];
            let bound = conv_bound(&g, edges);
            let ps = [
                params(&g, "conv"),
                params(&g, "logits"),
                params(&g, probs_q),
            ];
            for s in 0..40 {
                let x = examples::random_input(&g, 1000 + s);
                let int = model.run_with(&x, &ids).unwrap();
                let float = model.run_float_with(&x, &ids).unwrap();
                for i in 0..3 {
                    let r = reals_of(&int[i], ps[i]);
                    for (a, b) in r.iter().zip(&float[i]) {
                        worst[i] = worst[i].max((a - b).abs() / ps[i].scale);
                    }
                }
                assert!(worst[0] <= bound, "conv {} > {bound}", worst[0]);
                // The graph output itself (f32 with float edges) tells the same story.
                let out_int = reals_of(&model.run(&x).unwrap()[0], ps[2]);
                let out_float = &model.run_float(&x).unwrap()[0];
                let f = argmaxes(out_float)[0];
                let i = argmaxes(&out_int);
                agree += (i == [f]) as usize;
                agree_or_tied += i.contains(&f) as usize;
                total += 1;
            }
        }
        eprintln!(
            "{dtype:?} edges={edges}: max |int - float| conv {:.2}, logits {:.2}, probs {:.2} LSB; \
             top-1 {agree}/{total} (with ties {agree_or_tied}/{total})",
            worst[0], worst[1], worst[2]
        );
        assert!(worst[1] <= LOGITS_LSB, "logits {}", worst[1]);
        assert!(worst[2] <= PROBS_LSB, "probs {}", worst[2]);
        assert!(agree * 100 >= total * 90, "top-1 {agree}/{total}");
        assert!(
            agree_or_tied * 100 >= total * 95,
            "top-1 {agree_or_tied}/{total}"
        );
    }
}

/// A 1x1 convolution small enough to compute by hand, between float edges:
/// input (S, Z) = (0.5, 128), weight code 3 with (0.25, 1) so w = 0.5, no bias,
/// output (0.125, 10) with ReLU, so M = 0.5 * 0.25 / 0.125 = 1 exactly.
fn one_by_one(dtype_edges: bool) -> Graph {
    let mut b = GraphBuilder::new();
    let pq = |scale, zero_point| Some(Quant::PerTensor(QuantParams { scale, zero_point }));
    let x = b.tensor("x", DType::U8, &[1, 2, 2, 1], pq(0.5, 128));
    let w = b.constant("w", &[1, 1, 1, 1], pq(0.25, 1), TensorData::U8(vec![3]));
    let y = b.tensor("y", DType::U8, &[1, 2, 2, 1], pq(0.125, 10));
    b.op(Op::Conv2d {
        input: x,
        filter: w,
        bias: None,
        output: y,
        stride: [1, 1],
        dilation: [1, 1],
        padding: Padding::Valid,
        activation: Activation::Relu,
    });
    if dtype_edges {
        let xf = b.tensor("x_f32", DType::F32, &[1, 2, 2, 1], None);
        let yf = b.tensor("y_f32", DType::F32, &[1, 2, 2, 1], None);
        b.op(Op::Quantize {
            input: xf,
            output: x,
        });
        b.op(Op::Dequantize {
            input: y,
            output: yf,
        });
        b.input(xf).output(yf);
    } else {
        b.input(x).output(y);
    }
    b.finish().unwrap()
}

#[test]
fn hand_computed_one_by_one_convolution() {
    // q_out = clamp((q - 128) * (3 - 1) * 1 + 10, ReLU = [10, 255]):
    //   130 -> 4 + 10 = 14;  126 -> -4 + 10 = 6 -> 10;  128 -> 10;  255 -> 254 + 10 = 264 -> 255.
    let model = Model::new(one_by_one(false)).unwrap();
    let out = model
        .run(&[TensorData::U8(vec![130, 126, 128, 255])])
        .unwrap();
    assert_eq!(out, vec![TensorData::U8(vec![14, 10, 10, 255])]);
    // Float: x = 0.5 (q - 128) = [1, -1, 0, 63.5]; y = relu(0.5 x) = [0.5, 0, 0, 31.75]; the
    // integer model saturates the last at (255 - 10) * 0.125 = 30.625.
    let f = model
        .run_float(&[TensorData::U8(vec![130, 126, 128, 255])])
        .unwrap();
    assert_eq!(f, vec![vec![0.5, 0.0, 0.0, 31.75]]);

    // With float edges: 1.0 -> 130, -0.75 -> 128 + round(-1.5) = 126 (half away from zero),
    // 0.2 -> 128 + round(0.4) = 128, 1e6 -> 255; outputs dequantized: (q - 10) * 0.125.
    let model = Model::new(one_by_one(true)).unwrap();
    let x = [TensorData::F32(vec![1.0, -0.75, 0.2, 1e6])];
    let out = model.run(&x).unwrap();
    assert_eq!(out, vec![TensorData::F32(vec![0.5, 0.0, 0.0, 30.625])]);
    // The float executor treats Quantize as the identity: relu(0.5 x) with no clamp at the
    // top of the range.
    let f = model.run_float(&x).unwrap();
    assert_eq!(f, vec![vec![0.5, 0.0, 0.1, 5e5]]);
}

#[test]
fn run_rejects_bad_inputs_naming_them() {
    let g = examples::small_cnn(DType::U8, false, 0);
    let model = Model::new(g.clone()).unwrap();
    let msg = |r: Result<Vec<TensorData>, EngineError>| match r {
        Err(e @ EngineError::Run(_)) => e.to_string(),
        other => panic!("expected a run error, got {other:?}"),
    };
    let m = msg(model.run(&[]));
    assert!(m.contains("1 inputs but 0 values"), "{m}");
    let m = msg(model.run(&[TensorData::I8(vec![0; 192])]));
    assert!(
        m.contains("input 0 ('input' #0) is uint8, but a int8 value"),
        "{m}"
    );
    let m = msg(model.run(&[TensorData::U8(vec![0; 191])]));
    assert!(
        m.contains("'input'") && m.contains("192 elements") && m.contains("191"),
        "{m}"
    );
    let x = examples::random_input(&g, 0);
    let m = msg(model.run_with(&x, &[TensorId(99)]));
    assert!(m.contains("#99"), "{m}");
    // The float executor takes codes or reals for a quantized input, but checks the length.
    assert!(model.run_float(&[TensorData::F32(vec![0.0; 192])]).is_ok());
    match model.run_float(&[TensorData::F32(vec![0.0; 3])]) {
        Err(EngineError::Run(m)) => assert!(m.contains("'input'"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unformable_multiplier_is_an_error_naming_the_op() {
    // S_in S_w / S_out = 1 * 1 / 2^-40 = 2^40 is beyond the fixed-point multiplier's range.
    let mut b = GraphBuilder::new();
    let pq = |scale, zero_point| Some(Quant::PerTensor(QuantParams { scale, zero_point }));
    let x = b.tensor("x", DType::I8, &[1, 4], pq(1.0, 0));
    let w = b.constant("w", &[2, 4], pq(1.0, 0), TensorData::I8(vec![1; 8]));
    let y = b.tensor("y", DType::I8, &[1, 2], pq(2f32.powi(-40), 0));
    b.op(Op::FullyConnected {
        input: x,
        weights: w,
        bias: None,
        output: y,
        activation: Activation::None,
    });
    b.input(x).output(y);
    let err = Model::new(b.finish().unwrap()).unwrap_err().to_string();
    assert!(
        err.contains("op 0 (FullyConnected)") && err.contains("multiplier"),
        "{err}"
    );
}

#[test]
fn save_and_load_round_trip_runs_the_same() {
    let dir = std::env::temp_dir().join(format!("intq-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (dtype, edges) in CONFIGS {
        let model = Model::new(examples::small_cnn(dtype, edges, 4)).unwrap();
        let path = dir.join(format!("m_{dtype:?}_{edges}.intq"));
        model.save(&path).unwrap();
        let back = Model::load(&path).unwrap();
        assert_eq!(back.graph(), model.graph());
        let x = examples::random_input(model.graph(), 8);
        assert_eq!(back.run(&x).unwrap(), model.run(&x).unwrap());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The ops small_cnn does not use (max pool, reshape, concat with a requantized input, broadcast
/// add with ReluN1To1, logistic), for type `T`: zero points are the uint8 ones shifted by
/// `T::MIN` so both types see the same reals.
fn other_ops_graph<T: Code>(dtype: DType) -> Graph {
    let off = T::MIN;
    let pq = |scale, zero_point: i32| {
        Some(Quant::PerTensor(QuantParams {
            scale,
            zero_point: zero_point + off,
        }))
    };
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", dtype, &[1, 4, 4, 2], pq(0.1, 100));
    let mp = b.tensor("mp", dtype, &[1, 2, 2, 2], pq(0.1, 100));
    let r = b.tensor("r", dtype, &[2, 4], pq(0.1, 100));
    let y = b.tensor("y", dtype, &[2, 3], pq(0.05, 30));
    let c = b.tensor("c", dtype, &[2, 7], pq(0.1, 100));
    let bias = b.tensor("b", dtype, &[7], pq(0.2, 5));
    let a = b.tensor("a", dtype, &[2, 7], pq(0.15, 90));
    let l = b.tensor("l", dtype, &[2, 7], pq(1.0 / 256.0, 0));
    b.op(Op::MaxPool2d {
        input: x,
        output: mp,
        filter: [2, 2],
        stride: [2, 2],
        padding: Padding::Valid,
        activation: Activation::Relu,
    });
    b.op(Op::Reshape {
        input: mp,
        output: r,
    });
    b.op(Op::Concat {
        inputs: vec![r, y],
        output: c,
        axis: 1,
    });
    b.op(Op::Add {
        lhs: c,
        rhs: bias,
        output: a,
        activation: Activation::ReluN1To1,
    });
    b.op(Op::Logistic {
        input: a,
        output: l,
    });
    b.input(x).input(y).input(bias).output(l).output(a);
    b.finish().unwrap()
}

fn check_other_ops<T: Code>(dtype: DType) {
    let g = other_ops_graph::<T>(dtype);
    let model = Model::new(g.clone()).unwrap();
    let off = T::MIN;
    let p = |n: &str| params(&g, n);
    let mut interior = 0;
    use examples::Draws as _;
    for s in 0..4 {
        // Codes within +-10 of each input's zero point (reals within about +-1), so that the
        // sums land on both sides of the ReluN1To1 clamp.
        let mut rng = examples::seeded(s);
        let mut near = |n: usize, z: i32| -> Vec<T> {
            (0..n)
                .map(|_| T::from_i32_saturating(rng.int_in(z - 10, z + 10) + off))
                .collect()
        };
        let (x, y, bv) = (near(32, 100), near(6, 30), near(7, 5));
        let inputs = [T::wrap(x.clone()), T::wrap(y.clone()), T::wrap(bv.clone())];
        // Max pool with ReLU: clamp [max(qmin, Z), qmax] = [100 + off, qmax].
        let pool = PoolParams {
            filter_h: 2,
            filter_w: 2,
            stride_h: 2,
            stride_w: 2,
            padding: PaddingValues::default(),
            clamp_min: 100 + off,
            clamp_max: T::MAX,
        };
        let mut mp = vec![T::default(); 8];
        k::max_pool(&x, [1, 4, 4, 2], &pool, &mut mp, [1, 2, 2, 2]);
        let mut r = vec![T::default(); 8];
        k::reshape(&mp, &mut r);
        let table = k::RequantTable::<T>::new(p("y"), p("c"));
        let parts = [
            k::ConcatInput {
                data: &r,
                shape: &[2, 4],
                requant: None,
            },
            k::ConcatInput {
                data: &y,
                shape: &[2, 3],
                requant: Some(&table),
            },
        ];
        let mut c = vec![T::default(); 14];
        k::concat(&parts, 1, &mut c, &[2, 7]);
        // ReluN1To1 on (S, Z) = (0.15, 90): 1 / 0.15 = 6.67 rounds to 7, so [83, 97] (+ off).
        let add = AddParams::new(p("c"), p("b"), p("a"), 83 + off, 97 + off).unwrap();
        let mut a = vec![T::default(); 14];
        k::add(&c, &[2, 7], &bv, &[7], &add, &mut a, &[2, 7]);
        let lt = k::LogisticTable::<T>::new(p("a"));
        let mut l = vec![T::default(); 14];
        k::logistic(&a, &lt, &mut l);

        assert_eq!(
            model.run(&inputs).unwrap(),
            vec![T::wrap(l.clone()), T::wrap(a.clone())]
        );
        let ids: Vec<TensorId> = ["mp", "r", "c"].iter().map(|n| id(&g, n)).collect();
        assert_eq!(
            model.run_with(&inputs, &ids).unwrap(),
            vec![T::wrap(mp), T::wrap(r), T::wrap(c)]
        );
        // The float executor on the same inputs. Both clamp the add to about [-1, 1]; the
        // integer add carries the concat's requantization and its own rounding (within two
        // LSB of 0.15). The sigmoid has slope at most 1/4, so the logistic outputs differ by at
        // most a quarter of the add's difference plus the integer logistic's own error, which
        // is checked against the exact sigmoid of the integer add's real value.
        let f = model.run_float(&inputs).unwrap();
        let (ra, rl) = (reals_of(&T::wrap(a), p("a")), reals_of(&T::wrap(l), p("l")));
        for i in 0..14 {
            let (qa, fa, ql, fl) = (ra[i], f[1][i], rl[i], f[0][i]);
            assert!(fa.abs() <= 1.0, "ReluN1To1 clamps the float add ({fa})");
            // The integer clamp is at Z +- 7 codes, i.e. +-1.05: TFLite rounds 1 / S.
            assert!(qa.abs() <= 1.05 + 1e-6, "add {i}: {qa}");
            assert!((qa - fa).abs() <= 2.0 * 0.15, "add {i}: {qa} vs {fa}");
            let sigmoid = 1.0 / (1.0 + (-qa).exp());
            assert!(
                (ql - sigmoid).abs() <= 1.0 / 256.0,
                "logistic {i}: {ql} vs {sigmoid}"
            );
            let bound = 0.25 * (qa - fa).abs() + 1.0 / 256.0 + 1e-6;
            assert!((ql - fl).abs() <= bound, "logistic {i}: {ql} vs {fl}");
            interior += (fa.abs() < 0.9) as usize;
        }
    }
    assert!(
        interior >= 20,
        "only {interior} add outputs inside the clamp"
    );
}

#[test]
fn max_pool_reshape_concat_broadcast_add_and_logistic_run_like_the_kernels() {
    check_other_ops::<u8>(DType::U8);
    check_other_ops::<i8>(DType::I8);
}

#[test]
fn profiled_runs_compute_the_same_and_time_every_op() {
    for (dtype, edges) in CONFIGS {
        let g = examples::small_cnn(dtype, edges, 5);
        let model = Model::new(g.clone()).unwrap();
        let mut times = vec![std::time::Duration::ZERO; g.ops().len()];
        for s in 0..3 {
            let x = examples::random_input(&g, s);
            assert_eq!(
                model.run_profiled(&x, &mut times).unwrap(),
                model.run(&x).unwrap()
            );
        }
        // Times accumulate over the calls, one slot per op, and each op ran.
        assert!(times.iter().all(|t| !t.is_zero()), "{times:?}");
        let x = examples::random_input(&g, 0);
        let mut short = vec![std::time::Duration::ZERO; g.ops().len() - 1];
        assert!(matches!(
            model.run_profiled(&x, &mut short),
            Err(EngineError::Run(m)) if m.contains("time slots")
        ));
    }
}
