//! The API's JSON documents, the one definition both sides use: the daemon
//! serializes them from the node's view, and the CLI reads them back. The
//! node's own types carry no serde derives, so a field renamed inside the
//! node cannot change what a client sees; a change here is a change of the
//! API (and `tests/all/daemon.rs` reads these documents as a client would).
//!
//! States and failure kinds travel as their kebab-case names (`online`,
//! `online-pending`, `deadline`, ...), the same words the event stream,
//! `/metrics` and the CLI's tables use.

use serde::{Deserialize, Serialize};

/// `GET /v1/status`: the node, its groups, resources and workers, and the
/// most recent events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The node's name.
    pub node: String,
    /// `loading-plugins` while the daemon starts, then `running`, then `stopping`.
    pub phase: String,
    /// Every group.
    pub groups: Vec<Group>,
    /// Every resource.
    pub resources: Vec<Resource>,
    /// Every monitor worker.
    pub workers: Vec<Worker>,
    /// The latest events, oldest first.
    pub recent_events: Vec<Event>,
    /// The cluster, when the node is one of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
}

/// One resource (`GET /v1/resources/{name}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resource {
    /// Its name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Its group.
    pub group: String,
    /// Its state: `unknown`, `offline`, `online-pending`, `online`,
    /// `offline-pending` or `failed`.
    pub state: String,
    /// Why it is in that state.
    pub reason: String,
    /// The kind of its last failure, if it failed since the daemon started.
    pub last_failure_kind: Option<String>,
    /// The plugin's last progress report while an online or offline is pending.
    pub progress: Option<String>,
    /// What it depends on.
    pub depends_on: Vec<String>,
    /// Restarts counted in the current restart period.
    pub restarts_in_period: u32,
    /// Restarts over its life on this node.
    pub restarts_total: u64,
    /// Failures over its life on this node.
    pub failures_total: u64,
    /// Processes it runs now.
    pub pids: Vec<u32>,
    /// The monitor worker hosting it: `shared`, or its own name.
    pub worker: String,
    /// The sha256 of the plugin version its instance runs.
    pub plugin_hash: String,
    /// Its properties as configured, as text, by name (a property left to
    /// its default is absent; `GET /v1/plugins/{type}` says what it is).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

/// One group (`GET /v1/groups/{name}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// `online`, `offline`, `pending`, `partial` or `failed`.
    pub state: String,
    /// Why it failed, when it did.
    pub reason: String,
    /// Whether an operator wants it online.
    pub wanted_online: bool,
    /// The fencing token of this node's ownership, while it owns the group.
    pub fencing_token: Option<u64>,
    /// Its resources.
    pub resources: Vec<String>,
}

/// One plugin file (`GET /v1/plugins`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plugin {
    /// The file.
    pub file: String,
    /// The type's name, when it loaded.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// The type's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The sha256 of the file loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Why it did not load, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One monitor worker (`GET /v1/workers`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Worker {
    /// Its name: `shared`, `shared-2`, ..., or the resource it serves alone.
    pub name: String,
    /// Its pid now (0 while it is being started).
    pub pid: u32,
    /// How many times it was started again after a loss.
    pub restarts: u64,
    /// The resources it hosts.
    pub resources: Vec<String>,
    /// Requests answered by a reply (opens and calls) sent to its current
    /// process: what the node's work costs in round trips.
    pub round_trips: u64,
}

/// Something that happened on the node: an item of `GET /v1/events` (the
/// SSE event's name is its `kind`) and of the status's `recent_events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Increasing number, from 1 at the daemon's start.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Monotonic time since the daemon started, in microseconds.
    pub uptime_us: u64,
    /// `transition`, `group`, `signalled-failure`, `restart`, `progress`, ...
    pub kind: String,
    /// The resource, when about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The group.
    pub group: String,
    /// The state before, for transitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The state after, for transitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The kind of failure, for a transition to `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_kind: Option<String>,
    /// Why.
    pub reason: String,
    /// Who did it, for an operator's action: the token's name, or
    /// `uid N` on the Unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `GET /v1/whoami`: who the API takes the caller for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The token's name, or `uid N` on the Unix socket.
    pub name: String,
    /// `read` or `operate`.
    pub role: String,
}

/// `POST /v1/plugins/{type}/upgrade`: what the upgrade did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// The type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The version now current.
    pub version: String,
    /// Its sha256.
    pub hash: String,
    /// Online resources being switched now.
    pub switching: Vec<String>,
    /// Resources not online, which switch when they next come online.
    pub at_next_online: Vec<String>,
    /// Resources already on it.
    pub current: Vec<String>,
}

/// `POST /v1/reload`: what the reload did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Groups added.
    pub added_groups: Vec<String>,
    /// Resources added.
    pub added_resources: Vec<String>,
    /// Groups no longer configured: taken offline, then removed.
    #[serde(default)]
    pub removed_groups: Vec<String>,
    /// Groups defined differently now: taken offline, removed, and added
    /// again as they are now defined.
    #[serde(default)]
    pub replaced_groups: Vec<String>,
    /// Groups with other settings only: they take them where they are.
    #[serde(default)]
    pub retuned_groups: Vec<String>,
}

/// `GET /v1/groups/{name}/why`: one decision a node made for the group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    /// When, in Unix milliseconds.
    pub unix_ms: u64,
    /// The node that decided.
    pub node: String,
    /// The group.
    pub group: String,
    /// `restart`, `group-failed`, `acquired`, `lost-race`, `failover`,
    /// `failover-exhausted`, `move`, `failback`, `lost`, `fenced`.
    pub kind: String,
    /// The rule applied.
    pub rule: String,
    /// What the rule was given, one line each (candidate nodes with their
    /// verdicts, failures counted, ...).
    pub inputs: Vec<String>,
    /// What came of it.
    pub outcome: String,
}

/// One file of a shared configuration, as applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigFile {
    /// The name it was applied under (the operator's path).
    pub name: String,
    /// Its text.
    pub text: String,
}

/// `POST /v1/config`: files of groups and resources to check and apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// The files, in order.
    pub files: Vec<ConfigFile>,
}

/// `POST /v1/config`: what was applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyReport {
    /// The shared configuration's new revision.
    pub revision: i64,
    /// Its groups.
    pub groups: Vec<String>,
    /// How many resources it has.
    pub resources: usize,
}

/// `GET /v1/config`: where this node's groups and resources come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// `shared` (applied to the cluster) or `node-file`.
    pub source: String,
    /// The node file.
    pub node_file: String,
    /// The shared configuration's revision, when one was applied.
    pub revision: Option<i64>,
    /// The node that applied it.
    pub applied_by: Option<String>,
    /// When, in Unix milliseconds.
    pub applied_at_ms: Option<u64>,
    /// The applied files (empty for `node-file`).
    pub files: Vec<ConfigFile>,
}

/// The answer to an accepted online or offline request (202).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    /// What was accepted, for example "group `web` online".
    pub accepted: String,
}

/// Every error answer (4xx, 5xx).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What is wrong and what to do.
    pub error: String,
    /// The field or path segment at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `GET /v1/cluster`, and `cluster` in the status: the cluster as this
/// node sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    /// The cluster's name.
    pub name: String,
    /// The node answering.
    pub node: String,
    /// Its lease: `healthy`, `quorum-lost` or `expired` (rejoining).
    pub lease: String,
    /// How long its lease lives by its own estimate, in milliseconds.
    pub lease_remaining_ms: Option<u64>,
    /// The round trip of its last acknowledged keepalive, in milliseconds.
    pub keepalive_round_trip_ms: Option<f64>,
    /// The nodes holding a lease.
    pub nodes: Vec<ClusterNode>,
    /// Every owned group.
    pub owners: Vec<GroupOwner>,
}

/// A node holding its lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Its name.
    pub name: String,
    /// Its API address.
    pub api: String,
    /// The `steward` version it runs.
    pub version: String,
    /// The plugin types it can run, with their version hashes (empty until
    /// it loaded its plugin directory).
    #[serde(default)]
    pub plugins: std::collections::BTreeMap<String, String>,
}

/// A group's owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupOwner {
    /// The group.
    pub group: String,
    /// The node that owns it.
    pub node: String,
    /// The fencing token of that ownership.
    pub fencing_token: u64,
}

/// `GET /v1/plugins/{type}`: what a loaded type says about itself, the
/// metadata the console draws a resource's property page from (and
/// `steward plugin check` prints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginType {
    /// The type's name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The type's own version.
    pub version: String,
    /// One paragraph for operators.
    pub description: String,
    /// The file it was loaded from.
    pub file: String,
    /// The sha256 of that file.
    pub hash: String,
    /// The capabilities it needs granted: `process`, `filesystem`, `network`.
    pub capabilities: Vec<String>,
    /// The timing it proposes; the resource's configuration overrides it.
    pub timing: PluginTiming,
    /// Every property it accepts, in its own order.
    pub properties: Vec<PropertySpec>,
}

/// The probe intervals and deadlines a type proposes, in milliseconds; 0
/// means the host's default.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginTiming {
    /// How often `looks-alive` runs.
    pub looks_alive_interval_ms: u32,
    /// How often `is-alive` runs.
    pub is_alive_interval_ms: u32,
    /// The longest `online` or `offline` may take.
    pub pending_timeout_ms: u32,
    /// The longest one probe may take.
    pub probe_timeout_ms: u32,
}

/// One property a type accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PropertySpec {
    /// Its name in the configuration.
    pub name: String,
    /// How its value is read: `text`, `integer`, `boolean` or `text-list`.
    pub kind: String,
    /// Whether a resource must set it.
    pub required: bool,
    /// The value used when a resource does not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// One sentence for operators.
    pub description: String,
}

/// `GET /v1/resources/{name}/history`: the resource's probes and restarts
/// over the last hour, one sample a minute, as the node's sampler took
/// them from its own counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceHistory {
    /// The resource.
    pub resource: String,
    /// How long each sample covers, in milliseconds (one minute).
    pub period_ms: u64,
    /// The samples kept, oldest first (at most an hour's).
    pub samples: Vec<HistorySample>,
    /// The minute under way: from the last sample until this answer.
    pub current: HistorySample,
}

/// What one resource did in one window of time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistorySample {
    /// The window's end, in Unix milliseconds.
    pub unix_ms: u64,
    /// How long the window was, in milliseconds.
    pub window_ms: u64,
    /// Healthy probes run in the window.
    pub probes: u64,
    /// Their mean latency in milliseconds, when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_probe_ms: Option<f64>,
    /// Restarts in the window.
    pub restarts: u64,
    /// Restarts over the resource's life on this node, at the window's end.
    pub restarts_total: u64,
}
