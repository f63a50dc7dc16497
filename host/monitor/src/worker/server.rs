//! The worker side: `steward monitor`, started by the daemon with pipes on
//! its stdin and stdout. It hosts resource instances in its own [`Monitor`]
//! and answers the daemon's requests, each in its own task, so that a slow
//! call into one resource holds up no other, and a ping is answered while
//! calls run.
//!
//! When its stdin ends without a [`Request::Shutdown`], the daemon is gone
//! (killed, or crashed): the worker exits at once *without* closing its
//! instances, so the programs they run outlive it and the next daemon
//! adopts them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::os::fd::AsFd;

use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::lease::WorkerLease;
use super::prober::{Instances, ProbeCommand};
use super::protocol::{Call, Reader, Report, Request, Response, Value, Writer, pump};
use crate::bindings::CallContext;
use crate::events::EventKind;
use crate::monitor::{CallError, Monitor, ResourceHandle};
use crate::plugin::Plugin;
use crate::runtime::Runtime;

/// Serves the daemon on stdin and stdout until told to stop or orphaned.
pub async fn serve(runtime: Arc<Runtime>, node_name: &str, cluster_name: &str) -> std::io::Result<()> {
    // The pipes are polled by the reactor: tokio's `stdin()`/`stdout()` hop
    // through the blocking pool on every read and write, which would cost
    // more than the probe they carry.
    let stdin = pipe::Receiver::from_owned_fd(std::io::stdin().as_fd().try_clone_to_owned()?)?;
    let stdout = pipe::Sender::from_owned_fd(std::io::stdout().as_fd().try_clone_to_owned()?)?;
    let (replies, outgoing) = mpsc::unbounded_channel::<Response>();
    let writer = tokio::spawn(pump(outgoing, Writer::new(stdout)));
    let worker = Arc::new(Worker {
        runtime,
        monitor: Monitor::in_cluster(node_name, cluster_name),
        plugins: Mutex::new(HashMap::new()),
        handles: Arc::new(Mutex::new(HashMap::new())),
        replies,
        lease: WorkerLease::new(),
    });
    worker.forward_events();
    let (probe_commands, probe_command_receiver) = mpsc::unbounded_channel();
    let instances = Instances { handles: worker.handles.clone(), replies: worker.replies.clone() };
    tokio::spawn(super::prober::run(instances, probe_command_receiver));
    {
        let (worker, probe_commands) = (worker.clone(), probe_commands.clone());
        tokio::spawn(async move {
            loop {
                worker.lease.expired().await;
                worker.fence(&probe_commands).await;
            }
        });
    }
    let mut requests = Reader::new(stdin);
    while let Some(request) = requests.next::<Request>().await {
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(%error, "unreadable request from the daemon; exiting");
                break;
            }
        };
        match request {
            Request::Ping { id } => worker.send(Response::Pong { id }),
            Request::Shutdown { release } => {
                // Nothing more is owed to the daemon; the runtime's end
                // drops the tasks still holding the reply channel.
                worker.shutdown(release).await;
                writer.abort();
                return Ok(());
            }
            Request::Open { id, plugin, spec, resume, keep_processes } => {
                let worker = worker.clone();
                tokio::spawn(async move {
                    let result = worker.open(&plugin, *spec, resume, keep_processes).await.map(|()| Value::Done);
                    worker.send(Response::Reply { id, result });
                });
            }
            Request::Call { id, resource, call } => {
                let worker = worker.clone();
                tokio::spawn(async move {
                    let result = worker.call(&resource, call).await;
                    worker.send(Response::Reply { id, result });
                });
            }
            Request::StartProbes { generation, resource, looks_every, is_every, immediately } => {
                let start = ProbeCommand::Start { generation, resource, looks_every, is_every, immediately };
                let _ = probe_commands.send(start);
            }
            Request::Lease { until_ns } => worker.lease.extend(until_ns),
            Request::StopProbes { resource } => {
                let _ = probe_commands.send(ProbeCommand::Stop { resource });
            }
        }
    }
    if worker.lease.is_held() {
        // Orphaned in a cluster: the node's lease runs out within its TTL
        // and another node takes the groups over, so nothing may run here
        // any more. Each resource is terminated and its sandbox closed
        // (killing what it spawned) before the worker goes.
        tracing::warn!("the daemon closed the pipe; terminating every resource before another node takes them");
        worker.terminate_all().await;
        std::process::exit(0)
    }
    // Orphaned, alone: leave the instances' processes running for the next daemon.
    tracing::info!("the daemon closed the pipe; exiting and leaving resources running");
    std::process::exit(0)
}

/// The instances one worker hosts, and its way back to the daemon.
pub(super) struct Worker {
    runtime: Arc<Runtime>,
    monitor: Monitor,
    /// Loaded plugin versions, by their content-addressed file.
    plugins: Mutex<HashMap<PathBuf, Arc<Plugin>>>,
    handles: Arc<Mutex<HashMap<String, ResourceHandle>>>,
    replies: mpsc::UnboundedSender<Response>,
    /// The node's cluster lease, past which nothing runs here.
    lease: Arc<WorkerLease>,
}

impl Worker {
    pub(super) fn send(&self, response: Response) {
        let _ = self.replies.send(response);
    }

    pub(super) fn handle(&self, resource: &str) -> Option<ResourceHandle> {
        self.handles.lock().ok()?.get(resource).cloned()
    }

    async fn plugin(&self, file: &Path) -> Result<Arc<Plugin>, CallError> {
        if let Some(plugin) = self.plugins.lock().ok().and_then(|p| p.get(file).cloned()) {
            return Ok(plugin);
        }
        let plugin = Plugin::load(&self.runtime, file)
            .await
            .map_err(|error| CallError::Instantiate { message: error.to_string() })?;
        let plugin = Arc::new(plugin);
        if let Ok(mut plugins) = self.plugins.lock() {
            plugins.insert(file.to_path_buf(), plugin.clone());
        }
        Ok(plugin)
    }

    async fn open(
        &self,
        file: &Path,
        spec: crate::monitor::ResourceSpec,
        resume: Option<CallContext>,
        keep_processes: bool,
    ) -> Result<(), CallError> {
        let plugin = self.plugin(file).await?;
        let name = spec.name.clone();
        let handle = self
            .monitor
            .prepare(plugin, spec)
            .map_err(|error| CallError::Instantiate { message: error.to_string() })?;
        let replaced = self.handles.lock().ok().and_then(|mut handles| handles.insert(name, handle.clone()));
        match replaced {
            Some(replaced) if keep_processes => replaced.release().await,
            Some(replaced) => replaced.close().await,
            None => {}
        }
        handle.reopen().await?;
        match resume {
            // Fenced, a re-created instance stays offline: the node finds
            // out from its own lease that the group is no longer its own.
            Some(context) if !self.lease.is_fenced() => handle.online(&context).await,
            _ => Ok(()),
        }
    }

    async fn call(&self, resource: &str, call: Call) -> Result<Value, CallError> {
        let Some(handle) = self.handle(resource) else {
            return Err(CallError::WorkerLost { reason: format!("this worker does not host `{resource}`") });
        };
        Ok(match call {
            Call::Online(_) if self.lease.is_fenced() => {
                return Err(CallError::WorkerLost {
                    reason: "the node's cluster lease ran out; nothing goes online here until it is renewed".into(),
                });
            }
            Call::Online(context) => {
                if !handle.is_live().await {
                    handle.reopen().await?;
                }
                handle.online(&context).await?;
                Value::Processes(handle.running_processes().await)
            }
            Call::Offline(context) => {
                if handle.is_live().await {
                    handle.offline(&context).await?;
                }
                Value::Processes(handle.running_processes().await)
            }
            Call::Terminate => {
                if handle.is_live().await {
                    handle.terminate().await?;
                }
                Value::Done
            }
            Call::LooksAlive => Value::Bool(handle.looks_alive().await?),
            Call::IsAlive(level) => Value::Health(handle.is_alive(level).await?),
            Call::Control { code, input } => Value::Text(handle.control(&code, &input).await?),
            Call::Notify(events) => {
                for event in &events {
                    handle.notify(event).await?;
                }
                Value::Done
            }
            Call::IsLive => Value::Bool(handle.is_live().await),
            Call::RunningProcesses => Value::Processes(handle.running_processes().await),
            Call::Release => {
                handle.release().await;
                Value::Done
            }
            Call::Close => {
                handle.close().await;
                Value::Done
            }
        })
    }

    fn forward_events(self: &Arc<Self>) {
        let mut events = self.monitor.subscribe();
        let replies = self.replies.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        let resource = event.resource;
                        let reply = match event.kind {
                            EventKind::SignalledFailure { reason } => Report::SignalledFailure { resource, reason },
                            // The caller hears of a failed call in its reply.
                            EventKind::Failed { .. } => continue,
                            kind => Report::Notice { resource, kind },
                        };
                        let _ = replies.send(Response::Report(reply));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "monitor events lagged; some were missed");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    /// The lease ran out: every probe stops and every sandbox goes, with
    /// the processes it spawned, before another node may take the groups.
    async fn fence(&self, probe_commands: &mpsc::UnboundedSender<ProbeCommand>) {
        let handles: Vec<ResourceHandle> =
            self.handles.lock().map(|handles| handles.values().cloned().collect()).unwrap_or_default();
        tracing::error!(resources = handles.len(), "the node's cluster lease ran out: fencing every resource here");
        for handle in &handles {
            let _ = probe_commands.send(ProbeCommand::Stop { resource: handle.name().to_string() });
        }
        for handle in handles {
            handle.close().await;
        }
    }

    /// Terminates every resource (stop now, no graceful wait) and closes
    /// its sandbox, all at once.
    async fn terminate_all(&self) {
        let handles: Vec<ResourceHandle> =
            self.handles.lock().map(|mut handles| handles.drain().map(|(_, h)| h).collect()).unwrap_or_default();
        futures_util::future::join_all(handles.into_iter().map(|handle| async move {
            let _ = handle.terminate().await;
            handle.close().await;
        }))
        .await;
    }

    async fn shutdown(&self, release: bool) {
        let handles: Vec<ResourceHandle> =
            self.handles.lock().map(|mut handles| handles.drain().map(|(_, h)| h).collect()).unwrap_or_default();
        for handle in handles {
            if release {
                handle.release().await;
            } else {
                handle.close().await;
            }
        }
    }
}
