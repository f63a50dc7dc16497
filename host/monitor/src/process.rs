//! The `process` capability: spawning and supervising programs for a guest.
//!
//! Denied by default: a guest may spawn only a program whose absolute path
//! its grant names, exactly. Every process it spawns starts in a process
//! group of its own and is tracked here; signals go to the whole group, and
//! when the table is dropped (the instance was terminated, failed or
//! dropped) every tracked group is killed and reaped, however wedged the
//! guest is.

use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal as OsSignal, kill_process_group};

use crate::bindings::steward::resource::process;
use crate::bindings::{ProcessError, ProcessStatus, Signal, SpawnRequest};
use crate::events::EventKind;
use crate::sandbox::{DeadlineInImport, SandboxState};

/// Processes one instance may track at once: a resource supervises a
/// handful; a guest spawning in a loop is stopped here.
pub const MAX_TRACKED_PROCESSES: usize = 64;

/// How often `wait` looks at a process while it waits.
const WAIT_POLL: Duration = Duration::from_millis(5);

/// A process as the node records it, to find it again after a restart: the
/// start time (in clock ticks since boot, from `/proc/PID/stat`) tells a
/// live process from a later one that reused its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrackedProcess {
    /// The process id.
    pub pid: u32,
    /// Its start time, in clock ticks since boot.
    pub start_time: u64,
}

/// The programs a resource may spawn and the processes it tracks: children
/// it spawned, and processes adopted from an earlier run of the node.
#[derive(Debug, Default)]
pub struct ProcessTable {
    allowed_programs: Vec<PathBuf>,
    children: BTreeMap<u32, (Child, u64)>,
    adopted: BTreeMap<u32, u64>,
    denials: Vec<String>,
}

impl ProcessTable {
    /// A table that allows exactly `allowed_programs` and tracks the
    /// processes of `adopt` that still run (same pid and start time).
    pub fn new(allowed_programs: Vec<PathBuf>, adopt: &[TrackedProcess]) -> Self {
        let adopted = adopt
            .iter()
            .filter(|process| start_time(process.pid) == Some(process.start_time))
            .map(|process| (process.pid, process.start_time))
            .collect();
        ProcessTable { allowed_programs, children: BTreeMap::new(), adopted, denials: Vec::new() }
    }

    /// The pids tracked now.
    pub fn pids(&self) -> Vec<u32> {
        self.children.keys().chain(self.adopted.keys()).copied().collect()
    }

    /// The processes tracked now that still run, as the node records them.
    pub fn running(&mut self) -> Vec<TrackedProcess> {
        self.reap_ended();
        let children = self.children.iter().map(|(pid, (_, start))| (*pid, *start));
        children
            .chain(self.adopted.iter().map(|(pid, start)| (*pid, *start)))
            .filter(|(pid, start)| start_time(*pid) == Some(*start))
            .map(|(pid, start_time)| TrackedProcess { pid, start_time })
            .collect()
    }

    /// Stops tracking every process without killing it: the node is
    /// stopping and was told to leave resources running.
    pub fn release_all(&mut self) {
        for (_, (child, _)) in std::mem::take(&mut self.children) {
            reap_when_done(child);
        }
        self.adopted.clear();
    }

    /// Denials recorded since the last call to this method.
    pub fn take_denials(&mut self) -> Vec<String> {
        std::mem::take(&mut self.denials)
    }

    /// Kills every tracked process group and reaps the children.
    pub fn kill_all(&mut self) {
        for (pid, (mut child, _)) in std::mem::take(&mut self.children) {
            kill_group(pid);
            // SIGKILL cannot be ignored, so this wait is short; it reaps the
            // child so no zombie is left behind.
            let _ = child.wait();
            tracing::debug!(pid, "killed tracked process");
        }
        for (pid, start) in std::mem::take(&mut self.adopted) {
            if start_time(pid) == Some(start) {
                kill_group(pid);
                tracing::debug!(pid, "killed adopted process");
            }
        }
    }

    fn spawn(&mut self, request: SpawnRequest) -> Result<u32, ProcessError> {
        let program = PathBuf::from(&request.program);
        if !self.allowed_programs.iter().any(|allowed| allowed == &program) {
            let denial = format!("process: spawn of `{}` is not in the resource's grant", request.program);
            self.denials.push(denial.clone());
            return Err(ProcessError::Denied(format!(
                "{denial}; add it to the resource's `programs` grant to allow it"
            )));
        }
        self.reap_ended();
        if self.children.len() >= MAX_TRACKED_PROCESSES {
            return Err(ProcessError::Os(format!(
                "this instance already tracks {MAX_TRACKED_PROCESSES} processes; stop some first"
            )));
        }
        let mut command = Command::new(&program);
        command
            .args(&request.args)
            .env_clear()
            .envs(request.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some(dir) = &request.working_dir {
            command.current_dir(dir);
        }
        let child = command.spawn().map_err(|e| ProcessError::SpawnFailed(format!("{}: {e}", request.program)))?;
        let pid = child.id();
        self.children.insert(pid, (child, start_time(pid).unwrap_or(0)));
        Ok(pid)
    }

    fn status(&mut self, pid: u32) -> Result<ProcessStatus, ProcessError> {
        if let Some(start) = self.adopted.get(&pid) {
            // Not our child: the kernel's init reaps it, so a vanished or
            // reused pid means it ended, with a status we cannot know.
            return Ok(if start_time(pid) == Some(*start) { proc_state(pid) } else { ProcessStatus::Gone });
        }
        let (child, _) = self.children.get_mut(&pid).ok_or(ProcessError::UnknownProcess(pid))?;
        match child.try_wait() {
            Ok(Some(status)) => Ok(ended(status)),
            Ok(None) => Ok(proc_state(pid)),
            Err(e) => Err(ProcessError::Os(format!("pid {pid}: {e}"))),
        }
    }

    fn signal(&mut self, pid: u32, signal: Signal) -> Result<(), ProcessError> {
        if !self.children.contains_key(&pid) && !self.adopted.contains_key(&pid) {
            return Err(ProcessError::UnknownProcess(pid));
        }
        let group = Pid::from_raw(pid as i32).ok_or(ProcessError::UnknownProcess(pid))?;
        match kill_process_group(group, os_signal(signal)) {
            Ok(()) => Ok(()),
            // The group is gone: the process ended and is waiting to be reaped.
            Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(ProcessError::Os(format!("signal to pid {pid}: {e}"))),
        }
    }

    /// Forgets processes that ended and whose status was already seen.
    fn reap_ended(&mut self) {
        self.children.retain(|_, (child, _)| !matches!(child.try_wait(), Ok(Some(_))));
        self.adopted.retain(|pid, start| start_time(*pid) == Some(*start));
    }
}

impl Drop for ProcessTable {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A monotonic clock shared by every instance of this process.
pub fn monotonic_now() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

impl process::Host for SandboxState {
    fn spawn(&mut self, request: SpawnRequest) -> wasmtime::Result<Result<u32, ProcessError>> {
        let program = request.program.clone();
        let outcome = self.processes.spawn(request);
        match &outcome {
            Ok(pid) => {
                tracing::info!(resource = %self.identity.resource_name, pid, %program, "spawned process");
                self.emit(EventKind::ProcessSpawned { pid: *pid, program });
            }
            Err(ProcessError::Denied(reason)) => {
                tracing::warn!(resource = %self.identity.resource_name, %program, "capability denied: {reason}");
                self.emit(EventKind::CapabilityDenied { detail: reason.clone() });
            }
            Err(error) => tracing::warn!(resource = %self.identity.resource_name, %program, ?error, "spawn failed"),
        }
        Ok(outcome)
    }

    fn status(&mut self, pid: u32) -> wasmtime::Result<Result<ProcessStatus, ProcessError>> {
        Ok(self.processes.status(pid))
    }

    fn send_signal(&mut self, pid: u32, signal: Signal) -> wasmtime::Result<Result<(), ProcessError>> {
        Ok(self.processes.signal(pid, signal))
    }

    async fn wait(
        &mut self,
        pid: u32,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Option<ProcessStatus>, ProcessError>> {
        let (wait_for, cut) = self.clock.bounded(Duration::from_millis(u64::from(timeout_ms)));
        let until = Instant::now() + wait_for;
        loop {
            match self.processes.status(pid) {
                Ok(status @ (ProcessStatus::Exited(_) | ProcessStatus::Killed(_) | ProcessStatus::Gone)) => {
                    return Ok(Ok(Some(status)));
                }
                Ok(_) => {}
                Err(error) => return Ok(Err(error)),
            }
            let now = Instant::now();
            if now >= until {
                break;
            }
            tokio::time::sleep(WAIT_POLL.min(until - now)).await;
        }
        if cut {
            self.clock.deadline_hit = true;
            return Err(DeadlineInImport.into());
        }
        Ok(Ok(None))
    }

    fn tracked(&mut self) -> wasmtime::Result<Vec<u32>> {
        Ok(self.processes.pids())
    }
}

fn ended(status: ExitStatus) -> ProcessStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ProcessStatus::Exited(code),
        (None, Some(signal)) => ProcessStatus::Killed(signal),
        (None, None) => ProcessStatus::Exited(-1),
    }
}

fn kill_group(pid: u32) {
    if let Some(group) = Pid::from_raw(pid as i32) {
        let _ = kill_process_group(group, OsSignal::KILL);
    }
}

/// The start time of `pid` (field 22 of `/proc/PID/stat`), if it exists and
/// is not a zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = stat_after_command(pid)?;
    let mut fields = stat.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Fields after the command: state is 3rd overall, start time the 22nd.
    fields.nth(22 - 4)?.parse().ok()
}

/// Reads the process state letter from `/proc/PID/stat`.
fn proc_state(pid: u32) -> ProcessStatus {
    let state = stat_after_command(pid).and_then(|stat| stat.trim_start().chars().next());
    match state {
        Some('Z') => ProcessStatus::Zombie,
        Some('T' | 't') => ProcessStatus::Stopped,
        _ => ProcessStatus::Running,
    }
}

/// `/proc/PID/stat` after the parenthesised command name (which may itself
/// contain spaces or parentheses), starting with the state field.
fn stat_after_command(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rfind(')').map(|end| stat[end + 1..].to_string())
}

fn os_signal(signal: Signal) -> OsSignal {
    match signal {
        Signal::Terminate => OsSignal::TERM,
        Signal::Kill => OsSignal::KILL,
        Signal::Interrupt => OsSignal::INT,
        Signal::Hangup => OsSignal::HUP,
        Signal::User1 => OsSignal::USR1,
        Signal::User2 => OsSignal::USR2,
    }
}

/// Children released while this process keeps running (a plugin version
/// switch inside a worker: the new instance adopts them by pid). Someone
/// must still wait for each when it ends, or it stays a zombie of this
/// process: one thread does, for all of them.
fn reap_when_done(child: Child) {
    static RELEASED: OnceLock<std::sync::Mutex<Vec<Child>>> = OnceLock::new();
    const REAP_EVERY: Duration = Duration::from_millis(500);
    let released = RELEASED.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("steward-reaper".into()).spawn(|| {
            loop {
                std::thread::sleep(REAP_EVERY);
                if let Some(released) = RELEASED.get()
                    && let Ok(mut children) = released.lock()
                {
                    children.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
                }
            }
        });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the reaper thread; released children that end stay zombies");
        }
        std::sync::Mutex::new(Vec::new())
    });
    if let Ok(mut children) = released.lock() {
        children.push(child);
    }
}
