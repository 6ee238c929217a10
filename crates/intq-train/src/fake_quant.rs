//! Fake quantization (docs/spec.md §2) as differentiable burn tensor ops, with the straight-through
//! estimator, and the host-side choice of `(S, Z)` through `intq_quant` so that training and
//! conversion use the very same numbers.
//!
//! # Rounding (project-wide choice)
//!
//! Fake quantization rounds half up, `floor(v + 0.5)`, exactly as docs/spec.md §2.1 and
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

use crate::conv::contiguous;
use crate::device::is_flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Bool, Shape, Tensor, TensorData};
use intq_kernels::qat::RequantFakeQuant;
use intq_kernels::{Isa, KernelTier};
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

/// Clamp `x` to `[lo, hi]` keeping the gradient 1 on the closed interval (the STE mask
/// `n_min <= x <= n_max` of docs/spec.md §2.2): only strictly outside values are replaced.
fn clamp_closed<const D: usize>(x: Tensor<D>, lo: f32, hi: f32) -> Tensor<D> {
    let below = x.clone().lower_elem(lo);
    let above = x.clone().greater_elem(hi);
    x.mask_fill(below, lo).mask_fill(above, hi)
}

/// Per-tensor fake quantization with fixed params: forward equals [`QScheme::fake_quant`]
/// elementwise, backward is the straight-through mask.
pub fn fake_quant<const D: usize>(x: Tensor<D>, scheme: QScheme, p: QuantParams) -> Tensor<D> {
    if !is_flex(&x.device()) {
        return fake_quant_by_levels(x, scheme, p);
    }
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
    if !is_flex(&x.device()) {
        return fake_quant_per_channel_by_levels(x, scheme, params);
    }
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
    let p = learned_minmax_params(scheme, scalar(&min), scalar(&max))?;
    let xd = x.clone().detach();
    let y = fake_quant(x, scheme, p);
    Ok((y + minmax_grad_term(&xd, scheme, p, min, max), p))
}

/// The params of a learned range `[min, max]`. Ranges may drift past zero or cross while
/// learning; the scheme's nudging widens them to contain 0, and crossed ends are swapped.
pub fn learned_minmax_params(
    scheme: QScheme,
    min: f32,
    max: f32,
) -> Result<QuantParams, TrainError> {
    choose(scheme, min.min(max), max.max(min), "learned range")
}

/// A term of value exactly 0 (shape of `x`) whose gradient gives learned `min`/`max` (`[1]`
/// each) TensorFlow's gradient for the fake quantization of `x` (detached) with `p`: the
/// upstream gradient summed where `x` is below, or above, the nudged range. Added to any fake
/// quantization of `x` with `p` (single or engine rounding), it leaves the forward bits alone.
pub fn minmax_grad_term<const D: usize>(
    x: &Tensor<D>,
    scheme: QScheme,
    p: QuantParams,
    min: Tensor<1>,
    max: Tensor<1>,
) -> Tensor<D> {
    let r = scheme.nudged_range(p);
    let dims = x.dims();
    let below = x.clone().detach().lower_elem(r.min).float();
    let above = x.clone().detach().greater_elem(r.max).float();
    // `t - t.detach()` is an exact zero that carries the gradient of `t`.
    let zero =
        |t: Tensor<1>| -> Tensor<D> { (t.clone() - t.detach()).reshape([1usize; D]).expand(dims) };
    below * zero(min) + above * zero(max)
}

/// LSQ's gradient scale `g = 1 / sqrt(n Q)` for `n` values per gradient sum and codes up to `Q`
/// away from the zero point (the larger of `qmax - Z` and `Z - qmin`).
pub fn lsq_grad_scale(scheme: QScheme, zero_point: i32, n: usize) -> f32 {
    let q = ((scheme.qmax() - zero_point).max(zero_point - scheme.qmin())).max(1) as f32;
    1.0 / ((n.max(1) as f32) * q).sqrt()
}

/// The params of a learned LSQ step with a fixed zero point, checked.
pub fn lsq_params(scheme: QScheme, step: f32, zero_point: i32) -> Result<QuantParams, TrainError> {
    if !(step.is_finite() && step > 0.0) {
        return Err(TrainError::Quant(format!(
            "learned step size {step} is not a positive finite number"
        )));
    }
    if zero_point < scheme.qmin() || zero_point > scheme.qmax() {
        return Err(TrainError::Quant(format!(
            "zero point {zero_point} is outside the scheme's codes [{}, {}]",
            scheme.qmin(),
            scheme.qmax()
        )));
    }
    Ok(QuantParams {
        scale: step,
        zero_point,
    })
}

/// Per-tensor fake quantization with a learned step size (LSQ, Esser et al. 2020) and a fixed
/// zero point: the forward is [`fake_quant`] with `(S, Z) = (step, zero_point)` bit for bit,
/// so conversion takes the learned `S` unchanged. The backward is LSQ's:
///
/// - `d/dx` is the straight-through mask of the nudged range `[(qmin - Z) S, (qmax - Z) S]`;
/// - `d/dS` is `g * (round(x/S) - x/S)` inside that range and `g * (qmin - Z)` or
///   `g * (qmax - Z)` where `x` is clamped below or above, with LSQ's gradient scale
///   `g = 1 / sqrt(N * Q)`, `N` the element count and `Q` the larger of `qmax - Z` and `Z - qmin`.
///   `round` here is the project's half-up rounding.
///
/// Unlike the min/max gradient of [`fake_quant_learned`], values inside the range pull on `S`
/// too, which is what lets LSQ trade rounding error against clipping error at low bit widths.
pub fn fake_quant_lsq<const D: usize>(
    x: Tensor<D>,
    scheme: QScheme,
    step: Tensor<1>,
    zero_point: i32,
) -> Result<(Tensor<D>, QuantParams), TrainError> {
    let p = lsq_params(scheme, scalar(&step), zero_point)?;
    let n: usize = x.dims().iter().product();
    let g = lsq_grad_scale(scheme, zero_point, n);
    let xd = x.clone().detach();
    let y = fake_quant(x, scheme, p);
    let term = lsq_grad_term(&xd, &y.clone().detach(), scheme, p, step, g);
    Ok((y + term, p))
}

/// A term of value exactly 0 whose gradient gives a learned LSQ step (`[1]`) LSQ's gradient,
/// scaled by `g`, for the fake quantization `fq` (detached) of `x` (detached) with `p`: `g *
/// (fq/S - x/S)` inside the nudged range, `g * (qmin - Z)` below, `g * (qmax - Z)` above. `fq /
/// S` is the code relative to Z up to f32 rounding, which only touches the gradient; with the
/// engine's rounding in `fq` ([`fake_quant_requant`]) it is that rounding's code.
pub fn lsq_grad_term<const D: usize>(
    x: &Tensor<D>,
    fq: &Tensor<D>,
    scheme: QScheme,
    p: QuantParams,
    step: Tensor<1>,
    g: f32,
) -> Tensor<D> {
    let r = scheme.nudged_range(p);
    let s = p.scale;
    let (lo_c, hi_c) = (
        (scheme.qmin() - p.zero_point) as f32,
        (scheme.qmax() - p.zero_point) as f32,
    );
    let xd = x.clone().detach();
    let dims = xd.dims();
    let below = xd.clone().lower_elem(r.min);
    let above = xd.clone().greater_elem(r.max);
    let coef = (fq.clone().detach().div_scalar(s) - xd.div_scalar(s))
        .mask_fill(below, lo_c)
        .mask_fill(above, hi_c);
    // `t - t.detach()` is an exact zero that carries the gradient of `t`.
    let scaled = step.mul_scalar(g);
    let ds: Tensor<D> = (scaled.clone() - scaled.detach())
        .reshape([1usize; D])
        .expand(dims);
    coef * ds
}

/// LSQ's initial step size for values `x` quantized to codes up to `q` away from the zero
/// point: `2 mean|x| / sqrt(q)`.
pub fn lsq_initial_step<const D: usize>(x: &Tensor<D>, q: i32) -> f32 {
    let v = host_vec(x.clone());
    let mean_abs = v.iter().map(|a| a.abs() as f64).sum::<f64>() / v.len().max(1) as f64;
    let s = (2.0 * mean_abs / (q.max(1) as f64).sqrt()) as f32;
    if s.is_finite() && s > 0.0 {
        s
    } else {
        f32::MIN_POSITIVE.max(1e-8)
    }
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

/// Whole-tensor min and max (NaN when the tensor holds a NaN, as burn's `min`/`max` give). On
/// `flex` one vectorized pass over the buffer in place ([`slice_min_max`]): flex's own reductions
/// are a scalar scan each; elsewhere burn's reductions, read to the host in one transfer.
pub fn min_max<const D: usize>(t: &Tensor<D>) -> (f32, f32) {
    let on_host = |p: &FlexTensor| contiguous(p).as_slice::<f32>().map(slice_min_max);
    let t = t.clone().detach();
    let direct = match t.clone().try_into_primitive::<Ad>() {
        Ok(p) => on_host(&p.into_parts().0),
        Err(_) => t
            .clone()
            .try_into_primitive::<Flex>()
            .ok()
            .and_then(|p| on_host(&p)),
    };
    if let Some(Some(r)) = direct {
        return r;
    }
    let flat: Tensor<1> = t.flatten(0, D - 1);
    let both = Tensor::cat(vec![flat.clone().min(), flat.max()], 0);
    let v = host_vec(both);
    (v[0], v[1])
}

/// `(min, max)` of `v` in eight lanes (so it vectorizes); `(NaN, NaN)` when `v` holds a NaN;
/// `None` when empty.
fn slice_min_max(v: &[f32]) -> Option<(f32, f32)> {
    let first = *v.first()?;
    let (mut lo, mut hi, mut nan) = ([first; 8], [first; 8], false);
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            // Comparisons with NaN are false, so a NaN never lands in lo/hi; `nan` records it.
            lo[l] = if c[l] < lo[l] { c[l] } else { lo[l] };
            hi[l] = if c[l] > hi[l] { c[l] } else { hi[l] };
            nan |= c[l].is_nan();
        }
    }
    let (mut l, mut h) = (lo[0], hi[0]);
    // The lanes start at `first`, so a NaN there shows here too.
    for &x in lo.iter().chain(tail) {
        l = if x < l { x } else { l };
        nan |= x.is_nan();
    }
    for &x in hi.iter().chain(tail) {
        h = if x > h { x } else { h };
    }
    Some(if nan { (f32::NAN, f32::NAN) } else { (l, h) })
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
    // try_into_vec reuses the data's buffer where it can; try_to_vec always copies.
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// Weight fake quantization with ranges taken from the tensor itself (docs/spec.md §2.3: the
/// current min/max of the folded weights at every step), per tensor or per output channel (axis 0).
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

/// The code fake quantization snapped `w` to: `floor((clamp(w) - n_min) / S + 0.5) + qmin`, the
/// same f32 steps as `QScheme::fake_quant`, so the integer weight dequantizes to the trained
/// value.
pub fn weight_code(scheme: QScheme, p: QuantParams, w: f32) -> i32 {
    let r = scheme.nudged_range(p);
    let c = w.clamp(r.min, r.max);
    ((c - r.min) / p.scale + 0.5).floor() as i32 + scheme.qmin()
}

/// The int32 bias code conversion stores for a real bias `b` at accumulator scale `s = S_in *
/// S_w` (the f32 product, as the bias tensor's scale): `round(b / s)`, halves away from zero, in
/// f64. `None` when it does not fit int32.
pub fn bias_code(b: f32, s: f32) -> Option<i32> {
    let v = (b as f64 / s as f64).round();
    (v.is_finite() && v.abs() < i32::MAX as f64).then_some(v as i32)
}

/// Bias snapped to the int32 grid the engine adds it on: channel `k` becomes
/// `bias_code(b_k, S_in * S_w[k]) * S_in * S_w[k]`, with the identity gradient, so the simulated
/// accumulator carries the very bias conversion stores. A bias that does not fit int32 (only
/// possible with absurd scales early in training) is saturated here; conversion refuses it.
pub fn bias_on_grid(b: Tensor<1>, s_in: f32, wq: &WeightQuant) -> Tensor<1> {
    let host = host_vec(b.clone());
    let snapped: Vec<f32> = host
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let s = s_in * wq.scale(k);
            let code = bias_code(v, s).unwrap_or(if v < 0.0 { -i32::MAX } else { i32::MAX });
            (code as f64 * s_in as f64 * wq.scale(k) as f64) as f32
        })
        .collect();
    let n = snapped.len();
    let grid = Tensor::<1>::from_data(TensorData::new(snapped, [n]), &b.device());
    ste(grid, b)
}

/// Fake quantization evaluated exactly (evaluation only): `x` is cast to f64 and mapped to
/// `S * (clamp(floor(x / S + 0.5) + Z) - Z)`, the real value of the code the integer engine
/// holds, with no f32 rounding in between. No gradient.
pub fn fake_quant_exact<const D: usize>(
    x: Tensor<D>,
    scheme: QScheme,
    p: QuantParams,
) -> Tensor<D> {
    let s = p.scale as f64;
    let z = p.zero_point as f64;
    x.detach()
        .cast(burn::tensor::FloatDType::F64)
        .div_scalar(s)
        .add_scalar(0.5)
        .floor()
        .add_scalar(z)
        .clamp(scheme.qmin() as f64, scheme.qmax() as f64)
        .sub_scalar(z)
        .mul_scalar(s)
}

/// An f64 tensor from host values (exact evaluation).
pub fn f64_tensor<const D: usize>(
    v: Vec<f64>,
    shape: [usize; D],
    device: &burn::tensor::Device,
) -> Tensor<D> {
    Tensor::from_data(
        TensorData::new(v, shape),
        (device, burn::tensor::DType::F64),
    )
}

/// Right-shift exponent `e_k >= 0` of the engine's requantization multiplier
/// `M_k = S_in * S_w[k] / S_out = M0 * 2^(shift - 31)` (docs/spec.md §4.1) for each of
/// `channels` output channels: `max(0, -shift)`. A multiplier the engine would refuse counts as
/// 0 here; conversion reports it.
pub fn requant_shifts(s_in: f32, wq: &WeightQuant, channels: usize, s_out: f32) -> Vec<i32> {
    (0..channels)
        .map(|k| {
            let m = s_in as f64 * wq.scale(k) as f64 / s_out as f64;
            intq_quant::QuantizedMultiplier::from_real(m)
                .map(|q| (-q.shift).max(0))
                .unwrap_or(0)
        })
        .collect()
}

/// Fake quantization of a conv or FC output (channels on axis 1) with the integer engine's rounding
/// instead of a single round half up. The engine computes `x * M` as
/// SaturatingRoundingDoublingHighMul, which rounds `x * M * 2^e` to an integer with ties toward
/// +inf, then RoundingDivideByPOT by `2^e`, which rounds half away from zero (docs/spec.md §4.3).
/// That double rounding moves results that lie within `2^-(e+1)` code of a half, so a single
/// `floor(v + 0.5)` disagrees with the engine on a small share of outputs. Here `v = x / S` goes
/// through the same two steps: `t = floor(v 2^e + 0.5)`, `code = sign(t) floor(|t| / 2^e + 0.5)`,
/// clamped to the code range.
/// Gradient: the straight-through mask of [`fake_quant`]. With `exact` the steps run in f64 without
/// gradient (exact evaluation).
pub fn fake_quant_requant<const D: usize>(
    x: Tensor<D>,
    scheme: QScheme,
    p: QuantParams,
    shifts: &[i32],
    exact: bool,
) -> Tensor<D> {
    if !exact && x.dtype() == burn::tensor::DType::F32 && D >= 2 {
        if let Some(y) = fake_quant_requant_fused(&x, scheme, p, shifts) {
            return y;
        }
    }
    fake_quant_requant_ops(x, scheme, p, shifts, exact)
}

/// [`fake_quant_requant`] in one host pass instead of about seventeen tensor ops (each a pass
/// over the activation and an allocation in burn's `flex`): the same f32 operations in the same
/// order per element, so the same bits (tested against [`fake_quant_requant_ops`]). Dividing by
/// the power of two `2^e` is multiplying by `2^-e`, exactly. `None` when `x` holds a non-finite
/// value: the op chain then runs.
///
/// On `flex` (plain or `Autodiff<Flex>`) the pass reads the activation's buffer in place and the
/// straight-through estimator is its own autodiff op, [`RequantFqBackward`]: the forward keeps a
/// byte mask (closed range, `lo <= x <= hi`) and the backward is one pass `dx = dy * mask`, with
/// no copy of the activation and no extra tensor ops or backward nodes. Any other backend stays on
/// its device: [`fake_quant_requant_by_levels`], the same codes without a division.
fn fake_quant_requant_fused<const D: usize>(
    x: &Tensor<D>,
    scheme: QScheme,
    p: QuantParams,
    shifts: &[i32],
) -> Option<Tensor<D>> {
    let k = RequantFq::new(scheme, p, shifts, &x.dims());
    if let Ok(xp) = x.clone().try_into_primitive::<Ad>() {
        let (xi, xn) = xp.into_parts();
        let xi = contiguous(&xi);
        let xs = xi.as_slice::<f32>()?;
        let shape = xi.layout().shape().clone();
        let out = match RequantFqBackward
            .prepare::<NoCheckpointing>([xn])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let mut mask = vec![0u8; xs.len()];
                let fq = k.run(xs, Some(&mut mask), true)?;
                prep.finish(mask, flex_tensor(fq, shape))
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_tensor(k.run(xs, None, true)?, shape)),
        };
        return Some(Tensor::from_primitive::<Ad>(out));
    }
    if let Ok(xi) = x.clone().try_into_primitive::<Flex>() {
        let xi = contiguous(&xi);
        let fq = k.run(xi.as_slice::<f32>()?, None, false)?;
        return Some(Tensor::from_primitive::<Flex>(flex_tensor(
            fq,
            xi.layout().shape().clone(),
        )));
    }
    // Another backend: on the device, exactly ([`fake_quant_levels`]).
    Some(fake_quant_requant_by_levels(x.clone(), scheme, p, shifts))
}

type Ad = Autodiff<Flex>;

/// The constants of one [`fake_quant_requant_fused`] call.
struct RequantFq<'a> {
    k: RequantFakeQuant,
    /// The kernel tier `INTQ_ISA` selects (the best the CPU has by default).
    isa: Isa,
    shifts: &'a [i32],
    channels: usize,
    inner: usize,
}

impl<'a> RequantFq<'a> {
    fn new(scheme: QScheme, p: QuantParams, shifts: &'a [i32], dims: &[usize]) -> Self {
        let r = scheme.nudged_range(p);
        let z = p.zero_point as f64;
        RequantFq {
            k: RequantFakeQuant {
                lo: r.min,
                hi: r.max,
                scale: p.scale,
                qlo: (scheme.qmin() as f64 - z) as f32,
                qhi: (scheme.qmax() as f64 - z) as f32,
                zero: -0.0,
            },
            isa: match KernelTier::from_env() {
                Ok(KernelTier::Fast(isa)) => isa,
                _ => Isa::Portable,
            },
            shifts,
            channels: dims[1],
            inner: dims[2..].iter().product(),
        }
    }

    /// The fake-quantized values of the contiguous `[N, C, ...]` buffer `xs`, and with `mask` its
    /// 0/1 straight-through mask; `None` when a value is not finite. With `autodiff` a `-0.0`
    /// result is `+0.0`, as the op chain's `fq + (x_c - x_c.detach())` makes it: a negative value that rounds to code 0 under a
    /// right shift is `-0.0` before that sum. The pass is `intq_kernels::qat`'s.
    fn run(&self, xs: &[f32], mask: Option<&mut [u8]>, autodiff: bool) -> Option<Vec<f32>> {
        // `v + (-0.0)` is `v` for every `v`; `v + 0.0` turns `-0.0` into `+0.0` only.
        let k = RequantFakeQuant {
            zero: if autodiff { 0.0 } else { -0.0 },
            ..self.k
        };
        let inner = self.inner;
        if xs.is_empty() || !xs.len().is_multiple_of(self.channels * inner) {
            return None;
        }
        let mut fq = vec![0f32; xs.len()];
        let mut finite = true;
        let mut masks = mask.map(|m| m.chunks_exact_mut(inner));
        for (block, (xb, fb)) in xs
            .chunks_exact(inner)
            .zip(fq.chunks_exact_mut(inner))
            .enumerate()
        {
            let e = self.shifts.get(block % self.channels).copied().unwrap_or(0);
            let mb = masks.as_mut().and_then(|m| m.next());
            finite &= k.block(self.isa, e, xb, fb, mb);
        }
        finite.then_some(fq)
    }
}

/// Backward of [`fake_quant_requant_fused`] on `Autodiff<Flex>`: the straight-through
/// estimator, `dx = dy` where the forward's byte mask (its state) is 1, else 0.
#[derive(Debug)]
struct RequantFqBackward;

impl Backward<Flex, 1> for RequantFqBackward {
    type State = Vec<u8>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let mut dy = grads.consume::<Flex>(&ops.node);
        let Some(node) = node else { return };
        let mask = ops.state;
        let n = mask.len();
        // dy's own buffer when it is the tensor's whole, unshared storage; else a new one.
        let whole = dy.as_slice::<f32>().is_some_and(|s| s.len() == n) && dy.bytes().len() == 4 * n;
        if let Some(d) = whole.then(|| dy.try_storage_mut::<f32>()).flatten() {
            for (d, &m) in d.iter_mut().zip(&mask) {
                if m == 0 {
                    *d = 0.0;
                }
            }
            grads.register::<Flex>(node.id, dy);
            return;
        }
        let shape = dy.layout().shape().clone();
        let dyc = contiguous(&dy);
        let src = dyc.as_slice::<f32>().expect("f32 gradient");
        let dx: Vec<f32> = src
            .iter()
            .zip(&mask)
            .map(|(&g, &m)| if m == 0 { 0.0 } else { g })
            .collect();
        grads.register::<Flex>(node.id, flex_tensor(dx, shape));
    }
}

fn flex_tensor(v: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

/// [`fake_quant_requant`] as a chain of burn ops: the f64 exact evaluation, and the reference
/// the fused f32 pass is tested against.
pub fn fake_quant_requant_ops<const D: usize>(
    x: Tensor<D>,
    scheme: QScheme,
    p: QuantParams,
    shifts: &[i32],
    exact: bool,
) -> Tensor<D> {
    let r = scheme.nudged_range(p);
    let xc = if exact {
        x.detach().cast(burn::tensor::FloatDType::F64)
    } else {
        clamp_closed(x, r.min, r.max)
    };
    let dims = xc.dims();
    let mut shape = [1usize; D];
    shape[1] = dims[1];
    let pow2: Vec<f32> = shifts.iter().map(|&e| (2f64.powi(e)) as f32).collect();
    let dtype = xc.dtype();
    let device = xc.device();
    let p2 = Tensor::<1>::from_data(TensorData::new(pow2, [dims[1]]), (&device, dtype))
        .reshape(shape)
        .expand(dims);
    let z = p.zero_point as f64;
    let v = xc.clone().detach().div_scalar(p.scale as f64);
    let t = (v * p2.clone()).add_scalar(0.5).floor();
    let code = (t.clone().abs() / p2).add_scalar(0.5).floor() * t.sign();
    let fq = code
        .clamp(scheme.qmin() as f64 - z, scheme.qmax() as f64 - z)
        .mul_scalar(p.scale as f64);
    if exact {
        fq
    } else {
        ste(fq, xc)
    }
}

/// One channel of [`fake_quant_levels`]: the approximate code `floor(x a + b)`, the exact
/// thresholds `t[k]` (the smallest `x` whose reference code is at least `k`; `t[0] = lo`,
/// `t[L+1] = f32::MAX`) and the values `v[k]` of the codes (`v[L+1]` is padding).
struct Levels {
    a: f32,
    b: f32,
    thresholds: Vec<f32>,
    values: Vec<f32>,
}

/// f32 in [`f32::total_cmp`] order as an integer, and back.
fn f32_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 1 << 31
    }
}

fn f32_from_key(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & !(1 << 31) } else { !k })
}

impl Levels {
    /// The tables of a reference `code` (non-decreasing in `x`, in `0..=levels` on `[lo, hi]`)
    /// whose code `k` has the value `value(k)`; `floor(x a + b)` must be within one of `code`.
    /// Each threshold starts from the estimate `(k - b) / a` and walks f32 steps (a few at
    /// most); a binary search over `[lo, hi]` backs the walk up.
    fn new(
        code: impl Fn(f32) -> i32,
        value: impl Fn(i32) -> f32,
        levels: i32,
        (lo, hi): (f32, f32),
        (a, b): (f32, f32),
    ) -> Levels {
        let (klo, khi) = (f32_key(lo), f32_key(hi));
        let threshold = |k: i32| -> f32 {
            let est = ((k as f64 - b as f64) / a as f64) as f32;
            let mut key = f32_key(if est.is_finite() {
                est.clamp(lo, hi)
            } else {
                lo
            });
            for _ in 0..64 {
                let here = code(f32_from_key(key)) >= k;
                if here && (key == klo || code(f32_from_key(key - 1)) < k) {
                    return f32_from_key(key);
                }
                if !here && key == khi {
                    break;
                }
                key = if here { key - 1 } else { key + 1 };
            }
            // The smallest key in [klo, khi] whose code is at least k (khi when none is).
            let (mut l, mut h) = (klo, khi);
            while l < h {
                let m = l + (h - l) / 2;
                if code(f32_from_key(m)) >= k {
                    h = m;
                } else {
                    l = m + 1;
                }
            }
            f32_from_key(l)
        };
        let mut thresholds = Vec::with_capacity(levels as usize + 2);
        thresholds.push(lo);
        thresholds.extend((1..=levels).map(threshold));
        thresholds.push(f32::MAX);
        let mut values: Vec<f32> = (0..=levels).map(&value).collect();
        values.push(value(levels));
        Levels {
            a,
            b,
            thresholds,
            values,
        }
    }
}

/// Fake quantization whose codes do not depend on the device's division: exact on backends
/// whose shading language does not promise IEEE division (wgpu's WGSL and Vulkan allow 2.5
/// ulp), where `(x - n_min) / S + 0.5` can land on the other side of a rounding boundary.
///
/// Every code function here is non-decreasing in `x`, so code `k` starts at one f32 threshold
/// `t[k]`, found on the host with the reference arithmetic (IEEE division). On the device an
/// approximate code `a = floor(x / S + b)` comes from a multiplication by the reciprocal (within
/// one of the true code: both are within `0.5 + 2^-(e+1)` code of `x / S` and the reciprocal
/// costs a few ulp), and is corrected with the thresholds, `k = a - [x < t[a]] + [x >= t[a+1]]`,
/// two table reads and two comparisons, which every backend does exactly. The result is the
/// code's value read from a table computed on the host, so no device arithmetic touches it.
/// `xc` is clamped to the range already (detached); `axis` is the channel axis of `levels`
/// (ignored with one channel). NaN stays NaN.
fn fake_quant_levels<const D: usize>(xc: Tensor<D>, axis: usize, levels: &[Levels]) -> Tensor<D> {
    let dims = xc.dims();
    let n: usize = dims.iter().product();
    let device = xc.device();
    let stride = levels[0].thresholds.len();
    let channel = |v: Vec<f32>| -> Tensor<D> {
        let mut shape = [1usize; D];
        if levels.len() > 1 {
            shape[axis] = levels.len();
        }
        Tensor::<1>::from_data(TensorData::new(v, [levels.len()]), &device)
            .reshape(shape)
            .expand(dims)
    };
    let table = |f: fn(&Levels) -> &Vec<f32>| {
        let flat: Vec<f32> = levels.iter().flat_map(|l| f(l).iter().copied()).collect();
        let len = flat.len();
        Tensor::<1>::from_data(TensorData::new(flat, [len]), &device)
    };
    let top = (stride - 2) as f32;
    let approx = (xc.clone() * channel(levels.iter().map(|l| l.a).collect())
        + channel(levels.iter().map(|l| l.b).collect()))
    .floor();
    let nan = approx.clone().is_nan();
    // The channel's first entry in the flattened tables, added while the index is a float (exact
    // below 2^24).
    let base = channel((0..levels.len()).map(|c| (c * stride) as f32).collect());
    let idx = approx.clamp(0.0, top).mask_fill(nan, 0.0) + base;
    let thresholds = table(|l| &l.thresholds);
    let at = |i: Tensor<D>| {
        thresholds
            .clone()
            .select(0, i.reshape([n]).int())
            .reshape(dims)
    };
    let below = xc.clone().lower(at(idx.clone())).float();
    let above = xc
        .clone()
        .greater_equal(at(idx.clone().add_scalar(1.0)))
        .float();
    let code = idx - below + above;
    let fq = table(|l| &l.values)
        .select(0, code.reshape([n]).int())
        .reshape(dims);
    // `x - x` is 0 for every finite `x` and NaN for NaN, as the division path gives.
    fq + (xc.clone() - xc)
}

/// [`fake_quant`]'s per-tensor levels: `code(x) = floor((clamp(x) - n_min) / S + 0.5)`,
/// `value(k) = k S + n_min`, the f32 steps of `QScheme::fake_quant`.
fn tensor_levels(scheme: QScheme, p: QuantParams) -> Levels {
    let r = scheme.nudged_range(p);
    let s = p.scale;
    Levels::new(
        |x| ((x.clamp(r.min, r.max) - r.min) / s + 0.5).floor() as i32,
        |k| k as f32 * s + r.min,
        scheme.qmax() - scheme.qmin(),
        (r.min, r.max),
        (1.0 / s, 0.5 - r.min / s),
    )
}

/// [`fake_quant`] through [`fake_quant_levels`] (the path every backend but `flex` takes; the
/// same bits, tested on both).
pub fn fake_quant_by_levels<const D: usize>(
    x: Tensor<D>,
    scheme: QScheme,
    p: QuantParams,
) -> Tensor<D> {
    let r = scheme.nudged_range(p);
    let xc = clamp_closed(x, r.min, r.max);
    let fq = fake_quant_levels(xc.clone().detach(), 0, &[tensor_levels(scheme, p)]);
    ste(fq, xc)
}

/// [`fake_quant_per_channel`] through [`fake_quant_levels`] (axis 0).
pub fn fake_quant_per_channel_by_levels<const D: usize>(
    x: Tensor<D>,
    scheme: QScheme,
    params: &[QuantParams],
) -> Tensor<D> {
    let ranges: Vec<_> = params.iter().map(|&p| scheme.nudged_range(p)).collect();
    let lo = channel_tensor(ranges.iter().map(|r| r.min).collect(), &x).detach();
    let hi = channel_tensor(ranges.iter().map(|r| r.max).collect(), &x);
    let below: Tensor<D, Bool> = x.clone().lower(lo.clone());
    let above: Tensor<D, Bool> = x.clone().greater(hi.clone());
    let xc = x.mask_where(below, lo).mask_where(above, hi);
    let levels: Vec<Levels> = params.iter().map(|&p| tensor_levels(scheme, p)).collect();
    let fq = fake_quant_levels(xc.clone().detach(), 0, &levels);
    ste(fq, xc)
}

/// [`fake_quant_requant`] (f32, with gradient) through [`fake_quant_levels`] (axis 1): the
/// reference code of channel `c` is `intq_kernels::qat`'s with its right shift.
pub fn fake_quant_requant_by_levels<const D: usize>(
    x: Tensor<D>,
    scheme: QScheme,
    p: QuantParams,
    shifts: &[i32],
) -> Tensor<D> {
    let r = scheme.nudged_range(p);
    let xc = clamp_closed(x, r.min, r.max);
    let dims = xc.dims();
    let k = RequantFq::new(scheme, p, shifts, &dims).k;
    let (qlo, qhi) = (k.qlo as i32, k.qhi as i32);
    let levels: Vec<Levels> = (0..dims[1])
        .map(|c| {
            let e = shifts.get(c).copied().unwrap_or(0);
            let code = |x: f32| {
                let mut fq = [0f32];
                k.block(Isa::Portable, e, &[x], &mut fq, None);
                (fq[0] / k.scale).round() as i32 - qlo
            };
            Levels::new(
                code,
                |i| (qlo + i) as f32 * k.scale + k.zero,
                qhi - qlo,
                (r.min, r.max),
                (1.0 / k.scale, 0.5 - qlo as f32),
            )
        })
        .collect();
    let fq = fake_quant_levels(xc.clone().detach(), 1, &levels);
    ste(fq, xc)
}

#[cfg(test)]
mod tests {
    /// The eight-lane min/max equals a left-to-right scan on every length up to 40 (tails of
    /// every size), with the extremes at every position, and is NaN wherever a NaN is.
    #[test]
    fn slice_min_max_is_a_scan() {
        let mut rng = intq_testutil::TestRng::new(7);
        let mut next = || rng.int(-1000, 1000) as f32 / 10.0;
        assert_eq!(super::slice_min_max(&[]), None);
        for n in 1..=40 {
            for at in 0..n {
                let mut v: Vec<f32> = (0..n).map(|_| next()).collect();
                v[at] = if at % 2 == 0 { -1e30 } else { 1e30 };
                let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(super::slice_min_max(&v), Some((lo, hi)), "n={n}, at={at}");
                v[(at * 7 + 3) % n] = f32::NAN;
                let (l, h) = super::slice_min_max(&v).unwrap();
                assert!(l.is_nan() && h.is_nan(), "n={n}: NaN missed");
            }
        }
    }
}
