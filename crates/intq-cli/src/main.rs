//! `intq`: inspect and run integer-only quantized models from the command line.

/// mimalloc keeps freed pages for reuse: with the system allocator, every training step
/// returned its activations to the OS and faulted them back in.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its index in `mi_option_e`, v2 and v3 alike).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hands freed memory back to the OS: by default mimalloc purges free arena pages after
/// about 100 ms, so each training step (which frees and re-allocates every activation) spent a
/// large share of its time having the kernel zero freshly faulted huge pages. A process's
/// memory stays at its peak instead. `MIMALLOC_PURGE_DELAY` in the environment still rules.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one option value; called first in `main`, before any other thread runs
        // (mimalloc's option setters are not thread-safe).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

mod bench_cmd;
mod convert_cmd;
mod data_cmd;
mod detect_cmd;
mod fidelity;
mod inspect;
use intq_cli::npy;
mod onnx_cmd;
mod quickstart;
mod tflite_cmd;
mod train_cmd;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use intq_engine::TensorData;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "intq",
    version,
    about = "Quantization-aware training and integer-only inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's inputs, outputs, ops, tensors, quantization parameters and sizes.
    Inspect {
        /// A `.intq`, `.tflite` or float `.onnx` model.
        model: PathBuf,
        /// Also list every tensor, constants included.
        #[arg(long)]
        tensors: bool,
    },
    /// Run a model on `.npy` inputs and write `.npy` outputs (dtype as the tensor's).
    Run {
        /// A `.intq` or `.tflite` model, or a float `.onnx` model (run in f32, float32 `.npy`
        /// in the model's layout, any batch).
        model: PathBuf,
        /// One `.npy` per graph input, in the order `intq inspect` lists them; the leading
        /// (batch) dimension may be any N >= 1 whatever the model was built with.
        #[arg(long = "input", short = 'i', required = true)]
        inputs: Vec<PathBuf>,
        /// One `.npy` per graph output, or one per `--tensor`, in the same order.
        #[arg(long = "output", short = 'o')]
        outputs: Vec<PathBuf>,
        /// Write one `.npy` per graph output (or per `--tensor`) into this directory (created if
        /// missing), named after the tensor: every character other than ASCII letters, digits,
        /// '-', '_' and '.' becomes '_', a leading '.' becomes '_', and ".npy" is appended.
        #[arg(long = "output-dir", conflicts_with = "outputs")]
        output_dir: Option<PathBuf>,
        /// Return this tensor (by name), e.g. an intermediate activation, instead of the graph
        /// outputs; may be given several times.
        #[arg(long)]
        tensor: Vec<String>,
        /// Run the float executor of the same graph (dequantized weights, f32 math) and write
        /// float32 real values instead of integer codes.
        #[arg(long)]
        float: bool,
    },
    /// Fetch Fashion-MNIST, train small-cnn in float, PTQ it, QAT fine-tune it, convert it to an
    /// integer-only model and compare float, PTQ, fake-quant and int8 (the whole training set
    /// and test set, a few minutes on 2 cores; `--tiny`: a subset, seconds).
    Quickstart(quickstart::QuickstartArgs),
    /// Draw a training curve (loss, train and test accuracy per epoch) from metrics logs as a
    /// PNG; several logs (float, then QAT) continue one epoch axis.
    Curve(intq_cli::curve::CurveArgs),
    /// Run an SSD-style detector (ending in TFLite_Detection_PostProcess) on a picture: print
    /// the detections as JSON in pixels of the picture, and draw them with `--out`.
    Detect(detect_cmd::DetectArgs),
    // Each command family lives in its own module (one owner per file); its variants appear
    // here as top-level subcommands.
    #[command(flatten)]
    Data(data_cmd::DataCommand),
    #[command(flatten)]
    Train(train_cmd::TrainCommand),
    #[command(flatten)]
    Convert(convert_cmd::ConvertCommand),
    #[command(flatten)]
    Tflite(tflite_cmd::TfliteCommand),
    #[command(flatten)]
    Bench(bench_cmd::BenchCommand),
}

fn main() {
    keep_freed_memory();
    if let Err(e) = real_main() {
        // Engine errors print their cause inline, so skip causes the message already holds.
        let mut msg = e.to_string();
        for cause in e.chain().skip(1) {
            let c = cause.to_string();
            if !msg.contains(&c) {
                msg = format!("{msg}: {c}");
            }
        }
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().command {
        Command::Inspect { model, tensors } => inspect::inspect(&model, tensors),
        Command::Run {
            model,
            inputs,
            outputs,
            output_dir,
            tensor,
            float,
        } => run(
            &model,
            &inputs,
            &outputs,
            output_dir.as_deref(),
            &tensor,
            float,
        ),
        Command::Quickstart(a) => quickstart::quickstart(a),
        Command::Curve(a) => intq_cli::curve::run(a),
        Command::Detect(a) => detect_cmd::run(a),
        Command::Data(c) => data_cmd::run(c),
        Command::Train(c) => train_cmd::run(c),
        Command::Convert(c) => convert_cmd::run(c),
        Command::Tflite(c) => tflite_cmd::run(c),
        Command::Bench(c) => bench_cmd::run(c),
    }
}

fn run(
    model_path: &std::path::Path,
    input_paths: &[PathBuf],
    output_paths: &[PathBuf],
    output_dir: Option<&std::path::Path>,
    tensors: &[String],
    float: bool,
) -> Result<()> {
    if output_paths.is_empty() && output_dir.is_none() {
        bail!("give the output files with -o (once per output) or a directory with --output-dir");
    }
    if onnx_cmd::is_onnx(model_path) {
        if output_dir.is_some() || tensors.len() > 1 {
            bail!(
                "{}: --output-dir and repeated --tensor are for .intq and .tflite models",
                model_path.display()
            );
        }
        return onnx_cmd::run(
            model_path,
            input_paths,
            output_paths,
            tensors.first().map(String::as_str),
        );
    }
    let (model, left) = inspect::load(model_path)?;
    let graph = model.graph();
    if input_paths.len() != graph.inputs().len() {
        bail!(
            "{} takes {} input(s) ({}), {} given",
            model_path.display(),
            graph.inputs().len(),
            names(graph, graph.inputs()),
            input_paths.len()
        );
    }
    let mut wanted = Vec::with_capacity(tensors.len().max(1));
    for name in tensors {
        if let Some(u) = left.op_of(name) {
            bail!(
                "{}: tensor '{name}' depends on {}, which intq does not support",
                model_path.display(),
                inspect::op_label(u)
            );
        }
        wanted.push(graph.tensor_by_name(name).with_context(|| {
            format!(
                "{} has no tensor named '{name}' (see `intq inspect --tensors`)",
                model_path.display()
            )
        })?);
    }
    if tensors.is_empty() {
        if !left.ops.is_empty() {
            let ops = left
                .ops
                .iter()
                .map(inspect::op_label)
                .collect::<Vec<_>>()
                .join(", ");
            let outs = left
                .cut_outputs
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ");
            bail!(
                "{}: intq does not support {ops}; output(s) {outs} depend on it (choose \
                 tensors that do not with --tensor NAME; `intq inspect` lists them)",
                model_path.display()
            );
        }
        wanted = graph.outputs().to_vec();
    }
    let mut inputs = Vec::with_capacity(input_paths.len());
    for (path, &id) in input_paths.iter().zip(graph.inputs()) {
        let array = npy::read(path)?;
        let t = graph.tensor(id);
        if array.data.dtype() != t.dtype {
            bail!(
                "{}: dtype {} but input '{}' of the model is {}",
                path.display(),
                array.data.dtype(),
                t.name,
                t.dtype
            );
        }
        // Any number of images: the leading (batch) dimension may differ from the model's.
        let same_image = array.shape.len() == t.shape.len()
            && array.shape.first().is_some_and(|&n| n >= 1)
            && array.shape[1..] == t.shape[1..];
        if array.shape != t.shape && !same_image {
            bail!(
                "{}: shape {:?} but input '{}' of the model has shape {:?} (the leading, batch \
                 dimension may differ)",
                path.display(),
                array.shape,
                t.name,
                t.shape
            );
        }
        inputs.push(array.data);
    }
    let output_paths: Vec<PathBuf> = match output_dir {
        Some(dir) => {
            let files = output_files(graph, &wanted)?;
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            files.into_iter().map(|f| dir.join(f)).collect()
        }
        None => output_paths.to_vec(),
    };
    if output_paths.len() != wanted.len() {
        bail!(
            "{} output path(s) given for {} tensor(s) ({})",
            output_paths.len(),
            wanted.len(),
            names(graph, &wanted)
        );
    }
    let results: Vec<TensorData> = if float {
        model
            .run_float_with(&inputs, &wanted)?
            .into_iter()
            .map(TensorData::F32)
            .collect()
    } else {
        model.run_with(&inputs, &wanted)?
    };
    let batch = model
        .batch_of(&inputs)
        .with_context(|| model_path.display().to_string())?;
    for ((path, data), &id) in output_paths.iter().zip(results).zip(&wanted) {
        let shape = model.shape_at(id, batch)?;
        npy::write(path, &npy::Array { shape, data })?;
    }
    Ok(())
}

/// A safe file name for a tensor name: ASCII letters, digits, '-', '_' and '.' are kept, any
/// other character becomes '_', and a leading '.' becomes '_' (no hidden files, no "..").
fn file_name_for(tensor: &str) -> String {
    let mut s: String = tensor
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    s + ".npy"
}

/// One file name per tensor; two tensors whose names map to one file are an error.
fn output_files(graph: &intq_engine::Graph, ids: &[intq_engine::TensorId]) -> Result<Vec<String>> {
    let mut files: Vec<String> = Vec::with_capacity(ids.len());
    for &id in ids {
        let f = file_name_for(&graph.tensor(id).name);
        if let Some(j) = files.iter().position(|g| g.eq_ignore_ascii_case(&f)) {
            bail!(
                "tensors '{}' and '{}' would both be written to {f}; name the files with -o",
                graph.tensor(ids[j]).name,
                graph.tensor(id).name
            );
        }
        files.push(f);
    }
    Ok(files)
}

fn names(graph: &intq_engine::Graph, ids: &[intq_engine::TensorId]) -> String {
    ids.iter()
        .map(|&id| format!("'{}'", graph.tensor(id).name))
        .collect::<Vec<_>>()
        .join(", ")
}
