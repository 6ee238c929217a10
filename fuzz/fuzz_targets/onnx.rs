//! Fuzz target: ONNX import (`intq_onnx::load_bytes`) must refuse or import any bytes, never
//! panic or over-allocate; what imports must run in f32 at batch 1 when its work is small.
//! Seeds: `crates/intq-onnx/tests/fixtures/*.onnx`.
#![no_main]

use intq_onnx::eval::{run, Tensor};
use intq_onnx::{Graph, Op};
use libfuzzer_sys::fuzz_target;

/// Largest number of multiply-adds (or window reads) a run may take.
const MAX_WORK: usize = 1 << 24;

fn work(g: &Graph) -> usize {
    g.nodes
        .iter()
        .map(|n| {
            let out: usize = g.values[n.output].shape.iter().product();
            let per = match &n.op {
                Op::Conv(c) => c.weight_dims[1] * c.weight_dims[2] * c.weight_dims[3],
                Op::Linear { in_features, .. } => *in_features,
                Op::AveragePool(p) | Op::MaxPool(p) => p.kernel[0] * p.kernel[1],
                Op::GlobalAveragePool => n
                    .inputs
                    .first()
                    .map_or(1, |&i| g.values[i].shape.iter().skip(2).product()),
                _ => 1,
            };
            out.saturating_mul(per)
        })
        .fold(0usize, usize::saturating_add)
}

fuzz_target!(|data: &[u8]| {
    let Ok(graph) = intq_onnx::load_bytes(data) else {
        return;
    };
    if work(&graph) > MAX_WORK {
        return;
    }
    let inputs: Vec<Tensor> = graph
        .inputs
        .iter()
        .map(|&i| {
            let shape = graph.values[i].shape.clone();
            let n = shape.iter().product();
            Tensor {
                shape,
                data: (0..n).map(|k| (k % 7) as f32 * 0.25 - 0.5).collect(),
            }
        })
        .collect();
    let out = run(&graph, &inputs).expect("an imported graph runs on inputs of its shape");
    assert_eq!(out.len(), graph.outputs.len());
});
