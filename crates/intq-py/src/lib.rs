//! The Python module `intq`: load an `.intq` or `.tflite` model into intq's integer engine and
//! run it on NumPy arrays, with the engine's exact bytes. The interpreter lock is released while
//! a model runs, so threads sharing one model run at once. `intq.pyi` is the typed interface.

use intq_engine::{
    format, DType, EngineError, ExecOptions, KernelTier, Model as EngineModel, Quant, QuantParams,
    Tensor, TensorData,
};
use intq_tflite::TfliteError;
use numpy::{
    dtype, Element, PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pyo3::create_exception!(
    intq,
    ModelError,
    PyValueError,
    "A model file or buffer that is malformed, invalid, or uses what intq does not support."
);

fn engine_err(e: EngineError) -> PyErr {
    fn io_kind(e: &EngineError) -> Option<std::io::ErrorKind> {
        match e {
            EngineError::Io { source, .. } => Some(source.kind()),
            EngineError::File { source, .. } => io_kind(source),
            _ => None,
        }
    }
    match (io_kind(&e), &e) {
        (Some(std::io::ErrorKind::NotFound), _) => PyFileNotFoundError::new_err(e.to_string()),
        (Some(_), _) => PyOSError::new_err(e.to_string()),
        (None, EngineError::Run(_)) => PyValueError::new_err(e.to_string()),
        _ => ModelError::new_err(e.to_string()),
    }
}

fn tflite_err(e: TfliteError) -> PyErr {
    fn io_kind(e: &TfliteError) -> Option<std::io::ErrorKind> {
        match e {
            TfliteError::Io { source, .. } => Some(source.kind()),
            TfliteError::File { source, .. } => io_kind(source),
            _ => None,
        }
    }
    match io_kind(&e) {
        Some(std::io::ErrorKind::NotFound) => PyFileNotFoundError::new_err(e.to_string()),
        Some(_) => PyOSError::new_err(e.to_string()),
        None => ModelError::new_err(e.to_string()),
    }
}

/// A graph input or output: name, dtype, shape and quantization parameters.
#[pyclass(module = "intq", frozen, get_all)]
struct TensorInfo {
    /// The tensor's name in the model.
    name: String,
    /// NumPy's name of the element type: `uint8`, `int8`, `int32` or `float32`.
    dtype: String,
    shape: Vec<usize>,
    /// `None`, `"per_tensor"` or `"per_channel"`.
    quantization: Option<String>,
    /// Per-tensor `(scale, zero_point)` (`None` for float tensors; channel 0 if per-channel).
    scale: Option<f32>,
    zero_point: Option<i32>,
    /// Every channel's parameters (one entry for per-tensor; empty for float) and the axis.
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    axis: Option<usize>,
}

impl TensorInfo {
    fn new(t: &Tensor) -> TensorInfo {
        let (quantization, scales, zero_points, axis) = match &t.quant {
            None => (None, vec![], vec![], None),
            Some(Quant::PerTensor(p)) => (
                Some("per_tensor".to_string()),
                vec![p.scale],
                vec![p.zero_point],
                None,
            ),
            Some(Quant::PerChannel(c)) => (
                Some("per_channel".to_string()),
                c.scales().to_vec(),
                c.zero_points().to_vec(),
                Some(c.axis()),
            ),
        };
        TensorInfo {
            name: t.name.clone(),
            dtype: t.dtype.name().to_string(),
            shape: t.shape.clone(),
            quantization,
            scale: scales.first().copied(),
            zero_point: zero_points.first().copied(),
            scales,
            zero_points,
            axis,
        }
    }
}

#[pymethods]
impl TensorInfo {
    fn __repr__(&self) -> String {
        let q = match (self.scale, self.zero_point) {
            (Some(s), Some(z)) => format!(", scale={s:e}, zero_point={z}"),
            _ => String::new(),
        };
        format!(
            "TensorInfo(name={:?}, dtype='{}', shape={:?}{q})",
            self.name, self.dtype, self.shape
        )
    }
}

/// A loaded, planned model. Safe to share between threads; `run` releases the interpreter lock.
#[pyclass(module = "intq", frozen)]
struct Model {
    model: Arc<EngineModel>,
    /// Execution contexts of finished runs: a run takes one (or makes one when all are in use
    /// by other threads) and puts it back, so repeated runs reuse their buffers and scratch.
    contexts: Arc<Mutex<Vec<intq_engine::Context>>>,
    inputs: Vec<Py<TensorInfo>>,
    outputs: Vec<Py<TensorInfo>>,
}

fn exec_options(threads: usize, isa: Option<&str>) -> PyResult<ExecOptions> {
    let tier = match isa {
        None => {
            KernelTier::from_env().map_err(|e| PyValueError::new_err(format!("INTQ_ISA: {e}")))?
        }
        Some(name) => KernelTier::parse(name).map_err(|e| PyValueError::new_err(e.to_string()))?,
    };
    Ok(ExecOptions {
        kernels: Some(tier),
        threads,
    })
}

impl Model {
    fn from_graph(
        py: Python<'_>,
        graph: intq_engine::Graph,
        options: ExecOptions,
        what: &str,
    ) -> PyResult<Model> {
        let model = EngineModel::with_options(graph, options)
            .map_err(|e| ModelError::new_err(format!("{what}: {e}")))?;
        let infos = |ids: &[intq_engine::TensorId]| -> PyResult<Vec<Py<TensorInfo>>> {
            ids.iter()
                .map(|&id| Py::new(py, TensorInfo::new(model.graph().tensor(id))))
                .collect()
        };
        let inputs = infos(model.graph().inputs())?;
        let outputs = infos(model.graph().outputs())?;
        Ok(Model {
            model: Arc::new(model),
            contexts: Arc::default(),
            inputs,
            outputs,
        })
    }

    /// One Python value converted to the engine value of input `index`.
    fn input_value(&self, index: usize, value: &Bound<'_, PyAny>) -> PyResult<TensorData> {
        let t = self
            .model
            .graph()
            .tensor(self.model.graph().inputs()[index]);
        let what = || format!("input {index} ('{}')", t.name);
        let array = value.cast::<PyUntypedArray>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{} takes a numpy.ndarray of {} with shape {:?}, not {}",
                what(),
                t.dtype,
                t.shape,
                value
                    .get_type()
                    .name()
                    .map_or("?".into(), |n| n.to_string())
            ))
        })?;
        // Any number of images: the leading dimension is the batch, the rest is the input's.
        let given_shape = array.shape();
        let per_image_matches = given_shape.len() == t.shape.len()
            && given_shape.first().is_some_and(|&n| n >= 1)
            && given_shape[1..] == t.shape[1..];
        if !per_image_matches {
            return Err(PyValueError::new_err(format!(
                "{} has shape {:?} (any leading batch of 1 or more), but an array of shape {:?} \
                 was given",
                what(),
                t.shape,
                given_shape
            )));
        }
        let py = value.py();
        let given = array.dtype();
        let wrong_dtype = || {
            let hint = match t.dtype {
                DType::U8 | DType::I8 => " (intq.quantize turns reals into codes)",
                _ => "",
            };
            PyTypeError::new_err(format!(
                "{} is {}, but an array of {} was given{hint}",
                what(),
                t.dtype,
                given
            ))
        };
        fn collect<T: Element + Copy>(v: &Bound<'_, PyAny>) -> PyResult<Vec<T>> {
            let a: PyReadonlyArrayDyn<'_, T> = v.extract()?;
            Ok(match a.as_slice() {
                Ok(s) => s.to_vec(),
                Err(_) => a.as_array().iter().copied().collect(),
            })
        }
        let data = match t.dtype {
            DType::U8 if given.is_equiv_to(&dtype::<u8>(py)) => TensorData::U8(collect(value)?),
            DType::I8 if given.is_equiv_to(&dtype::<i8>(py)) => TensorData::I8(collect(value)?),
            DType::I32 if given.is_equiv_to(&dtype::<i32>(py)) => TensorData::I32(collect(value)?),
            DType::F32 if given.is_equiv_to(&dtype::<f32>(py)) => TensorData::F32(collect(value)?),
            // A float64 array for a float edge: the values as float32, as NumPy's astype would.
            DType::F32 if given.is_equiv_to(&dtype::<f64>(py)) => TensorData::F32(
                collect::<f64>(value)?
                    .into_iter()
                    .map(|x| x as f32)
                    .collect(),
            ),
            _ => return Err(wrong_dtype()),
        };
        Ok(data)
    }
}

fn output_array<'py>(
    py: Python<'py>,
    value: TensorData,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    fn shaped<'py, T: Element>(
        py: Python<'py>,
        v: Vec<T>,
        shape: &[usize],
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyArray1::from_vec(py, v)
            .reshape(shape.to_vec())?
            .into_any())
    }
    match value {
        TensorData::U8(v) => shaped(py, v, shape),
        TensorData::I8(v) => shaped(py, v, shape),
        TensorData::I32(v) => shaped(py, v, shape),
        TensorData::F32(v) => shaped(py, v, shape),
    }
}

#[pymethods]
impl Model {
    /// Loads `path` (`.tflite` by extension, else `.intq`) and plans it with `threads` (0: all
    /// cores) on `isa` (`None`: `INTQ_ISA`, else the best tier of this CPU).
    #[new]
    #[pyo3(signature = (path, *, threads = 0, isa = None))]
    fn new(py: Python<'_>, path: PathBuf, threads: usize, isa: Option<&str>) -> PyResult<Model> {
        let options = exec_options(threads, isa)?;
        let graph = if intq_tflite::is_tflite_path(&path) {
            intq_tflite::load(&path).map_err(tflite_err)?
        } else {
            format::load(&path).map_err(engine_err)?
        };
        Model::from_graph(py, graph, options, &path.display().to_string())
    }

    /// A model from bytes: `format` is `"auto"` (`.tflite` by its file identifier), `"intq"` or
    /// `"tflite"`.
    #[staticmethod]
    #[pyo3(signature = (data, *, format = "auto", threads = 0, isa = None))]
    fn from_bytes(
        py: Python<'_>,
        data: &[u8],
        format: &str,
        threads: usize,
        isa: Option<&str>,
    ) -> PyResult<Model> {
        let options = exec_options(threads, isa)?;
        let tflite = match format {
            "auto" => data.get(4..8) == Some(b"TFL3"),
            "intq" => false,
            "tflite" => true,
            other => {
                return Err(PyValueError::new_err(format!(
                    "format {other:?}: expected 'auto', 'intq' or 'tflite'"
                )))
            }
        };
        let graph = if tflite {
            intq_tflite::import(data).map_err(tflite_err)?
        } else {
            format::from_bytes(data).map_err(engine_err)?
        };
        Model::from_graph(py, graph, options, "model bytes")
    }

    /// The graph inputs, in the order `run` takes them.
    #[getter]
    fn inputs(&self, py: Python<'_>) -> Vec<Py<TensorInfo>> {
        self.inputs.iter().map(|i| i.clone_ref(py)).collect()
    }

    /// The graph outputs, in the order `run` returns them.
    #[getter]
    fn outputs(&self, py: Python<'_>) -> Vec<Py<TensorInfo>> {
        self.outputs.iter().map(|i| i.clone_ref(py)).collect()
    }

    /// The kernels' ISA tier (`reference`, `portable`, `avx2`, ...).
    #[getter]
    fn isa(&self) -> &'static str {
        self.model.kernel_tier().name()
    }

    /// The threads the fast kernels use.
    #[getter]
    fn threads(&self) -> usize {
        self.model.threads()
    }

    /// Runs the model. `inputs` is one array (a model with one input), a sequence of arrays in
    /// input order, or a dict from input name to array; each array has the input's shape, with
    /// any number of images as its leading dimension, and dtype (codes for quantized inputs; float32 or float64 for float inputs). Returns one
    /// array per output, in output order.
    fn run<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let graph = self.model.graph();
        let n = graph.inputs().len();
        let items: Vec<Bound<'py, PyAny>> = if let Ok(d) = inputs.cast::<PyDict>() {
            let names: Vec<&str> = graph
                .inputs()
                .iter()
                .map(|&id| graph.tensor(id).name.as_str())
                .collect();
            let listed = names
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ");
            for key in d.keys() {
                let key: String = key
                    .extract()
                    .map_err(|_| PyTypeError::new_err("run: dict keys are input names (str)"))?;
                if !names.contains(&key.as_str()) {
                    return Err(PyValueError::new_err(format!(
                        "run: the model has no input named '{key}' (inputs: {listed})"
                    )));
                }
            }
            names
                .iter()
                .map(|name| {
                    d.get_item(name)?.ok_or_else(|| {
                        PyValueError::new_err(format!("run: no array for input '{name}'"))
                    })
                })
                .collect::<PyResult<_>>()?
        } else if inputs.cast::<PyList>().is_ok() || inputs.cast::<PyTuple>().is_ok() {
            inputs.try_iter()?.collect::<PyResult<_>>()?
        } else {
            vec![inputs.clone()]
        };
        if items.len() != n {
            return Err(PyValueError::new_err(format!(
                "run: the model has {n} input(s), {} given",
                items.len()
            )));
        }
        let values = items
            .iter()
            .enumerate()
            .map(|(i, v)| self.input_value(i, v))
            .collect::<PyResult<Vec<_>>>()?;
        let batch = self.model.batch_of(&values).map_err(engine_err)?;
        let shapes = graph
            .outputs()
            .iter()
            .map(|&id| self.model.shape_at(id, batch))
            .collect::<Result<Vec<_>, _>>()
            .map_err(engine_err)?;
        let (model, contexts) = (Arc::clone(&self.model), Arc::clone(&self.contexts));
        let results = py
            .detach(move || {
                // A poisoned lock only means another run panicked; the contexts are whole.
                let taken = contexts.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let mut ctx = taken.unwrap_or_else(|| model.context());
                let r = model.run_in(&mut ctx, &values);
                contexts.lock().unwrap_or_else(|e| e.into_inner()).push(ctx);
                r
            })
            .map_err(engine_err)?;
        results
            .into_iter()
            .zip(&shapes)
            .map(|(v, shape)| output_array(py, v, shape))
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "intq.Model({} input(s), {} output(s), isa='{}', threads={})",
            self.inputs.len(),
            self.outputs.len(),
            self.isa(),
            self.threads()
        )
    }
}

fn code_range(dtype: &str) -> PyResult<(i32, i32)> {
    match dtype {
        "uint8" => Ok((0, 255)),
        "int8" => Ok((-128, 127)),
        other => Err(PyValueError::new_err(format!(
            "dtype {other:?}: codes are 'uint8' or 'int8'"
        ))),
    }
}

fn params(scale: f32, zero_point: i32) -> PyResult<QuantParams> {
    QuantParams::new(scale, zero_point)
        .map_err(|e| PyValueError::new_err(format!("scale {scale}: {e}")))
}

/// Reals to codes as the engine's Quantize op: `clamp(round(x / scale) + zero_point)` over the
/// code type's range, the division in float32 and rounding half away from zero.
#[pyfunction]
#[pyo3(signature = (x, scale, zero_point, dtype = "uint8"))]
fn quantize<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    scale: f32,
    zero_point: i32,
    dtype: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let (lo, hi) = code_range(dtype)?;
    let p = params(scale, zero_point)?;
    let np = py.import("numpy")?;
    let x = np.call_method1("asarray", (x, "float32"))?;
    let a: PyReadonlyArrayDyn<'py, f32> = x.extract()?;
    let shape = a.shape().to_vec();
    let codes = a
        .as_array()
        .iter()
        .map(|&v| p.quantize(v, lo, hi))
        .collect::<Vec<_>>();
    match dtype {
        "uint8" => Ok(
            PyArray1::from_vec(py, codes.iter().map(|&c| c as u8).collect())
                .reshape(shape)?
                .into_any(),
        ),
        _ => Ok(
            PyArray1::from_vec(py, codes.iter().map(|&c| c as i8).collect())
                .reshape(shape)?
                .into_any(),
        ),
    }
}

/// Codes (a uint8 or int8 array) to float32 reals as the engine's Dequantize op:
/// `scale * (q - zero_point)`.
#[pyfunction]
fn dequantize<'py>(
    py: Python<'py>,
    q: &Bound<'py, PyAny>,
    scale: f32,
    zero_point: i32,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let p = params(scale, zero_point)?;
    let reals: Vec<f32>;
    let shape: Vec<usize>;
    if let Ok(a) = q.extract::<PyReadonlyArrayDyn<'py, u8>>() {
        shape = a.shape().to_vec();
        reals = a
            .as_array()
            .iter()
            .map(|&c| p.dequantize(c as i32))
            .collect();
    } else if let Ok(a) = q.extract::<PyReadonlyArrayDyn<'py, i8>>() {
        shape = a.shape().to_vec();
        reals = a
            .as_array()
            .iter()
            .map(|&c| p.dequantize(c as i32))
            .collect();
    } else {
        return Err(PyTypeError::new_err(
            "dequantize takes a numpy.ndarray of uint8 or int8 codes",
        ));
    }
    PyArray1::from_vec(py, reals).reshape(shape)
}

/// The ISA tiers this CPU can run, best first (`reference` always last).
#[pyfunction]
fn available_isas() -> Vec<&'static str> {
    intq_engine::Isa::available()
        .into_iter()
        .map(|i| i.name())
        .chain(["reference"])
        .collect()
}

#[pymodule]
fn intq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("ModelError", m.py().get_type::<ModelError>())?;
    m.add_class::<Model>()?;
    m.add_class::<TensorInfo>()?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(available_isas, m)?)?;
    Ok(())
}
