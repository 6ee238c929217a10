//! TFLite-exact variants of two ops whose arithmetic in TensorFlow Lite's reference kernels (the
//! `BUILTIN_REF` op resolver) differs from docs/spec.md §4, so that imported `.tflite` models give
//! TFLite's bytes (docs/spec.md §6). Inference stays integer: the FC variant rescales an int32
//! accumulator by an f64 constant fixed at load time, and the Logistic variant's table is built
//! once at load.
//!
//! - Fully connected: TFLite's reference FC (uint8, int8 per tensor and per channel) rescales
//!   with `(int32) round((double) acc * M)`, `M = (double) S_in * (double) S_w / (double) S_out`,
//!   rounding half away from zero, instead of the fixed-point multiplier (docs/spec.md §6.1).
//! - Logistic: TFLite's 8-bit Logistic (reference and optimized alike) looks codes up in a
//!   256-entry table built in f32: `q -> clamp((int) (round(256 * 1 / (1 + expf(-S_in (q -
//!   Z_in)))) + Z_out))`, instead of the gemmlowp fixed-point routine (docs/spec.md §6.2).

use super::LogisticTable;
use crate::QElem;
use intq_quant::{DoubleMultiplier, QuantParams};

/// TFLite reference fully connected with real-valued rescaling `round((double) acc * M)`,
/// computed with integers only ([`DoubleMultiplier`]). `scales` holds `M` (one entry)
/// or `M[o]` per output feature, `weight_zero_points` one entry or one per output feature.
#[allow(clippy::too_many_arguments)]
pub fn fully_connected_real_scale<T: QElem>(
    input: &[T],
    batches: usize,
    depth: usize,
    input_zero_point: i32,
    weights: &[T],
    out_features: usize,
    weight_zero_points: &[i32],
    bias: Option<&[i32]>,
    scales: &[DoubleMultiplier],
    output_zero_point: i32,
    clamp: (i32, i32),
    output: &mut [T],
) {
    assert_eq!(
        input.len(),
        batches * depth,
        "fully_connected: input length"
    );
    assert_eq!(
        weights.len(),
        out_features * depth,
        "fully_connected: weights length"
    );
    assert_eq!(
        output.len(),
        batches * out_features,
        "fully_connected: output length"
    );
    assert!(
        matches!(scales.len(), 1) || scales.len() == out_features,
        "scales"
    );
    assert!(
        weight_zero_points.len() == 1 || weight_zero_points.len() == out_features,
        "weight zero points"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), out_features, "bias length");
    }
    let pick = |v: &[DoubleMultiplier], o: usize| if v.len() == 1 { v[0] } else { v[o] };
    for b in 0..batches {
        let row = &input[b * depth..(b + 1) * depth];
        for o in 0..out_features {
            let z_w = if weight_zero_points.len() == 1 {
                weight_zero_points[0]
            } else {
                weight_zero_points[o]
            };
            let w_row = &weights[o * depth..(o + 1) * depth];
            // TFLite accumulates in int32 (wrapping is its undefined overflow made defined).
            let mut acc: i32 = 0;
            for (x, w) in row.iter().zip(w_row) {
                let x = x.to_i32().wrapping_sub(input_zero_point);
                let w = w.to_i32().wrapping_sub(z_w);
                acc = acc.wrapping_add(x.wrapping_mul(w));
            }
            if let Some(bias) = bias {
                acc = acc.wrapping_add(bias[o]);
            }
            // TFLite's `round((double) acc * M)`, reproduced exactly with integers.
            let scaled = pick(scales, o).apply(acc);
            let q = scaled
                .saturating_add(output_zero_point)
                .clamp(clamp.0, clamp.1);
            output[b * out_features + o] = T::from_i32_saturating(q);
        }
    }
}

/// `M = (double) S_in * (double) S_w / (double) S_out`, as TFLite's reference FC computes it.
pub fn real_scale(s_in: f32, s_w: f32, s_out: f32) -> f64 {
    s_in as f64 * s_w as f64 / s_out as f64
}

/// TFLite's Logistic lookup table (`LUTPopulate` with `1 / (1 + exp(-x))` in f32) for an input
/// with parameters `input` and the fixed output `S = 1/256`, `Z = T::MIN`.
pub fn tflite_logistic_table<T: QElem>(input: QuantParams) -> LogisticTable<T> {
    let output_scale = 1.0f32 / 256.0;
    let inverse_scale = 1.0f32 / output_scale;
    let output_zero_point = T::MIN;
    let table = (T::MIN..=T::MAX)
        .map(|val| {
            let dequantized = input.scale * (val.wrapping_sub(input.zero_point)) as f32;
            let transformed = 1.0f32 / (1.0f32 + (-dequantized).exp());
            let rescaled = (transformed * inverse_scale).round();
            // C++'s float-to-int conversion truncates; `as` does too (and saturates NaN to 0).
            let quantized = (rescaled + output_zero_point as f32) as i32;
            T::from_i32_saturating(quantized.clamp(T::MIN, T::MAX))
        })
        .collect();
    LogisticTable { table }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lut_hand_cases() {
        // S = 1/16, Z = 0 (int8): q = 0 is x = 0 -> 0.5 -> 128 - 128 = 0; q = 127 is 7.9375 ->
        // 0.99964 * 256 = 255.9 -> 256 - 128 = 128, clamped to 127; q = -128 is -8 ->
        // 0.000335 * 256 = 0.086 -> 0 - 128.
        let t = tflite_logistic_table::<i8>(QuantParams::new(0.0625, 0).unwrap());
        assert_eq!(t.table[128], 0);
        assert_eq!(t.table[255], 127);
        assert_eq!(t.table[0], -128);
        // uint8, S = 0.1, Z = 128: q = 138 is x = 1 -> 0.731059 * 256 = 187.15 -> 187.
        let t = tflite_logistic_table::<u8>(QuantParams::new(0.1, 128).unwrap());
        assert_eq!(t.table[138], 187);
        assert_eq!(t.table[128], 128);
        // Monotone non-decreasing, as the logistic is.
        assert!(t.table.windows(2).all(|w| w[0] <= w[1]));
    }

    /// The fixed-point logistic (docs/spec.md §4.10) and TFLite's f32 table round the same real
    /// function, so they differ by at most one code, and only at a few codes per table.
    #[test]
    fn lut_and_fixed_point_logistic_differ_by_at_most_one_code() {
        let (mut differing, mut total) = (0usize, 0usize);
        let mut scale = 1.0f32 / 512.0;
        while scale < 1.0 {
            for zero_point in [0, 77, 128, 255] {
                let p = QuantParams::new(scale, zero_point).unwrap();
                let spec = LogisticTable::<u8>::new(p);
                let lut = tflite_logistic_table::<u8>(p);
                for (a, b) in spec.table.iter().zip(&lut.table) {
                    assert!(
                        (*a as i32 - *b as i32).abs() <= 1,
                        "S={scale} Z={zero_point}"
                    );
                    differing += (a != b) as usize;
                    total += 1;
                }
            }
            scale *= 1.1;
        }
        println!("logistic: {differing} of {total} uint8 table entries differ");
        assert!(differing * 20 < total, "{differing} of {total}");
    }

    #[test]
    fn real_scale_fc_rounds_half_away_from_zero() {
        // One input, one weight: acc = (x - 1) * (w - 0) + bias; M = 0.5 * 1 / 1.
        let run = |x: u8, bias: i32| {
            let mut out = [0u8; 1];
            fully_connected_real_scale(
                &[x],
                1,
                1,
                1,
                &[1u8],
                1,
                &[0],
                Some(&[bias]),
                &[DoubleMultiplier::from_f64(0.5).unwrap()],
                100,
                (0, 255),
                &mut out,
            );
            out[0]
        };
        assert_eq!(run(4, 0), 102); // 3 * 0.5 = 1.5 -> 2
        assert_eq!(run(1, -3), 98); // -1.5 -> -2
        assert_eq!(run(1, 5), 103); // 2.5 -> 3
        assert_eq!(run(255, 1000), 255); // clamps
    }
}
