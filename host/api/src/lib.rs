//! Steward's HTTP API (axum), the only crate that serves HTTP; its JSON
//! documents are [`wire`], which the CLI reads back with the same types.
//!
//! - `GET  /v1/status`: node, groups and resources in one document
//! - `GET  /v1/resources`, `GET /v1/resources/{name}`
//! - `GET  /v1/resources/{name}/history`: its probes (count, mean latency)
//!   and restarts, a sample a minute over the last hour (the console's charts)
//! - `GET  /v1/groups`, `GET /v1/groups/{name}`
//! - `GET  /v1/plugins`: every plugin file, with its type or why it was rejected
//! - `GET  /v1/plugins/{type}`: a loaded type's metadata (properties with
//!   their kinds, defaults and descriptions; timing; capabilities)
//! - `POST /v1/plugins/{type}/upgrade`: switch a type's resources to its newest version
//! - `POST /v1/reload`: read the configuration again and add its new groups
//! - `GET  /v1/config`: where the groups and resources come from (the node
//!   file, or the cluster's shared configuration with its revision and files)
//! - `POST /v1/config`: check files of groups and resources against this
//!   node's plugins and apply them to the cluster (`steward apply`)
//! - `GET  /v1/workers`: the monitor workers, their pids and resources
//! - `GET  /v1/cluster`: the cluster's nodes and group owners (404 alone)
//! - `GET  /v1/groups/{name}/why`: this node's decisions for the group (restarts,
//!   failures, acquisitions, failovers, moves, failbacks, fencing), with the
//!   rule and inputs behind each
//! - `POST /v1/groups/{name}/move[?to=NODE]`: move a group this node owns
//!   to another node (offline here, handed over, online there)
//! - `POST /v1/resources/{name}/online|offline`, `POST /v1/groups/{name}/online|offline`
//! - `POST /v1/targets/{name}/online|offline`: a group or, failing that, a resource
//! - `GET  /v1/events`: a server-sent event stream of every transition
//!   (`?history=true` replays the recent ones first)
//! - `GET  /metrics`: Prometheus text format
//! - `GET  /v1/whoami`: the token's name and role (provisional, see `whoami`)
//! - `GET  /` and `/console/{file}`: the web console ([`console`])
//!
//! - `GET  /v1/whoami`: the caller's name and role
//!
//! Every request passes the access guard (`access.rs`): a token on TCP,
//! file permissions on the Unix socket, and no cross-site state change.
//!
//! Errors are JSON `{"error": ..., "field": ...}` with a 4xx status for the
//! client's mistakes (not logged as errors) and 5xx for the node's (logged,
//! not leaked).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt, stream};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;

use steward_node::{NodeEvent, NodeRequest, NodeView};

mod access;
pub mod console;
mod from_view;
mod history;
pub mod reloading;
pub mod tls;
pub mod wire;

pub use access::{Access, Caller, Peer};
use steward_policy::Input;

/// Serves the API on a plain TCP `listener` (every request with a token)
/// until the process ends.
pub async fn serve_tcp(listener: tokio::net::TcpListener, api: Api) -> std::io::Result<()> {
    axum::serve(listener, router(api).into_make_service_with_connect_info::<Peer>()).await
}

/// Serves the API over TLS on `listener` (every request with a token).
pub async fn serve_tls(listener: tls::TlsListener, api: Api) -> std::io::Result<()> {
    axum::serve(listener, router(api).into_make_service_with_connect_info::<Peer>()).await
}

/// Serves the API on the node's Unix socket, whose file permissions say
/// who may act.
pub async fn serve_unix(listener: tokio::net::UnixListener, api: Api) -> std::io::Result<()> {
    axum::serve(listener, router(api).into_make_service_with_connect_info::<Peer>()).await
}

/// Whether `path` is the console's: static files, open to anyone who can
/// connect (the data they show is fetched with a token).
pub fn console_path(path: &str) -> bool {
    path == "/" || path.starts_with("/console/")
}

/// One node's API, as every listener serves it: the view, who may act,
/// and the one sampler of the resources' last hour.
#[derive(Clone)]
pub struct Api {
    view: Arc<NodeView>,
    access: Arc<Access>,
    history: Arc<history::History>,
}

impl Api {
    /// The API of `view`; starts the history sampler.
    pub fn new(view: Arc<NodeView>, access: Access) -> Api {
        let history = Arc::new(history::History::default());
        history::spawn_sampler(Arc::downgrade(&view), history.clone());
        Api { view, access: Arc::new(access), history }
    }
}

/// The API's routes, every request passing the access guard.
fn router(api: Api) -> Router {
    let Api { view, access, history } = api;
    let guarded = (access, view.clone());
    Router::new()
        .merge(console::routes::<Arc<NodeView>>())
        .route("/v1/whoami", get(whoami))
        .route(
            "/v1/resources/{name}/history",
            get(move |state: State<Arc<NodeView>>, name: Path<String>| resource_history(state, name, history)),
        )
        .route("/v1/plugins/{type}", get(plugin_type))
        .route("/v1/status", get(status))
        .route("/v1/resources", get(resources))
        .route("/v1/resources/{name}", get(resource))
        .route("/v1/resources/{name}/{action}", post(resource_action))
        .route("/v1/groups", get(groups))
        .route("/v1/groups/{name}", get(group))
        .route("/v1/groups/{name}/move", post(move_group))
        .route("/v1/groups/{name}/why", get(group_why))
        .route("/v1/groups/{name}/{action}", post(group_action))
        .route("/v1/targets/{name}/{action}", post(target_action))
        .route("/v1/plugins", get(plugins))
        .route("/v1/plugins/{type}/upgrade", post(upgrade_plugin))
        .route("/v1/reload", post(reload))
        .route("/v1/config", get(shared_config).post(apply_config))
        .route("/v1/workers", get(workers))
        .route("/v1/cluster", get(cluster))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(guarded, access::guard))
        .with_state(view)
}

/// `GET /v1/whoami`: the caller's name and role, as the guard found them.
async fn whoami(caller: Option<axum::Extension<Caller>>) -> Json<wire::WhoAmI> {
    let (name, role) =
        caller.map_or(("anonymous".into(), "read"), |axum::Extension(caller)| (caller.name, caller.role.as_str()));
    Json(wire::WhoAmI { name, role: role.into() })
}

/// An API error: status, message, and the field or path segment at fault.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    fn not_found(field: &'static str, message: String) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, message, field: Some(field) }
    }

    fn bad_request(field: &'static str, message: String) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message, field: Some(field) }
    }

    fn internal(message: String) -> Self {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message, field: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.status.is_server_error() {
            tracing::error!(error = %self.message, "API request failed");
            "internal error; see the node's log".to_string()
        } else {
            self.message
        };
        (self.status, Json(wire::ErrorBody { error: message, field: self.field.map(str::to_string) })).into_response()
    }
}

async fn status(State(view): State<Arc<NodeView>>) -> Result<Json<wire::Status>, ApiError> {
    let groups = read(&view.groups)?.values().map(from_view::group).collect();
    let resources = read(&view.resources)?.values().map(from_view::resource).collect();
    let recent_events = view
        .recent
        .lock()
        .map_err(|_| ApiError::internal("event history lock poisoned".into()))?
        .iter()
        .map(from_view::event)
        .collect();
    let workers = view.workers.views().into_iter().map(from_view::worker).collect();
    Ok(Json(wire::Status {
        node: view.node_name.clone(),
        phase: from_view::phase(view.phase()),
        groups,
        resources,
        workers,
        recent_events,
        cluster: view.cluster.as_deref().map(from_view::cluster),
    }))
}

async fn resources(State(view): State<Arc<NodeView>>) -> Result<Json<Vec<wire::Resource>>, ApiError> {
    Ok(Json(read(&view.resources)?.values().map(from_view::resource).collect()))
}

async fn resource(
    State(view): State<Arc<NodeView>>,
    Path(name): Path<String>,
) -> Result<Json<wire::Resource>, ApiError> {
    read(&view.resources)?
        .get(&name)
        .map(|resource| Json(from_view::resource(resource)))
        .ok_or_else(|| ApiError::not_found("name", format!("no resource named `{name}`")))
}

async fn resource_history(
    State(view): State<Arc<NodeView>>,
    Path(name): Path<String>,
    history: Arc<history::History>,
) -> Result<Json<wire::ResourceHistory>, ApiError> {
    history.of(&view, &name).map(Json).ok_or_else(|| ApiError::not_found("name", format!("no resource named `{name}`")))
}

async fn plugin_type(
    State(view): State<Arc<NodeView>>,
    Path(type_name): Path<String>,
) -> Result<Json<wire::PluginType>, ApiError> {
    // A type is usually in one file (a replacement keeps the file's name).
    // Should two files hold it, the last by name answers.
    read(&view.plugins)?
        .iter()
        .rev()
        .filter(|plugin| plugin.type_name.as_deref() == Some(type_name.as_str()))
        .find_map(from_view::plugin_type)
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found("type", format!("no plugin of type `{type_name}` is loaded; see GET /v1/plugins"))
        })
}

async fn groups(State(view): State<Arc<NodeView>>) -> Result<Json<Vec<wire::Group>>, ApiError> {
    Ok(Json(read(&view.groups)?.values().map(from_view::group).collect()))
}

async fn group(State(view): State<Arc<NodeView>>, Path(name): Path<String>) -> Result<Json<wire::Group>, ApiError> {
    read(&view.groups)?
        .get(&name)
        .map(|group| Json(from_view::group(group)))
        .ok_or_else(|| ApiError::not_found("name", format!("no group named `{name}`")))
}

async fn plugins(State(view): State<Arc<NodeView>>) -> Result<Json<Vec<wire::Plugin>>, ApiError> {
    Ok(Json(read(&view.plugins)?.iter().map(from_view::plugin).collect()))
}

async fn upgrade_plugin(
    State(view): State<Arc<NodeView>>,
    Path(type_name): Path<String>,
) -> Result<Json<wire::UpgradeReport>, ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    ask(&view, NodeRequest::Upgrade { type_name, reply })?;
    let report = answer.await.map_err(|_| ApiError::internal("the node loop dropped the request".into()))?;
    report.map(|report| Json(from_view::upgrade(report))).map_err(|message| ApiError::not_found("type", message))
}

async fn reload(State(view): State<Arc<NodeView>>) -> Result<Json<wire::ReloadReport>, ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    ask(&view, NodeRequest::Reload { reply })?;
    let report = answer.await.map_err(|_| ApiError::internal("the node loop dropped the request".into()))?;
    report.map(|report| Json(from_view::reload(report))).map_err(|message| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message,
        field: Some("config"),
    })
}

async fn group_why(
    State(view): State<Arc<NodeView>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<wire::Decision>>, ApiError> {
    let known = view.groups.read().is_ok_and(|groups| groups.contains_key(&name));
    let decisions = view.decisions.lock().map(|log| log.of(&name)).unwrap_or_default();
    if !known && decisions.is_empty() {
        return Err(ApiError::not_found("name", format!("no group named `{name}` on this node")));
    }
    Ok(Json(decisions.into_iter().map(from_view::decision).collect()))
}

async fn shared_config(State(view): State<Arc<NodeView>>) -> Json<wire::Config> {
    Json(from_view::shared_config(&view))
}

async fn apply_config(
    State(view): State<Arc<NodeView>>,
    body: Result<Json<wire::ApplyRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<wire::ApplyReport>, ApiError> {
    let Json(request) = body.map_err(|rejection| {
        // A body past axum's limit (2 MiB) is 413, not a malformed one:
        // the rejection knows which.
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the files are larger than a node takes in one apply (2 MiB, and etcd keeps at most 1.5 MiB per key); \
             apply smaller files"
                .to_string()
        } else {
            format!("the body is not {{\"files\": [{{\"name\": ..., \"text\": ...}}]}}: {}", rejection.body_text())
        };
        ApiError { status, message, field: Some("body") }
    })?;
    if request.files.is_empty() {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: "name at least one file of groups and resources".into(),
            field: Some("files"),
        });
    }
    let files = request.files.into_iter().map(|file| (file.name, file.text)).collect();
    let (reply, answer) = tokio::sync::oneshot::channel();
    ask(&view, NodeRequest::ApplyConfig { files, reply })?;
    let report = answer.await.map_err(|_| ApiError::internal("the node loop dropped the request".into()))?;
    report
        .map(|report| {
            Json(wire::ApplyReport { revision: report.revision, groups: report.groups, resources: report.resources })
        })
        .map_err(|message| ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, message, field: Some("files") })
}

fn ask(view: &NodeView, request: NodeRequest) -> Result<(), ApiError> {
    view.node_requests.send(request).map_err(|_| ApiError::internal("the node loop has stopped".into()))
}

async fn cluster(State(view): State<Arc<NodeView>>) -> Result<Json<wire::Cluster>, ApiError> {
    let cluster = view
        .cluster
        .as_deref()
        .ok_or_else(|| ApiError::not_found("path", "this node runs alone: its file has no [cluster] table".into()))?;
    Ok(Json(from_view::cluster(cluster)))
}

async fn workers(State(view): State<Arc<NodeView>>) -> Json<Vec<wire::Worker>> {
    Json(view.workers.views().into_iter().map(from_view::worker).collect())
}

async fn resource_action(
    State(view): State<Arc<NodeView>>,
    Path((name, action)): Path<(String, String)>,
) -> Result<(StatusCode, Json<wire::Accepted>), ApiError> {
    if !read(&view.resources)?.contains_key(&name) {
        return Err(ApiError::not_found("name", format!("no resource named `{name}`")));
    }
    request(&view, Target::Resource, name, &action)
}

async fn group_action(
    State(view): State<Arc<NodeView>>,
    Path((name, action)): Path<(String, String)>,
) -> Result<(StatusCode, Json<wire::Accepted>), ApiError> {
    if !read(&view.groups)?.contains_key(&name) {
        return Err(ApiError::not_found("name", format!("no group named `{name}`")));
    }
    request(&view, Target::Group, name, &action)
}

async fn target_action(
    State(view): State<Arc<NodeView>>,
    Path((name, action)): Path<(String, String)>,
) -> Result<(StatusCode, Json<wire::Accepted>), ApiError> {
    if read(&view.groups)?.contains_key(&name) {
        return request(&view, Target::Group, name, &action);
    }
    if read(&view.resources)?.contains_key(&name) {
        return request(&view, Target::Resource, name, &action);
    }
    Err(ApiError::not_found("name", format!("no group or resource named `{name}`")))
}

enum Target {
    Group,
    Resource,
}

/// Hands an online or offline request for an existing target to the node loop.
fn request(
    view: &NodeView,
    target: Target,
    name: String,
    action: &str,
) -> Result<(StatusCode, Json<wire::Accepted>), ApiError> {
    let online = parse_action(action)?;
    let (input, kind) = match (target, online) {
        (Target::Group, true) => (Input::GroupOnline(name.clone()), "group"),
        (Target::Group, false) => (Input::GroupOffline(name.clone()), "group"),
        (Target::Resource, true) => (Input::ResourceOnline(name.clone()), "resource"),
        (Target::Resource, false) => (Input::ResourceOffline(name.clone()), "resource"),
    };
    view.requests.send(input).map_err(|_| ApiError::internal("the node loop has stopped".into()))?;
    Ok((StatusCode::ACCEPTED, Json(wire::Accepted { accepted: format!("{kind} `{name}` {action}") })))
}

fn parse_action(action: &str) -> Result<bool, ApiError> {
    match action {
        "online" => Ok(true),
        "offline" => Ok(false),
        other => Err(ApiError::not_found("action", format!("unknown action `{other}`; use online or offline"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveQuery {
    to: Option<String>,
}

async fn move_group(
    State(view): State<Arc<NodeView>>,
    Path(group): Path<String>,
    query: Result<Query<MoveQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<wire::Accepted>), ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request("to", rejection.body_text()))?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    ask(&view, NodeRequest::Move { group, to: query.to, reply })?;
    let outcome = answer.await.map_err(|_| ApiError::internal("the node loop dropped the request".into()))?;
    match outcome {
        Ok(accepted) => Ok((StatusCode::ACCEPTED, Json(wire::Accepted { accepted }))),
        Err(message) => Err(ApiError { status: StatusCode::CONFLICT, message, field: Some("name") }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    history: bool,
}

async fn events(
    State(view): State<Arc<NodeView>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request("history", rejection.body_text()))?;
    // Subscribe before copying the history, so nothing falls in between.
    let live = BroadcastStream::new(view.events.subscribe());
    let history: Vec<NodeEvent> = if query.history {
        view.recent.lock().map(|recent| recent.iter().cloned().collect()).unwrap_or_default()
    } else {
        Vec::new()
    };
    let last_replayed = history.last().map_or(0, |event| event.seq);
    let live = live.filter_map(move |item| async move {
        match item {
            Ok(event) if event.seq > last_replayed => Some(event),
            _ => None,
        }
    });
    let stream = stream::iter(history).chain(live).map(|event| {
        let event = from_view::event(&event);
        Ok(Event::default().event(event.kind.clone()).json_data(&event).unwrap_or_else(|_| Event::default()))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn metrics(State(view): State<Arc<NodeView>>) -> Result<Response, ApiError> {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(NodeMetrics(view)));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .map_err(|_| ApiError::internal("cannot render the metrics".into()))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// The node's metrics, read from its view at each scrape and written by
/// prometheus-client (which escapes label values and appends `_total` to
/// counters): per resource, probes and their latency, call latency,
/// restarts, failures by kind, guest log records dropped, capabilities
/// refused, processes spawned and whether it is online; per node, plugins
/// compiled and loaded from the cache, and monitor worker restarts.
struct NodeMetrics(Arc<NodeView>);

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").field("node", &self.0.node_name).finish()
    }
}

impl prometheus_client::collector::Collector for NodeMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        use steward_node::ResourceMetrics;
        let view = &self.0;
        let Ok(resources) = view.resources.read() else { return Ok(()) };
        let Ok(metrics) = view.metrics.read() else { return Ok(()) };
        let counted: Vec<(&str, &str, bool, &ResourceMetrics)> = resources
            .iter()
            .filter_map(|(name, resource)| {
                let online = resource.state == steward_policy::ResourceState::Online;
                Some((name.as_str(), resource.group.as_str(), online, metrics.get(name)?.as_ref()))
            })
            .collect();
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        type Read = fn(&ResourceMetrics) -> u64;
        let counters: [(&str, &str, Read); 6] = [
            ("steward_probes", "Healthy probes run per resource.", |m| m.probe_latency.count()),
            ("steward_restarts", "Restarts per resource.", |m| m.restarts_total.load(Ordering::Relaxed)),
            ("steward_failures", "Failures per resource.", |m| m.failures_total.load(Ordering::Relaxed)),
            ("steward_guest_logs_dropped", "Guest log records dropped by the rate limit.", |m| {
                m.logs_dropped_total.load(Ordering::Relaxed)
            }),
            ("steward_capability_denials", "Programs, files and addresses a plugin was refused.", |m| {
                m.capability_denials_total.load(Ordering::Relaxed)
            }),
            ("steward_processes_spawned", "Processes plugins spawned through the process capability.", |m| {
                m.processes_spawned_total.load(Ordering::Relaxed)
            }),
        ];
        for (name, help, read) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (resource, group, _, metrics) in &counted {
                let labels = [("resource", *resource), ("group", *group)];
                ConstCounter::new(read(metrics)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "steward_resource_failures",
            "Failures per resource and kind since the daemon started.",
            None,
            MetricType::Counter,
        )?;
        for (resource, group, _, metrics) in &counted {
            for kind in steward_policy::failure::FailureKind::ALL {
                let count = load(&metrics.failures_by_kind[kind.index()]);
                if count > 0 {
                    let labels = [("resource", *resource), ("group", *group), ("kind", kind.as_str())];
                    ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "steward_resource_online",
            "1 when the resource is online.",
            None,
            MetricType::Gauge,
        )?;
        for (resource, group, online, _) in &counted {
            let labels = [("resource", *resource), ("group", *group)];
            ConstGauge::new(i64::from(*online)).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "steward_probe_seconds",
            "Latency of healthy probes, in the monitor worker.",
            None,
            MetricType::Histogram,
        )?;
        for (resource, group, _, metrics) in &counted {
            let labels = [("resource", *resource), ("group", *group)];
            encode_histogram(family.encode_family(&labels)?, &metrics.probe_latency)?;
        }
        let mut family = encoder.encode_descriptor(
            "steward_call_seconds",
            "Latency of online and offline calls as the node sees them (round trip to the worker included).",
            None,
            MetricType::Histogram,
        )?;
        for (resource, group, _, metrics) in &counted {
            for (operation, histogram) in [("online", &metrics.online_latency), ("offline", &metrics.offline_latency)] {
                let labels = [("resource", *resource), ("group", *group), ("operation", operation)];
                encode_histogram(family.encode_family(&labels)?, histogram)?;
            }
        }
        if let Some(cluster) = &view.cluster {
            encode_cluster(&mut encoder, cluster)?;
        }
        let stats = view.runtime.stats();
        let node_counters = [
            ("steward_components_compiled", "Plugin components compiled from .wasm by the daemon.", &stats.compiled),
            (
                "steward_components_cached",
                "Plugin components loaded from the compile cache by the daemon.",
                &stats.loaded_from_cache,
            ),
        ];
        for (name, help, counter) in node_counters {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(load(counter)).encode(family)?;
        }
        let mut family = encoder.encode_descriptor(
            "steward_worker_restarts",
            "Monitor workers started again after a loss.",
            None,
            MetricType::Counter,
        )?;
        for worker in view.workers.views() {
            ConstCounter::new(worker.restarts).encode(family.encode_family(&[("worker", worker.name.as_str())])?)?;
        }
        Ok(())
    }
}

/// The cluster's figures: ownership changes, failovers, and the lease as
/// this node keeps it (keepalive round trip, time since the last
/// acknowledgement, remaining lease by its own estimate).
fn encode_cluster(encoder: &mut DescriptorEncoder, cluster: &steward_node::cluster::ClusterView) -> std::fmt::Result {
    let counters = [
        ("steward_cluster_acquisitions", "Groups this node acquired.", &cluster.acquisitions),
        ("steward_cluster_losses", "Groups this node lost (fenced, or taken by another node).", &cluster.losses),
        ("steward_cluster_failovers", "Groups this node took over from another node.", &cluster.failovers),
        ("steward_cluster_moves", "Groups this node handed over in a planned move or failback.", &cluster.moves),
    ];
    for (name, help, counter) in counters {
        let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(counter.load(Ordering::Relaxed)).encode(family)?;
    }
    if let Some(figures) = cluster.gauge.read() {
        let gauges = [
            (
                "steward_cluster_keepalive_round_trip_seconds",
                "Round trip of the last acknowledged keepalive.",
                figures.round_trip,
            ),
            (
                "steward_cluster_since_last_ack_seconds",
                "Time since etcd last acknowledged a keepalive.",
                figures.since_last_ack,
            ),
            (
                "steward_cluster_lease_remaining_seconds",
                "How long the lease lives by this node's own estimate.",
                figures.remaining,
            ),
        ];
        for (name, help, value) in gauges {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value.as_secs_f64()).encode(family)?;
        }
    }
    Ok(())
}

fn encode_histogram(
    mut encoder: MetricEncoder<'_>,
    histogram: &steward_monitor::latency::LatencyHistogram,
) -> std::fmt::Result {
    let snapshot = histogram.snapshot();
    encoder.encode_histogram::<NoLabelSet>(snapshot.sum_seconds, snapshot.count, &snapshot.buckets, None)
}

async fn not_found() -> ApiError {
    ApiError::not_found("path", "no such endpoint; see GET /v1/status, /v1/resources, /v1/groups, /v1/events".into())
}

fn read<T>(lock: &std::sync::RwLock<T>) -> Result<std::sync::RwLockReadGuard<'_, T>, ApiError> {
    lock.read().map_err(|_| ApiError::internal("node view lock poisoned".into()))
}
