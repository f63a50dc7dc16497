//! The operator's commands that talk to a running daemon over its HTTP API:
//! `status`, `online`, `offline`, `events`, `reload`, `plugin list`,
//! `plugin upgrade`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::Value;

/// Where the daemon's API is, for every client command.
#[derive(clap::Args, Clone)]
pub struct ApiArgs {
    /// The daemon's API address (host:port).
    #[arg(long, global = true, env = "STEWARD_API", default_value = "127.0.0.1:7700")]
    pub api: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `steward status`: groups and resources, as a table.
pub async fn status(api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let body = get(api, "/v1/status").await?;
    if api.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    match text(&body["phase"]).as_str() {
        "running" | "" => println!("node {}", text(&body["node"])),
        phase => println!("node {} ({phase})", text(&body["node"])),
    }
    println!();
    println!("{:<16} {:<8} {:<32} REASON", "GROUP", "STATE", "RESOURCES");
    for group in body["groups"].as_array().into_iter().flatten() {
        let members: Vec<String> = group["resources"].as_array().into_iter().flatten().map(text).collect();
        println!(
            "{:<16} {:<8} {:<32} {}",
            text(&group["name"]),
            text(&group["state"]),
            members.join(", "),
            text(&group["reason"])
        );
    }
    println!();
    println!("{:<16} {:<14} {:<12} {:<15} {:>8}  REASON", "RESOURCE", "TYPE", "GROUP", "STATE", "RESTARTS");
    for resource in body["resources"].as_array().into_iter().flatten() {
        // A failed resource's reason leads with the kind of its failure.
        // A pending one's, with the plugin's last progress report.
        let reason = match (text(&resource["state"]).as_str(), resource.get("last_failure_kind").map(text)) {
            ("failed", Some(kind)) if !kind.is_empty() => format!("[{kind}] {}", text(&resource["reason"])),
            _ => match resource.get("progress").map(text) {
                Some(progress) if !progress.is_empty() => {
                    format!("{} (progress: {progress})", text(&resource["reason"]))
                }
                _ => text(&resource["reason"]),
            },
        };
        println!(
            "{:<16} {:<14} {:<12} {:<15} {:>8}  {}",
            text(&resource["name"]),
            text(&resource["type"]),
            text(&resource["group"]),
            text(&resource["state"]),
            text(&resource["restarts_total"]),
            reason,
        );
    }
    println!();
    println!("{:<16} {:>8} {:>8}  RESOURCES", "WORKER", "PID", "RESTARTS");
    for worker in body["workers"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:>8} {:>8}  {}",
            text(&worker["name"]),
            text(&worker["pid"]),
            text(&worker["restarts"]),
            worker["resources"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward online|offline NAME`: a group, or else a resource.
pub async fn change(api: &ApiArgs, name: &str, online: bool) -> anyhow::Result<ExitCode> {
    let action = if online { "online" } else { "offline" };
    let body = post(api, &format!("/v1/targets/{name}/{action}")).await?;
    if api.json {
        println!("{body}");
    } else {
        println!("accepted: {}", text(&body["accepted"]));
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward plugin list`: every plugin file and its type, or why it did not load.
pub async fn plugin_list(api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let body = get(api, "/v1/plugins").await?;
    if api.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<16} {:<10} FILE", "TYPE", "VERSION");
    for plugin in body.as_array().into_iter().flatten() {
        let type_name = plugin.get("type").map_or_else(|| "-".to_string(), text);
        let version = plugin.get("version").map_or_else(|| "-".to_string(), text);
        let file = text(&plugin["file"]);
        match plugin.get("error") {
            Some(error) => println!("{type_name:<16} {version:<10} {file}  ERROR: {}", text(error)),
            None => println!("{type_name:<16} {version:<10} {file}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward plugin upgrade TYPE`: switches the type's resources to its
/// newest loaded version (online ones now, the others at their next online).
pub async fn plugin_upgrade(api: &ApiArgs, type_name: &str) -> anyhow::Result<ExitCode> {
    let body = post(api, &format!("/v1/plugins/{type_name}/upgrade")).await?;
    if api.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("type {} is now version {} ({})", text(&body["type"]), text(&body["version"]), text(&body["hash"]));
    for (key, label) in [
        ("switching", "switching now"),
        ("at_next_online", "switch at their next online"),
        ("current", "already on it"),
    ] {
        let names: Vec<String> = body[key].as_array().into_iter().flatten().map(text).collect();
        if !names.is_empty() {
            println!("  {label}: {}", names.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward reload`: the daemon reads its configuration again and adds the
/// new groups and their resources.
pub async fn reload(api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let body = post(api, "/v1/reload").await?;
    if api.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = |key: &str| body[key].as_array().into_iter().flatten().map(text).collect::<Vec<_>>().join(", ");
    println!("added groups: {}", list("added_groups"));
    println!("added resources: {}", list("added_resources"));
    for note in body["not_applied"].as_array().into_iter().flatten() {
        println!("not applied: {}", text(note));
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward events`: follows the event stream until interrupted.
pub async fn events(api: &ApiArgs, history: bool) -> anyhow::Result<ExitCode> {
    let url = format!("{}/v1/events?history={history}", base(api));
    let response = reqwest::get(&url).await.with_context(|| unreachable(api))?;
    let response = check(response).await?;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.context("the event stream broke")?));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let Some(data) = frame.lines().find_map(|line| line.strip_prefix("data:")) else { continue };
            if api.json {
                println!("{}", data.trim());
                continue;
            }
            let event: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
            let change = match (event.get("from"), event.get("to"), event.get("failure_kind")) {
                (Some(from), Some(to), Some(kind)) => format!("{} -> {} [{}]", text(from), text(to), text(kind)),
                (Some(from), Some(to), None) => format!("{} -> {}", text(from), text(to)),
                _ => String::new(),
            };
            let subject = event.get("resource").map(text).unwrap_or_else(|| text(&event["group"]));
            println!(
                "{:>5} {:<18} {:<12} {:<26} {}",
                text(&event["seq"]),
                text(&event["kind"]),
                subject,
                change,
                text(&event["reason"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn base(api: &ApiArgs) -> String {
    if api.api.starts_with("http://") { api.api.clone() } else { format!("http://{}", api.api) }
}

fn unreachable(api: &ApiArgs) -> String {
    format!("cannot reach the daemon at {}; is `steward daemon` running? (set --api or STEWARD_API)", api.api)
}

async fn get(api: &ApiArgs, path: &str) -> anyhow::Result<Value> {
    let response = reqwest::get(format!("{}{path}", base(api))).await.with_context(|| unreachable(api))?;
    Ok(check(response).await?.json().await?)
}

async fn post(api: &ApiArgs, path: &str) -> anyhow::Result<Value> {
    let response =
        reqwest::Client::new().post(format!("{}{path}", base(api))).send().await.with_context(|| unreachable(api))?;
    Ok(check(response).await?.json().await?)
}

async fn check(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    bail!("the daemon answered {status}: {}", body.get("error").map(text).unwrap_or_default())
}

/// A value of the daemon's answer as a table cell: much of it is a
/// plugin's text (reasons, progress, errors), so control characters are
/// escaped before they reach the terminal.
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => steward_monitor::text::escape_control(text).into_owned(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
