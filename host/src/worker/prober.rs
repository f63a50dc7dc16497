//! The worker's prober: runs every resource's looks-alive and is-alive on
//! its schedule, inside the worker, and tells the daemon only of failures
//! (plus probe counts every [`PROBE_STATS_EVERY`]). A healthy probe costs
//! the daemon nothing, which is what lets one node carry 10,000 resources.
//!
//! Probes due within one tick run together, polled in this one task: each
//! resource's next probe is scheduled when its current one returns, and a
//! probe stuck until its deadline holds up no other.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::protocol::{PROBE_STATS_EVERY, ProbeCount, ProbeOutcome, Response};
use super::server::{Worker, probe};
use crate::monitor::ResourceHandle;

/// How often the prober wakes. Probes due within one tick run together, so
/// 10,000 resources cost 50 wakeups a second rather than 10,000; a probe is
/// at most one tick late.
const PROBE_TICK: Duration = Duration::from_millis(20);

/// How soon a probe that found no instance (it is being re-created) is
/// tried again.
const MISSING_INSTANCE_RETRY: Duration = Duration::from_millis(100);

/// What the request reader tells the prober.
pub(super) enum ProbeCommand {
    /// Probe this resource from now on, replacing its earlier schedule.
    Start { generation: u64, resource: String, looks_every: Duration, is_every: Duration, immediately: bool },
    /// Stop probing it.
    Stop { resource: String },
}

struct Schedule {
    resource: Arc<str>,
    /// The instance's handle, looked up once: the daemon stops a schedule
    /// before anything replaces the handle, and starts a new one after.
    handle: Option<ResourceHandle>,
    looks_every: Duration,
    is_every: Duration,
}

/// A probe waiting for its time: when, which schedule, which kind.
type Due = Reverse<(Instant, u64, bool)>;

pub(super) async fn run(worker: Arc<Worker>, mut commands: mpsc::UnboundedReceiver<ProbeCommand>) {
    let mut schedules: HashMap<u64, Schedule> = HashMap::new();
    let mut current: HashMap<String, u64> = HashMap::new();
    let mut due: BinaryHeap<Due> = BinaryHeap::new();
    let mut counts: HashMap<u64, ProbeCount> = HashMap::new();
    // Schedules started with an immediate probe (re-created instances)
    // whose first probe has not ended: when the last one ends, the counts
    // go out at once, so the daemon sees them re-probed without waiting
    // for the next report.
    let mut awaited: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut in_flight = FuturesUnordered::new();
    let mut ticker = tokio::time::interval(PROBE_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(PROBE_STATS_EVERY);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => break,
                Some(ProbeCommand::Start { generation, resource, looks_every, is_every, immediately }) => {
                    let now = Instant::now();
                    due.push(Reverse((if immediately { now } else { now + looks_every }, generation, false)));
                    if immediately {
                        awaited.insert(generation);
                    }
                    due.push(Reverse((now + is_every, generation, true)));
                    if let Some(replaced) = current.insert(resource.clone(), generation) {
                        schedules.remove(&replaced);
                    }
                    let handle = worker.handle(&resource);
                    schedules.insert(generation, Schedule { resource: resource.into(), handle, looks_every, is_every });
                }
                Some(ProbeCommand::Stop { resource }) => {
                    if let Some(generation) = current.remove(&resource) {
                        schedules.remove(&generation);
                    }
                }
            },
            _ = ticker.tick() => {
                let now = Instant::now();
                while due.peek().is_some_and(|Reverse((at, ..))| *at <= now) {
                    let Some(Reverse((at, generation, thorough))) = due.pop() else { break };
                    let Some(schedule) = schedules.get_mut(&generation) else { continue };
                    if schedule.handle.is_none() {
                        schedule.handle = worker.handle(&schedule.resource);
                    }
                    let handle = schedule.handle.clone();
                    // Polled here, not spawned: a task each would cost more
                    // than the probe. A guest computing until its deadline
                    // yields at every epoch tick; `FuturesUnordered` then
                    // hands the thread back within two of its slices.
                    in_flight.push(async move {
                        let started = Instant::now();
                        let outcome = match handle {
                            Some(handle) => probe(&handle, thorough).await,
                            None => ProbeOutcome::Lost,
                        };
                        (generation, thorough, at, outcome, started.elapsed())
                    });
                }
            },
            Some((generation, thorough, at, outcome, took)) = in_flight.next(), if !in_flight.is_empty() => {
                let Some(schedule) = schedules.get(&generation) else { continue };
                if awaited.remove(&generation) && awaited.is_empty() {
                    // Counted below, then sent with the rest at once.
                    report.reset_immediately();
                }
                let next = match outcome {
                    ProbeOutcome::Healthy => {
                        let count = counts.entry(generation).or_insert(ProbeCount { generation, probes: 0, nanos: 0 });
                        count.probes += 1;
                        count.nanos += took.as_nanos() as u64;
                        let every = if thorough { schedule.is_every } else { schedule.looks_every };
                        (at + every).max(Instant::now())
                    }
                    ProbeOutcome::Lost => Instant::now() + MISSING_INSTANCE_RETRY,
                    ProbeOutcome::Failed(reason) => {
                        if let Some(schedule) = schedules.remove(&generation) {
                            current.remove(&*schedule.resource);
                        }
                        worker.send(Response::ProbeFailed { generation, reason });
                        continue;
                    }
                };
                due.push(Reverse((next, generation, thorough)));
            },
            _ = report.tick() => {
                if !counts.is_empty() {
                    worker.send(Response::ProbeStats(counts.drain().map(|(_, count)| count).collect()));
                }
            }
        }
    }
}
