//! The checkpoint file format without burn: parsing a safetensors checkpoint, its run metadata and
//! the check of its tensors against a network's expected layout. Kept free of burn (only std,
//! `safetensors` and `intq-quant`) so that `fuzz/fuzz_targets/checkpoint.rs` compiles this file
//! directly and fuzzes the whole parsing layer at full speed; `checkpoint.rs` builds on it.

use std::collections::HashMap;
use std::path::Path;

use intq_quant::QScheme;
use safetensors::tensor::{Dtype, SafeTensors};

/// The `format` metadata tag of every checkpoint.
pub const FORMAT: &str = "intq-train-checkpoint-1";

/// Prefix of the SGD momentum of a parameter: `momentum/<path>`.
pub const MOMENTUM: &str = "momentum/";

/// How activation ranges are set in QAT (`intq qat --ranges`). Defined here, not in `layers`,
/// because the checkpoint format records it and this file must stay free of burn (fuzzing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RangeMode {
    /// Fixed by the observers: an EMA of batch min/max (docs/spec.md §2.3).
    #[default]
    Ema,
    /// Learned min and max with TensorFlow's gradient, initialized from the EMA.
    MinMax,
    /// Learned step size (LSQ), zero point frozen at the EMA's, initialized from the EMA.
    Lsq,
}

impl RangeMode {
    /// The name the command line and the checkpoint metadata use.
    pub fn name(self) -> &'static str {
        match self {
            RangeMode::Ema => "ema",
            RangeMode::MinMax => "minmax",
            RangeMode::Lsq => "lsq",
        }
    }

    /// The mode named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        [RangeMode::Ema, RangeMode::MinMax, RangeMode::Lsq]
            .into_iter()
            .find(|m| m.name() == s)
    }
}

/// The quantization settings as stored (see `layers::QuantCfg`, which mirrors these fields).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantFields {
    pub act_scheme: QScheme,
    pub weight_scheme: QScheme,
    pub per_channel: bool,
    pub quant_delay: u64,
    pub freeze_bn: bool,
    pub freeze_observers: bool,
    /// Absent means the EMA.
    pub ranges: RangeMode,
}

/// The run state stored as string metadata, before the architecture name is resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct FileMeta {
    /// Architecture name as `zoo::Arch`'s `FromStr` accepts it.
    pub arch: String,
    /// Epochs completed.
    pub epoch: usize,
    /// Batches already done in the unfinished epoch `epoch` (0 for an end-of-epoch checkpoint,
    /// which omits the field).
    pub epoch_batches: usize,
    pub step: u64,
    pub epochs: usize,
    pub seed: u64,
    pub quant: Option<QuantFields>,
    pub test_accuracy: Option<f64>,
    /// Data-parallel pieces per batch of the run (absent: not recorded; such runs took
    /// single-batch steps).
    pub shards: Option<usize>,
    /// The data the run trained on (absent in older files), so that `qat --from` and
    /// `eval --compare` default to it and bring other data to the same input.
    pub data: Option<DataMeta>,
}

/// The data a run trained on, as stored: where it came from and what the network was given.
/// Fields absent in older files are `None`: the architecture's own input and class count.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataMeta {
    /// A registry name (`mnist`, `fashion-mnist`) or a path, as given on the command line.
    pub source: String,
    /// The network's input, `[channels, height, width]`.
    pub input: Option<[usize; 3]>,
    pub classes: Option<usize>,
    /// How pictures of another size were brought to `input`: `stretch` or `crop`.
    pub resize: Option<String>,
    /// Class names in label order (empty: not recorded).
    pub class_names: Vec<String>,
    /// Fraction of each class held out of a folder without `val/` or `test/`, and the seed of
    /// that draw, so that evaluation holds out the same pictures.
    pub val_split: Option<f64>,
    pub split_seed: Option<u64>,
    /// CIFAR-100 label set: `fine` or `coarse`.
    pub labels: Option<String>,
    /// Pictures that could not be read were left out rather than failing the load.
    pub skip_bad: bool,
    /// Training-time augmentation as `--augment` spells it (`crop:4,flip`); `None`: none.
    pub augment: Option<String>,
    /// Input normalization as `--normalize` spells it (`0.5/0.25`); `None`: none (older files).
    pub normalize: Option<String>,
}

impl From<&str> for DataMeta {
    fn from(source: &str) -> Self {
        DataMeta {
            source: source.to_string(),
            ..DataMeta::default()
        }
    }
}

impl From<String> for DataMeta {
    fn from(source: String) -> Self {
        DataMeta {
            source,
            ..DataMeta::default()
        }
    }
}

/// The resize rules `DataMeta::resize` may name.
pub const RESIZE_RULES: [&str; 2] = ["stretch", "crop"];

/// The label sets `DataMeta::labels` may name.
pub const LABEL_SETS: [&str; 2] = ["fine", "coarse"];

/// Largest input side and class count a checkpoint may record (labels are bytes).
const MAX_SIDE: usize = 1 << 15;
const MAX_CLASSES: usize = 256;

impl DataMeta {
    fn insert_into(&self, m: &mut HashMap<String, String>) {
        m.insert("data".into(), self.source.clone());
        if let Some([c, h, w]) = self.input {
            m.insert("data.input".into(), format!("{c}x{h}x{w}"));
        }
        if let Some(k) = self.classes {
            m.insert("data.classes".into(), k.to_string());
        }
        if let Some(r) = &self.resize {
            m.insert("data.resize".into(), r.clone());
        }
        // One name a line; names that cannot be stored so are left out altogether.
        if !self.class_names.is_empty() && self.class_names.iter().all(|n| !n.contains('\n')) {
            m.insert("data.class_names".into(), self.class_names.join("\n"));
        }
        if let Some(f) = self.val_split {
            m.insert("data.val_split".into(), f.to_string());
        }
        if let Some(s) = self.split_seed {
            m.insert("data.split_seed".into(), s.to_string());
        }
        if let Some(l) = &self.labels {
            m.insert("data.labels".into(), l.clone());
        }
        if self.skip_bad {
            m.insert("data.skip_bad".into(), "1".into());
        }
        if let Some(a) = &self.augment {
            m.insert("data.augment".into(), a.clone());
        }
        if let Some(n) = &self.normalize {
            m.insert("data.normalize".into(), n.clone());
        }
    }

    fn from_map(
        m: &HashMap<String, String>,
        bad: &dyn Fn(&str) -> String,
    ) -> Result<Option<Self>, String> {
        let Some(source) = m.get("data") else {
            return Ok(None);
        };
        if source.is_empty() || source.len() > 4096 || source.chars().any(char::is_control) {
            return Err(bad("data"));
        }
        let input = match m.get("data.input") {
            None => None,
            Some(s) => {
                let v: Vec<usize> = s
                    .split('x')
                    .map(|p| p.parse().ok())
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("data.input"))?;
                match v[..] {
                    [c, h, w]
                        if (c == 1 || c == 3)
                            && (1..=MAX_SIDE).contains(&h)
                            && (1..=MAX_SIDE).contains(&w) =>
                    {
                        Some([c, h, w])
                    }
                    _ => return Err(bad("data.input")),
                }
            }
        };
        let classes = match m.get("data.classes") {
            None => None,
            Some(s) => match s.parse::<usize>() {
                Ok(k) if (1..=MAX_CLASSES).contains(&k) => Some(k),
                _ => return Err(bad("data.classes")),
            },
        };
        let resize = match m.get("data.resize") {
            None => None,
            Some(r) if RESIZE_RULES.contains(&r.as_str()) => Some(r.clone()),
            Some(_) => return Err(bad("data.resize")),
        };
        let class_names: Vec<String> = m
            .get("data.class_names")
            .map(|s| s.split('\n').map(str::to_string).collect())
            .unwrap_or_default();
        if !class_names.is_empty() && classes.is_some_and(|k| k != class_names.len()) {
            return Err(bad("data.class_names"));
        }
        let val_split = match m.get("data.val_split") {
            None => None,
            Some(s) => match s.parse::<f64>() {
                Ok(f) if (0.0..1.0).contains(&f) => Some(f),
                _ => return Err(bad("data.val_split")),
            },
        };
        let split_seed = match m.get("data.split_seed") {
            None => None,
            Some(s) => Some(s.parse::<u64>().map_err(|_| bad("data.split_seed"))?),
        };
        let labels = match m.get("data.labels") {
            None => None,
            Some(l) if LABEL_SETS.contains(&l.as_str()) => Some(l.clone()),
            Some(_) => return Err(bad("data.labels")),
        };
        let skip_bad = match m.get("data.skip_bad").map(String::as_str) {
            None | Some("0") => false,
            Some("1") => true,
            Some(_) => return Err(bad("data.skip_bad")),
        };
        // Parsed by the command that applies it; here only kept printable and short.
        let augment = match m.get("data.augment") {
            None => None,
            Some(a) if a.len() <= 256 && !a.chars().any(char::is_control) => Some(a.clone()),
            Some(_) => return Err(bad("data.augment")),
        };
        // Parsed (and checked) where the network is built; here only kept printable and short.
        let normalize = match m.get("data.normalize") {
            None => None,
            Some(n) if n.len() <= 256 && !n.chars().any(char::is_control) => Some(n.clone()),
            Some(_) => return Err(bad("data.normalize")),
        };
        Ok(Some(DataMeta {
            source: source.clone(),
            input,
            classes,
            resize,
            class_names,
            val_split,
            split_seed,
            labels,
            skip_bad,
            augment,
            normalize,
        }))
    }
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

impl FileMeta {
    /// The metadata map written into the file.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("format".into(), FORMAT.into());
        m.insert("arch".into(), self.arch.clone());
        m.insert("epoch".into(), self.epoch.to_string());
        if self.epoch_batches != 0 {
            m.insert("epoch_batches".into(), self.epoch_batches.to_string());
        }
        m.insert("step".into(), self.step.to_string());
        m.insert("epochs".into(), self.epochs.to_string());
        m.insert("seed".into(), self.seed.to_string());
        if let Some(a) = self.test_accuracy {
            m.insert("test_accuracy".into(), a.to_string());
        }
        if let Some(n) = self.shards {
            m.insert("shards".into(), n.to_string());
        }
        if let Some(d) = &self.data {
            d.insert_into(&mut m);
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
            m.insert("quant.ranges".into(), q.ranges.name().into());
        }
        m
    }

    /// Reads the metadata map; errors name `file` and the field.
    pub fn from_map(m: &HashMap<String, String>, file: &Path) -> Result<Self, String> {
        let bad = |what: &str| {
            format!(
                "{}: missing or malformed metadata field {what:?}",
                file.display()
            )
        };
        if m.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(format!(
                "{}: not an intq training checkpoint (format tag {:?})",
                file.display(),
                m.get("format")
            ));
        }
        let get = |k: &str| m.get(k).ok_or_else(|| bad(k));
        let num = |k: &str| -> Result<u64, String> { get(k)?.parse().map_err(|_| bad(k)) };
        let size = |k: &str| -> Result<usize, String> { get(k)?.parse().map_err(|_| bad(k)) };
        let quant = match m.get("quant.act") {
            None => None,
            Some(a) => Some(QuantFields {
                act_scheme: parse_scheme(a).ok_or_else(|| bad("quant.act"))?,
                weight_scheme: parse_scheme(get("quant.weight")?)
                    .ok_or_else(|| bad("quant.weight"))?,
                per_channel: num("quant.per_channel")? != 0,
                quant_delay: num("quant.delay")?,
                freeze_bn: num("quant.freeze_bn")? != 0,
                freeze_observers: num("quant.freeze_observers")? != 0,
                ranges: match m.get("quant.ranges") {
                    None => RangeMode::Ema,
                    Some(r) => RangeMode::parse(r).ok_or_else(|| bad("quant.ranges"))?,
                },
            }),
        };
        let meta = FileMeta {
            arch: get("arch")?.clone(),
            epoch: size("epoch")?,
            epoch_batches: match m.get("epoch_batches") {
                None => 0,
                Some(_) => size("epoch_batches")?,
            },
            step: num("step")?,
            epochs: size("epochs")?,
            seed: num("seed")?,
            quant,
            test_accuracy: m.get("test_accuracy").and_then(|s| s.parse().ok()),
            shards: match m.get("shards") {
                None => None,
                Some(_) => match size("shards")? {
                    0 => return Err(bad("shards")),
                    n => Some(n),
                },
            },
            data: DataMeta::from_map(m, &bad)?,
        };
        // A resumable position: every completed batch is a step of this run.
        if (meta.epoch_batches as u64) > meta.step {
            return Err(format!(
                "{}: metadata says {} batches into epoch {} but only {} steps in all",
                file.display(),
                meta.epoch_batches,
                meta.epoch + 1,
                meta.step
            ));
        }
        Ok(meta)
    }
}

/// A parsed checkpoint: metadata and tensor views into the file's bytes.
pub struct CkptFile<'a> {
    pub meta: FileMeta,
    st: SafeTensors<'a>,
    file: &'a Path,
}

/// Parses `bytes` (the contents of `file`, named in errors). Allocates only the header.
pub fn parse<'a>(bytes: &'a [u8], file: &'a Path) -> Result<CkptFile<'a>, String> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| format!("{}: not a safetensors file: {e}", file.display()))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("{}: not a safetensors file: {e}", file.display()))?;
    let map = header.metadata().clone().unwrap_or_default();
    let meta = FileMeta::from_map(&map, file)?;
    Ok(CkptFile { meta, st, file })
}

impl CkptFile<'_> {
    pub fn contains(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    /// Tensor `name` as f32 values; it must be F32 of shape `dims`, every value finite.
    pub fn tensor(&self, name: &str, dims: &[usize]) -> Result<Vec<f32>, String> {
        let t = self
            .st
            .tensor(name)
            .map_err(|_| format!("{}: tensor {name} is missing", self.file.display()))?;
        if t.dtype() != Dtype::F32 || t.shape() != dims {
            return Err(format!(
                "{}: tensor {name} is {:?} {:?}, expected F32 {:?}",
                self.file.display(),
                t.dtype(),
                t.shape(),
                dims
            ));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // Training stops on a non-finite loss before saving, so NaN/Inf here means a damaged
        // file; loading it would only resume into NaN losses or export garbage.
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(non_finite(self.file, name, t.data(), i));
        }
        Ok(v)
    }

    /// Every tensor as (name, dtype, shape, raw little-endian bytes), sorted by name.
    pub fn raw_tensors(&self) -> Vec<(String, Dtype, Vec<usize>, &[u8])> {
        let mut v: Vec<_> = self
            .st
            .iter()
            .map(|(n, t)| (n.to_string(), t.dtype(), t.shape().to_vec(), t.data()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Checks the file against a network's tensors (`expected`: path and shape of each): every
    /// one present as F32 of its shape with finite values, momentum (optional) likewise, nothing
    /// else.
    /// Runs before any tensor is copied, so a mismatched file is refused with one clear error.
    pub fn check_layout(&self, expected: &[(String, Vec<usize>)]) -> Result<(), String> {
        let mut known: HashMap<&str, &[usize]> = HashMap::new();
        for (name, dims) in expected {
            known.insert(name, dims);
        }
        for (name, dims) in expected {
            self.check_one(name, dims, true)?;
        }
        for (name, t) in self.st.iter() {
            let base = name.strip_prefix(MOMENTUM).unwrap_or(name);
            match known.get(base) {
                Some(dims) => self.check_one(name, dims, false)?,
                None => {
                    return Err(format!(
                        "{}: tensor {name} ({:?} {:?}) is not part of a {} network",
                        self.file.display(),
                        t.dtype(),
                        t.shape(),
                        self.meta.arch
                    ))
                }
            }
        }
        Ok(())
    }

    fn check_one(&self, name: &str, dims: &[usize], required: bool) -> Result<(), String> {
        match self.st.tensor(name) {
            Err(_) if !required => Ok(()),
            Err(_) => Err(format!("{}: tensor {name} is missing", self.file.display())),
            Ok(t) if t.dtype() == Dtype::F32 && t.shape() == dims => {
                match t
                    .data()
                    .chunks_exact(4)
                    .position(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
                {
                    None => Ok(()),
                    Some(i) => Err(non_finite(self.file, name, t.data(), i)),
                }
            }
            Ok(t) => Err(format!(
                "{}: tensor {name} is {:?} {:?}, expected F32 {:?}",
                self.file.display(),
                t.dtype(),
                t.shape(),
                dims
            )),
        }
    }
}

fn non_finite(file: &Path, name: &str, data: &[u8], i: usize) -> String {
    let c = &data[4 * i..4 * i + 4];
    format!(
        "{}: tensor {name} holds a non-finite value ({}) at index {i}",
        file.display(),
        f32::from_le_bytes([c[0], c[1], c[2], c[3]])
    )
}
