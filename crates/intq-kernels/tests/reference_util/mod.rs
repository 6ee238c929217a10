//! Shared helpers of the non-convolution reference kernel tests: the f64 float model's
//! requantization and code conversions (the seeded generator is intq-testutil's).
#![allow(dead_code)] // each test binary uses a different subset

use intq_quant::QuantParams;

/// Seeded, so every failure reproduces.
pub use intq_testutil::TestRng as Rng;

/// The float model's requantization: `clamp(round_half_away(r / S) + Z)`, in f64.
pub fn requantize_f64(r: f64, out: QuantParams, qmin: i32, qmax: i32) -> i32 {
    let v = (r / out.scale as f64).round() + out.zero_point as f64;
    v.clamp(qmin as f64, qmax as f64) as i32
}

/// The real value of code `q`, in f64.
pub fn real(q: i32, p: QuantParams) -> f64 {
    p.scale as f64 * (q - p.zero_point) as f64
}

pub use intq_testutil::{codes, widen};

pub fn qp(scale: f32, zero_point: i32) -> QuantParams {
    QuantParams::new(scale, zero_point).unwrap()
}
