//! Keeps the codebase's conventions true: every module of the host and the
//! SDK opens with a `//!` doc saying what it owns, and the host's crates keep
//! the layer rules (which crate may depend on which).
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
    for dir in ["host", "sdk/src", "plugins", "tests/src", "tests/all", "tests/fixtures", "xtask/src"] {
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
    // The files `[cluster] tls` names are read with the node's file: its
    // examples are there, each with the PEM block its key asks for.
    for row in doc.rows("tls").iter().chain(doc.rows("api_tls")) {
        let block = if row.key == "key" { "PRIVATE KEY" } else { "CERTIFICATE" };
        let pem = format!("-----BEGIN {block}-----\nAA==\n-----END {block}-----\n");
        std::fs::write(scratch.path().join(row.example.trim_matches('"')), pem).expect("a PEM file");
    }
    // So is the tokens file `api_tokens` names: one with no token is valid.
    let tokens = doc.rows("node").iter().find(|row| row.key == "api_tokens").expect("the api_tokens row");
    std::fs::write(scratch.path().join(tokens.example.trim_matches('"')), "").expect("a tokens file");

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
const TABLES: [(&str, Option<&str>); 9] = [
    ("node", None),
    ("api_tls", Some("node")),
    ("cluster", None),
    ("tls", Some("cluster")),
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

    /// The key this one is only given with, as its default says
    /// (`none; needs `key``): a client certificate and its key.
    fn needs(&self) -> Option<&str> {
        self.default.split_once("needs `").and_then(|(_, rest)| rest.split('`').next())
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
                Change::Add(key) => {
                    row.required()
                        || row.key == key
                        || self.rows(section).iter().any(|added| added.key == key && added.needs() == Some(&row.key))
                }
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
    /// is there for the doc's examples that name it. `[cluster]` is there
    /// only when it or a table in it is the target: a node file may leave
    /// it out.
    fn file(&self, target: &str, change: Change) -> String {
        let table = |section: &str| self.assignments(section, target, change).join("\n");
        let cluster = if self.leads_to("cluster", target) {
            let cluster = table("cluster");
            // The endpoints' example is plain http, which `tls` refuses.
            let cluster = if cluster.contains("\ntls = ") { cluster.replace("http://", "https://") } else { cluster };
            format!("[cluster]\n{cluster}\n\n")
        } else {
            String::new()
        };
        format!(
            "[node]\n{}\n\n{cluster}[[resource]]\n{}\n\n[[resource]]\nname = \"marker\"\ntype = \"file-marker\"\n\n[[group]]\n{}\n",
            table("node"),
            table("resource"),
            table("group")
        )
    }
}

/// Loads `text` as a node's file in `dir` (with a `resources.d` directory for
/// the `include` example, holding `included` when given).
fn load(dir: &Path, text: &str, included: Option<&str>) -> Result<steward_config::NodeConfig, String> {
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
    steward_config::load(&file).map_err(|error| error.to_string())
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

/// The layer rules as dependency facts, read from `cargo metadata`:
/// - the policy engine (`host/policy`) reaches nothing of the sandbox, the
///   async runtime, HTTP, the disk store or JSON;
/// - the configuration (`host/config`) reaches no sandbox, HTTP or store;
/// - only the monitor (`host/monitor`) names wasmtime and wasmtime-wasi;
/// - only the API (`host/api`) names axum, and only it and the CLI client
///   (the `steward` binary) speak HTTP;
/// - the node (`host/node`) names no wasmtime type, not even through a
///   path the monitor re-exports (its sources never say `wasmtime`);
/// - the cluster layer (`host/cluster`) reaches etcd, not the rest of the
///   host;
/// - the guest side (`sdk/`, `plugins/`) depends on nothing under `host/`.
///
/// A forbidden dependency added to a manifest fails here, naming the crate,
/// the dependency and the path to it.
#[test]
fn the_crate_graph_keeps_the_layer_rules() {
    let graph = CrateGraph::load();
    let reaches_none = |package: &str, room: &str, forbidden: &[&str], why: &str| {
        for (dependency, path) in graph.reachable(package) {
            assert!(
                !forbidden.contains(&dependency.as_str()),
                "{package} ({room}) reaches `{dependency}` through {}; {why}",
                path.join(" -> ")
            );
        }
    };
    reaches_none(
        "steward-policy",
        "host/policy",
        &["wasmtime", "wasmtime-wasi", "tokio", "axum", "reqwest", "hyper", "redb", "serde_json"],
        "the policy engine takes plain data only",
    );
    reaches_none(
        "steward-config",
        "host/config",
        &["wasmtime", "wasmtime-wasi", "axum", "reqwest", "hyper", "redb"],
        "the configuration is plain data and its checks",
    );
    reaches_none(
        "steward-cluster",
        "host/cluster",
        &["wasmtime", "wasmtime-wasi", "redb", "steward-policy", "steward-config", "steward-monitor", "steward-node"],
        "the cluster layer talks to etcd only, so it builds and tests alone",
    );
    for guest in graph.packages_under(&["sdk", "plugins"]) {
        for (dependency, path) in graph.reachable(&guest) {
            assert!(
                !graph.is_under(&dependency, "host"),
                "`{guest}` reaches `{dependency}` (under host/) through {}; guests depend on the SDK only",
                path.join(" -> ")
            );
        }
    }
    // Who may name these crates directly. The test harness (`steward-tests`)
    // is a client like the CLI.
    let rules: [(&str, &[&str]); 5] = [
        ("wasmtime", &["steward-monitor"]),
        ("wasmtime-wasi", &["steward-monitor"]),
        ("axum", &["steward-api"]),
        ("hyper", &[]),
        ("reqwest", &["steward", "steward-tests"]),
    ];
    for (dependency, allowed) in rules {
        for user in graph.direct_users(dependency) {
            assert!(
                allowed.contains(&user.as_str()),
                "`{user}` depends on `{dependency}` directly; only {allowed:?} may"
            );
        }
    }
    let root = steward_tests::workspace_root();
    for room in ["host/node/src", "host/api/src", "host/config/src", "host/policy/src", "host/cluster/src"] {
        let mut files = Vec::new();
        rust_files(&root.join(room), &mut files);
        assert!(!files.is_empty(), "the walk found {room}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a source file reads");
            // Code only: the docs may say what the crate stays clear of.
            let code = text.lines().filter(|line| !line.trim_start().starts_with("//"));
            assert!(
                !code.into_iter().any(|line| line.contains("wasmtime")),
                "{} names wasmtime; only host/monitor may (wrap what is needed in a monitor type)",
                file.display()
            );
        }
    }
}

/// The workspace's crates and their normal (not dev or build) dependencies.
struct CrateGraph {
    /// Package name by id.
    names: std::collections::HashMap<String, String>,
    /// Manifest directory (relative to the workspace) by package name, for workspace members.
    members: std::collections::HashMap<String, String>,
    /// Normal dependencies by package id.
    edges: std::collections::HashMap<String, Vec<String>>,
    /// Package id by name (the workspace's own first).
    ids: std::collections::HashMap<String, String>,
}

impl CrateGraph {
    fn load() -> CrateGraph {
        let root = steward_tests::workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // This platform's graph only: the others' crates (Windows consoles,
        // say) were never downloaded, and the rules are the same there.
        let rustc = std::process::Command::new("rustc").arg("-vV").output().expect("rustc runs");
        let host = String::from_utf8_lossy(&rustc.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("host: ").map(str::to_string))
            .expect("rustc names its host");
        let output = std::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host])
            .current_dir(&root)
            .output()
            .expect("cargo metadata runs");
        assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON");
        let mut graph = CrateGraph {
            names: Default::default(),
            members: Default::default(),
            edges: Default::default(),
            ids: Default::default(),
        };
        let root_text = format!("{}/", root.display());
        for package in metadata["packages"].as_array().into_iter().flatten() {
            let (id, name) = (text(&package["id"]), text(&package["name"]));
            graph.names.insert(id.clone(), name.clone());
            if let Some(dir) = text(&package["manifest_path"]).strip_prefix(&root_text) {
                graph
                    .members
                    .insert(name.clone(), dir.trim_end_matches("Cargo.toml").trim_end_matches('/').to_string());
                graph.ids.insert(name.clone(), id.clone());
            }
            graph.ids.entry(name).or_insert(id);
        }
        for node in metadata["resolve"]["nodes"].as_array().into_iter().flatten() {
            let normal = node["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|dep| dep["dep_kinds"].as_array().into_iter().flatten().any(|kind| kind["kind"].is_null()))
                .map(|dep| text(&dep["pkg"]))
                .collect();
            graph.edges.insert(text(&node["id"]), normal);
        }
        assert!(graph.members.contains_key("steward-policy"), "the walk found the workspace: {:?}", graph.members);
        graph
    }

    /// Every crate `package` reaches through normal dependencies, with the
    /// path to it.
    fn reachable(&self, package: &str) -> Vec<(String, Vec<String>)> {
        let Some(start) = self.ids.get(package) else { panic!("no package `{package}`") };
        let mut seen = std::collections::HashSet::from([start.clone()]);
        let mut queue = std::collections::VecDeque::from([(start.clone(), vec![package.to_string()])]);
        let mut found = Vec::new();
        while let Some((id, path)) = queue.pop_front() {
            for next in self.edges.get(&id).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    let name = self.names.get(next).cloned().unwrap_or_default();
                    let mut path = path.clone();
                    path.push(name.clone());
                    found.push((name, path.clone()));
                    queue.push_back((next.clone(), path));
                }
            }
        }
        found
    }

    /// The workspace's packages whose manifests are under any of `dirs`.
    fn packages_under(&self, dirs: &[&str]) -> Vec<String> {
        let mut found: Vec<String> =
            self.members.keys().filter(|name| dirs.iter().any(|dir| self.is_under(name, dir))).cloned().collect();
        found.sort();
        assert!(!found.is_empty(), "the walk found packages under {dirs:?}");
        found
    }

    /// Whether workspace package `name` lives under `dir`.
    fn is_under(&self, name: &str, dir: &str) -> bool {
        self.members.get(name).is_some_and(|at| at == dir || at.starts_with(&format!("{dir}/")))
    }

    /// The workspace's packages that depend on `dependency` directly.
    fn direct_users(&self, dependency: &str) -> Vec<String> {
        self.members
            .keys()
            .filter(|member| {
                let id = &self.ids[*member];
                self.edges.get(id).into_iter().flatten().any(|dep| self.names.get(dep).is_some_and(|n| n == dependency))
            })
            .cloned()
            .collect()
    }
}

fn text(value: &serde_json::Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}
