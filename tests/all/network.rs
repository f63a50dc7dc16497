//! The `network` capability end to end: `tcp-check` and `http-check` against
//! a real `notepad` (the demo's server) on a loopback port the system chose.
//! A resource reaches only the socket addresses its grant names, says so
//! when refused, and stops looking alive when the service goes away.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

use steward_monitor::bindings::{CheckLevel, PluginError};
use steward_monitor::conformance;
use steward_monitor::monitor::{CallError, Monitor};
use steward_tests::{context, plugin, spec};

/// A `notepad` listening on a free loopback port, killed when dropped.
struct Notepad {
    child: Child,
    address: SocketAddr,
    note: PathBuf,
    // Kept open: a closed pipe would make the server's error lines fail.
    _stderr: BufReader<ChildStderr>,
    _state: tempfile::TempDir,
}

impl Notepad {
    fn start() -> Notepad {
        let binary = steward_tests::target_dir().join("debug/notepad");
        assert!(binary.is_file(), "{} is missing: run `cargo build -p notepad` first", binary.display());
        let state = tempfile::tempdir().expect("tempdir");
        let note = state.path().join("note.txt");
        // Each notepad gets a loopback address of its own: once it stops, no
        // other test's listener (all on 127.0.0.1) can take over its port.
        static NEXT_HOST: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(10);
        let host = NEXT_HOST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let listen = format!("127.0.0.{host}:0");
        let mut child = Command::new(&binary)
            .args(["--listen", &listen, "--note"])
            .arg(&note)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("notepad starts");
        // Port 0 lets the system choose a free port; the first line names it.
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        let mut line = String::new();
        stderr.read_line(&mut line).expect("notepad's first line");
        let address = line
            .strip_prefix("notepad listening on ")
            .and_then(|rest| rest.split(',').next())
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from notepad: {line}"));
        Notepad { child, address, note, _stderr: stderr, _state: state }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Notepad {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_plugin_error(error: &CallError, invalid_config: bool, expected: &str) -> bool {
    match error {
        CallError::Plugin { error: PluginError::InvalidConfig(why), .. } => invalid_config && why.contains(expected),
        CallError::Plugin { error: PluginError::Transient(why), .. } => !invalid_config && why.contains(expected),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_passes_the_life_cycle_against_a_granted_address() {
    let notepad = Notepad::start();
    let tcp = plugin("tcp_check").await;
    let address = notepad.address.to_string();
    let mut check = spec("notepad-port", &tcp, &[("address", &address)]);
    check.grants.network = vec![notepad.address];
    let report = conformance::run(tcp.clone(), check).await;
    assert!(report.passed(), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_passes_on_the_expected_status_and_says_what_it_saw() {
    let notepad = Notepad::start();
    let http = plugin("http_check").await;
    let url = |path: &str| format!("http://{}{path}", notepad.address);
    for (path, expect_status) in [("/health", "200"), ("/", "200"), ("/missing", "404")] {
        let mut check = spec("notepad-http", &http, &[("url", &url(path)), ("expect-status", expect_status)]);
        check.grants.network = vec![notepad.address];
        let report = conformance::run(http.clone(), check).await;
        assert!(report.passed(), "{path}: {report:#?}");
    }

    let monitor = Monitor::new("test-node");
    let mut missing = spec("notepad-missing", &http, &[("url", &url("/missing")), ("startup-wait-ms", "300")]);
    missing.grants.network = vec![notepad.address];
    let handle = monitor.open(http.clone(), missing).await.expect("opens");
    let error = handle.online(&context()).await.expect_err("a 404 is not the expected 200");
    assert!(is_plugin_error(&error, false, "answered 404, expected 200"), "{error}");
    assert!(!handle.looks_alive().await.expect("probe"), "never online, never alive");
    handle.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_reaches_only_the_addresses_its_grant_names() {
    let notepad = Notepad::start();
    let (tcp, http) = (plugin("tcp_check").await, plugin("http_check").await);
    let address = notepad.address.to_string();
    let url = format!("http://{address}/health");
    // The system never hands out port 9 for port 0, so it is not notepad's.
    let elsewhere: SocketAddr = "127.0.0.1:9".parse().expect("address");
    let monitor = Monitor::new("test-node");
    for grant in [vec![], vec![elsewhere]] {
        let mut tcp_spec = spec("port", &tcp, &[("address", &address)]);
        tcp_spec.grants.network = grant.clone();
        let mut http_spec = spec("page", &http, &[("url", &url)]);
        http_spec.grants.network = grant.clone();
        for (checker, resource) in [(tcp.clone(), tcp_spec), (http.clone(), http_spec)] {
            let handle = monitor.open(checker, resource).await.expect("opens");
            let error = handle.online(&context()).await.expect_err("the address is not granted");
            assert!(is_plugin_error(&error, true, "network grant"), "grant {grant:?}: {error}");
            assert!(handle.is_live().await, "a refused connection is a plugin error, not a sandbox fault");
            handle.close().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_stops_no_longer_looks_alive() {
    let mut notepad = Notepad::start();
    let (tcp, http) = (plugin("tcp_check").await, plugin("http_check").await);
    let address = notepad.address.to_string();
    let url = format!("http://{address}/health");
    let monitor = Monitor::new("test-node");
    let mut tcp_spec = spec("port", &tcp, &[("address", &address)]);
    tcp_spec.grants.network = vec![notepad.address];
    let mut http_spec = spec("page", &http, &[("url", &url)]);
    http_spec.grants.network = vec![notepad.address];
    let port = monitor.open(tcp.clone(), tcp_spec).await.expect("opens");
    let page = monitor.open(http.clone(), http_spec).await.expect("opens");
    for handle in [&port, &page] {
        handle.online(&context()).await.expect("the service answers");
        assert!(handle.looks_alive().await.expect("probe"));
    }
    let health = page.is_alive(CheckLevel::Thorough).await.expect("probe");
    assert!(health.alive && health.reason == format!("GET {url} answered 200"), "{health:?}");

    notepad.stop();
    assert!(std::net::TcpStream::connect(notepad.address).is_err(), "nothing listens on {address} any more");
    for (handle, named) in [(&port, &address), (&page, &url)] {
        assert!(!handle.looks_alive().await.expect("probe"), "{named} is gone");
        let health = handle.is_alive(CheckLevel::Thorough).await.expect("probe");
        assert!(!health.alive && health.reason.contains(named.as_str()), "{health:?}");
        handle.offline(&context()).await.expect("offline needs no service");
        let health = handle.is_alive(CheckLevel::Thorough).await.expect("probe");
        assert!(!health.alive && health.reason == "offline", "{health:?}");
        handle.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_checks_refuse_names_and_tls_when_validating() {
    let tcp = plugin("tcp_check").await;
    let error =
        tcp.validate("port", &[("address".to_string(), "localhost:8080".to_string())]).await.expect_err("a name");
    let error = error.to_string();
    assert!(error.contains("address: `localhost:8080` is not an IP:PORT") && error.contains("not resolved"), "{error}");
    let http = plugin("http_check").await;
    for (url, expected) in [("https://127.0.0.1:8443/", "no TLS"), ("http://example.com/", "cannot look names up")] {
        let error =
            http.validate("page", &[("url".to_string(), url.to_string())]).await.expect_err("unsupported").to_string();
        assert!(error.contains("url: ") && error.contains(expected), "{url}: {error}");
    }
}

/// Sends `request` and returns the whole answer (notepad closes after one).
fn exchange(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    stream.write_all(request).expect("sends");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reads the answer");
    answer
}

#[test]
fn notepad_keeps_one_note_and_refuses_malformed_requests() {
    let notepad = Notepad::start();
    let get = b"GET / HTTP/1.1\r\nHost: notepad\r\n\r\n";
    let empty = exchange(notepad.address, get);
    assert!(empty.starts_with("HTTP/1.1 200 OK\r\n") && empty.ends_with("\r\n\r\n"), "no note yet: {empty}");
    let put = exchange(notepad.address, b"PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    assert!(put.starts_with("HTTP/1.1 204 "), "{put}");
    let note = exchange(notepad.address, get);
    assert!(note.ends_with("\r\n\r\nhello"), "{note}");
    assert_eq!(std::fs::read_to_string(&notepad.note).expect("the note is on disk"), "hello");
    let health = exchange(notepad.address, b"GET /health HTTP/1.0\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200 ") && health.ends_with("ok\n"), "{health}");

    let refused: [(&[u8], &str); 5] = [
        (b"nonsense\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", "400"),
        (b"GET /elsewhere HTTP/1.1\r\n\r\n", "404"),
        (b"PUT / HTTP/1.1\r\n\r\n", "411"),
        (b"PUT / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", "413"),
    ];
    for (request, status) in refused {
        let answer = exchange(notepad.address, request);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{}: {answer}", String::from_utf8_lossy(request));
    }
    assert!(exchange(notepad.address, get).ends_with("\r\n\r\nhello"), "a refused request leaves the note alone");
}
