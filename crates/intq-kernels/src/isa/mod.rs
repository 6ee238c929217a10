//! Instruction-set tiers of the fast kernels: which ones the CPU has, which one runs, and the
//! `INTQ_ISA` override.
//!
//! Detection runs once (`std::is_x86_feature_detected!`, `std::arch::is_aarch64_feature_detected!`)
//! and picks the best tier the CPU has; `INTQ_ISA=portable|avx2|avx512vnni|amx|neondot` forces a
//! tier and is an error when the CPU lacks it.
//! `INTQ_ISA=reference` is understood by the engine (it selects the scalar reference executor);
//! kernels asked for a tier under it use the portable one.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
mod amx_conv;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512_dw;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512vnni;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
pub(crate) mod portable;

/// One tier of fast kernels. Every tier equals the reference kernels bit for bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 AVX2: 16-bit multiply-add (`vpmaddwd`) on widened operands.
    Avx2,
    /// x86-64 AVX-512 with VNNI: `vpdpbusd`, u8 x s8 dot products of 4.
    Avx512Vnni,
    /// x86-64 AMX-INT8: `tdpbusd` on 16 x 64-byte tiles (needs the OS's permission).
    Amx,
    /// aarch64 NEON with the dot-product extension (ARMv8.2 `dotprod`): `sdot`, s8 x s8 dot
    /// products of 4.
    NeonDot,
}

impl Isa {
    /// Every tier, best first.
    pub const ALL_BEST_FIRST: [Isa; 5] = [
        Isa::Amx,
        Isa::Avx512Vnni,
        Isa::Avx2,
        Isa::NeonDot,
        Isa::Portable,
    ];

    /// The name `INTQ_ISA` and `--isa` use.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Amx => "amx",
            Isa::NeonDot => "neondot",
        }
    }

    /// Whether this CPU (and OS) can run the tier.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => amx::available(),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => neon::available(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best tier this CPU has.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            Isa::ALL_BEST_FIRST
                .into_iter()
                .find(|i| i.is_available())
                .unwrap_or(Isa::Portable)
        })
    }

    /// Every tier this CPU has, best first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL_BEST_FIRST
            .into_iter()
            .filter(|i| i.is_available())
            .collect()
    }

    /// `self` if the CPU has it, else an error naming what is missing.
    pub fn require(self) -> Result<Isa, IsaError> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(IsaError::Unsupported(self.name()))
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A bad `INTQ_ISA` / `--isa` value, or a tier this CPU lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsaError {
    #[error(
        "unknown ISA tier {0:?}: expected reference, portable, avx2, avx512vnni, amx or neondot"
    )]
    Unknown(String),
    #[error("this CPU does not support the {0} tier (INTQ_ISA / --isa asked for it)")]
    Unsupported(&'static str),
}

impl FromStr for Isa {
    type Err = IsaError;
    fn from_str(s: &str) -> Result<Isa, IsaError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "portable" => Ok(Isa::Portable),
            "avx2" => Ok(Isa::Avx2),
            "avx512vnni" | "vnni" => Ok(Isa::Avx512Vnni),
            "amx" => Ok(Isa::Amx),
            "neondot" | "neon" => Ok(Isa::NeonDot),
            other => Err(IsaError::Unknown(other.to_string())),
        }
    }
}

/// What runs the integer ops: the scalar reference kernels, or one tier of the fast kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelTier {
    Reference,
    Fast(Isa),
}

impl KernelTier {
    /// Parses `reference` or a tier name, and checks the CPU has the tier.
    pub fn parse(s: &str) -> Result<KernelTier, IsaError> {
        if s.trim().eq_ignore_ascii_case("reference") {
            return Ok(KernelTier::Reference);
        }
        Ok(KernelTier::Fast(s.parse::<Isa>()?.require()?))
    }

    /// `INTQ_ISA` if set (checked), else the best tier the CPU has. Read once per process.
    pub fn from_env() -> Result<KernelTier, IsaError> {
        static TIER: OnceLock<Result<KernelTier, IsaError>> = OnceLock::new();
        TIER.get_or_init(|| match std::env::var("INTQ_ISA") {
            Ok(v) if !v.trim().is_empty() => KernelTier::parse(&v),
            _ => Ok(KernelTier::Fast(Isa::best())),
        })
        .clone()
    }

    pub fn name(self) -> &'static str {
        match self {
            KernelTier::Reference => "reference",
            KernelTier::Fast(isa) => isa.name(),
        }
    }
}

impl fmt::Display for KernelTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_names_parse_and_unavailable_tiers_are_refused() {
        assert_eq!(KernelTier::parse("reference"), Ok(KernelTier::Reference));
        assert_eq!(
            KernelTier::parse(" Portable "),
            Ok(KernelTier::Fast(Isa::Portable))
        );
        assert!(matches!(KernelTier::parse("sse9"), Err(IsaError::Unknown(s)) if s == "sse9"));
        for isa in Isa::ALL_BEST_FIRST {
            assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
            match KernelTier::parse(isa.name()) {
                Ok(t) => {
                    assert!(isa.is_available());
                    assert_eq!(t, KernelTier::Fast(isa));
                }
                Err(e) => {
                    assert!(!isa.is_available());
                    assert_eq!(e, IsaError::Unsupported(isa.name()));
                    assert!(e.to_string().contains(isa.name()));
                }
            }
        }
        // The best tier is available and no available tier ranks above it.
        let best = Isa::best();
        assert!(best.is_available());
        assert_eq!(Isa::available()[0], best);
    }
}
