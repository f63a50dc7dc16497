//! A real etcd cluster for tests (feature `harness`, for this crate's tests
//! and the daemon's in `tests/`): three members on loopback ports in a
//! temporary directory, with the short heartbeat and election timeout the
//! issue's figures use, and the faults the tests inject: kill -9, SIGSTOP,
//! SIGCONT, restart, and finding the leader. Members are killed when the
//! cluster is dropped. A missing `etcd` fails the test: `cargo xtask test`
//! installs it.
//!
//! [`EtcdCluster::start_tls`] serves the client port over TLS instead,
//! checking client certificates, with a CA, server and client certificates
//! made by the `openssl` command line in the cluster's directory (peers
//! talk plain HTTP among themselves: only what nodes see changes).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{ClientIdentity, ClusterConfig, EtcdTls, NodeInfo, PluginInventory};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
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
    tls: Option<TlsFiles>,
}

/// The PEM files of a TLS cluster, in its directory.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// The members' server certificate (SAN 127.0.0.1 and localhost) and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate the members accept, and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Another CA, which signed none of these: a node trusting it must
    /// refuse the members.
    pub stranger_ca: PathBuf,
}

impl TlsFiles {
    /// What a node trusting `ca` and presenting the client certificate uses.
    pub fn etcd_tls(&self, ca: &Path) -> EtcdTls {
        let read = |path: &Path| std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        EtcdTls {
            ca_pem: read(ca),
            client: Some(ClientIdentity { cert_pem: read(&self.client_cert), key_pem: read(&self.client_key) }),
        }
    }
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
        EtcdCluster::start_with(false).await
    }

    /// As [`EtcdCluster::start`], with the client port on TLS
    /// (`--client-cert-auth`: a client must present a certificate the CA
    /// signed); see [`EtcdCluster::tls_files`].
    pub async fn start_tls() -> EtcdCluster {
        EtcdCluster::start_with(true).await
    }

    async fn start_with(tls: bool) -> EtcdCluster {
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
        let tls = tls.then(|| make_certificates(dir.path()));
        let client_scheme = if tls.is_some() { "https" } else { "http" };
        let ports = free_ports(6);
        let members: Vec<Member> = (0..3)
            .map(|index| Member {
                name: format!("m{index}"),
                client_url: format!("{client_scheme}://127.0.0.1:{}", ports[index * 2]),
                peer_url: format!("http://127.0.0.1:{}", ports[index * 2 + 1]),
                data_dir: dir.path().join(format!("m{index}")),
                log: dir.path().join(format!("m{index}.log")),
                child: None,
            })
            .collect();
        let initial_cluster =
            members.iter().map(|member| format!("{}={}", member.name, member.peer_url)).collect::<Vec<_>>().join(",");
        let token = dir.path().file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let mut cluster = EtcdCluster { _dir: dir, members, initial_cluster, token, tls };
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

    /// The certificates of a cluster started by [`EtcdCluster::start_tls`].
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
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
                if let Some((id, leader)) = self.member_status(&member.client_url).await
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
            plugins_known: true,
        };
        let mut config = ClusterConfig::new(cluster, self.endpoints(), node, info);
        config.lease_ttl = ttl;
        config.tls = self.tls.as_ref().map(|files| files.etcd_tls(&files.ca));
        config
    }

    fn spawn(&mut self, index: usize, state: &str) {
        let member = &mut self.members[index];
        let log = File::create(&member.log).expect("etcd log file");
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
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
                if let Some((_, leader)) = self.member_status(&member.client_url).await
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

impl EtcdCluster {
    /// This member's id and the leader it knows (0 for none).
    async fn member_status(&self, url: &str) -> Option<(u64, u64)> {
        let mut options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
        if let Some(tls) = &self.tls {
            let read = |path: &Path| std::fs::read(path).ok();
            let identity = Identity::from_pem(read(&tls.client_cert)?, read(&tls.client_key)?);
            options = options
                .with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?)).identity(identity));
        }
        let mut client = timeout(Duration::from_secs(2), Client::connect([url], Some(options))).await.ok()?.ok()?;
        let status = timeout(Duration::from_secs(2), client.status()).await.ok()?.ok()?;
        Some((status.header()?.member_id(), status.leader()))
    }
}

/// A CA, a server certificate for loopback signed by it, a client
/// certificate signed by it, and a second CA that signed nothing, by the
/// `openssl` command line. P-256 keys: quick to make, and both etcd and
/// rustls take them.
pub fn make_certificates(dir: &Path) -> TlsFiles {
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("`openssl` does not run ({e}); install it (Debian: openssl)"));
        assert!(
            output.status.success(),
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for (name, subject) in [("ca", "/CN=steward test CA"), ("stranger-ca", "/CN=steward stranger CA")] {
        let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
        let mut args = vec!["req", "-x509"];
        args.extend(new_key);
        args.extend(["-keyout", &key, "-out", &cert, "-days", "2", "-subj", subject]);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
        openssl(&args);
    }
    // The leaf certificates, each from a request signed by the CA with
    // its extensions (what rustls and Go's TLS insist on).
    let leaves = [
        ("server", "/CN=etcd", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
        ("client", "/CN=steward-node", "extendedKeyUsage=clientAuth"),
    ];
    for (name, subject, extensions) in leaves {
        let (key, request, cert, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        let extensions = format!("{extensions}\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n");
        std::fs::write(path(&ext), extensions).expect("an openssl extensions file");
        let mut args = vec!["req"];
        args.extend(new_key);
        args.extend(["-keyout", &key, "-out", &request, "-subj", subject]);
        openssl(&args);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &request,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    TlsFiles {
        ca: path("ca.pem"),
        server_cert: path("server.pem"),
        server_key: path("server.key"),
        client_cert: path("client.pem"),
        client_key: path("client.key"),
        stranger_ca: path("stranger-ca.pem"),
    }
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
