//! `steward plugin check FILE`: load a plugin, print its metadata, and run
//! the conformance life cycle with the given properties and grants, timing
//! each step. Exit code 1 with the reason when the file or the plugin fails.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use steward::bindings::{Capability, PropertyKind, TypeInfo};
use steward::conformance::{self, CHECK_RESOURCE_NAME, CheckReport};
use steward::monitor::ResourceSpec;
use steward::plugin::Plugin;
use steward::runtime::{Runtime, RuntimeConfig};

/// Arguments of `steward plugin check`.
#[derive(clap::Args)]
pub struct Args {
    /// The plugin's `.wasm` file.
    file: PathBuf,
    /// A property of the checked resource, as KEY=VALUE (repeatable).
    #[arg(long = "prop", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    #[command(flatten)]
    grants: super::grant_args::GrantArgs,
    /// The deadline of each call, in milliseconds (default: the type's own).
    #[arg(long = "timeout-ms")]
    timeout_ms: Option<u64>,
    /// The memory cap of the instance, in MiB.
    #[arg(long = "memory-mib", default_value_t = 64)]
    memory_mib: usize,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs the check and prints its report.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let properties = args
        .properties
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => bail!("--prop `{pair}`: expected KEY=VALUE"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let grants = args.grants.grants()?;

    let runtime = Runtime::new(&RuntimeConfig { max_live_instances: 8, cache_dir: None })?;
    let plugin = match Plugin::load(&runtime, &args.file).await {
        Ok(plugin) => Arc::new(plugin),
        Err(error) if args.json => {
            let report = serde_json::json!({ "file": args.file, "passed": false, "error": error.to_string() });
            println!("{report}");
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => {
            println!("FAIL {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if !args.json {
        print_metadata(&plugin);
    }

    let mut spec = ResourceSpec::new(CHECK_RESOURCE_NAME, &plugin);
    spec.properties = properties;
    spec.grants = grants;
    spec.memory_limit_bytes = args.memory_mib << 20;
    if let Some(ms) = args.timeout_ms {
        let limit = Duration::from_millis(ms);
        spec.timeouts = steward::monitor::Timeouts {
            open: limit,
            pending: limit,
            terminate: limit,
            probe: limit,
            control: limit,
            notify: limit,
        };
    }
    let report = conformance::run(plugin.clone(), spec).await;
    if args.json {
        let info = plugin.metadata();
        let json = serde_json::json!({
            "file": plugin.path(),
            "sha256": plugin.hash(),
            "type": info.name,
            "version": info.version,
            "passed": report.passed(),
            "steps": report.steps,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    print_report(&report);
    Ok(match report.first_failure() {
        None => {
            println!("PASS {}: every step passed", plugin.type_name());
            ExitCode::SUCCESS
        }
        Some(failure) => {
            println!("FAIL {}: {}: {}", plugin.type_name(), failure.step, failure.detail);
            ExitCode::FAILURE
        }
    })
}

fn print_metadata(plugin: &Plugin) {
    let info: &TypeInfo = plugin.metadata();
    let load = plugin.load_info();
    println!("plugin  {} {}  ({})", info.name, info.version, plugin.path().display());
    println!("sha256  {}", plugin.hash());
    println!("loaded  {} in {:.1} ms", if load.compiled { "compiled" } else { "from cache" }, ms(load.elapsed));
    println!("about   {}", info.description);
    let capabilities: Vec<&str> = info
        .capabilities
        .iter()
        .map(|capability| match capability {
            Capability::Process => "process",
            Capability::Filesystem => "filesystem",
            Capability::Network => "network",
        })
        .collect();
    println!(
        "needs   {}",
        if capabilities.is_empty() { "no capabilities".to_string() } else { capabilities.join(", ") }
    );
    println!("properties");
    for spec in &info.properties {
        let kind = match spec.kind {
            PropertyKind::Text => "text",
            PropertyKind::Integer => "integer",
            PropertyKind::Boolean => "boolean",
            PropertyKind::TextList => "text-list",
        };
        let default = match (&spec.default_value, spec.required) {
            (_, true) => "required".to_string(),
            (Some(value), false) => format!("default `{value}`"),
            (None, false) => "optional".to_string(),
        };
        println!("  {:<20} {:<10} {:<18} {}", spec.name, kind, default, spec.description);
    }
}

fn print_report(report: &CheckReport) {
    println!("life cycle");
    for step in &report.steps {
        let verdict = if step.passed { "ok  " } else { "FAIL" };
        println!("  {verdict} {:<26} {:>9.3} ms  {}", step.step, ms(step.elapsed), step.detail);
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}
