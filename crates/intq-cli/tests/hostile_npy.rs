//! The checked-in hostile `.npy` corpus (tests/hostile_npy/): each file must give exactly the
//! error EXPECTED.txt names, or, where it says OK, read.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile_npy")
}

#[test]
fn every_hostile_npy_gives_its_exact_error() {
    let text = fs::read_to_string(corpus_dir().join("EXPECTED.txt")).expect("EXPECTED.txt");
    let expected: BTreeMap<String, String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (f, m) = l.split_once('\t').expect("tab-separated line");
            (f.to_string(), m.to_string())
        })
        .collect();
    let mut files: Vec<String> = fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".npy"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus lost files: {files:?}");
    assert_eq!(
        files.iter().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "every corpus file needs a line in EXPECTED.txt and every line a file"
    );
    let mut failures = Vec::new();
    for name in &files {
        let path = corpus_dir().join(name);
        let want = expected[name].as_str();
        match (intq_cli::npy::read(&path), want) {
            (Ok(_), "OK") => {}
            (Ok(a), want) => failures.push(format!("{name}: read {a:?}, must fail with: {want}")),
            (Err(e), want) => {
                let got = format!("{e:#}");
                let prefix = format!("{}: ", path.display());
                match got.strip_prefix(&prefix) {
                    Some(got) if got == want => {}
                    Some(got) => failures.push(format!("{name}:\n   got: {got}\n  want: {want}")),
                    None => {
                        failures.push(format!("{name}: the error does not name the file: {got}"))
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
