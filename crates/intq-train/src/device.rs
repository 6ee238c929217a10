//! The device a command trains or evaluates on (`--device cpu|wgpu[:N]`): burn's `flex` CPU
//! backend, or, with the `wgpu` feature, a GPU through burn's wgpu backend (Vulkan, Metal or
//! DX12, whichever the machine offers).
//!
//! This crate's own fast ops (convolution, depthwise, batch norm, max pool, the fused fake-quant
//! pass) run on `flex` buffers only; on another backend every op is burn's, and fake
//! quantization takes the division-free path of [`crate::fake_quant`], so it rounds exactly as
//! on the CPU.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::TrainError;

/// Which wgpu adapter `wgpu[:...]` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgpuAdapter {
    /// wgpu's own choice (a high-power GPU first; `CUBECL_WGPU_DEFAULT_DEVICE` overrides it).
    Default,
    /// The N-th discrete GPU (`wgpu:N`, `wgpu:discrete:N`).
    Discrete(usize),
    /// The N-th integrated GPU (`wgpu:integrated:N`).
    Integrated(usize),
    /// The N-th virtual GPU (`wgpu:virtual:N`).
    Virtual(usize),
    /// A software adapter such as Mesa's lavapipe (`wgpu:cpu`).
    Cpu,
}

/// A `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// burn's `flex` backend with this crate's own CPU ops (the default).
    #[default]
    Cpu,
    /// burn's wgpu backend on the given adapter (needs the `wgpu` feature).
    Wgpu(WgpuAdapter),
}

const SYNTAX: &str =
    "expected cpu, wgpu, wgpu:N, wgpu:discrete:N, wgpu:integrated:N, wgpu:virtual:N or wgpu:cpu";

impl FromStr for DeviceSpec {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self, TrainError> {
        let bad = || TrainError::Config(format!("--device {s:?}: {SYNTAX}"));
        let index = |n: &str| n.parse::<usize>().map_err(|_| bad());
        let parts: Vec<&str> = s.split(':').collect();
        let adapter = match parts.as_slice() {
            ["cpu"] => return Ok(DeviceSpec::Cpu),
            ["wgpu"] => WgpuAdapter::Default,
            ["wgpu", "cpu"] => WgpuAdapter::Cpu,
            ["wgpu", n] => WgpuAdapter::Discrete(index(n)?),
            ["wgpu", "discrete", n] => WgpuAdapter::Discrete(index(n)?),
            ["wgpu", "integrated", n] => WgpuAdapter::Integrated(index(n)?),
            ["wgpu", "virtual", n] => WgpuAdapter::Virtual(index(n)?),
            _ => return Err(bad()),
        };
        Ok(DeviceSpec::Wgpu(adapter))
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Wgpu(WgpuAdapter::Default) => f.write_str("wgpu"),
            DeviceSpec::Wgpu(WgpuAdapter::Discrete(n)) => write!(f, "wgpu:{n}"),
            DeviceSpec::Wgpu(WgpuAdapter::Integrated(n)) => write!(f, "wgpu:integrated:{n}"),
            DeviceSpec::Wgpu(WgpuAdapter::Virtual(n)) => write!(f, "wgpu:virtual:{n}"),
            DeviceSpec::Wgpu(WgpuAdapter::Cpu) => f.write_str("wgpu:cpu"),
        }
    }
}

/// Whether this build can train on wgpu devices (the `wgpu` feature).
pub const WGPU: bool = cfg!(feature = "wgpu");

impl DeviceSpec {
    /// The plain (non-autodiff) device, opened: on wgpu the adapter is requested here, so a
    /// machine without one gets an error naming the device instead of a panic at the first
    /// tensor. Without the `wgpu` feature, `wgpu` devices are an error naming the feature.
    pub fn open(self) -> Result<Device, TrainError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::flex()),
            DeviceSpec::Wgpu(adapter) => open_wgpu(adapter, self),
        }
    }

    /// The autodiff device training runs on ([`DeviceSpec::open`] with autodiff).
    pub fn open_autodiff(self) -> Result<Device, TrainError> {
        self.open().map(Device::autodiff)
    }

    /// A line naming the backend and, on wgpu, the adapter (for the log).
    pub fn describe(self, device: &Device) -> String {
        match self {
            DeviceSpec::Cpu => "cpu (burn flex)".to_string(),
            DeviceSpec::Wgpu(_) => adapter_name(device)
                .map(|n| format!("{self} ({n})"))
                .unwrap_or_else(|| self.to_string()),
        }
    }
}

/// Whether `device` is burn's `flex` backend (autodiff or not), where this crate's own CPU ops
/// and IEEE f32 division apply.
pub fn is_flex(device: &Device) -> bool {
    // Device equality compares the hardware, not the autodiff wrapper.
    *device == Device::flex()
}

#[cfg(feature = "wgpu")]
fn open_wgpu(adapter: WgpuAdapter, spec: DeviceSpec) -> Result<Device, TrainError> {
    use burn::tensor::DeviceKind;
    let kind = match adapter {
        WgpuAdapter::Default => DeviceKind::DefaultDevice,
        WgpuAdapter::Discrete(n) => DeviceKind::DiscreteGpu(n),
        WgpuAdapter::Integrated(n) => DeviceKind::IntegratedGpu(n),
        WgpuAdapter::Virtual(n) => DeviceKind::VirtualGpu(n),
        WgpuAdapter::Cpu => DeviceKind::Cpu,
    };
    let device = Device::wgpu(kind);
    // burn opens the adapter lazily and panics when there is none; open it here, once.
    let probe = device.clone();
    let opened = std::panic::catch_unwind(move || {
        let t = burn::tensor::Tensor::<1>::from_floats([1.0f32, 2.0], &probe);
        t.sum().into_scalar::<f32>()
    });
    match opened {
        Ok(3.0) => Ok(device),
        Ok(v) => Err(TrainError::Config(format!(
            "--device {spec}: the adapter computed 1 + 2 = {v}"
        ))),
        Err(e) => {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "no reason given".into());
            Err(TrainError::Config(format!(
                "--device {spec}: no usable wgpu adapter ({why}); is a Vulkan, Metal or DX12 driver \
                 installed (for a software one on Debian: mesa-vulkan-drivers)?"
            )))
        }
    }
}

#[cfg(not(feature = "wgpu"))]
fn open_wgpu(_: WgpuAdapter, spec: DeviceSpec) -> Result<Device, TrainError> {
    Err(TrainError::Config(format!(
        "--device {spec}: this intq was built without the `wgpu` feature; build it with \
         `cargo build --release -p intq-cli --features wgpu`"
    )))
}

#[cfg(feature = "wgpu")]
fn adapter_name(device: &Device) -> Option<String> {
    device
        .identity()
        .map(|i| format!("{}, {}", i.name, i.fingerprint))
}

#[cfg(not(feature = "wgpu"))]
fn adapter_name(_: &Device) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_prints_it_back() {
        for s in [
            "cpu",
            "wgpu",
            "wgpu:0",
            "wgpu:3",
            "wgpu:integrated:1",
            "wgpu:virtual:0",
            "wgpu:cpu",
        ] {
            let d: DeviceSpec = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!(
            "wgpu:discrete:2".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Wgpu(WgpuAdapter::Discrete(2))
        );
        for bad in [
            "",
            "gpu",
            "cuda",
            "wgpu:",
            "wgpu:x",
            "wgpu:-1",
            "cpu:0",
            "wgpu:cpu:0",
        ] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains("expected cpu, wgpu"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn cpu_is_flex() {
        let d = DeviceSpec::Cpu.open_autodiff().unwrap();
        assert!(is_flex(&d) && d.is_autodiff());
        assert!(is_flex(&d.inner()));
    }

    #[cfg(not(feature = "wgpu"))]
    #[test]
    fn wgpu_without_the_feature_names_it() {
        let e = DeviceSpec::Wgpu(WgpuAdapter::Default)
            .open()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`wgpu` feature"), "{e}");
    }
}
