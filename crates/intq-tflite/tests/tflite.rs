//! `.tflite` interop tests: intq reproduces TensorFlow Lite's reference kernels byte for byte on
//! committed golden fixtures (MLPerf-Tiny models and intq's own exported models; inputs,
//! outputs and intermediate-tensor CRCs produced by tools/tflite-check), the reader survives
//! hostile files, and import/export round-trips.

use intq_engine::{examples, DType, Graph, Model, Op, TensorData, TensorId};
use intq_tflite::flatbuf::{finish, Field, Node};
use intq_tflite::{export, import, TfliteError};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fixture array (read with ndarray-npy, independently of intq's own reader).
fn read_npy(path: &Path) -> (Vec<usize>, TensorData) {
    use ndarray::ArrayD;
    use ndarray_npy::ReadNpyExt;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = ndarray_npy::npy::header::Header::from_reader(&mut &bytes[..])
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let descr = header
        .type_descriptor
        .as_string()
        .cloned()
        .unwrap_or_default();
    fn read<T: ndarray_npy::ReadableElement>(path: &Path, bytes: &[u8]) -> Vec<T> {
        let a = ArrayD::<T>::read_npy(bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(a.is_standard_layout(), "{}: not C order", path.display());
        a.into_raw_vec_and_offset().0
    }
    let data = match descr.as_str() {
        "|u1" => TensorData::U8(read(path, &bytes)),
        "|i1" => TensorData::I8(read(path, &bytes)),
        "<f4" => TensorData::F32(read(path, &bytes)),
        "<i4" => TensorData::I32(read(path, &bytes)),
        other => panic!("{}: dtype {other}", path.display()),
    };
    (header.shape, data)
}

fn bytes_of(d: &TensorData) -> Vec<u8> {
    match d {
        TensorData::U8(v) => v.clone(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

struct Seed {
    inputs: Vec<String>,
    outputs: Vec<(String, String)>,
    crcs: Vec<(String, u32)>,
}

fn read_fixture(dir: &Path) -> (String, Vec<Seed>) {
    let text = std::fs::read_to_string(dir.join("fixture.tsv")).unwrap();
    let mut model = String::new();
    let mut seeds: Vec<Seed> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "model" => model = f[1].to_string(),
            "seed" => seeds.push(Seed {
                inputs: vec![],
                outputs: vec![],
                crcs: vec![],
            }),
            "input" => seeds.last_mut().unwrap().inputs.push(f[1].into()),
            "output" => seeds
                .last_mut()
                .unwrap()
                .outputs
                .push((f[1].into(), f[2].into())),
            "crc32" => seeds
                .last_mut()
                .unwrap()
                .crcs
                .push((f[1].into(), u32::from_str_radix(f[2], 16).unwrap())),
            other => panic!("fixture line {other}"),
        }
    }
    (model, seeds)
}

/// Runs one fixture; returns (tensors compared, bytes compared).
fn check_fixture(name: &str) -> (usize, usize) {
    let dir = fixtures().join(name);
    let (model_file, seeds) = read_fixture(&dir);
    let graph = intq_tflite::load(&dir.join(&model_file)).unwrap();
    let model = Model::new(graph).unwrap();
    let g = model.graph();
    let (mut tensors, mut bytes) = (0, 0);
    assert!(!seeds.is_empty());
    for (s, seed) in seeds.iter().enumerate() {
        let inputs: Vec<TensorData> = seed
            .inputs
            .iter()
            .map(|f| read_npy(&dir.join(f)).1)
            .collect();
        let mut wanted: Vec<TensorId> = seed
            .crcs
            .iter()
            .map(|(t, _)| {
                g.tensor_by_name(t)
                    .unwrap_or_else(|| panic!("{name}: no tensor {t}"))
            })
            .collect();
        let crc_count = wanted.len();
        for (t, _) in &seed.outputs {
            wanted.push(g.tensor_by_name(t).unwrap());
        }
        let values = model.run_with(&inputs, &wanted).unwrap();
        for ((t, crc), v) in seed.crcs.iter().zip(&values) {
            let b = bytes_of(v);
            assert_eq!(
                intq_engine::format::crc32(&b),
                *crc,
                "{name} seed {s}: tensor '{t}' differs from TFLite's"
            );
            tensors += 1;
            bytes += b.len();
        }
        for ((t, file), v) in seed.outputs.iter().zip(&values[crc_count..]) {
            let (shape, expected) = read_npy(&dir.join(file));
            assert_eq!(shape, g.tensor(g.tensor_by_name(t).unwrap()).shape);
            assert_eq!(
                bytes_of(v),
                bytes_of(&expected),
                "{name} seed {s}: output '{t}' differs from TFLite's"
            );
        }
    }
    (tensors, bytes)
}

#[test]
fn mlperf_tiny_models_equal_tflite_reference_byte_for_byte() {
    for name in [
        "anomaly_detection",
        "image_classification",
        "keyword_spotting",
        "visual_wake_words",
    ] {
        let (t, b) = check_fixture(name);
        assert!(
            t > 20 && b > 1000,
            "{name}: only {t} tensors, {b} bytes compared"
        );
    }
}

/// Models TensorFlow's own converter wrote (tools/tflite-models): Keras's MobileNetV3-Small
/// (int8 edges), an EfficientNet-Lite-style network (float edges), a DeepLab-style segmenter
/// (dilated convolutions, TRANSPOSE_CONV, RESIZE_BILINEAR) and an SSD-style detector whose
/// TFLite_Detection_PostProcess the converter fused from an `experimental_implements` function
/// (fast and regular NMS, on dequantized reals), 3 seeds each.
#[test]
fn tensorflow_converter_models_equal_tflite_reference_byte_for_byte() {
    for name in [
        "converter_mobilenet_v3_small_int8",
        "converter_efficientnet_lite_style_float",
        "converter_deeplab_style_int8",
        "converter_ssd_style_int8",
        "converter_ssd_style_int8_regular_nms",
    ] {
        let (t, b) = check_fixture(name);
        assert!(
            t > 80 && b > 100_000,
            "{name}: only {t} tensors, {b} bytes compared"
        );
    }
    for (name, regular) in [
        ("converter_ssd_style_int8", false),
        ("converter_ssd_style_int8_regular_nms", true),
    ] {
        let dir = fixtures().join(name);
        let g = intq_tflite::load(&dir.join(read_fixture(&dir).0)).unwrap();
        let nms: Vec<bool> = g
            .ops()
            .iter()
            .filter_map(|op| match op {
                Op::DetectionPostProcess { options, .. } => Some(options.use_regular_nms),
                _ => None,
            })
            .collect();
        assert_eq!(nms, [regular; 4], "{name}: one post-process, four outputs");
    }
}

#[test]
fn intq_models_exported_to_tflite_equal_tflite_reference_byte_for_byte() {
    for name in ["small_cnn_u8", "small_cnn_i8", "op_zoo_u8", "op_zoo_i8"] {
        let (t, _) = check_fixture(name);
        assert!(t >= 16, "{name}: only {t} tensors compared");
    }
}

/// MUL, SUB, RELU, RELU6, RELU_N1_TO_1, LEAKY_RELU, HARD_SWISH and TANH at edge parameters
/// (docs/spec.md §11), every op output against TFLite's reference kernels.
#[test]
fn elementwise_ops_equal_tflite_reference_byte_for_byte() {
    for name in ["elementwise_u8", "elementwise_i8"] {
        let (t, b) = check_fixture(name);
        // 19 op outputs per seed (17 of 210 elements, 2 of 3), two seeds.
        assert_eq!(t, 38, "{name}: {t} tensors compared");
        assert_eq!(b, 2 * (17 * 210 + 2 * 3), "{name}: {b} bytes compared");
    }
}

/// RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR up, down and to one pixel, plain, with
/// align_corners and with half_pixel_centers (docs/spec.md §11.7, §11.8), against TFLite's
/// reference kernels (uint8 bilinear in its f32 arithmetic, int8 in its fixed point).
#[test]
fn resize_ops_equal_tflite_reference_byte_for_byte() {
    for name in ["resize_u8", "resize_i8"] {
        let (t, b) = check_fixture(name);
        // 12 op outputs per seed, two seeds.
        assert_eq!(t, 24, "{name}: {t} tensors compared");
        assert_eq!(b, 7584, "{name}: {b} bytes compared");
    }
}

/// PRELU, MAXIMUM, MINIMUM, TRANSPOSE, SLICE and STRIDED_SLICE (docs/spec.md §11.9 to §11.12)
/// against TFLite's reference kernels.
#[test]
fn layout_ops_equal_tflite_reference_byte_for_byte() {
    for name in ["layout_u8", "layout_i8"] {
        let (t, b) = check_fixture(name);
        // 7 op outputs per seed, two seeds.
        assert_eq!(t, 14, "{name}: {t} tensors compared");
        assert_eq!(b, 2196, "{name}: {b} bytes compared");
    }
}

/// TRANSPOSE_CONV, SPACE_TO_BATCH_ND, BATCH_TO_SPACE_ND and DEPTH_TO_SPACE (docs/spec.md
/// §11.13 to §11.15) against TFLite's reference kernels; the imported model has the engine ops.
#[test]
fn spatial_ops_equal_tflite_reference_byte_for_byte() {
    for name in ["spatial_u8", "spatial_i8"] {
        let (t, b) = check_fixture(name);
        // 9 op outputs per seed (the dilated convolution's phases included), two seeds.
        assert_eq!(t, 18, "{name}: {t} tensors compared");
        assert_eq!(b, 8604, "{name}: {b} bytes compared");
        let bytes = std::fs::read(fixtures().join(name).join(format!("{name}.tflite"))).unwrap();
        let kinds: Vec<&str> = import(&bytes)
            .unwrap()
            .ops()
            .iter()
            .map(|op| op.kind().name())
            .collect();
        assert_eq!(
            kinds,
            [
                "TransposeConv",
                "TransposeConv",
                "TransposeConv",
                "TransposeConv",
                "SpaceToBatch",
                "Conv2d",
                "BatchToSpace",
                "DepthToSpace",
                "DepthToSpace"
            ],
            "{name}"
        );
    }
}

/// TFLite_Detection_PostProcess (docs/spec.md §11) with fast NMS (one and two classes per
/// detection) and regular NMS, on uint8 codes and on the dequantized reals of an int8 model,
/// against TFLite's reference kernels; the pictures give many equal 8-bit scores.
#[test]
fn detection_postprocess_equals_tflite_reference_byte_for_byte() {
    use intq_tflite::zoo::{detection_configs, detector};
    for (name, dtype, ops) in [
        ("detector_u8", DType::U8, 18),
        ("detector_i8", DType::I8, 20),
    ] {
        let (t, b) = check_fixture(name);
        // Every op output per seed, four seeds.
        assert_eq!(t, 4 * ops, "{name}: {t} tensors compared");
        assert!(b > 9000, "{name}: {b} bytes compared");
        let committed =
            std::fs::read(fixtures().join(name).join(format!("{name}.tflite"))).unwrap();
        assert!(
            export(&detector(dtype, &detection_configs())).unwrap() == committed,
            "{name}"
        );
    }
}

/// SPLIT (three equal parts) and SPLIT_V (sizes `[1, -1]`), imported as one Slice per output,
/// against TFLite's reference kernels; the committed models are what `split_tflite` writes.
#[test]
fn split_ops_equal_tflite_reference_byte_for_byte() {
    for (name, dtype) in [("split_u8", DType::U8), ("split_i8", DType::I8)] {
        let (t, b) = check_fixture(name);
        // 5 outputs per seed, two seeds.
        assert_eq!(t, 10, "{name}: {t} tensors compared");
        assert_eq!(b, 720, "{name}: {b} bytes compared");
        let committed =
            std::fs::read(fixtures().join(name).join(format!("{name}.tflite"))).unwrap();
        assert!(intq_tflite::zoo::split_tflite(dtype) == committed, "{name}");
        let g = import(&committed).unwrap();
        assert!(g.ops().iter().all(|op| op.kind().name() == "Slice"));
    }
}

/// The committed elementwise, resize, layout and spatial models are what the exporter writes
/// today.
#[test]
fn exporter_reproduces_the_committed_elementwise_models() {
    use intq_tflite::zoo::{elementwise_zoo, layout_zoo, resize_zoo, spatial_zoo};
    for (name, graph) in [
        ("spatial_u8", spatial_zoo(DType::U8)),
        ("spatial_i8", spatial_zoo(DType::I8)),
        ("elementwise_u8", elementwise_zoo(DType::U8)),
        ("elementwise_i8", elementwise_zoo(DType::I8)),
        ("resize_u8", resize_zoo(DType::U8)),
        ("resize_i8", resize_zoo(DType::I8)),
        ("layout_u8", layout_zoo(DType::U8)),
        ("layout_i8", layout_zoo(DType::I8)),
    ] {
        let committed =
            std::fs::read(fixtures().join(name).join(format!("{name}.tflite"))).unwrap();
        assert!(export(&graph).unwrap() == committed, "{name}");
    }
}

/// Each new builtin imports as its engine op, with its options; a negative LEAKY_RELU alpha is
/// refused by name.
#[test]
fn elementwise_builtins_import_as_their_ops() {
    for (code, kind) in [
        (19, "Relu"),
        (20, "Relu"),
        (21, "Relu"),
        (28, "Tanh"),
        (98, "LeakyRelu"),
        (117, "HardSwish"),
    ] {
        let g = import(&model_with_op(code, 9)).unwrap();
        assert_eq!(g.ops()[0].kind().name(), kind, "builtin {code}");
    }
    let g = import(&model_with_op(21, 3)).unwrap();
    assert!(matches!(
        g.ops()[0],
        Op::Relu {
            activation: intq_engine::Activation::Relu6,
            ..
        }
    ));
    let zoo = intq_tflite::zoo::elementwise_zoo(DType::U8);
    let mut ops = zoo.ops().to_vec();
    let Some(Op::LeakyRelu { alpha, .. }) =
        ops.iter_mut().find(|o| matches!(o, Op::LeakyRelu { .. }))
    else {
        panic!("the zoo has a LeakyRelu")
    };
    *alpha = 0.0;
    let g = Graph::new(
        zoo.tensors().to_vec(),
        ops,
        zoo.inputs().to_vec(),
        zoo.outputs().to_vec(),
    )
    .unwrap();
    // Alpha 0 survives the trip.
    let back = import(&export(&g).unwrap()).unwrap();
    let alphas: Vec<f32> = back
        .ops()
        .iter()
        .filter_map(|op| match op {
            Op::LeakyRelu { alpha, .. } => Some(*alpha),
            _ => None,
        })
        .collect();
    assert_eq!(alphas, [0.0, 1.5]);
    // A negative alpha (the zoo's 1.5, the only such f32 in the file, made -1.5) is refused.
    let mut bytes = export(&zoo).unwrap();
    let at = (0..bytes.len() - 4)
        .find(|&i| bytes[i..i + 4] == 1.5f32.to_le_bytes())
        .unwrap();
    bytes[at..at + 4].copy_from_slice(&(-1.5f32).to_le_bytes());
    let e = import(&bytes).unwrap_err().to_string();
    assert!(e.contains("LEAKY_RELU") && e.contains("alpha -1.5"), "{e}");
}

/// The committed intq models are what the exporter writes today, so the fixtures also pin the
/// writer's output.
#[test]
fn exporter_reproduces_the_committed_tflite_files() {
    for (name, graph) in [
        ("small_cnn_u8", examples::small_cnn(DType::U8, true, 7)),
        ("small_cnn_i8", examples::small_cnn(DType::I8, true, 7)),
        ("op_zoo_u8", intq_tflite::zoo::op_zoo(DType::U8, 11)),
        ("op_zoo_i8", intq_tflite::zoo::op_zoo(DType::I8, 11)),
    ] {
        let committed =
            std::fs::read(fixtures().join(name).join(format!("{name}.tflite"))).unwrap();
        assert!(export(&graph).unwrap() == committed, "{name}");
    }
}

/// The TFLite-exact ops: imported FC and Logistic are the f64/LUT variants, everything else is
/// the docs/spec.md §4 op; §4 ops export to the same TFLite builtins.
fn tflite_exact(g: &Graph) -> Graph {
    let ops = g
        .ops()
        .iter()
        .map(|op| match op.clone() {
            Op::FullyConnected {
                input,
                weights,
                bias,
                output,
                activation,
            } => Op::FullyConnectedF64 {
                input,
                weights,
                bias,
                output,
                activation,
            },
            Op::Logistic { input, output } => Op::LogisticLut { input, output },
            other => other,
        })
        .collect();
    Graph::new(
        g.tensors().to_vec(),
        ops,
        g.inputs().to_vec(),
        g.outputs().to_vec(),
    )
    .unwrap()
}

#[test]
fn import_export_import_round_trips() {
    let mut graphs: Vec<Graph> = vec![
        tflite_exact(&examples::small_cnn(DType::U8, true, 3)),
        tflite_exact(&examples::small_cnn(DType::I8, false, 4)),
        intq_tflite::zoo::op_zoo(DType::U8, 5),
        intq_tflite::zoo::op_zoo(DType::I8, 6),
        intq_tflite::zoo::elementwise_zoo(DType::U8),
        intq_tflite::zoo::elementwise_zoo(DType::I8),
        intq_tflite::zoo::resize_zoo(DType::U8),
        intq_tflite::zoo::resize_zoo(DType::I8),
        intq_tflite::zoo::layout_zoo(DType::U8),
        intq_tflite::zoo::layout_zoo(DType::I8),
        intq_tflite::zoo::spatial_zoo(DType::U8),
        intq_tflite::zoo::spatial_zoo(DType::I8),
    ];
    for name in ["image_classification", "anomaly_detection"] {
        let bytes = std::fs::read(fixtures().join(name).join(format!("{name}.tflite"))).unwrap();
        graphs.push(import(&bytes).unwrap());
    }
    for g in graphs {
        let once = import(&export(&g).unwrap()).unwrap();
        // The importer creates tensors in first-use order; one more trip must be the identity.
        let twice = import(&export(&once).unwrap()).unwrap();
        assert_eq!(once, twice);
        // And the graph itself survives up to that ordering: same ops by tensor name.
        let named = |g: &Graph| -> Vec<(String, Vec<String>, String)> {
            g.ops()
                .iter()
                .map(|op| {
                    (
                        op.kind().name().to_string(),
                        op.inputs()
                            .iter()
                            .map(|&i| g.tensor(i).name.clone())
                            .collect(),
                        g.tensor(op.output()).name.clone(),
                    )
                })
                .collect()
        };
        assert_eq!(named(&g), named(&once));
        for t in g.tensors() {
            let id = once.tensor_by_name(&t.name).unwrap();
            let u = once.tensor(id);
            assert_eq!(
                (&t.shape, t.dtype, &t.data),
                (&u.shape, u.dtype, &u.data),
                "{}",
                t.name
            );
            if t.dtype != DType::I32 {
                assert_eq!(t.quant, u.quant, "{}", t.name);
            }
        }
    }
}

fn sample() -> Vec<u8> {
    std::fs::read(fixtures().join("op_zoo_i8/op_zoo_i8.tflite")).unwrap()
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample();
    for n in 0..bytes.len() {
        let r = import(&bytes[..n]);
        assert!(r.is_err(), "a {n}-byte prefix of {} imported", bytes.len());
    }
    import(&bytes).unwrap();
}

#[test]
fn corrupted_bytes_never_panic() {
    let bytes = sample();
    use examples::Draws as _;
    let mut rng = examples::seeded(99);
    let mut errors = 0;
    for trial in 0..3000 {
        let mut b = bytes.clone();
        // Small corruptions everywhere, biased towards the offsets at the front of the file.
        for _ in 0..1 + trial % 3 {
            let at = if trial % 2 == 0 {
                rng.int_in(0, (b.len() - 1) as i32) as usize
            } else {
                rng.int_in(0, 512.min(b.len() as i32 - 1)) as usize
            };
            b[at] = match trial % 4 {
                0 => 0xff,
                1 => 0,
                2 => b[at] ^ 0x80,
                _ => rng.int_in(0, 255) as u8,
            };
        }
        // Whatever happens, it is a Result; an accepted graph is a valid one that runs.
        match import(&b) {
            Err(_) => errors += 1,
            Ok(g) => {
                if let Ok(m) = Model::new(g) {
                    let _ = m.run(&examples::random_input(m.graph(), 1));
                }
            }
        }
    }
    assert!(errors > 100, "only {errors} corruptions were noticed");
}

/// Offsets past the end, vectors claiming 2^32 - 1 elements and a vtable outside the file are
/// named errors, found before any allocation of that size.
#[test]
fn hostile_offsets_and_lengths_are_errors() {
    // A model table whose `buffers` vector claims u32::MAX elements.
    let huge = {
        let mut b = finish(
            &Node::Table(vec![(4, Field::Off(Node::I32s(vec![1, 2])))]),
            b"TFL3",
        );
        let len_at = b.len() - 12;
        assert_eq!(&b[len_at..len_at + 4], &2u32.to_le_bytes());
        b[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        b
    };
    let e = import(&huge).unwrap_err();
    assert!(matches!(e, TfliteError::Malformed(_)), "{e}");
    assert!(e.to_string().contains("past the end"), "{e}");

    // Root offset past the end.
    let mut b = sample();
    let past = b.len() as u32 + 8;
    b[..4].copy_from_slice(&past.to_le_bytes());
    let e = import(&b).unwrap_err();
    assert!(e.to_string().contains("outside the file"), "{e}");

    // A vtable offset pointing before the start of the file.
    let mut b = sample();
    let root = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    b[root..root + 4].copy_from_slice(&(root as i32 + 100).to_le_bytes());
    let e = import(&b).unwrap_err();
    assert!(e.to_string().contains("vtable"), "{e}");

    // A tensor declaring 2^40 elements (its activation buffer would be allocated from the
    // shape, not the file) is refused by name.
    let e = import(&model_with_shape(vec![1 << 20, 1 << 20])).unwrap_err();
    assert!(e.to_string().contains("more than"), "{e}");
    // A missing (-1) required input is an error, not an index panic.
    let mut m = model_with_op(22, 9);
    let pos = m
        .windows(8)
        .position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    m[pos + 4..pos + 8].copy_from_slice(&(-1i32).to_le_bytes());
    assert!(import(&m).is_err());

    // Empty and tiny files.
    assert!(import(&[]).is_err());
    assert!(import(&[0; 7]).is_err());
}

fn model_with_op(code: i32, input_type: i8) -> Vec<u8> {
    model_with(code, input_type, vec![1, 4])
}

fn model_with_shape(shape: Vec<i32>) -> Vec<u8> {
    model_with(22, 9, shape)
}

/// A model with one op (builtin `code`) from tensor 0 to tensor 1, both of `shape`, built with
/// the writer.
fn model_with(code: i32, input_type: i8, shape: Vec<i32>) -> Vec<u8> {
    let tensor = |name: &str, t: i8| {
        Node::Table(vec![
            (0, Field::Off(Node::I32s(shape.clone()))),
            (1, Field::U8(t as u8)),
            (3, Field::Off(Node::Str(name.into()))),
            (
                4,
                Field::Off(Node::Table(vec![
                    (2, Field::Off(Node::F32s(vec![0.5]))),
                    (3, Field::Off(Node::I64s(vec![0]))),
                ])),
            ),
        ])
    };
    let op = Node::Table(vec![
        (0, Field::U32(0)),
        (1, Field::Off(Node::I32s(vec![0]))),
        (2, Field::Off(Node::I32s(vec![1]))),
    ]);
    let sg = Node::Table(vec![
        (
            0,
            Field::Off(Node::Tables(vec![
                tensor("in", input_type),
                tensor("out", input_type),
            ])),
        ),
        (1, Field::Off(Node::I32s(vec![0]))),
        (2, Field::Off(Node::I32s(vec![1]))),
        (3, Field::Off(Node::Tables(vec![op]))),
    ]);
    finish(
        &Node::Table(vec![
            (
                1,
                Field::Off(Node::Tables(vec![Node::Table(vec![
                    (0, Field::U8(code.min(127) as u8)),
                    (3, Field::I32(code)),
                ])])),
            ),
            (2, Field::Off(Node::Tables(vec![sg]))),
            (4, Field::Off(Node::Tables(vec![Node::Table(vec![])]))),
        ]),
        b"TFL3",
    )
}

#[test]
fn unsupported_ops_and_types_name_the_op_its_index_and_the_tensor() {
    // CONCAT_EMBEDDINGS (29) is not supported.
    let e = import(&model_with_op(29, 9)).unwrap_err().to_string();
    assert!(
        e.contains("op 0") && e.contains("builtin operator 29") && e.contains("'out'"),
        "{e}"
    );
    // An int16 tensor on a supported op.
    let e = import(&model_with_op(22, 7)).unwrap_err().to_string();
    assert!(
        e.contains("op 0 (RESHAPE)") && e.contains("'in'") && e.contains("INT16"),
        "{e}"
    );
    // The same RESHAPE on int8 imports.
    let g = import(&model_with_op(22, 9)).unwrap();
    assert_eq!(g.ops().len(), 1);
}

/// The new op kinds survive `.intq` 1.1, which stamps the lowest minor version it needs.
#[test]
fn intq_format_stores_the_tflite_exact_ops_as_minor_version_1() {
    let zoo = intq_tflite::zoo::op_zoo(DType::I8, 21);
    let kinds: Vec<&str> = zoo.ops().iter().map(|op| op.kind().name()).collect();
    for k in ["FullyConnectedF64", "LogisticLut", "Pad", "Mean"] {
        assert!(kinds.contains(&k), "{k}");
    }
    let bytes = intq_engine::format::to_bytes(&zoo);
    assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 1);
    assert_eq!(intq_engine::format::from_bytes(&bytes).unwrap(), zoo);
    let plain = intq_engine::format::to_bytes(&examples::small_cnn(DType::U8, true, 1));
    assert_eq!(u16::from_le_bytes([plain[10], plain[11]]), 0);
}

/// Pad then Mean in the float executor: the mean of the zero-padded reals, computed by hand.
#[test]
fn float_executor_pads_with_zero_and_averages() {
    use intq_engine::{GraphBuilder, Quant, QuantParams};
    let q = Some(Quant::PerTensor(QuantParams {
        scale: 0.5,
        zero_point: 3,
    }));
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::F32, &[1, 2, 2, 1], None);
    let xq = b.tensor("xq", DType::U8, &[1, 2, 2, 1], q.clone());
    let p = b.tensor("p", DType::U8, &[1, 3, 2, 1], q.clone());
    let m = b.tensor("m", DType::U8, &[1, 1, 1, 1], q.clone());
    let n = b.tensor("n", DType::U8, &[1, 3], q);
    b.op(Op::Quantize {
        input: x,
        output: xq,
    });
    b.op(Op::Pad {
        input: xq,
        output: p,
        paddings: vec![[0, 0], [1, 0], [0, 0], [0, 0]],
    });
    b.op(Op::Mean {
        input: p,
        output: m,
        axes: vec![1, 2],
        keep_dims: true,
    });
    b.op(Op::Mean {
        input: p,
        output: n,
        axes: vec![2, 3],
        keep_dims: false,
    });
    b.input(x).output(m).output(n);
    let model = Model::new(b.finish().unwrap()).unwrap();
    let input = [TensorData::F32(vec![1.0, 2.0, 3.0, 5.0])];
    let f = model.run_float(&input).unwrap();
    // Padded rows: [0, 0], [1, 2], [3, 5]; mean of all 6 = 11/6; row means 0, 1.5, 4.
    assert!((f[0][0] - 11.0 / 6.0).abs() < 1e-6, "{:?}", f[0]);
    assert_eq!(f[1], vec![0.0, 1.5, 4.0]);
    // The integer run: codes q = 3 + 2x, pad code 3. Spatial mean (sum - 3*6) * 0.5 / 6 in
    // codes of S = 0.5: (11 * 2) / 6 = 3.67 -> 4, + 3 = 7; row means 0, 3, 8 (+ 3).
    let i = model.run(&input).unwrap();
    assert_eq!(i[0], TensorData::U8(vec![7]));
    assert_eq!(i[1], TensorData::U8(vec![3, 6, 11]));
}

#[test]
fn squeeze_imports_as_reshape() {
    let g = import(&model_with_op(43, 3)).unwrap();
    assert!(matches!(g.ops()[0], Op::Reshape { .. }));
}

/// Heavier fuzzing than CI affords: 20 000 corruptions of each committed model, none of which
/// may panic. Run with
/// `cargo test --release -p intq-tflite --test tflite -- --ignored fuzz`.
#[test]
#[ignore]
fn fuzz_every_fixture_model() {
    use examples::Draws as _;
    let mut rng = examples::seeded(2024);
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(dir.join(format!("{name}.tflite"))).unwrap();
        let mut accepted = 0;
        for trial in 0..20_000 {
            let mut b = bytes.clone();
            for _ in 0..1 + trial % 4 {
                // Offsets and headers live mostly outside the large constant buffers; aim at
                // both the whole file and its first and last 4 KiB.
                let at = match trial % 3 {
                    0 => rng.int_in(0, b.len() as i32 - 1),
                    1 => rng.int_in(0, 4095.min(b.len() as i32 - 1)),
                    _ => rng.int_in((b.len() as i32 - 4096).max(0), b.len() as i32 - 1),
                } as usize;
                b[at] = rng.int_in(0, 255) as u8;
            }
            if let Ok(g) = import(&b) {
                accepted += 1;
                if let Ok(m) = Model::new(g) {
                    let _ = m.run(&examples::random_input(m.graph(), 1));
                }
            }
        }
        println!("{name}: {accepted} of 20000 corruptions still import");
    }
}

/// Fuzzer reproducer: a mutated model whose bias scale S_in * S_w underflows f32. It imports
/// (the engine implies bias scales), so export must refuse it instead of writing a file that
/// cannot be read back.
#[test]
fn fuzz_regression_bias_scale_underflow_is_refused_by_export() {
    let bytes = std::fs::read(fixtures().join("regressions/bias_scale_underflow.tflite")).unwrap();
    let graph = import(&bytes).expect("the reproducer imports");
    match export(&graph) {
        Err(e) => assert!(e.to_string().contains("cannot export"), "{e}"),
        Ok(out) => assert_eq!(import(&out).expect("what export writes imports"), graph),
    }
}

/// An activation narrowed below 8 bits has no TFLite encoding: its kernels would clamp to the
/// whole type, so export refuses, naming the tensor, instead of writing a model that differs.
#[test]
fn export_refuses_activations_narrowed_below_8_bits() {
    let g = examples::small_cnn(DType::U8, true, 4);
    let mut tensors = g.tensors().to_vec();
    let conv = g.tensor_by_name("conv").unwrap();
    let z = tensors[conv.index()].params().unwrap().zero_point;
    let lo = z.min(240);
    tensors[conv.index()].code_range = Some((lo, lo + 15));
    let narrowed = Graph::new(
        tensors,
        g.ops().to_vec(),
        g.inputs().to_vec(),
        g.outputs().to_vec(),
    )
    .expect("valid");
    let e = export(&narrowed)
        .expect_err("export must refuse")
        .to_string();
    assert!(
        e.contains("'conv'") && e.contains("fewer than 8 bits"),
        "{e}"
    );
    assert!(export(&g).is_ok(), "the same model at 8 bits exports");
}

/// STRIDED_SLICE with a negative begin, begin and end masks and a shrunk axis imports as a
/// Slice (plus a Reshape dropping the shrunk axis) that takes exactly TFLite's elements.
#[test]
fn strided_slice_masks_and_shrink_resolve_like_tflite() {
    let i32s = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let tensor = |name: &str, t: i8, shape: Vec<i32>, buffer: u32, quant: bool| {
        let mut f = vec![
            (0, Field::Off(Node::I32s(shape))),
            (1, Field::U8(t as u8)),
            (2, Field::U32(buffer)),
            (3, Field::Off(Node::Str(name.into()))),
        ];
        if quant {
            f.push((
                4,
                Field::Off(Node::Table(vec![
                    (2, Field::Off(Node::F32s(vec![0.5]))),
                    (3, Field::Off(Node::I64s(vec![0]))),
                ])),
            ));
        }
        Node::Table(f)
    };
    // x [3, 4, 5] int8; x[-2:, 1 (shrunk), ::2] with begin_mask on axis 2 and end_mask on
    // axis 0 -> [2, 3].
    let tensors = vec![
        tensor("x", 9, vec![3, 4, 5], 0, true),
        tensor("begin", 2, vec![3], 1, false),
        tensor("end", 2, vec![3], 2, false),
        tensor("strides", 2, vec![3], 3, false),
        tensor("y", 9, vec![2, 3], 0, true),
    ];
    let buffer = |b: Vec<u8>| Node::Table(vec![(0, Field::Off(Node::Bytes(b, 16)))]);
    let options = Node::Table(vec![
        (0, Field::I32(0b100)), // begin_mask: axis 2
        (1, Field::I32(0b001)), // end_mask: axis 0
        (4, Field::I32(0b010)), // shrink_axis_mask: axis 1
    ]);
    let op = Node::Table(vec![
        (0, Field::U32(0)),
        (1, Field::Off(Node::I32s(vec![0, 1, 2, 3]))),
        (2, Field::Off(Node::I32s(vec![4]))),
        (3, Field::U8(32)),
        (4, Field::Off(options)),
    ]);
    let sg = Node::Table(vec![
        (0, Field::Off(Node::Tables(tensors))),
        (1, Field::Off(Node::I32s(vec![0]))),
        (2, Field::Off(Node::I32s(vec![4]))),
        (3, Field::Off(Node::Tables(vec![op]))),
    ]);
    let bytes = finish(
        &Node::Table(vec![
            (
                1,
                Field::Off(Node::Tables(vec![Node::Table(vec![
                    (0, Field::U8(45)),
                    (3, Field::I32(45)),
                ])])),
            ),
            (2, Field::Off(Node::Tables(vec![sg]))),
            (
                4,
                Field::Off(Node::Tables(vec![
                    Node::Table(vec![]),
                    buffer(i32s(&[-2, 1, 3])),
                    buffer(i32s(&[1, 9, 9])),
                    buffer(i32s(&[1, 1, 2])),
                ])),
            ),
        ]),
        b"TFL3",
    );
    let g = import(&bytes).unwrap();
    let kinds: Vec<&str> = g.ops().iter().map(|op| op.kind().name()).collect();
    assert_eq!(kinds, ["Slice", "Reshape"]);
    let x: Vec<i8> = (0..60).map(|v| v as i8).collect();
    let y = Model::new(g).unwrap().run(&[TensorData::I8(x)]).unwrap();
    // Rows 1 and 2 of axis 0, index 1 of axis 1, columns 0, 2, 4: 20a + 5 + c.
    assert_eq!(y[0], TensorData::I8(vec![25, 27, 29, 45, 47, 49]));
}

/// GATHER, REDUCE_MAX, ARG_MAX and L2_NORMALIZATION against TFLite's reference kernels, and SUM
/// (docs/spec.md §11.17 to §11.21): uint8 against the reference kernel, int8 against TFLite's
/// default kernel (its reference int8 SUM reads the codes as uint8). The committed models are
/// what the exporter writes today, and import back to the engine's ops.
#[test]
fn reduce_ops_equal_tflite_byte_for_byte() {
    use intq_tflite::zoo::{reduce_zoo, sum_zoo};
    let reduce_kinds = [
        "Gather",
        "Gather",
        "ReduceMax",
        "ReduceMax",
        "ArgMax",
        "ArgMax",
        "L2Normalization",
        "L2Normalization",
    ];
    let sum_kinds = ["Sum"; 4];
    for (name, graph, tensors, bytes, kinds) in [
        (
            "reduce_u8",
            reduce_zoo(DType::U8),
            16,
            1856,
            &reduce_kinds[..],
        ),
        (
            "reduce_i8",
            reduce_zoo(DType::I8),
            16,
            1856,
            &reduce_kinds[..],
        ),
        ("sum_u8", sum_zoo(DType::U8), 8, 200, &sum_kinds[..]),
        ("sum_i8", sum_zoo(DType::I8), 8, 200, &sum_kinds[..]),
    ] {
        // Every op output per seed, two seeds.
        let (t, b) = check_fixture(name);
        assert_eq!(
            (t, b),
            (tensors, bytes),
            "{name}: tensors and bytes compared"
        );
        let committed =
            std::fs::read(fixtures().join(name).join(format!("{name}.tflite"))).unwrap();
        assert!(export(&graph).unwrap() == committed, "{name}");
        let imported = import(&committed).unwrap();
        let got: Vec<&str> = imported.ops().iter().map(|op| op.kind().name()).collect();
        assert_eq!(got, kinds, "{name}");
        assert_eq!(import(&export(&imported).unwrap()).unwrap(), imported);
    }
}

/// A GATHER index outside its axis is refused at import, naming the index.
#[test]
fn gather_refuses_an_index_outside_the_axis() {
    use intq_engine::{GraphBuilder, Quant, QuantParams};
    let q = Some(Quant::PerTensor(QuantParams {
        scale: 0.5,
        zero_point: 0,
    }));
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::I8, &[2, 9], q.clone());
    let y = b.tensor("y", DType::I8, &[2, 2], q);
    b.input(x).output(y);
    b.op(Op::Gather {
        input: x,
        output: y,
        axis: 1,
        indices: vec![7, 8],
    });
    let mut bytes = export(&b.finish().unwrap()).unwrap();
    assert!(import(&bytes).is_ok());
    let pattern = [7u8, 0, 0, 0, 8, 0, 0, 0];
    let at: Vec<usize> = bytes
        .windows(8)
        .enumerate()
        .filter(|(_, w)| *w == pattern)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the indices appear once");
    bytes[at[0] + 4] = 9;
    let err = import(&bytes).unwrap_err().to_string();
    assert!(
        err.contains("GATHER") && err.contains("index 1 is 9, outside axis 1 (size 9)"),
        "{err}"
    );
}

/// ARG_MAX with TFLite's int64 output (its converter's default) is refused by name: the engine's
/// indices are int32.
#[test]
fn arg_max_with_an_int64_output_is_refused_by_name() {
    let tensor = |name: &str, t: i8, shape: Vec<i32>, buffer: u32, quant: bool| {
        let mut f = vec![
            (0, Field::Off(Node::I32s(shape))),
            (1, Field::U8(t as u8)),
            (2, Field::U32(buffer)),
            (3, Field::Off(Node::Str(name.into()))),
        ];
        if quant {
            f.push((
                4,
                Field::Off(Node::Table(vec![
                    (2, Field::Off(Node::F32s(vec![0.5]))),
                    (3, Field::Off(Node::I64s(vec![0]))),
                ])),
            ));
        }
        Node::Table(f)
    };
    let model = |out_type: i8| {
        let tensors = vec![
            tensor("x", 3, vec![2, 3], 0, true),
            tensor("axis", 2, vec![1], 1, false),
            tensor("index", out_type, vec![2], 0, false),
        ];
        let op = Node::Table(vec![
            (0, Field::U32(0)),
            (1, Field::Off(Node::I32s(vec![0, 1]))),
            (2, Field::Off(Node::I32s(vec![2]))),
            (3, Field::U8(40)),
            (
                4,
                Field::Off(Node::Table(vec![(0, Field::U8(out_type as u8))])),
            ),
        ]);
        let sg = Node::Table(vec![
            (0, Field::Off(Node::Tables(tensors))),
            (1, Field::Off(Node::I32s(vec![0]))),
            (2, Field::Off(Node::I32s(vec![2]))),
            (3, Field::Off(Node::Tables(vec![op]))),
        ]);
        let buffer = |b: Vec<u8>| Node::Table(vec![(0, Field::Off(Node::Bytes(b, 16)))]);
        finish(
            &Node::Table(vec![
                (
                    1,
                    Field::Off(Node::Tables(vec![Node::Table(vec![
                        (0, Field::U8(56)),
                        (3, Field::I32(56)),
                    ])])),
                ),
                (2, Field::Off(Node::Tables(vec![sg]))),
                (
                    4,
                    Field::Off(Node::Tables(vec![
                        Node::Table(vec![]),
                        buffer(1i32.to_le_bytes().to_vec()),
                    ])),
                ),
            ]),
            b"TFL3",
        )
    };
    // int32 indices import and run: the first of equal maxima.
    let g = import(&model(2)).unwrap();
    let y = Model::new(g)
        .unwrap()
        .run(&[TensorData::U8(vec![4, 9, 9, 7, 1, 0])])
        .unwrap();
    assert_eq!(y[0], TensorData::I32(vec![1, 0]));
    let err = import(&model(4)).unwrap_err().to_string();
    assert!(err.contains("ARG_MAX") && err.contains("INT64"), "{err}");
}

/// TFLite's int8 TRANSPOSE_CONV leaves the weights' zero point out of its sums, so an int8
/// model whose weights have a nonzero one is refused by name on import (intq's own op takes it).
#[test]
fn transpose_conv_with_int8_weight_zero_point_is_refused() {
    use intq_engine::{Activation, GraphBuilder, Padding, Quant, QuantParams};
    let q = |scale: f32, zero_point: i32| Some(Quant::PerTensor(QuantParams { scale, zero_point }));
    let graph = |z_w: i32| {
        let mut b = GraphBuilder::new();
        let x = b.tensor("x", DType::I8, &[1, 2, 2, 1], q(0.1, 0));
        let w = b.constant("w", &[1, 3, 3, 1], q(0.01, z_w), TensorData::I8(vec![5; 9]));
        let y = b.tensor("y", DType::I8, &[1, 4, 4, 1], q(0.1, 0));
        b.op(Op::TransposeConv {
            input: x,
            filter: w,
            bias: None,
            output: y,
            stride: [2, 2],
            padding: Padding::Same,
            activation: Activation::None,
        });
        b.input(x).output(y);
        b.finish().unwrap()
    };
    assert!(import(&export(&graph(0)).unwrap()).is_ok());
    let m = import(&export(&graph(3)).unwrap()).unwrap_err().to_string();
    assert!(
        m.contains("TRANSPOSE_CONV") && m.contains("nonzero zero point"),
        "{m}"
    );
}
