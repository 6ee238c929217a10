//! The one error type of the crate: every message names the file or command at fault and, where
//! data is missing or broken, says how to get good data.

use std::path::PathBuf;

/// Everything that can go wrong reading, fetching or checking a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file that `load` needs is not there.
    #[error("{}: file not found; {hint}", path.display())]
    Missing { path: PathBuf, hint: String },

    /// A file exists but is not a valid IDX file of a data set (or is inconsistent with its pair).
    #[error("{}: {problem}; {hint}", path.display())]
    Corrupt {
        path: PathBuf,
        problem: String,
        hint: String,
    },

    /// A file parses but its bytes differ from the published data set.
    #[error(
        "{}: SHA-256 {actual} does not match the published {expected}; {hint}",
        path.display()
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
        hint: String,
    },

    /// Reading or writing a file failed at the OS level.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// An external client (pip, apt-get, dpkg-deb) could not be run or failed.
    #[error("`{command}` failed: {problem}; {hint}")]
    Command {
        command: String,
        problem: String,
        hint: String,
    },

    /// A downloaded package does not hold what the fetcher expects.
    #[error("{what}: {problem}; {hint}")]
    Package {
        what: String,
        problem: String,
        hint: String,
    },

    /// A pickle stream this crate's small reader refuses or cannot make sense of.
    #[error("{what}: pickle at byte {offset}: {problem}")]
    Pickle {
        what: String,
        offset: usize,
        problem: String,
    },

    /// A path given as a data source that holds none of the formats this crate reads.
    #[error(
        "{}: not a data set this reader knows: {problem}. Expected an image folder \
         (train/<class>/*.png|jpg|bmp, or <class>/*.png...), a CIFAR-10/100 binary directory \
         (data_batch_*.bin + test_batch.bin, or train.bin + test.bin), a .npz file or a folder \
         with x_train.npy, y_train.npy, x_test.npy, y_test.npy; or a registry name (mnist, \
         fashion-mnist)",
        path.display()
    )]
    UnknownFormat { path: PathBuf, problem: String },

    /// A loading option out of its range (a split fraction, an image size, a channel count).
    #[error("invalid data option: {0}")]
    InvalidOption(String),

    /// A data set name that is neither `mnist` nor `fashion-mnist`.
    #[error("unknown data set '{0}' (known: mnist, fashion-mnist)")]
    UnknownKind(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
