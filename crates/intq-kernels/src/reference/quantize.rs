//! Reference edge conversions (Quantize, Dequantize) and Reshape, which moves no arithmetic.

use crate::QElem;
use intq_quant::QuantParams;

/// Real to code at the model's input edge (TFLite's reference Quantize).
pub fn quantize<T: QElem>(input: &[f32], params: QuantParams, output: &mut [T]) {
    let _ = (input, params, output);
    unimplemented!("quantize lands with the edge kernels")
}

/// Code to real at the model's output edge (TFLite's reference Dequantize).
pub fn dequantize<T: QElem>(input: &[T], params: QuantParams, output: &mut [f32]) {
    let _ = (input, params, output);
    unimplemented!("dequantize lands with the edge kernels")
}

/// Reshape: the codes are copied unchanged; input and output share `(S, Z)`.
pub fn reshape<T: QElem>(input: &[T], output: &mut [T]) {
    output.copy_from_slice(input);
}
