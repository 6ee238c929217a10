//! Every fast tier the CPU has against the reference kernels, bit for bit (tolerance 0): GEMM
//! (as fully connected), convolution, depthwise convolution, on random and worst-case inputs.
//!
//! `tiers!` declares a test once and runs it on every tier; a tier this CPU lacks is skipped
//! with a loud message on stderr, and fails the test when `INTQ_REQUIRE_TIERS` names it.

use intq_kernels::gemm::{Code8, Conv2dPlan, DepthwisePlan, FullyConnectedPlan};
use intq_kernels::{reference, ConvParams, Isa, Multipliers, OutputStage, Padding};
use intq_quant::QuantizedMultiplier;
use proptest::prelude::*;

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

// Seeded per case so every failure reproduces.
use intq_testutil::TestRng as Rng;

/// The kernels' own draws, beyond the shared ones.
trait KernelDraws {
    fn any_zero_point<T: Code8>(&mut self, in_range_only: bool) -> i32;
    fn multiplier(&mut self, acc_mag: f64) -> QuantizedMultiplier;
}

impl KernelDraws for Rng {
    /// A zero point: in the code range usually, sometimes far outside it (the reference
    /// accepts any int32 and wraps).
    fn any_zero_point<T: Code8>(&mut self, in_range_only: bool) -> i32 {
        match self.int(0, if in_range_only { 3 } else { 5 }) {
            0 => T::MIN,
            1 => T::MAX,
            2 | 3 => self.int(T::MIN, T::MAX),
            4 => self.int(-70_000, 70_000),
            _ => self.pick(&[i32::MIN, i32::MAX, i32::MIN + 1, -1 << 20]),
        }
    }
    /// A multiplier: mostly one that maps accumulators of about `acc_mag` to mid-range codes
    /// (where every rounding step shows in the output), sometimes any binade or an extreme.
    fn multiplier(&mut self, acc_mag: f64) -> QuantizedMultiplier {
        let extreme = |m0, shift| QuantizedMultiplier { m0, shift };
        let m = match self.int(0, 19) {
            0 => return extreme(0, 0),
            1 => return extreme(i32::MAX, 31),
            2 => return extreme(1 << 30, -31),
            3 => return QuantizedMultiplier::ONE,
            4..=6 => 2f64.powf(self.int(-4000, 400) as f64 / 100.0),
            _ => 2f64.powf(self.int(-300, 700) as f64 / 100.0) / acc_mag.max(1.0),
        };
        QuantizedMultiplier::from_real(m.min(2f64.powi(30))).unwrap()
    }
}

/// `padding` resolved for an `ih x iw` input and a `kh x kw` window: the output size and the
/// geometry the kernels take; `None` when the window does not fit.
fn geometry(
    padding: Padding,
    input: (usize, usize),
    window: (usize, usize),
    (sh, sw): (usize, usize),
    (dh, dw): (usize, usize),
) -> Option<((usize, usize), ConvParams)> {
    let (out, pad) = padding.resolve(input, window, (sh, sw), (dh, dw))?;
    let params = ConvParams {
        stride_h: sh,
        stride_w: sw,
        dilation_h: dh,
        dilation_w: dw,
        padding: pad,
    };
    Some((out, params))
}

/// Weight zero points, one for the tensor or one per channel (even odds), each from `draw`.
fn weight_zero_points(
    rng: &mut Rng,
    channels: usize,
    mut draw: impl FnMut(&mut Rng) -> i32,
) -> Vec<i32> {
    if rng.int(0, 1) == 0 {
        vec![draw(rng)]
    } else {
        (0..channels).map(|_| draw(rng)).collect()
    }
}

/// The typical size of `Σ_k (x - zx)(w - zw)` over `k` terms: sqrt(k) * rms(x - zx) *
/// rms(w - zw), at most 2^31 (beyond that the int32 accumulator wraps to anything).
fn acc_mag<T: Code8>(x: &[T], zx: i32, w: &[T], zw: &[i32], k: usize) -> f64 {
    let rms = |v: &[T], z: i32| {
        let s: f64 = v
            .iter()
            .take(4096)
            .map(|c| ((c.to_i32() as f64) - z as f64).powi(2))
            .sum();
        (s / v.len().clamp(1, 4096) as f64).sqrt()
    };
    (((k as f64).sqrt() * rms(x, zx) * rms(w, zw[0])).max(1.0)).min(2f64.powi(31))
}

/// A random output stage for `n` channels of `T`.
struct Stage {
    bias: Option<Vec<i32>>,
    mults: Vec<QuantizedMultiplier>,
    zout: i32,
    cmin: i32,
    cmax: i32,
}

impl Stage {
    /// `acc_mag`: the typical size of the accumulators the stage will see.
    fn random<T: Code8>(rng: &mut Rng, n: usize, acc_mag: f64) -> Stage {
        let bias = (rng.int(0, 3) > 0).then(|| {
            (0..n)
                .map(|_| match rng.int(0, 6) {
                    0 => i32::MAX,
                    1 => i32::MIN,
                    2 | 3 => rng.int(-1 << 24, 1 << 24),
                    _ => rng.int(-(acc_mag as i64), acc_mag as i64) as i32,
                })
                .collect()
        });
        let per_channel = rng.int(0, 1) == 1;
        let mults = if per_channel {
            (0..n).map(|_| rng.multiplier(acc_mag)).collect()
        } else {
            vec![rng.multiplier(acc_mag)]
        };
        let zout = match rng.int(0, 5) {
            0 => i32::MAX,
            1 => i32::MIN,
            _ => rng.int(T::MIN, T::MAX),
        };
        let a = rng.int(T::MIN, T::MAX);
        let b = rng.int(T::MIN, T::MAX);
        let (cmin, cmax) = if rng.int(0, 2) == 0 {
            (T::MIN, T::MAX)
        } else {
            (a.min(b), a.max(b))
        };
        Stage {
            bias,
            mults,
            zout,
            cmin,
            cmax,
        }
    }
    fn get(&self) -> OutputStage<'_> {
        OutputStage {
            bias: self.bias.as_deref(),
            multipliers: if self.mults.len() == 1 {
                Multipliers::PerTensor(self.mults[0])
            } else {
                Multipliers::PerChannel(&self.mults)
            },
            output_zero_point: self.zout,
            clamp_min: self.cmin,
            clamp_max: self.cmax,
        }
    }
}

/// Fails naming the first differing element (the vectors can be long).
fn assert_same<T: Code8>(got: &[T], want: &[T], what: impl Fn() -> String) {
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
        panic!(
            "{}: element {i} is {:?}, reference {:?}",
            what(),
            got[i],
            want[i]
        );
    }
    assert_eq!(got.len(), want.len());
}

/// Fully connected (= GEMM) on `isa` against the reference, for given codes.
#[allow(clippy::too_many_arguments)]
fn check_gemm<T: Code8>(
    isa: Isa,
    a: &[T],
    w: &[T],
    m: usize,
    n: usize,
    k: usize,
    zin: i32,
    zw: &[i32],
    stage: &Stage,
    threads: usize,
) {
    let st = stage.get();
    let mut want = vec![T::default(); m * n];
    reference::fully_connected(a, m, k, zin, w, n, zw, &st, &mut want);
    let plan = FullyConnectedPlan::new(w, n, k, zw, zin, &st, isa);
    let mut got = vec![T::default(); m * n];
    intq_kernels::gemm::with_threads(threads, || plan.run(a, m, &mut got, threads));
    if got != want {
        let i = got.iter().zip(&want).position(|(g, w)| g != w).unwrap();
        panic!(
            "{isa} gemm {m}x{n}x{k} {} differs at row {} col {}: got {:?} want {:?} \
             (zin {zin}, zw {:?}, mult {:?}, zout {}, clamp {}..={})",
            std::any::type_name::<T>(),
            i / n,
            i % n,
            got[i],
            want[i],
            &zw[..zw.len().min(4)],
            &stage.mults[..stage.mults.len().min(2)],
            stage.zout,
            stage.cmin,
            stage.cmax
        );
    }
}

fn random_gemm<T: Code8>(isa: Isa, seed: u64, m: usize, n: usize, k: usize) {
    let mut rng = Rng::new(seed);
    let a = rng.codes::<T>(m * k);
    let w = rng.codes::<T>(n * k);
    let zin = rng.any_zero_point::<T>(false);
    let zw = weight_zero_points(&mut rng, n, |r| r.any_zero_point::<T>(false));
    let stage = Stage::random::<T>(&mut rng, n, acc_mag(&a, zin, &w, &zw, k));
    check_gemm(isa, &a, &w, m, n, k, zin, &zw, &stage, 1);
}

tiers!(gemm_random_small_shapes_u8_and_i8, |isa| {
    let mut rng = Rng::new(7);
    for case in 0..120 {
        let (m, n, k) = (rng.size(1, 67), rng.size(1, 67), rng.size(1, 67));
        random_gemm::<u8>(isa, 1000 + case, m, n, k);
        random_gemm::<i8>(isa, 2000 + case, m, n, k);
    }
});

tiers!(gemm_larger_shapes, |isa| {
    for (i, &(m, n, k)) in [
        (130, 97, 300),
        (64, 256, 1152),
        (1, 1000, 1024),
        (200, 33, 4099),
        // K split into blocks that are not a multiple of the tiles' group, several row tiles
        // and a partial panel.
        (100, 70, 1100),
    ]
    .iter()
    .enumerate()
    {
        random_gemm::<u8>(isa, 3000 + i as u64, m, n, k);
        random_gemm::<i8>(isa, 4000 + i as u64, m, n, k);
    }
});

// K around the group and the K-block sizes (AMX: blocks up to 512 k, and up to 1,024 k where M
// and N are both 512 or more), several row tiles with a partial last one (a tile's output
// stage runs during the next tile's multiplies, from two alternating buffers), symmetric and
// asymmetric weights, 1 and 2 threads.
tiers!(gemm_blocking_edges, |isa| {
    let mut rng = Rng::new(2024);
    for (i, &(m, n, k)) in [
        (97, 45, 1),
        (70, 33, 63),
        (96, 64, 64),
        (65, 40, 65),
        (130, 70, 1024),
        (100, 33, 1025),
        (67, 50, 2049),
        (40, 35, 4097),
        (530, 515, 1024),
        (513, 545, 1025),
        (520, 512, 2049),
        (512, 530, 65),
    ]
    .iter()
    .enumerate()
    {
        let a = rng.codes::<i8>(m * k);
        let w = rng.codes::<i8>(n * k);
        let zin = rng.any_zero_point::<i8>(false);
        let zw = if i % 2 == 0 {
            vec![0]
        } else {
            weight_zero_points(&mut rng, n, |r| r.any_zero_point::<i8>(false))
        };
        let stage = Stage::random::<i8>(&mut rng, n, acc_mag(&a, zin, &w, &zw, k));
        check_gemm(isa, &a, &w, m, n, k, zin, &zw, &stage, 1 + i % 2);
        let a = rng.codes::<u8>(m * k);
        let w = rng.codes::<u8>(n * k);
        let zin = rng.any_zero_point::<u8>(true);
        let zw = vec![128];
        let stage = Stage::random::<u8>(&mut rng, n, acc_mag(&a, zin, &w, &zw, k));
        check_gemm(isa, &a, &w, m, n, k, zin, &zw, &stage, 2 - i % 2);
    }
});

// The AVX2 saturation worst case, and int32 wrap-around: every pair of products at the
// extreme (255 * -128 and 255 * 127 after the canonical mapping), K up to 32,768, at a batch
// of a few rows (the GEMV) and of more than one tile.
tiers!(gemm_worst_case_products_long_k, |isa| {
    for &(k, m) in &[
        (2usize, 3usize),
        (3, 3),
        (64, 3),
        (4097, 3),
        (32768, 3),
        (4097, 37),
        (32768, 37),
    ] {
        let n = 5;
        // u8: activations 255, weights 0 (w' = -128) and 255 (w' = 127).
        let a = vec![255u8; m * k];
        let w: Vec<u8> = (0..n * k)
            .map(|i| if (i / k) % 2 == 0 { 0 } else { 255 })
            .collect();
        let mut rng = Rng::new(k as u64);
        for _ in 0..4 {
            let stage = Stage::random::<u8>(&mut rng, n, 255.0 * 128.0 * k as f64);
            let zin = rng.any_zero_point::<u8>(false);
            check_gemm(isa, &a, &w, m, n, k, zin, &[0], &stage, 1);
            check_gemm(
                isa,
                &a,
                &w,
                m,
                n,
                k,
                0,
                &[rng.any_zero_point::<u8>(false)],
                &stage,
                1,
            );
        }
        // i8: activations 127 (a' = 255), weights -128 and 127.
        let a = vec![127i8; m * k];
        let w: Vec<i8> = (0..n * k)
            .map(|i| if (i / k) % 2 == 0 { -128 } else { 127 })
            .collect();
        for _ in 0..4 {
            let stage = Stage::random::<i8>(&mut rng, n, 255.0 * 128.0 * k as f64);
            check_gemm(
                isa,
                &a,
                &w,
                m,
                n,
                k,
                rng.any_zero_point::<i8>(false),
                &[0],
                &stage,
                1,
            );
        }
    }
});

tiers!(gemm_same_result_for_any_thread_count, |isa| {
    let mut rng = Rng::new(99);
    let (m, n, k) = (150, 70, 200);
    let a = rng.codes::<i8>(m * k);
    let w = rng.codes::<i8>(n * k);
    let stage = Stage::random::<i8>(&mut rng, n, acc_mag(&a, 3, &w, &[0], k));
    for threads in [1, 2, 3, 8] {
        check_gemm(isa, &a, &w, m, n, k, 3, &[0], &stage, threads);
    }
    // One row: the work splits over columns instead.
    let a1 = &a[..k];
    for threads in [1, 2, 5] {
        check_gemm(isa, a1, &w, 1, n, k, -7, &[1], &stage, threads);
    }
});

// Batches of 1-4 rows (the AVX-512 tiers' GEMV): K below, at and past a 64-code group and not
// a multiple of it, N across panel edges, per-channel zero points, split over threads.
tiers!(gemm_few_rows, |isa| {
    let mut rng = Rng::new(4242);
    for case in 0..40u64 {
        let m = 1 + case as usize % 4;
        let k = [1, 3, 4, 63, 64, 65, 130, 1280, 700][case as usize % 9];
        let n = [1, 31, 32, 33, 100, 1000][case as usize % 6];
        let threads = 1 + case as usize % 3;
        let a = rng.codes::<i8>(m * k);
        let w = rng.codes::<i8>(n * k);
        let zin = rng.any_zero_point::<i8>(false);
        let zw = weight_zero_points(&mut rng, n, |r| r.any_zero_point::<i8>(false));
        let stage = Stage::random::<i8>(&mut rng, n, acc_mag(&a, zin, &w, &zw, k));
        check_gemm(isa, &a, &w, m, n, k, zin, &zw, &stage, threads);
        let a = rng.codes::<u8>(m * k);
        let w = rng.codes::<u8>(n * k);
        let zin = rng.any_zero_point::<u8>(true);
        let zw = weight_zero_points(&mut rng, n, |r| r.any_zero_point::<u8>(true));
        let stage = Stage::random::<u8>(&mut rng, n, acc_mag(&a, zin, &w, &zw, k));
        check_gemm(isa, &a, &w, m, n, k, zin, &zw, &stage, threads);
    }
});

// Symmetric weights (zero point 0 for int8, 128 for uint8: canonical zero point 0), per tensor
// and per channel, where the tiles drop the row-sum term of the output stage.
tiers!(gemm_symmetric_weights, |isa| {
    let mut rng = Rng::new(77);
    for case in 0..40 {
        let (m, n, k) = (rng.size(1, 30), rng.size(1, 40), rng.size(1, 70));
        let per_channel = case % 2 == 0;
        let zws = |z: i32| if per_channel { vec![z; n] } else { vec![z] };
        let a = rng.codes::<i8>(m * k);
        let w = rng.codes::<i8>(n * k);
        let zin = rng.any_zero_point::<i8>(false);
        let stage = Stage::random::<i8>(&mut rng, n, acc_mag(&a, zin, &w, &zws(0), k));
        check_gemm(isa, &a, &w, m, n, k, zin, &zws(0), &stage, 1);
        let au = rng.codes::<u8>(m * k);
        let wu = rng.codes::<u8>(n * k);
        let zin = rng.any_zero_point::<u8>(false);
        let stage = Stage::random::<u8>(&mut rng, n, acc_mag(&au, zin, &wu, &zws(128), k));
        check_gemm(isa, &au, &wu, m, n, k, zin, &zws(128), &stage, 1 + case % 2);
    }
});

// Every right shift with outputs in mid-range: a rounding slip in the requantization changes
// about one output in 2^shift, so each shift gets accumulators spread over its whole scale.
tiers!(requantization_every_shift_mid_range, |isa| {
    let mut rng = Rng::new(31);
    for shift in -31..=31 {
        let (m, n, k) = (23, 37, 1 + (shift + 31) as usize % 3);
        let mult = QuantizedMultiplier {
            m0: rng.int(1 << 30, i32::MAX as i64) as i32,
            shift,
        };
        let span = (2f64.powi(8 - shift).min(2f64.powi(30))) as i64;
        for per_channel in [false, true] {
            let a = rng.codes::<i8>(m * k);
            let w = rng.codes::<i8>(n * k);
            let stage = Stage {
                bias: Some((0..n).map(|_| rng.int(-span, span) as i32).collect()),
                mults: if per_channel {
                    (0..n)
                        .map(|_| QuantizedMultiplier {
                            m0: rng.int(1 << 30, i32::MAX as i64) as i32,
                            shift,
                        })
                        .collect()
                } else {
                    vec![mult]
                },
                zout: rng.int(-20, 20),
                cmin: -128,
                cmax: 127,
            };
            check_gemm(
                isa,
                &a,
                &w,
                m,
                n,
                k,
                rng.int(-128, 127),
                &[rng.int(-128, 127)],
                &stage,
                1,
            );
            let au: Vec<u8> = a.iter().map(|&x| x as u8).collect();
            let wu: Vec<u8> = w.iter().map(|&x| x as u8).collect();
            let mut su = stage;
            su.cmin = 0;
            su.cmax = 255;
            su.zout += 128;
            check_gemm(
                isa,
                &au,
                &wu,
                m,
                n,
                k,
                rng.int(0, 255),
                &[rng.int(0, 255)],
                &su,
                1,
            );
        }
    }
});

fn random_conv<T: Code8>(isa: Isa, seed: u64, threads: usize) {
    random_conv_padded::<T>(isa, seed, threads, false)
}

/// `explicit`: random explicit paddings of 0 to 4 per side (wider than the filter included, so
/// whole filter rows and windows fall in the padding), as the zoo's PyTorch-style convs have.
fn random_conv_padded<T: Code8>(isa: Isa, seed: u64, threads: usize, explicit: bool) {
    let mut rng = Rng::new(seed);
    let (b, ih, iw, ic, oc) = (
        rng.size(1, 2),
        rng.size(1, 9),
        rng.size(1, 9),
        rng.size(1, 19),
        rng.size(1, 40),
    );
    let (kh, kw) = (rng.size(1, 4).min(ih), rng.size(1, 4).min(iw));
    let mut params_padding = [Padding::Same, Padding::Valid][rng.size(0, 1)];
    if explicit {
        params_padding = Padding::Explicit {
            top: rng.size(0, 4),
            bottom: rng.size(0, 4),
            left: rng.size(0, 4),
            right: rng.size(0, 4),
        };
    }
    let (sh, sw, dh, dw) = (
        rng.size(1, 3),
        rng.size(1, 3),
        rng.size(1, 2),
        rng.size(1, 2),
    );
    let Some(((oh, ow), params)) = geometry(params_padding, (ih, iw), (kh, kw), (sh, sw), (dh, dw))
    else {
        return;
    };
    let shapes = ([b, ih, iw, ic], [oc, kh, kw, ic], [b, oh, ow, oc]);
    check_random_conv::<T>(
        isa,
        &mut rng,
        shapes,
        params,
        threads,
        &format!("conv seed {seed}"),
    );
}

/// Draws operands for a convolution of these shapes (codes with the extremes over-represented,
/// zero points anywhere in the code range, per-tensor or per-channel weight zero points) and
/// checks `isa`'s plan, run on `threads` threads, against the reference.
fn check_random_conv<T: Code8>(
    isa: Isa,
    rng: &mut Rng,
    shapes: ([usize; 4], [usize; 4], [usize; 4]),
    params: ConvParams,
    threads: usize,
    what: &str,
) {
    let ([b, ih, iw, ic], [oc, kh, kw, _], _) = shapes;
    let input = rng.codes::<T>(b * ih * iw * ic);
    let filter = rng.codes::<T>(oc * kh * kw * ic);
    let zin = rng.any_zero_point::<T>(true);
    let zw = weight_zero_points(rng, oc, |r| r.any_zero_point::<T>(false));
    let conv = ConvCase {
        input: &input,
        filter: &filter,
        shapes,
        zin,
        zw: &zw,
        params,
    };
    let what = format!("{what}, {threads} threads");
    conv.assert_equals_reference(isa, rng, &what, |plan, out| {
        intq_kernels::gemm::with_threads(threads, || {
            plan.run(&input, shapes.0, out, shapes.2, threads)
        })
    });
}

/// One convolution's operands, checked against `reference::conv2d` under a random output stage.
struct ConvCase<'a, T> {
    input: &'a [T],
    filter: &'a [T],
    /// Input, filter and output shapes.
    shapes: ([usize; 4], [usize; 4], [usize; 4]),
    zin: i32,
    zw: &'a [i32],
    params: ConvParams,
}

impl<T: Code8> ConvCase<'_, T> {
    /// Draws an output stage from `rng`, plans the conv for `isa`, runs it through `run` and
    /// asserts the result equals the reference byte for byte.
    fn assert_equals_reference(
        &self,
        isa: Isa,
        rng: &mut Rng,
        what: &str,
        run: impl FnOnce(&Conv2dPlan, &mut [T]),
    ) {
        let (ishape, fshape, oshape) = self.shapes;
        let [_, kh, kw, ic] = fshape;
        let (zin, zw, params) = (self.zin, self.zw, &self.params);
        let mag = acc_mag(self.input, zin, self.filter, zw, kh * kw * ic);
        let stage = Stage::random::<T>(rng, fshape[0], mag);
        let st = stage.get();
        let mut want = vec![T::default(); oshape.iter().product()];
        reference::conv2d(
            self.input,
            ishape,
            zin,
            self.filter,
            fshape,
            zw,
            params,
            &st,
            &mut want,
            oshape,
        );
        let plan = Conv2dPlan::new(self.filter, fshape, zw, zin, params, &st, isa);
        let mut got = vec![T::default(); want.len()];
        run(&plan, &mut got);
        assert_same(&got, &want, || {
            format!("{isa} {what}: {ishape:?} * {fshape:?} -> {oshape:?} {params:?} zin {zin}")
        });
    }
}

tiers!(conv_random_geometry, |isa| {
    for s in 0..60 {
        random_conv::<u8>(isa, 5000 + s, 1);
        random_conv::<i8>(isa, 6000 + s, 1 + (s as usize % 3));
    }
});

/// The im2col rows go straight into the packed panels in runs (a window row's in-bounds pixels,
/// the zero point either side): channel counts on and off the AVX2 tier's 8-code groups and the
/// VNNI tier's 4-code groups (1, 3, 4, 7, 8, 9, 12, 16, 17, 24, 32, 33), output channels over up
/// to three B panels (AMX's panels are VNNI's with K padded to 64, read by the same tile), explicit padding on each border alone and on all of them, stride
/// 1 and 2, dilation, and input zero points at both ends of the code range (the padding value).
/// The cases run back to back on one thread, so each reuses scratch the previous one filled.
fn fused_im2col_case<T: Code8>(isa: Isa, rng: &mut Rng, ic: usize, pad: [usize; 4], stride: usize) {
    let (b, ih, iw, oc) = (
        rng.size(1, 2),
        rng.size(1, 11),
        rng.size(1, 11),
        rng.size(1, 70),
    );
    let (kh, kw) = (rng.size(1, 3), rng.size(1, 3));
    let dil = if rng.int(0, 4) == 0 { 2 } else { 1 };
    let padding = Padding::Explicit {
        top: pad[0],
        bottom: pad[1],
        left: pad[2],
        right: pad[3],
    };
    let Some(((oh, ow), params)) =
        geometry(padding, (ih, iw), (kh, kw), (stride, stride), (dil, dil))
    else {
        return;
    };
    let input = rng.codes::<T>(b * ih * iw * ic);
    let filter = rng.codes::<T>(oc * kh * kw * ic);
    let zin = [T::MIN, T::MAX, rng.int(T::MIN, T::MAX)][rng.size(0, 2)];
    let zw = vec![rng.any_zero_point::<T>(false)];
    let shapes = ([b, ih, iw, ic], [oc, kh, kw, ic], [b, oh, ow, oc]);
    // One to three threads: the layer's pixel chunks spread over the kernel team.
    let threads = 1 + (ic + params.padding.top) % 3;
    let conv = ConvCase {
        input: &input,
        filter: &filter,
        shapes,
        zin,
        zw: &zw,
        params,
    };
    conv.assert_equals_reference(isa, rng, "fused im2col", |plan, out| {
        plan.run(&input, shapes.0, out, shapes.2, threads)
    });
}

tiers!(conv_fused_im2col_runs_borders_and_zero_points, |isa| {
    let mut rng = Rng::new(4242);
    let borders = [
        [0, 0, 0, 0],
        [2, 0, 0, 0],
        [0, 2, 0, 0],
        [0, 0, 2, 0],
        [0, 0, 0, 2],
        [1, 1, 1, 1],
        [3, 1, 0, 4],
    ];
    for ic in [1, 3, 4, 7, 8, 9, 12, 16, 17, 24, 32, 33] {
        for pad in borders {
            for stride in [1, 2] {
                fused_im2col_case::<u8>(isa, &mut rng, ic, pad, stride);
                fused_im2col_case::<i8>(isa, &mut rng, ic, pad, stride);
            }
        }
    }
});

/// Implicit-GEMM convolutions (channels a multiple of 8, so every x86 tier takes that path)
/// over 3 to 6 small images: each pixel chunk maps the image rows its own windows read, so a
/// chunk may start inside one image, cover whole images and end inside another, on one to
/// three threads (one thread: a chunk is the whole batch).
fn implicit_conv_across_images<T: Code8>(isa: Isa, seed: u64) {
    let mut rng = Rng::new(seed);
    let (b, ih, iw, ic, oc) = (
        rng.size(3, 6),
        rng.size(1, 7),
        rng.size(1, 7),
        8 * rng.size(1, 3),
        rng.size(1, 40),
    );
    let (kh, kw) = (rng.size(1, 3).min(ih), rng.size(1, 3).min(iw));
    let padding = [Padding::Same, Padding::Valid][rng.size(0, 1)];
    let (s, d) = (rng.size(1, 2), rng.size(1, 2));
    let Some(((oh, ow), params)) = geometry(padding, (ih, iw), (kh, kw), (s, s), (d, 1)) else {
        return;
    };
    let shapes = ([b, ih, iw, ic], [oc, kh, kw, ic], [b, oh, ow, oc]);
    let threads = rng.size(1, 3);
    check_random_conv::<T>(
        isa,
        &mut rng,
        shapes,
        params,
        threads,
        &format!("implicit conv seed {seed}"),
    );
}

tiers!(conv_implicit_chunks_across_images, |isa| {
    for s in 0..40 {
        implicit_conv_across_images::<u8>(isa, 8000 + s);
        implicit_conv_across_images::<i8>(isa, 8100 + s);
    }
});

/// Stride-1 convolutions wide enough that a 32-pixel tile spans several output rows and the
/// pixels past each row's end (AMX's strided tile reads the padded image in place and stores
/// only the real pixels): channels from 3 to 192 (filter rows padded to whole 64-code steps, or
/// not), windows up to 5x5, dilation along y, explicit paddings, output channels over several
/// panels, one to three threads splitting the output rows of one to three images.
fn wide_stride1_conv<T: Code8>(isa: Isa, seed: u64) {
    let mut rng = Rng::new(seed);
    let ic = [3, 4, 16, 32, 48, 64, 128, 192][rng.size(0, 7)];
    let (kh, kw) = (rng.size(1, 5), rng.size(1, 5));
    let (b, ih, iw, oc) = (
        rng.size(1, 3),
        rng.size(kh, 20),
        rng.size(kw, 40),
        rng.size(1, 70),
    );
    let padding = Padding::Explicit {
        top: rng.size(0, 2),
        bottom: rng.size(0, 2),
        left: rng.size(0, 2),
        right: rng.size(0, 2),
    };
    let d = rng.size(1, 2);
    let Some(((oh, ow), params)) = geometry(padding, (ih, iw), (kh, kw), (1, 1), (d, 1)) else {
        return;
    };
    let shapes = ([b, ih, iw, ic], [oc, kh, kw, ic], [b, oh, ow, oc]);
    let threads = rng.size(1, 3);
    check_random_conv::<T>(
        isa,
        &mut rng,
        shapes,
        params,
        threads,
        &format!("wide stride-1 conv seed {seed}"),
    );
}

tiers!(conv_wide_stride1_tiles_span_rows, |isa| {
    for s in 0..30 {
        wide_stride1_conv::<u8>(isa, 9500 + s);
        wide_stride1_conv::<i8>(isa, 9600 + s);
    }
});

/// Output channels over several 64-column tiles (VNNI's 6 x 64 implicit tile reads two packed
/// panels at once), their count off 16, 32 and 64 so the last tile may end inside its first
/// panel; channels a multiple of 4 or a narrow stem's, windows 1x1 to 3x3, strides 1 and 2,
/// explicit paddings, one to three threads over one or two images.
fn many_panel_conv<T: Code8>(isa: Isa, seed: u64) {
    let mut rng = Rng::new(seed);
    let oc = [33, 40, 48, 64, 65, 96, 97, 100, 128, 150, 160, 200][rng.size(0, 11)];
    let ic = [3, 4, 8, 12, 20, 64, 68][rng.size(0, 6)];
    let k = rng.size(1, 3);
    let s = rng.size(1, 2);
    let (b, ih, iw) = (rng.size(1, 2), rng.size(k, 9), rng.size(k, 9));
    let padding = Padding::Explicit {
        top: rng.size(0, 1),
        bottom: rng.size(0, 1),
        left: rng.size(0, 1),
        right: rng.size(0, 1),
    };
    let Some(((oh, ow), params)) = geometry(padding, (ih, iw), (k, k), (s, s), (1, 1)) else {
        return;
    };
    let shapes = ([b, ih, iw, ic], [oc, k, k, ic], [b, oh, ow, oc]);
    let threads = rng.size(1, 3);
    check_random_conv::<T>(
        isa,
        &mut rng,
        shapes,
        params,
        threads,
        &format!("many-panel conv seed {seed}"),
    );
}

tiers!(conv_output_channels_over_many_panels, |isa| {
    for s in 0..40 {
        many_panel_conv::<u8>(isa, 9700 + s);
        many_panel_conv::<i8>(isa, 9800 + s);
    }
});

/// Layers of at most 16 output channels (VNNI's 16-row, one-vector implicit tile): pixel
/// counts around whole 16-row tiles (1, 15, 16, 17, 31, 32, 33 pixels in one image, or a few
/// images), channels a multiple of 4 and a stem's 3, windows 1x1 to 3x3, strides 1 and 2,
/// per-tensor or per-channel weight zero points, one to three threads.
fn narrow_output_conv<T: Code8>(isa: Isa, seed: u64) {
    let mut rng = Rng::new(seed);
    let oc = [1, 2, 7, 8, 15, 16][rng.size(0, 5)];
    let ic = [3, 4, 8, 12, 16, 20, 32, 48, 64][rng.size(0, 8)];
    let k = [1, 3][rng.size(0, 1)];
    let s = rng.size(1, 2);
    let (b, ih, iw) = if rng.int(0, 2) == 0 {
        (rng.size(2, 3), rng.size(1, 6), rng.size(1, 6))
    } else {
        // One row of `w` pixels (SAME padding keeps the size at stride 1).
        (1, 1, [1, 15, 16, 17, 31, 32, 33][rng.size(0, 6)])
    };
    let padding = [Padding::Same, Padding::Valid][rng.size(0, 1)];
    let Some(((oh, ow), params)) = geometry(padding, (ih, iw), (k, k), (s, s), (1, 1)) else {
        return;
    };
    let shapes = ([b, ih, iw, ic], [oc, k, k, ic], [b, oh, ow, oc]);
    let threads = rng.size(1, 3);
    check_random_conv::<T>(
        isa,
        &mut rng,
        shapes,
        params,
        threads,
        &format!("narrow-output conv seed {seed}"),
    );
}

tiers!(conv_narrow_outputs, |isa| {
    for s in 0..80 {
        narrow_output_conv::<u8>(isa, 9900 + s);
        narrow_output_conv::<i8>(isa, 9990 + s);
    }
});

/// Symmetric weights under a ReLU or ReLU6 clamp (floor at the output zero point), the flags of
/// nearly every quantized layer: VNNI's output stage takes a path with them as constants and,
/// under a floor of at least 0, without the rounding's sign term. 1x1 and 3x3 windows over 16
/// or 32 channels, 16 to 96 output channels (whole 16-, 32- and 64-column tiles and a partial
/// one), and clamps low enough to reach the floor.
fn relu_symmetric_conv<T: Code8>(isa: Isa, seed: u64) {
    let mut rng = Rng::new(seed);
    let (b, h, w) = (rng.size(1, 2), rng.size(1, 9), rng.size(1, 9));
    let ic = [16, 32][rng.size(0, 1)];
    let oc = [16, 32, 40, 64, 96][rng.size(0, 4)];
    let k = [1, 3][rng.size(0, 1)];
    let Some(((oh, ow), params)) = geometry(Padding::Same, (h, w), (k, k), (1, 1), (1, 1)) else {
        return;
    };
    let shapes = ([b, h, w, ic], [oc, k, k, ic], [b, oh, ow, oc]);
    let input = rng.codes::<T>(b * h * w * ic);
    let filter = rng.codes::<T>(oc * k * k * ic);
    let zin = rng.int(T::MIN, T::MAX);
    let zw = [if T::A_OFFSET != 0 { 0 } else { 128 }];
    let mag = acc_mag(&input, zin, &filter, &zw, k * k * ic);
    let mut stage = Stage::random::<T>(&mut rng, oc, mag);
    stage.zout = rng.int(T::MIN, T::MAX);
    stage.cmin = stage.zout;
    stage.cmax = [T::MAX, (stage.zout + 6).min(T::MAX)][rng.size(0, 1)];
    let st = stage.get();
    let mut want = vec![T::default(); b * oh * ow * oc];
    reference::conv2d(
        &input, shapes.0, zin, &filter, shapes.1, &zw, &params, &st, &mut want, shapes.2,
    );
    let plan = Conv2dPlan::new(&filter, shapes.1, &zw, zin, &params, &st, isa);
    let mut got = vec![T::default(); want.len()];
    plan.run(&input, shapes.0, &mut got, shapes.2, 1);
    assert_same(&got, &want, || {
        format!("{isa} relu symmetric conv seed {seed}: {shapes:?} zin {zin}")
    });
}

tiers!(conv_relu_symmetric_weights, |isa| {
    for s in 0..60 {
        relu_symmetric_conv::<u8>(isa, 10_100 + s);
        relu_symmetric_conv::<i8>(isa, 10_200 + s);
    }
});

/// Inputs whose channels are off the 8-code group (1 to 15 but 8) under windows up to 7x7
/// (ResNet-18's stem), strides 1 and 2, paddings up to 3: on AVX2 each filter row's run is
/// padded to whole groups with zero weights and read straight from the image, the padding
/// reading the next pixel's codes; uint8 (weights offset by 128) and int8, 1 to 3 threads.
fn narrow_input_conv<T: Code8>(isa: Isa, seed: u64) {
    let mut rng = Rng::new(seed);
    let ic = [1, 2, 3, 4, 5, 6, 7, 9, 11, 15][rng.size(0, 9)];
    let (kh, kw) = (rng.size(1, 7), rng.size(2, 7));
    let (b, ih, iw, oc) = (
        rng.size(1, 2),
        rng.size(kh, 12),
        rng.size(kw, 12),
        rng.size(1, 40),
    );
    let s = rng.size(1, 2);
    let padding = Padding::Explicit {
        top: rng.size(0, 3),
        bottom: rng.size(0, 3),
        left: rng.size(0, 3),
        right: rng.size(0, 3),
    };
    let Some(((oh, ow), params)) = geometry(padding, (ih, iw), (kh, kw), (s, s), (1, 1)) else {
        return;
    };
    let shapes = ([b, ih, iw, ic], [oc, kh, kw, ic], [b, oh, ow, oc]);
    let threads = rng.size(1, 3);
    check_random_conv::<T>(
        isa,
        &mut rng,
        shapes,
        params,
        threads,
        &format!("narrow-input conv seed {seed}"),
    );
}

tiers!(conv_narrow_inputs_row_padded, |isa| {
    for s in 0..60 {
        narrow_input_conv::<u8>(isa, 9000 + s);
        narrow_input_conv::<i8>(isa, 9100 + s);
    }
});

/// 1x1 convolutions with channels a multiple of 8 (MobileNetV2's expansions and projections):
/// AVX2 and VNNI run them as implicit GEMMs over the mapped pixels, AMX and NEON as a packed GEMM;
/// K up to 1,024, output channels over several panels, 1 to 3 threads.
fn pointwise_conv<T: Code8>(isa: Isa, seed: u64) {
    let mut rng = Rng::new(seed);
    let (b, h, w) = (rng.size(1, 3), rng.size(1, 9), rng.size(1, 9));
    let ic = 8 * [1, 2, 3, 12, 128][rng.size(0, 4)];
    let oc = rng.size(1, 70);
    let Some(((oh, ow), params)) = geometry(Padding::Valid, (h, w), (1, 1), (1, 1), (1, 1)) else {
        return;
    };
    let shapes = ([b, h, w, ic], [oc, 1, 1, ic], [b, oh, ow, oc]);
    let threads = rng.size(1, 3);
    check_random_conv::<T>(
        isa,
        &mut rng,
        shapes,
        params,
        threads,
        &format!("1x1 conv seed {seed}"),
    );
}

tiers!(conv_pointwise, |isa| {
    for s in 0..40 {
        pointwise_conv::<u8>(isa, 9200 + s);
        pointwise_conv::<i8>(isa, 9300 + s);
    }
});

/// 1x1 convolutions with symmetric weights (TFLite's int8 scheme; uint8 weights with zero point
/// 128), which AMX runs on its pointwise tile reading the pixels in place: every channel count
/// from 1 (not a multiple of 4, rows overlapping within a 64-code step) to 200 (steps past one
/// group), pixel counts around whole 32-row tiles (the last tile or two copied before they are
/// read), output channels over several panels, 1 to 3 threads.
fn pointwise_symmetric<T: Code8>(isa: Isa, seed: u64) {
    pointwise_symmetric_oc::<T>(isa, seed, None)
}

/// [`pointwise_symmetric`] with `oc` output channels when given.
fn pointwise_symmetric_oc<T: Code8>(isa: Isa, seed: u64, oc: Option<usize>) {
    let mut rng = Rng::new(seed);
    let (b, h, w) = (rng.size(1, 2), rng.size(1, 12), rng.size(1, 12));
    let ic = [1, 3, 4, 16, 24, 32, 63, 64, 65, 96, 144, 200][rng.size(0, 11)];
    let oc = oc.unwrap_or_else(|| rng.size(1, 100));
    let shapes = ([b, h, w, ic], [oc, 1, 1, ic], [b, h, w, oc]);
    let params = geometry(Padding::Valid, (h, w), (1, 1), (1, 1), (1, 1))
        .expect("a 1x1 window fits")
        .1;
    let input = rng.codes::<T>(b * h * w * ic);
    let filter = rng.codes::<T>(oc * ic);
    let zin = rng.any_zero_point::<T>(true);
    let zw = [if T::A_OFFSET != 0 { 0 } else { 128 }];
    let threads = rng.size(1, 3);
    let conv = ConvCase {
        input: &input,
        filter: &filter,
        shapes,
        zin,
        zw: &zw,
        params,
    };
    conv.assert_equals_reference(
        isa,
        &mut rng,
        &format!("symmetric 1x1 conv seed {seed}, {threads} threads"),
        |plan, out| {
            intq_kernels::gemm::with_threads(threads, || {
                plan.run(&input, shapes.0, out, shapes.2, threads)
            })
        },
    );
}

tiers!(conv_pointwise_symmetric, |isa| {
    for s in 0..60 {
        pointwise_symmetric::<u8>(isa, 9700 + s);
        pointwise_symmetric::<i8>(isa, 9800 + s);
    }
});

// Last panels of fewer columns than the tile's (24 of an 8 x 32 tile, 16 or 40 of a 6 x 64
// one, 1 to 15 of either), finished from registers with masked stores: whole and partial
// row tiles, 1 to 3 threads.
tiers!(conv_pointwise_partial_panel, |isa| {
    for (i, oc) in [17, 24, 31, 33, 40, 47, 80, 100, 144, 150]
        .into_iter()
        .enumerate()
    {
        for s in 0..6 {
            let seed = 9900 + 10 * i as u64 + s;
            pointwise_symmetric_oc::<u8>(isa, seed, Some(oc));
            pointwise_symmetric_oc::<i8>(isa, seed + 5000, Some(oc));
        }
    }
});

tiers!(conv_explicit_padding, |isa| {
    for s in 0..60 {
        random_conv_padded::<u8>(isa, 7000 + s, 1, true);
        random_conv_padded::<i8>(isa, 7100 + s, 1 + (s as usize % 3), true);
    }
});

/// Runs one depthwise case, with a random output stage for its accumulator size drawn from
/// `rng`, through `isa`'s plan on `threads` threads and asserts it equals
/// `reference::depthwise_conv2d`; `what` names the case in a failure.
#[allow(clippy::too_many_arguments)]
fn check_depthwise<T: Code8>(
    isa: Isa,
    threads: usize,
    input: &[T],
    ishape: [usize; 4],
    zin: i32,
    filter: &[T],
    fshape: [usize; 4],
    zw: &[i32],
    dm: usize,
    params: &ConvParams,
    rng: &mut Rng,
    oshape: [usize; 4],
    what: impl Fn() -> String,
) {
    let [_, kh, kw, oc] = fshape;
    let stage = Stage::random::<T>(rng, oc, acc_mag(input, zin, filter, zw, kh * kw));
    let st = &stage.get();
    let mut want = vec![T::default(); oshape.iter().product()];
    reference::depthwise_conv2d(
        input, ishape, zin, filter, fshape, zw, dm, params, st, &mut want, oshape,
    );
    let plan = DepthwisePlan::new(filter, fshape, zw, dm, zin, params, st, isa);
    let mut got = vec![T::default(); want.len()];
    intq_kernels::gemm::with_threads(threads, || {
        plan.run(input, ishape, &mut got, oshape, threads)
    });
    assert_same(&got, &want, what);
}

/// Depthwise convolutions with symmetric weights (TFLite's int8 scheme; uint8 weights with zero
/// point 128), depth multiplier 1: every tap `w - Z_w` fits s8, so VNNI and AMX run them on the
/// quad kernel where the channels are a multiple of 16 (blocks of 64 channels of one pixel, 32 of
/// two, 16 of four) or nearly fill blocks of 64 (the pair kernel for 65).
/// Channels over and off whole blocks of 64, windows of 1 to 25 taps (quads with
/// missing taps), strides, dilations and paddings of every kind, 1 to 3 threads.
fn symmetric_depthwise<T: Code8>(isa: Isa, seed: u64) {
    let mut rng = Rng::new(seed);
    let (b, ih, iw) = (rng.size(1, 2), rng.size(1, 12), rng.size(1, 12));
    let c = [1, 7, 16, 32, 48, 63, 64, 65, 80, 96, 144, 200, 208][rng.size(0, 12)];
    let (kh, kw) = if rng.int(0, 2) == 0 {
        (3.min(ih), 3.min(iw))
    } else {
        (rng.size(1, 5).min(ih), rng.size(1, 5).min(iw))
    };
    let padding = match rng.size(0, 2) {
        0 => Padding::Same,
        1 => Padding::Valid,
        _ => Padding::Explicit {
            top: rng.size(0, 2),
            bottom: rng.size(0, 2),
            left: rng.size(0, 2),
            right: rng.size(0, 2),
        },
    };
    let (s, d) = (rng.size(1, 3), if rng.int(0, 3) == 0 { 2 } else { 1 });
    let Some(((oh, ow), params)) = geometry(padding, (ih, iw), (kh, kw), (s, s), (d, d)) else {
        return;
    };
    let input = rng.codes::<T>(b * ih * iw * c);
    let filter = rng.codes::<T>(kh * kw * c);
    let zin = rng.any_zero_point::<T>(true);
    let zw = [if T::A_OFFSET != 0 { 0 } else { 128 }];
    let threads = rng.size(1, 3);
    check_depthwise(
        isa,
        threads,
        &input,
        [b, ih, iw, c],
        zin,
        &filter,
        [1, kh, kw, c],
        &zw,
        1,
        &params,
        &mut rng,
        [b, oh, ow, c],
        || format!("{isa} symmetric depthwise seed {seed}, {threads} threads: {params:?}"),
    );
}

tiers!(depthwise_symmetric, |isa| {
    for s in 0..80 {
        symmetric_depthwise::<u8>(isa, 9900 + s);
        symmetric_depthwise::<i8>(isa, 9990 + s);
    }
});

fn random_depthwise<T: Code8>(isa: Isa, seed: u64, threads: usize) {
    let mut rng = Rng::new(seed);
    let (b, ih, iw, ic, dm) = (
        rng.size(1, 2),
        rng.size(1, 9),
        rng.size(1, 9),
        rng.size(1, 70),
        rng.size(1, 3),
    );
    let oc = ic * dm;
    let (kh, kw) = (rng.size(1, 5).min(ih), rng.size(1, 5).min(iw));
    let padding = [Padding::Same, Padding::Valid][rng.size(0, 1)];
    let (sh, sw, dh, dw) = (
        rng.size(1, 3),
        rng.size(1, 3),
        rng.size(1, 2),
        rng.size(1, 2),
    );
    let Some(((oh, ow), params)) = geometry(padding, (ih, iw), (kh, kw), (sh, sw), (dh, dw)) else {
        return;
    };
    let input = rng.codes::<T>(b * ih * iw * ic);
    let filter = rng.codes::<T>(kh * kw * oc);
    let zin = rng.any_zero_point::<T>(false);
    let zw = weight_zero_points(&mut rng, oc, |r| r.any_zero_point::<T>(false));
    let (ishape, fshape, oshape) = ([b, ih, iw, ic], [1, kh, kw, oc], [b, oh, ow, oc]);
    check_depthwise(
        isa,
        threads,
        &input,
        ishape,
        zin,
        &filter,
        fshape,
        &zw,
        dm,
        &params,
        &mut rng,
        oshape,
        || format!("{isa} depthwise seed {seed}: {ishape:?} * {fshape:?} x{dm} -> {oshape:?}"),
    );
}

/// Depth multiplier 1 with explicit paddings (0 to 3 per side), up to 70 channels (several
/// 16-channel blocks and a tail), extreme codes, and zero points at and just past the edges of
/// the x86 pair kernel's int16 preconditions (which then falls back to the plain kernel).
fn edge_depthwise<T: Code8>(isa: Isa, seed: u64, threads: usize) {
    let mut rng = Rng::new(seed);
    let (b, ih, iw, c) = (
        rng.size(1, 2),
        rng.size(1, 8),
        rng.size(1, 8),
        rng.size(1, 70),
    );
    let (kh, kw) = (rng.size(1, 3), rng.size(1, 3));
    let padding = Padding::Explicit {
        top: rng.size(0, 3),
        bottom: rng.size(0, 3),
        left: rng.size(0, 3),
        right: rng.size(0, 3),
    };
    let (sh, sw) = (rng.size(1, 2), rng.size(1, 2));
    let Some(((oh, ow), params)) = geometry(padding, (ih, iw), (kh, kw), (sh, sw), (1, 1)) else {
        return;
    };
    let extreme = |rng: &mut Rng, n: usize| -> Vec<T> {
        let all = rng.codes::<T>(n);
        all.into_iter()
            .map(|x| match rng.int(0, 3) {
                0 => T::from_i32_saturating(T::MIN),
                1 => T::from_i32_saturating(T::MAX),
                _ => x,
            })
            .collect()
    };
    let input = extreme(&mut rng, b * ih * iw * c);
    let filter = extreme(&mut rng, kh * kw * c);
    let off = T::A_OFFSET;
    let zins = [
        T::MIN,
        T::MAX,
        0,
        32_767 - off,
        -32_512 - off,
        32_768 - off,
        -32_513 - off,
        70_000,
    ];
    let zin = zins[rng.size(0, zins.len() - 1)];
    let zws = [
        0,
        T::MIN,
        T::MAX,
        T::MIN + 32_767,
        T::MAX - 32_768,
        T::MIN + 32_768,
        i32::MIN,
    ];
    let zw = weight_zero_points(&mut rng, c, |r| zws[r.size(0, zws.len() - 1)]);
    let (ishape, fshape, oshape) = ([b, ih, iw, c], [1, kh, kw, c], [b, oh, ow, c]);
    check_depthwise(
        isa,
        threads,
        &input,
        ishape,
        zin,
        &filter,
        fshape,
        &zw,
        1,
        &params,
        &mut rng,
        oshape,
        || {
            format!("{isa} edge depthwise seed {seed}: {ishape:?} * {fshape:?} -> {oshape:?} zin {zin} zw {zw:?}")
        },
    );
}

tiers!(depthwise_edge_zero_points_and_padding, |isa| {
    for s in 0..80 {
        edge_depthwise::<u8>(isa, 9000 + s, 1);
        edge_depthwise::<i8>(isa, 9100 + s, 1 + (s as usize % 2));
    }
});

/// Depth multiplier 1 on rows wide enough that the x86 pair kernels take each row's interior
/// pixels as one stepped run between border pixels: widths to 40, strides and dilations 1 to 3,
/// explicit paddings 0 to 3 per side (rows with no interior pixel at all included), the 3x3
/// window the AVX2 kernel unrolls and others, channel counts off the 16-channel blocks, and input
/// zero points at both ends of the codes (a padded tap reads the zero point on AVX2).
fn interior_depthwise<T: Code8>(isa: Isa, seed: u64, threads: usize) {
    let mut rng = Rng::new(seed);
    let (b, ih, iw) = (rng.size(1, 2), rng.size(1, 6), rng.size(1, 40));
    let c = match rng.int(0, 3) {
        0 => 16 * rng.size(1, 4),
        1 => 16 * rng.size(1, 3) + rng.size(1, 15),
        _ => rng.size(1, 70),
    };
    let (kh, kw) = if rng.int(0, 1) == 0 {
        (3, 3)
    } else {
        (rng.size(1, 5), rng.size(1, 5))
    };
    let padding = Padding::Explicit {
        top: rng.size(0, 3),
        bottom: rng.size(0, 3),
        left: rng.size(0, 3),
        right: rng.size(0, 3),
    };
    let (sh, sw, dh, dw) = (
        rng.size(1, 3),
        rng.size(1, 3),
        rng.size(1, 3),
        rng.size(1, 3),
    );
    let Some(((oh, ow), params)) = geometry(padding, (ih, iw), (kh, kw), (sh, sw), (dh, dw)) else {
        return;
    };
    let input = rng.codes::<T>(b * ih * iw * c);
    let filter = rng.codes::<T>(kh * kw * c);
    let zin = [T::MIN, T::MAX, rng.any_zero_point::<T>(false)][rng.size(0, 2)];
    let zw = weight_zero_points(&mut rng, c, |r| r.any_zero_point::<T>(false));
    let (ishape, fshape, oshape) = ([b, ih, iw, c], [1, kh, kw, c], [b, oh, ow, c]);
    check_depthwise(
        isa,
        threads,
        &input,
        ishape,
        zin,
        &filter,
        fshape,
        &zw,
        1,
        &params,
        &mut rng,
        oshape,
        || {
            format!("{isa} interior depthwise seed {seed}: {ishape:?} * {fshape:?} -> {oshape:?} {params:?} zin {zin}")
        },
    );
}

tiers!(depthwise_interior_runs, |isa| {
    for s in 0..80 {
        interior_depthwise::<u8>(isa, 9500 + s, 1);
        interior_depthwise::<i8>(isa, 9600 + s, 1 + (s as usize % 2));
    }
});

/// Symmetric weights (the quad kernel) on rows wide enough for long interior runs: channel
/// counts that are multiples of 16 (every mix of blocks of 64, 32 and 16 channels, so runs of
/// one, two or four pixels per vector with pixels left over), 3x3 and other windows, strides 1
/// and 2 (stride 1 with 32 or 16 channels puts a vector's pixels side by side in memory),
/// explicit paddings, input zero points at both ends of the codes.
fn symmetric_interior_depthwise<T: Code8>(isa: Isa, seed: u64, threads: usize) {
    let mut rng = Rng::new(seed);
    let (b, ih, iw) = (rng.size(1, 2), rng.size(1, 5), rng.size(1, 37));
    let c = 16 * rng.size(1, 13);
    let (kh, kw) = if rng.int(0, 2) > 0 {
        (3, 3)
    } else {
        (rng.size(1, 5), rng.size(1, 5))
    };
    let padding = Padding::Explicit {
        top: rng.size(0, 2),
        bottom: rng.size(0, 2),
        left: rng.size(0, 2),
        right: rng.size(0, 2),
    };
    let (sh, sw) = (rng.size(1, 2), rng.size(1, 2));
    let Some(((oh, ow), params)) = geometry(padding, (ih, iw), (kh, kw), (sh, sw), (1, 1)) else {
        return;
    };
    let extreme = |rng: &mut Rng, n: usize| -> Vec<T> {
        let all = rng.codes::<T>(n);
        all.into_iter()
            .map(|x| match rng.int(0, 3) {
                0 => T::from_i32_saturating(T::MIN),
                1 => T::from_i32_saturating(T::MAX),
                _ => x,
            })
            .collect()
    };
    let input = extreme(&mut rng, b * ih * iw * c);
    let filter = extreme(&mut rng, kh * kw * c);
    let zin = [T::MIN, T::MAX, rng.any_zero_point::<T>(true)][rng.size(0, 2)];
    let zw = [if T::A_OFFSET != 0 { 0 } else { 128 }];
    let (ishape, fshape, oshape) = ([b, ih, iw, c], [1, kh, kw, c], [b, oh, ow, c]);
    check_depthwise(
        isa,
        threads,
        &input,
        ishape,
        zin,
        &filter,
        fshape,
        &zw,
        1,
        &params,
        &mut rng,
        oshape,
        || {
            format!("{isa} symmetric interior depthwise seed {seed}: {ishape:?} * {fshape:?} -> {oshape:?} {params:?} zin {zin}")
        },
    );
}

tiers!(depthwise_symmetric_interior_runs, |isa| {
    for s in 0..80 {
        symmetric_interior_depthwise::<u8>(isa, 9700 + s, 1);
        symmetric_interior_depthwise::<i8>(isa, 9800 + s, 1 + (s as usize % 2));
    }
});

tiers!(depthwise_random_geometry, |isa| {
    for s in 0..60 {
        random_depthwise::<u8>(isa, 7000 + s, 1);
        random_depthwise::<i8>(isa, 8000 + s, 1 + (s as usize % 3));
    }
});

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Edge-heavy codes, zero points and multipliers through every tier's GEMM.
    #[test]
    fn gemm_edge_values_every_tier(
        m in 1usize..20, n in 1usize..40, k in 1usize..70,
        seed in any::<u64>(),
        edge_a in prop::sample::select(vec![0i32, 1, 127, 128, 254, 255]),
        zin in prop::sample::select(vec![0i32, 255, 128, -128, 127, i32::MIN, i32::MAX, 70_000]),
        zw in prop::sample::select(vec![0i32, 255, -128, 127, i32::MIN, 1 << 20]),
        m0 in prop::sample::select(vec![0i32, 1 << 30, i32::MAX, (1 << 30) + 1]),
        shift in -31i32..=31,
    ) {
        let mut rng = Rng::new(seed);
        let a: Vec<u8> = (0..m * k).map(|i| if i % 3 == 0 { edge_a as u8 } else { rng.code() }).collect();
        let w: Vec<u8> = rng.codes(n * k);
        let mut stage = Stage::random::<u8>(&mut rng, n, 1e4);
        stage.mults = vec![QuantizedMultiplier { m0, shift }];
        for isa in intq_testutil::tiers("gemm_edge_values_every_tier") {
            check_gemm(isa, &a, &w, m, n, k, zin, &[zw], &stage, 1);
            let ai: Vec<i8> = a.iter().map(|&x| x as i8).collect();
            let wi: Vec<i8> = w.iter().map(|&x| x as i8).collect();
            let mut si = Stage::random::<i8>(&mut rng, n, 1e4);
            si.mults = stage.mults.clone();
            check_gemm(isa, &ai, &wi, m, n, k, zin, &[zw], &si, 1);
        }
    }
}

fn random_add<T: Code8>(isa: Isa, seed: u64) {
    use intq_kernels::reference::AddParams;
    use intq_quant::QuantParams;
    let mut rng = Rng::new(seed);
    let scale = |rng: &mut Rng| 2f64.powf(rng.int(-1200, 200) as f64 / 100.0) as f32;
    let zp = |rng: &mut Rng| rng.int(T::MIN, T::MAX);
    let (l, r, o) = (
        QuantParams {
            scale: scale(&mut rng),
            zero_point: zp(&mut rng),
        },
        QuantParams {
            scale: scale(&mut rng),
            zero_point: zp(&mut rng),
        },
        QuantParams {
            scale: scale(&mut rng),
            zero_point: zp(&mut rng),
        },
    );
    let (a, b) = (zp(&mut rng), zp(&mut rng));
    let (cmin, cmax) = if rng.int(0, 1) == 0 {
        (T::MIN, T::MAX)
    } else {
        (a.min(b), a.max(b))
    };
    let Ok(p) = AddParams::new(l, r, o, cmin, cmax) else {
        return;
    };
    let n = rng.size(1, 300);
    let shape = [1, 1, n / 3 + 1, 3];
    let len = shape.iter().product();
    let x = rng.codes::<T>(len);
    let y = rng.codes::<T>(len);
    let mut want = vec![T::default(); len];
    reference::add(&x, &shape, &y, &shape, &p, &mut want, &shape);
    let mut got = vec![T::default(); len];
    intq_kernels::gemm::add(isa, 1, &x, &shape, &y, &shape, &p, &mut got, &shape);
    assert_same(&got, &want, || format!("{isa} add seed {seed}: {p:?}"));
    // Broadcasting falls back to the reference and still agrees.
    let row = &y[..3];
    reference::add(&x, &shape, row, &[3], &p, &mut want, &shape);
    intq_kernels::gemm::add(isa, 1, &x, &shape, row, &[3], &p, &mut got, &shape);
    assert_same(&got, &want, || format!("{isa} broadcast add seed {seed}"));
}

/// A residual-sized Add split over 1-3 threads (chunks of 64 elements and a short last one)
/// equals the reference.
fn large_add<T: Code8>(isa: Isa, seed: u64, threads: usize) {
    use intq_kernels::reference::AddParams;
    use intq_quant::QuantParams;
    let mut rng = Rng::new(seed);
    let q = |rng: &mut Rng| QuantParams {
        scale: 0.01 + rng.int(0, 1000) as f32 / 10_000.0,
        zero_point: rng.any_zero_point::<T>(false),
    };
    let (l, r, o) = (q(&mut rng), q(&mut rng), q(&mut rng));
    let p = AddParams::new(l, r, o, T::MIN, T::MAX).expect("add params");
    let shape = [1, 57, 41 + rng.size(0, 7), 31];
    let len: usize = shape.iter().product();
    let (x, y) = (rng.codes::<T>(len), rng.codes::<T>(len));
    let mut want = vec![T::default(); len];
    reference::add(&x, &shape, &y, &shape, &p, &mut want, &shape);
    let mut got = vec![T::default(); len];
    intq_kernels::gemm::add(isa, threads, &x, &shape, &y, &shape, &p, &mut got, &shape);
    assert_same(&got, &want, || {
        format!("{isa} large add seed {seed}, {threads} threads")
    });
}

tiers!(add_large_split_over_threads, |isa| {
    for s in 0..6 {
        large_add::<u8>(isa, 9900 + s, 1 + s as usize % 3);
        large_add::<i8>(isa, 9950 + s, 1 + (s as usize + 1) % 3);
    }
});

tiers!(add_random_params, |isa| {
    for s in 0..200 {
        random_add::<u8>(isa, 9000 + s);
        random_add::<i8>(isa, 9500 + s);
    }
});

/// A max or average pool of random geometry (windows up to the whole image: a global average
/// pool; SAME padding clips windows, so counts vary near the border) and clamp, fast tier
/// against the reference.
fn random_pool<T: Code8 + Ord>(isa: Isa, seed: u64, max: bool) {
    use intq_kernels::PoolParams;
    let mut rng = Rng::new(seed);
    let (b, ih, iw, c) = (
        rng.size(1, 2),
        rng.size(1, 9),
        rng.size(1, 9),
        rng.size(1, 40),
    );
    let (fh, fw) = if !max && rng.int(0, 3) == 0 {
        (ih, iw)
    } else {
        (rng.size(1, 4).min(ih), rng.size(1, 4).min(iw))
    };
    let (sh, sw) = (rng.size(1, 3), rng.size(1, 3));
    let padding = [Padding::Same, Padding::Valid][rng.size(0, 1)];
    let Some(((oh, ow), pad)) = padding.resolve((ih, iw), (fh, fw), (sh, sw), (1, 1)) else {
        return;
    };
    let (a, z) = (rng.int(-300, 300), rng.int(-300, 300));
    let (clamp_min, clamp_max) = match rng.int(0, 2) {
        0 => (T::MIN, T::MAX),
        1 => (a.min(z), a.max(z)),
        _ => (rng.int(T::MIN, T::MAX), T::MAX),
    };
    let p = PoolParams {
        filter_h: fh,
        filter_w: fw,
        stride_h: sh,
        stride_w: sw,
        padding: pad,
        clamp_min,
        clamp_max,
    };
    let x = rng.codes::<T>(b * ih * iw * c);
    let (ishape, oshape) = ([b, ih, iw, c], [b, oh, ow, c]);
    let mut want = vec![T::default(); b * oh * ow * c];
    let mut got = vec![T::default(); want.len()];
    if max {
        reference::max_pool(&x, ishape, &p, &mut want, oshape);
        intq_kernels::gemm::max_pool(isa, &x, ishape, &p, &mut got, oshape);
    } else {
        reference::average_pool(&x, ishape, &p, &mut want, oshape);
        intq_kernels::gemm::average_pool(isa, &x, ishape, &p, &mut got, oshape);
    }
    let kind = if max { "max" } else { "average" };
    assert_same(&got, &want, || {
        format!("{isa} {kind} pool seed {seed}: {ishape:?} {p:?}")
    });
}

tiers!(max_pool_random_geometry, |isa| {
    for s in 0..100 {
        random_pool::<u8>(isa, 11_000 + s, true);
        random_pool::<i8>(isa, 12_000 + s, true);
    }
});

tiers!(average_pool_random_geometry, |isa| {
    for s in 0..150 {
        random_pool::<u8>(isa, 13_000 + s, false);
        random_pool::<i8>(isa, 14_000 + s, false);
    }
});

/// One fake-quant pass on `isa` against the portable tier's, bit for bit (values, mask, and
/// the finite flag), with and without the mask.
fn check_requant_fake_quant(
    isa: Isa,
    k: &intq_kernels::qat::RequantFakeQuant,
    e: i32,
    x: &[f32],
    what: &str,
) {
    let run = |isa: Isa, masked: bool| {
        let mut fq = vec![0f32; x.len()];
        let mut mask = vec![7u8; x.len()];
        let finite = k.block(isa, e, x, &mut fq, masked.then_some(&mut mask[..]));
        (fq, mask, finite)
    };
    for masked in [true, false] {
        let (want, want_mask, want_finite) = run(Isa::Portable, masked);
        let (got, got_mask, got_finite) = run(isa, masked);
        assert_eq!(got_finite, want_finite, "{what}: finite flag, e={e}, {k:?}");
        if !want_finite {
            continue;
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{what}: x[{i}] = {:e}, e={e}, {k:?}: {g:e} != {w:e}",
                x[i]
            );
        }
        assert_eq!(got_mask, want_mask, "{what}: mask, e={e}, {k:?}");
        if masked {
            for (i, &v) in x.iter().enumerate() {
                assert_eq!(
                    want_mask[i],
                    u8::from(v >= k.lo && v <= k.hi),
                    "mask at {v:e}"
                );
            }
        }
    }
}

tiers!(qat_requant_fake_quant_edges_and_random, |isa| {
    use intq_kernels::qat::RequantFakeQuant;
    let mut rng = Rng::new(4242);
    for case in 0..300 {
        // Ranges as nudging makes them: scale from 2^-20 to 2^4, a code range of 2..=8 bits,
        // the zero point anywhere in it (the extremes included).
        let bits = rng.int(2, 8);
        let (qmin, qmax) = if rng.int(0, 1) == 0 {
            (0, (1 << bits) - 1)
        } else {
            (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        };
        let z = match rng.int(0, 3) {
            0 => qmin,
            1 => qmax,
            _ => rng.int(qmin, qmax),
        };
        let scale = (2f64.powf(rng.int(-20_000, 4_000) as f64 / 1000.0)) as f32;
        let (qlo, qhi) = ((qmin - z) as f32, (qmax - z) as f32);
        let k = RequantFakeQuant {
            lo: qlo * scale,
            hi: qhi * scale,
            scale,
            qlo,
            qhi,
            zero: if case % 2 == 0 { 0.0 } else { -0.0 },
        };
        let e = match rng.int(0, 3) {
            0 => 0,
            1 => 31,
            _ => rng.int(0, 31),
        };
        // Codes and half codes (ties), one ulp either side, the range ends and beyond, zeros
        // of both signs, and random values; 67 of them so the vector loops have a tail.
        let mut x = Vec::new();
        while x.len() < 67 {
            let q = rng.int(qlo as i64 - 3, qhi as i64 + 3) as f32;
            let v = match rng.int(0, 7) {
                0 => q * scale,
                1 => (q + 0.5) * scale,
                2 => f32::from_bits(((q + 0.5) * scale).to_bits().wrapping_add(1)),
                3 => f32::from_bits(((q + 0.5) * scale).to_bits().wrapping_sub(1)),
                4 => [k.lo, k.hi, -0.0, 0.0][rng.size(0, 3)],
                5 => (q + 0.5 + 2f32.powi(-(e + 1))) * scale,
                _ => (rng.int(-1 << 20, 1 << 20) as f32 / (1 << 20) as f32) * 300.0 * scale,
            };
            x.push(v);
        }
        check_requant_fake_quant(isa, &k, e, &x, "edges");
        // A non-finite value makes the flag false on every tier.
        let mut bad = x.clone();
        bad[rng.size(0, 66)] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][rng.size(0, 2)];
        check_requant_fake_quant(isa, &k, e, &bad, "non-finite");
    }
});

/// Adds at the extremes of the usual parameters: every input code at a range end against a
/// zero point at the other (|code - zero point| = 255, the largest value shifted by 20), input
/// scales up to 2^32 apart and output scales from just above the smallest allowed (an output
/// multiplier in [0.5, 1), no right shift) to 2^20 times larger, so the right shifts reach 0
/// and 31.
fn extreme_add<T: Code8>(isa: Isa, seed: u64) {
    use intq_kernels::reference::AddParams;
    use intq_quant::QuantParams;
    let mut rng = Rng::new(seed);
    let end = |rng: &mut Rng| [T::MIN, T::MAX][rng.size(0, 1)];
    let (sl, sr) = (
        2f64.powi(rng.int(-30, 2)) as f32,
        2f64.powi(rng.int(-30, 2)) as f32 * 1.5f32.powi(rng.int(0, 1)),
    );
    let least = 2.0 * sl.max(sr) as f64 / (1 << 20) as f64;
    let so = match rng.int(0, 2) {
        0 => least * (1.0 + rng.int(1, 1000) as f64 / 1000.0),
        1 => least * 2f64.powi(rng.int(1, 20)),
        _ => least * 2f64.powi(rng.int(20, 40)),
    } as f32;
    let q = |rng: &mut Rng, scale: f32| QuantParams {
        scale,
        zero_point: end(rng),
    };
    let (l, r, o) = (q(&mut rng, sl), q(&mut rng, sr), q(&mut rng, so));
    let Ok(p) = AddParams::new(l, r, o, T::MIN, T::MAX) else {
        return;
    };
    let len = 16 * rng.size(1, 8) + rng.size(0, 15);
    let shape = [1, 1, len, 1];
    let x: Vec<T> = (0..len)
        .map(|_| T::from_i32_saturating(end(&mut rng)))
        .collect();
    let y: Vec<T> = (0..len)
        .map(|_| T::from_i32_saturating(end(&mut rng)))
        .collect();
    let mut want = vec![T::default(); len];
    reference::add(&x, &shape, &y, &shape, &p, &mut want, &shape);
    let mut got = vec![T::default(); len];
    intq_kernels::gemm::add(isa, 1, &x, &shape, &y, &shape, &p, &mut got, &shape);
    assert_same(&got, &want, || {
        format!("{isa} extreme add seed {seed}: {p:?}")
    });
}

tiers!(add_extreme_codes, |isa| {
    for s in 0..300 {
        extreme_add::<u8>(isa, 10_500 + s);
        extreme_add::<i8>(isa, 10_900 + s);
    }
});
