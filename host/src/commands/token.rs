//! `steward token create --file FILE --name NAME --role read|operate`:
//! makes an API token, appends its hash to the tokens file a node file
//! names (`[node] api_tokens`) and prints the token, once.

use std::path::PathBuf;
use std::process::ExitCode;

use steward_config::tokens::{self, Role};

/// Arguments of `steward token create`.
#[derive(clap::Args)]
pub struct CreateArgs {
    /// The tokens file (created, mode 0600, if missing).
    #[arg(long)]
    file: PathBuf,
    /// The token's name: the event stream names it as the author of actions.
    #[arg(long)]
    name: String,
    /// What the token may do.
    #[arg(long, value_enum)]
    role: RoleArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    /// Status, events, metrics: reading only.
    Read,
    /// Everything, changes included.
    Operate,
}

/// Makes the token; the daemon reads the file at its next start.
pub fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    if args.name.is_empty() || args.name.chars().any(char::is_control) {
        eprintln!("error: --name must be non-empty text without control characters");
        return Ok(ExitCode::from(2));
    }
    let role = match args.role {
        RoleArg::Read => Role::Read,
        RoleArg::Operate => Role::Operate,
    };
    let (token, entry) = tokens::generate(&args.name, role)?;
    if let Err(error) = tokens::append(&args.file, &entry) {
        eprintln!("error: {error}");
        return Ok(ExitCode::FAILURE);
    }
    eprintln!(
        "token `{}` ({}) added to {}; it is shown this once, and the node reads it at its next start:",
        args.name,
        role.as_str(),
        args.file.display()
    );
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
