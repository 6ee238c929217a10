//! A test model that uses every op kind the exporter writes (and the importer reads back), with
//! the parameter combinations the MLPerf-Tiny models leave out: Logistic, requantizing Concat,
//! max pool with SAME padding, depthwise multiplier 2, stride-2 VALID conv with
//! per-tensor weights, ReLU6 / RELU_N1_TO_1 clamps, broadcast Add, Reshape, FC, Softmax and the
//! float edges. Deterministic from a seed, for the byte-equality checks against TFLite.

use intq_engine::examples::{seeded, Draws, SplitMix64};
use intq_engine::{
    Activation, ChannelParams, DType, Graph, GraphBuilder, Op, Padding, Quant, QuantParams,
    TensorData, TensorId,
};

fn codes(rng: &mut SplitMix64, dtype: DType, n: usize) -> TensorData {
    match dtype {
        DType::U8 => TensorData::U8((0..n).map(|_| rng.int_in(0, 255) as u8).collect()),
        _ => TensorData::I8((0..n).map(|_| rng.int_in(-127, 127) as i8).collect()),
    }
}

fn pt(scale: f32, zero_point: i32) -> Option<Quant> {
    Some(Quant::PerTensor(QuantParams { scale, zero_point }))
}

/// Weights: uint8 per tensor with a non-zero zero point; int8 per channel along `axis`.
fn weights(
    b: &mut GraphBuilder,
    rng: &mut SplitMix64,
    name: &str,
    dtype: DType,
    shape: &[usize],
    axis: usize,
    fan_in: usize,
) -> (TensorId, Vec<f32>) {
    let n: usize = shape.iter().product();
    let base = 1.0 / (127.0 * (fan_in as f32).sqrt());
    let (quant, scales) = match dtype {
        DType::U8 => (pt(base, 131), vec![base]),
        _ => {
            let scales: Vec<f32> = (0..shape[axis])
                .map(|_| base * rng.uniform(0.5, 1.5))
                .collect();
            let cp = ChannelParams::new(scales.clone(), vec![0; shape[axis]], axis)
                .expect("valid channel params");
            (Some(Quant::PerChannel(cp)), scales)
        }
    };
    let data = codes(rng, dtype, n);
    (b.constant(name, shape, quant, data), scales)
}

fn bias(b: &mut GraphBuilder, rng: &mut SplitMix64, name: &str, channels: usize) -> TensorId {
    let data = (0..channels).map(|_| rng.int_in(-3000, 3000)).collect();
    b.constant(name, &[channels], None, TensorData::I32(data))
}

/// The op zoo, for uint8 or int8 codes (float32 at the edges).
///
/// # Panics
/// If `dtype` is not `U8` or `I8`.
pub fn op_zoo(dtype: DType, seed: u64) -> Graph {
    assert!(matches!(dtype, DType::U8 | DType::I8), "op_zoo is 8-bit");
    let mut rng = seeded(seed);
    let mut b = GraphBuilder::new();
    // Zero points shift with the type so that both encodings see the same reals.
    let z = |u8_zero: i32| {
        if dtype == DType::U8 {
            u8_zero
        } else {
            u8_zero - 128
        }
    };
    let lo = if dtype == DType::U8 { 0 } else { -128 };

    let x = b.tensor("x", DType::F32, &[1, 9, 9, 4], None);
    let xq = b.tensor("x_q", dtype, &[1, 9, 9, 4], pt(2.0 / 255.0, z(128)));
    b.op(Op::Quantize {
        input: x,
        output: xq,
    });
    b.input(x);

    // Branch A: 3x3 stride-2 VALID conv, ReLU6 -> [1, 4, 4, 6].
    let (wa, _) = weights(&mut b, &mut rng, "a/w", dtype, &[6, 3, 3, 4], 0, 36);
    let ba = bias(&mut b, &mut rng, "a/b", 6);
    // TFLite's int8 CONCATENATION refuses to requantize, so int8 branches share the concat's
    // parameters; uint8 ones each have their own.
    let cat_q = pt(7.0 / 255.0, z(40));
    let (a_q, dw_q) = if dtype == DType::U8 {
        (pt(6.0 / 255.0, z(0)), pt(2.5 / 255.0, z(120)))
    } else {
        (cat_q.clone(), cat_q.clone())
    };
    let a = b.tensor("a", dtype, &[1, 4, 4, 6], a_q);
    b.op(Op::Conv2d {
        input: xq,
        filter: wa,
        bias: Some(ba),
        output: a,
        stride: [2, 2],
        dilation: [1, 1],
        padding: Padding::Valid,
        activation: Activation::Relu6,
    });

    // Branch B: max pool 3x3 stride 2 SAME -> [1, 5, 5, 4], then a 2x2 VALID depthwise with
    // multiplier 2 clamped to [-1, 1] -> [1, 4, 4, 8].
    let mp = b.tensor("mp", dtype, &[1, 5, 5, 4], pt(2.0 / 255.0, z(128)));
    b.op(Op::MaxPool2d {
        input: xq,
        output: mp,
        filter: [3, 3],
        stride: [2, 2],
        padding: Padding::Same,
        activation: Activation::None,
    });
    let (wd, _) = weights(&mut b, &mut rng, "dw/w", dtype, &[1, 2, 2, 8], 3, 4);
    let bd = bias(&mut b, &mut rng, "dw/b", 8);
    let dw = b.tensor("dw", dtype, &[1, 4, 4, 8], dw_q);
    b.op(Op::DepthwiseConv2d {
        input: mp,
        filter: wd,
        bias: Some(bd),
        output: dw,
        stride: [1, 1],
        dilation: [1, 1],
        padding: Padding::Valid,
        depth_multiplier: 2,
        activation: Activation::ReluN1To1,
    });

    // Concat requantizes both branches to its own parameters -> [1, 4, 4, 14].
    let cat = b.tensor("cat", dtype, &[1, 4, 4, 14], cat_q);
    b.op(Op::Concat {
        inputs: vec![a, dw],
        output: cat,
        axis: 3,
    });
    // Logistic from a wide input scale (saturating codes included).
    let sig = b.tensor("sig", dtype, &[1, 4, 4, 14], pt(1.0 / 256.0, lo));
    b.op(Op::LogisticLut {
        input: cat,
        output: sig,
    });
    // Broadcast add of a pooled row back onto the map, ReLU.
    let avg = b.tensor("avg", dtype, &[1, 1, 4, 14], pt(1.0 / 256.0, lo));
    b.op(Op::AveragePool2d {
        input: sig,
        output: avg,
        filter: [4, 1],
        stride: [1, 1],
        padding: Padding::Valid,
        activation: Activation::None,
    });
    let sum = b.tensor("sum", dtype, &[1, 4, 4, 14], pt(2.0 / 255.0, z(10)));
    b.op(Op::Add {
        lhs: sig,
        rhs: avg,
        output: sum,
        activation: Activation::Relu,
    });
    let flat = b.tensor("flat", dtype, &[1, 224], pt(2.0 / 255.0, z(10)));
    b.op(Op::Reshape {
        input: sum,
        output: flat,
    });
    let (wf, _) = weights(&mut b, &mut rng, "fc/w", dtype, &[5, 224], 0, 224);
    let bf = bias(&mut b, &mut rng, "fc/b", 5);
    let logits = b.tensor("logits", dtype, &[1, 5], pt(0.05, z(128)));
    b.op(Op::FullyConnectedF64 {
        input: flat,
        weights: wf,
        bias: Some(bf),
        output: logits,
        activation: Activation::None,
    });
    let probs_q = b.tensor("probs_q", dtype, &[1, 5], pt(1.0 / 256.0, lo));
    b.op(Op::Softmax {
        input: logits,
        output: probs_q,
        beta: 1.0,
    });
    let probs = b.tensor("probs", DType::F32, &[1, 5], None);
    b.op(Op::Dequantize {
        input: probs_q,
        output: probs,
    });
    b.output(probs);
    // A second output straight from the middle of the graph.
    b.output(sig);
    // PAD, then spatial MEAN (keep_dims) requantized to other parameters, then a channel MEAN
    // that drops its axis.
    let sum_q = pt(2.0 / 255.0, z(10));
    let padded = b.tensor("padded", dtype, &[1, 5, 7, 14], sum_q.clone());
    b.op(Op::Pad {
        input: sum,
        output: padded,
        paddings: vec![[0, 0], [1, 0], [1, 2], [0, 0]],
    });
    let spatial = b.tensor("spatial_mean", dtype, &[1, 1, 1, 14], pt(0.9 / 255.0, z(3)));
    b.op(Op::Mean {
        input: padded,
        output: spatial,
        axes: vec![1, 2],
        keep_dims: true,
    });
    b.output(spatial);
    let chan = b.tensor("channel_mean", dtype, &[1, 5, 7], pt(1.3 / 255.0, z(100)));
    b.op(Op::Mean {
        input: padded,
        output: chan,
        axes: vec![3],
        keep_dims: false,
    });
    b.output(chan);
    b.finish().expect("op_zoo is a valid graph")
}

/// The elementwise zoo: MUL (equal shapes, a squeeze-and-excitation `[1, 1, 1, C]` gate, a
/// `[H, 1]` broadcast, a multiplier above 1), SUB (both operands broadcast in turn), RELU,
/// RELU6, RELU_N1_TO_1, LEAKY_RELU (alpha below and above 1), HARD_SWISH (left and right shifts
/// of its int16 fixed point) and TANH, at edge
/// parameters: zero points at both ends of the type's range, scales 18x and 230x apart, odd
/// sizes. Its inputs are 8-bit codes (no Quantize), so the check feeds every code.
///
/// # Panics
/// If `dtype` is not `U8` or `I8`.
pub fn elementwise_zoo(dtype: DType) -> Graph {
    assert!(
        matches!(dtype, DType::U8 | DType::I8),
        "elementwise_zoo is 8-bit"
    );
    let mut b = GraphBuilder::new();
    let (lo, hi) = if dtype == DType::U8 {
        (0, 255)
    } else {
        (-128, 127)
    };
    let mid = (lo + hi + 1) / 2;
    let shape = [2, 5, 7, 3];
    let a = b.tensor("a", dtype, &shape, pt(0.05, hi));
    let x = b.tensor("x", dtype, &shape, pt(0.9, lo));
    let gate = b.tensor("gate", dtype, &[1, 1, 1, 3], pt(1.0 / 256.0, lo));
    let col = b.tensor("col", dtype, &[7, 1], pt(0.2, mid + 7));
    for id in [a, x, gate, col] {
        b.input(id);
    }
    // Every op writes a graph output of the zoo's shape.
    let mut add = |name: &str, q: Option<Quant>, make: &dyn Fn(TensorId) -> Op| {
        let out = b.tensor(name, dtype, &shape, q);
        b.op(make(out));
        b.output(out);
    };
    let mul = |lhs, rhs, activation| {
        move |output| Op::Mul {
            lhs,
            rhs,
            output,
            activation,
        }
    };
    let sub = |lhs, rhs, activation| {
        move |output| Op::Sub {
            lhs,
            rhs,
            output,
            activation,
        }
    };
    let relu = |input, activation| {
        move |output| Op::Relu {
            input,
            output,
            activation,
        }
    };
    let leaky = |input, alpha| {
        move |output| Op::LeakyRelu {
            input,
            output,
            alpha,
        }
    };
    let hard_swish = |input| move |output| Op::HardSwish { input, output };
    let tanh = |input| move |output| Op::Tanh { input, output };
    use Activation::{None as Identity, Relu, Relu6, ReluN1To1};
    add("mul_ax", pt(0.5, mid), &mul(a, x, Identity));
    add("mul_se", pt(0.04, lo + 3), &mul(a, gate, Relu6));
    add("mul_col", pt(0.3, hi - 5), &mul(x, col, ReluN1To1));
    // M = 0.9 * (1/256) / 0.001 = 3.5: a left shift.
    add("mul_big", pt(0.001, mid), &mul(x, gate, Identity));
    add("sub_ax", pt(1.0, hi - 20), &sub(a, x, Relu));
    add("sub_col", pt(0.25, lo + 1), &sub(x, col, Identity));
    add("sub_rev", pt(0.02, mid), &sub(col, a, Identity));
    add("relu_x", pt(0.3, lo + 3), &relu(x, Relu));
    add("relu6_a", pt(6.0 / 255.0, lo), &relu(a, Relu6));
    add("relu6_x", pt(0.01, mid), &relu(x, Relu6));
    add("relu1_x", pt(1.0 / 128.0, mid), &relu(x, ReluN1To1));
    add("leaky_a", pt(0.04, mid), &leaky(a, 0.2));
    add("leaky_x", pt(0.7, hi - 2), &leaky(x, 1.5));
    add("hswish_a", pt(0.03, lo + 10), &hard_swish(a));
    add("hswish_x", pt(0.1, lo + 30), &hard_swish(x));
    add("tanh_a", pt(1.0 / 128.0, mid), &tanh(a));
    add("tanh_x", pt(0.01, lo), &tanh(x));
    // HardSwish of the fine-scaled gate: the "reluish" multiplier S_in * 256 / 3 is below 1 (a
    // right shift), and with S_out = 4 the output shift reaches 16 bits, where TFLite's int16
    // rounding divide truncates its mask.
    for (name, q) in [
        ("hswish_gate", pt(0.002, lo)),
        ("hswish_coarse", pt(4.0, mid)),
    ] {
        let out = b.tensor(name, dtype, &[1, 1, 1, 3], q);
        b.op(Op::HardSwish {
            input: gate,
            output: out,
        });
        b.output(out);
    }
    b.finish().expect("elementwise_zoo is a valid graph")
}

/// The resize zoo: RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR up and down, plain,
/// `align_corners` and `half_pixel_centers`, and down to a single pixel, on a `[2, 5, 7, 3]` input
/// of 8-bit codes whose zero point is the type's maximum.
///
/// # Panics
/// If `dtype` is not `U8` or `I8`.
pub fn resize_zoo(dtype: DType) -> Graph {
    assert!(
        matches!(dtype, DType::U8 | DType::I8),
        "resize_zoo is 8-bit"
    );
    let hi = if dtype == DType::U8 { 255 } else { 127 };
    let q = pt(0.1, hi);
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", dtype, &[2, 5, 7, 3], q.clone());
    b.input(x);
    let modes = [
        ("plain", false, false),
        ("align", true, false),
        ("half", false, true),
    ];
    for bilinear in [false, true] {
        let kind = if bilinear { "bilinear" } else { "nearest" };
        let mut cases: Vec<(String, [usize; 2], bool, bool)> = modes
            .iter()
            .map(|&(m, a, h)| (format!("{kind}_up_{m}"), [9, 11], a, h))
            .collect();
        cases.push((format!("{kind}_down_half"), [3, 4], false, true));
        cases.push((format!("{kind}_down_align"), [2, 3], true, false));
        cases.push((format!("{kind}_to_one_align"), [1, 1], true, false));
        for (name, [h, w], align_corners, half_pixel_centers) in cases {
            let y = b.tensor(&name, dtype, &[2, h, w, 3], q.clone());
            b.op(if bilinear {
                Op::ResizeBilinear {
                    input: x,
                    output: y,
                    align_corners,
                    half_pixel_centers,
                }
            } else {
                Op::ResizeNearest {
                    input: x,
                    output: y,
                    align_corners,
                    half_pixel_centers,
                }
            });
            b.output(y);
        }
    }
    b.finish().expect("resize_zoo is a valid graph")
}

/// The layout zoo: PRELU with per-channel slopes of both signs, MAXIMUM and MINIMUM with a
/// broadcast operand, TRANSPOSE (NHWC to NCHW and full reversal), SLICE and a STRIDED_SLICE with
/// strides 1 to 3, on `[2, 5, 7, 3]` 8-bit codes whose zero point is the type's maximum.
///
/// # Panics
/// If `dtype` is not `U8` or `I8`.
pub fn layout_zoo(dtype: DType) -> Graph {
    assert!(
        matches!(dtype, DType::U8 | DType::I8),
        "layout_zoo is 8-bit"
    );
    let (lo, hi) = if dtype == DType::U8 {
        (0, 255)
    } else {
        (-128, 127)
    };
    let mid = (lo + hi + 1) / 2;
    let q = pt(0.05, hi);
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", dtype, &[2, 5, 7, 3], q.clone());
    let y = b.tensor("y", dtype, &[1, 5, 1, 3], q.clone());
    b.input(x).input(y);
    // Slopes 0.25, -0.5 and 1.5 on the alpha grid S = 0.02, Z = mid.
    let slopes = [mid + 12, mid - 25, mid + 75];
    let alpha_data = match dtype {
        DType::U8 => TensorData::U8(slopes.iter().map(|&c| c as u8).collect()),
        _ => TensorData::I8(slopes.iter().map(|&c| c as i8).collect()),
    };
    let alpha = b.constant("alpha", &[1, 1, 3], pt(0.02, mid), alpha_data);
    let out = |b: &mut GraphBuilder,
               name: &str,
               shape: &[usize],
               q: Option<Quant>,
               op: &dyn Fn(TensorId) -> Op| {
        let t = b.tensor(name, dtype, shape, q);
        b.op(op(t));
        b.output(t);
    };
    out(&mut b, "prelu", &[2, 5, 7, 3], pt(0.03, mid), &|output| {
        Op::Prelu {
            input: x,
            alpha,
            output,
        }
    });
    out(&mut b, "maximum", &[2, 5, 7, 3], q.clone(), &|output| {
        Op::Maximum {
            lhs: x,
            rhs: y,
            output,
        }
    });
    out(&mut b, "minimum", &[2, 5, 7, 3], q.clone(), &|output| {
        Op::Minimum {
            lhs: y,
            rhs: x,
            output,
        }
    });
    out(&mut b, "to_nchw", &[2, 3, 5, 7], q.clone(), &|output| {
        Op::Transpose {
            input: x,
            output,
            perm: vec![0, 3, 1, 2],
        }
    });
    out(&mut b, "reversed", &[3, 7, 5, 2], q.clone(), &|output| {
        Op::Transpose {
            input: x,
            output,
            perm: vec![3, 2, 1, 0],
        }
    });
    out(&mut b, "slice", &[1, 3, 4, 3], q.clone(), &|output| {
        Op::Slice {
            input: x,
            output,
            begin: vec![1, 1, 2, 0],
            strides: vec![1, 1, 1, 1],
        }
    });
    out(&mut b, "strided", &[2, 3, 2, 1], q.clone(), &|output| {
        Op::Slice {
            input: x,
            output,
            begin: vec![0, 0, 1, 1],
            strides: vec![1, 2, 3, 2],
        }
    });
    b.finish().expect("layout_zoo is a valid graph")
}

/// A `.tflite` model (written directly: the engine has no split op, its importer turns each
/// output into a Slice) with SPLIT into three equal parts along axis 1 and SPLIT_V into sizes
/// `[1, -1]` along the last axis, on a `[2, 6, 5, 3]` 8-bit input whose zero point is the type's
/// maximum; every output is a graph output.
///
/// # Panics
/// If `dtype` is not `U8` or `I8`.
pub fn split_tflite(dtype: DType) -> Vec<u8> {
    use crate::flatbuf::{finish, Field, Node};
    use crate::schema::{self as s, op as code, options};
    assert!(
        matches!(dtype, DType::U8 | DType::I8),
        "split_tflite is 8-bit"
    );
    let (ttype, zero_point) = if dtype == DType::U8 {
        (s::ttype::UINT8, 255)
    } else {
        (s::ttype::INT8, 127)
    };
    let tensor = |name: &str, shape: &[i32], t: i8, buffer: u32, quant: bool| {
        let mut f = vec![
            (s::tensor::SHAPE, Field::Off(Node::I32s(shape.to_vec()))),
            (s::tensor::TYPE, Field::U8(t as u8)),
            (s::tensor::BUFFER, Field::U32(buffer)),
            (s::tensor::NAME, Field::Off(Node::Str(name.into()))),
        ];
        if quant {
            f.push((
                s::tensor::QUANTIZATION,
                Field::Off(Node::Table(vec![
                    (s::quant::SCALE, Field::Off(Node::F32s(vec![0.05]))),
                    (
                        s::quant::ZERO_POINT,
                        Field::Off(Node::I64s(vec![zero_point])),
                    ),
                ])),
            ));
        }
        Node::Table(f)
    };
    let i32s = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let buffer = |b: Vec<u8>| Node::Table(vec![(s::buffer::DATA, Field::Off(Node::Bytes(b, 16)))]);
    let tensors = vec![
        tensor("x", &[2, 6, 5, 3], ttype, 0, true),
        tensor("split_axis", &[], s::ttype::INT32, 1, false),
        tensor("part0", &[2, 2, 5, 3], ttype, 0, true),
        tensor("part1", &[2, 2, 5, 3], ttype, 0, true),
        tensor("part2", &[2, 2, 5, 3], ttype, 0, true),
        tensor("size_splits", &[2], s::ttype::INT32, 2, false),
        tensor("splitv_axis", &[], s::ttype::INT32, 3, false),
        tensor("first_channel", &[2, 6, 5, 1], ttype, 0, true),
        tensor("other_channels", &[2, 6, 5, 2], ttype, 0, true),
    ];
    let op = |opcode: u32, inputs: Vec<i32>, outputs: Vec<i32>, tag: u8| {
        Node::Table(vec![
            (s::operator::OPCODE_INDEX, Field::U32(opcode)),
            (s::operator::INPUTS, Field::Off(Node::I32s(inputs))),
            (
                s::operator::OUTPUTS,
                Field::Off(Node::I32s(outputs.clone())),
            ),
            (s::operator::BUILTIN_OPTIONS_TYPE, Field::U8(tag)),
            (
                s::operator::BUILTIN_OPTIONS,
                Field::Off(Node::Table(vec![(0, Field::I32(outputs.len() as i32))])),
            ),
        ])
    };
    let subgraph = Node::Table(vec![
        (s::subgraph::TENSORS, Field::Off(Node::Tables(tensors))),
        (s::subgraph::INPUTS, Field::Off(Node::I32s(vec![0]))),
        (
            s::subgraph::OUTPUTS,
            Field::Off(Node::I32s(vec![2, 3, 4, 7, 8])),
        ),
        (
            s::subgraph::OPERATORS,
            Field::Off(Node::Tables(vec![
                op(0, vec![1, 0], vec![2, 3, 4], options::SPLIT),
                op(1, vec![0, 5, 6], vec![7, 8], options::SPLIT_V),
            ])),
        ),
        (s::subgraph::NAME, Field::Off(Node::Str("main".into()))),
    ]);
    let opcode = |c: i32| {
        Node::Table(vec![
            (
                s::opcode::DEPRECATED_BUILTIN_CODE,
                Field::U8(c.min(127) as u8),
            ),
            (s::opcode::VERSION, Field::I32(1)),
            (s::opcode::BUILTIN_CODE, Field::I32(c)),
        ])
    };
    let model = Node::Table(vec![
        (s::model::VERSION, Field::U32(3)),
        (
            s::model::OPERATOR_CODES,
            Field::Off(Node::Tables(vec![
                opcode(code::SPLIT),
                opcode(code::SPLIT_V),
            ])),
        ),
        (
            s::model::SUBGRAPHS,
            Field::Off(Node::Tables(vec![subgraph])),
        ),
        (s::model::DESCRIPTION, Field::Off(Node::Str("intq".into()))),
        (
            s::model::BUFFERS,
            Field::Off(Node::Tables(vec![
                Node::Table(vec![]),
                buffer(i32s(&[1])),
                buffer(i32s(&[1, -1])),
                buffer(i32s(&[-1])),
            ])),
        ),
    ]);
    finish(&model, b"TFL3")
}

/// The post-process options of the detector zoo: fast NMS with one class per detection (the
/// common SSD setting), fast NMS with two classes per detection and no score threshold, and
/// regular NMS keeping three boxes per class with room for more detections than there are
/// anchors. (Fast NMS leaves the entries past its count unwritten in TFLite, so its settings here
/// fill them; regular NMS writes zeros there, as intq does for both.)
pub fn detection_configs() -> Vec<(&'static str, intq_engine::DetectionOptions)> {
    let base = intq_engine::DetectionOptions {
        max_detections: 10,
        max_classes_per_detection: 1,
        detections_per_class: 100,
        use_regular_nms: false,
        nms_score_threshold: 0.3,
        nms_iou_threshold: 0.4,
        num_classes: 3,
        y_scale: 10.0,
        x_scale: 10.0,
        h_scale: 5.0,
        w_scale: 5.0,
    };
    vec![
        ("TFLite_Detection_PostProcess", base),
        (
            "fast2/TFLite_Detection_PostProcess",
            intq_engine::DetectionOptions {
                max_detections: 6,
                max_classes_per_detection: 2,
                nms_score_threshold: 0.0,
                nms_iou_threshold: 0.6,
                ..base
            },
        ),
        (
            "regular/TFLite_Detection_PostProcess",
            intq_engine::DetectionOptions {
                max_detections: 40,
                detections_per_class: 3,
                use_regular_nms: true,
                nms_score_threshold: 0.1,
                nms_iou_threshold: 0.5,
                ..base
            },
        ),
    ]
}

/// A small SSD-like detector: an `[1, 8, 8, 3]` picture of 8-bit codes (`S = 1/128`, `Z` the
/// middle code), a stride-2 conv to a 4 x 4 grid, 1x1 convs to two anchors' box encodings
/// `[1, 32, 4]` and class scores `[1, 32, 4]` (background and three classes, through LOGISTIC),
/// constant anchors `[32, 4]` that overlap their neighbours, and one `TFLite_Detection_PostProcess`
/// per entry of `configs` (named by it; its outputs `NAME`, `NAME:1`, `NAME:2`, `NAME:3`). The
/// logits are wide, so many scores saturate to the same code: ties in every sort. uint8 feeds
/// the post-process codes and uint8 anchors (the paper's scheme); int8 dequantizes first, as
/// TFLite's converter does, and uses float32 anchors.
///
/// # Panics
/// If `dtype` is not `U8` or `I8`.
pub fn detector(dtype: DType, configs: &[(&str, intq_engine::DetectionOptions)]) -> Graph {
    use intq_engine::DetectionPart;
    assert!(matches!(dtype, DType::U8 | DType::I8), "detector is 8-bit");
    let mut rng = seeded(23);
    let mut b = GraphBuilder::new();
    let z = |u8_zero: i32| {
        if dtype == DType::U8 {
            u8_zero
        } else {
            u8_zero - 128
        }
    };
    let (anchors_per_cell, classes) = (2, 4);
    let a = 16 * anchors_per_cell;
    let x = b.tensor("image", dtype, &[1, 8, 8, 3], pt(1.0 / 128.0, z(128)));
    b.input(x);
    // The input channels of a tensor made here: the picture's 3, else the features' 8.
    let b_channels = |_: &GraphBuilder, t: TensorId| if t == x { 3 } else { 8 };
    let conv = |b: &mut GraphBuilder,
                rng: &mut SplitMix64,
                name: &str,
                input: TensorId,
                shape: [usize; 4],
                kernel: usize,
                stride: usize,
                out: Option<Quant>,
                activation: Activation| {
        let (oc, ic) = (shape[3], b_channels(b, input));
        let (filter, _) = weights(
            b,
            rng,
            &format!("{name}/weights"),
            dtype,
            &[oc, kernel, kernel, ic],
            0,
            kernel * kernel * ic,
        );
        let bias = bias(b, rng, &format!("{name}/bias"), oc);
        let output = b.tensor(name, dtype, &shape, out);
        b.op(Op::Conv2d {
            input,
            filter,
            bias: Some(bias),
            output,
            stride: [stride, stride],
            dilation: [1, 1],
            padding: Padding::Same,
            activation,
        });
        output
    };
    let features = conv(
        &mut b,
        &mut rng,
        "features",
        x,
        [1, 4, 4, 8],
        3,
        2,
        pt(0.02, z(0)),
        Activation::Relu,
    );
    let box_map = conv(
        &mut b,
        &mut rng,
        "box_map",
        features,
        [1, 4, 4, 4 * anchors_per_cell],
        1,
        1,
        pt(0.04, z(128)),
        Activation::None,
    );
    let class_map = conv(
        &mut b,
        &mut rng,
        "class_map",
        features,
        [1, 4, 4, classes * anchors_per_cell],
        1,
        1,
        pt(0.09, z(140)),
        Activation::None,
    );
    let boxes = b.tensor("box_encodings", dtype, &[1, a, 4], pt(0.04, z(128)));
    b.op(Op::Reshape {
        input: box_map,
        output: boxes,
    });
    let logits = b.tensor("class_logits", dtype, &[1, a, classes], pt(0.09, z(140)));
    b.op(Op::Reshape {
        input: class_map,
        output: logits,
    });
    let scores = b.tensor(
        "class_scores",
        dtype,
        &[1, a, classes],
        pt(1.0 / 256.0, z(0)),
    );
    b.op(Op::Logistic {
        input: logits,
        output: scores,
    });
    // Anchors (y, x, h, w) on the 4 x 4 grid: a square and a tall one per cell, wide enough that
    // neighbours overlap.
    let mut reals = Vec::with_capacity(4 * a);
    for cell in 0..16 {
        let (cy, cx) = ((cell / 4) as f32 + 0.5, (cell % 4) as f32 + 0.5);
        reals.extend([cy / 4.0, cx / 4.0, 0.375, 0.375]);
        reals.extend([cy / 4.0, cx / 4.0, 0.5, 0.25]);
    }
    let (boxes, scores, anchors) = if dtype == DType::U8 {
        let s = 1.0 / 255.0;
        let codes = reals.iter().map(|&r| (r / s).round() as u8).collect();
        let anchors = b.constant("anchors", &[a, 4], pt(s, 0), TensorData::U8(codes));
        (boxes, scores, anchors)
    } else {
        let boxes_f = b.tensor("box_encodings/dequantize", DType::F32, &[1, a, 4], None);
        b.op(Op::Dequantize {
            input: boxes,
            output: boxes_f,
        });
        let scores_f = b.tensor(
            "class_scores/dequantize",
            DType::F32,
            &[1, a, classes],
            None,
        );
        b.op(Op::Dequantize {
            input: scores,
            output: scores_f,
        });
        let anchors = b.constant("anchors", &[a, 4], None, TensorData::F32(reals));
        (boxes_f, scores_f, anchors)
    };
    for (name, options) in configs {
        for (k, part) in DetectionPart::ALL.into_iter().enumerate() {
            let out_name = if k == 0 {
                name.to_string()
            } else {
                format!("{name}:{k}")
            };
            let output = b.tensor(
                &out_name,
                DType::F32,
                &part.shape(options.output_len()),
                None,
            );
            b.op(Op::DetectionPostProcess {
                boxes,
                scores,
                anchors,
                output,
                part,
                options: *options,
            });
            b.output(output);
        }
    }
    b.finish().expect("detector is a valid graph")
}

/// GATHER (rows of an NHWC tensor with a repeated index, and a rank-2 index block on the last
/// axis), REDUCE_MAX, ARG_MAX (one over repeated rows, so ties occur) and L2_NORMALIZATION, on
/// `[2, 5, 7, 3]` codes whose zero point is the type's maximum and `[2, 3, 11]` codes whose zero
/// point is its minimum.
///
/// # Panics
/// If `dtype` is not `U8` or `I8`.
pub fn reduce_zoo(dtype: DType) -> Graph {
    assert!(
        matches!(dtype, DType::U8 | DType::I8),
        "reduce_zoo is 8-bit"
    );
    let (lo, hi) = if dtype == DType::U8 {
        (0, 255)
    } else {
        (-128, 127)
    };
    let (qx, qw) = (pt(0.05, hi), pt(0.1, lo));
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", dtype, &[2, 5, 7, 3], qx.clone());
    let w = b.tensor("w", dtype, &[2, 3, 11], qw.clone());
    b.input(x).input(w);
    let out = |b: &mut GraphBuilder,
               name: &str,
               dtype: DType,
               shape: &[usize],
               q: Option<Quant>,
               op: &dyn Fn(TensorId) -> Op| {
        let t = b.tensor(name, dtype, shape, q);
        b.op(op(t));
        b.output(t);
        t
    };
    let rows = out(
        &mut b,
        "gather_rows",
        dtype,
        &[2, 4, 7, 3],
        qx.clone(),
        &|output| Op::Gather {
            input: x,
            output,
            axis: 1,
            indices: vec![4, 0, 4, 2],
        },
    );
    out(
        &mut b,
        "gather_last",
        dtype,
        &[2, 3, 2, 2],
        qw.clone(),
        &|output| Op::Gather {
            input: w,
            output,
            axis: 2,
            indices: vec![10, 0, 5, 5],
        },
    );
    out(&mut b, "max_hw", dtype, &[2, 3], qx.clone(), &|output| {
        Op::ReduceMax {
            input: x,
            output,
            axes: vec![1, 2],
            keep_dims: false,
        }
    });
    out(
        &mut b,
        "max_last",
        dtype,
        &[2, 3, 1],
        qw.clone(),
        &|output| Op::ReduceMax {
            input: w,
            output,
            axes: vec![2],
            keep_dims: true,
        },
    );
    out(
        &mut b,
        "argmax_c",
        DType::I32,
        &[2, 5, 7],
        None,
        &|output| Op::ArgMax {
            input: x,
            output,
            axis: 3,
        },
    );
    out(
        &mut b,
        "argmax_ties",
        DType::I32,
        &[2, 7, 3],
        None,
        &|output| Op::ArgMax {
            input: rows,
            output,
            axis: 1,
        },
    );
    let l2 = if dtype == DType::U8 { 128 } else { 0 };
    for (name, input, shape) in [
        ("l2norm_x", x, &[2, 5, 7, 3][..]),
        ("l2norm_w", w, &[2, 3, 11]),
    ] {
        out(&mut b, name, dtype, shape, pt(1.0 / 128.0, l2), &|output| {
            Op::L2Normalization { input, output }
        });
    }
    b.finish().expect("reduce_zoo is a valid graph")
}

/// The spatial zoo, for uint8 or int8 codes: TRANSPOSE_CONV (SAME at stride 2 with bias, VALID
/// at stride 1 with a fused ReLU and no bias, VALID at stride 2 with an output one row taller
/// than the input needs), a dilated convolution as TFLite writes it (SPACE_TO_BATCH_ND padded
/// with the zero point, CONV_2D, BATCH_TO_SPACE_ND with crops) and DEPTH_TO_SPACE with blocks 2
/// and 3. The input `[2, 5, 7, 4]` has its zero point at the type's maximum, the second input
/// `[1, 3, 2, 18]` at its minimum; output scales lie far apart. A fourth TRANSPOSE_CONV on a
/// third input has weights at their zero point and a bias where TFLite's uint8 multiplier (from
/// the f32 product `S_in * S_w`) and its int8 one (from the f64 product) round apart.
///
/// # Panics
/// If `dtype` is not `U8` or `I8`.
pub fn spatial_zoo(dtype: DType) -> Graph {
    assert!(
        matches!(dtype, DType::U8 | DType::I8),
        "spatial_zoo is 8-bit"
    );
    let (lo, hi) = if dtype == DType::U8 {
        (0, 255)
    } else {
        (-128, 127)
    };
    let mid = (lo + hi + 1) / 2;
    let mut rng = seeded(11);
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", dtype, &[2, 5, 7, 4], pt(0.05, hi));
    let y = b.tensor("y", dtype, &[1, 3, 2, 18], pt(0.3, lo));
    let z = b.tensor("z", dtype, &[1, 2, 3, 1], pt(0.167_263_5, mid));
    b.input(x).input(y).input(z);

    let (w, _) = weights(&mut b, &mut rng, "tconv_same/w", dtype, &[3, 3, 3, 4], 0, 9);
    let bias_same = bias(&mut b, &mut rng, "tconv_same/b", 3);
    let t = b.tensor("tconv_same", dtype, &[2, 10, 14, 3], pt(0.04, mid));
    b.op(Op::TransposeConv {
        input: x,
        filter: w,
        bias: Some(bias_same),
        output: t,
        stride: [2, 2],
        padding: Padding::Same,
        activation: Activation::None,
    });
    b.output(t);
    let (w, _) = weights(
        &mut b,
        &mut rng,
        "tconv_valid/w",
        dtype,
        &[2, 3, 4, 4],
        0,
        12,
    );
    let t = b.tensor("tconv_valid", dtype, &[2, 7, 10, 2], pt(3.0, lo + 3));
    b.op(Op::TransposeConv {
        input: x,
        filter: w,
        bias: None,
        output: t,
        stride: [1, 1],
        padding: Padding::Valid,
        activation: Activation::Relu,
    });
    b.output(t);
    let (w, _) = weights(&mut b, &mut rng, "tconv_s2/w", dtype, &[5, 3, 2, 4], 0, 6);
    let bias_s2 = bias(&mut b, &mut rng, "tconv_s2/b", 5);
    let t = b.tensor("tconv_s2", dtype, &[2, 12, 14, 5], pt(0.02, hi - 60));
    b.op(Op::TransposeConv {
        input: x,
        filter: w,
        bias: Some(bias_s2),
        output: t,
        stride: [2, 2],
        padding: Padding::Valid,
        activation: Activation::None,
    });
    b.output(t);

    // Every product is zero, so each output is the bias through the multiplier: -103 with
    // the f32 product, -102 with the f64 one (docs/spec.md §11.13).
    let (w_zero, w_data) = match dtype {
        DType::U8 => (131, TensorData::U8(vec![131])),
        _ => (0, TensorData::I8(vec![0])),
    };
    let w = b.constant(
        "tconv_multiplier/w",
        &[1, 1, 1, 1],
        pt(0.004_682_792_4, w_zero),
        w_data,
    );
    let bias_m = b.constant(
        "tconv_multiplier/b",
        &[1],
        None,
        TensorData::I32(vec![-74_868]),
    );
    let t = b.tensor("tconv_multiplier", dtype, &[1, 2, 3, 1], pt(0.572_114, mid));
    b.op(Op::TransposeConv {
        input: z,
        filter: w,
        bias: Some(bias_m),
        output: t,
        stride: [1, 1],
        padding: Padding::Valid,
        activation: Activation::None,
    });
    b.output(t);

    // Dilation 2 as TFLite writes it: pad 5x7 to 8x10, split into 2x2 phases, a 3x3 VALID conv
    // on each, then interleave the phases back and crop to 3x5.
    let s2b = b.tensor("space_to_batch", dtype, &[8, 4, 5, 4], pt(0.05, hi));
    b.op(Op::SpaceToBatch {
        input: x,
        output: s2b,
        block: [2, 2],
        paddings: [[1, 2], [2, 1]],
    });
    b.output(s2b);
    let (w, _) = weights(&mut b, &mut rng, "dilated/w", dtype, &[6, 3, 3, 4], 0, 36);
    let bias_d = bias(&mut b, &mut rng, "dilated/b", 6);
    let conv = b.tensor("dilated_phases", dtype, &[8, 2, 3, 6], pt(0.2, mid + 10));
    b.op(Op::Conv2d {
        input: s2b,
        filter: w,
        bias: Some(bias_d),
        output: conv,
        stride: [1, 1],
        dilation: [1, 1],
        padding: Padding::Valid,
        activation: Activation::None,
    });
    let b2s = b.tensor("batch_to_space", dtype, &[2, 3, 5, 6], pt(0.2, mid + 10));
    b.op(Op::BatchToSpace {
        input: conv,
        output: b2s,
        block: [2, 2],
        crops: [[0, 1], [1, 0]],
    });
    b.output(b2s);

    let d2s = b.tensor("depth_to_space_2", dtype, &[2, 10, 14, 1], pt(0.05, hi));
    b.op(Op::DepthToSpace {
        input: x,
        output: d2s,
        block: 2,
    });
    b.output(d2s);
    let d2s = b.tensor("depth_to_space_3", dtype, &[1, 9, 6, 2], pt(0.3, lo));
    b.op(Op::DepthToSpace {
        input: y,
        output: d2s,
        block: 3,
    });
    b.output(d2s);
    b.finish().expect("spatial_zoo is a valid graph")
}

/// SUM over H and W (output scale 40 times the input's), over C with an output scale far below
/// the input's (every sum saturates), with equal parameters, and over two axes of an odd tensor,
/// on `[2, 5, 7, 3]` codes whose zero point is the type's maximum and `[2, 3, 11]` codes whose
/// zero point is its minimum.
///
/// # Panics
/// If `dtype` is not `U8` or `I8`.
pub fn sum_zoo(dtype: DType) -> Graph {
    assert!(matches!(dtype, DType::U8 | DType::I8), "sum_zoo is 8-bit");
    let (lo, hi) = if dtype == DType::U8 {
        (0, 255)
    } else {
        (-128, 127)
    };
    let mid = (lo + hi + 1) / 2;
    let (qx, qw) = (pt(0.05, hi), pt(0.1, lo));
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", dtype, &[2, 5, 7, 3], qx);
    let w = b.tensor("w", dtype, &[2, 3, 11], qw.clone());
    b.input(x).input(w);
    // Name, input, output shape and parameters, axes, keep_dims.
    type SumCase<'a> = (
        &'a str,
        TensorId,
        &'a [usize],
        Option<Quant>,
        &'a [usize],
        bool,
    );
    let sums: [SumCase; 4] = [
        ("sum_hw", x, &[2, 1, 1, 3], pt(2.0, mid), &[1, 2], true),
        ("sum_c", x, &[2, 5, 7], pt(0.001, lo), &[3], false),
        ("sum_same", w, &[2, 11], qw, &[1], false),
        ("sum_odd", w, &[2, 1, 1], pt(0.37, hi), &[1, 2], true),
    ];
    for (name, input, shape, q, axes, keep_dims) in sums {
        let output = b.tensor(name, dtype, shape, q);
        b.op(Op::Sum {
            input,
            output,
            axes: axes.to_vec(),
            keep_dims,
        });
        b.output(output);
    }
    b.finish().expect("sum_zoo is a valid graph")
}
