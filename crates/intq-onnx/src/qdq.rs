//! Export of an integer `.intq` model to ONNX in QDQ form: every quantized activation is a
//! QuantizeLinear/DequantizeLinear pair with its `(S, Z)`, weights are their integer codes under a
//! DequantizeLinear (per-channel scales on axis 0 where the model has them), biases int32 codes
//! at scale `S_in · S_w`, and the ops between run in float, as ONNX Runtime and other QDQ
//! consumers expect. The runtime requantizes in float, so its codes may differ from intq's by
//! a rounding step.
//!
//! The graph keeps the `.intq` model's edges: its input in NHWC (transposed to NCHW inside), f32
//! or integer codes (then read by a DequantizeLinear with the input's params), and its outputs,
//! f32 or codes (the QuantizeLinear of the value); 4-D activations are NCHW inside the ONNX
//! graph. Dimension 0 is a symbolic batch `N`.

use crate::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use intq_engine::{Activation, DType, Graph, Op, Padding, Quant, TensorData, TensorId};
use prost::Message;
use std::collections::HashMap;

/// Why a model cannot be exported.
#[derive(Debug, thiserror::Error)]
#[error("QDQ export: {0}")]
pub struct QdqError(pub String);

fn err(msg: impl Into<String>) -> QdqError {
    QdqError(msg.into())
}

/// NHWC axis → NCHW axis.
const NHWC_TO_NCHW: [usize; 4] = [0, 2, 3, 1];

struct Builder<'g> {
    g: &'g Graph,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    /// Engine tensor → the name of its (dequantized, NCHW if 4-D) float value.
    vals: HashMap<TensorId, String>,
    next: usize,
}

fn attr_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

fn attr_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(f),
        ..Default::default()
    }
}

fn attr_s(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn value_info(name: &str, elem: DataType, shape: &[usize]) -> ValueInfoProto {
    use tensor_shape_proto::{dimension::Value, Dimension};
    let dim = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| Dimension {
            value: Some(if i == 0 {
                Value::DimParam("N".into())
            } else {
                Value::DimValue(d as i64)
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Builder<'_> {
    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}#{}", self.next)
    }

    fn node(&mut self, op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: Some(format!("{op}_{}", self.nodes.len())),
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        });
    }

    fn init(&mut self, name: &str, elem: DataType, dims: &[usize], raw: Vec<u8>) -> String {
        self.inits.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(elem as i32),
            name: Some(name.into()),
            raw_data: Some(raw),
            ..Default::default()
        });
        name.to_string()
    }

    fn f32s(&mut self, hint: &str, dims: &[usize], v: &[f32]) -> String {
        let name = self.fresh(hint);
        let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.init(&name, DataType::Float, dims, raw)
    }

    fn i64s(&mut self, hint: &str, v: &[i64]) -> String {
        let name = self.fresh(hint);
        let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.init(&name, DataType::Int64, &[v.len()], raw)
    }

    /// Zero points of `dtype` (scalar when `dims` is empty).
    fn zps(
        &mut self,
        hint: &str,
        dtype: DType,
        dims: &[usize],
        z: &[i32],
    ) -> Result<String, QdqError> {
        let name = self.fresh(hint);
        let (elem, raw): (DataType, Vec<u8>) = match dtype {
            DType::U8 => (DataType::Uint8, z.iter().map(|&v| v as u8).collect()),
            DType::I8 => (DataType::Int8, z.iter().map(|&v| v as i8 as u8).collect()),
            DType::I32 => (
                DataType::Int32,
                z.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            DType::F32 => return Err(err(format!("{hint}: a float tensor has no zero point"))),
        };
        Ok(self.init(&name, elem, dims, raw))
    }

    /// `x` (float) quantized with engine tensor `t`'s params and dequantized again.
    fn qdq(&mut self, x: &str, t: TensorId) -> Result<String, QdqError> {
        let tensor = self.g.tensor(t);
        let p = tensor
            .params()
            .ok_or_else(|| err(format!("tensor {:?} has no per-tensor params", tensor.name)))?;
        // Codes narrowed below the type's range (fewer bits) clamp there, as the engine's do.
        let mut x = x.to_string();
        if let Some((lo, hi)) = tensor.code_range {
            let lo = self.f32s("code_min", &[], &[p.scale * (lo - p.zero_point) as f32]);
            let hi = self.f32s("code_max", &[], &[p.scale * (hi - p.zero_point) as f32]);
            let y = self.fresh(&format!("{}/narrow", tensor.name));
            self.node("Clip", &[&x, &lo, &hi], &y, vec![]);
            x = y;
        }
        let s = self.f32s(&format!("{}/scale", tensor.name), &[], &[p.scale]);
        let z = self.zps(
            &format!("{}/zero_point", tensor.name),
            tensor.dtype,
            &[],
            &[p.zero_point],
        )?;
        let q = self.fresh(&format!("{}/q", tensor.name));
        self.node("QuantizeLinear", &[&x, &s, &z], &q, vec![]);
        let dq = self.fresh(&tensor.name);
        self.node("DequantizeLinear", &[&q, &s, &z], &dq, vec![]);
        Ok(dq)
    }

    fn val(&self, t: TensorId) -> Result<String, QdqError> {
        self.vals.get(&t).cloned().ok_or_else(|| {
            err(format!(
                "tensor {:?} is read before it is computed",
                self.g.tensor(t).name
            ))
        })
    }

    /// A constant's codes, permuted by `order` (source index of each destination element) and
    /// dequantized with its params (per channel on destination axis `axis`).
    fn weight(
        &mut self,
        t: TensorId,
        dims: &[usize],
        order: &[usize],
        axis: i64,
    ) -> Result<String, QdqError> {
        let tensor = self.g.tensor(t);
        let name = tensor.name.clone();
        let (elem, raw): (DataType, Vec<u8>) = match &tensor.data {
            Some(TensorData::U8(v)) => (DataType::Uint8, order.iter().map(|&i| v[i]).collect()),
            Some(TensorData::I8(v)) => {
                (DataType::Int8, order.iter().map(|&i| v[i] as u8).collect())
            }
            _ => return Err(err(format!("weights {name:?} are not 8-bit codes"))),
        };
        let codes = self.fresh(&name);
        self.init(&codes, elem, dims, raw);
        let (scales, zps) = match &tensor.quant {
            Some(Quant::PerTensor(p)) => (vec![p.scale], vec![p.zero_point]),
            Some(Quant::PerChannel(c)) => (c.scales().to_vec(), c.zero_points().to_vec()),
            None => return Err(err(format!("weights {name:?} have no params"))),
        };
        let per_channel = scales.len() > 1;
        let sdims: &[usize] = if per_channel { &[scales.len()] } else { &[] };
        let s = self.f32s(&format!("{name}/scale"), sdims, &scales);
        let z = self.zps(&format!("{name}/zero_point"), tensor.dtype, sdims, &zps)?;
        let out = self.fresh(&format!("{name}/dq"));
        let attrs = if per_channel {
            vec![attr_i("axis", axis)]
        } else {
            vec![]
        };
        self.node("DequantizeLinear", &[&codes, &s, &z], &out, attrs);
        Ok(out)
    }

    /// An int32 bias dequantized at `S_in · S_w` per output channel.
    fn bias(
        &mut self,
        t: TensorId,
        input: TensorId,
        weights: TensorId,
    ) -> Result<String, QdqError> {
        let tensor = self.g.tensor(t);
        let Some(TensorData::I32(codes)) = &tensor.data else {
            return Err(err(format!("bias {:?} is not int32 codes", tensor.name)));
        };
        let s_in = self
            .g
            .tensor(input)
            .params()
            .ok_or_else(|| err("a convolution's input has no params"))?
            .scale;
        let w_scales: Vec<f32> = match &self.g.tensor(weights).quant {
            Some(Quant::PerTensor(p)) => vec![p.scale; codes.len()],
            Some(Quant::PerChannel(c)) => c.scales().to_vec(),
            None => return Err(err("weights without params")),
        };
        let scales: Vec<f32> = w_scales.iter().map(|s| s * s_in).collect();
        let name = tensor.name.clone();
        let c = self.fresh(&name);
        let raw = codes.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.init(&c, DataType::Int32, &[codes.len()], raw);
        let s = self.f32s(&format!("{name}/scale"), &[codes.len()], &scales);
        let z = self.zps(
            &format!("{name}/zero_point"),
            DType::I32,
            &[codes.len()],
            &vec![0; codes.len()],
        )?;
        let out = self.fresh(&format!("{name}/dq"));
        self.node(
            "DequantizeLinear",
            &[&c, &s, &z],
            &out,
            vec![attr_i("axis", 0)],
        );
        Ok(out)
    }

    /// `x` through the fused activation.
    fn act(&mut self, x: String, a: Activation) -> String {
        let (lo, hi) = match a {
            Activation::None => return x,
            Activation::Relu => {
                let y = self.fresh("relu");
                self.node("Relu", &[&x], &y, vec![]);
                return y;
            }
            Activation::Relu6 => (0.0, 6.0),
            Activation::ReluN1To1 => (-1.0, 1.0),
        };
        let lo = self.f32s("clip_min", &[], &[lo]);
        let hi = self.f32s("clip_max", &[], &[hi]);
        let y = self.fresh("clip");
        self.node("Clip", &[&x, &lo, &hi], &y, vec![]);
        y
    }

    /// ONNX `pads` `[top, left, bottom, right]` of a window op on NHWC input `x`.
    fn pads(
        &self,
        x: TensorId,
        padding: Padding,
        filter: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Result<Vec<i64>, QdqError> {
        let s = &self.g.tensor(x).shape;
        let (_, p) = padding
            .resolve(
                (s[1], s[2]),
                (filter[0], filter[1]),
                (stride[0], stride[1]),
                (dilation[0], dilation[1]),
            )
            .ok_or_else(|| {
                err(format!(
                    "the window of {:?} does not fit",
                    self.g.tensor(x).name
                ))
            })?;
        Ok([p.top, p.left, p.bottom, p.right]
            .map(|v| v as i64)
            .to_vec())
    }

    fn transpose_nhwc(&mut self, x: &str) -> String {
        let y = self.fresh("nhwc");
        self.node(
            "Transpose",
            &[x],
            &y,
            vec![attr_ints("perm", &[0, 2, 3, 1])],
        );
        y
    }

    fn transpose_nchw(&mut self, x: &str) -> String {
        let y = self.fresh("nchw");
        self.node(
            "Transpose",
            &[x],
            &y,
            vec![attr_ints("perm", &[0, 3, 1, 2])],
        );
        y
    }

    /// The float value of operand `t` of an op whose output has rank `out_rank`: a computed
    /// tensor, or a constant's codes dequantized, broadcast-shaped as the ONNX layout needs (a
    /// constant beside a 4-D activation is padded to rank 4 and permuted NHWC → NCHW).
    fn operand(&mut self, t: TensorId, out_rank: usize) -> Result<String, QdqError> {
        if let Some(v) = self.vals.get(&t) {
            return Ok(v.clone());
        }
        let tensor = self.g.tensor(t);
        if tensor.data.is_none() {
            return self.val(t);
        }
        if matches!(&tensor.quant, Some(Quant::PerChannel(c)) if c.scales().len() > 1) {
            return Err(err(format!(
                "constant operand {:?} has per-channel params",
                tensor.name
            )));
        }
        let s = tensor.shape.clone();
        let n: usize = s.iter().product();
        if out_rank == 4 && s.len() <= 4 {
            let mut p = vec![1; 4 - s.len()];
            p.extend(&s);
            let dims = [p[0], p[3], p[1], p[2]];
            // Destination (n, c, h, w) reads source (n, h, w, c).
            let mut order = Vec::with_capacity(n);
            for a in 0..p[0] {
                for c in 0..p[3] {
                    for y in 0..p[1] {
                        for x in 0..p[2] {
                            order.push(((a * p[1] + y) * p[2] + x) * p[3] + c);
                        }
                    }
                }
            }
            self.weight(t, &dims, &order, 0)
        } else {
            let order: Vec<usize> = (0..n).collect();
            self.weight(t, &s, &order, 0)
        }
    }

    /// `x` of engine rank `r` in the engine's layout (NHWC when 4-D).
    fn engine_layout(&mut self, x: &str, r: usize) -> String {
        if r == 4 {
            self.transpose_nhwc(x)
        } else {
            x.to_string()
        }
    }

    /// `y` of engine rank `r` back in the ONNX graph's layout (NCHW when 4-D).
    fn onnx_layout(&mut self, y: &str, r: usize) -> String {
        if r == 4 {
            self.transpose_nchw(y)
        } else {
            y.to_string()
        }
    }

    /// A one-input float op on `input` run in the engine's layout, then quantized as `output`.
    fn engine_layout_op(
        &mut self,
        op_type: &str,
        input: TensorId,
        output: TensorId,
        extra: &[String],
        attrs: Vec<AttributeProto>,
    ) -> Result<(), QdqError> {
        let x = self.val(input)?;
        let x = self.engine_layout(&x, self.g.tensor(input).shape.len());
        let mut ins = vec![x.as_str()];
        ins.extend(extra.iter().map(String::as_str));
        let y = self.fresh(&op_type.to_lowercase());
        self.node(op_type, &ins, &y, attrs);
        let y = self.onnx_layout(&y, self.g.tensor(output).shape.len());
        let y = self.qdq(&y, output)?;
        self.vals.insert(output, y);
        Ok(())
    }

    /// A one-input float op in the ONNX layout, then quantized as `output`.
    fn unary(
        &mut self,
        op_type: &str,
        input: TensorId,
        output: TensorId,
        attrs: Vec<AttributeProto>,
    ) -> Result<(), QdqError> {
        let x = self.val(input)?;
        let y = self.fresh(&op_type.to_lowercase());
        self.node(op_type, &[&x], &y, attrs);
        let y = self.qdq(&y, output)?;
        self.vals.insert(output, y);
        Ok(())
    }

    fn op(&mut self, op: &Op) -> Result<(), QdqError> {
        let g = self.g;
        let rank = |t: TensorId| g.tensor(t).shape.len();
        match op {
            Op::Quantize { input, output } => {
                // From f32, or from codes (the engine's exact uint8 <-> int8 move of the zero
                // point): either way the real value quantized with the output's params.
                let x = self.val(*input)?;
                let x = self.qdq(&x, *output)?;
                self.vals.insert(*output, x);
            }
            Op::Dequantize { input, output } => {
                let x = self.val(*input)?;
                self.vals.insert(*output, x);
            }
            Op::Conv2d {
                input,
                filter,
                bias,
                output,
                stride,
                dilation,
                padding,
                activation,
            } => {
                let fs = g.tensor(*filter).shape.clone();
                let [o, kh, kw, i] = [fs[0], fs[1], fs[2], fs[3]];
                // OHWI → OIHW.
                let order: Vec<usize> = (0..o * i * kh * kw)
                    .map(|d| {
                        let (oo, r) = (d / (i * kh * kw), d % (i * kh * kw));
                        let (ii, r) = (r / (kh * kw), r % (kh * kw));
                        let (y, x) = (r / kw, r % kw);
                        ((oo * kh + y) * kw + x) * i + ii
                    })
                    .collect();
                let w = self.weight(*filter, &[o, i, kh, kw], &order, 0)?;
                let pads = self.pads(*input, *padding, [kh, kw], *stride, *dilation)?;
                self.conv(
                    *input,
                    w,
                    *bias,
                    *filter,
                    *output,
                    1,
                    [kh, kw],
                    *stride,
                    *dilation,
                    pads,
                    *activation,
                )?;
            }
            Op::DepthwiseConv2d {
                input,
                filter,
                bias,
                output,
                stride,
                dilation,
                padding,
                activation,
                ..
            } => {
                let fs = g.tensor(*filter).shape.clone();
                let [kh, kw, c] = [fs[1], fs[2], fs[3]];
                let cin = *g.tensor(*input).shape.last().unwrap_or(&0);
                // [1, kh, kw, C] → [C, 1, kh, kw].
                let order: Vec<usize> = (0..c * kh * kw)
                    .map(|d| {
                        let (cc, r) = (d / (kh * kw), d % (kh * kw));
                        r * c + cc
                    })
                    .collect();
                let w = self.weight(*filter, &[c, 1, kh, kw], &order, 0)?;
                let pads = self.pads(*input, *padding, [kh, kw], *stride, *dilation)?;
                self.conv(
                    *input,
                    w,
                    *bias,
                    *filter,
                    *output,
                    cin,
                    [kh, kw],
                    *stride,
                    *dilation,
                    pads,
                    *activation,
                )?;
            }
            Op::FullyConnected {
                input,
                weights,
                bias,
                output,
                activation,
            }
            | Op::FullyConnectedF64 {
                input,
                weights,
                bias,
                output,
                activation,
            } => {
                let mut x = self.val(*input)?;
                if rank(*input) == 4 {
                    // The engine reads the NHWC activation row-major.
                    x = self.transpose_nhwc(&x);
                }
                let shape = self.i64s("flat", &[0, -1]);
                let flat = self.fresh("flat");
                self.node("Reshape", &[&x, &shape], &flat, vec![]);
                let ws = g.tensor(*weights).shape.clone();
                let order: Vec<usize> = (0..ws[0] * ws[1]).collect();
                let w = self.weight(*weights, &[ws[0], ws[1]], &order, 0)?;
                let mut ins = vec![flat, w];
                if let Some(b) = bias {
                    ins.push(self.bias(*b, *input, *weights)?);
                }
                let y = self.fresh("gemm");
                let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
                self.node("Gemm", &refs, &y, vec![attr_i("transB", 1)]);
                let y = self.act(y, *activation);
                let y = self.qdq(&y, *output)?;
                self.vals.insert(*output, y);
            }
            Op::Add {
                lhs,
                rhs,
                output,
                activation,
            }
            | Op::Mul {
                lhs,
                rhs,
                output,
                activation,
            }
            | Op::Sub {
                lhs,
                rhs,
                output,
                activation,
            } => {
                let (name, op_type) = match op {
                    Op::Add { .. } => ("add", "Add"),
                    Op::Sub { .. } => ("sub", "Sub"),
                    _ => ("mul", "Mul"),
                };
                let r = rank(*output);
                let (a, b) = (self.operand(*lhs, r)?, self.operand(*rhs, r)?);
                let y = self.fresh(name);
                self.node(op_type, &[&a, &b], &y, vec![]);
                let y = self.act(y, *activation);
                let y = self.qdq(&y, *output)?;
                self.vals.insert(*output, y);
            }
            Op::AveragePool2d {
                input,
                output,
                filter,
                stride,
                padding,
                activation,
            }
            | Op::MaxPool2d {
                input,
                output,
                filter,
                stride,
                padding,
                activation,
            } => {
                let max = matches!(op, Op::MaxPool2d { .. });
                let x = self.val(*input)?;
                let pads = self.pads(*input, *padding, *filter, *stride, [1, 1])?;
                let mut attrs = vec![
                    attr_ints("kernel_shape", &filter.map(|v| v as i64)),
                    attr_ints("strides", &stride.map(|v| v as i64)),
                    attr_ints("pads", &pads),
                ];
                if !max {
                    // TFLite's average leaves the padding out of the count.
                    attrs.push(attr_i("count_include_pad", 0));
                }
                let y = self.fresh("pool");
                self.node(
                    if max { "MaxPool" } else { "AveragePool" },
                    &[&x],
                    &y,
                    attrs,
                );
                let y = self.act(y, *activation);
                let y = self.qdq(&y, *output)?;
                self.vals.insert(*output, y);
            }
            Op::Concat {
                inputs,
                output,
                axis,
            } => {
                let xs = inputs
                    .iter()
                    .map(|&i| self.val(i))
                    .collect::<Result<Vec<_>, _>>()?;
                let axis = if rank(*output) == 4 {
                    NHWC_TO_NCHW[*axis]
                } else {
                    *axis
                };
                let y = self.fresh("concat");
                let refs: Vec<&str> = xs.iter().map(String::as_str).collect();
                self.node("Concat", &refs, &y, vec![attr_i("axis", axis as i64)]);
                let y = self.qdq(&y, *output)?;
                self.vals.insert(*output, y);
            }
            Op::Pad {
                input,
                output,
                paddings,
            } => {
                let x = self.val(*input)?;
                let nchw: Vec<[usize; 2]> = if paddings.len() == 4 {
                    [0, 3, 1, 2].iter().map(|&a| paddings[a]).collect()
                } else {
                    paddings.clone()
                };
                let mut pads: Vec<i64> = nchw.iter().map(|p| p[0] as i64).collect();
                pads.extend(nchw.iter().map(|p| p[1] as i64));
                let pads = self.i64s("pads", &pads);
                // Real 0 is the zero point's value: the padded codes are the engine's.
                let y = self.fresh("pad");
                self.node("Pad", &[&x, &pads], &y, vec![]);
                let y = self.qdq(&y, *output)?;
                self.vals.insert(*output, y);
            }
            Op::Mean {
                input,
                output,
                axes,
                keep_dims,
            } => {
                let x = self.val(*input)?;
                let r = rank(*input);
                let axes: Vec<i64> = axes
                    .iter()
                    .map(|&a| if r == 4 { NHWC_TO_NCHW[a] } else { a } as i64)
                    .collect();
                let y = self.fresh("mean");
                self.node(
                    "ReduceMean",
                    &[&x],
                    &y,
                    vec![
                        attr_ints("axes", &axes),
                        attr_i("keepdims", *keep_dims as i64),
                    ],
                );
                if r == 4 && !keep_dims && rank(*output) == 4 {
                    return Err(err("a Mean that drops axes to another 4-D shape"));
                }
                let y = self.qdq(&y, *output)?;
                self.vals.insert(*output, y);
            }
            Op::HardSwish { input, output }
            | Op::Logistic { input, output }
            | Op::LogisticLut { input, output } => {
                let x = self.val(*input)?;
                let f = if matches!(op, Op::HardSwish { .. }) {
                    "HardSwish"
                } else {
                    "Sigmoid"
                };
                let y = self.fresh(f);
                self.node(f, &[&x], &y, vec![]);
                let y = self.qdq(&y, *output)?;
                self.vals.insert(*output, y);
            }
            Op::Reshape { input, output } => {
                let mut x = self.val(*input)?;
                if rank(*input) == 4 {
                    x = self.transpose_nhwc(&x);
                }
                let os = &g.tensor(*output).shape;
                let mut dims: Vec<i64> = os.iter().map(|&d| d as i64).collect();
                dims[0] = 0;
                let shape = self.i64s("shape", &dims);
                let mut y = self.fresh("reshape");
                self.node("Reshape", &[&x, &shape], &y, vec![]);
                if os.len() == 4 {
                    y = self.transpose_nchw(&y);
                }
                self.vals.insert(*output, y);
            }
            Op::Relu {
                input,
                output,
                activation,
            } => {
                let x = self.val(*input)?;
                let y = self.act(x, *activation);
                let y = self.qdq(&y, *output)?;
                self.vals.insert(*output, y);
            }
            Op::LeakyRelu {
                input,
                output,
                alpha,
            } => self.unary("LeakyRelu", *input, *output, vec![attr_f("alpha", *alpha)])?,
            Op::Tanh { input, output } => self.unary("Tanh", *input, *output, vec![])?,
            Op::L2Normalization { input, output } => self.engine_layout_op(
                "LpNormalization",
                *input,
                *output,
                &[],
                vec![attr_i("axis", -1), attr_i("p", 2)],
            )?,
            Op::Softmax {
                input,
                output,
                beta,
            } => {
                let mut x = self.val(*input)?;
                if *beta != 1.0 {
                    let b = self.f32s("beta", &[], &[*beta]);
                    let y = self.fresh("beta_x");
                    self.node("Mul", &[&x, &b], &y, vec![]);
                    x = y;
                }
                let r = rank(*input);
                let x = self.engine_layout(&x, r);
                let y = self.fresh("softmax");
                self.node("Softmax", &[&x], &y, vec![attr_i("axis", -1)]);
                let y = self.onnx_layout(&y, r);
                let y = self.qdq(&y, *output)?;
                self.vals.insert(*output, y);
            }
            Op::Prelu {
                input,
                alpha,
                output,
            } => {
                let x = self.val(*input)?;
                let a = self.operand(*alpha, rank(*output))?;
                let y = self.fresh("prelu");
                self.node("PRelu", &[&x, &a], &y, vec![]);
                let y = self.qdq(&y, *output)?;
                self.vals.insert(*output, y);
            }
            Op::Maximum { lhs, rhs, output } | Op::Minimum { lhs, rhs, output } => {
                let op_type = if matches!(op, Op::Maximum { .. }) {
                    "Max"
                } else {
                    "Min"
                };
                let r = rank(*output);
                let (a, b) = (self.operand(*lhs, r)?, self.operand(*rhs, r)?);
                let y = self.fresh(op_type);
                self.node(op_type, &[&a, &b], &y, vec![]);
                let y = self.qdq(&y, *output)?;
                self.vals.insert(*output, y);
            }
            Op::ResizeNearest {
                input,
                output,
                align_corners,
                half_pixel_centers,
            }
            | Op::ResizeBilinear {
                input,
                output,
                align_corners,
                half_pixel_centers,
            } => {
                let nearest = matches!(op, Op::ResizeNearest { .. });
                // TFLite's source positions (docs/spec.md §11.7, §11.8) in ONNX's terms.
                let mode = match (align_corners, half_pixel_centers, nearest) {
                    (true, _, _) => "align_corners",
                    (false, true, true) => "tf_half_pixel_for_nn",
                    (false, true, false) => "half_pixel",
                    (false, false, _) => "asymmetric",
                };
                let mut attrs = vec![
                    attr_s("mode", if nearest { "nearest" } else { "linear" }),
                    attr_s("coordinate_transformation_mode", mode),
                ];
                if nearest {
                    // align_corners rounds half away from zero, otherwise the position floors.
                    let nm = if *align_corners {
                        "round_prefer_ceil"
                    } else {
                        "floor"
                    };
                    attrs.push(attr_s("nearest_mode", nm));
                }
                let x = self.val(*input)?;
                // The sizes: the input's batch and channels (N is symbolic), the output's H, W.
                let shape = self.fresh("shape");
                self.node("Shape", &[&x], &shape, vec![]);
                let (start, end) = (self.i64s("start", &[0]), self.i64s("end", &[2]));
                let nc = self.fresh("nc");
                self.node("Slice", &[&shape, &start, &end], &nc, vec![]);
                let os = &g.tensor(*output).shape;
                let hw = self.i64s("hw", &[os[1] as i64, os[2] as i64]);
                let sizes = self.fresh("sizes");
                self.node("Concat", &[&nc, &hw], &sizes, vec![attr_i("axis", 0)]);
                let y = self.fresh("resize");
                self.node("Resize", &[&x, "", "", &sizes], &y, attrs);
                let y = self.qdq(&y, *output)?;
                self.vals.insert(*output, y);
            }
            Op::TransposeConv {
                input,
                filter,
                bias,
                output,
                stride,
                padding,
                activation,
            } => {
                let fs = g.tensor(*filter).shape.clone();
                let [o, kh, kw, c] = [fs[0], fs[1], fs[2], fs[3]];
                // OHWI → ONNX's [C_in, C_out, kh, kw]: per-channel scales on axis 1.
                let order: Vec<usize> = (0..c * o * kh * kw)
                    .map(|d| {
                        let (cc, r) = (d / (o * kh * kw), d % (o * kh * kw));
                        let (oo, r) = (r / (kh * kw), r % (kh * kw));
                        let (y, x) = (r / kw, r % kw);
                        ((oo * kh + y) * kw + x) * c + cc
                    })
                    .collect();
                let w = self.weight(*filter, &[c, o, kh, kw], &order, 1)?;
                let (is, os) = (
                    g.tensor(*input).shape.clone(),
                    g.tensor(*output).shape.clone(),
                );
                // Top and left as the engine resolves them against the output's size; the
                // output's size implies the rest (bottom/right, or output_padding past it).
                let (_, p) = padding
                    .resolve((os[1], os[2]), (kh, kw), (stride[0], stride[1]), (1, 1))
                    .ok_or_else(|| err("a transposed convolution's filter does not fit"))?;
                let mut pads = vec![p.top as i64, p.left as i64, 0, 0];
                let mut out_pad = vec![0i64; 2];
                for (a, (&first, k)) in [p.top, p.left].iter().zip([kh, kw]).enumerate() {
                    let full = (stride[a] * (is[1 + a] - 1) + k) as i64;
                    let rest = full - first as i64 - os[1 + a] as i64;
                    if rest >= 0 {
                        pads[2 + a] = rest;
                    } else {
                        out_pad[a] = -rest;
                    }
                }
                let x = self.val(*input)?;
                let mut ins = vec![x, w];
                if let Some(b) = bias {
                    ins.push(self.bias(*b, *input, *filter)?);
                }
                let y = self.fresh("convt");
                let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
                let mut attrs = vec![
                    attr_ints("kernel_shape", &[kh as i64, kw as i64]),
                    attr_ints("strides", &stride.map(|v| v as i64)),
                    attr_ints("pads", &pads),
                ];
                if out_pad.iter().any(|&v| v != 0) {
                    attrs.push(attr_ints("output_padding", &out_pad));
                }
                self.node("ConvTranspose", &refs, &y, attrs);
                let y = self.act(y, *activation);
                let y = self.qdq(&y, *output)?;
                self.vals.insert(*output, y);
            }
            Op::Transpose {
                input,
                output,
                perm,
            } => {
                let p: Vec<i64> = perm.iter().map(|&v| v as i64).collect();
                self.engine_layout_op(
                    "Transpose",
                    *input,
                    *output,
                    &[],
                    vec![attr_ints("perm", &p)],
                )?
            }
            Op::Slice {
                input,
                output,
                begin,
                strides,
            } => {
                let os = g.tensor(*output).shape.clone();
                let starts: Vec<i64> = begin.iter().map(|&v| v as i64).collect();
                let ends: Vec<i64> = (0..os.len())
                    .map(|a| (begin[a] + (os[a].max(1) - 1) * strides[a] + 1) as i64)
                    .collect();
                let axes: Vec<i64> = (0..os.len() as i64).collect();
                let steps: Vec<i64> = strides.iter().map(|&v| v as i64).collect();
                let extra = vec![
                    self.i64s("starts", &starts),
                    self.i64s("ends", &ends),
                    self.i64s("axes", &axes),
                    self.i64s("steps", &steps),
                ];
                self.engine_layout_op("Slice", *input, *output, &extra, vec![])?
            }
            Op::Gather {
                input,
                output,
                axis,
                indices,
            } => {
                let (ir, or) = (rank(*input), rank(*output));
                let os = &g.tensor(*output).shape;
                let idims = os[*axis..*axis + or + 1 - ir].to_vec();
                let name = self.fresh("indices");
                let raw = indices
                    .iter()
                    .flat_map(|&v| (v as i64).to_le_bytes())
                    .collect();
                let idx = self.init(&name, DataType::Int64, &idims, raw);
                self.engine_layout_op(
                    "Gather",
                    *input,
                    *output,
                    &[idx],
                    vec![attr_i("axis", *axis as i64)],
                )?
            }
            Op::Sum {
                input,
                output,
                axes,
                keep_dims,
            } => {
                let a: Vec<i64> = axes.iter().map(|&v| v as i64).collect();
                let a = self.i64s("axes", &a);
                self.engine_layout_op(
                    "ReduceSum",
                    *input,
                    *output,
                    &[a],
                    vec![attr_i("keepdims", *keep_dims as i64)],
                )?
            }
            Op::ReduceMax {
                input,
                output,
                axes,
                keep_dims,
            } => {
                let a: Vec<i64> = axes.iter().map(|&v| v as i64).collect();
                self.engine_layout_op(
                    "ReduceMax",
                    *input,
                    *output,
                    &[],
                    vec![attr_ints("axes", &a), attr_i("keepdims", *keep_dims as i64)],
                )?
            }
            Op::DepthToSpace {
                input,
                output,
                block,
            } => {
                // TFLite's depth order (block row, block column, channel) is ONNX's DCR mode.
                let attrs = vec![attr_i("blocksize", *block as i64), attr_s("mode", "DCR")];
                self.unary("DepthToSpace", *input, *output, attrs)?
            }
            other => {
                return Err(err(format!(
                    "{:?} has no QDQ form in intq's exporter yet",
                    other.kind()
                )))
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        input: TensorId,
        w: String,
        bias: Option<TensorId>,
        filter: TensorId,
        output: TensorId,
        group: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        pads: Vec<i64>,
        activation: Activation,
    ) -> Result<(), QdqError> {
        let x = self.val(input)?;
        let mut ins = vec![x, w];
        if let Some(b) = bias {
            ins.push(self.bias(b, input, filter)?);
        }
        let y = self.fresh("conv");
        let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
        self.node(
            "Conv",
            &refs,
            &y,
            vec![
                attr_ints("kernel_shape", &kernel.map(|v| v as i64)),
                attr_ints("strides", &stride.map(|v| v as i64)),
                attr_ints("dilations", &dilation.map(|v| v as i64)),
                attr_ints("pads", &pads),
                attr_i("group", group as i64),
            ],
        );
        let y = self.act(y, activation);
        let y = self.qdq(&y, output)?;
        self.vals.insert(output, y);
        Ok(())
    }
}

/// The QDQ ONNX model (opset 14, for HardSwish) of integer graph `g`, encoded.
pub fn export(g: &Graph) -> Result<Vec<u8>, QdqError> {
    let mut b = Builder {
        g,
        nodes: Vec::new(),
        inits: Vec::new(),
        vals: HashMap::new(),
        next: 0,
    };
    let mut inputs = Vec::new();
    for &i in g.inputs() {
        let t = g.tensor(i);
        // An integer input (raw pixel codes) is read by a DequantizeLinear with its params.
        let (elem, mut x) = match t.dtype {
            DType::F32 => (DataType::Float, t.name.clone()),
            DType::U8 | DType::I8 => {
                let p = t
                    .params()
                    .ok_or_else(|| err(format!("input {:?} has no per-tensor params", t.name)))?;
                let s = b.f32s(&format!("{}/scale", t.name), &[], &[p.scale]);
                let z = b.zps(
                    &format!("{}/zero_point", t.name),
                    t.dtype,
                    &[],
                    &[p.zero_point],
                )?;
                let dq = b.fresh(&t.name);
                b.node("DequantizeLinear", &[&t.name, &s, &z], &dq, vec![]);
                let elem = if t.dtype == DType::U8 {
                    DataType::Uint8
                } else {
                    DataType::Int8
                };
                (elem, dq)
            }
            DType::I32 => return Err(err(format!("input {:?} is int32", t.name))),
        };
        inputs.push(value_info(&t.name, elem, &t.shape));
        if t.shape.len() == 4 {
            x = b.transpose_nchw(&x);
        }
        b.vals.insert(i, x);
    }
    for op in g.ops() {
        b.op(op)?;
    }
    let mut outputs = Vec::new();
    for &o in g.outputs() {
        let t = g.tensor(o);
        let mut y = b.val(o)?;
        if t.shape.len() == 4 {
            y = b.transpose_nhwc(&y);
        }
        // An integer output (logit codes) is the QuantizeLinear of its value with its params.
        let elem = match t.dtype {
            DType::F32 => {
                b.node("Identity", &[&y], &t.name, vec![]);
                DataType::Float
            }
            DType::U8 | DType::I8 => {
                let p = t
                    .params()
                    .ok_or_else(|| err(format!("output {:?} has no per-tensor params", t.name)))?;
                let s = b.f32s(&format!("{}/scale", t.name), &[], &[p.scale]);
                let z = b.zps(
                    &format!("{}/zero_point", t.name),
                    t.dtype,
                    &[],
                    &[p.zero_point],
                )?;
                b.node("QuantizeLinear", &[&y, &s, &z], &t.name, vec![]);
                if t.dtype == DType::U8 {
                    DataType::Uint8
                } else {
                    DataType::Int8
                }
            }
            DType::I32 => return Err(err(format!("output {:?} is int32", t.name))),
        };
        outputs.push(value_info(&t.name, elem, &t.shape));
    }
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(14),
        }],
        producer_name: Some("intq".into()),
        graph: Some(GraphProto {
            node: b.nodes,
            name: Some("intq_qdq".into()),
            initializer: b.inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}
