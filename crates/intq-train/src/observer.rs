//! Activation range observers (docs/spec.md §2.3): an exponential moving average of each batch's
//! min and max, kept as module state so it is saved with checkpoints, with quant delay and freezing
//! decided by the caller's [`Ctx`](crate::layers::Ctx); optionally a learned range
//! ([`LearnedRange`]) that takes over from the EMA once the quant delay ends.

use burn::module::{Module, Param, RunningState};
use burn::tensor::{Device, Tensor, TensorData};
use intq_quant::{QScheme, QuantParams};

use crate::fake_quant::{
    choose, fake_quant, fake_quant_exact, fake_quant_requant, host_vec, learned_minmax_params,
    lsq_grad_scale, lsq_grad_term, lsq_params, min_max, minmax_grad_term, requant_shifts,
    WeightQuant,
};
use crate::layers::{Ctx, LayerOpts, QuantCfg, RangeMode};
use crate::shard::{state_id, StateUpdate};
use crate::TrainError;

/// EMA of batch `[min, max]`. State tensor: `[min, max, seen]` where `seen` is 0 until the first
/// batch, which sets the range directly (an EMA from an arbitrary start would take hundreds of
/// steps to forget it).
#[derive(Module, Debug)]
pub struct EmaObserver {
    pub state: RunningState<Tensor<1>>,
    pub decay: f64,
    /// The learned range of `--ranges minmax|lsq`; `None` with ranges fixed by the EMA.
    pub learned: Option<LearnedRange>,
}

impl EmaObserver {
    pub fn new(decay: f64, device: &Device) -> Self {
        EmaObserver {
            state: RunningState::new(Tensor::zeros([3], device)),
            decay,
            learned: None,
        }
    }

    /// The observer the layers build: with a learned range unless `opts.ranges` is the EMA.
    pub fn with_opts(opts: LayerOpts, device: &Device) -> Self {
        EmaObserver {
            learned: LearnedRange::new(opts.ranges, device),
            ..EmaObserver::new(opts.ema_decay, device)
        }
    }

    /// The range mode this observer was built for.
    pub fn mode(&self) -> RangeMode {
        self.learned.as_ref().map_or(RangeMode::Ema, |l| l.mode())
    }

    /// The learned range when it has taken over from the EMA.
    fn active_learned(&self) -> Option<&LearnedRange> {
        self.learned.as_ref().filter(|l| l.ready())
    }

    /// Starts the learned range (if any, and not started yet) from the EMA's range: `minmax`
    /// takes the range itself, `lsq` the step `S` and zero point `Z` that range gives under
    /// `scheme`, so the first learned forward quantizes exactly as the EMA's would. Returns
    /// whether the observer now uses its final mode (false only while no batch was observed).
    /// Main thread only, between steps: it writes parameters and state.
    pub fn start_learned(&mut self, scheme: QScheme) -> Result<bool, TrainError> {
        let range = self.range();
        let Some(l) = self.learned.as_mut() else {
            return Ok(true);
        };
        if l.ready() {
            return Ok(true);
        }
        let Some((lo, hi)) = range else {
            return Ok(false);
        };
        let p = choose(scheme, lo, hi, "activation")?;
        l.start(lo, hi, p);
        Ok(true)
    }

    /// The current range, or `None` before the first observed batch.
    pub fn range(&self) -> Option<(f32, f32)> {
        let v = host_vec(self.state.value_sync());
        (v.len() == 3 && v[2] > 0.0).then(|| (v[0], v[1]))
    }

    /// Sets the range (used by tests and by conversion of imported ranges).
    pub fn set_range(&self, min: f32, max: f32) {
        let device = self.state.value_sync().device();
        self.state.update(Tensor::from_data(
            TensorData::new(vec![min, max, 1.0], [3]),
            &device,
        ));
        // Flush the per-thread pending value so visitors (checkpoints) see it.
        self.state.value_sync();
    }

    /// Folds one batch range into the average: `ema = decay * ema + (1 - decay) * batch`
    /// (in f32 on the host; the first batch sets it).
    pub fn observe(&self, batch_min: f32, batch_max: f32) {
        let (min, max) = self.next_range(batch_min, batch_max);
        self.set_range(min, max);
    }

    /// The range [`EmaObserver::observe`] would set, without setting it.
    pub fn next_range(&self, batch_min: f32, batch_max: f32) -> (f32, f32) {
        match self.range() {
            None => (batch_min, batch_max),
            Some((lo, hi)) => {
                let d = self.decay as f32;
                (
                    d * lo + (1.0 - d) * batch_min,
                    d * hi + (1.0 - d) * batch_max,
                )
            }
        }
    }

    /// The `(S, Z)` this observer quantizes with in evaluation (and conversion stores): the
    /// learned range's once it has taken over, else the observed range's under `scheme`, if any
    /// batch was seen.
    pub fn params(&self, scheme: QScheme) -> Result<Option<QuantParams>, TrainError> {
        if let Some(l) = self.active_learned() {
            return l.params(scheme).map(Some);
        }
        match self.range() {
            None => Ok(None),
            Some((lo, hi)) => choose(scheme, lo, hi, "activation").map(Some),
        }
    }

    /// Observe (when training and not frozen) and fake-quantize (once past the quant delay, or
    /// always in evaluation once a range exists). Returns the tensor and the params applied.
    pub fn apply<const D: usize>(
        &self,
        x: Tensor<D>,
        ctx: &Ctx,
    ) -> Result<(Tensor<D>, Option<QuantParams>), TrainError> {
        self.apply_requant(x, ctx, None, None)
    }

    /// [`EmaObserver::apply`] for the output of a conv or FC layer whose input has scale `s_in`
    /// and weights `wq`: quantized with the integer engine's requantization rounding
    /// ([`fake_quant_requant`]). Without both it is plain [`EmaObserver::apply`].
    pub fn apply_requant<const D: usize>(
        &self,
        x: Tensor<D>,
        ctx: &Ctx,
        s_in: Option<f32>,
        wq: Option<&WeightQuant>,
    ) -> Result<(Tensor<D>, Option<QuantParams>), TrainError> {
        let Some(q) = ctx.quant else {
            return Ok((x, None));
        };
        if let Some(l) = self.active_learned() {
            // The EMA has handed over: it no longer observes.
            if ctx.training && ctx.step < q.quant_delay {
                return Ok((x, None));
            }
            return l.apply(x, ctx, &q, s_in, wq);
        }
        let mut recorded = None;
        if ctx.training && !q.freeze_observers {
            let (lo, hi) = min_max(&x);
            if !(lo.is_finite() && hi.is_finite()) {
                return Err(TrainError::NonFinite(format!(
                    "activation range [{lo}, {hi}] at step {}",
                    ctx.step
                )));
            }
            // A recorded forward quantizes with the range its update would give; the update
            // itself is applied (merged across shards) after the step's forwards.
            recorded = match ctx.log {
                Some(log) => {
                    log.push(StateUpdate::Observer {
                        key: state_id(&self.state),
                        obs: self.clone(),
                        min: lo,
                        max: hi,
                    });
                    Some(self.next_range(lo, hi))
                }
                None => {
                    self.observe(lo, hi);
                    None
                }
            };
        }
        if ctx.training && ctx.step < q.quant_delay {
            return Ok((x, None));
        }
        let range = match recorded {
            Some(r) => Some(r),
            None => self.range(),
        };
        let Some((lo, hi)) = range else {
            return Ok((x, None));
        };
        let p = choose(q.act_scheme, lo, hi, "activation")?;
        let exact = ctx.exact_quant().is_some();
        let y = match (s_in, wq) {
            (Some(s_in), Some(wq)) => {
                let shifts = requant_shifts(s_in, wq, x.dims()[1], p.scale);
                fake_quant_requant(x, q.act_scheme, p, &shifts, exact)
            }
            _ if exact => fake_quant_exact(x, q.act_scheme, p),
            _ => fake_quant(x, q.act_scheme, p),
        };
        Ok((y, Some(p)))
    }
}

/// A learned activation range (`--ranges minmax|lsq`, docs/spec.md §2.7): trainable parameters that
/// the optimizer updates like weights once the quant delay is over.
///
/// It is built with the network (so checkpoints hold it) but idle until
/// [`EmaObserver::start_learned`] copies the EMA's range into it, which the trainer does between
/// steps once the delay has ended and the EMA has a range; from then on the observer quantizes
/// with it and the EMA stops. Every forward quantizes with exactly the `(S, Z)` that
/// [`LearnedRange::params`] gives and conversion stores, through the same rounding as the EMA
/// path (the engine's double rounding for conv/FC outputs); the gradient reaches the
/// parameters through terms of value exactly zero ([`minmax_grad_term`], [`lsq_grad_term`]).
#[derive(Module, Debug)]
pub struct LearnedRange {
    /// `minmax`: `[min, max]` (TensorFlow's gradient); `lsq`: `[step]` (LSQ's gradient).
    pub value: Param<Tensor<1>>,
    /// `[started, zero_point]`: `started` is 1 once initialized from the EMA; `zero_point` is
    /// the EMA's `Z` at that moment, fixed for `lsq` (unused by `minmax`).
    pub state: RunningState<Tensor<1>>,
    /// LSQ (true) or min/max (false).
    pub lsq: bool,
}

impl LearnedRange {
    /// The learned range of `mode`, or `None` for the EMA.
    pub fn new(mode: RangeMode, device: &Device) -> Option<Self> {
        let lsq = match mode {
            RangeMode::Ema => return None,
            RangeMode::MinMax => false,
            RangeMode::Lsq => true,
        };
        let n = if lsq { 1 } else { 2 };
        Some(LearnedRange {
            value: Param::from_tensor(Tensor::zeros([n], device)),
            state: RunningState::new(Tensor::zeros([2], device)),
            lsq,
        })
    }

    pub fn mode(&self) -> RangeMode {
        if self.lsq {
            RangeMode::Lsq
        } else {
            RangeMode::MinMax
        }
    }

    fn state_vec(&self) -> Vec<f32> {
        host_vec(self.state.value_sync())
    }

    /// Whether it has been initialized from the EMA (and so is in use).
    pub fn ready(&self) -> bool {
        self.state_vec().first().is_some_and(|&v| v > 0.0)
    }

    /// The current learned values (`[min, max]` or `[step]`).
    pub fn values(&self) -> Vec<f32> {
        host_vec(self.value.val())
    }

    /// The params a forward quantizes with: `minmax` nudges `[min, max]` as the EMA path
    /// nudges its range; `lsq` is `(step, Z)` as learned.
    pub fn params(&self, scheme: QScheme) -> Result<QuantParams, TrainError> {
        self.params_of(scheme, &self.values())
    }

    fn params_of(&self, scheme: QScheme, v: &[f32]) -> Result<QuantParams, TrainError> {
        if self.lsq {
            let z = self.state_vec().get(1).copied().unwrap_or(0.0);
            lsq_params(scheme, v[0], z as i32)
        } else {
            learned_minmax_params(scheme, v[0], v[1])
        }
    }

    /// Sets the values from the EMA's range `[lo, hi]` and its params `p`, and marks it started.
    fn start(&mut self, lo: f32, hi: f32, p: QuantParams) {
        let values = if self.lsq {
            vec![p.scale]
        } else {
            vec![lo, hi]
        };
        let n = values.len();
        self.value = self.value.clone().map(|t| {
            let d = t.device();
            Tensor::from_data(TensorData::new(values, [n]), &d).require_grad()
        });
        let d = self.state.value_sync().device();
        self.state.update(Tensor::from_data(
            TensorData::new(vec![1.0, p.zero_point as f32], [2]),
            &d,
        ));
        self.state.value_sync();
    }

    /// Fake-quantizes `x` with the learned params (engine rounding for a conv/FC output with
    /// input scale `s_in` and weights `wq`), attaching the range's gradient when training and
    /// not frozen.
    fn apply<const D: usize>(
        &self,
        x: Tensor<D>,
        ctx: &Ctx,
        q: &QuantCfg,
        s_in: Option<f32>,
        wq: Option<&WeightQuant>,
    ) -> Result<(Tensor<D>, Option<QuantParams>), TrainError> {
        let scheme = q.act_scheme;
        let v = self.values();
        let p = self.params_of(scheme, &v)?;
        let exact = ctx.exact_quant().is_some();
        let xd = x.clone().detach();
        let y = match (s_in, wq) {
            (Some(s_in), Some(wq)) => {
                let shifts = requant_shifts(s_in, wq, x.dims()[1], p.scale);
                fake_quant_requant(x, scheme, p, &shifts, exact)
            }
            _ if exact => fake_quant_exact(x, scheme, p),
            _ => fake_quant(x, scheme, p),
        };
        if exact || !ctx.training || q.freeze_observers {
            return Ok((y, Some(p)));
        }
        let term = if self.lsq {
            // LSQ scales the step gradient by 1/sqrt(N Q); N is taken per sample (the values
            // one image contributes), as the loss is a batch mean: the gradient then does not
            // depend on the batch size or the number of data-parallel shards.
            let per_sample = x_per_sample(&xd);
            let g = lsq_grad_scale(scheme, p.zero_point, per_sample);
            lsq_grad_term(&xd, &y.clone().detach(), scheme, p, self.value.val(), g)
        } else {
            let t = self.value.val();
            minmax_grad_term(&xd, scheme, p, t.clone().narrow(0, 0, 1), t.narrow(0, 1, 1))
        };
        Ok((y + term, Some(p)))
    }
}

/// Values per sample of a batch tensor (all but axis 0).
fn x_per_sample<const D: usize>(x: &Tensor<D>) -> usize {
    x.dims().iter().skip(1).product()
}
