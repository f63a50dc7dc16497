//! The monitor's one error type. Each variant names what it is about
//! (the file, the resource, the property) and, where one helps, what to do.

use std::path::PathBuf;

/// Everything the host library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A plugin file could not be read.
    #[error("{path}: cannot read plugin file: {source}")]
    PluginRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A plugin file is not a usable component; `reason` says why in one line.
    #[error("{path}: {reason}")]
    PluginInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A resource's properties are wrong; each problem names its property.
    #[error("resource `{resource}`: invalid properties: {}", describe_problems(problems))]
    InvalidProperties {
        /// The resource.
        resource: String,
        /// Each problem found.
        problems: Vec<crate::bindings::Problem>,
    },
    /// A capability grant is unusable (a relative path, a missing directory).
    #[error("resource `{resource}`: grant `{grant}`: {reason}")]
    InvalidGrant {
        /// The resource.
        resource: String,
        /// The grant at fault, as written.
        grant: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The configuration of a resource is wrong (for example, a grant names
    /// a program that is not there); the error names the resource.
    #[error(transparent)]
    Config(#[from] steward_config::ConfigError),
    /// The sandbox engine could not be set up.
    #[error("cannot set up the sandbox engine: {0}")]
    Engine(String),
    /// The compiled-component cache failed.
    #[error("compile cache {path}: {source}")]
    Cache {
        /// The cache file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A call into a resource failed; see [`crate::call::CallError`].
    #[error("resource `{resource}`: {source}")]
    Call {
        /// The resource.
        resource: String,
        /// What happened.
        source: crate::call::CallError,
    },
    /// An operating-system call the host needs failed.
    #[error("{context}: {source}")]
    Io {
        /// What the host was doing.
        context: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// The host library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Joins property problems into one line: `name: message; name: message`.
pub fn describe_problems(problems: &[crate::bindings::Problem]) -> String {
    let parts: Vec<String> = problems
        .iter()
        .map(|problem| match problem.property.as_str() {
            "" => problem.message.clone(),
            property => format!("{property}: {}", problem.message),
        })
        .collect();
    parts.join("; ")
}
