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
