//! The capability grants a command line can give a plugin (`plugin check`,
//! `ocf`): the same three flags everywhere, checked the same way.
//!
//! Each flag is parsed by clap, so a malformed one is a usage error (exit
//! code 2) with one line naming the flag and the form it wants, before
//! any plugin is loaded.

use std::net::SocketAddr;
use std::path::PathBuf;

use steward_config::grants::{DirectoryGrant, Grants};

/// Grants given on the command line; none by default.
#[derive(clap::Args, Clone, Default)]
pub struct GrantArgs {
    /// A program the resource may spawn, by absolute path (repeatable).
    #[arg(long = "allow-program", value_name = "PATH", value_parser = absolute_program)]
    programs: Vec<PathBuf>,
    /// A directory to preopen, as HOST:GUEST or HOST:GUEST:ro, both absolute (repeatable).
    #[arg(long = "grant-dir", value_name = "HOST:GUEST[:ro]", value_parser = directory_grant)]
    directories: Vec<DirectoryGrant>,
    /// A socket address the resource may connect to, as IP:PORT (repeatable).
    #[arg(long = "allow-connect", value_name = "IP:PORT")]
    network: Vec<SocketAddr>,
}

impl GrantArgs {
    /// The grants as given, each well formed; whether the programs and
    /// directories exist is left to the plugin's `open`.
    pub fn parsed(&self) -> Grants {
        Grants { programs: self.programs.clone(), directories: self.directories.clone(), network: self.network.clone() }
    }

    /// The grants, checked as the daemon checks a configured resource's:
    /// a program that is not there or a directory that does not exist is
    /// an error naming it.
    pub fn grants(&self, resource: &str) -> Result<Grants, String> {
        let grants = self.parsed();
        grants.configure(resource).map_err(|error| error.to_string())?;
        Ok(grants)
    }
}

fn absolute_program(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!("`{text}` is relative; name the program by its absolute path, e.g. /usr/bin/true"))
    }
}

fn directory_grant(text: &str) -> Result<DirectoryGrant, String> {
    let grant = DirectoryGrant::parse(text)
        .ok_or_else(|| format!("`{text}` is not HOST:GUEST or HOST:GUEST:ro, e.g. /var/lib/app:/state"))?;
    if !grant.host_path.is_absolute() || !grant.guest_path.starts_with('/') {
        return Err(format!("`{text}`: both paths must be absolute, e.g. /var/lib/app:/state"));
    }
    Ok(grant)
}
