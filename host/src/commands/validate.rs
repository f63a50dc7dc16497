//! `steward validate FILE`: every check the daemon runs on its
//! configuration, plugins included, without starting anything.

use std::path::PathBuf;
use std::process::ExitCode;

use steward_monitor::runtime::{Runtime, RuntimeConfig};
use steward_node::{check_config, load_plugins};

/// Arguments of `steward validate`.
#[derive(clap::Args)]
pub struct Args {
    /// The node's configuration file.
    config: PathBuf,
}

/// Checks the configuration; prints each error, or a summary.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match steward_config::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            println!("error: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = Runtime::new(&RuntimeConfig { max_live_instances: 16, cache_dir: None })?;
    let (plugins, views) = load_plugins(&runtime, &config.plugin_dir, None).await;
    for view in views.iter().filter(|view| view.error.is_some()) {
        println!("warning: plugin not loaded: {}", view.error.as_deref().unwrap_or_default());
    }
    let errors = check_config(&config, &plugins).await;
    for error in &errors {
        println!("error: {error}");
    }
    if errors.is_empty() {
        println!(
            "ok: {} resource(s) in {} group(s), {} plugin(s)",
            config.resources.len(),
            config.groups.len(),
            plugins.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}
