//! The web console, in a real headless Chromium driven over WebDriver
//! (`chromedriver`, through fantoccini), against a real daemon on the demo
//! configuration: an operator logs in, sees the demo group online, takes it
//! offline with the button and its confirmation, and sees the change arrive
//! through the event stream without the page reloading; a resource's page
//! is drawn from its plugin's metadata; a read token sees no operate
//! button, on a phone-sized screen that does not scroll sideways; in a
//! cluster, the nodes and each group's owner are shown, and the move
//! button hands a group to the node chosen. And,
//! without a browser: the console's files are served with a strict
//! Content-Security-Policy, never build HTML from text, and the routes the
//! console reads answer.
//!
//! Screenshots of the main pages land in `target/console/` (the README
//! shows two of them from `docs/images/`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use steward_tests::daemon::{Daemon, demo, free_address};

/// One browser at a time: Chromium is heavy on a 2-core machine, and the
/// tests' timings are generous but not unbounded.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a page may take to show what a test waits for.
const PAGE_LIMIT: Duration = Duration::from_secs(30);

/// A desktop window, and a phone's screen (a 6.1" phone, in CSS pixels).
const DESKTOP: Screen = Screen::Window { width: 1280, height: 900 };
const PHONE: Screen = Screen::Phone { width: 390, height: 844 };

/// What the browser shows pages on.
#[derive(Clone, Copy)]
enum Screen {
    /// A desktop window of this size.
    Window { width: u32, height: u32 },
    /// A phone emulated by Chromium: this viewport, at two device pixels
    /// to the CSS pixel, with touch (a desktop window cannot be made this
    /// narrow).
    Phone { width: u32, height: u32 },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_takes_the_demo_group_offline_with_the_button_and_sees_it_through_the_event_stream() {
    let _one = ONE_BROWSER.lock().await;
    let daemon = demo().await;
    daemon.wait_group("ha-notepad", "online", Duration::from_secs(30)).await;
    let browser = Browser::start(DESKTOP).await;

    browser.open(&daemon.url("/")).await;
    browser.wait_for("document.getElementById('token') !== null").await;
    browser.screenshot("login").await;
    browser.log_in(&daemon.token("operate")).await;
    browser.wait_for(&group_state_is("ha-notepad", "online")).await;
    assert_eq!(browser.eval("return document.querySelector('.who .role').textContent").await, "operate");
    browser.screenshot("overview").await;

    // Marks the document: a reload would lose the mark.
    browser.eval("document.documentElement.dataset.notReloaded = 'yes'; return null").await;
    let newest_seq =
        "return Math.max(0, ...[...document.querySelectorAll('#events li')].map((li) => Number(li.dataset.seq)))";
    let before = browser.eval(newest_seq).await.as_u64().unwrap_or(0);
    browser.click("[data-group=\"ha-notepad\"] button[data-action=\"offline\"]").await;
    browser.wait_for("document.getElementById('confirm').open").await;
    let question = browser.eval("return document.getElementById('confirm-text').textContent").await;
    assert!(
        question.as_str().is_some_and(|text| text.contains("ha-notepad")),
        "the dialog names the group: {question}"
    );
    assert_eq!(daemon.group_state("ha-notepad").await, "online", "nothing happens before the confirmation");
    browser.click("#confirm-ok").await;

    browser.wait_for(&group_state_is("ha-notepad", "offline")).await;
    // The event log got every resource's transition to offline from the stream.
    let went_offline = format!(
        "return [...document.querySelectorAll('#events li[data-kind=\"transition\"]')]
            .filter((li) => Number(li.dataset.seq) > {before})
            .filter((li) => li.querySelector('.change')?.textContent.endsWith('→ offline'))
            .map((li) => li.querySelector('.subject').textContent).sort()"
    );
    browser.wait_for(&format!("(() => {{ {went_offline} }})().length === 3")).await;
    assert_eq!(browser.eval(&went_offline).await, json!(["notepad", "notepad-http", "notes-dir"]));
    assert_eq!(
        browser.eval("return document.documentElement.dataset.notReloaded").await,
        "yes",
        "the page was not reloaded"
    );
    assert_eq!(browser.eval("return document.getElementById('live').dataset.state").await, "live");
    assert_eq!(daemon.group_state("ha-notepad").await, "offline");
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_page_is_drawn_from_its_plugins_metadata() {
    let _one = ONE_BROWSER.lock().await;
    let daemon = demo().await;
    daemon.wait_group("ha-notepad", "online", Duration::from_secs(30)).await;
    let browser = Browser::start(DESKTOP).await;
    browser.open(&daemon.url("/")).await;
    browser.log_in(&daemon.token("operate")).await;
    browser.click("[data-resource=\"notepad\"] a").await;
    browser.wait_for("document.querySelector('#properties [data-property=\"program\"]') !== null").await;

    let sheet = browser.eval("return document.getElementById('properties').innerText").await;
    let sheet = sheet.as_str().unwrap_or_default();
    // generic-app's metadata: every property, its kind and its description.
    for expected in [
        "generic-app",
        "program",
        "required",
        "The program's absolute path; the grant must name it.",
        "args",
        "text-list",
        "The program's arguments.",
        "env",
        "grace-ms",
        "integer",
        "Offline's wait before SIGKILL, in ms.",
    ] {
        assert!(sheet.contains(expected), "the property page shows `{expected}`: {sheet}");
    }
    // The configured value, and the default where none is configured.
    assert_eq!(browser.eval("return document.getElementById('prop-grace-ms').value").await, "2000");
    assert_eq!(browser.eval("return document.getElementById('prop-env').className").await, "default");
    let program = browser.eval("return document.getElementById('prop-program').value").await;
    assert!(program.as_str().is_some_and(|path| path.ends_with("/notepad")), "{program}");
    // The charts: the probes of the minute under way are drawn.
    browser.wait_for("document.querySelector('#latency-chart circle.point') !== null").await;
    assert_eq!(browser.eval("return document.querySelectorAll('#restarts-chart svg').length").await, 1);
    // Tall enough for the whole page in one picture.
    browser.client.set_window_size(1280, 1150).await.expect("a taller window");
    browser.screenshot("resource").await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_sees_no_operate_button_on_a_phone_sized_screen() {
    let _one = ONE_BROWSER.lock().await;
    let daemon = demo().await;
    daemon.wait_group("ha-notepad", "online", Duration::from_secs(30)).await;
    let browser = Browser::start(PHONE).await;
    browser.open(&daemon.url("/")).await;
    browser.log_in(&daemon.token("read")).await;
    browser.wait_for(&group_state_is("ha-notepad", "online")).await;
    assert_eq!(browser.eval("return document.querySelector('.who .role').textContent").await, "read");
    let no_buttons = "return document.querySelectorAll('button.op, select[data-move-to]').length";
    assert_eq!(browser.eval(no_buttons).await, 0, "no operate button on the overview");
    assert!(
        browser.eval("return window.innerWidth").await.as_u64().is_some_and(|width| width <= 400),
        "a phone's width"
    );
    // One column: nothing wider than the screen.
    let overflow = "return document.documentElement.scrollWidth - window.innerWidth";
    assert!(browser.eval(overflow).await.as_i64().is_some_and(|extra| extra <= 0), "the overview fits a phone");
    browser.screenshot("overview-phone").await;

    browser.open(&daemon.url("/#/resource/notepad")).await;
    browser.wait_for("document.querySelector('#properties [data-property=\"program\"]') !== null").await;
    assert_eq!(browser.eval(no_buttons).await, 0, "no operate button on a resource's page");
    assert!(browser.eval(overflow).await.as_i64().is_some_and(|extra| extra <= 0), "a resource's page fits a phone");

    browser.open(&daemon.url("/#/plugins")).await;
    browser.wait_for("document.querySelectorAll('#plugins tbody tr').length === 3").await;
    assert_eq!(browser.eval(no_buttons).await, 0, "no upgrade button on the plugins page");
    // A file that is no component shows up, rejected with its reason, as the stream tells of it.
    std::fs::write(daemon.path("plugins/not-a-component.wasm"), b"not wasm at all").expect("write a bad plugin file");
    browser.wait_for("document.querySelector('#plugins tr.rejected .failure') !== null").await;
    let rejected = browser.eval("return document.querySelector('#plugins tr.rejected').innerText").await;
    assert!(rejected.as_str().is_some_and(|row| row.contains("not-a-component.wasm")), "{rejected}");
    browser.screenshot("plugins-phone").await;
    browser.quit().await;
}

/// A node of a two-node cluster on `etcd` with one group, `g`, of one
/// `dummy` resource, preferring `node-a`.
fn cluster_node(node: &str, etcd: &steward_cluster::harness::EtcdCluster) -> String {
    let node_tables = crate::cluster::bare_node_file(node, "console", etcd);
    format!(
        r#"{node_tables}
[[resource]]
name = "web"
type = "dummy"

[[group]]
name = "g"
resources = ["web"]
preferred_owners = ["node-a", "node-b"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_the_console_shows_the_nodes_and_owners_and_moves_a_group_with_the_button() {
    let _one = ONE_BROWSER.lock().await;
    let etcd = steward_cluster::harness::EtcdCluster::start().await;
    let a = Daemon::start(&cluster_node("node-a", &etcd), &["dummy"]).await;
    let b = Daemon::start(&cluster_node("node-b", &etcd), &["dummy"]).await;
    a.wait_group("g", "online", Duration::from_secs(30)).await;
    let browser = Browser::start(DESKTOP).await;
    browser.open(&a.url("/")).await;
    browser.log_in(&a.token("operate")).await;
    browser.wait_for("document.querySelectorAll('#nodes tr[data-node]').length === 2").await;
    browser
        .wait_for("document.querySelector('[data-group=\"g\"] .owner')?.textContent.startsWith('owner node-a')")
        .await;
    browser.screenshot("overview-cluster").await;

    let select = browser.client.find(Locator::Css("select[data-move-to=\"g\"]")).await.expect("the move target");
    select.select_by_value("node-b").await.expect("node-b chosen");
    browser.click("[data-group=\"g\"] button[data-action=\"move\"]").await;
    browser.wait_for("document.getElementById('confirm').open").await;
    let question = browser.eval("return document.getElementById('confirm-text').textContent").await;
    assert!(question.as_str().is_some_and(|text| text.contains("node-b")), "the dialog names the node: {question}");
    browser.click("#confirm-ok").await;

    b.wait_group("g", "online", Duration::from_secs(30)).await;
    // node-a's console hears of the new owner through its event stream.
    browser
        .wait_for("document.querySelector('[data-group=\"g\"] .owner')?.textContent.startsWith('owner node-b')")
        .await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_strictly_and_the_routes_it_reads_answer() {
    let daemon = demo().await;
    // The console's files are served without a token (the page is how one
    // signs in); the API routes it reads want one.
    let anonymous = reqwest::Client::new();
    let client = daemon.client();
    let page = anonymous.get(daemon.url("/")).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    let header = |name: &str| page.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(header("content-type").starts_with("text/html"), "{}", header("content-type"));
    let policy = header("content-security-policy");
    for directive in ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"] {
        assert!(policy.contains(directive), "the policy has {directive}: {policy}");
    }
    assert!(!policy.contains("unsafe"), "no unsafe-inline or unsafe-eval: {policy}");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("cache-control"), "no-store");
    let html = page.text().await.expect("the page");
    assert!(html.contains("<script type=\"module\" src=\"/console/app.js\"></script>"), "{html}");
    assert_eq!(html.matches("<script").count(), 1, "no inline script: {html}");

    for (file, content_type) in [
        ("app.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("dom.js", "text/javascript"),
        ("draw.js", "text/javascript"),
        ("style.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let response = anonymous.get(daemon.url(&format!("/console/{file}"))).send().await.expect("a console file");
        assert_eq!(response.status(), 200, "{file}");
        let served = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(served.starts_with(content_type), "{file}: {served}");
        assert!(response.headers().contains_key("content-security-policy"), "{file}");
        let text = response.text().await.expect("the file");
        // Untrusted text reaches the page as text nodes only.
        for forbidden in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!text.contains(forbidden), "{file} uses {forbidden}");
        }
    }
    let missing = anonymous.get(daemon.url("/console/missing.js")).send().await.expect("GET");
    assert_eq!(missing.status(), 404);

    // What the resource page reads: the type's metadata...
    let generic_app = daemon.get("/v1/plugins/generic-app").await;
    assert_eq!(generic_app["type"], "generic-app");
    assert_eq!(generic_app["capabilities"], json!(["process"]));
    let property = |name: &str| {
        generic_app["properties"].as_array().and_then(|all| all.iter().find(|p| p["name"] == name).cloned())
    };
    let program = property("program").unwrap_or_else(|| panic!("program: {generic_app}"));
    assert_eq!((&program["kind"], &program["required"]), (&json!("text"), &json!(true)), "{program}");
    let grace = property("grace-ms").unwrap_or_else(|| panic!("grace-ms: {generic_app}"));
    assert_eq!((&grace["kind"], &grace["default"]), (&json!("integer"), &json!("5000")), "{grace}");
    let (status, body) = get_status(&client, &daemon, "/v1/plugins/no-such-type").await;
    assert_eq!((status, &body["field"]), (404, &json!("type")), "{body}");
    // ...the resource's configured values...
    let notepad = daemon.get("/v1/resources/notepad").await;
    assert_eq!(notepad["properties"]["grace-ms"], "2000", "{notepad}");
    // ...and its history.
    let history = daemon.get("/v1/resources/notepad/history").await;
    assert_eq!(history["period_ms"], 60_000);
    assert!(history["samples"].as_array().is_some_and(|samples| samples.len() <= 60), "{history}");
    assert!(history["current"]["probes"].is_u64(), "{history}");
    let (status, _) = get_status(&client, &daemon, "/v1/resources/nope/history").await;
    assert_eq!(status, 404);
    // The console learns its role here.
    let whoami: Value = client
        .get(daemon.url("/v1/whoami"))
        .bearer_auth(daemon.token("read"))
        .send()
        .await
        .expect("whoami")
        .json()
        .await
        .expect("JSON");
    assert_eq!(whoami["role"], "read");
}

/// A JavaScript condition: group `group`'s state badge on the overview says `state`.
fn group_state_is(group: &str, state: &str) -> String {
    format!("document.querySelector('[data-group=\"{group}\"] header .state')?.textContent === '{state}'")
}

async fn get_status(client: &reqwest::Client, daemon: &Daemon, path: &str) -> (u16, Value) {
    let response = client.get(daemon.url(path)).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A headless Chromium under a chromedriver of its own, on a free port.
/// Dropping it kills chromedriver's process group (Chromium with it) and
/// removes the browser's profile directory.
struct Browser {
    client: Client,
    /// Until it is killed.
    driver: Option<Child>,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(screen: Screen) -> Browser {
        let chromium = find_program(&["chromium", "chromium-browser"]);
        let chromedriver = find_program(&["chromedriver"]);
        let profile = tempfile::tempdir().expect("a profile directory");
        let address = free_address();
        let port = address.rsplit(':').next().unwrap_or_default().to_string();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).expect("the driver's log");
        let mut driver = {
            use std::os::unix::process::CommandExt;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(log)
                // Its own process group, so the browsers it starts go with it.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|error| panic!("{} does not start: {error}", chromedriver.display()))
        };
        let mut capabilities = serde_json::Map::new();
        let mut options = json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                format!("--user-data-dir={}", profile.path().join("profile").display()),
            ],
        });
        match screen {
            Screen::Window { width, height } => {
                if let Some(args) = options["args"].as_array_mut() {
                    args.push(json!(format!("--window-size={width},{height}")));
                }
            }
            Screen::Phone { width, height } => {
                options["mobileEmulation"] =
                    json!({ "deviceMetrics": { "width": width, "height": height, "pixelRatio": 2.0, "touch": true } });
            }
        }
        capabilities.insert("goog:chromeOptions".into(), options);
        let url = format!("http://{address}");
        let until = Instant::now() + Duration::from_secs(60);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(_) if Instant::now() < until => {
                    if let Ok(Some(status)) = driver.try_wait() {
                        let log = std::fs::read_to_string(profile.path().join("chromedriver.log")).unwrap_or_default();
                        panic!("{} exited with {status}: {log}", chromedriver.display());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("no WebDriver session from {} at {url}: {error}", chromedriver.display()),
            }
        };
        Browser { client, driver: Some(driver), _profile: profile }
    }

    async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|error| panic!("open {url}: {error}"));
    }

    /// Pastes `token` into the login page and signs in; waits for the overview.
    async fn log_in(&self, token: &str) {
        self.wait_for("document.getElementById('token') !== null").await;
        let field = self.client.find(Locator::Id("token")).await.expect("the token field");
        field.send_keys(token).await.expect("typing the token");
        self.click("#sign-in").await;
        self.wait_for("document.querySelector('[data-group]') !== null").await;
    }

    async fn click(&self, css: &str) {
        self.wait_for(&format!("document.querySelector('{}') !== null", css.replace('\'', "\\'"))).await;
        let element = self.client.find(Locator::Css(css)).await.unwrap_or_else(|error| panic!("find {css}: {error}"));
        element.click().await.unwrap_or_else(|error| panic!("click {css}: {error}"));
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, Vec::new()).await.unwrap_or_else(|error| panic!("run `{script}`: {error}"))
    }

    /// Waits until the JavaScript expression `condition` is true, or fails
    /// the test with the page's text.
    async fn wait_for(&self, condition: &str) {
        let script = format!("try {{ return Boolean({condition}); }} catch (error) {{ return false; }}");
        let until = Instant::now() + PAGE_LIMIT;
        loop {
            if self.eval(&script).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > until {
                let text = self.eval("return document.body.innerText").await;
                panic!(
                    "the page did not come to `{condition}` within {PAGE_LIMIT:?}; it shows:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves the window as `target/console/{name}.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = steward_tests::workspace_root().join("target/console");
        std::fs::create_dir_all(&dir).expect("target/console");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write the screenshot");
    }

    /// Ends the session (Chromium exits), then the driver.
    async fn quit(mut self) {
        let client = self.client.clone();
        let _ = client.close().await;
        self.kill_driver();
    }

    /// Kills chromedriver's process group once (before it is reaped, so
    /// the group id cannot have gone to anyone else).
    fn kill_driver(&mut self) {
        let Some(mut driver) = self.driver.take() else { return };
        if let Some(group) = rustix::process::Pid::from_raw(driver.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_driver();
    }
}

/// The first of `names` on the PATH.
fn find_program(names: &[&str]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("none of {names:?} is on the PATH: install Debian's chromium and chromium-driver (`cargo xtask test` does)")
        })
}
