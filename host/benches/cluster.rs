//! The cluster benchmark: real `steward` daemons (release build) on a real
//! 3-member etcd (`steward_cluster::harness`: heartbeat 20 ms, election
//! timeout 200 ms). Writes `target/bench/cluster.json` and prints it:
//! - `failover_ms_median`, `failover_ms_p99` (and each trial): kill -9 of
//!   a group's owner to the group online on another node, lease TTL 1 s,
//!   over `TRIALS` trials (the killed node is started again after each);
//! - `move_ms` (median over `TRIALS` moves): `steward move` of a group of
//!   three `dummy` resources to the group online on the node named;
//! - `etcd_idle_proposals_per_s`: what etcd's raft commits per second
//!   while 3 nodes hold 1,000 groups online and nothing changes
//!   (keepalives only), from its own `etcd_server_proposals_committed_total`;
//! - `keepalives_per_s`: the keepalives those nodes send (4 per lease TTL
//!   each), which grow with nodes, not groups.
//!
//! Run it with `cargo xtask bench`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use steward_cluster::harness::EtcdCluster;
use steward_tests::daemon::Daemon;

const TRIALS: usize = 12;
const IDLE_GROUPS: usize = 1_000;
const IDLE_SAMPLE: Duration = Duration::from_secs(10);

fn main() {
    let root = steward_tests::workspace_root();
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let mut figures = serde_json::Map::new();
    for (key, value) in tokio.block_on(failovers()) {
        figures.insert(key.into(), value);
    }
    for (key, value) in tokio.block_on(moves()) {
        figures.insert(key.into(), value);
    }
    for (key, value) in tokio.block_on(idle()) {
        figures.insert(key.into(), value);
    }
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let text = serde_json::to_string_pretty(&Value::Object(figures)).expect("json");
    std::fs::write(out.join("cluster.json"), format!("{text}\n")).expect("write cluster.json");
    println!("{text}\nwrote {}", out.join("cluster.json").display());
}

/// A node file of the bench cluster with `groups` groups of one `dummy`.
fn node_file(node: &str, etcd: &EtcdCluster, lease_ttl: &str, groups: usize) -> String {
    let endpoints: Vec<String> = etcd.endpoints().iter().map(|url| format!("\"{url}\"")).collect();
    let mut file = format!(
        "[node]\nname = \"{node}\"\nplugin_dir = \"plugins\"\ndata_dir = \"data\"\napi = \"{{api}}\"\n\n\
         [cluster]\nname = \"bench\"\nendpoints = [{}]\nlease_ttl = \"{lease_ttl}\"\nsafety_margin = \"100ms\"\n\n",
        endpoints.join(", ")
    );
    for group in 0..groups {
        file.push_str(&format!(
            "[[resource]]\nname = \"r{group}\"\ntype = \"dummy\"\nlooks_alive_interval = \"1s\"\n\n\
             [[group]]\nname = \"g{group}\"\nresources = [\"r{group}\"]\npreferred_owners = [\"node-a\", \"node-b\", \"node-c\"]\n\n"
        ));
    }
    file
}

/// A daemon of the release build on `file`, running.
async fn start(file: &str) -> Daemon {
    let mut daemon =
        Daemon::prepare_with(PathBuf::from(env!("CARGO_BIN_EXE_steward")), file, &[steward_tests::guest_wasm("dummy")]);
    daemon.spawn().await;
    daemon
}

/// Which of `nodes` runs `g0`, polled every 5 ms.
async fn owner(nodes: &[Daemon], except: Option<usize>, limit: Duration) -> usize {
    let until = Instant::now() + limit;
    loop {
        for (at, node) in nodes.iter().enumerate() {
            if Some(at) != except && node.get("/v1/groups/g0").await["state"] == "online" {
                return at;
            }
        }
        assert!(Instant::now() < until, "no node runs g0 within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn failovers() -> Vec<(&'static str, Value)> {
    let etcd = EtcdCluster::start().await;
    let mut nodes = Vec::new();
    for node in ["node-a", "node-b", "node-c"] {
        nodes.push(start(&node_file(node, &etcd, "1s", 1)).await);
    }
    let mut samples = Vec::new();
    for _ in 0..TRIALS {
        let killed = owner(&nodes, None, Duration::from_secs(30)).await;
        let at = Instant::now();
        nodes[killed].kill9();
        owner(&nodes, Some(killed), Duration::from_secs(30)).await;
        samples.push(at.elapsed().as_secs_f64() * 1e3);
        nodes[killed].spawn().await;
        // Let the restarted node settle into the cluster.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let p99 = sorted[((sorted.len() as f64 * 0.99).ceil() as usize).min(sorted.len()) - 1];
    println!("failover after kill -9: {} trials, median {median:.0} ms, p99 {p99:.0} ms", samples.len());
    let rounded: Vec<f64> = samples.iter().map(|ms| ms.round()).collect();
    vec![
        ("failover_trials", json!(rounded)),
        ("failover_ms_median", json!(median.round())),
        ("failover_ms_p99", json!(p99.round())),
    ]
}

/// A node file with one group `m` of three `dummy` resources in a chain.
fn moving_file(node: &str, etcd: &EtcdCluster) -> String {
    let endpoints: Vec<String> = etcd.endpoints().iter().map(|url| format!("\"{url}\"")).collect();
    let mut file = format!(
        "[node]\nname = \"{node}\"\nplugin_dir = \"plugins\"\ndata_dir = \"data\"\napi = \"{{api}}\"\n\n\
         [cluster]\nname = \"moves\"\nendpoints = [{}]\nlease_ttl = \"2s\"\nsafety_margin = \"100ms\"\n\n",
        endpoints.join(", ")
    );
    for (name, needs) in [("m1", ""), ("m2", "depends_on = [\"m1\"]\n"), ("m3", "depends_on = [\"m2\"]\n")] {
        file.push_str(&format!("[[resource]]\nname = \"{name}\"\ntype = \"dummy\"\n{needs}\n"));
    }
    file.push_str("[[group]]\nname = \"m\"\nresources = [\"m1\", \"m2\", \"m3\"]\npreferred_owners = [\"node-a\", \"node-b\", \"node-c\"]\n");
    file
}

async fn moves() -> Vec<(&'static str, Value)> {
    let etcd = EtcdCluster::start().await;
    let names = ["node-a", "node-b", "node-c"];
    let mut nodes = Vec::new();
    for node in names {
        nodes.push(start(&moving_file(node, &etcd)).await);
    }
    let online_on = |at: usize| {
        let node = &nodes[at];
        async move { node.get("/v1/groups/m").await["state"] == "online" }
    };
    let mut owner = 0;
    let until = Instant::now() + Duration::from_secs(30);
    while !online_on(owner).await {
        assert!(Instant::now() < until, "group m did not come online on node-a");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut samples = Vec::new();
    for trial in 0..TRIALS {
        let target = (owner + 1 + trial % 2) % names.len();
        let asked = Instant::now();
        let moved = nodes[owner].post(&format!("/v1/groups/m/move?to={}", names[target])).await;
        assert_eq!(moved.0, 202, "the move is accepted: {:?}", moved.1);
        while !online_on(target).await {
            assert!(asked.elapsed() < Duration::from_secs(30), "group m did not reach {}", names[target]);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples.push(asked.elapsed().as_secs_f64() * 1e3);
        owner = target;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    println!("planned move of 3 resources: {} trials, median {median:.0} ms", samples.len());
    vec![("move_ms", json!(median.round()))]
}

async fn idle() -> Vec<(&'static str, Value)> {
    let etcd = EtcdCluster::start().await;
    let mut nodes = Vec::new();
    for node in ["node-a", "node-b", "node-c"] {
        nodes.push(start(&node_file(node, &etcd, "2s", IDLE_GROUPS)).await);
    }
    // Every group online on its preferred node, then quiet.
    let until = Instant::now() + Duration::from_secs(300);
    loop {
        let groups = nodes[0].get("/v1/groups").await;
        let online = groups.as_array().map_or(0, |groups| groups.iter().filter(|g| g["state"] == "online").count());
        if online == IDLE_GROUPS {
            break;
        }
        assert!(Instant::now() < until, "the groups did not come online on node-a: {online} of {IDLE_GROUPS}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = proposals(&etcd).await;
    tokio::time::sleep(IDLE_SAMPLE).await;
    let after = proposals(&etcd).await;
    let per_s = (after - before) / IDLE_SAMPLE.as_secs_f64();
    let keepalives = 3.0 * 4.0 / 2.0;
    println!("{IDLE_GROUPS} groups on 3 nodes, idle: {per_s:.2} etcd proposals/s, {keepalives} keepalives/s");
    vec![
        ("idle_groups", json!(IDLE_GROUPS)),
        ("etcd_idle_proposals_per_s", json!((per_s * 100.0).round() / 100.0)),
        ("keepalives_per_s", json!(keepalives)),
    ]
}

/// etcd's committed raft proposals, from the first member's metrics.
async fn proposals(etcd: &EtcdCluster) -> f64 {
    let url = format!("{}/metrics", etcd.endpoints()[0]);
    let text = reqwest::get(url).await.expect("etcd metrics").text().await.expect("etcd metrics text");
    text.lines()
        .find(|line| line.starts_with("etcd_server_proposals_committed_total "))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .expect("etcd reports etcd_server_proposals_committed_total")
}
