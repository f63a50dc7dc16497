//! Membership: this node's lease, its node key, and the watchdog that
//! keeps both and says when they are lost.
//!
//! [`join`] grants one lease and creates the node key
//! `/steward/<cluster>/nodes/<node>` bound to it, by a transaction that
//! succeeds only if the key is absent: a name held by a live node is
//! refused with the holder's address. Every owner key the node creates is
//! bound to the same lease, so this one keepalive covers all its groups.
//!
//! etcd-client's keepalive stream does not reconnect: once it errs or goes
//! silent it stays dead. So the watchdog is ours: it sends a keepalive
//! every quarter TTL, gives each answer a deadline of a quarter TTL, reopens
//! the stream when it breaks or an answer is late, and keeps the local
//! expiry estimate of [`LeaseClock`] (send time of the last acknowledged
//! keepalive plus the TTL, on the monotonic clock). It publishes each
//! change of state as a [`MembershipEvent`]: the node must take its groups
//! offline while [`MembershipEvent::QuorumLost`] counts down, and hold
//! nothing once [`MembershipEvent::LeaseExpired`] says the estimate has
//! passed. After a loss it revokes the old lease (freeing its keys at once
//! rather than after their TTL) and joins again with a new one.
//!
//! The node key is watched too: etcd 3.4 can drop a lease's keys while
//! still acknowledging its keepalives, and a node whose key is gone is not
//! a member whatever its lease says, so that is a loss like any other.
//!
//! With [`EtcdTls`] every connection is TLS (rustls, through etcd-client's
//! `tls` feature), trusting only the CA given, and [`join`] first shakes
//! hands with each member, so a certificate either side refuses is an
//! error naming the endpoint rather than a member that seems down.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, LeaseKeepAliveResponse, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::keys::{Keys, check_name};
use crate::lease::LeaseClock;
use crate::ownership::Ownership;
use crate::watch::{self as resilient, Change, Entry, StreamClients, WatchSpec};
use crate::{Error, LeaseId, NodeInfo, Result};

/// The lease TTL when the configuration names none.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2);
/// etcd grants no lease shorter than a second (TTLs are whole seconds).
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);
/// How many events a slow subscriber may fall behind before it lags; a
/// lagging subscriber reads [`Member::state`] to catch up.
const EVENT_CAPACITY: usize = 64;

/// How to join a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The cluster's name: the root of its keys in etcd.
    pub cluster: String,
    /// etcd client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// What the node key publishes.
    pub info: NodeInfo,
    /// The lease's time to live: how long the node keeps its groups without
    /// reaching etcd. Whole seconds, at least [`MIN_LEASE_TTL`].
    pub lease_ttl: Duration,
    /// The deadline of each single etcd request (grant, transaction, read).
    pub request_timeout: Duration,
    /// The deadline of opening a connection to one etcd member.
    pub connect_timeout: Duration,
    /// TLS towards etcd's client port; `None` talks plain HTTP/2. With it,
    /// every endpoint is `https://`, without it every one is `http://`.
    pub tls: Option<EtcdTls>,
}

/// TLS towards etcd's client port: whom to trust, and who this node is.
/// PEM text, as read from the files the node's configuration names.
#[derive(Clone)]
pub struct EtcdTls {
    /// The certificate(s) of the CA that signs the members' server
    /// certificates: only a server it signed is talked to.
    pub ca_pem: Vec<u8>,
    /// This node's client certificate and key, for members started with
    /// `--client-cert-auth`.
    pub client: Option<ClientIdentity>,
}

/// A client certificate and its private key, PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

// By hand: a private key has no business in a log line or a panic message.
impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("client", &self.client.as_ref().map(|_| "certificate and key"))
            .finish()
    }
}

impl EtcdTls {
    fn options(&self) -> TlsOptions {
        let options = TlsOptions::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        match &self.client {
            Some(client) => options.identity(Identity::from_pem(&client.cert_pem, &client.key_pem)),
            None => options,
        }
    }
}

impl ClusterConfig {
    /// A configuration with the default TTL and timeouts.
    pub fn new(
        cluster: impl Into<String>,
        endpoints: Vec<String>,
        node: impl Into<String>,
        info: NodeInfo,
    ) -> ClusterConfig {
        ClusterConfig {
            cluster: cluster.into(),
            endpoints,
            node: node.into(),
            info,
            lease_ttl: DEFAULT_LEASE_TTL,
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            tls: None,
        }
    }

    /// Keepalives go out four times per TTL, so one lost answer or a leader
    /// election leaves three more chances before the lease runs out.
    pub fn keepalive_interval(&self) -> Duration {
        self.lease_ttl / 4
    }

    /// An answer later than this means the stream is stuck: it is reopened.
    pub fn answer_deadline(&self) -> Duration {
        self.lease_ttl / 4
    }
}

/// Whether the node's lease can be relied on now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseHealth {
    /// Keepalives are acknowledged.
    Healthy,
    /// Keepalives are not acknowledged; the lease may still live.
    QuorumLost,
    /// The lease is taken as gone; the node is rejoining.
    Expired,
}

impl LeaseHealth {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            LeaseHealth::Healthy => "lease healthy",
            LeaseHealth::QuorumLost => "etcd quorum lost",
            LeaseHealth::Expired => "lease expired, rejoining",
        }
    }
}

/// The node's current lease and its health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseState {
    pub lease: LeaseId,
    pub health: LeaseHealth,
}

/// A change of the node's membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// Keepalives are acknowledged again after [`MembershipEvent::QuorumLost`].
    LeaseHealthy { lease: LeaseId },
    /// Keepalives stopped being acknowledged; by the local estimate the
    /// lease lives for `remaining` more. Take groups offline before then.
    QuorumLost { lease: LeaseId, remaining: Duration },
    /// The lease must be taken as gone: the node must fence itself (hold
    /// nothing) at once. Its groups may already have other owners.
    LeaseExpired { lease: LeaseId, reason: ExpiryReason },
    /// The node joined again with a new lease after a loss; it owns no
    /// group until it acquires one again.
    Rejoined { lease: LeaseId },
}

/// Why the lease is taken as gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryReason {
    /// No keepalive was acknowledged before the local estimate passed.
    EstimatePassed,
    /// etcd answered that the lease does not exist.
    LeaseGone,
    /// The node key vanished while the lease lived (etcd 3.4's
    /// lease-revocation bug, or an operator deleting it).
    NodeKeyLost,
}

/// Keepalive figures for `/metrics`.
#[derive(Clone, Copy, Debug)]
pub struct KeepaliveMetrics {
    pub lease: LeaseId,
    /// Round trip of the last acknowledged keepalive.
    pub round_trip: Duration,
    /// Time since the last acknowledgement.
    pub since_last_ack: Duration,
    /// How long the lease lives by the local estimate.
    pub remaining: Duration,
}

/// This node as a member of the cluster. Dropping it stops the watchdog
/// (the lease then runs out on its own); [`Member::leave`] revokes it at once.
pub struct Member {
    shared: Arc<Shared>,
    state: watch::Receiver<LeaseState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Joins the cluster: grants the lease, creates the node key, starts the watchdog.
pub async fn join(config: ClusterConfig) -> Result<Member> {
    check_lease_ttl(config.lease_ttl)?;
    let keys = Keys::new(&config.cluster)?;
    check_name("node", &config.node)?;
    if config.endpoints.is_empty() {
        return Err(Error::NoEndpoints { cluster: config.cluster.clone() });
    }
    check_endpoint_schemes(&config)?;
    let span = info_span!("cluster", cluster = %config.cluster, node = %config.node);
    let client = connect(&config, &config.endpoints).instrument(span.clone()).await?;
    let mut per_member = Vec::with_capacity(config.endpoints.len());
    for endpoint in &config.endpoints {
        per_member.push(connect(&config, std::slice::from_ref(endpoint)).await?);
    }
    check_handshakes(&config, &per_member).instrument(span.clone()).await?;
    let shared = Arc::new(Shared {
        keys,
        client,
        stream_clients: StreamClients::new(per_member),
        config,
        events: broadcast::channel(EVENT_CAPACITY).0,
        clock: Mutex::new(None),
    });
    let joined = join_once(&shared, None).instrument(span.clone()).await?;
    info!(parent: &span, lease = %joined.lease, ttl = ?joined.clock.ttl(), "joined the cluster");
    let (state_sender, state) = watch::channel(LeaseState { lease: joined.lease, health: LeaseHealth::Healthy });
    let (shutdown, shutdown_receiver) = oneshot::channel();
    let watchdog = Watchdog {
        shared: shared.clone(),
        stream_clients: shared.stream_clients.clone(),
        state: state_sender,
        lease: joined.lease,
        clock: joined.clock,
        health: LeaseHealth::Healthy,
        node_key_revision: joined.node_key_revision,
    };
    watchdog.publish_clock();
    let task = tokio::spawn(watchdog.run(shutdown_receiver).instrument(span));
    Ok(Member { shared, state, shutdown: Some(shutdown), task: Some(task) })
}

impl Member {
    pub fn node(&self) -> &str {
        &self.shared.config.node
    }

    pub fn cluster(&self) -> &str {
        &self.shared.config.cluster
    }

    /// The lease and its health now.
    pub fn state(&self) -> LeaseState {
        *self.state.borrow()
    }

    /// Follows the lease and its health (the latest value only).
    pub fn state_receiver(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Every membership event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.shared.events.subscribe()
    }

    /// Keepalive round trip, time since the last acknowledgement and the
    /// estimated remaining lease time.
    pub fn keepalive_metrics(&self) -> Option<KeepaliveMetrics> {
        self.gauge().read()
    }

    /// A handle that reads [`Member::keepalive_metrics`] from elsewhere
    /// (the ownership agent, `/metrics`); cheap to clone.
    pub fn gauge(&self) -> LeaseGauge {
        LeaseGauge { shared: self.shared.clone() }
    }

    /// Group ownership on this node's lease.
    pub fn ownership(&self) -> Ownership {
        Ownership::new(
            self.shared.client.clone(),
            self.shared.stream_clients.clone(),
            self.shared.keys.clone(),
            self.shared.config.node.clone(),
            self.state.clone(),
            self.shared.config.request_timeout,
        )
    }

    /// Leaves the cluster: stops the watchdog and revokes the lease, which
    /// deletes the node key and every owner key of this node at once.
    /// The node must have taken its groups offline first.
    pub async fn leave(mut self) -> Result<()> {
        self.stop().await;
        let lease = self.state().lease;
        let timeout = self.shared.config.request_timeout;
        match revoke(&self.shared.client, lease, timeout).await {
            Ok(_) => Ok(()),
            // Already gone: leaving is done.
            Err(Error::Etcd { source, .. }) if is_lease_gone(&source) => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn stop(&mut self) {
        drop(self.shutdown.take());
        if let Some(task) = self.task.take() {
            // A panicked watchdog has nothing more to stop.
            let _ = task.await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // The watchdog sees its shutdown sender dropped and returns.
        drop(self.shutdown.take());
    }
}

/// What the watchdog and the member share.
/// Reads the keepalive figures of a [`Member`]; see [`Member::gauge`].
#[derive(Clone)]
pub struct LeaseGauge {
    shared: Arc<Shared>,
}

impl LeaseGauge {
    /// The figures now; `None` before the first lease.
    pub fn read(&self) -> Option<KeepaliveMetrics> {
        let now = Instant::now().into_std();
        let clock = self.shared.clock.lock().unwrap_or_else(PoisonError::into_inner);
        clock.as_ref().map(|(lease, clock)| KeepaliveMetrics {
            lease: *lease,
            round_trip: clock.last_round_trip(),
            since_last_ack: clock.since_last_ack(now),
            remaining: clock.remaining(now),
        })
    }
}

struct Shared {
    keys: Keys,
    /// For requests: balanced over all members.
    client: Client,
    /// For the keepalive and watch streams: one member at a time.
    stream_clients: StreamClients,
    config: ClusterConfig,
    events: broadcast::Sender<MembershipEvent>,
    /// The current lease's clock, copied for metrics.
    clock: Mutex<Option<(LeaseId, LeaseClock)>>,
}

fn check_lease_ttl(ttl: Duration) -> Result<()> {
    if ttl < MIN_LEASE_TTL {
        return Err(Error::LeaseTtlTooShort { ttl });
    }
    if ttl.subsec_nanos() != 0 {
        return Err(Error::LeaseTtlNotWholeSeconds { ttl });
    }
    Ok(())
}

/// Every endpoint `https://` with TLS and `http://` without: etcd-client
/// would refuse the one and, for the other, try TLS with no CA to trust.
fn check_endpoint_schemes(config: &ClusterConfig) -> Result<()> {
    let scheme = if config.tls.is_some() { "https://" } else { "http://" };
    match config.endpoints.iter().find(|endpoint| !endpoint.starts_with(scheme)) {
        Some(endpoint) => Err(Error::EndpointScheme { endpoint: endpoint.clone(), tls: config.tls.is_some() }),
        None => Ok(()),
    }
}

/// A client over `endpoints` (connections are made on first use).
async fn connect(config: &ClusterConfig, endpoints: &[String]) -> Result<Client> {
    // HTTP/2 pings find a connection to a frozen member (whose socket stays
    // open) within a second, so the channel moves to the other members.
    // Only while streams are open: etcd answers a client that pings an idle
    // connection more often than its `--grpc-keepalive-min-time` (5 s) with
    // GOAWAY, and the keepalive and watch streams are what needs watching.
    // Requiring a leader makes a member cut off from the others refuse
    // requests and cancel streams instead of serving stale reads.
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.connect_timeout)
        .with_keep_alive(Duration::from_millis(500), Duration::from_millis(500))
        .with_keep_alive_while_idle(false)
        .with_require_leader(true);
    if let Some(tls) = &config.tls {
        options = options.with_tls(tls.options());
    }
    match timeout(config.connect_timeout, Client::connect(endpoints, Some(options))).await {
        Ok(Ok(client)) => Ok(client),
        // Connections are made on first use: a transport error here is
        // the TLS configuration itself (a certificate or key that does
        // not parse, a key that is not the certificate's).
        Ok(Err(etcd_client::Error::TransportError(source))) if config.tls.is_some() => {
            Err(Error::TlsSetup { reason: error_chain(&source) })
        }
        Ok(Err(source)) => Err(Error::Etcd { operation: "connect", source }),
        Err(_) => Err(Error::Timeout { operation: "connect", timeout: config.connect_timeout }),
    }
}

/// With TLS, shakes hands with every member before joining, all at once.
/// A member whose certificate the CA did not sign, or that refuses the
/// node's, is a configuration error to name now: to the balanced client it
/// only looks down, so joining would report a timeout, and a node that
/// joined through the other members would find it out in an outage, when
/// its streams move there. A member that is down or does not answer is
/// left to joining, which needs only a quorum.
async fn check_handshakes(config: &ClusterConfig, per_member: &[Client]) -> Result<()> {
    if config.tls.is_none() {
        return Ok(());
    }
    let deadline = Instant::now() + config.connect_timeout + config.request_timeout;
    let mut checks = tokio::task::JoinSet::new();
    for (endpoint, client) in config.endpoints.iter().zip(per_member) {
        let (endpoint, client) = (endpoint.clone(), client.clone());
        checks.spawn(
            async move { handshake_failure(client, deadline).await.map(|reason| Error::Tls { endpoint, reason }) },
        );
    }
    while let Some(checked) = checks.join_next().await {
        if let Ok(Some(error)) = checked {
            return Err(error);
        }
    }
    Ok(())
}

/// Why the TLS handshake with the one member `client` talks to fails, if
/// it does. With TLS 1.3 the client's side of the handshake ends before
/// the server has checked the client's certificate, so a server refusing
/// it may show as a broken pipe or a reset rather than its alert: those
/// are asked again, until the alert is read, a request succeeds, or the
/// deadline passes. A refused connection is a member down: no verdict.
async fn handshake_failure(mut client: Client, deadline: Instant) -> Option<String> {
    loop {
        match timeout_at(deadline, client.status()).await {
            Ok(Err(error)) => {
                if let Some(reason) = tls_failure(&error) {
                    return Some(reason);
                }
                if io_error_kind(&error) == Some(std::io::ErrorKind::ConnectionRefused) {
                    return None;
                }
            }
            Ok(Ok(_)) | Err(_) => return None,
        }
        if timeout_at(deadline, sleep(HANDSHAKE_RETRY)).await.is_err() {
            return None;
        }
    }
}

/// Pause between handshake checks of one member.
const HANDSHAKE_RETRY: Duration = Duration::from_millis(50);

/// What went wrong in a TLS handshake, if that is what `error` is: rustls
/// reports a refused certificate, its own verdict or the peer's alert, as
/// an I/O error of kind `InvalidData` among the error's sources (so this
/// crate names no rustls type).
fn tls_failure(error: &etcd_client::Error) -> Option<String> {
    let io = io_error(error).filter(|io| io.kind() == std::io::ErrorKind::InvalidData)?;
    Some(io.get_ref().map_or_else(|| io.to_string(), ToString::to_string))
}

fn io_error_kind(error: &etcd_client::Error) -> Option<std::io::ErrorKind> {
    io_error(error).map(std::io::Error::kind)
}

/// The first I/O error among `error`'s sources.
fn io_error(error: &etcd_client::Error) -> Option<&std::io::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = match error {
        etcd_client::Error::GRpcStatus(status) => Some(status),
        etcd_client::Error::TransportError(transport) => Some(transport),
        etcd_client::Error::IoError(io) => Some(io),
        _ => None,
    };
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = current.source();
    }
    None
}

/// An error and its sources, `: `-separated (tonic's own text is terse).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        text.push_str(&format!(": {current}"));
        cause = current.source();
    }
    text
}

/// Makes an etcd call under a deadline, naming it in the error.
///
/// tonic's balanced channel keeps handing requests to a member that is
/// down until it notices, and such a request fails at once with
/// `Unavailable` without reaching etcd; so an `Unavailable` answer is
/// retried, within the same deadline, on a fresh call. Every call made
/// through here is safe to repeat (see each caller).
pub(crate) async fn timed<T, Call, Answer>(operation: &'static str, limit: Duration, mut call: Call) -> Result<T>
where
    Call: FnMut() -> Answer,
    Answer: Future<Output = Result<T, etcd_client::Error>>,
{
    let attempts = async {
        loop {
            match call().await {
                Err(etcd_client::Error::GRpcStatus(status)) if status.code() as i32 == GRPC_UNAVAILABLE => {
                    sleep(UNAVAILABLE_RETRY).await;
                }
                answer => return answer,
            }
        }
    };
    match timeout(limit, attempts).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(Error::Etcd { operation, source }),
        Err(_) => Err(Error::Timeout { operation, timeout: limit }),
    }
}

/// gRPC's status code UNAVAILABLE (tonic's `Code` is not re-exported).
const GRPC_UNAVAILABLE: i32 = 14;
/// Pause between attempts on an unavailable member.
const UNAVAILABLE_RETRY: Duration = Duration::from_millis(20);

struct Joined {
    lease: LeaseId,
    clock: LeaseClock,
    node_key_revision: i64,
}

/// Grants a lease and creates the node key on it. `previous` is this
/// node's last lease: a node key still bound to it is ours to take over.
async fn join_once(shared: &Shared, previous: Option<LeaseId>) -> Result<Joined> {
    let config = &shared.config;
    let key = shared.keys.node(&config.node);
    let value = serde_json::to_vec(&config.info)
        .map_err(|error| Error::CorruptValue { key: key.clone(), reason: error.to_string() })?;
    // Whole seconds, checked by `check_lease_ttl`.
    let ttl_seconds = i64::try_from(config.lease_ttl.as_secs()).unwrap_or(i64::MAX);
    let sent_at = Instant::now();
    let grant = timed("lease grant", config.request_timeout, || {
        // A repeated grant at worst leaves an unused lease to expire.
        let mut lease_client = shared.client.lease_client();
        async move { lease_client.grant(ttl_seconds, None).await }
    })
    .await?;
    let received_at = Instant::now();
    let lease = LeaseId(grant.id());
    // etcd may raise a TTL to its own minimum; the clock counts with what it granted.
    let granted_ttl = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0)).max(config.lease_ttl);
    let clock = LeaseClock::granted(sent_at.into_std(), received_at.into_std(), granted_ttl, config.answer_deadline());

    let put = || TxnOp::put(key.clone(), value.clone(), Some(PutOptions::new().with_lease(lease.0)));
    let create = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([put()])
        .or_else([TxnOp::get(key.clone(), None)]);
    let outcome = match txn(shared, "node key transaction", create).await {
        Ok(response) if response.succeeded() => Ok(revision_of(&response)),
        Ok(response) => {
            let holder = first_entry(&response);
            match (holder, previous) {
                // Our own put, when `timed` repeated the transaction.
                (Some(holder), _) if holder.lease == lease.0 => Ok(revision_of(&response)),
                (Some(holder), Some(previous)) if holder.lease == previous.0 => {
                    let take_over =
                        Txn::new().when([Compare::lease(key.clone(), CompareOp::Equal, previous.0)]).and_then([put()]);
                    match txn(shared, "node key takeover", take_over).await {
                        Ok(response) if response.succeeded() => Ok(revision_of(&response)),
                        Ok(_) => Err(name_taken(shared, None)),
                        Err(error) => Err(error),
                    }
                }
                (holder, _) => Err(name_taken(shared, holder.as_ref())),
            }
        }
        Err(error) => Err(error),
    };
    match outcome {
        Ok(node_key_revision) => Ok(Joined { lease, clock, node_key_revision }),
        Err(error) => {
            // The lease holds nothing; revoke it rather than leave it to its TTL.
            if let Err(revoke_error) = revoke(&shared.client, lease, config.request_timeout).await {
                debug!(%lease, error = %revoke_error, "revoking an unused lease failed; it expires by itself");
            }
            Err(error)
        }
    }
}

async fn txn(shared: &Shared, operation: &'static str, txn: Txn) -> Result<TxnResponse> {
    let client = &shared.client;
    timed(operation, shared.config.request_timeout, || {
        let (mut kv, txn) = (client.kv_client(), txn.clone());
        async move { kv.txn(txn).await }
    })
    .await
}

/// Revokes a lease; repeating it is harmless (the second finds it gone).
pub(crate) async fn revoke(client: &Client, lease: LeaseId, limit: Duration) -> Result<()> {
    timed("lease revoke", limit, || {
        let mut lease_client = client.lease_client();
        async move { lease_client.revoke(lease.0).await }
    })
    .await
    .map(drop)
}

fn revision_of(response: &TxnResponse) -> i64 {
    response.header().map(|header| header.revision()).unwrap_or_default()
}

/// The first key read by a transaction's get, if it found one.
pub(crate) fn first_entry(response: &TxnResponse) -> Option<Entry> {
    response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().and_then(Entry::from_key_value),
        _ => None,
    })
}

fn name_taken(shared: &Shared, holder: Option<&Entry>) -> Error {
    let holder_address = holder
        .and_then(|entry| serde_json::from_slice::<NodeInfo>(&entry.value).ok())
        .map(|info| info.api_address)
        .unwrap_or_else(|| "an unknown address".to_string());
    Error::NodeNameTaken { cluster: shared.config.cluster.clone(), node: shared.config.node.clone(), holder_address }
}

/// The background task that keeps the lease.
struct Watchdog {
    shared: Arc<Shared>,
    /// Where the keepalive stream goes; moves on when a stream fails.
    stream_clients: StreamClients,
    state: watch::Sender<LeaseState>,
    lease: LeaseId,
    clock: LeaseClock,
    health: LeaseHealth,
    node_key_revision: i64,
}

enum Kept {
    Shutdown,
    Lost(ExpiryReason),
}

enum Answer {
    Ack(LeaseKeepAliveResponse),
    Broken(String),
}

impl Watchdog {
    async fn run(mut self, mut shutdown: oneshot::Receiver<()>) {
        loop {
            let reason = match self.keep(&mut shutdown).await {
                Kept::Shutdown => return,
                Kept::Lost(reason) => reason,
            };
            error!(lease = %self.lease, ?reason, "lease lost: the node must fence itself; rejoining");
            self.set_health(LeaseHealth::Expired);
            self.publish(MembershipEvent::LeaseExpired { lease: self.lease, reason });
            let Some(joined) = self.rejoin(&mut shutdown).await else { return };
            info!(lease = %joined.lease, previous = %self.lease, "rejoined the cluster with a new lease");
            self.lease = joined.lease;
            self.clock = joined.clock;
            self.node_key_revision = joined.node_key_revision;
            self.publish_clock();
            self.set_health(LeaseHealth::Healthy);
            self.publish(MembershipEvent::Rejoined { lease: self.lease });
        }
    }

    /// Keeps the current lease alive until it is lost or the member stops.
    async fn keep(&mut self, shutdown: &mut oneshot::Receiver<()>) -> Kept {
        let interval = self.shared.config.keepalive_interval();
        let (key_lost, mut key_lost_receiver) = mpsc::channel(1);
        let _node_key_watch = AbortOnDrop(tokio::spawn(
            resilient::run(
                self.shared.stream_clients.clone(),
                WatchSpec {
                    key: self.shared.keys.node(&self.shared.config.node),
                    prefix: false,
                    start_revision: self.node_key_revision + 1,
                    request_timeout: self.shared.config.request_timeout,
                    label: "node key",
                },
                node_key_lost(self.lease, key_lost),
            )
            .in_current_span(),
        ));
        let mut keeper: Option<LeaseKeeper> = None;
        let mut answers: Option<LeaseKeepAliveStream> = None;
        let mut next_send = Instant::now();
        let mut reopen_at = Instant::now();
        loop {
            let now = Instant::now();
            if self.clock.is_expired(now.into_std()) {
                return Kept::Lost(ExpiryReason::EstimatePassed);
            }
            if keeper.is_none() && now >= reopen_at {
                match self.open_stream().await {
                    Ok((opened_keeper, opened_answers)) => {
                        keeper = Some(opened_keeper);
                        answers = Some(opened_answers);
                        next_send = Instant::now() + interval;
                        self.set_healthy();
                    }
                    Err(StreamOpen::LeaseGone) => return Kept::Lost(ExpiryReason::LeaseGone),
                    Err(StreamOpen::Failed(reason)) => {
                        self.stream_clients.rotate();
                        self.set_degraded(&reason);
                        reopen_at = Instant::now() + interval / 2;
                    }
                }
                continue;
            }
            let expiry = Instant::from_std(self.clock.expiry_estimate());
            let answer_due = self.clock.answer_due().map(Instant::from_std);
            let broken = tokio::select! {
                _ = &mut *shutdown => return Kept::Shutdown,
                _ = sleep_until(expiry) => continue,
                Some(()) = key_lost_receiver.recv() => return Kept::Lost(ExpiryReason::NodeKeyLost),
                _ = sleep_until(reopen_at), if keeper.is_none() => continue,
                _ = sleep_until(next_send), if keeper.is_some() => {
                    let sent_at = Instant::now();
                    next_send = sent_at + interval;
                    match keeper.as_mut().map(LeaseKeeper::keep_alive) {
                        Some(send) => match send.await {
                            Ok(()) => {
                                self.clock.sent(sent_at.into_std());
                                None
                            }
                            Err(error) => Some(format!("sending a keepalive failed: {error}")),
                        },
                        None => None,
                    }
                }
                answer = next_answer(&mut answers) => match answer {
                    Answer::Ack(response) if response.ttl() <= 0 => return Kept::Lost(ExpiryReason::LeaseGone),
                    Answer::Ack(response) => {
                        let ttl = Duration::from_secs(u64::try_from(response.ttl()).unwrap_or(0));
                        let round_trip = self.clock.acknowledged(Instant::now().into_std(), ttl);
                        debug!(?round_trip, "keepalive acknowledged");
                        self.publish_clock();
                        self.set_healthy();
                        None
                    }
                    Answer::Broken(reason) => Some(reason),
                },
                _ = sleep_until(answer_due.unwrap_or(expiry)), if answer_due.is_some() => {
                    Some(format!("no keepalive answer within {:?}", self.shared.config.answer_deadline()))
                }
            };
            if let Some(reason) = broken {
                self.stream_clients.rotate();
                keeper = None;
                answers = None;
                self.clock.stream_reset();
                self.set_degraded(&reason);
                // Once at once: a stream closed by a leader change reopens
                // on the new leader straight away.
                reopen_at = Instant::now();
            }
        }
    }

    /// Opens a keepalive stream; opening sends the first keepalive.
    async fn open_stream(&mut self) -> Result<(LeaseKeeper, LeaseKeepAliveStream), StreamOpen> {
        let now = Instant::now();
        let budget = self.shared.config.answer_deadline().min(self.clock.remaining(now.into_std()));
        let mut lease_client = self.stream_clients.current().lease_client();
        match timeout(budget, lease_client.keep_alive(self.lease.0)).await {
            Ok(Ok(opened)) => {
                self.clock.stream_reset();
                self.clock.sent(now.into_std());
                let ttl = self.clock.ttl();
                self.clock.acknowledged(Instant::now().into_std(), ttl);
                self.publish_clock();
                Ok(opened)
            }
            Ok(Err(error)) if is_lease_gone(&error) => Err(StreamOpen::LeaseGone),
            Ok(Err(error)) => Err(StreamOpen::Failed(format!("opening the keepalive stream failed: {error}"))),
            Err(_) => Err(StreamOpen::Failed(format!("opening the keepalive stream took longer than {budget:?}"))),
        }
    }

    /// Joins again after a loss, until it works or the member stops.
    async fn rejoin(&mut self, shutdown: &mut oneshot::Receiver<()>) -> Option<Joined> {
        let previous = self.lease;
        let retry = self.shared.config.keepalive_interval();
        loop {
            let attempt = async {
                // Revoking frees the old node key and every owner key bound
                // to the old lease now, not after etcd times the lease out
                // (an outage can leave it alive on the server for a TTL).
                if let Err(error) = revoke(&self.shared.client, previous, self.shared.config.request_timeout).await {
                    debug!(lease = %previous, %error, "revoking the lost lease failed (it may be gone already)");
                }
                join_once(&self.shared, Some(previous)).await
            };
            tokio::select! {
                _ = &mut *shutdown => return None,
                joined = attempt => match joined {
                    Ok(joined) => return Some(joined),
                    Err(error @ Error::NodeNameTaken { .. }) => error!(%error, "cannot rejoin"),
                    Err(error) => debug!(%error, "rejoining failed; retrying"),
                },
            }
            tokio::select! {
                _ = &mut *shutdown => return None,
                _ = sleep(retry) => {}
            }
        }
    }

    fn set_healthy(&mut self) {
        if self.health != LeaseHealth::Healthy {
            info!(lease = %self.lease, "keepalives acknowledged again");
            self.set_health(LeaseHealth::Healthy);
            self.publish(MembershipEvent::LeaseHealthy { lease: self.lease });
        }
    }

    fn set_degraded(&mut self, reason: &str) {
        if self.health == LeaseHealth::Healthy {
            let remaining = self.clock.remaining(Instant::now().into_std());
            warn!(lease = %self.lease, %reason, ?remaining, "keepalives not acknowledged: quorum lost");
            self.set_health(LeaseHealth::QuorumLost);
            self.publish(MembershipEvent::QuorumLost { lease: self.lease, remaining });
        } else {
            debug!(lease = %self.lease, %reason, "keepalive stream still down");
        }
    }

    fn set_health(&mut self, health: LeaseHealth) {
        self.health = health;
        self.state.send_replace(LeaseState { lease: self.lease, health });
    }

    fn publish(&self, event: MembershipEvent) {
        // No subscriber is fine: the state channel still tells.
        let _ = self.shared.events.send(event);
    }

    fn publish_clock(&self) {
        *self.shared.clock.lock().unwrap_or_else(PoisonError::into_inner) = Some((self.lease, self.clock.clone()));
    }
}

enum StreamOpen {
    LeaseGone,
    Failed(String),
}

async fn next_answer(answers: &mut Option<LeaseKeepAliveStream>) -> Answer {
    let Some(stream) = answers.as_mut() else { return std::future::pending().await };
    match stream.message().await {
        Ok(Some(response)) => Answer::Ack(response),
        Ok(None) => Answer::Broken("the keepalive stream ended".to_string()),
        Err(error) => Answer::Broken(format!("the keepalive stream failed: {error}")),
    }
}

fn is_lease_gone(error: &etcd_client::Error) -> bool {
    match error {
        // etcd-client reports a first answer with TTL 0 this way.
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        // etcd's own words: "etcdserver: requested lease not found".
        etcd_client::Error::GRpcStatus(status) => status.message().contains("lease not found"),
        _ => false,
    }
}

/// The node-key watch's handler: signals once when the key is gone or no
/// longer bound to `lease`.
fn node_key_lost(lease: LeaseId, lost: mpsc::Sender<()>) -> impl FnMut(Change) -> bool {
    move |change| {
        let gone = match change {
            Change::Put(entry) => entry.lease != lease.0,
            Change::Delete { .. } => true,
            Change::Resync(entries) => !entries.iter().any(|entry| entry.lease == lease.0),
        };
        if gone {
            let _ = lost.try_send(());
        }
        !gone
    }
}

/// Aborts a helper task when its owner is done with it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
