//! The call path every guest call takes, whoever makes it (the monitor's
//! instances, plugin loading's `metadata` and `validate`): the contract's
//! operations, how a call fails ([`CallError`], with its kind), and the
//! deadline ticket that starts a call's clock, stops it and classifies
//! what came back. Its own module, so that plugin loading and the monitor
//! share it without importing each other.

use std::time::{Duration, Instant};

use futures_util::FutureExt;
use wasmtime::Store;

use crate::bindings::PluginError;
use crate::runtime::{EpochAwake, one_line, wasm_backtrace};
use crate::sandbox::{DeadlineInImport, SandboxState};

/// How long after its deadline a call blocked in a host import is cancelled.
/// A computing guest is stopped by the epoch callback at the first tick past
/// the deadline; this slack lets that path win, so its reason is exact.
const DEADLINE_SLACK: Duration = Duration::from_millis(2);

/// The operations of the contract, for deadlines and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Operation {
    /// `metadata`
    Metadata,
    /// `validate`
    Validate,
    /// `instance.open`
    Open,
    /// `instance.online`
    Online,
    /// `instance.offline`
    Offline,
    /// `instance.terminate`
    Terminate,
    /// `instance.looks-alive`
    LooksAlive,
    /// `instance.is-alive`
    IsAlive,
    /// `instance.control`
    Control,
    /// `instance.notify`
    Notify,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Metadata => "metadata",
            Operation::Validate => "validate",
            Operation::Open => "open",
            Operation::Online => "online",
            Operation::Offline => "offline",
            Operation::Terminate => "terminate",
            Operation::LooksAlive => "looks-alive",
            Operation::IsAlive => "is-alive",
            Operation::Control => "control",
            Operation::Notify => "notify",
        })
    }
}

/// Why a call into a resource did not succeed.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CallError {
    /// The guest trapped (a panic, `unreachable`, a stack overflow).
    #[error("{operation} trapped: {message}")]
    Trap {
        /// The call.
        operation: Operation,
        /// The trap, and the tail of the guest's stderr when it wrote one.
        message: String,
    },
    /// The call ran past its deadline and was stopped.
    #[error("{operation} exceeded its deadline of {} ms and was stopped", limit.as_millis())]
    Deadline {
        /// The call.
        operation: Operation,
        /// The deadline it had.
        limit: Duration,
    },
    /// The guest tried to grow its memory past its cap.
    #[error("{operation} hit the memory limit of {} MiB", limit_bytes >> 20)]
    MemoryLimit {
        /// The call.
        operation: Operation,
        /// The cap.
        limit_bytes: usize,
    },
    /// The guest asked for something its grant does not allow, and failed.
    #[error("{operation} failed on a denied capability: {detail}")]
    CapabilityDenied {
        /// The call.
        operation: Operation,
        /// What was refused.
        detail: String,
    },
    /// The guest returned more data than the host accepts.
    #[error("{operation} returned a {what} of {bytes} bytes, over the limit of {limit}")]
    OversizedReturn {
        /// The call.
        operation: Operation,
        /// Which value.
        what: String,
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The plugin returned an error.
    #[error("{operation} failed: {}", describe_plugin_error(error))]
    Plugin {
        /// The call.
        operation: Operation,
        /// The plugin's error.
        error: PluginError,
    },
    /// A new sandbox could not be created (for example, the instance pool is full).
    #[error("cannot instantiate the plugin: {message}")]
    Instantiate {
        /// Why.
        message: String,
    },
    /// The instance was discarded after a failure and not reopened.
    #[error("no live instance; it was discarded after: {last}")]
    NoInstance {
        /// The failure that discarded it.
        last: String,
    },
    /// The monitor worker hosting the instance died or stopped answering
    /// before the call returned; the node re-creates its instances.
    #[error("the monitor worker was lost: {reason}")]
    WorkerLost {
        /// What happened to the worker.
        reason: String,
    },
}

pub use steward_policy::failure::{Failure, FailureKind};

impl CallError {
    /// The kind of failure.
    pub fn kind(&self) -> FailureKind {
        match self {
            CallError::Trap { .. } => FailureKind::Trap,
            CallError::Deadline { .. } => FailureKind::Deadline,
            CallError::MemoryLimit { .. } => FailureKind::MemoryLimit,
            CallError::CapabilityDenied { .. } => FailureKind::CapabilityDenied,
            CallError::OversizedReturn { .. } => FailureKind::OversizedReturn,
            CallError::Plugin { .. } => FailureKind::Plugin,
            CallError::Instantiate { .. } => FailureKind::Instantiate,
            CallError::NoInstance { .. } => FailureKind::NoInstance,
            CallError::WorkerLost { .. } => FailureKind::WorkerLost,
        }
    }

    /// The failure as the node and the policy engine keep it: its kind and
    /// this error's text.
    pub fn failure(&self) -> Failure {
        Failure::new(self.kind(), self.to_string())
    }

    /// Whether the sandbox itself failed, so its store must be discarded.
    pub fn discards_instance(&self) -> bool {
        matches!(
            self.kind(),
            FailureKind::Trap | FailureKind::Deadline | FailureKind::MemoryLimit | FailureKind::OversizedReturn
        )
    }
}

/// A plugin error as one line.
pub fn describe_plugin_error(error: &PluginError) -> String {
    match error {
        PluginError::InvalidConfig(text) => format!("invalid configuration: {text}"),
        PluginError::Transient(text) => format!("transient: {text}"),
        PluginError::Fatal(text) => format!("fatal: {text}"),
    }
}

/// Awaits a guest call, cancelling it [`DEADLINE_SLACK`] after `deadline`
/// (from [`begin_call`]); `None` when it was cancelled. The caller
/// classifies the outcome with [`finish_call`].
///
/// Most calls (every healthy probe) finish on their first poll, so the
/// timer is armed only for a call that suspends: arming one for each of
/// 10,000 probes a second cost more than the probes.
pub(crate) async fn timed<R>(
    deadline: Instant,
    call: impl std::future::Future<Output = wasmtime::Result<R>>,
) -> Option<wasmtime::Result<R>> {
    let mut call = std::pin::pin!(call);
    if let Some(done) = (&mut call).now_or_never() {
        return Some(done);
    }
    tokio::time::timeout_at((deadline + DEADLINE_SLACK).into(), call).await.ok()
}

/// A call under way: its deadline, for [`timed`], and the hold that keeps
/// the epoch advancing until the call is over (or dropped).
pub(crate) struct CallTicket {
    pub(crate) deadline: Instant,
    _awake: EpochAwake,
}

/// Starts the clock of a call that may run for `limit`.
pub(crate) fn begin_call(store: &mut Store<SandboxState>, limit: Duration) -> CallTicket {
    let awake = EpochAwake::hold();
    // The epoch moved on while the store was idle: without this the guest
    // would reach its first epoch check already past the deadline and
    // yield once on every call.
    store.set_epoch_deadline(1);
    let state = store.data_mut();
    let deadline = state.clock.begin(limit);
    state.limiter.hit = false;
    CallTicket { deadline, _awake: awake }
}

pub(crate) fn finish_call<R>(
    store: &mut Store<SandboxState>,
    operation: Operation,
    limit: Duration,
    raw: Option<wasmtime::Result<R>>,
) -> Result<R, CallError> {
    let state = store.data_mut();
    state.clock.end();
    match raw {
        None => Err(CallError::Deadline { operation, limit }),
        Some(Ok(value)) => Ok(value),
        Some(Err(error)) => Err(classify(state, operation, limit, &error)),
    }
}

fn classify(state: &SandboxState, operation: Operation, limit: Duration, error: &wasmtime::Error) -> CallError {
    if state.clock.deadline_hit || error.is::<DeadlineInImport>() {
        return CallError::Deadline { operation, limit };
    }
    if state.limiter.hit {
        return CallError::MemoryLimit { operation, limit_bytes: state.limiter.limit_bytes };
    }
    // The reason leads the text; the backtrace (function indexes, of use
    // to the plugin's author with its symbols, not to an operator) is kept
    // at debug level only.
    if let Some(backtrace) = wasm_backtrace(error) {
        tracing::debug!(%operation, %backtrace, "wasm backtrace of the failed call");
    }
    let trap = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => one_line(error),
    };
    let stderr = state.clock.started.map(|started| state.stderr.text_since(started)).unwrap_or_default();
    let message =
        if stderr.is_empty() { trap } else { format!("{trap}; guest stderr: {}", stderr.replace('\n', " | ")) };
    CallError::Trap { operation, message }
}
