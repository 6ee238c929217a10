//! The integer executor: runs a planned graph op by op through the reference kernels (or, for
//! conv, depthwise, fully connected, equal-shape Add and both pool ops, the fast kernels of the
//! plan's tier), with activations in the planner's shared buffers (kept between runs in the
//! plan's arena). Only Quantize and Dequantize touch floats, at the model's edges.

use crate::plan::{
    AnyLogisticTable, AnyRequantTable, ConvPrep, FastConv, FcPrep, MemoryPlan, Plan, Prepared,
    Table,
};
use crate::validate::describe;
use crate::{DType, EngineError, Graph, Op, TensorData, TensorId};
use intq_kernels::gemm::{threads_for_work, Code8};
use intq_kernels::reference::{self as k, ConcatInput, LogisticTable, RequantTable};
use intq_kernels::{Multipliers, OutputStage};

/// An 8-bit code type together with the ways to find its values in the type-erased containers.
/// The graph is validated, so a container of the wrong type is an engine bug, not bad input.
pub(crate) trait Code: Code8 + Ord {
    fn slice(d: &TensorData) -> &[Self];
    fn requant(t: &AnyRequantTable) -> &RequantTable<Self>;
    fn logistic(t: &AnyLogisticTable) -> &LogisticTable<Self>;
}

impl Code for u8 {
    fn slice(d: &TensorData) -> &[u8] {
        match d {
            TensorData::U8(v) => v,
            other => unreachable!("expected uint8 data, found {}", other.dtype()),
        }
    }
    fn requant(t: &AnyRequantTable) -> &RequantTable<u8> {
        match t {
            Table::U8(t) => t,
            Table::I8(_) => unreachable!("int8 table for a uint8 op"),
        }
    }
    fn logistic(t: &AnyLogisticTable) -> &LogisticTable<u8> {
        match t {
            Table::U8(t) => t,
            Table::I8(_) => unreachable!("int8 table for a uint8 op"),
        }
    }
}

impl Code for i8 {
    fn slice(d: &TensorData) -> &[i8] {
        match d {
            TensorData::I8(v) => v,
            other => unreachable!("expected int8 data, found {}", other.dtype()),
        }
    }
    fn requant(t: &AnyRequantTable) -> &RequantTable<i8> {
        match t {
            Table::I8(t) => t,
            Table::U8(_) => unreachable!("uint8 table for an int8 op"),
        }
    }
    fn logistic(t: &AnyLogisticTable) -> &LogisticTable<i8> {
        match t {
            Table::I8(t) => t,
            Table::U8(_) => unreachable!("uint8 table for an int8 op"),
        }
    }
}

/// Checks run-time inputs against the graph: one per graph input, each of the input's type and
/// element count. Errors name the input by position and name.
pub(crate) fn check_inputs(
    graph: &Graph,
    inputs: &[TensorData],
    accept_f32_for_codes: bool,
) -> Result<(), EngineError> {
    if inputs.len() != graph.inputs().len() {
        return Err(EngineError::Run(format!(
            "the graph has {} inputs but {} values were given",
            graph.inputs().len(),
            inputs.len()
        )));
    }
    for (i, (&id, value)) in graph.inputs().iter().zip(inputs).enumerate() {
        let t = graph.tensor(id);
        let type_ok = value.dtype() == t.dtype
            || (accept_f32_for_codes && value.dtype() == DType::F32 && t.params().is_some());
        if !type_ok {
            return Err(EngineError::Run(format!(
                "input {i} ({}) is {}, but a {} value was given",
                describe(graph, id),
                t.dtype,
                value.dtype()
            )));
        }
        if value.len() != t.num_elements() {
            return Err(EngineError::Run(format!(
                "input {i} ({}) has shape {:?} ({} elements), but {} elements were given",
                describe(graph, id),
                t.shape,
                t.num_elements(),
                value.len()
            )));
        }
        if let Some((lo, hi)) = t.code_range {
            // Found without a heap allocation: a prepared context's run makes none.
            let outside = |codes: &mut dyn Iterator<Item = i32>| {
                codes.enumerate().find(|(_, c)| !(lo..=hi).contains(c))
            };
            let found = match value {
                TensorData::U8(v) => outside(&mut v.iter().map(|&c| c as i32)),
                TensorData::I8(v) => outside(&mut v.iter().map(|&c| c as i32)),
                _ => None,
            };
            if let Some((at, c)) = found {
                return Err(EngineError::Run(format!(
                    "input {i} ({}) holds codes [{lo}, {hi}] only, but element {at} is {c}",
                    describe(graph, id)
                )));
            }
        }
    }
    Ok(())
}

/// Checks that every requested tensor exists and has a value after a run: a constant, a graph
/// input, or some op's output.
pub(crate) fn check_wanted(graph: &Graph, wanted: &[TensorId]) -> Result<(), EngineError> {
    let count = graph.tensors().len();
    for &id in wanted {
        if id.index() >= count {
            return Err(EngineError::Run(format!(
                "tensor {id} was requested, but the graph has {count} tensors"
            )));
        }
        let computed = graph.tensor(id).is_constant()
            || graph.inputs().contains(&id)
            || graph.ops().iter().any(|op| op.output() == id);
        if !computed {
            return Err(EngineError::Run(format!(
                "tensor {} was requested, but it is not a constant, not a graph input, and no op \
                 writes it",
                describe(graph, id)
            )));
        }
    }
    Ok(())
}

/// Activation buffer sets of a plan's default [`MemoryPlan`], returned after each run and taken
/// by the next: every op writes the whole live part of its output before anything reads it,
/// so a reused buffer needs no zeroing (what lies past the live part is never read).
#[derive(Default)]
pub(crate) struct Arena(std::sync::Mutex<Vec<Vec<TensorData>>>);

/// At most this many sets are kept (one per run in flight at once, up to it).
const ARENA_SETS: usize = 4;

impl Arena {
    fn take(&self, memory: &MemoryPlan) -> Vec<TensorData> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        kept.unwrap_or_else(|| {
            memory
                .slots
                .iter()
                .map(|&(dtype, n)| TensorData::zeros(dtype, n))
                .collect()
        })
    }
    fn give_back(&self, buffers: Vec<TensorData>) {
        let mut sets = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if sets.len() < ARENA_SETS {
            sets.push(buffers);
        }
    }
}

impl Clone for Arena {
    /// A clone starts with no buffers of its own.
    fn clone(&self) -> Self {
        Arena::default()
    }
}

impl PartialEq for Arena {
    /// Scratch, not part of what a plan is.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Arena")
    }
}

/// The values of one run: the planner's buffers, and the graph for constants and shapes.
struct Frame<'a> {
    graph: &'a Graph,
    /// Threads for the fast kernels.
    threads: usize,
    /// Which kernels run conv, depthwise, FC and Add.
    tier: intq_kernels::KernelTier,
    memory: &'a MemoryPlan,
    buffers: Vec<TensorData>,
    /// The post-process's result in this run, which its four ops share.
    detections: std::cell::RefCell<DetectionCache>,
}

impl<'a> Frame<'a> {
    /// The tensor's value: its constant data, or the live part of its buffer.
    fn data(&self, id: TensorId) -> &TensorData {
        let t = self.graph.tensor(id);
        match &t.data {
            Some(d) => d,
            None => {
                let slot = self.memory.slot_of[id.index()]
                    .unwrap_or_else(|| unreachable!("{} has no buffer", describe(self.graph, id)));
                &self.buffers[slot]
            }
        }
    }

    fn codes<T: Code>(&self, id: TensorId) -> &[T] {
        &T::slice(self.data(id))[..self.graph.tensor(id).num_elements()]
    }

    fn i32s(&self, id: TensorId) -> &[i32] {
        match self.data(id) {
            TensorData::I32(v) => v,
            other => unreachable!("expected int32 bias, found {}", other.dtype()),
        }
    }

    fn f32s(&self, id: TensorId) -> &[f32] {
        match self.data(id) {
            TensorData::F32(v) => &v[..self.graph.tensor(id).num_elements()],
            other => unreachable!("expected float32, found {}", other.dtype()),
        }
    }

    fn shape(&self, id: TensorId) -> &'a [usize] {
        &self.graph.tensor(id).shape
    }

    fn shape4(&self, id: TensorId) -> [usize; 4] {
        let s = self.shape(id);
        [s[0], s[1], s[2], s[3]]
    }

    /// The tensor's value as returned to the caller.
    fn value(&self, id: TensorId) -> TensorData {
        let n = self.graph.tensor(id).num_elements();
        match self.data(id) {
            TensorData::U8(v) => TensorData::U8(v[..n].to_vec()),
            TensorData::I8(v) => TensorData::I8(v[..n].to_vec()),
            TensorData::I32(v) => TensorData::I32(v[..n].to_vec()),
            TensorData::F32(v) => TensorData::F32(v[..n].to_vec()),
        }
    }
}

/// Runs the graph on `inputs` (already checked) with buffers from `memory`, and returns the
/// values of `wanted` (which `memory` must keep alive).
pub(crate) fn run(
    graph: &Graph,
    plan: &Plan,
    memory: &MemoryPlan,
    inputs: &[TensorData],
    wanted: &[TensorId],
) -> Vec<TensorData> {
    run_timed(graph, plan, memory, inputs, wanted, None)
}

/// [`run`], adding each op's wall time to `times[op index]` when given.
pub(crate) fn run_timed(
    graph: &Graph,
    plan: &Plan,
    memory: &MemoryPlan,
    inputs: &[TensorData],
    wanted: &[TensorId],
    times: Option<&mut [std::time::Duration]>,
) -> Vec<TensorData> {
    // Only the plan's own memory layout is kept between runs; a run keeping extra tensors
    // alive (`run_with`) has a layout of its own and allocates it.
    let reuse = std::ptr::eq(memory, &plan.memory);
    let mut frame = Frame {
        graph,
        threads: plan.threads,
        tier: plan.tier,
        memory,
        detections: Default::default(),
        buffers: if reuse {
            plan.arena.take(memory)
        } else {
            memory
                .slots
                .iter()
                .map(|&(dtype, n)| TensorData::zeros(dtype, n))
                .collect()
        },
    };
    for (&id, value) in graph.inputs().iter().zip(inputs) {
        if let Some(slot) = memory.slot_of[id.index()] {
            copy_into(&mut frame.buffers[slot], value);
        }
    }
    // The fast kernels split an op's work over the kernel team's spinning helpers
    // (`intq_kernels::gemm::parallel_for`), which take a job without a wake-up.
    run_ops(graph, plan, memory, &mut frame, times);
    let values = wanted.iter().map(|&id| frame.value(id)).collect();
    if reuse {
        plan.arena.give_back(frame.buffers);
    }
    values
}

/// Runs the graph on `inputs` (already checked) in caller-owned `buffers` that fit the plan's
/// own memory layout (a [`crate::Context`]'s), leaving every kept value in its buffer.
pub(crate) fn run_in_buffers(
    graph: &Graph,
    plan: &Plan,
    threads: usize,
    buffers: &mut Vec<TensorData>,
    inputs: &[TensorData],
) {
    let memory = &plan.memory;
    let mut frame = Frame {
        graph,
        threads,
        tier: plan.tier,
        memory,
        detections: Default::default(),
        buffers: std::mem::take(buffers),
    };
    for (&id, value) in graph.inputs().iter().zip(inputs) {
        if let Some(slot) = memory.slot_of[id.index()] {
            copy_into(&mut frame.buffers[slot], value);
        }
    }
    run_ops(graph, plan, memory, &mut frame, None);
    *buffers = frame.buffers;
}

/// The ops of `plan`, in order, on `frame`'s buffers.
fn run_ops(
    graph: &Graph,
    plan: &Plan,
    memory: &MemoryPlan,
    frame: &mut Frame,
    mut times: Option<&mut [std::time::Duration]>,
) {
    for &i in &plan.order {
        let start = times.is_some().then(std::time::Instant::now);
        let op = &graph.ops()[i];
        let out = op.output();
        let slot = memory.slot_of[out.index()].expect("every op output has a buffer");
        // Take the output buffer out of the frame so the op can read its inputs (which the
        // planner put in other buffers) while writing it.
        let mut buffer = std::mem::replace(&mut frame.buffers[slot], TensorData::U8(Vec::new()));
        let n = graph.tensor(out).num_elements();
        match &mut buffer {
            TensorData::U8(v) => run_coded::<u8>(frame, op, &plan.prepared[i], &mut v[..n]),
            TensorData::I8(v) => run_coded::<i8>(frame, op, &plan.prepared[i], &mut v[..n]),
            TensorData::F32(v) => dequantize(frame, op, &plan.prepared[i], &mut v[..n]),
            TensorData::I32(v) => arg_max(frame, op, &mut v[..n]),
        }
        frame.buffers[slot] = buffer;
        if let (Some(t), Some(start)) = (times.as_deref_mut(), start) {
            t[i] += start.elapsed();
        }
    }
}

/// One run's post-process result with the operands and options it was computed from: the
/// first of the op's four engine ops computes it, the other three copy their part from it.
pub(crate) type DetectionCache = Option<(DetectionKey, k::Detections)>;
type DetectionKey = (TensorId, TensorId, TensorId, k::DetectionOptions);

/// Writes the part of the post-process's result that `op` outputs, running the post-process
/// unless `cache` holds it for these operands (shared with the float executor, which hands it
/// reals). A cache lives for one run, in which each tensor is written once.
pub(crate) fn detection_part<'a>(
    graph: &Graph,
    op: &Op,
    anchors: &[f32],
    input: impl Fn(TensorId) -> k::DetectionInput<'a>,
    cache: &mut DetectionCache,
    out: &mut [f32],
) {
    let Op::DetectionPostProcess {
        boxes,
        scores,
        anchors: anchors_id,
        part,
        options,
        ..
    } = op
    else {
        unreachable!("{} is not the post-process", op.kind())
    };
    let key = (*boxes, *scores, *anchors_id, *options);
    if cache.as_ref().is_none_or(|(k, _)| *k != key) {
        let (b, s) = (&graph.tensor(*boxes).shape, &graph.tensor(*scores).shape);
        let d =
            k::detection_postprocess(input(*boxes), b[2], input(*scores), s[2], anchors, options);
        *cache = Some((key, d));
    }
    let d = &cache.as_ref().expect("filled above").1;
    match part {
        crate::DetectionPart::Boxes => out.copy_from_slice(&d.boxes),
        crate::DetectionPart::Classes => out.copy_from_slice(&d.classes),
        crate::DetectionPart::Scores => out.copy_from_slice(&d.scores),
        crate::DetectionPart::Count => out[0] = d.count,
    }
}

fn copy_into(buffer: &mut TensorData, value: &TensorData) {
    match (buffer, value) {
        (TensorData::U8(b), TensorData::U8(v)) => b[..v.len()].copy_from_slice(v),
        (TensorData::I8(b), TensorData::I8(v)) => b[..v.len()].copy_from_slice(v),
        (TensorData::I32(b), TensorData::I32(v)) => b[..v.len()].copy_from_slice(v),
        (TensorData::F32(b), TensorData::F32(v)) => b[..v.len()].copy_from_slice(v),
        (b, v) => unreachable!("{} value for a {} buffer", v.dtype(), b.dtype()),
    }
}

fn stage<'p>(
    bias: Option<&'p [i32]>,
    multipliers: &'p [intq_quant::QuantizedMultiplier],
    output_zero_point: i32,
    clamp: (i32, i32),
) -> OutputStage<'p> {
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

/// Runs conv, depthwise and FC ops on the fast kernels the plan prepared for them; false when
/// the op has none (or it cannot take these shapes) and the reference kernel must run.
fn run_fast<T: Code>(f: &Frame, op: &Op, prep: &Prepared, out: &mut [T]) -> bool {
    match (op, prep) {
        (
            Op::Conv2d {
                input,
                filter,
                output,
                ..
            },
            Prepared::Conv(p),
        )
        | (
            Op::DepthwiseConv2d {
                input,
                filter,
                output,
                ..
            },
            Prepared::Depthwise(p),
        ) => fast_conv(f, p, *input, *filter, *output, out),
        (Op::FullyConnected { input, .. }, Prepared::FullyConnected(p)) => {
            fast_fc(f, p, *input, out)
        }
        _ => false,
    }
}

/// Runs a (depthwise) convolution on its fast kernel, if it has one that takes these shapes;
/// false means the reference kernel must run.
fn fast_conv<T: Code>(
    f: &Frame,
    p: &ConvPrep,
    input: TensorId,
    filter: TensorId,
    output: TensorId,
    out: &mut [T],
) -> bool {
    let (ishape, oshape) = (f.shape4(input), f.shape4(output));
    let x = f.codes::<T>(input);
    match &p.fast {
        Some(FastConv::Conv(c)) if c.supports::<T>(ishape, oshape) => {
            let [_, kh, kw, ic] = f.shape4(filter);
            let t = threads_for_work(f.threads, out.len() * kh * kw * ic);
            c.run(x, ishape, out, oshape, t);
            true
        }
        Some(FastConv::Depthwise(d)) => {
            let [_, kh, kw, _] = f.shape4(filter);
            let t = threads_for_work(f.threads, out.len() * kh * kw);
            d.run(x, ishape, out, oshape, t);
            true
        }
        _ => false,
    }
}

/// Runs a fully connected layer on its fast kernel, if it has one.
fn fast_fc<T: Code>(f: &Frame, p: &FcPrep, input: TensorId, out: &mut [T]) -> bool {
    let Some(fc) = &p.fast else { return false };
    let x = f.codes::<T>(input);
    let t = threads_for_work(f.threads, out.len() * p.depth);
    fc.run(x, p.batches, out, t);
    true
}

/// Ops whose output is 8-bit codes of type `T`.
fn run_coded<T: Code>(f: &Frame, op: &Op, prep: &Prepared, out: &mut [T]) {
    if run_fast(f, op, prep, out) {
        return;
    }
    match (op, prep) {
        (
            Op::Conv2d {
                input,
                filter,
                bias,
                output,
                ..
            },
            Prepared::Conv(p),
        ) => {
            let bias = bias.map(|b| f.i32s(b));
            k::conv2d(
                f.codes::<T>(*input),
                f.shape4(*input),
                p.input_zero_point,
                f.codes::<T>(*filter),
                f.shape4(*filter),
                &p.filter_zero_points,
                &p.geometry,
                &stage(bias, &p.multipliers, p.output_zero_point, p.clamp),
                out,
                f.shape4(*output),
            )
        }
        (
            Op::DepthwiseConv2d {
                input,
                filter,
                bias,
                output,
                depth_multiplier,
                ..
            },
            Prepared::Depthwise(p),
        ) => {
            let bias = bias.map(|b| f.i32s(b));
            k::depthwise_conv2d(
                f.codes::<T>(*input),
                f.shape4(*input),
                p.input_zero_point,
                f.codes::<T>(*filter),
                f.shape4(*filter),
                &p.filter_zero_points,
                *depth_multiplier,
                &p.geometry,
                &stage(bias, &p.multipliers, p.output_zero_point, p.clamp),
                out,
                f.shape4(*output),
            )
        }
        (
            Op::FullyConnected {
                input,
                weights,
                bias,
                ..
            },
            Prepared::FullyConnected(p),
        ) => {
            let bias = bias.map(|b| f.i32s(b));
            k::fully_connected(
                f.codes::<T>(*input),
                p.batches,
                p.depth,
                p.input_zero_point,
                f.codes::<T>(*weights),
                p.out_features,
                &p.weight_zero_points,
                &stage(bias, &p.multipliers, p.output_zero_point, p.clamp),
                out,
            )
        }
        (
            Op::Add {
                lhs, rhs, output, ..
            },
            Prepared::Add(p),
        ) => match f.tier {
            // Equal shapes take the vector path; broadcasting falls back to the reference.
            intq_kernels::KernelTier::Fast(isa) => intq_kernels::gemm::add(
                isa,
                f.threads,
                f.codes::<T>(*lhs),
                f.shape(*lhs),
                f.codes::<T>(*rhs),
                f.shape(*rhs),
                p,
                out,
                f.shape(*output),
            ),
            intq_kernels::KernelTier::Reference => k::add(
                f.codes::<T>(*lhs),
                f.shape(*lhs),
                f.codes::<T>(*rhs),
                f.shape(*rhs),
                p,
                out,
                f.shape(*output),
            ),
        },
        (Op::AveragePool2d { input, output, .. }, Prepared::AveragePool(p)) => match f.tier {
            intq_kernels::KernelTier::Fast(isa) => intq_kernels::gemm::average_pool(
                isa,
                f.codes::<T>(*input),
                f.shape4(*input),
                p,
                out,
                f.shape4(*output),
            ),
            intq_kernels::KernelTier::Reference => k::average_pool(
                f.codes::<T>(*input),
                f.shape4(*input),
                p,
                out,
                f.shape4(*output),
            ),
        },
        (Op::MaxPool2d { input, output, .. }, Prepared::MaxPool(p)) => match f.tier {
            intq_kernels::KernelTier::Fast(isa) => intq_kernels::gemm::max_pool(
                isa,
                f.codes::<T>(*input),
                f.shape4(*input),
                p,
                out,
                f.shape4(*output),
            ),
            intq_kernels::KernelTier::Reference => k::max_pool(
                f.codes::<T>(*input),
                f.shape4(*input),
                p,
                out,
                f.shape4(*output),
            ),
        },
        (
            Op::Concat {
                inputs,
                output,
                axis,
            },
            Prepared::Concat(tables),
        ) => {
            let parts: Vec<ConcatInput<T>> = inputs
                .iter()
                .zip(tables)
                .map(|(&id, table)| ConcatInput {
                    data: f.codes::<T>(id),
                    shape: f.shape(id),
                    requant: table.as_ref().map(T::requant),
                })
                .collect();
            k::concat(&parts, *axis, out, f.shape(*output))
        }
        (
            Op::FullyConnectedF64 {
                input,
                weights,
                bias,
                ..
            },
            Prepared::FullyConnectedF64 { fc: p, scales },
        ) => k::fully_connected_real_scale(
            f.codes::<T>(*input),
            p.batches,
            p.depth,
            p.input_zero_point,
            f.codes::<T>(*weights),
            p.out_features,
            &p.weight_zero_points,
            bias.map(|b| f.i32s(b)),
            scales,
            p.output_zero_point,
            p.clamp,
            out,
        ),
        (
            Op::Pad {
                input, paddings, ..
            },
            Prepared::Pad(code),
        ) => k::pad(
            f.codes::<T>(*input),
            f.shape(*input),
            paddings,
            T::from_i32_saturating(*code),
            out,
        ),
        (
            Op::Mean { input, axes, .. },
            Prepared::Mean {
                params,
                input_zero_point,
                output_zero_point,
            },
        ) => k::mean(
            f.codes::<T>(*input),
            f.shape(*input),
            axes,
            *input_zero_point,
            *output_zero_point,
            params,
            out,
        ),
        (Op::LogisticLut { input, .. }, Prepared::Logistic(table)) => {
            k::logistic(f.codes::<T>(*input), T::logistic(table), out)
        }
        (Op::Logistic { input, .. }, Prepared::Logistic(table)) => {
            k::logistic(f.codes::<T>(*input), T::logistic(table), out)
        }
        (
            Op::Softmax { input, .. },
            Prepared::Softmax {
                params,
                outer,
                depth,
            },
        ) => k::softmax(f.codes::<T>(*input), *outer, *depth, params, out),
        (
            Op::Mul {
                lhs, rhs, output, ..
            },
            Prepared::Mul(p),
        ) => match f.tier {
            // Equal shapes and per-channel gates take the vector path; other broadcasts the
            // reference.
            intq_kernels::KernelTier::Fast(isa) => intq_kernels::gemm::mul(
                isa,
                f.threads,
                f.codes::<T>(*lhs),
                f.shape(*lhs),
                f.codes::<T>(*rhs),
                f.shape(*rhs),
                p,
                out,
                f.shape(*output),
            ),
            intq_kernels::KernelTier::Reference => k::mul(
                f.codes::<T>(*lhs),
                f.shape(*lhs),
                f.codes::<T>(*rhs),
                f.shape(*rhs),
                p,
                out,
                f.shape(*output),
            ),
        },
        (
            Op::Sub {
                lhs, rhs, output, ..
            },
            Prepared::Sub(p),
        ) => k::sub(
            f.codes::<T>(*lhs),
            f.shape(*lhs),
            f.codes::<T>(*rhs),
            f.shape(*rhs),
            p,
            out,
            f.shape(*output),
        ),
        (Op::Relu { input, .. }, Prepared::Relu(p)) => k::relu_x(f.codes::<T>(*input), p, out),
        (Op::LeakyRelu { input, .. }, Prepared::LeakyRelu(p)) => {
            k::leaky_relu(f.codes::<T>(*input), p, out)
        }
        (Op::HardSwish { input, .. }, Prepared::HardSwish(p)) => match f.tier {
            intq_kernels::KernelTier::Fast(isa) => {
                intq_kernels::gemm::hard_swish(isa, f.threads, f.codes::<T>(*input), p, out)
            }
            intq_kernels::KernelTier::Reference => k::hard_swish(f.codes::<T>(*input), p, out),
        },
        (
            Op::ResizeNearest { input, output, .. } | Op::ResizeBilinear { input, output, .. },
            Prepared::Resize(mode, arithmetic),
        ) => match arithmetic {
            None => k::resize_nearest(
                f.codes::<T>(*input),
                f.shape4(*input),
                *mode,
                out,
                f.shape4(*output),
            ),
            Some(a) => match f.tier {
                intq_kernels::KernelTier::Fast(isa) => intq_kernels::gemm::resize_bilinear(
                    isa,
                    f.threads,
                    f.codes::<T>(*input),
                    f.shape4(*input),
                    *mode,
                    *a,
                    out,
                    f.shape4(*output),
                ),
                intq_kernels::KernelTier::Reference => k::resize_bilinear(
                    f.codes::<T>(*input),
                    f.shape4(*input),
                    *mode,
                    *a,
                    out,
                    f.shape4(*output),
                ),
            },
        },
        (Op::Prelu { input, alpha, .. }, Prepared::Prelu(p)) => k::prelu(
            f.codes::<T>(*input),
            f.shape(*input),
            f.codes::<T>(*alpha),
            f.shape(*alpha),
            p,
            out,
        ),
        (
            Op::Maximum {
                lhs, rhs, output, ..
            }
            | Op::Minimum {
                lhs, rhs, output, ..
            },
            Prepared::Move,
        ) => k::maximum_minimum(
            f.codes::<T>(*lhs),
            f.shape(*lhs),
            f.codes::<T>(*rhs),
            f.shape(*rhs),
            matches!(op, Op::Maximum { .. }),
            out,
            f.shape(*output),
        ),
        (Op::Transpose { input, perm, .. }, Prepared::Move) => {
            k::transpose(f.codes::<T>(*input), f.shape(*input), perm, out)
        }
        (
            Op::TransposeConv {
                input,
                filter,
                bias,
                output,
                ..
            },
            Prepared::TransposeConv(p),
        ) => {
            let bias = bias.map(|b| f.i32s(b));
            k::transpose_conv(
                f.codes::<T>(*input),
                f.shape4(*input),
                p.input_zero_point,
                f.codes::<T>(*filter),
                f.shape4(*filter),
                &p.filter_zero_points,
                &p.geometry,
                &stage(bias, &p.multipliers, p.output_zero_point, p.clamp),
                out,
                f.shape4(*output),
            )
        }
        (
            Op::SpaceToBatch {
                input,
                output,
                block,
                paddings,
            },
            Prepared::Pad(code),
        ) => k::space_to_batch(
            f.codes::<T>(*input),
            f.shape4(*input),
            *block,
            [paddings[0][0], paddings[1][0]],
            T::from_i32_saturating(*code),
            out,
            f.shape4(*output),
        ),
        (
            Op::BatchToSpace {
                input,
                output,
                block,
                crops,
            },
            Prepared::Move,
        ) => k::batch_to_space(
            f.codes::<T>(*input),
            f.shape4(*input),
            *block,
            [crops[0][0], crops[1][0]],
            out,
            f.shape4(*output),
        ),
        (
            Op::DepthToSpace {
                input,
                output,
                block,
            },
            Prepared::Move,
        ) => k::depth_to_space(
            f.codes::<T>(*input),
            f.shape4(*input),
            *block,
            out,
            f.shape4(*output),
        ),
        (
            Op::Slice {
                input,
                output,
                begin,
                strides,
            },
            Prepared::Move,
        ) => k::strided_slice(
            f.codes::<T>(*input),
            f.shape(*input),
            begin,
            strides,
            out,
            f.shape(*output),
        ),
        (
            Op::Gather {
                input,
                axis,
                indices,
                ..
            },
            Prepared::Move,
        ) => k::gather(f.codes::<T>(*input), f.shape(*input), *axis, indices, out),
        (Op::Sum { input, axes, .. }, Prepared::Sum(p)) => {
            k::sum(f.codes::<T>(*input), f.shape(*input), axes, p, out)
        }
        (Op::ReduceMax { input, axes, .. }, Prepared::Move) => {
            k::reduce_max(f.codes::<T>(*input), f.shape(*input), axes, out)
        }
        (Op::L2Normalization { input, .. }, Prepared::L2Normalization(z)) => {
            let s = f.shape(*input);
            k::l2_normalization(f.codes::<T>(*input), s[s.len() - 1], *z, out)
        }
        (Op::Tanh { input, .. }, Prepared::Logistic(table)) => {
            k::logistic(f.codes::<T>(*input), T::logistic(table), out)
        }
        (Op::Reshape { input, .. }, Prepared::Reshape) => k::reshape(f.codes::<T>(*input), out),
        (Op::Quantize { input, .. }, Prepared::Quantize(p, codes)) => {
            let x = f.graph.tensor(*input);
            // Codes in: validated to share the output's scale, so only the zero point moves.
            let shift = x.params().map_or(0, |pin| p.zero_point - pin.zero_point);
            match x.dtype {
                DType::U8 => shift_codes(f.codes::<u8>(*input), shift, *codes, out),
                DType::I8 => shift_codes(f.codes::<i8>(*input), shift, *codes, out),
                _ => match f.tier {
                    intq_kernels::KernelTier::Fast(isa) => intq_kernels::gemm::quantize(
                        isa,
                        f.threads,
                        f.f32s(*input),
                        *p,
                        *codes,
                        out,
                    ),
                    intq_kernels::KernelTier::Reference => {
                        k::quantize_to(f.f32s(*input), *p, *codes, out)
                    }
                },
            }
        }
        (op, prep) => unreachable!("{} planned as {prep:?}", op.kind()),
    }
}

/// Quantize of codes at one scale (TFLite's QUANTIZE between uint8 and int8 with a unit
/// multiplier): `q + Z_out - Z_in`, clamped to the output's codes.
fn shift_codes<S: Code, T: Code>(input: &[S], shift: i32, (lo, hi): (i32, i32), out: &mut [T]) {
    for (o, &x) in out.iter_mut().zip(input) {
        *o = T::from_i32_saturating((x.to_i32() + shift).clamp(lo, hi));
    }
}

/// ArgMax, the one op that writes int32.
fn arg_max(f: &Frame, op: &Op, out: &mut [i32]) {
    let Op::ArgMax { input, axis, .. } = op else {
        unreachable!("{} writes int32", op.kind())
    };
    let s = f.shape(*input);
    match f.graph.tensor(*input).dtype {
        DType::U8 => k::arg_max(f.codes::<u8>(*input), s, *axis, out),
        DType::I8 => k::arg_max(f.codes::<i8>(*input), s, *axis, out),
        other => unreachable!("ArgMax of {other}"),
    }
}

/// Dequantize, the one op that writes float32.
fn dequantize(f: &Frame, op: &Op, prep: &Prepared, out: &mut [f32]) {
    if let (Op::DetectionPostProcess { .. }, Prepared::Detection(anchors)) = (op, prep) {
        let input = |id: TensorId| match f.graph.tensor(id).params() {
            Some(p) => k::DetectionInput::U8 {
                codes: f.codes::<u8>(id),
                scale: p.scale,
                zero_point: p.zero_point,
            },
            None => k::DetectionInput::F32(f.f32s(id)),
        };
        return detection_part(
            f.graph,
            op,
            anchors,
            input,
            &mut f.detections.borrow_mut(),
            out,
        );
    }
    let (Op::Dequantize { input, .. }, Prepared::Dequantize(p)) = (op, prep) else {
        unreachable!("{} writes float32", op.kind())
    };
    match f.graph.tensor(*input).dtype {
        DType::U8 => k::dequantize(f.codes::<u8>(*input), *p, out),
        DType::I8 => k::dequantize(f.codes::<i8>(*input), *p, out),
        other => unreachable!("Dequantize of {other}"),
    }
}
