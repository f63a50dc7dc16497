//! Project tasks that cargo alone does not express, run as `cargo xtask TASK`:
//!
//! - `guests`: build every plugin (`plugins/*`) and test fixture
//!   (`tests/fixtures/*`) as a `wasm32-wasip2` component, once, into
//!   `target/wasm32-wasip2/guest/`;
//! - `test`: build the guests and the `steward` binary, then run every test;
//! - `demo`: build everything and show the sample plugins working;
//! - `bench`: build the guests, run the monitor benchmark (release build),
//!   which writes `target/bench/monitor.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const GUEST_TARGET: &str = "wasm32-wasip2";
const GUEST_PROFILE: &str = "guest";
/// Crates tested natively; guests are built for wasm only.
const NATIVE_CRATES: &[&str] = &["steward", "steward-sdk", "steward-tests"];

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let outcome = match task.as_str() {
        "guests" => build_guests(),
        "test" => build_guests().and_then(|()| test()),
        "demo" => build_guests().and_then(|()| demo()),
        "bench" => build_guests().and_then(|()| bench()),
        _ => Err("usage: cargo xtask guests|test|demo|bench".to_string()),
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

fn test() -> Result<(), String> {
    run(cargo().args(["build", "-p", "steward"]))?;
    let mut command = cargo();
    command.arg("test");
    for name in NATIVE_CRATES {
        command.args(["-p", name]);
    }
    run(&mut command)
}

fn demo() -> Result<(), String> {
    run(cargo().args(["build", "-p", "steward"]))?;
    let guests = root().join("target").join(GUEST_TARGET).join(GUEST_PROFILE);
    let steward = root().join("target/debug/steward");
    let state = std::env::temp_dir().join("steward-demo-state");
    std::fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
    let state_grant = format!("{}:/state", state.display());
    let runs: [(&str, Vec<String>); 3] = [
        ("dummy", vec!["--prop".into(), "online-delay-ms=20".into()]),
        (
            "generic_app",
            vec![
                "--prop".into(),
                "program=/bin/sleep".into(),
                "--prop".into(),
                "args=300".into(),
                "--allow-program".into(),
                "/bin/sleep".into(),
            ],
        ),
        ("file_marker", vec!["--prop".into(), "path=/state/demo.online".into(), "--grant-dir".into(), state_grant]),
    ];
    for (plugin, args) in runs {
        println!("\n$ steward plugin check {plugin}.wasm {}", args.join(" "));
        let file = guests.join(format!("{plugin}.wasm"));
        run(Command::new(&steward).args(["plugin", "check"]).arg(file).args(&args))?;
    }
    Ok(())
}

fn bench() -> Result<(), String> {
    run(cargo().args(["bench", "-p", "steward", "--bench", "monitor"]))
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
