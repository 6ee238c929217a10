//! What the C API adds to a run: times `Model::run` and `intq_model_run` on the same model and
//! input, call by call interleaved so both see the same machine state, and prints the medians and
//! the heap allocations each call makes.
//!
//! cargo run --release -p intq-capi --example call_overhead -- MODEL [CALLS] [THREADS]

use intq::{intq_model_load, intq_model_run, IntqBuffer, IntqBufferMut, IntqOptions, IntqStatus};
use intq_engine::{examples, format, ExecOptions, KernelTier, Model, TensorData};
use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, counting allocations.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn bytes_of(d: &TensorData) -> Vec<u8> {
    match d {
        TensorData::U8(v) => v.clone(),
        TensorData::I8(v) => v.iter().map(|&c| c as u8).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: call_overhead MODEL.intq|MODEL.tflite [CALLS] [THREADS]");
        std::process::exit(2);
    };
    let calls: usize = args.get(2).map_or(2000, |s| s.parse().expect("CALLS"));
    let threads: usize = args.get(3).map_or(1, |s| s.parse().expect("THREADS"));
    let p = std::path::Path::new(path);
    let graph = if intq_tflite::is_tflite_path(p) {
        intq_tflite::load(p).expect("model")
    } else {
        format::load(p).expect("model")
    };
    let tier = KernelTier::from_env().expect("INTQ_ISA");
    let model = Model::with_options(
        graph.clone(),
        ExecOptions {
            kernels: Some(tier),
            threads,
        },
    )
    .expect("plan");
    let inputs = examples::random_input(&graph, 1);

    let c_path = CString::new(path.as_str()).expect("path");
    let options = IntqOptions {
        threads: threads as u32,
        isa: std::ptr::null(),
    };
    let mut handle = std::ptr::null_mut();
    // SAFETY: a valid path string, options and out pointer.
    let status = unsafe { intq_model_load(c_path.as_ptr(), &options, &mut handle) };
    assert_eq!(status, IntqStatus::Ok);
    let in_bytes: Vec<Vec<u8>> = inputs.iter().map(bytes_of).collect();
    let want: Vec<Vec<u8>> = model
        .run(&inputs)
        .expect("run")
        .iter()
        .map(bytes_of)
        .collect();
    let mut out_bytes: Vec<Vec<u8>> = want.iter().map(|w| vec![0; w.len()]).collect();
    let ins: Vec<IntqBuffer> = in_bytes
        .iter()
        .map(|b| IntqBuffer {
            data: b.as_ptr().cast(),
            size: b.len(),
        })
        .collect();
    let outs: Vec<IntqBufferMut> = out_bytes
        .iter_mut()
        .map(|b| IntqBufferMut {
            data: b.as_mut_ptr().cast(),
            size: b.len(),
        })
        .collect();

    let (mut rust, mut c) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    let (mut rust_allocs, mut c_allocs) = (0, 0);
    for _ in 0..calls {
        let a = ALLOCATIONS.load(Ordering::Relaxed);
        let t = Instant::now();
        std::hint::black_box(model.run(&inputs).expect("run"));
        rust.push(t.elapsed());
        let b = ALLOCATIONS.load(Ordering::Relaxed);
        let t = Instant::now();
        // SAFETY: every buffer is valid for its size; the handle is live.
        let s =
            unsafe { intq_model_run(handle, ins.as_ptr(), ins.len(), outs.as_ptr(), outs.len()) };
        c.push(t.elapsed());
        rust_allocs += b - a;
        c_allocs += ALLOCATIONS.load(Ordering::Relaxed) - b;
        assert_eq!(s, IntqStatus::Ok);
    }
    assert_eq!(
        out_bytes, want,
        "the C API returned other bytes than Model::run"
    );
    let (r, cm) = (median(rust), median(c));
    println!(
        "{path} on {} at {threads} thread(s), {calls} calls each: Model::run median {:.2} us, \
         intq_model_run median {:.2} us, ratio {:.3}; heap allocations per call: {:.1} and {:.1}",
        tier.name(),
        r.as_secs_f64() * 1e6,
        cm.as_secs_f64() * 1e6,
        cm.as_secs_f64() / r.as_secs_f64(),
        rust_allocs as f64 / calls as f64,
        c_allocs as f64 / calls as f64
    );
    // SAFETY: the handle came from intq_model_load and is freed once.
    unsafe { intq::intq_model_free(handle) };
}
