//! Placement: which live node should own a group next, and why.
//!
//! Pure: the live nodes, the group's owner lists, the plugin types it needs
//! and its recent failures come in, the time is passed in, and the answer
//! is the same on every node given the same inputs, so the surviving nodes
//! of a failover agree on one candidate instead of racing. The owner key's
//! create-if-absent transaction still decides if two nodes disagree (their
//! views of the live nodes can differ for a moment).
//!
//! The rule, as in the classic cluster service: the group's preferred
//! owners in their order, then every other node in name order; only
//! possible owners (an empty list allows every node); only nodes that hold
//! every plugin type the group uses; and not a node where the group failed
//! within its failover period. Every candidate's verdict is kept, so the
//! decision can be explained to an operator.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::PluginInventory;

/// What placement needs to know about one group.
#[derive(Clone, Debug)]
pub struct GroupPlacement<'a> {
    /// The nodes to try first, in this order.
    pub preferred_owners: &'a [String],
    /// The only nodes allowed to run the group; empty allows every node.
    pub possible_owners: &'a [String],
    /// The plugin types the group's resources use.
    pub plugin_types: &'a BTreeSet<String>,
    /// How long a failure on a node keeps the group off that node.
    pub failover_period: Duration,
}

/// A node that holds its lease now, with the plugin types it can run.
#[derive(Clone, Copy, Debug)]
pub struct LiveNode<'a> {
    pub name: &'a str,
    pub plugins: &'a PluginInventory,
    /// Whether it has published its plugin types yet.
    pub plugins_known: bool,
}

/// The group failed on `node` at `at`.
#[derive(Clone, Copy, Debug)]
pub struct RecentFailure<'a> {
    pub node: &'a str,
    pub at: Instant,
}

/// The chosen owner, if any, and the verdict on every node considered, in
/// the order they were considered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub owner: Option<String>,
    pub candidates: Vec<Candidate>,
}

/// One node considered for a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub node: String,
    pub verdict: Verdict,
}

/// Why a node was or was not chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The first eligible node: the next owner.
    Chosen,
    /// Eligible, but an earlier node was chosen.
    Eligible,
    /// A preferred owner that holds no lease now.
    NotLive,
    /// Not in the group's possible owners.
    NotPossibleOwner,
    /// Lacks a plugin type the group uses (the first missing one, by name).
    LacksType { plugin_type: String },
    /// Has not published its plugin types yet (it is loading them).
    PluginsUnknown,
    /// The group failed there `ago` before now, within its failover period.
    FailedRecently { ago: Duration },
}

/// Chooses the next owner of a group among `live_nodes` at `now`.
pub fn choose_owner(
    group: &GroupPlacement<'_>,
    live_nodes: &[LiveNode<'_>],
    failures: &[RecentFailure<'_>],
    now: Instant,
) -> Decision {
    let mut order: Vec<&str> = Vec::new();
    for preferred in group.preferred_owners {
        if !order.contains(&preferred.as_str()) {
            order.push(preferred);
        }
    }
    let mut others: Vec<&str> = live_nodes.iter().map(|node| node.name).filter(|name| !order.contains(name)).collect();
    others.sort_unstable();
    others.dedup();
    order.extend(others);

    let mut owner = None;
    let candidates = order
        .into_iter()
        .map(|name| {
            let verdict = match live_nodes.iter().find(|node| node.name == name) {
                None => Verdict::NotLive,
                Some(node) => match ineligibility(group, node, failures, now) {
                    Some(verdict) => verdict,
                    None if owner.is_none() => {
                        owner = Some(name.to_string());
                        Verdict::Chosen
                    }
                    None => Verdict::Eligible,
                },
            };
            Candidate { node: name.to_string(), verdict }
        })
        .collect();
    Decision { owner, candidates }
}

/// Whether `node` could own the group at all: the first rule it breaks.
pub fn ineligibility(
    group: &GroupPlacement<'_>,
    node: &LiveNode<'_>,
    failures: &[RecentFailure<'_>],
    now: Instant,
) -> Option<Verdict> {
    if !group.possible_owners.is_empty() && !group.possible_owners.iter().any(|possible| possible == node.name) {
        return Some(Verdict::NotPossibleOwner);
    }
    if let Some(missing) = group.plugin_types.iter().find(|plugin_type| !node.plugins.contains_key(*plugin_type)) {
        return Some(if node.plugins_known {
            Verdict::LacksType { plugin_type: missing.clone() }
        } else {
            Verdict::PluginsUnknown
        });
    }
    failures
        .iter()
        .filter(|failure| failure.node == node.name)
        .map(|failure| now.saturating_duration_since(failure.at))
        .filter(|ago| *ago < group.failover_period)
        .min()
        .map(|ago| Verdict::FailedRecently { ago })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(types: &[&str]) -> PluginInventory {
        types.iter().map(|name| (name.to_string(), format!("{name}-hash"))).collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn preferred_owners_come_first_then_the_rest_by_name() {
        let full = inventory(&["dummy"]);
        let live = [
            LiveNode { name: "c", plugins: &full, plugins_known: true },
            LiveNode { name: "a", plugins: &full, plugins_known: true },
            LiveNode { name: "b", plugins: &full, plugins_known: true },
        ];
        let types = BTreeSet::from(["dummy".to_string()]);
        let preferred = names(&["x", "b"]);
        let group = GroupPlacement {
            preferred_owners: &preferred,
            possible_owners: &[],
            plugin_types: &types,
            failover_period: Duration::from_secs(60),
        };
        let decision = choose_owner(&group, &live, &[], Instant::now());
        assert_eq!(decision.owner.as_deref(), Some("b"));
        let verdicts: Vec<(&str, &Verdict)> =
            decision.candidates.iter().map(|candidate| (candidate.node.as_str(), &candidate.verdict)).collect();
        assert_eq!(
            verdicts,
            [("x", &Verdict::NotLive), ("b", &Verdict::Chosen), ("a", &Verdict::Eligible), ("c", &Verdict::Eligible)]
        );
    }

    #[test]
    fn possible_owners_types_and_recent_failures_rule_nodes_out() {
        let full = inventory(&["dummy", "http-check"]);
        let partial = inventory(&["dummy"]);
        let live = [
            LiveNode { name: "a", plugins: &full, plugins_known: true },
            LiveNode { name: "b", plugins: &partial, plugins_known: true },
            LiveNode { name: "c", plugins: &full, plugins_known: true },
            LiveNode { name: "d", plugins: &full, plugins_known: true },
            LiveNode { name: "e", plugins: &full, plugins_known: true },
            LiveNode { name: "f", plugins: &partial, plugins_known: false },
        ];
        let types = BTreeSet::from(["dummy".to_string(), "http-check".to_string()]);
        let possible = names(&["a", "b", "c", "e", "f"]);
        let group = GroupPlacement {
            preferred_owners: &[],
            possible_owners: &possible,
            plugin_types: &types,
            failover_period: Duration::from_secs(60),
        };
        let now = Instant::now() + Duration::from_secs(1000);
        let failures = [
            RecentFailure { node: "a", at: now - Duration::from_secs(10) },
            RecentFailure { node: "c", at: now - Duration::from_secs(61) },
        ];
        let decision = choose_owner(&group, &live, &failures, now);
        assert_eq!(decision.owner.as_deref(), Some("c"), "c's failure is older than the period");
        let verdicts: Vec<&Verdict> = decision.candidates.iter().map(|candidate| &candidate.verdict).collect();
        assert_eq!(
            verdicts,
            [
                &Verdict::FailedRecently { ago: Duration::from_secs(10) },
                &Verdict::LacksType { plugin_type: "http-check".to_string() },
                &Verdict::Chosen,
                &Verdict::NotPossibleOwner,
                &Verdict::Eligible,
                &Verdict::PluginsUnknown,
            ]
        );
    }

    #[test]
    fn no_eligible_node_means_no_owner() {
        let empty = inventory(&[]);
        let live = [LiveNode { name: "a", plugins: &empty, plugins_known: true }];
        let types = BTreeSet::from(["dummy".to_string()]);
        let group = GroupPlacement {
            preferred_owners: &[],
            possible_owners: &[],
            plugin_types: &types,
            failover_period: Duration::from_secs(1),
        };
        assert_eq!(choose_owner(&group, &live, &[], Instant::now()).owner, None);
    }
}
