//! The example plugins in Python (componentize-py) and JavaScript (jco):
//! built by `cargo xtask examples`, they pass the same conformance suite as
//! the Rust plugins, and run under the daemon.

use std::time::Duration;

use steward_tests::daemon::Daemon;
use steward_tests::{example_wasm, steward_command};

#[test]
fn python_and_javascript_plugins_pass_the_conformance_suite() {
    for file in ["python_marker.wasm", "js_marker.wasm"] {
        let state = tempfile::tempdir().expect("tempdir");
        let output = steward_command()
            .args(["plugin", "check"])
            .arg(example_wasm(file))
            .args(["--prop", "path=/state/m", "--grant-dir"])
            .arg(format!("{}:/state", state.path().display()))
            .output()
            .expect("check runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{file}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("every step passed"), "{file}: {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_plugins_run_under_the_daemon() {
    let config = r#"
[node]
name = "node-x"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "py"
type = "python-marker"
properties = { path = "/state/py.online" }
grants = { directories = [{ host = "{dir}/state", guest = "/state" }] }
looks_alive_interval = "200ms"

[[resource]]
name = "js"
type = "js-marker"
properties = { path = "/state/js.online" }
grants = { directories = [{ host = "{dir}/state", guest = "/state" }] }
looks_alive_interval = "200ms"
depends_on = ["py"]

[[group]]
name = "polyglot"
resources = ["py", "js"]
"#;
    let daemon =
        Daemon::start_with_files(config, &[example_wasm("python_marker.wasm"), example_wasm("js_marker.wasm")]).await;
    daemon.wait_group("polyglot", "online", Duration::from_secs(60)).await;
    assert_eq!(std::fs::read_to_string(daemon.path("state/py.online")).expect("py marker"), "py");
    assert_eq!(std::fs::read_to_string(daemon.path("state/js.online")).expect("js marker"), "js");
    tokio::time::sleep(Duration::from_millis(600)).await;
    for resource in ["py", "js"] {
        assert!(daemon.probes(resource).await > 0, "{resource} is probed");
    }
    let (status, _) = daemon.post("/v1/groups/polyglot/offline").await;
    assert_eq!(status, 202);
    daemon.wait_group("polyglot", "offline", Duration::from_secs(30)).await;
    assert!(!daemon.path("state/py.online").exists() && !daemon.path("state/js.online").exists());
}
