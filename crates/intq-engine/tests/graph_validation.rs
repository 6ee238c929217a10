//! Graph validation: one test per class of mistake, each checking that the error names the op
//! (index and kind) or the tensor at fault and says what is wrong; plus a mutation test that
//! validation never panics and that whatever it accepts also plans and runs without a panic.

use intq_engine::{
    examples, Activation, ChannelParams, DType, Graph, GraphBuilder, GraphError, Model, Op,
    Padding, Quant, QuantParams, Tensor, TensorData, TensorId,
};
use proptest::prelude::*;

/// A graph taken apart so that a test can break one thing and rebuild it.
#[derive(Clone)]
struct Parts {
    tensors: Vec<Tensor>,
    ops: Vec<Op>,
    inputs: Vec<TensorId>,
    outputs: Vec<TensorId>,
}

impl Parts {
    fn of(g: &Graph) -> Parts {
        Parts {
            tensors: g.tensors().to_vec(),
            ops: g.ops().to_vec(),
            inputs: g.inputs().to_vec(),
            outputs: g.outputs().to_vec(),
        }
    }
    /// small_cnn, codes in and out: ops 0 conv, 1 depthwise, 2 add, 3 average pool, 4 fully
    /// connected, 5 softmax.
    fn cnn(dtype: DType) -> Parts {
        Parts::of(&examples::small_cnn(dtype, false, 0))
    }
    fn id(&self, name: &str) -> TensorId {
        TensorId(self.tensors.iter().position(|t| t.name == name).unwrap() as u32)
    }
    fn t(&mut self, name: &str) -> &mut Tensor {
        let i = self.id(name).index();
        &mut self.tensors[i]
    }
    fn push(&mut self, t: Tensor) -> TensorId {
        self.tensors.push(t);
        TensorId(self.tensors.len() as u32 - 1)
    }
    fn build(self) -> Result<Graph, GraphError> {
        Graph::new(self.tensors, self.ops, self.inputs, self.outputs)
    }
}

fn act(name: &str, dtype: DType, shape: &[usize], scale: f32, zero_point: i32) -> Tensor {
    Tensor {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        quant: Some(Quant::PerTensor(QuantParams { scale, zero_point })),
        code_range: None,
        data: None,
    }
}

/// Asserts an op error at `index` of `kind` whose message contains every needle.
#[track_caller]
fn expect_op(r: Result<Graph, GraphError>, index: usize, kind: &str, needles: &[&str]) {
    match r {
        Err(e @ GraphError::Op { .. }) => {
            let GraphError::Op {
                index: i,
                kind: k,
                ref message,
            } = e
            else {
                unreachable!()
            };
            assert_eq!((i, k), (index, kind), "{e}");
            for n in needles {
                assert!(message.contains(n), "{e:?} lacks {n:?}");
            }
            // The Display form carries both the index and the kind.
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("op {index} ({kind}): ")),
                "{shown}"
            );
        }
        other => panic!("expected an error of op {index} ({kind}), got {other:?}"),
    }
}

/// Asserts a tensor error naming `name` whose message contains every needle.
#[track_caller]
fn expect_tensor(r: Result<Graph, GraphError>, name: &str, needles: &[&str]) {
    match r {
        Err(GraphError::Tensor {
            name: n, message, ..
        }) => {
            assert_eq!(n, name, "{message}");
            for needle in needles {
                assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            }
        }
        other => panic!("expected an error of tensor '{name}', got {other:?}"),
    }
}

#[test]
fn the_example_graphs_are_valid_and_ops_may_be_stored_in_any_order() {
    for dtype in [DType::U8, DType::I8] {
        for edges in [false, true] {
            let g = examples::small_cnn(dtype, edges, 9);
            let mut p = Parts::of(&g);
            p.ops.reverse();
            let reversed = p.build().expect("a reversed op list is still a DAG");
            let n = reversed.ops().len();
            let model = Model::new(reversed).unwrap();
            // Stored backwards, run forwards: the planner's order is n-1, n-2, ..., 0.
            let expected: Vec<usize> = (0..n).rev().collect();
            assert_eq!(model.execution_order(), expected.as_slice());
        }
    }
}

#[test]
fn ids_out_of_range() {
    let mut p = Parts::cnn(DType::U8);
    if let Op::Conv2d { filter, .. } = &mut p.ops[0] {
        *filter = TensorId(999);
    }
    expect_op(p.build(), 0, "Conv2d", &["#999", "13 tensors"]);

    let mut p = Parts::cnn(DType::U8);
    p.outputs.push(TensorId(13));
    match p.build() {
        Err(GraphError::Graph(m)) => assert!(m.contains("output 1 is tensor #13"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn conv_filter_channels_and_output_shape() {
    let mut p = Parts::cnn(DType::U8);
    p.t("input").shape = vec![1, 8, 8, 4];
    expect_op(
        p.build(),
        0,
        "Conv2d",
        &["'conv/weights'", "3 input channels", "input has 4"],
    );

    let mut p = Parts::cnn(DType::U8);
    p.t("conv").shape = vec![1, 6, 6, 8];
    // SAME padding, stride 1: an 8x8 input gives an 8x8 output.
    expect_op(p.build(), 0, "Conv2d", &["'conv'", "expected [1, 8, 8, 8]"]);

    let mut p = Parts::cnn(DType::U8);
    if let Op::Conv2d { stride, .. } = &mut p.ops[0] {
        *stride = [2, 2];
    }
    // Stride 2 SAME: ceil(8 / 2) = 4.
    expect_op(p.build(), 0, "Conv2d", &["expected [1, 4, 4, 8]"]);

    let mut p = Parts::cnn(DType::U8);
    if let Op::Conv2d {
        padding, dilation, ..
    } = &mut p.ops[0]
    {
        // A 3-tap filter dilated by 4 spans 9 > 8 pixels: VALID cannot place it.
        *padding = Padding::Valid;
        *dilation = [4, 1];
    }
    expect_op(p.build(), 0, "Conv2d", &["does not fit", "8x8 input"]);

    let mut p = Parts::cnn(DType::U8);
    if let Op::Conv2d { dilation, .. } = &mut p.ops[0] {
        *dilation = [1, 0];
    }
    expect_op(p.build(), 0, "Conv2d", &["dilation [1, 0]"]);
}

#[test]
fn weights_type_constness_and_channel_axis() {
    // int8 weights under a uint8 input.
    let mut p = Parts::cnn(DType::U8);
    let w = p.t("conv/weights");
    w.dtype = DType::I8;
    w.data = Some(TensorData::I8(vec![0; 8 * 27]));
    w.quant = quant(0.1, 0);
    expect_op(p.build(), 0, "Conv2d", &["'conv/weights'", "int8", "uint8"]);

    // Weights without data.
    let mut p = Parts::cnn(DType::U8);
    p.t("conv/weights").data = None;
    p.inputs.push(p.id("conv/weights"));
    expect_op(p.build(), 0, "Conv2d", &["'conv/weights'", "constant"]);

    // Depthwise weights per channel along axis 0 instead of 3.
    let mut p = Parts::cnn(DType::I8);
    let cp = ChannelParams::new(vec![0.1], vec![0], 0).unwrap();
    p.t("dw/weights").quant = Some(Quant::PerChannel(cp));
    expect_op(
        p.build(),
        1,
        "DepthwiseConv2d",
        &["per channel along axis 0", "axis 3"],
    );

    // Per-channel parameters whose count does not match the dimension.
    let mut p = Parts::cnn(DType::I8);
    let cp = ChannelParams::new(vec![0.1; 7], vec![0; 7], 0).unwrap();
    p.t("conv/weights").quant = Some(Quant::PerChannel(cp));
    expect_tensor(p.build(), "conv/weights", &["7 per-channel", "size 8"]);

    // A per-channel weight zero point outside int8.
    let mut p = Parts::cnn(DType::I8);
    let cp = ChannelParams::new(vec![0.1; 10], [vec![0; 9], vec![128]].concat(), 0).unwrap();
    p.t("fc/weights").quant = Some(Quant::PerChannel(cp));
    expect_tensor(p.build(), "fc/weights", &["channel 9", "zero point 128"]);
}

#[test]
fn bias_shape_type_and_scale() {
    let mut p = Parts::cnn(DType::U8);
    let b = p.t("conv/bias");
    b.shape = vec![1, 8];
    expect_op(p.build(), 0, "Conv2d", &["'conv/bias'", "expected [8]"]);

    let mut p = Parts::cnn(DType::U8);
    let b = p.t("fc/bias");
    b.dtype = DType::U8;
    b.data = Some(TensorData::U8(vec![0; 10]));
    b.quant = Some(Quant::PerTensor(QuantParams {
        scale: 1.0,
        zero_point: 0,
    }));
    expect_op(p.build(), 4, "FullyConnected", &["'fc/bias'", "int32"]);

    // Bias scale off by 1e-5 relative: TFLite's check allows 1e-6.
    let mut p = Parts::cnn(DType::U8);
    let Some(Quant::PerTensor(q)) = p.t("conv/bias").quant.clone() else {
        panic!()
    };
    let off = QuantParams {
        scale: q.scale * (1.0 + 1e-5),
        zero_point: 0,
    };
    p.t("conv/bias").quant = Some(Quant::PerTensor(off));
    expect_op(p.build(), 0, "Conv2d", &["'conv/bias'", "S_in * S_w"]);
    // ... and 1 ulp off (about 6e-8 relative) is accepted.
    let mut p = Parts::cnn(DType::U8);
    let ulp = QuantParams {
        scale: f32::from_bits(q.scale.to_bits() + 1),
        zero_point: 0,
    };
    p.t("conv/bias").quant = Some(Quant::PerTensor(ulp));
    p.build().unwrap();

    let mut p = Parts::cnn(DType::U8);
    p.t("dw/bias").quant = Some(Quant::PerTensor(QuantParams {
        scale: 1.0,
        zero_point: 3,
    }));
    expect_op(
        p.build(),
        1,
        "DepthwiseConv2d",
        &["zero point 3", "must be 0"],
    );

    // Per-channel int8 bias: one channel's scale is wrong.
    let mut p = Parts::cnn(DType::I8);
    let Some(Quant::PerChannel(cp)) = p.t("conv/bias").quant.clone() else {
        panic!()
    };
    let mut scales = cp.scales().to_vec();
    scales[5] *= 2.0;
    let bad = ChannelParams::new(scales, vec![0; 8], 0).unwrap();
    p.t("conv/bias").quant = Some(Quant::PerChannel(bad));
    expect_op(p.build(), 0, "Conv2d", &["channel 5", "S_in * S_w"]);
}

#[test]
fn depthwise_multiplier() {
    let mut p = Parts::cnn(DType::U8);
    if let Op::DepthwiseConv2d {
        depth_multiplier, ..
    } = &mut p.ops[1]
    {
        *depth_multiplier = 2;
    }
    expect_op(
        p.build(),
        1,
        "DepthwiseConv2d",
        &["[1, kh, kw, 16]", "depth_multiplier 2"],
    );
    let mut p = Parts::cnn(DType::U8);
    if let Op::DepthwiseConv2d {
        depth_multiplier, ..
    } = &mut p.ops[1]
    {
        *depth_multiplier = 0;
    }
    expect_op(p.build(), 1, "DepthwiseConv2d", &["depth_multiplier"]);
}

#[test]
fn fully_connected_depth_and_output() {
    let mut p = Parts::cnn(DType::U8);
    // 128 weights columns; an input of 4*4*7 = 112 elements is not a multiple.
    p.t("pool").shape = vec![1, 4, 4, 7];
    p.t("add").shape = vec![1, 8, 8, 7];
    // The pool (op 3) is fine with that; conv/dw/add complain first, so cut them out of the
    // picture by making 'add' a graph input.
    p.ops.drain(0..3);
    p.inputs = vec![p.id("add")];
    expect_op(
        p.build(),
        1,
        "FullyConnected",
        &["112 elements", "depth 128"],
    );

    let mut p = Parts::cnn(DType::U8);
    p.t("logits").shape = vec![10];
    p.t("probs").shape = vec![10];
    expect_op(
        p.build(),
        4,
        "FullyConnected",
        &["'logits'", "expected [1, 10]"],
    );
}

#[test]
fn add_broadcasting_and_types() {
    let mut p = Parts::cnn(DType::U8);
    // rhs [1, 8, 8, 8] vs a new lhs [1, 8, 3, 8]: 8 and 3 do not broadcast.
    let x = p.push(act("side", DType::U8, &[1, 8, 3, 8], 0.1, 0));
    p.inputs.push(x);
    if let Op::Add { lhs, .. } = &mut p.ops[2] {
        *lhs = x;
    }
    expect_op(p.build(), 2, "Add", &["do not broadcast", "[1, 8, 3, 8]"]);

    // [8] broadcasts against [1, 8, 8, 8]; the output must then be [1, 8, 8, 8], not [8].
    let mut p = Parts::cnn(DType::U8);
    let x = p.push(act("side", DType::U8, &[8], 0.1, 0));
    p.inputs.push(x);
    if let Op::Add { lhs, .. } = &mut p.ops[2] {
        *lhs = x;
    }
    p.build().expect("[8] + [1, 8, 8, 8] broadcasts");

    let mut p = Parts::cnn(DType::U8);
    let x = p.push(act("side", DType::I8, &[1, 8, 8, 8], 0.1, 0));
    p.inputs.push(x);
    if let Op::Add { lhs, .. } = &mut p.ops[2] {
        *lhs = x;
    }
    expect_op(p.build(), 2, "Add", &["rhs", "uint8", "int8"]);
}

#[test]
fn pooling_padding_params_and_rank() {
    let mut p = Parts::cnn(DType::U8);
    if let Op::AveragePool2d { padding, .. } = &mut p.ops[3] {
        *padding = Padding::Explicit {
            top: 0,
            bottom: 2,
            left: 0,
            right: 0,
        };
    }
    expect_op(
        p.build(),
        3,
        "AveragePool2d",
        &["smaller than the 2x2 filter"],
    );

    let mut p = Parts::cnn(DType::U8);
    let q = p.t("pool").params().unwrap();
    p.t("pool").quant = Some(Quant::PerTensor(QuantParams {
        scale: q.scale,
        zero_point: q.zero_point + 1,
    }));
    expect_op(
        p.build(),
        3,
        "AveragePool2d",
        &["'pool'", "share parameters"],
    );

    let mut p = Parts::cnn(DType::U8);
    p.t("pool").shape = vec![4, 4, 8];
    expect_op(p.build(), 3, "AveragePool2d", &["'pool'", "expected"]);

    // Max pool on a rank-3 input.
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::I8, &[4, 4, 2], quant(0.5, 1));
    let y = b.tensor("y", DType::I8, &[2, 2, 2], quant(0.5, 1));
    b.op(Op::MaxPool2d {
        input: x,
        output: y,
        filter: [2, 2],
        stride: [2, 2],
        padding: Padding::Valid,
        activation: Activation::None,
    });
    b.input(x).output(y);
    expect_op(b.finish(), 0, "MaxPool2d", &["'x'", "rank 4"]);
}

fn quant(scale: f32, zero_point: i32) -> Option<Quant> {
    Some(Quant::PerTensor(QuantParams { scale, zero_point }))
}

/// `a [2, 3]` and `b [2, k]` concatenated along `axis` into `out`.
fn concat_graph(b_shape: &[usize], out_shape: &[usize], axis: usize) -> Result<Graph, GraphError> {
    let mut b = GraphBuilder::new();
    let x = b.tensor("a", DType::U8, &[2, 3], quant(0.5, 1));
    let y = b.tensor("b", DType::U8, b_shape, quant(0.25, 7));
    let o = b.tensor("out", DType::U8, out_shape, quant(0.5, 1));
    b.op(Op::Concat {
        inputs: vec![x, y],
        output: o,
        axis,
    });
    b.input(x).input(y).output(o);
    b.finish()
}

#[test]
fn concat_axis_and_shapes() {
    concat_graph(&[2, 5], &[2, 8], 1).expect("valid concat");
    concat_graph(&[4, 3], &[6, 3], 0).expect("valid concat");
    expect_op(
        concat_graph(&[2, 5], &[2, 8], 2),
        0,
        "Concat",
        &["axis 2", "rank-2"],
    );
    expect_op(
        concat_graph(&[3, 5], &[2, 8], 1),
        0,
        "Concat",
        &["input 1", "'b'", "[3, 5]", "outside axis 1"],
    );
    expect_op(
        concat_graph(&[2, 5], &[2, 9], 1),
        0,
        "Concat",
        &["'out'", "expected [2, 8]"],
    );
    let mut b = GraphBuilder::new();
    let o = b.tensor("out", DType::U8, &[2], quant(0.5, 1));
    b.op(Op::Concat {
        inputs: vec![],
        output: o,
        axis: 0,
    });
    b.output(o);
    expect_op(b.finish(), 0, "Concat", &["no inputs"]);
}

#[test]
fn reshape_counts_and_params() {
    let mk = |out_shape: &[usize], out_q: Option<Quant>| {
        let mut b = GraphBuilder::new();
        let x = b.tensor("x", DType::I8, &[2, 6], quant(0.5, -3));
        let y = b.tensor("y", DType::I8, out_shape, out_q);
        b.op(Op::Reshape {
            input: x,
            output: y,
        });
        b.input(x).output(y);
        b.finish()
    };
    mk(&[3, 4], quant(0.5, -3)).unwrap();
    expect_op(
        mk(&[5, 2], quant(0.5, -3)),
        0,
        "Reshape",
        &["10 elements", "12"],
    );
    expect_op(mk(&[12], quant(0.5, -2)), 0, "Reshape", &["'y'", "share"]);
}

#[test]
fn logistic_and_softmax_output_params_and_beta() {
    let mk = |dtype: DType, zero_point: i32, scale: f32, softmax: Option<f32>| {
        let mut b = GraphBuilder::new();
        let x = b.tensor("x", dtype, &[1, 5], quant(0.1, 0));
        let y = b.tensor("y", dtype, &[1, 5], quant(scale, zero_point));
        b.op(match softmax {
            Some(beta) => Op::Softmax {
                input: x,
                output: y,
                beta,
            },
            None => Op::Logistic {
                input: x,
                output: y,
            },
        });
        b.input(x).output(y);
        b.finish()
    };
    let s = 1.0 / 256.0;
    mk(DType::U8, 0, s, None).unwrap();
    mk(DType::I8, -128, s, Some(1.0)).unwrap();
    expect_op(mk(DType::I8, 0, s, None), 0, "Logistic", &["(1/256, -128)"]);
    expect_op(
        mk(DType::U8, 0, 1.0 / 255.0, Some(1.0)),
        0,
        "Softmax",
        &["(1/256, 0)"],
    );
    expect_op(mk(DType::U8, 0, s, Some(0.0)), 0, "Softmax", &["beta 0"]);
    expect_op(
        mk(DType::U8, 0, s, Some(f32::NAN)),
        0,
        "Softmax",
        &["beta NaN"],
    );
}

#[test]
fn quantize_and_dequantize_types() {
    let mut p = Parts::of(&examples::small_cnn(DType::U8, true, 0));
    // Quantize reading codes.
    let x = p.push(act("codes", DType::U8, &[1, 8, 8, 3], 0.1, 0));
    p.inputs = vec![x];
    if let Op::Quantize { input, .. } = &mut p.ops[0] {
        *input = x;
    }
    expect_op(p.build(), 0, "Quantize", &["'codes'", "float32"]);

    let mut p = Parts::of(&examples::small_cnn(DType::I8, true, 0));
    let probs = p.t("probs");
    probs.dtype = DType::I8;
    probs.quant = quant(1.0 / 256.0, -128);
    expect_op(p.build(), 7, "Dequantize", &["'probs'", "int8"]);
}

/// Something that breaks one tensor.
type Breaker = Box<dyn Fn(&mut Tensor)>;

#[test]
fn tensor_params_and_data() {
    let cases: Vec<(&str, Breaker, &[&str])> = vec![
        ("conv", Box::new(|t| t.quant = None), &["need quantization"]),
        ("conv", Box::new(|t| t.quant = quant(0.0, 0)), &["scale 0"]),
        (
            "conv",
            Box::new(|t| t.quant = quant(-0.5, 0)),
            &["scale -0.5"],
        ),
        (
            "conv",
            Box::new(|t| t.quant = quant(f32::INFINITY, 0)),
            &["scale inf"],
        ),
        (
            "conv",
            Box::new(|t| t.quant = quant(0.1, 256)),
            &["zero point 256", "[0, 255]"],
        ),
        (
            "conv",
            Box::new(|t| t.quant = quant(0.1, -1)),
            &["zero point -1"],
        ),
        (
            "conv",
            Box::new(|t| {
                let cp = ChannelParams::new(vec![0.1; 8], vec![0; 8], 3).unwrap();
                t.quant = Some(Quant::PerChannel(cp))
            }),
            &["per-tensor", "not per-channel"],
        ),
        (
            "conv/weights",
            Box::new(|t| t.data = Some(TensorData::U8(vec![1; 215]))),
            &["215 data elements", "needs 216"],
        ),
        (
            "conv/bias",
            Box::new(|t| t.data = Some(TensorData::F32(vec![0.0; 8]))),
            &["declared int32", "data is float32"],
        ),
        (
            "conv",
            Box::new(|t| t.shape = vec![1, 8, 0, 8]),
            &["zero-sized"],
        ),
        (
            "conv",
            Box::new(|t| t.shape = vec![usize::MAX, 2, 1, 1]),
            &["overflows"],
        ),
        (
            "conv",
            Box::new(|t| t.shape = vec![1 << 16, 1 << 16, 1, 1]),
            &["more than 2^31"],
        ),
    ];
    for (name, breaks, needles) in cases {
        let mut p = Parts::cnn(DType::U8);
        breaks(p.t(name));
        expect_tensor(p.build(), name, needles);
    }
    // Signed range for int8.
    let mut p = Parts::cnn(DType::I8);
    p.t("dw").quant = quant(0.1, -129);
    expect_tensor(p.build(), "dw", &["zero point -129", "[-128, 127]"]);
    // f32 tensors carry no params.
    let mut p = Parts::of(&examples::small_cnn(DType::I8, true, 0));
    p.t("input").quant = quant(1.0, 0);
    expect_tensor(p.build(), "input", &["float32", "no quantization"]);
}

#[test]
fn dataflow_writers_and_readers() {
    // Two ops write 'dw': the depthwise op and a second reshape of 'conv'.
    let mut p = Parts::cnn(DType::U8);
    let (conv, dw) = (p.id("conv"), p.id("dw"));
    p.ops.push(Op::Reshape {
        input: conv,
        output: dw,
    });
    expect_op(
        p.build(),
        6,
        "Reshape",
        &["'dw'", "op 1 (DepthwiseConv2d) already writes"],
    );

    // An op writes a constant.
    let mut p = Parts::cnn(DType::U8);
    let w = p.id("dw/weights");
    if let Op::Add { output, .. } = &mut p.ops[2] {
        *output = w;
    }
    expect_op(p.build(), 2, "Add", &["'dw/weights'", "constant"]);

    // An op writes a graph input.
    let mut p = Parts::cnn(DType::U8);
    p.inputs.push(p.id("add"));
    expect_op(p.build(), 2, "Add", &["'add'", "graph input"]);

    // An op reads a tensor nobody writes.
    let mut p = Parts::cnn(DType::U8);
    p.ops.remove(1); // the depthwise op: 'dw' is now dangling; Add is op 1.
    expect_op(p.build(), 1, "Add", &["'dw'", "no op writes it"]);

    // Constant graph output and constant graph input.
    let mut p = Parts::cnn(DType::U8);
    p.outputs.push(p.id("fc/bias"));
    expect_tensor(p.build(), "fc/bias", &["graph output", "constant"]);
    let mut p = Parts::cnn(DType::U8);
    p.inputs.push(p.id("fc/bias"));
    expect_tensor(p.build(), "fc/bias", &["graph input", "constant"]);

    // A graph output nothing computes.
    let mut p = Parts::cnn(DType::U8);
    let lonely = p.push(act("lonely", DType::U8, &[3], 0.1, 0));
    p.outputs.push(lonely);
    expect_tensor(p.build(), "lonely", &["no op writes it"]);

    // No outputs; an input listed twice.
    let mut p = Parts::cnn(DType::U8);
    p.outputs.clear();
    match p.build() {
        Err(GraphError::Graph(m)) => assert!(m.contains("no outputs")),
        other => panic!("{other:?}"),
    }
    let mut p = Parts::cnn(DType::U8);
    p.inputs.push(p.inputs[0]);
    expect_tensor(p.build(), "input", &["twice"]);
}

#[test]
fn cycles_are_named() {
    // x -> [op 0: add(x, c)] -> a -> [op 1: reshape] -> c -> back into op 0.
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::U8, &[4], quant(0.5, 0));
    let a = b.tensor("a", DType::U8, &[4], quant(0.5, 0));
    let c = b.tensor("c", DType::U8, &[4], quant(0.5, 0));
    let y = b.tensor("y", DType::U8, &[4], quant(0.5, 0));
    b.op(Op::Reshape {
        input: a,
        output: y,
    });
    b.op(Op::Add {
        lhs: x,
        rhs: c,
        output: a,
        activation: Activation::None,
    });
    b.op(Op::Reshape {
        input: a,
        output: c,
    });
    b.input(x).output(y);
    expect_op(
        b.finish(),
        1,
        "Add",
        &["cycle", "op 1 (Add)", "op 2 (Reshape)"],
    );
}

/// One way of breaking a graph, chosen by the mutation test.
#[derive(Debug, Clone)]
enum Mutation {
    Dim {
        tensor: usize,
        dim: usize,
        value: usize,
    },
    ZeroPoint {
        tensor: usize,
        value: i32,
    },
    Scale {
        tensor: usize,
        value: f32,
    },
    Rewire {
        op: usize,
        slot: usize,
        tensor: usize,
    },
    Stride {
        op: usize,
        value: usize,
    },
    Axis {
        value: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let dims = prop::sample::select(vec![0usize, 1, 2, 3, 4, 7, 8, 9, 16, 1 << 31, usize::MAX]);
    let zps = prop::sample::select(vec![
        i32::MIN,
        -129,
        -128,
        -1,
        0,
        1,
        127,
        128,
        255,
        256,
        i32::MAX,
    ]);
    let scales = prop::sample::select(vec![
        0.0f32,
        -1.0,
        f32::NAN,
        f32::INFINITY,
        1e-38,
        1e-6,
        0.5,
        1e30,
    ]);
    prop_oneof![
        (0usize..20, 0usize..5, dims.clone()).prop_map(|(tensor, dim, value)| Mutation::Dim {
            tensor,
            dim,
            value
        }),
        (0usize..20, zps).prop_map(|(tensor, value)| Mutation::ZeroPoint { tensor, value }),
        (0usize..20, scales).prop_map(|(tensor, value)| Mutation::Scale { tensor, value }),
        (0usize..8, 0usize..4, 0usize..24).prop_map(|(op, slot, tensor)| Mutation::Rewire {
            op,
            slot,
            tensor
        }),
        (0usize..8, dims.clone()).prop_map(|(op, value)| Mutation::Stride { op, value }),
        dims.prop_map(|value| Mutation::Axis { value }),
    ]
}

fn apply(p: &mut Parts, m: &Mutation) {
    let nt = p.tensors.len();
    match *m {
        Mutation::Dim { tensor, dim, value } => {
            let t = &mut p.tensors[tensor % nt];
            if dim < t.shape.len() {
                t.shape[dim] = value;
            } else {
                t.shape.push(value);
            }
        }
        Mutation::ZeroPoint { tensor, value } => {
            if let Some(Quant::PerTensor(q)) = &mut p.tensors[tensor % nt].quant {
                q.zero_point = value;
            }
        }
        Mutation::Scale { tensor, value } => {
            if let Some(Quant::PerTensor(q)) = &mut p.tensors[tensor % nt].quant {
                q.scale = value;
            }
        }
        Mutation::Rewire { op, slot, tensor } => {
            let n = p.ops.len();
            let id = TensorId((tensor % (nt + 2)) as u32); // sometimes out of range
            match &mut p.ops[op % n] {
                Op::Conv2d {
                    input,
                    filter,
                    bias,
                    output,
                    ..
                }
                | Op::DepthwiseConv2d {
                    input,
                    filter,
                    bias,
                    output,
                    ..
                } => match slot {
                    0 => *input = id,
                    1 => *filter = id,
                    2 => *bias = Some(id),
                    _ => *output = id,
                },
                Op::FullyConnected {
                    input,
                    weights,
                    output,
                    ..
                } => match slot {
                    0 => *input = id,
                    1 => *weights = id,
                    _ => *output = id,
                },
                Op::Add {
                    lhs, rhs, output, ..
                } => match slot {
                    0 => *lhs = id,
                    1 => *rhs = id,
                    _ => *output = id,
                },
                Op::AveragePool2d { input, output, .. }
                | Op::Softmax { input, output, .. }
                | Op::Quantize { input, output }
                | Op::Dequantize { input, output } => {
                    if slot == 0 {
                        *input = id
                    } else {
                        *output = id
                    }
                }
                _ => {}
            }
        }
        Mutation::Stride { op, value } => {
            let n = p.ops.len();
            match &mut p.ops[op % n] {
                Op::Conv2d { stride, .. }
                | Op::DepthwiseConv2d { stride, .. }
                | Op::AveragePool2d { stride, .. } => stride[0] = value,
                _ => {}
            }
        }
        Mutation::Axis { value } => {
            // Splice a concat of the pool output with itself along `value` into the graph.
            let pool = p.id("pool");
            let out = p.push(act(
                "cat",
                p.tensors[pool.index()].dtype,
                &[1, 4, 4, 16],
                1.0,
                0,
            ));
            p.ops.push(Op::Concat {
                inputs: vec![pool, pool],
                output: out,
                axis: value,
            });
            p.outputs.push(out);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]
    /// Validation never panics on a broken graph; what it accepts plans, and runs without a
    /// panic (every kernel assertion is covered by a validation rule).
    #[test]
    fn mutated_graphs_never_panic(
        dtype in prop::sample::select(vec![DType::U8, DType::I8]),
        edges in any::<bool>(),
        ms in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut p = Parts::of(&examples::small_cnn(dtype, edges, 1));
        for m in &ms {
            apply(&mut p, m);
        }
        if let Ok(g) = p.build() {
            let work: usize = g.tensors().iter().map(|t| t.num_elements()).sum();
            if let (Ok(model), true) = (Model::new(g), work < 1 << 20) {
                let x = examples::random_input(model.graph(), 3);
                model.run(&x).unwrap();
                model.run_float(&x).unwrap();
            }
        }
    }
}
