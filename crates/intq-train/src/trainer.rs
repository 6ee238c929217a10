//! The training loop shared by float pretraining and QAT fine-tuning: seeded shuffling, SGD with
//! momentum, weight decay, a cosine or one-cycle learning rate, optional label smoothing and
//! augmentation ([`crate::augment`]), evaluation, metrics as JSON lines, atomic checkpoints every
//! epoch (and every N steps if asked), resume (mid-epoch too), and a clear stop on a non-finite
//! loss.

use std::fs::OpenOptions;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};

use crate::augment::{self, Augment};
use crate::checkpoint::{self, CkptMeta};
use crate::dist::{self, Collective};
use crate::fake_quant::{host_vec, scalar};
use crate::layers::{Ctx, QuantCfg, RangeMode};
use crate::prefetch::{BatchSource, Prefetcher};
use crate::sgd::{self, SgdStep, Velocity};
use crate::shard::{self, StateLog, StateUpdate};
use crate::zoo::{Arch, Net};
use crate::TrainError;
use std::sync::Arc;

/// Images and labels in memory: `len` images of `channels x rows x cols` bytes each.
#[derive(Debug, Clone, Copy)]
pub struct ImageSet<'a> {
    pub images: &'a [u8],
    pub labels: &'a [u8],
    pub len: usize,
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
}

impl<'a> ImageSet<'a> {
    /// One-channel `rows x cols` images, one per label.
    pub fn gray(images: &'a [u8], labels: &'a [u8], rows: usize, cols: usize) -> Self {
        ImageSet {
            images,
            labels,
            len: labels.len(),
            channels: 1,
            rows,
            cols,
        }
    }

    fn pixels(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// Checks the buffers against the declared sizes.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.images.len() != self.len * self.pixels() || self.labels.len() != self.len {
            return Err(TrainError::Data(format!(
                "{} images of {}x{}x{} need {} bytes and {} labels, got {} and {}",
                self.len,
                self.channels,
                self.rows,
                self.cols,
                self.len * self.pixels(),
                self.len,
                self.images.len(),
                self.labels.len()
            )));
        }
        Ok(())
    }

    /// A batch as `[n, C, H, W]` floats in `[0, 1]` (`byte / 255`) and labels.
    pub fn batch(&self, idx: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        self.batch_augmented(idx, None, device)
    }

    /// [`ImageSet::batch`] with each image augmented by `aug`'s draws for its sample index.
    fn batch_augmented(
        &self,
        idx: &[usize],
        aug: Option<&AugmentDraws>,
        device: &Device,
    ) -> (Tensor<4>, Tensor<1, Int>) {
        let p = self.pixels();
        let mut x = Vec::with_capacity(idx.len() * p);
        let mut y = Vec::with_capacity(idx.len());
        for &i in idx {
            let px = self.images[i * p..(i + 1) * p]
                .iter()
                .map(|&b| b as f32 / 255.0);
            match aug {
                Some(a) => {
                    let img: Vec<f32> = px.collect();
                    let sample = a.ids.map_or(i, |ids| ids[i]);
                    let mut rng = augment::sample_rng(a.seed, a.epoch, sample);
                    x.extend(
                        a.augment
                            .apply(&img, self.channels, self.rows, self.cols, &mut rng),
                    );
                }
                None => x.extend(px),
            }
            y.push(self.labels[i] as i64);
        }
        let n = idx.len();
        (
            Tensor::from_data(
                TensorData::new(x, [n, self.channels, self.rows, self.cols]),
                device,
            ),
            Tensor::from_data(TensorData::new(y, [n]), device),
        )
    }
}

/// Settings of one training run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub arch: Arch,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate; [`TrainConfig::schedule`] says how it moves over the run.
    pub lr: f64,
    pub schedule: LrSchedule,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Label smoothing `ε` in `[0, 1)`: the target puts `1 - ε` on the label and spreads `ε`
    /// evenly over all classes ([`smoothed_cross_entropy`]); 0 is plain cross-entropy.
    pub label_smoothing: f64,
    pub seed: u64,
    /// `None`: float training; `Some`: QAT.
    pub quant: Option<QuantCfg>,
    /// Freeze BN (moving statistics only) from this epoch on (QAT).
    pub freeze_bn_after: Option<usize>,
    /// Freeze activation observers from this epoch on (QAT).
    pub freeze_observers_after: Option<usize>,
    pub out: PathBuf,
    /// JSON-lines metrics log.
    pub metrics: Option<PathBuf>,
    pub progress: bool,
    /// Stop after this many steps in total (tests, profiling).
    pub max_steps: Option<u64>,
    /// Data-parallel shards per batch (at least 1): each batch is cut into this many contiguous
    /// pieces that run forward and backward on their own threads, and the gradients are combined
    /// weighted by piece size (see [`crate::shard`] for what differs from one full-batch step:
    /// training-mode BN normalizes each piece with its own statistics, and each piece
    /// fake-quantizes with its own observer view). A fixed number, not the core count, so a seed
    /// gives the same run on any machine; 1 is the plain single-batch step.
    pub shards: usize,
    /// The data the run trains on (source, input, classes), recorded in the checkpoints (`None`:
    /// not recorded).
    pub data: Option<crate::checkpoint::DataMeta>,
    /// Augmentation of training batches (never of evaluation); the default is none.
    pub augment: Augment,
}

/// A run's augmentation with what its draws are seeded by (the sample index comes per image).
#[derive(Debug, Clone, Copy)]
struct AugmentDraws<'a> {
    augment: Augment,
    seed: u64,
    epoch: usize,
    /// For a batch read into its own buffer ([`TrainData::Stream`]): the sample index of each
    /// of its images, which the draws are seeded by.
    ids: Option<&'a [usize]>,
}

/// The training images: in memory, or read batch by batch from a [`BatchSource`] on a
/// background thread that keeps up to `depth` batches ready ([`crate::prefetch`]). Both give
/// the same batches, so the same run.
pub enum TrainData<'a> {
    Memory(&'a ImageSet<'a>),
    Stream {
        source: Arc<dyn BatchSource>,
        depth: usize,
    },
}

impl<'a, 'b: 'a> From<&'a ImageSet<'b>> for TrainData<'a> {
    fn from(s: &'a ImageSet<'b>) -> Self {
        TrainData::Memory(s)
    }
}

impl TrainData<'_> {
    /// A reader of this epoch's batches after the first `skip`, for a stream.
    fn prefetch(&self, order: &[usize], batch: usize, skip: usize) -> Option<Prefetcher> {
        match self {
            TrainData::Memory(_) => None,
            TrainData::Stream { source, depth } => {
                let batches = order.chunks(batch).skip(skip).map(<[usize]>::to_vec);
                Some(Prefetcher::start(source.clone(), batches.collect(), *depth))
            }
        }
    }
}

/// The next batch a prefetcher read, or an error saying why there is none.
fn next_batch(q: &mut Prefetcher) -> Result<Vec<u8>, TrainError> {
    match q.next_batch() {
        Some(Ok(px)) => Ok(px),
        Some(Err(e)) => Err(TrainError::Data(format!("reading a training batch: {e}"))),
        None => Err(TrainError::Data(
            "the training batch reader stopped before the epoch's end".into(),
        )),
    }
}

/// The CLI's default shard count: two, which fills two cores with the serial ops (see
/// [`crate::shard`]).
pub const DEFAULT_SHARDS: usize = 2;

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Summary {
    pub epochs_run: usize,
    pub steps: u64,
    pub final_train_loss: f64,
    pub test_accuracy: Option<f64>,
    /// Median wall time of one optimizer step, in milliseconds.
    pub median_step_ms: f64,
    pub epoch_seconds: Vec<f64>,
}

/// Where a run starts from: fresh weights, a float checkpoint (QAT), or a checkpoint to resume.
pub struct Start {
    pub net: Net,
    pub velocity: Velocity,
    /// Epochs already done in this run (resume).
    pub epoch: usize,
    /// Batches already done in epoch `epoch` (resume from a mid-epoch checkpoint); the epoch's
    /// order depends on the seed and epoch only, so the run continues with the next batch.
    pub epoch_batches: usize,
    pub step: u64,
}

impl Start {
    pub fn fresh(net: Net) -> Self {
        Start {
            net,
            velocity: Velocity::default(),
            epoch: 0,
            epoch_batches: 0,
            step: 0,
        }
    }
}

/// The order of epoch `epoch`'s samples. SplitMix64: the shuffle depends on the seed and epoch
/// only.
pub fn shuffled(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    use intq_engine::examples::Rng as _;
    let mut rng = intq_engine::examples::seeded(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9));
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Cosine learning rate over `total` steps.
pub fn cosine_lr(base: f64, step: u64, total: u64) -> f64 {
    let t = (step as f64 / total.max(1) as f64).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// How the learning rate moves from the first step to the last.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    /// From the peak at step 0, cosine-annealed to 0 ([`cosine_lr`]).
    Cosine,
    /// One cycle: a linear warm-up from `peak / ONE_CYCLE_DIV` to the peak over the first
    /// `warmup` fraction of the steps (in `(0, 1)`), then cosine-annealed to 0 ([`one_cycle_lr`]).
    /// The warm-up lets a fresh network with batch norm take a higher peak rate without
    /// diverging in its first steps.
    OneCycle { warmup: f64 },
}

/// The one-cycle schedule's starting rate is the peak divided by this.
pub const ONE_CYCLE_DIV: f64 = 25.0;

/// The warm-up fraction `--schedule onecycle` uses unless told otherwise.
pub const DEFAULT_WARMUP: f64 = 0.15;

impl LrSchedule {
    /// The rate of step `step` (0-based) of a `total`-step run peaking at `base`.
    pub fn lr(self, base: f64, step: u64, total: u64) -> f64 {
        match self {
            LrSchedule::Cosine => cosine_lr(base, step, total),
            LrSchedule::OneCycle { warmup } => one_cycle_lr(base, warmup, step, total),
        }
    }

    /// Checks the parameters (a warm-up fraction in `[0, 1)`).
    pub fn validate(self) -> Result<(), TrainError> {
        match self {
            LrSchedule::OneCycle { warmup } if !(0.0..1.0).contains(&warmup) => {
                Err(TrainError::Config(format!(
                    "one-cycle warm-up fraction must be in [0, 1), got {warmup}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// `cosine` or `onecycle`, as the CLI spells them.
    pub fn name(self) -> &'static str {
        match self {
            LrSchedule::Cosine => "cosine",
            LrSchedule::OneCycle { .. } => "onecycle",
        }
    }
}

/// One-cycle learning rate: rises linearly from `base / ONE_CYCLE_DIV` at step 0 to `base` at
/// step `warmup * total`, then falls along a cosine to 0 at step `total`.
pub fn one_cycle_lr(base: f64, warmup: f64, step: u64, total: u64) -> f64 {
    let total = total.max(1) as f64;
    let up = (warmup.clamp(0.0, 1.0) * total).round();
    let s = (step as f64).min(total);
    if s < up {
        let start = base / ONE_CYCLE_DIV;
        start + (base - start) * s / up
    } else {
        let t = (s - up) / (total - up).max(1.0);
        base * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
    }
}

/// Mean cross-entropy of logits `[N, K]` against integer labels.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let n = labels.dims()[0];
    let lp = log_softmax(logits, 1);
    lp.gather(1, labels.reshape([n, 1])).mean().neg()
}

/// Mean label-smoothed cross-entropy of logits `[N, K]`: the target distribution is
/// `(1 - eps)` on the label plus `eps / K` on every class, so the loss per sample is
/// `(1 - eps) * -log p[label] + eps * mean_k(-log p[k])`. It keeps the logits from growing
/// without bound on confidently-fitted samples (Szegedy et al. 2016). `eps = 0` is exactly
/// [`cross_entropy`].
pub fn smoothed_cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>, eps: f64) -> Tensor<1> {
    if eps == 0.0 {
        return cross_entropy(logits, labels);
    }
    let n = labels.dims()[0];
    let lp = log_softmax(logits, 1);
    let nll = lp.clone().gather(1, labels.reshape([n, 1])).mean().neg();
    let uniform = lp.mean().neg();
    nll.mul_scalar(1.0 - eps).add(uniform.mul_scalar(eps))
}

fn correct(logits: &Tensor<2>, labels: &[u8], idx: &[usize]) -> usize {
    let pred = logits.clone().detach().argmax(1);
    let pred: Vec<i64> = pred
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap_or_default();
    pred.iter()
        .zip(idx)
        .filter(|(&p, &i)| p == labels[i] as i64)
        .count()
}

/// Top-1 accuracy of `net` on `data` in evaluation mode (no autodiff, moving statistics,
/// observed ranges applied when `quant` is set).
pub fn evaluate(
    net: &Net,
    data: &ImageSet,
    quant: Option<QuantCfg>,
    batch: usize,
    device: &Device,
) -> Result<f64, TrainError> {
    data.validate()?;
    let net = net.valid();
    let ctx = Ctx::eval(quant);
    let plain = device.clone().inner();
    let mut ok = 0;
    let all: Vec<usize> = (0..data.len).collect();
    for chunk in all.chunks(batch.max(1)) {
        let (x, _) = data.batch(chunk, &plain);
        let logits = net.forward(x, &ctx)?;
        ok += correct(&logits, data.labels, chunk);
    }
    Ok(ok as f64 / data.len.max(1) as f64)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `cfg.epochs` epochs from `start` (the autodiff device), evaluating on `test` after each
/// epoch and writing a checkpoint to `cfg.out`. A non-finite loss stops the run with
/// [`TrainError::NonFinite`]; the checkpoint of the last completed epoch stays in place.
pub fn train(
    cfg: &TrainConfig,
    start: Start,
    train_set: &ImageSet,
    test: Option<&ImageSet>,
    device: &Device,
) -> Result<(Net, Summary), TrainError> {
    train_with_checkpoints(cfg, None, start, train_set, test, device)
}

/// [`train`], also writing the checkpoint every `ckpt_every` optimizer steps within an epoch
/// (besides the end of each epoch), so that a killed run loses at most that many steps.
pub fn train_with_checkpoints(
    cfg: &TrainConfig,
    ckpt_every: Option<u64>,
    start: Start,
    train_set: &ImageSet,
    test: Option<&ImageSet>,
    device: &Device,
) -> Result<(Net, Summary), TrainError> {
    train_observed(
        cfg,
        ckpt_every,
        Observer::default(),
        start,
        train_set,
        test,
        device,
    )
}

/// Extra reporting of a run (the CLI's training curve).
#[derive(Default)]
pub struct Observer<'a> {
    /// Also append `{"step":S,"epoch_f":E,"train_loss":L}` to the metrics log every this many
    /// steps: L is the mean loss of those steps, E the fractional epoch. Per-epoch lines alone
    /// give a curve of a handful of points.
    pub loss_every: Option<u64>,
    /// Called with the epoch number after each epoch's metrics line is written.
    pub on_epoch: Option<&'a mut dyn FnMut(usize)>,
}

/// [`train_with_checkpoints`] reporting to `obs` as well; the training images in memory or
/// streamed ([`TrainData`]).
pub fn train_observed<'d>(
    cfg: &TrainConfig,
    ckpt_every: Option<u64>,
    obs: Observer<'_>,
    start: Start,
    train_set: impl Into<TrainData<'d>>,
    test: Option<&ImageSet>,
    device: &Device,
) -> Result<(Net, Summary), TrainError> {
    train_ranks(
        cfg,
        ckpt_every,
        obs,
        start,
        train_set,
        test,
        device,
        &dist::Single,
    )
}

/// [`train_observed`] as one rank of `comm` ([`crate::dist`]): every rank passes the same
/// arguments and runs `cfg.shards` pieces of each global batch of `cfg.batch_size`; the
/// checkpoints record `cfg.shards * comm.size()` shards. Rank 0 alone writes the checkpoints
/// and the metrics log, shows progress and evaluates (the others' summaries have no test
/// accuracy).
#[allow(clippy::too_many_arguments)]
pub fn train_ranks<'d>(
    cfg: &TrainConfig,
    ckpt_every: Option<u64>,
    mut obs: Observer<'_>,
    start: Start,
    train_set: impl Into<TrainData<'d>>,
    test: Option<&ImageSet>,
    device: &Device,
    comm: &dyn Collective,
) -> Result<(Net, Summary), TrainError> {
    let lead = comm.rank() == 0;
    // What the checkpoints record: the run's shards in all, which fix its arithmetic.
    let rec_cfg = &TrainConfig {
        shards: cfg.shards * comm.size(),
        ..cfg.clone()
    };
    let data: TrainData = train_set.into();
    // A stream's set has its labels and shape but no pixels: its batches come from the reader.
    let header;
    let train_set: &ImageSet = match &data {
        TrainData::Memory(s) => {
            s.validate()?;
            s
        }
        TrainData::Stream { source, .. } => {
            let [channels, rows, cols] = source.shape();
            header = ImageSet {
                images: &[],
                labels: source.labels(),
                len: source.len(),
                channels,
                rows,
                cols,
            };
            if header.labels.len() != header.len {
                return Err(TrainError::Data(format!(
                    "{} images but {} labels",
                    header.len,
                    header.labels.len()
                )));
            }
            &header
        }
    };
    if ckpt_every == Some(0) {
        return Err(TrainError::Config(
            "checkpoint interval must be at least 1 step".into(),
        ));
    }
    if cfg.shards == 0 {
        return Err(TrainError::Config("shards must be at least 1".into()));
    }
    cfg.schedule.validate()?;
    if !(0.0..1.0).contains(&cfg.label_smoothing) {
        return Err(TrainError::Config(format!(
            "label smoothing must be in [0, 1), got {}",
            cfg.label_smoothing
        )));
    }
    if cfg.batch_size == 0 || train_set.len == 0 {
        return Err(TrainError::Config(
            "empty training set or batch size 0".into(),
        ));
    }
    crate::zoo::check_input(cfg.arch, train_set)?;
    let steps_per_epoch = train_set.len.div_ceil(cfg.batch_size) as u64;
    let total_steps = steps_per_epoch * cfg.epochs as u64;
    if start.epoch < cfg.epochs && start.epoch_batches as u64 >= steps_per_epoch {
        return Err(TrainError::Config(format!(
            "the run to resume is {} batches into epoch {}, but an epoch here has {} batches; \
             resume with the same data and batch size",
            start.epoch_batches,
            start.epoch + 1,
            steps_per_epoch
        )));
    }
    let mut net = start.net;
    let mut vel = start.velocity;
    let mut step = start.step;
    // Learned ranges: the observers get their parameters now (idle until started), and are
    // started from the EMA after each step once the quant delay is over (see below).
    let learned = cfg.quant.filter(|q| q.ranges != RangeMode::Ema);
    if let Some(q) = cfg.quant {
        net.set_range_mode(q.ranges, device)?;
    }
    let mut ranges_started = learned.is_none();
    dist::check_same(comm, &net, &vel, "at the start")?;
    let mut metrics = match cfg.metrics.as_ref().filter(|_| lead) {
        Some(p) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| TrainError::Io(format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    let mut step_ms = Vec::new();
    let mut epoch_seconds = Vec::new();
    let mut last_loss = f64::NAN;
    let mut test_acc = None;
    let mut epochs_run = 0;
    let loss_every = obs.loss_every.filter(|&k| k > 0);
    let (mut win_sum, mut win_n) = (0.0f64, 0u64);
    'epochs: for epoch in start.epoch..cfg.epochs {
        let order = shuffled(train_set.len, cfg.seed, epoch);
        let aug = (!cfg.augment.is_none()).then_some(AugmentDraws {
            augment: cfg.augment,
            seed: cfg.seed,
            epoch,
            ids: None,
        });
        let quant = cfg.quant.map(|mut q| {
            q.freeze_bn |= cfg.freeze_bn_after.is_some_and(|e| epoch >= e);
            q.freeze_observers |= cfg.freeze_observers_after.is_some_and(|e| epoch >= e);
            q
        });
        let bar = if cfg.progress && lead {
            let b = ProgressBar::new(steps_per_epoch);
            b.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
            b
        } else {
            ProgressBar::hidden()
        };
        let t_epoch = Instant::now();
        let (mut loss_sum, mut seen, mut ok) = (0.0f64, 0usize, 0usize);
        let skip = if epoch == start.epoch {
            start.epoch_batches
        } else {
            0
        };
        bar.inc(skip as u64);
        let mut queue = data.prefetch(&order, cfg.batch_size, skip);
        for (batch_no, idx) in order.chunks(cfg.batch_size).enumerate().skip(skip) {
            if cfg.max_steps.is_some_and(|m| step >= m) {
                // Stopped inside the epoch: keep what was trained, as a resumable mid-epoch
                // checkpoint, since the summary names the file.
                if seen > 0 {
                    last_loss = loss_sum / seen as f64;
                    dist::check_same(comm, &net, &vel, "before a checkpoint")?;
                    if lead {
                        let meta = ckpt_meta(rec_cfg, epoch, batch_no, step, None);
                        checkpoint::save(&cfg.out, &net, &vel, &meta)?;
                    }
                }
                break 'epochs;
            }
            let t = Instant::now();
            // A streamed batch is its own set: images 0..n, augmented as samples `idx`.
            let (fetched, local, labels);
            let (train_set, idx, aug) = match queue.as_mut() {
                None => (*train_set, idx, aug),
                Some(q) => {
                    fetched = next_batch(q)?;
                    labels = idx
                        .iter()
                        .map(|&i| train_set.labels[i])
                        .collect::<Vec<u8>>();
                    local = (0..idx.len()).collect::<Vec<usize>>();
                    let view = ImageSet {
                        images: &fetched,
                        labels: &labels,
                        len: idx.len(),
                        ..*train_set
                    };
                    let aug = aug.map(|a| AugmentDraws {
                        ids: Some(idx),
                        ..a
                    });
                    (view, &local[..], aug)
                }
            };
            let train_set = &train_set;
            let ctx = Ctx {
                training: true,
                step,
                quant,
                exact: false,
                log: None,
            };
            let out = if comm.size() == 1 {
                let o = sharded_grads_with(
                    &net,
                    train_set,
                    idx,
                    cfg.shards,
                    cfg.label_smoothing,
                    aug.as_ref(),
                    &ctx,
                    device,
                )?;
                StepOut {
                    loss: o.loss,
                    correct: o.correct,
                    grads: o.grads,
                    updates: Updates::Local(o.updates),
                }
            } else {
                let o = distributed_grads(
                    &net,
                    train_set,
                    idx,
                    cfg.shards,
                    cfg.label_smoothing,
                    aug.as_ref(),
                    &ctx,
                    device,
                    comm,
                )?;
                if step == start.step && lead && cfg.progress {
                    eprintln!(
                        "{} ranks x {} shards: each step all-reduces {} bytes of gradients and \
                         gathers {} bytes of batch statistics",
                        comm.size(),
                        cfg.shards,
                        4 * dist::grad_values(&net),
                        8 * o.record_values
                    );
                }
                StepOut {
                    loss: o.ex.loss,
                    correct: o.ex.correct,
                    grads: o.ex.grads,
                    updates: Updates::Gathered(o.ex.pending),
                }
            };
            let loss_v = out.loss;
            if !loss_v.is_finite() {
                bar.abandon();
                return Err(TrainError::NonFinite(format!(
                    "loss {loss_v} at epoch {} step {step}; the last good checkpoint ({}) is \
                     kept; lower --lr or check the data",
                    epoch + 1,
                    cfg.out.display()
                )));
            }
            match out.updates {
                Updates::Local(u) => shard::apply_updates(u)?,
                Updates::Gathered(p) => p.apply()?,
            }
            let lr = cfg.schedule.lr(cfg.lr, step, total_steps);
            net = sgd::step(
                net,
                out.grads,
                &mut vel,
                SgdStep {
                    lr,
                    momentum: cfg.momentum,
                    weight_decay: cfg.weight_decay,
                },
            );
            ok += out.correct;
            seen += idx.len();
            loss_sum += loss_v * idx.len() as f64;
            step += 1;
            // The next step is past the quant delay: learned ranges take over from the EMA,
            // which has seen every batch so far (this one included, so with no delay the
            // first step quantizes with the EMA's range and the second with the learned one).
            // Here, between steps on this thread, because it writes parameters and state.
            if let Some(q) = learned {
                if !ranges_started && step >= q.quant_delay {
                    ranges_started = net.start_learned_ranges(q.act_scheme)?;
                }
            }
            win_sum += loss_v;
            win_n += 1;
            if let (Some(k), Some(m)) = (loss_every, metrics.as_mut()) {
                if step.is_multiple_of(k) {
                    let line = format!(
                        "{{\"step\":{step},\"epoch_f\":{:.4},\"train_loss\":{:.6}}}",
                        epoch as f64 + (batch_no + 1) as f64 / steps_per_epoch as f64,
                        win_sum / win_n as f64
                    );
                    writeln!(m, "{line}")
                        .map_err(|e| TrainError::Io(format!("metrics log: {e}")))?;
                    (win_sum, win_n) = (0.0, 0);
                }
            }
            let ms = t.elapsed().as_secs_f64() * 1e3;
            step_ms.push(ms);
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4} acc {:.2}% {:.0} img/s",
                loss_sum / seen as f64,
                100.0 * ok as f64 / seen as f64,
                idx.len() as f64 / (ms / 1e3)
            ));
            let done = batch_no + 1;
            if ckpt_every.is_some_and(|k| step.is_multiple_of(k)) && (done as u64) < steps_per_epoch
            {
                dist::check_same(comm, &net, &vel, "before a checkpoint")?;
                if lead {
                    let meta = ckpt_meta(rec_cfg, epoch, done, step, None);
                    checkpoint::save(&cfg.out, &net, &vel, &meta)?;
                }
            }
        }
        bar.finish();
        let secs = t_epoch.elapsed().as_secs_f64();
        epoch_seconds.push(secs);
        last_loss = loss_sum / seen.max(1) as f64;
        test_acc = match test.filter(|_| lead) {
            Some(t) => Some(evaluate(&net, t, quant, 256, device)?),
            None => None,
        };
        epochs_run += 1;
        dist::check_same(comm, &net, &vel, "before a checkpoint")?;
        if lead {
            let meta = ckpt_meta(rec_cfg, epoch + 1, 0, step, test_acc);
            checkpoint::save(&cfg.out, &net, &vel, &meta)?;
        }
        let line = format!(
            "{{\"epoch\":{},\"step\":{},\"train_loss\":{:.6},\"train_accuracy\":{:.6},\"test_accuracy\":{},\"epoch_seconds\":{:.3},\"lr\":{:.6},\"qat\":{}}}",
            epoch + 1,
            step,
            last_loss,
            ok as f64 / seen.max(1) as f64,
            test_acc.map_or("null".to_string(), |a| format!("{a:.6}")),
            secs,
            cfg.schedule.lr(cfg.lr, step, total_steps),
            cfg.quant.is_some()
        );
        if cfg.progress && lead {
            eprintln!("{line}");
        }
        if let Some(m) = metrics.as_mut() {
            writeln!(m, "{line}").map_err(|e| TrainError::Io(format!("metrics log: {e}")))?;
        }
        if let Some(f) = obs.on_epoch.as_mut() {
            f(epoch + 1);
        }
    }
    Ok((
        net,
        Summary {
            epochs_run,
            steps: step,
            final_train_loss: last_loss,
            test_accuracy: test_acc,
            median_step_ms: median(&mut step_ms),
            epoch_seconds,
        },
    ))
}

/// What a checkpoint written after `step` steps records: `epoch` whole epochs done and
/// `epoch_batches` batches of the next (0 at an epoch's end, where `test_accuracy` is known).
fn ckpt_meta(
    cfg: &TrainConfig,
    epoch: usize,
    epoch_batches: usize,
    step: u64,
    test_accuracy: Option<f64>,
) -> CkptMeta {
    CkptMeta {
        arch: cfg.arch,
        epoch,
        epoch_batches,
        step,
        epochs: cfg.epochs,
        seed: cfg.seed,
        quant: cfg.quant,
        test_accuracy,
        shards: Some(cfg.shards),
        data: cfg.data.clone(),
    }
}

/// What the forward and backward passes of one batch produced, before the optimizer step.
pub struct BatchGrads {
    /// Mean loss over the batch (the shards' losses weighted by size).
    pub loss: f64,
    /// Correct top-1 predictions.
    pub correct: usize,
    /// Gradient of the mean loss, `sum_k (n_k / N) g_k`.
    pub grads: GradientsParams,
    /// Each shard's recorded state updates, in shard order, for [`shard::apply_updates`].
    pub updates: Vec<Vec<StateUpdate>>,
}

/// One step's results on the way to the optimizer, from this process's shards or from all ranks.
struct StepOut {
    loss: f64,
    correct: usize,
    grads: GradientsParams,
    updates: Updates,
}

/// A step's state updates, applied once the loss is known to be finite.
enum Updates {
    Local(Vec<Vec<StateUpdate>>),
    Gathered(dist::Pending),
}

struct ShardOut {
    loss: f64,
    correct: usize,
    grads: Option<GradientsParams>,
    updates: Vec<StateUpdate>,
}

/// Forward, loss and backward of one piece on `net`, recording state updates. The backward is
/// skipped on a non-finite loss (the caller stops).
fn run_shard(
    net: &Net,
    data: &ImageSet,
    idx: &[usize],
    smoothing: f64,
    aug: Option<&AugmentDraws>,
    ctx: &Ctx,
    device: &Device,
) -> Result<ShardOut, TrainError> {
    let log = StateLog::default();
    let ctx = Ctx {
        log: Some(&log),
        ..*ctx
    };
    let (x, y) = data.batch_augmented(idx, aug, device);
    let logits = net.forward(x, &ctx)?;
    let loss = smoothed_cross_entropy(logits.clone(), y, smoothing);
    let loss_v = scalar(&loss) as f64;
    let grads = loss_v
        .is_finite()
        .then(|| GradientsParams::from_grads(loss.backward(), net));
    Ok(ShardOut {
        loss: loss_v,
        correct: correct(&logits, data.labels, idx),
        grads,
        updates: log.into_updates(),
    })
}

/// Forward and backward of the batch `idx` of `data` in `shards` contiguous pieces, each on its
/// own thread (the first on this one) with its own copy of `net`'s autodiff leaves; gradients
/// combined in piece order weighted by piece size. State updates are recorded, not applied: pass
/// [`BatchGrads::updates`] to [`shard::apply_updates`]. One piece runs `net` itself on this
/// thread, exactly the unsharded step.
pub fn sharded_grads(
    net: &Net,
    data: &ImageSet,
    idx: &[usize],
    shards: usize,
    ctx: &Ctx,
    device: &Device,
) -> Result<BatchGrads, TrainError> {
    sharded_grads_smoothed(net, data, idx, shards, 0.0, ctx, device)
}

/// [`sharded_grads`] with the loss label-smoothed by `smoothing` ([`smoothed_cross_entropy`]).
pub fn sharded_grads_smoothed(
    net: &Net,
    data: &ImageSet,
    idx: &[usize],
    shards: usize,
    smoothing: f64,
    ctx: &Ctx,
    device: &Device,
) -> Result<BatchGrads, TrainError> {
    sharded_grads_with(net, data, idx, shards, smoothing, None, ctx, device)
}

/// [`sharded_grads_smoothed`] with the training images augmented by `aug`.
#[allow(clippy::too_many_arguments)]
fn sharded_grads_with(
    net: &Net,
    data: &ImageSet,
    idx: &[usize],
    shards: usize,
    smoothing: f64,
    aug: Option<&AugmentDraws>,
    ctx: &Ctx,
    device: &Device,
) -> Result<BatchGrads, TrainError> {
    let ranges = shard::pieces(idx.len(), shards);
    let outs = run_pieces(net, data, idx, &ranges, smoothing, aug, ctx, device)?;
    let n = idx.len() as f64;
    let weights: Vec<f64> = ranges.iter().map(|r| r.len() as f64 / n).collect();
    let loss = if outs.len() == 1 {
        outs[0].loss
    } else {
        outs.iter().zip(&weights).map(|(o, w)| o.loss * w).sum()
    };
    let correct = outs.iter().map(|o| o.correct).sum();
    let mut grads = Vec::with_capacity(outs.len());
    let mut updates = Vec::with_capacity(outs.len());
    for o in outs {
        if let Some(g) = o.grads {
            grads.push(g);
        }
        updates.push(o.updates);
    }
    let grads = if loss.is_finite() && grads.len() == weights.len() {
        shard::combine_grads(net, grads, &weights)
    } else {
        GradientsParams::new()
    };
    Ok(BatchGrads {
        loss,
        correct,
        grads,
        updates,
    })
}

/// A distributed step's exchanged results, with the size of the records it gathered.
struct DistStep {
    ex: dist::Exchanged,
    record_values: usize,
}

/// This rank's pieces of the global batch `idx` (cut into `shards * comm.size()` pieces, see
/// [`crate::dist`]), run as [`sharded_grads_with`] runs its pieces, then exchanged with the
/// other ranks.
#[allow(clippy::too_many_arguments)]
fn distributed_grads(
    net: &Net,
    data: &ImageSet,
    idx: &[usize],
    shards: usize,
    smoothing: f64,
    aug: Option<&AugmentDraws>,
    ctx: &Ctx,
    device: &Device,
    comm: &dyn Collective,
) -> Result<DistStep, TrainError> {
    let ranges = shard::pieces(idx.len(), shards * comm.size());
    let mine = &ranges[dist::rank_pieces(ranges.len(), shards, comm.rank())];
    let outs = run_pieces(net, data, idx, mine, smoothing, aug, ctx, device)?;
    let template = match outs.first() {
        Some(o) => o.updates.clone(),
        // No piece here (a batch shorter than the pieces): one sample's forward gives the
        // layout of the others' records; it adds nothing.
        None => run_shard(net, data, &idx[..1], smoothing, aug, ctx, device)?.updates,
    };
    let n = idx.len() as f64;
    let weights: Vec<f64> = ranges.iter().map(|r| r.len() as f64 / n).collect();
    let record_values = dist::record_values(&template, ranges.len());
    let local = outs
        .into_iter()
        .map(|o| dist::LocalPiece {
            loss: o.loss,
            correct: o.correct,
            grads: o.grads,
            updates: o.updates,
        })
        .collect();
    let ex = dist::exchange(net, comm, local, template, &weights, shards)?;
    Ok(DistStep { ex, record_values })
}

/// Forward and backward of the pieces `ranges` of `idx`, each on its own thread (the first on
/// this one) with its own copy of `net`'s autodiff leaves; one piece runs `net` itself on this
/// thread. Results in piece order.
#[allow(clippy::too_many_arguments)]
fn run_pieces(
    net: &Net,
    data: &ImageSet,
    idx: &[usize],
    ranges: &[Range<usize>],
    smoothing: f64,
    aug: Option<&AugmentDraws>,
    ctx: &Ctx,
    device: &Device,
) -> Result<Vec<ShardOut>, TrainError> {
    let outs: Vec<Result<ShardOut, TrainError>> = if ranges.is_empty() {
        Vec::new()
    } else if ranges.len() == 1 {
        vec![run_shard(
            net,
            data,
            &idx[ranges[0].clone()],
            smoothing,
            aug,
            ctx,
            device,
        )]
    } else {
        let nets: Vec<Net> = ranges.iter().map(|_| shard::detached_copy(net)).collect();
        std::thread::scope(|s| {
            let mut work = ranges.iter().zip(&nets);
            let (r0, n0) = work.next().expect("at least one piece");
            let handles: Vec<_> = work
                .map(|(r, n)| {
                    let idx = &idx[r.clone()];
                    s.spawn(move || run_shard(n, data, idx, smoothing, aug, ctx, device))
                })
                .collect();
            let mut outs = vec![run_shard(
                n0,
                data,
                &idx[r0.clone()],
                smoothing,
                aug,
                ctx,
                device,
            )];
            for h in handles {
                outs.push(
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                );
            }
            outs
        })
    };
    outs.into_iter().collect()
}

/// Loss and logits of one batch without a step (tests and profiling).
pub fn batch_logits(
    net: &Net,
    data: &ImageSet,
    idx: &[usize],
    ctx: &Ctx,
    device: &Device,
) -> Result<Vec<f32>, TrainError> {
    let (x, _) = data.batch(idx, device);
    Ok(host_vec(net.forward(x, ctx)?))
}
