//! The integer-only model: a graph IR of quantized tensors and ops, validated on construction;
//! a planner and executor that run conv, depthwise, fully connected, equal-shape Add and pools on
//! the fast kernels of the best ISA tier the CPU has (or the one `INTQ_ISA` names) and every
//! other op on the reference kernels, the normative arithmetic every tier equals bit for bit
//! (`KernelTier::Reference` runs them throughout; docs/spec.md §5.1); a float executor of the
//! same graph for comparison; and the `.intq` file format.

mod context;
mod error;
pub mod examples;
mod exec;
mod float_exec;
pub mod format;
mod graph;
mod limits;
mod model;
mod plan;
mod tflite_ops;
mod validate;

pub use error::{EngineError, GraphError};
pub use graph::{
    Activation, DType, DetectionPart, Graph, GraphBuilder, Metadata, Op, OpKind, Quant, Tensor,
    TensorData, TensorId,
};
pub use intq_kernels::reference::DetectionOptions;
pub use intq_kernels::{Isa, KernelTier, Padding};
pub use intq_quant::{ChannelParams, QuantParams};
pub use model::{Context, ExecOptions, MemoryStats, Model};
