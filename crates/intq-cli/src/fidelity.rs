//! Measurements shared by `intq convert`, `intq eval`, `intq ptq` and `intq quickstart`:
//! conversion of a checkpoint, the fake-quant network's intermediate activations by engine tensor
//! name, accuracy of the integer model, and the fake-quant ↔ int8 comparison (top-1 mismatches,
//! LSB differences, per-layer SQNR), which serializes to the JSON `intq eval --json` prints.

use std::path::Path;
use std::time::Instant;

use crate::data_cmd::{DataFlags, DataOpts};
use anyhow::{bail, Context, Result};
use intq_data::image_folder::{ImageFolderOptions, Resize};
use intq_data::source::{self, DataSpec, OpenOptions, Origin};
use intq_data::{Dataset, Split};
use intq_engine::{DType, Model, Op, QuantParams, TensorData, TensorId};
use intq_train::checkpoint::{self, Loaded};
use intq_train::fake_quant::host_vec;
use intq_train::layers::{Act, Ctx, LayerOpts, QuantCfg};
use intq_train::trainer::ImageSet;
use intq_train::zoo::Net;
use intq_train::Device;
use serde::ser::{Serialize, SerializeStruct, Serializer};

/// Images per forward pass of the training network during evaluation.
const BATCH: usize = 250;

/// The plain (non-autodiff) device: evaluation needs no gradients, and the QAT layers skip the
/// straight-through term there, so values equal the scalar reference bit for bit.
pub fn eval_device() -> Device {
    intq_train::train_device().inner()
}

/// Loads a data set: a registry name from `dir` (default: intq's cache) or a path in any format
/// [`intq_data::source::detect`] knows, logging the format found. With `fetch`, a registry data
/// set that is not there yet is fetched first; otherwise the error says how to get it.
pub fn load_data(name: &str, dir: Option<&Path>, fetch: bool) -> Result<Dataset> {
    load_data_with(name, dir, fetch, ImageFolderOptions::default())
}

/// [`load_data`] reading image folders with `image` (target size, channels, resize rule).
pub fn load_data_with(
    name: &str,
    dir: Option<&Path>,
    fetch: bool,
    image: ImageFolderOptions,
) -> Result<Dataset> {
    Ok(load_opened(name, dir, fetch, image)?.dataset)
}

/// The pictures of a data set as stored, `CxHxW` (`CxHxW to CxHxW` for pictures of several
/// sizes): an image folder's before conversion, else its splits'.
pub fn stored_shape(o: &source::Opened) -> String {
    let t = &o.dataset.train;
    match &o.report.manifest {
        Some(m) => {
            let c = if m.entries.iter().all(|e| e.channels <= 2) {
                1
            } else {
                3
            };
            match intq_data::image_folder::size_range(m) {
                Some((lo, hi)) if lo != hi => {
                    format!("{c}x{}x{} to {c}x{}x{}", lo.0, lo.1, hi.0, hi.1)
                }
                Some((lo, _)) => format!("{c}x{}x{}", lo.0, lo.1),
                None => format!("{}x{}x{}", t.channels, t.rows, t.cols),
            }
        }
        None => format!("{}x{}x{}", t.channels, t.rows, t.cols),
    }
}

/// [`load_data_with`], keeping the load report.
pub fn load_opened(
    name: &str,
    dir: Option<&Path>,
    fetch: bool,
    image: ImageFolderOptions,
) -> Result<source::Opened> {
    load_opened_with(name, dir, fetch, image, &DataOpts::plain())
}

/// [`load_opened`] with the data options (held-out split, label set, skipping bad pictures).
pub fn load_opened_with(
    name: &str,
    dir: Option<&Path>,
    fetch: bool,
    image: ImageFolderOptions,
    data: &DataOpts,
) -> Result<source::Opened> {
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(intq_data::default_data_dir);
    let spec = DataSpec::parse(name);
    let opts = data.apply(OpenOptions {
        data_dir: dir.clone(),
        image,
        ..OpenOptions::default()
    });
    let opened = match (&spec, source::open(&spec, &opts)) {
        (_, Ok(o)) => o,
        (DataSpec::Registry(kind), Err(e)) if fetch => {
            eprintln!("{name} not found in {} ({e}); fetching it", dir.display());
            intq_data::fetch(*kind, &dir)
                .with_context(|| format!("fetching {name} into {}", dir.display()))?;
            source::open(&spec, &opts)
                .with_context(|| format!("loading {name} from {}", dir.display()))?
        }
        (DataSpec::Registry(_), Err(e)) => {
            return Err(e).with_context(|| format!("loading {name} from {}", dir.display()))
        }
        (DataSpec::Path(_), Err(e)) => return Err(e).with_context(|| format!("loading {name}")),
    };
    if let Origin::Path { format, path } = &opened.dataset.origin {
        let t = &opened.dataset.train;
        eprintln!(
            "data: {} is {} ({} train + {} test pictures of {}x{}x{}, {} classes)",
            path.display(),
            format.name(),
            t.len,
            opened.dataset.test.len,
            t.channels,
            t.rows,
            t.cols,
            t.num_classes()
        );
    }
    for w in &opened.report.warnings {
        eprintln!("warning: {name}: {w}");
    }
    crate::data_cmd::log_report(name, &opened.report);
    Ok(opened)
}

/// What a network is given: `[channels, height, width]` pictures, brought to that size by
/// `resize`, and its class count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSpec {
    pub shape: [usize; 3],
    pub classes: usize,
    pub resize: Resize,
}

/// The `--resize` names.
pub fn resize_name(r: Resize) -> &'static str {
    match r {
        Resize::Stretch => "stretch",
        Resize::ShorterSideCrop => "crop",
    }
}

/// The rule a `--resize` name (or a checkpoint's record of one) means.
pub fn parse_resize(s: &str) -> Result<Resize, String> {
    match s {
        "stretch" => Ok(Resize::Stretch),
        "crop" => Ok(Resize::ShorterSideCrop),
        other => Err(format!(
            "unknown resize rule {other:?}; use stretch or crop"
        )),
    }
}

/// `HxW` (or a single `N` for a square) as (height, width).
pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let parse = |p: &str| -> Result<usize, String> {
        match p.trim().parse::<usize>() {
            Ok(n) if (1..=1 << 15).contains(&n) => Ok(n),
            _ => Err(format!("bad input size {s:?}; write HxW, e.g. 32x32")),
        }
    };
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok((parse(h)?, parse(w)?)),
        None => parse(s).map(|n| (n, n)),
    }
}

/// The input a checkpoint's network takes, as its metadata records it (older files: the
/// architecture's own).
pub fn ckpt_input(l: &Loaded) -> InputSpec {
    InputSpec {
        shape: l.meta.input_shape(),
        classes: l.meta.classes(),
        resize: l
            .meta
            .data
            .as_ref()
            .and_then(|d| d.resize.as_deref())
            .and_then(|r| parse_resize(r).ok())
            .unwrap_or_default(),
    }
}

/// `split` converted to `shape` (`[channels, height, width]`): grey replicated to RGB or RGB
/// made grey (ITU-R 601 luma), resized by `rule`. A split already in shape is returned as is.
pub fn conform(split: Split, shape: [usize; 3], rule: Resize) -> Result<Split> {
    let [c, h, w] = shape;
    if [split.channels, split.rows, split.cols] == shape {
        return Ok(split);
    }
    let n = split.image_size();
    let (h0, w0) = (split.rows as u32, split.cols as u32);
    let mut images = Vec::with_capacity(split.len * c * h * w);
    for px in split.images.chunks_exact(n) {
        let img = match split.channels {
            1 => image::DynamicImage::ImageLuma8(
                image::GrayImage::from_raw(w0, h0, px.to_vec()).context("a grey picture")?,
            ),
            3 => image::DynamicImage::ImageRgb8(
                image::RgbImage::from_raw(w0, h0, px.to_vec()).context("an RGB picture")?,
            ),
            k => bail!("pictures of {k} channels; 1 (grey) or 3 (RGB) are supported"),
        };
        images.extend(intq_data::image_folder::to_pixels(&img, c, h, w, rule));
    }
    Ok(Split {
        images,
        rows: h,
        cols: w,
        channels: c,
        ..split
    })
}

/// Loads `name` for a network taking `input` and converts both splits to its input; data of
/// another class count is an error saying what differs.
pub fn load_for(
    name: &str,
    dir: Option<&Path>,
    input: &InputSpec,
    what: &str,
    data: &DataOpts,
) -> Result<Dataset> {
    let [c, h, w] = input.shape;
    let image = ImageFolderOptions {
        size: Some((h, w)),
        channels: Some(c),
        resize: input.resize,
        ..ImageFolderOptions::default()
    };
    let opened = load_opened_with(name, dir, false, image, data)?;
    let stored = stored_shape(&opened);
    conform_dataset(opened.dataset, input, name, what, &stored)
}

/// Both splits of `ds` (the data `name`, pictures `stored` as `CxHxW`) converted to `input`, the
/// input of `what`; data with another class count is an error saying what differs.
pub fn conform_dataset(
    ds: Dataset,
    input: &InputSpec,
    name: &str,
    what: &str,
    stored: &str,
) -> Result<Dataset> {
    let [c, h, w] = input.shape;
    let t = &ds.train;
    let k = t.num_classes().max(ds.test.num_classes());
    if k != input.classes {
        bail!(
            "{what} expects {c}x{h}x{w} inputs (channels x height x width) and {} classes; {name} \
             has {stored} pictures and {k} classes",
            input.classes,
        );
    }
    if stored != format!("{c}x{h}x{w}") {
        eprintln!(
            "data: {name}'s {stored} pictures are converted to the {c}x{h}x{w} inputs {what} \
             takes ({})",
            resize_name(input.resize)
        );
    }
    Ok(Dataset {
        train: conform(ds.train, input.shape, input.resize)?,
        test: conform(ds.test, input.shape, input.resize)?,
        origin: ds.origin,
    })
}

/// The trainer's view of a one-channel split, whose HWC bytes are also its CHW bytes. A split of
/// several channels needs its planes: use [`image_set_chw`] with [`Split::images_chw`].
pub fn image_set(s: &Split) -> ImageSet<'_> {
    image_set_chw(s, &s.images)
}

/// The trainer's view of `s` with its pixels `chw` as planes ([`Split::images_chw`]).
pub fn image_set_chw<'a>(s: &'a Split, chw: &'a [u8]) -> ImageSet<'a> {
    ImageSet {
        images: chw,
        labels: &s.labels,
        len: s.len,
        channels: s.channels,
        rows: s.rows,
        cols: s.cols,
    }
}

/// The data for checkpoint `l` (read from `ckpt`): `--data` when given, else the source it
/// records, converted to the input it was trained at and read with the options it records
/// (held-out split, label set) unless `flags` say otherwise. Returns the source's name and
/// those options with it.
pub fn load_for_ckpt(
    l: &Loaded,
    ckpt: &Path,
    flag: Option<&str>,
    dir: Option<&Path>,
    flags: &DataFlags,
) -> Result<(String, Dataset, DataOpts)> {
    let recorded = l.meta.data.as_ref().map(|d| d.source.as_str());
    let name = data_for(flag, recorded, ckpt);
    // Checkpoints that record no split seed were drawn with seed 0.
    let opts = flags.resolve(l.meta.data.as_ref(), 0);
    let data = load_for(
        &name,
        dir,
        &ckpt_input(l),
        &ckpt.display().to_string(),
        &opts,
    )?;
    Ok((name, data, opts))
}

/// The data set a command runs on: `--data` when given (with a warning when the checkpoint
/// `ckpt` was trained on another), else the one `ckpt` recorded, else Fashion-MNIST.
pub fn data_for(flag: Option<&str>, recorded: Option<&str>, ckpt: &Path) -> String {
    match (flag, recorded) {
        (Some(f), Some(r)) if f != r => {
            eprintln!(
                "warning: {} was trained on {r}; running on --data {f} as asked",
                ckpt.display()
            );
            f.to_string()
        }
        (Some(f), _) => f.to_string(),
        (None, Some(r)) => r.to_string(),
        (None, None) => "fashion-mnist".to_string(),
    }
}

/// The data a checkpoint file records, if it can be read (errors surface when the checkpoint
/// itself is loaded).
pub fn recorded_meta(ckpt: &Path) -> Option<intq_train::checkpoint::DataMeta> {
    let bytes = std::fs::read(ckpt).ok()?;
    intq_train::ckpt_file::parse(&bytes, ckpt).ok()?.meta.data
}

/// The data source a checkpoint file records, if it can be read (errors surface when the
/// checkpoint itself is loaded).
pub fn recorded_data(ckpt: &Path) -> Option<String> {
    Some(recorded_meta(ckpt)?.source)
}

/// Loads a checkpoint for evaluation; errors name the file.
pub fn load_ckpt(path: &Path) -> Result<Loaded> {
    if !path.exists() {
        bail!("checkpoint {} does not exist", path.display());
    }
    checkpoint::load(path, LayerOpts::default(), &eval_device())
        .with_context(|| format!("reading checkpoint {}", path.display()))
}

/// The QAT settings of a checkpoint, or an error saying it was trained in float.
pub fn qat_cfg(l: &Loaded, path: &Path) -> Result<QuantCfg> {
    l.meta.quant.with_context(|| {
        format!(
            "{} was trained without quantization (a float checkpoint): fine-tune it with \
             `intq qat --from {}` first, or quantize it post-training with `intq ptq --from {}`",
            path.display(),
            path.display(),
            path.display()
        )
    })
}

/// Exports `net` with `quant` to an engine model: raw uint8 pixels in, logit codes out, or with
/// `float_edges` f32 in and out. The model records its preprocessing and class names
/// ([`record_input`]).
pub fn export_model(l: &Loaded, quant: &QuantCfg, float_edges: bool) -> Result<Model> {
    let [_, h, w] = l.meta.input_shape();
    let mut graph = intq_train::export::export_at(&l.net, l.meta.arch, (h, w), quant, float_edges)?;
    record_input(&mut graph, l)?;
    Ok(Model::new(graph)?)
}

/// Metadata key of a model's input contract (JSON, [`ModelInput`]).
pub const INPUT_KEY: &str = "intq.input";
/// Metadata key of a model's class names (a JSON array of strings, in label order).
pub const CLASSES_KEY: &str = "intq.classes";

/// How a converted model's input is made from a picture (the `intq.input` metadata): resized
/// to `height x width` by `resize`, with `channels` channels (grey or RGB), as NHWC. A `uint8`
/// input takes the pixels `p` themselves; a `float32` one takes `pixel_scale * (p -
/// pixel_zero_point)`. `normalize` is the training normalization `(p/255 - mean) / std` those
/// codes carry (docs/spec.md §10).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInput {
    pub layout: String,
    pub dtype: String,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub resize: String,
    pub normalize: NormalizeRecord,
    pub pixel_scale: f32,
    pub pixel_zero_point: i32,
}

/// Per-channel means and standard deviations, as `intq.input` records them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NormalizeRecord {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Writes the `intq.input` and `intq.classes` metadata of `graph`, exported from checkpoint `l`.
pub fn record_input(graph: &mut intq_engine::Graph, l: &Loaded) -> Result<()> {
    let [c, h, w] = l.meta.input_shape();
    let input = *graph.inputs().first().context("the model has no input")?;
    let t = graph.tensor(input);
    let float = t.dtype == DType::F32;
    // The pixel codes' params: the input's own, or those of the Quantize op that reads it.
    let pixel_params = if float {
        graph
            .ops()
            .iter()
            .find_map(|op| match op {
                Op::Quantize { input: i, output } if *i == input => {
                    let o = graph.tensor(*output);
                    let shift = if o.dtype == DType::I8 { 128 } else { 0 };
                    o.params().map(|p| QuantParams {
                        zero_point: p.zero_point + shift,
                        ..p
                    })
                }
                _ => None,
            })
            .context("the float input is read by no Quantize op")?
    } else {
        t.params().context("the model's input has no params")?
    };
    let (mean, std) = l.net.normalize().per_channel(c);
    let rec = ModelInput {
        layout: "NHWC".into(),
        dtype: if float { "float32" } else { "uint8" }.into(),
        height: h,
        width: w,
        channels: c,
        resize: resize_name(ckpt_input(l).resize).into(),
        normalize: NormalizeRecord { mean, std },
        pixel_scale: if float { pixel_params.scale } else { 1.0 },
        pixel_zero_point: if float { pixel_params.zero_point } else { 0 },
    };
    graph.set_metadata(INPUT_KEY, &serde_json::to_string(&rec)?)?;
    let names = l
        .meta
        .data
        .as_ref()
        .map(|d| d.class_names.clone())
        .unwrap_or_default();
    if !names.is_empty() {
        graph.set_metadata(CLASSES_KEY, &serde_json::to_string(&names)?)?;
    }
    Ok(())
}

/// The input contract `model` records (`None` for models without one: older `.intq` files and
/// imported `.tflite` models, which read the codes of `byte / 255`).
pub fn model_input(model: &Model) -> Result<Option<ModelInput>> {
    match model.graph().metadata().get(INPUT_KEY) {
        None => Ok(None),
        Some(v) => serde_json::from_str(v)
            .map(Some)
            .with_context(|| format!("the model's {INPUT_KEY} metadata is malformed: {v:?}")),
    }
}

/// Engine tensor names of the network's quantized input and logits, as export names them
/// (`input_q` / `logits_q` where a Quantize / Dequantize op sits at the edge).
pub fn edge_names(g: &intq_engine::Graph) -> (&'static str, &'static str) {
    (
        if g.tensor_by_name("input_q").is_some() {
            "input_q"
        } else {
            "input"
        },
        if g.tensor_by_name("logits_q").is_some() {
            "logits_q"
        } else {
            "logits"
        },
    )
}

/// One materialized activation of the training network: its engine tensor name, its burn
/// dimensions (`[N, C, H, W]` or `[N, K]`) and values.
pub struct Tap {
    pub name: String,
    pub dims: Vec<usize>,
    pub values: Vec<f32>,
}

/// The network's forward pass in evaluation mode (`Net::forward_tapped`), keeping every
/// activation the engine graph materializes, named as export names the engine tensors. The last
/// tap holds the logits (`[N, classes, 1, 1]`). With `exact`, the fake-quant network is
/// evaluated in f64 on the real values of its codes (`Ctx::eval_exact`). `edges` names the
/// quantized input and logits tensors ([`edge_names`]).
pub fn forward_taps(
    net: &Net,
    set: &ImageSet,
    idx: &[usize],
    quant: Option<QuantCfg>,
    exact: bool,
    edges: (&str, &str),
    device: &Device,
) -> Result<Vec<Tap>> {
    let ctx = match quant {
        Some(q) if exact => Ctx::eval_exact(q),
        _ => Ctx::eval(quant),
    };
    let (in_name, logits_name) = edges;
    let (x, _) = set.batch(idx, device);
    let mut out = Vec::new();
    net.forward_tapped(x, &ctx, &mut |name: &str, a: &Act| {
        let name = match name {
            "input" => in_name,
            "logits" => logits_name,
            other => other,
        };
        out.push(Tap {
            name: name.to_string(),
            dims: a.x.dims().to_vec(),
            values: host_vec(a.x.clone()),
        });
    })?;
    Ok(out)
}

/// Index of the largest value, the first one on ties (the same rule for codes and reals, so
/// equal codes always give equal classes).
pub fn argmax<T: PartialOrd + Copy>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

pub fn codes(t: &TensorData) -> Vec<i32> {
    match t {
        TensorData::U8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I32(v) => v.clone(),
        TensorData::F32(v) => v.iter().map(|&x| x as i32).collect(),
    }
}

/// The engine's input for image `i` of `split`. A model with an input record
/// ([`model_input`]) takes the pixels themselves (uint8) or `pixel_scale * (p -
/// pixel_zero_point)` (float32); one without takes `byte / 255` as f32, or that value quantized
/// with the input's params.
pub fn engine_input(model: &Model, split: &Split, i: usize) -> Result<TensorData> {
    if let Some(rec) = model_input(model)? {
        let px = split.image(i);
        return Ok(match rec.dtype.as_str() {
            "uint8" => TensorData::U8(px.to_vec()),
            "float32" => {
                let p = QuantParams {
                    scale: rec.pixel_scale,
                    zero_point: rec.pixel_zero_point,
                };
                TensorData::F32(px.iter().map(|&b| p.dequantize(b as i32)).collect())
            }
            other => bail!("the model's {INPUT_KEY} metadata names input type {other:?}"),
        });
    }
    let g = model.graph();
    let [id] = g.inputs() else {
        bail!(
            "the model has {} inputs; an image classifier has one",
            g.inputs().len()
        );
    };
    let t = g.tensor(*id);
    let px = split.image_size();
    if t.num_elements() != px {
        bail!(
            "the model's input '{}' has shape {:?}, the data set's images {}x{}",
            t.name,
            t.shape,
            split.rows,
            split.cols
        );
    }
    let reals = split.image(i).iter().map(|&b| b as f32 / 255.0);
    Ok(match t.dtype {
        DType::F32 => TensorData::F32(reals.collect()),
        DType::U8 | DType::I8 => {
            let p = t
                .params()
                .context("the model's input has no quantization params")?;
            let (lo, hi) = range(t.dtype);
            let c = reals.map(|r| p.quantize(r, lo, hi));
            if t.dtype == DType::U8 {
                TensorData::U8(c.map(|x| x as u8).collect())
            } else {
                TensorData::I8(c.map(|x| x as i8).collect())
            }
        }
        DType::I32 => bail!("the model's input '{}' is int32", t.name),
    })
}

fn range(d: DType) -> (i32, i32) {
    if d == DType::I8 {
        (-128, 127)
    } else {
        (0, 255)
    }
}

/// The quantized logits tensor: the graph output itself, or the input of the Dequantize op that
/// produces it.
pub fn logits_codes_id(model: &Model) -> Result<TensorId> {
    let g = model.graph();
    let out = *g.outputs().first().context("the model has no output")?;
    if g.tensor(out).params().is_some() {
        return Ok(out);
    }
    for op in g.ops() {
        if op.output() == out {
            if let Op::Dequantize { input, .. } = op {
                return Ok(*input);
            }
            bail!(
                "the model's output is produced by {}, not a Dequantize op",
                op.kind()
            );
        }
    }
    bail!("the model's output is not produced by any op")
}

/// Runs `f` over `0..n` on every core, in order-preserving chunks.
fn par_map<T: Send>(n: usize, f: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n.max(1));
    let chunk = n.div_ceil(threads.max(1)).max(1);
    let parts: Vec<Result<Vec<T>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let f = &f;
                s.spawn(move || (start..(start + chunk).min(n)).map(f).collect())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker panicked")))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(n);
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// Progress on stderr for the long evaluation loops (the trainer draws its own bars).
struct Progress {
    what: String,
    total: usize,
    shown: bool,
    start: Instant,
}

impl Progress {
    fn new(what: &str, total: usize, shown: bool) -> Self {
        Progress {
            what: what.into(),
            total,
            shown,
            start: Instant::now(),
        }
    }
    fn at(&self, done: usize) {
        if self.shown {
            let w = 30 * done / self.total.max(1);
            eprint!(
                "\r{} [{}{}] {done}/{} ({:.0}s)",
                self.what,
                "=".repeat(w),
                " ".repeat(30 - w),
                self.total,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
    fn done(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// Top-1 accuracy of the integer model on the first `limit` images of `split`.
pub fn int_accuracy(model: &Model, split: &Split, limit: usize, progress: bool) -> Result<f64> {
    let n = limit.min(split.len);
    let bar = Progress::new("int8 eval", n, progress);
    let mut ok = 0;
    for start in (0..n).step_by(1000) {
        let end = (start + 1000).min(n);
        let preds = par_map(end - start, |k| {
            let out = model.run(&[engine_input(model, split, start + k)?])?;
            Ok(argmax(&codes_or_reals(&out[0])))
        })?;
        ok += preds
            .iter()
            .enumerate()
            .filter(|&(k, &p)| p == split.labels[start + k] as usize)
            .count();
        bar.at(end);
    }
    bar.done();
    Ok(ok as f64 / n.max(1) as f64)
}

fn codes_or_reals(t: &TensorData) -> Vec<f64> {
    match t {
        TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
        other => codes(other).into_iter().map(f64::from).collect(),
    }
}

/// One engine tensor compared across the three computations.
#[derive(Debug, Clone, Default)]
pub struct LayerStat {
    pub name: String,
    pub op: String,
    pub elems: u64,
    float_sig: f64,
    float_err: f64,
    fq_sig: f64,
    fq_err: f64,
    /// Largest |fake-quant code - int8 code|.
    pub max_lsb: i64,
    /// Elements whose codes differ.
    pub diff_elems: u64,
}

fn sqnr(sig: f64, err: f64) -> f64 {
    if err == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (sig / err).log10()
    }
}

impl LayerStat {
    /// An empty row for engine tensor `name`, written by an op of kind `op`.
    pub fn new(name: &str, op: &str) -> Self {
        LayerStat {
            name: name.into(),
            op: op.into(),
            ..Default::default()
        }
    }

    /// Adds one image's elements. `ints` are the engine's codes of the tensor (NHWC, or `[1, F]`
    /// after a fully connected layer); `float` and `fq` hold the same activation of the float and
    /// fake-quant networks for a batch in burn's layout (`dims`: `[N, C, H, W]` or `[N, K]`), of
    /// which the image is number `j`; `p` and `(lo, hi)` are the tensor's params and codes.
    #[allow(clippy::too_many_arguments)]
    pub fn add_image(
        &mut self,
        ints: &[i32],
        float: &[f32],
        fq: &[f32],
        dims: &[usize],
        j: usize,
        p: QuantParams,
        (lo, hi): (i32, i32),
    ) {
        let per = ints.len();
        // burn is NCHW, the engine NHWC: map engine index (h, w, c) to burn's.
        let (c, hw) = if dims.len() == 4 {
            (dims[1], dims[2] * dims[3])
        } else {
            (per, 1)
        };
        for (e, &code) in ints.iter().enumerate() {
            let (pos, ch) = (e / c, e % c);
            let b = j * per + ch * hw + pos;
            let deq = p.dequantize(code) as f64;
            let (fv, qv) = (float[b] as f64, fq[b] as f64);
            self.float_sig += fv * fv;
            self.float_err += (fv - deq).powi(2);
            self.fq_sig += qv * qv;
            self.fq_err += (qv - deq).powi(2);
            let d = (p.quantize(fq[b], lo, hi) - code).abs() as i64;
            self.max_lsb = self.max_lsb.max(d);
            self.diff_elems += (d != 0) as u64;
            self.elems += 1;
        }
    }

    /// SQNR (dB) of the int8 values against the float network's.
    pub fn sqnr_float(&self) -> f64 {
        sqnr(self.float_sig, self.float_err)
    }
    /// SQNR (dB) of the int8 values against the fake-quant network's (infinite when equal).
    pub fn sqnr_fq(&self) -> f64 {
        sqnr(self.fq_sig, self.fq_err)
    }
}

/// A layer's row of the JSON comparison; SQNRs that are infinite (equal values) are `null`.
impl Serialize for LayerStat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut r = s.serialize_struct("LayerStat", 7)?;
        r.serialize_field("name", &self.name)?;
        r.serialize_field("op", &self.op)?;
        r.serialize_field("sqnr_float_db", &self.sqnr_float())?;
        r.serialize_field("sqnr_fq_db", &self.sqnr_fq())?;
        r.serialize_field("max_lsb", &self.max_lsb)?;
        r.serialize_field("differing", &self.diff_elems)?;
        r.serialize_field("elements", &self.elems)?;
        r.end()
    }
}

/// The fake-quant ↔ int8 comparison of `intq eval --compare`; serialized with these field
/// names (non-finite numbers as `null`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Comparison {
    pub images: usize,
    pub float_acc: f64,
    pub fq_acc: f64,
    pub int8_acc: f64,
    /// Images whose fake-quant and int8 top-1 classes differ.
    pub top1_mismatch: usize,
    /// Largest |fake-quant logit code - int8 logit code| over all images and classes.
    pub max_lsb_diff: i64,
    /// Logits (image × class) whose codes differ.
    pub logits_differing: u64,
    pub logits_total: u64,
    /// The same two measures against the fake-quant network evaluated in f32, as training
    /// computes it (the main ones above use the exact evaluation; docs/fidelity.md).
    pub f32_top1_mismatch: usize,
    pub f32_max_lsb_diff: i64,
    pub layers: Vec<LayerStat>,
}

/// Runs the float and fake-quant networks of a QAT checkpoint and the integer `model` on the
/// first `limit` images of `split`, and compares them.
pub fn compare(
    l: &Loaded,
    quant: QuantCfg,
    model: &Model,
    split: &Split,
    limit: usize,
    progress: bool,
) -> Result<Comparison> {
    let g = model.graph();
    let edges = edge_names(g);
    let logits_id = logits_codes_id(model)?;
    if (g.tensor(logits_id).dtype == DType::I8) != quant.act_scheme.is_signed() {
        bail!(
            "the model was converted with another scheme than the checkpoint was trained with \
             (convert without --scheme to compare them)"
        );
    }
    let (qmin, qmax) = (quant.act_scheme.qmin(), quant.act_scheme.qmax());
    let device = eval_device();
    let chw = split.images_chw();
    let set = image_set_chw(split, &chw);
    let n = limit.min(split.len);
    let mut cmp = Comparison {
        images: n,
        ..Default::default()
    };
    // Which tapped activations the graph holds, with their params; the logits are handled apart.
    // (tap index, tensor, params, shape, code range: the input's pixel codes are 8-bit below
    // 8-bit activations).
    type Layer = (usize, TensorId, QuantParams, Vec<usize>, (i32, i32));
    let mut layer_ids: Vec<Layer> = Vec::new();
    let (mut float_ok, mut fq_ok, mut int_ok) = (0usize, 0usize, 0usize);
    let bar = Progress::new("compare", n, progress);
    for start in (0..n).step_by(BATCH) {
        let idx: Vec<usize> = (start..(start + BATCH).min(n)).collect();
        let float = forward_taps(&l.net, &set, &idx, None, false, edges, &device)?;
        let fq = forward_taps(&l.net, &set, &idx, Some(quant), true, edges, &device)?;
        let fq32 = forward_taps(&l.net, &set, &idx, Some(quant), false, edges, &device)?;
        if start == 0 {
            for (k, t) in fq.iter().enumerate() {
                let Some(id) = g.tensor_by_name(&t.name) else {
                    continue;
                };
                let et = g.tensor(id);
                let Some(p) = et.params() else { continue };
                let producer = producer(g, id);
                let want: usize = t.dims[1..].iter().product();
                if et.is_constant() || et.num_elements() != want {
                    continue;
                }
                cmp.layers.push(LayerStat::new(&t.name, &producer));
                let codes = et.code_limits().unwrap_or((qmin, qmax));
                layer_ids.push((k, id, p, et.shape.clone(), codes));
            }
        }
        let mut wanted = vec![logits_id];
        wanted.extend(layer_ids.iter().map(|x| x.1));
        let outs = par_map(idx.len(), |j| {
            Ok(model.run_with(&[engine_input(model, split, idx[j])?], &wanted)?)
        })?;
        let out_p = g
            .tensor(logits_id)
            .params()
            .context("the logits tensor has no params")?;
        let fl = float.last().context("no logits")?;
        let fql = fq.last().context("no logits")?;
        let fq32l = fq32.last().context("no logits")?;
        let k = fql.dims[1];
        for (j, &i) in idx.iter().enumerate() {
            let label = split.labels[i] as usize;
            let f_row = &fl.values[j * k..(j + 1) * k];
            let q_row = &fql.values[j * k..(j + 1) * k];
            let int_row = codes(&outs[j][0]);
            let fq_codes: Vec<i32> = q_row
                .iter()
                .map(|&v| out_p.quantize(v, qmin, qmax))
                .collect();
            float_ok += (argmax(f_row) == label) as usize;
            fq_ok += (argmax(q_row) == label) as usize;
            int_ok += (argmax(&int_row) == label) as usize;
            cmp.top1_mismatch += (argmax(&fq_codes) != argmax(&int_row)) as usize;
            let fq32_codes: Vec<i32> = fq32l.values[j * k..(j + 1) * k]
                .iter()
                .map(|&v| out_p.quantize(v, qmin, qmax))
                .collect();
            cmp.f32_top1_mismatch += (argmax(&fq32_codes) != argmax(&int_row)) as usize;
            for (a, b) in fq32_codes.iter().zip(&int_row) {
                cmp.f32_max_lsb_diff = cmp.f32_max_lsb_diff.max((a - b).abs() as i64);
            }
            for (a, b) in fq_codes.iter().zip(&int_row) {
                let d = (a - b).abs() as i64;
                cmp.max_lsb_diff = cmp.max_lsb_diff.max(d);
                cmp.logits_differing += (d != 0) as u64;
                cmp.logits_total += 1;
            }
            for (li, (tap_k, _, p, shape, codes_range)) in layer_ids.iter().enumerate() {
                let (ft, qt) = (&float[*tap_k], &fq[*tap_k]);
                let ints = codes(&outs[j][li + 1]);
                debug_assert_eq!(shape.iter().product::<usize>(), ints.len());
                cmp.layers[li].add_image(
                    &ints,
                    &ft.values,
                    &qt.values,
                    &qt.dims,
                    j,
                    *p,
                    *codes_range,
                );
            }
        }
        bar.at(idx[idx.len() - 1] + 1);
    }
    bar.done();
    let d = n.max(1) as f64;
    cmp.float_acc = float_ok as f64 / d;
    cmp.fq_acc = fq_ok as f64 / d;
    cmp.int8_acc = int_ok as f64 / d;
    Ok(cmp)
}

fn db(x: f64) -> String {
    if x.is_infinite() {
        "exact".into()
    } else {
        format!("{x:.1}")
    }
}

/// The human-readable comparison table.
pub fn print_comparison(c: &Comparison) {
    println!("accuracy on {} test images:", c.images);
    println!(
        "  float (QAT weights, no quantization) {:>7.2}%",
        100.0 * c.float_acc
    );
    println!(
        "  fake-quant                           {:>7.2}%",
        100.0 * c.fq_acc
    );
    println!(
        "  int8 (integer engine)                {:>7.2}%",
        100.0 * c.int8_acc
    );
    println!(
        "fake-quant vs int8: top-1 mismatches {} of {}; logits differing {} of {}; max difference {} LSB",
        c.top1_mismatch, c.images, c.logits_differing, c.logits_total, c.max_lsb_diff
    );
    println!(
        "  (fake-quant evaluated exactly in f64; in f32 as training computes it: {} mismatches, max {} LSB)",
        c.f32_top1_mismatch, c.f32_max_lsb_diff
    );
    if !c.layers.is_empty() {
        println!();
        print_layers(&c.layers);
    }
}

/// The per-layer table of a comparison: one row per engine tensor, in graph order.
pub fn print_layers(layers: &[LayerStat]) {
    let w = layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(0)
        .max(18);
    println!(
        "{:<w$} {:<16} {:>14} {:>14} {:>8} {:>12}",
        "tensor", "op", "SQNR float dB", "SQNR fq dB", "max LSB", "differing"
    );
    for l in layers {
        println!(
            "{:<w$} {:<16} {:>14} {:>14} {:>8} {:>12}",
            l.name,
            l.op,
            db(l.sqnr_float()),
            db(l.sqnr_fq()),
            l.max_lsb,
            format!("{}/{}", l.diff_elems, l.elems)
        );
    }
}

/// The kind of the op that writes tensor `id` of `g` (`input` for a graph input).
pub fn producer(g: &intq_engine::Graph, id: TensorId) -> String {
    g.ops()
        .iter()
        .find(|op| op.output() == id)
        .map_or("input".to_string(), |op| op.kind().name().to_string())
}

/// Size of a model's constants stored as f32 (the float model's weights), in bytes.
pub fn float_weight_bytes(model: &Model) -> usize {
    model
        .graph()
        .tensors()
        .iter()
        .filter(|t| t.is_constant())
        .map(|t| t.num_elements() * 4)
        .sum()
}

/// Median milliseconds per image of `Model::run` and `Model::run_float` over the same inputs.
pub fn time_engine(model: &Model, split: &Split, images: usize) -> Result<(f64, f64)> {
    let n = images.min(split.len).max(1);
    let inputs: Vec<TensorData> = (0..n)
        .map(|i| engine_input(model, split, i % split.len))
        .collect::<Result<_>>()?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // One warm-up run each (the float constants are built on first use).
    model.run(&inputs[..1])?;
    model.run_float(&inputs[..1])?;
    let mut int_ms = Vec::with_capacity(n);
    let mut float_ms = Vec::with_capacity(n);
    for x in &inputs {
        let t = Instant::now();
        std::hint::black_box(model.run(std::slice::from_ref(x))?);
        int_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        std::hint::black_box(model.run_float(std::slice::from_ref(x))?);
        float_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(int_ms), median(float_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_json_keeps_its_keys_in_order_and_spells_infinity_null() {
        let c = Comparison {
            images: 3,
            float_acc: 0.5,
            fq_acc: 1.0,
            int8_acc: 0.25,
            top1_mismatch: 1,
            max_lsb_diff: 2,
            logits_differing: 4,
            logits_total: 30,
            f32_top1_mismatch: 0,
            f32_max_lsb_diff: 3,
            layers: vec![LayerStat {
                name: "body0 \"x\"".into(),
                op: "Conv2d".into(),
                elems: 8,
                float_sig: 100.0,
                float_err: 1.0,
                fq_sig: 5.0,
                fq_err: 0.0,
                max_lsb: 0,
                diff_elems: 0,
            }],
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            "{\"images\":3,\"float_acc\":0.5,\"fq_acc\":1.0,\"int8_acc\":0.25,\
             \"top1_mismatch\":1,\"max_lsb_diff\":2,\"logits_differing\":4,\"logits_total\":30,\
             \"f32_top1_mismatch\":0,\"f32_max_lsb_diff\":3,\"layers\":[{\"name\":\"body0 \\\"x\\\"\",\
             \"op\":\"Conv2d\",\"sqnr_float_db\":20.0,\"sqnr_fq_db\":null,\"max_lsb\":0,\
             \"differing\":0,\"elements\":8}]}"
        );
    }
}
