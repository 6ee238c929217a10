//! A seeded generator for tests: the rand project's SplitMix64 with the draws the tests share
//! (ranges, log-uniform scales, codes with their extremes over-represented). Every case is
//! seeded, so a failure reproduces from the seed it prints.

use intq_kernels::QElem;
use rand::distr::uniform::SampleUniform;
use rand::RngExt;
use rand_core::{SeedableRng, TryRng};
use rand_xoshiro::SplitMix64;
use std::convert::Infallible;

/// A seeded generator (SplitMix64) with test draws on top. It is a `rand_core::Rng`, so the
/// rand crate's methods take it too.
#[derive(Debug, Clone)]
pub struct TestRng(SplitMix64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(SplitMix64::seed_from_u64(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        rand_core::Rng::next_u64(&mut self.0)
    }

    /// Uniform in `lo..=hi`.
    pub fn int<T: SampleUniform + PartialOrd>(&mut self, lo: T, hi: T) -> T {
        self.0.random_range(lo..=hi)
    }

    /// Uniform in `lo..=hi`.
    pub fn size(&mut self, lo: usize, hi: usize) -> usize {
        self.int(lo, hi)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0.random()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.0.random_bool(p)
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.size(0, xs.len() - 1)]
    }

    /// `2^u` with `u` uniform in `[lo_exp, hi_exp)`, as f32 (how scales are stored): scales
    /// spread over orders of magnitude.
    pub fn log_scale(&mut self, lo_exp: f64, hi_exp: f64) -> f32 {
        2f64.powf(lo_exp + (hi_exp - lo_exp) * self.unit()) as f32
    }

    /// A code of `T`, each extreme a sixth of the time (where saturation bugs live).
    pub fn code<T: QElem>(&mut self) -> T {
        let v = match self.int(0, 5) {
            0 => T::MIN,
            1 => T::MAX,
            _ => self.int(T::MIN, T::MAX),
        };
        T::from_i32_saturating(v)
    }

    pub fn codes<T: QElem>(&mut self, n: usize) -> Vec<T> {
        (0..n).map(|_| self.code()).collect()
    }

    /// A code in `lo..=hi`, drawn from the extremes (and their neighbours) a quarter of the time
    /// so that saturation-prone values show up in every case.
    pub fn code_in(&mut self, lo: i32, hi: i32) -> i32 {
        if self.chance(0.25) {
            self.pick(&[lo, hi, lo + 1, hi - 1]).clamp(lo, hi)
        } else {
            self.int(lo, hi)
        }
    }

    /// A zero point of `T`: an extreme, the middle, or anything in the type.
    pub fn zero_point<T: QElem>(&mut self) -> i32 {
        match self.int(0, 5) {
            0 => T::MIN,
            1 => T::MAX,
            2 => (T::MIN + T::MAX + 1) / 2,
            _ => self.int(T::MIN, T::MAX),
        }
    }
}

impl TryRng for TestRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.0.try_next_u32()
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.0.try_next_u64()
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.try_fill_bytes(dst)
    }
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

/// Codes widened to i32.
pub fn widen<T: QElem>(values: &[T]) -> Vec<i32> {
    values.iter().map(|v| v.to_i32()).collect()
}

/// `n` reals uniform in `[lo, hi)` from `seed`.
pub fn floats(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = TestRng::new(seed);
    (0..n).map(|_| rng.0.random_range(lo..hi)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_range_and_reach_the_extremes() {
        let mut rng = TestRng::new(5);
        let codes: Vec<i8> = rng.codes(600);
        assert!(codes.contains(&i8::MIN) && codes.contains(&i8::MAX));
        for _ in 0..1000 {
            assert!((-3..=4).contains(&rng.int(-3, 4)));
            assert!((0.0..1.0).contains(&rng.unit()));
            let s = rng.log_scale(-3.0, 2.0);
            assert!((0.125..4.0).contains(&s), "{s}");
            assert!((10..=12).contains(&rng.code_in(10, 12)));
            assert!((0..=255).contains(&rng.zero_point::<u8>()));
        }
        let f = floats(9, 1000, -1.0, 1.0);
        assert!(f.iter().all(|v| (-1.0..1.0).contains(v)));
        assert_ne!(f, floats(10, 1000, -1.0, 1.0));
    }

    #[test]
    fn a_seed_names_one_stream() {
        let draw = |seed| {
            let mut r = TestRng::new(seed);
            (0..8).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        // SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        assert_eq!(draw(0)[0], 0xE220_A839_7B1D_CDAF);
    }
}
