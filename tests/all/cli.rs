//! `steward plugin check` as a third party runs it: the real binary, real
//! files. Each malformed file gets one line naming the file and the fault.

use std::path::Path;
use std::process::{Command, Output};

use steward_tests::{guest_wasm, steward_binary};

fn check(file: &Path, args: &[&str]) -> Output {
    Command::new(steward_binary()).args(["plugin", "check"]).arg(file).args(args).output().expect("steward runs")
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

#[test]
fn bad_arguments_are_named() {
    let output = check(&guest_wasm("dummy"), &["--prop", "novalue"]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("--prop `novalue`: expected KEY=VALUE"), "{}", text(&output.stderr));
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
