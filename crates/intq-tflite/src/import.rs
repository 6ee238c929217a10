//! `.tflite` to [`Graph`]: reads the first subgraph, maps each supported builtin op to an engine
//! op, keeps TFLite's tensor names, and drops the int32 shape arithmetic (SHAPE, STRIDED_SLICE,
//! PACK, ...) that only feeds RESHAPE's shape operand, since every shape here is static.

use crate::flatbuf::{Buf, Table};
use crate::schema::{self, fields, op as code};
use crate::TfliteError;
use intq_engine::{
    Activation, ChannelParams, DType, DetectionPart, Graph, GraphBuilder, Op, Padding, Quant,
    QuantParams, TensorData, TensorId,
};
use std::path::Path;

/// Reads a `.tflite` file into a graph.
pub fn load(path: &Path) -> Result<Graph, TfliteError> {
    let bytes = std::fs::read(path).map_err(|source| TfliteError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    import(&bytes).map_err(|e| TfliteError::File {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// One TFLite tensor as read from the file.
struct TfTensor {
    name: String,
    ttype: i8,
    shape: Vec<usize>,
    quant: Option<Quant>,
    data: Option<Vec<u8>>,
}

struct TfOp<'a> {
    code: i32,
    inputs: Vec<i32>,
    outputs: Vec<i32>,
    options: Option<Table<'a>>,
    /// A custom op's code and options.
    custom: Option<String>,
    custom_options: Option<&'a [u8]>,
}

/// The most elements one tensor may declare (2^28: 1 GiB of int32).
pub const MAX_ELEMENTS: usize = 1 << 28;

fn malformed(msg: String) -> TfliteError {
    TfliteError::Malformed(msg)
}

/// Parses a `.tflite` buffer into a validated graph; an op the importer lacks is an error.
pub fn import(bytes: &[u8]) -> Result<Graph, TfliteError> {
    let partial = import_partial(bytes)?;
    match partial.unsupported.into_iter().next() {
        Some(u) => Err(u.error),
        None => Ok(partial.graph),
    }
}

/// Reads a `.tflite` file, keeping what does not depend on ops the importer lacks.
pub fn load_partial(path: &Path) -> Result<Partial, TfliteError> {
    let bytes = std::fs::read(path).map_err(|source| TfliteError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    import_partial(&bytes).map_err(|e| TfliteError::File {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// A model imported up to the ops intq lacks.
pub struct Partial {
    /// Every op that does not depend on an unsupported one. Its outputs are the model's outputs
    /// that do not depend on one, plus the tensors the unsupported ops read (so nothing upstream
    /// of them is dead).
    pub graph: Graph,
    /// The ops left out, in file order.
    pub unsupported: Vec<UnsupportedOp>,
    /// Every tensor left out (by name), with the index in `unsupported` of an op it depends on.
    pub cut: Vec<(String, usize)>,
    /// The model's outputs (names) that depend on an unsupported op.
    pub cut_outputs: Vec<String>,
}

/// One op of the file the importer does not support.
pub struct UnsupportedOp {
    /// Its index among the subgraph's operators.
    pub index: usize,
    /// Its builtin operator code (32 for a custom op).
    pub code: i32,
    /// The builtin name, or the custom code of a custom op.
    pub name: String,
    /// Names of the tensors it writes.
    pub outputs: Vec<String>,
    /// The error `import` gives for it.
    pub error: TfliteError,
}

/// The builtin code of a custom op (its name is the operator code's `custom_code`).
const CUSTOM_OP: i32 = 32;

/// Builtin codes the importer maps to engine ops, kept in step with the arms of `Importer::op`;
/// any other op is left out by [`import_partial`].
fn is_supported_code(c: i32) -> bool {
    matches!(
        c,
        code::CONV_2D
            | code::DEPTHWISE_CONV_2D
            | code::FULLY_CONNECTED
            | code::ADD
            | code::MUL
            | code::SUB
            | code::RELU
            | code::RELU6
            | code::RELU_N1_TO_1
            | code::LEAKY_RELU
            | code::HARD_SWISH
            | code::TANH
            | code::RESIZE_BILINEAR
            | code::RESIZE_NEAREST_NEIGHBOR
            | code::SPLIT
            | code::SPLIT_V
            | code::PRELU
            | code::TRANSPOSE_CONV
            | code::SPACE_TO_BATCH_ND
            | code::BATCH_TO_SPACE_ND
            | code::DEPTH_TO_SPACE
            | code::MAXIMUM
            | code::MINIMUM
            | code::TRANSPOSE
            | code::SLICE
            | code::STRIDED_SLICE
            | code::CONCATENATION
            | code::AVERAGE_POOL_2D
            | code::MAX_POOL_2D
            | code::RESHAPE
            | code::SQUEEZE
            | code::PAD
            | code::MEAN
            | code::SOFTMAX
            | code::LOGISTIC
            | code::QUANTIZE
            | code::DEQUANTIZE
            | code::GATHER
            | code::SUM
            | code::REDUCE_MAX
            | code::ARG_MAX
            | code::L2_NORMALIZATION
    )
}

/// Parses a `.tflite` buffer, leaving out each op the importer lacks and everything that
/// depends on one; a malformed file, or a supported op with bad operands, is still an error.
pub fn import_partial(bytes: &[u8]) -> Result<Partial, TfliteError> {
    if bytes.len() < 8 {
        return Err(malformed(format!(
            "{} bytes is too short for a FlatBuffer",
            bytes.len()
        )));
    }
    let buf = Buf { bytes };
    let model = buf.root()?;
    let codes: Vec<i32> = model
        .tables(schema::model::OPERATOR_CODES, "operator_codes")?
        .iter()
        .map(|oc| {
            let dep = oc.i8(
                schema::opcode::DEPRECATED_BUILTIN_CODE,
                0,
                "deprecated_builtin_code",
            )?;
            let b = oc.i32(schema::opcode::BUILTIN_CODE, 0, "builtin_code")?;
            Ok((dep as i32).max(b))
        })
        .collect::<Result<_, TfliteError>>()?;
    let custom_codes: Vec<Option<String>> = model
        .tables(schema::model::OPERATOR_CODES, "operator_codes")?
        .iter()
        .map(|oc| oc.string(schema::opcode::CUSTOM_CODE, "custom_code"))
        .collect::<Result<_, TfliteError>>()?;
    let buffers = model.tables(schema::model::BUFFERS, "buffers")?;
    let subgraphs = model.tables(schema::model::SUBGRAPHS, "subgraphs")?;
    let sg = subgraphs
        .first()
        .ok_or_else(|| malformed("the model has no subgraph".into()))?;
    if subgraphs.len() > 1 {
        return Err(TfliteError::Other(format!(
            "the model has {} subgraphs; only single-subgraph models are supported",
            subgraphs.len()
        )));
    }

    let tensors = sg
        .tables(schema::subgraph::TENSORS, "tensors")?
        .iter()
        .enumerate()
        .map(|(i, t)| read_tensor(t, i, &buffers))
        .collect::<Result<Vec<_>, _>>()?;
    let ops = sg
        .tables(schema::subgraph::OPERATORS, "operators")?
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let idx = o.u32(schema::operator::OPCODE_INDEX, 0, "opcode_index")? as usize;
            let code = *codes.get(idx).ok_or_else(|| {
                malformed(format!(
                    "operator {i} uses opcode {idx}, but there are {} opcodes",
                    codes.len()
                ))
            })?;
            let custom = custom_codes.get(idx).cloned().flatten();
            Ok((
                TfOp {
                    code,
                    inputs: o
                        .i32s(schema::operator::INPUTS, "operator inputs")?
                        .unwrap_or_default(),
                    outputs: o
                        .i32s(schema::operator::OUTPUTS, "operator outputs")?
                        .unwrap_or_default(),
                    options: o.table(schema::operator::BUILTIN_OPTIONS, "builtin_options")?,
                    custom: custom.clone().filter(|_| code == CUSTOM_OP),
                    custom_options: o.bytes(schema::operator::CUSTOM_OPTIONS, "custom_options")?,
                },
                custom,
            ))
        })
        .collect::<Result<Vec<_>, TfliteError>>()?;
    let (ops, op_custom): (Vec<TfOp>, Vec<Option<String>>) = ops.into_iter().unzip();
    let inputs = sg
        .i32s(schema::subgraph::INPUTS, "subgraph inputs")?
        .unwrap_or_default();
    let outputs = sg
        .i32s(schema::subgraph::OUTPUTS, "subgraph outputs")?
        .unwrap_or_default();

    let mut cx = Importer {
        tensors: &tensors,
        ids: vec![None; tensors.len()],
        b: GraphBuilder::new(),
    };
    let check = |i: i32, what: &str| -> Result<usize, TfliteError> {
        usize::try_from(i)
            .ok()
            .filter(|&i| i < tensors.len())
            .ok_or_else(|| {
                malformed(format!(
                    "{what} refers to tensor {i}, but there are {} tensors",
                    tensors.len()
                ))
            })
    };
    for op in &ops {
        for &i in op.inputs.iter().filter(|&&i| i != -1).chain(&op.outputs) {
            check(i, "an operator")?;
        }
    }
    let shape_only = shape_only_ops(&ops, &tensors, &outputs);
    // Tensors written by an unsupported op, or by an op that reads one: left out.
    let mut cut: Vec<Option<usize>> = vec![None; tensors.len()];
    let mut unsupported = Vec::new();
    let mut frontier: Vec<usize> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        if shape_only[index] {
            continue;
        }
        let mut reads_cut = op
            .inputs
            .iter()
            .filter(|&&i| i != -1)
            .find_map(|&i| cut[i as usize]);
        if !is_supported_code(op.code)
            && op.custom.as_deref() != Some(crate::detection::CUSTOM_CODE)
        {
            let name = match &op_custom[index] {
                Some(c) if op.code == CUSTOM_OP => format!("CUSTOM '{c}'"),
                _ => code::name(op.code),
            };
            let error = cx
                .op(index, op)
                .err()
                .unwrap_or_else(|| TfliteError::Unsupported {
                    index,
                    op: name.clone(),
                    message: "this operator is not supported".into(),
                });
            let error = match error {
                TfliteError::Unsupported { index, message, .. } => TfliteError::Unsupported {
                    index,
                    op: name.clone(),
                    message,
                },
                e => e,
            };
            unsupported.push(UnsupportedOp {
                index,
                code: op.code,
                name,
                outputs: op
                    .outputs
                    .iter()
                    .map(|&o| tensors[o as usize].name.clone())
                    .collect(),
                error,
            });
            frontier.extend(
                op.inputs
                    .iter()
                    .filter(|&&i| i != -1)
                    .map(|&i| i as usize)
                    .filter(|&i| cut[i].is_none() && tensors[i].data.is_none()),
            );
            reads_cut = reads_cut.or(Some(unsupported.len() - 1));
        }
        if let Some(u) = reads_cut {
            for &o in &op.outputs {
                cut[o as usize] = Some(u);
            }
            continue;
        }
        cx.op(index, op)?;
    }
    for &i in &inputs {
        let id = cx.id(check(i, "a subgraph input")?);
        cx.b.input(id);
    }
    let mut cut_outputs = Vec::new();
    let mut added = Vec::new();
    for &i in &outputs {
        let i = check(i, "a subgraph output")?;
        if cut[i].is_some() {
            cut_outputs.push(tensors[i].name.clone());
            continue;
        }
        let id = cx.id(i);
        cx.b.output(id);
        added.push(i);
    }
    // A tensor an unsupported op reads is only cut when an earlier unsupported op wrote it.
    for i in frontier {
        if cut[i].is_none() && !added.contains(&i) && dtype_of(tensors[i].ttype).is_some() {
            let id = cx.id(i);
            cx.b.output(id);
            added.push(i);
        }
    }
    let cut = cut
        .iter()
        .enumerate()
        .filter_map(|(i, u)| u.map(|u| (tensors[i].name.clone(), u)))
        .collect();
    Ok(Partial {
        graph: cx.b.finish()?,
        unsupported,
        cut,
        cut_outputs,
    })
}

/// Ops that only compute int32 shapes for RESHAPE (all outputs int32, read only by other such
/// ops or as RESHAPE's second operand, none a graph output).
fn shape_only_ops(ops: &[TfOp], tensors: &[TfTensor], outputs: &[i32]) -> Vec<bool> {
    let mut skip: Vec<bool> = ops
        .iter()
        .map(|op| {
            !op.outputs.is_empty()
                && op.outputs.iter().all(|&o| {
                    tensors[o as usize].ttype == schema::ttype::INT32 && !outputs.contains(&o)
                })
        })
        .collect();
    // Un-skip any op whose output some kept op reads other than as a reshape shape, to a fixpoint.
    loop {
        let mut changed = false;
        for (j, op) in ops.iter().enumerate() {
            if skip[j] {
                continue;
            }
            let reads: &[i32] = if op.code == code::RESHAPE {
                &op.inputs[..op.inputs.len().min(1)]
            } else {
                &op.inputs
            };
            for (k, other) in ops.iter().enumerate() {
                if skip[k] && other.outputs.iter().any(|o| reads.contains(o)) {
                    skip[k] = false;
                    changed = true;
                }
            }
        }
        if !changed {
            return skip;
        }
    }
}

fn read_tensor(t: &Table, index: usize, buffers: &[Table]) -> Result<TfTensor, TfliteError> {
    let what = format!("tensor {index}");
    let name = t
        .string(schema::tensor::NAME, &what)?
        .unwrap_or_else(|| format!("tensor_{index}"));
    let shape = t
        .i32s(schema::tensor::SHAPE, &what)?
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            usize::try_from(d).map_err(|_| {
                malformed(format!(
                    "tensor {index} ('{name}') has a negative dimension {d}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Activations are allocated from their declared shapes, not from the file's bytes, so the
    // declared size is bounded here.
    let elements = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if !matches!(elements, Some(n) if n <= MAX_ELEMENTS) {
        return Err(malformed(format!(
            "tensor {index} ('{name}') has shape {shape:?}, more than {MAX_ELEMENTS} elements"
        )));
    }
    let ttype = t.i8(schema::tensor::TYPE, 0, &what)?;
    let buffer = t.u32(schema::tensor::BUFFER, 0, &what)? as usize;
    let data = match buffers.get(buffer) {
        Some(b) if buffer != 0 => {
            if b.u64(schema::buffer::OFFSET, 0, &what)? != 0 {
                return Err(TfliteError::Other(format!(
                    "tensor {index} ('{name}') keeps its data outside the FlatBuffer \
                     (buffer offset); not supported"
                )));
            }
            b.bytes(schema::buffer::DATA, &what)?
                .filter(|d| !d.is_empty())
                .map(|d| d.to_vec())
        }
        Some(_) => None,
        None => {
            return Err(malformed(format!(
                "tensor {index} ('{name}') uses buffer {buffer}, but there are {}",
                buffers.len()
            )))
        }
    };
    let quant = match t.table(schema::tensor::QUANTIZATION, &what)? {
        None => None,
        Some(q) => {
            let scales = q.f32s(schema::quant::SCALE, &what)?.unwrap_or_default();
            let zps = q
                .i64s(schema::quant::ZERO_POINT, &what)?
                .unwrap_or_default();
            let axis = q.i32(schema::quant::QUANTIZED_DIMENSION, 0, &what)?;
            let bad = |m: String| malformed(format!("tensor {index} ('{name}'): {m}"));
            let zps: Vec<i32> = zps
                .iter()
                .map(|&z| i32::try_from(z).map_err(|_| bad(format!("zero point {z} overflows"))))
                .collect::<Result<_, _>>()?;
            match (scales.len(), zps.len()) {
                (0, _) => None,
                (1, 1) => Some(Quant::PerTensor(
                    QuantParams::new(scales[0], zps[0]).map_err(|e| bad(e.to_string()))?,
                )),
                (n, m) if n == m => {
                    let axis = usize::try_from(axis)
                        .map_err(|_| bad(format!("quantized_dimension {axis} is negative")))?;
                    Some(Quant::PerChannel(
                        ChannelParams::new(scales, zps, axis).map_err(|e| bad(e.to_string()))?,
                    ))
                }
                (n, m) => return Err(bad(format!("{n} scales but {m} zero points"))),
            }
        }
    };
    Ok(TfTensor {
        name,
        ttype,
        shape,
        quant,
        data,
    })
}

struct Importer<'t> {
    tensors: &'t [TfTensor],
    ids: Vec<Option<TensorId>>,
    b: GraphBuilder,
}

fn activation(a: i8) -> Option<Activation> {
    match a {
        schema::activation::NONE => Some(Activation::None),
        schema::activation::RELU => Some(Activation::Relu),
        schema::activation::RELU_N1_TO_1 => Some(Activation::ReluN1To1),
        schema::activation::RELU6 => Some(Activation::Relu6),
        _ => None,
    }
}

impl Importer<'_> {
    /// The engine tensor for TFLite tensor `i`, created on first use.
    fn id(&mut self, i: usize) -> TensorId {
        if let Some(id) = self.ids[i] {
            return id;
        }
        let t = &self.tensors[i];
        let dtype = dtype_of(t.ttype).expect("checked by the caller");
        // Bias scales are implied by S_in * S_w; keeping TFLite's copy adds nothing.
        let quant = if dtype == DType::I32 {
            None
        } else {
            t.quant.clone()
        };
        let id = match &t.data {
            Some(bytes) => {
                let data = match dtype {
                    DType::U8 => TensorData::U8(bytes.clone()),
                    DType::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
                    DType::I32 => TensorData::I32(
                        bytes
                            .chunks_exact(4)
                            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                    ),
                    DType::F32 => TensorData::F32(
                        bytes
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                    ),
                };
                self.b.constant(&t.name, &t.shape, quant, data)
            }
            None => self.b.tensor(&t.name, dtype, &t.shape, quant),
        };
        self.ids[i] = Some(id);
        id
    }

    fn op(&mut self, index: usize, op: &TfOp) -> Result<(), TfliteError> {
        let name = op.custom.clone().unwrap_or_else(|| code::name(op.code));
        let unsupported = |message: String| TfliteError::Unsupported {
            index,
            op: name.clone(),
            message,
        };
        // Every operand must be a type the engine has, with data matching its shape. The shape
        // operands of RESHAPE, PAD and MEAN are read here, not imported.
        let data_inputs = match op.code {
            code::RESHAPE
            | code::PAD
            | code::MEAN
            | code::RESIZE_BILINEAR
            | code::RESIZE_NEAREST_NEIGHBOR
            | code::TRANSPOSE
            | code::SLICE
            | code::STRIDED_SLICE
            | code::SPLIT_V
            | code::SPACE_TO_BATCH_ND
            | code::BATCH_TO_SPACE_ND
            | code::GATHER
            | code::SUM
            | code::REDUCE_MAX
            | code::ARG_MAX => &op.inputs[..op.inputs.len().min(1)],
            code::SPLIT => &op.inputs[op.inputs.len().min(1)..op.inputs.len().min(2)],
            // Operand 0 is the constant int32 output shape, read here.
            code::TRANSPOSE_CONV => &op.inputs[op.inputs.len().min(1)..],
            _ => &op.inputs[..],
        };
        for &i in data_inputs.iter().filter(|&&i| i != -1).chain(&op.outputs) {
            let t = &self.tensors[i as usize];
            let Some(dtype) = dtype_of(t.ttype) else {
                return Err(unsupported(format!(
                    "tensor {i} ('{}') is {}; only uint8, int8, int32 and float32 are supported",
                    t.name,
                    schema::ttype::name(t.ttype)
                )));
            };
            if let Some(d) = &t.data {
                let n: Option<usize> = t
                    .shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .and_then(|n| n.checked_mul(dtype.size_bytes()));
                if n != Some(d.len()) {
                    return Err(malformed(format!(
                        "tensor {i} ('{}') has shape {:?} of {dtype} but {} bytes of data",
                        t.name,
                        t.shape,
                        d.len()
                    )));
                }
            }
        }
        let arity = |n: usize, m: usize| -> Result<(), TfliteError> {
            if op.inputs.len() < n || op.outputs.len() != m {
                return Err(unsupported(format!(
                    "expected at least {n} input(s) and {m} output(s), found {} and {}",
                    op.inputs.len(),
                    op.outputs.len()
                )));
            }
            if op.inputs[..n].contains(&-1) {
                return Err(unsupported(format!(
                    "one of its first {n} inputs is missing (-1)"
                )));
            }
            Ok(())
        };
        let opt = op.options;
        let oi8 = |f: u16, d: i8| -> Result<i8, TfliteError> {
            opt.map_or(Ok(d), |t| t.i8(f, d, "options"))
        };
        let oi32 = |f: u16, d: i32| -> Result<i32, TfliteError> {
            opt.map_or(Ok(d), |t| t.i32(f, d, "options"))
        };
        let act = |f: u16| -> Result<Activation, TfliteError> {
            let a = oi8(f, 0)?;
            activation(a).ok_or_else(|| {
                unsupported(format!(
                    "fused activation {a} is not supported (only NONE, RELU, RELU_N1_TO_1, RELU6)"
                ))
            })
        };
        let padding = |f: u16| -> Result<Padding, TfliteError> {
            match oi8(f, 0)? {
                schema::PADDING_SAME => Ok(Padding::Same),
                schema::PADDING_VALID => Ok(Padding::Valid),
                p => Err(unsupported(format!("padding {p} is not SAME or VALID"))),
            }
        };
        let pos = |v: i32, what: &str| -> Result<usize, TfliteError> {
            usize::try_from(v)
                .ok()
                .filter(|&v| v >= 1)
                .ok_or_else(|| unsupported(format!("{what} {v} is not positive")))
        };
        let input = |cx: &mut Self, k: usize| cx.id(op.inputs[k] as usize);
        let opt_input = |cx: &mut Self, k: usize| -> Option<TensorId> {
            op.inputs
                .get(k)
                .filter(|&&i| i != -1)
                .map(|&i| cx.id(i as usize))
        };
        let out_index = op.outputs.first().copied().unwrap_or(-1);
        let engine_op = match op.code {
            code::CONV_2D => {
                use fields::conv as f;
                arity(2, 1)?;
                Op::Conv2d {
                    input: input(self, 0),
                    filter: input(self, 1),
                    bias: opt_input(self, 2),
                    output: self.id(out_index as usize),
                    stride: [
                        pos(oi32(f::STRIDE_H, 0)?, "stride_h")?,
                        pos(oi32(f::STRIDE_W, 0)?, "stride_w")?,
                    ],
                    dilation: [
                        pos(oi32(f::DILATION_H, 1)?, "dilation_h")?,
                        pos(oi32(f::DILATION_W, 1)?, "dilation_w")?,
                    ],
                    padding: padding(f::PADDING)?,
                    activation: act(f::ACTIVATION)?,
                }
            }
            code::DEPTHWISE_CONV_2D => {
                use fields::dw as f;
                arity(2, 1)?;
                let x = &self.tensors[op.inputs[0] as usize];
                let w = &self.tensors[op.inputs[1] as usize];
                // TFLite derives the multiplier from the shapes, not from the option.
                let (c, oc) = (
                    x.shape.last().copied().unwrap_or(0),
                    w.shape.last().copied().unwrap_or(0),
                );
                if c == 0 || oc % c != 0 {
                    return Err(unsupported(format!(
                        "filter '{}' has {oc} channels, not a multiple of the input's {c}",
                        w.name
                    )));
                }
                Op::DepthwiseConv2d {
                    input: input(self, 0),
                    filter: input(self, 1),
                    bias: opt_input(self, 2),
                    output: self.id(out_index as usize),
                    stride: [
                        pos(oi32(f::STRIDE_H, 0)?, "stride_h")?,
                        pos(oi32(f::STRIDE_W, 0)?, "stride_w")?,
                    ],
                    dilation: [
                        pos(oi32(f::DILATION_H, 1)?, "dilation_h")?,
                        pos(oi32(f::DILATION_W, 1)?, "dilation_w")?,
                    ],
                    padding: padding(f::PADDING)?,
                    depth_multiplier: oc / c,
                    activation: act(f::ACTIVATION)?,
                }
            }
            code::FULLY_CONNECTED => {
                use fields::fc as f;
                arity(2, 1)?;
                if oi8(f::WEIGHTS_FORMAT, 0)? != 0 {
                    return Err(unsupported(
                        "only the DEFAULT weights format is supported".into(),
                    ));
                }
                let activation = act(f::ACTIVATION)?;
                let w = &self.tensors[op.inputs[1] as usize];
                let y = &self.tensors[out_index as usize];
                let x = &self.tensors[op.inputs[0] as usize];
                if w.shape.len() != 2 || w.shape[1] == 0 {
                    return Err(unsupported(format!(
                        "weights '{}' have shape {:?}, expected [out, depth]",
                        w.name, w.shape
                    )));
                }
                let batch = x.shape.iter().product::<usize>() / w.shape[1];
                let flat = [batch, w.shape[0]];
                let (input, weights, bias) = (input(self, 0), input(self, 1), opt_input(self, 2));
                let output = self.id(out_index as usize);
                if y.shape != flat {
                    // keep_num_dims (or a rank-1 output): compute [batch, out], then reshape.
                    let q = y.quant.clone();
                    let dtype = dtype_of(y.ttype).expect("checked");
                    let tmp = self
                        .b
                        .tensor(&format!("{}/intq_fc_2d", y.name), dtype, &flat, q);
                    self.b.op(Op::FullyConnectedF64 {
                        input,
                        weights,
                        bias,
                        output: tmp,
                        activation,
                    });
                    Op::Reshape { input: tmp, output }
                } else {
                    Op::FullyConnectedF64 {
                        input,
                        weights,
                        bias,
                        output,
                        activation,
                    }
                }
            }
            code::ADD => {
                arity(2, 1)?;
                Op::Add {
                    lhs: input(self, 0),
                    rhs: input(self, 1),
                    output: self.id(out_index as usize),
                    activation: act(fields::ADD_ACTIVATION)?,
                }
            }
            code::MUL | code::SUB => {
                arity(2, 1)?;
                let (lhs, rhs) = (input(self, 0), input(self, 1));
                let output = self.id(out_index as usize);
                if op.code == code::MUL {
                    Op::Mul {
                        lhs,
                        rhs,
                        output,
                        activation: act(fields::MUL_ACTIVATION)?,
                    }
                } else {
                    Op::Sub {
                        lhs,
                        rhs,
                        output,
                        activation: act(fields::SUB_ACTIVATION)?,
                    }
                }
            }
            code::RELU | code::RELU6 | code::RELU_N1_TO_1 => {
                arity(1, 1)?;
                Op::Relu {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                    activation: match op.code {
                        code::RELU => Activation::Relu,
                        code::RELU6 => Activation::Relu6,
                        _ => Activation::ReluN1To1,
                    },
                }
            }
            code::LEAKY_RELU => {
                arity(1, 1)?;
                let alpha =
                    opt.map_or(Ok(0.0), |t| t.f32(fields::LEAKY_RELU_ALPHA, 0.0, "options"))?;
                if !(alpha >= 0.0 && alpha.is_finite()) {
                    return Err(unsupported(format!(
                        "alpha {alpha} is not supported (only finite non-negative values)"
                    )));
                }
                Op::LeakyRelu {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                    alpha,
                }
            }
            code::HARD_SWISH => {
                arity(1, 1)?;
                Op::HardSwish {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                }
            }
            code::TANH => {
                arity(1, 1)?;
                Op::Tanh {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                }
            }
            code::RESIZE_BILINEAR | code::RESIZE_NEAREST_NEIGHBOR => {
                arity(2, 1)?;
                let size = self.const_ints(op.inputs[1], &unsupported)?;
                let y = &self.tensors[out_index as usize];
                let expected = match y.shape.as_slice() {
                    [_, h, w, _] => Some([*h as i64, *w as i64]),
                    _ => None,
                };
                if expected.map(|e| e.to_vec()) != Some(size.clone()) {
                    return Err(unsupported(format!(
                        "size {size:?} does not match output '{}' of shape {:?} (NHWC)",
                        y.name, y.shape
                    )));
                }
                let flag = |f: u16| opt.map_or(Ok(false), |t| t.bool(f, "options"));
                let (input, output) = (input(self, 0), self.id(out_index as usize));
                if op.code == code::RESIZE_BILINEAR {
                    use fields::resize_bilinear as f;
                    Op::ResizeBilinear {
                        input,
                        output,
                        align_corners: flag(f::ALIGN_CORNERS)?,
                        half_pixel_centers: flag(f::HALF_PIXEL_CENTERS)?,
                    }
                } else {
                    use fields::resize_nearest as f;
                    Op::ResizeNearest {
                        input,
                        output,
                        align_corners: flag(f::ALIGN_CORNERS)?,
                        half_pixel_centers: flag(f::HALF_PIXEL_CENTERS)?,
                    }
                }
            }
            code::SPLIT | code::SPLIT_V => {
                // One Slice per output: the engine's ops write one tensor each.
                let (data, axis_at) = if op.code == code::SPLIT {
                    (1, 0)
                } else {
                    (0, 2)
                };
                if op.inputs.len() <= data.max(axis_at) || op.outputs.is_empty() {
                    return Err(unsupported(format!(
                        "expected {} inputs and at least one output",
                        if op.code == code::SPLIT { 2 } else { 3 }
                    )));
                }
                let shape = self.tensors[op.inputs[data] as usize].shape.clone();
                let rank = shape.len() as i64;
                let axis = match self.const_ints(op.inputs[axis_at], &unsupported)?[..] {
                    [a] if (-rank..rank).contains(&a) => ((a + rank) % rank) as usize,
                    ref a => {
                        return Err(unsupported(format!(
                            "axis {a:?} is not one axis of rank {rank}"
                        )))
                    }
                };
                let n = op.outputs.len();
                let d = shape[axis];
                let sizes: Vec<usize> = if op.code == code::SPLIT {
                    if !d.is_multiple_of(n) {
                        return Err(unsupported(format!(
                            "{n} outputs do not split dimension {d} evenly"
                        )));
                    }
                    vec![d / n; n]
                } else {
                    let given = self.const_ints(op.inputs[1], &unsupported)?;
                    let known: i64 = given.iter().filter(|&&v| v != -1).sum();
                    let fill = d as i64 - known;
                    let sizes: Vec<i64> = given
                        .iter()
                        .map(|&v| if v == -1 { fill } else { v })
                        .collect();
                    if given.len() != n
                        || given.iter().filter(|&&v| v == -1).count() > 1
                        || sizes.iter().any(|&v| v < 1)
                        || sizes.iter().sum::<i64>() != d as i64
                    {
                        return Err(unsupported(format!(
                            "size_splits {given:?} do not split dimension {d} into {n} parts"
                        )));
                    }
                    sizes.iter().map(|&v| v as usize).collect()
                };
                let input = input(self, data);
                let mut start = 0;
                let mut slices = Vec::with_capacity(n);
                for (&o, &size) in op.outputs.iter().zip(&sizes) {
                    let mut expected = shape.clone();
                    expected[axis] = size;
                    let y = &self.tensors[o as usize];
                    if y.shape != expected {
                        return Err(unsupported(format!(
                            "output '{}' has shape {:?}, but its part is {expected:?}",
                            y.name, y.shape
                        )));
                    }
                    let mut begin = vec![0; shape.len()];
                    begin[axis] = start;
                    start += size;
                    slices.push(Op::Slice {
                        input,
                        output: self.id(o as usize),
                        begin,
                        strides: vec![1; shape.len()],
                    });
                }
                let last = slices.pop().expect("at least one output");
                for s in slices {
                    self.b.op(s);
                }
                last
            }
            code::PRELU => {
                arity(2, 1)?;
                Op::Prelu {
                    input: input(self, 0),
                    alpha: input(self, 1),
                    output: self.id(out_index as usize),
                }
            }
            code::MAXIMUM | code::MINIMUM => {
                arity(2, 1)?;
                let (lhs, rhs) = (input(self, 0), input(self, 1));
                let output = self.id(out_index as usize);
                if op.code == code::MAXIMUM {
                    Op::Maximum { lhs, rhs, output }
                } else {
                    Op::Minimum { lhs, rhs, output }
                }
            }
            code::TRANSPOSE_CONV => {
                use fields::transpose_conv as f;
                arity(3, 1)?;
                let y = &self.tensors[out_index as usize];
                let shape = self.const_ints(op.inputs[0], &unsupported)?;
                if y.shape.len() != 4
                    || shape.len() != 4
                    || shape.iter().zip(&y.shape).any(|(&a, &b)| a != b as i64)
                {
                    return Err(unsupported(format!(
                        "output_shape {shape:?} is not the 4-D shape {:?} of output '{}'",
                        y.shape, y.name
                    )));
                }
                // TFLite's int8 kernel leaves the weights' zero point out of its sums.
                let w = &self.tensors[op.inputs[1] as usize];
                let zero_points = match &w.quant {
                    Some(Quant::PerTensor(p)) => vec![p.zero_point],
                    Some(Quant::PerChannel(cp)) => cp.zero_points().to_vec(),
                    None => vec![],
                };
                if w.ttype == schema::ttype::INT8 && zero_points.iter().any(|&z| z != 0) {
                    return Err(unsupported(format!(
                        "int8 weights '{}' have a nonzero zero point, which TFLite's kernel \
                         ignores",
                        w.name
                    )));
                }
                Op::TransposeConv {
                    input: input(self, 2),
                    filter: input(self, 1),
                    bias: opt_input(self, 3),
                    output: self.id(out_index as usize),
                    stride: [
                        pos(oi32(f::STRIDE_H, 0)?, "stride_h")?,
                        pos(oi32(f::STRIDE_W, 0)?, "stride_w")?,
                    ],
                    padding: padding(f::PADDING)?,
                    activation: act(f::ACTIVATION)?,
                }
            }
            code::SPACE_TO_BATCH_ND | code::BATCH_TO_SPACE_ND => {
                arity(3, 1)?;
                let x = &self.tensors[op.inputs[0] as usize];
                if x.shape.len() != 4 {
                    return Err(unsupported(format!(
                        "input '{}' has shape {:?}; only 4-D (NHWC) inputs are supported",
                        x.name, x.shape
                    )));
                }
                let block = self.const_ints(op.inputs[1], &unsupported)?;
                let edges = self.const_ints(op.inputs[2], &unsupported)?;
                if block.len() != 2
                    || block.iter().any(|&b| !(1..=i32::MAX as i64).contains(&b))
                    || edges.len() != 4
                    || edges.iter().any(|&e| !(0..=i32::MAX as i64).contains(&e))
                {
                    return Err(unsupported(format!(
                        "block_shape {block:?} and {} {edges:?} are not two positive sizes and \
                         two non-negative [before, after] pairs",
                        if op.code == code::SPACE_TO_BATCH_ND {
                            "paddings"
                        } else {
                            "crops"
                        }
                    )));
                }
                let block = [block[0] as usize, block[1] as usize];
                let e = |i: usize| edges[i] as usize;
                let edges = [[e(0), e(1)], [e(2), e(3)]];
                let (input, output) = (input(self, 0), self.id(out_index as usize));
                if op.code == code::SPACE_TO_BATCH_ND {
                    Op::SpaceToBatch {
                        input,
                        output,
                        block,
                        paddings: edges,
                    }
                } else {
                    Op::BatchToSpace {
                        input,
                        output,
                        block,
                        crops: edges,
                    }
                }
            }
            code::DEPTH_TO_SPACE => {
                arity(1, 1)?;
                Op::DepthToSpace {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                    block: pos(oi32(fields::DEPTH_TO_SPACE_BLOCK_SIZE, 0)?, "block_size")?,
                }
            }
            code::TRANSPOSE => {
                arity(2, 1)?;
                let rank = self.tensors[op.inputs[0] as usize].shape.len() as i64;
                let perm = self.const_ints(op.inputs[1], &unsupported)?;
                if perm.iter().any(|&p| !(0..rank).contains(&p)) {
                    return Err(unsupported(format!(
                        "perm {perm:?} names an axis outside rank {rank}"
                    )));
                }
                Op::Transpose {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                    perm: perm.iter().map(|&p| p as usize).collect(),
                }
            }
            code::SLICE | code::STRIDED_SLICE => {
                let n_in = if op.code == code::SLICE { 3 } else { 4 };
                arity(n_in, 1)?;
                let shape = self.tensors[op.inputs[0] as usize].shape.clone();
                let (begin, strides, counts, shrink) = if op.code == code::SLICE {
                    self.slice_bounds(&shape, op, &unsupported)?
                } else {
                    self.strided_slice_bounds(&shape, op, opt, &unsupported)?
                };
                let y = &self.tensors[out_index as usize];
                let kept: Vec<usize> = counts
                    .iter()
                    .enumerate()
                    .filter(|&(a, _)| !shrink.contains(&a))
                    .map(|(_, &c)| c)
                    .collect();
                if kept != y.shape {
                    return Err(unsupported(format!(
                        "the slice takes {kept:?} elements, but output '{}' has shape {:?}",
                        y.name, y.shape
                    )));
                }
                let input = input(self, 0);
                let output = self.id(out_index as usize);
                if shrink.is_empty() {
                    Op::Slice {
                        input,
                        output,
                        begin,
                        strides,
                    }
                } else {
                    // Shrunk axes: slice at full rank, then drop them.
                    let (q, dtype) = (y.quant.clone(), dtype_of(y.ttype).expect("checked"));
                    let name = format!("{}/intq_slice", y.name);
                    let tmp = self.b.tensor(&name, dtype, &counts, q);
                    self.b.op(Op::Slice {
                        input,
                        output: tmp,
                        begin,
                        strides,
                    });
                    Op::Reshape { input: tmp, output }
                }
            }
            code::CONCATENATION => {
                arity(op.inputs.len().max(1), 1)?;
                if act(fields::CONCAT_ACTIVATION)? != Activation::None {
                    return Err(unsupported(
                        "a fused activation on concatenation is not supported".into(),
                    ));
                }
                let rank = self.tensors[out_index as usize].shape.len() as i32;
                let axis = oi32(fields::CONCAT_AXIS, 0)?;
                let axis = if axis < 0 { axis + rank } else { axis };
                if !(0..rank).contains(&axis) {
                    return Err(unsupported(format!("axis {axis} is outside rank {rank}")));
                }
                let inputs = (0..op.inputs.len()).map(|k| input(self, k)).collect();
                Op::Concat {
                    inputs,
                    output: self.id(out_index as usize),
                    axis: axis as usize,
                }
            }
            code::AVERAGE_POOL_2D | code::MAX_POOL_2D => {
                use fields::pool as f;
                arity(1, 1)?;
                let (input, output) = (input(self, 0), self.id(out_index as usize));
                let filter = [
                    pos(oi32(f::FILTER_H, 0)?, "filter_height")?,
                    pos(oi32(f::FILTER_W, 0)?, "filter_width")?,
                ];
                let stride = [
                    pos(oi32(f::STRIDE_H, 0)?, "stride_h")?,
                    pos(oi32(f::STRIDE_W, 0)?, "stride_w")?,
                ];
                let (padding, activation) = (padding(f::PADDING)?, act(f::ACTIVATION)?);
                if op.code == code::AVERAGE_POOL_2D {
                    Op::AveragePool2d {
                        input,
                        output,
                        filter,
                        stride,
                        padding,
                        activation,
                    }
                } else {
                    Op::MaxPool2d {
                        input,
                        output,
                        filter,
                        stride,
                        padding,
                        activation,
                    }
                }
            }
            code::RESHAPE | code::SQUEEZE => {
                arity(1, 1)?;
                Op::Reshape {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                }
            }
            code::PAD => {
                arity(2, 1)?;
                let rank = self.tensors[op.inputs[0] as usize].shape.len();
                let p = self.const_ints(op.inputs[1], &unsupported)?;
                if p.len() != 2 * rank || p.iter().any(|&v| v < 0) {
                    return Err(unsupported(format!(
                        "paddings {p:?} are not {rank} non-negative [before, after] pairs"
                    )));
                }
                let paddings = p
                    .chunks(2)
                    .map(|c| [c[0] as usize, c[1] as usize])
                    .collect();
                Op::Pad {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                    paddings,
                }
            }
            code::GATHER => {
                arity(2, 1)?;
                let rank = self.tensors[op.inputs[0] as usize].shape.len() as i64;
                let a = oi32(fields::GATHER_AXIS, 0)? as i64;
                let axis = if a < 0 { a + rank } else { a };
                if !(0..rank).contains(&axis) {
                    return Err(unsupported(format!("axis {a} is outside rank {rank}")));
                }
                if oi32(fields::GATHER_BATCH_DIMS, 0)? != 0 {
                    return Err(unsupported(
                        "batch_dims other than 0 is not supported".into(),
                    ));
                }
                let n = self.tensors[op.inputs[0] as usize].shape[axis as usize] as i64;
                let positions = self.const_ints(op.inputs[1], &unsupported)?;
                if let Some((k, j)) = positions
                    .iter()
                    .enumerate()
                    .find(|&(_, &j)| !(0..n).contains(&j))
                {
                    return Err(unsupported(format!(
                        "index {k} is {j}, outside axis {axis} (size {n}) of the input"
                    )));
                }
                Op::Gather {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                    axis: axis as usize,
                    indices: positions.iter().map(|&j| j as usize).collect(),
                }
            }
            code::SUM | code::REDUCE_MAX => {
                arity(2, 1)?;
                let rank = self.tensors[op.inputs[0] as usize].shape.len() as i64;
                let mut axes = Vec::new();
                for a in self.const_ints(op.inputs[1], &unsupported)? {
                    let a = if a < 0 { a + rank } else { a };
                    if !(0..rank).contains(&a) {
                        return Err(unsupported(format!("axis {a} is outside rank {rank}")));
                    }
                    axes.push(a as usize);
                }
                axes.sort_unstable();
                axes.dedup();
                let keep_dims =
                    opt.map_or(Ok(false), |t| t.bool(fields::REDUCER_KEEP_DIMS, "options"))?;
                let (input, output) = (input(self, 0), self.id(out_index as usize));
                if op.code == code::SUM {
                    Op::Sum {
                        input,
                        output,
                        axes,
                        keep_dims,
                    }
                } else {
                    Op::ReduceMax {
                        input,
                        output,
                        axes,
                        keep_dims,
                    }
                }
            }
            code::ARG_MAX => {
                arity(2, 1)?;
                let rank = self.tensors[op.inputs[0] as usize].shape.len() as i64;
                let a = match self.const_ints(op.inputs[1], &unsupported)?[..] {
                    [a] => a,
                    ref v => {
                        return Err(unsupported(format!("axis {v:?} is not one axis")));
                    }
                };
                let axis = if a < 0 { a + rank } else { a };
                if !(0..rank).contains(&axis) {
                    return Err(unsupported(format!("axis {a} is outside rank {rank}")));
                }
                Op::ArgMax {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                    axis: axis as usize,
                }
            }
            code::L2_NORMALIZATION => {
                arity(1, 1)?;
                if act(fields::L2_NORM_ACTIVATION)? != Activation::None {
                    return Err(unsupported("a fused activation is not supported".into()));
                }
                Op::L2Normalization {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                }
            }
            code::MEAN => {
                arity(2, 1)?;
                let rank = self.tensors[op.inputs[0] as usize].shape.len() as i64;
                let mut axes = Vec::new();
                for a in self.const_ints(op.inputs[1], &unsupported)? {
                    let a = if a < 0 { a + rank } else { a };
                    if !(0..rank).contains(&a) {
                        return Err(unsupported(format!("axis {a} is outside rank {rank}")));
                    }
                    axes.push(a as usize);
                }
                axes.sort_unstable();
                axes.dedup();
                let keep_dims =
                    opt.map_or(Ok(false), |t| t.bool(fields::REDUCER_KEEP_DIMS, "options"))?;
                Op::Mean {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                    axes,
                    keep_dims,
                }
            }
            code::SOFTMAX => {
                arity(1, 1)?;
                let beta = opt.map_or(Ok(0.0), |t| t.f32(fields::SOFTMAX_BETA, 0.0, "options"))?;
                Op::Softmax {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                    beta,
                }
            }
            code::LOGISTIC => {
                arity(1, 1)?;
                Op::LogisticLut {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                }
            }
            code::QUANTIZE => {
                arity(1, 1)?;
                let x = &self.tensors[op.inputs[0] as usize];
                // 8-bit codes in: the engine takes the exact uint8 <-> int8 shift at one scale
                // (a converted model's raw-pixel input) and refuses any other by name.
                let codes = [schema::ttype::UINT8, schema::ttype::INT8].contains(&x.ttype);
                if x.ttype != schema::ttype::FLOAT32 && !codes {
                    return Err(unsupported(format!(
                        "input '{}' is {}; only float32 or 8-bit codes can be quantized",
                        x.name,
                        schema::ttype::name(x.ttype)
                    )));
                }
                Op::Quantize {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                }
            }
            code::DEQUANTIZE => {
                arity(1, 1)?;
                Op::Dequantize {
                    input: input(self, 0),
                    output: self.id(out_index as usize),
                }
            }
            CUSTOM_OP if op.custom.as_deref() == Some(crate::detection::CUSTOM_CODE) => {
                arity(3, 4)?;
                let options = crate::detection::parse_options(op.custom_options.unwrap_or(&[]))
                    .map_err(&unsupported)?;
                let (boxes, scores, anchors) = (input(self, 0), input(self, 1), input(self, 2));
                let mut parts = DetectionPart::ALL.iter().zip(&op.outputs);
                let part_op = |cx: &mut Self, (&part, &o): (&DetectionPart, &i32)| {
                    // TFLite sizes the outputs from the options, whatever the file declares.
                    let o = o as usize;
                    let output = match cx.ids[o] {
                        Some(id) => id,
                        None => {
                            let shape = part.shape(options.output_len());
                            let id = cx.b.tensor(&cx.tensors[o].name, DType::F32, &shape, None);
                            cx.ids[o] = Some(id);
                            id
                        }
                    };
                    Op::DetectionPostProcess {
                        boxes,
                        scores,
                        anchors,
                        output,
                        part,
                        options,
                    }
                };
                for _ in 0..3 {
                    let next = parts.next().expect("four outputs");
                    let part = part_op(self, next);
                    self.b.op(part);
                }
                part_op(self, parts.next().expect("four outputs"))
            }
            _ => {
                let t = op
                    .outputs
                    .first()
                    .map(|&o| format!(" (output tensor {o} '{}')", self.tensors[o as usize].name))
                    .unwrap_or_default();
                return Err(unsupported(format!("this operator is not supported{t}")));
            }
        };
        self.b.op(engine_op);
        Ok(())
    }
}

/// Begin, strides and per-axis counts of a slice, and the axes it drops.
type SliceBounds = (Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>);

impl Importer<'_> {
    /// SLICE's constant begin and size (`-1`: to the end) as begin, unit strides and counts.
    fn slice_bounds(
        &self,
        shape: &[usize],
        op: &TfOp,
        unsupported: &dyn Fn(String) -> TfliteError,
    ) -> Result<SliceBounds, TfliteError> {
        let begin = self.const_ints(op.inputs[1], unsupported)?;
        let size = self.const_ints(op.inputs[2], unsupported)?;
        if begin.len() != shape.len() || size.len() != shape.len() {
            return Err(unsupported(format!(
                "begin {begin:?} and size {size:?} need one entry per axis of {shape:?}"
            )));
        }
        let mut counts = Vec::with_capacity(shape.len());
        for (a, &d) in shape.iter().enumerate() {
            let (b, n) = (begin[a], size[a]);
            let n = if n == -1 { d as i64 - b } else { n };
            if b < 0 || n < 1 || b + n > d as i64 {
                return Err(unsupported(format!(
                    "axis {a}: begin {} size {} is not inside the dimension {d}",
                    begin[a], size[a]
                )));
            }
            counts.push(n as usize);
        }
        let begin = begin.iter().map(|&b| b as usize).collect();
        Ok((begin, vec![1; shape.len()], counts, vec![]))
    }

    /// STRIDED_SLICE's constant begin, end and strides with its begin, end and shrink masks
    /// resolved as TFLite resolves them; positive strides only, no ellipsis or new axes.
    fn strided_slice_bounds(
        &self,
        shape: &[usize],
        op: &TfOp,
        opt: Option<Table>,
        unsupported: &dyn Fn(String) -> TfliteError,
    ) -> Result<SliceBounds, TfliteError> {
        use fields::strided_slice as f;
        let mask = |id: u16| opt.map_or(Ok(0), |t| t.i32(id, 0, "options"));
        let (begin_mask, end_mask, shrink_mask) = (
            mask(f::BEGIN_MASK)?,
            mask(f::END_MASK)?,
            mask(f::SHRINK_AXIS_MASK)?,
        );
        let offset = opt.map_or(Ok(false), |t| t.bool(f::OFFSET, "options"))?;
        if mask(f::ELLIPSIS_MASK)? != 0 || mask(f::NEW_AXIS_MASK)? != 0 || offset {
            return Err(unsupported(
                "ellipsis_mask, new_axis_mask and offset are not supported".into(),
            ));
        }
        let begin = self.const_ints(op.inputs[1], unsupported)?;
        let end = self.const_ints(op.inputs[2], unsupported)?;
        let strides = self.const_ints(op.inputs[3], unsupported)?;
        let rank = shape.len();
        if begin.len() != rank || end.len() != rank || strides.len() != rank {
            return Err(unsupported(format!(
                "begin {begin:?}, end {end:?} and strides {strides:?} need one entry per axis of \
                 {shape:?}"
            )));
        }
        let (mut b_out, mut s_out, mut counts, mut shrink) = (vec![], vec![], vec![], vec![]);
        for a in 0..rank {
            let d = shape[a] as i64;
            let s = strides[a];
            if s < 1 {
                return Err(unsupported(format!(
                    "axis {a}: stride {s} is not supported (only positive strides)"
                )));
            }
            let resolve = |v: i64| (if v < 0 { v + d } else { v }).clamp(0, d);
            let start = if begin_mask & (1 << a) != 0 {
                0
            } else {
                resolve(begin[a])
            };
            let stop = if shrink_mask & (1 << a) != 0 {
                shrink.push(a);
                start + 1
            } else if end_mask & (1 << a) != 0 {
                d
            } else {
                resolve(end[a])
            };
            let n = if stop > start {
                (stop - start + s - 1) / s
            } else {
                0
            };
            if n < 1 || start >= d {
                return Err(unsupported(format!(
                    "axis {a}: begin {} end {} stride {s} takes no element of the dimension {d}",
                    begin[a], end[a]
                )));
            }
            b_out.push(start as usize);
            s_out.push(s as usize);
            counts.push(n as usize);
        }
        Ok((b_out, s_out, counts, shrink))
    }

    /// The values of a constant int32 or int64 operand (paddings, axes).
    fn const_ints(
        &self,
        index: i32,
        unsupported: &dyn Fn(String) -> TfliteError,
    ) -> Result<Vec<i64>, TfliteError> {
        let t = usize::try_from(index)
            .ok()
            .and_then(|i| self.tensors.get(i))
            .ok_or_else(|| unsupported(format!("operand tensor {index} does not exist")))?;
        let Some(d) = &t.data else {
            return Err(unsupported(format!(
                "tensor '{}' must be a constant",
                t.name
            )));
        };
        match t.ttype {
            schema::ttype::INT32 => Ok(d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect()),
            4 => Ok(d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()),
            other => Err(unsupported(format!(
                "tensor '{}' is {}, expected INT32 or INT64",
                t.name,
                schema::ttype::name(other)
            ))),
        }
    }
}

fn dtype_of(t: i8) -> Option<DType> {
    match t {
        schema::ttype::FLOAT32 => Some(DType::F32),
        schema::ttype::INT32 => Some(DType::I32),
        schema::ttype::UINT8 => Some(DType::U8),
        schema::ttype::INT8 => Some(DType::I8),
        _ => None,
    }
}
