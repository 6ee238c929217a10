//! Quantization-aware training (Jacob et al. 2018 §3): fake quantization, observers, QAT layers,
//! model zoo, trainer, export to the engine graph.
//!
//! # Why burn, and why these features
//!
//! The crate uses `burn = "=0.22.1"` with `default-features = false` and only `std`, `flex`,
//! `rayon`, `autodiff`, `optim`, `store` and `safetensors`. `flex` is burn's pure-Rust CPU backend:
//! it builds offline and trains these networks several times faster than candle (whose depthwise
//! conv is one conv per channel). burn's `cpu` and `cuda` features download LLVM at build time and
//! fail offline, and `ndarray` (plus flex's default SIMD feature) makes release builds several
//! times longer for no training-speed gain, so none of them is enabled. The crate's own `wgpu`
//! feature adds burn's `wgpu` (GPUs through Vulkan, Metal or DX12, [`device`]); burn's
//! `vulkan`, `fusion` and `autotune` stay off, since they crash Mesa's software Vulkan driver
//! that CI runs on. `rayon` is flex's threading
//! (parallel GEMM and convolutions) so that training uses every core. flex's elementwise, mask and
//! copy kernels are single-threaded, so the trainer also splits each batch into a fixed number of
//! data-parallel shards run on their own threads ([`shard`], `TrainConfig::shards`); with more than
//! one shard, training-mode BN normalizes each shard with its own batch statistics and each shard
//! fake-quantizes with its own view of the observer range, while the moving statistics and ranges
//! are updated with the exact full-batch values.
//!
//! The hot ops of a QAT step (convolution, depthwise, batch norm with its activation, max pool,
//! the output fake-quant) are this crate's own autodiff ops over flex's buffers. The fake-quant
//! pass itself is `intq_kernels::qat`'s, which runs it on the ISA tier `INTQ_ISA` selects (ISA
//! dispatch stays in that crate).
//!
//! # Rounding
//!
//! Fake quantization rounds half up (`floor(v + 0.5)`), docs/spec.md §2.1 and
//! `intq_quant::QScheme::fake_quant`; burn's `round()` (half to even) is never used. Scale and
//! zero point always come from `intq_quant::QScheme::choose_params` (TF's nudging) on host-side
//! ranges, so conversion stores exactly the numbers training used. See [`fake_quant`].

pub mod augment;
pub mod bn;
pub mod calibrate;
pub mod checkpoint;
pub mod ckpt_file;
pub mod conv;
pub mod conv_transpose;
pub mod depthwise;
pub mod device;
pub mod dist;
pub mod export;
pub mod fake_quant;
pub mod graph_ckpt;
pub mod graph_export;
pub mod graph_net;
pub mod layers;
pub mod observer;
pub mod pool;
pub mod prefetch;
pub mod ptq;
pub mod sgd;
pub mod shard;
pub mod trainer;
pub mod zoo;

pub use burn::tensor::Device;
pub use layers::{Ctx, QuantCfg};
pub use trainer::{evaluate, train, ImageSet, Start, Summary, TrainConfig};
pub use zoo::{Arch, Net};

/// Errors of training, checkpoints and export.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("quantization: {0}")]
    Quant(String),
    #[error("non-finite value: {0}")]
    NonFinite(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("data: {0}")]
    Data(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("export: {0}")]
    Export(String),
    #[error("i/o: {0}")]
    Io(String),
}

impl From<intq_quant::QuantError> for TrainError {
    fn from(e: intq_quant::QuantError) -> Self {
        TrainError::Quant(e.to_string())
    }
}

/// The training device: burn's flex CPU backend with autodiff.
pub fn train_device() -> Device {
    Device::flex().autodiff()
}
