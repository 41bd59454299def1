//! Errors reported when a [`crate::Config`] cannot become a snapshot.

use std::net::SocketAddr;

/// Why a configuration was rejected; the snapshot that was serving keeps serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Two clusters share a name.
    #[error("duplicate cluster {cluster:?}")]
    DuplicateCluster {
        /// The repeated name.
        cluster: String,
    },
    /// Two virtual hosts share a name.
    #[error("duplicate virtual host {virtual_host:?}")]
    DuplicateVirtualHost {
        /// The repeated name.
        virtual_host: String,
    },
    /// A domain is claimed twice, by one or by two virtual hosts.
    #[error("domain {domain:?} of virtual host {virtual_host:?} is already claimed by {other:?}")]
    DuplicateDomain {
        /// The domain, lowercased.
        domain: String,
        /// The virtual host that claims it second.
        virtual_host: String,
        /// The virtual host that claimed it first.
        other: String,
    },
    /// A domain is empty or uses `*` other than as "*" or a leading "*.".
    #[error("invalid domain {domain:?} in virtual host {virtual_host:?}: {reason}")]
    InvalidDomain {
        /// The domain as configured.
        domain: String,
        /// Its virtual host.
        virtual_host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A route's path prefix does not start with `/`.
    #[error("path prefix {prefix:?} in virtual host {virtual_host:?} does not start with '/'")]
    InvalidPathPrefix {
        /// The virtual host.
        virtual_host: String,
        /// The prefix as configured.
        prefix: String,
    },
    /// Two routes of one virtual host have the same prefix.
    #[error("virtual host {virtual_host:?} has two routes with path prefix {prefix:?}")]
    DuplicateRoute {
        /// The virtual host.
        virtual_host: String,
        /// The repeated prefix.
        prefix: String,
    },
    /// A route names a cluster that is not configured.
    #[error("route {prefix:?} in virtual host {virtual_host:?} names unknown cluster {cluster:?}")]
    UnknownCluster {
        /// The virtual host.
        virtual_host: String,
        /// The route's prefix.
        prefix: String,
        /// The missing cluster.
        cluster: String,
    },
    /// `update_endpoints` named a cluster that is not configured.
    #[error("no cluster named {cluster:?}")]
    NoSuchCluster {
        /// The name asked for.
        cluster: String,
    },
    /// An endpoint has weight 0.
    #[error("endpoint {address} of cluster {cluster:?} has weight 0")]
    ZeroWeight {
        /// The cluster.
        cluster: String,
        /// The endpoint.
        address: SocketAddr,
    },
    /// A connect timeout of 0 ms.
    #[error("cluster {cluster:?} has a connect timeout of 0 ms")]
    ZeroConnectTimeout {
        /// The cluster.
        cluster: String,
    },
    /// Two listeners share a name.
    #[error("duplicate listener {listener:?}")]
    DuplicateListener {
        /// The repeated name.
        listener: String,
    },
    /// Two listeners (or a listener and the admin listener) share an address.
    #[error("listener {listener:?} binds {address}, which another listener already binds")]
    DuplicateListenerAddress {
        /// The listener named second.
        listener: String,
        /// The address.
        address: SocketAddr,
    },
    /// A certificate or CA bundle cannot be used.
    #[error("certificate {certificate:?}: {reason}")]
    Certificate {
        /// The certificate's name (or the listener's, for a client CA bundle).
        certificate: String,
        /// What is wrong.
        reason: String,
    },
    /// A listener's fields do not fit its protocol.
    #[error("listener {listener:?}: {reason}")]
    InvalidListener {
        /// The listener.
        listener: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A TCP listener names a cluster that is not configured.
    #[error("listener {listener:?} names unknown cluster {cluster:?}")]
    ListenerUnknownCluster {
        /// The listener.
        listener: String,
        /// The missing cluster.
        cluster: String,
    },
    /// An endpoint address that cannot be written as a request authority.
    #[error("endpoint {address} of cluster {cluster:?} cannot be used as an HTTP authority")]
    UnsupportedAddress {
        /// The cluster.
        cluster: String,
        /// The endpoint.
        address: SocketAddr,
    },
    /// A route field is invalid; `field` names it (`headers[1].regex`, `host_rewrite`, ...).
    #[error("route {prefix:?} in virtual host {virtual_host:?}: {field}: {reason}")]
    InvalidRoute {
        /// The virtual host.
        virtual_host: String,
        /// The route's path prefix.
        prefix: String,
        /// The offending field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A cluster field is invalid; `field` names it (`circuit_breakers.max_requests`, ...).
    #[error("cluster {cluster:?}: {field}: {reason}")]
    InvalidCluster {
        /// The cluster.
        cluster: String,
        /// The offending field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A field of `limits` is invalid.
    #[error("limits: {field}: {reason}")]
    InvalidLimit {
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}
