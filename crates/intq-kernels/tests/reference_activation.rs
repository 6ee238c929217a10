//! Tests of the reference Logistic and Softmax kernels (TFLite's fixed-point routines): hand
//! derivations of the Prepare-time parameters and of small outputs, and an f64 float model
//! within 1 LSB on random inputs and parameters, for uint8 and int8.

mod reference_util;

use intq_kernels::reference::{logistic, softmax, LogisticTable, SoftmaxParams};
use intq_kernels::QElem;
use reference_util::{codes, qp, real, widen, Rng};

// ---------------------------------------------------------------------------------------------
// Logistic

/// The u8 table of S = 1/16, Z = 128, derived by hand:
/// Prepare: S * 2^27 = 2^23, so m0 = 2^30 and left shift 24; radius = floor(15 * 2^27 / 2^24)
/// = 120. Code 144 is 16 steps = 1.0: SRDHM(16 << 24, 2^30) = 2^27, 1.0 in Q4.27; logistic(1)
/// = 0.7310586, times 256 = 187.15 -> 187. Code 112 (-1.0) gives 256 - 187.15 = 68.85 -> 69.
/// Code 247 (119 steps, 7.4375) gives 0.99941 * 256 = 255.85 -> 256 -> 255; code 9 gives 0.15
/// -> 0. Codes 248 and 8 are at the radius and saturate without computing.
#[test]
fn logistic_u8_hand_cases() {
    let t = LogisticTable::<u8>::new(qp(0.0625, 128));
    let cases = [
        (128, 128),
        (144, 187),
        (112, 69),
        (247, 255),
        (248, 255),
        (255, 255),
        (9, 0),
        (8, 0),
        (0, 0),
    ];
    for (q, want) in cases {
        assert_eq!(t.table[q], want, "code {q}");
    }
}

#[test]
fn logistic_i8_hand_cases() {
    // The same real function with Z = 0: the u8 values above minus 128 (output Z = -128).
    let t = LogisticTable::<i8>::new(qp(0.0625, 0));
    let at = |q: i32| t.table[(q + 128) as usize] as i32;
    let cases = [
        (0, 0),
        (16, 59),
        (-16, -59),
        (119, 127),
        (120, 127),
        (-119, -128),
        (-120, -128),
        (-128, -128),
        (127, 127),
    ];
    for (q, want) in cases {
        assert_eq!(at(q), want, "code {q}");
    }
}

#[test]
fn logistic_kernel_looks_codes_up() {
    let t = LogisticTable::<u8>::new(qp(0.0625, 128));
    let input = codes::<u8>(&[128, 144, 112, 0, 255]);
    let mut out = [0u8; 5];
    logistic(&input, &t, &mut out);
    assert_eq!(out, [128, 187, 69, 0, 255]);
}

fn sigmoid_code(x: f64, qmin: i32, qmax: i32) -> i32 {
    let v = (256.0 / (1.0 + (-x).exp())).round() as i32 + qmin;
    v.clamp(qmin, qmax)
}

fn logistic_float_model<T: QElem>(seed: u64) {
    let mut rng = Rng::new(seed);
    for _ in 0..300 {
        let p = qp(rng.log_scale(-10.0, 2.0), rng.zero_point::<T>());
        let t = LogisticTable::<T>::new(p);
        let mut previous = T::MIN;
        for q in T::MIN..=T::MAX {
            let got = t.table[(q - T::MIN) as usize].to_i32();
            let want = sigmoid_code(real(q, p), T::MIN, T::MAX);
            assert!((got - want).abs() <= 1, "q={q} {p:?}: {got} vs {want}");
            assert!(got >= previous, "not monotonic at q={q} {p:?}");
            previous = got;
        }
    }
}

#[test]
fn logistic_within_one_lsb_of_float_model_u8() {
    logistic_float_model::<u8>(41);
}

#[test]
fn logistic_within_one_lsb_of_float_model_i8() {
    logistic_float_model::<i8>(42);
}

#[test]
fn logistic_u8_and_i8_tables_agree_below_scale_2() {
    // Both encodings run the same routine on q - Z_in; only the output offset differs, and, for
    // S >= 2 where the radius is tiny, whether the code exactly at the radius saturates.
    let mut rng = Rng::new(43);
    for _ in 0..100 {
        let s = rng.log_scale(-10.0, 1.0);
        let z = rng.zero_point::<u8>();
        let tu = LogisticTable::<u8>::new(qp(s, z));
        let ti = LogisticTable::<i8>::new(qp(s, z - 128));
        let shifted: Vec<i32> = widen(&tu.table).iter().map(|v| v - 128).collect();
        assert_eq!(widen(&ti.table), shifted, "S={s} Z={z}");
    }
}

#[test]
fn logistic_of_tiny_and_huge_scales() {
    // S <= 2^-27: every real input is within 2^-19 of 0, so every code is logistic(0) = 1/2.
    let t = LogisticTable::<u8>::new(qp(2f32.powi(-30), 0));
    assert!(t.table.iter().all(|&v| v == 128));
    // S = 8: left shift 31, TFLite's radius floor(15/16) = 0. uint8 saturates everything but
    // Z itself, which is logistic(0) = 128.
    let t = LogisticTable::<u8>::new(qp(8.0, 100));
    assert!(t.table[..100].iter().all(|&v| v == 0));
    assert_eq!(t.table[100], 128);
    assert!(t.table[101..].iter().all(|&v| v == 255));
    // int8's `<= -radius` test catches Z itself too: TFLite's int8 kernel outputs -128 there.
    let t = LogisticTable::<i8>::new(qp(8.0, 0));
    assert!(t.table[..=128].iter().all(|&v| v == -128));
    assert!(t.table[129..].iter().all(|&v| v == 127));
    // S = 32 is past TFLite's domain (shift 33); the table continues S = 8's pattern.
    let t = LogisticTable::<u8>::new(qp(32.0, 7));
    assert_eq!((t.table[6], t.table[7], t.table[8]), (0, 128, 255));
}

/// Codes 60..180 of the u8 table for S = 0.1f, Z = 128, from a C++ transcription of TFLite's
/// Prepare (QuantizeMultiplierGreaterThanOne: m0 = 1717986944, shift 24; radius 120) and uint8
/// Logistic with gemmlowp's fixed point; codes below 60 are 0 and above 179 are 255 there too.
#[test]
fn logistic_u8_bit_exact_against_tflite_transcription() {
    const MIDDLE: [u8; 120] = [
        0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5,
        6, 6, 7, 8, 8, 9, 10, 11, 12, 13, 15, 16, 18, 19, 21, 23, 26, 28, 31, 33, 36, 40, 43, 47,
        51, 55, 59, 64, 69, 74, 79, 85, 91, 97, 103, 109, 115, 122, 128, 134, 141, 147, 153, 159,
        165, 171, 177, 182, 187, 192, 197, 201, 205, 209, 213, 216, 220, 223, 225, 228, 230, 233,
        235, 237, 238, 240, 241, 243, 244, 245, 246, 247, 248, 248, 249, 250, 250, 251, 251, 252,
        252, 253, 253, 253, 253, 254, 254, 254, 254, 254,
    ];
    let t = LogisticTable::<u8>::new(qp(0.1, 128));
    assert!(t.table[..60].iter().all(|&v| v == 0));
    assert_eq!(t.table[60..180], MIDDLE);
    assert!(t.table[180..].iter().all(|&v| v == 255));
}

// ---------------------------------------------------------------------------------------------
// Softmax

#[test]
fn softmax_params_hand_cases() {
    // S = 1/16, beta = 1: 2^-4 * 2^26 = 2^22 -> m0 = 2^30, shift 23;
    // diff_min = -floor(31 * 2^26 / 2^23) = -248.
    let p = SoftmaxParams::new(0.0625, 1.0).unwrap();
    assert_eq!(
        (p.input_multiplier, p.input_left_shift, p.diff_min),
        (1 << 30, 23, -248)
    );
    // S = 0.1f, beta = 1: 0.1f * 2^26 = 6710886.5 (0.1f is 0.100000001490116) = 0.8 * 2^23, so
    // shift 23 and m0 = round(0.800000011920929 * 2^31) = 1717986944.
    let p = SoftmaxParams::new(0.1, 1.0).unwrap();
    assert_eq!(
        (p.input_multiplier, p.input_left_shift, p.diff_min),
        (1_717_986_944, 23, -248)
    );
    // beta * S * 2^26 = 100 * 2^26 exceeds 2^31 - 1: capped there (m0 = 2^31 - 1, shift 31),
    // and the radius floor(31 / 32) = 0 keeps only the row maximum.
    let p = SoftmaxParams::new(1.0, 100.0).unwrap();
    assert_eq!(
        (p.input_multiplier, p.input_left_shift, p.diff_min),
        (i32::MAX, 31, 0)
    );
}

#[test]
fn softmax_params_reject_what_tflite_rejects() {
    // beta * S * 2^26 = 0.5 is not above 1: TFLite's QuantizeMultiplierGreaterThanOne aborts.
    assert!(SoftmaxParams::new(2f32.powi(-27), 1.0).is_err());
    assert!(SoftmaxParams::new(2f32.powi(-26), 1.0).is_err()); // exactly 1
    assert!(SoftmaxParams::new(0.1, 0.0).is_err());
    assert!(SoftmaxParams::new(0.1, -1.0).is_err());
    assert!(SoftmaxParams::new(0.1, f32::NAN).is_err());
    assert!(SoftmaxParams::new(0.0, 1.0).is_err());
    assert!(SoftmaxParams::new(f32::INFINITY, 1.0).is_err());
}

fn run_softmax<T: QElem>(row: &[i32], p: &SoftmaxParams) -> Vec<i32> {
    let input = codes::<T>(row);
    let mut out = vec![T::default(); row.len()];
    softmax(&input, 1, row.len(), p, &mut out);
    widen(&out)
}

#[test]
fn softmax_hand_cases() {
    let p = SoftmaxParams::new(0.0625, 1.0).unwrap();
    // Two equal codes: the Q12.19 sum is 2 * 2^19 = 2^20, one bit over unit, the reciprocal
    // mantissa 1/(1+0) saturates to 2^31 - 1; SRDHM(2^31 - 1, 2^31 - 1) = 2^31 - 2, shifted right
    // by 1 + 31 - 8 = 24: 127.99... -> 128, i.e. 0.5.
    assert_eq!(run_softmax::<u8>(&[77, 77], &p), [128, 128]);
    assert_eq!(run_softmax::<i8>(&[-51, -51], &p), [0, 0]);
    // Four equal codes: sum 2^21, shift 25: 64 each.
    assert_eq!(run_softmax::<u8>(&[3, 3, 3, 3], &p), [64, 64, 64, 64]);
    // Codes 16 apart are 1.0 apart: [1/(1+e^-1), e^-1/(1+e^-1)] = [0.7311, 0.2689], times 256
    // 187.15 and 68.85 -> 187, 69 (the fixed-point errors, ~1e-7, are far from the ties).
    assert_eq!(run_softmax::<u8>(&[200, 184], &p), [187, 69]);
    assert_eq!(run_softmax::<i8>(&[72, 56], &p), [59, -59]);
    // A lone maximum is 1.0 = 256 -> 255; 249 codes below it is under diff_min (-248) and is
    // skipped (exactly the zero code), 248 below is included but exp(-15.5) rounds to 0.
    assert_eq!(run_softmax::<u8>(&[255, 6, 7], &p), [255, 0, 0]);
    assert_eq!(run_softmax::<i8>(&[127, -122, -121], &p), [127, -128, -128]);
    // Capped multiplier (beta * S = 100): only the maxima count.
    let capped = SoftmaxParams::new(1.0, 100.0).unwrap();
    assert_eq!(run_softmax::<u8>(&[5, 4, 5], &capped), [128, 0, 128]);
}

#[test]
fn softmax_rows_are_independent() {
    let p = SoftmaxParams::new(0.0625, 1.0).unwrap();
    let input = codes::<u8>(&[200, 184, 77, 77, 3, 3]);
    let mut out = [0u8; 6];
    softmax(&input, 3, 2, &p, &mut out);
    assert_eq!(out, [187, 69, 128, 128, 128, 128]);
}

#[test]
fn softmax_of_long_uniform_rows() {
    let p = SoftmaxParams::new(0.0625, 1.0).unwrap();
    // 300 equal codes: sum 300 * 2^19 has 4 leading zeros, 8 bits over unit, shift 31; the
    // mantissa is 1/1.171875 = 0.8533 (300 = 1.171875 * 256) -> rounds to code 1 = 256/300.
    assert!(run_softmax::<u8>(&[9; 300], &p).iter().all(|&v| v == 1));
    // 600 equal codes: the shift would be 32 (TFLite's is undefined there); 256/600 = 0.43 of
    // an LSB, so the correctly rounded code 0.
    assert!(run_softmax::<u8>(&[9; 600], &p).iter().all(|&v| v == 0));
    // 5000: the Q12.19 sum would overflow in TFLite; here it saturates, and 0 again.
    assert!(run_softmax::<i8>(&[9; 5000], &p).iter().all(|&v| v == -128));
}

fn softmax_float_model<T: QElem>(seed: u64) {
    let mut rng = Rng::new(seed);
    let mut cases = 0;
    while cases < 400 {
        let s = rng.log_scale(-9.0, 1.0);
        let beta = if rng.int(0, 1) == 0 {
            1.0
        } else {
            (0.2 + 3.0 * rng.unit()) as f32
        };
        let Ok(p) = SoftmaxParams::new(s, beta) else {
            continue;
        };
        cases += 1;
        let depth = rng.size(1, 40);
        let spread = rng.int(0, T::MAX - T::MIN);
        let lo = rng.int(T::MIN, T::MAX - spread);
        let row: Vec<i32> = (0..depth).map(|_| rng.int(lo, lo + spread)).collect();
        let got = run_softmax::<T>(&row, &p);
        let max = *row.iter().max().unwrap();
        let exps: Vec<f64> = row
            .iter()
            .map(|&q| (beta as f64 * s as f64 * (q - max) as f64).exp())
            .collect();
        let sum: f64 = exps.iter().sum();
        for (i, e) in exps.iter().enumerate() {
            let want = ((e / sum * 256.0).round() as i32 + T::MIN).clamp(T::MIN, T::MAX);
            assert!(
                (got[i] - want).abs() <= 1,
                "S={s} beta={beta} row={row:?}: {got:?} at {i}, want {want}"
            );
        }
    }
}

#[test]
fn softmax_within_one_lsb_of_float_model_u8() {
    softmax_float_model::<u8>(51);
}

#[test]
fn softmax_within_one_lsb_of_float_model_i8() {
    softmax_float_model::<i8>(52);
}

/// An int8 row for S = 0.05f, beta = 1 (m0 = 1717986944, left shift 22, diff_min = -496), from
/// a C++ transcription of TFLite's Prepare and quantized reference Softmax.
#[test]
fn softmax_i8_bit_exact_against_tflite_transcription() {
    let p = SoftmaxParams::new(0.05, 1.0).unwrap();
    assert_eq!(
        (p.input_multiplier, p.input_left_shift, p.diff_min),
        (1_717_986_944, 22, -496)
    );
    let row = [-128, -100, -60, -30, -29, 0, 10, 55, 90, 127, 127, 126];
    assert_eq!(
        run_softmax::<i8>(&row, &p),
        [-128, -128, -128, -128, -128, -128, -128, -126, -115, -47, -47, -50]
    );
}
