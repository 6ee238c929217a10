//! `intq` subcommands: .tflite import and export, and loading either format for `run`/`inspect`.

use anyhow::{Context, Result};
use intq_engine::Model;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum TfliteCommand {
    /// Convert a `.tflite` model (8-bit quantized) into a `.intq` model.
    Import {
        /// The `.tflite` file.
        model: PathBuf,
        /// Where to write the `.intq` model.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a `.intq` (or `.tflite`) model as a `.tflite` file TFLite's interpreter runs, or
    /// as a QDQ `.onnx` model (QuantizeLinear/DequantizeLinear around float ops) that ONNX
    /// Runtime runs; the ONNX model keeps the model's edges (f32 or codes, input NHWC).
    Export {
        /// The `.intq` model.
        model: PathBuf,
        /// Where to write the `.tflite` file.
        #[arg(long, required_unless_present = "onnx", conflicts_with = "onnx")]
        tflite: Option<PathBuf>,
        /// Where to write the QDQ `.onnx` file.
        #[arg(long)]
        onnx: Option<PathBuf>,
    },
}

pub fn run(cmd: TfliteCommand) -> Result<()> {
    match cmd {
        TfliteCommand::Import { model, out } => {
            let m = load_model(&model)?;
            m.save(&out)?;
            println!(
                "imported {} ({} ops, {} tensors) -> {}",
                model.display(),
                m.graph().ops().len(),
                m.graph().tensors().len(),
                out.display()
            );
            Ok(())
        }
        TfliteCommand::Export { model, onnx, .. } if onnx.is_some() => {
            crate::onnx_cmd::export_qdq(&model, onnx.as_deref().context("--onnx")?)
        }
        TfliteCommand::Export { model, tflite, .. } => {
            let tflite = tflite.context("--tflite or --onnx names the file to write")?;
            let m = load_model(&model)?;
            intq_tflite::save(m.graph(), &tflite)?;
            println!("exported {} -> {}", model.display(), tflite.display());
            Ok(())
        }
    }
}

/// Loads a model in either format: `.tflite` by extension, `.intq` otherwise.
pub fn load_model(path: &Path) -> Result<Model> {
    if intq_tflite::is_tflite_path(path) {
        let graph = intq_tflite::load(path)?;
        Model::new(graph)
            .with_context(|| format!("{}: planning the imported graph", path.display()))
    } else {
        Ok(Model::load(path)?)
    }
}
