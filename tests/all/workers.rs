//! Monitor workers, the second wall: a worker killed with SIGKILL (or
//! aborted, or wedged) is replaced, its instances are re-created and probed,
//! and healthy programs keep their PIDs; a resource's own worker takes no
//! other resource down with it.

use std::time::{Duration, Instant};

use serde_json::Value;
use steward_tests::daemon::{Daemon, demo};
use steward_tests::{eventually, kill_from_outside, process_running};

fn send_signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Waits up to `limit` for worker `name` to run as a pid other than `old`.
async fn replaced_worker(daemon: &Daemon, name: &str, old: u32, limit: Duration) -> Option<u32> {
    let mut new = 0;
    let replaced = eventually(limit, async || {
        new = daemon.worker_pid(name).await;
        new != 0 && new != old && process_running(new)
    })
    .await;
    replaced.then_some(new)
}

/// Events after the first whose `kind` is `kind`.
fn events_after<'a>(events: &'a [Value], kind: &str) -> &'a [Value] {
    let at = events.iter().position(|e| e["kind"] == kind).unwrap_or(events.len());
    &events[at..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_replaced_and_its_healthy_programs_keep_their_pids() {
    let mut daemon = demo().await;
    daemon.wait_group("ha-notepad", "online", Duration::from_secs(20)).await;
    let program = daemon.program_pid("notepad").await;
    let worker = daemon.worker_pid("shared").await;
    assert!(process_running(worker), "the shared worker runs as pid {worker}");
    assert_ne!(worker, daemon.pid(), "instances are hosted outside the daemon");

    kill_from_outside(worker);
    let killed_at = Instant::now();
    let new_worker = replaced_worker(&daemon, "shared", worker, Duration::from_secs(1)).await;
    assert!(new_worker.is_some(), "no new worker within 1 s of the kill (took {:?})", killed_at.elapsed());

    let events = daemon.follow_events(Duration::from_secs(20), |e| e["kind"] == "worker-restarted").await;
    let lost = events.iter().find(|e| e["kind"] == "worker-lost").unwrap_or_else(|| panic!("{events:#?}"));
    let reason = lost["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&format!("pid {worker}")) && reason.contains("signal 9"), "{lost}");
    let restarted = events.last().map(|e| e["reason"].as_str().unwrap_or_default()).unwrap_or_default();
    assert!(restarted.contains("3 instance(s) re-created, 0 failed"), "{events:#?}");

    // The re-created instances are probed again, and find everything healthy.
    let probes_then = daemon.probes("notepad").await;
    assert!(eventually(Duration::from_secs(10), async || daemon.probes("notepad").await > probes_then + 1).await);
    assert!(daemon.running(), "the daemon survives its worker");
    assert_eq!(daemon.program_pid("notepad").await, program, "the program was not restarted");
    assert!(process_running(program));
    assert_eq!(daemon.group_state("ha-notepad").await, "online");
    assert_eq!(daemon.get("/v1/resources/notepad").await["restarts_total"], 0);
    let all = daemon.events().await;
    let bounced: Vec<&Value> = events_after(&all, "worker-lost").iter().filter(|e| e["kind"] == "transition").collect();
    assert!(bounced.is_empty(), "nothing bounced: {bounced:#?}");
    let restarts = daemon.metric("steward_worker_restarts_total{worker=\"shared\"} ").await;
    assert_eq!(restarts, Some(1.0), "the restart is counted in the metrics");
}

const OWN_WORKER: &str = r#"
[node]
name = "node-w"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "alone"
type = "generic-app"
properties = { program = "{sleep}", args = ["3600"] }
grants = { programs = ["{sleep}"] }
separate_monitor = true
looks_alive_interval = "100ms"

[[resource]]
name = "together"
type = "generic-app"
properties = { program = "{sleep}", args = ["3600"] }
grants = { programs = ["{sleep}"] }
looks_alive_interval = "100ms"

[[resource]]
name = "ticker"
type = "dummy"
looks_alive_interval = "50ms"

[[group]]
name = "own"
resources = ["alone"]

[[group]]
name = "shared"
resources = ["together", "ticker"]
"#;

fn own_worker_config(extra_node_lines: &str) -> String {
    let sleep = std::fs::canonicalize("/bin/sleep").expect("a sleep program");
    OWN_WORKER
        .replace("{sleep}", &sleep.display().to_string())
        .replace("api = \"{api}\"\n", &format!("api = \"{{api}}\"\n{extra_node_lines}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_crashing_its_own_worker_does_not_disturb_the_shared_worker() {
    let mut daemon = Daemon::start(&own_worker_config(""), &["generic_app", "dummy"]).await;
    daemon.wait_group("own", "online", Duration::from_secs(20)).await;
    daemon.wait_group("shared", "online", Duration::from_secs(20)).await;
    let shared = daemon.worker_pid("shared").await;
    let own = daemon.worker_pid("alone").await;
    assert!(own != 0 && own != shared, "`alone` has a worker of its own: {}", daemon.get("/v1/workers").await);
    let (alone_program, together_program) = (daemon.program_pid("alone").await, daemon.program_pid("together").await);
    let ticks_before = daemon.probes("ticker").await;

    // An abort, as a crash in the worker would end it.
    send_signal(own, rustix::process::Signal::ABORT);
    let new_own = replaced_worker(&daemon, "alone", own, Duration::from_secs(1)).await;
    assert!(new_own.is_some(), "the crashed worker was not replaced within 1 s");
    let events = daemon.follow_events(Duration::from_secs(20), |e| e["kind"] == "worker-restarted").await;
    assert!(events.iter().any(|e| e["kind"] == "worker-lost"
        && e["reason"].as_str().unwrap_or_default().contains("`alone`")
        && e["reason"].as_str().unwrap_or_default().contains("signal 6")));

    // The shared worker was never touched, and kept probing meanwhile.
    assert_eq!(daemon.worker_pid("shared").await, shared);
    assert!(eventually(Duration::from_secs(10), async || daemon.probes("ticker").await > ticks_before + 5).await);
    assert_eq!(daemon.program_pid("together").await, together_program);
    assert_eq!(daemon.program_pid("alone").await, alone_program, "its own program survived its worker too");
    let all = daemon.events().await;
    let shared_transitions: Vec<&Value> = events_after(&all, "worker-lost")
        .iter()
        .filter(|e| e["kind"] == "transition" && e["group"] == "shared")
        .collect();
    assert!(shared_transitions.is_empty(), "{shared_transitions:#?}");
    assert!(daemon.running());
    assert_eq!(daemon.group_state("own").await, "online");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_answering_is_killed_after_the_deadlock_timeout() {
    let config = own_worker_config("worker_deadlock_timeout = \"1s\"\n");
    let mut daemon = Daemon::start(&config, &["generic_app", "dummy"]).await;
    daemon.wait_group("shared", "online", Duration::from_secs(20)).await;
    let shared = daemon.worker_pid("shared").await;
    let program = daemon.program_pid("together").await;

    // Frozen: alive, but answering nothing.
    send_signal(shared, rustix::process::Signal::STOP);
    let replaced = replaced_worker(&daemon, "shared", shared, Duration::from_secs(10)).await;
    assert!(replaced.is_some(), "the silent worker was not replaced: {}", daemon.log());
    assert!(
        eventually(Duration::from_secs(5), async || !process_running(shared)).await,
        "the silent worker was killed"
    );
    let events = daemon.follow_events(Duration::from_secs(20), |e| e["kind"] == "worker-restarted").await;
    let lost = events.iter().find(|e| e["kind"] == "worker-lost").unwrap_or_else(|| panic!("{events:#?}"));
    assert!(lost["reason"].as_str().unwrap_or_default().contains("deadlock timeout"), "{lost}");
    assert!(daemon.running());
    assert_eq!(daemon.program_pid("together").await, program);
    daemon.wait_group("shared", "online", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_the_daemons_own_build_even_after_the_binary_is_replaced() {
    let mut daemon = Daemon::start(&own_worker_config(""), &["generic_app", "dummy"]).await;
    // Run from a copy this test may overwrite, as a package upgrade would.
    let copy = daemon.path("steward");
    std::fs::copy(steward_tests::steward_binary(), &copy).expect("copy the binary");
    daemon.terminate();
    daemon.binary = copy.clone();
    daemon.spawn().await;
    daemon.wait_group("shared", "online", Duration::from_secs(20)).await;
    let worker = daemon.worker_pid("shared").await;
    let hidden = daemon.path(".steward.new");
    std::fs::write(&hidden, b"#!/bin/sh\nexit 3\n").expect("a broken new binary");
    std::fs::rename(&hidden, &copy).expect("replace the binary");

    kill_from_outside(worker);
    let replaced = replaced_worker(&daemon, "shared", worker, Duration::from_secs(5)).await;
    assert!(replaced.is_some(), "no new worker from the daemon's own build: {}", daemon.log());
    let events = daemon.follow_events(Duration::from_secs(20), |e| e["kind"] == "worker-restarted").await;
    let restarted = events.last().and_then(|e| e["reason"].as_str()).unwrap_or_default().to_string();
    assert!(restarted.contains("0 failed"), "{events:#?}");
    assert_eq!(daemon.group_state("shared").await, "online");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_died_with_its_worker_is_restarted_by_the_policy_and_counted() {
    let daemon = Daemon::start(&own_worker_config(""), &["generic_app", "dummy"]).await;
    daemon.wait_group("shared", "online", Duration::from_secs(20)).await;
    let worker = daemon.worker_pid("shared").await;
    let program = daemon.program_pid("together").await;
    // The worker and one program die together, as in an OOM kill of both.
    kill_from_outside(worker);
    kill_from_outside(program);
    let restarted = eventually(Duration::from_secs(20), async || {
        let together = daemon.get("/v1/resources/together").await;
        together["restarts_total"] == 1 && together["state"] == "online"
    })
    .await;
    assert!(restarted, "the dead program went through the policy: {}", daemon.status_text().await);
    let new_program = daemon.program_pid("together").await;
    assert!(new_program != program && process_running(new_program));
    let all = daemon.events().await;
    let others: Vec<&Value> = events_after(&all, "worker-lost")
        .iter()
        .filter(|e| e["kind"] == "transition" && e["resource"] != "together")
        .collect();
    assert!(others.is_empty(), "only the failed resource moved: {others:#?}");
    assert_eq!(daemon.get("/v1/resources/ticker").await["restarts_total"], 0);
}

const SHARDED: &str = r#"
[node]
name = "node-s"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"
max_instances_per_worker = 2

[[resource]]
name = "d1"
type = "dummy"
looks_alive_interval = "50ms"

[[resource]]
name = "d2"
type = "dummy"
looks_alive_interval = "50ms"

[[resource]]
name = "d3"
type = "dummy"
looks_alive_interval = "50ms"

[[resource]]
name = "d4"
type = "dummy"
looks_alive_interval = "50ms"

[[resource]]
name = "d5"
type = "dummy"
looks_alive_interval = "50ms"

[[group]]
name = "many"
resources = ["d1", "d2", "d3", "d4", "d5"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_past_a_workers_capacity_go_to_the_next_shared_worker_and_fail_apart() {
    let mut daemon = Daemon::start(SHARDED, &["dummy"]).await;
    daemon.wait_group("many", "online", Duration::from_secs(20)).await;
    for (worker, resources) in [("shared", vec!["d1", "d2"]), ("shared-2", vec!["d3", "d4"]), ("shared-3", vec!["d5"])]
    {
        let shown = daemon.worker(worker).await;
        assert_eq!(shown["resources"], serde_json::json!(resources), "{worker}: {shown}");
    }

    let (first, second, third) =
        (daemon.worker_pid("shared").await, daemon.worker_pid("shared-2").await, daemon.worker_pid("shared-3").await);
    kill_from_outside(second);
    assert!(replaced_worker(&daemon, "shared-2", second, Duration::from_secs(1)).await.is_some());
    let events = daemon.follow_events(Duration::from_secs(20), |e| e["kind"] == "worker-restarted").await;
    let restarted = events.last().map(|e| e["reason"].as_str().unwrap_or_default()).unwrap_or_default();
    assert!(
        restarted.contains("`shared-2`") && restarted.contains("2 instance(s) re-created, 0 failed"),
        "{events:#?}"
    );

    // The other shards were never touched and kept probing.
    assert_eq!((daemon.worker_pid("shared").await, daemon.worker_pid("shared-3").await), (first, third));
    for resource in ["d1", "d3", "d5"] {
        let before = daemon.probes(resource).await;
        assert!(eventually(Duration::from_secs(10), async || daemon.probes(resource).await > before + 3).await);
    }
    assert_eq!(daemon.group_state("many").await, "online");
    assert!(daemon.running());
}
