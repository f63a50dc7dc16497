//! API tokens: who may use a node's TCP listener, and for what.
//!
//! The node file names a tokens file (`[node] api_tokens`). It holds one
//! `[[token]]` table per token: a name (what the event stream says did an
//! action), a role (`read`: status, events, metrics; `operate`: every
//! change too) and the SHA-256 of the token, never the token itself, so
//! the file tells a reader nothing they could present.
//! `steward token create` makes a token from 32 random bytes, appends its
//! hash and prints it once; `steward token revoke` takes one out. A running
//! node reads the file again when it changes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ConfigError;

/// The most bytes a tokens file may have: it holds hashes, not data.
const MAX_TOKENS_FILE_BYTES: u64 = 1 << 20;

/// Every token starts with this, so a token pasted in the wrong place is
/// recognisable (and a secret scanner can find one).
pub const TOKEN_PREFIX: &str = "stw_";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Status, resources, groups, plugins, events, metrics, `why`, the
    /// shared configuration: everything that is read.
    Read,
    /// Everything `read` may, and every change: online, offline, move,
    /// reload, upgrade, apply.
    Operate,
}

impl Role {
    /// The role's name, as the file and the API write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
        }
    }
}

/// One token of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it: the event stream names it as the author of actions.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The SHA-256 of the token, in lower-case hex.
    pub sha256: String,
}

/// The tokens of a node, as read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokens {
    /// The file they were read from.
    pub file: PathBuf,
    /// Every token, in file order.
    pub entries: Vec<TokenEntry>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

impl ApiTokens {
    /// Reads and checks `file`: every error names it, with the line where
    /// the file says it.
    pub fn load(file: &Path) -> Result<ApiTokens, ConfigError> {
        let at = |message: String| ConfigError { location: file.display().to_string(), message };
        let metadata = std::fs::metadata(file).map_err(|e| {
            at(format!(
                "cannot read the tokens file: {e}; create it with `steward token create --file {}`",
                file.display()
            ))
        })?;
        if !metadata.is_file() || metadata.len() > MAX_TOKENS_FILE_BYTES {
            return Err(at("not a regular file of at most 1 MiB; name the file `steward token create` writes".into()));
        }
        let text = std::fs::read_to_string(file).map_err(|e| at(format!("cannot read the tokens file: {e}")))?;
        let parsed: TokensFile = crate::parse(file, &text)?;
        for entry in &parsed.token {
            let valid_hash = entry.sha256.len() == 64 && entry.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid_hash {
                return Err(at(format!(
                    "token `{}`: sha256 must be 64 hex digits (the SHA-256 of the token); make tokens with `steward token create`",
                    entry.name
                )));
            }
            if entry.name.is_empty() || entry.name.chars().any(char::is_control) {
                return Err(at("a token's name must be non-empty text without control characters".into()));
            }
        }
        Ok(ApiTokens { file: file.to_path_buf(), entries: parsed.token })
    }

    /// The entry of `token`, if it is one of these.
    pub fn check(&self, token: &str) -> Option<&TokenEntry> {
        let hash = hash_hex(token);
        self.entries.iter().find(|entry| entry.sha256.eq_ignore_ascii_case(&hash))
    }
}

/// A new token named `name` with `role`: the token (to print once) and its
/// entry (to append to the file).
pub fn generate(name: &str, role: Role) -> std::io::Result<(String, TokenEntry)> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = format!("{TOKEN_PREFIX}{}", hex(&bytes));
    let entry = TokenEntry { name: name.to_string(), role, sha256: hash_hex(&token) };
    Ok((token, entry))
}

/// Appends `entry` to the tokens file `file`, creating it (mode 0600) if
/// it does not exist. The file is replaced in one rename, so a node that
/// reads it meanwhile sees it before or after, never half written.
pub fn append(file: &Path, entry: &TokenEntry) -> Result<(), ConfigError> {
    let at = |message: String| ConfigError { location: file.display().to_string(), message };
    let mut text = String::new();
    if file.exists() {
        let known = ApiTokens::load(file)?;
        if known.entries.iter().any(|known| known.name == entry.name) {
            return Err(at(format!("a token named `{}` exists; give the new one another name", entry.name)));
        }
        text = std::fs::read_to_string(file).map_err(|e| at(format!("cannot read the tokens file: {e}")))?;
    }
    let table = toml::to_string(&TokensFile { token: vec![entry.clone()] })
        .map_err(|e| at(format!("cannot write the token: {e}")))?;
    text.push('\n');
    text.push_str(&table);
    replace(file, &text).map_err(|e| at(format!("cannot write the tokens file: {e}")))
}

/// Takes the token named `name` out of `file`, which is written anew (in
/// one rename, mode 0600; comments in it are not kept). Returns the entry
/// that went.
pub fn revoke(file: &Path, name: &str) -> Result<TokenEntry, ConfigError> {
    let at = |message: String| ConfigError { location: file.display().to_string(), message };
    let mut known = ApiTokens::load(file)?;
    let Some(index) = known.entries.iter().position(|entry| entry.name == name) else {
        let names: Vec<&str> = known.entries.iter().map(|entry| entry.name.as_str()).collect();
        return Err(at(format!("there is no token named `{name}`; the file names: {}", names.join(", "))));
    };
    let revoked = known.entries.remove(index);
    let text = toml::to_string(&TokensFile { token: known.entries })
        .map_err(|e| at(format!("cannot write the tokens: {e}")))?;
    replace(file, &text).map_err(|e| at(format!("cannot write the tokens file: {e}")))?;
    Ok(revoked)
}

/// Writes `text` to `file` through a file beside it and a rename. The new
/// file keeps the old one's mode, owner and group (the daemon may read it
/// as another user than the one who runs the CLI); a new file gets 0600.
fn replace(file: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let partial = file.with_extension("partial");
    let old = std::fs::metadata(file).ok();
    let written = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .and_then(|mut out| {
            if let Some(old) = &old {
                out.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))?;
                // Only root may give a file away; anyone else keeps their own.
                let _ = std::os::unix::fs::fchown(&out, Some(old.uid()), Some(old.gid()));
            }
            out.write_all(text.as_bytes()).and_then(|()| out.sync_all())
        })
        .and_then(|()| std::fs::rename(&partial, file));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

fn hash_hex(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_checks_against_its_file_and_others_do_not() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("tokens");
        let (operate, entry) = generate("ci", Role::Operate).expect("random bytes");
        append(&file, &entry).expect("appended");
        let (read, entry) = generate("viewer", Role::Read).expect("random bytes");
        append(&file, &entry).expect("appended");
        let tokens = ApiTokens::load(&file).expect("the file reads back");
        assert_eq!(tokens.check(&operate).map(|e| (e.name.as_str(), e.role)), Some(("ci", Role::Operate)));
        assert_eq!(tokens.check(&read).map(|e| e.role), Some(Role::Read));
        assert!(tokens.check("stw_nothing").is_none());
        assert!(!std::fs::read_to_string(&file).expect("text").contains(&operate), "the file holds no token");
        let again = append(&file, &generate("ci", Role::Read).expect("random bytes").1);
        assert!(again.is_err_and(|e| e.message.contains("exists")));

        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert_eq!(revoke(&file, "ci").expect("revoked").role, Role::Operate);
        let mode = std::fs::metadata(&file).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "a rewritten file keeps its mode");
        let tokens = ApiTokens::load(&file).expect("the file reads back");
        assert!(tokens.check(&operate).is_none(), "a revoked token is refused");
        assert!(tokens.check(&read).is_some(), "the others stay");
        let unknown = revoke(&file, "ci").expect_err("revoked already");
        assert!(unknown.message.contains("no token named `ci`") && unknown.message.contains("viewer"), "{unknown}");
    }

    #[test]
    fn a_malformed_tokens_file_names_itself_and_the_line() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("tokens");
        std::fs::write(&file, "[[token]]\nname = \"x\"\nrole = \"admin\"\nsha256 = \"00\"\n").expect("written");
        let error = ApiTokens::load(&file).expect_err("an unknown role is refused");
        assert!(error.location.starts_with(&format!("{}:3", file.display())), "{error}");
        let missing = ApiTokens::load(&dir.path().join("nope")).expect_err("a missing file is refused");
        assert!(missing.to_string().contains("nope") && missing.message.contains("steward token create"));
    }
}
