//! The node's cluster lease as its workers hold it. Resources live in the
//! workers, which go on running when the daemon is paused (SIGSTOP) or
//! wedged, so the daemon alone cannot keep a promise that nothing runs past
//! its lease. It gives each worker a deadline instead, on the system's
//! monotonic clock (the same in every process, unlike `Instant`'s origin),
//! and extends it while etcd acknowledges its keepalives. A worker whose
//! deadline passes fences itself: it stops every probe, discards every
//! sandbox (killing the processes they spawned) and brings nothing online
//! until the deadline is extended. A node alone sends no deadline, and its
//! workers never fence.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Nanoseconds on `CLOCK_MONOTONIC`: comparable between the daemon and its
/// workers, and blind to changes of the wall clock.
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64)
}

/// A worker's lease: the deadline the daemon last gave, and whether it
/// passed.
#[derive(Default)]
pub struct WorkerLease {
    until: watch::Sender<Option<u64>>,
    fenced: AtomicBool,
}

impl WorkerLease {
    /// A lease with no deadline: nothing is ever fenced until one comes.
    pub fn new() -> Arc<WorkerLease> {
        Arc::new(WorkerLease::default())
    }

    /// The daemon's new deadline.
    pub fn extend(&self, until_ns: u64) {
        if until_ns > monotonic_ns() {
            self.fenced.store(false, Ordering::Release);
        }
        self.until.send_replace(Some(until_ns));
    }

    /// Whether the daemon ever gave a deadline: the node is in a cluster.
    pub fn is_held(&self) -> bool {
        self.until.borrow().is_some()
    }

    /// Whether the deadline passed and was not extended since.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Waits until the deadline passes unextended, then marks the lease
    /// fenced and returns; waits for ever while no deadline is set.
    pub async fn expired(&self) {
        let mut until = self.until.subscribe();
        loop {
            let deadline = *until.borrow_and_update();
            match deadline {
                Some(deadline) => {
                    let now = monotonic_ns();
                    if now >= deadline {
                        if !self.fenced.swap(true, Ordering::AcqRel) {
                            return;
                        }
                        // Already fenced: wait for an extension.
                        if until.changed().await.is_err() {
                            return std::future::pending().await;
                        }
                        continue;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_nanos(deadline - now)) => {}
                        changed = until.changed() => if changed.is_err() { return std::future::pending().await },
                    }
                }
                None => {
                    if until.changed().await.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }
}
