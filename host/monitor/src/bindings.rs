//! The one place the host generates bindings for the `plugin` world in `wit/`.
//!
//! Exports are async so that every call into a guest can be cut off by a
//! deadline even while the guest is blocked in a host import. Imports that
//! can outlast a call's deadline (`sleep-ms`, `wait`) are async and
//! trappable: they end the call when the deadline passes. Every other
//! import returns a WIT value and never traps.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../../wit",
    imports: {
        "steward:resource/host.sleep-ms": async | trappable,
        "steward:resource/process.wait": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    // Monitor workers send these values over their pipe.
    additional_derives: [serde::Serialize, serde::Deserialize],
});

pub use self::exports::steward::resource::resource_type::{self as guest, Guest as ResourceTypeGuest};
pub use self::steward::resource::host::{LogLevel, NodeIdentity};
pub use self::steward::resource::process::{ProcessError, ProcessStatus, Signal, SpawnRequest};
pub use self::steward::resource::types::{
    CallContext, Capability, CheckLevel, ClusterEvent, Error as PluginError, GroupMove, Health, Problem, PropertyKind,
    PropertySpec, Timing, TypeInfo,
};

impl Capability {
    /// The capability's WIT name, as the CLI and the API write it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Capability::Process => "process",
            Capability::Filesystem => "filesystem",
            Capability::Network => "network",
        }
    }
}

impl PropertyKind {
    /// The kind's WIT name, as the CLI and the API write it.
    pub fn as_str(&self) -> &'static str {
        match self {
            PropertyKind::Text => "text",
            PropertyKind::Integer => "integer",
            PropertyKind::Boolean => "boolean",
            PropertyKind::TextList => "text-list",
        }
    }
}
