//! The node's one error type: what starting the node, its state store and
//! its plugin-directory watch can fail with, each naming the file or the
//! thing at fault.

/// Everything the node crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state store could not be opened, read or written.
    #[error("state store {file}: {message}")]
    State {
        /// The store's file.
        file: String,
        /// What went wrong.
        message: String,
    },
    /// An operating-system call the node needs failed.
    #[error("{context}: {source}")]
    Io {
        /// What the node was doing.
        context: String,
        /// What failed.
        source: std::io::Error,
    },
}
