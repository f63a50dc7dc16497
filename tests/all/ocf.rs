//! OCF interop, both ways: Pacemaker's own `ocf-tester` (from Debian's
//! `resource-agents`) passes on `steward ocf` wrapping `file-marker`; and
//! the `ocf-bridge` plugin runs the real heartbeat `Dummy` agent under the
//! daemon, and reports a failure when the agent's state file is removed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use steward_tests::daemon::Daemon;
use steward_tests::{guest_wasm, steward_binary};

const DUMMY_AGENT: &str = "/usr/lib/ocf/resource.d/heartbeat/Dummy";

fn require(path: &str) -> PathBuf {
    let path = PathBuf::from(path);
    assert!(path.exists(), "{} is missing: install Debian's resource-agents (`.ci/run` does)", path.display());
    path
}

/// A directory `nobody` can enter (ocf-tester runs meta-data as nobody).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

/// The two-line shim an operator installs under /usr/lib/ocf/resource.d/.
fn shim(dir: &Path, state: &Path) -> PathBuf {
    let script = format!(
        "#!/bin/sh\nexec {} ocf {} --grant-dir {}:/state \"$@\"\n",
        steward_binary().display(),
        guest_wasm("file_marker").display(),
        state.display()
    );
    let path = dir.join("file-marker");
    std::fs::write(&path, script).expect("write shim");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn ocf_tester_passes_on_steward_ocf_wrapping_file_marker() {
    let tester = require("/usr/sbin/ocf-tester");
    let dir = open_dir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let agent = shim(dir.path(), &state);
    let output = Command::new(tester)
        .args(["-n", "marker1", "-o", "path=/state/marker1"])
        .arg(&agent)
        .env("HA_RSCTMP", dir.path())
        .output()
        .expect("ocf-tester runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("passed all tests"), "{stdout}\n{stderr}");
}

#[test]
fn ocf_actions_exit_with_ocf_codes() {
    let dir = open_dir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let agent = shim(dir.path(), &state);
    let run = |action: &str, path: Option<&str>| {
        let mut command = Command::new(&agent);
        command.arg(action).env("HA_RSCTMP", dir.path()).env("OCF_RESOURCE_INSTANCE", "m");
        if let Some(path) = path {
            command.env("OCF_RESKEY_path", path);
        }
        command.output().expect("agent runs")
    };
    let code = |action: &str, path: Option<&str>| run(action, path).status.code();
    assert_eq!(code("monitor", Some("/state/m")), Some(7), "not running before start");
    assert_eq!(code("start", Some("/state/m")), Some(0));
    assert!(state.join("m").exists(), "start made the marker");
    assert_eq!(code("monitor", Some("/state/m")), Some(0));
    assert_eq!(code("stop", Some("/state/m")), Some(0));
    assert_eq!(code("monitor", Some("/state/m")), Some(7));
    assert_eq!(code("migrate_to", Some("/state/m")), Some(3), "unimplemented");
    let invalid = run("validate-all", None);
    assert_eq!(invalid.status.code(), Some(6), "a missing required property is a configuration error");
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("path: required property is missing"));
    let meta = run("meta-data", None);
    let xml = String::from_utf8_lossy(&meta.stdout);
    assert!(
        xml.contains("<resource-agent name=\"file-marker\"") && xml.contains("<parameter name=\"path\" required=\"1\""),
        "{xml}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocf_bridge_runs_the_heartbeat_dummy_agent_under_the_daemon() {
    require(DUMMY_AGENT);
    let config = format!(
        r#"
[node]
name = "node-o"
plugin_dir = "plugins"
data_dir = "data"
api = "{{api}}"

[[resource]]
name = "dummy-agent"
type = "ocf-bridge"
properties = {{ agent = "{DUMMY_AGENT}", params = "state={{dir}}/state/dummy.state" }}
grants = {{ programs = ["{DUMMY_AGENT}"] }}
looks_alive_interval = "200ms"

[[group]]
name = "legacy"
resources = ["dummy-agent"]
policy = {{ restart_threshold = 0 }}
"#
    );
    let daemon = Daemon::start(&config, &["ocf_bridge"]).await;
    daemon.wait_group("legacy", "online", Duration::from_secs(20)).await;
    let state_file = daemon.path("state/dummy.state");
    assert!(state_file.exists(), "the agent's start ran");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(daemon.probes("dummy-agent").await > 0, "the agent is probed with monitor");

    std::fs::remove_file(&state_file).expect("remove the state file");
    daemon.wait_group("legacy", "failed", Duration::from_secs(20)).await;
    let resource = daemon.get("/v1/resources/dummy-agent").await;
    assert!(resource["failures_total"].as_u64().unwrap_or(0) >= 1, "{resource}");
    let events = daemon.events().await;
    let failure = events
        .iter()
        .find(|e| e["resource"] == "dummy-agent" && e["to"] == "failed")
        .unwrap_or_else(|| panic!("no failure: {events:#?}"));
    assert!(failure["reason"].as_str().unwrap_or_default().contains("monitor returned 7"), "{failure}");

    let (status, _) = daemon.post("/v1/groups/legacy/online").await;
    assert_eq!(status, 202);
    daemon.wait_group("legacy", "online", Duration::from_secs(20)).await;
    let (status, _) = daemon.post("/v1/groups/legacy/offline").await;
    assert_eq!(status, 202);
    daemon.wait_group("legacy", "offline", Duration::from_secs(20)).await;
    assert!(!state_file.exists(), "the agent's stop ran");
}
