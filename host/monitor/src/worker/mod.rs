//! Monitor workers: the second wall. The daemon hosts plugin instances in
//! `steward monitor` child processes rather than in itself, so that nothing
//! a resource does (not even a bug that escapes the sandbox) can take the
//! node down; a resource may be given a worker of its own.
//!
//! [`protocol`] is what travels on the pipes, [`server`] the worker's side
//! (with its prober, which polls every resource on its schedule),
//! [`client`] the daemon's.

pub mod client;
pub mod lease;
mod prober;
pub mod protocol;
pub mod server;

pub use client::{
    RemoteResource, SHARED_WORKER, WorkerEvent, WorkerOptions, WorkerPool, WorkerView, is_shared_worker_name,
};
