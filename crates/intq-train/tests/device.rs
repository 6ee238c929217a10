//! Fake quantization on devices without IEEE division (`fake_quant`'s division-free path, which
//! every backend but `flex` takes): the same bits as the scalar reference `QScheme::fake_quant`
//! and the engine-rounding op chain, at every tie and bound, on the CPU and, with the `wgpu`
//! feature, on the wgpu device (`.ci/wgpu` runs that on Mesa's software Vulkan driver).

use burn::tensor::{Device, Tensor, TensorData};
use intq_quant::{QScheme, QuantParams};
use intq_train::fake_quant::{
    fake_quant_by_levels, fake_quant_per_channel_by_levels, fake_quant_requant_by_levels,
    fake_quant_requant_ops, host_vec,
};

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

const RANGES: [(f32, f32); 6] = [
    (-1.0, 1.0),
    (0.0, 6.0),
    (-0.3, 2.7),
    (-5.1, 0.02),
    (0.0, 0.0),
    (-1e-3, 7e-4),
];

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

/// The bounds, one ulp around them, every tie `n_min + (k + 0.5) S` and grid point with their
/// neighbours (two ulp each way), zero, far values, and seeded random values in the range.
fn edge_values(s: QScheme, p: QuantParams, seed: u64) -> Vec<f32> {
    let r = s.nudged_range(p);
    let mut v = vec![
        0.0,
        r.min,
        r.max,
        next_down(r.min),
        next_up(r.max),
        r.min - p.scale * 0.25,
        r.max + p.scale * 0.25,
        -1e30,
        1e30,
        f32::MIN_POSITIVE,
    ];
    for k in 0..=(s.qmax() - s.qmin()) {
        for c in [
            r.min + (k as f32 + 0.5) * p.scale,
            r.min + k as f32 * p.scale,
        ] {
            v.extend([c, next_up(c), next_down(c), next_up(next_up(c))]);
            v.push(next_down(next_down(c)));
        }
    }
    let mut rng = intq_testutil::TestRng::new(seed);
    let span = (r.max - r.min).max(1e-6);
    v.extend(
        (0..512).map(|_| {
            r.min - 0.1 * span + 1.2 * span * rng.int(0, 1 << 20) as f32 / (1 << 20) as f32
        }),
    );
    v
}

fn t1(v: &[f32], d: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), d)
}

/// Per tensor and per channel, plain and autodiff: the levels path on `device` equals
/// `QScheme::fake_quant` bit for bit (a `-0.0` reference may come back `+0.0`, as the
/// autodiff straight-through sum makes it on every path); the gradient is the closed-range mask.
fn check_per_tensor_and_channel(
    device: &Device,
    per_tensor: impl Fn(Tensor<1>, QScheme, QuantParams) -> Tensor<1>,
    per_channel: impl Fn(Tensor<2>, QScheme, &[QuantParams]) -> Tensor<2>,
) -> usize {
    let same = |got: f32, want: f32| got.to_bits() == want.to_bits() || (got == 0.0 && want == 0.0);
    let mut checked = 0;
    for (i, s) in all_schemes().into_iter().enumerate() {
        for (j, &(lo, hi)) in RANGES.iter().enumerate() {
            let p = s.choose_params(lo, hi).unwrap();
            let xs = edge_values(s, p, (i * 16 + j) as u64);
            let got = host_vec(per_tensor(t1(&xs, device), s, p));
            for (&x, &y) in xs.iter().zip(&got) {
                let want = s.fake_quant(p, x);
                assert!(
                    same(y, want),
                    "{s:?} {p:?} x={x:e}: {y:e}, reference {want:e}"
                );
            }
            let ad = device.clone().autodiff();
            let x = t1(&xs, &ad).require_grad();
            let y = per_tensor(x.clone(), s, p);
            let grad = host_vec(x.grad(&y.clone().sum().backward()).unwrap());
            let r = s.nudged_range(p);
            for ((&x, &y), &g) in xs.iter().zip(&host_vec(y)).zip(&grad) {
                assert!(same(y, s.fake_quant(p, x)), "autodiff {s:?} x={x:e}");
                let inside = x >= r.min && x <= r.max;
                assert_eq!(g, if inside { 1.0 } else { 0.0 }, "grad {s:?} x={x:e}");
            }
            checked += xs.len();
        }
        // One channel per range, the same values in each.
        let params: Vec<QuantParams> = RANGES
            .iter()
            .map(|&(lo, hi)| s.choose_params(lo, hi).unwrap())
            .collect();
        let xs: Vec<f32> = edge_values(s, params[2], i as u64);
        let c = params.len();
        let all: Vec<f32> = (0..c).flat_map(|_| xs.iter().copied()).collect();
        let x = Tensor::<2>::from_data(TensorData::new(all, [c, xs.len()]), device);
        let got = host_vec(per_channel(x, s, &params));
        for (ch, p) in params.iter().enumerate() {
            for (k, &x) in xs.iter().enumerate() {
                let (y, want) = (got[ch * xs.len() + k], s.fake_quant(*p, x));
                assert!(
                    same(y, want),
                    "per channel {s:?} {p:?} x={x:e}: {y:e} vs {want:e}"
                );
            }
        }
        checked += c * xs.len();
    }
    checked
}

/// The engine-rounding fake quantization of conv/FC outputs through levels on `device` equals
/// the op chain on the CPU, forward (bit for bit up to the sign of zero) and gradient, over
/// channels with right shifts from 0 to 20.
fn check_requant(
    device: &Device,
    run: impl Fn(Tensor<4>, QScheme, QuantParams, &[i32]) -> Tensor<4>,
) -> usize {
    let cpu = Device::flex().autodiff();
    let mut checked = 0;
    for (i, s) in all_schemes().into_iter().enumerate().step_by(2) {
        let p = s.choose_params(-1.7 + 0.1 * (i % 5) as f32, 2.3).unwrap();
        let mut xs = edge_values(s, p, 100 + i as u64);
        let c = 3;
        while !xs.len().is_multiple_of(2 * c) {
            xs.push(0.37 * xs.len() as f32);
        }
        let dims = [1, c, xs.len() / (2 * c), 2];
        let shifts = [(i % 21) as i32, 0, 20 - (i % 21) as i32];
        let want_x = Tensor::<4>::from_data(TensorData::new(xs.clone(), dims), &cpu).require_grad();
        let want_y = fake_quant_requant_ops(want_x.clone(), s, p, &shifts, false);
        let want_g = host_vec(want_x.grad(&want_y.clone().sum().backward()).unwrap());
        let x = Tensor::<4>::from_data(
            TensorData::new(xs.clone(), dims),
            &device.clone().autodiff(),
        )
        .require_grad();
        let y = run(x.clone(), s, p, &shifts);
        let g = host_vec(x.grad(&y.clone().sum().backward()).unwrap());
        for (k, ((&a, &b), (&ga, &gb))) in host_vec(y)
            .iter()
            .zip(&host_vec(want_y))
            .zip(g.iter().zip(&want_g))
            .enumerate()
        {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{s:?} x={} shifts {shifts:?}",
                xs[k]
            );
            assert_eq!(ga.to_bits(), gb.to_bits(), "grad {s:?} x={}", xs[k]);
        }
        checked += xs.len();
    }
    checked
}

#[test]
fn levels_path_equals_the_reference_on_the_cpu() {
    let d = Device::flex();
    let n = check_per_tensor_and_channel(&d, fake_quant_by_levels, |x, s, p| {
        fake_quant_per_channel_by_levels(x, s, p)
    });
    assert!(n > 100_000, "{n}");
    let n = check_requant(&d, fake_quant_requant_by_levels);
    assert!(n > 10_000, "{n}");
}

#[cfg(feature = "wgpu")]
mod on_wgpu {
    use super::*;
    use intq_train::device::{is_flex, DeviceSpec, WgpuAdapter};
    use intq_train::fake_quant::{fake_quant, fake_quant_per_channel, fake_quant_requant};

    fn wgpu() -> Device {
        DeviceSpec::Wgpu(WgpuAdapter::Default)
            .open()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// On the device, the public entry points take the levels path and give the reference's
    /// bits at every tie and bound.
    #[test]
    fn fake_quant_on_wgpu_equals_the_reference() {
        let d = wgpu();
        assert!(!is_flex(&d));
        eprintln!(
            "wgpu adapter: {}",
            DeviceSpec::Wgpu(WgpuAdapter::Default).describe(&d)
        );
        let n = check_per_tensor_and_channel(&d, fake_quant, fake_quant_per_channel);
        assert!(n > 100_000, "{n}");
        let n = check_requant(&d, |x, s, p, e| fake_quant_requant(x, s, p, e, false));
        assert!(n > 10_000, "{n}");
    }

    /// What the levels path guards against: the device's own `(x - n_min) / S + 0.5` then
    /// `floor`, counted (not asserted: a device may happen to divide exactly).
    #[test]
    fn device_division_codes_are_counted() {
        let d = wgpu();
        let mut differ = 0;
        let mut total = 0;
        for s in all_schemes() {
            for &(lo, hi) in &RANGES {
                let p = s.choose_params(lo, hi).unwrap();
                let r = s.nudged_range(p);
                let xs = edge_values(s, p, 7);
                let y = t1(&xs, &d)
                    .clamp(r.min, r.max)
                    .sub_scalar(r.min)
                    .div_scalar(p.scale)
                    .add_scalar(0.5)
                    .floor()
                    .mul_scalar(p.scale)
                    .add_scalar(r.min);
                for (&x, &y) in xs.iter().zip(&host_vec(y)) {
                    differ += usize::from(y != s.fake_quant(p, x));
                    total += 1;
                }
            }
        }
        eprintln!("device division: {differ} of {total} fake-quant values differ from IEEE");
    }
}
