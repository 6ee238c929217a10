//! `.tflite` import and export (FlatBuffers) for the intq engine graph.
//!
//! [`import`] reads the subset of the TFLite schema that describes 8-bit quantized CNNs into a
//! validated [`intq_engine::Graph`], keeping TFLite's tensor names; [`export`] writes such a graph
//! back as a `.tflite` file TFLite's interpreter runs. The schema facts used (field ids, enum
//! values) are in [`schema`]; docs/spec.md §6 lists where TFLite's arithmetic differs from §4.

pub mod detection;
pub mod export;
pub mod flatbuf;
pub mod import;
pub mod lower;
pub mod schema;
pub mod zoo;

pub use export::{export, save};
pub use import::{import, load};
pub use lower::lower_explicit_padding;

/// Everything that can go wrong reading or writing a `.tflite` file.
#[derive(Debug, thiserror::Error)]
pub enum TfliteError {
    #[error("malformed .tflite: {0}")]
    Malformed(String),
    /// An op the importer does not support, named with its index and the tensor at hand.
    #[error("op {index} ({op}): {message}")]
    Unsupported {
        index: usize,
        op: String,
        message: String,
    },
    #[error("{0}")]
    Other(String),
    #[error("invalid graph: {0}")]
    Graph(#[from] intq_engine::GraphError),
    #[error("{}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        source: Box<TfliteError>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Whether `path` names a `.tflite` file (by extension), for commands that accept both formats.
pub fn is_tflite_path(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tflite"))
}
