//! A small hand-built CNN (conv -> depthwise -> residual add -> average pool -> fully connected ->
//! softmax) with deterministic pseudo-random weights, for tests, the file format and the CLI.

use crate::{
    Activation, ChannelParams, DType, Graph, GraphBuilder, Op, Padding, Quant, QuantParams,
    TensorData, TensorId,
};
use intq_quant::QScheme;

pub use rand_core::{Rng, SeedableRng};
/// SplitMix64 (Steele, Lea and Flood 2014), Vigna's reference stream: tiny, seedable, and the
/// same on every platform, so a seed names one model forever (committed fixtures rely on it).
pub use rand_xoshiro::SplitMix64;

/// The generator the example models draw from, seeded.
pub fn seeded(seed: u64) -> SplitMix64 {
    SplitMix64::seed_from_u64(seed)
}

/// The draws the example models take from a generator. Their formulas are part of what a seed
/// means: changing one changes every seeded model.
pub trait Draws: Rng {
    /// Uniform in `[lo, hi)`, from the top 24 bits (exactly representable in f32).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u32 << 24) as f32;
        lo + (hi - lo) * u
    }

    /// Uniform integer in `[lo, hi]`.
    fn int_in(&mut self, lo: i32, hi: i32) -> i32 {
        let span = (hi as i64 - lo as i64 + 1) as u64;
        (lo as i64 + (self.next_u64() % span) as i64) as i32
    }
}

impl<R: Rng + ?Sized> Draws for R {}

/// Image height/width and channels of [`small_cnn`]'s input `[1, 8, 8, 3]`.
pub const SMALL_CNN_INPUT: [usize; 4] = [1, 8, 8, 3];
/// Number of classes [`small_cnn`] scores.
pub const SMALL_CNN_CLASSES: usize = 10;

/// Real ranges of the activations, chosen to cover what the pseudo-random weights produce on
/// inputs in [-1, 1] (weights are scaled by `1/sqrt(fan_in)`, so pre-activations have a standard
/// deviation below 1) with room to spare, so that the integer model rarely saturates where the
/// float model would not.
const INPUT_RANGE: (f32, f32) = (-1.0, 1.0);
const CONV_RANGE: (f32, f32) = (0.0, 4.0); // ReLU
const DW_RANGE: (f32, f32) = (0.0, 6.0); // ReLU6: its natural range
const ADD_RANGE: (f32, f32) = (0.0, 5.0);
/// The classifier's weights are larger than the rest so that the logits of different classes
/// spread apart and the softmax has a clear winner on most inputs.
const FC_GAIN: f32 = 3.0;
const LOGITS_RANGE: (f32, f32) = (-4.0, 4.0);

/// Per-encoding choices: the activation code type and how weights are quantized.
#[derive(Clone, Copy)]
struct Encoding {
    dtype: DType,
    activations: QScheme,
}

impl Encoding {
    fn act(&self, (lo, hi): (f32, f32)) -> Quant {
        Quant::PerTensor(self.act_params((lo, hi)))
    }
    fn act_params(&self, (lo, hi): (f32, f32)) -> QuantParams {
        self.activations
            .choose_params(lo, hi)
            .expect("small_cnn's activation ranges are finite and ordered")
    }
}

/// Quantized weights of one layer: codes, their params, and the per-channel scales `S_w[k]`
/// (one entry repeated for per-tensor params) that the bias scale needs.
struct QuantizedWeights {
    data: TensorData,
    quant: Quant,
    scales: Vec<f32>,
}

/// Draws `channels` groups of real weights (laid out by `index(k, j)` for channel `k`, element
/// `j < per_channel`) and quantizes them: uint8 per tensor over the narrow range [1, 255] with an
/// asymmetric range (so `Z_w` is not 128), or int8 symmetric per channel along `axis`.
fn weights(
    rng: &mut SplitMix64,
    dtype: DType,
    shape: &[usize],
    axis: usize,
    fan_in: usize,
    gain: f32,
) -> QuantizedWeights {
    let n: usize = shape.iter().product();
    let channels = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let channel_of = |i: usize| (i / inner) % channels;
    // Uniform in [-a, a] has variance a^2/3; a = gain * sqrt(3 / fan_in) gives
    // Var(w) = gain^2 / fan_in. A positive skew (1.4x on the positive side) makes uint8's weight
    // zero point non-central.
    let a = gain * (3.0 / fan_in as f32).sqrt();
    let mut reals: Vec<f32> = (0..n).map(|_| rng.uniform(-a, 1.4 * a)).collect();
    // Centre each output channel: the skew then shows in the weights' range (and uint8's zero
    // point) but not as a common offset of every output, which would crowd the logits together
    // far from zero.
    let mut sums = vec![0f32; channels];
    for (i, &w) in reals.iter().enumerate() {
        sums[channel_of(i)] += w;
    }
    let per_channel = (n / channels) as f32;
    for (i, w) in reals.iter_mut().enumerate() {
        *w -= sums[channel_of(i)] / per_channel;
    }
    match dtype {
        DType::U8 => {
            let (lo, hi) = reals
                .iter()
                .fold((0f32, 0f32), |(lo, hi), &w| (lo.min(w), hi.max(w)));
            let p = QScheme::UINT8_NARROW
                .choose_params(lo, hi)
                .expect("finite weights");
            let codes = reals
                .iter()
                .map(|&w| p.quantize(w, QScheme::UINT8_NARROW.qmin(), 255) as u8)
                .collect();
            QuantizedWeights {
                data: TensorData::U8(codes),
                quant: Quant::PerTensor(p),
                scales: vec![p.scale; channels],
            }
        }
        DType::I8 => {
            let mut max_abs = vec![0f32; channels];
            for (i, &w) in reals.iter().enumerate() {
                let k = channel_of(i);
                max_abs[k] = max_abs[k].max(w.abs());
            }
            let s = QScheme::INT8_SYMMETRIC;
            let params: Vec<QuantParams> = max_abs
                .iter()
                .map(|&m| s.choose_params(-m, m).expect("finite weights"))
                .collect();
            let codes = reals
                .iter()
                .enumerate()
                .map(|(i, &w)| params[channel_of(i)].quantize(w, s.qmin(), s.qmax()) as i8)
                .collect();
            let scales: Vec<f32> = params.iter().map(|p| p.scale).collect();
            let quant = ChannelParams::new(scales.clone(), vec![0; channels], axis)
                .expect("positive scales");
            QuantizedWeights {
                data: TensorData::I8(codes),
                quant: Quant::PerChannel(quant),
                scales,
            }
        }
        other => panic!("small_cnn builds uint8 or int8 models, not {other}"),
    }
}

/// int32 bias of real values in [-0.1, 0.1], in units of `S_in * S_w[k]` with `Z = 0`, and its
/// quantization recorded (per channel when the weights are).
fn bias(
    b: &mut GraphBuilder,
    rng: &mut SplitMix64,
    name: &str,
    s_in: f32,
    w: &QuantizedWeights,
) -> TensorId {
    let scales: Vec<f32> = w.scales.iter().map(|&s_w| s_in * s_w).collect();
    let codes: Vec<i32> = scales
        .iter()
        .map(|&s| (rng.uniform(-0.1, 0.1) as f64 / s as f64).round() as i32)
        .collect();
    let quant = match &w.quant {
        Quant::PerTensor(_) => Quant::PerTensor(QuantParams {
            scale: scales[0],
            zero_point: 0,
        }),
        Quant::PerChannel(_) => Quant::PerChannel(
            ChannelParams::new(scales.clone(), vec![0; scales.len()], 0).expect("positive scales"),
        ),
    };
    b.constant(name, &[codes.len()], Some(quant), TensorData::I32(codes))
}

/// A hand-built network on a `[1, 8, 8, 3]` image:
///
/// ```text
/// input -> conv 3x3x8 (SAME, ReLU) ─┬─> depthwise 3x3 (SAME, ReLU6) -> add -> avg pool 2x2/2
///                                   └───────────────────────────────────^
///       -> fully connected 128 -> 10 -> softmax
/// ```
///
/// `DType::U8` is the paper's scheme (uint8 activations, per-tensor uint8 weights over [1, 255]
/// with non-zero weight zero points); `DType::I8` is TFLite's (int8 asymmetric activations,
/// symmetric per-channel int8 weights). With `float_edges` the graph reads f32 through a Quantize
/// op and returns f32 through a Dequantize op; otherwise it reads and returns codes. The graph
/// input is called `input` and the output `probs` either way. Weights and biases are drawn from
/// `seed`; the same seed always gives the same model.
///
/// # Panics
/// If `dtype` is not `U8` or `I8` (there is no such model to build).
pub fn small_cnn(dtype: DType, float_edges: bool, seed: u64) -> Graph {
    let enc = match dtype {
        DType::U8 => Encoding {
            dtype,
            activations: QScheme::UINT8,
        },
        DType::I8 => Encoding {
            dtype,
            activations: QScheme::INT8,
        },
        other => panic!("small_cnn builds uint8 or int8 models, not {other}"),
    };
    let mut rng = seeded(seed);
    let mut b = GraphBuilder::new();
    let [n, h, w, c] = SMALL_CNN_INPUT;
    let (c1, classes) = (8, SMALL_CNN_CLASSES);
    let act = enc.dtype;

    let input_params = enc.act_params(INPUT_RANGE);
    let (graph_input, input) = if float_edges {
        let f = b.tensor("input", DType::F32, &[n, h, w, c], None);
        let q = b.tensor("input_q", act, &[n, h, w, c], Some(enc.act(INPUT_RANGE)));
        b.op(Op::Quantize {
            input: f,
            output: q,
        });
        (f, q)
    } else {
        let q = b.tensor("input", act, &[n, h, w, c], Some(enc.act(INPUT_RANGE)));
        (q, q)
    };
    b.input(graph_input);

    // conv: OHWI [8, 3, 3, 3], per-channel axis 0.
    let conv_w = weights(&mut rng, act, &[c1, 3, 3, c], 0, 3 * 3 * c, 1.0);
    let conv_filter = b.constant(
        "conv/weights",
        &[c1, 3, 3, c],
        Some(conv_w.quant.clone()),
        conv_w.data.clone(),
    );
    let conv_bias = bias(&mut b, &mut rng, "conv/bias", input_params.scale, &conv_w);
    let conv_params = enc.act_params(CONV_RANGE);
    let conv = b.tensor("conv", act, &[n, h, w, c1], Some(enc.act(CONV_RANGE)));
    b.op(Op::Conv2d {
        input,
        filter: conv_filter,
        bias: Some(conv_bias),
        output: conv,
        stride: [1, 1],
        dilation: [1, 1],
        padding: Padding::Same,
        activation: Activation::Relu,
    });

    // depthwise: [1, 3, 3, 8], multiplier 1, per-channel axis 3.
    let dw_w = weights(&mut rng, act, &[1, 3, 3, c1], 3, 3 * 3, 1.0);
    let dw_filter = b.constant(
        "dw/weights",
        &[1, 3, 3, c1],
        Some(dw_w.quant.clone()),
        dw_w.data.clone(),
    );
    let dw_bias = bias(&mut b, &mut rng, "dw/bias", conv_params.scale, &dw_w);
    let dw = b.tensor("dw", act, &[n, h, w, c1], Some(enc.act(DW_RANGE)));
    b.op(Op::DepthwiseConv2d {
        input: conv,
        filter: dw_filter,
        bias: Some(dw_bias),
        output: dw,
        stride: [1, 1],
        dilation: [1, 1],
        padding: Padding::Same,
        depth_multiplier: 1,
        activation: Activation::Relu6,
    });

    // Residual: the depthwise output plus the conv output it was computed from.
    let add = b.tensor("add", act, &[n, h, w, c1], Some(enc.act(ADD_RANGE)));
    b.op(Op::Add {
        lhs: dw,
        rhs: conv,
        output: add,
        activation: Activation::None,
    });

    let (ph, pw) = (h / 2, w / 2);
    let pool = b.tensor("pool", act, &[n, ph, pw, c1], Some(enc.act(ADD_RANGE)));
    b.op(Op::AveragePool2d {
        input: add,
        output: pool,
        filter: [2, 2],
        stride: [2, 2],
        padding: Padding::Valid,
        activation: Activation::None,
    });

    // FC reads the pooled NHWC tensor flattened: depth = 4 * 4 * 8 = 128.
    let depth = ph * pw * c1;
    let fc_w = weights(&mut rng, act, &[classes, depth], 0, depth, FC_GAIN);
    let fc_weights = b.constant(
        "fc/weights",
        &[classes, depth],
        Some(fc_w.quant.clone()),
        fc_w.data.clone(),
    );
    let pool_params = enc.act_params(ADD_RANGE);
    let fc_bias = bias(&mut b, &mut rng, "fc/bias", pool_params.scale, &fc_w);
    let logits = b.tensor("logits", act, &[n, classes], Some(enc.act(LOGITS_RANGE)));
    b.op(Op::FullyConnected {
        input: pool,
        weights: fc_weights,
        bias: Some(fc_bias),
        output: logits,
        activation: Activation::None,
    });

    let probs_params = QuantParams {
        scale: 1.0 / 256.0,
        zero_point: if act == DType::U8 { 0 } else { -128 },
    };
    let probs_name = if float_edges { "probs_q" } else { "probs" };
    let probs = b.tensor(
        probs_name,
        act,
        &[n, classes],
        Some(Quant::PerTensor(probs_params)),
    );
    b.op(Op::Softmax {
        input: logits,
        output: probs,
        beta: 1.0,
    });

    if float_edges {
        let f = b.tensor("probs", DType::F32, &[n, classes], None);
        b.op(Op::Dequantize {
            input: probs,
            output: f,
        });
        b.output(f);
    } else {
        b.output(probs);
    }
    b.finish().expect("small_cnn is a valid graph")
}

/// One pseudo-random value per graph input, drawn from `seed`: every code the input may hold
/// (its type's, or its narrowed range), uniformly, for 8-bit inputs; for f32 inputs, reals uniform over the range their Quantize op represents
/// (or [-1, 1] when no Quantize reads them); int32 inputs get codes in [-1000, 1000].
pub fn random_input(graph: &Graph, seed: u64) -> Vec<TensorData> {
    let mut rng = seeded(seed);
    graph
        .inputs()
        .iter()
        .map(|&id| {
            let t = graph.tensor(id);
            let n = t.num_elements();
            let (lo, hi) = t.code_limits().unwrap_or((-1000, 1000));
            match t.dtype {
                DType::U8 => TensorData::U8((0..n).map(|_| rng.int_in(lo, hi) as u8).collect()),
                DType::I8 => TensorData::I8((0..n).map(|_| rng.int_in(lo, hi) as i8).collect()),
                DType::I32 => TensorData::I32((0..n).map(|_| rng.int_in(-1000, 1000)).collect()),
                DType::F32 => {
                    let (lo, hi) = quantized_range_of(graph, id).unwrap_or((-1.0, 1.0));
                    TensorData::F32((0..n).map(|_| rng.uniform(lo, hi)).collect())
                }
            }
        })
        .collect()
}

/// The real range `[S (qmin - Z), S (qmax - Z)]` of the codes a Quantize op makes of `id`.
fn quantized_range_of(graph: &Graph, id: TensorId) -> Option<(f32, f32)> {
    graph.ops().iter().find_map(|op| match op {
        Op::Quantize { input, output } if *input == id => {
            let t = graph.tensor(*output);
            let p = t.params()?;
            let (qmin, qmax) = t.code_limits()?;
            Some((p.dequantize(qmin), p.dequantize(qmax)))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_reference_sequence() {
        // First outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let mut r = seeded(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn small_cnn_is_deterministic_and_seed_dependent() {
        for dtype in [DType::U8, DType::I8] {
            for edges in [false, true] {
                assert_eq!(small_cnn(dtype, edges, 3), small_cnn(dtype, edges, 3));
                assert_ne!(small_cnn(dtype, edges, 3), small_cnn(dtype, edges, 4));
            }
        }
    }

    #[test]
    fn uint8_weights_have_non_central_zero_points_and_narrow_codes() {
        let g = small_cnn(DType::U8, false, 1);
        for name in ["conv/weights", "dw/weights", "fc/weights"] {
            let t = g.tensor(g.tensor_by_name(name).unwrap());
            let p = t.params().unwrap();
            assert!(p.zero_point != 0 && p.zero_point != 128, "{name}: {p:?}");
            let Some(TensorData::U8(codes)) = &t.data else {
                panic!("{name} is not uint8")
            };
            assert!(codes.iter().all(|&q| q >= 1), "{name} uses code 0");
        }
    }

    #[test]
    fn int8_weights_are_symmetric_per_channel() {
        let g = small_cnn(DType::I8, true, 1);
        for (name, axis) in [("conv/weights", 0), ("dw/weights", 3), ("fc/weights", 0)] {
            let t = g.tensor(g.tensor_by_name(name).unwrap());
            let Some(Quant::PerChannel(cp)) = &t.quant else {
                panic!("{name} is not per channel")
            };
            assert_eq!(cp.axis(), axis);
            assert_eq!(cp.len(), t.shape[axis]);
            assert!(cp.zero_points().iter().all(|&z| z == 0));
            let Some(TensorData::I8(codes)) = &t.data else {
                panic!("{name} is not int8")
            };
            assert!(codes.iter().all(|&q| q >= -127));
            // Symmetric per channel: each channel's largest |code| is exactly 127.
            let inner: usize = t.shape[axis + 1..].iter().product();
            let mut max_abs = vec![0i32; cp.len()];
            for (i, &q) in codes.iter().enumerate() {
                let k = (i / inner) % cp.len();
                max_abs[k] = max_abs[k].max((q as i32).abs());
            }
            assert!(max_abs.iter().all(|&m| m == 127), "{name}: {max_abs:?}");
        }
        assert_eq!(g.tensor(g.inputs()[0]).dtype, DType::F32);
        assert_eq!(g.tensor(g.outputs()[0]).dtype, DType::F32);
    }

    #[test]
    fn random_input_fits_the_graph() {
        for dtype in [DType::U8, DType::I8] {
            for edges in [false, true] {
                let g = small_cnn(dtype, edges, 0);
                let x = random_input(&g, 5);
                assert_eq!(x.len(), 1);
                let t = g.tensor(g.inputs()[0]);
                assert_eq!(x[0].dtype(), t.dtype);
                assert_eq!(x[0].len(), t.num_elements());
                assert_eq!(x, random_input(&g, 5));
                if let TensorData::F32(v) = &x[0] {
                    assert!(v.iter().all(|r| (-1.01..=1.01).contains(r)));
                }
            }
        }
    }
}
