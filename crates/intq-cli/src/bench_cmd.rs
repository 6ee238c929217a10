//! `intq` subcommands: benchmarks (`intq bench gemm`, `intq bench isa`, `intq bench small-cnn`,
//! `intq bench model`, `intq bench f32-vs-int8`).

use anyhow::{bail, Context, Result};
use intq_kernels::gemm::{with_threads, Code8, FullyConnectedPlan};
use intq_kernels::{reference, Isa, KernelTier, Multipliers, OutputStage};
use intq_quant::QuantizedMultiplier;
use serde::Serialize;
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
    /// The example network (`examples::small_cnn`, one 8x8x3 image) on the fast executor, the
    /// reference executor and the f32 executor (matrixmultiply sgemm) in the same run; checks the
    /// integer executors agree. The int8-vs-f32 ratio is at 1 thread for both when --threads 1.
    SmallCnn(SmallCnnArgs),
    /// One int8 Conv2d layer (int8 activations, symmetric per-channel int8 weights, SAME
    /// padding, ReLU) on the fast executor vs the same graph on the f32 executor (dequantized
    /// weights, im2col + matrixmultiply sgemm), timed in the same run. The default is a
    /// ResNet-style 56x56x64 -> 3x3 -> 64 layer (GEMM M=3136, K=576, N=64).
    F32VsInt8(F32VsInt8Args),
    /// A zoo architecture (resnet18, mobilenet-v2, resnet20, small-cnn, tiny-mobilenet) with
    /// random weights, built the way trained models are: the QAT network with a fixed seed,
    /// calibrated on random images, exported to the integer graph, at `--batch` images. Times
    /// `Model::run`; with `--f32` the f32 executor of the same graph too, interleaved call by
    /// call. One JSON object per run with `--json`.
    Model(ModelArgs),
    /// The training data loader: images/s it decodes (and augments) alone, against the
    /// training step's images/s for a model on pixels in memory and fed by the loader
    /// (`intq train --loader stream`).
    Loader(Box<crate::data_cmd::LoaderBenchArgs>),
}

#[derive(clap::Args)]
pub struct ModelArgs {
    /// resnet18, mobilenet-v2 (or mobilenet-v2@WIDTH), resnet20, small-cnn or tiny-mobilenet; with
    /// `--load`, any name for the loaded model.
    #[arg(long)]
    model: String,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Threads of the int8 executor (0 = all cores). The f32 executor is single-threaded.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// portable, avx2, avx512vnni, amx or reference (default: INTQ_ISA, else the best this
    /// CPU has).
    #[arg(long)]
    isa: Option<String>,
    /// int8 (TFLite's scheme: int8 activations, symmetric per-channel int8 weights) or uint8
    /// (the paper's: uint8 activations and per-tensor asymmetric uint8 weights).
    #[arg(long, default_value = "int8")]
    scheme: String,
    /// Also time the f32 executor on the same graph, interleaved with the int8 runs.
    #[arg(long)]
    f32: bool,
    /// Timed calls (after one warm-up); 0 = as many as fill --min-ms (at least 5).
    #[arg(long, default_value_t = 0)]
    iters: usize,
    #[arg(long, default_value_t = 2000)]
    min_ms: u64,
    /// Seed of the random weights and calibration images.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the graph as a `.intq` model (e.g. for `intq export --tflite`).
    #[arg(long)]
    save: Option<std::path::PathBuf>,
    /// Also write the graph as TFLite can express it, for `intq export --tflite`: each explicit
    /// padding becomes SAME where that is the same window placement, else a Pad op (zero point)
    /// before a VALID op; the function computed is unchanged.
    #[arg(long)]
    save_tflite_ready: Option<std::path::PathBuf>,
    /// Time this `.intq` model (as written by --save) instead of building one; --model then
    /// only names it in the output.
    #[arg(long, conflicts_with_all = ["save", "batch", "scheme", "seed"])]
    load: Option<std::path::PathBuf>,
    /// Check the run against the reference executor first (slow for the 224x224 models).
    #[arg(long)]
    check: bool,
    /// Also time every op (as many calls as the timing itself, after it) and print where the
    /// time goes, by op class (conv 3x3, conv 1x1, depthwise 3x3, add, ...).
    #[arg(long)]
    profile: bool,
    /// The profile (implied), then every op on its own in graph order: shapes (input * filter
    /// -> output for convolutions), time, share, GOPS and its output tensor's name.
    #[arg(long)]
    profile_ops: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct F32VsInt8Args {
    #[arg(long, default_value_t = 56)]
    height: usize,
    #[arg(long, default_value_t = 56)]
    width: usize,
    /// Input channels.
    #[arg(long, default_value_t = 64)]
    channels: usize,
    /// Output channels.
    #[arg(long, default_value_t = 64)]
    filters: usize,
    /// Square kernel size (1 = pointwise, run by the f32 executor without im2col).
    #[arg(long, default_value_t = 3)]
    kernel: usize,
    /// Threads of the int8 executor (the f32 executor is single-threaded; keep 1 for a fair
    /// ratio).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// portable, avx2, avx512vnni, amx or neondot (default: INTQ_ISA, else the best this CPU has).
    #[arg(long)]
    isa: Option<String>,
    #[arg(long, default_value_t = 1000)]
    min_ms: u64,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct SmallCnnArgs {
    /// Code type: u8 or i8.
    #[arg(long, default_value = "i8")]
    dtype: String,
    /// Threads (0 = all cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// portable, avx2, avx512vnni, amx or neondot (default: INTQ_ISA, else the best this CPU has).
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
    /// portable, avx2, avx512vnni, amx or neondot (default: INTQ_ISA, else the best this CPU has).
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
        BenchWhat::F32VsInt8(a) => f32_vs_int8(a),
        BenchWhat::Model(a) => model(a),
        BenchWhat::Loader(a) => crate::data_cmd::bench_loader(*a),
        BenchWhat::Isa => {
            let chosen = KernelTier::from_env().context("INTQ_ISA")?;
            let have: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
            let lack: Vec<&str> = Isa::ALL_BEST_FIRST
                .iter()
                .filter(|i| !i.is_available())
                .map(|i| i.name())
                .collect();
            println!("available: {}", have.join(" "));
            if !lack.is_empty() {
                println!("not on this CPU: {}", lack.join(" "));
            }
            println!("running: {chosen}");
            #[cfg(target_arch = "x86_64")]
            if let Some(p) = intq_kernels::gemm::amx_peak(2_000_000) {
                println!(
                    "amx peak (tdpbusd on tile registers, one core): {:.0} GOPS, {:.4} tdpbusd/cycle at {:.2} GHz (clock alone {:.2} GHz)",
                    p.gops, p.tdp_per_cycle, p.ghz_under_amx, p.ghz_before
                );
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(p) = intq_kernels::gemm::vnni_peak(5_000_000) {
                println!(
                    "avx512vnni peak (vpdpbusd on registers, one core): {:.0} GOPS",
                    p.gops
                );
            }
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
    // The same graph in f32 (dequantized weights, sgemm convs/FC, single-threaded): the honest
    // baseline for "how much does int8 buy", measured in this same run.
    let t32 = time(min, || {
        fast.run_float(&input).expect("runs");
    });
    if a.json {
        #[derive(Serialize)]
        struct Out<'a> {
            bench: &'a str,
            dtype: &'a str,
            isa: String,
            threads: usize,
            ms_median: f64,
            reference_ms_median: f64,
            speedup_vs_reference: f64,
            f32_ms_median: f64,
            speedup_vs_f32: f64,
        }
        print_json(&Out {
            bench: "small_cnn",
            dtype: &a.dtype,
            isa: isa.to_string(),
            threads: fast.threads(),
            ms_median: fixed(tf * 1e3, 5),
            reference_ms_median: fixed(tr * 1e3, 5),
            speedup_vs_reference: fixed(tr / tf, 3),
            f32_ms_median: fixed(t32 * 1e3, 5),
            speedup_vs_f32: fixed(t32 / tf, 3),
        })?;
    } else {
        println!(
            "small_cnn {} on {isa}, {} thread(s): {:.4} ms; reference executor {:.4} ms ({:.1}x); \
             f32 executor (1 thread) {:.4} ms ({:.2}x)",
            a.dtype,
            fast.threads(),
            tf * 1e3,
            tr * 1e3,
            tr / tf,
            t32 * 1e3,
            t32 / tf
        );
    }
    Ok(())
}

/// A one-layer int8 conv graph with pseudo-random codes (the values do not change the timing).
fn conv_graph(a: &F32VsInt8Args) -> Result<intq_engine::Graph> {
    use intq_engine::{
        Activation, ChannelParams, DType, GraphBuilder, Op, Padding, Quant, QuantParams, TensorData,
    };
    let (h, w, c, oc, k) = (a.height, a.width, a.channels, a.filters, a.kernel);
    if [h, w, c, oc, k].contains(&0) {
        bail!("--height, --width, --channels, --filters and --kernel must be at least 1");
    }
    use intq_engine::examples::Rng as _;
    let mut rng = intq_engine::examples::seeded(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next_u64();
    let mut b = GraphBuilder::new();
    let act =
        |scale: f32, zero_point: i32| Some(Quant::PerTensor(QuantParams { scale, zero_point }));
    let s_in = 1.0 / 128.0;
    let input = b.tensor("input", DType::I8, &[1, h, w, c], act(s_in, -3));
    b.input(input);
    let w_scales: Vec<f32> = (0..oc).map(|i| 0.01 + 0.0001 * i as f32).collect();
    let codes: Vec<i8> = (0..oc * k * k * c)
        .map(|_| ((next() % 255) as i32 - 127) as i8)
        .collect();
    let filter = b.constant(
        "conv/weights",
        &[oc, k, k, c],
        Some(Quant::PerChannel(ChannelParams::new(
            w_scales.clone(),
            vec![0; oc],
            0,
        )?)),
        TensorData::I8(codes),
    );
    let bias_scales: Vec<f32> = w_scales.iter().map(|s| s * s_in).collect();
    let bias = b.constant(
        "conv/bias",
        &[oc],
        Some(Quant::PerChannel(ChannelParams::new(
            bias_scales,
            vec![0; oc],
            0,
        )?)),
        TensorData::I32((0..oc).map(|_| (next() % 2001) as i32 - 1000).collect()),
    );
    let out = b.tensor("conv", DType::I8, &[1, h, w, oc], act(0.05, -128));
    b.op(Op::Conv2d {
        input,
        filter,
        bias: Some(bias),
        output: out,
        stride: [1, 1],
        dilation: [1, 1],
        padding: Padding::Same,
        activation: Activation::Relu,
    });
    b.output(out);
    Ok(b.finish()?)
}

fn f32_vs_int8(a: F32VsInt8Args) -> Result<()> {
    use intq_engine::{examples, ExecOptions, Model};
    let isa = pick_isa(&a.isa)?;
    let graph = conv_graph(&a)?;
    let input = examples::random_input(&graph, 7);
    let model = Model::with_options(
        graph,
        ExecOptions {
            kernels: Some(KernelTier::Fast(isa)),
            threads: a.threads,
        },
    )?;
    let min = Duration::from_millis(a.min_ms);
    // Interleaved halves, so drift in the machine's load hits both sides alike.
    let (mut t8, mut t32) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        t8.push(time(min / 2, || {
            model.run(&input).expect("runs");
        }));
        t32.push(time(min / 2, || {
            model.run_float(&input).expect("runs");
        }));
    }
    let t8 = t8.iter().copied().fold(f64::INFINITY, f64::min);
    let t32 = t32.iter().copied().fold(f64::INFINITY, f64::min);
    let (m, kk, n) = (
        a.height * a.width,
        a.kernel * a.kernel * a.channels,
        a.filters,
    );
    let ops = 2.0 * (m * kk * n) as f64;
    if a.json {
        #[derive(Serialize)]
        struct Out<'a> {
            bench: &'a str,
            isa: String,
            threads: usize,
            m: usize,
            k: usize,
            n: usize,
            int8_ms: f64,
            f32_ms: f64,
            int8_speedup_vs_f32: f64,
        }
        print_json(&Out {
            bench: "f32_vs_int8",
            isa: isa.to_string(),
            threads: model.threads(),
            m,
            k: kk,
            n,
            int8_ms: fixed(t8 * 1e3, 5),
            f32_ms: fixed(t32 * 1e3, 5),
            int8_speedup_vs_f32: fixed(t32 / t8, 3),
        })?;
    } else {
        println!(
            "conv {}x{}x{} -> {}x{}x{} (GEMM M={m} K={kk} N={n}): int8 {isa}, {} thread(s): {:.3} ms \
             ({:.1} GOPS); f32 executor, 1 thread, same run: {:.3} ms ({:.1} GFLOPS); int8 is {:.2}x",
            a.height,
            a.width,
            a.channels,
            a.kernel,
            a.kernel,
            a.filters,
            model.threads(),
            t8 * 1e3,
            ops / t8 / 1e9,
            t32 * 1e3,
            ops / t32 / 1e9,
            t32 / t8
        );
    }
    Ok(())
}

/// `p`-quantile (0..=1) of sorted samples, nearest rank.
/// The measured multiply peak of one core (GOPS) of the tiers that have one: AMX's `tdpbusd`
/// and AVX-512 VNNI's `vpdpbusd`.
fn tier_peak(tier: KernelTier) -> Option<f64> {
    match tier {
        #[cfg(target_arch = "x86_64")]
        KernelTier::Fast(Isa::Amx) => intq_kernels::gemm::amx_peak(2_000_000).map(|p| p.gops),
        #[cfg(target_arch = "x86_64")]
        KernelTier::Fast(Isa::Avx512Vnni) => {
            intq_kernels::gemm::vnni_peak(5_000_000).map(|p| p.gops)
        }
        _ => None,
    }
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn model(a: ModelArgs) -> Result<()> {
    use intq_engine::{examples, ExecOptions, Model};
    use intq_train::{calibrate, Arch, QuantCfg};
    // With --load, --model only names the model in the output (any graph may be timed).
    let arch = &a.model;
    let quant = match a.scheme.as_str() {
        "int8" => QuantCfg::int8(8, 8, true)?,
        "uint8" => QuantCfg::uint8(8, 8)?,
        other => bail!("--scheme must be int8 or uint8, not {other:?}"),
    };
    let tier = match a.isa.as_deref() {
        Some("reference") => KernelTier::Reference,
        _ => KernelTier::Fast(pick_isa(&a.isa)?),
    };
    let built = Instant::now();
    let graph = match &a.load {
        Some(path) => Model::load(path)?.into_graph(),
        None => calibrate::zoo_graph(arch.parse::<Arch>()?, &quant, a.batch, a.seed)
            .with_context(|| format!("building {arch} at batch {}", a.batch))?,
    };
    let batch = model_batch(&graph)?;
    // The activations' code type names the scheme: an int8 graph may still take u8 images,
    // quantized by its first op.
    let scheme = match graph
        .ops()
        .iter()
        .map(|op| graph.tensor(op.output()).dtype)
        .find(|d| matches!(d, intq_engine::DType::U8 | intq_engine::DType::I8))
    {
        Some(intq_engine::DType::U8) => "uint8",
        _ => "int8",
    };
    let build_s = built.elapsed().as_secs_f64();
    let input = examples::random_input(&graph, a.seed);
    let model = Model::with_options(
        graph,
        ExecOptions {
            kernels: Some(tier),
            threads: a.threads,
        },
    )?;
    if let Some(path) = &a.save {
        model
            .save(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &a.save_tflite_ready {
        let ready = Model::with_options(
            intq_tflite::lower_explicit_padding(model.graph())?,
            ExecOptions {
                kernels: Some(tier),
                threads: a.threads,
            },
        )?;
        // The rewrite must not change the function, or the peers would run another model.
        if ready.run(&input)? != model.run(&input)? {
            bail!("{arch}: the TFLite-padded graph computes something else");
        }
        ready
            .save(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if a.check {
        let reference = Model::with_options(
            model.graph().clone(),
            ExecOptions {
                kernels: Some(KernelTier::Reference),
                threads: 1,
            },
        )?;
        if model.run(&input)? != reference.run(&input)? {
            bail!("{arch}: the {tier} executor and the reference executor disagree");
        }
    }
    let macs: u64 = model
        .graph()
        .ops()
        .iter()
        .map(|op| op_macs(model.graph(), op))
        .sum();
    // Warm-up (first-touch of buffers, lazily dequantized f32 weights), then calls interleaved
    // int8 / f32 so drift in the machine's load hits both alike.
    model.run(&input)?;
    if a.f32 {
        model.run_float(&input)?;
    }
    let (mut t8, mut t32) = (Vec::new(), Vec::new());
    let min = Duration::from_millis(a.min_ms);
    let start = Instant::now();
    loop {
        let done = if a.iters > 0 {
            t8.len() >= a.iters
        } else {
            t8.len() >= 5 && start.elapsed() >= min
        };
        if done || t8.len() >= 100_000 {
            break;
        }
        let t = Instant::now();
        model.run(&input)?;
        t8.push(t.elapsed().as_secs_f64() * 1e3);
        if a.f32 {
            let t = Instant::now();
            model.run_float(&input)?;
            t32.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let op_ms = if a.profile || a.profile_ops {
        Some(time_ops(&model, &input, t8.len())?)
    } else {
        None
    };
    let profile = op_ms.as_ref().map(|t| by_class(model.graph(), t));
    let every_op = match &op_ms {
        Some(t) if a.profile_ops => Some(each_op(model.graph(), t)),
        _ => None,
    };
    t8.sort_by(|x, y| x.total_cmp(y));
    t32.sort_by(|x, y| x.total_cmp(y));
    let med = quantile(&t8, 0.5);
    let gops = 2.0 * macs as f64 / (med * 1e-3) / 1e9;
    let isa_name = match tier {
        KernelTier::Fast(isa) => isa.name().to_string(),
        KernelTier::Reference => "reference".to_string(),
    };
    // The tier's multiply instruction on registers alone, one core, measured after the run: the
    // ceiling of its GOPS on this machine, times the threads that ran.
    let peak = tier_peak(tier).map(|p| p * model.threads() as f64);
    if a.json {
        /// `--f32`'s measurements.
        #[derive(Serialize)]
        struct F32 {
            f32_threads: usize,
            f32_ms_median: f64,
            f32_ms_p10: f64,
            f32_ms_p90: f64,
            int8_speedup_vs_f32: f64,
        }
        #[derive(Serialize)]
        struct Class<'a> {
            class: &'a str,
            ops: usize,
            ms: f64,
            share: f64,
            gops: f64,
        }
        #[derive(Serialize)]
        struct EachOp<'a> {
            index: usize,
            output: &'a str,
            class: &'a str,
            shapes: &'a str,
            ms: f64,
            share: f64,
            gops: f64,
        }
        #[derive(Serialize)]
        struct Out<'a> {
            bench: &'a str,
            model: String,
            scheme: String,
            batch: usize,
            threads: usize,
            isa: &'a str,
            iters: usize,
            ms_median: f64,
            ms_p10: f64,
            ms_p90: f64,
            macs: u64,
            gops: f64,
            #[serde(skip_serializing_if = "Option::is_none")]
            peak_gops: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            share_of_peak: Option<f64>,
            build_s: f64,
            #[serde(flatten)]
            f32: Option<F32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            profile: Option<Vec<Class<'a>>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            profile_ops: Option<Vec<EachOp<'a>>>,
        }
        let f32 = a.f32.then(|| {
            let m32 = quantile(&t32, 0.5);
            F32 {
                f32_threads: 1,
                f32_ms_median: fixed(m32, 4),
                f32_ms_p10: fixed(quantile(&t32, 0.1), 4),
                f32_ms_p90: fixed(quantile(&t32, 0.9), 4),
                int8_speedup_vs_f32: fixed(m32 / med, 3),
            }
        });
        let profile = profile.as_ref().map(|rows| {
            rows.iter()
                .map(|r| Class {
                    class: &r.class,
                    ops: r.ops,
                    ms: fixed(r.ms, 4),
                    share: fixed(r.share, 4),
                    gops: fixed(r.gops, 2),
                })
                .collect()
        });
        let profile_ops = every_op.as_ref().map(|rows| {
            rows.iter()
                .map(|r| EachOp {
                    index: r.index,
                    output: &r.output,
                    class: &r.class,
                    shapes: &r.shapes,
                    ms: fixed(r.ms, 4),
                    share: fixed(r.share, 4),
                    gops: fixed(r.gops, 2),
                })
                .collect()
        });
        print_json(&Out {
            bench: "model",
            model: arch.to_string(),
            scheme: scheme.to_string(),
            batch,
            threads: model.threads(),
            isa: &isa_name,
            iters: t8.len(),
            ms_median: fixed(med, 4),
            ms_p10: fixed(quantile(&t8, 0.1), 4),
            ms_p90: fixed(quantile(&t8, 0.9), 4),
            macs,
            gops: fixed(gops, 2),
            peak_gops: peak.map(|p| fixed(p, 0)),
            share_of_peak: peak.map(|p| fixed(gops / p, 4)),
            build_s: fixed(build_s, 2),
            f32,
            profile,
            profile_ops,
        })?;
    } else {
        println!(
            "{arch} {} batch {} on {isa_name}, {} thread(s): median {med:.3} ms (p10 {:.3}, p90 \
                 {:.3}; {} calls; {:.2} GMAC, {gops:.1} GOPS); built in {build_s:.1} s",
            scheme,
            batch,
            model.threads(),
            quantile(&t8, 0.1),
            quantile(&t8, 0.9),
            t8.len(),
            macs as f64 / 1e9,
        );
        if let Some(p) = peak {
            println!(
                "  {:.1}% of the tier's multiply peak ({p:.0} GOPS: the instruction on registers \
                     alone, one core, times the threads)",
                100.0 * gops / p
            );
        }
        if a.f32 {
            let m32 = quantile(&t32, 0.5);
            println!(
                "  f32 executor (1 thread), same run, interleaved: median {m32:.3} ms; int8 is \
                     {:.2}x",
                m32 / med
            );
        }
        if let Some(rows) = &profile {
            println!("  where the time goes (per call, ops timed one by one):");
            for r in rows {
                println!(
                    "    {:<18} {:>3} ops {:>9.3} ms {:>5.1}% {:>8.1} GOPS",
                    r.class,
                    r.ops,
                    r.ms,
                    100.0 * r.share,
                    r.gops
                );
            }
        }
        if let Some(rows) = &every_op {
            println!("  every op, in graph order:");
            for r in rows {
                println!(
                    "    {:>3} {:<18} {:<40} {:>8.3} ms {:>5.1}% {:>7.1} GOPS  {}",
                    r.index,
                    r.class,
                    r.shapes,
                    r.ms,
                    100.0 * r.share,
                    r.gops,
                    r.output
                );
            }
        }
    }
    Ok(())
}

/// `x` at `decimals` decimal places, as `format!("{x:.decimals$}")` would print it: timings
/// carry no more digits than they resolve. Non-finite values stay so (JSON `null`).
fn fixed(x: f64, decimals: usize) -> f64 {
    format!("{x:.decimals$}").parse().unwrap_or(x)
}

/// Prints `v` as one line of JSON on stdout.
fn print_json(v: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// Time spent in one class of ops, per call.
struct ProfileRow {
    class: String,
    ops: usize,
    ms: f64,
    share: f64,
    gops: f64,
}

/// Runs `model` `calls` times (at least 5) timing every op: each op's milliseconds per call.
/// The op timer adds a clock read per op, so the total is a little above the untimed run's.
fn time_ops(
    model: &intq_engine::Model,
    input: &[intq_engine::TensorData],
    calls: usize,
) -> Result<Vec<f64>> {
    let calls = calls.max(5);
    let mut times = vec![Duration::ZERO; model.graph().ops().len()];
    for _ in 0..calls {
        model.run_profiled(input, &mut times)?;
    }
    Ok(times
        .iter()
        .map(|t| t.as_secs_f64() * 1e3 / calls as f64)
        .collect())
}

/// GOPS of `macs` multiply-accumulates in `ms` milliseconds (0 when either is 0).
fn gops_of(macs: u64, ms: f64) -> f64 {
    if ms > 0.0 {
        2.0 * macs as f64 / (ms * 1e-3) / 1e9
    } else {
        0.0
    }
}

/// One op's time per call, with what it computes.
struct OpRow {
    index: usize,
    /// The output tensor's name.
    output: String,
    class: String,
    /// `input -> output` shapes (`input * filter -> output` for convolutions).
    shapes: String,
    ms: f64,
    share: f64,
    gops: f64,
}

/// Every op's row, in graph order.
fn each_op(g: &intq_engine::Graph, ms: &[f64]) -> Vec<OpRow> {
    use intq_engine::Op;
    let total: f64 = ms.iter().sum();
    let dims = |id: intq_engine::TensorId| {
        let s: Vec<String> = g.tensor(id).shape.iter().map(|d| d.to_string()).collect();
        s.join("x")
    };
    g.ops()
        .iter()
        .zip(ms)
        .enumerate()
        .map(|(index, (op, &t))| {
            let first_in = op.inputs().first().map_or(String::from("-"), |&i| dims(i));
            let shapes = match op {
                Op::Conv2d { filter, .. } | Op::DepthwiseConv2d { filter, .. } => {
                    format!("{first_in} * {} -> {}", dims(*filter), dims(op.output()))
                }
                _ => format!("{first_in} -> {}", dims(op.output())),
            };
            OpRow {
                index,
                output: g.tensor(op.output()).name.clone(),
                class: op_class(g, op),
                shapes,
                ms: t,
                share: if total > 0.0 { t / total } else { 0.0 },
                gops: gops_of(op_macs(g, op), t),
            }
        })
        .collect()
}

/// The per-op times summed by op class, largest first.
fn by_class(g: &intq_engine::Graph, times: &[f64]) -> Vec<ProfileRow> {
    let mut rows: Vec<ProfileRow> = Vec::new();
    let mut macs_of: Vec<u64> = Vec::new();
    for (op, &t) in g.ops().iter().zip(times) {
        let class = op_class(g, op);
        let i = match rows.iter().position(|r| r.class == class) {
            Some(i) => i,
            None => {
                rows.push(ProfileRow {
                    class,
                    ops: 0,
                    ms: 0.0,
                    share: 0.0,
                    gops: 0.0,
                });
                macs_of.push(0);
                rows.len() - 1
            }
        };
        rows[i].ops += 1;
        rows[i].ms += t;
        macs_of[i] += op_macs(g, op);
    }
    let total: f64 = rows.iter().map(|r| r.ms).sum();
    for (r, &m) in rows.iter_mut().zip(&macs_of) {
        r.share = if total > 0.0 { r.ms / total } else { 0.0 };
        r.gops = gops_of(m, r.ms);
    }
    rows.sort_by(|x, y| y.ms.total_cmp(&x.ms));
    rows
}

/// An op's class for profiles: the kind, with the window and stride of convolutions and pools.
fn op_class(g: &intq_engine::Graph, op: &intq_engine::Op) -> String {
    use intq_engine::Op;
    let window = |filter: intq_engine::TensorId, stride: [usize; 2]| {
        let f = &g.tensor(filter).shape;
        let s = if stride == [1, 1] {
            String::new()
        } else {
            format!(" s{}", stride[0].max(stride[1]))
        };
        format!("{}x{}{s}", f[1], f[2])
    };
    match op {
        Op::Conv2d { filter, stride, .. } => format!("conv {}", window(*filter, *stride)),
        Op::DepthwiseConv2d { filter, stride, .. } => {
            format!("depthwise {}", window(*filter, *stride))
        }
        other => other.kind().name().to_string(),
    }
}

/// The batch size of a graph: the leading dimension of its (single) input.
fn model_batch(g: &intq_engine::Graph) -> Result<usize> {
    match g.inputs() {
        [id] => match g.tensor(*id).shape.first() {
            Some(&n) => Ok(n),
            None => bail!("the model's input is a scalar"),
        },
        ids => bail!("a zoo model has one input, this one has {}", ids.len()),
    }
}

/// Multiply-accumulates of one op (conv, depthwise, FC; 0 for the rest), for GOPS figures.
fn op_macs(g: &intq_engine::Graph, op: &intq_engine::Op) -> u64 {
    use intq_engine::Op;
    let n = |id: intq_engine::TensorId| g.tensor(id).num_elements() as u64;
    let shape = |id: intq_engine::TensorId| g.tensor(id).shape.clone();
    match op {
        Op::Conv2d { filter, output, .. } => {
            let f = shape(*filter);
            n(*output) * (f[1] * f[2] * f[3]) as u64
        }
        Op::DepthwiseConv2d { filter, output, .. } => {
            let f = shape(*filter);
            n(*output) * (f[1] * f[2]) as u64
        }
        Op::FullyConnected {
            weights, output, ..
        } => n(*output) * shape(*weights)[1] as u64,
        _ => 0,
    }
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
    // The AMX tier's ceiling on one core, measured right after the GEMM under the same clock.
    let peak = (isa == Isa::Amx && threads == 1)
        .then(|| tier_peak(KernelTier::Fast(isa)))
        .flatten();
    if a.json {
        // Tiers not measured are `null`.
        #[derive(Serialize)]
        struct Out<'a> {
            bench: &'a str,
            m: usize,
            k: usize,
            n: usize,
            dtype: &'a str,
            isa: String,
            threads: usize,
            gops: f64,
            ms_median: f64,
            portable_gops: Option<f64>,
            reference_gops: Option<f64>,
            speedup_vs_portable: Option<f64>,
            speedup_vs_reference: Option<f64>,
            /// Measured AMX peak of one core (amx, one thread only) and the GEMM's share of it.
            amx_peak_gops: Option<f64>,
            share_of_amx_peak: Option<f64>,
        }
        let opt = |g: Option<f64>| g.map(|g| fixed(g, 3));
        print_json(&Out {
            bench: "gemm",
            m: a.m,
            k: a.k,
            n: a.n,
            dtype: &a.dtype,
            isa: isa.to_string(),
            threads,
            gops: fixed(fast, 3),
            ms_median: fixed(r.fast * 1e3, 4),
            portable_gops: opt(portable),
            reference_gops: opt(reference),
            speedup_vs_portable: opt(portable.map(|p| fast / p)),
            speedup_vs_reference: opt(reference.map(|g| fast / g)),
            amx_peak_gops: opt(peak),
            share_of_amx_peak: peak.map(|p| fixed(fast / p, 4)),
        })?;
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
        if let Some(p) = peak {
            println!(
                "  amx peak measured after it (tdpbusd on tile registers): {p:.0} GOPS; the GEMM is {:.1}% of it",
                100.0 * fast / p
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
    use intq_engine::examples::Rng as _;
    let mut rng = intq_engine::examples::seeded(0x1234_5678_9abc_def0);
    let mut next = move || rng.next_u64();
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
