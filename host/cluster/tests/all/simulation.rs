//! The ownership rules as a state machine under faults, with virtual time.
//!
//! An in-memory etcd (leases with server-side expiry, node keys, owner keys
//! with create revisions) and nodes that follow the rules the real code
//! follows: a node keeps its lease with [`LeaseClock`] (keepalives every
//! quarter TTL, an answer deadline, the estimate from the send time of the
//! last acknowledged keepalive) and fences itself when the estimate
//! passes; it acquires a group only by create-if-absent on its current
//! lease, and only when [`choose_owner`] names it; its token is the owner
//! key's create revision; it brings a group online a safety margin after
//! acquiring it. Faults: node crashes (kill -9 of the daemon), pauses
//! (SIGSTOP: the node does nothing while its lease runs out), partitions
//! from etcd, etcd outages (after which etcd's new leader extends every
//! lease, as etcd does), slow answers and resource failures.
//!
//! What runs a group is the node's resources, which live in processes of
//! their own and do not stop when the daemon is paused or killed. The
//! model gives them what the node must give its workers: a deadline, the
//! lease estimate, extended at each acknowledged keepalive, past which
//! they stop on their own.
//!
//! Asserted: no two nodes run a group at overlapping times, the tokens a
//! group runs with only grow, and once faults stop every group that some
//! live node may run is running on exactly one node within a bound.
//! `STEWARD_SIM_SEED` replays a seed; without it a fresh one is drawn and
//! printed on failure.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use steward_cluster::PluginInventory;
use steward_cluster::lease::LeaseClock;
use steward_cluster::placement::{GroupPlacement, LiveNode, RecentFailure, choose_owner};

const TICK: Duration = Duration::from_millis(10);
const TTL: Duration = Duration::from_secs(2);
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
const ANSWER_DEADLINE: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const SAFETY_MARGIN: Duration = Duration::from_millis(100);
const FAILOVER_PERIOD: Duration = Duration::from_secs(4);
/// Faults are injected for this many ticks (30 s)...
const FAULT_TICKS: u64 = 3_000;
/// ...then none for this many (15 s), at whose end every eligible group
/// must run: the liveness bound.
const QUIET_TICKS: u64 = 1_500;
const NODES: usize = 4;
const GROUPS: usize = 5;

#[test]
fn ownership_stays_exclusive_and_recovers_under_random_faults() {
    run_with_seed(100_000);
}

#[test]
#[ignore = "a long run (1,000,000 steps); run with --ignored"]
fn ownership_stays_exclusive_and_recovers_under_random_faults_long() {
    run_with_seed(1_000_000);
}

fn run_with_seed(steps: u64) {
    let seed = match std::env::var("STEWARD_SIM_SEED") {
        Ok(text) => text.trim().parse().expect("STEWARD_SIM_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos() as u64)
            .unwrap_or(1),
    };
    let outcome = std::panic::catch_unwind(|| Simulation::new(seed).run(steps));
    match outcome {
        Ok(summary) => println!("seed {seed}: {summary:?}"),
        Err(panic) => {
            eprintln!(
                "simulation failed with seed {seed}; replay: STEWARD_SIM_SEED={seed} cargo test -p steward-cluster --test all simulation"
            );
            std::panic::resume_unwind(panic);
        }
    }
}

/// splitmix64: small, seedable, good enough to draw faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// True once in `one_in` draws.
    fn one_in(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
}

#[derive(Clone, Debug)]
enum Request {
    /// `sent_at` names the attempt, as each unary call has its own answer.
    Grant {
        sent_at: Instant,
    },
    /// `stream` numbers the keepalive stream: answers on a stream the node
    /// gave up are never delivered, as with a real closed stream.
    KeepAlive {
        lease: u64,
        stream: u32,
    },
    CreateNodeKey {
        lease: u64,
    },
    Revoke {
        lease: u64,
    },
    Acquire {
        group: usize,
        lease: u64,
    },
    Release {
        group: usize,
        token: u64,
    },
    RecordFailure {
        group: usize,
    },
}

#[derive(Clone, Debug)]
enum Reply {
    Granted { lease: u64, sent_at: Instant },
    KeepAliveAck { lease: u64, stream: u32, alive: bool },
    NodeKey { lease: u64, created: bool },
    Acquired { group: usize, lease: u64, token: Option<u64> },
}

#[derive(Clone, Debug)]
enum Payload {
    ToServer(Request),
    ToNode(Reply),
}

#[derive(Clone, Debug)]
struct Message {
    node: usize,
    incarnation: u32,
    payload: Payload,
}

#[derive(Clone, Debug)]
struct OwnerKey {
    node: usize,
    lease: u64,
    token: u64,
}

/// The in-memory etcd.
#[derive(Default)]
struct Server {
    down: bool,
    revision: u64,
    next_lease: u64,
    /// Lease id to (node, expiry on the leader's clock).
    leases: BTreeMap<u64, (usize, Instant)>,
    node_keys: BTreeMap<usize, u64>,
    owners: BTreeMap<usize, OwnerKey>,
    /// (group, node, when), as a node would record a failure in etcd.
    failures: Vec<(usize, usize, Instant)>,
}

impl Server {
    fn expire(&mut self, now: Instant) {
        if self.down {
            return;
        }
        // Older failures no longer keep a group off a node.
        self.failures.retain(|(_, _, at)| now.saturating_duration_since(*at) < FAILOVER_PERIOD);
        let expired: Vec<u64> =
            self.leases.iter().filter(|(_, (_, expiry))| *expiry <= now).map(|(lease, _)| *lease).collect();
        for lease in expired {
            self.drop_lease(lease);
        }
    }

    fn drop_lease(&mut self, lease: u64) {
        if self.leases.remove(&lease).is_none() {
            return;
        }
        let before = self.node_keys.len() + self.owners.len();
        self.node_keys.retain(|_, bound| *bound != lease);
        self.owners.retain(|_, owner| owner.lease != lease);
        self.revision += (before - self.node_keys.len() - self.owners.len()) as u64;
    }

    /// etcd back after an outage: its new leader gives every lease a full
    /// TTL again, so leases outlive the outage.
    fn recover(&mut self, now: Instant) {
        self.down = false;
        for (_, expiry) in self.leases.values_mut() {
            *expiry = (*expiry).max(now + TTL);
        }
    }

    fn handle(&mut self, now: Instant, node: usize, request: Request) -> Option<Reply> {
        match request {
            Request::Grant { sent_at } => {
                self.next_lease += 1;
                self.leases.insert(self.next_lease, (node, now + TTL));
                Some(Reply::Granted { lease: self.next_lease, sent_at })
            }
            Request::KeepAlive { lease, stream } => {
                let alive = match self.leases.get_mut(&lease) {
                    Some((_, expiry)) => {
                        *expiry = now + TTL;
                        true
                    }
                    None => false,
                };
                Some(Reply::KeepAliveAck { lease, stream, alive })
            }
            Request::CreateNodeKey { lease } => {
                let created = match self.node_keys.get(&node) {
                    // A repeated request finds its own key.
                    Some(bound) => *bound == lease,
                    None if self.leases.contains_key(&lease) => {
                        self.revision += 1;
                        self.node_keys.insert(node, lease);
                        true
                    }
                    None => false,
                };
                Some(Reply::NodeKey { lease, created })
            }
            Request::Revoke { lease } => {
                self.drop_lease(lease);
                None
            }
            Request::Acquire { group, lease } => {
                let token = match self.owners.get(&group) {
                    Some(owner) if owner.lease == lease => Some(owner.token),
                    Some(_) => None,
                    None if self.leases.contains_key(&lease) => {
                        self.revision += 1;
                        self.owners.insert(group, OwnerKey { node, lease, token: self.revision });
                        Some(self.revision)
                    }
                    None => None,
                };
                Some(Reply::Acquired { group, lease, token })
            }
            Request::Release { group, token } => {
                if self.owners.get(&group).is_some_and(|owner| owner.token == token) {
                    self.owners.remove(&group);
                    self.revision += 1;
                }
                None
            }
            Request::RecordFailure { group } => {
                self.failures.push((group, node, now));
                None
            }
        }
    }
}

/// What a node last read from etcd (its watch).
#[derive(Clone, Default)]
struct View {
    /// Group to (owner node, token, lease).
    owners: BTreeMap<usize, (usize, u64, u64)>,
    live: BTreeSet<usize>,
    failures: Vec<(usize, usize, Instant)>,
}

enum NodeState {
    Joining {
        previous: Option<u64>,
        grant_sent: Option<Instant>,
        granted: Option<(u64, Instant, Instant)>,
        create_sent: Option<Instant>,
    },
    Member {
        lease: u64,
        clock: LeaseClock,
        next_send: Instant,
        healthy: bool,
        stream: u32,
    },
}

struct Node {
    name: String,
    inventory: PluginInventory,
    incarnation: u32,
    crashed_until: Option<u64>,
    paused_until: Option<u64>,
    partitioned_until: Option<u64>,
    state: NodeState,
    inbox: VecDeque<Reply>,
    view: View,
    /// Groups acquired on the current lease, with their tokens.
    owned: BTreeMap<usize, u64>,
    /// Acquired groups waiting for the safety margin.
    online_at: BTreeMap<usize, Instant>,
    /// Groups with an acquire or release in flight, since when.
    acquiring: BTreeMap<usize, Instant>,
}

impl Node {
    fn joining(previous: Option<u64>) -> NodeState {
        NodeState::Joining { previous, grant_sent: None, granted: None, create_sent: None }
    }
}

/// One node running one group: from its start to its end, which is the
/// node stopping it or the deadline its resources were given.
#[derive(Clone, Debug)]
struct Run {
    node: usize,
    incarnation: u32,
    token: u64,
    start: Instant,
    deadline: Instant,
    ended: Option<Instant>,
}

struct GroupSpec {
    preferred: Vec<String>,
    possible: Vec<String>,
    types: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Summary {
    steps: u64,
    starts: u64,
    fences: u64,
    crashes: u64,
    pauses: u64,
    partitions: u64,
    outages: u64,
    resource_failures: u64,
    liveness_checks: u64,
}

struct Simulation {
    rng: Rng,
    base: Instant,
    tick: u64,
    server: Server,
    nodes: Vec<Node>,
    groups: Vec<GroupSpec>,
    /// Messages by delivery tick, in send order.
    network: BTreeMap<(u64, u64), Message>,
    sequence: u64,
    last_delivery: Vec<[u64; 2]>,
    outage_until: Option<u64>,
    runs: Vec<Vec<Run>>,
    /// Per group, the node and token of its latest run.
    last_token: Vec<(usize, u64)>,
    summary: Summary,
}

impl Simulation {
    fn new(seed: u64) -> Simulation {
        let name = |index: usize| format!("n{index}");
        let nodes = (0..NODES)
            .map(|index| {
                let mut inventory = PluginInventory::from([("dummy".to_string(), "h1".to_string())]);
                // Only two nodes can run the "special" type.
                if index < 2 {
                    inventory.insert("special".to_string(), "h2".to_string());
                }
                Node {
                    name: name(index),
                    inventory,
                    incarnation: 0,
                    crashed_until: None,
                    paused_until: None,
                    partitioned_until: None,
                    state: Node::joining(None),
                    inbox: VecDeque::new(),
                    view: View::default(),
                    owned: BTreeMap::new(),
                    online_at: BTreeMap::new(),
                    acquiring: BTreeMap::new(),
                }
            })
            .collect();
        let groups = (0..GROUPS)
            .map(|group| GroupSpec {
                preferred: vec![name(group % NODES), name((group + 1) % NODES)],
                possible: if group == 3 { vec![name(1), name(2), name(3)] } else { Vec::new() },
                types: if group == 4 {
                    BTreeSet::from(["dummy".to_string(), "special".to_string()])
                } else {
                    BTreeSet::from(["dummy".to_string()])
                },
            })
            .collect();
        Simulation {
            rng: Rng(seed),
            base: Instant::now(),
            tick: 0,
            server: Server::default(),
            nodes,
            groups,
            network: BTreeMap::new(),
            sequence: 0,
            last_delivery: vec![[0; 2]; NODES],
            outage_until: None,
            runs: vec![Vec::new(); GROUPS],
            last_token: vec![(usize::MAX, 0); GROUPS],
            summary: Summary::default(),
        }
    }

    fn now(&self) -> Instant {
        self.base + TICK * u32::try_from(self.tick).expect("fewer than 2^32 ticks")
    }

    fn run(mut self, steps: u64) -> Summary {
        let cycle = FAULT_TICKS + QUIET_TICKS;
        while self.tick < steps {
            let in_cycle = self.tick % cycle;
            if in_cycle < FAULT_TICKS {
                self.inject_faults();
            } else if in_cycle == FAULT_TICKS {
                self.heal();
            }
            self.step();
            if in_cycle == cycle - 1 {
                self.check_liveness();
            }
            self.tick += 1;
        }
        self.summary.steps = self.tick;
        assert!(
            self.summary.starts > steps / 2_000,
            "the simulation started too few groups to mean anything: {:?}",
            self.summary
        );
        self.summary
    }

    fn inject_faults(&mut self) {
        let tick = self.tick;
        for index in 0..NODES {
            let node = &mut self.nodes[index];
            if node.crashed_until.is_none() && self.rng.one_in(4_000) {
                self.summary.crashes += 1;
                node.crashed_until = Some(tick + self.rng.between(50, 500));
                node.incarnation += 1;
                node.state = Node::joining(None);
                node.inbox.clear();
                node.owned.clear();
                node.online_at.clear();
                node.acquiring.clear();
                node.paused_until = None;
            }
            if node.paused_until.is_none() && self.rng.one_in(3_000) {
                self.summary.pauses += 1;
                node.paused_until = Some(tick + self.rng.between(10, 400));
            }
            if node.partitioned_until.is_none() && self.rng.one_in(3_000) {
                self.summary.partitions += 1;
                node.partitioned_until = Some(tick + self.rng.between(10, 400));
            }
        }
        if self.outage_until.is_none() && self.rng.one_in(5_000) {
            self.summary.outages += 1;
            self.server.down = true;
            self.outage_until = Some(tick + self.rng.between(10, 500));
        }
    }

    fn heal(&mut self) {
        let tick = self.tick;
        for node in &mut self.nodes {
            for until in [&mut node.crashed_until, &mut node.paused_until, &mut node.partitioned_until] {
                if until.is_some() {
                    *until = Some(tick);
                }
            }
        }
        if self.outage_until.is_some() {
            self.outage_until = Some(tick);
        }
    }

    fn step(&mut self) {
        let now = self.now();
        let tick = self.tick;
        if self.outage_until.is_some_and(|until| until <= tick) {
            self.outage_until = None;
            self.server.recover(now);
        }
        for node in &mut self.nodes {
            for until in [&mut node.crashed_until, &mut node.paused_until, &mut node.partitioned_until] {
                if until.is_some_and(|until| until <= tick) {
                    *until = None;
                }
            }
        }
        self.server.expire(now);
        // The resources stop on their own at their deadline, whatever their
        // node is doing.
        for runs in &mut self.runs {
            for run in runs.iter_mut().filter(|run| run.ended.is_none() && run.deadline <= now) {
                run.ended = Some(run.deadline);
            }
        }
        self.deliver(now);
        for index in 0..NODES {
            let node = &self.nodes[index];
            if node.crashed_until.is_none() && node.paused_until.is_none() {
                self.node_step(index, now);
            }
        }
    }

    fn deliver(&mut self, now: Instant) {
        while let Some(entry) = self.network.first_entry() {
            if entry.key().0 > self.tick {
                break;
            }
            let message = entry.remove();
            let node = &mut self.nodes[message.node];
            if node.partitioned_until.is_some() {
                continue;
            }
            match message.payload {
                Payload::ToServer(request) => {
                    if self.server.down {
                        continue;
                    }
                    if let Some(reply) = self.server.handle(now, message.node, request) {
                        self.send(message.node, message.incarnation, Payload::ToNode(reply));
                    }
                }
                Payload::ToNode(reply) => {
                    if node.crashed_until.is_none() && node.incarnation == message.incarnation {
                        node.inbox.push_back(reply);
                    }
                }
            }
        }
    }

    fn send(&mut self, node: usize, incarnation: u32, payload: Payload) {
        // Mostly quick, now and then an answer slower than the deadline.
        let latency = if self.rng.one_in(100) { self.rng.between(20, 80) } else { self.rng.between(1, 5) };
        // One connection per node and direction: messages keep their order,
        // as a gRPC stream does (its answers are matched in order).
        let direction = usize::from(matches!(payload, Payload::ToNode(_)));
        let at = (self.tick + latency).max(self.last_delivery[node][direction]);
        self.last_delivery[node][direction] = at;
        self.sequence += 1;
        self.network.insert((at, self.sequence), Message { node, incarnation, payload });
    }

    fn request(&mut self, index: usize, request: Request) {
        let incarnation = self.nodes[index].incarnation;
        self.send(index, incarnation, Payload::ToServer(request));
    }

    fn node_step(&mut self, index: usize, now: Instant) {
        while let Some(reply) = self.nodes[index].inbox.pop_front() {
            self.on_reply(index, reply, now);
        }
        let (lease, stream, expired, send, healthy) = match &mut self.nodes[index].state {
            NodeState::Joining { .. } => {
                self.join_step(index, now);
                return;
            }
            NodeState::Member { lease, clock, next_send, healthy, stream } => {
                if clock.is_expired(now) {
                    (*lease, *stream, true, false, false)
                } else {
                    if clock.answer_overdue(now) {
                        clock.stream_reset();
                        *stream += 1;
                        *healthy = false;
                    }
                    let send = now >= *next_send;
                    if send {
                        clock.sent(now);
                        *next_send = now + KEEPALIVE_INTERVAL;
                    }
                    (*lease, *stream, false, send, *healthy)
                }
            }
        };
        if expired {
            self.fence(index, now);
            return;
        }
        if send {
            self.request(index, Request::KeepAlive { lease, stream });
        }
        // Acting for groups needs acknowledged keepalives.
        if healthy {
            self.ownership_step(index, lease, now);
        }
    }

    fn join_step(&mut self, index: usize, now: Instant) {
        let NodeState::Joining { previous, grant_sent, granted, create_sent } = &mut self.nodes[index].state else {
            return;
        };
        let mut requests = Vec::new();
        match granted {
            None => {
                if grant_sent.is_none_or(|sent| now >= sent + REQUEST_TIMEOUT) {
                    if let Some(previous) = previous.take() {
                        requests.push(Request::Revoke { lease: previous });
                    }
                    *grant_sent = Some(now);
                    requests.push(Request::Grant { sent_at: now });
                }
            }
            Some((lease, sent_at, _)) => {
                if now >= *sent_at + TTL {
                    // Granted too long ago to be worth anything: start over.
                    requests.push(Request::Revoke { lease: *lease });
                    *granted = None;
                    *grant_sent = None;
                } else if create_sent.is_none_or(|sent| now >= sent + REQUEST_TIMEOUT) {
                    *create_sent = Some(now);
                    requests.push(Request::CreateNodeKey { lease: *lease });
                }
            }
        }
        for request in requests {
            self.request(index, request);
        }
    }

    fn on_reply(&mut self, index: usize, reply: Reply, now: Instant) {
        enum Then {
            Nothing,
            Revoke(u64),
            Fence,
            Extend(Instant),
        }
        let node = &mut self.nodes[index];
        let then = match (&mut node.state, reply) {
            (
                NodeState::Joining { grant_sent: Some(sent), granted, create_sent, .. },
                Reply::Granted { lease, sent_at },
            ) if granted.is_none() && *sent == sent_at => {
                *granted = Some((lease, sent_at, now));
                *create_sent = None;
                Then::Nothing
            }
            (_, Reply::Granted { lease, .. }) => Then::Revoke(lease),
            (
                NodeState::Joining { granted: Some((granted_lease, sent_at, received_at)), .. },
                Reply::NodeKey { lease, created },
            ) if *granted_lease == lease => {
                if created {
                    let clock = LeaseClock::granted(*sent_at, *received_at, TTL, ANSWER_DEADLINE);
                    node.state = NodeState::Member { lease, clock, next_send: now, healthy: true, stream: 0 };
                    node.view = View::default();
                } else {
                    // The name is still held (by an earlier incarnation's
                    // lease): give this lease back and try again later.
                    node.state = NodeState::Joining {
                        previous: Some(lease),
                        grant_sent: Some(now),
                        granted: None,
                        create_sent: None,
                    };
                }
                Then::Nothing
            }
            (
                NodeState::Member { lease: current, clock, healthy, stream: current_stream, .. },
                Reply::KeepAliveAck { lease, stream, alive },
            ) if *current == lease && *current_stream == stream => {
                if !alive {
                    Then::Fence
                } else if clock.acknowledged(now, TTL).is_some() {
                    *healthy = true;
                    Then::Extend(clock.expiry_estimate())
                } else {
                    Then::Nothing
                }
            }
            (NodeState::Member { lease: current, .. }, Reply::Acquired { group, lease, token })
                if *current == lease =>
            {
                node.acquiring.remove(&group);
                if let Some(token) = token
                    && !node.owned.contains_key(&group)
                {
                    node.owned.insert(group, token);
                    node.online_at.insert(group, now + SAFETY_MARGIN);
                }
                Then::Nothing
            }
            (_, Reply::Acquired { group, .. }) => {
                node.acquiring.remove(&group);
                Then::Nothing
            }
            _ => Then::Nothing,
        };
        match then {
            Then::Nothing => {}
            Then::Revoke(lease) => self.request(index, Request::Revoke { lease }),
            Then::Fence => self.fence(index, now),
            Then::Extend(deadline) => {
                let incarnation = self.nodes[index].incarnation;
                for runs in &mut self.runs {
                    for run in runs
                        .iter_mut()
                        .filter(|run| run.node == index && run.incarnation == incarnation && run.ended.is_none())
                    {
                        run.deadline = run.deadline.max(deadline);
                    }
                }
            }
        }
    }

    fn ownership_step(&mut self, index: usize, lease: u64, now: Instant) {
        let reachable = !self.server.down && self.nodes[index].partitioned_until.is_none();
        // The watch delivers with some lag.
        if reachable && self.rng.one_in(2) {
            self.nodes[index].view = View {
                owners: self
                    .server
                    .owners
                    .iter()
                    .map(|(group, owner)| (*group, (owner.node, owner.token, owner.lease)))
                    .collect(),
                live: self.server.node_keys.keys().copied().collect(),
                failures: self.server.failures.clone(),
            };
        }
        self.nodes[index].acquiring.retain(|_, sent| now < *sent + REQUEST_TIMEOUT);

        // Resource failures: the node stops the group, records the failure
        // and releases it, so placement moves it elsewhere.
        let running: Vec<(usize, u64)> = self.nodes[index]
            .owned
            .iter()
            .filter(|(group, _)| !self.nodes[index].online_at.contains_key(group))
            .map(|(group, token)| (*group, *token))
            .collect();
        let in_fault_phase = self.tick % (FAULT_TICKS + QUIET_TICKS) < FAULT_TICKS;
        for (group, token) in running {
            if in_fault_phase && self.rng.one_in(3_000) {
                self.summary.resource_failures += 1;
                self.stop_runs(index, Some(group), now);
                self.nodes[index].owned.remove(&group);
                self.request(index, Request::RecordFailure { group });
                self.request(index, Request::Release { group, token });
            }
        }

        // Resources the workers stopped at their deadline while this node
        // could not extend it (paused with a valid lease): the node still
        // owns the group, so it brings it back, with the same token.
        let incarnation = self.nodes[index].incarnation;
        let stopped: Vec<usize> = self.nodes[index]
            .owned
            .iter()
            .filter(|(group, token)| {
                !self.nodes[index].online_at.contains_key(group)
                    && !self.runs[**group].iter().any(|run| {
                        run.node == index
                            && run.incarnation == incarnation
                            && run.token == **token
                            && run.ended.is_none()
                    })
            })
            .map(|(group, _)| *group)
            .collect();
        for group in stopped {
            self.nodes[index].online_at.insert(group, now + SAFETY_MARGIN);
        }

        let due: Vec<usize> =
            self.nodes[index].online_at.iter().filter(|(_, at)| now >= **at).map(|(group, _)| *group).collect();
        for group in due {
            self.nodes[index].online_at.remove(&group);
            let token = self.nodes[index].owned[&group];
            self.start_run(index, group, token, now);
        }

        for group in 0..GROUPS {
            let node = &self.nodes[index];
            if node.owned.contains_key(&group) || node.acquiring.contains_key(&group) {
                continue;
            }
            if node.view.owners.get(&group).is_some_and(|(owner, _, _)| *owner != index) {
                continue;
            }
            let chosen = self.choose(group, &node.view, now).as_deref() == Some(node.name.as_str());
            let request = match node.view.owners.get(&group) {
                None if chosen => Request::Acquire { group, lease },
                // Our own key that we do not know we hold: an acquire whose
                // answer was lost, or a release that was. Acquiring again
                // returns its token (a transaction, so it cannot resurrect a
                // key already released); if the group should go elsewhere,
                // release it by its token.
                Some((owner, _, owner_lease)) if *owner == index && *owner_lease == lease && chosen => {
                    Request::Acquire { group, lease }
                }
                Some((owner, token, owner_lease)) if *owner == index && *owner_lease == lease => {
                    Request::Release { group, token: *token }
                }
                _ => continue,
            };
            self.nodes[index].acquiring.insert(group, now);
            self.request(index, request);
        }
    }

    fn choose(&self, group: usize, view: &View, now: Instant) -> Option<String> {
        let spec = &self.groups[group];
        let placement = GroupPlacement {
            preferred_owners: &spec.preferred,
            possible_owners: &spec.possible,
            plugin_types: &spec.types,
            failover_period: FAILOVER_PERIOD,
        };
        let live: Vec<LiveNode<'_>> = view
            .live
            .iter()
            .map(|index| LiveNode {
                name: &self.nodes[*index].name,
                plugins: &self.nodes[*index].inventory,
                plugins_known: true,
            })
            .collect();
        let failures: Vec<RecentFailure<'_>> = view
            .failures
            .iter()
            .filter(|(failed_group, _, _)| *failed_group == group)
            .map(|(_, node, at)| RecentFailure { node: &self.nodes[*node].name, at: *at })
            .collect();
        choose_owner(&placement, &live, &failures, now).owner
    }

    fn start_run(&mut self, index: usize, group: usize, token: u64, now: Instant) {
        let NodeState::Member { clock, .. } = &self.nodes[index].state else { return };
        let deadline = clock.expiry_estimate();
        let seed = self.rng.0;
        for other in &self.runs[group] {
            let end = other.ended.unwrap_or(other.deadline);
            assert!(
                end <= now,
                "group {group}: node {index} starts with token {token} at {:?} while node {} (token {}) runs it until {:?} (rng state {seed})",
                now - self.base,
                other.node,
                other.token,
                end - self.base,
            );
        }
        let (last_node, last_token) = self.last_token[group];
        assert!(
            token > last_token || (token == last_token && last_node == index),
            "group {group}: token went back from {last_token} (node {last_node}) to {token} on node {index}",
        );
        self.last_token[group] = (index, token);
        self.summary.starts += 1;
        // Only the latest runs matter for the overlap check.
        self.runs[group].retain(|run| run.ended.is_none_or(|ended| ended + TTL > now));
        let incarnation = self.nodes[index].incarnation;
        self.runs[group].push(Run { node: index, incarnation, token, start: now, deadline, ended: None });
    }

    fn stop_runs(&mut self, index: usize, group: Option<usize>, now: Instant) {
        let incarnation = self.nodes[index].incarnation;
        for (run_group, runs) in self.runs.iter_mut().enumerate() {
            if group.is_some_and(|group| group != run_group) {
                continue;
            }
            for run in
                runs.iter_mut().filter(|run| run.node == index && run.incarnation == incarnation && run.ended.is_none())
            {
                run.ended = Some(now.min(run.deadline).max(run.start));
            }
        }
    }

    /// The lease is gone by the node's estimate (or etcd said so): stop
    /// everything, forget every ownership, join again.
    fn fence(&mut self, index: usize, now: Instant) {
        self.summary.fences += 1;
        self.stop_runs(index, None, now);
        let node = &mut self.nodes[index];
        let previous = match node.state {
            NodeState::Member { lease, .. } => Some(lease),
            NodeState::Joining { .. } => None,
        };
        node.state = Node::joining(previous);
        node.owned.clear();
        node.online_at.clear();
        node.acquiring.clear();
    }

    /// Every group some live node may run is running on exactly one node.
    fn check_liveness(&mut self) {
        self.summary.liveness_checks += 1;
        let now = self.now();
        let live = View {
            owners: BTreeMap::new(),
            live: self
                .server
                .node_keys
                .keys()
                .copied()
                .filter(|index| self.nodes[*index].crashed_until.is_none())
                .collect(),
            failures: self.server.failures.clone(),
        };
        for group in 0..GROUPS {
            let running: Vec<&Run> = self.runs[group].iter().filter(|run| run.ended.is_none()).collect();
            assert!(running.len() <= 1, "group {group} runs {} times at once", running.len());
            let eligible = self.choose(group, &live, now).is_some();
            if eligible {
                assert_eq!(
                    running.len(),
                    1,
                    "group {group} is eligible but not running {:?} after faults stopped (owner key {:?}, node keys {:?}; {})",
                    TICK * u32::try_from(QUIET_TICKS).unwrap_or(u32::MAX),
                    self.server.owners.get(&group),
                    self.server.node_keys,
                    self.describe_nodes(),
                );
                let owner = self.server.owners.get(&group).expect("a running group has an owner key");
                assert_eq!(
                    (owner.node, owner.token),
                    (running[0].node, running[0].token),
                    "group {group}'s runner holds its owner key"
                );
            }
        }
    }

    /// What each node believes, for a failure message.
    fn describe_nodes(&self) -> String {
        let now = self.now();
        self.nodes
            .iter()
            .map(|node| {
                let state = match &node.state {
                    NodeState::Joining { previous, granted, .. } => {
                        format!("joining (previous {previous:?}, granted {:?})", granted.map(|granted| granted.0))
                    }
                    NodeState::Member { lease, clock, healthy, .. } => {
                        format!("member on lease {lease}, healthy {healthy}, {:?} left", clock.remaining(now))
                    }
                };
                format!(
                    "{}: {state}, owns {:?}, starting {:?}, in flight {:?}, view {:?}",
                    node.name,
                    node.owned,
                    node.online_at.keys().collect::<Vec<_>>(),
                    node.acquiring.keys().collect::<Vec<_>>(),
                    node.view.owners
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}
