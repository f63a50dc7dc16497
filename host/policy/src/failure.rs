//! What went wrong with a resource, typed from where it happens (a call or
//! probe in a monitor worker, a plugin's `signal-failure`, a lost worker)
//! to where it is decided (the policy engine) and shown (the event stream,
//! `steward status`, `/metrics`). Text is made of it only at the edge that
//! prints it; a deadline overrun and a trap stay two different things all
//! the way.
//!
//! Plain data: no wasmtime, no I/O, so the policy engine can take it.

use serde::{Deserialize, Serialize};

/// The kind of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The guest trapped (a panic, `unreachable`, a stack overflow).
    Trap,
    /// A call ran past its deadline and was stopped.
    Deadline,
    /// The guest tried to grow its memory past its cap.
    MemoryLimit,
    /// The guest asked for something its grant does not allow, and failed.
    CapabilityDenied,
    /// The guest returned more data than the host accepts.
    OversizedReturn,
    /// The plugin returned an error of its own.
    #[serde(rename = "plugin-error")]
    Plugin,
    /// A sandbox could not be created.
    Instantiate,
    /// The instance had been discarded after an earlier failure.
    NoInstance,
    /// The monitor worker hosting the instance was lost.
    WorkerLost,
    /// The plugin's own answer: `is-alive` said it is not alive (after a
    /// false `looks-alive`, or on its own schedule).
    Unhealthy,
    /// The plugin called `signal-failure`.
    Signalled,
    /// The resource's plugin file was removed, so nothing new starts on it.
    PluginRemoved,
}

impl FailureKind {
    /// Every kind, in the order of the enum (for counters indexed by kind).
    pub const ALL: [FailureKind; 12] = [
        FailureKind::Trap,
        FailureKind::Deadline,
        FailureKind::MemoryLimit,
        FailureKind::CapabilityDenied,
        FailureKind::OversizedReturn,
        FailureKind::Plugin,
        FailureKind::Instantiate,
        FailureKind::NoInstance,
        FailureKind::WorkerLost,
        FailureKind::Unhealthy,
        FailureKind::Signalled,
        FailureKind::PluginRemoved,
    ];

    /// Its name as the API, the CLI and `/metrics` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Deadline => "deadline",
            FailureKind::MemoryLimit => "memory-limit",
            FailureKind::CapabilityDenied => "capability-denied",
            FailureKind::OversizedReturn => "oversized-return",
            FailureKind::Plugin => "plugin-error",
            FailureKind::Instantiate => "instantiate",
            FailureKind::NoInstance => "no-instance",
            FailureKind::WorkerLost => "worker-lost",
            FailureKind::Unhealthy => "unhealthy",
            FailureKind::Signalled => "signalled",
            FailureKind::PluginRemoved => "plugin-removed",
        }
    }

    /// Its position in [`FailureKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure: its kind, and what happened in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What kind of failure it is.
    pub kind: FailureKind,
    /// What happened (much of it may be the plugin's own text).
    pub reason: String,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, reason: impl Into<String>) -> Failure {
        Failure { kind, reason: reason.into() }
    }

    /// The same failure, its reason prefixed with what the host was doing.
    pub fn context(self, doing: &str) -> Failure {
        Failure { kind: self.kind, reason: format!("{doing}: {}", self.reason) }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_at_its_index_and_named_as_serde_names_it() {
        for (index, kind) in FailureKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), index);
            let json = serde_json::to_string(kind).expect("serializes");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }
}
