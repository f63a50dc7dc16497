//! `dummy`: a resource that holds no real state, with configurable delays
//! and failures. Tests and demos use it; it is also the smallest complete
//! example of the SDK.

use std::time::Duration;

use serde::Deserialize;
use steward_sdk::{
    CallContext, ClusterEvent, Error, Instance, Problem, PropertyKind, ResourceType, TypeInfo, export_plugin, host,
    info,
};

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Properties {
    online_delay_ms: u64,
    offline_delay_ms: u64,
    fail_online: String,
    fail_after_probes: u64,
    validate_delay_ms: u64,
}

struct Dummy {
    properties: Properties,
    online: bool,
    probes: u64,
}

impl ResourceType for Dummy {
    type Properties = Properties;
    type Instance = Dummy;

    fn metadata() -> TypeInfo {
        TypeInfo::new("dummy", env!("CARGO_PKG_VERSION"), "Configurable delays and failures, for tests.")
            .optional("online-delay-ms", PropertyKind::Integer, "0", "How long online takes, in milliseconds.")
            .optional("offline-delay-ms", PropertyKind::Integer, "0", "How long offline takes, in milliseconds.")
            .optional("fail-online", PropertyKind::Text, "", "Make online fail: transient, fatal or invalid-config.")
            .optional("fail-after-probes", PropertyKind::Integer, "0", "Fail after N looks-alive probes (0: never).")
            .optional("validate-delay-ms", PropertyKind::Integer, "0", "How long validate takes, in milliseconds.")
            .build()
    }

    fn validate(properties: &Properties) -> Result<(), Vec<Problem>> {
        // A slow check, as a plugin that looks something up would be.
        host::sleep(Duration::from_millis(properties.validate_delay_ms));
        match properties.fail_online.as_str() {
            "" | "transient" | "fatal" | "invalid-config" => Ok(()),
            other => {
                Err(vec![Problem::new("fail-online", format!("`{other}` is not transient, fatal or invalid-config"))])
            }
        }
    }

    fn open(name: &str, properties: Properties) -> Result<Dummy, Error> {
        info!("opened {name}");
        Ok(Dummy { properties, online: false, probes: 0 })
    }
}

impl Instance for Dummy {
    fn online(&mut self, context: &CallContext) -> Result<(), Error> {
        // What a cluster-aware type would guard its writes with.
        info!(
            "online: fencing token {} (context {}), attempt {}",
            host::fencing_token(),
            context.fencing_token,
            context.attempt
        );
        if self.properties.online_delay_ms > 0 {
            // What a real slow start says, so operators see it pending.
            host::report_progress(&format!("starting: waiting {} ms", self.properties.online_delay_ms));
        }
        host::sleep(Duration::from_millis(self.properties.online_delay_ms));
        let reason = "fail-online is set".to_string();
        match self.properties.fail_online.as_str() {
            "transient" => return Err(Error::Transient(reason)),
            "fatal" => return Err(Error::Fatal(reason)),
            "invalid-config" => return Err(Error::InvalidConfig(reason)),
            _ => {}
        }
        self.online = true;
        Ok(())
    }

    fn offline(&mut self, _context: &CallContext) -> Result<(), Error> {
        host::sleep(Duration::from_millis(self.properties.offline_delay_ms));
        self.online = false;
        Ok(())
    }

    fn terminate(&mut self) {
        self.online = false;
    }

    fn notify(&mut self, event: ClusterEvent) {
        info!("notified: {event:?}");
    }

    fn looks_alive(&mut self) -> bool {
        self.probes += 1;
        let limit = self.properties.fail_after_probes;
        if limit > 0 && self.probes >= limit {
            host::signal_failure(&format!("failed after {limit} probes, as configured"));
            return false;
        }
        self.online
    }
}

export_plugin!(Dummy);
