//! What the monitor tells its listeners: failures with their reasons,
//! failures a plugin signalled itself, progress, dropped logs, processes
//! spawned and capabilities refused. Sent on a broadcast channel, so a slow
//! listener loses old events rather than slowing the monitor.

use std::time::{Instant, SystemTime};

use crate::call::CallError;

/// How many events a listener may lag behind before it loses the oldest.
pub const EVENT_BACKLOG: usize = 4_096;

/// One event about one resource.
#[derive(Debug, Clone)]
pub struct MonitorEvent {
    /// The resource it is about.
    pub resource: String,
    /// When it happened (monotonic, for measuring latencies).
    pub at: Instant,
    /// When it happened (wall clock, for people).
    pub wall_time: SystemTime,
    /// What happened.
    pub kind: EventKind,
}

impl MonitorEvent {
    pub(crate) fn now(resource: &str, kind: EventKind) -> Self {
        MonitorEvent { resource: resource.to_string(), at: Instant::now(), wall_time: SystemTime::now(), kind }
    }
}

/// What happened.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum EventKind {
    /// A call failed; when the sandbox failed (trap, deadline, limit), its
    /// instance was discarded.
    Failed {
        /// Why.
        error: CallError,
    },
    /// The plugin reported its own failure through `signal-failure`.
    SignalledFailure {
        /// The plugin's reason.
        reason: String,
    },
    /// The plugin reported progress while pending.
    Progress {
        /// The plugin's message.
        message: String,
    },
    /// Log records were dropped by the rate limit.
    LogsDropped {
        /// How many since the last report.
        count: u64,
    },
    /// The plugin spawned a process.
    ProcessSpawned {
        /// Its pid.
        pid: u32,
        /// The program.
        program: String,
    },
    /// The plugin asked for something its grant does not allow.
    CapabilityDenied {
        /// What was refused.
        detail: String,
    },
}
