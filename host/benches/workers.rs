//! The monitor worker benchmark: how fast the daemon recovers when the
//! worker hosting its instances dies, what loading a plugin costs with and
//! without the compile cache, and what a probe costs once it has to cross
//! a pipe to a worker. Writes `target/bench/workers.json` and prints it.
//! Run it with `cargo xtask bench` (which builds the guest components and
//! the release `steward` binary first), or alone with
//! `cargo bench -p steward --bench workers`.
//!
//! Figures:
//! - `worker_restart_ms` (the median of several kills) and
//!   `worker_restart_ms_max`: a real release daemon with 100 resources online
//!   in its shared worker (95 `dummy`, 5 `generic-app` running `sleep`,
//!   whose programs the new worker adopts); the worker is killed with
//!   SIGKILL, and the clock runs until every resource's
//!   `steward_probes_total` has grown past its value at the kill, that is,
//!   until each was probed in the new worker (`/metrics` read every 5 ms);
//! - `worker_recreate_ms` (median): the daemon's own figure, from its
//!   `worker-restarted` event: from the loss to the last instance re-created;
//! - `cold_compile_ms` and `cached_load_ms`, keyed by plugin: loading each
//!   first-party plugin with a new runtime and an empty compile cache
//!   (compiled, then written to the cache), then with a new runtime on that
//!   cache (the median of several loads);
//! - `probe_via_worker_us`: one looks-alive of a `dummy` through a worker,
//!   a whole round trip over its pipes, beside `probe_in_process_us`, the
//!   same call on an instance in this process (the round trip wakes the
//!   worker and then the daemon: its floor is the machine's cross-process
//!   pipe round trip, which on a small VM is tens of microseconds);
//! - `probe_in_worker_us`: the mean duration of a probe as the worker's own
//!   prober runs and reports it, with 100 resources probed every 20 ms (the
//!   daemon hears only the counts).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use steward_monitor::bindings::CallContext;
use steward_monitor::monitor::{Monitor, ResourceSpec};
use steward_monitor::plugin::Plugin;
use steward_monitor::runtime::{Runtime, RuntimeConfig};
use steward_monitor::worker::protocol::Report;
use steward_monitor::worker::{SHARED_WORKER, WorkerEvent, WorkerOptions, WorkerPool};
use tokio::sync::mpsc;

/// Resources in the killed worker, and probes in one batch.
const RESOURCES: usize = 100;
/// Of those, how many run a program (`generic-app` with `sleep`).
const PROGRAMS: usize = 5;
/// Kills of the shared worker; the figure is the median.
const KILLS: usize = 10;
/// How often `/metrics` is read while waiting for the new worker's probes.
const METRICS_POLL: Duration = Duration::from_millis(5);
/// The longest a restart may take before the bench gives up on it.
const RESTART_LIMIT: Duration = Duration::from_secs(30);
/// Looks-alive calls per timed round; the figure is the median round.
const CALLS_PER_ROUND: u32 = 2_000;
/// Batches of `RESOURCES` probes per timed round.
/// How long one round of the worker's prober is watched.
const PROBER_ROUND: Duration = Duration::from_secs(1);
/// Timed rounds of each probe figure.
const ROUNDS: usize = 5;
/// The plugins whose load is timed, by file stem.
const PLUGINS: [&str; 6] = ["dummy", "generic_app", "file_marker", "tcp_check", "http_check", "ocf_bridge"];
/// Cached loads per plugin; the figure is the median.
const CACHED_LOADS: usize = 5;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default();
    let guests = root.join("target/wasm32-wasip2/guest");
    // The monitor workers started here inherit this environment; their
    // info-level logs (a line per instance opened) would bury the figures.
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: no other thread runs yet; the tokio runtime is built below.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    // Multi-threaded, as the daemon's own runtime is.
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let mut figures = serde_json::Map::new();
    for part in [
        tokio.block_on(worker_restart(&guests)),
        tokio.block_on(load_times(&guests)),
        tokio.block_on(probe_latency(&guests)),
    ] {
        figures.extend(part.as_object().cloned().unwrap_or_default());
    }
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench can be created");
    let text = serde_json::to_string_pretty(&Value::Object(figures)).expect("figures are plain JSON");
    std::fs::write(out.join("workers.json"), format!("{text}\n")).expect("target/bench/workers.json can be written");
    println!("{text}\nwrote {}", out.join("workers.json").display());
}

/// Kills the shared worker of a daemon with `RESOURCES` resources online,
/// `KILLS` times, and times each recovery from outside and from the
/// daemon's event.
async fn worker_restart(guests: &Path) -> Value {
    let sleep = std::fs::canonicalize("/bin/sleep").expect("a sleep program at /bin/sleep");
    let sleep = sleep.display();
    let mut body = String::new();
    let mut names = Vec::new();
    for i in 0..RESOURCES {
        let name = format!("r{i}");
        if i < PROGRAMS {
            body.push_str(&format!(
                "[[resource]]\nname = \"{name}\"\ntype = \"generic-app\"\nproperties = {{ program = \"{sleep}\", args = [\"3600\"] }}\ngrants = {{ programs = [\"{sleep}\"] }}\nlooks_alive_interval = \"1s\"\n\n"
            ));
        } else {
            body.push_str(&format!(
                "[[resource]]\nname = \"{name}\"\ntype = \"dummy\"\nlooks_alive_interval = \"1s\"\nis_alive_interval = \"60s\"\n\n"
            ));
        }
        names.push(format!("\"{name}\""));
    }
    body.push_str(&format!("[[group]]\nname = \"g\"\nresources = [{}]\n", names.join(", ")));
    let daemon = Daemon::start(guests, &["dummy", "generic_app"], &body);
    daemon.wait_online(RESOURCES).await;
    // Let the probe timers spread, as they are in a daemon that has run a while.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut restart_ms = Vec::new();
    let mut recreate_ms = Vec::new();
    for kill in 1..=KILLS {
        let worker = daemon.worker_pid(SHARED_WORKER).await;
        assert!(worker != 0 && worker != daemon.child.id(), "the shared worker runs apart from the daemon");
        let before = daemon.probes().await;
        assert_eq!(before.len(), RESOURCES, "/metrics has a probe count for every resource");
        send_signal(worker, rustix::process::Signal::KILL);
        let killed_at = Instant::now();
        loop {
            let now = daemon.probes().await;
            if before.iter().all(|(name, count)| now.get(name).is_some_and(|probes| probes > count)) {
                break;
            }
            assert!(
                killed_at.elapsed() < RESTART_LIMIT,
                "not every resource was probed within {RESTART_LIMIT:?} of the kill\n{}",
                daemon.log()
            );
            tokio::time::sleep(METRICS_POLL).await;
        }
        let took = killed_at.elapsed().as_secs_f64() * 1e3;
        let new_worker = daemon.worker_pid(SHARED_WORKER).await;
        assert!(new_worker != worker, "the worker was replaced");
        let reason = daemon.restarted_reason(new_worker).await;
        assert!(reason.contains(&format!("{RESOURCES} instance(s) re-created, 0 failed")), "{reason}");
        let recreate = after_the_loss_ms(&reason);
        println!(
            "kill {kill}: every resource probed again {took:.1} ms after the kill; the daemon re-created the instances in {recreate} ms"
        );
        restart_ms.push(took);
        recreate_ms.push(recreate);
        // The next kill finds probes spread again, not all due at once.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let resources = daemon.get("/v1/resources").await.unwrap_or_default();
    let bounced: Vec<&Value> = resources
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] != "online" || r["restarts_total"].as_u64().unwrap_or(0) > 0)
        .collect();
    assert!(bounced.is_empty(), "a worker's loss bounced no resource: {bounced:#?}");
    let worst = restart_ms.iter().copied().fold(0.0, f64::max);
    json!({
        "worker_restart_ms": round(median(restart_ms), 1),
        "worker_restart_ms_max": round(worst, 1),
        "worker_recreate_ms": round(median(recreate_ms), 1),
    })
}

/// Each first-party plugin loaded cold (compiled) and from the cache.
async fn load_times(guests: &Path) -> Value {
    let mut cold = serde_json::Map::new();
    let mut cached = serde_json::Map::new();
    for plugin in PLUGINS {
        let path = guests.join(format!("{plugin}.wasm"));
        let cache = tempfile::tempdir().expect("a temporary compile cache");
        let config = RuntimeConfig { max_live_instances: 8, cache_dir: Some(cache.path().to_path_buf()) };
        let first = load(&Runtime::new(&config).expect("a runtime"), &path).await.load_info();
        assert!(first.compiled, "{plugin}: the first load, with an empty cache, compiles");
        let mut again = Vec::new();
        for _ in 0..CACHED_LOADS {
            let info = load(&Runtime::new(&config).expect("a runtime"), &path).await.load_info();
            assert!(!info.compiled, "{plugin}: a new runtime on the same cache does not compile again");
            again.push(info.elapsed.as_secs_f64() * 1e3);
        }
        let (first_ms, again_ms) = (first.elapsed.as_secs_f64() * 1e3, median(again));
        println!("{plugin}: compiled in {first_ms:.1} ms, loaded from the cache in {again_ms:.2} ms");
        cold.insert(plugin.to_string(), json!(round(first_ms, 1)));
        cached.insert(plugin.to_string(), json!(round(again_ms, 2)));
    }
    json!({ "cold_compile_ms": cold, "cached_load_ms": cached })
}

/// One looks-alive in this process and through a worker, and probes in
/// batches through a worker.
async fn probe_latency(guests: &Path) -> Value {
    let cache = tempfile::tempdir().expect("a temporary compile cache");
    let config = RuntimeConfig { max_live_instances: 16, cache_dir: Some(cache.path().to_path_buf()) };
    let runtime = Runtime::new(&config).expect("a runtime");
    let dummy = Arc::new(load(&runtime, &guests.join("dummy.wasm")).await);

    let monitor = Monitor::new("bench");
    let local = monitor.open(dummy.clone(), ResourceSpec::new("local", &dummy)).await.expect("dummy opens");
    local.online(&context()).await.expect("dummy goes online");
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..CALLS_PER_ROUND {
            assert!(local.looks_alive().await.expect("looks-alive in process"));
        }
        rounds.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS_PER_ROUND));
    }
    let in_process = median(rounds);

    let (events, mut answers) = mpsc::unbounded_channel();
    let options = WorkerOptions {
        program: PathBuf::from(env!("CARGO_BIN_EXE_steward")),
        node_name: "bench".into(),
        cluster_name: String::new(),
        cache_dir: cache.path().to_path_buf(),
        log_json: false,
        shared_capacity: RESOURCES as u32,
        deadlock_timeout: Duration::from_secs(10),
        recorded_processes: Box::new(|_| Vec::new()),
    };
    let pool = WorkerPool::new(options, events);
    let mut remotes = Vec::new();
    for i in 0..RESOURCES {
        let remote = pool.resource(dummy.clone(), ResourceSpec::new(&format!("d{i}"), &dummy), false);
        remote.reopen().await.expect("dummy opens in the worker");
        remote.online(&context()).await.expect("dummy goes online in the worker");
        remotes.push(remote);
    }
    let first = &remotes[0];
    // Warm the pipes, the worker's tasks and the instance.
    for _ in 0..CALLS_PER_ROUND / 10 {
        assert!(first.looks_alive().await.expect("looks-alive through the worker"));
    }
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..CALLS_PER_ROUND {
            assert!(first.looks_alive().await.expect("looks-alive through the worker"));
        }
        rounds.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS_PER_ROUND));
    }
    let via_worker = median(rounds);

    // The worker's own prober: every resource probed every 20 ms for a
    // while; the mean probe duration it reports, per probe.
    for (generation, remote) in remotes.iter().enumerate() {
        remote.start_probes(generation as u64 + 1, Duration::from_millis(20), Duration::from_secs(3600), false);
    }
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let (mut probes, mut nanos) = (0u64, 0u64);
        let until = Instant::now() + PROBER_ROUND;
        while let Ok(Some(event)) = tokio::time::timeout_at(until.into(), answers.recv()).await {
            if let WorkerEvent::Reported(Report::ProbeStats(counts)) = event {
                probes += counts.iter().map(|count| count.probes).sum::<u64>();
                nanos += counts.iter().map(|count| count.nanos).sum::<u64>();
            }
        }
        assert!(probes > 0, "the worker's prober ran");
        rounds.push(nanos as f64 / 1e3 / probes as f64);
    }
    let in_worker = median(rounds);
    pool.shutdown(false).await;
    println!(
        "looks-alive: {in_process:.2} us in process, {via_worker:.2} us through a worker, {in_worker:.2} us per probe of the worker's prober over {RESOURCES} resources"
    );
    json!({
        "probe_in_process_us": round(in_process, 2),
        "probe_via_worker_us": round(via_worker, 2),
        "probe_in_worker_us": round(in_worker, 2),
    })
}

/// A release `steward daemon` in a temporary directory.
struct Daemon {
    child: Child,
    client: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts a daemon on `body` (resources and groups) with `plugins` in its plugin directory.
    fn start(guests: &Path, plugins: &[&str], body: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir_all(dir.path().join("plugins")).expect("the plugin directory can be created");
        for plugin in plugins {
            std::fs::copy(guests.join(format!("{plugin}.wasm")), dir.path().join(format!("plugins/{plugin}.wasm")))
                .unwrap_or_else(|e| panic!("{plugin}.wasm: {e} (run `cargo xtask guests` first)"));
        }
        // Over the daemon's Unix socket, which needs no token.
        let api = dir.path().join("data").join(steward_config::API_SOCKET).display().to_string();
        let config = format!("[node]\nname = \"bench\"\nplugin_dir = \"plugins\"\ndata_dir = \"data\"\n\n{body}");
        std::fs::write(dir.path().join("steward.toml"), config).expect("the configuration can be written");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("the log can be created");
        let child = Command::new(env!("CARGO_BIN_EXE_steward"))
            .args(["daemon", "--config"])
            .arg(dir.path().join("steward.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the release steward binary starts");
        let client =
            reqwest::Client::builder().unix_socket(std::path::PathBuf::from(&api)).build().expect("an HTTP client");
        Daemon { child, client, dir }
    }

    async fn get(&self, path: &str) -> Option<Value> {
        self.client.get(format!("http://localhost{path}")).send().await.ok()?.json().await.ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    async fn wait_online(&self, count: usize) {
        let started = Instant::now();
        loop {
            if let Some(resources) = self.get("/v1/resources").await {
                let online = resources.as_array().map_or(0, |r| r.iter().filter(|r| r["state"] == "online").count());
                if online == count {
                    return;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(120), "resources did not come online\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The pid of worker `name` (0 while it is being started, or unknown).
    async fn worker_pid(&self, name: &str) -> u32 {
        let workers = self.get("/v1/workers").await.unwrap_or_default();
        let worker = workers.as_array().into_iter().flatten().find(|w| w["name"] == name);
        worker.and_then(|w| w["pid"].as_u64()).unwrap_or(0) as u32
    }

    /// `steward_probes_total` of every resource, from `/metrics`.
    async fn probes(&self) -> HashMap<String, f64> {
        let response = self.client.get("http://localhost/metrics").send().await;
        let text = match response {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        text.lines()
            .filter_map(|line| line.strip_prefix("steward_probes_total{resource=\""))
            .filter_map(|rest| {
                let (name, rest) = rest.split_once('"')?;
                let count = rest.rsplit(' ').next()?.parse().ok()?;
                Some((name.to_string(), count))
            })
            .collect()
    }

    /// The reason of the `worker-restarted` event that names `pid`, once published.
    async fn restarted_reason(&self, pid: u32) -> String {
        let started = Instant::now();
        let wanted = format!("runs again as pid {pid}:");
        loop {
            let status = self.get("/v1/status").await.unwrap_or_default();
            let events = status["recent_events"].as_array().cloned().unwrap_or_default();
            let restarted = events.iter().filter(|e| e["kind"] == "worker-restarted").find_map(|e| {
                let reason = e["reason"].as_str().unwrap_or_default();
                reason.contains(&wanted).then(|| reason.to_string())
            });
            if let Some(reason) = restarted {
                return reason;
            }
            assert!(started.elapsed() < RESTART_LIMIT, "no worker-restarted event for pid {pid}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    /// SIGTERM, so the node takes its groups offline and the `sleep`s end
    /// with it; SIGKILL if it does not stop in time.
    fn drop(&mut self) {
        send_signal(self.child.id(), rustix::process::Signal::TERM);
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn load(runtime: &Arc<Runtime>, path: &Path) -> Plugin {
    Plugin::load(runtime, path).await.unwrap_or_else(|e| panic!("{e} (run `cargo xtask guests` first)"))
}

fn context() -> CallContext {
    CallContext { node_name: "bench".into(), fencing_token: 1, attempt: 1 }
}

fn send_signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// The `N` of "... N ms after the loss" in a `worker-restarted` reason.
fn after_the_loss_ms(reason: &str) -> f64 {
    let before = reason.split(" ms after the loss").next().unwrap_or_default();
    before.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(f64::NAN)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}
