//! Errors of the engine: graph validation, file format, and running a model.

use std::path::PathBuf;

/// A graph that is not well-formed: each message names the op (index and kind) or tensor at fault.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum GraphError {
    #[error("op {index} ({kind}): {message}")]
    Op {
        index: usize,
        kind: &'static str,
        message: String,
    },
    #[error("tensor {id} ('{name}'): {message}")]
    Tensor {
        id: u32,
        name: String,
        message: String,
    },
    #[error("{0}")]
    Graph(String),
}

/// Everything that can go wrong loading, validating or running a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid graph: {0}")]
    Graph(#[from] GraphError),
    #[error("invalid .intq data: {0}")]
    Format(#[from] crate::format::FormatError),
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: Box<EngineError>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("run: {0}")]
    Run(String),
}
