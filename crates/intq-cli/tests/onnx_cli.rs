//! `intq inspect` and `intq run` on float ONNX models: the fixtures of crates/intq-onnx run at
//! batch 4 equal ONNX Runtime's outputs, and an op intq cannot take is an error naming it.

mod common;
use common::intq;

use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../intq-onnx/tests/fixtures")
        .join(name)
}

fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let (h, v) = intq_data::npy::parse::<f32>(&std::fs::read(path).unwrap()).unwrap();
    (h.shape, v)
}

#[test]
fn inspect_lists_the_imported_graph() {
    let m = fixture("resnet_tiny.onnx");
    let out = intq(&["inspect", m.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("opset 17"), "{text}");
    assert!(text.contains("input [N, 3, 32, 32]"), "{text}");
    assert!(
        text.contains("BatchNormalization") && text.contains("Linear 32 -> 10"),
        "{text}"
    );
}

#[test]
fn run_matches_onnxruntime_at_any_batch() {
    let dir = common::scratch("onnx_cli", "run");
    for name in [
        "resnet_tiny",
        "mobilenetv2_tiny",
        "mobilenetv2_qat",
        "ops_helper",
    ] {
        let out_path = dir.join(format!("{name}.out.npy"));
        let out = intq(&[
            "run",
            fixture(&format!("{name}.onnx")).to_str().unwrap(),
            "-i",
            fixture(&format!("{name}.input.npy")).to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (shape, got) = read_f32(&out_path);
        let (want_shape, want) = read_f32(&fixture(&format!("{name}.output.npy")));
        assert_eq!(shape, want_shape);
        assert_eq!(shape[0], 4);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-5 * scale, "{name}: {diff} of {scale}");
    }
}

#[test]
fn an_unsupported_op_is_an_error_naming_it() {
    let dir = common::scratch("onnx_cli", "bad");
    // The helper fixture with its Relu renamed to an op intq does not take ("Relu" and "Selu"
    // have the same length, so the protobuf stays valid).
    let mut bytes = std::fs::read(fixture("ops_helper.onnx")).unwrap();
    let at = bytes.windows(5).position(|w| w == b"\x04Relu").unwrap();
    bytes[at + 1..at + 5].copy_from_slice(b"Selu");
    let m = dir.join("bad.onnx");
    std::fs::write(&m, bytes).unwrap();
    let out = intq(&["inspect", m.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.onnx") && err.contains("(Selu)") && err.contains("not supported"),
        "{err}"
    );
}
