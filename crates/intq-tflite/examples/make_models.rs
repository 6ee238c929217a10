//! Writes intq's own test models as `.tflite` (and `.intq`) into a directory, for
//! tools/tflite-check: small_cnn (u8, i8; float edges), the op zoo (u8, i8) and the elementwise,
//! resize, layout and spatial zoos (u8, i8), and the SPLIT / SPLIT_V models (u8, i8; `.tflite` only).
//!   cargo run --release -p intq-tflite --example make_models -- DIR

use intq_engine::{examples, DType, Graph, Model};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: make_models DIR")?);
    std::fs::create_dir_all(&dir)?;
    let models: Vec<(String, Graph)> = vec![
        (
            "small_cnn_u8".into(),
            examples::small_cnn(DType::U8, true, 7),
        ),
        (
            "small_cnn_i8".into(),
            examples::small_cnn(DType::I8, true, 7),
        ),
        ("op_zoo_u8".into(), intq_tflite::zoo::op_zoo(DType::U8, 11)),
        ("op_zoo_i8".into(), intq_tflite::zoo::op_zoo(DType::I8, 11)),
        (
            "elementwise_u8".into(),
            intq_tflite::zoo::elementwise_zoo(DType::U8),
        ),
        (
            "elementwise_i8".into(),
            intq_tflite::zoo::elementwise_zoo(DType::I8),
        ),
        ("resize_u8".into(), intq_tflite::zoo::resize_zoo(DType::U8)),
        ("resize_i8".into(), intq_tflite::zoo::resize_zoo(DType::I8)),
        ("layout_u8".into(), intq_tflite::zoo::layout_zoo(DType::U8)),
        ("layout_i8".into(), intq_tflite::zoo::layout_zoo(DType::I8)),
        (
            "spatial_u8".into(),
            intq_tflite::zoo::spatial_zoo(DType::U8),
        ),
        (
            "spatial_i8".into(),
            intq_tflite::zoo::spatial_zoo(DType::I8),
        ),
        ("reduce_u8".into(), intq_tflite::zoo::reduce_zoo(DType::U8)),
        ("reduce_i8".into(), intq_tflite::zoo::reduce_zoo(DType::I8)),
        ("sum_u8".into(), intq_tflite::zoo::sum_zoo(DType::U8)),
        ("sum_i8".into(), intq_tflite::zoo::sum_zoo(DType::I8)),
        (
            "detector_u8".into(),
            intq_tflite::zoo::detector(DType::U8, &intq_tflite::zoo::detection_configs()),
        ),
        (
            "detector_i8".into(),
            intq_tflite::zoo::detector(DType::I8, &intq_tflite::zoo::detection_configs()),
        ),
    ];
    for (name, graph) in models {
        Model::new(graph.clone())?.save(&dir.join(format!("{name}.intq")))?;
        intq_tflite::save(&graph, &dir.join(format!("{name}.tflite")))?;
        println!("{}", dir.join(format!("{name}.tflite")).display());
    }
    // SPLIT and SPLIT_V have no engine op to export from: these files are written directly.
    for (name, dtype) in [("split_u8", DType::U8), ("split_i8", DType::I8)] {
        let path = dir.join(format!("{name}.tflite"));
        std::fs::write(&path, intq_tflite::zoo::split_tflite(dtype))?;
        println!("{}", path.display());
    }
    Ok(())
}
