//! Integer kernels for quantized inference: the normative scalar reference of every op, the fused
//! output stage that requantizes accumulators, and convolution geometry.
//!
//! The reference tier (`reference`) is plain, obviously-correct Rust written straight from
//! `../shared/SPEC.md`; later ISA tiers must equal it bit for bit. Kernels trust their arguments'
//! shapes (the engine validates graphs before it runs them) and check them with assertions.

mod elem;
mod geometry;
mod output_stage;
pub mod reference;

pub use elem::QElem;
pub use geometry::{ConvParams, Padding, PaddingValues, PoolParams};
pub use output_stage::{Multipliers, OutputStage};
