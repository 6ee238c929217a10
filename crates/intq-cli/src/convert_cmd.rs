//! `intq convert` (QAT checkpoint → integer `.intq` model), `intq eval` (accuracy of an integer
//! model or of a training checkpoint, or the float / fake-quant / int8 comparison of a model
//! against its checkpoint) and `intq ptq` (post-training quantization of a float checkpoint, the
//! baseline QAT must beat; the work is `intq_train::ptq`'s).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use intq_engine::Model;
use intq_train::layers::QuantCfg;
use intq_train::ptq::Calib;
use serde::Serialize;

use crate::fidelity;

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// The QAT checkpoint to convert (`intq qat --out ...`).
    pub ckpt: PathBuf,
    /// The `.intq` model to write (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// uint8 (the paper's per-tensor scheme) or int8 (TFLite's, symmetric weights). Default:
    /// the scheme the checkpoint was trained with; another one re-quantizes the weights and
    /// loses the fake-quant ↔ int8 agreement.
    #[arg(long)]
    pub scheme: Option<String>,
    /// The default, spelled out: raw uint8 pixels in, logit codes out.
    #[arg(long, hide = true, conflicts_with = "float_edges")]
    pub codes: bool,
    /// Read f32 and return f32 logits (Quantize/Dequantize at the edges) instead of raw uint8
    /// pixels and logit codes. The f32 input is the real value of the pixel codes: `p/255`, or
    /// `(p/255 - m)/s` with m rounded to a pixel step under a --normalize that sets the input's
    /// params (docs/training.md, "Input normalization").
    #[arg(long)]
    pub float_edges: bool,
}

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// What to evaluate: a `.intq` (or `.tflite`) model, run by the integer engine, or a
    /// training checkpoint (`intq train` / `intq qat`), run in float or, for a QAT checkpoint,
    /// with fake quantization. Models are recognized by their contents (or extension),
    /// anything else is read as a checkpoint.
    pub model: PathBuf,
    /// Data (its test split): a registry name (mnist, fashion-mnist) or a path to an image folder, a CIFAR-10/100
    /// binary folder, a `.npz` file or a folder of `.npy` files (`intq data info PATH` shows what
    /// intq makes of it). Default: the data the checkpoint was trained on, else fashion-mnist.
    /// Pictures are converted to the input the checkpoint records (size, channels, resize rule);
    /// data with another class count is refused.
    #[arg(long)]
    pub data: Option<String>,
    /// Directory with the IDX files (default: intq's data cache, see `intq data fetch`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub data_flags: crate::data_cmd::DataFlags,
    /// The QAT checkpoint the model was converted from: adds float and fake-quant accuracy,
    /// top-1 mismatches, LSB differences and the per-layer table (MODEL must be a model). The
    /// table has one row per activation the engine materializes, in graph order: SQNR against
    /// float and fake-quant, the largest code difference and how many codes differ, so the first
    /// row that differs is where the integer model departs from the fake-quant one. For
    /// checkpoints of imported ONNX networks (`qat --from MODEL.onnx`) as for the zoo's.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Evaluate the first N test images only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Where a checkpoint runs: cpu or wgpu[:N] (a GPU, in builds with the `wgpu` feature; see
    /// `intq train --help`). Models and `--compare` run on the CPU, exactly.
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = crate::train_cmd::parse_device)]
    pub device: intq_train::device::DeviceSpec,
}

#[derive(clap::Args, Debug)]
pub struct PtqArgs {
    /// Float checkpoint (`intq train --out ...`).
    #[arg(long)]
    pub from: PathBuf,
    /// Calibration images (the first N of the training split).
    #[arg(long, default_value_t = 1000)]
    pub calib: usize,
    /// minmax, or percentile (clip activation ranges at --percentile).
    #[arg(long, default_value = "minmax")]
    pub method: String,
    /// Upper percentile for --method percentile (the lower one is 100 - P).
    #[arg(long, default_value_t = 99.99)]
    pub percentile: f64,
    /// uint8 or int8.
    #[arg(long, default_value = "uint8")]
    pub scheme: String,
    /// Per-output-channel weight ranges (int8 only).
    #[arg(long)]
    pub per_channel: bool,
    #[arg(long, default_value_t = 8)]
    pub bits_w: u8,
    #[arg(long, default_value_t = 8)]
    pub bits_a: u8,
    /// Data (its training split calibrates): a registry name (mnist, fashion-mnist) or a path to an image folder, a CIFAR-10/100
    /// binary folder, a `.npz` file or a folder of `.npy` files (`intq data info PATH` shows what
    /// intq makes of it). Default: the data the checkpoint was trained on, else fashion-mnist.
    /// Pictures are converted to the input the checkpoint records (size, channels, resize rule);
    /// data with another class count is refused.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub data_flags: crate::data_cmd::DataFlags,
    /// The `.intq` model to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Where calibration runs: cpu or wgpu[:N] (a GPU, in builds with the `wgpu` feature; see
    /// `intq train --help`).
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = crate::train_cmd::parse_device)]
    pub device: intq_train::device::DeviceSpec,
    /// `--from MODEL.onnx` only: the normalization (p/255 - M) / S the ONNX model's input
    /// expects (none, imagenet, M/S or M0,M1,M2/S0,S1,S2; default none), folded into the
    /// model's input as `intq qat --from` folds it. A checkpoint records its own.
    #[arg(long, value_name = "SPEC", value_parser = crate::train_cmd::parse_normalize)]
    pub normalize: Option<intq_data::Normalize>,
}

/// `intq qat-export`'s options (a hidden, deprecated spelling of `intq convert --codes`).
#[derive(clap::Args, Debug)]
pub struct QatExportArgs {
    #[arg(long)]
    ckpt: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    float_edges: bool,
}

/// `intq train-eval`'s options (a hidden, deprecated spelling of `intq eval CKPT`).
#[derive(clap::Args, Debug)]
pub struct TrainEvalArgs {
    #[arg(long)]
    ckpt: PathBuf,
    #[arg(long)]
    data: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    limit_test: Option<usize>,
}

#[derive(clap::Subcommand)]
pub enum ConvertCommand {
    /// Convert a QAT checkpoint (CKPT) into an integer-only `.intq` model.
    Convert(ConvertArgs),
    /// Test accuracy of a model (integer engine) or of a checkpoint (float, or fake-quant for
    /// QAT); with --compare, a model against its QAT checkpoint: float vs fake-quant vs int8.
    Eval(EvalArgs),
    /// Post-training quantization of a float checkpoint into a `.intq` model (the baseline
    /// for QAT).
    Ptq(PtqArgs),
    /// Deprecated: `intq convert CKPT --out MODEL --codes`.
    #[command(hide = true)]
    QatExport(QatExportArgs),
    /// Deprecated: `intq eval CKPT`.
    #[command(hide = true)]
    TrainEval(TrainEvalArgs),
}

pub fn run(cmd: ConvertCommand) -> Result<()> {
    match cmd {
        ConvertCommand::Convert(a) => {
            // Pixels in, codes out unless --float-edges (--codes only spells out the default).
            let m = convert(&a.ckpt, &a.out, a.scheme.as_deref(), a.float_edges)?;
            println!(
                "wrote {} ({} ops, {} bytes)",
                a.out.display(),
                m.graph().ops().len(),
                file_size(&a.out)
            );
            Ok(())
        }
        ConvertCommand::Eval(a) => eval(a),
        ConvertCommand::Ptq(a)
            if crate::onnx_cmd::is_onnx(&a.from)
                || crate::onnx_cmd::is_graph_checkpoint(&a.from) =>
        {
            crate::onnx_cmd::ptq(
                &a.from,
                a.data.as_deref(),
                a.data_dir.as_deref(),
                a.calib,
                &a.method,
                &a.scheme,
                a.per_channel,
                a.bits_a,
                a.bits_w,
                a.normalize.as_ref(),
                &a.out,
            )
        }
        ConvertCommand::Ptq(a) => {
            if let Some(n) = &a.normalize {
                bail!(
                    "--normalize {n}: {} is a checkpoint, which records its own normalization \
                     (--normalize is for --from MODEL.onnx)",
                    a.from.display()
                );
            }
            let q = quant_cfg(&a.scheme, a.bits_a, a.bits_w, a.per_channel)?;
            let method = calib_method(&a.method, a.percentile)?;
            let l = fidelity::load_ckpt(&a.from)?;
            let (_, data, _) = fidelity::load_for_ckpt(
                &l,
                &a.from,
                a.data.as_deref(),
                a.data_dir.as_deref(),
                &a.data_flags,
            )?;
            drop(l);
            let device = a.device.open()?;
            let m = ptq_on(&a.from, &data.train, a.calib, method, &q, &a.out, &device)?;
            println!(
                "wrote {} ({} ops, {} bytes), calibrated on {} images ({})",
                a.out.display(),
                m.graph().ops().len(),
                file_size(&a.out),
                a.calib.min(data.train.len),
                a.method
            );
            Ok(())
        }
        ConvertCommand::QatExport(a) => {
            eprintln!(
                "warning: `intq qat-export` is deprecated; use `intq convert CKPT --out MODEL{}`",
                if a.float_edges { " --float-edges" } else { "" }
            );
            convert(&a.ckpt, &a.out, None, a.float_edges)?;
            println!("wrote {}", a.out.display());
            Ok(())
        }
        ConvertCommand::TrainEval(a) => {
            eprintln!("warning: `intq train-eval` is deprecated; use `intq eval CKPT [--limit N]`");
            eval_checkpoint(&EvalArgs {
                model: a.ckpt,
                data: a.data,
                data_dir: a.data_dir,
                data_flags: Default::default(),
                compare: None,
                limit: a.limit_test,
                json: false,
                device: Default::default(),
            })
        }
    }
}

pub fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

pub fn quant_cfg(scheme: &str, bits_a: u8, bits_w: u8, per_channel: bool) -> Result<QuantCfg> {
    Ok(match scheme {
        "uint8" => {
            if per_channel {
                bail!("--per-channel needs --scheme int8 (uint8 weights are per tensor)");
            }
            QuantCfg::uint8(bits_a, bits_w)?
        }
        "int8" => QuantCfg::int8(bits_a, bits_w, per_channel)?,
        other => bail!("unknown --scheme {other:?}; use uint8 or int8"),
    })
}

pub fn calib_method(method: &str, percentile: f64) -> Result<Calib> {
    match method {
        "minmax" => Ok(Calib::MinMax),
        "percentile" => {
            if !(50.0..=100.0).contains(&percentile) {
                bail!("--percentile {percentile} must be between 50 and 100");
            }
            Ok(Calib::Percentile(percentile))
        }
        other => bail!("unknown --method {other:?}; use minmax or percentile"),
    }
}

/// Loads a QAT checkpoint, exports it (with the trained scheme unless `scheme` overrides it) and
/// saves the model atomically.
pub fn convert(ckpt: &Path, out: &Path, scheme: Option<&str>, float_edges: bool) -> Result<Model> {
    if crate::onnx_cmd::is_graph_checkpoint(ckpt) {
        return crate::onnx_cmd::convert(ckpt, out, scheme, float_edges);
    }
    let l = fidelity::load_ckpt(ckpt)?;
    let trained = fidelity::qat_cfg(&l, ckpt)?;
    let q =
        match scheme {
            None => trained,
            Some(s) => {
                let want_signed = match s {
                    "uint8" => false,
                    "int8" => true,
                    other => bail!("unknown --scheme {other:?}; use uint8 or int8"),
                };
                if want_signed == trained.act_scheme.is_signed() {
                    trained
                } else {
                    eprintln!(
                    "warning: {} was trained with the {} scheme; converting to {s} re-quantizes \
                     the weights, so the model no longer computes what training simulated",
                    ckpt.display(),
                    if trained.act_scheme.is_signed() { "int8" } else { "uint8" }
                );
                    let (a, w) = (trained.act_scheme.bits(), trained.weight_scheme.bits());
                    let mut q = if want_signed {
                        QuantCfg::int8(a, w, trained.per_channel)?
                    } else {
                        QuantCfg::uint8(a, w)?
                    };
                    q.freeze_bn = trained.freeze_bn;
                    q
                }
            }
        };
    let model = fidelity::export_model(&l, &q, float_edges)
        .with_context(|| format!("converting {}", ckpt.display()))?;
    model.save(out)?;
    Ok(model)
}

/// Post-training quantization ([`intq_train::ptq`]) of the float checkpoint `from`, calibrated
/// on the first `calib` images of `train`; the model (float edges) is saved atomically to `out`.
pub fn ptq(
    from: &Path,
    train: &intq_data::Split,
    calib: usize,
    method: Calib,
    q: &QuantCfg,
    out: &Path,
) -> Result<Model> {
    ptq_on(from, train, calib, method, q, out, &fidelity::eval_device())
}

/// [`fidelity::load_ckpt`] onto `device` (the CPU's is that function itself).
fn load_ckpt_on(
    path: &Path,
    device: &intq_train::Device,
) -> Result<intq_train::checkpoint::Loaded> {
    if intq_train::device::is_flex(device) {
        return fidelity::load_ckpt(path);
    }
    if !path.exists() {
        bail!("checkpoint {} does not exist", path.display());
    }
    intq_train::checkpoint::load(path, intq_train::layers::LayerOpts::default(), device)
        .with_context(|| format!("reading checkpoint {}", path.display()))
}

/// [`ptq`] with the calibration on `device` (plain, not autodiff).
pub fn ptq_on(
    from: &Path,
    train: &intq_data::Split,
    calib: usize,
    method: Calib,
    q: &QuantCfg,
    out: &Path,
    device: &intq_train::Device,
) -> Result<Model> {
    let l = load_ckpt_on(from, device)?;
    if l.meta.quant.is_some() {
        bail!(
            "{} is a QAT checkpoint; convert it with `intq convert` (PTQ takes a float one)",
            from.display()
        );
    }
    let chw = train.images_chw();
    let mut graph = intq_train::ptq::ptq(
        &l.net,
        l.meta.arch,
        &fidelity::image_set_chw(train, &chw),
        calib,
        method,
        q,
        device,
    )
    .with_context(|| format!("quantizing {}", from.display()))?;
    fidelity::record_input(&mut graph, &l)?;
    let model = Model::new(graph).with_context(|| format!("quantizing {}", from.display()))?;
    model.save(out)?;
    Ok(model)
}

/// The input of an image classifier model: its one input's NHWC shape and its output's class
/// count, brought to that size by the resize rule the model records (else stretched).
fn model_input(model: &Model, path: &Path) -> Result<fidelity::InputSpec> {
    let resize = match fidelity::model_input(model)? {
        Some(rec) => fidelity::parse_resize(&rec.resize)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => Default::default(),
    };
    let g = model.graph();
    let (&[i], &[o]) = (g.inputs(), g.outputs()) else {
        bail!(
            "{}: an image classifier has one input and one output",
            path.display()
        );
    };
    let (ti, to) = (g.tensor(i), g.tensor(o));
    match (&ti.shape[..], to.shape.last()) {
        (&[_, h, w, c], Some(&k)) => Ok(fidelity::InputSpec {
            shape: [c, h, w],
            classes: k,
            resize,
        }),
        _ => bail!(
            "{}: input of shape {:?} is not an NHWC picture batch",
            path.display(),
            ti.shape
        ),
    }
}

/// Whether `path` holds a model (`.intq` by its magic bytes or extension, `.tflite` by
/// extension) rather than a training checkpoint (safetensors).
fn is_model(path: &Path) -> Result<bool> {
    if intq_tflite::is_tflite_path(path) {
        return Ok(true);
    }
    let mut head = Vec::with_capacity(intq_engine::format::MAGIC.len());
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(intq_engine::format::MAGIC.len() as u64)
                .read_to_end(&mut head)
        })
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(head == intq_engine::format::MAGIC
        || path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("intq")))
}

fn eval(a: EvalArgs) -> Result<()> {
    let onnx_ckpt = a.compare.as_deref().unwrap_or(&a.model);
    if crate::onnx_cmd::is_graph_checkpoint(onnx_ckpt) {
        return crate::onnx_cmd::eval(
            &a.model,
            a.compare.as_deref(),
            a.data.as_deref(),
            a.data_dir.as_deref(),
            a.limit,
            a.json,
        );
    }
    if !is_model(&a.model)? {
        if let Some(c) = &a.compare {
            bail!(
                "--compare {}: {} is a checkpoint, not a model; --compare checks a converted \
                 model against its checkpoint (`intq eval MODEL.intq --compare {}`)",
                c.display(),
                a.model.display(),
                c.display()
            );
        }
        return eval_checkpoint(&a);
    }
    if a.device != intq_train::device::DeviceSpec::Cpu {
        bail!(
            "--device {}: {} is a model, which the integer engine runs on the CPU; --device \
             applies to checkpoints",
            a.device,
            a.model.display()
        );
    }
    let model = crate::tflite_cmd::load_model(&a.model)?;
    let recorded = a.compare.as_deref().and_then(fidelity::recorded_data);
    let name = fidelity::data_for(
        a.data.as_deref(),
        recorded.as_deref(),
        a.compare.as_deref().unwrap_or(&a.model),
    );
    let loaded = a.compare.as_deref().map(fidelity::load_ckpt).transpose()?;
    let input = match &loaded {
        Some(l) => fidelity::ckpt_input(l),
        None => model_input(&model, &a.model)?,
    };
    let what = a
        .compare
        .as_deref()
        .unwrap_or(&a.model)
        .display()
        .to_string();
    let opts = a
        .data_flags
        .resolve(loaded.as_ref().and_then(|l| l.meta.data.as_ref()), 0);
    let data = fidelity::load_for(&name, a.data_dir.as_deref(), &input, &what, &opts)?;
    let limit = a.limit.unwrap_or(data.test.len);
    let progress = !a.json;
    let model_name = a.model.display().to_string();
    match &a.compare {
        None => {
            let acc = fidelity::int_accuracy(&model, &data.test, limit, progress)?;
            let n = limit.min(data.test.len);
            if a.json {
                #[derive(Serialize)]
                struct Out<'a> {
                    model: &'a str,
                    images: usize,
                    int8_acc: f64,
                }
                let out = Out {
                    model: &model_name,
                    images: n,
                    int8_acc: acc,
                };
                println!("{}", serde_json::to_string(&out)?);
            } else {
                println!(
                    "{model_name}: top-1 accuracy {:.2}% on {n} {name} test images",
                    100.0 * acc,
                );
            }
        }
        Some(ckpt) => {
            let l = loaded.context("the checkpoint is loaded above")?;
            let q = fidelity::qat_cfg(&l, ckpt)?;
            let c = fidelity::compare(&l, q, &model, &data.test, limit, progress)?;
            if a.json {
                #[derive(Serialize)]
                struct Out<'a> {
                    model: &'a str,
                    checkpoint: &'a str,
                    #[serde(flatten)]
                    comparison: &'a fidelity::Comparison,
                }
                let out = Out {
                    model: &model_name,
                    checkpoint: &ckpt.display().to_string(),
                    comparison: &c,
                };
                println!("{}", serde_json::to_string(&out)?);
            } else {
                println!("{model_name} vs {} on {name}:", ckpt.display());
                fidelity::print_comparison(&c);
            }
        }
    }
    Ok(())
}

/// `intq eval CKPT`: the checkpoint's test accuracy as training measures it (float, or
/// fake-quantized for a QAT checkpoint).
fn eval_checkpoint(a: &EvalArgs) -> Result<()> {
    // The fake-quant pass runs on the kernel tier INTQ_ISA selects: refuse a bad value.
    intq_kernels::KernelTier::from_env().context("INTQ_ISA")?;
    let device = a.device.open()?;
    let l = load_ckpt_on(&a.model, &device)?;
    let (name, data, _) = crate::data_cmd::load_test_for_ckpt(
        &l,
        &a.model,
        a.data.as_deref(),
        a.data_dir.as_deref(),
        &a.data_flags,
    )?;
    let test = data.test.subset(a.limit.unwrap_or(data.test.len));
    let chw = test.images_chw();
    let acc = intq_train::evaluate(
        &l.net,
        &fidelity::image_set_chw(&test, &chw),
        l.meta.quant,
        256,
        &device,
    )
    .with_context(|| format!("evaluating {}", a.model.display()))?;
    let qat = l.meta.quant.is_some();
    if a.json {
        // The key is the one `intq eval --compare` reports for the same network.
        #[derive(Serialize)]
        struct Out<'a> {
            checkpoint: &'a str,
            images: usize,
            #[serde(skip_serializing_if = "Option::is_none")]
            float_acc: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            fq_acc: Option<f64>,
        }
        let out = Out {
            checkpoint: &a.model.display().to_string(),
            images: test.len,
            float_acc: (!qat).then_some(acc),
            fq_acc: qat.then_some(acc),
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{} ({}): top-1 accuracy {:.2}% on {} {name} test images",
            a.model.display(),
            if qat { "QAT, fake-quantized" } else { "float" },
            acc * 100.0,
            test.len
        );
        if let Some(d) = &l.meta.data {
            println!("{}", crate::data_cmd::describe_meta(d));
        }
    }
    Ok(())
}
