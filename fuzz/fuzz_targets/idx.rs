//! Fuzz target: the IDX reader (plain and gzipped) and the MNIST pickle reader must refuse or
//! read any bytes, never panic or allocate beyond their documented bounds.
#![no_main]

use intq_data::{idx, mnist_from_pickle};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let path = Path::new("fuzz-idx");
    match selector % 3 {
        0 => {
            if let Ok(i) = idx::parse_idx(bytes, false, path, "") {
                let n: usize = i.dims.iter().product();
                assert_eq!(n, i.data.len());
                // A file that reads must encode back to the same bytes.
                assert_eq!(idx::encode_idx(&i.dims, &i.data).unwrap(), bytes);
            }
        }
        1 => {
            let _ = idx::parse_idx(bytes, true, path, "");
        }
        _ => {
            let _ = mnist_from_pickle(bytes, "fuzz.pkl");
        }
    }
});
