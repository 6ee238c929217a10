//! [`Graph`] to `.tflite`.

use crate::TfliteError;
use intq_engine::Graph;
use std::path::Path;

pub fn export(_graph: &Graph) -> Result<Vec<u8>, TfliteError> {
    Err(TfliteError::Other("not yet".into()))
}

pub fn save(_graph: &Graph, _path: &Path) -> Result<(), TfliteError> {
    Err(TfliteError::Other("not yet".into()))
}
