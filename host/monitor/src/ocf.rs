//! A Steward plugin as an OCF resource agent, so Pacemaker can run it:
//! `steward ocf PLUGIN.wasm ACTION` (usually behind a two-line shell shim
//! installed under `/usr/lib/ocf/resource.d/`).
//!
//! Each OCF action is a new process, so nothing lives in the instance from
//! one action to the next: state the plugin keeps outside itself (a marker
//! file, a running program) carries over. Programs a plugin spawned are
//! recorded in `$HA_RSCTMP` (pid and start time) and adopted by the next
//! action, exactly as a restarted daemon adopts them; they are never killed
//! when an action's process exits.
//!
//! Mapping: `OCF_RESKEY_name` is property `name` (an underscore also
//! matches a dash), `OCF_RESOURCE_INSTANCE` the resource's name;
//! `OCF_RESKEY_CRM_meta_timeout` the deadline of start and stop. Exit codes:
//! 0 success, 1 generic (transient errors, traps, deadlines), 2 bad
//! arguments, 3 unimplemented action, 4 denied capability, 5 fatal (do not
//! run here), 6 invalid configuration, 7 not running.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::bindings::{CallContext, CheckLevel, PluginError, PropertyKind, TypeInfo};
use crate::monitor::{CallError, Monitor, ResourceSpec};
use crate::plugin::Plugin;
use crate::process::TrackedProcess;

/// OCF exit codes.
pub mod exit {
    /// The action succeeded (and, for monitor, the resource runs).
    pub const SUCCESS: u8 = 0;
    /// A generic, soft error.
    pub const ERR_GENERIC: u8 = 1;
    /// Wrong or missing arguments.
    pub const ERR_ARGS: u8 = 2;
    /// The action is not implemented.
    pub const ERR_UNIMPLEMENTED: u8 = 3;
    /// Not permitted (a capability the grant refuses).
    pub const ERR_PERM: u8 = 4;
    /// Something required is missing on this node: a hard error.
    pub const ERR_INSTALLED: u8 = 5;
    /// The configuration is invalid.
    pub const ERR_CONFIGURED: u8 = 6;
    /// The resource is not running.
    pub const NOT_RUNNING: u8 = 7;
}

/// The timeout OCF actions advertise, and use when Pacemaker names none.
const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(20);

/// Where an OCF action runs: its environment and where state is kept.
#[derive(Debug, Clone)]
pub struct OcfContext {
    /// The environment (`OCF_*` variables).
    pub env: HashMap<String, String>,
    /// The directory for the recorded processes (`$HA_RSCTMP`).
    pub state_dir: PathBuf,
}

impl OcfContext {
    /// From this process's environment.
    pub fn from_env() -> Self {
        let env: HashMap<String, String> = std::env::vars().collect();
        let state_dir = env.get("HA_RSCTMP").map_or_else(|| PathBuf::from("/run/resource-agents"), PathBuf::from);
        OcfContext { env, state_dir }
    }
}

/// Runs `action` on `plugin`; returns the exit code. Messages for the
/// operator go to stderr, meta-data to stdout.
pub async fn run_action(
    plugin: Arc<Plugin>,
    action: &str,
    grants: steward_config::grants::Grants,
    context: &OcfContext,
) -> u8 {
    match action {
        "meta-data" => {
            print!("{}", meta_data(plugin.metadata()));
            exit::SUCCESS
        }
        "validate-all" => match plugin.validate(&instance_name(context), &properties(plugin.metadata(), context)).await
        {
            Ok(()) => exit::SUCCESS,
            Err(error) => {
                eprintln!("{error}");
                exit::ERR_CONFIGURED
            }
        },
        "start" | "stop" | "monitor" | "status" => {
            let Some(name) = context.env.get("OCF_RESOURCE_INSTANCE").cloned() else {
                eprintln!("OCF_RESOURCE_INSTANCE is not set; Pacemaker sets it to the resource's name");
                return exit::ERR_ARGS;
            };
            lifecycle_action(plugin, action, &name, grants, context).await
        }
        other => {
            eprintln!("action `{other}` is not implemented; use start, stop, monitor, meta-data or validate-all");
            exit::ERR_UNIMPLEMENTED
        }
    }
}

async fn lifecycle_action(
    plugin: Arc<Plugin>,
    action: &str,
    name: &str,
    grants: steward_config::grants::Grants,
    context: &OcfContext,
) -> u8 {
    let state_file = context.state_dir.join(format!("steward-{}-{name}.json", plugin.type_name()));
    let mut spec = ResourceSpec::new(name, &plugin);
    spec.properties = properties(plugin.metadata(), context);
    spec.grants = grants;
    spec.adopt = read_processes(&state_file);
    if let Some(timeout) = context.env.get("OCF_RESKEY_CRM_meta_timeout").and_then(|ms| ms.parse::<u64>().ok()) {
        spec.timeouts.pending = Duration::from_millis(timeout);
    }
    let monitor = Monitor::new(context.env.get("OCF_RESKEY_CRM_meta_on_node").map_or("ocf", String::as_str));
    let handle = match monitor.open(plugin.clone(), spec).await {
        Ok(handle) => handle,
        Err(crate::Error::InvalidProperties { problems, .. }) => {
            eprintln!("invalid properties: {}", crate::error::describe_problems(&problems));
            return exit::ERR_CONFIGURED;
        }
        Err(crate::Error::Call { source, .. }) => {
            eprintln!("open failed: {source}");
            return exit_code(&source);
        }
        Err(error) => {
            eprintln!("{error}");
            return exit::ERR_CONFIGURED;
        }
    };
    let call_context = CallContext { node_name: String::new(), fencing_token: 0, attempt: 1 };
    let code = match action {
        "start" => match handle.online(&call_context).await {
            Ok(()) => exit::SUCCESS,
            Err(error) => {
                eprintln!("start failed: {error}");
                exit_code(&error)
            }
        },
        "stop" => match handle.offline(&call_context).await {
            Ok(()) => exit::SUCCESS,
            Err(error) => {
                eprintln!("stop failed: {error}; terminating");
                let _ = handle.terminate().await;
                exit::ERR_GENERIC
            }
        },
        _ => {
            let deep = context.env.get("OCF_CHECK_LEVEL").and_then(|l| l.parse::<u32>().ok()).unwrap_or(0) >= 10;
            match handle.looks_alive().await {
                Ok(true) if deep => match handle.is_alive(CheckLevel::Thorough).await {
                    Ok(health) if health.alive => exit::SUCCESS,
                    Ok(health) => {
                        eprintln!("not healthy: {}", health.reason);
                        exit::ERR_GENERIC
                    }
                    Err(error) => exit_code(&error),
                },
                Ok(true) => exit::SUCCESS,
                Ok(false) => exit::NOT_RUNNING,
                Err(error) => {
                    eprintln!("monitor failed: {error}");
                    exit_code(&error)
                }
            }
        }
    };
    write_processes(&state_file, &handle.running_processes().await);
    // What the plugin left running must outlive this process.
    handle.release().await;
    code
}

/// The OCF exit code for a failed call.
pub fn exit_code(error: &CallError) -> u8 {
    match error {
        CallError::Plugin { error: PluginError::InvalidConfig(_), .. } => exit::ERR_CONFIGURED,
        CallError::Plugin { error: PluginError::Fatal(_), .. } => exit::ERR_INSTALLED,
        CallError::CapabilityDenied { .. } => exit::ERR_PERM,
        _ => exit::ERR_GENERIC,
    }
}

/// The resource's properties from `OCF_RESKEY_*`, by the type's schema.
pub fn properties(info: &TypeInfo, context: &OcfContext) -> Vec<(String, String)> {
    info.properties
        .iter()
        .filter_map(|spec| {
            let exact = format!("OCF_RESKEY_{}", spec.name);
            let underscored = format!("OCF_RESKEY_{}", spec.name.replace('-', "_"));
            let value = context.env.get(&exact).or_else(|| context.env.get(&underscored))?;
            Some((spec.name.clone(), value.clone()))
        })
        .collect()
}

fn instance_name(context: &OcfContext) -> String {
    context.env.get("OCF_RESOURCE_INSTANCE").cloned().unwrap_or_else(|| "ocf".into())
}

/// The type's metadata as OCF meta-data XML (ra-api-1.dtd).
pub fn meta_data(info: &TypeInfo) -> String {
    let timeout = format!("{}s", DEFAULT_ACTION_TIMEOUT.as_secs());
    let mut xml = String::new();
    let _ = writeln!(xml, "<?xml version=\"1.0\"?>\n<!DOCTYPE resource-agent SYSTEM \"ra-api-1.dtd\">");
    let _ = writeln!(xml, "<resource-agent name=\"{}\" version=\"{}\">", escape(&info.name), escape(&info.version));
    let _ = writeln!(xml, "<version>1.0</version>");
    let _ = writeln!(
        xml,
        "<longdesc lang=\"en\">{} (a Steward plugin run by `steward ocf`)</longdesc>",
        escape(&info.description)
    );
    let _ = writeln!(xml, "<shortdesc lang=\"en\">{}</shortdesc>", escape(&info.description));
    let _ = writeln!(xml, "<parameters>");
    for spec in &info.properties {
        let kind = match spec.kind {
            PropertyKind::Integer => "integer",
            PropertyKind::Boolean => "boolean",
            PropertyKind::Text | PropertyKind::TextList => "string",
        };
        let _ = writeln!(
            xml,
            "<parameter name=\"{}\" required=\"{}\" unique=\"0\">",
            escape(&spec.name.replace('-', "_")),
            u8::from(spec.required)
        );
        let _ = writeln!(xml, "<longdesc lang=\"en\">{}</longdesc>", escape(&spec.description));
        let _ = writeln!(xml, "<shortdesc lang=\"en\">{}</shortdesc>", escape(&spec.description));
        match &spec.default_value {
            Some(default) => {
                let _ = writeln!(xml, "<content type=\"{kind}\" default=\"{}\"/>", escape(default));
            }
            None => {
                let _ = writeln!(xml, "<content type=\"{kind}\"/>");
            }
        }
        let _ = writeln!(xml, "</parameter>");
    }
    let _ = writeln!(xml, "</parameters>\n<actions>");
    for action in ["start", "stop", "monitor", "meta-data", "validate-all"] {
        let extra = if action == "monitor" { " interval=\"10s\" depth=\"0\"" } else { "" };
        let _ = writeln!(xml, "<action name=\"{action}\" timeout=\"{timeout}\"{extra}/>");
    }
    let _ = writeln!(xml, "</actions>\n</resource-agent>");
    xml
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn read_processes(file: &Path) -> Vec<TrackedProcess> {
    std::fs::read_to_string(file).ok().and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default()
}

fn write_processes(file: &Path, processes: &[TrackedProcess]) {
    if processes.is_empty() {
        let _ = std::fs::remove_file(file);
        return;
    }
    let written = file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(file, serde_json::to_string(processes).unwrap_or_default()));
    if let Err(error) = written {
        eprintln!("cannot record the resource's processes in {}: {error}", file.display());
    }
}
