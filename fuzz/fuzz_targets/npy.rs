//! Fuzz target: the CLI's `.npy` reader (over intq-data's guarded `npy` module) must refuse or
//! read any bytes, never panic, over-allocate or stall on a deeply nested header.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/intq-cli/src/npy.rs"]
#[allow(dead_code)]
mod npy;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = npy::parse(data, "fuzz.npy") {
        // What was read must write back to bytes that read back equal.
        let bytes = npy::to_bytes(&a).expect("a read array writes");
        let again = npy::parse(&bytes, "again.npy").expect("a written array reads back");
        assert_eq!(a.shape, again.shape);
    }
});
