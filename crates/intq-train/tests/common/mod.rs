//! Helpers shared by the tests that compare intq-train's own autodiff ops with burn's.
#![allow(dead_code)]

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use intq_train::conv::conv2d_train;

/// A tensor's values on the host.
pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// Deterministic values in [-1, 1) from a seed, so a failing case can be replayed.
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    intq_testutil::floats(seed, n, -1.0, 1.0)
}

/// `got` equals `want` within `tol` of the largest magnitude in `want` (at least 1).
pub fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}[{i}]: got {g}, want {w} (scale {scale})"
        );
    }
}

/// `conv2d_train` against burn's `conv2d` with the loss `sum(conv(x, w, b) * u)`: output and the
/// input (when `x_grad`), weight and bias (when `bias`) gradients, within 1e-5 of the largest.
pub fn conv_matches_burn(
    xs: [usize; 4],
    ws: [usize; 4],
    opts: ConvOptions<2>,
    bias: bool,
    x_grad: bool,
    seed: u64,
) {
    let d = Device::flex().autodiff();
    let xv = values(seed, xs.iter().product());
    let wv = values(seed + 1, ws.iter().product());
    let bv = values(seed + 2, ws[0]);
    let run = |custom: bool| {
        let mut x = Tensor::<4>::from_data(TensorData::new(xv.clone(), xs), &d);
        if x_grad {
            x = x.require_grad();
        }
        let w = Tensor::<4>::from_data(TensorData::new(wv.clone(), ws), &d).require_grad();
        let b = Tensor::<1>::from_data(TensorData::new(bv.clone(), [ws[0]]), &d).require_grad();
        let bias = bias.then(|| b.clone());
        let y = if custom {
            conv2d_train(x.clone(), w.clone(), bias, opts.clone())
        } else {
            conv2d(x.clone(), w.clone(), bias, opts.clone())
        };
        let dims = y.dims();
        let u = Tensor::<4>::from_data(
            TensorData::new(values(seed + 3, dims.iter().product()), dims),
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
    assert_eq!(gx1.is_some(), x_grad, "input gradient presence");
    if let (Some(a), Some(b)) = (gx1, gx0) {
        close("input grad", &a, &b, 1e-5);
    }
    close("weight grad", &gw1, &gw0, 1e-5);
    assert_eq!(gb1.is_some(), bias, "bias gradient presence");
    if let (Some(a), Some(b)) = (gb1, gb0) {
        close("bias grad", &a, &b, 1e-5);
    }
}
