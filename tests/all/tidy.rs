//! Keeps the codebase's conventions true: every module of the host and the
//! SDK opens with a `//!` doc saying what it owns.

use std::path::Path;

fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_module_opens_with_a_module_doc() {
    let root = steward_tests::workspace_root();
    let mut files = Vec::new();
    for dir in ["host/src", "sdk/src", "plugins", "tests/src", "tests/all", "tests/fixtures", "xtask/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "the walk found the sources: {files:?}");
    let undocumented: Vec<String> = files
        .iter()
        .filter(|file| !std::fs::read_to_string(file).unwrap_or_default().trim_start().starts_with("//!"))
        .map(|file| file.display().to_string())
        .collect();
    assert!(undocumented.is_empty(), "modules without a `//!` doc: {undocumented:?}");
}

/// The SDK's manifest stands alone (`steward plugin new` writes it into
/// projects outside this workspace, where `workspace = true` would name
/// nothing), so it repeats the workspace's package fields and dependency
/// requirements; this keeps each repeated value equal to the workspace's.
#[test]
fn the_sdk_manifest_repeats_the_workspace_values() {
    let root = steward_tests::workspace_root();
    let read = |file: &str| std::fs::read_to_string(root.join(file)).unwrap_or_else(|error| panic!("{file}: {error}"));
    let workspace = read("Cargo.toml");
    let sdk = read("sdk/Cargo.toml");
    assert!(
        !sdk.lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .any(|line| line.contains("workspace = true") || line.contains(".workspace")),
        "sdk/Cargo.toml inherits from the workspace; write the values out (a generated plugin project has no such workspace)"
    );

    let workspace_package = toml_entries(&workspace, "[workspace.package]");
    let sdk_package = toml_entries(&sdk, "[package]");
    for key in ["version", "edition", "license"] {
        assert_eq!(
            sdk_package.get(key),
            workspace_package.get(key),
            "sdk/Cargo.toml's `{key}` differs from [workspace.package] in Cargo.toml; make them equal"
        );
    }
    let workspace_dependencies = toml_entries(&workspace, "[workspace.dependencies]");
    let sdk_dependencies = toml_entries(&sdk, "[dependencies]");
    assert!(!sdk_dependencies.is_empty(), "the walk found the SDK's dependencies");
    for (name, requirement) in &sdk_dependencies {
        assert_eq!(
            Some(requirement),
            workspace_dependencies.get(name),
            "sdk/Cargo.toml's `{name}` differs from [workspace.dependencies] in Cargo.toml; make them equal"
        );
    }
}

/// The one-line `key = value` entries of a manifest's `section`, values as
/// written; enough for the flat sections compared here (no TOML parser in
/// this crate).
fn toml_entries(manifest: &str, section: &str) -> std::collections::BTreeMap<String, String> {
    manifest
        .lines()
        .skip_while(|line| line.trim() != section)
        .skip(1)
        .take_while(|line| !line.trim_start().starts_with('['))
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .collect()
}
