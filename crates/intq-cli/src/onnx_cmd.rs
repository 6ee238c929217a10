//! `intq inspect` and `intq run` on float `.onnx` models: the graph intq imports from the file,
//! and that graph run in f32 on `.npy` inputs in the model's own layout (NCHW) at any batch.

use anyhow::{bail, Context, Result};
use intq_cli::npy;
use intq_engine::TensorData;
use intq_onnx::eval::{run_values, Tensor};
use std::path::{Path, PathBuf};

/// Whether `path` names an ONNX model (by its extension).
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// `intq inspect MODEL.onnx`: what intq imports from the file.
pub fn inspect(path: &Path) -> Result<()> {
    let graph = intq_onnx::load(path)?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    print!(
        "model {}: {size} bytes, float ONNX (N is the batch)\n{graph}",
        path.display()
    );
    Ok(())
}

/// `intq run MODEL.onnx -i X.npy ... -o Y.npy ...`: float32 `.npy` in and out.
pub fn run(
    path: &Path,
    input_paths: &[PathBuf],
    output_paths: &[PathBuf],
    tensor: Option<&str>,
) -> Result<()> {
    let graph = intq_onnx::load(path)?;
    if input_paths.len() != graph.inputs.len() {
        bail!(
            "{} takes {} input(s), {} given",
            path.display(),
            graph.inputs.len(),
            input_paths.len()
        );
    }
    let mut inputs = Vec::with_capacity(input_paths.len());
    for p in input_paths {
        let a = npy::read(p)?;
        let TensorData::F32(data) = a.data else {
            bail!(
                "{}: dtype {} but ONNX models take float32",
                p.display(),
                a.data.dtype()
            );
        };
        inputs.push(Tensor {
            shape: a.shape,
            data,
        });
    }
    let wanted = match tensor {
        Some(name) => vec![graph
            .values
            .iter()
            .rposition(|v| v.name == name)
            .with_context(|| {
                format!(
                    "{} has no activation named '{name}' (see `intq inspect`)",
                    path.display()
                )
            })?],
        None => graph.outputs.clone(),
    };
    if output_paths.len() != wanted.len() {
        bail!(
            "{} output path(s) given for {} tensor(s)",
            output_paths.len(),
            wanted.len()
        );
    }
    let results =
        run_values(&graph, &inputs, &wanted).with_context(|| format!("{}", path.display()))?;
    for (p, t) in output_paths.iter().zip(results) {
        npy::write(
            p,
            &npy::Array {
                shape: t.shape,
                data: TensorData::F32(t.data),
            },
        )?;
    }
    Ok(())
}
