//! The local lease clock: when this node must assume its lease is gone.
//!
//! etcd decides a lease's expiry on its leader, from when it *received* the
//! last keepalive. The node cannot see that clock, but it knows a bound:
//! etcd received an acknowledged keepalive after the node *sent* it, so
//! the lease lives at least until that send time plus the TTL. The node's
//! estimate is therefore the send time of the last acknowledged keepalive
//! plus the TTL the answer carried, never the receive time, which would be
//! late by the round trip (and by however long the answer was delayed).
//!
//! Pure bookkeeping: time is passed in (`std::time::Instant`, which the
//! watchdog takes from tokio's monotonic clock and the simulation makes
//! up), so the same rules run in the daemon and in the simulation.
//!
//! Keepalive answers carry no request id; etcd answers a stream's requests
//! in order, so the sends still waiting for an answer form a queue. When a
//! stream breaks, its unanswered sends can never be matched and are
//! forgotten.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The estimate of one lease's life, from the node's side.
#[derive(Clone, Debug)]
pub struct LeaseClock {
    ttl: Duration,
    answer_deadline: Duration,
    /// Send times of keepalives on the current stream still unanswered.
    in_flight: VecDeque<Instant>,
    /// Send time of the last acknowledged keepalive (or of the grant).
    acknowledged_send: Instant,
    last_ack_received: Instant,
    last_round_trip: Duration,
}

impl LeaseClock {
    /// A lease granted with `ttl`, asked for at `sent_at` and granted at `received_at`.
    pub fn granted(sent_at: Instant, received_at: Instant, ttl: Duration, answer_deadline: Duration) -> LeaseClock {
        LeaseClock {
            ttl,
            answer_deadline,
            in_flight: VecDeque::new(),
            acknowledged_send: sent_at,
            last_ack_received: received_at,
            last_round_trip: received_at.saturating_duration_since(sent_at),
        }
    }

    /// A keepalive went out at `at`.
    pub fn sent(&mut self, at: Instant) {
        self.in_flight.push_back(at);
    }

    /// The oldest unanswered keepalive was acknowledged at `received_at`,
    /// with the lease's TTL as etcd now counts it. Returns the round trip,
    /// or `None` for an answer nothing was waiting for (it is ignored).
    pub fn acknowledged(&mut self, received_at: Instant, ttl: Duration) -> Option<Duration> {
        let sent_at = self.in_flight.pop_front()?;
        // A later send is what extends the estimate; an answer can only
        // move it forward.
        self.acknowledged_send = self.acknowledged_send.max(sent_at);
        self.ttl = ttl;
        self.last_ack_received = received_at;
        self.last_round_trip = received_at.saturating_duration_since(sent_at);
        Some(self.last_round_trip)
    }

    /// The stream broke: its unanswered keepalives will never be matched.
    pub fn stream_reset(&mut self) {
        self.in_flight.clear();
    }

    /// When the lease must be taken as gone: the last acknowledged send plus the TTL.
    pub fn expiry_estimate(&self) -> Instant {
        self.acknowledged_send + self.ttl
    }

    /// How long the lease still lives by the estimate (zero once past it).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expiry_estimate().saturating_duration_since(now)
    }

    /// Whether the estimate has passed: the node must fence itself.
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.expiry_estimate()
    }

    /// When the oldest unanswered keepalive is overdue, if one is in flight.
    pub fn answer_due(&self) -> Option<Instant> {
        self.in_flight.front().map(|sent_at| *sent_at + self.answer_deadline)
    }

    /// Whether the oldest unanswered keepalive missed its deadline at `now`.
    pub fn answer_overdue(&self, now: Instant) -> bool {
        self.answer_due().is_some_and(|due| now >= due)
    }

    /// Time since the last acknowledgement arrived.
    pub fn since_last_ack(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_ack_received)
    }

    /// The round trip of the last acknowledged keepalive.
    pub fn last_round_trip(&self) -> Duration {
        self.last_round_trip
    }

    /// The TTL etcd last reported for the lease.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(2);
    const DEADLINE: Duration = Duration::from_millis(500);

    fn at(base: Instant, millis: u64) -> Instant {
        base + Duration::from_millis(millis)
    }

    #[test]
    fn the_estimate_counts_from_the_send_of_the_last_acknowledged_keepalive() {
        let base = Instant::now();
        let mut clock = LeaseClock::granted(base, at(base, 10), TTL, DEADLINE);
        assert_eq!(clock.expiry_estimate(), at(base, 2000));
        clock.sent(at(base, 500));
        // Acknowledged late: the estimate still counts from the send.
        assert_eq!(clock.acknowledged(at(base, 900), TTL), Some(Duration::from_millis(400)));
        assert_eq!(clock.expiry_estimate(), at(base, 2500));
        assert_eq!(clock.remaining(at(base, 2400)), Duration::from_millis(100));
        assert!(clock.is_expired(at(base, 2500)));
    }

    #[test]
    fn answers_match_sends_in_order_and_a_reset_forgets_the_unanswered() {
        let base = Instant::now();
        let mut clock = LeaseClock::granted(base, base, TTL, DEADLINE);
        clock.sent(at(base, 100));
        clock.sent(at(base, 200));
        assert_eq!(clock.answer_due(), Some(at(base, 600)));
        assert!(clock.answer_overdue(at(base, 600)));
        clock.acknowledged(at(base, 650), TTL);
        assert_eq!(clock.expiry_estimate(), at(base, 2100));
        clock.stream_reset();
        assert_eq!(clock.answer_due(), None);
        assert_eq!(clock.acknowledged(at(base, 700), TTL), None, "an answer nothing waits for is ignored");
        assert_eq!(clock.expiry_estimate(), at(base, 2100));
        assert_eq!(clock.since_last_ack(at(base, 1650)), Duration::from_millis(1000));
    }
}
