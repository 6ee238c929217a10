//! The training convolution's depthwise path (`intq_train::conv::conv2d_train` with groups ==
//! in == out channels, `intq_train::depthwise`) against burn's `conv2d` under autodiff: output
//! and input, weight and bias gradients on random geometries and tiny-mobilenet's layer shapes.

use burn::tensor::ops::ConvOptions;
use proptest::prelude::*;

mod common;
use common::conv_matches_burn;

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
    let xs = [c.n, c.c, c.h, c.w];
    let ws = [c.c, 1, c.k[0], c.k[1]];
    let opts = ConvOptions::new_with_padding([c.stride; 2], c.pad, [c.dil; 2], c.c);
    conv_matches_burn(xs, ws, opts, c.bias, c.x_grad, c.seed);
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
            1usize..=3,
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
