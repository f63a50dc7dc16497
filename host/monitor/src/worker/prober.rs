//! The worker's prober: runs every resource's looks-alive and is-alive on
//! its schedule, inside the worker, and tells the daemon only of failures
//! (plus probe counts every [`PROBE_STATS_EVERY`]). A healthy probe costs
//! the daemon nothing, which is what lets one node carry 10,000 resources.
//!
//! Probes wait in a timer wheel of [`PROBE_TICK`] slots, so scheduling one
//! costs a push, not a heap operation across every schedule. The prober
//! wakes in rounds (see [`LONGEST_ROUND`]); the probes due by a round run
//! one after another in this task, each polled once in
//! place: a healthy probe finishes on that poll and is settled at once. A
//! probe that suspends (its guest is blocked in an import, or computing
//! past an epoch tick) is parked in a set polled alongside, so a probe
//! stuck until its deadline holds up no other.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::protocol::{PROBE_STATS_EVERY, ProbeCount, ProbeOutcome, Report, Response};
use crate::bindings::CheckLevel;
use crate::latency::BucketCounts;
use crate::monitor::ResourceHandle;
use steward_policy::failure::{Failure, FailureKind};

/// The wheel's slot width. A probe runs at the first round at or after
/// its time, never before it.
const PROBE_TICK: Duration = Duration::from_millis(20);

/// The longest a prober sleeps between rounds. It wakes every tenth of its
/// shortest looks-alive interval, between [`PROBE_TICK`] and this: a probe
/// is at most that late, and 10,000 resources probed every second cost 10
/// wakeups a second rather than 10,000. Bigger rounds are cheaper per
/// probe, too, as the caches cool between rounds: a paced run of the
/// monitor bench's cold looks-alive measured 3.9 us a call in rounds of
/// 200 every 20 ms and 3.2 us in rounds of 1,000.
const LONGEST_ROUND: Duration = Duration::from_millis(100);

/// How often to wake for a schedule probed every `looks_every`.
fn round_for(looks_every: Duration) -> Duration {
    (looks_every / 10).clamp(PROBE_TICK, LONGEST_ROUND)
}

/// Slots in the timer wheel: 4,096 ticks of 20 ms reach 82 s ahead, past
/// the default is-alive interval. Later probes wait in a heap until they
/// come within reach.
const WHEEL_SLOTS: u64 = 4096;

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
    generation: u64,
    resource: Arc<str>,
    /// The instance's handle, looked up once: the daemon stops a schedule
    /// before anything replaces the handle, and starts a new one after.
    handle: Option<ResourceHandle>,
    looks_every: Duration,
    is_every: Duration,
    /// Healthy probes since the last report, their total duration, and
    /// how they spread over the latency buckets.
    probes: u64,
    nanos: u64,
    buckets: BucketCounts,
}

/// Where a schedule sits in [`Schedules`].
type Slot = u32;

/// Every schedule, in a slab: a probe names its slot, so finding its
/// schedule is an index rather than a hash lookup, and schedules started
/// together sit together in memory, as their probes come due together.
/// (At 10,000 resources, the hash lookup's two cache misses were a fifth of
/// the prober's cost.)
#[derive(Default)]
struct Schedules {
    slots: Vec<Option<Schedule>>,
    free: Vec<Slot>,
}

impl Schedules {
    fn insert(&mut self, schedule: Schedule) -> Slot {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(schedule);
                slot
            }
            None => {
                self.slots.push(Some(schedule));
                (self.slots.len() - 1) as Slot
            }
        }
    }

    /// The schedule in `slot`, if it is still `generation` (a stopped
    /// schedule's slot may hold a newer one).
    fn get_mut(&mut self, slot: Slot, generation: u64) -> Option<&mut Schedule> {
        self.slots.get_mut(slot as usize)?.as_mut().filter(|schedule| schedule.generation == generation)
    }

    fn remove(&mut self, slot: Slot, generation: u64) -> Option<Schedule> {
        self.get_mut(slot, generation)?;
        let removed = self.slots.get_mut(slot as usize)?.take();
        self.free.push(slot);
        removed
    }
}

/// A probe waiting for its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    generation: u64,
    slot: Slot,
    thorough: bool,
}

/// Probes by the tick they are due at.
struct Wheel {
    origin: Instant,
    /// The first tick not yet taken.
    next_tick: u64,
    slots: Vec<Vec<Due>>,
    /// Probes due beyond the wheel's reach, soonest first.
    far: BinaryHeap<Reverse<Due>>,
}

impl Wheel {
    fn new(origin: Instant) -> Wheel {
        Wheel { origin, next_tick: 0, slots: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(), far: BinaryHeap::new() }
    }

    /// The first tick at or after `at`: a probe never runs early.
    fn tick_of(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        nanos.div_ceil(PROBE_TICK.as_nanos()) as u64
    }

    fn push(&mut self, due: Due) {
        let tick = self.tick_of(due.at).max(self.next_tick);
        if tick - self.next_tick < WHEEL_SLOTS {
            self.slots[(tick % WHEEL_SLOTS) as usize].push(due);
        } else {
            self.far.push(Reverse(due));
        }
    }

    /// Moves every probe due by `now` into `out`: the slots wholly past,
    /// and those of the slot in progress whose time has come (a probe to
    /// run at once must not wait a round for its slot to close).
    fn take_due(&mut self, now: Instant, out: &mut Vec<Due>) {
        let current = (now.saturating_duration_since(self.origin).as_nanos() / PROBE_TICK.as_nanos()) as u64;
        while self.next_tick <= current {
            out.append(&mut self.slots[(self.next_tick % WHEEL_SLOTS) as usize]);
            self.next_tick += 1;
            while let Some(Reverse(due)) = self.far.peek().copied() {
                if self.tick_of(due.at) >= self.next_tick + WHEEL_SLOTS - 1 {
                    break;
                }
                self.far.pop();
                self.push(due);
            }
        }
        let in_progress = &mut self.slots[(self.next_tick % WHEEL_SLOTS) as usize];
        let mut index = 0;
        while index < in_progress.len() {
            if in_progress[index].at <= now {
                out.push(in_progress.swap_remove(index));
            } else {
                index += 1;
            }
        }
    }
}

/// What a probe came to: its schedule, its kind, when it was due, the
/// outcome and how long it took.
type Finished = (Due, ProbeOutcome, Duration);

/// What the prober needs of its worker: the instances it hosts, by name,
/// and the way to the daemon. (Given, so the prober does not reach into
/// the server that starts it.)
pub(super) struct Instances {
    /// The worker's instances.
    pub(super) handles: Arc<std::sync::Mutex<HashMap<String, ResourceHandle>>>,
    /// Replies and events to the daemon.
    pub(super) replies: mpsc::UnboundedSender<Response>,
}

impl Instances {
    fn handle(&self, resource: &str) -> Option<ResourceHandle> {
        self.handles.lock().ok()?.get(resource).cloned()
    }

    fn send(&self, response: Response) {
        let _ = self.replies.send(response);
    }
}

struct Prober {
    worker: Instances,
    schedules: Schedules,
    /// Each probed resource's schedule.
    current: HashMap<String, (Slot, u64)>,
    wheel: Wheel,
    /// Schedules with healthy probes since the last report.
    counted: Vec<(Slot, u64)>,
    /// Schedules started with an immediate probe (re-created instances)
    /// whose first probe has not ended: when the last one ends, the counts
    /// go out at once, so the daemon sees them re-probed without waiting
    /// for the next report.
    awaited: HashSet<u64>,
    /// How often it wakes: shrinks to suit the shortest schedule started.
    round: Duration,
}

pub(super) async fn run(worker: Instances, mut commands: mpsc::UnboundedReceiver<ProbeCommand>) {
    let mut prober = Prober {
        worker,
        schedules: Schedules::default(),
        current: HashMap::new(),
        wheel: Wheel::new(Instant::now()),
        counted: Vec::new(),
        awaited: HashSet::new(),
        round: LONGEST_ROUND,
    };
    let mut due = Vec::new();
    let mut suspended = FuturesUnordered::new();
    let mut ticker = round_ticker(prober.round);
    let mut report = tokio::time::interval(PROBE_STATS_EVERY);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => break,
                Some(command) => {
                    let probe_now = prober.command(command);
                    if ticker.period() != prober.round {
                        ticker = round_ticker(prober.round);
                    }
                    if probe_now {
                        // Re-created instances are probed at once, not at
                        // the next round.
                        ticker.reset_immediately();
                    }
                }
            },
            _ = ticker.tick() => {
                let now = Instant::now();
                prober.wheel.take_due(now, &mut due);
                for item in due.drain(..) {
                    let Some(schedule) = prober.schedules.get_mut(item.slot, item.generation) else { continue };
                    if schedule.handle.is_none() {
                        schedule.handle = prober.worker.handle(&schedule.resource);
                    }
                    let mut running = Box::pin(timed_probe(schedule.handle.clone(), item.thorough));
                    // Polled here, not spawned: a task each would cost
                    // more than the probe.
                    match running.as_mut().now_or_never() {
                        Some((outcome, took)) => {
                            if prober.finish((item, outcome, took), now) {
                                report.reset_immediately();
                            }
                        }
                        None => suspended.push(running.map(move |(outcome, took)| (item, outcome, took))),
                    }
                }
            },
            Some(finished) = suspended.next(), if !suspended.is_empty() => {
                if prober.finish(finished, Instant::now()) {
                    report.reset_immediately();
                }
            },
            _ = report.tick() => prober.report(),
        }
    }
}

/// The prober's wake-up: a round late from a busy thread is run once, not
/// caught up in a burst.
fn round_ticker(round: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(round);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// One probe and how long it took.
async fn timed_probe(handle: Option<ResourceHandle>, thorough: bool) -> (ProbeOutcome, Duration) {
    let started = Instant::now();
    let outcome = match handle {
        Some(handle) => probe(&handle, thorough).await,
        None => ProbeOutcome::Lost,
    };
    (outcome, started.elapsed())
}

impl Prober {
    /// Applies a command; returns whether a probe is due now.
    fn command(&mut self, command: ProbeCommand) -> bool {
        match command {
            ProbeCommand::Start { generation, resource, looks_every, is_every, immediately } => {
                if let Some((slot, replaced)) = self.current.remove(&resource) {
                    self.schedules.remove(slot, replaced);
                }
                let handle = self.worker.handle(&resource);
                let schedule = Schedule {
                    generation,
                    resource: resource.as_str().into(),
                    handle,
                    looks_every,
                    is_every,
                    probes: 0,
                    nanos: 0,
                    buckets: BucketCounts::default(),
                };
                let slot = self.schedules.insert(schedule);
                self.current.insert(resource, (slot, generation));
                let now = Instant::now();
                let first = if immediately { now } else { now + looks_every };
                self.wheel.push(Due { at: first, generation, slot, thorough: false });
                self.wheel.push(Due { at: now + is_every, generation, slot, thorough: true });
                if immediately {
                    self.awaited.insert(generation);
                }
                self.round = self.round.min(round_for(looks_every));
                immediately
            }
            ProbeCommand::Stop { resource } => {
                if let Some((slot, generation)) = self.current.remove(&resource) {
                    self.schedules.remove(slot, generation);
                }
                false
            }
        }
    }

    /// Counts a probe that ended and schedules the next, or reports the
    /// failure and drops the schedule. Returns whether the counts should
    /// go out now (the last awaited re-probe ended).
    fn finish(&mut self, (due, outcome, took): Finished, now: Instant) -> bool {
        let Some(schedule) = self.schedules.get_mut(due.slot, due.generation) else { return false };
        let report_now = self.awaited.remove(&due.generation) && self.awaited.is_empty();
        let next = match outcome {
            ProbeOutcome::Healthy => {
                if schedule.probes == 0 {
                    self.counted.push((due.slot, due.generation));
                }
                schedule.probes += 1;
                schedule.nanos += took.as_nanos() as u64;
                schedule.buckets.observe(took);
                let every = if due.thorough { schedule.is_every } else { schedule.looks_every };
                (due.at + every).max(now)
            }
            ProbeOutcome::Lost => now + MISSING_INSTANCE_RETRY,
            ProbeOutcome::Failed(failure) => {
                if let Some(schedule) = self.schedules.remove(due.slot, due.generation) {
                    self.current.remove(&*schedule.resource);
                }
                self.worker.send(Response::Report(Report::ProbeFailed { generation: due.generation, failure }));
                return report_now;
            }
        };
        self.wheel.push(Due { at: next, ..due });
        report_now
    }

    fn report(&mut self) {
        if self.counted.is_empty() {
            return;
        }
        let mut counts = Vec::with_capacity(self.counted.len());
        for (slot, generation) in self.counted.drain(..) {
            if let Some(schedule) = self.schedules.get_mut(slot, generation) {
                let buckets = schedule.buckets.take();
                counts.push(ProbeCount { generation, probes: schedule.probes, nanos: schedule.nanos, buckets });
                schedule.probes = 0;
                schedule.nanos = 0;
            }
        }
        if !counts.is_empty() {
            self.worker.send(Response::Report(Report::ProbeStats(counts)));
        }
    }
}

/// One probe of one resource, as the prober counts it.
///
/// The is-alive calls are boxed: the prober allocates each probe's future,
/// and most probes are looks-alive, which should not pay for the room an
/// is-alive call needs.
pub async fn probe(handle: &ResourceHandle, thorough: bool) -> ProbeOutcome {
    if thorough {
        return match Box::pin(handle.is_alive(CheckLevel::Normal)).await {
            Ok(health) if health.alive => ProbeOutcome::Healthy,
            Ok(health) => {
                ProbeOutcome::Failed(Failure::new(FailureKind::Unhealthy, format!("is-alive: {}", health.reason)))
            }
            Err(error) => ProbeOutcome::Failed(error.failure()),
        };
    }
    match handle.looks_alive().await {
        Ok(true) => ProbeOutcome::Healthy,
        Ok(false) => match Box::pin(handle.is_alive(CheckLevel::Thorough)).await {
            Ok(health) if health.alive => {
                tracing::info!(resource = handle.name(), "looks-alive false, is-alive true");
                ProbeOutcome::Healthy
            }
            Ok(health) => ProbeOutcome::Failed(Failure::new(
                FailureKind::Unhealthy,
                format!("looks-alive returned false; is-alive: {}", health.reason),
            )),
            Err(error) => ProbeOutcome::Failed(error.failure()),
        },
        Err(error) => ProbeOutcome::Failed(error.failure()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(at: Instant, generation: u64) -> Due {
        Due { at, generation, slot: 0, thorough: false }
    }

    #[test]
    fn the_wheel_hands_out_a_probe_at_the_first_round_at_or_after_its_time() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        for (generation, ms) in [(1, 0), (2, 5), (3, 20), (4, 21), (5, 1_000)] {
            wheel.push(due(origin + Duration::from_millis(ms), generation));
        }
        let mut out = Vec::new();
        let taken = |wheel: &mut Wheel, out: &mut Vec<Due>, ms: u64| {
            wheel.take_due(origin + Duration::from_millis(ms), out);
            let generations: Vec<u64> = out.drain(..).map(|d| d.generation).collect();
            generations
        };
        assert_eq!(taken(&mut wheel, &mut out, 0), vec![1]);
        assert_eq!(taken(&mut wheel, &mut out, 4), Vec::<u64>::new());
        assert_eq!(taken(&mut wheel, &mut out, 5), vec![2]);
        assert_eq!(taken(&mut wheel, &mut out, 20), vec![3]);
        assert_eq!(taken(&mut wheel, &mut out, 20), Vec::<u64>::new());
        assert_eq!(taken(&mut wheel, &mut out, 39), vec![4]);
        assert_eq!(taken(&mut wheel, &mut out, 999), Vec::<u64>::new());
        assert_eq!(taken(&mut wheel, &mut out, 1_000), vec![5]);
    }

    #[test]
    fn probes_beyond_the_wheels_reach_wait_in_the_heap_and_come_back_in_time() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let reach = PROBE_TICK * WHEEL_SLOTS as u32;
        wheel.push(due(origin + reach * 3 + Duration::from_millis(7), 9));
        wheel.push(due(origin + reach + Duration::from_millis(40), 8));
        assert_eq!(wheel.far.len(), 2);
        let mut out = Vec::new();
        // Walk the clock forward a tick at a time, as the prober does.
        let mut seen = Vec::new();
        let mut now = origin;
        while now < origin + reach * 4 {
            wheel.take_due(now, &mut out);
            for item in out.drain(..) {
                assert!(item.at <= now, "handed out early");
                assert!(now - item.at < PROBE_TICK, "handed out more than a tick late");
                seen.push(item.generation);
            }
            now += PROBE_TICK;
        }
        assert_eq!(seen, vec![8, 9]);
    }

    fn schedule(generation: u64) -> Schedule {
        let every = Duration::from_secs(1);
        Schedule {
            generation,
            resource: "r".into(),
            handle: None,
            looks_every: every,
            is_every: every,
            probes: 0,
            nanos: 0,
            buckets: BucketCounts::default(),
        }
    }

    #[test]
    fn the_prober_wakes_every_tenth_of_the_shortest_interval_within_bounds() {
        assert_eq!(round_for(Duration::from_millis(50)), PROBE_TICK);
        assert_eq!(round_for(Duration::from_millis(500)), Duration::from_millis(50));
        assert_eq!(round_for(Duration::from_secs(5)), LONGEST_ROUND);
    }

    #[test]
    fn a_stopped_schedules_slot_serves_only_its_successor() {
        let mut schedules = Schedules::default();
        let first = schedules.insert(schedule(1));
        assert!(schedules.remove(first, 2).is_none(), "a stale generation removes nothing");
        assert!(schedules.remove(first, 1).is_some());
        let reused = schedules.insert(schedule(7));
        assert_eq!(reused, first, "the slot is reused");
        // A probe of the stopped schedule, still in the wheel, finds nothing.
        assert!(schedules.get_mut(first, 1).is_none());
        assert!(schedules.get_mut(reused, 7).is_some());
    }

    #[test]
    fn a_probe_pushed_after_its_time_runs_at_the_next_round() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin);
        let mut out = Vec::new();
        wheel.take_due(origin + Duration::from_millis(100), &mut out);
        wheel.push(due(origin + Duration::from_millis(10), 1));
        wheel.push(due(origin + Duration::from_millis(100), 2));
        wheel.push(due(origin + Duration::from_millis(102), 3));
        wheel.take_due(origin + Duration::from_millis(101), &mut out);
        let mut generations: Vec<u64> = out.drain(..).map(|d| d.generation).collect();
        generations.sort();
        assert_eq!(generations, vec![1, 2]);
        wheel.take_due(origin + Duration::from_millis(102), &mut out);
        assert_eq!(out.len(), 1);
    }
}
