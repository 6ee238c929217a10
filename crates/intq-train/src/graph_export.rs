//! Conversion of an imported network ([`GraphNet`], evaluation state) into an `intq_engine::Graph`
//! through the zoo's export steps (`export.rs`: the same conv, add and pool emission, weight
//! codes, int32 bias and observer params), NHWC, batch 1. The graph reads raw uint8 pixels with
//! the params the pixel contract fixes (docs/spec.md §10; the int8 model shifts them to int8
//! with a Quantize op) and returns the logits' codes; with float edges it reads the f32 real
//! values of the pixel codes through a Quantize op and returns f32 logits through a Dequantize
//! op. A trailing Softmax stays outside it, as it stays outside the loss.

use std::collections::HashMap;

use intq_engine::{DType, Graph, Op, Quant, QuantParams};

use crate::export::{weight_code, Cur, Exporter};
use crate::fake_quant::host_vec;
use crate::graph_net::{GraphNet, Layer, Step};
use crate::layers::{ConvBn, QuantCfg, ACT_RELU, ACT_RELU6};
use crate::TrainError;
use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use intq_onnx::ValueId;

/// A value as the export sees it: an activation in the engine graph, or a flattened view of one
/// (`[N, C·H·W]` in ONNX's NCHW order, or NHWC's when `true`, read by a fully connected layer).
#[derive(Clone, Copy)]
enum Val {
    Act(Cur),
    Flat(Cur, bool),
}

fn observed(
    name: &str,
    p: Result<Option<QuantParams>, TrainError>,
) -> Result<QuantParams, TrainError> {
    p?.ok_or_else(|| TrainError::Export(format!("{name}: no observed range")))
}

/// A grouped convolution (not depthwise) as the dense one whose weights are zero between groups:
/// the engine has no grouped op. Its integer output is the grouped one's exactly: every
/// weight range already takes 0 in (per tensor and per channel), so the ranges, the codes of the
/// group's own weights and the folded bias are unchanged, and a zero weight's code is its zero
/// point, which adds nothing to the accumulator.
fn block_diagonal(l: &ConvBn) -> Result<ConvBn, TrainError> {
    let w = l.weight.val();
    let [o, ipg, kh, kw] = w.dims();
    let g = l.groups;
    if g == 0 || o % g != 0 {
        return Err(TrainError::Export(format!(
            "a grouped convolution with {o} outputs in {g} groups"
        )));
    }
    let (opg, cin, k) = (o / g, ipg * g, kh * kw);
    let src = host_vec(w.clone());
    let mut dense = vec![0f32; o * cin * k];
    for oc in 0..o {
        let group = oc / opg;
        for i in 0..ipg {
            let from = (oc * ipg + i) * k;
            let to = (oc * cin + group * ipg + i) * k;
            dense[to..to + k].copy_from_slice(&src[from..from + k]);
        }
    }
    let mut d = l.clone();
    d.groups = 1;
    d.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(dense, [o, cin, kh, kw]),
        &w.device(),
    ));
    Ok(d)
}

/// Builds the integer graph of `net` as QAT evaluation runs it (see the module doc): raw
/// pixels in and logit codes out, or with `float_edges` f32 in and out.
pub fn export_graph(
    net: &GraphNet,
    quant: &QuantCfg,
    float_edges: bool,
) -> Result<Graph, TrainError> {
    let mut e = Exporter::new(quant)?;
    let dtype = e.dtype;
    let [c, h, w] = net.input_shape;
    let shape = [1, h, w, c];
    // The input holds 8-bit pixel codes whatever the activations' bit width.
    let signed = dtype == DType::I8;
    let in_params = net.input.params(signed);
    let quant_of = |p: QuantParams| Some(Quant::PerTensor(p));
    let q = if float_edges {
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
    let fold = net.input.first_layer_fold();
    let mut vals: HashMap<ValueId, Val> = HashMap::new();
    vals.insert(
        net.input_value,
        Val::Act(Cur {
            id: q,
            shape,
            params: in_params,
        }),
    );
    let act = |vals: &HashMap<ValueId, Val>, v: ValueId, name: &str| match vals.get(&v) {
        Some(Val::Act(c)) => Ok(*c),
        Some(Val::Flat(..)) => Err(TrainError::Export(format!(
            "{name}: reads a flattened activation; only a fully connected layer can"
        ))),
        None => Err(TrainError::Export(format!("{name}: input not computed"))),
    };
    for step in &net.steps {
        match step {
            Step::Flatten {
                input,
                output,
                nhwc,
            } => {
                let src = match vals.get(input) {
                    Some(Val::Act(c)) => Val::Flat(*c, *nhwc),
                    // A flatten of a flatten keeps the first one's order.
                    Some(Val::Flat(c, order)) => Val::Flat(*c, *order),
                    None => return Err(TrainError::Export("flatten: input not computed".into())),
                };
                vals.insert(*output, src);
            }
            Step::Pad {
                input,
                output,
                pads: [t, l, b, r],
                name,
            } => {
                let x = act(&vals, *input, name)?;
                let [n, h, w, c] = x.shape;
                let shape = [n, h + t + b, w + l + r, c];
                let out = e.act_tensor_shaped(name, &shape, x.params);
                e.b.op(Op::Pad {
                    input: x.id,
                    output: out,
                    paddings: vec![[0, 0], [*t, *b], [*l, *r], [0, 0]],
                });
                vals.insert(
                    *output,
                    Val::Act(Cur {
                        id: out,
                        shape,
                        params: x.params,
                    }),
                );
            }
            Step::Layer {
                layer,
                inputs,
                output,
                name,
            } => {
                let y = match &net.layers[*layer] {
                    Layer::Conv(l) if net.fold_layer == Some(*layer) => {
                        let x = act(&vals, inputs[0], name)?;
                        e.conv_folded(name, l, &x, fold.as_ref())?
                    }
                    Layer::Conv(l) => {
                        let x = act(&vals, inputs[0], name)?;
                        if l.groups > 1 && l.groups != x.shape[3] {
                            e.conv(name, &block_diagonal(l)?, &x)?
                        } else {
                            e.conv(name, l, &x)?
                        }
                    }
                    Layer::ConvTranspose(l) => {
                        let x = act(&vals, inputs[0], name)?;
                        l.emit(&mut e, name, &x)?
                    }
                    Layer::Add(l) => {
                        let a = act(&vals, inputs[0], name)?;
                        let b = act(&vals, inputs[1], name)?;
                        e.add(name, l, &a, &b)?
                    }
                    Layer::Pool(p) => {
                        let x = act(&vals, inputs[0], name)?;
                        e.pool(name, p, &x)
                    }
                    Layer::Window(p) => {
                        let x = act(&vals, inputs[0], name)?;
                        let [n, h, w, c] = x.shape;
                        let oh = (h + p.pad_top + p.pad_bottom - p.kernel_h) / p.stride_h + 1;
                        let ow = (w + p.pad_left + p.pad_right - p.kernel_w) / p.stride_w + 1;
                        let shape = [n, oh, ow, c];
                        let out = e.act_tensor_shaped(name, &shape, x.params);
                        let (input, filter, stride) =
                            (x.id, [p.kernel_h, p.kernel_w], [p.stride_h, p.stride_w]);
                        let padding = intq_engine::Padding::Explicit {
                            top: p.pad_top,
                            bottom: p.pad_bottom,
                            left: p.pad_left,
                            right: p.pad_right,
                        };
                        let activation = intq_engine::Activation::None;
                        e.b.op(if p.max {
                            Op::MaxPool2d {
                                input,
                                output: out,
                                filter,
                                stride,
                                padding,
                                activation,
                            }
                        } else {
                            Op::AveragePool2d {
                                input,
                                output: out,
                                filter,
                                stride,
                                padding,
                                activation,
                            }
                        });
                        Cur {
                            id: out,
                            shape,
                            params: x.params,
                        }
                    }
                    Layer::HardSwish(l) => {
                        let x = act(&vals, inputs[0], name)?;
                        let p = observed(name, l.out_obs.params(quant.act_scheme))?;
                        let out = e.act_tensor_like(name, x.id, p);
                        e.b.op(Op::HardSwish {
                            input: x.id,
                            output: out,
                        });
                        Cur {
                            id: out,
                            shape: x.shape,
                            params: p,
                        }
                    }
                    Layer::Mul(l) => {
                        let a = act(&vals, inputs[0], name)?;
                        let b = act(&vals, inputs[1], name)?;
                        let p = observed(name, l.out_obs.params(quant.act_scheme))?;
                        let out = e.act_tensor_like(name, a.id, p);
                        // NHWC [1, H, W, C] by [1, 1, 1, C] broadcasts as [N, C, H, W] by
                        // [N, C, 1, 1] does.
                        e.b.op(Op::Mul {
                            lhs: a.id,
                            rhs: b.id,
                            output: out,
                            activation: intq_engine::Activation::None,
                        });
                        Cur {
                            id: out,
                            shape: a.shape,
                            params: p,
                        }
                    }
                    Layer::Sub(l) => {
                        let a = act(&vals, inputs[0], name)?;
                        let b = act(&vals, inputs[1], name)?;
                        let p = observed(name, l.out_obs.params(quant.act_scheme))?;
                        let out = e.act_tensor_like(name, a.id, p);
                        e.b.op(Op::Sub {
                            lhs: a.id,
                            rhs: b.id,
                            output: out,
                            activation: intq_engine::Activation::None,
                        });
                        Cur {
                            id: out,
                            shape: a.shape,
                            params: p,
                        }
                    }
                    Layer::LeakyRelu(l) => {
                        let x = act(&vals, inputs[0], name)?;
                        let p = observed(name, l.out_obs.params(quant.act_scheme))?;
                        let out = e.act_tensor_like(name, x.id, p);
                        e.b.op(Op::LeakyRelu {
                            input: x.id,
                            output: out,
                            alpha: l.alpha as f32,
                        });
                        Cur {
                            id: out,
                            shape: x.shape,
                            params: p,
                        }
                    }
                    Layer::Resize(l) => {
                        let x = act(&vals, inputs[0], name)?;
                        let shape = [x.shape[0], l.src_h.len(), l.src_w.len(), x.shape[3]];
                        let out = e.act_tensor_shaped(name, &shape, x.params);
                        e.b.op(Op::ResizeNearest {
                            input: x.id,
                            output: out,
                            align_corners: l.align_corners,
                            half_pixel_centers: l.half_pixel_centers,
                        });
                        Cur {
                            id: out,
                            shape,
                            params: x.params,
                        }
                    }
                    Layer::Bilinear(l) => {
                        let x = act(&vals, inputs[0], name)?;
                        let shape = [x.shape[0], l.pos_h.len(), l.pos_w.len(), x.shape[3]];
                        let out = e.act_tensor_shaped(name, &shape, x.params);
                        e.b.op(Op::ResizeBilinear {
                            input: x.id,
                            output: out,
                            align_corners: l.align_corners,
                            half_pixel_centers: l.half_pixel_centers,
                        });
                        Cur {
                            id: out,
                            shape,
                            params: x.params,
                        }
                    }
                    Layer::Prelu(l) => {
                        let x = act(&vals, inputs[0], name)?;
                        let p = observed(name, l.out_obs.params(quant.act_scheme))?;
                        let (_, pa) = l.slopes(Some(quant))?;
                        let pa = pa.expect("quantized slopes");
                        let codes: Vec<i32> = host_vec(l.slope.val())
                            .into_iter()
                            .map(|v| weight_code(quant.weight_scheme, pa, v))
                            .collect();
                        let c = codes.len();
                        let data = e.codes(codes);
                        let alpha = e.b.constant(
                            &format!("{name}/alpha"),
                            &[1, 1, 1, c],
                            Some(Quant::PerTensor(pa)),
                            data,
                        );
                        let out = e.act_tensor_like(name, x.id, p);
                        e.b.op(Op::Prelu {
                            input: x.id,
                            alpha,
                            output: out,
                        });
                        Cur {
                            id: out,
                            shape: x.shape,
                            params: p,
                        }
                    }
                    Layer::Gate(l) => {
                        let x = act(&vals, inputs[0], name)?;
                        let p = observed(name, l.out_obs.params(quant.act_scheme))?;
                        let data = e.codes(vec![1]);
                        // Of the input's rank: [N, F] after a fully connected layer.
                        let rank = e.b.shape_of(x.id).len();
                        let factor = e.b.constant(
                            &format!("{name}/factor"),
                            &vec![1; rank],
                            Some(Quant::PerTensor(crate::graph_net::QGate::factor_params())),
                            data,
                        );
                        let out = e.act_tensor_like(name, x.id, p);
                        e.b.op(Op::Mul {
                            lhs: x.id,
                            rhs: factor,
                            output: out,
                            activation: intq_engine::Activation::None,
                        });
                        Cur {
                            id: out,
                            shape: x.shape,
                            params: p,
                        }
                    }
                    Layer::MaxMin(l) => {
                        let p = observed(name, l.out_obs.params(quant.act_scheme))?;
                        // Each input on the output's grid: as it is, or requantized by a Mul.
                        let mut on_grid = Vec::with_capacity(2);
                        for (k, &v) in inputs.iter().enumerate() {
                            let x = act(&vals, v, name)?;
                            on_grid.push(if x.params == p {
                                x.id
                            } else {
                                let data = e.codes(vec![1]);
                                let unit = e.b.constant(
                                    &format!("{name}/unit{k}"),
                                    &vec![1; e.b.shape_of(x.id).len()],
                                    Some(
                                        Quant::PerTensor(crate::graph_net::QMaxMin::unit_params()),
                                    ),
                                    data,
                                );
                                let out = e.act_tensor_like(&format!("{name}/requant{k}"), x.id, p);
                                e.b.op(Op::Mul {
                                    lhs: x.id,
                                    rhs: unit,
                                    output: out,
                                    activation: intq_engine::Activation::None,
                                });
                                out
                            });
                        }
                        let a = act(&vals, inputs[0], name)?;
                        let out = e.act_tensor_like(name, a.id, p);
                        let (lhs, rhs) = (on_grid[0], on_grid[1]);
                        e.b.op(if l.max {
                            Op::Maximum {
                                lhs,
                                rhs,
                                output: out,
                            }
                        } else {
                            Op::Minimum {
                                lhs,
                                rhs,
                                output: out,
                            }
                        });
                        Cur {
                            id: out,
                            shape: a.shape,
                            params: p,
                        }
                    }
                    Layer::Tanh(l) => {
                        let x = act(&vals, inputs[0], name)?;
                        let p = l.params(quant.act_scheme);
                        let out = e.act_tensor_like(name, x.id, p);
                        e.b.op(Op::Tanh {
                            input: x.id,
                            output: out,
                        });
                        Cur {
                            id: out,
                            shape: x.shape,
                            params: p,
                        }
                    }
                    Layer::Sigmoid(l) => {
                        let x = act(&vals, inputs[0], name)?;
                        let p = QuantParams {
                            scale: 1.0 / l.levels as f32,
                            zero_point: quant.act_scheme.qmin(),
                        };
                        let out = e.act_tensor_like(name, x.id, p);
                        e.b.op(Op::Logistic {
                            input: x.id,
                            output: out,
                        });
                        Cur {
                            id: out,
                            shape: x.shape,
                            params: p,
                        }
                    }
                    Layer::Concat(l) => {
                        let xs = inputs
                            .iter()
                            .map(|&i| act(&vals, i, name))
                            .collect::<Result<Vec<_>, _>>()?;
                        let p = observed(name, l.out_obs.params(quant.act_scheme))?;
                        let mut out_shape = xs[0].shape;
                        out_shape[3] = xs.iter().map(|x| x.shape[3]).sum();
                        let out = e.act_tensor_shaped(name, &out_shape, p);
                        e.b.op(Op::Concat {
                            inputs: xs.iter().map(|x| x.id).collect(),
                            output: out,
                            axis: 3,
                        });
                        Cur {
                            id: out,
                            shape: out_shape,
                            params: p,
                        }
                    }
                    Layer::Linear(l) => {
                        let (x, nhwc) = match vals.get(&inputs[0]) {
                            Some(Val::Act(c)) => (*c, false),
                            Some(Val::Flat(c, nhwc)) => (*c, *nhwc),
                            None => {
                                return Err(TrainError::Export(format!(
                                    "{name}: input not computed"
                                )))
                            }
                        };
                        let f = l.export(quant)?;
                        let [out_f, depth] = [f.weight_shape[0], f.weight_shape[1]];
                        let [_, xh, xw, xc] = x.shape;
                        if xh * xw * xc != depth {
                            return Err(TrainError::Export(format!(
                                "{name}: reads {} values, its weights take {depth}",
                                xh * xw * xc
                            )));
                        }
                        let ws = quant.weight_scheme;
                        // ONNX flattens NCHW (c, y, x) unless transposed first; the engine reads
                        // NHWC (y, x, c).
                        let mut codes = vec![0i32; f.weights.len()];
                        for o in 0..out_f {
                            for ci in 0..xc {
                                for y in 0..xh {
                                    for xx in 0..xw {
                                        let dst = o * depth + (y * xw + xx) * xc + ci;
                                        // An NHWC flatten's columns are the engine's already.
                                        let src = if nhwc {
                                            dst
                                        } else {
                                            o * depth + (ci * xh + y) * xw + xx
                                        };
                                        codes[dst] = weight_code(
                                            ws,
                                            f.weight_quant.channel(o),
                                            f.weights[src],
                                        );
                                    }
                                }
                            }
                        }
                        let wq = e.weight_quant(&f.weight_quant, 0)?;
                        let data = e.codes(codes);
                        let weights = e.b.constant(
                            &format!("{name}/weights"),
                            &[out_f, depth],
                            Some(wq),
                            data,
                        );
                        let bias = e.bias(&format!("{name}/bias"), x.params.scale, &f)?;
                        let out = e.act_tensor_shaped(name, &[1, out_f], f.output);
                        e.b.op(Op::FullyConnected {
                            input: x.id,
                            weights,
                            bias: Some(bias),
                            output: out,
                            activation: match f.act {
                                ACT_RELU => intq_engine::Activation::Relu,
                                ACT_RELU6 => intq_engine::Activation::Relu6,
                                _ => intq_engine::Activation::None,
                            },
                        });
                        Cur {
                            id: out,
                            shape: [1, 1, 1, out_f],
                            params: f.output,
                        }
                    }
                };
                vals.insert(*output, Val::Act(y));
            }
        }
    }
    let logits = match vals.get(&net.logits) {
        Some(Val::Act(c)) if c.shape[1] == 1 && c.shape[2] == 1 => *c,
        _ => {
            return Err(TrainError::Export(
                "the network's logits are not the output of a fully connected layer".into(),
            ))
        }
    };
    let classes = logits.shape[3];
    let out = if float_edges {
        let out = e.b.tensor("logits", DType::F32, &[1, classes], None);
        e.b.op(Op::Dequantize {
            input: logits.id,
            output: out,
        });
        out
    } else {
        logits.id
    };
    e.b.output(out);
    e.b.finish()
        .map_err(|err| TrainError::Export(format!("the exported graph is invalid: {err}")))
}
