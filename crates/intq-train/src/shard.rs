//! Deterministic data parallelism inside one training step: the batch is cut into a fixed number
//! of contiguous shards, each shard runs forward and backward on its own thread, and the main
//! thread combines the gradients and the recorded state updates in a fixed order.
//!
//! # Why
//!
//! burn 0.22.1's `flex` backend parallelizes GEMM and convolution with rayon, but its
//! elementwise, mask and copy kernels run on the calling thread, so one training step of
//! `small-cnn` keeps about one core of two busy. Running two halves
//! of the batch side by side fills the second core with the serial ops.
//!
//! # What is deterministic, and why
//!
//! The shard count is a setting ([`crate::TrainConfig::shards`]), not the number of cores, so a
//! seed gives the same run on any machine. Results are combined in shard order, never in
//! completion order. Layers never write shared state from a shard: a training forward with a
//! [`StateLog`] in its [`Ctx`](crate::layers::Ctx) *records* each BN layer's batch mean and
//! variance (with their element counts) and each observer's batch min/max, and
//! [`apply_updates`] merges the shards' records and applies them once, on the calling thread.
//! (burn's `RunningState::update` keeps one pending value per thread and `value_sync` averages
//! them, which across threads would be both a race and the wrong statistic.)
//!
//! # What a shard sees (the difference to one full-batch step)
//!
//! - Loss and gradients: the loss is a mean, so the full-batch gradient is
//!   `sum_k (n_k / N) g_k`, which is what [`combine_grads`] forms. This is exact wherever a
//!   sample's forward does not depend on the other samples of the batch.
//! - BatchNorm in training mode normalizes each shard with that shard's own batch mean and
//!   variance (PyTorch DDP without SyncBN). The moving statistics, however, are updated with the
//!   exact full-batch mean and biased variance, merged from the shards' means, variances and
//!   counts (law of total variance). With BN frozen (or in float evaluation) nothing differs.
//! - Observers: the EMA is updated once per step with the min of the shards' minima and the max
//!   of their maxima, i.e. the full-batch range. But the fake quantization *inside* the step
//!   uses the range the layer sees at that moment, `decay * ema + (1 - decay) * shard_range`
//!   (the shard's own range on the very first batch), where one full batch would use its own
//!   full range in that formula.
//! - With one shard everything is exactly the single-batch step.

use std::ops::Range;
use std::sync::Mutex;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId, RunningState};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

use crate::fake_quant::host_vec;
use crate::observer::EmaObserver;
use crate::TrainError;

/// One state update a training forward asked for.
#[derive(Debug, Clone)]
pub enum StateUpdate {
    /// A batch range for an activation observer.
    Observer {
        key: ParamId,
        obs: EmaObserver,
        min: f32,
        max: f32,
    },
    /// Batch statistics for a BN layer's moving averages.
    BatchNorm(Box<BnUpdate>),
}

/// A BN layer's batch mean and biased variance over `count` elements per channel, with handles
/// to the moving statistics they update (clones of a `RunningState` share its storage).
#[derive(Debug, Clone)]
pub struct BnUpdate {
    pub key: ParamId,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    pub momentum: f64,
    pub mean: Tensor<1>,
    pub var: Tensor<1>,
    pub count: usize,
}

impl StateUpdate {
    fn key(&self) -> ParamId {
        match self {
            StateUpdate::Observer { key, .. } => *key,
            StateUpdate::BatchNorm(b) => b.key,
        }
    }
}

/// The state updates of one forward, in the order the layers asked for them.
#[derive(Debug, Default)]
pub struct StateLog {
    updates: Mutex<Vec<StateUpdate>>,
}

impl StateLog {
    pub fn push(&self, u: StateUpdate) {
        self.updates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(u);
    }

    pub fn into_updates(self) -> Vec<StateUpdate> {
        self.updates.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// The id burn gives a running state (what its checkpoint entry and visitors see): the key that
/// lines up the records of different shards.
pub fn state_id<const D: usize>(s: &RunningState<Tensor<D>>) -> ParamId {
    struct Id(Option<ParamId>);
    impl ModuleVisitor for Id {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 = Some(param.id);
        }
    }
    let mut v = Id(None);
    s.visit(&mut v);
    v.0.expect("a running state visits one tensor")
}

/// Moves BN moving statistics towards a batch's: `r = (1 - m) r + m batch` (biased variance, as
/// burn's own BatchNorm keeps them).
pub fn bn_update(
    running_mean: &RunningState<Tensor<1>>,
    running_var: &RunningState<Tensor<1>>,
    m: f64,
    mean: Tensor<1>,
    var: Tensor<1>,
) {
    let device = mean.device();
    let rm = running_mean.value_sync().to_device(&device);
    let rv = running_var.value_sync().to_device(&device);
    running_mean.update((rm.mul_scalar(1.0 - m) + mean.detach().mul_scalar(m)).detach());
    running_var.update((rv.mul_scalar(1.0 - m) + var.detach().mul_scalar(m)).detach());
    // `update` parks the value per thread until the next `value_sync`; module visitors (the
    // checkpoint writer) read only the synced value, so flush now.
    running_mean.value_sync();
    running_var.value_sync();
}

/// Full-batch mean and biased variance per channel from per-shard `(mean, var, count)`:
/// `mu = sum c_k mu_k / C`, `var = sum c_k (var_k + (mu_k - mu)^2) / C`, in f64.
pub fn merge_moments(parts: &[(Vec<f32>, Vec<f32>, usize)]) -> (Vec<f32>, Vec<f32>) {
    let channels = parts.first().map_or(0, |p| p.0.len());
    let total: f64 = parts.iter().map(|p| p.2 as f64).sum();
    let mut mean = vec![0f32; channels];
    let mut var = vec![0f32; channels];
    for c in 0..channels {
        let mu: f64 = parts
            .iter()
            .map(|(m, _, n)| *n as f64 * m[c] as f64)
            .sum::<f64>()
            / total;
        let v: f64 = parts
            .iter()
            .map(|(m, v, n)| {
                let d = m[c] as f64 - mu;
                *n as f64 * (v[c] as f64 + d * d)
            })
            .sum::<f64>()
            / total;
        mean[c] = mu as f32;
        var[c] = v as f32;
    }
    (mean, var)
}

fn mismatch(what: &str) -> TrainError {
    TrainError::Config(format!(
        "data-parallel shards recorded different state updates ({what}); the network's forward \
         must not depend on the batch size"
    ))
}

/// Applies the updates recorded by the shards of one step, merged in shard order: observers get
/// the min of the minima and the max of the maxima, BN layers the full-batch moments. One log is
/// applied as recorded (exactly what an unrecorded forward would have done).
pub fn apply_updates(mut logs: Vec<Vec<StateUpdate>>) -> Result<(), TrainError> {
    if logs.len() == 1 {
        for u in logs.pop().unwrap_or_default() {
            match u {
                StateUpdate::Observer { obs, min, max, .. } => obs.observe(min, max),
                StateUpdate::BatchNorm(b) => {
                    bn_update(&b.running_mean, &b.running_var, b.momentum, b.mean, b.var)
                }
            }
        }
        return Ok(());
    }
    let n = logs.first().map_or(0, |l| l.len());
    if logs.iter().any(|l| l.len() != n) {
        return Err(mismatch("counts"));
    }
    let mut iters: Vec<_> = logs.into_iter().map(|l| l.into_iter()).collect();
    for _ in 0..n {
        let group: Vec<StateUpdate> = iters.iter_mut().filter_map(|i| i.next()).collect();
        let key = group[0].key();
        if group.iter().any(|u| u.key() != key) {
            return Err(mismatch("layer order"));
        }
        match &group[0] {
            StateUpdate::Observer { obs, .. } => {
                let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
                for u in &group {
                    let StateUpdate::Observer { min, max, .. } = u else {
                        return Err(mismatch("update kind"));
                    };
                    lo = lo.min(*min);
                    hi = hi.max(*max);
                }
                obs.observe(lo, hi);
            }
            StateUpdate::BatchNorm(first) => {
                let mut parts = Vec::with_capacity(group.len());
                for u in &group {
                    let StateUpdate::BatchNorm(b) = u else {
                        return Err(mismatch("update kind"));
                    };
                    parts.push((host_vec(b.mean.clone()), host_vec(b.var.clone()), b.count));
                }
                let (mean, var) = merge_moments(&parts);
                let device = first.mean.device();
                let c = mean.len();
                let t = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [c]), &device);
                bn_update(
                    &first.running_mean,
                    &first.running_var,
                    first.momentum,
                    t(mean),
                    t(var),
                );
            }
        }
    }
    Ok(())
}

/// `shards` contiguous pieces of `0..n` (fewer when `n < shards`), the first `n % shards` one
/// element longer: a function of `n` and `shards` only.
pub fn pieces(n: usize, shards: usize) -> Vec<Range<usize>> {
    let s = shards.clamp(1, n.max(1));
    let (base, rem) = (n / s, n % s);
    let mut start = 0;
    (0..s)
        .map(|k| {
            let len = base + usize::from(k < rem);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// A copy of a module whose trainable tensors are fresh autodiff leaves over the same data
/// (same `ParamId`s, no copy of the values). Shards need this: burn's autodiff merges every graph
/// that touches a shared leaf into one mutex-protected graph, which would serialize the shards'
/// backward passes.
pub fn detached_copy<M: Module>(m: &M) -> M {
    struct Releaf;
    impl ModuleMapper for Releaf {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, tensor, mapper) = param.consume();
            if !tensor.is_require_grad() {
                return Param::from_mapped_value(id, tensor, mapper);
            }
            let t = Tensor::from_inner(tensor.inner()).require_grad();
            Param::from_mapped_value(id, t, mapper)
        }
    }
    m.clone().map(&mut Releaf)
}

/// `sum_k weights[k] * grads[k]` per parameter of `module`, summed in shard order. One shard's
/// gradients are returned unchanged.
pub fn combine_grads<M: Module>(
    module: &M,
    mut grads: Vec<GradientsParams>,
    weights: &[f64],
) -> GradientsParams {
    if grads.len() == 1 {
        return grads.pop().unwrap_or_default();
    }
    struct Combine<'a> {
        grads: &'a mut [GradientsParams],
        weights: &'a [f64],
        out: GradientsParams,
    }
    impl ModuleVisitor for Combine<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let mut acc: Option<Tensor<D>> = None;
            for (g, &w) in self.grads.iter_mut().zip(self.weights) {
                if let Some(t) = g.remove::<D>(param.id) {
                    let t = t.mul_scalar(w);
                    acc = Some(match acc {
                        None => t,
                        Some(a) => a + t,
                    });
                }
            }
            if let Some(a) = acc {
                self.out.register(param.id, a);
            }
        }
    }
    let mut c = Combine {
        grads: &mut grads,
        weights,
        out: GradientsParams::new(),
    };
    module.visit(&mut c);
    c.out
}
