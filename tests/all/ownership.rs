//! The ownership seam of a node running alone: every group is acquired
//! before it goes online, each time with a fencing token larger than the
//! last, across offline and online and across a restart of the daemon;
//! the token reaches the call context and the plugin's `fencing-token`
//! import alike; `attempt` counts online tries in a row; the other
//! resources of a group are told of a peer coming online and going
//! offline, in order.

use std::time::Duration;

use steward_tests::daemon::Daemon;

const PAIR: &str = r#"
[node]
name = "node-o"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "first"
type = "dummy"

[[resource]]
name = "second"
type = "dummy"
depends_on = ["first"]

[[resource]]
name = "flaky"
type = "dummy"
properties = { fail-online = "transient" }

[[group]]
name = "pair"
resources = ["first", "second"]

[[group]]
name = "flaky"
resources = ["flaky"]
policy = { restart_delay = "50ms", restart_backoff = 1.0, restart_threshold = 3 }
"#;

/// The fencing tokens (as the import answered, as the context carried)
/// and attempts that `resource`'s `online` logged, in order.
fn onlines(log: &str, resource: &str) -> Vec<(u64, u64, u32)> {
    let quoted = format!("resource=\"{resource}\"");
    log.lines()
        .filter(|line| line.contains(&quoted) || line.contains(&format!("resource={resource} ")))
        .filter_map(|line| {
            let rest = line.split("online: fencing token ").nth(1)?;
            let (import, rest) = rest.split_once(" (context ")?;
            let (context, rest) = rest.split_once("), attempt ")?;
            let attempt: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((import.parse().ok()?, context.parse().ok()?, attempt.parse().ok()?))
        })
        .collect()
}

async fn group_token(daemon: &Daemon, group: &str) -> u64 {
    let status = daemon.get(&format!("/v1/groups/{group}")).await;
    status["fencing_token"].as_u64().unwrap_or_else(|| panic!("no fencing token on {group}: {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_grow_across_offline_online_and_restarts() {
    let mut daemon = Daemon::start(PAIR, &["dummy"]).await;
    daemon.wait_group("pair", "online", Duration::from_secs(20)).await;
    let first_token = group_token(&daemon, "pair").await;

    let (status, _) = daemon.post("/v1/groups/pair/offline").await;
    assert_eq!(status, 202);
    daemon.wait_group("pair", "offline", Duration::from_secs(20)).await;
    let (status, _) = daemon.post("/v1/groups/pair/online").await;
    assert_eq!(status, 202);
    daemon.wait_group("pair", "online", Duration::from_secs(20)).await;
    let second_token = group_token(&daemon, "pair").await;
    assert!(second_token > first_token, "{first_token} then {second_token}");

    daemon.terminate();
    daemon.spawn().await;
    daemon.wait_group("pair", "online", Duration::from_secs(20)).await;
    let third_token = group_token(&daemon, "pair").await;
    assert!(third_token > second_token, "{second_token} then {third_token} after a restart");

    let log = daemon.log();
    let tokens: Vec<u64> = onlines(&log, "first").iter().map(|(import, _, _)| *import).collect();
    assert_eq!(tokens, [first_token, second_token, third_token], "{log}");
    for (import, context, _) in onlines(&log, "second") {
        assert_eq!(import, context, "the import and the context agree");
    }
    // `first` heard of `second` coming online and going offline, in order.
    let heard: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("notified: ClusterEvent::Peer") && line.contains("resource=\"first\""))
        .map(|line| if line.contains("PeerOnline(\"second\")") { "online" } else { "offline" })
        .collect();
    assert!(heard.starts_with(&["online", "offline", "online"]), "{heard:?}\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_counts_online_tries_in_a_row() {
    let daemon = Daemon::start(PAIR, &["dummy"]).await;
    daemon.wait_group("flaky", "failed", Duration::from_secs(20)).await;
    let attempts: Vec<u32> = onlines(&daemon.log(), "flaky").iter().map(|(_, _, attempt)| *attempt).collect();
    assert!(attempts.starts_with(&[1, 2, 3, 4]), "{attempts:?}");
}
