//! Learned activation ranges (`--ranges minmax|lsq`, docs/spec.md §2.7) wired into the QAT
//! observers: the learned forward quantizes with exactly the params conversion stores (the engine's
//! double rounding on conv/FC outputs included) and passes TensorFlow's min/max gradient or LSQ's
//! step gradient to the range; freezing stops it; a few QAT steps move the ranges and keep them
//! valid; the ranges get no weight decay; the mode travels through checkpoints.

use std::sync::{Mutex, MutexGuard};

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};
use intq_quant::{QScheme, QuantParams};
use intq_train::checkpoint::{self, CkptMeta};
use intq_train::fake_quant::{fake_quant, fake_quant_requant, host_vec, requant_shifts};
use intq_train::fake_quant::{lsq_grad_scale, WeightQuant};
use intq_train::layers::{Ctx, LayerOpts, QuantCfg, RangeMode};
use intq_train::observer::EmaObserver;
use intq_train::sgd::{self, SgdStep, Velocity};
use intq_train::trainer::{train, ImageSet, Start, TrainConfig};
use intq_train::{train_device, Arch, Net};

/// Tests that seed burn's random generator (one per process) or train run one at a time, so
/// each sees the same draws whatever else runs beside it.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn ad() -> Device {
    Device::flex().autodiff()
}

fn opts(mode: RangeMode) -> LayerOpts {
    LayerOpts {
        ranges: mode,
        ..LayerOpts::default()
    }
}

fn ctx(q: QuantCfg, training: bool) -> Ctx<'static> {
    Ctx {
        training,
        step: 100,
        quant: Some(q),
        exact: false,
        log: None,
    }
}

fn learned_values(obs: &EmaObserver) -> Vec<f32> {
    obs.learned.as_ref().expect("a learned range").values()
}

/// The gradient each learned value should get, computed on the host from `x`, the forward
/// output `y`, the upstream gradient `up` and the params `p`: TensorFlow's sums over the
/// clamped elements, or LSQ's `g * sum(up * (code - x/S))` with the clamped code outside.
fn expected_grad(
    mode: RangeMode,
    s: QScheme,
    p: QuantParams,
    x: &[f32],
    y: &[f32],
    up: &[f32],
    per_sample: usize,
) -> Vec<f64> {
    let r = s.nudged_range(p);
    match mode {
        RangeMode::MinMax => {
            let sum = |f: &dyn Fn(f32) -> bool| -> f64 {
                x.iter()
                    .zip(up)
                    .filter(|(&v, _)| f(v))
                    .map(|(_, &u)| u as f64)
                    .sum()
            };
            vec![sum(&|v| v < r.min), sum(&|v| v > r.max)]
        }
        _ => {
            let g = lsq_grad_scale(s, p.zero_point, per_sample) as f64;
            let sum: f64 = x
                .iter()
                .zip(y)
                .zip(up)
                .map(|((&v, &q), &u)| {
                    let coef = if v < r.min {
                        (s.qmin() - p.zero_point) as f64
                    } else if v > r.max {
                        (s.qmax() - p.zero_point) as f64
                    } else {
                        (q / p.scale) as f64 - (v / p.scale) as f64
                    };
                    u as f64 * coef
                })
                .sum();
            vec![g * sum]
        }
    }
}

/// For both learned modes, both schemes, plain outputs (input, add) and conv/FC outputs (engine
/// rounding): the first learned forward equals the EMA's, every forward equals the reference
/// fake quantization with the params `params()` reports (what conversion stores) bit for bit,
/// and the range's gradient is the mode's.
#[test]
fn learned_forward_is_the_stored_params_and_the_gradient_is_the_modes() {
    let _s = serial();
    let d = ad();
    d.seed(5);
    for mode in [RangeMode::MinMax, RangeMode::Lsq] {
        for signed in [false, true] {
            for requant in [false, true] {
                let what = format!("{mode:?} signed={signed} requant={requant}");
                let mut q = if signed {
                    QuantCfg::int8(8, 8, false).unwrap()
                } else {
                    QuantCfg::uint8(8, 8).unwrap()
                };
                q.ranges = mode;
                let s = q.act_scheme;
                let mut obs = EmaObserver::with_opts(opts(mode), &d);
                assert!(!obs.start_learned(s).unwrap(), "{what}: no EMA yet");
                obs.observe(-0.5, 1.0);
                let ema = obs.params(s).unwrap().unwrap();
                assert!(obs.start_learned(s).unwrap(), "{what}");
                assert_eq!(
                    obs.params(s).unwrap(),
                    Some(ema),
                    "{what}: starts at the EMA"
                );
                // Move the range off the EMA's so the test sees the learned values at work.
                let bumped: Vec<f32> = learned_values(&obs).iter().map(|v| v * 1.25).collect();
                let l = obs.learned.as_mut().unwrap();
                l.value = l.value.clone().map(|t| {
                    Tensor::from_data(
                        burn::tensor::TensorData::new(bumped.clone(), [bumped.len()]),
                        &t.device(),
                    )
                    .require_grad()
                });
                let p = obs.params(s).unwrap().unwrap();
                assert_ne!(p, ema, "{what}");
                let x = Tensor::<4>::random([3, 4, 5, 5], Distribution::Uniform(-1.2, 1.8), &d);
                let up = Tensor::<4>::random([3, 4, 5, 5], Distribution::Uniform(-1.0, 1.0), &d);
                let wq = WeightQuant::PerTensor(QuantParams {
                    scale: 0.013,
                    zero_point: 0,
                });
                let s_in = 0.021f32;
                let (y, used) = if requant {
                    obs.apply_requant(x.clone(), &ctx(q, true), Some(s_in), Some(&wq))
                } else {
                    obs.apply(x.clone(), &ctx(q, true))
                }
                .unwrap();
                assert_eq!(used, Some(p), "{what}");
                let want = if requant {
                    let shifts = requant_shifts(s_in, &wq, 4, p.scale);
                    fake_quant_requant(x.clone(), s, p, &shifts, false)
                } else {
                    fake_quant(x.clone(), s, p)
                };
                let (yv, wv) = (host_vec(y.clone()), host_vec(want));
                assert!(
                    yv.iter().zip(&wv).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{what}: forward differs from the reference"
                );
                // The evaluation forward (what `intq eval` and conversion see) agrees too.
                let (ye, pe) = if requant {
                    obs.apply_requant(x.clone(), &ctx(q, false), Some(s_in), Some(&wq))
                } else {
                    obs.apply(x.clone(), &ctx(q, false))
                }
                .unwrap();
                assert_eq!(pe, Some(p), "{what}");
                assert_eq!(host_vec(ye), wv, "{what}: evaluation forward");

                let grads = GradientsParams::from_grads((y * up.clone()).sum().backward(), &obs);
                let id = obs.learned.as_ref().unwrap().value.id;
                let got = host_vec(grads.get::<1>(id).expect("the range gets a gradient"));
                let want = expected_grad(
                    mode,
                    s,
                    p,
                    &host_vec(x.clone()),
                    &yv,
                    &host_vec(up.clone()),
                    4 * 5 * 5,
                );
                assert_eq!(got.len(), want.len(), "{what}");
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (*g as f64 - w).abs() <= 1e-4 * w.abs().max(1.0),
                        "{what}: gradient {got:?}, expected {want:?}"
                    );
                }
                assert!(want.iter().any(|w| w.abs() > 1e-3), "{what}: {want:?}");

                // Frozen: same forward, no gradient to the range.
                let mut frozen = q;
                frozen.freeze_observers = true;
                let x = x.require_grad();
                let (y, _) = obs.apply(x.clone(), &ctx(frozen, true)).unwrap();
                let grads = GradientsParams::from_grads((y * up).sum().backward(), &obs);
                assert!(grads.get::<1>(id).is_none(), "{what}: frozen range moves");
            }
        }
    }
}

/// Gradient descent on the quantization error of a conv output (engine rounding) through the
/// observer moves each learned range the right way: values beyond a range started on `[0, 1]`
/// are clipped, both gradients widen it, and the error falls.
#[test]
fn learned_ranges_descend_on_the_quantization_error() {
    let _s = serial();
    let d = ad();
    d.seed(8);
    for (mode, lr) in [(RangeMode::MinMax, 0.1f64), (RangeMode::Lsq, 1e-3)] {
        let mut q = QuantCfg::uint8(8, 8).unwrap();
        q.ranges = mode;
        let mut obs = EmaObserver::with_opts(opts(mode), &d);
        obs.observe(0.0, 1.0);
        obs.start_learned(q.act_scheme).unwrap();
        let x = Tensor::<4>::random([8, 4, 4, 4], Distribution::Uniform(0.0, 3.0), &d);
        let wq = WeightQuant::PerTensor(QuantParams {
            scale: 0.01,
            zero_point: 0,
        });
        let mut losses = Vec::new();
        for _ in 0..20 {
            let (y, _) = obs
                .apply_requant(x.clone(), &ctx(q, true), Some(0.02), Some(&wq))
                .unwrap();
            let loss = (y - x.clone()).powi_scalar(2).mean();
            losses.push(host_vec(loss.clone())[0]);
            let grads = GradientsParams::from_grads(loss.backward(), &obs);
            let l = obs.learned.as_mut().unwrap();
            let g = grads.get::<1>(l.value.id).expect("gradient");
            l.value = l.value.clone().map(|v| {
                let v = v.inner() - g.mul_scalar(lr);
                Tensor::from_inner(v).require_grad()
            });
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(
            last < 0.5 * first,
            "{mode:?}: quantization error {first} -> {last} ({losses:?})"
        );
        let p = obs.params(q.act_scheme).unwrap().unwrap();
        assert!(p.scale > 1.0 / 255.0, "{mode:?}: the range widened: {p:?}");
    }
}

/// An LSQ step that is not positive is refused with a clear error, not quantized with.
#[test]
fn a_broken_learned_step_is_an_error() {
    let d = ad();
    let mut obs = EmaObserver::with_opts(opts(RangeMode::Lsq), &d);
    obs.observe(0.0, 1.0);
    obs.start_learned(QScheme::UINT8).unwrap();
    let l = obs.learned.as_mut().unwrap();
    l.value = l.value.clone().map(|t| t.mul_scalar(-1.0));
    let mut q = QuantCfg::uint8(8, 8).unwrap();
    q.ranges = RangeMode::Lsq;
    let x = Tensor::<2>::ones([2, 3], &d);
    let e = obs.apply(x, &ctx(q, true)).unwrap_err();
    assert!(e.to_string().contains("step size"), "{e}");
}

/// SGD with weight decay leaves a learned range alone where its gradient is zero (weights with a
/// zero gradient still decay).
#[test]
fn learned_ranges_get_no_weight_decay() {
    let _s = serial();
    let d = ad();
    d.seed(1);
    let mut net = Net::new(Arch::SmallCnn, opts(RangeMode::MinMax), &d);
    for obs in net.observers_mut() {
        obs.observe(-1.0, 2.0);
    }
    assert!(net.start_learned_ranges(QScheme::UINT8).unwrap());
    let before = learned_values(&net.input.obs);
    let w_before = host_vec(net.head.weight.val());
    let mut grads = GradientsParams::new();
    let id = net.input.obs.learned.as_ref().unwrap().value.id;
    grads.register(id, Tensor::<1>::zeros([2], &d.clone().inner()));
    grads.register(
        net.head.weight.id,
        Tensor::<2>::zeros(net.head.weight.dims(), &d.clone().inner()),
    );
    let step = SgdStep {
        lr: 0.1,
        momentum: 0.0,
        weight_decay: 0.5,
    };
    let net = sgd::step(net, grads, &mut Velocity::default(), step);
    assert_eq!(learned_values(&net.input.obs), before, "range decayed");
    let w_after = host_vec(net.head.weight.val());
    assert!(
        w_after
            .iter()
            .zip(&w_before)
            .all(|(a, b)| (a - b * 0.95).abs() <= 1e-6),
        "the weights decay as before"
    );
}

fn images(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    use intq_engine::examples::Rng as _;
    let mut rng = intq_engine::examples::seeded(seed);
    let mut x = vec![0u8; n * 784];
    let mut y = vec![0u8; n];
    for i in 0..n {
        let k = (rng.next_u64() % 10) as usize;
        y[i] = k as u8;
        for (j, px) in x[i * 784..(i + 1) * 784].iter_mut().enumerate() {
            let on = (if k < 5 { j / 28 } else { j % 28 }) % (2 + k % 5) == 0;
            *px = if on { 200 } else { 0 } + (rng.next_u64() % 50) as u8;
        }
    }
    (x, y)
}

fn set(d: &(Vec<u8>, Vec<u8>)) -> ImageSet<'_> {
    ImageSet::gray(&d.0, &d.1, 28, 28)
}

fn qat_config(q: QuantCfg, name: &str) -> TrainConfig {
    TrainConfig {
        arch: Arch::SmallCnn,
        epochs: 1,
        batch_size: 16,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        schedule: intq_train::trainer::LrSchedule::Cosine,
        label_smoothing: 0.0,
        seed: 2,
        quant: Some(q),
        freeze_bn_after: None,
        freeze_observers_after: None,
        out: std::env::temp_dir().join(format!("intq-ranges-{}-{name}.ckpt", std::process::id())),
        metrics: None,
        progress: false,
        max_steps: None,
        shards: 2,
        data: None,
        augment: Default::default(),
    }
}

/// Every observer of small-cnn: (EMA params, learned params, learned values).
fn learned_state(net: &mut Net, s: QScheme) -> Vec<(QuantParams, QuantParams, Vec<f32>)> {
    net.observers_mut()
        .into_iter()
        .map(|o| {
            let (lo, hi) = o.range().expect("observed");
            let l = o.learned.as_ref().expect("learned range");
            assert!(l.ready(), "started");
            (
                s.choose_params(lo, hi).unwrap(),
                l.params(s).unwrap(),
                l.values(),
            )
        })
        .collect()
}

/// A float network fine-tuned for a few QAT steps with each learned mode: after the quant delay
/// the ranges start from the EMA (which then stops, so its params are where they started),
/// the optimizer moves them, they stay valid (LSQ keeps the EMA's zero point), the checkpoint
/// records the mode and reloads the same tensors, and conversion takes the learned params.
#[test]
fn qat_steps_move_the_learned_ranges_and_checkpoints_keep_them() {
    let _s = serial();
    let data = images(96, 4);
    let d = train_device();
    for mode in [RangeMode::MinMax, RangeMode::Lsq] {
        d.seed(9);
        // Learned ranges are added to a network built without them (a float checkpoint).
        let net = Net::new(Arch::SmallCnn, LayerOpts::default(), &d);
        let mut q = QuantCfg::uint8(8, 8).unwrap();
        q.ranges = mode;
        q.quant_delay = 2;
        // 96 images in batches of 16: 6 steps, the last 4 with learned ranges.
        let cfg = qat_config(q, mode.name());
        let (mut net, _) = train(&cfg, Start::fresh(net), &set(&data), None, &d).unwrap();
        let s = q.act_scheme;
        let state = learned_state(&mut net, s);
        let mut moved = 0;
        for (k, (ema, learned, values)) in state.iter().enumerate() {
            assert!(values.iter().all(|v| v.is_finite()), "{mode:?} {k}");
            assert!(learned.scale > 0.0, "{mode:?} {k}: {learned:?}");
            if mode == RangeMode::Lsq {
                assert_eq!(learned.zero_point, ema.zero_point, "{mode:?} {k}: Z frozen");
            }
            moved += usize::from(learned != ema);
        }
        // The input's pixels never leave [0, 1], so its min/max see no gradient; the conv and
        // classifier outputs clip and round.
        assert!(
            moved >= 3,
            "{mode:?}: {moved} of {} ranges moved",
            state.len()
        );

        // Checkpoint: the mode is recorded, loading rebuilds the learned ranges.
        let loaded = checkpoint::load(&cfg.out, LayerOpts::default(), &d).unwrap();
        assert_eq!(loaded.meta.quant, Some(q));
        let mut lnet = loaded.net;
        assert_eq!(learned_state(&mut lnet, s), state, "{mode:?}: reloaded");

        // Conversion stores the learned params.
        let g = intq_train::export::export(&net, Arch::SmallCnn, &q, false).unwrap();
        let conv0 = g
            .tensor(g.tensor_by_name("body0").unwrap())
            .params()
            .unwrap();
        assert_eq!(conv0, state[1].1, "{mode:?}: converted output params");
    }
}

/// A checkpoint written with one range mode cannot be resumed as another, and an EMA network
/// refuses to be turned into a learned one of another mode.
#[test]
fn range_modes_do_not_mix() {
    // Building a network draws from the device's shared generator, which the seeded tests
    // reset: run apart from them, or their networks start elsewhere.
    let _s = serial();
    let d = ad();
    let mut net = Net::new(Arch::SmallCnn, opts(RangeMode::Lsq), &d);
    let e = net.set_range_mode(RangeMode::MinMax, &d).unwrap_err();
    assert!(e.to_string().contains("lsq, not minmax"), "{e}");
    net.set_range_mode(RangeMode::Lsq, &d).unwrap();
    // The metadata of a learned-range checkpoint names the mode; a file that claims learned
    // ranges without their tensors is refused naming the first missing one.
    let mut q = QuantCfg::uint8(8, 8).unwrap();
    q.ranges = RangeMode::Lsq;
    let meta = CkptMeta {
        arch: Arch::SmallCnn,
        epoch: 0,
        epoch_batches: 0,
        step: 0,
        epochs: 1,
        seed: 0,
        quant: Some(q),
        test_accuracy: None,
        shards: None,
        data: None,
    };
    let p = std::env::temp_dir().join(format!("intq-ranges-{}-mix.ckpt", std::process::id()));
    let ema_net = Net::new(Arch::SmallCnn, LayerOpts::default(), &d);
    checkpoint::save(&p, &ema_net, &Velocity::default(), &meta).unwrap();
    let e = checkpoint::load(&p, LayerOpts::default(), &d)
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("input.obs.learned.value is missing"),
        "{e}"
    );
    checkpoint::save(&p, &net, &Velocity::default(), &meta).unwrap();
    let l = checkpoint::load(&p, LayerOpts::default(), &d).unwrap();
    assert_eq!(l.meta.quant.unwrap().ranges, RangeMode::Lsq);
    let _ = std::fs::remove_file(&p);
    let _ = Module::num_params(&l.net);
}
