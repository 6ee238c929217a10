//! Checkpoints: one safetensors file holding every parameter and running state (BN statistics,
//! activation observers) by dotted path, the SGD momentum under `momentum/<path>`, and the run's
//! state (model, epoch, step, quantization settings) as string metadata. Written to a temp file
//! and renamed, so a crash never leaves a half-written checkpoint.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};

pub use crate::ckpt_file::DataMeta;
pub use crate::ckpt_file::FORMAT;
use crate::ckpt_file::{self, FileMeta, QuantFields, MOMENTUM};

use crate::layers::{LayerOpts, QuantCfg, RangeMode};
use crate::sgd::{PathMapper, PathVisitor, Velocity};
use crate::zoo::{Arch, Net};
use crate::TrainError;

/// The run state stored beside the tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct CkptMeta {
    pub arch: Arch,
    /// Epochs completed in the run that wrote this checkpoint.
    pub epoch: usize,
    /// Batches done in the unfinished epoch `epoch` (mid-epoch checkpoints, `--ckpt-every`);
    /// 0 at the end of an epoch.
    pub epoch_batches: usize,
    /// Optimizer steps taken in that run.
    pub step: u64,
    /// Epochs that run was asked for (for `--resume`).
    pub epochs: usize,
    pub seed: u64,
    pub quant: Option<QuantCfg>,
    /// Test accuracy at that point, if evaluated.
    pub test_accuracy: Option<f64>,
    /// `TrainConfig::shards` of that run (`None` when the file does not record it): a
    /// resumed run continues bit-exactly only with the same value.
    pub shards: Option<usize>,
    /// `TrainConfig::data` of that run (`None` in older files).
    pub data: Option<DataMeta>,
}

impl CkptMeta {
    /// The network's input `[channels, height, width]`: as recorded, else the architecture's.
    pub fn input_shape(&self) -> [usize; 3] {
        self.data
            .as_ref()
            .and_then(|d| d.input)
            .unwrap_or_else(|| self.arch.input_shape())
    }

    /// The classifier's class count: as recorded, else the architecture's.
    pub fn classes(&self) -> usize {
        self.data
            .as_ref()
            .and_then(|d| d.classes)
            .unwrap_or_else(|| self.arch.classes())
    }
}

impl CkptMeta {
    fn to_file(&self) -> FileMeta {
        FileMeta {
            arch: self.arch.name(),
            epoch: self.epoch,
            epoch_batches: self.epoch_batches,
            step: self.step,
            epochs: self.epochs,
            seed: self.seed,
            quant: self.quant.map(|q| QuantFields {
                act_scheme: q.act_scheme,
                weight_scheme: q.weight_scheme,
                per_channel: q.per_channel,
                quant_delay: q.quant_delay,
                freeze_bn: q.freeze_bn,
                freeze_observers: q.freeze_observers,
                ranges: q.ranges,
            }),
            test_accuracy: self.test_accuracy,
            shards: self.shards,
            data: self.data.clone(),
        }
    }

    fn from_file(m: &FileMeta, file: &Path) -> Result<Self, TrainError> {
        let arch: Arch = m
            .arch
            .parse()
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", file.display())))?;
        Ok(CkptMeta {
            arch,
            epoch: m.epoch,
            epoch_batches: m.epoch_batches,
            step: m.step,
            epochs: m.epochs,
            seed: m.seed,
            quant: m.quant.map(|q| QuantCfg {
                act_scheme: q.act_scheme,
                weight_scheme: q.weight_scheme,
                per_channel: q.per_channel,
                quant_delay: q.quant_delay,
                freeze_bn: q.freeze_bn,
                freeze_observers: q.freeze_observers,
                ranges: q.ranges,
            }),
            test_accuracy: m.test_accuracy,
            shards: m.shards,
            data: m.data.clone(),
        })
    }
}

/// All float tensors of `net` by path, with their ids.
fn collect(net: &Net) -> Vec<(String, burn::module::ParamId, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    let mut v = PathVisitor::new(|path: &str, id, dims, data| {
        out.push((path.to_string(), id, dims, data));
    });
    net.visit(&mut v);
    out
}

/// Saves atomically (see [`write_atomic`]).
pub fn save(path: &Path, net: &Net, vel: &Velocity, meta: &CkptMeta) -> Result<(), TrainError> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, id, dims, data) in collect(net) {
        if let Some(v) = vel.by_id.get(&id) {
            let m = crate::fake_quant::host_vec(v.clone());
            tensors.push((format!("{MOMENTUM}{name}"), dims.clone(), f32_bytes(&m)));
        }
        tensors.push((name, dims, f32_bytes(&data)));
    }
    let views = tensors
        .iter()
        .map(|(n, d, b)| {
            TensorView::new(Dtype::F32, d.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| TrainError::Checkpoint(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut file_meta = meta.to_file();
    // The network's input normalization is recorded with its data (absent: none).
    if let Some(d) = &mut file_meta.data {
        let n = net.normalize();
        d.normalize = (!n.is_none()).then(|| n.to_string());
    }
    let bytes = safetensors::tensor::serialize(views, Some(file_meta.to_map()))
        .map_err(|e| TrainError::Checkpoint(format!("serializing {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Test-only hook for `crates/intq-cli/tests/crash_resume.rs`, never set in normal use:
/// `INTQ_TEST_CKPT_PAUSE=N:STAGE` makes the N-th [`write_atomic`] of this process (1-based) print
/// `intq-test-hook: paused at STAGE` on stderr and sleep for two minutes at STAGE, one of
/// `partial` (half the temp file written), `synced` (temp file complete and fsynced, not yet
/// renamed) or `renamed` (renamed, directory not yet fsynced), so that the test can SIGKILL the
/// process exactly inside the checkpoint write window.
fn test_pause(write_no: u64, stage: &str) {
    let Ok(spec) = std::env::var("INTQ_TEST_CKPT_PAUSE") else {
        return;
    };
    if spec == format!("{write_no}:{stage}") {
        eprintln!("intq-test-hook: paused at {stage}");
        std::thread::sleep(Duration::from_secs(120));
    }
}

static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The temp file [`write_atomic`] writes beside `path`: `.<name>.tmp` in the same directory.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = PathBuf::from(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    tmp.set_file_name(format!(".{name}.tmp"));
    tmp
}

/// " (disk full or file size limit)" where the error says so: the usual cause a user can fix.
fn space_hint(e: &std::io::Error) -> &'static str {
    // ENOSPC and EFBIG have these numbers on every Unix intq builds on (Linux, the BSDs, macOS).
    match e.raw_os_error() {
        Some(28) | Some(27) if cfg!(unix) => " (disk full or file size limit reached)",
        _ => "",
    }
}

/// Writes `bytes` to `path` so that `path` is always either its old contents or all of `bytes`,
/// even across a kill or a power loss: the bytes go to a temp file in the same directory, which
/// is fsynced before the rename (else the rename could reach the disk before the data), then the
/// directory is fsynced so that the rename itself is durable. On any error the temp file is
/// removed and `path` is untouched; the error names `path` and says why.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let write_no = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let tmp = temp_path(path);
    let fail = |e: std::io::Error, what: &str| {
        let _ = fs::remove_file(&tmp);
        TrainError::Io(format!(
            "writing checkpoint {} failed ({what} {}): {e}{}; the previous checkpoint, if any, \
             is unchanged",
            path.display(),
            tmp.display(),
            space_hint(&e)
        ))
    };
    let mut f = File::create(&tmp).map_err(|e| fail(e, "creating"))?;
    let half = bytes.len() / 2;
    f.write_all(&bytes[..half])
        .map_err(|e| fail(e, "writing"))?;
    test_pause(write_no, "partial");
    f.write_all(&bytes[half..])
        .map_err(|e| fail(e, "writing"))?;
    f.sync_all().map_err(|e| fail(e, "syncing"))?;
    drop(f);
    test_pause(write_no, "synced");
    fs::rename(&tmp, path).map_err(|e| fail(e, "renaming"))?;
    test_pause(write_no, "renamed");
    sync_dir(path)
}

/// Makes the rename durable (Unix: fsync of the directory; elsewhere the OS offers no such call
/// on a directory). The rename is already in place, so a failure only means it might not
/// survive a power loss: worth reporting, but nothing is removed.
fn sync_dir(path: &Path) -> Result<(), TrainError> {
    if cfg!(unix) {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
            TrainError::Io(format!(
                "checkpoint {} written, but syncing its directory {} failed: {e}",
                path.display(),
                dir.display()
            ))
        })?;
    }
    Ok(())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A loaded checkpoint: the network (on `device`), its momentum and the run state.
pub struct Loaded {
    pub net: Net,
    pub velocity: Velocity,
    pub meta: CkptMeta,
}

/// Loads a checkpoint written by [`save`] into a fresh network of the recorded architecture
/// (with learned-range parameters when the recorded range mode has them; `opts.ranges` is
/// ignored).
/// The file must hold exactly the network's tensors with their shapes (momentum optional);
/// errors name the file and tensor. Parsing and the layout check are `ckpt_file`'s (fuzzed).
pub fn load(path: &Path, opts: LayerOpts, device: &Device) -> Result<Loaded, TrainError> {
    let bytes = fs::read(path).map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
    let file = ckpt_file::parse(&bytes, path).map_err(TrainError::Checkpoint)?;
    let meta = CkptMeta::from_file(&file.meta, path)?;
    // Every tensor of the network must be in the file, so a file smaller than the network's
    // state cannot be one of its checkpoints: refuse it before building (and allocating) the
    // network its metadata names.
    let need = meta.arch.state_len_for(meta.classes()).saturating_mul(4);
    if bytes.len() < need {
        return Err(TrainError::Checkpoint(format!(
            "{}: {} bytes cannot hold a {} network ({need} bytes of tensors); the file is \
             truncated or names the wrong model",
            path.display(),
            bytes.len(),
            meta.arch
        )));
    }
    // The recorded range mode decides whether the observers carry learned-range tensors.
    let opts = LayerOpts {
        ranges: meta.quant.map_or(RangeMode::Ema, |q| q.ranges),
        ..opts
    };
    if meta.input_shape()[0] != meta.arch.channels() {
        return Err(TrainError::Checkpoint(format!(
            "{}: records {}-channel inputs, but {} takes {}",
            path.display(),
            meta.input_shape()[0],
            meta.arch,
            meta.arch.channels()
        )));
    }
    let mut net = Net::with_classes(meta.arch, meta.classes(), opts, device);
    if let Some(n) = meta.data.as_ref().and_then(|d| d.normalize.as_deref()) {
        let n: intq_data::Normalize = n.parse().map_err(|e| {
            TrainError::Checkpoint(format!("{}: data.normalize: {e}", path.display()))
        })?;
        net.set_normalize(&n).map_err(|e| {
            TrainError::Checkpoint(format!("{}: data.normalize: {e}", path.display()))
        })?;
    }
    let layout: Vec<(String, Vec<usize>)> = collect(&net)
        .into_iter()
        .map(|(name, _, dims, _)| (name, dims))
        .collect();
    file.check_layout(&layout).map_err(TrainError::Checkpoint)?;
    let mut err = None;
    let net = net.map(&mut PathMapper::new(
        |name: &str, dims: &[usize]| match file.tensor(name, dims) {
            Ok(v) => Some(v),
            Err(e) => {
                err.get_or_insert(TrainError::Checkpoint(e));
                None
            }
        },
    ));
    if let Some(e) = err {
        return Err(e);
    }
    let mut velocity = Velocity::default();
    for (name, id, dims, _) in collect(&net) {
        let key = format!("{MOMENTUM}{name}");
        if file.contains(&key) {
            let v = file.tensor(&key, &dims).map_err(TrainError::Checkpoint)?;
            let n = v.len();
            velocity.by_id.insert(
                id,
                Tensor::from_data(TensorData::new(v, [n]), &device.clone().inner()),
            );
        }
    }
    Ok(Loaded {
        net,
        velocity,
        meta,
    })
}

/// The expected (path, shape) of every tensor of a fresh `arch` network: what
/// [`ckpt_file::CkptFile::check_layout`] checks a file against (the fuzz target's layout).
pub fn layout(arch: Arch, device: &Device) -> Vec<(String, Vec<usize>)> {
    collect(&Net::new(arch, LayerOpts::default(), device))
        .into_iter()
        .map(|(name, _, dims, _)| (name, dims))
        .collect()
}
