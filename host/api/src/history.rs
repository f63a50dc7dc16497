//! The last hour of each resource's probes and restarts, for the console's
//! charts (`GET /v1/resources/{name}/history`): a sampler task reads the
//! node's own counters ([`steward_node::ResourceMetrics`]: the probe
//! latency histogram and `restarts_total`) once a minute and keeps, per
//! resource, the difference from the reading before as one sample.
//!
//! It lives beside the routes rather than in the node because nothing but
//! the API reads it, and it only reads counters the node already keeps
//! without locks: the node loop does no work for it. It is bounded: at most
//! [`SAMPLES_KEPT`] samples per resource, and a resource the node no longer
//! has is forgotten at the next sample.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use steward_node::{NodeView, ResourceMetrics};

use crate::wire;

/// How long one sample covers: a minute, fine enough for an hour's chart.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(60);

/// Samples kept per resource: an hour of them.
pub const SAMPLES_KEPT: usize = 60;

/// Every resource's recent samples.
#[derive(Debug, Default)]
pub struct History {
    series: Mutex<HashMap<String, Series>>,
}

impl History {
    /// Takes a sample of every resource the node has now, and forgets the
    /// resources it no longer has.
    pub fn sample(&self, view: &NodeView) {
        let now = unix_ms();
        let readings: Vec<(String, Reading)> = match view.metrics.read() {
            Ok(metrics) => metrics.iter().map(|(name, counters)| (name.clone(), Reading::of(counters, now))).collect(),
            Err(_) => return,
        };
        let Ok(mut series) = self.series.lock() else { return };
        let present: std::collections::HashSet<&str> = readings.iter().map(|(name, _)| name.as_str()).collect();
        series.retain(|name, _| present.contains(name.as_str()));
        for (name, reading) in readings {
            match series.get_mut(&name) {
                Some(kept) => kept.push(reading),
                None => {
                    series.insert(name, Series { last: reading, samples: VecDeque::new() });
                }
            }
        }
    }

    /// The samples of `resource` and the minute under way, or None when the
    /// node has no such resource.
    pub fn of(&self, view: &NodeView, resource: &str) -> Option<wire::ResourceHistory> {
        let counters = view.metrics_of(resource)?;
        let now = Reading::of(&counters, unix_ms());
        let mut series = self.series.lock().ok()?;
        // A resource the sampler has not met yet (added by a reload within
        // the minute) starts its series now.
        let kept = series.entry(resource.to_string()).or_insert(Series { last: now, samples: VecDeque::new() });
        Some(wire::ResourceHistory {
            resource: resource.to_string(),
            period_ms: SAMPLE_PERIOD.as_millis() as u64,
            samples: kept.samples.iter().cloned().collect(),
            current: between(&kept.last, &now),
        })
    }
}

/// Samples `view` into `history` every [`SAMPLE_PERIOD`], from now until
/// the view is dropped. Needs a tokio runtime; without one (a router built
/// outside any, as in a unit test) nothing is sampled and the history shows
/// only the minute under way.
pub fn spawn_sampler(view: Weak<NodeView>, history: Arc<History>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(SAMPLE_PERIOD);
        // A tick missed (a suspended machine) is one long sample, not a burst.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(view) = view.upgrade() else { return };
            history.sample(&view);
        }
    });
}

/// One resource's samples and the counters they were last taken from.
#[derive(Debug)]
struct Series {
    last: Reading,
    samples: VecDeque<wire::HistorySample>,
}

impl Series {
    fn push(&mut self, reading: Reading) {
        if self.samples.len() == SAMPLES_KEPT {
            self.samples.pop_front();
        }
        self.samples.push_back(between(&self.last, &reading));
        self.last = reading;
    }
}

/// A resource's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Reading {
    unix_ms: u64,
    probes: u64,
    probe_seconds: f64,
    restarts_total: u64,
}

impl Reading {
    fn of(counters: &ResourceMetrics, unix_ms: u64) -> Reading {
        let probes = counters.probe_latency.snapshot();
        Reading {
            unix_ms,
            probes: probes.count,
            probe_seconds: probes.sum_seconds,
            restarts_total: counters.restarts_total.load(Ordering::Relaxed),
        }
    }
}

/// What happened between two readings. Counters only grow, but a resource
/// re-created by a reload starts new ones: a count that went down is read
/// as nothing in this window rather than a negative number.
fn between(before: &Reading, after: &Reading) -> wire::HistorySample {
    let probes = after.probes.saturating_sub(before.probes);
    let seconds = after.probe_seconds - before.probe_seconds;
    let mean_probe_ms = (probes > 0 && seconds >= 0.0).then(|| (seconds / probes as f64 * 1e6).round() / 1e3);
    wire::HistorySample {
        unix_ms: after.unix_ms,
        window_ms: after.unix_ms.saturating_sub(before.unix_ms),
        probes,
        mean_probe_ms,
        restarts: after.restarts_total.saturating_sub(before.restarts_total),
        restarts_total: after.restarts_total,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(unix_ms: u64, probes: u64, probe_seconds: f64, restarts_total: u64) -> Reading {
        Reading { unix_ms, probes, probe_seconds, restarts_total }
    }

    #[test]
    fn a_sample_is_the_difference_of_two_readings() {
        let sample = between(&reading(1_000, 10, 0.5, 2), &reading(61_000, 70, 0.8, 3));
        assert_eq!(sample.unix_ms, 61_000);
        assert_eq!(sample.window_ms, 60_000);
        assert_eq!(sample.probes, 60);
        assert_eq!(sample.mean_probe_ms, Some(5.0));
        assert_eq!(sample.restarts, 1);
        assert_eq!(sample.restarts_total, 3);
    }

    #[test]
    fn no_probes_have_no_mean_and_counters_that_went_down_count_nothing() {
        let sample = between(&reading(0, 10, 0.5, 4), &reading(60_000, 3, 0.1, 0));
        assert_eq!(sample.probes, 0);
        assert_eq!(sample.mean_probe_ms, None);
        assert_eq!(sample.restarts, 0);
        assert_eq!(sample.restarts_total, 0);
    }

    #[test]
    fn a_series_keeps_an_hour_of_samples() {
        let mut series = Series { last: reading(0, 0, 0.0, 0), samples: VecDeque::new() };
        for minute in 1..=(SAMPLES_KEPT as u64 + 5) {
            series.push(reading(minute * 60_000, minute, 0.0, 0));
        }
        assert_eq!(series.samples.len(), SAMPLES_KEPT);
        assert_eq!(series.samples.front().map(|sample| sample.unix_ms), Some(6 * 60_000));
    }
}
