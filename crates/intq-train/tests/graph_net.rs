//! Networks built from imported ONNX graphs out of the zoo's QAT layers: in float mode they
//! compute what ONNX Runtime computes on the committed fixtures (crates/intq-onnx/tests/fixtures),
//! and what the QAT layers cannot take is refused naming the node.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use intq_train::fake_quant::host_vec;
use intq_train::graph_net::{GraphNet, Head};
use intq_train::layers::LayerOpts;
use intq_train::Ctx;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../intq-onnx/tests/fixtures")
        .join(name)
}

fn npy(path: PathBuf) -> (Vec<usize>, Vec<f32>) {
    let (h, v) = intq_data::npy::parse::<f32>(&std::fs::read(path).unwrap()).unwrap();
    (h.shape, v)
}

/// Runs fixture `name` through its network in float mode; max |intq - ort| / max |ort|.
/// A fixture's input NCHW: an NHWC one (a Keras-style model's) transposed.
fn nchw_input(name: &str) -> (Vec<usize>, Vec<f32>) {
    let (s, x) = npy(fixture(&format!("{name}.input.npy")));
    if s[3] != 3 || s[1] == 3 {
        return (s, x);
    }
    let (n, h, w, c) = (s[0], s[1], s[2], s[3]);
    let mut t = vec![0f32; x.len()];
    for i in 0..n {
        for y in 0..h {
            for xx in 0..w {
                for ch in 0..c {
                    t[((i * c + ch) * h + y) * w + xx] = x[((i * h + y) * w + xx) * c + ch];
                }
            }
        }
    }
    (vec![n, c, h, w], t)
}

fn float_parity(name: &str, head: Head) -> f32 {
    let device = Device::flex();
    let g = intq_onnx::load(&fixture(&format!("{name}.onnx"))).unwrap();
    let net = GraphNet::from_graph(&g, LayerOpts::default(), &device).unwrap();
    assert_eq!(net.head, head);
    assert_eq!(net.input_shape, [3, 32, 32]);
    let (shape, x) = nchw_input(name);
    let (want_shape, want) = npy(fixture(&format!("{name}.output.npy")));
    let x: Tensor<4> = Tensor::from_data(
        TensorData::new(x, [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    );
    let y = net.predict(x, &Ctx::float(false)).unwrap();
    assert_eq!(y.dims().to_vec(), want_shape);
    let got = host_vec(y);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!(
        "{name} float: max|intq-ort|/max|ort| = {:.3e}",
        diff / scale
    );
    diff / scale
}

#[test]
fn float_mode_equals_onnxruntime() {
    assert!(float_parity("resnet_tiny", Head::Logits) <= 1e-5);
    assert!(float_parity("mobilenetv2_qat", Head::Softmax) <= 1e-5);
    // Pad, a padded average pool (padding counted) and asymmetric conv padding as Pad steps.
    assert!(float_parity("mobilenetv2_tiny", Head::Softmax) <= 1e-5);
    // A grouped conv (group 2) with BN, asymmetric conv padding, Pad and a counting average.
    assert!(float_parity("grouped_qat", Head::Logits) <= 1e-5);
    assert!(float_parity("hardswish_qat", Head::Logits) <= 1e-5);
    assert!(float_parity("sigmoid_qat", Head::Logits) <= 1e-5);
    assert!(float_parity("se_qat", Head::Logits) <= 1e-5);
    assert!(float_parity("hsigmoid_mul", Head::Logits) <= 1e-5);
    assert!(float_parity("mobilenetv3_tiny", Head::Logits) <= 1e-5);
    // The baked normalization folds into the unpadded first conv: the same function.
    assert!(float_parity("preprocess_qat", Head::Logits) <= 1e-5);
    assert!(float_parity("dilated_qat", Head::Logits) <= 1e-5);
    assert!(float_parity("act_qat", Head::Logits) <= 1e-5);
    assert!(float_parity("head_act_qat", Head::Logits) <= 1e-5);
    assert!(float_parity("resize_qat", Head::Logits) <= 1e-5);
    // An NHWC input: the network's input is its NCHW transpose.
    assert!(float_parity("nhwc_qat", Head::Logits) <= 1e-5);
    assert!(float_parity("prelu_qat", Head::Logits) <= 1e-5);
    assert!(float_parity("pool_ceil_qat", Head::Logits) <= 1e-5);
    // A 4x4 ConvTranspose with BN folded and a 2x2 one, both with ReLU.
    assert!(float_parity("decoder_qat", Head::Logits) <= 1e-5);
    assert!(float_parity("convt_pads_qat", Head::Logits) <= 1e-5);
    // A Keras CNN through tf2onnx: NHWC input, BN folded by the converter, MatMul + Add.
    assert!(float_parity("keras_cnn", Head::Softmax) <= 1e-5);
    // HardSigmoid gates as a ReLU6 layer and a scaling by 1/6.
    assert!(float_parity("hsigmoid_se_qat", Head::Logits) <= 1e-5);
    assert!(float_parity("maxmin_qat", Head::Logits) <= 1e-5);
    assert!(float_parity("resize_linear_qat", Head::Logits) <= 1e-5);
}

/// `f` applied to the node named `node` of fixture `name`, then the error building the QAT
/// network gives.
fn refusal(name: &str, node: &str, f: impl FnOnce(&mut intq_onnx::Op)) -> String {
    let device = Device::flex();
    let mut g = intq_onnx::load(&fixture(&format!("{name}.onnx"))).unwrap();
    let n = g.nodes.iter_mut().find(|n| n.name == node).unwrap();
    f(&mut n.op);
    GraphNet::from_graph(&g, LayerOpts::default(), &device)
        .unwrap_err()
        .to_string()
}

#[test]
fn layers_the_qat_net_cannot_take_are_named() {
    use intq_onnx::Op;
    let e = refusal("dilated_qat", "conv_dilated", |op| {
        let Op::Conv(c) = op else { panic!() };
        c.dilation = [2, 1];
    });
    assert_eq!(
        e,
        "configuration: node \"conv_dilated\" (Conv): intq's QAT convolution takes square \
         kernels, one stride and one dilation (kernel 3x3, stride [2, 2], dilation [2, 1])"
    );
    let e = refusal("dilated_qat", "maxpool_ceil", |op| {
        let Op::MaxPool(p) = op else { panic!() };
        p.dilation = [2, 2];
    });
    assert_eq!(
        e,
        "configuration: node \"maxpool_ceil\" (MaxPool): attribute \"dilations\" is [2, \
         2]; the engine's max pool has no dilation"
    );
    // Arithmetic by a constant inside the network, not at its start.
    let e = refusal("sigmoid_qat", "sigmoid", |op| {
        *op = Op::ConstArith {
            arith: intq_onnx::Arith::Sub,
            value: vec![0.5],
            reversed: false,
        }
    });
    assert_eq!(
        e,
        "configuration: node \"sigmoid\" (Sigmoid): a Sub by a constant is taken only at \
         the graph's start, reading the input, where it folds into the input normalization"
    );
    // A preprocessing scale that flips a channel's sign.
    let e = refusal("preprocess_qat", "div_std", |op| {
        let Op::ConstArith { value, .. } = op else {
            panic!()
        };
        value[1] = -0.5;
    });
    // A nearest resize the engine has no mode for: the rows read backwards.
    let e3 = refusal("resize_qat", "resize_down", |op| {
        let Op::ResizeNearest { src_h, .. } = op else {
            panic!()
        };
        src_h.reverse();
    });
    assert!(
        e3.starts_with(
            "configuration: node \"resize_down\" (Resize): its source rows [14, 12, 10, 8, 6, 4, \
             2, 0] and columns [0, 2, 4, 6, 8, 10, 12, 14] (attributes \
             \"coordinate_transformation_mode\" and \"nearest_mode\") are not those of the \
             engine's nearest resize in any mode"
        ),
        "{e3}"
    );
    let e4 = refusal("nhwc_qat", "to_nhwc", |op| {
        *op = Op::Transpose {
            perm: vec![0, 1, 3, 2],
        }
    });
    assert_eq!(
        e4,
        "configuration: node \"to_nhwc\" (Transpose): attribute \"perm\" is [0, 1, 3, 2]; intq's \
         QAT network takes a Transpose only from an NHWC input to NCHW ([0, 3, 1, 2]) or from \
         NCHW to NHWC right before a Flatten ([0, 2, 3, 1])"
    );
    let e2 = refusal("act_qat", "leaky", |op| *op = Op::LeakyRelu { alpha: -0.5 });
    assert_eq!(
        e2,
        "configuration: node \"leaky\" (LeakyRelu): attribute \"alpha\" is -0.5; the engine's \
         LeakyRelu takes a slope of 0 or more"
    );
    assert_eq!(
        e,
        "configuration: node \"div_std\" (Div): the preprocessing up to this node scales \
         channel 1 by -2; intq folds only a positive scale into the input normalization"
    );
}

#[test]
fn bilinear_resizes_without_an_engine_mode_are_named() {
    use intq_onnx::Op;
    // 16 to 11 with ONNX's tf_half_pixel_for_nn positions, (o + 0.5) * 16 / 11: TFLite's modes
    // start at 0 or at 0.5 * 16 / 11 - 0.5.
    let e = refusal("resize_linear_qat", "resize_align_corners", |op| {
        let Op::ResizeLinear {
            pos_h,
            pos_w,
            coordinate_transformation_mode,
        } = op
        else {
            panic!()
        };
        for (o, p) in pos_h.iter_mut().chain(pos_w.iter_mut()).enumerate() {
            *p = ((o % 11) as f32 + 0.5) / 0.6875;
        }
        *coordinate_transformation_mode = "tf_half_pixel_for_nn".into();
    });
    assert_eq!(
        e,
        "configuration: node \"resize_align_corners\" (Resize): attribute \
         \"coordinate_transformation_mode\" is \"tf_half_pixel_for_nn\": resizing 16x16 to \
         11x11, its source positions are not those of the engine's bilinear resize (TFLite's \
         align_corners or half_pixel_centers) in any mode"
    );
}

#[test]
fn hard_sigmoids_that_are_not_gates_are_named() {
    use intq_onnx::Op;
    let e = refusal("hsigmoid_se_qat", "se_hsig", |op| {
        *op = Op::HardSigmoid {
            alpha: 0.0,
            beta: 0.5,
        }
    });
    assert_eq!(
        e,
        "configuration: node \"se_hsig\" (HardSigmoid): attribute \"alpha\" is 0; a \
         HardSigmoid gate takes a finite, non-zero slope"
    );
    let e = refusal("hsigmoid_se_qat", "se2_hsig", |op| {
        *op = Op::HardSigmoid {
            alpha: 0.2,
            beta: f32::INFINITY,
        }
    });
    assert_eq!(
        e,
        "configuration: node \"se2_hsig\" (HardSigmoid): attribute \"beta\" is inf; a \
         HardSigmoid gate takes a finite one"
    );
    // A HardSigmoid of an activation two nodes read: no layer can take its affine map.
    let e = refusal("hsigmoid_se_qat", "se_pool", |op| {
        *op = Op::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        }
    });
    assert_eq!(
        e,
        "configuration: node \"se_pool\" (GlobalAveragePool): a HardSigmoid is taken as a \
         gate: it must follow a Conv (with its BatchNormalization) or Gemm/MatMul whose output \
         nothing else reads"
    );
}

#[test]
fn a_per_channel_normalization_needs_a_dense_first_conv() {
    let device = Device::flex();
    // A network that starts with a pool takes a uniform normalization, not a per-channel one.
    let mut g = intq_onnx::load(&fixture("hsigmoid_mul.onnx")).unwrap();
    g.nodes[0].op = intq_onnx::Op::MaxPool(intq_onnx::ir::Pool {
        kernel: [1, 1],
        stride: [2, 2],
        dilation: [1, 1],
        pads: [0; 4],
        ceil_mode: false,
        count_include_pad: false,
    });
    let mut net = GraphNet::from_graph(&g, LayerOpts::default(), &device).unwrap();
    net.set_normalize(&"0.5/0.25".parse().unwrap()).unwrap();
    assert_eq!(net.fold_layer, None);
    assert_eq!(net.input.uniform(), Some((128, 0.25)));
    let e = net
        .set_normalize(&"imagenet".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "configuration: the input normalization is per channel (mean [0.485, 0.456, \
             0.406], std [0.229, 0.224, 0.225]) and folds into the first layer, a convolution \
             with groups 1 reading the input alone: the input is read by \"conv1\""
        ),
        "{e}"
    );
    // The baked preprocessing composes with --normalize: (p/255 - m) / s, then (x - m') / s'.
    let g = intq_onnx::load(&fixture("preprocess_qat.onnx")).unwrap();
    let mut net = GraphNet::from_graph(&g, LayerOpts::default(), &device).unwrap();
    assert_eq!(net.fold_layer, Some(0));
    let (m, s) = (&net.input.mean, &net.input.std);
    assert!(
        (m[0] - 0.485).abs() < 1e-6 && (s[2] - 0.225).abs() < 1e-6,
        "{m:?} {s:?}"
    );
    net.set_normalize(&"0.5/2".parse().unwrap()).unwrap();
    let (m, s) = (&net.input.mean, &net.input.std);
    assert!((m[0] - (0.5 + 0.485 * 2.0)).abs() < 1e-5, "{m:?}");
    assert!((s[1] - 0.224 * 2.0).abs() < 1e-6, "{s:?}");
}

#[test]
fn fake_quant_mode_observes_and_quantizes_every_layer() {
    use intq_train::QuantCfg;
    let device = Device::flex();
    let g = intq_onnx::load(&fixture("resnet_tiny.onnx")).unwrap();
    let net = GraphNet::from_graph(&g, LayerOpts::default(), &device).unwrap();
    let (shape, x) = npy(fixture("resnet_tiny.input.npy"));
    let x: Tensor<4> = Tensor::from_data(
        TensorData::new(x, [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    );
    let float = host_vec(net.forward(x.clone(), &Ctx::float(false)).unwrap());
    // Frozen BN: training uses the moving statistics, so the ranges one training-mode forward
    // observes are those of the evaluation's activations.
    let quant = QuantCfg {
        freeze_bn: true,
        ..QuantCfg::uint8(8, 8).unwrap()
    };
    let ctx = Ctx {
        training: true,
        step: 0,
        quant: Some(quant),
        exact: false,
        log: None,
    };
    net.forward(x.clone(), &ctx).unwrap();
    let fq = host_vec(net.forward(x, &Ctx::eval(Some(quant))).unwrap());
    let scale = float.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = fq
        .iter()
        .zip(&float)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("resnet_tiny fake-quant vs float: max diff {diff} of {scale}");
    // Quantized (not the float model) and close to it: 8 bits through 8 layers.
    assert!(diff > 0.0 && diff < 0.05 * scale, "{diff} of {scale}");
}

/// Fine-tunes fixture `name` with `qat_steps` QAT steps on its own inputs (fixed labels), or
/// with none only observes ranges in one frozen-BN training forward, or with `u64::MAX`
/// calibrates the float network (PTQ); converts; and compares the
/// integer engine's logits with the exact fake-quant evaluation image by image: (top-1
/// mismatches, max LSB).
fn integer_vs_fake_quant(name: &str, quant: intq_train::QuantCfg, qat_steps: u64) -> (usize, i64) {
    integer_vs_fake_quant_normalized(name, quant, qat_steps, "none")
}

/// The integer model (raw uint8 pixels in, logit codes out) against the exact fake-quant
/// evaluation of the network set up with `--normalize normalize`, on the fixture's inputs as
/// pixels, after `qat_steps` QAT steps (0: one observing forward; `u64::MAX`: min/max
/// calibration): top-1 mismatches and the largest logit-code difference.
fn integer_vs_fake_quant_normalized(
    name: &str,
    quant: intq_train::QuantCfg,
    qat_steps: u64,
    normalize: &str,
) -> (usize, i64) {
    integer_vs_fake_quant_edited(name, quant, qat_steps, normalize, &|_| {})
}

/// [`integer_vs_fake_quant_normalized`] on fixture `name`'s graph as `edit` leaves it.
fn integer_vs_fake_quant_edited(
    name: &str,
    quant: intq_train::QuantCfg,
    qat_steps: u64,
    normalize: &str,
    edit: &dyn Fn(&mut intq_onnx::Graph),
) -> (usize, i64) {
    use intq_engine::{Model, TensorData as Data};
    use intq_train::graph_net::Layer;
    use intq_train::sgd::{SgdStep, Velocity};
    let device = intq_train::train_device();
    let mut g = intq_onnx::load(&fixture(&format!("{name}.onnx"))).unwrap();
    edit(&mut g);
    let mut net = GraphNet::from_graph(&g, LayerOpts::default(), &device).unwrap();
    net.set_normalize(&normalize.parse().unwrap()).unwrap();
    let quant = intq_train::QuantCfg {
        freeze_bn: qat_steps == 0 || qat_steps == u64::MAX,
        ..quant
    };
    let (shape, x) = nchw_input(name);
    // The fixture's inputs in [0, 1] as pixels: the network reads p/255, the model p.
    let pixels: Vec<u8> = x.iter().map(|&v| (v * 255.0).round() as u8).collect();
    let x: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
    let batch: Tensor<4> = Tensor::from_data(TensorData::new(x.clone(), [n, c, h, w]), &device);
    if qat_steps == u64::MAX {
        // Post-training: min/max calibration of the float network on the same images.
        net.calibrate_minmax(&[(x.clone(), n)], &device).unwrap();
    } else if qat_steps == 0 {
        let train = Ctx {
            training: true,
            step: 0,
            quant: Some(quant),
            exact: false,
            log: None,
        };
        net.forward(batch, &train).unwrap();
    } else {
        let labels: Vec<i64> = (0..n as i64).map(|i| (3 * i + 1) % 10).collect();
        let mut vel = Velocity::default();
        let mut losses = Vec::new();
        for step in 0..qat_steps {
            let train = Ctx {
                training: true,
                step,
                quant: Some(quant),
                exact: false,
                log: None,
            };
            let y = Tensor::<1, burn::tensor::Int>::from_data(
                TensorData::new(labels.clone(), [n]),
                &device,
            );
            let sgd = SgdStep {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 0.0,
            };
            losses.push(
                net.train_step(batch.clone(), y, &train, &mut vel, sgd)
                    .unwrap(),
            );
        }
        println!("{name}: QAT losses {losses:?}");
        assert!(losses.last() < losses.first(), "{name}: {losses:?}");
    }
    let model =
        Model::new(intq_train::graph_export::export_graph(&net, &quant, false).unwrap()).unwrap();
    let Some(Layer::Linear(fc)) = net.layers.last() else {
        panic!("the last layer is the classifier")
    };
    let p_out = fc.out_obs.params(quant.act_scheme).unwrap().unwrap();
    let s_out = p_out.scale;
    let (mut mismatches, mut max_lsb) = (0, 0i64);
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &x)| if x > b.1 { (i, x) } else { b },
            )
            .0
    };
    for i in 0..n {
        let img = &x[i * c * h * w..(i + 1) * c * h * w];
        let px = &pixels[i * c * h * w..(i + 1) * c * h * w];
        let nhwc: Vec<u8> = (0..h * w * c)
            .map(|k| px[(k % c) * h * w + k / c])
            .collect();
        let real = |q: i32| s_out * (q - p_out.zero_point) as f32;
        let int: Vec<f32> = match &model.run(&[Data::U8(nhwc)]).unwrap()[0] {
            Data::U8(v) => v.iter().map(|&q| real(q as i32)).collect(),
            Data::I8(v) => v.iter().map(|&q| real(q as i32)).collect(),
            other => panic!("{other:?}"),
        };
        let one: Tensor<4> =
            Tensor::from_data(TensorData::new(img.to_vec(), [1, c, h, w]), &device);
        let fq = host_vec(net.forward(one, &Ctx::eval_exact(quant)).unwrap());
        // Logits spread over many codes: agreement is not two constant outputs agreeing.
        let (lo, hi) = int
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(hi - lo > 10.0 * s_out, "{name}: logits span {lo}..{hi}");
        for (a, b) in int.iter().zip(&fq) {
            max_lsb = max_lsb.max(((a - b) / s_out).abs().round() as i64);
        }
        if argmax(&int) != argmax(&fq) {
            mismatches += 1;
        }
    }
    println!("{name}: integer vs fake-quant: {mismatches} top-1 mismatches, max {max_lsb} LSB");
    (mismatches, max_lsb)
}

#[test]
fn integer_model_equals_fake_quant_model() {
    for name in [
        "resnet_tiny",
        "mobilenetv2_qat",
        "mobilenetv2_tiny",
        "grouped_qat",
        "hardswish_qat",
        "sigmoid_qat",
        "se_qat",
        "hsigmoid_mul",
        "mobilenetv3_tiny",
        "preprocess_qat",
        "dilated_qat",
        "act_qat",
        "resize_qat",
        "nhwc_qat",
        "prelu_qat",
        "head_act_qat",
        "pool_ceil_qat",
        "decoder_qat",
        "convt_pads_qat",
        "keras_cnn",
        "hsigmoid_se_qat",
        "maxmin_qat",
        "resize_linear_qat",
    ] {
        for quant in [
            intq_train::QuantCfg::uint8(8, 8).unwrap(),
            intq_train::QuantCfg::int8(8, 8, true).unwrap(),
        ] {
            assert_eq!(integer_vs_fake_quant(name, quant, 0), (0, 0), "{name}");
        }
    }
}

#[test]
fn after_qat_steps_the_integer_model_equals_the_fake_quant_model() {
    for name in [
        "resnet_tiny",
        "mobilenetv2_qat",
        "mobilenetv2_tiny",
        "grouped_qat",
        "hardswish_qat",
        "sigmoid_qat",
        "se_qat",
        "hsigmoid_mul",
        "mobilenetv3_tiny",
        "preprocess_qat",
        "dilated_qat",
        "act_qat",
        "resize_qat",
        "nhwc_qat",
        "prelu_qat",
        "pool_ceil_qat",
        "decoder_qat",
        "convt_pads_qat",
        "keras_cnn",
        "hsigmoid_se_qat",
        "maxmin_qat",
        "resize_linear_qat",
    ] {
        for quant in [
            intq_train::QuantCfg::uint8(8, 8).unwrap(),
            intq_train::QuantCfg::int8(8, 8, true).unwrap(),
        ] {
            assert_eq!(integer_vs_fake_quant(name, quant, 6), (0, 0), "{name}");
        }
    }
}

#[test]
fn after_ptq_calibration_the_integer_model_equals_the_fake_quant_model() {
    for name in [
        "resnet_tiny",
        "mobilenetv2_qat",
        "mobilenetv2_tiny",
        "grouped_qat",
        "hardswish_qat",
        "sigmoid_qat",
        "se_qat",
        "hsigmoid_mul",
        "mobilenetv3_tiny",
        "preprocess_qat",
        "dilated_qat",
        "act_qat",
        "resize_qat",
        "nhwc_qat",
        "prelu_qat",
        "pool_ceil_qat",
        "decoder_qat",
        "convt_pads_qat",
        "keras_cnn",
        "hsigmoid_se_qat",
        "maxmin_qat",
        "resize_linear_qat",
    ] {
        for quant in [
            intq_train::QuantCfg::uint8(8, 8).unwrap(),
            intq_train::QuantCfg::int8(8, 8, true).unwrap(),
        ] {
            assert_eq!(
                integer_vs_fake_quant(name, quant, u64::MAX),
                (0, 0),
                "{name}"
            );
        }
    }
}

#[test]
fn gates_and_max_of_fully_connected_outputs_convert_exactly() {
    // head_act_qat's classifier with its HardSwish made a HardSigmoid gate (alpha 0.2) and its
    // LeakyRelu the Max of the next layer's output and that gate: [N, F] tensors in the engine.
    let edit = |g: &mut intq_onnx::Graph| {
        let gate = g.nodes.iter().position(|n| n.name == "hardswish").unwrap();
        g.nodes[gate].op = intq_onnx::Op::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        };
        let gate_out = g.nodes[gate].output;
        let leaky = g.nodes.iter_mut().find(|n| n.name == "leaky").unwrap();
        leaky.op = intq_onnx::Op::Maximum;
        leaky.inputs.push(gate_out);
    };
    for quant in [
        intq_train::QuantCfg::uint8(8, 8).unwrap(),
        intq_train::QuantCfg::int8(8, 8, true).unwrap(),
    ] {
        for steps in [0, 6, u64::MAX] {
            assert_eq!(
                integer_vs_fake_quant_edited("head_act_qat", quant, steps, "none", &edit),
                (0, 0),
                "after {steps} steps"
            );
        }
    }
}

#[test]
fn normalized_networks_convert_exactly() {
    // One mean and std (the input's params), per channel (folded into the first conv), and
    // either composed with the Sub/Div preprocess_qat starts with.
    for (name, normalize) in [
        ("resnet_tiny", "0.4/0.25"),
        ("resnet_tiny", "imagenet"),
        ("preprocess_qat", "none"),
        ("preprocess_qat", "0.5/2"),
        ("dilated_qat", "0.1,0.2,0.3/0.5,0.6,0.7"),
    ] {
        for quant in [
            intq_train::QuantCfg::uint8(8, 8).unwrap(),
            intq_train::QuantCfg::int8(8, 8, true).unwrap(),
        ] {
            assert_eq!(
                integer_vs_fake_quant_normalized(name, quant, 6, normalize),
                (0, 0),
                "{name} --normalize {normalize}"
            );
        }
    }
}
