//! The learning-rate schedules (cosine, one-cycle) and the label-smoothed loss: their values
//! against closed forms, the loss's gradient against `softmax - target`, and the trainer's
//! refusal of out-of-range settings.

use burn::tensor::{Device, Int, Tensor, TensorData};
use intq_train::fake_quant::{host_vec, scalar};
use intq_train::layers::LayerOpts;
use intq_train::trainer::{
    cosine_lr, cross_entropy, one_cycle_lr, smoothed_cross_entropy, train, ImageSet, LrSchedule,
    Start, TrainConfig, ONE_CYCLE_DIV,
};
use intq_train::{train_device, Arch, Net, TrainError};

#[test]
fn one_cycle_warms_up_linearly_then_anneals_to_zero() {
    let (base, total) = (0.2, 1000u64);
    let lr = |s| one_cycle_lr(base, 0.25, s, total);
    assert!((lr(0) - base / ONE_CYCLE_DIV).abs() < 1e-12, "start");
    // Linear: the middle of the warm-up is halfway between the start and the peak.
    let mid = base / ONE_CYCLE_DIV + (base - base / ONE_CYCLE_DIV) * 0.5;
    assert!((lr(125) - mid).abs() < 1e-12, "{} vs {mid}", lr(125));
    assert!((lr(250) - base).abs() < 1e-12, "peak at the warm-up's end");
    for s in 1..=250 {
        assert!(lr(s) > lr(s - 1), "rising at step {s}");
    }
    for s in 251..=total {
        assert!(lr(s) < lr(s - 1), "falling at step {s}");
    }
    // The anneal is a cosine over the remaining 750 steps: half the peak in its middle.
    assert!((lr(250 + 375) - base / 2.0).abs() < 1e-12);
    assert_eq!(lr(total), 0.0);
    assert_eq!(lr(total + 10), 0.0, "past the end stays at 0");
    assert!(lr(total - 1) < base * 1e-4, "the last step is near 0");
}

#[test]
fn one_cycle_without_warm_up_is_the_cosine() {
    for s in [0u64, 1, 17, 50, 99, 100] {
        assert_eq!(one_cycle_lr(0.1, 0.0, s, 100), cosine_lr(0.1, s, 100));
        assert_eq!(LrSchedule::Cosine.lr(0.1, s, 100), cosine_lr(0.1, s, 100));
    }
    assert_eq!(
        LrSchedule::OneCycle { warmup: 0.3 }.lr(0.1, 10, 100),
        one_cycle_lr(0.1, 0.3, 10, 100)
    );
}

#[test]
fn schedule_parameters_are_checked() {
    assert!(LrSchedule::OneCycle { warmup: 0.15 }.validate().is_ok());
    assert!(LrSchedule::OneCycle { warmup: 0.0 }.validate().is_ok());
    for bad in [1.0, 1.5, -0.1, f64::NAN] {
        assert!(
            LrSchedule::OneCycle { warmup: bad }.validate().is_err(),
            "warm-up {bad}"
        );
    }
}

fn plain() -> Device {
    Device::flex()
}

fn logits(v: &[f32], n: usize, k: usize, d: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v.to_vec(), [n, k]), d)
}

fn labels(v: &[i64], d: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), d)
}

/// `(1 - eps) * -log p[y] + eps * mean_k -log p[k]`, averaged over rows, in f64.
fn reference(v: &[f32], y: &[i64], k: usize, eps: f64) -> f64 {
    let mut total = 0.0;
    for (row, &label) in v.chunks(k).zip(y) {
        let m = row.iter().fold(f64::MIN, |a, &b| a.max(b as f64));
        let lse = m + row.iter().map(|&z| (z as f64 - m).exp()).sum::<f64>().ln();
        let lp: Vec<f64> = row.iter().map(|&z| z as f64 - lse).collect();
        let uniform = -lp.iter().sum::<f64>() / k as f64;
        total += (1.0 - eps) * -lp[label as usize] + eps * uniform;
    }
    total / y.len() as f64
}

const V: [f32; 12] = [
    2.0, -1.0, 0.5, 0.0, //
    -0.3, 0.8, 3.1, -2.0, //
    1.0, 1.0, 1.0, 1.0,
];
const Y: [i64; 3] = [0, 2, 3];

#[test]
fn smoothed_loss_matches_the_closed_form() {
    let d = plain();
    for eps in [0.0, 0.1, 0.3] {
        let got = scalar(&smoothed_cross_entropy(
            logits(&V, 3, 4, &d),
            labels(&Y, &d),
            eps,
        )) as f64;
        let want = reference(&V, &Y, 4, eps);
        assert!((got - want).abs() < 1e-5, "eps {eps}: {got} vs {want}");
    }
    let ce = scalar(&cross_entropy(logits(&V, 3, 4, &d), labels(&Y, &d)));
    let s0 = scalar(&smoothed_cross_entropy(
        logits(&V, 3, 4, &d),
        labels(&Y, &d),
        0.0,
    ));
    assert_eq!(ce.to_bits(), s0.to_bits(), "eps 0 is plain cross-entropy");
}

#[test]
fn smoothing_penalizes_overconfidence() {
    // Plain cross-entropy keeps falling as the right logit grows; the smoothed loss has a
    // finite best margin and rises again past it.
    let d = plain();
    let loss = |margin: f32, eps: f64| {
        let v = [margin, 0.0, 0.0, 0.0];
        scalar(&smoothed_cross_entropy(
            logits(&v, 1, 4, &d),
            labels(&[0], &d),
            eps,
        ))
    };
    assert!(loss(20.0, 0.0) < loss(5.0, 0.0));
    assert!(loss(20.0, 0.1) > loss(5.0, 0.1));
    // The optimum of eps = 0.1 over 4 classes: p[label] = 1 - eps + eps/4, others eps/4, so
    // the margin is ln((1 - 0.75 eps) / (eps / 4)).
    let best = ((1.0 - 0.075) / 0.025f64).ln() as f32;
    assert!(loss(best, 0.1) < loss(best - 0.5, 0.1));
    assert!(loss(best, 0.1) < loss(best + 0.5, 0.1));
}

#[test]
fn smoothed_loss_gradient_is_softmax_minus_the_smoothed_target() {
    let d = train_device();
    let (n, k, eps) = (3usize, 4usize, 0.2f64);
    let x = logits(&V, n, k, &d).require_grad();
    let g = smoothed_cross_entropy(x.clone(), labels(&Y, &d), eps).backward();
    let got = host_vec(x.grad(&g).expect("logit gradient"));
    for (r, (row, &y)) in V.chunks(k).zip(&Y).enumerate() {
        let m = row.iter().fold(f32::MIN, |a, &b| a.max(b));
        let e: Vec<f64> = row.iter().map(|&z| ((z - m) as f64).exp()).collect();
        let sum: f64 = e.iter().sum();
        for c in 0..k {
            let target = eps / k as f64 + if c == y as usize { 1.0 - eps } else { 0.0 };
            let want = (e[c] / sum - target) / n as f64;
            let have = got[r * k + c] as f64;
            assert!(
                (have - want).abs() < 1e-6,
                "row {r} class {c}: {have} vs {want}"
            );
        }
    }
}

fn config(schedule: LrSchedule, label_smoothing: f64) -> TrainConfig {
    TrainConfig {
        arch: Arch::SmallCnn,
        epochs: 1,
        batch_size: 4,
        lr: 0.05,
        schedule,
        momentum: 0.9,
        weight_decay: 5e-4,
        label_smoothing,
        seed: 1,
        quant: None,
        freeze_bn_after: None,
        freeze_observers_after: None,
        out: std::env::temp_dir().join(format!("intq-schedule-{}.ckpt", std::process::id())),
        metrics: None,
        progress: false,
        max_steps: Some(0),
        shards: 1,
        data: None,
        augment: Default::default(),
    }
}

#[test]
fn the_trainer_refuses_bad_smoothing_and_warm_up() {
    let images = vec![0u8; 4 * 784];
    let lab = vec![0u8, 1, 2, 3];
    let set = ImageSet::gray(&images, &lab, 28, 28);
    let device = train_device();
    let run = |cfg: TrainConfig| {
        let net = Net::new(Arch::SmallCnn, LayerOpts::default(), &device);
        train(&cfg, Start::fresh(net), &set, None, &device).map(|_| ())
    };
    for eps in [1.0, -0.1, f64::NAN] {
        let e = run(config(LrSchedule::Cosine, eps)).expect_err("smoothing out of range");
        assert!(
            matches!(&e, TrainError::Config(m) if m.contains("label smoothing")),
            "{e}"
        );
    }
    let e = run(config(LrSchedule::OneCycle { warmup: 1.0 }, 0.0)).expect_err("warm-up 1");
    assert!(
        matches!(&e, TrainError::Config(m) if m.contains("warm-up")),
        "{e}"
    );
    run(config(LrSchedule::OneCycle { warmup: 0.2 }, 0.1)).expect("valid settings run");
}
