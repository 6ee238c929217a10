//! A Keras model converted by tf2onnx (tools/onnx-fixtures/keras_fixture.py): the NHWC input
//! with its Transpose to NCHW, BN folded into the convs by the converter, a depthwise conv, a
//! global average pool and its Squeeze, MatMul + Add and Softmax import and run in f32 equal to
//! ONNX Runtime's outputs.

use std::path::PathBuf;

use intq_onnx::eval::{run, Tensor};
use intq_onnx::Op;

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

#[test]
fn tf2onnx_keras_cnn_equals_onnxruntime() {
    let g = intq_onnx::load(&fixture("keras_cnn.onnx")).unwrap();
    assert!(g.producer.starts_with("tf2onnx"), "{}", g.producer);
    assert_eq!(g.value(g.inputs[0]).shape, [1, 32, 32, 3]);
    let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
    assert_eq!(ops[0], "Transpose");
    assert!(ops.contains(&"Conv(depthwise)"), "{ops:?}");
    assert!(
        g.nodes
            .iter()
            .any(|n| matches!(&n.op, Op::Linear { bias: Some(_), .. })),
        "{ops:?}"
    );
    let x = npy(fixture("keras_cnn.input.npy"));
    let want = npy(fixture("keras_cnn.output.npy"));
    let got = run(&g, std::slice::from_ref(&x)).unwrap();
    assert_eq!(got[0].shape, want.shape);
    let scale = want.data.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let diff = got[0]
        .data
        .iter()
        .zip(&want.data)
        .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    println!("keras_cnn: max|intq-ort|/max|ort| = {:.3e}", diff / scale);
    assert!(diff / scale <= 1e-5, "{}", diff / scale);
}

/// The fixture with its Squeeze's axes constant set to `axes`; the error importing it.
fn squeeze_err(axes: &[i64]) -> String {
    use intq_onnx::proto::ModelProto;
    use prost::Message;
    let bytes = std::fs::read(fixture("keras_cnn.onnx")).unwrap();
    let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let name = g
        .node
        .iter()
        .find(|n| n.op_type.as_deref() == Some("Squeeze"))
        .unwrap()
        .input[1]
        .clone();
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name.as_str()))
        .unwrap();
    t.raw_data = None;
    t.int64_data = axes.to_vec();
    t.dims = vec![axes.len() as i64];
    match intq_onnx::load_bytes(&m.encode_to_vec()) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_squeeze_of_the_batch_or_of_a_real_dimension_is_named() {
    assert_eq!(
        squeeze_err(&[0, 2]),
        "node \"keras_cnn/gap/Mean_Squeeze__31\" (Squeeze), attribute \"axes\": [0, 2] on [1, 32, \
         1, 1]: intq squeezes dimensions of size 1 other than the batch"
    );
    assert_eq!(
        squeeze_err(&[1]),
        "node \"keras_cnn/gap/Mean_Squeeze__31\" (Squeeze), attribute \"axes\": [1] on [1, 32, 1, \
         1]: intq squeezes dimensions of size 1 other than the batch"
    );
}
