//! Supervising a program through the `process` capability.
//!
//! The resource's grant must name the program; the host tracks what it
//! spawned and kills it if the instance fails, so a plugin only has to stop
//! it gracefully when asked.

use core::time::Duration;

use crate::bindings::steward::resource::process as wit;

pub use wit::{ProcessError, ProcessStatus, Signal, SpawnRequest};

/// A program started by this instance.
#[derive(Debug)]
pub struct Supervised {
    pid: u32,
}

impl Supervised {
    /// Starts `program` with `args` and `env`.
    pub fn start(program: &str, args: &[String], env: &[(String, String)]) -> Result<Self, ProcessError> {
        let request =
            SpawnRequest { program: program.to_string(), args: args.to_vec(), env: env.to_vec(), working_dir: None };
        wit::spawn(&request).map(|pid| Supervised { pid })
    }

    /// Takes over a process this instance spawned earlier, by pid.
    pub fn from_pid(pid: u32) -> Self {
        Supervised { pid }
    }

    /// The processes the host tracks for this instance, including those
    /// adopted from an earlier run of the node; call it in `open` to take
    /// over a program that outlived the node's daemon.
    pub fn tracked() -> Vec<Supervised> {
        wit::tracked().into_iter().map(Supervised::from_pid).collect()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process's status now.
    pub fn status(&self) -> Result<ProcessStatus, ProcessError> {
        wit::status(self.pid)
    }

    /// Whether the process exists and has not ended (stopped counts as existing).
    pub fn exists(&self) -> bool {
        matches!(self.status(), Ok(ProcessStatus::Running | ProcessStatus::Stopped))
    }

    /// Whether the process is running: not ended, not a zombie, not stopped.
    pub fn is_running(&self) -> bool {
        matches!(self.status(), Ok(ProcessStatus::Running))
    }

    /// Sends a signal to the process and its group.
    pub fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        wit::send_signal(self.pid, signal)
    }

    /// Waits up to `timeout` for the process to end; its final status, or
    /// none if it still runs. Never waits past the current call's deadline.
    pub fn wait(&self, timeout: Duration) -> Result<Option<ProcessStatus>, ProcessError> {
        wit::wait(self.pid, u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX))
    }

    /// Stops the process: SIGTERM, then SIGKILL if it has not ended within
    /// `grace`. Returns its final status.
    pub fn stop(&self, grace: Duration) -> Result<ProcessStatus, ProcessError> {
        if let Some(status) = self.ended()? {
            return Ok(status);
        }
        self.signal(Signal::Terminate)?;
        let grace_ms = u32::try_from(grace.as_millis()).unwrap_or(u32::MAX);
        if let Some(status) = wit::wait(self.pid, grace_ms)? {
            return Ok(status);
        }
        crate::warn!("pid {} ignored SIGTERM for {grace_ms} ms; sending SIGKILL", self.pid);
        self.signal(Signal::Kill)?;
        match wit::wait(self.pid, 5_000)? {
            Some(status) => Ok(status),
            None => Err(ProcessError::Os(format!("pid {} survived SIGKILL", self.pid))),
        }
    }

    fn ended(&self) -> Result<Option<ProcessStatus>, ProcessError> {
        match self.status()? {
            status @ (ProcessStatus::Exited(_) | ProcessStatus::Killed(_) | ProcessStatus::Gone) => Ok(Some(status)),
            _ => Ok(None),
        }
    }
}
