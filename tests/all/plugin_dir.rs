//! The live plugin directory of a running daemon: a dropped file becomes a
//! type a resource added by `steward reload` can use; a new version of a
//! type switches a resource only at its next online or on `steward plugin
//! upgrade`; every kind of bad file is reported and changes nothing else; a
//! half-written file is not picked up; and a second start reuses the
//! compile cache.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use steward_tests::daemon::Daemon;
use steward_tests::{eventually, guest_wasm};

/// How long a dropped file may take to be noticed, checked and compiled.
const PICKUP: Duration = Duration::from_secs(60);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The plugin list's entry for file `name`.
async fn plugin_entry(daemon: &Daemon, name: &str) -> Option<Value> {
    let plugins = daemon.get("/v1/plugins").await;
    plugins.as_array()?.iter().find(|p| p["file"].as_str().is_some_and(|f| f.ends_with(&format!("/{name}")))).cloned()
}

/// Waits until the entry for `name` satisfies `condition`; returns it.
async fn wait_entry(daemon: &Daemon, name: &str, condition: impl Fn(&Value) -> bool) -> Value {
    let mut last = None;
    let found = eventually(PICKUP, async || {
        last = plugin_entry(daemon, name).await;
        last.as_ref().is_some_and(&condition)
    })
    .await;
    assert!(found, "plugin entry for {name} never matched; last: {last:?}\nlog: {}", daemon.log());
    last.unwrap_or_default()
}

/// The same component with one more custom section: a new version with
/// another hash, as a rebuild would give.
fn another_version(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"steward-test-version";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(tag.as_bytes());
    assert!(section.len() < 128, "one LEB128 byte of size");
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(section.len() as u8);
    out.extend(section);
    out
}

/// Publishes `bytes` as `dir/name` the way installers do: written beside
/// it under a hidden name, then renamed into place.
fn publish(dir: &Path, name: &str, bytes: &[u8]) {
    let hidden = dir.join(format!(".{name}.partial"));
    std::fs::write(&hidden, bytes).expect("write the new version");
    std::fs::rename(&hidden, dir.join(name)).expect("rename it into place");
}

async fn metric(daemon: &Daemon, family: &str) -> u64 {
    let value = daemon.metric(&format!("{family} ")).await;
    value.unwrap_or_else(|| panic!("no {family} in the metrics")) as u64
}

const TICKING: &str = r#"
[node]
name = "node-p"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "tick"
type = "dummy"
looks_alive_interval = "50ms"

[[group]]
name = "base"
resources = ["tick"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_plugin_becomes_a_type_that_a_reloaded_resource_uses() {
    let daemon = Daemon::start(TICKING, &["dummy"]).await;
    daemon.wait_group("base", "online", Duration::from_secs(20)).await;
    let plugins = daemon.path("plugins");
    // A plain copy, as an operator would make it.
    std::fs::copy(guest_wasm("file_marker"), plugins.join("file_marker.wasm")).expect("drop the plugin");
    let entry = wait_entry(&daemon, "file_marker.wasm", |e| e["type"] == "file-marker").await;
    assert!(entry.get("error").is_none(), "{entry}");
    let listed = daemon.cli(&["plugin", "list"]);
    assert!(text(&listed.stdout).contains("file-marker"), "{}", text(&listed.stdout));

    let state = daemon.path("state");
    let late = format!(
        r#"
[[resource]]
name = "marker"
type = "file-marker"
properties = {{ path = "/state/marker" }}
grants = {{ directories = [{{ host = "{}", guest = "/state" }}] }}

[[group]]
name = "late"
resources = ["marker"]
"#,
        state.display()
    );
    let config = daemon.path("steward.toml");
    let mut file = std::fs::OpenOptions::new().append(true).open(&config).expect("config");
    file.write_all(late.as_bytes()).expect("append the new group");
    drop(file);
    let reloaded = daemon.cli(&["reload"]);
    assert!(reloaded.status.success(), "{}{}", text(&reloaded.stdout), text(&reloaded.stderr));
    assert!(text(&reloaded.stdout).contains("added groups: late"), "{}", text(&reloaded.stdout));
    daemon.wait_group("late", "online", Duration::from_secs(20)).await;
    assert!(state.join("marker").exists(), "the new type's resource runs");
    assert_eq!(daemon.group_state("base").await, "online", "the running group is untouched");

    // A reload that names a missing type changes nothing and says why.
    let mut file = std::fs::OpenOptions::new().append(true).open(&config).expect("config");
    file.write_all(b"\n[[resource]]\nname = \"ghost\"\ntype = \"no-such-type\"\n\n[[group]]\nname = \"ghosts\"\nresources = [\"ghost\"]\n")
        .expect("append");
    drop(file);
    let refused = daemon.cli(&["reload"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("ghost") && stderr.contains("no-such-type") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
}

const UPGRADABLE: &str = r#"
[node]
name = "node-u"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "app"
type = "generic-app"
properties = { program = "{sleep}", args = ["3600"] }
grants = { programs = ["{sleep}"] }
looks_alive_interval = "100ms"

[[resource]]
name = "app2"
type = "generic-app"
properties = { program = "{sleep}", args = ["3600"] }
grants = { programs = ["{sleep}"] }

[[group]]
name = "apps"
resources = ["app"]

[[group]]
name = "later"
resources = ["app2"]
autostart = false
"#;

async fn running_hash(daemon: &Daemon, resource: &str) -> String {
    daemon.get(&format!("/v1/resources/{resource}")).await["plugin_hash"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_switches_a_resource_only_at_its_next_online_or_on_upgrade() {
    let sleep = std::fs::canonicalize("/bin/sleep").expect("a sleep program");
    let config = UPGRADABLE.replace("{sleep}", &sleep.display().to_string());
    let daemon = Daemon::start(&config, &["generic_app"]).await;
    daemon.wait_group("apps", "online", Duration::from_secs(20)).await;
    let first = running_hash(&daemon, "app").await;
    let pid = daemon.program_pid("app").await;
    assert_eq!(first.len(), 64, "a sha256: {first}");

    let new = another_version(&std::fs::read(guest_wasm("generic_app")).expect("generic_app.wasm"), "v2");
    publish(&daemon.path("plugins"), "generic_app.wasm", &new);
    let entry = wait_entry(&daemon, "generic_app.wasm", |e| e["hash"].as_str().is_some_and(|h| h != first)).await;
    let second = entry["hash"].as_str().unwrap_or_default().to_string();

    // Loaded, but no running resource is switched behind the operator's back.
    let probes = daemon.probes("app").await;
    assert!(eventually(Duration::from_secs(10), async || daemon.probes("app").await > probes + 3).await);
    assert_eq!(running_hash(&daemon, "app").await, first);

    // A resource coming online takes the new version.
    let online = daemon.cli(&["online", "later"]);
    assert!(online.status.success(), "{}", text(&online.stderr));
    daemon.wait_group("later", "online", Duration::from_secs(20)).await;
    assert_eq!(running_hash(&daemon, "app2").await, second);

    // The operator switches the online one: same program, new version, no bounce.
    let upgraded = daemon.cli(&["plugin", "upgrade", "generic-app"]);
    let stdout = text(&upgraded.stdout);
    assert!(upgraded.status.success(), "{stdout}{}", text(&upgraded.stderr));
    assert!(stdout.contains("switching now: app") && stdout.contains("already on it: app2"), "{stdout}");
    assert!(eventually(Duration::from_secs(20), async || running_hash(&daemon, "app").await == second).await);
    assert_eq!(daemon.program_pid("app").await, pid, "the program kept running through the switch");
    let events = daemon.follow_events(Duration::from_secs(10), |e| e["kind"] == "plugin-upgraded").await;
    assert!(events.iter().any(|e| e["kind"] == "plugin-upgraded" && e["resource"] == "app"), "{events:#?}");
    let probes = daemon.probes("app").await;
    assert!(
        eventually(Duration::from_secs(10), async || daemon.probes("app").await > probes + 3).await,
        "probed again"
    );
    assert_eq!(daemon.state("app").await, "online");
    assert_eq!(daemon.get("/v1/resources/app").await["restarts_total"], 0);

    let unknown = daemon.cli(&["plugin", "upgrade", "no-such-type"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("no plugin of type `no-such-type`"), "{}", text(&unknown.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_file_is_reported_and_the_daemon_keeps_serving() {
    let mut daemon = Daemon::start(TICKING, &["dummy"]).await;
    daemon.wait_group("base", "online", Duration::from_secs(20)).await;
    let plugins = daemon.path("plugins");
    let dummy = std::fs::read(guest_wasm("dummy")).expect("dummy.wasm");
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("empty.wasm", Vec::new(), "the file is empty"),
        ("notes.wasm", b"not wasm at all\n".to_vec(), "not a WebAssembly file"),
        ("core.wasm", b"\0asm\x01\0\0\0".to_vec(), "a core WebAssembly module, not a component"),
        ("truncated.wasm", dummy[..dummy.len() / 2].to_vec(), "malformed or truncated component"),
        ("other-world.wasm", std::fs::read(guest_wasm("other_world")).expect("other_world"), "not a Steward plugin"),
        (
            "broken-metadata.wasm",
            std::fs::read(guest_wasm("broken_metadata")).expect("broken_metadata"),
            "its `metadata` call failed",
        ),
    ];
    for (name, bytes, expected) in &cases {
        std::fs::write(plugins.join(name), bytes).expect("drop the bad file");
        let entry = wait_entry(&daemon, name, |e| e.get("error").is_some()).await;
        assert!(entry["error"].as_str().unwrap_or_default().contains(expected), "{name}: {entry}");
    }
    let listed = text(&daemon.cli(&["plugin", "list"]).stdout);
    for (name, _, expected) in &cases {
        let line = listed.lines().find(|l| l.contains(name)).unwrap_or_default();
        assert!(line.contains("ERROR") && line.contains(expected), "{name} in `plugin list`: {listed}");
        assert!(daemon.log().contains(name), "{name} is named in the log");
    }

    // A bad replacement of a good file keeps the good version serving.
    std::fs::write(plugins.join("dummy.wasm"), &dummy[..dummy.len() / 3]).expect("truncate dummy.wasm");
    let entry = wait_entry(&daemon, "dummy.wasm", |e| e.get("error").is_some()).await;
    assert_eq!(entry["type"], "dummy", "the loaded version still serves: {entry}");
    let upgrade = text(&daemon.cli(&["plugin", "upgrade", "dummy"]).stdout);
    assert!(upgrade.contains("already on it: tick"), "{upgrade}");

    let probes = daemon.probes("tick").await;
    assert!(eventually(Duration::from_secs(10), async || daemon.probes("tick").await > probes + 5).await);
    assert!(daemon.running());
    assert_eq!(daemon.state("tick").await, "online");
    assert!(daemon.events().await.iter().any(|e| e["kind"] == "plugin-rejected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_file_is_not_picked_up_until_complete_and_removal_is_seen() {
    let daemon = Daemon::start(TICKING, &["dummy"]).await;
    daemon.wait_group("base", "online", Duration::from_secs(20)).await;
    let bytes = std::fs::read(guest_wasm("file_marker")).expect("file_marker.wasm");
    let path = daemon.path("plugins").join("slow.wasm");
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(&bytes[..bytes.len() / 2]).expect("first half");
    file.sync_all().expect("sync");
    // Well past the settling time: the writer still has it open.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(plugin_entry(&daemon, "slow.wasm").await, None, "a half-written file was picked up");
    file.write_all(&bytes[bytes.len() / 2..]).expect("second half");
    drop(file);
    let entry = wait_entry(&daemon, "slow.wasm", |e| e["type"] == "file-marker").await;
    assert!(entry.get("error").is_none(), "{entry}");

    std::fs::remove_file(&path).expect("remove");
    assert!(eventually(PICKUP, async || plugin_entry(&daemon, "slow.wasm").await.is_none()).await);
    let events = daemon.follow_events(Duration::from_secs(10), |e| e["kind"] == "plugin-removed").await;
    assert!(events.iter().any(|e| e["kind"] == "plugin-removed"), "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_loads_from_the_compile_cache_and_drops_stale_entries() {
    let mut daemon = Daemon::start(TICKING, &["dummy", "file_marker"]).await;
    daemon.wait_group("base", "online", Duration::from_secs(20)).await;
    assert_eq!(metric(&daemon, "steward_components_compiled_total").await, 2, "a fresh data directory compiles");
    assert!(daemon.terminate().success());
    let cache = daemon.path("data/compile-cache");
    std::fs::write(cache.join("0000stale.cwasm"), b"left by an older engine").expect("stale entry");

    daemon.spawn().await;
    daemon.wait_group("base", "online", Duration::from_secs(20)).await;
    assert_eq!(metric(&daemon, "steward_components_compiled_total").await, 0, "no compile on the second start");
    assert_eq!(metric(&daemon, "steward_components_cached_total").await, 2);
    assert!(!cache.join("0000stale.cwasm").exists(), "the stale entry was dropped");
    assert!(daemon.log().contains("compiled=false"), "the log says the cache was used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_plugin_serves_its_running_resources_until_they_go_offline() {
    let daemon = Daemon::start(TICKING, &["dummy"]).await;
    daemon.wait_group("base", "online", Duration::from_secs(20)).await;
    std::fs::remove_file(daemon.path("plugins/dummy.wasm")).expect("remove the plugin");
    let events = daemon.follow_events(PICKUP, |e| e["kind"] == "plugin-removed").await;
    let removed = events.iter().find(|e| e["kind"] == "plugin-removed").unwrap_or_else(|| panic!("{events:#?}"));
    assert!(removed["reason"].as_str().unwrap_or_default().contains("1 online resource(s) keep running"), "{removed}");
    let probes = daemon.probes("tick").await;
    assert!(eventually(Duration::from_secs(10), async || daemon.probes("tick").await > probes + 5).await);
    assert_eq!(daemon.state("tick").await, "online");

    assert!(daemon.cli(&["offline", "base"]).status.success());
    daemon.wait_group("base", "offline", Duration::from_secs(20)).await;
    assert!(daemon.cli(&["online", "base"]).status.success());
    let refused = eventually(Duration::from_secs(20), async || {
        let tick = daemon.get("/v1/resources/tick").await;
        tick["reason"].as_str().unwrap_or_default().contains("was removed from")
    })
    .await;
    assert!(refused, "{}", daemon.status_text().await);
    assert_ne!(daemon.state("tick").await, "online");
}

/// A node whose one resource is of a type that takes seconds to compile.
const SLOW_TO_LOAD: &str = r#"
[node]
name = "node-slow"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "py"
type = "python-marker"
properties = { path = "/state/py.online" }
grants = { directories = [{ host = "{dir}/state", guest = "/state" }] }

[[group]]
name = "slow"
resources = ["py"]
"#;

/// The daemon serves its API while its first plugins compile, each
/// resource shown waiting for its type; a plugin published with a rename
/// and a truncated file dropped during that time are both seen (the
/// directory is watched before it is scanned), loaded or rejected with the
/// reason, and logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_published_while_the_daemon_starts_are_not_lost() {
    let mut daemon = Daemon::prepare(SLOW_TO_LOAD, &[steward_tests::example_wasm("python_marker.wasm")]);
    daemon.launch();
    // The API answers long before the Python component is compiled.
    let mut status = Value::Null;
    let answered = eventually(Duration::from_secs(5), async || {
        match daemon.client().get(daemon.url("/v1/status")).send().await {
            Ok(response) => status = response.json().await.unwrap_or_default(),
            Err(_) => return false,
        }
        true
    })
    .await;
    assert!(answered, "the API did not answer within 5 s of the start: {}", daemon.log());
    assert_eq!(status["phase"], "loading-plugins", "{status}");
    let py = status["resources"].as_array().and_then(|r| r.first()).cloned().unwrap_or_default();
    assert!(py["reason"].as_str().is_some_and(|r| r.contains("waiting for its type `python-marker`")), "{status}");
    let shown = daemon.cli(&["status"]);
    assert!(text(&shown.stdout).contains("(loading-plugins)"), "{}", text(&shown.stdout));

    let plugins = daemon.path("plugins");
    publish(&plugins, "dummy.wasm", &std::fs::read(guest_wasm("dummy")).expect("dummy.wasm"));
    let dummy = std::fs::read(guest_wasm("dummy")).expect("dummy.wasm");
    std::fs::write(plugins.join("broken.wasm"), &dummy[..dummy.len() / 3]).expect("drop a truncated file");

    daemon.wait_running().await;
    daemon.wait_group("slow", "online", Duration::from_secs(60)).await;
    let entry = wait_entry(&daemon, "dummy.wasm", |e| e["type"] == "dummy").await;
    assert!(entry.get("error").is_none(), "{entry}");
    let broken = wait_entry(&daemon, "broken.wasm", |e| e.get("error").is_some()).await;
    assert!(broken["error"].as_str().is_some_and(|e| e.contains("truncated")), "{broken}");
    let log = daemon.log();
    assert!(log.lines().any(|l| l.contains("dummy.wasm") && l.contains("plugin loaded")), "{log}");
    assert!(log.lines().any(|l| l.contains("broken.wasm") && l.contains("rejected")), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_replaces_a_changed_group_keeps_an_offline_one_offline_and_retunes_in_place() {
    let state = tempfile::tempdir().expect("a state directory");
    let node = |marker: &str, interval: &str, threshold: u32| {
        format!(
            r#"
[node]
name = "node-r"
plugin_dir = "plugins"
data_dir = "data"
api = "{{api}}"

[[resource]]
name = "marker"
type = "file-marker"
properties = {{ path = "/state/{marker}" }}
grants = {{ directories = [{{ host = "{}", guest = "/state" }}] }}

[[resource]]
name = "q"
type = "dummy"
looks_alive_interval = "{interval}"

[[resource]]
name = "still"
type = "dummy"

[[group]]
name = "m"
resources = ["marker"]

[[group]]
name = "quiet"
resources = ["q"]

[[group]]
name = "same"
resources = ["still"]
policy = {{ restart_threshold = {threshold} }}
"#,
            state.path().display()
        )
    };
    let daemon = Daemon::start(&node("one", "1s", 3), &["dummy", "file_marker"]).await;
    for group in ["m", "quiet", "same"] {
        daemon.wait_group(group, "online", Duration::from_secs(20)).await;
    }
    assert!(daemon.cli(&["offline", "quiet"]).status.success());
    daemon.wait_group("quiet", "offline", Duration::from_secs(20)).await;
    let still_restarts = daemon.get("/v1/resources/still").await["restarts"].clone();

    // The marker's property and q's probe interval change; `same` gets
    // another policy only.
    let config = daemon.path("steward.toml");
    let current = std::fs::read_to_string(&config).expect("config");
    let api_line = current.lines().find(|line| line.starts_with("api")).expect("an api line").to_string();
    let tokens_line = current.lines().find(|line| line.starts_with("api_tokens")).expect("a tokens line").to_string();
    let changed = node("two", "2s", 5).replace("api = \"{api}\"", &format!("{api_line}\n{tokens_line}"));
    std::fs::write(&config, changed).expect("rewrite the config");
    let reloaded = daemon.cli(&["reload"]);
    let said = text(&reloaded.stdout);
    assert!(reloaded.status.success(), "{said}{}", text(&reloaded.stderr));
    assert!(said.contains("replacing groups (offline, then as now defined): m, quiet"), "{said}");
    assert!(said.contains("new settings, kept running: same"), "{said}");

    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !state.path().join("two").exists() {
        assert!(std::time::Instant::now() < until, "m did not come back with its new path: {}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!state.path().join("one").exists(), "the old definition went offline first");
    daemon.wait_group("m", "online", Duration::from_secs(20)).await;
    let events = daemon.events().await;
    assert!(
        events.iter().any(|e| e["kind"] == "group-removed"
            && e["group"] == "quiet"
            && e["reason"].as_str().is_some_and(|r| r.contains("defined differently"))),
        "{events:#?}"
    );
    // quiet is back in the node, with its new interval, and still offline
    // as its operator left it; `same` kept running.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while daemon.get("/v1/groups").await.as_array().is_none_or(|groups| groups.len() != 3) {
        assert!(std::time::Instant::now() < until, "quiet was not added again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(daemon.group_state("quiet").await, "offline", "the operator's offline holds");
    assert_eq!(daemon.group_state("same").await, "online");
    assert_eq!(daemon.get("/v1/resources/still").await["restarts"], still_restarts);
    assert!(
        !events.iter().any(|e| e["group"] == "same" && e["kind"] == "group-removed"),
        "a group with other settings only is not replaced: {events:#?}"
    );
}
