//! The 8-bit code types a quantized tensor may hold.

/// An 8-bit quantized code: `u8` (the paper's scheme) or `i8` (TFLite's current scheme).
pub trait QElem: Copy + Default + Send + Sync + std::fmt::Debug + PartialEq + 'static {
    /// The type's smallest code, as i32.
    const MIN: i32;
    /// The type's largest code, as i32.
    const MAX: i32;
    /// The code widened to i32.
    fn to_i32(self) -> i32;
    /// `v` saturated to the type's limits.
    fn from_i32_saturating(v: i32) -> Self;
}

impl QElem for u8 {
    const MIN: i32 = 0;
    const MAX: i32 = 255;
    #[inline]
    fn to_i32(self) -> i32 {
        self as i32
    }
    #[inline]
    fn from_i32_saturating(v: i32) -> Self {
        v.clamp(0, 255) as u8
    }
}

impl QElem for i8 {
    const MIN: i32 = -128;
    const MAX: i32 = 127;
    #[inline]
    fn to_i32(self) -> i32 {
        self as i32
    }
    #[inline]
    fn from_i32_saturating(v: i32) -> Self {
        v.clamp(-128, 127) as i8
    }
}
