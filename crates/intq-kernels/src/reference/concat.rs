//! Reference concatenation; inputs whose `(S, Z)` differ from the output's are requantized through
//! a 256-entry table built at load time with TFLite's f32 arithmetic (docs/spec.md §4.8).

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
    ///
    /// The operations and their order are those of `ConcatenationWithScaling`, so every rounding
    /// of the f32 intermediates happens as it does there (Rust never fuses `*` and `+` into an
    /// FMA; a TFLite build that did, e.g. with `-ffp-contract=fast` on an FMA target, could
    /// differ at exact ties). TFLite's int8 Concat instead requires equal parameters; for `i8`
    /// the table applies the same formula within the signed limits.
    pub fn new(input: QuantParams, output: QuantParams) -> Self {
        let inverse_output_scale = 1.0f32 / output.scale;
        let scale = input.scale * inverse_output_scale;
        let bias = -(input.zero_point as f32) * scale;
        let table = (T::MIN..=T::MAX)
            .map(|q| {
                // f32::round is half away from zero, as C's roundf; `as` saturates where a C++
                // cast of an out-of-range float would be undefined.
                let rounded = ((q as f32) * scale + bias).round() as i32;
                T::from_i32_saturating(rounded.saturating_add(output.zero_point))
            })
            .collect();
        RequantTable { table }
    }

    /// The output code of input code `q`.
    #[inline]
    pub fn map(&self, q: T) -> T {
        self.table[(q.to_i32() - T::MIN) as usize]
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
    let rank = output_shape.len();
    assert!(axis < rank, "concat axis {axis} out of rank {rank}");
    let mut axis_total = 0;
    for (i, input) in inputs.iter().enumerate() {
        assert_eq!(input.shape.len(), rank, "input {i} rank");
        for d in (0..rank).filter(|&d| d != axis) {
            assert_eq!(input.shape[d], output_shape[d], "input {i} dimension {d}");
        }
        assert_eq!(
            input.data.len(),
            input.shape.iter().product::<usize>(),
            "input {i} length"
        );
        axis_total += input.shape[axis];
    }
    assert_eq!(axis_total, output_shape[axis], "concat axis extent");
    assert_eq!(
        output.len(),
        output_shape.iter().product::<usize>(),
        "output length"
    );

    let outer: usize = output_shape[..axis].iter().product();
    let inner: usize = output_shape[axis + 1..].iter().product();
    let mut out = 0;
    for k in 0..outer {
        for input in inputs {
            let chunk = input.shape[axis] * inner;
            let src = &input.data[k * chunk..(k + 1) * chunk];
            let dst = &mut output[out..out + chunk];
            match input.requant {
                None => dst.copy_from_slice(src),
                Some(table) => {
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d = table.map(s);
                    }
                }
            }
            out += chunk;
        }
    }
}
