//! The `intq` binary end to end: inspect and run a model saved through the engine, and the
//! error messages a user sees for bad input.

mod common;
use common::intq;

use intq_engine::{examples, DType, Model, TensorData};
use intq_kernels::Isa;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli", name)
}

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

fn npy_payload(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    b[10 + hl..].to_vec()
}

fn bytes_of(t: &TensorData) -> Vec<u8> {
    match t {
        TensorData::U8(v) => v.clone(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// A bench JSON states a peak under `peak_key` and the run's share of it (gops / peak) under
/// `share_key` exactly when `expected`.
fn check_peak_share(j: &serde_json::Value, peak_key: &str, share_key: &str, expected: bool) {
    let gops = j["gops"].as_f64().unwrap();
    match (j[peak_key].as_f64(), j[share_key].as_f64()) {
        (Some(peak), Some(share)) if expected => {
            assert!(peak > 0.0 && gops > 0.0, "{j}");
            assert!((share - gops / peak).abs() < 1e-3, "{j}");
        }
        (None, None) if !expected => {}
        _ => panic!("{peak_key} and {share_key} expected: {expected}, in {j}"),
    }
}

/// `intq bench isa` states the measured peak of each multiply tier the CPU has (AMX's
/// `tdpbusd`, AVX-512 VNNI's `vpdpbusd`), and of none it lacks.
#[test]
fn bench_isa_states_the_peaks_of_the_tiers_it_has() {
    let out = intq(&["bench", "isa"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // `bench_isa_names_every_tier` checks that the `available:` line agrees with `Isa`.
    for isa in [Isa::Amx, Isa::Avx512Vnni] {
        let tier = isa.name();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{tier} peak")));
        assert_eq!(line.is_some(), isa.is_available(), "{tier} in {text}");
        if let Some(line) = line {
            let gops: f64 = line
                .split(": ")
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no GOPS in {line:?}"));
            assert!(gops.is_finite() && gops > 1.0, "{line}");
        }
    }
}

/// `intq bench gemm --json` on one thread states the measured AMX peak and the GEMM's share of
/// it exactly when it ran the AMX tier, and never invents one for another tier.
#[test]
fn bench_gemm_reports_the_amx_peak_with_the_amx_tier() {
    let isa = String::from_utf8(intq(&["bench", "isa"]).stdout).unwrap();
    let have_amx = isa
        .lines()
        .any(|l| l.starts_with("available:") && l.split_whitespace().any(|w| w == "amx"));
    let mut tiers = vec!["portable"];
    if have_amx {
        tiers.push("amx");
    }
    for tier in tiers {
        let out = intq(&[
            "bench",
            "gemm",
            "--m",
            "64",
            "--k",
            "64",
            "--n",
            "64",
            "--threads",
            "1",
            "--isa",
            tier,
            "--min-ms",
            "1",
            "--no-reference",
            "--no-portable",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j = common::json(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(j["isa"], tier);
        check_peak_share(&j, "amx_peak_gops", "share_of_amx_peak", tier == "amx");
    }
}

/// `intq bench model --json` states the tier's measured multiply peak (times the threads) and
/// the model's share of it on the tiers that have one (AMX, AVX-512 VNNI), and on no other.
#[test]
fn bench_model_states_its_share_of_the_tier_peak() {
    for (isa, threads) in [
        (Isa::Portable, "1"),
        (Isa::Avx512Vnni, "1"),
        (Isa::Amx, "2"),
    ] {
        if !isa.is_available() {
            continue;
        }
        let tier = isa.name();
        let out = intq(&[
            "bench",
            "model",
            "--model",
            "small-cnn",
            "--iters",
            "2",
            "--isa",
            tier,
            "--threads",
            threads,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j = common::json(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(j["isa"], tier);
        check_peak_share(&j, "peak_gops", "share_of_peak", tier != "portable");
    }
}

#[test]
fn inspect_and_run_a_saved_model() {
    for (dtype, tag) in [(DType::U8, "u8"), (DType::I8, "i8")] {
        let dir = scratch(&format!("run_{tag}"));
        let graph = examples::small_cnn(dtype, false, 3);
        let model = Model::new(graph.clone()).unwrap();
        let model_path = dir.join("m.intq");
        model.save(&model_path).unwrap();

        let out = intq(&["inspect", model_path.to_str().unwrap(), "--tensors"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        for op in graph.ops() {
            assert!(
                text.contains(op.kind().name()),
                "inspect lacks {}:\n{text}",
                op.kind()
            );
        }
        for t in graph.tensors() {
            assert!(
                text.contains(&format!("'{}'", t.name)),
                "inspect lacks {}",
                t.name
            );
        }

        let input = examples::random_input(&graph, 11).remove(0);
        let in_shape = graph.tensor(graph.inputs()[0]).shape.clone();
        let x = dir.join("x.npy");
        write_npy(&x, &in_shape, &input);
        let y = dir.join("y.npy");
        let out = intq(&[
            "run",
            model_path.to_str().unwrap(),
            "-i",
            x.to_str().unwrap(),
            "-o",
            y.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = model.run(std::slice::from_ref(&input)).unwrap().remove(0);
        assert_eq!(npy_payload(&y), bytes_of(&expected));

        // --tensor returns an intermediate: the first op's output.
        let first = graph.ops()[0].output();
        let name = graph.tensor(first).name.clone();
        let z = dir.join("z.npy");
        let out = intq(&[
            "run",
            model_path.to_str().unwrap(),
            "-i",
            x.to_str().unwrap(),
            "-o",
            z.to_str().unwrap(),
            "--tensor",
            &name,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = model
            .run_with(std::slice::from_ref(&input), &[first])
            .unwrap()
            .remove(0);
        assert_eq!(npy_payload(&z), bytes_of(&expected));

        // --float writes the float executor's real values.
        let f = dir.join("f.npy");
        let out = intq(&[
            "run",
            model_path.to_str().unwrap(),
            "-i",
            x.to_str().unwrap(),
            "-o",
            f.to_str().unwrap(),
            "--float",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = model
            .run_float(std::slice::from_ref(&input))
            .unwrap()
            .remove(0);
        assert_eq!(npy_payload(&f), bytes_of(&TensorData::F32(expected)));
    }
}

#[test]
fn bad_input_gets_a_clear_message() {
    let dir = scratch("errors");
    let graph = examples::small_cnn(DType::U8, false, 3);
    let model_path = dir.join("m.intq");
    Model::new(graph.clone())
        .unwrap()
        .save(&model_path)
        .unwrap();
    let m = model_path.to_str().unwrap();
    let in_shape = graph.tensor(graph.inputs()[0]).shape.clone();
    let n: usize = in_shape.iter().product();

    let wrong_dtype = dir.join("f.npy");
    write_npy(&wrong_dtype, &in_shape, &TensorData::F32(vec![0.0; n]));
    let wrong_shape = dir.join("s.npy");
    write_npy(&wrong_shape, &[n], &TensorData::U8(vec![0; n]));
    let corrupt = dir.join("corrupt.intq");
    let mut bytes = std::fs::read(&model_path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    let y = dir.join("y.npy");
    let y = y.to_str().unwrap();

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", m, "-i", wrong_dtype.to_str().unwrap(), "-o", y],
            "dtype float32",
        ),
        (
            vec!["run", m, "-i", wrong_shape.to_str().unwrap(), "-o", y],
            "shape",
        ),
        (
            vec!["run", m, "-i", "/nonexistent/x.npy", "-o", y],
            "/nonexistent/x.npy",
        ),
        (vec!["inspect", corrupt.to_str().unwrap()], "corrupt.intq"),
        (
            vec!["inspect", "/nonexistent/m.intq"],
            "/nonexistent/m.intq",
        ),
    ];
    for (args, needle) in cases {
        let out = intq(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected '{needle}' in: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(!Path::new(y).exists(), "a failed run left an output behind");
}

/// `bench model` builds resnet20 through the QAT export path, checks the fast executor against
/// the reference (`--check`), prints its JSON (with a row per op under `--profile-ops`), and
/// saves graphs that other tools can rely on:
/// the same seed gives the same weights at any batch, and the TFLite-padded copy computes the
/// same function.
#[test]
fn bench_model_builds_checks_and_saves_resnet20() {
    let d = scratch("bench_model");
    let (b1, b2, tfl) = (d.join("b1.intq"), d.join("b2.intq"), d.join("b2-tfl.intq"));
    let out = intq(&[
        "bench",
        "model",
        "--model",
        "resnet20",
        "--iters",
        "1",
        "--check",
        "--json",
        "--profile-ops",
        "--save",
        b1.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8(out.stdout).unwrap();
    for key in [
        "\"model\":\"resnet20\"",
        "\"batch\":1",
        "\"threads\":1",
        "\"isa\":",
        // The default scheme is int8 though the graph takes u8 images (its first op quantizes).
        "\"scheme\":\"int8\"",
        "\"ms_median\":",
        "\"ms_p10\":",
        "\"ms_p90\":",
    ] {
        assert!(json.contains(key), "{key} missing from {json}");
    }
    let out = intq(&[
        "bench",
        "model",
        "--model",
        "resnet20",
        "--batch",
        "2",
        "--iters",
        "1",
        "--save",
        b2.to_str().unwrap(),
        "--save-tflite-ready",
        tfl.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (m1, m2, mt) = (
        Model::load(&b1).unwrap(),
        Model::load(&b2).unwrap(),
        Model::load(&tfl).unwrap(),
    );
    // One profile row per op, in graph order, named by its output tensor.
    let g = m1.graph();
    assert_eq!(json.matches("\"index\":").count(), g.ops().len(), "{json}");
    for (i, op) in g.ops().iter().enumerate() {
        let row = format!(
            "{{\"index\":{i},\"output\":\"{}\",",
            g.tensor(op.output()).name
        );
        assert!(json.contains(&row), "{row} missing from {json}");
    }
    assert!(
        json.contains("\"class\":\"conv 3x3\",\"shapes\":\"1x32x32x16 * 16x3x3x16 -> 1x32x32x16\"")
    );
    // Raw uint8 pixels in (the int8 model shifts them to int8 inside), int8 logits out.
    let in2 = examples::random_input(m2.graph(), 3);
    let TensorData::U8(x2) = &in2[0] else {
        panic!("uint8 pixels expected")
    };
    assert_eq!(
        m2.graph().tensor(m2.graph().inputs()[0]).shape,
        [2, 32, 32, 3]
    );
    let TensorData::I8(y2) = &m2.run(&in2).unwrap()[0] else {
        panic!("int8 logits expected")
    };
    let TensorData::I8(y1) = &m1
        .run(&[TensorData::U8(x2[..x2.len() / 2].to_vec())])
        .unwrap()[0]
    else {
        panic!("int8 logits expected")
    };
    assert_eq!(
        y1[..],
        y2[..y1.len()],
        "batch 2's first image differs from batch 1"
    );
    assert_eq!(mt.run(&in2).unwrap(), m2.run(&in2).unwrap());
    let explicit = mt
        .graph()
        .ops()
        .iter()
        .filter(|op| format!("{op:?}").contains("Explicit"))
        .count();
    assert_eq!(
        explicit, 0,
        "explicit paddings left in the TFLite-ready graph"
    );
    // `intq export` lowers the QAT export's explicit paddings itself (stride-2 convs become Pad
    // + VALID), and the .tflite it writes computes the same function.
    let tf = d.join("b1.tflite");
    let out = intq(&[
        "export",
        "--tflite",
        tf.to_str().unwrap(),
        b1.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = Model::new(intq_tflite::load(&tf).unwrap()).unwrap();
    let in1 = examples::random_input(m1.graph(), 5);
    // Every op the same up to the classifier, which imports as TFLite's reference FC (f64
    // multiplier, docs/spec.md §6.1): one code apart at most, at near-ties.
    let gap = |m: &Model| {
        let id = m.graph().tensor_by_name("gap").expect("a gap tensor");
        m.run_with(&in1, &[id]).unwrap()
    };
    assert_eq!(gap(&back), gap(&m1));
    let (TensorData::I8(a), TensorData::I8(b)) =
        (&back.run(&in1).unwrap()[0], &m1.run(&in1).unwrap()[0])
    else {
        panic!("int8 logits expected")
    };
    assert!(
        a.iter()
            .zip(b)
            .all(|(x, y)| (*x as i32 - *y as i32).abs() <= 1),
        "{a:?} vs {b:?}"
    );
    assert!(back
        .graph()
        .ops()
        .iter()
        .any(|op| matches!(op, intq_engine::Op::Pad { .. })));
    let out = intq(&[
        "bench",
        "model",
        "--model",
        "resnet20",
        "--load",
        b2.to_str().unwrap(),
        "--iters",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        json.contains("\"batch\":2") && json.contains("\"scheme\":\"int8\""),
        "{json}"
    );
    let out = intq(&[
        "bench",
        "model",
        "--model",
        "small-cnn",
        "--scheme",
        "uint8",
        "--iters",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(json.contains("\"scheme\":\"uint8\""), "{json}");
    let out = intq(&["bench", "model", "--model", "resnet99", "--iters", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("resnet99"));
}

/// Training refuses an `INTQ_ISA` it cannot honour (its fake-quant pass runs on that tier)
/// before it reads any data, as the engine's commands do; a valid tier gets past the check (and
/// here fails on the missing data instead).
#[test]
fn training_refuses_a_bad_isa_tier() {
    let train = |isa: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_intq"))
            .args([
                "train",
                "--data-dir",
                "/nonexistent/data",
                "--out",
                "/nonexistent/f.ckpt",
            ])
            .env("INTQ_ISA", isa)
            .output()
            .expect("run intq");
        assert!(!out.status.success(), "INTQ_ISA={isa} trained without data");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.starts_with("error: ") && !err.contains("panicked"),
            "{err}"
        );
        err
    };
    let err = train("sse9");
    assert!(
        err.contains("INTQ_ISA") && err.contains("\"sse9\""),
        "{err}"
    );
    let err = train("portable");
    assert!(
        !err.contains("INTQ_ISA") && err.contains("/nonexistent/data"),
        "{err}"
    );
}

/// `bench isa` names every tier once, as available or not on this CPU (a missing tier is
/// reported, never silent), and runs the best available one unless `INTQ_ISA` says otherwise.
#[test]
fn bench_isa_names_every_tier() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_intq"))
        .args(["bench", "isa"])
        .env_remove("INTQ_ISA")
        .output()
        .expect("run intq");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = |prefix: &str| -> Vec<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map_or(Vec::new(), |rest| {
                rest.split_whitespace().map(str::to_string).collect()
            })
    };
    let (have, lack) = (line("available: "), line("not on this CPU: "));
    for isa in intq_kernels::Isa::ALL_BEST_FIRST {
        let name = isa.name().to_string();
        assert_eq!(have.contains(&name), isa.is_available(), "{text}");
        assert_eq!(lack.contains(&name), !isa.is_available(), "{text}");
    }
    assert_eq!(
        have.len() + lack.len(),
        intq_kernels::Isa::ALL_BEST_FIRST.len()
    );
    assert_eq!(
        line("running: "),
        vec![intq_kernels::Isa::best().name().to_string()]
    );
}

/// Every tensor of the checkpoint at `path`, raw bytes (bit-for-bit comparison).
fn ckpt_tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let f = intq_train::ckpt_file::parse(&bytes, path).unwrap();
    f.raw_tensors()
        .into_iter()
        .map(|(n, _, _, b)| (n, b.to_vec()))
        .collect()
}

/// `--augment crop:2,flip` trains, a run stopped mid-epoch and resumed draws the same crops and
/// flips as the uninterrupted run (bit-identical weights), the augmentation changes what is
/// trained, and a bad spec is refused with a message saying what is wrong.
#[test]
fn train_with_augmentation_resumes_exactly_and_refuses_bad_specs() {
    let root = scratch("augment");
    let data = root.join("data");
    let f = data.join("fashion-mnist");
    std::fs::create_dir_all(&f).unwrap();
    for (split, n) in [("train", 64usize), ("t10k", 16)] {
        // Class k: a bright column at 2k + 4 over a dark background.
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let px: Vec<u8> = labels
            .iter()
            .flat_map(|&k| {
                (0..784).map(move |p| {
                    if p % 28 == 2 * k as usize + 4 {
                        230
                    } else {
                        10
                    }
                })
            })
            .collect();
        common::write_split(&f, split, &px, &labels);
    }
    let run = |out: &Path, augment: Option<&str>, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data-dir",
            data.to_str().unwrap(),
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--shards",
            "1",
            "--seed",
            "3",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ];
        if let Some(a) = augment {
            args.extend(["--augment", a]);
        }
        args.extend(extra);
        intq(&args)
    };
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let a = root.join("a.ckpt");
    ok(run(&a, Some("crop:2,flip"), &[]));
    let b = root.join("b.ckpt");
    ok(run(
        &b,
        Some("crop:2,flip"),
        &["--ckpt-every", "1", "--max-steps", "1"],
    ));
    ok(run(&b, Some("crop:2,flip"), &["--resume"]));
    assert!(
        ckpt_tensors(&a) == ckpt_tensors(&b),
        "the resumed augmented run differs from the uninterrupted one"
    );
    let plain = root.join("plain.ckpt");
    ok(run(&plain, None, &[]));
    assert!(
        ckpt_tensors(&a) != ckpt_tensors(&plain),
        "--augment crop:2,flip trained the same weights as no augmentation"
    );

    let o = run(&root.join("bad.ckpt"), Some("bogus"), &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown augmentation \"bogus\"") && err.contains("crop:P"),
        "{err}"
    );
    let o = run(&root.join("bad.ckpt"), Some("crop:-1"), &[]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("whole number of pixels"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!root.join("bad.ckpt").exists());
}
