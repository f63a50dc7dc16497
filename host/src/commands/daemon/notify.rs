//! The service manager's notifications (systemd's `sd_notify(3)`) for a
//! daemon run by a `Type=notify` unit: `READY=1` once the API serves and
//! the groups are started, `STATUS=` lines as the node's phase changes,
//! `WATCHDOG=1` from the node loop at half of `WATCHDOG_USEC`, and
//! `STOPPING=1` when a stop begins. Without `NOTIFY_SOCKET` nothing is
//! sent, and nothing else changes.
//!
//! A notification is one datagram of `KEY=VALUE` lines, so this is std's
//! `UnixDatagram` rather than a crate: it reaches abstract socket names
//! (`@...`), reads `WATCHDOG_USEC` without `WATCHDOG_PID` as systemd's
//! own `sd_watchdog_enabled(3)` does, and never blocks the node loop for
//! long, which sends the heartbeats.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use steward_node::Supervisor;

/// How long one notification may wait for room in the manager's queue:
/// heartbeats are sent from the node loop, which must not stall behind a
/// manager that stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_millis(250);

/// The shortest heartbeat period: a tiny `WATCHDOG_USEC` must not make the
/// loop spin.
const SHORTEST_HEARTBEAT: Duration = Duration::from_millis(10);

/// The service manager that started the daemon, as `NOTIFY_SOCKET` names it.
pub struct ServiceManager {
    socket: UnixDatagram,
    address: SocketAddr,
}

impl ServiceManager {
    /// The manager `NOTIFY_SOCKET` names; `None` when it names none (the
    /// daemon was not started by one) or cannot be used (said in the log).
    pub fn from_env() -> Option<Arc<ServiceManager>> {
        let name = std::env::var_os("NOTIFY_SOCKET").filter(|name| !name.is_empty())?;
        match ServiceManager::connect(&name) {
            Ok(manager) => Some(Arc::new(manager)),
            Err(error) => {
                tracing::warn!(socket = ?name, %error, "NOTIFY_SOCKET is set but unusable; the service manager hears nothing");
                None
            }
        }
    }

    fn connect(name: &std::ffi::OsStr) -> std::io::Result<ServiceManager> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = name.as_bytes();
        // `@name` is a socket in Linux's abstract namespace.
        let address = match bytes.strip_prefix(b"@") {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name)?
            }
            None => SocketAddr::from_pathname(name)?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(ServiceManager { socket, address })
    }

    /// Sends `message` (`KEY=VALUE` lines); a failure is logged, never
    /// fatal: the daemon runs on whether its manager listens or not.
    pub fn notify(&self, message: &str) {
        if let Err(error) = self.socket.send_to_addr(message.as_bytes(), &self.address) {
            tracing::warn!(%error, message = %message.trim_end(), "cannot notify the service manager");
        }
    }

    /// `STATUS=`: one line for `systemctl status`.
    pub fn status(&self, status: &str) {
        // A line break would start another assignment.
        self.notify(&format!("STATUS={}", status.replace('\n', " ")));
    }
}

/// The watchdog period the service manager asks for (`WATCHDOG_USEC`),
/// unless `WATCHDOG_PID` names another process (a child inherited the
/// variables).
pub fn watchdog_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok().filter(|usec| *usec > 0)?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

/// The node's [`Supervisor`] under a service manager.
pub struct Notifier {
    manager: Arc<ServiceManager>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Notifies `manager`; with `watchdog`, the node loop beats at half of
    /// it, as `sd_watchdog_enabled(3)` recommends.
    pub fn new(manager: Arc<ServiceManager>, watchdog: Option<Duration>) -> Notifier {
        Notifier { manager, watchdog }
    }
}

impl Supervisor for Notifier {
    fn heartbeat_period(&self) -> Option<Duration> {
        self.watchdog.map(|watchdog| (watchdog / 2).max(SHORTEST_HEARTBEAT))
    }

    fn heartbeat(&mut self) {
        self.manager.notify("WATCHDOG=1");
    }

    fn status(&mut self, status: &str) {
        self.manager.status(status);
    }

    fn started(&mut self) {
        self.manager.notify("READY=1");
    }
}
