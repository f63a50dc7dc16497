//! Project tasks that cargo alone does not express, run as `cargo xtask TASK`:
//!
//! - `guests`: build every plugin (`plugins/*`) and test fixture
//!   (`tests/fixtures/*`) as a `wasm32-wasip2` component, once, into
//!   `target/wasm32-wasip2/guest/`;
//! - `examples`: build the Python and JavaScript example plugins (their
//!   scripts install componentize-py and jco) into `target/examples/`;
//! - `test`: install the system packages the tests need when missing (see
//!   [`SYSTEM_PACKAGES`]), build the guests, the examples and the binaries,
//!   then run every test;
//! - `demo`: build everything and start a node daemon on the demo
//!   configuration (`demo/steward.toml.in`) in `target/demo`;
//! - `cluster-demo`: build the same, then start three etcd members and
//!   three node daemons (`node-a`, `node-b`, `node-c`, each on its own file
//!   from `demo/cluster.toml.in`) sharing the demo's group, in
//!   `target/cluster-demo`, until Ctrl-C stops them all;
//! - `bench`: build the guests and the release `steward` binary, then run
//!   the benchmarks (release build), which write `target/bench/monitor.json`,
//!   `target/bench/daemon.json`, `target/bench/workers.json` and
//!   `target/bench/cluster.json`.

use std::ffi::c_int;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const GUEST_TARGET: &str = "wasm32-wasip2";
const GUEST_PROFILE: &str = "guest";
/// Crates tested natively; guests are built for wasm only.
const NATIVE_CRATES: &[&str] = &[
    "steward",
    "steward-policy",
    "steward-config",
    "steward-monitor",
    "steward-cluster",
    "steward-node",
    "steward-api",
    "steward-sdk",
    "steward-tests",
];

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let outcome = match task.as_str() {
        "guests" => build_guests(),
        "test" => install_system_packages()
            .map(|()| warn_if_disk_is_short())
            .and_then(|()| build_guests())
            .and_then(|()| build_examples())
            .and_then(|()| test()),
        "examples" => build_examples(),
        "demo" => build_guests().and_then(|()| demo()),
        "cluster-demo" => build_guests().and_then(|()| cluster_demo()),
        "bench" => build_guests().and_then(|()| bench()),
        _ => Err("usage: cargo xtask guests|examples|test|demo|cluster-demo|bench".to_string()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn guest_crates() -> Result<Vec<String>, String> {
    let mut crates = Vec::new();
    for dir in ["plugins", "tests/fixtures"] {
        let entries = std::fs::read_dir(root().join(dir)).map_err(|e| format!("{dir}: {e}"))?;
        for entry in entries.flatten() {
            if entry.path().join("Cargo.toml").is_file() {
                crates.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    crates.sort();
    Ok(crates)
}

fn build_guests() -> Result<(), String> {
    // Idempotent and quick when the target is there; makes a fresh machine work.
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let has_target = installed.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).lines().any(|l| l == GUEST_TARGET));
    if !has_target {
        run(Command::new("rustup").args(["target", "add", GUEST_TARGET]))?;
    }
    let mut command = cargo();
    command.args(["build", "--target", GUEST_TARGET, "--profile", GUEST_PROFILE]);
    for name in guest_crates()? {
        command.args(["-p", &name]);
    }
    run(&mut command)
}

/// What the tests need from the system: a command each (or, for a package
/// without one, the absolute path of a file it installs), and the Debian
/// package that provides it. A fresh machine gets the missing ones from
/// `apt-get`, so the README's test command needs no set-up of its own.
const SYSTEM_PACKAGES: &[(&str, &str)] = &[
    // The OCF interop tests: `ocf-tester` and the heartbeat `Dummy` agent.
    ("ocf-tester", "resource-agents"),
    // The `xmllint` that `ocf-tester` validates meta-data with.
    ("xmllint", "libxml2-utils"),
    // The cluster tests start their own etcd members.
    ("etcd", "etcd-server"),
    // The TLS tests make their CA and certificates with the command line.
    ("openssl", "openssl"),
    // The console's browser tests drive a headless Chromium over WebDriver.
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    // `etcd-client` compiles etcd's protobuf definitions when it builds,
    // with `protoc` and the well-known types' `.proto` files.
    ("protoc", "protobuf-compiler"),
    ("/usr/include/google/protobuf/descriptor.proto", "libprotobuf-dev"),
];

fn install_system_packages() -> Result<(), String> {
    let missing: Vec<&str> =
        SYSTEM_PACKAGES.iter().filter(|(needed, _)| !is_present(needed)).map(|(_, package)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: installing {} (the tests need them)", missing.join(" "));
    // Root installs directly (CI, containers); anyone else through sudo,
    // which says itself what it needs.
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    let apt = |args: &[&str]| {
        let mut command = if is_root { Command::new("apt-get") } else { Command::new("sudo") };
        if !is_root {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run(&mut apt(&["update", "-qq"]))?;
    let mut install = apt(&["install", "-y", "-qq"]);
    install.args(&missing);
    run(&mut install).map_err(|error| format!("{error}; install {} by hand and run again", missing.join(" ")))
}

/// Whether `needed` is there: an absolute path as a file, anything else as
/// a command (`on_path`).
fn is_present(needed: &str) -> bool {
    if needed.starts_with('/') { Path::new(needed).is_file() } else { on_path(needed) }
}

/// Whether `command` is on the PATH, or in an sbin directory (where
/// `ocf-tester` lives, which a non-root PATH may lack).
fn on_path(command: &str) -> bool {
    find_command(command).is_some()
}

/// Where `command` is, on the PATH or in an sbin directory.
fn find_command(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(command))
        .find(|candidate| candidate.is_file())
}

/// The example plugins in other languages, each built by its own script
/// (which installs its toolchain from PyPI or npm) into `target/examples`.
const EXAMPLES: &[&str] = &["python-marker", "js-marker"];

/// Where cargo builds and the tests look: `CARGO_TARGET_DIR` when it is set.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

/// What a first `cargo xtask test` writes: the debug build (4.5 GiB when
/// measured), the example toolchains and the tests' own files.
const TEST_DISK_NEED_GIB: u64 = 6;

/// Says so before the build when the disk holding the target directory has
/// less room than a test run takes, rather than letting a linker or npm
/// fail with ENOSPC twenty minutes in. Only a warning: an incremental
/// build needs far less, and `df` may be missing.
fn warn_if_disk_is_short() {
    let target = target_dir();
    let probe = target.ancestors().find(|dir| dir.exists()).unwrap_or(Path::new("/"));
    let Ok(output) = Command::new("df").args(["-Pk"]).arg(probe).output() else { return };
    let text = String::from_utf8_lossy(&output.stdout);
    // POSIX format: the second line's fourth column is the KiB available.
    let free_kib = text.lines().nth(1).and_then(|line| line.split_whitespace().nth(3)?.parse::<u64>().ok());
    if let Some(free_gib) = free_kib.map(|kib| kib >> 20)
        && free_gib < TEST_DISK_NEED_GIB
    {
        eprintln!(
            "xtask: warning: {free_gib} GiB free on the disk holding {}; a first test run writes about \
             {TEST_DISK_NEED_GIB} GiB (free some, or set CARGO_TARGET_DIR to a roomier disk)",
            target.display()
        );
    }
}

fn build_examples() -> Result<(), String> {
    let out = target_dir().join("examples");
    for example in EXAMPLES {
        let script = root().join("plugins/examples").join(example).join("build.sh");
        run(Command::new("bash").arg(&script).arg(&out))?;
    }
    Ok(())
}

fn test() -> Result<(), String> {
    // The tests run the real binaries: the daemon and the demo's program.
    run(cargo().args(["build", "-p", "steward", "-p", "notepad"]))?;
    let mut command = cargo();
    command.arg("test");
    for name in NATIVE_CRATES {
        command.args(["-p", name]);
    }
    run(&mut command)
}

/// The demo's fixed addresses: the daemon's API (the CLI's default) and the notepad.
const DEMO_API: &str = "127.0.0.1:7700";
const DEMO_NOTEPAD: &str = "127.0.0.1:7780";
/// The plugins the demo node gets.
const DEMO_PLUGINS: &[&str] = &["dummy", "file_marker", "generic_app", "http_check", "tcp_check"];

/// Starts a node daemon on the demo configuration, in `target/demo`, in the
/// foreground; its state survives between runs, so a second run adopts what
/// the first left running.
fn demo() -> Result<(), String> {
    build_demo_binaries()?;
    let root = root();
    let demo = target_dir().join("demo");
    let plugins = demo.join("plugins");
    for dir in [&plugins, &demo.join("state")] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    install_demo_plugins(&plugins)?;
    let tokens = demo_tokens(&demo)?;
    let config = fill_template(
        &root.join("demo/steward.toml.in"),
        &[
            ("{dir}", &demo.display().to_string()),
            ("api = \"{api}\"", &format!("api = \"{DEMO_API}\"\napi_tokens = \"{}\"", tokens.display())),
            ("{notepad}", &target_dir().join("debug/notepad").display().to_string()),
            ("{notepad_addr}", DEMO_NOTEPAD),
        ],
    )?;
    let config_file = demo.join("steward.toml");
    std::fs::write(&config_file, config).map_err(|e| format!("{}: {e}", config_file.display()))?;
    let steward = target_dir().join("debug/steward");
    println!("Starting the demo node; in another terminal try:");
    println!("  export STEWARD_API=unix:target/demo/data/api.sock   # the node's socket: no token needed");
    println!("  target/debug/steward status");
    println!("  curl http://{DEMO_NOTEPAD}/ ; curl -X PUT --data 'hello' http://{DEMO_NOTEPAD}/");
    println!("  kill $(pgrep -f 'notepad --listen')      # and watch it come back");
    println!("  target/debug/steward events --history");
    println!("The API on http://{DEMO_API}/ takes the token in target/demo/operator.token (STEWARD_TOKEN).");
    println!("Stop it with Ctrl-C (SIGTERM/SIGINT take the group offline).\n");
    run(Command::new(steward).args(["daemon", "--config"]).arg(&config_file))
}

/// The demo's API tokens file in `dir`, with one operate token kept in
/// `dir/operator.token` for the operator; made on the first run, kept after.
fn demo_tokens(dir: &Path) -> Result<PathBuf, String> {
    let (tokens, token) = (dir.join("api-tokens"), dir.join("operator.token"));
    if tokens.is_file() && token.is_file() {
        return Ok(tokens);
    }
    for stale in [&tokens, &token] {
        let _ = std::fs::remove_file(stale);
    }
    let output = Command::new(target_dir().join("debug/steward"))
        .args(["token", "create", "--name", "demo-operator", "--role", "operate", "--file"])
        .arg(&tokens)
        .output()
        .map_err(|e| format!("steward token create: {e}"))?;
    if !output.status.success() {
        return Err(format!("steward token create failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    std::fs::write(&token, &output.stdout).map_err(|e| format!("{}: {e}", token.display()))?;
    Ok(tokens)
}

/// The native binaries both demos run: the daemon and the notepad.
fn build_demo_binaries() -> Result<(), String> {
    run(cargo().args(["build", "-p", "steward", "-p", "notepad"]))
}

/// Copies the demo's plugins, as `guests` built them, into `plugins`.
fn install_demo_plugins(plugins: &Path) -> Result<(), String> {
    std::fs::create_dir_all(plugins).map_err(|e| format!("{}: {e}", plugins.display()))?;
    let guests = target_dir().join(GUEST_TARGET).join(GUEST_PROFILE);
    for plugin in DEMO_PLUGINS {
        let from = guests.join(format!("{plugin}.wasm"));
        std::fs::copy(&from, plugins.join(format!("{plugin}.wasm"))).map_err(|e| format!("{}: {e}", from.display()))?;
    }
    Ok(())
}

/// The text of `template` with each placeholder replaced by its value.
fn fill_template(template: &Path, values: &[(&str, &str)]) -> Result<String, String> {
    let text = std::fs::read_to_string(template).map_err(|e| format!("{}: {e}", template.display()))?;
    Ok(values.iter().fold(text, |text, (placeholder, value)| text.replace(placeholder, value)))
}

/// The cluster demo's nodes, in their group's preferred order, and each
/// one's API address. All its addresses are loopback and fixed, and none is
/// the single demo's, so both demos can run at once.
const CLUSTER_NODES: [(&str, &str); 3] =
    [("node-a", "127.0.0.1:7701"), ("node-b", "127.0.0.1:7702"), ("node-c", "127.0.0.1:7703")];
/// The etcd members' client and peer addresses. Not etcd's usual 2379 and
/// 2380, which an etcd of the machine's own may hold, nor 20000-31999,
/// where the cluster tests' etcd members take their ports.
const CLUSTER_ETCD: [(&str, &str); 3] =
    [("127.0.0.1:7711", "127.0.0.1:7721"), ("127.0.0.1:7712", "127.0.0.1:7722"), ("127.0.0.1:7713", "127.0.0.1:7723")];
/// The notepad's one address, on whichever node owns the group.
const CLUSTER_NOTEPAD: &str = "127.0.0.1:7790";
/// etcd's own default heartbeat and election timeout (ms), spelled out:
/// the tests' 20/200 ms would make a busy laptop hold elections.
const CLUSTER_ETCD_HEARTBEAT_MS: &str = "100";
const CLUSTER_ETCD_ELECTION_MS: &str = "1000";
/// How long etcd may take to answer healthy, and the group to come online
/// (each node compiles its plugins first: seconds, unless the machine is
/// busy building).
const CLUSTER_ETCD_DEADLINE: Duration = Duration::from_secs(60);
const CLUSTER_ONLINE_DEADLINE: Duration = Duration::from_secs(300);
/// How long a node may take to stop on SIGTERM (the owner takes the group
/// offline, giving the notepad 2 s) before it is killed.
const CLUSTER_NODE_STOP_GRACE: Duration = Duration::from_secs(30);

/// Runs three etcd members and three node daemons in `target/cluster-demo`
/// in the foreground, until Ctrl-C (or SIGTERM), then stops the nodes and
/// the members.
fn cluster_demo() -> Result<(), String> {
    let Some(etcd) = find_command("etcd") else {
        return Err("`etcd` is not on the PATH: run `cargo xtask test`, which installs it, \
                    or `apt-get install etcd-server`"
            .to_string());
    };
    build_demo_binaries()?;
    let root = root();
    let dir = target_dir().join("cluster-demo");
    let shared = dir.join("shared");
    let taken = |address: &str| TcpListener::bind(address).is_err();
    let addresses = CLUSTER_NODES.iter().map(|(_, api)| *api).chain(CLUSTER_ETCD.iter().flat_map(|(c, p)| [*c, *p]));
    if let Some(address) = addresses.chain([CLUSTER_NOTEPAD]).find(|address| taken(address)) {
        return Err(format!(
            "{address} is taken, and the cluster demo needs it: is one still running? \
             `pgrep -af target/cluster-demo` lists its processes"
        ));
    }
    // Every run starts afresh: an earlier run's etcd keys would come back
    // with their leases renewed and hold its nodes' names for another lease
    // TTL (a node whose name is taken refuses to start), and each node's
    // store would remember programs and restarts of a cluster that is gone.
    // Compiling the plugins again takes the nodes seconds.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&shared).map_err(|e| format!("{}: {e}", shared.display()))?;
    // One tokens file for the three nodes: an operator's token (and
    // `steward why`, which asks every node) works on each.
    let tokens = demo_tokens(&dir)?;
    let endpoints: Vec<String> = CLUSTER_ETCD.iter().map(|(client, _)| format!("\"http://{client}\"")).collect();
    let notepad = target_dir().join("debug/notepad");
    let mut configs = Vec::new();
    for (node, api) in CLUSTER_NODES {
        let node_dir = dir.join(node);
        install_demo_plugins(&node_dir.join("plugins"))?;
        let config = fill_template(
            &root.join("demo/cluster.toml.in"),
            &[
                ("{node}", node),
                ("api = \"{api}\"", &format!("api = \"{api}\"\napi_tokens = \"{}\"", tokens.display())),
                ("{endpoints}", &endpoints.join(", ")),
                ("{shared}", &shared.display().to_string()),
                ("{notepad}", &notepad.display().to_string()),
                ("{notepad_addr}", CLUSTER_NOTEPAD),
            ],
        )?;
        let config_file = node_dir.join("steward.toml");
        std::fs::write(&config_file, config).map_err(|e| format!("{}: {e}", config_file.display()))?;
        configs.push(config_file);
    }

    // From here on every process started is in `running`, whose drop stops
    // them all, on an error as on Ctrl-C.
    catch_stop_signals();
    let mut running = Running { dir: dir.clone(), etcd: Vec::new(), nodes: Vec::new() };
    let initial_cluster: Vec<String> =
        CLUSTER_ETCD.iter().enumerate().map(|(index, (_, peer))| format!("etcd-{}=http://{peer}", index + 1)).collect();
    for (index, (client, peer)) in CLUSTER_ETCD.iter().enumerate() {
        let name = format!("etcd-{}", index + 1);
        let data = dir.join(&name);
        let mut command = Command::new(&etcd);
        command
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", &initial_cluster.join(","), "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "steward-cluster-demo"])
            .args(["--heartbeat-interval", CLUSTER_ETCD_HEARTBEAT_MS, "--election-timeout", CLUSTER_ETCD_ELECTION_MS])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        running.etcd.push(Process::start(&name, &mut command, &dir)?);
    }
    for (member, (client, _)) in running.etcd.iter_mut().zip(CLUSTER_ETCD) {
        let healthy = || {
            http_get(client, "/health")
                .is_some_and(|(status, body)| status == 200 && body.contains("\"health\":\"true\""))
        };
        member.wait_until(healthy, CLUSTER_ETCD_DEADLINE, "answer healthy")?;
    }
    println!("xtask: etcd answers on {}", endpoints.join(", ").replace('"', ""));

    let steward = target_dir().join("debug/steward");
    for ((node, _), config) in CLUSTER_NODES.iter().zip(&configs) {
        let mut command = Command::new(&steward);
        command.args(["daemon", "--config"]).arg(config);
        running.nodes.push(Process::start(node, &mut command, &dir)?);
    }
    println!("xtask: nodes started; waiting for ha-notepad to come online");
    let notepad_answers = || http_get(CLUSTER_NOTEPAD, "/health").is_some_and(|(status, _)| status == 200);
    running.wait_until(notepad_answers, CLUSTER_ONLINE_DEADLINE)?;

    println!("\nThe cluster demo is up, in {}:", shown(&dir));
    for (process, (_, api)) in running.nodes.iter().zip(CLUSTER_NODES) {
        println!("  {:<7} pid {:<8} api {api}          log {}", process.name, process.pid(), shown(&process.log));
    }
    for (process, (client, _)) in running.etcd.iter().zip(CLUSTER_ETCD) {
        println!("  {:<7} pid {:<8} etcd http://{client}  log {}", process.name, process.pid(), shown(&process.log));
    }
    let (first_api, second_api) = (CLUSTER_NODES[0].1, CLUSTER_NODES[1].1);
    let try_these = [
        ("export STEWARD_TOKEN=$(cat target/cluster-demo/operator.token)".to_string(), "the nodes' API token"),
        (format!("target/debug/steward status --api {first_api}"), "the owner, with its fencing token"),
        (format!("curl -X PUT --data 'hello' http://{CLUSTER_NOTEPAD}/ ; curl http://{CLUSTER_NOTEPAD}/"), ""),
        ("kill -9 PID".to_string(), "PID: the owner's, above"),
        (format!("target/debug/steward status --api {second_api}"), "seconds later: another owner, a larger token"),
        (format!("curl http://{CLUSTER_NOTEPAD}/"), "the same note, served from there"),
    ];
    println!("The notepad listens on {CLUSTER_NOTEPAD} on whichever node owns ha-notepad. In another terminal try:");
    for (command, comment) in &try_these {
        if comment.is_empty() {
            println!("  {command}");
        } else {
            println!("  {command:<57}  # {comment}");
        }
    }
    println!("The killed daemon's worker terminates its notepad; `steward why ha-notepad` explains the move.");
    println!("Stop it all with Ctrl-C.\n");
    running.supervise();
    running.stop();
    say(format_args!("xtask: the cluster demo stopped; its logs stay in {}", shown(&dir)));
    Ok(())
}

/// `path` as the user would type it from the repository's root.
fn shown(path: &Path) -> String {
    let root = root();
    path.strip_prefix(&root).unwrap_or(path).display().to_string()
}

/// Prints a line, if stdout is still there: after the terminal closes
/// (SIGHUP), `println!` would panic, and the processes must still be
/// stopped.
fn say(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Set by Ctrl-C (SIGINT), SIGTERM or the terminal's closing (SIGHUP); the
/// cluster demo's loops poll it and stop what they started.
static STOP: AtomicBool = AtomicBool::new(false);

const SIGHUP: c_int = 1;
const SIGINT: c_int = 2;
const SIGKILL: c_int = 9;
const SIGTERM: c_int = 15;

// std has no signal API and the xtask has no dependencies: the two C
// library functions the cluster demo needs, from the libc std links anyway.
unsafe extern "C" {
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
    safe fn kill(pid: i32, signum: c_int) -> c_int;
}

extern "C" fn on_stop_signal(_: c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Ctrl-C, SIGTERM and SIGHUP set [`STOP`] instead of ending the xtask,
/// which has to stop the nodes and etcd members. They run in process groups
/// of their own, so the terminal's Ctrl-C reaches only the xtask, which
/// stops them in order.
fn catch_stop_signals() {
    for signum in [SIGHUP, SIGINT, SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe, and stays valid for the life of the process.
        unsafe { signal(signum, on_stop_signal) };
    }
}

/// A process the cluster demo started, with its output in `NAME.log`.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    /// How it ended, once seen.
    ended: Option<ExitStatus>,
}

impl Process {
    /// Starts `command` as `name`, in a process group of its own, with its
    /// stdout and stderr in `dir/NAME.log`.
    fn start(name: &str, command: &mut Command, dir: &Path) -> Result<Process, String> {
        let log = dir.join(format!("{name}.log"));
        // One open file for both, so that they share its offset and
        // neither writes over the other's lines.
        let stdout = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let stderr = stdout.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        command.stdin(Stdio::null()).stdout(stdout).stderr(stderr).process_group(0);
        let child = command.spawn().map_err(|e| format!("starting {name} ({command:?}): {e}"))?;
        Ok(Process { name: name.to_string(), child, log, ended: None })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has ended since the last look: how, once.
    fn newly_ended(&mut self) -> Option<ExitStatus> {
        if self.ended.is_some() {
            return None;
        }
        self.ended = self.child.try_wait().ok().flatten();
        self.ended
    }

    fn running(&mut self) -> bool {
        self.newly_ended();
        self.ended.is_none()
    }

    /// Polls `ready` until it holds; an error if this process ends first,
    /// the deadline passes or Ctrl-C comes.
    fn wait_until(&mut self, ready: impl Fn() -> bool, limit: Duration, what: &str) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while !ready() {
            if let Some(status) = self.newly_ended() {
                return Err(format!("{} ended ({status}) before it could {what}; see {}", self.name, shown(&self.log)));
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not {what} within {limit:?}; see {}", self.name, shown(&self.log)));
            }
            if STOP.load(Ordering::SeqCst) {
                return Err("stopped before the cluster demo was up".to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it still runs after `grace`.
    fn terminate(&mut self, grace: Duration) {
        if !self.running() {
            return;
        }
        // The pid is our own child's, not yet waited for, so no other
        // process can have it.
        if let Ok(pid) = i32::try_from(self.pid()) {
            kill(pid, SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.running() {
            say(format_args!("xtask: {} did not stop within {grace:?} of SIGTERM; killing it", self.name));
            self.kill();
        }
    }

    /// SIGKILL, and wait for the end.
    fn kill(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            self.ended = self.child.wait().ok();
        }
    }
}

/// What the cluster demo runs; dropping it stops everything.
struct Running {
    /// `target/cluster-demo`, which every command line of the demo's names.
    dir: PathBuf,
    etcd: Vec<Process>,
    nodes: Vec<Process>,
}

impl Running {
    /// Polls `ready` until it holds, reporting processes that end meanwhile;
    /// an error if every node ends, the deadline passes or Ctrl-C comes.
    fn wait_until(&mut self, ready: impl Fn() -> bool, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while !ready() {
            self.report_ends();
            if self.nodes.iter_mut().all(|node| !node.running()) {
                return Err(format!(
                    "every node ended before the notepad answered; see their logs in {}",
                    shown(&self.dir)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the notepad did not answer on {CLUSTER_NOTEPAD} within {limit:?}; see the logs in {}",
                    shown(&self.dir)
                ));
            }
            if STOP.load(Ordering::SeqCst) {
                return Err("stopped before the cluster demo was up".to_string());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Until Ctrl-C: says when a process ends (a node killed to watch the
    /// group move, or one that failed), and keeps the others running.
    fn supervise(&mut self) {
        while !STOP.load(Ordering::SeqCst) {
            self.report_ends();
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn report_ends(&mut self) {
        for process in self.etcd.iter_mut().chain(self.nodes.iter_mut()) {
            let pid = process.pid();
            if let Some(status) = process.newly_ended() {
                say(format_args!(
                    "xtask: {} (pid {pid}) ended: {status}; its log is {}",
                    process.name,
                    shown(&process.log)
                ));
            }
        }
    }

    /// The nodes first, the last preferred first, so that no node still
    /// running takes the group over from one stopping; then etcd, which the
    /// nodes need until they have let their leases go.
    fn stop(&mut self) {
        for node in self.nodes.iter_mut().rev() {
            if node.running() {
                say(format_args!("xtask: stopping {}", node.name));
                node.terminate(CLUSTER_NODE_STOP_GRACE);
            }
        }
        for member in &mut self.etcd {
            member.kill();
        }
        for (pid, command) in leftovers(&self.dir) {
            say(format_args!("xtask: pid {pid} still runs, left by a node killed without it ({command}); killing it"));
            kill(pid, SIGKILL);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The demo's own processes still running in `dir`: a notepad, an etcd
/// member or a steward daemon or monitor worker whose arguments name it.
/// What a node killed with -9 leaves behind (its monitor workers leave the
/// programs they run for the node's next daemon to adopt); a user's `tail`
/// of a log there is none of them.
fn leftovers(dir: &Path) -> Vec<(i32, String)> {
    let dir = dir.display().to_string();
    let ours = |args: &[String]| {
        let program = args.first().and_then(|arg0| Path::new(arg0).file_name()).and_then(|name| name.to_str());
        let kind = args.get(1).map(String::as_str);
        let is_demo_program = match program {
            Some("notepad" | "etcd") => true,
            Some("steward") => matches!(kind, Some("daemon" | "monitor")),
            _ => false,
        };
        is_demo_program && args.iter().any(|arg| arg.contains(&dir))
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let command = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = command
                .split(|byte| *byte == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            ours(&args).then(|| (pid, args.join(" ")))
        })
        .collect()
}

/// A GET of `path` at `address` over plain HTTP/1.1: the status and the
/// body, or None when nothing answers within a few seconds.
fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let socket: SocketAddr = address.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    Some((status, body))
}

/// The daemon and workers benches start the release `steward` binary
/// (`CARGO_BIN_EXE_steward`, which `cargo bench` builds with the bench
/// profile into `target/release`, the same artifact as `--release`); it is
/// built first so a build failure is reported as one, before any bench runs.
fn bench() -> Result<(), String> {
    run(cargo().args(["build", "--release", "-p", "steward"]))?;
    run(cargo().args(["bench", "-p", "steward-monitor", "--bench", "monitor"]))?;
    run(cargo().args(["bench", "-p", "steward", "--bench", "daemon", "--bench", "workers", "--bench", "cluster"]))
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

fn run(command: &mut Command) -> Result<(), String> {
    let status = command.status().map_err(|e| format!("{command:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{command:?} failed: {status}")) }
}
