//! The ops of docs/spec.md §11 (Mul, Sub, Relu, LeakyRelu, Prelu, HardSwish, Tanh, the resizes,
//! Maximum, Minimum, Transpose, Slice) through
//! the engine: validation names the mistake, `.intq` 1.4 round-trips them, the integer executor
//! stays within a step or two of the float executor at edge parameters (zero points at the ends
//! of the range, scales far apart, broadcasting, odd sizes), and equal-scale cases give exact
//! codes.

use intq_engine::{
    format, Activation, DType, Graph, GraphBuilder, Model, Op, Quant, QuantParams, TensorData,
    TensorId,
};

fn pt(scale: f32, zero_point: i32) -> Option<Quant> {
    Some(Quant::PerTensor(QuantParams { scale, zero_point }))
}

fn limits(dtype: DType) -> (i32, i32) {
    if dtype == DType::U8 {
        (0, 255)
    } else {
        (-128, 127)
    }
}

/// Every code of the type, cycled to `n` elements with a stride that mixes them.
fn codes(dtype: DType, n: usize, stride: usize) -> TensorData {
    let (lo, _) = limits(dtype);
    let at = |i: usize| ((i * stride) % 256) as i32 + lo;
    match dtype {
        DType::U8 => TensorData::U8((0..n).map(|i| at(i) as u8).collect()),
        _ => TensorData::I8((0..n).map(|i| at(i) as i8).collect()),
    }
}

fn as_i32(d: &TensorData) -> Vec<i32> {
    match d {
        TensorData::U8(v) => v.iter().map(|&c| c as i32).collect(),
        TensorData::I8(v) => v.iter().map(|&c| c as i32).collect(),
        other => panic!("{:?}", other.dtype()),
    }
}

/// One op of each kind, with two broadcast binary ops, for `dtype`.
fn graph(dtype: DType) -> Graph {
    let (lo, hi) = limits(dtype);
    let mid = (lo + hi + 1) / 2;
    let mut b = GraphBuilder::new();
    let shape = [3, 5, 7];
    let a = b.tensor("a", dtype, &shape, pt(0.05, hi));
    let x = b.tensor("x", dtype, &shape, pt(0.9, lo));
    let g = b.tensor("g", dtype, &[1, 1, 7], pt(1.0 / 256.0, lo));
    b.input(a).input(x).input(g);
    let out = |b: &mut GraphBuilder, name: &str, q: Option<Quant>| -> TensorId {
        let t = b.tensor(name, dtype, &shape, q);
        b.output(t);
        t
    };
    let o = out(&mut b, "mul", pt(0.5, mid));
    b.op(Op::Mul {
        lhs: a,
        rhs: x,
        output: o,
        activation: Activation::None,
    });
    let o = out(&mut b, "mul_se", pt(0.04, lo + 3));
    b.op(Op::Mul {
        lhs: a,
        rhs: g,
        output: o,
        activation: Activation::Relu6,
    });
    let o = out(&mut b, "sub", pt(1.0, hi - 20));
    b.op(Op::Sub {
        lhs: a,
        rhs: x,
        output: o,
        activation: Activation::None,
    });
    let o = out(&mut b, "sub_rev", pt(0.9, mid));
    b.op(Op::Sub {
        lhs: g,
        rhs: x,
        output: o,
        activation: Activation::None,
    });
    let o = out(&mut b, "relu6", pt(6.0 / 255.0, lo));
    b.op(Op::Relu {
        input: a,
        output: o,
        activation: Activation::Relu6,
    });
    let o = out(&mut b, "relu1", pt(1.0 / 128.0, mid));
    b.op(Op::Relu {
        input: x,
        output: o,
        activation: Activation::ReluN1To1,
    });
    let o = out(&mut b, "leaky", pt(0.7, hi - 2));
    b.op(Op::LeakyRelu {
        input: x,
        output: o,
        alpha: 1.5,
    });
    let o = out(&mut b, "hswish", pt(0.03, lo + 10));
    b.op(Op::HardSwish {
        input: a,
        output: o,
    });
    let o = out(&mut b, "tanh", pt(1.0 / 128.0, mid));
    b.op(Op::Tanh {
        input: a,
        output: o,
    });
    let alpha = b.constant(
        "alpha",
        &[7],
        pt(0.02, mid),
        match dtype {
            DType::U8 => TensorData::U8(vec![0, 40, 128, 140, 200, 255, 100]),
            _ => TensorData::I8(vec![-128, -88, 0, 12, 72, 127, -28]),
        },
    );
    let o = out(&mut b, "prelu", pt(0.03, mid));
    b.op(Op::Prelu {
        input: x,
        alpha,
        output: o,
    });
    let o = out(&mut b, "maximum", pt(0.05, hi));
    b.op(Op::Maximum {
        lhs: a,
        rhs: a,
        output: o,
    });
    // Resizes keep the input's (S, Z): a 4-D input of its own.
    let r = b.tensor("r", dtype, &[1, 3, 4, 5], pt(0.1, hi));
    b.input(r);
    let t = b.tensor("transposed", dtype, &[5, 1, 3, 4], pt(0.1, hi));
    b.output(t);
    b.op(Op::Transpose {
        input: r,
        output: t,
        perm: vec![3, 0, 1, 2],
    });
    let t = b.tensor("strided", dtype, &[1, 2, 2, 2], pt(0.1, hi));
    b.output(t);
    b.op(Op::Slice {
        input: r,
        output: t,
        begin: vec![0, 0, 1, 1],
        strides: vec![1, 2, 2, 3],
    });
    for (name, bilinear, align_corners, half_pixel_centers) in [
        ("nearest_half", false, false, true),
        ("bilinear_align", true, true, false),
        ("bilinear_half", true, false, true),
    ] {
        let o = b.tensor(name, dtype, &[1, 7, 9, 5], pt(0.1, hi));
        b.output(o);
        b.op(if bilinear {
            Op::ResizeBilinear {
                input: r,
                output: o,
                align_corners,
                half_pixel_centers,
            }
        } else {
            Op::ResizeNearest {
                input: r,
                output: o,
                align_corners,
                half_pixel_centers,
            }
        });
    }
    b.finish().unwrap()
}

fn inputs(dtype: DType) -> Vec<TensorData> {
    vec![
        codes(dtype, 105, 1),
        codes(dtype, 105, 37),
        codes(dtype, 7, 41),
        codes(dtype, 60, 23),
    ]
}

/// Integer outputs within `tol` output steps of the float executor's reals (clamped to the
/// type); the float executor reads the same dequantized inputs.
#[test]
fn integer_ops_track_the_float_executor_at_edge_parameters() {
    for dtype in [DType::U8, DType::I8] {
        let g = graph(dtype);
        let model = Model::new(g.clone()).unwrap();
        let ints = model.run(&inputs(dtype)).unwrap();
        let reals = model.run_float(&inputs(dtype)).unwrap();
        let (lo, hi) = limits(dtype);
        for ((&id, q), r) in g.outputs().iter().zip(&ints).zip(&reals) {
            let t = g.tensor(id);
            let p = t.params().unwrap();
            // HardSwish's int16 fixed point and the doubled rounding of Sub cost a step more.
            let tol = if matches!(t.name.as_str(), "hswish" | "sub" | "sub_rev" | "prelu") {
                2.0
            } else {
                1.0
            };
            for (k, (&c, &v)) in as_i32(q).iter().zip(r).enumerate() {
                let expected = (p.zero_point as f32 + v / p.scale).clamp(lo as f32, hi as f32);
                assert!(
                    (c as f32 - expected).abs() <= tol,
                    "{dtype} {} [{k}]: code {c}, float executor {expected}",
                    t.name
                );
            }
        }
    }
}

/// With equal scales and zero points, Relu and LeakyRelu with alpha 0 move no code but the
/// clamped ones, and Mul by a gate of exactly one is the identity.
#[test]
fn equal_scale_cases_are_exact() {
    let mut b = GraphBuilder::new();
    let q = pt(0.1, -20);
    let x = b.tensor("x", DType::I8, &[256], q.clone());
    let relu = b.tensor("relu", DType::I8, &[256], q.clone());
    let leaky = b.tensor("leaky", DType::I8, &[256], q.clone());
    let one = b.constant("one", &[1], pt(1.0, 0), TensorData::I8(vec![1]));
    let mul = b.tensor("mul", DType::I8, &[256], q.clone());
    b.op(Op::Relu {
        input: x,
        output: relu,
        activation: Activation::Relu,
    });
    b.op(Op::LeakyRelu {
        input: x,
        output: leaky,
        alpha: 0.0,
    });
    b.op(Op::Mul {
        lhs: x,
        rhs: one,
        output: mul,
        activation: Activation::None,
    });
    b.input(x).output(relu).output(leaky).output(mul);
    let model = Model::new(b.finish().unwrap()).unwrap();
    let all: Vec<i8> = (-128..=127).collect();
    let out = model.run(&[TensorData::I8(all.clone())]).unwrap();
    let expect_relu: Vec<i32> = all.iter().map(|&c| (c as i32).max(-20)).collect();
    assert_eq!(as_i32(&out[0]), expect_relu);
    assert_eq!(as_i32(&out[1]), expect_relu);
    assert_eq!(
        as_i32(&out[2]),
        all.iter().map(|&c| c as i32).collect::<Vec<_>>()
    );
}

#[test]
fn intq_format_round_trips_the_new_ops_as_minor_version_4() {
    for dtype in [DType::U8, DType::I8] {
        let g = graph(dtype);
        let bytes = format::to_bytes(&g);
        assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 4);
        let back = format::from_bytes(&bytes).unwrap();
        assert_eq!(back, g);
        // The first op record: tag 16 (Mul, the first 1.4 tag), a 13-byte body, lhs #0, rhs #1.
        // A tag no writer has assigned is refused by number.
        let record: Vec<u8> = [16u32, 13, 0, 1]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let at = bytes.windows(16).position(|w| w == record).unwrap();
        let mut bad = bytes.clone();
        bad[at..at + 4].copy_from_slice(&255u32.to_le_bytes());
        let crc = format::crc32(&bad[format::HEADER_LEN..]);
        bad[12..16].copy_from_slice(&crc.to_le_bytes());
        let m = format::from_bytes(&bad).unwrap_err().to_string();
        assert!(m.contains("unknown op tag 255"), "{m}");
    }
}

/// One broken graph per mistake; each error names the op and says what is wrong.
#[test]
fn validation_and_planning_name_the_mistake() {
    let q = pt(0.1, 0);
    let err = |build: &dyn Fn(&mut GraphBuilder) -> (TensorId, TensorId)| -> String {
        let mut b = GraphBuilder::new();
        let (i, o) = build(&mut b);
        b.input(i).output(o);
        match b.finish() {
            Err(e) => e.to_string(),
            Ok(g) => match Model::new(g) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("the graph was accepted"),
            },
        }
    };
    let m = err(&|b| {
        let x = b.tensor("x", DType::I8, &[2, 3], q.clone());
        let y = b.constant("y", &[2], q.clone(), TensorData::I8(vec![1, 2]));
        let o = b.tensor("o", DType::I8, &[2, 3], q.clone());
        b.op(Op::Mul {
            lhs: x,
            rhs: y,
            output: o,
            activation: Activation::None,
        });
        (x, o)
    });
    assert!(m.contains("Mul") && m.contains("do not broadcast"), "{m}");
    let m = err(&|b| {
        let x = b.tensor("x", DType::U8, &[1, 1, 1, 1, 1, 1, 2], q.clone());
        let o = b.tensor("o", DType::U8, &[1, 1, 1, 1, 1, 1, 2], q.clone());
        b.op(Op::Sub {
            lhs: x,
            rhs: x,
            output: o,
            activation: Activation::None,
        });
        (x, o)
    });
    assert!(m.contains("Sub") && m.contains("rank 7"), "{m}");
    let m = err(&|b| {
        let x = b.tensor("x", DType::U8, &[4], q.clone());
        let o = b.tensor("o", DType::I8, &[4], q.clone());
        b.op(Op::Relu {
            input: x,
            output: o,
            activation: Activation::Relu,
        });
        (x, o)
    });
    assert!(m.contains("Relu") && m.contains("int8"), "{m}");
    let m = err(&|b| {
        let x = b.tensor("x", DType::U8, &[4], q.clone());
        let o = b.tensor("o", DType::U8, &[4], q.clone());
        b.op(Op::Relu {
            input: x,
            output: o,
            activation: Activation::None,
        });
        (x, o)
    });
    assert!(m.contains("activation None"), "{m}");
    for alpha in [-0.5, f32::NAN, f32::INFINITY] {
        let m = err(&|b| {
            let x = b.tensor("x", DType::U8, &[4], q.clone());
            let o = b.tensor("o", DType::U8, &[4], q.clone());
            b.op(Op::LeakyRelu {
                input: x,
                output: o,
                alpha,
            });
            (x, o)
        });
        assert!(m.contains("LeakyRelu") && m.contains("alpha"), "{m}");
    }
    let m = err(&|b| {
        let x = b.tensor("x", DType::I8, &[4], q.clone());
        let o = b.tensor("o", DType::I8, &[3], q.clone());
        b.op(Op::Tanh {
            input: x,
            output: o,
        });
        (x, o)
    });
    assert!(m.contains("Tanh") && m.contains("expected [4]"), "{m}");
    // A resize keeps batch and channels, and (S, Z).
    let m = err(&|b| {
        let x = b.tensor("x", DType::I8, &[1, 2, 2, 3], q.clone());
        let o = b.tensor("o", DType::I8, &[1, 4, 4, 2], q.clone());
        b.op(Op::ResizeNearest {
            input: x,
            output: o,
            align_corners: false,
            half_pixel_centers: false,
        });
        (x, o)
    });
    assert!(
        m.contains("ResizeNearest") && m.contains("channels 3"),
        "{m}"
    );
    let m = err(&|b| {
        let x = b.tensor("x", DType::I8, &[1, 2, 2, 3], q.clone());
        let o = b.tensor("o", DType::I8, &[1, 4, 4, 3], pt(0.2, 0));
        b.op(Op::ResizeBilinear {
            input: x,
            output: o,
            align_corners: false,
            half_pixel_centers: false,
        });
        (x, o)
    });
    assert!(m.contains("ResizeBilinear") && m.contains("share"), "{m}");
    let m = err(&|b| {
        let x = b.tensor("x", DType::I8, &[1, 2, 2, 3], q.clone());
        let o = b.tensor("o", DType::I8, &[1, 4, 4, 3], q.clone());
        b.op(Op::ResizeBilinear {
            input: x,
            output: o,
            align_corners: true,
            half_pixel_centers: true,
        });
        (x, o)
    });
    assert!(m.contains("cannot both be set"), "{m}");
    // Maximum compares codes, so its operands and output share (S, Z).
    let m = err(&|b| {
        let x = b.tensor("x", DType::U8, &[4], q.clone());
        let y = b.constant("y", &[1], pt(0.2, 0), TensorData::U8(vec![3]));
        let o = b.tensor("o", DType::U8, &[4], q.clone());
        b.op(Op::Maximum {
            lhs: x,
            rhs: y,
            output: o,
        });
        (x, o)
    });
    assert!(m.contains("Maximum") && m.contains("share"), "{m}");
    let m = err(&|b| {
        let x = b.tensor("x", DType::U8, &[2, 3], q.clone());
        let o = b.tensor("o", DType::U8, &[3, 2], q.clone());
        b.op(Op::Transpose {
            input: x,
            output: o,
            perm: vec![1, 1],
        });
        (x, o)
    });
    assert!(
        m.contains("Transpose") && m.contains("not a permutation"),
        "{m}"
    );
    let m = err(&|b| {
        let x = b.tensor("x", DType::U8, &[2, 5], q.clone());
        let o = b.tensor("o", DType::U8, &[2, 3], q.clone());
        b.op(Op::Slice {
            input: x,
            output: o,
            begin: vec![0, 1],
            strides: vec![1, 2],
        });
        (x, o)
    });
    assert!(m.contains("Slice") && m.contains("do not fit"), "{m}");
    let m = err(&|b| {
        let x = b.tensor("x", DType::I8, &[2, 5], q.clone());
        let a = b.constant("a", &[2], q.clone(), TensorData::I8(vec![1, 2]));
        let o = b.tensor("o", DType::I8, &[2, 5], q.clone());
        b.op(Op::Prelu {
            input: x,
            alpha: a,
            output: o,
        });
        (x, o)
    });
    assert!(m.contains("Prelu") && m.contains("broadcast"), "{m}");
    // Sub's output multiplier must be below 1: an output scale under 2 max(S) / 2^20.
    let m = err(&|b| {
        let x = b.tensor("x", DType::U8, &[4], q.clone());
        let o = b.tensor("o", DType::U8, &[4], pt(1e-8, 0));
        b.op(Op::Sub {
            lhs: x,
            rhs: x,
            output: o,
            activation: Activation::None,
        });
        (x, o)
    });
    assert!(m.contains("Sub") && m.contains("below 1"), "{m}");
    // HardSwish's output multiplier S_in / 128 / S_out must not exceed 1.
    let m = err(&|b| {
        let x = b.tensor("x", DType::U8, &[4], pt(1.0, 0));
        let o = b.tensor("o", DType::U8, &[4], pt(1.0 / 1024.0, 0));
        b.op(Op::HardSwish {
            input: x,
            output: o,
        });
        (x, o)
    });
    assert!(m.contains("HardSwish") && m.contains("at most 1"), "{m}");
    // Table ops write the type's whole range; a narrowed output is refused.
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::U8, &[4], q.clone());
    let o = b.tensor("o", DType::U8, &[4], q.clone());
    b.narrow_codes(o, 0, 15);
    b.op(Op::Tanh {
        input: x,
        output: o,
    });
    b.input(x).output(o);
    let m = b.finish().unwrap_err().to_string();
    assert!(m.contains("Tanh") && m.contains("narrowed"), "{m}");
}
