//! Real `steward` daemons forming a cluster on a real 3-member etcd
//! (`steward_cluster::harness`): a group runs on exactly one node, its
//! preferred one; when that node is killed (kill -9) the next preferred
//! node takes it over with a larger fencing token; a node name already
//! taken in the cluster refuses to start.

use std::time::{Duration, Instant};

use steward_cluster::harness::EtcdCluster;
use steward_tests::daemon::Daemon;

/// One node of the test cluster: a `dummy` resource in group `g`, which
/// prefers `node-a`, then `node-b`, then `node-c`.
fn node_file(node: &str, cluster: &str, etcd: &EtcdCluster) -> String {
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

[[resource]]
name = "r"
type = "dummy"
looks_alive_interval = "200ms"

[[group]]
name = "g"
resources = ["r"]
preferred_owners = ["node-a", "node-b", "node-c"]
"#,
        endpoints = endpoints.join(", ")
    )
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
    let mut a = Daemon::start(&node_file("node-a", "failover", &etcd), &["dummy"]).await;
    let b = Daemon::start(&node_file("node-b", "failover", &etcd), &["dummy"]).await;
    let c = Daemon::start(&node_file("node-c", "failover", &etcd), &["dummy"]).await;
    let first = wait_owner(&[&a, &b, &c], 0, Duration::from_secs(30)).await;
    // The others hold no token: they do not own it.
    let seen = group_on(&[&a, &b, &c]).await;
    assert!(seen[1].1.is_none() && seen[2].1.is_none(), "only node-a owns g: {seen:?}");

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_name_taken_in_the_cluster_refuses_to_start() {
    let etcd = EtcdCluster::start().await;
    let _first = Daemon::start(&node_file("node-a", "names", &etcd), &["dummy"]).await;
    let mut second = Daemon::prepare(&node_file("node-a", "names", &etcd), &[steward_tests::guest_wasm("dummy")]);
    second.launch();
    let until = Instant::now() + Duration::from_secs(20);
    while second.running() {
        assert!(Instant::now() < until, "a second `node-a` kept running: {}", second.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = second.log();
    assert!(log.contains("[cluster]") && log.contains("node-a"), "the refusal names the section and the node: {log}");
}
