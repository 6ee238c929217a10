//! Checkpoints of imported networks ([`GraphNet`]): one safetensors file holding the ONNX model
//! the network was built from (its bytes as the U8 tensor `onnx/model`), every parameter and
//! running state (BN statistics, observers) by dotted path, the SGD momentum under
//! `momentum/<path>`, and string metadata (`format`, `normalize` as `--normalize` spells it, plus
//! the caller's keys). A checkpoint alone
//! rebuilds the network: no ONNX file is needed beside it. Written with
//! [`crate::checkpoint::write_atomic`], so a crash never leaves half a file.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::fake_quant::host_vec;
use crate::graph_net::GraphNet;
use crate::layers::LayerOpts;
use crate::sgd::{PathMapper, PathVisitor, Velocity};
use crate::TrainError;

/// The `format` metadata value of these checkpoints.
pub const FORMAT: &str = "intq-onnx-checkpoint-1";

/// The tensor holding the ONNX model's bytes.
pub const ONNX_TENSOR: &str = "onnx/model";

const MOMENTUM: &str = "momentum/";

/// The metadata key of the `--normalize` the network was trained with (absent: none).
pub const NORMALIZE: &str = "normalize";

/// A loaded checkpoint.
pub struct GraphCkpt {
    pub net: GraphNet,
    /// The imported graph the network was built from.
    pub graph: intq_onnx::Graph,
    /// The ONNX model's bytes, to save again.
    pub onnx: Vec<u8>,
    pub velocity: Velocity,
    /// The metadata, `format` included.
    pub meta: HashMap<String, String>,
}

fn collect(net: &GraphNet) -> Vec<(String, burn::module::ParamId, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    let mut v = PathVisitor::new(|path: &str, id, dims, data| {
        out.push((path.to_string(), id, dims, data));
    });
    net.input.obs.visit(&mut v);
    let input: Vec<_> = out
        .drain(..)
        .map(|(p, id, d, v)| (format!("input.{p}"), id, d, v))
        .collect();
    let mut v = PathVisitor::new(|path: &str, id, dims, data| {
        out.push((format!("layers.{path}"), id, dims, data));
    });
    net.layers.visit(&mut v);
    input.into_iter().chain(out).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Saves `net`, built from the ONNX model `onnx`, with its momentum and `meta`, atomically.
pub fn save(
    path: &Path,
    net: &GraphNet,
    onnx: &[u8],
    vel: &Velocity,
    meta: &HashMap<String, String>,
) -> Result<(), TrainError> {
    // The checkpoint must rebuild the network from these bytes alone.
    intq_onnx::load_bytes(onnx).map_err(|e| {
        TrainError::Checkpoint(format!(
            "{}: the ONNX model cannot be stored in a checkpoint ({e}); save it with its \
             weights inside the .onnx file",
            path.display()
        ))
    })?;
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    tensors.push((
        ONNX_TENSOR.into(),
        Dtype::U8,
        vec![onnx.len()],
        onnx.to_vec(),
    ));
    for (name, id, dims, data) in collect(net) {
        if let Some(v) = vel.by_id.get(&id) {
            let m = host_vec(v.clone());
            tensors.push((
                format!("{MOMENTUM}{name}"),
                Dtype::F32,
                vec![m.len()],
                f32_bytes(&m),
            ));
        }
        tensors.push((name, Dtype::F32, dims, f32_bytes(&data)));
    }
    let views = tensors
        .iter()
        .map(|(n, t, d, b)| {
            TensorView::new(*t, d.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| TrainError::Checkpoint(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut map = meta.clone();
    map.insert("format".into(), FORMAT.into());
    map.insert(NORMALIZE.into(), net.normalize.to_string());
    let bytes = safetensors::tensor::serialize(views, Some(map))
        .map_err(|e| TrainError::Checkpoint(format!("serializing {}: {e}", path.display())))?;
    crate::checkpoint::write_atomic(path, &bytes)
}

/// Whether `bytes` are a checkpoint of an imported network (by its `format` metadata).
pub fn is_graph_checkpoint(bytes: &[u8]) -> bool {
    SafeTensors::read_metadata(bytes).is_ok_and(|(_, h)| {
        h.metadata()
            .as_ref()
            .and_then(|m| m.get("format"))
            .is_some_and(|f| f == FORMAT)
    })
}

/// Loads a checkpoint written by [`save`]: the network rebuilt from the stored ONNX model, then
/// every tensor of it read from the file, which must hold exactly those (momentum optional) as
/// finite F32 of their shapes. Errors name the file and the tensor.
pub fn load(path: &Path, opts: LayerOpts, device: &Device) -> Result<GraphCkpt, TrainError> {
    let bytes =
        std::fs::read(path).map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
    let err = |msg: String| TrainError::Checkpoint(format!("{}: {msg}", path.display()));
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| err(format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    match meta.get("format") {
        Some(f) if f == FORMAT => {}
        other => {
            return Err(err(format!(
                "format {other:?} is not {FORMAT:?} (not a checkpoint of an imported network)"
            )))
        }
    }
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| err(format!("not a safetensors file: {e}")))?;
    let model = st
        .tensor(ONNX_TENSOR)
        .map_err(|_| err(format!("tensor {ONNX_TENSOR} is missing")))?;
    if model.dtype() != Dtype::U8 || model.shape().len() != 1 {
        return Err(err(format!("tensor {ONNX_TENSOR} is not a U8 vector")));
    }
    let onnx = model.data().to_vec();
    let graph = intq_onnx::load_bytes(&onnx).map_err(|e| err(format!("stored ONNX model: {e}")))?;
    let mut net = GraphNet::from_graph(&graph, opts, device).map_err(|e| err(e.to_string()))?;
    let layout = collect(&net);
    let mut known: HashMap<&str, &[usize]> = HashMap::new();
    for (name, _, dims, _) in &layout {
        known.insert(name, dims);
    }
    for (name, t) in st.iter() {
        let base = name.strip_prefix(MOMENTUM).unwrap_or(name);
        if name != ONNX_TENSOR && !known.contains_key(base) {
            return Err(err(format!(
                "tensor {name} ({:?} {:?}) is not part of the network",
                t.dtype(),
                t.shape()
            )));
        }
    }
    let read = |name: &str, dims: &[usize]| -> Result<Vec<f32>, TrainError> {
        let t = st
            .tensor(name)
            .map_err(|_| err(format!("tensor {name} is missing")))?;
        if t.dtype() != Dtype::F32 || t.shape() != dims {
            return Err(err(format!(
                "tensor {name} is {:?} {:?}, expected F32 {dims:?}",
                t.dtype(),
                t.shape()
            )));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if v.iter().any(|x| !x.is_finite()) {
            return Err(err(format!("tensor {name} holds a non-finite value")));
        }
        Ok(v)
    };
    let mut values = HashMap::new();
    for (name, _, dims, _) in &layout {
        values.insert(name.clone(), read(name, dims)?);
    }
    if let Some(n) = meta.get(NORMALIZE) {
        let n: intq_data::Normalize = n
            .parse()
            .map_err(|e| err(format!("metadata {NORMALIZE:?}: {e}")))?;
        net.set_normalize(&n).map_err(|e| match e {
            TrainError::Config(m) => err(format!("metadata {NORMALIZE:?}: {m}")),
            e => err(e.to_string()),
        })?;
    }
    let obs = std::mem::replace(
        &mut net.input.obs,
        crate::observer::EmaObserver::with_opts(opts, device),
    );
    net.input.obs = obs.map(&mut PathMapper::new(|path: &str, _: &[usize]| {
        values.remove(&format!("input.{path}"))
    }));
    let layers = std::mem::take(&mut net.layers);
    net.layers = layers.map(&mut PathMapper::new(|path: &str, _: &[usize]| {
        values.remove(&format!("layers.{path}"))
    }));
    let mut velocity = Velocity::default();
    for (name, id, dims, _) in collect(&net) {
        let key = format!("{MOMENTUM}{name}");
        if st.tensor(&key).is_ok() {
            let n = dims.iter().product();
            let v = read(&key, &[n])?;
            velocity.by_id.insert(
                id,
                Tensor::from_data(TensorData::new(v, [n]), &device.clone().inner()),
            );
        }
    }
    Ok(GraphCkpt {
        net,
        graph,
        onnx,
        velocity,
        meta,
    })
}
