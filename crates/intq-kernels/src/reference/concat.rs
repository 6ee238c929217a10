//! Reference concatenation; inputs whose `(S, Z)` differ from the output's are requantized through
//! a 256-entry table built at load time with TFLite's f32 arithmetic (SPEC §4, "Concat").

use crate::QElem;
use intq_quant::QuantParams;

/// `table[q - T::MIN]` is the output code of input code `q`.
#[derive(Debug, Clone, PartialEq)]
pub struct RequantTable<T: QElem> {
    pub table: Vec<T>,
}

impl<T: QElem> RequantTable<T> {
    /// `q_out = clamp(round(q_in * s + b) + Z_out)` with `s = S_in * (1 / S_out)` and
    /// `b = -Z_in * s`, all in f32, `round` half away from zero: TFLite's uint8 reference.
    pub fn new(input: QuantParams, output: QuantParams) -> Self {
        let _ = (input, output);
        unimplemented!("RequantTable lands with the concat kernel")
    }
}

/// One input of a concatenation.
#[derive(Debug, Clone, Copy)]
pub struct ConcatInput<'a, T: QElem> {
    pub data: &'a [T],
    pub shape: &'a [usize],
    /// `None` when the input's `(S, Z)` equal the output's: a plain copy.
    pub requant: Option<&'a RequantTable<T>>,
}

/// Concatenates `inputs` along `axis`; all other dimensions must agree.
pub fn concat<T: QElem>(
    inputs: &[ConcatInput<T>],
    axis: usize,
    output: &mut [T],
    output_shape: &[usize],
) {
    let _ = (inputs, axis, output, output_shape);
    unimplemented!("concat reference lands with the concat kernel")
}
