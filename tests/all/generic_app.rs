//! `generic-app` supervising real programs: it starts one, sees it killed
//! from outside, stops it (with SIGKILL for one that ignores SIGTERM), and
//! leaves nothing behind when its instance is terminated or dropped.

use std::time::{Duration, Instant};

use steward_monitor::bindings::CheckLevel;
use steward_monitor::monitor::{Monitor, ResourceHandle};
use steward_tests::{context, eventually, kill_from_outside, plugin, process_running, spec};

async fn generic_app(monitor: &Monitor, program: &str, args: &str, grace_ms: &str) -> ResourceHandle {
    let plugin = plugin("generic_app").await;
    let mut app = spec("app", &plugin, &[("program", program), ("args", args), ("grace-ms", grace_ms)]);
    app.grants.programs = vec![program.into()];
    monitor.open(plugin, app).await.expect("generic-app opens")
}

async fn online_pid(app: &ResourceHandle) -> u32 {
    app.online(&context()).await.expect("the program starts");
    let pid: u32 = app.control("pid", "").await.expect("pid control").trim().parse().expect("a pid");
    assert!(process_running(pid), "pid {pid} runs");
    assert_eq!(app.tracked_processes().await, vec![pid], "the host tracks what the plugin spawned");
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_killed_from_outside_no_longer_looks_alive() {
    let monitor = Monitor::new("test-node");
    let app = generic_app(&monitor, "/bin/sleep", "300", "1000").await;
    let pid = online_pid(&app).await;
    assert!(app.looks_alive().await.expect("probe"));
    assert!(app.is_alive(CheckLevel::Thorough).await.expect("probe").alive);
    kill_from_outside(pid);
    let dead = eventually(Duration::from_secs(5), async || !app.looks_alive().await.expect("probe")).await;
    assert!(dead, "looks-alive turns false once the program is killed");
    let health = app.is_alive(CheckLevel::Thorough).await.expect("probe");
    assert!(!health.alive && health.reason.contains("killed"), "{health:?}");
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_stops_the_program_gracefully() {
    let monitor = Monitor::new("test-node");
    let app = generic_app(&monitor, "/bin/sleep", "300", "5000").await;
    let pid = online_pid(&app).await;
    let started = Instant::now();
    app.offline(&context()).await.expect("offline");
    assert!(!process_running(pid), "pid {pid} is gone after offline");
    assert!(started.elapsed() < Duration::from_secs(5), "sleep obeys SIGTERM, so no grace period was waited out");
    assert!(!app.looks_alive().await.expect("probe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_kills_a_program_that_ignores_sigterm_after_the_grace_period() {
    let monitor = Monitor::new("test-node");
    let script = "-c,trap '' TERM; while :; do sleep 0.05; done";
    let app = generic_app(&monitor, "/bin/sh", script, "400").await;
    let pid = online_pid(&app).await;
    // Let the shell install its trap before it is asked to stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    app.offline(&context()).await.expect("offline");
    let took = started.elapsed();
    assert!(!process_running(pid), "pid {pid} was killed");
    assert!(took >= Duration::from_millis(400), "SIGKILL came only after the grace period: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_and_drop_leave_no_orphan() {
    let monitor = Monitor::new("test-node");
    let app = generic_app(&monitor, "/bin/sleep", "300", "5000").await;
    let pid = online_pid(&app).await;
    app.terminate().await.expect("terminate");
    assert!(!process_running(pid), "terminate kills pid {pid}");

    let pid = online_pid(&app).await;
    app.close().await;
    assert!(!process_running(pid), "dropping the instance kills pid {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_outside_the_grant_is_refused_as_invalid_config() {
    let monitor = Monitor::new("test-node");
    let plugin = plugin("generic_app").await;
    let mut app = spec("app", &plugin, &[("program", "/bin/sleep"), ("args", "300")]);
    app.grants.programs = vec!["/bin/true".into()];
    let app = monitor.open(plugin, app).await.expect("opens");
    let error = app.online(&context()).await.expect_err("refused");
    assert_eq!(error.kind(), steward_monitor::monitor::FailureKind::CapabilityDenied, "{error}");
    assert!(error.to_string().contains("/bin/sleep"), "{error}");
}
