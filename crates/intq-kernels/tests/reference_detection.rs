//! Reference `TFLite_Detection_PostProcess` on hand-built cases: decoding, the score threshold,
//! more detections asked for than there are anchors, a single class, and the order among equal
//! scores (box order for fast NMS, class order for regular NMS).

use intq_kernels::reference::{detection_postprocess, DetectionInput, DetectionOptions};

fn options(max_detections: usize, regular: bool) -> DetectionOptions {
    DetectionOptions {
        max_detections,
        max_classes_per_detection: 1,
        detections_per_class: 100,
        use_regular_nms: regular,
        nms_score_threshold: 0.5,
        nms_iou_threshold: 0.5,
        num_classes: 2,
        y_scale: 10.0,
        x_scale: 10.0,
        h_scale: 5.0,
        w_scale: 5.0,
    }
}

/// Three unit anchors side by side at x = 0.5, 1.5, 2.5 (no overlap) and a fourth on top of the
/// first; zero encodings decode to the anchors themselves.
fn anchors() -> Vec<f32> {
    vec![
        0.5, 0.5, 1.0, 1.0, //
        0.5, 1.5, 1.0, 1.0, //
        0.5, 2.5, 1.0, 1.0, //
        0.5, 0.5, 1.0, 1.0,
    ]
}

fn run(scores: &[f32], o: &DetectionOptions) -> intq_kernels::reference::Detections {
    let a = anchors();
    let boxes = vec![0.0f32; a.len()];
    let classes = scores.len() / (a.len() / 4);
    detection_postprocess(
        DetectionInput::F32(&boxes),
        4,
        DetectionInput::F32(scores),
        classes,
        &a,
        o,
    )
}

#[test]
fn encodings_decode_against_the_anchor_in_f64() {
    // y, x shift by value / scale * anchor size; h, w scale by exp(value / scale).
    let anchors = [0.5f32, 0.25, 0.2, 0.4];
    let enc = [2.0f32, -1.0, 5.0 * 0.5f32.ln(), 0.0];
    let d = detection_postprocess(
        DetectionInput::F32(&enc),
        4,
        DetectionInput::F32(&[0.0, 0.9]),
        2,
        &anchors,
        &DetectionOptions {
            num_classes: 1,
            ..options(1, false)
        },
    );
    let yc = (2.0f64 / 10.0 * 0.2f32 as f64 + 0.5f32 as f64) as f32;
    let xc = (-1.0f64 / 10.0 * 0.4f32 as f64 + 0.25f32 as f64) as f32;
    let hh = (0.5 * ((5.0 * 0.5f32.ln()) as f64 / 5.0).exp() * 0.2f32 as f64) as f32;
    let hw = (0.5 * 0.4f32 as f64) as f32;
    assert_eq!(d.boxes, vec![yc - hh, xc - hw, yc + hh, xc + hw]);
    assert_eq!((d.classes[0], d.scores[0], d.count), (0.0, 0.9, 1.0));
}

#[test]
fn uint8_inputs_dequantize_as_tflite() {
    // Codes 128 +- k at S = 0.5, Z = 128: reals k / 2.
    let enc = [128u8, 128, 128, 128];
    let scores = [0u8, 200];
    let d = detection_postprocess(
        DetectionInput::U8 {
            codes: &enc,
            scale: 0.5,
            zero_point: 128,
        },
        4,
        DetectionInput::U8 {
            codes: &scores,
            scale: 1.0 / 256.0,
            zero_point: 0,
        },
        2,
        &[0.5, 0.5, 1.0, 1.0],
        &DetectionOptions {
            num_classes: 1,
            ..options(1, false)
        },
    );
    assert_eq!(d.boxes, vec![0.0, 0.0, 1.0, 1.0]);
    assert_eq!((d.scores[0], d.count), (200.0 / 256.0, 1.0));
}

#[test]
fn nothing_above_the_threshold_gives_zero_detections() {
    // Background first, then two classes, all below 0.5.
    let scores = [0.9, 0.1, 0.2, 0.9, 0.4, 0.3, 0.9, 0.0, 0.0, 0.9, 0.49, 0.49];
    for regular in [false, true] {
        let d = run(&scores, &options(3, regular));
        assert_eq!(d.count, 0.0, "regular {regular}");
        assert!(d
            .boxes
            .iter()
            .chain(&d.classes)
            .chain(&d.scores)
            .all(|&v| v == 0.0));
    }
}

#[test]
fn more_detections_than_anchors_fill_with_zeros() {
    let scores = [0.0, 0.9, 0.6, 0.0, 0.7, 0.1, 0.0, 0.6, 0.8, 0.0, 0.95, 0.2];
    for regular in [false, true] {
        let d = run(&scores, &options(10, regular));
        assert_eq!(d.boxes.len(), 40);
        // Anchor 3 lies on anchor 0: whichever scores lower in a class is suppressed.
        let n = d.count as usize;
        assert!(n <= 6, "regular {regular}: {n}");
        assert!(d.scores[n..].iter().all(|&s| s == 0.0));
        assert!(d.boxes[4 * n..].iter().all(|&v| v == 0.0));
    }
    let fast = run(&scores, &options(10, false));
    // Per anchor top scores 0.9, 0.7, 0.8, 0.95: anchor 3 first, anchor 0 suppressed by it.
    assert_eq!(fast.count, 3.0);
    assert_eq!(&fast.scores[..3], &[0.95, 0.8, 0.7]);
    assert_eq!(&fast.classes[..3], &[0.0, 1.0, 0.0]);
    let regular = run(&scores, &options(10, true));
    // Class 0: 0.95 (anchor 3), 0.7, 0.6; anchor 0's 0.9 lies under anchor 3. Class 1: 0.8
    // (anchor 2), 0.6 (anchor 0), merged after class 0's equal 0.6.
    assert_eq!(regular.count, 5.0);
    assert_eq!(&regular.scores[..5], &[0.95, 0.8, 0.7, 0.6, 0.6]);
    assert_eq!(&regular.classes[..5], &[0.0, 1.0, 0.0, 0.0, 1.0]);
}

#[test]
fn one_class_without_background() {
    let scores = [0.6, 0.7, 0.8, 0.9];
    let o = DetectionOptions {
        num_classes: 1,
        ..options(2, false)
    };
    let d = run(&scores, &o);
    assert_eq!(d.count, 2.0);
    assert_eq!(&d.scores[..], &[0.9, 0.8]);
    assert_eq!(&d.classes[..], &[0.0, 0.0]);
    // Anchor 3 (0.9) first, then anchor 2; anchor 0 is suppressed by 3, 1 is past the limit.
    assert_eq!(&d.boxes[..4], &[0.0, 0.0, 1.0, 1.0]);
    assert_eq!(&d.boxes[4..], &[0.0, 2.0, 1.0, 3.0]);
}

#[test]
fn equal_scores_keep_box_order_in_fast_nms() {
    // All four anchors score 0.75 in class 1: the stable sort visits them in anchor order, so
    // anchor 0 is selected and anchor 3 (on top of it) suppressed.
    let scores = [0.0, 0.1, 0.75].repeat(4);
    let d = run(&scores, &options(4, false));
    assert_eq!(d.count, 3.0);
    let xmins: Vec<f32> = (0..3).map(|k| d.boxes[4 * k + 1]).collect();
    assert_eq!(xmins, vec![0.0, 1.0, 2.0]);
    assert_eq!(&d.classes[..3], &[1.0; 3]);
}

#[test]
fn equal_scores_keep_class_order_in_regular_nms() {
    // Anchor 1 scores 0.75 in both classes: class 0's selection comes first.
    let scores = [
        0.0, 0.0, 0.0, //
        0.0, 0.75, 0.75, //
        0.0, 0.0, 0.0, //
        0.0, 0.0, 0.0,
    ];
    let d = run(&scores, &options(5, true));
    assert_eq!(d.count, 2.0);
    assert_eq!(&d.classes[..2], &[0.0, 1.0]);
    assert_eq!(&d.scores[..2], &[0.75, 0.75]);
}

#[test]
fn two_classes_per_detection_follow_the_partial_sort() {
    // One anchor, four classes with ties: libstdc++'s partial_sort of the indices by decreasing
    // score (a heap select, then a heap sort) leaves class 3 before class 1, then class 0.
    let a = [0.5f32, 0.5, 1.0, 1.0];
    let scores = [0.25f32, 0.5, 0.25, 0.5];
    let o = DetectionOptions {
        num_classes: 4,
        max_classes_per_detection: 3,
        nms_score_threshold: 0.0,
        ..options(1, false)
    };
    let d = detection_postprocess(
        DetectionInput::F32(&[0.0; 4]),
        4,
        DetectionInput::F32(&scores),
        4,
        &a,
        &o,
    );
    assert_eq!(d.count, 1.0);
    assert_eq!(&d.scores[..], &[0.5, 0.5, 0.25]);
    assert_eq!(&d.classes[..], &[3.0, 1.0, 0.0]);
}
