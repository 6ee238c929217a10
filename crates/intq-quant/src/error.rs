//! The one error type of the scheme math.

use std::fmt;

/// Why a quantization parameter or multiplier could not be formed.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantError {
    /// A range bound or scale is NaN or infinite.
    NonFinite { what: &'static str, value: f64 },
    /// A range whose minimum exceeds its maximum.
    InvertedRange { min: f64, max: f64 },
    /// Bit widths outside 2..=8 are not representable in the engine's 8-bit storage.
    BadBitWidth(u8),
    /// A real multiplier that is negative, or too large for an int32 left shift of at most 31.
    MultiplierOutOfRange(f64),
    /// A scale that is not a positive finite number.
    BadScale(f64),
    /// A symmetric scheme needs a signed integer type: with Z = 0 an unsigned one holds no negatives.
    SymmetricUnsigned,
    /// Per-channel parameters whose vectors disagree in length, or are empty.
    ChannelMismatch { scales: usize, zero_points: usize },
    /// A zero point outside the integer type's limits.
    BadZeroPoint {
        zero_point: i32,
        qmin: i32,
        qmax: i32,
    },
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantError::NonFinite { what, value } => write!(f, "{what} is not finite ({value})"),
            QuantError::InvertedRange { min, max } => {
                write!(f, "range minimum {min} is greater than its maximum {max}")
            }
            QuantError::BadBitWidth(b) => write!(f, "bit width {b} is outside 2..=8"),
            QuantError::MultiplierOutOfRange(m) => write!(
                f,
                "real multiplier {m} cannot be represented (must be finite, >= 0 and < 2^31)"
            ),
            QuantError::BadScale(s) => write!(f, "scale {s} is not a positive finite number"),
            QuantError::SymmetricUnsigned => {
                write!(f, "a symmetric scheme needs a signed integer type")
            }
            QuantError::ChannelMismatch {
                scales,
                zero_points,
            } => write!(
                f,
                "per-channel parameters have {scales} scales and {zero_points} zero points"
            ),
            QuantError::BadZeroPoint {
                zero_point,
                qmin,
                qmax,
            } => {
                write!(f, "zero point {zero_point} is outside [{qmin}, {qmax}]")
            }
        }
    }
}

impl std::error::Error for QuantError {}
