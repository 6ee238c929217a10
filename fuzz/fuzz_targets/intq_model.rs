//! Fuzz target: decode an `.intq` file, validate and plan it, and run whatever loads on a
//! deterministic input, so that validation is proven to guard every kernel.
#![no_main]

use intq_engine::examples::random_input;
use intq_engine::{format, Model};
use libfuzzer_sys::fuzz_target;

/// Graphs whose activations would need more than this are loaded and planned but not run, so
/// that a fuzzed shape cannot make the run itself exhaust memory (loading is still checked).
const MAX_RUN_BYTES: usize = 64 << 20;

fuzz_target!(|data: &[u8]| {
    // Random mutations almost never keep the CRC-32 right, which would stop every input at the
    // checksum; so the header's length and checksum are made to agree with the payload, and
    // the checksum check itself is left to the unit tests and the hostile corpus.
    let mut data = data.to_vec();
    if data.len() >= 32 {
        let payload_len = (data.len() - 32) as u64;
        data[16..24].copy_from_slice(&payload_len.to_le_bytes());
        let crc = format::crc32(&data[32..]);
        data[12..16].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok(graph) = format::from_bytes(&data) else {
        return;
    };
    // Whatever decodes must encode to bytes that decode to the same graph.
    let bytes = format::to_bytes(&graph);
    assert_eq!(format::from_bytes(&bytes).expect("re-decode"), graph);
    let Ok(model) = Model::new(graph) else {
        return;
    };
    let stats = model.memory_stats();
    if stats.bytes_without_reuse > MAX_RUN_BYTES {
        return;
    }
    let inputs = random_input(model.graph(), 1);
    let _ = model.run(&inputs);
});
