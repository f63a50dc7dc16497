//! `generic-app`: the classic generic application resource. It starts one
//! program through the host's `process` capability, judges its health by the
//! process's status, and stops it with SIGTERM, then SIGKILL after a grace
//! period. The program must be named in the resource's process grant.

use std::time::Duration;

use serde::Deserialize;
use steward_sdk::process::{ProcessError, ProcessStatus, Signal, Supervised};
use steward_sdk::{CallContext, Error, Instance, Problem, ResourceType, TypeInfo, warn};
use steward_sdk::{Capability, CheckLevel, Health, PropertyKind as Kind, export_plugin, info};

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Properties {
    program: String,
    args: Vec<String>,
    env: Vec<String>,
    grace_ms: i64,
}

struct GenericApp {
    properties: Properties,
    process: Option<Supervised>,
}

impl ResourceType for GenericApp {
    type Properties = Properties;
    type Instance = GenericApp;

    fn metadata() -> TypeInfo {
        let about = "Runs one program and supervises it.";
        TypeInfo::new("generic-app", env!("CARGO_PKG_VERSION"), about)
            .required("program", Kind::Text, "The program's absolute path; the grant must name it.")
            .optional("args", Kind::TextList, "", "The program's arguments.")
            .optional("env", Kind::TextList, "", "Environment variables, each KEY=VALUE.")
            .optional("grace-ms", Kind::Integer, "5000", "Offline's wait before SIGKILL, in ms.")
            .needs(Capability::Process)
            .build()
    }

    fn validate(properties: &Properties) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        if !properties.program.starts_with('/') {
            problems.push(Problem::new("program", format!("`{}` is not an absolute path", properties.program)));
        }
        for item in properties.env.iter().filter(|item| !item.contains('=')) {
            problems.push(Problem::new("env", format!("`{item}` is not of the form KEY=VALUE")));
        }
        if properties.grace_ms < 0 {
            problems.push(Problem::new("grace-ms", "must be zero or more milliseconds"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    fn open(_name: &str, properties: Properties) -> Result<GenericApp, Error> {
        // A program that outlived the node's daemon is adopted, not restarted.
        let process = Supervised::tracked().into_iter().next();
        if let Some(process) = &process {
            info!("adopted pid {} from an earlier run", process.pid());
        }
        Ok(GenericApp { properties, process })
    }
}

impl Instance for GenericApp {
    fn online(&mut self, _context: &CallContext) -> Result<(), Error> {
        if self.process.as_ref().is_some_and(Supervised::exists) {
            return Ok(());
        }
        let Properties { program, args, env, .. } = &self.properties;
        // validate has checked that every item holds a '='.
        let env: Vec<(String, String)> =
            env.iter().filter_map(|item| item.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let process = Supervised::start(program, args, &env).map_err(|error| match error {
            ProcessError::Denied(what) => {
                Error::InvalidConfig(format!("{what}: `{program}` must be in the resource's process grant"))
            }
            ProcessError::SpawnFailed(why) => Error::Fatal(format!("cannot start `{program}`: {why}")),
            other => Error::Transient(format!("cannot start `{program}`: {other}")),
        })?;
        info!("started `{program}` as pid {}", process.pid());
        self.process = Some(process);
        Ok(())
    }

    fn offline(&mut self, _context: &CallContext) -> Result<(), Error> {
        let Some(process) = self.process.take() else {
            return Ok(());
        };
        let grace = Duration::from_millis(u64::try_from(self.properties.grace_ms).unwrap_or(0));
        match process.stop(grace) {
            Ok(status) => info!("pid {} {}", process.pid(), describe(&status)),
            // The host no longer tracks it: it ended and was reaped already.
            Err(ProcessError::UnknownProcess(pid)) => info!("pid {pid} had already ended"),
            Err(error) => {
                // Keep it: claiming offline while it may still run would let
                // the group start elsewhere beside it. The host's terminate
                // path kills it for certain.
                warn!("could not stop pid {}: {error}", process.pid());
                self.process = Some(process);
                return Err(Error::Transient(format!("could not stop the program: {error}")));
            }
        }
        Ok(())
    }

    fn terminate(&mut self) {
        if let Some(process) = self.process.take() {
            // Best effort: the host kills every tracked process afterwards anyway.
            let _ = process.signal(Signal::Kill);
        }
    }

    fn looks_alive(&mut self) -> bool {
        self.process.as_ref().is_some_and(Supervised::exists)
    }

    fn is_alive(&mut self, _level: CheckLevel) -> Health {
        let Some(process) = &self.process else {
            return Health::dead("no process: the resource is offline");
        };
        let pid = process.pid();
        match process.status() {
            Ok(status) => {
                let reason = format!("pid {pid} {}", describe(&status));
                Health { alive: matches!(status, ProcessStatus::Running), reason }
            }
            Err(error) => Health::dead(format!("cannot read the status of pid {pid}: {error}")),
        }
    }

    fn control(&mut self, code: &str, _input: &str) -> Result<String, Error> {
        match (code, &self.process) {
            ("pid", Some(process)) => Ok(process.pid().to_string()),
            ("pid", None) => Err(Error::Transient("no process: the resource is offline".to_string())),
            _ => Err(Error::InvalidConfig(format!("unknown control code `{code}`; this type knows: pid"))),
        }
    }
}

/// Says what a status means, after "pid N".
fn describe(status: &ProcessStatus) -> String {
    match status {
        ProcessStatus::Running => "is running".to_string(),
        ProcessStatus::Stopped => "is stopped by a signal".to_string(),
        ProcessStatus::Zombie => "is a zombie".to_string(),
        ProcessStatus::Exited(code) => format!("exited with code {code}"),
        ProcessStatus::Killed(signal) => format!("was killed by signal {signal}"),
        ProcessStatus::Gone => "has ended".to_string(),
    }
}

export_plugin!(GenericApp);
