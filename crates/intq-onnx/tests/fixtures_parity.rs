//! The committed fixtures (tools/onnx-fixtures/make.py) imported and run in f32 at batch 4 and
//! batch 1: the outputs equal ONNX Runtime's to 1e-5 of the largest output magnitude.

use std::path::PathBuf;

use intq_onnx::eval::{run, Tensor};
use intq_onnx::Op;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn npy(path: PathBuf) -> Tensor {
    let bytes = std::fs::read(&path).unwrap();
    let (h, data) = intq_data::npy::parse::<f32>(&bytes).unwrap();
    Tensor {
        shape: h.shape,
        data,
    }
}

/// max |intq - ort| / max |ort|.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    diff / scale
}

fn parity(name: &str) -> intq_onnx::Graph {
    let g = intq_onnx::load(&fixture(&format!("{name}.onnx"))).unwrap();
    let x = npy(fixture(&format!("{name}.input.npy")));
    let want = npy(fixture(&format!("{name}.output.npy")));
    let got = run(&g, std::slice::from_ref(&x)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].shape, want.shape);
    let e = rel_err(&got[0].data, &want.data);
    println!(
        "{name}: batch {} max|intq-ort|/max|ort| = {e:.3e}",
        x.shape[0]
    );
    assert!(e <= 1e-5, "{name}: relative error {e}");
    // Batch 1 (the first image) gives the first row: the batch is not baked into the graph.
    let per = x.data.len() / x.shape[0];
    let mut x1 = x.clone();
    x1.shape[0] = 1;
    x1.data.truncate(per);
    let one = run(&g, &[x1]).unwrap();
    let out_per = want.data.len() / want.shape[0];
    let e1 = rel_err(&one[0].data, &want.data[..out_per]);
    assert!(e1 <= 1e-5, "{name} at batch 1: relative error {e1}");
    g
}

fn count(g: &intq_onnx::Graph, f: impl Fn(&Op) -> bool) -> usize {
    g.nodes.iter().filter(|n| f(&n.op)).count()
}

#[test]
fn resnet_matches_onnxruntime() {
    let g = parity("resnet_tiny");
    // The view(x.size(0), -1) arithmetic folded to one Flatten; BN kept for the QAT fold.
    assert_eq!(count(&g, |o| matches!(o, Op::BatchNorm { .. })), 6);
    assert_eq!(count(&g, |o| matches!(o, Op::Flatten)), 1);
    assert!(g
        .nodes
        .iter()
        .all(|n| !["Shape", "Gather", "Dropout"].contains(&n.onnx_op.as_str())));
}

#[test]
fn mobilenet_matches_onnxruntime() {
    let g = parity("mobilenetv2_tiny");
    assert!(count(&g, |o| matches!(o, Op::Conv(c) if c.groups > 1)) == 3);
    assert_eq!(count(&g, |o| matches!(o, Op::Pad { .. })), 1);
    assert!(matches!(
        g.nodes.last().unwrap().op,
        Op::Softmax { log: false, .. }
    ));
}

#[test]
fn mobilenet_without_pad_matches_onnxruntime() {
    let g = parity("mobilenetv2_qat");
    // x.mean((2, 3)) imported as a global average pool.
    assert_eq!(count(&g, |o| matches!(o, Op::GlobalAveragePool)), 1);
}

#[test]
fn helper_ops_match_onnxruntime() {
    let g = parity("ops_helper");
    assert_eq!(g.opset, 11);
    // MatMul + Add fused into one Linear with a bias.
    assert!(g
        .nodes
        .iter()
        .any(|n| n.onnx_op == "MatMul+Add" && matches!(&n.op, Op::Linear { bias: Some(_), .. })));
    let same_lower = g
        .nodes
        .iter()
        .find(|n| n.name == "conv_same_lower")
        .unwrap();
    let Op::Conv(c) = &same_lower.op else {
        panic!()
    };
    assert_eq!(c.pads, [1, 1, 0, 0], "SAME_LOWER puts the odd pad first");
}

#[test]
fn grouped_qat_matches_onnxruntime() {
    let g = parity("grouped_qat");
    assert_eq!(count(&g, |o| matches!(o, Op::Conv(c) if c.groups == 2)), 1);
    assert_eq!(
        count(&g, |o| matches!(o, Op::Conv(c) if c.pads == [0, 0, 1, 1])),
        1
    );
}

#[test]
fn hardswish_matches_onnxruntime() {
    let g = parity("hardswish_qat");
    assert_eq!(g.opset, 14);
    assert_eq!(count(&g, |o| matches!(o, Op::HardSwish)), 3);
}

#[test]
fn sigmoid_matches_onnxruntime() {
    let g = parity("sigmoid_qat");
    assert_eq!(count(&g, |o| matches!(o, Op::Sigmoid)), 1);
}

#[test]
fn hard_sigmoid_times_input_is_one_hardswish() {
    let g = parity("hsigmoid_mul");
    // Both orders of the Mul's operands fuse; no HardSigmoid or Mul is left.
    assert_eq!(count(&g, |o| matches!(o, Op::HardSwish)), 2);
    assert_eq!(
        count(&g, |o| matches!(o, Op::HardSigmoid { .. } | Op::Mul)),
        0
    );
}

#[test]
fn mobilenet_v3_matches_onnxruntime() {
    let g = parity("mobilenetv3_tiny");
    assert_eq!(count(&g, |o| matches!(o, Op::HardSwish)), 8);
    assert_eq!(count(&g, |o| matches!(o, Op::Sigmoid)), 2);
    assert_eq!(count(&g, |o| matches!(o, Op::Mul)), 2);
}

#[test]
fn squeeze_excitation_matches_onnxruntime() {
    let g = parity("se_qat");
    let mul = g.nodes.iter().find(|n| matches!(n.op, Op::Mul)).unwrap();
    // The full-shape activation first, the [N, C, 1, 1] gate second.
    assert_eq!(g.value(mul.inputs[0]).shape[2..], [16, 16]);
    assert_eq!(g.value(mul.inputs[1]).shape[2..], [1, 1]);
}

#[test]
fn hard_sigmoid_gates_max_min_and_bilinear_resize_match_onnxruntime() {
    let g = parity("hsigmoid_se_qat");
    assert_eq!(count(&g, |o| matches!(o, Op::HardSigmoid { .. })), 2);
    let g = parity("maxmin_qat");
    assert_eq!(count(&g, |o| matches!(o, Op::Maximum)), 1);
    assert_eq!(count(&g, |o| matches!(o, Op::Minimum)), 1);
    let g = parity("resize_linear_qat");
    assert_eq!(count(&g, |o| matches!(o, Op::ResizeLinear { .. })), 3);
}

#[test]
fn baked_preprocessing_matches_onnxruntime() {
    let g = parity("preprocess_qat");
    // Sub and Div by per-channel constants, kept as nodes of their own.
    let ops: Vec<&str> = g.nodes.iter().take(2).map(|n| n.op.name()).collect();
    assert_eq!(ops, ["Sub(constant)", "Div(constant)"]);
    let Op::ConstArith { value, .. } = &g.nodes[1].op else {
        panic!()
    };
    assert_eq!(value, &[0.229f32, 0.224, 0.225]);
}

#[test]
fn dilated_convs_and_pool_modes_match_onnxruntime() {
    let g = parity("dilated_qat");
    assert_eq!(
        count(&g, |o| matches!(o, Op::Conv(c) if c.dilation == [2, 2])),
        2
    );
    assert_eq!(
        count(
            &g,
            |o| matches!(o, Op::AveragePool(p) if !p.count_include_pad)
        ),
        1
    );
    assert_eq!(count(&g, |o| matches!(o, Op::MaxPool(p) if p.ceil_mode)), 1);
}

#[test]
fn leaky_relu_tanh_and_sub_match_onnxruntime() {
    let g = parity("act_qat");
    assert_eq!(
        count(
            &g,
            |o| matches!(o, Op::LeakyRelu { alpha } if *alpha == 0.1)
        ),
        1
    );
    assert_eq!(count(&g, |o| matches!(o, Op::Tanh)), 1);
    assert_eq!(count(&g, |o| matches!(o, Op::Sub)), 1);
}

#[test]
fn nearest_resizes_match_onnxruntime() {
    let g = parity("resize_qat");
    let srcs: Vec<(&Vec<usize>, &Vec<usize>)> = g
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::ResizeNearest { src_h, src_w } => Some((src_h, src_w)),
            _ => None,
        })
        .collect();
    assert_eq!(srcs.len(), 2);
    // Up by 2 (asymmetric, floor): every source twice; down by 2 (half_pixel,
    // round_prefer_floor): the even rows and columns.
    assert_eq!(srcs[0].0[..6], [0, 0, 1, 1, 2, 2]);
    assert_eq!(srcs[1].1[..4], [0, 2, 4, 6]);
}

#[test]
fn nhwc_input_and_transposes_match_onnxruntime() {
    let g = parity("nhwc_qat");
    assert_eq!(g.value(g.inputs[0]).shape, [1, 32, 32, 3]);
    let perms: Vec<&Vec<usize>> = g
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Transpose { perm } => Some(perm),
            _ => None,
        })
        .collect();
    assert_eq!(perms, [&vec![0, 3, 1, 2], &vec![0, 2, 3, 1]]);
}

#[test]
fn prelu_matches_onnxruntime() {
    let g = parity("prelu_qat");
    let slopes: Vec<usize> = g
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Prelu { slope } => Some(slope.len()),
            _ => None,
        })
        .collect();
    assert_eq!(slopes, [8, 1]);
}

#[test]
fn average_pool_ceil_mode_without_the_padding_matches_onnxruntime() {
    let g = parity("pool_ceil_qat");
    let pool = g.nodes.iter().find(|n| n.name == "avgpool_ceil").unwrap();
    assert!(matches!(pool.op, Op::AveragePool(p) if p.ceil_mode && !p.count_include_pad));
    // 16 wide, 3-wide windows every 2: the eighth starts at 14 and runs past the picture.
    assert_eq!(g.value(pool.output).shape, [1, 8, 8, 8]);
}

/// The MobileNetV3-style network as the dynamo exporter writes it (tools/onnx-fixtures/
/// dynamo_fixture.py: opset 18, BN folded, ReduceMean with its axes as an input, a symbolic batch).
#[test]
fn dynamo_exported_mobilenetv3_matches_onnxruntime() {
    let g = parity("mobilenetv3_dynamo");
    assert!(count(&g, |o| matches!(o, Op::Conv(c) if c.groups > 1)) >= 2);
    assert_eq!(count(&g, |o| matches!(o, Op::BatchNorm { .. })), 0);
    assert_eq!(
        g.nodes.iter().filter(|n| n.onnx_op == "HardSwish").count(),
        8
    );
    assert_eq!(
        g.nodes.iter().filter(|n| n.onnx_op == "ReduceMean").count(),
        3
    );
}
