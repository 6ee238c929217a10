//! A runnable model: a validated graph with its execution plan, run by the integer executor or,
//! for comparison, by the float executor, on any batch of images (a plan per batch, made once),
//! in a temporary or the caller's own [`Context`].

pub use crate::context::Context;
use crate::context::{batch_of, graph_batch, rebatch, value_in, write_bytes, BatchCache, Batched};
use crate::exec::{self, check_inputs, check_wanted};
use crate::float_exec::{self, FloatConstants};
use crate::plan::{plan_memory, Plan};
use crate::{format, EngineError, Graph, TensorData, TensorId};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// A validated graph plus everything derived from it once: execution order, buffer assignment,
/// and each op's fixed-point multipliers, clamps and tables.
#[derive(Debug, Clone)]
pub struct Model {
    graph: Graph,
    plan: Plan,
    /// Dequantized weights for [`Model::run_float`], built on first use so integer-only users
    /// never pay for them.
    float: OnceLock<FloatConstants>,
    /// Plans for batches other than the graph's, made on first use.
    batches: BatchCache,
}

/// The graph and plan a run at some batch uses: the model's own, or one made for that batch.
enum AtBatch<'a> {
    Own(&'a Graph, &'a Plan),
    Other(Arc<Batched>),
}

impl AtBatch<'_> {
    fn graph(&self) -> &Graph {
        match self {
            AtBatch::Own(g, _) => g,
            AtBatch::Other(b) => &b.graph,
        }
    }
    fn plan(&self) -> &Plan {
        match self {
            AtBatch::Own(_, p) => p,
            AtBatch::Other(b) => &b.plan,
        }
    }
}

/// How much activation memory a run uses, with and without buffer reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    /// Buffers the planner allocates for a plain [`Model::run`].
    pub buffers: usize,
    /// Their total size in bytes.
    pub bytes: usize,
    /// Bytes if every run-time tensor (graph inputs and op outputs) had its own buffer.
    pub bytes_without_reuse: usize,
}

/// How a model runs: which kernels and how many threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecOptions {
    /// `None`: what `INTQ_ISA` names, else the best tier of this CPU. `Some(Reference)` runs the
    /// scalar reference kernels everywhere (every tier gives the same bytes).
    pub kernels: Option<intq_kernels::KernelTier>,
    /// Threads for the fast kernels; 0 means all cores. Results do not depend on it.
    pub threads: usize,
}

impl Model {
    /// Plans `graph`: fails (naming the op) when an op's fixed-point parameters cannot be formed.
    pub fn new(graph: Graph) -> Result<Model, EngineError> {
        let plan = Plan::new(&graph)?;
        Ok(Model {
            graph,
            plan,
            float: OnceLock::new(),
            batches: BatchCache::default(),
        })
    }

    /// Plans `graph` with explicit kernels and thread count.
    pub fn with_options(graph: Graph, options: ExecOptions) -> Result<Model, EngineError> {
        let plan = match options.kernels {
            Some(tier) => Plan::with_kernels(&graph, tier, options.threads)?,
            None => {
                let tier = intq_kernels::KernelTier::from_env()
                    .map_err(|e| crate::GraphError::Graph(format!("INTQ_ISA: {e}")))?;
                Plan::with_kernels(&graph, tier, options.threads)?
            }
        };
        Ok(Model {
            graph,
            plan,
            float: OnceLock::new(),
            batches: BatchCache::default(),
        })
    }

    /// The kernels conv, depthwise and fully connected ops run on.
    pub fn kernel_tier(&self) -> intq_kernels::KernelTier {
        self.plan.tier
    }

    /// The threads the fast kernels use.
    pub fn threads(&self) -> usize {
        self.plan.threads
    }

    /// Loads an `.intq` file and plans it; errors name the file.
    pub fn load(path: &Path) -> Result<Model, EngineError> {
        let graph = format::load(path)?;
        Model::new(graph).map_err(|e| EngineError::File {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Writes the graph as an `.intq` file.
    pub fn save(&self, path: &Path) -> Result<(), EngineError> {
        format::save(&self.graph, path)
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn into_graph(self) -> Graph {
        self.graph
    }

    /// Op indices in the order they run.
    pub fn execution_order(&self) -> &[usize] {
        &self.plan.order
    }

    pub fn memory_stats(&self) -> MemoryStats {
        let g = &self.graph;
        let bytes_without_reuse = (0..g.tensors().len())
            .map(|i| TensorId(i as u32))
            .filter(|&id| g.inputs().contains(&id) || g.ops().iter().any(|op| op.output() == id))
            .map(|id| {
                let t = g.tensor(id);
                t.num_elements() * t.dtype.size_bytes()
            })
            .sum();
        MemoryStats {
            buffers: self.plan.memory.slots.len(),
            bytes: self.plan.memory.bytes(),
            bytes_without_reuse,
        }
    }

    /// The batch the graph was built for: the leading dimension of its inputs.
    pub fn batch(&self) -> usize {
        graph_batch(&self.graph)
    }

    /// The number of images `inputs` hold (each input's element count over the graph input's
    /// per-image count); the graph's own batch when the sizes match it or explain no batch.
    pub fn batch_of(&self, inputs: &[TensorData]) -> Result<usize, EngineError> {
        batch_of(&self.graph, inputs)
    }

    /// The shape tensor `id` has in a run of `n` images: a run-time tensor's leading dimension
    /// is the batch; a constant keeps its shape. Fails when the graph cannot run that batch.
    pub fn shape_at(&self, id: TensorId, n: usize) -> Result<Vec<usize>, EngineError> {
        check_wanted(&self.graph, &[id])?;
        Ok(self.at_batch(n)?.graph().tensor(id).shape.clone())
    }

    /// The batches other than the graph's whose plans the model keeps (at most eight, the
    /// least recently used first): a run at one of them plans nothing.
    pub fn planned_batches(&self) -> Vec<usize> {
        self.batches.batches()
    }

    /// The graph and plan for `n` images, made the first time `n` is asked for.
    fn at_batch(&self, n: usize) -> Result<AtBatch<'_>, EngineError> {
        if n == self.batch() {
            return Ok(AtBatch::Own(&self.graph, &self.plan));
        }
        let plan = &self.plan;
        let batched = self.batches.get_or_make(n, || {
            let graph = rebatch(&self.graph, n)?;
            let plan = Plan::with_kernels(&graph, plan.tier, plan.threads)?;
            Ok(Batched { graph, plan })
        })?;
        Ok(AtBatch::Other(batched))
    }

    /// The graph and plan for the batch `inputs` hold, with the inputs checked against it.
    fn for_inputs(
        &self,
        inputs: &[TensorData],
        accept_f32_for_codes: bool,
    ) -> Result<AtBatch<'_>, EngineError> {
        let at = self.at_batch(self.batch_of(inputs)?)?;
        check_inputs(at.graph(), inputs, accept_f32_for_codes)?;
        Ok(at)
    }

    /// A fresh execution context for [`Model::run_in`] and [`Model::run_into`]: one per caller
    /// (thread), reused run after run, running on the model's thread count
    /// ([`Context::set_threads`] changes it).
    pub fn context(&self) -> Context {
        Context::new()
    }

    /// Runs the integer model: one value per graph input, in order, of the input's type, holding
    /// any number N >= 1 of images (N times the input's per-image element count). Returns the
    /// graph outputs in order, each with N as its leading dimension.
    pub fn run(&self, inputs: &[TensorData]) -> Result<Vec<TensorData>, EngineError> {
        self.run_with(inputs, self.graph.outputs())
    }

    /// [`Model::run`] in the caller's context: its buffers are grown to the batch and reused, so
    /// only the returned values are allocated.
    pub fn run_in(
        &self,
        ctx: &mut Context,
        inputs: &[TensorData],
    ) -> Result<Vec<TensorData>, EngineError> {
        let at = self.at_batch(self.batch_of(inputs)?)?;
        self.run_at(&at, ctx, inputs)?;
        let (g, memory) = (at.graph(), &at.plan().memory);
        Ok(g.outputs()
            .iter()
            .map(|&id| {
                let n = g.tensor(id).num_elements();
                match value_in(g, &memory.slot_of, &ctx.buffers, id) {
                    TensorData::U8(v) => TensorData::U8(v[..n].to_vec()),
                    TensorData::I8(v) => TensorData::I8(v[..n].to_vec()),
                    TensorData::I32(v) => TensorData::I32(v[..n].to_vec()),
                    TensorData::F32(v) => TensorData::F32(v[..n].to_vec()),
                }
            })
            .collect())
    }

    /// [`Model::run_in`] writing each graph output into `outputs[k]`, its native-endian bytes,
    /// which must be exactly the output's size at this batch. Returns the batch. Once the
    /// context has run this batch and while the model keeps its plan (the graph's own batch or
    /// a recent one), nothing here allocates: the fast kernels' scratch is the context's too.
    pub fn run_into(
        &self,
        ctx: &mut Context,
        inputs: &[TensorData],
        outputs: &mut [&mut [u8]],
    ) -> Result<usize, EngineError> {
        let n = self.batch_of(inputs)?;
        let at = self.at_batch(n)?;
        {
            let g = at.graph();
            if outputs.len() != g.outputs().len() {
                return Err(EngineError::Run(format!(
                    "the graph has {} outputs but {} output buffers were given",
                    g.outputs().len(),
                    outputs.len()
                )));
            }
            for (k, (&id, out)) in g.outputs().iter().zip(outputs.iter()).enumerate() {
                let t = g.tensor(id);
                let want = t.num_elements() * t.dtype.size_bytes();
                if out.len() != want {
                    return Err(EngineError::Run(format!(
                        "output {k} ({}) at batch {n} has shape {:?}, {want} bytes, but its \
                         buffer has {}",
                        crate::validate::describe(g, id),
                        t.shape,
                        out.len()
                    )));
                }
            }
        }
        self.run_at(&at, ctx, inputs)?;
        let (g, memory) = (at.graph(), &at.plan().memory);
        for (&id, out) in g.outputs().iter().zip(outputs.iter_mut()) {
            let value = value_in(g, &memory.slot_of, &ctx.buffers, id);
            write_bytes(value, g.tensor(id).num_elements(), out);
        }
        Ok(n)
    }

    /// Checks `inputs` against `at`, fits `ctx` to its plan and runs; the outputs stay in `ctx`.
    fn run_at(
        &self,
        at: &AtBatch<'_>,
        ctx: &mut Context,
        inputs: &[TensorData],
    ) -> Result<(), EngineError> {
        check_inputs(at.graph(), inputs, false)?;
        ctx.fit(&at.plan().memory.slots);
        let threads = ctx.threads_for(at.plan().threads);
        ctx.install(threads, |buffers| {
            exec::run_in_buffers(at.graph(), at.plan(), threads, buffers, inputs)
        });
        Ok(())
    }

    /// Runs the integer model and returns the values of `wanted`: any tensors (intermediates,
    /// graph inputs, constants). Buffers of the wanted tensors are kept out of reuse for this run.
    /// Any batch, as [`Model::run`].
    pub fn run_with(
        &self,
        inputs: &[TensorData],
        wanted: &[TensorId],
    ) -> Result<Vec<TensorData>, EngineError> {
        check_wanted(&self.graph, wanted)?;
        let at = self.for_inputs(inputs, false)?;
        let (g, plan) = (at.graph(), at.plan());
        let default_keeps_all = wanted
            .iter()
            .all(|id| g.tensor(*id).is_constant() || g.outputs().contains(id));
        if default_keeps_all {
            Ok(exec::run(g, plan, &plan.memory, inputs, wanted))
        } else {
            let memory = plan_memory(g, &plan.order, wanted);
            Ok(exec::run(g, plan, &memory, inputs, wanted))
        }
    }

    /// Like [`Model::run`], and adds each op's wall time to `times[op index]` (one entry per
    /// graph op, in `graph().ops()` order): where a model spends its time.
    pub fn run_profiled(
        &self,
        inputs: &[TensorData],
        times: &mut [std::time::Duration],
    ) -> Result<Vec<TensorData>, EngineError> {
        if times.len() != self.graph.ops().len() {
            return Err(EngineError::Run(format!(
                "run_profiled: {} time slots for {} ops",
                times.len(),
                self.graph.ops().len()
            )));
        }
        let at = self.for_inputs(inputs, false)?;
        let (g, plan) = (at.graph(), at.plan());
        Ok(exec::run_timed(
            g,
            plan,
            &plan.memory,
            inputs,
            g.outputs(),
            Some(times),
        ))
    }

    /// Runs the graph in f32 reals (see [`Model::run_float_with`]) and returns the real values
    /// of the graph outputs.
    pub fn run_float(&self, inputs: &[TensorData]) -> Result<Vec<Vec<f32>>, EngineError> {
        self.run_float_with(inputs, self.graph.outputs())
    }

    /// Runs the graph in f32 reals: quantized inputs are dequantized first (f32 values are also
    /// accepted for them, as reals), f32 inputs are used as they are; weights are dequantized,
    /// activations are never requantized. Returns the real values of `wanted`. Any batch, as
    /// [`Model::run`].
    pub fn run_float_with(
        &self,
        inputs: &[TensorData],
        wanted: &[TensorId],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        check_wanted(&self.graph, wanted)?;
        let at = self.for_inputs(inputs, true)?;
        let consts = self.float.get_or_init(|| FloatConstants::new(&self.graph));
        Ok(float_exec::run(
            at.graph(),
            at.plan(),
            consts,
            inputs,
            wanted,
        ))
    }
}
