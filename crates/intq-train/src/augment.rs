//! Training-time data augmentation: random crops of the zero-padded image and horizontal flips,
//! applied to one CHW image of a training batch, drawn from the run's seed, the epoch and the
//! sample's index so that a seed (and a resumed run) repeats the same draws.

use intq_engine::examples::{seeded, Rng as _, SplitMix64};

use crate::TrainError;

/// What augmentation a run applies to its training images; the default is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Augment {
    /// `crop:P`: pad every side by `P` zero pixels, then cut out a random window of the image's
    /// size (`Some(0)` never moves the image).
    pub crop: Option<usize>,
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
}

impl Augment {
    /// Parses a comma list such as `crop:4,flip`; `none` or an empty string is no augmentation.
    pub fn parse(spec: &str) -> Result<Augment, TrainError> {
        let mut a = Augment::default();
        let spec = spec.trim();
        if spec.is_empty() || spec == "none" {
            return Ok(a);
        }
        for item in spec.split(',').map(str::trim) {
            match item.split_once(':') {
                Some(("crop", p)) => {
                    let pad = p.trim().parse::<usize>().map_err(|_| {
                        TrainError::Config(format!(
                            "augmentation {item:?}: the crop padding must be a whole number of \
                             pixels, 0 or more (e.g. crop:4)"
                        ))
                    })?;
                    a.crop = Some(pad);
                }
                None if item == "flip" => a.flip = true,
                None if item == "crop" => {
                    return Err(TrainError::Config(
                        "augmentation \"crop\" needs its padding in pixels, e.g. crop:4".into(),
                    ))
                }
                _ => {
                    return Err(TrainError::Config(format!(
                        "unknown augmentation {item:?} in {spec:?}; use crop:P and/or flip, \
                         comma-separated (e.g. crop:4,flip), or none"
                    )))
                }
            }
        }
        Ok(a)
    }

    /// True when nothing is applied.
    pub fn is_none(&self) -> bool {
        self.crop.is_none() && !self.flip
    }

    /// `chw` (`channels x rows x cols`) augmented with draws from `rng`: crop offsets first
    /// (row, then column, each uniform in `[0, 2P]`), then the flip coin.
    pub fn apply(
        &self,
        chw: &[f32],
        channels: usize,
        rows: usize,
        cols: usize,
        rng: &mut SplitMix64,
    ) -> Vec<f32> {
        let mut out = match self.crop {
            Some(p) => {
                let span = 2 * p as u64 + 1;
                let dy = (rng.next_u64() % span) as usize;
                let dx = (rng.next_u64() % span) as usize;
                crop(chw, channels, rows, cols, p, dy, dx)
            }
            None => chw.to_vec(),
        };
        if self.flip && rng.next_u64() >> 63 == 1 {
            flip(&mut out, channels, rows, cols);
        }
        out
    }
}

/// The generator of one training sample's draws: seeded by the run's seed, the epoch and the
/// sample's index in the training set, so it does not depend on the batch or shard layout.
pub fn sample_rng(seed: u64, epoch: usize, index: usize) -> SplitMix64 {
    // A tag keeps these streams apart from the epoch shuffle's, which is seeded by seed ^ epoch.
    let mix = seed
        ^ 0xA076_1D64_78BD_642F
        ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (index as u64)
            .wrapping_add(1)
            .wrapping_mul(0xD1B5_4A32_D192_ED03);
    seeded(mix)
}

/// The `rows x cols` window at offset (`dy`, `dx`) of `chw` padded by `pad` zeros on every side;
/// offset (`pad`, `pad`) is the image itself.
pub fn crop(
    chw: &[f32],
    channels: usize,
    rows: usize,
    cols: usize,
    pad: usize,
    dy: usize,
    dx: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; channels * rows * cols];
    for c in 0..channels {
        for y in 0..rows {
            // Row y of the window is row y + dy - pad of the image.
            let Some(sy) = (y + dy).checked_sub(pad).filter(|&s| s < rows) else {
                continue;
            };
            for x in 0..cols {
                if let Some(sx) = (x + dx).checked_sub(pad).filter(|&s| s < cols) {
                    out[(c * rows + y) * cols + x] = chw[(c * rows + sy) * cols + sx];
                }
            }
        }
    }
    out
}

/// Mirrors every row of `chw` in place.
pub fn flip(chw: &mut [f32], channels: usize, rows: usize, cols: usize) {
    if cols == 0 {
        return;
    }
    for row in chw[..channels * rows * cols].chunks_exact_mut(cols) {
        row.reverse();
    }
}
