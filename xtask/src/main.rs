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
//! - `bench`: build the guests and the release `steward` binary, then run
//!   the benchmarks (release build), which write `target/bench/monitor.json`,
//!   `target/bench/daemon.json`, `target/bench/workers.json` and
//!   `target/bench/cluster.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

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
            .and_then(|()| build_guests())
            .and_then(|()| build_examples())
            .and_then(|()| test()),
        "examples" => build_examples(),
        "demo" => build_guests().and_then(|()| demo()),
        "bench" => build_guests().and_then(|()| bench()),
        _ => Err("usage: cargo xtask guests|examples|test|demo|bench".to_string()),
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
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin", "/sbin"].map(PathBuf::from)).any(|dir| dir.join(command).is_file())
}

/// The example plugins in other languages, each built by its own script
/// (which installs its toolchain from PyPI or npm) into `target/examples`.
const EXAMPLES: &[&str] = &["python-marker", "js-marker"];

fn build_examples() -> Result<(), String> {
    let out = root().join("target/examples");
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
    let demo = root.join("target/demo");
    let plugins = demo.join("plugins");
    for dir in [&plugins, &demo.join("state")] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    install_demo_plugins(&plugins)?;
    let config = fill_template(
        &root.join("demo/steward.toml.in"),
        &[
            ("{dir}", &demo.display().to_string()),
            ("{api}", DEMO_API),
            ("{notepad}", &root.join("target/debug/notepad").display().to_string()),
            ("{notepad_addr}", DEMO_NOTEPAD),
        ],
    )?;
    let config_file = demo.join("steward.toml");
    std::fs::write(&config_file, config).map_err(|e| format!("{}: {e}", config_file.display()))?;
    let steward = root.join("target/debug/steward");
    println!("Starting the demo node; in another terminal try:");
    println!("  target/debug/steward status");
    println!("  curl http://{DEMO_NOTEPAD}/ ; curl -X PUT --data 'hello' http://{DEMO_NOTEPAD}/");
    println!("  kill $(pgrep -f 'notepad --listen')      # and watch it come back");
    println!("  target/debug/steward events --history");
    println!("Stop it with Ctrl-C (SIGTERM/SIGINT take the group offline).\n");
    run(Command::new(steward).args(["daemon", "--config"]).arg(&config_file))
}

/// The native binaries both demos run: the daemon and the notepad.
fn build_demo_binaries() -> Result<(), String> {
    run(cargo().args(["build", "-p", "steward", "-p", "notepad"]))
}

/// Copies the demo's plugins, as `guests` built them, into `plugins`.
fn install_demo_plugins(plugins: &Path) -> Result<(), String> {
    std::fs::create_dir_all(plugins).map_err(|e| format!("{}: {e}", plugins.display()))?;
    let guests = root().join("target").join(GUEST_TARGET).join(GUEST_PROFILE);
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
