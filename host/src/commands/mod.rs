//! One module per subcommand; each parses nothing itself (clap did) and
//! returns an exit code or an error for `main` to print.

pub mod client;
pub mod daemon;
pub mod grant_args;
pub mod listeners;
pub mod monitor;
pub mod ocf;
pub mod plugin_check;
pub mod plugin_new;
pub mod token;
pub mod validate;
