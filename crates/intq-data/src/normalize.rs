//! Per-channel input normalization `(p/255 - mean_c) / std_c` of pixel bytes `p`, as
//! `intq train --normalize` names it: `none`, `imagenet`, or `M0,M1,M2/S0,S1,S2` (a single `M/S`
//! for every channel). Its [`fmt::Display`] form parses back to the same values.

use std::fmt;
use std::str::FromStr;

/// Channel means and standard deviations in the `[0, 1]` pixel scale. One value serves every
/// channel; otherwise there is one per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// ImageNet's channel statistics (RGB), the usual normalization of pretrained vision models.
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Largest channel count a normalization may name (a bound on what a file can make us hold).
const MAX_CHANNELS: usize = 4;

impl Default for Normalize {
    fn default() -> Self {
        Normalize::none()
    }
}

impl Normalize {
    /// Mean 0, standard deviation 1: the network sees `p/255`.
    pub fn none() -> Self {
        Normalize {
            mean: vec![0.0],
            std: vec![1.0],
        }
    }

    pub fn imagenet() -> Self {
        Normalize {
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
        }
    }

    /// Checks the values: as many means as stds (1 to 4), all finite, every std positive.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self, String> {
        if mean.is_empty() || mean.len() != std.len() || mean.len() > MAX_CHANNELS {
            return Err(format!(
                "{} means and {} standard deviations; give one of each, or one per channel",
                mean.len(),
                std.len()
            ));
        }
        if let Some(v) = mean.iter().chain(&std).find(|v| !v.is_finite()) {
            return Err(format!("{v} is not a finite number"));
        }
        if let Some(s) = std.iter().find(|&&s| s <= 0.0) {
            return Err(format!("standard deviation {s} is not positive"));
        }
        Ok(Normalize { mean, std })
    }

    pub fn is_none(&self) -> bool {
        self.per_channel(self.channels()) == Normalize::none().per_channel(self.channels())
    }

    /// The channel count it names (1 for a value shared by every channel).
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Whether it can normalize `c`-channel pictures: one value, or exactly `c`.
    pub fn fits(&self, c: usize) -> bool {
        self.mean.len() == 1 || self.mean.len() == c
    }

    /// `(mean, std)` of each of `c` channels (a single value repeated). `c` must fit.
    pub fn per_channel(&self, c: usize) -> (Vec<f32>, Vec<f32>) {
        let pick = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
        (
            (0..c).map(|i| pick(&self.mean, i)).collect(),
            (0..c).map(|i| pick(&self.std, i)).collect(),
        )
    }

    /// Whether every channel has the same mean and the same std.
    pub fn is_uniform(&self) -> bool {
        let same = |v: &[f32]| v.iter().all(|&x| x == v[0]);
        same(&self.mean) && same(&self.std)
    }
}

impl fmt::Display for Normalize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("none");
        }
        if *self == Normalize::imagenet() {
            return f.write_str("imagenet");
        }
        // `{}` of an f32 is the shortest text that parses back to the same value.
        let list = |v: &[f32]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(f, "{}/{}", list(&self.mean), list(&self.std))
    }
}

impl FromStr for Normalize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "none" => return Ok(Normalize::none()),
            "imagenet" => return Ok(Normalize::imagenet()),
            _ => {}
        }
        let bad = |why: String| {
            format!(
                "bad normalization {s:?}: {why}; write none, imagenet, M/S or M0,M1,M2/S0,S1,S2"
            )
        };
        let (m, sd) = s
            .split_once('/')
            .ok_or_else(|| bad("no '/' between means and standard deviations".into()))?;
        let list = |part: &str| -> Result<Vec<f32>, String> {
            part.split(',')
                .map(|x| {
                    x.trim()
                        .parse::<f32>()
                        .map_err(|_| bad(format!("{:?} is not a number", x.trim())))
                })
                .collect()
        };
        Normalize::new(list(m)?, list(sd)?).map_err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_lists_parse() {
        assert_eq!("none".parse::<Normalize>().unwrap(), Normalize::none());
        assert_eq!(
            "imagenet".parse::<Normalize>().unwrap(),
            Normalize::imagenet()
        );
        let n: Normalize = "0.5/0.25".parse().unwrap();
        assert_eq!((n.mean.clone(), n.std.clone()), (vec![0.5], vec![0.25]));
        assert_eq!(n.per_channel(3), (vec![0.5; 3], vec![0.25; 3]));
        assert!(n.is_uniform() && n.fits(3) && n.fits(1));
        let n: Normalize = "0.1, 0.2,0.3/0.4,0.5,0.6".parse().unwrap();
        assert_eq!(n.mean, vec![0.1, 0.2, 0.3]);
        assert!(!n.is_uniform() && n.fits(3) && !n.fits(1));
    }

    #[test]
    fn display_parses_back_to_the_same_values() {
        for s in [
            "none",
            "imagenet",
            "0.5/0.5",
            "0.1,0.2,0.3/0.3,0.2,0.1",
            "0/1",
            "0.0001/3",
        ] {
            let n: Normalize = s.parse().unwrap();
            let again: Normalize = n.to_string().parse().unwrap();
            assert_eq!(again, n, "{s} -> {n}");
        }
        assert_eq!("0/1".parse::<Normalize>().unwrap().to_string(), "none");
        assert_eq!(
            "0.1,0.2,0.3/0.3,0.2,0.1"
                .parse::<Normalize>()
                .unwrap()
                .to_string(),
            "0.1,0.2,0.3/0.3,0.2,0.1"
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        for (s, why) in [
            ("0.5", "no '/'"),
            ("0.5/0", "not positive"),
            ("0.5/-1", "not positive"),
            ("a/1", "not a number"),
            ("0.1,0.2/1", "2 means and 1"),
            ("nan/1", "not a finite"),
            ("1,1,1,1,1/1,1,1,1,1", "5 means"),
        ] {
            let e = s.parse::<Normalize>().unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
