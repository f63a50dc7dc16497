//! The node's configuration file (`steward.toml`) and the resource and group
//! files it includes: parsing, and every check that does not need a plugin.
//!
//! Every key, with its type, default and meaning, is documented in
//! `docs/configuration.md`. A test in `tests/all/tidy.rs` keeps that page and
//! the `Raw*` structs below in step: it asks the parser which keys each table
//! accepts, so a key added here without a row there fails it.
//!
//! Every error names the file and, where the file says it, the line and
//! column, the resource or group, the field, and what to do. Checks that need
//! a plugin (the type exists, the properties satisfy its schema and its own
//! `validate`) run in the node crate (`steward_node::check_config`), which `steward validate`
//! and `steward daemon` share.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::grants::{DirectoryGrant, Grants};

pub mod grants;
pub mod tokens;
pub mod worker_names;

/// A configuration error, naming where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConfigError {
    /// `file`, `file:line:column`, or `file: resource `name``.
    pub location: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// The whole configuration of a node, read and checked.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The file it was read from.
    pub file: PathBuf,
    /// This node's name.
    pub name: String,
    /// Where the `.wasm` plugins are.
    pub plugin_dir: PathBuf,
    /// Where the node keeps its state.
    pub data_dir: PathBuf,
    /// The HTTP API's listeners and who may use them.
    pub api: ApiAccess,
    /// `text` or `json` logs.
    pub log_format: LogFormat,
    /// Whether SIGTERM leaves resources running (true) or takes them offline.
    pub leave_running_on_stop: bool,
    /// A monitor worker that does not answer for this long is killed and
    /// handled as dead.
    pub worker_deadlock_timeout: Duration,
    /// The most resources one shared monitor worker hosts; more go to the
    /// next shared worker. `None`: as many as `vm.max_map_count` allows.
    pub max_instances_per_worker: Option<u32>,
    /// Every resource, in file order.
    pub resources: Vec<ResourceConfig>,
    /// Every group, in file order.
    pub groups: Vec<GroupConfig>,
    /// The cluster this node joins; `None` runs it alone on its state store.
    pub cluster: Option<ClusterSettings>,
}

/// The name of the API's Unix socket in the data directory, by default.
pub const API_SOCKET: &str = "api.sock";

/// The API's listeners and who may use them.
#[derive(Debug, Clone)]
pub struct ApiAccess {
    /// The TCP listener, if any; every request on it presents a token.
    pub tcp: Option<SocketAddr>,
    /// The tokens TCP requests present (required with `tcp`).
    pub tokens: Option<tokens::ApiTokens>,
    /// TLS on the TCP listener (required unless it is on loopback).
    pub tls: Option<ApiTls>,
    /// Whether `/metrics` answers without a token, for scrapers.
    pub metrics_open: bool,
    /// The Unix socket, always served: its file mode (0660) and group say
    /// who may use it.
    pub socket: PathBuf,
    /// The group the socket belongs to; `None`: the daemon's own.
    pub socket_group: Option<String>,
}

/// The API's certificate and key (`[node] api_tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTls {
    /// The certificate, with its chain, PEM.
    pub cert: PemFile,
    /// Its private key, PEM.
    pub key: PemFile,
}

/// How a node joins its cluster (the `[cluster]` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The cluster's name: plugins see it (`node-info`), and it roots the
    /// cluster's keys in etcd.
    pub name: String,
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// How long the node keeps its groups without reaching etcd.
    pub lease_ttl: Duration,
    /// How long a new owner waits after acquiring a group before it brings
    /// it online: room for the clocks of the old owner and etcd to differ.
    pub safety_margin: Duration,
    /// The deadline of each etcd request.
    pub request_timeout: Duration,
    /// What SIGTERM does with the groups this node runs.
    pub on_stop: OnStop,
    /// TLS towards etcd's client port; `None`: plain HTTP/2.
    pub tls: Option<ClusterTls>,
}

/// TLS towards etcd (`[cluster] tls`), its files read when the node file is,
/// so a missing one stops `steward validate` and the daemon's start alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTls {
    /// The certificate(s) of the CA that signs etcd's server certificates.
    pub ca: PemFile,
    /// This node's client certificate and its key, where etcd checks
    /// client certificates (`--client-cert-auth`).
    pub client: Option<ClientCertificate>,
}

/// A client certificate and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert: PemFile,
    pub key: PemFile,
}

/// A PEM file as read: where from, and its text.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

// By hand: a private key's text has no place in a log line or a panic.
impl std::fmt::Debug for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemFile").field("path", &self.path).field("bytes", &self.pem.len()).finish()
    }
}

/// What a node of a cluster does with its groups when it is stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnStop {
    /// Offline here, then on the next node by placement (the default: a
    /// node stopped for maintenance should not stop its services).
    #[default]
    Move,
    /// Offline in the whole cluster, until an operator brings them online.
    Offline,
}

/// When a group goes back to a more preferred owner that returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Failback {
    /// It stays where it runs (the default: a move is an outage).
    #[default]
    Never,
    /// At once.
    Immediate,
    /// Only between these minutes of the day (UTC), `from` included, `to`
    /// excluded; a window may wrap past midnight.
    Window {
        /// Minutes after midnight the window opens.
        from: u16,
        /// Minutes after midnight it closes.
        to: u16,
    },
}

impl Failback {
    /// Whether a failback may happen at `minute` of the day (UTC).
    pub fn allows(self, minute: u16) -> bool {
        match self {
            Failback::Never => false,
            Failback::Immediate => true,
            Failback::Window { from, to } if from <= to => (from..to).contains(&minute),
            Failback::Window { from, to } => minute >= from || minute < to,
        }
    }

    fn parse(text: &str) -> Option<Failback> {
        let minute = |hhmm: &str| {
            let (hours, minutes) = hhmm.split_once(':')?;
            let (hours, minutes): (u16, u16) = (hours.parse().ok()?, minutes.parse().ok()?);
            (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
        };
        match text {
            "never" => Some(Failback::Never),
            "immediate" => Some(Failback::Immediate),
            window => {
                let (from, to) = window.split_once('-')?;
                Some(Failback::Window { from: minute(from)?, to: minute(to)? })
            }
        }
    }
}

/// The lease TTL when `[cluster]` names none.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2);
/// etcd grants leases in whole seconds, and none shorter than one.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceConfig {
    /// Its name, unique on the node.
    pub name: String,
    /// Its type (a plugin's type name).
    pub type_name: String,
    /// Its properties, as text (secrets included: this is what the plugin
    /// gets).
    pub properties: Vec<(String, String)>,
    /// The properties whose value was read from a secret file
    /// (`{ file = "..." }`): shown to nobody, kept out of etcd.
    pub secret_properties: Vec<String>,
    /// What it may reach.
    pub grants: Grants,
    /// Resources of the same group it needs online first.
    pub depends_on: Vec<String>,
    /// Overrides of the type's timing.
    pub timing: TimingOverrides,
    /// Its memory cap, in MiB.
    pub memory_limit_mib: Option<usize>,
    /// Whether it gets a monitor worker of its own rather than the shared one.
    pub separate_monitor: bool,
    /// The file and line it was defined at, for later errors.
    pub defined_at: String,
}

/// Timing a resource may override; none keeps the type's or the host's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimingOverrides {
    /// How often looks-alive runs.
    pub looks_alive_interval: Option<Duration>,
    /// How often is-alive runs.
    pub is_alive_interval: Option<Duration>,
    /// The deadline of online and offline.
    pub pending_timeout: Option<Duration>,
    /// The deadline of each probe.
    pub probe_timeout: Option<Duration>,
}

/// One group: resources that go online and offline together.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// Its name.
    pub name: String,
    /// Its resources.
    pub resources: Vec<String>,
    /// What to do on failures.
    pub policy: Policy,
    /// Whether the group is brought online when the node starts for the first time.
    pub autostart: bool,
    /// In a cluster, the nodes that should run it, most wanted first.
    pub preferred_owners: Vec<String>,
    /// In a cluster, the only nodes that may run it; empty: any node.
    pub possible_owners: Vec<String>,
    /// In a cluster, whether it goes back to a more preferred node that
    /// comes back.
    pub failback: Failback,
    /// The file and line it was defined at, for later errors.
    pub defined_at: String,
}

pub use steward_policy::Policy;

/// How a group's definition changed between two configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupChange {
    /// Alike.
    Same,
    /// Only its own settings (policy, autostart, owners, failback): a
    /// running group takes them without going offline.
    Settings,
    /// Its members, or a member's definition: the group is replaced.
    Members,
}

/// Reads and checks `file` and the files it includes.
pub fn load(file: &Path) -> Result<NodeConfig, ConfigError> {
    let text = read(file)?;
    let raw: RawNodeFile = parse(file, &text)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut resources = Vec::new();
    let mut groups = Vec::new();
    collect(file, &text, raw.resource, raw.group, base, &mut resources, &mut groups)?;
    if let Some(include) = &raw.node.include {
        let dir = base.join(include);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| at(file, format!("node.include: cannot read directory {}: {e}", dir.display())))?
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        files.sort();
        for included in files {
            let text = read(&included)?;
            let raw: RawIncludedFile = parse(&included, &text)?;
            collect(&included, &text, raw.resource, raw.group, base, &mut resources, &mut groups)?;
        }
    }
    let api = api_access(file, base, &raw.node)?;
    let config = NodeConfig {
        api,
        file: file.to_path_buf(),
        name: raw.node.name,
        plugin_dir: base.join(raw.node.plugin_dir),
        data_dir: base.join(raw.node.data_dir),
        log_format: raw.node.log_format,
        leave_running_on_stop: raw.node.leave_running_on_stop,
        worker_deadlock_timeout: raw.node.worker_deadlock_timeout.map_or(DEFAULT_WORKER_DEADLOCK_TIMEOUT, |d| d.0),
        max_instances_per_worker: raw.node.max_instances_per_worker,
        resources,
        groups,
        cluster: raw.cluster.map(|cluster| cluster_settings(file, base, cluster)).transpose()?,
    };
    check_structure(&config)?;
    Ok(config)
}

impl NodeConfig {
    /// This node with the cluster's shared groups and resources (the files
    /// `steward apply` wrote to etcd, as `(name, text)`) in place of the
    /// node file's own. Each file may hold `[[resource]]` and `[[group]]`
    /// tables only: everything else is node-local and stays in the node
    /// file. Paths in them are relative to this node file's directory, so
    /// each node can keep its own. Errors name the applied file and line.
    pub fn with_shared(&self, files: &[(String, String)]) -> Result<NodeConfig, ConfigError> {
        let base = self.file.parent().unwrap_or(Path::new("."));
        let mut resources = Vec::new();
        let mut groups = Vec::new();
        for (name, text) in files {
            let file = Path::new(name);
            let raw: RawIncludedFile = parse(file, text).map_err(|mut error| {
                if error.message.contains("unknown field") {
                    error.message.push_str(
                        "; an applied file holds [[resource]] and [[group]] tables only: node-local settings \
                         ([node], [cluster]) stay in each node's own file",
                    );
                }
                error
            })?;
            collect(file, text, raw.resource, raw.group, base, &mut resources, &mut groups)?;
        }
        let shared = NodeConfig { resources, groups, ..self.clone() };
        check_structure(&shared)?;
        Ok(shared)
    }

    /// How each of this configuration's groups is defined in `other`, in
    /// this configuration's order: its definition there and how it
    /// changed, or `None` when `other` no longer has it. Where a
    /// definition is written does not count. One pass, through indexes:
    /// a reload of 10,000 groups must not search per group.
    pub fn group_changes<'a>(&self, other: &'a NodeConfig) -> Vec<(&str, Option<(&'a GroupConfig, GroupChange)>)> {
        let their_groups: HashMap<&str, &GroupConfig> = other.groups.iter().map(|g| (g.name.as_str(), g)).collect();
        let ours_by_name: HashMap<&str, &ResourceConfig> =
            self.resources.iter().map(|r| (r.name.as_str(), r)).collect();
        let theirs_by_name: HashMap<&str, &ResourceConfig> =
            other.resources.iter().map(|r| (r.name.as_str(), r)).collect();
        let unplaced_group = |g: &GroupConfig| GroupConfig { defined_at: String::new(), ..g.clone() };
        let unplaced =
            |r: Option<&&ResourceConfig>| r.map(|r| ResourceConfig { defined_at: String::new(), ..(*r).clone() });
        self.groups
            .iter()
            .map(|ours| {
                let change = their_groups.get(ours.name.as_str()).map(|theirs| {
                    let members_differ = ours.resources != theirs.resources
                        || ours.resources.iter().any(|member| {
                            unplaced(ours_by_name.get(member.as_str())) != unplaced(theirs_by_name.get(member.as_str()))
                        });
                    let change = if members_differ {
                        GroupChange::Members
                    } else if unplaced_group(ours) != unplaced_group(theirs) {
                        GroupChange::Settings
                    } else {
                        GroupChange::Same
                    };
                    (*theirs, change)
                });
                (ours.name.as_str(), change)
            })
            .collect()
    }

    /// The resource named `name`.
    pub fn resource(&self, name: &str) -> Option<&ResourceConfig> {
        self.resources.iter().find(|resource| resource.name == name)
    }

    /// The group `resource` belongs to.
    pub fn group_of(&self, resource: &str) -> Option<&GroupConfig> {
        self.groups.iter().find(|group| group.resources.iter().any(|r| r == resource))
    }
}

fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|e| at(file, format!("cannot read the file: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|error| {
        let location = match error.span() {
            Some(span) => line_column(file, text, span.start),
            None => file.display().to_string(),
        };
        ConfigError { location, message: error.message().trim().to_string() }
    })
}

fn line_column(file: &Path, text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    format!("{}:{line}:{column}", file.display())
}

fn at(file: &Path, message: String) -> ConfigError {
    ConfigError { location: file.display().to_string(), message }
}

#[allow(clippy::too_many_arguments)]
fn collect(
    file: &Path,
    text: &str,
    raw_resources: Vec<RawResource>,
    raw_groups: Vec<RawGroup>,
    base: &Path,
    resources: &mut Vec<ResourceConfig>,
    groups: &mut Vec<GroupConfig>,
) -> Result<(), ConfigError> {
    for raw in raw_resources {
        let defined_at = line_column(file, text, raw.name.span().start);
        let name = raw.name.into_inner();
        let fail = |message: String| ConfigError { location: format!("{defined_at}: resource `{name}`"), message };
        let grants = raw.grants.unwrap_or_default();
        let directories = grants
            .directories
            .into_iter()
            .map(|dir| DirectoryGrant {
                host_path: base.join(dir.host),
                guest_path: dir.guest,
                read_only: dir.read_only,
            })
            .collect();
        let network = grants
            .network
            .iter()
            .map(|addr| {
                addr.parse::<SocketAddr>().map_err(|_| {
                    fail(format!(
                        "grants.network: `{addr}` is not IP:PORT (names are not resolved), e.g. 127.0.0.1:8080"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let programs = grants.programs.into_iter().map(PathBuf::from).collect();
        let mut properties = Vec::with_capacity(raw.properties.len());
        let mut secret_properties = Vec::new();
        for (key, value) in raw.properties {
            let text = match value {
                PropertyValue::Secret { file: secret } => {
                    secret_properties.push(key.clone());
                    read_secret(&base.join(secret)).map_err(|message| fail(format!("properties.{key}: {message}")))?
                }
                value => value.into_text(),
            };
            properties.push((key, text));
        }
        resources.push(ResourceConfig {
            type_name: raw.type_name,
            properties,
            secret_properties,
            grants: Grants { programs, directories, network },
            depends_on: raw.depends_on,
            timing: TimingOverrides {
                looks_alive_interval: raw.looks_alive_interval.map(|d| d.0),
                is_alive_interval: raw.is_alive_interval.map(|d| d.0),
                pending_timeout: raw.pending_timeout.map(|d| d.0),
                probe_timeout: raw.probe_timeout.map(|d| d.0),
            },
            memory_limit_mib: raw.memory_limit_mib,
            separate_monitor: raw.separate_monitor,
            defined_at,
            name,
        });
    }
    for raw in raw_groups {
        let defined_at = line_column(file, text, raw.name.span().start);
        let name = raw.name.into_inner();
        let defaults = Policy::default();
        let policy = raw.policy.unwrap_or_default();
        let failback = match raw.failback.as_deref() {
            None => Failback::Never,
            Some(text) => Failback::parse(text).ok_or_else(|| ConfigError {
                location: format!("{defined_at}: group `{name}`"),
                message: format!(
                    "failback: `{text}` is not \"never\", \"immediate\" or a window such as \"02:00-04:00\" (UTC)"
                ),
            })?,
        };
        groups.push(GroupConfig {
            name,
            defined_at,
            resources: raw.resources,
            autostart: raw.autostart.unwrap_or(true),
            preferred_owners: raw.preferred_owners,
            possible_owners: raw.possible_owners,
            failback,
            policy: Policy {
                restart_threshold: policy.restart_threshold.unwrap_or(defaults.restart_threshold),
                restart_period: policy.restart_period.map_or(defaults.restart_period, |d| d.0),
                restart_delay: policy.restart_delay.map_or(defaults.restart_delay, |d| d.0),
                restart_backoff: policy.restart_backoff.unwrap_or(defaults.restart_backoff),
                max_restart_delay: policy.max_restart_delay.map_or(defaults.max_restart_delay, |d| d.0),
                retry_period: policy.retry_period.map_or(defaults.retry_period, |d| d.0),
                failover_threshold: policy.failover_threshold.or(defaults.failover_threshold),
                failover_period: policy.failover_period.map_or(defaults.failover_period, |d| d.0),
            },
        });
    }
    Ok(())
}

/// Names unique, every resource in exactly one group, dependencies known,
/// inside the group and acyclic.
fn check_structure(config: &NodeConfig) -> Result<(), ConfigError> {
    let file = config.file.display().to_string();
    if config.max_instances_per_worker == Some(0) {
        return Err(ConfigError {
            location: format!("{file}: [node]"),
            message: "max_instances_per_worker: must be at least 1; leave it out to size workers by vm.max_map_count"
                .into(),
        });
    }
    let mut seen = HashSet::new();
    for resource in &config.resources {
        if !seen.insert(resource.name.as_str()) {
            return Err(resource_error(resource, "the name is used twice; give each resource its own name".into()));
        }
        if resource.separate_monitor && worker_names::is_shared_worker_name(&resource.name) {
            return Err(resource_error(
                resource,
                "separate_monitor: its worker would be named like the shared workers (`shared`, `shared-2`, ...); \
                 rename the resource"
                    .into(),
            ));
        }
    }
    let mut group_names = HashSet::new();
    for group in &config.groups {
        if !group_names.insert(group.name.as_str()) {
            return Err(ConfigError {
                location: format!("{}: group `{}`", group.defined_at, group.name),
                message: "the name is used twice; give each group its own name".into(),
            });
        }
    }
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for group in &config.groups {
        for member in &group.resources {
            if config.resource(member).is_none() {
                return Err(ConfigError {
                    location: format!("{}: group `{}`", group.defined_at, group.name),
                    message: format!("resources: unknown resource `{member}`; define it in a [[resource]] table"),
                });
            }
            if let Some(other) = owner.insert(member, &group.name) {
                return Err(ConfigError {
                    location: format!("{}: group `{}`", group.defined_at, group.name),
                    message: format!("resources: `{member}` is already in group `{other}`; a resource has one group"),
                });
            }
        }
    }
    for resource in &config.resources {
        let Some(group) = owner.get(resource.name.as_str()) else {
            return Err(resource_error(resource, "it is in no group; list it in a [[group]]'s resources".into()));
        };
        for dependency in &resource.depends_on {
            match owner.get(dependency.as_str()) {
                None => {
                    return Err(resource_error(resource, format!("depends_on: unknown resource `{dependency}`")));
                }
                Some(other) if other != group => {
                    return Err(resource_error(
                        resource,
                        format!(
                            "depends_on: `{dependency}` is in group `{other}`, not `{group}`; dependencies stay inside a group"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    if let Some(cycle) = find_cycle(config) {
        let first = config.resource(&cycle[0]).map(|r| r.defined_at.clone()).unwrap_or(file);
        return Err(ConfigError {
            location: format!("{first}: resource `{}`", cycle[0]),
            message: format!("depends_on: dependency cycle {}; remove one of these dependencies", cycle.join(" -> ")),
        });
    }
    Ok(())
}

fn resource_error(resource: &ResourceConfig, message: String) -> ConfigError {
    ConfigError { location: format!("{}: resource `{}`", resource.defined_at, resource.name), message }
}

/// A dependency cycle as the names along it, first repeated at the end.
fn find_cycle(config: &NodeConfig) -> Option<Vec<String>> {
    let edges: BTreeMap<&str, &[String]> =
        config.resources.iter().map(|r| (r.name.as_str(), r.depends_on.as_slice())).collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, &'a [String]>,
        marks: &mut HashMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = path.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|n| n.to_string()).collect();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node, Mark::Visiting);
        path.push(node);
        for next in edges.get(node).copied().unwrap_or(&[]) {
            if let Some(cycle) = visit(next.as_str(), edges, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = HashMap::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, &edges, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

/// A duration written as text (`500ms`, `5s`, `15m`, `1h`).
#[derive(Debug, Clone, Copy)]
struct TextDuration(Duration);

impl<'de> Deserialize<'de> for TextDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(TextDuration).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration ({e}); write e.g. 500ms, 5s, 15m or 1h"))
        })
    }
}

/// A property value: text, or a number or boolean written bare, or a
/// secret kept in a file of the node's (`{ file = "..." }`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PropertyValue {
    Text(String),
    Integer(i64),
    Boolean(bool),
    List(Vec<String>),
    Secret { file: PathBuf },
}

impl PropertyValue {
    fn into_text(self) -> String {
        match self {
            PropertyValue::Text(text) => text,
            PropertyValue::Integer(number) => number.to_string(),
            PropertyValue::Boolean(flag) => flag.to_string(),
            PropertyValue::List(items) => items.join(","),
            PropertyValue::Secret { file } => file.display().to_string(),
        }
    }
}

/// The most bytes a secret file may hold: a password or a key, not data.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// What the API and the console show in place of a secret's value.
pub const SECRET_SHOWN_AS: &str = "(secret)";

/// A secret property's value: the file's text, less one final newline
/// (editors add one; a password has none).
fn read_secret(path: &Path) -> Result<String, String> {
    let what = |error: String| format!("cannot read the secret file {}: {error}", path.display());
    let metadata = std::fs::metadata(path).map_err(|e| what(e.to_string()))?;
    if !metadata.is_file() || metadata.len() > MAX_SECRET_BYTES {
        return Err(what("not a regular file of at most 64 KiB".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| what(format!("{e} (a secret is UTF-8 text)")))?;
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    Ok(text.to_string())
}

impl ResourceConfig {
    /// Its properties as anyone may see them: secrets hidden.
    pub fn shown_properties(&self) -> Vec<(String, String)> {
        self.properties
            .iter()
            .map(|(key, value)| {
                let shown = if self.secret_properties.contains(key) { SECRET_SHOWN_AS } else { value.as_str() };
                (key.clone(), shown.to_string())
            })
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodeFile {
    node: RawNode,
    cluster: Option<RawCluster>,
    #[serde(default)]
    resource: Vec<RawResource>,
    #[serde(default)]
    group: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIncludedFile {
    #[serde(default)]
    resource: Vec<RawResource>,
    #[serde(default)]
    group: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    plugin_dir: PathBuf,
    data_dir: PathBuf,
    api: Option<SocketAddr>,
    api_tokens: Option<PathBuf>,
    api_tls: Option<RawApiTls>,
    #[serde(default)]
    api_metrics_open: bool,
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    #[serde(default)]
    log_format: LogFormat,
    #[serde(default)]
    leave_running_on_stop: bool,
    worker_deadlock_timeout: Option<TextDuration>,
    max_instances_per_worker: Option<u32>,
    include: Option<PathBuf>,
}

/// How long a silent monitor worker is given before it is killed: far above
/// any ping's round trip, short enough that a wedged worker is replaced
/// well before probes would call its resources failed.
pub const DEFAULT_WORKER_DEADLOCK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiTls {
    cert: PathBuf,
    key: PathBuf,
}

/// The API's listeners and who may use them, checked: a TCP listener needs
/// tokens, and TLS unless it listens on loopback only.
fn api_access(file: &Path, base: &Path, node: &RawNode) -> Result<ApiAccess, ConfigError> {
    let fail = |message: String| ConfigError { location: format!("{}: [node]", file.display()), message };
    let tokens = node.api_tokens.as_ref().map(|tokens| tokens::ApiTokens::load(&base.join(tokens))).transpose()?;
    let tls = match &node.api_tls {
        Some(tls) => Some(ApiTls {
            cert: read_pem(file, base, "node.api_tls", "cert", &tls.cert)?,
            key: read_pem(file, base, "node.api_tls", "key", &tls.key)?,
        }),
        None => None,
    };
    if let Some(api) = node.api {
        if tokens.is_none() {
            return Err(fail(format!(
                "api: the TCP listener {api} needs api_tokens, a file of hashed tokens every request must present; \
                 make one with `steward token create --file FILE --name NAME --role operate`, or leave api out and \
                 use the Unix socket"
            )));
        }
        if tls.is_none() && !api.ip().is_loopback() {
            return Err(fail(format!(
                "api: {api} is reachable from other machines, so it needs api_tls = {{ cert = \"FILE\", key = \"FILE\" }}; \
                 or listen on 127.0.0.1 only"
            )));
        }
    }
    if let Some(group) = &node.socket_group
        && (group.is_empty() || group.contains(['/', ':', '\n']))
    {
        return Err(fail(format!("socket_group: `{group}` is not a group name")));
    }
    let data_dir = base.join(&node.data_dir);
    Ok(ApiAccess {
        tcp: node.api,
        tokens,
        tls,
        metrics_open: node.api_metrics_open,
        socket: node.socket.as_ref().map_or_else(|| data_dir.join(API_SOCKET), |socket| base.join(socket)),
        socket_group: node.socket_group.clone(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    name: Spanned<String>,
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default)]
    properties: BTreeMap<String, PropertyValue>,
    grants: Option<RawGrants>,
    #[serde(default)]
    depends_on: Vec<String>,
    looks_alive_interval: Option<TextDuration>,
    is_alive_interval: Option<TextDuration>,
    pending_timeout: Option<TextDuration>,
    probe_timeout: Option<TextDuration>,
    memory_limit_mib: Option<usize>,
    #[serde(default)]
    separate_monitor: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    #[serde(default)]
    programs: Vec<String>,
    #[serde(default)]
    directories: Vec<RawDirectory>,
    #[serde(default)]
    network: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    host: PathBuf,
    guest: String,
    #[serde(default)]
    read_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Spanned<String>,
    resources: Vec<String>,
    policy: Option<RawPolicy>,
    autostart: Option<bool>,
    #[serde(default)]
    preferred_owners: Vec<String>,
    #[serde(default)]
    possible_owners: Vec<String>,
    failback: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    endpoints: Vec<String>,
    lease_ttl: Option<TextDuration>,
    safety_margin: Option<TextDuration>,
    request_timeout: Option<TextDuration>,
    on_stop: Option<OnStop>,
    tls: Option<RawClusterTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClusterTls {
    ca: PathBuf,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// The `[cluster]` table, checked: a name, endpoints whose scheme says
/// whether TLS is used, readable TLS files, and a lease etcd grants.
fn cluster_settings(file: &Path, base: &Path, raw: RawCluster) -> Result<ClusterSettings, ConfigError> {
    let fail = |message: String| ConfigError { location: format!("{}: [cluster]", file.display()), message };
    if raw.name.is_empty() || !raw.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(fail(format!("name: `{}` is not a cluster name; use letters, digits, `-` and `_`", raw.name)));
    }
    if raw.endpoints.is_empty() {
        return Err(fail("endpoints: name at least one etcd client URL, for example \"http://10.0.0.1:2379\"".into()));
    }
    let scheme = if raw.tls.is_some() { "https" } else { "http" };
    if let Some(bad) = raw.endpoints.iter().find(|e| !(e.starts_with("http://") || e.starts_with("https://"))) {
        return Err(fail(format!("endpoints: `{bad}` is not a URL; write it as {scheme}://HOST:PORT")));
    }
    // etcd serves its clients either plain or over TLS, and the node
    // speaks to every member alike: the scheme must agree with `tls`.
    match (&raw.tls, raw.endpoints.iter().find(|e| !e.starts_with(&format!("{scheme}://")))) {
        (Some(_), Some(plain)) => {
            return Err(fail(format!(
                "endpoints: `{plain}` is plain http, but tls is set; write it as https://HOST:PORT (etcd's TLS client port), \
                 or remove tls to talk to etcd unencrypted"
            )));
        }
        (None, Some(secure)) => {
            return Err(fail(format!(
                "endpoints: `{secure}` is https, but [cluster] has no tls; add tls = {{ ca = \"FILE\" }} naming the PEM \
                 certificate of the CA that signed etcd's certificates (with cert and key if etcd checks client \
                 certificates), or write it as http://HOST:PORT"
            )));
        }
        (_, None) => {}
    }
    let tls = raw.tls.map(|tls| cluster_tls(file, base, tls)).transpose()?;
    let lease_ttl = raw.lease_ttl.map_or(DEFAULT_LEASE_TTL, |d| d.0);
    if lease_ttl < MIN_LEASE_TTL || lease_ttl.subsec_nanos() != 0 {
        return Err(fail(format!(
            "lease_ttl: {} ms is not a lease etcd grants: it counts whole seconds, at least 1; write \"1s\", \"2s\", ...",
            lease_ttl.as_millis()
        )));
    }
    let safety_margin = raw.safety_margin.map_or(Duration::from_millis(250), |d| d.0);
    if safety_margin >= lease_ttl {
        return Err(fail("safety_margin: must be shorter than lease_ttl".into()));
    }
    Ok(ClusterSettings {
        name: raw.name,
        endpoints: raw.endpoints,
        lease_ttl,
        safety_margin,
        request_timeout: raw.request_timeout.map_or(Duration::from_secs(1), |d| d.0),
        on_stop: raw.on_stop.unwrap_or_default(),
        tls,
    })
}

/// `[cluster] tls`, its files read: a CA, and a client certificate with its
/// key or neither.
fn cluster_tls(file: &Path, base: &Path, raw: RawClusterTls) -> Result<ClusterTls, ConfigError> {
    let ca = read_pem(file, base, "cluster.tls", "ca", &raw.ca)?;
    let client = match (raw.cert, raw.key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(ClientCertificate {
            cert: read_pem(file, base, "cluster.tls", "cert", &cert)?,
            key: read_pem(file, base, "cluster.tls", "key", &key)?,
        }),
        (cert, _) => {
            let (given, missing) = if cert.is_some() { ("cert", "key") } else { ("key", "cert") };
            return Err(ConfigError {
                location: format!("{}: [cluster]", file.display()),
                message: format!(
                    "tls: {given} without {missing}; a client certificate goes with its private key: give both \
                     cert and key (where etcd checks client certificates), or neither"
                ),
            });
        }
    };
    Ok(ClusterTls { ca, client })
}

/// Reads `cluster.tls.<field>`, relative to the node file's directory, and
/// checks it holds the PEM block the field needs: a certificate for `ca`
/// and `cert`, a private key for `key` (so swapped files are named here,
/// not found out in a handshake).
fn read_pem(file: &Path, base: &Path, table: &str, field: &str, path: &Path) -> Result<PemFile, ConfigError> {
    let path = base.join(path);
    const CERTIFICATE: (&str, &str) = ("certificate (`-----BEGIN CERTIFICATE-----`)", "-----BEGIN CERTIFICATE-----");
    const KEY: (&str, &str) = ("private key (`-----BEGIN ... PRIVATE KEY-----`)", "PRIVATE KEY-----");
    let (wanted, (block, marker)) = match (table, field) {
        ("node.api_tls", "key") => ("the private key of the API's certificate", KEY),
        ("node.api_tls", _) => ("the API's certificate (and its chain)", CERTIFICATE),
        (_, "key") => ("the private key of the node's client certificate", KEY),
        (_, "cert") => ("the node's client certificate", CERTIFICATE),
        _ => ("the certificate of the CA that signed etcd's server certificates", CERTIFICATE),
    };
    let pem = std::fs::read(&path).map_err(|e| {
        at(file, format!("{table}.{field}: cannot read {}: {e}; give the PEM file of {wanted}", path.display()))
    })?;
    if !String::from_utf8_lossy(&pem).contains(marker) {
        return Err(at(
            file,
            format!("{table}.{field}: {} holds no PEM {block}; give the PEM file of {wanted}", path.display()),
        ));
    }
    Ok(PemFile { path, pem })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    restart_threshold: Option<u32>,
    restart_period: Option<TextDuration>,
    restart_delay: Option<TextDuration>,
    restart_backoff: Option<f64>,
    max_restart_delay: Option<TextDuration>,
    retry_period: Option<TextDuration>,
    failover_threshold: Option<u32>,
    failover_period: Option<TextDuration>,
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::Failback;

    #[test]
    fn failback_windows_are_read_and_may_wrap_past_midnight() {
        assert_eq!(Failback::parse("never"), Some(Failback::Never));
        assert_eq!(Failback::parse("immediate"), Some(Failback::Immediate));
        let night = Failback::parse("23:30-01:15").expect("a window");
        assert_eq!(night, Failback::Window { from: 23 * 60 + 30, to: 75 });
        assert!(night.allows(23 * 60 + 45) && night.allows(0) && night.allows(74));
        assert!(!night.allows(75) && !night.allows(12 * 60));
        let day = Failback::parse("02:00-04:00").expect("a window");
        assert!(day.allows(120) && !day.allows(240) && !day.allows(119));
        for bad in ["sometimes", "24:00-01:00", "02:00", "2-4", "02:60-03:00"] {
            assert_eq!(Failback::parse(bad), None, "{bad}");
        }
        assert!(!Failback::Never.allows(0));
    }

    /// A scratch directory of this test process, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("steward-config-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a scratch directory");
            Scratch(dir)
        }

        /// Writes a node file with `cluster` as its `[cluster]` table; its path.
        fn node_file(&self, cluster: &str) -> PathBuf {
            let text = format!(
                "[node]\nname = \"n\"\nplugin_dir = \"p\"\ndata_dir = \"d\"\n\n[cluster]\nname = \"c\"\n{cluster}\n"
            );
            let file = self.0.join("steward.toml");
            std::fs::write(&file, text).expect("a node file");
            file
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).expect("a scratch file");
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn refusal(file: &Path) -> String {
        match super::load(file) {
            Ok(config) => panic!("{} loads: {:?}", file.display(), config.cluster),
            Err(error) => error.to_string(),
        }
    }

    const CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n";

    #[test]
    fn a_secret_property_is_read_from_its_file_and_shown_to_nobody() {
        let scratch = Scratch::new("secret");
        scratch.write("db.pass", "hunter2\n");
        let node = |password: &str| {
            let text = format!(
                "[node]\nname = \"n\"\nplugin_dir = \"p\"\ndata_dir = \"d\"\n\n[[resource]]\nname = \"db\"\n\
                 type = \"t\"\nproperties = {{ user = \"app\", password = {password} }}\n\n[[group]]\nname = \"g\"\n\
                 resources = [\"db\"]\n"
            );
            let file = scratch.0.join("steward.toml");
            std::fs::write(&file, text).expect("a node file");
            super::load(&file)
        };
        let config = node("{ file = \"db.pass\" }").expect("the node file loads");
        let db = config.resource("db").expect("the resource");
        let value = |key: &str, of: &[(String, String)]| of.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        assert_eq!(
            value("password", &db.properties).as_deref(),
            Some("hunter2"),
            "the plugin gets it, less the newline"
        );
        assert_eq!(value("password", &db.shown_properties()).as_deref(), Some(super::SECRET_SHOWN_AS));
        assert_eq!(value("user", &db.shown_properties()).as_deref(), Some("app"));
        assert!(!format!("{:?}", db.shown_properties()).contains("hunter2"));

        let error = node("{ file = \"missing.pass\" }").expect_err("a missing secret file is refused");
        let text = error.to_string();
        assert!(
            text.contains("resource `db`") && text.contains("properties.password") && text.contains("missing.pass"),
            "the error names the resource, the property and the file: {text}"
        );
    }

    #[test]
    fn cluster_tls_files_are_read_relative_to_the_node_file() {
        let scratch = Scratch::new("tls-read");
        scratch.write("ca.pem", CERTIFICATE);
        scratch.write("client.pem", CERTIFICATE);
        let key = scratch.write("client.key", KEY);
        let file = scratch.node_file(&format!(
            "endpoints = [\"https://127.0.0.1:2379\"]\ntls = {{ ca = \"ca.pem\", cert = \"client.pem\", key = \"{}\" }}",
            key.display()
        ));
        let config = super::load(&file).expect("the node file loads");
        let tls = config.cluster.and_then(|cluster| cluster.tls).expect("tls is read");
        assert_eq!(tls.ca.path, scratch.0.join("ca.pem"));
        assert_eq!(tls.ca.pem, CERTIFICATE.as_bytes());
        let client = tls.client.expect("a client certificate");
        assert!(!format!("{:?}", client.key).contains("PRIVATE"), "Debug shows no key text");
        assert_eq!((client.cert.path, client.key.path), (scratch.0.join("client.pem"), key));

        // Without cert and key: only the server is checked.
        let file = scratch.node_file("endpoints = [\"https://127.0.0.1:2379\"]\ntls = { ca = \"ca.pem\" }");
        let tls = super::load(&file).expect("loads").cluster.and_then(|cluster| cluster.tls).expect("tls");
        assert!(tls.client.is_none());
    }

    #[test]
    fn cluster_tls_problems_name_the_file_the_field_and_what_to_do() {
        let scratch = Scratch::new("tls-refused");
        scratch.write("ca.pem", CERTIFICATE);
        scratch.write("client.pem", CERTIFICATE);
        let https = "endpoints = [\"https://127.0.0.1:2379\"]";

        let file = scratch.node_file(&format!("{https}\ntls = {{ ca = \"missing.pem\" }}"));
        let error = refusal(&file);
        let missing = scratch.0.join("missing.pem");
        assert!(error.starts_with(&file.display().to_string()), "{error}");
        assert!(error.contains("cluster.tls.ca") && error.contains(&missing.display().to_string()), "{error}");

        let file = scratch.node_file(&format!("{https}\ntls = {{ ca = \"ca.pem\", cert = \"client.pem\" }}"));
        let error = refusal(&file);
        assert!(error.contains("[cluster]") && error.contains("cert without key"), "{error}");

        // A certificate given as the key (files swapped) is named here.
        let file = scratch
            .node_file(&format!("{https}\ntls = {{ ca = \"ca.pem\", cert = \"client.pem\", key = \"client.pem\" }}"));
        let error = refusal(&file);
        assert!(error.contains("cluster.tls.key") && error.contains("no PEM private key"), "{error}");

        let file = scratch.node_file("endpoints = [\"http://127.0.0.1:2379\"]\ntls = { ca = \"ca.pem\" }");
        let error = refusal(&file);
        assert!(error.contains("`http://127.0.0.1:2379` is plain http") && error.contains("https://"), "{error}");

        let file = scratch.node_file(https);
        let error = refusal(&file);
        assert!(error.contains("is https, but [cluster] has no tls") && error.contains("tls = { ca"), "{error}");
    }
}
