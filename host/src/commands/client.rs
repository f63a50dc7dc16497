//! The operator's commands that talk to a running daemon over its HTTP API:
//! `status`, `nodes`, `why`, `online`, `offline`, `events`, `reload`, `apply`,
//! `config show`, `plugin list`, `plugin upgrade`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::Value;
use steward_api::wire;

/// The socket of a daemon installed as a service (its data directory).
pub const DEFAULT_API: &str = "unix:/var/lib/steward/api.sock";

/// Where the daemon's API is, and how to prove who is asking, for every
/// client command.
#[derive(clap::Args, Clone)]
pub struct ApiArgs {
    /// The daemon's API: `unix:PATH` (its socket), `HOST:PORT` or
    /// `http://HOST:PORT` (loopback), or `https://HOST:PORT`.
    #[arg(long, global = true, env = "STEWARD_API", default_value = DEFAULT_API)]
    pub api: String,
    /// A file holding the API token (for a TCP listener); or set STEWARD_TOKEN.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// The PEM certificate of the CA that signed an https API's certificate.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ApiArgs {
    /// The same token and CA, for another node's API at `api`.
    fn for_node(&self, api: &str) -> ApiArgs {
        ApiArgs { api: api.to_string(), ..self.clone() }
    }
}

/// A client for `api`: over its Unix socket or TCP (TLS with `--ca`),
/// sending its token on every request; and the base URL paths go after.
fn connect(api: &ApiArgs) -> anyhow::Result<(reqwest::Client, String)> {
    let mut builder = reqwest::Client::builder();
    let mut headers = reqwest::header::HeaderMap::new();
    let token = match &api.token_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the token file {} (--token-file)", file.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("STEWARD_TOKEN").ok().map(|token| token.trim().to_string()),
    };
    if let Some(token) = token.filter(|token| !token.is_empty()) {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token holds characters no HTTP header may carry; check the token file")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    builder = builder.default_headers(headers);
    if let Some(ca) = &api.ca {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read the CA file {} (--ca)", ca.display()))?;
        let certificate = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a PEM certificate (--ca)", ca.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    let base = match api.api.strip_prefix("unix:") {
        Some(socket) => {
            builder = builder.unix_socket(std::path::PathBuf::from(socket));
            // The host is not looked up over a socket; the guard sees no Origin.
            "http://localhost".to_string()
        }
        None if api.api.starts_with("http://") || api.api.starts_with("https://") => {
            api.api.trim_end_matches('/').to_string()
        }
        None => format!("http://{}", api.api),
    };
    Ok((builder.build().context("cannot set up the HTTP client")?, base))
}

/// `steward status`: groups and resources, as a table.
pub async fn status(api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let body = get(api, "/v1/status").await?;
    if api.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let status: wire::Status = read(body, "status")?;
    match status.phase.as_str() {
        "running" | "" => println!("node {}", safe(&status.node)),
        phase => println!("node {} ({})", safe(&status.node), safe(phase)),
    }
    if let Some(cluster) = &status.cluster {
        println!();
        print_cluster(cluster);
    }
    println!();
    println!("{:<16} {:<8} {:<32} REASON", "GROUP", "STATE", "RESOURCES");
    for group in &status.groups {
        println!(
            "{:<16} {:<8} {:<32} {}",
            safe(&group.name),
            safe(&group.state),
            safe(&group.resources.join(", ")),
            safe(&group.reason)
        );
    }
    println!();
    println!("{:<16} {:<14} {:<12} {:<15} {:>8}  REASON", "RESOURCE", "TYPE", "GROUP", "STATE", "RESTARTS");
    for resource in &status.resources {
        // A failed resource's reason leads with the kind of its failure.
        // A pending one's, with the plugin's last progress report.
        let reason = match (resource.state.as_str(), &resource.last_failure_kind, &resource.progress) {
            ("failed", Some(kind), _) if !kind.is_empty() => format!("[{kind}] {}", resource.reason),
            (_, _, Some(progress)) if !progress.is_empty() => format!("{} (progress: {progress})", resource.reason),
            _ => resource.reason.clone(),
        };
        println!(
            "{:<16} {:<14} {:<12} {:<15} {:>8}  {}",
            safe(&resource.name),
            safe(&resource.type_name),
            safe(&resource.group),
            safe(&resource.state),
            resource.restarts_total,
            safe(&reason),
        );
    }
    println!();
    println!("{:<16} {:>8} {:>8}  RESOURCES", "WORKER", "PID", "RESTARTS");
    for worker in &status.workers {
        println!("{:<16} {:>8} {:>8}  {}", safe(&worker.name), worker.pid, worker.restarts, worker.resources.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward nodes`: the cluster's nodes and the groups each owns.
pub async fn nodes(api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let body = get(api, "/v1/cluster").await?;
    if api.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_cluster(&read(body, "cluster")?);
    Ok(ExitCode::SUCCESS)
}

/// The cluster line, then one row per live node with the groups it owns
/// (and their fencing tokens).
fn print_cluster(cluster: &wire::Cluster) {
    let remaining = cluster.lease_remaining_ms.map_or_else(String::new, |ms| format!(", {ms} ms left"));
    println!(
        "cluster {} (seen from {}: lease {}{remaining})",
        safe(&cluster.name),
        safe(&cluster.node),
        safe(&cluster.lease)
    );
    println!("{:<16} {:<22} {:<10} {:<24} TYPES", "NODE", "API", "VERSION", "GROUPS (TOKEN)");
    for node in &cluster.nodes {
        let owned: Vec<String> = cluster
            .owners
            .iter()
            .filter(|owner| owner.node == node.name)
            .map(|owner| format!("{} ({})", owner.group, owner.fencing_token))
            .collect();
        let types: Vec<&str> = node.plugins.keys().map(String::as_str).collect();
        println!(
            "{:<16} {:<22} {:<10} {:<24} {}",
            safe(&node.name),
            safe(&node.api),
            safe(&node.version),
            safe(&owned.join(", ")),
            safe(&types.join(","))
        );
    }
}

/// `steward move GROUP [NODE]`: asks the group's owner to move it.
pub async fn move_group(api: &ApiArgs, group: &str, node: Option<&str>) -> anyhow::Result<ExitCode> {
    let query = node.map(|node| ("to", node));
    let body = post(api, &api_path(&["v1", "groups", group, "move"], query)).await?;
    if api.json {
        println!("{body}");
    } else {
        let accepted: wire::Accepted = read(body, "answer")?;
        println!("accepted: {}", safe(&accepted.accepted));
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward online|offline NAME`: a group, or else a resource.
pub async fn change(api: &ApiArgs, name: &str, online: bool) -> anyhow::Result<ExitCode> {
    let action = if online { "online" } else { "offline" };
    let body = post(api, &api_path(&["v1", "targets", name, action], None)).await?;
    if api.json {
        println!("{body}");
    } else {
        let accepted: wire::Accepted = read(body, "answer")?;
        println!("accepted: {}", safe(&accepted.accepted));
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
    let plugins: Vec<wire::Plugin> = read(body, "plugin list")?;
    println!("{:<16} {:<10} FILE", "TYPE", "VERSION");
    for plugin in &plugins {
        let type_name = safe(plugin.type_name.as_deref().unwrap_or("-"));
        let version = safe(plugin.version.as_deref().unwrap_or("-"));
        let file = safe(&plugin.file);
        match &plugin.error {
            Some(error) => println!("{type_name:<16} {version:<10} {file}  ERROR: {}", safe(error)),
            None => println!("{type_name:<16} {version:<10} {file}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward plugin upgrade TYPE`: switches the type's resources to its
/// newest loaded version (online ones now, the others at their next online).
pub async fn plugin_upgrade(api: &ApiArgs, type_name: &str) -> anyhow::Result<ExitCode> {
    let body = post(api, &api_path(&["v1", "plugins", type_name, "upgrade"], None)).await?;
    if api.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let report: wire::UpgradeReport = read(body, "upgrade report")?;
    println!("type {} is now version {} ({})", safe(&report.type_name), safe(&report.version), safe(&report.hash));
    for (names, label) in [
        (&report.switching, "switching now"),
        (&report.at_next_online, "switch at their next online"),
        (&report.current, "already on it"),
    ] {
        if !names.is_empty() {
            println!("  {label}: {}", safe(&names.join(", ")));
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
    let report: wire::ReloadReport = read(body, "reload report")?;
    println!("added groups: {}", safe(&report.added_groups.join(", ")));
    println!("added resources: {}", safe(&report.added_resources.join(", ")));
    if !report.removed_groups.is_empty() {
        println!("removing groups: {}", safe(&report.removed_groups.join(", ")));
    }
    if !report.replaced_groups.is_empty() {
        println!("replacing groups (offline, then as now defined): {}", safe(&report.replaced_groups.join(", ")));
    }
    if !report.retuned_groups.is_empty() {
        println!("new settings, kept running: {}", safe(&report.retuned_groups.join(", ")));
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward why GROUP`: the decisions behind the group's recent history,
/// from every node of the cluster (each keeps its own), merged by time;
/// a node alone answers for itself.
pub async fn why(api: &ApiArgs, group: &str) -> anyhow::Result<ExitCode> {
    let path = api_path(&["v1", "groups", group, "why"], None);
    let mut decisions: Vec<wire::Decision> = read(get(api, &path).await?, "decisions")?;
    let mut unreachable_nodes = Vec::new();
    let (client, base) = connect(api)?;
    let cluster = client.get(format!("{base}/v1/cluster")).send().await.map_err(|e| unreachable(api, e))?;
    if cluster.status().is_success() {
        let cluster: wire::Cluster = read(cluster.json().await?, "cluster")?;
        for node in cluster.nodes.iter().filter(|node| node.name != cluster.node) {
            let other = api.for_node(&node.api);
            match get(&other, &path).await.and_then(|body| read::<Vec<wire::Decision>>(body, "decisions")) {
                Ok(theirs) => decisions.extend(theirs),
                Err(_) => unreachable_nodes.push(node.name.clone()),
            }
        }
    }
    decisions.sort_by(|a, b| a.unix_ms.cmp(&b.unix_ms).then_with(|| a.node.cmp(&b.node)));
    if api.json {
        println!("{}", serde_json::to_string_pretty(&decisions)?);
        return Ok(ExitCode::SUCCESS);
    }
    if decisions.is_empty() {
        println!("no decisions recorded for `{}` yet", safe(group));
    }
    for decision in &decisions {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(decision.unix_ms);
        println!(
            "{} {} {}: {}",
            humantime::format_rfc3339_millis(at),
            safe(&decision.node),
            safe(&decision.kind),
            safe(&decision.outcome)
        );
        println!("    rule: {}", safe(&decision.rule));
        for input in &decision.inputs {
            println!("    - {}", safe(input));
        }
    }
    for node in unreachable_nodes {
        println!("(node {} did not answer: its decisions are missing)", safe(&node));
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward apply FILE...`: sends files of groups and resources to the
/// daemon, which checks them against its plugins and makes them the
/// cluster's shared configuration in one write. A refusal lists every
/// problem, one per line, naming file, line and field; nothing is applied.
pub async fn apply(api: &ApiArgs, paths: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    let limit = steward_cluster::shared_config::MAX_SHARED_CONFIG_BYTES;
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let metadata = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if !metadata.is_file() {
            bail!("{} is not a regular file; name files of [[resource]] and [[group]] tables", path.display());
        }
        if metadata.len() > limit as u64 {
            bail!("{} has {} bytes, over the {limit} a shared configuration may take", path.display(), metadata.len());
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        files.push(wire::ConfigFile { name: path.display().to_string(), text });
    }
    let (client, base) = connect(api)?;
    let response = client
        .post(format!("{base}/v1/config"))
        .json(&wire::ApplyRequest { files })
        .send()
        .await
        .map_err(|e| unreachable(api, e))?;
    if matches!(response.status().as_u16(), 401 | 403) {
        return Err(check(response).await.err().unwrap_or_else(|| anyhow::anyhow!("refused")));
    }
    if !response.status().is_success() {
        let status = response.status();
        let error = response.json::<wire::ErrorBody>().await.map(|body| body.error).unwrap_or_default();
        eprintln!("error: the daemon refused the configuration ({status}):");
        for line in error.lines() {
            eprintln!("  {}", safe(line));
        }
        return Ok(ExitCode::FAILURE);
    }
    let body: Value = response.json().await?;
    if api.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let report: wire::ApplyReport = read(body, "apply report")?;
    println!(
        "applied revision {}: {} group(s) ({}), {} resource(s); every node reconciles",
        report.revision,
        report.groups.len(),
        safe(&report.groups.join(", ")),
        report.resources
    );
    Ok(ExitCode::SUCCESS)
}

/// `steward config show`: the shared configuration this node runs, with
/// its revision, file by file; or that it runs its own node file.
pub async fn config_show(api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let body = get(api, "/v1/config").await?;
    if api.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let config: wire::Config = read(body, "configuration")?;
    let Some(revision) = config.revision else {
        println!(
            "# no shared configuration is applied: this node runs the groups of its node file {}",
            safe(&config.node_file)
        );
        return Ok(ExitCode::SUCCESS);
    };
    let by = config.applied_by.unwrap_or_default();
    let at = config.applied_at_ms.map_or_else(String::new, |ms| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        format!(" at {}", humantime::format_rfc3339_seconds(at))
    });
    println!("# shared configuration, revision {revision}, applied by {}{at}", safe(&by));
    for file in &config.files {
        println!("\n# --- {} ---", safe(&file.name));
        // Line by line: newlines are the text's own; anything else that
        // could steer a terminal is escaped.
        for line in file.text.lines() {
            println!("{}", safe(line));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward events`: follows the event stream until interrupted.
pub async fn events(api: &ApiArgs, history: bool) -> anyhow::Result<ExitCode> {
    let (client, base) = connect(api)?;
    let response =
        client.get(format!("{base}/v1/events?history={history}")).send().await.map_err(|e| unreachable(api, e))?;
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
            // An event this CLI cannot read (a newer daemon's) is skipped,
            // not the end of the stream.
            let Ok(event) = serde_json::from_str::<wire::Event>(data.trim()) else { continue };
            let change = match (&event.from, &event.to, &event.failure_kind) {
                (Some(from), Some(to), Some(kind)) => format!("{from} -> {to} [{kind}]"),
                (Some(from), Some(to), None) => format!("{from} -> {to}"),
                _ => String::new(),
            };
            let subject = event.resource.as_deref().unwrap_or(&event.group);
            println!(
                "{:>5} {:<18} {:<12} {:<26} {}",
                event.seq,
                safe(&event.kind),
                safe(subject),
                safe(&change),
                safe(&event.reason)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An API path from its segments and an optional query pair, each
/// percent-encoded: a name an operator types (a group, a node) can hold
/// any character, and must stay one segment or one value.
fn api_path(segments: &[&str], query: Option<(&str, &str)>) -> String {
    let mut url = reqwest::Url::parse("http://steward.invalid/").expect("a constant, valid URL");
    if let Ok(mut path) = url.path_segments_mut() {
        path.clear().extend(segments);
    }
    if let Some((key, value)) = query {
        url.query_pairs_mut().append_pair(key, value);
    }
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    }
}

/// Why the daemon could not be reached, in the operator's terms: an
/// untrusted certificate says which flag fixes it.
fn unreachable(api: &ApiArgs, error: reqwest::Error) -> anyhow::Error {
    let chain = {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    };
    if chain.contains("certificate") || chain.contains("UnknownIssuer") {
        anyhow::anyhow!(
            "the daemon at {} presented a certificate this client does not trust ({chain}); pass the CA that signed it with --ca FILE",
            api.api
        )
    } else {
        anyhow::anyhow!(
            "cannot reach the daemon at {} ({chain}); is `steward daemon` running? (set --api or STEWARD_API)",
            api.api
        )
    }
}

async fn get(api: &ApiArgs, path: &str) -> anyhow::Result<Value> {
    let (client, base) = connect(api)?;
    let response = client.get(format!("{base}{path}")).send().await.map_err(|e| unreachable(api, e))?;
    Ok(check(response).await?.json().await?)
}

async fn post(api: &ApiArgs, path: &str) -> anyhow::Result<Value> {
    let (client, base) = connect(api)?;
    let response = client.post(format!("{base}{path}")).send().await.map_err(|e| unreachable(api, e))?;
    Ok(check(response).await?.json().await?)
}

async fn check(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let error = response.json::<wire::ErrorBody>().await.map(|body| body.error).unwrap_or_default();
    match status.as_u16() {
        401 => bail!("the daemon refused the request (401): {}", safe(&error)),
        403 => bail!("the daemon refused the request (403): {}", safe(&error)),
        _ => bail!("the daemon answered {status}: {}", safe(&error)),
    }
}

/// A document of the daemon's answer, read as the API's wire type.
fn read<T: serde::de::DeserializeOwned>(body: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(body).with_context(|| {
        format!("the daemon's {what} is not what this steward understands; are both the same version?")
    })
}

/// Text of the daemon's answer as a table cell: much of it is a plugin's
/// (reasons, progress, errors), so control characters are escaped before
/// they reach the terminal.
fn safe(text: &str) -> std::borrow::Cow<'_, str> {
    steward_monitor::text::escape_control(text)
}
