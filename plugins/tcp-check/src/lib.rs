//! `tcp-check`: a resource whose health is "this address accepts TCP
//! connections". It starts nothing itself; it watches a service something
//! else runs (another resource of the group, or a peer outside Steward), so a
//! group can depend on that service being reachable.
//!
//! It shows the `network` capability at its simplest: the resource's grant
//! must name the exact `IP:PORT` it connects to, and the guest cannot look
//! names up, so the address is an IP address and a port.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Deserialize;
use steward_sdk::{CallContext, Capability, CheckLevel, Error, Health, Instance, Problem};
use steward_sdk::{PropertyKind, ResourceType, TypeInfo, export_plugin};

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Properties {
    address: String,
    connect_timeout_ms: i64,
}

struct TcpCheck {
    address: SocketAddr,
    connect_timeout: Duration,
    online: bool,
}

impl ResourceType for TcpCheck {
    type Properties = Properties;
    type Instance = TcpCheck;

    fn metadata() -> TypeInfo {
        let about = "Healthy while an address accepts TCP connections.";
        TypeInfo::new("tcp-check", env!("CARGO_PKG_VERSION"), about)
            .required("address", PropertyKind::Text, "The IP:PORT to connect to; the network grant must name it.")
            .optional("connect-timeout-ms", PropertyKind::Integer, "1000", "How long one connect may take, in ms.")
            .needs(Capability::Network)
            .build()
    }

    fn validate(properties: &Properties) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        if let Err(problem) = parse_address(&properties.address) {
            problems.push(problem);
        }
        // Zero is refused by `connect_timeout` itself; catch it here, where
        // the operator sees which property to change.
        if properties.connect_timeout_ms <= 0 {
            problems.push(Problem::new("connect-timeout-ms", "must be one millisecond or more"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    fn open(_name: &str, properties: Properties) -> Result<TcpCheck, Error> {
        // validate has run, but open must not trust that: report, never unwrap.
        let address = parse_address(&properties.address)
            .map_err(|problem| Error::InvalidConfig(format!("address: {}", problem.message)))?;
        let connect_timeout = Duration::from_millis(u64::try_from(properties.connect_timeout_ms).unwrap_or(1).max(1));
        Ok(TcpCheck { address, connect_timeout, online: false })
    }
}

impl TcpCheck {
    /// One connection attempt, closed at once: the check is only whether
    /// the address accepts it.
    fn connect(&self) -> std::io::Result<()> {
        let stream = TcpStream::connect_timeout(&self.address, self.connect_timeout)?;
        // On wasm32-wasip2 a refused connect can come back as success from
        // `connect_timeout` (the pending error is never read back); asking
        // for the peer tells a real connection from a refused one.
        stream.peer_addr().map(drop)
    }
}

impl Instance for TcpCheck {
    fn online(&mut self, _context: &CallContext) -> Result<(), Error> {
        let address = self.address;
        match self.connect() {
            Ok(()) => {
                self.online = true;
                Ok(())
            }
            Err(error) if error.kind() == ErrorKind::PermissionDenied => Err(Error::InvalidConfig(format!(
                "cannot connect to {address}: {error}; the address must be in the resource's network grant"
            ))),
            Err(error) => Err(Error::Transient(format!(
                "{address} is not accepting connections: {error}; it may still be starting"
            ))),
        }
    }

    fn offline(&mut self, _context: &CallContext) -> Result<(), Error> {
        // Nothing runs here; offline only stops vouching for the address.
        self.online = false;
        Ok(())
    }

    fn terminate(&mut self) {
        self.online = false;
    }

    fn looks_alive(&mut self) -> bool {
        // Offline must read as not alive even while the address still
        // accepts connections, so the check is never run then.
        self.online && self.connect().is_ok()
    }

    fn is_alive(&mut self, _level: CheckLevel) -> Health {
        if !self.online {
            return Health::dead("offline");
        }
        let address = self.address;
        match self.connect() {
            Ok(()) => Health::alive(format!("{address} accepts connections")),
            Err(error) => Health::dead(format!("{address}: {error}")),
        }
    }
}

/// Reads `IP:PORT` (`[IPv6]:PORT` for IPv6), or the problem to show.
fn parse_address(text: &str) -> Result<SocketAddr, Problem> {
    text.trim().parse::<SocketAddr>().map_err(|_| {
        let message = format!(
            "`{text}` is not an IP:PORT such as 127.0.0.1:8080 or [::1]:8080; host names are not resolved, \
             because the sandbox cannot look names up"
        );
        Problem::new("address", message)
    })
}

export_plugin!(TcpCheck);
