//! The ADD result (spec section "Success"), rendered in the version the runtime asked for, and
//! parsed back from any supported version when it returns as `prevResult` or from a delegated
//! IPAM plugin.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::error::{CniError, DECODE};
use crate::version::Version;

/// One interface the plugin created or touched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// MTU (1.1.0 field; omitted from older versions).
    pub mtu: Option<u32>,
    /// The container's netns path for interfaces inside it; empty for host interfaces.
    pub sandbox: String,
}

/// One assigned address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with its prefix length, e.g. `10.1.0.5/24`.
    pub address: IpNet,
    /// Default gateway for this subnet, if any.
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` of the interface the address is on.
    pub interface: Option<usize>,
}

/// One route installed in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; absent means the default gateway of the matching IP config.
    pub gw: Option<IpAddr>,
}

/// DNS settings passed through from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    /// Name servers, in priority order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The ADD result, independent of version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniResult {
    /// Interfaces, referenced by index from `ips`.
    pub interfaces: Vec<Interface>,
    /// Assigned addresses.
    pub ips: Vec<IpConfig>,
    /// Routes in the container.
    pub routes: Vec<Route>,
    /// DNS settings.
    pub dns: Dns,
}

fn bad(details: String) -> CniError {
    CniError::new(DECODE, "failed to decode result", details)
}

impl CniResult {
    /// The result as a JSON value in `version`.
    pub fn to_value(&self, version: Version) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), json!(i.name));
                if !i.mac.is_empty() {
                    o.insert("mac".into(), json!(i.mac));
                }
                if let (Some(mtu), Version::V1_1_0) = (i.mtu, version) {
                    o.insert("mtu".into(), json!(mtu));
                }
                if !i.sandbox.is_empty() {
                    o.insert("sandbox".into(), json!(i.sandbox));
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                if version.ip_has_version_field() {
                    let v = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    o.insert("version".into(), json!(v));
                }
                o.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), json!(gw.to_string()));
                }
                if let Some(i) = ip.interface {
                    o.insert("interface".into(), json!(i));
                }
                Value::Object(o)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| match r.gw {
                Some(gw) => json!({"dst": r.dst.to_string(), "gw": gw.to_string()}),
                None => json!({"dst": r.dst.to_string()}),
            })
            .collect();
        let mut o = Map::new();
        o.insert("cniVersion".into(), json!(version.as_str()));
        if !interfaces.is_empty() {
            o.insert("interfaces".into(), Value::Array(interfaces));
        }
        if !ips.is_empty() {
            o.insert("ips".into(), Value::Array(ips));
        }
        if !routes.is_empty() {
            o.insert("routes".into(), Value::Array(routes));
        }
        if !self.dns.is_empty() {
            o.insert("dns".into(), json!(self.dns));
        }
        Value::Object(o)
    }

    /// Parses a result of any supported version (a `prevResult` or a delegated IPAM answer).
    pub fn from_value(v: &Value) -> Result<CniResult, CniError> {
        let o = v
            .as_object()
            .ok_or_else(|| bad("result is not a JSON object".into()))?;
        let mut out = CniResult::default();
        for (n, i) in array(o, "interfaces")?.iter().enumerate() {
            out.interfaces.push(Interface {
                name: string(i, "name")
                    .ok_or_else(|| bad(format!("interfaces[{n}].name missing")))?,
                mac: string(i, "mac").unwrap_or_default(),
                mtu: i
                    .get("mtu")
                    .and_then(Value::as_u64)
                    .and_then(|m| u32::try_from(m).ok()),
                sandbox: string(i, "sandbox").unwrap_or_default(),
            });
        }
        for (n, ip) in array(o, "ips")?.iter().enumerate() {
            let address =
                string(ip, "address").ok_or_else(|| bad(format!("ips[{n}].address missing")))?;
            let address: IpNet = address
                .parse()
                .map_err(|e| bad(format!("ips[{n}].address {address:?}: {e}")))?;
            let gateway = match string(ip, "gateway") {
                Some(g) => Some(
                    g.parse()
                        .map_err(|e| bad(format!("ips[{n}].gateway {g:?}: {e}")))?,
                ),
                None => None,
            };
            let interface = match ip.get("interface") {
                None | Some(Value::Null) => None,
                Some(i) => Some(
                    i.as_u64()
                        .and_then(|i| usize::try_from(i).ok())
                        .ok_or_else(|| bad(format!("ips[{n}].interface is not an index")))?,
                ),
            };
            out.ips.push(IpConfig {
                address,
                gateway,
                interface,
            });
        }
        for (n, r) in array(o, "routes")?.iter().enumerate() {
            let dst = string(r, "dst").ok_or_else(|| bad(format!("routes[{n}].dst missing")))?;
            let dst: IpNet = dst
                .parse()
                .map_err(|e| bad(format!("routes[{n}].dst {dst:?}: {e}")))?;
            let gw = match string(r, "gw") {
                Some(g) => Some(
                    g.parse()
                        .map_err(|e| bad(format!("routes[{n}].gw {g:?}: {e}")))?,
                ),
                None => None,
            };
            out.routes.push(Route { dst, gw });
        }
        if let Some(dns) = o.get("dns") {
            out.dns = serde_json::from_value(dns.clone()).map_err(|e| bad(format!("dns: {e}")))?;
        }
        Ok(out)
    }
}

fn array<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], CniError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(bad(format!("{key} is not an array"))),
    }
}

fn string(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "berth0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    mtu: Some(1500),
                    sandbox: String::new(),
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:02".into(),
                    mtu: Some(1500),
                    sandbox: "/run/netns/x".into(),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.1.0.5/24".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.1.0.1".parse().unwrap()),
            }],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                ..Dns::default()
            },
        }
    }

    #[test]
    fn round_trips_in_every_version() {
        for v in crate::version::SUPPORTED {
            let value = sample().to_value(v);
            assert_eq!(value["cniVersion"], v.as_str());
            let mut back = CniResult::from_value(&value).unwrap();
            if v != Version::V1_1_0 {
                assert!(back.interfaces.iter().all(|i| i.mtu.is_none()));
                for i in &mut back.interfaces {
                    i.mtu = Some(1500);
                }
            }
            assert_eq!(back, sample(), "version {v}");
        }
    }

    #[test]
    fn old_versions_carry_the_ip_version_field() {
        let v = sample().to_value(Version::V0_3_1);
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        let v = sample().to_value(Version::V1_0_0);
        assert!(v["ips"][0].get("version").is_none());
    }

    #[test]
    fn bad_results_are_decode_errors() {
        let e = CniResult::from_value(&json!({"ips": [{"address": "nope"}]})).unwrap_err();
        assert_eq!(e.code, DECODE);
        assert!(e.details.contains("ips[0].address"), "{e}");
        assert_eq!(CniResult::from_value(&json!([])).unwrap_err().code, DECODE);
    }
}
