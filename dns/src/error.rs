//! Why a zone was rejected.

/// A zone that cannot be served; the message names the offending service or endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    /// The origin is empty or not a sequence of valid DNS labels.
    #[error("invalid origin {origin:?}: {reason}")]
    InvalidOrigin {
        /// The origin as given.
        origin: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The TTL does not fit in 31 bits (RFC 2181 section 8).
    #[error("ttl {0} is larger than 2147483647")]
    InvalidTtl(u32),
    /// A service, namespace, endpoint host name or port name is not a valid DNS label.
    #[error("{owner}: {what} is not a valid DNS label")]
    InvalidLabel {
        /// Who holds the label, e.g. `service default/Hello_` or `endpoint default/hello/x_y`.
        owner: String,
        /// Which field: `name`, `namespace`, `hostname`, `port name`.
        what: &'static str,
    },
    /// The same service appears twice.
    #[error("service {namespace}/{name}: listed more than once")]
    DuplicateService {
        /// Namespace of the service.
        namespace: String,
        /// Name of the service.
        name: String,
    },
    /// A name built from the zone is longer than DNS allows (255 octets).
    #[error("{owner}: name {name} is too long")]
    NameTooLong {
        /// Who the name belongs to.
        owner: String,
        /// The name, as text.
        name: String,
    },
}
