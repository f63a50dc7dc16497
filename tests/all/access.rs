//! Who may use the API: a TCP listener wants a token on every request and
//! the operate role for every change, refuses state changes from another
//! origin, and names the author of each action in the event stream; the
//! Unix socket has the mode and group configured and acts for the user
//! who opened it; a bad tokens file stops the daemon, naming the file; a
//! TLS listener is trusted by the CLI only with the CA that signed it.
//! Tokens made or revoked, and a renewed certificate, count without a
//! restart.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use serde_json::Value;
use steward_tests::daemon::Daemon;

/// A node with one group `g` of one `dummy` resource `r`.
const NODE: &str = r#"
[node]
name = "node-access"
plugin_dir = "plugins"
data_dir = "data"
api = "{api}"

[[resource]]
name = "r"
type = "dummy"

[[group]]
name = "g"
resources = ["r"]
"#;

/// Every route that changes state, with a body where it takes one.
const CHANGES: &[(&str, &str)] = &[
    ("/v1/groups/g/offline", ""),
    ("/v1/groups/g/online", ""),
    ("/v1/resources/r/offline", ""),
    ("/v1/targets/g/online", ""),
    ("/v1/groups/g/move", ""),
    ("/v1/reload", ""),
    ("/v1/plugins/dummy/upgrade", ""),
    ("/v1/config", r#"{"files": [{"name": "x.toml", "text": ""}]}"#),
];

/// Every route that reads.
const READS: &[&str] = &[
    "/v1/status",
    "/v1/resources",
    "/v1/resources/r",
    "/v1/groups",
    "/v1/groups/g",
    "/v1/groups/g/why",
    "/v1/plugins",
    "/v1/workers",
    "/v1/config",
    "/v1/whoami",
    "/metrics",
];

async fn send(
    daemon: &Daemon,
    method: reqwest::Method,
    path: &str,
    body: &str,
    token: Option<&str>,
    origin: Option<&str>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, daemon.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    if !body.is_empty() {
        request = request.header("Content-Type", "application/json").body(body.to_string());
    }
    let response = request.send().await.expect("the daemon answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_wants_an_operate_token_from_the_apis_own_origin_and_reads_want_a_token() {
    let daemon = Daemon::start(NODE, &["dummy"]).await;
    daemon.wait_group("g", "online", Duration::from_secs(20)).await;
    let (operate, read) = (daemon.token("operate"), daemon.token("read"));
    let own_origin = format!("http://{}", daemon.api);
    for (path, body) in CHANGES {
        let (status, answer) = send(&daemon, reqwest::Method::POST, path, body, None, None).await;
        assert_eq!(status, 401, "POST {path} without a token: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains("token")), "{path}: {answer}");
        let (status, answer) = send(&daemon, reqwest::Method::POST, path, body, Some(&read), None).await;
        assert_eq!(status, 403, "POST {path} with a read token: {answer}");
        let evil = Some("http://evil.example");
        let (status, answer) = send(&daemon, reqwest::Method::POST, path, body, Some(&operate), evil).await;
        assert_eq!(status, 403, "POST {path} from another origin: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains("origin")), "{path}: {answer}");
        let (status, answer) = send(&daemon, reqwest::Method::POST, path, body, Some("stw_not-a-token"), None).await;
        assert_eq!(status, 401, "POST {path} with a token the node does not know: {answer}");
    }
    // A body past the limit says it is too large, not malformed.
    let huge = format!(r#"{{"files": [{{"name": "x.toml", "text": "{}"}}]}}"#, "#".repeat(3 << 20));
    let (status, answer) = send(&daemon, reqwest::Method::POST, "/v1/config", &huge, Some(&operate), None).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("2 MiB")), "{answer}");
    for path in READS {
        let (status, answer) = send(&daemon, reqwest::Method::GET, path, "", None, None).await;
        assert_eq!(status, 401, "GET {path} without a token: {answer}");
        let (status, answer) = send(&daemon, reqwest::Method::GET, path, "", Some(&read), None).await;
        assert_eq!(status, 200, "GET {path} with a read token: {answer}");
    }
    let (_, whoami) = send(&daemon, reqwest::Method::GET, "/v1/whoami", "", Some(&read), None).await;
    assert_eq!((whoami["name"].as_str(), whoami["role"].as_str()), (Some("test-reader"), Some("read")));

    // An operate token from the API's own page changes state, and the
    // event stream names it as the author.
    let (status, answer) =
        send(&daemon, reqwest::Method::POST, "/v1/groups/g/offline", "", Some(&operate), Some(&own_origin)).await;
    assert_eq!(status, 202, "{answer}");
    daemon.wait_group("g", "offline", Duration::from_secs(20)).await;
    let events = daemon.events().await;
    assert!(
        events.iter().any(|e| e["kind"] == "operator-action"
            && e["by"] == "test-operator"
            && e["reason"].as_str().is_some_and(|r| r.contains("/v1/groups/g/offline"))),
        "the event stream says who took g offline: {events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_has_its_mode_and_group_and_acts_for_the_user_who_opened_it() {
    // A group the daemon may give its socket: root may give any, another
    // user only one of its own.
    let gid = if rustix::process::geteuid().is_root() { 1 } else { rustix::process::getegid().as_raw() };
    let groups = std::fs::read_to_string("/etc/group").expect("/etc/group");
    let group = groups
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(gid)).then(|| fields[0].to_string())
        })
        .expect("a group with that id");
    let config = NODE.replace("api = \"{api}\"", &format!("api = \"{{api}}\"\nsocket_group = \"{group}\""));
    let daemon = Daemon::start(&config, &["dummy"]).await;
    let socket = daemon.socket();
    let metadata = std::fs::metadata(&socket).expect("the socket exists in the data directory");
    assert_eq!(metadata.permissions().mode() & 0o777, 0o660, "mode 0660");
    assert_eq!(metadata.gid(), gid, "the socket belongs to group `{group}`");
    daemon.wait_group("g", "online", Duration::from_secs(20)).await;
    // No token on the socket: file permissions decided already.
    let api = format!("unix:{}", socket.display());
    let offline = std::process::Command::new(steward_tests::steward_binary())
        .args(["offline", "g", "--api", &api])
        .env_remove("STEWARD_TOKEN")
        .output()
        .expect("the CLI runs");
    assert!(offline.status.success(), "steward offline over the socket: {offline:?}");
    daemon.wait_group("g", "offline", Duration::from_secs(20)).await;
    let uid = rustix::process::geteuid().as_raw();
    let events = daemon.events().await;
    assert!(
        events.iter().any(|e| e["kind"] == "operator-action" && e["by"] == format!("uid {uid}").as_str()),
        "the socket's user is named: {events:#?}"
    );
}

/// Starts a daemon on `config` (without the harness's tokens) and waits
/// for it to exit; its log.
async fn refused(config: &str) -> String {
    let mut daemon = Daemon::prepare(config, &[steward_tests::guest_wasm("dummy")]);
    daemon.launch();
    daemon.wait_exit(Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_unreadable_or_malformed_tokens_file_stops_the_daemon_naming_it() {
    let with_tokens = |tokens: &str| {
        NODE.replace("api = \"{api}\"", &format!("api = \"127.0.0.1:1\"\napi_tokens = \"{{dir}}/{tokens}\""))
    };
    let log = refused(&with_tokens("no-such-tokens")).await;
    assert!(log.contains("no-such-tokens") && log.contains("steward token create"), "missing: {log}");
    // A directory stands for a file that cannot be read (root reads any
    // file whatever its mode).
    let log = refused(&with_tokens("state")).await;
    assert!(log.contains("/state") && log.contains("regular file"), "{log}");
    let mut malformed = Daemon::prepare(&with_tokens("bad-tokens"), &[steward_tests::guest_wasm("dummy")]);
    std::fs::write(malformed.path("bad-tokens"), "[[token]]\nname = \"x\"\nrole = \"root\"\nsha256 = \"0\"\n")
        .expect("a malformed tokens file");
    malformed.launch();
    let log = malformed.wait_exit(Duration::from_secs(30)).await;
    assert!(log.contains("bad-tokens:3") && log.contains("root"), "malformed, by line: {log}");
    // A listener other machines can reach wants TLS.
    let open = NODE.replace("api = \"{api}\"", "api = \"0.0.0.0:1\"\napi_tokens = \"{dir}/api-tokens\"");
    let log = refused(&open).await;
    assert!(log.contains("api_tls"), "a non-loopback listener without TLS is refused: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_trusts_a_tls_listener_only_with_the_ca_that_signed_it() {
    let certificates = tempfile::tempdir().expect("a directory for certificates");
    let tls = steward_cluster::harness::make_certificates(certificates.path());
    let config = NODE.replace(
        "api = \"{api}\"",
        &format!(
            "api = \"{{api}}\"\napi_tls = {{ cert = \"{}\", key = \"{}\" }}",
            tls.server_cert.display(),
            tls.server_key.display()
        ),
    );
    let mut daemon = Daemon::prepare(&config, &[steward_tests::guest_wasm("dummy")]);
    daemon.launch();
    let https = format!("https://{}", daemon.api);
    let token = daemon.token("operate");
    let status = |ca: Option<&std::path::Path>| {
        let mut command = steward_tests::steward_command();
        command.args(["status", "--api", &https]).env("STEWARD_TOKEN", &token);
        if let Some(ca) = ca {
            command.arg("--ca").arg(ca);
        }
        command.output().expect("the CLI runs")
    };
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let trusted = status(Some(&tls.ca));
        if trusted.status.success() {
            assert!(String::from_utf8_lossy(&trusted.stdout).contains("node-access"));
            break;
        }
        assert!(daemon.running(), "the daemon exited: {}", daemon.log());
        assert!(Instant::now() < until, "no answer over TLS: {trusted:?}\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for ca in [None, Some(tls.stranger_ca.as_path())] {
        let untrusted = status(ca);
        let error = String::from_utf8_lossy(&untrusted.stderr).to_string();
        assert_eq!(untrusted.status.code(), Some(1), "{error}");
        assert!(error.contains("certificate") && error.contains("--ca"), "the CLI says what to pass: {error}");
    }
    // A renewed certificate (here from another CA) counts from the next
    // handshake, without a restart.
    let renewed_dir = tempfile::tempdir().expect("a directory for certificates");
    let renewed = steward_cluster::harness::make_certificates(renewed_dir.path());
    std::fs::copy(&renewed.server_cert, &tls.server_cert).expect("copy the certificate");
    std::fs::copy(&renewed.server_key, &tls.server_key).expect("copy the key");
    let until = Instant::now() + Duration::from_secs(10);
    while !status(Some(&renewed.ca)).status.success() {
        assert!(Instant::now() < until, "the renewed certificate is not served: {}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(Some(&tls.ca)).status.code(), Some(1), "the old CA no longer fits");
    assert!(daemon.log().contains("certificate changed; loaded again"), "{}", daemon.log());

    // Plain HTTP to the TLS port gets nowhere.
    let plain = reqwest::Client::new().get(daemon.url("/v1/status")).bearer_auth(daemon.token("read")).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|answer| !answer.status().is_success()));
}

/// Polls `path` with `token` until it answers `want`, within 10 s (the
/// node checks its tokens file at most every half second).
async fn until_status(daemon: &Daemon, path: &str, token: &str, want: u16) -> Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, answer) = send(daemon, reqwest::Method::GET, path, "", Some(token), None).await;
        if status == want {
            return answer;
        }
        assert!(Instant::now() < until, "GET {path} still answers {status}, not {want}: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_made_revoked_or_broken_count_without_a_restart() {
    let daemon = Daemon::start(NODE, &["dummy"]).await;
    let file = daemon.tokens_file();
    let token = |args: &[&str]| {
        let output = steward_tests::steward_command().arg("token").args(args).arg("--file").arg(&file).output();
        output.expect("the CLI runs")
    };

    let made = token(&["create", "--name", "late-reader", "--role", "read"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(String::from_utf8_lossy(&made.stderr).contains("counts at once"));
    let late = String::from_utf8_lossy(&made.stdout).trim().to_string();
    let whoami = until_status(&daemon, "/v1/whoami", &late, 200).await;
    assert_eq!(whoami["name"], "late-reader", "the running node took the new token: {whoami}");
    let listed = token(&["list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains("late-reader") && listed.contains("test-operator"), "{listed}");
    assert!(!listed.contains(&late), "the list shows names, never tokens: {listed}");

    let revoked = token(&["revoke", "--name", "late-reader"]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    until_status(&daemon, "/v1/whoami", &late, 401).await;
    until_status(&daemon, "/v1/whoami", &daemon.token("operate"), 200).await;
    let again = token(&["revoke", "--name", "late-reader"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no token named `late-reader`"));

    // A change that does not load refuses every token (a revocation must
    // not fail open), says so, and the Unix socket still serves.
    let good = std::fs::read_to_string(&file).expect("the tokens file");
    std::fs::write(&file, format!("{good}\n[[token]]\nname = \"typo\"\n")).expect("write");
    let answer = until_status(&daemon, "/v1/whoami", &daemon.token("operate"), 401).await;
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("tokens file does not load")), "{answer}");
    let socket = format!("unix:{}", daemon.socket().display());
    let local = steward_tests::steward_command().args(["status", "--api", &socket]).output().expect("the CLI runs");
    assert!(local.status.success(), "the socket serves: {}", String::from_utf8_lossy(&local.stderr));
    assert!(daemon.log().contains("does not load"), "the log says why");
    std::fs::write(&file, good).expect("write");
    until_status(&daemon, "/v1/whoami", &daemon.token("operate"), 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_property_reaches_its_plugin_and_no_reader() {
    let state = tempfile::tempdir().expect("a state directory");
    let secrets = tempfile::tempdir().expect("a secrets directory");
    let secret = secrets.path().join("marker-path");
    std::fs::write(&secret, "/state/hidden-name\n").expect("the secret file");
    let config = format!(
        r#"
[node]
name = "node-secret"
plugin_dir = "plugins"
data_dir = "data"
api = "{{api}}"

[[resource]]
name = "m"
type = "file-marker"
properties = {{ path = {{ file = "{}" }} }}
grants = {{ directories = [{{ host = "{}", guest = "/state" }}] }}

[[group]]
name = "g"
resources = ["m"]
"#,
        secret.display(),
        state.path().display()
    );
    let daemon = Daemon::start(&config, &["file_marker"]).await;
    daemon.wait_group("g", "online", Duration::from_secs(20)).await;
    assert!(state.path().join("hidden-name").exists(), "the plugin got the secret's value");
    let (status, resource) =
        send(&daemon, reqwest::Method::GET, "/v1/resources/m", "", Some(&daemon.token("read")), None).await;
    assert_eq!(status, 200, "{resource}");
    assert_eq!(resource["properties"]["path"], "(secret)", "{resource}");
    let everything = format!("{}{}", daemon.status_text().await, daemon.log());
    assert!(!everything.contains("hidden-name"), "neither status nor the log shows the secret");
}
