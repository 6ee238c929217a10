//! QAT layers that train what the integer engine runs: Conv2d (+ folded BN) + fused activation,
//! depthwise conv, fully connected, residual add, concat, pools and the input quantizer. Each
//! materialized output carries its own observer (docs/spec.md §2.3), and in evaluation every layer
//! can hand conversion exactly the folded weights, weight params, bias and activation params it
//! used.

use burn::module::{Module, Param, RunningState};
use burn::tensor::module::{avg_pool2d, conv2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use intq_quant::{QScheme, QuantParams};

use crate::bn::bn_act_train;
pub use crate::ckpt_file::RangeMode;
use crate::conv::conv2d_train;
use crate::fake_quant::{
    bias_code, bias_on_grid, f64_tensor, fake_quant, fake_quant_exact, fake_quant_weights,
    host_vec, weight_code, WeightQuant,
};
use crate::observer::EmaObserver;
use crate::pool::max_pool2d_train;
use crate::shard::{bn_update, state_id, BnUpdate, StateLog, StateUpdate};
use crate::TrainError;

/// Quantization settings of a QAT run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantCfg {
    /// Scheme of every activation (per tensor).
    pub act_scheme: QScheme,
    /// Scheme of every weight tensor.
    pub weight_scheme: QScheme,
    /// Weights per output channel (conv, depthwise, FC) instead of per tensor.
    pub per_channel: bool,
    /// Steps during which activation ranges are observed but not applied.
    pub quant_delay: u64,
    /// Use moving BN statistics only and stop updating them (docs/spec.md §3.3).
    pub freeze_bn: bool,
    /// Stop updating activation observers, and learned ranges (no gradient reaches them).
    pub freeze_observers: bool,
    /// How activation ranges are set: fixed by the EMA observers (default) or learned once
    /// the quant delay ends ([`crate::observer::LearnedRange`]).
    pub ranges: RangeMode,
}

impl QuantCfg {
    /// The paper's scheme: uint8 activations, narrow-range asymmetric uint8 weights per tensor.
    pub fn uint8(bits_a: u8, bits_w: u8) -> Result<Self, TrainError> {
        Ok(QuantCfg {
            act_scheme: QScheme::new(bits_a, false, false, false)?,
            weight_scheme: QScheme::new(bits_w, false, true, false)?,
            per_channel: false,
            quant_delay: 0,
            freeze_bn: false,
            freeze_observers: false,
            ranges: RangeMode::Ema,
        })
    }

    /// TFLite's scheme: int8 asymmetric activations, symmetric narrow int8 weights.
    pub fn int8(bits_a: u8, bits_w: u8, per_channel: bool) -> Result<Self, TrainError> {
        Ok(QuantCfg {
            act_scheme: QScheme::new(bits_a, true, false, false)?,
            weight_scheme: QScheme::new(bits_w, true, true, true)?,
            per_channel,
            quant_delay: 0,
            freeze_bn: false,
            freeze_observers: false,
            ranges: RangeMode::Ema,
        })
    }
}

/// Per-forward context: training or evaluation, the global step (for quant delay), the
/// quantization settings (`None` = float training/evaluation), and where state updates go.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub training: bool,
    pub step: u64,
    pub quant: Option<QuantCfg>,
    /// Evaluate the fake-quant network exactly: f64 arithmetic on the real values of the codes
    /// (weights `S_w (w_q - Z_w)`, bias `code * S_in S_w`, activations `S (q - Z)`), so the only
    /// differences left to the integer engine are its own fixed-point rounding. Evaluation with
    /// `quant` only; ignored otherwise. See docs/fidelity.md.
    pub exact: bool,
    /// `Some`: a training forward records its state updates (BN batch statistics, observer
    /// batch ranges) here instead of applying them, and each observer fake-quantizes with the
    /// range its update would give; [`crate::shard::apply_updates`] applies them later.
    /// Data-parallel shards use this so that no thread writes shared state. `None`: updates
    /// are applied at once.
    pub log: Option<&'a StateLog>,
}

impl Ctx<'static> {
    pub fn float(training: bool) -> Self {
        Ctx {
            training,
            step: 0,
            quant: None,
            exact: false,
            log: None,
        }
    }

    /// Evaluation (moving BN statistics, observed ranges), in f32 as training computes.
    pub fn eval(quant: Option<QuantCfg>) -> Self {
        Ctx {
            training: false,
            step: u64::MAX,
            quant,
            exact: false,
            log: None,
        }
    }

    /// Evaluation of the fake-quant network in exact (f64) arithmetic.
    pub fn eval_exact(quant: QuantCfg) -> Self {
        Ctx {
            exact: true,
            ..Ctx::eval(Some(quant))
        }
    }
}

impl Ctx<'_> {
    /// The quantization settings when this forward is an exact evaluation.
    pub fn exact_quant(&self) -> Option<QuantCfg> {
        if self.exact && !self.training {
            self.quant
        } else {
            None
        }
    }
}

/// An activation tensor and the params it is quantized with (`None` in float mode or before the
/// quant delay ends), so ops that share their input's params (pools) can stay on its grid.
#[derive(Debug, Clone)]
pub struct Act {
    pub x: Tensor<4>,
    pub q: Option<QuantParams>,
}

/// Fused activation, applied as a clamp exactly as the integer engine clamps.
pub const ACT_NONE: u8 = 0;
pub const ACT_RELU: u8 = 1;
pub const ACT_RELU6: u8 = 2;

pub(crate) fn activate<const D: usize>(x: Tensor<D>, act: u8) -> Tensor<D> {
    match act {
        ACT_RELU => x.clamp_min(0.0),
        ACT_RELU6 => x.clamp(0.0, 6.0),
        _ => x,
    }
}

/// He-uniform initial weights (bound `sqrt(6 / fan_in)`), suited to ReLU networks.
fn he_uniform<const D: usize>(shape: [usize; D], fan_in: usize, device: &Device) -> Tensor<D> {
    let a = (6.0 / fan_in as f64).sqrt();
    Tensor::random(shape, Distribution::Uniform(-a, a), device)
}

/// What a conv/FC layer ran in evaluation: everything conversion needs.
#[derive(Debug, Clone)]
pub struct FoldedLayer {
    /// Folded f32 weights in the training layout (`[O, I/groups, kh, kw]` or `[O, I]`).
    pub weights: Vec<f32>,
    pub weight_shape: Vec<usize>,
    /// Weight params (per tensor or per output channel).
    pub weight_quant: WeightQuant,
    /// Folded f32 bias `[O]`; conversion stores `round(b / (S_in * S_w[k]))` as int32.
    pub bias: Vec<f32>,
    /// Output activation params.
    pub output: QuantParams,
    /// Fused activation (ACT_*).
    pub act: u8,
}

/// Conv2d with optional folded batch norm (docs/spec.md §3) and a fused activation; `groups == in
/// == out` makes it depthwise.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub weight: Param<Tensor<4>>,
    /// Conv bias, only without BN (BN's beta plays its role otherwise).
    pub bias: Option<Param<Tensor<1>>>,
    pub gamma: Option<Param<Tensor<1>>>,
    pub beta: Option<Param<Tensor<1>>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    pub out_obs: EmaObserver,
    pub stride: usize,
    pub padding: usize,
    /// Spacing of the kernel taps (1: a plain convolution).
    pub dilation: usize,
    pub groups: usize,
    pub act: u8,
    pub bn: bool,
    pub eps: f64,
    pub momentum: f64,
}

/// Construction options shared by the zoo's layers.
#[derive(Debug, Clone, Copy)]
pub struct LayerOpts {
    pub ema_decay: f64,
    /// Learned-range parameters in every activation observer (checkpoint layouts depend on it).
    pub ranges: RangeMode,
}

impl Default for LayerOpts {
    fn default() -> Self {
        LayerOpts {
            ema_decay: 0.99,
            ranges: RangeMode::Ema,
        }
    }
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        bn: bool,
        act: u8,
        opts: LayerOpts,
        device: &Device,
    ) -> Self {
        let fan_in = cin / groups * kernel * kernel;
        let w = he_uniform([cout, cin / groups, kernel, kernel], fan_in, device);
        ConvBn {
            weight: Param::from_tensor(w),
            bias: (!bn).then(|| Param::from_tensor(Tensor::zeros([cout], device))),
            gamma: bn.then(|| Param::from_tensor(Tensor::ones([cout], device))),
            beta: bn.then(|| Param::from_tensor(Tensor::zeros([cout], device))),
            running_mean: RunningState::new(Tensor::zeros([cout], device)),
            running_var: RunningState::new(Tensor::ones([cout], device)),
            out_obs: EmaObserver::with_opts(opts, device),
            stride,
            padding: kernel / 2,
            dilation: 1,
            groups,
            act,
            bn,
            eps: 1e-5,
            momentum: 0.1,
        }
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    fn options(&self) -> ConvOptions<2> {
        ConvOptions::new(
            [self.stride, self.stride],
            [self.padding, self.padding],
            [self.dilation, self.dilation],
            self.groups,
        )
    }

    fn running(&self, device: &Device) -> (Tensor<1>, Tensor<1>) {
        (
            self.running_mean.value_sync().to_device(device),
            self.running_var.value_sync().to_device(device),
        )
    }

    /// Folding factor `gamma / sqrt(var_mv + eps)` and folded bias from the moving statistics.
    fn fold(&self, device: &Device) -> (Tensor<1>, Tensor<1>) {
        let (mean, var) = self.running(device);
        let gamma = self.gamma.as_ref().expect("bn layer").val();
        let beta = self.beta.as_ref().expect("bn layer").val();
        let sf = gamma / var.add_scalar(self.eps).sqrt();
        let b = beta - sf.clone() * mean;
        (sf, b)
    }

    /// Moves the moving statistics towards a batch's mean and biased variance over `count`
    /// elements per channel, or records that in `ctx.log`.
    fn update_running(&self, mean: Tensor<1>, var: Tensor<1>, count: usize, ctx: &Ctx) {
        match ctx.log {
            Some(log) => log.push(StateUpdate::BatchNorm(Box::new(BnUpdate {
                key: state_id(&self.running_mean),
                running_mean: self.running_mean.clone(),
                running_var: self.running_var.clone(),
                momentum: self.momentum,
                mean: mean.detach(),
                var: var.detach(),
                count,
            }))),
            None => bn_update(
                &self.running_mean,
                &self.running_var,
                self.momentum,
                mean,
                var,
            ),
        }
    }

    pub fn forward(&self, input: Act, ctx: &Ctx) -> Result<Act, TrainError> {
        self.forward_folded(input, ctx, None)
    }

    /// The weights the layer convolves with, `W'[o, c] = W[o, c] / s_c` under `fold`, and the
    /// bias that `fold` adds, `b'[o] = -sum_{c,kh,kw} W[o, c, kh, kw] m_c / s_c` (docs/spec.md
    /// §10); recomputed from the trainable `W` on every call so that training sees them.
    fn folded_weight(
        &self,
        fold: Option<&ChannelFold>,
    ) -> Result<(Tensor<4>, Option<Tensor<1>>), TrainError> {
        let w = self.weight.val();
        let Some(f) = fold else {
            return Ok((w, None));
        };
        let [o, c, _, _] = w.dims();
        if self.groups != 1 || f.inv_std.len() != c || f.shift.len() != c {
            return Err(TrainError::Config(format!(
                "the input normalization has {} channels; the first layer reads {c} in {} groups",
                f.inv_std.len(),
                self.groups
            )));
        }
        let device = w.device();
        let per_channel = |v: &[f32]| {
            Tensor::<1>::from_data(TensorData::new(v.to_vec(), [c]), &device).reshape([1, c, 1, 1])
        };
        let extra = (w.clone() * per_channel(&f.shift))
            .sum_dim(3)
            .sum_dim(2)
            .sum_dim(1)
            .reshape([o])
            .neg();
        Ok((w * per_channel(&f.inv_std), Some(extra)))
    }

    /// [`ConvBn::forward`] of a first layer with the input normalization `fold` folded into
    /// its weights and bias (docs/spec.md §10); `None` is the plain layer.
    pub fn forward_folded(
        &self,
        input: Act,
        ctx: &Ctx,
        fold: Option<&ChannelFold>,
    ) -> Result<Act, TrainError> {
        if let Some(q) = ctx.exact_quant() {
            return self.forward_exact(input, &q, fold);
        }
        let (weight, extra) = self.folded_weight(fold)?;
        let in_q = input.q;
        let x = input.x;
        let device = x.device();
        let c = self.out_channels();
        let mut wquant = None;
        // Training batch norm applies the activation itself (one fused op).
        let mut activated = false;
        let y = match (ctx.quant, self.bn) {
            (None, false) => conv2d_train(
                x,
                weight,
                plus(self.bias.as_ref().map(|b| b.val()), extra),
                self.options(),
            ),
            (None, true) => {
                // The fold's bias goes in before the normalization, as the unfolded layer's
                // conv output on normalized inputs would.
                let y = conv2d_train(x, weight, extra, self.options());
                if ctx.training {
                    let count = per_channel(&y);
                    let r = bn_act_train(
                        y,
                        None,
                        self.gamma.as_ref().expect("bn").val(),
                        self.beta.as_ref().expect("bn").val(),
                        self.eps,
                        self.act,
                    );
                    self.update_running(r.mean, r.variance, count, ctx);
                    activated = true;
                    r.output
                } else {
                    let (sf, b) = self.fold(&device);
                    y * sf.reshape([1, c, 1, 1]) + b.reshape([1, c, 1, 1])
                }
            }
            (Some(q), false) => {
                let (wq, wqp) = fake_quant_weights(weight, q.weight_scheme, q.per_channel)?;
                let b = plus(self.bias.as_ref().map(|b| b.val()), extra)
                    .map(|b| snap_bias(b, in_q, &wqp));
                wquant = Some(wqp);
                conv2d_train(x, wq, b, self.options())
            }
            (Some(q), true) => {
                let (sf, b_fold) = self.fold(&device);
                let w_fold = weight * sf.clone().reshape([c, 1, 1, 1]);
                let (wq, wqp) = fake_quant_weights(w_fold, q.weight_scheme, q.per_channel)?;
                let y = conv2d_train(x, wq, None, self.options());
                let y = if ctx.training && !q.freeze_bn {
                    // bn_act_train divides by sf: adding sf * b' puts b' on the unfolded output.
                    let y = match &extra {
                        Some(e) => y + (e.clone() * sf.clone()).reshape([1, c, 1, 1]),
                        None => y,
                    };
                    // conv(x, fq(w * sf)) / sf is the unfolded conv output; normalizing it with
                    // batch statistics gives docs/spec.md §3.2's `y * sigma_mv / sigma_B + beta -
                    // gamma mu_B / sigma_B` with a single convolution.
                    let count = per_channel(&y);
                    let r = bn_act_train(
                        y,
                        Some(sf),
                        self.gamma.as_ref().expect("bn").val(),
                        self.beta.as_ref().expect("bn").val(),
                        self.eps,
                        self.act,
                    );
                    self.update_running(r.mean, r.variance, count, ctx);
                    activated = true;
                    r.output
                } else {
                    let b = match extra {
                        Some(e) => b_fold + sf * e,
                        None => b_fold,
                    };
                    y + snap_bias(b, in_q, &wqp).reshape([1, c, 1, 1])
                };
                wquant = Some(wqp);
                y
            }
        };
        let y = if activated { y } else { activate(y, self.act) };
        let s_in = in_q.map(|p| p.scale);
        let (x, q) = self.out_obs.apply_requant(y, ctx, s_in, wquant.as_ref())?;
        Ok(Act { x, q })
    }

    /// Folded weights, weight params, folded bias and output params, as evaluation runs them.
    pub fn export(&self, q: &QuantCfg) -> Result<FoldedLayer, TrainError> {
        self.export_folded(q, None)
    }

    /// [`ConvBn::export`] of a first layer with the input normalization `fold` folded in.
    pub fn export_folded(
        &self,
        q: &QuantCfg,
        fold: Option<&ChannelFold>,
    ) -> Result<FoldedLayer, TrainError> {
        let device = self.weight.val().device();
        let (weight, extra) = self.folded_weight(fold)?;
        let (w, b) = if self.bn {
            let (sf, b) = self.fold(&device);
            let c = self.out_channels();
            let b = match extra {
                Some(e) => b + sf.clone() * e,
                None => b,
            };
            (weight * sf.reshape([c, 1, 1, 1]), b)
        } else {
            let b = plus(self.bias.as_ref().map(|b| b.val()), extra).expect("conv bias");
            (weight, b)
        };
        FoldedLayer::new(w, b, q, &self.out_obs, self.act, "a conv layer")
    }

    /// [`ConvBn::forward`] in exact evaluation: the folded layer conversion stores, convolved
    /// on the codes into the engine's integer accumulators and requantized as the engine does
    /// ([`FoldedLayer::requant_exact`]).
    fn forward_exact(
        &self,
        input: Act,
        q: &QuantCfg,
        fold: Option<&ChannelFold>,
    ) -> Result<Act, TrainError> {
        let p_in = exact_input(&input, "a conv layer")?;
        let f = self.export_folded(q, fold)?;
        let device = input.x.device();
        let shape = [
            f.weight_shape[0],
            f.weight_shape[1],
            f.weight_shape[2],
            f.weight_shape[3],
        ];
        let (w, b) = f.grid_codes(q.weight_scheme, p_in.scale)?;
        let w = f64_tensor(w, shape, &device);
        let b = f64_tensor(b, [shape[0]], &device);
        let acc = conv2d(input_codes(input.x, p_in), w, Some(b), self.options());
        let x = f.requant_exact(acc, p_in.scale, q.act_scheme)?;
        Ok(Act {
            x,
            q: Some(f.output),
        })
    }
}

/// The sum of two optional biases.
fn plus(a: Option<Tensor<1>>, b: Option<Tensor<1>>) -> Option<Tensor<1>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Elements per channel of an `[N, C, H, W]` tensor (what a BN batch statistic averages).
fn per_channel(y: &Tensor<4>) -> usize {
    let [n, _, h, w] = y.dims();
    n * h * w
}

/// In quantized forwards, the bias on the int32 grid of the input and weight scales (when the
/// input has params yet); otherwise unchanged.
pub(crate) fn snap_bias(b: Tensor<1>, in_q: Option<QuantParams>, wq: &WeightQuant) -> Tensor<1> {
    match in_q {
        Some(p) => bias_on_grid(b, p.scale, wq),
        None => b,
    }
}

/// The codes `q - Z` of an exact evaluation's activation `x` (the real values `S (q - Z)`, f64)
/// on params `p`, as integers in f64; zero padding stays 0.
pub(crate) fn input_codes<const D: usize>(x: Tensor<D>, p: QuantParams) -> Tensor<D> {
    x.cast(burn::tensor::FloatDType::F64)
        .div_scalar(p.scale as f64)
        .round()
}

/// The clamp a fused activation puts on output codes as the engine computes it (docs/spec.md
/// §4.5: `quantize(f) = Z + round_away(f / S)` in f32), within the scheme's codes.
pub(crate) fn act_clamp(act: u8, po: QuantParams, scheme: QScheme) -> (i32, i32) {
    let quantize = |f: f32| po.zero_point.saturating_add((f / po.scale).round() as i32);
    let (qmin, qmax) = (scheme.qmin(), scheme.qmax());
    match act {
        ACT_RELU => (qmin.max(quantize(0.0)), qmax),
        ACT_RELU6 => (qmin.max(quantize(0.0)), qmax.min(quantize(6.0))),
        _ => (qmin, qmax),
    }
}

/// The input params an exact evaluation needs: every input of a quantized layer is on a grid.
pub(crate) fn exact_input(a: &Act, what: &str) -> Result<QuantParams, TrainError> {
    a.q.ok_or_else(|| {
        TrainError::Export(format!(
            "exact evaluation: the input of {what} has no quantization params (no observed range)"
        ))
    })
}

impl FoldedLayer {
    /// The layer as evaluation runs it: folded weights `w` with the params their fake quant
    /// uses, bias `b`, and the output params of `out_obs` (`what` names the layer in the error
    /// when no range was observed).
    pub(crate) fn new<const D: usize>(
        w: Tensor<D>,
        b: Tensor<1>,
        q: &QuantCfg,
        out_obs: &EmaObserver,
        act: u8,
        what: &str,
    ) -> Result<Self, TrainError> {
        let (_, weight_quant) = fake_quant_weights(w.clone(), q.weight_scheme, q.per_channel)?;
        let output = out_obs
            .params(q.act_scheme)?
            .ok_or_else(|| TrainError::Export(format!("{what} has no observed output range")))?;
        Ok(FoldedLayer {
            weight_shape: w.dims().to_vec(),
            weights: host_vec(w),
            weight_quant,
            bias: host_vec(b),
            output,
            act,
        })
    }

    /// The integers the engine's accumulator sums, in f64: weight codes `w_q - Z_w[k]` (training
    /// layout) and bias codes (at scale `S_in * S_w[k]`).
    pub fn grid_codes(
        &self,
        scheme: QScheme,
        s_in: f32,
    ) -> Result<(Vec<f64>, Vec<f64>), TrainError> {
        let o = self.weight_shape[0];
        let per = self.weights.len() / o.max(1);
        let w = self
            .weights
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let p = self.weight_quant.channel(i / per);
                (weight_code(scheme, p, v) - p.zero_point) as f64
            })
            .collect();
        let b = self
            .bias
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                let s = s_in * self.weight_quant.scale(k);
                bias_code(v, s).map(f64::from).ok_or_else(|| {
                    TrainError::Export(format!(
                        "bias {v} of channel {k} does not fit int32 at scale {s}"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok((w, b))
    }

    /// Exact evaluation of the layer's output (docs/spec.md §2.6): the engine's integer
    /// accumulators `acc` (output channels on axis 1; exact integers in f64, from
    /// [`FoldedLayer::grid_codes`] and the input's codes) requantized as the engine does
    /// (§4.4): `clamp(MBQM(acc, m0_k, shift_k) + Z_out, act_min, act_max)` with the multiplier
    /// `M_k = S_in S_w[k] / S_out` rounded to its 31-bit `m0_k`, and the fused activation as
    /// the engine's clamp (§4.5). Returns the real values `S_out (q - Z_out)`, f64.
    pub fn requant_exact<const D: usize>(
        &self,
        acc: Tensor<D>,
        s_in: f32,
        scheme: QScheme,
    ) -> Result<Tensor<D>, TrainError> {
        let s_out = self.output.scale as f64;
        self.requant_exact_with(acc, s_in, scheme, |s_w| s_in as f64 * s_w as f64 / s_out)
    }

    /// [`FoldedLayer::requant_exact`] for an op whose engine forms the real multiplier of
    /// weight scale `S_w` as `multiplier(S_w)` (uint8 TRANSPOSE_CONV: the product `S_in S_w` in
    /// f32, docs/spec.md §11.13).
    pub fn requant_exact_with<const D: usize>(
        &self,
        acc: Tensor<D>,
        s_in: f32,
        scheme: QScheme,
        multiplier: impl Fn(f32) -> f64,
    ) -> Result<Tensor<D>, TrainError> {
        let po = self.output;
        let dims = acc.dims();
        let (c, inner) = (dims[1], dims[2..].iter().product::<usize>());
        let m = (0..c)
            .map(|k| {
                let s_w = self.weight_quant.scale(k);
                let real = multiplier(s_w);
                intq_quant::QuantizedMultiplier::from_real(real).map_err(|e| {
                    TrainError::Export(format!(
                        "output multiplier S_in * S_w[{k}] / S_out = {s_in:e} * {s_w:e} / {:e} \
                         cannot be formed: {e}",
                        po.scale
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (lo, hi) = act_clamp(self.act, po, scheme);
        let device = acc.device();
        let acc = acc
            .into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .map_err(|e| TrainError::Export(format!("exact evaluation: {e:?}")))?;
        let out = acc
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                // The engine's int32 accumulator wraps.
                let code = m[(i / inner) % c]
                    .apply(a as i64 as i32)
                    .saturating_add(po.zero_point)
                    .clamp(lo, hi);
                po.scale as f64 * (code - po.zero_point) as f64
            })
            .collect();
        Ok(f64_tensor(out, dims, &device))
    }
}

/// Fully connected `y = x W^T + b` with weights `[out, in]` (the engine's layout) and a fused
/// activation.
#[derive(Module, Debug)]
pub struct QLinear {
    pub weight: Param<Tensor<2>>,
    pub bias: Param<Tensor<1>>,
    pub out_obs: EmaObserver,
    pub act: u8,
}

impl QLinear {
    pub fn new(cin: usize, cout: usize, act: u8, opts: LayerOpts, device: &Device) -> Self {
        let a = 1.0 / (cin as f64).sqrt();
        QLinear {
            weight: Param::from_tensor(Tensor::random(
                [cout, cin],
                Distribution::Uniform(-a, a),
                device,
            )),
            bias: Param::from_tensor(Tensor::zeros([cout], device)),
            out_obs: EmaObserver::with_opts(opts, device),
            act,
        }
    }

    /// `x`: `[N, in]` (a pooled `[N, C, 1, 1]` is flattened by the caller) with its params.
    pub fn forward(
        &self,
        x: Tensor<2>,
        in_q: Option<QuantParams>,
        ctx: &Ctx,
    ) -> Result<(Tensor<2>, Option<QuantParams>), TrainError> {
        if let Some(q) = ctx.exact_quant() {
            let p_in = in_q.ok_or_else(|| {
                TrainError::Export(
                    "exact evaluation: the classifier's input has no quantization params".into(),
                )
            })?;
            let f = self.export(&q)?;
            let [o, i] = [f.weight_shape[0], f.weight_shape[1]];
            let (w, b) = f.grid_codes(q.weight_scheme, p_in.scale)?;
            let device = x.device();
            let w = f64_tensor(w, [o, i], &device);
            let b = f64_tensor(b, [o], &device);
            let acc = input_codes(x, p_in).matmul(w.transpose()) + b.reshape([1, o]);
            let y = f.requant_exact(acc, p_in.scale, q.act_scheme)?;
            return Ok((y, Some(f.output)));
        }
        let (w, b, wquant) = match ctx.quant {
            Some(q) => {
                let (w, wquant) =
                    fake_quant_weights(self.weight.val(), q.weight_scheme, q.per_channel)?;
                let b = snap_bias(self.bias.val(), in_q, &wquant);
                (w, b, Some(wquant))
            }
            None => (self.weight.val(), self.bias.val(), None),
        };
        let cout = w.dims()[0];
        let y = x.matmul(w.transpose()) + b.reshape([1, cout]);
        let y = activate(y, self.act);
        let s_in = in_q.map(|p| p.scale);
        self.out_obs.apply_requant(y, ctx, s_in, wquant.as_ref())
    }

    pub fn export(&self, q: &QuantCfg) -> Result<FoldedLayer, TrainError> {
        let (w, b) = (self.weight.val(), self.bias.val());
        FoldedLayer::new(w, b, q, &self.out_obs, self.act, "the classifier")
    }
}

/// Residual add with its own output range and fused activation.
#[derive(Module, Debug)]
pub struct QAdd {
    pub out_obs: EmaObserver,
    pub act: u8,
}

impl QAdd {
    pub fn new(act: u8, opts: LayerOpts, device: &Device) -> Self {
        QAdd {
            out_obs: EmaObserver::with_opts(opts, device),
            act,
        }
    }

    pub fn forward(&self, a: Act, b: Act, ctx: &Ctx) -> Result<Act, TrainError> {
        if let (Some(q), Some(pa), Some(pb)) = (ctx.exact_quant(), a.q, b.q) {
            if let Some(po) = self.out_obs.params(q.act_scheme)? {
                return self.forward_exact(&a, &b, [pa, pb, po], q.act_scheme);
            }
        }
        let y = activate(a.x + b.x, self.act);
        let (x, q) = self.out_obs.apply(y, ctx)?;
        Ok(Act { x, q })
    }

    /// Exact evaluation: the engine's integer Add on the inputs' codes (docs/spec.md §4.6, its
    /// fixed-point rescaling of both inputs and the sum), with the fused activation as its clamp
    /// on the output codes, as `S (q - Z)` in f64. The f32 training pass rounds the real sum once
    /// instead; the two differ by a code at near-ties.
    fn forward_exact(
        &self,
        a: &Act,
        b: &Act,
        [pa, pb, po]: [QuantParams; 3],
        scheme: QScheme,
    ) -> Result<Act, TrainError> {
        let (lo, hi) = act_clamp(self.act, po, scheme);
        let add = intq_kernels::reference::AddParams::new(pa, pb, po, lo, hi)?;
        let code = |v: f32, p: QuantParams| (v / p.scale).round() as i32 + p.zero_point;
        let dims = a.x.dims();
        let out: Vec<f64> = host_vec(a.x.clone())
            .into_iter()
            .zip(host_vec(b.x.clone()))
            .map(|(x, y)| {
                let c = add.apply(code(x, pa), code(y, pb));
                po.scale as f64 * (c - po.zero_point) as f64
            })
            .collect();
        Ok(Act {
            x: f64_tensor(out, dims, &a.x.device()),
            q: Some(po),
        })
    }
}

/// Channel concatenation with one shared output range.
#[derive(Module, Debug)]
pub struct QConcat {
    pub out_obs: EmaObserver,
}

impl QConcat {
    pub fn new(opts: LayerOpts, device: &Device) -> Self {
        QConcat {
            out_obs: EmaObserver::with_opts(opts, device),
        }
    }

    pub fn forward(&self, inputs: Vec<Act>, ctx: &Ctx) -> Result<Act, TrainError> {
        let y = Tensor::cat(inputs.into_iter().map(|a| a.x).collect(), 1);
        let (x, q) = self.out_obs.apply(y, ctx)?;
        Ok(Act { x, q })
    }
}

/// Max or average pooling (`global` = over the whole feature map). Both share their input's
/// params in the engine; the average is put back on the input's grid so training sees the
/// engine's values.
#[derive(Module, Debug)]
pub struct Pool {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub max: bool,
    pub global: bool,
}

impl Pool {
    pub fn forward(&self, a: Act, ctx: &Ctx) -> Act {
        if let (false, Some(p), Some(q)) = (self.max, a.q, ctx.exact_quant()) {
            let [_, _, h, w] = a.x.dims();
            let (kernel, stride) = if self.global {
                ([h, w], [h, w])
            } else {
                ([self.kernel; 2], [self.stride; 2])
            };
            let x = avg_pool_exact(a.x, q.act_scheme, p, kernel, stride, [0; 4]);
            return Act { x, q: a.q };
        }
        let x = a.x;
        let y = if self.max {
            max_pool2d_train(x, self.kernel, self.stride, self.padding)
        } else if self.global {
            let [_, _, h, w] = x.dims();
            avg_pool2d(x, AvgPoolOptions::new([h, w]).with_stride([h, w]))
        } else {
            avg_pool2d(
                x,
                AvgPoolOptions::new([self.kernel, self.kernel])
                    .with_stride([self.stride, self.stride]),
            )
        };
        let y = match (self.max, a.q, ctx.quant) {
            (false, Some(p), Some(q)) => fake_quant(y, q.act_scheme, p),
            _ => y,
        };
        Act { x: y, q: a.q }
    }
}

/// An average pool in exact evaluation, as the engine computes it (docs/spec.md §4.7): over the
/// codes `q` of `x` (the real values `S (q - Z)`, f64, NCHW) on params `p`, each window clipped to
/// the picture (`pads` `[top, left, bottom, right]` are neither read nor counted), the code sum
/// `sum` of its `n` taps divided with rounding half away from zero (`trunc((sum ± n/2) / n)`),
/// clamped to the scheme's codes, as `S (q - Z)` in f64. Training's f32 pass averages the reals
/// and rounds half up ([`fake_quant`]); the two differ only at exact ties of negative codes.
pub(crate) fn avg_pool_exact(
    x: Tensor<4>,
    scheme: QScheme,
    p: QuantParams,
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    [top, left, bottom, right]: [usize; 4],
) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let (s, z) = (p.scale as f64, p.zero_point as i64);
    let codes: Vec<i64> = x
        .detach()
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v / s).round() as i64 + z)
        .collect();
    let oh = (h + top + bottom).saturating_sub(kh) / sh + 1;
    let ow = (w + left + right).saturating_sub(kw) / sw + 1;
    let (qmin, qmax) = (scheme.qmin() as i64, scheme.qmax() as i64);
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in codes.chunks_exact(h * w) {
        for oy in 0..oh {
            let y0 = (oy * sh).saturating_sub(top);
            let y1 = (oy * sh + kh).saturating_sub(top).min(h);
            for ox in 0..ow {
                let x0 = (ox * sw).saturating_sub(left);
                let x1 = (ox * sw + kw).saturating_sub(left).min(w);
                let (mut sum, mut taps) = (0i64, 0i64);
                for row in plane[y0 * w..y1 * w].chunks_exact(w) {
                    sum += row[x0..x1].iter().sum::<i64>();
                    taps += (x1 - x0) as i64;
                }
                let q = match taps {
                    0 => z,
                    _ if sum > 0 => (sum + taps / 2) / taps,
                    _ => (sum - taps / 2) / taps,
                };
                out.push(s * (q.clamp(qmin, qmax) - z) as f64);
            }
        }
    }
    f64_tensor(out, [n, c, oh, ow], &device)
}

/// Per-channel input normalization folded into the first layer (docs/spec.md §10): channel `c`
/// of the pixels `p/255` is scaled by `inv_std[c] = 1/s_c` and shifted by `-shift[c]`
/// (`shift[c] = m_c/s_c`) through that layer's weights and bias.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelFold {
    pub inv_std: Vec<f32>,
    pub shift: Vec<f32>,
}

/// The network's input quantizer. Its parameters are fixed by the pixel contract
/// (docs/spec.md §10): the integer model reads raw uint8 pixels `p`, and the normalization
/// `(p/255 - m_c) / s_c` either sets the input's `(S, Z)` (the same `m`, `s` on every channel)
/// or is folded into the first layer ([`ChannelFold`]).
#[derive(Module, Debug)]
pub struct InputQuant {
    /// Observes the input range in training, for the record only (checkpoints keep their
    /// layout); its params are not used.
    pub obs: EmaObserver,
    /// Per-channel mean and standard deviation, one of each per input channel.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// The 8-bit scheme of pixel codes (whatever the activations' bit width).
pub fn pixel_scheme(signed: bool) -> QScheme {
    QScheme::new(8, signed, false, false).expect("8-bit scheme")
}

impl InputQuant {
    /// `(round(255 m), s)` when every channel has the same mean `m` and std `s` and that zero
    /// point is a pixel value: the normalization then sets the input params.
    pub fn uniform(&self) -> Option<(i32, f32)> {
        let (m, s) = (*self.mean.first()?, *self.std.first()?);
        let same = self.mean.iter().all(|&x| x == m) && self.std.iter().all(|&x| x == s);
        let zp = (255.0 * m as f64).round();
        (same && (0.0..=255.0).contains(&zp)).then_some((zp as i32, s))
    }

    /// The input params: `S = 1/(255 s)`, `Z = round(255 m)` for a uniform normalization, else
    /// `(1/255, 0)`; the signed scheme's codes are the pixels less 128, so `Z` moves by -128.
    pub fn params(&self, signed: bool) -> QuantParams {
        let (zp, s) = self.uniform().unwrap_or((0, 1.0));
        QuantParams {
            scale: 1.0 / (255.0 * s),
            zero_point: zp - if signed { 128 } else { 0 },
        }
    }

    /// The fold into the first layer of a normalization that is not uniform.
    pub fn first_layer_fold(&self) -> Option<ChannelFold> {
        if self.uniform().is_some() {
            return None;
        }
        Some(ChannelFold {
            inv_std: self.std.iter().map(|&s| 1.0 / s).collect(),
            shift: self
                .mean
                .iter()
                .zip(&self.std)
                .map(|(&m, &s)| m / s)
                .collect(),
        })
    }

    /// `x`: pixels `p/255`. Returns what the first layer reads: `(p/255 - Z/255) / s` under a
    /// uniform normalization (the effective mean is `Z/255`), else `p/255`; on the grid of
    /// [`InputQuant::params`] once quantized (after the quant delay in training).
    pub fn forward(&self, x: Tensor<4>, ctx: &Ctx) -> Result<Act, TrainError> {
        let x = match self.uniform() {
            Some((zp, s)) if zp != 0 || s != 1.0 => x.sub_scalar(zp as f32 / 255.0).div_scalar(s),
            _ => x,
        };
        if ctx.training {
            self.obs.apply(x.clone(), ctx)?;
        }
        let Some(q) = ctx.quant else {
            return Ok(Act { x, q: None });
        };
        if ctx.training && ctx.step < q.quant_delay {
            return Ok(Act { x, q: None });
        }
        let signed = q.act_scheme.is_signed();
        let p = self.params(signed);
        let x = if ctx.exact_quant().is_some() {
            fake_quant_exact(x, pixel_scheme(signed), p)
        } else {
            fake_quant(x, pixel_scheme(signed), p)
        };
        Ok(Act { x, q: Some(p) })
    }
}

/// The running BN statistics of a layer as host vectors (tests and conversion).
pub fn running_stats(l: &ConvBn) -> (Vec<f32>, Vec<f32>) {
    (
        host_vec(l.running_mean.value_sync()),
        host_vec(l.running_var.value_sync()),
    )
}
