//! `intq inspect` and `intq run` on float `.onnx` models: the graph intq imports from the file,
//! and that graph run in f32 on `.npy` inputs in the model's own layout (NCHW) at any batch;
//! `intq qat --from MODEL.onnx`, `intq ptq --from MODEL.onnx`, `intq convert` and `intq eval` of
//! the checkpoints they write, and `intq export MODEL --onnx` (QDQ).

use crate::fidelity::LayerStat;
use anyhow::{bail, Context, Result};
use intq_cli::npy;
use intq_data::image_folder::ImageFolderOptions;
use intq_data::source::{DataSpec, OpenOptions};
use intq_engine::{Model, QuantParams, TensorData};
use intq_onnx::eval::{run_values, Tensor};
use intq_train::graph_ckpt;
use intq_train::graph_net::GraphNet;
use intq_train::layers::LayerOpts;
use intq_train::{train_device, Ctx, QuantCfg};
use std::path::{Path, PathBuf};

/// Whether `path` names an ONNX model (by its extension).
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// `intq inspect MODEL.onnx`: what intq imports from the file.
pub fn inspect(path: &Path) -> Result<()> {
    let graph = intq_onnx::load(path)?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    print!(
        "model {}: {size} bytes, float ONNX (N is the batch)\n{graph}",
        path.display()
    );
    Ok(())
}

/// `intq run MODEL.onnx -i X.npy ... -o Y.npy ...`: float32 `.npy` in and out.
pub fn run(
    path: &Path,
    input_paths: &[PathBuf],
    output_paths: &[PathBuf],
    tensor: Option<&str>,
) -> Result<()> {
    let graph = intq_onnx::load(path)?;
    if input_paths.len() != graph.inputs.len() {
        bail!(
            "{} takes {} input(s), {} given",
            path.display(),
            graph.inputs.len(),
            input_paths.len()
        );
    }
    let mut inputs = Vec::with_capacity(input_paths.len());
    for p in input_paths {
        let a = npy::read(p)?;
        let TensorData::F32(data) = a.data else {
            bail!(
                "{}: dtype {} but ONNX models take float32",
                p.display(),
                a.data.dtype()
            );
        };
        inputs.push(Tensor {
            shape: a.shape,
            data,
        });
    }
    let wanted = match tensor {
        Some(name) => vec![graph
            .values
            .iter()
            .rposition(|v| v.name == name)
            .with_context(|| {
                format!(
                    "{} has no activation named '{name}' (see `intq inspect`)",
                    path.display()
                )
            })?],
        None => graph.outputs.clone(),
    };
    if output_paths.len() != wanted.len() {
        bail!(
            "{} output path(s) given for {} tensor(s)",
            output_paths.len(),
            wanted.len()
        );
    }
    let results =
        run_values(&graph, &inputs, &wanted).with_context(|| format!("{}", path.display()))?;
    for (p, t) in output_paths.iter().zip(results) {
        npy::write(
            p,
            &npy::Array {
                shape: t.shape,
                data: TensorData::F32(t.data),
            },
        )?;
    }
    Ok(())
}

/// `intq qat --from MODEL.onnx`: the options of `intq qat` an imported network uses.
pub struct QatOptions<'a> {
    pub from: &'a Path,
    pub data: Option<&'a str>,
    pub data_dir: Option<&'a Path>,
    pub epochs: Option<usize>,
    pub batch_size: usize,
    pub lr: Option<f64>,
    pub momentum: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    pub out: &'a Path,
    pub bits_w: u8,
    pub bits_a: u8,
    pub scheme: Option<&'a str>,
    pub per_channel: bool,
    pub quant_delay: u64,
    pub freeze_bn_after: Option<usize>,
    /// `--normalize`: what the ONNX model's input expects of the pictures `p/255`.
    pub normalize: Option<&'a intq_data::Normalize>,
    /// `--resume`: continue the run whose checkpoint is `out`.
    pub resume: bool,
    /// `--augment` (default: none, or the resumed run's).
    pub augment: Option<intq_train::augment::Augment>,
    /// `--metrics` (default: `out` with `.metrics.jsonl` appended).
    pub metrics: Option<&'a Path>,
    /// `--shards`: an imported network trains single-batch steps, so only 1 is taken.
    pub shards: Option<usize>,
    /// Stop after this many optimizer steps in all (a run cut short, to `--resume` later).
    pub max_steps: Option<u64>,
    /// `--schedule` / `--warmup`: how the learning rate moves over the run.
    pub schedule: intq_train::trainer::LrSchedule,
    /// `--label-smoothing`, in `[0, 1)`.
    pub label_smoothing: f64,
    /// `--ckpt-every`: also write the checkpoint every this many steps within an epoch.
    pub ckpt_every: Option<u64>,
    /// `--log-every`: also log the mean train loss of every this many steps (0: epochs only).
    pub log_every: u64,
    /// `--freeze-observers-after`: activation ranges stop moving from this epoch on.
    pub freeze_observers_after: Option<usize>,
    /// `intq train --from`: fine-tune in float (no fake quantization); the checkpoint is what
    /// `intq qat --from` then starts from.
    pub float: bool,
}

/// The `--augment` spelling of `a` (as the checkpoint records it).
fn augment_spec(a: &intq_train::augment::Augment) -> String {
    let mut parts = Vec::new();
    if let Some(p) = a.crop {
        parts.push(format!("crop:{p}"));
    }
    if a.flip {
        parts.push("flip".to_string());
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

fn quant_cfg(scheme: &str, bits_a: u8, bits_w: u8, per_channel: bool) -> Result<QuantCfg> {
    Ok(match scheme {
        "uint8" if per_channel => {
            bail!("--per-channel needs --scheme int8 (uint8 weights are per tensor)")
        }
        "uint8" => QuantCfg::uint8(bits_a, bits_w)?,
        "int8" => QuantCfg::int8(bits_a, bits_w, per_channel)?,
        other => bail!("unknown --scheme {other:?}; use uint8 or int8"),
    })
}

/// [`batch`] with each training picture augmented by `aug`, its draws seeded by the run's
/// `seed`, the `epoch` and the picture's index (as the zoo's trainer draws them).
fn augmented_batch(
    split: &intq_data::Split,
    chw: &[u8],
    idx: &[usize],
    aug: &intq_train::augment::Augment,
    seed: u64,
    epoch: usize,
) -> (Vec<f32>, Vec<i64>) {
    let (x, y) = batch(split, chw, idx);
    if aug.is_none() {
        return (x, y);
    }
    let (c, h, w) = (split.channels, split.rows, split.cols);
    let size = c * h * w;
    let mut out = Vec::with_capacity(x.len());
    for (k, &i) in idx.iter().enumerate() {
        let mut rng = intq_train::augment::sample_rng(seed, epoch, i);
        out.extend(aug.apply(&x[k * size..(k + 1) * size], c, h, w, &mut rng));
    }
    (out, y)
}

/// Pixels `p/255` of `split`'s images `idx`, NCHW, and their labels.
fn batch(split: &intq_data::Split, chw: &[u8], idx: &[usize]) -> (Vec<f32>, Vec<i64>) {
    let size = split.channels * split.rows * split.cols;
    let mut x = Vec::with_capacity(idx.len() * size);
    for &i in idx {
        x.extend(
            chw[i * size..(i + 1) * size]
                .iter()
                .map(|&p| p as f32 / 255.0),
        );
    }
    (x, idx.iter().map(|&i| split.labels[i] as i64).collect())
}

fn top1(logits: &[f32], labels: &[i64]) -> usize {
    let k = logits.len() / labels.len().max(1);
    logits
        .chunks(k)
        .zip(labels)
        .filter(|(row, &l)| {
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0;
            best as i64 == l
        })
        .count()
}

/// QAT fine-tuning (or with `o.float` float fine-tuning) of an imported float network on
/// `--data`, whose pictures are brought to the model's input size and channels and fed as `p/255`
/// in NCHW (the model's own preprocessing beyond that is not applied). `o.from` is the ONNX model
/// or a float fine-tune's checkpoint of one. Writes a checkpoint of the network with its ONNX
/// model after every epoch (`intq convert` takes a QAT one alone).
pub fn qat(o: &QatOptions) -> Result<()> {
    use intq_train::sgd::{SgdStep, Velocity};
    use std::io::Write;
    let scheme = o
        .scheme
        .unwrap_or(if o.per_channel { "int8" } else { "uint8" });
    let mut q = quant_cfg(scheme, o.bits_a, o.bits_w, o.per_channel)?;
    q.quant_delay = o.quant_delay;
    if let Some(n) = o.shards.filter(|&n| n != 1) {
        bail!(
            "--shards {n}: an imported network trains each batch in one piece; leave --shards out \
             (or give 1)"
        );
    }
    let from = o.from.display();
    let device = train_device();
    // A float fine-tune's checkpoint carries its ONNX model, network and data.
    let base = if is_graph_checkpoint(o.from) {
        let l = graph_ckpt::load(o.from, LayerOpts::default(), &device)
            .with_context(|| format!("--from {from}"))?;
        if let Some(s) = l.meta.get("scheme") {
            bail!(
                "--from {from} is a QAT checkpoint ({s}): convert it with `intq convert`, or \
                 continue its run with `--resume --out {from}`"
            );
        }
        if o.float {
            bail!(
                "--from {from} is a checkpoint: continue its float run with `--resume --out \
                 {from}`, or fine-tune it with fake quantization by `intq qat --from {from}`"
            );
        }
        Some(l)
    } else {
        None
    };
    let onnx = match &base {
        Some(l) => l.onnx.clone(),
        None => std::fs::read(o.from).with_context(|| format!("--from {from}"))?,
    };
    let graph = intq_onnx::load_bytes(&onnx).with_context(|| format!("--from {from}"))?;
    let mut meta =
        std::collections::HashMap::from([("from".to_string(), o.from.display().to_string())]);
    if !o.float {
        meta.extend([
            ("scheme".to_string(), scheme.to_string()),
            ("bits_a".to_string(), o.bits_a.to_string()),
            ("bits_w".to_string(), o.bits_w.to_string()),
            ("per_channel".to_string(), o.per_channel.to_string()),
        ]);
    }
    // A resumed run continues the checkpoint's network, momentum and record.
    let (mut net, mut vel, start, augment) = if o.resume {
        let out = o.out.display();
        let l = graph_ckpt::load(o.out, LayerOpts::default(), &device)
            .with_context(|| format!("--resume: reading {out}"))?;
        if l.onnx != onnx {
            bail!("--resume: {out} was trained from another ONNX model than {from}");
        }
        for k in ["scheme", "bits_a", "bits_w", "per_channel"] {
            if l.meta.get(k) != meta.get(k) {
                bail!(
                    "--resume: {out} holds a run with {k} {:?}, not this run's {:?}",
                    l.meta.get(k).map(String::as_str).unwrap_or("(none)"),
                    meta.get(k).map(String::as_str).unwrap_or("(none)")
                );
            }
        }
        if let Some(n) = o.normalize.filter(|n| **n != l.net.normalize) {
            bail!(
                "--normalize {n}: {out} was trained with --normalize {}; a run that continues it \
                 keeps its normalization (leave --normalize out)",
                l.net.normalize
            );
        }
        let epoch: usize = get(&l, o.out, "epoch")?
            .parse()
            .with_context(|| format!("{out}: metadata \"epoch\""))?;
        // A checkpoint written within an epoch (--ckpt-every, --max-steps) records how far into
        // the next epoch it is, and that epoch's loss so far.
        let within: usize = match l.meta.get("epoch_batches") {
            Some(b) => b
                .parse()
                .with_context(|| format!("{out}: metadata \"epoch_batches\""))?,
            None => 0,
        };
        let loss_so_far: f64 = match l.meta.get("epoch_loss_sum") {
            Some(v) => v
                .parse()
                .with_context(|| format!("{out}: metadata \"epoch_loss_sum\""))?,
            None => 0.0,
        };
        // The --log-every window the cut run had open.
        let window = match l.meta.get("log_window") {
            Some(v) => v
                .split_once(',')
                .and_then(|(s, n)| Some((s.parse::<f64>().ok()?, n.parse::<u64>().ok()?)))
                .with_context(|| format!("{out}: metadata \"log_window\" {v:?}"))?,
            None => (0.0, 0),
        };
        let recorded = match l.meta.get("augment") {
            Some(a) => intq_train::augment::Augment::parse(a)
                .with_context(|| format!("{out}: metadata \"augment\""))?,
            None => Default::default(),
        };
        let augment = o.augment.unwrap_or(recorded);
        meta.extend(l.meta.into_iter().filter(|(k, _)| k == "data"));
        if within > 0 {
            eprintln!(
                "resuming {out} in epoch {}, after {within} of its steps",
                epoch + 1
            );
        } else {
            eprintln!("resuming {out} after epoch {epoch}");
        }
        (
            l.net,
            l.velocity,
            (epoch, within, loss_so_far, window),
            augment,
        )
    } else if let Some(l) = base {
        // QAT of a float fine-tune: its network and normalization, a fresh momentum.
        if let Some(n) = o.normalize.filter(|n| **n != l.net.normalize) {
            bail!(
                "--normalize {n}: {from} was trained with --normalize {}; QAT keeps it (leave \
                 --normalize out)",
                l.net.normalize
            );
        }
        let recorded = match l.meta.get("augment") {
            Some(a) => intq_train::augment::Augment::parse(a)
                .with_context(|| format!("{from}: metadata \"augment\""))?,
            None => Default::default(),
        };
        meta.extend(l.meta.into_iter().filter(|(k, _)| k == "data"));
        (
            l.net,
            Velocity::default(),
            (0, 0, 0.0, (0.0, 0)),
            o.augment.unwrap_or(recorded),
        )
    } else {
        let mut net = GraphNet::from_graph(&graph, LayerOpts::default(), &device)
            .with_context(|| format!("--from {from}"))?;
        if let Some(n) = o.normalize {
            net.set_normalize(n)
                .with_context(|| format!("--from {from} with --normalize {n}"))?;
        }
        (
            net,
            Velocity::default(),
            (0, 0, 0.0, (0.0, 0)),
            o.augment.unwrap_or_default(),
        )
    };
    let (start, start_within, start_loss, start_window) = start;
    let classes = graph.value(net.logits).shape[1];
    let name = match o.data {
        Some(d) => d.to_string(),
        None => match meta.get("data") {
            Some(d) => d.clone(),
            None => bail!("--from {from} is an ONNX model: name its training data with --data"),
        },
    };
    let (train, test) = load_data(&name, o.data_dir, &net, classes, o.from)?;
    let train = train.subset(o.limit_train.unwrap_or(usize::MAX));
    let test = test.subset(o.limit_test.unwrap_or(usize::MAX));
    let (train_chw, test_chw) = (train.images_chw(), test.images_chw());
    let epochs = o.epochs.unwrap_or(3);
    if start >= epochs {
        bail!(
            "--resume: {} has {start} epochs done; --epochs {epochs} leaves none to run",
            o.out.display()
        );
    }
    let lr = o.lr.unwrap_or(0.005);
    o.schedule.validate()?;
    if !(0.0..1.0).contains(&o.label_smoothing) {
        bail!("--label-smoothing {}: must be in [0, 1)", o.label_smoothing);
    }
    let bs = o.batch_size.max(1);
    let per_epoch = train.len.div_ceil(bs) as u64;
    if start_within as u64 >= per_epoch {
        bail!(
            "--resume: {} is {start_within} steps into an epoch of {per_epoch} steps; was it \
             trained with another --batch-size or data?",
            o.out.display()
        );
    }
    let total = per_epoch * epochs as u64;
    let mut step = per_epoch * start as u64 + start_within as u64;
    meta.insert("data".into(), name.clone());
    meta.insert(CLASSES.into(), serde_json::to_string(&train.class_names)?);
    meta.insert("augment".into(), augment_spec(&augment));
    meta.insert("schedule".into(), o.schedule.name().into());
    meta.insert("label_smoothing".into(), o.label_smoothing.to_string());
    let metrics_path = match o.metrics {
        Some(p) => p.to_path_buf(),
        None => {
            let mut m = o.out.as_os_str().to_owned();
            m.push(".metrics.jsonl");
            PathBuf::from(m)
        }
    };
    // A fresh run starts its log; a resumed one appends to it.
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(o.resume)
        .truncate(!o.resume)
        .open(&metrics_path)
        .with_context(|| format!("metrics log {}", metrics_path.display()))?;
    let (mut win_sum, mut win_n) = start_window;
    for epoch in start..epochs {
        let t_epoch = std::time::Instant::now();
        let q_epoch = QuantCfg {
            freeze_bn: o.freeze_bn_after.is_some_and(|e| epoch >= e),
            freeze_observers: o.freeze_observers_after.is_some_and(|e| epoch >= e),
            ..q
        };
        meta.insert("freeze_bn".into(), q_epoch.freeze_bn.to_string());
        meta.insert(
            "freeze_observers".into(),
            q_epoch.freeze_observers.to_string(),
        );
        // The order and the augmentation draws depend only on the seed, the epoch and the
        // picture, so a run resumed within an epoch skips the batches it has done.
        let order = intq_train::trainer::shuffled(train.len, o.seed, epoch);
        let skip = if epoch == start { start_within } else { 0 };
        let mut loss_sum = if epoch == start { start_loss } else { 0.0 };
        for (batch_no, idx) in order.chunks(bs).enumerate().skip(skip) {
            // A checkpoint within the epoch: the network, momentum and observers after
            // `batch_no` steps of it, which a resume continues exactly.
            let save_within = |meta: &mut std::collections::HashMap<String, String>,
                               net: &GraphNet,
                               vel: &Velocity,
                               loss_sum: f64,
                               window: (f64, u64)|
             -> Result<()> {
                meta.insert("epoch".into(), epoch.to_string());
                meta.insert("epoch_batches".into(), batch_no.to_string());
                meta.insert("epoch_loss_sum".into(), format!("{loss_sum:e}"));
                meta.insert("log_window".into(), format!("{:e},{}", window.0, window.1));
                graph_ckpt::save(o.out, net, &onnx, vel, meta)?;
                Ok(())
            };
            if o.max_steps.is_some_and(|m| step >= m) {
                if batch_no > 0 {
                    save_within(&mut meta, &net, &vel, loss_sum, (win_sum, win_n))?;
                }
                if step == 0 {
                    println!("stopped before the first step (--max-steps); nothing written");
                    return Ok(());
                }
                println!(
                    "stopped after {step} steps (--max-steps), {batch_no} steps into epoch {}; \
                     {} holds {}; --resume continues it",
                    epoch + 1,
                    o.out.display(),
                    if batch_no > 0 {
                        format!("those {batch_no} steps")
                    } else {
                        format!("the end of epoch {epoch}")
                    }
                );
                return Ok(());
            }
            if batch_no > skip && o.ckpt_every.is_some_and(|k| step.is_multiple_of(k)) {
                save_within(&mut meta, &net, &vel, loss_sum, (win_sum, win_n))?;
            }
            let (x, y) = augmented_batch(&train, &train_chw, idx, &augment, o.seed, epoch);
            let ctx = Ctx {
                training: true,
                step,
                quant: (!o.float).then_some(q_epoch),
                exact: false,
                log: None,
            };
            let sgd = SgdStep {
                lr: o.schedule.lr(lr, step, total),
                momentum: o.momentum,
                weight_decay: o.weight_decay,
            };
            let loss =
                net.train_step_host(&x, &y, &ctx, &mut vel, sgd, o.label_smoothing, &device)?;
            loss_sum += loss * idx.len() as f64;
            step += 1;
            (win_sum, win_n) = (win_sum + loss, win_n + 1);
            if o.log_every > 0 && step.is_multiple_of(o.log_every) {
                writeln!(
                    metrics,
                    "{{\"step\":{step},\"epoch_f\":{:.4},\"train_loss\":{:.6}}}",
                    epoch as f64 + (batch_no + 1) as f64 / per_epoch as f64,
                    win_sum / win_n as f64
                )
                .with_context(|| format!("metrics log {}", metrics_path.display()))?;
                (win_sum, win_n) = (0.0, 0);
            }
        }
        let mut correct = 0;
        for idx in (0..test.len).collect::<Vec<_>>().chunks(bs) {
            let (x, y) = batch(&test, &test_chw, idx);
            let logits = net.logits_host(
                &x,
                idx.len(),
                &Ctx::eval((!o.float).then_some(q_epoch)),
                &device,
            )?;
            correct += top1(&logits, &y);
        }
        meta.insert("epoch".into(), (epoch + 1).to_string());
        meta.remove("epoch_batches");
        meta.remove("epoch_loss_sum");
        meta.insert("log_window".into(), format!("{win_sum:e},{win_n}"));
        graph_ckpt::save(o.out, &net, &onnx, &vel, &meta)?;
        let (loss, acc) = (
            loss_sum / train.len as f64,
            correct as f64 / test.len.max(1) as f64,
        );
        // The zoo trainer's epoch line (`intq curve` draws it); no training accuracy is kept.
        writeln!(
            metrics,
            "{{\"epoch\":{},\"step\":{step},\"train_loss\":{loss:.6},\"train_accuracy\":null,\
             \"test_accuracy\":{acc:.6},\"epoch_seconds\":{:.3},\"lr\":{:.6},\"qat\":{}}}",
            epoch + 1,
            t_epoch.elapsed().as_secs_f64(),
            o.schedule.lr(lr, step, total),
            !o.float,
        )
        .with_context(|| format!("metrics log {}", metrics_path.display()))?;
        println!(
            "epoch {}/{epochs}: train loss {loss:.4}, {} test accuracy {:.2}% ({} images); saved {}",
            epoch + 1,
            if o.float { "float" } else { "fake-quant" },
            100.0 * acc,
            test.len,
            o.out.display()
        );
        if o.max_steps.is_some_and(|m| step >= m) {
            break;
        }
    }
    Ok(())
}

/// `--data NAME` with its pictures brought to `net`'s input (channels and size), checked
/// against its class count: the training and test splits.
fn load_data(
    name: &str,
    data_dir: Option<&Path>,
    net: &GraphNet,
    classes: usize,
    model: &Path,
) -> Result<(intq_data::Split, intq_data::Split)> {
    let from = model.display();
    let [c, h, w] = net.input_shape;
    let opts = OpenOptions {
        data_dir: data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(intq_data::default_data_dir),
        image: ImageFolderOptions {
            size: Some((h, w)),
            channels: Some(c),
            ..ImageFolderOptions::default()
        },
        cifar100_coarse: false,
        num_classes: None,
        use_manifest: false,
    };
    let ds = intq_data::source::open(&DataSpec::parse(name), &opts)
        .with_context(|| format!("--data {name}"))?
        .dataset;
    for (what, s) in [("training", &ds.train), ("test", &ds.test)] {
        if [s.channels, s.rows, s.cols] != [c, h, w] {
            bail!(
                "--data {name}: {what} pictures are {}x{}x{}, {from} takes {c}x{h}x{w}",
                s.channels,
                s.rows,
                s.cols
            );
        }
    }
    if ds.train.num_classes() != classes || ds.train.len == 0 {
        bail!(
            "--data {name} has {} classes and {} training pictures; {from} predicts {classes} \
             classes",
            ds.train.num_classes(),
            ds.train.len
        );
    }
    Ok((ds.train, ds.test))
}

/// `intq ptq --from MODEL.onnx`: min/max calibration of the imported float network on the
/// first `calib` training pictures of `--data` (as `p/255` NCHW, normalized by the network), then
/// conversion: raw uint8 pixels in, logit codes out, the input contract in the metadata.
#[allow(clippy::too_many_arguments)]
pub fn ptq(
    model: &Path,
    data: Option<&str>,
    data_dir: Option<&Path>,
    calib: usize,
    method: &str,
    scheme: &str,
    per_channel: bool,
    bits_a: u8,
    bits_w: u8,
    normalize: Option<&intq_data::Normalize>,
    out: &Path,
) -> Result<()> {
    let from = model.display();
    if method != "minmax" {
        bail!("--method {method}: an imported network calibrates with minmax only for now");
    }
    let q = quant_cfg(scheme, bits_a, bits_w, per_channel)?;
    let device = train_device();
    // The ONNX model, or a float fine-tune's checkpoint of one (its weights, normalization and
    // data).
    let (graph, net, recorded) = if is_graph_checkpoint(model) {
        let l = graph_ckpt::load(model, LayerOpts::default(), &device)
            .with_context(|| format!("--from {from}"))?;
        if let Some(s) = l.meta.get("scheme") {
            bail!("--from {from} is a QAT checkpoint ({s}): convert it with `intq convert`");
        }
        if let Some(n) = normalize.filter(|n| **n != l.net.normalize) {
            bail!(
                "--normalize {n}: {from} was trained with --normalize {}; leave --normalize out",
                l.net.normalize
            );
        }
        (l.graph, l.net, l.meta.get("data").cloned())
    } else {
        let graph = intq_onnx::load(model).with_context(|| format!("--from {from}"))?;
        let mut net = GraphNet::from_graph(&graph, LayerOpts::default(), &device)
            .with_context(|| format!("--from {from}"))?;
        if let Some(n) = normalize {
            net.set_normalize(n)
                .with_context(|| format!("--from {from} with --normalize {n}"))?;
        }
        (graph, net, None)
    };
    let classes = graph.value(net.logits).shape[1];
    let Some(name) = data.or(recorded.as_deref()) else {
        bail!("--from {from} is an ONNX model: name its calibration data with --data");
    };
    let (train, _) = load_data(name, data_dir, &net, classes, model)?;
    let train = train.subset(calib);
    let chw = train.images_chw();
    let batches: Vec<(Vec<f32>, usize)> = (0..train.len)
        .collect::<Vec<_>>()
        .chunks(64)
        .map(|idx| (batch(&train, &chw, idx).0, idx.len()))
        .collect();
    net.calibrate_minmax(&batches, &device)
        .with_context(|| format!("calibrating {from}"))?;
    let q = QuantCfg {
        freeze_bn: true,
        ..q
    };
    let mut int_graph = intq_train::graph_export::export_graph(&net, &q, false)
        .with_context(|| format!("quantizing {from}"))?;
    record_input(&mut int_graph, &net, &train.class_names)?;
    let m = Model::new(int_graph).with_context(|| format!("quantizing {from}"))?;
    m.save(out)?;
    println!(
        "wrote {} ({} ops), calibrated on {} images (minmax)",
        out.display(),
        m.graph().ops().len(),
        train.len
    );
    Ok(())
}

/// Whether `path` is a checkpoint of an imported network.
pub fn is_graph_checkpoint(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| graph_ckpt::is_graph_checkpoint(&b))
}

/// `intq convert CKPT` for a checkpoint of an imported network: the integer model of its
/// fake-quant network, raw uint8 pixels in (NHWC) and logit codes out, or with `float_edges` the
/// real values of the pixel codes in and f32 logits out; the input contract and the class names
/// go into the model's metadata, so `intq eval MODEL --data D` needs no checkpoint.
pub fn convert(ckpt: &Path, out: &Path, scheme: Option<&str>, float_edges: bool) -> Result<Model> {
    let l = graph_ckpt::load(ckpt, LayerOpts::default(), &train_device())?;
    let trained = get(&l, ckpt, "scheme")?;
    if scheme.is_some_and(|s| s != trained) {
        bail!(
            "{} was trained with the {trained} scheme; an imported network converts with it",
            ckpt.display()
        );
    }
    let q = ckpt_quant(&l, ckpt)?;
    let mut graph = intq_train::graph_export::export_graph(&l.net, &q, float_edges)
        .with_context(|| format!("converting {}", ckpt.display()))?;
    let classes: Vec<String> = match l.meta.get(CLASSES) {
        Some(v) => serde_json::from_str(v)
            .with_context(|| format!("{}: metadata {CLASSES:?}", ckpt.display()))?,
        None => Vec::new(),
    };
    record_input(&mut graph, &l.net, &classes)?;
    let model = Model::new(graph).with_context(|| format!("converting {}", ckpt.display()))?;
    model.save(out)?;
    Ok(model)
}

/// The checkpoint metadata key of the training data's class names (a JSON array).
const CLASSES: &str = "classes";

/// Writes the `intq.input` and `intq.classes` metadata of `graph`, the integer model of `net`
/// (the keys `intq convert` writes for the zoo's networks): NHWC pictures stretched to the
/// network's input size, uint8 pixels or, with a float input, the real values of their codes,
/// and the normalization the network's first layer reads (`--normalize` composed with the
/// graph's own preprocessing).
fn record_input(graph: &mut intq_engine::Graph, net: &GraphNet, classes: &[String]) -> Result<()> {
    use crate::fidelity::{ModelInput, NormalizeRecord, CLASSES_KEY, INPUT_KEY};
    let [c, h, w] = net.input_shape;
    let input = *graph.inputs().first().context("the model has no input")?;
    let float = graph.tensor(input).dtype == intq_engine::DType::F32;
    let pixels = net.input.params(false);
    let rec = ModelInput {
        layout: "NHWC".into(),
        dtype: if float { "float32" } else { "uint8" }.into(),
        height: h,
        width: w,
        channels: c,
        resize: "stretch".into(),
        normalize: NormalizeRecord {
            mean: net.input.mean.clone(),
            std: net.input.std.clone(),
        },
        pixel_scale: if float { pixels.scale } else { 1.0 },
        pixel_zero_point: if float { pixels.zero_point } else { 0 },
    };
    graph.set_metadata(INPUT_KEY, &serde_json::to_string(&rec)?)?;
    if !classes.is_empty() {
        graph.set_metadata(CLASSES_KEY, &serde_json::to_string(classes)?)?;
    }
    Ok(())
}

/// Metadata `k` of a checkpoint of an imported network.
fn get(l: &graph_ckpt::GraphCkpt, ckpt: &Path, k: &str) -> Result<String> {
    l.meta.get(k).cloned().with_context(|| {
        format!(
            "{}: metadata {k:?} is missing (not a QAT checkpoint)",
            ckpt.display()
        )
    })
}

/// The quantization a checkpoint of an imported network was trained with (its metadata).
fn ckpt_quant(l: &graph_ckpt::GraphCkpt, ckpt: &Path) -> Result<QuantCfg> {
    let bits = |k: &str| -> Result<u8> {
        get(l, ckpt, k)?
            .parse()
            .with_context(|| format!("{}: metadata {k:?}", ckpt.display()))
    };
    let mut q = quant_cfg(
        &get(l, ckpt, "scheme")?,
        bits("bits_a")?,
        bits("bits_w")?,
        get(l, ckpt, "per_channel")? == "true",
    )?;
    q.freeze_bn = get(l, ckpt, "freeze_bn")? == "true";
    Ok(q)
}

/// `intq eval` where the checkpoint is one of an imported network: `MODEL` the checkpoint
/// itself (its fake-quant test accuracy), or a converted model with `compare` its checkpoint
/// (float, fake-quant and integer accuracy, top-1 mismatches and logit-code differences between
/// the exact fake-quant evaluation and the integer model, as `intq eval --compare` reports them
/// for zoo networks).
pub fn eval(
    model: &Path,
    compare: Option<&Path>,
    data: Option<&str>,
    data_dir: Option<&Path>,
    limit: Option<usize>,
    json: bool,
) -> Result<()> {
    use serde::Serialize;
    let ckpt = compare.unwrap_or(model);
    if compare.is_some() && is_graph_checkpoint(model) {
        bail!(
            "--compare {}: {} is a checkpoint, not a model; --compare checks a converted model \
             against its checkpoint",
            ckpt.display(),
            model.display()
        );
    }
    let device = train_device();
    let l = graph_ckpt::load(ckpt, LayerOpts::default(), &device)?;
    let q = ckpt_quant(&l, ckpt)?;
    let name = match data {
        Some(d) => d.to_string(),
        None => get(&l, ckpt, "data").context("name the data with --data")?,
    };
    let classes = l.graph.value(l.net.logits).shape[1];
    let (_, test) = load_data(&name, data_dir, &l.net, classes, ckpt)?;
    let test = test.subset(limit.unwrap_or(usize::MAX));
    let chw = test.images_chw();
    let idx: Vec<usize> = (0..test.len).collect();
    let Some(model_path) = compare.map(|_| model) else {
        let mut correct = 0;
        for b in idx.chunks(64) {
            let (x, y) = batch(&test, &chw, b);
            let logits = l
                .net
                .logits_host(&x, b.len(), &Ctx::eval(Some(q)), &device)?;
            correct += top1(&logits, &y);
        }
        let acc = correct as f64 / test.len.max(1) as f64;
        if json {
            #[derive(Serialize)]
            struct Out<'a> {
                checkpoint: &'a str,
                images: usize,
                fq_acc: f64,
            }
            let out = Out {
                checkpoint: &ckpt.display().to_string(),
                images: test.len,
                fq_acc: acc,
            };
            println!("{}", serde_json::to_string(&out)?);
        } else {
            println!(
                "{} (QAT of an imported network, fake-quantized): top-1 accuracy {:.2}% on {} \
                 {name} test images",
                ckpt.display(),
                100.0 * acc,
                test.len
            );
        }
        return Ok(());
    };
    let m = crate::tflite_cmd::load_model(model_path)?;
    let g = m.graph();
    let logits_id = crate::fidelity::logits_codes_id(&m)?;
    let lt = g.tensor(logits_id);
    if (lt.dtype == intq_engine::DType::I8) != q.act_scheme.is_signed() {
        bail!(
            "{} was converted with another scheme than {} was trained with",
            model_path.display(),
            ckpt.display()
        );
    }
    let out_p = lt
        .params()
        .with_context(|| format!("{}: the logits have no params", model_path.display()))?;
    if crate::fidelity::model_input(&m)?.is_none() {
        bail!(
            "{}: the model records no input contract (intq.input); convert the checkpoint again",
            model_path.display()
        );
    }
    let (qmin, qmax) = (q.act_scheme.qmin(), q.act_scheme.qmax());
    let mut c = Comparison {
        images: test.len,
        ..Comparison::default()
    };
    // The engine tensors of the tapped activations, in graph order (tap index, tensor, params,
    // codes); found on the first batch.
    let mut rows: Vec<(usize, intq_engine::TensorId, QuantParams, (i32, i32))> = Vec::new();
    let (mut float_ok, mut fq_ok, mut int_ok) = (0, 0, 0);
    let set = crate::fidelity::image_set_chw(&test, &chw);
    for (bi, b) in idx.chunks(64).enumerate() {
        let y: Vec<i64> = b.iter().map(|&i| test.labels[i] as i64).collect();
        let (fl, float_taps) = graph_taps(&l.net, &set, b, &Ctx::eval(None), &device)?;
        let (fq, fq_taps) = graph_taps(&l.net, &set, b, &Ctx::eval_exact(q), &device)?;
        if bi == 0 {
            rows = layer_rows(&l.net, &m, &fq_taps, q);
            c.layers = rows
                .iter()
                .map(|&(_, id, _, _)| {
                    LayerStat::new(&g.tensor(id).name, &crate::fidelity::producer(g, id))
                })
                .collect();
        }
        let wanted: Vec<_> = std::iter::once(logits_id)
            .chain(rows.iter().map(|r| r.1))
            .collect();
        float_ok += top1(&fl, &y);
        fq_ok += top1(&fq, &y);
        let k = fq.len() / b.len();
        for (j, &i) in b.iter().enumerate() {
            // The model reads the same pictures as its metadata says: pixels or their reals.
            let px = crate::fidelity::engine_input(&m, &test, i)?;
            let out = m
                .run_with(&[px], &wanted)
                .with_context(|| format!("running {}", model_path.display()))?;
            let int_row = crate::fidelity::codes(&out[0]);
            let fq_codes: Vec<i32> = fq[j * k..(j + 1) * k]
                .iter()
                .map(|&v| out_p.quantize(v, qmin, qmax))
                .collect();
            let arg = crate::fidelity::argmax;
            int_ok += (arg(&int_row) == y[j] as usize) as usize;
            c.top1_mismatch += (arg(&fq_codes) != arg(&int_row)) as usize;
            for (a, b) in fq_codes.iter().zip(&int_row) {
                let d = (a - b).abs() as i64;
                c.max_lsb_diff = c.max_lsb_diff.max(d);
                c.logits_differing += (d != 0) as u64;
                c.logits_total += 1;
            }
            for (li, &(t, _, p, codes)) in rows.iter().enumerate() {
                let ints = crate::fidelity::codes(&out[li + 1]);
                let (ft, qt) = (&float_taps[t], &fq_taps[t]);
                c.layers[li].add_image(&ints, &ft.values, &qt.values, &qt.dims, j, p, codes);
            }
        }
    }
    let n = test.len.max(1) as f64;
    (c.float_acc, c.fq_acc, c.int8_acc) =
        (float_ok as f64 / n, fq_ok as f64 / n, int_ok as f64 / n);
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            model: &'a str,
            checkpoint: &'a str,
            #[serde(flatten)]
            comparison: &'a Comparison,
        }
        let out = Out {
            model: &model_path.display().to_string(),
            checkpoint: &ckpt.display().to_string(),
            comparison: &c,
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("{} vs {} on {name}:", model_path.display(), ckpt.display());
        println!(
            "  accuracy: float {:.2}%, fake-quant {:.2}%, int8 {:.2}% ({} images)",
            100.0 * c.float_acc,
            100.0 * c.fq_acc,
            100.0 * c.int8_acc,
            c.images
        );
        println!(
            "  fake-quant (exact) vs int8: {} top-1 mismatches, {}/{} logits differ, max {} LSB",
            c.top1_mismatch, c.logits_differing, c.logits_total, c.max_lsb_diff
        );
        if !c.layers.is_empty() {
            println!();
            crate::fidelity::print_layers(&c.layers);
        }
    }
    Ok(())
}

/// One tapped activation of an imported network's forward pass: the layer that wrote it (`None`
/// for the quantized input), its burn dimensions (`[N, C, H, W]`) and values.
struct GraphTap {
    layer: Option<usize>,
    dims: Vec<usize>,
    values: Vec<f32>,
}

/// The logits of pictures `idx` of `set` and every activation the network computes on the way,
/// in graph order.
fn graph_taps(
    net: &GraphNet,
    set: &intq_train::ImageSet,
    idx: &[usize],
    ctx: &Ctx,
    device: &intq_train::Device,
) -> Result<(Vec<f32>, Vec<GraphTap>)> {
    let (x, _) = set.batch(idx, device);
    let mut taps = Vec::new();
    let logits = net.forward_tapped(x, ctx, &mut |layer, a| {
        taps.push(GraphTap {
            layer,
            dims: a.x.dims().to_vec(),
            values: intq_train::fake_quant::host_vec(a.x.clone()),
        })
    })?;
    Ok((intq_train::fake_quant::host_vec(logits), taps))
}

/// The rows of the per-layer comparison: each tap whose engine tensor the model holds, found by
/// the name export gives it (the quantized input `input_q` or `input`; a layer the name of its
/// ONNX nodes), with the tap's element count, quantization params and a name no other tensor
/// has. Returns (tap index, tensor, params, codes).
fn layer_rows(
    net: &GraphNet,
    m: &Model,
    taps: &[GraphTap],
    q: QuantCfg,
) -> Vec<(usize, intq_engine::TensorId, QuantParams, (i32, i32))> {
    use intq_train::graph_net::Step;
    let g = m.graph();
    let (input_name, _) = crate::fidelity::edge_names(g);
    let mut names = vec![None; net.layers.len()];
    for s in &net.steps {
        if let Step::Layer { layer, name, .. } = s {
            names[*layer] = Some(name.as_str());
        }
    }
    let unique = |name: &str| g.tensors().iter().filter(|t| t.name == name).count() == 1;
    taps.iter()
        .enumerate()
        .filter_map(|(k, t)| {
            let name = match t.layer {
                None => input_name,
                Some(layer) => names.get(layer).copied().flatten()?,
            };
            let id = g.tensor_by_name(name).filter(|_| unique(name))?;
            let et = g.tensor(id);
            let p = et.params()?;
            let per: usize = t.dims[1..].iter().product();
            if et.is_constant() || et.num_elements() != per {
                return None;
            }
            let codes = et
                .code_limits()
                .unwrap_or((q.act_scheme.qmin(), q.act_scheme.qmax()));
            Some((k, id, p, codes))
        })
        .collect()
}

/// What `intq eval MODEL --compare CKPT` reports for an imported network; the keys are those of
/// the zoo's comparison.
#[derive(Debug, Default, serde::Serialize)]
struct Comparison {
    images: usize,
    float_acc: f64,
    fq_acc: f64,
    int8_acc: f64,
    top1_mismatch: usize,
    max_lsb_diff: i64,
    logits_differing: u64,
    logits_total: u64,
    /// Every activation the engine materializes and the network computes, in graph order.
    layers: Vec<LayerStat>,
}

/// `intq export MODEL --onnx OUT.onnx`: the integer model as a QDQ ONNX model, written to a
/// temporary file and renamed.
pub fn export_qdq(model: &Path, out: &Path) -> Result<()> {
    let m = crate::tflite_cmd::load_model(model)?;
    let bytes =
        intq_onnx::qdq::export(m.graph()).with_context(|| format!("{}", model.display()))?;
    let tmp = out.with_extension("onnx.tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {} ({} bytes, QDQ, opset 14) from {}",
        out.display(),
        bytes.len(),
        model.display()
    );
    Ok(())
}
