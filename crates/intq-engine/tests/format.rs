//! The `.intq` format: round trips of every op and quantization kind, a byte-exact golden file
//! derived by hand from docs/format.md, one specific error per kind of corruption, bounded
//! allocation and no panic on mutated input, and atomic saves.

use intq_engine::format::{self, crc32, FormatError, HEADER_LEN};
use intq_engine::{
    examples, Activation, ChannelParams, DType, EngineError, Graph, GraphBuilder, Op, OpKind,
    Padding, Quant, QuantParams, TensorData,
};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// An allocator that records, per thread and only while asked to, the largest single request:
// the observable side of "loading never allocates more than the file justifies".

struct Tracking;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Decodes `bytes`, returning the result and the largest single allocation made meanwhile.
fn decode_tracked(bytes: &[u8]) -> (Result<Graph, EngineError>, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let result = format::from_bytes(bytes);
    TRACKING.with(|t| t.set(false));
    (result, LARGEST.with(|l| l.get()))
}

/// What a file of `len` bytes justifies: each decoded tensor or op takes a few times more memory
/// than its smallest encoding (8 bytes), so a generous constant factor of the length.
fn allocation_bound(len: usize) -> usize {
    32 * len + 4096
}

// ---------------------------------------------------------------------------------------------
// Graphs

fn pt(scale: f32, zero_point: i32) -> Option<Quant> {
    Some(Quant::PerTensor(QuantParams { scale, zero_point }))
}

fn pc(scales: &[f32], zero_points: &[i32], axis: usize) -> Option<Quant> {
    Some(Quant::PerChannel(
        ChannelParams::new(scales.to_vec(), zero_points.to_vec(), axis).unwrap(),
    ))
}

/// `n` codes of `dtype` in a spread pattern that starts with the type's minimum and maximum.
fn codes(dtype: DType, n: usize, salt: usize) -> TensorData {
    let v = |i: usize| match i {
        0 => 0,
        1 => 255,
        _ => (i * 73 + salt) % 256,
    };
    match dtype {
        DType::U8 => TensorData::U8((0..n).map(|i| v(i) as u8).collect()),
        DType::I8 => TensorData::I8((0..n).map(|i| (v(i) as i32 - 128) as i8).collect()),
        _ => unreachable!("8-bit codes only"),
    }
}

/// Conv weights whose first two output channels sit at the zero point, so that the i32-extreme
/// biases of those channels cannot overflow the accumulator (src/limits.rs refuses that).
fn conv_codes(dtype: DType, w_zero: i32) -> TensorData {
    let mut c = codes(dtype, 54, 1);
    match &mut c {
        TensorData::U8(v) => v[..36].fill(w_zero as u8),
        TensorData::I8(v) => v[..36].fill(w_zero as i8),
        _ => unreachable!(),
    }
    c
}

/// A valid graph with every op kind, every activation and padding kind, per-tensor and
/// per-channel parameters (weights and bias), zero points at the type's extremes, i32 bias at
/// the i32 extremes, and an f32 constant with -0.0, a subnormal and f32::MAX.
fn every_op_graph(dtype: DType) -> Graph {
    let (lo, mid, hi) = match dtype {
        DType::U8 => (0, 128, 255),
        _ => (-128, 0, 127),
    };
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::F32, &[1, 4, 4, 2], None);
    let q0 = b.tensor("q0", dtype, &[1, 4, 4, 2], pt(0.05, mid));
    b.op(Op::Quantize {
        input: x,
        output: q0,
    });

    // Conv: OHWI [3, 3, 3, 2], per-tensor; dilation 2 along H: effective height 5, SAME keeps 4x4.
    let w_zero = if dtype == DType::U8 { 131 } else { 0 };
    let w0 = b.constant(
        "conv/w",
        &[3, 3, 3, 2],
        pt(0.02, w_zero),
        conv_codes(dtype, w_zero),
    );
    let b0 = b.constant(
        "conv/b",
        &[3],
        pt(0.05 * 0.02, 0),
        TensorData::I32(vec![i32::MIN, i32::MAX, -1]),
    );
    let c0 = b.tensor("c0", dtype, &[1, 4, 4, 3], pt(0.1, lo));
    b.op(Op::Conv2d {
        input: q0,
        filter: w0,
        bias: Some(b0),
        output: c0,
        stride: [1, 1],
        dilation: [2, 1],
        padding: Padding::Same,
        activation: Activation::Relu,
    });

    // Depthwise x2, per channel along axis 3, explicit asymmetric padding, stride 2:
    // H: 4 + 1 + 0 = 5 padded, (5 - 3) / 2 + 1 = 2; W: 4 + 0 + 1 = 5, also 2.
    let dw_zeros: [i32; 6] = if dtype == DType::U8 {
        [0, 255, 128, 1, 254, 127]
    } else {
        [-128, 127, 0, -1, 1, 5]
    };
    let w1 = b.constant(
        "dw/w",
        &[1, 3, 3, 6],
        pc(&[0.01, 0.02, 0.03, 0.04, 0.05, 0.06], &dw_zeros, 3),
        codes(dtype, 54, 2),
    );
    let d0 = b.tensor("d0", dtype, &[1, 2, 2, 6], pt(0.1, lo));
    b.op(Op::DepthwiseConv2d {
        input: c0,
        filter: w1,
        bias: None,
        output: d0,
        stride: [2, 2],
        dilation: [1, 1],
        padding: Padding::Explicit {
            top: 1,
            bottom: 0,
            left: 0,
            right: 1,
        },
        depth_multiplier: 2,
        activation: Activation::Relu6,
    });

    let m0 = b.tensor("m0", dtype, &[1, 2, 2, 6], pt(0.1, lo));
    b.op(Op::MaxPool2d {
        input: d0,
        output: m0,
        filter: [2, 2],
        stride: [1, 1],
        padding: Padding::Same,
        activation: Activation::None,
    });
    let a0 = b.tensor("a0", dtype, &[1, 2, 2, 3], pt(0.1, lo));
    b.op(Op::AveragePool2d {
        input: c0,
        output: a0,
        filter: [2, 2],
        stride: [2, 2],
        padding: Padding::Valid,
        activation: Activation::Relu,
    });
    let k0 = b.tensor("k0", dtype, &[1, 2, 2, 9], pt(0.15, lo));
    b.op(Op::Concat {
        inputs: vec![m0, a0],
        output: k0,
        axis: 3,
    });
    let e0 = b.constant("e0", &[1, 1, 1, 9], pt(0.05, hi), codes(dtype, 9, 3));
    let s0 = b.tensor("s0", dtype, &[1, 2, 2, 9], pt(0.2, hi));
    b.op(Op::Add {
        lhs: k0,
        rhs: e0,
        output: s0,
        activation: Activation::ReluN1To1,
    });
    let r0 = b.tensor("r0", dtype, &[1, 36], pt(0.2, hi));
    b.op(Op::Reshape {
        input: s0,
        output: r0,
    });

    let fc_scales = [0.003f32, 0.004, 0.005, 0.006];
    let fc_zeros: [i32; 4] = if dtype == DType::U8 {
        [10, 20, 30, 40]
    } else {
        [0, -1, 1, 0]
    };
    let w2 = b.constant(
        "fc/w",
        &[4, 36],
        pc(&fc_scales, &fc_zeros, 0),
        codes(dtype, 144, 4),
    );
    let bias_scales: Vec<f32> = fc_scales.iter().map(|&s| 0.2 * s).collect();
    let b2 = b.constant(
        "fc/b",
        &[4],
        pc(&bias_scales, &[0; 4], 0),
        TensorData::I32(vec![5, -5, 1 << 20, -(1 << 20)]),
    );
    let f0 = b.tensor("f0", dtype, &[1, 4], pt(0.25, mid));
    b.op(Op::FullyConnected {
        input: r0,
        weights: w2,
        bias: Some(b2),
        output: f0,
        activation: Activation::None,
    });

    let prob = pt(1.0 / 256.0, lo);
    let l0 = b.tensor("l0", dtype, &[1, 4], prob.clone());
    b.op(Op::Logistic {
        input: f0,
        output: l0,
    });
    let p0 = b.tensor("p0", dtype, &[1, 4], prob);
    b.op(Op::Softmax {
        input: f0,
        output: p0,
        beta: 0.75,
    });
    let y0 = b.tensor("y0", DType::F32, &[1, 4], None);
    b.op(Op::Dequantize {
        input: l0,
        output: y0,
    });
    let y1 = b.tensor("y1", DType::F32, &[1, 4], None);
    b.op(Op::Dequantize {
        input: p0,
        output: y1,
    });

    let fconst = b.constant(
        "f32 constant ✓",
        &[4],
        None,
        TensorData::F32(vec![1.5, -0.0, f32::MIN_POSITIVE / 4.0, f32::MAX]),
    );
    let qc = b.tensor("qc", dtype, &[4], pt(0.5, mid));
    b.op(Op::Quantize {
        input: fconst,
        output: qc,
    });

    b.input(x).output(y0).output(y1).output(qc);
    b.finish().expect("every_op_graph is valid")
}

/// The golden model of `golden_bytes`: Quantize then a 1x1 Conv2d with explicit padding.
fn golden_graph() -> Graph {
    let mut b = GraphBuilder::new();
    let x = b.tensor("x", DType::F32, &[1, 2, 2, 1], None);
    let q = b.tensor("q", DType::U8, &[1, 2, 2, 1], pt(0.5, 3));
    let w = b.constant(
        "w",
        &[1, 1, 1, 1],
        pc(&[0.25], &[128], 0),
        TensorData::U8(vec![7]),
    );
    let bias = b.constant("b", &[1], pt(0.125, 0), TensorData::I32(vec![-2]));
    // Padded H = 2 + 1 + 2 = 5, W = 2 + 3 + 4 = 9; a 1x1 filter at stride 1 keeps both.
    let y = b.tensor("y", DType::U8, &[1, 5, 9, 1], pt(1.0, 0));
    b.op(Op::Quantize {
        input: x,
        output: q,
    });
    b.op(Op::Conv2d {
        input: q,
        filter: w,
        bias: Some(bias),
        output: y,
        stride: [1, 1],
        dilation: [1, 1],
        padding: Padding::Explicit {
            top: 1,
            bottom: 2,
            left: 3,
            right: 4,
        },
        activation: Activation::Relu6,
    });
    b.input(x).output(y);
    b.finish().expect("golden graph is valid")
}

// File offsets in the golden file, derived by hand from docs/format.md (header 32 bytes; tensor
// record = 4 + name + 4 tag bytes + 8 per dimension + quant + 16 if constant):
//   tensor count at 32; tensor 0 'x' at 36: 4 + 1 + 4 + 32 = 41 bytes, to 77;
//   tensor 1 'q' at 77: 41 + 8 (per-tensor) = 49, to 126;
//   tensor 2 'w' at 126: 41 + 8 axis + 4 count + 4 scale + 4 zero point + 16 = 77, to 203;
//   tensor 3 'b' at 203: 4 + 1 + 4 + 8 + 8 + 16 = 41, to 244; tensor 4 'y' at 244: 49, to 293;
//   inputs at 293 (count, id 0), outputs at 301 (count, id 4), op count at 309;
//   op 0 Quantize at 313: tag, length 8, ids at 321 and 325;
//   op 1 Conv2d at 329: tag, length at 333, body from 337: 4 ids (16), stride and dilation
//   (32), padding tag at 385 + 4 amounts (32), activation at 418; body = 82 bytes.
//   Metadata ends at 419; w's data at 432 (next multiple of 16), b's at 448, file ends at 452.
const X_NAME: usize = 40;
const X_DTYPE: usize = 41;
const X_RANK: usize = 42;
const X_QUANT: usize = 43;
const X_DIMS: usize = 45;
const Q_SCALE: usize = 118;
const W_FLAG: usize = 134;
const W_SCALE: usize = 179;
const W_DATA_OFFSET: usize = 187;
const W_DATA_LEN: usize = 195;
const OUTPUT_ID: usize = 305;
const QUANTIZE_LEN: usize = 317;
const CONV_TAG: usize = 329;
const CONV_BIAS: usize = 345;
const CONV_OUTPUT: usize = 349;
const CONV_PADDING: usize = 385;
const CONV_ACTIVATION: usize = 418;

/// The golden file written out field by field, independently of the writer.
fn golden_bytes() -> Vec<u8> {
    let mut p: Vec<u8> = Vec::new();
    let u32_ = |p: &mut Vec<u8>, v: u32| p.extend_from_slice(&v.to_le_bytes());
    let u64_ = |p: &mut Vec<u8>, v: u64| p.extend_from_slice(&v.to_le_bytes());
    let f32_ = |p: &mut Vec<u8>, v: f32| p.extend_from_slice(&v.to_le_bytes());
    let tensor_head = |p: &mut Vec<u8>, name: &str, tags: [u8; 4], dims: &[u64]| {
        u32_(p, name.len() as u32);
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&tags);
        for &d in dims {
            u64_(p, d);
        }
    };
    u32_(&mut p, 5);
    // 'x': float32 (3), rank 4, no quantization (0), no data (0).
    tensor_head(&mut p, "x", [3, 4, 0, 0], &[1, 2, 2, 1]);
    // 'q': uint8 (0), per-tensor (1).
    tensor_head(&mut p, "q", [0, 4, 1, 0], &[1, 2, 2, 1]);
    f32_(&mut p, 0.5);
    u32_(&mut p, 3);
    // 'w': uint8, per-channel (2), constant (1): axis 0, 1 channel, data at 432, 1 byte.
    tensor_head(&mut p, "w", [0, 4, 2, 1], &[1, 1, 1, 1]);
    u64_(&mut p, 0);
    u32_(&mut p, 1);
    f32_(&mut p, 0.25);
    u32_(&mut p, 128);
    u64_(&mut p, 432);
    u64_(&mut p, 1);
    // 'b': int32 (2), rank 1, per-tensor, constant: data at 448, 4 bytes.
    tensor_head(&mut p, "b", [2, 1, 1, 1], &[1]);
    f32_(&mut p, 0.125);
    u32_(&mut p, 0);
    u64_(&mut p, 448);
    u64_(&mut p, 4);
    // 'y': uint8, per-tensor (1.0, 0).
    tensor_head(&mut p, "y", [0, 4, 1, 0], &[1, 5, 9, 1]);
    f32_(&mut p, 1.0);
    u32_(&mut p, 0);
    // inputs [0], outputs [4], 2 ops.
    for v in [1, 0, 1, 4, 2] {
        u32_(&mut p, v);
    }
    // Quantize (tag 10): 8-byte body, input 0, output 1.
    for v in [10, 8, 0, 1] {
        u32_(&mut p, v);
    }
    // Conv2d (tag 0): 82-byte body; input 1, filter 2, bias 3, output 4.
    for v in [0, 82, 1, 2, 3, 4] {
        u32_(&mut p, v);
    }
    for v in [1, 1, 1, 1] {
        u64_(&mut p, v); // stride h, w; dilation h, w
    }
    p.push(2); // explicit
    for v in [1, 2, 3, 4] {
        u64_(&mut p, v); // top, bottom, left, right
    }
    p.push(2); // Relu6
    assert_eq!(
        HEADER_LEN + p.len(),
        419,
        "metadata ends where the comment derives"
    );
    p.resize(432 - HEADER_LEN, 0);
    p.push(7);
    p.resize(448 - HEADER_LEN, 0);
    p.extend_from_slice(&(-2i32).to_le_bytes());

    let mut file = b"\x89INTQ\r\n\x1a".to_vec();
    file.extend_from_slice(&1u16.to_le_bytes());
    file.extend_from_slice(&0u16.to_le_bytes());
    file.extend_from_slice(&crc32(&p).to_le_bytes());
    file.extend_from_slice(&(p.len() as u64).to_le_bytes());
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&p);
    assert_eq!(file.len(), 452);
    file
}

fn every_op_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| format::to_bytes(&every_op_graph(DType::I8)))
}

/// Rewrites the header's payload length and checksum to match the bytes, so that a test's
/// corruption reaches the check behind the checksum.
fn refix(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    let payload_len = (bytes.len() - HEADER_LEN) as u64;
    bytes[16..24].copy_from_slice(&payload_len.to_le_bytes());
    let crc = crc32(&bytes[HEADER_LEN..]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
}

fn patched(at: usize, value: &[u8]) -> Vec<u8> {
    let mut b = golden_bytes();
    b[at..at + value.len()].copy_from_slice(value);
    refix(&mut b);
    b
}

fn format_err(bytes: &[u8]) -> FormatError {
    match format::from_bytes(bytes) {
        Err(EngineError::Format(e)) => e,
        other => panic!("expected a format error, got {other:?}"),
    }
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("format-tests")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn crc32_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn every_op_graph_covers_every_op_kind() {
    let all = [
        OpKind::Conv2d,
        OpKind::DepthwiseConv2d,
        OpKind::FullyConnected,
        OpKind::Add,
        OpKind::AveragePool2d,
        OpKind::MaxPool2d,
        OpKind::Concat,
        OpKind::Logistic,
        OpKind::Softmax,
        OpKind::Reshape,
        OpKind::Quantize,
        OpKind::Dequantize,
    ];
    let g = every_op_graph(DType::I8);
    let kinds: HashSet<OpKind> = g.ops().iter().map(Op::kind).collect();
    assert_eq!(kinds, all.into_iter().collect());
    let quant: Vec<_> = g.tensors().iter().map(|t| &t.quant).collect();
    assert!(quant
        .iter()
        .any(|q| matches!(q, Some(Quant::PerChannel(_)))));
    assert!(quant.iter().any(|q| matches!(q, Some(Quant::PerTensor(_)))));
}

#[test]
fn bytes_round_trip_to_an_equal_graph_and_the_same_bytes() {
    for dtype in [DType::U8, DType::I8] {
        let g = every_op_graph(dtype);
        let bytes = format::to_bytes(&g);
        let back = format::from_bytes(&bytes).unwrap();
        assert_eq!(back, g, "{dtype}");
        // Canonical: re-encoding gives the same bytes, so every f32 bit (-0.0, the subnormal)
        // survived, which Graph's PartialEq alone would not show for -0.0.
        assert_eq!(format::to_bytes(&back), bytes, "{dtype}");
    }
}

#[test]
fn writer_produces_the_hand_derived_golden_file() {
    let bytes = format::to_bytes(&golden_graph());
    let golden = golden_bytes();
    assert_eq!(bytes.len(), golden.len());
    for (i, (a, b)) in bytes.iter().zip(&golden).enumerate() {
        assert_eq!(a, b, "byte {i} differs");
    }
    assert_eq!(format::from_bytes(&golden).unwrap(), golden_graph());
    // Constant data offsets are multiples of 16.
    assert_eq!(432 % 16, 0);
    assert_eq!(448 % 16, 0);
}

#[test]
fn small_cnn_round_trips_and_is_saved_for_the_cli() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("models");
    fs::create_dir_all(&dir).unwrap();
    for (dtype, tag) in [(DType::U8, "u8"), (DType::I8, "i8")] {
        let g = examples::small_cnn(dtype, false, 7);
        let path = dir.join(format!("small_cnn_{tag}.intq"));
        format::save(&g, &path).unwrap();
        assert_eq!(format::load(&path).unwrap(), g);
        assert_eq!(fs::read(&path).unwrap(), format::to_bytes(&g));
        let with_float_edges = examples::small_cnn(dtype, true, 7);
        let bytes = format::to_bytes(&with_float_edges);
        assert_eq!(format::from_bytes(&bytes).unwrap(), with_float_edges);
    }
}

#[test]
fn save_then_load_through_a_real_file_and_overwrite() {
    let dir = tmp_dir("save_load");
    let path = dir.join("model.intq");
    let first = every_op_graph(DType::U8);
    format::save(&first, &path).unwrap();
    assert_eq!(format::load(&path).unwrap(), first);
    let second = every_op_graph(DType::I8);
    format::save(&second, &path).unwrap();
    assert_eq!(format::load(&path).unwrap(), second);
    assert_eq!(
        dir_entries(&dir),
        vec!["model.intq"],
        "no temporary files left"
    );
}

#[test]
fn save_into_a_missing_directory_names_the_path_and_creates_nothing() {
    let dir = tmp_dir("missing_dir");
    let path = dir.join("no").join("such").join("model.intq");
    let err = format::save(&golden_graph(), &path).unwrap_err();
    match &err {
        EngineError::Io { path: p, .. } => assert_eq!(p, &path),
        other => panic!("expected an Io error, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(dir_entries(&dir).is_empty());
}

#[test]
fn a_save_that_fails_after_writing_leaves_what_was_there_and_no_temporary() {
    // The rename fails (the target is a non-empty directory) after the temporary file has been
    // written and synced: the target is untouched and the temporary file removed.
    let dir = tmp_dir("failed_rename");
    let path = dir.join("model.intq");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("keep.txt"), b"old").unwrap();
    let err = format::save(&golden_graph(), &path).unwrap_err();
    assert!(
        matches!(&err, EngineError::Io { path: p, .. } if p == &path),
        "{err:?}"
    );
    assert_eq!(fs::read(path.join("keep.txt")).unwrap(), b"old");
    assert_eq!(dir_entries(&dir), vec!["model.intq"]);
}

#[test]
fn load_errors_are_wrapped_with_the_file_name() {
    let dir = tmp_dir("load_errors");
    let missing = dir.join("missing.intq");
    let err = format::load(&missing).unwrap_err();
    // An I/O error names the file itself, exactly once.
    assert_eq!(err.to_string().matches("missing.intq").count(), 1, "{err}");
    match err {
        EngineError::Io { path, .. } => assert_eq!(path, missing),
        other => panic!("expected Io, got {other:?}"),
    }

    let corrupt = dir.join("corrupt.intq");
    let mut bytes = golden_bytes();
    bytes[100] ^= 1;
    fs::write(&corrupt, &bytes).unwrap();
    let err = format::load(&corrupt).unwrap_err();
    assert!(err.to_string().contains("corrupt.intq"), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    match err {
        EngineError::File { path, source } => {
            assert_eq!(path, corrupt);
            assert!(
                matches!(
                    *source,
                    EngineError::Format(FormatError::ChecksumMismatch { .. })
                ),
                "{source:?}"
            );
        }
        other => panic!("expected File, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Corruption: one specific error each

#[test]
fn every_prefix_is_truncated() {
    // As stored: the header's payload length exceeds what the prefix holds.
    for bytes in [golden_bytes(), every_op_bytes().to_vec()] {
        for len in 0..bytes.len() {
            match format_err(&bytes[..len]) {
                FormatError::Truncated { .. } => {}
                other => panic!("prefix of {len} bytes: {other:?}"),
            }
        }
    }
}

#[test]
fn every_prefix_with_a_consistent_header_is_truncated_inside() {
    // Header rewritten to match, so the cut is found by the payload reader itself.
    for full in [golden_bytes(), every_op_bytes().to_vec()] {
        for len in HEADER_LEN..full.len() {
            let mut bytes = full[..len].to_vec();
            refix(&mut bytes);
            match format_err(&bytes) {
                FormatError::Truncated {
                    offset,
                    needed,
                    available,
                } => {
                    assert!(needed > available, "len {len}");
                    assert!(offset + available <= len as u64, "len {len}");
                }
                other => panic!("payload cut at {len} bytes: {other:?}"),
            }
        }
    }
    // Where: cut 3 bytes into the Conv2d op's 82-byte body (which starts at 337).
    let mut bytes = golden_bytes()[..340].to_vec();
    refix(&mut bytes);
    assert_eq!(
        format_err(&bytes),
        FormatError::Truncated {
            offset: 337,
            needed: 82,
            available: 3
        }
    );
    // Cut in the padding between w's data (432) and b's (448): 15 bytes of padding from 433.
    let mut bytes = golden_bytes()[..440].to_vec();
    refix(&mut bytes);
    assert_eq!(
        format_err(&bytes),
        FormatError::Truncated {
            offset: 433,
            needed: 15,
            available: 7
        }
    );
    // Two ops need at least 16 bytes after the op count (at 309); a cut at 323 leaves 10.
    let mut bytes = golden_bytes()[..323].to_vec();
    refix(&mut bytes);
    assert_eq!(
        format_err(&bytes),
        FormatError::Truncated {
            offset: 313,
            needed: 16,
            available: 10
        }
    );
}

#[test]
fn any_flipped_payload_byte_is_a_checksum_mismatch() {
    let golden = golden_bytes();
    let stored = u32::from_le_bytes(golden[12..16].try_into().unwrap());
    for i in HEADER_LEN..golden.len() {
        let mut bytes = golden.clone();
        bytes[i] ^= 0x5A;
        match format_err(&bytes) {
            FormatError::ChecksumMismatch {
                stored: s,
                computed,
            } => {
                assert_eq!(s, stored);
                assert_eq!(computed, crc32(&bytes[HEADER_LEN..]));
                assert_ne!(computed, stored);
            }
            other => panic!("byte {i}: {other:?}"),
        }
    }
}

#[test]
fn flipped_header_bytes_give_the_error_of_their_field() {
    let golden = golden_bytes();
    for i in 0..HEADER_LEN {
        let mut bytes = golden.clone();
        bytes[i] ^= 0x5A;
        let result = format::from_bytes(&bytes);
        let e = match result {
            // The minor version: a reader takes every minor version of its major.
            Ok(g) if (10..12).contains(&i) => {
                assert_eq!(g, golden_graph());
                continue;
            }
            Err(EngineError::Format(e)) => e,
            other => panic!("byte {i}: {other:?}"),
        };
        let ok = match i {
            0..=7 => matches!(e, FormatError::BadMagic { .. }),
            8..=9 => matches!(e, FormatError::UnsupportedVersion { .. }),
            12..=15 => matches!(e, FormatError::ChecksumMismatch { .. }),
            16..=23 => matches!(
                e,
                FormatError::Truncated { .. } | FormatError::TrailingBytes { .. }
            ),
            _ => matches!(e, FormatError::Malformed { offset: 24, .. }),
        };
        assert!(ok, "byte {i}: {e:?}");
    }
}

#[test]
fn wrong_magic() {
    let mut bytes = golden_bytes();
    bytes[..4].copy_from_slice(b"PK\x03\x04");
    let e = format_err(&bytes);
    assert_eq!(
        e,
        FormatError::BadMagic {
            found: b"PK\x03\x04Q\r\n\x1a".to_vec()
        }
    );
    assert!(e.to_string().contains("50 4B 03 04"), "{e}");
    // Shorter than the magic and not a prefix of it: still not an .intq file, not "truncated".
    assert_eq!(
        format_err(b"hi"),
        FormatError::BadMagic {
            found: b"hi".to_vec()
        }
    );
}

#[test]
fn unknown_major_version_says_which_it_found_and_which_it_reads() {
    let mut bytes = golden_bytes();
    bytes[8..10].copy_from_slice(&99u16.to_le_bytes());
    bytes[10..12].copy_from_slice(&3u16.to_le_bytes());
    let e = format_err(&bytes);
    assert_eq!(
        e,
        FormatError::UnsupportedVersion {
            major: 99,
            minor: 3,
            supported: 1
        }
    );
    let msg = e.to_string();
    assert!(msg.contains("99.3") && msg.contains("version 1"), "{msg}");
}

#[test]
fn trailing_bytes_after_the_payload_and_inside_it() {
    let mut bytes = golden_bytes();
    bytes.push(0);
    assert_eq!(
        format_err(&bytes),
        FormatError::TrailingBytes {
            offset: 452,
            count: 1
        }
    );
    // Declared as payload (header rewritten): the reader ends at 452 and finds 3 bytes more.
    bytes.extend_from_slice(&[0, 0]);
    refix(&mut bytes);
    assert_eq!(
        format_err(&bytes),
        FormatError::TrailingBytes {
            offset: 452,
            count: 3
        }
    );
}

#[test]
fn absurd_dimensions_of_an_activation_name_the_tensor() {
    let absurd = |bytes: &[u8]| match format_err(bytes) {
        FormatError::AbsurdDimensions { tensor, name, .. } => {
            assert_eq!((tensor, name.as_str()), (0, "x"));
            format_err(bytes).to_string()
        }
        other => panic!("{other:?}"),
    };
    // One dimension of 2^40.
    let msg = absurd(&patched(X_DIMS, &(1u64 << 40).to_le_bytes()));
    assert!(
        msg.contains("'x'") && msg.contains("1099511627776"),
        "{msg}"
    );
    // 2^16 * 2^16 = 2^32 elements, each dimension fine.
    let mut dims = Vec::new();
    for d in [1u64 << 16, 1 << 16, 1, 1] {
        dims.extend_from_slice(&d.to_le_bytes());
    }
    let msg = absurd(&patched(X_DIMS, &dims));
    assert!(msg.contains("4294967296 elements"), "{msg}");
    // 2^31 four times: 2^124 overflows u64.
    let dims: Vec<u8> = (0..4).flat_map(|_| (1u64 << 31).to_le_bytes()).collect();
    let msg = absurd(&patched(X_DIMS, &dims));
    assert!(msg.contains("overflows"), "{msg}");
    // Rank 9.
    let msg = absurd(&patched(X_RANK, &[9]));
    assert!(msg.contains("rank 9"), "{msg}");
    // Exactly 2^31 elements is allowed by the format (the graph then fails validation, since
    // the other shapes no longer match, but not as absurd).
    let dims: Vec<u8> = [1u64 << 31, 1, 1, 1]
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect();
    assert!(matches!(
        format::from_bytes(&patched(X_DIMS, &dims)),
        Err(EngineError::Graph(_))
    ));
}

#[test]
fn dangling_tensor_ids_name_the_op_and_the_id() {
    let e = format_err(&patched(CONV_OUTPUT, &99u32.to_le_bytes()));
    assert_eq!(
        e,
        FormatError::DanglingTensorId {
            op: 1,
            kind: OpKind::Conv2d,
            id: 99,
            tensor_count: 5
        }
    );
    assert!(e.to_string().contains("op 1 (Conv2d)") && e.to_string().contains("#99"));
    // The optional bias: 5 is one past the last tensor; u32::MAX would mean "no bias".
    assert!(matches!(
        format_err(&patched(CONV_BIAS, &5u32.to_le_bytes())),
        FormatError::DanglingTensorId { op: 1, id: 5, .. }
    ));
    assert_eq!(
        format_err(&patched(OUTPUT_ID, &5u32.to_le_bytes())),
        FormatError::DanglingGraphTensor {
            role: "output",
            index: 0,
            id: 5,
            tensor_count: 5
        }
    );
    // u32::MAX as the bias is a valid "none": the graph loads without the bias.
    let g = format::from_bytes(&patched(CONV_BIAS, &u32::MAX.to_le_bytes())).unwrap();
    assert!(matches!(g.ops()[1], Op::Conv2d { bias: None, .. }));
}

#[test]
fn unknown_tags_are_named() {
    let e = format_err(&patched(CONV_TAG, &200u32.to_le_bytes()));
    assert_eq!(
        e,
        FormatError::UnknownOp {
            op: 1,
            tag: 200,
            offset: CONV_TAG as u64
        }
    );
    assert!(e.to_string().contains("op tag 200"), "{e}");
    assert_eq!(
        format_err(&patched(X_DTYPE, &[4])),
        FormatError::UnknownDType {
            tensor: 0,
            name: "x".into(),
            tag: 4
        }
    );
    assert_eq!(
        format_err(&patched(X_QUANT, &[4])),
        FormatError::UnknownQuant {
            tensor: 0,
            name: "x".into(),
            tag: 4
        }
    );
    assert_eq!(
        format_err(&patched(CONV_PADDING, &[3])),
        FormatError::UnknownPadding {
            op: 1,
            kind: OpKind::Conv2d,
            tag: 3
        }
    );
    assert_eq!(
        format_err(&patched(CONV_ACTIVATION, &[4])),
        FormatError::UnknownActivation {
            op: 1,
            kind: OpKind::Conv2d,
            tag: 4
        }
    );
}

#[test]
fn invalid_utf8_name() {
    assert_eq!(
        format_err(&patched(X_NAME, &[0xFF])),
        FormatError::InvalidName {
            tensor: 0,
            offset: X_NAME as u64
        }
    );
}

#[test]
fn constant_data_must_match_its_shape_and_place() {
    // 'w' has one uint8 element: 2 bytes is wrong.
    assert!(matches!(
        format_err(&patched(W_DATA_LEN, &2u64.to_le_bytes())),
        FormatError::BadData { tensor: 2, .. }
    ));
    // Its data is at 432; pointing at 448 (aligned, but not where it lies) is refused.
    let e = format_err(&patched(W_DATA_OFFSET, &448u64.to_le_bytes()));
    assert!(
        matches!(&e, FormatError::BadData { tensor: 2, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("432"), "{e}");
    // A data flag other than 0 or 1.
    assert!(matches!(
        format_err(&patched(W_FLAG, &[2])),
        FormatError::Malformed { offset: 134, .. }
    ));
}

#[test]
fn bad_per_channel_scale_and_op_body_length() {
    assert!(matches!(
        format_err(&patched(W_SCALE, &(-1.0f32).to_le_bytes())),
        FormatError::BadQuant { tensor: 2, .. }
    ));
    // Quantize's body declared 12 bytes: its two ids take 8, then 4 unread bytes (the next
    // op's tag) are left in the record.
    let e = format_err(&patched(QUANTIZE_LEN, &12u32.to_le_bytes()));
    assert!(matches!(e, FormatError::Malformed { .. }), "{e:?}");
    // Declared 4 bytes: the output id does not fit in the body.
    assert_eq!(
        format_err(&patched(QUANTIZE_LEN, &4u32.to_le_bytes())),
        FormatError::Truncated {
            offset: 325,
            needed: 4,
            available: 0
        }
    );
}

#[test]
fn well_formed_files_with_invalid_graphs_are_graph_errors() {
    // A per-tensor scale of -0.5 is well-formed bytes but an invalid graph.
    let bytes = patched(Q_SCALE, &(-0.5f32).to_le_bytes());
    assert!(
        matches!(format::from_bytes(&bytes), Err(EngineError::Graph(_))),
        "{:?}",
        format::from_bytes(&bytes)
    );
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    // Tensor count, name length, channel count and concat arity of u32::MAX, each re-checksummed.
    let cases: [(usize, &str); 3] = [(32, "tensor count"), (36, "name length"), (175, "channels")];
    for (at, what) in cases {
        let bytes = patched(at, &u32::MAX.to_le_bytes());
        let (result, largest) = decode_tracked(&bytes);
        assert!(
            matches!(
                result,
                Err(EngineError::Format(FormatError::Truncated { .. }))
            ),
            "{what}: {result:?}"
        );
        assert!(
            largest <= allocation_bound(bytes.len()),
            "{what}: {largest}"
        );
    }
}

#[test]
fn every_byte_of_the_golden_payload_set_to_edge_values_never_panics() {
    let golden = golden_bytes();
    for i in HEADER_LEN..golden.len() {
        for v in [0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF, golden[i] ^ 1] {
            let mut bytes = golden.clone();
            bytes[i] = v;
            refix(&mut bytes);
            let (_, largest) = decode_tracked(&bytes);
            assert!(largest <= allocation_bound(bytes.len()), "byte {i} = {v}");
        }
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    FlipBit(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    /// Four 0xFF bytes: a u32 count or id of u32::MAX.
    Max32(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Edit::Set(i, v)),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Edit::FlipBit(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Edit::Insert(i, v)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Max32),
    ]
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    if bytes.is_empty() {
        return;
    }
    let at = |i: usize| i % bytes.len();
    match *e {
        Edit::Set(i, v) => {
            let i = at(i);
            bytes[i] = v;
        }
        Edit::FlipBit(i, b) => {
            let i = at(i);
            bytes[i] ^= 1 << b;
        }
        Edit::Insert(i, v) => {
            let i = at(i);
            bytes.insert(i, v);
        }
        Edit::Delete(i) => {
            let i = at(i);
            bytes.remove(i);
        }
        Edit::Max32(i) => {
            let i = at(i);
            let end = (i + 4).min(bytes.len());
            bytes[i..end].fill(0xFF);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_mutations_never_panic_nor_overallocate(
        edits in proptest::collection::vec(edit(), 1..6),
        golden in any::<bool>(),
        fix_header in any::<bool>(),
    ) {
        let mut bytes = if golden { golden_bytes() } else { every_op_bytes().to_vec() };
        let original = bytes.clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        if fix_header {
            refix(&mut bytes);
        }
        let (result, largest) = decode_tracked(&bytes);
        prop_assert!(largest <= allocation_bound(bytes.len()), "{largest} bytes allocated");
        // Without the header rewritten, a changed payload is always caught by the checksum or
        // the length; only the minor version may change unnoticed.
        let payload_changed = bytes.len() != original.len()
            || bytes[HEADER_LEN..] != original[HEADER_LEN..];
        if !fix_header && payload_changed {
            prop_assert!(result.is_err());
        }
    }
}

fn with_metadata(entries: &[(&str, &str)]) -> Graph {
    let mut g = golden_graph();
    for (k, v) in entries {
        g.set_metadata(k, v).unwrap();
    }
    g
}

fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

#[test]
fn metadata_round_trips_in_key_order_and_stamps_minor_version_3() {
    let g = with_metadata(&[("intq.zeta", ""), ("intq.alpha", "ünïcode"), ("k", "v")]);
    let bytes = format::to_bytes(&g);
    assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 3);
    let back = format::from_bytes(&bytes).unwrap();
    assert_eq!(back, g);
    let keys: Vec<&str> = back.metadata().keys().map(String::as_str).collect();
    assert_eq!(keys, ["intq.alpha", "intq.zeta", "k"]);
    assert_eq!(back.metadata()["intq.alpha"], "ünïcode");
    assert_eq!(format::to_bytes(&back), bytes);
    // Without metadata the file keeps the lowest minor version its tags need.
    let plain = format::to_bytes(&golden_graph());
    assert_ne!(u16::from_le_bytes([plain[10], plain[11]]), 3);
    assert!(format::from_bytes(&plain).unwrap().metadata().is_empty());
}

#[test]
fn metadata_keys_are_checked_when_set() {
    let mut g = golden_graph();
    assert!(g.set_metadata("", "x").is_err());
    let long = "k".repeat(format::MAX_METADATA_KEY + 1);
    let err = g.set_metadata(&long, "x").unwrap_err().to_string();
    assert!(err.contains("257 bytes"), "{err}");
    assert!(g.set_metadata(&long[1..], "x").is_ok());
}

#[test]
fn bad_metadata_is_refused_with_its_reason() {
    let good = format::to_bytes(&with_metadata(&[("key1", "value"), ("key2", "other")]));
    let malformed = |bytes: &[u8]| match format_err(bytes) {
        FormatError::Malformed { message, .. } => message,
        e => panic!("expected Malformed, got {e:?}"),
    };
    // Keys out of order: "key2" becomes "key0", before "key1".
    let mut b = good.clone();
    let at = find(&b, b"key2");
    b[at + 3] = b'0';
    refix(&mut b);
    let m = malformed(&b);
    assert!(m.contains("'key0' is not after the previous key"), "{m}");
    // A duplicate key.
    b[at + 3] = b'1';
    refix(&mut b);
    assert!(malformed(&b).contains("'key1' is not after"));
    // A value that is not UTF-8.
    let mut b = good.clone();
    let at = find(&b, b"other");
    b[at] = 0xFF;
    refix(&mut b);
    let m = malformed(&b);
    assert!(
        m.contains("metadata entry 1: the value is not valid UTF-8"),
        "{m}"
    );
    // An empty key.
    let mut b = good.clone();
    let at = find(&b, b"key1") - 4;
    b[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    refix(&mut b);
    assert!(format::from_bytes(&b).is_err());
    // A count larger than the bytes left is truncated, before any allocation.
    let mut b = good;
    let at = find(&b, b"key1") - 8;
    assert_eq!(b[at..at + 4], 2u32.to_le_bytes());
    b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    refix(&mut b);
    assert!(matches!(format_err(&b), FormatError::Truncated { .. }));
}
