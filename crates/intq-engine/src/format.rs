//! The `.intq` file format (see `docs/format.md`).

/// Why bytes are not a valid `.intq` model.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum FormatError {
    #[error("file ends early: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: u64, needed: u64 },
}
