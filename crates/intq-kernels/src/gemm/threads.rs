//! Thread pools by size, so a thread-count setting can be honoured without rebuilding a pool on
//! every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Runs `f` inside a rayon pool of `threads` threads (0 = all cores), built once per size.
/// Kernels split their work by the thread count they are given; the pool only runs it.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    if threads == 1 {
        return f();
    }
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let pool = {
        let mut pools = POOLS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        pools
            .entry(threads)
            .or_insert_with(|| {
                Arc::new(
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .expect("rayon thread pool"),
                )
            })
            .clone()
    };
    pool.install(f)
}

/// The thread count `0` stands for.
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Multiply-accumulates below which a kernel call runs on one thread: handing part of the work
/// to a pool worker costs its wake-up and a join (tens of microseconds when it sleeps), more
/// than a small layer's whole run. Measured with `intq bench model` on this machine kind (see
/// bench/README or the perf notes): see [`par_min_macs`] for the override.
pub const PAR_MIN_MACS: usize = 1 << 20;

/// [`PAR_MIN_MACS`], or `INTQ_PAR_MIN_MACS` when set to a number (read once; for measuring
/// the threshold, not for tuning in production).
pub fn par_min_macs() -> usize {
    static V: OnceLock<usize> = OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("INTQ_PAR_MIN_MACS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(PAR_MIN_MACS)
    })
}

/// The threads worth using for `macs` multiply-accumulates when `threads` are allowed:
/// one below [`par_min_macs`], else at most one per `par_min_macs` of work.
pub fn threads_for_work(threads: usize, macs: usize) -> usize {
    let min = par_min_macs().max(1);
    threads.clamp(1, (macs / min).max(1))
}
