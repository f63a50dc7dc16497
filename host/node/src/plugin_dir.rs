//! Watches the plugin directory of a running daemon and says when a plugin
//! file is ready to load or was removed.
//!
//! A file is ready once its writer is done: inotify reports the writer
//! closing it (or the file being renamed into place, the way installers
//! and `mv` publish a file), and its size and modification time then stay
//! put for [`SETTLE`]. A file still being written is therefore never
//! loaded half-written. Writers inotify cannot see finishing (a network
//! file system) are covered by a quiet period of [`QUIET_FALLBACK`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::error::Error;

/// How long a finished file must stay unchanged before it is loaded.
pub const SETTLE: Duration = Duration::from_millis(200);

/// How long a file no finish was seen for must stay quiet before it is loaded.
pub const QUIET_FALLBACK: Duration = Duration::from_secs(10);

/// How often pending files are looked at.
const TICK: Duration = Duration::from_millis(50);

/// A change in the plugin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginFileChange {
    /// The file is complete and should be (re)loaded.
    Ready(PathBuf),
    /// The file is gone.
    Removed(PathBuf),
}

/// Watches `dir` until the returned watcher is dropped; changes arrive on
/// the receiver.
pub fn watch(dir: &Path) -> Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<PluginFileChange>), Error> {
    let (raw_sender, raw) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let _ = raw_sender.send(event);
    })
    .map_err(|e| watch_error(dir, e))?;
    watcher.watch(dir, RecursiveMode::NonRecursive).map_err(|e| watch_error(dir, e))?;
    let (changes, receiver) = mpsc::unbounded_channel();
    tokio::spawn(settle(raw, changes));
    Ok((watcher, receiver))
}

/// Whether `path` names a plugin: a `.wasm` file, not hidden (editors and
/// copy tools write hidden temporaries beside the real file).
pub fn is_plugin_file(path: &Path) -> bool {
    let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
    !hidden && path.extension().is_some_and(|e| e == "wasm")
}

fn watch_error(dir: &Path, error: notify::Error) -> Error {
    Error::Io {
        context: format!("cannot watch the plugin directory {}; new plugins need a restart", dir.display()),
        source: std::io::Error::other(error),
    }
}

/// What is known of a file that changed and is not loaded yet.
struct Pending {
    /// The last event about it.
    last_event: Instant,
    /// Whether its writer was seen finishing since the last write.
    finished: bool,
    /// Size and modification time when last looked at, and since when.
    stat: Option<(u64, SystemTime)>,
    stable_since: Instant,
}

async fn settle(
    mut raw: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    changes: mpsc::UnboundedSender<PluginFileChange>,
) {
    let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            event = raw.recv() => {
                let Some(event) = event else { break };
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::warn!(%error, "plugin directory watch error");
                        continue;
                    }
                };
                if let (EventKind::Modify(ModifyKind::Name(RenameMode::Both)), [from, to]) =
                    (&event.kind, event.paths.as_slice())
                {
                    // One event for a rename inside the directory: from, then to.
                    let gone = EventKind::Modify(ModifyKind::Name(RenameMode::From));
                    let arrived = EventKind::Modify(ModifyKind::Name(RenameMode::To));
                    for (path, kind) in [(from, gone), (to, arrived)] {
                        if is_plugin_file(path) {
                            note(&mut pending, &changes, path, &kind);
                        }
                    }
                    continue;
                }
                for path in event.paths.iter().filter(|p| is_plugin_file(p)) {
                    note(&mut pending, &changes, path, &event.kind);
                }
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                let mut ready = Vec::new();
                for (path, file) in pending.iter_mut() {
                    let stat = std::fs::metadata(path).ok().map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
                    if stat != file.stat {
                        file.stat = stat;
                        file.stable_since = now;
                        continue;
                    }
                    let stable = now.duration_since(file.stable_since) >= SETTLE;
                    let quiet = now.duration_since(file.last_event) >= QUIET_FALLBACK;
                    if stat.is_some() && stable && (file.finished || quiet) {
                        ready.push(path.clone());
                    }
                }
                // Files that vanished without a removal event seen.
                pending.retain(|_, file| file.stat.is_some() || now.duration_since(file.last_event) < QUIET_FALLBACK);
                for path in ready {
                    pending.remove(&path);
                    if changes.send(PluginFileChange::Ready(path)).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn note(
    pending: &mut HashMap<PathBuf, Pending>,
    changes: &mpsc::UnboundedSender<PluginFileChange>,
    path: &Path,
    kind: &EventKind,
) {
    let now = Instant::now();
    match kind {
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
            pending.remove(path);
            let _ = changes.send(PluginFileChange::Removed(path.to_path_buf()));
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any | RenameMode::Both)) => {
            let file = pending.entry(path.to_path_buf()).or_insert_with(|| fresh(now));
            file.last_event = now;
            file.finished = true;
        }
        EventKind::Create(_) | EventKind::Modify(_) => {
            let file = pending.entry(path.to_path_buf()).or_insert_with(|| fresh(now));
            file.last_event = now;
            file.finished = false;
        }
        _ => {}
    }
}

fn fresh(now: Instant) -> Pending {
    Pending { last_event: now, finished: false, stat: None, stable_since: now }
}
