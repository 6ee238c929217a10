//! Import of float ONNX models into a graph intq can fine-tune with QAT and convert.
//!
//! [`load`] reads a `.onnx` file (inline or external initializers, opsets 11–21), folds the shape
//! arithmetic exporters write, and returns an [`ir::Graph`] of the ops intq takes (Conv,
//! ConvTranspose, BatchNormalization, Relu, Clip, HardSwish (also as x * HardSigmoid(x)),
//! HardSigmoid, Sigmoid, Add, Mul, Max/Min, Resize (nearest, linear), Concat, pools, Flatten,
//! Reshape, Gemm/MatMul, Pad, trailing Softmax).
//! Anything else is an [`OnnxError`] naming the node, its op type and the attribute at fault.
//! [`eval::run`] executes the graph in f32 at any batch.
//!
//! [`qdq::export`] writes an integer `.intq` model as a QDQ ONNX model (QuantizeLinear /
//! DequantizeLinear around float ops) that ONNX Runtime runs.
//!
//! This crate has no training dependencies; `intq-train` builds QAT networks from its graph.

pub mod eval;
pub mod import;
pub mod ir;
pub mod proto;
pub mod qdq;
pub mod read;

use std::fmt;
use std::path::Path;

pub use ir::{Arith, ConvTranspose, Graph, Node, Op, Value, ValueId};

/// Everything that can go wrong importing a model.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file could not be read or decoded.
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    /// Bytes that are not an ONNX ModelProto.
    #[error("{0}")]
    Decode(String),
    /// A problem with the model as a whole (opset, inputs, outputs).
    #[error("{0}")]
    Model(String),
    /// A tensor (initializer or constant) that cannot be read.
    #[error("tensor {name:?}: {msg}")]
    Tensor { name: String, msg: String },
    /// A node intq cannot take.
    #[error("{}", NodeMsg { node, op, attr: attr.as_deref(), msg })]
    Node {
        node: String,
        op: String,
        attr: Option<String>,
        msg: String,
    },
    /// A run with inputs that do not fit the graph.
    #[error("{0}")]
    Run(String),
}

struct NodeMsg<'a> {
    node: &'a str,
    op: &'a str,
    attr: Option<&'a str>,
    msg: &'a str,
}

impl fmt::Display for NodeMsg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {:?} ({})", self.node, self.op)?;
        if let Some(a) = self.attr {
            write!(f, ", attribute {a:?}")?;
        }
        write!(f, ": {}", self.msg)
    }
}

/// Reads and imports a `.onnx` file; errors from the file's contents name the file.
pub fn load(path: &Path) -> Result<Graph, OnnxError> {
    let file = read::read_file(path)?;
    import::import(&file).map_err(|e| match e {
        OnnxError::File { .. } => e,
        other => OnnxError::File {
            path: path.display().to_string(),
            msg: other.to_string(),
        },
    })
}

/// Imports a model from memory (external data is refused: there is no folder to read it from).
pub fn load_bytes(bytes: &[u8]) -> Result<Graph, OnnxError> {
    import::import(&read::read_bytes(bytes)?)
}
