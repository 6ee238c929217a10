//! Test support for the reference conv / depthwise / fully-connected kernels: random geometry,
//! real-valued (f64) models of the three ops, and the comparison that holds a kernel to "the
//! requantized real result, off by one LSB only right at a rounding tie".

use intq_kernels::{ConvParams, Padding};
use intq_quant::{QuantParams, QuantizedMultiplier};

/// Seeded, so every failure reproduces.
pub use intq_testutil::TestRng as Rng;

/// Spatial geometry of one random conv case.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub batches: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kh: usize,
    pub kw: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub params: ConvParams,
}

/// A random geometry: small extents, strides 1..=3, dilations 1..=2, and SAME, VALID or explicit
/// padding, resolved by `Padding::resolve` (cases where the filter does not fit are redrawn).
pub fn random_geometry(rng: &mut Rng) -> Geometry {
    loop {
        let batches = rng.size(1, 2);
        let (in_h, in_w) = (rng.size(1, 7), rng.size(1, 7));
        let (kh, kw) = (rng.size(1, 3), rng.size(1, 3));
        let stride = (rng.size(1, 3), rng.size(1, 3));
        let dilation = (rng.size(1, 2), rng.size(1, 2));
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
        if let Some(((out_h, out_w), pad)) =
            padding.resolve((in_h, in_w), (kh, kw), stride, dilation)
        {
            return Geometry {
                batches,
                in_h,
                in_w,
                kh,
                kw,
                out_h,
                out_w,
                params: ConvParams {
                    stride_h: stride.0,
                    stride_w: stride.1,
                    dilation_h: dilation.0,
                    dilation_w: dilation.1,
                    padding: pad,
                },
            };
        }
    }
}

/// One output of a real-valued model: the exact-ish real result and the sum of the magnitudes
/// that went into it (what bounds its floating-point error).
#[derive(Debug, Clone, Copy)]
pub struct ModelOut {
    pub real: f64,
    pub magnitude: f64,
}

/// Dequantize codes with the per-element parameters `params_of(index)`.
pub fn dequantize_all(codes: &[i32], params_of: impl Fn(usize) -> QuantParams) -> Vec<f64> {
    codes
        .iter()
        .enumerate()
        .map(|(i, &q)| params_of(i).dequantize(q) as f64)
        .collect()
}

/// The real NHWC input embedded in a tensor of real zeros big enough that every window of the
/// geometry lies inside it: padding done literally, unlike the kernels, which skip taps.
fn zero_padded(input: &[f64], channels: usize, g: &Geometry) -> (Vec<f64>, usize, usize) {
    let p = &g.params;
    let reach_h = (g.out_h - 1) * p.stride_h + (g.kh - 1) * p.dilation_h + 1;
    let reach_w = (g.out_w - 1) * p.stride_w + (g.kw - 1) * p.dilation_w + 1;
    let ph = reach_h.max(p.padding.top + g.in_h);
    let pw = reach_w.max(p.padding.left + g.in_w);
    let mut padded = vec![0.0; g.batches * ph * pw * channels];
    for b in 0..g.batches {
        for y in 0..g.in_h {
            for x in 0..g.in_w {
                for c in 0..channels {
                    padded
                        [((b * ph + y + p.padding.top) * pw + x + p.padding.left) * channels + c] =
                        input[((b * g.in_h + y) * g.in_w + x) * channels + c];
                }
            }
        }
    }
    (padded, ph, pw)
}

/// Real NHWC convolution with an OHWI filter plus a real bias per output channel.
pub fn conv2d_f64(
    input: &[f64],
    in_c: usize,
    filter: &[f64],
    out_c: usize,
    bias: &[f64],
    g: &Geometry,
) -> Vec<ModelOut> {
    let (padded, ph, pw) = zero_padded(input, in_c, g);
    let p = &g.params;
    let mut out = Vec::with_capacity(g.batches * g.out_h * g.out_w * out_c);
    for b in 0..g.batches {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                for oc in 0..out_c {
                    let mut real = bias[oc];
                    let mut magnitude = bias[oc].abs();
                    for fy in 0..g.kh {
                        for fx in 0..g.kw {
                            let y = oy * p.stride_h + fy * p.dilation_h;
                            let x = ox * p.stride_w + fx * p.dilation_w;
                            for ic in 0..in_c {
                                let term = padded[((b * ph + y) * pw + x) * in_c + ic]
                                    * filter[((oc * g.kh + fy) * g.kw + fx) * in_c + ic];
                                real += term;
                                magnitude += term.abs();
                            }
                        }
                    }
                    out.push(ModelOut { real, magnitude });
                }
            }
        }
    }
    out
}

/// Real NHWC depthwise convolution, filter `[1, kh, kw, in_c * multiplier]`.
pub fn depthwise_f64(
    input: &[f64],
    in_c: usize,
    filter: &[f64],
    multiplier: usize,
    bias: &[f64],
    g: &Geometry,
) -> Vec<ModelOut> {
    let (padded, ph, pw) = zero_padded(input, in_c, g);
    let p = &g.params;
    let out_c = in_c * multiplier;
    let mut out = vec![
        ModelOut {
            real: 0.0,
            magnitude: 0.0
        };
        g.batches * g.out_h * g.out_w * out_c
    ];
    for b in 0..g.batches {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                for oc in 0..out_c {
                    let ic = oc / multiplier;
                    let mut real = bias[oc];
                    let mut magnitude = bias[oc].abs();
                    for fy in 0..g.kh {
                        for fx in 0..g.kw {
                            let y = oy * p.stride_h + fy * p.dilation_h;
                            let x = ox * p.stride_w + fx * p.dilation_w;
                            let term = padded[((b * ph + y) * pw + x) * in_c + ic]
                                * filter[(fy * g.kw + fx) * out_c + oc];
                            real += term;
                            magnitude += term.abs();
                        }
                    }
                    out[((b * g.out_h + oy) * g.out_w + ox) * out_c + oc] =
                        ModelOut { real, magnitude };
                }
            }
        }
    }
    out
}

/// Real fully connected layer: `out[b][o] = bias[o] + Σ_d in[b][d] * w[o][d]`.
pub fn fully_connected_f64(
    input: &[f64],
    batches: usize,
    depth: usize,
    weights: &[f64],
    out_features: usize,
    bias: &[f64],
) -> Vec<ModelOut> {
    let mut out = Vec::with_capacity(batches * out_features);
    for b in 0..batches {
        for o in 0..out_features {
            let mut real = bias[o];
            let mut magnitude = bias[o].abs();
            for d in 0..depth {
                let term = input[b * depth + d] * weights[o * depth + d];
                real += term;
                magnitude += term.abs();
            }
            out.push(ModelOut { real, magnitude });
        }
    }
    out
}

/// How the integer kernel was told to requantize: output params, clamp, and the fixed-point
/// multiplier of each output channel (what bounds its double-rounding error).
pub struct Requant {
    pub output: QuantParams,
    pub clamp_min: i32,
    pub clamp_max: i32,
    pub multipliers: Vec<QuantizedMultiplier>,
}

/// Tally of a comparison, so a test can check it exercised what it claims to.
#[derive(Debug, Default, Clone, Copy)]
pub struct Agreement {
    pub outputs: usize,
    /// Outputs whose requantized real value lies inside the clamp.
    pub unclamped: usize,
    /// Outputs one LSB away from the float model (each at a rounding tie).
    pub off_by_one: usize,
}

/// The float model's code: `round_half_away(real / S_out) + Z_out`, clamped; and whether the
/// clamp changed it.
pub fn model_code(real: f64, rq: &Requant) -> (i32, bool) {
    let v = (real / rq.output.scale as f64).round() + rq.output.zero_point as f64;
    let clamped = v.clamp(rq.clamp_min as f64, rq.clamp_max as f64);
    (clamped as i32, clamped != v)
}

/// Asserts every kernel output equals the float model's, except one LSB off where the real
/// value is within the integer pipeline's error of a rounding tie: the Q31 multiplier's relative
/// error, the f32 dequantization of each term, and the first rounding of the "double rounding"
/// (half a unit of `2^shift` output LSBs when the multiplier shifts right).
pub fn assert_agrees_with_model(
    got: &[i32],
    model: &[ModelOut],
    rq: &Requant,
    context: &str,
    tally: &mut Agreement,
) {
    assert_eq!(got.len(), model.len(), "{context}: output length");
    let channels = rq.multipliers.len();
    let s_out = rq.output.scale as f64;
    for (i, (&q, m)) in got.iter().zip(model).enumerate() {
        let (expected, clamped) = model_code(m.real, rq);
        tally.outputs += 1;
        if !clamped {
            tally.unclamped += 1;
        }
        if q == expected {
            continue;
        }
        let v = m.real / s_out;
        let tie_distance = ((v - v.floor()) - 0.5).abs();
        let shift = rq.multipliers[i % channels].shift;
        let first_rounding = if shift < 0 { 2f64.powi(shift - 1) } else { 0.0 };
        let window =
            first_rounding + m.magnitude / s_out * 2f64.powi(-21) + v.abs() * 2f64.powi(-29) + 1e-9;
        assert!(
            (q - expected).abs() == 1 && tie_distance <= window,
            "{context}: output {i} is {q}, float model says {expected} (real/S_out = {v}, \
             {tie_distance} from a tie, allowed {window})"
        );
        tally.off_by_one += 1;
    }
}
