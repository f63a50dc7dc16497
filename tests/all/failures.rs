//! Failures keep their kind from the monitor worker to the operator: a
//! probe that overruns its deadline and one that traps reach the policy
//! engine, the event stream, `steward status` and `/metrics` as two
//! different kinds, not as two strings.

use std::time::Duration;

use steward_tests::daemon::Daemon;

const TWO_FAULTS: &str = r#"
[node]
name = "node-f"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "slow"
type = "hostile"
properties = { fault = "loop-looks-alive" }
looks_alive_interval = "100ms"
probe_timeout = "100ms"

[[resource]]
name = "crash"
type = "hostile"
properties = { fault = "trap-looks-alive" }
looks_alive_interval = "100ms"

[[group]]
name = "slow-group"
resources = ["slow"]

[[group]]
name = "crash-group"
resources = ["crash"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_past_its_deadline_and_a_trapping_probe_are_told_apart() {
    let daemon = Daemon::start(TWO_FAULTS, &["hostile"]).await;
    let failed = |resource: &'static str| {
        move |event: &serde_json::Value| event["resource"] == resource && event["to"] == "failed"
    };
    let slow = daemon.follow_events(Duration::from_secs(30), failed("slow")).await;
    let slow = slow.iter().rev().find(|e| failed("slow")(e)).cloned().unwrap_or_default();
    assert_eq!(slow["failure_kind"], "deadline", "{slow}");
    let crash = daemon.follow_events(Duration::from_secs(30), failed("crash")).await;
    let crash = crash.iter().rev().find(|e| failed("crash")(e)).cloned().unwrap_or_default();
    assert_eq!(crash["failure_kind"], "trap", "{crash}");

    let deadline = daemon
        .metric("steward_resource_failures_total{resource=\"slow\",group=\"slow-group\",kind=\"deadline\"}")
        .await;
    assert!(deadline.is_some_and(|count| count >= 1.0), "{deadline:?}");
    let trap =
        daemon.metric("steward_resource_failures_total{resource=\"crash\",group=\"crash-group\",kind=\"trap\"}").await;
    assert!(trap.is_some_and(|count| count >= 1.0), "{trap:?}");
    let no_trap =
        daemon.metric("steward_resource_failures_total{resource=\"slow\",group=\"slow-group\",kind=\"trap\"}").await;
    assert!(no_trap.is_none(), "a deadline is not counted as a trap");

    let resource = daemon.get("/v1/resources/crash").await;
    assert_eq!(resource["last_failure_kind"], "trap", "{resource}");
}

const SLOW_START_AND_DENIAL: &str = r#"
[node]
name = "node-n"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "slow-start"
type = "dummy"
properties = { online-delay-ms = "3000" }

[[resource]]
name = "spawner"
type = "hostile"
properties = { fault = "spawn-outside" }

[[group]]
name = "starting"
resources = ["slow-start"]

[[group]]
name = "refused"
resources = ["spawner"]
"#;

/// What a sandbox reports besides failures reaches the operator: a
/// pending online's progress shows in `steward status` and the event
/// stream; a refused program is a `capability-denied` event naming it, and
/// a counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_and_capability_denials_reach_the_operator() {
    let daemon = Daemon::start(SLOW_START_AND_DENIAL, &["dummy", "hostile"]).await;
    let progress = daemon.follow_events(Duration::from_secs(20), |e| e["kind"] == "progress").await;
    let progress = progress.last().cloned().unwrap_or_default();
    assert_eq!(progress["resource"], "slow-start", "{progress}");
    assert!(progress["reason"].as_str().is_some_and(|r| r.contains("starting: waiting 3000 ms")), "{progress}");
    let status = daemon.status_text().await;
    assert!(status.contains("(progress: starting: waiting 3000 ms)"), "{status}");

    let denied = daemon.follow_events(Duration::from_secs(20), |e| e["kind"] == "capability-denied").await;
    let denied = denied.last().cloned().unwrap_or_default();
    assert_eq!(denied["resource"], "spawner", "{denied}");
    assert!(denied["reason"].as_str().is_some_and(|r| r.contains("/bin/sh")), "{denied}");
    let count = daemon.metric("steward_capability_denials_total{resource=\"spawner\"").await;
    assert!(count.is_some_and(|count| count >= 1.0), "{count:?}");

    daemon.wait_group("starting", "online", Duration::from_secs(20)).await;
    let status = daemon.status_text().await;
    assert!(!status.contains("progress:"), "progress is gone once online: {status}");

    // The 3-second online is in the call latency histogram: above 1 s, within 5 s.
    let online = "steward_call_seconds_bucket{resource=\"slow-start\",group=\"starting\",operation=\"online\"";
    for (le, count) in [("1", 0.0), ("5", 1.0), ("+Inf", 1.0)] {
        let series = format!("{online},le=\"{le}\"}}");
        assert_eq!(daemon.metric(&series).await, Some(count), "{series}");
    }
    let metrics = reqwest::get(daemon.url("/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("# TYPE steward_probe_seconds histogram"), "{metrics}");
    assert!(metrics.contains("# TYPE steward_probes_total counter"), "{metrics}");
}

const CRASHING_ALONE: &str = r#"
[node]
name = "node-r"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "crash"
type = "hostile"
properties = { fault = "trap-looks-alive" }
looks_alive_interval = "1s"
separate_monitor = true

[[group]]
name = "crashing"
resources = ["crash"]
policy = { restart_delay = "50ms", restart_backoff = 1.0, restart_threshold = 2 }
"#;

/// A restart after a failed probe costs two round trips to the worker:
/// `terminate`, then `online` (which re-creates the discarded sandbox in
/// the worker and answers with the processes). Two restarts and the final
/// `terminate` of a group that failed past its threshold are five.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_costs_two_round_trips() {
    let daemon = Daemon::start(CRASHING_ALONE, &["hostile"]).await;
    daemon.wait_group("crashing", "online", Duration::from_secs(20)).await;
    let before = daemon.worker("crash").await["round_trips"].as_u64().expect("round trips");
    daemon.wait_group("crashing", "failed", Duration::from_secs(30)).await;
    // The last terminate is sent after the group reads failed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = daemon.worker("crash").await["round_trips"].as_u64().expect("round trips");
    let restarts = daemon.get("/v1/resources/crash").await["restarts_total"].as_u64().unwrap_or(0);
    assert_eq!(restarts, 2, "two restarts before the group failed");
    assert_eq!(after - before, 5, "2 restarts x (terminate, online) + the last terminate");
}
