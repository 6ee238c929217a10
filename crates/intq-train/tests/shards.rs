//! Data-parallel shards inside one step (`TrainConfig::shards`): one shard is exactly the plain
//! single-batch step, shard gradients combine into the full-batch gradient where the math says
//! they must, and the merged BN moving statistics and observer ranges equal the full batch's.

use std::sync::{Mutex, MutexGuard};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use intq_train::fake_quant::host_vec;
use intq_train::layers::{running_stats, ConvBn, LayerOpts, QuantCfg};
use intq_train::sgd::{self, PathVisitor, SgdStep, Velocity};
use intq_train::shard::{self, merge_moments, pieces, StateUpdate};
use intq_train::trainer::{
    cosine_lr, cross_entropy, sharded_grads, shuffled, train, ImageSet, Start, TrainConfig,
};
use intq_train::zoo::Node;
use intq_train::{train_device, Arch, Ctx, Net};
use proptest::prelude::*;

/// Tests of this binary train one at a time (see tests/train.rs: concurrent trainings in one
/// process share burn's seeded device and rayon pool).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `n` images; image `i` is noise whose level depends on `bright(i)`, label `i % 10`.
fn images(n: usize, seed: u64, bright: impl Fn(usize) -> bool) -> (Vec<u8>, Vec<u8>) {
    use intq_engine::examples::Rng as _;
    let mut rng = intq_engine::examples::seeded(seed);
    let mut px = vec![0u8; n * 784];
    for i in 0..n {
        let base = if bright(i) { 150 } else { 0 };
        for p in &mut px[i * 784..(i + 1) * 784] {
            *p = base + (rng.next_u64() % 100) as u8;
        }
    }
    (px, (0..n).map(|i| (i % 10) as u8).collect())
}

fn set(d: &(Vec<u8>, Vec<u8>)) -> ImageSet<'_> {
    ImageSet::gray(&d.0, &d.1, 28, 28)
}

fn fresh(seed: u64) -> Net {
    let device = train_device();
    device.seed(seed);
    Net::new(Arch::SmallCnn, LayerOpts::default(), &device)
}

fn tensors(net: &Net) -> Vec<(String, Vec<u32>)> {
    let mut v = Vec::new();
    net.visit(&mut PathVisitor::new(|p: &str, _, _, data: Vec<f32>| {
        v.push((p.to_string(), data.iter().map(|x| x.to_bits()).collect()))
    }));
    v
}

fn assert_same(a: &[(String, Vec<u32>)], b: &[(String, Vec<u32>)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: tensor count");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0, "{what}");
        let diff = x.1.iter().zip(&y.1).filter(|(p, q)| p != q).count();
        assert_eq!(
            diff,
            0,
            "{what}: {} differs in {diff} of {}",
            x.0,
            x.1.len()
        );
    }
}

/// Every parameter gradient of `net` in `g`, by path.
fn grads_of(net: &Net, g: &GradientsParams) -> Vec<(String, Vec<f32>)> {
    struct V<'a> {
        g: &'a GradientsParams,
        path: Vec<String>,
        out: Vec<(String, Vec<f32>)>,
    }
    impl ModuleVisitor for V<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(t) = self.g.get::<D>(p.id) {
                self.out.push((self.path.join("."), host_vec(t)));
            }
        }
    }
    let mut v = V {
        g,
        path: Vec::new(),
        out: Vec::new(),
    };
    net.visit(&mut v);
    v.out
}

/// small-cnn's conv layers.
fn convs(net: &Net) -> Vec<&ConvBn> {
    net.body
        .iter()
        .filter_map(|n| match n {
            Node::Conv(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// small-cnn's observer ranges: input, the three convs, the classifier.
fn ranges(net: &Net) -> Vec<Option<(f32, f32)>> {
    let mut v = vec![net.input.obs.range()];
    v.extend(convs(net).iter().map(|c| c.out_obs.range()));
    v.push(net.head.out_obs.range());
    v
}

fn config(shards: usize, quant: Option<QuantCfg>, steps: u64) -> TrainConfig {
    TrainConfig {
        arch: Arch::SmallCnn,
        epochs: 1,
        batch_size: 16,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        schedule: intq_train::trainer::LrSchedule::Cosine,
        label_smoothing: 0.0,
        seed: 7,
        quant,
        freeze_bn_after: None,
        freeze_observers_after: None,
        out: std::env::temp_dir().join(format!("intq-shards-{}.ckpt", std::process::id())),
        metrics: None,
        progress: false,
        max_steps: Some(steps),
        shards,
        data: None,
        augment: Default::default(),
    }
}

/// The trainer with one shard (which records state updates and applies them after the
/// forward) against a plain single-batch training loop, written out here:
/// forward with updates applied in place, mean cross-entropy, backward, SGD. Float and QAT
/// (quant delay 1, so both the observe-only and the quantized forward run), bit for bit.
#[test]
fn one_shard_is_the_plain_step() {
    let _s = serial();
    let data = images(48, 1, |i| i % 3 == 0);
    let device = train_device();
    let mut q = QuantCfg::uint8(8, 8).unwrap();
    q.quant_delay = 1;
    for quant in [None, Some(q)] {
        let cfg = config(1, quant, 3);
        let (trained, summary) =
            train(&cfg, Start::fresh(fresh(4)), &set(&data), None, &device).unwrap();
        assert_eq!(summary.steps, 3);

        let mut net = fresh(4);
        let mut vel = Velocity::default();
        let order = shuffled(48, cfg.seed, 0);
        let total = 48u64.div_ceil(16);
        for (step, idx) in order.chunks(16).take(3).enumerate() {
            let step = step as u64;
            let (x, y) = set(&data).batch(idx, &device);
            let ctx = Ctx {
                training: true,
                step,
                quant,
                exact: false,
                log: None,
            };
            let loss = cross_entropy(net.forward(x, &ctx).unwrap(), y);
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = sgd::step(
                net,
                grads,
                &mut vel,
                SgdStep {
                    lr: cosine_lr(cfg.lr, step, total),
                    momentum: cfg.momentum,
                    weight_decay: cfg.weight_decay,
                },
            );
        }
        assert_same(
            &tensors(&trained),
            &tensors(&net),
            &format!("one shard vs the plain loop, quant {}", quant.is_some()),
        );
    }
}

/// Two shards twice from the same seed: the same parameters, BN statistics and observer
/// states bit for bit (float and QAT), and different from one shard (shards change the run).
#[test]
fn two_shards_repeat_bit_for_bit() {
    let _s = serial();
    let data = images(48, 2, |i| i % 2 == 0);
    let device = train_device();
    for quant in [None, Some(QuantCfg::int8(8, 8, true).unwrap())] {
        let cfg = config(2, quant, 3);
        let run = || {
            let (n, _) = train(&cfg, Start::fresh(fresh(9)), &set(&data), None, &device).unwrap();
            tensors(&n)
        };
        let a = run();
        assert_same(&a, &run(), "two shards, same seed");
        let one = config(1, quant, 3);
        let (n1, _) = train(&one, Start::fresh(fresh(9)), &set(&data), None, &device).unwrap();
        assert_ne!(a, tensors(&n1), "two shards differ from one (per-shard BN)");
    }
}

/// With per-sample forwards (float, BN on its moving statistics) the loss gradient is a mean
/// over samples, so the shards' gradients weighted by piece size (4/7 and 3/7) equal the
/// full-batch gradient of every parameter; an unweighted mean of the two would not.
#[test]
fn shard_gradients_combine_to_the_full_batch_gradient() {
    let _s = serial();
    let data = images(7, 3, |i| i < 4);
    let device = train_device();
    let net = fresh(5);
    let ctx = Ctx::float(false);
    let idx: Vec<usize> = (0..7).collect();
    let run = |idx: &[usize], shards| {
        let g = sharded_grads(&net, &set(&data), idx, shards, &ctx, &device).unwrap();
        grads_of(&net, &g.grads)
    };
    let full = run(&idx, 1);
    let sharded = run(&idx, 2);
    let g0 = run(&idx[..4], 1);
    let g1 = run(&idx[4..], 1);
    assert_eq!(full.len(), sharded.len());
    assert!(full.len() >= 10, "every parameter has a gradient");
    let mut worst_unweighted = 0f32;
    for (((f, s), a), b) in full.iter().zip(&sharded).zip(&g0).zip(&g1) {
        assert_eq!(f.0, s.0);
        let scale = f.1.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        for i in 0..f.1.len() {
            let err = (f.1[i] - s.1[i]).abs();
            assert!(
                err <= 1e-5 * scale,
                "{} [{i}]: full {} sharded {} (scale {scale})",
                f.0,
                f.1[i],
                s.1[i]
            );
            let unweighted = 0.5 * (a.1[i] + b.1[i]);
            worst_unweighted = worst_unweighted.max((f.1[i] - unweighted).abs() / scale);
        }
    }
    assert!(
        worst_unweighted > 1e-3,
        "the test data must tell weighted from unweighted ({worst_unweighted})"
    );
}

/// After one two-shard forward whose halves differ strongly (dark images, then bright ones):
/// the first BN layer's moving statistics equal the full batch's (its input is the raw image,
/// so its batch statistics are the full batch's; the shards' own variances average to
/// something far off), and with per-sample forwards (BN frozen, ranges observed but not yet
/// applied) every observer's range equals the full batch's exactly.
#[test]
fn merged_state_equals_the_full_batch() {
    let _s = serial();
    let data = images(8, 4, |i| i >= 4);
    let device = train_device();
    let idx: Vec<usize> = (0..8).collect();

    // BN moving statistics, float training.
    let ctx = Ctx::float(true);
    let full = fresh(6);
    let g = sharded_grads(&full, &set(&data), &idx, 1, &ctx, &device).unwrap();
    let StateUpdate::BatchNorm(b) = &g.updates[0][0] else {
        panic!("the first update is conv1's BN")
    };
    let full_var = host_vec(b.var.clone());
    shard::apply_updates(g.updates).unwrap();
    let split = fresh(6);
    let g = sharded_grads(&split, &set(&data), &idx, 2, &ctx, &device).unwrap();
    assert_eq!(g.updates.len(), 2);
    let StateUpdate::BatchNorm(b0) = &g.updates[0][0] else {
        panic!("the first update is conv1's BN")
    };
    let StateUpdate::BatchNorm(b1) = &g.updates[1][0] else {
        panic!("the first update is conv1's BN")
    };
    let naive_var: Vec<f32> = host_vec(b0.var.clone())
        .iter()
        .zip(host_vec(b1.var.clone()))
        .map(|(a, b)| 0.5 * (a + b))
        .collect();
    shard::apply_updates(g.updates).unwrap();
    let (fm, fv) = running_stats(convs(&full)[0]);
    let (sm, sv) = running_stats(convs(&split)[0]);
    let mut naive_off = 0f32;
    for c in 0..fm.len() {
        assert!(
            (fm[c] - sm[c]).abs() <= 1e-5 * fm[c].abs().max(1e-3),
            "mean[{c}]"
        );
        assert!((fv[c] - sv[c]).abs() <= 1e-5 * fv[c].abs(), "var[{c}]");
        naive_off = naive_off.max((full_var[c] - naive_var[c]).abs() / full_var[c]);
    }
    assert!(
        naive_off > 0.1,
        "averaging the shards' variances would be off by {naive_off}: the test must see it"
    );

    // Observers, per-sample forward.
    let mut q = QuantCfg::uint8(8, 8).unwrap();
    q.freeze_bn = true;
    q.quant_delay = 10;
    let ctx = Ctx {
        training: true,
        step: 0,
        quant: Some(q),
        exact: false,
        log: None,
    };
    let full = fresh(6);
    let g = sharded_grads(&full, &set(&data), &idx, 1, &ctx, &device).unwrap();
    shard::apply_updates(g.updates).unwrap();
    let split = fresh(6);
    let g = sharded_grads(&split, &set(&data), &idx, 2, &ctx, &device).unwrap();
    let StateUpdate::Observer { min, max, .. } = g.updates[0][0] else {
        panic!("the first update is the input quantizer's")
    };
    assert_eq!(
        (min, max),
        (0.0, 99.0 / 255.0),
        "shard 0 holds the dark images"
    );
    shard::apply_updates(g.updates).unwrap();
    let (a, b) = (ranges(&full), ranges(&split));
    assert_eq!(a.len(), 5, "input, three convs, classifier");
    assert!(a.iter().all(Option::is_some));
    assert_eq!(a, b, "merged observer ranges equal the full batch's");
    assert_eq!(a[0], Some((0.0, 249.0 / 255.0)));
}

proptest! {
    /// The merged moments of any split of a sample equal its moments computed directly.
    #[test]
    fn merged_moments_are_the_full_moments(
        xs in prop::collection::vec(-1e3f32..1e3, 2..40),
        cuts in 1usize..6,
    ) {
        let parts: Vec<(Vec<f32>, Vec<f32>, usize)> = pieces(xs.len(), cuts)
            .into_iter()
            .map(|r| {
                let s = &xs[r];
                let n = s.len() as f64;
                let m = s.iter().map(|&v| v as f64).sum::<f64>() / n;
                let v = s.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
                (vec![m as f32], vec![v as f32], s.len())
            })
            .collect();
        let n = xs.len() as f64;
        let m = xs.iter().map(|&v| v as f64).sum::<f64>() / n;
        let v = xs.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
        let (mm, mv) = merge_moments(&parts);
        prop_assert!((mm[0] as f64 - m).abs() <= 1e-4 * (1.0 + m.abs()));
        prop_assert!((mv[0] as f64 - v).abs() <= 1e-4 * (1.0 + v));
    }

    /// Pieces cover `0..n` in order, at most `shards` of them, sizes differing by at most one.
    #[test]
    fn pieces_cover_the_batch(n in 0usize..300, shards in 1usize..9) {
        let p = pieces(n, shards);
        prop_assert!(!p.is_empty() && p.len() <= shards);
        prop_assert_eq!(p[0].start, 0);
        prop_assert_eq!(p[p.len() - 1].end, n);
        for w in p.windows(2) {
            prop_assert_eq!(w[0].end, w[1].start);
        }
        let (lo, hi) = p.iter().fold((usize::MAX, 0), |(a, b), r| (a.min(r.len()), b.max(r.len())));
        prop_assert!(hi - lo <= 1);
        if n >= shards {
            prop_assert_eq!(p.len(), shards);
        }
    }
}

/// Zero shards is a configuration error naming the setting, before any work.
#[test]
fn zero_shards_is_refused() {
    let _s = serial();
    let data = images(4, 5, |_| false);
    let err = train(
        &config(0, None, 1),
        Start::fresh(fresh(1)),
        &set(&data),
        None,
        &train_device(),
    )
    .expect_err("shards = 0 must be refused");
    assert!(matches!(err, intq_train::TrainError::Config(_)), "{err}");
    assert!(err.to_string().contains("shards"), "{err}");
}
