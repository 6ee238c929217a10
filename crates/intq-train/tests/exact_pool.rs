//! Exact evaluation of an average pool (docs/spec.md §2.6) is the engine's AVERAGE_POOL_2D on the
//! codes (§4.7): windows clipped to the picture, the code sum divided by the tap count with
//! rounding half away from zero. Averaging the real values in f64 and rounding that is not the
//! same at ties: a clipped window of 6 taps whose codes sum to an odd multiple of 3 is a tie in
//! integers, but its f64 average need not be the half-integer exactly.

use burn::tensor::{Device, Tensor, TensorData};
use intq_kernels::{PaddingValues, PoolParams};
use intq_quant::{QScheme, QuantParams};
use intq_train::graph_net::WindowPool;
use intq_train::layers::{Act, Ctx, QuantCfg};

#[test]
fn exact_average_pool_equals_the_engine_on_clipped_windows_and_ties() {
    let scheme = QScheme::new(8, true, false, false).unwrap();
    let q = QuantCfg::int8(8, 8, true).unwrap();
    let p = QuantParams {
        scale: 0.0371,
        zero_point: -7,
    };
    // 3x3 windows, stride 2, one row and column of padding before and, as ceil_mode adds, two
    // after: border windows of 4 and 6 taps, where ties are reachable.
    let pool = WindowPool {
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 2,
        stride_w: 2,
        pad_top: 1,
        pad_left: 1,
        pad_bottom: 2,
        pad_right: 2,
        max: false,
    };
    let (c, h, w) = (2, 8, 8);
    let (oh, ow) = ((h + 3 - 3) / 2 + 1, (w + 3 - 3) / 2 + 1);
    let mut rng = intq_testutil::TestRng::new(0x9001);
    let mut ties = 0;
    for _ in 0..200 {
        // Codes from a narrow range, so that ties are frequent.
        let codes: Vec<i8> = (0..c * h * w).map(|_| rng.int(-40i8, 30)).collect();
        let reals: Vec<f64> = codes
            .iter()
            .map(|&k| p.scale as f64 * (k as i32 - p.zero_point) as f64)
            .collect();
        let x = Tensor::<4>::from_data(
            TensorData::new(reals, [1, c, h, w]),
            (&Device::flex(), burn::tensor::DType::F64),
        );
        let y = pool.forward(Act { x, q: Some(p) }, &Ctx::eval_exact(q));
        assert_eq!(y.q, Some(p));
        let got: Vec<i32> =
            y.x.into_data()
                .convert::<f64>()
                .try_into_vec::<f64>()
                .unwrap()
                .into_iter()
                .map(|v| (v / p.scale as f64).round() as i32 + p.zero_point)
                .collect();

        // The engine's reference kernel on the same codes, NHWC.
        let nhwc: Vec<i8> = (0..h * w * c)
            .map(|k| codes[(k % c) * h * w + k / c])
            .collect();
        let params = PoolParams {
            filter_h: 3,
            filter_w: 3,
            stride_h: 2,
            stride_w: 2,
            padding: PaddingValues {
                top: 1,
                bottom: 2,
                left: 1,
                right: 2,
            },
            clamp_min: scheme.qmin(),
            clamp_max: scheme.qmax(),
        };
        let mut want = vec![0i8; oh * ow * c];
        intq_kernels::reference::average_pool(
            &nhwc,
            [1, h, w, c],
            &params,
            &mut want,
            [1, oh, ow, c],
        );
        for (k, &g) in got.iter().enumerate() {
            let (ch, pos) = (k / (oh * ow), k % (oh * ow));
            assert_eq!(g, want[pos * c + ch] as i32, "output {k}");
        }

        // Count the ties the batch held: windows whose code sum is an odd multiple of half
        // their tap count.
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let rows = (oy * 2).saturating_sub(1)..(oy * 2 + 2).min(h);
                    let cols = (ox * 2).saturating_sub(1)..(ox * 2 + 2).min(w);
                    let n = (rows.len() * cols.len()) as i32;
                    let sum: i32 = rows
                        .flat_map(|r| cols.clone().map(move |cc| (r, cc)))
                        .map(|(r, cc)| codes[ch * h * w + r * w + cc] as i32)
                        .sum();
                    ties += (n % 2 == 0 && (2 * sum) % n == 0 && (2 * sum / n) % 2 != 0) as usize;
                }
            }
        }
    }
    assert!(ties > 50, "{ties} ties");
}
