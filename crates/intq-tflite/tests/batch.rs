//! Imported `.tflite` models built for one image run a batch: the golden inputs of a fixture,
//! stacked, give TensorFlow Lite's golden outputs image by image, on the reference kernels and
//! every fast tier. Models whose ops mix images are refused, naming the op.

use intq_engine::{ExecOptions, KernelTier, Model, TensorData};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fixture array's data (read with ndarray-npy, independently of intq's own reader).
fn read_npy(path: &Path) -> TensorData {
    use ndarray::ArrayD;
    use ndarray_npy::ReadNpyExt;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = ndarray_npy::npy::header::Header::from_reader(&mut &bytes[..])
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let descr = header
        .type_descriptor
        .as_string()
        .cloned()
        .unwrap_or_default();
    fn read<T: ndarray_npy::ReadableElement>(path: &Path, bytes: &[u8]) -> Vec<T> {
        let a = ArrayD::<T>::read_npy(bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        a.into_raw_vec_and_offset().0
    }
    match descr.as_str() {
        "|u1" => TensorData::U8(read(path, &bytes)),
        "|i1" => TensorData::I8(read(path, &bytes)),
        "<f4" => TensorData::F32(read(path, &bytes)),
        "<i4" => TensorData::I32(read(path, &bytes)),
        other => panic!("{}: dtype {other}", path.display()),
    }
}

fn stack(images: &[&TensorData]) -> TensorData {
    let mut all = images[0].clone();
    for image in &images[1..] {
        match (&mut all, image) {
            (TensorData::U8(a), TensorData::U8(b)) => a.extend_from_slice(b),
            (TensorData::I8(a), TensorData::I8(b)) => a.extend_from_slice(b),
            (TensorData::I32(a), TensorData::I32(b)) => a.extend_from_slice(b),
            (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
            _ => panic!("images of different types"),
        }
    }
    all
}

/// A fixture's model and, per seed, its input and golden output files.
type Seed = (Vec<TensorData>, Vec<(String, TensorData)>);

fn read_fixture(dir: &Path) -> (PathBuf, Vec<Seed>) {
    let text = std::fs::read_to_string(dir.join("fixture.tsv")).unwrap();
    let mut model = PathBuf::new();
    let mut seeds: Vec<Seed> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "model" => model = dir.join(f[1]),
            "seed" => seeds.push((vec![], vec![])),
            "input" => seeds.last_mut().unwrap().0.push(read_npy(&dir.join(f[1]))),
            "output" => seeds
                .last_mut()
                .unwrap()
                .1
                .push((f[1].to_string(), read_npy(&dir.join(f[2])))),
            _ => {}
        }
    }
    (model, seeds)
}

/// Runs `model` on the inputs of seed 0, seed 1, seed 0 at once; each one's outputs must be the
/// golden ones. Returns the run error when the model refuses the batch.
fn check_fixture(name: &str, kernels: KernelTier) -> Result<(), String> {
    let (path, seeds) = read_fixture(&fixtures().join(name));
    let graph = intq_tflite::load(&path).unwrap();
    let options = ExecOptions {
        kernels: Some(kernels),
        threads: 2,
    };
    let model = Model::with_options(graph, options).unwrap();
    // Each seed holds one batch of the graph's own size; three of them run at once.
    let order = [0, 1, 0];
    let inputs: Vec<TensorData> = (0..seeds[0].0.len())
        .map(|i| stack(&order.map(|s| &seeds[s].0[i])))
        .collect();
    let wanted: Vec<_> = seeds[0]
        .1
        .iter()
        .map(|(t, _)| model.graph().tensor_by_name(t).unwrap())
        .collect();
    let got = model
        .run_with(&inputs, &wanted)
        .map_err(|e| e.to_string())?;
    for (k, &s) in order.iter().enumerate() {
        for (j, (_, want)) in seeds[s].1.iter().enumerate() {
            let per = want.len();
            let image = match &got[j] {
                TensorData::U8(v) => TensorData::U8(v[k * per..(k + 1) * per].to_vec()),
                TensorData::I8(v) => TensorData::I8(v[k * per..(k + 1) * per].to_vec()),
                TensorData::I32(v) => TensorData::I32(v[k * per..(k + 1) * per].to_vec()),
                TensorData::F32(v) => TensorData::F32(v[k * per..(k + 1) * per].to_vec()),
            };
            assert_eq!(got[j].len(), 3 * per, "{name}: output {j} at batch 3");
            assert_eq!(&image, want, "{name} {kernels:?}: output {j} of image {k}");
        }
    }
    Ok(())
}

/// Every fixture whose graph keeps each image on its own: MLPerf Tiny's ResNet
/// (image_classification, residual Adds), DS-CNN, MobileNet and autoencoder, and intq's op zoos.
const BATCHABLE: &[&str] = &[
    "image_classification",
    "keyword_spotting",
    "visual_wake_words",
    "anomaly_detection",
    "small_cnn_u8",
    "small_cnn_i8",
    "op_zoo_u8",
    "op_zoo_i8",
    "resize_u8",
    "resize_i8",
    "split_u8",
    "split_i8",
    "reduce_u8",
    "reduce_i8",
    "sum_u8",
    "sum_i8",
    "converter_mobilenet_v3_small_int8",
    "converter_efficientnet_lite_style_float",
    "converter_deeplab_style_int8",
];

#[test]
fn fixtures_run_a_batch_with_the_golden_outputs_per_image() {
    for name in BATCHABLE {
        check_fixture(name, KernelTier::Reference).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    intq_testutil::on_every_tier("tflite batch", |isa| {
        for name in BATCHABLE {
            check_fixture(name, KernelTier::Fast(isa)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    });
}

/// The other fixtures feed a second graph input the batch does not lead (a gate or operand
/// broadcast onto every image): a batch of them is refused, naming that input.
#[test]
fn fixtures_with_inputs_the_batch_does_not_lead_refuse_clearly() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("fixture.tsv").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names.iter().filter(|n| !BATCHABLE.contains(&n.as_str())) {
        let e = check_fixture(name, KernelTier::Reference).unwrap_err();
        // A detector's post-process takes one image, as TFLite's: refused by that op.
        if name.starts_with("detector_") || name.starts_with("converter_ssd_") {
            assert!(e.contains("DetectionPostProcess"), "{name}: {e}");
            continue;
        }
        assert!(
            e.contains("leading dimension is not the graph's batch 2") && e.contains("input "),
            "{name}: {e}"
        );
    }
}
