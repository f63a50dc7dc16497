//! Credentials the API re-reads when their files change: the tokens file
//! and the TLS certificate and key.
//!
//! An operator who makes a token, revokes one or renews a certificate
//! expects it to count at once, not at the daemon's next restart. A file
//! is checked (one `stat`) when it is used, at most once per
//! [`RECHECK_AFTER`]: a request's token, a connection's handshake. When
//! its identity (inode, size, modification time) changed, it is loaded
//! again. A change that does not load is logged and counts as a refusal:
//! a revoked token must not live on because the file that revokes it has
//! a typo.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long a check of the files holds: requests within it take the value
/// as it is, so a burst of requests costs one `stat` per file.
pub const RECHECK_AFTER: Duration = Duration::from_millis(500);

/// What identifies one version of a file; `None` while it is missing.
type Stamp = Option<(u64, u64, SystemTime)>;

fn stamp(path: &std::path::Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.len(), meta.modified().ok()?))
}

/// A value loaded from files, loaded again when they change.
pub struct Reloading<T> {
    what: &'static str,
    files: Vec<PathBuf>,
    load: Box<dyn Fn() -> Result<T, String> + Send + Sync>,
    state: Mutex<State<T>>,
}

struct State<T> {
    checked: Instant,
    stamps: Vec<Stamp>,
    current: Result<Arc<T>, String>,
}

impl<T> Reloading<T> {
    /// Holds `first`, which `load` made from `files` just now, and calls
    /// `load` again whenever one of them changes. `what` names the value
    /// in the log ("the tokens file").
    pub fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        first: T,
        load: impl Fn() -> Result<T, String> + Send + Sync + 'static,
    ) -> Reloading<T> {
        let stamps = files.iter().map(|file| stamp(file)).collect();
        let state = State { checked: Instant::now(), stamps, current: Ok(Arc::new(first)) };
        Reloading { what, files, load: Box::new(load), state: Mutex::new(state) }
    }

    /// The value as the files say now, or why they do not load.
    pub fn current(&self) -> Result<Arc<T>, String> {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            // Only a panicking `load` could poison the lock, and the
            // state it left is whole (new stamps, the last value): take it.
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.checked.elapsed() < RECHECK_AFTER {
            return state.current.clone();
        }
        state.checked = Instant::now();
        let stamps: Vec<Stamp> = self.files.iter().map(|file| stamp(file)).collect();
        if stamps != state.stamps {
            state.stamps = stamps;
            state.current = (self.load)().map(Arc::new);
            match &state.current {
                Ok(_) => tracing::info!(files = ?self.files, "{} changed; loaded again", self.what),
                Err(error) => {
                    tracing::error!(%error, "{} changed and does not load; refusing what it would allow until it is fixed", self.what)
                }
            }
        }
        state.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_loaded_again_and_a_bad_change_refuses_until_fixed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("value");
        std::fs::write(&file, "1").expect("write");
        let path = file.clone();
        let load = move || {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            text.trim().parse::<u32>().map_err(|e| format!("not a number: {e}"))
        };
        let value = Reloading::new("the value file", vec![file.clone()], 1, load);
        assert_eq!(*value.current().expect("loads"), 1);

        std::fs::write(&file, "22").expect("write");
        std::thread::sleep(RECHECK_AFTER);
        assert_eq!(*value.current().expect("loads"), 22);

        std::fs::write(&file, "twenty").expect("write");
        std::thread::sleep(RECHECK_AFTER);
        assert!(value.current().is_err_and(|e| e.contains("not a number")));

        std::fs::remove_file(&file).expect("remove");
        std::thread::sleep(RECHECK_AFTER);
        assert!(value.current().is_err(), "a missing file refuses");

        std::fs::write(&file, "3").expect("write");
        std::thread::sleep(RECHECK_AFTER);
        assert_eq!(*value.current().expect("loads"), 3);
    }
}
