//! Per-caller execution contexts: a prepared context runs without allocating activations (the
//! heap calls of a run are counted), contexts grow to the batch and keep their results, and
//! threads with a context each on one shared model get the bytes of serial runs.

use intq_engine::examples::{random_input, small_cnn};
use intq_engine::{DType, ExecOptions, Graph, KernelTier, Model, TensorData};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

// An allocator that counts, per thread and only while asked to, the heap requests made.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
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

/// Runs `f`, returning its result and the heap requests this thread made meanwhile.
fn counted<R>(f: impl FnOnce() -> R) -> (R, usize) {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|t| t.set(true));
    let r = f();
    COUNTING.with(|t| t.set(false));
    (r, COUNT.with(|c| c.get()))
}

fn model(g: &Graph, kernels: KernelTier) -> Model {
    let options = ExecOptions {
        kernels: Some(kernels),
        threads: 1,
    };
    Model::with_options(g.clone(), options).expect("graph plans")
}

/// `n` images of `g`'s first input, one after another.
fn batch(g: &Graph, n: usize, seed: u64) -> Vec<TensorData> {
    let images: Vec<TensorData> = (0..n)
        .map(|k| random_input(g, seed + k as u64).remove(0))
        .collect();
    let mut all = images[0].clone();
    for image in &images[1..] {
        match (&mut all, image) {
            (TensorData::U8(a), TensorData::U8(b)) => a.extend_from_slice(b),
            (TensorData::I8(a), TensorData::I8(b)) => a.extend_from_slice(b),
            (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
            _ => panic!("unexpected input type"),
        }
    }
    vec![all]
}

/// Output bytes of `m` on `inputs` through `run_into`, in buffers sized by `shape_at`.
fn output_buffers(m: &Model, n: usize) -> Vec<Vec<u8>> {
    let g = m.graph();
    g.outputs()
        .iter()
        .map(|&id| {
            let elements: usize = m.shape_at(id, n).unwrap().iter().product();
            vec![0u8; elements * g.tensor(id).dtype.size_bytes()]
        })
        .collect()
}

fn run_into(
    m: &Model,
    ctx: &mut intq_engine::Context,
    inputs: &[TensorData],
    outs: &mut [Vec<u8>],
) {
    let mut slices: Vec<&mut [u8]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
    m.run_into(ctx, inputs, &mut slices).unwrap();
}

/// A prepared context runs the whole small-cnn (conv, depthwise, add, pool, FC, softmax) with
/// no heap request of this thread's, on the reference kernels and on every fast tier (whose
/// scratch the context owns), and a fresh context needs some (its buffers). `zero_alloc.rs`
/// counts the kernel threads' requests too.
#[test]
fn a_prepared_context_runs_without_allocating() {
    for dtype in [DType::U8, DType::I8] {
        let g = small_cnn(dtype, false, 3);
        let m = model(&g, KernelTier::Reference);
        let inputs = batch(&g, 4, 1);
        let mut ctx = m.context();
        let mut outs = output_buffers(&m, 4);
        run_into(&m, &mut ctx, &inputs, &mut outs);
        let mut slices: Vec<&mut [u8]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        let (n, allocations) = counted(|| m.run_into(&mut ctx, &inputs, &mut slices).unwrap());
        assert_eq!(n, 4);
        assert_eq!(allocations, 0, "{dtype}: heap requests in a prepared run");
        // The same bytes as the convenience run.
        let want = m.run(&inputs).unwrap();
        let mut got = vec![0u8; outs[0].len()];
        let mut one: Vec<&mut [u8]> = vec![&mut got];
        m.run_into(&mut ctx, &inputs, &mut one).unwrap();
        match &want[0] {
            TensorData::U8(v) => assert_eq!(&got, v),
            TensorData::I8(v) => assert!(got.iter().zip(v).all(|(&a, &b)| a as i8 == b)),
            other => panic!("unexpected output {other:?}"),
        }
    }
    intq_testutil::on_every_tier("context allocations", |isa| {
        let g = small_cnn(DType::I8, false, 3);
        let m = model(&g, KernelTier::Fast(isa));
        let inputs = batch(&g, 4, 1);
        let mut ctx = m.context();
        let mut outs = output_buffers(&m, 4);
        run_into(&m, &mut ctx, &inputs, &mut outs);
        let mut slices: Vec<&mut [u8]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        let ((), first) = counted(|| {
            m.run_into(&mut ctx, &inputs, &mut slices).unwrap();
        });
        let ((), second) = counted(|| {
            m.run_into(&mut ctx, &inputs, &mut slices).unwrap();
        });
        // The context's own buffers are not among them: a fresh context allocates more.
        let mut fresh = m.context();
        let ((), cold) = counted(|| {
            m.run_into(&mut fresh, &inputs, &mut slices).unwrap();
        });
        assert_eq!((first, second), (0, 0), "{}", isa.name());
        assert!(
            cold > first,
            "{}: cold {cold}, prepared {first}",
            isa.name()
        );
    });
}

/// A context grows to the largest batch it runs and keeps serving smaller ones from the same
/// buffers; results do not depend on what it ran before.
#[test]
fn contexts_grow_to_the_batch() {
    let g = small_cnn(DType::U8, true, 5);
    let m = model(&g, KernelTier::Reference);
    let mut ctx = m.context();
    assert_eq!(ctx.bytes(), 0);
    let one = batch(&g, 1, 9);
    let six = batch(&g, 6, 9);
    let a = m.run_in(&mut ctx, &one).unwrap();
    let small = ctx.bytes();
    assert!(small > 0);
    let b = m.run_in(&mut ctx, &six).unwrap();
    let big = ctx.bytes();
    assert!(big >= 5 * small, "{small} -> {big}");
    let c = m.run_in(&mut ctx, &one).unwrap();
    assert_eq!(ctx.bytes(), big, "a smaller batch reuses the grown buffers");
    assert_eq!(a, c);
    assert_eq!(b, m.run(&six).unwrap());
    match (&a[0], &b[0]) {
        (TensorData::F32(a), TensorData::F32(b)) => assert_eq!(a[..], b[..a.len()]),
        other => panic!("unexpected outputs {other:?}"),
    }
}

/// Threads, each with its own context, run one shared model at mixed batches at once and get
/// exactly the bytes of serial runs.
#[test]
fn threads_with_their_own_contexts_match_serial_runs() {
    let kernels = [KernelTier::Reference].into_iter().chain(
        intq_testutil::tiers("context threads")
            .into_iter()
            .map(KernelTier::Fast),
    );
    for tier in kernels {
        let g = small_cnn(DType::I8, false, 11);
        let m = Arc::new(model(&g, tier));
        let jobs: Vec<Vec<TensorData>> = (0..12)
            .map(|k| batch(&g, 1 + k % 4, 50 + k as u64))
            .collect();
        let serial: Vec<Vec<TensorData>> = jobs.iter().map(|j| m.run(j).unwrap()).collect();
        let jobs = Arc::new(jobs);
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (m, jobs) = (Arc::clone(&m), Arc::clone(&jobs));
                std::thread::spawn(move || {
                    let mut ctx = m.context();
                    (0..3 * jobs.len())
                        .map(|r| {
                            let k = (r + 5 * t) % jobs.len();
                            (k, m.run_in(&mut ctx, &jobs[k]).unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (k, got) in h.join().unwrap() {
                assert_eq!(got, serial[k], "{tier:?}: job {k}");
            }
        }
    }
}

/// A graph whose reference kernels allocate nothing (a narrowed input checked code by code, a
/// reshape, a softmax) runs in a prepared context with no heap request at all, at any batch it
/// has run before.
#[test]
fn a_prepared_context_makes_no_heap_request() {
    use intq_engine::{GraphBuilder, Op, Quant, QuantParams};
    let q = |scale: f32, zero_point: i32| Some(Quant::PerTensor(QuantParams { scale, zero_point }));
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::U8, &[1, 4, 4, 2], q(0.1, 8));
    let flat = b.tensor("flat", DType::U8, &[1, 32], q(0.1, 8));
    let probs = b.tensor("probs", DType::U8, &[1, 32], q(1.0 / 256.0, 0));
    b.narrow_codes(x, 0, 15)
        .narrow_codes(flat, 0, 15)
        .op(Op::Reshape {
            input: x,
            output: flat,
        })
        .op(Op::Softmax {
            input: flat,
            output: probs,
            beta: 1.0,
        })
        .input(x)
        .output(probs);
    let g = b.finish().unwrap();
    let m = model(&g, KernelTier::Reference);
    let mut ctx = m.context();
    let inputs = [TensorData::U8((0..96).map(|i| (i % 16) as u8).collect())];
    let mut out = vec![0u8; 96];
    run_into(&m, &mut ctx, &inputs, std::slice::from_mut(&mut out));
    let small = [TensorData::U8(vec![3; 32])];
    let mut small_out = vec![0u8; 32];
    run_into(&m, &mut ctx, &small, std::slice::from_mut(&mut small_out));
    for (inputs, out) in [(&inputs[..], &mut out), (&small[..], &mut small_out)] {
        let mut slices: Vec<&mut [u8]> = vec![out.as_mut_slice()];
        let (n, allocations) = counted(|| m.run_into(&mut ctx, inputs, &mut slices).unwrap());
        assert_eq!(allocations, 0, "batch {n}");
    }
    let want = m.run(&inputs).unwrap();
    assert_eq!(want[0], TensorData::U8(out));
    // A code outside the narrowed range is refused, naming it.
    let bad = [TensorData::U8(vec![16; 32])];
    let mut slices: Vec<&mut [u8]> = vec![small_out.as_mut_slice()];
    let err = m
        .run_into(&mut ctx, &bad, &mut slices)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[0, 15]") && err.contains("16"), "{err}");
}

/// Threads, each with its own context of two threads (so each has its own kernel helper), run
/// one shared model planned for one thread at once and get exactly the bytes of serial runs,
/// on every tier; a context's thread count can change between runs.
#[test]
fn contexts_with_helpers_of_their_own_match_serial_runs() {
    for isa in intq_testutil::tiers("context helper threads") {
        let g = small_cnn(DType::U8, false, 17);
        let m = Arc::new(model(&g, KernelTier::Fast(isa)));
        let jobs: Vec<Vec<TensorData>> = (0..6)
            .map(|k| batch(&g, 1 + 3 * (k % 3), 70 + k as u64))
            .collect();
        let serial: Vec<Vec<TensorData>> = jobs.iter().map(|j| m.run(j).unwrap()).collect();
        let jobs = Arc::new(jobs);
        let handles: Vec<_> = (0..3)
            .map(|t| {
                let (m, jobs) = (Arc::clone(&m), Arc::clone(&jobs));
                std::thread::spawn(move || {
                    let mut ctx = intq_engine::Context::with_threads(2);
                    (0..4 * jobs.len())
                        .map(|r| {
                            if r == 2 * jobs.len() {
                                ctx.set_threads(3);
                            }
                            let k = (r + t) % jobs.len();
                            (k, m.run_in(&mut ctx, &jobs[k]).unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (k, got) in h.join().unwrap() {
                assert_eq!(got, serial[k], "{}: job {k}", isa.name());
            }
        }
    }
}
