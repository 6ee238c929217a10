//! Tests of the reference Add, Concat, Quantize/Dequantize and Reshape kernels: hand-computed
//! cases, exact identities where no rounding is involved, and an f64 float model within 1 LSB on
//! random inputs and parameters in both integer encodings.

mod reference_util;

use intq_kernels::reference::{
    add, concat, dequantize, quantize, reshape, AddParams, ConcatInput, RequantTable,
};
use intq_kernels::QElem;
use intq_quant::QuantParams;
use reference_util::{codes, qp, real, requantize_f64, widen, Rng};

// ---------------------------------------------------------------------------------------------
// Add

fn add_params<T: QElem>(l: QuantParams, r: QuantParams, o: QuantParams) -> AddParams {
    AddParams::new(l, r, o, T::MIN, T::MAX).unwrap()
}

#[test]
fn add_params_follow_spec() {
    // S1 = 0.5, S2 = 0.25, S_out = 0.5: twice_max = 1, m1 = 0.5, m2 = 0.25,
    // m_out = 1 / (2^20 * 0.5) = 2^-19. Powers of two have m0 = 2^30 and shift = e + 1.
    let p = AddParams::new(qp(0.5, 128), qp(0.25, 100), qp(0.5, 128), 0, 255).unwrap();
    assert_eq!(p.left_shift, 20);
    assert_eq!((p.lhs_multiplier.m0, p.lhs_multiplier.shift), (1 << 30, 0));
    assert_eq!((p.rhs_multiplier.m0, p.rhs_multiplier.shift), (1 << 30, -1));
    assert_eq!(
        (p.output_multiplier.m0, p.output_multiplier.shift),
        (1 << 30, -18)
    );
    assert_eq!(
        (p.lhs_zero_point, p.rhs_zero_point, p.output_zero_point),
        (128, 100, 128)
    );
}

#[test]
fn add_params_reject_what_tflite_rejects() {
    // m_out = 2 * 1.0 / (2^20 * 2^-20) = 2 >= 1: TFLite's QuantizeMultiplierSmallerThanOneExp
    // would abort.
    assert!(AddParams::new(qp(1.0, 0), qp(1.0, 0), qp(2f32.powi(-20), 0), 0, 255).is_err());
    // Exactly at the limit m_out = 1 is also rejected (TFLite checks `< 1`).
    assert!(AddParams::new(qp(1.0, 0), qp(1.0, 0), qp(2f32.powi(-19), 0), 0, 255).is_err());
    // Just above it is fine.
    assert!(AddParams::new(qp(1.0, 0), qp(1.0, 0), qp(2f32.powi(-18), 0), 0, 255).is_ok());
    let bad = QuantParams {
        scale: 0.0,
        zero_point: 0,
    };
    assert!(AddParams::new(bad, qp(1.0, 0), qp(1.0, 0), 0, 255).is_err());
    assert!(AddParams::new(qp(1.0, 0), qp(1.0, 0), bad, 0, 255).is_err());
}

#[test]
fn add_hand_cases_round_half_away_from_zero() {
    // Params of add_params_follow_spec. lhs 131 is 1.5, rhs 103 is 0.75: the sum 2.25 is 4.5
    // output steps. v1 = SRDHM(3 << 20, 2^30) = 3 * 2^19; v2 = RDBPOT(SRDHM(3 << 20, 2^30), 1) =
    // 3 * 2^18; their sum 9 * 2^18 times m_out: SRDHM gives 9 * 2^17, RDBPOT(., 18) = 4.5 -> 5.
    // So 128 + 5 = 133. The mirror image (125, 97) is -4.5 -> -5 -> 123.
    let p = AddParams::new(qp(0.5, 128), qp(0.25, 100), qp(0.5, 128), 0, 255).unwrap();
    let mut out = [0u8; 3];
    add(
        &[131u8, 125, 128],
        &[3],
        &[103u8, 97, 100],
        &[3],
        &p,
        &mut out,
        &[3],
    );
    assert_eq!(out, [133, 123, 128]);
    // A fused ReLU clamps at Z_out = 128.
    let relu = AddParams::new(qp(0.5, 128), qp(0.25, 100), qp(0.5, 128), 128, 255).unwrap();
    add(
        &[131u8, 125, 128],
        &[3],
        &[103u8, 97, 100],
        &[3],
        &relu,
        &mut out,
        &[3],
    );
    assert_eq!(out, [133, 128, 128]);
}

#[test]
fn add_saturates_at_type_limits() {
    // int8, S = 1 everywhere, Z = 0: 127 + 127 = 254 clamps to 127; -128 + -128 to -128.
    let p = add_params::<i8>(qp(1.0, 0), qp(1.0, 0), qp(1.0, 0));
    let mut out = [0i8; 3];
    add(
        &[127i8, -128, 100],
        &[3],
        &[127i8, -128, -101],
        &[3],
        &p,
        &mut out,
        &[3],
    );
    assert_eq!(out, [127, -128, -1]);
}

#[test]
fn add_broadcasts_like_numpy() {
    // [2, 1] + [3] -> [2, 3]; with S = 1 and Z = 0 the codes simply add.
    let p = add_params::<u8>(qp(1.0, 0), qp(1.0, 0), qp(1.0, 0));
    let mut out = [0u8; 6];
    add(
        &[1u8, 2],
        &[2, 1],
        &[10u8, 20, 30],
        &[3],
        &p,
        &mut out,
        &[2, 3],
    );
    assert_eq!(out, [11, 21, 31, 12, 22, 32]);
    // Scalar on the left: [] broadcasts to [2, 2].
    let mut out = [0u8; 4];
    add(&[5u8], &[], &[1u8, 2, 3, 4], &[2, 2], &p, &mut out, &[2, 2]);
    assert_eq!(out, [6, 7, 8, 9]);
    // Both sides stretched: [2, 1, 2] + [3, 1] -> [2, 3, 2].
    let lhs = [0u8, 1, 100, 101];
    let rhs = [10u8, 20, 30];
    let mut out = [0u8; 12];
    add(&lhs, &[2, 1, 2], &rhs, &[3, 1], &p, &mut out, &[2, 3, 2]);
    assert_eq!(out, [10, 11, 20, 21, 30, 31, 110, 111, 120, 121, 130, 131]);
}

#[test]
#[should_panic(expected = "broadcast")]
fn add_rejects_a_wrong_output_shape() {
    let p = add_params::<u8>(qp(1.0, 0), qp(1.0, 0), qp(1.0, 0));
    let mut out = [0u8; 6];
    add(&[1u8, 2], &[2], &[1u8, 2, 3], &[3], &p, &mut out, &[6]);
}

/// The broadcast model: for each output multi-index, the input element at the same index with
/// stretched dimensions pinned to 0. Independent of the kernel's stride odometer.
fn broadcast_index(out_index: &[usize], shape: &[usize]) -> usize {
    let skip = out_index.len() - shape.len();
    let mut flat = 0;
    for (k, &d) in shape.iter().enumerate() {
        let i = if d == 1 { 0 } else { out_index[skip + k] };
        flat = flat * d + i;
    }
    flat
}

fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for k in (0..shape.len()).rev() {
        idx[k] = flat % shape[k];
        flat /= shape[k];
    }
    idx
}

/// Random NumPy-compatible shape pairs up to rank 6 and their broadcast.
fn random_broadcast_shapes(rng: &mut Rng) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let rank = rng.size(0, 6);
    let out: Vec<usize> = (0..rank).map(|_| rng.size(1, 3)).collect();
    let side = |rng: &mut Rng| -> Vec<usize> {
        let drop = rng.size(0, rank);
        out[drop..]
            .iter()
            .map(|&d| if rng.int(0, 2) == 0 { 1 } else { d })
            .collect()
    };
    let l = side(rng);
    let r = side(rng);
    // The broadcast of the two may be smaller than `out` where both sides stretched or dropped.
    let b_rank = l.len().max(r.len());
    let pick = |s: &[usize], k: usize| {
        let skip = b_rank - s.len();
        if k < skip {
            1
        } else {
            s[k - skip]
        }
    };
    let b: Vec<usize> = (0..b_rank).map(|k| pick(&l, k).max(pick(&r, k))).collect();
    (l, r, b)
}

fn add_float_model<T: QElem>(seed: u64) {
    let mut rng = Rng::new(seed);
    for _ in 0..300 {
        let l = qp(rng.log_scale(-8.0, 0.0), rng.zero_point::<T>());
        let r = qp(rng.log_scale(-8.0, 0.0), rng.zero_point::<T>());
        let o = qp(rng.log_scale(-7.0, 1.0), rng.zero_point::<T>());
        let p = add_params::<T>(l, r, o);
        let (ls, rs, os) = random_broadcast_shapes(&mut rng);
        let lhs: Vec<T> = rng.codes(ls.iter().product());
        let rhs: Vec<T> = rng.codes(rs.iter().product());
        let mut out = vec![T::default(); os.iter().product()];
        add(&lhs, &ls, &rhs, &rs, &p, &mut out, &os);
        for (flat, &got) in out.iter().enumerate() {
            let idx = unflatten(flat, &os);
            let a = lhs[broadcast_index(&idx, &ls)].to_i32();
            let b = rhs[broadcast_index(&idx, &rs)].to_i32();
            let want = requantize_f64(real(a, l) + real(b, r), o, T::MIN, T::MAX);
            assert!(
                (got.to_i32() - want).abs() <= 1,
                "{a} ({l:?}) + {b} ({r:?}) -> {} want {want} ({o:?})",
                got.to_i32()
            );
        }
    }
}

#[test]
fn add_within_one_lsb_of_float_model_u8() {
    add_float_model::<u8>(0x5eed_0001);
}

#[test]
fn add_within_one_lsb_of_float_model_i8() {
    add_float_model::<i8>(0x5eed_0002);
}

fn add_identical_scales_exact<T: QElem>(seed: u64) {
    // With S1 = S2 = S_out every multiplier is a power of two (m_i = 1/2, m_out = 2^-19), so
    // v_i = (q_i - Z_i) * 2^19 exactly and the output is the integer sum of the centred codes.
    let mut rng = Rng::new(seed);
    for _ in 0..6 {
        let s = rng.log_scale(-10.0, 2.0);
        let (z1, z2, zo) = (
            rng.zero_point::<T>(),
            rng.zero_point::<T>(),
            rng.zero_point::<T>(),
        );
        let p = add_params::<T>(qp(s, z1), qp(s, z2), qp(s, zo));
        let all: Vec<T> = (T::MIN..=T::MAX).map(T::from_i32_saturating).collect();
        let n = all.len();
        let mut out = vec![T::default(); n * n];
        add(&all, &[n, 1], &all, &[n], &p, &mut out, &[n, n]);
        for (i, a) in (T::MIN..=T::MAX).enumerate() {
            for (j, b) in (T::MIN..=T::MAX).enumerate() {
                let want = ((a - z1) + (b - z2) + zo).clamp(T::MIN, T::MAX);
                assert_eq!(out[i * n + j].to_i32(), want, "{a} + {b}, Z {z1} {z2} {zo}");
            }
        }
    }
}

#[test]
fn add_with_identical_scales_is_exact_u8() {
    add_identical_scales_exact::<u8>(7);
}

#[test]
fn add_with_identical_scales_is_exact_i8() {
    add_identical_scales_exact::<i8>(8);
}

// ---------------------------------------------------------------------------------------------
// Concat

#[test]
fn requant_table_hand_cases() {
    // S_in = 0.5, Z_in = 10 -> S_out = 0.25, Z_out = 0: s = 0.5 * 4 = 2, b = -20, all exact.
    // q = 10 -> 0; 11 -> 2; 0 -> -20 -> 0; 255 -> 490 -> 255; 73 -> 126.
    let t = RequantTable::<u8>::new(qp(0.5, 10), qp(0.25, 0));
    assert_eq!(t.table.len(), 256);
    for (q, want) in [(10, 0), (11, 2), (0, 0), (255, 255), (73, 126)] {
        assert_eq!(t.table[q], want, "q={q}");
    }
    // Ties: S_in = 0.5, Z_in = 0 -> S_out = 1, Z_out = 3: s = 0.5, b = 0. Codes 1, 3, 5 are 0.5,
    // 1.5, 2.5, which round away from zero to 1, 2, 3: outputs 4, 5, 6. For int8, -1 and -3 are
    // -0.5 and -1.5, rounding to -1 and -2: outputs 2 and 1.
    let t = RequantTable::<u8>::new(qp(0.5, 0), qp(1.0, 3));
    assert_eq!([t.table[1], t.table[3], t.table[5]], [4, 5, 6]);
    let t = RequantTable::<i8>::new(qp(0.5, 0), qp(1.0, 3));
    assert_eq!(t.table.len(), 256);
    let at = |q: i32| t.table[(q + 128) as usize];
    assert_eq!([at(1), at(3), at(-1), at(-3)], [4, 5, 2, 1]);
    assert_eq!([at(-128), at(127)], [-61, 67]); // -64 + 3 and round(63.5) = 64, + 3
}

#[test]
fn requant_table_reproduces_tflite_f32_rounding() {
    // S_in = 0.1f, S_out = 0.6f, Z = 0. In exact arithmetic code 3 is 0.1f * 3 / 0.6f =
    // 0.49999998758..., which rounds to 0. TFLite computes in f32: 1/0.6f = 1.6666666 (0x3fd55555),
    // s = 0.1f * that = 0.16666667 (0x3e2aaaab, 0.1666666716...), and 3 * s = 0.5000000149 rounds
    // to the f32 0.5 exactly, which rounds half away to 1. The table must say 1, as TFLite does.
    let t = RequantTable::<u8>::new(qp(0.1, 0), qp(0.6, 0));
    assert_eq!(t.table[3], 1);
    // Likewise 9 -> 1.5 in f32 (1.49999996 exactly) -> 2.
    assert_eq!(t.table[9], 2);
    // A code well away from a tie agrees with exact arithmetic: 4 -> 0.6666 -> 1.
    assert_eq!(t.table[4], 1);
}

fn requant_table_float_model<T: QElem>(seed: u64) {
    let mut rng = Rng::new(seed);
    for _ in 0..400 {
        let i = qp(rng.log_scale(-8.0, 1.0), rng.zero_point::<T>());
        let o = qp(rng.log_scale(-8.0, 1.0), rng.zero_point::<T>());
        let t = RequantTable::<T>::new(i, o);
        for q in T::MIN..=T::MAX {
            let got = t.table[(q - T::MIN) as usize].to_i32();
            let want = requantize_f64(real(q, i), o, T::MIN, T::MAX);
            assert!(
                (got - want).abs() <= 1,
                "q={q} {i:?} -> {o:?}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn requant_table_within_one_lsb_of_float_model_u8() {
    requant_table_float_model::<u8>(11);
}

#[test]
fn requant_table_within_one_lsb_of_float_model_i8() {
    requant_table_float_model::<i8>(12);
}

#[test]
fn requant_table_with_equal_params_is_identity_for_exact_scales() {
    // S = 2^-4: 1/S and S * (1/S) are exact, so the table is the identity on every code.
    let p = qp(0.0625, 37);
    let t = RequantTable::<u8>::new(p, p);
    assert_eq!(widen(&t.table), (0..=255).collect::<Vec<_>>());
    let p = qp(0.0625, -128);
    let t = RequantTable::<i8>::new(p, p);
    assert_eq!(widen(&t.table), (-128..=127).collect::<Vec<_>>());
}

#[test]
fn concat_copies_along_each_axis() {
    // a: [2, 2, 1] = [[0],[1]],[[2],[3]]; b: [2, 1, 1] = [[10]],[[11]]; along axis 1 the rows of
    // each outer slice are a's two then b's one.
    let a = codes::<u8>(&[0, 1, 2, 3]);
    let b = codes::<u8>(&[10, 11]);
    let mut out = vec![0u8; 6];
    concat(
        &[
            ConcatInput {
                data: &a,
                shape: &[2, 2, 1],
                requant: None,
            },
            ConcatInput {
                data: &b,
                shape: &[2, 1, 1],
                requant: None,
            },
        ],
        1,
        &mut out,
        &[2, 3, 1],
    );
    assert_eq!(out, [0, 1, 10, 2, 3, 11]);
    // Along axis 0 it is plain appending.
    let mut out = vec![0u8; 6];
    concat(
        &[
            ConcatInput {
                data: &a,
                shape: &[2, 2, 1],
                requant: None,
            },
            ConcatInput {
                data: &b,
                shape: &[1, 2, 1],
                requant: None,
            },
        ],
        0,
        &mut out,
        &[3, 2, 1],
    );
    assert_eq!(out, [0, 1, 2, 3, 10, 11]);
}

#[test]
fn concat_random_shapes_match_index_model() {
    // Mixed copied and requantized inputs, checked element by element against the definition:
    // output[.., k, ..] is input i's [.., k - offset_i, ..] mapped through its table if any.
    let mut rng = Rng::new(99);
    for _ in 0..200 {
        let rank = rng.size(1, 4);
        let axis = rng.size(0, rank - 1);
        let base: Vec<usize> = (0..rank).map(|_| rng.size(1, 3)).collect();
        let n_inputs = rng.size(1, 4);
        let out_p = qp(rng.log_scale(-6.0, 0.0), rng.zero_point::<i8>());
        let mut shapes = Vec::new();
        let mut datas = Vec::new();
        let mut tables = Vec::new();
        for _ in 0..n_inputs {
            let mut s = base.clone();
            s[axis] = rng.size(1, 3);
            datas.push(rng.codes::<i8>(s.iter().product()));
            shapes.push(s);
            tables.push(if rng.int(0, 1) == 0 {
                None
            } else {
                let ip = qp(rng.log_scale(-6.0, 0.0), rng.zero_point::<i8>());
                Some(RequantTable::<i8>::new(ip, out_p))
            });
        }
        let mut out_shape = base.clone();
        out_shape[axis] = shapes.iter().map(|s| s[axis]).sum();
        let inputs: Vec<ConcatInput<i8>> = (0..n_inputs)
            .map(|i| ConcatInput {
                data: &datas[i],
                shape: &shapes[i],
                requant: tables[i].as_ref(),
            })
            .collect();
        let mut out = vec![0i8; out_shape.iter().product()];
        concat(&inputs, axis, &mut out, &out_shape);
        for (flat, &got) in out.iter().enumerate() {
            let mut idx = unflatten(flat, &out_shape);
            let mut which = 0;
            while idx[axis] >= shapes[which][axis] {
                idx[axis] -= shapes[which][axis];
                which += 1;
            }
            let src_flat = idx
                .iter()
                .zip(&shapes[which])
                .fold(0, |acc, (&i, &d)| acc * d + i);
            let q = datas[which][src_flat];
            let want = match &tables[which] {
                None => q,
                Some(t) => t.table[(q as i32 + 128) as usize],
            };
            assert_eq!(got, want, "flat {flat} of {out_shape:?}, axis {axis}");
        }
    }
}

#[test]
#[should_panic(expected = "concat axis extent")]
fn concat_rejects_a_wrong_axis_extent() {
    let a = [1u8, 2];
    let mut out = [0u8; 3];
    concat(
        &[ConcatInput {
            data: &a,
            shape: &[2],
            requant: None,
        }],
        0,
        &mut out,
        &[3],
    );
}

// ---------------------------------------------------------------------------------------------
// Quantize, Dequantize, Reshape

#[test]
fn quantize_hand_cases() {
    // S = 0.5, Z = 10: 1.25 / 0.5 = 2.5 -> 3 -> 13; -1.25 -> -2.5 -> -3 -> 7; 1000 clamps.
    let p = qp(0.5, 10);
    let mut out = [0u8; 5];
    quantize(&[1.25, -1.25, 1000.0, -1000.0, 0.0], p, &mut out);
    assert_eq!(out, [13, 7, 255, 0, 10]);
    let p = qp(0.5, -128);
    let mut out = [0i8; 4];
    quantize(&[0.0, 127.5, 1e9, -1.0], p, &mut out);
    // 127.5 / 0.5 = 255 - 128 = 127; 1e9 clamps to 127; -1.0 -> -2 - 128 clamps to -128.
    assert_eq!(out, [-128, 127, 127, -128]);
}

#[test]
fn dequantize_hand_cases() {
    let mut out = [0f32; 3];
    dequantize(&[13u8, 10, 0], qp(0.5, 10), &mut out);
    assert_eq!(out, [1.5, 0.0, -5.0]);
    dequantize(&[-128i8, 127, 0], qp(0.25, -128), &mut out);
    assert_eq!(out, [0.0, 63.75, 32.0]);
}

fn quantize_round_trip<T: QElem>(seed: u64) {
    // Dequantizing every code and quantizing back is the identity (|error| < S/2 in f32).
    let mut rng = Rng::new(seed);
    for _ in 0..50 {
        let p = qp(rng.log_scale(-12.0, 4.0), rng.zero_point::<T>());
        let all: Vec<T> = (T::MIN..=T::MAX).map(T::from_i32_saturating).collect();
        let mut reals = vec![0f32; all.len()];
        dequantize(&all, p, &mut reals);
        for (q, &r) in (T::MIN..=T::MAX).zip(&reals) {
            assert!(
                (r as f64 - real(q, p)).abs() <= (real(q, p).abs() * 1e-7),
                "{q} {p:?}"
            );
        }
        let mut back = vec![T::default(); all.len()];
        quantize(&reals, p, &mut back);
        assert_eq!(back, all, "{p:?}");
    }
}

#[test]
fn quantize_dequantize_round_trip_u8() {
    quantize_round_trip::<u8>(21);
}

#[test]
fn quantize_dequantize_round_trip_i8() {
    quantize_round_trip::<i8>(22);
}

#[test]
fn quantize_within_one_lsb_of_float_model() {
    let mut rng = Rng::new(23);
    for _ in 0..2000 {
        let p = qp(rng.log_scale(-8.0, 0.0), rng.zero_point::<u8>());
        let x = ((rng.unit() - 0.5) * 600.0 * p.scale as f64) as f32;
        let mut out = [0u8];
        quantize(&[x], p, &mut out);
        let want = requantize_f64(x as f64, p, 0, 255);
        // The f32 division may land on the other side of a tie; nothing more.
        assert!((out[0] as i32 - want).abs() <= 1, "{x} {p:?}");
    }
}

#[test]
fn reshape_copies_codes() {
    let input = codes::<i8>(&[-128, 0, 127, 5]);
    let mut out = [0i8; 4];
    reshape(&input, &mut out);
    assert_eq!(out.to_vec(), input);
}
