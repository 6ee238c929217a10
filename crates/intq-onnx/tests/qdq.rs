//! The QDQ exporter on small engine graphs: integer edges become DequantizeLinear /
//! QuantizeLinear with the tensors' params, and codes narrowed below 8 bits are clamped by a
//! Clip at their range before they are quantized.

use intq_engine::{Activation, DType, GraphBuilder, Op, Padding, Quant, QuantParams};
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
    let x = b.tensor("x", DType::U8, &[1, 8], Some(Quant::PerTensor(p)));
    let y = b.tensor(
        "y",
        DType::U8,
        &[1, 8],
        Some(Quant::PerTensor(QuantParams {
            scale: 1.0 / 256.0,
            zero_point: 0,
        })),
    );
    b.op(Op::Softmax {
        input: x,
        output: y,
        beta: 1.0,
    });
    b.input(x).output(y);
    let e = intq_onnx::qdq::export(&b.finish().unwrap()).unwrap_err();
    assert!(e.to_string().contains("Softmax"), "{e}");
}
