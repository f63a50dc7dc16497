//! Steward's integration and fault tests: one binary, one module per area,
//! so the 2-core machines link once.

mod access;
mod api_fuzz;
mod cli;
mod cluster;
mod console;
mod containment;
mod daemon;
mod examples;
mod failures;
mod generic_app;
mod injection;
mod network;
mod ocf;
mod ownership;
mod plugin_dir;
mod plugin_new;
mod plugins;
mod systemd;
mod tidy;
mod workers;
