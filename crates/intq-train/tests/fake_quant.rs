//! Fake quantization against the scalar reference of docs/spec.md §2.1 (`QScheme::fake_quant`), its
//! straight-through and min/max gradients, observers (EMA, quant delay, freeze) and BN folding.

use burn::tensor::{Device, Tensor, TensorData};
use intq_quant::{QScheme, QuantParams};
use intq_train::fake_quant::{
    fake_quant, fake_quant_learned, fake_quant_lsq, fake_quant_per_channel, fake_quant_weights,
    host_vec, lsq_initial_step, WeightQuant,
};
use intq_train::layers::{ConvBn, Ctx, LayerOpts, QuantCfg, ACT_NONE};
use intq_train::observer::EmaObserver;
use proptest::prelude::*;

fn plain() -> Device {
    Device::flex()
}

fn ad() -> Device {
    Device::flex().autodiff()
}

fn t1(v: &[f32], d: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), d)
}

fn all_schemes() -> Vec<QScheme> {
    let mut v = Vec::new();
    for bits in 2..=8 {
        for signed in [false, true] {
            for narrow in [false, true] {
                for symmetric in [false, true] {
                    if let Ok(s) = QScheme::new(bits, signed, narrow, symmetric) {
                        v.push(s);
                    }
                }
            }
        }
    }
    v
}

/// Edge values for `p` under `s`: the nudged bounds, just inside/outside them, every tie
/// `n_min + (k + 0.5) S` and its neighbours, zero, and a few far values.
fn edge_values(s: QScheme, p: QuantParams) -> Vec<f32> {
    let r = s.nudged_range(p);
    let mut v = vec![
        0.0,
        -0.0,
        r.min,
        r.max,
        r.min - p.scale * 0.25,
        r.max + p.scale * 0.25,
        -1e30,
        1e30,
        f32::MIN_POSITIVE,
    ];
    let levels = (s.qmax() - s.qmin()) as usize;
    for k in 0..=levels {
        let tie = r.min + (k as f32 + 0.5) * p.scale;
        v.extend([tie, next_up(tie), next_down(tie)]);
        let grid = r.min + k as f32 * p.scale;
        v.extend([grid, next_up(grid), next_down(grid)]);
    }
    v
}

/// The next f32 above / below `x` (finite, as `f32::next_up` from Rust 1.86, the MSRV is 1.80).
fn next_up(x: f32) -> f32 {
    if x == 0.0 {
        f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() + 1)
    } else {
        f32::from_bits(x.to_bits() - 1)
    }
}

fn next_down(x: f32) -> f32 {
    -next_up(-x)
}

fn check_per_tensor(s: QScheme, p: QuantParams, xs: &[f32]) {
    let out = host_vec(fake_quant(t1(xs, &plain()), s, p));
    for (&x, &y) in xs.iter().zip(&out) {
        let want = s.fake_quant(p, x);
        assert_eq!(
            y.to_bits(),
            want.to_bits(),
            "{s:?} {p:?} x={x:e}: tensor {y:e}, reference {want:e}"
        );
    }
    // The autodiff path (with the STE attached) must give the same bits.
    let out = host_vec(fake_quant(t1(xs, &ad()).require_grad(), s, p));
    for (&x, &y) in xs.iter().zip(&out) {
        assert_eq!(
            y.to_bits(),
            s.fake_quant(p, x).to_bits(),
            "autodiff x={x:e}"
        );
    }
}

#[test]
fn forward_equals_reference_on_edges_for_every_scheme() {
    for s in all_schemes() {
        for (lo, hi) in [
            (-1.0f32, 1.0),
            (0.0, 6.0),
            (-0.3, 2.7),
            (-5.1, 0.02),
            (0.0, 0.0),
            (-1e-3, 7e-4),
        ] {
            let p = s.choose_params(lo, hi).unwrap();
            check_per_tensor(s, p, &edge_values(s, p));
        }
    }
}

#[test]
fn fake_quant_values_are_dequantized_codes() {
    // Every output is `(q - Z) S` for an in-range code q: what the engine's tensor will hold.
    let s = QScheme::UINT8;
    let p = s.choose_params(-0.7, 3.1).unwrap();
    let xs = edge_values(s, p);
    let out = host_vec(fake_quant(t1(&xs, &plain()), s, p));
    for y in out {
        let q = p.quantize(y, s.qmin(), s.qmax());
        assert!(
            (p.dequantize(q) - y).abs() <= p.scale * 1e-3,
            "{y} is not on the grid"
        );
    }
}

proptest! {
    #[test]
    fn forward_equals_reference_random(
        lo in -50.0f32..0.5, width in 1e-4f32..60.0, bits in 2u8..=8,
        signed: bool, narrow: bool, symmetric: bool,
        xs in proptest::collection::vec(-80.0f32..80.0, 1..64),
    ) {
        let Ok(s) = QScheme::new(bits, signed, narrow, symmetric) else { return Ok(()) };
        let p = s.choose_params(lo, lo + width).unwrap();
        let mut xs = xs;
        // Ties of this grid, scaled from the random values.
        let r = s.nudged_range(p);
        xs.extend(xs.clone().iter().map(|&x| r.min + ((x.abs() * 3.0).floor() + 0.5) * p.scale));
        check_per_tensor(s, p, &xs);
    }
}

#[test]
fn per_channel_equals_reference() {
    let s = QScheme::INT8_SYMMETRIC;
    let ranges = [(-1.0f32, 0.5), (-0.01, 0.03), (0.0, 0.0), (-7.0, 7.0)];
    let params: Vec<_> = ranges
        .iter()
        .map(|&(a, b)| s.choose_params(a, b).unwrap())
        .collect();
    let per = 40;
    let mut xs = Vec::new();
    for (c, &p) in params.iter().enumerate() {
        let mut v = edge_values(s, p);
        v.truncate(per);
        v.resize(per, c as f32 * 0.37 - 0.5);
        xs.extend(v);
    }
    let x: Tensor<2> = Tensor::from_data(TensorData::new(xs.clone(), [4, per]), &plain());
    let out = host_vec(fake_quant_per_channel(x, s, &params));
    for (i, (&x, &y)) in xs.iter().zip(&out).enumerate() {
        let want = s.fake_quant(params[i / per], x);
        assert_eq!(y.to_bits(), want.to_bits(), "channel {} x={x:e}", i / per);
    }
}

#[test]
fn weight_params_come_from_current_min_max() {
    let d = plain();
    let w: Tensor<2> = Tensor::from_data(
        TensorData::new(vec![-0.5f32, 0.25, 1.0, -2.0, 0.125, 0.5], [2, 3]),
        &d,
    );
    let (_, wq) = fake_quant_weights(w.clone(), QScheme::UINT8_NARROW, false).unwrap();
    assert_eq!(
        wq,
        WeightQuant::PerTensor(QScheme::UINT8_NARROW.choose_params(-2.0, 1.0).unwrap())
    );
    let (_, wq) = fake_quant_weights(w, QScheme::INT8_SYMMETRIC, true).unwrap();
    let s = QScheme::INT8_SYMMETRIC;
    assert_eq!(
        wq,
        WeightQuant::PerChannel(vec![
            s.choose_params(-0.5, 1.0).unwrap(),
            s.choose_params(-2.0, 0.5).unwrap()
        ])
    );
}

#[test]
fn ste_gradient_is_the_closed_range_mask() {
    let s = QScheme::UINT8;
    let p = s.choose_params(-1.0, 1.0).unwrap();
    let r = s.nudged_range(p);
    let xs = [
        r.min - 0.1,
        r.min,
        r.min + 0.3,
        0.0,
        r.max,
        r.max + 1e-3,
        5.0,
    ];
    let upstream = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
    let x = t1(&xs, &ad()).require_grad();
    let y = fake_quant(x.clone(), s, p);
    let loss = (y * t1(&upstream, &ad())).sum();
    let g = loss.backward();
    let gx = host_vec(x.grad(&g).unwrap());
    for i in 0..xs.len() {
        let inside = xs[i] >= r.min && xs[i] <= r.max;
        let want = if inside { upstream[i] } else { 0.0 };
        assert_eq!(gx[i], want, "x={}", xs[i]);
    }
}

#[test]
fn learned_range_gradients_are_tensorflows() {
    let s = QScheme::UINT8;
    let (lo, hi) = (-0.8f32, 1.3);
    let p = s.choose_params(lo, hi).unwrap();
    let r = s.nudged_range(p);
    let xs = [
        -3.0f32,
        r.min - 1e-3,
        r.min,
        -0.2,
        0.4,
        r.max,
        r.max + 0.5,
        9.0,
    ];
    let up = [1.0f32, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
    let d = ad();
    let min = t1(&[lo], &d).require_grad();
    let max = t1(&[hi], &d).require_grad();
    let x = t1(&xs, &d).require_grad();
    let (y, used) = fake_quant_learned(x.clone(), s, min.clone(), max.clone()).unwrap();
    assert_eq!(used, p);
    // Forward equals the fixed-range reference.
    let yv = host_vec(y.clone());
    for (&xv, &yv) in xs.iter().zip(&yv) {
        assert_eq!(yv.to_bits(), s.fake_quant(p, xv).to_bits());
    }
    let g = (y * t1(&up, &d)).sum().backward();
    let gmin = host_vec(min.grad(&g).unwrap())[0];
    let gmax = host_vec(max.grad(&g).unwrap())[0];
    let gx = host_vec(x.grad(&g).unwrap());
    let want_min: f32 = xs
        .iter()
        .zip(&up)
        .filter(|(&x, _)| x < r.min)
        .map(|(_, &u)| u)
        .sum();
    let want_max: f32 = xs
        .iter()
        .zip(&up)
        .filter(|(&x, _)| x > r.max)
        .map(|(_, &u)| u)
        .sum();
    assert_eq!(gmin, want_min);
    assert_eq!(gmax, want_max);
    for i in 0..xs.len() {
        let inside = xs[i] >= r.min && xs[i] <= r.max;
        assert_eq!(gx[i], if inside { up[i] } else { 0.0 });
    }
    // Finite differences where defined: moving max by a whole step moves every clamped-above
    // output by that step.
    let p2 = s.choose_params(lo, hi + 0.5).unwrap();
    let r2 = s.nudged_range(p2);
    let moved: f32 = xs
        .iter()
        .zip(&up)
        .filter(|(&x, _)| x > r2.max)
        .map(|(_, &u)| u * (r2.max - r.max))
        .sum();
    assert!(moved.abs() > 0.0);
}

/// LSQ's step-size gradient written out per element in f64, independently of the tensor code:
/// `round(x/S) - x/S` inside the nudged range, with `round(x/S)` the code the scalar reference
/// snapped to (so a tie decided in f32 counts as the forward decided it), the clamped code
/// outside, times `1/sqrt(N Q)`.
fn lsq_step_grad(s: QScheme, p: QuantParams, xs: &[f32], up: &[f32]) -> f64 {
    let r = s.nudged_range(p);
    let lo_c = (s.qmin() - p.zero_point) as f64;
    let hi_c = (s.qmax() - p.zero_point) as f64;
    let q = hi_c.max(-lo_c).max(1.0);
    let g = 1.0 / (xs.len() as f64 * q).sqrt();
    let mut sum = 0.0;
    for (&x, &u) in xs.iter().zip(up) {
        let coef = if x < r.min {
            lo_c
        } else if x > r.max {
            hi_c
        } else {
            let v = x as f64 / p.scale as f64;
            (s.fake_quant(p, x) as f64 / p.scale as f64).round() - v
        };
        sum += u as f64 * coef;
    }
    g * sum
}

#[test]
fn lsq_forward_is_fake_quant_and_gradients_are_lsqs() {
    let d = ad();
    for (s, step, z) in [
        (QScheme::INT8_SYMMETRIC, 0.0173f32, 0),
        (QScheme::UINT8, 0.05, 0),
        (QScheme::UINT8, 0.031, 37),
        (QScheme::UINT8, 0.031, 255),
        (QScheme::new(4, true, true, true).unwrap(), 0.2, 0),
        (QScheme::new(2, false, false, false).unwrap(), 0.7, 1),
    ] {
        let p = QuantParams {
            scale: step,
            zero_point: z,
        };
        let mut xs = edge_values(s, p);
        xs.retain(|x| x.abs() < 1e6);
        xs.extend([
            -3.3 * step,
            0.49 * step,
            0.51 * step,
            1.5 * step,
            2.5 * step,
        ]);
        let up: Vec<f32> = (0..xs.len()).map(|i| 1.0 + (i % 7) as f32).collect();
        let st = t1(&[step], &d).require_grad();
        let x = t1(&xs, &d).require_grad();
        let (y, used) = fake_quant_lsq(x.clone(), s, st.clone(), z).unwrap();
        assert_eq!(used, p);
        for (&xv, &yv) in xs.iter().zip(&host_vec(y.clone())) {
            assert_eq!(
                yv.to_bits(),
                s.fake_quant(p, xv).to_bits(),
                "{s:?} {p:?} x={xv}"
            );
        }
        let grads = (y * t1(&up, &d)).sum().backward();
        let gs = host_vec(st.grad(&grads).unwrap())[0] as f64;
        let want = lsq_step_grad(s, p, &xs, &up);
        assert!(
            (gs - want).abs() <= 1e-4 * (1.0 + want.abs()),
            "{s:?} {p:?}: dS {gs} want {want}"
        );
        let r = s.nudged_range(p);
        for (i, &g) in host_vec(x.grad(&grads).unwrap()).iter().enumerate() {
            let inside = xs[i] >= r.min && xs[i] <= r.max;
            assert_eq!(g, if inside { up[i] } else { 0.0 }, "x={}", xs[i]);
        }
    }
}

#[test]
fn lsq_step_descends_on_the_quantization_error() {
    // Values spread wider than the initial range: clipping dominates, so gradient descent on
    // the squared quantization error must grow the step; then a too-large step must shrink.
    let d = ad();
    let s = QScheme::new(4, true, true, true).unwrap();
    let xs: Vec<f32> = (0..200).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
    for (start, grows) in [(0.01f32, true), (5.0, false)] {
        let x = t1(&xs, &d);
        let st = t1(&[start], &d).require_grad();
        let (y, _) = fake_quant_lsq(x.clone(), s, st.clone(), 0).unwrap();
        let err = (y - x).powi_scalar(2).sum();
        let g = host_vec(st.grad(&err.backward()).unwrap())[0];
        assert!(
            if grows { g < 0.0 } else { g > 0.0 },
            "start {start}: dS {g}"
        );
    }
    let init = lsq_initial_step(&t1(&xs, &plain()), 7);
    let mean_abs = xs.iter().map(|v| v.abs()).sum::<f32>() / xs.len() as f32;
    assert!((init - 2.0 * mean_abs / 7f32.sqrt()).abs() < 1e-5);
}

#[test]
fn lsq_refuses_bad_steps_and_zero_points() {
    let d = plain();
    let x = t1(&[0.5, -0.5], &d);
    for bad in [0.0f32, -0.1, f32::NAN, f32::INFINITY] {
        let e = fake_quant_lsq(x.clone(), QScheme::UINT8, t1(&[bad], &d), 0).unwrap_err();
        assert!(e.to_string().contains("step size"), "{e}");
    }
    let e = fake_quant_lsq(x, QScheme::UINT8, t1(&[0.1], &d), 256).unwrap_err();
    assert!(e.to_string().contains("zero point 256"), "{e}");
}

#[test]
fn ema_observer_first_batch_then_average() {
    let d = plain();
    let obs = EmaObserver::new(0.9, &d);
    assert_eq!(obs.range(), None);
    obs.observe(-1.0, 2.0);
    assert_eq!(obs.range(), Some((-1.0, 2.0)));
    obs.observe(-3.0, 4.0);
    let (lo, hi) = obs.range().unwrap();
    assert!((lo - (-0.9 - 0.1 * 3.0)).abs() < 1e-6);
    assert!((hi - (0.9 * 2.0 + 0.1 * 4.0)).abs() < 1e-6);
}

#[test]
fn quant_delay_observes_but_does_not_apply() {
    let d = ad();
    let obs = EmaObserver::new(0.5, &d);
    let mut q = QuantCfg::uint8(8, 8).unwrap();
    q.quant_delay = 2;
    let xs = [0.0f32, 0.123_456, 0.5, 1.0];
    for step in 0..4u64 {
        let ctx = Ctx {
            training: true,
            step,
            quant: Some(q),
            exact: false,
            log: None,
        };
        let (y, used) = obs.apply(t1(&xs, &d), &ctx).unwrap();
        assert!(obs.range().is_some(), "observed at step {step}");
        let y = host_vec(y);
        if step < 2 {
            assert_eq!(used, None);
            assert_eq!(y, xs.to_vec(), "step {step} must pass through");
        } else {
            let p = used.expect("applied after the delay");
            for (&x, &v) in xs.iter().zip(&y) {
                assert_eq!(v, q.act_scheme.fake_quant(p, x));
            }
            assert_ne!(y[1], xs[1]);
        }
    }
    // Frozen observers keep their range.
    let before = obs.range();
    q.freeze_observers = true;
    let ctx = Ctx {
        training: true,
        step: 10,
        quant: Some(q),
        exact: false,
        log: None,
    };
    obs.apply(t1(&[-100.0, 100.0], &d), &ctx).unwrap();
    assert_eq!(obs.range(), before);
}

fn random_bn_conv(d: &Device, groups: usize) -> ConvBn {
    d.seed(7);
    let l = ConvBn::new(4, 4, 3, 1, groups, true, ACT_NONE, LayerOpts::default(), d);
    let dist = burn::tensor::Distribution::Uniform(0.5, 1.5);
    let gamma = Tensor::<1>::random([4], dist, d);
    let beta = Tensor::<1>::random([4], burn::tensor::Distribution::Uniform(-1.0, 1.0), d);
    ConvBn {
        gamma: Some(burn::module::Param::from_tensor(gamma)),
        beta: Some(burn::module::Param::from_tensor(beta)),
        ..l
    }
}

#[test]
fn folded_conv_bn_equals_conv_then_bn_in_eval() {
    use burn::tensor::module::{batch_norm, conv2d};
    use burn::tensor::ops::ConvOptions;
    for groups in [1, 4] {
        let d = plain();
        let l = random_bn_conv(&d, groups);
        l.running_mean.update(t1(&[0.1, -0.2, 0.3, 0.05], &d));
        l.running_var.update(t1(&[0.5, 2.0, 1.0, 0.25], &d));
        let x = Tensor::<4>::random(
            [2, 4, 6, 6],
            burn::tensor::Distribution::Uniform(-1.0, 1.0),
            &d,
        );
        let got = l
            .forward(
                intq_train::layers::Act {
                    x: x.clone(),
                    q: None,
                },
                &Ctx::float(false),
            )
            .unwrap()
            .x;
        let conv = conv2d(
            x,
            l.weight.val(),
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], groups),
        );
        let want = batch_norm(
            conv,
            l.gamma.as_ref().unwrap().val(),
            l.beta.as_ref().unwrap().val(),
            l.running_mean.value_sync(),
            l.running_var.value_sync(),
            l.eps,
        );
        let (a, b) = (host_vec(got), host_vec(want));
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "groups {groups}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn qat_conv_eval_uses_quantized_folded_weights_and_freeze_stops_bn_updates() {
    let d = ad();
    let l = random_bn_conv(&d, 1);
    let q = QuantCfg::int8(8, 8, true).unwrap();
    let x = Tensor::<4>::random(
        [2, 4, 5, 5],
        burn::tensor::Distribution::Uniform(0.0, 1.0),
        &d,
    );
    let a = intq_train::layers::Act {
        x: x.clone(),
        q: None,
    };
    // Training before freeze moves the running statistics.
    let before = intq_train::layers::running_stats(&l);
    let ctx = Ctx {
        training: true,
        step: 0,
        quant: Some(q),
        exact: false,
        log: None,
    };
    l.forward(a.clone(), &ctx).unwrap();
    let after = intq_train::layers::running_stats(&l);
    assert_ne!(before, after);
    // After BN freeze they stay.
    let mut frozen = q;
    frozen.freeze_bn = true;
    let ctx = Ctx {
        training: true,
        step: 1,
        quant: Some(frozen),
        exact: false,
        log: None,
    };
    let y_frozen = host_vec(l.forward(a.clone(), &ctx).unwrap().x);
    assert_eq!(after, intq_train::layers::running_stats(&l));
    // Frozen training and evaluation compute the same folded, quantized layer.
    let ctx = Ctx {
        training: false,
        step: 2,
        quant: Some(frozen),
        exact: false,
        log: None,
    };
    let y_eval = host_vec(l.forward(a, &ctx).unwrap().x);
    assert_eq!(y_frozen, y_eval);
    // And export reports weights whose fake quantization is what ran.
    let f = l.export(&q).unwrap();
    let s = q.weight_scheme;
    let per = f.weights.len() / 4;
    for (i, &w) in f.weights.iter().enumerate() {
        let p = f.weight_quant.channel(i / per);
        assert_eq!(p.zero_point, 0);
        let fq = s.fake_quant(p, w);
        assert!((fq - w).abs() <= p.scale * 0.5 + 1e-7);
    }
}

/// Accumulators next to every rounding boundary the engine's requantization has: multiples and
/// half-multiples of `2^e`, ±1 around them, powers of two ±1, and the int32 edges.
fn edge_accumulators(e: i32) -> Vec<i32> {
    let mut v = vec![0, 1, -1, i32::MAX >> 8, -(i32::MAX >> 8)];
    for k in [1i64, 2, 3, 7, 100, 255, 1000] {
        for base in [k << e, (k << e) + (1 << e.max(1)) / 2] {
            for d in -2..=2 {
                for sign in [1, -1] {
                    let x = sign * (base + d);
                    if x.abs() < 1 << 24 {
                        v.push(x as i32);
                    }
                }
            }
        }
    }
    for i in 0..24 {
        v.extend([(1 << i) - 1, 1 << i, (1 << i) + 1, -(1 << i) - 1, -(1 << i)]);
        // Odd multiples of powers of two: with a multiplier mantissa that has trailing zeros,
        // these put `acc * M * 2^e` and `acc * M` exactly on halves (ties of both roundings).
        for odd in [3i64, 5, 7, 9, 11, 13, 15, 17, 19, 21] {
            let x = odd << i;
            if x < 1 << 24 {
                v.extend([x as i32, -x as i32]);
            }
        }
    }
    v
}

/// The output rounding of conv/FC fake quantization reproduces the engine's requantization
/// (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT, then zero point and clamp)
/// exactly, ties included. The multiplier has a 24-bit mantissa so `acc * M` is exact in f64 and
/// the engine's Q31 `M0` is `M` itself: any disagreement is a rounding-rule bug.
#[test]
fn requant_rounding_equals_the_engine() {
    use intq_train::fake_quant::{fake_quant_requant, requant_shifts};
    let d = plain();
    let scheme = QScheme::new(8, false, false, false).unwrap();
    let mut rng = intq_testutil::TestRng::new(0x9e37_79b9_7f4a_7c15);
    let mut next = || rng.next_u64();
    let mut checked = 0;
    for case in 0..200 {
        // M = mantissa * 2^-k with mantissa in [2^23, 2^24): right shifts 0..=16.
        // Trailing zeros in the mantissa make exact ties reachable below the clamp.
        let tz = (next() % 22) as u32;
        let mantissa = ((1u64 << 23) + next() % (1 << 23)) & !((1u64 << tz) - 1);
        let k = 24 + (case % 17) as i32;
        let m = mantissa as f64 * 2f64.powi(-k);
        let s_w = m as f32;
        assert_eq!(s_w as f64, m);
        let zp = [0, 1, 128, 254, 255][case % 5];
        let out = QuantParams {
            scale: 1.0,
            zero_point: zp,
        };
        let wq = WeightQuant::PerTensor(QuantParams {
            scale: s_w,
            zero_point: 0,
        });
        let shifts = requant_shifts(1.0, &wq, 1, out.scale);
        let qm = intq_quant::QuantizedMultiplier::from_real(m).unwrap();
        assert_eq!(shifts[0], (-qm.shift).max(0));
        let accs = edge_accumulators(shifts[0]);
        let reals: Vec<f64> = accs.iter().map(|&a| a as f64 * m).collect();
        let n = reals.len();
        let x = Tensor::<2>::from_data(
            TensorData::new(reals, [n, 1]),
            (&d, burn::tensor::DType::F64),
        );
        let y = fake_quant_requant(x, scheme, out, &shifts, true);
        let got: Vec<f64> = y.into_data().convert::<f64>().try_to_vec::<f64>().unwrap();
        for (&acc, &g) in accs.iter().zip(&got) {
            let want = (qm.apply(acc) + zp).clamp(0, 255);
            assert_eq!(
                g as i32 + zp,
                want,
                "acc {acc}, M {m:e} (shift {}), Z {zp}",
                qm.shift
            );
            checked += 1;
        }
    }
    assert!(checked > 5000, "{checked}");
}

/// The fused one-pass f32 conv/FC output fake quantization equals the op chain it replaces bit
/// for bit, forward and straight-through gradient, on every scheme's edge values (bounds, ties
/// and their neighbours, far values) spread over channels with right shifts 0 to 20, with and
/// without autodiff.
#[test]
fn fused_requant_fake_quant_equals_the_op_chain() {
    use intq_train::fake_quant::{fake_quant_requant, fake_quant_requant_ops};
    let mut checked = 0usize;
    for (i, s) in all_schemes().into_iter().enumerate().step_by(3) {
        let p = s.choose_params(-1.7 + 0.1 * (i % 5) as f32, 2.3).unwrap();
        let mut xs = edge_values(s, p);
        // Whole [n, c, h, w] blocks: 3 channels of inner size 2 x len/6.
        let c = 3;
        while !xs.len().is_multiple_of(2 * c) {
            xs.push(0.37 * xs.len() as f32);
        }
        let h = xs.len() / (2 * c);
        let dims = [1, c, h, 2];
        let shifts = [(i % 21) as i32, 0, 20 - (i % 21) as i32];
        let upstream: Vec<f32> = (0..xs.len()).map(|k| 1.0 + (k % 7) as f32).collect();
        let make = |d: &Device| Tensor::<4>::from_data(TensorData::new(xs.clone(), dims), d);
        let up = Tensor::<4>::from_data(TensorData::new(upstream.clone(), dims), &ad());

        let xf = make(&ad()).require_grad();
        let yf = fake_quant_requant(xf.clone(), s, p, &shifts, false);
        let xo = make(&ad()).require_grad();
        let yo = fake_quant_requant_ops(xo.clone(), s, p, &shifts, false);
        let (vf, vo) = (host_vec(yf.clone()), host_vec(yo.clone()));
        let gf = host_vec(xf.grad(&(yf * up.clone()).sum().backward()).unwrap());
        let go = host_vec(xo.grad(&(yo * up).sum().backward()).unwrap());
        for k in 0..xs.len() {
            assert_eq!(
                vf[k].to_bits(),
                vo[k].to_bits(),
                "{s:?} x={} shift {shifts:?}",
                xs[k]
            );
            assert_eq!(gf[k].to_bits(), go[k].to_bits(), "grad {s:?} x={}", xs[k]);
        }
        let plain_f = host_vec(fake_quant_requant(make(&plain()), s, p, &shifts, false));
        let plain_o = host_vec(fake_quant_requant_ops(make(&plain()), s, p, &shifts, false));
        assert_eq!(
            plain_f.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            plain_o.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{s:?} without autodiff"
        );
        checked += xs.len();
    }
    assert!(checked > 1000, "{checked}");
}

/// The fused requant fake quantization's own backward op is the straight-through mask: with
/// arbitrary (signed, random) upstream gradients, on values at exactly `lo` and `hi`, one ulp
/// inside and outside them, far outside, and inside, spread over a batch of 2 and 4 channels with
/// different right shifts, its input gradient equals the op chain's bit for bit, is the upstream
/// gradient inside the closed range and `+0.0` outside (so an unmasked `dy` fails). The forward
/// equals the op chain's too, with and without autodiff, also for negative values that round to
/// code 0 under a right shift (`-0.0` before the op chain's `+ (x_c - x_c.detach())`).
#[test]
fn fused_requant_gradient_is_the_ste_mask() {
    use intq_train::fake_quant::{fake_quant_requant, fake_quant_requant_ops};
    let s = QScheme::INT8;
    let p = s.choose_params(-1.3, 0.9).unwrap();
    let r = s.nudged_range(p);
    let (lo, hi) = (r.min, r.max);
    let base = [
        lo,
        hi,
        next_up(lo),
        next_down(lo),
        next_up(hi),
        next_down(hi),
        lo - 1.0,
        hi + 7.5,
        0.0,
        0.25,
        -0.6,
        0.5 * (lo + hi),
        -0.3 * p.scale,
        -0.45 * p.scale,
    ];
    let (n, c) = (2, 4);
    let inner = base.len();
    // Each (image, channel) block holds every base value, rotated so that positions differ.
    let xs: Vec<f32> = (0..n * c)
        .flat_map(|b| (0..inner).map(move |i| base[(i + b) % inner]))
        .collect();
    let dims = [n, c, inner, 1];
    let shifts = [0, 3, 11, 20];
    // Seeded signed upstream gradients, none zero.
    let upstream: Vec<f32> = intq_testutil::floats(0x2545_f491, xs.len(), -4.0, 4.0)
        .into_iter()
        .map(|u| u + if u < 0.0 { -0.125 } else { 0.125 })
        .collect();
    let make = || Tensor::<4>::from_data(TensorData::new(xs.clone(), dims), &ad()).require_grad();
    let up = Tensor::<4>::from_data(TensorData::new(upstream.clone(), dims), &ad());
    let xf = make();
    let yf = fake_quant_requant(xf.clone(), s, p, &shifts, false);
    let gf = host_vec(
        xf.grad(&(yf.clone() * up.clone()).sum().backward())
            .unwrap(),
    );
    let xo = make();
    let yo = fake_quant_requant_ops(xo.clone(), s, p, &shifts, false);
    let go = host_vec(xo.grad(&(yo.clone() * up).sum().backward()).unwrap());
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(bits(host_vec(yf)), bits(host_vec(yo)), "autodiff forward");
    let plain_x = || Tensor::<4>::from_data(TensorData::new(xs.clone(), dims), &plain());
    let plain_f = host_vec(fake_quant_requant(plain_x(), s, p, &shifts, false));
    let plain_o = host_vec(fake_quant_requant_ops(plain_x(), s, p, &shifts, false));
    assert!(plain_o.iter().any(|v| v.to_bits() == (-0.0f32).to_bits()));
    assert_eq!(bits(plain_f), bits(plain_o), "forward without autodiff");
    let mut outside = 0;
    for k in 0..xs.len() {
        let inside = xs[k] >= lo && xs[k] <= hi;
        let want = if inside { upstream[k] } else { 0.0 };
        outside += usize::from(!inside);
        assert_eq!(gf[k].to_bits(), want.to_bits(), "x={} k={k}", xs[k]);
        assert_eq!(
            gf[k].to_bits(),
            go[k].to_bits(),
            "op chain, x={} k={k}",
            xs[k]
        );
    }
    assert_eq!(outside, 4 * n * c, "lo and hi one ulp out, and far out");
    // A second use of the same input adds its gradients (the op registers, not overwrites).
    let x = make();
    let y = fake_quant_requant(x.clone(), s, p, &shifts, false)
        + fake_quant_requant(x.clone(), s, p, &shifts, false);
    let g2 = host_vec(x.grad(&y.sum().backward()).unwrap());
    for k in 0..xs.len() {
        let inside = xs[k] >= lo && xs[k] <= hi;
        assert_eq!(g2[k], if inside { 2.0 } else { 0.0 }, "x={}", xs[k]);
    }
}
