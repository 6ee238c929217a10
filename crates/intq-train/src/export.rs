//! Conversion of a QAT network (evaluation state) into an `intq_engine::Graph`: folded weights
//! quantized with the very params training used (and the same round-half-up), int32 bias at
//! `S_in * S_w[k]`, activation params from the observers, NHWC layout, batch 1. The input is
//! raw uint8 pixels with the params the pixel contract fixes (docs/spec.md §10).

use intq_engine::{
    Activation, ChannelParams, DType, Graph, GraphBuilder, Op, Padding, Quant, QuantParams,
    TensorData, TensorId,
};

pub use crate::fake_quant::weight_code;
use crate::fake_quant::{bias_code, WeightQuant};
use crate::layers::{ChannelFold, ConvBn, FoldedLayer, Pool, QAdd, QuantCfg, ACT_RELU, ACT_RELU6};
use crate::zoo::{Arch, Net, Node};
use crate::TrainError;

/// The activation an export has reached (graph_export.rs builds on the same steps).
#[derive(Clone, Copy)]
pub(crate) struct Cur {
    pub(crate) id: TensorId,
    /// NHWC shape.
    pub(crate) shape: [usize; 4],
    pub(crate) params: QuantParams,
}

pub(crate) struct Exporter {
    pub(crate) b: GraphBuilder,
    pub(crate) q: QuantCfg,
    pub(crate) dtype: DType,
    pub(crate) n: usize,
}

fn activation(act: u8) -> Activation {
    match act {
        ACT_RELU => Activation::Relu,
        ACT_RELU6 => Activation::Relu6,
        _ => Activation::None,
    }
}

impl Exporter {
    /// An empty graph in `quant`'s encoding (uint8 or int8 codes), batch 1.
    pub(crate) fn new(quant: &QuantCfg) -> Result<Exporter, TrainError> {
        if quant.weight_scheme.is_signed() != quant.act_scheme.is_signed() {
            return Err(TrainError::Export(
                "weights and activations must both be signed or both unsigned".into(),
            ));
        }
        let dtype = if quant.act_scheme.is_signed() {
            DType::I8
        } else {
            DType::U8
        };
        Ok(Exporter {
            b: GraphBuilder::new(),
            q: *quant,
            dtype,
            n: 1,
        })
    }

    pub(crate) fn codes(&self, v: Vec<i32>) -> TensorData {
        match self.dtype {
            DType::U8 => TensorData::U8(v.into_iter().map(|c| c as u8).collect()),
            _ => TensorData::I8(v.into_iter().map(|c| c as i8).collect()),
        }
    }

    pub(crate) fn weight_quant(&self, wq: &WeightQuant, axis: usize) -> Result<Quant, TrainError> {
        Ok(match wq {
            WeightQuant::PerTensor(p) => Quant::PerTensor(*p),
            WeightQuant::PerChannel(v) => Quant::PerChannel(
                ChannelParams::new(
                    v.iter().map(|p| p.scale).collect(),
                    v.iter().map(|p| p.zero_point).collect(),
                    axis,
                )
                .map_err(TrainError::from)?,
            ),
        })
    }

    pub(crate) fn bias(
        &mut self,
        name: &str,
        s_in: f32,
        f: &FoldedLayer,
    ) -> Result<TensorId, TrainError> {
        let o = f.bias.len();
        let scales: Vec<f32> = (0..o).map(|k| s_in * f.weight_quant.scale(k)).collect();
        let mut codes = Vec::with_capacity(o);
        for (k, (&b, &s)) in f.bias.iter().zip(&scales).enumerate() {
            let code = bias_code(b, s).ok_or_else(|| {
                TrainError::Export(format!(
                    "{name}[{k}]: bias {b} does not fit int32 at scale {s}"
                ))
            })?;
            codes.push(code);
        }
        let quant = match &f.weight_quant {
            WeightQuant::PerTensor(_) => Quant::PerTensor(QuantParams {
                scale: scales[0],
                zero_point: 0,
            }),
            WeightQuant::PerChannel(_) => Quant::PerChannel(
                ChannelParams::new(scales, vec![0; o], 0).map_err(TrainError::from)?,
            ),
        };
        Ok(self
            .b
            .constant(name, &[o], Some(quant), TensorData::I32(codes)))
    }

    /// An activation; below 8 bits its codes are narrowed to the scheme's, where training's
    /// fake quantization clamped.
    fn act_tensor(&mut self, name: &str, shape: [usize; 4], p: QuantParams) -> TensorId {
        self.act_tensor_shaped(name, &shape, p)
    }

    /// An activation of `x`'s engine shape (an elementwise op's output): `x.shape` is the
    /// network's NHWC view, which after a fully connected layer is `[N, 1, 1, F]` while its
    /// engine tensor is `[N, F]`.
    pub(crate) fn act_tensor_like(&mut self, name: &str, x: TensorId, p: QuantParams) -> TensorId {
        let shape = self.b.shape_of(x).to_vec();
        self.act_tensor_shaped(name, &shape, p)
    }

    pub(crate) fn act_tensor_shaped(
        &mut self,
        name: &str,
        shape: &[usize],
        p: QuantParams,
    ) -> TensorId {
        let id = self
            .b
            .tensor(name, self.dtype, shape, Some(Quant::PerTensor(p)));
        let s = self.q.act_scheme;
        if s.bits() < 8 {
            self.b.narrow_codes(id, s.qmin(), s.qmax());
        }
        id
    }

    pub(crate) fn conv(&mut self, name: &str, l: &ConvBn, x: &Cur) -> Result<Cur, TrainError> {
        self.conv_folded(name, l, x, None)
    }

    /// [`Exporter::conv`] with the input normalization `fold` folded into the layer.
    pub(crate) fn conv_folded(
        &mut self,
        name: &str,
        l: &ConvBn,
        x: &Cur,
        fold: Option<&ChannelFold>,
    ) -> Result<Cur, TrainError> {
        let f = l.export_folded(&self.q, fold)?;
        let [o, ipg, kh, kw] = [
            f.weight_shape[0],
            f.weight_shape[1],
            f.weight_shape[2],
            f.weight_shape[3],
        ];
        let cin = x.shape[3];
        let depthwise = l.groups > 1;
        if depthwise && (l.groups != cin || o != cin || ipg != 1) {
            return Err(TrainError::Export(format!(
                "{name}: grouped conv that is not depthwise"
            )));
        }
        let ws = self.q.weight_scheme;
        let code = |c: usize, v: f32| weight_code(ws, f.weight_quant.channel(c), v);
        // Training layout [O, I/g, kh, kw] -> OHWI (conv) or [1, kh, kw, C] (depthwise).
        let mut codes = vec![0i32; f.weights.len()];
        for oc in 0..o {
            for i in 0..ipg {
                for y in 0..kh {
                    for xk in 0..kw {
                        let src = ((oc * ipg + i) * kh + y) * kw + xk;
                        let dst = if depthwise {
                            (y * kw + xk) * o + oc
                        } else {
                            ((oc * kh + y) * kw + xk) * ipg + i
                        };
                        codes[dst] = code(oc, f.weights[src]);
                    }
                }
            }
        }
        let (shape, axis) = if depthwise {
            (vec![1, kh, kw, o], 3)
        } else {
            (vec![o, kh, kw, ipg], 0)
        };
        let quant = self.weight_quant(&f.weight_quant, axis)?;
        let data = self.codes(codes);
        let filter = self
            .b
            .constant(&format!("{name}/weights"), &shape, Some(quant), data);
        let bias = self.bias(&format!("{name}/bias"), x.params.scale, &f)?;
        let (s, p, d) = (l.stride, l.padding, l.dilation);
        let oh = (x.shape[1] + 2 * p - d * (kh - 1) - 1) / s + 1;
        let ow = (x.shape[2] + 2 * p - d * (kw - 1) - 1) / s + 1;
        let out_shape = [self.n, oh, ow, o];
        let out = self.act_tensor(name, out_shape, f.output);
        let padding = Padding::Explicit {
            top: p,
            bottom: p,
            left: p,
            right: p,
        };
        let op = if depthwise {
            Op::DepthwiseConv2d {
                input: x.id,
                filter,
                bias: Some(bias),
                output: out,
                stride: [s, s],
                dilation: [d, d],
                padding,
                depth_multiplier: 1,
                activation: activation(f.act),
            }
        } else {
            Op::Conv2d {
                input: x.id,
                filter,
                bias: Some(bias),
                output: out,
                stride: [s, s],
                dilation: [d, d],
                padding,
                activation: activation(f.act),
            }
        };
        self.b.op(op);
        Ok(Cur {
            id: out,
            shape: out_shape,
            params: f.output,
        })
    }

    pub(crate) fn add(
        &mut self,
        name: &str,
        l: &QAdd,
        a: &Cur,
        b: &Cur,
    ) -> Result<Cur, TrainError> {
        let p = l
            .out_obs
            .params(self.q.act_scheme)?
            .ok_or_else(|| TrainError::Export(format!("{name}: no observed output range")))?;
        let out = self.act_tensor(name, a.shape, p);
        self.b.op(Op::Add {
            lhs: a.id,
            rhs: b.id,
            output: out,
            activation: activation(l.act),
        });
        Ok(Cur {
            id: out,
            shape: a.shape,
            params: p,
        })
    }

    pub(crate) fn pool(&mut self, name: &str, l: &Pool, x: &Cur) -> Cur {
        let [n, h, w, c] = x.shape;
        let (k, s, p) = if l.global {
            (h, h, 0)
        } else {
            (l.kernel, l.stride, l.padding)
        };
        let (kw, sw) = if l.global { (w, w) } else { (k, s) };
        let oh = (h + 2 * p - k) / s + 1;
        let ow = (w + 2 * p - kw) / sw + 1;
        let shape = [n, oh, ow, c];
        let out = self.act_tensor(name, shape, x.params);
        let padding = Padding::Explicit {
            top: p,
            bottom: p,
            left: p,
            right: p,
        };
        let op = if l.max {
            Op::MaxPool2d {
                input: x.id,
                output: out,
                filter: [k, kw],
                stride: [s, sw],
                padding,
                activation: Activation::None,
            }
        } else {
            Op::AveragePool2d {
                input: x.id,
                output: out,
                filter: [k, kw],
                stride: [s, sw],
                padding,
                activation: Activation::None,
            }
        };
        self.b.op(op);
        Cur {
            id: out,
            shape,
            params: x.params,
        }
    }
}

/// Builds the integer graph of `net` as QAT evaluation runs it. `quant` decides the encoding:
/// unsigned activations give the paper's uint8 model, signed ones TFLite's int8 model. The graph
/// reads raw uint8 NHWC pixels (the int8 model shifts them to int8 with a Quantize op) and
/// returns the logits' codes. With `float_edges` it instead reads the f32 real values of the
/// input codes, `S (q - Z)` (`p/255` unless a uniform normalization other than none sets the
/// params, docs/spec.md §10), through a Quantize op and returns f32 logits through a Dequantize
/// op. Batch size 1, at the architecture's own input size ([`export_at`] takes another).
pub fn export(
    net: &Net,
    arch: Arch,
    quant: &QuantCfg,
    float_edges: bool,
) -> Result<Graph, TrainError> {
    let [_, h, w] = arch.input_shape();
    export_at(net, arch, (h, w), quant, float_edges)
}

/// [`export`] for `(height, width)` inputs (the size the network was trained at).
pub fn export_at(
    net: &Net,
    arch: Arch,
    size: (usize, usize),
    quant: &QuantCfg,
    float_edges: bool,
) -> Result<Graph, TrainError> {
    let mut e = Exporter::new(quant)?;
    let dtype = e.dtype;
    let (c, (h, w)) = (arch.channels(), size);
    let shape = [1, h, w, c];
    // The input holds 8-bit pixel codes whatever the activations' bit width.
    let signed = dtype == DType::I8;
    let in_params = net.input.params(signed);
    let quant_of = |p: QuantParams| Some(Quant::PerTensor(p));
    let q_in = if float_edges {
        let f = e.b.tensor("input", DType::F32, &shape, None);
        let q = e.b.tensor("input_q", dtype, &shape, quant_of(in_params));
        e.b.op(Op::Quantize {
            input: f,
            output: q,
        });
        e.b.input(f);
        q
    } else if signed {
        // Pixels p read as uint8 at the same scale, Z + 128: the Quantize op's p - 128 is exact.
        let pixels = QuantParams {
            zero_point: in_params.zero_point + 128,
            ..in_params
        };
        let p = e.b.tensor("input", DType::U8, &shape, quant_of(pixels));
        let q = e.b.tensor("input_q", dtype, &shape, quant_of(in_params));
        e.b.op(Op::Quantize {
            input: p,
            output: q,
        });
        e.b.input(p);
        q
    } else {
        let q = e.b.tensor("input", dtype, &shape, quant_of(in_params));
        e.b.input(q);
        q
    };
    let mut x = Cur {
        id: q_in,
        shape,
        params: in_params,
    };
    let fold = net.input.first_layer_fold();
    for (i, node) in net.body.iter().enumerate() {
        let name = format!("body{i}");
        x = match node {
            Node::Conv(l) if i == 0 => e.conv_folded(&name, l, &x, fold.as_ref())?,
            Node::Conv(l) => e.conv(&name, l, &x)?,
            Node::Pool(p) => e.pool(&name, p, &x),
            Node::InvRes(b) => {
                let h = match &b.expand {
                    Some(l) => e.conv(&format!("{name}/expand"), l, &x)?,
                    None => x,
                };
                let h = e.conv(&format!("{name}/dw"), &b.dw, &h)?;
                let h = e.conv(&format!("{name}/project"), &b.project, &h)?;
                match &b.add {
                    Some(a) => e.add(&format!("{name}/add"), a, &h, &x)?,
                    None => h,
                }
            }
            Node::Basic(b) => {
                let h = e.conv(&format!("{name}/conv1"), &b.conv1, &x)?;
                let h = e.conv(&format!("{name}/conv2"), &b.conv2, &h)?;
                let s = match &b.shortcut {
                    Some(l) => e.conv(&format!("{name}/shortcut"), l, &x)?,
                    None => x,
                };
                e.add(&format!("{name}/add"), &b.add, &h, &s)?
            }
        };
    }
    let x = e.pool("gap", &net.gap, &x);
    let f = net.head.export(quant)?;
    let [classes, depth] = [f.weight_shape[0], f.weight_shape[1]];
    let ws = quant.weight_scheme;
    let codes: Vec<i32> = f
        .weights
        .iter()
        .enumerate()
        .map(|(i, &v)| weight_code(ws, f.weight_quant.channel(i / depth), v))
        .collect();
    let wq = e.weight_quant(&f.weight_quant, 0)?;
    let data = e.codes(codes);
    let weights =
        e.b.constant("fc/weights", &[classes, depth], Some(wq), data);
    let bias = e.bias("fc/bias", x.params.scale, &f)?;
    let logits_name = if float_edges { "logits_q" } else { "logits" };
    let logits = e.act_tensor_shaped(logits_name, &[1, classes], f.output);
    e.b.op(Op::FullyConnected {
        input: x.id,
        weights,
        bias: Some(bias),
        output: logits,
        activation: activation(f.act),
    });
    let out = if float_edges {
        let o = e.b.tensor("logits", DType::F32, &[1, classes], None);
        e.b.op(Op::Dequantize {
            input: logits,
            output: o,
        });
        o
    } else {
        logits
    };
    e.b.output(out);
    e.b.finish()
        .map_err(|err| TrainError::Export(format!("the exported graph is invalid: {err}")))
}
