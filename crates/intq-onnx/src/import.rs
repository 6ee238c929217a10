//! ONNX graph → [`Graph`]: topological order (a cycle is an error), constant folding of the shape
//! arithmetic exporters write (Shape, Gather, Unsqueeze, Squeeze, Concat, Constant, Cast, Slice and
//! arithmetic on constants), Identity and Dropout removed, MatMul + constant Add fused into
//! Linear, shapes inferred, and every op checked against what intq takes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use crate::ir::{Arith, Conv, ConvTranspose, Graph, Node, Op, Pool, Value, ValueId};
use crate::proto::{self, attribute_proto::AttributeType, tensor_proto, NodeProto};
use crate::read::{self, element_count, Const, Data, ModelFile, MAX_ELEMENTS, MAX_RANK};
use crate::OnnxError;

/// The most nodes a graph may have.
pub const MAX_NODES: usize = 1 << 20;

/// A name bound while walking the graph: a folded constant or an activation.
#[derive(Clone)]
enum Val {
    Const(Const),
    Act(ValueId),
}

/// Imports a decoded model.
pub fn import(file: &ModelFile) -> Result<Graph, OnnxError> {
    let g = file
        .proto
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Model("the model has no graph".into()))?;
    if g.node.len() > MAX_NODES {
        return Err(OnnxError::Model(format!(
            "{} nodes, more than {MAX_NODES}",
            g.node.len()
        )));
    }
    let producer = format!(
        "{} {}",
        file.proto.producer_name.as_deref().unwrap_or(""),
        file.proto.producer_version.as_deref().unwrap_or("")
    )
    .trim()
    .to_string();
    let mut b = Builder {
        opset: file.opset,
        env: HashMap::new(),
        graph: Graph {
            values: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            nodes: Vec::new(),
            opset: file.opset,
            producer,
        },
        uses: HashMap::new(),
    };
    let dir = file.dir.as_deref();
    for t in &g.initializer {
        let name = t.name.clone().unwrap_or_default();
        let c = read::tensor(t, dir)?;
        b.env.insert(name, Val::Const(c));
    }
    if !g.sparse_initializer.is_empty() {
        return Err(OnnxError::Model(
            "sparse initializers are not supported".into(),
        ));
    }
    for vi in &g.input {
        let name = vi.name.clone().unwrap_or_default();
        // Older exporters list initializers among the inputs too; those are constants.
        if b.env.contains_key(&name) {
            continue;
        }
        let shape = input_shape(vi)?;
        let id = b.new_value(name.clone(), shape);
        b.graph.inputs.push(id);
        b.env.insert(name, Val::Act(id));
    }
    if b.graph.inputs.is_empty() {
        return Err(OnnxError::Model(
            "the graph has no (non-constant) input".into(),
        ));
    }
    for n in &g.node {
        for i in n.input.iter().filter(|s| !s.is_empty()) {
            *b.uses.entry(i.clone()).or_default() += 1;
        }
    }
    for o in &g.output {
        *b.uses
            .entry(o.name.clone().unwrap_or_default())
            .or_default() += 1;
    }
    for idx in topo_order(&g.node, &b.env)? {
        b.node(&g.node[idx], dir)?;
    }
    for o in &g.output {
        let name = o.name.clone().unwrap_or_default();
        match b.env.get(&name) {
            Some(Val::Act(id)) => b.graph.outputs.push(*id),
            Some(Val::Const(_)) => {
                return Err(OnnxError::Model(format!(
                    "graph output {name:?} is a constant (it does not depend on the input)"
                )))
            }
            None => {
                return Err(OnnxError::Model(format!(
                    "graph output {name:?} is produced by no node"
                )))
            }
        }
    }
    if b.graph.outputs.is_empty() {
        return Err(OnnxError::Model("the graph has no output".into()));
    }
    let mut graph = b.graph;
    prune(&mut graph);
    check_softmax_trailing(&graph)?;
    Ok(graph)
}

/// A graph input's shape: float, dimension 0 the batch (any value or a symbol), the others fixed.
fn input_shape(vi: &proto::ValueInfoProto) -> Result<Vec<usize>, OnnxError> {
    let name = vi.name.clone().unwrap_or_default();
    let err = |msg: String| OnnxError::Model(format!("graph input {name:?}: {msg}"));
    let tensor = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(proto::type_proto::Value::TensorType(t)) => t,
        _ => return Err(err("not a tensor".into())),
    };
    if tensor.elem_type != Some(tensor_proto::DataType::Float as i32) {
        return Err(err(format!(
            "element type {} (intq imports float32 inputs)",
            tensor_proto::DataType::try_from(tensor.elem_type.unwrap_or(0))
                .map(|d| d.as_str_name())
                .unwrap_or("unknown")
        )));
    }
    let dims = &tensor
        .shape
        .as_ref()
        .ok_or_else(|| err("no shape".into()))?
        .dim;
    if dims.is_empty() || dims.len() > MAX_RANK {
        return Err(err(format!(
            "rank {} (intq takes a batch dimension and up to {} more)",
            dims.len(),
            MAX_RANK - 1
        )));
    }
    let mut shape = vec![1];
    for (k, d) in dims.iter().enumerate().skip(1) {
        use proto::tensor_shape_proto::dimension::Value as V;
        match d.value {
            Some(V::DimValue(v)) if v > 0 => shape.push(v as usize),
            Some(V::DimParam(ref p)) => {
                return Err(err(format!(
                    "dimension {k} is the symbol {p:?}; only dimension 0 (the batch) may vary \
                     (re-export with a fixed input size)"
                )))
            }
            _ => return Err(err(format!("dimension {k} is not a positive size"))),
        }
    }
    element_count(&shape).ok_or_else(|| err(format!("shape {shape:?} is too large")))?;
    Ok(shape)
}

/// Node indices in an order where every input is produced before use; a cycle, a duplicate
/// output or an input nothing produces is an error naming the node.
fn topo_order(nodes: &[NodeProto], env: &HashMap<String, Val>) -> Result<Vec<usize>, OnnxError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|s| !s.is_empty()) {
            if env.contains_key(o.as_str()) || producer.insert(o, i).is_some() {
                return Err(node_err(
                    n,
                    i,
                    None,
                    format!(
                        "output {o:?} is also produced elsewhere (a name must be assigned once)"
                    ),
                ));
            }
        }
    }
    let mut pending = vec![0usize; nodes.len()];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for inp in n.input.iter().filter(|s| !s.is_empty()) {
            if let Some(&p) = producer.get(inp.as_str()) {
                pending[i] += 1;
                consumers[p].push(i);
            } else if !env.contains_key(inp.as_str()) {
                return Err(node_err(
                    n,
                    i,
                    None,
                    format!(
                        "input {inp:?} is not produced by any node, graph input or initializer"
                    ),
                ));
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..nodes.len()).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &c in &consumers[i] {
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.push_back(c);
            }
        }
    }
    if order.len() != nodes.len() {
        let i = (0..nodes.len()).find(|&i| pending[i] > 0).unwrap_or(0);
        return Err(node_err(
            &nodes[i],
            i,
            None,
            "is part of a cycle (its inputs depend on its own output)".into(),
        ));
    }
    Ok(order)
}

fn node_name(n: &NodeProto, index: usize) -> String {
    match n.name.as_deref() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => format!("#{index}"),
    }
}

fn node_err(n: &NodeProto, index: usize, attr: Option<&str>, msg: String) -> OnnxError {
    OnnxError::Node {
        node: node_name(n, index),
        op: n.op_type.clone().unwrap_or_default(),
        attr: attr.map(str::to_string),
        msg,
    }
}

/// Removes nodes no graph output depends on (shape arithmetic already folded away, unused
/// branches).
fn prune(g: &mut Graph) {
    let mut live: HashSet<ValueId> = g.outputs.iter().copied().collect();
    let mut keep = vec![false; g.nodes.len()];
    for (k, n) in g.nodes.iter().enumerate().rev() {
        if live.contains(&n.output) {
            keep[k] = true;
            live.extend(n.inputs.iter().copied());
        }
    }
    let mut k = 0;
    g.nodes.retain(|_| {
        k += 1;
        keep[k - 1]
    });
}

/// Softmax and LogSoftmax may only feed graph outputs: they are kept for inference and left out
/// of training's loss, so nothing trained may depend on them.
fn check_softmax_trailing(g: &Graph) -> Result<(), OnnxError> {
    for n in &g.nodes {
        if matches!(n.op, Op::Softmax { .. }) {
            if let Some(user) = g.nodes.iter().find(|u| u.inputs.contains(&n.output)) {
                return Err(OnnxError::Node {
                    node: n.name.clone(),
                    op: n.onnx_op.clone(),
                    attr: None,
                    msg: format!(
                        "feeds node {:?} ({}); intq takes Softmax only as the graph's last op",
                        user.name, user.onnx_op
                    ),
                });
            }
        }
    }
    Ok(())
}

struct Builder {
    opset: i64,
    env: HashMap<String, Val>,
    graph: Graph,
    /// How many node inputs and graph outputs read each name.
    uses: HashMap<String, usize>,
}

/// A node being imported, for attribute access and errors.
struct Ctx<'a> {
    n: &'a NodeProto,
    name: String,
    op: String,
}

impl Ctx<'_> {
    fn err(&self, msg: impl Into<String>) -> OnnxError {
        OnnxError::Node {
            node: self.name.clone(),
            op: self.op.clone(),
            attr: None,
            msg: msg.into(),
        }
    }

    fn attr_err(&self, attr: &str, msg: impl Into<String>) -> OnnxError {
        OnnxError::Node {
            node: self.name.clone(),
            op: self.op.clone(),
            attr: Some(attr.to_string()),
            msg: msg.into(),
        }
    }

    /// Refuses any attribute not in `known`: one intq does not read could change the result.
    fn only_attrs(&self, known: &[&str]) -> Result<(), OnnxError> {
        for a in &self.n.attribute {
            let name = a.name.as_deref().unwrap_or("");
            if !known.contains(&name) {
                return Err(self.attr_err(name, "is not supported by intq for this op"));
            }
        }
        Ok(())
    }

    fn attr(&self, name: &str) -> Option<&proto::AttributeProto> {
        self.n
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }

    fn int(&self, name: &str) -> Result<Option<i64>, OnnxError> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.r#type == Some(AttributeType::Int as i32) || a.i.is_some() => {
                Ok(Some(a.i.unwrap_or(0)))
            }
            Some(_) => Err(self.attr_err(name, "should be an integer")),
        }
    }

    fn float(&self, name: &str) -> Result<Option<f32>, OnnxError> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.r#type == Some(AttributeType::Float as i32) || a.f.is_some() => {
                Ok(Some(a.f.unwrap_or(0.0)))
            }
            Some(_) => Err(self.attr_err(name, "should be a float")),
        }
    }

    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, OnnxError> {
        match self.attr(name) {
            None => Ok(None),
            Some(a)
                if a.r#type == Some(AttributeType::Ints as i32)
                    || a.r#type.is_none()
                    || !a.ints.is_empty() =>
            {
                if a.ints.len() > MAX_RANK * 2 {
                    return Err(self.attr_err(name, format!("{} values", a.ints.len())));
                }
                Ok(Some(a.ints.clone()))
            }
            Some(_) => Err(self.attr_err(name, "should be a list of integers")),
        }
    }

    fn string(&self, name: &str) -> Result<Option<String>, OnnxError> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => match &a.s {
                Some(s) => Ok(Some(String::from_utf8_lossy(s).into_owned())),
                None => Err(self.attr_err(name, "should be a string")),
            },
        }
    }

    /// A list attribute of exactly `len` positive values, or `default` when absent.
    fn positive_pair(&self, name: &str, default: usize) -> Result<[usize; 2], OnnxError> {
        match self.ints(name)? {
            None => Ok([default; 2]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| (1..=1 << 16).contains(&x)) => {
                Ok([v[0] as usize, v[1] as usize])
            }
            Some(v) => Err(self.attr_err(
                name,
                format!("{v:?}: intq takes two positive values (2-D ops only)"),
            )),
        }
    }
}

/// A spatial output size and padding for one dimension.
fn window_out(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad: (usize, usize),
    ceil: bool,
) -> Option<usize> {
    let span = dilation.checked_mul(kernel - 1)? + 1;
    let padded = input.checked_add(pad.0)?.checked_add(pad.1)?;
    if padded < span {
        return None;
    }
    let mut out = if ceil {
        (padded - span).div_ceil(stride) + 1
    } else {
        (padded - span) / stride + 1
    };
    // A window may not start in the trailing padding (ONNX Runtime, PyTorch).
    if ceil && (out - 1) * stride >= input + pad.0 {
        out -= 1;
    }
    Some(out)
}

impl Builder {
    fn new_value(&mut self, name: String, shape: Vec<usize>) -> ValueId {
        self.graph.values.push(Value { name, shape });
        self.graph.values.len() - 1
    }

    fn push(
        &mut self,
        cx: &Ctx,
        op: Op,
        inputs: Vec<ValueId>,
        shape: Vec<usize>,
    ) -> Result<(), OnnxError> {
        if element_count(&shape).is_none() {
            return Err(cx.err(format!(
                "output shape {shape:?} has more than {MAX_ELEMENTS} elements per image"
            )));
        }
        let out_name = cx.n.output.first().cloned().unwrap_or_default();
        let id = self.new_value(out_name.clone(), shape);
        self.graph.nodes.push(Node {
            name: cx.name.clone(),
            onnx_op: cx.op.clone(),
            op,
            inputs,
            output: id,
        });
        self.env.insert(out_name, Val::Act(id));
        Ok(())
    }

    /// Input `k`, if present and non-empty.
    fn input(&self, cx: &Ctx, k: usize) -> Option<Val> {
        let name = cx.n.input.get(k).filter(|s| !s.is_empty())?;
        self.env.get(name).cloned()
    }

    fn act(&self, cx: &Ctx, k: usize) -> Result<ValueId, OnnxError> {
        match self.input(cx, k) {
            Some(Val::Act(id)) => Ok(id),
            Some(Val::Const(_)) => Err(cx.err(format!(
                "input {k} ({:?}) is a constant; intq takes an activation there",
                cx.n.input[k]
            ))),
            None => Err(cx.err(format!("input {k} is missing"))),
        }
    }

    fn constant(&self, cx: &Ctx, k: usize, what: &str) -> Result<Option<Const>, OnnxError> {
        match self.input(cx, k) {
            Some(Val::Const(c)) => Ok(Some(c)),
            Some(Val::Act(_)) => Err(cx.err(format!(
                "input {k} ({what}, {:?}) is computed from the model's input; intq takes a \
                 constant there",
                cx.n.input[k]
            ))),
            None => Ok(None),
        }
    }

    fn required_const(&self, cx: &Ctx, k: usize, what: &str) -> Result<Const, OnnxError> {
        self.constant(cx, k, what)?
            .ok_or_else(|| cx.err(format!("input {k} ({what}) is missing")))
    }

    fn shape(&self, id: ValueId) -> Vec<usize> {
        self.graph.values[id].shape.clone()
    }

    fn bind(&mut self, cx: &Ctx, v: Val) {
        if let Some(o) = cx.n.output.first() {
            self.env.insert(o.clone(), v);
        }
    }

    fn node(&mut self, n: &NodeProto, dir: Option<&Path>) -> Result<(), OnnxError> {
        let index = self.graph.nodes.len();
        let cx = Ctx {
            n,
            name: node_name(n, index),
            op: n.op_type.clone().unwrap_or_default(),
        };
        match n.domain.as_deref().unwrap_or("") {
            "" | "ai.onnx" => {}
            d => return Err(cx.err(format!("domain {d:?} is not supported"))),
        }
        if n.output.iter().filter(|o| !o.is_empty()).count() > 1
            && !matches!(cx.op.as_str(), "Dropout" | "BatchNormalization" | "MaxPool")
        {
            return Err(cx.err("has several outputs; intq takes one"));
        }
        // Extra outputs (BN's training statistics, Dropout's mask, MaxPool's indices) must be
        // unused: intq computes only the first.
        for o in n.output.iter().skip(1).filter(|o| !o.is_empty()) {
            if self.uses.get(o).copied().unwrap_or(0) > 0 {
                return Err(cx.err(format!(
                    "its output {o:?} is used; intq computes only the first output"
                )));
            }
        }
        let all_const = n
            .input
            .iter()
            .filter(|s| !s.is_empty())
            .all(|s| matches!(self.env.get(s), Some(Val::Const(_))));
        match cx.op.as_str() {
            "Constant" => {
                let c = constant_node(&cx, dir)?;
                self.bind(&cx, Val::Const(c));
            }
            "Identity" => {
                cx.only_attrs(&[])?;
                let v = self
                    .input(&cx, 0)
                    .ok_or_else(|| cx.err("input 0 is missing"))?;
                self.bind(&cx, v);
            }
            "Dropout" => {
                cx.only_attrs(&["seed", "ratio", "is_test"])?;
                if let Some(t) = self.constant(&cx, 2, "training_mode")? {
                    if t.to_i64().is_some_and(|v| v.iter().any(|&x| x != 0)) {
                        return Err(cx.err("training_mode is true; intq imports inference graphs"));
                    }
                }
                let v = self
                    .input(&cx, 0)
                    .ok_or_else(|| cx.err("input 0 is missing"))?;
                self.bind(&cx, v);
            }
            "Shape" => {
                cx.only_attrs(&["start", "end"])?;
                let dims: Vec<usize> = match self.input(&cx, 0) {
                    Some(Val::Act(id)) => self.shape(id),
                    Some(Val::Const(c)) => c.dims,
                    None => return Err(cx.err("input 0 is missing")),
                };
                let r = dims.len() as i64;
                let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let start = clampi(cx.int("start")?.unwrap_or(0));
                let end = clampi(cx.int("end")?.unwrap_or(r));
                let v: Vec<i64> = dims[start..end.max(start)]
                    .iter()
                    .map(|&d| d as i64)
                    .collect();
                let len = v.len();
                self.bind(&cx, Val::Const(Const::i64(vec![len], v)));
            }
            "Gather" | "Unsqueeze" | "Squeeze" | "Cast" | "Slice" | "Sub" | "Mul" | "Div"
            | "ConstantOfShape" | "Range" | "Transpose"
                if all_const =>
            {
                let c = self.fold(&cx)?;
                self.bind(&cx, Val::Const(c));
            }
            "Concat" if all_const => {
                let c = self.fold(&cx)?;
                self.bind(&cx, Val::Const(c));
            }
            "Add" if all_const => {
                let c = self.fold(&cx)?;
                self.bind(&cx, Val::Const(c));
            }
            "Reshape" if all_const => {
                let c = self.fold(&cx)?;
                self.bind(&cx, Val::Const(c));
            }
            "Cast" => {
                cx.only_attrs(&["to", "saturate", "round_mode"])?;
                let to = cx.int("to")?.unwrap_or(0);
                if to != tensor_proto::DataType::Float as i32 as i64 {
                    return Err(cx.attr_err(
                        "to",
                        "casts an activation to a non-float type; intq runs float activations",
                    ));
                }
                let v = Val::Act(self.act(&cx, 0)?);
                self.bind(&cx, v);
            }
            "Conv" => self.conv(&cx)?,
            "BatchNormalization" => self.batch_norm(&cx)?,
            "Relu" => {
                cx.only_attrs(&[])?;
                let x = self.act(&cx, 0)?;
                let s = self.shape(x);
                self.push(&cx, Op::Relu, vec![x], s)?;
            }
            "HardSigmoid" => {
                cx.only_attrs(&["alpha", "beta"])?;
                let alpha = cx.float("alpha")?.unwrap_or(0.2);
                let beta = cx.float("beta")?.unwrap_or(0.5);
                let x = self.act(&cx, 0)?;
                let s = self.shape(x);
                self.push(&cx, Op::HardSigmoid { alpha, beta }, vec![x], s)?;
            }
            "HardSwish" | "Sigmoid" => {
                cx.only_attrs(&[])?;
                let x = self.act(&cx, 0)?;
                let s = self.shape(x);
                let op = if cx.op == "Sigmoid" {
                    Op::Sigmoid
                } else {
                    Op::HardSwish
                };
                self.push(&cx, op, vec![x], s)?;
            }
            "Clip" => {
                cx.only_attrs(&[])?;
                let x = self.act(&cx, 0)?;
                let scalar = |c: Option<Const>, what: &str| -> Result<Option<f32>, OnnxError> {
                    match c {
                        None => Ok(None),
                        Some(c) if c.data.len() == 1 => Ok(Some(c.to_f32()[0])),
                        Some(_) => Err(cx.err(format!("{what} is not a scalar"))),
                    }
                };
                let min =
                    scalar(self.constant(&cx, 1, "min")?, "min")?.unwrap_or(f32::NEG_INFINITY);
                let max = scalar(self.constant(&cx, 2, "max")?, "max")?.unwrap_or(f32::INFINITY);
                if min.is_nan() || max.is_nan() || min > max {
                    return Err(cx.err(format!("bounds [{min}, {max}] are not a range")));
                }
                let s = self.shape(x);
                self.push(&cx, Op::Clip { min, max }, vec![x], s)?;
            }
            "Add" => self.add(&cx)?,
            "Mul" => self.mul(&cx)?,
            "Sub" => match (self.input(&cx, 0), self.input(&cx, 1)) {
                (Some(Val::Act(a)), Some(Val::Act(b))) => {
                    cx.only_attrs(&[])?;
                    let (sa, sb) = (self.shape(a), self.shape(b));
                    if sa != sb {
                        return Err(cx.err(format!(
                            "subtracts shapes {sa:?} and {sb:?}; intq subtracts activations of \
                             one shape"
                        )));
                    }
                    self.push(&cx, Op::Sub, vec![a, b], sa)?;
                }
                _ => self.const_arith(&cx, Arith::Sub)?,
            },
            "LeakyRelu" => {
                cx.only_attrs(&["alpha"])?;
                let alpha = cx.float("alpha")?.unwrap_or(0.01);
                if !alpha.is_finite() {
                    return Err(cx.attr_err("alpha", format!("{alpha} is not finite")));
                }
                let x = self.act(&cx, 0)?;
                let s = self.shape(x);
                self.push(&cx, Op::LeakyRelu { alpha }, vec![x], s)?;
            }
            "Resize" => self.resize(&cx)?,
            "Max" | "Min" => self.max_min(&cx)?,
            "PRelu" => {
                cx.only_attrs(&[])?;
                let x = self.act(&cx, 0)?;
                let c = self.required_const(&cx, 1, "slope")?;
                let s = self.shape(x);
                let channels = s.get(1).copied().unwrap_or(1);
                let pad = s.len().saturating_sub(c.dims.len());
                let per_channel = c.dims.len() <= s.len()
                    && c.data.len() == channels
                    && c.dims
                        .iter()
                        .enumerate()
                        .all(|(k, &d)| d == 1 || (k + pad == 1 && d == channels));
                if !(c.data.len() == 1 && c.dims.len() <= s.len() || per_channel) {
                    return Err(cx.err(format!(
                        "slope of shape {:?} on {s:?}; intq takes one slope or one per channel \
                         (axis 1)",
                        c.dims
                    )));
                }
                let slope = c.to_f32();
                if slope.iter().any(|v| !v.is_finite()) {
                    return Err(cx.err("a slope is not finite"));
                }
                self.push(&cx, Op::Prelu { slope }, vec![x], s)?;
            }
            "Transpose" => {
                cx.only_attrs(&["perm"])?;
                let x = self.act(&cx, 0)?;
                let s = self.shape(x);
                let perm: Vec<usize> = match cx.ints("perm")? {
                    Some(p) => p
                        .iter()
                        .map(|&a| norm_axis(&cx, "perm", Some(a), s.len()))
                        .collect::<Result<_, _>>()?,
                    None => (0..s.len()).rev().collect(),
                };
                let mut seen = perm.clone();
                seen.sort();
                if seen != (0..s.len()).collect::<Vec<_>>() || perm.first() != Some(&0) {
                    return Err(cx.attr_err(
                        "perm",
                        format!(
                            "{perm:?} on {s:?}: intq takes a permutation that keeps the batch \
                             first"
                        ),
                    ));
                }
                let out = perm.iter().map(|&a| s[a]).collect();
                self.push(&cx, Op::Transpose { perm }, vec![x], out)?;
            }
            "Tanh" => {
                cx.only_attrs(&[])?;
                let x = self.act(&cx, 0)?;
                let s = self.shape(x);
                self.push(&cx, Op::Tanh, vec![x], s)?;
            }
            "Div" => self.const_arith(&cx, Arith::Div)?,
            "Concat" => {
                cx.only_attrs(&["axis"])?;
                let mut ins = Vec::new();
                for k in 0..n.input.len() {
                    ins.push(self.act(&cx, k)?);
                }
                if ins.is_empty() {
                    return Err(cx.err("has no inputs"));
                }
                let first = self.shape(ins[0]);
                let axis = norm_axis(&cx, "axis", cx.int("axis")?, first.len())?;
                if axis == 0 {
                    return Err(cx.attr_err("axis", "joins along the batch dimension"));
                }
                let mut out = first.clone();
                out[axis] = 0;
                for &i in &ins {
                    let s = self.shape(i);
                    if s.len() != first.len()
                        || s.iter()
                            .zip(&first)
                            .enumerate()
                            .any(|(d, (a, b))| d != axis && a != b)
                    {
                        return Err(cx.err(format!(
                            "input shapes {:?} and {:?} differ outside axis {axis}",
                            first, s
                        )));
                    }
                    out[axis] += s[axis];
                }
                self.push(&cx, Op::Concat { axis }, ins, out)?;
            }
            "GlobalAveragePool" => {
                cx.only_attrs(&[])?;
                let x = self.act(&cx, 0)?;
                let s = self.shape(x);
                if s.len() != 4 {
                    return Err(cx.err(format!("input shape {s:?} is not NCHW")));
                }
                self.push(&cx, Op::GlobalAveragePool, vec![x], vec![s[0], s[1], 1, 1])?;
            }
            "ReduceMean" => self.reduce_mean(&cx)?,
            "AveragePool" | "MaxPool" => self.pool(&cx)?,
            "Flatten" => {
                cx.only_attrs(&["axis"])?;
                let x = self.act(&cx, 0)?;
                let s = self.shape(x);
                let axis = match cx.int("axis")?.unwrap_or(1) {
                    a if a < 0 => a + s.len() as i64,
                    a => a,
                };
                if axis < 1
                    || axis as usize > s.len()
                    || s[1..axis as usize].iter().any(|&d| d != 1)
                {
                    return Err(cx.attr_err(
                        "axis",
                        format!("flattening {s:?} at axis {axis} would merge the batch dimension"),
                    ));
                }
                let rest: usize = s[axis as usize..].iter().product();
                self.push(&cx, Op::Flatten, vec![x], vec![s[0], rest])?;
            }
            "Squeeze" | "Unsqueeze" => {
                // Of an activation: a reshape that adds or drops dimensions of size 1 (tf2onnx's
                // Squeeze after a global average pool), never the batch's.
                cx.only_attrs(&["axes"])?;
                let x = self.act(&cx, 0)?;
                let s = self.shape(x);
                let axes = match (cx.ints("axes")?, self.constant(&cx, 1, "axes")?) {
                    (Some(a), None) => Some(a),
                    (None, Some(c)) => {
                        Some(c.to_i64().ok_or_else(|| cx.err("axes is not integral"))?)
                    }
                    (None, None) => None,
                    (Some(_), Some(_)) => {
                        return Err(cx.attr_err("axes", "is given as an attribute and an input"))
                    }
                };
                let out: Vec<usize> = if cx.op == "Squeeze" {
                    match axes {
                        // Every dimension of size 1 but the batch.
                        None => std::iter::once(s[0])
                            .chain(s[1..].iter().copied().filter(|&d| d != 1))
                            .collect(),
                        Some(axes) => {
                            let axes: Vec<usize> = axes
                                .iter()
                                .map(|&a| norm_axis(&cx, "axes", Some(a), s.len()))
                                .collect::<Result<_, _>>()?;
                            if axes.iter().any(|&a| a == 0 || s[a] != 1) {
                                return Err(cx.attr_err(
                                    "axes",
                                    format!(
                                        "{axes:?} on {s:?}: intq squeezes dimensions of size 1 \
                                         other than the batch"
                                    ),
                                ));
                            }
                            (0..s.len())
                                .filter(|d| !axes.contains(d))
                                .map(|d| s[d])
                                .collect()
                        }
                    }
                } else {
                    let axes = axes.ok_or_else(|| cx.attr_err("axes", "is missing"))?;
                    let r = s.len() + axes.len();
                    let mut axes: Vec<usize> = axes
                        .iter()
                        .map(|&a| norm_axis(&cx, "axes", Some(a), r))
                        .collect::<Result<_, _>>()?;
                    axes.sort();
                    let mut dims = s.clone();
                    for a in axes {
                        if a == 0 || a > dims.len() {
                            return Err(cx.attr_err(
                                "axes",
                                format!("inserts dimension {a} of {r}; intq keeps the batch first"),
                            ));
                        }
                        dims.insert(a, 1);
                    }
                    dims
                };
                if out.len() > MAX_RANK {
                    return Err(cx.err(format!("result rank {} is above {MAX_RANK}", out.len())));
                }
                let op = if out.len() == 2 {
                    Op::Flatten
                } else {
                    Op::Reshape {
                        shape: out[1..].to_vec(),
                    }
                };
                self.push(&cx, op, vec![x], out)?;
            }
            "Reshape" => {
                cx.only_attrs(&["allowzero"])?;
                let x = self.act(&cx, 0)?;
                let target = self.required_const(&cx, 1, "shape")?;
                let target = target
                    .to_i64()
                    .ok_or_else(|| cx.err("shape is not integral"))?;
                let s = self.shape(x);
                let allowzero = cx.int("allowzero")?.unwrap_or(0) != 0;
                let out = reshape_dims(&s, &target, allowzero).map_err(|m| cx.err(m))?;
                if out.first() != Some(&1) {
                    return Err(cx.err(format!(
                        "reshapes {s:?} to {out:?}, which moves the batch dimension (intq keeps \
                         dimension 0 as the batch; a reshape to [1, ...] or [-1, ...] keeps it)"
                    )));
                }
                let op = if out.len() == 2 {
                    Op::Flatten
                } else {
                    Op::Reshape {
                        shape: out[1..].to_vec(),
                    }
                };
                self.push(&cx, op, vec![x], out)?;
            }
            "Gemm" => self.gemm(&cx)?,
            "MatMul" => self.matmul(&cx)?,
            "Pad" => self.pad(&cx)?,
            "Softmax" | "LogSoftmax" => {
                cx.only_attrs(&["axis"])?;
                let x = self.act(&cx, 0)?;
                let s = self.shape(x);
                let coerce_2d = self.opset < 13;
                let default = if coerce_2d { 1 } else { -1 };
                let axis = norm_axis(
                    &cx,
                    "axis",
                    Some(cx.int("axis")?.unwrap_or(default)),
                    s.len(),
                )?;
                if axis == 0 {
                    return Err(cx.attr_err("axis", "normalizes over the batch dimension"));
                }
                let log = cx.op == "LogSoftmax";
                self.push(
                    &cx,
                    Op::Softmax {
                        axis,
                        log,
                        coerce_2d,
                    },
                    vec![x],
                    s,
                )?;
            }
            "ConvTranspose" => self.conv_transpose(&cx)?,
            other => {
                return Err(cx.err(format!(
                    "op {other} is not supported by intq (supported: Conv, ConvTranspose, \
                     BatchNormalization, \
                     Relu, Clip, LeakyRelu, HardSwish, Sigmoid, Tanh, Add, Sub, Mul, Div, Concat, \
                     Resize (nearest, linear), Transpose, PRelu, Max/Min, \
                     GlobalAveragePool, ReduceMean, AveragePool, MaxPool, Flatten, Reshape, Gemm, \
                     MatMul, Pad, Softmax, LogSoftmax, and shape arithmetic on constants)"
                )))
            }
        }
        Ok(())
    }

    fn conv(&mut self, cx: &Ctx) -> Result<(), OnnxError> {
        cx.only_attrs(&[
            "kernel_shape",
            "strides",
            "dilations",
            "pads",
            "auto_pad",
            "group",
        ])?;
        let x = self.act(cx, 0)?;
        let s = self.shape(x);
        if s.len() != 4 {
            return Err(cx.err(format!(
                "input shape {s:?} is not NCHW (intq takes 2-D convolutions)"
            )));
        }
        let w = self.required_const(cx, 1, "weight")?;
        if w.dims.len() != 4 {
            return Err(cx.err(format!("weight shape {:?} is not OIHW", w.dims)));
        }
        let wd = [w.dims[0], w.dims[1], w.dims[2], w.dims[3]];
        if let Some(k) = cx.ints("kernel_shape")? {
            if k.len() != 2 || k[0] as usize != wd[2] || k[1] as usize != wd[3] {
                return Err(cx.attr_err(
                    "kernel_shape",
                    format!("{k:?} does not match the weight {wd:?}"),
                ));
            }
        }
        let groups = cx.int("group")?.unwrap_or(1);
        if groups < 1
            || !s[1].is_multiple_of(groups as usize)
            || !wd[0].is_multiple_of(groups as usize)
        {
            return Err(cx.attr_err(
                "group",
                format!(
                    "{groups} does not divide {} input and {} output channels",
                    s[1], wd[0]
                ),
            ));
        }
        let groups = groups as usize;
        if wd[1] * groups != s[1] {
            return Err(cx.err(format!(
                "weight {wd:?} with group {groups} takes {} input channels, the input has {}",
                wd[1] * groups,
                s[1]
            )));
        }
        if wd.contains(&0) {
            return Err(cx.err(format!("weight shape {wd:?} is empty")));
        }
        let bias = match self.constant(cx, 2, "bias")? {
            None => None,
            Some(b) if b.data.len() == wd[0] => Some(b.to_f32()),
            Some(b) => {
                return Err(cx.err(format!(
                    "bias has {} values for {} output channels",
                    b.data.len(),
                    wd[0]
                )))
            }
        };
        let stride = cx.positive_pair("strides", 1)?;
        let dilation = cx.positive_pair("dilations", 1)?;
        let kernel = [wd[2], wd[3]];
        let (pads, out) = self.spatial(cx, &s, kernel, stride, dilation, false)?;
        let weight = match w.data {
            Data::F32(v) => v,
            Data::I64(_) => return Err(cx.err("weight is not float")),
        };
        let op = Op::Conv(Conv {
            weight,
            weight_dims: wd,
            bias,
            stride,
            dilation,
            pads,
            groups,
        });
        self.push(cx, op, vec![x], vec![s[0], wd[0], out[0], out[1]])
    }

    /// ONNX ConvTranspose, group 1 and dilation 1 (the engine's TRANSPOSE_CONV has neither):
    /// `pads`, `output_padding`, `auto_pad` and `output_shape` resolved to the rows and columns cut
    /// from the full output `stride (in - 1) + output_padding + kernel`.
    fn conv_transpose(&mut self, cx: &Ctx) -> Result<(), OnnxError> {
        cx.only_attrs(&[
            "kernel_shape",
            "strides",
            "dilations",
            "pads",
            "auto_pad",
            "group",
            "output_padding",
            "output_shape",
        ])?;
        let x = self.act(cx, 0)?;
        let s = self.shape(x);
        if s.len() != 4 {
            return Err(cx.err(format!(
                "input shape {s:?} is not NCHW (intq takes 2-D transposed convolutions)"
            )));
        }
        let groups = cx.int("group")?.unwrap_or(1);
        if groups != 1 {
            return Err(cx.attr_err(
                "group",
                format!("is {groups}; intq's transposed convolution takes group 1"),
            ));
        }
        let dilation = cx.positive_pair("dilations", 1)?;
        if dilation != [1, 1] {
            return Err(cx.attr_err(
                "dilations",
                format!(
                    "is {dilation:?}; intq's transposed convolution (TFLite's TRANSPOSE_CONV) has \
                     no dilation"
                ),
            ));
        }
        let w = self.required_const(cx, 1, "weight")?;
        if w.dims.len() != 4 {
            return Err(cx.err(format!("weight shape {:?} is not IOHW", w.dims)));
        }
        let wd = [w.dims[0], w.dims[1], w.dims[2], w.dims[3]];
        if wd.contains(&0) {
            return Err(cx.err(format!("weight shape {wd:?} is empty")));
        }
        if wd[0] != s[1] {
            return Err(cx.err(format!(
                "weight {wd:?} takes {} input channels, the input has {}",
                wd[0], s[1]
            )));
        }
        if let Some(k) = cx.ints("kernel_shape")? {
            if k.len() != 2 || k[0] as usize != wd[2] || k[1] as usize != wd[3] {
                return Err(cx.attr_err(
                    "kernel_shape",
                    format!("{k:?} does not match the weight {wd:?}"),
                ));
            }
        }
        let bias = match self.constant(cx, 2, "bias")? {
            None => None,
            Some(b) if b.data.len() == wd[1] => Some(b.to_f32()),
            Some(b) => {
                return Err(cx.err(format!(
                    "bias has {} values for {} output channels",
                    b.data.len(),
                    wd[1]
                )))
            }
        };
        let stride = cx.positive_pair("strides", 1)?;
        let kernel = [wd[2], wd[3]];
        let output_padding = match cx.ints("output_padding")? {
            None => [0, 0],
            Some(v) if v.len() == 2 && (0..2).all(|d| v[d] >= 0 && (v[d] as usize) < stride[d]) => {
                [v[0] as usize, v[1] as usize]
            }
            Some(v) => {
                return Err(cx.attr_err(
                    "output_padding",
                    format!("{v:?}: intq takes two values, each below its stride {stride:?}"),
                ))
            }
        };
        // The full output before any cut.
        let full = [0, 1].map(|d| stride[d] * (s[2 + d] - 1) + output_padding[d] + kernel[d]);
        let auto = cx.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
        let target = match cx.ints("output_shape")? {
            None => None,
            Some(v) if v.len() == 2 && v.iter().all(|&d| (1..=1 << 16).contains(&d)) => {
                Some([v[0] as usize, v[1] as usize])
            }
            Some(v) => {
                return Err(cx.attr_err(
                    "output_shape",
                    format!("{v:?}: intq takes the output's height and width"),
                ))
            }
        };
        let mut pads = [0usize; 4];
        match (auto.as_str(), target) {
            (_, Some(_)) | ("SAME_UPPER" | "SAME_LOWER", None) => {
                if cx.ints("pads")?.is_some() && target.is_some() {
                    return Err(cx.attr_err(
                        "output_shape",
                        "is given together with pads; intq takes one of them",
                    ));
                }
                let t = target.unwrap_or([s[2] * stride[0], s[3] * stride[1]]);
                for d in 0..2 {
                    // auto_pad cuts nothing where the full output is smaller than in * stride
                    // (as ONNX Runtime does); an output_shape beyond it is refused.
                    let total = match full[d].checked_sub(t[d]) {
                        None if target.is_none() => Some(0),
                        v => v,
                    };
                    let Some(total) = total else {
                        return Err(cx.attr_err(
                            if target.is_some() {
                                "output_shape"
                            } else {
                                "auto_pad"
                            },
                            format!(
                                "asks for an output of {} in dimension {}, more than the {} a \
                                 transposed convolution of this input gives (intq does not pad \
                                 its output)",
                                t[d],
                                d + 2,
                                full[d]
                            ),
                        ));
                    };
                    // SAME_UPPER cuts the larger half at the end; SAME_LOWER and an
                    // output_shape without auto_pad at the start (ONNX, ONNX Runtime).
                    let (small, big) = (total / 2, total - total / 2);
                    (pads[d], pads[d + 2]) = if auto == "SAME_UPPER" {
                        (small, big)
                    } else {
                        (big, small)
                    };
                }
            }
            ("NOTSET", None) => {
                if let Some(p) = cx.ints("pads")? {
                    if p.len() != 4 || !p.iter().all(|&v| (0..=1 << 16).contains(&v)) {
                        return Err(cx.attr_err(
                            "pads",
                            format!("{p:?}: intq takes four non-negative values"),
                        ));
                    }
                    pads = [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize];
                }
            }
            ("VALID", None) => {}
            (other, None) => {
                return Err(cx.attr_err(
                    "auto_pad",
                    format!("{other:?} is not an ONNX auto_pad value"),
                ))
            }
        }
        let mut out = [0; 2];
        for d in 0..2 {
            out[d] = full[d]
                .checked_sub(pads[d] + pads[d + 2])
                .filter(|&o| o > 0)
                .ok_or_else(|| {
                    cx.attr_err(
                        "pads",
                        format!(
                            "{:?} cut all of the {} outputs in dimension {}",
                            (pads[d], pads[d + 2]),
                            full[d],
                            d + 2
                        ),
                    )
                })?;
        }
        let weight = match w.data {
            Data::F32(v) => v,
            Data::I64(_) => return Err(cx.err("weight is not float")),
        };
        let op = Op::ConvTranspose(ConvTranspose {
            weight,
            weight_dims: wd,
            bias,
            stride,
            pads,
            output_padding,
        });
        self.push(cx, op, vec![x], vec![s[0], wd[1], out[0], out[1]])
    }

    /// Resolves `pads`/`auto_pad` to explicit `[top, left, bottom, right]` and the output size.
    fn spatial(
        &self,
        cx: &Ctx,
        s: &[usize],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        ceil: bool,
    ) -> Result<([usize; 4], [usize; 2]), OnnxError> {
        let auto = cx.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
        let explicit = cx.ints("pads")?;
        let pads: [usize; 4] = match auto.as_str() {
            "NOTSET" => match explicit {
                None => [0; 4],
                Some(p) if p.len() == 4 && p.iter().all(|&x| (0..=1 << 16).contains(&x)) => {
                    [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
                }
                Some(p) => {
                    return Err(cx.attr_err(
                        "pads",
                        format!("{p:?}: intq takes four non-negative values"),
                    ))
                }
            },
            "VALID" => [0; 4],
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut p = [0; 4];
                for d in 0..2 {
                    let out = s[2 + d].div_ceil(stride[d]);
                    let need = ((out - 1) * stride[d] + dilation[d] * (kernel[d] - 1) + 1)
                        .saturating_sub(s[2 + d]);
                    let (small, big) = (need / 2, need - need / 2);
                    if auto == "SAME_UPPER" {
                        (p[d], p[d + 2]) = (small, big);
                    } else {
                        (p[d], p[d + 2]) = (big, small);
                    }
                }
                p
            }
            other => {
                return Err(cx.attr_err(
                    "auto_pad",
                    format!("{other:?} is not an ONNX auto_pad value"),
                ))
            }
        };
        let mut out = [0; 2];
        for d in 0..2 {
            out[d] = window_out(
                s[2 + d],
                kernel[d],
                stride[d],
                dilation[d],
                (pads[d], pads[d + 2]),
                ceil,
            )
            .filter(|&o| o > 0)
            .ok_or_else(|| {
                cx.err(format!(
                    "a {}-wide window (dilation {}) does not fit input size {} padded by {:?}",
                    kernel[d],
                    dilation[d],
                    s[2 + d],
                    (pads[d], pads[d + 2])
                ))
            })?;
        }
        Ok((pads, out))
    }

    fn batch_norm(&mut self, cx: &Ctx) -> Result<(), OnnxError> {
        cx.only_attrs(&["epsilon", "momentum", "training_mode", "spatial"])?;
        if cx.int("training_mode")?.unwrap_or(0) != 0 {
            return Err(cx.attr_err("training_mode", "is 1; intq imports inference graphs"));
        }
        if cx.int("spatial")?.unwrap_or(1) != 1 {
            return Err(cx.attr_err("spatial", "is 0 (per-element statistics)"));
        }
        let x = self.act(cx, 0)?;
        let s = self.shape(x);
        if s.len() < 2 {
            return Err(cx.err(format!("input shape {s:?} has no channel dimension")));
        }
        let c = s[1];
        let mut p = Vec::new();
        for (k, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
            let t = self.required_const(cx, k, what)?;
            if t.data.len() != c {
                return Err(cx.err(format!(
                    "{what} has {} values for {c} channels",
                    t.data.len()
                )));
            }
            p.push(t.to_f32());
        }
        let epsilon = cx.float("epsilon")?.unwrap_or(1e-5);
        if !(epsilon >= 0.0 && epsilon.is_finite()) || p[3].iter().any(|&v| v.is_nan() || v < 0.0) {
            return Err(cx.err("epsilon or a variance is negative or not finite"));
        }
        let [scale, bias, mean, var] = <[Vec<f32>; 4]>::try_from(p).unwrap();
        self.push(
            cx,
            Op::BatchNorm {
                scale,
                bias,
                mean,
                var,
                epsilon,
            },
            vec![x],
            s,
        )
    }

    fn add(&mut self, cx: &Ctx) -> Result<(), OnnxError> {
        cx.only_attrs(&[])?;
        match (self.input(cx, 0), self.input(cx, 1)) {
            (Some(Val::Act(a)), Some(Val::Act(b))) => {
                let (sa, sb) = (self.shape(a), self.shape(b));
                if sa != sb {
                    return Err(cx.err(format!(
                        "adds shapes {sa:?} and {sb:?}; intq adds activations of one shape"
                    )));
                }
                self.push(cx, Op::Add, vec![a, b], sa)
            }
            (Some(Val::Act(a)), Some(Val::Const(c))) | (Some(Val::Const(c)), Some(Val::Act(a))) => {
                // MatMul + Add: the bias of a Linear with no bias of its own, read by nothing else.
                let src = self.graph.values[a].name.clone();
                let single_use = self.uses.get(&src).copied() == Some(1);
                let last = self.graph.nodes.last_mut();
                if let Some(node) = last.filter(|n| n.output == a && single_use) {
                    if let Op::Linear {
                        out_features,
                        bias: bias @ None,
                        ..
                    } = &mut node.op
                    {
                        if c.data.len() == *out_features
                            && c.dims.iter().rev().skip(1).all(|&d| d == 1)
                        {
                            *bias = Some(c.to_f32());
                            node.onnx_op.push_str("+Add");
                            let v = Val::Act(a);
                            self.bind(cx, v);
                            return Ok(());
                        }
                    }
                }
                self.const_arith(cx, Arith::Add)
            }
            _ => Err(cx.err("needs two inputs")),
        }
    }

    fn mul(&mut self, cx: &Ctx) -> Result<(), OnnxError> {
        cx.only_attrs(&[])?;
        let (Some(Val::Act(a)), Some(Val::Act(b))) = (self.input(cx, 0), self.input(cx, 1)) else {
            return self.const_arith(cx, Arith::Mul);
        };
        // x * HardSigmoid(x) (alpha 1/6, beta 1/2), the HardSigmoid read by nothing else: one
        // HardSwish.
        for (x, h) in [(a, b), (b, a)] {
            let src = self.graph.values[h].name.clone();
            let single_use = self.uses.get(&src).copied() == Some(1);
            let last = self.graph.nodes.last_mut();
            if let Some(node) = last.filter(|n| n.output == h && n.inputs == [x] && single_use) {
                if let Op::HardSigmoid { alpha, beta } = node.op {
                    if (alpha - 1.0 / 6.0).abs() <= 1e-6 && beta == 0.5 {
                        node.op = Op::HardSwish;
                        node.onnx_op.push_str("+Mul");
                        self.bind(cx, Val::Act(h));
                        return Ok(());
                    }
                }
            }
        }
        let (sa, sb) = (self.shape(a), self.shape(b));
        let per_channel =
            |big: &[usize], small: &[usize]| big.len() == 4 && small == [big[0], big[1], 1, 1];
        // The full-shape operand first: Mul commutes.
        let (x, y, s) = if sa == sb || per_channel(&sa, &sb) {
            (a, b, sa)
        } else if per_channel(&sb, &sa) {
            (b, a, sb)
        } else {
            return Err(cx.err(format!(
                "multiplies shapes {sa:?} and {sb:?}; intq takes one shape, or [N, C, H, W] by \
                 [N, C, 1, 1]"
            )));
        };
        self.push(cx, Op::Mul, vec![x, y], s)
    }

    /// An activation with a constant of one value, or one per channel (axis 1): the constant's
    /// shape, right-aligned to the activation's, is 1 everywhere but on the channel axis.
    fn const_arith(&mut self, cx: &Ctx, arith: Arith) -> Result<(), OnnxError> {
        cx.only_attrs(&[])?;
        let (x, c, reversed) = match (self.input(cx, 0), self.input(cx, 1)) {
            (Some(Val::Act(x)), Some(Val::Const(c))) => (x, c, false),
            (Some(Val::Const(c)), Some(Val::Act(x))) => (x, c, true),
            _ => return Err(cx.err("needs two inputs")),
        };
        let op = arith.name();
        if reversed && arith == Arith::Div {
            return Err(cx.err(
                "divides a constant by an activation; intq takes an activation divided by a \
                 constant",
            ));
        }
        let s = self.shape(x);
        let channels = s.get(1).copied().unwrap_or(1);
        let n = c.data.len();
        let rank_ok = c.dims.len() <= s.len();
        let pad = s.len().saturating_sub(c.dims.len());
        let per_channel = rank_ok
            && n == channels
            && c.dims
                .iter()
                .enumerate()
                .all(|(k, &d)| d == 1 || (k + pad == 1 && d == channels));
        if !(rank_ok && n == 1 || per_channel) {
            return Err(cx.err(format!(
                "{op} of an activation {s:?} and a constant {:?}; intq takes a constant of one \
                 value or one per channel (axis 1)",
                c.dims
            )));
        }
        let value = c.to_f32();
        if arith == Arith::Div && value.contains(&0.0) {
            return Err(cx.err("divides by a constant 0"));
        }
        if value.iter().any(|v| !v.is_finite()) {
            return Err(cx.err(format!("{op} by a constant that is not finite")));
        }
        self.push(
            cx,
            Op::ConstArith {
                arith,
                value,
                reversed,
            },
            vec![x],
            s,
        )
    }

    /// ONNX Resize of H and W, nearest mode: each output index's source index along its axis,
    /// from the coordinate transformation and the nearest mode; linear mode: each output
    /// index's source position; as ONNX Runtime computes them (in f32).
    fn resize(&mut self, cx: &Ctx) -> Result<(), OnnxError> {
        cx.only_attrs(&[
            "mode",
            "coordinate_transformation_mode",
            "nearest_mode",
            "cubic_coeff_a",
            "exclude_outside",
            "extrapolation_value",
        ])?;
        let mode = cx.string("mode")?.unwrap_or_else(|| "nearest".into());
        if mode != "nearest" && mode != "linear" {
            return Err(cx.attr_err(
                "mode",
                format!("{mode:?}; intq takes nearest-neighbour and linear Resize only"),
            ));
        }
        let x = self.act(cx, 0)?;
        let s = self.shape(x);
        if s.len() != 4 {
            return Err(cx.err(format!("input shape {s:?} is not NCHW")));
        }
        let scales = self
            .constant(cx, 2, "scales")?
            .map(|c| c.to_f32())
            .filter(|v| !v.is_empty());
        let sizes = self
            .constant(cx, 3, "sizes")?
            .and_then(|c| c.to_i64())
            .filter(|v| !v.is_empty());
        let (out, scale): (Vec<usize>, Vec<f32>) = match (scales, sizes) {
            (Some(sc), None) if sc.len() == 4 => {
                if sc.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                    return Err(cx.err(format!("scales {sc:?} are not positive")));
                }
                let out = s
                    .iter()
                    .zip(&sc)
                    .map(|(&d, &f)| (d as f32 * f).floor() as usize)
                    .collect();
                (out, sc)
            }
            (None, Some(sz)) if sz.len() == 4 => {
                if sz.iter().any(|&v| !(1..=1 << 16).contains(&v)) {
                    return Err(cx.err(format!("sizes {sz:?} are not positive")));
                }
                let out: Vec<usize> = sz.iter().map(|&v| v as usize).collect();
                let sc = out
                    .iter()
                    .zip(&s)
                    .map(|(&o, &i)| o as f32 / i as f32)
                    .collect();
                (out, sc)
            }
            _ => {
                return Err(cx.err(
                    "takes constant scales or sizes (one of them) with a value per dimension",
                ))
            }
        };
        if element_count(&out).is_none() {
            return Err(cx.err(format!(
                "output shape {out:?} has more than {MAX_ELEMENTS} elements per image"
            )));
        }
        if out[0] != s[0] || out[1] != s[1] || out[2] == 0 || out[3] == 0 {
            return Err(cx.err(format!(
                "resizes {s:?} to {out:?}; intq resizes H and W only"
            )));
        }
        let ctm = cx
            .string("coordinate_transformation_mode")?
            .unwrap_or_else(|| "half_pixel".into());
        let nearest = cx
            .string("nearest_mode")?
            .unwrap_or_else(|| "round_prefer_floor".into());
        let mut src = [Vec::new(), Vec::new()];
        let mut pos: [Vec<f32>; 2] = [Vec::new(), Vec::new()];
        for d in 0..2 {
            let (n_in, n_out, f) = (s[2 + d], out[2 + d], scale[2 + d]);
            for o in 0..n_out {
                let o = o as f32;
                let v = match ctm.as_str() {
                    "half_pixel" => (o + 0.5) / f - 0.5,
                    "pytorch_half_pixel" if n_out > 1 => (o + 0.5) / f - 0.5,
                    "pytorch_half_pixel" => 0.0,
                    "asymmetric" => o / f,
                    "tf_half_pixel_for_nn" => (o + 0.5) / f,
                    "align_corners" if n_out > 1 => o * (n_in as f32 - 1.0) / (n_out as f32 - 1.0),
                    "align_corners" => 0.0,
                    other => {
                        return Err(cx.attr_err(
                            "coordinate_transformation_mode",
                            format!("{other:?} is not taken by intq"),
                        ))
                    }
                };
                if mode == "linear" {
                    pos[d].push(v);
                    continue;
                }
                let i = match nearest.as_str() {
                    "round_prefer_floor" if v == v.floor() + 0.5 => v.floor(),
                    "round_prefer_floor" => v.round(),
                    "round_prefer_ceil" => (v + 0.5).floor(),
                    "floor" => v.floor(),
                    "ceil" => v.ceil(),
                    other => {
                        return Err(cx.attr_err(
                            "nearest_mode",
                            format!("{other:?} is not an ONNX nearest mode"),
                        ))
                    }
                };
                src[d].push((i.max(0.0) as usize).min(n_in - 1));
            }
        }
        if mode == "linear" {
            let [pos_h, pos_w] = pos;
            let op = Op::ResizeLinear {
                pos_h,
                pos_w,
                coordinate_transformation_mode: ctm,
            };
            return self.push(cx, op, vec![x], out);
        }
        let [src_h, src_w] = src;
        self.push(cx, Op::ResizeNearest { src_h, src_w }, vec![x], out)
    }

    /// Max or Min of two activations of one shape, or of an activation and one constant value:
    /// a Clip (`Max(x, 0)` is a Relu, `Min(Relu(x), 6)` a ReLU6): a Clip or Relu read by it
    /// alone merges into one Clip.
    fn max_min(&mut self, cx: &Ctx) -> Result<(), OnnxError> {
        cx.only_attrs(&[])?;
        let op = cx.op.as_str();
        let (x, c) = match (self.input(cx, 0), self.input(cx, 1), cx.n.input.len()) {
            (Some(Val::Act(x)), Some(Val::Const(c)), 2)
            | (Some(Val::Const(c)), Some(Val::Act(x)), 2) => (x, c),
            (Some(Val::Act(a)), Some(Val::Act(b)), 2) => {
                let (sa, sb) = (self.shape(a), self.shape(b));
                if sa != sb {
                    return Err(cx.err(format!(
                        "{op} of shapes {sa:?} and {sb:?}; intq takes {op} of two activations \
                         of one shape"
                    )));
                }
                let node = if op == "Max" {
                    Op::Maximum
                } else {
                    Op::Minimum
                };
                return self.push(cx, node, vec![a, b], sa);
            }
            _ => return Err(cx.err(format!("{op} takes two inputs here"))),
        };
        let v = match c.to_f32()[..] {
            [v] if !v.is_nan() => v,
            _ => {
                return Err(cx.err(format!(
                    "{op} by a constant of shape {:?}; intq takes one value",
                    c.dims
                )))
            }
        };
        let (mut min, mut max) = if op == "Max" {
            (v, f32::INFINITY)
        } else {
            (f32::NEG_INFINITY, v)
        };
        let src = self.graph.values[x].name.clone();
        let single_use = self.uses.get(&src).copied() == Some(1);
        let mut input = x;
        if let Some(node) = self
            .graph
            .nodes
            .last()
            .filter(|n| n.output == x && single_use)
        {
            let prev = match node.op {
                Op::Relu => Some((0.0, f32::INFINITY)),
                Op::Clip { min, max } => Some((min, max)),
                _ => None,
            };
            // The Relu or Clip then reads nothing that is used, and is pruned.
            if let Some((lo, hi)) = prev {
                (min, max) = (min.max(lo), max.min(hi));
                input = node.inputs[0];
            }
        }
        if min > max {
            return Err(cx.err(format!("bounds [{min}, {max}] are not a range")));
        }
        let s = self.shape(input);
        self.push(cx, Op::Clip { min, max }, vec![input], s)
    }

    fn reduce_mean(&mut self, cx: &Ctx) -> Result<(), OnnxError> {
        cx.only_attrs(&["axes", "keepdims", "noop_with_empty_axes"])?;
        let x = self.act(cx, 0)?;
        let s = self.shape(x);
        let axes = match cx.ints("axes")? {
            Some(a) => Some(a),
            None => self.constant(cx, 1, "axes")?.and_then(|c| c.to_i64()),
        };
        let mut axes: Vec<i64> = axes
            .ok_or_else(|| {
                cx.attr_err(
                    "axes",
                    "is missing (a mean over every dimension would merge the batch)",
                )
            })?
            .iter()
            .map(|&a| if a < 0 { a + s.len() as i64 } else { a })
            .collect();
        axes.sort();
        if s.len() != 4 || axes != [2, 3] {
            return Err(cx.attr_err(
                "axes",
                format!(
                    "{axes:?} on {s:?}; intq takes ReduceMean only over the spatial axes of NCHW"
                ),
            ));
        }
        let keep = cx.int("keepdims")?.unwrap_or(1) != 0;
        let out = if keep {
            vec![s[0], s[1], 1, 1]
        } else {
            vec![s[0], s[1]]
        };
        // Without keepdims the [N, C, 1, 1] of the pool is read as [N, C]: the same bytes.
        self.push(cx, Op::GlobalAveragePool, vec![x], out)
    }

    fn pool(&mut self, cx: &Ctx) -> Result<(), OnnxError> {
        let max = cx.op == "MaxPool";
        if max {
            cx.only_attrs(&[
                "kernel_shape",
                "strides",
                "dilations",
                "pads",
                "auto_pad",
                "ceil_mode",
                "storage_order",
            ])?;
        } else {
            cx.only_attrs(&[
                "kernel_shape",
                "strides",
                "dilations",
                "pads",
                "auto_pad",
                "ceil_mode",
                "count_include_pad",
            ])?;
        }
        let x = self.act(cx, 0)?;
        let s = self.shape(x);
        if s.len() != 4 {
            return Err(cx.err(format!(
                "input shape {s:?} is not NCHW (intq takes 2-D pools)"
            )));
        }
        let kernel = match cx.ints("kernel_shape")? {
            Some(k) if k.len() == 2 && k.iter().all(|&v| (1..=1 << 16).contains(&v)) => {
                [k[0] as usize, k[1] as usize]
            }
            Some(k) => {
                return Err(cx.attr_err(
                    "kernel_shape",
                    format!("{k:?}: intq takes two positive values"),
                ))
            }
            None => return Err(cx.attr_err("kernel_shape", "is missing")),
        };
        let stride = cx.positive_pair("strides", 1)?;
        let dilation = cx.positive_pair("dilations", 1)?;
        let ceil = cx.int("ceil_mode")?.unwrap_or(0) != 0;
        let count_include_pad = cx.int("count_include_pad")?.unwrap_or(0) != 0;
        if !max && dilation != [1, 1] {
            return Err(cx.attr_err("dilations", "a dilated AveragePool is not supported"));
        }
        let (pads, out) = self.spatial(cx, &s, kernel, stride, dilation, ceil)?;
        if ceil && !max && count_include_pad {
            // Average windows that run past the padding and count it are divided differently by
            // ONNX Runtime and PyTorch; take ceil_mode there only where it changes nothing.
            // Without the padding in the count, both divide by the window's part inside the
            // picture.
            let (_, floor_out) = self.spatial(cx, &s, kernel, stride, dilation, false)?;
            if floor_out != out {
                return Err(cx.attr_err(
                    "ceil_mode",
                    "an AveragePool whose last window runs past the padding and that counts the \
                     padding (count_include_pad 1) is not supported",
                ));
            }
        }
        let p = Pool {
            kernel,
            stride,
            dilation,
            pads,
            ceil_mode: ceil,
            count_include_pad,
        };
        let op = if max {
            Op::MaxPool(p)
        } else {
            Op::AveragePool(p)
        };
        self.push(cx, op, vec![x], vec![s[0], s[1], out[0], out[1]])
    }

    fn linear_input(&self, cx: &Ctx) -> Result<(ValueId, usize), OnnxError> {
        let x = self.act(cx, 0)?;
        let s = self.shape(x);
        if s.len() != 2 {
            return Err(cx.err(format!(
                "input shape {s:?} is not [batch, features] (flatten before it)"
            )));
        }
        Ok((x, s[1]))
    }

    fn gemm(&mut self, cx: &Ctx) -> Result<(), OnnxError> {
        cx.only_attrs(&["alpha", "beta", "transA", "transB"])?;
        if cx.int("transA")?.unwrap_or(0) != 0 {
            return Err(cx.attr_err("transA", "is 1; intq takes the activation untransposed"));
        }
        let (x, k) = self.linear_input(cx)?;
        let b = self.required_const(cx, 1, "B")?;
        let trans_b = cx.int("transB")?.unwrap_or(0) != 0;
        let alpha = cx.float("alpha")?.unwrap_or(1.0);
        let beta = cx.float("beta")?.unwrap_or(1.0);
        if b.dims.len() != 2 {
            return Err(cx.err(format!("B has shape {:?}, not a matrix", b.dims)));
        }
        let (bk, n) = if trans_b {
            (b.dims[1], b.dims[0])
        } else {
            (b.dims[0], b.dims[1])
        };
        if bk != k {
            return Err(cx.err(format!(
                "B {:?} (transB {}) takes {bk} features, the input has {k}",
                b.dims, trans_b as u8
            )));
        }
        let bv = b.to_f32();
        let mut weight = vec![0f32; n * k];
        for o in 0..n {
            for i in 0..k {
                let v = if trans_b {
                    bv[o * k + i]
                } else {
                    bv[i * n + o]
                };
                weight[o * k + i] = alpha * v;
            }
        }
        let bias = match self.constant(cx, 2, "C")? {
            None => None,
            Some(c) => {
                let v = c.to_f32();
                let per_out = c.data.len() == n && c.dims.iter().rev().skip(1).all(|&d| d == 1);
                if per_out {
                    Some(v.iter().map(|&x| beta * x).collect())
                } else if c.data.len() == 1 {
                    Some(vec![beta * v[0]; n])
                } else {
                    return Err(cx.err(format!(
                        "C has shape {:?}; intq takes a bias of {n} values",
                        c.dims
                    )));
                }
            }
        };
        let op = Op::Linear {
            weight,
            in_features: k,
            out_features: n,
            bias,
        };
        self.push(cx, op, vec![x], vec![1, n])
    }

    fn matmul(&mut self, cx: &Ctx) -> Result<(), OnnxError> {
        cx.only_attrs(&[])?;
        let (x, k) = self.linear_input(cx)?;
        let b = self.required_const(cx, 1, "weight")?;
        if b.dims.len() != 2 || b.dims[0] != k {
            return Err(cx.err(format!(
                "weight shape {:?} does not take {k} features",
                b.dims
            )));
        }
        let n = b.dims[1];
        let bv = b.to_f32();
        let mut weight = vec![0f32; n * k];
        for o in 0..n {
            for i in 0..k {
                weight[o * k + i] = bv[i * n + o];
            }
        }
        let op = Op::Linear {
            weight,
            in_features: k,
            out_features: n,
            bias: None,
        };
        self.push(cx, op, vec![x], vec![1, n])
    }

    fn pad(&mut self, cx: &Ctx) -> Result<(), OnnxError> {
        cx.only_attrs(&["mode"])?;
        let mode = cx.string("mode")?.unwrap_or_else(|| "constant".into());
        if mode != "constant" {
            return Err(cx.attr_err("mode", format!("{mode:?}; intq takes constant padding")));
        }
        let x = self.act(cx, 0)?;
        let s = self.shape(x);
        let r = s.len();
        let pads = self
            .required_const(cx, 1, "pads")?
            .to_i64()
            .ok_or_else(|| cx.err("pads are not integers"))?;
        let value = match self.constant(cx, 2, "constant_value")? {
            None => 0.0,
            Some(c) if c.data.len() == 1 => c.to_f32()[0],
            Some(_) => return Err(cx.err("constant_value is not a scalar")),
        };
        let axes: Vec<usize> = match self.constant(cx, 3, "axes")? {
            None => (0..r).collect(),
            Some(a) => a
                .to_i64()
                .ok_or_else(|| cx.err("axes are not integers"))?
                .iter()
                .map(|&a| norm_axis(cx, "axes", Some(a), r))
                .collect::<Result<_, _>>()?,
        };
        if pads.len() != 2 * axes.len() {
            return Err(cx.err(format!("{} pads for {} axes", pads.len(), axes.len())));
        }
        let mut per_dim = vec![(0usize, 0usize); r];
        let mut out = s.clone();
        for (k, &a) in axes.iter().enumerate() {
            let (b, e) = (pads[k], pads[k + axes.len()]);
            if !(0..=1 << 16).contains(&b) || !(0..=1 << 16).contains(&e) {
                return Err(cx.err(format!(
                    "pads {pads:?}: intq takes non-negative pads (no cropping)"
                )));
            }
            per_dim[a] = (b as usize, e as usize);
            out[a] += (b + e) as usize;
        }
        if per_dim[0] != (0, 0) {
            return Err(cx.err("pads the batch dimension"));
        }
        self.push(
            cx,
            Op::Pad {
                pads: per_dim,
                value,
            },
            vec![x],
            out,
        )
    }

    /// Evaluates a node whose inputs are all constants.
    fn fold(&self, cx: &Ctx) -> Result<Const, OnnxError> {
        let ins: Vec<Option<Const>> = (0..cx.n.input.len())
            .map(|k| match self.input(cx, k) {
                Some(Val::Const(c)) => Some(c),
                _ => None,
            })
            .collect();
        let get = |k: usize| -> Result<&Const, OnnxError> {
            ins.get(k)
                .and_then(Option::as_ref)
                .ok_or_else(|| cx.err(format!("input {k} is missing")))
        };
        let axes_of = |k: usize| -> Result<Option<Vec<i64>>, OnnxError> {
            if let Some(a) = cx.ints("axes")? {
                return Ok(Some(a));
            }
            match ins.get(k).and_then(Option::as_ref) {
                Some(c) => Ok(Some(
                    c.to_i64().ok_or_else(|| cx.err("axes are not integers"))?,
                )),
                None => Ok(None),
            }
        };
        let r = match cx.op.as_str() {
            "Gather" => {
                cx.only_attrs(&["axis"])?;
                let (data, idx) = (get(0)?, get(1)?);
                let rank = data.dims.len();
                if rank == 0 {
                    return Err(cx.err("gathers from a scalar"));
                }
                let axis = norm_axis(cx, "axis", cx.int("axis")?, rank)?;
                let idx_v = idx
                    .to_i64()
                    .ok_or_else(|| cx.err("indices are not integers"))?;
                let dim = data.dims[axis] as i64;
                let outer: usize = data.dims[..axis].iter().product();
                let inner: usize = data.dims[axis + 1..].iter().product();
                let mut pick = Vec::with_capacity(idx_v.len());
                for &i in &idx_v {
                    let j = if i < 0 { i + dim } else { i };
                    if !(0..dim).contains(&j) {
                        return Err(cx.err(format!("index {i} is outside dimension {dim}")));
                    }
                    pick.push(j as usize);
                }
                let mut dims = data.dims[..axis].to_vec();
                dims.extend_from_slice(&idx.dims);
                dims.extend_from_slice(&data.dims[axis + 1..]);
                check_dims(cx, &dims)?;
                fn gather<T: Copy>(
                    src: &[T],
                    outer: usize,
                    dim: usize,
                    inner: usize,
                    pick: &[usize],
                ) -> Vec<T> {
                    let mut out = Vec::new();
                    for o in 0..outer {
                        for &j in pick {
                            let base = (o * dim + j) * inner;
                            out.extend_from_slice(&src[base..base + inner]);
                        }
                    }
                    out
                }
                let d = data.dims[axis];
                match &data.data {
                    Data::F32(v) => Const::f32(dims, gather(v, outer, d, inner, &pick)),
                    Data::I64(v) => Const::i64(dims, gather(v, outer, d, inner, &pick)),
                }
            }
            "Unsqueeze" => {
                let data = get(0)?.clone();
                let axes = axes_of(1)?.ok_or_else(|| cx.attr_err("axes", "is missing"))?;
                let r = data.dims.len() + axes.len();
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| norm_axis(cx, "axes", Some(a), r))
                    .collect::<Result<_, _>>()?;
                axes.sort();
                let mut dims = data.dims.clone();
                for a in axes {
                    if a > dims.len() {
                        return Err(cx.attr_err("axes", "outside the result's rank"));
                    }
                    dims.insert(a, 1);
                }
                check_dims(cx, &dims)?;
                Const {
                    dims,
                    data: data.data,
                }
            }
            "Squeeze" => {
                let data = get(0)?.clone();
                let rank = data.dims.len();
                let dims = match axes_of(1)? {
                    None => data.dims.iter().copied().filter(|&d| d != 1).collect(),
                    Some(axes) => {
                        let axes: Vec<usize> = axes
                            .iter()
                            .map(|&a| norm_axis(cx, "axes", Some(a), rank))
                            .collect::<Result<_, _>>()?;
                        if axes.iter().any(|&a| data.dims[a] != 1) {
                            return Err(cx.attr_err("axes", "names a dimension that is not 1"));
                        }
                        (0..rank)
                            .filter(|d| !axes.contains(d))
                            .map(|d| data.dims[d])
                            .collect()
                    }
                };
                Const {
                    dims,
                    data: data.data,
                }
            }
            "Cast" => {
                let data = get(0)?.clone();
                use tensor_proto::DataType as D;
                let to = cx.int("to")?.unwrap_or(0) as i32;
                let float = [
                    D::Float as i32,
                    D::Double as i32,
                    D::Float16 as i32,
                    D::Bfloat16 as i32,
                ];
                if float.contains(&to) {
                    Const::f32(data.dims.clone(), data.to_f32())
                } else if to == D::String as i32 || to == D::Undefined as i32 {
                    return Err(cx.attr_err("to", "is not a numeric type"));
                } else {
                    let v = match &data.data {
                        Data::I64(v) => v.clone(),
                        Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
                    };
                    Const::i64(data.dims.clone(), v)
                }
            }
            "Concat" => {
                cx.only_attrs(&["axis"])?;
                let parts: Vec<&Const> = (0..ins.len()).map(get).collect::<Result<_, _>>()?;
                let first = parts.first().ok_or_else(|| cx.err("has no inputs"))?;
                let rank = first.dims.len();
                let axis = norm_axis(cx, "axis", cx.int("axis")?, rank)?;
                let mut dims = first.dims.clone();
                dims[axis] = 0;
                for p in &parts {
                    if p.dims.len() != rank
                        || (0..rank).any(|d| d != axis && p.dims[d] != first.dims[d])
                    {
                        return Err(cx.err("constant inputs differ outside the axis"));
                    }
                    dims[axis] += p.dims[axis];
                }
                check_dims(cx, &dims)?;
                let outer: usize = first.dims[..axis].iter().product();
                let any_f32 = parts.iter().any(|p| matches!(p.data, Data::F32(_)));
                let mut f = Vec::new();
                let mut i = Vec::new();
                for o in 0..outer {
                    for p in &parts {
                        let chunk: usize = p.dims[axis..].iter().product();
                        if any_f32 {
                            f.extend_from_slice(&p.to_f32()[o * chunk..(o + 1) * chunk]);
                        } else if let Data::I64(v) = &p.data {
                            i.extend_from_slice(&v[o * chunk..(o + 1) * chunk]);
                        }
                    }
                }
                if any_f32 {
                    Const::f32(dims, f)
                } else {
                    Const::i64(dims, i)
                }
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                cx.only_attrs(&[])?;
                binary(cx, get(0)?, get(1)?)?
            }
            "Reshape" => {
                let data = get(0)?.clone();
                let target = get(1)?
                    .to_i64()
                    .ok_or_else(|| cx.err("shape is not integral"))?;
                let allowzero = cx.int("allowzero")?.unwrap_or(0) != 0;
                let dims = reshape_dims(&data.dims, &target, allowzero).map_err(|m| cx.err(m))?;
                Const {
                    dims,
                    data: data.data,
                }
            }
            "Slice" => {
                let data = get(0)?;
                let rank = data.dims.len();
                let ints = |k: usize| -> Result<Option<Vec<i64>>, OnnxError> {
                    match ins.get(k).and_then(Option::as_ref) {
                        Some(c) => Ok(Some(
                            c.to_i64()
                                .ok_or_else(|| cx.err("slice bounds are not integers"))?,
                        )),
                        None => Ok(None),
                    }
                };
                let starts = ints(1)?.ok_or_else(|| cx.err("starts is missing"))?;
                let ends = ints(2)?.ok_or_else(|| cx.err("ends is missing"))?;
                let axes = ints(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
                if ends.len() != starts.len()
                    || axes.len() != starts.len()
                    || steps.len() != starts.len()
                {
                    return Err(cx.err("starts, ends, axes and steps differ in length"));
                }
                // Per dimension: the source indices kept.
                let mut keep: Vec<Vec<usize>> =
                    data.dims.iter().map(|&d| (0..d).collect()).collect();
                for k in 0..starts.len() {
                    let a = norm_axis(cx, "axes", Some(axes[k]), rank)?;
                    let d = data.dims[a] as i64;
                    let step = steps[k];
                    if step == 0 {
                        return Err(cx.err("a slice step is 0"));
                    }
                    let fix =
                        |v: i64, lo: i64, hi: i64| (if v < 0 { v + d } else { v }).clamp(lo, hi);
                    let mut v = Vec::new();
                    if step > 0 {
                        let (mut i, e) = (fix(starts[k], 0, d), fix(ends[k], 0, d));
                        while i < e {
                            v.push(i as usize);
                            i += step;
                        }
                    } else {
                        let (mut i, e) = (fix(starts[k], -1, d - 1), fix(ends[k], -1, d - 1));
                        while i > e {
                            v.push(i as usize);
                            i += step;
                        }
                    }
                    keep[a] = v;
                }
                let dims: Vec<usize> = keep.iter().map(Vec::len).collect();
                check_dims(cx, &dims)?;
                let n: usize = dims.iter().product();
                let mut src_idx = Vec::with_capacity(n);
                for flat in 0..n {
                    let (mut rem, mut off, mut stride) = (flat, 0, 1);
                    for d in (0..rank).rev() {
                        let i = rem % dims[d];
                        rem /= dims[d];
                        off += keep[d][i] * stride;
                        stride *= data.dims[d];
                    }
                    src_idx.push(off);
                }
                match &data.data {
                    Data::F32(v) => Const::f32(dims, src_idx.iter().map(|&i| v[i]).collect()),
                    Data::I64(v) => Const::i64(dims, src_idx.iter().map(|&i| v[i]).collect()),
                }
            }
            "Transpose" => {
                cx.only_attrs(&["perm"])?;
                let data = get(0)?;
                let rank = data.dims.len();
                let perm: Vec<usize> = match cx.ints("perm")? {
                    None => (0..rank).rev().collect(),
                    Some(p) => {
                        let p: Vec<usize> = p
                            .iter()
                            .map(|&a| norm_axis(cx, "perm", Some(a), rank))
                            .collect::<Result<_, _>>()?;
                        let mut seen = p.clone();
                        seen.sort();
                        if seen != (0..rank).collect::<Vec<_>>() {
                            return Err(cx.attr_err("perm", format!("{p:?} is not a permutation")));
                        }
                        p
                    }
                };
                let dims: Vec<usize> = perm.iter().map(|&a| data.dims[a]).collect();
                let n: usize = dims.iter().product();
                let mut src_stride = vec![1usize; rank];
                for d in (0..rank.saturating_sub(1)).rev() {
                    src_stride[d] = src_stride[d + 1] * data.dims[d + 1];
                }
                let mut src_idx = Vec::with_capacity(n);
                for flat in 0..n {
                    let (mut rem, mut off) = (flat, 0);
                    for d in (0..rank).rev() {
                        let i = rem % dims[d];
                        rem /= dims[d];
                        off += i * src_stride[perm[d]];
                    }
                    src_idx.push(off);
                }
                match &data.data {
                    Data::F32(v) => Const::f32(dims, src_idx.iter().map(|&i| v[i]).collect()),
                    Data::I64(v) => Const::i64(dims, src_idx.iter().map(|&i| v[i]).collect()),
                }
            }
            "ConstantOfShape" => {
                let shape = get(0)?
                    .to_i64()
                    .ok_or_else(|| cx.err("shape is not integral"))?;
                if shape.iter().any(|&d| d < 0) {
                    return Err(cx.err(format!("shape {shape:?} has a negative dimension")));
                }
                let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                check_dims(cx, &dims)?;
                let n = dims.iter().product();
                let value = match cx.attr("value").and_then(|a| a.t.as_ref()) {
                    Some(t) => read::tensor(t, None)?,
                    None => Const::f32(vec![1], vec![0.0]),
                };
                match value.data {
                    Data::F32(v) if v.len() == 1 => Const::f32(dims, vec![v[0]; n]),
                    Data::I64(v) if v.len() == 1 => Const::i64(dims, vec![v[0]; n]),
                    _ => return Err(cx.attr_err("value", "is not one value")),
                }
            }
            "Range" => {
                let (s, l, d) = (get(0)?.to_i64(), get(1)?.to_i64(), get(2)?.to_i64());
                let (Some(s), Some(l), Some(d)) = (s, l, d) else {
                    return Err(cx.err("intq folds Range on integers only"));
                };
                let (s, l, d) = (s[0], l[0], d[0]);
                if d == 0 {
                    return Err(cx.err("delta is 0"));
                }
                let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
                check_dims(cx, &[n])?;
                Const::i64(vec![n], (0..n as i64).map(|k| s + k * d).collect())
            }
            other => return Err(cx.err(format!("{other} on constants is not folded by intq"))),
        };
        Ok(r)
    }
}

fn check_dims(cx: &Ctx, dims: &[usize]) -> Result<(), OnnxError> {
    element_count(dims)
        .map(|_| ())
        .ok_or_else(|| cx.err(format!("result shape {dims:?} is too large")))
}

fn norm_axis(cx: &Ctx, attr: &str, axis: Option<i64>, rank: usize) -> Result<usize, OnnxError> {
    let a = axis.unwrap_or(0);
    let r = rank as i64;
    if a < -r || a >= r {
        return Err(cx.attr_err(attr, format!("{a} is outside rank {rank}")));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// ONNX Reshape's target resolution: 0 copies the input's dimension (unless `allowzero`), one
/// -1 takes what is left.
fn reshape_dims(input: &[usize], target: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    if target.len() > MAX_RANK {
        return Err(format!("target rank {} is above {MAX_RANK}", target.len()));
    }
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (k, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(k);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(k).ok_or_else(|| {
                format!("target {target:?} copies dimension {k} the input lacks")
            })?),
            t if t >= 0 => out.push(t as usize),
            _ => return Err(format!("target shape {target:?} is not valid")),
        }
    }
    let known =
        element_count(&out).ok_or_else(|| format!("target shape {target:?} is too large"))?;
    if let Some(k) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        out[k] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {input:?} ({total} elements) to {target:?}"
        ));
    }
    Ok(out)
}

/// Elementwise arithmetic on constants with numpy broadcasting.
fn binary(cx: &Ctx, a: &Const, b: &Const) -> Result<Const, OnnxError> {
    let rank = a.dims.len().max(b.dims.len());
    let pad = |d: &[usize]| {
        let mut v = vec![1; rank - d.len()];
        v.extend_from_slice(d);
        v
    };
    let (da, db) = (pad(&a.dims), pad(&b.dims));
    let mut dims = Vec::with_capacity(rank);
    for k in 0..rank {
        dims.push(match (da[k], db[k]) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(cx.err(format!(
                    "shapes {:?} and {:?} do not broadcast",
                    a.dims, b.dims
                )))
            }
        });
    }
    check_dims(cx, &dims)?;
    let n: usize = dims.iter().product();
    let index = |flat: usize, src: &[usize]| {
        let (mut rem, mut off, mut stride) = (flat, 0, 1);
        for d in (0..rank).rev() {
            let i = rem % dims[d];
            rem /= dims[d];
            if src[d] != 1 {
                off += i * stride;
            }
            stride *= src[d];
        }
        off
    };
    let op = cx.op.as_str();
    match (&a.data, &b.data) {
        (Data::I64(x), Data::I64(y)) => {
            let mut v = Vec::with_capacity(n);
            for f in 0..n {
                let (p, q) = (x[index(f, &da)], y[index(f, &db)]);
                v.push(
                    match op {
                        "Add" => p.checked_add(q),
                        "Sub" => p.checked_sub(q),
                        "Mul" => p.checked_mul(q),
                        _ => p.checked_div(q),
                    }
                    .ok_or_else(|| cx.err(format!("{p} {op} {q} overflows or divides by zero")))?,
                );
            }
            Ok(Const::i64(dims, v))
        }
        _ => {
            let (x, y) = (a.to_f32(), b.to_f32());
            let v = (0..n)
                .map(|f| {
                    let (p, q) = (x[index(f, &da)], y[index(f, &db)]);
                    match op {
                        "Add" => p + q,
                        "Sub" => p - q,
                        "Mul" => p * q,
                        _ => p / q,
                    }
                })
                .collect();
            Ok(Const::f32(dims, v))
        }
    }
}

/// The value of a Constant node.
fn constant_node(cx: &Ctx, dir: Option<&Path>) -> Result<Const, OnnxError> {
    let a =
        cx.n.attribute
            .first()
            .ok_or_else(|| cx.err("has no value attribute"))?;
    if cx.n.attribute.len() != 1 {
        return Err(cx.err("has more than one value attribute"));
    }
    let name = a.name.as_deref().unwrap_or("");
    match name {
        "value" => {
            let t =
                a.t.as_ref()
                    .ok_or_else(|| cx.attr_err(name, "holds no tensor"))?;
            read::tensor(t, dir)
        }
        "value_float" => Ok(Const::f32(vec![], vec![a.f.unwrap_or(0.0)])),
        "value_floats" => Ok(Const::f32(vec![a.floats.len()], a.floats.clone())),
        "value_int" => Ok(Const::i64(vec![], vec![a.i.unwrap_or(0)])),
        "value_ints" => Ok(Const::i64(vec![a.ints.len()], a.ints.clone())),
        _ => Err(cx.attr_err(name, "is not supported (intq takes numeric constants)")),
    }
}
