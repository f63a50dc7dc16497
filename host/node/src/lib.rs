//! Steward's node: the loop that carries out what the policy engine
//! decides, the state store, the plugin directory and the ownership seam.
//! It names no wasmtime type: sandboxes live in the monitor workers, which
//! it drives through `steward_monitor::worker`.
//!
//! One task owns the [`PolicyEngine`]; it receives [`Input`]s on a channel
//! (operator requests from the API, call results, timers) and events from
//! the monitor workers (failed probes, signalled failures, lost workers),
//! and turns the engine's [`Action`]s into calls on the workers' instances,
//! probe schedules, timers, state-store writes and published events. Calls
//! run in tasks of their own, so a slow resource never holds up the loop or
//! another resource; healthy probes run inside the workers and cost the
//! loop nothing. Group ownership is decided in one place, [`Ownership`], so
//! a cluster backend can take it over later. A [`Supervisor`] (systemd, as
//! the daemon wires it) hears the node's status and gets heartbeats from
//! the loop itself.
//!
//! Start-up serves the API before any plugin is compiled (a Python plugin
//! takes tens of seconds): [`Node::start`] only builds the view, where each
//! resource waits for its type, and [`Node::run`] watches the plugin
//! directory *before* it scans it, so a file published while the first
//! plugins compile is seen by the scan, by the watcher, or by both (a
//! file loaded twice with the same bytes changes nothing).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc};

use crate::plugin_dir::is_plugin_file;
use crate::state::{ResourceRecord, StateStore};
use steward_config::{ConfigError, GroupConfig, NodeConfig, ResourceConfig};
use steward_monitor::bindings::{CallContext, ClusterEvent, GroupMove, PluginError, TypeInfo};
use steward_monitor::latency::LatencyHistogram;
use steward_monitor::monitor::{CallError, ResourceSpec, Timeouts};
use steward_monitor::plugin::Plugin;
use steward_monitor::runtime::Runtime;
use steward_monitor::worker::protocol::Report;
use steward_monitor::worker::{RemoteResource, WorkerEvent, WorkerOptions, WorkerPool};
use steward_policy::failure::{Failure, FailureKind};
use steward_policy::{Action, GroupSpec, Input, MemberSpec, PolicyEngine, ResourceState, Severity};

pub mod cluster;
pub mod error;
mod live;
pub mod plugin_dir;
pub mod state;
pub mod why;

pub use error::Error;

pub use live::{ApplyReport, NodeRequest, ReloadReport, UpgradeReport};

/// The probe intervals of the classic cluster service.
pub const DEFAULT_LOOKS_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// See [`DEFAULT_LOOKS_ALIVE_INTERVAL`].
pub const DEFAULT_IS_ALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// Where, in the data directory, the daemon keeps the bytes of every plugin
/// version it loaded, named by their hash, for the monitor workers.
pub const PLUGIN_VERSIONS_DIR: &str = "plugin-versions";

/// Instance slots the shared worker keeps for resources a reload adds.
const RELOAD_HEADROOM: u32 = 64;

/// Memory mappings one live instance costs a worker: about 6 measured
/// (memory image, guard and accessible regions, stacks), with margin.
const MAPPINGS_PER_INSTANCE: u32 = 8;

/// Mappings left to the rest of a worker (code, heap, thread stacks).
const MAPPINGS_RESERVED: u32 = 4096;

/// The most instances one worker may host: past `vm.max_map_count`
/// mappings, its allocations fail and it aborts. A worker of 10,000
/// `dummy` instances was measured at 60,213 of the default 65,530.
fn max_instances_per_worker() -> u32 {
    let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .unwrap_or(65_530);
    (max_map_count.saturating_sub(MAPPINGS_RESERVED) / MAPPINGS_PER_INSTANCE).max(1)
}

/// Inputs the loop applies in one go before it records their history and
/// looks at its other sources again.
const INPUT_BURST: usize = 256;

/// Events kept for `GET /v1/events` history and `steward status`.
const RECENT_EVENTS: usize = 256;

/// Something that happened on the node, as the API and the CLI show it.
#[derive(Debug, Clone)]
pub struct NodeEvent {
    /// Increasing number, from 1 at the daemon's start.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Monotonic time since the daemon started, in microseconds (for latencies).
    pub uptime_us: u64,
    /// `transition`, `group`, `signalled-failure` or `restart`.
    pub kind: String,
    /// The resource, when about one.
    pub resource: Option<String>,
    /// The group.
    pub group: String,
    /// The state before, for transitions.
    pub from: Option<ResourceState>,
    /// The state after, for transitions.
    pub to: Option<ResourceState>,
    /// The kind of failure, for a transition to `failed`.
    pub failure_kind: Option<FailureKind>,
    /// Why.
    pub reason: String,
    /// Who did it, for an operator's action.
    pub by: Option<String>,
}

/// Counters of one resource, updated by its probes without locks.
#[derive(Debug, Default)]
pub struct ResourceMetrics {
    /// Healthy probes run, by latency (their count is the probes run).
    pub probe_latency: LatencyHistogram,
    /// `online` calls as the node saw them (sandbox re-creation, the
    /// call, the worker's round trip), by latency.
    pub online_latency: LatencyHistogram,
    /// `offline` calls, likewise.
    pub offline_latency: LatencyHistogram,
    /// Restarts over the resource's life on this node.
    pub restarts_total: AtomicU64,
    /// Failures over its life on this node.
    pub failures_total: AtomicU64,
    /// Failures since the daemon started, by kind (indexed by [`FailureKind::index`]).
    pub failures_by_kind: [AtomicU64; FailureKind::ALL.len()],
    /// Guest log records dropped by the rate limit since the daemon started.
    pub logs_dropped_total: AtomicU64,
    /// Capabilities (programs, files, addresses) refused since the daemon started.
    pub capability_denials_total: AtomicU64,
    /// Processes the plugin spawned since the daemon started.
    pub processes_spawned_total: AtomicU64,
}

/// One resource as the API shows it.
#[derive(Debug, Clone)]
pub struct ResourceView {
    /// Its name.
    pub name: String,
    /// Its type.
    pub type_name: String,
    /// Its group.
    pub group: String,
    /// Its state.
    pub state: ResourceState,
    /// Why it is in that state.
    pub reason: String,
    /// The kind of its last failure, if it failed since the daemon started.
    pub last_failure_kind: Option<FailureKind>,
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
    /// Its properties as configured, as text (the console's property
    /// page); secrets show as `(secret)`.
    pub properties: Vec<(String, String)>,
}

/// One group as the API shows it.
#[derive(Debug, Clone)]
pub struct GroupView {
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

/// One plugin as the API shows it.
#[derive(Debug, Clone)]
pub struct PluginView {
    /// The file.
    pub file: String,
    /// The type's name, when it loaded.
    pub type_name: Option<String>,
    /// The type's version.
    pub version: Option<String>,
    /// The sha256 of the file loaded.
    pub hash: Option<String>,
    /// Why it did not load, when it did not.
    pub error: Option<String>,
    /// What the type says about itself, when it loaded (the console's
    /// property pages are drawn from it).
    pub metadata: Option<TypeInfo>,
}

/// Where a node is in its life, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePhase {
    /// The plugin directory is being loaded; resources wait for their types.
    LoadingPlugins,
    /// Resources are open and the policy engine runs.
    Running,
    /// The node is taking its groups offline (or leaving them) to stop.
    Stopping,
}

/// What the API reads and how it asks for changes: shared between the node
/// loop (the only writer) and the API handlers.
pub struct NodeView {
    /// This node's name.
    pub node_name: String,
    /// The node file it was started with.
    pub node_file: PathBuf,
    /// Where the node is in its life.
    pub phase: RwLock<NodePhase>,
    /// Every resource.
    pub resources: RwLock<BTreeMap<String, ResourceView>>,
    /// Every group.
    pub groups: RwLock<BTreeMap<String, GroupView>>,
    /// Every plugin file.
    pub plugins: RwLock<Vec<PluginView>>,
    /// Counters per resource.
    pub metrics: RwLock<BTreeMap<String, Arc<ResourceMetrics>>>,
    /// Published events.
    pub events: broadcast::Sender<NodeEvent>,
    /// The last events.
    pub recent: Mutex<VecDeque<NodeEvent>>,
    /// Why each group restarted, moved or failed: this node's decisions.
    pub decisions: Mutex<why::DecisionLog>,
    /// Requests to the node loop.
    pub requests: mpsc::UnboundedSender<Input>,
    /// Operator requests that are not the policy engine's: plugin upgrades
    /// and configuration reloads.
    pub node_requests: mpsc::UnboundedSender<NodeRequest>,
    /// The monitor workers.
    pub workers: Arc<WorkerPool>,
    /// The daemon's engine (its compile counters).
    pub runtime: Arc<Runtime>,
    /// The cluster, when the node is one of one.
    pub cluster: Option<Arc<cluster::ClusterView>>,
    /// In a cluster, the shared configuration this node runs, once one
    /// was applied (until then, the node file's groups and resources).
    pub shared_config: RwLock<Option<steward_cluster::shared_config::Applied>>,
    started: Instant,
    next_seq: AtomicU64,
}

impl NodeView {
    /// The counters of `resource`.
    pub fn metrics_of(&self, resource: &str) -> Option<Arc<ResourceMetrics>> {
        self.metrics.read().ok()?.get(resource).cloned()
    }

    /// Where the node is in its life.
    pub fn phase(&self) -> NodePhase {
        self.phase.read().map_or(NodePhase::Stopping, |phase| *phase)
    }

    /// Publishes an operator's accepted action, naming who made it.
    pub fn publish_action(&self, by: &str, what: String) {
        self.publish(NodeEvent {
            kind: "operator-action".into(),
            reason: what,
            by: Some(by.to_string()),
            ..blank_event()
        });
    }

    /// Records a decision for `steward why`.
    pub fn record_decision(&self, decision: why::Decision) {
        tracing::info!(
            group = %decision.group,
            kind = %decision.kind,
            rule = %decision.rule,
            inputs = ?decision.inputs,
            outcome = %decision.outcome,
            "decision"
        );
        if let Ok(mut log) = self.decisions.lock() {
            log.record(decision);
        }
    }

    fn set_phase(&self, phase: NodePhase) {
        if let Ok(mut current) = self.phase.write() {
            *current = phase;
        }
    }

    fn publish(&self, mut event: NodeEvent) {
        event.seq = self.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        event.unix_ms = unix_ms();
        event.uptime_us = self.started.elapsed().as_micros() as u64;
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        let _ = self.events.send(event);
    }
}

/// What an ownership backend tells the node loop about a group.
#[derive(Debug, Clone)]
pub enum OwnershipEvent {
    /// This node owns `group` now; every call made on its behalf carries
    /// `fencing_token`, which is larger than any token of an earlier owner.
    Acquired {
        /// The group.
        group: String,
        /// Its fencing token for this ownership.
        fencing_token: u64,
    },
    /// This node no longer owns `group`: it goes offline here, and comes
    /// back only once acquired again.
    Lost {
        /// The group.
        group: String,
    },
    /// This node took `group` over from a planned move: published for
    /// operators and told to the group's resources (it also arrives as
    /// `Acquired`).
    Moved {
        /// The group.
        group: String,
        /// The node it came from, if known.
        from: Option<String>,
        /// The new ownership's token.
        fencing_token: u64,
    },
    /// `group`, failed here, went to node `to`: this node no longer owns it.
    FailedOver {
        /// The group.
        group: String,
        /// The node it went to.
        to: String,
    },
    /// `group` failed here and was moved as often as its policy allows
    /// within its failover period: it stays failed here.
    FailoverExhausted {
        /// The group.
        group: String,
    },
    /// A more preferred owner of `group` is back and the group's failback
    /// allows it now: move the group there.
    FailBack {
        /// The group.
        group: String,
        /// The node to move it to.
        to: String,
    },
    /// Something happened to the cluster that every resource running here
    /// hears of (`notify`): a node joined or left, this node lost or
    /// regained etcd.
    Cluster(ClusterEvent),
    /// A group's owner changed anywhere in the cluster (`owner` is `None`
    /// when the group was let go): published for operators.
    Observed {
        /// The group.
        group: String,
        /// Its owner now.
        owner: Option<String>,
        /// The fencing token of the ownership that began or ended.
        fencing_token: u64,
    },
    /// What this node owns may run until `until_ns` on the system's
    /// monotonic clock (`steward_monitor::worker::lease`): the workers
    /// fence themselves past it unless it is extended. A backend with no
    /// lease (a node alone) never sends it.
    LeaseValid {
        /// The deadline.
        until_ns: u64,
    },
    /// The backend decided something for a group (took it, passed it on,
    /// fenced it): recorded for `steward why`.
    Decided(why::Decision),
    /// An operator on another node wants `group` online or offline.
    Wished {
        /// The group.
        group: String,
        /// Online (somewhere) or offline (everywhere).
        online: bool,
        /// The node the operator asked.
        by: String,
    },
}

/// The seam a cluster backend takes over: which groups this node runs.
///
/// The node receives its backend at start, with the receiving end of the
/// channel the backend reports on. It asks before any group goes online
/// (start, operator requests, reload, restarts, retries: every path), and
/// brings the group online only once [`OwnershipEvent::Acquired`] arrives;
/// it lets go of a group that is offline and wanted offline. Neither call
/// waits: answers come back as [`OwnershipEvent`]s into the node loop.
pub trait Ownership: Send {
    /// This node wants to run `group`; answer with `Acquired` once it may
    /// (or never, while another node runs it).
    fn acquire(&mut self, group: &str);
    /// `group` is offline here and wanted offline: another may take it.
    fn release(&mut self, group: &str);

    /// `group` is offline here, moved by an operator: hand it to node `to`
    /// (or the next by placement). A backend with nowhere to move it
    /// releases it.
    fn hand_over(&mut self, group: &str, _to: Option<&str>) {
        self.release(group);
    }

    /// `group` failed here past its restart threshold: move it to another
    /// node if the backend has one (answered with `FailedOver` or
    /// `FailoverExhausted`). A node alone keeps it failed here.
    fn fail_over(&mut self, _group: &str) {}

    /// Where these groups may run (they joined the node). A node alone
    /// runs every group itself.
    fn place(&mut self, _groups: BTreeMap<String, cluster::GroupOwners>) {}

    /// The plugin types this node can run now, by name, with their version
    /// hash: a backend placing groups among nodes publishes them.
    fn plugins_changed(&mut self, _inventory: &BTreeMap<String, String>) {}

    /// An operator wants `group` online (somewhere) or offline
    /// (everywhere): a cluster backend tells every node, which hear it as
    /// [`OwnershipEvent::Wished`]. A node alone keeps the wish itself.
    fn wish(&mut self, _group: &str, _online: bool) {}

    /// Resolves once what was asked of the backend so far is done (wishes
    /// written), for a node about to stop; `None`: nothing is pending.
    fn settled(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        None
    }
}

/// Whoever watches the node from outside, such as the service manager that
/// started the daemon (the daemon wires this to systemd's notifications;
/// the node names no manager). It hears where the node is in its life, and
/// when it wants heartbeats they come from the node loop itself, as one of
/// its branches: a loop that hangs falls silent, where a task of its own
/// would vouch for it.
pub trait Supervisor: Send {
    /// How often the loop beats; `None`: never.
    fn heartbeat_period(&self) -> Option<Duration>;

    /// A heartbeat from the node loop.
    fn heartbeat(&mut self);

    /// Where the node is now, as a line for operators.
    fn status(&mut self, status: &str);

    /// The configured groups are started: the resources are open and
    /// every group wanted online was asked online (it may still be coming
    /// online). Said once.
    fn started(&mut self);
}

/// A node running alone: every group is acquired at once, each time with
/// a fencing token one larger than the last, from a counter kept in the
/// state store, so tokens grow across offline and online and across
/// restarts of the daemon.
pub struct SingleNode {
    store: Arc<StateStore>,
    events: mpsc::UnboundedSender<OwnershipEvent>,
}

impl SingleNode {
    /// The backend, and the channel the node loop hears it on.
    pub fn new(store: Arc<StateStore>) -> (SingleNode, mpsc::UnboundedReceiver<OwnershipEvent>) {
        let (events, receiver) = mpsc::unbounded_channel();
        (SingleNode { store, events }, receiver)
    }
}

impl Ownership for SingleNode {
    fn acquire(&mut self, group: &str) {
        match self.store.next_fencing_token() {
            Ok(fencing_token) => {
                let _ = self.events.send(OwnershipEvent::Acquired { group: group.to_string(), fencing_token });
            }
            // Without a durable token the group must not run: a token
            // handed out twice would fence nothing.
            Err(error) => tracing::error!(%group, %error, "cannot hand out a fencing token; the group stays offline"),
        }
    }

    fn release(&mut self, _group: &str) {}
}

/// Why a group is being removed from the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// The configuration no longer has it.
    Gone,
    /// The configuration defines it with other members: once removed, it
    /// is added again as now defined, wanted online or not as it was
    /// (alone; in a cluster the operators' wishes live in etcd).
    Replaced { wanted_online: bool },
}

/// Loads every `.wasm` in the plugin directory: the types that loaded, and a
/// view of every file (with the reason for those that did not, which the
/// caller reports: a bad file never stops the node). With `versions`, each
/// loaded file's bytes are kept there for the monitor workers.
pub async fn load_plugins(
    runtime: &Arc<Runtime>,
    dir: &Path,
    versions: Option<&Path>,
) -> (BTreeMap<String, Arc<Plugin>>, Vec<PluginView>) {
    let mut plugins = BTreeMap::new();
    let mut views = Vec::new();
    for file in plugin_files(dir) {
        let (plugin, view) = load_plugin(runtime, &file, versions).await;
        if let Some(plugin) = plugin {
            plugins.insert(plugin.type_name().to_string(), plugin);
        }
        views.push(view);
    }
    (plugins, views)
}

/// The plugin files of `dir`, sorted.
fn plugin_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.flatten().map(|e| e.path()).filter(|p| is_plugin_file(p)).collect(),
        Err(error) => {
            tracing::error!(dir = %dir.display(), %error, "cannot read the plugin directory");
            Vec::new()
        }
    };
    files.sort();
    files
}

/// Loads one plugin file, logging the outcome; the view says what it is or
/// why it could not be loaded.
pub async fn load_plugin(
    runtime: &Arc<Runtime>,
    file: &Path,
    versions: Option<&Path>,
) -> (Option<Arc<Plugin>>, PluginView) {
    let loaded = match versions {
        Some(versions) => Plugin::load_versioned(runtime, file, versions).await,
        None => Plugin::load(runtime, file).await,
    };
    match loaded {
        Ok(plugin) => {
            let info = plugin.metadata();
            let compiled = plugin.load_info().compiled;
            tracing::info!(file = %file.display(), r#type = %info.name, version = %info.version, compiled, "plugin loaded");
            let view = PluginView {
                file: file.display().to_string(),
                type_name: Some(info.name.clone()),
                version: Some(info.version.clone()),
                hash: Some(plugin.hash().to_string()),
                error: None,
                metadata: Some(info.clone()),
            };
            (Some(Arc::new(plugin)), view)
        }
        Err(error) => {
            let view = PluginView {
                file: file.display().to_string(),
                type_name: None,
                version: None,
                hash: None,
                error: Some(error.to_string()),
                metadata: None,
            };
            (None, view)
        }
    }
}

/// The checks of a configuration that need its plugins: each resource's
/// type exists, its grants are usable, and its properties pass the schema
/// and the plugin's own `validate`. Returns every error found.
pub async fn check_config(config: &NodeConfig, plugins: &BTreeMap<String, Arc<Plugin>>) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for resource in &config.resources {
        let at = |message: String| ConfigError {
            location: format!("{}: resource `{}`", resource.defined_at, resource.name),
            message,
        };
        let Some(plugin) = plugins.get(&resource.type_name) else {
            let known: Vec<&str> = plugins.keys().map(String::as_str).collect();
            errors.push(at(format!(
                "type: unknown type `{}`; the plugin directory {} has: {}",
                resource.type_name,
                config.plugin_dir.display(),
                if known.is_empty() { "no plugins".to_string() } else { known.join(", ") }
            )));
            continue;
        };
        // Compared in MiB: shifted into bytes, a huge value would wrap.
        let most = steward_monitor::runtime::MAX_MEMORY_LIMIT_BYTES >> 20;
        match resource.memory_limit_mib {
            Some(0) => errors.push(at("memory_limit_mib: 0 leaves the resource no memory; give at least 1".into())),
            Some(mib) if mib > most => {
                errors.push(at(format!("memory_limit_mib: {mib} is over the most a resource may have, {most}")))
            }
            _ => {}
        }
        if let Err(error) = resource.grants.configure(&resource.name) {
            errors.push(at(strip_resource(&error.to_string(), &resource.name)));
        }
        if let Err(error) = plugin.validate(&resource.name, &resource.properties).await {
            errors.push(at(format!("properties: {}", strip_resource(&error.to_string(), &resource.name))));
        }
    }
    errors
}

/// Takes out of `config` each group with a resource whose type is not in
/// `plugins`, with its resources: in a cluster, such a group runs on a node
/// that has the type. Returns each group taken out with the first type it
/// lacks.
pub fn set_aside_lacking(config: &mut NodeConfig, plugins: &BTreeMap<String, Arc<Plugin>>) -> Vec<(String, String)> {
    let type_of: HashMap<&str, &str> =
        config.resources.iter().map(|resource| (resource.name.as_str(), resource.type_name.as_str())).collect();
    let mut lacking = Vec::new();
    for group in &config.groups {
        let missing = group
            .resources
            .iter()
            .filter_map(|member| type_of.get(member.as_str()))
            .find(|type_name| !plugins.contains_key(**type_name));
        if let Some(type_name) = missing {
            lacking.push((group.name.clone(), type_name.to_string()));
        }
    }
    let set_aside: std::collections::HashSet<&str> = lacking.iter().map(|(group, _)| group.as_str()).collect();
    let members: std::collections::HashSet<String> = config
        .groups
        .iter()
        .filter(|group| set_aside.contains(group.name.as_str()))
        .flat_map(|group| group.resources.iter().cloned())
        .collect();
    config.groups.retain(|group| !set_aside.contains(group.name.as_str()));
    config.resources.retain(|resource| !members.contains(&resource.name));
    lacking
}

fn strip_resource(message: &str, resource: &str) -> String {
    message.strip_prefix(&format!("resource `{resource}`: ")).unwrap_or(message).to_string()
}

/// A running node.
pub struct Node {
    config: NodeConfig,
    /// The configuration as loaded; its resources and groups join `config`
    /// once their plugins are loaded and checked.
    configured: NodeConfig,
    runtime: Arc<Runtime>,
    /// The current version of each type.
    plugins: BTreeMap<String, Arc<Plugin>>,
    workers: Arc<WorkerPool>,
    worker_events: mpsc::UnboundedReceiver<WorkerEvent>,
    handles: BTreeMap<String, RemoteResource>,
    engine: PolicyEngine,
    store: Arc<StateStore>,
    view: Arc<NodeView>,
    inputs: mpsc::UnboundedSender<Input>,
    receiver: mpsc::UnboundedReceiver<Input>,
    node_requests: mpsc::UnboundedReceiver<NodeRequest>,
    internal_sender: mpsc::UnboundedSender<live::Internal>,
    internal: mpsc::UnboundedReceiver<live::Internal>,
    /// Who is probed, and how: the one record of it (workers hold only
    /// the schedules they run, and a new worker gets them from here).
    probes: ProbeRegistry,
    records: BTreeMap<String, ResourceRecord>,
    dirty_records: std::collections::BTreeSet<String>,
    ownership: Box<dyn Ownership>,
    ownership_events: mpsc::UnboundedReceiver<OwnershipEvent>,
    /// The groups this node owns, with their fencing tokens.
    owned: HashMap<String, u64>,
    /// Inputs that would bring a group online, held until it is acquired.
    awaiting_ownership: HashMap<String, Vec<Input>>,
    /// Groups being moved away (to a node, or the next by placement),
    /// handed over once offline here.
    moving: HashMap<String, Option<String>>,
    /// Groups that failed here past their restart threshold, handed to
    /// the backend's failover once nothing of them runs here.
    failing_over: std::collections::HashSet<String>,
    /// Online calls in a row per resource since its last success.
    attempts: HashMap<String, u32>,
    /// Each resource's queue of cluster events, delivered in order.
    notifiers: HashMap<String, mpsc::UnboundedSender<Arc<ClusterEvent>>>,
    /// Each resource's position in `config.resources`, its group's in
    /// `config.groups`, and each group's by its name: the loop looks them
    /// up on every input (ownership events included), and a search of
    /// 10,000 resources or groups per input made start-up quadratic.
    resource_index: HashMap<String, usize>,
    group_index: HashMap<String, usize>,
    group_positions: HashMap<String, usize>,
    /// In a cluster, where the shared configuration is kept.
    shared_config: Option<steward_cluster::shared_config::SharedConfigStore>,
    /// Until when the cluster lease is valid, on the monotonic clock
    /// (`steward_monitor::worker::lease`), as the backend last said.
    lease_until_ns: Option<u64>,
    /// Resources whose graceful offline would outlast the lease: they are
    /// terminated instead.
    hurried: std::collections::HashSet<String>,
    /// Groups being removed, once offline here, and why.
    removing: HashMap<String, Removal>,
    /// Replaced groups removed and not yet added again: whether each is
    /// to come back wanted online.
    readding: HashMap<String, bool>,
    /// Who watches the node from outside, if anyone (see [`Supervisor`]).
    supervisor: Option<Box<dyn Supervisor>>,
}

impl Node {
    /// Prepares the node and its view, in which every configured resource
    /// waits for its type; nothing is loaded, opened or brought online
    /// until [`Node::run`], so the API can serve at once. `ownership`
    /// decides which groups this node may run, and reports on
    /// `ownership_events` (see [`Ownership`]).
    pub fn start(
        config: NodeConfig,
        runtime: Arc<Runtime>,
        store: Arc<StateStore>,
        ownership: Box<dyn Ownership>,
        ownership_events: mpsc::UnboundedReceiver<OwnershipEvent>,
        cluster: Option<Arc<cluster::ClusterView>>,
    ) -> Result<Node, Error> {
        let (worker_events_sender, worker_events) = mpsc::unbounded_channel();
        let workers = WorkerPool::new(
            WorkerOptions {
                program: worker_program()?,
                node_name: config.name.clone(),
                cluster_name: config.cluster.as_ref().map(|cluster| cluster.name.clone()).unwrap_or_default(),
                cache_dir: config.data_dir.join("compile-cache"),
                log_json: config.log_format == steward_config::LogFormat::Json,
                shared_capacity: (config.resources.len() as u32 + RELOAD_HEADROOM)
                    .min(config.max_instances_per_worker.unwrap_or_else(max_instances_per_worker)),
                deadlock_timeout: config.worker_deadlock_timeout,
                recorded_processes: {
                    let store = store.clone();
                    Box::new(move |resource| store.processes(resource).unwrap_or_default())
                },
            },
            worker_events_sender,
        );
        let (inputs, receiver) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(steward_monitor::events::EVENT_BACKLOG);
        let (requests, node_requests) = mpsc::unbounded_channel();
        let view = Arc::new(NodeView {
            node_name: config.name.clone(),
            node_file: config.file.clone(),
            phase: RwLock::new(NodePhase::LoadingPlugins),
            resources: RwLock::new(waiting_resources(&config)),
            groups: RwLock::new(waiting_groups(&config)),
            plugins: RwLock::new(Vec::new()),
            runtime: runtime.clone(),
            cluster,
            shared_config: RwLock::new(None),
            metrics: RwLock::new(BTreeMap::new()),
            events,
            recent: Mutex::new(VecDeque::new()),
            decisions: Mutex::new(why::DecisionLog::default()),
            requests: inputs.clone(),
            node_requests: requests,
            workers: workers.clone(),
            started: Instant::now(),
            next_seq: AtomicU64::new(0),
        });
        let (internal_sender, internal) = mpsc::unbounded_channel();
        // Empty until `add` gives it the configuration's resources and groups.
        Ok(Node {
            engine: PolicyEngine::default(),
            config: NodeConfig { resources: Vec::new(), groups: Vec::new(), ..config.clone() },
            configured: config,
            runtime,
            plugins: BTreeMap::new(),
            workers,
            worker_events,
            handles: BTreeMap::new(),
            store,
            view,
            inputs,
            receiver,
            node_requests,
            internal_sender,
            internal,
            probes: ProbeRegistry::default(),
            records: BTreeMap::new(),
            dirty_records: Default::default(),
            ownership,
            ownership_events,
            owned: HashMap::new(),
            awaiting_ownership: HashMap::new(),
            moving: HashMap::new(),
            failing_over: std::collections::HashSet::new(),
            attempts: HashMap::new(),
            notifiers: HashMap::new(),
            resource_index: HashMap::new(),
            group_index: HashMap::new(),
            group_positions: HashMap::new(),
            shared_config: None,
            lease_until_ns: None,
            hurried: std::collections::HashSet::new(),
            removing: HashMap::new(),
            readding: HashMap::new(),
            supervisor: None,
        })
    }

    /// In a cluster: the node runs the shared configuration `applied`
    /// (already merged into its configuration by the daemon, if any),
    /// follows later applies from `store`, and accepts `steward apply`.
    pub fn share_config(
        &mut self,
        store: steward_cluster::shared_config::SharedConfigStore,
        applied: Option<steward_cluster::shared_config::Applied>,
    ) {
        if let Ok(mut view) = self.view.shared_config.write() {
            *view = applied;
        }
        self.shared_config = Some(store);
    }

    /// `supervisor` watches the node from outside: it hears the node's
    /// status as it changes and, once the groups are started, that they
    /// are; and it gets the loop's heartbeats, if it asks for them.
    pub fn supervise(&mut self, supervisor: Box<dyn Supervisor>) {
        self.supervisor = Some(supervisor);
    }

    /// Tells the supervisor, if any, where the node is.
    fn tell_status(&mut self, status: &str) {
        if let Some(supervisor) = &mut self.supervisor {
            supervisor.status(status);
        }
    }

    /// Applies a message of the internal channel; true when it was
    /// start-up's own answer, after which the groups are started and the
    /// supervisor hears it.
    async fn take_internal(&mut self, message: live::Internal) -> bool {
        let starting = matches!(message, live::Internal::Started { .. });
        self.on_internal(message).await;
        if starting {
            let (groups, resources) = (self.config.groups.len(), self.handles.len());
            self.tell_status(&format!("running: {groups} group(s), {resources} resource(s)"));
            if let Some(supervisor) = &mut self.supervisor {
                supervisor.started();
            }
        }
        starting
    }

    /// Loads every plugin file of the directory, one at a time, each shown
    /// in the view as soon as it is loaded or rejected.
    async fn load_plugin_dir(&mut self) {
        let dir = self.config.plugin_dir.clone();
        let versions = self.config.data_dir.join(PLUGIN_VERSIONS_DIR);
        for file in plugin_files(&dir) {
            let (plugin, view) = load_plugin(&self.runtime, &file, Some(&versions)).await;
            if let Some(error) = &view.error {
                tracing::error!(%error, "plugin not loaded");
            }
            if let Ok(mut views) = self.view.plugins.write() {
                views.push(view);
            }
            if let Some(plugin) = plugin {
                self.plugins.insert(plugin.type_name().to_string(), plugin);
            }
        }
        // What no plugin file now needs goes: compiled forms of replaced files
        // or of an older engine, and copies of versions no resource will run.
        let compiled: std::collections::HashSet<String> =
            self.plugins.values().map(|p| p.cache_key().to_string()).collect();
        let hashes: std::collections::HashSet<String> = self.plugins.values().map(|p| p.hash().to_string()).collect();
        let stale = self.runtime.prune_cache(&compiled) + steward_monitor::runtime::prune_dir(&versions, &hashes);
        if stale > 0 {
            tracing::info!(stale, "dropped stale compiled components and plugin versions");
        }
    }

    /// Opens the configured resources in their workers in a task, then
    /// probes the members of the groups wanted online: what still runs is
    /// adopted, not restarted. The loop hears the outcome as
    /// [`live::Internal::Started`], with the inputs that start the groups.
    fn open_at_start(&self, opening: Vec<RemoteResource>) {
        let groups: Vec<(String, bool, Vec<RemoteResource>)> = self
            .config
            .groups
            .iter()
            .map(|group| {
                let wanted = self.store.group_wanted(&group.name).ok().flatten().unwrap_or(group.autostart);
                let members = if wanted {
                    group.resources.iter().filter_map(|member| self.handles.get(member).cloned()).collect()
                } else {
                    Vec::new()
                };
                (group.name.clone(), wanted, members)
            })
            .collect();
        let internal = self.internal_sender.clone();
        tokio::spawn(async move {
            let running = open_all(opening).await;
            let probes = groups.iter().flat_map(|(_, _, members)| members).map(|handle| async move {
                let alive = matches!(handle.looks_alive().await, Ok(true));
                if alive {
                    handle.adopted();
                }
                (handle.name().to_string(), alive)
            });
            let alive: HashMap<String, bool> = futures_util::future::join_all(probes).await.into_iter().collect();
            let mut then = Vec::new();
            for (group, wanted, members) in groups {
                if !wanted {
                    then.push(Input::GroupOffline(group));
                    continue;
                }
                for member in members {
                    if alive.get(member.name()).copied().unwrap_or(false) {
                        then.push(Input::Adopted(member.name().to_string()));
                    }
                }
                then.push(Input::GroupOnline(group));
            }
            let _ = internal.send(live::Internal::Started { running, then });
        });
    }

    /// Adds resources and groups to the node: creates each resource's
    /// handle, view and counters, and gives the groups to the policy
    /// engine, offline. Returns the handles, for [`open_all`] to open in
    /// their workers.
    fn add(
        &mut self,
        resources: Vec<ResourceConfig>,
        groups: Vec<GroupConfig>,
        mut stored: HashMap<String, Stored>,
    ) -> Vec<RemoteResource> {
        let (first_resource, first_group) = (self.config.resources.len(), self.config.groups.len());
        self.config.resources.extend(resources.iter().cloned());
        self.config.groups.extend(groups.iter().cloned());
        for (at, resource) in resources.iter().enumerate() {
            self.resource_index.insert(resource.name.clone(), first_resource + at);
        }
        for (at, group) in groups.iter().enumerate() {
            self.group_positions.insert(group.name.clone(), first_group + at);
            for member in &group.resources {
                self.group_index.insert(member.clone(), first_group + at);
            }
        }
        let mut opening = Vec::new();
        // The view's locks are taken once for all, not once per resource.
        let mut new_metrics = Vec::new();
        let mut new_views = Vec::new();
        for resource in &resources {
            let Some(plugin) = self.plugins.get(&resource.type_name) else { continue };
            let Stored { record, processes } = stored.remove(&resource.name).unwrap_or_default();
            let spec = resource_spec(resource, plugin, processes);
            let handle = self.workers.resource(plugin.clone(), spec, resource.separate_monitor);
            let counters = ResourceMetrics::default();
            counters.restarts_total.store(record.restarts_total, Ordering::Relaxed);
            counters.failures_total.store(record.failures_total, Ordering::Relaxed);
            new_metrics.push((resource.name.clone(), Arc::new(counters)));
            let view = ResourceView {
                name: resource.name.clone(),
                type_name: resource.type_name.clone(),
                group: self.group_name(&resource.name),
                state: ResourceState::Unknown,
                reason: String::new(),
                last_failure_kind: None,
                progress: None,
                depends_on: resource.depends_on.clone(),
                restarts_in_period: 0,
                restarts_total: record.restarts_total,
                failures_total: record.failures_total,
                pids: Vec::new(),
                worker: handle.worker_name().to_string(),
                plugin_hash: String::new(),
                properties: resource.shown_properties(),
            };
            new_views.push((resource.name.clone(), view));
            self.handles.insert(resource.name.clone(), handle.clone());
            opening.push(handle);
        }
        if let Ok(mut metrics) = self.view.metrics.write() {
            metrics.extend(new_metrics);
        }
        if let Ok(mut views) = self.view.resources.write() {
            views.extend(new_views);
        }
        self.engine.add_groups(group_specs(&groups, &resources));
        if self.config.cluster.is_some() {
            self.ownership.place(cluster::GroupOwners::of(&groups, &resources));
        }
        for group in &groups {
            let view = GroupView {
                name: group.name.clone(),
                state: "offline".into(),
                reason: String::new(),
                wanted_online: false,
                fencing_token: None,
                resources: group.resources.clone(),
            };
            if let Ok(mut views) = self.view.groups.write() {
                views.insert(group.name.clone(), view);
            }
        }
        opening
    }

    /// The plugin types this node runs: name to version hash.
    fn inventory(&self) -> BTreeMap<String, String> {
        self.plugins.iter().map(|(name, plugin)| (name.clone(), plugin.hash().to_string())).collect()
    }

    /// Says, in the view and the log, that this node cannot run `group`.
    fn lacks_type(&self, group: &str, type_name: &str) {
        let reason = format!(
            "this node has no plugin of type `{type_name}`, which the group uses; a node that has it runs the group"
        );
        tracing::warn!(%group, r#type = %type_name, "{reason}");
        if let Ok(mut groups) = self.view.groups.write() {
            let view = groups.entry(group.to_string()).or_insert_with(|| GroupView {
                name: group.to_string(),
                state: "offline".into(),
                reason: String::new(),
                wanted_online: false,
                fencing_token: None,
                resources: Vec::new(),
            });
            view.reason = reason;
        }
    }

    /// The view the API serves.
    pub fn view(&self) -> Arc<NodeView> {
        self.view.clone()
    }

    /// Watches the plugin directory, loads it, checks the configuration
    /// against its plugins, opens every resource (adopting the processes
    /// the state store recorded), adopts what still runs and brings wanted
    /// groups online; then runs the loop until `shutdown` resolves, and
    /// takes groups offline (or leaves them running, as configured).
    ///
    /// The configuration errors only the plugins can reveal (an unknown
    /// type, properties the plugin refuses) stop the node before anything
    /// is opened: they are returned, every one, for the daemon to print.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Vec<ConfigError>> {
        tokio::pin!(shutdown);
        // Watching starts before the scan: a file published while the scan
        // compiles is then reported by the watcher, whatever the scan saw.
        let (_watcher, mut plugin_files) = match crate::plugin_dir::watch(&self.config.plugin_dir) {
            Ok((watcher, changes)) => (Some(watcher), changes),
            Err(error) => {
                tracing::error!(%error, "the plugin directory is not watched");
                (None, mpsc::unbounded_channel().1)
            }
        };
        if let Some(store) = self.shared_config.clone() {
            self.follow_shared_config(store);
        }
        self.tell_status("loading plugins");
        let stopped = tokio::select! {
            () = self.load_plugin_dir() => false,
            () = &mut shutdown => true,
        };
        if stopped {
            tracing::info!("stopping before the plugins were loaded");
            self.workers.shutdown(false).await;
            return Ok(());
        }
        self.ownership.plugins_changed(&self.inventory());
        if self.configured.cluster.is_some() {
            // Another node runs what this one lacks a type for; a node
            // alone has nowhere else to run it, so there it is an error.
            for (group, type_name) in set_aside_lacking(&mut self.configured, &self.plugins) {
                self.lacks_type(&group, &type_name);
            }
        }
        let errors = check_config(&self.configured, &self.plugins).await;
        if !errors.is_empty() {
            self.workers.shutdown(false).await;
            return Err(errors);
        }
        let (resources, groups) = (self.configured.resources.clone(), self.configured.groups.clone());
        let stored = read_stored(&self.store, &resources);
        let opening = self.add(resources, groups, stored);
        self.tell_status(&format!("opening {} resource(s)", opening.len()));
        self.open_at_start(opening);
        // The supervisor's heartbeat is a branch of this loop, so it stops
        // when the loop hangs. Missed beats are not made up in a burst: one
        // beat after a stall says as much as many.
        let mut heartbeat = self
            .supervisor
            .as_ref()
            .and_then(|supervisor| supervisor.heartbeat_period())
            .filter(|period| !period.is_zero())
            .map(|period| {
                let mut interval = tokio::time::interval(period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                interval
            });
        // Until the resources are open, the loop takes only start-up's own
        // answer, the ownership backend, heartbeats and a stop. Operator requests, plugin files and what the
        // workers report wait in their channels: a signal a plugin sent
        // during its adoption probe must reach the engine after the group
        // was asked online, or the engine, knowing nothing yet, drops it.
        let mut started = false;
        loop {
            tokio::select! {
                Some(input) = self.receiver.recv(), if started => {
                    self.requested(input);
                    // A burst (10,000 resources coming online) is applied
                    // in one go, and recorded below in one durable write.
                    for _ in 0..INPUT_BURST {
                        let Ok(input) = self.receiver.try_recv() else { break };
                        self.requested(input);
                    }
                }
                Some(event) = self.worker_events.recv(), if started => self.on_worker_event(event),
                Some(event) = self.ownership_events.recv() => self.on_ownership(event),
                Some(change) = plugin_files.recv(), if started => self.on_plugin_file(change),
                Some(message) = self.internal.recv() => {
                    // Calls end here (10,000 onlines at start-up): a burst of
                    // them is taken together, and recorded below in one write.
                    // Start-up's answer may come anywhere in the burst.
                    started |= self.take_internal(message).await;
                    for _ in 0..INPUT_BURST {
                        let Ok(message) = self.internal.try_recv() else { break };
                        started |= self.take_internal(message).await;
                    }
                }
                Some(request) = self.node_requests.recv(), if started => self.on_request(request).await,
                () = next_tick(&mut heartbeat) => {
                    if let Some(supervisor) = &mut self.supervisor {
                        supervisor.heartbeat();
                    }
                }
                () = &mut shutdown => break,
            }
            // Whatever the branch changed of the resources' history is
            // written once, here.
            self.flush_records();
        }
        self.stop().await;
        Ok(())
    }

    async fn stop(mut self) {
        self.view.set_phase(NodePhase::Stopping);
        if self.config.leave_running_on_stop {
            self.tell_status("stopping: leaving resources running, as configured");
            tracing::info!("stopping; leaving resources running, as configured");
            self.workers.shutdown(true).await;
            return;
        }
        if self.config.cluster.as_ref().is_some_and(|cluster| cluster.on_stop == steward_config::OnStop::Offline) {
            // Offline in the whole cluster, as configured, not moved away.
            let owned: Vec<String> = self.owned.keys().cloned().collect();
            for group in &owned {
                self.ownership.wish(group, false);
            }
            if let Some(settled) = self.ownership.settled() {
                let _ = tokio::time::timeout(Duration::from_secs(5), settled).await;
            }
            tracing::info!(groups = ?owned, "stopping; the groups stay offline in the cluster, as configured");
        }
        self.tell_status("stopping: taking groups offline");
        tracing::info!("stopping; taking groups offline in reverse dependency order");
        for group in self.config.groups.clone() {
            let actions = self.engine.handle(Input::GroupOffline(group.name.clone()), Instant::now());
            self.execute(actions);
        }
        let deadline = Instant::now() + Timeouts::default().pending * 2;
        while self.handles.keys().any(|r| runs(self.engine.state(r))) && Instant::now() < deadline {
            // Calls end on the internal channel; a resource still coming
            // online finishes, then goes offline. Nothing else is taken up.
            match tokio::time::timeout(Duration::from_secs(1), self.internal.recv()).await {
                Ok(Some(message @ live::Internal::CallDone { .. })) => self.on_internal(message).await,
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => break,
            }
        }
        self.flush_records();
        self.workers.shutdown(false).await;
    }

    /// An input from the request channel (operators, through the API, and
    /// the engine's own timers): a group an operator wants online or
    /// offline is wanted so in the whole cluster.
    fn requested(&mut self, input: Input) {
        match &input {
            Input::GroupOnline(group) => self.ownership.wish(group, true),
            Input::GroupOffline(group) => self.ownership.wish(group, false),
            _ => {}
        }
        self.apply(input);
    }

    /// Feeds an input to the engine and carries out what it decides; an
    /// input that would bring a group this node does not own online waits
    /// for the ownership backend first.
    fn apply(&mut self, input: Input) {
        match &input {
            Input::GroupOnline(group) => self.remember_wanted(group, true),
            Input::GroupOffline(group) => {
                self.remember_wanted(group, false);
                // An online still waiting for ownership is called off.
                self.awaiting_ownership.remove(group);
            }
            Input::OnlineDone { resource, result: Ok(()) } | Input::OfflineDone { resource } => {
                self.attempts.remove(resource);
            }
            _ => {}
        }
        if let Some(group) = self.group_needing_ownership(&input) {
            let waiting = self.awaiting_ownership.entry(group.clone()).or_default();
            let first = waiting.is_empty();
            waiting.push(input);
            if first {
                self.ownership.acquire(&group);
                // A backend that answers at once (a node alone) is heard at
                // once: the input must not wait behind unrelated events (a
                // signalled failure of the resource it adopts, say).
                while let Ok(event) = self.ownership_events.try_recv() {
                    self.on_ownership(event);
                }
            }
            return;
        }
        // Each transition derives its group's state, and so does a group
        // failing or recovering: no input re-derives every group's.
        let actions = self.engine.handle(input, Instant::now());
        self.execute(actions);
        self.release_idle_groups();
    }

    /// The group `input` would bring online, when this node does not own it.
    fn group_needing_ownership(&self, input: &Input) -> Option<String> {
        let group = match input {
            Input::GroupOnline(group) | Input::GroupRetryDue(group) => group.clone(),
            Input::ResourceOnline(resource) | Input::Adopted(resource) | Input::RestartDue(resource) => {
                self.group_name(resource)
            }
            _ => return None,
        };
        (!group.is_empty() && !self.owned.contains_key(&group)).then_some(group)
    }

    /// What the ownership backend says: an acquired group takes the
    /// inputs that waited for it, with its fencing token; a lost one goes
    /// offline here (what the operator wanted is kept for when it returns).
    fn on_ownership(&mut self, event: OwnershipEvent) {
        match event {
            OwnershipEvent::Acquired { group, fencing_token } => {
                if self.group_config(&group).is_none() || self.removing.contains_key(&group) {
                    // Removed from the configuration while it was acquired
                    // (or being removed: an owned group never finishes).
                    self.ownership.release(&group);
                    return;
                }
                tracing::info!(%group, fencing_token, "group acquired");
                self.owned.insert(group.clone(), fencing_token);
                self.set_group_token(&group, Some(fencing_token));
                self.view.publish(NodeEvent {
                    kind: "group-acquired".into(),
                    group: group.clone(),
                    reason: format!("this node owns the group, with fencing token {fencing_token}"),
                    ..blank_event()
                });
                for input in self.awaiting_ownership.remove(&group).unwrap_or_default() {
                    self.apply(input);
                }
                self.release_idle_groups();
            }
            OwnershipEvent::LeaseValid { until_ns } => {
                self.lease_until_ns = Some(until_ns);
                self.workers.extend_lease(until_ns);
            }
            OwnershipEvent::Decided(decision) => self.view.record_decision(decision),
            OwnershipEvent::Wished { group, online, by } => {
                if self.group_config(&group).is_some() {
                    let wanted = if online { "online" } else { "offline" };
                    self.view.publish(NodeEvent {
                        kind: "group-wanted".into(),
                        group: group.clone(),
                        reason: format!("an operator on node `{by}` wants the group {wanted} in the cluster"),
                        ..blank_event()
                    });
                    self.apply(if online { Input::GroupOnline(group) } else { Input::GroupOffline(group) });
                }
            }
            OwnershipEvent::Moved { group, from, fencing_token } => {
                let reason = format!("moved here by an operator, with fencing token {fencing_token}");
                self.view.publish(NodeEvent {
                    kind: "group-moved".into(),
                    group: group.clone(),
                    reason,
                    ..blank_event()
                });
                let moved = GroupMove { group: group.clone(), from_node: from, to_node: self.config.name.clone() };
                let members = self.group_members(&group);
                let event = Arc::new(ClusterEvent::GroupMoved(moved));
                for member in members {
                    self.notify(member, event.clone());
                }
            }
            OwnershipEvent::FailedOver { group, to } => {
                self.disown(&group);
                let reason = format!("failed here past its restart threshold; moved to node `{to}`");
                self.view.publish(NodeEvent {
                    kind: "group-failed-over".into(),
                    group: group.clone(),
                    reason,
                    ..blank_event()
                });
                // Wanted online still: it may come back here later.
                self.await_reacquisition(&group);
            }
            OwnershipEvent::FailoverExhausted { group } => {
                let reason = "failed on as many nodes as its failover threshold allows; it stays failed here".into();
                self.view.publish(NodeEvent { kind: "failover-exhausted".into(), group, reason, ..blank_event() });
            }
            OwnershipEvent::FailBack { group, to } => {
                if let Err(why) = self.start_move(group.clone(), Some(to)) {
                    tracing::warn!(%group, %why, "failback did not start");
                }
            }
            OwnershipEvent::Cluster(event) => {
                let (kind, reason) = match &event {
                    ClusterEvent::NodeJoined(node) => ("node-joined", format!("node `{node}` joined the cluster")),
                    ClusterEvent::NodeLeft(node) => ("node-left", format!("node `{node}` left the cluster")),
                    ClusterEvent::QuorumLost => {
                        ("quorum-lost", "this node lost etcd; its groups go offline".to_string())
                    }
                    ClusterEvent::QuorumRegained => ("quorum-regained", "this node reaches etcd again".to_string()),
                    _ => ("cluster", format!("{event:?}")),
                };
                self.view.publish(NodeEvent { kind: kind.into(), reason, ..blank_event() });
                let live: Vec<String> =
                    self.handles.keys().filter(|resource| runs(self.engine.state(resource))).cloned().collect();
                let event = Arc::new(event);
                for resource in live {
                    self.notify(resource, event.clone());
                }
            }
            OwnershipEvent::Observed { group, owner, fencing_token } => {
                let reason = match &owner {
                    Some(node) => format!("node `{node}` owns the group, with fencing token {fencing_token}"),
                    None => format!("the ownership with fencing token {fencing_token} ended; the group has no owner"),
                };
                self.view.publish(NodeEvent { kind: "owner-changed".into(), group, reason, ..blank_event() });
            }
            OwnershipEvent::Lost { group } => {
                tracing::warn!(%group, "group lost; taking it offline here");
                self.hurry_if_lease_short(&group);
                self.disown(&group);
                self.awaiting_ownership.remove(&group);
                self.view.publish(NodeEvent {
                    kind: "group-lost".into(),
                    group: group.clone(),
                    reason: "this node no longer owns the group".into(),
                    ..blank_event()
                });
                // Each transition derives its group's state; the loop
                // writes the history after the event.
                let actions = self.engine.handle(Input::GroupOffline(group.clone()), Instant::now());
                self.execute(actions);
                // Still wanted online: it comes back here if this node
                // owns it again (the backend decides when).
                let wanted =
                    self.view.groups.read().is_ok_and(|groups| groups.get(&group).is_some_and(|g| g.wanted_online));
                if wanted {
                    self.await_reacquisition(&group);
                }
            }
        }
    }

    /// Lets go of every owned group that is offline and wanted offline, so
    /// its next online is a new acquisition with a new fencing token.
    fn release_idle_groups(&mut self) {
        let settled: Vec<String> = self
            .failing_over
            .iter()
            .filter(|group| {
                self.group_members(group).iter().all(|member| {
                    matches!(
                        self.engine.state(member),
                        None | Some(ResourceState::Failed | ResourceState::Offline | ResourceState::Unknown)
                    )
                })
            })
            .cloned()
            .collect();
        for group in settled {
            self.failing_over.remove(&group);
            if self.owned.contains_key(&group) {
                self.ownership.fail_over(&group);
            }
        }
        // A group being moved is handed over once it is offline here; it
        // stays wanted online, and comes back here only if this node owns
        // it again (the target could not take it).
        let moved: Vec<(String, Option<String>)> = match self.view.groups.read() {
            Ok(groups) => self
                .moving
                .iter()
                .filter(|(group, _)| groups.get(*group).is_some_and(|v| v.state == "offline"))
                .map(|(group, to)| (group.clone(), to.clone()))
                .collect(),
            Err(_) => Vec::new(),
        };
        for (group, to) in moved {
            self.moving.remove(&group);
            self.disown(&group);
            self.ownership.hand_over(&group, to.as_deref());
            self.await_reacquisition(&group);
        }
        let idle: Vec<String> = match self.view.groups.read() {
            Ok(groups) => self
                .owned
                .keys()
                .filter(|group| groups.get(*group).is_some_and(|v| v.state == "offline" && !v.wanted_online))
                .cloned()
                .collect(),
            Err(_) => return,
        };
        for group in idle {
            self.disown(&group);
            self.ownership.release(&group);
        }
        self.finish_removals();
    }

    /// Gives a group new settings of its own (policy, autostart, owners,
    /// failback) where it is: its members are alike, so nothing of it goes
    /// offline. In a cluster, placement takes the new owners from now on.
    fn retune(&mut self, group: GroupConfig) {
        let Some(at) = self.group_positions.get(&group.name).copied() else { return };
        tracing::info!(group = %group.name, "the group has other settings now; it keeps running");
        self.engine.set_policy(&group.name, group.policy);
        if self.config.cluster.is_some() {
            self.ownership.place(cluster::GroupOwners::of(std::slice::from_ref(&group), &self.config.resources));
        }
        // A group this node may no longer run moves to one that may.
        let barred_here = !group.possible_owners.is_empty() && !group.possible_owners.contains(&self.config.name);
        let name = group.name.clone();
        if let Some(slot) = self.config.groups.get_mut(at) {
            *slot = group;
        }
        if barred_here
            && self.owned.contains_key(&name)
            && let Err(error) = self.start_move(name.clone(), None)
        {
            tracing::warn!(group = %name, %error, "this node is no longer a possible owner, and the group cannot move");
        }
    }

    /// Starts removing `group`, which the configuration no longer has or
    /// defines with other members (`why`): it goes offline here (not as an
    /// operator's wish: the group is gone, not wanted offline), and is
    /// removed once nothing of it runs.
    fn remove_group(&mut self, group: String, why: Removal) {
        tracing::info!(%group, ?why, "removing the group from the node");
        self.removing.insert(group.clone(), why);
        self.apply(Input::GroupOffline(group));
    }

    /// Removes the groups being removed that are offline here and no
    /// longer owned: their instances are closed in their workers, and the
    /// node, its engine and its view forget them.
    fn finish_removals(&mut self) {
        let settled: Vec<String> = self
            .removing
            .keys()
            .filter(|group| !self.owned.contains_key(*group))
            .filter(|group| self.group_members(group).iter().all(|member| !runs(self.engine.state(member))))
            .cloned()
            .collect();
        if settled.is_empty() {
            return;
        }
        // A replaced group's instances must be closed before it is added
        // again: workers know instances by name.
        let mut closing = Vec::new();
        let mut replaceable = false;
        let mut gone_groups = std::collections::HashSet::new();
        let mut gone_members = std::collections::HashSet::new();
        for group in settled {
            let replaced = match self.removing.remove(&group) {
                Some(Removal::Replaced { wanted_online }) => {
                    self.readding.insert(group.clone(), wanted_online);
                    true
                }
                _ => false,
            };
            replaceable |= replaced;
            // The backend forgets it too: no node asks for a group it lost.
            self.ownership.release(&group);
            let members = self.group_members(&group);
            if !replaced && let Err(error) = self.store.forget_group(&group, &members) {
                tracing::error!(%group, %error, "cannot forget the removed group in the state store");
            }
            for member in &members {
                self.stop_probes(member);
                self.notifiers.remove(member);
                self.attempts.remove(member);
                if let Some(handle) = self.handles.remove(member) {
                    closing.push(handle);
                }
            }
            self.engine.remove_group(&group);
            self.awaiting_ownership.remove(&group);
            self.moving.remove(&group);
            self.failing_over.remove(&group);
            if let Ok(mut views) = self.view.groups.write() {
                views.remove(&group);
            }
            gone_members.extend(members);
            gone_groups.insert(group.clone());
            self.view.publish(NodeEvent {
                kind: "group-removed".into(),
                group,
                reason: if replaced {
                    "the group is defined differently now: it was taken offline and removed, and is added again as \
                     now defined"
                } else {
                    "the configuration no longer has the group; it was taken offline and removed"
                }
                .into(),
                ..blank_event()
            });
        }
        // The configuration, its indexes and the view lose them all in one
        // pass: many groups removed at once must not cost a pass each.
        self.config.groups.retain(|known| !gone_groups.contains(&known.name));
        self.config.resources.retain(|resource| !gone_members.contains(&resource.name));
        self.resource_index =
            self.config.resources.iter().enumerate().map(|(at, resource)| (resource.name.clone(), at)).collect();
        self.group_index = self
            .config
            .groups
            .iter()
            .enumerate()
            .flat_map(|(at, known)| known.resources.iter().map(move |member| (member.clone(), at)))
            .collect();
        self.group_positions =
            self.config.groups.iter().enumerate().map(|(at, known)| (known.name.clone(), at)).collect();
        if let Ok(mut views) = self.view.resources.write() {
            views.retain(|name, _| !gone_members.contains(name));
        }
        if let Ok(mut metrics) = self.view.metrics.write() {
            metrics.retain(|name, _| !gone_members.contains(name));
        }
        if closing.is_empty() && !replaceable {
            return;
        }
        let internal = self.internal_sender.clone();
        tokio::spawn(async move {
            for handle in closing {
                handle.close().await;
            }
            if replaceable {
                let _ = internal.send(live::Internal::Replaceable);
            }
        });
    }

    /// This node no longer owns `group`: its calls carry no token.
    fn disown(&mut self, group: &str) {
        self.owned.remove(group);
        self.set_group_token(group, None);
    }

    /// `group` left this node but is still wanted online: it comes back
    /// online here if the backend hands it to this node again.
    fn await_reacquisition(&mut self, group: &str) {
        self.awaiting_ownership.insert(group.to_string(), vec![Input::GroupOnline(group.to_string())]);
        self.ownership.acquire(group);
    }

    fn set_group_token(&self, group: &str, token: Option<u64>) {
        if let Some(view) = self.view.groups.write().ok().as_mut().and_then(|groups| groups.get_mut(group)) {
            view.fencing_token = token;
        }
    }

    /// Starts moving `group` away: it goes offline here (still wanted
    /// online), and is handed over once offline.
    fn start_move(&mut self, group: String, to: Option<String>) -> Result<String, String> {
        let Some(cluster) = self.view.cluster.clone() else {
            return Err("this node runs alone (its file has no [cluster] table): there is no node to move to".into());
        };
        if self.group_config(&group).is_none() {
            return Err(format!("no group named `{group}`"));
        }
        if !self.owned.contains_key(&group) {
            let owner = cluster.owners.read().ok().and_then(|owners| owners.get(&group).map(|o| o.node.clone()));
            return Err(match owner {
                Some(owner) => {
                    format!("node `{owner}` owns `{group}`, not this one: ask it (steward move --api ITS-API)")
                }
                None => format!("no node owns `{group}` now"),
            });
        }
        if to.as_deref() == Some(self.config.name.as_str()) {
            return Err(format!("`{group}` already runs on this node"));
        }
        if let Some(to) = &to {
            let live = cluster.nodes.read().is_ok_and(|nodes| nodes.iter().any(|node| node.name == *to));
            if !live {
                return Err(format!("node `{to}` is not a live member of cluster `{}`", cluster.name));
            }
        }
        let target = to.clone().unwrap_or_else(|| "the next node by placement".into());
        self.decide(
            &group,
            "move",
            "a move takes the group offline here in dependency order, then hands it over with a new token".into(),
            vec![format!("asked to move to {target}")],
            format!("moving to {target}"),
        );
        let moving = GroupMove {
            group: group.clone(),
            from_node: Some(self.config.name.clone()),
            to_node: to.clone().unwrap_or_default(),
        };
        let event = Arc::new(ClusterEvent::GroupMoving(moving));
        for member in self.group_members(&group) {
            self.notify(member, event.clone());
        }
        self.moving.insert(group.clone(), to);
        self.view.publish(NodeEvent {
            kind: "group-moving".into(),
            group: group.clone(),
            reason: format!("moving to {target}: offline here first"),
            ..blank_event()
        });
        let actions = self.engine.handle(Input::GroupOffline(group.clone()), Instant::now());
        self.execute(actions);
        self.release_idle_groups();
        Ok(format!("group `{group}` is moving to {target}"))
    }

    /// `group` was lost while its members run: those whose graceful
    /// offline could take longer than what is left of the lease are
    /// terminated instead, so nothing of them runs once another node may
    /// take the group.
    fn hurry_if_lease_short(&mut self, group: &str) {
        let Some(until_ns) = self.lease_until_ns else { return };
        let left = Duration::from_nanos(until_ns.saturating_sub(steward_monitor::worker::lease::monotonic_ns()));
        let mut hurried = Vec::new();
        for member in self.group_members(group) {
            if !runs(self.engine.state(&member)) {
                continue;
            }
            // The deadline its worker holds the offline call to.
            let Some(deadline) = self.handles.get(&member).map(|handle| handle.timeouts().pending) else { continue };
            if deadline > left {
                hurried.push(format!("`{member}`: offline may take {deadline:?}"));
                self.hurried.insert(member);
            }
        }
        if !hurried.is_empty() {
            self.decide(
                group,
                "terminate",
                "a lost group's resources whose graceful offline could outlast the lease are terminated".into(),
                std::iter::once(format!("the lease is valid for {left:?} more at most")).chain(hurried).collect(),
                "terminate instead of offline".into(),
            );
        }
    }

    /// Records a decision this node made for `group`.
    fn decide(&self, group: &str, kind: &str, rule: String, inputs: Vec<String>, outcome: String) {
        self.view.record_decision(why::Decision {
            unix_ms: unix_ms(),
            node: self.config.name.clone(),
            group: group.to_string(),
            kind: kind.into(),
            rule,
            inputs,
            outcome,
        });
    }

    /// Records why `resource` restarts: what failed, and the count
    /// against its group's threshold.
    fn decide_restart(&self, resource: &str, restarts_in_period: u32) {
        let group = self.group_name(resource);
        let policy = self.group_config(&group).map(|g| g.policy).unwrap_or_default();
        let failure = self
            .view
            .resources
            .read()
            .ok()
            .and_then(|views| views.get(resource).map(|view| (view.reason.clone(), view.last_failure_kind)))
            .map(|(reason, kind)| match kind {
                Some(kind) => format!("resource `{resource}` failed ({}): {reason}", kind.as_str()),
                None => format!("resource `{resource}` failed: {reason}"),
            })
            .unwrap_or_default();
        self.decide(
            &group,
            "restart",
            format!(
                "a failed resource restarts while its group counts at most restart_threshold ({}) restarts within \
                 restart_period ({})",
                policy.restart_threshold,
                humantime::format_duration(policy.restart_period)
            ),
            vec![failure, format!("restarts within the period, this one included: {restarts_in_period}")],
            format!("restart `{resource}` (delay from restart_delay, with backoff)"),
        );
    }

    /// The configured group named `group`.
    fn group_config(&self, group: &str) -> Option<&GroupConfig> {
        self.group_positions.get(group).and_then(|at| self.config.groups.get(*at))
    }

    /// The context of a call made for `resource`: this node, the fencing
    /// token of its group's ownership, and the online tries in a row.
    fn call_context(&self, resource: &str) -> CallContext {
        let fencing_token = self.owned.get(&self.group_name(resource)).copied().unwrap_or(0);
        let attempt = self.attempts.get(resource).copied().unwrap_or(1).max(1);
        CallContext { node_name: self.config.name.clone(), fencing_token, attempt }
    }

    /// The resources of `group`.
    fn group_members(&self, group: &str) -> Vec<String> {
        self.group_config(group).map(|known| known.resources.clone()).unwrap_or_default()
    }

    /// Tells the other resources of `resource`'s group that are online (or
    /// on their way) of `event`, each in the order events happen.
    fn notify_peers(&mut self, resource: &str, event: ClusterEvent) {
        let Some(group) = self.group_of(resource) else { return };
        let peers: Vec<String> =
            group.resources.iter().filter(|peer| *peer != resource && runs(self.engine.state(peer))).cloned().collect();
        // One event shared by every peer's queue, not a copy each.
        let event = Arc::new(event);
        for peer in peers {
            self.notify(peer, event.clone());
        }
    }

    /// Queues `event` for `resource`; one task per resource delivers its
    /// queue in order, each `notify` between the resource's other calls.
    /// What queued up while a delivery was in flight goes in the next one
    /// round trip: a group of 100 resources coming online at once means
    /// 9,900 notifications, which must not mean 9,900 round trips.
    fn notify(&mut self, resource: String, event: Arc<ClusterEvent>) {
        if let Some(queue) = self.notifiers.get(&resource) {
            let _ = queue.send(event);
            return;
        }
        let Some(handle) = self.handles.get(&resource).cloned() else { return };
        let (queue, mut events) = mpsc::unbounded_channel::<Arc<ClusterEvent>>();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let mut batch = vec![ClusterEvent::clone(&event)];
                while let Ok(event) = events.try_recv() {
                    batch.push(ClusterEvent::clone(&event));
                }
                if let Err(error) = handle.notify(batch).await {
                    tracing::warn!(resource = handle.name(), %error, "notify failed");
                }
            }
        });
        let _ = queue.send(event);
        self.notifiers.insert(resource, queue);
    }

    fn remember_wanted(&self, group: &str, online: bool) {
        if let Err(error) = self.store.set_group_wanted(group, online) {
            tracing::error!(%error, "cannot record the group's wanted state");
        }
        if let Some(view) = self.view.groups.write().ok().as_mut().and_then(|groups| groups.get_mut(group)) {
            view.wanted_online = online;
        }
    }

    fn execute(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Online(resource) => self.call_online(resource),
                Action::Offline(resource) => self.call_offline(resource),
                Action::Terminate(resource) => {
                    if let Some(handle) = self.handles.get(&resource).cloned() {
                        tokio::spawn(async move {
                            let _ = handle.terminate().await;
                        });
                    }
                }
                Action::StartProbes(resource) => self.start_probes(resource),
                Action::StopProbes(resource) => self.stop_probes(&resource),
                Action::Schedule { after, input } => {
                    let inputs = self.inputs.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = inputs.send(input);
                    });
                }
                Action::Transition { resource, from, to, reason, failure } => {
                    self.transition(resource, from, to, reason, failure)
                }
                Action::GroupState { group, failed, reason } => {
                    if failed {
                        let policy = self.group_config(&group).map(|g| g.policy).unwrap_or_default();
                        let in_cluster = self.config.cluster.is_some() && self.owned.contains_key(&group);
                        self.decide(
                            &group,
                            "group-failed",
                            format!(
                                "a group whose resource fails more than restart_threshold ({}) times within \
                                 restart_period ({}) fails",
                                policy.restart_threshold,
                                humantime::format_duration(policy.restart_period)
                            ),
                            vec![reason.clone()],
                            if in_cluster {
                                "failed here: it fails over to another node once offline".into()
                            } else {
                                format!(
                                    "failed: retried after retry_period ({}) or `steward online`",
                                    humantime::format_duration(policy.retry_period)
                                )
                            },
                        );
                    }
                    if failed && self.owned.contains_key(&group) {
                        // Handed on once nothing of it runs here any more.
                        self.failing_over.insert(group.clone());
                    }
                    if let Some(view) = self.view.groups.write().ok().as_mut().and_then(|g| g.get_mut(&group)) {
                        view.reason = if failed { reason.clone() } else { String::new() };
                    }
                    self.refresh_group(&group);
                    tracing::warn!(%group, failed, %reason, "group state");
                    self.view.publish(NodeEvent {
                        kind: if failed { "group-failed" } else { "group-recovered" }.into(),
                        resource: None,
                        group,
                        from: None,
                        to: None,
                        reason,
                        ..blank_event()
                    });
                }
                Action::RestartCounted { resource, restarts_in_period } => {
                    self.decide_restart(&resource, restarts_in_period);
                    let total = self
                        .view
                        .metrics_of(&resource)
                        .map_or(0, |m| m.restarts_total.fetch_add(1, Ordering::Relaxed) + 1);
                    if let Some(view) = self.view.resources.write().ok().as_mut().and_then(|r| r.get_mut(&resource)) {
                        view.restarts_in_period = restarts_in_period;
                        view.restarts_total = total;
                    }
                    self.update_record(&resource, |record| record.restarts_total = total);
                    let group = self.group_name(&resource);
                    self.view.publish(NodeEvent {
                        kind: "restart".into(),
                        resource: Some(resource),
                        group,
                        reason: format!("restart {restarts_in_period} in the current period"),
                        ..blank_event()
                    });
                }
            }
        }
    }

    fn transition(
        &mut self,
        resource: String,
        from: ResourceState,
        to: ResourceState,
        reason: String,
        failure: Option<FailureKind>,
    ) {
        let kind = failure.map(FailureKind::as_str);
        tracing::info!(%resource, ?from, ?to, kind, %reason, "transition");
        let mut failures = None;
        if to == ResourceState::Failed {
            let metrics = self.view.metrics_of(&resource);
            if let (Some(metrics), Some(failure)) = (&metrics, failure) {
                metrics.failures_by_kind[failure.index()].fetch_add(1, Ordering::Relaxed);
            }
            failures = metrics.map(|m| m.failures_total.fetch_add(1, Ordering::Relaxed) + 1);
        }
        if let Some(view) = self.view.resources.write().ok().as_mut().and_then(|r| r.get_mut(&resource)) {
            view.state = to;
            view.reason = reason.clone();
            // Progress belongs to the pending call that reported it.
            view.progress = None;
            if failure.is_some() {
                view.last_failure_kind = failure;
            }
            if let Some(failures) = failures {
                view.failures_total = failures;
            }
            if to == ResourceState::Online {
                view.restarts_in_period = self.engine.restarts(&resource);
            }
        }
        let summary = format!("{from:?} -> {to:?}: {reason}");
        self.update_record(&resource, |record| {
            record.last_transition = summary;
            record.last_transition_unix_ms = unix_ms();
            if let Some(failures) = failures {
                record.failures_total = failures;
            }
        });
        let group = self.group_name(&resource);
        self.refresh_group(&group);
        match (from, to) {
            (_, ResourceState::Online) => self.notify_peers(&resource, ClusterEvent::PeerOnline(resource.clone())),
            (ResourceState::Online | ResourceState::OfflinePending, ResourceState::Offline | ResourceState::Failed) => {
                self.notify_peers(&resource, ClusterEvent::PeerOffline(resource.clone()))
            }
            _ => {}
        }
        self.view.publish(NodeEvent {
            kind: "transition".into(),
            resource: Some(resource),
            group,
            from: Some(from),
            to: Some(to),
            failure_kind: failure,
            reason,
            ..blank_event()
        });
    }

    /// Changes a resource's record in memory; [`Node::flush_records`] writes
    /// the changed ones together, once per input.
    fn update_record(&mut self, resource: &str, change: impl FnOnce(&mut ResourceRecord)) {
        let record =
            self.records.entry(resource.to_string()).or_insert_with(|| self.store.record(resource).unwrap_or_default());
        change(record);
        self.dirty_records.insert(resource.to_string());
    }

    /// One durable write for every record an input changed: starting 10,000
    /// resources must not cost 20,000 synced commits.
    fn flush_records(&mut self) {
        if self.dirty_records.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.dirty_records);
        let changed: Vec<(&str, &ResourceRecord)> =
            dirty.iter().filter_map(|name| self.records.get(name).map(|record| (name.as_str(), record))).collect();
        if let Err(error) = self.store.set_records(&changed) {
            tracing::error!(%error, "cannot record the resources' history");
        }
    }

    /// The group `resource` belongs to, through the index.
    fn group_of(&self, resource: &str) -> Option<&GroupConfig> {
        self.group_index.get(resource).and_then(|at| self.config.groups.get(*at))
    }

    fn group_name(&self, resource: &str) -> String {
        self.group_of(resource).map(|g| g.name.clone()).unwrap_or_default()
    }

    /// Derives one group's state, so a transition's event is published only
    /// after the group it changes reads the new state: a client that sees the
    /// last resource come online must also see its group online.
    fn refresh_group(&self, group: &str) {
        let Ok(mut groups) = self.view.groups.write() else { return };
        if let Some(view) = groups.get_mut(group) {
            view.state = self.group_state(group, view).to_string();
        }
    }

    fn group_state(&self, name: &str, view: &GroupView) -> &'static str {
        let states: Vec<ResourceState> = view.resources.iter().filter_map(|r| self.engine.state(r)).collect();
        let all = |state: ResourceState| states.iter().all(|s| *s == state);
        if self.engine.group_failed(name) {
            "failed"
        } else if all(ResourceState::Online) {
            "online"
        } else if states.iter().all(|s| matches!(s, ResourceState::Offline | ResourceState::Unknown)) {
            "offline"
        } else if states.iter().any(|s| matches!(s, ResourceState::OnlinePending | ResourceState::OfflinePending)) {
            "pending"
        } else {
            "partial"
        }
    }

    fn call_online(&mut self, resource: String) {
        let Some(handle) = self.handles.get(&resource).cloned() else { return };
        let internal = self.internal_sender.clone();
        let metrics = self.view.metrics_of(&resource);
        *self.attempts.entry(resource.clone()).or_insert(0) += 1;
        let context = self.call_context(&resource);
        let type_name = handle.plugin().type_name().to_string();
        if !self.plugins.contains_key(&type_name) {
            // Its file left the plugin directory: what ran kept running, but
            // nothing new starts on a type the operator removed.
            let reason = format!(
                "the plugin of type `{type_name}` was removed from {}; put a plugin file for it back",
                self.config.plugin_dir.display()
            );
            let failure = Failure::new(FailureKind::PluginRemoved, reason);
            let _ = self.inputs.send(Input::OnlineDone { resource, result: Err((failure, Severity::Final)) });
            return;
        }
        tokio::spawn(async move {
            let started = Instant::now();
            // A new version of its plugin takes over here, between calls;
            // otherwise the worker re-creates a discarded sandbox itself, so
            // a restart costs the terminate and this one round trip.
            let outdated = handle.running_version().as_deref() != Some(handle.plugin().hash());
            let mut result = if outdated { handle.reopen().await.map(|()| None) } else { Ok(None) };
            if result.is_ok() {
                result = handle.online(&context).await.map(Some);
            }
            if let Some(metrics) = metrics {
                metrics.online_latency.observe(started.elapsed());
            }
            let running = match &result {
                Ok(Some(processes)) => live::Running::answered(&handle, processes.clone()),
                // What a failed online left running is still worth recording.
                _ => live::Running::asked(&handle).await,
            };
            let result = result.map(|_| ()).map_err(|error| (error.failure(), severity(&error)));
            let done = Input::OnlineDone { resource, result };
            let _ = internal.send(live::Internal::CallDone { running, done });
        });
    }

    fn call_offline(&mut self, resource: String) {
        let Some(handle) = self.handles.get(&resource).cloned() else { return };
        let internal = self.internal_sender.clone();
        let metrics = self.view.metrics_of(&resource);
        let context = self.call_context(&resource);
        let hurried = self.hurried.remove(&resource);
        tokio::spawn(async move {
            let started = Instant::now();
            let graceful = if hurried {
                // The lease ends before a graceful offline could: stop now.
                tracing::warn!(resource = %resource, "terminating: a graceful offline would outlast the lease");
                handle.terminate().await.map(|()| Vec::new())
            } else {
                handle.offline(&context).await
            };
            let running = match graceful {
                Ok(processes) => live::Running::answered(&handle, processes),
                Err(error) => {
                    // Offline must end offline: what the plugin could not stop, terminate stops.
                    tracing::warn!(resource = %resource, %error, "offline failed; terminating");
                    let _ = handle.terminate().await;
                    live::Running::asked(&handle).await
                }
            };
            if let Some(metrics) = metrics {
                metrics.offline_latency.observe(started.elapsed());
            }
            let done = Input::OfflineDone { resource };
            let _ = internal.send(live::Internal::CallDone { running, done });
        });
    }

    /// Has the resource's worker probe it on its schedule from now on.
    fn start_probes(&mut self, resource: String) {
        let Some(handle) = self.handles.get(&resource).cloned() else { return };
        let Some(config) = self.resource_index.get(&resource).and_then(|at| self.config.resources.get(*at)) else {
            return;
        };
        let plugin = handle.plugin();
        let timing = &plugin.metadata().timing;
        let looks_every = probe_interval(
            config.timing.looks_alive_interval,
            timing.looks_alive_interval_ms,
            DEFAULT_LOOKS_ALIVE_INTERVAL,
        );
        let is_every =
            probe_interval(config.timing.is_alive_interval, timing.is_alive_interval_ms, DEFAULT_IS_ALIVE_INTERVAL);
        let metrics = self.view.metrics_of(&resource).unwrap_or_default();
        let schedule = self.probes.start(resource, looks_every, is_every, metrics);
        handle.start_probes(schedule.generation, looks_every, is_every, false);
    }

    fn stop_probes(&mut self, resource: &str) {
        let Some(handle) = self.handles.get(resource) else { return };
        // Without a schedule here, the worker ended it itself (its probe
        // failed): there is nothing to tell it.
        if self.probes.stop(resource).is_some() {
            handle.stop_probes();
        }
    }

    /// What the workers report: a plugin's `signal-failure` is acted on at
    /// once, not at the next probe; a lost worker is logged and published;
    /// once its instances are re-created in a new worker, the online ones
    /// are probed at once, and only those that fail go through the policy.
    fn on_worker_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Reported(Report::ProbeFailed { generation, failure }) => {
                // A failure of a schedule stopped meanwhile is old news.
                if let Some(resource) = self.probes.ended(generation) {
                    self.apply(Input::Failed { resource, failure });
                }
            }
            WorkerEvent::Reported(Report::ProbeStats(counts)) => {
                for count in counts {
                    if let Some(metrics) = self.probes.metrics(count.generation) {
                        metrics.probe_latency.add(&count.buckets, count.nanos);
                    }
                }
            }
            WorkerEvent::Reported(Report::Notice { resource, kind }) => self.on_notice(resource, kind),
            WorkerEvent::Reported(Report::SignalledFailure { resource, reason }) => {
                self.view.publish(NodeEvent {
                    kind: "signalled-failure".into(),
                    resource: Some(resource.clone()),
                    group: self.group_name(&resource),
                    reason: reason.clone(),
                    ..blank_event()
                });
                let failure = Failure::new(FailureKind::Signalled, format!("the plugin signalled failure: {reason}"));
                self.apply(Input::Failed { resource, failure });
            }
            WorkerEvent::Lost { worker, pid, reason } => {
                self.view.publish(NodeEvent {
                    kind: "worker-lost".into(),
                    reason: format!("monitor worker `{worker}` (pid {pid}) was lost: {reason}"),
                    ..blank_event()
                });
            }
            WorkerEvent::Restarted { worker, pid, reopened, failed, took } => {
                self.view.publish(NodeEvent {
                    kind: "worker-restarted".into(),
                    reason: format!(
                        "monitor worker `{worker}` runs again as pid {pid}: {} instance(s) re-created, {} failed, {} ms after the loss",
                        reopened.len(),
                        failed.len(),
                        took.as_millis()
                    ),
                    ..blank_event()
                });
                // Probing resumes where it was, with one probe each at once:
                // the re-created instances must be confirmed healthy.
                for resource in &reopened {
                    if let (Some(schedule), Some(handle)) = (self.probes.schedule(resource), self.handles.get(resource))
                    {
                        handle.start_probes(schedule.generation, schedule.looks_every, schedule.is_every, true);
                    }
                }
                for (resource, failure) in failed {
                    if self.engine.state(&resource) == Some(ResourceState::Online) {
                        let failure = failure.context("cannot re-create its instance after the worker was lost");
                        self.apply(Input::Failed { resource, failure });
                    }
                }
            }
        }
    }

    /// What a resource's sandbox reported besides failures: each becomes
    /// an event and a counter; progress also shows on the resource while
    /// its online or offline is pending.
    fn on_notice(&mut self, resource: String, kind: steward_monitor::events::EventKind) {
        use steward_monitor::events::EventKind;
        let Some(metrics) = self.view.metrics_of(&resource) else { return };
        let (event, reason) = match kind {
            EventKind::Progress { message } => {
                let pending = matches!(
                    self.engine.state(&resource),
                    Some(ResourceState::OnlinePending | ResourceState::OfflinePending)
                );
                if let Some(view) = self.view.resources.write().ok().as_mut().and_then(|r| r.get_mut(&resource))
                    && pending
                {
                    view.progress = Some(message.clone());
                }
                ("progress", message)
            }
            EventKind::LogsDropped { count } => {
                metrics.logs_dropped_total.fetch_add(count, Ordering::Relaxed);
                ("logs-dropped", format!("{count} log record(s) dropped by the rate limit"))
            }
            EventKind::ProcessSpawned { pid, program } => {
                metrics.processes_spawned_total.fetch_add(1, Ordering::Relaxed);
                ("process-spawned", format!("spawned {program} as pid {pid}"))
            }
            EventKind::CapabilityDenied { detail } => {
                metrics.capability_denials_total.fetch_add(1, Ordering::Relaxed);
                ("capability-denied", detail)
            }
            // Failures reach the loop as call results and probe outcomes.
            EventKind::Failed { .. } | EventKind::SignalledFailure { .. } => return,
        };
        let group = self.group_name(&resource);
        self.view.publish(NodeEvent { kind: event.into(), resource: Some(resource), group, reason, ..blank_event() });
    }
}

/// Whether a resource in `state` runs (or is on its way up or down), and
/// so hears of the events `notify` delivers.
fn runs(state: Option<ResourceState>) -> bool {
    matches!(state, Some(ResourceState::Online | ResourceState::OnlinePending | ResourceState::OfflinePending))
}

/// What the state store remembers of a resource.
#[derive(Default)]
struct Stored {
    record: ResourceRecord,
    processes: Vec<steward_monitor::process::TrackedProcess>,
}

/// Reads what the store remembers of `resources`.
fn read_stored(store: &StateStore, resources: &[ResourceConfig]) -> HashMap<String, Stored> {
    resources
        .iter()
        .map(|resource| {
            let stored = Stored {
                record: store.record(&resource.name).unwrap_or_default(),
                processes: store.processes(&resource.name).unwrap_or_default(),
            };
            (resource.name.clone(), stored)
        })
        .collect()
}

/// The next tick of `interval`; never, without one.
async fn next_tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Opens `handles` in their workers, all at once (a failed open is not
/// fatal: online re-creates the sandbox, under the policy); what each runs
/// then, for the loop to record.
async fn open_all(handles: Vec<RemoteResource>) -> Vec<live::Running> {
    let opens = handles.iter().map(|handle| async move {
        if let Err(error) = handle.reopen().await {
            tracing::error!(resource = %handle.name(), %error, "cannot open the resource");
        }
        live::Running::asked(handle).await
    });
    futures_util::future::join_all(opens).await
}

/// The binary monitor workers run: this very one. Through `/proc/self/exe`
/// it stays the daemon's own build even after a package upgrade replaces
/// the file on disk, so the two sides always speak the same protocol.
fn worker_program() -> Result<PathBuf, Error> {
    let own = Path::new("/proc/self/exe");
    if own.exists() {
        return Ok(own.to_path_buf());
    }
    std::env::current_exe().map_err(|source| Error::Io {
        context: "cannot find the steward binary to start monitor workers".into(),
        source,
    })
}

/// Who is probed, and how: each probing resource's schedule, numbered by
/// a generation so that a report of a schedule since replaced or stopped
/// is recognised as old news.
#[derive(Default)]
struct ProbeRegistry {
    by_resource: HashMap<String, ProbeSchedule>,
    by_generation: HashMap<u64, (String, Arc<ResourceMetrics>)>,
    last_generation: u64,
}

/// How one resource is probed.
#[derive(Debug, Clone, Copy)]
struct ProbeSchedule {
    generation: u64,
    looks_every: Duration,
    is_every: Duration,
}

impl ProbeRegistry {
    /// A new schedule for `resource`, replacing its current one.
    fn start(
        &mut self,
        resource: String,
        looks_every: Duration,
        is_every: Duration,
        metrics: Arc<ResourceMetrics>,
    ) -> ProbeSchedule {
        self.last_generation += 1;
        let schedule = ProbeSchedule { generation: self.last_generation, looks_every, is_every };
        if let Some(replaced) = self.by_resource.insert(resource.clone(), schedule) {
            self.by_generation.remove(&replaced.generation);
        }
        self.by_generation.insert(schedule.generation, (resource, metrics));
        schedule
    }

    /// Ends `resource`'s schedule; `None` when it had none.
    fn stop(&mut self, resource: &str) -> Option<ProbeSchedule> {
        let schedule = self.by_resource.remove(resource)?;
        self.by_generation.remove(&schedule.generation);
        Some(schedule)
    }

    /// The schedule `generation` ended in its worker (a probe failed): the
    /// resource it probed, unless it was replaced or stopped meanwhile.
    fn ended(&mut self, generation: u64) -> Option<String> {
        let (resource, _) = self.by_generation.remove(&generation)?;
        self.by_resource.remove(&resource);
        Some(resource)
    }

    fn schedule(&self, resource: &str) -> Option<ProbeSchedule> {
        self.by_resource.get(resource).copied()
    }

    fn metrics(&self, generation: u64) -> Option<&Arc<ResourceMetrics>> {
        self.by_generation.get(&generation).map(|(_, metrics)| metrics)
    }
}

/// A probe interval: the resource's override, else the type's proposal
/// (zero meaning none), else the host's default.
fn probe_interval(configured: Option<Duration>, proposed_ms: u32, default: Duration) -> Duration {
    configured.unwrap_or(match proposed_ms {
        0 => default,
        ms => Duration::from_millis(u64::from(ms)),
    })
}

fn severity(error: &CallError) -> Severity {
    match error {
        CallError::Plugin { error: PluginError::Fatal(_) | PluginError::InvalidConfig(_), .. } => Severity::Final,
        CallError::CapabilityDenied { .. } => Severity::Final,
        _ => Severity::Restartable,
    }
}

/// The monitor's spec for a configured resource.
pub fn resource_spec(
    resource: &ResourceConfig,
    plugin: &Plugin,
    adopt: Vec<steward_monitor::process::TrackedProcess>,
) -> ResourceSpec {
    let mut spec = ResourceSpec::new(&resource.name, plugin);
    spec.properties = resource.properties.clone();
    spec.grants = resource.grants.clone();
    if let Some(mib) = resource.memory_limit_mib {
        spec.memory_limit_bytes = mib << 20;
    }
    if let Some(pending) = resource.timing.pending_timeout {
        spec.timeouts.pending = pending;
    }
    if let Some(probe) = resource.timing.probe_timeout {
        spec.timeouts.probe = probe;
    }
    spec.adopt = adopt;
    spec
}

/// The policy engine's view of `groups`, whose members are among
/// `resources`: names, dependencies and policies, found through one index.
fn group_specs(groups: &[GroupConfig], resources: &[ResourceConfig]) -> Vec<GroupSpec> {
    let by_name: HashMap<&str, &ResourceConfig> =
        resources.iter().map(|resource| (resource.name.as_str(), resource)).collect();
    let member = |name: &String| MemberSpec {
        name: name.clone(),
        depends_on: by_name.get(name.as_str()).map(|r| r.depends_on.clone()).unwrap_or_default(),
    };
    groups
        .iter()
        .map(|group| GroupSpec {
            name: group.name.clone(),
            members: group.resources.iter().map(member).collect(),
            policy: group.policy,
        })
        .collect()
}

/// Every configured resource as the view shows it before its type is loaded.
fn waiting_resources(config: &NodeConfig) -> BTreeMap<String, ResourceView> {
    let group_of: HashMap<&str, &str> = config
        .groups
        .iter()
        .flat_map(|group| group.resources.iter().map(|member| (member.as_str(), group.name.as_str())))
        .collect();
    let view = |resource: &ResourceConfig| ResourceView {
        name: resource.name.clone(),
        type_name: resource.type_name.clone(),
        group: group_of.get(resource.name.as_str()).map(|g| g.to_string()).unwrap_or_default(),
        state: ResourceState::Unknown,
        reason: format!("waiting for its type `{}`: the plugin directory is being loaded", resource.type_name),
        last_failure_kind: None,
        progress: None,
        depends_on: resource.depends_on.clone(),
        restarts_in_period: 0,
        restarts_total: 0,
        failures_total: 0,
        pids: Vec::new(),
        worker: String::new(),
        plugin_hash: String::new(),
        properties: resource.shown_properties(),
    };
    config.resources.iter().map(|resource| (resource.name.clone(), view(resource))).collect()
}

/// Every configured group as the view shows it before its plugins are loaded.
fn waiting_groups(config: &NodeConfig) -> BTreeMap<String, GroupView> {
    let view = |group: &GroupConfig| GroupView {
        name: group.name.clone(),
        state: "offline".into(),
        reason: "waiting for the plugin directory to be loaded".into(),
        wanted_online: false,
        fencing_token: None,
        resources: group.resources.clone(),
    };
    config.groups.iter().map(|group| (group.name.clone(), view(group))).collect()
}

fn blank_event() -> NodeEvent {
    NodeEvent {
        seq: 0,
        unix_ms: 0,
        uptime_us: 0,
        kind: String::new(),
        resource: None,
        group: String::new(),
        from: None,
        to: None,
        failure_kind: None,
        reason: String::new(),
        by: None,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
