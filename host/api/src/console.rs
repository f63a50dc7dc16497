//! The web console: static files compiled into the binary
//! (`include_str!`), served at `/` (the page) and `/console/{file}` (its
//! script modules, style sheet and icon). No build step, no CDN: what the
//! browser runs is the files in `console/` as written, and it needs nothing
//! beyond the node it came from.
//!
//! The console is a client of the JSON API like the CLI: it logs in with a
//! token pasted by the operator and sends it as a bearer token on every
//! call, so these routes themselves hold no data and need no token (the
//! login page must load without one). Every answer carries a strict
//! Content-Security-Policy (scripts, styles and connections to this origin
//! only, no inline script, no framing), `nosniff`, `X-Frame-Options: DENY`
//! and `no-store`, so a console cached by one operator is never shown to
//! the next, and a page the node serves cannot be framed by another site.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The Content-Security-Policy of every console answer: everything from
/// this origin only, no inline script or style, no plugins, not framed, no
/// form posted anywhere. Pictures may be `data:` URLs (none are now; the
/// charts are inline SVG built through the DOM, which the policy allows).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The page: one document, every view drawn by the script.
const INDEX_HTML: &str = include_str!("console/index.html");

/// The console's other files: name, content type, text.
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("console/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("console/api.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_str!("console/dom.js")),
    ("draw.js", "text/javascript; charset=utf-8", include_str!("console/draw.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("console/style.css")),
    ("icon.svg", "image/svg+xml", include_str!("console/icon.svg")),
];

/// The console's routes, for any router state (they read none).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/console/{file}", get(file))
}

async fn index() -> Response {
    with_headers(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML)
}

async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, text)) => with_headers(StatusCode::OK, content_type, text),
        None => with_headers(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "no such console file; the console starts at /\n",
        ),
    }
}

fn with_headers(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
