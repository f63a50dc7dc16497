//! `steward plugin check FILE`: load a plugin, print its metadata, and run
//! the conformance life cycle with the given properties and grants, timing
//! each step. Exit code 1 with the reason when the file or the plugin fails.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use steward_monitor::bindings::TypeInfo;
use steward_monitor::conformance::{self, CHECK_RESOURCE_NAME, CheckReport};
use steward_monitor::monitor::ResourceSpec;
use steward_monitor::plugin::Plugin;
use steward_monitor::runtime::{MAX_MEMORY_LIMIT_BYTES, Runtime, RuntimeConfig};
use steward_monitor::text::escape_control;

/// The memory cap of the checked instance when none is given.
const DEFAULT_MEMORY_MIB: u64 = 64;

/// How much the user's compile cache may hold; the least recently used
/// components go first. About twenty compiled Python or JavaScript plugins.
const USER_CACHE_BUDGET_BYTES: u64 = 1 << 30;

/// Arguments of `steward plugin check`.
#[derive(clap::Args)]
#[command(after_help = "\
Exit codes: 0 every step passed, 1 the file or a step failed, 2 bad arguments.

Deadlines, unless the type's metadata declares its own or --timeout-ms is given:
open 10 s, online and offline 180 s, looks-alive and is-alive 5 s, terminate 5 s,
notify 5 s, control 30 s. A step whose call overran its deadline is reported once;
the steps that would call it again are skipped, and say so.

A plugin file may be at most 128 MiB. Compiled components are kept in
$XDG_CACHE_HOME/steward/compile-cache (else ~/.cache/steward/compile-cache),
at most 1 GiB of them: the least recently used go first.")]
pub struct Args {
    /// The plugin's `.wasm` file (a regular file of at most 128 MiB).
    file: PathBuf,
    /// A property of the checked resource, as KEY=VALUE (repeatable).
    #[arg(long = "prop", value_name = "KEY=VALUE", value_parser = key_value)]
    properties: Vec<(String, String)>,
    #[command(flatten)]
    grants: super::grant_args::GrantArgs,
    /// The deadline of every call, in milliseconds (default: the type's own timing, else the host's; see below).
    #[arg(long = "timeout-ms", value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: Option<u64>,
    /// The memory cap of the instance, in MiB: 1 to 256.
    #[arg(long = "memory-mib", default_value_t = DEFAULT_MEMORY_MIB,
          value_parser = clap::value_parser!(u64).range(1..=(MAX_MEMORY_LIMIT_BYTES >> 20) as u64))]
    memory_mib: u64,
    /// Compile the plugin afresh instead of using (and filling) the compile cache.
    #[arg(long)]
    no_cache: bool,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs the check and prints its report.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let grants = match args.grants.grants(CHECK_RESOURCE_NAME) {
        Ok(grants) => grants,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    let cache_dir = if args.no_cache { None } else { user_cache_dir() };
    let runtime = Runtime::new(&RuntimeConfig { max_live_instances: 8, cache_dir: cache_dir.clone() })?;
    let loaded = Plugin::load(&runtime, &args.file).await;
    if let Some(dir) = &cache_dir {
        steward_monitor::runtime::trim_dir(dir, USER_CACHE_BUDGET_BYTES);
    }
    let plugin = match loaded {
        Ok(plugin) => Arc::new(plugin),
        Err(error) if args.json => {
            let report = serde_json::json!({ "file": args.file, "passed": false, "error": error.to_string() });
            println!("{report}");
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => {
            println!("FAIL {}", escape_control(&error.to_string()));
            return Ok(ExitCode::FAILURE);
        }
    };
    if !args.json {
        print_metadata(&plugin);
    }

    let mut spec = ResourceSpec::new(CHECK_RESOURCE_NAME, &plugin);
    spec.properties = args.properties;
    spec.grants = grants;
    spec.memory_limit_bytes = (args.memory_mib as usize) << 20;
    if let Some(ms) = args.timeout_ms {
        let limit = Duration::from_millis(ms);
        spec.timeouts = steward_monitor::monitor::Timeouts {
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
    let type_name = escape_control(plugin.type_name());
    Ok(match report.first_failure() {
        None => {
            println!("PASS {type_name}: every step passed");
            ExitCode::SUCCESS
        }
        Some(failure) => {
            println!("FAIL {type_name}: {}: {}", failure.step, escape_control(&failure.detail));
            ExitCode::FAILURE
        }
    })
}

/// Where `plugin check` keeps compiled components between runs: the
/// user's cache directory (XDG), so a Python or JavaScript plugin is
/// compiled once rather than on every check. None when the user has no
/// home or it cannot be written, in which case every check compiles.
fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    let dir = base.join("steward").join("compile-cache");
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Some(dir),
        Err(error) => {
            tracing::warn!(cache = %dir.display(), %error, "compiling without a cache (use --no-cache to say so)");
            None
        }
    }
}

/// `--prop KEY=VALUE`, a usage error otherwise.
fn key_value(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{pair}` is not KEY=VALUE, e.g. --prop path=/state/marker")),
    }
}

fn print_metadata(plugin: &Plugin) {
    let info: &TypeInfo = plugin.metadata();
    let load = plugin.load_info();
    // Everything the plugin says about itself is its own text.
    let safe = |text: &str| escape_control(text).into_owned();
    println!("plugin  {} {}  ({})", safe(&info.name), safe(&info.version), plugin.path().display());
    println!("sha256  {}", plugin.hash());
    println!("loaded  {} in {:.1} ms", if load.compiled { "compiled" } else { "from cache" }, ms(load.elapsed));
    println!("about   {}", safe(&info.description));
    let capabilities: Vec<&str> = info.capabilities.iter().map(|capability| capability.as_str()).collect();
    println!(
        "needs   {}",
        if capabilities.is_empty() { "no capabilities".to_string() } else { capabilities.join(", ") }
    );
    println!("properties");
    for spec in &info.properties {
        let kind = spec.kind.as_str();
        let default = match (&spec.default_value, spec.required) {
            (_, true) => "required".to_string(),
            (Some(value), false) => format!("default `{value}`"),
            (None, false) => "optional".to_string(),
        };
        println!("  {:<20} {:<10} {:<18} {}", safe(&spec.name), kind, safe(&default), safe(&spec.description));
    }
}

fn print_report(report: &CheckReport) {
    println!("life cycle");
    for step in &report.steps {
        let verdict = match (step.passed, step.skipped) {
            (true, _) => "ok  ",
            (false, true) => "skip",
            (false, false) => "FAIL",
        };
        println!("  {verdict} {:<26} {:>9.3} ms  {}", step.step, ms(step.elapsed), escape_control(&step.detail));
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}
