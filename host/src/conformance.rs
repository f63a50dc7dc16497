//! The life-cycle check a plugin must pass: what `steward plugin check` runs
//! and what the first-party plugins' tests run, so that authors and Steward
//! hold plugins to the same rules.
//!
//! Steps, in order: validate, open, online, looks-alive (must be true),
//! is-alive (must be alive), offline, looks-alive (must now be false),
//! terminate. The run stops at the first failing step; the instance is
//! always closed at the end, killing anything it spawned.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bindings::{CallContext, CheckLevel};
use crate::monitor::{Monitor, ResourceSpec};
use crate::plugin::Plugin;

/// The resource name used for the checked instance.
pub const CHECK_RESOURCE_NAME: &str = "plugin-check";

/// One step of the check.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The step's name (an operation of the contract).
    pub step: &'static str,
    /// How long it took.
    pub elapsed: Duration,
    /// Whether it passed.
    pub passed: bool,
    /// What it returned, or what the author should change.
    pub detail: String,
}

/// The whole check.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Each step run, in order.
    pub steps: Vec<StepReport>,
}

impl CheckReport {
    /// Whether every step passed.
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|step| step.passed)
    }

    /// The first failing step.
    pub fn first_failure(&self) -> Option<&StepReport> {
        self.steps.iter().find(|step| !step.passed)
    }

    fn record(&mut self, step: &'static str, started: Instant, outcome: Result<String, String>) -> bool {
        let passed = outcome.is_ok();
        let detail = outcome.unwrap_or_else(|failure| failure);
        self.steps.push(StepReport { step, elapsed: started.elapsed(), passed, detail });
        passed
    }
}

/// Runs `plugin` through its life cycle as resource `spec`.
pub async fn run(plugin: Arc<Plugin>, spec: ResourceSpec) -> CheckReport {
    let mut report = CheckReport::default();
    let started = Instant::now();
    let validated = plugin.validate(&spec.name, &spec.properties).await.map(|()| "ok".to_string());
    if !report.record("validate", started, validated.map_err(|e| e.to_string())) {
        return report;
    }
    let monitor = Monitor::new("plugin-check");
    let started = Instant::now();
    let handle = match monitor.open(plugin, spec).await {
        Ok(handle) => handle,
        Err(error) => {
            report.record("open", started, Err(error.to_string()));
            return report;
        }
    };
    report.record("open", started, Ok("ok".into()));
    let context = CallContext { node_name: "plugin-check".into(), fencing_token: 1, attempt: 1 };

    let steps_passed = async {
        let started = Instant::now();
        let online = handle.online(&context).await.map(|()| "ok".to_string()).map_err(|e| e.to_string());
        if !report.record("online", started, online) {
            return;
        }
        let started = Instant::now();
        let looks = expect_bool(handle.looks_alive().await, true, "looks-alive must be true once online succeeded");
        if !report.record("looks-alive", started, looks) {
            return;
        }
        let started = Instant::now();
        let health = match handle.is_alive(CheckLevel::Thorough).await {
            Ok(health) if health.alive => Ok(format!("alive: {}", health.reason)),
            Ok(health) => {
                Err(format!("not alive right after online ({}); online must return only once ready", health.reason))
            }
            Err(error) => Err(error.to_string()),
        };
        if !report.record("is-alive", started, health) {
            return;
        }
        let started = Instant::now();
        let offline = handle.offline(&context).await.map(|()| "ok".to_string()).map_err(|e| e.to_string());
        if !report.record("offline", started, offline) {
            return;
        }
        let started = Instant::now();
        let looks = expect_bool(handle.looks_alive().await, false, "looks-alive must be false once offline succeeded");
        report.record("looks-alive", started, looks);
    };
    steps_passed.await;
    // A sandbox failure already discarded the instance; terminate has
    // nothing left to call then.
    if handle.is_live().await {
        let started = Instant::now();
        let terminated = handle.terminate().await.map(|()| "ok".to_string()).map_err(|e| e.to_string());
        report.record("terminate", started, terminated);
    }
    handle.close().await;
    report
}

fn expect_bool(outcome: Result<bool, crate::monitor::CallError>, expected: bool, rule: &str) -> Result<String, String> {
    match outcome {
        Ok(value) if value == expected => Ok(value.to_string()),
        Ok(value) => Err(format!("returned {value}; {rule}")),
        Err(error) => Err(error.to_string()),
    }
}
