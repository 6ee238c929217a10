//! Requantization as data: the fused output stage that turns an int32 accumulator into an 8-bit
//! code (bias, fixed-point multiplier, zero point, clamp, cast), after gemmlowp's output stages.

use intq_quant::QuantizedMultiplier;

/// One multiplier for the whole tensor, or one per output channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Multipliers<'a> {
    PerTensor(QuantizedMultiplier),
    PerChannel(&'a [QuantizedMultiplier]),
}

/// `q_out = clamp(MBQM(acc + bias[k], m0[k], shift[k]) + Z_out, clamp_min, clamp_max)`
/// (docs/spec.md §4.4).
///
/// `clamp_min..=clamp_max` is the fused activation expressed in output codes, already intersected
/// with the output type's limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputStage<'a> {
    /// int32 bias per output channel, in units of `S_in * S_w[k]`; `None` means zero.
    pub bias: Option<&'a [i32]>,
    pub multipliers: Multipliers<'a>,
    pub output_zero_point: i32,
    pub clamp_min: i32,
    pub clamp_max: i32,
}

impl OutputStage<'_> {
    /// The output code of channel `k` for accumulator `acc` (the sum of products, without bias).
    ///
    /// The bias add wraps like TFLite's int32 `acc += bias` does on every real target.
    #[inline]
    pub fn apply(&self, acc: i32, k: usize) -> i32 {
        let acc = match self.bias {
            Some(b) => acc.wrapping_add(b[k]),
            None => acc,
        };
        let m = match self.multipliers {
            Multipliers::PerTensor(m) => m,
            Multipliers::PerChannel(ms) => ms[k],
        };
        m.apply(acc)
            .saturating_add(self.output_zero_point)
            .clamp(self.clamp_min, self.clamp_max)
    }
}
