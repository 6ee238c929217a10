//! The kernel table: for each ISA tier, every function and tier fact the fast kernels dispatch
//! on, fixed at compile time and picked once when a plan is made (tract's `Ops`, ruy's paths).
//!
//! The plans (`PreparedGemm`, `Conv2dPlan`, `DepthwisePlan`) and the elementwise ops ask the
//! table of their tier and never match on [`Isa`]; [`Kernels::of`] is the one place that does.
//! Each table is written as what its tier brings over the next one down, the rest inherited
//! with struct-update syntax, so the fallback chain is explicit:
//! `amx → avx512vnni → avx2 → portable` and `neondot → portable`. Adding a tier is a tier file
//! and a table here.
//!
//! # Safety of the entries
//! Entries marked `unsafe fn` may be called only on a CPU that has the table's tier, and only
//! with the arguments their own docs require. [`Kernels::of`] hands out a tier's table only after
//! checking the CPU has the tier, and every tier a table inherits from is implied by it (every
//! x86 tier above portable implies AVX2; AVX-512 VNNI and AMX imply AVX-512 F/BW).

use super::{Aligned, Code8, Epilogue, Kernel, Packed, PreparedGemm, RowSource};
use crate::gemm::{conv::Conv2dPlan, depthwise::DepthwisePlan};
use crate::isa::{portable::Portable, Isa};
use crate::qat::RequantFakeQuant;
use crate::reference::{AddParams, HardSwishParams, MulParams};
use crate::PoolParams;

/// One tier's functions for one code type (`u8` or `i8`).
#[derive(Clone, Copy)]
pub struct CodeOps<T: 'static> {
    /// Packs `n x k` weights into the tier's GEMM panels.
    pub(crate) pack: fn(&[T], usize, usize) -> Packed,
    /// [`PreparedGemm::run_rows`] on the tier's micro-kernel: `(gemm, m, out, threads, rows)`.
    pub(crate) gemm: fn(&PreparedGemm, usize, &mut [u8], usize, &RowSource<T>),
    /// The implicit-GEMM convolution (`Conv2dPlan::run_implicit` on the tier's
    /// `ImplicitKernel`), where the tier has one: `(plan, input, input_shape, output,
    /// output_shape, threads)`.
    pub(crate) implicit: Option<ImplicitFn<T>>,
    /// The pointwise tile for 1x1 convolutions (`Conv2dPlan::run_pointwise`), reading the
    /// input's pixels in place, where the tier has one: `(plan, input, pixels, output, threads)`.
    pub(crate) pointwise: Option<PointwiseFn<T>>,
    /// One output row of a depthwise convolution, any depth multiplier, finished by the tier's
    /// vector output stage: `(plan, input, input_shape, out_h, row, out_row, acc)`.
    pub(crate) dw_row: DwRowFn<T>,
    /// The depthwise pair kernel (depth multiplier 1, `vpmaddwd` on tap pairs), where the tier
    /// has one; its taps are in the layout of [`Kernels::dw_layout`].
    pub(crate) dw_run: Option<DwRunFn<T>>,
    /// The depthwise quad kernel (depth multiplier 1, `vpdpbusd` on four taps), where the tier
    /// has one: preferred to the pair kernel where the plan's `DwQuads` apply.
    pub(crate) dw_quads: Option<DwQuadFn<T>>,
    /// Quantized Add on equal shapes (`params, lo, hi, lhs, rhs, out`), where vectorized.
    pub(crate) add: Option<AddFn<T>>,
    /// Quantized Mul of equal-length operands (`params, lhs, rhs, out`), where vectorized.
    pub(crate) mul: Option<MulFn<T>>,
    /// Quantized HardSwish (`params, input, out`): a table of the codes' outputs, or vector
    /// lanes where they are faster.
    pub(crate) hard_swish: Option<HardSwishFn<T>>,
    /// Quantize of reals to codes (`params, input, out`), where vectorized.
    pub(crate) quantize: Option<QuantizeFn<T>>,
    /// Output rows `r0..r1` of a bilinear resize (`plan, r0, r1, out`).
    pub(crate) resize_bilinear: BilinearFn<T>,
    pub(crate) max_pool: PoolFn<T>,
    pub(crate) average_pool: PoolFn<T>,
}

pub(crate) type ImplicitFn<T> = fn(&Conv2dPlan, &[T], [usize; 4], &mut [T], [usize; 4], usize);
pub(crate) type PointwiseFn<T> = fn(&Conv2dPlan, &[T], usize, &mut [T], usize);
pub(crate) type DwRowFn<T> =
    unsafe fn(&DepthwisePlan, &[T], [usize; 4], usize, usize, &mut [T], &mut [i32]);
pub(crate) type DwQuadFn<T> =
    unsafe fn(&super::depthwise::DwQuadRun<T>, &[usize], usize, &mut [u8]);
pub(crate) type DwRunFn<T> = unsafe fn(&super::depthwise::DwRun<T>, &[usize], usize, &mut [u8]);
pub(crate) type AddFn<T> = unsafe fn(&AddParams, i32, i32, &[T], &[T], &mut [T]);
pub(crate) type MulFn<T> = unsafe fn(&MulParams, &[T], &[T], &mut [T]);
pub(crate) type HardSwishFn<T> = unsafe fn(&HardSwishParams, &[T], &mut [T]);
pub(crate) type QuantizeFn<T> = unsafe fn(&super::elementwise::QuantizeLanes, &[f32], &mut [T]);
pub(crate) type BilinearFn<T> = unsafe fn(&super::elementwise::Bilinear<T>, usize, usize, &mut [T]);
pub(crate) type PoolFn<T> = unsafe fn(&[T], [usize; 4], &PoolParams, &mut [T], [usize; 4]);
/// `(pairs16, ntaps, oc)` to the tier's layout.
pub(crate) type DwLayoutFn = fn(&[i16], usize, usize) -> Vec<i16>;
pub(crate) type FakeQuantFn =
    unsafe fn(&RequantFakeQuant, i32, &[f32], &mut [f32], Option<&mut [u8]>) -> bool;

/// How a tier's convolutions run (see `Conv2dPlan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvPolicy {
    /// Channels per group of the implicit GEMM's tile: the image's channels must be a
    /// multiple of it (a narrow input is padded up to it); 0 without an implicit GEMM.
    pub(crate) implicit_group: usize,
    /// The implicit GEMM runs layers of at most this many output channels (the rest take the
    /// packed GEMM), and every layer whose input is narrower than the group (a stem, whose
    /// im2col rows of a few codes per tap are slow to gather and pack): AMX runs the VNNI
    /// implicit tile only where one 32-column panel holds the layer, as packing A then costs
    /// as much as the tiles' reads of it, and on stems.
    pub(crate) implicit_max_oc: usize,
    /// The implicit GEMM also runs 1x1 convolutions (it maps the pixels a row of the image at a
    /// time instead of packing A row by row).
    pub(crate) implicit_1x1: bool,
    /// Filter rows are padded with zero weights to whole groups, so that inputs whose channels
    /// are not a multiple of the group still run as an implicit GEMM (`Conv2dPlan::row_run`).
    pub(crate) pad_rows: bool,
    /// Codes per step of the tier's strided tile (`conv::StridedKernel`), which runs stride-1
    /// convolutions wider than one pixel on the padded image in place, their filter rows padded
    /// with zero weights to whole steps; 0 without one.
    pub(crate) strided_run: usize,
}

/// The kernel table of one tier (see the module docs).
pub struct Kernels {
    pub(crate) isa: Isa,
    /// The GEMM micro-kernel's tile width, its K group (the packed layout's K padding) and
    /// [`Kernel::A_BIAS`].
    pub(crate) nr: usize,
    pub(crate) kg: usize,
    pub(crate) a_bias: i32,
    /// Columns per vector of the tier's output stage, which reads the epilogue's columns
    /// interleaved in groups of this many ([`Epilogue::lay_out`]); 0 where it reads the plain
    /// columns.
    pub(crate) lane_width: usize,
    pub(crate) conv: ConvPolicy,
    /// The depthwise pair kernel's tap layout, made from the 16-channel layout of
    /// `depthwise::dw_pairs`; `None` without a pair kernel.
    pub(crate) dw_layout: Option<DwLayoutFn>,
    pub(crate) fake_quant: FakeQuantFn,
    pub(crate) u8: CodeOps<u8>,
    pub(crate) i8: CodeOps<i8>,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernels({})", self.isa)
    }
}

/// Tables are equal when they are the same tier's.
impl PartialEq for Kernels {
    fn eq(&self, other: &Self) -> bool {
        self.isa == other.isa
    }
}

impl Kernels {
    /// The table of `isa`.
    ///
    /// # Panics
    /// When the CPU lacks the tier (every plan checks this where it is made).
    pub(crate) fn of(isa: Isa) -> &'static Kernels {
        Self::get(isa).unwrap_or_else(|| panic!("ISA tier {isa} is not available"))
    }

    /// The table of `isa`, or `None` when the CPU lacks the tier.
    pub(crate) fn get(isa: Isa) -> Option<&'static Kernels> {
        if !isa.is_available() {
            return None;
        }
        match isa {
            Isa::Portable => Some(&PORTABLE),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(&x86::AVX2),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => Some(&x86::AVX512VNNI),
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => Some(&x86::AMX),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => Some(&arm::NEONDOT),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The table of `isa` when the CPU has it, else the portable one.
    pub(crate) fn or_portable(isa: Isa) -> &'static Kernels {
        Self::get(isa).unwrap_or(&PORTABLE)
    }

    pub(crate) fn isa(&self) -> Isa {
        self.isa
    }

    /// The functions for code type `T`.
    pub(crate) fn ops<T: Code8>(&self) -> &CodeOps<T> {
        T::ops(self)
    }

    /// The tier's layout of a finished epilogue (see [`Kernels::lane_width`]).
    pub(crate) fn lay_out(&self, epi: &mut Epilogue) {
        if self.lane_width > 0 {
            epi.lay_out(self.lane_width);
        }
    }
}

/// Which of a table's [`CodeOps`] a code type uses. Sealed: implemented for `u8` and `i8`.
pub trait CodeTable: Sized + 'static {
    fn ops(k: &Kernels) -> &CodeOps<Self>;
}
impl CodeTable for u8 {
    fn ops(k: &Kernels) -> &CodeOps<u8> {
        &k.u8
    }
}
impl CodeTable for i8 {
    fn ops(k: &Kernels) -> &CodeOps<i8> {
        &k.i8
    }
}

/// Packed weights as one tier's kernel reads them.
pub(crate) trait PackedElem: super::Pod {
    fn wrap(a: Aligned<Self>) -> Packed;
    /// The packed panels; a layout of another tier is a bug.
    fn of(p: &Packed) -> &[Self];
}
impl PackedElem for i8 {
    fn wrap(a: Aligned<i8>) -> Packed {
        Packed::I8(a)
    }
    fn of(p: &Packed) -> &[i8] {
        match p {
            Packed::I8(b) => b.as_slice(),
            _ => unreachable!("packed layout matches its tier"),
        }
    }
}
impl PackedElem for i16 {
    fn wrap(a: Aligned<i16>) -> Packed {
        Packed::I16(a)
    }
    fn of(p: &Packed) -> &[i16] {
        match p {
            Packed::I16(b) => b.as_slice(),
            _ => unreachable!("packed layout matches its tier"),
        }
    }
}

fn pack<K: Kernel, T: Code8>(w: &[T], n: usize, k: usize) -> Packed {
    K::B::wrap(super::pack_b::<K, T>(w, n, k))
}

fn gemm<K: Kernel, T: Code8>(
    g: &PreparedGemm,
    m: usize,
    out: &mut [u8],
    threads: usize,
    row: &RowSource<T>,
) {
    g.drive::<K, T>(K::B::of(&g.packed), m, out, threads, row)
}

fn implicit<F: super::ImplicitKernel, T: Code8>(
    plan: &Conv2dPlan,
    input: &[T],
    input_shape: [usize; 4],
    output: &mut [T],
    output_shape: [usize; 4],
    threads: usize,
) {
    plan.run_implicit::<F, T>(input, input_shape, output, output_shape, threads)
}

/// The portable tier's (plain Rust) functions for code type `T`: the bottom of every chain.
const fn portable_ops<T: Code8 + Ord>() -> CodeOps<T> {
    CodeOps {
        pack: pack::<Portable, T>,
        gemm: gemm::<Portable, T>,
        implicit: None,
        pointwise: None,
        dw_row: super::depthwise::dw_row_portable::<T>,
        dw_run: None,
        dw_quads: None,
        add: None,
        mul: None,
        hard_swish: Some(super::elementwise::hard_swish_table::<T>),
        quantize: None,
        resize_bilinear: super::elementwise::bilinear_rows_portable::<T>,
        max_pool: super::elementwise::max_pool_body::<T>,
        average_pool: super::elementwise::average_pool_body::<T>,
    }
}

const PORTABLE: Kernels = Kernels {
    isa: Isa::Portable,
    nr: Portable::NR,
    kg: Portable::KG,
    a_bias: Portable::A_BIAS,
    lane_width: 0,
    conv: ConvPolicy {
        implicit_group: 0,
        implicit_max_oc: usize::MAX,
        implicit_1x1: false,
        pad_rows: false,
        strided_run: 0,
    },
    dw_layout: None,
    fake_quant: crate::qat::fake_quant_portable,
    u8: portable_ops::<u8>(),
    i8: portable_ops::<i8>(),
};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use crate::gemm::elementwise::x86 as ew;
    use crate::isa::{amx, amx::Amx, avx2, avx2::Avx2, avx512vnni as vnni, avx512vnni::Vnni};

    const fn avx2_ops<T: Code8 + Ord>() -> CodeOps<T> {
        CodeOps {
            pack: pack::<Avx2, T>,
            gemm: gemm::<Avx2, T>,
            implicit: Some(implicit::<Avx2, T>),
            pointwise: None,
            dw_row: crate::gemm::depthwise::dw_row_avx2::<T>,
            dw_run: Some(avx2::dw_run::<T>),
            dw_quads: None,
            add: Some(avx2::add_same_shape::<T>),
            mul: Some(ew::mul_avx2::<T>),
            // A lookup per code: AVX2's 16 int16 lanes do not beat it.
            hard_swish: Some(crate::gemm::elementwise::hard_swish_table::<T>),
            quantize: Some(crate::gemm::elementwise::quantize_avx2::<T>),
            resize_bilinear: crate::gemm::elementwise::bilinear_rows_avx2::<T>,
            max_pool: crate::gemm::elementwise::max_pool_avx2::<T>,
            average_pool: crate::gemm::elementwise::average_pool_avx2::<T>,
        }
    }

    pub(super) const AVX2: Kernels = Kernels {
        isa: Isa::Avx2,
        nr: avx2::NR,
        kg: avx2::KG,
        a_bias: <Avx2 as Kernel>::A_BIAS,
        lane_width: 8,
        conv: ConvPolicy {
            implicit_group: avx2::KG,
            implicit_max_oc: usize::MAX,
            implicit_1x1: true,
            pad_rows: true,
            strided_run: 0,
        },
        dw_layout: Some(avx2::dw_layout),
        fake_quant: avx2::fake_quant,
        u8: avx2_ops::<u8>(),
        i8: avx2_ops::<i8>(),
    };

    /// AVX-512 VNNI over AVX2: its own GEMM, implicit GEMM, depthwise, Add, Mul, HardSwish,
    /// Quantize, bilinear resize and fake quantization; AVX2's pooling.
    const fn vnni_ops<T: Code8 + Ord>() -> CodeOps<T> {
        CodeOps {
            pack: pack::<Vnni, T>,
            gemm: gemv_or_gemm::<Vnni, T>,
            implicit: Some(vnni::implicit_conv::<T>),
            dw_row: crate::gemm::depthwise::dw_row_avx512::<T>,
            dw_run: Some(vnni::dw_run::<T>),
            dw_quads: Some(crate::isa::avx512_dw::dw_quads::<T>),
            add: Some(vnni::add_same_shape::<T>),
            mul: Some(ew::mul_avx512::<T>),
            hard_swish: Some(ew::hard_swish_avx512::<T>),
            quantize: Some(crate::gemm::elementwise::quantize_avx512::<T>),
            resize_bilinear: crate::gemm::elementwise::bilinear_rows_avx512::<T>,
            ..avx2_ops::<T>()
        }
    }

    pub(super) const AVX512VNNI: Kernels = Kernels {
        isa: Isa::Avx512Vnni,
        nr: vnni::NR,
        kg: vnni::KG,
        a_bias: <Vnni as Kernel>::A_BIAS,
        lane_width: 16,
        conv: ConvPolicy {
            implicit_group: vnni::KG,
            implicit_max_oc: usize::MAX,
            implicit_1x1: true,
            pad_rows: false,
            strided_run: 0,
        },
        dw_layout: Some(vnni::dw_layout),
        fake_quant: crate::qat::fake_quant_avx512,
        u8: vnni_ops::<u8>(),
        i8: vnni_ops::<i8>(),
    };

    /// AMX over AVX-512 VNNI: its own GEMM, and its strided tile for stride-1 convolutions;
    /// the VNNI implicit tile runs the other convolutions it takes on AMX's packed panels (the
    /// same VNNI layout, K padded to 64): layers of one 32-column panel and stems; 1x1
    /// convolutions with symmetric weights run on its pointwise tile, which reads the pixels in
    /// place (`isa::amx_conv`), the others on its GEMM.
    const fn amx_ops<T: Code8 + Ord>() -> CodeOps<T> {
        CodeOps {
            pack: pack::<Amx, T>,
            gemm: gemv_or_gemm::<Amx, T>,
            implicit: Some(amx_conv::<T>),
            pointwise: Some(amx_pointwise::<T>),
            ..vnni_ops::<T>()
        }
    }

    /// Batches of a few rows take the VNNI GEMV (`gemm::gemv`) on `K`'s panels (AVX-512 VNNI's
    /// and AMX's share the layout): an 8- or 32-row tile would be mostly padding, and AMX's
    /// tile loads cost more than the rows' products.
    fn gemv_or_gemm<K: Kernel, T: Code8>(
        g: &PreparedGemm,
        m: usize,
        out: &mut [u8],
        threads: usize,
        row: &RowSource<T>,
    ) {
        if m <= crate::gemm::gemv::MAX_ROWS {
            crate::gemm::gemv::gemv::<T>(g, i8::of(&g.packed), m, out, threads, row)
        } else {
            gemm::<K, T>(g, m, out, threads, row)
        }
    }

    fn amx_conv<T: Code8>(
        plan: &Conv2dPlan,
        input: &[T],
        input_shape: [usize; 4],
        output: &mut [T],
        output_shape: [usize; 4],
        threads: usize,
    ) {
        if plan.strided() {
            plan.run_strided::<Amx, T>(input, input_shape, output, output_shape, threads)
        } else {
            plan.run_implicit::<Vnni, T>(input, input_shape, output, output_shape, threads)
        }
    }

    fn amx_pointwise<T: Code8>(
        plan: &Conv2dPlan,
        input: &[T],
        m: usize,
        output: &mut [T],
        threads: usize,
    ) {
        plan.run_pointwise::<Amx, T>(input, m, output, threads)
    }

    pub(super) const AMX: Kernels = Kernels {
        isa: Isa::Amx,
        nr: <Amx as Kernel>::NR,
        kg: amx::KG,
        a_bias: <Amx as Kernel>::A_BIAS,
        conv: ConvPolicy {
            implicit_max_oc: vnni::NR,
            implicit_1x1: false,
            strided_run: amx::KG,
            ..AVX512VNNI.conv
        },
        u8: amx_ops::<u8>(),
        i8: amx_ops::<i8>(),
        ..AVX512VNNI
    };

    // The VNNI implicit tile reads AMX's panels: same column count, same 4-code groups.
    const _: () = assert!(<Amx as Kernel>::NR == vnni::NR && <Amx as Kernel>::B_KG == vnni::KG);
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::*;
    use crate::isa::neon::{self, NeonDot};

    const fn neon_ops<T: Code8 + Ord>() -> CodeOps<T> {
        CodeOps {
            pack: pack::<NeonDot, T>,
            gemm: gemm::<NeonDot, T>,
            implicit: Some(implicit::<NeonDot, T>),
            dw_row: crate::gemm::depthwise::dw_row_neon::<T>,
            add: Some(neon::add_same_shape::<T>),
            mul: Some(crate::gemm::elementwise::neon::mul_neon::<T>),
            hard_swish: Some(crate::gemm::elementwise::neon::hard_swish_neon::<T>),
            ..portable_ops::<T>()
        }
    }

    pub(super) const NEONDOT: Kernels = Kernels {
        isa: Isa::NeonDot,
        nr: neon::NR,
        kg: neon::KG,
        a_bias: <NeonDot as Kernel>::A_BIAS,
        conv: ConvPolicy {
            implicit_group: neon::KG,
            ..PORTABLE.conv
        },
        u8: neon_ops::<u8>(),
        i8: neon_ops::<i8>(),
        ..PORTABLE
    };
}
