//! The zone as the control plane describes it: inert, serde data.
//!
//! Nothing here is checked; [`crate::DnsServer::new`] and [`crate::DnsServer::apply`] validate a
//! zone while turning it into a snapshot.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The cluster zone: every service the DNS server answers for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// Cluster domain, without trailing dot. Default "berth.local".
    #[serde(default = "default_origin")]
    pub origin: String,
    /// TTL of every answer in the zone, seconds. Default 5 (as CoreDNS's kubernetes plugin).
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// How long resolvers may cache a negative answer, seconds: the SOA minimum. Negative
    /// answers carry min(ttl, negative_ttl) (RFC 2308). Default 5.
    #[serde(default = "default_ttl")]
    pub negative_ttl: u32,
    /// Addresses of the server itself, served as A/AAAA of `ns.dns.<origin>`, the name the apex
    /// NS record gives (as CoreDNS does). Empty: that name does not exist.
    #[serde(default)]
    pub nameserver_addresses: Vec<IpAddr>,
    /// Forwarding of names outside the served zones; absent: such names get REFUSED.
    #[serde(default)]
    pub forward: Option<crate::forward::ForwardConfig>,
    /// Services in the zone.
    #[serde(default)]
    pub services: Vec<ServiceRecord>,
}

impl Default for Zone {
    fn default() -> Self {
        Self {
            origin: default_origin(),
            ttl: default_ttl(),
            negative_ttl: default_ttl(),
            nameserver_addresses: Vec::new(),
            forward: None,
            services: Vec::new(),
        }
    }
}

/// The default cluster domain, `berth.local`.
fn default_origin() -> String {
    "berth.local".to_owned()
}

/// The default TTL of answers, 5 seconds (as CoreDNS's kubernetes plugin).
fn default_ttl() -> u32 {
    5
}

/// One service: `<name>.<namespace>.svc.<origin>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecord {
    /// Service name (a DNS label).
    pub name: String,
    /// Namespace of the service (a DNS label).
    pub namespace: String,
    /// Virtual IP; `None` means headless: A/AAAA of the service answer each endpoint address.
    #[serde(default)]
    pub vip: Option<IpAddr>,
    /// Service ports (name, protocol, port). Informational for now.
    #[serde(default)]
    pub ports: Vec<PortRecord>,
    /// Ready endpoints.
    #[serde(default)]
    pub endpoints: Vec<EndpointRecord>,
}

/// A named port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRecord {
    /// Port name (a DNS label); SRV records exist only for named ports. May be empty.
    pub name: String,
    /// Transport protocol. Default tcp.
    #[serde(default)]
    pub protocol: Protocol,
    /// Port number.
    pub port: u16,
}

/// Transport protocol of a port, as it appears in SRV names (`_tcp`, `_udp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The SRV label of the protocol: `_tcp` or `_udp`.
    pub(crate) fn srv_label(self) -> &'static str {
        match self {
            Self::Tcp => "_tcp",
            Self::Udp => "_udp",
        }
    }
}

/// One ready instance behind a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRecord {
    /// Instance host name (a DNS label), e.g. "hello-x7k2p".
    pub hostname: String,
    /// Instance address.
    pub address: IpAddr,
    /// The instance's ports, named after the service port they serve.
    #[serde(default)]
    pub ports: Vec<PortRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_missing_fields() {
        let zone: Zone = serde_json::from_str("{}").unwrap();
        assert_eq!(zone, Zone::default());
        assert_eq!(zone.origin, "berth.local");
        assert_eq!(zone.ttl, 5);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<Zone>(r#"{"origin":"a.b","zone":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn round_trips_through_json() {
        let zone = Zone {
            services: vec![ServiceRecord {
                name: "hello".into(),
                namespace: "default".into(),
                vip: None,
                ports: vec![PortRecord {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 53,
                }],
                endpoints: vec![EndpointRecord {
                    hostname: "hello-a".into(),
                    address: "10.0.0.1".parse().unwrap(),
                    ports: vec![],
                }],
            }],
            ..Zone::default()
        };
        let json = serde_json::to_string(&zone).unwrap();
        assert!(json.contains(r#""protocol":"udp""#), "{json}");
        assert_eq!(serde_json::from_str::<Zone>(&json).unwrap(), zone);
    }
}
