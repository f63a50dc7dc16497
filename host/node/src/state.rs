//! The node's state in an embedded store (redb) in its data directory: what
//! an operator wanted online, the processes each resource spawned, restart
//! history and the last transitions, and the fencing-token counter of a
//! node running alone. It is what lets a restarted daemon adopt running
//! resources instead of restarting them.
//!
//! Values are JSON, so the file stays readable with any redb tool and a
//! field can be added without a migration.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};

use steward_monitor::process::TrackedProcess;

use crate::error::Error;

/// Groups an operator (or the first start) wanted online: group -> bool.
const WANTED: TableDefinition<&str, &str> = TableDefinition::new("group_wanted_online");
/// Processes each resource spawned: resource -> [TrackedProcess].
const PROCESSES: TableDefinition<&str, &str> = TableDefinition::new("resource_processes");
/// Restarts and the last transition of each resource: resource -> ResourceRecord.
const RECORDS: TableDefinition<&str, &str> = TableDefinition::new("resource_records");
/// Counters of the node: name -> u64 (the last fencing token handed out).
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("node_counters");

/// The key of the fencing-token counter in [`COUNTERS`].
const FENCING_TOKEN: &str = "fencing_token";

/// What the node remembers of a resource besides its processes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ResourceRecord {
    /// Restarts over the resource's life on this node.
    pub restarts_total: u64,
    /// Failures over its life on this node.
    pub failures_total: u64,
    /// The last transition, as "from -> to: reason".
    pub last_transition: String,
    /// When it happened, in milliseconds since the Unix epoch.
    pub last_transition_unix_ms: u64,
}

/// The node's state store.
pub struct StateStore {
    database: Database,
    file: String,
}

impl StateStore {
    /// Opens (or creates) `steward.redb` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<StateStore, Error> {
        let path = data_dir.join("steward.redb");
        let file = path.display().to_string();
        let fail = |message: String| Error::State { file: file.clone(), message };
        std::fs::create_dir_all(data_dir).map_err(|e| fail(format!("cannot create the data directory: {e}")))?;
        let database = Database::create(&path).map_err(|e| fail(e.to_string()))?;
        let store = StateStore { database, file };
        // Create the tables once, so reads never meet a missing table.
        let write = store.database.begin_write().map_err(|e| store.error(e))?;
        for table in [WANTED, PROCESSES, RECORDS] {
            write.open_table(table).map_err(|e| store.error(e))?;
        }
        write.open_table(COUNTERS).map_err(|e| store.error(e))?;
        write.commit().map_err(|e| store.error(e))?;
        Ok(store)
    }

    /// Whether `group` was last wanted online; none if never recorded.
    pub fn group_wanted(&self, group: &str) -> Result<Option<bool>, Error> {
        self.get(WANTED, group)
    }

    /// Records whether `group` is wanted online.
    pub fn set_group_wanted(&self, group: &str, online: bool) -> Result<(), Error> {
        self.put(WANTED, group, &online)
    }

    /// Forgets a group the configuration no longer has, and what was
    /// remembered of its resources, in one commit: a group of that name
    /// added later starts afresh.
    pub fn forget_group(&self, group: &str, members: &[String]) -> Result<(), Error> {
        let write = self.database.begin_write().map_err(|e| self.error(e))?;
        {
            let mut wanted = write.open_table(WANTED).map_err(|e| self.error(e))?;
            wanted.remove(group).map_err(|e| self.error(e))?;
            for table in [PROCESSES, RECORDS] {
                let mut table = write.open_table(table).map_err(|e| self.error(e))?;
                for member in members {
                    table.remove(member.as_str()).map_err(|e| self.error(e))?;
                }
            }
        }
        write.commit().map_err(|e| self.error(e))
    }

    /// The processes `resource` spawned, as last recorded.
    pub fn processes(&self, resource: &str) -> Result<Vec<TrackedProcess>, Error> {
        Ok(self.get(PROCESSES, resource)?.unwrap_or_default())
    }

    /// Records the processes `resource` runs now.
    pub fn set_processes(&self, resource: &str, processes: &[TrackedProcess]) -> Result<(), Error> {
        self.put(PROCESSES, resource, &processes)
    }

    /// What is remembered of `resource`.
    pub fn record(&self, resource: &str) -> Result<ResourceRecord, Error> {
        Ok(self.get(RECORDS, resource)?.unwrap_or_default())
    }

    /// Replaces what is remembered of several resources, in one commit.
    pub fn set_records(&self, records: &[(&str, &ResourceRecord)]) -> Result<(), Error> {
        let write = self.database.begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = write.open_table(RECORDS).map_err(|e| self.error(e))?;
            for (resource, record) in records {
                let json = serde_json::to_string(record).map_err(|e| self.error(e))?;
                table.insert(*resource, json.as_str()).map_err(|e| self.error(e))?;
            }
        }
        write.commit().map_err(|e| self.error(e))
    }

    /// The next fencing token: one more than the last handed out, durable
    /// before it is returned, so a token is never handed out twice, not
    /// even across a crash and a restart.
    pub fn next_fencing_token(&self) -> Result<u64, Error> {
        let write = self.database.begin_write().map_err(|e| self.error(e))?;
        let token = {
            let mut table = write.open_table(COUNTERS).map_err(|e| self.error(e))?;
            let last = table.get(FENCING_TOKEN).map_err(|e| self.error(e))?.map_or(0, |value| value.value());
            let token = last + 1;
            table.insert(FENCING_TOKEN, token).map_err(|e| self.error(e))?;
            token
        };
        write.commit().map_err(|e| self.error(e))?;
        Ok(token)
    }

    fn get<T: DeserializeOwned>(&self, table: TableDefinition<&str, &str>, key: &str) -> Result<Option<T>, Error> {
        let read = self.database.begin_read().map_err(|e| self.error(e))?;
        let table = read.open_table(table).map_err(|e| self.error(e))?;
        let Some(value) = table.get(key).map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        serde_json::from_str(value.value()).map(Some).map_err(|e| self.error(format!("key `{key}`: {e}")))
    }

    fn put<T: Serialize + ?Sized>(
        &self,
        table: TableDefinition<&str, &str>,
        key: &str,
        value: &T,
    ) -> Result<(), Error> {
        let json = serde_json::to_string(value).map_err(|e| self.error(e))?;
        let write = self.database.begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = write.open_table(table).map_err(|e| self.error(e))?;
            table.insert(key, json.as_str()).map_err(|e| self.error(e))?;
        }
        write.commit().map_err(|e| self.error(e))
    }

    fn error(&self, error: impl std::fmt::Display) -> Error {
        Error::State { file: self.file.clone(), message: error.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = StateStore::open(dir.path()).expect("open");
            store.set_group_wanted("g", true).expect("write");
            store.set_processes("r", &[TrackedProcess { pid: 42, start_time: 7 }]).expect("write");
            let record = ResourceRecord { restarts_total: 3, ..ResourceRecord::default() };
            store.set_records(&[("r", &record), ("s", &ResourceRecord::default())]).expect("write");
        }
        let store = StateStore::open(dir.path()).expect("reopen");
        assert_eq!(store.group_wanted("g").expect("read"), Some(true));
        assert_eq!(store.group_wanted("other").expect("read"), None);
        assert_eq!(store.processes("r").expect("read"), vec![TrackedProcess { pid: 42, start_time: 7 }]);
        assert_eq!(store.record("r").expect("read").restarts_total, 3);
    }

    #[test]
    fn fencing_tokens_grow_across_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = StateStore::open(dir.path()).expect("open").next_fencing_token().expect("token");
        let store = StateStore::open(dir.path()).expect("reopen");
        let second = store.next_fencing_token().expect("token");
        let third = store.next_fencing_token().expect("token");
        assert!(first >= 1 && second > first && third > second, "{first} {second} {third}");
    }
}
