//! TransposeConv, SpaceToBatch, BatchToSpace and DepthToSpace (docs/spec.md §11.13 to §11.15)
//! through the engine: validation names the mistake, `.intq` 1.5 round-trips them, the integer
//! executor tracks the float executor at edge parameters (zero points at the ends of the range,
//! scales far apart, odd sizes), the data movers are exact, and a dilated convolution written as
//! SpaceToBatch, Conv2d, BatchToSpace runs any batch image by image.

use intq_engine::{
    format, Activation, ChannelParams, DType, Graph, GraphBuilder, Model, Op, Padding, Quant,
    QuantParams, TensorData, TensorId,
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
fn codes(dtype: DType, n: usize, stride: usize, offset: usize) -> TensorData {
    let (lo, _) = limits(dtype);
    let at = |i: usize| ((i * stride + offset) % 256) as i32 + lo;
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

/// Weights of `shape` (OHWI): uint8 per tensor with zero point 255, int8 per channel with scales
/// a hundredfold apart.
fn filter(b: &mut GraphBuilder, name: &str, dtype: DType, shape: &[usize]) -> TensorId {
    let n: usize = shape.iter().product();
    match dtype {
        DType::U8 => b.constant(name, shape, pt(0.004, 255), codes(dtype, n, 37, 5)),
        _ => {
            let scales = (0..shape[0])
                .map(|k| if k % 2 == 0 { 0.0005 } else { 0.05 })
                .collect();
            let cp = ChannelParams::new(scales, vec![0; shape[0]], 0).unwrap();
            let data = TensorData::I8(
                (0..n)
                    .map(|i| ((i * 37 + 5) % 255) as i32 - 127)
                    .map(|v| v as i8)
                    .collect(),
            );
            b.constant(name, shape, Some(Quant::PerChannel(cp)), data)
        }
    }
}

/// One op of each kind on `[1, 5, 3, 4]` codes whose zero point is the type's maximum.
fn graph(dtype: DType) -> Graph {
    let (lo, hi) = limits(dtype);
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", dtype, &[1, 5, 3, 4], pt(0.05, hi));
    b.input(x);
    let w = filter(&mut b, "w", dtype, &[3, 3, 3, 4]);
    let bias = b.constant("bias", &[3], None, TensorData::I32(vec![-700, 0, 4000]));
    let t = b.tensor("tconv_same", dtype, &[1, 10, 6, 3], pt(0.03, lo + 1));
    b.op(Op::TransposeConv {
        input: x,
        filter: w,
        bias: Some(bias),
        output: t,
        stride: [2, 2],
        padding: Padding::Same,
        activation: Activation::None,
    });
    b.output(t);
    let w = filter(&mut b, "w_valid", dtype, &[2, 2, 3, 4]);
    let t = b.tensor("tconv_valid", dtype, &[1, 6, 5, 2], pt(2.0, hi - 1));
    b.op(Op::TransposeConv {
        input: x,
        filter: w,
        bias: None,
        output: t,
        stride: [1, 1],
        padding: Padding::Valid,
        activation: Activation::Relu6,
    });
    b.output(t);
    let s = b.tensor("s2b", dtype, &[6, 2, 2, 4], pt(0.05, hi));
    b.op(Op::SpaceToBatch {
        input: x,
        output: s,
        block: [3, 2],
        paddings: [[1, 0], [0, 1]],
    });
    b.output(s);
    let r = b.tensor("b2s", dtype, &[1, 5, 3, 4], pt(0.05, hi));
    b.op(Op::BatchToSpace {
        input: s,
        output: r,
        block: [3, 2],
        crops: [[1, 0], [0, 1]],
    });
    b.output(r);
    let d = b.tensor("d2s", dtype, &[1, 10, 6, 1], pt(0.05, hi));
    b.op(Op::DepthToSpace {
        input: x,
        output: d,
        block: 2,
    });
    b.output(d);
    b.finish().unwrap()
}

#[test]
fn integer_ops_track_the_float_executor_and_movers_are_exact() {
    for dtype in [DType::U8, DType::I8] {
        let g = graph(dtype);
        let model = Model::new(g.clone()).unwrap();
        let input = [codes(dtype, 60, 91, 3)];
        let ints = model.run(&input).unwrap();
        let reals = model.run_float(&input).unwrap();
        let (lo, hi) = limits(dtype);
        for ((&id, q), r) in g.outputs().iter().zip(&ints).zip(&reals) {
            let t = g.tensor(id);
            let p = t.params().unwrap();
            for (k, (&c, &v)) in as_i32(q).iter().zip(r).enumerate() {
                let expected = (p.zero_point as f32 + v / p.scale).clamp(lo as f32, hi as f32);
                assert!(
                    (c as f32 - expected).abs() <= 1.0,
                    "{dtype} {} [{k}]: code {c}, float executor {expected}",
                    t.name
                );
            }
        }
        // SpaceToBatch then BatchToSpace with the same amounts is the identity; the padding
        // holds the zero point.
        assert_eq!(ints[3], input[0]);
        let s2b = as_i32(&ints[2]);
        // Output image 0 (phase (0, 0)): row -1 is padding.
        assert!(s2b[..8].iter().all(|&c| c == hi), "{s2b:?}");
        assert_eq!(s2b[8..12], as_i32(&input[0])[24..28]);
    }
}

#[test]
fn intq_format_round_trips_the_new_ops_as_minor_version_5() {
    for dtype in [DType::U8, DType::I8] {
        let g = graph(dtype);
        let bytes = format::to_bytes(&g);
        assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 5);
        assert_eq!(format::from_bytes(&bytes).unwrap(), g);
    }
}

/// A dilated convolution as TFLite writes it runs at any batch, each image as on its own; a
/// BatchToSpace that would gather several images into one is refused, naming the op.
#[test]
fn dilated_convolution_runs_any_batch_image_by_image() {
    let dtype = DType::I8;
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", dtype, &[1, 6, 5, 2], pt(0.1, -128));
    b.input(x);
    let s = b.tensor("s2b", dtype, &[4, 4, 3, 2], pt(0.1, -128));
    b.op(Op::SpaceToBatch {
        input: x,
        output: s,
        block: [2, 2],
        paddings: [[1, 1], [0, 1]],
    });
    let w = filter(&mut b, "w", dtype, &[3, 3, 3, 2]);
    let c = b.tensor("conv", dtype, &[4, 2, 1, 3], pt(0.07, 5));
    b.op(Op::Conv2d {
        input: s,
        filter: w,
        bias: None,
        output: c,
        stride: [1, 1],
        dilation: [1, 1],
        padding: Padding::Valid,
        activation: Activation::None,
    });
    let y = b.tensor("y", dtype, &[1, 4, 2, 3], pt(0.07, 5));
    b.op(Op::BatchToSpace {
        input: c,
        output: y,
        block: [2, 2],
        crops: [[0, 0], [0, 0]],
    });
    b.output(y);
    let model = Model::new(b.finish().unwrap()).unwrap();
    let images: Vec<TensorData> = (0..3).map(|k| codes(dtype, 60, 53, 17 * k)).collect();
    let alone: Vec<Vec<i32>> = images
        .iter()
        .map(|im| as_i32(&model.run(std::slice::from_ref(im)).unwrap()[0]))
        .collect();
    let all: Vec<i8> = images
        .iter()
        .flat_map(|im| match im {
            TensorData::I8(v) => v.clone(),
            _ => unreachable!(),
        })
        .collect();
    let together = as_i32(&model.run(&[TensorData::I8(all)]).unwrap()[0]);
    assert_eq!(together, alone.concat());

    // BatchToSpace straight from the input: at batch 4 its one output image is made of the
    // four input images, so another batch is refused by name.
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", dtype, &[4, 2, 2, 1], pt(0.1, 0));
    let y = b.tensor("y", dtype, &[1, 4, 4, 1], pt(0.1, 0));
    b.input(x).output(y);
    b.op(Op::BatchToSpace {
        input: x,
        output: y,
        block: [2, 2],
        crops: [[0, 0], [0, 0]],
    });
    let model = Model::new(b.finish().unwrap()).unwrap();
    assert!(model.run(&[codes(dtype, 16, 1, 0)]).is_ok());
    let m = model
        .run(&[codes(dtype, 32, 1, 0)])
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("BatchToSpace") && m.contains("several images"),
        "{m}"
    );
}

/// One broken graph per mistake; each error names the op and says what is wrong.
#[test]
fn validation_names_the_mistake() {
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
    let tconv = |b: &mut GraphBuilder, out: [usize; 4], padding: Padding, in_c: usize| {
        let x = b.tensor("x", DType::U8, &[1, 4, 4, 2], q.clone());
        let w = b.constant(
            "w",
            &[3, 3, 3, in_c],
            pt(0.01, 128),
            TensorData::U8(vec![1; 27 * in_c]),
        );
        let o = b.tensor("o", DType::U8, &out, q.clone());
        b.op(Op::TransposeConv {
            input: x,
            filter: w,
            bias: None,
            output: o,
            stride: [2, 2],
            padding,
            activation: Activation::None,
        });
        (x, o)
    };
    // SAME at stride 2 maps 8x8 (or 7x7) to 4x4, not 10x8.
    let m = err(&|b| tconv(b, [1, 10, 8, 3], Padding::Same, 2));
    assert!(
        m.contains("TransposeConv") && m.contains("not the input's 4x4"),
        "{m}"
    );
    let m = err(&|b| tconv(b, [1, 8, 8, 3], Padding::Same, 5));
    assert!(
        m.contains("TransposeConv") && m.contains("input channels"),
        "{m}"
    );
    let m = err(&|b| tconv(b, [1, 8, 8, 2], Padding::Same, 2));
    assert!(m.contains("expected [1, height, width, 3]"), "{m}");
    let m = err(&|b| {
        let x = b.tensor("x", DType::U8, &[1, 5, 4, 1], q.clone());
        let o = b.tensor("o", DType::U8, &[4, 3, 2, 1], q.clone());
        b.op(Op::SpaceToBatch {
            input: x,
            output: o,
            block: [2, 2],
            paddings: [[0, 0], [0, 0]],
        });
        (x, o)
    });
    assert!(
        m.contains("SpaceToBatch") && m.contains("not a whole number"),
        "{m}"
    );
    let m = err(&|b| {
        let x = b.tensor("x", DType::U8, &[1, 4, 4, 1], q.clone());
        let o = b.tensor("o", DType::U8, &[4, 2, 2, 1], pt(0.2, 0));
        b.op(Op::SpaceToBatch {
            input: x,
            output: o,
            block: [2, 2],
            paddings: [[0, 0], [0, 0]],
        });
        (x, o)
    });
    assert!(m.contains("SpaceToBatch") && m.contains("share"), "{m}");
    let m = err(&|b| {
        let x = b.tensor("x", DType::U8, &[6, 2, 2, 1], q.clone());
        let o = b.tensor("o", DType::U8, &[1, 4, 4, 1], q.clone());
        b.op(Op::BatchToSpace {
            input: x,
            output: o,
            block: [2, 2],
            crops: [[0, 0], [0, 0]],
        });
        (x, o)
    });
    assert!(m.contains("BatchToSpace") && m.contains("6 batches"), "{m}");
    let m = err(&|b| {
        let x = b.tensor("x", DType::U8, &[4, 2, 2, 1], q.clone());
        let o = b.tensor("o", DType::U8, &[1, 1, 4, 1], q.clone());
        b.op(Op::BatchToSpace {
            input: x,
            output: o,
            block: [2, 2],
            crops: [[2, 2], [0, 0]],
        });
        (x, o)
    });
    assert!(m.contains("leave nothing"), "{m}");
    let m = err(&|b| {
        let x = b.tensor("x", DType::I8, &[1, 2, 2, 6], q.clone());
        let o = b.tensor("o", DType::I8, &[1, 4, 4, 1], q.clone());
        b.op(Op::DepthToSpace {
            input: x,
            output: o,
            block: 2,
        });
        (x, o)
    });
    assert!(
        m.contains("DepthToSpace") && m.contains("not a multiple of block 2"),
        "{m}"
    );
}

/// uint8 TransposeConv forms its multiplier as TFLite's legacy path does, from the f32 product
/// `S_in * S_w`; int8 from the f64 product. A bias that puts the accumulator where the two
/// multipliers round apart tells them apart.
#[test]
fn uint8_multiplier_takes_the_f32_product_and_int8_the_f64_one() {
    use intq_quant::QuantizedMultiplier;
    let (s_in, s_w, s_out) = (0.167_263_5f32, 0.004_682_792_4f32, 0.572_114f32);
    let m32 = QuantizedMultiplier::from_real((s_in * s_w) as f64 / s_out as f64).unwrap();
    let m64 = QuantizedMultiplier::from_real(s_in as f64 * s_w as f64 / s_out as f64).unwrap();
    assert_ne!(
        m32, m64,
        "the two products must differ for this test to mean anything"
    );
    let acc = (-200_000..200_000)
        .find(|&a| m32.apply(a) != m64.apply(a))
        .expect("an accumulator where the multipliers round apart");
    for (dtype, m) in [(DType::U8, m32), (DType::I8, m64)] {
        let (lo, hi) = limits(dtype);
        let z_out = (lo + hi + 1) / 2;
        let mut b = GraphBuilder::new();
        let x = b.tensor("x", dtype, &[1, 1, 1, 1], pt(s_in, 0));
        let data = match dtype {
            DType::U8 => TensorData::U8(vec![7]),
            _ => TensorData::I8(vec![7]),
        };
        let w = b.constant("w", &[1, 1, 1, 1], pt(s_w, 0), data);
        let bias = b.constant("bias", &[1], None, TensorData::I32(vec![acc]));
        let y = b.tensor("y", dtype, &[1, 1, 1, 1], pt(s_out, z_out));
        b.op(Op::TransposeConv {
            input: x,
            filter: w,
            bias: Some(bias),
            output: y,
            stride: [1, 1],
            padding: Padding::Valid,
            activation: Activation::None,
        });
        b.input(x).output(y);
        let model = Model::new(b.finish().unwrap()).unwrap();
        // Input code 0 = Z_in: the products vanish and the accumulator is the bias.
        let input = match dtype {
            DType::U8 => TensorData::U8(vec![0]),
            _ => TensorData::I8(vec![0]),
        };
        let got = as_i32(&model.run(&[input]).unwrap()[0])[0];
        assert_eq!(got, (m.apply(acc) + z_out).clamp(lo, hi), "{dtype}");
    }
}
