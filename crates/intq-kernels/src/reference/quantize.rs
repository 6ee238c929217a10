//! Reference edge conversions (Quantize, Dequantize) and Reshape, which moves no arithmetic.

use crate::QElem;
use intq_quant::QuantParams;

/// Real to code at the model's input edge (TFLite's reference Quantize):
/// `clamp(round(x / S) + Z)` in f32, rounding half away from zero, clamped to the type's limits.
pub fn quantize<T: QElem>(input: &[f32], params: QuantParams, output: &mut [T]) {
    quantize_to(input, params, (T::MIN, T::MAX), output)
}

/// [`quantize`] into the codes `qmin..=qmax` (inside `T`'s range): a narrowed activation,
/// such as a 4-bit one, clamps where training's fake quantization did.
pub fn quantize_to<T: QElem>(
    input: &[f32],
    params: QuantParams,
    (qmin, qmax): (i32, i32),
    output: &mut [T],
) {
    assert_eq!(input.len(), output.len(), "quantize keeps the shape");
    for (o, &x) in output.iter_mut().zip(input) {
        *o = T::from_i32_saturating(params.quantize(x, qmin, qmax));
    }
}

/// Code to real at the model's output edge (TFLite's reference Dequantize): `S * (q - Z)`.
pub fn dequantize<T: QElem>(input: &[T], params: QuantParams, output: &mut [f32]) {
    assert_eq!(input.len(), output.len(), "dequantize keeps the shape");
    for (o, &q) in output.iter_mut().zip(input) {
        *o = params.dequantize(q.to_i32());
    }
}

/// Reshape: the codes are copied unchanged; input and output share `(S, Z)`.
pub fn reshape<T: QElem>(input: &[T], output: &mut [T]) {
    output.copy_from_slice(input);
}
