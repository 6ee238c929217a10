//! Threads for the kernels: the kernel team (a parallel-for whose helpers spin between jobs),
//! which the GEMM, convolution and depthwise drivers split a layer over, the rule for how many
//! threads a layer's work is worth, the kernels' per-thread scratch, and rayon pools by size for
//! callers that want one.
//!
//! A caller with [`Workers`] of its own (an execution context's) installs them around a run:
//! its layers then split over its own helpers, and every kernel's scratch comes from slots the
//! workers own, one per thread, grown before a job to what its tasks take. Without them a job
//! goes to the process-wide team of its size and scratch to thread-local buffers.
//!
//! The team's hand-off protocol is model-checked with `loom` (every interleaving of a caller
//! and a helper over several jobs, parking included):
//! `cargo rustc -p intq-kernels --lib --profile test -- --cfg loom`, then run the test binary it
//! builds with `threads::loom_model`.

#![cfg_attr(loom, allow(dead_code, unused_variables, unused_assignments))]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use sync::{AtomicBool, AtomicU64, AtomicUsize, Condvar, JobCell, Mutex};

/// Scratch levels per thread: a job's tasks take level 0; what a task calls while it holds
/// level 0 (the row source of a GEMM that gathers rows) takes level 1.
pub(crate) const LEVELS: usize = 2;

/// One thread's scratch: a buffer of 64-bit words per level (contents unspecified). A lock,
/// not a cell, because the thread that grows it before a job is not always the one that uses it.
#[derive(Default)]
pub(crate) struct Slot([std::sync::Mutex<Vec<u64>>; LEVELS]);

impl Slot {
    /// Grows level `level` to at least `words` words, unless it is in use (then the user grows
    /// it itself).
    fn reserve(&self, level: usize, words: usize) {
        let mut buf = match self.0[level].try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if buf.len() < words {
            buf.resize(words, 0);
        }
    }

    fn words(&self) -> usize {
        self.0
            .iter()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

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
    /// Scratch: slot 0 is the installing caller's ([`Workers`]), slot `h + 1` helper `h`'s.
    slots: Box<[Slot]>,
    /// Threads (the caller and the first `limit - 1` helpers) that take tasks of the current
    /// job: a layer worth fewer threads than the team has leaves the rest spinning. Written
    /// before the job's generation is published.
    limit: AtomicUsize,
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
// SAFETY: as for Sync: nothing in a team is tied to the thread that made it.
unsafe impl Send for Team {}
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
            slots: (0..=helpers).map(|_| Slot::default()).collect(),
            limit: AtomicUsize::new(0),
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
            start_helpers(team, &format!("intq-team{threads}"));
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

    /// Helper `index`'s loop: it takes tasks of the jobs whose limit includes it, with its own
    /// scratch slot.
    fn helper(&self, index: usize) {
        use std::sync::atomic::Ordering::*;
        #[cfg(not(loom))]
        SLOT.with(|s| s.set(&self.slots[index + 1]));
        // The generation a new team starts at: a helper that starts after the first job was
        // published still takes part in it.
        let mut seen = 0;
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
            if index + 1 < self.limit.load(Acquire) {
                self.work(gen);
            }
        }
    }

    /// Runs `f(0..tasks)` on the caller and the first `workers - 1` helpers; false when the
    /// team is busy (nothing ran).
    fn run(&self, workers: usize, tasks: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
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
            self.limit.store(workers, Relaxed);
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
/// `threads - 1` spinning helpers; see [`Team`]): the installed [`Workers`]' own (at most as
/// many as they have), else the process-wide team of that size; sequentially for one thread or
/// one task, or when called from inside another job.
pub fn parallel_for(threads: usize, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    #[cfg(not(loom))]
    if threads > 1 && tasks > 1 {
        let ran = match installed() {
            Some(team) => {
                let workers = threads.min(team.helpers + 1);
                workers > 1 && team.run(workers, tasks, f)
            }
            None => Team::get(threads).run(threads, tasks, f),
        };
        if ran {
            return;
        }
    }
    let _ = threads;
    (0..tasks).for_each(f);
}

#[cfg(not(loom))]
thread_local! {
    /// The team of the [`Workers`] installed on this thread, if any.
    static TEAM: std::cell::Cell<*const Team> = const { std::cell::Cell::new(std::ptr::null()) };
    /// This thread's scratch slot: a helper's own, or slot 0 of the installed workers; null
    /// for other threads, which use [`OWN`].
    static SLOT: std::cell::Cell<*const Slot> = const { std::cell::Cell::new(std::ptr::null()) };
    /// Scratch of a thread without a slot, grown to the largest use and kept.
    static OWN: Slot = Slot::default();
}

/// Starts `team`'s helpers, named `name-<index>`, and returns once every one is running, so
/// what starting a thread allocates is done before the team's first job.
#[cfg(not(loom))]
fn start_helpers<H>(team: H, name: &str) -> Vec<std::thread::JoinHandle<()>>
where
    H: std::ops::Deref<Target = Team> + Clone + Send + 'static,
{
    let started = Arc::new(std::sync::Barrier::new(team.helpers + 1));
    let handles = (0..team.helpers)
        .map(|h| {
            let (team, started) = (team.clone(), Arc::clone(&started));
            std::thread::Builder::new()
                .name(format!("{name}-{h}"))
                .spawn(move || {
                    started.wait();
                    drop(started);
                    team.helper(h)
                })
                .expect("spawning a kernel thread")
        })
        .collect();
    started.wait();
    handles
}

/// The installed team.
#[cfg(not(loom))]
fn installed() -> Option<&'static Team> {
    let t = TEAM.with(|t| t.get());
    // SAFETY: TEAM is non-null only inside `Workers::install`, whose `Workers` keep the team
    // alive for the whole call (the 'static is never held past it: callers use it at once).
    (!t.is_null()).then(|| unsafe { &*t })
}

/// Runs `f` with this thread's slot.
#[cfg(not(loom))]
fn with_slot<R>(f: impl FnOnce(&Slot) -> R) -> R {
    let s = SLOT.with(|s| s.get());
    if s.is_null() {
        OWN.with(|own| f(own))
    } else {
        // SAFETY: SLOT points into a live team: a helper's for the helper's whole life (the
        // helper holds its team), the caller's only inside `Workers::install`.
        f(unsafe { &*s })
    }
}

/// Grows scratch level `level` to `bytes` for every thread a job of `threads` would run on
/// (this thread and the helpers it would use), so the tasks allocate nothing. Call it before
/// [`parallel_for`]; a slot in use elsewhere (another caller's job on a process-wide team) is
/// left to grow itself.
pub(crate) fn reserve_scratch(threads: usize, level: usize, bytes: usize) {
    #[cfg(not(loom))]
    {
        let words = scratch_words(bytes);
        with_slot(|s| s.reserve(level, words));
        if threads > 1 {
            let (team, workers) = match installed() {
                Some(team) => (team, threads.min(team.helpers + 1)),
                None => (Team::get(threads), threads),
            };
            for slot in &team.slots[1..workers] {
                slot.reserve(level, words);
            }
        }
    }
    let _ = (threads, level, bytes);
}

/// Runs `f` on `bytes` of this thread's scratch at `level` (64-byte aligned, contents
/// unspecified), carved by [`Bump`]. Reserved scratch is used as it is; a level that is too
/// small grows; a level already in use (a nested call) gets a fresh buffer.
pub(crate) fn with_scratch<R>(level: usize, bytes: usize, f: impl FnOnce(&mut Bump) -> R) -> R {
    let words = scratch_words(bytes);
    let run = |buf: &mut Vec<u64>| {
        if buf.len() < words {
            buf.resize(words, 0);
        }
        f(&mut Bump::new(buf))
    };
    #[cfg(not(loom))]
    return with_slot(|slot| match slot.0[level].try_lock() {
        Ok(mut g) => run(&mut g),
        Err(std::sync::TryLockError::Poisoned(e)) => run(&mut e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => run(&mut Vec::new()),
    });
    #[cfg(loom)]
    run(&mut Vec::new())
}

/// Words of scratch for `bytes` carved from a 64-byte boundary.
fn scratch_words(bytes: usize) -> usize {
    bytes.div_ceil(8) + 8
}

/// The bytes a set of [`Bump`] carvings takes: each `n` elements of `T` from a 64-byte boundary.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Need(pub usize);

impl Need {
    pub(crate) fn add<T>(self, n: usize) -> Need {
        Need(self.0 + (n * std::mem::size_of::<T>()).next_multiple_of(64))
    }
}

/// Slices carved one after another from a scratch buffer, each on a 64-byte boundary (the
/// buffer is 64 bytes longer than the [`Need`] it was asked for, for the first one).
pub(crate) struct Bump<'a> {
    rest: &'a mut [u8],
}

impl<'a> Bump<'a> {
    fn new(words: &'a mut [u64]) -> Bump<'a> {
        // SAFETY: any u64 buffer is a valid byte buffer of eight times its length.
        let rest = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8)
        };
        Bump { rest }
    }

    /// The next `n * size_of::<T>()` bytes from a 64-byte boundary.
    fn carve<T>(&mut self, n: usize) -> &'a mut [u8] {
        assert!(std::mem::align_of::<T>() <= 64);
        let rest = std::mem::take(&mut self.rest);
        let pad = (rest.as_ptr() as usize).next_multiple_of(64) - rest.as_ptr() as usize;
        let bytes = n * std::mem::size_of::<T>();
        assert!(
            pad + bytes <= rest.len(),
            "kernel scratch smaller than its need"
        );
        let (head, tail) = rest.split_at_mut(pad + bytes);
        let next = (bytes.next_multiple_of(64) - bytes).min(tail.len());
        self.rest = &mut tail[next..];
        &mut head[pad..]
    }

    /// The rest of the buffer, to carve from for a while: what is carved from the returned
    /// bump is free again once it is dropped.
    pub(crate) fn reborrow(&mut self) -> Bump<'_> {
        Bump {
            rest: &mut *self.rest,
        }
    }

    /// `n` elements of a plain integer type, holding whatever the scratch held.
    pub(crate) fn take<T: super::Pod>(&mut self, n: usize) -> &'a mut [T] {
        let bytes = self.carve::<T>(n);
        // SAFETY: the bytes are aligned (64-byte boundary, T's alignment at most 64), cover
        // exactly n elements, and any bit pattern is a value of T (`Pod`).
        unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr() as *mut T, n) }
    }

    /// `n` copies of `v`.
    pub(crate) fn filled<T: Copy>(&mut self, n: usize, v: T) -> &'a mut [T] {
        let bytes = self.carve::<T>(n);
        let p = bytes.as_mut_ptr() as *mut T;
        for i in 0..n {
            // SAFETY: the bytes are aligned for T and cover n elements; every element is
            // written before the slice is made.
            unsafe { p.add(i).write(v) };
        }
        // SAFETY: as above: n initialized, aligned elements, borrowed from the buffer.
        unsafe { std::slice::from_raw_parts_mut(p, n) }
    }
}

/// `n` zeroed elements of a plain integer type from this thread's scratch at `level`, for code
/// that keeps a buffer over a whole call (a pooling row's sums): the level's buffer is moved
/// out while it lives and moved back when it drops, so neither allocates once the level has
/// grown. A nested buffer of the same level finds it moved out and allocates its own.
pub(crate) struct ScratchBuf<T> {
    words: Vec<u64>,
    level: usize,
    off: usize,
    len: usize,
    _elem: std::marker::PhantomData<T>,
}

impl<T: super::Pod> ScratchBuf<T> {
    pub(crate) fn zeroed(level: usize, n: usize) -> ScratchBuf<T> {
        let take = |slot: &Slot| {
            let mut g = slot.0[level].lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *g)
        };
        #[cfg(not(loom))]
        let mut words = with_slot(take);
        #[cfg(loom)]
        let mut words = take(&Slot::default());
        let need = scratch_words(n * std::mem::size_of::<T>());
        if words.len() < need {
            words.resize(need, 0);
        }
        let addr = words.as_ptr() as usize;
        let off = addr.next_multiple_of(64) - addr;
        let mut buf = ScratchBuf {
            words,
            level,
            off,
            len: n,
            _elem: std::marker::PhantomData,
        };
        buf.fill(T::default());
        buf
    }
}

impl<T: super::Pod> std::ops::Deref for ScratchBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `words` holds `off` bytes of padding and then at least `len` elements of T
        // (`scratch_words`), on a 64-byte boundary; any bits are a value of T (`Pod`).
        unsafe {
            std::slice::from_raw_parts(
                (self.words.as_ptr() as *const u8).add(self.off) as *const T,
                self.len,
            )
        }
    }
}

impl<T: super::Pod> std::ops::DerefMut for ScratchBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for `deref`, borrowed mutably through `self`.
        unsafe {
            std::slice::from_raw_parts_mut(
                (self.words.as_mut_ptr() as *mut u8).add(self.off) as *mut T,
                self.len,
            )
        }
    }
}

impl<'a, T: super::Pod> IntoIterator for &'a ScratchBuf<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T> Drop for ScratchBuf<T> {
    fn drop(&mut self) {
        let words = std::mem::take(&mut self.words);
        let level = self.level;
        let give_back = |slot: &Slot| {
            let mut g = slot.0[level].lock().unwrap_or_else(|e| e.into_inner());
            if g.len() < words.len() {
                *g = words;
            }
        };
        #[cfg(not(loom))]
        with_slot(give_back);
        #[cfg(loom)]
        drop(give_back);
    }
}

/// A kernel team of one's own (an execution context's): `threads - 1` helper threads that
/// spin between jobs, and a scratch slot per thread. [`Workers::install`] routes the kernels'
/// jobs and scratch of a run to them, so concurrent callers with workers of their own each get
/// their helpers and allocate no scratch once it has grown. The helpers end when the workers
/// are dropped.
pub struct Workers {
    team: Arc<Team>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Workers of `threads` threads (0: all cores), the caller counted: `threads - 1` helpers
    /// are started.
    pub fn new(threads: usize) -> Workers {
        let threads = if threads == 0 { all_cores() } else { threads };
        let team = Arc::new(Team::new(threads - 1));
        #[cfg(not(loom))]
        let handles = start_helpers(Arc::clone(&team), &format!("intq-ctx{threads}"));
        #[cfg(loom)]
        let handles = Vec::new();
        Workers { team, handles }
    }

    /// Threads a job may use: the caller and the helpers.
    pub fn threads(&self) -> usize {
        self.team.helpers + 1
    }

    /// Bytes of kernel scratch the workers hold (every thread's, every level).
    pub fn scratch_bytes(&self) -> usize {
        self.team.slots.iter().map(|s| s.words() * 8).sum()
    }

    /// Runs `f` with these workers installed on the calling thread: the kernels it calls split
    /// their jobs over these helpers and take scratch from these slots.
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(not(loom))]
        {
            struct Restore(*const Team, *const Slot);
            impl Drop for Restore {
                fn drop(&mut self) {
                    TEAM.with(|t| t.set(self.0));
                    SLOT.with(|s| s.set(self.1));
                }
            }
            let _restore = Restore(
                TEAM.with(|t| t.replace(&*self.team)),
                SLOT.with(|s| s.replace(&self.team.slots[0])),
            );
            f()
        }
        #[cfg(loom)]
        f()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.team.stop.store(true, SeqCst);
        {
            let _g = self.team.park.lock().unwrap_or_else(|e| e.into_inner());
            self.team.wake.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.threads())
            .finish()
    }
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
                loom::thread::spawn(move || team.helper(0))
            };
            for tasks in [2usize, 3] {
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                assert!(team.run(2, tasks, &|i| {
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

    /// Whether both tasks of a two-task job run at the same time: each waits (up to a
    /// generous bound, so a failure ends rather than hangs) until the other has started.
    fn tasks_meet() -> bool {
        let started = AtomicUsize::new(0);
        let met = AtomicUsize::new(0);
        parallel_for(2, 2, &|_| {
            started.fetch_add(1, Ordering::SeqCst);
            let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while started.load(Ordering::SeqCst) < 2 {
                if std::time::Instant::now() > give_up {
                    return;
                }
                std::thread::yield_now();
            }
            met.fetch_add(1, Ordering::SeqCst);
        });
        met.load(Ordering::SeqCst) == 2
    }

    /// Callers with workers of their own each get their own helper at the same time: every
    /// job of each of three threads has its two tasks running at once (on the process-wide
    /// team, the callers that find it busy run their tasks one after another).
    #[test]
    fn workers_of_their_own_run_concurrent_jobs_in_parallel() {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    let workers = Workers::new(2);
                    assert_eq!(workers.threads(), 2);
                    (0..20).all(|_| workers.install(tasks_meet))
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap());
        }
    }

    /// Installed workers run every task once, take no more helpers than a job asks for, and
    /// grow their scratch before a job rather than in it.
    #[test]
    fn installed_workers_run_each_task_once_with_reserved_scratch() {
        let workers = Workers::new(3);
        workers.install(|| {
            for tasks in [0, 1, 2, 5, 64] {
                for threads in [1, 2, 3, 8] {
                    let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                    reserve_scratch(threads, 0, 4096);
                    parallel_for(threads, tasks, &|i| {
                        with_scratch(0, 4096, |s| {
                            let buf = s.take::<i32>(1024);
                            buf.fill(i as i32);
                            assert!(buf.iter().all(|&v| v == i as i32));
                            assert_eq!(buf.as_ptr() as usize % 64, 0);
                        });
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                }
            }
        });
        // Every thread's level 0 holds the 4 KiB it was reserved (and the alignment slack).
        assert_eq!(workers.scratch_bytes(), 3 * (4096 + 64));
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
