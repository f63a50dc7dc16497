//! `steward plugin check` as a third party runs it: the real binary, real
//! files. Each malformed file gets one line naming the file and the fault.

use std::path::Path;
use std::process::{Command, Output};

use steward_tests::{guest_wasm, steward_command};

fn check(file: &Path, args: &[&str]) -> Output {
    steward_command().args(["plugin", "check"]).arg(file).args(args).output().expect("steward runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn malformed_files_get_one_line_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dummy = std::fs::read(guest_wasm("dummy")).expect("dummy.wasm");
    // A minimal valid core module: magic, version 1, no sections.
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("empty.wasm", Vec::new(), "the file is empty"),
        ("truncated.wasm", dummy[..dummy.len() / 2].to_vec(), "malformed or truncated component"),
        ("notes.wasm", b"this is not wasm at all\n".to_vec(), "not a WebAssembly file"),
        ("core.wasm", core_module, "a core WebAssembly module, not a component"),
        (
            "other-world.wasm",
            std::fs::read(guest_wasm("other_world")).expect("other_world.wasm"),
            "not a Steward plugin",
        ),
    ];
    for (name, bytes, expected) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).expect("write");
        let output = check(&file, &[]);
        let stdout = text(&output.stdout);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stdout}{stderr}");
        assert_eq!(stdout.lines().count(), 1, "{name}: one line: {stdout}");
        assert!(stdout.starts_with(&format!("FAIL {}: ", file.display())), "{name} names the file: {stdout}");
        assert!(stdout.contains(expected), "{name}: expected `{expected}`: {stdout}");
        assert!(!stderr.contains("panicked"), "{name}: no panic: {stderr}");
    }
    let missing = check(&dir.path().join("missing.wasm"), &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stdout).contains("missing.wasm: cannot read plugin file"), "{}", text(&missing.stdout));
}

#[test]
fn other_world_names_the_missing_export() {
    let output = check(&guest_wasm("other_world"), &[]);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("steward:resource/resource-type@0.1.0"), "{stdout}");
}

#[test]
fn a_healthy_plugin_passes_with_timings() {
    let output = check(&guest_wasm("dummy"), &["--prop", "online-delay-ms=1"]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("plugin  dummy"), "{stdout}");
    for step in ["validate", "open", "online", "looks-alive", "is-alive", "offline", "terminate"] {
        assert!(stdout.lines().any(|line| line.contains(step) && line.contains(" ms")), "{step} is timed: {stdout}");
    }
    assert!(stdout.trim_end().ends_with("PASS dummy: every step passed"), "{stdout}");
}

#[test]
fn a_misbehaving_plugin_fails_with_its_reason() {
    let output = check(&guest_wasm("hostile"), &["--prop", "fault=loop-looks-alive", "--timeout-ms", "200"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL hostile: looks-alive: looks-alive exceeded its deadline of 200 ms"), "{stdout}");

    let output = check(&guest_wasm("dummy"), &["--prop", "fail-online=sometimes"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("fail-online: `sometimes` is not transient, fatal or invalid-config"), "{stdout}");
}

/// Each malformed argument is a usage error: exit code 2, before any
/// plugin is loaded, with a first line that names the flag and the fix.
#[test]
fn bad_arguments_are_usage_errors_that_name_the_flag() {
    let missing_dir = "/nonexistent/steward-test:/state";
    let cases: [(&[&str], &str); 8] = [
        (&["--prop", "novalue"], "`novalue` is not KEY=VALUE"),
        (&["--prop", "=value"], "`=value` is not KEY=VALUE"),
        (&["--grant-dir", "/tmp"], "`/tmp` is not HOST:GUEST"),
        (&["--grant-dir", "tmp:/state"], "both paths must be absolute"),
        (&["--grant-dir", missing_dir], "the host directory does not exist"),
        (&["--allow-program", "bin/true"], "`bin/true` is relative"),
        (&["--memory-mib", "1000"], "1000 is not in 1..=256"),
        (&["--timeout-ms", "0"], "--timeout-ms"),
    ];
    for (args, expected) in cases {
        let output = check(&guest_wasm("dummy"), args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}{}", text(&output.stdout));
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: ") && first.contains(expected), "{args:?}: expected `{expected}`: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: nothing was checked: {}", text(&output.stdout));
    }
    // Every command: 2 for usage, 1 for an operation that failed.
    let steward = |args: &[&str]| steward_command().args(args).output().expect("steward runs");
    for args in [&["online"][..], &["status", "--api"], &["no-such-command"], &["plugin", "check"]] {
        assert_eq!(steward(args).status.code(), Some(2), "{args:?}");
    }
    let unreachable = steward(&["status", "--api", "127.0.0.1:1"]);
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(text(&unreachable.stderr).contains("cannot reach the daemon"), "{}", text(&unreachable.stderr));
}

/// `plugin check` reads only regular files, and no more than its cap: a
/// device, a FIFO and an oversized file are refused at once, by name.
#[test]
fn only_a_bounded_regular_file_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo.wasm");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    let big = dir.path().join("big.wasm");
    let file = std::fs::File::create(&big).expect("create");
    file.set_len(steward_monitor::plugin::MAX_PLUGIN_FILE_BYTES + 1).expect("a sparse file over the cap");
    let cases = [
        (Path::new("/dev/zero"), "not a regular file (a device)"),
        (fifo.as_path(), "not a regular file (a FIFO)"),
        (dir.path(), "not a regular file (a directory)"),
        (big.as_path(), "larger than the 128 MiB a plugin file may be"),
    ];
    for (file, expected) in cases {
        let output = check(file, &[]);
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{}: {stdout}", file.display());
        assert!(stdout.starts_with(&format!("FAIL {}: ", file.display())), "{stdout}");
        assert!(stdout.contains(expected), "{}: expected `{expected}`: {stdout}", file.display());
    }
}

/// A plugin wedged in `online` is called past its deadline once: every
/// later step that would call `online` again is skipped, and says why.
#[test]
fn an_operation_past_its_deadline_is_not_called_again() {
    let output = check(&guest_wasm("hostile"), &["--json", "--prop", "fault=log-flood", "--timeout-ms", "300"]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let steps = report["steps"].as_array().expect("steps");
    let overran: Vec<&serde_json::Value> = steps
        .iter()
        .filter(|s| s["detail"].as_str().is_some_and(|d| d.contains("online exceeded its deadline")))
        .collect();
    assert_eq!(overran.len(), 1, "online is called past its deadline once: {report:#}");
    let skipped: Vec<&serde_json::Value> = steps.iter().filter(|s| s["skipped"] == true).collect();
    assert!(
        skipped.iter().any(|s| s["step"] == "terminate"
            && s["detail"].as_str().is_some_and(|d| d.contains("`online` overran its deadline"))),
        "terminate-while-online is skipped with the reason: {report:#}"
    );
    assert!(steps.iter().any(|s| s["step"] == "notify" && s["passed"] == true), "independent steps still run");
}

/// `plugin check --help` states the host's default deadlines and limits,
/// as the monitor has them.
#[test]
fn help_states_the_defaults() {
    let output = steward_command().args(["plugin", "check", "--help"]).output().expect("help");
    let help = text(&output.stdout);
    let defaults = steward_monitor::monitor::Timeouts::default();
    let seconds = |d: std::time::Duration| format!("{} s", d.as_secs());
    for (what, value) in [
        ("open", seconds(defaults.open)),
        ("online and offline", seconds(defaults.pending)),
        ("looks-alive and is-alive", seconds(defaults.probe)),
        ("terminate", seconds(defaults.terminate)),
        ("notify", seconds(defaults.notify)),
        ("control", seconds(defaults.control)),
    ] {
        assert!(help.contains(&format!("{what} {value}")), "--help says {what} {value}: {help}");
    }
    let most = steward_monitor::runtime::MAX_MEMORY_LIMIT_BYTES >> 20;
    assert!(help.contains(&format!("1 to {most}")), "{help}");
    let cap = steward_monitor::plugin::MAX_PLUGIN_FILE_BYTES >> 20;
    assert!(help.contains(&format!("at most {cap} MiB")), "{help}");
}

#[test]
fn json_output_lists_every_step() {
    let output = check(&guest_wasm("dummy"), &["--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["type"], "dummy");
    assert_eq!(report["passed"], true);
    let steps = report["steps"].as_array().expect("steps");
    assert!(steps.iter().any(|s| s["step"] == "notify" && s["passed"] == true), "{report}");
    assert!(steps.iter().all(|s| s["elapsed_ms"].is_number()), "{report}");
    let output = check(&guest_wasm("sloppy"), &["--json", "--prop", "break=notify"]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["passed"], false);
}

/// `plugin check` keeps compiled components in the user's cache directory,
/// so a second check of the same file loads it from there; `--no-cache`
/// compiles afresh.
#[test]
fn a_second_check_loads_from_the_user_cache() {
    let cache = tempfile::tempdir().expect("tempdir");
    let check_cached = |extra: &[&str]| {
        let output = steward_command()
            .args(["plugin", "check"])
            .arg(guest_wasm("dummy"))
            .args(extra)
            .env("XDG_CACHE_HOME", cache.path())
            .output()
            .expect("steward runs");
        assert!(output.status.success(), "{}", text(&output.stdout));
        let stdout = text(&output.stdout);
        stdout.lines().find(|line| line.starts_with("loaded")).unwrap_or_default().to_string()
    };
    assert!(check_cached(&[]).contains("loaded  compiled"));
    assert!(cache.path().join("steward/compile-cache").read_dir().is_ok_and(|mut d| d.next().is_some()));
    assert!(check_cached(&[]).contains("loaded  from cache"));
    assert!(check_cached(&["--no-cache"]).contains("loaded  compiled"));
}
