//! The fast Mul, HardSwish, Quantize and bilinear resize on every tier the CPU has against their
//! reference kernels, bit for bit: odd lengths (vector tails), zero points at the ends of the
//! code range, scales orders of magnitude apart, the broadcasts of squeeze-and-excitation, every
//! HardSwish code under raw parameters (the saturating and truncated-mask corners included),
//! Quantize's ties, NaN, infinities, subnormals and saturating reals under narrowed code ranges,
//! and resizes of every mode in both arithmetics, on one thread and split over several.

use intq_kernels::gemm::{self, Code8};
use intq_kernels::reference::{self, BilinearArithmetic, HardSwishParams, MulParams, ResizeMode};
use intq_kernels::Isa;
use intq_quant::{QuantParams, QuantizedMultiplier};
use intq_testutil::TestRng as Rng;

/// Declares `#[test] fn $name` that runs `$body(isa)` on every ISA tier this CPU has.
macro_rules! tiers {
    ($name:ident, $body:expr) => {
        #[test]
        fn $name() {
            let f: &dyn Fn(Isa) = &$body;
            intq_testutil::on_every_tier(stringify!($name), f);
        }
    };
}

/// Fails naming the first differing element (the vectors can be long).
fn assert_same<T: Code8>(got: &[T], want: &[T], what: impl Fn() -> String) {
    assert_eq!(got.len(), want.len(), "{}: lengths", what());
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
        panic!(
            "{}: element {i} is {:?}, reference {:?}",
            what(),
            got[i],
            want[i]
        );
    }
}

/// Scale `2^u`, `u` uniform in [-14, 6): operands' and outputs' scales far apart.
fn scale(rng: &mut Rng) -> f32 {
    rng.log_scale(-14.0, 6.0)
}

fn params<T: Code8>(rng: &mut Rng) -> QuantParams {
    QuantParams {
        scale: scale(rng),
        zero_point: rng.zero_point::<T>(),
    }
}

/// Mul parameters with zero points at the ends of the range, and sometimes a narrowed clamp or
/// a raw multiplier at the vector path's limits; `None` when the scales give no multiplier.
fn mul_params<T: Code8>(rng: &mut Rng) -> Option<MulParams> {
    let (cmin, cmax) = if rng.chance(0.3) {
        let (a, b) = (rng.code_in(T::MIN, T::MAX), rng.code_in(T::MIN, T::MAX));
        (a.min(b), a.max(b))
    } else {
        (T::MIN, T::MAX)
    };
    let mut p = MulParams::new(
        params::<T>(rng),
        params::<T>(rng),
        params::<T>(rng),
        cmin,
        cmax,
    )
    .ok()?;
    if rng.chance(0.1) {
        p.multiplier = rng.pick(&[
            QuantizedMultiplier { m0: 0, shift: 0 },
            QuantizedMultiplier {
                m0: i32::MAX,
                shift: 31,
            },
            QuantizedMultiplier {
                m0: 1 << 30,
                shift: -31,
            },
            QuantizedMultiplier {
                m0: i32::MAX,
                shift: 0,
            },
            QuantizedMultiplier::ONE,
        ]);
    }
    if rng.chance(0.05) {
        // Clamp bounds outside the type: the saturating cast after the clamp decides.
        p.clamp_min = T::MIN - 40;
        p.clamp_max = T::MAX + 40;
    }
    Some(p)
}

#[allow(clippy::too_many_arguments)]
fn check_mul<T: Code8>(
    isa: Isa,
    threads: usize,
    p: &MulParams,
    a: &[T],
    ashape: &[usize],
    b: &[T],
    bshape: &[usize],
    oshape: &[usize],
    what: &str,
) {
    let n: usize = oshape.iter().product();
    let mut want = vec![T::default(); n];
    reference::mul(a, ashape, b, bshape, p, &mut want, oshape);
    let mut got = vec![T::default(); n];
    gemm::mul(isa, threads, a, ashape, b, bshape, p, &mut got, oshape);
    assert_same(&got, &want, || {
        format!("{isa} mul {what} {ashape:?} x {bshape:?}, {threads} threads: {p:?}")
    });
}

fn random_mul<T: Code8>(isa: Isa, seed: u64) {
    let mut rng = Rng::new(seed);
    let Some(p) = mul_params::<T>(&mut rng) else {
        return;
    };
    let threads = rng.size(1, 3);
    // Equal shapes of any length (tails of every size).
    let len = rng.size(1, 300);
    let shape = [1, len];
    let (x, y) = (rng.codes::<T>(len), rng.codes::<T>(len));
    check_mul(
        isa,
        threads,
        &p,
        &x,
        &shape,
        &y,
        &shape,
        &shape,
        "same shape",
    );
    // Squeeze-and-excitation: [N, H, W, C] x [N, 1, 1, C], the gate on either side.
    let (nb, h, w, c) = (
        rng.size(1, 2),
        rng.size(1, 6),
        rng.size(1, 6),
        rng.pick(&[1, 2, 3, 7, 16, 33, 64, 65, 100]),
    );
    let big = [nb, h, w, c];
    let x = rng.codes::<T>(nb * h * w * c);
    let g = rng.codes::<T>(nb * c);
    check_mul(isa, threads, &p, &x, &big, &g, &[nb, 1, 1, c], &big, "gate");
    check_mul(
        isa,
        threads,
        &p,
        &g,
        &[nb, 1, 1, c],
        &x,
        &big,
        &big,
        "gate first",
    );
    // A row of channels, a scalar of rank 0 and of rank 1.
    check_mul(isa, threads, &p, &x, &big, &g[..c], &[c], &big, "row");
    check_mul(isa, threads, &p, &x, &big, &g[..1], &[], &big, "scalar");
    check_mul(
        isa,
        threads,
        &p,
        &g[..1],
        &[1],
        &x,
        &big,
        &big,
        "scalar first",
    );
    // Broadcast of a middle axis only: [N, H, 1, C].
    let m = rng.codes::<T>(nb * h * c);
    check_mul(isa, threads, &p, &x, &big, &m, &[nb, h, 1, c], &big, "mid");
    // Both operands broadcast: the reference's walk.
    let col = rng.codes::<T>(nb * h);
    check_mul(
        isa,
        threads,
        &p,
        &m,
        &[nb, h, 1, c],
        &col,
        &[nb, h, 1, 1],
        &[nb, h, 1, c],
        "column",
    );
    let wide = rng.codes::<T>(w);
    check_mul(
        isa,
        threads,
        &p,
        &m,
        &[nb, h, 1, c],
        &wide,
        &[1, 1, w, 1],
        &[nb, h, w, c],
        "outer product",
    );
}

tiers!(mul_random_shapes_and_params, |isa| {
    for s in 0..300 {
        random_mul::<u8>(isa, 20_000 + s);
        random_mul::<i8>(isa, 21_000 + s);
    }
});

/// An SE-sized gate over many pixels, split over threads (tasks of whole rows).
fn large_gate<T: Code8>(isa: Isa, seed: u64, threads: usize) {
    let mut rng = Rng::new(seed);
    let p = loop {
        if let Some(p) = mul_params::<T>(&mut rng) {
            break p;
        }
    };
    for c in [5, 72, 240] {
        let big = [2, 28, 29, c];
        let x = rng.codes::<T>(big.iter().product());
        let g = rng.codes::<T>(2 * c);
        check_mul(
            isa,
            threads,
            &p,
            &x,
            &big,
            &g,
            &[2, 1, 1, c],
            &big,
            "large gate",
        );
        let y = rng.codes::<T>(x.len());
        check_mul(
            isa,
            threads,
            &p,
            &x,
            &big,
            &y,
            &big,
            &big,
            "large same shape",
        );
    }
}

tiers!(mul_large_split_over_threads, |isa| {
    for s in 0..4 {
        large_gate::<u8>(isa, 22_000 + s, 1 + s as usize % 3);
        large_gate::<i8>(isa, 22_100 + s, 1 + (s as usize + 1) % 3);
    }
});

fn check_hard_swish<T: Code8>(isa: Isa, threads: usize, p: &HardSwishParams, x: &[T]) {
    let mut want = vec![T::default(); x.len()];
    reference::hard_swish(x, p, &mut want);
    let mut got = vec![T::default(); x.len()];
    gemm::hard_swish(isa, threads, x, p, &mut got);
    assert_same(&got, &want, || {
        format!(
            "{isa} hard swish, {} codes, {threads} threads: {p:?}",
            x.len()
        )
    });
}

/// Every code (four times, then a tail), so each lane sees each code.
fn all_codes<T: Code8>(rng: &mut Rng) -> Vec<T> {
    let mut x: Vec<T> = (0..4)
        .flat_map(|_| T::MIN..=T::MAX)
        .map(T::from_i32_saturating)
        .collect();
    let tail = rng.size(0, 40);
    x.extend(rng.codes::<T>(tail));
    x
}

fn random_hard_swish<T: Code8>(isa: Isa, seed: u64) {
    let mut rng = Rng::new(seed);
    let threads = rng.size(1, 3);
    // Parameters as models give them: any scales, including outputs so coarse that the
    // output exponent is -16 or below (the truncated mask).
    let (pin, mut pout) = (params::<T>(&mut rng), params::<T>(&mut rng));
    if rng.chance(0.2) {
        pout.scale = pin.scale / 128.0 * 2f32.powi(rng.int(15, 24));
    }
    if let Ok(p) = HardSwishParams::new(pin, pout) {
        let x = all_codes::<T>(&mut rng);
        check_hard_swish(isa, threads, &p, &x);
    }
    // Raw parameters: any int16 multipliers (`MIN * MIN` saturates), zero points off the type
    // (the int16 narrowing wraps them), every exponent the vector path takes.
    let (m_out, m_relu) = (rng.int(i16::MIN, i16::MAX), rng.int(i16::MIN, i16::MAX));
    let p = HardSwishParams {
        input_zero_point: rng.int(-400, 400),
        output_zero_point: rng.int(-400, 400),
        output_multiplier: rng.pick(&[i16::MIN, i16::MAX, 0, -1, m_out]),
        output_exponent: rng.int(-31, 0),
        reluish_multiplier: rng.pick(&[i16::MIN, i16::MAX, 0, 1, m_relu]),
        reluish_exponent: rng.int(-31, 31),
    };
    let x = all_codes::<T>(&mut rng);
    check_hard_swish(isa, threads, &p, &x);
    // A short run: below the portable tier's table size, and mostly the vector tails.
    let short = rng.size(1, 100);
    check_hard_swish(isa, threads, &p, &x[200..200 + short]);
}

tiers!(hard_swish_every_code_random_params, |isa| {
    for s in 0..400 {
        random_hard_swish::<u8>(isa, 23_000 + s);
        random_hard_swish::<i8>(isa, 24_000 + s);
    }
});

tiers!(hard_swish_large_split_over_threads, |isa| {
    let mut rng = Rng::new(25_000);
    let p = HardSwishParams::new(
        QuantParams {
            scale: 0.05,
            zero_point: 3,
        },
        QuantParams {
            scale: 0.03,
            zero_point: -100,
        },
    )
    .unwrap();
    let x = rng.codes::<i8>(112 * 112 * 16 + 5);
    for threads in 1..=3 {
        check_hard_swish(isa, threads, &p, &x);
    }
});

fn check_quantize<T: Code8>(
    isa: Isa,
    threads: usize,
    x: &[f32],
    p: QuantParams,
    range: (i32, i32),
) {
    let mut want = vec![T::default(); x.len()];
    reference::quantize_to(x, p, range, &mut want);
    let mut got = vec![T::default(); x.len()];
    gemm::quantize(isa, threads, x, p, range, &mut got);
    assert_same(&got, &want, || {
        format!(
            "{isa} quantize, {} reals, {threads} threads: {p:?} codes {range:?}",
            x.len()
        )
    });
}

/// `n` reals at scale `s` with Quantize's corners: exact ties `(k + 0.5) s` of either sign
/// (exact quotients when `s` is a power of two) and their neighbours, NaN, infinities, huge and
/// subnormal values, reals past either end of the codes, and plain random ones.
fn quantize_reals(rng: &mut Rng, s: f32, z: i32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let k = rng.int(-300i32, 300) as f32;
            match rng.int(0, 11) {
                0 | 1 => (k + 0.5) * s,
                2 => {
                    let t = (k + 0.5) * s;
                    f32::from_bits(t.to_bits().wrapping_add(rng.pick(&[1, u32::MAX])))
                }
                3 => rng.pick(&[f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY]),
                4 => rng.pick(&[f32::MAX, f32::MIN, 3e9, -3e9, 2.2e9 * s, -2.2e9 * s]),
                5 => {
                    let sub = f32::from_bits(rng.int(1u32, 0x007f_ffff));
                    if rng.chance(0.5) {
                        -sub
                    } else {
                        sub
                    }
                }
                6 => rng.pick(&[0.0, -0.0, s * 0.5, -s * 0.5, s * 1.5, -s * 1.5]),
                7 => (k * 8.0 - z as f32) * s,
                8 => k * s,
                9 => rng.pick(&[16777216.0, 16777215.0, -16777216.0, 8388608.5, -8388607.5]) * s,
                _ => (rng.unit() as f32 * 2.0 - 1.0) * 300.0 * s,
            }
        })
        .collect()
}

fn random_quantize<T: Code8>(isa: Isa, seed: u64) {
    let mut rng = Rng::new(seed);
    let threads = rng.size(1, 3);
    let scale = if rng.chance(0.5) {
        2f32.powi(rng.int(-12, 4))
    } else {
        scale(&mut rng)
    };
    // Zero points of the codes, far off them within the vector path's ±2^23, and beyond it.
    let zero_point = match rng.int(0, 5) {
        0 => rng.pick(&[1 << 23, -(1 << 23), (1 << 23) + 1, i32::MIN, i32::MAX]),
        1 => rng.int(-5000, 5000),
        _ => rng.zero_point::<T>(),
    };
    let p = QuantParams { scale, zero_point };
    // The type's codes, a narrowed range (a 4-bit activation), one code, or bounds off the type.
    let range = match rng.int(0, 4) {
        0 => (T::MIN, T::MAX),
        1 => (T::MIN, T::MIN + 15),
        2 => {
            let c = rng.code_in(T::MIN, T::MAX);
            (c, c)
        }
        3 => (T::MIN - rng.int(0, 1000), T::MAX + rng.int(0, 1000)),
        _ => {
            let (a, b) = (rng.code_in(T::MIN, T::MAX), rng.code_in(T::MIN, T::MAX));
            (a.min(b), a.max(b))
        }
    };
    let any = rng.size(0, 300);
    let n = rng.pick(&[0, 1, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129, 1000, any]);
    let x = quantize_reals(&mut rng, scale, zero_point, n);
    check_quantize::<T>(isa, threads, &x, p, range);
}

tiers!(quantize_corners_random_params, |isa| {
    for s in 0..600 {
        random_quantize::<u8>(isa, 26_000 + s);
        random_quantize::<i8>(isa, 27_000 + s);
    }
});

tiers!(quantize_large_split_over_threads, |isa| {
    let mut rng = Rng::new(28_000);
    let p = QuantParams {
        scale: 1.0 / 64.0,
        zero_point: 128,
    };
    let x = quantize_reals(&mut rng, p.scale, p.zero_point, 224 * 224 * 3 + 5);
    for threads in 1..=3 {
        check_quantize::<u8>(isa, threads, &x, p, (0, 255));
        check_quantize::<i8>(
            isa,
            threads,
            &x,
            QuantParams { zero_point: 0, ..p },
            (-128, 127),
        );
    }
});

const MODES: [ResizeMode; 3] = [
    ResizeMode {
        align_corners: false,
        half_pixel_centers: false,
    },
    ResizeMode {
        align_corners: true,
        half_pixel_centers: false,
    },
    ResizeMode {
        align_corners: false,
        half_pixel_centers: true,
    },
];

#[allow(clippy::too_many_arguments)]
fn check_resize<T: Code8>(
    isa: Isa,
    threads: usize,
    x: &[T],
    ishape: [usize; 4],
    mode: ResizeMode,
    arithmetic: BilinearArithmetic,
    oshape: [usize; 4],
) {
    let n: usize = oshape.iter().product();
    let mut want = vec![T::default(); n];
    reference::resize_bilinear(x, ishape, mode, arithmetic, &mut want, oshape);
    let mut got = vec![T::default(); n];
    gemm::resize_bilinear(isa, threads, x, ishape, mode, arithmetic, &mut got, oshape);
    assert_same(&got, &want, || {
        format!("{isa} resize {ishape:?} -> {oshape:?} {mode:?} {arithmetic:?}, {threads} threads")
    });
}

fn random_resize<T: Code8>(isa: Isa, seed: u64) {
    let mut rng = Rng::new(seed);
    let (n, h, w) = (rng.size(1, 2), rng.size(1, 9), rng.size(1, 9));
    let c = rng.pick(&[1, 2, 3, 5, 8, 16, 21, 33]);
    let (oh, ow) = (rng.size(1, 20), rng.size(1, 20));
    let x = rng.codes::<T>(n * h * w * c);
    let threads = rng.size(1, 3);
    for mode in MODES {
        for arithmetic in [BilinearArithmetic::Integer, BilinearArithmetic::Float] {
            check_resize(
                isa,
                threads,
                &x,
                [n, h, w, c],
                mode,
                arithmetic,
                [n, oh, ow, c],
            );
        }
    }
}

tiers!(resize_bilinear_random_geometry, |isa| {
    for s in 0..150 {
        random_resize::<u8>(isa, 26_000 + s);
        random_resize::<i8>(isa, 27_000 + s);
    }
});

tiers!(resize_bilinear_deeplab_sized, |isa| {
    // DeepLab's logits upscale (33x33 to 8x) and an ASPP-sized one, split over threads.
    let mut rng = Rng::new(28_000);
    let x8 = rng.codes::<i8>(33 * 33 * 21);
    let xu = rng.codes::<u8>(33 * 33 * 21);
    for (threads, mode) in [(1, MODES[0]), (3, MODES[1]), (2, MODES[2])] {
        let (i, o) = ([1, 33, 33, 21], [1, 257, 257, 21]);
        check_resize(isa, threads, &x8, i, mode, BilinearArithmetic::Integer, o);
        check_resize(isa, threads, &xu, i, mode, BilinearArithmetic::Float, o);
    }
    let x = rng.codes::<u8>(17 * 17 * 256);
    let (i, o) = ([1, 17, 17, 256], [1, 65, 65, 256]);
    check_resize(isa, 2, &x, i, MODES[2], BilinearArithmetic::Float, o);
});
