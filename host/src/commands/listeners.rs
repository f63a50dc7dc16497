//! The daemon's API listeners: the Unix socket in the data directory
//! (always; mode 0660, its group configurable), and the TCP listener the
//! node file may add (with TLS when `api_tls` names a certificate). The
//! tokens file and the certificate count as they change, without a restart.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use steward_api::reloading::Reloading;
use steward_config::ApiAccess;
use steward_config::tokens::ApiTokens;
use steward_node::NodeView;

/// The listeners, bound and not yet served.
pub struct Listeners {
    unix: tokio::net::UnixListener,
    tcp: Option<(tokio::net::TcpListener, Option<Arc<Reloading<rustls::ServerConfig>>>)>,
    /// What other nodes and operators reach the TCP listener at: `ADDR`,
    /// or `https://ADDR` with TLS; empty without a TCP listener.
    pub api_address: String,
}

impl Listeners {
    /// Binds what `access` asks for; an address or socket in use, or a
    /// certificate that does not load, is an error naming the setting.
    pub async fn bind(access: &ApiAccess) -> anyhow::Result<Listeners> {
        let unix = bind_socket(&access.socket, access.socket_group.as_deref())?;
        let mut api_address = String::new();
        let tcp = match access.tcp {
            None => None,
            Some(address) => {
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address} (node.api); is another daemon running?"))?;
                let local = listener.local_addr()?;
                let tls = match &access.tls {
                    Some(tls) => {
                        let first = steward_api::tls::server_config(&tls.cert.pem, &tls.key.pem)
                            .map_err(|error| anyhow::anyhow!("node.{error}"))?;
                        let (cert, key) = (tls.cert.path.clone(), tls.key.path.clone());
                        let files = vec![cert.clone(), key.clone()];
                        Some(Arc::new(Reloading::new("the API's certificate", files, first, move || {
                            steward_api::tls::server_config_from(&cert, &key)
                        })))
                    }
                    None => None,
                };
                api_address = if tls.is_some() { format!("https://{local}") } else { local.to_string() };
                Some((listener, tls))
            }
        };
        Ok(Listeners { unix, tcp, api_address })
    }

    /// Serves the API on every listener, in tasks of their own.
    pub fn serve(self, view: Arc<NodeView>, access: &ApiAccess) {
        let tokens = access.tokens.clone().map(|tokens| {
            let file = tokens.file.clone();
            let reload = file.clone();
            Arc::new(Reloading::new("the tokens file", vec![file], tokens, move || {
                ApiTokens::load(&reload).map_err(|error| error.to_string())
            }))
        });
        let guard = steward_api::Access { tokens, metrics_open: access.metrics_open };
        let api = steward_api::Api::new(view, guard);
        let unix_api = api.clone();
        tokio::spawn(async move {
            if let Err(error) = steward_api::serve_unix(self.unix, unix_api).await {
                tracing::error!(%error, "the API's Unix socket stopped serving");
            }
        });
        if let Some((listener, tls)) = self.tcp {
            tokio::spawn(async move {
                let served = match tls {
                    Some(config) => match steward_api::tls::TlsListener::new(listener, config) {
                        Ok(listener) => steward_api::serve_tls(listener, api).await,
                        Err(error) => Err(error),
                    },
                    None => steward_api::serve_tcp(listener, api).await,
                };
                if let Err(error) = served {
                    tracing::error!(%error, "the API's TCP listener stopped serving");
                }
            });
        }
    }
}

/// Binds the Unix socket at `path`: a socket file left by a daemon that is
/// gone is replaced, one a live daemon answers on is an error. The socket
/// gets mode 0660 and, if named, `group`.
fn bind_socket(path: &Path, group: Option<&str>) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {} (node.socket)", parent.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another daemon serves the socket {} (node.socket); stop it first", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot replace the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on the socket {} (node.socket)", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    if let Some(group) = group {
        let gid = group_id(group)?;
        std::os::unix::fs::chown(path, None, Some(gid)).with_context(|| {
            format!("cannot give the socket {} to group `{group}` (node.socket_group)", path.display())
        })?;
    }
    Ok(listener)
}

/// The id of group `name`, from `/etc/group`.
fn group_id(name: &str) -> anyhow::Result<u32> {
    let groups = std::fs::read_to_string("/etc/group").context("cannot read /etc/group")?;
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let group = fields.next()?;
            let gid = fields.nth(1)?.parse().ok()?;
            (group == name).then_some(gid)
        })
        .next()
        .with_context(|| format!("node.socket_group: there is no group `{name}` in /etc/group"))
}
