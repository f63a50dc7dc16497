//! A real `steward daemon` in a temporary directory, for integration tests:
//! it writes the config and copies the plugins, starts the binary on a free
//! loopback port, and talks to it over real HTTP. Dropping it kills it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use steward_config::tokens::{self, Role};

use crate::{guest_wasm, steward_binary, steward_command};

/// The tokens file each test daemon's node file names.
const API_TOKENS: &str = "api-tokens";

/// This test process's operate and read tokens, with their file entries.
fn test_tokens() -> &'static [(String, tokens::TokenEntry); 2] {
    static TOKENS: std::sync::OnceLock<[(String, tokens::TokenEntry); 2]> = std::sync::OnceLock::new();
    TOKENS.get_or_init(|| {
        let make = |name, role| tokens::generate(name, role).expect("random bytes for a token");
        [make("test-operator", Role::Operate), make("test-reader", Role::Read)]
    })
}

/// How long a daemon may take to start answering its API.
const STARTUP_LIMIT: Duration = Duration::from_secs(180);

/// A daemon under test.
pub struct Daemon {
    /// Its directory (config, plugins, data, log).
    pub dir: tempfile::TempDir,
    /// Its API address.
    pub api: String,
    /// The `steward` binary it runs.
    pub binary: PathBuf,
    /// Its API tokens: operate, then read (in `api-tokens`, which its
    /// node file names).
    tokens: [String; 2],
    child: Option<Child>,
}

impl Daemon {
    /// Writes `config` (with `{dir}` replaced by the directory, which has an
    /// empty `state/`, and `{api}` by a free loopback address) beside the
    /// `plugins` components, and
    /// starts the daemon; waits until its API answers.
    pub async fn start(config: &str, plugins: &[&str]) -> Daemon {
        let files: Vec<PathBuf> = plugins.iter().map(|plugin| guest_wasm(plugin)).collect();
        Daemon::start_with_files(config, &files).await
    }

    /// As [`Daemon::start`], with plugin files given by path.
    pub async fn start_with_files(config: &str, plugin_files: &[PathBuf]) -> Daemon {
        let mut daemon = Daemon::prepare(config, plugin_files);
        daemon.spawn().await;
        daemon
    }

    /// Starts the daemon process again (after [`Daemon::kill9`] or
    /// [`Daemon::terminate`]) and waits until it runs.
    pub async fn spawn(&mut self) {
        self.launch();
        self.wait_running().await;
    }

    /// Starts the daemon process without waiting for anything.
    pub fn launch(&mut self) {
        self.launch_with_env(&[]);
    }

    /// As [`Daemon::launch`], with `env` added to the daemon's environment
    /// (`NOTIFY_SOCKET`, say).
    pub fn launch_with_env(&mut self, env: &[(&str, &std::ffi::OsStr)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("log file");
        let child = Command::new(&self.binary)
            .args(["daemon", "--config"])
            .arg(self.dir.path().join("steward.toml"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the daemon starts");
        self.child = Some(child);
    }

    /// Waits until the daemon's API answers and its plugins are loaded
    /// (its phase is `running`); panics with its log if it exits first.
    pub async fn wait_running(&mut self) {
        // Generous: a first start compiles every plugin, and a Python or
        // JavaScript component takes seconds to compile on a busy machine.
        let until = Instant::now() + STARTUP_LIMIT;
        while Instant::now() < until {
            if let Ok(response) = self.client().get(self.url("/v1/status")).send().await
                && response.status().is_success()
                && response.json::<Value>().await.is_ok_and(|status| status["phase"] == "running")
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the daemon exited with {status}: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the daemon did not come to run within {STARTUP_LIMIT:?}: {}", self.log());
    }

    /// Writes the daemon's directory as [`Daemon::start_with_files`] does,
    /// without starting it.
    pub fn prepare(config: &str, plugin_files: &[PathBuf]) -> Daemon {
        Daemon::prepare_with(steward_binary(), config, plugin_files)
    }

    /// As [`Daemon::prepare`], running `binary` (a bench's release build).
    pub fn prepare_with(binary: PathBuf, config: &str, plugin_files: &[PathBuf]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        // `plugins/` for the components, `state/` for directory grants.
        for sub in ["plugins", "state"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("daemon subdirectory");
        }
        for file in plugin_files {
            let name = file.file_name().expect("a file name");
            std::fs::copy(file, dir.path().join("plugins").join(name)).expect("copy plugin");
        }
        let api = free_address();
        // Every TCP request presents a token: the daemon gets a tokens file
        // with one operate and one read token, which the helpers send. The
        // tokens are the test process's, so the nodes of a test cluster
        // take each other's, as a cluster's nodes share their tokens file
        // (`steward why` asks every node with one token).
        let tokens_file = dir.path().join(API_TOKENS);
        let shared = test_tokens();
        for (_, entry) in shared {
            tokens::append(&tokens_file, entry).expect("the tokens file is written");
        }
        let tokens: Vec<String> = shared.iter().map(|(token, _)| token.clone()).collect();
        let config = config
            .replace("{dir}", &dir.path().display().to_string())
            .replace("api = \"{api}\"", &format!("api = \"{api}\"\napi_tokens = \"{API_TOKENS}\""))
            .replace("{api}", &api);
        std::fs::write(dir.path().join("steward.toml"), config).expect("write config");
        let tokens = [tokens[0].clone(), tokens[1].clone()];
        Daemon { dir, api, binary, tokens, child: None }
    }

    /// A token of `role` (`operate` or `read`) for this daemon's API.
    pub fn token(&self, role: &str) -> String {
        match role {
            "read" => self.tokens[1].clone(),
            _ => self.tokens[0].clone(),
        }
    }

    /// `request` with this daemon's operate token.
    pub fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.bearer_auth(&self.tokens[0])
    }

    /// A client that sends the operate token on every request.
    pub fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.tokens[0])).expect("a token");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        reqwest::Client::builder().default_headers(headers).build().expect("an HTTP client")
    }

    /// The tokens file the daemon's node file names.
    pub fn tokens_file(&self) -> PathBuf {
        self.dir.path().join(API_TOKENS)
    }

    /// The daemon's Unix socket (in its data directory).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("data").join(steward_config::API_SOCKET)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// A path inside the daemon's directory.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// The URL of an API path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// GETs a JSON document.
    pub async fn get(&self, path: &str) -> Value {
        let response = self.client().get(self.url(path)).send().await.expect("GET");
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.expect("JSON")
    }

    /// POSTs and returns the status and JSON body.
    pub async fn post(&self, path: &str) -> (u16, Value) {
        let response = self.client().post(self.url(path)).send().await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Probes run on `resource` so far, read from the Prometheus metrics.
    pub async fn probes(&self, resource: &str) -> u64 {
        self.metric(&format!("steward_probes_total{{resource=\"{resource}\"")).await.map_or(0, |value| value as u64)
    }

    /// The value of the first Prometheus series whose line starts with
    /// `series` (a name, with labels or the start of them), if any.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let metrics = self.client().get(self.url("/metrics")).send().await.expect("metrics");
        let metrics = metrics.text().await.expect("metrics text");
        let line = metrics.lines().find(|line| line.starts_with(series))?;
        line.rsplit(' ').next()?.parse().ok()
    }

    /// The first process `resource` runs.
    pub async fn program_pid(&self, resource: &str) -> u32 {
        let resource = self.get(&format!("/v1/resources/{resource}")).await;
        resource["pids"][0].as_u64().unwrap_or_else(|| panic!("the resource runs a process: {resource}")) as u32
    }

    /// The pid of monitor worker `name` (`shared`, or a resource's own), 0
    /// when it is being started.
    pub async fn worker_pid(&self, name: &str) -> u32 {
        self.worker(name).await["pid"].as_u64().unwrap_or(0) as u32
    }

    /// Monitor worker `name` as `GET /v1/workers` shows it (null if none).
    pub async fn worker(&self, name: &str) -> Value {
        let workers = self.get("/v1/workers").await;
        workers.as_array().and_then(|w| w.iter().find(|w| w["name"] == name).cloned()).unwrap_or(Value::Null)
    }

    /// The state of a resource.
    pub async fn state(&self, resource: &str) -> String {
        self.get(&format!("/v1/resources/{resource}")).await["state"].as_str().unwrap_or_default().to_string()
    }

    /// The state of a group.
    /// `absent` while the node does not have the group (a group an apply
    /// adds or replaces is missing from a node for a moment).
    pub async fn group_state(&self, group: &str) -> String {
        let response = self.client().get(self.url(&format!("/v1/groups/{group}"))).send().await.expect("GET");
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return "absent".into();
        }
        assert!(response.status().is_success(), "GET /v1/groups/{group}: {}", response.status());
        let group: Value = response.json().await.expect("JSON");
        group["state"].as_str().unwrap_or_default().to_string()
    }

    /// Waits up to `limit` until `group` is in `state`.
    pub async fn wait_group(&self, group: &str, state: &str, limit: Duration) {
        let until = Instant::now() + limit;
        while self.group_state(group).await != state {
            assert!(Instant::now() < until, "group `{group}` did not become {state}: {}", self.status_text().await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `steward status` output, from the real CLI.
    pub async fn status_text(&self) -> String {
        let output = self.cli(&["status"]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        steward_command()
            .args(args)
            .args(["--api", &self.api])
            .env("STEWARD_TOKEN", &self.tokens[0])
            .output()
            .expect("the CLI runs")
    }

    /// Every event so far (the daemon's recent history), in order.
    pub async fn events(&self) -> Vec<Value> {
        self.get("/v1/status").await["recent_events"].as_array().cloned().unwrap_or_default()
    }

    /// Collects events from the SSE stream (history first) until `done`
    /// returns true for one, or `limit` passes.
    pub async fn follow_events(&self, limit: Duration, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let response = self.client().get(self.url("/v1/events?history=true")).send().await.expect("events");
        let mut stream = response.bytes_stream();
        let mut buffer = String::new();
        let mut events = Vec::new();
        let until = tokio::time::Instant::now() + limit;
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(until, stream.next()).await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                if let Some(data) = frame.lines().find_map(|line| line.strip_prefix("data:")) {
                    let event: Value = serde_json::from_str(data.trim()).expect("event JSON");
                    let finished = done(&event);
                    events.push(event);
                    if finished {
                        return events;
                    }
                }
            }
        }
        events
    }

    /// The pid of the daemon.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the daemon to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("a running daemon");
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        child.wait().expect("the daemon exits")
    }

    /// Waits up to `limit` for a daemon that must refuse to run to exit;
    /// its log.
    pub async fn wait_exit(&mut self, limit: Duration) -> String {
        let until = Instant::now() + limit;
        while self.running() {
            assert!(Instant::now() < until, "the daemon kept running: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.log()
    }

    /// Whether the daemon process is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }
}

impl Drop for Daemon {
    /// SIGTERM first, so the daemon takes its groups offline and no program
    /// it started outlives the test; SIGKILL if it does not stop in time.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The demo's configuration, as `cargo xtask demo` runs it.
pub fn demo_config() -> String {
    let template =
        std::fs::read_to_string(crate::workspace_root().join("demo/steward.toml.in")).expect("demo/steward.toml.in");
    template
        .replace("{notepad}", &workspace_binary("notepad").display().to_string())
        .replace("{notepad_addr}", &free_address())
}

/// A daemon running the demo configuration with its plugins.
pub async fn demo() -> Daemon {
    Daemon::start(&demo_config(), &["file_marker", "generic_app", "http_check"]).await
}

/// A loopback address no one listens on now.
pub fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

/// The native binary `name` built in the workspace (by `cargo xtask test`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let path = crate::target_dir().join("debug").join(name);
    assert!(path.is_file(), "{} is missing: run `cargo xtask test`", path.display());
    path
}
