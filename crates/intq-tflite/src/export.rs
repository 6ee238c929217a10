//! [`Graph`] to `.tflite`: one subgraph, one buffer per constant, TFLite's builtin ops with
//! version 1 opcodes. Int32 biases get the scales TFLite checks (`S_in * S_w`, per channel where
//! the weights are), and each RESHAPE gets its target shape as a constant int32 operand.

use crate::flatbuf::{finish, Field, Node};
use crate::schema::{self, fields, op as code, options};
use crate::TfliteError;
use intq_engine::{
    Activation, DType, DetectionPart, Graph, Op, Padding, Quant, TensorData, TensorId,
};
use std::io::Write;
use std::path::Path;

/// Writes `graph` to `path` atomically (a temporary file in the same directory, then a rename).
pub fn save(graph: &Graph, path: &Path) -> Result<(), TfliteError> {
    let bytes = export(graph)?;
    let io = |source| TfliteError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| TfliteError::Other(format!("{}: not a file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

/// The builtin code of a custom op.
const CUSTOM_OP: i32 = 32;

/// A builtin-options union member: its tag and its table's fields.
type Options = (u8, Vec<(u16, Field)>);

fn ttype(d: DType) -> i8 {
    match d {
        DType::F32 => schema::ttype::FLOAT32,
        DType::I32 => schema::ttype::INT32,
        DType::U8 => schema::ttype::UINT8,
        DType::I8 => schema::ttype::INT8,
    }
}

fn act(a: Activation) -> Field {
    Field::U8(match a {
        Activation::None => schema::activation::NONE,
        Activation::Relu => schema::activation::RELU,
        Activation::ReluN1To1 => schema::activation::RELU_N1_TO_1,
        Activation::Relu6 => schema::activation::RELU6,
    } as u8)
}

/// Adds a constant int32 vector operand (a perm, begin, size); returns its tensor index.
fn int32_operand(
    add_tensor: &mut impl FnMut(
        &mut Vec<Node>,
        &str,
        DType,
        &[usize],
        Option<Node>,
        Option<Vec<u8>>,
    ) -> usize,
    buffers: &mut Vec<Node>,
    name: &str,
    values: &[usize],
) -> i32 {
    let bytes = values
        .iter()
        .flat_map(|&v| (v as i32).to_le_bytes())
        .collect();
    add_tensor(
        buffers,
        name,
        DType::I32,
        &[values.len()],
        None,
        Some(bytes),
    ) as i32
}

fn i32f(v: usize) -> Field {
    Field::I32(v as i32)
}

/// Serializes `graph` as a `.tflite` FlatBuffer. Explicit paddings are lowered first
/// ([`crate::lower_explicit_padding`]), so models from intq's QAT export can be written.
pub fn export(graph: &Graph) -> Result<Vec<u8>, TfliteError> {
    let lowered = crate::lower_explicit_padding(graph)?;
    let graph = &lowered;
    let n = graph.tensors().len();
    if let Some(t) = graph.tensors().iter().find(|t| t.code_range.is_some()) {
        let (lo, hi) = t.code_range.expect("found");
        return Err(TfliteError::Other(format!(
            "cannot export: tensor '{}' holds only codes [{lo}, {hi}] (an activation of fewer \
             than 8 bits), which TFLite cannot express; its kernels would clamp to the whole \
             {} range. Fine-tune with --bits-a 8 to export to TFLite",
            t.name, t.dtype
        )));
    }
    // Scales of int32 biases, implied by the op that reads them.
    let mut bias_scales: Vec<Option<Vec<f32>>> = vec![None; n];
    for op in graph.ops() {
        let (input, weights, bias) = match op {
            Op::Conv2d {
                input,
                filter,
                bias,
                ..
            }
            | Op::DepthwiseConv2d {
                input,
                filter,
                bias,
                ..
            }
            | Op::TransposeConv {
                input,
                filter,
                bias,
                ..
            } => (*input, *filter, *bias),
            Op::FullyConnected {
                input,
                weights,
                bias,
                ..
            }
            | Op::FullyConnectedF64 {
                input,
                weights,
                bias,
                ..
            } => (*input, *weights, *bias),
            _ => continue,
        };
        let (Some(bias), Some(p)) = (bias, graph.tensor(input).params()) else {
            continue;
        };
        let s_w: Vec<f32> = match &graph.tensor(weights).quant {
            Some(Quant::PerTensor(q)) => vec![q.scale],
            Some(Quant::PerChannel(c)) => c.scales().to_vec(),
            None => continue,
        };
        let scales: Vec<f32> = s_w
            .iter()
            .map(|&s| (p.scale as f64 * s as f64) as f32)
            .collect();
        // TFLite stores the bias scale S_in * S_w explicitly; where it underflows or overflows
        // f32 the file could not be read back, so refuse to write it.
        if let Some(bad) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(TfliteError::Other(format!(
                "cannot export: the bias '{}' would need scale S_in * S_w = {bad:e}, which f32 \
                 cannot hold as a positive finite number",
                graph.tensor(bias).name
            )));
        }
        bias_scales[bias.index()] = Some(scales);
    }

    let mut buffers = vec![Node::Table(vec![])];
    let mut tensors = Vec::with_capacity(n);
    let mut add_tensor = |buffers: &mut Vec<Node>,
                          name: &str,
                          dtype: DType,
                          shape: &[usize],
                          quant: Option<Node>,
                          data: Option<Vec<u8>>| {
        let buffer = match data {
            Some(d) => {
                buffers.push(Node::Table(vec![(
                    schema::buffer::DATA,
                    Field::Off(Node::Bytes(d, 16)),
                )]));
                buffers.len() - 1
            }
            None => 0,
        };
        let mut f = vec![
            (
                schema::tensor::SHAPE,
                Field::Off(Node::I32s(shape.iter().map(|&d| d as i32).collect())),
            ),
            (schema::tensor::TYPE, Field::U8(ttype(dtype) as u8)),
            (schema::tensor::BUFFER, Field::U32(buffer as u32)),
            (schema::tensor::NAME, Field::Off(Node::Str(name.into()))),
        ];
        if let Some(q) = quant {
            f.push((schema::tensor::QUANTIZATION, Field::Off(q)));
        }
        tensors.push(Node::Table(f));
        tensors.len() - 1
    };
    let quant_node = |scales: Vec<f32>, zps: Vec<i64>, axis: usize| {
        Node::Table(vec![
            (schema::quant::SCALE, Field::Off(Node::F32s(scales))),
            (schema::quant::ZERO_POINT, Field::Off(Node::I64s(zps))),
            (schema::quant::QUANTIZED_DIMENSION, i32f(axis)),
        ])
    };
    for (i, t) in graph.tensors().iter().enumerate() {
        let quant = match (&t.quant, &bias_scales[i]) {
            (Some(Quant::PerTensor(p)), _) => {
                Some(quant_node(vec![p.scale], vec![p.zero_point as i64], 0))
            }
            (Some(Quant::PerChannel(c)), _) => Some(quant_node(
                c.scales().to_vec(),
                c.zero_points().iter().map(|&z| z as i64).collect(),
                c.axis(),
            )),
            (None, Some(s)) => Some(quant_node(s.clone(), vec![0; s.len()], 0)),
            (None, None) => None,
        };
        let data = t.data.as_ref().map(|d| match d {
            TensorData::U8(v) => v.clone(),
            TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        });
        add_tensor(&mut buffers, &t.name, t.dtype, &t.shape, quant, data);
    }

    let detection_groups = crate::detection::group_parts(graph)?;
    let mut opcodes: Vec<i32> = Vec::new();
    let mut operators = Vec::new();
    for (index, op) in graph.ops().iter().enumerate() {
        let padding = |p: &Padding| -> Result<Field, TfliteError> {
            Ok(Field::U8(match p {
                Padding::Same => schema::PADDING_SAME,
                Padding::Valid => schema::PADDING_VALID,
                Padding::Explicit { .. } => {
                    return Err(TfliteError::Unsupported {
                        index,
                        op: op.kind().name().into(),
                        message: "explicit padding has no TFLite equivalent".into(),
                    })
                }
            } as u8))
        };
        let ids = |v: &[Option<TensorId>]| -> Vec<i32> {
            v.iter().map(|id| id.map_or(-1, |id| id.0 as i32)).collect()
        };
        let mut outputs = vec![op.output().0 as i32];
        let mut custom_options = None;
        let (builtin, inputs, opts): (i32, Vec<i32>, Option<Options>) = match op {
            Op::Conv2d {
                input,
                filter,
                bias,
                stride,
                dilation,
                padding: p,
                activation,
                ..
            } => {
                use fields::conv as f;
                (
                    code::CONV_2D,
                    ids(&[Some(*input), Some(*filter), *bias]),
                    Some((
                        options::CONV_2D,
                        vec![
                            (f::PADDING, padding(p)?),
                            (f::STRIDE_W, i32f(stride[1])),
                            (f::STRIDE_H, i32f(stride[0])),
                            (f::ACTIVATION, act(*activation)),
                            (f::DILATION_W, i32f(dilation[1])),
                            (f::DILATION_H, i32f(dilation[0])),
                        ],
                    )),
                )
            }
            Op::DepthwiseConv2d {
                input,
                filter,
                bias,
                stride,
                dilation,
                padding: p,
                depth_multiplier,
                activation,
                ..
            } => {
                use fields::dw as f;
                (
                    code::DEPTHWISE_CONV_2D,
                    ids(&[Some(*input), Some(*filter), *bias]),
                    Some((
                        options::DEPTHWISE_CONV_2D,
                        vec![
                            (f::PADDING, padding(p)?),
                            (f::STRIDE_W, i32f(stride[1])),
                            (f::STRIDE_H, i32f(stride[0])),
                            (f::DEPTH_MULTIPLIER, i32f(*depth_multiplier)),
                            (f::ACTIVATION, act(*activation)),
                            (f::DILATION_W, i32f(dilation[1])),
                            (f::DILATION_H, i32f(dilation[0])),
                        ],
                    )),
                )
            }
            Op::FullyConnected {
                input,
                weights,
                bias,
                activation,
                ..
            }
            | Op::FullyConnectedF64 {
                input,
                weights,
                bias,
                activation,
                ..
            } => (
                code::FULLY_CONNECTED,
                ids(&[Some(*input), Some(*weights), *bias]),
                Some((
                    options::FULLY_CONNECTED,
                    vec![(fields::fc::ACTIVATION, act(*activation))],
                )),
            ),
            Op::Add {
                lhs,
                rhs,
                activation,
                ..
            } => (
                code::ADD,
                ids(&[Some(*lhs), Some(*rhs)]),
                Some((
                    options::ADD,
                    vec![(fields::ADD_ACTIVATION, act(*activation))],
                )),
            ),
            Op::AveragePool2d {
                input,
                filter,
                stride,
                padding: p,
                activation,
                ..
            }
            | Op::MaxPool2d {
                input,
                filter,
                stride,
                padding: p,
                activation,
                ..
            } => {
                use fields::pool as f;
                let c = if matches!(op, Op::AveragePool2d { .. }) {
                    code::AVERAGE_POOL_2D
                } else {
                    code::MAX_POOL_2D
                };
                (
                    c,
                    ids(&[Some(*input)]),
                    Some((
                        options::POOL_2D,
                        vec![
                            (f::PADDING, padding(p)?),
                            (f::STRIDE_W, i32f(stride[1])),
                            (f::STRIDE_H, i32f(stride[0])),
                            (f::FILTER_W, i32f(filter[1])),
                            (f::FILTER_H, i32f(filter[0])),
                            (f::ACTIVATION, act(*activation)),
                        ],
                    )),
                )
            }
            Op::Concat {
                inputs,
                axis,
                output,
            } if graph.tensor(*output).dtype == DType::I8
                && inputs
                    .iter()
                    .any(|&i| graph.tensor(i).quant != graph.tensor(*output).quant) =>
            {
                return Err(TfliteError::Unsupported {
                    index,
                    op: op.kind().name().into(),
                    message: format!(
                        "TFLite's int8 CONCATENATION cannot requantize, but an input of \
                         '{}' (axis {axis}) has other (S, Z) than the output",
                        graph.tensor(*output).name
                    ),
                });
            }
            Op::Concat { inputs, axis, .. } => (
                code::CONCATENATION,
                inputs.iter().map(|id| id.0 as i32).collect(),
                Some((
                    options::CONCATENATION,
                    vec![(fields::CONCAT_AXIS, i32f(*axis))],
                )),
            ),
            Op::Logistic { input, .. } | Op::LogisticLut { input, .. } => {
                (code::LOGISTIC, ids(&[Some(*input)]), None)
            }
            Op::Softmax { input, beta, .. } => (
                code::SOFTMAX,
                ids(&[Some(*input)]),
                Some((
                    options::SOFTMAX,
                    vec![(fields::SOFTMAX_BETA, Field::F32(*beta))],
                )),
            ),
            Op::Reshape { input, output } => {
                let shape: Vec<i32> = graph
                    .tensor(*output)
                    .shape
                    .iter()
                    .map(|&d| d as i32)
                    .collect();
                let bytes = shape.iter().flat_map(|d| d.to_le_bytes()).collect();
                let name = format!("{}/shape", graph.tensor(*output).name);
                let s = add_tensor(
                    &mut buffers,
                    &name,
                    DType::I32,
                    &[shape.len()],
                    None,
                    Some(bytes),
                );
                (
                    code::RESHAPE,
                    vec![input.0 as i32, s as i32],
                    Some((
                        options::RESHAPE,
                        vec![(fields::RESHAPE_NEW_SHAPE, Field::Off(Node::I32s(shape)))],
                    )),
                )
            }
            Op::Pad {
                input,
                output,
                paddings,
            } => {
                let flat: Vec<i32> = paddings
                    .iter()
                    .flat_map(|p| [p[0] as i32, p[1] as i32])
                    .collect();
                let bytes = flat.iter().flat_map(|d| d.to_le_bytes()).collect();
                let name = format!("{}/paddings", graph.tensor(*output).name);
                let s = add_tensor(
                    &mut buffers,
                    &name,
                    DType::I32,
                    &[paddings.len(), 2],
                    None,
                    Some(bytes),
                );
                (code::PAD, vec![input.0 as i32, s as i32], None)
            }
            Op::Mean {
                input,
                output,
                axes,
                keep_dims,
            } => {
                let bytes = axes
                    .iter()
                    .flat_map(|&a| (a as i32).to_le_bytes())
                    .collect();
                let name = format!("{}/axes", graph.tensor(*output).name);
                let s = add_tensor(
                    &mut buffers,
                    &name,
                    DType::I32,
                    &[axes.len()],
                    None,
                    Some(bytes),
                );
                (
                    code::MEAN,
                    vec![input.0 as i32, s as i32],
                    Some((
                        options::REDUCER,
                        vec![(fields::REDUCER_KEEP_DIMS, Field::U8(*keep_dims as u8))],
                    )),
                )
            }
            Op::Mul {
                lhs,
                rhs,
                activation,
                ..
            } => (
                code::MUL,
                ids(&[Some(*lhs), Some(*rhs)]),
                Some((
                    options::MUL,
                    vec![(fields::MUL_ACTIVATION, act(*activation))],
                )),
            ),
            Op::Sub {
                lhs,
                rhs,
                activation,
                ..
            } => (
                code::SUB,
                ids(&[Some(*lhs), Some(*rhs)]),
                Some((
                    options::SUB,
                    vec![(fields::SUB_ACTIVATION, act(*activation))],
                )),
            ),
            Op::Relu {
                input, activation, ..
            } => {
                let c = match activation {
                    Activation::Relu => code::RELU,
                    Activation::Relu6 => code::RELU6,
                    Activation::ReluN1To1 => code::RELU_N1_TO_1,
                    Activation::None => unreachable!("validated: a Relu op clamps"),
                };
                (c, ids(&[Some(*input)]), None)
            }
            Op::LeakyRelu { input, alpha, .. } => (
                code::LEAKY_RELU,
                ids(&[Some(*input)]),
                Some((
                    options::LEAKY_RELU,
                    vec![(fields::LEAKY_RELU_ALPHA, Field::F32(*alpha))],
                )),
            ),
            Op::HardSwish { input, .. } => (code::HARD_SWISH, ids(&[Some(*input)]), None),
            Op::Tanh { input, .. } => (code::TANH, ids(&[Some(*input)]), None),
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
                let y = &graph.tensor(*output).shape;
                let bytes = [y[1] as i32, y[2] as i32]
                    .iter()
                    .flat_map(|d| d.to_le_bytes())
                    .collect();
                let name = format!("{}/size", graph.tensor(*output).name);
                let s = add_tensor(&mut buffers, &name, DType::I32, &[2], None, Some(bytes));
                let flags = |a: u16, h: u16| {
                    vec![
                        (a, Field::U8(*align_corners as u8)),
                        (h, Field::U8(*half_pixel_centers as u8)),
                    ]
                };
                if matches!(op, Op::ResizeBilinear { .. }) {
                    use fields::resize_bilinear as f;
                    (
                        code::RESIZE_BILINEAR,
                        vec![input.0 as i32, s as i32],
                        Some((
                            options::RESIZE_BILINEAR,
                            flags(f::ALIGN_CORNERS, f::HALF_PIXEL_CENTERS),
                        )),
                    )
                } else {
                    use fields::resize_nearest as f;
                    (
                        code::RESIZE_NEAREST_NEIGHBOR,
                        vec![input.0 as i32, s as i32],
                        Some((
                            options::RESIZE_NEAREST_NEIGHBOR,
                            flags(f::ALIGN_CORNERS, f::HALF_PIXEL_CENTERS),
                        )),
                    )
                }
            }
            Op::Prelu { input, alpha, .. } => {
                (code::PRELU, ids(&[Some(*input), Some(*alpha)]), None)
            }
            Op::Maximum { lhs, rhs, .. } => (code::MAXIMUM, ids(&[Some(*lhs), Some(*rhs)]), None),
            Op::Minimum { lhs, rhs, .. } => (code::MINIMUM, ids(&[Some(*lhs), Some(*rhs)]), None),
            Op::TransposeConv {
                input,
                filter,
                bias,
                output,
                stride,
                padding: p,
                activation,
            } => {
                use fields::transpose_conv as f;
                let y = graph.tensor(*output);
                let name = format!("{}/output_shape", y.name);
                let shape = int32_operand(&mut add_tensor, &mut buffers, &name, &y.shape);
                let mut inputs = vec![shape, filter.0 as i32, input.0 as i32];
                inputs.extend(bias.map(|b| b.0 as i32));
                (
                    code::TRANSPOSE_CONV,
                    inputs,
                    Some((
                        options::TRANSPOSE_CONV,
                        vec![
                            (f::PADDING, padding(p)?),
                            (f::STRIDE_W, i32f(stride[1])),
                            (f::STRIDE_H, i32f(stride[0])),
                            (f::ACTIVATION, act(*activation)),
                        ],
                    )),
                )
            }
            Op::SpaceToBatch {
                input,
                output,
                block,
                paddings: edges,
            }
            | Op::BatchToSpace {
                input,
                output,
                block,
                crops: edges,
            } => {
                let s2b = matches!(op, Op::SpaceToBatch { .. });
                let y = &graph.tensor(*output).name;
                let b = int32_operand(&mut add_tensor, &mut buffers, &format!("{y}/block"), block);
                let bytes = edges
                    .iter()
                    .flatten()
                    .flat_map(|&v| (v as i32).to_le_bytes())
                    .collect();
                let what = if s2b { "paddings" } else { "crops" };
                let e = add_tensor(
                    &mut buffers,
                    &format!("{y}/{what}"),
                    DType::I32,
                    &[2, 2],
                    None,
                    Some(bytes),
                ) as i32;
                let c = if s2b {
                    code::SPACE_TO_BATCH_ND
                } else {
                    code::BATCH_TO_SPACE_ND
                };
                (c, vec![input.0 as i32, b, e], None)
            }
            Op::DepthToSpace { input, block, .. } => (
                code::DEPTH_TO_SPACE,
                ids(&[Some(*input)]),
                Some((
                    options::DEPTH_TO_SPACE,
                    vec![(fields::DEPTH_TO_SPACE_BLOCK_SIZE, i32f(*block))],
                )),
            ),
            Op::Transpose {
                input,
                output,
                perm,
            } => {
                let name = format!("{}/perm", graph.tensor(*output).name);
                let p = int32_operand(&mut add_tensor, &mut buffers, &name, perm);
                (code::TRANSPOSE, vec![input.0 as i32, p], None)
            }
            Op::Slice {
                input,
                output,
                begin,
                strides,
            } => {
                let y = &graph.tensor(*output);
                let b = int32_operand(
                    &mut add_tensor,
                    &mut buffers,
                    &format!("{}/begin", y.name),
                    begin,
                );
                if strides.iter().all(|&s| s == 1) {
                    let size = int32_operand(
                        &mut add_tensor,
                        &mut buffers,
                        &format!("{}/size", y.name),
                        &y.shape,
                    );
                    (code::SLICE, vec![input.0 as i32, b, size], None)
                } else {
                    let end: Vec<usize> = (0..begin.len())
                        .map(|a| begin[a] + (y.shape[a] - 1) * strides[a] + 1)
                        .collect();
                    let e = int32_operand(
                        &mut add_tensor,
                        &mut buffers,
                        &format!("{}/end", y.name),
                        &end,
                    );
                    let s = int32_operand(
                        &mut add_tensor,
                        &mut buffers,
                        &format!("{}/strides", y.name),
                        strides,
                    );
                    (code::STRIDED_SLICE, vec![input.0 as i32, b, e, s], None)
                }
            }
            Op::Gather {
                input,
                output,
                axis,
                indices,
            } => {
                let (x, y) = (graph.tensor(*input), graph.tensor(*output));
                // The indices' shape: the output's axes that stand where `axis` was.
                let r = y.shape.len() + 1 - x.shape.len();
                let bytes = indices
                    .iter()
                    .flat_map(|&j| (j as i32).to_le_bytes())
                    .collect();
                let p = add_tensor(
                    &mut buffers,
                    &format!("{}/indices", y.name),
                    DType::I32,
                    &y.shape[*axis..*axis + r],
                    None,
                    Some(bytes),
                );
                (
                    code::GATHER,
                    vec![input.0 as i32, p as i32],
                    Some((options::GATHER, vec![(fields::GATHER_AXIS, i32f(*axis))])),
                )
            }
            Op::Sum {
                input,
                output,
                axes,
                keep_dims,
            }
            | Op::ReduceMax {
                input,
                output,
                axes,
                keep_dims,
            } => {
                let name = format!("{}/axes", graph.tensor(*output).name);
                let a = int32_operand(&mut add_tensor, &mut buffers, &name, axes);
                let c = if matches!(op, Op::Sum { .. }) {
                    code::SUM
                } else {
                    code::REDUCE_MAX
                };
                (
                    c,
                    vec![input.0 as i32, a],
                    Some((
                        options::REDUCER,
                        vec![(fields::REDUCER_KEEP_DIMS, Field::U8(*keep_dims as u8))],
                    )),
                )
            }
            Op::ArgMax {
                input,
                output,
                axis,
            } => {
                let name = format!("{}/axis", graph.tensor(*output).name);
                let a = int32_operand(&mut add_tensor, &mut buffers, &name, &[*axis]);
                (
                    code::ARG_MAX,
                    vec![input.0 as i32, a],
                    Some((
                        options::ARG_MAX,
                        vec![(
                            fields::ARG_MAX_OUTPUT_TYPE,
                            Field::U8(schema::ttype::INT32 as u8),
                        )],
                    )),
                )
            }
            Op::L2Normalization { input, .. } => (
                code::L2_NORMALIZATION,
                ids(&[Some(*input)]),
                Some((
                    options::L2_NORM,
                    vec![(fields::L2_NORM_ACTIVATION, Field::U8(0))],
                )),
            ),
            Op::Quantize { input, .. } => (code::QUANTIZE, ids(&[Some(*input)]), None),
            Op::Dequantize { input, .. } => (code::DEQUANTIZE, ids(&[Some(*input)]), None),
            Op::DetectionPostProcess {
                boxes,
                scores,
                anchors,
                part,
                options,
                ..
            } => {
                // One TFLite op writes what the four engine ops with these operands write; it
                // goes where the boxes' op is.
                if *part != DetectionPart::Boxes {
                    continue;
                }
                outputs = detection_groups[&index]
                    .iter()
                    .map(|id| id.0 as i32)
                    .collect();
                custom_options = Some(crate::detection::build_options(options));
                (
                    CUSTOM_OP,
                    ids(&[Some(*boxes), Some(*scores), Some(*anchors)]),
                    None,
                )
            }
        };
        let opcode_index = match opcodes.iter().position(|&c| c == builtin) {
            Some(i) => i,
            None => {
                opcodes.push(builtin);
                opcodes.len() - 1
            }
        };
        let mut f = vec![
            (
                schema::operator::OPCODE_INDEX,
                Field::U32(opcode_index as u32),
            ),
            (schema::operator::INPUTS, Field::Off(Node::I32s(inputs))),
            (schema::operator::OUTPUTS, Field::Off(Node::I32s(outputs))),
        ];
        if let Some(bytes) = custom_options {
            f.push((
                schema::operator::CUSTOM_OPTIONS,
                Field::Off(Node::Bytes(bytes, 1)),
            ));
        }
        if let Some((tag, table)) = opts {
            f.push((schema::operator::BUILTIN_OPTIONS_TYPE, Field::U8(tag)));
            f.push((
                schema::operator::BUILTIN_OPTIONS,
                Field::Off(Node::Table(table)),
            ));
        }
        operators.push(Node::Table(f));
    }

    let subgraph = Node::Table(vec![
        (schema::subgraph::TENSORS, Field::Off(Node::Tables(tensors))),
        (
            schema::subgraph::INPUTS,
            Field::Off(Node::I32s(
                graph.inputs().iter().map(|id| id.0 as i32).collect(),
            )),
        ),
        (
            schema::subgraph::OUTPUTS,
            Field::Off(Node::I32s(
                graph.outputs().iter().map(|id| id.0 as i32).collect(),
            )),
        ),
        (
            schema::subgraph::OPERATORS,
            Field::Off(Node::Tables(operators)),
        ),
        (schema::subgraph::NAME, Field::Off(Node::Str("main".into()))),
    ]);
    let opcode_nodes = opcodes
        .iter()
        .map(|&c| {
            let mut f = vec![
                (
                    schema::opcode::DEPRECATED_BUILTIN_CODE,
                    Field::U8(c.min(127) as u8),
                ),
                (schema::opcode::VERSION, Field::I32(1)),
                (schema::opcode::BUILTIN_CODE, Field::I32(c)),
            ];
            // The only custom op written.
            if c == CUSTOM_OP {
                f.push((
                    schema::opcode::CUSTOM_CODE,
                    Field::Off(Node::Str(crate::detection::CUSTOM_CODE.into())),
                ));
            }
            Node::Table(f)
        })
        .collect();
    let model = Node::Table(vec![
        (schema::model::VERSION, Field::U32(3)),
        (
            schema::model::OPERATOR_CODES,
            Field::Off(Node::Tables(opcode_nodes)),
        ),
        (
            schema::model::SUBGRAPHS,
            Field::Off(Node::Tables(vec![subgraph])),
        ),
        (
            schema::model::DESCRIPTION,
            Field::Off(Node::Str("intq".into())),
        ),
        (schema::model::BUFFERS, Field::Off(Node::Tables(buffers))),
    ]);
    Ok(finish(&model, b"TFL3"))
}
