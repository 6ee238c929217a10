//! Activation range observers (SPEC §2): an exponential moving average of each batch's min and
//! max, kept as module state so it is saved with checkpoints, with quant delay and freezing
//! decided by the caller's [`Ctx`](crate::layers::Ctx).

use burn::module::{Module, RunningState};
use burn::tensor::{Device, Tensor, TensorData};
use intq_quant::{QScheme, QuantParams};

use crate::fake_quant::{
    choose, fake_quant, fake_quant_exact, fake_quant_requant, host_vec, min_max, requant_shifts,
    WeightQuant,
};
use crate::layers::Ctx;
use crate::shard::{state_id, StateUpdate};
use crate::TrainError;

/// EMA of batch `[min, max]`. State tensor: `[min, max, seen]` where `seen` is 0 until the first
/// batch, which sets the range directly (an EMA from an arbitrary start would take hundreds of
/// steps to forget it).
#[derive(Module, Debug)]
pub struct EmaObserver {
    pub state: RunningState<Tensor<1>>,
    pub decay: f64,
}

impl EmaObserver {
    pub fn new(decay: f64, device: &Device) -> Self {
        EmaObserver {
            state: RunningState::new(Tensor::zeros([3], device)),
            decay,
        }
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

    /// The `(S, Z)` of the observed range under `scheme`, if any batch was seen.
    pub fn params(&self, scheme: QScheme) -> Result<Option<QuantParams>, TrainError> {
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
