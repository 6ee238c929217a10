//! The checked-in hostile `.intq` corpus (tests/hostile/): each file must give exactly the error
//! EXPECTED.txt names, or, where it says OK, load and run without a panic.

use intq_engine::examples::random_input;
use intq_engine::Model;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

fn expected() -> BTreeMap<String, String> {
    let text = fs::read_to_string(corpus_dir().join("EXPECTED.txt")).expect("EXPECTED.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (file, msg) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("EXPECTED.txt line without a tab: {l}"));
            (file.to_string(), msg.to_string())
        })
        .collect()
}

#[test]
fn every_hostile_file_gives_its_exact_error() {
    let expected = expected();
    let mut files: Vec<String> = fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".intq"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus lost files: {files:?}");
    let listed: Vec<&String> = expected.keys().collect();
    assert_eq!(
        files.iter().collect::<Vec<_>>(),
        listed,
        "every corpus file needs a line in EXPECTED.txt and every line a file"
    );
    let mut failures = Vec::new();
    for name in &files {
        let path = corpus_dir().join(name);
        let want = &expected[name];
        match (Model::load(&path), want.as_str()) {
            (Ok(model), "OK") => {
                // Extreme but legal parameters must run, not panic.
                let inputs: Vec<_> = random_input(model.graph(), 7);
                if let Err(e) = model.run(&inputs) {
                    failures.push(format!("{name}: loads but does not run: {e}"));
                }
            }
            (Ok(_), want) => failures.push(format!("{name}: loaded, but must fail with: {want}")),
            (Err(e), want) => {
                let got = e.to_string();
                let prefix = format!("{}: ", path.display());
                let got = got.strip_prefix(&prefix).unwrap_or_else(|| {
                    failures.push(format!("{name}: the error does not name the file: {got}"));
                    &got
                });
                if got != want {
                    failures.push(format!("{name}:\n   got: {got}\n  want: {want}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
