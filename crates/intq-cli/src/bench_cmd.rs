//! `intq` subcommands: benchmarks (`intq bench gemm`, `intq bench isa`, `intq bench small-cnn`).

use anyhow::{bail, Context, Result};
use intq_kernels::gemm::{with_threads, Code8, FullyConnectedPlan};
use intq_kernels::{reference, Isa, KernelTier, Multipliers, OutputStage};
use intq_quant::QuantizedMultiplier;
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Benchmarks of intq's kernels.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(clap::Subcommand)]
pub enum BenchWhat {
    /// int8 GEMM `C[M,N] = A[M,K] * B[N,K]^T` with the fused output stage, through the packed
    /// kernel of one ISA tier; weights are packed before timing (as at model load).
    Gemm(GemmArgs),
    /// The ISA tiers this CPU has, and the one intq runs (INTQ_ISA may force another).
    Isa,
    /// The example network (`examples::small_cnn`, one 8x8x3 image) on the fast executor and on
    /// the reference executor in the same run; checks their outputs agree.
    SmallCnn(SmallCnnArgs),
}

#[derive(clap::Args)]
pub struct SmallCnnArgs {
    /// Code type: u8 or i8.
    #[arg(long, default_value = "i8")]
    dtype: String,
    /// Threads (0 = all cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// portable, avx2, avx512vnni or amx (default: INTQ_ISA, else the best this CPU has).
    #[arg(long)]
    isa: Option<String>,
    #[arg(long, default_value_t = 1000)]
    min_ms: u64,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct GemmArgs {
    #[arg(long, default_value_t = 1024)]
    m: usize,
    #[arg(long, default_value_t = 1024)]
    k: usize,
    #[arg(long, default_value_t = 1024)]
    n: usize,
    /// Threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// portable, avx2, avx512vnni or amx (default: INTQ_ISA, else the best this CPU has).
    #[arg(long)]
    isa: Option<String>,
    /// Code type: i8 (int8 symmetric per-channel weights) or u8 (uint8, weight zero point).
    #[arg(long, default_value = "i8")]
    dtype: String,
    /// Minimum time spent timing each kernel, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    min_ms: u64,
    /// Skip the scalar reference baseline (slow at large shapes).
    #[arg(long)]
    no_reference: bool,
    /// Skip the portable-tier baseline too.
    #[arg(long)]
    no_portable: bool,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    let BenchCommand::Bench { what } = cmd;
    match what {
        BenchWhat::Gemm(a) => gemm(a),
        BenchWhat::SmallCnn(a) => small_cnn(a),
        BenchWhat::Isa => {
            let chosen = KernelTier::from_env().context("INTQ_ISA")?;
            let have: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
            println!("available: {}", have.join(" "));
            println!("running: {chosen}");
            Ok(())
        }
    }
}

fn small_cnn(a: SmallCnnArgs) -> Result<()> {
    use intq_engine::{examples, DType, ExecOptions, Model};
    let dtype = match a.dtype.as_str() {
        "u8" => DType::U8,
        "i8" => DType::I8,
        other => bail!("--dtype must be i8 or u8, not {other:?}"),
    };
    let isa = pick_isa(&a.isa)?;
    let graph = examples::small_cnn(dtype, false, 1);
    let input = examples::random_input(&graph, 7);
    let make = |kernels| {
        Model::with_options(
            graph.clone(),
            ExecOptions {
                kernels: Some(kernels),
                threads: a.threads,
            },
        )
    };
    let fast = make(KernelTier::Fast(isa))?;
    let reference = make(KernelTier::Reference)?;
    if fast.run(&input)? != reference.run(&input)? {
        bail!("fast and reference executors disagree on small_cnn");
    }
    let min = Duration::from_millis(a.min_ms);
    let tf = time(min, || {
        fast.run(&input).expect("runs");
    });
    let tr = time(min, || {
        reference.run(&input).expect("runs");
    });
    if a.json {
        println!(
            "{{\"bench\":\"small_cnn\",\"dtype\":\"{}\",\"isa\":\"{isa}\",\"threads\":{},\
             \"ms_median\":{:.5},\"reference_ms_median\":{:.5},\"speedup_vs_reference\":{:.3}}}",
            a.dtype,
            fast.threads(),
            tf * 1e3,
            tr * 1e3,
            tr / tf
        );
    } else {
        println!(
            "small_cnn {} on {isa}, {} thread(s): {:.4} ms; reference executor {:.4} ms ({:.1}x)",
            a.dtype,
            fast.threads(),
            tf * 1e3,
            tr * 1e3,
            tr / tf
        );
    }
    Ok(())
}

fn pick_isa(isa: &Option<String>) -> Result<Isa> {
    Ok(match isa {
        Some(s) => s.parse::<Isa>()?.require()?,
        None => match KernelTier::from_env().context("INTQ_ISA")? {
            KernelTier::Fast(isa) => isa,
            KernelTier::Reference => Isa::Portable,
        },
    })
}

fn gemm(a: GemmArgs) -> Result<()> {
    let isa = pick_isa(&a.isa)?;
    if a.m == 0 || a.k == 0 || a.n == 0 {
        bail!("--m, --k and --n must be at least 1");
    }
    let threads = if a.threads == 0 {
        intq_kernels::gemm::all_cores()
    } else {
        a.threads
    };
    let r = match a.dtype.as_str() {
        "i8" => measure::<i8>(&a, isa, threads),
        "u8" => measure::<u8>(&a, isa, threads),
        other => bail!("--dtype must be i8 or u8, not {other:?}"),
    };
    let ops = 2.0 * (a.m * a.n * a.k) as f64;
    let gops = |s: f64| ops / s / 1e9;
    let fast = gops(r.fast);
    let portable = r.portable.map(gops);
    let reference = r.reference.map(gops);
    let opt = |g: Option<f64>| g.map_or("null".to_string(), |g| format!("{g:.3}"));
    if a.json {
        println!(
            "{{\"bench\":\"gemm\",\"m\":{},\"k\":{},\"n\":{},\"dtype\":\"{}\",\"isa\":\"{}\",\
             \"threads\":{},\"gops\":{:.3},\"ms_median\":{:.4},\"portable_gops\":{},\
             \"reference_gops\":{},\"speedup_vs_portable\":{},\"speedup_vs_reference\":{}}}",
            a.m,
            a.k,
            a.n,
            a.dtype,
            isa,
            threads,
            fast,
            r.fast * 1e3,
            opt(portable),
            opt(reference),
            opt(portable.map(|p| fast / p)),
            opt(reference.map(|g| fast / g)),
        );
    } else {
        println!(
            "gemm {}x{}x{} {} on {isa}, {threads} thread(s): {fast:.1} GOPS ({:.3} ms median)",
            a.m,
            a.k,
            a.n,
            a.dtype,
            r.fast * 1e3
        );
        if let Some(p) = portable {
            println!(
                "  portable tier, 1 thread, same run: {p:.1} GOPS ({:.1}x)",
                fast / p
            );
        }
        if let Some(g) = reference {
            println!(
                "  scalar reference, same run: {g:.2} GOPS ({:.0}x)",
                fast / g
            );
        }
    }
    Ok(())
}

/// Median seconds per call of each kernel.
struct Timings {
    fast: f64,
    portable: Option<f64>,
    reference: Option<f64>,
}

/// Median seconds of `f` over repeats filling `min` (at least 3 calls, after one warm-up).
fn time(min: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 3 || start.elapsed() < min {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
        if samples.len() >= 100_000 {
            break;
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

fn measure<T: Code8>(a: &GemmArgs, isa: Isa, threads: usize) -> Timings {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let code = |v: u64| T::from_i32_saturating(T::MIN + (v % 256) as i32);
    let x: Vec<T> = (0..a.m * a.k).map(|_| code(next())).collect();
    let w: Vec<T> = (0..a.n * a.k).map(|_| code(next())).collect();
    let bias: Vec<i32> = (0..a.n).map(|_| (next() % 20001) as i32 - 10000).collect();
    let mults: Vec<QuantizedMultiplier> = (0..a.n)
        .map(|_| QuantizedMultiplier::from_real(1.0 / (a.k as f64 * 300.0)).expect("finite"))
        .collect();
    let zw: Vec<i32> = if T::MIN == 0 { vec![131] } else { vec![0] };
    let zin = if T::MIN == 0 { 119 } else { -3 };
    let stage = OutputStage {
        bias: Some(&bias),
        multipliers: Multipliers::PerChannel(&mults),
        output_zero_point: if T::MIN == 0 { 128 } else { 0 },
        clamp_min: T::MIN,
        clamp_max: T::MAX,
    };
    let min = Duration::from_millis(a.min_ms);
    let mut out = vec![T::default(); a.m * a.n];
    let plan = FullyConnectedPlan::new(&w, a.n, a.k, &zw, zin, &stage, isa);
    let fast = with_threads(threads, || {
        time(min, || plan.run(&x, a.m, &mut out, threads))
    });
    let portable = (!a.no_portable).then(|| {
        let plan = FullyConnectedPlan::new(&w, a.n, a.k, &zw, zin, &stage, Isa::Portable);
        let mut out2 = vec![T::default(); a.m * a.n];
        let t = time(min / 2, || plan.run(&x, a.m, &mut out2, 1));
        assert!(out2 == out, "fast and portable GEMM outputs differ");
        t
    });
    let reference = (!a.no_reference).then(|| {
        let mut out3 = vec![T::default(); a.m * a.n];
        let t = time(Duration::ZERO, || {
            reference::fully_connected(&x, a.m, a.k, zin, &w, a.n, &zw, &stage, &mut out3)
        });
        assert!(out3 == out, "fast and reference GEMM outputs differ");
        t
    });
    Timings {
        fast,
        portable,
        reference,
    }
}
