//! The daemon side of the monitor workers: starts each worker, keeps the
//! list of instances it hosts, and, when a worker dies or stops answering,
//! starts a new one and re-creates those instances there (adopting the
//! processes they ran, which a worker's death does not kill).
//!
//! The daemon never waits on a worker: requests go through a channel to a
//! writer task, replies come back through a reader task, and a worker that
//! does not answer a ping within the deadlock timeout is killed and handled
//! as dead. Calls in flight when a worker is lost end with
//! [`CallError::WorkerLost`], which says nothing about the resource; the
//! worker's probe schedules end with it, and the node, which alone keeps
//! who is probed, starts them again in the new one.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use super::protocol::{Reader, Report, Request, Response, Value, Writer, pump};
use crate::bindings::CallContext;
use crate::monitor::{CallError, ResourceSpec};
use crate::plugin::Plugin;
use crate::process::TrackedProcess;
use steward_policy::failure::Failure;

/// How often the daemon pings each worker.
const PING_EVERY: Duration = Duration::from_millis(250);

/// The shortest time between two starts of one worker, so a worker that
/// cannot start does not spin; it doubles with each start that does not
/// last [`STABLE_RUN`], up to [`MAX_RESTART_BACKOFF`].
const RESTART_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(5);
const STABLE_RUN: Duration = Duration::from_secs(1);

mod remote;

pub use remote::RemoteResource;

pub use steward_config::worker_names::{SHARED_WORKER, is_shared_worker_name, shared_worker_name};

/// How the daemon starts its workers.
pub struct WorkerOptions {
    /// The `steward` binary.
    pub program: PathBuf,
    /// The node's name, for the plugins' `node-info`.
    pub node_name: String,
    /// The cluster's name (empty: alone), for the plugins' `node-info`.
    pub cluster_name: String,
    /// The shared compile cache.
    pub cache_dir: PathBuf,
    /// Log as JSON lines.
    pub log_json: bool,
    /// How many instances one shared worker is sized for; resources past
    /// that go to the next shared worker.
    pub shared_capacity: u32,
    /// A worker that does not answer a ping for this long is killed.
    pub deadlock_timeout: Duration,
    /// The processes the state store recorded for a resource, to adopt when
    /// its instance is re-created in a new worker.
    pub recorded_processes: RecordedProcesses,
}

/// Reads the processes the state store recorded for a resource.
pub type RecordedProcesses = Box<dyn Fn(&str) -> Vec<TrackedProcess> + Send + Sync>;

/// What the workers tell the node.
#[derive(Debug)]
pub enum WorkerEvent {
    /// A worker died or was killed.
    Lost {
        /// The worker.
        worker: String,
        /// Its pid.
        pid: u32,
        /// What happened.
        reason: String,
    },
    /// A new worker runs and the lost one's instances were re-created.
    Restarted {
        /// The worker.
        worker: String,
        /// The new pid.
        pid: u32,
        /// Resources whose instance was re-created.
        reopened: Vec<String>,
        /// Resources whose instance could not be, and how that failed.
        failed: Vec<(String, Failure)>,
        /// From the loss to the last instance re-created.
        took: Duration,
    },
    /// What a worker reported: failed probes, probe counts, a plugin's
    /// signalled failure, notices.
    Reported(Report),
}

/// What the API shows of a worker.
#[derive(Debug, Clone)]
pub struct WorkerView {
    /// Its name: `shared`, or the resource it serves alone.
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

/// Every worker of the node.
pub struct WorkerPool {
    options: Arc<WorkerOptions>,
    workers: Mutex<BTreeMap<String, Arc<Worker>>>,
    /// How many resources each shared worker was given, in order.
    shared_assigned: Mutex<Vec<u32>>,
    events: mpsc::UnboundedSender<WorkerEvent>,
}

impl WorkerPool {
    /// A pool with no worker yet; each starts with its first resource.
    pub fn new(options: WorkerOptions, events: mpsc::UnboundedSender<WorkerEvent>) -> Arc<WorkerPool> {
        Arc::new(WorkerPool {
            options: Arc::new(options),
            workers: Mutex::new(BTreeMap::new()),
            shared_assigned: Mutex::new(Vec::new()),
            events,
        })
    }

    /// The handle of resource `spec`, hosted in the first shared worker with
    /// room or (with `separate`) in a worker of its own. Nothing is opened
    /// yet.
    pub fn resource(&self, plugin: Arc<Plugin>, spec: ResourceSpec, separate: bool) -> RemoteResource {
        let worker = if separate {
            self.worker(&spec.name, 1)
        } else {
            self.worker(&self.shared_worker_with_room(), self.options.shared_capacity)
        };
        RemoteResource::new(worker, plugin, spec)
    }

    /// Names the shared worker the next resource goes to, and counts it.
    fn shared_worker_with_room(&self) -> String {
        let Ok(mut assigned) = self.shared_assigned.lock() else {
            unreachable!("the assignment lock is never held across a panic")
        };
        let capacity = self.options.shared_capacity.max(1);
        let index = match assigned.iter().position(|count| *count < capacity) {
            Some(index) => index,
            None => {
                assigned.push(0);
                assigned.len() - 1
            }
        };
        assigned[index] += 1;
        shared_worker_name(index)
    }

    /// What the API shows of every worker.
    pub fn views(&self) -> Vec<WorkerView> {
        let workers: Vec<Arc<Worker>> = self.workers.lock().map(|w| w.values().cloned().collect()).unwrap_or_default();
        workers.iter().map(|worker| worker.view()).collect()
    }

    /// Extends every worker's copy of the node's cluster lease to
    /// `until_ns` ([`super::lease`]): past it, a worker fences itself.
    pub fn extend_lease(&self, until_ns: u64) {
        let workers: Vec<Arc<Worker>> = self.workers.lock().map(|w| w.values().cloned().collect()).unwrap_or_default();
        for worker in workers {
            let _ = worker.connection().requests.send(Request::Lease { until_ns });
        }
    }

    /// Closes every instance (or leaves their processes running, with
    /// `release`) and stops the workers; returns once they have exited.
    pub async fn shutdown(&self, release: bool) {
        let workers: Vec<Arc<Worker>> = self.workers.lock().map(|w| w.values().cloned().collect()).unwrap_or_default();
        futures_util::future::join_all(workers.iter().map(|worker| worker.shutdown(release))).await;
    }

    fn worker(&self, name: &str, capacity: u32) -> Arc<Worker> {
        let Ok(mut workers) = self.workers.lock() else {
            unreachable!("the worker map's lock is never held across a panic")
        };
        workers
            .entry(name.to_string())
            .or_insert_with(|| {
                let mut worker = Worker {
                    name: name.to_string(),
                    capacity,
                    options: self.options.clone(),
                    connection: RwLock::new(Arc::new(Connection::unstarted())),
                    hosted: Mutex::new(BTreeMap::new()),
                    restarts: AtomicU64::new(0),
                    stopping: AtomicBool::new(false),
                    stopped: tokio::sync::watch::channel(false).0,
                    events: self.events.clone(),
                    stop: tokio::sync::Notify::new(),
                };
                // Started here, so the first calls find it running.
                let first = worker.start();
                match &first {
                    Ok((_, connection)) => worker.connection = RwLock::new(connection.clone()),
                    Err(error) => tracing::error!(worker = name, %error, "cannot start a monitor worker"),
                }
                let worker = Arc::new(worker);
                tokio::spawn(worker.clone().supervise(first));
                worker
            })
            .clone()
    }
}

/// One worker process, as the daemon sees it across its restarts.
struct Worker {
    name: String,
    /// How many instances it is sized for.
    capacity: u32,
    options: Arc<WorkerOptions>,
    connection: RwLock<Arc<Connection>>,
    /// What it hosts, to re-create the instances in a new worker.
    hosted: Mutex<BTreeMap<String, Hosted>>,
    restarts: AtomicU64,
    /// Set when the node stops: a worker that exits then is not restarted.
    stopping: AtomicBool,
    /// Set once its last process has exited after the node said stop.
    stopped: tokio::sync::watch::Sender<bool>,
    events: mpsc::UnboundedSender<WorkerEvent>,
    stop: tokio::sync::Notify,
}

impl Worker {
    fn connection(&self) -> Arc<Connection> {
        match self.connection.read() {
            Ok(connection) => connection.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn view(&self) -> WorkerView {
        WorkerView {
            name: self.name.clone(),
            pid: self.connection().pid,
            restarts: self.restarts.load(Ordering::Relaxed),
            resources: self.hosted.lock().map(|h| h.keys().cloned().collect()).unwrap_or_default(),
            round_trips: self.connection().round_trips.load(Ordering::Relaxed),
        }
    }

    /// Watches the worker started first, and starts it again each time it
    /// is lost, until the node stops.
    async fn supervise(self: Arc<Self>, first: std::io::Result<(Child, Arc<Connection>)>) {
        let mut lost_at: Option<Instant> = None;
        let mut next = Some(first);
        let mut quick_failures = 0u32;
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                self.stopped.send_replace(true);
                return;
            }
            let started = Instant::now();
            match next.take().unwrap_or_else(|| self.start()) {
                Ok((child, connection)) => {
                    let pid = connection.pid;
                    *self.connection.write().unwrap_or_else(|p| p.into_inner()) = connection.clone();
                    if let Some(lost_at) = lost_at.take() {
                        self.restarts.fetch_add(1, Ordering::Relaxed);
                        let worker = self.clone();
                        tokio::spawn(async move { worker.recreate(pid, lost_at).await });
                    }
                    let reason = self.watch(child, &connection).await;
                    if self.stopping.load(Ordering::Relaxed) {
                        self.stopped.send_replace(true);
                        return;
                    }
                    tracing::error!(worker = %self.name, pid, %reason, "monitor worker lost; starting a new one");
                    lost_at = Some(Instant::now());
                    let _ = self.events.send(WorkerEvent::Lost { worker: self.name.clone(), pid, reason });
                }
                Err(error) => {
                    tracing::error!(worker = %self.name, %error, "cannot start a monitor worker; retrying");
                    lost_at.get_or_insert_with(Instant::now);
                }
            }
            let ran = started.elapsed();
            quick_failures = if ran >= STABLE_RUN { 0 } else { (quick_failures + 1).min(6) };
            let backoff = (RESTART_BACKOFF * 2u32.pow(quick_failures.saturating_sub(1))).min(MAX_RESTART_BACKOFF);
            if let Some(wait) = backoff.checked_sub(ran) {
                tokio::time::sleep(wait).await;
            }
        }
    }

    fn start(&self) -> std::io::Result<(Child, Arc<Connection>)> {
        let options = &self.options;
        let capacity = self.capacity;
        let mut command = Command::new(&options.program);
        command
            .arg0("steward")
            .arg("monitor")
            .args(["--node", &options.node_name, "--cluster", &options.cluster_name, "--worker", &self.name])
            .arg("--cache-dir")
            .arg(&options.cache_dir)
            .args(["--instances", &capacity.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if options.log_json {
            command.arg("--log-json");
        }
        let mut child = command.spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the worker's pipes were not created"));
        };
        let pid = child.id().unwrap_or(0);
        let (requests, outgoing) = mpsc::unbounded_channel();
        let connection = Arc::new(Connection::new(pid, requests, None));
        tokio::spawn(async move {
            if let Err(error) = pump(outgoing, Writer::new(stdin)).await {
                tracing::debug!(%error, "the worker's request pipe closed");
            }
        });
        let reader = connection.clone();
        let events = self.events.clone();
        tokio::spawn(async move { reader.read(Reader::new(stdout), events).await });
        Ok((child, connection))
    }

    /// Waits until the worker exits or stops answering pings (then kills
    /// it), ends what was in flight, and says what happened.
    async fn watch(&self, mut child: Child, connection: &Arc<Connection>) -> String {
        let mut ping = tokio::time::interval(PING_EVERY);
        let reason = loop {
            tokio::select! {
                status = child.wait() => break match status {
                    Ok(status) => describe_exit(status),
                    Err(error) => format!("cannot wait for it: {error}"),
                },
                _ = ping.tick() => {
                    let silent = connection.last_pong.lock().map(|at| at.elapsed()).unwrap_or_default();
                    if silent > self.options.deadlock_timeout {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        break format!(
                            "it did not answer for {} ms (the deadlock timeout) and was killed",
                            silent.as_millis()
                        );
                    }
                    let id = connection.next_id.fetch_add(1, Ordering::Relaxed);
                    let _ = connection.requests.send(Request::Ping { id });
                },
                () = self.stop.notified() => {
                    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
                    let _ = child.start_kill();
                    break "stopped with the node".to_string();
                }
            }
        };
        connection.lose(&reason);
        reason
    }

    /// Re-creates every hosted instance in the new worker, in parallel.
    async fn recreate(&self, pid: u32, lost_at: Instant) {
        let hosted: Vec<(String, Hosted)> =
            self.hosted.lock().map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
        let opens = hosted.into_iter().map(|(name, Hosted { plugin, mut spec, online })| async move {
            spec.adopt = (self.options.recorded_processes)(&name);
            // A resource that ran programs and has none left died with (or
            // while) its worker: it is not resumed, so its first probe fails
            // and the policy engine restarts it, counted. One whose programs
            // run, or that runs none (its state is elsewhere), is resumed.
            let programs_gone = !spec.adopt.is_empty()
                && !spec.adopt.iter().any(|p| crate::process::start_time(p.pid) == Some(p.start_time));
            let resume = (online.load(Ordering::Relaxed) && !programs_gone).then(|| CallContext {
                node_name: self.options.node_name.clone(),
                fencing_token: spec.fencing_token,
                attempt: 1,
            });
            let result = self.send_open(plugin, spec, resume, false).await;
            (name, result)
        });
        let results = futures_util::future::join_all(opens).await;
        let mut reopened = Vec::new();
        let mut failed = Vec::new();
        for (name, result) in results {
            match result {
                Ok(()) => reopened.push(name),
                Err(error) => failed.push((name, error.failure())),
            }
        }
        let took = lost_at.elapsed();
        tracing::info!(worker = %self.name, pid, reopened = reopened.len(), failed = failed.len(), took_ms = took.as_millis() as u64, "instances re-created in a new worker");
        let _ = self.events.send(WorkerEvent::Restarted { worker: self.name.clone(), pid, reopened, failed, took });
    }

    async fn send_open(
        &self,
        plugin: PathBuf,
        spec: ResourceSpec,
        resume: Option<CallContext>,
        keep_processes: bool,
    ) -> Result<(), CallError> {
        let connection = self.connection();
        let value =
            connection.request(|id| Request::Open { id, plugin, spec: Box::new(spec), resume, keep_processes }).await?;
        expect_done(value)
    }

    async fn shutdown(&self, release: bool) {
        self.stopping.store(true, Ordering::Relaxed);
        let _ = self.connection().requests.send(Request::Shutdown { release });
        self.stop.notify_one();
        // `watch` gives the worker 10 s to close its instances, then kills it.
        let mut stopped = self.stopped.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(15), stopped.wait_for(|stopped| *stopped)).await;
    }
}

/// One instance a worker hosts.
#[derive(Clone)]
struct Hosted {
    /// The plugin version it runs.
    plugin: PathBuf,
    spec: ResourceSpec,
    /// Whether its last `online` succeeded and no `offline` or `terminate`
    /// came since: a re-created instance is brought back online.
    online: Arc<AtomicBool>,
}

/// One running worker process.
struct Connection {
    pid: u32,
    requests: mpsc::UnboundedSender<Request>,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, CallError>>>>,
    /// Why it was lost, once it was.
    lost: Mutex<Option<String>>,
    last_pong: Mutex<Instant>,
    /// Requests sent through [`Connection::request`].
    round_trips: AtomicU64,
}

impl Connection {
    /// A connection to no process yet: every call ends as lost.
    fn unstarted() -> Connection {
        Connection::new(0, mpsc::unbounded_channel().0, Some("the worker is starting".into()))
    }

    fn new(pid: u32, requests: mpsc::UnboundedSender<Request>, lost: Option<String>) -> Connection {
        Connection {
            pid,
            requests,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            lost: Mutex::new(lost),
            last_pong: Mutex::new(Instant::now()),
            round_trips: AtomicU64::new(0),
        }
    }

    fn lost_reason(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|lost| lost.clone())
    }

    async fn request(&self, build: impl FnOnce(u64) -> Request) -> Result<Value, CallError> {
        let (sender, receiver) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        {
            // Checked under the lock `lose` takes, so no reply is left waiting.
            let Ok(mut pending) = self.pending.lock() else { return Err(lost("its state is poisoned")) };
            if let Some(reason) = self.lost_reason() {
                return Err(lost(&reason));
            }
            pending.insert(id, sender);
        }
        if self.requests.send(build(id)).is_err() {
            self.pending.lock().ok().and_then(|mut pending| pending.remove(&id));
            return Err(lost("its request pipe is closed"));
        }
        receiver.await.unwrap_or_else(|_| Err(lost("it ended before answering")))
    }

    async fn read(&self, mut reader: Reader<tokio::process::ChildStdout>, events: mpsc::UnboundedSender<WorkerEvent>) {
        while let Some(message) = reader.next::<Response>().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::error!(pid = self.pid, %error, "unreadable message from a monitor worker");
                    break;
                }
            };
            match message {
                Response::Reply { id, result } => {
                    if let Some(sender) = self.pending.lock().ok().and_then(|mut p| p.remove(&id)) {
                        let _ = sender.send(result);
                    }
                }
                Response::Pong { .. } => {
                    if let Ok(mut at) = self.last_pong.lock() {
                        *at = Instant::now();
                    }
                }
                Response::Report(report) => {
                    let _ = events.send(WorkerEvent::Reported(report));
                }
            }
        }
    }

    /// Ends every call and probe in flight as lost.
    fn lose(&self, reason: &str) {
        let calls: Vec<_> = match self.pending.lock() {
            Ok(mut pending) => {
                if let Ok(mut lost) = self.lost.lock() {
                    *lost = Some(reason.to_string());
                }
                pending.drain().map(|(_, sender)| sender).collect()
            }
            Err(_) => Vec::new(),
        };
        for sender in calls {
            let _ = sender.send(Err(lost(reason)));
        }
    }
}

fn lost(reason: &str) -> CallError {
    CallError::WorkerLost { reason: reason.to_string() }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(signal)) => format!("it was killed by signal {signal}"),
        (Some(code), _) => format!("it exited with status {code}"),
        _ => "it exited".to_string(),
    }
}

fn expect_done(value: Value) -> Result<(), CallError> {
    match value {
        Value::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn unexpected(value: Value) -> CallError {
    lost(&format!("it answered out of protocol: {value:?}"))
}
