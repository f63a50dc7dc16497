//! The real `steward daemon` in a temporary directory, over real HTTP: the
//! demo group comes online in dependency order, survives its program being
//! killed, fails past its threshold, adopts its program after a SIGKILL of
//! the daemon, acts on a signalled failure at once, keeps a healthy group's
//! probes on time beside a hostile one, and answers bad requests with 4xx.

use std::time::Duration;

use serde_json::Value;
use steward_tests::daemon::{Daemon, demo};
use steward_tests::{kill_from_outside, process_running};

fn transitions_to<'a>(events: &'a [Value], state: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["kind"] == "transition" && e["to"] == state)
        .filter_map(|e| e["resource"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_group_comes_online_in_dependency_order() {
    let daemon = demo().await;
    let events =
        daemon.follow_events(Duration::from_secs(20), |e| e["resource"] == "notepad-http" && e["to"] == "online").await;
    let online = transitions_to(&events, "online");
    assert_eq!(online, ["notes-dir", "notepad", "notepad-http"], "events: {events:#?}\nlog: {}", daemon.log());
    assert_eq!(daemon.group_state("ha-notepad").await, "online");
    let status = daemon.status_text().await;
    assert!(status.contains("ha-notepad") && status.contains("online"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_program_is_restarted_and_past_the_threshold_the_group_fails() {
    let daemon = demo().await;
    daemon.wait_group("ha-notepad", "online", Duration::from_secs(20)).await;
    for restart in 1..=3 {
        let pid = daemon.program_pid("notepad").await;
        kill_from_outside(pid);
        let until = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let resource = daemon.get("/v1/resources/notepad").await;
            let new_pid = resource["pids"][0].as_u64().unwrap_or(0) as u32;
            if resource["state"] == "online" && new_pid != pid && new_pid != 0 {
                assert_eq!(resource["restarts_total"], restart, "the restart is counted: {resource}");
                break;
            }
            assert!(std::time::Instant::now() < until, "no restart {restart}: {}", daemon.status_text().await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        daemon.wait_group("ha-notepad", "online", Duration::from_secs(20)).await;
    }
    // The fourth failure within the period is past the threshold of 3.
    kill_from_outside(daemon.program_pid("notepad").await);
    daemon.wait_group("ha-notepad", "failed", Duration::from_secs(20)).await;
    let status = daemon.status_text().await;
    let group_line = status.lines().find(|l| l.starts_with("ha-notepad")).unwrap_or_default().to_string();
    assert!(group_line.contains("failed") && group_line.contains("failed 4 times within 15m"), "{status}");
    for resource in ["notes-dir", "notepad", "notepad-http"] {
        assert_ne!(daemon.state(resource).await, "online", "{resource} is taken offline with its failed group");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_daemon_then_a_new_start_adopts_the_running_program() {
    let mut daemon = demo().await;
    daemon.wait_group("ha-notepad", "online", Duration::from_secs(20)).await;
    let pid = daemon.program_pid("notepad").await;
    daemon.kill9();
    assert!(process_running(pid), "the program outlives the daemon");
    daemon.spawn().await;
    daemon.wait_group("ha-notepad", "online", Duration::from_secs(20)).await;
    assert_eq!(daemon.program_pid("notepad").await, pid, "same program, not a new one");
    let events = daemon.events().await;
    let pending = transitions_to(&events, "online-pending");
    assert!(!pending.contains(&"notepad"), "the program was not restarted: {events:#?}");
    let adopted: Vec<&Value> = events.iter().filter(|e| e["reason"] == "found running at start; adopted").collect();
    assert!(adopted.iter().any(|e| e["resource"] == "notepad"), "{events:#?}");
    assert_eq!(daemon.get("/v1/resources/notepad").await["restarts_total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_takes_groups_offline_in_reverse_dependency_order() {
    let mut daemon = demo().await;
    daemon.wait_group("ha-notepad", "online", Duration::from_secs(20)).await;
    let pid = daemon.program_pid("notepad").await;
    let worker = daemon.worker_pid("shared").await;
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(!process_running(pid), "the program was stopped");
    assert!(!process_running(worker), "the monitor worker exited with the daemon");
    let log = daemon.log();
    let order: Vec<&str> = [
        "resource=notepad-http from=OfflinePending to=Offline",
        "resource=notepad from=OfflinePending to=Offline",
        "resource=notes-dir from=OfflinePending to=Offline",
    ]
    .iter()
    .map(|needle| log.find(needle).map(|_| *needle).unwrap_or("missing"))
    .collect();
    assert!(!order.contains(&"missing"), "{log}");
    let positions: Vec<usize> = order.iter().filter_map(|needle| log.find(needle)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "offline order is reversed dependency order: {log}");
}

const HOSTILE_BESIDE_HEALTHY: &str = r#"
[node]
name = "node-h"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "healthy"
type = "dummy"
looks_alive_interval = "50ms"

[[resource]]
name = "wedged"
type = "hostile"
properties = { fault = "loop-looks-alive" }
looks_alive_interval = "100ms"
probe_timeout = "300ms"

[[resource]]
name = "signaller"
type = "hostile"
properties = { fault = "signal-failure" }
looks_alive_interval = "200ms"

[[group]]
name = "good"
resources = ["healthy"]

[[group]]
name = "bad"
resources = ["wedged"]
policy = { restart_delay = "50ms", restart_threshold = 100 }

[[group]]
name = "signals"
resources = ["signaller"]
policy = { restart_delay = "10s" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_group_leaves_another_groups_probes_on_time_and_signals_act_at_once() {
    let daemon = Daemon::start(HOSTILE_BESIDE_HEALTHY, &["dummy", "hostile"]).await;
    daemon.wait_group("good", "online", Duration::from_secs(20)).await;
    let before = daemon.probes("healthy").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = daemon.probes("healthy").await;
    // 2 s at one probe per 50 ms is 40; allow for a loaded 2-core machine.
    assert!(after - before >= 30, "healthy probes kept their pace: {before} -> {after}");
    let wedged = daemon.get("/v1/resources/wedged").await;
    assert!(wedged["failures_total"].as_u64().unwrap_or(0) >= 2, "the wedged resource kept failing: {wedged}");
    assert_eq!(daemon.state("healthy").await, "online");

    // signal-failure: the transition to failed follows the signal at once.
    let events = daemon.events().await;
    let signal = events
        .iter()
        .find(|e| e["kind"] == "signalled-failure" && e["resource"] == "signaller")
        .unwrap_or_else(|| panic!("no signalled failure: {events:#?}"));
    let failed = events
        .iter()
        .find(|e| e["kind"] == "transition" && e["resource"] == "signaller" && e["to"] == "failed")
        .unwrap_or_else(|| panic!("no failure transition: {events:#?}"));
    let latency_us =
        failed["uptime_us"].as_u64().unwrap_or(0).saturating_sub(signal["uptime_us"].as_u64().unwrap_or(0));
    assert!(latency_us < 50_000, "recovery began {latency_us} us after the signal");
    assert!(failed["reason"].as_str().unwrap_or_default().contains("signalled"), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_naming_the_field() {
    let mut daemon = Daemon::start(HOSTILE_BESIDE_HEALTHY, &["dummy", "hostile"]).await;
    let cases: [(&str, &str, u16, &str); 5] = [
        ("POST", "/v1/resources/nope/online", 404, "name"),
        ("POST", "/v1/groups/good/explode", 404, "action"),
        ("POST", "/v1/targets/nope/offline", 404, "name"),
        ("GET", "/v1/events?history=maybe", 400, "history"),
        ("GET", "/v1/nothing-here", 404, "path"),
    ];
    for (method, path, expected, field) in cases {
        let client = daemon.client();
        let request = if method == "POST" { client.post(daemon.url(path)) } else { client.get(daemon.url(path)) };
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert_eq!(body["field"], field, "{method} {path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{method} {path}: {body}");
    }
    let (status, _) = daemon.post("/v1/groups/good/offline").await;
    assert_eq!(status, 202);
    assert!(daemon.running(), "the daemon survives bad requests");
    let output = daemon.cli(&["online", "no-such-thing"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no group or resource named `no-such-thing`"));
}

/// Each malformed configuration in `tests/configs/` names its problem: the
/// file's first line is `# expect: TEXT`, which `steward validate` must print.
#[test]
fn malformed_configs_each_get_their_own_error() {
    let cases = steward_tests::workspace_root().join("tests/configs");
    let plugins = tempfile::tempdir().expect("tempdir");
    for plugin in ["dummy", "generic_app"] {
        std::fs::copy(steward_tests::guest_wasm(plugin), plugins.path().join(format!("{plugin}.wasm"))).expect("copy");
    }
    let mut files: Vec<_> = std::fs::read_dir(&cases).expect("tests/configs").flatten().map(|e| e.path()).collect();
    files.sort();
    assert!(files.len() >= 6, "the table of cases is there: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("case");
        let expected = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("`# expect:` line");
        let work = tempfile::tempdir().expect("tempdir");
        let config = work.path().join("steward.toml");
        std::fs::write(&config, text.replace("{plugins}", &plugins.path().display().to_string())).expect("write");
        if text.contains("# unreadable") {
            std::fs::create_dir_all(work.path().join("more.d")).expect("dir");
            std::os::unix::fs::symlink("/nonexistent/target", work.path().join("more.d/broken.toml")).expect("link");
        }
        let output = std::process::Command::new(steward_tests::steward_binary())
            .arg("validate")
            .arg(&config)
            .output()
            .expect("validate runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
        assert_eq!(output.status.code(), Some(1), "{name}: {stdout}");
        assert!(stdout.contains(expected), "{name}: expected `{expected}` in: {stdout}");
        assert!(stdout.contains(".toml"), "{name}: the error names the file: {stdout}");
        assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_can_leave_resources_running_for_the_next_start_to_adopt() {
    let config = r#"
[node]
name = "node-l"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"
leave_running_on_stop = true

[[resource]]
name = "sleeper"
type = "generic-app"
properties = { program = "/bin/sleep", args = "300" }
grants = { programs = ["/bin/sleep"] }

[[group]]
name = "g"
resources = ["sleeper"]
"#;
    let mut daemon = Daemon::start(config, &["generic_app"]).await;
    daemon.wait_group("g", "online", Duration::from_secs(20)).await;
    let pid = daemon.get("/v1/resources/sleeper").await["pids"][0].as_u64().expect("a pid") as u32;
    let worker = daemon.worker_pid("shared").await;
    assert!(daemon.terminate().success());
    assert!(process_running(pid), "the program was left running, as configured");
    assert!(!process_running(worker), "the monitor worker exited with the daemon");
    daemon.spawn().await;
    daemon.wait_group("g", "online", Duration::from_secs(20)).await;
    assert_eq!(daemon.get("/v1/resources/sleeper").await["pids"][0], pid, "adopted, not restarted");
    // The test's own clean-up: take it offline so the program ends.
    let (status, _) = daemon.post("/v1/groups/g/offline").await;
    assert_eq!(status, 202);
    daemon.wait_group("g", "offline", Duration::from_secs(20)).await;
    assert!(!process_running(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_cannot_open_at_start_fails_its_group_not_the_node() {
    let config = r#"
[node]
name = "node-p"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "fine"
type = "dummy"

[[resource]]
name = "broken"
type = "hostile"
properties = { fault = "panic-open" }

[[group]]
name = "good"
resources = ["fine"]

[[group]]
name = "bad"
resources = ["broken"]
policy = { restart_threshold = 1, restart_delay = "50ms" }
"#;
    let mut daemon = Daemon::start(config, &["dummy", "hostile"]).await;
    daemon.wait_group("good", "online", Duration::from_secs(20)).await;
    daemon.wait_group("bad", "failed", Duration::from_secs(20)).await;
    let broken = daemon.get("/v1/resources/broken").await;
    assert!(broken["reason"].as_str().unwrap_or_default().contains("hostile fixture: panic in open"), "{broken}");
    assert!(daemon.running(), "the node kept running");
}
