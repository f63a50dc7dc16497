//! Grants made real: each new sandbox's WASI context (only the granted
//! directories and addresses), its process table (only the granted
//! programs) and its symlink check, built from the plain
//! [`Grants`](steward_config::grants::Grants) the configuration holds.
//!
//! A granted directory is the guest's to change, with one exception: a
//! symlink it makes must point inside the granted directory that holds it
//! ([`SymlinkGuard`]). WASI never follows a link out of a preopen, but the
//! operator's tools and the programs the resource spawns would.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use steward_config::grants::Grants;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::error::{Error, Result};
use crate::guest_log::StderrTail;
use crate::process::ProcessTable;

/// Builds the WASI context of a new instance: only the granted
/// directories, stderr into `stderr`, nothing else.
pub fn wasi_context(grants: &Grants, resource: &str, stderr: &StderrTail) -> Result<WasiCtx> {
    let mut builder = WasiCtxBuilder::new();
    builder.stderr(stderr.clone());
    // Measured: file I/O through the blocking pool costs 110-160 us per
    // call; inline on the calling thread, ~30 us. A plugin's file access
    // is small and local, and the call's deadline still bounds it.
    builder.allow_blocking_current_thread(true);
    builder.allow_udp(false).allow_ip_name_lookup(false).allow_tcp(!grants.network.is_empty());
    let allowed: Arc<[SocketAddr]> = grants.network.clone().into();
    builder.socket_addr_check(move |addr, usage| {
        let permitted = match usage {
            SocketAddrUse::TcpConnect => allowed.contains(&addr),
            // A connect binds implicitly to the wildcard address first.
            SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
            _ => false,
        };
        Box::pin(async move { permitted })
    });
    for directory in &grants.directories {
        let perms = if directory.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        builder.preopened_dir(&directory.host_path, &directory.guest_path, perms).map_err(|e| Error::InvalidGrant {
            resource: resource.to_string(),
            grant: format!("directories: {}", directory.host_path.display()),
            reason: format!("cannot open it: {e:#}"),
        })?;
    }
    Ok(builder.build())
}

/// The process table of a new instance: only the granted programs, and
/// the still-running processes of `adopt` (from an earlier run).
pub fn process_table(grants: &Grants, adopt: &[crate::process::TrackedProcess]) -> ProcessTable {
    ProcessTable::new(grants.programs.clone(), adopt)
}

/// The symlink check of a new instance, over its granted directories.
pub fn symlink_guard(grants: &Grants) -> SymlinkGuard {
    // Canonical, as the kernel names a directory descriptor's path. A
    // directory that cannot be resolved is left out, which refuses
    // every symlink in it rather than letting any through.
    let roots = grants.directories.iter().filter_map(|directory| directory.host_path.canonicalize().ok()).collect();
    SymlinkGuard { roots }
}

/// Decides whether a symlink the guest asks to make stays inside the granted
/// directory that holds it.
///
/// A target is allowed when it is relative, its `..` components (if any)
/// all come first, and they climb no higher than the granted directory
/// from the directory the link is made in. That directory is found as the
/// kernel resolves it: the host path of the guest's directory descriptor
/// (which may be a subdirectory it opened, not the preopen itself), through
/// `/proc/self/fd`, joined with the link's own parent path, with every
/// symlink on the way followed, so a link made through an in-grant link to
/// `.` is judged where it really lands.
///
/// `..` after a name is refused, even when it reads as staying inside: if
/// the name is a symlink, `..` leads to the parent of where it points, not
/// back to where the walk was (`here/../file`, with `here` a link to the
/// granted directory itself, is outside). Names after the leading `..` are
/// not followed: any symlink among them is inside the grant, made by the
/// guest under this same check or by the operator.
///
/// Left open: renaming a link, or a directory holding one, to a shallower
/// place changes where its leading `..` lead; `rename-at` is not checked.
#[derive(Debug, Default)]
pub struct SymlinkGuard {
    /// The granted host directories, canonical.
    roots: Vec<PathBuf>,
}

/// Why a symlink was not made.
#[derive(Debug, thiserror::Error)]
pub enum SymlinkRefused {
    /// Its target would lead out of the granted directory.
    #[error("its target leads out of the granted directory: {0}")]
    Escapes(String),
    /// Where the link would be made could not be resolved (for example, its
    /// directory does not exist); the guest gets the error the OS gave.
    #[error("its directory cannot be resolved: {0}")]
    Unresolved(#[source] std::io::Error),
}

impl SymlinkGuard {
    /// Checks a symlink to `target` that the guest asks to make at `link`,
    /// a path relative to the open directory `directory`.
    pub fn check(&self, directory: &std::fs::File, link: &str, target: &str) -> Result<(), SymlinkRefused> {
        let climbs = leading_parent_dirs(target)?;
        let link_parent = Path::new(link).parent().unwrap_or(Path::new(""));
        let descriptor_path = PathBuf::from(format!("/proc/self/fd/{}", directory.as_raw_fd()));
        let link_dir = descriptor_path.join(link_parent).canonicalize().map_err(SymlinkRefused::Unresolved)?;
        // The innermost grant holding the link: with nested grants, the
        // stricter choice.
        let root = self
            .roots
            .iter()
            .filter(|root| link_dir.starts_with(root))
            .max_by_key(|root| root.components().count())
            .ok_or_else(|| {
                SymlinkRefused::Escapes("the link itself would be outside every granted directory".into())
            })?;
        let depth = link_dir.strip_prefix(root).map(|below| below.components().count()).unwrap_or(0);
        if climbs > depth {
            return Err(SymlinkRefused::Escapes(format!(
                "it climbs {climbs} directories from one {depth} below the granted directory"
            )));
        }
        Ok(())
    }
}

/// How many `..` a symlink target starts with, once `.` components are
/// dropped; refuses an absolute target and a `..` after a name.
fn leading_parent_dirs(target: &str) -> Result<usize, SymlinkRefused> {
    let mut climbs = 0;
    let mut named = false;
    for component in Path::new(target).components() {
        match component {
            Component::RootDir | Component::Prefix(_) => {
                return Err(SymlinkRefused::Escapes("it is absolute".into()));
            }
            Component::CurDir => {}
            Component::ParentDir if named => {
                return Err(SymlinkRefused::Escapes(
                    "`..` after a name, which leads elsewhere when the name is a symlink".into(),
                ));
            }
            Component::ParentDir => climbs += 1,
            Component::Normal(_) => named = true,
        }
    }
    Ok(climbs)
}

#[cfg(test)]
mod tests {
    use steward_config::grants::DirectoryGrant;

    use super::*;

    fn guard(root: &Path) -> SymlinkGuard {
        symlink_guard(&Grants {
            directories: vec![DirectoryGrant { host_path: root.into(), guest_path: "/data".into(), read_only: false }],
            ..Grants::default()
        })
    }

    #[test]
    fn symlinks_stay_inside_their_grant() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let root = scratch.path().join("data");
        std::fs::create_dir_all(root.join("sub/deeper")).expect("mkdir");
        std::os::unix::fs::symlink(".", root.join("here")).expect("symlink");
        let guard = guard(&root);
        let at_root = std::fs::File::open(&root).expect("open");
        let at_sub = std::fs::File::open(root.join("sub")).expect("open");
        let allowed = [
            (&at_root, "link", "file"),
            (&at_root, "link", "./sub/./file"),
            (&at_root, "sub/link", "../file"),
            (&at_root, "sub/deeper/link", "../../file"),
            (&at_root, "link", "."),
            (&at_sub, "link", "../file"),
            (&at_sub, "deeper/link", "../../x"),
            (&at_root, "link", ""),
        ];
        for (directory, link, target) in allowed {
            guard.check(directory, link, target).unwrap_or_else(|e| panic!("{link} -> {target}: {e}"));
        }
        let refused = [
            (&at_root, "link", "../x"),
            (&at_root, "link", "/etc/passwd"),
            (&at_root, "sub/link", "../../x"),
            (&at_sub, "link", "../../x"),
            (&at_root, "here/link", "../x"),
            (&at_root, "link", "here/../file"),
            (&at_root, "link", "sub/../../x"),
        ];
        for (directory, link, target) in refused {
            let refusal = guard.check(directory, link, target).expect_err(&format!("{link} -> {target}"));
            assert!(matches!(refusal, SymlinkRefused::Escapes(_)), "{link} -> {target}: {refusal}");
        }
        let missing = guard.check(&at_root, "no-such-dir/link", "file").expect_err("no such directory");
        assert!(matches!(missing, SymlinkRefused::Unresolved(_)), "{missing}");
        let ungranted = SymlinkGuard::default().check(&at_root, "link", "file").expect_err("no grant");
        assert!(matches!(ungranted, SymlinkRefused::Escapes(_)), "{ungranted}");
    }
}
