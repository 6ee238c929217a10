//! Hostile training checkpoints: every damaged or forged variant of a real checkpoint (bad tags,
//! malformed metadata, wrong dtypes and shapes, missing and foreign tensors, offsets past the end,
//! shapes whose product overflows, absurd header lengths, truncation anywhere, NaN weights) is
//! refused by `checkpoint::load` with an error naming the file and the problem, never a panic.
//! The ignored `write_fuzz_seeds` writes the checkpoint fuzz target's layouts and seed corpus.

use std::path::{Path, PathBuf};

use intq_train::checkpoint::{self, CkptMeta};
use intq_train::layers::{LayerOpts, QuantCfg};
use intq_train::trainer::{train_with_checkpoints, ImageSet, Start, TrainConfig};
use intq_train::{train_device, Arch, Net};
use safetensors::tensor::{Dtype, TensorView};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("intq-ckpt-hostile-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A real small-cnn QAT checkpoint written by `checkpoint::save`, 3 batches into epoch 2.
fn base(d: &Path) -> Vec<u8> {
    let device = train_device();
    device.seed(3);
    let net = Net::new(Arch::SmallCnn, LayerOpts::default(), &device);
    let meta = CkptMeta {
        arch: Arch::SmallCnn,
        epoch: 1,
        epoch_batches: 3,
        step: 5,
        epochs: 2,
        seed: 3,
        quant: Some(QuantCfg::uint8(8, 8).unwrap()),
        test_accuracy: None,
        shards: None,
        data: Some("mnist".into()),
    };
    let p = d.join("base.ckpt");
    checkpoint::save(&p, &net, &Default::default(), &meta).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    checkpoint::load(&p, LayerOpts::default(), &device).expect("the base checkpoint loads");
    bytes
}

fn split(bytes: &[u8]) -> (String, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        String::from_utf8(bytes[8..8 + n].to_vec()).unwrap(),
        &bytes[8 + n..],
    )
}

fn join(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

/// `base` with the first `from` in its JSON header replaced by `to`.
fn edit(base: &[u8], from: &str, to: &str) -> Vec<u8> {
    let (h, data) = split(base);
    assert!(h.contains(from), "{from} not in the header {h}");
    join(&h.replacen(from, to, 1), data)
}

/// The first tensor of the layout and the JSON of its shape, e.g. `[32,1,3,3]`.
fn first_tensor() -> (String, Vec<usize>, String) {
    let (name, dims) = checkpoint::layout(Arch::SmallCnn, &train_device())
        .into_iter()
        .find(|(_, d)| d.len() == 4 && d[0] != d[1])
        .unwrap();
    let json = format!(
        "[{}]",
        dims.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    (name, dims, json)
}

/// Each hostile variant: (file name, bytes, text its error must contain).
fn hostile(base: &[u8]) -> Vec<(String, Vec<u8>, String)> {
    let (name, dims, shape) = first_tensor();
    let (header, data) = split(base);
    let mut v: Vec<(String, Vec<u8>, String)> = Vec::new();
    let mut add = |n: &str, b: Vec<u8>, e: &str| v.push((n.to_string(), b, e.to_string()));
    add(
        "format_tag",
        edit(base, "intq-train-checkpoint-1", "intq-train-checkpoint-2"),
        "not an intq training checkpoint",
    );
    add(
        "unknown_arch",
        edit(base, "\"arch\":\"small-cnn\"", "\"arch\":\"resnet99\""),
        "unknown model",
    );
    add(
        "huge_width",
        edit(
            base,
            "\"arch\":\"small-cnn\"",
            "\"arch\":\"mobilenet-v2@1e30\"",
        ),
        "unknown model",
    );
    add(
        "forged_big_model",
        edit(
            base,
            "\"arch\":\"small-cnn\"",
            "\"arch\":\"mobilenet-v2@4\"",
        ),
        "cannot hold a mobilenet-v2@4 network",
    );
    add(
        "step_not_a_number",
        edit(base, "\"step\":\"5\"", "\"step\":\"-5\""),
        "malformed metadata field \"step\"",
    );
    add(
        "no_epochs",
        edit(base, "\"epochs\":\"2\"", "\"epochz\":\"2\""),
        "malformed metadata field \"epochs\"",
    );
    add(
        "batches_beyond_steps",
        edit(base, "\"step\":\"5\"", "\"step\":\"1\""),
        "batches into epoch 2 but only 1 steps",
    );
    add(
        "bad_scheme",
        edit(base, "\"quant.act\":\"8,0,0,0\"", "\"quant.act\":\"8,0,0\""),
        "malformed metadata field \"quant.act\"",
    );
    add(
        "scheme_bits",
        edit(
            base,
            "\"quant.act\":\"8,0,0,0\"",
            "\"quant.act\":\"99,0,0,0\"",
        ),
        "malformed metadata field \"quant.act\"",
    );
    add(
        "bad_range_mode",
        edit(
            base,
            "\"quant.ranges\":\"ema\"",
            "\"quant.ranges\":\"median\"",
        ),
        "malformed metadata field \"quant.ranges\"",
    );
    add(
        "range_mode_without_its_tensors",
        edit(base, "\"quant.ranges\":\"ema\"", "\"quant.ranges\":\"lsq\""),
        "tensor input.obs.learned.value is missing",
    );
    add(
        "bad_data_source",
        edit(base, "\"data\":\"mnist\"", "\"data\":\"mn\\u0007ist\""),
        "malformed metadata field \"data\"",
    );
    add(
        "input_channels_the_model_lacks",
        edit(
            base,
            "\"data\":\"mnist\"",
            "\"data\":\"mnist\",\"data.input\":\"3x28x28\"",
        ),
        "records 3-channel inputs, but small-cnn takes 1",
    );
    add(
        "zero_classes",
        edit(
            base,
            "\"data\":\"mnist\"",
            "\"data\":\"mnist\",\"data.classes\":\"0\"",
        ),
        "malformed metadata field \"data.classes\"",
    );
    add(
        "metadata_not_string",
        edit(base, "\"epoch\":\"1\"", "\"epoch\":1"),
        "not a safetensors file",
    );
    // Same bytes, another dtype or a permuted shape: safetensors accepts it, the layout does not.
    let at = header.find(&format!("\"{name}\"")).unwrap();
    let tail = &header[at..];
    let mut swapped_dims = dims.clone();
    swapped_dims.swap(0, 1);
    let swapped = format!(
        "[{}]",
        swapped_dims
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let local = |from: &str, to: &str| {
        let i = at + tail.find(from).unwrap();
        let mut h = header.clone();
        h.replace_range(i..i + from.len(), to);
        join(&h, data)
    };
    add(
        "dtype_i32",
        local("\"F32\"", "\"I32\""),
        &format!("tensor {name} is I32"),
    );
    add(
        "shape_permuted",
        local(&shape, &swapped),
        &format!("tensor {name} is F32 {swapped_dims:?}"),
    );
    add(
        "shape_product_overflows",
        local(&shape, "[4294967296,4294967296,4294967296,1]"),
        "not a safetensors file",
    );
    add(
        "negative_dim",
        local(&shape, "[-1,1,3,3]"),
        "not a safetensors file",
    );
    add(
        "tensor_renamed",
        local(&format!("\"{name}\""), &format!("\"{name}x\"")),
        &format!("tensor {name} is missing"),
    );
    let mut h = (u64::MAX).to_le_bytes().to_vec();
    h.extend_from_slice(&base[8..]);
    add("header_len_max", h, "not a safetensors file");
    let mut h = (200u64 << 20).to_le_bytes().to_vec();
    h.extend_from_slice(&base[8..]);
    add("header_len_200mib", h, "not a safetensors file");
    for cut in [
        0,
        4,
        8,
        9,
        100,
        base.len() / 3,
        base.len() - 4,
        base.len() - 1,
    ] {
        add(
            &format!("truncated_{cut}"),
            base[..cut].to_vec(),
            "not a safetensors file",
        );
    }
    let mut extra = base.to_vec();
    extra.extend_from_slice(&[0; 4]);
    add("trailing_bytes", extra, "not a safetensors file");
    // NaN in the first tensor's data.
    let off: usize = {
        let i = at + tail.find("\"data_offsets\":[").unwrap() + 16;
        header[i..header[i..].find(',').unwrap() + i]
            .parse()
            .unwrap()
    };
    let mut nan = base.to_vec();
    let start = base.len() - data.len() + off + 8;
    nan[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    add("nan_weight", nan, "non-finite value (NaN) at index 2");
    let offsets = format!("\"data_offsets\":[{off},");
    let end_at = at + tail.find(&offsets).unwrap() + offsets.len();
    let end_len = header[end_at..].find(']').unwrap();
    let mut h = header.clone();
    h.replace_range(end_at..end_at + end_len, "99999999999");
    add("offset_past_end", join(&h, data), "not a safetensors file");
    // A tensor the network does not have, written by safetensors itself.
    let st = safetensors::SafeTensors::deserialize(base).unwrap();
    let mut views: Vec<(String, TensorView)> = st.tensors();
    let junk = vec![0u8; 16];
    views.push((
        "classifier.extra".into(),
        TensorView::new(Dtype::F32, vec![4], &junk).unwrap(),
    ));
    let (_, meta) = safetensors::SafeTensors::read_metadata(base).unwrap();
    let forged = safetensors::tensor::serialize(views, meta.metadata().clone()).unwrap();
    add(
        "foreign_tensor",
        forged,
        "tensor classifier.extra (F32 [4]) is not part of a small-cnn network",
    );
    v
}

#[test]
fn hostile_checkpoints_are_refused_with_clear_errors() {
    let d = dir("cases");
    let base = base(&d);
    let device = train_device();
    let cases = hostile(&base);
    assert!(cases.len() >= 25, "{} cases", cases.len());
    for (name, bytes, expected) in cases {
        let p = d.join(format!("{name}.ckpt"));
        std::fs::write(&p, &bytes).unwrap();
        let err = match checkpoint::load(&p, LayerOpts::default(), &device) {
            Ok(_) => panic!("{name}: a hostile checkpoint loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&p.display().to_string()),
            "{name}: error does not name the file: {err}"
        );
        assert!(
            err.contains(&expected),
            "{name}: expected {expected:?} in {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Writes `fuzz/seeds/checkpoint_layouts.txt` (the zoo layouts the fuzz target checks against)
/// and the seed corpus `fuzz/corpus/checkpoint/`: real checkpoints (float with momentum from one
/// step, QAT mid-epoch) and every hostile variant above.
/// `cargo test -p intq-train --test checkpoint_hostile -- --ignored write_fuzz_seeds`
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let corpus = fuzz.join("corpus/checkpoint");
    std::fs::create_dir_all(&corpus).unwrap();
    let device = train_device();
    let mut layouts = String::new();
    for arch in [Arch::SmallCnn, Arch::TinyMobilenet] {
        for (name, dims) in checkpoint::layout(arch, &device) {
            let d: Vec<String> = dims.iter().map(|x| x.to_string()).collect();
            layouts.push_str(&format!("{} {name} {}\n", arch.name(), d.join(",")));
        }
    }
    std::fs::write(fuzz.join("seeds/checkpoint_layouts.txt"), layouts).unwrap();
    let images: Vec<u8> = (0..8 * 784).map(|i| (i * 37 % 251) as u8).collect();
    let labels: Vec<u8> = (0..8).map(|i| i % 10).collect();
    let set = ImageSet::gray(&images, &labels, 28, 28);
    for (arch, quant, file) in [
        (Arch::SmallCnn, None, "small-cnn-float.ckpt"),
        (
            Arch::TinyMobilenet,
            Some(QuantCfg::int8(8, 8, true).unwrap()),
            "tiny-mobilenet-qat.ckpt",
        ),
    ] {
        device.seed(1);
        let cfg = TrainConfig {
            arch,
            epochs: 1,
            batch_size: 4,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: intq_train::trainer::LrSchedule::Cosine,
            label_smoothing: 0.0,
            seed: 1,
            quant,
            freeze_bn_after: None,
            freeze_observers_after: None,
            out: corpus.join(file),
            metrics: None,
            progress: false,
            max_steps: Some(1),
            shards: 1,
            data: None,
            augment: Default::default(),
        };
        let net = Net::new(arch, LayerOpts::default(), &device);
        train_with_checkpoints(&cfg, Some(1), Start::fresh(net), &set, None, &device).unwrap();
        checkpoint::load(&cfg.out, LayerOpts::default(), &device).unwrap();
    }
    let d = dir("seeds");
    for (name, bytes, _) in hostile(&base(&d)) {
        std::fs::write(corpus.join(format!("hostile-{name}.ckpt")), bytes).unwrap();
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// `Arch::state_len` (what the loader checks the file size against before building a network)
/// counts exactly the values of the tensors `Net::new` creates.
#[test]
fn state_len_matches_the_built_networks() {
    let device = train_device();
    for arch in [
        "small-cnn",
        "tiny-mobilenet",
        "resnet20",
        "resnet18",
        "mobilenet-v2",
        "mobilenet-v2@0.5",
        "mobilenet-v2@1.4",
    ] {
        let arch: Arch = arch.parse().unwrap();
        let built: usize = checkpoint::layout(arch, &device)
            .iter()
            .map(|(_, d)| d.iter().product::<usize>())
            .sum();
        assert_eq!(arch.state_len(), built, "{arch}");
    }
}
