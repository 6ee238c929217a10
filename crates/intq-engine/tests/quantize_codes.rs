//! Quantize with a quantized input: the exact uint8 <-> int8 shift at one scale (TFLite's
//! QUANTIZE with a unit multiplier), which lets a model take raw uint8 pixels and compute in int8.

use intq_engine::{DType, Graph, GraphBuilder, Model, Op, Quant, QuantParams, TensorData};

fn graph(from: DType, pin: QuantParams, to: DType, pout: QuantParams) -> Result<Graph, String> {
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", from, &[1, 2, 2, 64], Some(Quant::PerTensor(pin)));
    let y = b.tensor("y", to, &[1, 2, 2, 64], Some(Quant::PerTensor(pout)));
    b.op(Op::Quantize {
        input: x,
        output: y,
    });
    b.input(x);
    b.output(y);
    b.finish().map_err(|e| e.to_string())
}

fn p(scale: f32, zero_point: i32) -> QuantParams {
    QuantParams { scale, zero_point }
}

#[test]
fn uint8_pixels_become_int8_codes_minus_128_and_keep_their_real_values() {
    let s = 1.0 / (255.0 * 0.25);
    let g = graph(DType::U8, p(s, 124), DType::I8, p(s, -4)).unwrap();
    let m = Model::new(g).unwrap();
    let pixels: Vec<u8> = (0..=255).collect();
    let out = m.run(&[TensorData::U8(pixels.clone())]).unwrap();
    let want: Vec<i8> = pixels.iter().map(|&v| (v as i32 - 128) as i8).collect();
    assert_eq!(out[0], TensorData::I8(want.clone()));
    // The float executor carries reals: the same values on both sides of the op.
    let f = m.run_float(&[TensorData::U8(pixels.clone())]).unwrap();
    for (r, &q) in f[0].iter().zip(&want) {
        assert_eq!(*r, p(s, -4).dequantize(q as i32));
    }
    // And back: int8 to uint8 adds 128.
    let g = graph(DType::I8, p(s, -4), DType::U8, p(s, 124)).unwrap();
    let back = Model::new(g).unwrap().run(&[TensorData::I8(want)]).unwrap();
    assert_eq!(back[0], TensorData::U8(pixels));
}

#[test]
fn a_quantize_of_codes_that_would_need_a_multiplier_is_refused() {
    for (pout, to) in [
        (p(0.5, -128), DType::I8),
        (p(1.0 / 255.0, -127), DType::I8),
        (p(1.0 / 255.0, 1), DType::U8),
    ] {
        let e = graph(DType::U8, p(1.0 / 255.0, 0), to, pout).unwrap_err();
        assert!(e.contains("only moves between uint8 and int8"), "{e}");
    }
    // The same type and params is a plain copy.
    let g = graph(DType::U8, p(0.1, 3), DType::U8, p(0.1, 3)).unwrap();
    let out = Model::new(g)
        .unwrap()
        .run(&[TensorData::U8(vec![7; 256])])
        .unwrap();
    assert_eq!(out[0], TensorData::U8(vec![7; 256]));
}
