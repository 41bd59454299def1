//! Authoritative service-discovery DNS for the berth cluster zone.
//!
//! Names follow the Kubernetes DNS specification, under the cluster domain (`berth.local` by
//! default):
//!
//! - `<service>.<namespace>.svc.<zone>`: A/AAAA of the virtual IP, or of every ready endpoint
//!   when the service is headless;
//! - `_<port>._<proto>.<service>.<namespace>.svc.<zone>`: SRV, one per endpoint serving the
//!   port, with the targets' addresses in the additional section;
//! - `<hostname>.<service>.<namespace>.svc.<zone>`: A/AAAA of one endpoint;
//! - PTR in `in-addr.arpa` and `ip6.arpa` for every endpoint address and VIP;
//! - SOA and NS at the apex, `dns-version.<zone>` TXT, and `ns.dns.<zone>` A/AAAA when
//!   [`Zone::nameserver_addresses`] is set.
//!
//! Negative answers carry the SOA with TTL min(SOA TTL, SOA minimum) (RFC 2308); ANY gets one
//! RRset (RFC 8482); names outside the served zones are REFUSED, or forwarded to upstream
//! resolvers with a bounded cache when [`Zone::forward`] is set.
//!
//! The control plane hands a [`Zone`] to [`DnsServer::new`] and later to [`DnsServer::apply`]
//! or [`DnsServer::apply_service`] / [`DnsServer::remove_service`]; each gives an immutable
//! snapshot of every name's records, with each response encoded in wire format once (by the
//! first query that needs it) and copied after, and swaps it in atomically, so a query sees one
//! revision of the zone, never a mix. A service update costs the size of that service, not of
//! the zone: two snapshots take turns, the one not served being brought up to date with the
//! edits of the last update once no query reads it. [`DnsServer::bind`] and
//! [`DnsServer::serve_listeners`] run one SO_REUSEPORT UDP socket per worker thread
//! (recvmmsg/sendmmsg, no allocation per query) and TCP on any number of addresses;
//! [`DnsServer::serve_udp`] and [`DnsServer::serve_tcp`] serve sockets the caller bound;
//! [`DnsServer::answer`] is the same logic without I/O. [`run_from_file`] is
//! `berth dns --zone FILE`: serve a zone file, reload it on SIGHUP.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::print_stdout)]

mod answer;
mod error;
mod forward;
mod metrics;
mod name;
mod run;
mod server;
mod snapshot;
mod wire;
mod zone;

pub use answer::Transport;
pub use error::ZoneError;
pub use forward::{ForwardConfig, parse_resolv_conf};
pub use run::{RunError, load_zone_file, run_from_file, run_listeners_from_file, serve_zone_file};
pub use server::{DnsServer, Listeners};
pub use zone::{EndpointRecord, PortRecord, Protocol, ServiceRecord, Zone};
