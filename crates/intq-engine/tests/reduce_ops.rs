//! Gather, Sum, ReduceMax, ArgMax and L2Normalization in the engine: hand-checked results, the
//! `.intq` round trip (minor version 5), load-time refusals (an index outside its axis, wrong
//! output types and parameters) and the any-batch rebuild (ops over the batch axis refuse,
//! naming the op; the others run each image on its own).

use intq_engine::{
    format, DType, Graph, GraphBuilder, Model, Op, Quant, QuantParams, TensorData, TensorId,
};

fn q(scale: f32, zero_point: i32) -> Option<Quant> {
    Some(Quant::PerTensor(QuantParams { scale, zero_point }))
}

/// x `[2, 3, 4]` int8 (zero point -128) into every op of this kind.
fn all_ops() -> Graph {
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::I8, &[2, 3, 4], q(0.5, -128));
    b.input(x);
    let mut out = |name: &str, dtype, shape: &[usize], quant, op: &dyn Fn(_) -> Op| {
        let t = b.tensor(name, dtype, shape, quant);
        b.op(op(t));
        b.output(t);
    };
    out(
        "gather",
        DType::I8,
        &[2, 2, 2, 4],
        q(0.5, -128),
        &|output| Op::Gather {
            input: x,
            output,
            axis: 1,
            indices: vec![2, 0, 2, 1],
        },
    );
    out("sum", DType::I8, &[2, 1, 4], q(4.0, 0), &|output| Op::Sum {
        input: x,
        output,
        axes: vec![1],
        keep_dims: true,
    });
    out("max", DType::I8, &[2], q(0.5, -128), &|output| {
        Op::ReduceMax {
            input: x,
            output,
            axes: vec![1, 2],
            keep_dims: false,
        }
    });
    out("argmax", DType::I32, &[2, 3], None, &|output| Op::ArgMax {
        input: x,
        output,
        axis: 2,
    });
    out("l2", DType::I8, &[2, 3, 4], q(1.0 / 128.0, 0), &|output| {
        Op::L2Normalization { input: x, output }
    });
    b.finish().unwrap()
}

#[test]
fn each_op_computes_tflites_result_on_a_small_case() {
    let m = Model::new(all_ops()).unwrap();
    // Image 0: rows (-128, -127, -126, -125), (-124, .., -121), (-120, .., -117); image 1 the
    // same, reversed within each row.
    let mut codes: Vec<i8> = (0..12).map(|v| (v - 128) as i8).collect();
    codes.extend((0..3).flat_map(|r| (0..4).rev().map(move |c| (4 * r + c - 128) as i8)));
    let y = m.run(&[TensorData::I8(codes)]).unwrap();
    let TensorData::I8(g) = &y[0] else { panic!() };
    assert_eq!(&g[..8], &[-120, -119, -118, -117, -128, -127, -126, -125]);
    // Sum over rows of x - Z: column c of image 0 is 0 + 4 + 8 + 3c = 12 + 3c; S_in / S_out =
    // 1/8, so (12 + 3c) / 8 = 1.5, 1.875, 2.25, 2.625 -> 2, 2, 2, 3.
    assert_eq!(y[1], TensorData::I8(vec![2, 2, 2, 3, 3, 2, 2, 2]));
    assert_eq!(y[2], TensorData::I8(vec![-117, -117]));
    assert_eq!(y[3], TensorData::I32(vec![3, 3, 3, 0, 0, 0]));
    // Row (0, 1, 2, 3) of offsets: norm sqrt(14); 3 / sqrt(14) * 128 = 102.6 -> 103.
    let TensorData::I8(l2) = &y[4] else { panic!() };
    assert_eq!(&l2[..4], &[0, 34, 68, 103]);
}

#[test]
fn the_ops_round_trip_through_intq_at_minor_version_5() {
    let g = all_ops();
    let bytes = format::to_bytes(&g);
    assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 5);
    let back = format::from_bytes(&bytes).unwrap();
    assert_eq!(back, g);
    assert_eq!(format::to_bytes(&back), bytes);
}

/// One op from x `[1, 5]` int8 to `output`, validated.
fn one_op(
    out_dtype: DType,
    out_shape: &[usize],
    quant: Option<Quant>,
    op: impl Fn(TensorId, TensorId) -> Op,
) -> String {
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::I8, &[1, 5], q(0.5, 0));
    let y = b.tensor("y", out_dtype, out_shape, quant);
    b.input(x).output(y);
    b.op(op(x, y));
    match b.finish() {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn load_refuses_bad_indices_types_and_parameters() {
    let gather = |indices: Vec<usize>| {
        move |input, output| Op::Gather {
            input,
            output,
            axis: 1,
            indices: indices.clone(),
        }
    };
    assert_eq!(
        one_op(DType::I8, &[1, 2], q(0.5, 0), gather(vec![4, 0])),
        ""
    );
    let err = one_op(DType::I8, &[1, 2], q(0.5, 0), gather(vec![4, 5]));
    assert!(
        err.contains("Gather") && err.contains("index 1 is 5, outside axis 1 (size 5)"),
        "{err}"
    );
    let err = one_op(DType::I8, &[1, 2], q(0.25, 0), gather(vec![0, 1]));
    assert!(err.contains("must share parameters"), "{err}");
    let argmax = |input, output| Op::ArgMax {
        input,
        output,
        axis: 1,
    };
    assert_eq!(one_op(DType::I32, &[1], None, argmax), "");
    let err = one_op(DType::I8, &[1], q(1.0, 0), argmax);
    assert!(
        err.contains("ArgMax") && err.contains("int32 indices"),
        "{err}"
    );
    let l2 = |input, output| Op::L2Normalization { input, output };
    assert_eq!(one_op(DType::I8, &[1, 5], q(1.0 / 128.0, 0), l2), "");
    let err = one_op(DType::I8, &[1, 5], q(1.0 / 128.0, 3), l2);
    assert!(
        err.contains("L2Normalization") && err.contains("(0.0078125, 0)"),
        "{err}"
    );
    let err = one_op(DType::I8, &[1], q(0.5, 0), |input, output| Op::Sum {
        input,
        output,
        axes: vec![1, 1],
        keep_dims: false,
    });
    assert!(err.contains("distinct, increasing"), "{err}");
}

#[test]
fn reductions_over_the_batch_refuse_another_batch_and_the_rest_run_per_image() {
    let g = all_ops();
    let m = Model::new(g).unwrap();
    // Every op of all_ops works inside an image: three images are each image's results.
    let image = |k: i32| (0..12).map(|v| (v * 7 + k * 31) as i8).collect::<Vec<i8>>();
    let batch: Vec<i8> = (0..3)
        .flat_map(|k| image(k).into_iter().chain(image(k + 5)))
        .collect();
    let all = m.run(&[TensorData::I8(batch)]).unwrap();
    for k in 0..3i32 {
        let pair: Vec<i8> = image(k).into_iter().chain(image(k + 5)).collect();
        let one = m.run(&[TensorData::I8(pair)]).unwrap();
        for (a, b) in all.iter().zip(&one) {
            let n = b.len();
            let part = |d: &TensorData| match d {
                TensorData::I8(v) => {
                    TensorData::I8(v[k as usize * n..(k as usize + 1) * n].to_vec())
                }
                TensorData::I32(v) => {
                    TensorData::I32(v[k as usize * n..(k as usize + 1) * n].to_vec())
                }
                _ => panic!(),
            };
            assert_eq!(part(a), *b);
        }
    }
    // Over axis 0 each op mixes images.
    refuses_another_batch("Gather", DType::I8, &[1, 5], q(0.5, 0), |input, output| {
        Op::Gather {
            input,
            output,
            axis: 0,
            indices: vec![0],
        }
    });
    refuses_another_batch("Sum", DType::I8, &[1, 5], q(0.5, 0), |input, output| {
        Op::Sum {
            input,
            output,
            axes: vec![0],
            keep_dims: true,
        }
    });
    refuses_another_batch(
        "ReduceMax",
        DType::I8,
        &[1, 1],
        q(0.5, 0),
        |input, output| Op::ReduceMax {
            input,
            output,
            axes: vec![0, 1],
            keep_dims: true,
        },
    );
    refuses_another_batch("ArgMax", DType::I32, &[5], None, |input, output| {
        Op::ArgMax {
            input,
            output,
            axis: 0,
        }
    });
}

/// `op` from x `[1, 5]` int8 runs one image and refuses two, naming the op.
fn refuses_another_batch(
    kind: &str,
    dtype: DType,
    shape: &[usize],
    quant: Option<Quant>,
    op: impl Fn(TensorId, TensorId) -> Op,
) {
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::I8, &[1, 5], q(0.5, 0));
    let y = b.tensor("y", dtype, shape, quant);
    b.input(x).output(y);
    b.op(op(x, y));
    let m = Model::new(b.finish().unwrap()).unwrap();
    assert!(m.run(&[TensorData::I8(vec![1; 5])]).is_ok());
    let err = m
        .run(&[TensorData::I8(vec![1; 10])])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("op 0 ({kind})")) && err.contains("batch axis"),
        "{err}"
    );
}

/// The float executor moves and compares reals as the integer one moves and compares codes: its
/// Gather and ReduceMax are the dequantized codes, its ArgMax the same indices; its Sum and
/// L2Normalization lie within a step of the codes' reals.
#[test]
fn the_float_executor_agrees() {
    let m = Model::new(all_ops()).unwrap();
    let x = TensorData::I8((0..24).map(|v| ((v * 37) % 256 - 128) as i8).collect());
    let ints = m.run(std::slice::from_ref(&x)).unwrap();
    let reals = m.run_float(&[x]).unwrap();
    let real = |d: &TensorData, s: f32, z: i32| -> Vec<f32> {
        match d {
            TensorData::I8(v) => v.iter().map(|&q| s * (q as i32 - z) as f32).collect(),
            TensorData::I32(v) => v.iter().map(|&i| i as f32).collect(),
            _ => panic!(),
        }
    };
    assert_eq!(real(&ints[0], 0.5, -128), reals[0]);
    assert_eq!(real(&ints[2], 0.5, -128), reals[2]);
    assert_eq!(real(&ints[3], 1.0, 0), reals[3]);
    for (i, (s, z)) in [(1, (4.0, 0)), (4, (1.0 / 128.0, 0))] {
        for (a, b) in real(&ints[i], s, z).iter().zip(&reals[i]) {
            assert!((a - b).abs() <= s, "output {i}: {a} vs {b}");
        }
    }
}
