//! `TFLite_Detection_PostProcess` through import, export and the `.intq` format, and the errors
//! hostile options and operands give: a mangled flexbuffer, absurd detection counts, anchors of
//! the wrong shape, type or sign.

use intq_engine::{DType, DetectionOptions, DetectionPart, Graph, GraphBuilder, Model, Op};
use intq_tflite::zoo::{detection_configs, detector};
use intq_tflite::{export, import};

fn fast_only() -> Vec<(&'static str, DetectionOptions)> {
    detection_configs()[..1].to_vec()
}

/// The exported detector with its custom options replaced by `options` (same length).
fn with_options(options: &[u8]) -> Vec<u8> {
    let (name, o) = fast_only()[0];
    let _ = name;
    let mut bytes = export(&detector(DType::U8, &fast_only())).unwrap();
    let old = intq_tflite::detection::build_options(&o);
    assert_eq!(old.len(), options.len(), "same-length options only");
    let at = bytes
        .windows(old.len())
        .position(|w| w == old.as_slice())
        .expect("the options are in the file");
    bytes[at..at + old.len()].copy_from_slice(options);
    bytes
}

fn import_err(bytes: &[u8]) -> String {
    import(bytes).map(|_| ()).unwrap_err().to_string()
}

#[test]
fn imports_with_tflite_output_names_and_round_trips() {
    for dtype in [DType::U8, DType::I8] {
        let graph = detector(dtype, &detection_configs());
        let bytes = export(&graph).unwrap();
        let back = import(&bytes).unwrap();
        assert_eq!(export(&back).unwrap(), bytes);
        for name in [
            "TFLite_Detection_PostProcess",
            "TFLite_Detection_PostProcess:1",
            "TFLite_Detection_PostProcess:2",
            "TFLite_Detection_PostProcess:3",
        ] {
            let id = back.tensor_by_name(name).expect(name);
            assert_eq!(back.tensor(id).dtype, DType::F32);
            assert!(back.outputs().contains(&id));
        }
        let parts = back
            .ops()
            .iter()
            .filter(|op| matches!(op, Op::DetectionPostProcess { .. }))
            .count();
        assert_eq!(parts, 12, "three post-processes of four outputs each");

        // The .intq file keeps the op and its options; both runs agree with the first.
        let model = Model::new(back.clone()).unwrap();
        let dir = std::env::temp_dir().join(format!("intq-detection-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{dtype}.intq"));
        model.save(&path).unwrap();
        let loaded = Model::load(&path).unwrap();
        assert_eq!(loaded.graph(), model.graph());
        let input = intq_engine::examples::random_input(model.graph(), 5);
        assert_eq!(loaded.run(&input).unwrap(), model.run(&input).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_mangled_flexbuffer_is_refused_naming_the_op() {
    let len = intq_tflite::detection::build_options(&fast_only()[0].1).len();
    let e = import_err(&with_options(&vec![0xff; len]));
    assert!(e.contains("TFLite_Detection_PostProcess"), "{e}");
    assert!(e.contains("custom options") || e.contains("option"), "{e}");
}

#[test]
fn absurd_counts_are_refused() {
    for (max_detections, max_classes) in [(1usize << 24, 1usize), (5000, 5000)] {
        let o = DetectionOptions {
            max_detections,
            max_classes_per_detection: max_classes,
            ..fast_only()[0].1
        };
        let bytes = intq_tflite::detection::build_options(&o);
        let e = import_err(&with_options(&bytes));
        assert!(e.contains("max_detections"), "{e}");
        assert!(e.contains("DetectionPostProcess"), "{e}");
    }
    let o = DetectionOptions {
        nms_iou_threshold: 1.5,
        ..fast_only()[0].1
    };
    let e = import_err(&with_options(&intq_tflite::detection::build_options(&o)));
    assert!(e.contains("nms_iou_threshold 1.5"), "{e}");
}

/// A graph like the detector's post-process, with the anchors, boxes and scores given.
fn post_process(
    boxes: (DType, Vec<usize>),
    scores: (DType, Vec<usize>),
    anchors: (Vec<usize>, Vec<f32>),
) -> Result<Graph, intq_engine::GraphError> {
    let q = |dtype: DType| {
        (dtype != DType::F32).then_some(intq_engine::Quant::PerTensor(intq_engine::QuantParams {
            scale: 0.05,
            zero_point: 0,
        }))
    };
    let mut b = GraphBuilder::new();
    let bx = b.tensor("boxes", boxes.0, &boxes.1, q(boxes.0));
    let sc = b.tensor("scores", scores.0, &scores.1, q(scores.0));
    let an = b.constant(
        "anchors",
        &anchors.0,
        None,
        intq_engine::TensorData::F32(anchors.1),
    );
    b.input(bx).input(sc);
    let o = fast_only()[0].1;
    let out = b.tensor("detections", DType::F32, &[1, 10, 4], None);
    b.op(Op::DetectionPostProcess {
        boxes: bx,
        scores: sc,
        anchors: an,
        output: out,
        part: DetectionPart::Boxes,
        options: o,
    });
    b.output(out);
    b.finish()
}

#[test]
fn anchors_of_the_wrong_shape_type_or_sign_are_refused() {
    let f32s = |n| (DType::F32, n);
    let ok = post_process(
        f32s(vec![1, 6, 4]),
        f32s(vec![1, 6, 4]),
        (vec![6, 4], vec![0.5; 24]),
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
    let e = post_process(
        f32s(vec![1, 6, 4]),
        f32s(vec![1, 6, 4]),
        (vec![6, 3], vec![0.5; 18]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("anchors") && e.contains("[6, 4]"), "{e}");
    let e = post_process(
        f32s(vec![1, 6, 4]),
        f32s(vec![1, 6, 4]),
        (vec![5, 4], vec![0.5; 20]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("anchors") && e.contains("[6, 4]"), "{e}");
    let mut negative = vec![0.5; 24];
    negative[4 * 2 + 2] = -0.1;
    let e = post_process(
        f32s(vec![1, 6, 4]),
        f32s(vec![1, 6, 4]),
        (vec![6, 4], negative),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("row 2") && e.contains("at least 0"), "{e}");
    // uint8 boxes read uint8 anchors in TFLite; float32 ones do not fit.
    let e = post_process(
        (DType::U8, vec![1, 6, 4]),
        f32s(vec![1, 6, 4]),
        (vec![6, 4], vec![0.5; 24]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("anchors") && e.contains("uint8"), "{e}");
    // int8 codes: TFLite's kernel reads uint8 or float32 only.
    let e = post_process(
        (DType::I8, vec![1, 6, 4]),
        f32s(vec![1, 6, 4]),
        (vec![6, 4], vec![0.5; 24]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("boxes") && e.contains("int8"), "{e}");
    // Scores for a different number of boxes, and num_classes that does not fit them.
    let e = post_process(
        f32s(vec![1, 6, 4]),
        f32s(vec![1, 5, 4]),
        (vec![6, 4], vec![0.5; 24]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("scores"), "{e}");
    let e = post_process(
        f32s(vec![1, 6, 4]),
        f32s(vec![1, 6, 6]),
        (vec![6, 4], vec![0.5; 24]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("num_classes 3"), "{e}");
}

#[test]
fn export_refuses_a_part_without_its_boxes() {
    let graph = detector(DType::U8, &fast_only());
    // Keep only the count output: its op has no boxes op beside it.
    let ops: Vec<Op> = graph
        .ops()
        .iter()
        .filter(|op| {
            !matches!(
                op,
                Op::DetectionPostProcess { part, .. } if *part != DetectionPart::Count
            )
        })
        .cloned()
        .collect();
    let count = graph
        .tensor_by_name("TFLite_Detection_PostProcess:3")
        .unwrap();
    let g = Graph::new(
        graph.tensors().to_vec(),
        ops,
        graph.inputs().to_vec(),
        vec![count],
    )
    .unwrap();
    let e = export(&g).unwrap_err().to_string();
    assert!(
        e.contains("TFLite_Detection_PostProcess") && e.contains("boxes"),
        "{e}"
    );
}

/// Mutated detector files (bytes anywhere, the options included) import or are refused, never
/// panic; what imports runs, and exports to a file that imports back to the same graph (the
/// `.tflite` fuzz target's invariants, on the post-process).
#[test]
fn mutated_detectors_never_panic_and_round_trip() {
    use intq_engine::examples::{random_input, seeded, Draws as _};
    let bytes = export(&detector(DType::U8, &detection_configs())).unwrap();
    // Half the mutations land in the first post-process's options.
    let options = intq_tflite::detection::build_options(&detection_configs()[0].1);
    let start = bytes
        .windows(options.len())
        .position(|w| w == options.as_slice())
        .unwrap() as i32;
    let end = start + options.len() as i32 - 1;
    let mut rng = seeded(7);
    let mut imported = 0;
    for trial in 0..4000 {
        let mut b = bytes.clone();
        for _ in 0..1 + trial % 3 {
            let at = if trial % 2 == 0 {
                rng.int_in(start, end)
            } else {
                rng.int_in(0, b.len() as i32 - 1)
            } as usize;
            b[at] = rng.int_in(0, 255) as u8;
        }
        let Ok(g) = import(&b) else { continue };
        imported += 1;
        if let Ok(again) = export(&g) {
            assert_eq!(import(&again).expect("an exported model imports"), g);
        }
        if let Ok(m) = Model::new(g) {
            let _ = m.run(&random_input(m.graph(), 1));
        }
    }
    assert!(imported > 100, "{imported} of 4000 mutations imported");
}
