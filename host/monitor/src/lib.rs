//! Steward's resource monitor: the one crate that knows wasmtime. It runs
//! resource types (WebAssembly components implementing `wit/`) in
//! sandboxes under deadlines, memory caps and capability grants, and runs
//! them in monitor worker processes on the node's behalf.
//!
//! Entry points: [`runtime::Runtime`] (the wasmtime engine, built once per
//! process), [`plugin::Plugin`] (a loaded resource type),
//! [`monitor::Monitor`] (opens resources and calls into them under
//! deadlines) and [`worker::WorkerPool`] (the node's side of the workers).
//! `ARCHITECTURE.md` at the repository root is the map.

pub mod bindings;
pub mod call;
pub mod conformance;
pub mod error;
pub mod events;
pub mod grants;
pub mod guest_log;
pub mod latency;
pub mod monitor;
pub mod ocf;
pub mod plugin;
pub mod process;
pub mod properties;
pub mod runtime;
pub mod sandbox;
pub mod text;
pub mod worker;

pub use error::{Error, Result};
