//! ONNX ConvTranspose: the committed fixtures run in f32 equal ONNX Runtime's outputs (every
//! attribute combination the importer takes), and what the engine's transposed convolution cannot
//! compute is refused naming the node, its op type and the attribute.

use std::path::PathBuf;

use intq_onnx::eval::{run, Tensor};
use intq_onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use intq_onnx::{load_bytes, Op};
use prost::Message;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn npy(path: PathBuf) -> Tensor {
    let (h, data) = intq_data::npy::parse::<f32>(&std::fs::read(&path).unwrap()).unwrap();
    Tensor {
        shape: h.shape,
        data,
    }
}

/// max |intq - ort| / max |ort| of fixture `name` at its batch.
fn parity(name: &str) -> (intq_onnx::Graph, f64) {
    let g = intq_onnx::load(&fixture(&format!("{name}.onnx"))).unwrap();
    let x = npy(fixture(&format!("{name}.input.npy")));
    let want = npy(fixture(&format!("{name}.output.npy")));
    let got = run(&g, std::slice::from_ref(&x)).unwrap();
    assert_eq!(got[0].shape, want.shape);
    let scale = want.data.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let diff = got[0]
        .data
        .iter()
        .zip(&want.data)
        .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    println!("{name}: max|intq-ort|/max|ort| = {:.3e}", diff / scale);
    (g, diff / scale)
}

#[test]
fn conv_transpose_equals_onnxruntime() {
    let (g, e) = parity("convt_ops");
    assert!(e <= 1e-5, "convt_ops: {e}");
    let convt: Vec<_> = g
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::ConvTranspose(c) => Some((n.name.as_str(), c.pads, c.output_padding)),
            _ => None,
        })
        .collect();
    // The resolved cuts: explicit, SAME_UPPER (larger half at the end), SAME_LOWER, and
    // output_shape.
    assert_eq!(convt.len(), 6);
    assert_eq!(convt[0], ("convt_asym", [1, 0, 0, 1], [1, 1]));
    assert_eq!(convt[1], ("convt_same_upper", [0, 0, 1, 0], [0, 0]));
    assert_eq!(convt[2], ("convt_same_lower", [1, 1, 0, 0], [0, 0]));
    let (g, e) = parity("decoder_qat");
    assert!(e <= 1e-5, "decoder_qat: {e}");
    let shapes: Vec<Vec<usize>> = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::ConvTranspose(_)))
        .map(|n| g.value(n.output).shape.clone())
        .collect();
    assert_eq!(shapes, [vec![1, 8, 16, 16], vec![1, 8, 32, 32]]);
}

fn tensor(name: &str, dims: &[i64]) -> TensorProto {
    let n: i64 = dims.iter().product();
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: (0..n).map(|v| v as f32 * 0.1).collect(),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    use tensor_shape_proto::{dimension::Value, Dimension};
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A ConvTranspose "up" from 4 to 2 channels (weight `[4, 2, 3, 3]`, or `[4, 1, 3, 3]` with
/// group 2) on a 1x4x5x5 input, with `attrs`; the error importing it.
fn convt_err(attrs: Vec<AttributeProto>, weight_dims: &[i64]) -> String {
    let m = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            node: vec![NodeProto {
                op_type: Some("ConvTranspose".into()),
                name: Some("up".into()),
                input: vec!["x".into(), "w".into()],
                output: vec!["y".into()],
                attribute: attrs,
                ..Default::default()
            }],
            initializer: vec![tensor("w", weight_dims)],
            input: vec![value_info("x", &[1, 4, 5, 5])],
            output: vec![value_info("y", &[])],
            name: Some("g".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    match load_bytes(&m.encode_to_vec()) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn what_the_engine_cannot_transpose_is_named() {
    let w = [4, 2, 3, 3];
    assert_eq!(
        convt_err(vec![int("group", 2)], &[4, 1, 3, 3]),
        "node \"up\" (ConvTranspose), attribute \"group\": is 2; intq's transposed convolution \
         takes group 1"
    );
    assert_eq!(
        convt_err(vec![ints("dilations", &[2, 2])], &w),
        "node \"up\" (ConvTranspose), attribute \"dilations\": is [2, 2]; intq's transposed \
         convolution (TFLite's TRANSPOSE_CONV) has no dilation"
    );
    // Larger than the full output (2 * 4 + 3 = 11): ONNX would pad the output.
    assert_eq!(
        convt_err(
            vec![ints("strides", &[2, 2]), ints("output_shape", &[12, 11])],
            &w
        ),
        "node \"up\" (ConvTranspose), attribute \"output_shape\": asks for an output of 12 in \
         dimension 2, more than the 11 a transposed convolution of this input gives (intq does \
         not pad its output)"
    );
    assert_eq!(
        convt_err(
            vec![ints("strides", &[2, 2]), ints("output_padding", &[2, 0])],
            &w
        ),
        "node \"up\" (ConvTranspose), attribute \"output_padding\": [2, 0]: intq takes two \
         values, each below its stride [2, 2]"
    );
    assert_eq!(
        convt_err(vec![ints("pads", &[4, 0, 3, 0])], &w),
        "node \"up\" (ConvTranspose), attribute \"pads\": (4, 3) cut all of the 7 outputs in \
         dimension 2"
    );
    assert_eq!(
        convt_err(vec![], &[3, 2, 3, 3]),
        "node \"up\" (ConvTranspose): weight [3, 2, 3, 3] takes 3 input channels, the input has 4"
    );
}
