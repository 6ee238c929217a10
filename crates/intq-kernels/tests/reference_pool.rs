//! Tests of the reference average and max pooling kernels: hand-computed windows (clipped at the
//! borders, ties rounding away from zero, fused clamps), an f64 float model on random geometry in
//! both integer encodings (within 1 LSB for the average, exact for the maximum).

mod reference_util;

use intq_kernels::reference::{average_pool, max_pool};
use intq_kernels::{Padding, PaddingValues, PoolParams, QElem};
use intq_quant::QuantParams;
use reference_util::{codes, qp, real, requantize_f64, widen, Rng};

fn params(
    filter: (usize, usize),
    stride: (usize, usize),
    padding: PaddingValues,
    clamp: (i32, i32),
) -> PoolParams {
    PoolParams {
        filter_h: filter.0,
        filter_w: filter.1,
        stride_h: stride.0,
        stride_w: stride.1,
        padding,
        clamp_min: clamp.0,
        clamp_max: clamp.1,
    }
}

/// A 3x3 single-channel image, a 2x2 filter at stride 1 with SAME padding: 3x3 output, the
/// extra row and column of padding at the bottom/right.
fn same_2x2_on_3x3(clamp: (i32, i32)) -> PoolParams {
    let ((oh, ow), pad) = Padding::Same
        .resolve((3, 3), (2, 2), (1, 1), (1, 1))
        .unwrap();
    assert_eq!((oh, ow), (3, 3));
    assert_eq!(
        pad,
        PaddingValues {
            top: 0,
            bottom: 1,
            left: 0,
            right: 1
        }
    );
    params((2, 2), (1, 1), pad, clamp)
}

const IMAGE: [i32; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 10];

#[test]
fn average_pool_hand_case_clips_windows() {
    // [1 2 3; 4 5 6; 7 8 10]. Full windows: (1+2+4+5)/4 = 3, (2+3+5+6)/4 = 4,
    // (4+5+7+8)/4 = 6, (5+6+8+10)/4 = 7.25 -> 7. Right column windows hold 2 pixels:
    // (3+6)/2 = 4.5 -> 5, (6+10)/2 = 8. Bottom row: (7+8)/2 = 7.5 -> 8, (8+10)/2 = 9.
    // Corner: 10 alone.
    let p = same_2x2_on_3x3((0, 255));
    let mut out = [0u8; 9];
    average_pool(
        &codes::<u8>(&IMAGE),
        [1, 3, 3, 1],
        &p,
        &mut out,
        [1, 3, 3, 1],
    );
    assert_eq!(out, [3, 4, 5, 6, 7, 8, 8, 9, 10]);
}

#[test]
fn average_pool_negative_ties_round_away_from_zero() {
    // int8, 1x1x4 input, filter 1x2 stride 2: (-3 + -2)/2 = -2.5 -> -3 (TFLite: (-5 - 1)/2);
    // (-128 + 127)/2 = -0.5 -> -1.
    let p = params((1, 2), (1, 2), PaddingValues::default(), (-128, 127));
    let mut out = [0i8; 2];
    average_pool(
        &codes::<i8>(&[-3, -2, -128, 127]),
        [1, 1, 4, 1],
        &p,
        &mut out,
        [1, 1, 2, 1],
    );
    assert_eq!(out, [-3, -1]);
    // Positive ties go up: (1 + 2)/2 = 1.5 -> 2.
    average_pool(
        &codes::<i8>(&[1, 2, 0, 0]),
        [1, 1, 4, 1],
        &p,
        &mut out,
        [1, 1, 2, 1],
    );
    assert_eq!(out, [2, 0]);
}

#[test]
fn average_pool_applies_the_fused_clamp() {
    let p = same_2x2_on_3x3((4, 8));
    let mut out = [0u8; 9];
    average_pool(
        &codes::<u8>(&IMAGE),
        [1, 3, 3, 1],
        &p,
        &mut out,
        [1, 3, 3, 1],
    );
    assert_eq!(out, [4, 4, 5, 6, 7, 8, 8, 8, 8]);
}

#[test]
fn max_pool_hand_case() {
    // Same windows: maxima 5 6 6 / 8 10 10 / 8 10 10.
    let p = same_2x2_on_3x3((0, 255));
    let mut out = [0u8; 9];
    max_pool(
        &codes::<u8>(&IMAGE),
        [1, 3, 3, 1],
        &p,
        &mut out,
        [1, 3, 3, 1],
    );
    assert_eq!(out, [5, 6, 6, 8, 10, 10, 8, 10, 10]);
    // With a ReLU6-style clamp [2, 7].
    let p = same_2x2_on_3x3((2, 7));
    max_pool(
        &codes::<u8>(&IMAGE),
        [1, 3, 3, 1],
        &p,
        &mut out,
        [1, 3, 3, 1],
    );
    assert_eq!(out, [5, 6, 6, 7, 7, 7, 7, 7, 7]);
}

#[test]
fn max_pool_of_all_minimum_codes_is_the_minimum() {
    // Every code is -128: the maximum must not come from some larger initial value.
    let p = params((2, 2), (2, 2), PaddingValues::default(), (-128, 127));
    let mut out = [0i8; 2];
    max_pool(&[-128i8; 8], [1, 2, 2, 2], &p, &mut out, [1, 1, 1, 2]);
    assert_eq!(out, [-128, -128]);
}

#[test]
fn pools_keep_batches_and_channels_apart() {
    // 2 batches, 1x2 pixels, 2 channels; a 1x2 filter pools each (batch, channel) pair.
    // Batch 0: ch0 {1, 3}, ch1 {100, 200}; batch 1: ch0 {7, 8}, ch1 {0, 255}.
    let input = codes::<u8>(&[1, 100, 3, 200, 7, 0, 8, 255]);
    let p = params((1, 2), (1, 1), PaddingValues::default(), (0, 255));
    let mut out = [0u8; 4];
    average_pool(&input, [2, 1, 2, 2], &p, &mut out, [2, 1, 1, 2]);
    // (1+3)/2 = 2, 300/2 = 150, 15/2 = 7.5 -> 8, 255/2 = 127.5 -> 128.
    assert_eq!(out, [2, 150, 8, 128]);
    max_pool(&input, [2, 1, 2, 2], &p, &mut out, [2, 1, 1, 2]);
    assert_eq!(out, [3, 200, 8, 255]);
}

#[test]
#[should_panic(expected = "entirely in the padding")]
fn average_pool_rejects_a_window_without_pixels() {
    // Explicit padding of 2 on the left with a 2-wide filter: the first window is all padding.
    let pad = PaddingValues {
        top: 0,
        bottom: 0,
        left: 2,
        right: 0,
    };
    let p = params((1, 2), (1, 1), pad, (0, 255));
    let mut out = [0u8; 3];
    average_pool(&[1u8, 2], [1, 1, 2, 1], &p, &mut out, [1, 1, 3, 1]);
}

/// Per-pixel windows of the float model: the real values of the in-bounds taps.
fn window_reals<T: QElem>(
    input: &[T],
    shape: [usize; 4],
    p: &PoolParams,
    qp: QuantParams,
    (b, oy, ox, c): (usize, usize, usize, usize),
) -> Vec<f64> {
    let [_, h, w, d] = shape;
    let mut v = Vec::new();
    for fy in 0..p.filter_h {
        for fx in 0..p.filter_w {
            let y = (oy * p.stride_h + fy) as isize - p.padding.top as isize;
            let x = (ox * p.stride_w + fx) as isize - p.padding.left as isize;
            if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w {
                let q = input[((b * h + y as usize) * w + x as usize) * d + c].to_i32();
                v.push(real(q, qp));
            }
        }
    }
    v
}

fn pools_against_float_model<T: QElem>(seed: u64) {
    let mut rng = Rng::new(seed);
    for _ in 0..150 {
        let shape = [
            rng.size(1, 2),
            rng.size(1, 7),
            rng.size(1, 7),
            rng.size(1, 3),
        ];
        let filter = (rng.size(1, 4), rng.size(1, 4));
        let stride = (rng.size(1, 3), rng.size(1, 3));
        let padding = if rng.int(0, 1) == 0 {
            Padding::Same
        } else {
            Padding::Valid
        };
        let Some(((oh, ow), pad)) = padding.resolve((shape[1], shape[2]), filter, stride, (1, 1))
        else {
            continue;
        };
        let q = qp(rng.log_scale(-8.0, 0.0), rng.zero_point::<T>());
        // Sometimes a fused ReLU (clamp at Z), otherwise the type's limits.
        let clamp = if rng.int(0, 2) == 0 {
            (q.zero_point, T::MAX)
        } else {
            (T::MIN, T::MAX)
        };
        let p = params(filter, stride, pad, clamp);
        let input: Vec<T> = rng.codes(shape.iter().product());
        let out_shape = [shape[0], oh, ow, shape[3]];
        let mut avg = vec![T::default(); out_shape.iter().product()];
        let mut max = avg.clone();
        average_pool(&input, shape, &p, &mut avg, out_shape);
        max_pool(&input, shape, &p, &mut max, out_shape);
        for b in 0..shape[0] {
            for oy in 0..oh {
                for ox in 0..ow {
                    for c in 0..shape[3] {
                        let i = ((b * oh + oy) * ow + ox) * shape[3] + c;
                        let reals = window_reals(&input, shape, &p, q, (b, oy, ox, c));
                        let mean = reals.iter().sum::<f64>() / reals.len() as f64;
                        let peak = reals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let want_avg = requantize_f64(mean, q, clamp.0, clamp.1);
                        let want_max = requantize_f64(peak, q, clamp.0, clamp.1);
                        let got_avg = avg[i].to_i32();
                        assert!(
                            (got_avg - want_avg).abs() <= 1,
                            "avg at {i}: {got_avg} vs {want_avg} ({reals:?})"
                        );
                        assert_eq!(max[i].to_i32(), want_max, "max at {i}");
                    }
                }
            }
        }
    }
}

#[test]
fn pools_agree_with_float_model_u8() {
    pools_against_float_model::<u8>(31);
}

#[test]
fn pools_agree_with_float_model_i8() {
    pools_against_float_model::<i8>(32);
}

#[test]
fn average_of_a_constant_window_is_exact() {
    // Whatever the geometry, averaging equal codes returns them unchanged (no rounding).
    let mut rng = Rng::new(33);
    for _ in 0..50 {
        let v = i32::from(rng.code::<i8>());
        let p = params(
            (rng.size(1, 3), rng.size(1, 3)),
            (1, 1),
            PaddingValues::default(),
            (-128, 127),
        );
        let shape = [1, 4, 4, 1];
        let out_shape = [1, 5 - p.filter_h, 5 - p.filter_w, 1];
        let mut out = vec![0i8; out_shape.iter().product()];
        average_pool(&[v as i8; 16], shape, &p, &mut out, out_shape);
        assert!(widen(&out).iter().all(|&o| o == v), "{v}");
    }
}
