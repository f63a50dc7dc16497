//! The monitor: hosts resource instances and calls into them under deadlines
//! and limits, so that a faulty plugin fails only itself.
//!
//! Each resource gets its own `Store` (its own memory, memory cap, WASI
//! context, process table). Calls into one resource are serialized by an
//! async mutex, as a resource DLL's entry points are never re-entered; calls
//! into different resources run concurrently on tokio.
//!
//! Every call has a deadline, enforced twice: the epoch callback traps a
//! guest that computes past it, and an async timeout cancels a guest
//! blocked in a host import. A trap, a deadline, the memory cap or an
//! oversized return discards the store (which kills every process the
//! instance spawned) and is reported with its reason; the resource can be
//! reopened in a fresh store. A plugin that returns an error keeps its
//! store: it failed the operation, not the sandbox.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, broadcast};
use tracing::Instrument;
use wasmtime::Store;
use wasmtime::component::{ResourceAny, TypedFunc};

use crate::bindings::{
    CallContext, CheckLevel, ClusterEvent, Health, NodeIdentity, Plugin as PluginWorld, PluginError, Timing,
};
use crate::error::{Error, Result};
use crate::events::{EVENT_BACKLOG, EventKind, MonitorEvent};
use crate::plugin::Plugin;
use crate::runtime::{EpochAwake, MAX_MEMORY_LIMIT_BYTES, one_line};
use crate::sandbox::SandboxState;
use steward_config::grants::Grants;

pub use crate::call::{CallError, Failure, FailureKind, Operation, describe_plugin_error};
use crate::call::{begin_call, finish_call, timed};

/// The memory cap of a resource that sets none.
pub const DEFAULT_MEMORY_LIMIT_BYTES: usize = 64 << 20;

/// The longest `is-alive` reason kept: one line for operators, not a dump.
pub const MAX_REASON_BYTES: usize = 64 << 10;

/// The longest `control` output accepted.
pub const MAX_CONTROL_OUTPUT_BYTES: usize = 1 << 20;

/// The longest error text a plugin may return; longer text is cut.
pub const MAX_ERROR_TEXT_BYTES: usize = 8 << 10;

/// The deadline of each operation of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timeouts {
    /// `open`.
    pub open: Duration,
    /// `online` and `offline` (the pending timeout).
    pub pending: Duration,
    /// `terminate`.
    pub terminate: Duration,
    /// `looks-alive` and `is-alive`.
    pub probe: Duration,
    /// `control`.
    pub control: Duration,
    /// `notify`.
    pub notify: Duration,
}

impl Default for Timeouts {
    /// The classic cluster service's pending timeout (180 s); short
    /// deadlines for what must be quick.
    fn default() -> Self {
        Timeouts {
            open: Duration::from_secs(10),
            pending: Duration::from_secs(180),
            terminate: Duration::from_secs(5),
            probe: Duration::from_secs(5),
            control: Duration::from_secs(30),
            notify: Duration::from_secs(5),
        }
    }
}

impl Timeouts {
    /// The defaults, with what the type's metadata proposes applied.
    pub fn for_type(timing: &Timing) -> Self {
        let mut timeouts = Timeouts::default();
        if timing.pending_timeout_ms > 0 {
            timeouts.pending = Duration::from_millis(u64::from(timing.pending_timeout_ms));
        }
        if timing.probe_timeout_ms > 0 {
            timeouts.probe = Duration::from_millis(u64::from(timing.probe_timeout_ms));
        }
        timeouts
    }

    /// The deadline of `operation`.
    pub fn of(&self, operation: Operation) -> Duration {
        match operation {
            Operation::Metadata | Operation::Validate => crate::plugin::METADATA_TIMEOUT,
            Operation::Open => self.open,
            Operation::Online | Operation::Offline => self.pending,
            Operation::Terminate => self.terminate,
            Operation::LooksAlive | Operation::IsAlive => self.probe,
            Operation::Control => self.control,
            Operation::Notify => self.notify,
        }
    }
}

/// One resource to open: its name, properties, grants and limits.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ResourceSpec {
    /// The resource's name.
    pub name: String,
    /// Its properties, as text.
    pub properties: Vec<(String, String)>,
    /// What it may reach.
    pub grants: Grants,
    /// Its memory cap.
    pub memory_limit_bytes: usize,
    /// Its call deadlines.
    pub timeouts: Timeouts,
    /// The fencing token handed to it.
    pub fencing_token: u64,
    /// Processes its previous instance spawned (recorded by the node), to
    /// adopt if they still run.
    pub adopt: Vec<crate::process::TrackedProcess>,
}

impl ResourceSpec {
    /// A resource with no grants, the default memory cap and the type's
    /// proposed timeouts.
    pub fn new(name: &str, plugin: &Plugin) -> Self {
        ResourceSpec {
            name: name.to_string(),
            properties: Vec::new(),
            grants: Grants::default(),
            memory_limit_bytes: DEFAULT_MEMORY_LIMIT_BYTES,
            timeouts: Timeouts::for_type(&plugin.metadata().timing),
            fencing_token: 0,
            adopt: Vec::new(),
        }
    }
}

/// Hosts resource instances for one node.
pub struct Monitor {
    node_name: String,
    cluster_name: String,
    events: broadcast::Sender<MonitorEvent>,
}

impl Monitor {
    /// A monitor for node `node_name`, running alone.
    pub fn new(node_name: &str) -> Self {
        Monitor::in_cluster(node_name, "")
    }

    /// A monitor for node `node_name` of cluster `cluster_name` (empty:
    /// alone), the identity its plugins read through `node-info`.
    pub fn in_cluster(node_name: &str, cluster_name: &str) -> Self {
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        Monitor { node_name: node_name.to_string(), cluster_name: cluster_name.to_string(), events }
    }

    /// Events about every resource of this monitor, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MonitorEvent> {
        self.events.subscribe()
    }

    /// Opens a resource: checks its grants and properties, creates its
    /// sandbox and calls the plugin's `open`.
    pub async fn open(&self, plugin: Arc<Plugin>, spec: ResourceSpec) -> Result<ResourceHandle> {
        let handle = self.prepare(plugin, spec)?;
        handle.reopen().await.map_err(|source| Error::Call { resource: handle.name().to_string(), source })?;
        Ok(handle)
    }

    /// Checks a resource's grants and properties and makes its handle, with
    /// no sandbox yet: [`ResourceHandle::reopen`] creates one. The node uses
    /// it so that a plugin whose `open` fails at start is retried by the
    /// policy engine rather than stopping the node.
    pub fn prepare(&self, plugin: Arc<Plugin>, spec: ResourceSpec) -> Result<ResourceHandle> {
        spec.grants.configure(&spec.name)?;
        if spec.memory_limit_bytes > MAX_MEMORY_LIMIT_BYTES {
            return Err(Error::InvalidGrant {
                resource: spec.name.clone(),
                grant: format!("memory limit {} MiB", spec.memory_limit_bytes >> 20),
                reason: format!("the most a resource may be given is {} MiB", MAX_MEMORY_LIMIT_BYTES >> 20),
            });
        }
        let problems = crate::properties::check(&plugin.metadata().properties, &spec.properties);
        if !problems.is_empty() {
            return Err(Error::InvalidProperties { resource: spec.name.clone(), problems });
        }
        let span = tracing::info_span!("resource", name = %spec.name, r#type = %plugin.type_name());
        let handle = ResourceHandle {
            shared: Arc::new(Shared {
                span,
                node_name: self.node_name.clone(),
                cluster_name: self.cluster_name.clone(),
                events: self.events.clone(),
                plugin,
                spec,
                slot: Mutex::new(Slot { live: None, last_failure: None }),
            }),
        };
        Ok(handle)
    }
}

/// A live resource: the monitor's handle to call into it. Cheap to clone;
/// clones share the instance.
#[derive(Clone)]
pub struct ResourceHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ResourceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceHandle").field("name", &self.name()).finish()
    }
}

struct Shared {
    span: tracing::Span,
    node_name: String,
    cluster_name: String,
    events: broadcast::Sender<MonitorEvent>,
    plugin: Arc<Plugin>,
    spec: ResourceSpec,
    slot: Mutex<Slot>,
}

struct Slot {
    live: Option<Live>,
    last_failure: Option<CallError>,
}

struct Live {
    store: Store<SandboxState>,
    bindings: PluginWorld,
    instance: ResourceAny,
    /// `looks-alive`, typechecked once: the generated bindings typecheck on
    /// every call, which costs more than the call on the hot probe path.
    looks_alive: TypedFunc<(ResourceAny,), (bool,)>,
}

/// Runs one guest call on `$live` under the deadline of `$operation`, then
/// applies `$check` to its value; `settle` discards the store on a sandbox
/// failure. A macro because the call borrows the store it runs in.
macro_rules! call_instance {
    ($self:ident, $operation:expr, |$guest:ident, $live_funcs:ident, $store:ident, $instance:ident| $call:expr, |$value:ident, $denials:ident| $check:expr) => {{
        let operation = $operation;
        let limit = $self.shared.spec.timeouts.of(operation);
        let span = tracing::debug_span!(parent: &$self.shared.span, "call", op = %operation);
        let mut slot = $self.shared.slot.lock().await;
        let outcome = match slot.live.as_mut() {
            None => Err(slot.no_instance()),
            Some(live) => {
                let $instance = live.instance;
                let $guest = live.bindings.steward_resource_resource_type().instance();
                let $live_funcs = &live.looks_alive;
                let $store = &mut live.store;
                let ticket = begin_call($store, limit);
                let raw = timed(ticket.deadline, $call).instrument(span).await;
                finish_call($store, operation, limit, raw).and_then(|$value| {
                    let $denials = $store.data_mut().processes.take_denials();
                    $check
                })
            }
        };
        $self.settle(&mut slot, outcome)
    }};
}

impl ResourceHandle {
    /// The resource's name.
    pub fn name(&self) -> &str {
        &self.shared.spec.name
    }

    /// Its type.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.shared.plugin
    }

    /// Whether it has a live sandbox (false after a failure discarded it).
    pub async fn is_live(&self) -> bool {
        self.shared.slot.lock().await.live.is_some()
    }

    /// The failure that last discarded its sandbox, if any.
    pub async fn last_failure(&self) -> Option<CallError> {
        self.shared.slot.lock().await.last_failure.clone()
    }

    /// The processes the instance spawned and still tracks.
    pub async fn tracked_processes(&self) -> Vec<u32> {
        let slot = self.shared.slot.lock().await;
        slot.live.as_ref().map(|live| live.store.data().processes.pids()).unwrap_or_default()
    }

    /// The still-running processes the instance tracks, for the node to record.
    pub async fn running_processes(&self) -> Vec<crate::process::TrackedProcess> {
        let mut slot = self.shared.slot.lock().await;
        slot.live.as_mut().map(|live| live.store.data_mut().processes.running()).unwrap_or_default()
    }

    /// Discards the sandbox but leaves the processes it spawned running
    /// (the node is stopping and was told to leave resources running).
    pub async fn release(&self) {
        let mut slot = self.shared.slot.lock().await;
        if let Some(live) = slot.live.as_mut() {
            live.store.data_mut().processes.release_all();
        }
        slot.live = None;
    }

    /// Creates a fresh sandbox and opens the resource in it, replacing any
    /// previous one (whose processes are killed).
    pub async fn reopen(&self) -> Result<(), CallError> {
        let shared = &self.shared;
        let mut slot = shared.slot.lock().await;
        slot.live = None;
        let outcome = self.instantiate().instrument(shared.span.clone()).await;
        let outcome = outcome.map(|live| {
            slot.live = Some(live);
        });
        self.settle(&mut slot, outcome)
    }

    /// Brings the resource online.
    pub async fn online(&self, context: &CallContext) -> Result<(), CallError> {
        call_instance!(
            self,
            Operation::Online,
            |guest, _typed, store, instance| {
                // The `fencing-token` import answers with the token of the
                // ownership this call is made under.
                store.data_mut().fencing_token = context.fencing_token;
                guest.call_online(&mut *store, instance, context)
            },
            |result, denials| plugin_result(Operation::Online, result, &denials)
        )
    }

    /// Takes the resource offline gracefully.
    pub async fn offline(&self, context: &CallContext) -> Result<(), CallError> {
        call_instance!(
            self,
            Operation::Offline,
            |guest, _typed, store, instance| {
                store.data_mut().fencing_token = context.fencing_token;
                guest.call_offline(&mut *store, instance, context)
            },
            |result, denials| plugin_result(Operation::Offline, result, &denials)
        )
    }

    /// Takes the resource offline at once: calls the plugin's `terminate`,
    /// then kills every process the instance spawned, whatever the plugin did.
    pub async fn terminate(&self) -> Result<(), CallError> {
        let outcome = call_instance!(
            self,
            Operation::Terminate,
            |guest, _typed, store, instance| guest.call_terminate(&mut *store, instance),
            |done, _denials| Ok(done)
        );
        let mut slot = self.shared.slot.lock().await;
        if let Some(live) = slot.live.as_mut() {
            live.store.data_mut().processes.kill_all();
        }
        outcome
    }

    /// The cheap probe, through the function typechecked at instantiation
    /// rather than the bindings, which look the export up and typecheck it
    /// on every call.
    pub async fn looks_alive(&self) -> Result<bool, CallError> {
        call_instance!(
            self,
            Operation::LooksAlive,
            |_guest, typed, store, instance| typed.call_async(&mut *store, (instance,)),
            |alive, _denials| Ok(alive.0)
        )
    }

    /// The thorough probe.
    pub async fn is_alive(&self, level: CheckLevel) -> Result<Health, CallError> {
        call_instance!(
            self,
            Operation::IsAlive,
            |guest, _typed, store, instance| guest.call_is_alive(&mut *store, instance, level),
            |health, _denials| {
                bounded_size(Operation::IsAlive, "reason", health.reason.len(), MAX_REASON_BYTES).map(|()| health)
            }
        )
    }

    /// A type-specific operation.
    pub async fn control(&self, code: &str, input: &str) -> Result<String, CallError> {
        call_instance!(
            self,
            Operation::Control,
            |guest, _typed, store, instance| guest.call_control(&mut *store, instance, code, input),
            |result, denials| {
                let output = plugin_result(Operation::Control, result, &denials)?;
                bounded_size(Operation::Control, "output", output.len(), MAX_CONTROL_OUTPUT_BYTES).map(|()| output)
            }
        )
    }

    /// Tells the resource about a cluster event.
    pub async fn notify(&self, event: &ClusterEvent) -> Result<(), CallError> {
        call_instance!(
            self,
            Operation::Notify,
            |guest, _typed, store, instance| guest.call_notify(&mut *store, instance, event),
            |done, _denials| Ok(done)
        )
    }

    /// Discards the sandbox, killing the processes it spawned.
    pub async fn close(&self) {
        self.shared.slot.lock().await.live = None;
    }

    async fn instantiate(&self) -> Result<Live, CallError> {
        let shared = &self.shared;
        let spec = &shared.spec;
        let identity = NodeIdentity {
            node_name: shared.node_name.clone(),
            cluster_name: shared.cluster_name.clone(),
            resource_name: spec.name.clone(),
        };
        let state = SandboxState::for_resource(spec, identity, shared.events.clone())
            .map_err(|e| CallError::Instantiate { message: e.to_string() })?;
        let mut store = shared.plugin.runtime().new_store(state);
        let instantiate_error = |e: wasmtime::Error| CallError::Instantiate { message: one_line(&e) };
        let awake = EpochAwake::hold();
        let component_instance =
            shared.plugin.pre().instance_pre().instantiate_async(&mut store).await.map_err(instantiate_error)?;
        drop(awake);
        let bindings = PluginWorld::new(&mut store, &component_instance).map_err(instantiate_error)?;
        let looks_alive = component_instance
            .get_typed_func::<(ResourceAny,), (bool,)>(&mut store, shared.plugin.looks_alive_export())
            .map_err(instantiate_error)?;
        let limit = spec.timeouts.open;
        let ticket = begin_call(&mut store, limit);
        let guest = bindings.steward_resource_resource_type().instance();
        let call = guest.call_open(&mut store, &spec.name, &spec.properties);
        let raw = timed(ticket.deadline, call).await;
        let result = finish_call(&mut store, Operation::Open, limit, raw)?;
        let denials = store.data_mut().processes.take_denials();
        let instance = plugin_result(Operation::Open, result, &denials)?;
        Ok(Live { store, bindings, instance, looks_alive })
    }

    /// Records the outcome of a call: a sandbox failure discards the store;
    /// every failure is logged and sent as an event.
    fn settle<T>(&self, slot: &mut Slot, outcome: Result<T, CallError>) -> Result<T, CallError> {
        if let Err(error) = &outcome {
            let _entered = self.shared.span.enter();
            if error.discards_instance() {
                tracing::warn!(%error, "sandbox failed; discarding the instance");
                slot.live = None;
                slot.last_failure = Some(error.clone());
            } else {
                tracing::info!(%error, "call failed");
            }
            let event = MonitorEvent::now(self.name(), EventKind::Failed { error: error.clone() });
            let _ = self.shared.events.send(event);
        }
        outcome
    }
}

impl Slot {
    fn no_instance(&self) -> CallError {
        let last = match &self.last_failure {
            Some(failure) => failure.to_string(),
            None => "it was closed".to_string(),
        };
        CallError::NoInstance { last }
    }
}

/// A plugin's own result: an error after a denied capability is reported as
/// the denial, since that is what the operator must fix.
fn plugin_result<T>(
    operation: Operation,
    result: std::result::Result<T, PluginError>,
    denials: &[String],
) -> Result<T, CallError> {
    match result {
        Ok(value) => Ok(value),
        Err(_) if !denials.is_empty() => Err(CallError::CapabilityDenied { operation, detail: denials.join("; ") }),
        Err(error) => Err(CallError::Plugin { operation, error: cut_plugin_error(error) }),
    }
}

fn cut_plugin_error(error: PluginError) -> PluginError {
    let cut = |text: String| crate::guest_log::truncate(text, MAX_ERROR_TEXT_BYTES);
    match error {
        PluginError::InvalidConfig(text) => PluginError::InvalidConfig(cut(text)),
        PluginError::Transient(text) => PluginError::Transient(cut(text)),
        PluginError::Fatal(text) => PluginError::Fatal(cut(text)),
    }
}

fn bounded_size(operation: Operation, what: &str, bytes: usize, limit: usize) -> Result<(), CallError> {
    if bytes > limit {
        Err(CallError::OversizedReturn { operation, what: what.to_string(), bytes, limit })
    } else {
        Ok(())
    }
}
