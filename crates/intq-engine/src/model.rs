//! A runnable model: a validated graph with its execution plan, run by the integer executor or,
//! for comparison, by the float executor.

use crate::exec::{self, check_inputs, check_wanted};
use crate::float_exec::{self, FloatConstants};
use crate::plan::{plan_memory, Plan};
use crate::{format, EngineError, Graph, TensorData, TensorId};
use std::path::Path;
use std::sync::OnceLock;

/// A validated graph plus everything derived from it once: execution order, buffer assignment,
/// and each op's fixed-point multipliers, clamps and tables.
#[derive(Debug, Clone)]
pub struct Model {
    graph: Graph,
    plan: Plan,
    /// Dequantized weights for [`Model::run_float`], built on first use so integer-only users
    /// never pay for them.
    float: OnceLock<FloatConstants>,
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

    /// Runs the integer model: one value per graph input, in order, of the input's type and
    /// element count. Returns the graph outputs in order.
    pub fn run(&self, inputs: &[TensorData]) -> Result<Vec<TensorData>, EngineError> {
        self.run_with(inputs, self.graph.outputs())
    }

    /// Runs the integer model and returns the values of `wanted`: any tensors (intermediates,
    /// graph inputs, constants). Buffers of the wanted tensors are kept out of reuse for this run.
    pub fn run_with(
        &self,
        inputs: &[TensorData],
        wanted: &[TensorId],
    ) -> Result<Vec<TensorData>, EngineError> {
        check_inputs(&self.graph, inputs, false)?;
        check_wanted(&self.graph, wanted)?;
        let g = &self.graph;
        let default_keeps_all = wanted
            .iter()
            .all(|id| g.tensor(*id).is_constant() || g.outputs().contains(id));
        if default_keeps_all {
            Ok(exec::run(g, &self.plan, &self.plan.memory, inputs, wanted))
        } else {
            let memory = plan_memory(g, &self.plan.order, wanted);
            Ok(exec::run(g, &self.plan, &memory, inputs, wanted))
        }
    }

    /// Like [`Model::run`], and adds each op's wall time to `times[op index]` (one entry per
    /// graph op, in `graph().ops()` order): where a model spends its time.
    pub fn run_profiled(
        &self,
        inputs: &[TensorData],
        times: &mut [std::time::Duration],
    ) -> Result<Vec<TensorData>, EngineError> {
        check_inputs(&self.graph, inputs, false)?;
        if times.len() != self.graph.ops().len() {
            return Err(EngineError::Run(format!(
                "run_profiled: {} time slots for {} ops",
                times.len(),
                self.graph.ops().len()
            )));
        }
        Ok(exec::run_timed(
            &self.graph,
            &self.plan,
            &self.plan.memory,
            inputs,
            self.graph.outputs(),
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
    /// activations are never requantized. Returns the real values of `wanted`.
    pub fn run_float_with(
        &self,
        inputs: &[TensorData],
        wanted: &[TensorId],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        check_inputs(&self.graph, inputs, true)?;
        check_wanted(&self.graph, wanted)?;
        let consts = self.float.get_or_init(|| FloatConstants::new(&self.graph));
        Ok(float_exec::run(
            &self.graph,
            &self.plan,
            consts,
            inputs,
            wanted,
        ))
    }
}
