//! `steward ocf PLUGIN.wasm ACTION`: runs a Steward plugin as an OCF
//! resource agent (see `steward_monitor::ocf`). Install it behind a shim such as
//!
//! ```sh
//! #!/bin/sh
//! exec /usr/bin/steward ocf /usr/lib/steward/file_marker.wasm --grant-dir /var/lib/marker:/state "$@"
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use steward_monitor::ocf::{OcfContext, exit, run_action};
use steward_monitor::plugin::Plugin;
use steward_monitor::runtime::{Runtime, RuntimeConfig};

use super::grant_args::GrantArgs;

/// Arguments of `steward ocf`.
#[derive(clap::Args)]
pub struct Args {
    /// The plugin's `.wasm` file.
    plugin: PathBuf,
    /// The OCF action: start, stop, monitor, meta-data or validate-all.
    action: String,
    #[command(flatten)]
    grants: GrantArgs,
}

/// Runs one OCF action and exits with its OCF code.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let grants = args.grants.parsed();
    let runtime = Runtime::new(&RuntimeConfig { max_live_instances: 4, cache_dir: None })?;
    let plugin = match Plugin::load(&runtime, &args.plugin).await {
        Ok(plugin) => Arc::new(plugin),
        Err(error) => {
            eprintln!("{error}");
            // The agent cannot run on this node: a hard error for Pacemaker.
            return Ok(ExitCode::from(exit::ERR_INSTALLED));
        }
    };
    let code = run_action(plugin, &args.action, grants, &OcfContext::from_env()).await;
    Ok(ExitCode::from(code))
}
