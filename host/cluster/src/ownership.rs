//! Ownership: which node runs each group, with a fencing token per ownership.
//!
//! A group's owner key `/steward/<cluster>/owners/<group>` is created by a
//! transaction only if it is absent, bound to the owner node's lease: when
//! the node's lease ends, etcd deletes its owner keys with it, and the one
//! keepalive of [`crate::membership`] keeps all of them. The fencing token
//! is the owner key's create revision, which etcd makes larger for every
//! new owner; every write made on a group's behalf compares the owner key's
//! create revision with the writer's token in the same transaction
//! ([`Ownership::guarded_put`]), so a node that lost the group (however
//! late it learns it) cannot write for it any more.
//!
//! A request that times out may still have been applied by etcd; so
//! [`Ownership::acquire`] of a group this node already holds on its
//! current lease returns that ownership's token rather than nothing.
//!
//! [`Ownership::watch_owners`] follows the owners prefix (reopening its
//! stream from the last revision it delivered, see `watch.rs`) and
//! reports each owner that comes or goes.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::keys::{Keys, check_name, name_under};
use crate::membership::{LeaseHealth, LeaseState, first_entry, timed};
use crate::watch::{self as resilient, Change, Entry, StreamClients, Subscription, WatchSpec};
use crate::{Error, FencingToken, LeaseId, NodeInfo, Result};

/// The group data key naming the node a planned move hands the group to.
const HANDOFF: &str = "handoff";

/// Group ownership on one node's lease; cheap to clone.
#[derive(Clone)]
pub struct Ownership {
    client: Client,
    stream_clients: StreamClients,
    keys: Keys,
    node: String,
    lease: watch::Receiver<LeaseState>,
    request_timeout: Duration,
}

/// A group's current owner, as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRecord {
    pub group: String,
    pub node: String,
    pub token: FencingToken,
    pub lease: LeaseId,
}

/// A node holding its lease, as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: String,
    pub info: NodeInfo,
    pub lease: LeaseId,
}

/// A group's owner came (`owner` is the node) or went (`owner` is `None`);
/// `token` is the fencing token of the ownership that began or ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerChanged {
    pub group: String,
    pub owner: Option<String>,
    pub token: FencingToken,
}

/// The owner changes of the cluster, beginning with the owners that exist.
pub type OwnersWatch = Subscription<OwnerChanged>;

/// An operator's word on whether a group runs anywhere in the cluster:
/// `steward offline` on any node keeps it offline on every node until
/// `steward online`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wish {
    /// The group.
    pub group: String,
    /// Online (somewhere) or offline (everywhere).
    pub online: bool,
    /// The node the operator asked.
    pub by: String,
    /// When, in Unix milliseconds.
    pub unix_ms: u64,
}

/// A change to the operators' wishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WishChange {
    /// A wish, new or told again.
    Set(Wish),
    /// The wish for this group is gone: an apply left its group out, so
    /// a group of that name applied later starts without it.
    Forgotten(String),
}

/// The wishes of the cluster, beginning with those that exist.
pub type WishesWatch = Subscription<WishChange>;

/// The JSON value of an owner key.
#[derive(Serialize, Deserialize)]
struct OwnerValue {
    node: String,
}

impl Ownership {
    pub(crate) fn new(
        client: Client,
        stream_clients: StreamClients,
        keys: Keys,
        node: String,
        lease: watch::Receiver<LeaseState>,
        request_timeout: Duration,
    ) -> Ownership {
        Ownership { client, stream_clients, keys, node, lease, request_timeout }
    }

    /// Takes `group` if no node owns it: its fencing token, or `None` when
    /// another node (or this node on an earlier lease) holds it.
    pub async fn acquire(&self, group: &str) -> Result<Option<FencingToken>> {
        check_name("group", group)?;
        let lease = self.healthy_lease()?;
        let key = self.keys.owner(group);
        let value = serde_json::to_vec(&OwnerValue { node: self.node.clone() })
            .map_err(|error| Error::CorruptValue { key: key.clone(), reason: error.to_string() })?;
        let create = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(key.clone(), value, Some(PutOptions::new().with_lease(lease.0))),
                TxnOp::get(key.clone(), None),
            ])
            .or_else([TxnOp::get(key.clone(), None)]);
        let response = self.txn("owner key transaction", create).await?;
        let holder = first_entry(&response);
        let token = match holder {
            Some(holder) if response.succeeded() || self.is_ours(&holder, lease) => {
                FencingToken::from_create_revision(holder.create_revision)
            }
            _ => None,
        };
        match token {
            Some(token) => info!(node = %self.node, group, %token, %lease, "group acquired"),
            None => debug!(node = %self.node, group, "group is owned by another node"),
        }
        Ok(token)
    }

    /// Gives `group` up, if `token` is still its ownership: `true` if the
    /// owner key was deleted, `false` if it was not this ownership's any more.
    pub async fn release(&self, group: &str, token: FencingToken) -> Result<bool> {
        check_name("group", group)?;
        let key = self.keys.owner(group);
        let release = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, token.as_revision())])
            .and_then([TxnOp::delete(key, None)]);
        let response = self.txn("owner key release", release).await?;
        if response.succeeded() {
            info!(node = %self.node, group, %token, "group released");
        } else {
            warn!(node = %self.node, group, %token, "group was not released: the ownership had already ended");
        }
        Ok(response.succeeded())
    }

    /// Writes `value` at `/steward/<cluster>/groups/<group>/<key>` on the
    /// group's behalf, only if `token` is still the group's ownership;
    /// otherwise fails with [`Error::StaleFencingToken`].
    pub async fn guarded_put(
        &self,
        group: &str,
        token: FencingToken,
        key: &str,
        value: impl Into<Vec<u8>>,
    ) -> Result<()> {
        check_name("group", group)?;
        let owner_key = self.keys.owner(group);
        let put = Txn::new()
            .when([Compare::create_revision(owner_key.clone(), CompareOp::Equal, token.as_revision())])
            .and_then([TxnOp::put(self.keys.group_data(group, key), value, None)])
            .or_else([TxnOp::get(owner_key, None)]);
        let response = self.txn("guarded write", put).await?;
        if response.succeeded() {
            return Ok(());
        }
        let current = match first_entry(&response) {
            Some(holder) => format!(
                "owned by {} with token {}",
                owner_node(&holder).unwrap_or_else(|| "an unknown node".to_string()),
                holder.create_revision
            ),
            None => "not owned".to_string(),
        };
        warn!(node = %self.node, group, %token, %current, "guarded write refused: stale fencing token");
        Err(Error::StaleFencingToken { group: group.to_string(), token, current })
    }

    /// Hands `group` over to node `to`: in one transaction guarded by
    /// `token`, names `to` in the group's `handoff` key and deletes the
    /// owner key, so the next owner is `to` (see [`Ownership::handoff`]),
    /// with a new token. The group must be offline here first.
    pub async fn hand_over(&self, group: &str, token: FencingToken, to: &str) -> Result<()> {
        check_name("group", group)?;
        check_name("node", to)?;
        let owner_key = self.keys.owner(group);
        let hand_over = Txn::new()
            .when([Compare::create_revision(owner_key.clone(), CompareOp::Equal, token.as_revision())])
            .and_then([
                TxnOp::put(self.keys.group_data(group, HANDOFF), to, None),
                TxnOp::delete(owner_key.clone(), None),
            ])
            .or_else([TxnOp::get(owner_key, None)]);
        let response = self.txn("hand-over", hand_over).await?;
        if response.succeeded() {
            return Ok(());
        }
        let current = match first_entry(&response) {
            Some(holder) => format!("owned with token {}", holder.create_revision),
            None => "not owned".to_string(),
        };
        Err(Error::StaleFencingToken { group: group.to_string(), token, current })
    }

    /// The node a planned move handed `group` over to, until it took it
    /// (it then clears the key with [`Ownership::guarded_put`]).
    pub async fn handoff(&self, group: &str) -> Result<Option<String>> {
        self.group_data(group, HANDOFF).await
    }

    /// Clears `group`'s hand-over once its named node took it (as the
    /// owner with `token`): the next loss is a failover again.
    pub async fn clear_handoff(&self, group: &str, token: FencingToken) -> Result<()> {
        self.guarded_put(group, token, HANDOFF, "").await
    }

    /// What was written at `/steward/<cluster>/groups/<group>/<key>` (by
    /// [`Ownership::guarded_put`]); `None` for nothing or an empty value.
    pub async fn group_data(&self, group: &str, key: &str) -> Result<Option<String>> {
        check_name("group", group)?;
        let key = self.keys.group_data(group, key);
        let response = timed("read group data", self.request_timeout, || {
            let (mut kv, key) = (self.client.kv_client(), key.clone());
            async move { kv.get(key, None).await }
        })
        .await?;
        Ok(response
            .kvs()
            .first()
            .map(|entry| String::from_utf8_lossy(entry.value()).into_owned())
            .filter(|node| !node.is_empty()))
    }

    /// Publishes the plugin types this node can run in its node key, so
    /// that placement on every node sees them. The node key is rewritten
    /// only while it is bound to this node's current lease: a node key of
    /// an earlier lease, or of another node, is left alone.
    pub async fn publish_plugins(&self, plugins: &crate::PluginInventory) -> Result<()> {
        let lease = self.healthy_lease()?;
        let key = self.keys.node(&self.node);
        let response = timed("node key read", self.request_timeout, || {
            let mut kv = self.client.kv_client();
            let key = key.clone();
            async move { kv.get(key, None).await }
        })
        .await?;
        let current = response.kvs().first().and_then(Entry::from_key_value);
        let mut info: NodeInfo = match &current {
            Some(entry) if entry.lease == lease.0 => serde_json::from_slice(&entry.value)
                .map_err(|error| Error::CorruptValue { key: key.clone(), reason: error.to_string() })?,
            _ => return Err(Error::NoLease { node: self.node.clone(), state: "without its node key" }),
        };
        if info.plugins == *plugins && info.plugins_known {
            return Ok(());
        }
        info.plugins = plugins.clone();
        info.plugins_known = true;
        let value = serde_json::to_vec(&info)
            .map_err(|error| Error::CorruptValue { key: key.clone(), reason: error.to_string() })?;
        let update = Txn::new().when([Compare::lease(key.clone(), CompareOp::Equal, lease.0)]).and_then([TxnOp::put(
            key.clone(),
            value,
            Some(PutOptions::new().with_lease(lease.0)),
        )]);
        if self.txn("node key update", update).await?.succeeded() {
            info!(node = %self.node, types = plugins.len(), "plugin inventory published");
            Ok(())
        } else {
            Err(Error::NoLease { node: self.node.clone(), state: "without its node key" })
        }
    }

    /// The cluster's shared configuration, through this node's clients.
    pub fn shared_config(&self) -> crate::shared_config::SharedConfigStore {
        crate::shared_config::SharedConfigStore {
            client: self.client.clone(),
            stream_clients: self.stream_clients.clone(),
            keys: self.keys.clone(),
            node: self.node.clone(),
            request_timeout: self.request_timeout,
        }
    }

    /// Records the operator's wish for `wish.group`, for every node.
    pub async fn set_wish(&self, wish: &Wish) -> Result<()> {
        check_name("group", &wish.group)?;
        let key = self.keys.wish(&wish.group);
        let value = serde_json::to_vec(wish)
            .map_err(|error| Error::CorruptValue { key: key.clone(), reason: error.to_string() })?;
        let put = Txn::new().and_then([TxnOp::put(key, value, None)]);
        self.txn("wish write", put).await?;
        info!(node = %self.node, group = %wish.group, online = wish.online, "wish recorded");
        Ok(())
    }

    /// Follows the wishes: first every wish there is, then each new one,
    /// without gaps across broken streams.
    pub async fn watch_wishes(&self) -> Result<WishesWatch> {
        let prefix = self.keys.wishes_prefix();
        let (entries, revision) = self.read_prefix("wishes read", &prefix).await?;
        let (sender, events) = mpsc::unbounded_channel();
        // The groups with a wish, so a resync can tell which were forgotten.
        let mut known = std::collections::HashSet::new();
        for wish in entries.iter().filter_map(|entry| wish_of(&prefix, entry)) {
            known.insert(wish.group.clone());
            let _ = sender.send(WishChange::Set(wish));
        }
        let spec = WatchSpec {
            key: prefix.clone(),
            prefix: true,
            start_revision: revision + 1,
            request_timeout: self.request_timeout,
            label: "wishes",
        };
        let span = info_span!("wishes_watch", node = %self.node);
        let task = tokio::spawn(
            resilient::run(self.stream_clients.clone(), spec, move |change| {
                let changes: Vec<WishChange> = match change {
                    Change::Put(entry) => wish_of(&prefix, &entry).map(WishChange::Set).into_iter().collect(),
                    Change::Delete { key, .. } => name_under(&prefix, &key)
                        .map(|group| WishChange::Forgotten(group.to_string()))
                        .into_iter()
                        .collect(),
                    // A resync hands every wish over again (the latest
                    // wins), and those no longer there are forgotten.
                    Change::Resync(entries) => {
                        let wishes: Vec<Wish> = entries.iter().filter_map(|entry| wish_of(&prefix, entry)).collect();
                        let now: std::collections::HashSet<&str> = wishes.iter().map(|w| w.group.as_str()).collect();
                        let gone: Vec<String> =
                            known.iter().filter(|group| !now.contains(group.as_str())).cloned().collect();
                        gone.into_iter()
                            .map(WishChange::Forgotten)
                            .chain(wishes.into_iter().map(WishChange::Set))
                            .collect()
                    }
                };
                for change in &changes {
                    match change {
                        WishChange::Set(wish) => known.insert(wish.group.clone()),
                        WishChange::Forgotten(group) => known.remove(group),
                    };
                }
                changes.into_iter().all(|change| sender.send(change).is_ok()) && !sender.is_closed()
            })
            .instrument(span),
        );
        Ok(Subscription::new(events, task))
    }

    /// Every group's current owner, by group name.
    pub async fn list_owners(&self) -> Result<Vec<OwnerRecord>> {
        let prefix = self.keys.owners_prefix();
        let (entries, _) = self.read_prefix("owners read", &prefix).await?;
        Ok(entries.iter().filter_map(|entry| owner_record(&prefix, entry)).collect())
    }

    /// Every node that holds its lease now, by name.
    pub async fn live_nodes(&self) -> Result<Vec<NodeRecord>> {
        let prefix = self.keys.nodes_prefix();
        let (entries, _) = self.read_prefix("nodes read", &prefix).await?;
        Ok(entries
            .iter()
            .filter_map(|entry| {
                let name = name_under(&prefix, &entry.key)?;
                let info = serde_json::from_slice(&entry.value)
                    .inspect_err(
                        |error| warn!(key = %entry.key, %error, "skipping a node key that is not Steward's JSON"),
                    )
                    .ok()?;
                Some(NodeRecord { name: name.to_string(), info, lease: LeaseId(entry.lease) })
            })
            .collect())
    }

    /// Follows the owners: first one [`OwnerChanged`] per current owner,
    /// then every change, without gaps across broken streams.
    pub async fn watch_owners(&self) -> Result<OwnersWatch> {
        let prefix = self.keys.owners_prefix();
        let (entries, revision) = self.read_prefix("owners read", &prefix).await?;
        let (sender, events) = mpsc::unbounded_channel();
        let mut owners = BTreeMap::new();
        for record in entries.iter().filter_map(|entry| owner_record(&prefix, entry)) {
            let _ = sender.send(OwnerChanged {
                group: record.group.clone(),
                owner: Some(record.node.clone()),
                token: record.token,
            });
            owners.insert(record.group.clone(), record);
        }
        let spec = WatchSpec {
            key: prefix.clone(),
            prefix: true,
            start_revision: revision + 1,
            request_timeout: self.request_timeout,
            label: "owners",
        };
        let span = info_span!("owners_watch", node = %self.node);
        let task = tokio::spawn(
            resilient::run(self.stream_clients.clone(), spec, move |change| {
                track_owners(&prefix, &mut owners, change, &sender)
            })
            .instrument(span),
        );
        Ok(Subscription::new(events, task))
    }

    /// Every transaction here may be repeated by `timed`: acquiring again
    /// finds our own key, a repeated guarded put writes the same value, and
    /// a repeated release finds the key gone (and says `false`).
    async fn txn(&self, operation: &'static str, txn: Txn) -> Result<TxnResponse> {
        timed(operation, self.request_timeout, || {
            let (mut kv, txn) = (self.client.kv_client(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
    }

    fn healthy_lease(&self) -> Result<LeaseId> {
        let state = *self.lease.borrow();
        match state.health {
            LeaseHealth::Healthy => Ok(state.lease),
            health => Err(Error::NoLease { node: self.node.clone(), state: health.describe() }),
        }
    }

    fn is_ours(&self, holder: &Entry, lease: LeaseId) -> bool {
        holder.lease == lease.0 && owner_node(holder).as_deref() == Some(self.node.as_str())
    }

    async fn read_prefix(&self, operation: &'static str, prefix: &str) -> Result<(Vec<Entry>, i64)> {
        let response = timed(operation, self.request_timeout, || {
            let mut kv = self.client.kv_client();
            async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
        let revision = response.header().map(|header| header.revision()).unwrap_or_default();
        Ok((response.kvs().iter().filter_map(Entry::from_key_value).collect(), revision))
    }
}

fn wish_of(prefix: &str, entry: &Entry) -> Option<Wish> {
    let group = name_under(prefix, &entry.key)?;
    match serde_json::from_slice::<Wish>(&entry.value) {
        Ok(wish) if wish.group == group => Some(wish),
        _ => {
            warn!(key = %entry.key, "skipping a wish that is not Steward's JSON");
            None
        }
    }
}

fn owner_node(entry: &Entry) -> Option<String> {
    serde_json::from_slice::<OwnerValue>(&entry.value).ok().map(|value| value.node)
}

fn owner_record(prefix: &str, entry: &Entry) -> Option<OwnerRecord> {
    let group = name_under(prefix, &entry.key)?;
    let Some(node) = owner_node(entry) else {
        warn!(key = %entry.key, "skipping an owner key that is not Steward's JSON");
        return None;
    };
    Some(OwnerRecord {
        group: group.to_string(),
        node,
        token: FencingToken::from_create_revision(entry.create_revision)?,
        lease: LeaseId(entry.lease),
    })
}

/// Applies one change to the known owners and reports what it changed;
/// false once nobody listens.
fn track_owners(
    prefix: &str,
    owners: &mut BTreeMap<String, OwnerRecord>,
    change: Change,
    sender: &mpsc::UnboundedSender<OwnerChanged>,
) -> bool {
    let mut changes = Vec::new();
    match change {
        Change::Put(entry) => {
            if let Some(record) = owner_record(prefix, &entry)
                && owners.get(&record.group) != Some(&record)
            {
                changes.push(OwnerChanged {
                    group: record.group.clone(),
                    owner: Some(record.node.clone()),
                    token: record.token,
                });
                owners.insert(record.group.clone(), record);
            }
        }
        Change::Delete { key, previous } => {
            if let Some(group) = name_under(prefix, &key) {
                let ended = owners.remove(group).map(|record| record.token).or_else(|| {
                    previous.and_then(|previous| FencingToken::from_create_revision(previous.create_revision))
                });
                match ended {
                    Some(token) => changes.push(OwnerChanged { group: group.to_string(), owner: None, token }),
                    None => debug!(group, "an owner key this watch never saw was deleted"),
                }
            }
        }
        Change::Resync(entries) => {
            let now: BTreeMap<String, OwnerRecord> = entries
                .iter()
                .filter_map(|entry| owner_record(prefix, entry))
                .map(|record| (record.group.clone(), record))
                .collect();
            for (group, record) in owners.iter() {
                if now.get(group) != Some(record) {
                    changes.push(OwnerChanged { group: group.clone(), owner: None, token: record.token });
                }
            }
            for (group, record) in &now {
                if owners.get(group) != Some(record) {
                    changes.push(OwnerChanged {
                        group: group.clone(),
                        owner: Some(record.node.clone()),
                        token: record.token,
                    });
                }
            }
            *owners = now;
        }
    }
    changes.into_iter().all(|change| sender.send(change).is_ok())
}
