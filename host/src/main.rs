//! The `steward` binary: parses arguments, dispatches to `commands/`, prints
//! the error chain and maps outcomes to exit codes (0 success, 1 the check
//! or operation failed, 2 bad usage).

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commands::client::ApiArgs;

/// Steward keeps resources highly available; resource types are WebAssembly components.
#[derive(Parser)]
#[command(name = "steward", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the cluster service of this machine.
    Daemon(commands::daemon::Args),
    /// Check a node's configuration, plugins included, without starting anything.
    Validate(commands::validate::Args),
    /// Show groups and resources of a running daemon.
    Status(ApiArgs),
    /// Bring a group (or a resource, with what it depends on) online.
    Online(Target),
    /// Take a group (or a resource, with what depends on it) offline.
    Offline(Target),
    /// Move a group to another node of the cluster (ask the node that owns it).
    Move {
        /// The group.
        group: String,
        /// The node to move it to; without it, the next by placement.
        node: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show the cluster's nodes and which groups each owns.
    Nodes(ApiArgs),
    /// Explain a group's recent history: each restart, failover, move, failback and failure, with its rule and inputs.
    Why {
        /// The group.
        group: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Make a running daemon read its configuration again and add its new groups.
    Reload(ApiArgs),
    /// Check files of groups and resources and make them the cluster's shared configuration.
    Apply {
        /// Files of [[resource]] and [[group]] tables, applied together.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The cluster's shared configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Follow a running daemon's events.
    Events {
        #[command(flatten)]
        api: ApiArgs,
        /// Replay the recent events first.
        #[arg(long)]
        history: bool,
    },
    /// API tokens for a node's TCP listener.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Work with plugins (resource types).
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run a plugin as an OCF resource agent (for Pacemaker).
    Ocf(commands::ocf::Args),
    /// A monitor worker; started by the daemon, never by hand.
    #[command(hide = true)]
    Monitor(commands::monitor::Args),
}

#[derive(clap::Args)]
struct Target {
    /// A group's or a resource's name.
    name: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token, add its hash to a tokens file and print it once.
    Create(commands::token::CreateArgs),
    /// List the names and roles of a tokens file's tokens.
    List(commands::token::ListArgs),
    /// Take a token out of a tokens file; running nodes refuse it at once.
    Revoke(commands::token::RevokeArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the shared configuration a node runs, with its revision.
    Show(ApiArgs),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a plugin, print its metadata and run it through its whole life.
    Check(commands::plugin_check::Args),
    /// List a running daemon's plugins.
    List(ApiArgs),
    /// Create a new plugin project that builds and passes `plugin check` as generated.
    New(commands::plugin_new::Args),
    /// Switch a running daemon's resources of a type to its newest loaded version.
    Upgrade {
        /// The type's name.
        #[arg(value_name = "TYPE")]
        type_name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Daemon(_) | Command::Monitor(_)) {
        init_tracing(false, "warn");
    }
    // A monitor worker runs on one thread: its tasks hand work to each other
    // (pipe reader, calls, prober, pipe writer), and on one thread that
    // costs a queue push rather than a cross-thread wakeup. A guest that
    // computes yields at every epoch tick (5 ms); timers and pipes are then
    // looked at between every two task polls, not every 61 (tokio's
    // default), or a few computing guests would hold every timer back by
    // a quarter of a second. Its tasks are few (probes run inside the
    // prober's), so the extra look costs next to nothing.
    let mut builder = match cli.command {
        Command::Monitor(_) => {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.event_interval(1);
            builder
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Daemon(args) => commands::daemon::run(args).await,
            Command::Validate(args) => commands::validate::run(args).await,
            Command::Status(api) => commands::client::status(&api).await,
            Command::Online(target) => commands::client::change(&target.api, &target.name, true).await,
            Command::Offline(target) => commands::client::change(&target.api, &target.name, false).await,
            Command::Events { api, history } => commands::client::events(&api, history).await,
            Command::Plugin(PluginCommand::Check(args)) => commands::plugin_check::run(args).await,
            Command::Plugin(PluginCommand::List(api)) => commands::client::plugin_list(&api).await,
            Command::Plugin(PluginCommand::New(args)) => commands::plugin_new::run(args).await,
            Command::Plugin(PluginCommand::Upgrade { type_name, api }) => {
                commands::client::plugin_upgrade(&api, &type_name).await
            }
            Command::Reload(api) => commands::client::reload(&api).await,
            Command::Apply { files, api } => commands::client::apply(&api, &files).await,
            Command::Config(ConfigCommand::Show(api)) => commands::client::config_show(&api).await,
            Command::Nodes(api) => commands::client::nodes(&api).await,
            Command::Why { group, api } => commands::client::why(&api, &group).await,
            Command::Move { group, node, api } => commands::client::move_group(&api, &group, node.as_deref()).await,
            Command::Ocf(args) => commands::ocf::run(args).await,
            Command::Token(TokenCommand::Create(args)) => commands::token::create(args),
            Command::Token(TokenCommand::List(args)) => commands::token::list(args),
            Command::Token(TokenCommand::Revoke(args)) => commands::token::revoke(args),
            Command::Monitor(args) => commands::monitor::run(args).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // The chain may quote the daemon's answer or a plugin's text.
            eprintln!("error: {}", steward_monitor::text::escape_control(&format!("{error:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, as text or JSON lines; `RUST_LOG` chooses what, and
/// `default` when it is unset (warnings for the CLI, info for the daemon).
/// Text lines go through [`steward_monitor::text::EscapingStderr`], so a plugin's
/// text can never forge a line or reach the terminal raw; JSON is safe as
/// it is.
pub(crate) fn init_tracing(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().with_writer(std::io::stderr).init();
    } else {
        builder.with_ansi(false).with_writer(steward_monitor::text::EscapingStderr).init();
    }
}
