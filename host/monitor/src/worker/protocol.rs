//! The typed protocol between the daemon and a monitor worker: postcard
//! values in length-delimited frames, over the worker's stdin (requests)
//! and stdout (replies and events).
//!
//! An open or a call carries an id that its one reply repeats. Probing
//! runs in the worker itself, as the classic resource monitor polls its
//! resources: the daemon says which resources to probe and how often, and
//! hears only of failures, plus probe counts every [`PROBE_STATS_EVERY`].
//! Events (a plugin's `signal-failure`, notices) are sent unasked.

use std::path::PathBuf;

use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::bytes::Bytes;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::bindings::{CallContext, CheckLevel, ClusterEvent, Health};
use crate::events::EventKind;
use crate::monitor::{CallError, ResourceSpec};
use crate::process::TrackedProcess;
use steward_policy::failure::Failure;

/// How often a worker reports how many probes it ran.
pub const PROBE_STATS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The largest frame either side accepts: a `control` output (1 MiB) with room.
pub const MAX_FRAME_BYTES: usize = 4 << 20;

/// What the daemon asks of a worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Create (or re-create) a resource's handle and open it in a fresh sandbox.
    Open {
        /// Echoed in the reply.
        id: u64,
        /// The plugin version's file (content-addressed, so it never changes).
        plugin: PathBuf,
        /// The resource.
        spec: Box<ResourceSpec>,
        /// Set when the instance is re-created for a resource that is online:
        /// `online` is called again after `open` (the contract makes it
        /// idempotent), so an instance that keeps its state in memory picks
        /// up where the lost one was, while one that adopted its processes
        /// in `open` does nothing more.
        resume: Option<CallContext>,
        /// Drop the instance this one replaces without killing its
        /// processes (they are adopted by this one): a version switch.
        keep_processes: bool,
    },
    /// Call into one resource.
    Call {
        /// Echoed in the reply.
        id: u64,
        /// The resource.
        resource: String,
        /// What to call.
        call: Call,
    },
    /// Probe a resource periodically from now on (replacing its earlier
    /// schedule); a failure is a [`Response::ProbeFailed`] and ends it.
    StartProbes {
        /// Names this schedule in failures and counts.
        generation: u64,
        /// The resource.
        resource: String,
        /// How often `looks-alive` runs.
        looks_every: std::time::Duration,
        /// How often `is-alive` runs.
        is_every: std::time::Duration,
        /// Probe once at once (the instance was just re-created).
        immediately: bool,
    },
    /// The node's cluster lease runs until `until_ns` on the system's
    /// monotonic clock ([`super::lease::monotonic_ns`]); past it, unextended,
    /// the worker fences itself. Never sent by a node alone.
    Lease {
        /// The deadline.
        until_ns: u64,
    },
    /// Stop probing a resource.
    StopProbes {
        /// The resource.
        resource: String,
    },
    /// Are you there? Answered at once, whatever the instances are doing.
    Ping {
        /// Echoed in the pong.
        id: u64,
    },
    /// Close every instance (killing what they spawned unless `release`)
    /// and exit.
    Shutdown {
        /// Leave the spawned processes running (the node was told to).
        release: bool,
    },
}

/// One call into a resource.
#[derive(Debug, Serialize, Deserialize)]
pub enum Call {
    /// `online`, in a fresh sandbox of the same version first if the last
    /// one was discarded (a restart after a failure is then one round
    /// trip); answered with the processes it runs.
    Online(CallContext),
    /// `offline` if it has a live sandbox; answered with the processes it
    /// still runs.
    Offline(CallContext),
    /// `terminate`, then kill what it spawned; nothing if it has no live
    /// sandbox (a failed one's processes died with it).
    Terminate,
    /// `looks-alive`.
    LooksAlive,
    /// `is-alive`.
    IsAlive(CheckLevel),
    /// `control`.
    Control {
        /// The operation.
        code: String,
        /// Its input.
        input: String,
    },
    /// `notify` with each event, in order, stopping at the first failure:
    /// the events queued for one resource travel in one round trip.
    Notify(Vec<ClusterEvent>),
    /// Whether it has a live sandbox.
    IsLive,
    /// The still-running processes it tracks.
    RunningProcesses,
    /// Drop the sandbox, leaving its processes running.
    Release,
    /// Drop the sandbox, killing its processes.
    Close,
}

/// A successful call's value.
#[derive(Debug, Serialize, Deserialize)]
pub enum Value {
    /// Nothing to say.
    Done,
    /// A yes or no.
    Bool(bool),
    /// `is-alive`'s answer.
    Health(Health),
    /// `control`'s output.
    Text(String),
    /// Tracked processes.
    Processes(Vec<TrackedProcess>),
}

/// How a probe ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeOutcome {
    /// The resource is healthy.
    Healthy,
    /// The resource failed: how, and why. A false `looks-alive` is
    /// confirmed by a thorough `is-alive` before it counts.
    Failed(Failure),
    /// The worker was lost before the probe ended; it says nothing about
    /// the resource.
    Lost,
}

/// What a worker tells the daemon.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// The answer to an [`Request::Open`] or [`Request::Call`].
    Reply {
        /// The request's id.
        id: u64,
        /// Its outcome.
        result: Result<Value, CallError>,
    },
    /// The answer to a [`Request::Ping`].
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// What the worker reports unasked, which the daemon hands to the node
    /// as it is.
    Report(Report),
}

/// What a worker reports unasked.
#[derive(Debug, Serialize, Deserialize)]
pub enum Report {
    /// Something a resource's sandbox reported that the operator should
    /// see: progress while pending, log records dropped, a process spawned,
    /// a capability refused. (Failures travel as replies and probe
    /// outcomes; a signalled failure has its own message.)
    Notice {
        /// The resource.
        resource: String,
        /// What happened.
        kind: EventKind,
    },
    /// A plugin called `signal-failure`.
    SignalledFailure {
        /// The resource.
        resource: String,
        /// The plugin's reason.
        reason: String,
    },
    /// A periodic probe failed; that schedule has ended.
    ProbeFailed {
        /// The schedule.
        generation: u64,
        /// How, and why.
        failure: Failure,
    },
    /// Probes run since the last report, per schedule.
    ProbeStats(Vec<ProbeCount>),
}

/// Probes one schedule ran since the last report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeCount {
    /// The schedule.
    pub generation: u64,
    /// How many probes ended.
    pub probes: u64,
    /// Their total duration, in nanoseconds.
    pub nanos: u64,
    /// How many fell in each latency bucket ([`crate::latency`]), for the
    /// buckets that grew.
    pub buckets: Vec<(u8, u32)>,
}

/// The length-delimited codec both sides use.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME_BYTES).new_codec()
}

/// Reads typed messages from `reader`.
pub struct Reader<R> {
    frames: FramedRead<R, LengthDelimitedCodec>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Wraps `reader`.
    pub fn new(reader: R) -> Self {
        Reader { frames: FramedRead::new(reader, codec()) }
    }

    /// The next message; `None` at the end of the stream. A frame that does
    /// not decode is an error: the two sides are the same binary, so it
    /// means the stream is corrupt and the connection must go.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Option<std::io::Result<T>> {
        let frame = match self.frames.next().await? {
            Ok(frame) => frame,
            Err(error) => return Some(Err(error)),
        };
        Some(postcard::from_bytes(&frame).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }
}

/// Writes typed messages to `writer`, flushing only when asked, so a burst
/// of messages costs one write.
pub struct Writer<W> {
    frames: FramedWrite<W, LengthDelimitedCodec>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Wraps `writer`.
    pub fn new(writer: W) -> Self {
        Writer { frames: FramedWrite::new(writer, codec()) }
    }

    /// Queues one message.
    pub async fn feed<T: Serialize>(&mut self, message: &T) -> std::io::Result<()> {
        let bytes =
            postcard::to_allocvec(message).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.frames.feed(Bytes::from(bytes)).await
    }

    /// Writes what is queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        SinkExt::<Bytes>::flush(&mut self.frames).await
    }
}

/// Drains `messages` into `writer`, one flush per burst, until the channel
/// closes or the pipe breaks.
pub async fn pump<T: Serialize, W: AsyncWrite + Unpin>(
    mut messages: tokio::sync::mpsc::UnboundedReceiver<T>,
    mut writer: Writer<W>,
) -> std::io::Result<()> {
    while let Some(message) = messages.recv().await {
        writer.feed(&message).await?;
        while let Ok(message) = messages.try_recv() {
            writer.feed(&message).await?;
        }
        writer.flush().await?;
    }
    Ok(())
}
