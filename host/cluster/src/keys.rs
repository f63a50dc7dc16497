//! The etcd key layout of one cluster, and the names allowed in it.
//!
//! Names become path segments, so a `/` in a node or group name would let
//! one name's keys fall under another's prefix; they are checked once,
//! where a name enters the crate.

use crate::{Error, Result};

/// A name longer than this is refused: etcd keys are small by design, and
/// no operator types a node or group name this long.
const MAX_NAME_BYTES: usize = 128;

/// Keys of one cluster, under `/steward/<cluster>/`.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    root: String,
}

impl Keys {
    pub(crate) fn new(cluster: &str) -> Result<Keys> {
        check_name("cluster", cluster)?;
        Ok(Keys { root: format!("/steward/{cluster}/") })
    }

    pub(crate) fn nodes_prefix(&self) -> String {
        format!("{}nodes/", self.root)
    }

    pub(crate) fn node(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.root)
    }

    pub(crate) fn owners_prefix(&self) -> String {
        format!("{}owners/", self.root)
    }

    pub(crate) fn owner(&self, group: &str) -> String {
        format!("{}owners/{group}", self.root)
    }

    pub(crate) fn wishes_prefix(&self) -> String {
        format!("{}wishes/", self.root)
    }

    pub(crate) fn wish(&self, group: &str) -> String {
        format!("{}wishes/{group}", self.root)
    }

    pub(crate) fn shared_config(&self) -> String {
        format!("{}config", self.root)
    }

    pub(crate) fn group_data(&self, group: &str, key: &str) -> String {
        format!("{}groups/{group}/{key}", self.root)
    }
}

/// Checks a cluster, node or group name before it becomes part of a key.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_BYTES {
        "it is longer than 128 bytes"
    } else if name.contains('/') {
        "it contains `/`, which separates key segments"
    } else if name.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName { what, name: name.to_string(), reason })
}

/// The name after `prefix` in `key`, if `key` is directly under it.
pub(crate) fn name_under<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(prefix).filter(|name| !name.is_empty() && !name.contains('/'))
}
