//! `steward monitor`: a monitor worker. The daemon starts it with pipes on
//! stdin and stdout and speaks the worker protocol on them; it is never run
//! by hand, so it refuses a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use steward_monitor::runtime::{Runtime, RuntimeConfig};

/// Instance slots beyond the resources the worker hosts: a reopen racing a
/// close, and the scratch instance of a plugin's first `metadata` call.
const SPARE_INSTANCE_SLOTS: u32 = 16;

/// Arguments of `steward monitor` (set by the daemon).
#[derive(clap::Args)]
pub struct Args {
    /// The node's name, for the plugins' `node-info`.
    #[arg(long)]
    node: String,
    /// The cluster's name (empty: alone), for the plugins' `node-info`.
    #[arg(long, default_value = "")]
    cluster: String,
    /// The worker's name, for the log.
    #[arg(long)]
    worker: String,
    /// The compile cache shared with the daemon.
    #[arg(long)]
    cache_dir: PathBuf,
    /// How many instances it hosts at most.
    #[arg(long)]
    instances: u32,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

/// Serves the daemon until it says stop or goes away.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if std::io::stdin().is_terminal() {
        eprintln!(
            "error: `steward monitor` is started by `steward daemon`, which talks to it over a pipe; run the daemon"
        );
        return Ok(ExitCode::from(2));
    }
    crate::init_tracing(args.log_json, "info");
    // Started through /proc/self/exe, the process would be called `exe` in
    // `top` and `ps -o comm`; name it for the operator.
    if let Err(error) = rustix::thread::set_name(c"steward-monitor") {
        tracing::debug!(%error, "cannot name the worker process");
    }
    let runtime = Runtime::new(&RuntimeConfig {
        max_live_instances: args.instances + SPARE_INSTANCE_SLOTS,
        cache_dir: Some(args.cache_dir),
    })?;
    steward_monitor::worker::server::serve(runtime, &args.node, &args.cluster).await?;
    Ok(ExitCode::SUCCESS)
}
