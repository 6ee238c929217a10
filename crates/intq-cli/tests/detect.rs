//! `intq detect` on the zoo's SSD-like detector: the JSON it prints, boxes scaled to the
//! picture, the drawn PNG, and the errors for a model without the post-process and for a
//! picture that does not decode.

mod common;
use common::{intq, json, scratch};

use intq_engine::DType;
use intq_tflite::zoo::{detection_configs, detector};
use std::path::{Path, PathBuf};

const GRAY: [u8; 3] = [90, 140, 200];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn picture(dir: &Path, name: &str, w: u32, h: u32) -> PathBuf {
    let path = dir.join(name);
    image::RgbImage::from_pixel(w, h, image::Rgb(GRAY))
        .save(&path)
        .unwrap();
    path
}

fn detect(args: &[&str]) -> serde_json::Value {
    let out = intq(args);
    assert!(
        out.status.success(),
        "intq {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))
}

fn boxes(v: &serde_json::Value) -> Vec<[f64; 4]> {
    v["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let b: Vec<f64> = d["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            [b[0], b[1], b[2], b[3]]
        })
        .collect()
}

#[test]
fn detections_are_json_in_pixels_of_the_picture_and_drawn() {
    let dir = scratch("detect", "zoo");
    for dtype in [DType::U8, DType::I8] {
        let model = dir.join(format!("detector_{dtype}.tflite"));
        intq_tflite::save(&detector(dtype, &detection_configs()[..1]), &model).unwrap();
        let labels = dir.join("labels.txt");
        std::fs::write(&labels, "???\nperson\ncar\ndog\n").unwrap();
        // One colour everywhere: the model sees the same 8 x 8 input at either size, so the
        // same detections, in pixels of each picture.
        let small = picture(&dir, "small.png", 8, 8);
        let big = picture(&dir, "big.png", 64, 48);
        let out = dir.join("drawn.png");
        let a = detect(&[
            "detect",
            s(&model),
            s(&small),
            "--threshold",
            "0",
            "--labels",
            s(&labels),
        ]);
        let b = detect(&[
            "detect",
            s(&model),
            s(&big),
            "--threshold",
            "0",
            "--labels",
            s(&labels),
            "--out",
            s(&out),
        ]);
        let (sa, sb) = (boxes(&a), boxes(&b));
        assert!(!sa.is_empty(), "{dtype}: no detections: {a}");
        assert_eq!(sa.len(), sb.len());
        for (p, q) in sa.iter().zip(&sb) {
            let scale = [48.0 / 8.0, 64.0 / 8.0, 48.0 / 8.0, 64.0 / 8.0];
            for k in 0..4 {
                assert!(
                    (p[k] * scale[k] - q[k]).abs() < 1e-3,
                    "{dtype}: {p:?} vs {q:?}"
                );
            }
            assert!(q[0] <= q[2] && q[1] <= q[3] && q[2] <= 48.0 && q[3] <= 64.0);
        }
        assert!(
            sb.iter().any(|q| q[3] > 8.0),
            "{dtype}: boxes not scaled: {sb:?}"
        );
        for (d, e) in b["detections"]
            .as_array()
            .unwrap()
            .iter()
            .zip(a["detections"].as_array().unwrap())
        {
            let class = d["class_id"].as_u64().unwrap() as usize;
            assert_eq!(d["label"], ["person", "car", "dog"][class], "{d}");
            assert_eq!((&d["class_id"], &d["score"]), (&e["class_id"], &e["score"]));
        }
        // The drawing: the picture's size, its colour away from the boxes, another colour on
        // the top edge of the first box.
        let drawn = image::open(&out).unwrap().to_rgb8();
        assert_eq!(drawn.dimensions(), (64, 48));
        let [y0, x0, _, x1] = sb[0].map(|v| v.round() as u32);
        let on_edge = drawn.get_pixel((x0 + x1) / 2, y0.min(47));
        assert_ne!(on_edge.0, GRAY, "{dtype}: nothing drawn at the box edge");
        let untouched = (0..48)
            .flat_map(|y| (0..64).map(move |x| (x, y)))
            .filter(|&(x, y)| drawn.get_pixel(x, y).0 == GRAY)
            .count();
        assert!(untouched > 0, "{dtype}: the whole picture was painted over");
        assert!(!dir.read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));
    }
}

#[test]
fn a_model_without_the_post_process_or_a_bad_picture_is_refused() {
    let dir = scratch("detect", "errors");
    let classifier = dir.join("small_cnn.intq");
    intq_engine::Model::new(intq_engine::examples::small_cnn(DType::U8, true, 7))
        .unwrap()
        .save(&classifier)
        .unwrap();
    let pic = picture(&dir, "pic.png", 16, 16);
    let out = intq(&["detect", s(&classifier), s(&pic)]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("small_cnn.intq") && e.contains("TFLite_Detection_PostProcess"),
        "{e}"
    );

    let model = dir.join("detector.tflite");
    intq_tflite::save(&detector(DType::U8, &detection_configs()[..1]), &model).unwrap();
    let bad = dir.join("bad.png");
    std::fs::write(&bad, b"not a picture at all").unwrap();
    let out = intq(&["detect", s(&model), s(&bad)]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("bad.png") && e.contains("picture"), "{e}");
    let out = intq(&["detect", s(&model), s(&dir.join("missing.png"))]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("missing.png"), "{e}");
}
