//! Threads for the kernels: the kernel team (a parallel-for whose helpers spin between jobs),
//! which the GEMM, convolution and depthwise drivers split a layer over, the rule for how many
//! threads a layer's work is worth, and rayon pools by size for callers that want one.
//!
//! The team's hand-off protocol is model-checked with `loom` (every interleaving of a caller
//! and a helper over several jobs, parking included):
//! `cargo rustc -p intq-kernels --lib --profile test -- --cfg loom`, then run the test binary it
//! builds with `threads::loom_model`.

#![cfg_attr(loom, allow(dead_code, unused_variables, unused_assignments))]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use sync::{AtomicBool, AtomicU64, AtomicUsize, Condvar, JobCell, Mutex};

/// The team's synchronization primitives: std's, or loom's under `cfg(loom)` so the model
/// checker explores their interleavings.
mod sync {
    #[cfg(loom)]
    pub(super) use loom::sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize},
        Condvar, Mutex,
    };
    #[cfg(not(loom))]
    pub(super) use std::sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize},
        Condvar, Mutex,
    };

    /// The current job's body, behind loom's `UnsafeCell` API (which checks that no read
    /// overlaps a write) or a plain cell.
    pub(super) struct JobCell<T>(
        #[cfg(loom)] loom::cell::UnsafeCell<T>,
        #[cfg(not(loom))] std::cell::UnsafeCell<T>,
    );

    impl<T: Copy> JobCell<T> {
        pub(super) fn new(v: T) -> Self {
            #[cfg(loom)]
            return JobCell(loom::cell::UnsafeCell::new(v));
            #[cfg(not(loom))]
            JobCell(std::cell::UnsafeCell::new(v))
        }
        /// # Safety
        /// No write overlaps the read.
        pub(super) unsafe fn get(&self) -> T {
            #[cfg(loom)]
            // SAFETY: as the caller promises.
            return self.0.with(|p| unsafe { *p });
            #[cfg(not(loom))]
            // SAFETY: as the caller promises.
            unsafe {
                *self.0.get()
            }
        }
        /// # Safety
        /// No read or other write overlaps the write.
        pub(super) unsafe fn set(&self, v: T) {
            #[cfg(loom)]
            // SAFETY: as the caller promises.
            return self.0.with_mut(|p| unsafe { *p = v });
            #[cfg(not(loom))]
            // SAFETY: as the caller promises.
            unsafe {
                *self.0.get() = v
            }
        }
    }

    /// One step of a busy wait: a spin hint, or under loom a yield (the model checker needs
    /// spinning threads to let the others run).
    pub(super) fn spin() {
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(not(loom))]
        std::hint::spin_loop();
    }

    /// What a waiter that has spun long does: yields its core.
    pub(super) fn yield_now() {
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(not(loom))]
        std::thread::yield_now();
    }
}

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
    static POOLS: OnceLock<std::sync::Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> =
        OnceLock::new();
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

/// Multiply-accumulates below which a layer runs on one thread, and the work each further
/// thread must have. A hand-off to a spinning helper costs about as much as 64K MACs of a GEMM
/// on one AVX2 core (a depthwise layer is several times slower per MAC), so a split pays from
/// about here; a much larger threshold would leave the small depthwise and
/// strided layers of mobile networks on one thread. `INTQ_PAR_MIN_MACS` overrides it for
/// measuring.
pub const PAR_MIN_MACS: usize = 1 << 16;

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

/// How long an idle team helper spins for the next job before it parks: a whole network's
/// layers arrive microseconds apart, and waking a parked thread costs tens of microseconds,
/// more than a small layer's whole run (XNNPACK's pool spins the same way).
const SPIN: std::time::Duration = std::time::Duration::from_micros(500);

/// Task indices are packed with the job's generation into one word; a job of more tasks runs
/// them in this many batches.
const MAX_TASKS: u64 = 1 << 24;

/// `threads - 1` helper threads that spin between jobs, plus the calling thread: the layer
/// loop's parallel-for, which hands a job over without a wake-up while its helpers are hot.
struct Team {
    helpers: usize,
    /// One job at a time; a caller that finds it taken (a nested call, or another thread's
    /// job) runs its tasks on its own thread.
    busy: Mutex<()>,
    /// `generation << 48 | tasks << 24 | next task`: claimed by compare-and-swap, so a helper
    /// that arrives after its job is done can never claim a task of the next one.
    state: AtomicU64,
    /// Tasks of the current job finished (by anyone).
    finished: AtomicU64,
    /// Set when a task panicked on a helper; the caller panics in turn.
    panicked: AtomicBool,
    /// The current job's body; valid while a task of the current generation is unfinished.
    job: JobCell<Option<JobPtr>>,
    sleepers: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
    /// Helpers return when set (the model checker's teams end; the process's never do).
    stop: AtomicBool,
}

#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize) + Sync));

// SAFETY: `job` is written only by the caller holding `busy` before it publishes a generation,
// and read by helpers only after claiming a task of that generation (which the caller waits
// for before it writes again); the pointee is Sync.
unsafe impl Sync for Team {}
// SAFETY: as above; the pointer is only dereferenced under that protocol.
unsafe impl Send for JobPtr {}

fn unpack(s: u64) -> (u64, u64, u64) {
    (s >> 48, (s >> 24) & (MAX_TASKS - 1), s & (MAX_TASKS - 1))
}

impl Team {
    /// A team of `helpers` helpers, not yet started.
    fn new(helpers: usize) -> Team {
        Team {
            helpers,
            busy: Mutex::new(()),
            state: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            panicked: AtomicBool::new(false),
            job: JobCell::new(None),
            sleepers: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    #[cfg(not(loom))]
    fn get(threads: usize) -> &'static Team {
        static TEAMS: OnceLock<std::sync::Mutex<HashMap<usize, &'static Team>>> = OnceLock::new();
        let mut teams = TEAMS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        teams.entry(threads).or_insert_with(|| {
            let team: &'static Team = Box::leak(Box::new(Team::new(threads - 1)));
            for h in 0..team.helpers {
                std::thread::Builder::new()
                    .name(format!("intq-team{threads}-{h}"))
                    .spawn(move || team.helper())
                    .expect("spawning a kernel thread");
            }
            team
        })
    }

    /// Claims and runs tasks of generation `gen` until none is left.
    fn work(&self, gen: u64) {
        use std::sync::atomic::Ordering::*;
        let mut s = self.state.load(Acquire);
        loop {
            let (g, tasks, next) = unpack(s);
            if g != gen || next >= tasks {
                return;
            }
            match self.state.compare_exchange_weak(s, s + 1, AcqRel, Acquire) {
                Ok(_) => {
                    // SAFETY: task `next` of this generation is claimed and unfinished, so
                    // the caller is still waiting and `job` holds its live body.
                    let f = unsafe { self.job.get().expect("a published job").0 };
                    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        // SAFETY: as above.
                        unsafe { (*f)(next as usize) }
                    }));
                    if ok.is_err() {
                        self.panicked.store(true, Release);
                    }
                    self.finished.fetch_add(1, Release);
                    s = self.state.load(Acquire);
                }
                Err(now) => s = now,
            }
        }
    }

    fn helper(&self) {
        use std::sync::atomic::Ordering::*;
        let mut seen = unpack(self.state.load(Acquire)).0;
        loop {
            #[cfg(not(loom))]
            let start = std::time::Instant::now();
            let mut spins = 0u32;
            let gen = loop {
                let g = unpack(self.state.load(Acquire)).0;
                if g != seen {
                    break g;
                }
                if self.stop.load(Acquire) {
                    return;
                }
                sync::spin();
                spins += 1;
                // Under loom, park at once: the parking hand-off is what needs checking.
                #[cfg(loom)]
                let long = true;
                #[cfg(not(loom))]
                let long = spins & 255 == 0 && start.elapsed() > SPIN;
                if long {
                    let guard = self.park.lock().unwrap_or_else(|e| e.into_inner());
                    self.sleepers.fetch_add(1, SeqCst);
                    let g = unpack(self.state.load(SeqCst)).0;
                    let guard = if g == seen && !self.stop.load(SeqCst) {
                        self.wake.wait(guard).unwrap_or_else(|e| e.into_inner())
                    } else {
                        guard
                    };
                    self.sleepers.fetch_sub(1, SeqCst);
                    drop(guard);
                    spins = 0;
                }
            };
            seen = gen;
            self.work(gen);
        }
    }

    /// Runs `f(0..tasks)` on the team; false when the team is busy (nothing ran).
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        use std::sync::atomic::Ordering::*;
        let _busy = match self.busy.try_lock() {
            Ok(g) => g,
            // A task panicked in an earlier job; the team's state was left consistent.
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        let mut start = 0usize;
        while start < tasks {
            let n = (tasks - start).min(MAX_TASKS as usize - 1);
            let body = move |i: usize| f(start + i);
            let body: &(dyn Fn(usize) + Sync) = &body;
            // SAFETY: only lifetimes are erased: the caller waits below until every task of
            // this generation has finished, and helpers touch the body only while one has not.
            let ptr = JobPtr(unsafe {
                std::mem::transmute::<
                    *const (dyn Fn(usize) + Sync + '_),
                    *const (dyn Fn(usize) + Sync + 'static),
                >(body)
            });
            self.finished.store(0, Relaxed);
            // SAFETY: no task of any generation is unfinished, so no helper reads `job` now.
            unsafe { self.job.set(Some(ptr)) };
            let gen = (unpack(self.state.load(Relaxed)).0 + 1) & 0xffff;
            self.state.store(gen << 48 | (n as u64) << 24, SeqCst);
            if self.sleepers.load(SeqCst) > 0 {
                let _g = self.park.lock().unwrap_or_else(|e| e.into_inner());
                self.wake.notify_all();
            }
            self.work(gen);
            let mut spins = 0u32;
            while self.finished.load(Acquire) < n as u64 {
                spins += 1;
                if spins < 1 << 12 {
                    sync::spin();
                } else {
                    // A helper holding a task was descheduled: let it run.
                    sync::yield_now();
                }
            }
            if self.panicked.swap(false, AcqRel) {
                panic!("a kernel task panicked on a helper thread");
            }
            start += n;
        }
        true
    }
}

/// Runs `f(i)` for every `i < tasks`, spread over `threads` threads (the caller and
/// `threads - 1` spinning helpers; see [`Team`]); sequentially for one thread or one task, or
/// when called from inside another job.
pub fn parallel_for(threads: usize, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    #[cfg(not(loom))]
    if threads > 1 && tasks > 1 && Team::get(threads).run(tasks, f) {
        return;
    }
    let _ = threads;
    (0..tasks).for_each(f);
}

/// The team's protocol under every interleaving loom finds of a caller and one helper: jobs back
/// to back (the helper claiming tasks of a job, or arriving after it ended, or parking between
/// jobs), each task run exactly once and finished before `run` returns; a job's body is never
/// read while the next one is written (loom's cell checks that).
#[cfg(all(test, loom))]
mod loom_model {
    use super::Team;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;

    #[test]
    fn every_task_runs_once_in_every_interleaving() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let team = Arc::new(Team::new(1));
            let helper = {
                let team = team.clone();
                loom::thread::spawn(move || team.helper())
            };
            for tasks in [2usize, 3] {
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                assert!(team.run(tasks, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }));
                for h in &hits {
                    assert_eq!(h.load(Ordering::Relaxed), 1);
                }
            }
            team.stop.store(true, Ordering::SeqCst);
            {
                let _g = team.park.lock().unwrap();
                team.wake.notify_all();
            }
            helper.join().unwrap();
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every task runs exactly once, over many jobs back to back (helpers spinning, and parked
    /// after a pause), with several team sizes and task counts around the thread count.
    #[test]
    fn parallel_for_runs_each_task_once() {
        for threads in [2, 3] {
            for round in 0..300 {
                let tasks = round % 13;
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                parallel_for(threads, tasks, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                if round == 150 {
                    std::thread::sleep(SPIN * 4);
                }
            }
        }
    }

    /// A job started from inside a job runs on its caller's thread instead of waiting for the
    /// busy team.
    #[test]
    fn nested_parallel_for_completes() {
        let total = AtomicUsize::new(0);
        parallel_for(2, 4, &|_| {
            parallel_for(2, 5, &|_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 20);
    }

    /// A panicking task reaches the caller, and the team keeps working afterwards.
    #[test]
    fn a_panicking_task_panics_the_caller() {
        let r = std::panic::catch_unwind(|| {
            parallel_for(2, 64, &|i| {
                if i % 7 == 3 {
                    panic!("task {i}");
                }
            })
        });
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        parallel_for(2, 64, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 64);
    }
}
