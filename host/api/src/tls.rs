//! TLS on the API's TCP listener (rustls): the node's certificate and key
//! from `[node] api_tls`, and a listener axum serves like any other.
//!
//! A renewed certificate counts from the next handshake: the files are
//! watched through [`Reloading`]. While the new files do not load (a key
//! that does not fit, a file half written) handshakes go on with the last
//! certificate that did, and the log says why.
//!
//! Handshakes run in tasks of their own, each under a deadline, and only
//! finished connections reach axum: a client that stalls its handshake
//! holds up nobody else's.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::reloading::Reloading;

/// How long a client may take over its handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// The server side of TLS from PEM: the certificate chain and its key.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|error| format!("api_tls.cert: not a PEM certificate chain: {error}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|error| format!("api_tls.key: not a PEM private key: {error}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS setup: {error}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| format!("api_tls: the key does not fit the certificate: {error}"))?;
    Ok(config)
}

/// [`server_config`] from the files, for reloading.
pub fn server_config_from(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, String> {
    let read = |field: &str, path: &Path| {
        std::fs::read(path).map_err(|error| format!("api_tls.{field}: cannot read {}: {error}", path.display()))
    };
    server_config(&read("cert", cert)?, &read("key", key)?)
}

/// A TCP listener whose connections are TLS, handshake done.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Accepts on `listener` and shakes hands with the certificate
    /// `config` holds at the time, in the background.
    pub fn new(listener: TcpListener, config: Arc<Reloading<rustls::ServerConfig>>) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (done, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut last_good: Option<Arc<rustls::ServerConfig>> = None;
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, say: wait rather than spin.
                        tracing::warn!(%error, "cannot accept an API connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if let Ok(current) = config.current() {
                    last_good = Some(current);
                }
                // `Reloading::new` starts from a loaded certificate, so
                // there is always a last good one.
                let Some(server) = last_good.clone() else { continue };
                let (acceptor, done) = (TlsAcceptor::from(server), done.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = done.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake refused"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake took too long"),
                    }
                });
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
