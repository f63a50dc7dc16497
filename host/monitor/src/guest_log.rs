//! Guest output into the host's `tracing`, bounded.
//!
//! A guest's log records and its stderr are tagged with the resource's name.
//! A flooding guest costs the host a fixed budget: records past the rate
//! limit are counted and dropped, never queued, and the count is reported
//! at most once per [`DROP_REPORT_INTERVAL`], with the next record the guest
//! gets through: a flooding guest gets one summary line a second, not one
//! per record the refilling bucket lets pass. Stderr (where a Rust guest's
//! panic message goes) keeps only its last few KiB, so a failure report can
//! quote it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::bindings::LogLevel;

/// The longest log message kept; longer ones are cut. Guest memory is capped,
/// but a 64 MiB log line is still not something an operator wants.
pub const MAX_LOG_MESSAGE_BYTES: usize = 8 << 10;

/// Fields kept per record; a structured log with more is a bug, not data.
pub const MAX_LOG_FIELDS: usize = 32;

/// Records a guest may write in a burst before the rate limit applies.
pub const LOG_BURST: f64 = 200.0;

/// Records per second a guest may write once its burst is spent.
pub const LOG_RATE_PER_SECOND: f64 = 100.0;

/// The least time between two "records dropped" summaries of one instance.
pub const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes of stderr kept for failure reports.
pub const STDERR_TAIL_BYTES: usize = 4 << 10;

/// The log budget of one instance: a token bucket.
#[derive(Debug)]
pub struct GuestLog {
    tokens: f64,
    refilled_at: Instant,
    dropped: u64,
    dropped_total: u64,
    /// When the last summary of dropped records was written.
    reported_at: Option<Instant>,
}

impl Default for GuestLog {
    fn default() -> Self {
        GuestLog { tokens: LOG_BURST, refilled_at: Instant::now(), dropped: 0, dropped_total: 0, reported_at: None }
    }
}

impl GuestLog {
    /// Emits one record if the budget allows. Returns the number of records
    /// dropped since the last summary, when a summary is written.
    pub fn record(
        &mut self,
        resource: &str,
        level: LogLevel,
        message: &str,
        fields: &[(String, String)],
    ) -> Option<u64> {
        self.record_at(Instant::now(), resource, level, message, fields)
    }

    fn record_at(
        &mut self,
        now: Instant,
        resource: &str,
        level: LogLevel,
        message: &str,
        fields: &[(String, String)],
    ) -> Option<u64> {
        let refill = now.duration_since(self.refilled_at).as_secs_f64() * LOG_RATE_PER_SECOND;
        self.tokens = (self.tokens + refill).min(LOG_BURST);
        self.refilled_at = now;
        if self.tokens < 1.0 {
            self.dropped += 1;
            self.dropped_total += 1;
            return None;
        }
        self.tokens -= 1.0;
        let due = self.reported_at.is_none_or(|at| now.duration_since(at) >= DROP_REPORT_INTERVAL);
        let reported = if self.dropped > 0 && due { std::mem::take(&mut self.dropped) } else { 0 };
        if reported > 0 {
            self.reported_at = Some(now);
            tracing::warn!(resource, dropped = reported, "guest log rate limit: records dropped");
        }
        emit(resource, level, cut(message, MAX_LOG_MESSAGE_BYTES), fields);
        (reported > 0).then_some(reported)
    }

    /// Records dropped over the instance's life.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

/// Cuts `text` to at most `limit` bytes on a character boundary.
pub fn truncate(mut text: String, limit: usize) -> String {
    let end = cut(&text, limit).len();
    text.truncate(end);
    text
}

fn cut(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn emit(resource: &str, level: LogLevel, message: &str, fields: &[(String, String)]) {
    let fields: Vec<String> = fields.iter().take(MAX_LOG_FIELDS).map(|(k, v)| format!("{k}={v}")).collect();
    let fields = fields.join(" ");
    match level {
        LogLevel::Trace => tracing::trace!(target: "guest", resource, %fields, "{message}"),
        LogLevel::Debug => tracing::debug!(target: "guest", resource, %fields, "{message}"),
        LogLevel::Info => tracing::info!(target: "guest", resource, %fields, "{message}"),
        LogLevel::Warn => tracing::warn!(target: "guest", resource, %fields, "{message}"),
        LogLevel::Error => tracing::error!(target: "guest", resource, %fields, "{message}"),
    }
}

/// The last [`STDERR_TAIL_BYTES`] a guest wrote to stderr. Cloning shares it:
/// one clone goes into the WASI context, one stays with the monitor.
///
/// Each write is stamped, so a report can quote what one call wrote
/// without the hot call path clearing anything before each call.
#[derive(Debug, Clone, Default)]
pub struct StderrTail {
    inner: Arc<Mutex<Tail>>,
}

#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    /// When each retained write came, and where it starts in `bytes`.
    writes: VecDeque<(Instant, usize)>,
}

impl StderrTail {
    /// What the guest wrote since `started`, as text, with surrounding
    /// whitespace trimmed.
    pub fn text_since(&self, started: Instant) -> String {
        let Ok(tail) = self.inner.lock() else { return String::new() };
        let Some(&(_, offset)) = tail.writes.iter().find(|(at, _)| *at >= started) else { return String::new() };
        String::from_utf8_lossy(&tail.bytes[offset..]).trim().to_string()
    }

    fn append(&self, new: &[u8]) {
        let now = Instant::now();
        let Ok(mut tail) = self.inner.lock() else { return };
        let new = &new[new.len().saturating_sub(STDERR_TAIL_BYTES)..];
        let overflow = (tail.bytes.len() + new.len()).saturating_sub(STDERR_TAIL_BYTES);
        tail.bytes.drain(..overflow);
        for write in tail.writes.iter_mut() {
            write.1 = write.1.saturating_sub(overflow);
        }
        // Writes cut away entirely all start at 0 now; keep the newest.
        while tail.writes.get(1).is_some_and(|(_, offset)| *offset == 0) {
            tail.writes.pop_front();
        }
        let offset = tail.bytes.len();
        tail.writes.push_back((now, offset));
        tail.bytes.extend_from_slice(new);
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for StderrTail {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_quoted_from_the_calls_start() {
        let tail = StderrTail::default();
        tail.append(b"earlier call\n");
        let started = Instant::now();
        assert_eq!(tail.text_since(started), "");
        tail.append(b"first ");
        tail.append(b"second\n");
        assert_eq!(tail.text_since(started), "first second");
        assert_eq!(tail.text_since(Instant::now()), "");
    }

    #[test]
    fn flood_is_cut_to_the_burst_and_counted() {
        let mut log = GuestLog::default();
        let mut reported = 0;
        for i in 0..10_000 {
            reported += log.record("flood", LogLevel::Debug, &format!("line {i}"), &[]).unwrap_or(0);
        }
        // Within a few milliseconds the bucket refills by at most a handful.
        assert!(log.dropped_total() >= 10_000 - LOG_BURST as u64 - 50, "dropped {}", log.dropped_total());
        assert!(reported <= log.dropped_total());
    }

    #[test]
    fn a_long_flood_is_summarised_once_a_second() {
        let mut log = GuestLog::default();
        let start = Instant::now();
        let (mut summaries, mut reported) = (0, 0);
        // Eight seconds of a guest logging every 100 µs: 80,000 records.
        for i in 0..80_000u32 {
            let now = start + Duration::from_micros(100 * u64::from(i));
            if let Some(count) = log.record_at(now, "flood", LogLevel::Trace, "line", &[]) {
                summaries += 1;
                reported += count;
            }
        }
        assert!(summaries <= 9, "{summaries} summaries in 8 s");
        assert!(summaries >= 7, "the drops are still reported: {summaries}");
        // What is not yet reported waits for the next summary, never lost.
        assert_eq!(reported + log.dropped, log.dropped_total());
    }

    #[test]
    fn stderr_keeps_only_its_tail() {
        let tail = StderrTail::default();
        let started = Instant::now();
        for _ in 0..100 {
            tail.append(&[b'a'; 1000]);
        }
        tail.append(b"panicked at the end");
        let text = tail.text_since(started);
        assert_eq!(text.len(), STDERR_TAIL_BYTES);
        assert!(text.ends_with("panicked at the end"));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("ééé".to_string(), 3), "é");
    }
}
