//! The `intq` tool's reusable parts, as a library so that fuzz targets and tests reach them.

pub mod curve;
pub mod npy;
