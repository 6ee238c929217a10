//! `intq run` on models with several outputs (`--output-dir`, repeated `--tensor`), and
//! `intq run`/`inspect` on a `.tflite` model holding an op intq does not support.

mod common;
use common::intq;

use intq_cli::npy;
use intq_engine::TensorData;
use intq_tflite::flatbuf::{finish, Field, Node};
use intq_tflite::schema;
use std::path::{Path, PathBuf};

fn ok(args: &[&str]) -> String {
    let out = intq(args);
    assert!(
        out.status.success(),
        "intq {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stderr of a run that must fail.
fn fails(args: &[&str]) -> String {
    let out = intq(args);
    assert!(!out.status.success(), "intq {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn payload(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut p = &b[..];
    ndarray_npy::npy::header::Header::from_reader(&mut p).unwrap();
    p.to_vec()
}

fn op_zoo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../intq-tflite/tests/fixtures/op_zoo_u8")
}

/// The op_zoo outputs, in the model's order.
const ZOO_OUTPUTS: [&str; 4] = ["probs", "sig", "spatial_mean", "channel_mean"];

/// The model's outputs written with `-o` once per output, as payloads in the model's order.
fn ordered_outputs(model: &Path, input: &Path, dir: &Path) -> Vec<Vec<u8>> {
    let paths: Vec<PathBuf> = (0..ZOO_OUTPUTS.len())
        .map(|k| dir.join(format!("o{k}.npy")))
        .collect();
    let mut args = vec!["run", s(model), "-i", s(input)];
    for p in &paths {
        args.extend(["-o", s(p)]);
    }
    ok(&args);
    paths.iter().map(|p| payload(p)).collect()
}

#[test]
fn output_dir_writes_every_output_named_after_its_tensor() {
    let d = common::scratch("run_outputs", "dir");
    let model = op_zoo().join("op_zoo_u8.tflite");
    let input = op_zoo().join("seed0_input0.npy");
    let out = d.join("outs");
    ok(&["run", s(&model), "-i", s(&input), "--output-dir", s(&out)]);
    // The same bytes as `-o` once per output, in the order the model lists its outputs.
    let by_order = ordered_outputs(&model, &input, &d);
    for (name, expected) in ZOO_OUTPUTS.iter().zip(&by_order) {
        assert_eq!(
            &payload(&out.join(format!("{name}.npy"))),
            expected,
            "{name}"
        );
    }
    // Only the outputs, no temp files left behind.
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "channel_mean.npy",
            "probs.npy",
            "sig.npy",
            "spatial_mean.npy"
        ]
    );
}

#[test]
fn repeated_tensor_with_as_many_outputs_or_a_directory() {
    let d = common::scratch("run_outputs", "tensors");
    let model = op_zoo().join("op_zoo_u8.tflite");
    let input = op_zoo().join("seed1_input0.npy");
    let (a, b) = (d.join("a.npy"), d.join("b.npy"));
    let args = [
        "run",
        s(&model),
        "-i",
        s(&input),
        "--tensor",
        "sig",
        "--tensor",
        "probs",
    ];
    ok(&[&args[..], &["-o", s(&a), "-o", s(&b)]].concat());
    let by_order = ordered_outputs(&model, &input, &d);
    assert_eq!(payload(&a), by_order[1]);
    assert_eq!(payload(&b), by_order[0]);

    let out = d.join("dir");
    ok(&[&args[..], &["--output-dir", s(&out)]].concat());
    assert_eq!(payload(&out.join("sig.npy")), payload(&a));
    assert_eq!(payload(&out.join("probs.npy")), payload(&b));
    assert!(!out.join("spatial_mean.npy").exists());

    // One path for two tensors, and -o together with --output-dir, are refused.
    let err = fails(&[&args[..], &["-o", s(&a)]].concat());
    assert!(
        err.contains("1 output path(s) given for 2 tensor(s)"),
        "{err}"
    );
    let err = fails(
        &[
            &args[..],
            &["-o", s(&a), "-o", s(&b), "--output-dir", s(&out)],
        ]
        .concat(),
    );
    assert!(err.contains("--output-dir"), "{err}");
    // Neither: refused with a hint.
    let err = fails(&args);
    assert!(err.contains("--output-dir"), "{err}");
}

/// A small model: input -> RELU -> RELU6 -> 'head/relu6:0' (an output), and tensor
/// `custom_reads` (RELU's output or the input) ->
/// a custom Convolution2DTransposeBias op -> QUANTIZE -> 'detections_q' (an output). Written
/// with the FlatBuffer writer intq's exporter uses.
fn model_with_custom_op(custom_reads: i32) -> Vec<u8> {
    let quant = || {
        Field::Off(Node::Table(vec![
            (schema::quant::SCALE, Field::Off(Node::F32s(vec![0.1]))),
            (schema::quant::ZERO_POINT, Field::Off(Node::I64s(vec![0]))),
        ]))
    };
    let tensor = |name: &str, ttype: i8, quantized: bool| {
        let mut f = vec![
            (schema::tensor::SHAPE, Field::Off(Node::I32s(vec![1, 8]))),
            (schema::tensor::TYPE, Field::U8(ttype as u8)),
            (schema::tensor::BUFFER, Field::U32(0)),
            (schema::tensor::NAME, Field::Off(Node::Str(name.into()))),
        ];
        if quantized {
            f.push((schema::tensor::QUANTIZATION, quant()));
        }
        Node::Table(f)
    };
    let u8t = schema::ttype::UINT8;
    let tensors = vec![
        tensor("input", u8t, true),
        tensor("relu", u8t, true),
        tensor("head/relu6:0", u8t, true),
        tensor("detections", schema::ttype::FLOAT32, false),
        tensor("detections_q", u8t, true),
    ];
    let op = |opcode: u32, input: i32, output: i32| {
        Node::Table(vec![
            (schema::operator::OPCODE_INDEX, Field::U32(opcode)),
            (
                schema::operator::INPUTS,
                Field::Off(Node::I32s(vec![input])),
            ),
            (
                schema::operator::OUTPUTS,
                Field::Off(Node::I32s(vec![output])),
            ),
        ])
    };
    let operators = vec![
        op(0, 0, 1),
        op(1, 1, 2),
        op(2, custom_reads, 3),
        op(3, 3, 4),
    ];
    let opcode = |c: i32, custom: Option<&str>| {
        let mut f = vec![
            (
                schema::opcode::DEPRECATED_BUILTIN_CODE,
                Field::U8(c.min(127) as u8),
            ),
            (schema::opcode::VERSION, Field::I32(1)),
            (schema::opcode::BUILTIN_CODE, Field::I32(c)),
        ];
        if let Some(name) = custom {
            f.push((
                schema::opcode::CUSTOM_CODE,
                Field::Off(Node::Str(name.into())),
            ));
        }
        Node::Table(f)
    };
    let opcodes = vec![
        opcode(schema::op::RELU, None),
        opcode(schema::op::RELU6, None),
        opcode(32, Some("Convolution2DTransposeBias")),
        opcode(schema::op::QUANTIZE, None),
    ];
    let subgraph = Node::Table(vec![
        (schema::subgraph::TENSORS, Field::Off(Node::Tables(tensors))),
        (schema::subgraph::INPUTS, Field::Off(Node::I32s(vec![0]))),
        (
            schema::subgraph::OUTPUTS,
            Field::Off(Node::I32s(vec![2, 4])),
        ),
        (
            schema::subgraph::OPERATORS,
            Field::Off(Node::Tables(operators)),
        ),
    ]);
    let model = Node::Table(vec![
        (schema::model::VERSION, Field::U32(3)),
        (
            schema::model::OPERATOR_CODES,
            Field::Off(Node::Tables(opcodes)),
        ),
        (
            schema::model::SUBGRAPHS,
            Field::Off(Node::Tables(vec![subgraph])),
        ),
        (
            schema::model::BUFFERS,
            Field::Off(Node::Tables(vec![Node::Table(vec![])])),
        ),
    ]);
    finish(&model, b"TFL3")
}

#[test]
fn unsupported_op_is_listed_and_the_rest_still_runs() {
    let d = common::scratch("run_outputs", "unsupported");
    let bytes = model_with_custom_op(1);
    // The library's strict import still refuses the model, naming the op.
    let err = match intq_tflite::import(&bytes) {
        Ok(_) => panic!("a model with an unsupported op was imported whole"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("Convolution2DTransposeBias"), "{err}");
    let partial = intq_tflite::import::import_partial(&bytes).unwrap();
    assert_eq!(partial.unsupported.len(), 1);
    assert_eq!(partial.unsupported[0].index, 2);
    assert_eq!(partial.unsupported[0].outputs, ["detections"]);
    assert_eq!(partial.cut_outputs, ["detections_q"]);

    let model = d.join("det.tflite");
    std::fs::write(&model, &bytes).unwrap();
    let text = ok(&["inspect", s(&model)]);
    assert!(text.contains("unsupported ops"), "{text}");
    assert!(
        text.contains("op #2 CUSTOM 'Convolution2DTransposeBias' (operator code 32)"),
        "{text}"
    );
    assert!(text.contains("'detections_q'"), "{text}");

    let codes: Vec<u8> = vec![0, 10, 50, 59, 60, 61, 200, 255];
    let input = d.join("in.npy");
    npy::write(
        &input,
        &npy::Array {
            shape: vec![1, 8],
            data: TensorData::U8(codes.clone()),
        },
    )
    .unwrap();

    // A tensor that does not depend on the op runs; its file name is sanitized.
    let out = d.join("outs");
    ok(&[
        "run",
        s(&model),
        "-i",
        s(&input),
        "--tensor",
        "head/relu6:0",
        "--tensor",
        "relu",
        "--output-dir",
        s(&out),
    ]);
    // RELU6 at S = 0.1, Z = 0 clamps the codes to [0, 60].
    let relu6: Vec<u8> = codes.iter().map(|&c| c.min(60)).collect();
    assert_eq!(payload(&out.join("head_relu6_0.npy")), relu6);
    assert_eq!(payload(&out.join("relu.npy")), codes);

    // A tensor that depends on it: an error naming the op.
    let err = fails(&[
        "run",
        s(&model),
        "-i",
        s(&input),
        "--tensor",
        "detections_q",
        "-o",
        s(&d.join("x.npy")),
    ]);
    assert!(
        err.contains("'detections_q' depends on op #2 CUSTOM 'Convolution2DTransposeBias'"),
        "{err}"
    );
    // All outputs: an error naming the op and the outputs that depend on it.
    let err = fails(&["run", s(&model), "-i", s(&input), "--output-dir", s(&out)]);
    assert!(err.contains("Convolution2DTransposeBias"), "{err}");
    assert!(
        err.contains("output(s) 'detections_q' depend on it"),
        "{err}"
    );
    assert!(!d.join("x.npy").exists() && !out.join("detections_q.npy").exists());
}

#[test]
fn unsupported_op_reading_the_graph_input() {
    let d = common::scratch("run_outputs", "unsupported_first");
    let model = d.join("det.tflite");
    std::fs::write(&model, model_with_custom_op(0)).unwrap();
    let text = ok(&["inspect", s(&model)]);
    assert!(text.contains("Convolution2DTransposeBias"), "{text}");
    let input = d.join("in.npy");
    let codes: Vec<u8> = vec![3, 70, 0, 255, 60, 61, 1, 2];
    npy::write(
        &input,
        &npy::Array {
            shape: vec![1, 8],
            data: TensorData::U8(codes.clone()),
        },
    )
    .unwrap();
    let out = d.join("r6.npy");
    ok(&[
        "run",
        s(&model),
        "-i",
        s(&input),
        "--tensor",
        "head/relu6:0",
        "-o",
        s(&out),
    ]);
    let relu6: Vec<u8> = codes.iter().map(|&c| c.min(60)).collect();
    assert_eq!(payload(&out), relu6);
}
