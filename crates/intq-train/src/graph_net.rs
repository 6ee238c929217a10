//! A QAT network built from an imported ONNX graph ([`intq_onnx::Graph`]) out of the zoo's own
//! layers: Conv (+ BatchNormalization) (+ Relu / Clip to [0, 6]) becomes one [`ConvBn`] with BN
//! folded exactly as the zoo's are, Gemm/MatMul (+ Relu) a [`QLinear`], Add (+ Relu) a [`QAdd`],
//! Concat a [`QConcat`], pools a [`Pool`], HardSwish, Sigmoid and Mul layers of their own whose
//! exact evaluation is the engine's integer op on the codes; Pad and uneven padding are steps;
//! Flatten and the flattening Reshape only re-view the data, and a trailing Softmax/LogSoftmax
//! stays outside the loss ([`GraphNet::forward`] returns the logits before it). With
//! quantization off ([`Ctx::float`]) the network computes the imported graph in f32.
//!
//! The input follows the pixel contract of docs/spec.md §10: the network is fed pixels `p/255`
//! (NCHW) and the integer model raw uint8 pixels (NHWC). The normalization the ONNX model
//! expects (`--normalize`, composed with any Sub/Div/Mul/Add by constants at the graph's start,
//! the preprocessing some exporters bake in) is an [`InputQuant`]: one mean and std on every
//! channel set the input's `(S, Z)`, per-channel values fold into the first convolution.
//!
//! An activation that is 2-D in ONNX (`[N, F]`) is carried as `[N, F, 1, 1]`, the layout the
//! zoo's classifier input has.

use burn::module::{Module, Param, RunningState};
use burn::optim::GradientsParams;
use burn::tensor::ops::PadMode;
use burn::tensor::{activation, Device, Int, Tensor, TensorData};

use crate::conv_transpose::{BnFold, QConvTranspose};
use crate::fake_quant::{f64_tensor, host_vec};
use crate::layers::{
    Act, ConvBn, Ctx, InputQuant, LayerOpts, Pool, QAdd, QConcat, QLinear, ACT_NONE, ACT_RELU,
    ACT_RELU6,
};
use crate::observer::EmaObserver;
use crate::sgd::{self, SgdStep, Velocity};
use crate::trainer::cross_entropy;
use crate::TrainError;
use intq_onnx::{Arith, Graph, Op, ValueId};
use intq_quant::QuantParams;

/// A trainable layer of an imported network. Held once per layer in a Vec, so the variants'
/// sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Layer {
    Conv(ConvBn),
    ConvTranspose(QConvTranspose),
    Linear(QLinear),
    Add(QAdd),
    Concat(QConcat),
    Pool(Pool),
    HardSwish(QHardSwish),
    Sigmoid(QSigmoid),
    Mul(QMul),
    Window(WindowPool),
    Sub(QSub),
    LeakyRelu(QLeakyRelu),
    Tanh(QTanh),
    Resize(ResizeNearest),
    Prelu(QPrelu),
    Gate(QGate),
    MaxMin(QMaxMin),
    Bilinear(ResizeBilinear),
}

/// Bilinear resize of H and W (ONNX Resize, mode linear), keeping the input's params as the
/// engine's ResizeBilinear does. Training computes ONNX's interpolation at the positions
/// `pos_h`, `pos_w` (a product with two interpolation matrices) and fake-quantizes it to the
/// input's grid; exact evaluation runs the engine's kernel on the codes (docs/spec.md §11.8:
/// 10-bit fixed point for int8, TFLite's f32 expression for uint8) in the mode whose positions
/// are ONNX's, found when the layer is built.
#[derive(Module, Debug)]
pub struct ResizeBilinear {
    pub pos_h: Vec<f32>,
    pub pos_w: Vec<f32>,
    pub in_h: usize,
    pub in_w: usize,
    pub align_corners: bool,
    pub half_pixel_centers: bool,
}

impl ResizeBilinear {
    /// The engine's mode (`align_corners`, `half_pixel_centers`) whose source positions, each
    /// clamped to the picture, are `pos` (ONNX's, from `n_in` rows and columns), if one is.
    fn engine_mode(pos: [&[f32]; 2], n_in: [usize; 2]) -> Option<(bool, bool)> {
        [(false, false), (false, true), (true, false)]
            .into_iter()
            .find(|&(align_corners, half_pixel_centers)| {
                (0..2).all(|d| {
                    let (n, n_out) = (n_in[d], pos[d].len());
                    let last = (n - 1) as f64;
                    let scale = if align_corners && n_out > 1 {
                        (n - 1) as f64 / (n_out - 1) as f64
                    } else {
                        n as f64 / n_out as f64
                    };
                    pos[d].iter().enumerate().all(|(o, &p)| {
                        let t = if half_pixel_centers {
                            (o as f64 + 0.5) * scale - 0.5
                        } else {
                            o as f64 * scale
                        };
                        let p = (p as f64).clamp(0.0, last);
                        (t.clamp(0.0, last) - p).abs() <= 1e-5 * n as f64
                    })
                })
            })
    }

    /// `[n_out, n_in]` interpolation weights along an axis, row-major.
    fn matrix(pos: &[f32], n_in: usize) -> Vec<f32> {
        let mut m = vec![0f32; pos.len() * n_in];
        for (o, (lo, hi, f)) in intq_onnx::ir::linear_taps(pos, n_in)
            .into_iter()
            .enumerate()
        {
            m[o * n_in + lo] += 1.0 - f;
            m[o * n_in + hi] += f;
        }
        m
    }

    pub fn forward(&self, a: Act, ctx: &Ctx) -> Act {
        let [n, c, h, w] = a.x.dims();
        let (oh, ow) = (self.pos_h.len(), self.pos_w.len());
        let device = a.x.device();
        if let (Some(q), Some(p)) = (ctx.exact_quant(), a.q) {
            let scheme = q.act_scheme;
            let (qmin, qmax) = (scheme.qmin(), scheme.qmax());
            let codes: Vec<i32> = host_vec(a.x)
                .into_iter()
                .map(|v| ((v / p.scale).round() as i32 + p.zero_point).clamp(qmin, qmax))
                .collect();
            // NCHW to NHWC, the engine's kernel, and back.
            let mut nhwc = vec![0i32; codes.len()];
            for (k, &v) in codes.iter().enumerate() {
                let (x, y, ch, b) = (k % w, (k / w) % h, (k / (w * h)) % c, k / (w * h * c));
                nhwc[((b * h + y) * w + x) * c + ch] = v;
            }
            let mode = intq_kernels::reference::ResizeMode {
                align_corners: self.align_corners,
                half_pixel_centers: self.half_pixel_centers,
            };
            let (ins, outs) = ([n, h, w, c], [n, oh, ow, c]);
            let out: Vec<i32> = if scheme.is_signed() {
                let src: Vec<i8> = nhwc.iter().map(|&v| v as i8).collect();
                let mut dst = vec![0i8; n * oh * ow * c];
                intq_kernels::reference::resize_bilinear(
                    &src,
                    ins,
                    mode,
                    intq_kernels::reference::BilinearArithmetic::Integer,
                    &mut dst,
                    outs,
                );
                dst.into_iter().map(i32::from).collect()
            } else {
                let src: Vec<u8> = nhwc.iter().map(|&v| v as u8).collect();
                let mut dst = vec![0u8; n * oh * ow * c];
                intq_kernels::reference::resize_bilinear(
                    &src,
                    ins,
                    mode,
                    intq_kernels::reference::BilinearArithmetic::Float,
                    &mut dst,
                    outs,
                );
                dst.into_iter().map(i32::from).collect()
            };
            let mut nchw = vec![0f64; out.len()];
            for (k, &v) in out.iter().enumerate() {
                let (ch, x, y, b) = (k % c, (k / c) % ow, (k / (c * ow)) % oh, k / (c * ow * oh));
                nchw[((b * c + ch) * oh + y) * ow + x] = p.scale as f64 * (v - p.zero_point) as f64;
            }
            return Act {
                x: f64_tensor(nchw, [n, c, oh, ow], &device),
                q: a.q,
            };
        }
        let mw: Tensor<2> = Tensor::from_data(
            TensorData::new(Self::matrix(&self.pos_w, w), [ow, w]),
            &device,
        );
        let mh: Tensor<2> = Tensor::from_data(
            TensorData::new(Self::matrix(&self.pos_h, h), [oh, h]),
            &device,
        );
        let y =
            a.x.matmul(mw.transpose().reshape([1, 1, w, ow]).expand([n, c, w, ow]));
        let y = mh.reshape([1, 1, oh, h]).expand([n, c, oh, h]).matmul(y);
        let y = match (a.q, ctx.quant) {
            (Some(p), Some(q)) => crate::fake_quant::fake_quant(y, q.act_scheme, p),
            _ => y,
        };
        Act { x: y, q: a.q }
    }
}

/// Elementwise maximum or minimum of two activations of one shape, with its own output range.
/// The engine's Maximum and Minimum compare codes of one `(S, Z)`, so each input not already on
/// the output's grid is requantized to it first by the engine's Mul by a constant of code 1 at
/// scale 1 (`M = S_in / S_out`, [`QMaxMin::unit_params`]); exact evaluation does the same on the
/// codes, then takes the larger or smaller code.
#[derive(Module, Debug)]
pub struct QMaxMin {
    pub out_obs: EmaObserver,
    pub max: bool,
}

impl QMaxMin {
    /// The params of the requantizing constant, whose one code is 1.
    pub fn unit_params() -> QuantParams {
        QuantParams {
            scale: 1.0,
            zero_point: 0,
        }
    }

    pub fn forward(&self, a: Act, b: Act, ctx: &Ctx) -> Result<Act, TrainError> {
        if let (Some(q), Some(pa), Some(pb)) = (ctx.exact_quant(), a.q, b.q) {
            if let Some(po) = self.out_obs.params(q.act_scheme)? {
                let (qmin, qmax) = (q.act_scheme.qmin(), q.act_scheme.qmax());
                let requant = |p: QuantParams| -> Result<Box<dyn Fn(i32) -> i32>, TrainError> {
                    if p == po {
                        return Ok(Box::new(|c| c));
                    }
                    let m = intq_kernels::reference::MulParams::new(
                        p,
                        Self::unit_params(),
                        po,
                        qmin,
                        qmax,
                    )?;
                    Ok(Box::new(move |c| m.apply(c, 1)))
                };
                let (ra, rb) = (requant(pa)?, requant(pb)?);
                let code = |v: f32, p: QuantParams| (v / p.scale).round() as i32 + p.zero_point;
                let dims = a.x.dims();
                let out: Vec<f64> = host_vec(a.x.clone())
                    .into_iter()
                    .zip(host_vec(b.x))
                    .map(|(x, y)| {
                        let (x, y) = (ra(code(x, pa)), rb(code(y, pb)));
                        let c = if self.max { x.max(y) } else { x.min(y) };
                        po.scale as f64 * (c - po.zero_point) as f64
                    })
                    .collect();
                return Ok(Act {
                    x: f64_tensor(out, dims, &a.x.device()),
                    q: Some(po),
                });
            }
        }
        let y = if self.max {
            a.x.max_pair(b.x)
        } else {
            a.x.min_pair(b.x)
        };
        let (x, q) = self.out_obs.apply(y, ctx)?;
        Ok(Act { x, q })
    }
}

/// The `/ 6` of a HardSigmoid gate. `HardSigmoid(z) = clamp(a z + b, 0, 1) = relu6(6a z + 6b) / 6`:
/// the Conv or Gemm producing `z` takes the `6a` and `6b` into its weights and bias and fuses
/// ReLU6, and this layer scales its output `r` by `1/6` with its own output range. Exact
/// evaluation is the engine's integer Mul of `r` by a constant of code 1 at scale `1/6`
/// ([`QGate::factor_params`]), as TFLite's converter writes MobileNetV3's gates
/// (conv + ReLU6, MUL by 1/6).
#[derive(Module, Debug)]
pub struct QGate {
    pub out_obs: EmaObserver,
}

impl QGate {
    /// The params of the constant factor, whose one code is 1.
    pub fn factor_params() -> QuantParams {
        QuantParams {
            scale: 1.0 / 6.0,
            zero_point: 0,
        }
    }

    pub fn forward(&self, a: Act, ctx: &Ctx) -> Result<Act, TrainError> {
        let pc = Self::factor_params();
        if let (Some(q), Some(pi)) = (ctx.exact_quant(), a.q) {
            if let Some(po) = self.out_obs.params(q.act_scheme)? {
                let (qmin, qmax) = (q.act_scheme.qmin(), q.act_scheme.qmax());
                let m = intq_kernels::reference::MulParams::new(pi, pc, po, qmin, qmax)?;
                return Ok(codes_map(&a, pi, po, |c| m.apply(c, 1)));
            }
        }
        let (x, q) = self.out_obs.apply(a.x.mul_scalar(pc.scale), ctx)?;
        Ok(Act { x, q })
    }
}

/// PRelu with trainable slopes (one per channel, `[C]`) and its own output range. The slopes
/// are fake-quantized per tensor with the weight scheme (their codes are of the activations'
/// type, as the engine's Prelu takes them); exact evaluation is the engine's integer Prelu
/// (docs/spec.md §11.12: one multiplier for `x >= 0`, one for `x (a - Z_a)`) on the codes.
#[derive(Module, Debug)]
pub struct QPrelu {
    pub slope: Param<Tensor<1>>,
    pub out_obs: EmaObserver,
}

impl QPrelu {
    /// The slopes as the layer uses them (fake-quantized when `q` is given) and their params.
    pub fn slopes(
        &self,
        q: Option<&crate::layers::QuantCfg>,
    ) -> Result<(Tensor<1>, Option<QuantParams>), TrainError> {
        let a = self.slope.val();
        let Some(q) = q else { return Ok((a, None)) };
        let (aq, p) = crate::fake_quant::fake_quant_weights(a, q.weight_scheme, false)?;
        Ok((aq, Some(p.channel(0))))
    }

    pub fn forward(&self, a: Act, ctx: &Ctx) -> Result<Act, TrainError> {
        let c = self.slope.dims()[0];
        if let (Some(q), Some(pi)) = (ctx.exact_quant(), a.q) {
            if let Some(po) = self.out_obs.params(q.act_scheme)? {
                let (_, pa) = self.slopes(Some(&q))?;
                let pa = pa.expect("quantized slopes");
                let codes: Vec<i32> = host_vec(self.slope.val())
                    .into_iter()
                    .map(|v| crate::fake_quant::weight_code(q.weight_scheme, pa, v))
                    .collect();
                let p = intq_kernels::reference::PreluParams::new(pi, pa, po)?;
                let (qmin, qmax) = (q.act_scheme.qmin(), q.act_scheme.qmax());
                let dims = a.x.dims();
                let plane = dims[2] * dims[3];
                let out: Vec<f64> = host_vec(a.x.clone())
                    .into_iter()
                    .enumerate()
                    .map(|(k, v)| {
                        let code = (v / pi.scale).round() as i32 + pi.zero_point;
                        let ch = if c == 1 { 0 } else { (k / plane) % dims[1] };
                        let o = p.apply(code, codes[ch]).clamp(qmin, qmax);
                        po.scale as f64 * (o - po.zero_point) as f64
                    })
                    .collect();
                return Ok(Act {
                    x: f64_tensor(out, dims, &a.x.device()),
                    q: Some(po),
                });
            }
        }
        let (slope, _) = self.slopes(ctx.quant.as_ref())?;
        let x = a.x;
        let y =
            activation::relu(x.clone()) - activation::relu(x.neg()) * slope.reshape([1, c, 1, 1]);
        let (x, q) = self.out_obs.apply(y, ctx)?;
        Ok(Act { x, q })
    }
}

/// Nearest-neighbour resize of H and W: a copy of codes, keeping the input's params. The
/// source rows and columns are ONNX Resize's; they equal the engine's ResizeNearest with
/// `align_corners` and `half_pixel_centers` (docs/spec.md §11.7), checked when the layer is
/// built.
#[derive(Module, Debug)]
pub struct ResizeNearest {
    pub src_h: Vec<usize>,
    pub src_w: Vec<usize>,
    pub align_corners: bool,
    pub half_pixel_centers: bool,
}

impl ResizeNearest {
    /// The engine's resize mode whose source indices are `src_h` and `src_w` from `n_in`
    /// rows and columns, if one is.
    fn engine_mode(src: [&[usize]; 2], n_in: [usize; 2]) -> Option<(bool, bool)> {
        use intq_kernels::reference::{nearest_source, ResizeMode};
        [(false, false), (false, true), (true, false)]
            .into_iter()
            .find(|&(align_corners, half_pixel_centers)| {
                let mode = ResizeMode {
                    align_corners,
                    half_pixel_centers,
                };
                (0..2).all(|d| {
                    let n_out = src[d].len();
                    (0..n_out).all(|o| nearest_source(o, n_in[d], n_out, mode) == src[d][o])
                })
            })
    }

    pub fn forward(&self, a: Act) -> Act {
        let device = a.x.device();
        let index = |v: &[usize]| {
            Tensor::<1, Int>::from_data(
                TensorData::new(v.iter().map(|&i| i as i64).collect::<Vec<_>>(), [v.len()]),
                &device,
            )
        };
        let x =
            a.x.select(2, index(&self.src_h))
                .select(3, index(&self.src_w));
        Act { x, q: a.q }
    }
}

/// The real values `S (c - Z)` (f64) of codes `f` computes from the input codes of `a`, as an
/// activation on `po`: how the exact evaluation runs the engine's elementwise ops.
fn codes_map(a: &Act, pi: QuantParams, po: QuantParams, f: impl Fn(i32) -> i32) -> Act {
    let dims = a.x.dims();
    let out: Vec<f64> = host_vec(a.x.clone())
        .into_iter()
        .map(|v| {
            let c = f((v / pi.scale).round() as i32 + pi.zero_point);
            po.scale as f64 * (c - po.zero_point) as f64
        })
        .collect();
    Act {
        x: f64_tensor(out, dims, &a.x.device()),
        q: Some(po),
    }
}

/// Difference of two activations of one shape with its own output range. Exact evaluation is
/// the engine's integer Sub on the codes (docs/spec.md §11.2, Add's fixed-point rescaling).
#[derive(Module, Debug)]
pub struct QSub {
    pub out_obs: EmaObserver,
}

impl QSub {
    pub fn forward(&self, a: Act, b: Act, ctx: &Ctx) -> Result<Act, TrainError> {
        if let (Some(q), Some(pa), Some(pb)) = (ctx.exact_quant(), a.q, b.q) {
            if let Some(po) = self.out_obs.params(q.act_scheme)? {
                let (qmin, qmax) = (q.act_scheme.qmin(), q.act_scheme.qmax());
                let m = intq_kernels::reference::SubParams::new(pa, pb, po, qmin, qmax)?;
                let code = |v: f32, p: QuantParams| (v / p.scale).round() as i32 + p.zero_point;
                let dims = a.x.dims();
                let out: Vec<f64> = host_vec(a.x.clone())
                    .into_iter()
                    .zip(host_vec(b.x))
                    .map(|(x, y)| {
                        let c = m.apply(code(x, pa), code(y, pb));
                        po.scale as f64 * (c - po.zero_point) as f64
                    })
                    .collect();
                return Ok(Act {
                    x: f64_tensor(out, dims, &a.x.device()),
                    q: Some(po),
                });
            }
        }
        let (x, q) = self.out_obs.apply(a.x - b.x, ctx)?;
        Ok(Act { x, q })
    }
}

/// LeakyRelu with its own output range. Exact evaluation is the engine's integer LeakyRelu on
/// the codes (docs/spec.md §11.4: one fixed-point multiplier for `x >= 0`, one for `alpha x`).
#[derive(Module, Debug)]
pub struct QLeakyRelu {
    pub out_obs: EmaObserver,
    /// The slope below 0 (the ONNX attribute's f32 value).
    pub alpha: f64,
}

impl QLeakyRelu {
    pub fn forward(&self, a: Act, ctx: &Ctx) -> Result<Act, TrainError> {
        let alpha = self.alpha as f32;
        if let (Some(q), Some(pi)) = (ctx.exact_quant(), a.q) {
            if let Some(po) = self.out_obs.params(q.act_scheme)? {
                let p = intq_kernels::reference::LeakyReluParams::new(pi, po, alpha)?;
                let (qmin, qmax) = (q.act_scheme.qmin(), q.act_scheme.qmax());
                return Ok(codes_map(&a, pi, po, |c| {
                    let x = c - p.input_zero_point;
                    let m = if x >= 0 { p.identity } else { p.alpha };
                    p.output_zero_point
                        .wrapping_add(m.apply(x))
                        .clamp(qmin, qmax)
                }));
            }
        }
        let x = a.x;
        let y = activation::relu(x.clone()) - activation::relu(x.neg()).mul_scalar(alpha);
        let (x, q) = self.out_obs.apply(y, ctx)?;
        Ok(Act { x, q })
    }
}

/// Tanh, whose quantized output has TFLite's fixed params (`S = 1/128`, `Z` at the middle of
/// the type's range), so it has no observer. Training fake-quantizes the float tanh to that
/// grid; exact evaluation looks the input codes up in the engine's TANH table
/// (`tflite_tanh_table`, docs/spec.md §11.6).
#[derive(Module, Debug)]
pub struct QTanh {
    /// Output scale denominator (128).
    pub levels: usize,
}

impl QTanh {
    /// The output params under `scheme`.
    pub fn params(&self, scheme: intq_quant::QScheme) -> QuantParams {
        QuantParams {
            scale: 1.0 / self.levels as f32,
            zero_point: if scheme.is_signed() { 0 } else { 128 },
        }
    }

    pub fn forward(&self, a: Act, ctx: &Ctx) -> Result<Act, TrainError> {
        let (Some(pi), Some(q)) = (a.q, ctx.quant) else {
            return Ok(Act {
                x: a.x.tanh(),
                q: None,
            });
        };
        let scheme = q.act_scheme;
        let po = self.params(scheme);
        if ctx.exact_quant().is_none() {
            let y = crate::fake_quant::fake_quant(a.x.tanh(), scheme, po);
            return Ok(Act { x: y, q: Some(po) });
        }
        let (lo, table): (i32, Vec<i32>) = if scheme.is_signed() {
            let t = intq_kernels::reference::tflite_tanh_table::<i8>(pi, po);
            (-128, t.table.iter().map(|&c| c as i32).collect())
        } else {
            let t = intq_kernels::reference::tflite_tanh_table::<u8>(pi, po);
            (0, t.table.iter().map(|&c| c as i32).collect())
        };
        let (qmin, qmax) = (scheme.qmin(), scheme.qmax());
        Ok(codes_map(&a, pi, po, |c| {
            table[(c.clamp(qmin, qmax) - lo) as usize]
        }))
    }
}

/// A max or average pool in the engine's own window arithmetic where the zoo's [`Pool`] (square
/// windows, one padding on every side) cannot express it: a `kh x kw` window, strides per axis,
/// explicit padding per side (a max pool's `ceil_mode` is more bottom/right padding), and an
/// average over the part of the window inside the picture (ONNX's `count_include_pad = 0`, the
/// engine's AveragePool). Both keep their input's params; the average is put back on the input's
/// grid as [`Pool`] puts it, rounded as the engine rounds the code average in exact evaluation.
#[derive(Module, Debug)]
pub struct WindowPool {
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub pad_bottom: usize,
    pub pad_right: usize,
    pub max: bool,
}

impl WindowPool {
    pub fn forward(&self, a: Act, ctx: &Ctx) -> Act {
        use burn::tensor::module::{avg_pool2d, max_pool2d};
        use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
        let kernel = [self.kernel_h, self.kernel_w];
        let stride = [self.stride_h, self.stride_w];
        if let (false, Some(p), Some(q)) = (self.max, a.q, ctx.exact_quant()) {
            let pads = [self.pad_top, self.pad_left, self.pad_bottom, self.pad_right];
            let x = crate::layers::avg_pool_exact(a.x, q.act_scheme, p, kernel, stride, pads);
            return Act { x, q: a.q };
        }
        let pads = [
            (self.pad_top, self.pad_bottom),
            (self.pad_left, self.pad_right),
        ];
        let y = if self.max {
            max_pool2d(
                a.x,
                MaxPoolOptions::new(kernel)
                    .with_stride(stride)
                    .with_padding_pairs(pads),
            )
        } else {
            avg_pool2d(
                a.x,
                AvgPoolOptions::new(kernel)
                    .with_stride(stride)
                    .with_padding_pairs(pads)
                    .with_count_include_pad(false),
            )
        };
        let y = match (self.max, a.q, ctx.quant) {
            (false, Some(p), Some(q)) => crate::fake_quant::fake_quant(y, q.act_scheme, p),
            _ => y,
        };
        Act { x: y, q: a.q }
    }
}

/// Product of two activations (the second of the first's shape or `[N, C, 1, 1]`, broadcast)
/// with its own output range. Exact evaluation is the engine's integer Mul on the codes
/// (`MulParams`: `(q1 - Z1)(q2 - Z2)` requantized by `S1 S2 / S_out`), so conversion to its
/// `Mul` op is exact.
#[derive(Module, Debug)]
pub struct QMul {
    pub out_obs: EmaObserver,
}

impl QMul {
    pub fn forward(&self, a: Act, b: Act, ctx: &Ctx) -> Result<Act, TrainError> {
        if let (Some(q), Some(pa), Some(pb)) = (ctx.exact_quant(), a.q, b.q) {
            if let Some(po) = self.out_obs.params(q.act_scheme)? {
                let (qmin, qmax) = (q.act_scheme.qmin(), q.act_scheme.qmax());
                let m = intq_kernels::reference::MulParams::new(pa, pb, po, qmin, qmax)?;
                let dims = a.x.dims();
                let code = |v: f32, p: intq_quant::QuantParams| {
                    (v / p.scale).round() as i32 + p.zero_point
                };
                let out: Vec<f64> = host_vec(a.x.clone())
                    .into_iter()
                    .zip(host_vec(b.x.expand(dims)))
                    .map(|(x, y)| {
                        let c = m.apply(code(x, pa), code(y, pb));
                        po.scale as f64 * (c - po.zero_point) as f64
                    })
                    .collect();
                return Ok(Act {
                    x: f64_tensor(out, dims, &a.x.device()),
                    q: Some(po),
                });
            }
        }
        let (x, q) = self.out_obs.apply(a.x * b.x, ctx)?;
        Ok(Act { x, q })
    }
}

/// Sigmoid, whose quantized output has the fixed params of the engine's Logistic
/// (`S = 1/256`, `Z` at the type's minimum), so it has no observer. Training and fake-quant
/// evaluation fake-quantize the float sigmoid to that grid; exact evaluation applies the
/// engine's Logistic table (TFLite's fixed-point routine, `LogisticTable`) to the input codes.
#[derive(Module, Debug)]
pub struct QSigmoid {
    /// Output scale denominator (256): the engine's fixed `S = 1/256`.
    pub levels: usize,
}

impl QSigmoid {
    pub fn forward(&self, a: Act, ctx: &Ctx) -> Result<Act, TrainError> {
        let (Some(pi), Some(q)) = (a.q, ctx.quant) else {
            return Ok(Act {
                x: activation::sigmoid(a.x),
                q: None,
            });
        };
        let scheme = q.act_scheme;
        let po = intq_quant::QuantParams {
            scale: 1.0 / self.levels as f32,
            zero_point: scheme.qmin(),
        };
        if ctx.exact_quant().is_none() {
            let y = crate::fake_quant::fake_quant(activation::sigmoid(a.x), scheme, po);
            return Ok(Act { x: y, q: Some(po) });
        }
        let (qmin, qmax) = (scheme.qmin(), scheme.qmax());
        let table: Vec<i32> = if scheme.is_signed() {
            let t = intq_kernels::reference::LogisticTable::<i8>::new(pi);
            t.table.iter().map(|&c| c as i32).collect()
        } else {
            let t = intq_kernels::reference::LogisticTable::<u8>::new(pi);
            t.table.iter().map(|&c| c as i32).collect()
        };
        let lo = if scheme.is_signed() { -128 } else { 0 };
        let dims = a.x.dims();
        let out: Vec<f64> = host_vec(a.x.clone())
            .into_iter()
            .map(|v| {
                let code = ((v / pi.scale).round() as i32 + pi.zero_point).clamp(qmin, qmax);
                let c = table[(code - lo) as usize];
                po.scale as f64 * (c - po.zero_point) as f64
            })
            .collect();
        Ok(Act {
            x: f64_tensor(out, dims, &a.x.device()),
            q: Some(po),
        })
    }
}

/// HardSwish `x · relu6(x + 3) / 6` with its own output range. Training and fake-quant
/// evaluation compute it in float and fake-quantize the result; exact evaluation takes the
/// engine's integer HardSwish on the input codes (TFLite's int16 fixed-point routine,
/// `hard_swish_code`), which can differ from rounding the real value by a code.
#[derive(Module, Debug)]
pub struct QHardSwish {
    pub out_obs: EmaObserver,
}

impl QHardSwish {
    pub fn forward(&self, a: Act, ctx: &Ctx) -> Result<Act, TrainError> {
        if let (Some(q), Some(pi)) = (ctx.exact_quant(), a.q) {
            if let Some(po) = self.out_obs.params(q.act_scheme)? {
                let p = intq_kernels::reference::HardSwishParams::new(pi, po)?;
                let (qmin, qmax) = (q.act_scheme.qmin(), q.act_scheme.qmax());
                let dims = a.x.dims();
                let out: Vec<f64> = host_vec(a.x.clone())
                    .into_iter()
                    .map(|v| {
                        let code = (v / pi.scale).round() as i32 + pi.zero_point;
                        let c = intq_kernels::reference::hard_swish_code(code, &p, qmin, qmax);
                        po.scale as f64 * (c - po.zero_point) as f64
                    })
                    .collect();
                return Ok(Act {
                    x: f64_tensor(out, dims, &a.x.device()),
                    q: Some(po),
                });
            }
        }
        let x = a.x;
        let y = x.clone() * activation::relu(x.add_scalar(3.0)).clamp_max(6.0) / 6.0;
        let (x, q) = self.out_obs.apply(y, ctx)?;
        Ok(Act { x, q })
    }
}

/// How a step reads and writes activations (indices into the imported graph's values).
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Layer `layer` of [`GraphNet::layers`] on `inputs`.
    Layer {
        layer: usize,
        inputs: Vec<ValueId>,
        output: ValueId,
        /// The ONNX nodes this layer stands for, for messages and tensor names.
        name: String,
    },
    /// `[N, C, H, W]` → `[N, C·H·W, 1, 1]` (same element order), or with `nhwc` the flatten of
    /// its NHWC transpose (a Transpose `[0, 2, 3, 1]` before a Flatten, as Keras models have).
    Flatten {
        input: ValueId,
        output: ValueId,
        nhwc: bool,
    },
    /// Zero padding of H and W, `[top, left, bottom, right]`: an ONNX Pad, or the padding of
    /// a convolution or an average pool (padding included in the count) that is not the same
    /// on every side. Real 0 is a code of every activation grid, so the padded tensor keeps its
    /// input's params. `output` may be a value of its own, numbered after the graph's.
    Pad {
        input: ValueId,
        output: ValueId,
        pads: [usize; 4],
        name: String,
    },
}

/// The trailing normalization the ONNX graph ends with, applied outside the loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Head {
    Logits,
    Softmax,
    LogSoftmax,
}

/// The preprocessing an ONNX graph starts with: a chain of [`Op::ConstArith`] nodes reading the
/// input alone, composed into `y_c = scale_c x_c + shift_c` per channel (f64).
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
    /// The ONNX nodes it stands for.
    pub nodes: Vec<String>,
}

/// An imported network: input quantizer, layers, and the wiring between them.
#[derive(Debug)]
pub struct GraphNet {
    /// The input quantizer (docs/spec.md §10): its mean and std are the normalization the
    /// network's first layer reads, `--normalize` composed with [`GraphNet::preprocess`].
    pub input: InputQuant,
    /// The graph's own leading preprocessing, folded into [`GraphNet::input`].
    pub preprocess: Preprocess,
    /// The `--normalize` the network was set up with ([`GraphNet::set_normalize`]).
    pub normalize: intq_data::Normalize,
    /// The layer a per-channel normalization folds into (the first convolution).
    pub fold_layer: Option<usize>,
    pub layers: Vec<Layer>,
    pub steps: Vec<Step>,
    /// The value the quantized input stands for (the graph's input, or the output of its
    /// leading preprocessing) and the logits (before [`GraphNet::head`]).
    pub input_value: ValueId,
    pub logits: ValueId,
    pub head: Head,
    /// `[C, H, W]` of the input.
    pub input_shape: [usize; 3],
}

fn refuse(node: &intq_onnx::Node, msg: impl Into<String>) -> TrainError {
    TrainError::Config(format!(
        "node {:?} ({}): {}",
        node.name,
        node.onnx_op,
        msg.into()
    ))
}

/// A HardSigmoid gate being built: the HardSigmoid node and the value of its producer's ReLU6
/// output.
struct Gate<'a> {
    node: &'a intq_onnx::Node,
    relu6: ValueId,
    opts: LayerOpts,
}

impl Gate<'_> {
    /// Pushes `layer` (named `name`, reading `input`, its ReLU6 already set) writing the gate's
    /// ReLU6 value, and the [`QGate`] writing the HardSigmoid's output.
    fn push(
        &self,
        layer: Layer,
        input: ValueId,
        name: String,
        layers: &mut Vec<Layer>,
        steps: &mut Vec<Step>,
    ) {
        let device = match &layer {
            Layer::Conv(c) => c.weight.val().device(),
            Layer::Linear(l) => l.weight.val().device(),
            _ => unreachable!("gates follow convolutions and fully connected layers"),
        };
        layers.push(layer);
        steps.push(Step::Layer {
            layer: layers.len() - 1,
            inputs: vec![input],
            output: self.relu6,
            name: format!("{name}+{}", self.node.name),
        });
        layers.push(Layer::Gate(QGate {
            out_obs: EmaObserver::with_opts(self.opts, &device),
        }));
        steps.push(Step::Layer {
            layer: layers.len() - 1,
            inputs: vec![self.relu6],
            output: self.node.output,
            name: format!("{}/div6", self.node.name),
        });
    }
}

fn padding_any(pads: [usize; 4]) -> bool {
    pads.iter().any(|&p| p != 0)
}

fn tensor1(v: &[f32], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
}

impl GraphNet {
    /// Builds the network of `graph` with its float weights. Errors name the node intq's QAT
    /// layers cannot take and why.
    pub fn from_graph(graph: &Graph, opts: LayerOpts, device: &Device) -> Result<Self, TrainError> {
        if graph.inputs.len() != 1 || graph.outputs.len() != 1 {
            return Err(TrainError::Config(format!(
                "intq trains networks with one input and one output; this one has {} and {}",
                graph.inputs.len(),
                graph.outputs.len()
            )));
        }
        let input_value = graph.inputs[0];
        let s = &graph.value(input_value).shape;
        if s.len() != 4 {
            return Err(TrainError::Config(format!(
                "the input {:?} has shape {s:?}; intq trains on images [N, C, H, W]",
                graph.value(input_value).name
            )));
        }
        let mut input_shape = [s[1], s[2], s[3]];
        // How many nodes read each value (graph outputs count as readers).
        let mut readers = vec![0usize; graph.values.len()];
        for n in &graph.nodes {
            for &i in &n.inputs {
                readers[i] += 1;
            }
        }
        for &o in &graph.outputs {
            readers[o] += 1;
        }
        let consumer = |v: ValueId| -> Option<(usize, &intq_onnx::Node)> {
            if readers[v] != 1 || graph.outputs.contains(&v) {
                return None;
            }
            graph
                .nodes
                .iter()
                .enumerate()
                .find(|(_, n)| n.inputs.contains(&v))
        };
        // A Relu or Clip [0, 6] reading `v` alone fuses into the layer producing it.
        let fused_act = |v: ValueId| -> Option<(usize, u8)> {
            let (k, n) = consumer(v)?;
            match n.op {
                Op::Relu => Some((k, ACT_RELU)),
                Op::Clip { min, max } if min == 0.0 && max == 6.0 => Some((k, ACT_RELU6)),
                Op::Clip { min, max } if min == 0.0 && max == f32::INFINITY => Some((k, ACT_RELU)),
                _ => None,
            }
        };
        // A HardSigmoid reading `v` alone is a gate: the layer producing `v` takes its `6 alpha`
        // and `6 beta` and a ReLU6, a [`QGate`] after it the `/ 6`.
        let hsig_gate = |v: ValueId| -> Result<Option<(usize, f32, f32)>, TrainError> {
            let Some((k, n)) = consumer(v) else {
                return Ok(None);
            };
            let Op::HardSigmoid { alpha, beta } = n.op else {
                return Ok(None);
            };
            if !(alpha.is_finite() && alpha != 0.0) {
                return Err(refuse(
                    n,
                    format!(
                        "attribute \"alpha\" is {alpha}; a HardSigmoid gate takes a finite, \
                         non-zero slope"
                    ),
                ));
            }
            if !beta.is_finite() {
                return Err(refuse(
                    n,
                    format!("attribute \"beta\" is {beta}; a HardSigmoid gate takes a finite one"),
                ));
            }
            Ok(Some((k, 6.0 * alpha, 6.0 * beta)))
        };
        let mut done = vec![false; graph.nodes.len()];
        // Sub/Div/Mul/Add by constants reading the input alone, one after the other: the
        // preprocessing an exporter baked in, folded into the input normalization.
        let mut channels = input_shape[0];
        let mut transposed = false;
        let mut pre = Preprocess {
            scale: vec![1.0; channels],
            shift: vec![0.0; channels],
            nodes: Vec::new(),
        };
        let mut input_value = input_value;
        while let Some((k, n)) = consumer(input_value) {
            // An NHWC input brought to NCHW (Keras models): the network's input is the
            // transposed one; scalar arithmetic may come before it.
            if let Op::Transpose { perm } = &n.op {
                let uniform = pre.scale.iter().all(|&a| a == pre.scale[0])
                    && pre.shift.iter().all(|&b| b == pre.shift[0]);
                if transposed || perm[..] != [0, 3, 1, 2] || !uniform {
                    break;
                }
                let t = &graph.value(n.output).shape;
                input_shape = [t[1], t[2], t[3]];
                channels = t[1];
                pre.scale = vec![pre.scale[0]; channels];
                pre.shift = vec![pre.shift[0]; channels];
                transposed = true;
                done[k] = true;
                pre.nodes.push(n.name.clone());
                input_value = n.output;
                continue;
            }
            let Op::ConstArith {
                arith,
                value,
                reversed,
            } = &n.op
            else {
                break;
            };
            // Before a transpose, axis 1 is not the channels: one value only.
            if value.len() > 1 && (value.len() != channels || (!transposed && s[1] != channels)) {
                break;
            }
            for ch in 0..channels {
                let v = value[if value.len() == 1 { 0 } else { ch }] as f64;
                let (a, b) = (&mut pre.scale[ch], &mut pre.shift[ch]);
                match (arith, reversed) {
                    (Arith::Add, _) => *b += v,
                    (Arith::Sub, false) => *b -= v,
                    (Arith::Sub, true) => (*a, *b) = (-*a, v - *b),
                    (Arith::Mul, _) => (*a, *b) = (*a * v, *b * v),
                    (Arith::Div, _) => (*a, *b) = (*a / v, *b / v),
                }
            }
            if let Some(ch) = pre.scale.iter().position(|&a| !(a > 0.0 && a.is_finite())) {
                return Err(refuse(
                    n,
                    format!(
                        "the preprocessing up to this node scales channel {ch} by {}; intq folds \
                         only a positive scale into the input normalization",
                        pre.scale[ch]
                    ),
                ));
            }
            done[k] = true;
            pre.nodes.push(n.name.clone());
            input_value = n.output;
        }
        // Values of the network's own (padded inputs), numbered after the graph's.
        let mut next_value = graph.values.len();
        let mut layers = Vec::new();
        let mut steps = Vec::new();
        let mut head = Head::Logits;
        let mut logits = graph.outputs[0];
        for (k, node) in graph.nodes.iter().enumerate() {
            if done[k] {
                continue;
            }
            done[k] = true;
            let mut name = node.name.clone();
            // Fuses an activation after `out`, returning the act code and the new output.
            let fuse = |out: ValueId, done: &mut Vec<bool>, name: &mut String| match fused_act(out)
            {
                Some((j, act)) => {
                    done[j] = true;
                    name.push('+');
                    name.push_str(&graph.nodes[j].name);
                    (act, graph.nodes[j].output)
                }
                None => (ACT_NONE, out),
            };
            match &node.op {
                Op::Conv(c) => {
                    let [o, i, kh, kw] = c.weight_dims;
                    if kh != kw || c.stride[0] != c.stride[1] || c.dilation[0] != c.dilation[1]
                    {
                        return Err(refuse(
                            node,
                            format!(
                                "intq's QAT convolution takes square kernels, one stride and one \
                                 dilation (kernel {kh}x{kw}, stride {:?}, dilation {:?})",
                                c.stride, c.dilation
                            ),
                        ));
                    }
                    // Padding that differs between sides becomes a Pad in front of the conv.
                    let mut conv_input = node.inputs[0];
                    let mut p = c.pads[0];
                    if c.pads.iter().any(|&q| q != p) {
                        conv_input = next_value;
                        next_value += 1;
                        steps.push(Step::Pad {
                            input: node.inputs[0],
                            output: conv_input,
                            pads: c.pads,
                            name: format!("{}/pad", node.name),
                        });
                        p = 0;
                    }
                    let cin = i * c.groups;
                    // A BatchNormalization reading the conv alone folds into it.
                    let bn = consumer(node.output).and_then(|(j, n)| match &n.op {
                        Op::BatchNorm { .. } => Some(j),
                        _ => None,
                    });
                    let gate = hsig_gate(bn.map_or(node.output, |j| graph.nodes[j].output))?;
                    // The gate's affine map: BN's scale and shift take it, or else the conv's
                    // weights and bias (times 1 exactly for MobileNetV3's alpha 1/6).
                    let (k6, m6) = gate.map_or((1.0, 0.0), |(_, k, m)| (k, m));
                    let mut out = node.output;
                    let mut layer = ConvBn::new(
                        cin,
                        o,
                        kh,
                        c.stride[0],
                        c.groups,
                        bn.is_some(),
                        ACT_NONE,
                        opts,
                        device,
                    );
                    layer.padding = p;
                    layer.dilation = c.dilation[0];
                    let weight: Vec<f32> = if bn.is_some() {
                        c.weight.clone()
                    } else {
                        c.weight.iter().map(|w| w * k6).collect()
                    };
                    layer.weight = Param::from_tensor(Tensor::from_data(
                        TensorData::new(weight, [o, i, kh, kw]),
                        device,
                    ));
                    let conv_bias = c.bias.clone().unwrap_or_else(|| vec![0.0; o]);
                    if let Some(j) = bn {
                        done[j] = true;
                        let n = &graph.nodes[j];
                        name.push('+');
                        name.push_str(&n.name);
                        let Op::BatchNorm {
                            scale,
                            bias,
                            mean,
                            var,
                            epsilon,
                        } = &n.op
                        else {
                            unreachable!("matched above")
                        };
                        // BN(conv + b) = BN'(conv) with the mean moved by -b.
                        let mean: Vec<f32> =
                            mean.iter().zip(&conv_bias).map(|(m, b)| m - b).collect();
                        let scale: Vec<f32> = scale.iter().map(|g| g * k6).collect();
                        let bias: Vec<f32> = bias.iter().map(|b| b * k6 + m6).collect();
                        layer.gamma = Some(Param::from_tensor(tensor1(&scale, device)));
                        layer.beta = Some(Param::from_tensor(tensor1(&bias, device)));
                        layer.running_mean = RunningState::new(tensor1(&mean, device));
                        layer.running_var = RunningState::new(tensor1(var, device));
                        layer.eps = *epsilon as f64;
                        out = n.output;
                    } else {
                        let b: Vec<f32> = conv_bias.iter().map(|b| b * k6 + m6).collect();
                        layer.bias = Some(Param::from_tensor(tensor1(&b, device)));
                    }
                    if let Some((j, _, _)) = gate {
                        layer.act = ACT_RELU6;
                        done[j] = true;
                        next_value += 1;
                        let gate = Gate {
                            node: &graph.nodes[j],
                            relu6: next_value - 1,
                            opts,
                        };
                        gate.push(Layer::Conv(layer), conv_input, name, &mut layers, &mut steps);
                        continue;
                    }
                    let (act, out) = fuse(out, &mut done, &mut name);
                    layer.act = act;
                    layers.push(Layer::Conv(layer));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: vec![conv_input],
                        output: out,
                        name,
                    });
                }
                Op::ConvTranspose(c) => {
                    // A BatchNormalization reading it alone folds into its float weights.
                    let bn = consumer(node.output).and_then(|(j, n)| match &n.op {
                        Op::BatchNorm {
                            scale,
                            bias,
                            mean,
                            var,
                            epsilon,
                        } => Some((j, BnFold {
                            scale,
                            bias,
                            mean,
                            var,
                            epsilon: *epsilon,
                        })),
                        _ => None,
                    });
                    let mut out = node.output;
                    let bn = bn.map(|(j, fold)| {
                        done[j] = true;
                        name.push('+');
                        name.push_str(&graph.nodes[j].name);
                        out = graph.nodes[j].output;
                        fold
                    });
                    let (act, out) = fuse(out, &mut done, &mut name);
                    layers.push(Layer::ConvTranspose(QConvTranspose::from_onnx(
                        c, bn, act, opts, device,
                    )));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: out,
                        name,
                    });
                }
                Op::Linear {
                    weight,
                    in_features,
                    out_features,
                    bias,
                } => {
                    let gate = hsig_gate(node.output)?;
                    let (k6, m6) = gate.map_or((1.0, 0.0), |(_, k, m)| (k, m));
                    let mut layer = QLinear::new(*in_features, *out_features, ACT_NONE, opts, device);
                    layer.weight = Param::from_tensor(Tensor::from_data(
                        TensorData::new(
                            weight.iter().map(|w| w * k6).collect::<Vec<_>>(),
                            [*out_features, *in_features],
                        ),
                        device,
                    ));
                    let b = bias.clone().unwrap_or_else(|| vec![0.0; *out_features]);
                    let b: Vec<f32> = b.iter().map(|b| b * k6 + m6).collect();
                    layer.bias = Param::from_tensor(tensor1(&b, device));
                    if let Some((j, _, _)) = gate {
                        layer.act = ACT_RELU6;
                        done[j] = true;
                        next_value += 1;
                        let gate = Gate {
                            node: &graph.nodes[j],
                            relu6: next_value - 1,
                            opts,
                        };
                        let input = node.inputs[0];
                        gate.push(Layer::Linear(layer), input, name, &mut layers, &mut steps);
                        continue;
                    }
                    let (act, out) = fuse(node.output, &mut done, &mut name);
                    layer.act = act;
                    layers.push(Layer::Linear(layer));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: out,
                        name,
                    });
                }
                Op::Add => {
                    let (act, out) = fuse(node.output, &mut done, &mut name);
                    layers.push(Layer::Add(QAdd::new(act, opts, device)));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: out,
                        name,
                    });
                }
                Op::Concat { axis: 1 } => {
                    layers.push(Layer::Concat(QConcat::new(opts, device)));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: node.output,
                        name,
                    });
                }
                Op::GlobalAveragePool | Op::MaxPool(_) | Op::AveragePool(_) => {
                    let mut pool_input = node.inputs[0];
                    let pool = match &node.op {
                        Op::GlobalAveragePool => Pool {
                            kernel: 0,
                            stride: 0,
                            padding: 0,
                            max: false,
                            global: true,
                        },
                        Op::MaxPool(p) | Op::AveragePool(p) => {
                            let max = matches!(node.op, Op::MaxPool(_));
                            if p.dilation != [1, 1] {
                                return Err(refuse(
                                    node,
                                    format!(
                                        "attribute \"dilations\" is {:?}; the engine's max pool \
                                         has no dilation",
                                        p.dilation
                                    ),
                                ));
                            }
                            // ceil_mode: the last windows reach into more bottom/right padding
                            // (never past it: the importer drops windows starting there).
                            let (ins, outs) = (
                                &graph.value(node.inputs[0]).shape,
                                &graph.value(node.output).shape,
                            );
                            let mut pads = p.pads;
                            for d in 0..2 {
                                let need = (outs[2 + d] - 1) * p.stride[d] + p.kernel[d];
                                let have = ins[2 + d] + pads[d] + pads[d + 2];
                                pads[d + 2] += need.saturating_sub(have);
                            }
                            // An average whose count takes the padding in is an unpadded
                            // average of the zero-padded input.
                            if !max && padding_any(pads) && p.count_include_pad {
                                pool_input = next_value;
                                next_value += 1;
                                steps.push(Step::Pad {
                                    input: node.inputs[0],
                                    output: pool_input,
                                    pads,
                                    name: format!("{}/pad", node.name),
                                });
                                pads = [0; 4];
                            }
                            let plain = p.kernel[0] == p.kernel[1]
                                && p.stride[0] == p.stride[1]
                                && pads.iter().all(|&q| q == pads[0])
                                && (max || pads[0] == 0);
                            if !plain {
                                // The engine's own window arithmetic: explicit padding on each
                                // side, an average over the window's part inside the picture.
                                layers.push(Layer::Window(WindowPool {
                                    kernel_h: p.kernel[0],
                                    kernel_w: p.kernel[1],
                                    stride_h: p.stride[0],
                                    stride_w: p.stride[1],
                                    pad_top: pads[0],
                                    pad_left: pads[1],
                                    pad_bottom: pads[2],
                                    pad_right: pads[3],
                                    max,
                                }));
                                steps.push(Step::Layer {
                                    layer: layers.len() - 1,
                                    inputs: vec![pool_input],
                                    output: node.output,
                                    name,
                                });
                                continue;
                            }
                            Pool {
                                kernel: p.kernel[0],
                                stride: p.stride[0],
                                padding: pads[0],
                                max,
                                global: false,
                            }
                        }
                        _ => unreachable!("matched above"),
                    };
                    layers.push(Layer::Pool(pool));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: vec![pool_input],
                        output: node.output,
                        name,
                    });
                }
                Op::Pad { pads, value } => {
                    let spatial = pads.len() == 4 && pads[0] == (0, 0) && pads[1] == (0, 0);
                    if !spatial || *value != 0.0 {
                        return Err(refuse(
                            node,
                            format!(
                                "intq's QAT network pads H and W of NCHW with zeros only (pads \
                                 {pads:?}, value {value})"
                            ),
                        ));
                    }
                    steps.push(Step::Pad {
                        input: node.inputs[0],
                        output: node.output,
                        pads: [pads[2].0, pads[3].0, pads[2].1, pads[3].1],
                        name: node.name.clone(),
                    });
                }
                Op::HardSwish => {
                    layers.push(Layer::HardSwish(QHardSwish {
                        out_obs: EmaObserver::with_opts(opts, device),
                    }));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: node.output,
                        name,
                    });
                }
                Op::Mul => {
                    layers.push(Layer::Mul(QMul {
                        out_obs: EmaObserver::with_opts(opts, device),
                    }));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: node.output,
                        name,
                    });
                }
                Op::Sub => {
                    layers.push(Layer::Sub(QSub {
                        out_obs: EmaObserver::with_opts(opts, device),
                    }));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: node.output,
                        name,
                    });
                }
                Op::Maximum | Op::Minimum => {
                    layers.push(Layer::MaxMin(QMaxMin {
                        out_obs: EmaObserver::with_opts(opts, device),
                        max: matches!(node.op, Op::Maximum),
                    }));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: node.output,
                        name,
                    });
                }
                Op::LeakyRelu { alpha } => {
                    if *alpha < 0.0 {
                        return Err(refuse(
                            node,
                            format!(
                                "attribute \"alpha\" is {alpha}; the engine's LeakyRelu takes a \
                                 slope of 0 or more"
                            ),
                        ));
                    }
                    layers.push(Layer::LeakyRelu(QLeakyRelu {
                        out_obs: EmaObserver::with_opts(opts, device),
                        alpha: *alpha as f64,
                    }));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: node.output,
                        name,
                    });
                }
                Op::ResizeNearest { src_h, src_w } => {
                    let s = &graph.value(node.inputs[0]).shape;
                    let Some((align_corners, half_pixel_centers)) =
                        ResizeNearest::engine_mode([src_h, src_w], [s[2], s[3]])
                    else {
                        return Err(refuse(
                            node,
                            format!(
                                "its source rows {src_h:?} and columns {src_w:?} (attributes \
                                 \"coordinate_transformation_mode\" and \"nearest_mode\") are \
                                 not those of the engine's nearest resize in any mode"
                            ),
                        ));
                    };
                    layers.push(Layer::Resize(ResizeNearest {
                        src_h: src_h.clone(),
                        src_w: src_w.clone(),
                        align_corners,
                        half_pixel_centers,
                    }));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: node.output,
                        name,
                    });
                }
                Op::ResizeLinear {
                    pos_h,
                    pos_w,
                    coordinate_transformation_mode,
                } => {
                    let s = &graph.value(node.inputs[0]).shape;
                    let Some((align_corners, half_pixel_centers)) =
                        ResizeBilinear::engine_mode([pos_h, pos_w], [s[2], s[3]])
                    else {
                        return Err(refuse(
                            node,
                            format!(
                                "attribute \"coordinate_transformation_mode\" is \
                                 {coordinate_transformation_mode:?}: resizing {}x{} to {}x{}, \
                                 its source positions are not those of the engine's bilinear \
                                 resize (TFLite's align_corners or half_pixel_centers) in any mode",
                                s[2],
                                s[3],
                                pos_h.len(),
                                pos_w.len()
                            ),
                        ));
                    };
                    layers.push(Layer::Bilinear(ResizeBilinear {
                        pos_h: pos_h.clone(),
                        pos_w: pos_w.clone(),
                        in_h: s[2],
                        in_w: s[3],
                        align_corners,
                        half_pixel_centers,
                    }));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: node.output,
                        name,
                    });
                }
                Op::Prelu { slope } => {
                    layers.push(Layer::Prelu(QPrelu {
                        slope: Param::from_tensor(tensor1(slope, device)),
                        out_obs: EmaObserver::with_opts(opts, device),
                    }));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: node.output,
                        name,
                    });
                }
                Op::Tanh => {
                    layers.push(Layer::Tanh(QTanh { levels: 128 }));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: node.output,
                        name,
                    });
                }
                Op::Sigmoid => {
                    layers.push(Layer::Sigmoid(QSigmoid { levels: 256 }));
                    steps.push(Step::Layer {
                        layer: layers.len() - 1,
                        inputs: node.inputs.clone(),
                        output: node.output,
                        name,
                    });
                }
                Op::Flatten => steps.push(Step::Flatten {
                    input: node.inputs[0],
                    output: node.output,
                    nhwc: false,
                }),
                Op::Transpose { perm } => {
                    let flat = consumer(node.output).filter(|(_, n)| match &n.op {
                        Op::Flatten => true,
                        Op::Reshape { shape } => shape.iter().skip(1).all(|&d| d == 1),
                        _ => false,
                    });
                    match flat {
                        Some((j, n)) if perm[..] == [0, 2, 3, 1] => {
                            done[j] = true;
                            steps.push(Step::Flatten {
                                input: node.inputs[0],
                                output: n.output,
                                nhwc: true,
                            });
                        }
                        _ => {
                            return Err(refuse(
                                node,
                                format!(
                                    "attribute \"perm\" is {perm:?}; intq's QAT network takes a \
                                     Transpose only from an NHWC input to NCHW ([0, 3, 1, 2]) or \
                                     from NCHW to NHWC right before a Flatten ([0, 2, 3, 1])"
                                ),
                            ))
                        }
                    }
                }
                Op::Reshape { shape } if shape.iter().skip(1).all(|&d| d == 1) => {
                    steps.push(Step::Flatten {
                        input: node.inputs[0],
                        output: node.output,
                        nhwc: false,
                    })
                }
                Op::Softmax { log, axis: 1, .. } if graph.outputs[0] == node.output => {
                    head = if *log { Head::LogSoftmax } else { Head::Softmax };
                    logits = node.inputs[0];
                }
                Op::BatchNorm { .. } => {
                    return Err(refuse(
                        node,
                        "a BatchNormalization must follow a convolution (whose output nothing \
                         else reads) to fold into it",
                    ))
                }
                Op::ConstArith { arith, .. } => {
                    return Err(refuse(
                        node,
                        format!(
                            "a {} by a constant is taken only at the graph's start, reading the \
                             input, where it folds into the input normalization",
                            arith.name()
                        ),
                    ))
                }
                Op::HardSigmoid { .. } => {
                    return Err(refuse(
                        node,
                        "a HardSigmoid is taken as a gate: it must follow a Conv (with its \
                         BatchNormalization) or Gemm/MatMul whose output nothing else reads",
                    ))
                }
                Op::Relu | Op::Clip { .. } => {
                    return Err(refuse(
                        node,
                        "an activation must follow a Conv, Gemm/MatMul or Add (whose output \
                         nothing else reads) to fuse into it, and a Clip must be [0, 6] or [0, inf)",
                    ))
                }
                _ => {
                    return Err(refuse(
                        node,
                        format!("{} is not taken by intq's QAT network", node.op.name()),
                    ))
                }
            }
        }
        if graph.value(logits).shape.len() != 2 {
            return Err(TrainError::Config(format!(
                "the network's output {:?} has shape {:?}; intq trains classifiers [N, classes]",
                graph.value(logits).name,
                graph.value(logits).shape
            )));
        }
        let mut net = GraphNet {
            input: InputQuant {
                obs: EmaObserver::with_opts(opts, device),
                mean: vec![0.0; channels],
                std: vec![1.0; channels],
            },
            preprocess: pre,
            normalize: intq_data::Normalize::none(),
            fold_layer: None,
            layers,
            steps,
            input_value,
            logits,
            head,
            input_shape,
        };
        net.set_normalize(&intq_data::Normalize::none())?;
        Ok(net)
    }

    /// Sets the normalization of the pictures `p/255` the ONNX model's input takes
    /// (`--normalize`; none: the model takes `p/255`), composed with the graph's own
    /// preprocessing: the input quantizer's mean and std (docs/spec.md §10). A per-channel
    /// result folds into the first convolution, which must be dense and read the input alone
    /// (through zero padding at most).
    pub fn set_normalize(&mut self, n: &intq_data::Normalize) -> Result<(), TrainError> {
        let c = self.input_shape[0];
        if !n.fits(c) {
            return Err(TrainError::Config(format!(
                "--normalize {n} has {} values per channel; the network takes {c} channels",
                n.channels()
            )));
        }
        let (mu, su) = n.per_channel(c);
        // x = (p/255 - mu)/su, then scale x + shift = (p/255 - m)/s.
        let (mut mean, mut std) = (Vec::with_capacity(c), Vec::with_capacity(c));
        for ch in 0..c {
            let (a, b) = (self.preprocess.scale[ch], self.preprocess.shift[ch]);
            let s = su[ch] as f64 / a;
            mean.push((mu[ch] as f64 - b * su[ch] as f64 / a) as f32);
            std.push(s as f32);
        }
        if let Some(ch) = (0..c).find(|&ch| !(mean[ch].is_finite() && std[ch] > 0.0)) {
            return Err(TrainError::Config(format!(
                "the input normalization of channel {ch} (mean {}, std {}) is not usable",
                mean[ch], std[ch]
            )));
        }
        let input = InputQuant {
            obs: self.input.obs.clone(),
            mean,
            std,
        };
        let fold_layer = match input.first_layer_fold() {
            None => None,
            Some(_) => Some(self.first_conv().map_err(|why| {
                TrainError::Config(format!(
                    "the input normalization is per channel (mean {:?}, std {:?}) and folds into \
                     the first layer, a convolution with groups 1 reading the input alone: {why}",
                    input.mean, input.std
                ))
            })?),
        };
        self.input = input;
        self.fold_layer = fold_layer;
        self.normalize = n.clone();
        Ok(())
    }

    /// The layer a per-channel normalization folds into: the one dense convolution reading the
    /// input (through Pad steps at most), or why there is none.
    fn first_conv(&self) -> Result<usize, String> {
        let mut v = self.input_value;
        loop {
            let readers: Vec<&Step> = self
                .steps
                .iter()
                .filter(|s| match s {
                    Step::Layer { inputs, .. } => inputs.contains(&v),
                    Step::Flatten { input, .. } | Step::Pad { input, .. } => *input == v,
                })
                .collect();
            match readers[..] {
                [Step::Pad { output, .. }] => v = *output,
                [Step::Layer { layer, name, .. }] => {
                    return match &self.layers[*layer] {
                        Layer::Conv(c) if c.groups == 1 => Ok(*layer),
                        _ => Err(format!("the input is read by {name:?}")),
                    }
                }
                [Step::Flatten { .. }] => return Err("the input is flattened".into()),
                _ => return Err(format!("the input is read by {} layers", readers.len())),
            }
        }
    }

    /// The logits `[N, classes]` (before the graph's trailing Softmax, if any) of `x`, pixels
    /// `p/255` NCHW (the input normalization is the network's own, [`GraphNet::set_normalize`]).
    pub fn forward(&self, x: Tensor<4>, ctx: &Ctx) -> Result<Tensor<2>, TrainError> {
        self.forward_tapped(x, ctx, &mut |_, _| {})
    }

    /// [`GraphNet::forward`] handing `tap` the input (as `None`) and each layer's output (as
    /// `Some(layer index)`).
    pub fn forward_tapped(
        &self,
        x: Tensor<4>,
        ctx: &Ctx,
        tap: &mut dyn FnMut(Option<usize>, &Act),
    ) -> Result<Tensor<2>, TrainError> {
        let n_values = self
            .steps
            .iter()
            .map(|s| match s {
                Step::Layer { output, inputs, .. } => {
                    (*output).max(inputs.iter().copied().max().unwrap_or(0))
                }
                Step::Flatten { input, output, .. } | Step::Pad { input, output, .. } => {
                    (*input).max(*output)
                }
            })
            .max()
            .unwrap_or(0)
            .max(self.input_value)
            .max(self.logits)
            + 1;
        let mut vals: Vec<Option<Act>> = vec![None; n_values];
        let input = self.input.forward(x, ctx)?;
        tap(None, &input);
        let fold = self.input.first_layer_fold();
        vals[self.input_value] = Some(input);
        let get = |vals: &Vec<Option<Act>>, v: ValueId| -> Result<Act, TrainError> {
            vals[v].clone().ok_or_else(|| {
                TrainError::Config(format!("activation {v} used before it is computed"))
            })
        };
        for step in &self.steps {
            match step {
                Step::Flatten {
                    input,
                    output,
                    nhwc,
                } => {
                    let a = get(&vals, *input)?;
                    let [n, c, h, w] = a.x.dims();
                    let x = if *nhwc {
                        a.x.permute([0, 2, 3, 1])
                    } else {
                        a.x
                    };
                    vals[*output] = Some(Act {
                        x: x.reshape([n, c * h * w, 1, 1]),
                        q: a.q,
                    });
                }
                Step::Pad {
                    input,
                    output,
                    pads: [t, l, b, r],
                    ..
                } => {
                    let a = get(&vals, *input)?;
                    vals[*output] = Some(Act {
                        x: a.x.pad((*l, *r, *t, *b), PadMode::Constant(0.0)),
                        q: a.q,
                    });
                }
                Step::Layer {
                    layer,
                    inputs,
                    output,
                    ..
                } => {
                    let a = get(&vals, inputs[0])?;
                    let y = match &self.layers[*layer] {
                        Layer::Conv(c) if self.fold_layer == Some(*layer) => {
                            c.forward_folded(a, ctx, fold.as_ref())?
                        }
                        Layer::Conv(c) => c.forward(a, ctx)?,
                        Layer::ConvTranspose(l) => l.forward(a, ctx)?,
                        Layer::Pool(p) => p.forward(a, ctx),
                        Layer::Window(p) => p.forward(a, ctx),
                        Layer::HardSwish(h) => h.forward(a, ctx)?,
                        Layer::Sigmoid(l) => l.forward(a, ctx)?,
                        Layer::Mul(l) => l.forward(a, get(&vals, inputs[1])?, ctx)?,
                        Layer::Sub(l) => l.forward(a, get(&vals, inputs[1])?, ctx)?,
                        Layer::LeakyRelu(l) => l.forward(a, ctx)?,
                        Layer::Tanh(l) => l.forward(a, ctx)?,
                        Layer::Resize(l) => l.forward(a),
                        Layer::Bilinear(l) => l.forward(a, ctx),
                        Layer::Prelu(l) => l.forward(a, ctx)?,
                        Layer::Gate(l) => l.forward(a, ctx)?,
                        Layer::MaxMin(l) => l.forward(a, get(&vals, inputs[1])?, ctx)?,
                        Layer::Add(add) => add.forward(a, get(&vals, inputs[1])?, ctx)?,
                        Layer::Concat(cat) => {
                            let all = inputs
                                .iter()
                                .map(|&i| get(&vals, i))
                                .collect::<Result<Vec<_>, _>>()?;
                            cat.forward(all, ctx)?
                        }
                        Layer::Linear(l) => {
                            let [n, f, h, w] = a.x.dims();
                            let (y, q) = l.forward(a.x.reshape([n, f * h * w]), a.q, ctx)?;
                            let [n, o] = y.dims();
                            Act {
                                x: y.reshape([n, o, 1, 1]),
                                q,
                            }
                        }
                    };
                    tap(Some(*layer), &y);
                    vals[*output] = Some(y);
                }
            }
        }
        let out = get(&vals, self.logits)?;
        let [n, c, _, _] = out.x.dims();
        Ok(out.x.reshape([n, c]))
    }

    /// One SGD step on a batch (`x` NCHW on an autodiff device, `labels` its classes) with the
    /// cross-entropy of the logits, in training mode `ctx` (float, or QAT with its quantization):
    /// BN statistics and observers are updated by the forward, the layers' parameters by
    /// [`sgd::step`]. Returns the loss; a non-finite loss is an error and changes no parameter.
    pub fn train_step(
        &mut self,
        x: Tensor<4>,
        labels: Tensor<1, Int>,
        ctx: &Ctx,
        vel: &mut Velocity,
        step: SgdStep,
    ) -> Result<f64, TrainError> {
        self.train_step_smoothed(x, labels, ctx, vel, step, 0.0)
    }

    /// [`GraphNet::train_step`] with label smoothing `eps` in `[0, 1)` (0: plain cross-entropy).
    pub fn train_step_smoothed(
        &mut self,
        x: Tensor<4>,
        labels: Tensor<1, Int>,
        ctx: &Ctx,
        vel: &mut Velocity,
        step: SgdStep,
        eps: f64,
    ) -> Result<f64, TrainError> {
        let logits = self.forward(x, ctx)?;
        let loss = if eps == 0.0 {
            cross_entropy(logits, labels)
        } else {
            crate::trainer::smoothed_cross_entropy(logits, labels, eps)
        };
        let value = host_vec(loss.clone()).first().copied().unwrap_or(f32::NAN) as f64;
        if !value.is_finite() {
            return Err(TrainError::NonFinite(format!(
                "loss {value} at step {}",
                ctx.step
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &self.layers);
        let layers = std::mem::take(&mut self.layers);
        self.layers = sgd::step(layers, grads, vel, step);
        Ok(value)
    }

    /// The observer of the input (`None`) or of layer `k`'s output (pools have none: they keep
    /// their input's params).
    fn observer(&self, k: Option<usize>) -> Option<&EmaObserver> {
        match k.map(|k| &self.layers[k]) {
            None => Some(&self.input.obs),
            Some(Layer::Conv(l)) => Some(&l.out_obs),
            Some(Layer::ConvTranspose(l)) => Some(&l.out_obs),
            Some(Layer::Linear(l)) => Some(&l.out_obs),
            Some(Layer::Add(l)) => Some(&l.out_obs),
            Some(Layer::Concat(l)) => Some(&l.out_obs),
            Some(Layer::HardSwish(l)) => Some(&l.out_obs),
            Some(Layer::Mul(l)) => Some(&l.out_obs),
            Some(Layer::Sub(l)) => Some(&l.out_obs),
            Some(Layer::LeakyRelu(l)) => Some(&l.out_obs),
            Some(Layer::Prelu(l)) => Some(&l.out_obs),
            Some(Layer::Gate(l)) => Some(&l.out_obs),
            Some(Layer::MaxMin(l)) => Some(&l.out_obs),
            Some(Layer::Pool(_))
            | Some(Layer::Window(_))
            | Some(Layer::Sigmoid(_))
            | Some(Layer::Tanh(_))
            | Some(Layer::Resize(_))
            | Some(Layer::Bilinear(_)) => None,
        }
    }

    /// Post-training calibration: sets every observer to the min/max its tensor holds when the
    /// float network (BN on its moving statistics) runs `batches` (each `n` images NCHW).
    pub fn calibrate_minmax(
        &self,
        batches: &[(Vec<f32>, usize)],
        device: &Device,
    ) -> Result<(), TrainError> {
        let mut ranges: Vec<(f32, f32)> =
            vec![(f32::INFINITY, f32::NEG_INFINITY); self.layers.len() + 1];
        let [c, h, w] = self.input_shape;
        for (x, n) in batches {
            if x.len() != n * c * h * w {
                return Err(TrainError::Data(format!(
                    "{} values for {n} images of {c}x{h}x{w}",
                    x.len()
                )));
            }
            let x = Tensor::from_data(TensorData::new(x.clone(), [*n, c, h, w]), device);
            let mut failed = None;
            self.forward_tapped(x, &Ctx::eval(None), &mut |k, a| {
                let slot = k.map_or(0, |k| k + 1);
                for v in host_vec(a.x.clone()) {
                    if !v.is_finite() {
                        failed.get_or_insert(slot);
                    }
                    let r = &mut ranges[slot];
                    *r = (r.0.min(v), r.1.max(v));
                }
            })?;
            if let Some(slot) = failed {
                return Err(TrainError::NonFinite(format!(
                    "calibration: activation of layer {slot}"
                )));
            }
        }
        for (slot, &(lo, hi)) in ranges.iter().enumerate() {
            let k = slot.checked_sub(1);
            if let Some(obs) = self.observer(k) {
                if !(lo.is_finite() && hi.is_finite()) {
                    return Err(TrainError::Config(
                        "calibration: no calibration images".into(),
                    ));
                }
                obs.set_range(lo, hi);
            }
        }
        Ok(())
    }

    /// [`GraphNet::train_step_smoothed`] on host data: `labels.len()` images NCHW in `x`.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step_host(
        &mut self,
        x: &[f32],
        labels: &[i64],
        ctx: &Ctx,
        vel: &mut Velocity,
        step: SgdStep,
        label_smoothing: f64,
        device: &Device,
    ) -> Result<f64, TrainError> {
        let [c, h, w] = self.input_shape;
        let n = labels.len();
        if x.len() != n * c * h * w {
            return Err(TrainError::Data(format!(
                "{} values for {n} images of {c}x{h}x{w}",
                x.len()
            )));
        }
        let x = Tensor::from_data(TensorData::new(x.to_vec(), [n, c, h, w]), device);
        let y = Tensor::from_data(TensorData::new(labels.to_vec(), [n]), device);
        self.train_step_smoothed(x, y, ctx, vel, step, label_smoothing)
    }

    /// [`GraphNet::forward`] on host data: `n` images NCHW in `x`, the logits row by row.
    pub fn logits_host(
        &self,
        x: &[f32],
        n: usize,
        ctx: &Ctx,
        device: &Device,
    ) -> Result<Vec<f32>, TrainError> {
        let [c, h, w] = self.input_shape;
        if x.len() != n * c * h * w {
            return Err(TrainError::Data(format!(
                "{} values for {n} images of {c}x{h}x{w}",
                x.len()
            )));
        }
        let x = Tensor::from_data(TensorData::new(x.to_vec(), [n, c, h, w]), device);
        Ok(host_vec(self.forward(x, ctx)?))
    }

    /// The graph's own output: [`GraphNet::forward`] followed by its trailing Softmax or
    /// LogSoftmax, if it has one.
    pub fn predict(&self, x: Tensor<4>, ctx: &Ctx) -> Result<Tensor<2>, TrainError> {
        let y = self.forward(x, ctx)?;
        Ok(match self.head {
            Head::Logits => y,
            Head::Softmax => activation::softmax(y, 1),
            Head::LogSoftmax => activation::log_softmax(y, 1),
        })
    }
}
