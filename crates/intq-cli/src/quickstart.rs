//! `intq quickstart`: the paper's whole loop on Fashion-MNIST (or MNIST) in one command — fetch
//! the data, train `small-cnn` in float, quantize it post-training (the baseline), fine-tune it
//! with QAT, convert it to an integer-only model, and compare float, PTQ, fake-quant and int8.
//!
//! The full recipe trains on the whole training split for a few epochs with a one-cycle
//! learning rate (warm-up, then cosine to 0) and label smoothing, then fine-tunes with QAT on
//! part of the split at a much lower rate, cosine-annealed; the test split is always whole.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use intq_data::Split;
use intq_train::checkpoint;
use intq_train::layers::{LayerOpts, RangeMode};
use intq_train::trainer::{train, LrSchedule, Start, TrainConfig};
use intq_train::{evaluate, train_device, Arch, Net};

use crate::convert_cmd::{convert, file_size, ptq, quant_cfg};
use crate::fidelity;
use intq_train::ptq::Calib;

#[derive(clap::Args, Debug)]
pub struct QuickstartArgs {
    /// Data set: fashion-mnist or mnist (fetched into the cache when missing).
    #[arg(long, default_value = "fashion-mnist")]
    pub data: String,
    /// Directory with the IDX files (default: intq's data cache).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the checkpoints and models go.
    #[arg(long, default_value = "intq-quickstart")]
    pub dir: PathBuf,
    /// CI size: a data subset and one short epoch per stage (the default is the full recipe:
    /// every training image, several float epochs, one QAT epoch, all 10,000 test images).
    #[arg(long)]
    pub tiny: bool,
    /// uint8 (the paper) or int8 (TFLite, per-channel weights).
    #[arg(long, default_value = "uint8")]
    pub scheme: String,
    /// Activation ranges in QAT: ema, minmax or lsq (see `intq qat --help`).
    #[arg(long, default_value = "ema", value_parser = crate::train_cmd::parse_ranges)]
    pub ranges: RangeMode,
    /// Print one JSON object on stdout at the end (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Data-parallel pieces per batch in both training stages (see `intq train --help`);
    /// `1` is the single-batch step the published quickstart numbers were measured with.
    #[arg(long, value_name = "N", default_value_t = intq_train::trainer::DEFAULT_SHARDS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub shards: usize,
}

/// Sizes and optimizer settings of one run. The full recipe is sized to finish in a few
/// minutes on 2 cores.
struct Recipe {
    /// Float training images (the first N of the training split).
    train_images: usize,
    /// QAT fine-tuning images (the first N).
    qat_images: usize,
    test_images: usize,
    float_epochs: usize,
    qat_epochs: usize,
    batch_size: usize,
    /// Peak learning rate of float training, reached after the one-cycle warm-up.
    lr: f64,
    /// Fraction of the float steps spent warming up.
    warmup: f64,
    /// Peak learning rate of QAT fine-tuning (cosine-annealed from the first step: the float
    /// network is already trained, so a warm-up would only spend steps).
    qat_lr: f64,
    /// Label smoothing of both stages.
    label_smoothing: f64,
    calib: usize,
    timing_images: usize,
}

const FULL: Recipe = Recipe {
    train_images: 60_000,
    qat_images: 20_000,
    test_images: 10_000,
    float_epochs: 5,
    qat_epochs: 1,
    batch_size: 128,
    lr: 0.15,
    warmup: 0.15,
    qat_lr: 0.005,
    label_smoothing: 0.1,
    calib: 1000,
    timing_images: 300,
};

const TINY: Recipe = Recipe {
    train_images: 256,
    qat_images: 256,
    test_images: 100,
    float_epochs: 1,
    qat_epochs: 1,
    batch_size: 128,
    lr: 0.05,
    warmup: 0.0,
    qat_lr: 0.005,
    label_smoothing: 0.0,
    calib: 64,
    timing_images: 5,
};

pub fn quickstart(a: QuickstartArgs) -> Result<()> {
    let t0 = Instant::now();
    // Training and the engine both run on the tier INTQ_ISA selects: refuse a bad one first.
    intq_kernels::KernelTier::from_env().context("INTQ_ISA")?;
    let r = if a.tiny { TINY } else { FULL };
    let mut q = quant_cfg(&a.scheme, 8, 8, a.scheme == "int8")?;
    q.ranges = a.ranges;
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    let log = |s: String| eprintln!("\n== {s}");
    log(format!("data: {}", a.data));
    let data = fidelity::load_data(&a.data, a.data_dir.as_deref(), true)?;
    let train_split: Split = data.train.subset(r.train_images);
    let test: Split = data.test.subset(r.test_images);
    let train_set = fidelity::image_set(&train_split);
    let test_set = fidelity::image_set(&test);
    let arch = Arch::SmallCnn;
    let float_ckpt = a.dir.join("float.ckpt");
    let qat_ckpt = a.dir.join("qat.ckpt");
    let ptq_model = a.dir.join("ptq.intq");
    let qat_model = a.dir.join("model.intq");

    log(format!(
        "1/5 float training of {arch}: {} epoch(s) on {} images, one-cycle learning rate \
         peaking at {}, label smoothing {}",
        r.float_epochs, train_split.len, r.lr, r.label_smoothing
    ));
    let device = train_device();
    device.seed(0);
    let cfg = TrainConfig {
        arch,
        epochs: r.float_epochs,
        batch_size: r.batch_size,
        lr: r.lr,
        momentum: 0.9,
        weight_decay: 5e-4,
        schedule: LrSchedule::OneCycle { warmup: r.warmup },
        label_smoothing: r.label_smoothing,
        seed: 0,
        quant: None,
        freeze_bn_after: None,
        freeze_observers_after: None,
        out: float_ckpt.clone(),
        metrics: Some(a.dir.join("float.metrics.jsonl")),
        progress: true,
        max_steps: None,
        shards: a.shards,
        data: Some(a.data.clone().into()),
        augment: Default::default(),
    };
    let t = Instant::now();
    let start = Start::fresh(Net::new(arch, LayerOpts::default(), &device));
    let (float_net, _) = train(&cfg, start, &train_set, None, &device)?;
    let float_acc = evaluate(&float_net, &test_set, None, 256, &device)?;
    let float_s = t.elapsed().as_secs_f64();
    drop(float_net);

    log(format!(
        "2/5 post-training quantization ({} calibration images, min/max)",
        r.calib
    ));
    let t = Instant::now();
    let ptq_m = ptq(
        &float_ckpt,
        &train_split,
        r.calib,
        Calib::MinMax,
        &q,
        &ptq_model,
    )?;
    let ptq_acc = fidelity::int_accuracy(&ptq_m, &test, test.len, true)?;
    let ptq_s = t.elapsed().as_secs_f64();

    log(format!(
        "3/5 quantization-aware fine-tuning: {} epoch(s) on {} images, learning rate {} \
         cosine-annealed",
        r.qat_epochs, r.qat_images, r.qat_lr
    ));
    let t = Instant::now();
    let loaded = checkpoint::load(&float_ckpt, LayerOpts::default(), &device)
        .with_context(|| format!("reading {}", float_ckpt.display()))?;
    let last = r.qat_epochs.saturating_sub(1);
    let qcfg = TrainConfig {
        epochs: r.qat_epochs,
        lr: r.qat_lr,
        schedule: LrSchedule::Cosine,
        quant: Some(q),
        // The last epoch runs with moving BN statistics and fixed ranges, so the weights are
        // tuned to exactly what conversion will freeze.
        freeze_bn_after: Some(last),
        freeze_observers_after: (r.qat_epochs > 1).then_some(last),
        out: qat_ckpt.clone(),
        metrics: Some(a.dir.join("qat.metrics.jsonl")),
        ..cfg
    };
    let qat_split = data.train.subset(r.qat_images);
    let qat_set = fidelity::image_set(&qat_split);
    train(&qcfg, Start::fresh(loaded.net), &qat_set, None, &device)?;
    let qat_s = t.elapsed().as_secs_f64();

    log("4/5 conversion to an integer-only model".into());
    let t = Instant::now();
    let model = convert(&qat_ckpt, &qat_model, None, true)?;
    let convert_s = t.elapsed().as_secs_f64();

    log(format!(
        "5/5 evaluation: float vs fake-quant vs int8 on {} test images",
        test.len
    ));
    let t = Instant::now();
    let l = fidelity::load_ckpt(&qat_ckpt)?;
    let c = fidelity::compare(&l, q, &model, &test, test.len, true)?;
    let eval_s = t.elapsed().as_secs_f64();
    let (int_ms, float_ms) = fidelity::time_engine(&model, &test, r.timing_images)?;
    let intq_bytes = file_size(&qat_model);
    let f32_bytes = fidelity::float_weight_bytes(&model);
    let total_s = t0.elapsed().as_secs_f64();
    // The training curve of both stages; a plot that cannot be drawn is not worth failing for.
    let curve = a.dir.join("curve.png");
    let logs = [
        a.dir.join("float.metrics.jsonl"),
        a.dir.join("qat.metrics.jsonl"),
    ];
    let title = format!("{arch} {} float + QAT", a.data);
    if let Err(e) = intq_cli::curve::write_curve(&logs, Some(&title), &curve) {
        eprintln!("warning: no training curve: {e:#}");
    }

    if a.json {
        #[derive(serde::Serialize)]
        struct Seconds {
            float: f64,
            ptq: f64,
            qat: f64,
            convert: f64,
            eval: f64,
            total: f64,
        }
        #[derive(serde::Serialize)]
        struct Out<'a> {
            data: &'a str,
            model: String,
            scheme: &'a str,
            ranges: &'a str,
            tiny: bool,
            train_images: usize,
            qat_images: usize,
            float_epochs: usize,
            qat_epochs: usize,
            float_acc: f64,
            ptq_acc: f64,
            qat_float_acc: f64,
            fq_acc: f64,
            int8_acc: f64,
            top1_mismatch: usize,
            max_lsb_diff: i64,
            test_images: usize,
            intq_bytes: u64,
            ptq_intq_bytes: u64,
            f32_weight_bytes: usize,
            int8_ms_per_image: f64,
            f32_ms_per_image: f64,
            seconds: Seconds,
            comparison: &'a fidelity::Comparison,
        }
        let out = Out {
            data: &a.data,
            model: arch.name().to_string(),
            scheme: &a.scheme,
            ranges: a.ranges.name(),
            tiny: a.tiny,
            train_images: train_split.len,
            qat_images: r.qat_images.min(data.train.len),
            float_epochs: r.float_epochs,
            qat_epochs: r.qat_epochs,
            float_acc,
            ptq_acc,
            qat_float_acc: c.float_acc,
            fq_acc: c.fq_acc,
            int8_acc: c.int8_acc,
            top1_mismatch: c.top1_mismatch,
            max_lsb_diff: c.max_lsb_diff,
            test_images: c.images,
            intq_bytes,
            ptq_intq_bytes: file_size(&ptq_model),
            f32_weight_bytes: f32_bytes,
            int8_ms_per_image: int_ms,
            f32_ms_per_image: float_ms,
            seconds: Seconds {
                float: float_s,
                ptq: ptq_s,
                qat: qat_s,
                convert: convert_s,
                eval: eval_s,
                total: total_s,
            },
            comparison: &c,
        };
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    let pct = |x: f64| format!("{:.2}%", 100.0 * x);
    println!(
        "\nintq quickstart: {arch} on {} ({} scheme, {} activation ranges), {} training images, \
         {} test images",
        a.data,
        a.scheme,
        a.ranges.name(),
        train_split.len,
        c.images
    );
    println!("  {:<40} {:>10}", "float (trained in f32)", pct(float_acc));
    println!(
        "  {:<40} {:>10}",
        format!("PTQ int8 ({} calibration images, min/max)", r.calib),
        pct(ptq_acc)
    );
    println!("  {:<40} {:>10}", "QAT fake-quant", pct(c.fq_acc));
    println!(
        "  {:<40} {:>10}",
        "QAT int8 (integer engine)",
        pct(c.int8_acc)
    );
    println!(
        "  {:<40} {:>10}",
        "fake-quant vs int8 top-1 mismatches",
        format!("{} / {}", c.top1_mismatch, c.images)
    );
    println!(
        "  {:<40} {:>10}",
        "fake-quant vs int8 max logit difference",
        format!("{} LSB", c.max_lsb_diff)
    );
    println!(
        "  {:<40} {:>10}",
        "  same, fake-quant in f32 (as trained)",
        format!(
            "{} / {}, {} LSB",
            c.f32_top1_mismatch, c.images, c.f32_max_lsb_diff
        )
    );
    println!(
        "  {:<40} {:>10}",
        "model size: .intq file / f32 weights",
        format!("{} / {} bytes", intq_bytes, f32_bytes)
    );
    println!(
        "  {:<40} {:>10}",
        "engine time per image: int8 / f32",
        format!(
            "{int_ms:.3} / {float_ms:.3} ms ({:.2}x)",
            float_ms / int_ms.max(1e-9)
        )
    );
    println!(
        "  {:<40} {:>10}",
        "wall time",
        format!(
            "{total_s:.0} s (float {float_s:.0}, PTQ {ptq_s:.0}, QAT {qat_s:.0}, convert {convert_s:.1}, eval {eval_s:.0})"
        )
    );
    println!("\nper-layer detail:");
    fidelity::print_comparison(&c);
    let d = a.dir.display();
    println!(
        "\nWrote {d}/float.ckpt, {d}/qat.ckpt, {d}/ptq.intq, {d}/model.intq and the training \
         curve {d}/curve.png. Try:"
    );
    println!("  intq inspect {d}/model.intq");
    println!(
        "  intq eval --data {} --compare {d}/qat.ckpt {d}/model.intq",
        a.data
    );
    Ok(())
}
