//! `intq run` on a batch: an `.npy` of N images runs a model built for one (`.intq` or
//! `.tflite`), and the output `.npy` has N rows, each the one-image run's.

mod common;
use common::intq;

use intq_engine::{examples, DType, Model, TensorData};
use std::path::Path;

fn write_npy(path: &Path, shape: &[usize], data: &TensorData) {
    // Written with ndarray-npy directly, independently of the CLI's own writer.
    fn write<T: ndarray_npy::WritableElement>(shape: &[usize], v: &[T]) -> Vec<u8> {
        let header = ndarray_npy::npy::header::Header {
            type_descriptor: T::type_descriptor(),
            layout: ndarray_npy::npy::header::Layout::Standard,
            shape: shape.to_vec(),
        };
        let mut out = header.to_bytes().unwrap();
        T::write_slice(v, &mut out).unwrap();
        out
    }
    let bytes = match data {
        TensorData::U8(v) => write(shape, v),
        TensorData::I8(v) => write(shape, v),
        TensorData::F32(v) => write(shape, v),
        TensorData::I32(v) => write(shape, v),
    };
    std::fs::write(path, bytes).unwrap();
}

/// The shape in an `.npy` header and its payload.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let b = std::fs::read(path).unwrap();
    let header = ndarray_npy::npy::header::Header::from_reader(&mut &b[..]).unwrap();
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    (header.shape, b[10 + hl..].to_vec())
}

fn bytes_of(t: &TensorData) -> Vec<u8> {
    match t {
        TensorData::U8(v) => v.clone(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn stack(images: &[TensorData]) -> TensorData {
    let mut all = images[0].clone();
    for image in &images[1..] {
        match (&mut all, image) {
            (TensorData::U8(a), TensorData::U8(b)) => a.extend_from_slice(b),
            (TensorData::I8(a), TensorData::I8(b)) => a.extend_from_slice(b),
            (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
            _ => panic!("unexpected input type"),
        }
    }
    all
}

/// Runs `model_path` through the CLI on 4 images of `model` and checks each output row.
fn check(model_path: &Path, model: &Model, dir: &Path, float: bool) {
    let g = model.graph();
    let input = g.tensor(g.inputs()[0]);
    let images: Vec<TensorData> = (0..4)
        .map(|k| examples::random_input(g, 40 + k).remove(0))
        .collect();
    let mut shape = input.shape.clone();
    shape[0] = 4;
    let x = dir.join("x.npy");
    write_npy(&x, &shape, &stack(&images));
    let y = dir.join("y.npy");
    let mut args = vec![
        "run",
        model_path.to_str().unwrap(),
        "-i",
        x.to_str().unwrap(),
        "-o",
        y.to_str().unwrap(),
    ];
    if float {
        args.push("--float");
    }
    let out = intq(&args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (got_shape, got) = read_npy(&y);
    let out_id = g.outputs()[0];
    assert_eq!(got_shape[0], 4, "{args:?}");
    assert_eq!(got_shape[1..], g.tensor(out_id).shape[1..], "{args:?}");
    let want: Vec<u8> = images
        .iter()
        .flat_map(|image| {
            let one = std::slice::from_ref(image);
            if float {
                bytes_of(&TensorData::F32(model.run_float(one).unwrap().remove(0)))
            } else {
                bytes_of(&model.run(one).unwrap()[0])
            }
        })
        .collect();
    assert_eq!(got, want, "{args:?}");
}

#[test]
fn run_takes_any_number_of_images() {
    let dir = common::scratch("run_batch", "intq");
    let graph = examples::small_cnn(DType::I8, false, 3);
    let model = Model::new(graph).unwrap();
    let path = dir.join("m.intq");
    model.save(&path).unwrap();
    check(&path, &model, &dir, false);
    check(&path, &model, &dir, true);

    let dir = common::scratch("run_batch", "tflite");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../intq-tflite/tests/fixtures/image_classification/image_classification.tflite");
    let model = Model::new(intq_tflite::load(&path).unwrap()).unwrap();
    check(&path, &model, &dir, false);
}
