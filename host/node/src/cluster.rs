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
use steward_cluster::placement::{Decision as Placement, GroupPlacement, LiveNode, RecentFailure, choose_owner};
use steward_cluster::{FencingToken, Member, OwnerChanged, PluginInventory};
use steward_monitor::bindings::ClusterEvent;
use steward_monitor::worker::lease::monotonic_ns;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tracing::Instrument;

use crate::why::{self, Decision, PLACEMENT_RULE};
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
    /// The plugin types its resources use: a node lacking one never gets it.
    pub plugin_types: BTreeSet<String>,
}

impl GroupOwners {
    fn placement(&self) -> GroupPlacement<'_> {
        GroupPlacement {
            preferred_owners: &self.preferred,
            possible_owners: &self.possible,
            plugin_types: &self.plugin_types,
            failover_period: self.failover_period,
        }
    }

    /// Where each of `groups` (whose resources are among `resources`) may
    /// run, by group name.
    pub fn of(
        groups: &[steward_config::GroupConfig],
        resources: &[steward_config::ResourceConfig],
    ) -> BTreeMap<String, GroupOwners> {
        // Through an index: 10,000 groups of one resource each would
        // otherwise look through 10,000 resources apiece.
        let type_of: HashMap<&str, &str> =
            resources.iter().map(|resource| (resource.name.as_str(), resource.type_name.as_str())).collect();
        groups
            .iter()
            .map(|group| {
                let plugin_types = group
                    .resources
                    .iter()
                    .filter_map(|member| type_of.get(member.as_str()).map(|type_name| type_name.to_string()))
                    .collect();
                let owners = GroupOwners {
                    preferred: group.preferred_owners.clone(),
                    possible: group.possible_owners.clone(),
                    failback: group.failback,
                    failover_threshold: group.policy.failover_threshold,
                    failover_period: group.policy.failover_period,
                    plugin_types,
                };
                (group.name.clone(), owners)
            })
            .collect()
    }
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
    /// Groups this node handed over in a planned move or failback.
    pub moves: AtomicU64,
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
    /// The plugin types it can run, with their version hashes.
    pub plugins: PluginInventory,
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
    Place(BTreeMap<String, GroupOwners>),
    Plugins(PluginInventory),
    Wish(String, bool),
    Settle(tokio::sync::oneshot::Sender<()>),
}

impl ClusterOwnership {
    /// Starts the agent for `member` (which must outlive it), and the
    /// channel the node loop hears it on.
    pub fn start(
        member: &Member,
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
            moves: AtomicU64::new(0),
        });
        let agent = Agent {
            view: view.clone(),
            node: member.node().to_string(),
            etcd: member.ownership(),
            gauge: member.gauge(),
            groups: BTreeMap::new(),
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
            inventory: PluginInventory::new(),
            inventory_published: false,
            unwanted: BTreeSet::new(),
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

    fn place(&mut self, groups: BTreeMap<String, GroupOwners>) {
        let _ = self.commands.send(Command::Place(groups));
    }

    fn plugins_changed(&mut self, inventory: &PluginInventory) {
        let _ = self.commands.send(Command::Plugins(inventory.clone()));
    }

    fn wish(&mut self, group: &str, online: bool) {
        let _ = self.commands.send(Command::Wish(group.to_string(), online));
    }

    fn settled(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let (done, settled) = tokio::sync::oneshot::channel();
        self.commands.send(Command::Settle(done)).ok().map(|()| settled)
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
    /// The plugin types this node can run, and whether its node key says
    /// so (published again after a failure and after a rejoin, which
    /// writes the node key afresh).
    inventory: PluginInventory,
    inventory_published: bool,
    /// Groups an operator wants offline in the whole cluster: no node
    /// takes them until one wants them online again.
    unwanted: BTreeSet<String>,
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
        // Wishes are known before any group is taken: one an operator
        // wanted offline is not brought back by a node that starts.
        let mut wishes = loop {
            match self.etcd.watch_wishes().await {
                Ok(wishes) => break wishes,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the operators' wishes yet; trying again");
                    tokio::time::sleep(self.lease_ttl / 4).await;
                }
            }
        };
        while let Ok(Some(change)) = tokio::time::timeout(Duration::ZERO, wishes.recv()).await {
            self.wish_changed(change);
        }
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
                    Some(Command::Place(groups)) => self.groups.extend(groups),
                    Some(Command::Wish(group, online)) => self.set_wish(group, online).await,
                    Some(Command::Settle(done)) => {
                        let _ = done.send(());
                    }
                    Some(Command::Plugins(inventory)) => {
                        self.inventory = inventory;
                        self.inventory_published = false;
                        self.publish_inventory().await;
                    }
                    // The node stopped: its lease goes with the member.
                    None => return,
                },
                Some(change) = watch.recv() => self.owner_changed(change).await,
                Some(change) = wishes.recv() => self.wish_changed(change),
                () = sleep_until(next_margin), if next_margin.is_some() => self.report_due(),
                _ = tick.tick() => {
                    self.extend_lease();
                    // With keepalives overdue, etcd requests would only
                    // wait out their deadlines and hold this loop up.
                    if self.keepalives_overdue() {
                        continue;
                    }
                    self.publish_inventory().await;
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
                    plugins: node.info.plugins,
                })
                .collect();
            if let Ok(mut view) = self.view.nodes.write() {
                *view = nodes;
            }
        }
    }

    /// A change to the operators' wishes, from etcd. A forgotten wish
    /// (its group left the shared configuration) leaves the group free to
    /// run when it is applied again; the node loop has removed it already.
    fn wish_changed(&mut self, change: steward_cluster::WishChange) {
        match change {
            steward_cluster::WishChange::Set(wish) => self.wished(wish),
            steward_cluster::WishChange::Forgotten(group) => self.wanted_again(&group),
        }
    }

    /// An operator's wish, from etcd: remembered, and passed to the node
    /// loop when another node's operator made it (this node's own was
    /// applied when it was asked).
    fn wished(&mut self, wish: steward_cluster::Wish) {
        if wish.online {
            self.wanted_again(&wish.group);
        } else {
            self.unwanted.insert(wish.group.clone());
        }
        if wish.by != self.node {
            let _ = self.events.send(OwnershipEvent::Wished { group: wish.group, online: wish.online, by: wish.by });
        }
    }

    /// `group` may run again: the node placement names gets a lease TTL
    /// to take it from now, not from when it went offline.
    fn wanted_again(&mut self, group: &str) {
        if self.unwanted.remove(group) {
            self.unowned_since.insert(group.to_string(), Instant::now());
        }
    }

    /// Records this node's operator's wish in etcd, for every node.
    async fn set_wish(&mut self, group: String, online: bool) {
        if online {
            self.wanted_again(&group);
        } else {
            self.unwanted.insert(group.clone());
        }
        let wish = steward_cluster::Wish { group, online, by: self.node.clone(), unix_ms: unix_ms() };
        if let Err(error) = self.etcd.set_wish(&wish).await {
            tracing::warn!(group = %wish.group, %error, "cannot record the wish in etcd; other nodes do not know it");
        }
    }

    /// Takes `group` if the node wants it, nobody owns it, and this node
    /// is the one to take it.
    async fn consider(&mut self, group: &str) {
        if self.fenced
            || !self.wanted.contains(group)
            || self.owned.contains_key(group)
            || self.unwanted.contains(group)
        {
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
        let (named, mut inputs) = match &handoff {
            // A planned move names the next owner.
            Some(to) => (Some(to.clone()), vec![format!("the hand-over names node `{to}`")]),
            None => {
                let failed = self.recent_failovers(group).await;
                match self.placement(group, None, &failed).await {
                    Some(placement) => (placement.owner.clone(), why::candidates(&placement)),
                    None => (None, Vec::new()),
                }
            }
        };
        let (chosen, rule) = match &named {
            Some(owner) if *owner == self.node => {
                let rule = if handoff.is_some() {
                    "a planned move or failback names the next owner".to_string()
                } else {
                    PLACEMENT_RULE.to_string()
                };
                (true, rule)
            }
            // The named node did not take it within a lease TTL: any node
            // that may run it takes it.
            _ => {
                let rule = format!(
                    "the node placement named ({}) did not take the group within a lease TTL ({:?}): any node that \
                     may run it takes it",
                    named.as_deref().unwrap_or("none"),
                    self.lease_ttl
                );
                (now.duration_since(unowned_since) >= self.lease_ttl && self.may_run(group), rule)
            }
        };
        if !chosen {
            return;
        }
        if let Some(last) = self.last_owner.get(group) {
            inputs.push(format!("last owner: node `{last}`"));
        }
        match self.etcd.acquire(group).await {
            Ok(Some(token)) => {
                self.decide(
                    group,
                    "acquired",
                    rule,
                    inputs,
                    format!("this node owns the group, with fencing token {token}; online after the safety margin"),
                );
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
            Ok(None) => {
                tracing::debug!(%group, "another node took the group first");
                self.decide(group, "lost-race", rule, inputs, "another node won the owner key's transaction".into());
            }
            Err(error) => tracing::warn!(%group, %error, "cannot acquire the group"),
        }
    }

    /// Writes the node's plugin types into its node key, if they changed
    /// since they were last written; a failure is tried again next tick.
    async fn publish_inventory(&mut self) {
        if self.inventory_published || self.fenced {
            return;
        }
        match self.etcd.publish_plugins(&self.inventory).await {
            Ok(()) => self.inventory_published = true,
            Err(error) => tracing::warn!(%error, "cannot publish the plugin types; trying again"),
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
        self.placement(group, except, failed).await.and_then(|decision| decision.owner)
    }

    /// Placement's decision for `group` among the live nodes, leaving out
    /// `except`, with its verdict on every node; `None` when etcd cannot
    /// say which nodes are live.
    async fn placement(&self, group: &str, except: Option<&str>, failed: &[(String, u64)]) -> Option<Placement> {
        let nodes = match self.etcd.live_nodes().await {
            Ok(nodes) => nodes,
            Err(error) => {
                tracing::warn!(%group, %error, "cannot read the live nodes");
                return None;
            }
        };
        let owners = self.groups.get(group).cloned().unwrap_or_default();
        let placement = owners.placement();
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
        let live: Vec<LiveNode<'_>> = nodes
            .iter()
            .filter(|node| Some(node.name.as_str()) != except)
            .map(|node| LiveNode {
                name: &node.name,
                plugins: &node.info.plugins,
                plugins_known: node.info.plugins_known,
            })
            .collect();
        Some(choose_owner(&placement, &live, &failures, now))
    }

    /// Tells the node loop what was decided for `group`, for `steward why`.
    fn decide(&self, group: &str, kind: &str, rule: String, inputs: Vec<String>, outcome: String) {
        let decision = Decision {
            unix_ms: unix_ms(),
            node: self.node.clone(),
            group: group.to_string(),
            kind: kind.into(),
            rule,
            inputs,
            outcome,
        };
        let _ = self.events.send(OwnershipEvent::Decided(decision));
    }

    /// Whether this node may run `group` at all: a possible owner holding
    /// every plugin type it uses.
    fn may_run(&self, group: &str) -> bool {
        let owners = self.groups.get(group).cloned().unwrap_or_default();
        let this = LiveNode { name: &self.node, plugins: &self.inventory, plugins_known: true };
        steward_cluster::placement::ineligibility(&owners.placement(), &this, &[], std::time::Instant::now()).is_none()
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
                let failback = self.groups[&group].failback;
                self.decide(
                    &group,
                    "failback",
                    format!("failback ({failback:?}) moves a group to a more preferred owner that is live again"),
                    vec![format!("preferred_owners: {}", preferred.join(", ")), format!("this node: `{}`", self.node)],
                    format!("moving to node `{best}`"),
                );
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
            None => {
                let placement = self.placement(group, Some(&self.node), &[]).await;
                let inputs = placement.as_ref().map(why::candidates).unwrap_or_default();
                let owner = placement.and_then(|placement| placement.owner);
                let outcome = match &owner {
                    Some(owner) => format!("hand over to node `{owner}`"),
                    None => "no other node may run it: it stays here".into(),
                };
                self.decide(group, "move", PLACEMENT_RULE.into(), inputs, outcome);
                owner
            }
        };
        let outcome = match &target {
            Some(target) => self.etcd.hand_over(group, token, target).await.map_err(|error| error.to_string()),
            None => Err("no other live node may run it".to_string()),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(%group, to = ?target, "group handed over");
                self.view.moves.fetch_add(1, Ordering::Relaxed);
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
        let period = self.groups.get(group).map_or(Duration::ZERO, |owners| owners.failover_period);
        let rule = format!(
            "a group that fails past its restart threshold moves to the next node by placement, at most \
             failover_threshold ({threshold}) times within failover_period ({}); {PLACEMENT_RULE}",
            humantime::format_duration(period)
        );
        let mut inputs: Vec<String> =
            failed.iter().map(|(node, at)| format!("failed on node `{node}` at unix ms {at}")).collect();
        let target = if failed.len() > threshold {
            None
        } else {
            let placement = self.placement(group, Some(&self.node), &failed).await;
            inputs.extend(placement.as_ref().map(why::candidates).unwrap_or_default());
            placement.and_then(|placement| placement.owner)
        };
        let Some(target) = target else {
            let outcome = if failed.len() > threshold {
                format!("{} failovers within the period is past the threshold: it stays failed here", failed.len())
            } else {
                "no other node may run it: it stays failed here".to_string()
            };
            self.decide(group, "failover-exhausted", rule, inputs, outcome);
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
                self.decide(group, "failover", rule, inputs, format!("handed over to node `{target}`"));
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
                    self.decide(
                        &group,
                        "lost",
                        "a node runs a group only while its owner key names it".into(),
                        vec![format!("the owner key names node `{owner}`, token {token}")],
                        "offline here".into(),
                    );
                    self.lose(&group);
                }
                self.unowned_since.remove(&group);
            }
            None => {
                if self.owned.get(&group) == Some(&token) {
                    tracing::warn!(%group, %token, "this node's owner key vanished");
                    self.decide(
                        &group,
                        "lost",
                        "a node runs a group only while its owner key names it".into(),
                        vec![format!("this node's owner key (token {token}) vanished while its lease lives")],
                        "offline here; taken again by the normal path".into(),
                    );
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
                if matches!(event, MembershipEvent::Rejoined { .. }) {
                    // The new node key carries what the node had at join.
                    self.inventory_published = false;
                }
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
            self.decide(
                &group,
                "fenced",
                "a node whose keepalives are not acknowledged takes its groups offline before its lease can end".into(),
                vec![why.to_string()],
                "offline here; back only once this node owns it again".into(),
            );
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
