//! `http-check`: a resource whose health is "this URL answers with the
//! expected status". Like `tcp-check` it starts nothing; it vouches for a
//! service something else runs, one level deeper: the service must not only
//! accept connections but answer an HTTP request as expected.
//!
//! Only `http://IP:PORT/PATH` works: the sandbox has no TLS and cannot look
//! names up, and the resource's network grant must name the `IP:PORT`. The
//! request is written by hand ([`http`]) since a status line is all it reads.

mod http;

use std::io::ErrorKind;
use std::time::Duration;

use serde::Deserialize;
use steward_sdk::{CallContext, Capability, CheckLevel, Error, Health, Instance, Problem};
use steward_sdk::{PropertyKind, ResourceType, TypeInfo, export_plugin, host};

use crate::http::Url;

/// How often online asks again while the service starts.
const STARTUP_RETRY: Duration = Duration::from_millis(50);

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Properties {
    url: String,
    expect_status: i64,
    timeout_ms: i64,
    startup_wait_ms: i64,
}

struct HttpCheck {
    url: Url,
    expect_status: u16,
    timeout: Duration,
    startup_wait: Duration,
    online: bool,
}

/// What one request found: the status matched, another status came back,
/// or no status was read at all.
enum Outcome {
    Expected,
    Unexpected(u16),
    Failed(std::io::Error),
}

impl ResourceType for HttpCheck {
    type Properties = Properties;
    type Instance = HttpCheck;

    fn metadata() -> TypeInfo {
        let about = "Healthy while a URL answers with the expected HTTP status.";
        TypeInfo::new("http-check", env!("CARGO_PKG_VERSION"), about)
            .required("url", PropertyKind::Text, "The http://IP:PORT/PATH to GET; the network grant must name IP:PORT.")
            .optional("expect-status", PropertyKind::Integer, "200", "The status code a healthy answer has.")
            .optional("timeout-ms", PropertyKind::Integer, "2000", "How long one request may take, in ms.")
            .optional("startup-wait-ms", PropertyKind::Integer, "5000", "How long online waits for the URL, in ms.")
            .needs(Capability::Network)
            .build()
    }

    fn validate(properties: &Properties) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        if let Err(message) = Url::parse(&properties.url) {
            problems.push(Problem::new("url", message));
        }
        if !(100..=599).contains(&properties.expect_status) {
            problems.push(Problem::new("expect-status", "must be an HTTP status code, from 100 to 599"));
        }
        if properties.startup_wait_ms < 0 {
            problems.push(Problem::new("startup-wait-ms", "must be zero or more milliseconds"));
        }
        if properties.timeout_ms <= 0 {
            problems.push(Problem::new("timeout-ms", "must be one millisecond or more"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    fn open(_name: &str, properties: Properties) -> Result<HttpCheck, Error> {
        // validate has run, but open must not trust that: report, never unwrap.
        let url = Url::parse(&properties.url).map_err(|message| Error::InvalidConfig(format!("url: {message}")))?;
        let expect_status = u16::try_from(properties.expect_status)
            .map_err(|_| Error::InvalidConfig("expect-status: must be an HTTP status code".to_string()))?;
        let timeout = Duration::from_millis(u64::try_from(properties.timeout_ms).unwrap_or(1).max(1));
        let startup_wait = Duration::from_millis(u64::try_from(properties.startup_wait_ms).unwrap_or(0));
        Ok(HttpCheck { url, expect_status, timeout, startup_wait, online: false })
    }
}

impl HttpCheck {
    fn check(&self) -> Outcome {
        match http::get_status(&self.url, self.timeout) {
            Ok(status) if status == self.expect_status => Outcome::Expected,
            Ok(status) => Outcome::Unexpected(status),
            Err(error) => Outcome::Failed(error),
        }
    }

    /// One line for operators saying what the request found.
    fn describe(&self, outcome: &Outcome) -> String {
        let (url, expected) = (&self.url, self.expect_status);
        match outcome {
            Outcome::Expected => format!("GET {url} answered {expected}"),
            Outcome::Unexpected(status) => format!("GET {url} answered {status}, expected {expected}"),
            Outcome::Failed(error) => format!("GET {url}: {error}"),
        }
    }
}

impl Instance for HttpCheck {
    /// Waits up to `startup-wait-ms` for the expected answer: the service it
    /// vouches for was usually started just before and may still be binding.
    fn online(&mut self, _context: &CallContext) -> Result<(), Error> {
        let started = host::monotonic_now_ns();
        loop {
            let outcome = self.check();
            let seen = self.describe(&outcome);
            match outcome {
                Outcome::Expected => {
                    self.online = true;
                    return Ok(());
                }
                Outcome::Failed(error) if error.kind() == ErrorKind::PermissionDenied => {
                    let address = self.url.address;
                    return Err(Error::InvalidConfig(format!(
                        "{seen}; {address} must be in the resource's network grant"
                    )));
                }
                _ if Duration::from_nanos(host::monotonic_now_ns() - started) >= self.startup_wait => {
                    return Err(Error::Transient(format!("{seen}; the service may still be starting")));
                }
                _ => {
                    host::report_progress(&seen);
                    host::sleep(STARTUP_RETRY);
                }
            }
        }
    }

    fn offline(&mut self, _context: &CallContext) -> Result<(), Error> {
        // Nothing runs here; offline only stops vouching for the URL.
        self.online = false;
        Ok(())
    }

    fn terminate(&mut self) {
        self.online = false;
    }

    fn looks_alive(&mut self) -> bool {
        // Offline must read as not alive even while the URL still answers,
        // so the request is never sent then.
        self.online && matches!(self.check(), Outcome::Expected)
    }

    fn is_alive(&mut self, _level: CheckLevel) -> Health {
        if !self.online {
            return Health::dead("offline");
        }
        let outcome = self.check();
        let reason = self.describe(&outcome);
        if matches!(outcome, Outcome::Expected) { Health::alive(reason) } else { Health::dead(reason) }
    }
}

export_plugin!(HttpCheck);
