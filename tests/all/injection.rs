//! Text a plugin controls never forges a host log line nor reaches the
//! operator's terminal raw: the `inject` fault of the hostile fixture puts
//! a newline, a forged host line, ESC, CR, BEL and a C1 CSI into its log
//! message and fields, a progress report, a refused program's name and its
//! failure reason. The daemon's text log, `steward events` and `steward
//! status` in text, and `steward plugin check`'s report must show all of it
//! escaped, one line per record.

use std::process::Stdio;
use std::time::Duration;

use steward_tests::daemon::Daemon;
use steward_tests::{guest_wasm, steward_command};

/// The line the fixture tries to pass off as the host's (its `FORGED`).
const FORGED: &str = "2026-01-01T00:00:00.000000Z ERROR steward::node: forged by a plugin";

const INJECTING: &str = r#"
[node]
name = "node-i"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "inj"
type = "hostile"
properties = { fault = "inject" }

[[group]]
name = "injected"
resources = ["inj"]
"#;

/// Fails naming the first raw control character (other than the newlines
/// that end lines) in `text`, which came from `source`.
fn assert_no_raw_controls(source: &str, text: &str) {
    for line in text.lines() {
        let raw = line.chars().find(|c| c.is_control() && *c != '\t');
        assert!(raw.is_none(), "{source}: raw {raw:?} in line {line:?}");
        assert!(!line.starts_with(FORGED), "{source}: a forged line: {line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_text_is_escaped_in_the_log_the_event_stream_and_the_status() {
    let daemon = Daemon::start(INJECTING, &["hostile"]).await;
    daemon.wait_group("injected", "failed", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read(daemon.path("daemon.log")).expect("log");
    let log = String::from_utf8_lossy(&log);
    assert_no_raw_controls("daemon log", &log);
    // Every route the text took is there, escaped rather than dropped.
    // (tracing writes ESC in a message as `\x1b`, the text log's writer
    // as `\u{1b}`: either is safe, so only what precedes it is compared.)
    let escaped = format!("innocent\\n{FORGED}\\r");
    for what in ["guest", "pending progress", "capability denied", "transition"] {
        assert!(
            log.lines().any(|l| l.contains(what) && l.contains(&escaped)),
            "no escaped payload in a `{what}` line: {log}"
        );
    }

    let mut events = steward_command()
        .args(["events", "--history", "--api", &daemon.api])
        .env("STEWARD_TOKEN", daemon.token("operate"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("steward events runs");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = events.kill();
    let output = events.wait_with_output().expect("events output");
    let rendered = String::from_utf8_lossy(&output.stdout);
    assert!(rendered.contains(&escaped), "the failure is in the event stream: {rendered}");
    assert_no_raw_controls("steward events", &rendered);

    let status = daemon.status_text().await;
    assert!(status.contains(&escaped), "{status}");
    assert_no_raw_controls("steward status", &status);
}

#[test]
fn plugin_text_is_escaped_in_the_check_report() {
    let output = steward_command()
        .args(["plugin", "check"])
        .arg(guest_wasm("hostile"))
        .args(["--prop", "fault=inject"])
        .output()
        .expect("steward runs");
    assert_eq!(output.status.code(), Some(1));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains(&format!("innocent\\n{FORGED}")), "{report}");
    assert_no_raw_controls("plugin check", &report);
    assert_no_raw_controls("plugin check's log", &String::from_utf8_lossy(&output.stderr));
}
