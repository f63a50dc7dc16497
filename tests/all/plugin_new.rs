//! `steward plugin new` writes a project that builds to a component as
//! generated and passes `steward plugin check`, as a third party would run
//! them, with a `steward` installed away from the build tree; bad names and
//! existing directories are refused. The SDK it embeds packages for
//! crates.io as it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use steward_tests::{steward_binary, steward_command, workspace_root};

#[test]
fn a_new_rust_plugin_builds_and_passes_the_check() {
    // An installed `steward`: a copy of the binary run from elsewhere, with
    // nothing in its environment that points at the build tree.
    let dir = tempfile::tempdir().expect("tempdir");
    let installed = dir.path().join("bin/steward");
    std::fs::create_dir_all(dir.path().join("bin")).expect("mkdir bin");
    std::fs::copy(steward_binary(), &installed).expect("copy the steward binary");
    let project = dir.path().join("elsewhere/my-service");
    let created = Command::new(&installed)
        .args(["plugin", "new", "my-service", "--lang", "rust", "--dir"])
        .arg(&project)
        .current_dir(dir.path())
        .env_clear()
        .output()
        .expect("plugin new runs");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(project.join("README.md").is_file() && project.join("src/lib.rs").is_file());

    let written = files_under(&project);
    let build_tree = workspace_root().canonicalize().expect("workspace root").display().to_string();
    for (file, text) in &written {
        assert!(!text.contains(&build_tree), "{} names the build tree {build_tree}:\n{text}", file.display());
    }
    let manifest = &written[Path::new("Cargo.toml")];
    assert!(manifest.contains(r#"steward-sdk = { path = "steward-sdk" }"#), "{manifest}");
    // The embedded SDK is the SDK, file for file; a file of `sdk/` missing
    // here must be added to EMBEDDED_SDK in host/src/commands/plugin_new.rs.
    let sdk = files_under(&workspace_root().join("sdk"));
    let embedded = files_under(&project.join("steward-sdk"));
    for (file, text) in &sdk {
        assert!(
            embedded.get(file) == Some(text),
            "steward-sdk/{} differs from sdk/{0} or is missing: list it in EMBEDDED_SDK in host/src/commands/plugin_new.rs",
            file.display()
        );
    }
    assert_eq!(embedded.len(), sdk.len(), "the embedded SDK has files sdk/ does not");

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
    let checked = steward_command().args(["plugin", "check"]).arg(&wasm).output().expect("check runs");
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{stdout}");
    assert!(stdout.trim_end().ends_with("PASS my-service: every step passed"), "{stdout}");
}

#[test]
fn an_explicit_sdk_overrides_the_embedded_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = dir.path().join("with-sdk");
    let sdk = workspace_root().join("sdk").canonicalize().expect("sdk/");
    let created = steward_command()
        .args(["plugin", "new", "with-sdk", "--dir"])
        .arg(&project)
        .arg("--sdk")
        .arg(&sdk)
        .output()
        .expect("plugin new runs");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).expect("a Cargo.toml");
    assert!(manifest.contains(&format!(r#"steward-sdk = {{ path = "{}" }}"#, sdk.display())), "{manifest}");
    assert!(!project.join("steward-sdk").exists(), "no embedded copy beside an explicit SDK");

    let missing = steward_command()
        .args(["plugin", "new", "no-sdk", "--dir"])
        .arg(dir.path().join("no-sdk"))
        .arg("--sdk")
        .arg(dir.path().join("nowhere"))
        .output()
        .expect("plugin new runs");
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("nowhere: no Cargo.toml there"), "{stderr}");
}

#[test]
fn the_sdk_packages_for_publishing() {
    // A target directory of its own: the package is all this writes.
    // `--no-verify`: verifying builds the SDK natively from nothing (a
    // minute here, measured), while the Rust project test above already
    // builds these very files, for wasm32-wasip2, from the embedded copy.
    // `--offline`: the package's lockfile resolves from the local index.
    let target = tempfile::tempdir().expect("tempdir");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let packaged = Command::new(&cargo)
        .args(["package", "-p", "steward-sdk", "--allow-dirty", "--no-verify", "--offline"])
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target.path())
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&packaged.stderr);
    assert!(packaged.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "cargo package warns: {stderr}");
    // The contract is inside the package, not next to it.
    let listed = Command::new(&cargo)
        .args(["package", "-p", "steward-sdk", "--allow-dirty", "--list", "--offline"])
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target.path())
        .output()
        .expect("cargo runs");
    let list = String::from_utf8_lossy(&listed.stdout);
    for file in ["wit/resource.wit", "wit/types.wit", "wit/host.wit", "README.md", "src/lib.rs"] {
        assert!(list.lines().any(|line| line == file), "{file} is not in the package:\n{list}");
    }
}

#[test]
fn bad_names_and_existing_directories_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let new = |name: &str| {
        steward_command()
            .args(["plugin", "new", name, "--dir"])
            .arg(dir.path().join("out"))
            .output()
            .expect("plugin new runs")
    };
    let bad = new("My_Service");
    assert_eq!(bad.status.code(), Some(2), "a malformed name is a usage error");
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
    let created = steward_command()
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
    let checked = steward_command()
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

/// Every file under `dir` (following symlinks, as `sdk/wit` is one), by
/// path relative to `dir`, with its text.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, found: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display())).flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, found);
            } else {
                let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                found.insert(relative, text);
            }
        }
    }
    let mut found = BTreeMap::new();
    walk(dir, dir, &mut found);
    found
}
