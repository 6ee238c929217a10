//! `intq convert` (QAT checkpoint → integer `.intq` model), `intq eval` (accuracy of an integer
//! model, or the float / fake-quant / int8 comparison against its checkpoint) and `intq ptq`
//! (post-training quantization of a float checkpoint, the baseline QAT must beat).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use intq_engine::Model;
use intq_train::layers::QuantCfg;

use crate::fidelity::{self, Calib};

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// QAT checkpoint (`intq qat --out ...`).
    pub ckpt: PathBuf,
    /// The `.intq` model to write (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// uint8 (the paper's per-tensor scheme) or int8 (TFLite's, symmetric weights). Default:
    /// the scheme the checkpoint was trained with; another one re-quantizes the weights and
    /// loses the fake-quant ↔ int8 agreement.
    #[arg(long)]
    pub scheme: Option<String>,
    /// Read and return integer codes instead of f32 images in [0, 1] and f32 logits.
    #[arg(long)]
    pub codes: bool,
}

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The `.intq` model.
    pub model: PathBuf,
    /// Data set: mnist or fashion-mnist, its test split (default: the one the --compare
    /// checkpoint was trained on, else fashion-mnist).
    #[arg(long)]
    pub data: Option<String>,
    /// Directory with the IDX files (default: intq's data cache, see `intq data fetch`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The QAT checkpoint the model was converted from: adds float and fake-quant accuracy,
    /// top-1 mismatches, LSB differences and the per-layer SQNR table.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Evaluate the first N test images only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
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
    #[arg(long, default_value = "fashion-mnist")]
    pub data: String,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The `.intq` model to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Subcommand)]
pub enum ConvertCommand {
    /// Convert a QAT checkpoint into an integer-only `.intq` model.
    Convert(ConvertArgs),
    /// Accuracy of an integer model; with --compare, float vs fake-quant vs int8.
    Eval(EvalArgs),
    /// Post-training quantization of a float checkpoint (the baseline for QAT).
    Ptq(PtqArgs),
}

pub fn run(cmd: ConvertCommand) -> Result<()> {
    match cmd {
        ConvertCommand::Convert(a) => {
            let m = convert(&a.ckpt, &a.out, a.scheme.as_deref(), !a.codes)?;
            println!(
                "wrote {} ({} ops, {} bytes)",
                a.out.display(),
                m.graph().ops().len(),
                file_size(&a.out)
            );
            Ok(())
        }
        ConvertCommand::Eval(a) => eval(a),
        ConvertCommand::Ptq(a) => {
            let q = quant_cfg(&a.scheme, a.bits_a, a.bits_w, a.per_channel)?;
            let method = calib_method(&a.method, a.percentile)?;
            let data = fidelity::load_data(&a.data, a.data_dir.as_deref(), false)?;
            let m = ptq(&a.from, &data.train, a.calib, method, &q, &a.out)?;
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

/// Post-training quantization: calibrate a float checkpoint's observers, export, save.
pub fn ptq(
    from: &Path,
    train: &intq_data::Split,
    calib: usize,
    method: Calib,
    q: &QuantCfg,
    out: &Path,
) -> Result<Model> {
    let l = fidelity::load_ckpt(from)?;
    if l.meta.quant.is_some() {
        bail!(
            "{} is a QAT checkpoint; convert it with `intq convert` (PTQ takes a float one)",
            from.display()
        );
    }
    fidelity::calibrate(&l.net, train, calib, method)
        .with_context(|| format!("calibrating {}", from.display()))?;
    let model = fidelity::export_model(&l, q, true)
        .with_context(|| format!("quantizing {}", from.display()))?;
    model.save(out)?;
    Ok(model)
}

fn eval(a: EvalArgs) -> Result<()> {
    let model = Model::load(&a.model)?;
    let recorded = a.compare.as_deref().and_then(fidelity::recorded_data);
    let name = fidelity::data_for(
        a.data.as_deref(),
        recorded.as_deref(),
        a.compare.as_deref().unwrap_or(&a.model),
    );
    let data = fidelity::load_data(&name, a.data_dir.as_deref(), false)?;
    let limit = a.limit.unwrap_or(data.test.len);
    let progress = !a.json;
    match &a.compare {
        None => {
            let acc = fidelity::int_accuracy(&model, &data.test, limit, progress)?;
            let n = limit.min(data.test.len);
            if a.json {
                println!(
                    "{{\"model\":{},\"images\":{n},\"int8_acc\":{}}}",
                    fidelity::jstr(&a.model.display().to_string()),
                    fidelity::jnum(acc)
                );
            } else {
                println!(
                    "{}: top-1 accuracy {:.2}% on {n} {} test images",
                    a.model.display(),
                    100.0 * acc,
                    name
                );
            }
        }
        Some(ckpt) => {
            let l = fidelity::load_ckpt(ckpt)?;
            let q = fidelity::qat_cfg(&l, ckpt)?;
            let c = fidelity::compare(&l, q, &model, &data.test, limit, progress)?;
            if a.json {
                println!(
                    "{{\"model\":{},\"checkpoint\":{},{}}}",
                    fidelity::jstr(&a.model.display().to_string()),
                    fidelity::jstr(&ckpt.display().to_string()),
                    fidelity::comparison_json(&c)
                );
            } else {
                println!("{} vs {} on {}:", a.model.display(), ckpt.display(), name);
                fidelity::print_comparison(&c);
            }
        }
    }
    Ok(())
}
