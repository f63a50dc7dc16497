//! The first-party plugins pass the same conformance life cycle that
//! `steward plugin check` runs, and the host checks their properties.

use steward_config::grants::DirectoryGrant;
use steward_monitor::conformance::{self, StepReport};
use steward_monitor::monitor::{FailureKind, Monitor};
use steward_tests::{context, plugin, spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dummy_passes_the_life_cycle() {
    let dummy = plugin("dummy").await;
    let report = conformance::run(dummy.clone(), spec("d", &dummy, &[("online-delay-ms", "5")])).await;
    assert!(report.passed(), "{report:#?}");
    let steps: Vec<&str> = report.steps.iter().map(|step| step.step).collect();
    let expected = [
        "metadata",
        "validate",
        "validate-rejects-missing",
        "open",
        "online",
        "looks-alive",
        "is-alive",
        "online-again",
        "offline",
        "looks-alive",
        "offline-again",
        "open",
        "notify",
        "terminate",
        "open",
        "terminate",
    ];
    assert_eq!(steps, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dummy_fails_as_configured() {
    let dummy = plugin("dummy").await;
    let monitor = Monitor::new("test-node");
    for (mode, expected) in
        [("transient", "transient"), ("fatal", "fatal"), ("invalid-config", "invalid configuration")]
    {
        let handle = monitor.open(dummy.clone(), spec("d", &dummy, &[("fail-online", mode)])).await.expect("opens");
        let error = handle.online(&context()).await.expect_err("online fails");
        assert_eq!(error.kind(), FailureKind::Plugin);
        assert!(error.to_string().contains(expected), "{error}");
        assert!(handle.is_live().await, "a plugin error keeps its sandbox");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_marker_keeps_its_state_in_the_granted_directory() {
    let state = tempfile::tempdir().expect("tempdir");
    let marker = plugin("file_marker").await;
    let mut marker_spec = spec("web", &marker, &[("path", "/state/web.online")]);
    marker_spec.grants.directories =
        vec![DirectoryGrant { host_path: state.path().to_path_buf(), guest_path: "/state".into(), read_only: false }];
    let report = conformance::run(marker.clone(), marker_spec.clone()).await;
    assert!(report.passed(), "{report:#?}");

    let monitor = Monitor::new("test-node");
    let handle = monitor.open(marker.clone(), marker_spec).await.expect("opens");
    handle.online(&context()).await.expect("online");
    let on_host = state.path().join("web.online");
    assert_eq!(std::fs::read_to_string(&on_host).expect("the marker is on the host"), "web");
    std::fs::write(&on_host, "someone else").expect("tamper");
    let health = handle.is_alive(steward_monitor::bindings::CheckLevel::Thorough).await.expect("probe");
    assert!(!health.alive && health.reason.contains("someone else"), "{health:?}");
    handle.offline(&context()).await.expect("offline");
    assert!(!on_host.exists(), "offline removes the marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_marker_without_a_grant_cannot_go_online() {
    let marker = plugin("file_marker").await;
    let monitor = Monitor::new("test-node");
    let handle =
        monitor.open(marker.clone(), spec("web", &marker, &[("path", "/state/web.online")])).await.expect("opens");
    let error = handle.online(&context()).await.expect_err("no directory was granted");
    assert_eq!(error.kind(), FailureKind::Plugin, "{error}");
    assert!(error.to_string().contains("/state/web.online"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_are_checked_by_schema_then_by_the_plugin() {
    let app = plugin("generic_app").await;
    let error = app.validate("app", &[]).await.expect_err("program is required").to_string();
    assert!(error.contains("resource `app`") && error.contains("program: required property is missing"), "{error}");
    let bad_kind = [("program".to_string(), "/bin/sleep".to_string()), ("grace-ms".to_string(), "soon".to_string())];
    let error = app.validate("app", &bad_kind).await.expect_err("grace-ms is an integer").to_string();
    assert!(error.contains("grace-ms: `soon` is not an integer"), "{error}");
    let relative = [("program".to_string(), "sleep".to_string())];
    let error = app.validate("app", &relative).await.expect_err("the plugin wants an absolute path").to_string();
    assert!(error.contains("program"), "{error}");
    let unknown = [("program".to_string(), "/bin/sleep".to_string()), ("colour".to_string(), "red".to_string())];
    let error = app.validate("app", &unknown).await.expect_err("unknown property").to_string();
    assert!(error.contains("colour: unknown property"), "{error}");
    app.validate("app", &[("program".to_string(), "/bin/sleep".to_string())]).await.expect("valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_load_comes_from_the_compile_cache() {
    let runtime = steward_tests::runtime();
    let path = steward_tests::guest_wasm("dummy");
    steward_monitor::plugin::Plugin::load(&runtime, &path).await.expect("loads");
    let again = steward_monitor::plugin::Plugin::load(&runtime, &path).await.expect("loads again");
    assert!(!again.load_info().compiled, "the second load reads the cached compiled form");
}

/// `sloppy` breaks one rule at a time; each break fails its own step with a
/// message that tells the author what to change, and only that step
/// (besides `metadata`, which is always flawed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_names_each_broken_rule() {
    let sloppy = plugin("sloppy").await;
    let cases = [
        ("online-twice", "online-again", "online must be idempotent"),
        ("alive-after-offline", "looks-alive", "looks-alive must be false once offline succeeded"),
        ("notify", "notify", "notify must accept every event kind"),
        ("terminate", "terminate", "terminate must take the resource offline"),
    ];
    for (rule, step, message) in cases {
        let report = conformance::run(sloppy.clone(), spec("s", &sloppy, &[("break", rule)])).await;
        let failed: Vec<&str> = report.steps.iter().filter(|s| !s.passed).map(|s| s.step).collect();
        assert_eq!(failed, ["metadata", step], "{rule}: {report:#?}");
        let failure = report.steps.iter().find(|s| !s.passed && s.step == step).expect("the failed step");
        assert!(failure.detail.contains(message), "{rule}: {}", failure.detail);
    }
    let lax = plugin("lax_validate").await;
    let report = conformance::run(lax.clone(), spec("l", &lax, &[("needed", "x")])).await;
    let failed: Vec<&StepReport> = report.steps.iter().filter(|s| !s.passed).collect();
    assert_eq!(failed.len(), 1, "{report:#?}");
    assert_eq!(failed[0].step, "validate-rejects-missing");
    assert!(
        failed[0].detail.contains("validate accepted properties without required property `needed`"),
        "{report:#?}"
    );

    let report = conformance::run(sloppy.clone(), spec("s", &sloppy, &[])).await;
    let metadata = &report.step("metadata")[0];
    for flaw in ["version `one`", "description is empty", "property name `Loud`"] {
        assert!(metadata.detail.contains(flaw), "{flaw}: {}", metadata.detail);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_holding_only_the_magic_is_truncated() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let path = scratch.path().join("cut.wasm");
    std::fs::write(&path, b"\0asm").expect("write");
    let error =
        steward_monitor::plugin::Plugin::load(&steward_tests::runtime(), &path).await.expect_err("4 bytes").to_string();
    assert!(error.contains(&path.display().to_string()), "the file is named: {error}");
    assert!(error.contains("truncated") && error.contains("4 bytes"), "{error}");
    assert!(!error.contains("no `\\0asm` header"), "it has the header: {error}");
}

/// `future-contract` is a plugin built against `steward:resource@0.2.0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_another_contract_version_is_told_which() {
    let path = steward_tests::guest_wasm("future_contract");
    let error =
        steward_monitor::plugin::Plugin::load(&steward_tests::runtime(), &path).await.expect_err("0.2.0").to_string();
    assert!(error.contains(&path.display().to_string()), "the file is named: {error}");
    let host_version = steward_monitor::plugin::CONTRACT_VERSION;
    assert_eq!(host_version, "0.1.0", "the test's fixture expects this host contract");
    assert!(error.contains("built for contract 0.2.0, this host speaks 0.1.0"), "{error}");
}
