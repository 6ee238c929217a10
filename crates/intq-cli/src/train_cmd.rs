//! `intq` subcommands: float training and QAT fine-tuning. Checkpoints are evaluated by
//! `intq eval` and converted by `intq convert` (convert_cmd.rs).

use std::path::PathBuf;

use crate::fidelity;
use anyhow::{bail, Context, Result};
use intq_data::image_folder::{ImageFolderOptions, Resize};
use intq_data::Split;
use intq_train::augment::Augment;
use intq_train::checkpoint;
use intq_train::checkpoint::DataMeta;

use crate::data_cmd::{self, DataFlags, DataOpts, Loader, PREFETCH_DEPTH};
use intq_train::device::DeviceSpec;
use intq_train::dist::Collective;
use intq_train::layers::{LayerOpts, QuantCfg, RangeMode};
use intq_train::prefetch::BatchSource;
use intq_train::trainer::{train_ranks, Observer, Start, TrainConfig};
use intq_train::trainer::{ImageSet, TrainData};
use intq_train::{Arch, Net};
use std::sync::Arc;

/// Options every training command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Data: a registry name (mnist, fashion-mnist) or a path to an image folder, a CIFAR-10/100
    /// binary folder, a `.npz` file or a folder of `.npy` files; the format found is logged
    /// (`intq data info PATH` shows it without training). Default: the data the `--from` or
    /// resumed checkpoint was trained on, else fashion-mnist. The class count is the data's.
    #[arg(long, value_name = "SOURCE")]
    data: Option<String>,
    /// Directory with the registry data sets' IDX files (default: intq's data cache, see
    /// `intq data fetch`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    data_flags: DataFlags,
    /// How training pictures reach the trainer: memory (decode every picture up front),
    /// stream (image folders: decode batch by batch on a background thread, a few batches
    /// ahead of the step, for data larger than memory; the same run bit for bit) or auto
    /// (stream image folders whose decoded pixels would pass 2 GiB).
    #[arg(long, value_enum, default_value = "auto")]
    loader: Loader,
    /// Epochs of this run.
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Peak learning rate (see --schedule).
    #[arg(long)]
    lr: Option<f64>,
    /// Learning-rate schedule: cosine (from the peak, annealed to 0 over the run) or onecycle
    /// (a linear warm-up from peak/25 over the first --warmup of the steps, then cosine to 0).
    #[arg(long, default_value = "cosine", value_parser = ["cosine", "onecycle"])]
    schedule: String,
    /// onecycle's warm-up, as a fraction of the run's steps, in [0, 1).
    #[arg(long, default_value_t = intq_train::trainer::DEFAULT_WARMUP)]
    warmup: f64,
    /// Label smoothing in [0, 1): the training target moves this much probability from the
    /// label to all classes evenly (0: plain cross-entropy).
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// Seed of initialization and shuffling: the same seed repeats the run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on the first N training images only (quick runs).
    #[arg(long)]
    limit_train: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    limit_test: Option<usize>,
    /// Checkpoint written after every epoch (safetensors, atomic).
    #[arg(long)]
    out: PathBuf,
    /// Also write the checkpoint every STEPS optimizer steps within an epoch, so that a killed
    /// run resumes (`--resume`) from there, losing at most STEPS steps.
    #[arg(long, value_name = "STEPS", value_parser = clap::value_parser!(u64).range(1..))]
    ckpt_every: Option<u64>,
    /// Metrics log, one JSON object per epoch (default: OUT.metrics.jsonl). The training curve
    /// drawn from it is redrawn after every epoch as OUT.curve.png.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Also log the mean train loss of every STEPS steps to the metrics log (0: epochs only).
    #[arg(long, value_name = "STEPS", default_value_t = 50)]
    log_every: u64,
    /// Data-parallel shards per batch: each batch is split into N contiguous pieces that run
    /// forward and backward on their own threads (docs/training.md, "Data-parallel shards").
    /// A fixed number, not the core count, so a seed repeats the run on any machine; 1 is the
    /// plain single-batch step. Default: 2, or with --resume the value the checkpoint records
    /// (a bit-exact continuation needs the same value).
    #[arg(long, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    shards: Option<usize>,
    /// Augment the training images (never the test images): a comma list of crop:P (pad every
    /// side by P zero pixels, then cut out a random window of the input size) and flip (mirror
    /// left-right with probability 1/2), e.g. crop:4,flip; none by default. The draws come from
    /// --seed, the epoch and the image, so a seed repeats them. Recorded in the checkpoint:
    /// --resume and qat --from take the recorded SPEC unless given another.
    #[arg(long, value_name = "SPEC", value_parser = parse_augment)]
    augment: Option<Augment>,
    /// Input normalization (p/255 - M) / S per channel of the pixel bytes p: none, imagenet,
    /// M/S (every channel) or M0,M1,M2/S0,S1,S2. Set by `intq train` and recorded in the
    /// checkpoint, which qat, ptq, eval and convert apply; the converted model still reads raw
    /// uint8 pixels (docs/training.md, "Input normalization"). Default: none, or the recorded one.
    #[arg(long, value_name = "SPEC", value_parser = parse_normalize)]
    normalize: Option<intq_data::Normalize>,
    /// Continue the run whose checkpoint is OUT.
    #[arg(long)]
    resume: bool,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Stop after this many optimizer steps (profiling).
    #[arg(long, hide = true)]
    max_steps: Option<u64>,
    /// Where the steps run: cpu (burn's flex backend with intq's own CPU ops) or wgpu, wgpu:N,
    /// wgpu:integrated:N, wgpu:virtual:N, wgpu:cpu (a GPU, or a software Vulkan driver, through
    /// burn's wgpu backend; needs intq built with the `wgpu` feature). The checkpoint is the
    /// same file either way (docs/training.md, "Training on a GPU").
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = parse_device)]
    device: DeviceSpec,
}

/// A `--device` value (`intq_train::device`); a wgpu device in a build without the `wgpu`
/// feature is refused here, before any data is read.
pub fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    let spec: DeviceSpec = s
        .parse()
        .map_err(|e: intq_train::TrainError| e.to_string())?;
    if spec != DeviceSpec::Cpu && !intq_train::device::WGPU {
        return Err(
            "this intq was built without the `wgpu` feature; build it with \
                    `cargo build --release -p intq-cli --features wgpu`"
                .into(),
        );
    }
    Ok(spec)
}

/// The autodiff device of `spec`, opened, and logged on rank 0 when it is not the CPU.
fn open_device(spec: DeviceSpec, comm: &dyn Collective) -> Result<intq_train::Device> {
    let device = spec.open_autodiff()?;
    if spec != DeviceSpec::Cpu && comm.rank() == 0 {
        eprintln!("device: {}", spec.describe(&device));
    }
    Ok(device)
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Model: small-cnn, tiny-mobilenet (1x28x28 grey), resnet20 (3x32x32 RGB),
    /// mobilenet-v2[@WIDTH], resnet18 (RGB, any size from 8x8; 32x32 and up is sensible).
    #[arg(long, default_value = "small-cnn")]
    model: String,
    /// Fine-tune a float ONNX model (its graph and weights) instead of training --model from
    /// scratch; the checkpoint holds the model, and `intq qat --from CKPT` fine-tunes it with
    /// fake quantization next (docs/onnx.md).
    #[arg(long, value_name = "MODEL.onnx", conflicts_with_all = ["model", "input_size"])]
    from: Option<PathBuf>,
    /// Input size HxW the pictures are brought to (default: the model's own size where it has
    /// one, as above, else the data's). Grey pictures are replicated to RGB and RGB made grey
    /// as the model needs.
    #[arg(long, value_name = "HxW", value_parser = fidelity::parse_size)]
    input_size: Option<(usize, usize)>,
    /// How pictures of another size reach the input size: stretch (resize straight to HxW,
    /// changing the aspect ratio if it differs) or crop (scale to cover HxW keeping the aspect
    /// ratio, then cut out the centre).
    #[arg(long, default_value = "stretch", value_parser = fidelity::parse_resize)]
    resize: Resize,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
pub struct QatArgs {
    /// Float checkpoint to fine-tune.
    #[arg(long)]
    from: PathBuf,
    #[arg(long, default_value_t = 8)]
    bits_w: u8,
    #[arg(long, default_value_t = 8)]
    bits_a: u8,
    /// uint8 (the paper: uint8 activations and weights) or int8 (TFLite: symmetric int8 weights).
    /// Default: uint8, or int8 with --per-channel.
    #[arg(long)]
    scheme: Option<String>,
    /// Per-output-channel weight ranges (int8 scheme).
    #[arg(long)]
    per_channel: bool,
    /// Steps during which activation ranges are observed but not applied.
    #[arg(long, default_value_t = 0)]
    quant_delay: u64,
    /// Freeze batch norm (moving statistics only) from this epoch on.
    #[arg(long)]
    freeze_bn_after: Option<usize>,
    /// Freeze activation observers from this epoch on (learned ranges stop changing too).
    #[arg(long)]
    freeze_observers_after: Option<usize>,
    /// Activation ranges: ema (fixed by the observers' moving average), minmax (learned min and
    /// max, TensorFlow's gradient) or lsq (learned step size, zero point fixed). Learned ranges
    /// start from the EMA when the quant delay ends (docs/training.md, "Activation ranges").
    #[arg(long, default_value = "ema", value_parser = parse_ranges)]
    ranges: RangeMode,
    #[command(flatten)]
    common: Common,
}

/// `--augment` values.
pub fn parse_augment(s: &str) -> Result<Augment, String> {
    Augment::parse(s).map_err(|e| match e {
        intq_train::TrainError::Config(m) => m,
        e => e.to_string(),
    })
}

/// `--normalize` values.
pub fn parse_normalize(s: &str) -> Result<intq_data::Normalize, String> {
    s.parse()
}

/// Refuses a `--normalize` other than the one `net` (the checkpoint `what`) was trained with.
fn check_normalize(flag: Option<&intq_data::Normalize>, net: &Net, what: &str) -> Result<()> {
    let have = net.normalize();
    let Some(want) = flag else { return Ok(()) };
    let c = net.input.mean.len();
    if !want.fits(c) || want.per_channel(c) != have.per_channel(c) {
        bail!(
            "--normalize {want}: {what} was trained with --normalize {have}; a run that continues \
             it keeps its normalization (leave --normalize out)"
        );
    }
    Ok(())
}

/// `--ranges` values.
pub fn parse_ranges(s: &str) -> Result<RangeMode, String> {
    RangeMode::parse(s).ok_or_else(|| format!("unknown range mode {s:?}; use ema, minmax or lsq"))
}

// The options are boxed: they are large beside the other commands' (clippy's
// `large_enum_variant` on the CLI's command enum).
#[derive(clap::Subcommand)]
pub enum TrainCommand {
    /// Train a zoo model in float, writing a float checkpoint (--out).
    Train(Box<TrainArgs>),
    /// Fine-tune a float checkpoint (--from) with quantization-aware training, writing a QAT
    /// checkpoint (--out) for `intq convert`.
    Qat(Box<QatArgs>),
}

pub fn run(cmd: TrainCommand) -> Result<()> {
    // Training's fake-quant pass runs on the kernel tier INTQ_ISA selects: a bad value is an
    // error here, as for the engine's commands, not a silent fallback to the portable tier.
    intq_kernels::KernelTier::from_env().context("INTQ_ISA")?;
    // Under mpirun: one rank of a data-parallel run (refused where MPI is not built in).
    let comm = intq_train::dist::from_launcher()?;
    let res = match cmd {
        TrainCommand::Train(a) => run_train(*a, &*comm),
        TrainCommand::Qat(a) => run_qat(*a, &*comm),
    };
    // The other ranks wait in the next exchange: end them all, naming the rank that failed.
    if let (Err(e), true) = (&res, comm.size() > 1) {
        eprintln!("error: rank {} of {}: {e:#}", comm.rank(), comm.size());
        comm.abort(1);
    }
    res
}

/// Both splits, converted to the network's input, and their pixels as the trainer takes them.
struct Data {
    train: Split,
    test: Split,
    train_chw: Vec<u8>,
    test_chw: Vec<u8>,
    /// Where the training pixels come from when streamed (`train` then holds only labels).
    stream: Option<Arc<dyn BatchSource>>,
}

impl Data {
    /// `stream`, when given, already holds only the first `limit_train` training pictures.
    fn new(
        ds: intq_data::Dataset,
        limit_train: Option<usize>,
        limit_test: Option<usize>,
        stream: Option<Arc<dyn BatchSource>>,
    ) -> Self {
        let train = match stream {
            Some(_) => ds.train,
            None => ds.train.subset(limit_train.unwrap_or(usize::MAX)),
        };
        let test = ds.test.subset(limit_test.unwrap_or(usize::MAX));
        Data {
            train_chw: if stream.is_some() {
                Vec::new()
            } else {
                train.images_chw()
            },
            test_chw: test.images_chw(),
            train,
            test,
            stream,
        }
    }

    /// The trainer's view of the training images: `set` (this data's in memory), or the stream.
    fn feed<'a>(&self, set: &'a ImageSet<'a>) -> TrainData<'a> {
        match &self.stream {
            Some(s) => TrainData::Stream {
                source: s.clone(),
                depth: PREFETCH_DEPTH,
            },
            None => TrainData::Memory(set),
        }
    }
}

/// `name` for a network taking `input`: streamed when `loader` says so (see
/// [`data_cmd::open_stream`]), else loaded and converted by [`fidelity::load_for`].
fn load_train_data(
    name: &str,
    dir: Option<&std::path::Path>,
    input: &fidelity::InputSpec,
    what: &str,
    opts: &DataOpts,
    c: &Common,
) -> Result<(intq_data::Dataset, Option<Arc<dyn BatchSource>>)> {
    let [ch, h, w] = input.shape;
    let streamed = data_cmd::open_stream(
        name,
        dir,
        ch,
        Some((h, w)),
        input.resize,
        opts,
        c.loader,
        c.limit_train,
    )?;
    match streamed {
        // Another class count: the usual load says what differs.
        Some((ds, src)) if ds.test.num_classes() == input.classes => Ok((ds, Some(src))),
        _ => Ok((fidelity::load_for(name, dir, input, what, opts)?, None)),
    }
}

/// What a checkpoint records about the data of a run on `ds` (named `source`) with `input`,
/// read with `opts` and augmented by `augment`.
fn data_meta(
    source: &str,
    input: &fidelity::InputSpec,
    ds: &intq_data::Dataset,
    opts: &DataOpts,
    augment: Augment,
) -> DataMeta {
    let mut m = DataMeta {
        source: source.to_string(),
        input: Some(input.shape),
        classes: Some(input.classes),
        resize: Some(fidelity::resize_name(input.resize).to_string()),
        class_names: ds.class_names().to_vec(),
        augment: (!augment.is_none()).then(|| augment_spec(augment)),
        ..DataMeta::default()
    };
    opts.record(&mut m, format_of(ds));
    m
}

/// The format of a loaded data set (`None`: a registry data set).
fn format_of(ds: &intq_data::Dataset) -> Option<intq_data::Format> {
    match &ds.origin {
        intq_data::Origin::Path { format, .. } => Some(*format),
        intq_data::Origin::Registry(_) => None,
    }
}

/// `--augment`'s spelling of `a`, which [`parse_augment`] reads back.
pub fn augment_spec(a: Augment) -> String {
    let mut parts = Vec::new();
    if let Some(p) = a.crop {
        parts.push(format!("crop:{p}"));
    }
    if a.flip {
        parts.push("flip".to_string());
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(",")
    }
}

/// `--augment` when given, else what `recorded` (the checkpoint continued) applied, else none.
fn augment_for(flag: Option<Augment>, recorded: Option<&DataMeta>) -> Result<Augment> {
    match (flag, recorded.and_then(|d| d.augment.as_deref())) {
        (Some(a), _) => Ok(a),
        (None, Some(spec)) => {
            let a = parse_augment(spec)
                .map_err(|e| anyhow::anyhow!("the checkpoint's augmentation {spec:?}: {e}"))?;
            eprintln!("augment: {spec} (as recorded in the checkpoint)");
            Ok(a)
        }
        (None, None) => Ok(Augment::default()),
    }
}

/// The `--schedule` and `--warmup` flags as one schedule.
fn schedule(c: &Common) -> intq_train::trainer::LrSchedule {
    match c.schedule.as_str() {
        "onecycle" => intq_train::trainer::LrSchedule::OneCycle { warmup: c.warmup },
        _ => intq_train::trainer::LrSchedule::Cosine,
    }
}

fn config(c: &Common, arch: Arch, epochs: usize, lr: f64) -> TrainConfig {
    let mut m = c.out.clone().into_os_string();
    m.push(".metrics.jsonl");
    TrainConfig {
        arch,
        epochs: c.epochs.unwrap_or(epochs),
        batch_size: c.batch_size,
        lr: c.lr.unwrap_or(lr),
        momentum: c.momentum,
        weight_decay: c.weight_decay,
        schedule: schedule(c),
        label_smoothing: c.label_smoothing,
        seed: c.seed,
        quant: None,
        freeze_bn_after: None,
        freeze_observers_after: None,
        out: c.out.clone(),
        metrics: Some(c.metrics.clone().unwrap_or_else(|| m.into())),
        progress: !c.quiet,
        max_steps: c.max_steps,
        shards: c.shards.unwrap_or(intq_train::trainer::DEFAULT_SHARDS),
        data: None,
        augment: c.augment.unwrap_or_default(),
    }
}

/// The resumed start, checked against this run's model and quantization. The shard count
/// comes from the checkpoint unless `--shards` was given (then a different value is allowed,
/// with a warning that the continuation is no longer the uninterrupted run's).
/// Under several ranks the recorded count (the shards in all) is split between them, and rank 0
/// alone reports.
fn resume(
    cfg: &mut TrainConfig,
    shards_flag: Option<usize>,
    comm: &dyn Collective,
    device: &intq_train::Device,
) -> Result<Start> {
    let (world, lead) = (comm.size(), comm.rank() == 0);
    let loaded = checkpoint::load(&cfg.out, LayerOpts::default(), device)
        .with_context(|| format!("--resume: reading {}", cfg.out.display()))?;
    if loaded.meta.arch != cfg.arch || loaded.meta.quant != cfg.quant {
        bail!(
            "--resume: {} holds a {} run (quantization {:?}), not this {} run ({:?})",
            cfg.out.display(),
            loaded.meta.arch,
            loaded.meta.quant,
            cfg.arch,
            cfg.quant
        );
    }
    // Files from before shards existed were written by single-batch steps.
    let recorded = loaded.meta.shards.unwrap_or(1);
    let ranks = if world > 1 {
        format!(" on each of {world} ranks")
    } else {
        String::new()
    };
    let n = shards_flag.unwrap_or((recorded / world).max(1));
    cfg.shards = n;
    if n * world != recorded && lead {
        eprintln!(
            "warning: {} was trained with --shards {recorded}; continuing with --shards {n}{ranks} \
             trains a different network than the uninterrupted run",
            cfg.out.display()
        );
    }
    if lead {
        eprintln!(
            "resuming {} after epoch {} and {} more batches (step {}, {} shards{ranks})",
            cfg.out.display(),
            loaded.meta.epoch,
            loaded.meta.epoch_batches,
            loaded.meta.step,
            cfg.shards
        );
    }
    Ok(Start {
        net: loaded.net,
        velocity: loaded.velocity,
        epoch: loaded.meta.epoch,
        epoch_batches: loaded.meta.epoch_batches,
        step: loaded.meta.step,
    })
}

/// Runs the trainer, redrawing `OUT.curve.png` from the metrics log after every epoch and once
/// more when the run ends (also when it fails, to show where). A curve that cannot be drawn is
/// reported once and does not stop training.
fn train_with_curve(
    cfg: &TrainConfig,
    c: &Common,
    title: &str,
    start: Start,
    data: &Data,
    device: &intq_train::Device,
    comm: &dyn Collective,
) -> Result<intq_train::Summary> {
    let mut png = cfg.out.clone().into_os_string();
    png.push(".curve.png");
    let png = PathBuf::from(png);
    // Rank 0 writes the metrics log and draws the curve.
    let metrics = cfg.metrics.clone().filter(|_| comm.rank() == 0);
    let mut warned = false;
    let mut draw = || {
        let Some(m) = &metrics else { return };
        // A run stopped before its first log line (`--max-steps` inside an epoch with
        // `--log-every 0`) has nothing to draw yet; that is not worth a warning.
        if std::fs::metadata(m).map_or(true, |md| md.len() == 0) {
            return;
        }
        if let Err(e) = intq_cli::curve::write_curve(std::slice::from_ref(m), Some(title), &png) {
            if !warned {
                eprintln!("warning: training curve {} not drawn: {e:#}", png.display());
                warned = true;
            }
        }
    };
    let mut on_epoch = |_: usize| draw();
    let res = train_ranks(
        cfg,
        c.ckpt_every,
        Observer {
            loss_every: Some(c.log_every).filter(|&k| k > 0),
            on_epoch: Some(&mut on_epoch),
        },
        start,
        data.feed(&fidelity::image_set_chw(&data.train, &data.train_chw)),
        Some(&fidelity::image_set_chw(&data.test, &data.test_chw)),
        device,
        comm,
    );
    draw();
    Ok(res?.1)
}

fn finish(cfg: &TrainConfig, s: &intq_train::Summary) {
    println!(
        "{} epochs, {} steps: train loss {:.4}, test accuracy {}, median {:.1} ms/step, {} s/epoch; checkpoint {}",
        s.epochs_run,
        s.steps,
        s.final_train_loss,
        s.test_accuracy
            .map_or("n/a".into(), |a| format!("{:.2}%", a * 100.0)),
        s.median_step_ms,
        // No whole epoch (a --max-steps stop): no epoch time to report.
        match s.epoch_seconds.len() {
            0 => "n/a".to_string(),
            n => format!("{:.1}", s.epoch_seconds.iter().sum::<f64>() / n as f64),
        },
        cfg.out.display()
    );
}

fn run_train(a: TrainArgs, comm: &dyn Collective) -> Result<()> {
    let c = &a.common;
    if let Some(from) = &a.from {
        if !crate::onnx_cmd::is_onnx(from) {
            bail!(
                "--from {}: `intq train --from` fine-tunes a float ONNX model (.onnx)",
                from.display()
            );
        }
        check_imported(c)?;
        return crate::onnx_cmd::qat(&onnx_options(from, c, true));
    }
    let arch: Arch = a.model.parse()?;
    let mut cfg = config(c, arch, 15, 0.05);
    let recorded = if c.resume {
        fidelity::recorded_meta(&cfg.out)
    } else {
        None
    };
    let name = fidelity::data_for(
        c.data.as_deref(),
        recorded.as_ref().map(|d| d.source.as_str()),
        &cfg.out,
    );
    let dir = c.data_dir.as_deref();
    // A resumed run keeps the input it started with; a fresh one takes --input-size, else the
    // model's own size, else the data's, and the data's class count.
    let resumed = recorded.as_ref().and_then(|d| {
        Some(fidelity::InputSpec {
            shape: d.input?,
            classes: d.classes?,
            resize: d
                .resize
                .as_deref()
                .and_then(|r| fidelity::parse_resize(r).ok())
                .unwrap_or_default(),
        })
    });
    let data_opts = c.data_flags.resolve(recorded.as_ref(), c.seed);
    cfg.augment = augment_for(c.augment, recorded.as_ref())?;
    let mut stream = None;
    let fresh_stream = match resumed {
        Some(_) => None,
        None => data_cmd::open_stream(
            &name,
            dir,
            arch.channels(),
            a.input_size.or(arch.native_size()),
            a.resize,
            &data_opts,
            c.loader,
            c.limit_train,
        )?,
    };
    let (ds, input) = match (resumed, fresh_stream) {
        (Some(input), _) => {
            let what = cfg.out.display().to_string();
            let (ds, s) = load_train_data(&name, dir, &input, &what, &data_opts, c)?;
            stream = s;
            (ds, input)
        }
        (None, Some((ds, s))) => {
            stream = Some(s);
            let input = fidelity::InputSpec {
                shape: [arch.channels(), ds.train.rows, ds.train.cols],
                classes: ds.test.num_classes(),
                resize: a.resize,
            };
            (ds, input)
        }
        (None, None) => {
            let size = a.input_size.or(arch.native_size());
            let image = ImageFolderOptions {
                size,
                channels: Some(arch.channels()),
                resize: a.resize,
                ..ImageFolderOptions::default()
            };
            let opened = fidelity::load_opened_with(&name, dir, false, image, &data_opts)?;
            let stored = fidelity::stored_shape(&opened);
            let ds = opened.dataset;
            let (h, w) = size.unwrap_or((ds.train.rows, ds.train.cols));
            let input = fidelity::InputSpec {
                shape: [arch.channels(), h, w],
                classes: ds.train.num_classes().max(ds.test.num_classes()),
                resize: a.resize,
            };
            let what = format!("model {arch}");
            (
                fidelity::conform_dataset(ds, &input, &name, &what, &stored)?,
                input,
            )
        }
    };
    data_opts.check(format_of(&ds), &c.data_flags)?;
    cfg.data = Some(data_meta(&name, &input, &ds, &data_opts, cfg.augment));
    let data = Data::new(ds, c.limit_train, c.limit_test, stream);
    let device = open_device(c.device, comm)?;
    let start = if c.resume {
        let s = resume(&mut cfg, c.shards, comm, &device)?;
        check_normalize(c.normalize.as_ref(), &s.net, &cfg.out.display().to_string())?;
        s
    } else {
        device.seed(cfg.seed);
        let mut net = Net::with_classes(arch, input.classes, LayerOpts::default(), &device);
        net.set_normalize(&c.normalize.clone().unwrap_or_default())?;
        Start::fresh(net)
    };
    if let Some(d) = &mut cfg.data {
        let n = start.net.normalize();
        d.normalize = (!n.is_none()).then(|| n.to_string());
    }
    if comm.rank() == 0 {
        eprintln!(
            "input: {}x{}x{} (channels x height x width), {} classes",
            input.shape[0], input.shape[1], input.shape[2], input.classes
        );
    }
    let title = format!("{arch} {name} float");
    let s = train_with_curve(&cfg, c, &title, start, &data, &device, comm)?;
    if comm.rank() == 0 {
        finish(&cfg, &s);
    }
    Ok(())
}

/// Refuses the flags an imported network's training does not take.
fn check_imported(c: &Common) -> Result<()> {
    if c.device != DeviceSpec::Cpu {
        bail!(
            "--device {}: fine-tuning an ONNX model runs on the CPU only",
            c.device
        );
    }
    if c.loader == Loader::Stream {
        bail!(
            "--loader stream: an imported network trains from pictures decoded up front; leave \
             --loader out"
        );
    }
    Ok(())
}

/// The options of `intq train|qat --from` an imported network (or a float fine-tune's
/// checkpoint of one) trains with, its quantization flags at their defaults.
fn onnx_options<'a>(
    from: &'a std::path::Path,
    c: &'a Common,
    float: bool,
) -> crate::onnx_cmd::QatOptions<'a> {
    crate::onnx_cmd::QatOptions {
        from,
        data: c.data.as_deref(),
        data_dir: c.data_dir.as_deref(),
        epochs: c.epochs,
        batch_size: c.batch_size,
        lr: c.lr,
        momentum: c.momentum,
        weight_decay: c.weight_decay,
        seed: c.seed,
        limit_train: c.limit_train,
        limit_test: c.limit_test,
        out: &c.out,
        bits_w: 8,
        bits_a: 8,
        scheme: None,
        per_channel: false,
        quant_delay: 0,
        freeze_bn_after: None,
        normalize: c.normalize.as_ref(),
        resume: c.resume,
        augment: c.augment,
        metrics: c.metrics.as_deref(),
        shards: c.shards,
        max_steps: c.max_steps,
        schedule: schedule(c),
        label_smoothing: c.label_smoothing,
        ckpt_every: c.ckpt_every,
        log_every: c.log_every,
        freeze_observers_after: None,
        float,
    }
}

fn run_qat(a: QatArgs, comm: &dyn Collective) -> Result<()> {
    if crate::onnx_cmd::is_onnx(&a.from) || crate::onnx_cmd::is_graph_checkpoint(&a.from) {
        let c = &a.common;
        check_imported(c)?;
        if a.ranges != RangeMode::Ema {
            bail!(
                "--ranges {}: an imported network keeps its activation ranges by EMA only; \
                 leave --ranges out",
                a.ranges.name()
            );
        }
        return crate::onnx_cmd::qat(&crate::onnx_cmd::QatOptions {
            bits_w: a.bits_w,
            bits_a: a.bits_a,
            scheme: a.scheme.as_deref(),
            per_channel: a.per_channel,
            quant_delay: a.quant_delay,
            freeze_bn_after: a.freeze_bn_after,
            freeze_observers_after: a.freeze_observers_after,
            ..onnx_options(&a.from, c, false)
        });
    }
    let scheme = a
        .scheme
        .clone()
        .unwrap_or_else(|| if a.per_channel { "int8" } else { "uint8" }.to_string());
    let mut q = match scheme.as_str() {
        "uint8" => {
            if a.per_channel {
                bail!("--per-channel needs --scheme int8 (uint8 weights are per tensor)");
            }
            QuantCfg::uint8(a.bits_a, a.bits_w)?
        }
        "int8" => QuantCfg::int8(a.bits_a, a.bits_w, a.per_channel)?,
        other => bail!("unknown --scheme {other:?}; use uint8 or int8"),
    };
    q.quant_delay = a.quant_delay;
    q.ranges = a.ranges;
    let c = &a.common;
    let device = open_device(c.device, comm)?;
    let from = checkpoint::load(&a.from, LayerOpts::default(), &device)
        .with_context(|| format!("--from {}", a.from.display()))?;
    if from.meta.quant.is_some() {
        bail!(
            "--from {} is already a QAT checkpoint; pass the float one",
            a.from.display()
        );
    }
    check_normalize(
        c.normalize.as_ref(),
        &from.net,
        &format!("--from {}", a.from.display()),
    )?;
    // The data and options the float run recorded, unless given others (checkpoints that
    // record no split seed were drawn with seed 0).
    let input = fidelity::ckpt_input(&from);
    let data_opts = c.data_flags.resolve(from.meta.data.as_ref(), 0);
    let name = fidelity::data_for(
        c.data.as_deref(),
        from.meta.data.as_ref().map(|d| d.source.as_str()),
        &a.from,
    );
    let what = a.from.display().to_string();
    let dir = c.data_dir.as_deref();
    let (ds, stream) = load_train_data(&name, dir, &input, &what, &data_opts, c)?;
    data_opts.check(format_of(&ds), &c.data_flags)?;
    let mut cfg = config(c, from.meta.arch, 3, 0.005);
    // A resumed QAT run continues its own record; a fresh one takes the float run's.
    let recorded = if c.resume {
        fidelity::recorded_meta(&cfg.out)
    } else {
        from.meta.data.clone()
    };
    cfg.augment = augment_for(c.augment, recorded.as_ref())?;
    cfg.data = Some(data_meta(&name, &input, &ds, &data_opts, cfg.augment));
    let data = Data::new(ds, c.limit_train, c.limit_test, stream);
    cfg.quant = Some(q);
    cfg.freeze_bn_after = a.freeze_bn_after;
    cfg.freeze_observers_after = a.freeze_observers_after;
    let start = if c.resume {
        resume(&mut cfg, c.shards, comm, &device)?
    } else {
        // Fresh momentum: the fine-tuning run has its own schedule.
        Start::fresh(from.net)
    };
    let title = format!(
        "{} {} QAT {scheme}{} W{}/A{}{}",
        cfg.arch,
        name,
        if a.per_channel { " per-channel" } else { "" },
        a.bits_w,
        a.bits_a,
        match a.ranges {
            RangeMode::Ema => String::new(),
            r => format!(" ranges {}", r.name()),
        }
    );
    let s = train_with_curve(&cfg, c, &title, start, &data, &device, comm)?;
    if comm.rank() == 0 {
        finish(&cfg, &s);
    }
    Ok(())
}
