//! Benchmark and accuracy run without the CLI: float training of a zoo model on (Fashion-)MNIST,
//! then QAT fine-tuning, reporting test accuracy, seconds per epoch and median ms per step.
//!
//!     cargo run --release -p intq-train --example fashion -- small-cnn fashion-mnist 3 1 [LIMIT]

use intq_train::layers::{LayerOpts, QuantCfg};
use intq_train::trainer::{train, ImageSet, Start, TrainConfig};
use intq_train::{train_device, Arch, Net};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let arch: Arch = a.get(1).map_or("small-cnn", |s| s.as_str()).parse()?;
    let kind: intq_data::DatasetKind = a.get(2).map_or("fashion-mnist", |s| s.as_str()).parse()?;
    let epochs: usize = a.get(3).map_or(Ok(3), |s| s.parse())?;
    let qat_epochs: usize = a.get(4).map_or(Ok(1), |s| s.parse())?;
    let limit: Option<usize> = a.get(5).map(|s| s.parse()).transpose()?;
    let ds = intq_data::load(kind, &intq_data::default_data_dir())?;
    let n = limit.unwrap_or(ds.train.len).min(ds.train.len);
    let p = ds.train.rows * ds.train.cols;
    let train_set = ImageSet::gray(
        &ds.train.images[..n * p],
        &ds.train.labels[..n],
        ds.train.rows,
        ds.train.cols,
    );
    let test_set = ImageSet {
        images: &ds.test.images,
        labels: &ds.test.labels,
        len: ds.test.len,
        channels: 1,
        rows: ds.test.rows,
        cols: ds.test.cols,
    };
    let device = train_device();
    device.seed(0);
    let out = std::env::temp_dir().join(format!("intq-{}-float.ckpt", arch));
    let cfg = TrainConfig {
        arch,
        epochs,
        batch_size: 128,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        schedule: intq_train::trainer::LrSchedule::Cosine,
        label_smoothing: 0.0,
        seed: 0,
        quant: None,
        freeze_bn_after: None,
        freeze_observers_after: None,
        out: out.clone(),
        metrics: None,
        progress: true,
        max_steps: None,
        shards: intq_train::trainer::DEFAULT_SHARDS,
        data: None,
        augment: Default::default(),
    };
    let (net, s) = train(
        &cfg,
        Start::fresh(Net::new(arch, LayerOpts::default(), &device)),
        &train_set,
        Some(&test_set),
        &device,
    )?;
    println!(
        "FLOAT {arch} {kind:?}: {} epochs on {n} images, test accuracy {:.2}%, median {:.1} ms/step, {:.1} s/epoch",
        s.epochs_run,
        100.0 * s.test_accuracy.unwrap_or(0.0),
        s.median_step_ms,
        s.epoch_seconds.iter().sum::<f64>() / s.epoch_seconds.len().max(1) as f64
    );
    if qat_epochs == 0 {
        return Ok(());
    }
    for (name, q) in [
        ("uint8", QuantCfg::uint8(8, 8)?),
        ("int8-pc", QuantCfg::int8(8, 8, true)?),
    ] {
        let mut qcfg = cfg.clone();
        qcfg.epochs = qat_epochs;
        qcfg.lr = 0.005;
        qcfg.quant = Some(q);
        qcfg.out = std::env::temp_dir().join(format!("intq-{arch}-qat-{name}.ckpt"));
        let (_, qs) = train(
            &qcfg,
            Start::fresh(net.clone()),
            &train_set,
            Some(&test_set),
            &device,
        )?;
        println!(
            "QAT {name} {arch} {kind:?}: {} epochs, fake-quant test accuracy {:.2}%, median {:.1} ms/step, {:.1} s/epoch",
            qs.epochs_run,
            100.0 * qs.test_accuracy.unwrap_or(0.0),
            qs.median_step_ms,
            qs.epoch_seconds.iter().sum::<f64>() / qs.epoch_seconds.len().max(1) as f64
        );
    }
    Ok(())
}
