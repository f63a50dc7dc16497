//! Capability grants as plain data: what one resource may reach beyond its
//! own memory, as the node file and the CLI state it, and the checks made
//! once when the configuration is read (what `steward validate` runs).
//!
//! Deny by default. With an empty [`Grants`] a resource:
//! - spawns no program (the `process` capability refuses every path);
//! - sees no directory (no WASI preopens), so no host file at all;
//! - has no network: it may open TCP connections only to the exact socket
//!   addresses its `network` grant names; it may not listen, use UDP or
//!   look names up;
//! - has no environment variables, arguments or stdin; its stdout is
//!   discarded and its stderr is kept (bounded) for failure reports.
//!
//! The monitor turns grants into each new sandbox's state
//! (`steward_monitor::grants`); nothing here knows the sandbox.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::ConfigError;

/// A host directory made visible to a resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectoryGrant {
    /// The directory on the host (absolute).
    pub host_path: PathBuf,
    /// Where the plugin sees it (absolute, for example `/state`).
    pub guest_path: String,
    /// Whether the plugin may only read.
    pub read_only: bool,
}

/// Everything a resource is allowed to reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grants {
    /// Programs the resource may spawn, by absolute path.
    pub programs: Vec<PathBuf>,
    /// Directories preopened for the resource.
    pub directories: Vec<DirectoryGrant>,
    /// Socket addresses the resource may open TCP connections to.
    pub network: Vec<SocketAddr>,
}

impl DirectoryGrant {
    /// Parses `HOST:GUEST` or `HOST:GUEST:ro` (the CLI's form).
    pub fn parse(text: &str) -> Option<DirectoryGrant> {
        let mut parts = text.split(':');
        let host_path = PathBuf::from(parts.next()?);
        let guest_path = parts.next()?.to_string();
        let read_only = match parts.next() {
            None => false,
            Some("ro") => true,
            Some(_) => return None,
        };
        parts.next().is_none().then_some(DirectoryGrant { host_path, guest_path, read_only })
    }
}

impl Grants {
    /// Checks every grant of `resource` once: absolute paths, programs that
    /// exist and directories that exist. Errors name the grant and the fix.
    pub fn configure(&self, resource: &str) -> Result<(), ConfigError> {
        let invalid = |grant: String, reason: &str| ConfigError {
            location: format!("resource `{resource}`"),
            message: format!("grant `{grant}`: {reason}"),
        };
        for program in &self.programs {
            let grant = format!("programs: {}", program.display());
            if !program.is_absolute() {
                return Err(invalid(grant, "a program must be named by its absolute path"));
            }
            if !program.is_file() {
                return Err(invalid(grant, "no such file; install the program or fix the path"));
            }
        }
        for directory in &self.directories {
            let grant = format!("directories: {}:{}", directory.host_path.display(), directory.guest_path);
            if !directory.host_path.is_absolute() {
                return Err(invalid(grant, "the host directory must be an absolute path"));
            }
            if !directory.host_path.is_dir() {
                return Err(invalid(grant, "the host directory does not exist; create it first"));
            }
            if !directory.guest_path.starts_with('/') {
                return Err(invalid(grant, "the guest path must be absolute, for example /state"));
            }
        }
        Ok(())
    }
}
