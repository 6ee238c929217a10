//! Fuzz target: the training checkpoint loader's parsing layer (`intq-train`'s `ckpt_file.rs`,
//! compiled in directly so that fuzzing needs no burn): safetensors header and offsets, the run
//! metadata, the layout check against a zoo network's tensors and the reading of every tensor.
//! Any bytes must give a value or an error, never a panic or an allocation beyond the input's.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/intq-train/src/ckpt_file.rs"]
#[allow(dead_code)]
mod ckpt_file;

/// `ARCH NAME D0,D1,...` lines: the tensors of fresh zoo networks, as `checkpoint::layout` gives
/// them (regenerated with the seeds, see fuzz/README.md).
const LAYOUTS: &str = include_str!("../seeds/checkpoint_layouts.txt");

fn layout(arch: &str) -> Option<Vec<(String, Vec<usize>)>> {
    let v: Vec<(String, Vec<usize>)> = LAYOUTS
        .lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            (p.next()? == arch).then_some(())?;
            let name = p.next()?.to_string();
            let dims = p
                .next()?
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|d| d.parse().ok())
                .collect::<Option<Vec<usize>>>()?;
            Some((name, dims))
        })
        .collect();
    (!v.is_empty()).then_some(v)
}

fuzz_target!(|data: &[u8]| {
    let file = Path::new("fuzz.ckpt");
    let Ok(ck) = ckpt_file::parse(data, file) else {
        return;
    };
    // Metadata that parsed must write back to the same metadata.
    let again = ckpt_file::FileMeta::from_map(&ck.meta.to_map(), file).expect("round trip");
    assert_eq!(format!("{:?}", ck.meta), format!("{again:?}"));
    let _ = ck.raw_tensors();
    let Some(layout) = layout(&ck.meta.arch) else {
        return;
    };
    if ck.check_layout(&layout).is_ok() {
        // What the layout check accepts, the loader reads without error.
        for (name, dims) in &layout {
            let v = ck.tensor(name, dims).expect("checked tensor reads");
            assert_eq!(v.len(), dims.iter().product::<usize>());
            let m = format!("{}{name}", ckpt_file::MOMENTUM);
            if ck.contains(&m) {
                ck.tensor(&m, dims).expect("checked momentum reads");
            }
        }
    }
});
