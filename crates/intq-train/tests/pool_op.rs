//! The training max pool (`intq_train::pool::max_pool2d_train`, own backward) against burn's
//! `max_pool2d` under autodiff: output and input gradient bit for bit, ties included.

use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor, TensorData};
use intq_train::pool::max_pool2d_train;
use proptest::prelude::*;

mod common;
use common::host;

/// Values on a coarse grid (many ties, as after a ReLU), a quarter of them clamped to 0.
fn values(seed: u64, n: usize) -> Vec<f32> {
    common::values(seed, n)
        .into_iter()
        .map(|v| (((v + 1.0) * 32.0).floor() - 16.0).max(0.0) / 4.0)
        .collect()
}

/// Both pools with the loss `sum(pool(x) * u)`; outputs and gradients must be identical.
fn check(shape: [usize; 4], [k, s, p]: [usize; 3], seed: u64) {
    let d = Device::flex().autodiff();
    let xv = values(seed, shape.iter().product());
    let run = |ours: bool| {
        let x = Tensor::<4>::from_data(TensorData::new(xv.clone(), shape), &d).require_grad();
        let y = if ours {
            max_pool2d_train(x.clone(), k, s, p)
        } else {
            let o = MaxPoolOptions::new([k, k])
                .with_stride([s, s])
                .with_padding([p, p]);
            max_pool2d(x.clone(), o)
        };
        let dims = y.dims();
        let u: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|i| (i % 7) as f32 - 3.0)
            .collect();
        let u = Tensor::<4>::from_data(TensorData::new(u, dims), &d);
        let g = (y.clone() * u).sum().backward();
        (dims, host(y), host(x.grad(&g).unwrap()))
    };
    let (dims, y1, g1) = run(true);
    let (dims0, y0, g0) = run(false);
    assert_eq!(dims, dims0, "output shape");
    assert_eq!(y1, y0, "output");
    assert_eq!(g1, g0, "input gradient");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn matches_burn_max_pool2d(
        (n, c, h, w) in (1usize..=2, 1usize..=3, 1usize..=12, 1usize..=12),
        (k, s) in (1usize..=4, 1usize..=3),
        p in 0usize..=2,
        seed in any::<u64>(),
    ) {
        prop_assume!(2 * p <= k && h + 2 * p >= k && w + 2 * p >= k);
        check([n, c, h, w], [k, s, p], seed);
    }
}

/// small-cnn's pools (2x2, stride 2) on its shapes, and a padded 3x3 stride-2 pool.
#[test]
fn model_sized_pools() {
    check([8, 32, 28, 28], [2, 2, 0], 1);
    check([8, 64, 14, 14], [2, 2, 0], 2);
    check([4, 16, 15, 15], [3, 2, 1], 3);
}
