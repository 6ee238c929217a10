//! The training convolution's depthwise path (`intq_train::conv::conv2d_train` with groups ==
//! in == out channels, `intq_train::depthwise`) against burn's `conv2d` under autodiff: output
//! and input, weight and bias gradients on random geometries and tiny-mobilenet's layer shapes.

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use intq_train::conv::conv2d_train;
use proptest::prelude::*;

fn ad() -> Device {
    Device::flex().autodiff()
}

fn host(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn host1(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// Deterministic values in [-1, 1) from a seed (xorshift), so a failing case can be replayed.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * scale,
            "{what}[{i}]: got {g}, want {w} (scale {scale})"
        );
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    c: usize,
    k: [usize; 2],
    h: usize,
    w: usize,
    stride: usize,
    /// (begin, end) padding per spatial dimension.
    pad: [(usize, usize); 2],
    dil: usize,
    bias: bool,
    x_grad: bool,
    seed: u64,
}

/// Runs one case through both convolutions with the loss sum(conv(x, w, b) * u).
fn check(c: Case) {
    let d = ad();
    let xs = [c.n, c.c, c.h, c.w];
    let ws = [c.c, 1, c.k[0], c.k[1]];
    let xv = values(c.seed, xs.iter().product());
    let wv = values(c.seed + 1, ws.iter().product());
    let bv = values(c.seed + 2, c.c);
    let opts = ConvOptions::new_with_padding([c.stride; 2], c.pad, [c.dil; 2], c.c);
    let run = |custom: bool| {
        let mut x = Tensor::<4>::from_data(TensorData::new(xv.clone(), xs), &d);
        if c.x_grad {
            x = x.require_grad();
        }
        let w = Tensor::<4>::from_data(TensorData::new(wv.clone(), ws), &d).require_grad();
        let b = Tensor::<1>::from_data(TensorData::new(bv.clone(), [c.c]), &d).require_grad();
        let bias = c.bias.then(|| b.clone());
        let y = if custom {
            conv2d_train(x.clone(), w.clone(), bias, opts.clone())
        } else {
            conv2d(x.clone(), w.clone(), bias, opts.clone())
        };
        let dims = y.dims();
        let u = Tensor::<4>::from_data(
            TensorData::new(values(c.seed + 3, dims.iter().product()), dims),
            &d,
        );
        let g = (y.clone() * u).sum().backward();
        let gx = x.grad(&g).map(host);
        let gw = host(w.grad(&g).unwrap());
        let gb = b.grad(&g).map(host1);
        (host(y), gx, gw, gb)
    };
    let (y1, gx1, gw1, gb1) = run(true);
    let (y0, gx0, gw0, gb0) = run(false);
    close("output", &y1, &y0);
    assert_eq!(gx1.is_some(), c.x_grad, "input gradient presence");
    if let (Some(a), Some(b)) = (gx1, gx0) {
        close("input grad", &a, &b);
    }
    close("weight grad", &gw1, &gw0);
    assert_eq!(gb1.is_some(), c.bias, "bias gradient presence");
    if let (Some(a), Some(b)) = (gb1, gb0) {
        close("bias grad", &a, &b);
    }
}

fn fits(c: &Case) -> bool {
    c.h + c.pad[0].0 + c.pad[0].1 > c.dil * (c.k[0] - 1)
        && c.w + c.pad[1].0 + c.pad[1].1 > c.dil * (c.k[1] - 1)
}

fn case(asymmetric: bool) -> impl Strategy<Value = Case> {
    (
        (1usize..=3, 1usize..=9, 1usize..=3, 1usize..=3),
        (
            1usize..=11,
            1usize..=11,
            1usize..=2,
            [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
            1usize..=2,
        ),
        (any::<bool>(), prop::bool::weighted(0.8), any::<u64>()),
    )
        .prop_map(
            move |((n, c, kh, kw), (h, w, stride, p, dil), (bias, x_grad, seed))| Case {
                n,
                c,
                k: [kh, kw],
                h,
                w,
                stride,
                pad: if asymmetric {
                    [(p[0], p[1]), (p[2], p[3])]
                } else {
                    [(p[0], p[0]); 2]
                },
                dil,
                bias,
                x_grad,
                seed,
            },
        )
        .prop_filter("output must be at least 1x1", fits)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn matches_burn_conv2d(c in case(false)) {
        check(c);
    }

    #[test]
    fn matches_burn_conv2d_asymmetric_padding(c in case(true)) {
        check(c);
    }
}

#[test]
fn tiny_mobilenet_layer_shapes() {
    // tiny-mobilenet's 3x3 depthwise layers at a batch of 8: stride 1 and 2, padding 1, no bias
    // (ConvBn) and with one.
    for (stride, bias) in [(1, false), (2, false), (1, true), (2, true)] {
        check(Case {
            n: 8,
            c: 96,
            k: [3, 3],
            h: 14,
            w: 14,
            stride,
            pad: [(1, 1); 2],
            dil: 1,
            bias,
            x_grad: true,
            seed: 21 + stride as u64,
        });
    }
}
