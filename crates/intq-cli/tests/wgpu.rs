//! Training on a GPU (`--device wgpu`, docs/training.md "Training on a GPU"). Without the `wgpu`
//! feature: every command that takes `--device` refuses a wgpu device, naming the feature,
//! before it reads anything. With it (`.ci/wgpu`, on Mesa's software Vulkan driver where no GPU
//! is present): a float run and a QAT run of small-cnn on the device, whose checkpoint converts
//! to a model that `intq eval --compare` finds equal to it (0 top-1 mismatches, 0 LSB).

mod common;

#[cfg(not(feature = "wgpu"))]
#[test]
fn a_build_without_wgpu_names_the_feature() {
    let root = common::scratch("wgpu", "refuse");
    let out = root.join("m.ckpt");
    let o = out.to_str().unwrap();
    for args in [
        vec!["train", "--quiet", "--device", "wgpu", "--out", o],
        vec!["qat", "--from", o, "--device", "wgpu:0", "--out", o],
        vec!["ptq", "--from", o, "--device", "wgpu", "--out", o],
        vec!["eval", o, "--device", "wgpu:cpu"],
    ] {
        let r = common::intq(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?}: ran\n{err}");
        assert!(
            err.contains("without the `wgpu` feature") && err.contains("--features wgpu"),
            "{args:?}: {err}"
        );
    }
    assert!(!out.exists());
    let r = common::intq(&["train", "--device", "tpu", "--out", o]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("expected cpu, wgpu"), "{err}");
}

#[cfg(feature = "wgpu")]
mod with_wgpu {
    use super::common::{int, intq, json, scratch, write_split};
    use std::path::{Path, PathBuf};

    /// Striped 28x28 pictures, one stripe position per class, as a fashion-mnist directory.
    fn data_dir(root: &Path) -> PathBuf {
        let d = root.join("data");
        let f = d.join("fashion-mnist");
        std::fs::create_dir_all(&f).unwrap();
        for (split, n) in [("train", 256usize), ("t10k", 64)] {
            let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            let px: Vec<u8> = labels
                .iter()
                .enumerate()
                .flat_map(|(i, &k)| {
                    (0..784).map(move |p| {
                        let line = if k < 5 { p / 28 } else { p % 28 };
                        let on =
                            (4 + 5 * (k as usize % 5)..7 + 5 * (k as usize % 5)).contains(&line);
                        (if on { 200 } else { 0 }) + ((i * 31 + p * 7) % 40) as u8
                    })
                })
                .collect();
            write_split(&f, split, &px, &labels);
        }
        d
    }

    fn ok(args: &[&str]) -> String {
        let o = intq(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "intq {args:?} failed:\n{err}");
        err + &String::from_utf8_lossy(&o.stdout)
    }

    /// The JSON object of the last line that holds one (the log goes to stderr, before it).
    fn last_json(text: &str) -> serde_json::Value {
        json(text.lines().rfind(|l| l.starts_with('{')).unwrap())
    }

    #[test]
    fn train_and_qat_on_wgpu_convert_to_an_equal_model() {
        let root = scratch("wgpu", "pipeline");
        let data = data_dir(&root);
        let d = data.to_str().unwrap();
        let float = root.join("float.ckpt");
        let qat = root.join("qat.ckpt");
        let model = root.join("qat.intq");
        let (f, q, m) = (
            float.to_str().unwrap(),
            qat.to_str().unwrap(),
            model.to_str().unwrap(),
        );
        let common = [
            "--data-dir",
            d,
            "--batch-size",
            "32",
            "--quiet",
            "--device",
            "wgpu",
        ];
        let log = ok(&[
            &[
                "train",
                "--model",
                "small-cnn",
                "--epochs",
                "1",
                "--max-steps",
                "4",
                "--out",
                f,
            ][..],
            &common,
        ]
        .concat());
        assert!(log.contains("device: wgpu"), "{log}");
        ok(&[
            &[
                "qat",
                "--from",
                f,
                "--epochs",
                "1",
                "--max-steps",
                "4",
                "--out",
                q,
            ][..],
            &common,
        ]
        .concat());
        ok(&["convert", q, "--out", m]);
        let out = last_json(&ok(&[
            "eval",
            "--data-dir",
            d,
            "--limit",
            "64",
            "--compare",
            q,
            m,
            "--json",
        ]));
        assert_eq!(int(&out, "top1_mismatch"), 0, "{out}");
        assert_eq!(int(&out, "max_lsb_diff"), 0, "{out}");
        // The checkpoint evaluates on the device as on the CPU (fake quantization is exact on
        // both; the float sums may differ in their last bits, so one image may flip).
        let acc = |dev: &str| {
            let text = ok(&[
                "eval",
                q,
                "--data-dir",
                d,
                "--limit",
                "64",
                "--json",
                "--device",
                dev,
            ]);
            last_json(&text)["fq_acc"].as_f64().unwrap()
        };
        let (gpu, cpu) = (acc("wgpu"), acc("cpu"));
        assert!(
            (gpu - cpu).abs() <= 1.0 / 64.0 + 1e-9,
            "wgpu {gpu}, cpu {cpu}"
        );
    }
}
