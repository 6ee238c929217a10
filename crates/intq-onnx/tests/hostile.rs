//! Hostile and unsupported files: every one is an error that says what is wrong (never a panic),
//! naming the node, op type and attribute where one is at fault.

use std::path::{Path, PathBuf};

use intq_onnx::eval::{run, Tensor};
use intq_onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_proto::DataType,
    tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use intq_onnx::{load, load_bytes, OnnxError, Op};
use prost::Message;

fn tensor(name: &str, dims: &[i64], vals: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: vals.to_vec(),
        ..Default::default()
    }
}

fn tensor_i64(name: &str, vals: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![vals.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        int64_data: vals.to_vec(),
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    ins: &[&str],
    outs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
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

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
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

/// A model with input `x` of `dims` and output `y`.
fn model_proto(
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    dims: &[i64],
    opset: i64,
) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![value_info("x", dims)],
            output: vec![value_info("y", &[])],
            name: Some("g".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, dims: &[i64]) -> Vec<u8> {
    model_proto(nodes, inits, dims, 17).encode_to_vec()
}

fn err(bytes: &[u8]) -> String {
    match load_bytes(bytes) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

/// A 1x1 conv from 2 to 3 channels with weights 0..6.
fn conv_model(weight: TensorProto, attrs: Vec<AttributeProto>) -> Vec<u8> {
    model(
        vec![node("Conv", "conv0", &["x", "w"], &["y"], attrs)],
        vec![weight],
        &[1, 2, 4, 4],
    )
}

fn conv_weight() -> TensorProto {
    tensor("w", &[3, 2, 1, 1], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
}

#[test]
fn preprocessing_by_constants_imports_and_runs() {
    // (x - m_c) / s, then 2 - y and y * 0.5 + 1: per-channel and scalar constants, either order.
    let m = model(
        vec![
            node("Sub", "sub", &["x", "m"], &["a"], vec![]),
            node("Div", "div", &["a", "s"], &["b"], vec![]),
            node("Sub", "rsub", &["two", "b"], &["c"], vec![]),
            node("Mul", "mul", &["half", "c"], &["d"], vec![]),
            node("Add", "add", &["d", "one"], &["y"], vec![]),
        ],
        vec![
            tensor("m", &[1, 2, 1, 1], &[0.25, 0.5]),
            tensor("s", &[2, 1, 1], &[0.5, 2.0]),
            tensor("two", &[], &[2.0]),
            tensor("half", &[1], &[0.5]),
            tensor("one", &[1, 1, 1, 1], &[1.0]),
        ],
        &[1, 2, 1, 2],
    );
    let g = load_bytes(&m).unwrap();
    let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
    assert_eq!(
        ops,
        [
            "Sub(constant)",
            "Div(constant)",
            "Sub(constant)",
            "Mul(constant)",
            "Add(constant)"
        ]
    );
    let x = Tensor {
        shape: vec![1, 2, 1, 2],
        data: vec![0.25, 1.25, 0.5, 4.5],
    };
    let y = run(&g, &[x]).unwrap();
    let f = |v: f32, m: f32, s: f32| (2.0 - (v - m) / s) * 0.5 + 1.0;
    assert_eq!(
        y[0].data,
        [
            f(0.25, 0.25, 0.5),
            f(1.25, 0.25, 0.5),
            f(0.5, 0.5, 2.0),
            f(4.5, 0.5, 2.0)
        ]
    );
}

#[test]
fn max_and_min_by_a_constant_are_clips() {
    // Max(Min(Relu(x), 6), -1): the Relu merges into the Min's Clip [0, 6], and that into the
    // Max's, which leaves it [0, 6].
    let m = model(
        vec![
            node("Relu", "relu", &["x"], &["r"], vec![]),
            node("Min", "cap", &["r", "six"], &["c"], vec![]),
            node("Max", "floor", &["minus1", "c"], &["y"], vec![]),
        ],
        vec![tensor("six", &[], &[6.0]), tensor("minus1", &[1], &[-1.0])],
        &[1, 4],
    );
    let g = load_bytes(&m).unwrap();
    let ops: Vec<(&str, &Op)> = g
        .nodes
        .iter()
        .map(|n| (n.onnx_op.as_str(), &n.op))
        .collect();
    assert_eq!(ops, [("Max", &Op::Clip { min: 0.0, max: 6.0 })]);
    let y = run(
        &g,
        &[Tensor {
            shape: vec![1, 4],
            data: vec![-3.0, 0.5, 7.0, 2.0],
        }],
    )
    .unwrap();
    assert_eq!(y[0].data, [0.0, 0.5, 6.0, 2.0]);
    // Of two activations: elementwise, of one shape only.
    let m = model(
        vec![
            node("Relu", "r", &["x"], &["a"], vec![]),
            node("Min", "mn2", &["x", "a"], &["y"], vec![]),
        ],
        vec![],
        &[1, 4],
    );
    let g = load_bytes(&m).unwrap();
    assert_eq!(g.nodes[1].op, Op::Minimum);
    let y = run(
        &g,
        &[Tensor {
            shape: vec![1, 4],
            data: vec![-3.0, 0.5, 7.0, -2.0],
        }],
    )
    .unwrap();
    assert_eq!(y[0].data, [-3.0, 0.5, 7.0, -2.0]);
    let m = model(
        vec![
            node("Flatten", "f", &["x"], &["a"], vec![]),
            node("Max", "mx", &["x", "a"], &["y"], vec![]),
        ],
        vec![],
        &[1, 2, 2],
    );
    let e = err(&m);
    assert!(
        e.contains(
            "node \"mx\" (Max): Max of shapes [1, 2, 2] and [1, 4]; intq takes Max of two \
             activations of one shape"
        ),
        "{e}"
    );
    let m = model(
        vec![node("Min", "mn", &["x", "c"], &["y"], vec![])],
        vec![tensor("c", &[4], &[1.0, 2.0, 3.0, 4.0])],
        &[1, 4],
    );
    let e = err(&m);
    assert!(
        e.contains("node \"mn\" (Min): Min by a constant of shape [4]; intq takes one value"),
        "{e}"
    );
}

#[test]
fn a_valid_small_model_loads() {
    let g = load_bytes(&conv_model(conv_weight(), vec![])).unwrap();
    assert_eq!(g.value(g.outputs[0]).shape, vec![1, 3, 4, 4]);
}

#[test]
fn truncated_files_are_decode_errors() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resnet_tiny.onnx");
    let bytes = std::fs::read(path).unwrap();
    assert!(load_bytes(&bytes).is_ok());
    for cut in (0..bytes.len()).step_by(997) {
        // A prefix may happen to parse as a shorter message; it must then fail later, cleanly.
        assert!(
            load_bytes(&bytes[..cut]).is_err(),
            "prefix of {cut} bytes accepted"
        );
    }
    assert!(err(&[]).contains("empty"));
    assert!(err(b"not a protobuf at all\xff\xff\xff").contains("not a valid ONNX protobuf"));
}

#[test]
fn huge_dims_are_refused_before_allocating() {
    let mut w = tensor("w", &[1 << 40, 1 << 40, 1, 1], &[]);
    w.float_data.clear();
    assert!(err(&conv_model(w, vec![])).contains("more than"));
    let mut raw = tensor("w", &[3, 2, 1, 1], &[]);
    raw.raw_data = Some(vec![0; 7]);
    assert!(err(&conv_model(raw, vec![])).contains("raw data holds 7 bytes"));
    let m = model(
        vec![node("Relu", "r", &["x"], &["y"], vec![])],
        vec![],
        &[1, 1 << 20, 1 << 20, 1 << 20],
    );
    assert!(err(&m).contains("too large"));
    // Folded shape arithmetic that would build a huge constant.
    let m = model(
        vec![
            node("ConstantOfShape", "big", &["s"], &["c"], vec![]),
            node("Reshape", "r", &["x", "c"], &["y"], vec![]),
        ],
        vec![tensor_i64("s", &[1 << 20, 1 << 20])],
        &[1, 4],
    );
    let e = err(&m);
    assert!(
        e.contains("\"big\" (ConstantOfShape)") && e.contains("too large"),
        "{e}"
    );
}

#[test]
fn cycles_and_missing_inputs_name_the_node() {
    let m = model(
        vec![
            node("Add", "a", &["x", "b_out"], &["a_out"], vec![]),
            node("Relu", "b", &["a_out"], &["b_out"], vec![]),
            node("Relu", "c", &["a_out"], &["y"], vec![]),
        ],
        vec![],
        &[1, 4],
    );
    let e = err(&m);
    assert!(e.contains("cycle"), "{e}");
    let m = model(
        vec![node("Conv", "conv0", &["x", "missing_w"], &["y"], vec![])],
        vec![],
        &[1, 2, 4, 4],
    );
    let e = err(&m);
    assert!(
        e.contains("\"conv0\" (Conv)") && e.contains("\"missing_w\" is not produced"),
        "{e}"
    );
    let m = model(
        vec![
            node("Relu", "r1", &["x"], &["y"], vec![]),
            node("Relu", "r2", &["x"], &["y"], vec![]),
        ],
        vec![],
        &[1, 4],
    );
    assert!(err(&m).contains("also produced elsewhere"));
}

#[test]
fn unsupported_ops_and_attributes_are_named() {
    let m = model(
        vec![node("Selu", "act7", &["x"], &["y"], vec![])],
        vec![],
        &[1, 4],
    );
    let e = err(&m);
    assert!(
        e.contains("node \"act7\" (Selu)") && e.contains("not supported"),
        "{e}"
    );
    // A constant operand takes one value or one per channel (axis 1).
    let m = model(
        vec![node("Mul", "scale", &["x", "c"], &["y"], vec![])],
        vec![tensor("c", &[2, 2], &[1.0, 2.0, 3.0, 4.0])],
        &[1, 4],
    );
    let e = err(&m);
    assert!(
        e.contains("node \"scale\" (Mul)")
            && e.contains(
                "a constant [2, 2]; intq takes a constant of one value or one per channel"
            ),
        "{e}"
    );
    let m = model(
        vec![node("Div", "inv", &["c", "x"], &["y"], vec![])],
        vec![tensor("c", &[1], &[1.0])],
        &[1, 4],
    );
    let e = err(&m);
    assert!(
        e.contains("node \"inv\" (Div): divides a constant by an activation"),
        "{e}"
    );
    let m = model(
        vec![node("Div", "div0", &["x", "c"], &["y"], vec![])],
        vec![tensor("c", &[4], &[1.0, 0.0, 1.0, 1.0])],
        &[1, 4],
    );
    let e = err(&m);
    assert!(
        e.contains("node \"div0\" (Div): divides by a constant 0"),
        "{e}"
    );
    // Resize: nearest or linear, and a known coordinate transformation.
    let resize = |attrs: Vec<AttributeProto>| {
        model(
            vec![node("Resize", "rs", &["x", "", "sc"], &["y"], attrs)],
            vec![tensor("sc", &[4], &[1.0, 1.0, 2.0, 2.0])],
            &[1, 2, 4, 4],
        )
    };
    let e = err(&resize(vec![string("mode", "cubic")]));
    assert!(
        e.contains(
            "node \"rs\" (Resize), attribute \"mode\": \"cubic\"; intq takes \
             nearest-neighbour and linear Resize only"
        ),
        "{e}"
    );
    // Linear, align_corners: 4 to 8 at positions o * 3 / 7.
    let g = load_bytes(&resize(vec![
        string("mode", "linear"),
        string("coordinate_transformation_mode", "align_corners"),
    ]))
    .unwrap();
    let Op::ResizeLinear { pos_w, .. } = &g.nodes[0].op else {
        panic!("{:?}", g.nodes[0].op)
    };
    assert_eq!(pos_w.len(), 8);
    assert!((pos_w[7] - 3.0).abs() < 1e-6 && (pos_w[1] - 3.0 / 7.0).abs() < 1e-6);
    let row: Vec<f32> = (0..32).map(|v| (v % 4) as f32).collect();
    let y = run(
        &g,
        &[Tensor {
            shape: vec![1, 2, 4, 4],
            data: row,
        }],
    )
    .unwrap();
    // Each row 0, 1, 2, 3 interpolated at o * 3 / 7.
    for (o, v) in y[0].data[..8].iter().enumerate() {
        assert!((v - o as f32 * 3.0 / 7.0).abs() < 1e-5, "{o}: {v}");
    }
    let e = err(&resize(vec![string(
        "coordinate_transformation_mode",
        "tf_crop_and_resize",
    )]));
    assert!(
        e.contains(
            "attribute \"coordinate_transformation_mode\": \"tf_crop_and_resize\" is not \
             taken by intq"
        ),
        "{e}"
    );
    let g = load_bytes(&resize(vec![])).unwrap();
    assert_eq!(g.value(g.outputs[0]).shape, [1, 2, 8, 8]);
    // An average whose ceil_mode window runs past the padding, counting the padding.
    let m = model(
        vec![node(
            "AveragePool",
            "ap",
            &["x"],
            &["y"],
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("strides", &[2, 2]),
                int("ceil_mode", 1),
                int("count_include_pad", 1),
            ],
        )],
        vec![],
        &[1, 2, 16, 16],
    );
    let e = err(&m);
    assert!(
        e.contains(
            "node \"ap\" (AveragePool), attribute \"ceil_mode\": an AveragePool whose last \
             window runs past the padding and that counts the padding (count_include_pad 1) is \
             not supported"
        ),
        "{e}"
    );
    // A forged scale: refused before any index is computed.
    let m = model(
        vec![node("Resize", "huge", &["x", "", "sc"], &["y"], vec![])],
        vec![tensor("sc", &[4], &[1.0, 1.0, 1e30, 1e30])],
        &[1, 2, 4, 4],
    );
    let e = err(&m);
    assert!(
        e.contains("node \"huge\" (Resize): output shape") && e.contains("elements per image"),
        "{e}"
    );

    let e = err(&conv_model(
        conv_weight(),
        vec![string("auto_pad", "SIDEWAYS")],
    ));
    assert!(
        e.contains("\"conv0\" (Conv), attribute \"auto_pad\""),
        "{e}"
    );
    let e = err(&conv_model(conv_weight(), vec![int("bogus", 1)]));
    assert!(e.contains("attribute \"bogus\""), "{e}");
    let e = err(&conv_model(
        conv_weight(),
        vec![ints("strides", &[1, 1, 1])],
    ));
    assert!(e.contains("attribute \"strides\""), "{e}");
    let e = err(&conv_model(conv_weight(), vec![int("group", 2)]));
    assert!(
        e.contains("attribute \"group\"") || e.contains("input channels"),
        "{e}"
    );

    let m = model(
        vec![node(
            "MaxPool",
            "mp",
            &["x"],
            &["y"],
            vec![ints("kernel_shape", &[9, 9])],
        )],
        vec![],
        &[1, 2, 4, 4],
    );
    assert!(err(&m).contains("does not fit"));

    let m = model(
        vec![node(
            "Pad",
            "p",
            &["x", "pads"],
            &["y"],
            vec![string("mode", "reflect")],
        )],
        vec![tensor_i64("pads", &[0, 0, 1, 1, 0, 0, 1, 1])],
        &[1, 2, 4, 4],
    );
    assert!(err(&m).contains("attribute \"mode\""));

    // A constant added to an activation outside MatMul's bias: one value per channel, not 3.
    let m = model(
        vec![node("Add", "shift", &["x", "c"], &["y"], vec![])],
        vec![tensor("c", &[3], &[1.0, 2.0, 3.0])],
        &[1, 4],
    );
    assert!(err(&m).contains("\"shift\" (Add): Add of an activation [1, 4] and a constant [3]"));

    // A Reshape that moves the batch dimension.
    let m = model(
        vec![node("Reshape", "rs", &["x", "s"], &["y"], vec![])],
        vec![tensor_i64("s", &[2, -1])],
        &[1, 4, 2],
    );
    assert!(err(&m).contains("moves the batch"));

    // Softmax in the middle of the network.
    let m = model(
        vec![
            node("Softmax", "sm", &["x"], &["s"], vec![int("axis", 1)]),
            node("Relu", "r", &["s"], &["y"], vec![]),
        ],
        vec![],
        &[1, 4],
    );
    let e = err(&m);
    assert!(
        e.contains("\"sm\" (Softmax)") && e.contains("last op"),
        "{e}"
    );

    // A custom domain.
    let mut n = node("Relu", "custom", &["x"], &["y"], vec![]);
    n.domain = Some("com.example".into());
    assert!(err(&model(vec![n], vec![], &[1, 4])).contains("domain"));
}

#[test]
fn opsets_outside_11_to_21_are_refused() {
    for opset in [10, 22] {
        let m = model_proto(
            vec![node("Relu", "r", &["x"], &["y"], vec![])],
            vec![],
            &[1, 4],
            opset,
        );
        let e = err(&m.encode_to_vec());
        assert!(e.contains(&format!("opset {opset}")), "{e}");
    }
    let m = model_proto(
        vec![node("Relu", "r", &["x"], &["y"], vec![])],
        vec![],
        &[1, 4],
        11,
    );
    assert!(load_bytes(&m.encode_to_vec()).is_ok());
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("onnx-hostile-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn external_weight(location: &str, offset: u64, length: Option<u64>) -> TensorProto {
    let mut w = tensor("w", &[3, 2, 1, 1], &[]);
    w.data_location = Some(DataLocation::External as i32);
    let mut kv = vec![
        ("location", location.to_string()),
        ("offset", offset.to_string()),
    ];
    if let Some(l) = length {
        kv.push(("length", l.to_string()));
    }
    w.external_data = kv
        .into_iter()
        .map(|(k, v)| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        })
        .collect();
    w
}

fn weight_bytes() -> Vec<u8> {
    (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect()
}

#[test]
fn external_data_inside_the_folder_equals_inline() {
    let dir = scratch("ok");
    let mut bin = vec![0u8; 8];
    bin.extend(weight_bytes());
    std::fs::write(dir.join("w.bin"), &bin).unwrap();
    let path = dir.join("m.onnx");
    std::fs::write(
        &path,
        conv_model(external_weight("w.bin", 8, Some(24)), vec![]),
    )
    .unwrap();
    let ext = load(&path).unwrap();
    let inline = load_bytes(&conv_model(conv_weight(), vec![])).unwrap();
    let x = Tensor {
        shape: vec![2, 2, 4, 4],
        data: (0..64).map(|v| v as f32 * 0.1).collect(),
    };
    assert_eq!(
        run(&ext, std::slice::from_ref(&x)).unwrap(),
        run(&inline, &[x]).unwrap()
    );
    // From memory there is no folder to read from.
    let e = load_bytes(&conv_model(external_weight("w.bin", 8, Some(24)), vec![])).unwrap_err();
    assert!(e.to_string().contains("model's folder"), "{e}");
}

#[test]
fn external_data_outside_the_folder_or_file_is_refused() {
    let root = scratch("escape");
    let dir = root.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(root.join("secret.bin"), weight_bytes()).unwrap();
    std::fs::write(dir.join("w.bin"), weight_bytes()).unwrap();
    let path = dir.join("m.onnx");
    let check = |w: TensorProto, want: &str| {
        std::fs::write(&path, conv_model(w, vec![])).unwrap();
        let e = load(&path).unwrap_err();
        assert!(matches!(
            e,
            OnnxError::File { .. } | OnnxError::Tensor { .. }
        ));
        let e = e.to_string();
        assert!(e.contains(want), "{e} lacks {want:?}");
    };
    check(
        external_weight("../secret.bin", 0, None),
        "not a path inside",
    );
    let abs = root.join("secret.bin").display().to_string();
    check(external_weight(&abs, 0, None), "not a path inside");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.join("secret.bin"), dir.join("link.bin")).unwrap();
        check(
            external_weight("link.bin", 0, None),
            "outside the model's folder",
        );
    }
    check(external_weight("w.bin", 4, None), "beyond");
    check(external_weight("w.bin", u64::MAX, None), "beyond");
    check(external_weight("w.bin", 0, Some(12)), "length 12");
    check(external_weight("absent.bin", 0, None), "absent.bin");
}

#[test]
fn float_eval_checks_its_inputs() {
    let g = load_bytes(&conv_model(conv_weight(), vec![])).unwrap();
    let bad = Tensor {
        shape: vec![1, 3, 4, 4],
        data: vec![0.0; 48],
    };
    assert!(run(&g, &[bad]).is_err());
    assert!(run(&g, &[]).is_err());
}

#[test]
fn a_reshape_to_one_by_minus_one_keeps_the_batch() {
    let m = model(
        vec![node("Reshape", "flat", &["x", "s"], &["y"], vec![])],
        vec![tensor_i64("s", &[1, -1])],
        &[1, 2, 2, 2],
    );
    let g = load_bytes(&m).unwrap();
    let x = Tensor {
        shape: vec![3, 2, 2, 2],
        data: (0..24).map(|v| v as f32).collect(),
    };
    let y = run(&g, std::slice::from_ref(&x)).unwrap();
    assert_eq!(y[0].shape, vec![3, 8]);
    assert_eq!(y[0].data, x.data);
}

#[test]
fn gemm_with_a_transposed_activation_names_the_attribute() {
    let m = model(
        vec![node(
            "Gemm",
            "fc",
            &["x", "b"],
            &["y"],
            vec![int("transA", 1)],
        )],
        vec![tensor("b", &[4, 2], &[0.0; 8])],
        &[1, 4],
    );
    let e = err(&m);
    assert!(e.contains("\"fc\" (Gemm), attribute \"transA\""), "{e}");
}
