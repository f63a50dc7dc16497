//! The harness the integration tests share: where the guest components and
//! the `steward` binary are, one sandbox runtime per test process with a
//! compile cache, loaded plugins shared between tests, a healthy resource
//! probed in the background, and process helpers.
//!
//! Guests are built once per test run by `cargo xtask guests` (which
//! `cargo xtask test` runs first); a missing one panics with that hint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod daemon;

use steward_monitor::bindings::CallContext;
use steward_monitor::monitor::{Monitor, ResourceHandle, ResourceSpec};
use steward_monitor::plugin::Plugin;
use steward_monitor::runtime::{Runtime, RuntimeConfig};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Where cargo builds: `CARGO_TARGET_DIR` as these tests were built with,
/// or the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    match option_env!("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The built component of guest crate `name` (underscores, as cargo names files).
pub fn guest_wasm(name: &str) -> PathBuf {
    let path = target_dir().join("wasm32-wasip2/guest").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: run `cargo xtask guests` (or `cargo xtask test`) first", path.display());
    path
}

/// An example plugin in another language, built by `cargo xtask examples`
/// into `target/examples/` (`python_marker.wasm`, `js_marker.wasm`).
pub fn example_wasm(file: &str) -> PathBuf {
    let path = target_dir().join("examples").join(file);
    assert!(path.is_file(), "{} is missing: run `cargo xtask examples` (or `cargo xtask test`)", path.display());
    path
}

/// The `steward` binary built by `cargo xtask test`.
/// A `steward` command whose user cache (where `plugin check` keeps
/// compiled components) is under the target directory, not the home of
/// whoever runs the tests.
pub fn steward_command() -> std::process::Command {
    let mut command = std::process::Command::new(steward_binary());
    command.env("XDG_CACHE_HOME", target_dir().join("test-user-cache"));
    command
}

pub fn steward_binary() -> PathBuf {
    let path = target_dir().join("debug/steward");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p steward` (or `cargo xtask test`) first",
        path.display()
    );
    path
}

/// The sandbox runtime shared by every test of this process, with a compile
/// cache under `target/`, so each component is compiled once per machine.
pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let config =
                RuntimeConfig { max_live_instances: 256, cache_dir: Some(target_dir().join("test-compile-cache")) };
            Runtime::new(&config).expect("the sandbox runtime starts")
        })
        .clone()
}

/// Guest crate `name` loaded as a plugin, shared by the tests of this process.
pub async fn plugin(name: &str) -> Arc<Plugin> {
    static PLUGINS: OnceLock<Mutex<HashMap<String, Arc<Plugin>>>> = OnceLock::new();
    let plugins = PLUGINS.get_or_init(Default::default);
    if let Some(plugin) = plugins.lock().expect("plugin cache lock").get(name) {
        return plugin.clone();
    }
    let loaded = Arc::new(Plugin::load(&runtime(), &guest_wasm(name)).await.expect("the plugin loads"));
    plugins.lock().expect("plugin cache lock").insert(name.to_string(), loaded.clone());
    loaded
}

/// A call context for tests.
pub fn context() -> CallContext {
    CallContext { node_name: "test-node".into(), fencing_token: 1, attempt: 1 }
}

/// A spec for resource `name` of `plugin` with `properties`.
pub fn spec(name: &str, plugin: &Plugin, properties: &[(&str, &str)]) -> ResourceSpec {
    let mut spec = ResourceSpec::new(name, plugin);
    spec.properties = properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    spec
}

/// What the background prober of a healthy resource saw.
#[derive(Debug, Clone)]
pub struct ProbeRecord {
    /// Probes that returned `true`.
    pub healthy: u64,
    /// Probes that failed or returned `false`, with what they returned.
    pub missed: Vec<String>,
    /// The longest time between two consecutive successful probes.
    pub longest_gap: Duration,
}

/// A healthy `dummy` resource, online, probed every [`HealthyProbe::PERIOD`]
/// in the background until [`HealthyProbe::stop`].
pub struct HealthyProbe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<ProbeRecord>,
    /// The healthy resource.
    pub handle: ResourceHandle,
}

impl HealthyProbe {
    /// How often the healthy resource is probed.
    pub const PERIOD: Duration = Duration::from_millis(10);

    /// Opens `healthy` (a `dummy`) on `monitor`, brings it online and starts probing.
    pub async fn start(monitor: &Monitor) -> HealthyProbe {
        let dummy = plugin("dummy").await;
        let handle = monitor.open(dummy.clone(), spec("healthy", &dummy, &[])).await.expect("healthy opens");
        handle.online(&context()).await.expect("healthy goes online");
        let stop = Arc::new(AtomicBool::new(false));
        let (probe_handle, probe_stop) = (handle.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut record = ProbeRecord { healthy: 0, missed: Vec::new(), longest_gap: Duration::ZERO };
            let mut last_success = Instant::now();
            let mut ticker = tokio::time::interval(HealthyProbe::PERIOD);
            while !probe_stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                match probe_handle.looks_alive().await {
                    Ok(true) => {
                        record.healthy += 1;
                        record.longest_gap = record.longest_gap.max(last_success.elapsed());
                        last_success = Instant::now();
                    }
                    other => record.missed.push(format!("{other:?}")),
                }
            }
            record
        });
        HealthyProbe { stop, task, handle }
    }

    /// Stops probing and returns what was seen.
    pub async fn stop(self) -> ProbeRecord {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the prober does not panic")
    }
}

/// Whether process `pid` exists (a zombie counts as gone: it no longer runs).
pub fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rfind(')').and_then(|end| stat[end + 1..].trim_start().chars().next());
            !matches!(state, Some('Z' | 'X') | None)
        }
        Err(_) => false,
    }
}

/// Sends SIGKILL to `pid`, as an operator or the OOM killer would.
pub fn kill_from_outside(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Waits up to `limit` for `condition`, checking every 10 ms.
pub async fn eventually(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Microseconds since midnight (UTC) of `time`, as the log's timestamps count.
pub fn since_midnight_us(time: std::time::SystemTime) -> u64 {
    let since_epoch = time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros() as u64;
    since_epoch % (86_400 * 1_000_000)
}

/// Microseconds since midnight of a text log line's timestamp
/// (`2026-11-29T11:06:03.074523Z ...`).
pub fn log_time_us(line: &str) -> Option<u64> {
    let time = line.split_whitespace().next()?.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let (hours, minutes, seconds): (u64, u64, f64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some((hours * 3600 + minutes * 60) * 1_000_000 + (seconds * 1e6) as u64)
}

/// Ten groups of 100 `dummy` resources (`r0-0` ... `r9-99`, groups
/// `added-0` ... `added-9`) to append to a node file for a reload; one
/// check, `r0-0`'s, takes 1.5 s, so the reload is checked for at least
/// that long.
pub fn thousand_slowly_checked_resources() -> String {
    let mut more = String::new();
    for group in 0..10 {
        let members: Vec<String> = (0..100).map(|i| format!("r{group}-{i}")).collect();
        for member in &members {
            let slow = if member == "r0-0" { "properties = { validate-delay-ms = \"1500\" }\n" } else { "" };
            more.push_str(&format!("\n[[resource]]\nname = \"{member}\"\ntype = \"dummy\"\n{slow}"));
        }
        let quoted: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
        more.push_str(&format!("\n[[group]]\nname = \"added-{group}\"\nresources = [{}]\n", quoted.join(", ")));
    }
    more
}

/// From a daemon's text log, each time `resource` failed (`true`) or
/// began going online (`false`), in microseconds since midnight: a
/// failure followed by an online is one restart.
pub fn failures_and_onlines(log: &str, resource: &str) -> Vec<(u64, bool)> {
    let marker = format!("transition resource={resource} ");
    log.lines()
        .filter(|line| line.contains(&marker))
        .filter_map(|line| Some((log_time_us(line)?, line.contains("to=Failed"), line.contains("to=OnlinePending"))))
        .filter(|(_, failed, pending)| *failed || *pending)
        .map(|(time, failed, _)| (time, failed))
        .collect()
}
