//! Who may use the API, and for what: the guard every request passes.
//!
//! The API is served on two kinds of listener. The Unix socket (always
//! there, mode 0660) is guarded by its file permissions: whoever can open
//! it acts as operator, named by the uid the kernel reports for the peer.
//! A TCP listener (optional, TLS unless on loopback) requires a bearer
//! token on every request: a `read` token may read, an `operate` token may
//! also change state. The console's static files are open (they carry no
//! data), and `/metrics` may be opened for scrapers.
//!
//! Browsers send cookies and reach loopback addresses for any page the
//! user opens, so state changes are guarded against cross-site use on
//! every listener: no route changes state on GET, and a state-changing
//! request whose `Origin` is not the API's own is refused. No CORS header
//! is ever sent.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use steward_config::tokens::{ApiTokens, Role};
use steward_node::NodeView;

use crate::reloading::Reloading;

/// What the guard needs to know about the node's access settings.
#[derive(Clone, Default)]
pub struct Access {
    /// The tokens TCP requests present, as their file says now; `None`:
    /// TCP requests are refused.
    pub tokens: Option<Arc<Reloading<ApiTokens>>>,
    /// Whether `/metrics` answers without a token.
    pub metrics_open: bool,
}

/// Where a request came from.
#[derive(Debug, Clone)]
pub enum Peer {
    /// A TCP (or TLS) connection from this address.
    Tcp(SocketAddr),
    /// The Unix socket, from a process of this user, if the kernel said.
    Unix { uid: Option<u32> },
}

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Peer {
        Peer::Tcp(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, tokio::net::UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::UnixListener>) -> Peer {
        Peer::Unix { uid: stream.io().peer_cred().ok().map(|cred| cred.uid()) }
    }
}

impl Connected<IncomingStream<'_, crate::tls::TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Peer {
        Peer::Tcp(*stream.remote_addr())
    }
}

/// Who is asking, as handlers and the event stream see it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name, or `uid N` on the Unix socket.
    pub name: String,
    /// What the caller may do.
    pub role: Role,
}

/// Whether a request of `method` may change state: everything but reads.
/// No route changes state on GET (or HEAD, or OPTIONS).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The guard, as an axum middleware: refuses what the caller may not do
/// (401 without a valid token, 403 with a token of too small a role or
/// from another origin), names the caller for the handlers, and
/// publishes every accepted state change with who made it.
pub async fn guard(
    State((access, view)): State<(Arc<Access>, Arc<NodeView>)>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let changes = changes_state(&method);
    if changes && let Some(refusal) = cross_site(request.headers()) {
        return refusal;
    }
    if crate::console_path(&path) {
        return next.run(request).await;
    }
    let caller = match &peer {
        Peer::Unix { uid } => Caller {
            name: uid.map_or_else(|| "local user".to_string(), |uid| format!("uid {uid}")),
            role: Role::Operate,
        },
        Peer::Tcp(_) if path == "/metrics" && access.metrics_open => {
            Caller { name: "metrics scraper".into(), role: Role::Read }
        }
        Peer::Tcp(_) => {
            let Some(token) = bearer(request.headers()) else {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "this listener requires a token: send `Authorization: Bearer TOKEN` (steward: --token-file or STEWARD_TOKEN)",
                );
            };
            let Some(Ok(tokens)) = access.tokens.as_ref().map(|tokens| tokens.current()) else {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "this node's tokens file does not load, so no token is accepted; the node's operator must fix it \
                     (the daemon's log says why)",
                );
            };
            match tokens.check(token) {
                Some(entry) => Caller { name: entry.name.clone(), role: entry.role },
                None => return refuse(StatusCode::UNAUTHORIZED, "the token is not one of this node's tokens"),
            }
        }
    };
    if changes && caller.role < Role::Operate {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!("token `{}` has the read role; changing state needs an operate token", caller.name),
        );
    }
    request.extensions_mut().insert(caller.clone());
    let response = next.run(request).await;
    if changes && response.status().is_success() {
        view.publish_action(&caller.name, format!("{method} {path} ({})", response.status().as_u16()));
    }
    response
}

/// The bearer token of `headers`, if one is given.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

/// A refusal for a state-changing request sent by a page of another
/// origin: its `Origin` must name the host the request was sent to.
fn cross_site(headers: &HeaderMap) -> Option<Response> {
    let origin = headers.get(header::ORIGIN)?;
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok());
    let same = match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => {
            let without_scheme = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
            without_scheme.is_some_and(|origin_host| origin_host.eq_ignore_ascii_case(host))
        }
        _ => false,
    };
    (!same).then(|| {
        refuse(StatusCode::FORBIDDEN, "a state-changing request from another origin is refused (cross-site request)")
    })
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut response =
        (status, axum::Json(crate::wire::ErrorBody { error: message.into(), field: None })).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    response
}
