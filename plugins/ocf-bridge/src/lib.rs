//! `ocf-bridge`: runs an existing OCF resource agent (a script from the
//! resource-agents catalogue, such as `heartbeat/Dummy` or `heartbeat/IPaddr2`)
//! as a Steward resource, through the `process` capability: online runs
//! `start`, offline `stop`, the probes `monitor` (is-alive with
//! `OCF_CHECK_LEVEL=20` when thorough). The grant must name the agent.
//!
//! Each operation forks the agent, as Pacemaker does, so it costs what
//! Pacemaker pays (milliseconds per probe); what the agent itself runs is
//! outside the capability's allow-list, as it is outside Pacemaker's.

use std::time::Duration;

use serde::Deserialize;
use steward_sdk::process::{ProcessStatus, Signal, Supervised};
use steward_sdk::{CallContext, Capability, CheckLevel, Error, Health, Instance, Problem};
use steward_sdk::{PropertyKind as Kind, ResourceType, TypeInfo, export_plugin, warn};

/// OCF exit codes this bridge tells apart.
const OCF_SUCCESS: i32 = 0;
const OCF_NOT_RUNNING: i32 = 7;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Properties {
    agent: String,
    params: Vec<String>,
    ocf_root: String,
    action_timeout_ms: i64,
}

struct OcfBridge {
    name: String,
    properties: Properties,
}

impl ResourceType for OcfBridge {
    type Properties = Properties;
    type Instance = OcfBridge;

    fn metadata() -> TypeInfo {
        TypeInfo::new("ocf-bridge", env!("CARGO_PKG_VERSION"), "Runs an OCF resource agent as a Steward resource.")
            .required("agent", Kind::Text, "The agent's absolute path; the process grant must name it.")
            .optional("params", Kind::TextList, "", "Agent parameters, each KEY=VALUE (passed as OCF_RESKEY_KEY).")
            .optional("ocf-root", Kind::Text, "/usr/lib/ocf", "OCF_ROOT for the agent.")
            .optional("action-timeout-ms", Kind::Integer, "20000", "How long one agent action may take, in ms.")
            .needs(Capability::Process)
            .build()
    }

    fn validate(properties: &Properties) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        if !properties.agent.starts_with('/') {
            problems
                .push(Problem::new("agent", "must be an absolute path, e.g. /usr/lib/ocf/resource.d/heartbeat/Dummy"));
        }
        for item in properties.params.iter().filter(|item| !item.contains('=')) {
            problems.push(Problem::new("params", format!("`{item}` is not of the form KEY=VALUE")));
        }
        if properties.action_timeout_ms <= 0 {
            problems.push(Problem::new("action-timeout-ms", "must be one millisecond or more"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    fn open(name: &str, properties: Properties) -> Result<OcfBridge, Error> {
        Ok(OcfBridge { name: name.to_string(), properties })
    }
}

impl OcfBridge {
    /// Runs the agent with `action`; its exit code.
    fn run(&self, action: &str, check_level: u32) -> Result<i32, Error> {
        let timeout_ms = u64::try_from(self.properties.action_timeout_ms).unwrap_or(1);
        let mut env = vec![
            ("OCF_ROOT".to_string(), self.properties.ocf_root.clone()),
            ("OCF_RESOURCE_INSTANCE".to_string(), self.name.clone()),
            ("OCF_RESKEY_CRM_meta_timeout".to_string(), timeout_ms.to_string()),
            ("OCF_CHECK_LEVEL".to_string(), check_level.to_string()),
            ("HA_RSCTMP".to_string(), "/run/resource-agents".to_string()),
            ("PATH".to_string(), "/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
        ];
        for (key, value) in self.properties.params.iter().filter_map(|item| item.split_once('=')) {
            env.push((format!("OCF_RESKEY_{key}"), value.to_string()));
        }
        let agent = &self.properties.agent;
        let process = Supervised::start(agent, &[action.to_string()], &env).map_err(|error| {
            Error::InvalidConfig(format!("cannot run {agent}: {error:?}; grant it and check it exists"))
        })?;
        match process.wait(Duration::from_millis(timeout_ms)) {
            Ok(Some(ProcessStatus::Exited(code))) => Ok(code),
            Ok(Some(other)) => Err(Error::Transient(format!("{agent} {action} ended as {other:?}"))),
            Ok(None) => {
                let _ = process.signal(Signal::Kill);
                Err(Error::Transient(format!("{agent} {action} took over {timeout_ms} ms and was killed")))
            }
            Err(error) => Err(Error::Transient(format!("waiting for {agent} {action}: {error:?}"))),
        }
    }

    fn describe(code: i32) -> String {
        match code {
            OCF_SUCCESS => "monitor returned 0 (running)".into(),
            OCF_NOT_RUNNING => "monitor returned 7 (not running)".into(),
            other => format!("monitor returned {other} (failed)"),
        }
    }
}

impl Instance for OcfBridge {
    fn online(&mut self, _context: &CallContext) -> Result<(), Error> {
        match self.run("start", 0)? {
            OCF_SUCCESS => Ok(()),
            code @ (2 | 6) => {
                Err(Error::InvalidConfig(format!("start returned {code}: the agent's parameters are wrong")))
            }
            code @ (4 | 5) => Err(Error::Fatal(format!("start returned {code}: the agent cannot run on this node"))),
            code => Err(Error::Transient(format!("start returned {code}"))),
        }
    }

    fn offline(&mut self, _context: &CallContext) -> Result<(), Error> {
        match self.run("stop", 0)? {
            OCF_SUCCESS => Ok(()),
            code => Err(Error::Transient(format!("stop returned {code}"))),
        }
    }

    fn terminate(&mut self) {
        if let Err(error) = self.run("stop", 0) {
            warn!("stop during terminate failed: {error:?}");
        }
    }

    fn looks_alive(&mut self) -> bool {
        matches!(self.run("monitor", 0), Ok(OCF_SUCCESS))
    }

    fn is_alive(&mut self, level: CheckLevel) -> Health {
        let depth = if level == CheckLevel::Thorough { 20 } else { 0 };
        match self.run("monitor", depth) {
            Ok(OCF_SUCCESS) => Health::alive(Self::describe(OCF_SUCCESS)),
            Ok(code) => Health::dead(Self::describe(code)),
            Err(error) => Health::dead(format!("{error:?}")),
        }
    }
}

export_plugin!(OcfBridge);
