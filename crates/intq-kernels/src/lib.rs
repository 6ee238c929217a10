//! Integer kernels for quantized inference: the normative scalar reference of every op, the fused
//! output stage that requantizes accumulators, and convolution geometry.
//!
//! The reference tier (`reference`) is plain, obviously-correct Rust written straight from
//! docs/spec.md §4, §6 and §7; every ISA tier must equal it bit for bit. Kernels trust their
//! arguments' shapes (the engine validates graphs before it runs them) and check them with
//! assertions.
//!
//! The fast tiers (`gemm`, per-ISA micro-kernels in `isa`) pack weights once, fold the zero points
//! into precomputed constants (docs/spec.md §4.13, paper eq. 7) and requantize in registers; they
//! equal the reference exactly, on every tier the CPU has.
//!
//! `qat` holds the float kernels of quantization-aware training that need the same dispatch;
//! `train_passes` the few helpers of training's f32 passes that need `unsafe`.

#![deny(unsafe_op_in_unsafe_fn)]

mod elem;
pub mod gemm;
mod geometry;
pub mod isa;
mod output_stage;
pub mod qat;
pub mod reference;
pub mod train_passes;

pub use elem::QElem;
pub use geometry::{ConvParams, Padding, PaddingValues, PoolParams};
pub use isa::{Isa, IsaError, KernelTier};
pub use output_stage::{Multipliers, OutputStage};
