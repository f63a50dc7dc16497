//! Why a group restarted, moved, failed over, failed back or failed: every
//! such decision of this node, with the rule that made it and the inputs
//! the rule was given (the candidate nodes and why each was passed over,
//! the restarts counted, the lease figures), kept per group for
//! `steward why GROUP` and `GET /v1/groups/{name}/why`.
//!
//! Each node keeps its own decisions; in a cluster the CLI asks every
//! node and merges them by time, so the chain of a group that went from
//! node to node reads in order. The log is bounded per group.

use std::collections::{BTreeMap, VecDeque};

use steward_cluster::placement::{Decision as Placement, Verdict};

/// How many decisions are kept per group.
pub const DECISIONS_PER_GROUP: usize = 64;

/// One decision made for a group.
#[derive(Debug, Clone)]
pub struct Decision {
    /// When, in Unix milliseconds.
    pub unix_ms: u64,
    /// The node that decided.
    pub node: String,
    /// The group.
    pub group: String,
    /// `restart`, `group-failed`, `acquired`, `lost-race`, `failover`,
    /// `failover-exhausted`, `move`, `failback`, `lost`, `fenced`.
    pub kind: String,
    /// The rule applied, in words.
    pub rule: String,
    /// What the rule was given: one line per input.
    pub inputs: Vec<String>,
    /// What came of it.
    pub outcome: String,
}

/// The decisions of a node, the latest [`DECISIONS_PER_GROUP`] per group.
#[derive(Debug, Default)]
pub struct DecisionLog {
    groups: BTreeMap<String, VecDeque<Decision>>,
}

impl DecisionLog {
    /// Keeps `decision`, dropping the group's oldest past the bound.
    pub fn record(&mut self, decision: Decision) {
        let kept = self.groups.entry(decision.group.clone()).or_default();
        if kept.len() == DECISIONS_PER_GROUP {
            kept.pop_front();
        }
        kept.push_back(decision);
    }

    /// The group's decisions, oldest first.
    pub fn of(&self, group: &str) -> Vec<Decision> {
        self.groups.get(group).map(|kept| kept.iter().cloned().collect()).unwrap_or_default()
    }
}

/// The placement rule, as the decisions quote it.
pub const PLACEMENT_RULE: &str = "placement: the group's preferred_owners in order, then the other live nodes by \
     name; only possible_owners (empty: all), only nodes holding every plugin type the group uses, not a node \
     where the group failed within its failover_period";

/// One line per node placement considered: its name and verdict.
pub fn candidates(placement: &Placement) -> Vec<String> {
    placement
        .candidates
        .iter()
        .map(|candidate| {
            let verdict = match &candidate.verdict {
                Verdict::Chosen => "chosen".to_string(),
                Verdict::Eligible => "eligible, after the chosen one".to_string(),
                Verdict::NotLive => "skipped: not live (holds no lease)".to_string(),
                Verdict::NotPossibleOwner => "skipped: not a possible owner".to_string(),
                Verdict::LacksType { plugin_type } => format!("skipped: lacks plugin type `{plugin_type}`"),
                Verdict::PluginsUnknown => "skipped: has not published its plugin types yet (loading them)".into(),
                Verdict::FailedRecently { ago } => {
                    format!("skipped: the group failed there {}s ago, within its failover period", ago.as_secs())
                }
            };
            format!("{}: {verdict}", candidate.node)
        })
        .collect()
}
