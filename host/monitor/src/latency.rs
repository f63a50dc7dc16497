//! Latency histograms with fixed buckets, the shape Prometheus users
//! expect: probes are counted into buckets in the monitor worker (which
//! sends the daemon only the buckets that grew), calls in the daemon, and
//! `/metrics` renders both as `_bucket`, `_sum` and `_count`.
//!
//! The buckets are fixed so that a worker's counts can be added to the
//! daemon's without sending durations one by one: 10,000 resources probed
//! every second would otherwise be 10,000 numbers a second over the pipe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: a warm probe takes
/// microseconds, a probe that crosses the pipe tens of microseconds, a
/// program's start seconds; the last bucket (`+Inf`) takes the rest.
pub const BUCKET_BOUNDS_SECONDS: [f64; 15] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01, 0.05, 0.25, 1.0, 5.0, 30.0, 180.0,
];

/// Buckets, `+Inf` included.
pub const BUCKETS: usize = BUCKET_BOUNDS_SECONDS.len() + 1;

/// The bucket `duration` falls in: the first whose bound it does not exceed.
pub fn bucket_of(duration: Duration) -> usize {
    let seconds = duration.as_secs_f64();
    BUCKET_BOUNDS_SECONDS.iter().position(|bound| seconds <= *bound).unwrap_or(BUCKET_BOUNDS_SECONDS.len())
}

/// A histogram updated without locks.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

/// What a histogram holds at one moment, as `/metrics` renders it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// The sum of the observations, in seconds.
    pub sum_seconds: f64,
    /// How many observations.
    pub count: u64,
    /// Each bucket's upper bound and the observations in it (above the
    /// bound before it), `+Inf` last; the exposition makes them cumulative.
    pub buckets: Vec<(f64, u64)>,
}

impl LatencyHistogram {
    /// Counts one observation.
    pub fn observe(&self, duration: Duration) {
        self.buckets[bucket_of(duration)].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(duration.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Adds observations counted elsewhere: `(bucket, count)` pairs and
    /// their total duration. Buckets out of range are ignored.
    pub fn add(&self, buckets: &[(u8, u32)], sum_nanos: u64) {
        for (bucket, count) in buckets {
            if let Some(slot) = self.buckets.get(usize::from(*bucket)) {
                slot.fetch_add(u64::from(*count), Ordering::Relaxed);
            }
        }
        self.sum_nanos.fetch_add(sum_nanos, Ordering::Relaxed);
    }

    /// How many observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).sum()
    }

    /// The histogram now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(at, bucket)| {
                (BUCKET_BOUNDS_SECONDS.get(at).copied().unwrap_or(f64::INFINITY), bucket.load(Ordering::Relaxed))
            })
            .collect();
        HistogramSnapshot {
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: buckets.iter().map(|(_, count)| count).sum(),
            buckets,
        }
    }
}

/// Per-bucket counts gathered between two reports, as a worker keeps them
/// for one probe schedule.
#[derive(Debug, Clone, Copy, Default)]
pub struct BucketCounts([u32; BUCKETS]);

impl BucketCounts {
    /// Counts one observation.
    pub fn observe(&mut self, duration: Duration) {
        let slot = &mut self.0[bucket_of(duration)];
        *slot = slot.saturating_add(1);
    }

    /// The buckets that grew, as `(bucket, count)` pairs, and a reset:
    /// what a report carries (most probes of a schedule fall in one or two
    /// buckets, so this is short).
    pub fn take(&mut self) -> Vec<(u8, u32)> {
        let taken = self.0.iter().enumerate().filter(|(_, count)| **count > 0).map(|(at, count)| (at as u8, *count));
        let taken = taken.collect();
        self.0 = [0; BUCKETS];
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        assert_eq!(bucket_of(Duration::from_micros(3)), 0);
        assert_eq!(bucket_of(Duration::from_micros(10)), 0);
        assert_eq!(bucket_of(Duration::from_micros(11)), 1);
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
        let histogram = LatencyHistogram::default();
        let mut counts = BucketCounts::default();
        for micros in [3, 30, 30, 700] {
            counts.observe(Duration::from_micros(micros));
        }
        histogram.add(&counts.take(), 763_000);
        histogram.observe(Duration::from_secs(2));
        assert!(counts.take().is_empty(), "taking resets");
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 5);
        assert!((snapshot.sum_seconds - 2.000_763).abs() < 1e-9, "{snapshot:?}");
        assert_eq!(snapshot.buckets[0], (0.000_01, 1));
        assert_eq!(snapshot.buckets[2], (0.000_05, 2));
        assert_eq!(snapshot.buckets[bucket_of(Duration::from_secs(2))], (5.0, 1));
        assert_eq!(snapshot.buckets.last(), Some(&(f64::INFINITY, 0)));
    }
}
