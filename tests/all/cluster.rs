//! Real `steward` daemons forming a cluster on a real 3-member etcd
//! (`steward_cluster::harness`): a group runs on exactly one node, its
//! preferred one; when that node is killed (kill -9) or paused past its
//! lease (SIGSTOP) the next preferred node takes it over with a larger
//! fencing token (also with the etcd leader killed and another member
//! stopped meanwhile); a planned move hands it to the node named, with a
//! new token; with all of etcd gone the owner fences itself, and the
//! group runs once again when etcd is back; a node name already taken in
//! the cluster refuses to start. Over TLS (`[cluster] tls`), nodes join
//! and run the group, and a node that does not trust etcd's certificate
//! refuses to start.
//!
//! The group's resource is the `fenced` fixture, which appends (fencing
//! token, node, time) to a journal the nodes share on every online and
//! every probe. Every test reads from it that tokens never go back and
//! that no two nodes ran the group inside one ownership.

use std::time::{Duration, Instant};

use steward_cluster::harness::EtcdCluster;
use steward_tests::daemon::Daemon;

/// One node of the test cluster: a `fenced` resource journaling into
/// `journal_dir`, in group `g`, which prefers `node-a`, then `node-b`,
/// then `node-c`.
fn node_file(node: &str, cluster: &str, etcd: &EtcdCluster, journal_dir: &std::path::Path) -> String {
    node_file_with(node, cluster, etcd, journal_dir, "")
}

/// As [`node_file`], with more keys for group `g`.
fn node_file_with(
    node: &str,
    cluster: &str,
    etcd: &EtcdCluster,
    journal_dir: &std::path::Path,
    group_keys: &str,
) -> String {
    let resource = format!(
        "type = \"fenced\"\nproperties = {{ journal = \"/journal/log\" }}\n\
         grants = {{ directories = [{{ host = \"{}\", guest = \"/journal\" }}] }}",
        journal_dir.display()
    );
    cluster_node_file(node, cluster, etcd, &resource, group_keys)
}

/// A node of cluster `cluster` with one resource `r` (its keys after the
/// name, `resource_keys`), probed every 50 ms, in group `g`, which prefers
/// `node-a`, then `node-b`, then `node-c` (more keys: `group_keys`).
fn cluster_node_file(node: &str, cluster: &str, etcd: &EtcdCluster, resource_keys: &str, group_keys: &str) -> String {
    let node_tables = bare_node_file(node, cluster, etcd);
    format!(
        r#"{node_tables}
[[resource]]
name = "r"
{resource_keys}
looks_alive_interval = "50ms"

[[group]]
name = "g"
resources = ["r"]
preferred_owners = ["node-a", "node-b", "node-c"]
{group_keys}
"#
    )
}

/// A node of cluster `cluster` with no groups of its own.
pub(crate) fn bare_node_file(node: &str, cluster: &str, etcd: &EtcdCluster) -> String {
    let endpoints: Vec<String> = etcd.endpoints().iter().map(|url| format!("\"{url}\"")).collect();
    format!(
        r#"
[node]
name = "{node}"
plugin_dir = "plugins"
data_dir = "data"
api = "{{api}}"

[cluster]
name = "{cluster}"
endpoints = [{endpoints}]
lease_ttl = "1s"
safety_margin = "100ms"
"#,
        endpoints = endpoints.join(", ")
    )
}

/// One line of the journal: who ran the group, with which token, when.
#[derive(Debug)]
struct Entry {
    token: u64,
    node: String,
    unix_ms: u64,
}

/// Reads the journal and checks what every test must hold: each token
/// was used by one node only, and the ownerships follow one another in
/// time (the last line of a token comes no later than the first line of
/// the next), so tokens never went back and no two nodes overlapped.
fn checked_journal(dir: &std::path::Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    let entries: Vec<Entry> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let token = fields.next()?.parse().ok()?;
            let node = fields.next()?.to_string();
            let _cluster = fields.next()?;
            let unix_ms = fields.next()?.parse().ok()?;
            Some(Entry { token, node, unix_ms })
        })
        .collect();
    let mut spans: std::collections::BTreeMap<u64, (String, u64, u64)> = std::collections::BTreeMap::new();
    for entry in &entries {
        let span = spans.entry(entry.token).or_insert_with(|| (entry.node.clone(), entry.unix_ms, entry.unix_ms));
        assert_eq!(span.0, entry.node, "token {} was used by {} and {}: {entries:?}", entry.token, span.0, entry.node);
        span.1 = span.1.min(entry.unix_ms);
        span.2 = span.2.max(entry.unix_ms);
    }
    let spans: Vec<(u64, (String, u64, u64))> = spans.into_iter().collect();
    for pair in spans.windows(2) {
        let ((old, (old_node, _, old_last)), (new, (new_node, new_first, _))) = (&pair[0], &pair[1]);
        assert!(
            old_last <= new_first,
            "{old_node} ran with token {old} until {old_last}, after {new_node} began with token {new} at {new_first}"
        );
    }
    entries
}

/// Each node's view of group `g`: its state and fencing token there.
async fn group_on(nodes: &[&Daemon]) -> Vec<(String, Option<u64>)> {
    let mut seen = Vec::new();
    for node in nodes {
        let group = node.get("/v1/groups/g").await;
        seen.push((group["state"].as_str().unwrap_or("?").to_string(), group["fencing_token"].as_u64()));
    }
    seen
}

/// Waits until exactly the node at `owner` of `nodes` runs `g`, and no
/// other node does meanwhile; its fencing token.
async fn wait_owner(nodes: &[&Daemon], owner: usize, limit: Duration) -> u64 {
    let until = Instant::now() + limit;
    loop {
        let seen = group_on(nodes).await;
        let online: Vec<usize> = (0..seen.len()).filter(|at| seen[*at].0 == "online").collect();
        assert!(online.len() <= 1, "two nodes run group g at once: {seen:?}");
        if online == [owner]
            && let Some(token) = seen[owner].1
        {
            return token;
        }
        assert!(Instant::now() < until, "node {owner} did not come to run g within {limit:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_runs_on_its_preferred_node_and_fails_over_when_that_node_is_killed() {
    let etcd = EtcdCluster::start().await;
    let journal = tempfile::tempdir().expect("a journal directory");
    let file = |node: &str| node_file(node, "failover", &etcd, journal.path());
    let mut a = Daemon::start(&file("node-a"), &["fenced"]).await;
    let b = Daemon::start(&file("node-b"), &["fenced"]).await;
    let c = Daemon::start(&file("node-c"), &["fenced"]).await;
    let first = wait_owner(&[&a, &b, &c], 0, Duration::from_secs(30)).await;
    // The others hold no token: they do not own it.
    let seen = group_on(&[&a, &b, &c]).await;
    assert!(seen[1].1.is_none() && seen[2].1.is_none(), "only node-a owns g: {seen:?}");
    // Any node shows the whole cluster: its nodes, and who owns what.
    let cluster = c.get("/v1/cluster").await;
    let names: Vec<&str> =
        cluster["nodes"].as_array().into_iter().flatten().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["node-a", "node-b", "node-c"], "{cluster}");
    assert_eq!(cluster["owners"][0]["node"], "node-a", "{cluster}");
    assert_eq!(cluster["owners"][0]["fencing_token"], first, "{cluster}");
    let nodes = c.cli(&["nodes"]);
    let table = String::from_utf8_lossy(&nodes.stdout);
    assert!(nodes.status.success() && table.contains(&format!("g ({first})")), "steward nodes: {table}");

    let killed = Instant::now();
    a.kill9();
    let second = wait_owner(&[&b, &c], 0, Duration::from_secs(30)).await;
    println!("failover after kill -9 of the owner: {} ms", killed.elapsed().as_millis());
    assert!(second > first, "the new owner's fencing token {second} is larger than the old one's {first}");
    let events = b.events().await;
    assert!(
        events.iter().any(|e| e["kind"] == "group-acquired" && e["group"] == "g"),
        "node-b published its acquisition: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "owner-changed" && e["reason"].as_str().is_some_and(|r| r.contains("node-b"))),
        "the event stream names the new owner: {events:#?}"
    );
    assert_eq!(b.metric("steward_cluster_failovers_total").await, Some(1.0), "node-b counted its takeover");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let entries = checked_journal(journal.path());
    assert!(entries.iter().any(|e| e.node == "node-b" && e.token == second), "node-b journaled: {entries:?}");

    // node-a comes back: node-b's running resource hears of it, and keeps
    // the group (failback is not the default).
    a.spawn().await;
    journaled(journal.path(), "event node-b ClusterEvent::NodeJoined(\"node-a\")").await;
    wait_owner(&[&a, &b, &c], 1, Duration::from_secs(5)).await;
    checked_journal(journal.path());
}

/// The names of the groups `node` has, in order.
async fn group_names(node: &Daemon) -> Vec<String> {
    let groups = node.get("/v1/groups").await;
    groups.as_array().into_iter().flatten().filter_map(|group| group["name"].as_str().map(str::to_string)).collect()
}

/// Waits until `node` sees `count` nodes, each with its plugin types published.
async fn all_publish_types(node: &Daemon, count: usize) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let cluster = node.get("/v1/cluster").await;
        let nodes = cluster["nodes"].as_array().cloned().unwrap_or_default();
        let published = nodes.iter().filter(|n| n["plugins"].as_object().is_some_and(|p| !p.is_empty())).count();
        if published == count {
            return;
        }
        assert!(Instant::now() < until, "not every node published its types: {cluster}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the journal has a line starting with `line`.
async fn journaled(dir: &std::path::Path, line: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        if text.lines().any(|journaled| journaled.starts_with(line)) {
            return;
        }
        assert!(Instant::now() < until, "the journal has no `{line}`:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_paused_past_its_lease_is_fenced_before_the_next_node_starts_and_stays_fenced() {
    let etcd = EtcdCluster::start().await;
    let journal = tempfile::tempdir().expect("a journal directory");
    let file = |node: &str| node_file(node, "paused", &etcd, journal.path());
    let a = Daemon::start(&file("node-a"), &["fenced"]).await;
    let b = Daemon::start(&file("node-b"), &["fenced"]).await;
    let first = wait_owner(&[&a, &b], 0, Duration::from_secs(30)).await;

    // SIGSTOP stops the daemon, not its monitor workers: the probes go on
    // there until the lease deadline the daemon gave them passes.
    signal(&a, rustix::process::Signal::STOP);
    let second = wait_owner(&[&b], 0, Duration::from_secs(30)).await;
    assert!(second > first, "node-b's token {second} is larger than node-a's {first}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&a, rustix::process::Signal::CONT);
    // Back, node-a finds its lease gone and brings nothing back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = wait_owner(&[&a, &b], 1, Duration::from_secs(5)).await;
    let entries = checked_journal(journal.path());
    let a_lines = entries.iter().filter(|e| e.node == "node-a").count();
    let b_lines = entries.iter().filter(|e| e.node == "node-b").count();
    assert!(a_lines > 0 && b_lines > 0, "both nodes ran the group in turn: {entries:?}");
    assert!(
        entries.iter().filter(|e| e.node == "node-a").all(|e| e.token == first),
        "node-a ran only with its first token: {entries:?}"
    );
}

/// With `failback = "immediate"`, a group that failed over goes back to
/// its preferred node when that node returns, with a new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_fails_back_to_its_returning_preferred_node() {
    let etcd = EtcdCluster::start().await;
    let journal = tempfile::tempdir().expect("a journal directory");
    let file = |node: &str| node_file_with(node, "failback", &etcd, journal.path(), "failback = \"immediate\"");
    let mut a = Daemon::start(&file("node-a"), &["fenced"]).await;
    let b = Daemon::start(&file("node-b"), &["fenced"]).await;
    let first = wait_owner(&[&a, &b], 0, Duration::from_secs(30)).await;
    a.kill9();
    let second = wait_owner(&[&b], 0, Duration::from_secs(30)).await;
    a.spawn().await;
    let third = wait_owner(&[&a, &b], 0, Duration::from_secs(30)).await;
    assert!(first < second && second < third, "tokens grow: {first}, {second}, {third}");
    let events = b.events().await;
    assert!(
        events.iter().any(|e| e["kind"] == "group-moving" && e["group"] == "g"),
        "node-b moved it back: {events:#?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    checked_journal(journal.path());
}

/// A group that fails on its owner past its restart threshold moves to
/// the next node, skipping nodes where it failed within its failover
/// period, `failover_threshold` times; then it stays failed where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_group_moves_on_up_to_its_failover_threshold_then_stays_failed() {
    let etcd = EtcdCluster::start().await;
    let file = |node: &str| {
        cluster_node_file(
            node,
            "failing",
            &etcd,
            "type = \"dummy\"\nproperties = { fail-after-probes = 3 }",
            "policy = { restart_threshold = 0, failover_threshold = 2, failover_period = \"1h\" }\nautostart = false",
        )
    };
    let a = Daemon::start(&file("node-a"), &["dummy"]).await;
    let b = Daemon::start(&file("node-b"), &["dummy"]).await;
    let c = Daemon::start(&file("node-c"), &["dummy"]).await;
    // Started once every node says it has the type: a node that has not
    // published its types yet is passed over, as one lacking them.
    all_publish_types(&a, 3).await;
    let asked = a.cli(&["online", "g"]);
    assert!(asked.status.success(), "steward online: {asked:?}");
    // a, then b, then c: each fails it and hands it on; c keeps it failed.
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        let events = c.events().await;
        if events.iter().any(|e| e["kind"] == "failover-exhausted" && e["group"] == "g") {
            break;
        }
        assert!(
            Instant::now() < until,
            "node-c never kept g failed: {events:#?}\nnode-a: {}\nnode-b: {}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (node, name) in [(&a, "node-a"), (&b, "node-b")] {
        let events = node.events().await;
        assert!(
            events.iter().any(|e| e["kind"] == "group-failed-over" && e["group"] == "g"),
            "{name} failed g over: {events:#?}"
        );
    }
    assert_eq!(c.group_state("g").await, "failed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = group_on(&[&a, &b, &c]).await;
    assert!(seen.iter().all(|(state, _)| state != "online"), "nobody runs it any more: {seen:?}");
    assert!(seen[2].1.is_some() && seen[0].1.is_none() && seen[1].1.is_none(), "node-c still owns g: {seen:?}");

    // `steward why g`, asked of any node, reads the whole chain from every
    // node in order: failed on node-a, moved on (node-a skipped as failed
    // there), failed on node-b, moved on, failed on node-c, past the threshold.
    let why = b.cli(&["why", "g"]);
    let text = String::from_utf8_lossy(&why.stdout).to_string();
    assert!(why.status.success(), "steward why: {why:?}");
    let kinds: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with(' '))
        .filter_map(|line| line.split(' ').nth(2).map(|kind| kind.trim_end_matches(':')))
        .filter(|kind| ["group-failed", "failover", "failover-exhausted"].contains(kind))
        .collect();
    assert_eq!(
        kinds,
        ["group-failed", "failover", "group-failed", "failover", "group-failed", "failover-exhausted"],
        "the chain in order: {text}"
    );
    assert!(
        text.contains("node-a: skipped: the group failed there") && text.contains("failover_threshold (2)"),
        "why names the skipped node and the rule: {text}"
    );
}

/// `steward move`: the owner takes the group offline, hands it to the node
/// named (or the next by placement), which brings it online with a new
/// token; a node that does not own the group refuses, naming the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_move_hands_the_group_over_with_a_new_token() {
    let etcd = EtcdCluster::start().await;
    let journal = tempfile::tempdir().expect("a journal directory");
    let file = |node: &str| node_file(node, "moves", &etcd, journal.path());
    let a = Daemon::start(&file("node-a"), &["fenced"]).await;
    let b = Daemon::start(&file("node-b"), &["fenced"]).await;
    let c = Daemon::start(&file("node-c"), &["fenced"]).await;
    let first = wait_owner(&[&a, &b, &c], 0, Duration::from_secs(30)).await;

    let refused = b.cli(&["move", "g", "node-c"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("node-a"), "a non-owner refuses, naming the owner: {said}");

    // Any text an operator types stays one value: refused as no node.
    let refused = a.cli(&["move", "g", "node-c/../x?to=node-b&y"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("`node-c/../x?to=node-b&y` is not a live member"),
        "an unknown node is refused by name: {said}"
    );

    let asked = Instant::now();
    let moved = a.cli(&["move", "g", "node-c"]);
    assert!(moved.status.success(), "{}", String::from_utf8_lossy(&moved.stderr));
    let second = wait_owner(&[&a, &b, &c], 2, Duration::from_secs(30)).await;
    println!("planned move to node-c: {} ms", asked.elapsed().as_millis());
    assert!(second > first, "the move gave a new token: {first} -> {second}");
    let events = c.events().await;
    assert!(events.iter().any(|e| e["kind"] == "group-moved" && e["group"] == "g"), "{events:#?}");
    let events = a.events().await;
    assert!(events.iter().any(|e| e["kind"] == "group-moving" && e["group"] == "g"), "{events:#?}");
    // The resources heard of it on both sides.
    journaled(journal.path(), "event node-a ClusterEvent::GroupMoving(").await;
    journaled(journal.path(), "event node-c ClusterEvent::GroupMoved(").await;

    // Without a node: the first live node of the preferred order.
    let moved = c.cli(&["move", "g"]);
    assert!(moved.status.success(), "{}", String::from_utf8_lossy(&moved.stderr));
    let third = wait_owner(&[&a, &b, &c], 0, Duration::from_secs(30)).await;
    assert!(third > second, "{second} -> {third}");
    assert_eq!(a.metric("steward_cluster_moves_total").await, Some(1.0), "node-a counted the move it made");
    assert_eq!(c.metric("steward_cluster_moves_total").await, Some(1.0), "node-c counted the move it made");
    tokio::time::sleep(Duration::from_millis(300)).await;
    checked_journal(journal.path());
}

/// etcd's own faults during a failover: the etcd leader is killed (-9)
/// together with the group's owner, and another member is stopped
/// (SIGSTOP) while the next node takes over. The group still ends up
/// running on exactly one node, with a larger token, and no two nodes
/// ever overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_survives_the_etcd_leader_killed_and_a_member_stopped() {
    let mut etcd = EtcdCluster::start().await;
    let journal = tempfile::tempdir().expect("a journal directory");
    let file = |node: &str| node_file(node, "etcd-faults", &etcd, journal.path());
    let mut a = Daemon::start(&file("node-a"), &["fenced"]).await;
    let b = Daemon::start(&file("node-b"), &["fenced"]).await;
    let c = Daemon::start(&file("node-c"), &["fenced"]).await;
    let first = wait_owner(&[&a, &b, &c], 0, Duration::from_secs(30)).await;

    let leader = etcd.leader().await;
    a.kill9();
    etcd.kill(leader);
    let stopped = (leader + 1) % 3;
    etcd.pause(stopped);
    // Two members of three are needed for a quorum: with one killed and
    // one stopped there is none, so the takeover waits for the stopped one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = group_on(&[&b, &c]).await;
    assert!(seen.iter().filter(|(state, _)| state == "online").count() <= 1, "two owners: {seen:?}");
    etcd.resume(stopped);
    let second = wait_owner(&[&b, &c], 0, Duration::from_secs(30)).await;
    assert!(second > first, "the new owner's token {second} is larger than {first}");
    etcd.restart(leader).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = group_on(&[&b, &c]).await;
    assert_eq!(seen.iter().filter(|(state, _)| state == "online").count(), 1, "exactly one owner: {seen:?}");
    checked_journal(journal.path());
}

/// With every etcd member stopped, the owner keeps its group only while
/// its lease lives by its own estimate, then fences itself; when etcd
/// comes back, the nodes rejoin and the group runs again on exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_gone_the_owner_fences_itself_and_the_group_comes_back_once() {
    let etcd = EtcdCluster::start().await;
    let journal = tempfile::tempdir().expect("a journal directory");
    let file = |node: &str| node_file(node, "outage", &etcd, journal.path());
    let a = Daemon::start(&file("node-a"), &["fenced"]).await;
    let b = Daemon::start(&file("node-b"), &["fenced"]).await;
    wait_owner(&[&a, &b], 0, Duration::from_secs(30)).await;

    etcd.pause_all();
    let paused = Instant::now();
    // Fenced within the lease (1 s) and the loop's reaction to it.
    let until = paused + Duration::from_secs(4);
    loop {
        let seen = group_on(&[&a, &b]).await;
        assert!(seen.iter().filter(|(state, _)| state == "online").count() <= 1, "two owners: {seen:?}");
        if seen.iter().all(|(state, _)| state != "online") {
            break;
        }
        assert!(Instant::now() < until, "node-a kept running g with etcd gone: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fenced_after = paused.elapsed();
    let events = a.events().await;
    assert!(events.iter().any(|e| e["kind"] == "group-lost" && e["group"] == "g"), "node-a lost g: {events:#?}");
    assert!(events.iter().any(|e| e["kind"] == "quorum-lost"), "node-a says it lost etcd: {events:#?}");
    // The fenced resource's graceful offline may take the host's 180 s
    // default, far past what was left of the 1 s lease: it was terminated.
    let why: Vec<serde_json::Value> = a.get("/v1/groups/g/why").await.as_array().cloned().unwrap_or_default();
    assert!(
        why.iter().any(|d| d["kind"] == "fenced") && why.iter().any(|d| d["kind"] == "terminate"),
        "node-a fenced g and terminated its resource rather than wait for a graceful offline: {why:#?}"
    );
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(paused.elapsed())).await;
    etcd.resume_all();
    // Back: one node runs it again (whichever), and only one.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = group_on(&[&a, &b]).await;
        let online = seen.iter().filter(|(state, _)| state == "online").count();
        assert!(online <= 1, "two owners after the outage: {seen:?}");
        if online == 1 {
            break;
        }
        assert!(Instant::now() < until, "g did not come back after the outage: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("fenced {} ms after etcd stopped", fenced_after.as_millis());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = group_on(&[&a, &b]).await;
    assert_eq!(seen.iter().filter(|(state, _)| state == "online").count(), 1, "exactly one owner: {seen:?}");
    checked_journal(journal.path());
}

fn signal(daemon: &Daemon, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(daemon.pid() as i32).expect("a running daemon");
    rustix::process::kill_process(pid, signal).expect("the signal is sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_name_taken_in_the_cluster_refuses_to_start() {
    let etcd = EtcdCluster::start().await;
    let journal = tempfile::tempdir().expect("a journal directory");
    let file = node_file("node-a", "names", &etcd, journal.path());
    let _first = Daemon::start(&file, &["fenced"]).await;
    let mut second = Daemon::prepare(&file, &[steward_tests::guest_wasm("fenced")]);
    second.launch();
    let log = second.wait_exit(Duration::from_secs(20)).await;
    assert!(log.contains("[cluster]") && log.contains("node-a"), "the refusal names the section and the node: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_groups_plugin_type_never_gets_the_group() {
    let etcd = EtcdCluster::start().await;
    let journal = tempfile::tempdir().expect("a journal directory");
    let file = |node: &str| node_file(node, "types", &etcd, journal.path());
    // node-a, the most preferred, has no `fenced` plugin: it runs, and
    // says why it will not run g, and placement passes it over.
    let a = Daemon::start(&file("node-a"), &["dummy"]).await;
    let mut b = Daemon::start(&file("node-b"), &["fenced"]).await;
    let mut c = Daemon::start(&file("node-c"), &["fenced"]).await;
    wait_owner(&[&a, &b, &c], 1, Duration::from_secs(30)).await;
    let group = a.get("/v1/groups/g").await;
    assert!(
        group["reason"].as_str().is_some_and(|reason| reason.contains("no plugin of type `fenced`")),
        "node-a says why it does not run g: {group}"
    );
    b.kill9();
    wait_owner(&[&a, &c], 1, Duration::from_secs(30)).await;
    let why = c.cli(&["why", "g"]);
    let text = String::from_utf8_lossy(&why.stdout).to_string();
    assert!(
        text.contains("node-c acquired") && text.contains("node-a: skipped: lacks plugin type `fenced`"),
        "why explains the takeover and the skipped node: {text}"
    );
    // With node-c gone too, g has no node that can run it: node-a, alone
    // and willing, still never takes it.
    c.kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let seen = group_on(&[&a]).await;
    assert_eq!(seen[0], ("offline".to_string(), None), "node-a never runs g");
    let entries = checked_journal(journal.path());
    assert!(entries.iter().all(|entry| entry.node != "node-a"), "node-a never ran g: {entries:?}");
    assert!(entries.iter().any(|entry| entry.node == "node-c"), "node-c ran g: {entries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steward_apply_shares_groups_with_every_node_and_a_bad_file_changes_nothing() {
    let etcd = EtcdCluster::start().await;
    let journal = tempfile::tempdir().expect("a journal directory");
    let file = |node: &str| node_file(node, "apply", &etcd, journal.path());
    let a = Daemon::start(&file("node-a"), &["fenced"]).await;
    let b = Daemon::start(&file("node-b"), &["fenced"]).await;
    wait_owner(&[&a, &b], 0, Duration::from_secs(30)).await;
    let shown = a.cli(&["config", "show"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("no shared configuration is applied"),
        "before an apply, a node runs its node file: {shown:?}"
    );

    // g as the node files have it, and a new group g2 that prefers node-b.
    let files = tempfile::tempdir().expect("a directory for the applied files");
    let fenced = |name: &str, log: &str| {
        format!(
            "[[resource]]\nname = \"{name}\"\ntype = \"fenced\"\nproperties = {{ journal = \"/journal/{log}\" }}\n\
             grants = {{ directories = [{{ host = \"{}\", guest = \"/journal\" }}] }}\nlooks_alive_interval = \"50ms\"\n",
            journal.path().display()
        )
    };
    let groups = files.path().join("groups.toml");
    std::fs::write(
        &groups,
        format!(
            "{}\n[[group]]\nname = \"g\"\nresources = [\"r\"]\npreferred_owners = [\"node-a\", \"node-b\"]\n\n{}\n\
             [[group]]\nname = \"g2\"\nresources = [\"r2\"]\npreferred_owners = [\"node-b\", \"node-a\"]\n",
            fenced("r", "log"),
            fenced("r2", "log2")
        ),
    )
    .expect("the applied file is written");
    let applied = a.cli(&["apply", &groups.display().to_string()]);
    let said = String::from_utf8_lossy(&applied.stdout).to_string();
    assert!(applied.status.success() && said.contains("applied revision"), "apply: {applied:?}");
    // Every node reconciles: node-b runs the new group, node-a knows it.
    b.wait_group("g2", "online", Duration::from_secs(30)).await;
    assert_eq!(a.group_state("g2").await, "offline", "node-a does not run g2");
    wait_owner(&[&a, &b], 0, Duration::from_secs(5)).await;
    let config = b.get("/v1/config").await;
    let revision = config["revision"].as_i64().expect("a revision once applied");
    assert_eq!(config["applied_by"], "node-a", "{config}");
    let shown = b.cli(&["config", "show"]);
    let text = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(
        text.contains(&format!("revision {revision}"))
            && text.contains("groups.toml")
            && text.contains("name = \"g2\""),
        "config show prints what is applied: {text}"
    );

    // Bad files: each is refused, naming the file, line and field, and
    // nothing changes in etcd.
    let bad = [
        (
            "field.toml",
            "[[resource]]\nname = \"r3\"\ntype = \"fenced\"\npropertees = {}\n",
            "field.toml:4",
            "propertees",
        ),
        (
            "type.toml",
            "[[resource]]\nname = \"r3\"\ntype = \"no-such-type\"\n\n[[group]]\nname = \"g3\"\nresources = [\"r3\"]\n",
            "type.toml:2",
            "unknown type `no-such-type`",
        ),
        ("node.toml", "[node]\nname = \"x\"\n", "node.toml:1", "node-local settings"),
        (
            "group.toml",
            "[[group]]\nname = \"g4\"\nresources = [\"missing\"]\n",
            "group.toml:2",
            "unknown resource `missing`",
        ),
    ];
    for (name, text, location, what) in bad {
        let path = files.path().join(name);
        std::fs::write(&path, text).expect("the bad file is written");
        let refused = a.cli(&["apply", &groups.display().to_string(), &path.display().to_string()]);
        let error = String::from_utf8_lossy(&refused.stderr).to_string();
        assert!(!refused.status.success(), "{name} is refused: {refused:?}");
        assert!(
            error.contains(location) && error.contains(what),
            "{name}: the error names {location} and {what}: {error}"
        );
        assert!(error.contains("nothing was applied"), "{name}: {error}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in [&a, &b] {
        assert_eq!(node.get("/v1/config").await["revision"], revision, "nothing was written to etcd");
    }

    // A node that joins later with no groups of its own runs the shared ones.
    let c = Daemon::start(&bare_node_file("node-c", "apply", &etcd), &["fenced"]).await;
    assert_eq!(c.get("/v1/config").await["revision"], revision);
    assert_eq!(group_names(&c).await, ["g", "g2"], "node-c has the shared groups");

    // An operator takes g2 offline: a wish every node keeps.
    assert!(c.cli(&["offline", "g2"]).status.success());
    b.wait_group("g2", "offline", Duration::from_secs(30)).await;

    // A group the next apply leaves out goes offline where it runs and is
    // removed from every node.
    let only_g = files.path().join("only-g.toml");
    std::fs::write(
        &only_g,
        format!(
            "{}\n[[group]]\nname = \"g\"\nresources = [\"r\"]\npreferred_owners = [\"node-a\", \"node-b\"]\n",
            fenced("r", "log")
        ),
    )
    .expect("the second applied file is written");
    let applied = a.cli(&["apply", &only_g.display().to_string()]);
    assert!(applied.status.success(), "apply: {applied:?}");
    let until = Instant::now() + Duration::from_secs(30);
    for node in [&a, &b, &c] {
        loop {
            let names = group_names(node).await;
            if names == ["g"] {
                break;
            }
            assert!(Instant::now() < until, "g2 was not removed: {names:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let events = b.events().await;
    assert!(events.iter().any(|e| e["kind"] == "group-removed" && e["group"] == "g2"), "{events:#?}");
    let cluster = a.get("/v1/cluster").await;
    assert!(
        cluster["owners"].as_array().into_iter().flatten().all(|owner| owner["group"] != "g2"),
        "nobody owns g2 any more: {cluster}"
    );
    wait_owner(&[&a, &b, &c], 0, Duration::from_secs(5)).await;

    // The removal forgot the wish: g2 applied again starts afresh, online.
    let applied = a.cli(&["apply", &groups.display().to_string()]);
    assert!(applied.status.success(), "apply: {applied:?}");
    b.wait_group("g2", "online", Duration::from_secs(30)).await;

    // A changed resource replaces its group on every node: offline where
    // it ran, then online as now defined (here: writing another journal).
    let changed = std::fs::read_to_string(&groups).expect("the applied file").replace("/journal/log2", "/journal/log3");
    std::fs::write(&groups, changed).expect("the changed file is written");
    let applied = a.cli(&["apply", &groups.display().to_string()]);
    assert!(applied.status.success(), "apply: {applied:?}");
    let until = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(journal.path().join("log3")).unwrap_or_default().is_empty() {
        assert!(Instant::now() < until, "g2 did not come back as now defined: {}", b.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.wait_group("g2", "online", Duration::from_secs(30)).await;
    let events = b.events().await;
    assert!(
        events.iter().any(|e| e["kind"] == "config-applied"
            && e["reason"].as_str().is_some_and(|r| r.contains("replacing groups [g2]"))),
        "{events:#?}"
    );

    // Other settings only keep a group where it runs, unless the node may
    // no longer run it: barred from node-b, g2 moves to node-a.
    let barred = std::fs::read_to_string(&groups).expect("the applied file").replace(
        "preferred_owners = [\"node-b\", \"node-a\"]",
        "preferred_owners = [\"node-b\", \"node-a\"]\npossible_owners = [\"node-a\", \"node-c\"]",
    );
    std::fs::write(&groups, barred).expect("the changed file is written");
    let applied = a.cli(&["apply", &groups.display().to_string()]);
    assert!(applied.status.success(), "apply: {applied:?}");
    a.wait_group("g2", "online", Duration::from_secs(30)).await;
    assert_eq!(b.group_state("g2").await, "offline");
    let events = b.events().await;
    assert!(
        events.iter().any(|e| e["kind"] == "config-applied"
            && e["reason"].as_str().is_some_and(|r| r.contains("retuned groups [g2]"))),
        "{events:#?}"
    );
    assert!(!events.iter().any(|e| e["kind"] == "group-removed" && e["group"] == "g"), "g is untouched: {events:#?}");
    checked_journal(journal.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_online_and_offline_hold_in_the_whole_cluster_and_sigterm_moves_or_keeps_groups_offline() {
    let etcd = EtcdCluster::start().await;
    let journal = tempfile::tempdir().expect("a journal directory");
    let file = |node: &str| node_file(node, "wishes", &etcd, journal.path());
    // node-b, stopped, keeps its groups offline in the cluster; node-a
    // (the default) lets them move.
    let b_file =
        file("node-b").replace("safety_margin = \"100ms\"", "safety_margin = \"100ms\"\non_stop = \"offline\"");
    let mut a = Daemon::start(&file("node-a"), &["fenced"]).await;
    let mut b = Daemon::start(&b_file, &["fenced"]).await;
    wait_owner(&[&a, &b], 0, Duration::from_secs(30)).await;

    // Asked on node-b, which does not run it: g goes offline on node-a,
    // and no node takes it.
    let asked = b.cli(&["offline", "g"]);
    assert!(asked.status.success(), "steward offline: {asked:?}");
    a.wait_group("g", "offline", Duration::from_secs(10)).await;
    let nobody =
        |seen: &[(String, Option<u64>)]| seen.iter().all(|(state, token)| state == "offline" && token.is_none());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = group_on(&[&a, &b]).await;
    assert!(nobody(&seen), "offline in the whole cluster: {seen:?}");
    // A node that restarts remembers it too.
    a.kill9();
    a.spawn().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = group_on(&[&a, &b]).await;
    assert!(nobody(&seen), "still offline after node-a restarted: {seen:?}");

    // Online again, asked on node-b: it runs on its preferred node.
    let asked = b.cli(&["online", "g"]);
    assert!(asked.status.success(), "steward online: {asked:?}");
    let first = wait_owner(&[&a, &b], 0, Duration::from_secs(30)).await;

    // SIGTERM on node-a (on_stop = "move"): g moves to node-b.
    assert!(a.terminate().success(), "node-a stops cleanly: {}", a.log());
    let second = wait_owner(&[&b], 0, Duration::from_secs(30)).await;
    assert!(second > first, "a new ownership: {second} > {first}");
    a.spawn().await;
    // SIGTERM on node-b (on_stop = "offline"): g stays offline everywhere.
    assert!(b.terminate().success(), "node-b stops cleanly: {}", b.log());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = group_on(&[&a]).await;
    assert!(nobody(&seen), "node-a does not take g after node-b stopped with on_stop = offline: {seen:?}");
    let events = a.events().await;
    assert!(
        events.iter().any(|e| e["kind"] == "group-wanted" && e["group"] == "g"),
        "node-a heard node-b's wish: {events:#?}"
    );
    let asked = a.cli(&["online", "g"]);
    assert!(asked.status.success(), "steward online: {asked:?}");
    wait_owner(&[&a], 0, Duration::from_secs(30)).await;
    checked_journal(journal.path());
}

/// As [`node_file`], its `[cluster]` table with `tls = TLS`.
fn tls_node_file(node: &str, cluster: &str, etcd: &EtcdCluster, journal_dir: &std::path::Path, tls: &str) -> String {
    let file = node_file(node, cluster, etcd, journal_dir);
    // `[cluster]`'s last key is followed by the first `[[resource]]`.
    file.replacen("\n[[resource]]", &format!("tls = {tls}\n\n[[resource]]"), 1)
}

/// Nodes whose `[cluster] tls` names the CA and their client certificate,
/// relative to the node's file, join an etcd that serves its clients over
/// TLS and checks client certificates, and run the group on one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_cluster_tls_join_an_etcd_over_tls_and_run_the_group() {
    let etcd = EtcdCluster::start_tls().await;
    let files = etcd.tls_files().expect("a TLS cluster").clone();
    let journal = tempfile::tempdir().expect("a journal directory");
    let tls = r#"{ ca = "tls/etcd-ca.pem", cert = "tls/node.pem", key = "tls/node-key.pem" }"#;
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let file = tls_node_file(name, "over-tls", &etcd, journal.path(), tls);
        assert!(file.contains("\"https://127.0.0.1:"), "the endpoints are https: {file}");
        let mut node = Daemon::prepare(&file, &[steward_tests::guest_wasm("fenced")]);
        std::fs::create_dir_all(node.path("tls")).expect("a tls directory");
        for (from, to) in [
            (&files.ca, "tls/etcd-ca.pem"),
            (&files.client_cert, "tls/node.pem"),
            (&files.client_key, "tls/node-key.pem"),
        ] {
            std::fs::copy(from, node.path(to)).expect("a PEM file copied");
        }
        node.spawn().await;
        nodes.push(node);
    }
    let token = wait_owner(&[&nodes[0], &nodes[1]], 0, Duration::from_secs(30)).await;
    let cluster = nodes[1].get("/v1/cluster").await;
    let names: Vec<&str> =
        cluster["nodes"].as_array().into_iter().flatten().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["node-a", "node-b"], "{cluster}");
    assert_eq!(cluster["owners"][0]["fencing_token"], token, "{cluster}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let entries = checked_journal(journal.path());
    assert!(entries.iter().any(|e| e.node == "node-a" && e.token == token), "node-a journaled: {entries:?}");
}

/// A node whose CA did not sign etcd's certificate refuses to start,
/// naming its node file's `[cluster]`, the endpoint and what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_trust_etcd_s_certificate_refuses_to_start_naming_the_endpoint() {
    let etcd = EtcdCluster::start_tls().await;
    let files = etcd.tls_files().expect("a TLS cluster").clone();
    let journal = tempfile::tempdir().expect("a journal directory");
    let tls = format!(
        "{{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}",
        files.stranger_ca.display(),
        files.client_cert.display(),
        files.client_key.display()
    );
    let file = tls_node_file("node-a", "untrusted", &etcd, journal.path(), &tls);
    let mut node = Daemon::prepare(&file, &[steward_tests::guest_wasm("fenced")]);
    node.launch();
    let log = node.wait_exit(Duration::from_secs(20)).await;
    let config = node.path("steward.toml").display().to_string();
    assert!(log.contains(&format!("{config}: [cluster]")), "the refusal names the node file's [cluster]: {log}");
    assert!(etcd.endpoints().iter().any(|endpoint| log.contains(endpoint.as_str())), "it names the endpoint: {log}");
    assert!(log.contains("UnknownIssuer") && log.contains("CA"), "it says the CA did not sign it: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owners_programs_are_terminated_before_the_next_node_runs_the_group() {
    let etcd = EtcdCluster::start().await;
    let file = |node: &str| {
        cluster_node_file(
            node,
            "orphans",
            &etcd,
            "type = \"generic-app\"\nproperties = { program = \"/bin/sleep\", args = \"300\" }\n\
             grants = { programs = [\"/bin/sleep\"] }",
            "",
        )
    };
    let mut a = Daemon::start(&file("node-a"), &["generic_app"]).await;
    let b = Daemon::start(&file("node-b"), &["generic_app"]).await;
    wait_owner(&[&a, &b], 0, Duration::from_secs(30)).await;
    let program = a.program_pid("r").await;
    // Alone, a node's workers leave programs running for the next daemon
    // to adopt; in a cluster, the next owner is another node, so the
    // orphaned worker terminates them.
    a.kill9();
    wait_owner(&[&b], 0, Duration::from_secs(30)).await;
    assert!(!steward_tests::process_running(program), "node-a's program ended before node-b ran the group");
    // A daemon started again at once finds its old node key still on the
    // old lease, and waits it out rather than refuse its own name.
    a.spawn().await;
    wait_owner(&[&a, &b], 1, Duration::from_secs(5)).await;
}
