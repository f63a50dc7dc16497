//! The state one instance's `Store` carries, and the `host` interface the
//! guest imports.
//!
//! Everything a guest can reach lives here: its WASI context (only the
//! directories its grant preopens), the check on the symlinks it makes in
//! them, its process table (only the programs its grant names), its log
//! budget, the clock of the call in progress and its memory cap. Dropping
//! the state (when the monitor discards the store) kills every process the
//! instance spawned.

use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::steward::resource::{host, types};
use crate::bindings::{LogLevel, NodeIdentity};
use crate::events::{EventKind, MonitorEvent};
use crate::grants::{self, SymlinkGuard, SymlinkRefused};
use crate::guest_log::{GuestLog, StderrTail};
use crate::process::ProcessTable;

/// The most of a guest-chosen path quoted in a log line or an event: the
/// kernel's `PATH_MAX`, past which no path is valid anyway.
const MAX_QUOTED_PATH_BYTES: usize = 4096;

/// What a guest import does when it runs past the call's deadline: the call
/// is ended as timed out. A marker error so the monitor can tell it apart.
#[derive(Debug, thiserror::Error)]
#[error("the call's deadline passed inside a host import")]
pub struct DeadlineInImport;

/// The per-instance state inside a `Store`.
pub struct SandboxState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) symlinks: SymlinkGuard,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) processes: ProcessTable,
    pub(crate) log: GuestLog,
    pub(crate) stderr: StderrTail,
    pub(crate) clock: CallClock,
    pub(crate) identity: NodeIdentity,
    pub(crate) fencing_token: u64,
    pub(crate) events: broadcast::Sender<MonitorEvent>,
}

impl SandboxState {
    /// The state of a resource's sandbox: its grants prepared, its memory cap set.
    pub(crate) fn for_resource(
        spec: &crate::monitor::ResourceSpec,
        identity: NodeIdentity,
        events: broadcast::Sender<MonitorEvent>,
    ) -> crate::error::Result<Self> {
        let stderr = StderrTail::default();
        let wasi = grants::wasi_context(&spec.grants, &spec.name, &stderr)?;
        Ok(SandboxState {
            wasi,
            table: ResourceTable::new(),
            symlinks: grants::symlink_guard(&spec.grants),
            limiter: MemoryLimiter { limit_bytes: spec.memory_limit_bytes, hit: false },
            processes: grants::process_table(&spec.grants, &spec.adopt),
            log: GuestLog::default(),
            stderr,
            clock: CallClock::default(),
            identity,
            fencing_token: spec.fencing_token,
            events,
        })
    }

    /// A sandbox with no grants at all, for calls that serve no resource
    /// (`metadata`, `validate`) and for benchmarks; `label` names it in logs.
    pub fn ungranted(label: &str, memory_limit_bytes: usize) -> Self {
        let stderr = StderrTail::default();
        let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
        wasi.stderr(stderr.clone());
        let (events, _) = broadcast::channel(1);
        SandboxState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            symlinks: SymlinkGuard::default(),
            limiter: MemoryLimiter { limit_bytes: memory_limit_bytes, hit: false },
            processes: ProcessTable::default(),
            log: GuestLog::default(),
            stderr,
            clock: CallClock::default(),
            identity: NodeIdentity {
                node_name: String::new(),
                cluster_name: String::new(),
                resource_name: label.to_string(),
            },
            fencing_token: 0,
            events,
        }
    }

    /// Checks a symlink the guest asks to make through `wasi:filesystem`'s
    /// `symlink-at` on `descriptor`, before WASI makes it. A refusal is
    /// logged and sent as a denied capability; the guest gets an error.
    pub(crate) fn check_symlink(
        &self,
        descriptor: &Resource<Descriptor>,
        link: &str,
        target: &str,
    ) -> Result<(), SymlinkRefused> {
        // Anything but a directory (a file, a stale handle) is left to WASI,
        // which refuses it with the error the guest expects.
        let Ok(Descriptor::Dir(directory)) = self.table.get(descriptor) else { return Ok(()) };
        let refusal = match self.symlinks.check(&directory.dir, link, target) {
            Ok(()) => return Ok(()),
            Err(refusal) => refusal,
        };
        if let SymlinkRefused::Escapes(reason) = &refusal {
            // Both paths are the guest's: quoted with control characters
            // escaped, and cut, before they reach a log line.
            let (link, target) = (quoted_path(link), quoted_path(target));
            tracing::warn!(
                resource = %self.identity.resource_name,
                %link,
                %target,
                %reason,
                "refused a symlink out of the granted directory"
            );
            let detail = format!("filesystem: symlink {link} -> {target} refused: {reason}");
            self.emit(EventKind::CapabilityDenied { detail });
        }
        Err(refusal)
    }

    pub(crate) fn emit(&self, kind: EventKind) {
        // No subscriber is not an error: events are for whoever listens.
        let _ = self.events.send(MonitorEvent::now(&self.identity.resource_name, kind));
    }
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A guest-chosen path for a log line: in quotes, control characters
/// escaped, at most [`MAX_QUOTED_PATH_BYTES`] of it.
fn quoted_path(path: &str) -> String {
    let mut end = path.len().min(MAX_QUOTED_PATH_BYTES);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    let (cut, ellipsis) = (&path[..end], if end < path.len() { "..." } else { "" });
    format!("\"{}\"{ellipsis}", cut.escape_debug())
}

/// The deadline of the call in progress.
#[derive(Debug, Default)]
pub struct CallClock {
    deadline: Option<Instant>,
    /// When the call in progress (or the last one) began.
    pub(crate) started: Option<Instant>,
    /// Set when the deadline ended the call (epoch callback or an import).
    pub(crate) deadline_hit: bool,
}

impl CallClock {
    pub(crate) fn begin(&mut self, timeout: Duration) -> Instant {
        let started = Instant::now();
        let deadline = started + timeout;
        self.started = Some(started);
        self.deadline = Some(deadline);
        self.deadline_hit = false;
        deadline
    }

    pub(crate) fn end(&mut self) {
        self.deadline = None;
    }

    pub(crate) fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// How long an import may block: `wanted`, cut to the call's deadline.
    /// Returns whether the cut applied.
    pub(crate) fn bounded(&self, wanted: Duration) -> (Duration, bool) {
        match self.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if wanted >= left { (left, true) } else { (wanted, false) }
            }
            None => (wanted, false),
        }
    }
}

/// The memory cap of one instance; remembers whether the guest hit it, so a
/// trap that follows is reported as the memory limit, not a bare trap.
#[derive(Debug)]
pub struct MemoryLimiter {
    pub(crate) limit_bytes: usize,
    pub(crate) hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            self.hit = true;
            tracing::warn!(current, desired, limit = self.limit_bytes, "guest memory growth refused at its cap");
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Table entries a guest may grow to: far above what real plugins use
/// (hundreds), far below what would cost the host memory.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl types::Host for SandboxState {}

impl host::Host for SandboxState {
    fn log(&mut self, level: LogLevel, message: String, fields: Vec<(String, String)>) -> wasmtime::Result<()> {
        if let Some(dropped) = self.log.record(&self.identity.resource_name, level, &message, &fields) {
            self.emit(EventKind::LogsDropped { count: dropped });
        }
        Ok(())
    }

    fn signal_failure(&mut self, reason: String) -> wasmtime::Result<()> {
        let reason = crate::guest_log::truncate(reason, crate::guest_log::MAX_LOG_MESSAGE_BYTES);
        tracing::warn!(resource = %self.identity.resource_name, %reason, "plugin signalled failure");
        self.emit(EventKind::SignalledFailure { reason });
        Ok(())
    }

    fn report_progress(&mut self, message: String) -> wasmtime::Result<()> {
        let message = crate::guest_log::truncate(message, crate::guest_log::MAX_LOG_MESSAGE_BYTES);
        tracing::info!(resource = %self.identity.resource_name, %message, "pending progress");
        self.emit(EventKind::Progress { message });
        Ok(())
    }

    fn node_info(&mut self) -> wasmtime::Result<NodeIdentity> {
        Ok(self.identity.clone())
    }

    fn fencing_token(&mut self) -> wasmtime::Result<u64> {
        Ok(self.fencing_token)
    }

    fn monotonic_now_ns(&mut self) -> wasmtime::Result<u64> {
        Ok(crate::process::monotonic_now().as_nanos() as u64)
    }

    async fn sleep_ms(&mut self, ms: u32) -> wasmtime::Result<()> {
        let (sleep_for, cut) = self.clock.bounded(Duration::from_millis(u64::from(ms)));
        tokio::time::sleep(sleep_for).await;
        if cut {
            self.clock.deadline_hit = true;
            return Err(DeadlineInImport.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_paths_escape_control_characters_and_are_cut() {
        assert_eq!(quoted_path("../\u{1b}[31mred\nline"), "\"../\\u{1b}[31mred\\nline\"");
        let long = "a".repeat(MAX_QUOTED_PATH_BYTES + 10);
        assert_eq!(quoted_path(&long).len(), MAX_QUOTED_PATH_BYTES + 5);
    }
}
