//! Test helpers shared by the intq crates' tests (a dev-dependency only): a seeded generator with
//! the draws the kernel and engine tests take, and the loop that runs a check on every ISA tier
//! this CPU has, with `INTQ_REQUIRE_TIERS` turning a missing tier into a failure.

pub mod cputime;
mod rng;
mod tiers;

pub use intq_kernels::Isa;
pub use rng::{codes, floats, widen, TestRng};
pub use tiers::{on_every_tier, required_tiers, tier_runs, tiers, REQUIRE_TIERS};
