//! The crate's one error type.
//!
//! Each variant names what failed (the node, the group, the etcd call) and
//! its message ends with what to do, since these reach an operator through
//! the daemon's log and `steward` commands unchanged.

use std::time::Duration;

use crate::FencingToken;

/// What can go wrong in the cluster layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured lease TTL is below what etcd grants.
    #[error(
        "lease TTL {ttl:?} is below etcd's minimum of 1 s (lease TTLs are whole seconds); set a TTL of at least 1 s"
    )]
    LeaseTtlTooShort { ttl: Duration },

    /// etcd counts lease TTLs in whole seconds; a fraction would be rounded
    /// by the server and the local expiry estimate would disagree with it.
    #[error(
        "lease TTL {ttl:?} is not a whole number of seconds; etcd grants leases in seconds, so use e.g. 1 s or 2 s"
    )]
    LeaseTtlNotWholeSeconds { ttl: Duration },

    /// A cluster, node or group name that cannot be part of an etcd key.
    #[error("{what} name {name:?} is not usable in etcd keys: {reason}")]
    InvalidName { what: &'static str, name: String, reason: &'static str },

    /// The configuration lists no etcd endpoint.
    #[error("no etcd endpoint configured for cluster {cluster:?}; list at least one in `endpoints`")]
    NoEndpoints { cluster: String },

    /// An endpoint whose scheme does not match whether TLS is configured.
    #[error(
        "etcd endpoint {endpoint:?} {}",
        if *tls {
            "is not https:// but TLS is configured; write it as https://HOST:PORT, or drop the TLS settings to talk to etcd unencrypted"
        } else {
            "is https:// but no TLS is configured; give the CA that signed etcd's certificates (and a client certificate and key if etcd checks them), or write it as http://"
        }
    )]
    EndpointScheme { endpoint: String, tls: bool },

    /// The TLS material could not be made into a TLS configuration.
    #[error(
        "the TLS certificates and key for etcd are not usable: {reason}; give PEM files: the CA's certificate, and the node's certificate with its own private key"
    )]
    TlsSetup { reason: String },

    /// The TLS handshake with an etcd member failed: its certificate is not
    /// one the configured CA signed for that address, or it refused ours.
    #[error(
        "TLS with etcd endpoint {endpoint:?} failed: {reason}; check that the CA the node trusts signed that member's server certificate for the host in the URL and, where etcd checks client certificates (--client-cert-auth), that the node's certificate is signed by a CA etcd trusts (--trusted-ca-file)"
    )]
    Tls { endpoint: String, reason: String },

    /// Another live node already holds this node's name.
    #[error(
        "node name {node:?} is already taken in cluster {cluster:?} by the node at {holder_address}; give this node another name, or stop that node first"
    )]
    NodeNameTaken { cluster: String, node: String, holder_address: String },

    /// The lease is not held right now (an outage, a fence, or not joined yet).
    #[error(
        "node {node:?} holds no valid lease right now ({state}); wait for it to rejoin the cluster before acting for groups"
    )]
    NoLease { node: String, state: &'static str },

    /// A write for a group was refused because this node's token is stale.
    #[error(
        "write for group {group:?} refused: fencing token {token} is stale (the group is now {current}); this node no longer owns the group and must stop acting for it"
    )]
    StaleFencingToken { group: String, token: FencingToken, current: String },

    /// Another apply changed the shared configuration after this one was checked.
    #[error(
        "the shared configuration changed after these files were checked (they were checked against revision {checked_against}); nothing was written: run `steward apply` again"
    )]
    ConfigChanged { checked_against: i64 },

    /// The applied files would not fit in one etcd request.
    #[error(
        "the configuration takes {bytes} bytes, over the {limit} etcd takes in one write; split large property values out, or apply fewer groups"
    )]
    ConfigTooLarge { bytes: usize, limit: usize },

    /// etcd did not answer within the configured deadline.
    #[error(
        "etcd did not answer {operation} within {timeout:?}; check that a quorum of etcd members is up and reachable"
    )]
    Timeout { operation: &'static str, timeout: Duration },

    /// etcd answered with an error, or the connection failed.
    #[error("etcd {operation} failed: {source}; check the etcd endpoints and that a quorum of members is up")]
    Etcd {
        operation: &'static str,
        #[source]
        source: etcd_client::Error,
    },

    /// A value stored by Steward in etcd could not be read back.
    #[error("value at etcd key {key:?} is not what Steward writes ({reason}); remove the key or fix the writer")]
    CorruptValue { key: String, reason: String },

    /// The member's background task is gone (it panicked or was shut down).
    #[error("the membership task of node {node:?} has stopped; restart the node")]
    MembershipStopped { node: String },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
