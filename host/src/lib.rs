//! Steward's host: the monitor that runs resource types (WebAssembly
//! components implementing `wit/`) in sandboxes, and what surrounds it.
//!
//! Entry points: [`runtime::Runtime`] (the wasmtime engine, built once per
//! process), [`plugin::Plugin`] (a loaded resource type) and
//! [`monitor::Monitor`] (opens resources and calls into them under
//! deadlines). `ARCHITECTURE.md` at the repository root is the map.

pub mod api;
pub mod bindings;
pub mod call;
pub mod config;
pub mod conformance;
pub mod error;
pub mod events;
pub mod grants;
pub mod guest_log;
pub mod latency;
pub mod monitor;
pub mod node;
pub mod ocf;
pub mod plugin;
pub mod plugin_dir;
pub mod process;
pub mod properties;
pub mod runtime;
pub mod sandbox;
pub mod state;
pub mod text;
pub mod worker;

pub use error::{Error, Result};
/// The policy engine, a crate of its own so that it cannot reach the sandbox.
pub use steward_policy as policy;
pub use steward_policy::failure;
