//! The training convolution (`intq_train::conv::conv2d_train`, own backward) against burn's
//! `conv2d` under autodiff: output and input, weight and bias gradients on random geometries.

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use intq_train::conv::conv2d_train;
use proptest::prelude::*;

mod common;
use common::{close, host, values};

fn ad() -> Device {
    Device::flex().autodiff()
}

#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    cin: usize,
    cout: usize,
    k: [usize; 2],
    h: usize,
    w: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    bias: bool,
    x_grad: bool,
    seed: u64,
}

/// Runs one case through both convolutions with the loss sum(conv(x, w, b) * u).
fn check(c: Case) {
    let d = ad();
    let xs = [c.n, c.cin, c.h, c.w];
    let ws = [c.cout, c.cin, c.k[0], c.k[1]];
    let xv = values(c.seed, xs.iter().product());
    let wv = values(c.seed + 1, ws.iter().product());
    let bv = values(c.seed + 2, c.cout);
    let opts = ConvOptions::new([c.stride; 2], [c.pad; 2], [c.dil; 2], 1);
    let run = |custom: bool| {
        let mut x = Tensor::<4>::from_data(TensorData::new(xv.clone(), xs), &d);
        if c.x_grad {
            x = x.require_grad();
        }
        let w = Tensor::<4>::from_data(TensorData::new(wv.clone(), ws), &d).require_grad();
        let b = Tensor::<1>::from_data(TensorData::new(bv.clone(), [c.cout]), &d).require_grad();
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
        let gb = b.grad(&g).map(host);
        (host(y), gx, gw, gb)
    };
    let (y1, gx1, gw1, gb1) = run(true);
    let (y0, gx0, gw0, gb0) = run(false);
    close("output", &y1, &y0, 1e-5);
    assert_eq!(gx1.is_some(), c.x_grad, "input gradient presence");
    if let (Some(a), Some(b)) = (gx1, gx0) {
        close("input grad", &a, &b, 1e-5);
    }
    close("weight grad", &gw1, &gw0, 1e-5);
    assert_eq!(gb1.is_some(), c.bias, "bias gradient presence");
    if let (Some(a), Some(b)) = (gb1, gb0) {
        close("bias grad", &a, &b, 1e-5);
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=3, 1usize..=9, 1usize..=9, 1usize..=3, 1usize..=3),
        (1usize..=11, 1usize..=11, 1usize..=2, 0usize..=2, 1usize..=2),
        (any::<bool>(), prop::bool::weighted(0.8), any::<u64>()),
    )
        .prop_map(
            |((n, cin, cout, kh, kw), (h, w, stride, pad, dil), (bias, x_grad, seed))| Case {
                n,
                cin,
                cout,
                k: [kh, kw],
                h,
                w,
                stride,
                pad,
                dil,
                bias,
                x_grad,
                seed,
            },
        )
        .prop_filter("output must be at least 1x1", |c| {
            c.h + 2 * c.pad > c.dil * (c.k[0] - 1) && c.w + 2 * c.pad > c.dil * (c.k[1] - 1)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn matches_burn_conv2d(c in case()) {
        check(c);
    }
}

#[test]
fn five_by_five_strided_padded() {
    for (stride, pad, dil, h) in [(1, 2, 1, 9), (2, 2, 1, 13), (2, 1, 2, 15), (1, 0, 1, 5)] {
        check(Case {
            n: 3,
            cin: 4,
            cout: 6,
            k: [5, 5],
            h,
            w: h + 2,
            stride,
            pad,
            dil,
            bias: true,
            x_grad: true,
            seed: 7 + h as u64,
        });
    }
}

#[test]
fn small_cnn_layer_shape() {
    // The shape small-cnn trains at (a batch of 128 split in two shards), without bias as in
    // ConvBn.
    check(Case {
        n: 64,
        cin: 32,
        cout: 64,
        k: [3, 3],
        h: 14,
        w: 14,
        stride: 1,
        pad: 1,
        dil: 1,
        bias: false,
        x_grad: true,
        seed: 11,
    });
}
