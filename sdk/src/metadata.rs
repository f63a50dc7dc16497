//! A builder for [`TypeInfo`], so a plugin's metadata reads as a short list
//! of properties instead of nested struct literals.

use crate::{Capability, PropertyKind, PropertySpec, Timing, TypeInfo};

impl TypeInfo {
    /// Starts describing a type named `name` at `version`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(name: &str, version: &str, description: &str) -> TypeInfoBuilder {
        TypeInfoBuilder {
            info: TypeInfo {
                name: name.to_string(),
                version: version.to_string(),
                description: description.to_string(),
                properties: Vec::new(),
                timing: Timing {
                    looks_alive_interval_ms: 0,
                    is_alive_interval_ms: 0,
                    pending_timeout_ms: 0,
                    probe_timeout_ms: 0,
                },
                capabilities: Vec::new(),
            },
        }
    }
}

/// Builds a [`TypeInfo`]; finish with [`TypeInfoBuilder::build`].
pub struct TypeInfoBuilder {
    info: TypeInfo,
}

impl TypeInfoBuilder {
    /// A property that must be set.
    pub fn required(mut self, name: &str, kind: PropertyKind, description: &str) -> Self {
        self.info.properties.push(spec(name, kind, true, None, description));
        self
    }

    /// A property with a default value.
    pub fn optional(mut self, name: &str, kind: PropertyKind, default_value: &str, description: &str) -> Self {
        let default_value = Some(default_value.to_string());
        self.info.properties.push(spec(name, kind, false, default_value, description));
        self
    }

    /// Declares a capability the type needs granted.
    pub fn needs(mut self, capability: Capability) -> Self {
        self.info.capabilities.push(capability);
        self
    }

    /// Proposes timing defaults (milliseconds; zero keeps the host's default).
    pub fn timing(mut self, timing: Timing) -> Self {
        self.info.timing = timing;
        self
    }

    /// The finished description.
    pub fn build(self) -> TypeInfo {
        self.info
    }
}

fn spec(
    name: &str,
    kind: PropertyKind,
    required: bool,
    default_value: Option<String>,
    description: &str,
) -> PropertySpec {
    PropertySpec { name: name.to_string(), kind, required, default_value, description: description.to_string() }
}
