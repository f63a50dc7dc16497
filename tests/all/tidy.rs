//! Keeps the codebase's conventions true: every module of the host and the
//! SDK opens with a `//!` doc saying what it owns.
//! The configuration reference, `docs/configuration.md`, lists every key
//! the parser knows, each with an example the parser accepts. The SDK's
//! standalone manifest repeats the workspace's values.

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

/// `docs/configuration.md` is the reference of every configuration key: each
/// key its tables list is accepted by the parser with the example the row
/// gives, each key marked required is, and each key the parser knows is
/// listed. The parser's own keys come from its error for an unknown key
/// (serde's "expected one of ..."), so no list is kept by hand here.
#[test]
fn the_configuration_reference_lists_every_key_the_parser_knows() {
    let doc = ConfigDoc::read();
    let scratch = tempfile::tempdir().expect("a scratch directory");

    // Each table the parser reads, found through its error for an unknown key.
    for (section, _) in TABLES {
        let known = parser_keys(scratch.path(), &doc.file(section, Change::Unknown), None);
        let listed: Vec<&str> = doc.rows(section).iter().map(|row| row.key.as_str()).collect();
        let missing: Vec<&String> = known.iter().filter(|key| !listed.contains(&key.as_str())).collect();
        let unknown: Vec<&&str> = listed.iter().filter(|key| !known.iter().any(|k| k == *key)).collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md, `{section}`: keys the parser knows but the doc omits: {missing:?}"
        );
        assert!(
            unknown.is_empty(),
            "docs/configuration.md, `{section}`: keys the doc lists but the parser rejects: {unknown:?}"
        );
    }
    // The tables of a file: each has a section of its own.
    let top =
        parser_keys(scratch.path(), &format!("steward_unknown_key = 0\n{}", doc.file("node", Change::None)), None);
    let included = parser_keys(scratch.path(), &doc.file("node", Change::None), Some("steward_unknown_key = 0\n"));
    for key in top.iter().chain(&included) {
        assert!(
            doc.sections.iter().any(|(name, _)| name == key),
            "docs/configuration.md has no section for the parser's table `{key}` (a heading `[{key}]` or `[[{key}]]`)"
        );
    }
    assert!(!included.iter().any(|key| key == "node"), "an included file takes no [node]");

    for (section, _) in TABLES {
        for row in doc.rows(section) {
            // Each key, with its example, is accepted.
            let text = doc.file(section, Change::Add(&row.key));
            if let Err(error) = load(scratch.path(), &text, None) {
                panic!(
                    "docs/configuration.md, `{section}`: `{} = {}` is rejected: {error}\n{text}",
                    row.key, row.example
                );
            }
            // A key marked required is: a file without it is refused.
            if row.required() {
                let text = doc.file(section, Change::Omit(&row.key));
                let error = load(scratch.path(), &text, None).err().unwrap_or_else(|| {
                    panic!(
                        "docs/configuration.md, `{section}`: `{}` is marked required, but a file without it loads",
                        row.key
                    )
                });
                assert!(
                    error.contains(&format!("missing field `{}`", row.key)),
                    "docs/configuration.md, `{section}`: leaving out `{}` gave: {error}",
                    row.key
                );
            }
            // A nested table is a section of its own, checked key by key.
            if row.kind == "table" || row.kind == "list of tables" {
                assert!(
                    TABLES.iter().any(|(name, _)| *name == row.key),
                    "`{section}.{}` is a table: give it a section in docs/configuration.md and a place in TABLES",
                    row.key
                );
            }
        }
    }
}

/// Each table of the configuration and where its keys are written: a
/// top-level table, or inline in the table of its parent.
const TABLES: [(&str, Option<&str>); 6] = [
    ("node", None),
    ("resource", None),
    ("grants", Some("resource")),
    ("directories", Some("grants")),
    ("group", None),
    ("policy", Some("group")),
];

/// What a probe file does to the table under test.
#[derive(Clone, Copy)]
enum Change<'a> {
    /// Only the required keys.
    None,
    /// The required keys and this one.
    Add(&'a str),
    /// The required keys but this one.
    Omit(&'a str),
    /// The required keys and a key no table knows.
    Unknown,
}

struct Row {
    key: String,
    kind: String,
    default: String,
    example: String,
}

impl Row {
    fn required(&self) -> bool {
        self.default == "required"
    }
}

/// The tables of `docs/configuration.md`, by section (the name in the
/// first backticks of a heading, `[node]` read as `node`).
struct ConfigDoc {
    sections: Vec<(String, Vec<Row>)>,
}

impl ConfigDoc {
    fn read() -> ConfigDoc {
        let path = steward_tests::workspace_root().join("docs/configuration.md");
        let text = std::fs::read_to_string(&path).expect("docs/configuration.md is readable");
        let mut sections: Vec<(String, Vec<Row>)> = Vec::new();
        let mut in_code = false;
        for line in text.lines() {
            if line.starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if in_code {
                continue;
            }
            if line.starts_with('#') {
                if let Some(name) = line.split('`').nth(1) {
                    sections.push((name.trim_matches(|c| c == '[' || c == ']').to_string(), Vec::new()));
                }
            } else if line.starts_with("| `")
                && let Some((_, rows)) = sections.last_mut()
            {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                assert!(cells.len() >= 6, "a row of key, type, default, example, meaning: {line}");
                let unquote = |cell: &str| cell.trim_matches('`').to_string();
                rows.push(Row {
                    key: unquote(cells[1]),
                    kind: cells[2].to_string(),
                    default: cells[3].to_string(),
                    example: unquote(cells[4]),
                });
            }
        }
        ConfigDoc { sections }
    }

    fn rows(&self, section: &str) -> &[Row] {
        let rows = self.sections.iter().find(|(name, _)| name == section).map(|(_, rows)| rows.as_slice());
        let rows = rows.unwrap_or_else(|| panic!("docs/configuration.md has no section `{section}`"));
        assert!(!rows.is_empty(), "docs/configuration.md's section `{section}` has no table of keys");
        rows
    }

    /// `key = value` for the required keys of `section`, changed by
    /// `change` when `section` is `target`, and the nested tables of
    /// `section` that lead to `target`.
    fn assignments(&self, section: &str, target: &str, change: Change) -> Vec<String> {
        let mut lines = Vec::new();
        for row in self.rows(section) {
            let wanted = match change {
                _ if section != target => row.required(),
                Change::Add(key) => row.required() || row.key == key,
                Change::Omit(key) => row.required() && row.key != key,
                Change::None | Change::Unknown => row.required(),
            };
            if wanted {
                lines.push(format!("{} = {}", row.key, row.example));
            }
        }
        if section == target && matches!(change, Change::Unknown) {
            lines.push("steward_unknown_key = 0".to_string());
        }
        for (child, parent) in TABLES {
            if parent == Some(section) && self.leads_to(child, target) {
                let inner = self.assignments(child, target, change).join(", ");
                // `directories` is a list of tables; the others are tables.
                let value = if child == "directories" { format!("[{{ {inner} }}]") } else { format!("{{ {inner} }}") };
                lines.push(format!("{child} = {value}"));
            }
        }
        lines
    }

    /// Whether `target` is `section` or nested in it.
    fn leads_to(&self, section: &str, target: &str) -> bool {
        let mut at = Some(target);
        while let Some(name) = at {
            if name == section {
                return true;
            }
            at = TABLES.iter().find(|(child, _)| *child == name).and_then(|(_, parent)| *parent);
        }
        false
    }

    /// A node file whose table `target` is changed by `change`, every other
    /// table holding only its required keys. A second resource, `marker`,
    /// is there for the doc's examples that name it.
    fn file(&self, target: &str, change: Change) -> String {
        let table = |section: &str| self.assignments(section, target, change).join("\n");
        format!(
            "[node]\n{}\n\n[[resource]]\n{}\n\n[[resource]]\nname = \"marker\"\ntype = \"file-marker\"\n\n[[group]]\n{}\n",
            table("node"),
            table("resource"),
            table("group")
        )
    }
}

/// Loads `text` as a node's file in `dir` (with a `resources.d` directory for
/// the `include` example, holding `included` when given).
fn load(dir: &Path, text: &str, included: Option<&str>) -> Result<steward::config::NodeConfig, String> {
    let includes = dir.join("resources.d");
    std::fs::create_dir_all(&includes).expect("a directory to include");
    let include_file = includes.join("more.toml");
    match included {
        Some(included) => std::fs::write(&include_file, included).expect("an included file"),
        None => {
            let _ = std::fs::remove_file(&include_file);
        }
    }
    let file = dir.join("steward.toml");
    std::fs::write(&file, text).expect("a node file");
    steward::config::load(&file).map_err(|error| error.to_string())
}

/// The keys the parser accepts where `text` (or `included`, read through
/// `include`) has its unknown key, from the parser's error.
fn parser_keys(dir: &Path, text: &str, included: Option<&str>) -> Vec<String> {
    let text = match included {
        Some(_) => text.replacen("[node]\n", "[node]\ninclude = \"resources.d\"\n", 1),
        None => text.to_string(),
    };
    let error = load(dir, &text, included).err().unwrap_or_else(|| panic!("an unknown key is refused:\n{text}"));
    let (_, expected) = error
        .split_once("unknown field `steward_unknown_key`, expected")
        .unwrap_or_else(|| panic!("the parser's error lists the keys it expects: {error}\n{text}"));
    expected.split('`').skip(1).step_by(2).map(str::to_string).collect()
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
