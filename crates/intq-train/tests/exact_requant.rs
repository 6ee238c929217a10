//! Exact evaluation of conv and fully connected outputs (docs/spec.md §2.6) requantizes the
//! integer accumulator with the engine's own multiplier: `M = S_in S_w / S_out` rounded to its
//! 31-bit mantissa `m0` (§4.1), not the real `M`. For a product of three f32 scales the two
//! differ in the low bits, and an accumulator whose `acc * M * 2^e` lies that close to a
//! rounding boundary lands one code apart: rare per element, but a network of tens of thousands
//! of outputs per picture meets some on a test set.

use burn::tensor::{Device, Tensor, TensorData};
use intq_quant::{QScheme, QuantParams, QuantizedMultiplier};
use intq_train::fake_quant::{fake_quant_requant, requant_shifts, WeightQuant};
use intq_train::layers::{FoldedLayer, ACT_NONE, ACT_RELU, ACT_RELU6};

/// An int8 per-tensor layer with these scales; weights and bias do not enter the requantization.
fn layer(s_w: f32, out: QuantParams, act: u8) -> FoldedLayer {
    FoldedLayer {
        weights: vec![0.0],
        weight_shape: vec![1, 1],
        weight_quant: WeightQuant::PerTensor(QuantParams {
            scale: s_w,
            zero_point: 0,
        }),
        bias: vec![0.0],
        output: out,
        act,
    }
}

/// The codes `requant_exact` gives for accumulators `accs` (one channel).
fn exact_codes(l: &FoldedLayer, s_in: f32, scheme: QScheme, accs: &[i32]) -> Vec<i32> {
    let n = accs.len();
    let x = Tensor::<2>::from_data(
        TensorData::new(accs.iter().map(|&a| a as f64).collect(), [n, 1]),
        (&Device::flex(), burn::tensor::DType::F64),
    );
    let y = l.requant_exact(x, s_in, scheme).unwrap();
    let p = l.output;
    y.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap()
        .into_iter()
        .map(|v| (v / p.scale as f64).round() as i32 + p.zero_point)
        .collect()
}

/// The engine's output code of one accumulator (docs/spec.md §4.4) through its multiplier.
fn engine_code(m: QuantizedMultiplier, acc: i32, p: QuantParams, (lo, hi): (i32, i32)) -> i32 {
    m.apply(acc).saturating_add(p.zero_point).clamp(lo, hi)
}

/// Accumulators at and around every output code's rounding boundary, for random scale triples,
/// requantize to the engine's codes; the real multiplier's rounding of the same accumulators
/// (`fake_quant_requant` on `acc S_in S_w`, what exact evaluation computed before) disagrees with
/// the engine on some of them.
#[test]
fn exact_requant_uses_the_engines_31_bit_multiplier() {
    let scheme = QScheme::new(8, true, false, false).unwrap();
    let mut rng = intq_testutil::TestRng::new(0x5eed_2026);
    let (mut checked, mut real_differs) = (0usize, 0usize);
    for _ in 0..60 {
        // M from about 2^-24 to 2^-12: many accumulators per output code, as in a deep layer.
        let s_in = rng.log_scale(-8.0, -5.0);
        let s_w = rng.log_scale(-14.0, -9.0);
        let out = QuantParams {
            scale: rng.log_scale(-2.0, 1.0),
            zero_point: rng.int(-20, 20),
        };
        let real = s_in as f64 * s_w as f64 / out.scale as f64;
        let m = QuantizedMultiplier::from_real(real).unwrap();
        // Near code c + 1/2 (outputs c - Z + 1/2): the integers nearest (c - Z + 0.5) / M.
        let mut accs = Vec::new();
        for c in -128..=127 {
            let at = (c - out.zero_point) as f64 + 0.5;
            let a = (at / real).round();
            for d in -2..=2 {
                let acc = a + d as f64;
                if acc.abs() < 2f64.powi(31) {
                    accs.push(acc as i32);
                }
            }
        }
        let l = layer(s_w, out, ACT_NONE);
        let got = exact_codes(&l, s_in, scheme, &accs);
        for (&acc, &g) in accs.iter().zip(&got) {
            assert_eq!(
                g,
                engine_code(m, acc, out, (-128, 127)),
                "acc {acc}, M {real:e}"
            );
        }
        checked += accs.len();

        let wq = WeightQuant::PerTensor(QuantParams {
            scale: s_w,
            zero_point: 0,
        });
        let shifts = requant_shifts(s_in, &wq, 1, out.scale);
        let reals: Vec<f64> = accs
            .iter()
            .map(|&a| a as f64 * s_in as f64 * s_w as f64)
            .collect();
        let n = reals.len();
        let x = Tensor::<2>::from_data(
            TensorData::new(reals, [n, 1]),
            (&Device::flex(), burn::tensor::DType::F64),
        );
        let y = fake_quant_requant(x, scheme, out, &shifts, true);
        let by_real: Vec<f64> = y
            .into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .unwrap();
        real_differs += accs
            .iter()
            .zip(&by_real)
            .filter(|&(&acc, &v)| {
                (v / out.scale as f64).round() as i32 + out.zero_point
                    != engine_code(m, acc, out, (-128, 127))
            })
            .count();
    }
    assert!(checked > 60_000, "{checked}");
    assert!(real_differs > 0, "the real multiplier agreed everywhere");
}

/// Fused activations are the engine's clamps on the output codes (docs/spec.md §4.5), applied
/// after the requantization of the unclamped accumulator; accumulators wrap as int32.
#[test]
fn exact_requant_clamps_as_the_engine_and_wraps_the_accumulator() {
    let scheme = QScheme::new(8, false, false, false).unwrap();
    let (s_in, s_w) = (0.05_f32, 0.003_f32);
    let out = QuantParams {
        scale: 6.0 / 255.0,
        zero_point: 7,
    };
    let m = QuantizedMultiplier::from_real(s_in as f64 * s_w as f64 / out.scale as f64).unwrap();
    let accs: Vec<i32> = (-50_000..50_000).step_by(7).collect();
    let relu6_hi = out.zero_point + (6.0 / out.scale).round() as i32;
    for (act, lo, hi) in [
        (ACT_NONE, 0, 255),
        (ACT_RELU, out.zero_point, 255),
        (ACT_RELU6, out.zero_point, relu6_hi.min(255)),
    ] {
        let got = exact_codes(&layer(s_w, out, act), s_in, scheme, &accs);
        for (&acc, &g) in accs.iter().zip(&got) {
            assert_eq!(
                g,
                engine_code(m, acc, out, (lo, hi)),
                "act {act}, acc {acc}"
            );
        }
    }
    // 2^32 + 5 wraps to 5.
    let wrapped = exact_codes(&layer(s_w, out, ACT_NONE), s_in, scheme, &[5]);
    let n = 1;
    let x = Tensor::<2>::from_data(
        TensorData::new(vec![(1u64 << 32) as f64 + 5.0], [n, 1]),
        (&Device::flex(), burn::tensor::DType::F64),
    );
    let l = layer(s_w, out, ACT_NONE);
    let y = l.requant_exact(x, s_in, scheme).unwrap();
    let v = y
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap()[0];
    assert_eq!(
        (v / out.scale as f64).round() as i32 + out.zero_point,
        wrapped[0]
    );
}
