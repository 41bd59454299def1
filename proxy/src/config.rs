//! Inert, serde-friendly proxy configuration.
//!
//! Nothing here is validated; [`crate::Proxy::new`] and [`crate::Proxy::apply`] turn a
//! [`Config`] into a running snapshot and report every problem as a [`crate::ConfigError`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The whole L7 configuration of one node's proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Virtual hosts, matched by the request's Host (port stripped, case-insensitive).
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    /// Upstream clusters referenced by routes.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// Listeners that [`crate::run_from_file`] binds; [`crate::Proxy`] itself ignores them
    /// beyond validation (its callers hand it bound sockets).
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// The admin listener (metrics, config and endpoint dumps), if any.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Certificates for TLS listeners, chosen by SNI.
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    /// Bounds on what clients can make a listener hold; they apply to listeners started
    /// after the config is applied.
    #[serde(default)]
    pub limits: Limits,
    /// What the proxy does with `X-Request-Id`, default `keep`.
    #[serde(default)]
    pub request_id: RequestIdPolicy,
}

/// `X-Request-Id` handling. The id goes to the upstream, back on the response (also on
/// answers the proxy makes itself) and into the access log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestIdPolicy {
    /// Keep a valid incoming id (1 to 128 characters of `A-Z a-z 0-9 - _ . : + / =`),
    /// else generate one (a UUID-shaped value unique to this proxy process).
    #[default]
    Keep,
    /// Always generate a new id: for an edge proxy whose clients are not trusted to pick them.
    Generate,
    /// Neither read nor add the header (requests pass it through untouched).
    Off,
}

/// Resource bounds of every listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Open client connections per listener at most, default 10000; accepting pauses at the
    /// bound and the backlog queues in the kernel.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Request head size at most in bytes, default 65536.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Header fields in a request at most, default 100 (HAProxy allows 101); more are answered
    /// with 431. Must be at least 1.
    #[serde(default = "default_max_header_count")]
    pub max_header_count: usize,
    /// Time allowed to receive an HTTP/1 request head in milliseconds (slowloris bound),
    /// default 10000. Past it a client that sent part of a head, or nothing yet on a new
    /// connection, gets 408 and the connection closes (as HAProxy's `timeout http-request`);
    /// an idle keep-alive connection just closes.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// How long open connections may take to finish after their listener stops, in
    /// milliseconds, default 5000.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            max_header_bytes: default_max_header_bytes(),
            max_header_count: default_max_header_count(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            drain_timeout_ms: default_drain_timeout_ms(),
        }
    }
}

fn default_drain_timeout_ms_cluster() -> u64 {
    30_000
}

/// A UDP session's idle timeout when the listener sets none.
pub(crate) const DEFAULT_UDP_IDLE_TIMEOUT_MS: u64 = 60_000;

/// A TCP connection's idle timeout when the listener sets none: Envoy's default of one hour.
pub(crate) const DEFAULT_TCP_IDLE_TIMEOUT_MS: u64 = 3_600_000;

fn default_max_connections() -> usize {
    10_000
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}

fn default_max_header_count() -> usize {
    100
}

fn default_header_read_timeout_ms() -> u64 {
    10_000
}

fn default_drain_timeout_ms() -> u64 {
    5_000
}

/// A socket the proxy accepts connections on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Name, unique among listeners; in logs and metrics.
    pub name: String,
    /// Address to bind.
    pub address: SocketAddr,
    /// What is spoken on it.
    pub protocol: ListenerProtocol,
    /// For `tcp`: the cluster every connection goes to, to one endpoint chosen by the
    /// cluster's LB policy (`ring_hash`/`maglev` hash the client's IP address). Not allowed
    /// for `http`, which serves every virtual host.
    #[serde(default)]
    pub cluster: Option<String>,
    /// For `tcp`: send a PROXY protocol header of this version to the upstream first.
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// For `udp`: a session ends after this many milliseconds without a datagram either way,
    /// default 60000. For `tcp`: a connection is closed (both sides) after this many
    /// milliseconds without a byte either way, default 3600000 (one hour, as Envoy); 0 turns
    /// it off. Not allowed for `http`.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Terminate TLS (1.2 and 1.3) on this listener (`http` only).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// For `http`: every request on this listener goes to this virtual host, whatever its
    /// Host header (a service VIP, which clients reach under any name: `hello`,
    /// `hello.shop`, the address). Default: the virtual host is chosen by Host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_host: Option<String>,
}

/// TLS termination on a listener. The certificate is chosen per handshake by SNI from the
/// config's `certificates`: exact domain, then a wildcard for the parent domain (one label,
/// as X.509 allows), then `default_certificate`.
/// A config update swaps the certificates for new handshakes; open connections keep theirs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Name of the certificate served when SNI is absent or matches no domain; without it
    /// such handshakes fail.
    #[serde(default)]
    pub default_certificate: Option<String>,
    /// PEM bundle of CAs; when set, clients must present a certificate one of them signed.
    #[serde(default)]
    pub client_ca_pem: Option<String>,
}

/// A certificate chain and its private key, PEM, inline or from files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Name, unique among certificates; listeners name their default by it.
    pub name: String,
    /// Domains it is served for: exact ("app.example.com") or wildcard ("*.example.com").
    #[serde(default)]
    pub domains: Vec<String>,
    /// The chain, leaf first, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1). Never shown by the admin dump.
    #[serde(default, skip_serializing)]
    pub key_pem: Option<String>,
    /// Read the chain from this file instead, at each (re)load.
    #[serde(default)]
    pub cert_file: Option<std::path::PathBuf>,
    /// Read the key from this file instead, at each (re)load.
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
}

/// The protocol of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// HTTP/1.1 and h2c (L7): every virtual host is served.
    Http,
    /// Plain TCP (L4), spliced to one endpoint of [`Listener::cluster`].
    Tcp,
    /// UDP: a session per client address, relayed to one endpoint of [`Listener::cluster`]
    /// until idle for [`Listener::idle_timeout_ms`].
    Udp,
}

/// PROXY protocol version sent to upstreams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocol {
    /// The text header ("PROXY TCP4 ...\r\n").
    V1,
    /// The binary header.
    V2,
}

/// The admin listener: `/metrics` (Prometheus), `/config` (live config as JSON), `/endpoints`
/// (per-endpoint state as JSON), `/ready`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address to bind; keep it on loopback or a management network.
    pub address: SocketAddr,
}

/// A set of domains sharing one route table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    /// Name, unique among virtual hosts; used in errors and logs.
    pub name: String,
    /// Exact domains ("hello.localhost"), wildcard suffixes ("*.example.com"), or "*" for the
    /// default host. Exact beats wildcard (longest suffix first) beats "*".
    ///
    /// A wildcard is always `*.` followed by a suffix and matches one or more whole labels:
    /// "*.example.com" matches "a.example.com" and "a.b.example.com" but not "example.com".
    pub domains: Vec<String>,
    /// Routes: the longest matching path prefix wins; among routes of one prefix, the first
    /// whose header matches all hold.
    pub routes: Vec<Route>,
}

/// Sends requests whose path starts with a prefix (and whose headers match) to a cluster,
/// optionally rewriting them on the way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Path prefix, default "/"; the longest matching prefix wins.
    ///
    /// Matching is segment-aware: "/api" matches "/api", "/api/" and "/api/v1" but not
    /// "/apix"; a prefix ending in "/" ("/api/") matches any path that starts with it. The path
    /// is compared as received (no percent-decoding or dot-segment normalisation), query
    /// excluded.
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Name of the cluster to send to.
    pub cluster: String,
    /// Conditions on request headers, all of which must hold; none by default. Routes of the
    /// same prefix are tried in config order, so a route without header matches after them
    /// is the fallback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Host header sent upstream instead of the client's (which stays in
    /// `X-Forwarded-Host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    /// Headers set on (or appended to) the request sent upstream, after removals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderToAdd>,
    /// Headers removed from the request before it goes upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_remove: Vec<String>,
    /// Headers set on (or appended to) the response sent to the client, after removals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderToAdd>,
    /// Headers removed from the response before it goes to the client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_remove: Vec<String>,
    /// Request timeout for this route in milliseconds (sending to response head; 0 disables),
    /// instead of the cluster's `request_timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retry policy for this route instead of the cluster's `retries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
}

impl Default for Route {
    fn default() -> Self {
        Self {
            path_prefix: default_prefix(),
            cluster: String::new(),
            headers: Vec::new(),
            host_rewrite: None,
            request_headers_to_add: Vec::new(),
            request_headers_to_remove: Vec::new(),
            response_headers_to_add: Vec::new(),
            response_headers_to_remove: Vec::new(),
            timeout_ms: None,
            retries: None,
        }
    }
}

/// A condition on one request header; give exactly one of `exact`, `prefix`, `regex` and
/// `present`: `{name: x-canary, exact: "1"}`, `{name: x-version, prefix: "v2"}`,
/// `{name: x-user, regex: "[a-f0-9]{8}"}`, `{name: x-debug, present: true}`,
/// `{name: authorization, present: false}` (absent). A header sent several times matches if
/// one of its values does. `regex` must match the whole value (RE2-like syntax of the
/// `regex` crate, linear time).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name, case-insensitive.
    pub name: String,
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The whole value matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: the header is present (any value); `false`: it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// A header a route adds: `{name: x-env, value: prod}` replaces any value the message had;
/// with `append: true` it is added beside them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderToAdd {
    /// Header name.
    pub name: String,
    /// Header value (visible ASCII, spaces and tabs).
    pub value: String,
    /// Keep existing values and add this one, default false (replace).
    #[serde(default)]
    pub append: bool,
}

/// A named group of interchangeable upstream endpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Name, unique among clusters; routes refer to it.
    pub name: String,
    /// How a request picks one of the endpoints.
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// The endpoints; an empty set answers 503 at once. An address listed twice counts once,
    /// with its first weight.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Connect timeout in milliseconds, default 1000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Where `ring_hash` and `maglev` take the request's key from; default the client's IP
    /// address. A request without the key (header or cookie absent) gets a random endpoint.
    #[serde(default)]
    pub hash_policy: HashPolicy,
    /// Time from sending the request to receiving the response head, in milliseconds; past it
    /// the client gets 504. 0 disables it. Default 15000 (Envoy's route default).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// What the endpoints speak: `http1` (default) or `h2` (HTTP/2 with prior knowledge,
    /// multiplexing every request of the cluster over one connection per endpoint).
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
    /// How long responses from a removed endpoint may keep streaming, in milliseconds,
    /// default 30000; then they are cut. New requests stop at once on removal.
    #[serde(default = "default_drain_timeout_ms_cluster")]
    pub drain_timeout_ms: u64,
    /// When a failed request is sent again, to another endpoint.
    #[serde(default)]
    pub retries: RetryPolicy,
    /// Passive health: endpoints that fail in a row are ejected for a while. On by default.
    #[serde(default = "default_outlier_detection")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Active health checks; none by default (endpoints count as healthy).
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Cookie-based session affinity, on top of the LB policy (which picks the first
    /// endpoint of a session and the next one when the pinned endpoint is gone).
    #[serde(default)]
    pub sticky: Option<StickySessions>,
    /// Limits past which requests are refused with 503 at once instead of piling up on a
    /// struggling cluster; none by default.
    #[serde(default)]
    pub circuit_breakers: Option<CircuitBreakers>,
    /// Speak TLS to the endpoints; plaintext by default.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
}

/// Envoy's circuit breakers for one cluster: past a limit a request gets 503 at once, and
/// `berth_proxy_cluster_overflow_total{cluster,kind}` counts it (`kind` is `connections`,
/// `pending` or `requests`); `berth_proxy_cluster_breaker_remaining{cluster,kind}` shows the
/// room left under each. Each limit defaults to 1024 (Envoy's) and must be at least 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    /// Upstream connections open to the cluster's endpoints at most (all of them together); a
    /// request that needs a new connection past it is refused.
    #[serde(default = "default_breaker_limit")]
    pub max_connections: u32,
    /// Requests waiting for a new upstream connection at most: connection attempts (TCP
    /// connect and TLS handshake) in progress, since each such request starts one.
    #[serde(default = "default_breaker_limit")]
    pub max_pending_requests: u32,
    /// Requests in flight to the cluster at most; a request counts once, however often it
    /// is retried (retries have their own bound, the retry budget).
    #[serde(default = "default_breaker_limit")]
    pub max_requests: u32,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        Self {
            max_connections: default_breaker_limit(),
            max_pending_requests: default_breaker_limit(),
            max_requests: default_breaker_limit(),
        }
    }
}

fn default_breaker_limit() -> u32 {
    1024
}

/// TLS from the proxy to a cluster's endpoints (TLS 1.2 and 1.3, rustls): for requests of
/// HTTP listeners, for connections of TCP listeners (a PROXY header goes first, in clear, as
/// HAProxy sends it) and for HTTP health checks. A failed handshake or verification is a
/// connect failure: retried on another endpoint, else 502.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Server name sent as SNI and verified against the endpoint's certificate; default the
    /// endpoint's host (its IP address, which is verified against the certificate's IP
    /// address names and sent without SNI, as RFC 6066 requires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// PEM bundle of the CAs trusted to sign endpoint certificates; without it (and without
    /// `ca_file`), the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Read the CA bundle from this file instead, at each (re)load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate chain (PEM) presented to endpoints that ask for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    /// Its private key (PEM). Never shown by the admin dump.
    #[serde(default, skip_serializing)]
    pub client_key_pem: Option<String>,
    /// Read the client chain from this file instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<std::path::PathBuf>,
    /// Read the client key from this file instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<std::path::PathBuf>,
    /// ALPN protocols offered; default `h2` for an `h2` cluster, `http/1.1` otherwise. The
    /// cluster's `upstream_protocol` decides what is spoken, so offer that one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
}

/// Passive outlier detection: consecutive failures (connect errors, resets, timeouts, 5xx)
/// eject an endpoint for `base_ejection_ms` times the number of its ejections so far, capped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Failures in a row that eject, default 5.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection time in milliseconds, default 10000.
    #[serde(default = "default_base_ejection_ms")]
    pub base_ejection_ms: u64,
    /// Longest ejection in milliseconds, default 300000.
    #[serde(default = "default_max_ejection_ms")]
    pub max_ejection_ms: u64,
    /// Share of the cluster's endpoints that may be ejected at once, in percent, default 50;
    /// one endpoint may always be ejected.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive_failures(),
            base_ejection_ms: default_base_ejection_ms(),
            max_ejection_ms: default_max_ejection_ms(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

#[expect(clippy::unnecessary_wraps, reason = "serde default of an Option field")]
fn default_outlier_detection() -> Option<OutlierDetection> {
    Some(OutlierDetection::default())
}

fn default_consecutive_failures() -> u32 {
    5
}

fn default_base_ejection_ms() -> u64 {
    10_000
}

fn default_max_ejection_ms() -> u64 {
    300_000
}

fn default_max_ejection_percent() -> u32 {
    50
}

/// Active health checking of every endpoint of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Time between checks of one endpoint in milliseconds, default 5000.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Time a check may take in milliseconds, default 1000.
    #[serde(default = "default_connect_timeout_ms")]
    pub timeout_ms: u64,
    /// Passing checks in a row that make a down endpoint healthy, default 2.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Failing checks in a row that take an endpoint down, default 3.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// `GET` this path and expect a 2xx or 3xx answer; without it the check is a TCP connect.
    #[serde(default)]
    pub http_path: Option<String>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            interval_ms: default_interval_ms(),
            timeout_ms: default_connect_timeout_ms(),
            healthy_threshold: default_healthy_threshold(),
            unhealthy_threshold: default_unhealthy_threshold(),
            http_path: None,
        }
    }
}

fn default_interval_ms() -> u64 {
    5_000
}

fn default_healthy_threshold() -> u32 {
    2
}

fn default_unhealthy_threshold() -> u32 {
    3
}

/// Hard cookie affinity: the cookie holds an HMAC-signed endpoint identity (no address) and
/// its expiry; a forged, expired or unknown cookie is ignored and replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickySessions {
    /// Cookie name, default "berth_sticky".
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// Cookie path, default "/".
    #[serde(default = "default_prefix")]
    pub path: String,
    /// Lifetime in seconds, default 3600; 0 makes a session cookie that the proxy honours
    /// for 24 hours at most.
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
    /// HMAC key (any string, at least 16 bytes). Proxies that must honour each other's
    /// cookies share it. Empty: a random key per proxy process and cluster. Never shown by
    /// the admin dump.
    #[serde(default, skip_serializing)]
    pub secret: String,
    /// Add the `Secure` attribute (send over HTTPS only), default false.
    #[serde(default)]
    pub secure: bool,
}

impl Default for StickySessions {
    fn default() -> Self {
        Self {
            cookie_name: default_cookie_name(),
            path: default_prefix(),
            ttl_s: default_ttl_s(),
            secret: String::new(),
            secure: false,
        }
    }
}

fn default_cookie_name() -> String {
    "berth_sticky".to_owned()
}

fn default_ttl_s() -> u64 {
    3600
}

/// The protocol spoken to a cluster's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 over cleartext (h2c, prior knowledge).
    H2,
}

/// Retries: a connect failure is always retried (no byte of the request left); a reset or a
/// 5xx answer is retried only for idempotent methods whose body was not sent yet, and only
/// within the retry budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries per request at most, default 2; 0 disables retries.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Retry idempotent requests answered with a 5xx status, default true.
    #[serde(default = "yes")]
    pub on_5xx: bool,
    /// Retries (other than after connect failures) in flight at most, as a percentage of the
    /// cluster's requests in flight, default 20 (Envoy's retry budget).
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// Retries always allowed in flight whatever the budget says, default 3.
    #[serde(default = "default_min_retry_concurrency")]
    pub min_retry_concurrency: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: default_max_retries(),
            on_5xx: true,
            budget_percent: default_budget_percent(),
            min_retry_concurrency: default_min_retry_concurrency(),
        }
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            name: String::new(),
            lb_policy: LbPolicy::default(),
            endpoints: Vec::new(),
            connect_timeout_ms: default_connect_timeout_ms(),
            hash_policy: HashPolicy::default(),
            request_timeout_ms: default_request_timeout_ms(),
            retries: RetryPolicy::default(),
            drain_timeout_ms: default_drain_timeout_ms_cluster(),
            upstream_protocol: UpstreamProtocol::default(),
            sticky: None,
            outlier_detection: default_outlier_detection(),
            health_check: None,
            circuit_breakers: None,
            tls: None,
        }
    }
}

/// What a hashing LB policy hashes: `{from: source_ip}`, `{from: header, name: x-user}`,
/// `{from: cookie, name: session}` or `{from: path}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum HashPolicy {
    /// The client's IP address (source-IP affinity); the only key on TCP listeners.
    #[default]
    SourceIp,
    /// The value of a request header.
    Header {
        /// Header name.
        name: String,
    },
    /// The value of a cookie.
    Cookie {
        /// Cookie name.
        name: String,
    },
    /// The request path, query excluded.
    Path,
}

/// Load-balancing policy of a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Smooth weighted round robin (nginx's algorithm): weights honoured, picks interleaved.
    #[default]
    RoundRobin,
    /// Power of two choices: of two random endpoints, the one with fewer requests in flight
    /// relative to its weight. In-flight counts survive config updates.
    LeastRequest,
    /// Weighted random.
    Random,
    /// Consistent hashing on a ketama-compatible ring (libketama's MD5 points), keyed by
    /// [`Cluster::hash_policy`]: removing one of N endpoints moves about 1/N of the keys.
    RingHash,
    /// Maglev consistent hashing (lookup table of 65537 entries), keyed by
    /// [`Cluster::hash_policy`]: faster lookups and more even spread than the ring, slightly
    /// more keys moved on change.
    Maglev,
}

/// One upstream address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Address to connect to.
    pub address: SocketAddr,
    /// Relative weight, default 1; must be at least 1.
    #[serde(default = "one")]
    pub weight: u32,
}

impl Endpoint {
    /// An endpoint of weight 1.
    pub fn new(address: SocketAddr) -> Self {
        Self { address, weight: 1 }
    }
}

fn default_prefix() -> String {
    "/".to_owned()
}

fn default_connect_timeout_ms() -> u64 {
    1000
}

fn default_request_timeout_ms() -> u64 {
    15_000
}

fn default_max_retries() -> u32 {
    2
}

fn yes() -> bool {
    true
}

fn default_budget_percent() -> u32 {
    20
}

fn default_min_retry_concurrency() -> u32 {
    3
}

fn one() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in() {
        let config: Config = serde_json::from_str(
            r#"{"virtual_hosts":[{"name":"v","domains":["*"],"routes":[{"cluster":"c"}]}],
                "clusters":[{"name":"c","endpoints":[{"address":"127.0.0.1:80"}]}]}"#,
        )
        .unwrap();
        assert_eq!(config.virtual_hosts[0].routes[0].path_prefix, "/");
        let cluster = &config.clusters[0];
        assert_eq!(cluster.lb_policy, LbPolicy::RoundRobin);
        assert_eq!(cluster.connect_timeout_ms, 1000);
        assert_eq!(cluster.endpoints[0].weight, 1);
        assert_eq!(
            serde_json::from_str::<Config>("{}").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn new_fields_round_trip_and_keys_stay_hidden() {
        let yaml = r#"
request_id: generate
limits: {max_header_count: 50}
listeners: [{name: t, address: "127.0.0.1:9", protocol: tcp, cluster: c, idle_timeout_ms: 0}]
virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
      - path_prefix: /
        cluster: c
        headers: [{name: x-a, exact: "1"}, {name: x-b, regex: "v[0-9]"}, {name: x-c, present: false}]
        host_rewrite: internal
        request_headers_to_add: [{name: x-env, value: prod, append: true}]
        request_headers_to_remove: [x-debug]
        response_headers_to_add: [{name: x-served-by, value: berth}]
        response_headers_to_remove: [server]
        timeout_ms: 100
        retries: {max_retries: 1}
clusters:
  - name: c
    circuit_breakers: {max_requests: 10}
    tls: {sni: c.internal, ca_pem: "PEM", client_cert_pem: "CERT", client_key_pem: "KEY", alpn: [h2]}
"#;
        let config: Config = serde_yaml_ng::from_str(yaml).unwrap();
        let cluster = &config.clusters[0];
        assert_eq!(
            cluster.circuit_breakers.as_ref().unwrap().max_connections,
            1024
        );
        assert_eq!(config.listeners[0].idle_timeout_ms, Some(0));
        let json = serde_json::to_string(&config).unwrap();
        assert!(
            !json.contains("KEY"),
            "the client key is never dumped: {json}"
        );
        let mut back: Config = serde_json::from_str(&json).unwrap();
        back.clusters[0].tls.as_mut().unwrap().client_key_pem = Some("KEY".into());
        assert_eq!(back, config);
        // A route without the new fields dumps as before.
        let plain = serde_json::to_string(&Route::default()).unwrap();
        assert_eq!(plain, r#"{"path_prefix":"/","cluster":""}"#);
    }

    #[test]
    fn unknown_fields_rejected() {
        assert!(serde_json::from_str::<Config>(r#"{"listener":[]}"#).is_err());
        assert!(
            serde_json::from_str::<Cluster>(r#"{"name":"c","endpoint":[]}"#).is_err(),
            "typo of a field must not be silently ignored"
        );
        assert!(serde_json::from_str::<LbPolicy>(r#""least_requests""#).is_err());
        assert_eq!(
            serde_json::from_str::<LbPolicy>(r#""round_robin""#).unwrap(),
            LbPolicy::RoundRobin
        );
    }
}
