//! The execution plan of a validated graph: a topological order, buffers shared between
//! activations whose lifetimes do not overlap, and each op's integer parameters (fixed-point
//! multipliers, activation clamps, padding, lookup tables) derived once at load time.

use crate::validate::{describe, topological_order};
use crate::{Activation, DType, Graph, GraphError, Op, OpKind, Quant, QuantParams, TensorId};
use intq_kernels::gemm::{Code8, Conv2dPlan, DepthwisePlan, FullyConnectedPlan};
use intq_kernels::reference::{AddParams, LogisticTable, RequantTable, SoftmaxParams};
use intq_kernels::{ConvParams, Isa, KernelTier, Multipliers, OutputStage, PoolParams};
use intq_quant::QuantizedMultiplier;

/// Integer parameters of a (depthwise) convolution.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConvPrep {
    pub geometry: ConvParams,
    pub input_zero_point: i32,
    /// One entry (per tensor) or one per output channel.
    pub filter_zero_points: Vec<i32>,
    /// One entry (per-tensor weights) or one per output channel: `M_k = S_in S_w[k] / S_out`.
    pub multipliers: Vec<QuantizedMultiplier>,
    pub output_zero_point: i32,
    pub clamp: (i32, i32),
    /// The filter packed for a fast tier (None: the reference kernel runs).
    pub fast: Option<FastConv>,
}

/// A (depthwise) convolution's fast kernel, weights prepared at plan time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FastConv {
    Conv(Conv2dPlan),
    Depthwise(DepthwisePlan),
}

/// Integer parameters of a fully connected layer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FcPrep {
    pub batches: usize,
    pub depth: usize,
    pub out_features: usize,
    pub input_zero_point: i32,
    pub weight_zero_points: Vec<i32>,
    pub multipliers: Vec<QuantizedMultiplier>,
    pub output_zero_point: i32,
    pub clamp: (i32, i32),
    /// The weights packed for a fast tier (None: the reference kernel runs).
    pub fast: Option<FullyConnectedPlan>,
}

/// A table over the codes of one 8-bit type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Table<U, I> {
    U8(U),
    I8(I),
}

pub(crate) type AnyRequantTable = Table<RequantTable<u8>, RequantTable<i8>>;
pub(crate) type AnyLogisticTable = Table<LogisticTable<u8>, LogisticTable<i8>>;

/// What one op needs at run time beyond its tensors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Prepared {
    Conv(ConvPrep),
    Depthwise(ConvPrep),
    FullyConnected(FcPrep),
    Add(AddParams),
    AveragePool(PoolParams),
    MaxPool(PoolParams),
    /// One entry per input: `None` when its `(S, Z)` equal the output's (a plain copy).
    Concat(Vec<Option<AnyRequantTable>>),
    Logistic(AnyLogisticTable),
    Softmax {
        params: SoftmaxParams,
        outer: usize,
        depth: usize,
    },
    Reshape,
    /// Output params and codes.
    Quantize(QuantParams, (i32, i32)),
    Dequantize(QuantParams),
    /// TFLite's reference FC: the FC geometry and zero points, with `M` in f64 per channel.
    FullyConnectedF64 {
        fc: FcPrep,
        scales: Vec<intq_quant::DoubleMultiplier>,
    },
    /// The pad code (the output zero point).
    Pad(i32),
    Mean {
        params: intq_kernels::reference::MeanParams,
        input_zero_point: i32,
        output_zero_point: i32,
    },
    Mul(intq_kernels::reference::MulParams),
    Sub(intq_kernels::reference::SubParams),
    Relu(intq_kernels::reference::ReluParams),
    LeakyRelu(intq_kernels::reference::LeakyReluParams),
    HardSwish(intq_kernels::reference::HardSwishParams),
    /// Nearest neighbour (`None`) or bilinear with the arithmetic TFLite uses for the type.
    Resize(
        intq_kernels::reference::ResizeMode,
        Option<intq_kernels::reference::BilinearArithmetic>,
    ),
    Prelu(intq_kernels::reference::PreluParams),
    Sum(intq_kernels::reference::SumParams),
    /// The input zero point.
    L2Normalization(i32),
    /// Ops that move or compare codes and need no parameters.
    Move,
    /// A transposed convolution's parameters (docs/spec.md §11.13); `geometry.padding` holds
    /// the resolved top and left.
    TransposeConv(ConvPrep),
    /// `TFLite_Detection_PostProcess`: the anchors as reals, `[A, 4]`.
    Detection(Vec<f32>),
}

/// Where each run-time tensor lives: a slot index per tensor (constants have none), and each
/// slot's element type and capacity in elements.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemoryPlan {
    pub slot_of: Vec<Option<usize>>,
    pub slots: Vec<(DType, usize)>,
}

impl MemoryPlan {
    pub fn bytes(&self) -> usize {
        self.slots.iter().map(|(d, n)| d.size_bytes() * n).sum()
    }
}

/// Everything about running a graph that does not depend on the input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Op indices in execution order.
    pub order: Vec<usize>,
    /// Indexed by op index (not by position in `order`).
    pub prepared: Vec<Prepared>,
    /// Buffers when only the graph outputs are kept.
    pub memory: MemoryPlan,
    /// Which kernels run conv, depthwise and fully connected ops.
    pub tier: KernelTier,
    /// Threads the fast kernels split their work over (at least 1).
    pub threads: usize,
    /// Buffer sets of `memory` kept from earlier runs, so a run neither allocates nor zeroes
    /// its activations.
    pub arena: crate::exec::Arena,
}

impl Plan {
    /// Plans with the kernels `INTQ_ISA` names (default: the best tier of this CPU), on all cores.
    pub fn new(graph: &Graph) -> Result<Plan, GraphError> {
        let tier =
            KernelTier::from_env().map_err(|e| GraphError::Graph(format!("INTQ_ISA: {e}")))?;
        Plan::with_kernels(graph, tier, 0)
    }

    /// Plans with the given kernels and thread count (0: all cores).
    pub fn with_kernels(
        graph: &Graph,
        tier: KernelTier,
        threads: usize,
    ) -> Result<Plan, GraphError> {
        if let KernelTier::Fast(isa) = tier {
            isa.require()
                .map_err(|e| GraphError::Graph(format!("kernels: {e}")))?;
        }
        let order = topological_order(graph)?;
        let mut prepared = graph
            .ops()
            .iter()
            .enumerate()
            .map(|(index, op)| prepare(graph, index, op))
            .collect::<Result<Vec<_>, _>>()?;
        if let KernelTier::Fast(isa) = tier {
            for (op, prep) in graph.ops().iter().zip(&mut prepared) {
                attach_fast(graph, op, prep, isa);
            }
        }
        let memory = plan_memory(graph, &order, &[]);
        Ok(Plan {
            order,
            prepared,
            memory,
            tier,
            threads: if threads == 0 {
                intq_kernels::gemm::all_cores()
            } else {
                threads
            },
            arena: Default::default(),
        })
    }
}

/// The output stage of a conv/FC from its prepared integer parameters.
fn output_stage<'a>(
    bias: Option<&'a [i32]>,
    multipliers: &'a [QuantizedMultiplier],
    output_zero_point: i32,
    clamp: (i32, i32),
) -> OutputStage<'a> {
    OutputStage {
        bias,
        multipliers: if multipliers.len() == 1 {
            Multipliers::PerTensor(multipliers[0])
        } else {
            Multipliers::PerChannel(multipliers)
        },
        output_zero_point,
        clamp_min: clamp.0,
        clamp_max: clamp.1,
    }
}

/// Packs the weights of conv, depthwise and FC ops for `isa`, when weights and bias are
/// constants (otherwise the op keeps the reference kernel).
fn attach_fast(graph: &Graph, op: &Op, prep: &mut Prepared, isa: Isa) {
    use crate::TensorData as D;
    let constant_bias = |b: &Option<TensorId>| match b {
        None => Some(None),
        Some(b) => match &graph.tensor(*b).data {
            Some(D::I32(v)) => Some(Some(v.as_slice())),
            _ => None,
        },
    };
    match (op, prep) {
        (Op::Conv2d { filter, bias, .. }, Prepared::Conv(p)) => {
            let Some(bias) = constant_bias(bias) else {
                return;
            };
            let f = graph.tensor(*filter);
            let shape = [f.shape[0], f.shape[1], f.shape[2], f.shape[3]];
            let stage = output_stage(bias, &p.multipliers, p.output_zero_point, p.clamp);
            fn build<T: Code8>(
                w: &[T],
                shape: [usize; 4],
                p: &ConvPrep,
                st: &OutputStage,
                isa: Isa,
            ) -> FastConv {
                FastConv::Conv(Conv2dPlan::new(
                    w,
                    shape,
                    &p.filter_zero_points,
                    p.input_zero_point,
                    &p.geometry,
                    st,
                    isa,
                ))
            }
            p.fast = match &f.data {
                Some(D::U8(w)) => Some(build(w, shape, p, &stage, isa)),
                Some(D::I8(w)) => Some(build(w, shape, p, &stage, isa)),
                _ => None,
            };
        }
        (
            Op::DepthwiseConv2d {
                filter,
                bias,
                depth_multiplier,
                ..
            },
            Prepared::Depthwise(p),
        ) => {
            let Some(bias) = constant_bias(bias) else {
                return;
            };
            let f = graph.tensor(*filter);
            let shape = [f.shape[0], f.shape[1], f.shape[2], f.shape[3]];
            let stage = output_stage(bias, &p.multipliers, p.output_zero_point, p.clamp);
            let dm = *depth_multiplier;
            fn build<T: Code8>(
                w: &[T],
                shape: [usize; 4],
                dm: usize,
                p: &ConvPrep,
                st: &OutputStage,
                isa: Isa,
            ) -> FastConv {
                FastConv::Depthwise(DepthwisePlan::new(
                    w,
                    shape,
                    &p.filter_zero_points,
                    dm,
                    p.input_zero_point,
                    &p.geometry,
                    st,
                    isa,
                ))
            }
            p.fast = match &f.data {
                Some(D::U8(w)) => Some(build(w, shape, dm, p, &stage, isa)),
                Some(D::I8(w)) => Some(build(w, shape, dm, p, &stage, isa)),
                _ => None,
            };
        }
        (Op::FullyConnected { weights, bias, .. }, Prepared::FullyConnected(p)) => {
            let Some(bias) = constant_bias(bias) else {
                return;
            };
            let stage = output_stage(bias, &p.multipliers, p.output_zero_point, p.clamp);
            fn build<T: Code8>(
                w: &[T],
                p: &FcPrep,
                st: &OutputStage,
                isa: Isa,
            ) -> FullyConnectedPlan {
                FullyConnectedPlan::new(
                    w,
                    p.out_features,
                    p.depth,
                    &p.weight_zero_points,
                    p.input_zero_point,
                    st,
                    isa,
                )
            }
            p.fast = match &graph.tensor(*weights).data {
                Some(D::U8(w)) => Some(build(w, p, &stage, isa)),
                Some(D::I8(w)) => Some(build(w, p, &stage, isa)),
                _ => None,
            };
        }
        _ => {}
    }
}

/// Assigns buffers: walking the ops in order, each op's output takes a free slot of its type
/// (the smallest that fits, else the largest one grown, else a new one), and an input's slot is
/// freed after its last reader has run. Freeing after allocating keeps an op's output out of its
/// own inputs' buffers. Graph outputs and `keep` are never freed, so they survive the run.
pub(crate) fn plan_memory(graph: &Graph, order: &[usize], keep: &[TensorId]) -> MemoryPlan {
    let n = graph.tensors().len();
    let mut kept = vec![false; n];
    for &id in graph.outputs().iter().chain(keep) {
        kept[id.index()] = true;
    }
    // Position (in `order`) of the last op reading each tensor.
    let mut last_read: Vec<Option<usize>> = vec![None; n];
    for (pos, &i) in order.iter().enumerate() {
        for id in graph.ops()[i].inputs() {
            last_read[id.index()] = Some(pos);
        }
    }
    let mut plan = MemoryPlan {
        slot_of: vec![None; n],
        slots: Vec::new(),
    };
    let mut free: Vec<usize> = Vec::new();
    let allocate = |plan: &mut MemoryPlan, free: &mut Vec<usize>, id: TensorId| {
        let t = graph.tensor(id);
        let need = t.num_elements();
        let same_type = |&&s: &&usize| plan.slots[s].0 == t.dtype;
        let fits = free
            .iter()
            .filter(same_type)
            .filter(|&&s| plan.slots[s].1 >= need)
            .min_by_key(|&&s| plan.slots[s].1)
            .copied();
        let chosen = fits.or_else(|| {
            free.iter()
                .filter(same_type)
                .max_by_key(|&&s| plan.slots[s].1)
                .copied()
        });
        let slot = match chosen {
            Some(s) => {
                free.retain(|&f| f != s);
                plan.slots[s].1 = plan.slots[s].1.max(need);
                s
            }
            None => {
                plan.slots.push((t.dtype, need));
                plan.slots.len() - 1
            }
        };
        plan.slot_of[id.index()] = Some(slot);
    };
    for &id in graph.inputs() {
        if last_read[id.index()].is_some() || kept[id.index()] {
            allocate(&mut plan, &mut free, id);
        }
    }
    for (pos, &i) in order.iter().enumerate() {
        let op = &graph.ops()[i];
        let out = op.output();
        allocate(&mut plan, &mut free, out);
        let mut inputs = op.inputs();
        inputs.sort_unstable();
        inputs.dedup();
        for id in inputs {
            if last_read[id.index()] == Some(pos) && !kept[id.index()] {
                if let Some(s) = plan.slot_of[id.index()] {
                    free.push(s);
                }
            }
        }
        // An output nobody reads is dead as soon as it is written.
        if last_read[out.index()].is_none() && !kept[out.index()] {
            free.push(plan.slot_of[out.index()].expect("just allocated"));
        }
    }
    plan
}

/// TFLite's `CalculateActivationRangeQuantized`: the fused activation as a clamp on output codes,
/// with `quantize(f) = Z + round_half_away(f / S)` in f32, intersected with the output's codes.
/// The type's limits are the output's codes (`codes`), which a narrowed activation makes tighter.
pub(crate) fn activation_clamp(
    activation: Activation,
    output: QuantParams,
    (qmin, qmax): (i32, i32),
) -> (i32, i32) {
    let quantize = |f: f32| {
        // `as` saturates, and saturating_add keeps a huge 6/S from wrapping.
        let q = (f / output.scale).round() as i32;
        output.zero_point.saturating_add(q)
    };
    match activation {
        Activation::None => (qmin, qmax),
        Activation::Relu => (qmin.max(quantize(0.0)), qmax),
        Activation::Relu6 => (qmin.max(quantize(0.0)), qmax.min(quantize(6.0))),
        Activation::ReluN1To1 => (qmin.max(quantize(-1.0)), qmax.min(quantize(1.0))),
    }
}

pub(crate) fn op_err(index: usize, kind: OpKind, message: String) -> GraphError {
    GraphError::Op {
        index,
        kind: kind.name(),
        message,
    }
}

/// The codes an activation may hold (its narrowed range, else its type's).
pub(crate) fn codes_of(graph: &Graph, id: TensorId) -> (i32, i32) {
    graph
        .tensor(id)
        .code_limits()
        .expect("validated: activations are 8-bit")
}

pub(crate) fn params_of(graph: &Graph, id: TensorId) -> QuantParams {
    graph
        .tensor(id)
        .params()
        .expect("validated: activations have per-tensor params")
}

/// Weight scales and zero points: one entry each (per tensor) or one per channel.
fn weight_params(graph: &Graph, id: TensorId) -> (Vec<f32>, Vec<i32>) {
    match &graph.tensor(id).quant {
        Some(Quant::PerTensor(p)) => (vec![p.scale], vec![p.zero_point]),
        Some(Quant::PerChannel(cp)) => (cp.scales().to_vec(), cp.zero_points().to_vec()),
        None => unreachable!("validated: weights are quantized"),
    }
}

/// `M_k = S_in * S_w[k] / S_out` in f64 from the f32 scales, as TFLite's
/// `PopulateConvolutionQuantizationParams` computes it.
fn multipliers(
    index: usize,
    kind: OpKind,
    s_in: f32,
    s_w: &[f32],
    s_out: f32,
) -> Result<Vec<QuantizedMultiplier>, GraphError> {
    s_w.iter()
        .enumerate()
        .map(|(k, &s)| {
            let m = s_in as f64 * s as f64 / s_out as f64;
            QuantizedMultiplier::from_real(m).map_err(|e| {
                op_err(
                    index,
                    kind,
                    format!(
                        "output multiplier S_in * S_w[{k}] / S_out = {s_in:e} * {s:e} / {s_out:e} \
                         cannot be formed: {e}"
                    ),
                )
            })
        })
        .collect()
}

/// TRANSPOSE_CONV's parameters as TFLite's Prepare forms them: padding resolved as a
/// convolution of the output's size; uint8 (per-tensor weights) takes TFLite's legacy multiplier
/// `(f64)(S_in * S_w in f32) / (f64) S_out`, int8 the per-channel `(f64) S_in * (f64) S_w[k] /
/// (f64) S_out`.
#[allow(clippy::too_many_arguments)]
fn transpose_conv_prep(
    graph: &Graph,
    index: usize,
    kind: OpKind,
    input: TensorId,
    filter: TensorId,
    output: TensorId,
    stride: [usize; 2],
    padding: intq_kernels::Padding,
    activation: Activation,
) -> Result<ConvPrep, GraphError> {
    let (y, f) = (graph.tensor(output), graph.tensor(filter));
    let (pin, pout) = (params_of(graph, input), params_of(graph, output));
    let (s_w, z_w) = weight_params(graph, filter);
    let (_, pads) = padding
        .resolve(
            (y.shape[1], y.shape[2]),
            (f.shape[1], f.shape[2]),
            (stride[0], stride[1]),
            (1, 1),
        )
        .expect("validated: the filter fits the output");
    let multipliers = if graph.tensor(input).dtype == DType::U8 {
        s_w.iter()
            .map(|&s| {
                let m = (pin.scale * s) as f64 / pout.scale as f64;
                QuantizedMultiplier::from_real(m).map_err(|e| {
                    op_err(
                        index,
                        kind,
                        format!(
                            "output multiplier (S_in * S_w) / S_out = ({:e} * {s:e}) / {:e} \
                             cannot be formed: {e}",
                            pin.scale, pout.scale
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?
    } else {
        multipliers(index, kind, pin.scale, &s_w, pout.scale)?
    };
    Ok(ConvPrep {
        geometry: ConvParams {
            stride_h: stride[0],
            stride_w: stride[1],
            dilation_h: 1,
            dilation_w: 1,
            padding: pads,
        },
        input_zero_point: pin.zero_point,
        filter_zero_points: z_w,
        multipliers,
        output_zero_point: pout.zero_point,
        clamp: activation_clamp(activation, pout, codes_of(graph, output)),
        fast: None,
    })
}

#[allow(clippy::too_many_arguments)]
fn conv_prep(
    graph: &Graph,
    index: usize,
    kind: OpKind,
    input: TensorId,
    filter: TensorId,
    output: TensorId,
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: intq_kernels::Padding,
    activation: Activation,
) -> Result<ConvPrep, GraphError> {
    let x = graph.tensor(input);
    let f = graph.tensor(filter);
    let (pin, pout) = (params_of(graph, input), params_of(graph, output));
    let (s_w, z_w) = weight_params(graph, filter);
    let (_, pads) = padding
        .resolve(
            (x.shape[1], x.shape[2]),
            (f.shape[1], f.shape[2]),
            (stride[0], stride[1]),
            (dilation[0], dilation[1]),
        )
        .expect("validated: the filter fits");
    Ok(ConvPrep {
        geometry: ConvParams {
            stride_h: stride[0],
            stride_w: stride[1],
            dilation_h: dilation[0],
            dilation_w: dilation[1],
            padding: pads,
        },
        input_zero_point: pin.zero_point,
        filter_zero_points: z_w,
        multipliers: multipliers(index, kind, pin.scale, &s_w, pout.scale)?,
        output_zero_point: pout.zero_point,
        clamp: activation_clamp(activation, pout, codes_of(graph, output)),
        fast: None,
    })
}

fn pool_prep(
    graph: &Graph,
    input: TensorId,
    output: TensorId,
    filter: [usize; 2],
    stride: [usize; 2],
    padding: intq_kernels::Padding,
    activation: Activation,
) -> PoolParams {
    let x = graph.tensor(input);
    let (_, pads) = padding
        .resolve(
            (x.shape[1], x.shape[2]),
            (filter[0], filter[1]),
            (stride[0], stride[1]),
            (1, 1),
        )
        .expect("validated: the window fits");
    let (clamp_min, clamp_max) = activation_clamp(
        activation,
        params_of(graph, output),
        codes_of(graph, output),
    );
    PoolParams {
        filter_h: filter[0],
        filter_w: filter[1],
        stride_h: stride[0],
        stride_w: stride[1],
        padding: pads,
        clamp_min,
        clamp_max,
    }
}

fn prepare(graph: &Graph, index: usize, op: &Op) -> Result<Prepared, GraphError> {
    let kind = op.kind();
    let dtype = graph.tensor(op.inputs()[0]).dtype;
    Ok(match op {
        Op::Conv2d {
            input,
            filter,
            output,
            stride,
            dilation,
            padding,
            activation,
            ..
        } => Prepared::Conv(conv_prep(
            graph,
            index,
            kind,
            *input,
            *filter,
            *output,
            *stride,
            *dilation,
            *padding,
            *activation,
        )?),
        Op::DepthwiseConv2d {
            input,
            filter,
            output,
            stride,
            dilation,
            padding,
            activation,
            ..
        } => Prepared::Depthwise(conv_prep(
            graph,
            index,
            kind,
            *input,
            *filter,
            *output,
            *stride,
            *dilation,
            *padding,
            *activation,
        )?),
        Op::FullyConnected {
            input,
            weights,
            output,
            activation,
            ..
        } => {
            let (pin, pout) = (params_of(graph, *input), params_of(graph, *output));
            let w = graph.tensor(*weights);
            let (out_features, depth) = (w.shape[0], w.shape[1]);
            let (s_w, z_w) = weight_params(graph, *weights);
            Prepared::FullyConnected(FcPrep {
                batches: graph.tensor(*input).num_elements() / depth,
                depth,
                out_features,
                input_zero_point: pin.zero_point,
                weight_zero_points: z_w,
                multipliers: multipliers(index, kind, pin.scale, &s_w, pout.scale)?,
                output_zero_point: pout.zero_point,
                clamp: activation_clamp(*activation, pout, codes_of(graph, *output)),
                fast: None,
            })
        }
        Op::Add {
            lhs,
            rhs,
            output,
            activation,
        } => {
            let pout = params_of(graph, *output);
            let (lo, hi) = activation_clamp(*activation, pout, codes_of(graph, *output));
            let p = AddParams::new(params_of(graph, *lhs), params_of(graph, *rhs), pout, lo, hi)
                .map_err(|e| {
                    op_err(
                        index,
                        kind,
                        format!("its rescaling multipliers cannot be formed: {e}"),
                    )
                })?;
            Prepared::Add(p)
        }
        Op::AveragePool2d {
            input,
            output,
            filter,
            stride,
            padding,
            activation,
        } => Prepared::AveragePool(pool_prep(
            graph,
            *input,
            *output,
            *filter,
            *stride,
            *padding,
            *activation,
        )),
        Op::MaxPool2d {
            input,
            output,
            filter,
            stride,
            padding,
            activation,
        } => Prepared::MaxPool(pool_prep(
            graph,
            *input,
            *output,
            *filter,
            *stride,
            *padding,
            *activation,
        )),
        Op::Concat { inputs, output, .. } => {
            let pout = params_of(graph, *output);
            let tables = inputs
                .iter()
                .map(|&id| {
                    let pin = params_of(graph, id);
                    (pin != pout).then(|| match dtype {
                        DType::U8 => Table::U8(RequantTable::<u8>::new(pin, pout)),
                        _ => Table::I8(RequantTable::<i8>::new(pin, pout)),
                    })
                })
                .collect();
            Prepared::Concat(tables)
        }
        Op::Logistic { input, .. } => {
            let pin = params_of(graph, *input);
            Prepared::Logistic(match dtype {
                DType::U8 => Table::U8(LogisticTable::<u8>::new(pin)),
                _ => Table::I8(LogisticTable::<i8>::new(pin)),
            })
        }
        Op::Softmax { input, beta, .. } => {
            let x = graph.tensor(*input);
            let depth = *x.shape.last().expect("validated: rank >= 1");
            let params =
                SoftmaxParams::new(params_of(graph, *input).scale, *beta).map_err(|e| {
                    op_err(
                        index,
                        kind,
                        format!(
                            "beta {beta} with input {} gives no integer softmax parameters: {e}",
                            describe(graph, *input)
                        ),
                    )
                })?;
            Prepared::Softmax {
                params,
                outer: x.num_elements() / depth,
                depth,
            }
        }
        Op::FullyConnectedF64 {
            input,
            weights,
            output,
            activation,
            ..
        } => {
            let (pin, pout) = (params_of(graph, *input), params_of(graph, *output));
            let w = graph.tensor(*weights);
            let (out_features, depth) = (w.shape[0], w.shape[1]);
            let (s_w, z_w) = weight_params(graph, *weights);
            let scales = s_w
                .iter()
                .map(|&s| {
                    let m = intq_kernels::reference::real_scale(pin.scale, s, pout.scale);
                    intq_quant::DoubleMultiplier::from_f64(m).map_err(|e| {
                        op_err(
                            index,
                            kind,
                            format!("its multiplier S_in * S_w / S_out cannot be formed: {e}"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            Prepared::FullyConnectedF64 {
                fc: FcPrep {
                    batches: graph.tensor(*input).num_elements() / depth,
                    depth,
                    out_features,
                    input_zero_point: pin.zero_point,
                    weight_zero_points: z_w,
                    multipliers: Vec::new(),
                    output_zero_point: pout.zero_point,
                    clamp: activation_clamp(*activation, pout, codes_of(graph, *output)),
                    fast: None,
                },
                scales,
            }
        }
        Op::LogisticLut { input, .. } => {
            let pin = params_of(graph, *input);
            Prepared::Logistic(match dtype {
                DType::U8 => Table::U8(intq_kernels::reference::tflite_logistic_table::<u8>(pin)),
                _ => Table::I8(intq_kernels::reference::tflite_logistic_table::<i8>(pin)),
            })
        }
        Op::Pad { output, .. } => Prepared::Pad(params_of(graph, *output).zero_point),
        Op::Mean {
            input,
            output,
            axes,
            ..
        } => {
            let (pin, pout) = (params_of(graph, *input), params_of(graph, *output));
            let x = graph.tensor(*input);
            let n: usize = axes.iter().map(|&a| x.shape[a]).product();
            let base = QuantizedMultiplier::from_real(pin.scale as f64 / pout.scale as f64)
                .map_err(|e| {
                    op_err(
                        index,
                        kind,
                        format!("its multiplier S_in / S_out cannot be formed: {e}"),
                    )
                })?;
            Prepared::Mean {
                params: intq_kernels::reference::MeanParams::new(base, n),
                input_zero_point: pin.zero_point,
                output_zero_point: pout.zero_point,
            }
        }
        Op::Mul { .. }
        | Op::Sub { .. }
        | Op::Relu { .. }
        | Op::LeakyRelu { .. }
        | Op::HardSwish { .. }
        | Op::Tanh { .. }
        | Op::ResizeNearest { .. }
        | Op::ResizeBilinear { .. }
        | Op::Prelu { .. } => crate::tflite_ops::prepare(graph, index, op)?,
        Op::Maximum { .. } | Op::Minimum { .. } | Op::Transpose { .. } | Op::Slice { .. } => {
            Prepared::Move
        }
        Op::TransposeConv {
            input,
            filter,
            output,
            stride,
            padding,
            activation,
            ..
        } => Prepared::TransposeConv(transpose_conv_prep(
            graph,
            index,
            kind,
            *input,
            *filter,
            *output,
            *stride,
            *padding,
            *activation,
        )?),
        Op::SpaceToBatch { output, .. } => Prepared::Pad(params_of(graph, *output).zero_point),
        Op::BatchToSpace { .. } | Op::DepthToSpace { .. } => Prepared::Move,
        Op::Reshape { .. } => Prepared::Reshape,
        Op::Gather { .. } | Op::ReduceMax { .. } | Op::ArgMax { .. } => Prepared::Move,
        Op::Sum {
            input,
            output,
            axes,
            ..
        } => {
            let (pin, pout) = (params_of(graph, *input), params_of(graph, *output));
            let ratio = pin.scale as f64 / pout.scale as f64;
            let multiplier = QuantizedMultiplier::from_real(ratio).map_err(|e| {
                op_err(
                    index,
                    kind,
                    format!("its multiplier S_in / S_out cannot be formed: {e}"),
                )
            })?;
            Prepared::Sum(intq_kernels::reference::SumParams {
                multiplier,
                input_zero_point: pin.zero_point,
                output_zero_point: pout.zero_point,
                elements: axes
                    .iter()
                    .map(|&a| graph.tensor(*input).shape[a])
                    .product(),
            })
        }
        Op::L2Normalization { input, .. } => {
            Prepared::L2Normalization(params_of(graph, *input).zero_point)
        }
        Op::Quantize { output, .. } => {
            Prepared::Quantize(params_of(graph, *output), codes_of(graph, *output))
        }
        Op::Dequantize { input, .. } => Prepared::Dequantize(params_of(graph, *input)),
        Op::DetectionPostProcess { anchors, .. } => {
            Prepared::Detection(anchor_reals(graph, *anchors))
        }
    })
}

/// The reals of a constant anchors tensor: float32 as they are, uint8 dequantized as TFLite's
/// post-process dequantizes them.
pub(crate) fn anchor_reals(graph: &Graph, anchors: TensorId) -> Vec<f32> {
    let t = graph.tensor(anchors);
    match (&t.data, t.params()) {
        (Some(crate::TensorData::F32(v)), _) => v.clone(),
        (Some(crate::TensorData::U8(v)), Some(p)) => {
            let input = intq_kernels::reference::DetectionInput::U8 {
                codes: v,
                scale: p.scale,
                zero_point: p.zero_point,
            };
            (0..v.len()).map(|i| input.real(i)).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::code_range;
    use crate::GraphBuilder;

    fn p(scale: f32, zero_point: i32) -> QuantParams {
        QuantParams { scale, zero_point }
    }

    #[test]
    fn activation_clamps_match_tflite() {
        // S = 0.05, Z = 10 (uint8): quantize(6) = 10 + round(120) = 130, quantize(+-1) = 10 +- 20.
        let q = p(0.05, 10);
        assert_eq!(
            activation_clamp(Activation::None, q, code_range(DType::U8).unwrap()),
            (0, 255)
        );
        assert_eq!(
            activation_clamp(Activation::Relu, q, code_range(DType::U8).unwrap()),
            (10, 255)
        );
        assert_eq!(
            activation_clamp(Activation::Relu6, q, code_range(DType::U8).unwrap()),
            (10, 130)
        );
        assert_eq!(
            activation_clamp(Activation::ReluN1To1, q, code_range(DType::U8).unwrap()),
            (0, 30)
        );
        // int8, Z = -128: ReLU's lower bound is the type minimum; 6 / 0.1 = 60 -> -68.
        let q = p(0.1, -128);
        assert_eq!(
            activation_clamp(Activation::Relu, q, code_range(DType::I8).unwrap()),
            (-128, 127)
        );
        assert_eq!(
            activation_clamp(Activation::Relu6, q, code_range(DType::I8).unwrap()),
            (-128, -68)
        );
        // 6 / (6/255) rounds to 255 exactly only if f32 says so: with S = 6/255 the quotient is
        // 255.00000x or 254.99999x; either way round gives 255, so the upper clamp is 255.
        let q = p(6.0 / 255.0, 0);
        assert_eq!(
            activation_clamp(Activation::Relu6, q, code_range(DType::U8).unwrap()),
            (0, 255)
        );
        // Half-way: 1 / 0.4 = 2.5 rounds away from zero to 3 (TfLiteRound), so ReluN1To1 is
        // [Z - 3, Z + 3].
        let q = p(0.4, 0);
        assert_eq!(
            activation_clamp(Activation::ReluN1To1, q, code_range(DType::I8).unwrap()),
            (-3, 3)
        );
        // A tiny scale: 6 / 1e-30 saturates instead of wrapping; the clamp stays the type's.
        let q = p(1e-30, 127);
        assert_eq!(
            activation_clamp(Activation::Relu6, q, code_range(DType::I8).unwrap()),
            (127, 127)
        );
        assert_eq!(
            activation_clamp(Activation::ReluN1To1, q, code_range(DType::I8).unwrap()),
            (-128, 127)
        );
    }

    /// x -> A -> B -> C -> D (chain of reshapes) plus a side branch: with reuse, a chain needs
    /// two buffers, and the graph output is never overwritten.
    #[test]
    fn chain_of_reshapes_reuses_two_buffers() {
        let mut b = GraphBuilder::new();
        let q = Some(Quant::PerTensor(p(0.1, 3)));
        let ids: Vec<TensorId> = (0..5)
            .map(|i| b.tensor(&format!("t{i}"), DType::U8, &[2, 3], q.clone()))
            .collect();
        for w in ids.windows(2) {
            b.op(Op::Reshape {
                input: w[0],
                output: w[1],
            });
        }
        b.input(ids[0]).output(ids[4]);
        let g = b.finish().unwrap();
        let plan = Plan::new(&g).unwrap();
        assert_eq!(plan.order, vec![0, 1, 2, 3]);
        assert_eq!(plan.memory.slots.len(), 2);
        // Keeping t2 pins its buffer: t3 and t4 must use others.
        let m = plan_memory(&g, &plan.order, &[ids[2]]);
        let s2 = m.slot_of[2].unwrap();
        assert!(m.slot_of[3] != Some(s2) && m.slot_of[4] != Some(s2));
        // Every op's output differs from its input's slot.
        for w in ids.windows(2) {
            assert_ne!(m.slot_of[w[0].index()], m.slot_of[w[1].index()]);
        }
    }
}
