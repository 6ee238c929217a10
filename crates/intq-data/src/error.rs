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
