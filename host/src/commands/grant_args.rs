//! The capability grants a command line can give a plugin (`plugin check`,
//! `ocf`): the same three flags everywhere, checked the same way.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use steward::grants::{DirectoryGrant, Grants};

/// Grants given on the command line; none by default.
#[derive(clap::Args, Clone, Default)]
pub struct GrantArgs {
    /// A program the resource may spawn, by absolute path (repeatable).
    #[arg(long = "allow-program", value_name = "PATH")]
    programs: Vec<PathBuf>,
    /// A directory to preopen, as HOST:GUEST or HOST:GUEST:ro (repeatable).
    #[arg(long = "grant-dir", value_name = "HOST:GUEST[:ro]")]
    directories: Vec<String>,
    /// A socket address the resource may connect to, as IP:PORT (repeatable).
    #[arg(long = "allow-connect", value_name = "IP:PORT")]
    network: Vec<SocketAddr>,
}

impl GrantArgs {
    /// The grants, or an error naming the malformed flag.
    pub fn grants(&self) -> anyhow::Result<Grants> {
        let directories = self
            .directories
            .iter()
            .map(|text| {
                DirectoryGrant::parse(text)
                    .with_context(|| format!("--grant-dir `{text}`: expected HOST:GUEST or HOST:GUEST:ro"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Grants { programs: self.programs.clone(), directories, network: self.network.clone() })
    }
}
