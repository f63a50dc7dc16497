//! `steward daemon` under a `Type=notify` service manager, played by a
//! Unix datagram socket the test binds and names in `NOTIFY_SOCKET`:
//! `READY=1` comes once the API answers and the groups are started,
//! `WATCHDOG=1` comes from the node loop at about half of `WATCHDOG_USEC`,
//! a watchdog meant for another process (`WATCHDOG_PID`) is left alone, and
//! SIGTERM says `STOPPING=1`.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use steward_tests::daemon::{Daemon, demo_config};
use steward_tests::guest_wasm;

/// How long a first start may take (it compiles the plugins).
const START_LIMIT: Duration = Duration::from_secs(180);

/// The watchdog the tests ask for: the loop should beat every 200 ms.
const WATCHDOG_USEC: u64 = 400_000;

/// What the service manager heard: each line with when it arrived.
#[derive(Clone, Default)]
struct Heard(Arc<Mutex<Vec<(Instant, String)>>>);

impl Heard {
    /// Binds the manager's socket at `path` and records every datagram sent
    /// to it, line by line, until the test ends.
    fn listen(path: &std::path::Path) -> Heard {
        let socket = tokio::net::UnixDatagram::bind(path).expect("the notify socket binds");
        let heard = Heard::default();
        let lines = heard.0.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok(length) = socket.recv(&mut buffer).await {
                let at = Instant::now();
                let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
                let mut lines = lines.lock().expect("lines");
                lines.extend(text.lines().map(|line| (at, line.to_string())));
            }
        });
        heard
    }

    fn lines(&self) -> Vec<(Instant, String)> {
        self.0.lock().expect("lines").clone()
    }

    /// When `line` first arrived.
    fn first(&self, line: &str) -> Option<Instant> {
        self.lines().iter().find(|(_, heard)| heard == line).map(|(at, _)| *at)
    }

    /// How many times `line` arrived.
    fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|(_, heard)| heard == line).count()
    }

    fn transcript(&self) -> String {
        self.lines().iter().map(|(_, line)| line.as_str()).collect::<Vec<_>>().join("\n")
    }
}

/// `GET /v1/status`, or `None` while the API does not answer.
async fn status(daemon: &Daemon, client: &reqwest::Client) -> Option<Value> {
    let response = daemon.authorize(client.get(daemon.url("/v1/status"))).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

fn group<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["groups"]
        .as_array()
        .and_then(|groups| groups.iter().find(|group| group["name"] == name))
        .unwrap_or(&Value::Null)
}

/// Waits until `name` is online.
async fn wait_online(daemon: &Daemon, client: &reqwest::Client, name: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status(daemon, client).await.unwrap_or_default();
        if group(&status, name)["state"] == "online" {
            return;
        }
        assert!(Instant::now() < until, "group `{name}` did not come online: {status}\nlog: {}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the status until READY=1 arrives; returns when it arrived, with
/// every status read before it (when its request was sent, and the phase
/// it showed).
async fn until_ready(
    daemon: &mut Daemon,
    heard: &Heard,
    client: &reqwest::Client,
) -> (Instant, Vec<(Instant, String)>) {
    let until = Instant::now() + START_LIMIT;
    let mut reads = Vec::new();
    loop {
        if let Some(ready) = heard.first("READY=1") {
            return (ready, reads);
        }
        assert!(
            Instant::now() < until,
            "no READY=1 within {START_LIMIT:?}; heard:\n{}\nlog: {}",
            heard.transcript(),
            daemon.log()
        );
        assert!(daemon.running(), "the daemon exited before READY=1: {}", daemon.log());
        let sent = Instant::now();
        if let Some(status) = status(daemon, client).await {
            reads.push((sent, status["phase"].as_str().unwrap_or_default().to_string()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_the_api_serves_and_the_group_is_started_then_watchdog_pings_and_stopping_on_sigterm() {
    let plugins: Vec<_> = ["file_marker", "generic_app", "http_check"].iter().map(|name| guest_wasm(name)).collect();
    let mut daemon = Daemon::prepare(&demo_config(), &plugins);
    let socket = daemon.path("notify.sock");
    let heard = Heard::listen(&socket);
    let watchdog = WATCHDOG_USEC.to_string();
    daemon.launch_with_env(&[("NOTIFY_SOCKET", socket.as_os_str()), ("WATCHDOG_USEC", OsStr::new(&watchdog))]);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");

    let (ready, reads) = until_ready(&mut daemon, &heard, &client).await;
    // A status asked for after READY=1 was sent cannot show an earlier phase.
    for (sent, phase) in &reads {
        assert!(*sent < ready || phase == "running", "phase {phase} after READY=1: {reads:?}");
    }
    let status = status(&daemon, &client).await.expect("the API answers once READY=1 is sent");
    assert_eq!(status["phase"], "running", "{status}");
    let notepad = group(&status, "ha-notepad");
    assert_eq!(notepad["wanted_online"], true, "the group was started before READY=1: {status}");
    assert!(["pending", "online"].contains(&notepad["state"].as_str().unwrap_or_default()), "{status}");
    assert_eq!(heard.count("READY=1"), 1, "{}", heard.transcript());
    let statuses: Vec<String> =
        heard.lines().into_iter().filter_map(|(_, line)| line.strip_prefix("STATUS=").map(str::to_string)).collect();
    for expected in ["loading plugins", "opening 3 resource(s)", "running: 1 group(s), 3 resource(s)"] {
        assert!(statuses.iter().any(|line| line == expected), "STATUS={expected} missing: {statuses:?}");
    }
    wait_online(&daemon, &client, "ha-notepad").await;

    // The loop beats every 200 ms; a busy 2-core machine may stall it now
    // and then, but never makes it beat faster (missed beats are skipped).
    // The upper bound leaves room for this test's own receiver stalling at
    // the window's start and counting older beats in it.
    let (before, from) = (heard.count("WATCHDOG=1"), Instant::now());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (pings, elapsed) = (heard.count("WATCHDOG=1") - before, from.elapsed());
    let expected = elapsed.as_micros() as usize / (WATCHDOG_USEC as usize / 2);
    assert!(
        pings >= expected / 3 && pings <= expected + expected / 2 + 2,
        "{pings} WATCHDOG=1 in {elapsed:?}, about {expected} expected"
    );

    let exit = daemon.terminate();
    assert!(exit.success(), "{exit}: {}", daemon.log());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = heard.first("STOPPING=1").unwrap_or_else(|| panic!("no STOPPING=1; heard:\n{}", heard.transcript()));
    assert!(stopping > ready, "{}", heard.transcript());
    assert!(
        heard.first("STATUS=stopping: taking groups offline").is_some_and(|at| at >= stopping),
        "{}",
        heard.transcript()
    );
}

const ONE_DUMMY: &str = r#"
[node]
name = "node-n"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "d"
type = "dummy"

[[group]]
name = "g"
resources = ["d"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchdog_for_another_process_gets_no_pings_but_ready_still_comes() {
    let mut daemon = Daemon::prepare(ONE_DUMMY, &[guest_wasm("dummy")]);
    let socket = daemon.path("notify.sock");
    let heard = Heard::listen(&socket);
    let watchdog = WATCHDOG_USEC.to_string();
    // The variables a child would inherit from a supervised parent.
    daemon.launch_with_env(&[
        ("NOTIFY_SOCKET", socket.as_os_str()),
        ("WATCHDOG_USEC", OsStr::new(&watchdog)),
        ("WATCHDOG_PID", OsStr::new("1")),
    ]);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    until_ready(&mut daemon, &heard, &client).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(heard.count("WATCHDOG=1"), 0, "{}", heard.transcript());
    daemon.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(heard.count("STOPPING=1"), 1, "{}", heard.transcript());
}
