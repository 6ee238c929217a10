//! Fuzz target: the CIFAR-10/100 binary record reader must refuse or read any bytes, never
//! panic; what it reads must have whole images and labels below the class count.
#![no_main]

use intq_data::cifar::{parse_records, CifarKind, PIXELS};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let kind = match selector % 3 {
        0 => CifarKind::Cifar10,
        1 => CifarKind::Cifar100 { coarse: false },
        _ => CifarKind::Cifar100 { coarse: true },
    };
    let names: Vec<String> = (0..kind.num_classes()).map(|c| c.to_string()).collect();
    if let Ok(s) = parse_records(bytes, kind, &names, Path::new("fuzz.bin")) {
        assert_eq!(s.len * kind.record_size(), bytes.len());
        assert_eq!(s.images.len(), s.len * PIXELS);
        assert_eq!(s.images_chw().len(), s.images.len());
        assert!(s.labels.iter().all(|&l| (l as usize) < kind.num_classes()));
    }
});
