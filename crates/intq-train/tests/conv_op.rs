//! The training convolution (`intq_train::conv::conv2d_train`, own backward) against burn's
//! `conv2d` under autodiff: output and input, weight and bias gradients on random geometries.

use burn::tensor::ops::ConvOptions;
use proptest::prelude::*;

mod common;
use common::conv_matches_burn;

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
    let xs = [c.n, c.cin, c.h, c.w];
    let ws = [c.cout, c.cin, c.k[0], c.k[1]];
    let opts = ConvOptions::new([c.stride; 2], [c.pad; 2], [c.dil; 2], 1);
    conv_matches_burn(xs, ws, opts, c.bias, c.x_grad, c.seed);
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

/// A 1x1, stride-1 window with only trailing padding (burn's asymmetric `(begin, end)`) is not
/// the image itself: the output is larger than the input, so the forward pass must not take it
/// for a pointwise convolution (which would read past the image). The first case is the smallest:
/// n 1, c 1, 1x1 kernel, 1x1 image, padding (0, 0), (0, 1).
#[test]
fn pointwise_window_with_trailing_padding() {
    for (cin, cout, h, w, pad) in [
        (1, 1, 1, 1, [(0, 0), (0, 1)]),
        (3, 4, 5, 4, [(0, 2), (0, 0)]),
        (2, 3, 3, 6, [(0, 1), (0, 1)]),
    ] {
        for (bias, x_grad) in [(false, true), (true, false)] {
            let opts = ConvOptions::new_with_padding([1, 1], pad, [1, 1], 1);
            conv_matches_burn([2, cin, h, w], [cout, cin, 1, 1], opts, bias, x_grad, 7);
        }
    }
}

/// The weight and input gradients are the same bits whatever rayon's thread count: a seeded run
/// repeats on any machine, and under mpirun, which binds each rank to one core.
#[test]
fn gradients_do_not_depend_on_the_thread_count() {
    use burn::tensor::{Device, Tensor, TensorData};
    use common::{host, values};
    use intq_train::conv::conv2d_train;
    let (xs, ws) = ([13, 3, 9, 9], [5, 3, 3, 3]);
    let grads = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let d = Device::flex().autodiff();
            let x = Tensor::<4>::from_data(TensorData::new(values(1, 13 * 3 * 81), xs), &d)
                .require_grad();
            let w =
                Tensor::<4>::from_data(TensorData::new(values(2, 5 * 27), ws), &d).require_grad();
            let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
            let y = conv2d_train(x.clone(), w.clone(), None, opts);
            let dims = y.dims();
            let u =
                Tensor::<4>::from_data(TensorData::new(values(3, dims.iter().product()), dims), &d);
            let g = (y * u).sum().backward();
            let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            (
                bits(host(w.grad(&g).unwrap())),
                bits(host(x.grad(&g).unwrap())),
            )
        })
    };
    let one = grads(1);
    for threads in [2, 3, 7] {
        assert!(grads(threads) == one, "{threads} threads differ from 1");
    }
}
