//! The calling thread's CPU time, for benchmarks on a shared machine: other processes slow it
//! less than they slow wall time.

use std::time::Duration;

/// CPU time the calling thread has used so far.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; the clock id is a constant the OS knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Median CPU time of one call of `f` over `repeats` timings of enough calls to take about
/// `target`.
pub fn median_cpu(repeats: usize, target: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let t0 = thread_cpu();
    f();
    let once = (thread_cpu() - t0).max(Duration::from_micros(1));
    let iters = (target.as_secs_f64() / once.as_secs_f64()).clamp(1.0, 1e6) as u32;
    let mut v: Vec<Duration> = (0..repeats)
        .map(|_| {
            let t = thread_cpu();
            for _ in 0..iters {
                f();
            }
            (thread_cpu() - t) / iters
        })
        .collect();
    v.sort();
    v[v.len() / 2]
}
