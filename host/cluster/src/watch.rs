//! A watch that survives its stream: etcd-client's watch stream ends on any
//! error (a member restarted, lost its leader, the connection dropped) and
//! never reopens by itself, and a stream to a frozen member just goes
//! silent. Each reopening goes to the next member ([`StreamClients`]), so
//! a frozen or dead member costs one attempt. This loop asks for a progress notification every
//! [`PROGRESS_INTERVAL`], takes a stream that stays silent past
//! [`SILENCE_DEADLINE`] as broken, and reopens from the revision after the
//! last one it delivered, so no change is lost or repeated; when etcd has
//! compacted that history away, it reads the whole range again and hands
//! it over as one [`Change::Resync`].

use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions, WatchResponse, WatchStream};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, timeout};
use tracing::{debug, warn};

/// How often a progress notification is asked for: a silent stream is
/// found out within a few of these.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
/// A stream with no message for this long is dead (a frozen member keeps
/// its TCP connection open, so nothing else would tell).
const SILENCE_DEADLINE: Duration = Duration::from_millis(2000);
/// Reopening backs off from this...
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// ...up to this, so an etcd outage costs a few requests a second at most.
const MAX_BACKOFF: Duration = Duration::from_millis(1000);

/// One key as etcd holds it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) create_revision: i64,
    pub(crate) mod_revision: i64,
    pub(crate) lease: i64,
}

impl Entry {
    pub(crate) fn from_key_value(kv: &KeyValue) -> Option<Entry> {
        let Ok(key) = kv.key_str() else {
            warn!(key = ?kv.key(), "skipping an etcd key that is not UTF-8");
            return None;
        };
        Some(Entry {
            key: key.to_string(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        })
    }
}

/// A change seen by the watch.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    Put(Entry),
    /// A key was deleted (or its lease ran out); `previous` is what it held,
    /// when etcd still had it.
    Delete {
        key: String,
        previous: Option<Entry>,
    },
    /// The history was compacted past the watch: the whole range as it is now.
    Resync(Vec<Entry>),
}

/// What to watch.
#[derive(Clone, Debug)]
pub(crate) struct WatchSpec {
    pub(crate) key: String,
    pub(crate) prefix: bool,
    /// The first revision to deliver: one past the revision of the read the
    /// caller started from.
    pub(crate) start_revision: i64,
    pub(crate) request_timeout: Duration,
    /// For the log: what this watch is for.
    pub(crate) label: &'static str,
}

/// What a watch delivers, in order, from a task of its own; dropping it
/// stops the task.
pub struct Subscription<T> {
    events: tokio::sync::mpsc::UnboundedReceiver<T>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Subscription<T> {
    pub(crate) fn new(events: tokio::sync::mpsc::UnboundedReceiver<T>, task: tokio::task::JoinHandle<()>) -> Self {
        Subscription { events, task }
    }

    /// The next item; `None` only if the watch task died.
    pub async fn recv(&mut self) -> Option<T> {
        self.events.recv().await
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client per etcd member, for long-lived streams.
///
/// The balanced channel of a client over all members keeps handing new
/// streams to a member whose process is frozen (its socket still accepts),
/// so a stream reopened after a stall can land on the same stuck member
/// again and again. Streams instead go to one member at a time and move
/// to the next whenever one breaks.
#[derive(Clone)]
pub(crate) struct StreamClients {
    clients: Vec<Client>,
    next: usize,
}

impl StreamClients {
    pub(crate) fn new(clients: Vec<Client>) -> StreamClients {
        StreamClients { clients, next: 0 }
    }

    /// The member to use now.
    pub(crate) fn current(&self) -> &Client {
        // Never empty: `membership::join` refuses an empty endpoint list.
        &self.clients[self.next % self.clients.len()]
    }

    /// Moves on to the next member, after a stream on this one failed.
    pub(crate) fn rotate(&mut self) {
        self.next = (self.next + 1) % self.clients.len().max(1);
    }
}

/// Delivers every change of `spec`'s range to `handle` until it returns false.
pub(crate) async fn run(mut clients: StreamClients, spec: WatchSpec, mut handle: impl FnMut(Change) -> bool) {
    let mut next_revision = spec.start_revision;
    let mut backoff = MIN_BACKOFF;
    loop {
        let client = clients.current().clone();
        let mut options = WatchOptions::new().with_start_revision(next_revision).with_prev_key();
        if spec.prefix {
            options = options.with_prefix();
        }
        let opened = timeout(spec.request_timeout, client.watch_client().watch(spec.key.clone(), Some(options))).await;
        let end = match opened {
            Ok(Ok(mut stream)) => follow(&mut stream, &mut next_revision, &mut backoff, &mut handle).await,
            Ok(Err(error)) => StreamEnd::Broken(error.to_string()),
            Err(_) => StreamEnd::Broken(format!("no answer to the watch request within {:?}", spec.request_timeout)),
        };
        match end {
            StreamEnd::Stop => return,
            StreamEnd::Broken(reason) => {
                debug!(watch = spec.label, %reason, next_revision, "watch stream broke; reopening")
            }
            StreamEnd::Compacted => match resync(&client, &spec).await {
                Ok((entries, revision)) => {
                    warn!(watch = spec.label, next_revision, "watch history was compacted; read the range again");
                    next_revision = revision + 1;
                    if !handle(Change::Resync(entries)) {
                        return;
                    }
                    continue;
                }
                Err(reason) => debug!(watch = spec.label, %reason, "re-reading a compacted range failed; retrying"),
            },
        }
        clients.rotate();
        sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum StreamEnd {
    Stop,
    Broken(String),
    Compacted,
}

async fn follow(
    stream: &mut WatchStream,
    next_revision: &mut i64,
    backoff: &mut Duration,
    handle: &mut impl FnMut(Change) -> bool,
) -> StreamEnd {
    let mut progress = interval(PROGRESS_INTERVAL);
    progress.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_message = Instant::now();
    loop {
        tokio::select! {
            message = stream.message() => {
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => return StreamEnd::Broken("the stream ended".to_string()),
                    Err(error) => return StreamEnd::Broken(error.to_string()),
                };
                last_message = Instant::now();
                *backoff = MIN_BACKOFF;
                if let Some(end) = apply(&response, next_revision, handle) {
                    return end;
                }
            }
            _ = progress.tick() => {
                if last_message.elapsed() > SILENCE_DEADLINE {
                    return StreamEnd::Broken(format!("no message for {SILENCE_DEADLINE:?}"));
                }
                if let Err(error) = stream.request_progress().await {
                    return StreamEnd::Broken(error.to_string());
                }
            }
        }
    }
}

fn apply(
    response: &WatchResponse,
    next_revision: &mut i64,
    handle: &mut impl FnMut(Change) -> bool,
) -> Option<StreamEnd> {
    if response.canceled() {
        if response.compact_revision() > 0 {
            return Some(StreamEnd::Compacted);
        }
        return Some(StreamEnd::Broken(format!("etcd cancelled the watch: {}", response.cancel_reason())));
    }
    if response.created() {
        // The creation answer's revision is the store's, not how far the
        // events delivered so far reach: nothing to record.
        return None;
    }
    if response.events().is_empty() {
        // A progress notification: every change up to its revision has been
        // delivered (etcd sends one only when the watch is caught up).
        if let Some(header) = response.header() {
            *next_revision = (*next_revision).max(header.revision() + 1);
        }
        return None;
    }
    for event in response.events() {
        let Some(kv) = event.kv() else { continue };
        *next_revision = (*next_revision).max(kv.mod_revision() + 1);
        let change = match event.event_type() {
            EventType::Put => match Entry::from_key_value(kv) {
                Some(entry) => Change::Put(entry),
                None => continue,
            },
            EventType::Delete => match kv.key_str() {
                Ok(key) => {
                    Change::Delete { key: key.to_string(), previous: event.prev_kv().and_then(Entry::from_key_value) }
                }
                Err(_) => continue,
            },
        };
        if !handle(change) {
            return Some(StreamEnd::Stop);
        }
    }
    None
}

/// Reads `spec`'s whole range now: its entries and the revision they are at.
async fn resync(client: &Client, spec: &WatchSpec) -> Result<(Vec<Entry>, i64), String> {
    let options = if spec.prefix { Some(GetOptions::new().with_prefix()) } else { None };
    let response = timeout(spec.request_timeout, client.kv_client().get(spec.key.clone(), options))
        .await
        .map_err(|_| format!("no answer within {:?}", spec.request_timeout))?
        .map_err(|error| error.to_string())?;
    let revision = response.header().map(|header| header.revision()).unwrap_or_default();
    Ok((response.kvs().iter().filter_map(Entry::from_key_value).collect(), revision))
}
