//! Fuzz target: the NumPy readers (an `.npz` archive of the four Keras arrays, or one `.npy`
//! read as images or as labels) must refuse or read any bytes, never panic or allocate more
//! than the input can hold.
#![no_main]

use intq_data::numpy::{read_npy_bytes, read_npz_bytes, Values};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(d) = read_npz_bytes(bytes, Path::new("fuzz.npz"), None) {
                for s in [&d.train, &d.test] {
                    assert_eq!(s.images.len(), s.len * s.image_size());
                    assert_eq!(s.labels.len(), s.len);
                    assert!(s.labels.iter().all(|&l| (l as usize) < s.num_classes()));
                }
            }
        }
        k => {
            if let Ok(a) = read_npy_bytes(bytes, Path::new("fuzz.npy"), k == 2) {
                let n: usize = a.shape.iter().product();
                let got = match &a.values {
                    Values::U8(v) => v.len(),
                    Values::Int(v) => v.len(),
                };
                assert_eq!(n, got);
                assert!(n <= bytes.len());
            }
        }
    }
});
