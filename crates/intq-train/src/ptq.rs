//! Post-training quantization (the baseline QAT must beat): the float network, evaluated with its
//! BN moving statistics folded in and no fake quantization, runs on calibration images; every
//! activation observer gets the range its tensor held (min/max, or clipped at percentiles); then
//! [`crate::export::export`] turns the network into an integer graph as it does a QAT one.
//! Weight ranges come from the weights themselves, as in QAT. Unlike
//! [`crate::calibrate::calibrate`] (random images, training-mode EMA, for benchmark graphs of
//! untrained networks), this sets each range from real data in one deterministic pass.

use burn::tensor::Device;

use crate::fake_quant::host_vec;
use crate::layers::{Act, Ctx, QuantCfg};
use crate::observer::EmaObserver;
use crate::trainer::ImageSet;
use crate::zoo::{Arch, Net, Node};
use crate::TrainError;

/// How activation ranges are calibrated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Calib {
    /// The smallest and largest value each activation took.
    MinMax,
    /// Clip each activation's range to its `(100 - p)`-th and `p`-th percentiles
    /// (`50 <= p <= 100`).
    Percentile(f64),
}

/// Images per forward pass during calibration.
const BATCH: usize = 250;

/// Values kept per tensor for percentile calibration (a strided sample beyond that).
const PERCENTILE_SAMPLES: usize = 2_000_000;

/// Every activation observer of `net`, in forward order, with the name of the activation
/// [`Net::forward_tapped`] hands over for the tensor it quantizes (`input`, `body{i}`,
/// `body{i}/dw`, ..., `logits`; export names the engine tensors the same way, the quantized edges
/// of a float-edged graph as `input_q` and `logits_q`).
pub fn named_observers(net: &Net) -> Vec<(String, &EmaObserver)> {
    let mut v = vec![("input".to_string(), &net.input.obs)];
    for (i, node) in net.body.iter().enumerate() {
        let name = format!("body{i}");
        match node {
            Node::Conv(l) => v.push((name, &l.out_obs)),
            Node::Pool(_) => {}
            Node::InvRes(b) => {
                if let Some(l) = &b.expand {
                    v.push((format!("{name}/expand"), &l.out_obs));
                }
                v.push((format!("{name}/dw"), &b.dw.out_obs));
                v.push((format!("{name}/project"), &b.project.out_obs));
                if let Some(a) = &b.add {
                    v.push((format!("{name}/add"), &a.out_obs));
                }
            }
            Node::Basic(b) => {
                v.push((format!("{name}/conv1"), &b.conv1.out_obs));
                v.push((format!("{name}/conv2"), &b.conv2.out_obs));
                if let Some(l) = &b.shortcut {
                    v.push((format!("{name}/shortcut"), &l.out_obs));
                }
                v.push((format!("{name}/add"), &b.add.out_obs));
            }
        }
    }
    v.push(("logits".to_string(), &net.head.out_obs));
    v
}

/// Sets every activation observer of the float network `net` (on `device`) from its first
/// `calib` images of `images`: the range of what the tensor held in evaluation mode (BN folded
/// with its moving statistics, no fake quantization), clipped per `method`. The input keeps its
/// min/max under every method, so pixels map onto the input grid exactly.
pub fn calibrate(
    net: &Net,
    images: &ImageSet,
    calib: usize,
    method: Calib,
    device: &Device,
) -> Result<(), TrainError> {
    images.validate()?;
    if let Calib::Percentile(p) = method {
        if !(50.0..=100.0).contains(&p) {
            return Err(TrainError::Config(format!(
                "calibration percentile {p} must be between 50 and 100"
            )));
        }
    }
    let n = calib.min(images.len);
    if n == 0 {
        return Err(TrainError::Config("no calibration images".into()));
    }
    let observers = named_observers(net);
    let k_obs = observers.len();
    let mut mins = vec![f32::INFINITY; k_obs];
    let mut maxs = vec![f32::NEG_INFINITY; k_obs];
    let mut samples: Vec<Vec<f32>> = vec![Vec::new(); k_obs];
    let mut strides = vec![1usize; k_obs];
    let ctx = Ctx::eval(None);
    for start in (0..n).step_by(BATCH) {
        let idx: Vec<usize> = (start..(start + BATCH).min(n)).collect();
        let (x, _) = images.batch(&idx, device);
        let mut taps: Vec<Option<Vec<f32>>> = vec![None; k_obs];
        net.forward_tapped(x, &ctx, &mut |name: &str, a: &Act| {
            if let Some(k) = observers.iter().position(|(o, _)| o == name) {
                taps[k].get_or_insert_with(|| host_vec(a.x.clone()));
            }
        })?;
        for (k, (name, _)) in observers.iter().enumerate() {
            let values = taps[k].as_ref().ok_or_else(|| {
                TrainError::Export(format!("calibration: no activation for observer {name}"))
            })?;
            for &v in values {
                if !v.is_finite() {
                    return Err(TrainError::NonFinite(format!(
                        "calibration: activation {name}"
                    )));
                }
                mins[k] = mins[k].min(v);
                maxs[k] = maxs[k].max(v);
            }
            if let Calib::Percentile(_) = method {
                if start == 0 {
                    let total = values.len() / idx.len() * n;
                    strides[k] = total.div_ceil(PERCENTILE_SAMPLES).max(1);
                }
                samples[k].extend(values.iter().step_by(strides[k]));
            }
        }
    }
    for (k, (name, obs)) in observers.iter().enumerate() {
        let (lo, hi) = match method {
            Calib::Percentile(p) if k > 0 => {
                let s = &mut samples[k];
                if s.is_empty() {
                    return Err(TrainError::Export(format!(
                        "calibration: no values for {name}"
                    )));
                }
                s.sort_unstable_by(f32::total_cmp);
                let at = |q: f64| s[((q / 100.0) * (s.len() - 1) as f64).round() as usize];
                (at(100.0 - p), at(p))
            }
            _ => (mins[k], maxs[k]),
        };
        if !(lo.is_finite() && hi.is_finite()) {
            return Err(TrainError::Export(format!(
                "calibration: no range for {name}"
            )));
        }
        obs.set_range(lo, hi);
    }
    Ok(())
}

/// Post-training quantization of the float network `net` (of architecture `arch`, on `device`):
/// [`calibrate`] on the first `calib` images of `images`, then export with `quant` and float
/// edges (f32 images in `[0, 1]` in, f32 logits out).
pub fn ptq(
    net: &Net,
    arch: Arch,
    images: &ImageSet,
    calib: usize,
    method: Calib,
    quant: &QuantCfg,
    device: &Device,
) -> Result<intq_engine::Graph, TrainError> {
    calibrate(net, images, calib, method, device)?;
    crate::export::export_at(net, arch, (images.rows, images.cols), quant, true)
}
