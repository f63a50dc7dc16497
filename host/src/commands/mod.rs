//! One module per subcommand; each parses nothing itself (clap did) and
//! returns an exit code or an error for `main` to print.

pub mod plugin_check;
