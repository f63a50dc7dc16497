//! The API against a bounded run of random requests, from a seeded
//! generator so a failure can be replayed (`STEWARD_FUZZ_SEED`): random
//! methods, paths along the real routes with odd segments (percent
//! escapes, dot segments, Unicode, empty and very long ones), random query
//! strings, headers and bodies (bytes, JSON and near-JSON, some of a few
//! MiB). Every answer must be 2xx, 3xx or 4xx (a client's mistake is never
//! the node's error), and the daemon must still run and answer at the end.
//! Requests that change things (offline, online, reload, upgrade) are as
//! welcome as any: they must just not fail the node.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use steward_tests::daemon::{Daemon, demo};

/// Requests in one run: enough to reach every route with many shapes, few
/// enough for a debug build on a busy 2-core machine.
const REQUESTS: usize = 2000;

/// Requests in flight at once, so handlers also meet each other.
const IN_FLIGHT: usize = 4;

/// The seed when `STEWARD_FUZZ_SEED` does not give one.
const DEFAULT_SEED: u64 = 0x57e3_a4d0_f022_0001;

/// The largest body sent: past axum's 2 MiB default limit for JSON.
const HUGE_BODY: usize = 4 << 20;

/// The longest path segment or query: far past what a request line usually
/// holds, short of the 64 KiB the client's `http::Uri` takes.
const LONG_PART: usize = 48 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_get_no_5xx_and_leave_the_daemon_answering() {
    let seed = std::env::var("STEWARD_FUZZ_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or(DEFAULT_SEED);
    let mut daemon = demo().await;
    // A connection per request: a connection the server closed after an
    // early answer is then never picked up again by the next request.
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(0).build().expect("client");
    let mut rng = Rng(seed);
    let requests: Vec<FuzzRequest> = (0..REQUESTS).map(|_| FuzzRequest::random(&mut rng)).collect();
    let started = Instant::now();
    let outcomes: Vec<(usize, Result<u16, String>)> = futures_util::stream::iter(requests.iter().enumerate())
        .map(|(index, request)| {
            let (daemon, client) = (&daemon, &client);
            async move { (index, request.send(daemon, client).await) }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    let mut failures = Vec::new();
    for (index, outcome) in outcomes {
        match outcome {
            Ok(status) if status < 500 => *by_status.entry(status).or_default() += 1,
            Ok(status) => failures.push(format!("{status} for #{index}: {}", requests[index].describe())),
            Err(error) => failures.push(format!("no answer for #{index} ({error}): {}", requests[index].describe())),
        }
    }
    eprintln!("{REQUESTS} random requests (seed {seed}) in {:?}: {by_status:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "seed {seed}: {} request(s) failed; the first:\n{}\nlog: {}",
        failures.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n"),
        daemon.log()
    );
    assert!(daemon.running(), "the daemon exited: {}", daemon.log());
    let status = daemon.authorize(client.get(daemon.url("/v1/status"))).send().await.expect("the API answers");
    assert_eq!(status.status(), reqwest::StatusCode::OK);
    let status: serde_json::Value = status.json().await.expect("status JSON");
    assert_eq!(status["phase"], "running", "{status}");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

/// One random request.
struct FuzzRequest {
    method: Method,
    path: String,
    query: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Vec<u8>>,
}

impl FuzzRequest {
    fn random(rng: &mut Rng) -> FuzzRequest {
        let method = match rng.below(100) {
            0..30 => Method::GET,
            30..60 => Method::POST,
            60..68 => Method::PUT,
            68..76 => Method::DELETE,
            76..84 => Method::PATCH,
            84..92 => Method::OPTIONS,
            _ => Method::HEAD,
        };
        let mut path = random_path(rng);
        let mut query = random_query(rng);
        if rng.chance(5) {
            // One very long part, short of the 64 KiB a client's URI holds.
            let long = "x".repeat(1 + rng.below(LONG_PART));
            if rng.chance(50) {
                path.push('/');
                path.push_str(&long);
            } else {
                query = Some(query.map(|query| query + "&").unwrap_or_default() + &long);
            }
        }
        FuzzRequest { method, path, query, headers: random_headers(rng), body: random_body(rng) }
    }

    /// Sends the request; the answer's status once its body is read (an
    /// event stream's is not: it never ends), or why there was none.
    async fn send(&self, daemon: &Daemon, client: &reqwest::Client) -> Result<u16, String> {
        match self.exchange(daemon, client).await {
            Ok(status) => Ok(status),
            // A server may answer before it reads a body it has no use for
            // (a 404, a 405, a GET's) and close the connection with the body
            // unread: the client, still writing, hears a broken pipe or a
            // reset instead of the answer, or loses the answer's end. Asked
            // again without the body, the route must answer. (A handler
            // that panicked on the body would be in the log, checked last.)
            Err(error) if self.body.is_some() && !error.is_timeout() && !error.is_builder() => {
                let bodiless = FuzzRequest {
                    method: self.method.clone(),
                    path: self.path.clone(),
                    query: self.query.clone(),
                    headers: self.headers.clone(),
                    body: None,
                };
                bodiless
                    .exchange(daemon, client)
                    .await
                    .map_err(|again| format!("{error:?}; without the body: {again:?}"))
            }
            Err(error) => Err(format!("{error:?}")),
        }
    }

    async fn exchange(&self, daemon: &Daemon, client: &reqwest::Client) -> Result<u16, reqwest::Error> {
        let mut url = reqwest::Url::parse(&daemon.url("/")).expect("the API's URL");
        url.set_path(&self.path);
        url.set_query(self.query.as_deref());
        let mut request = client.request(self.method.clone(), url);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let response = daemon.authorize(request).send().await?;
        let status = response.status().as_u16();
        let streaming = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
        if !streaming {
            response.bytes().await?;
        }
        Ok(status)
    }

    /// The request in a line, long parts cut.
    fn describe(&self) -> String {
        let cut = |text: &str| -> String {
            if text.chars().count() > 200 {
                format!("{}... ({} bytes)", text.chars().take(200).collect::<String>(), text.len())
            } else {
                text.to_string()
            }
        };
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", cut(&String::from_utf8_lossy(value.as_bytes()))))
            .collect();
        let body = match &self.body {
            None => "no body".to_string(),
            Some(body) => format!("body of {} bytes: {}", body.len(), cut(&String::from_utf8_lossy(body))),
        };
        format!(
            "{} {}{} [{}] {body}",
            self.method,
            cut(&self.path),
            self.query.as_deref().map(|query| format!("?{}", cut(query))).unwrap_or_default(),
            headers.join(", ")
        )
    }
}

/// The API's routes (and some it does not have): `{name}` for a group,
/// resource or type, mostly one the demo has; `{action}` for mostly
/// `online` or `offline`; `{}` for any segment.
const ROUTES: &[&str] = &[
    "/v1/status",
    "/v1/resources",
    "/v1/resources/{name}",
    "/v1/resources/{name}/{action}",
    "/v1/groups",
    "/v1/groups/{name}",
    "/v1/groups/{name}/{action}",
    "/v1/groups/{name}/why",
    "/v1/groups/{name}/move",
    "/v1/targets/{name}/{action}",
    "/v1/plugins",
    "/v1/plugins/{name}/upgrade",
    "/v1/reload",
    "/v1/config",
    "/v1/workers",
    "/v1/cluster",
    "/v1/events",
    "/metrics",
    "/",
    "/v1",
    "/v1/{}",
    "/{}",
    "/v1/{}/{}/{}/{}",
];

/// Names the demo knows, and the routes' own words.
const KNOWN: &[&str] = &[
    "ha-notepad",
    "notepad",
    "notes-dir",
    "notepad-http",
    "generic-app",
    "file-marker",
    "http-check",
    "online",
    "offline",
    "why",
    "move",
    "upgrade",
    "status",
];

/// What `{name}` mostly is.
const NAMES: &[&str] =
    &["ha-notepad", "notepad", "notes-dir", "notepad-http", "generic-app", "file-marker", "http-check"];

/// Segments that have broken URL handling somewhere.
const ODD: &[&str] = &[
    "",
    ".",
    "..",
    "%2e%2e",
    "%2E",
    "%2F",
    "a%2Fb",
    "%00",
    "%0a%0d",
    "%ff%fe",
    "%",
    "%z",
    "%zz",
    "%C3%A9",
    "%ED%A0%80",
    "ünïcødé",
    "名前",
    "🦀",
    "\u{202e}evil",
    "a b",
    "a+b",
    "a;b=c",
    "'\"<>`{}|\\^",
    "~!@$&*()=:,",
    "ha-notepad%00",
    "HA-NOTEPAD",
];

fn random_segment(rng: &mut Rng) -> String {
    match rng.below(100) {
        0..30 => rng.pick(KNOWN).to_string(),
        30..55 => rng.pick(ODD).to_string(),
        55..70 => (0..rng.below(12)).map(|_| format!("%{:02X}", rng.below(256))).collect(),
        70..85 => {
            const ALPHABET: &[u8] = b"abcXYZ019-_.~!$&'()*+,;=:@%/?#[] \"<>\\^`{|}";
            (0..1 + rng.below(24)).map(|_| rng.pick(ALPHABET) as char).collect()
        }
        85..95 => (0..1 + rng.below(16)).filter_map(|_| char::from_u32(rng.below(0x11_0000) as u32)).collect(),
        _ => "x".repeat(1 + rng.below(1 << 10)),
    }
}

fn random_path(rng: &mut Rng) -> String {
    let mut path = String::new();
    for part in rng.pick(ROUTES).split('/').skip(1) {
        path.push('/');
        match part {
            "{name}" if rng.chance(60) => path.push_str(rng.pick(NAMES)),
            "{action}" if rng.chance(70) => path.push_str(if rng.chance(50) { "online" } else { "offline" }),
            "{}" | "{name}" | "{action}" => path.push_str(&random_segment(rng)),
            word => path.push_str(word),
        }
    }
    match rng.below(10) {
        0 => path.push('/'),
        1 => path = path.replacen('/', "//", 1 + rng.below(3)),
        2 => {
            path.push('/');
            path.push_str(&random_segment(rng));
        }
        _ => {}
    }
    path
}

fn random_query(rng: &mut Rng) -> Option<String> {
    if rng.chance(50) {
        return None;
    }
    const KEYS: &[&str] = &["history", "to", "limit", "", "history[]", "to%00", "🦀"];
    const VALUES: &[&str] = &["true", "false", "1", "0", "yes", "", "node-b", "ha-notepad", "%zz", "%", "a&b", "=="];
    let pairs: Vec<String> = (0..1 + rng.below(5))
        .map(|_| {
            let key = if rng.chance(75) { rng.pick(KEYS).to_string() } else { random_segment(rng) };
            match rng.below(10) {
                0 => key,
                1..4 => format!("{key}={}", random_segment(rng)),
                _ => format!("{key}={}", rng.pick(VALUES)),
            }
        })
        .collect();
    Some(pairs.join(if rng.chance(90) { "&" } else { ";" }))
}

fn random_headers(rng: &mut Rng) -> Vec<(HeaderName, HeaderValue)> {
    const CONTENT_TYPES: &[&str] = &[
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=utf-16",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zz",
        "application/octet-stream",
        "application/",
        "json",
        "*/*",
        "",
    ];
    const ACCEPTS: &[&str] = &["*/*", "application/json", "text/event-stream", "text/html;q=0.1", "garbage"];
    let mut headers = Vec::new();
    if rng.chance(60) {
        headers.push((reqwest::header::CONTENT_TYPE, HeaderValue::from_static(rng.pick(CONTENT_TYPES))));
    }
    if rng.chance(30) {
        headers.push((reqwest::header::ACCEPT, HeaderValue::from_static(rng.pick(ACCEPTS))));
    }
    if rng.chance(20) {
        // Header values may hold any visible byte, obs-text included.
        let value: Vec<u8> =
            (0..rng.below(64)).map(|_| 0x20 + rng.below(0xe0) as u8).filter(|byte| *byte != 0x7f).collect();
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            headers.push((HeaderName::from_static("x-fuzz"), value));
        }
    }
    if rng.chance(10) {
        headers.push((reqwest::header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, br, zstd")));
    }
    headers
}

fn random_body(rng: &mut Rng) -> Option<Vec<u8>> {
    match rng.below(100) {
        0..40 => None,
        40..60 => Some(rng.some_bytes(4096)),
        60..75 => Some(random_json(rng, 0).into_bytes()),
        75..85 => Some(apply_request(rng).into_bytes()),
        85..97 => {
            // JSON cut short, or with a stray byte in it.
            let mut json = if rng.chance(50) { apply_request(rng) } else { random_json(rng, 0) }.into_bytes();
            if json.is_empty() {
                return Some(json);
            }
            let at = rng.below(json.len());
            if rng.chance(50) {
                json.truncate(at);
            } else {
                json[at] = rng.below(256) as u8;
            }
            Some(json)
        }
        _ => {
            let length = (1 << 20) + rng.below(HUGE_BODY - (1 << 20));
            Some(if rng.chance(50) {
                rng.bytes(length)
            } else {
                format!("{{\"files\": [{{\"name\": \"big.toml\", \"text\": \"{}\"}}]}}", "a".repeat(length))
                    .into_bytes()
            })
        }
    }
}

/// A body shaped like `POST /v1/config`'s, with random files.
fn apply_request(rng: &mut Rng) -> String {
    let files: Vec<String> = (0..rng.below(4))
        .map(|_| {
            let text = match rng.below(4) {
                0 => "[[group]]\nname = \"fuzz\"\nresources = [\"notepad\"]\n".to_string(),
                1 => "[[resource]]\nname = \"x\"\ntype = \"dummy\"\n".to_string(),
                2 => String::from_utf8_lossy(&rng.some_bytes(256)).into_owned(),
                _ => random_segment(rng),
            };
            serde_json::json!({ "name": random_segment(rng), "text": text }).to_string()
        })
        .collect();
    format!("{{\"files\": [{}]}}", files.join(","))
}

/// A random JSON document, nested at most four deep.
fn random_json(rng: &mut Rng, depth: usize) -> String {
    let leaf = depth >= 4 || rng.chance(40);
    if leaf {
        return match rng.below(6) {
            0 => "null".to_string(),
            1 => rng.chance(50).to_string(),
            2 => (rng.next() as i64).to_string(),
            3 => format!("{}e{}", rng.below(1000), rng.below(400)),
            _ => serde_json::Value::String(random_segment(rng)).to_string(),
        };
    }
    let items = rng.below(5);
    if rng.chance(50) {
        let items: Vec<String> = (0..items).map(|_| random_json(rng, depth + 1)).collect();
        format!("[{}]", items.join(","))
    } else {
        const KEYS: &[&str] = &["files", "name", "text", "to", "history", "online", ""];
        let items: Vec<String> = (0..items)
            .map(|_| {
                let key = if rng.chance(70) { rng.pick(KEYS).to_string() } else { random_segment(rng) };
                format!("{}: {}", serde_json::Value::String(key), random_json(rng, depth + 1))
            })
            .collect();
        format!("{{{}}}", items.join(","))
    }
}

/// SplitMix64: small, seeded, and good enough to pick shapes of requests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    fn below(&mut self, bound: usize) -> usize {
        if bound == 0 { 0 } else { (self.next() % bound as u64) as usize }
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.next() as u8).collect()
    }

    /// Fewer than `most` random bytes.
    fn some_bytes(&mut self, most: usize) -> Vec<u8> {
        let length = self.below(most);
        self.bytes(length)
    }
}
