//! Fake quantization (SPEC §2) as differentiable burn tensor ops, with the straight-through
//! estimator, and the host-side choice of `(S, Z)` through `intq_quant` so that training and
//! conversion use the very same numbers.
//!
//! # Rounding (project-wide choice)
//!
//! Fake quantization rounds half up, `floor(v + 0.5)`, exactly as SPEC §2 and
//! [`QScheme::fake_quant`] do (TensorFlow's FakeQuantWithMinMaxVars does the same). burn's
//! `round()` is half-to-even, so it is never used here. The zero point itself is rounded by
//! [`QScheme::choose_params`] (TF's `Nudge`), and conversion reuses those params unchanged.
//!
//! # Exactness
//!
//! The forward value is computed op by op in f32 as `QScheme::fake_quant` computes it
//! (clamp, `- n_min`, `/ S`, `+ 0.5`, floor, `* S`, `+ n_min`), and the STE is attached as
//! `fq.detach() + (x_c - x_c.detach())`, which adds an exact zero, so the tensor result equals
//! the scalar reference bit for bit (tested).

use burn::tensor::{Bool, Tensor, TensorData};
use intq_quant::{QScheme, QuantParams};

use crate::TrainError;

/// Per-channel fake-quant constants along axis 0, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelFq {
    pub params: Vec<QuantParams>,
}

/// `(S, Z)` for a per-tensor range read from the device, with the error naming what it was for.
pub fn choose(scheme: QScheme, min: f32, max: f32, what: &str) -> Result<QuantParams, TrainError> {
    scheme
        .choose_params(min, max)
        .map_err(|e| TrainError::Quant(format!("{what}: range [{min}, {max}]: {e}")))
}

/// Clamp `x` to `[lo, hi]` keeping the gradient 1 on the closed interval (SPEC's STE mask
/// `n_min <= x <= n_max`): only strictly outside values are replaced.
fn clamp_closed<const D: usize>(x: Tensor<D>, lo: f32, hi: f32) -> Tensor<D> {
    let below = x.clone().lower_elem(lo);
    let above = x.clone().greater_elem(hi);
    x.mask_fill(below, lo).mask_fill(above, hi)
}

/// Per-tensor fake quantization with fixed params: forward equals [`QScheme::fake_quant`]
/// elementwise, backward is the straight-through mask.
pub fn fake_quant<const D: usize>(x: Tensor<D>, scheme: QScheme, p: QuantParams) -> Tensor<D> {
    let r = scheme.nudged_range(p);
    let xc = clamp_closed(x, r.min, r.max);
    let xd = xc.clone().detach();
    let fq = xd
        .sub_scalar(r.min)
        .div_scalar(p.scale)
        .add_scalar(0.5)
        .floor()
        .mul_scalar(p.scale)
        .add_scalar(r.min);
    ste(fq, xc)
}

/// Attach the identity gradient of `xc` to the value `fq` without changing its bits.
fn ste<const D: usize>(fq: Tensor<D>, xc: Tensor<D>) -> Tensor<D> {
    if xc.is_require_grad() || xc.device().is_autodiff() {
        fq + (xc.clone() - xc.detach())
    } else {
        fq
    }
}

/// Broadcastable `[C, 1, ...]` tensor of per-channel values for a tensor of rank `D`.
fn channel_tensor<const D: usize>(values: Vec<f32>, like: &Tensor<D>) -> Tensor<D> {
    let dims = like.dims();
    let mut shape = [1usize; D];
    shape[0] = dims[0];
    Tensor::<1>::from_data(TensorData::new(values, [dims[0]]), &like.device())
        .reshape(shape)
        .expand(dims)
}

/// Per-channel (axis 0) fake quantization with fixed params: channel `c` behaves as
/// [`fake_quant`] with `params[c]`.
pub fn fake_quant_per_channel<const D: usize>(
    x: Tensor<D>,
    scheme: QScheme,
    params: &[QuantParams],
) -> Tensor<D> {
    let ranges: Vec<_> = params.iter().map(|&p| scheme.nudged_range(p)).collect();
    let lo = channel_tensor(ranges.iter().map(|r| r.min).collect(), &x);
    let hi = channel_tensor(ranges.iter().map(|r| r.max).collect(), &x);
    let s = channel_tensor(params.iter().map(|p| p.scale).collect(), &x);
    let lo = lo.detach();
    let below: Tensor<D, Bool> = x.clone().lower(lo.clone());
    let above: Tensor<D, Bool> = x.clone().greater(hi.clone());
    let xc = x.mask_where(below, lo.clone()).mask_where(above, hi);
    let fq = (xc.clone().detach() - lo.clone())
        .div(s.clone())
        .add_scalar(0.5)
        .floor()
        * s
        + lo;
    ste(fq, xc)
}

/// Per-tensor fake quantization with learned `min`/`max` (shape `[1]` each, trainable), with
/// TensorFlow's gradient: `d/dmin` is the sum of upstream gradients where `x < n_min`, `d/dmax`
/// the sum where `x > n_max`, and `d/dx` is the STE mask. The nudged range is computed on the
/// host from the current values, so the forward is [`fake_quant`] with those params.
pub fn fake_quant_learned<const D: usize>(
    x: Tensor<D>,
    scheme: QScheme,
    min: Tensor<1>,
    max: Tensor<1>,
) -> Result<(Tensor<D>, QuantParams), TrainError> {
    let lo_v = scalar(&min);
    let hi_v = scalar(&max);
    // Ranges may drift past zero or cross while learning; the scheme widens them to contain 0.
    let p = choose(scheme, lo_v.min(hi_v), hi_v.max(lo_v), "learned range")?;
    let r = scheme.nudged_range(p);
    let dims = x.dims();
    let mut one = [1usize; D];
    one[0] = 1;
    // `(t - t.detach()) + c` has the value `c` exactly and the gradient of `t`.
    let lo_t = (min.clone() - min.detach()).add_scalar(r.min);
    let hi_t = (max.clone() - max.detach()).add_scalar(r.max);
    let lo_t: Tensor<D> = lo_t.reshape(one).expand(dims);
    let hi_t: Tensor<D> = hi_t.reshape(one).expand(dims);
    let below = x.clone().lower_elem(r.min);
    let above = x.clone().greater_elem(r.max);
    let xc = x.mask_where(below, lo_t).mask_where(above, hi_t);
    let fq = xc
        .clone()
        .detach()
        .sub_scalar(r.min)
        .div_scalar(p.scale)
        .add_scalar(0.5)
        .floor()
        .mul_scalar(p.scale)
        .add_scalar(r.min);
    Ok((fq + (xc.clone() - xc.detach()), p))
}

/// The single value of a one-element tensor, read to the host.
pub fn scalar<const D: usize>(t: &Tensor<D>) -> f32 {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map(|v| v[0])
        .unwrap_or(f32::NAN)
}

/// Whole-tensor min and max, read to the host in one transfer.
pub fn min_max<const D: usize>(t: &Tensor<D>) -> (f32, f32) {
    let flat: Tensor<1> = t.clone().detach().flatten(0, D - 1);
    let both = Tensor::cat(vec![flat.clone().min(), flat.max()], 0);
    let v = host_vec(both);
    (v[0], v[1])
}

/// Per-channel (axis 0) min and max, read to the host.
pub fn channel_min_max<const D: usize>(t: &Tensor<D>) -> (Vec<f32>, Vec<f32>) {
    let c = t.dims()[0];
    let flat: Tensor<2> = t.clone().detach().reshape([c as i64, -1]);
    let mins = host_vec(flat.clone().min_dim(1).reshape([c]));
    let maxs = host_vec(flat.max_dim(1).reshape([c]));
    (mins, maxs)
}

/// A tensor's values as an f32 vector on the host.
pub fn host_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// Weight fake quantization with ranges taken from the tensor itself (SPEC §2: the current
/// min/max of the folded weights at every step), per tensor or per output channel (axis 0).
/// Returns the fake-quantized weights and the params used.
pub fn fake_quant_weights<const D: usize>(
    w: Tensor<D>,
    scheme: QScheme,
    per_channel: bool,
) -> Result<(Tensor<D>, WeightQuant), TrainError> {
    if per_channel {
        let (mins, maxs) = channel_min_max(&w);
        let params = mins
            .iter()
            .zip(&maxs)
            .map(|(&lo, &hi)| choose(scheme, lo, hi, "weights"))
            .collect::<Result<Vec<_>, _>>()?;
        let out = fake_quant_per_channel(w, scheme, &params);
        Ok((out, WeightQuant::PerChannel(params)))
    } else {
        let (lo, hi) = min_max(&w);
        let p = choose(scheme, lo, hi, "weights")?;
        Ok((fake_quant(w, scheme, p), WeightQuant::PerTensor(p)))
    }
}

/// The quantization params of one weight tensor: what conversion stores.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightQuant {
    PerTensor(QuantParams),
    /// One entry per output channel (axis 0 of the training layout).
    PerChannel(Vec<QuantParams>),
}

impl WeightQuant {
    /// Scale of output channel `c`.
    pub fn scale(&self, c: usize) -> f32 {
        match self {
            WeightQuant::PerTensor(p) => p.scale,
            WeightQuant::PerChannel(v) => v[c].scale,
        }
    }
    /// Params of output channel `c`.
    pub fn channel(&self, c: usize) -> QuantParams {
        match self {
            WeightQuant::PerTensor(p) => *p,
            WeightQuant::PerChannel(v) => v[c],
        }
    }
}
