//! `intq quickstart`: the shortest path through the engine a new user can run: build a small
//! quantized CNN, save and reload it, run it integer-only, and check it against the float
//! executor of the same graph.

use anyhow::{ensure, Context, Result};
use intq_cli::npy;
use intq_engine::{examples, DType, Model, TensorData};
use std::path::Path;

const SAMPLES: u64 = 200;

pub fn quickstart(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    println!("intq quickstart: integer-only inference of a hand-built CNN");
    println!("(QAT training on Fashion-MNIST arrives with the intq-train crate)\n");
    for (dtype, tag) in [(DType::U8, "u8"), (DType::I8, "i8")] {
        let path = dir.join(format!("small_cnn_{tag}.intq"));
        let graph = examples::small_cnn(dtype, false, 7);
        Model::new(graph.clone())?.save(&path)?;
        let model = Model::load(&path)?;
        ensure!(
            model.graph() == &graph,
            "{} did not reload to the same graph",
            path.display()
        );

        let out_id = graph.outputs()[0];
        let out_params = graph
            .tensor(out_id)
            .params()
            .context("example output is not quantized")?;
        let (qmin, qmax) = if dtype == DType::U8 {
            (0, 255)
        } else {
            (-128, 127)
        };
        let mut agree = 0u64;
        let mut max_lsb = 0i32;
        for seed in 0..SAMPLES {
            let inputs = examples::random_input(model.graph(), seed);
            let codes = codes_of(&model.run(&inputs)?[0]);
            let reals = &model.run_float(&inputs)?[0];
            let float_codes: Vec<i32> = reals
                .iter()
                .map(|&r| out_params.quantize(r, qmin, qmax))
                .collect();
            for (a, b) in codes.iter().zip(&float_codes) {
                max_lsb = max_lsb.max((a - b).abs());
            }
            agree += (argmax(&codes) == argmax_f(reals)) as u64;
        }
        println!(
            "{}: {} ops, saved and reloaded; integer vs float executor on {SAMPLES} random inputs: \
             top-1 agreement {:.1}%, largest output difference {max_lsb} LSB",
            path.display(),
            graph.ops().len(),
            100.0 * agree as f64 / SAMPLES as f64
        );

        let input = examples::random_input(model.graph(), 0).remove(0);
        let input_path = dir.join(format!("input_{tag}.npy"));
        let in_shape = graph.tensor(graph.inputs()[0]).shape.clone();
        npy::write(
            &input_path,
            &npy::Array {
                shape: in_shape,
                data: input,
            },
        )?;
    }
    let d = dir.display();
    println!("\nTry:");
    println!("  intq inspect {d}/small_cnn_u8.intq");
    println!("  intq run {d}/small_cnn_u8.intq --input {d}/input_u8.npy --output {d}/probs.npy");
    Ok(())
}

fn codes_of(t: &TensorData) -> Vec<i32> {
    match t {
        TensorData::U8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I32(v) => v.clone(),
        TensorData::F32(v) => v.iter().map(|&x| x as i32).collect(),
    }
}

fn argmax(v: &[i32]) -> usize {
    v.iter()
        .enumerate()
        .max_by_key(|&(i, &x)| (x, std::cmp::Reverse(i)))
        .map_or(0, |(i, _)| i)
}

fn argmax_f(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bx), (i, &x)| {
            if x > bx {
                (i, x)
            } else {
                (bi, bx)
            }
        })
        .0
}
