//! Calibration without training: gives a freshly built zoo network BN statistics and an observed
//! range at every activation quantizer, so [`crate::export::export`] can turn it into the
//! integer graph a trained model would give (benchmarks of the zoo architectures, tests).

use burn::tensor::{Device, Distribution, Tensor};

use crate::layers::{ConvBn, Ctx, QuantCfg};
use crate::zoo::{Arch, Net, Node};
use crate::TrainError;

/// Every conv layer of `net`, in forward order.
fn convs_mut(net: &mut Net) -> Vec<&mut ConvBn> {
    let mut out = Vec::new();
    for node in &mut net.body {
        match node {
            Node::Conv(c) => out.push(c),
            Node::Pool(_) => {}
            Node::InvRes(b) => {
                if let Some(e) = &mut b.expand {
                    out.push(e);
                }
                out.push(&mut b.dw);
                out.push(&mut b.project);
            }
            Node::Basic(b) => {
                out.push(&mut b.conv1);
                out.push(&mut b.conv2);
                if let Some(s) = &mut b.shortcut {
                    out.push(s);
                }
            }
        }
    }
    out
}

/// Calibrates `net` on `batches` batches of `batch` uniform `[0, 1)` images drawn from `device`'s
/// RNG (seed it for a reproducible network).
///
/// First one float training-mode pass with BN momentum 1, so each BN layer's moving statistics
/// become exactly that batch's statistics and the folded evaluation network normalizes its
/// activations (random weights otherwise grow or shrink them layer by layer). Then `batches`
/// QAT passes in training mode with BN frozen (the folded weights export uses) and observers
/// live, so every activation range is that of the network export converts. The first observed
/// batch sets a range; later ones move it by the observers' EMA.
pub fn calibrate(
    net: &mut Net,
    arch: Arch,
    quant: &QuantCfg,
    batch: usize,
    batches: usize,
    device: &Device,
) -> Result<(), TrainError> {
    if batch == 0 || batches == 0 {
        return Err(TrainError::Config(
            "calibration needs at least one batch of one image".into(),
        ));
    }
    let [c, h, w] = arch.input_shape();
    let images = || Tensor::<4>::random([batch, c, h, w], Distribution::Uniform(0.0, 1.0), device);
    let saved: Vec<f64> = convs_mut(net).iter().map(|l| l.momentum).collect();
    for l in convs_mut(net) {
        l.momentum = 1.0;
    }
    let float = net.forward(images(), &Ctx::float(true));
    for (l, m) in convs_mut(net).into_iter().zip(saved) {
        l.momentum = m;
    }
    float?;
    let q = QuantCfg {
        quant_delay: 0,
        freeze_bn: true,
        freeze_observers: false,
        ..*quant
    };
    let ctx = Ctx {
        training: true,
        step: 0,
        quant: Some(q),
        exact: false,
        log: None,
    };
    for _ in 0..batches {
        net.forward(images(), &ctx)?;
    }
    Ok(())
}

/// The integer graph of a zoo architecture with random weights, built the way trained models
/// are: [`Net::new`] on `device` seeded with `seed`, [`calibrate`] on two batches of two
/// random images, [`crate::export::export`] with `quant` (uint8 pixels in, logit codes out), then
/// [`with_batch`] for `batch` images. Same seed, same graph.
pub fn zoo_graph(
    arch: Arch,
    quant: &QuantCfg,
    batch: usize,
    seed: u64,
) -> Result<intq_engine::Graph, TrainError> {
    let device = crate::train_device().inner();
    device.seed(seed);
    let mut net = Net::new(arch, crate::layers::LayerOpts::default(), &device);
    calibrate(&mut net, arch, quant, 2, 2, &device)?;
    let graph = crate::export::export(&net, arch, quant, false)?;
    with_batch(&graph, batch)
}

/// `graph` (every run-time tensor with batch 1 in front) for `batch` images: the leading
/// dimension of every non-constant tensor becomes `batch`; the graph is validated again.
pub fn with_batch(
    graph: &intq_engine::Graph,
    batch: usize,
) -> Result<intq_engine::Graph, TrainError> {
    if batch == 0 {
        return Err(TrainError::Config(
            "the batch size must be at least 1".into(),
        ));
    }
    let mut tensors = graph.tensors().to_vec();
    for t in tensors.iter_mut().filter(|t| !t.is_constant()) {
        match t.shape.first_mut() {
            Some(n) if *n == 1 => *n = batch,
            _ => {
                return Err(TrainError::Export(format!(
                    "tensor {:?} (shape {:?}) has no batch-1 leading dimension",
                    t.name, t.shape
                )))
            }
        }
    }
    intq_engine::Graph::new(
        tensors,
        graph.ops().to_vec(),
        graph.inputs().to_vec(),
        graph.outputs().to_vec(),
    )
    .map_err(|e| TrainError::Export(format!("the graph at batch {batch} is invalid: {e}")))
}
