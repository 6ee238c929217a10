//! Scheme math for affine quantization `r = S * (q - Z)` (Jacob et al. 2018), as docs/spec.md
//! writes it: choosing parameters from a range with nudging (§1.3), quantize/dequantize (§4.12),
//! the fixed-point multiplier `M ≈ m0 * 2^(shift - 31)` (§4.1), gemmlowp's rounding primitives
//! (§4.2, §4.3) and fixed-point arithmetic (§4.9), and TFLite's double multiplier (§6.1).
//!
//! This crate has no dependencies and no `unsafe`; every integer kernel in intq is defined in terms
//! of the functions here.

mod double_multiplier;
mod error;
pub mod fixedpoint;
mod multiplier;
mod params;
mod rounding;
mod scheme;

pub use double_multiplier::DoubleMultiplier;
pub use error::QuantError;
pub use multiplier::QuantizedMultiplier;
pub use params::{ChannelParams, QuantParams};
pub use rounding::{
    multiply_by_quantized_multiplier, rounding_divide_by_pot, saturating_rounding_doubling_high_mul,
};
pub use scheme::{QScheme, Range};
