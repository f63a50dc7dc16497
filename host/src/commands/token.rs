//! `steward token create --file FILE --name NAME --role read|operate`:
//! makes an API token, appends its hash to the tokens file a node file
//! names (`[node] api_tokens`) and prints the token, once.
//! `steward token list --file FILE` and `steward token revoke --file FILE
//! --name NAME` show and take out tokens. A running node reads the file
//! again when it changes, so each counts at once.

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

/// Arguments of `steward token list`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// The tokens file.
    #[arg(long)]
    file: PathBuf,
}

/// Arguments of `steward token revoke`.
#[derive(clap::Args)]
pub struct RevokeArgs {
    /// The tokens file.
    #[arg(long)]
    file: PathBuf,
    /// The name of the token to take out.
    #[arg(long)]
    name: String,
}

/// Prints each token's name and role (the file holds no tokens, only their hashes).
pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let tokens = match tokens::ApiTokens::load(&args.file) {
        Ok(tokens) => tokens,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("{:<24} ROLE", "NAME");
    for entry in &tokens.entries {
        // Names are checked free of control characters when the file loads.
        println!("{:<24} {}", entry.name, entry.role.as_str());
    }
    Ok(ExitCode::SUCCESS)
}

/// Takes a token out; a running node refuses it from its next request.
pub fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    match tokens::revoke(&args.file, &args.name) {
        Ok(entry) => {
            eprintln!(
                "token `{}` ({}) taken out of {}; nodes refuse it from now on",
                entry.name,
                entry.role.as_str(),
                args.file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("error: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Makes the token; a running daemon takes it from its next request.
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
        "token `{}` ({}) added to {}; it is shown this once, and counts at once:",
        args.name,
        role.as_str(),
        args.file.display()
    );
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
