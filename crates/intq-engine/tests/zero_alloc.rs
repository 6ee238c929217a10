//! A prepared execution context runs with no heap request at all on every fast tier, its kernel
//! helper threads included: the context owns the activation buffers and every thread's kernel
//! scratch. The requests of the test's thread and the kernel threads are counted while a run
//! is measured, so this binary holds one test and nothing of intq runs beside it.

use intq_engine::examples::{random_input, small_cnn};
use intq_engine::{Context, DType, ExecOptions, Graph, KernelTier, Model, TensorData};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Counts the heap requests of the measuring thread and of intq's kernel threads (named
/// `intq-...`) while `COUNTING` is set; the test harness's own threads are not counted.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// The test's thread's name, which libtest gives it.
const TEST: &str = "a_prepared_context_makes_no_heap_request_on_any_tier";

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if !COUNTING.load(Ordering::SeqCst) {
        return;
    }
    // The thread's name is read once its handle exists (threads started by std have one); a
    // request made while reading it is not looked at again.
    let _ = INSIDE.try_with(|inside| {
        if inside.replace(true) {
            return;
        }
        let current = std::thread::current();
        let name = current.name().unwrap_or("");
        if name == TEST || name.starts_with("intq-") {
            COUNT.fetch_add(1, Ordering::SeqCst);
        }
        inside.set(false);
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, returning its result and the heap requests counted meanwhile.
fn counted<R>(f: impl FnOnce() -> R) -> (R, usize) {
    COUNT.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let r = f();
    COUNTING.store(false, Ordering::SeqCst);
    (r, COUNT.load(Ordering::SeqCst))
}

/// `n` images of `g`'s input, one after another.
fn batch(g: &Graph, n: usize, seed: u64) -> Vec<TensorData> {
    let mut all = random_input(g, seed).remove(0);
    for k in 1..n {
        match (&mut all, random_input(g, seed + k as u64).remove(0)) {
            (TensorData::U8(a), TensorData::U8(b)) => a.extend_from_slice(&b),
            (TensorData::I8(a), TensorData::I8(b)) => a.extend_from_slice(&b),
            _ => panic!("unexpected input type"),
        }
    }
    vec![all]
}

/// Heap requests of one `run_into` of `inputs` in `ctx`, and the output bytes.
fn measured(m: &Model, ctx: &mut Context, inputs: &[TensorData]) -> (usize, Vec<u8>) {
    let n = m.batch_of(inputs).unwrap();
    let out = m.graph().outputs()[0];
    let elements: usize = m.shape_at(out, n).unwrap().iter().product();
    let mut bytes = vec![0u8; elements * m.graph().tensor(out).dtype.size_bytes()];
    let ((), allocations) = counted(|| {
        m.run_into(ctx, inputs, &mut [&mut bytes[..]]).unwrap();
    });
    (allocations, bytes)
}

/// On every fast tier, both code types, one and two threads: after a context's first run of a
/// batch (which grows its buffers, starts its helpers and grows their scratch), a run of any
/// batch it has run makes no heap request, and gives the bytes of a plain run.
#[test]
fn a_prepared_context_makes_no_heap_request_on_any_tier() {
    intq_testutil::on_every_tier("zero allocations per run", |isa| {
        for dtype in [DType::U8, DType::I8] {
            let g = small_cnn(dtype, false, 21);
            for threads in [1, 2] {
                let options = ExecOptions {
                    kernels: Some(KernelTier::Fast(isa)),
                    threads,
                };
                let m = Model::with_options(g.clone(), options).unwrap();
                let (four, one) = (batch(&g, 4, 3), batch(&g, 1, 8));
                // Plans the batches the model does not keep by itself.
                m.run(&four).unwrap();
                let mut ctx = m.context();
                let what = format!("{} {dtype} {threads} thread(s)", isa.name());
                let (cold, _) = measured(&m, &mut ctx, &four);
                assert!(cold > 0, "{what}: a fresh context allocates its buffers");
                // A batch's first run may grow the scratch (a smaller batch splits its layers
                // into other tasks); every later run of a batch it has run allocates nothing.
                measured(&m, &mut ctx, &one);
                for inputs in [&four, &one, &four, &one] {
                    let (allocations, bytes) = measured(&m, &mut ctx, inputs);
                    assert_eq!(allocations, 0, "{what}: a prepared run allocated");
                    let want = match &m.run(inputs).unwrap()[0] {
                        TensorData::U8(v) => v.clone(),
                        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
                        other => panic!("unexpected output {other:?}"),
                    };
                    assert_eq!(bytes, want, "{what}");
                }
                assert!(
                    ctx.scratch_bytes() > 0,
                    "{what}: the context holds the scratch"
                );
            }
        }
    });
}
