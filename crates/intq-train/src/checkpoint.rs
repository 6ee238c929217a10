//! Checkpoints: one safetensors file holding every parameter and running state (BN statistics,
//! activation observers) by dotted path, the SGD momentum under `momentum/<path>`, and the run's
//! state (model, epoch, step, quantization settings) as string metadata. Written to a temp file
//! and renamed, so a crash never leaves a half-written checkpoint.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use intq_quant::QScheme;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::layers::{LayerOpts, QuantCfg};
use crate::sgd::{PathMapper, PathVisitor, Velocity};
use crate::zoo::{Arch, Net};
use crate::TrainError;

const FORMAT: &str = "intq-train-checkpoint-1";

/// The run state stored beside the tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct CkptMeta {
    pub arch: Arch,
    /// Epochs completed in the run that wrote this checkpoint.
    pub epoch: usize,
    /// Optimizer steps taken in that run.
    pub step: u64,
    /// Epochs that run was asked for (for `--resume`).
    pub epochs: usize,
    pub seed: u64,
    pub quant: Option<QuantCfg>,
    /// Test accuracy at that point, if evaluated.
    pub test_accuracy: Option<f64>,
}

fn scheme_str(s: QScheme) -> String {
    format!(
        "{},{},{},{}",
        s.bits(),
        s.is_signed() as u8,
        s.is_narrow() as u8,
        s.is_symmetric() as u8
    )
}

fn parse_scheme(s: &str) -> Option<QScheme> {
    let v: Vec<u8> = s
        .split(',')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() != 4 {
        return None;
    }
    QScheme::new(v[0], v[1] != 0, v[2] != 0, v[3] != 0).ok()
}

impl CkptMeta {
    fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("format".into(), FORMAT.into());
        m.insert("arch".into(), self.arch.name());
        m.insert("epoch".into(), self.epoch.to_string());
        m.insert("step".into(), self.step.to_string());
        m.insert("epochs".into(), self.epochs.to_string());
        m.insert("seed".into(), self.seed.to_string());
        if let Some(a) = self.test_accuracy {
            m.insert("test_accuracy".into(), a.to_string());
        }
        if let Some(q) = self.quant {
            m.insert("quant.act".into(), scheme_str(q.act_scheme));
            m.insert("quant.weight".into(), scheme_str(q.weight_scheme));
            m.insert(
                "quant.per_channel".into(),
                (q.per_channel as u8).to_string(),
            );
            m.insert("quant.delay".into(), q.quant_delay.to_string());
            m.insert("quant.freeze_bn".into(), (q.freeze_bn as u8).to_string());
            m.insert(
                "quant.freeze_observers".into(),
                (q.freeze_observers as u8).to_string(),
            );
        }
        m
    }

    fn from_map(m: &HashMap<String, String>, file: &Path) -> Result<Self, TrainError> {
        let bad = |what: &str| {
            TrainError::Checkpoint(format!(
                "{}: missing or malformed metadata field {what:?}",
                file.display()
            ))
        };
        if m.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(TrainError::Checkpoint(format!(
                "{}: not an intq training checkpoint (format tag {:?})",
                file.display(),
                m.get("format")
            )));
        }
        let get = |k: &str| m.get(k).ok_or_else(|| bad(k));
        let num = |k: &str| -> Result<u64, TrainError> { get(k)?.parse().map_err(|_| bad(k)) };
        let arch: Arch = get("arch")?.parse()?;
        let quant = match m.get("quant.act") {
            None => None,
            Some(a) => Some(QuantCfg {
                act_scheme: parse_scheme(a).ok_or_else(|| bad("quant.act"))?,
                weight_scheme: parse_scheme(get("quant.weight")?)
                    .ok_or_else(|| bad("quant.weight"))?,
                per_channel: num("quant.per_channel")? != 0,
                quant_delay: num("quant.delay")?,
                freeze_bn: num("quant.freeze_bn")? != 0,
                freeze_observers: num("quant.freeze_observers")? != 0,
            }),
        };
        Ok(CkptMeta {
            arch,
            epoch: num("epoch")? as usize,
            step: num("step")?,
            epochs: num("epochs")? as usize,
            seed: num("seed")?,
            quant,
            test_accuracy: m.get("test_accuracy").and_then(|s| s.parse().ok()),
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

/// Saves atomically: `<path>.tmp` then rename.
pub fn save(path: &Path, net: &Net, vel: &Velocity, meta: &CkptMeta) -> Result<(), TrainError> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, id, dims, data) in collect(net) {
        if let Some(v) = vel.by_id.get(&id) {
            let m = crate::fake_quant::host_vec(v.clone());
            tensors.push((format!("momentum/{name}"), dims.clone(), f32_bytes(&m)));
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
    let bytes = safetensors::tensor::serialize(views, Some(meta.to_map()))
        .map_err(|e| TrainError::Checkpoint(format!("serializing {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` via a temp file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let mut tmp = PathBuf::from(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    tmp.set_file_name(format!(".{name}.tmp"));
    let io = |e: std::io::Error, p: &Path| TrainError::Io(format!("{}: {e}", p.display()));
    fs::write(&tmp, bytes).map_err(|e| io(e, &tmp))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io(e, path)
    })
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

/// Loads a checkpoint written by [`save`] into a fresh network of the recorded architecture.
/// Every tensor of the network must be present with its shape; errors name the file and tensor.
pub fn load(path: &Path, opts: LayerOpts, device: &Device) -> Result<Loaded, TrainError> {
    let bytes = fs::read(path).map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        TrainError::Checkpoint(format!("{}: not a safetensors file: {e}", path.display()))
    })?;
    let meta_map = header.metadata().clone().unwrap_or_default();
    let meta = CkptMeta::from_map(&meta_map, path)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        TrainError::Checkpoint(format!("{}: not a safetensors file: {e}", path.display()))
    })?;
    let read = |name: &str, dims: &[usize]| -> Result<Vec<f32>, TrainError> {
        let t = st.tensor(name).map_err(|_| {
            TrainError::Checkpoint(format!("{}: tensor {name} is missing", path.display()))
        })?;
        if t.dtype() != Dtype::F32 || t.shape() != dims {
            return Err(TrainError::Checkpoint(format!(
                "{}: tensor {name} is {:?} {:?}, expected F32 {:?}",
                path.display(),
                t.dtype(),
                t.shape(),
                dims
            )));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let net = Net::new(meta.arch, opts, device);
    let mut err = None;
    let net = net.map(&mut PathMapper::new(
        |name: &str, dims: &[usize]| match read(name, dims) {
            Ok(v) => Some(v),
            Err(e) => {
                err.get_or_insert(e);
                None
            }
        },
    ));
    if let Some(e) = err {
        return Err(e);
    }
    let mut velocity = Velocity::default();
    for (name, id, dims, _) in collect(&net) {
        let key = format!("momentum/{name}");
        if st.tensor(&key).is_ok() {
            let v = read(&key, &dims)?;
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
