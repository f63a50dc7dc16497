//! Steward's cluster foundation on etcd (v3 API, through `etcd-client`).
//!
//! Several nodes become one cluster by sharing an etcd: each node holds one
//! lease and a node key bound to it ([`membership`]), and owns groups through
//! owner keys bound to that same lease, so one keepalive per node covers
//! all its groups ([`ownership`]). Which node should own a group next is a
//! pure decision ([`placement`]), and so is the local estimate of when the
//! lease runs out ([`lease`]): both are what the ownership simulation in
//! `tests/all/simulation.rs` drives with virtual time.
//!
//! This crate knows nothing of resources, plugins or wasmtime; the node
//! runtime consumes its events (lease healthy, quorum lost, lease expired,
//! rejoined, owner changed) and carries out what they mean for its groups.
//!
//! Key layout, all under `/steward/<cluster>/`:
//! - `nodes/<node>`: JSON [`NodeInfo`], bound to the node's lease;
//! - `owners/<group>`: JSON naming the owner node, bound to its lease; its
//!   create revision is the group's [`FencingToken`];
//! - `groups/<group>/<key>`: what a node writes on a group's behalf, only
//!   through [`ownership::Ownership::guarded_put`];
//! - `wishes/<group>`: JSON [`ownership::Wish`], the operator's last word
//!   on whether the group runs anywhere (absent: the group's `autostart`);
//! - `config`: the shared configuration, the files an operator applied
//!   ([`shared_config`]).

pub mod error;
#[cfg(feature = "harness")]
pub mod harness;
mod keys;
pub mod lease;
pub mod membership;
pub mod ownership;
pub mod placement;
pub mod shared_config;
mod watch;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use error::{Error, Result};
pub use membership::{ClientIdentity, ClusterConfig, EtcdTls, LeaseHealth, LeaseState, Member, MembershipEvent, join};
pub use ownership::{OwnerChanged, OwnerRecord, OwnersWatch, Ownership, Wish, WishChange, WishesWatch};
pub use watch::Subscription;

/// A node's plugin types: type name to the version hash it runs.
pub type PluginInventory = BTreeMap<String, String>;

/// What a node publishes about itself in its node key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Where the node's HTTP API listens, for operators and other nodes.
    pub api_address: String,
    /// The `steward` version the node runs.
    pub version: String,
    /// The plugin types the node can run, by name, with their version hash.
    pub plugins: PluginInventory,
    /// Whether `plugins` is what the node loaded: false from its join
    /// until it publishes them (a node still loading its plugins is not
    /// one that lacks them). Absent in older nodes' keys: true.
    #[serde(default = "published")]
    pub plugins_known: bool,
}

fn published() -> bool {
    true
}

/// An etcd lease id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// The fencing token of one ownership of a group: the create revision of
/// its owner key. etcd revisions only grow, so each new owner's token is
/// larger than every earlier one, and a stale owner can be told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FencingToken {
    /// The token for a key's create revision; `None` for a missing key
    /// (etcd reports create revision 0 for it).
    pub fn from_create_revision(create_revision: i64) -> Option<FencingToken> {
        u64::try_from(create_revision).ok().filter(|revision| *revision > 0).map(FencingToken)
    }

    /// The create revision to compare the owner key with.
    pub(crate) fn as_revision(self) -> i64 {
        // Tokens are made from positive i64 create revisions only
        // (`from_create_revision`), so the conversion back cannot overflow.
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}
