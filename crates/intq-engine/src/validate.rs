//! Graph validation: ids, shapes, types and quantization parameters, op by op, plus the graph's
//! dataflow (one writer per tensor, every read satisfied, no cycles). A graph that passes can be
//! planned and run without any kernel assertion firing.

use crate::{DType, Graph, GraphError, Op, OpKind, Padding, Quant, QuantParams, Tensor, TensorId};
use std::collections::BinaryHeap;

/// The largest tensor the engine accepts: kernels index with i32-sized loops in TFLite, and a
/// larger activation would be a mistake in a model of this kind anyway.
pub(crate) const MAX_ELEMENTS: usize = 1 << 31;

/// The widest NumPy-style broadcast the Add kernel supports.
const MAX_ADD_RANK: usize = 6;

pub(crate) fn validate(graph: &Graph) -> Result<(), GraphError> {
    for i in 0..graph.tensors().len() {
        check_tensor(graph, TensorId(i as u32))?;
    }
    check_ids(graph)?;
    check_dataflow(graph)?;
    for (index, op) in graph.ops().iter().enumerate() {
        let c = OpCheck {
            g: graph,
            index,
            kind: op.kind(),
        };
        c.check(op)?;
    }
    topological_order(graph)?;
    Ok(())
}

/// `'name' #id`, the way every message names a tensor.
pub(crate) fn describe(graph: &Graph, id: TensorId) -> String {
    match graph.tensors().get(id.index()) {
        Some(t) => format!("'{}' {}", t.name, id),
        None => format!("{id}"),
    }
}

fn tensor_err(graph: &Graph, id: TensorId, message: impl Into<String>) -> GraphError {
    GraphError::Tensor {
        id: id.0,
        name: graph
            .tensors()
            .get(id.index())
            .map(|t| t.name.clone())
            .unwrap_or_default(),
        message: message.into(),
    }
}

/// The product of `shape`, or why it is not an acceptable element count.
pub(crate) fn element_count(shape: &[usize]) -> Result<usize, String> {
    let mut n: usize = 1;
    for &d in shape {
        if d == 0 {
            return Err(format!("shape {shape:?} has a zero-sized dimension"));
        }
        n = n
            .checked_mul(d)
            .ok_or_else(|| format!("the element count of shape {shape:?} overflows"))?;
    }
    if n > MAX_ELEMENTS {
        return Err(format!(
            "shape {shape:?} has {n} elements, more than 2^31 = {MAX_ELEMENTS}"
        ));
    }
    Ok(n)
}

/// The code limits of an 8-bit type.
pub(crate) fn code_range(dtype: DType) -> Option<(i32, i32)> {
    match dtype {
        DType::U8 => Some((0, 255)),
        DType::I8 => Some((-128, 127)),
        _ => None,
    }
}

fn check_scale(scale: f32) -> Result<(), String> {
    if scale > 0.0 && scale.is_finite() {
        Ok(())
    } else {
        Err(format!("scale {scale} is not a positive finite number"))
    }
}

fn check_zero_point(dtype: DType, zero_point: i32) -> Result<(), String> {
    match code_range(dtype) {
        Some((lo, hi)) if !(lo..=hi).contains(&zero_point) => Err(format!(
            "zero point {zero_point} is outside {dtype}'s range [{lo}, {hi}]"
        )),
        _ => Ok(()),
    }
}

/// Shape, element count, parameters and data of one tensor, on its own.
fn check_tensor(graph: &Graph, id: TensorId) -> Result<(), GraphError> {
    let t = graph.tensor(id);
    let err = |m: String| tensor_err(graph, id, m);
    let n = element_count(&t.shape).map_err(err)?;
    match (t.dtype, &t.quant) {
        (DType::F32, Some(_)) => {
            return Err(err(
                "float32 tensors hold reals and carry no quantization parameters".into(),
            ))
        }
        (DType::F32, None) | (DType::I32, None) => {}
        (DType::U8 | DType::I8, None) => {
            return Err(err(format!(
                "{} tensors need quantization parameters",
                t.dtype
            )))
        }
        (dtype, Some(Quant::PerTensor(p))) => {
            check_scale(p.scale).map_err(err)?;
            check_zero_point(dtype, p.zero_point).map_err(err)?;
        }
        (dtype, Some(Quant::PerChannel(cp))) => {
            if !t.is_constant() {
                return Err(err(
                    "activations (tensors without data) must have per-tensor parameters, \
                     not per-channel ones"
                        .into(),
                ));
            }
            let axis = cp.axis();
            if axis >= t.shape.len() {
                return Err(err(format!(
                    "per-channel axis {axis} is out of range for shape {:?}",
                    t.shape
                )));
            }
            if cp.len() != t.shape[axis] {
                return Err(err(format!(
                    "{} per-channel parameters for dimension {axis} of size {} (shape {:?})",
                    cp.len(),
                    t.shape[axis],
                    t.shape
                )));
            }
            for k in 0..cp.len() {
                let p = cp.channel(k);
                check_scale(p.scale)
                    .and_then(|_| check_zero_point(dtype, p.zero_point))
                    .map_err(|m| err(format!("channel {k}: {m}")))?;
            }
        }
    }
    if let Some((lo, hi)) = t.code_range {
        let Some((tlo, thi)) = code_range(t.dtype) else {
            return Err(err(format!(
                "{} tensors hold no codes, so their code range cannot be narrowed",
                t.dtype
            )));
        };
        let zero_point = match (&t.quant, &t.data) {
            (Some(Quant::PerTensor(p)), None) => p.zero_point,
            _ => {
                return Err(err(
                    "only activations (per-tensor parameters, no data) can have a narrowed \
                     code range"
                        .into(),
                ))
            }
        };
        if !(tlo <= lo && lo < hi && hi <= thi) {
            return Err(err(format!(
                "code range [{lo}, {hi}] is not a range of at least two codes within {}'s \
                 [{tlo}, {thi}]",
                t.dtype
            )));
        }
        if !(lo..=hi).contains(&zero_point) {
            return Err(err(format!(
                "zero point {zero_point} is outside its code range [{lo}, {hi}]"
            )));
        }
    }
    if let Some(data) = &t.data {
        if data.dtype() != t.dtype {
            return Err(err(format!(
                "is declared {} but its data is {}",
                t.dtype,
                data.dtype()
            )));
        }
        if data.len() != n {
            return Err(err(format!(
                "has {} data elements but its shape {:?} needs {n}",
                data.len(),
                t.shape
            )));
        }
    }
    Ok(())
}

/// Every id that the inputs, outputs and ops name refers to a tensor.
fn check_ids(graph: &Graph) -> Result<(), GraphError> {
    let count = graph.tensors().len();
    for (what, list) in [("input", graph.inputs()), ("output", graph.outputs())] {
        for (i, id) in list.iter().enumerate() {
            if id.index() >= count {
                return Err(GraphError::Graph(format!(
                    "graph {what} {i} is tensor {id}, but the graph has {count} tensors"
                )));
            }
        }
    }
    for (index, op) in graph.ops().iter().enumerate() {
        let mut ids = op.inputs();
        ids.push(op.output());
        if let Some(id) = ids.iter().find(|id| id.index() >= count) {
            return Err(GraphError::Op {
                index,
                kind: op.kind().name(),
                message: format!("names tensor {id}, but the graph has {count} tensors"),
            });
        }
    }
    Ok(())
}

/// Who writes what: each tensor written at most once and never a constant or graph input; every
/// read satisfied; graph inputs and outputs are run-time values.
fn check_dataflow(graph: &Graph) -> Result<(), GraphError> {
    if graph.outputs().is_empty() {
        return Err(GraphError::Graph("the graph has no outputs".into()));
    }
    let n = graph.tensors().len();
    let mut is_input = vec![false; n];
    for &id in graph.inputs() {
        if is_input[id.index()] {
            return Err(tensor_err(graph, id, "is listed twice as a graph input"));
        }
        is_input[id.index()] = true;
        if graph.tensor(id).is_constant() {
            return Err(tensor_err(
                graph,
                id,
                "is a graph input but has constant data",
            ));
        }
    }
    let mut writer: Vec<Option<usize>> = vec![None; n];
    for (index, op) in graph.ops().iter().enumerate() {
        let out = op.output();
        let op_err = |message: String| GraphError::Op {
            index,
            kind: op.kind().name(),
            message,
        };
        if let Some(first) = writer[out.index()] {
            return Err(op_err(format!(
                "writes {}, which op {first} ({}) already writes",
                describe(graph, out),
                graph.ops()[first].kind()
            )));
        }
        if graph.tensor(out).is_constant() {
            return Err(op_err(format!(
                "writes {}, which is a constant",
                describe(graph, out)
            )));
        }
        if is_input[out.index()] {
            return Err(op_err(format!(
                "writes {}, which is a graph input",
                describe(graph, out)
            )));
        }
        writer[out.index()] = Some(index);
    }
    for (index, op) in graph.ops().iter().enumerate() {
        for id in op.inputs() {
            let t = graph.tensor(id);
            if !t.is_constant() && !is_input[id.index()] && writer[id.index()].is_none() {
                return Err(GraphError::Op {
                    index,
                    kind: op.kind().name(),
                    message: format!(
                        "reads {}, which is not a constant, not a graph input, and no op writes it",
                        describe(graph, id)
                    ),
                });
            }
        }
    }
    for &id in graph.outputs() {
        if graph.tensor(id).is_constant() {
            return Err(tensor_err(
                graph,
                id,
                "is a graph output but has constant data",
            ));
        }
        if !is_input[id.index()] && writer[id.index()].is_none() {
            return Err(tensor_err(
                graph,
                id,
                "is a graph output but no op writes it and it is not a graph input",
            ));
        }
    }
    Ok(())
}

/// Op indices in an order where every op runs after the ops that write its inputs. Among ready
/// ops the lowest index goes first, so a graph stored in topological order keeps its order.
pub(crate) fn topological_order(graph: &Graph) -> Result<Vec<usize>, GraphError> {
    let ops = graph.ops();
    let mut writer: Vec<Option<usize>> = vec![None; graph.tensors().len()];
    for (i, op) in ops.iter().enumerate() {
        writer[op.output().index()] = Some(i);
    }
    // Producers of each op, deduplicated (an op may read one tensor twice).
    let producers: Vec<Vec<usize>> = ops
        .iter()
        .map(|op| {
            let mut p: Vec<usize> = op
                .inputs()
                .iter()
                .filter_map(|id| writer[id.index()])
                .collect();
            p.sort_unstable();
            p.dedup();
            p
        })
        .collect();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); ops.len()];
    let mut pending: Vec<usize> = vec![0; ops.len()];
    for (j, ps) in producers.iter().enumerate() {
        pending[j] = ps.len();
        for &i in ps {
            consumers[i].push(j);
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> = (0..ops.len())
        .filter(|&j| pending[j] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(ops.len());
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &j in &consumers[i] {
            pending[j] -= 1;
            if pending[j] == 0 {
                ready.push(std::cmp::Reverse(j));
            }
        }
    }
    if order.len() == ops.len() {
        return Ok(order);
    }
    // Walk back through unscheduled producers from an unscheduled op: with finitely many ops the
    // walk repeats an op, and the stretch between the repeats is a cycle.
    let stuck = |j: usize| pending[j] > 0;
    let start = (0..ops.len())
        .find(|&j| stuck(j))
        .expect("some op is stuck");
    let mut path = vec![start];
    let mut seen = vec![usize::MAX; ops.len()];
    seen[start] = 0;
    let cycle = loop {
        let j = *path.last().expect("non-empty");
        let p = producers[j]
            .iter()
            .copied()
            .find(|&p| stuck(p))
            .expect("a stuck op has a stuck producer");
        if seen[p] != usize::MAX {
            break path[seen[p]..].to_vec();
        }
        seen[p] = path.len();
        path.push(p);
    };
    let first = *cycle.iter().min().expect("non-empty cycle");
    let chain: Vec<String> = cycle
        .iter()
        .rev()
        .map(|&i| format!("op {i} ({})", ops[i].kind()))
        .collect();
    Err(GraphError::Op {
        index: first,
        kind: ops[first].kind().name(),
        message: format!(
            "is part of a cycle: {} -> back to the first",
            chain.join(" -> ")
        ),
    })
}

/// The checks of one op, with its index and kind at hand for messages.
struct OpCheck<'g> {
    g: &'g Graph,
    index: usize,
    kind: OpKind,
}

/// An 8-bit activation operand: its type, per-tensor params, codes and shape.
struct Act<'g> {
    dtype: DType,
    params: QuantParams,
    codes: (i32, i32),
    shape: &'g [usize],
}

impl<'g> OpCheck<'g> {
    fn err(&self, message: String) -> GraphError {
        GraphError::Op {
            index: self.index,
            kind: self.kind.name(),
            message,
        }
    }

    fn t(&self, id: TensorId) -> &'g Tensor {
        self.g.tensor(id)
    }

    fn name(&self, role: &str, id: TensorId) -> String {
        format!("{role} {}", describe(self.g, id))
    }

    /// An 8-bit tensor with per-tensor parameters.
    fn act(&self, role: &str, id: TensorId) -> Result<Act<'g>, GraphError> {
        let t = self.t(id);
        if code_range(t.dtype).is_none() {
            return Err(self.err(format!(
                "{} is {}, but this op takes uint8 or int8 codes",
                self.name(role, id),
                t.dtype
            )));
        }
        match t.params() {
            Some(params) => Ok(Act {
                dtype: t.dtype,
                params,
                codes: t.code_limits().expect("8-bit"),
                shape: &t.shape,
            }),
            None => Err(self.err(format!(
                "{} needs per-tensor quantization parameters",
                self.name(role, id)
            ))),
        }
    }

    /// An 8-bit tensor of the same type as `like`.
    fn act_like(&self, role: &str, id: TensorId, like: &Act) -> Result<Act<'g>, GraphError> {
        let a = self.act(role, id)?;
        if a.dtype != like.dtype {
            return Err(self.err(format!(
                "{} is {}, but the op's input is {}",
                self.name(role, id),
                a.dtype,
                like.dtype
            )));
        }
        Ok(a)
    }

    fn rank(&self, role: &str, id: TensorId, rank: usize) -> Result<&'g [usize], GraphError> {
        let shape = &self.t(id).shape;
        if shape.len() != rank {
            return Err(self.err(format!(
                "{} has shape {shape:?}, but must have rank {rank}",
                self.name(role, id)
            )));
        }
        Ok(shape)
    }

    fn shape_is(&self, role: &str, id: TensorId, expected: &[usize]) -> Result<(), GraphError> {
        let shape = &self.t(id).shape;
        if shape != expected {
            return Err(self.err(format!(
                "{} has shape {shape:?}, expected {expected:?}",
                self.name(role, id)
            )));
        }
        Ok(())
    }

    fn same_params(&self, role: &str, id: TensorId, a: &Act, b: &Act) -> Result<(), GraphError> {
        if a.params != b.params {
            return Err(self.err(format!(
                "{} has (S, Z) = ({}, {}), but this op's input and output must share \
                 parameters; the input has ({}, {})",
                self.name(role, id),
                b.params.scale,
                b.params.zero_point,
                a.params.scale,
                a.params.zero_point
            )));
        }
        if a.codes != b.codes {
            return Err(self.err(format!(
                "{} holds codes [{}, {}], but this op passes codes through unchanged and its \
                 input holds [{}, {}]",
                self.name(role, id),
                b.codes.0,
                b.codes.1,
                a.codes.0,
                a.codes.1
            )));
        }
        Ok(())
    }

    /// Constant weights of the input's type, quantized per tensor or per channel along `axis`
    /// (with `channels` entries). Returns `S_w[k]` for every channel.
    fn weights(
        &self,
        role: &str,
        id: TensorId,
        input: &Act,
        axis: usize,
        channels: usize,
    ) -> Result<Vec<f32>, GraphError> {
        let t = self.t(id);
        if !t.is_constant() {
            return Err(self.err(format!(
                "{} must be a constant (weights are prepared once at load time)",
                self.name(role, id)
            )));
        }
        if t.dtype != input.dtype {
            return Err(self.err(format!(
                "{} is {}, but the input is {}; weights must have the input's type",
                self.name(role, id),
                t.dtype,
                input.dtype
            )));
        }
        match &t.quant {
            Some(Quant::PerTensor(p)) => Ok(vec![p.scale; channels]),
            Some(Quant::PerChannel(cp)) => {
                if cp.axis() != axis {
                    return Err(self.err(format!(
                        "{} is quantized per channel along axis {}, but {} weights must be \
                         per channel along axis {axis}",
                        self.name(role, id),
                        cp.axis(),
                        self.kind
                    )));
                }
                // check_tensor has matched cp.len() to shape[axis] = channels.
                Ok(cp.scales().to_vec())
            }
            None => Err(self.err(format!(
                "{} has no quantization parameters",
                self.name(role, id)
            ))),
        }
    }

    /// Constant int32 bias `[channels]` whose params, if recorded, are `S_in * S_w[k]` (relative
    /// 1e-6, TFLite's check) with `Z = 0`.
    fn bias(
        &self,
        id: TensorId,
        channels: usize,
        s_in: f32,
        s_w: &[f32],
    ) -> Result<(), GraphError> {
        let t = self.t(id);
        if !t.is_constant() {
            return Err(self.err(format!("{} must be a constant", self.name("bias", id))));
        }
        if t.dtype != DType::I32 {
            return Err(self.err(format!(
                "{} is {}, but bias must be int32",
                self.name("bias", id),
                t.dtype
            )));
        }
        self.shape_is("bias", id, &[channels])?;
        let per_channel: Vec<QuantParams> = match &t.quant {
            None => return Ok(()),
            Some(Quant::PerTensor(p)) => vec![*p; channels],
            Some(Quant::PerChannel(cp)) => (0..cp.len()).map(|k| cp.channel(k)).collect(),
        };
        for (k, p) in per_channel.iter().enumerate() {
            if p.zero_point != 0 {
                return Err(self.err(format!(
                    "{} has zero point {} (channel {k}); bias zero points must be 0",
                    self.name("bias", id),
                    p.zero_point
                )));
            }
            let expected = s_in as f64 * s_w[k] as f64;
            let got = p.scale as f64;
            if (expected - got).abs() > 1e-6 * expected.min(got) {
                return Err(self.err(format!(
                    "{} has scale {got:e} (channel {k}), but S_in * S_w = {s_in:e} * {:e} = \
                     {expected:e}",
                    self.name("bias", id),
                    s_w[k]
                )));
            }
        }
        Ok(())
    }

    /// Resolves spatial geometry; returns the output height and width.
    #[allow(clippy::too_many_arguments)]
    fn geometry(
        &self,
        input: (usize, usize),
        filter: (usize, usize),
        stride: [usize; 2],
        dilation: [usize; 2],
        padding: Padding,
    ) -> Result<(usize, usize), GraphError> {
        if stride.contains(&0) {
            return Err(self.err(format!("stride {stride:?} must be at least 1")));
        }
        if dilation.contains(&0) {
            return Err(self.err(format!("dilation {dilation:?} must be at least 1")));
        }
        match padding.resolve(
            input,
            filter,
            (stride[0], stride[1]),
            (dilation[0], dilation[1]),
        ) {
            Some((out, _)) => Ok(out),
            None => Err(self.err(format!(
                "a {}x{} filter (dilation {}x{}) does not fit a {}x{} input with {padding:?} \
                 padding",
                filter.0, filter.1, dilation[0], dilation[1], input.0, input.1
            ))),
        }
    }

    fn check(&self, op: &Op) -> Result<(), GraphError> {
        // These requantize through tables or fixed output params that assume the type's whole
        // range; the ops that clamp (conv, FC, Add, pools, Quantize) honour a narrowed one.
        let writes_whole_type_range = matches!(
            op,
            Op::Concat { .. }
                | Op::Logistic { .. }
                | Op::LogisticLut { .. }
                | Op::Softmax { .. }
                | Op::Mean { .. }
                | Op::LeakyRelu { .. }
                | Op::HardSwish { .. }
                | Op::Tanh { .. }
                | Op::Prelu { .. }
                | Op::Sum { .. }
                | Op::L2Normalization { .. }
        );
        let out = self.t(op.output());
        if let (true, Some((lo, hi))) = (writes_whole_type_range, out.code_range) {
            return Err(self.err(format!(
                "{} has a narrowed code range [{lo}, {hi}], which this op cannot write",
                self.name("output", op.output())
            )));
        }
        match op {
            Op::Conv2d {
                input,
                filter,
                bias,
                output,
                stride,
                dilation,
                padding,
                activation: _,
            } => {
                let x = self.act("input", *input)?;
                let [n, h, w, c] = self.nhwc("input", *input)?;
                let [o, kh, kw, fc] = to4(self.rank("filter", *filter, 4)?);
                if fc != c {
                    return Err(self.err(format!(
                        "{} has {fc} input channels (OHWI), but the input has {c}",
                        self.name("filter", *filter)
                    )));
                }
                let s_w = self.weights("filter", *filter, &x, 0, o)?;
                if let Some(b) = bias {
                    self.bias(*b, o, x.params.scale, &s_w)?;
                }
                let (oh, ow) = self.geometry((h, w), (kh, kw), *stride, *dilation, *padding)?;
                self.act_like("output", *output, &x)?;
                self.shape_is("output", *output, &[n, oh, ow, o])
            }
            Op::DepthwiseConv2d {
                input,
                filter,
                bias,
                output,
                stride,
                dilation,
                padding,
                depth_multiplier,
                activation: _,
            } => {
                let x = self.act("input", *input)?;
                let [n, h, w, c] = self.nhwc("input", *input)?;
                if *depth_multiplier == 0 {
                    return Err(self.err("depth_multiplier must be at least 1".into()));
                }
                let oc = c.checked_mul(*depth_multiplier).ok_or_else(|| {
                    self.err(format!(
                        "input channels {c} * depth_multiplier {depth_multiplier} overflows"
                    ))
                })?;
                let [one, kh, kw, fc] = to4(self.rank("filter", *filter, 4)?);
                if one != 1 || fc != oc {
                    return Err(self.err(format!(
                        "{} has shape {:?}, expected [1, kh, kw, {oc}] (input channels {c} * \
                         depth_multiplier {depth_multiplier})",
                        self.name("filter", *filter),
                        self.t(*filter).shape
                    )));
                }
                let s_w = self.weights("filter", *filter, &x, 3, oc)?;
                if let Some(b) = bias {
                    self.bias(*b, oc, x.params.scale, &s_w)?;
                }
                let (oh, ow) = self.geometry((h, w), (kh, kw), *stride, *dilation, *padding)?;
                self.act_like("output", *output, &x)?;
                self.shape_is("output", *output, &[n, oh, ow, oc])
            }
            Op::FullyConnected {
                input,
                weights,
                bias,
                output,
                activation: _,
            }
            | Op::FullyConnectedF64 {
                input,
                weights,
                bias,
                output,
                activation: _,
            } => {
                let x = self.act("input", *input)?;
                let [out, depth] = {
                    let s = self.rank("weights", *weights, 2)?;
                    [s[0], s[1]]
                };
                let numel: usize = x.shape.iter().product();
                if !numel.is_multiple_of(depth) {
                    return Err(self.err(format!(
                        "{} has {numel} elements, not a multiple of the weights' depth {depth} \
                         ({} is [out, depth])",
                        self.name("input", *input),
                        self.name("weights", *weights)
                    )));
                }
                let s_w = self.weights("weights", *weights, &x, 0, out)?;
                if let Some(b) = bias {
                    self.bias(*b, out, x.params.scale, &s_w)?;
                }
                self.act_like("output", *output, &x)?;
                self.shape_is("output", *output, &[numel / depth, out])
            }
            Op::Add {
                lhs,
                rhs,
                output,
                activation: _,
            }
            | Op::Mul {
                lhs,
                rhs,
                output,
                activation: _,
            }
            | Op::Sub {
                lhs,
                rhs,
                output,
                activation: _,
            } => {
                let a = self.act("lhs", *lhs)?;
                let b = self.act_like("rhs", *rhs, &a)?;
                let shape = broadcast(a.shape, b.shape).ok_or_else(|| {
                    self.err(format!(
                        "shapes {:?} ({}) and {:?} ({}) do not broadcast",
                        a.shape,
                        self.name("lhs", *lhs),
                        b.shape,
                        self.name("rhs", *rhs)
                    ))
                })?;
                if shape.len() > MAX_ADD_RANK {
                    return Err(self.err(format!(
                        "rank {} is more than the {MAX_ADD_RANK} dimensions {} supports",
                        shape.len(),
                        self.kind
                    )));
                }
                self.act_like("output", *output, &a)?;
                self.shape_is("output", *output, &shape)
            }
            Op::AveragePool2d {
                input,
                output,
                filter,
                stride,
                padding,
                activation: _,
            }
            | Op::MaxPool2d {
                input,
                output,
                filter,
                stride,
                padding,
                activation: _,
            } => {
                let x = self.act("input", *input)?;
                let [n, h, w, c] = self.nhwc("input", *input)?;
                if filter.contains(&0) {
                    return Err(self.err(format!("filter size {filter:?} must be at least 1")));
                }
                if let Padding::Explicit {
                    top,
                    bottom,
                    left,
                    right,
                } = *padding
                {
                    // A window made only of padding would average over nothing.
                    if top >= filter[0]
                        || bottom >= filter[0]
                        || left >= filter[1]
                        || right >= filter[1]
                    {
                        return Err(self.err(format!(
                            "explicit padding {padding:?} must be smaller than the {}x{} filter",
                            filter[0], filter[1]
                        )));
                    }
                }
                let (oh, ow) =
                    self.geometry((h, w), (filter[0], filter[1]), *stride, [1, 1], *padding)?;
                let y = self.act_like("output", *output, &x)?;
                self.shape_is("output", *output, &[n, oh, ow, c])?;
                self.same_params("output", *output, &x, &y)
            }
            Op::Concat {
                inputs,
                output,
                axis,
            } => {
                let Some(&first) = inputs.first() else {
                    return Err(self.err("has no inputs".into()));
                };
                let x0 = self.act("input 0", first)?;
                let rank = x0.shape.len();
                if *axis >= rank {
                    return Err(self.err(format!(
                        "axis {axis} is out of range for rank-{rank} inputs"
                    )));
                }
                let mut shape = x0.shape.to_vec();
                for (i, &id) in inputs.iter().enumerate().skip(1) {
                    let role = format!("input {i}");
                    let xi = self.act_like(&role, id, &x0)?;
                    let agrees = xi.shape.len() == rank
                        && (0..rank).all(|d| d == *axis || xi.shape[d] == x0.shape[d]);
                    if !agrees {
                        return Err(self.err(format!(
                            "{} has shape {:?}, which does not match input 0's {:?} outside \
                             axis {axis}",
                            self.name(&role, id),
                            xi.shape,
                            x0.shape
                        )));
                    }
                    shape[*axis] += xi.shape[*axis];
                }
                self.act_like("output", *output, &x0)?;
                self.shape_is("output", *output, &shape)
            }
            Op::Logistic { input, output } | Op::LogisticLut { input, output } => {
                let x = self.act("input", *input)?;
                self.fixed_probability_output(*output, &x)
            }
            Op::Softmax {
                input,
                output,
                beta,
            } => {
                let x = self.act("input", *input)?;
                if x.shape.is_empty() {
                    return Err(self.err(format!(
                        "{} is a scalar; softmax needs a last axis",
                        self.name("input", *input)
                    )));
                }
                if !(*beta > 0.0 && beta.is_finite()) {
                    return Err(self.err(format!("beta {beta} is not a positive finite number")));
                }
                self.fixed_probability_output(*output, &x)
            }
            Op::Reshape { input, output } => {
                let x = self.act("input", *input)?;
                let y = self.act_like("output", *output, &x)?;
                let (nx, ny): (usize, usize) = (x.shape.iter().product(), y.shape.iter().product());
                if nx != ny {
                    return Err(self.err(format!(
                        "{} has {ny} elements ({:?}), but the input has {nx} ({:?})",
                        self.name("output", *output),
                        y.shape,
                        x.shape
                    )));
                }
                self.same_params("output", *output, &x, &y)
            }
            Op::Pad {
                input,
                output,
                paddings,
            } => {
                let x = self.act("input", *input)?;
                let y = self.act_like("output", *output, &x)?;
                if paddings.len() != x.shape.len() {
                    return Err(self.err(format!(
                        "{} pairs of paddings for a rank-{} input",
                        paddings.len(),
                        x.shape.len()
                    )));
                }
                let shape = x
                    .shape
                    .iter()
                    .zip(paddings)
                    .map(|(&d, p)| d.checked_add(p[0])?.checked_add(p[1]))
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| self.err(format!("paddings {paddings:?} overflow")))?;
                self.shape_is("output", *output, &shape)?;
                self.same_params("output", *output, &x, &y)
            }
            Op::Mean {
                input,
                output,
                axes,
                keep_dims,
            } => {
                let x = self.act("input", *input)?;
                self.act_like("output", *output, &x)?;
                if axes.is_empty()
                    || axes.windows(2).any(|w| w[0] >= w[1])
                    || axes.iter().any(|&a| a >= x.shape.len())
                {
                    return Err(self.err(format!(
                        "axes {axes:?} must be distinct, increasing and below the rank {}",
                        x.shape.len()
                    )));
                }
                if axes.iter().any(|&a| x.shape[a] == 0) {
                    return Err(self.err("a reduced axis is empty".into()));
                }
                let shape: Vec<usize> = x
                    .shape
                    .iter()
                    .enumerate()
                    .filter_map(|(a, &d)| match (axes.contains(&a), keep_dims) {
                        (false, _) => Some(d),
                        (true, true) => Some(1),
                        (true, false) => None,
                    })
                    .collect();
                self.shape_is("output", *output, &shape)
            }
            Op::Relu {
                input,
                output,
                activation,
            } => {
                if *activation == crate::Activation::None {
                    return Err(self.err(
                        "activation None is not a ReLU; use Relu, Relu6 or ReluN1To1".into(),
                    ));
                }
                self.same_shape_unary(*input, *output)
            }
            Op::LeakyRelu {
                input,
                output,
                alpha,
            } => {
                if !(*alpha >= 0.0 && alpha.is_finite()) {
                    return Err(
                        self.err(format!("alpha {alpha} is not a finite non-negative number"))
                    );
                }
                self.same_shape_unary(*input, *output)
            }
            Op::HardSwish { input, output } | Op::Tanh { input, output } => {
                self.same_shape_unary(*input, *output)
            }
            Op::Prelu {
                input,
                alpha,
                output,
            } => {
                let x = self.act("input", *input)?;
                let a = self.act_like("alpha", *alpha, &x)?;
                if x.shape.len() > 4 || broadcast(x.shape, a.shape).as_deref() != Some(x.shape) {
                    return Err(self.err(format!(
                        "{} has shape {:?}, which must broadcast onto the input's {:?} (rank up \
                         to 4)",
                        self.name("alpha", *alpha),
                        a.shape,
                        x.shape
                    )));
                }
                self.act_like("output", *output, &x)?;
                self.shape_is("output", *output, x.shape)
            }
            Op::Maximum { lhs, rhs, output } | Op::Minimum { lhs, rhs, output } => {
                let a = self.act("lhs", *lhs)?;
                let b = self.act_like("rhs", *rhs, &a)?;
                let shape = broadcast(a.shape, b.shape)
                    .filter(|s| s.len() <= 5)
                    .ok_or_else(|| {
                        self.err(format!(
                            "shapes {:?} ({}) and {:?} ({}) do not broadcast within rank 5",
                            a.shape,
                            self.name("lhs", *lhs),
                            b.shape,
                            self.name("rhs", *rhs)
                        ))
                    })?;
                self.same_params("rhs", *rhs, &a, &b)?;
                let y = self.act_like("output", *output, &a)?;
                self.shape_is("output", *output, &shape)?;
                self.same_params("output", *output, &a, &y)
            }
            Op::Transpose {
                input,
                output,
                perm,
            } => {
                let x = self.act("input", *input)?;
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if x.shape.len() > 6 || sorted != (0..x.shape.len()).collect::<Vec<_>>() {
                    return Err(self.err(format!(
                        "perm {perm:?} is not a permutation of the axes of a rank-{} input \
                         (rank up to 6)",
                        x.shape.len()
                    )));
                }
                let y = self.act_like("output", *output, &x)?;
                let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
                self.shape_is("output", *output, &shape)?;
                self.same_params("output", *output, &x, &y)
            }
            Op::Slice {
                input,
                output,
                begin,
                strides,
            } => {
                let x = self.act("input", *input)?;
                let y = self.act_like("output", *output, &x)?;
                let rank = x.shape.len();
                if rank > 5 || begin.len() != rank || strides.len() != rank || y.shape.len() != rank
                {
                    return Err(self.err(format!(
                        "begin {begin:?}, strides {strides:?} and output {:?} need one entry per \
                         axis of the rank-{rank} input (rank up to 5)",
                        y.shape
                    )));
                }
                for a in 0..rank {
                    let last = (y.shape[a] - 1)
                        .checked_mul(strides[a])
                        .and_then(|v| v.checked_add(begin[a]));
                    if strides[a] == 0 || !matches!(last, Some(l) if l < x.shape[a]) {
                        return Err(self.err(format!(
                            "axis {a}: {} elements from {} in steps of {} do not fit the \
                             input's {}",
                            y.shape[a], begin[a], strides[a], x.shape[a]
                        )));
                    }
                }
                self.same_params("output", *output, &x, &y)
            }
            Op::Gather {
                input,
                output,
                axis,
                indices,
            } => {
                let x = self.act("input", *input)?;
                let y = self.act_like("output", *output, &x)?;
                let (rank, axis) = (x.shape.len(), *axis);
                if axis >= rank {
                    return Err(self.err(format!("axis {axis} is outside the rank-{rank} input")));
                }
                let n = x.shape[axis];
                if let Some((k, &j)) = indices.iter().enumerate().find(|&(_, &j)| j >= n) {
                    return Err(self.err(format!(
                        "index {k} is {j}, outside axis {axis} (size {n}) of {}",
                        self.name("input", *input)
                    )));
                }
                // The indices' rank: the output has the input's axes with `axis` replaced.
                let fits = (y.shape.len() + 1).checked_sub(rank).is_some_and(|r| {
                    y.shape[..axis] == x.shape[..axis]
                        && y.shape[axis + r..] == x.shape[axis + 1..]
                        && y.shape[axis..axis + r].iter().product::<usize>() == indices.len()
                });
                if !fits {
                    return Err(self.err(format!(
                        "{} has shape {:?}, which is not the input's {:?} with axis {axis} \
                         replaced by the shape of {} indices",
                        self.name("output", *output),
                        y.shape,
                        x.shape,
                        indices.len()
                    )));
                }
                self.same_params("output", *output, &x, &y)
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
                let x = self.act("input", *input)?;
                let y = self.act_like("output", *output, &x)?;
                let shape = self.reduced_shape(x.shape, axes, *keep_dims)?;
                self.shape_is("output", *output, &shape)?;
                if matches!(op, Op::ReduceMax { .. }) {
                    self.same_params("output", *output, &x, &y)?;
                }
                Ok(())
            }
            Op::ArgMax {
                input,
                output,
                axis,
            } => {
                let x = self.act("input", *input)?;
                if *axis >= x.shape.len() {
                    return Err(self.err(format!(
                        "axis {axis} is outside the rank-{} input",
                        x.shape.len()
                    )));
                }
                let y = self.t(*output);
                if y.dtype != DType::I32 || y.quant.is_some() {
                    return Err(self.err(format!(
                        "{} is {}, but this op writes int32 indices (without quantization \
                         parameters)",
                        self.name("output", *output),
                        y.dtype
                    )));
                }
                let mut shape = x.shape.to_vec();
                shape.remove(*axis);
                self.shape_is("output", *output, &shape)
            }
            Op::L2Normalization { input, output } => {
                let x = self.act("input", *input)?;
                let y = self.act_like("output", *output, &x)?;
                if x.shape.is_empty() {
                    return Err(self.err("the input has no last axis to normalize".into()));
                }
                self.shape_is("output", *output, x.shape)?;
                let z = if x.dtype == DType::U8 { 128 } else { 0 };
                if y.params.scale != 1.0 / 128.0 || y.params.zero_point != z {
                    return Err(self.err(format!(
                        "{} has (S, Z) = ({}, {}), but TFLite's L2_NORMALIZATION writes \
                         {} codes at (0.0078125, {z})",
                        self.name("output", *output),
                        y.params.scale,
                        y.params.zero_point,
                        x.dtype
                    )));
                }
                Ok(())
            }
            Op::TransposeConv {
                input,
                filter,
                bias,
                output,
                stride,
                padding,
                activation: _,
            } => {
                let x = self.act("input", *input)?;
                let [n, h, w, c] = self.nhwc("input", *input)?;
                let [o, kh, kw, fc] = to4(self.rank("filter", *filter, 4)?);
                if fc != c {
                    return Err(self.err(format!(
                        "{} has {fc} input channels (OHWI), but the input has {c}",
                        self.name("filter", *filter)
                    )));
                }
                let s_w = self.weights("filter", *filter, &x, 0, o)?;
                if let Some(b) = bias {
                    self.bias(*b, o, x.params.scale, &s_w)?;
                }
                self.act_like("output", *output, &x)?;
                let [yn, oh, ow, yc] = self.nhwc("output", *output)?;
                if yn != n || yc != o {
                    return Err(self.err(format!(
                        "{} has shape {:?}, expected [{n}, height, width, {o}]",
                        self.name("output", *output),
                        [yn, oh, ow, yc]
                    )));
                }
                // The convolution this op transposes maps the output's size back to the input's.
                let back = self.geometry((oh, ow), (kh, kw), *stride, [1, 1], *padding)?;
                if back != (h, w) {
                    return Err(self.err(format!(
                        "a {oh}x{ow} output convolved with the {kh}x{kw} filter at stride \
                         {stride:?} and {padding:?} padding gives {}x{}, not the input's {h}x{w}",
                        back.0, back.1
                    )));
                }
                Ok(())
            }
            Op::SpaceToBatch {
                input,
                output,
                block,
                paddings,
            } => {
                let x = self.act("input", *input)?;
                let [n, h, w, c] = self.nhwc("input", *input)?;
                let y = self.act_like("output", *output, &x)?;
                let padded = [
                    h.checked_add(paddings[0][0])
                        .and_then(|v| v.checked_add(paddings[0][1])),
                    w.checked_add(paddings[1][0])
                        .and_then(|v| v.checked_add(paddings[1][1])),
                ];
                let (Some(ph), Some(pw)) = (padded[0], padded[1]) else {
                    return Err(self.err(format!("paddings {paddings:?} overflow")));
                };
                if block.contains(&0) || ph % block[0] != 0 || pw % block[1] != 0 {
                    return Err(self.err(format!(
                        "the padded {ph}x{pw} input is not a whole number of {}x{} blocks",
                        block[0], block[1]
                    )));
                }
                let batches = n
                    .checked_mul(block[0] * block[1])
                    .ok_or_else(|| self.err(format!("block {block:?} overflows the batch")))?;
                self.shape_is(
                    "output",
                    *output,
                    &[batches, ph / block[0], pw / block[1], c],
                )?;
                self.same_params("output", *output, &x, &y)
            }
            Op::BatchToSpace {
                input,
                output,
                block,
                crops,
            } => {
                let x = self.act("input", *input)?;
                let [b, h, w, c] = self.nhwc("input", *input)?;
                let y = self.act_like("output", *output, &x)?;
                let cells = block[0].checked_mul(block[1]).unwrap_or(0);
                if cells == 0 || b % cells != 0 {
                    return Err(self.err(format!(
                        "the input's {b} batches are not a whole number of {}x{} blocks",
                        block[0], block[1]
                    )));
                }
                let full = [h.checked_mul(block[0]), w.checked_mul(block[1])];
                let (Some(fh), Some(fw)) = (full[0], full[1]) else {
                    return Err(self.err(format!("block {block:?} overflows the image size")));
                };
                let keep = |full: usize, [a, z]: [usize; 2]| {
                    a.checked_add(z)
                        .filter(|&cut| cut < full)
                        .map(|cut| full - cut)
                };
                let (Some(oh), Some(ow)) = (keep(fh, crops[0]), keep(fw, crops[1])) else {
                    return Err(self.err(format!(
                        "crops {crops:?} leave nothing of the {fh}x{fw} image"
                    )));
                };
                self.shape_is("output", *output, &[b / cells, oh, ow, c])?;
                self.same_params("output", *output, &x, &y)
            }
            Op::DepthToSpace {
                input,
                output,
                block,
            } => {
                let x = self.act("input", *input)?;
                let [n, h, w, c] = self.nhwc("input", *input)?;
                let y = self.act_like("output", *output, &x)?;
                let cells = block.checked_mul(*block).unwrap_or(0);
                if cells == 0 || c % cells != 0 {
                    return Err(self.err(format!(
                        "the input's {c} channels are not a multiple of block {block} squared"
                    )));
                }
                let (Some(oh), Some(ow)) = (h.checked_mul(*block), w.checked_mul(*block)) else {
                    return Err(self.err(format!("block {block} overflows the image size")));
                };
                self.shape_is("output", *output, &[n, oh, ow, c / cells])?;
                self.same_params("output", *output, &x, &y)
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
                if *align_corners && *half_pixel_centers && self.kind == OpKind::ResizeBilinear {
                    return Err(
                        self.err("align_corners and half_pixel_centers cannot both be set".into())
                    );
                }
                let x = self.act("input", *input)?;
                let [n, _, _, c] = self.nhwc("input", *input)?;
                let y = self.act_like("output", *output, &x)?;
                let [on, _, _, oc] = self.nhwc("output", *output)?;
                if (on, oc) != (n, c) {
                    return Err(self.err(format!(
                        "{} has shape {:?}, but a resize keeps the input's batch {n} and \
                         channels {c}",
                        self.name("output", *output),
                        y.shape
                    )));
                }
                self.same_params("output", *output, &x, &y)
            }
            Op::DetectionPostProcess {
                boxes,
                scores,
                anchors,
                output,
                part,
                options,
            } => self.detection([*boxes, *scores, *anchors, *output], *part, options),
            Op::Quantize { input, output } => {
                let t = self.t(*input);
                let y = self.act("output", *output)?;
                if t.dtype != DType::F32 {
                    // Codes in: only the exact shift between uint8 and int8 at one scale
                    // (`S` equal, `Z - qmin` equal), which needs no multiplier.
                    let x = self.act("input", *input)?;
                    let (dx, dy) = (code_range(x.dtype), code_range(y.dtype));
                    let lo = |r: Option<(i32, i32)>| r.map_or(0, |r| r.0);
                    if x.params.scale != y.params.scale
                        || x.params.zero_point - lo(dx) != y.params.zero_point - lo(dy)
                    {
                        return Err(self.err(format!(
                            "{} has (S, Z) = ({}, {}) and {} ({}, {}); Quantize reads float32, \
                             or codes that it only moves between uint8 and int8 at one scale \
                             (equal S, Z shifted by the types' difference)",
                            self.name("input", *input),
                            x.params.scale,
                            x.params.zero_point,
                            self.name("output", *output),
                            y.params.scale,
                            y.params.zero_point
                        )));
                    }
                }
                self.shape_is("output", *output, &t.shape)
            }
            Op::Dequantize { input, output } => {
                let x = self.act("input", *input)?;
                let t = self.t(*output);
                if t.dtype != DType::F32 {
                    return Err(self.err(format!(
                        "{} is {}, but Dequantize writes float32",
                        self.name("output", *output),
                        t.dtype
                    )));
                }
                self.shape_is("output", *output, x.shape)
            }
        }
    }

    /// The shape left after reducing `axes` (distinct, increasing, inside the rank, none of
    /// them empty): kept as 1 with `keep_dims`, else dropped.
    fn reduced_shape(
        &self,
        shape: &[usize],
        axes: &[usize],
        keep_dims: bool,
    ) -> Result<Vec<usize>, GraphError> {
        if axes.is_empty()
            || axes.windows(2).any(|w| w[0] >= w[1])
            || axes.iter().any(|&a| a >= shape.len())
        {
            return Err(self.err(format!(
                "axes {axes:?} must be distinct, increasing and below the rank {}",
                shape.len()
            )));
        }
        Ok(shape
            .iter()
            .enumerate()
            .filter_map(|(a, &d)| match (axes.contains(&a), keep_dims) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect())
    }

    /// An 8-bit input and an output of its type and shape (parameters may differ).
    fn same_shape_unary(&self, input: TensorId, output: TensorId) -> Result<(), GraphError> {
        let x = self.act("input", input)?;
        self.act_like("output", output, &x)?;
        self.shape_is("output", output, x.shape)
    }

    fn nhwc(&self, role: &str, id: TensorId) -> Result<[usize; 4], GraphError> {
        Ok(to4(self.rank(role, id, 4)?))
    }

    /// `TFLite_Detection_PostProcess`: what TFLite's Prepare and Eval check, at load time (the
    /// anchors are a constant, so the decoded boxes' validity is known here too).
    fn detection(
        &self,
        [boxes, scores, anchors, output]: [TensorId; 4],
        part: crate::DetectionPart,
        o: &intq_kernels::reference::DetectionOptions,
    ) -> Result<(), GraphError> {
        use intq_kernels::reference::{MAX_DETECTIONS, MAX_DETECTION_ENTRIES};
        let bad = |what: String| Err(self.err(what));
        if !(1..=MAX_DETECTIONS).contains(&o.max_detections)
            || !(1..=MAX_DETECTIONS).contains(&o.max_classes_per_detection)
            || o.output_len() > MAX_DETECTION_ENTRIES
        {
            return bad(format!(
                "max_detections {} and max_classes_per_detection {} must each be 1 to \
                 {MAX_DETECTIONS}, with a product of at most {MAX_DETECTION_ENTRIES}",
                o.max_detections, o.max_classes_per_detection
            ));
        }
        if o.use_regular_nms && !(1..=MAX_DETECTION_ENTRIES).contains(&o.detections_per_class) {
            return bad(format!(
                "detections_per_class {} must be 1 to {MAX_DETECTION_ENTRIES} for regular NMS",
                o.detections_per_class
            ));
        }
        if !(o.nms_iou_threshold > 0.0 && o.nms_iou_threshold <= 1.0) {
            return bad(format!(
                "nms_iou_threshold {} must be in (0, 1]",
                o.nms_iou_threshold
            ));
        }
        if o.nms_score_threshold.is_nan() {
            return bad("nms_score_threshold is NaN".into());
        }
        let scales = [o.y_scale, o.x_scale, o.h_scale, o.w_scale];
        if scales.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return bad(format!(
                "y_scale, x_scale, h_scale, w_scale {scales:?} must be finite and nonzero"
            ));
        }
        let real_or_u8 = |role: &str, id: TensorId| -> Result<DType, GraphError> {
            let t = self.t(id);
            match t.dtype {
                DType::F32 => Ok(DType::F32),
                DType::U8 if t.params().is_some() => Ok(DType::U8),
                _ => Err(self.err(format!(
                    "{} is {} without per-tensor parameters or not uint8; TFLite's kernel \
                     reads uint8 codes or float32 (an int8 model dequantizes before it)",
                    self.name(role, id),
                    t.dtype
                ))),
            }
        };
        let bt = real_or_u8("boxes", boxes)?;
        real_or_u8("scores", scores)?;
        let b = self.rank("boxes", boxes, 3)?;
        let s = self.rank("scores", scores, 3)?;
        let an = self.rank("anchors", anchors, 2)?;
        let a = b[1];
        if b[0] != 1 || b[2] < 4 {
            return bad(format!(
                "{} has shape {b:?}; it must be [1, anchors, 4 or more]",
                self.name("boxes", boxes)
            ));
        }
        if s[0] != 1 || s[1] != a {
            return bad(format!(
                "{} has shape {s:?}; it must be [1, {a}, classes] for the {a} boxes",
                self.name("scores", scores)
            ));
        }
        if o.num_classes == 0 || !(o.num_classes..=o.num_classes + 1).contains(&s[2]) {
            return bad(format!(
                "num_classes {} does not fit {} with {} classes (num_classes, or one more \
                 for a background class)",
                o.num_classes,
                self.name("scores", scores),
                s[2]
            ));
        }
        if an != [a, 4] {
            return bad(format!(
                "{} has shape {an:?}; it must be [{a}, 4], one (y, x, h, w) per box",
                self.name("anchors", anchors)
            ));
        }
        let at = self.t(anchors);
        if at.dtype != bt || !at.is_constant() || (bt == DType::U8 && at.params().is_none()) {
            return bad(format!(
                "{} must be a constant of the boxes' type {bt} (per-tensor parameters if uint8), \
                 as TFLite's kernel reads it; it is {}{}",
                self.name("anchors", anchors),
                at.dtype,
                if at.is_constant() {
                    ""
                } else {
                    ", not a constant"
                }
            ));
        }
        let reals = crate::plan::anchor_reals(self.g, anchors);
        if let Some(i) = (0..a).find(|&i| !(reals[4 * i + 2] >= 0.0 && reals[4 * i + 3] >= 0.0)) {
            return bad(format!(
                "{} row {i} has height {} and width {}; they must be at least 0 (TFLite \
                 refuses the decoded boxes otherwise)",
                self.name("anchors", anchors),
                reals[4 * i + 2],
                reals[4 * i + 3]
            ));
        }
        let y = self.t(output);
        if y.dtype != DType::F32 {
            return bad(format!(
                "{} is {}, but the post-process writes float32",
                self.name("output", output),
                y.dtype
            ));
        }
        self.shape_is("output", output, &part.shape(o.output_len()))
    }

    /// Logistic and Softmax write probabilities with `S = 1/256` and `Z` at the type's minimum.
    fn fixed_probability_output(&self, output: TensorId, x: &Act) -> Result<(), GraphError> {
        let y = self.act_like("output", output, x)?;
        self.shape_is("output", output, x.shape)?;
        let z = if y.dtype == DType::U8 { 0 } else { -128 };
        if y.params.scale != 1.0 / 256.0 || y.params.zero_point != z {
            return Err(self.err(format!(
                "{} has (S, Z) = ({}, {}), but {} output must be exactly (1/256, {z}) for {}",
                self.name("output", output),
                y.params.scale,
                y.params.zero_point,
                self.kind,
                y.dtype
            )));
        }
        Ok(())
    }
}

fn to4(s: &[usize]) -> [usize; 4] {
    [s[0], s[1], s[2], s[3]]
}

/// NumPy broadcasting: align on the right; each pair of dimensions is equal or one of them is 1.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i < rank - s.len() {
            1
        } else {
            s[i - (rank - s.len())]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(broadcast(&[2, 3], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast(&[], &[5]), Some(vec![5]));
        assert_eq!(broadcast(&[2, 3], &[2]), None);
    }

    #[test]
    fn element_counts() {
        assert_eq!(element_count(&[]), Ok(1));
        assert_eq!(element_count(&[1 << 15, 1 << 16]), Ok(1 << 31));
        assert!(element_count(&[1 << 16, 1 << 16])
            .unwrap_err()
            .contains("2^31"));
        assert!(element_count(&[usize::MAX, 2])
            .unwrap_err()
            .contains("overflows"));
        assert!(element_count(&[3, 0]).unwrap_err().contains("zero-sized"));
    }
}
