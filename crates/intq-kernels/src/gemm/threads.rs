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
