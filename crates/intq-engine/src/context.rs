//! Running a model at any batch, and the per-caller execution context.
//!
//! A graph is built for one batch `B` (the leading dimension of its inputs). When every op treats
//! each image on its own and the batch leads every run-time tensor, the same graph with that
//! dimension set to `N` computes the same codes per image; [`rebatch`] checks this op by op and
//! derives that graph (a Reshape's output shape, such as `[1, 256]` before a fully connected
//! layer, is rewritten with it). A [`Model`](crate::Model) plans each new batch once and keeps it.
//!
//! A [`Context`] holds what one caller's runs write: the activation buffers, grown to the
//! largest batch it has run, and its kernel workers: the helper threads its layers split over
//! and every thread's kernel scratch (packed panels, padded images, row tables), grown before
//! each job to what it takes. The model stays immutable and shareable; each thread keeps its
//! own context, and a prepared context runs without a heap request.

use crate::plan::Plan;
use crate::validate::describe;
use crate::{DType, EngineError, Graph, Op, TensorData, TensorId};
use std::sync::{Arc, Mutex};

/// A graph rebuilt for another batch, with its plan.
#[derive(Debug)]
pub(crate) struct Batched {
    pub graph: Graph,
    pub plan: Plan,
}

/// The plans a model made for batches other than its graph's, made once each and kept, most
/// recently used last, up to [`BATCH_PLANS`] of them (each holds its own packed weights).
#[derive(Default)]
pub(crate) struct BatchCache(Mutex<Vec<(usize, Arc<Batched>)>>);

/// Batches whose plans a model keeps; a run at another batch plans it again.
pub(crate) const BATCH_PLANS: usize = 8;

impl BatchCache {
    /// The plan for batch `n`, made by `make` unless kept. Planning runs outside the lock, so a
    /// slow plan does not hold up runs at other batches.
    pub fn get_or_make(
        &self,
        n: usize,
        make: impl FnOnce() -> Result<Batched, EngineError>,
    ) -> Result<Arc<Batched>, EngineError> {
        let lock = || self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Moves a kept plan to the most recently used end and returns it.
        fn hit(cache: &mut Vec<(usize, Arc<Batched>)>, n: usize) -> Option<Arc<Batched>> {
            let at = cache.iter().position(|(k, _)| *k == n)?;
            let entry = cache.remove(at);
            let plan = Arc::clone(&entry.1);
            cache.push(entry);
            Some(plan)
        }
        if let Some(b) = hit(&mut lock(), n) {
            return Ok(b);
        }
        let made = Arc::new(make()?);
        let mut cache = lock();
        if let Some(b) = hit(&mut cache, n) {
            return Ok(b);
        }
        if cache.len() == BATCH_PLANS {
            cache.remove(0);
        }
        cache.push((n, Arc::clone(&made)));
        Ok(made)
    }

    /// The batches kept, least recently used first.
    pub fn batches(&self) -> Vec<usize> {
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cache.iter().map(|(n, _)| *n).collect()
    }
}

impl Clone for BatchCache {
    /// A clone plans its batches again (the plans are derived, not part of the model).
    fn clone(&self) -> Self {
        BatchCache::default()
    }
}

impl std::fmt::Debug for BatchCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchCache {:?}", self.batches())
    }
}

/// The batch a graph was built for: the leading dimension of its inputs (1 for a graph with no
/// inputs or a rank-0 input, which cannot be rebatched).
pub(crate) fn graph_batch(graph: &Graph) -> usize {
    graph
        .inputs()
        .first()
        .and_then(|&id| graph.tensor(id).shape.first().copied())
        .unwrap_or(1)
}

/// The batch `inputs` hold: the number of images of the graph's per-image size in each input
/// the batch leads, which all such inputs must agree on (the graph's own batch when all sizes
/// are the graph's). An input the batch does not lead counts only if its size is its own.
pub(crate) fn batch_of(graph: &Graph, inputs: &[TensorData]) -> Result<usize, EngineError> {
    let b = graph_batch(graph);
    let mut found: Option<(usize, usize)> = None;
    for (i, (&id, value)) in graph.inputs().iter().zip(inputs).enumerate() {
        let t = graph.tensor(id);
        let batch_led = b > 0 && t.shape.first() == Some(&b);
        if !batch_led {
            if value.len() != t.num_elements() {
                return Err(EngineError::Run(format!(
                    "input {i} ({}) has shape {:?}, whose leading dimension is not the graph's \
                     batch {b}, so it takes exactly {} elements, but {} were given",
                    describe(graph, id),
                    t.shape,
                    t.num_elements(),
                    value.len()
                )));
            }
            continue;
        }
        let per_image = t.num_elements() / b;
        if per_image == 0 || value.is_empty() || value.len() % per_image != 0 {
            // Not a whole number of images: the input check says what was expected.
            return Ok(b);
        }
        let n = value.len() / per_image;
        match found {
            None => found = Some((i, n)),
            Some((j, m)) if m != n => {
                return Err(EngineError::Run(format!(
                    "input {j} ({}) holds {m} image(s) but input {i} ({}) holds {n}",
                    describe(graph, graph.inputs()[j]),
                    describe(graph, id)
                )))
            }
            Some(_) => {}
        }
    }
    Ok(found.map_or(b, |(_, n)| n))
}

/// Why `graph` cannot run at batch `n`, as a run error.
fn refuse(graph: &Graph, n: usize, why: String) -> EngineError {
    EngineError::Run(format!(
        "the graph was built for batch {} and cannot run {n} image(s) at once: {why}",
        graph_batch(graph)
    ))
}

/// `graph` with the leading dimension of every run-time tensor (graph inputs and op outputs) set
/// to `n`. Refused, naming the op or tensor, when some op mixes images or the batch does not
/// lead a run-time tensor.
pub(crate) fn rebatch(graph: &Graph, n: usize) -> Result<Graph, EngineError> {
    let b = graph_batch(graph);
    if n == 0 {
        return Err(refuse(graph, n, "a run needs at least one image".into()));
    }
    let op_name = |i: usize| format!("op {i} ({})", graph.ops()[i].kind());
    for (i, op) in graph.ops().iter().enumerate() {
        let why = match op {
            Op::Concat { axis: 0, .. } => Some("it concatenates along the batch axis"),
            Op::Pad { paddings, .. } if paddings.first().is_some_and(|p| *p != [0, 0]) => {
                Some("it pads the batch axis")
            }
            Op::Mean { axes, .. } if axes.contains(&0) => Some("it averages over the batch axis"),
            Op::Gather { axis: 0, .. } => Some("it gathers along the batch axis"),
            Op::Sum { axes, .. } | Op::ReduceMax { axes, .. } if axes.contains(&0) => {
                Some("it reduces over the batch axis")
            }
            Op::ArgMax { axis: 0, .. } => Some("it compares along the batch axis"),
            Op::L2Normalization { input, .. } if graph.tensor(*input).shape.len() < 2 => {
                Some("it normalizes along the batch axis")
            }
            Op::Gather { .. }
            | Op::Sum { .. }
            | Op::ReduceMax { .. }
            | Op::ArgMax { .. }
            | Op::L2Normalization { .. } => None,
            Op::Transpose { perm, .. } if perm.first() != Some(&0) => {
                Some("it moves the batch axis")
            }
            Op::Slice { begin, strides, .. }
                if begin.first().is_some_and(|&x| x != 0)
                    || strides.first().is_some_and(|&s| s != 1) =>
            {
                Some("it slices the batch axis")
            }
            Op::Conv2d { .. }
            | Op::DepthwiseConv2d { .. }
            | Op::FullyConnected { .. }
            | Op::FullyConnectedF64 { .. }
            | Op::Add { .. }
            | Op::Sub { .. }
            | Op::Mul { .. }
            | Op::Maximum { .. }
            | Op::Minimum { .. }
            | Op::Prelu { .. }
            | Op::AveragePool2d { .. }
            | Op::MaxPool2d { .. }
            | Op::Concat { .. }
            | Op::Pad { .. }
            | Op::Mean { .. }
            | Op::Transpose { .. }
            | Op::Slice { .. }
            | Op::Logistic { .. }
            | Op::LogisticLut { .. }
            | Op::Tanh { .. }
            | Op::Softmax { .. }
            | Op::Reshape { .. }
            | Op::Quantize { .. }
            | Op::Dequantize { .. }
            | Op::Relu { .. }
            | Op::LeakyRelu { .. }
            | Op::HardSwish { .. }
            | Op::ResizeNearest { .. }
            | Op::ResizeBilinear { .. }
            | Op::TransposeConv { .. }
            | Op::DepthToSpace { .. } => None,
            // These move pixels between the batch axis and space; the batch factors below keep
            // each image's entries apart (a BatchToSpace that would merge images is refused).
            Op::SpaceToBatch { .. } | Op::BatchToSpace { .. } => None,
            Op::DetectionPostProcess { .. } => Some("it takes one image, as TFLite's does"),
            #[allow(unreachable_patterns)]
            _ => Some("it is not known to treat each image on its own"),
        };
        if let Some(why) = why {
            return Err(refuse(graph, n, format!("{} {why}", op_name(i))));
        }
    }
    // Entries per image on each run-time tensor's leading axis: SpaceToBatch turns one image
    // into `cells` entries (entry `cell * B + image`) and BatchToSpace gathers them back, so
    // between the two the axis holds `cells * B` entries, which become `cells * n`. Every other
    // op keeps the factor of its first run-time operand.
    let mut per_image = vec![1usize; graph.tensors().len()];
    let order =
        crate::validate::topological_order(graph).map_err(|e| refuse(graph, n, e.to_string()))?;
    for &i in &order {
        let op = &graph.ops()[i];
        let k = op
            .inputs()
            .into_iter()
            .find(|&id| !graph.tensor(id).is_constant())
            .map_or(1, |id| per_image[id.index()]);
        per_image[op.output().index()] = match op {
            Op::SpaceToBatch { block, .. } => k * block[0] * block[1],
            Op::BatchToSpace { block, .. } => {
                let cells = block[0] * block[1];
                if k % cells != 0 {
                    return Err(refuse(
                        graph,
                        n,
                        format!(
                            "{} gathers the entries of several images into one",
                            op_name(i)
                        ),
                    ));
                }
                k / cells
            }
            _ => k,
        };
    }
    let mut tensors = graph.tensors().to_vec();
    let run_time = graph.inputs().iter().copied().map(|id| (id, None)).chain(
        graph
            .ops()
            .iter()
            .enumerate()
            .map(|(i, op)| (op.output(), Some(i))),
    );
    for (id, writer) in run_time {
        let t = &mut tensors[id.index()];
        let k = per_image[id.index()];
        if t.shape.first() != Some(&(b * k)) {
            let what = match writer {
                None => "graph input".to_string(),
                Some(i) => format!("output of {}", op_name(i)),
            };
            return Err(refuse(
                graph,
                n,
                format!(
                    "{what} {} has shape {:?}, whose leading dimension is not {}the batch {b}",
                    describe(graph, id),
                    graph.tensor(id).shape,
                    if k == 1 {
                        String::new()
                    } else {
                        format!("{k} x ")
                    }
                ),
            ));
        }
        t.shape[0] = n * k;
    }
    // Validation checks every op's shapes again at the new batch: a constant operand laid out
    // for the old batch is refused here.
    Graph::new(
        tensors,
        graph.ops().to_vec(),
        graph.inputs().to_vec(),
        graph.outputs().to_vec(),
    )
    .map_err(|e| refuse(graph, n, e.to_string()))
}

/// One caller's activation buffers and kernel workers. Made by
/// [`Model::context`](crate::Model::context); passed to [`Model::run_in`](crate::Model::run_in)
/// and [`Model::run_into`](crate::Model::run_into), which grow it to the batch they run and
/// otherwise reuse it as it is. A context is not tied to one model, but keeps the buffers of the
/// last layout it ran.
///
/// Its fast-kernel layers split over helper threads of its own (`threads - 1` of them, which
/// spin briefly between layers and end with the context), so concurrent contexts never wait
/// for each other's helpers; the thread count is the model's unless
/// [`set_threads`](Context::set_threads) says otherwise. Results never depend on it.
#[derive(Debug, Default)]
pub struct Context {
    pub(crate) buffers: Vec<TensorData>,
    /// Threads asked for; 0: the model's.
    threads: usize,
    workers: Option<intq_kernels::gemm::Workers>,
}

impl Context {
    /// An empty context: the first run allocates its buffers and starts its helpers.
    pub fn new() -> Context {
        Context::default()
    }

    /// An empty context running on `threads` threads (0: the model's count).
    pub fn with_threads(threads: usize) -> Context {
        Context {
            threads,
            ..Context::default()
        }
    }

    /// Runs on `threads` threads, the caller included (0: the model's count). Helpers of
    /// another count end here; the next run starts the new ones.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads;
        if threads != 0
            && self
                .workers
                .as_ref()
                .is_some_and(|w| w.threads() != threads)
        {
            self.workers = None;
        }
    }

    /// The thread count asked for (0: the model's).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The threads a run of a model planned for `model_threads` uses.
    pub(crate) fn threads_for(&self, model_threads: usize) -> usize {
        if self.threads == 0 {
            model_threads.max(1)
        } else {
            self.threads
        }
    }

    /// Runs `f` on the buffers with the context's workers of `threads` threads installed
    /// (started unless running).
    pub(crate) fn install<R>(
        &mut self,
        threads: usize,
        f: impl FnOnce(&mut Vec<TensorData>) -> R,
    ) -> R {
        if self
            .workers
            .as_ref()
            .is_some_and(|w| w.threads() != threads)
        {
            self.workers = None;
        }
        let workers = self
            .workers
            .get_or_insert_with(|| intq_kernels::gemm::Workers::new(threads));
        let buffers = &mut self.buffers;
        workers.install(|| f(buffers))
    }

    /// Bytes of fast-kernel scratch the context holds (every thread's).
    pub fn scratch_bytes(&self) -> usize {
        self.workers.as_ref().map_or(0, |w| w.scratch_bytes())
    }

    /// Bytes of activation buffers the context holds.
    pub fn bytes(&self) -> usize {
        self.buffers
            .iter()
            .map(|b| b.len() * b.dtype().size_bytes())
            .sum()
    }

    /// Makes the buffers fit `slots` (type and at least that many elements each), allocating
    /// only where one is missing, of another type, or too small.
    pub(crate) fn fit(&mut self, slots: &[(DType, usize)]) {
        for (k, &(dtype, need)) in slots.iter().enumerate() {
            match self.buffers.get(k) {
                Some(b) if b.dtype() == dtype && b.len() >= need => {}
                Some(_) => self.buffers[k] = TensorData::zeros(dtype, need),
                None => self.buffers.push(TensorData::zeros(dtype, need)),
            }
        }
    }
}

/// Copies the first `dst.len() / size` elements of `value` into `dst` as native-endian bytes;
/// false when the sizes differ.
pub(crate) fn write_bytes(value: &TensorData, n: usize, dst: &mut [u8]) -> bool {
    let size = value.dtype().size_bytes();
    if dst.len() != n * size {
        return false;
    }
    match value {
        TensorData::U8(v) => dst.copy_from_slice(&v[..n]),
        TensorData::I8(v) => {
            for (d, &x) in dst.iter_mut().zip(&v[..n]) {
                *d = x as u8;
            }
        }
        TensorData::I32(v) => {
            for (d, x) in dst.chunks_exact_mut(4).zip(&v[..n]) {
                d.copy_from_slice(&x.to_ne_bytes());
            }
        }
        TensorData::F32(v) => {
            for (d, x) in dst.chunks_exact_mut(4).zip(&v[..n]) {
                d.copy_from_slice(&x.to_ne_bytes());
            }
        }
    }
    true
}

/// The value of run-time tensor `id` in `buffers` (its live part), or its constant data.
pub(crate) fn value_in<'a>(
    graph: &'a Graph,
    slot_of: &[Option<usize>],
    buffers: &'a [TensorData],
    id: TensorId,
) -> &'a TensorData {
    match &graph.tensor(id).data {
        Some(d) => d,
        None => &buffers[slot_of[id.index()].expect("a wanted tensor has a buffer")],
    }
}
