//! A real etcd cluster for tests (feature `harness`, for this crate's tests
//! and the daemon's in `tests/`): three members on loopback ports in a
//! temporary directory, with the short heartbeat and election timeout the
//! issue's figures use, and the faults the tests inject: kill -9, SIGSTOP,
//! SIGCONT, restart, and finding the leader. Members are killed when the
//! cluster is dropped. A missing `etcd` fails the test: `cargo xtask test`
//! installs it.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{ClusterConfig, NodeInfo, PluginInventory};
use etcd_client::{Client, ConnectOptions};
use tokio::time::{Instant, sleep, timeout};

/// The heartbeat and election timeout of the benchmark set-up.
const HEARTBEAT_MS: &str = "20";
const ELECTION_TIMEOUT_MS: &str = "200";
/// How long a cluster may take to elect its first leader.
/// Generous: on a 2-core machine busy with other tests and builds, a
/// status call can take seconds to answer.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running 3-member etcd; dropping it kills the members.
pub struct EtcdCluster {
    // Held for its Drop: the members' data lives in it.
    _dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
}

struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl EtcdCluster {
    /// Starts three members and waits until they have a leader.
    pub async fn start() -> EtcdCluster {
        let etcd_found =
            Command::new("etcd").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        assert!(etcd_found, "`etcd` is not on the PATH; run `cargo xtask test`, which installs etcd-server");
        // On tmpfs when there is one: etcd fsyncs every write, and a slow
        // disk would stretch heartbeats past the 200 ms election timeout.
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::Builder::new().prefix("steward-etcd-").tempdir_in("/dev/shm")
        } else {
            tempfile::Builder::new().prefix("steward-etcd-").tempdir()
        }
        .expect("temporary directory for etcd");
        let ports = free_ports(6);
        let members: Vec<Member> = (0..3)
            .map(|index| Member {
                name: format!("m{index}"),
                client_url: format!("http://127.0.0.1:{}", ports[index * 2]),
                peer_url: format!("http://127.0.0.1:{}", ports[index * 2 + 1]),
                data_dir: dir.path().join(format!("m{index}")),
                log: dir.path().join(format!("m{index}.log")),
                child: None,
            })
            .collect();
        let initial_cluster =
            members.iter().map(|member| format!("{}={}", member.name, member.peer_url)).collect::<Vec<_>>().join(",");
        let token = dir.path().file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let mut cluster = EtcdCluster { _dir: dir, members, initial_cluster, token };
        for index in 0..3 {
            cluster.spawn(index, "new");
        }
        cluster.wait_for_leader().await;
        cluster
    }

    /// The client URLs of all members.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|member| member.client_url.clone()).collect()
    }

    /// kill -9 of member `index`.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP of member `index`: it keeps its sockets but answers nothing.
    pub fn pause(&self, index: usize) {
        self.signal(index, "-STOP");
    }

    /// SIGCONT of member `index`.
    pub fn resume(&self, index: usize) {
        self.signal(index, "-CONT");
    }

    pub fn pause_all(&self) {
        (0..self.members.len()).for_each(|index| self.pause(index));
    }

    pub fn resume_all(&self) {
        (0..self.members.len()).for_each(|index| self.resume(index));
    }

    /// Starts a killed member again on its data directory.
    pub async fn restart(&mut self, index: usize) {
        self.kill(index);
        self.spawn(index, "existing");
        self.wait_for_leader().await;
    }

    /// The index of the member that leads now.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            for (index, member) in self.members.iter().enumerate() {
                if member.child.is_none() {
                    continue;
                }
                if let Some((id, leader)) = member_status(&member.client_url).await
                    && id == leader
                {
                    return index;
                }
            }
            assert!(Instant::now() < deadline, "no etcd member says it leads; the logs end:\n{}", self.log_tails());
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// A node configuration for this cluster, with a one-type inventory.
    pub fn node_config(&self, cluster: &str, node: &str, ttl: Duration) -> ClusterConfig {
        let info = NodeInfo {
            api_address: format!("{node}.test:7700"),
            version: "test".to_string(),
            plugins: PluginInventory::from([("dummy".to_string(), "hash-1".to_string())]),
        };
        let mut config = ClusterConfig::new(cluster, self.endpoints(), node, info);
        config.lease_ttl = ttl;
        config
    }

    fn spawn(&mut self, index: usize, state: &str) {
        let member = &mut self.members[index];
        let log = File::create(&member.log).expect("etcd log file");
        let child = Command::new("etcd")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &member.client_url, "--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &member.peer_url, "--initial-advertise-peer-urls", &member.peer_url])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", HEARTBEAT_MS, "--election-timeout", ELECTION_TIMEOUT_MS])
            .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning etcd");
        member.child = Some(child);
    }

    fn signal(&self, index: usize, signal: &str) {
        if let Some(child) = &self.members[index].child {
            let status = Command::new("kill").arg(signal).arg(child.id().to_string()).status().expect("running kill");
            assert!(status.success(), "kill {signal} of etcd member {index} failed");
        }
    }

    async fn wait_for_leader(&self) {
        let deadline = Instant::now() + START_DEADLINE;
        for member in self.members.iter().filter(|member| member.child.is_some()) {
            loop {
                if let Some((_, leader)) = member_status(&member.client_url).await
                    && leader != 0
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} elected no leader within {START_DEADLINE:?}; the members' logs end:\n{}",
                    member.name,
                    self.log_tails()
                );
                sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The last lines of each member's log (its directory goes with the
    /// cluster, so a failure must quote them).
    fn log_tails(&self) -> String {
        let mut tails = String::new();
        for member in &self.members {
            let text = std::fs::read_to_string(&member.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            tails.push_str(&format!("--- {}\n{}\n", member.name, lines[lines.len().saturating_sub(8)..].join("\n")));
        }
        tails
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            // SIGKILL ends a stopped process too.
            self.kill(index);
        }
    }
}

/// This member's id and the leader it knows (0 for none).
async fn member_status(url: &str) -> Option<(u64, u64)> {
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
    let mut client = timeout(Duration::from_secs(2), Client::connect([url], Some(options))).await.ok()?.ok()?;
    let status = timeout(Duration::from_secs(2), client.status()).await.ok()?.ok()?;
    Some((status.header()?.member_id(), status.leader()))
}

/// `count` loopback ports free now, below Linux's ephemeral range
/// (32768-60999), where every `bind(0)` of the tests' daemons lands: a
/// port handed out and released there could be taken by another test
/// before etcd binds it. Ports go out from a per-process start and a
/// counter, so harnesses in one test binary never share one.
fn free_ports(count: usize) -> Vec<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    let mut ports = Vec::with_capacity(count);
    for _ in 0..SPAN {
        if ports.len() == count {
            break;
        }
        let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (FIRST + (start + next) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), count, "no {count} free loopback ports between {FIRST} and {}", FIRST + SPAN);
    ports
}

/// Waits for `condition` to hold, checking every 20 ms, failing after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        sleep(Duration::from_millis(20)).await;
    }
}
