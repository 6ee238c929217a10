//! `intq import`, `intq export`, and `intq run`/`inspect` on `.tflite` files, end to end against
//! a committed TFLite-reference fixture (keyword spotting, produced by tools/tflite-check).

mod common;
use common::intq;

use std::path::{Path, PathBuf};

fn ok(args: &[&str]) -> String {
    let out = intq(args);
    assert!(
        out.status.success(),
        "intq {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../intq-tflite/tests/fixtures/keyword_spotting")
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("tflite_cli", name)
}

fn npy_payload(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    let mut payload = &b[..];
    ndarray_npy::npy::header::Header::from_reader(&mut payload).unwrap();
    payload.to_vec()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn import_export_and_run_reproduce_tflite_outputs_and_intermediates() {
    let d = scratch("kws");
    let model = fixture().join("keyword_spotting.tflite");
    let input = fixture().join("seed0_input0.npy");
    let expected = npy_payload(&fixture().join("seed0_output0.npy"));

    // The .tflite directly.
    let out = d.join("direct.npy");
    ok(&["run", s(&model), "-i", s(&input), "-o", s(&out)]);
    assert_eq!(npy_payload(&out), expected);

    // Imported to .intq, then exported back to .tflite: same bytes out of both.
    let intq_model = d.join("kws.intq");
    ok(&["import", s(&model), "--out", s(&intq_model)]);
    let out = d.join("imported.npy");
    ok(&["run", s(&intq_model), "-i", s(&input), "-o", s(&out)]);
    assert_eq!(npy_payload(&out), expected);
    let exported = d.join("kws.tflite");
    ok(&["export", s(&intq_model), "--tflite", s(&exported)]);
    let out = d.join("exported.npy");
    ok(&["run", s(&exported), "-i", s(&input), "-o", s(&out)]);
    assert_eq!(npy_payload(&out), expected);

    // An intermediate by its TFLite name, against the fixture's CRC of TFLite's bytes.
    let table = std::fs::read_to_string(fixture().join("fixture.tsv")).unwrap();
    let (name, crc) = table
        .lines()
        .filter(|l| l.starts_with("crc32\t"))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[1].to_string(), u32::from_str_radix(f[2], 16).unwrap())
        })
        .nth(3)
        .unwrap();
    let out = d.join("mid.npy");
    ok(&[
        "run",
        s(&model),
        "-i",
        s(&input),
        "-o",
        s(&out),
        "--tensor",
        &name,
    ]);
    assert_eq!(
        intq_engine::format::crc32(&npy_payload(&out)),
        crc,
        "{name}"
    );

    // inspect shows TFLite's names.
    let text = ok(&["inspect", s(&model)]);
    assert!(
        text.contains("'input_1'") && text.contains("DepthwiseConv2d"),
        "{text}"
    );
}

#[test]
fn a_broken_tflite_file_is_a_clear_error() {
    let d = scratch("broken");
    let bytes = std::fs::read(fixture().join("keyword_spotting.tflite")).unwrap();
    let path = d.join("cut.tflite");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let out = intq(&["inspect", s(&path)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.tflite") && err.contains("malformed .tflite"),
        "{err}"
    );
}
