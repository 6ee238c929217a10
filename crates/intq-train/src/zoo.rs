//! The model zoo, named on the command line: `small-cnn` and `tiny-mobilenet` (1x28x28, 10
//! classes) for training, `resnet20` (3x32x32), `mobilenet-v2` (3x224x224, width multiplier) and
//! `resnet18` (3x224x224) for benchmarks and export. Every model is input quantizer -> body ->
//! global average pool -> fully connected, built from the QAT layers only.

use std::fmt;
use std::str::FromStr;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::layers::RangeMode;
use crate::layers::{
    Act, ConvBn, Ctx, InputQuant, LayerOpts, Pool, QAdd, QLinear, ACT_NONE, ACT_RELU, ACT_RELU6,
};
use crate::observer::{EmaObserver, LearnedRange};
use crate::TrainError;
use intq_quant::QScheme;

/// A zoo architecture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arch {
    SmallCnn,
    TinyMobilenet,
    Resnet20,
    /// Width multiplier (1.0 = the paper's network).
    MobilenetV2(f32),
    Resnet18,
}

impl Arch {
    /// Input `[channels, height, width]`.
    pub fn input_shape(self) -> [usize; 3] {
        match self {
            Arch::SmallCnn | Arch::TinyMobilenet => [1, 28, 28],
            Arch::Resnet20 => [3, 32, 32],
            Arch::MobilenetV2(_) | Arch::Resnet18 => [3, 224, 224],
        }
    }

    /// The class count of the published network (the default where no data says otherwise).
    pub fn classes(self) -> usize {
        match self {
            Arch::MobilenetV2(_) | Arch::Resnet18 => 1000,
            _ => 10,
        }
    }

    /// Input channels: 1 (grey) for the MNIST-sized models, 3 (RGB) for the others.
    pub fn channels(self) -> usize {
        self.input_shape()[0]
    }

    /// The (height, width) the model is made for, where it has one it should be trained at:
    /// 28x28 for small-cnn and tiny-mobilenet, 32x32 for resnet20. MobileNetV2 and ResNet-18 are
    /// fully convolutional up to the global pool and train at the data's size (at least
    /// [`Arch::MIN_SIZE`] a side).
    pub fn native_size(self) -> Option<(usize, usize)> {
        match self {
            Arch::SmallCnn | Arch::TinyMobilenet => Some((28, 28)),
            Arch::Resnet20 => Some((32, 32)),
            Arch::MobilenetV2(_) | Arch::Resnet18 => None,
        }
    }

    /// The smallest input side any zoo model takes: its body downsamples by up to 32.
    pub const MIN_SIZE: usize = 8;

    /// Number of f32 values in a checkpoint's required tensors for this network (parameters,
    /// BN statistics, observer states; not momentum), computed from the architecture alone so a
    /// loader can refuse a file too small to hold the network before building it (a forged
    /// model name must not make it allocate far beyond the file's size). Mirrors [`Net::new`];
    /// a test checks the two agree for every architecture.
    pub fn state_len(self) -> usize {
        self.state_len_for(self.classes())
    }

    /// [`Arch::state_len`] for a classifier of `classes` classes.
    pub fn state_len_for(self, classes: usize) -> usize {
        let conv = |cin: usize, cout: usize, k: usize, groups: usize| {
            cout * (cin / groups) * k * k + 4 * cout + OBSERVER_LEN
        };
        let inv_res = |cin: usize, t: usize, cout: usize, s: usize| {
            let hidden = cin * t;
            (if t != 1 { conv(cin, hidden, 1, 1) } else { 0 })
                + conv(hidden, hidden, 3, hidden)
                + conv(hidden, cout, 1, 1)
                + if s == 1 && cin == cout {
                    OBSERVER_LEN
                } else {
                    0
                }
        };
        let basic = |cin: usize, cout: usize, s: usize| {
            conv(cin, cout, 3, 1)
                + conv(cout, cout, 3, 1)
                + if s != 1 || cin != cout {
                    conv(cin, cout, 1, 1)
                } else {
                    0
                }
                + OBSERVER_LEN
        };
        let cin = self.input_shape()[0];
        let (body, last) = match self {
            Arch::SmallCnn => (
                conv(1, 32, 3, 1) + conv(32, 64, 3, 1) + conv(64, 128, 3, 1),
                128,
            ),
            Arch::TinyMobilenet => {
                let mut n = conv(1, 16, 3, 1);
                let mut c = 16;
                for (t, out, s) in TINY_MOBILENET_BLOCKS {
                    n += inv_res(c, t, out, s);
                    c = out;
                }
                (n + conv(64, 128, 1, 1), 128)
            }
            Arch::Resnet20 | Arch::Resnet18 => {
                let (stem, stages, blocks, k) = if self == Arch::Resnet20 {
                    (16, &[16, 32, 64][..], 3, 3)
                } else {
                    (64, &[64, 128, 256, 512][..], 2, 7)
                };
                let mut n = conv(cin, stem, k, 1);
                let mut c = stem;
                for (stage, &out) in stages.iter().enumerate() {
                    for i in 0..blocks {
                        let s = if stage > 0 && i == 0 { 2 } else { 1 };
                        n += basic(c, out, s);
                        c = out;
                    }
                }
                (n, c)
            }
            Arch::MobilenetV2(w) => {
                let first = divisible(32.0 * w);
                let mut n = conv(cin, first, 3, 1);
                let mut c = first;
                for (t, out, reps, s) in MOBILENET_V2_BLOCKS {
                    let out = divisible(out as f32 * w);
                    for i in 0..reps {
                        n += inv_res(c, t, out, if i == 0 { s } else { 1 });
                        c = out;
                    }
                }
                let last = if w > 1.0 { divisible(1280.0 * w) } else { 1280 };
                (n + conv(c, last, 1, 1), last)
            }
        };
        OBSERVER_LEN + body + last * classes + classes + OBSERVER_LEN
    }

    /// The name [`FromStr`] accepts.
    pub fn name(self) -> String {
        match self {
            Arch::SmallCnn => "small-cnn".into(),
            Arch::TinyMobilenet => "tiny-mobilenet".into(),
            Arch::Resnet20 => "resnet20".into(),
            Arch::MobilenetV2(1.0) => "mobilenet-v2".into(),
            Arch::MobilenetV2(w) => format!("mobilenet-v2@{w}"),
            Arch::Resnet18 => "resnet18".into(),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Arch {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self, TrainError> {
        match s {
            "small-cnn" => Ok(Arch::SmallCnn),
            "tiny-mobilenet" => Ok(Arch::TinyMobilenet),
            "resnet20" => Ok(Arch::Resnet20),
            "mobilenet-v2" => Ok(Arch::MobilenetV2(1.0)),
            "resnet18" => Ok(Arch::Resnet18),
            _ => {
                if let Some(w) = s.strip_prefix("mobilenet-v2@") {
                    let w: f32 = w.parse().map_err(|_| {
                        TrainError::Config(format!("bad width multiplier in model name {s:?}"))
                    })?;
                    if w > 0.0 && w <= 4.0 {
                        return Ok(Arch::MobilenetV2(w));
                    }
                }
                Err(TrainError::Config(format!(
                    "unknown model {s:?}; known: small-cnn, tiny-mobilenet, resnet20, \
                     mobilenet-v2 (or mobilenet-v2@WIDTH), resnet18"
                )))
            }
        }
    }
}

/// Checks that `arch` can take the images of `set`: its channel count, each side at least
/// [`Arch::MIN_SIZE`]; the models are fully convolutional up to the global pool, so any such
/// size works.
pub fn check_input(arch: Arch, set: &crate::trainer::ImageSet) -> Result<(), TrainError> {
    let (c, h, w) = (set.channels, set.rows, set.cols);
    if c != arch.channels() || h < Arch::MIN_SIZE || w < Arch::MIN_SIZE {
        return Err(TrainError::Config(format!(
            "model {arch} takes {}-channel images of at least {m}x{m}, the data set has \
             {c}x{h}x{w} (channels x height x width)",
            arch.channels(),
            m = Arch::MIN_SIZE
        )));
    }
    Ok(())
}

/// MobileNet-style inverted residual: expand 1x1 (+BN+ReLU6), depthwise 3x3 (+BN+ReLU6),
/// project 1x1 (+BN), residual add when stride 1 and channels match.
#[derive(Module, Debug)]
pub struct InvRes {
    pub expand: Option<ConvBn>,
    pub dw: ConvBn,
    pub project: ConvBn,
    pub add: Option<QAdd>,
}

impl InvRes {
    fn new(cin: usize, t: usize, cout: usize, stride: usize, o: LayerOpts, d: &Device) -> Self {
        let hidden = cin * t;
        InvRes {
            expand: (t != 1).then(|| ConvBn::new(cin, hidden, 1, 1, 1, true, ACT_RELU6, o, d)),
            dw: ConvBn::new(hidden, hidden, 3, stride, hidden, true, ACT_RELU6, o, d),
            project: ConvBn::new(hidden, cout, 1, 1, 1, true, ACT_NONE, o, d),
            add: (stride == 1 && cin == cout).then(|| QAdd::new(ACT_NONE, o, d)),
        }
    }

    fn forward(&self, a: Act, ctx: &Ctx, name: &str, tap: Tap) -> Result<Act, TrainError> {
        let h = match &self.expand {
            Some(e) => tapped(e.forward(a.clone(), ctx)?, name, "expand", tap),
            None => a.clone(),
        };
        let h = tapped(self.dw.forward(h, ctx)?, name, "dw", tap);
        let h = tapped(self.project.forward(h, ctx)?, name, "project", tap);
        match &self.add {
            Some(add) => Ok(tapped(add.forward(h, a, ctx)?, name, "add", tap)),
            None => Ok(h),
        }
    }
}

/// ResNet basic block: conv3x3+BN+ReLU, conv3x3+BN, shortcut (identity or 1x1 conv+BN), add+ReLU.
#[derive(Module, Debug)]
pub struct Basic {
    pub conv1: ConvBn,
    pub conv2: ConvBn,
    pub shortcut: Option<ConvBn>,
    pub add: QAdd,
}

impl Basic {
    fn new(cin: usize, cout: usize, stride: usize, o: LayerOpts, d: &Device) -> Self {
        Basic {
            conv1: ConvBn::new(cin, cout, 3, stride, 1, true, ACT_RELU, o, d),
            conv2: ConvBn::new(cout, cout, 3, 1, 1, true, ACT_NONE, o, d),
            shortcut: (stride != 1 || cin != cout)
                .then(|| ConvBn::new(cin, cout, 1, stride, 1, true, ACT_NONE, o, d)),
            add: QAdd::new(ACT_RELU, o, d),
        }
    }

    fn forward(&self, a: Act, ctx: &Ctx, name: &str, tap: Tap) -> Result<Act, TrainError> {
        let h = tapped(self.conv1.forward(a.clone(), ctx)?, name, "conv1", tap);
        let h = tapped(self.conv2.forward(h, ctx)?, name, "conv2", tap);
        let s = match &self.shortcut {
            Some(c) => tapped(c.forward(a, ctx)?, name, "shortcut", tap),
            None => a,
        };
        Ok(tapped(self.add.forward(h, s, ctx)?, name, "add", tap))
    }
}

/// One stage of a network body.
#[derive(Module, Debug)]
pub enum Node {
    Conv(ConvBn),
    Pool(Pool),
    InvRes(InvRes),
    Basic(Basic),
}

impl Node {
    fn forward(&self, a: Act, ctx: &Ctx, name: &str, tap: Tap) -> Result<Act, TrainError> {
        match self {
            Node::Conv(c) => Ok(tapped(c.forward(a, ctx)?, name, "", tap)),
            Node::Pool(p) => Ok(tapped(p.forward(a, ctx), name, "", tap)),
            Node::InvRes(b) => b.forward(a, ctx, name, tap),
            Node::Basic(b) => b.forward(a, ctx, name, tap),
        }
    }
}

/// Receives every activation the engine graph materializes, under the tensor name
/// [`crate::export::export`] gives it: `input`, `body{i}`, `body{i}/expand|dw|project|conv1|
/// conv2|shortcut|add`, `gap`, and `logits` (as `[N, classes, 1, 1]`).
pub type Tap<'a> = &'a mut dyn FnMut(&str, &Act);

fn tapped(a: Act, node: &str, part: &str, tap: Tap) -> Act {
    if part.is_empty() {
        tap(node, &a);
    } else {
        tap(&format!("{node}/{part}"), &a);
    }
    a
}

/// A zoo network: input quantizer, body, global average pool, classifier.
#[derive(Module, Debug)]
pub struct Net {
    pub input: InputQuant,
    pub body: Vec<Node>,
    pub gap: Pool,
    pub head: QLinear,
}

fn conv(cin: usize, cout: usize, k: usize, s: usize, act: u8, o: LayerOpts, d: &Device) -> Node {
    Node::Conv(ConvBn::new(cin, cout, k, s, 1, true, act, o, d))
}

fn maxpool(kernel: usize, stride: usize, padding: usize) -> Node {
    Node::Pool(Pool {
        kernel,
        stride,
        padding,
        max: true,
        global: false,
    })
}

fn no_first_conv() -> TrainError {
    TrainError::Config(
        "a per-channel input normalization folds into a first convolution, which this network \
         lacks"
            .into(),
    )
}

/// Values in an activation observer's state (`[min, max, seen]`).
const OBSERVER_LEN: usize = 3;

/// tiny-mobilenet's inverted-residual blocks: (expansion, out channels, stride).
const TINY_MOBILENET_BLOCKS: [(usize, usize, usize); 5] =
    [(4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1), (4, 64, 1)];

/// MobileNetV2's stages: (expansion, out channels, repeats, first stride).
const MOBILENET_V2_BLOCKS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// MobileNet's channel rounding: to a multiple of 8, never below 90% of the target.
fn divisible(c: f32) -> usize {
    let v = ((c + 4.0) as usize / 8 * 8).max(8);
    if (v as f32) < 0.9 * c {
        v + 8
    } else {
        v
    }
}

impl Net {
    /// A freshly initialized network (weights drawn from the device's seeded RNG) with the
    /// architecture's own class count.
    pub fn new(arch: Arch, opts: LayerOpts, device: &Device) -> Self {
        Net::with_classes(arch, arch.classes(), opts, device)
    }

    /// [`Net::new`] with a classifier of `classes` classes (the data's).
    pub fn with_classes(arch: Arch, classes: usize, opts: LayerOpts, device: &Device) -> Self {
        let o = opts;
        let d = device;
        let mut body = Vec::new();
        let cin = arch.input_shape()[0];
        let last = match arch {
            Arch::SmallCnn => {
                body.push(conv(1, 32, 3, 1, ACT_RELU, o, d));
                body.push(maxpool(2, 2, 0));
                body.push(conv(32, 64, 3, 1, ACT_RELU, o, d));
                body.push(maxpool(2, 2, 0));
                body.push(conv(64, 128, 3, 1, ACT_RELU, o, d));
                128
            }
            Arch::TinyMobilenet => {
                body.push(conv(1, 16, 3, 1, ACT_RELU6, o, d));
                let mut c = 16;
                for (t, out, s) in TINY_MOBILENET_BLOCKS {
                    body.push(Node::InvRes(InvRes::new(c, t, out, s, o, d)));
                    c = out;
                }
                body.push(conv(64, 128, 1, 1, ACT_RELU6, o, d));
                128
            }
            Arch::Resnet20 => {
                body.push(conv(cin, 16, 3, 1, ACT_RELU, o, d));
                let mut c = 16;
                for (stage, out) in [16, 32, 64].into_iter().enumerate() {
                    for i in 0..3 {
                        let s = if stage > 0 && i == 0 { 2 } else { 1 };
                        body.push(Node::Basic(Basic::new(c, out, s, o, d)));
                        c = out;
                    }
                }
                64
            }
            Arch::Resnet18 => {
                body.push(conv(cin, 64, 7, 2, ACT_RELU, o, d));
                body.push(maxpool(3, 2, 1));
                let mut c = 64;
                for (stage, out) in [64, 128, 256, 512].into_iter().enumerate() {
                    for i in 0..2 {
                        let s = if stage > 0 && i == 0 { 2 } else { 1 };
                        body.push(Node::Basic(Basic::new(c, out, s, o, d)));
                        c = out;
                    }
                }
                512
            }
            Arch::MobilenetV2(w) => {
                let first = divisible(32.0 * w);
                body.push(conv(cin, first, 3, 2, ACT_RELU6, o, d));
                let mut c = first;
                for (t, out, n, s) in MOBILENET_V2_BLOCKS {
                    let out = divisible(out as f32 * w);
                    for i in 0..n {
                        let stride = if i == 0 { s } else { 1 };
                        body.push(Node::InvRes(InvRes::new(c, t, out, stride, o, d)));
                        c = out;
                    }
                }
                let last = if w > 1.0 { divisible(1280.0 * w) } else { 1280 };
                body.push(conv(c, last, 1, 1, ACT_RELU6, o, d));
                last
            }
        };
        Net {
            input: InputQuant {
                obs: EmaObserver::with_opts(o, d),
                mean: vec![0.0; cin],
                std: vec![1.0; cin],
            },
            body,
            gap: Pool {
                kernel: 0,
                stride: 0,
                padding: 0,
                max: false,
                global: true,
            },
            head: QLinear::new(last, classes, ACT_NONE, o, d),
        }
    }

    /// Sets the input normalization (docs/spec.md §10): one mean and std for every channel, or
    /// one per input channel.
    pub fn set_normalize(&mut self, n: &intq_data::Normalize) -> Result<(), TrainError> {
        let c = self.input.mean.len();
        if !n.fits(c) {
            return Err(TrainError::Config(format!(
                "normalization {n} names {} channels; the network reads {c}",
                n.channels()
            )));
        }
        let (mean, std) = n.per_channel(c);
        self.input.mean = mean;
        self.input.std = std;
        if self.input.first_layer_fold().is_some()
            && !matches!(self.body.first(), Some(Node::Conv(_)))
        {
            return Err(no_first_conv());
        }
        Ok(())
    }

    /// The input normalization (as [`Net::set_normalize`] set it; none by default).
    pub fn normalize(&self) -> intq_data::Normalize {
        let (m, s) = (&self.input.mean, &self.input.std);
        let same = m.iter().all(|&x| x == m[0]) && s.iter().all(|&x| x == s[0]);
        let (mean, std) = if same {
            (vec![m[0]], vec![s[0]])
        } else {
            (m.clone(), s.clone())
        };
        intq_data::Normalize { mean, std }
    }

    /// Every activation observer, in forward order.
    pub fn observers_mut(&mut self) -> Vec<&mut EmaObserver> {
        let mut out = vec![&mut self.input.obs];
        for node in &mut self.body {
            match node {
                Node::Conv(c) => out.push(&mut c.out_obs),
                Node::Pool(_) => {}
                Node::InvRes(b) => {
                    if let Some(e) = &mut b.expand {
                        out.push(&mut e.out_obs);
                    }
                    out.push(&mut b.dw.out_obs);
                    out.push(&mut b.project.out_obs);
                    if let Some(a) = &mut b.add {
                        out.push(&mut a.out_obs);
                    }
                }
                Node::Basic(b) => {
                    out.push(&mut b.conv1.out_obs);
                    out.push(&mut b.conv2.out_obs);
                    if let Some(s) = &mut b.shortcut {
                        out.push(&mut s.out_obs);
                    }
                    out.push(&mut b.add.out_obs);
                }
            }
        }
        out.push(&mut self.head.out_obs);
        out
    }

    /// Gives every observer the learned-range parameters of `mode` (a float network, or one
    /// checkpointed without them, starting QAT with learned ranges). An observer built for
    /// another learned mode is an error: its parameters mean something else.
    pub fn set_range_mode(&mut self, mode: RangeMode, device: &Device) -> Result<(), TrainError> {
        for obs in self.observers_mut() {
            match (obs.mode(), mode) {
                (have, want) if have == want => {}
                (RangeMode::Ema, _) => obs.learned = LearnedRange::new(mode, device),
                (have, want) => {
                    return Err(TrainError::Config(format!(
                        "the network learns its activation ranges as {}, not {}",
                        have.name(),
                        want.name()
                    )))
                }
            }
        }
        Ok(())
    }

    /// [`EmaObserver::start_learned`] for every observer; true when all have started (or use
    /// the EMA).
    pub fn start_learned_ranges(&mut self, scheme: QScheme) -> Result<bool, TrainError> {
        let mut all = true;
        for obs in self.observers_mut() {
            all &= obs.start_learned(scheme)?;
        }
        Ok(all)
    }

    /// Logits `[N, classes]` for images `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>, ctx: &Ctx) -> Result<Tensor<2>, TrainError> {
        self.forward_tapped(x, ctx, &mut |_, _| {})
    }

    /// [`Net::forward`], handing every materialized activation to `tap` on the way.
    pub fn forward_tapped(
        &self,
        x: Tensor<4>,
        ctx: &Ctx,
        tap: Tap,
    ) -> Result<Tensor<2>, TrainError> {
        let mut a = tapped(self.input.forward(x, ctx)?, "input", "", tap);
        let fold = self.input.first_layer_fold();
        for (i, node) in self.body.iter().enumerate() {
            let name = format!("body{i}");
            a = match (i, node, &fold) {
                (0, Node::Conv(c), Some(f)) => {
                    tapped(c.forward_folded(a, ctx, Some(f))?, &name, "", tap)
                }
                (0, _, Some(_)) => return Err(no_first_conv()),
                _ => node.forward(a, ctx, &name, tap)?,
            };
        }
        let a = tapped(self.gap.forward(a, ctx), "gap", "", tap);
        let [n, c, _, _] = a.x.dims();
        let (y, q) = self.head.forward(a.x.reshape([n, c]), a.q, ctx)?;
        let k = y.dims()[1];
        tapped(
            Act {
                x: y.clone().reshape([n, k, 1, 1]),
                q,
            },
            "logits",
            "",
            tap,
        );
        Ok(y)
    }
}
