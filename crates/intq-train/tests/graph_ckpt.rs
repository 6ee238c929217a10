//! Checkpoints of imported networks: a saved and reloaded network converts to the same integer
//! graph and computes the same fake-quant outputs; damaged files are errors naming the tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use intq_train::graph_ckpt::{self, FORMAT, ONNX_TENSOR};
use intq_train::graph_export::export_graph;
use intq_train::graph_net::GraphNet;
use intq_train::layers::LayerOpts;
use intq_train::sgd::{SgdStep, Velocity};
use intq_train::{Ctx, QuantCfg};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../intq-onnx/tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("graph_ckpt");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn input() -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture("resnet_tiny.input.npy")).unwrap();
    let (h, v) = intq_data::npy::parse::<f32>(&bytes).unwrap();
    (h.shape, v)
}

/// resnet_tiny with ImageNet's normalization (folded into its first conv) after two QAT steps,
/// saved to `name`; returns the network and its quantization.
fn trained(name: &str) -> (GraphNet, QuantCfg, PathBuf, Velocity) {
    let device = intq_train::train_device();
    let onnx = std::fs::read(fixture("resnet_tiny.onnx")).unwrap();
    let g = intq_onnx::load_bytes(&onnx).unwrap();
    let mut net = GraphNet::from_graph(&g, LayerOpts::default(), &device).unwrap();
    net.set_normalize(&intq_data::Normalize::imagenet())
        .unwrap();
    let quant = QuantCfg::uint8(8, 8).unwrap();
    let (s, x) = input();
    let x: Tensor<4> = Tensor::from_data(TensorData::new(x, [s[0], s[1], s[2], s[3]]), &device);
    let mut vel = Velocity::default();
    for step in 0..2 {
        let ctx = Ctx {
            training: true,
            step,
            quant: Some(quant),
            exact: false,
            log: None,
        };
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 4, 7, 0], [4]), &device);
        let sgd = SgdStep {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
        };
        net.train_step(x.clone(), y, &ctx, &mut vel, sgd).unwrap();
    }
    let path = scratch(name);
    let meta = HashMap::from([("scheme".to_string(), "uint8".to_string())]);
    graph_ckpt::save(&path, &net, &onnx, &vel, &meta).unwrap();
    (net, quant, path, vel)
}

#[test]
fn a_reloaded_checkpoint_is_the_same_network() {
    let (net, quant, path, vel) = trained("roundtrip.ckpt");
    let bytes = std::fs::read(&path).unwrap();
    assert!(graph_ckpt::is_graph_checkpoint(&bytes));
    let device = intq_train::train_device();
    let loaded = graph_ckpt::load(&path, LayerOpts::default(), &device).unwrap();
    assert_eq!(loaded.meta["scheme"], "uint8");
    assert_eq!(loaded.meta["format"], FORMAT);
    assert_eq!(loaded.velocity.by_id.len(), vel.by_id.len());
    assert!(!vel.by_id.is_empty());
    assert_eq!(loaded.meta["normalize"], "imagenet");
    assert_eq!(loaded.net.normalize, net.normalize);
    assert_eq!(loaded.net.fold_layer, Some(0));
    assert_eq!(loaded.net.input.mean, net.input.mean);
    for float_edges in [false, true] {
        assert_eq!(
            export_graph(&loaded.net, &quant, float_edges).unwrap(),
            export_graph(&net, &quant, float_edges).unwrap()
        );
    }
    let (s, x) = input();
    let x: Tensor<4> = Tensor::from_data(TensorData::new(x, [s[0], s[1], s[2], s[3]]), &device);
    let a = net.forward(x.clone(), &Ctx::eval(Some(quant))).unwrap();
    let b = loaded.net.forward(x, &Ctx::eval(Some(quant))).unwrap();
    assert_eq!(
        intq_train::fake_quant::host_vec(a),
        intq_train::fake_quant::host_vec(b)
    );
}

type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

/// The checkpoint at `path` rewritten by `f`, saved as `name`; the error loading it.
fn damaged(
    path: &Path,
    name: &str,
    f: impl FnOnce(&mut Vec<Entry>, &mut HashMap<String, String>),
) -> String {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, h) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = h.metadata().clone().unwrap();
    let mut entries: Vec<Entry> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    f(&mut entries, &mut meta);
    let views: Vec<_> = entries
        .iter()
        .map(|(n, t, d, b)| (n.clone(), TensorView::new(*t, d.clone(), b).unwrap()))
        .collect();
    let out = scratch(name);
    std::fs::write(
        &out,
        safetensors::tensor::serialize(views, Some(meta)).unwrap(),
    )
    .unwrap();
    match graph_ckpt::load(&out, LayerOpts::default(), &intq_train::train_device()) {
        Ok(_) => panic!("{name} loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn damaged_checkpoints_are_refused_naming_the_tensor() {
    let (_, _, path, _) = trained("source.ckpt");
    let e = damaged(&path, "missing.ckpt", |t, _| {
        t.retain(|e| !e.0.ends_with(".weight") || e.0.starts_with("momentum/"))
    });
    assert!(e.contains("is missing"), "{e}");
    let e = damaged(&path, "shape.ckpt", |t, _| {
        let w = t
            .iter_mut()
            .find(|e| e.0.ends_with(".weight") && !e.0.starts_with("momentum/"))
            .unwrap();
        let n = w.2.iter().product::<usize>();
        w.2 = vec![n];
    });
    assert!(e.contains("expected F32"), "{e}");
    let e = damaged(&path, "extra.ckpt", |t, _| {
        t.push(("layers.99.bogus".into(), Dtype::F32, vec![1], vec![0; 4]))
    });
    assert!(
        e.contains("layers.99.bogus") && e.contains("not part"),
        "{e}"
    );
    let e = damaged(&path, "nan.ckpt", |t, _| {
        let w = t
            .iter_mut()
            .find(|e| e.0.ends_with(".weight") && !e.0.starts_with("momentum/"))
            .unwrap();
        w.3[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    assert!(e.contains("non-finite"), "{e}");
    let e = damaged(&path, "onnx.ckpt", |t, _| {
        let m = t.iter_mut().find(|e| e.0 == ONNX_TENSOR).unwrap();
        m.3.truncate(m.3.len() / 2);
        m.2 = vec![m.3.len()];
    });
    assert!(e.contains("stored ONNX model"), "{e}");
    let e = damaged(&path, "format.ckpt", |_, m| {
        m.insert("format".into(), "intq-checkpoint-9".into());
    });
    assert!(e.contains("not a checkpoint of an imported network"), "{e}");
    let e = damaged(&path, "normalize.ckpt", |_, m| {
        m.insert("normalize".into(), "0.5,0.5/1,1".into());
    });
    assert!(
        e.ends_with(
            "normalize.ckpt: metadata \"normalize\": --normalize 0.5,0.5/1,1 has 2 values per channel; the network takes 3 \
             channels"
        ),
        "{e}"
    );
    std::fs::write(
        scratch("garbage.ckpt"),
        b"\x05\x00\x00\x00\x00\x00\x00\x00{}",
    )
    .unwrap();
    assert!(graph_ckpt::load(
        &scratch("garbage.ckpt"),
        LayerOpts::default(),
        &intq_train::train_device()
    )
    .is_err());
}
