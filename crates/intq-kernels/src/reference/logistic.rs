//! Reference Logistic: TFLite's integer routine (gemmlowp fixed-point logistic on a Q4 input),
//! run once per possible input code at load time into a 256-entry table (SPEC §4).

use crate::QElem;
use intq_quant::QuantParams;

/// Output codes for every input code; output params are fixed at `S = 1/256`, `Z = 0` (uint8) or
/// `Z = -128` (int8).
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticTable<T: QElem> {
    pub table: Vec<T>,
}

impl<T: QElem> LogisticTable<T> {
    pub fn new(input: QuantParams) -> Self {
        let _ = input;
        unimplemented!("LogisticTable lands with the logistic kernel")
    }
}

/// `output[i] = table[input[i]]`.
pub fn logistic<T: QElem>(input: &[T], table: &LogisticTable<T>, output: &mut [T]) {
    let _ = (input, table, output);
    unimplemented!("logistic reference lands with the logistic kernel")
}
