//! The conformance suite a plugin must pass: what `steward plugin check`
//! runs and what the first-party plugins' tests run, so that authors and
//! Steward hold plugins to the same rules.
//!
//! Checks, in order (each failure says what the author should change):
//! 1. `metadata`: well formed (a kebab-case name, a semantic version, a
//!    description, unique property names, defaults of the declared kind,
//!    no default on a required property);
//! 2. `validate`: accepts the given properties, and the plugin's own
//!    `validate` rejects each required property left out, naming it;
//! 3. the life cycle: open, online, looks-alive (true), is-alive (alive),
//!    online again (idempotent), offline, looks-alive (false), offline again
//!    (idempotent);
//! 4. `notify` with every kind of cluster event;
//! 5. `terminate` at any point: right after open, and while online (after
//!    which looks-alive must be false);
//! 6. every call within the deadlines the type declares (the monitor stops
//!    a call at its deadline; a check reports it).
//!
//! A sandbox failure (trap, deadline, limit) ends the life-cycle steps; the
//! remaining independent checks still run on a fresh instance. An operation
//! that overran its deadline is not called again: the steps that need it
//! are reported as skipped, with the reason, so a plugin wedged in `online`
//! costs the check one deadline (three minutes by default), not one per
//! step that calls `online`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bindings::{CallContext, CheckLevel, ClusterEvent, GroupMove, TypeInfo};
use crate::monitor::{CallError, Monitor, Operation, ResourceHandle, ResourceSpec};
use crate::plugin::Plugin;

/// The resource name used for the checked instance.
pub const CHECK_RESOURCE_NAME: &str = "plugin-check";

/// One step of the check.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The step's name.
    pub step: &'static str,
    /// How long it took.
    #[serde(rename = "elapsed_ms", serialize_with = "as_millis")]
    pub elapsed: Duration,
    /// Whether it passed.
    pub passed: bool,
    /// Whether it was not run, because an operation it needs overran its
    /// deadline in an earlier step (it counts as not passed).
    pub skipped: bool,
    /// What it returned, or what the author should change.
    pub detail: String,
}

/// The whole check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Each step run, in order.
    pub steps: Vec<StepReport>,
    /// Operations that overran their deadline so far.
    #[serde(skip)]
    overran: Vec<Operation>,
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

    /// The steps named `step`.
    pub fn step(&self, step: &str) -> Vec<&StepReport> {
        self.steps.iter().filter(|report| report.step == step).collect()
    }

    fn record(&mut self, step: &'static str, started: Instant, outcome: Result<String, String>) -> bool {
        let passed = outcome.is_ok();
        let detail = outcome.unwrap_or_else(|failure| failure);
        self.steps.push(StepReport { step, elapsed: started.elapsed(), passed, skipped: false, detail });
        passed
    }

    /// Remembers an operation that overran its deadline in `outcome`.
    fn note<T>(&mut self, outcome: &Result<T, CallError>) {
        if let Err(CallError::Deadline { operation, .. }) = outcome
            && !self.overran.contains(operation)
        {
            self.overran.push(*operation);
        }
    }

    /// Records `step` as skipped when one of the operations it `needs`
    /// overran its deadline earlier; true if it was.
    fn skipped(&mut self, step: &'static str, needs: &[Operation]) -> bool {
        let Some(operation) = needs.iter().find(|needed| self.overran.contains(needed)) else { return false };
        let detail = format!("skipped: `{operation}` overran its deadline in an earlier step; fix that first");
        self.steps.push(StepReport { step, elapsed: Duration::ZERO, passed: false, skipped: true, detail });
        true
    }
}

/// Runs every check on `plugin` as resource `spec`.
pub async fn run(plugin: Arc<Plugin>, spec: ResourceSpec) -> CheckReport {
    let mut report = CheckReport::default();
    let started = Instant::now();
    report.record("metadata", started, check_metadata(plugin.metadata()));
    let started = Instant::now();
    let validated = plugin.validate(&spec.name, &spec.properties).await.map(|()| "ok".to_string());
    if !report.record("validate", started, validated.map_err(|e| e.to_string())) {
        return report;
    }
    let started = Instant::now();
    let rejects = rejects_missing_required(&plugin, &spec).await;
    report.record("validate-rejects-missing", started, rejects);

    let monitor = Monitor::new("plugin-check");
    let Some(handle) = open(&monitor, &plugin, &spec, &mut report).await else { return report };
    life_cycle(&handle, &spec, &mut report).await;
    handle.close().await;

    // The independent checks get fresh instances, so one failure above
    // does not hide them.
    if let Some(handle) = open(&monitor, &plugin, &spec, &mut report).await {
        if !report.skipped("notify", &[Operation::Notify]) {
            let started = Instant::now();
            let notified = notify_every_kind(&handle, &mut report).await;
            report.record("notify", started, notified);
        }
        if !handle.is_live().await {
            // A notify that faulted the sandbox already failed its step;
            // terminate is judged on a fresh instance.
            let _ = handle.reopen().await;
        }
        if !report.skipped("terminate", &[Operation::Terminate]) {
            let started = Instant::now();
            let early = handle.terminate().await;
            report.note(&early);
            report.record(
                "terminate",
                started,
                early.map(|()| "ok before online".to_string()).map_err(|e| e.to_string()),
            );
        }
        handle.close().await;
    }
    let while_online = [Operation::Online, Operation::Terminate, Operation::LooksAlive];
    if !report.skipped("terminate", &while_online)
        && let Some(handle) = open(&monitor, &plugin, &spec, &mut report).await
    {
        let started = Instant::now();
        let terminated = terminate_while_online(&handle, &mut report).await;
        report.record("terminate", started, terminated);
        handle.close().await;
    }
    report
}

async fn open(
    monitor: &Monitor,
    plugin: &Arc<Plugin>,
    spec: &ResourceSpec,
    report: &mut CheckReport,
) -> Option<ResourceHandle> {
    if report.skipped("open", &[Operation::Open]) {
        return None;
    }
    let started = Instant::now();
    let opened = monitor.open(plugin.clone(), spec.clone()).await;
    if let Err(crate::Error::Call { source, .. }) = &opened {
        report.note::<()>(&Err(source.clone()));
    }
    match opened {
        Ok(handle) => {
            report.record("open", started, Ok("ok".into()));
            Some(handle)
        }
        Err(error) => {
            report.record("open", started, Err(error.to_string()));
            None
        }
    }
}

fn context() -> CallContext {
    CallContext { node_name: "plugin-check".into(), fencing_token: 1, attempt: 1 }
}

async fn life_cycle(handle: &ResourceHandle, spec: &ResourceSpec, report: &mut CheckReport) {
    let context = context();
    let pending = spec.timeouts.pending;
    let started = Instant::now();
    let online = handle.online(&context).await;
    report.note(&online);
    if !report.record("online", started, online.map(|()| "ok".to_string()).map_err(|e| explain(e, pending))) {
        return;
    }
    let started = Instant::now();
    let looks = handle.looks_alive().await;
    report.note(&looks);
    let looks = expect_bool(looks, true, "looks-alive must be true once online succeeded");
    if !report.record("looks-alive", started, looks) {
        return;
    }
    let started = Instant::now();
    let health = handle.is_alive(CheckLevel::Thorough).await;
    report.note(&health);
    let health = match health {
        Ok(health) if health.alive => Ok(format!("alive: {}", health.reason)),
        Ok(health) => {
            Err(format!("not alive right after online ({}); online must return only once ready", health.reason))
        }
        Err(error) => Err(explain(error, spec.timeouts.probe)),
    };
    if !report.record("is-alive", started, health) {
        return;
    }
    let started = Instant::now();
    let online_again = handle.online(&context).await;
    report.note(&online_again);
    let again = match online_again {
        Ok(()) => expect_bool(handle.looks_alive().await, true, "online when already online must keep it online"),
        Err(error) => Err(format!("online when already online failed ({error}); online must be idempotent")),
    };
    if !report.record("online-again", started, again) {
        return;
    }
    let started = Instant::now();
    let offline = handle.offline(&context).await;
    report.note(&offline);
    if !report.record("offline", started, offline.map(|()| "ok".to_string()).map_err(|e| explain(e, pending))) {
        return;
    }
    let started = Instant::now();
    let looks = handle.looks_alive().await;
    report.note(&looks);
    let looks = expect_bool(looks, false, "looks-alive must be false once offline succeeded");
    if !report.record("looks-alive", started, looks) {
        return;
    }
    let started = Instant::now();
    let offline_again = handle.offline(&context).await;
    report.note(&offline_again);
    let again = offline_again
        .map(|()| "ok".to_string())
        .map_err(|e| format!("offline when already offline failed ({e}); offline must be idempotent"));
    report.record("offline-again", started, again);
}

fn check_metadata(info: &TypeInfo) -> Result<String, String> {
    let mut problems = Vec::new();
    let kebab = |name: &str| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && name.starts_with(|c: char| c.is_ascii_lowercase())
    };
    if !kebab(&info.name) {
        problems.push(format!("type name `{}` must be lowercase kebab-case, e.g. `my-service`", info.name));
    }
    let version_parts: Vec<&str> = info.version.split(['-', '+']).next().unwrap_or_default().split('.').collect();
    if version_parts.len() != 3 || version_parts.iter().any(|part| part.parse::<u64>().is_err()) {
        problems.push(format!("version `{}` must be a semantic version such as 1.2.0", info.version));
    }
    if info.description.trim().is_empty() {
        problems.push("the description is empty; say what the type manages, for operators".into());
    }
    let mut seen = std::collections::HashSet::new();
    for spec in &info.properties {
        if !seen.insert(spec.name.as_str()) {
            problems.push(format!("property `{}` is declared twice", spec.name));
        }
        if !kebab(&spec.name) {
            problems.push(format!("property name `{}` must be lowercase kebab-case", spec.name));
        }
        if spec.description.trim().is_empty() {
            problems.push(format!("property `{}` has no description", spec.name));
        }
        if spec.required && spec.default_value.is_some() {
            problems.push(format!(
                "property `{}` is required but has a default; make it optional or drop the default",
                spec.name
            ));
        }
        if let Some(default) = &spec.default_value
            && crate::properties::kind_problem(spec.kind, default).is_some()
        {
            problems.push(format!("property `{}`: default `{default}` is not of its kind {:?}", spec.name, spec.kind));
        }
    }
    if problems.is_empty() {
        Ok(format!("{} {}, {} properties", info.name, info.version, info.properties.len()))
    } else {
        Err(problems.join("; "))
    }
}

/// The plugin's own `validate` must reject each required property left out.
async fn rejects_missing_required(plugin: &Plugin, spec: &ResourceSpec) -> Result<String, String> {
    let required: Vec<&str> =
        plugin.metadata().properties.iter().filter(|p| p.required).map(|p| p.name.as_str()).collect();
    for name in &required {
        let without: Vec<(String, String)> = spec.properties.iter().filter(|(k, _)| k != name).cloned().collect();
        match plugin.plugin_validate(&spec.name, &without).await {
            Ok(Err(problems)) if problems.iter().any(|p| p.property == *name) => {}
            Ok(Err(problems)) => {
                let named: Vec<&str> = problems.iter().map(|p| p.property.as_str()).collect();
                return Err(format!(
                    "without required property `{name}`, validate named {named:?} instead; name the missing property"
                ));
            }
            Ok(Ok(())) => {
                return Err(format!("validate accepted properties without required property `{name}`; reject it"));
            }
            Err(error) => return Err(format!("validate without `{name}` failed: {error}")),
        }
    }
    Ok(if required.is_empty() { "no required properties".into() } else { format!("rejects each of {required:?}") })
}

async fn notify_every_kind(handle: &ResourceHandle, report: &mut CheckReport) -> Result<String, String> {
    let movement = GroupMove { group: "g".into(), from_node: Some("node-a".into()), to_node: "node-b".into() };
    let events = [
        ClusterEvent::NodeJoined("node-b".into()),
        ClusterEvent::NodeLeft("node-b".into()),
        ClusterEvent::GroupMoving(movement.clone()),
        ClusterEvent::GroupMoved(movement),
        ClusterEvent::PeerOnline("peer".into()),
        ClusterEvent::PeerOffline("peer".into()),
        ClusterEvent::QuorumLost,
        ClusterEvent::QuorumRegained,
    ];
    for event in &events {
        let notified = handle.notify(event).await;
        report.note(&notified);
        notified.map_err(|e| format!("notify({event:?}) failed: {e}; notify must accept every event kind"))?;
    }
    Ok(format!("{} event kinds", events.len()))
}

async fn terminate_while_online(handle: &ResourceHandle, report: &mut CheckReport) -> Result<String, String> {
    let online = handle.online(&context()).await;
    report.note(&online);
    online.map_err(|e| format!("online before terminate failed: {e}"))?;
    let terminated = handle.terminate().await;
    report.note(&terminated);
    terminated.map_err(|e| format!("terminate while online failed: {e}"))?;
    let looks = handle.looks_alive().await;
    report.note(&looks);
    match looks {
        Ok(false) => Ok("ok while online; looks-alive false after".into()),
        Ok(true) => Err("looks-alive is still true after terminate; terminate must take the resource offline".into()),
        Err(error) => Err(error.to_string()),
    }
}

/// A failure with a hint, when the hint is clear.
fn explain(error: CallError, declared: Duration) -> String {
    match &error {
        CallError::Deadline { .. } => format!(
            "{error}; the call must finish within {} ms (the type's declared timing, or --timeout-ms)",
            declared.as_millis()
        ),
        _ => error.to_string(),
    }
}

fn expect_bool(outcome: Result<bool, CallError>, expected: bool, rule: &str) -> Result<String, String> {
    match outcome {
        Ok(value) if value == expected => Ok(value.to_string()),
        Ok(value) => Err(format!("returned {value}; {rule}")),
        Err(error) => Err(error.to_string()),
    }
}

fn as_millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64() * 1_000.0)
}
