//! The C API of intq's inference engine: load a model, describe its tensors, run it.
//!
//! Every entry point returns an [`IntqStatus`] (or, for the few that cannot fail, a value) and
//! catches panics, so no Rust unwinding crosses into C; on failure the message is kept per thread
//! for [`intq_last_error`]. `include/intq.h` is generated from this file by cbindgen
//! (`crates/intq-capi/cbindgen.toml`); docs/deploy.md shows it in use.
//!
//! A loaded [`IntqModel`] may be run from several threads at once (the engine's model is
//! immutable; each run takes a staging set with its own execution context);
//! [`intq_model_set_options`] and [`intq_model_free`] need the model to themselves. An
//! [`IntqContext`] is one caller's own execution context on a model: its buffers, kernel
//! threads and scratch, a thread count and a batch of its own, and no heap request per run once
//! it has run.

use intq_engine::{
    format, Context, DType, EngineError, ExecOptions, KernelTier, Model, Quant, TensorData,
};
use intq_kernels::IsaError;
use intq_tflite::TfliteError;
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Mutex;

/// What a call returned: `INTQ_STATUS_OK`, or why it failed (the details are in
/// `intq_last_error()`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntqStatus {
    Ok = 0,
    /// A pointer argument that must not be NULL was NULL.
    NullPointer = 1,
    /// An argument is out of its domain: a count that does not match the model, an index past
    /// the last tensor, an unknown format or dtype code, a string that is not UTF-8.
    InvalidArgument = 2,
    /// A caller's buffer does not have the byte size of the tensor it is for.
    BufferSize = 3,
    /// The model file could not be read.
    Io = 4,
    /// The model is malformed or invalid (bad `.intq`/`.tflite` bytes, a graph that fails
    /// validation or planning).
    InvalidModel = 5,
    /// A `.tflite` model uses an op or a variant the importer does not support.
    Unsupported = 6,
    /// An ISA tier name that is unknown, or that this CPU lacks.
    Isa = 7,
    /// The engine refused the inputs (e.g. codes outside a narrowed input range).
    Run = 8,
    /// A bug inside intq (a Rust panic, caught at the boundary).
    Internal = 9,
}

/// Element type of a tensor.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntqDtype {
    Uint8 = 0,
    Int8 = 1,
    Int32 = 2,
    Float32 = 3,
}

/// How a tensor's codes map to reals: `real = scale * (code - zero_point)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntqQuantization {
    /// Not quantized: a float32 edge of the model.
    None = 0,
    /// One `(scale, zero_point)` for the whole tensor.
    PerTensor = 1,
    /// One `(scale, zero_point)` per index of `channel_axis`.
    PerChannel = 2,
}

/// The serialization of model bytes given to [`intq_model_load_memory`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntqFormat {
    /// `.tflite` when the bytes carry the TFLite file identifier `TFL3`, else `.intq`.
    Auto = 0,
    Intq = 1,
    Tflite = 2,
}

/// How a model runs. All zeros (or a NULL pointer) is the default.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IntqOptions {
    /// Threads for the fast kernels; 0 means all cores. Results do not depend on it.
    pub threads: u32,
    /// A NUL-terminated tier name as `INTQ_ISA` takes it (`reference`, `portable`, `avx2`,
    /// `avx512vnni`, `amx`, `neondot`), or NULL: `INTQ_ISA` if set, else the best tier of this
    /// CPU. Every tier gives the same bytes; a tier the CPU lacks is an error, never replaced.
    pub isa: *const c_char,
}

/// A model's input or output tensor. The pointers stay valid while the model lives.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IntqTensorInfo {
    /// NUL-terminated tensor name.
    pub name: *const c_char,
    pub dtype: IntqDtype,
    /// Number of dimensions, and `rank` sizes (NHWC for images).
    pub rank: usize,
    pub shape: *const usize,
    /// Product of the shape.
    pub num_elements: usize,
    /// `num_elements` times the element size: the size a run's buffer must have.
    pub byte_size: usize,
    pub quantization: IntqQuantization,
    /// Per-tensor parameters; for per-channel tensors those of channel 0; 0 and 0 for float.
    pub scale: f32,
    pub zero_point: i32,
    /// Per-channel parameters: `channel_count` scales and zero points along `channel_axis`
    /// (for per-tensor tensors: one entry, the same as `scale`/`zero_point`; NULL for float).
    pub channel_count: usize,
    pub scales: *const f32,
    pub zero_points: *const i32,
    pub channel_axis: usize,
}

/// A caller-owned input buffer: `size` bytes at `data`, the tensor's elements in order
/// (row-major, native byte order).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IntqBuffer {
    pub data: *const c_void,
    pub size: usize,
}

/// A caller-owned output buffer the run writes: `size` bytes at `data`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IntqBufferMut {
    pub data: *mut c_void,
    pub size: usize,
}

/// A loaded, planned model (opaque to C).
pub struct IntqModel {
    model: Model,
    inputs: Vec<TensorMeta>,
    outputs: Vec<TensorMeta>,
    /// Input value sets, each with an execution context (activation buffers), reused between
    /// runs: a run copies the caller's bytes into inputs it already has and the engine writes
    /// the outputs straight into the caller's buffers.
    staging: Mutex<Vec<(Vec<TensorData>, Context)>>,
}

/// At most this many sets are kept (one per run in flight at once, up to it).
const STAGING_SETS: usize = 8;

/// One caller's execution context on a model (opaque to C): the model's tensors at the
/// context's batch, its input values, and the engine's context (activation buffers, kernel
/// threads and scratch). Used by one thread at a time; the model must outlive it.
pub struct IntqContext {
    model: *const IntqModel,
    batch: usize,
    inputs: Vec<TensorMeta>,
    outputs: Vec<TensorMeta>,
    values: Vec<TensorData>,
    ctx: Context,
}

/// What [`IntqTensorInfo`] points into, owned by the model.
struct TensorMeta {
    name: CString,
    dtype: DType,
    shape: Vec<usize>,
    quant: Option<Quant>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

impl TensorMeta {
    fn new(t: &intq_engine::Tensor) -> TensorMeta {
        // Names come from files; an interior NUL is cut there rather than refusing the model.
        let name = t.name.split('\0').next().unwrap_or_default();
        let (scales, zero_points) = match &t.quant {
            Some(Quant::PerTensor(p)) => (vec![p.scale], vec![p.zero_point]),
            Some(Quant::PerChannel(c)) => (c.scales().to_vec(), c.zero_points().to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        TensorMeta {
            name: CString::new(name).unwrap_or_default(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            quant: t.quant.clone(),
            scales,
            zero_points,
        }
    }

    fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    fn byte_size(&self) -> usize {
        self.num_elements() * self.dtype.size_bytes()
    }

    fn info(&self) -> IntqTensorInfo {
        let (quantization, channel_axis) = match &self.quant {
            None => (IntqQuantization::None, 0),
            Some(Quant::PerTensor(_)) => (IntqQuantization::PerTensor, 0),
            Some(Quant::PerChannel(c)) => (IntqQuantization::PerChannel, c.axis()),
        };
        IntqTensorInfo {
            name: self.name.as_ptr(),
            dtype: dtype_to_c(self.dtype),
            rank: self.shape.len(),
            shape: self.shape.as_ptr(),
            num_elements: self.num_elements(),
            byte_size: self.byte_size(),
            quantization,
            scale: self.scales.first().copied().unwrap_or(0.0),
            zero_point: self.zero_points.first().copied().unwrap_or(0),
            channel_count: self.scales.len(),
            scales: if self.scales.is_empty() {
                std::ptr::null()
            } else {
                self.scales.as_ptr()
            },
            zero_points: if self.zero_points.is_empty() {
                std::ptr::null()
            } else {
                self.zero_points.as_ptr()
            },
            channel_axis,
        }
    }
}

fn dtype_to_c(d: DType) -> IntqDtype {
    match d {
        DType::U8 => IntqDtype::Uint8,
        DType::I8 => IntqDtype::Int8,
        DType::I32 => IntqDtype::Int32,
        DType::F32 => IntqDtype::Float32,
    }
}

/// A failed call: the status and the message `intq_last_error` returns.
struct Failure {
    status: IntqStatus,
    message: String,
}

impl Failure {
    fn new(status: IntqStatus, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
}

fn engine_status(e: &EngineError) -> IntqStatus {
    match e {
        EngineError::Io { .. } => IntqStatus::Io,
        EngineError::File { source, .. } => engine_status(source),
        EngineError::Graph(_) | EngineError::Format(_) => IntqStatus::InvalidModel,
        EngineError::Run(_) => IntqStatus::Run,
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Failure {
        Failure::new(engine_status(&e), e.to_string())
    }
}

fn tflite_status(e: &TfliteError) -> IntqStatus {
    match e {
        TfliteError::Io { .. } => IntqStatus::Io,
        TfliteError::File { source, .. } => tflite_status(source),
        TfliteError::Unsupported { .. } => IntqStatus::Unsupported,
        _ => IntqStatus::InvalidModel,
    }
}

impl From<TfliteError> for Failure {
    fn from(e: TfliteError) -> Failure {
        Failure::new(tflite_status(&e), e.to_string())
    }
}

impl From<IsaError> for Failure {
    fn from(e: IsaError) -> Failure {
        Failure::new(IntqStatus::Isa, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A message never holds NUL in practice; cut at one rather than lose the message.
    let message = message.split('\0').next().unwrap_or_default();
    let message = CString::new(message).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Runs `f`, turning an error or a panic into a status and the thread's last-error message.
fn guard(f: impl FnOnce() -> Result<(), Failure>) -> IntqStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => IntqStatus::Ok,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            set_last_error(&format!("internal error in intq (please report): {what}"));
            IntqStatus::Internal
        }
    }
}

fn null(what: &str) -> Failure {
    Failure::new(IntqStatus::NullPointer, format!("{what} is NULL"))
}

/// `*ptr`, or a NullPointer failure naming `what`.
///
/// # Safety
/// `ptr` is NULL or valid for reads of a `T` for `'a`.
unsafe fn deref<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller guarantees a non-NULL `ptr` is valid for `'a`.
    unsafe { ptr.as_ref() }.ok_or_else(|| null(what))
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string valid for `'a`.
unsafe fn c_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL, and the caller guarantees NUL termination and validity.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str()
        .map_err(|_| Failure::new(IntqStatus::InvalidArgument, format!("{what} is not UTF-8")))
}

/// A NUL-terminated path argument: any bytes on Unix, UTF-8 elsewhere.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string valid for `'a`.
unsafe fn c_path<'a>(ptr: *const c_char) -> Result<&'a Path, Failure> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        if ptr.is_null() {
            return Err(null("path"));
        }
        // SAFETY: non-NULL, and the caller guarantees NUL termination and validity.
        let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
        Ok(Path::new(std::ffi::OsStr::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        // SAFETY: forwarded from the caller.
        Ok(Path::new(unsafe { c_str(ptr, "path") }?))
    }
}

/// The engine's options from the C struct: the tier is resolved here so a bad name or a tier
/// the CPU lacks is reported as such.
///
/// # Safety
/// `options` is NULL or a valid `IntqOptions` whose `isa` is NULL or a NUL-terminated string.
unsafe fn exec_options(options: *const IntqOptions) -> Result<ExecOptions, Failure> {
    // SAFETY: forwarded from the caller.
    let (threads, isa) = match unsafe { options.as_ref() } {
        None => (0, std::ptr::null()),
        Some(o) => (o.threads as usize, o.isa),
    };
    let tier = if isa.is_null() {
        KernelTier::from_env()
            .map_err(|e| Failure::new(IntqStatus::Isa, format!("INTQ_ISA: {e}")))?
    } else {
        // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string.
        KernelTier::parse(unsafe { c_str(isa, "options->isa") }?)?
    };
    Ok(ExecOptions {
        kernels: Some(tier),
        threads,
    })
}

impl IntqModel {
    fn new(graph: intq_engine::Graph, options: ExecOptions) -> Result<IntqModel, Failure> {
        let model = Model::with_options(graph, options)?;
        let g = model.graph();
        let meta = |ids: &[intq_engine::TensorId]| {
            ids.iter()
                .map(|&id| TensorMeta::new(g.tensor(id)))
                .collect::<Vec<_>>()
        };
        let inputs = meta(g.inputs());
        let outputs = meta(g.outputs());
        Ok(IntqModel {
            model,
            inputs,
            outputs,
            staging: Mutex::new(Vec::new()),
        })
    }

    /// Runs the model on the caller's buffers, writing each output into its buffer. Checks
    /// counts, NULL data and sizes before touching any buffer; once a staging set exists and
    /// has run, a run of a model with at most eight outputs makes no heap request.
    ///
    /// # Safety
    /// Each buffer's non-NULL `data` is valid for `size` bytes (writes, for outputs), and no
    /// output overlaps another buffer.
    unsafe fn run_buffers(
        &self,
        inputs: &[IntqBuffer],
        outputs: &[IntqBufferMut],
    ) -> Result<(), Failure> {
        check_counts(&self.inputs, &self.outputs, inputs.len(), outputs.len())?;
        let (mut values, mut ctx) = self
            .staging
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| {
                let values = self
                    .inputs
                    .iter()
                    .map(|m| TensorData::zeros(m.dtype, m.num_elements()))
                    .collect();
                (values, self.model.context())
            });
        let metas = (&self.inputs[..], &self.outputs[..]);
        // SAFETY: forwarded from the caller.
        let result =
            unsafe { stage_and_run(&self.model, &mut ctx, metas, &mut values, inputs, outputs) };
        {
            let mut sets = self.staging.lock().unwrap_or_else(|e| e.into_inner());
            if sets.len() < STAGING_SETS {
                sets.push((values, ctx));
            }
        }
        result
    }
}

/// Checks the counts of a run's buffers against the tensors.
fn check_counts(
    inputs: &[TensorMeta],
    outputs: &[TensorMeta],
    n_inputs: usize,
    n_outputs: usize,
) -> Result<(), Failure> {
    if n_inputs != inputs.len() {
        return Err(Failure::new(
            IntqStatus::InvalidArgument,
            format!(
                "the model has {} input(s) but {n_inputs} were given",
                inputs.len()
            ),
        ));
    }
    if n_outputs != outputs.len() {
        return Err(Failure::new(
            IntqStatus::InvalidArgument,
            format!(
                "the model has {} output(s) but {n_outputs} buffers were given",
                outputs.len()
            ),
        ));
    }
    Ok(())
}

/// Copies the caller's input bytes into `values` and runs `model` in `ctx`, writing the outputs
/// into the caller's buffers. The buffers are checked against their tensors first.
///
/// # Safety
/// Each buffer's non-NULL `data` is valid for `size` bytes (writes, for outputs), and no
/// output overlaps another buffer.
unsafe fn stage_and_run(
    model: &Model,
    ctx: &mut Context,
    (in_metas, out_metas): (&[TensorMeta], &[TensorMeta]),
    values: &mut [TensorData],
    inputs: &[IntqBuffer],
    outputs: &[IntqBufferMut],
) -> Result<(), Failure> {
    check_counts(in_metas, out_metas, inputs.len(), outputs.len())?;
    let ins = inputs.iter().map(|b| (b.data.is_null(), b.size));
    check_buffers("input", in_metas, ins)?;
    let outs = outputs.iter().map(|b| (b.data.is_null(), b.size));
    check_buffers("output", out_metas, outs)?;
    for (value, b) in values.iter_mut().zip(inputs) {
        // SAFETY: checked non-NULL above; the caller guarantees `size` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(b.data.cast::<u8>(), b.size) };
        as_bytes_mut(value).copy_from_slice(bytes);
    }
    // SAFETY (both): checked non-NULL above; the caller guarantees `size` writable bytes that
    // overlap no other buffer of this call.
    let slice =
        |b: &IntqBufferMut| unsafe { std::slice::from_raw_parts_mut(b.data.cast::<u8>(), b.size) };
    // Up to eight outputs are listed on the stack, so a prepared run makes no heap request.
    let mut few: [&mut [u8]; 8] = Default::default();
    if outputs.len() <= few.len() {
        for (o, b) in few.iter_mut().zip(outputs) {
            *o = slice(b);
        }
        model.run_into(ctx, values, &mut few[..outputs.len()])?;
    } else {
        let mut many: Vec<&mut [u8]> = outputs.iter().map(slice).collect();
        model.run_into(ctx, values, &mut many)?;
    }
    Ok(())
}

/// Checks each buffer, given as `(data is NULL, size)`, against its tensor.
fn check_buffers(
    kind: &str,
    metas: &[TensorMeta],
    buffers: impl Iterator<Item = (bool, usize)>,
) -> Result<(), Failure> {
    for (i, (m, (is_null, size))) in metas.iter().zip(buffers).enumerate() {
        if is_null {
            return Err(null(&format!("{kind}s[{i}].data")));
        }
        if size != m.byte_size() {
            return Err(Failure::new(
                IntqStatus::BufferSize,
                format!(
                    "{kind} {i} ('{}', {} {:?}) takes {} bytes, but the buffer has {size}",
                    m.name.to_string_lossy(),
                    m.dtype,
                    m.shape,
                    m.byte_size()
                ),
            ));
        }
    }
    Ok(())
}

/// A value's elements as bytes (native byte order).
fn as_bytes_mut(d: &mut TensorData) -> &mut [u8] {
    match d {
        TensorData::U8(v) => v,
        TensorData::I8(v) => bytemuck::cast_slice_mut(v),
        TensorData::I32(v) => bytemuck::cast_slice_mut(v),
        TensorData::F32(v) => bytemuck::cast_slice_mut(v),
    }
}

/// Whether `bytes` are a `.tflite` file: FlatBuffers put the file identifier at offset 4.
fn looks_like_tflite(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(b"TFL3")
}

fn model_from_bytes(
    bytes: &[u8],
    format: IntqFormat,
    options: ExecOptions,
) -> Result<IntqModel, Failure> {
    let tflite = match format {
        IntqFormat::Auto => looks_like_tflite(bytes),
        IntqFormat::Intq => false,
        IntqFormat::Tflite => true,
    };
    let graph = if tflite {
        intq_tflite::import(bytes)?
    } else {
        format::from_bytes(bytes)?
    };
    IntqModel::new(graph, options)
}

/// Loads a model from a file and plans it: `.tflite` by extension (case-insensitive), `.intq`
/// otherwise. `options` may be NULL (defaults). On success `*out` owns the model; free it with
/// `intq_model_free`. On failure `*out` is set to NULL.
///
/// # Safety
/// `path` is a NUL-terminated string; `options` is NULL or valid; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn intq_model_load(
    path: *const c_char,
    options: *const IntqOptions,
    out: *mut *mut IntqModel,
) -> IntqStatus {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: `out` is non-NULL and the caller guarantees it is valid for a write.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: the caller guarantees `path` is NULL or NUL-terminated.
        let path = unsafe { c_path(path) }?;
        // SAFETY: the caller guarantees `options` is NULL or valid.
        let options = unsafe { exec_options(options) }?;
        let model = if intq_tflite::is_tflite_path(path) {
            IntqModel::new(intq_tflite::load(path)?, options)
                .map_err(|f| Failure::new(f.status, format!("{}: {}", path.display(), f.message)))?
        } else {
            IntqModel::new(format::load(path)?, options)
                .map_err(|f| Failure::new(f.status, format!("{}: {}", path.display(), f.message)))?
        };
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(Box::new(model))) };
        Ok(())
    })
}

/// Loads a model from `len` bytes at `data` (an `IntqFormat`; `INTQ_FORMAT_AUTO` tells `.tflite`
/// by its file identifier). The bytes are not kept: the caller may free them on return.
/// `options` may be NULL. On failure `*out` is set to NULL.
///
/// # Safety
/// `data` is valid for reads of `len` bytes; `options` is NULL or valid; `out` is valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn intq_model_load_memory(
    data: *const u8,
    len: usize,
    format: u32,
    options: *const IntqOptions,
    out: *mut *mut IntqModel,
) -> IntqStatus {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: `out` is non-NULL and the caller guarantees it is valid for a write.
        unsafe { out.write(std::ptr::null_mut()) };
        if data.is_null() {
            return Err(null("data"));
        }
        let format = match format {
            0 => IntqFormat::Auto,
            1 => IntqFormat::Intq,
            2 => IntqFormat::Tflite,
            other => {
                return Err(Failure::new(
                    IntqStatus::InvalidArgument,
                    format!("unknown model format {other} (0 auto, 1 intq, 2 tflite)"),
                ))
            }
        };
        // SAFETY: non-NULL, and the caller guarantees `len` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(data, len) };
        // SAFETY: the caller guarantees `options` is NULL or valid.
        let options = unsafe { exec_options(options) }?;
        let model = model_from_bytes(bytes, format, options)?;
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(Box::new(model))) };
        Ok(())
    })
}

/// Frees a model (NULL is ignored). No run of it may be in progress.
///
/// # Safety
/// `model` is NULL or a pointer returned by a load function and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn intq_model_free(model: *mut IntqModel) {
    if model.is_null() {
        return;
    }
    // Dropping cannot panic in practice; the guard keeps even that from crossing into C.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller guarantees the pointer came from `Box::into_raw` and is unfreed.
        drop(unsafe { Box::from_raw(model) });
    }));
}

/// Re-plans a loaded model with other threads or another ISA tier. No run of the model may be
/// in progress (unlike `intq_model_run`, this needs the model to itself). On failure the model
/// keeps its previous options.
///
/// # Safety
/// `model` is NULL or a live model used by no other thread; `options` is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn intq_model_set_options(
    model: *mut IntqModel,
    options: *const IntqOptions,
) -> IntqStatus {
    guard(|| {
        // SAFETY: the caller guarantees a non-NULL model is live and not shared right now.
        let model = unsafe { model.as_mut() }.ok_or_else(|| null("model"))?;
        // SAFETY: the caller guarantees `options` is NULL or valid.
        let options = unsafe { exec_options(options) }?;
        let replanned = Model::with_options(model.model.graph().clone(), options)?;
        model.model = replanned;
        Ok(())
    })
}

/// The number of graph inputs.
///
/// # Safety
/// `model` is NULL or a live model; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn intq_model_input_count(
    model: *const IntqModel,
    out: *mut usize,
) -> IntqStatus {
    guard(|| {
        // SAFETY: the caller guarantees a non-NULL model is live.
        let model = unsafe { deref(model, "model") }?;
        // SAFETY: the caller guarantees a non-NULL `out` is writable.
        let out = unsafe { out.as_mut() }.ok_or_else(|| null("out"))?;
        *out = model.inputs.len();
        Ok(())
    })
}

/// The number of graph outputs.
///
/// # Safety
/// `model` is NULL or a live model; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn intq_model_output_count(
    model: *const IntqModel,
    out: *mut usize,
) -> IntqStatus {
    guard(|| {
        // SAFETY: the caller guarantees a non-NULL model is live.
        let model = unsafe { deref(model, "model") }?;
        // SAFETY: the caller guarantees a non-NULL `out` is writable.
        let out = unsafe { out.as_mut() }.ok_or_else(|| null("out"))?;
        *out = model.outputs.len();
        Ok(())
    })
}

/// Writes the description of tensor `index` of `metas` (the `kind`s of a model or context) to
/// `out`.
///
/// # Safety
/// `out` is NULL or valid for a write.
unsafe fn write_info(
    metas: &[TensorMeta],
    index: usize,
    kind: &str,
    out: *mut IntqTensorInfo,
) -> Result<(), Failure> {
    if out.is_null() {
        return Err(null("out"));
    }
    let info = metas.get(index).map(TensorMeta::info).ok_or_else(|| {
        Failure::new(
            IntqStatus::InvalidArgument,
            format!(
                "{kind} {index} asked for, but the model has {}",
                metas.len()
            ),
        )
    })?;
    // SAFETY: non-NULL, and the caller guarantees it is valid for a write.
    unsafe { out.write(info) };
    Ok(())
}

/// Describes graph input `index` (0-based). The pointers in `*out` live as long as the model.
///
/// # Safety
/// `model` is NULL or a live model; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn intq_model_input_info(
    model: *const IntqModel,
    index: usize,
    out: *mut IntqTensorInfo,
) -> IntqStatus {
    guard(|| {
        // SAFETY: the caller guarantees a non-NULL model is live.
        let model = unsafe { deref(model, "model") }?;
        // SAFETY: the caller guarantees a non-NULL `out` is valid for a write.
        unsafe { write_info(&model.inputs, index, "input", out) }
    })
}

/// Describes graph output `index` (0-based). The pointers in `*out` live as long as the model.
///
/// # Safety
/// `model` is NULL or a live model; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn intq_model_output_info(
    model: *const IntqModel,
    index: usize,
    out: *mut IntqTensorInfo,
) -> IntqStatus {
    guard(|| {
        // SAFETY: the caller guarantees a non-NULL model is live.
        let model = unsafe { deref(model, "model") }?;
        // SAFETY: the caller guarantees a non-NULL `out` is valid for a write.
        unsafe { write_info(&model.outputs, index, "output", out) }
    })
}

/// The ISA tier the model's kernels run on (`reference`, `portable`, `avx2`, ...), as a static
/// NUL-terminated string, and the thread count it was planned with (0: all cores, as resolved
/// by the engine). Either out pointer may be NULL.
///
/// # Safety
/// `model` is NULL or a live model; `isa` and `threads` are NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn intq_model_execution(
    model: *const IntqModel,
    isa: *mut *const c_char,
    threads: *mut usize,
) -> IntqStatus {
    guard(|| {
        // SAFETY: the caller guarantees a non-NULL model is live.
        let model = unsafe { deref(model, "model") }?;
        let name: &'static CStr = match model.model.kernel_tier() {
            KernelTier::Reference => c"reference",
            KernelTier::Fast(isa) => tier_c_name(isa.name()),
        };
        // SAFETY: the caller guarantees each out pointer is NULL or writable.
        if let Some(isa) = unsafe { isa.as_mut() } {
            *isa = name.as_ptr();
        }
        // SAFETY: as above.
        if let Some(threads) = unsafe { threads.as_mut() } {
            *threads = model.model.threads();
        }
        Ok(())
    })
}

/// A static C string for a tier name (tier names are a closed set of `&'static str`).
fn tier_c_name(name: &str) -> &'static CStr {
    match name {
        "portable" => c"portable",
        "avx2" => c"avx2",
        "avx512vnni" => c"avx512vnni",
        "amx" => c"amx",
        "neondot" => c"neondot",
        _ => c"unknown",
    }
}

/// Runs the model: `n_inputs` input buffers in graph-input order, each exactly the input's
/// `byte_size`, and `n_outputs` output buffers the run fills, each exactly the output's
/// `byte_size`. The buffers are the caller's; no pointer is kept after the call. Several
/// threads may run one model at once. On failure the output buffers' contents are unspecified.
///
/// # Safety
/// `model` is NULL or a live model; `inputs` points to `n_inputs` `IntqBuffer`s and `outputs`
/// to `n_outputs` `IntqBufferMut`s (either may be NULL when its count is 0), each `data` valid
/// for `size` bytes (writes, for outputs) and no output overlapping another buffer.
#[no_mangle]
pub unsafe extern "C" fn intq_model_run(
    model: *const IntqModel,
    inputs: *const IntqBuffer,
    n_inputs: usize,
    outputs: *const IntqBufferMut,
    n_outputs: usize,
) -> IntqStatus {
    guard(|| {
        // SAFETY: the caller guarantees a non-NULL model is live.
        let model = unsafe { deref(model, "model") }?;
        // SAFETY: the caller guarantees `n_inputs` buffers at a non-NULL `inputs`.
        let inputs = unsafe { slice_arg(inputs, n_inputs, "inputs") }?;
        // SAFETY: the caller guarantees `n_outputs` buffers at a non-NULL `outputs`.
        let outputs = unsafe { slice_arg(outputs, n_outputs, "outputs") }?;
        // SAFETY: forwarded from the caller (see this function's contract).
        unsafe { model.run_buffers(inputs, outputs) }
    })
}

/// `n` elements at `ptr`; an empty slice for `n == 0` even when `ptr` is NULL.
///
/// # Safety
/// When `n > 0`, `ptr` is NULL or valid for reads of `n` `T`s for `'a`.
unsafe fn slice_arg<'a, T>(ptr: *const T, n: usize, what: &str) -> Result<&'a [T], Failure> {
    if n == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL, and the caller guarantees `n` readable elements.
    Ok(unsafe { std::slice::from_raw_parts(ptr, n) })
}

impl IntqContext {
    /// The model's tensors at batch `n` (planning that batch), refused when the graph cannot
    /// run it.
    fn metas_at(
        model: &IntqModel,
        n: usize,
    ) -> Result<(Vec<TensorMeta>, Vec<TensorMeta>), Failure> {
        if n == 0 {
            return Err(Failure::new(
                IntqStatus::InvalidArgument,
                "batch 0: a run needs at least one image",
            ));
        }
        let (m, g) = (&model.model, model.model.graph());
        let at = |ids: &[intq_engine::TensorId]| {
            ids.iter()
                .map(|&id| {
                    let mut meta = TensorMeta::new(g.tensor(id));
                    meta.shape = m.shape_at(id, n)?;
                    Ok(meta)
                })
                .collect::<Result<Vec<_>, Failure>>()
        };
        Ok((at(g.inputs())?, at(g.outputs())?))
    }

    /// Sets the batch: tensors, and input values of their size.
    fn set_batch(&mut self, model: &IntqModel, n: usize) -> Result<(), Failure> {
        let (inputs, outputs) = Self::metas_at(model, n)?;
        self.values = inputs
            .iter()
            .map(|m| TensorData::zeros(m.dtype, m.num_elements()))
            .collect();
        (self.batch, self.inputs, self.outputs) = (n, inputs, outputs);
        Ok(())
    }
}

/// Makes an execution context for `model`: one caller's activation buffers, kernel threads
/// (the model's thread count unless `intq_context_set_threads` says otherwise) and scratch,
/// reused run after run, at the model's own batch until `intq_context_set_batch`. A context is
/// used by one thread at a time (several contexts on one model run at once); the model must
/// outlive it. On failure `*out` is set to NULL.
///
/// # Safety
/// `model` is NULL or a live model; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn intq_context_create(
    model: *const IntqModel,
    out: *mut *mut IntqContext,
) -> IntqStatus {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: `out` is non-NULL and the caller guarantees it is valid for a write.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: the caller guarantees a non-NULL model is live.
        let m = unsafe { deref(model, "model") }?;
        let mut ctx = IntqContext {
            model,
            batch: 0,
            inputs: Vec::new(),
            outputs: Vec::new(),
            values: Vec::new(),
            ctx: m.model.context(),
        };
        ctx.set_batch(m, m.model.batch())?;
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(Box::new(ctx))) };
        Ok(())
    })
}

/// Frees a context (NULL is ignored) and ends its kernel threads. No run of it may be in
/// progress.
///
/// # Safety
/// `ctx` is NULL or a pointer returned by `intq_context_create` and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn intq_context_free(ctx: *mut IntqContext) {
    if ctx.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller guarantees the pointer came from `Box::into_raw` and is unfreed.
        drop(unsafe { Box::from_raw(ctx) });
    }));
}

/// The context's kernels run on `threads` threads, the caller's included (0: the model's
/// count). Results do not depend on it.
///
/// # Safety
/// `ctx` is NULL or a live context used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn intq_context_set_threads(
    ctx: *mut IntqContext,
    threads: u32,
) -> IntqStatus {
    guard(|| {
        // SAFETY: the caller guarantees a non-NULL context is live and not shared right now.
        let ctx = unsafe { ctx.as_mut() }.ok_or_else(|| null("ctx"))?;
        ctx.ctx.set_threads(threads as usize);
        Ok(())
    })
}

/// Runs the context at `batch` images (the leading dimension of every input and output): the
/// model is planned for it once (and kept), and `intq_context_input_info`/`output_info` give
/// the shapes and byte sizes at it. Refused (`INTQ_STATUS_RUN`, naming the op) for a graph whose
/// ops mix images; `INTQ_STATUS_INVALID_ARGUMENT` for 0. On failure the batch is unchanged.
///
/// # Safety
/// `ctx` is NULL or a live context used by no other thread, whose model is live.
#[no_mangle]
pub unsafe extern "C" fn intq_context_set_batch(ctx: *mut IntqContext, batch: usize) -> IntqStatus {
    guard(|| {
        // SAFETY: the caller guarantees a non-NULL context is live and not shared right now.
        let ctx = unsafe { ctx.as_mut() }.ok_or_else(|| null("ctx"))?;
        // SAFETY: the caller guarantees the context's model outlives it.
        let model = unsafe { deref(ctx.model, "the context's model") }?;
        if batch != ctx.batch {
            ctx.set_batch(model, batch)?;
        }
        Ok(())
    })
}

/// The context's batch (the model's own until `intq_context_set_batch`).
///
/// # Safety
/// `ctx` is NULL or a live context; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn intq_context_batch(
    ctx: *const IntqContext,
    out: *mut usize,
) -> IntqStatus {
    guard(|| {
        // SAFETY: the caller guarantees a non-NULL context is live.
        let ctx = unsafe { deref(ctx, "ctx") }?;
        // SAFETY: the caller guarantees a non-NULL `out` is writable.
        let out = unsafe { out.as_mut() }.ok_or_else(|| null("out"))?;
        *out = ctx.batch;
        Ok(())
    })
}

/// Describes graph input `index` at the context's batch. The pointers in `*out` live until the
/// context's batch changes or it is freed.
///
/// # Safety
/// `ctx` is NULL or a live context; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn intq_context_input_info(
    ctx: *const IntqContext,
    index: usize,
    out: *mut IntqTensorInfo,
) -> IntqStatus {
    guard(|| {
        // SAFETY: the caller guarantees a non-NULL context is live.
        let ctx = unsafe { deref(ctx, "ctx") }?;
        // SAFETY: the caller guarantees a non-NULL `out` is valid for a write.
        unsafe { write_info(&ctx.inputs, index, "input", out) }
    })
}

/// Describes graph output `index` at the context's batch. The pointers in `*out` live until the
/// context's batch changes or it is freed.
///
/// # Safety
/// `ctx` is NULL or a live context; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn intq_context_output_info(
    ctx: *const IntqContext,
    index: usize,
    out: *mut IntqTensorInfo,
) -> IntqStatus {
    guard(|| {
        // SAFETY: the caller guarantees a non-NULL context is live.
        let ctx = unsafe { deref(ctx, "ctx") }?;
        // SAFETY: the caller guarantees a non-NULL `out` is valid for a write.
        unsafe { write_info(&ctx.outputs, index, "output", out) }
    })
}

/// Runs the context's model at its batch: buffers as for `intq_model_run`, each exactly the
/// `byte_size` of `intq_context_input_info`/`output_info`. Once the context has run, a run
/// makes no heap request (for a model of at most eight outputs).
///
/// # Safety
/// `ctx` is NULL or a live context used by no other thread, whose model is live; `inputs` and
/// `outputs` as for `intq_model_run`.
#[no_mangle]
pub unsafe extern "C" fn intq_context_run(
    ctx: *mut IntqContext,
    inputs: *const IntqBuffer,
    n_inputs: usize,
    outputs: *const IntqBufferMut,
    n_outputs: usize,
) -> IntqStatus {
    guard(|| {
        // SAFETY: the caller guarantees a non-NULL context is live and not shared right now.
        let ctx = unsafe { ctx.as_mut() }.ok_or_else(|| null("ctx"))?;
        // SAFETY: the caller guarantees the context's model outlives it.
        let model = unsafe { deref(ctx.model, "the context's model") }?;
        // SAFETY: the caller guarantees `n_inputs` buffers at a non-NULL `inputs`.
        let inputs = unsafe { slice_arg(inputs, n_inputs, "inputs") }?;
        // SAFETY: the caller guarantees `n_outputs` buffers at a non-NULL `outputs`.
        let outputs = unsafe { slice_arg(outputs, n_outputs, "outputs") }?;
        let metas = (&ctx.inputs[..], &ctx.outputs[..]);
        // SAFETY: forwarded from the caller (see this function's contract).
        unsafe {
            stage_and_run(
                &model.model,
                &mut ctx.ctx,
                metas,
                &mut ctx.values,
                inputs,
                outputs,
            )
        }
    })
}

/// The code type of a quantize/dequantize helper: 0 uint8 or 1 int8 (`IntqDtype` values).
fn code_type(dtype: u32) -> Result<(i32, i32), Failure> {
    match dtype {
        0 => Ok((0, 255)),
        1 => Ok((-128, 127)),
        other => Err(Failure::new(
            IntqStatus::InvalidArgument,
            format!("quantize/dequantize take uint8 (0) or int8 (1) codes, not dtype {other}"),
        )),
    }
}

fn params(scale: f32, zero_point: i32) -> Result<intq_engine::QuantParams, Failure> {
    intq_engine::QuantParams::new(scale, zero_point)
        .map_err(|e| Failure::new(IntqStatus::InvalidArgument, format!("scale {scale}: {e}")))
}

/// Real values to codes as the engine's Quantize op at a model's edge:
/// `clamp(round(x / scale) + zero_point)` over the code type's range (docs/spec.md §4.12), one code
/// of `dtype` (`INTQ_DTYPE_UINT8` or `INTQ_DTYPE_INT8`) per element, written to `out` (`n`
/// bytes).
///
/// # Safety
/// `x` is valid for reads of `n` floats and `out` for writes of `n` bytes (either may be NULL
/// when `n` is 0).
#[no_mangle]
pub unsafe extern "C" fn intq_quantize(
    x: *const f32,
    n: usize,
    scale: f32,
    zero_point: i32,
    dtype: u32,
    out: *mut c_void,
) -> IntqStatus {
    guard(|| {
        let (lo, hi) = code_type(dtype)?;
        let p = params(scale, zero_point)?;
        // SAFETY: the caller guarantees `n` readable floats at a non-NULL `x`.
        let x = unsafe { slice_arg(x, n, "x") }?;
        if n > 0 && out.is_null() {
            return Err(null("out"));
        }
        let out = out.cast::<u8>();
        for (i, &v) in x.iter().enumerate() {
            // Both code types are one byte; int8 codes are stored as their two's complement.
            let code = p.quantize(v, lo, hi) as i8 as u8;
            // SAFETY: `i < n`, and the caller guarantees `n` writable bytes at `out`.
            unsafe { out.add(i).write(code) };
        }
        Ok(())
    })
}

/// Codes to real values: `scale * (q - zero_point)` as the engine's Dequantize op; `q` holds
/// `n` codes of `dtype` (`INTQ_DTYPE_UINT8` or `INTQ_DTYPE_INT8`), `out` receives `n` floats.
///
/// # Safety
/// `q` is valid for reads of `n` bytes and `out` for writes of `n` floats (either may be NULL
/// when `n` is 0).
#[no_mangle]
pub unsafe extern "C" fn intq_dequantize(
    q: *const c_void,
    n: usize,
    scale: f32,
    zero_point: i32,
    dtype: u32,
    out: *mut f32,
) -> IntqStatus {
    guard(|| {
        let (lo, _) = code_type(dtype)?;
        let p = params(scale, zero_point)?;
        // SAFETY: the caller guarantees `n` readable bytes at a non-NULL `q`.
        let q = unsafe { slice_arg(q.cast::<u8>(), n, "q") }?;
        if n > 0 && out.is_null() {
            return Err(null("out"));
        }
        for (i, &b) in q.iter().enumerate() {
            let code = if lo < 0 { b as i8 as i32 } else { b as i32 };
            // SAFETY: `i < n`, and the caller guarantees `n` writable floats at `out`.
            unsafe { out.add(i).write(p.dequantize(code)) };
        }
        Ok(())
    })
}

/// The message of the last call on this thread that failed ("" if none failed). The string
/// is valid until the next failing call on this thread.
#[no_mangle]
pub extern "C" fn intq_last_error() -> *const c_char {
    catch_unwind(|| LAST_ERROR.with(|e| e.borrow().as_ptr())).unwrap_or(c"".as_ptr())
}

/// A static name for a status code (`"ok"`, `"null pointer"`, ...).
#[no_mangle]
pub extern "C" fn intq_status_name(status: i32) -> *const c_char {
    let name: &'static CStr = match status {
        0 => c"ok",
        1 => c"null pointer",
        2 => c"invalid argument",
        3 => c"buffer size",
        4 => c"i/o error",
        5 => c"invalid model",
        6 => c"unsupported model",
        7 => c"isa tier unavailable",
        8 => c"run refused",
        9 => c"internal error",
        _ => c"unknown status",
    };
    name.as_ptr()
}

/// The library's version, a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn intq_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

/// The default options: all cores, and the tier `INTQ_ISA` names, else the CPU's best.
#[no_mangle]
pub extern "C" fn intq_default_options() -> IntqOptions {
    IntqOptions {
        threads: 0,
        isa: std::ptr::null(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_have_names() {
        for s in 0..10 {
            // SAFETY: intq_status_name returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(intq_status_name(s)) };
            assert_ne!(name.to_str().unwrap(), "unknown status", "status {s}");
        }
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = guard(|| panic!("boom {}", 7));
        assert_eq!(status, IntqStatus::Internal);
        // SAFETY: a NUL-terminated string valid until the next failing call on this thread.
        let message = unsafe { CStr::from_ptr(intq_last_error()) };
        assert!(message.to_str().unwrap().contains("boom 7"), "{message:?}");
        assert_eq!(guard(|| Ok(())), IntqStatus::Ok);
    }

    #[test]
    fn tflite_is_told_by_its_identifier() {
        assert!(looks_like_tflite(b"\x1c\0\0\0TFL3rest"));
        assert!(!looks_like_tflite(&format::MAGIC));
        assert!(!looks_like_tflite(b"TFL"));
    }
}
