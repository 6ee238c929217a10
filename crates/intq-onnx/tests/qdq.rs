//! The QDQ exporter on small engine graphs: integer edges become DequantizeLinear /
//! QuantizeLinear with the tensors' params, and codes narrowed below 8 bits are clamped by a
//! Clip at their range before they are quantized; the ops of imported networks (transposed
//! convolutions with per-channel weights on ONNX's axis 1, resizes in TFLite's coordinate
//! modes, constant operands in the NCHW layout) get their ONNX forms, and an op with none is
//! named.

use intq_engine::{
    Activation, ChannelParams, DType, GraphBuilder, Op, Padding, Quant, QuantParams, TensorData,
};
use intq_onnx::proto::tensor_proto::DataType;
use intq_onnx::proto::{type_proto, ModelProto, TensorProto};
use prost::Message;

fn elem_type(v: &intq_onnx::proto::ValueInfoProto) -> i32 {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t.elem_type.unwrap(),
        other => panic!("{other:?}"),
    }
}

fn scalar_f32(inits: &[TensorProto], name: &str) -> f32 {
    let t = inits
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap();
    f32::from_le_bytes(t.raw_data.as_ref().unwrap()[..4].try_into().unwrap())
}

#[test]
fn integer_edges_and_narrow_codes() {
    // A pool keeps its input's params, 4-bit codes here.
    let p = QuantParams {
        scale: 0.5,
        zero_point: 8,
    };
    let mut b = GraphBuilder::new();
    let x = b.tensor(
        "pixels",
        DType::U8,
        &[1, 4, 4, 2],
        Some(Quant::PerTensor(p)),
    );
    let y = b.tensor(
        "pooled",
        DType::U8,
        &[1, 2, 2, 2],
        Some(Quant::PerTensor(p)),
    );
    b.narrow_codes(x, 0, 15);
    b.narrow_codes(y, 0, 15);
    b.op(Op::AveragePool2d {
        input: x,
        output: y,
        filter: [2, 2],
        stride: [2, 2],
        padding: Padding::Valid,
        activation: Activation::None,
    });
    b.input(x).output(y);
    let g = b.finish().unwrap();
    let bytes = intq_onnx::qdq::export(&g).unwrap();
    let m = ModelProto::decode(bytes.as_slice()).unwrap();
    let g = m.graph.unwrap();
    assert_eq!(elem_type(&g.input[0]), DataType::Uint8 as i32);
    assert_eq!(elem_type(&g.output[0]), DataType::Uint8 as i32);
    let ops: Vec<&str> = g
        .node
        .iter()
        .map(|n| n.op_type.as_deref().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "DequantizeLinear",
            "Transpose",
            "AveragePool",
            "Clip",
            "QuantizeLinear",
            "DequantizeLinear",
            "Transpose",
            "QuantizeLinear"
        ]
    );
    // The pixels are read with their own params; the narrowed output clamps at codes [0, 15].
    assert_eq!(g.node[0].input[0], "pixels");
    assert_eq!(scalar_f32(&g.initializer, &g.node[0].input[1]), 0.5);
    let clip = &g.node[3];
    assert_eq!(
        scalar_f32(&g.initializer, &clip.input[1]),
        0.5 * (0 - 8) as f32
    );
    assert_eq!(
        scalar_f32(&g.initializer, &clip.input[2]),
        0.5 * (15 - 8) as f32
    );
    assert_eq!(g.node.last().unwrap().output[0], "pooled");
}

#[test]
fn an_op_without_a_qdq_form_is_named() {
    let p = QuantParams {
        scale: 0.1,
        zero_point: 0,
    };
    let mut b = GraphBuilder::new();
    // SPACE_TO_BATCH_ND has no ONNX operator.
    let x4 = b.tensor("x4", DType::U8, &[1, 4, 4, 1], Some(Quant::PerTensor(p)));
    let y4 = b.tensor("y4", DType::U8, &[4, 2, 2, 1], Some(Quant::PerTensor(p)));
    b.op(Op::SpaceToBatch {
        input: x4,
        output: y4,
        block: [2, 2],
        paddings: [[0, 0], [0, 0]],
    });
    b.input(x4).output(y4);
    let e = intq_onnx::qdq::export(&b.finish().unwrap()).unwrap_err();
    assert!(e.to_string().contains("SpaceToBatch"), "{e}");
    assert!(e.to_string().contains("no QDQ form"), "{e}");
}

fn attr<'a>(
    n: &'a intq_onnx::proto::NodeProto,
    name: &str,
) -> &'a intq_onnx::proto::AttributeProto {
    n.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{:?} has no {name}", n.op_type))
}

fn attr_str(n: &intq_onnx::proto::NodeProto, name: &str) -> String {
    String::from_utf8(attr(n, name).s.clone().unwrap()).unwrap()
}

#[test]
fn imported_network_ops() {
    let p = Quant::PerTensor(QuantParams {
        scale: 0.05,
        zero_point: 0,
    });
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::I8, &[1, 4, 4, 2], Some(p.clone()));
    // Per-channel transposed convolution: 3 output channels.
    let w_q = Quant::PerChannel(ChannelParams::new(vec![0.01, 0.02, 0.03], vec![0; 3], 0).unwrap());
    let w = b.constant(
        "w",
        &[3, 3, 3, 2],
        Some(w_q),
        TensorData::I8((0..54).map(|v| (v % 7) as i8 - 3).collect()),
    );
    let t = b.tensor("convt", DType::I8, &[1, 8, 8, 3], Some(p.clone()));
    b.op(Op::TransposeConv {
        input: x,
        filter: w,
        bias: None,
        output: t,
        stride: [2, 2],
        padding: Padding::Same,
        activation: Activation::None,
    });
    let l = b.tensor("leaky", DType::I8, &[1, 8, 8, 3], Some(p.clone()));
    b.op(Op::LeakyRelu {
        input: t,
        output: l,
        alpha: 0.1,
    });
    let c = b.constant(
        "c",
        &[1, 1, 1, 3],
        Some(p.clone()),
        TensorData::I8(vec![1, 2, 3]),
    );
    let s = b.tensor("sub", DType::I8, &[1, 8, 8, 3], Some(p.clone()));
    b.op(Op::Sub {
        lhs: l,
        rhs: c,
        output: s,
        activation: Activation::None,
    });
    let a = b.constant(
        "alpha",
        &[1, 1, 1, 3],
        Some(p.clone()),
        TensorData::I8(vec![4, 5, 6]),
    );
    let pr = b.tensor("prelu", DType::I8, &[1, 8, 8, 3], Some(p.clone()));
    b.op(Op::Prelu {
        input: s,
        alpha: a,
        output: pr,
    });
    let m = b.tensor("max", DType::I8, &[1, 8, 8, 3], Some(p.clone()));
    b.op(Op::Maximum {
        lhs: pr,
        rhs: c,
        output: m,
    });
    let n = b.tensor("nearest", DType::I8, &[1, 16, 16, 3], Some(p.clone()));
    b.op(Op::ResizeNearest {
        input: m,
        output: n,
        align_corners: false,
        half_pixel_centers: true,
    });
    let bl = b.tensor("bilinear", DType::I8, &[1, 8, 8, 3], Some(p.clone()));
    b.op(Op::ResizeBilinear {
        input: n,
        output: bl,
        align_corners: true,
        half_pixel_centers: false,
    });
    let tr = b.tensor("transposed", DType::I8, &[1, 3, 8, 8], Some(p.clone()));
    b.op(Op::Transpose {
        input: bl,
        output: tr,
        perm: vec![0, 3, 1, 2],
    });
    b.input(x).output(tr);
    let g = b.finish().unwrap();
    let bytes = intq_onnx::qdq::export(&g).unwrap();
    let m = ModelProto::decode(bytes.as_slice()).unwrap();
    let g = m.graph.unwrap();
    let ops: Vec<&str> = g
        .node
        .iter()
        .map(|n| n.op_type.as_deref().unwrap())
        .collect();
    for want in [
        "ConvTranspose",
        "LeakyRelu",
        "Sub",
        "PRelu",
        "Max",
        "Resize",
    ] {
        assert!(ops.contains(&want), "{want} missing from {ops:?}");
    }
    let node = |op: &str| {
        g.node
            .iter()
            .find(|n| n.op_type.as_deref() == Some(op))
            .unwrap()
    };
    // The transposed convolution's weight: [C_in, C_out, kh, kw], scales per output channel
    // on axis 1; SAME padding of a 4 → 8 stride-2 upsampling with a 3x3 filter.
    let ct = node("ConvTranspose");
    let wdq = g.node.iter().find(|n| n.output[0] == ct.input[1]).unwrap();
    assert_eq!(wdq.op_type.as_deref(), Some("DequantizeLinear"));
    assert_eq!(attr(wdq, "axis").i, Some(1));
    let dims = |name: &str| {
        g.initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
            .unwrap()
            .dims
            .clone()
    };
    assert_eq!(dims(&wdq.input[0]), [2, 3, 3, 3]);
    assert_eq!(dims(&wdq.input[1]), [3]);
    assert_eq!(attr(ct, "pads").ints, [0, 0, 1, 1]);
    assert!(ct
        .attribute
        .iter()
        .all(|a| a.name.as_deref() != Some("output_padding")));
    // A [1, 1, 1, C] constant beside an NCHW activation is [1, C, 1, 1].
    let pr = node("PRelu");
    let adq = g.node.iter().find(|n| n.output[0] == pr.input[1]).unwrap();
    assert_eq!(dims(&adq.input[0]), [1, 3, 1, 1]);
    assert_eq!(attr(node("LeakyRelu"), "alpha").f, Some(0.1));
    let resizes: Vec<_> = g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("Resize"))
        .collect();
    assert_eq!(attr_str(resizes[0], "mode"), "nearest");
    assert_eq!(
        attr_str(resizes[0], "coordinate_transformation_mode"),
        "tf_half_pixel_for_nn"
    );
    assert_eq!(attr_str(resizes[0], "nearest_mode"), "floor");
    assert_eq!(attr_str(resizes[1], "mode"), "linear");
    assert_eq!(
        attr_str(resizes[1], "coordinate_transformation_mode"),
        "align_corners"
    );
    // The engine's NHWC perm runs between NCHW → NHWC and (rank 4) back.
    let perms: Vec<Vec<i64>> = g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("Transpose"))
        .map(|n| attr(n, "perm").ints.clone())
        .collect();
    assert!(perms.contains(&vec![0, 3, 1, 2]));
    assert_eq!(g.output[0].name.as_deref(), Some("transposed"));
}
