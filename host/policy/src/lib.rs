//! The policy engine: decides what happens to resources and groups. Pure:
//! it takes an [`Input`] (an operator's request, a call's result, a failed
//! probe, a timer) and the current time, and returns [`Action`]s for the
//! node runtime to carry out. No I/O, no clock, no wasmtime here, so its
//! tests feed inputs and assert the exact actions.
//!
//! Rules (the classic cluster service's, unless the group's policy says otherwise):
//! - a resource goes online only after everything it depends on is online,
//!   and offline only after everything that depends on it is offline;
//! - when a resource fails, its dependents are taken offline first, it is
//!   terminated, and it restarts after the restart delay, which grows by the
//!   backoff factor with each restart inside the restart period;
//! - past the restart threshold within the period, or on a fatal or
//!   invalid-configuration error, the whole group is taken offline and
//!   marked failed, and retried after the retry period.
//!
//! A crate of its own, depending on nothing that could reach the sandbox,
//! the network, the disk or the clock (`tests/all/tidy.rs` checks it with
//! `cargo metadata`): groups come in as [`GroupSpec`]s, plain data, and a
//! failure as a [`failure::Failure`] whose kind it keeps.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

pub mod failure;

use crate::failure::{Failure, FailureKind};

/// Restart and retry policy of a group; defaults are the classic cluster
/// service's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Restarts allowed within `restart_period` before the group fails.
    pub restart_threshold: u32,
    /// The window restarts are counted in.
    pub restart_period: Duration,
    /// The delay before the first restart.
    pub restart_delay: Duration,
    /// Each further restart in the window waits this factor longer.
    pub restart_backoff: f64,
    /// The longest restart delay.
    pub max_restart_delay: Duration,
    /// How long a failed group waits before it is tried again.
    pub retry_period: Duration,
    /// In a cluster, how many times a group that failed on its owner is
    /// moved to another node within `failover_period` before it stays
    /// failed; `None`: one less than the live nodes (the classic default).
    pub failover_threshold: Option<u32>,
    /// The window failovers are counted in.
    pub failover_period: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            restart_threshold: 3,
            restart_period: Duration::from_secs(15 * 60),
            restart_delay: Duration::from_millis(500),
            restart_backoff: 2.0,
            max_restart_delay: Duration::from_secs(60),
            retry_period: Duration::from_secs(60 * 60),
            failover_threshold: None,
            failover_period: Duration::from_secs(6 * 60 * 60),
        }
    }
}

/// A group as the engine knows it: its members, in the order they were
/// configured, with what each depends on, and its policy.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// The group's name.
    pub name: String,
    /// Its resources.
    pub members: Vec<MemberSpec>,
    /// Its restart and retry policy.
    pub policy: Policy,
}

/// A resource of a [`GroupSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    /// The resource's name.
    pub name: String,
    /// The resources (of the same group) it depends on.
    pub depends_on: Vec<String>,
}

/// Where a resource is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceState {
    /// Not probed yet.
    Unknown,
    /// Offline.
    Offline,
    /// Coming online.
    OnlinePending,
    /// Online and probed.
    Online,
    /// Going offline.
    OfflinePending,
    /// Failed; waiting for a restart, or its group failed.
    Failed,
}

impl ResourceState {
    /// Its name as the API, the CLI and the event stream write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceState::Unknown => "unknown",
            ResourceState::Offline => "offline",
            ResourceState::OnlinePending => "online-pending",
            ResourceState::Online => "online",
            ResourceState::OfflinePending => "offline-pending",
            ResourceState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ResourceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a failure may be retried where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Restart in place (a trap, a deadline, a transient error, a failed probe).
    Restartable,
    /// Do not restart here (a fatal or invalid-configuration error).
    Final,
}

/// What the engine reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// An operator (or the node's start) wants the group online.
    GroupOnline(String),
    /// An operator wants the group offline.
    GroupOffline(String),
    /// An operator wants the resource (and what it depends on) online.
    ResourceOnline(String),
    /// An operator wants the resource (and what depends on it) offline.
    ResourceOffline(String),
    /// A resource found already running at start (its probe passed).
    Adopted(String),
    /// An online call returned.
    OnlineDone { resource: String, result: Result<(), (Failure, Severity)> },
    /// An offline call returned (offline errors still leave it offline).
    OfflineDone { resource: String },
    /// A probe failed, or the plugin signalled its failure.
    Failed { resource: String, failure: Failure },
    /// A restart's delay passed.
    RestartDue(String),
    /// A failed group's retry period passed.
    GroupRetryDue(String),
}

/// What the node runtime must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Call online (reopening the instance if it was discarded).
    Online(String),
    /// Call offline.
    Offline(String),
    /// Call terminate: stop now, no graceful wait.
    Terminate(String),
    /// Start the periodic probes.
    StartProbes(String),
    /// Stop the periodic probes.
    StopProbes(String),
    /// Feed `input` back after `after`.
    Schedule { after: Duration, input: Input },
    /// A resource changed state: persist and publish it; a change to
    /// `Failed` says which kind of failure caused it.
    Transition {
        resource: String,
        from: ResourceState,
        to: ResourceState,
        reason: String,
        failure: Option<FailureKind>,
    },
    /// A group failed or recovered: persist and publish it.
    GroupState { group: String, failed: bool, reason: String },
    /// A restart was counted against the threshold.
    RestartCounted { resource: String, restarts_in_period: u32 },
}

#[derive(Debug)]
struct ResourceEntry {
    group: String,
    depends_on: Vec<String>,
    state: ResourceState,
    wanted_online: bool,
    restarts: VecDeque<Instant>,
    restart_pending: bool,
}

#[derive(Debug)]
struct GroupEntry {
    members: Vec<String>,
    policy: Policy,
    failed: bool,
}

/// The engine's state for one node; the default knows no group.
#[derive(Debug, Default)]
pub struct PolicyEngine {
    resources: BTreeMap<String, ResourceEntry>,
    groups: BTreeMap<String, GroupEntry>,
}

impl PolicyEngine {
    /// Adds `groups`, offline.
    pub fn add_groups(&mut self, groups: impl IntoIterator<Item = GroupSpec>) {
        for group in groups {
            self.add_group(group);
        }
    }

    fn add_group(&mut self, group: GroupSpec) {
        let member_names = group.members.iter().map(|member| member.name.clone()).collect();
        for member in group.members {
            self.resources.insert(
                member.name,
                ResourceEntry {
                    group: group.name.clone(),
                    depends_on: member.depends_on,
                    state: ResourceState::Unknown,
                    wanted_online: false,
                    restarts: VecDeque::new(),
                    restart_pending: false,
                },
            );
        }
        self.groups.insert(group.name, GroupEntry { members: member_names, policy: group.policy, failed: false });
    }

    /// Gives `group` another policy from its next decision on; the
    /// restarts already counted still count. Returns whether it was known.
    pub fn set_policy(&mut self, group: &str, policy: Policy) -> bool {
        self.groups.get_mut(group).map(|entry| entry.policy = policy).is_some()
    }

    /// Forgets `group` and its resources, which must be offline: inputs
    /// about them are ignored from now on. Returns whether it was known.
    pub fn remove_group(&mut self, group: &str) -> bool {
        let Some(entry) = self.groups.remove(group) else { return false };
        for member in entry.members {
            self.resources.remove(&member);
        }
        true
    }

    /// The state of `resource`.
    pub fn state(&self, resource: &str) -> Option<ResourceState> {
        self.resources.get(resource).map(|entry| entry.state)
    }

    /// Whether `group` is marked failed.
    pub fn group_failed(&self, group: &str) -> bool {
        self.groups.get(group).is_some_and(|entry| entry.failed)
    }

    /// Restarts of `resource` counted in its current period.
    pub fn restarts(&self, resource: &str) -> u32 {
        self.resources.get(resource).map_or(0, |entry| entry.restarts.len() as u32)
    }

    /// Reacts to `input` at time `now`.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::GroupOnline(group) => {
                if let Some(entry) = self.groups.get_mut(&group) {
                    if entry.failed {
                        entry.failed = false;
                        actions.push(group_state(&group, false, "brought online by request"));
                    }
                    for member in entry.members.clone() {
                        self.want(&member, true);
                        self.clear_failure(&member, &mut actions);
                    }
                    self.advance(&group, &mut actions);
                }
            }
            Input::GroupOffline(group) => {
                if let Some(entry) = self.groups.get(&group) {
                    for member in entry.members.clone() {
                        self.want(&member, false);
                    }
                    self.advance(&group, &mut actions);
                }
            }
            Input::ResourceOnline(resource) => {
                let Some(group) = self.group_of(&resource) else { return actions };
                for name in self.closure(&resource, Direction::Dependencies) {
                    self.want(&name, true);
                    self.clear_failure(&name, &mut actions);
                }
                self.advance(&group, &mut actions);
            }
            Input::ResourceOffline(resource) => {
                let Some(group) = self.group_of(&resource) else { return actions };
                for name in self.closure(&resource, Direction::Dependents) {
                    self.want(&name, false);
                }
                self.advance(&group, &mut actions);
            }
            Input::Adopted(resource) => {
                // No advance: the group's own online request follows and
                // starts what was not found running.
                if self.group_of(&resource).is_some() {
                    self.want(&resource, true);
                    self.set_state(&resource, ResourceState::Online, "found running at start; adopted", &mut actions);
                    actions.push(Action::StartProbes(resource));
                }
            }
            Input::OnlineDone { resource, result } => {
                if self.state(&resource) != Some(ResourceState::OnlinePending) {
                    return actions;
                }
                match result {
                    Ok(()) => {
                        self.set_state(&resource, ResourceState::Online, "online", &mut actions);
                        actions.push(Action::StartProbes(resource.clone()));
                        if let Some(group) = self.group_of(&resource) {
                            self.advance(&group, &mut actions);
                        }
                    }
                    Err((failure, severity)) => self.fail(&resource, &failure, severity, now, &mut actions),
                }
            }
            Input::OfflineDone { resource } => {
                if self.state(&resource) == Some(ResourceState::OfflinePending) {
                    self.set_state(&resource, ResourceState::Offline, "offline", &mut actions);
                    if let Some(group) = self.group_of(&resource) {
                        self.advance(&group, &mut actions);
                    }
                }
            }
            Input::Failed { resource, failure } => {
                if matches!(self.state(&resource), Some(ResourceState::Online | ResourceState::OnlinePending)) {
                    self.fail(&resource, &failure, Severity::Restartable, now, &mut actions);
                }
            }
            Input::RestartDue(resource) => {
                let Some(group) = self.group_of(&resource) else { return actions };
                if let Some(entry) = self.resources.get_mut(&resource) {
                    entry.restart_pending = false;
                }
                if self.state(&resource) == Some(ResourceState::Failed) && !self.group_failed(&group) {
                    self.set_state(&resource, ResourceState::Offline, "restarting", &mut actions);
                    self.advance(&group, &mut actions);
                }
            }
            Input::GroupRetryDue(group) => {
                if self.group_failed(&group) {
                    if let Some(entry) = self.groups.get_mut(&group) {
                        entry.failed = false;
                    }
                    actions.push(group_state(&group, false, "retry period passed; trying again"));
                    let members = self.groups.get(&group).map(|g| g.members.clone()).unwrap_or_default();
                    for member in members {
                        if let Some(entry) = self.resources.get_mut(&member) {
                            entry.restarts.clear();
                        }
                        if self.state(&member) == Some(ResourceState::Failed) {
                            self.set_state(&member, ResourceState::Offline, "group retry", &mut actions);
                        }
                    }
                    self.advance(&group, &mut actions);
                }
            }
        }
        actions
    }

    fn fail(&mut self, resource: &str, failure: &Failure, severity: Severity, now: Instant, actions: &mut Vec<Action>) {
        let Some(group) = self.group_of(resource) else { return };
        let policy = self.groups[&group].policy;
        let reason = &failure.reason;
        if let Some(entry) = self.resources.get_mut(resource)
            && entry.state != ResourceState::Failed
        {
            let from = std::mem::replace(&mut entry.state, ResourceState::Failed);
            actions.push(Action::Transition {
                resource: resource.to_string(),
                from,
                to: ResourceState::Failed,
                reason: reason.clone(),
                failure: Some(failure.kind),
            });
        }
        actions.push(Action::StopProbes(resource.to_string()));
        actions.push(Action::Terminate(resource.to_string()));
        let Some(entry) = self.resources.get_mut(resource) else { return };
        while entry.restarts.front().is_some_and(|at| now.duration_since(*at) > policy.restart_period) {
            entry.restarts.pop_front();
        }
        let within_threshold = (entry.restarts.len() as u32) < policy.restart_threshold;
        if severity == Severity::Restartable && within_threshold {
            let exponent = entry.restarts.len() as i32;
            entry.restarts.push_back(now);
            entry.restart_pending = true;
            let delay = policy.restart_delay.mul_f64(policy.restart_backoff.max(1.0).powi(exponent));
            actions.push(Action::RestartCounted {
                resource: resource.to_string(),
                restarts_in_period: entry.restarts.len() as u32,
            });
            actions.push(Action::Schedule {
                after: delay.min(policy.max_restart_delay),
                input: Input::RestartDue(resource.to_string()),
            });
            // Dependents go offline first; they return when it is back.
            self.advance(&group, actions);
        } else {
            let why = match severity {
                Severity::Final => format!("resource `{resource}` failed and must not restart here: {reason}"),
                Severity::Restartable => format!(
                    "resource `{resource}` failed {} times within {}: {reason}",
                    policy.restart_threshold + 1,
                    humantime::format_duration(policy.restart_period)
                ),
            };
            if let Some(group_entry) = self.groups.get_mut(&group) {
                group_entry.failed = true;
            }
            actions.push(group_state(&group, true, &why));
            actions.push(Action::Schedule { after: policy.retry_period, input: Input::GroupRetryDue(group.clone()) });
            self.advance(&group, actions);
        }
    }

    /// Starts every transition the group's wishes and states allow now.
    fn advance(&mut self, group: &str, actions: &mut Vec<Action>) {
        let Some(entry) = self.groups.get(group) else { return };
        let group_failed = entry.failed;
        let members = entry.members.clone();
        // Offline first: a dependent goes offline before what it depends on.
        for member in &members {
            let wanted = self.resources[member].wanted_online && !group_failed;
            let state = self.resources[member].state;
            let dependency_down = self.resources[member]
                .depends_on
                .iter()
                .any(|dep| self.resources.get(dep).is_some_and(|d| d.state != ResourceState::Online));
            let must_stop = !wanted || dependency_down;
            if state == ResourceState::Online && must_stop && self.dependents_down(member) {
                let reason = if wanted { "a dependency is not online" } else { "offline requested" };
                self.set_state(member, ResourceState::OfflinePending, reason, actions);
                actions.push(Action::StopProbes(member.clone()));
                actions.push(Action::Offline(member.clone()));
            }
        }
        for member in &members {
            let resource = &self.resources[member];
            let startable = matches!(resource.state, ResourceState::Offline | ResourceState::Unknown);
            if resource.wanted_online && !group_failed && startable && !resource.restart_pending {
                let ready = resource
                    .depends_on
                    .iter()
                    .all(|dep| self.resources.get(dep).is_some_and(|d| d.state == ResourceState::Online));
                if ready {
                    self.set_state(member, ResourceState::OnlinePending, "online requested", actions);
                    actions.push(Action::Online(member.clone()));
                }
            }
            // Not wanted, never probed: it is simply offline.
            if !self.resources[member].wanted_online && self.resources[member].state == ResourceState::Unknown {
                self.set_state(member, ResourceState::Offline, "not wanted online", actions);
            }
        }
    }

    fn dependents_down(&self, resource: &str) -> bool {
        self.resources.iter().filter(|(_, entry)| entry.depends_on.iter().any(|dep| dep == resource)).all(
            |(_, entry)| matches!(entry.state, ResourceState::Offline | ResourceState::Failed | ResourceState::Unknown),
        )
    }

    /// An operator's request gives a failed resource a fresh start: its
    /// restart count is forgotten and it may go online again.
    fn clear_failure(&mut self, resource: &str, actions: &mut Vec<Action>) {
        if self.state(resource) == Some(ResourceState::Failed) {
            if let Some(entry) = self.resources.get_mut(resource) {
                entry.restarts.clear();
                entry.restart_pending = false;
            }
            self.set_state(resource, ResourceState::Offline, "online requested after a failure", actions);
        }
    }

    fn want(&mut self, resource: &str, online: bool) {
        if let Some(entry) = self.resources.get_mut(resource) {
            entry.wanted_online = online;
        }
    }

    fn group_of(&self, resource: &str) -> Option<String> {
        self.resources.get(resource).map(|entry| entry.group.clone())
    }

    fn set_state(&mut self, resource: &str, to: ResourceState, reason: &str, actions: &mut Vec<Action>) {
        if let Some(entry) = self.resources.get_mut(resource)
            && entry.state != to
        {
            let from = std::mem::replace(&mut entry.state, to);
            let (resource, reason) = (resource.to_string(), reason.to_string());
            actions.push(Action::Transition { resource, from, to, reason, failure: None });
        }
    }

    /// `resource` and everything it depends on (or that depends on it), transitively.
    fn closure(&self, resource: &str, direction: Direction) -> Vec<String> {
        let mut found = vec![resource.to_string()];
        let mut next = 0;
        while next < found.len() {
            let current = found[next].clone();
            next += 1;
            let neighbours: Vec<String> = match direction {
                Direction::Dependencies => {
                    self.resources.get(&current).map(|e| e.depends_on.clone()).unwrap_or_default()
                }
                Direction::Dependents => self
                    .resources
                    .iter()
                    .filter(|(_, entry)| entry.depends_on.contains(&current))
                    .map(|(name, _)| name.clone())
                    .collect(),
            };
            for neighbour in neighbours {
                if !found.contains(&neighbour) {
                    found.push(neighbour);
                }
            }
        }
        found
    }
}

enum Direction {
    Dependencies,
    Dependents,
}

fn group_state(group: &str, failed: bool, reason: &str) -> Action {
    Action::GroupState { group: group.to_string(), failed, reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Group `g`: `web` depends on `disk`.
    fn engine(policy: Policy) -> PolicyEngine {
        let member = |name: &str, depends_on: &[&str]| MemberSpec {
            name: name.into(),
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
        };
        let mut engine = PolicyEngine::default();
        let members = vec![member("disk", &[]), member("web", &["disk"])];
        engine.add_groups([GroupSpec { name: "g".into(), members, policy }]);
        engine
    }

    fn probe_failure(reason: &str) -> Failure {
        Failure::new(FailureKind::Unhealthy, reason)
    }

    fn calls(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::Online(r) => Some(format!("online {r}")),
                Action::Offline(r) => Some(format!("offline {r}")),
                Action::Terminate(r) => Some(format!("terminate {r}")),
                Action::Schedule { after, input } => Some(format!("after {after:?}: {input:?}")),
                Action::GroupState { failed, .. } => Some(format!("group failed={failed}")),
                _ => None,
            })
            .collect()
    }

    /// `web` crashes: what the engine does about it.
    fn crash_web(engine: &mut PolicyEngine, now: Instant) -> Vec<String> {
        calls(&engine.handle(Input::Failed { resource: "web".into(), failure: probe_failure("crash") }, now))
    }

    /// `web`'s restart comes due and succeeds.
    fn restart_web(engine: &mut PolicyEngine, now: Instant) {
        engine.handle(Input::RestartDue("web".into()), now);
        engine.handle(Input::OnlineDone { resource: "web".into(), result: Ok(()) }, now);
    }

    fn online(engine: &mut PolicyEngine, now: Instant) {
        engine.handle(Input::GroupOnline("g".into()), now);
        engine.handle(Input::OnlineDone { resource: "disk".into(), result: Ok(()) }, now);
        engine.handle(Input::OnlineDone { resource: "web".into(), result: Ok(()) }, now);
        assert_eq!(engine.state("web"), Some(ResourceState::Online));
    }

    #[test]
    fn online_follows_dependencies() {
        let mut engine = engine(Policy::default());
        let now = Instant::now();
        assert_eq!(calls(&engine.handle(Input::GroupOnline("g".into()), now)), ["online disk"]);
        let done = Input::OnlineDone { resource: "disk".into(), result: Ok(()) };
        assert_eq!(calls(&engine.handle(done, now)), ["online web"]);
    }

    #[test]
    fn a_removed_group_is_forgotten_and_its_inputs_ignored() {
        let mut engine = engine(Policy::default());
        let now = Instant::now();
        assert!(engine.remove_group("g"));
        assert!(!engine.remove_group("g"));
        assert_eq!(engine.state("web"), None);
        assert!(engine.handle(Input::GroupOnline("g".into()), now).is_empty());
        assert!(engine.handle(Input::OnlineDone { resource: "disk".into(), result: Ok(()) }, now).is_empty());
    }

    #[test]
    fn offline_goes_in_reverse_dependency_order() {
        let mut engine = engine(Policy::default());
        let now = Instant::now();
        online(&mut engine, now);
        assert_eq!(calls(&engine.handle(Input::GroupOffline("g".into()), now)), ["offline web"]);
        assert_eq!(calls(&engine.handle(Input::OfflineDone { resource: "web".into() }, now)), ["offline disk"]);
    }

    #[test]
    fn a_failed_dependency_takes_its_dependents_offline_and_restarts_with_backoff() {
        let mut engine = engine(Policy::default());
        let now = Instant::now();
        online(&mut engine, now);
        let failed = Input::Failed { resource: "disk".into(), failure: probe_failure("gone") };
        assert_eq!(
            calls(&engine.handle(failed.clone(), now)),
            ["terminate disk", "after 500ms: RestartDue(\"disk\")", "offline web"]
        );
        engine.handle(Input::OfflineDone { resource: "web".into() }, now);
        assert_eq!(calls(&engine.handle(Input::RestartDue("disk".into()), now)), ["online disk"]);
        engine.handle(Input::OnlineDone { resource: "disk".into(), result: Ok(()) }, now);
        assert_eq!(engine.state("web"), Some(ResourceState::OnlinePending), "the dependent returns");
        let second = calls(&engine.handle(failed, now + Duration::from_secs(1)));
        assert!(second.contains(&"after 1s: RestartDue(\"disk\")".to_string()), "{second:?}");
    }

    #[test]
    fn a_failure_keeps_its_kind_into_the_transition() {
        let mut engine = engine(Policy::default());
        let now = Instant::now();
        online(&mut engine, now);
        let deadline = Failure::new(FailureKind::Deadline, "looks-alive exceeded its deadline");
        let actions = engine.handle(Input::Failed { resource: "disk".into(), failure: deadline }, now);
        let failed = actions.iter().find_map(|action| match action {
            Action::Transition { resource, to: ResourceState::Failed, failure, reason, .. } if resource == "disk" => {
                Some((*failure, reason.clone()))
            }
            _ => None,
        });
        assert_eq!(failed, Some((Some(FailureKind::Deadline), "looks-alive exceeded its deadline".to_string())));
        let other = actions.iter().filter(|action| matches!(action, Action::Transition { failure: Some(_), .. }));
        assert_eq!(other.count(), 1, "only the failed resource's transition carries a kind: {actions:?}");
    }

    #[test]
    fn past_the_threshold_the_group_fails_and_is_retried_later() {
        let policy = Policy { restart_threshold: 1, ..Policy::default() };
        let mut engine = engine(policy);
        let now = Instant::now();
        online(&mut engine, now);
        crash_web(&mut engine, now);
        restart_web(&mut engine, now);
        let actions = crash_web(&mut engine, now);
        assert!(actions.contains(&"group failed=true".to_string()), "{actions:?}");
        assert!(actions.contains(&"after 3600s: GroupRetryDue(\"g\")".to_string()), "{actions:?}");
        assert!(actions.contains(&"offline disk".to_string()), "the rest of the group goes offline: {actions:?}");
        assert!(engine.group_failed("g"));
        engine.handle(Input::OfflineDone { resource: "disk".into() }, now);
        let retry = calls(&engine.handle(Input::GroupRetryDue("g".into()), now));
        assert_eq!(retry, ["group failed=false", "online disk"]);
    }

    #[test]
    fn a_new_policy_counts_from_the_next_decision_with_the_restarts_so_far() {
        let mut engine = engine(Policy { restart_threshold: 1, ..Policy::default() });
        let now = Instant::now();
        online(&mut engine, now);
        crash_web(&mut engine, now);
        restart_web(&mut engine, now);
        // Under the old policy the second failure would fail the group.
        assert!(engine.set_policy("g", Policy { restart_threshold: 2, ..Policy::default() }));
        assert!(!engine.set_policy("other", Policy::default()), "an unknown group is not");
        let second = crash_web(&mut engine, now);
        assert!(!second.contains(&"group failed=true".to_string()), "{second:?}");
        restart_web(&mut engine, now);
        let third = crash_web(&mut engine, now);
        assert!(third.contains(&"group failed=true".to_string()), "the first restart still counts: {third:?}");
    }

    #[test]
    fn an_operator_online_restarts_a_failed_group_at_once() {
        let policy = Policy { restart_threshold: 0, ..Policy::default() };
        let mut engine = engine(policy);
        let now = Instant::now();
        online(&mut engine, now);
        engine.handle(Input::Failed { resource: "disk".into(), failure: probe_failure("gone") }, now);
        engine.handle(Input::OfflineDone { resource: "web".into() }, now);
        assert!(engine.group_failed("g"));
        let actions = calls(&engine.handle(Input::GroupOnline("g".into()), now));
        assert_eq!(actions, ["group failed=false", "online disk"]);
        assert_eq!(engine.restarts("disk"), 0);
    }

    #[test]
    fn a_fatal_error_fails_the_group_without_restarts() {
        let mut engine = engine(Policy::default());
        let now = Instant::now();
        engine.handle(Input::GroupOnline("g".into()), now);
        let fatal = Input::OnlineDone {
            resource: "disk".into(),
            result: Err((Failure::new(FailureKind::Plugin, "broken"), Severity::Final)),
        };
        let actions = calls(&engine.handle(fatal, now));
        assert!(actions.contains(&"group failed=true".to_string()), "{actions:?}");
        assert!(!actions.iter().any(|a| a.contains("RestartDue")), "{actions:?}");
    }

    #[test]
    fn stale_results_are_ignored() {
        let mut engine = engine(Policy::default());
        let now = Instant::now();
        let stale = Input::OnlineDone { resource: "web".into(), result: Ok(()) };
        assert!(engine.handle(stale, now).is_empty());
        let probe = Input::Failed { resource: "web".into(), failure: probe_failure("late probe") };
        assert!(engine.handle(probe, now).is_empty());
    }
}
