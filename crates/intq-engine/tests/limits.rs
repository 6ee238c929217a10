//! Int32 accumulator limits (src/limits.rs): the largest K each scheme accepts, refused one past
//! it, and a model exactly at the limit computes the true sum on its worst-case input.

use intq_engine::{
    Activation, DType, Graph, GraphBuilder, Model, Op, Quant, QuantParams, TensorData,
};

fn pt(scale: f32, zero_point: i32) -> Option<Quant> {
    Some(Quant::PerTensor(
        QuantParams::new(scale, zero_point).unwrap(),
    ))
}

/// x `[1, k]` -> FC with every weight at `w_code` (zero point `w_zp`) -> one output, with bias.
fn fc(
    dtype: DType,
    k: usize,
    x_zp: i32,
    w_code: i32,
    w_zp: i32,
    bias: i32,
) -> Result<Graph, String> {
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", dtype, &[1, k], pt(1.0, x_zp));
    let data = match dtype {
        DType::U8 => TensorData::U8(vec![w_code as u8; k]),
        _ => TensorData::I8(vec![w_code as i8; k]),
    };
    let w = b.constant("w", &[1, k], pt(1.0, w_zp), data);
    let bias = b.constant("b", &[1], None, TensorData::I32(vec![bias]));
    // The output scale makes the requantized result the accumulator / 2^24, within range.
    let y = b.tensor("y", dtype, &[1, 1], pt((1u64 << 24) as f32, 0));
    b.op(Op::FullyConnected {
        input: x,
        weights: w,
        bias: Some(bias),
        output: y,
        activation: Activation::None,
    });
    b.input(x).output(y);
    b.finish().map_err(|e| e.to_string())
}

#[test]
fn uint8_narrow_weights_accept_k_33155_and_refuse_33156() {
    // |x - Z_x| up to 255 (Z_x = 0), |w - Z_w| = 254 (w = 255, Z_w = 1).
    assert!(fc(DType::U8, 33_155, 0, 255, 1, 0).is_ok());
    let err = fc(DType::U8, 33_156, 0, 255, 1, 0).unwrap_err();
    assert!(
        err.contains("op 0 (FullyConnected)") && err.contains("can overflow"),
        "{err}"
    );
    assert!(err.contains("K = 33156"), "{err}");
}

#[test]
fn uint8_full_range_weights_accept_k_33025() {
    assert!(fc(DType::U8, 33_025, 0, 255, 0, 0).is_ok());
    assert!(fc(DType::U8, 33_026, 0, 255, 0, 0).is_err());
    // The worst input distance is measured from the zero point on either side.
    assert!(fc(DType::U8, 33_025, 255, 0, 255, 0).is_ok());
    assert!(fc(DType::U8, 33_026, 255, 0, 255, 0).is_err());
}

#[test]
fn int8_symmetric_weights_accept_k_66311_and_refuse_66312() {
    // Z_x = -128 gives |x - Z_x| up to 255; |w| = 127.
    assert!(fc(DType::I8, 66_311, -128, 127, 0, 0).is_ok());
    assert!(fc(DType::I8, 66_312, -128, -127, 0, 0).is_err());
    // A centred input zero point halves the input distance, so K doubles.
    assert!(fc(DType::I8, 130_000, 0, 127, 0, 0).is_ok());
}

#[test]
fn bias_counts_toward_the_bound() {
    let room = i32::MAX as i64 - 255 * 254 * 33_155;
    assert!(fc(DType::U8, 33_155, 0, 255, 1, room as i32).is_ok());
    assert!(fc(DType::U8, 33_155, 0, 255, 1, room as i32 + 1).is_err());
    // Negative bias meets the negative extreme, reached with Z_x = 255 (x - Z_x in [-255, 0]).
    assert!(fc(DType::U8, 33_155, 255, 255, 1, -(room as i32) - 1).is_ok());
    assert!(fc(DType::U8, 33_155, 255, 255, 1, -(room as i32) - 2).is_err());
    // An extreme bias alone is fine where the weights sit at their zero point.
    assert!(fc(DType::U8, 33_155, 0, 1, 1, i32::MIN).is_ok());
    assert!(fc(DType::U8, 33_155, 0, 1, 1, i32::MAX).is_ok());
}

#[test]
fn at_the_limit_the_worst_input_gives_the_true_sum() {
    let k = 33_155usize;
    let room = (i32::MAX as i64 - 255 * 254 * k as i64) as i32;
    let model = Model::new(fc(DType::U8, k, 0, 255, 1, room).unwrap()).unwrap();
    let out = model.run(&[TensorData::U8(vec![255; k])]).unwrap();
    // acc = 2^31 - 1 exactly; requantized by 2^-24 it is 128 (127.99.. rounded), not a wrapped
    // negative number clamped to 0.
    let expected = ((i32::MAX as f64) / (1u64 << 24) as f64).round() as u8;
    assert_eq!(out[0], TensorData::U8(vec![expected]));
}

#[test]
fn conv_and_depthwise_bound_per_output_channel() {
    // Conv 1x1 with 33,156 input channels: channel 0 all-zero weights, channel 1 extreme.
    let ic = 33_156;
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::U8, &[1, 1, 1, ic], pt(1.0, 0));
    let mut w = vec![1u8; ic];
    w.extend(std::iter::repeat_n(255u8, ic));
    let f = b.constant("f", &[2, 1, 1, ic], pt(1.0, 1), TensorData::U8(w));
    let y = b.tensor("y", DType::U8, &[1, 1, 1, 2], pt((1u64 << 24) as f32, 0));
    b.op(Op::Conv2d {
        input: x,
        filter: f,
        bias: None,
        output: y,
        stride: [1, 1],
        dilation: [1, 1],
        padding: intq_engine::Padding::Valid,
        activation: Activation::None,
    });
    b.input(x).output(y);
    let err = b.finish().unwrap_err().to_string();
    assert!(
        err.contains("output channel 1 ranges over [0, 2147514120]"),
        "{err}"
    );
}
