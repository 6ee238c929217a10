//! Helpers of training's f32 passes that need `unsafe`, kept in this crate with the rest of
//! intq's unsafe code: vectors built in parallel chunks without a serial zeroing pass, closures
//! compiled for AVX-512 where the CPU has it, and a batch norm backward's lane sums in AVX
//! registers. None of this runs in inference.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// A fresh vector of `len` values made `chunk` at a time (the last chunk may be shorter), chunks
/// in parallel: each is zeroed, then handed to `f` with its index and the per-thread state
/// `init` makes; `f`'s results come back in chunk order.
///
/// Why: a large `vec![0; len]` is zeroed by the allocator on one thread, a cold pass over the
/// whole buffer ahead of the kernel's own. Here each thread zeroes only its chunk, right before
/// the kernel writes it, while it is in cache.
pub fn par_new<T, S, R>(
    len: usize,
    chunk: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) -> R + Sync + Send,
) -> (Vec<T>, Vec<R>)
where
    T: Copy + Default + Send,
    R: Send,
{
    let mut v = Vec::with_capacity(len);
    let r = v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .map_init(init, |s, (i, c)| {
            c.fill(MaybeUninit::new(T::default()));
            // SAFETY: every element of `c` was initialized just above, and `MaybeUninit<T>` has
            // the layout of `T`.
            let c = unsafe { &mut *(c as *mut [MaybeUninit<T>] as *mut [T]) };
            f(s, i, c)
        })
        .collect();
    // SAFETY: the chunks cover `..len` (the capacity is at least `len`) and every one of them
    // was initialized above; had `f` panicked, the panic would have left before this line.
    unsafe { v.set_len(len) };
    (v, r)
}

/// [`par_new`] for two vectors of `len` values chunked alike, with no per-thread state and no
/// results.
pub fn par_new2<T, U>(
    len: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [T], &mut [U]) + Sync + Send,
) -> (Vec<T>, Vec<U>)
where
    T: Copy + Default + Send,
    U: Copy + Default + Send,
{
    let (mut a, mut b) = (Vec::with_capacity(len), Vec::with_capacity(len));
    let chunk = chunk.max(1);
    a.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk)
        .zip(b.spare_capacity_mut()[..len].par_chunks_mut(chunk))
        .enumerate()
        .for_each(|(i, (ca, cb))| {
            ca.fill(MaybeUninit::new(T::default()));
            cb.fill(MaybeUninit::new(U::default()));
            // SAFETY: as in `par_new`: both chunks were initialized just above.
            let ca = unsafe { &mut *(ca as *mut [MaybeUninit<T>] as *mut [T]) };
            // SAFETY: the same.
            let cb = unsafe { &mut *(cb as *mut [MaybeUninit<U>] as *mut [U]) };
            f(i, ca, cb)
        });
    // SAFETY: the chunks cover `..len` of both and were all initialized above.
    unsafe {
        a.set_len(len);
        b.set_len(len);
    }
    (a, b)
}

/// `f()`, compiled for AVX-512 where the CPU has it.
///
/// Why: this crate builds for baseline x86-64 (SSE2), where the element loops of the batch norm,
/// pooling and im2col passes compile to 4-lane vectors with branches for their selects. `f` is
/// inlined into a copy built with AVX-512 enabled: the same operations in the same order (no
/// fused multiply-adds, which Rust never forms on its own), so the results are bit-identical.
/// Call it inside each parallel chunk, around the loops themselves: calls `f` does not inline
/// keep the baseline code, and `f` should be an `#[inline(always)]` closure (called from two
/// places, an ordinary one would not be inlined).
#[inline(always)]
pub fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        /// # Safety
        /// The CPU must have AVX-512 F, BW, VL and DQ.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
        unsafe fn wide<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the features `wide` enables were just detected.
            return unsafe { wide(f) };
        }
    }
    f()
}

/// Pass 1 of a batch norm backward (training's, with its activation's clamp `[lo, hi]`) over one plane's whole chunks of eight: per lane, the sums of `dz`
/// and of `dz * x_hat`, lanes added in chunk order.
pub fn bn_lane_sums8(
    yc: std::slice::ChunksExact<'_, f32>,
    gc: std::slice::ChunksExact<'_, f32>,
    k: (f32, f32, f32, f32),
    lo: f32,
    hi: f32,
) -> ([f32; 8], [f32; 8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: AVX was just detected.
        return unsafe { bn_lane_sums8_avx(yc, gc, k, lo, hi) };
    }
    let (mut sb, mut sg) = ([0f32; 8], [0f32; 8]);
    for (y8, g8) in yc.zip(gc) {
        for l in 0..8 {
            let xh = y8[l] * k.0 + k.1;
            let z = k.2 * xh + k.3;
            let d = if (z >= lo) & (z <= hi) { g8[l] } else { 0.0 };
            sb[l] += d;
            sg[l] += d * xh;
        }
    }
    (sb, sg)
}

/// [`bn_lane_sums8`] in AVX registers, written out: the compiler's own vectorization of the eight
/// interleaved lane sums was mostly scalar. Each lane does the scalar code's operations in its
/// order (separate multiply and add; the mask zeroes `dz` where a compare fails, a NaN `z`
/// included), so the sums are bit-identical.
///
/// # Safety
/// The CPU must have AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn bn_lane_sums8_avx(
    yc: std::slice::ChunksExact<'_, f32>,
    gc: std::slice::ChunksExact<'_, f32>,
    (a, b, gamma, beta): (f32, f32, f32, f32),
    lo: f32,
    hi: f32,
) -> ([f32; 8], [f32; 8]) {
    use std::arch::x86_64::*;
    let (va, vb, vg, vbeta) = (
        _mm256_set1_ps(a),
        _mm256_set1_ps(b),
        _mm256_set1_ps(gamma),
        _mm256_set1_ps(beta),
    );
    let (vlo, vhi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
    let (mut sb, mut sg) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (y8, g8) in yc.zip(gc) {
        // SAFETY: `ChunksExact` of eight: each chunk holds the eight values read.
        let (v, g) = unsafe { (_mm256_loadu_ps(y8.as_ptr()), _mm256_loadu_ps(g8.as_ptr())) };
        let xh = _mm256_add_ps(_mm256_mul_ps(v, va), vb);
        let z = _mm256_add_ps(_mm256_mul_ps(vg, xh), vbeta);
        let pass = _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_GE_OQ>(z, vlo),
            _mm256_cmp_ps::<_CMP_LE_OQ>(z, vhi),
        );
        let d = _mm256_and_ps(pass, g);
        sb = _mm256_add_ps(sb, d);
        sg = _mm256_add_ps(sg, _mm256_mul_ps(d, xh));
    }
    let (mut ob, mut og) = ([0f32; 8], [0f32; 8]);
    // SAFETY: both arrays hold eight f32.
    unsafe {
        _mm256_storeu_ps(ob.as_mut_ptr(), sb);
        _mm256_storeu_ps(og.as_mut_ptr(), sg);
    }
    (ob, og)
}
