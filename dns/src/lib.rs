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
//! - SOA and NS at the apex.
//!
//! The control plane hands a [`Zone`] to [`DnsServer::new`] and later to
//! [`DnsServer::apply`]; each builds an immutable snapshot with every answer precomputed and
//! swaps it in atomically, so a query sees one revision of the zone, never a mix.
//! [`DnsServer::serve_udp`] and [`DnsServer::serve_tcp`] run the sockets;
//! [`DnsServer::answer`] is the same logic without I/O.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::print_stdout)]

mod answer;
mod error;
mod name;
mod server;
mod snapshot;
mod zone;

pub use answer::Transport;
pub use error::ZoneError;
pub use server::DnsServer;
pub use zone::{EndpointRecord, PortRecord, Protocol, ServiceRecord, Zone};
