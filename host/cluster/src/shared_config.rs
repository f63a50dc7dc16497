//! The cluster's shared configuration: the groups and resources every node
//! runs, as an operator applied them (`steward apply FILE...`).
//!
//! They are kept as the files themselves, text and name, in one key,
//! `/steward/<cluster>/config`, written in one transaction: a node reads
//! exactly what was applied, with the names and line numbers its errors
//! quote, and `steward config show` prints it back. The key's modification
//! revision is the configuration's revision. An apply names the revision
//! it was checked against, and the write fails if another apply came
//! between ([`Error::ConfigChanged`]): a check is never applied to a
//! configuration it did not see.
//!
//! This crate does not parse the files: it stores and watches them.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span, warn};

use crate::keys::Keys;
use crate::membership::timed;
use crate::watch::{self as resilient, Change, Entry, StreamClients, Subscription, WatchSpec};
use crate::{Error, Result};

/// The most bytes an applied configuration may take: etcd refuses a
/// request over 1.5 MiB by default, and the key and JSON need room.
pub const MAX_SHARED_CONFIG_BYTES: usize = 1024 * 1024;

/// One applied file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFile {
    /// The name it was applied under (the operator's path).
    pub name: String,
    /// Its text.
    pub text: String,
}

/// What was applied: the files, by whom and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedConfig {
    /// The files, in the order they were given.
    pub files: Vec<SharedFile>,
    /// The node that checked and wrote them.
    pub applied_by: String,
    /// When, in Unix milliseconds.
    pub applied_at_ms: u64,
}

impl SharedConfig {
    /// Each file's name and text, as the configuration parser takes them.
    pub fn named_texts(&self) -> Vec<(String, String)> {
        self.files.iter().map(|file| (file.name.clone(), file.text.clone())).collect()
    }
}

/// An applied configuration and its revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The configuration.
    pub config: SharedConfig,
    /// The revision that wrote it.
    pub revision: i64,
}

/// Reads, writes and watches the shared configuration; cheap to clone.
#[derive(Clone)]
pub struct SharedConfigStore {
    pub(crate) client: Client,
    pub(crate) stream_clients: StreamClients,
    pub(crate) keys: Keys,
    pub(crate) node: String,
    pub(crate) request_timeout: Duration,
}

/// The shared configuration as it changes: first what is applied now (if
/// anything), then every later apply.
pub type SharedConfigWatch = Subscription<Applied>;

impl SharedConfigStore {
    /// What is applied now, if anything.
    pub async fn read(&self) -> Result<Option<Applied>> {
        let (entry, _) = self.get().await?;
        entry.as_ref().map(decode).transpose()
    }

    /// The key as it is now, and the revision of the read.
    async fn get(&self) -> Result<(Option<Entry>, i64)> {
        let key = self.keys.shared_config();
        let response = timed("shared configuration read", self.request_timeout, || {
            let mut kv = self.client.kv_client();
            let key = key.clone();
            async move { kv.get(key, None).await }
        })
        .await?;
        let revision = response.header().map(|header| header.revision()).unwrap_or_default();
        Ok((response.kvs().first().and_then(Entry::from_key_value), revision))
    }

    /// Writes `config` in one transaction, if the configuration is still
    /// at `checked_against` (the revision the files were checked with;
    /// `None`: nothing was applied). The same transaction forgets the
    /// operators' wishes for `removed_groups` (groups the last apply had
    /// and this one leaves out), so a group of that name applied later
    /// starts afresh rather than under an old `steward offline`. Returns
    /// the new revision.
    pub async fn apply(
        &self,
        config: &SharedConfig,
        checked_against: Option<i64>,
        removed_groups: &[String],
    ) -> Result<i64> {
        let key = self.keys.shared_config();
        let value = serde_json::to_vec(config)
            .map_err(|error| Error::CorruptValue { key: key.clone(), reason: error.to_string() })?;
        if value.len() > MAX_SHARED_CONFIG_BYTES {
            return Err(Error::ConfigTooLarge { bytes: value.len(), limit: MAX_SHARED_CONFIG_BYTES });
        }
        let guard = match checked_against {
            Some(revision) => Compare::mod_revision(key.clone(), CompareOp::Equal, revision),
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
        };
        let forget = removed_groups.iter().map(|group| TxnOp::delete(self.keys.wish(group), None));
        let write = Txn::new()
            .when([guard])
            .and_then(std::iter::once(TxnOp::put(key.clone(), value, None)).chain(forget).collect::<Vec<_>>());
        let response = timed("shared configuration write", self.request_timeout, || {
            let (mut kv, write) = (self.client.kv_client(), write.clone());
            async move { kv.txn(write).await }
        })
        .await?;
        if !response.succeeded() {
            return Err(Error::ConfigChanged { checked_against: checked_against.unwrap_or(0) });
        }
        let revision = response.header().map(|header| header.revision()).unwrap_or_default();
        info!(node = %self.node, revision, files = config.files.len(), "shared configuration applied");
        Ok(revision)
    }

    /// Follows the shared configuration: what is applied now first, then
    /// every change, across broken streams. A key that is not Steward's
    /// JSON is skipped with a warning (the last good one stays in force).
    pub async fn watch(&self) -> Result<SharedConfigWatch> {
        let (entry, revision) = self.get().await?;
        let (sender, changes) = mpsc::unbounded_channel();
        if let Some(entry) = entry {
            match decode(&entry) {
                Ok(applied) => {
                    let _ = sender.send(applied);
                }
                Err(error) => warn!(%error, "the applied configuration is unreadable; waiting for the next apply"),
            }
        }
        let spec = WatchSpec {
            key: self.keys.shared_config(),
            prefix: false,
            start_revision: revision + 1,
            request_timeout: self.request_timeout,
            label: "shared configuration",
        };
        let span = info_span!("shared_config_watch", node = %self.node);
        let task = tokio::spawn(
            resilient::run(self.stream_clients.clone(), spec, move |change| {
                let latest = match change {
                    Change::Put(entry) => Some(entry),
                    Change::Resync(entries) => entries.into_iter().next(),
                    // Nobody deletes it; if an operator does, what was
                    // applied stays in force until the next apply.
                    Change::Delete { .. } => None,
                };
                match latest.as_ref().map(decode) {
                    Some(Ok(applied)) => sender.send(applied).is_ok(),
                    Some(Err(error)) => {
                        warn!(%error, "the applied configuration is unreadable; waiting for the next apply");
                        true
                    }
                    None => !sender.is_closed(),
                }
            })
            .instrument(span),
        );
        Ok(Subscription::new(changes, task))
    }
}

fn decode(entry: &Entry) -> Result<Applied> {
    let config = serde_json::from_slice(&entry.value)
        .map_err(|error| Error::CorruptValue { key: entry.key.clone(), reason: error.to_string() })?;
    Ok(Applied { config, revision: entry.mod_revision })
}
