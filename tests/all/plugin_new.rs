//! `steward plugin new` writes a project that builds to a component as
//! generated and passes `steward plugin check`, as a third party would run
//! them; bad names and existing directories are refused.

use std::process::Command;

use steward_tests::{steward_binary, workspace_root};

#[test]
fn a_new_rust_plugin_builds_and_passes_the_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = dir.path().join("my-service");
    let created = Command::new(steward_binary())
        .args(["plugin", "new", "my-service", "--lang", "rust", "--dir"])
        .arg(&project)
        .output()
        .expect("plugin new runs");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(project.join("README.md").is_file() && project.join("src/lib.rs").is_file());

    // One target directory for every run, so the SDK's dependencies build once.
    let target = workspace_root().join("target/plugin-new");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--target", "wasm32-wasip2", "--release"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo runs");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));

    let wasm = target.join("wasm32-wasip2/release/my_service.wasm");
    let checked = Command::new(steward_binary()).args(["plugin", "check"]).arg(&wasm).output().expect("check runs");
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{stdout}");
    assert!(stdout.trim_end().ends_with("PASS my-service: every step passed"), "{stdout}");
}

#[test]
fn bad_names_and_existing_directories_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let new = |name: &str| {
        Command::new(steward_binary())
            .args(["plugin", "new", name, "--dir"])
            .arg(dir.path().join("out"))
            .output()
            .expect("plugin new runs")
    };
    let bad = new("My_Service");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`My_Service` is not a valid type name"));
    std::fs::create_dir(dir.path().join("out")).expect("mkdir");
    let exists = new("fine-name");
    assert_eq!(exists.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&exists.stderr).contains("already exists"));
}

/// `plugin new --lang LANG`, its `build.sh` (which installs the toolchain),
/// then `plugin check` of what it built, with a directory granted.
fn new_marker_project_passes(lang: &str, name: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = dir.path().join(name);
    let created = Command::new(steward_binary())
        .args(["plugin", "new", name, "--lang", lang, "--dir"])
        .arg(&project)
        .output()
        .expect("plugin new runs");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let readme = std::fs::read_to_string(project.join("README.md")).expect("a README");
    assert!(
        readme.contains(name) && readme.contains("build.sh") && readme.contains("steward plugin check"),
        "{readme}"
    );
    let built = Command::new("bash").arg(project.join("build.sh")).current_dir(&project).output().expect("build runs");
    assert!(built.status.success(), "{lang}: {}", String::from_utf8_lossy(&built.stderr));
    let state = tempfile::tempdir().expect("state");
    let checked = Command::new(steward_binary())
        .args(["plugin", "check"])
        .arg(project.join("build").join(format!("{}.wasm", name.replace('-', "_"))))
        .args(["--prop", "path=/state/marker", "--grant-dir"])
        .arg(format!("{}:/state", state.path().display()))
        .output()
        .expect("check runs");
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{lang}: {stdout}");
    assert!(stdout.trim_end().ends_with(&format!("PASS {name}: every step passed")), "{stdout}");
}

#[test]
fn a_new_python_plugin_builds_and_passes_the_check() {
    new_marker_project_passes("python", "py-thing");
}

#[test]
fn a_new_javascript_plugin_builds_and_passes_the_check() {
    new_marker_project_passes("js", "js-thing");
}
