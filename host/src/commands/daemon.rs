//! `steward daemon --config FILE`: runs the node: loads the configuration,
//! opens the state store, serves the API at once, then has the node load
//! its plugins, check the configuration against them and run until SIGTERM
//! or SIGINT. Under a `Type=notify` systemd unit, it tells the service
//! manager how it goes ([`notify`]).

mod notify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use steward_monitor::runtime::{Runtime, RuntimeConfig};
use steward_monitor::text::escape_control;
use steward_node::cluster::ClusterOwnership;
use steward_node::state::StateStore;
use steward_node::{Node, Ownership, SingleNode};

use super::listeners::Listeners;

/// Scratch instances for `metadata` and `validate` calls at once.
const SCRATCH_INSTANCE_SLOTS: u32 = 64;

/// Arguments of `steward daemon`.
#[derive(clap::Args)]
pub struct Args {
    /// The node's configuration file.
    #[arg(long, short, default_value = "steward.toml")]
    config: PathBuf,
}

/// Runs the daemon until it is told to stop.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = match steward_config::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            crate::init_tracing(false, "info");
            eprintln!("error: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    crate::init_tracing(config.log_format == steward_config::LogFormat::Json, "info");
    let manager = notify::ServiceManager::from_env();
    // Instances live in the monitor workers; the daemon's own engine runs
    // only `metadata` and `validate` in scratch instances.
    let runtime = Runtime::new(&RuntimeConfig {
        max_live_instances: SCRATCH_INSTANCE_SLOTS,
        cache_dir: Some(config.data_dir.join("compile-cache")),
    })?;
    let store = std::sync::Arc::new(StateStore::open(&config.data_dir)?);
    let listeners = Listeners::bind(&config.api).await?;
    let api = listeners.api_address.clone();
    if let (Some(manager), Some(cluster)) = (&manager, &config.cluster) {
        manager.status(&format!("joining cluster `{}`", cluster.name));
    }
    // The API serves while the plugins compile: `steward status` shows each
    // resource waiting for its type rather than failing to connect.
    // Alone, the node owns every group; in a cluster, etcd decides.
    let (ownership, ownership_events, member, cluster_view): (Box<dyn Ownership>, _, _, _) = match &config.cluster {
        None => {
            let (ownership, events) = SingleNode::new(store.clone());
            (Box::new(ownership), events, None, None)
        }
        Some(cluster) => match join_cluster(&config, cluster, api.clone()).await {
            Ok(member) => {
                let (ownership, events, view) =
                    ClusterOwnership::start(&member, cluster.lease_ttl, cluster.safety_margin);
                (Box::new(ownership), events, Some(member), Some(view))
            }
            Err(error) => {
                eprintln!("error: {}: [cluster]: {error}", args.config.display());
                return Ok(ExitCode::FAILURE);
            }
        },
    };
    // In a cluster, an applied shared configuration takes the place of the
    // node file's groups and resources.
    let mut shared = None;
    if let Some(member) = &member {
        let shared_store = member.ownership().shared_config();
        let applied = match shared_store.read().await {
            Ok(applied) => applied,
            Err(error) => {
                eprintln!("error: cannot read the cluster's shared configuration: {error}");
                return Ok(ExitCode::FAILURE);
            }
        };
        if let Some(applied) = &applied {
            match config.with_shared(&applied.config.named_texts()) {
                Ok(merged) => {
                    if !config.groups.is_empty() {
                        tracing::warn!(
                            file = %args.config.display(),
                            revision = applied.revision,
                            "the node file's groups are not used: the cluster runs its shared configuration"
                        );
                    }
                    config = merged;
                }
                Err(error) => {
                    eprintln!(
                        "error: the cluster's shared configuration (revision {}, applied by {}) does not fit this node: {error}",
                        applied.revision,
                        escape_control(&applied.config.applied_by)
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        shared = Some((shared_store, applied));
    }
    let mut node = Node::start(config.clone(), runtime, store, ownership, ownership_events, cluster_view)?;
    if let Some((shared_store, applied)) = shared {
        node.share_config(shared_store, applied);
    }
    if let Some(manager) = &manager {
        // Ready once the API serves (its task is spawned below, long before
        // the plugins are loaded) and the node started its groups.
        node.supervise(Box::new(notify::Notifier::new(manager.clone(), notify::watchdog_from_env())));
    }
    forward_hangups(node.view());
    listeners.serve(node.view(), &config.api);
    let socket = config.api.socket.display();
    tracing::info!(node = %config.name, %api, %socket, resources = config.resources.len(), "daemon started; loading plugins");
    match config.api.tcp {
        Some(_) => println!("steward daemon: node `{}`, API on unix:{socket} and {api}", config.name),
        None => println!("steward daemon: node `{}`, API on unix:{socket}", config.name),
    }
    let shutdown = {
        let manager = manager.clone();
        async move {
            shutdown_signal().await;
            if let Some(manager) = manager {
                manager.notify("STOPPING=1");
            }
        }
    };
    if let Err(errors) = node.run(shutdown).await {
        if let Some(manager) = &manager {
            manager.status(&format!("the configuration has {} error(s); see the log", errors.len()));
        }
        for error in &errors {
            // Plugins' `validate` problems are the plugins' own text.
            eprintln!("error: {}", escape_control(&error.to_string()));
        }
        eprintln!(
            "the daemon did not start: fix the {} error(s) above (`steward validate` checks without starting)",
            errors.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    if let Some(member) = member {
        // The groups are offline (or left running, as configured): the
        // lease goes now, so other nodes take them at once.
        if let Err(error) = member.leave().await {
            tracing::warn!(%error, "cannot revoke the cluster lease; it runs out by itself");
        }
    }
    tracing::info!("daemon stopped");
    Ok(ExitCode::SUCCESS)
}

/// Joins the cluster `[cluster]` names, over TLS when it says so; a node
/// name taken by another live node, an unreachable etcd, a certificate
/// either side refuses or a lease etcd refuses is an error.
async fn join_cluster(
    config: &steward_config::NodeConfig,
    cluster: &steward_config::ClusterSettings,
    api: String,
) -> Result<steward_cluster::Member, steward_cluster::Error> {
    let info = steward_cluster::NodeInfo {
        api_address: api,
        version: env!("CARGO_PKG_VERSION").to_string(),
        plugins: steward_cluster::PluginInventory::new(),
        plugins_known: false,
    };
    let mut settings =
        steward_cluster::ClusterConfig::new(cluster.name.clone(), cluster.endpoints.clone(), config.name.clone(), info);
    settings.lease_ttl = cluster.lease_ttl;
    settings.request_timeout = cluster.request_timeout;
    settings.tls = cluster.tls.as_ref().map(|tls| steward_cluster::EtcdTls {
        ca_pem: tls.ca.pem.clone(),
        client: tls.client.as_ref().map(|client| steward_cluster::ClientIdentity {
            cert_pem: client.cert.pem.clone(),
            key_pem: client.key.pem.clone(),
        }),
    });
    // A node key holding this very API address is this node's own, left by
    // a daemon that died within the last lease TTL (this one holds the
    // address now, so that one is gone): its lease runs out by itself.
    let mut waits = 0;
    let member = loop {
        match steward_cluster::join(settings.clone()).await {
            Err(steward_cluster::Error::NodeNameTaken { holder_address, .. })
                if !holder_address.is_empty() && holder_address == settings.info.api_address && waits < 2 =>
            {
                waits += 1;
                tracing::warn!(
                    node = %config.name,
                    "the node key is still held by this node's previous daemon; waiting for its lease to run out"
                );
                tokio::time::sleep(cluster.lease_ttl + Duration::from_millis(250)).await;
            }
            outcome => break outcome?,
        }
    };
    tracing::info!(cluster = %cluster.name, node = %config.name, tls = cluster.tls.is_some(), "joined the cluster");
    Ok(member)
}

/// SIGHUP reloads the configuration, as daemons conventionally do.
fn forward_hangups(view: std::sync::Arc<steward_node::NodeView>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::error!(%error, "cannot watch SIGHUP; use `steward reload`");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let (reply, answer) = tokio::sync::oneshot::channel();
            if view.node_requests.send(steward_node::NodeRequest::Reload { reply }).is_err() {
                return;
            }
            match answer.await {
                Ok(Ok(report)) => tracing::info!(?report, "configuration reloaded on SIGHUP"),
                Ok(Err(error)) => tracing::error!(%error, "configuration not reloaded"),
                Err(_) => return,
            }
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(error) => {
            tracing::error!(%error, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
