//! The QAT transposed convolution (ONNX ConvTranspose, group 1, no dilation) that converts to the
//! engine's TRANSPOSE_CONV (docs/spec.md §11.13): weights fake-quantized per output channel (or
//! per tensor) as the engine's OHWI filter takes them, the bias on the int32 grid of `S_in *
//! S_w[k]`, a fused ReLU/ReLU6 clamp and the engine's requantization rounding on the output. A
//! BatchNormalization after it is folded into the float weights and bias when the network is
//! built (the moving statistics of an imported model are constants).

use burn::module::{Module, Param};
use burn::tensor::module::conv_transpose2d;
use burn::tensor::ops::ConvTransposeOptions;
use burn::tensor::{Device, Tensor, TensorData};
use intq_engine::{Activation, Op, Padding, Quant};

use crate::export::{weight_code, Cur, Exporter};
use crate::fake_quant::{f64_tensor, fake_quant_weights};
use crate::layers::{
    activate, exact_input, input_codes, snap_bias, Act, Ctx, FoldedLayer, LayerOpts, QuantCfg,
    ACT_RELU, ACT_RELU6,
};
use crate::observer::EmaObserver;
use crate::TrainError;

/// A transposed convolution with its output cut to `[top, left, bottom, right]` of the full
/// `stride (in - 1) + out_pad + kernel` (see [`intq_onnx::ConvTranspose`]).
#[derive(Module, Debug)]
pub struct QConvTranspose {
    /// `[out, in, kh, kw]`: the output channel first, the axis per-channel weight quantization
    /// and the engine's OHWI filter take (ONNX stores `[in, out, kh, kw]`).
    pub weight: Param<Tensor<4>>,
    pub bias: Param<Tensor<1>>,
    pub out_obs: EmaObserver,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub pad_bottom: usize,
    pub pad_right: usize,
    pub out_pad_h: usize,
    pub out_pad_w: usize,
    pub act: u8,
}

/// A BatchNormalization's inference parameters, folded into the layer before it.
pub struct BnFold<'a> {
    pub scale: &'a [f32],
    pub bias: &'a [f32],
    pub mean: &'a [f32],
    pub var: &'a [f32],
    pub epsilon: f32,
}

impl QConvTranspose {
    /// The layer of an imported ConvTranspose, with a following BN folded in
    /// (`w'[o] = w[o] s_o`, `b'_o = (b_o - mean_o) s_o + beta_o`, `s_o = gamma_o / sqrt(var_o + eps)`)
    /// and the fused activation `act`.
    pub fn from_onnx(
        c: &intq_onnx::ConvTranspose,
        bn: Option<BnFold>,
        act: u8,
        opts: LayerOpts,
        device: &Device,
    ) -> Self {
        let [ci, co, kh, kw] = c.weight_dims;
        let k = kh * kw;
        let mut w = vec![0f32; c.weight.len()];
        for i in 0..ci {
            for o in 0..co {
                w[(o * ci + i) * k..][..k].copy_from_slice(&c.weight[(i * co + o) * k..][..k]);
            }
        }
        let mut b = c.bias.clone().unwrap_or_else(|| vec![0.0; co]);
        if let Some(bn) = bn {
            for o in 0..co {
                let s = bn.scale[o] as f64 / (bn.var[o] as f64 + bn.epsilon as f64).sqrt();
                for v in &mut w[o * ci * k..][..ci * k] {
                    *v = (*v as f64 * s) as f32;
                }
                b[o] = ((b[o] as f64 - bn.mean[o] as f64) * s + bn.bias[o] as f64) as f32;
            }
        }
        QConvTranspose {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [co, ci, kh, kw]),
                device,
            )),
            bias: Param::from_tensor(Tensor::from_data(TensorData::new(b, [co]), device)),
            out_obs: EmaObserver::with_opts(opts, device),
            stride_h: c.stride[0],
            stride_w: c.stride[1],
            pad_top: c.pads[0],
            pad_left: c.pads[1],
            pad_bottom: c.pads[2],
            pad_right: c.pads[3],
            out_pad_h: c.output_padding[0],
            out_pad_w: c.output_padding[1],
            act,
        }
    }

    /// The transposed convolution of `x` with `w` (`[out, in, kh, kw]`) and `b`, cut.
    fn convolve(&self, x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
        let options = ConvTransposeOptions::new(
            [self.stride_h, self.stride_w],
            [0, 0],
            [self.out_pad_h, self.out_pad_w],
            [1, 1],
            1,
        );
        let y = conv_transpose2d(x, w.swap_dims(0, 1), Some(b), options);
        let [n, c, h, w] = y.dims();
        y.slice([
            0..n,
            0..c,
            self.pad_top..h - self.pad_bottom,
            self.pad_left..w - self.pad_right,
        ])
    }

    pub fn forward(&self, input: Act, ctx: &Ctx) -> Result<Act, TrainError> {
        if let Some(q) = ctx.exact_quant() {
            return self.forward_exact(input, &q);
        }
        let in_q = input.q;
        let (w, b, wquant) = match ctx.quant {
            None => (self.weight.val(), self.bias.val(), None),
            Some(q) => {
                let (wq, wqp) =
                    fake_quant_weights(self.weight.val(), q.weight_scheme, q.per_channel)?;
                let b = snap_bias(self.bias.val(), in_q, &wqp);
                (wq, b, Some(wqp))
            }
        };
        let y = activate(self.convolve(input.x, w, b), self.act);
        let s_in = in_q.map(|p| p.scale);
        let (x, q) = self.out_obs.apply_requant(y, ctx, s_in, wquant.as_ref())?;
        Ok(Act { x, q })
    }

    /// Weights, weight params, bias and output params, as evaluation runs them.
    pub fn export(&self, q: &QuantCfg) -> Result<FoldedLayer, TrainError> {
        FoldedLayer::new(
            self.weight.val(),
            self.bias.val(),
            q,
            &self.out_obs,
            self.act,
            "a transposed convolution",
        )
    }

    /// Exact evaluation: the codes conversion stores, convolved into the engine's integer
    /// accumulators and requantized with its multiplier (docs/spec.md §11.13: uint8 forms
    /// `S_in S_w` in f32) and activation clamp.
    fn forward_exact(&self, input: Act, q: &QuantCfg) -> Result<Act, TrainError> {
        let p_in = exact_input(&input, "a transposed convolution")?;
        let f = self.export(q)?;
        let device = input.x.device();
        let s = &f.weight_shape;
        let (w, b) = f.grid_codes(q.weight_scheme, p_in.scale)?;
        let w = f64_tensor(w, [s[0], s[1], s[2], s[3]], &device);
        let b = f64_tensor(b, [s[0]], &device);
        let acc = self.convolve(input_codes(input.x, p_in), w, b);
        let s_out = f.output.scale as f64;
        let x = if q.act_scheme.is_signed() {
            f.requant_exact(acc, p_in.scale, q.act_scheme)?
        } else {
            f.requant_exact_with(acc, p_in.scale, q.act_scheme, |s_w| {
                (p_in.scale * s_w) as f64 / s_out
            })?
        };
        Ok(Act {
            x,
            q: Some(f.output),
        })
    }

    /// The engine's TRANSPOSE_CONV of `x` (NHWC): OHWI weight codes, int32 bias, the output size
    /// and TFLite's SAME or VALID padding where either places the taps as the cut does (so that
    /// the model exports to .tflite), else explicit padding.
    pub(crate) fn emit(&self, e: &mut Exporter, name: &str, x: &Cur) -> Result<Cur, TrainError> {
        let f = self.export(&e.q)?;
        let [o, ci, kh, kw] = [
            f.weight_shape[0],
            f.weight_shape[1],
            f.weight_shape[2],
            f.weight_shape[3],
        ];
        let [n, h, w, c] = x.shape;
        if c != ci {
            return Err(TrainError::Export(format!(
                "{name}: reads {c} channels, its weights take {ci}"
            )));
        }
        let ws = e.q.weight_scheme;
        let mut codes = vec![0i32; f.weights.len()];
        for oc in 0..o {
            for i in 0..ci {
                for y in 0..kh {
                    for xk in 0..kw {
                        let src = ((oc * ci + i) * kh + y) * kw + xk;
                        let dst = ((oc * kh + y) * kw + xk) * ci + i;
                        codes[dst] = weight_code(ws, f.weight_quant.channel(oc), f.weights[src]);
                    }
                }
            }
        }
        let quant: Quant = e.weight_quant(&f.weight_quant, 0)?;
        let data = e.codes(codes);
        let filter = e.b.constant(
            &format!("{name}/weights"),
            &[o, kh, kw, ci],
            Some(quant),
            data,
        );
        let bias = e.bias(&format!("{name}/bias"), x.params.scale, &f)?;
        let oh = self.stride_h * (h - 1) + self.out_pad_h + kh - self.pad_top - self.pad_bottom;
        let ow = self.stride_w * (w - 1) + self.out_pad_w + kw - self.pad_left - self.pad_right;
        let shape = [n, oh, ow, o];
        let out = e.act_tensor_shaped(name, &shape, f.output);
        let geometry = |p: Padding| {
            p.resolve((oh, ow), (kh, kw), (self.stride_h, self.stride_w), (1, 1))
                .filter(|(back, v)| {
                    *back == (h, w) && v.top == self.pad_top && v.left == self.pad_left
                })
        };
        let padding = if geometry(Padding::Same).is_some() {
            Padding::Same
        } else if geometry(Padding::Valid).is_some() {
            Padding::Valid
        } else {
            Padding::Explicit {
                top: self.pad_top,
                bottom: self.pad_bottom,
                left: self.pad_left,
                right: self.pad_right,
            }
        };
        e.b.op(Op::TransposeConv {
            input: x.id,
            filter,
            bias: Some(bias),
            output: out,
            stride: [self.stride_h, self.stride_w],
            padding,
            activation: match f.act {
                ACT_RELU => Activation::Relu,
                ACT_RELU6 => Activation::Relu6,
                _ => Activation::None,
            },
        });
        Ok(Cur {
            id: out,
            shape,
            params: f.output,
        })
    }
}
