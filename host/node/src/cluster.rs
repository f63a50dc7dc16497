//! The ownership backend of a node in a cluster: groups are owned through
//! etcd (`steward_cluster`), one owner at a time, each ownership with the
//! owner key's create revision as its fencing token.
//!
//! An agent task stands between the node loop and etcd, so the loop never
//! waits on the network: the loop's `acquire` and `release` become
//! commands, and what the agent learns comes back as [`OwnershipEvent`]s.
//! The agent
//! - takes a group the node wants when nobody owns it and placement names
//!   this node (the first live node of `preferred_owners`, then the others
//!   by name, among `possible_owners`), or when it stayed unowned for a
//!   lease TTL whoever was named (the named node may be unable to act);
//! - reports `Acquired` only a safety margin after etcd granted the key,
//!   room for the clocks of the old owner and etcd to differ;
//! - fences the node: when keepalives stop being acknowledged, or the
//!   lease is gone, every group is reported `Lost` at once, before the
//!   lease can run out by the node's own estimate, so that no other node
//!   can run a group while this one still does;
//! - reports `Lost` too when a group's owner key names another node or
//!   vanishes (an operator, or etcd's revocation bug);
//! - tries again what it still wants when the lease is healthy again or
//!   the node rejoined with a new lease.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use steward_cluster::membership::LeaseGauge;
use steward_cluster::membership::MembershipEvent;
use steward_cluster::placement::{GroupPlacement, LiveNode, RecentFailure, choose_owner};
use steward_cluster::{FencingToken, Member, OwnerChanged, PluginInventory};
use steward_monitor::bindings::ClusterEvent;
use steward_monitor::worker::lease::monotonic_ns;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tracing::Instrument;

use crate::{Ownership, OwnershipEvent};

/// Where a group may run, from the node file.
#[derive(Debug, Clone, Default)]
pub struct GroupOwners {
    /// The nodes that should run it, most wanted first.
    pub preferred: Vec<String>,
    /// The only nodes that may run it; empty: any.
    pub possible: Vec<String>,
    /// Whether it goes back to a more preferred node that returns.
    pub failback: steward_config::Failback,
    /// How many failovers within `failover_period` before it stays failed;
    /// `None`: one less than the live nodes.
    pub failover_threshold: Option<u32>,
    /// The window failovers are counted in.
    pub failover_period: Duration,
}

/// The cluster as this node sees it, for the API, `steward status` and
/// `/metrics`: kept by the agent, read by anyone.
pub struct ClusterView {
    /// The cluster's name.
    pub name: String,
    /// This node's name.
    pub node: String,
    /// The nodes holding a lease, as last read from etcd.
    pub nodes: RwLock<Vec<ClusterNode>>,
    /// Each owned group's owner, as the owners watch reports it (the
    /// agent's own record too).
    pub owners: RwLock<BTreeMap<String, GroupOwner>>,
    /// `healthy`, `quorum-lost` or `expired` (rejoining).
    pub health: RwLock<&'static str>,
    /// The keepalive figures.
    pub gauge: LeaseGauge,
    /// Groups this node acquired, since the daemon started.
    pub acquisitions: AtomicU64,
    /// Groups this node lost (fenced, or taken by another), since it started.
    pub losses: AtomicU64,
    /// Groups this node took over from another node, since it started.
    pub failovers: AtomicU64,
}

/// A node holding its lease.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// Its name.
    pub name: String,
    /// Its API address.
    pub api_address: String,
    /// The `steward` version it runs.
    pub version: String,
}

/// A group's owner and the fencing token of its ownership.
#[derive(Debug, Clone)]
pub struct GroupOwner {
    /// The owner node.
    pub node: String,
    /// The owner key's create revision.
    pub fencing_token: u64,
}

/// The node's side of cluster ownership: commands to the agent task.
pub struct ClusterOwnership {
    commands: mpsc::UnboundedSender<Command>,
}

enum Command {
    Acquire(String),
    Release(String),
    HandOver(String, Option<String>),
    FailOver(String),
}

impl ClusterOwnership {
    /// Starts the agent for `member` (which must outlive it), and the
    /// channel the node loop hears it on.
    pub fn start(
        member: &Member,
        groups: BTreeMap<String, GroupOwners>,
        lease_ttl: Duration,
        safety_margin: Duration,
    ) -> (ClusterOwnership, mpsc::UnboundedReceiver<OwnershipEvent>, Arc<ClusterView>) {
        let (commands, command_receiver) = mpsc::unbounded_channel();
        let (events, receiver) = mpsc::unbounded_channel();
        let view = Arc::new(ClusterView {
            name: member.cluster().to_string(),
            node: member.node().to_string(),
            nodes: RwLock::new(Vec::new()),
            owners: RwLock::new(BTreeMap::new()),
            health: RwLock::new("healthy"),
            gauge: member.gauge(),
            acquisitions: AtomicU64::new(0),
            losses: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
        });
        let agent = Agent {
            view: view.clone(),
            node: member.node().to_string(),
            etcd: member.ownership(),
            gauge: member.gauge(),
            groups,
            lease_ttl,
            safety_margin,
            events,
            wanted: BTreeSet::new(),
            owned: HashMap::new(),
            unowned_since: HashMap::new(),
            margins: Vec::new(),
            fenced: false,
            last_owner: HashMap::new(),
            known_nodes: None,
            failing_back: HashMap::new(),
        };
        let span = tracing::info_span!("cluster_ownership", node = %member.node());
        tokio::spawn(agent.run(command_receiver, member.subscribe()).instrument(span));
        (ClusterOwnership { commands }, receiver, view)
    }
}

impl Ownership for ClusterOwnership {
    fn acquire(&mut self, group: &str) {
        let _ = self.commands.send(Command::Acquire(group.to_string()));
    }

    fn release(&mut self, group: &str) {
        let _ = self.commands.send(Command::Release(group.to_string()));
    }

    fn hand_over(&mut self, group: &str, to: Option<&str>) {
        let _ = self.commands.send(Command::HandOver(group.to_string(), to.map(str::to_string)));
    }

    fn fail_over(&mut self, group: &str) {
        let _ = self.commands.send(Command::FailOver(group.to_string()));
    }
}

struct Agent {
    view: Arc<ClusterView>,
    node: String,
    etcd: steward_cluster::Ownership,
    gauge: LeaseGauge,
    groups: BTreeMap<String, GroupOwners>,
    lease_ttl: Duration,
    safety_margin: Duration,
    events: mpsc::UnboundedSender<OwnershipEvent>,
    /// Groups the node asked for and did not release.
    wanted: BTreeSet<String>,
    /// Groups this node owns, reported or waiting for the safety margin.
    owned: HashMap<String, FencingToken>,
    /// When each group was last seen without an owner.
    unowned_since: HashMap<String, Instant>,
    /// Groups acquired and not yet reported: when to report them.
    margins: Vec<(Instant, String, FencingToken)>,
    /// Keepalives are not acknowledged: nothing is taken until they are.
    fenced: bool,
    /// The last node each group was seen owned by, to count failovers.
    last_owner: HashMap<String, String>,
    /// The live nodes at the last read (`None` before the first).
    known_nodes: Option<BTreeSet<String>>,
    /// Groups this node was asked to move back, and when: asked again
    /// only after a lease TTL (the node may have been unable to start it).
    failing_back: HashMap<String, Instant>,
}

impl Agent {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut membership: broadcast::Receiver<MembershipEvent>,
    ) {
        let mut watch = loop {
            match self.etcd.watch_owners().await {
                Ok(watch) => break watch,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the group owners yet; trying again");
                    tokio::time::sleep(self.lease_ttl / 4).await;
                }
            }
        };
        let mut tick = tokio::time::interval(self.lease_ttl / 4);
        loop {
            let next_margin = self.margins.iter().map(|(at, _, _)| *at).min();
            tokio::select! {
                // Losing etcd is heard before anything else is done.
                biased;
                event = membership.recv() => match event {
                    Ok(event) => self.membership(event).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.fence("membership events were missed"),
                    Err(broadcast::error::RecvError::Closed) => {
                        self.fence("the cluster membership ended");
                        return;
                    }
                },
                command = commands.recv() => match command {
                    Some(Command::Acquire(group)) => {
                        self.wanted.insert(group.clone());
                        self.consider(&group).await;
                    }
                    Some(Command::Release(group)) => self.release(&group).await,
                    Some(Command::HandOver(group, to)) => self.hand_over(&group, to).await,
                    Some(Command::FailOver(group)) => self.fail_over(&group).await,
                    // The node stopped: its lease goes with the member.
                    None => return,
                },
                Some(change) = watch.recv() => self.owner_changed(change).await,
                () = sleep_until(next_margin), if next_margin.is_some() => self.report_due(),
                _ = tick.tick() => {
                    self.extend_lease();
                    // With keepalives overdue, etcd requests would only
                    // wait out their deadlines and hold this loop up.
                    if self.keepalives_overdue() {
                        continue;
                    }
                    self.refresh_nodes().await;
                    for group in self.wanted.clone() {
                        self.consider(&group).await;
                    }
                    self.fail_back().await;
                }
            }
        }
    }

    /// Reads the live nodes into the view; a node that joined or left
    /// since the last read is told to the node's resources.
    async fn refresh_nodes(&mut self) {
        if let Ok(nodes) = self.etcd.live_nodes().await {
            let names: BTreeSet<String> = nodes.iter().map(|node| node.name.clone()).collect();
            if let Some(known) = &self.known_nodes {
                for joined in names.difference(known) {
                    let _ = self.events.send(OwnershipEvent::Cluster(ClusterEvent::NodeJoined(joined.clone())));
                }
                for left in known.difference(&names) {
                    let _ = self.events.send(OwnershipEvent::Cluster(ClusterEvent::NodeLeft(left.clone())));
                }
            }
            self.known_nodes = Some(names);
            let nodes = nodes
                .into_iter()
                .map(|node| ClusterNode {
                    name: node.name,
                    api_address: node.info.api_address,
                    version: node.info.version,
                })
                .collect();
            if let Ok(mut view) = self.view.nodes.write() {
                *view = nodes;
            }
        }
    }

    /// Takes `group` if the node wants it, nobody owns it, and this node
    /// is the one to take it.
    async fn consider(&mut self, group: &str) {
        if self.fenced || !self.wanted.contains(group) || self.owned.contains_key(group) {
            return;
        }
        let owned_elsewhere =
            self.view.owners.read().is_ok_and(|owners| owners.get(group).is_some_and(|owner| owner.node != self.node));
        if owned_elsewhere {
            return;
        }
        let now = Instant::now();
        let unowned_since = *self.unowned_since.entry(group.to_string()).or_insert(now);
        let handoff = match self.etcd.handoff(group).await {
            Ok(handoff) => handoff,
            Err(error) => {
                tracing::warn!(%group, %error, "cannot read the group's hand-over");
                return;
            }
        };
        let named = match &handoff {
            // A planned move names the next owner.
            Some(to) => Some(to.clone()),
            None => {
                let failed = self.recent_failovers(group).await;
                self.next_owner(group, None, &failed).await
            }
        };
        let possible = self.groups.get(group).is_none_or(|o| o.possible.is_empty() || o.possible.contains(&self.node));
        let chosen = match named {
            Some(owner) if owner == self.node => true,
            // The named node did not take it within a lease TTL.
            _ => possible && now.duration_since(unowned_since) >= self.lease_ttl,
        };
        if !chosen {
            return;
        }
        match self.etcd.acquire(group).await {
            Ok(Some(token)) => {
                if handoff.is_some() {
                    // The move is done: the next loss is a failover again.
                    if let Err(error) = self.etcd.clear_handoff(group, token).await {
                        tracing::warn!(%group, %error, "cannot clear the hand-over");
                    }
                    let from = self.last_owner.get(group).cloned();
                    let moved = OwnershipEvent::Moved { group: group.to_string(), from, fencing_token: token.0 };
                    let _ = self.events.send(moved);
                }
                tracing::info!(%group, %token, "group acquired in etcd; online after the safety margin");
                self.view.acquisitions.fetch_add(1, Ordering::Relaxed);
                if self.last_owner.get(group).is_some_and(|last| *last != self.node) {
                    self.view.failovers.fetch_add(1, Ordering::Relaxed);
                }
                self.owned.insert(group.to_string(), token);
                self.unowned_since.remove(group);
                self.margins.push((Instant::now() + self.safety_margin, group.to_string(), token));
            }
            Ok(None) => tracing::debug!(%group, "another node took the group first"),
            Err(error) => tracing::warn!(%group, %error, "cannot acquire the group"),
        }
    }

    /// Whether the last two keepalives went unanswered.
    fn keepalives_overdue(&self) -> bool {
        self.gauge.read().is_none_or(|figures| figures.since_last_ack > self.lease_ttl / 2)
    }

    /// Passes the lease's end, by the member's own estimate, to the
    /// workers (through the node loop, so a wedged loop lets it run out):
    /// past it they fence themselves, even if this daemon is paused.
    fn extend_lease(&self) {
        if self.fenced {
            return;
        }
        if let Some(figures) = self.gauge.read() {
            let until_ns = monotonic_ns().saturating_add(figures.remaining.as_nanos() as u64);
            let _ = self.events.send(OwnershipEvent::LeaseValid { until_ns });
        }
    }

    /// The node placement names for `group` among the live nodes, leaving
    /// out `except`.
    async fn next_owner(&self, group: &str, except: Option<&str>, failed: &[(String, u64)]) -> Option<String> {
        let nodes = match self.etcd.live_nodes().await {
            Ok(nodes) => nodes,
            Err(error) => {
                tracing::warn!(%group, %error, "cannot read the live nodes");
                return None;
            }
        };
        let owners = self.groups.get(group).cloned().unwrap_or_default();
        let no_types = BTreeSet::new();
        let placement = GroupPlacement {
            preferred_owners: &owners.preferred,
            possible_owners: &owners.possible,
            plugin_types: &no_types,
            failover_period: owners.failover_period,
        };
        // Failures are kept as wall-clock times (they outlive any one
        // node's clock); placement counts from a monotonic now.
        let now = std::time::Instant::now();
        let now_ms = unix_ms();
        let failures: Vec<RecentFailure<'_>> = failed
            .iter()
            .map(|(node, at_ms)| RecentFailure {
                node,
                at: now.checked_sub(Duration::from_millis(now_ms.saturating_sub(*at_ms))).unwrap_or(now),
            })
            .collect();
        let empty = PluginInventory::new();
        let live: Vec<LiveNode<'_>> = nodes
            .iter()
            .filter(|node| Some(node.name.as_str()) != except)
            .map(|node| LiveNode { name: &node.name, plugins: &empty })
            .collect();
        choose_owner(&placement, &live, &failures, now).owner
    }

    /// Asks the node to move each group it runs back to a more preferred
    /// node that returned, where the group's `failback` allows it now.
    async fn fail_back(&mut self) {
        let minute = {
            let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            ((since_epoch.as_secs() / 60) % (24 * 60)) as u16
        };
        let reported: Vec<String> = self
            .owned
            .keys()
            .filter(|group| !self.margins.iter().any(|(_, waiting, _)| waiting == *group))
            .filter(|group| self.failing_back.get(*group).is_none_or(|asked| asked.elapsed() >= self.lease_ttl * 2))
            .filter(|group| self.groups.get(*group).is_some_and(|owners| owners.failback.allows(minute)))
            .cloned()
            .collect();
        for group in reported {
            let Some(best) = self.next_owner(&group, None, &[]).await else { continue };
            let preferred = &self.groups[&group].preferred;
            let rank = |node: &str| preferred.iter().position(|p| p == node).unwrap_or(usize::MAX);
            if best != self.node && rank(&best) < rank(&self.node) {
                tracing::info!(%group, to = %best, "failback: a more preferred owner is back");
                self.failing_back.insert(group.clone(), Instant::now());
                let _ = self.events.send(OwnershipEvent::FailBack { group, to: best });
            }
        }
    }

    /// Hands `group`, offline here, to `to` or the next node by placement;
    /// with nowhere to go, it stays here and comes back online.
    async fn hand_over(&mut self, group: &str, to: Option<String>) {
        let Some(token) = self.owned.get(group).copied() else { return };
        let target = match to {
            Some(to) => Some(to),
            None => self.next_owner(group, Some(&self.node), &[]).await,
        };
        let outcome = match &target {
            Some(target) => self.etcd.hand_over(group, token, target).await.map_err(|error| error.to_string()),
            None => Err("no other live node may run it".to_string()),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(%group, to = ?target, "group handed over");
                self.owned.remove(group);
                self.failing_back.remove(group);
                self.unowned_since.insert(group.to_string(), Instant::now());
            }
            Err(why) => {
                tracing::warn!(%group, %why, "the group cannot move; it stays here");
                self.failing_back.remove(group);
                let _ = self.events.send(OwnershipEvent::Acquired { group: group.to_string(), fencing_token: token.0 });
            }
        }
    }

    /// The group's failovers within its failover period: (node it failed
    /// on, when, in Unix milliseconds), from etcd.
    async fn recent_failovers(&self, group: &str) -> Vec<(String, u64)> {
        let period = self.groups.get(group).map_or(Duration::ZERO, |owners| owners.failover_period);
        let since = unix_ms().saturating_sub(period.as_millis() as u64);
        match self.etcd.group_data(group, FAILOVERS).await {
            Ok(Some(json)) => serde_json::from_str::<Vec<(String, u64)>>(&json)
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, at)| *at >= since)
                .collect(),
            Ok(None) => Vec::new(),
            Err(error) => {
                tracing::warn!(%group, %error, "cannot read the group's failovers");
                Vec::new()
            }
        }
    }

    /// `group` failed here past its restart threshold: moves it to the
    /// next node by placement (skipping nodes where it failed within its
    /// failover period), unless it was moved `failover_threshold` times
    /// within the period already; then it stays failed here.
    async fn fail_over(&mut self, group: &str) {
        let Some(token) = self.owned.get(group).copied() else { return };
        let mut failed = self.recent_failovers(group).await;
        let threshold = match self.groups.get(group).and_then(|owners| owners.failover_threshold) {
            Some(threshold) => threshold as usize,
            None => self.view.nodes.read().map_or(0, |nodes| nodes.len().saturating_sub(1)),
        };
        failed.push((self.node.clone(), unix_ms()));
        let target =
            if failed.len() > threshold { None } else { self.next_owner(group, Some(&self.node), &failed).await };
        let Some(target) = target else {
            tracing::warn!(%group, failovers = failed.len() - 1, threshold, "the group stays failed here");
            let _ = self.events.send(OwnershipEvent::FailoverExhausted { group: group.to_string() });
            return;
        };
        let json = serde_json::to_string(&failed).unwrap_or_default();
        if let Err(error) = self.etcd.guarded_put(group, token, FAILOVERS, json).await {
            tracing::warn!(%group, %error, "cannot record the failover; the group stays here");
            return;
        }
        match self.etcd.hand_over(group, token, &target).await {
            Ok(()) => {
                tracing::warn!(%group, to = %target, "the group failed here; failing over");
                self.owned.remove(group);
                self.unowned_since.insert(group.to_string(), Instant::now());
                let _ = self.events.send(OwnershipEvent::FailedOver { group: group.to_string(), to: target });
            }
            Err(error) => tracing::warn!(%group, %error, "cannot fail the group over; it stays here"),
        }
    }

    /// Reports the acquisitions whose safety margin has passed.
    fn report_due(&mut self) {
        // The workers must hold a deadline before anything runs there.
        self.extend_lease();
        let now = Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = self.margins.drain(..).partition(|(at, _, _)| *at <= now);
        self.margins = waiting;
        for (_, group, token) in due {
            if self.owned.get(&group) == Some(&token) {
                let _ = self.events.send(OwnershipEvent::Acquired { group, fencing_token: token.0 });
            }
        }
    }

    async fn release(&mut self, group: &str) {
        self.wanted.remove(group);
        self.margins.retain(|(_, waiting, _)| waiting != group);
        if let Some(token) = self.owned.remove(group)
            && let Err(error) = self.etcd.release(group, token).await
        {
            tracing::warn!(%group, %error, "cannot release the group; its key goes with the lease");
        }
    }

    async fn owner_changed(&mut self, change: OwnerChanged) {
        let OwnerChanged { group, owner, token } = change;
        if let Ok(mut owners) = self.view.owners.write() {
            match &owner {
                Some(node) => owners.insert(group.clone(), GroupOwner { node: node.clone(), fencing_token: token.0 }),
                None => owners.remove(&group),
            };
        }
        let _ = self.events.send(OwnershipEvent::Observed {
            group: group.clone(),
            owner: owner.clone(),
            fencing_token: token.0,
        });
        if let Some(node) = &owner {
            self.last_owner.insert(group.clone(), node.clone());
        }
        match owner {
            Some(owner) => {
                if owner != self.node && self.owned.contains_key(&group) {
                    tracing::warn!(%group, %owner, "another node owns the group now");
                    self.lose(&group);
                }
                self.unowned_since.remove(&group);
            }
            None => {
                if self.owned.get(&group) == Some(&token) {
                    tracing::warn!(%group, %token, "this node's owner key vanished");
                    self.lose(&group);
                }
                self.unowned_since.insert(group.clone(), Instant::now());
                self.consider(&group).await;
            }
        }
    }

    async fn membership(&mut self, event: MembershipEvent) {
        match event {
            MembershipEvent::QuorumLost { remaining, .. } => {
                self.set_health("quorum-lost");
                self.fence(&format!("keepalives are not acknowledged; the lease lives {remaining:?} more at most"));
            }
            MembershipEvent::LeaseExpired { reason, .. } => {
                self.set_health("expired");
                self.fence(&format!("the lease is gone ({reason:?})"));
            }
            MembershipEvent::LeaseHealthy { .. } | MembershipEvent::Rejoined { .. } => {
                self.set_health("healthy");
                if self.fenced {
                    let _ = self.events.send(OwnershipEvent::Cluster(ClusterEvent::QuorumRegained));
                }
                self.fenced = false;
                self.extend_lease();
                for group in self.wanted.clone() {
                    self.consider(&group).await;
                }
            }
        }
    }

    fn set_health(&self, health: &'static str) {
        if let Ok(mut view) = self.view.health.write() {
            *view = health;
        }
    }

    /// Holds nothing from now on until the lease is healthy again.
    fn fence(&mut self, why: &str) {
        if !self.fenced {
            let _ = self.events.send(OwnershipEvent::Cluster(ClusterEvent::QuorumLost));
        }
        self.fenced = true;
        if !self.owned.is_empty() {
            tracing::warn!(groups = self.owned.len(), why, "fencing: taking every group offline here");
        }
        let owned: Vec<String> = self.owned.keys().cloned().collect();
        for group in owned {
            self.lose(&group);
        }
    }

    fn lose(&mut self, group: &str) {
        self.view.losses.fetch_add(1, Ordering::Relaxed);
        self.failing_back.remove(group);
        self.owned.remove(group);
        self.margins.retain(|(_, waiting, _)| waiting != group);
        let _ = self.events.send(OwnershipEvent::Lost { group: group.to_string() });
    }
}

/// The group data key listing its failovers: JSON `[[node, unix ms], ...]`.
const FAILOVERS: &str = "failovers";

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
