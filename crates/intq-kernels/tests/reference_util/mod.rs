//! Shared helpers of the non-convolution reference kernel tests: a seeded generator, the f64
//! float model's requantization, and random quantization parameters that favour the extremes.
#![allow(dead_code)] // each test binary uses a different subset

use intq_kernels::QElem;
use intq_quant::QuantParams;

/// xorshift64: deterministic, so every failure reproduces.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i32
    }
    pub fn usize(&mut self, lo: usize, hi: usize) -> usize {
        self.range(lo as i32, hi as i32) as usize
    }
    /// `2^e` for `e` uniform in `[lo, hi)`, as f32 (how scales are stored).
    pub fn log_scale(&mut self, lo: f64, hi: f64) -> f32 {
        2f64.powf(lo + (hi - lo) * self.unit()) as f32
    }
    /// A code of `T`, with the two extremes over-represented.
    pub fn code<T: QElem>(&mut self) -> i32 {
        match self.range(0, 9) {
            0 => T::MIN,
            1 => T::MAX,
            _ => self.range(T::MIN, T::MAX),
        }
    }
    /// A zero point of `T`: the extremes, the middle, or anything.
    pub fn zero_point<T: QElem>(&mut self) -> i32 {
        match self.range(0, 5) {
            0 => T::MIN,
            1 => T::MAX,
            2 => (T::MIN + T::MAX + 1) / 2,
            _ => self.range(T::MIN, T::MAX),
        }
    }
    pub fn codes<T: QElem>(&mut self, n: usize) -> Vec<T> {
        (0..n)
            .map(|_| T::from_i32_saturating(self.code::<T>()))
            .collect()
    }
}

/// The float model's requantization: `clamp(round_half_away(r / S) + Z)`, in f64.
pub fn requantize_f64(r: f64, out: QuantParams, qmin: i32, qmax: i32) -> i32 {
    let v = (r / out.scale as f64).round() + out.zero_point as f64;
    v.clamp(qmin as f64, qmax as f64) as i32
}

/// The real value of code `q`, in f64.
pub fn real(q: i32, p: QuantParams) -> f64 {
    p.scale as f64 * (q - p.zero_point) as f64
}

/// `values` as codes of `T`; panics on a value outside the type (a mistake in the test).
pub fn codes<T: QElem>(values: &[i32]) -> Vec<T> {
    values
        .iter()
        .map(|&v| {
            assert!((T::MIN..=T::MAX).contains(&v), "test code {v} out of range");
            T::from_i32_saturating(v)
        })
        .collect()
}

pub fn widen<T: QElem>(values: &[T]) -> Vec<i32> {
    values.iter().map(|v| v.to_i32()).collect()
}

pub fn qp(scale: f32, zero_point: i32) -> QuantParams {
    QuantParams::new(scale, zero_point).unwrap()
}
