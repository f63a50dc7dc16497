//! [`RemoteResource`]: the node's handle to one instance hosted in a
//! monitor worker. Each method is one request on the worker's pipe; a
//! worker lost before it answers ends the call with
//! [`CallError::WorkerLost`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Hosted, Worker, expect_done, unexpected};
use crate::bindings::{CallContext, CheckLevel, ClusterEvent, Health};
use crate::monitor::{CallError, ResourceSpec, Timeouts};
use crate::plugin::Plugin;
use crate::process::TrackedProcess;
use crate::worker::protocol::{Call, Request, Value};

/// The node's handle to a resource hosted in a worker. Cheap to clone.
#[derive(Clone)]
pub struct RemoteResource {
    inner: Arc<RemoteInner>,
}

struct RemoteInner {
    worker: Arc<Worker>,
    /// The version its next open uses.
    plugin: Mutex<Arc<Plugin>>,
    spec: ResourceSpec,
    online: Arc<AtomicBool>,
}

impl std::fmt::Debug for RemoteResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteResource").field("name", &self.name()).field("worker", &self.inner.worker.name).finish()
    }
}

impl RemoteResource {
    pub(super) fn new(worker: Arc<Worker>, plugin: Arc<Plugin>, spec: ResourceSpec) -> RemoteResource {
        let online = Arc::new(AtomicBool::new(false));
        RemoteResource { inner: Arc::new(RemoteInner { worker, plugin: Mutex::new(plugin), spec, online }) }
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        &self.inner.spec.name
    }

    /// The deadlines its worker holds its calls to.
    pub fn timeouts(&self) -> Timeouts {
        self.inner.spec.timeouts
    }

    /// The worker that hosts it.
    pub fn worker_name(&self) -> &str {
        &self.inner.worker.name
    }

    /// The plugin version its next open uses.
    pub fn plugin(&self) -> Arc<Plugin> {
        match self.inner.plugin.lock() {
            Ok(plugin) => plugin.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Makes `plugin` the version its next open uses.
    pub fn set_plugin(&self, plugin: Arc<Plugin>) {
        if let Ok(mut current) = self.inner.plugin.lock() {
            *current = plugin;
        }
    }

    /// The version of the instance in the worker now, if it was opened.
    pub fn running_version(&self) -> Option<String> {
        let hosted = self.inner.worker.hosted.lock().ok()?;
        let file = &hosted.get(self.name())?.plugin;
        file.file_stem().and_then(|s| s.to_str()).map(str::to_string)
    }

    /// Creates a fresh sandbox in the worker and opens the resource in it
    /// (with the current plugin version), replacing any previous one.
    pub async fn reopen(&self) -> Result<(), CallError> {
        self.inner.online.store(false, Ordering::Relaxed);
        let spec = self.inner.spec.clone();
        let file = self.record_hosted(&spec);
        self.inner.worker.send_open(file, spec, None, false).await
    }

    /// Re-creates the online instance with the current plugin version,
    /// between calls: the old instance is dropped without killing its
    /// processes, the new one adopts them in `open`, then `online` is
    /// called again (idempotent by the contract).
    pub async fn switch_version(&self, context: &CallContext) -> Result<(), CallError> {
        let mut spec = self.inner.spec.clone();
        spec.adopt = (self.inner.worker.options.recorded_processes)(&spec.name);
        let file = self.record_hosted(&spec);
        let outcome = self.inner.worker.send_open(file, spec, Some(context.clone()), true).await;
        self.inner.online.store(outcome.is_ok(), Ordering::Relaxed);
        outcome
    }

    /// Records that the worker hosts this resource with the current plugin
    /// version and `spec` (what a new worker re-creates); returns the
    /// version's file.
    fn record_hosted(&self, spec: &ResourceSpec) -> std::path::PathBuf {
        let file = self.plugin().version_file().to_path_buf();
        if let Ok(mut hosted) = self.inner.worker.hosted.lock() {
            let online = self.inner.online.clone();
            hosted.insert(spec.name.clone(), Hosted { plugin: file.clone(), spec: spec.clone(), online });
        }
        file
    }

    async fn call(&self, call: Call) -> Result<Value, CallError> {
        let resource = self.name().to_string();
        self.inner.worker.connection().request(|id| Request::Call { id, resource, call }).await
    }

    /// Whether it has a live sandbox.
    pub async fn is_live(&self) -> bool {
        matches!(self.call(Call::IsLive).await, Ok(Value::Bool(true)))
    }

    /// The still-running processes its instance tracks.
    pub async fn running_processes(&self) -> Vec<TrackedProcess> {
        match self.call(Call::RunningProcesses).await {
            Ok(Value::Processes(processes)) => processes,
            _ => Vec::new(),
        }
    }

    /// Brings it online (in a fresh sandbox if the last was discarded);
    /// the processes it runs then.
    pub async fn online(&self, context: &CallContext) -> Result<Vec<TrackedProcess>, CallError> {
        let outcome = expect_processes(self.call(Call::Online(context.clone())).await);
        self.inner.online.store(outcome.is_ok(), Ordering::Relaxed);
        outcome
    }

    /// Marks it online without a call: it was found running and adopted.
    pub fn adopted(&self) {
        self.inner.online.store(true, Ordering::Relaxed);
    }

    /// Takes it offline gracefully, if it has a live sandbox; the
    /// processes it still runs then.
    pub async fn offline(&self, context: &CallContext) -> Result<Vec<TrackedProcess>, CallError> {
        self.inner.online.store(false, Ordering::Relaxed);
        expect_processes(self.call(Call::Offline(context.clone())).await)
    }

    /// Takes it offline at once, killing what it spawned.
    pub async fn terminate(&self) -> Result<(), CallError> {
        self.inner.online.store(false, Ordering::Relaxed);
        expect_done(self.call(Call::Terminate).await?)
    }

    /// The cheap probe, one round trip.
    pub async fn looks_alive(&self) -> Result<bool, CallError> {
        match self.call(Call::LooksAlive).await? {
            Value::Bool(alive) => Ok(alive),
            other => Err(unexpected(other)),
        }
    }

    /// The thorough probe.
    pub async fn is_alive(&self, level: CheckLevel) -> Result<Health, CallError> {
        match self.call(Call::IsAlive(level)).await? {
            Value::Health(health) => Ok(health),
            other => Err(unexpected(other)),
        }
    }

    /// Tells it of cluster events (a peer online or offline, ...), in
    /// order, in one round trip.
    pub async fn notify(&self, events: Vec<ClusterEvent>) -> Result<(), CallError> {
        expect_done(self.call(Call::Notify(events)).await?)
    }

    /// Drops the sandbox, leaving its processes running.
    pub async fn release(&self) {
        let _ = self.call(Call::Release).await;
    }

    /// Drops the sandbox, killing its processes.
    pub async fn close(&self) {
        let _ = self.call(Call::Close).await;
    }

    /// Probes it periodically in its worker from now on (a new worker
    /// starts with none: the node, which keeps who is probed, starts them
    /// again; `immediately` then asks for a first probe at once); failures
    /// and counts come as
    /// [`Report::ProbeFailed`](crate::worker::protocol::Report::ProbeFailed) and
    /// [`Report::ProbeStats`](crate::worker::protocol::Report::ProbeStats)
    /// with `generation`.
    pub fn start_probes(&self, generation: u64, looks_every: Duration, is_every: Duration, immediately: bool) {
        let resource = self.name().to_string();
        let start = Request::StartProbes { generation, resource, looks_every, is_every, immediately };
        let _ = self.inner.worker.connection().requests.send(start);
    }

    /// Stops probing it.
    pub fn stop_probes(&self) {
        let resource = self.name().to_string();
        let _ = self.inner.worker.connection().requests.send(Request::StopProbes { resource });
    }
}

fn expect_processes(answer: Result<Value, CallError>) -> Result<Vec<TrackedProcess>, CallError> {
    match answer? {
        Value::Processes(processes) => Ok(processes),
        other => Err(super::unexpected(other)),
    }
}
