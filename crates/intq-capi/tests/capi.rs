//! The C API called as C calls it: models loaded from files and memory give the bytes of the
//! engine's `Model::run` and of TensorFlow Lite's committed goldens, on every tier; tensor
//! descriptions match the graph; hostile calls (NULL, wrong sizes and counts, bad files, bad
//! tiers) fail with their status and a message; one model run from several threads at once gives
//! the bytes of serial runs.

use intq::*;
use intq_engine::{examples, format, DType, ExecOptions, KernelTier, Model, Quant, TensorData};
use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../intq-tflite/tests/fixtures")
}

/// TFLite-checked fixtures: intq's uint8 and int8 models (float edges; op_zoo also returns
/// codes) and an MLPerf Tiny model that takes and returns int8 codes.
const FIXTURES: [&str; 5] = [
    "small_cnn_u8",
    "small_cnn_i8",
    "op_zoo_u8",
    "op_zoo_i8",
    "image_classification",
];

/// The data bytes of a `.npy` file NumPy wrote (version 1 or 2 header).
fn npy_data(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let start = match bytes[6] {
        1 => 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize,
        _ => 12 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
    };
    bytes[start..].to_vec()
}

fn last_error() -> String {
    // SAFETY: intq_last_error returns a NUL-terminated string valid until the next failing call.
    unsafe { CStr::from_ptr(intq_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// An owned model handle, freed on drop.
struct Handle(*mut IntqModel);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful load and is freed only here.
        unsafe { intq_model_free(self.0) }
    }
}

// SAFETY: IntqModel is documented to be run from several threads at once; the handle is only
// freed by its owner's drop.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

fn load(path: &Path, options: Option<&IntqOptions>) -> Result<Handle, (IntqStatus, String)> {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut out = ptr::null_mut();
    let options = options.map_or(ptr::null(), |o| o as *const _);
    // SAFETY: valid string, options and out pointer.
    let status = unsafe { intq_model_load(c.as_ptr(), options, &mut out) };
    if status == IntqStatus::Ok {
        assert!(!out.is_null());
        Ok(Handle(out))
    } else {
        assert!(out.is_null(), "a failed load leaves *out NULL");
        Err((status, last_error()))
    }
}

fn load_memory(bytes: &[u8], format: u32) -> Result<Handle, (IntqStatus, String)> {
    let mut out = ptr::null_mut();
    // SAFETY: `bytes` is valid for its length; options NULL; out valid.
    let status = unsafe {
        intq_model_load_memory(bytes.as_ptr(), bytes.len(), format, ptr::null(), &mut out)
    };
    if status == IntqStatus::Ok {
        Ok(Handle(out))
    } else {
        Err((status, last_error()))
    }
}

fn infos(m: &Handle) -> (Vec<IntqTensorInfo>, Vec<IntqTensorInfo>) {
    let (mut n_in, mut n_out) = (0, 0);
    // SAFETY: live model, valid out pointers.
    unsafe {
        assert_eq!(intq_model_input_count(m.0, &mut n_in), IntqStatus::Ok);
        assert_eq!(intq_model_output_count(m.0, &mut n_out), IntqStatus::Ok);
    }
    let get = |n: usize,
               f: unsafe extern "C" fn(
        *const IntqModel,
        usize,
        *mut IntqTensorInfo,
    ) -> IntqStatus| {
        (0..n)
            .map(|i| {
                let mut info = std::mem::MaybeUninit::uninit();
                // SAFETY: live model, index in range, valid out pointer.
                assert_eq!(unsafe { f(m.0, i, info.as_mut_ptr()) }, IntqStatus::Ok);
                // SAFETY: a successful call wrote it.
                unsafe { info.assume_init() }
            })
            .collect()
    };
    (
        get(n_in, intq_model_input_info),
        get(n_out, intq_model_output_info),
    )
}

/// Runs through the C API with caller buffers; returns each output's bytes.
fn run_c(m: &Handle, inputs: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, (IntqStatus, String)> {
    let (_, outs) = infos(m);
    let mut out_bufs: Vec<Vec<u8>> = outs.iter().map(|o| vec![0xa5; o.byte_size]).collect();
    let ins: Vec<IntqBuffer> = inputs
        .iter()
        .map(|b| IntqBuffer {
            data: b.as_ptr().cast(),
            size: b.len(),
        })
        .collect();
    let outs: Vec<IntqBufferMut> = out_bufs
        .iter_mut()
        .map(|b| IntqBufferMut {
            data: b.as_mut_ptr().cast(),
            size: b.len(),
        })
        .collect();
    // SAFETY: every buffer is valid for its size and no output overlaps another buffer.
    let status = unsafe { intq_model_run(m.0, ins.as_ptr(), ins.len(), outs.as_ptr(), outs.len()) };
    if status == IntqStatus::Ok {
        Ok(out_bufs)
    } else {
        Err((status, last_error()))
    }
}

/// A value of `dtype` from native-order bytes.
fn value_of(dtype: DType, b: &[u8]) -> TensorData {
    match dtype {
        DType::U8 => TensorData::U8(b.to_vec()),
        DType::I8 => TensorData::I8(b.iter().map(|&c| c as i8).collect()),
        DType::I32 => TensorData::I32(
            b.chunks_exact(4)
                .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        DType::F32 => TensorData::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
                .collect(),
        ),
    }
}

fn bytes_of(d: &TensorData) -> Vec<u8> {
    match d {
        TensorData::U8(v) => v.clone(),
        TensorData::I8(v) => v.iter().map(|&c| c as u8).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
    }
}

fn tflite_path(name: &str) -> PathBuf {
    fixtures().join(name).join(format!("{name}.tflite"))
}

/// A fixture's input bytes for `seed` and TFLite's output bytes, in the order of
/// `output_names` (the graph's outputs; `fixture.tsv` names each output file's tensor).
fn fixture_io(name: &str, seed: u32, output_names: &[String]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let dir = fixtures().join(name);
    let input = npy_data(&dir.join(format!("seed{seed}_input0.npy")));
    let tsv = std::fs::read_to_string(dir.join("fixture.tsv")).unwrap();
    let prefix = format!("seed{seed}_");
    let files: Vec<(&str, &str)> = tsv
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0] == "output" && f[2].starts_with(&prefix)).then(|| (f[1], f[2]))
        })
        .collect();
    let expected = output_names
        .iter()
        .map(|n| {
            let (_, file) = files
                .iter()
                .find(|(t, _)| t == n)
                .unwrap_or_else(|| panic!("{name}: no golden for output '{n}'"));
            npy_data(&dir.join(file))
        })
        .collect();
    (input, expected)
}

fn output_names(graph: &intq_engine::Graph) -> Vec<String> {
    graph
        .outputs()
        .iter()
        .map(|&id| graph.tensor(id).name.clone())
        .collect()
}

#[test]
fn fixtures_match_tflite_and_the_engine_on_every_tier() {
    for name in FIXTURES {
        let path = tflite_path(name);
        let graph = intq_tflite::load(&path).unwrap();
        let engine = Model::new(graph.clone()).unwrap();
        intq_testutil::on_every_tier(&format!("C API on {name}"), |isa| {
            let tier = CString::new(isa.name()).unwrap();
            let options = IntqOptions {
                threads: 2,
                isa: tier.as_ptr(),
            };
            let m = load(&path, Some(&options)).unwrap();
            let mut used: *const c_char = ptr::null();
            let mut threads = 0;
            // SAFETY: live model, valid out pointers.
            assert_eq!(
                unsafe { intq_model_execution(m.0, &mut used, &mut threads) },
                IntqStatus::Ok
            );
            // SAFETY: a static NUL-terminated string.
            assert_eq!(
                unsafe { CStr::from_ptr(used) }.to_str().unwrap(),
                isa.name()
            );
            assert_eq!(threads, 2);
            for seed in 0..2 {
                let (input, goldens) = fixture_io(name, seed, &output_names(&graph));
                let got = run_c(&m, std::slice::from_ref(&input)).unwrap();
                assert_eq!(got, goldens, "{name} seed {seed} on {isa}: C API vs TFLite");
                let value = value_of(graph.tensor(graph.inputs()[0]).dtype, &input);
                let want: Vec<Vec<u8>> =
                    engine.run(&[value]).unwrap().iter().map(bytes_of).collect();
                assert_eq!(
                    got, want,
                    "{name} seed {seed} on {isa}: C API vs Model::run"
                );
            }
        });
    }
}

#[test]
fn memory_loads_equal_file_loads() {
    for name in FIXTURES {
        let path = tflite_path(name);
        let tflite = std::fs::read(&path).unwrap();
        let intq_bytes = format::to_bytes(&intq_tflite::load(&path).unwrap());
        let from_file = load(&path, None).unwrap();
        let (input, _) = fixture_io(name, 0, &[]);
        let want = run_c(&from_file, std::slice::from_ref(&input)).unwrap();
        for (bytes, format) in [
            (&tflite, IntqFormat::Auto as u32),
            (&tflite, IntqFormat::Tflite as u32),
            (&intq_bytes, IntqFormat::Auto as u32),
            (&intq_bytes, IntqFormat::Intq as u32),
        ] {
            let m = load_memory(bytes, format).unwrap();
            assert_eq!(
                run_c(&m, std::slice::from_ref(&input)).unwrap(),
                want,
                "{name} format {format}"
            );
        }
        // The wrong format is a clear refusal, not a misread.
        let (status, message) = load_memory(&tflite, IntqFormat::Intq as u32).err().unwrap();
        assert_eq!(status, IntqStatus::InvalidModel, "{message}");
        assert!(message.contains("not an .intq file"), "{message}");
    }
}

#[test]
fn tensor_info_describes_the_graph() {
    for name in FIXTURES {
        let path = tflite_path(name);
        let graph = intq_tflite::load(&path).unwrap();
        let m = load(&path, None).unwrap();
        let (ins, outs) = infos(&m);
        for (infos, ids) in [(&ins, graph.inputs()), (&outs, graph.outputs())] {
            assert_eq!(infos.len(), ids.len());
            for (info, &id) in infos.iter().zip(ids) {
                let t = graph.tensor(id);
                // SAFETY: the pointers live as long as the model.
                let (name, shape) = unsafe {
                    (
                        CStr::from_ptr(info.name).to_str().unwrap(),
                        std::slice::from_raw_parts(info.shape, info.rank),
                    )
                };
                assert_eq!(name, t.name);
                assert_eq!(shape, t.shape.as_slice());
                assert_eq!(info.num_elements, t.num_elements());
                assert_eq!(info.byte_size, t.num_elements() * t.dtype.size_bytes());
                let dtype = match t.dtype {
                    DType::U8 => IntqDtype::Uint8,
                    DType::I8 => IntqDtype::Int8,
                    DType::I32 => IntqDtype::Int32,
                    DType::F32 => IntqDtype::Float32,
                };
                assert_eq!(info.dtype, dtype);
                let p = match &t.quant {
                    Some(Quant::PerTensor(p)) => *p,
                    None => {
                        assert_eq!(info.quantization, IntqQuantization::None);
                        assert_eq!(info.channel_count, 0);
                        assert!(info.scales.is_null() && info.zero_points.is_null());
                        continue;
                    }
                    other => panic!("{name}: graph edge with {other:?}"),
                };
                assert_eq!(info.quantization, IntqQuantization::PerTensor);
                assert_eq!((info.scale, info.zero_point), (p.scale, p.zero_point));
                assert_eq!(info.channel_count, 1);
                // SAFETY: one entry each, living as long as the model.
                unsafe {
                    assert_eq!(*info.scales, p.scale);
                    assert_eq!(*info.zero_points, p.zero_point);
                }
            }
        }
    }
}

#[test]
fn float_edges_are_described_and_run() {
    let graph = examples::small_cnn(DType::I8, true, 3);
    let bytes = format::to_bytes(&graph);
    let m = load_memory(&bytes, IntqFormat::Auto as u32).unwrap();
    let (ins, outs) = infos(&m);
    assert_eq!(ins[0].dtype, IntqDtype::Float32);
    assert_eq!(ins[0].quantization, IntqQuantization::None);
    assert!(ins[0].scales.is_null() && ins[0].zero_points.is_null());
    assert_eq!(outs[0].dtype, IntqDtype::Float32);
    let engine = Model::new(graph.clone()).unwrap();
    let input = examples::random_input(&graph, 5);
    let got = run_c(&m, &[bytes_of(&input[0])]).unwrap();
    let want: Vec<Vec<u8>> = engine.run(&input).unwrap().iter().map(bytes_of).collect();
    assert_eq!(got, want);
}

#[test]
fn set_options_replans_to_the_same_bytes() {
    let path = tflite_path("op_zoo_i8");
    let m = load(&path, None).unwrap();
    let names = output_names(&intq_tflite::load(&path).unwrap());
    let (input, goldens) = fixture_io("op_zoo_i8", 1, &names);
    let reference = CString::new("reference").unwrap();
    let options = IntqOptions {
        threads: 1,
        isa: reference.as_ptr(),
    };
    // SAFETY: the model is not shared; options valid.
    assert_eq!(
        unsafe { intq_model_set_options(m.0, &options) },
        IntqStatus::Ok
    );
    let mut used: *const c_char = ptr::null();
    // SAFETY: live model; threads may be NULL.
    unsafe { intq_model_execution(m.0, &mut used, ptr::null_mut()) };
    // SAFETY: a static NUL-terminated string.
    assert_eq!(
        unsafe { CStr::from_ptr(used) }.to_str().unwrap(),
        "reference"
    );
    assert_eq!(run_c(&m, std::slice::from_ref(&input)).unwrap(), goldens);
    // A refused tier leaves the model as it was.
    let bogus = CString::new("sse9").unwrap();
    let bad = IntqOptions {
        threads: 1,
        isa: bogus.as_ptr(),
    };
    // SAFETY: as above.
    assert_eq!(
        unsafe { intq_model_set_options(m.0, &bad) },
        IntqStatus::Isa
    );
    assert!(last_error().contains("sse9"), "{}", last_error());
    assert_eq!(run_c(&m, std::slice::from_ref(&input)).unwrap(), goldens);
}

#[test]
fn hostile_loads_fail_with_a_status_and_a_message() {
    let missing = fixtures().join("no_such_model.intq");
    let (status, message) = load(&missing, None).err().unwrap();
    assert_eq!(status, IntqStatus::Io);
    assert!(message.contains("no_such_model.intq"), "{message}");

    let (status, message) = load(&fixtures().join("no_such.tflite"), None)
        .err()
        .unwrap();
    assert_eq!(status, IntqStatus::Io);
    assert!(message.contains("no_such.tflite"), "{message}");

    // A .tflite file read as .intq (by its extension: README.md is not a model).
    let (status, message) = load(&fixtures().join("README.md"), None).err().unwrap();
    assert_eq!(status, IntqStatus::InvalidModel);
    assert!(message.contains("README.md"), "{message}");

    for garbage in [
        &b""[..],
        b"\x89INTQ\r\n\x1a",
        b"\x00\x00\x00\x00TFL3\x00\x00",
    ] {
        let (status, message) = load_memory(garbage, IntqFormat::Auto as u32).err().unwrap();
        assert_eq!(status, IntqStatus::InvalidModel, "{garbage:?}: {message}");
        assert!(!message.is_empty());
    }
    let (status, _) = load_memory(b"x", 9).err().unwrap();
    assert_eq!(status, IntqStatus::InvalidArgument);

    // Tiers: unknown, and one no x86 CPU has (or, on aarch64, one no ARM CPU has).
    let path = tflite_path("small_cnn_u8");
    let foreign = if cfg!(target_arch = "x86_64") {
        "neondot"
    } else {
        "avx2"
    };
    for tier in ["sse9", foreign] {
        let c = CString::new(tier).unwrap();
        let options = IntqOptions {
            threads: 0,
            isa: c.as_ptr(),
        };
        let (status, message) = load(&path, Some(&options)).err().unwrap();
        assert_eq!(status, IntqStatus::Isa, "{tier}");
        assert!(message.contains(tier), "{message}");
    }

    // NULL everywhere a pointer is required.
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut out = ptr::null_mut();
    // SAFETY: each call passes NULL where the API documents it as an error, valid pointers
    // elsewhere.
    unsafe {
        assert_eq!(
            intq_model_load(ptr::null(), ptr::null(), &mut out),
            IntqStatus::NullPointer
        );
        assert!(last_error().contains("path"));
        assert_eq!(
            intq_model_load(c.as_ptr(), ptr::null(), ptr::null_mut()),
            IntqStatus::NullPointer
        );
        assert_eq!(
            intq_model_load_memory(ptr::null(), 4, 0, ptr::null(), &mut out),
            IntqStatus::NullPointer
        );
        let mut n = 0;
        assert_eq!(
            intq_model_input_count(ptr::null(), &mut n),
            IntqStatus::NullPointer
        );
        assert_eq!(
            intq_model_output_count(ptr::null(), &mut n),
            IntqStatus::NullPointer
        );
        assert_eq!(
            intq_model_run(ptr::null(), ptr::null(), 0, ptr::null(), 0),
            IntqStatus::NullPointer
        );
        assert_eq!(
            intq_model_set_options(ptr::null_mut(), ptr::null()),
            IntqStatus::NullPointer
        );
        intq_model_free(ptr::null_mut());
    }
}

#[test]
fn hostile_runs_fail_with_a_status_and_a_message() {
    let name = "op_zoo_u8";
    let m = load(&tflite_path(name), None).unwrap();
    let (ins, outs) = infos(&m);
    let names = output_names(&intq_tflite::load(&tflite_path(name)).unwrap());
    let (input, goldens) = fixture_io(name, 0, &names);
    assert_eq!(input.len(), ins[0].byte_size);

    // Input one byte short, one byte long.
    for size in [input.len() - 1, input.len() + 1] {
        let mut v = input.clone();
        v.resize(size, 0);
        let (status, message) = run_c(&m, &[v]).err().unwrap();
        assert_eq!(status, IntqStatus::BufferSize);
        assert!(
            message.contains("input 0") && message.contains(&size.to_string()),
            "{message}"
        );
    }
    // Wrong counts.
    let (status, message) = run_c(&m, &[]).err().unwrap();
    assert_eq!(status, IntqStatus::InvalidArgument);
    assert!(message.contains("1 input"), "{message}");
    let (status, _) = run_c(&m, &[input.clone(), input.clone()]).err().unwrap();
    assert_eq!(status, IntqStatus::InvalidArgument);

    let inb = [IntqBuffer {
        data: input.as_ptr().cast(),
        size: input.len(),
    }];
    let mut bufs: Vec<Vec<u8>> = outs.iter().map(|o| vec![0; o.byte_size]).collect();
    let mut outb: Vec<IntqBufferMut> = bufs
        .iter_mut()
        .map(|b| IntqBufferMut {
            data: b.as_mut_ptr().cast(),
            size: b.len(),
        })
        .collect();
    // SAFETY: every pointer is valid for its size, except the ones the API must refuse: a NULL
    // array with a non-zero count, a NULL data pointer, a size that does not match.
    unsafe {
        assert_eq!(
            intq_model_run(m.0, ptr::null(), 1, outb.as_ptr(), outb.len()),
            IntqStatus::NullPointer
        );
        assert_eq!(
            intq_model_run(m.0, inb.as_ptr(), 1, ptr::null(), outb.len()),
            IntqStatus::NullPointer
        );
        let null_in = [IntqBuffer {
            data: ptr::null(),
            size: input.len(),
        }];
        assert_eq!(
            intq_model_run(m.0, null_in.as_ptr(), 1, outb.as_ptr(), outb.len()),
            IntqStatus::NullPointer
        );
        assert!(last_error().contains("inputs[0].data"), "{}", last_error());
        outb[1].size -= 1;
        assert_eq!(
            intq_model_run(m.0, inb.as_ptr(), 1, outb.as_ptr(), outb.len()),
            IntqStatus::BufferSize
        );
        assert!(last_error().contains("output 1"), "{}", last_error());
        outb[1].size += 1;
        assert_eq!(
            intq_model_run(m.0, inb.as_ptr(), 1, outb.as_ptr(), outb.len()),
            IntqStatus::Ok
        );
        let mut info = std::mem::MaybeUninit::uninit();
        assert_eq!(
            intq_model_output_info(m.0, outs.len(), info.as_mut_ptr()),
            IntqStatus::InvalidArgument
        );
        assert_eq!(
            intq_model_input_info(m.0, 0, ptr::null_mut()),
            IntqStatus::NullPointer
        );
    }
    assert_eq!(bufs, goldens);
}

#[test]
fn quantize_helpers_match_the_engine_edges() {
    let xs = [-3.0f32, -0.51, -0.5, 0.0, 0.49, 0.5, 1.7, 1e9, f32::NAN];
    for (dtype, lo, hi) in [(IntqDtype::Uint8, 0, 255), (IntqDtype::Int8, -128, 127)] {
        let p = intq_engine::QuantParams::new(0.5, 3).unwrap();
        let mut codes = vec![0u8; xs.len()];
        let mut back = vec![0f32; xs.len()];
        // SAFETY: buffers of `xs.len()` elements each.
        unsafe {
            assert_eq!(
                intq_quantize(
                    xs.as_ptr(),
                    xs.len(),
                    0.5,
                    3,
                    dtype as u32,
                    codes.as_mut_ptr().cast()
                ),
                IntqStatus::Ok
            );
            assert_eq!(
                intq_dequantize(
                    codes.as_ptr().cast(),
                    xs.len(),
                    0.5,
                    3,
                    dtype as u32,
                    back.as_mut_ptr()
                ),
                IntqStatus::Ok
            );
        }
        for (i, &x) in xs.iter().enumerate() {
            let q = p.quantize(x, lo, hi);
            let got = if lo < 0 {
                codes[i] as i8 as i32
            } else {
                codes[i] as i32
            };
            assert_eq!(got, q, "{x} as {dtype:?}");
            assert_eq!(back[i], p.dequantize(q));
        }
    }
    // SAFETY: n is 0, so no pointer is read; the refusals come before any access.
    unsafe {
        assert_eq!(
            intq_quantize(ptr::null(), 0, 0.0, 0, 0, ptr::null_mut()),
            IntqStatus::InvalidArgument
        );
        assert_eq!(
            intq_quantize(
                ptr::null(),
                0,
                1.0,
                0,
                IntqDtype::Int32 as u32,
                ptr::null_mut()
            ),
            IntqStatus::InvalidArgument
        );
        assert_eq!(
            intq_quantize(ptr::null(), 0, 1.0, 0, 0, ptr::null_mut()),
            IntqStatus::Ok
        );
    }
}

/// Runs `jobs` on `threads` threads at once, each job several times; returns results in job order.
fn concurrently<T: Send>(threads: usize, jobs: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new((0..jobs).map(|_| None).collect::<Vec<Option<T>>>());
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                loop {
                    let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if j >= jobs {
                        break;
                    }
                    let r = f(j);
                    results.lock().unwrap()[j] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

#[test]
fn concurrent_runs_of_one_model_equal_serial_runs() {
    // small-cnn's layers are below the size the kernel team splits; the MLPerf image model's
    // first layers are above it, so at 2 threads concurrent runs contend for the team.
    let image = intq_tflite::load(&tflite_path("image_classification")).unwrap();
    let cases = [
        (
            "small-cnn uint8",
            examples::small_cnn(DType::U8, false, 11),
            1,
        ),
        (
            "small-cnn int8",
            examples::small_cnn(DType::I8, false, 11),
            2,
        ),
        ("image_classification", image.clone(), 2),
        ("image_classification", image, 0),
    ];
    for (name, graph, threads) in cases {
        let inputs: Vec<Vec<TensorData>> =
            (0..24).map(|s| examples::random_input(&graph, s)).collect();
        let model = Model::with_options(
            graph.clone(),
            ExecOptions {
                kernels: Some(KernelTier::from_env().unwrap()),
                threads,
            },
        )
        .unwrap();
        let serial: Vec<Vec<TensorData>> = inputs.iter().map(|x| model.run(x).unwrap()).collect();
        // Distinct outputs, so a run that returned another run's result would be caught.
        assert!(serial.windows(2).any(|w| w[0] != w[1]));
        let parallel = concurrently(4, inputs.len(), |j| model.run(&inputs[j]).unwrap());
        assert_eq!(parallel, serial, "{name} at {threads} threads: Model::run");

        let bytes = format::to_bytes(&graph);
        let handle = load_memory(&bytes, IntqFormat::Intq as u32).unwrap();
        let options = IntqOptions {
            threads: threads as u32,
            isa: ptr::null(),
        };
        // SAFETY: not shared yet; options valid.
        assert_eq!(
            unsafe { intq_model_set_options(handle.0, &options) },
            IntqStatus::Ok
        );
        let handle = &handle;
        let want: Vec<Vec<Vec<u8>>> = serial
            .iter()
            .map(|o| o.iter().map(bytes_of).collect())
            .collect();
        let got = concurrently(4, inputs.len(), |j| {
            run_c(handle, &[bytes_of(&inputs[j][0])]).unwrap()
        });
        assert_eq!(got, want, "{name} at {threads} threads: intq_model_run");
    }
}

/// An owned context handle, freed on drop.
struct Ctx(*mut IntqContext);

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful create and is freed only here.
        unsafe { intq_context_free(self.0) }
    }
}

// SAFETY: a context is used by one thread at a time; it moves to the thread that uses it.
unsafe impl Send for Ctx {}

fn context(m: &Handle) -> Ctx {
    let mut out = ptr::null_mut();
    // SAFETY: live model, valid out pointer.
    assert_eq!(
        unsafe { intq_context_create(m.0, &mut out) },
        IntqStatus::Ok
    );
    Ctx(out)
}

/// The context's input and output descriptions at its batch.
fn context_infos(c: &Ctx, m: &Handle) -> (Vec<IntqTensorInfo>, Vec<IntqTensorInfo>) {
    let (ins, outs) = infos(m);
    let get = |n: usize,
               f: unsafe extern "C" fn(
        *const IntqContext,
        usize,
        *mut IntqTensorInfo,
    ) -> IntqStatus| {
        (0..n)
            .map(|i| {
                let mut info = std::mem::MaybeUninit::uninit();
                // SAFETY: live context, index in range, valid out pointer.
                assert_eq!(unsafe { f(c.0, i, info.as_mut_ptr()) }, IntqStatus::Ok);
                // SAFETY: a successful call wrote it.
                unsafe { info.assume_init() }
            })
            .collect()
    };
    (
        get(ins.len(), intq_context_input_info),
        get(outs.len(), intq_context_output_info),
    )
}

/// Runs through a context with caller buffers sized by its descriptions.
fn run_ctx(c: &Ctx, m: &Handle, inputs: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, (IntqStatus, String)> {
    let (_, outs) = context_infos(c, m);
    let mut out_bufs: Vec<Vec<u8>> = outs.iter().map(|o| vec![0xa5; o.byte_size]).collect();
    let ins: Vec<IntqBuffer> = inputs
        .iter()
        .map(|b| IntqBuffer {
            data: b.as_ptr().cast(),
            size: b.len(),
        })
        .collect();
    let outs: Vec<IntqBufferMut> = out_bufs
        .iter_mut()
        .map(|b| IntqBufferMut {
            data: b.as_mut_ptr().cast(),
            size: b.len(),
        })
        .collect();
    // SAFETY: live context; every buffer is valid for its size, no output overlaps another.
    let status =
        unsafe { intq_context_run(c.0, ins.as_ptr(), ins.len(), outs.as_ptr(), outs.len()) };
    if status == IntqStatus::Ok {
        Ok(out_bufs)
    } else {
        Err((status, last_error()))
    }
}

/// A context runs the model at another batch with its own thread count: its descriptions give
/// the batch's shapes and sizes, and its outputs are the engine's for the same images; bad
/// batches, counts, sizes and NULLs fail with their status.
#[test]
fn contexts_run_other_batches_on_threads_of_their_own() {
    let graph = examples::small_cnn(DType::U8, false, 5);
    let model = Model::new(graph.clone()).unwrap();
    let handle = load_memory(&format::to_bytes(&graph), IntqFormat::Intq as u32).unwrap();
    let ctx = context(&handle);
    let mut batch = 0;
    // SAFETY (the block): live context and model, valid out pointers.
    unsafe {
        assert_eq!(intq_context_batch(ctx.0, &mut batch), IntqStatus::Ok);
        assert_eq!(batch, 1);
        assert_eq!(intq_context_set_threads(ctx.0, 2), IntqStatus::Ok);
        assert_eq!(
            intq_context_set_batch(ctx.0, 0),
            IntqStatus::InvalidArgument
        );
        assert!(last_error().contains("batch 0"), "{}", last_error());
        assert_eq!(intq_context_set_batch(ctx.0, 3), IntqStatus::Ok);
        assert_eq!(intq_context_batch(ctx.0, &mut batch), IntqStatus::Ok);
        assert_eq!(batch, 3);
        assert_eq!(
            intq_context_set_threads(ptr::null_mut(), 1),
            IntqStatus::NullPointer
        );
        assert_eq!(
            intq_context_run(ptr::null_mut(), ptr::null(), 0, ptr::null(), 0),
            IntqStatus::NullPointer
        );
    }
    let (one_in, one_out) = infos(&handle);
    let (ins, outs) = context_infos(&ctx, &handle);
    // SAFETY: shapes live while the context keeps its batch.
    let shape =
        |i: &IntqTensorInfo| unsafe { std::slice::from_raw_parts(i.shape, i.rank) }.to_vec();
    assert_eq!(shape(&ins[0])[0], 3);
    assert_eq!(shape(&outs[0])[0], 3);
    assert_eq!(ins[0].byte_size, 3 * one_in[0].byte_size);
    assert_eq!(outs[0].byte_size, 3 * one_out[0].byte_size);
    for round in 0..3u64 {
        let images: Vec<u8> = (0..3)
            .flat_map(|k| bytes_of(&examples::random_input(&graph, 10 * round + k)[0]))
            .collect();
        let want = model.run(&[value_of(DType::U8, &images)]).unwrap();
        let got = run_ctx(&ctx, &handle, std::slice::from_ref(&images)).unwrap();
        assert_eq!(got, vec![bytes_of(&want[0])], "round {round}");
    }
    // One image's buffer is the wrong size at batch 3; a missing input is the wrong count.
    let one = bytes_of(&examples::random_input(&graph, 1)[0]);
    let (status, message) = run_ctx(&ctx, &handle, &[one]).unwrap_err();
    assert_eq!(status, IntqStatus::BufferSize, "{message}");
    assert!(message.contains("input 0"), "{message}");
    let (status, message) = run_ctx(&ctx, &handle, &[]).unwrap_err();
    assert_eq!(status, IntqStatus::InvalidArgument, "{message}");
    // The model's own runs are unaffected by the context's batch.
    let image = examples::random_input(&graph, 4);
    assert_eq!(
        run_c(&handle, &[bytes_of(&image[0])]).unwrap(),
        vec![bytes_of(&model.run(&image).unwrap()[0])]
    );
}

/// Threads, each with a context of two threads of its own on one shared model, get the bytes of
/// serial runs.
#[test]
fn concurrent_contexts_equal_serial_runs() {
    let graph = intq_tflite::load(&tflite_path("image_classification")).unwrap();
    let model = Model::new(graph.clone()).unwrap();
    let inputs: Vec<Vec<TensorData>> = (0..12).map(|s| examples::random_input(&graph, s)).collect();
    let want: Vec<Vec<Vec<u8>>> = inputs
        .iter()
        .map(|x| model.run(x).unwrap().iter().map(bytes_of).collect())
        .collect();
    let handle = load_memory(&format::to_bytes(&graph), IntqFormat::Intq as u32).unwrap();
    let handle = &handle;
    let got: Vec<Vec<Vec<Vec<u8>>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|t| {
                let inputs = &inputs;
                s.spawn(move || {
                    let ctx = context(handle);
                    // SAFETY: a live context used by this thread only.
                    assert_eq!(
                        unsafe { intq_context_set_threads(ctx.0, 2) },
                        IntqStatus::Ok
                    );
                    (0..inputs.len())
                        .map(|j| {
                            let k = (j + 4 * t) % inputs.len();
                            run_ctx(&ctx, handle, &[bytes_of(&inputs[k][0])]).unwrap()
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (t, runs) in got.into_iter().enumerate() {
        for (j, out) in runs.into_iter().enumerate() {
            assert_eq!(out, want[(j + 4 * t) % inputs.len()], "thread {t}, run {j}");
        }
    }
}
