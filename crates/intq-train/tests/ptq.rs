//! Post-training quantization (`intq_train::ptq`): min/max calibration sets every activation
//! observer to exactly the range its tensor held in the float evaluation pass, percentile
//! calibration narrows those ranges (never the input's), the exported graph quantizes each tensor
//! with its observer's params, the same inputs give the same graph, and bad settings are errors.

use std::sync::{Mutex, MutexGuard};

use burn::tensor::Device;
use intq_engine::{DType, Model, TensorData};
use intq_train::fake_quant::host_vec;
use intq_train::layers::{Act, Ctx, LayerOpts, QuantCfg};
use intq_train::ptq::{calibrate, named_observers, ptq, Calib};
use intq_train::trainer::ImageSet;
use intq_train::{train_device, Arch, Net, TrainError};

/// Tests seed burn's one random generator per process: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const N: usize = 40;

/// `N` 28x28 images of smooth, image-dependent patterns covering most of [0, 255].
fn images() -> (Vec<u8>, Vec<u8>) {
    let mut px = Vec::with_capacity(N * 784);
    for i in 0..N {
        for y in 0..28 {
            for x in 0..28 {
                px.push(((i * 37 + y * (3 + i % 5) + x * (7 + i % 3)) % 251) as u8);
            }
        }
    }
    let labels = (0..N).map(|i| (i % 10) as u8).collect();
    (px, labels)
}

/// A freshly initialized network of `arch` (BN at its initial statistics) on the plain device.
fn fresh_net(arch: Arch, seed: u64) -> (Net, Device) {
    let device = train_device().inner();
    device.seed(seed);
    (Net::new(arch, LayerOpts::default(), &device), device)
}

/// Every activation of the float evaluation pass over all `set` images, by tap name.
fn float_taps(net: &Net, set: &ImageSet, device: &Device) -> Vec<(String, Vec<f32>)> {
    let idx: Vec<usize> = (0..set.len).collect();
    let (x, _) = set.batch(&idx, device);
    let mut taps = Vec::new();
    net.forward_tapped(x, &Ctx::eval(None), &mut |name: &str, a: &Act| {
        taps.push((name.to_string(), host_vec(a.x.clone())));
    })
    .unwrap();
    taps
}

fn min_max(v: &[f32]) -> (f32, f32) {
    v.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

#[test]
fn minmax_sets_every_observer_to_its_tensors_range() {
    let _g = serial();
    let (px, labels) = images();
    let set = ImageSet::gray(&px, &labels, 28, 28);
    for arch in [Arch::SmallCnn, Arch::TinyMobilenet] {
        let (net, device) = fresh_net(arch, 7);
        let taps = float_taps(&net, &set, &device);
        calibrate(&net, &set, N, Calib::MinMax, &device).unwrap();
        let obs = named_observers(&net);
        assert!(obs.len() >= 5, "{arch}: {} observers", obs.len());
        for (name, o) in &obs {
            let values = &taps
                .iter()
                .find(|(t, _)| t == name)
                .unwrap_or_else(|| panic!("{arch}: no activation named {name}"))
                .1;
            assert_eq!(o.range(), Some(min_max(values)), "{arch}: {name}");
        }
        // The input range is that of the pixels.
        let (lo, hi) = min_max(&taps[0].1);
        let (plo, phi) = (
            *px.iter().min().unwrap() as f32 / 255.0,
            *px.iter().max().unwrap() as f32 / 255.0,
        );
        assert_eq!((lo, hi), (plo, phi), "{arch}");
    }
}

#[test]
fn percentile_narrows_ranges_but_keeps_the_inputs() {
    let _g = serial();
    let (px, labels) = images();
    let set = ImageSet::gray(&px, &labels, 28, 28);
    let ranges = |method| {
        let (net, device) = fresh_net(Arch::SmallCnn, 3);
        calibrate(&net, &set, N, method, &device).unwrap();
        named_observers(&net)
            .iter()
            .map(|(n, o)| (n.clone(), o.range().unwrap()))
            .collect::<Vec<_>>()
    };
    let full = ranges(Calib::MinMax);
    let clipped = ranges(Calib::Percentile(99.0));
    assert_eq!(clipped[0], full[0], "the input keeps its min/max");
    let mut narrower = 0;
    for ((name, (lo, hi)), (_, (flo, fhi))) in clipped.iter().zip(&full).skip(1) {
        assert!(
            flo <= lo && lo <= hi && hi <= fhi,
            "{name}: [{lo}, {hi}] not within [{flo}, {fhi}]"
        );
        narrower += (lo > flo || hi < fhi) as usize;
    }
    assert!(narrower > 0, "no range was clipped: {clipped:?}");
    // The 100th percentile is the maximum.
    assert_eq!(ranges(Calib::Percentile(100.0)), full);
}

#[test]
fn ptq_graph_quantizes_each_tensor_with_its_observers_params() {
    let _g = serial();
    let (px, labels) = images();
    let set = ImageSet::gray(&px, &labels, 28, 28);
    for quant in [
        QuantCfg::uint8(8, 8).unwrap(),
        QuantCfg::int8(8, 8, true).unwrap(),
    ] {
        let calibrated = || {
            let (net, device) = fresh_net(Arch::TinyMobilenet, 11);
            let graph = ptq(
                &net,
                Arch::TinyMobilenet,
                &set,
                N,
                Calib::MinMax,
                &quant,
                &device,
            )
            .unwrap();
            (net, graph)
        };
        let (net, graph) = calibrated();
        let mut checked = 0;
        for (name, o) in named_observers(&net) {
            // Float edges: the quantized input and logits have their own names.
            let engine_name = match name.as_str() {
                "input" => "input_q".to_string(),
                "logits" => "logits_q".to_string(),
                _ => name.clone(),
            };
            let Some(id) = graph.tensor_by_name(&engine_name) else {
                continue;
            };
            // The input's params are fixed by the pixel contract (docs/spec.md §10).
            let want = match name.as_str() {
                "input" => net.input.params(quant.act_scheme.is_signed()),
                _ => o.params(quant.act_scheme).unwrap().unwrap(),
            };
            assert_eq!(graph.tensor(id).params(), Some(want), "{engine_name}");
            checked += 1;
        }
        assert!(checked >= 5, "only {checked} observed tensors in the graph");
        // Float edges: f32 pixels in, f32 logits out; the model runs.
        let model = Model::new(graph.clone()).unwrap();
        let g = model.graph();
        assert_eq!(g.tensor(g.inputs()[0]).dtype, DType::F32);
        let image: Vec<f32> = px[..784].iter().map(|&b| b as f32 / 255.0).collect();
        let out = model.run(&[TensorData::F32(image)]).unwrap();
        match &out[0] {
            TensorData::F32(v) => {
                assert_eq!(v.len(), 10);
                assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
            }
            other => panic!("logits of dtype {}", other.dtype()),
        }
        // Same network and images, same graph.
        let (_, graph2) = calibrated();
        assert_eq!(
            intq_engine::format::to_bytes(&graph),
            intq_engine::format::to_bytes(&graph2)
        );
    }
}

#[test]
fn bad_settings_are_errors() {
    let _g = serial();
    let (px, labels) = images();
    let set = ImageSet::gray(&px, &labels, 28, 28);
    let (net, device) = fresh_net(Arch::SmallCnn, 1);
    let e = calibrate(&net, &set, 0, Calib::MinMax, &device).unwrap_err();
    assert!(
        matches!(&e, TrainError::Config(m) if m.contains("no calibration images")),
        "{e}"
    );
    let e = calibrate(&net, &set, N, Calib::Percentile(40.0), &device).unwrap_err();
    assert!(
        matches!(&e, TrainError::Config(m) if m.contains("percentile 40")),
        "{e}"
    );
    let short = ImageSet { len: N + 1, ..set };
    let e = calibrate(&net, &short, N, Calib::MinMax, &device).unwrap_err();
    assert!(matches!(e, TrainError::Data(_)), "{e}");
    // Nothing was observed by the failed calls.
    assert!(named_observers(&net)
        .iter()
        .all(|(_, o)| o.range().is_none()));
}
