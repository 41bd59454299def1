//! The network configuration the runtime writes on stdin, parsed once into types that can only
//! hold acceptable values.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{CniError, DECODE};
use crate::ipam::{Range, RangeSet};
use crate::version::Version;

/// The IPAM `type` that selects the built-in allocator; any other type is delegated to the
/// plugin of that name on `CNI_PATH`.
pub const BUILTIN_IPAM: &str = "berth";

/// Where the built-in IPAM keeps its reservations unless `ipam.dataDir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth/cni";

/// The plugin's configuration, as the runtime sends it (unknown fields are ignored, as runtimes
/// and meta-plugins add their own).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    cni_version: String,
    name: String,
    #[serde(rename = "type")]
    _type: Option<String>,
    /// Bridge name; created if missing.
    #[serde(default = "default_bridge")]
    bridge: String,
    /// Put the gateway addresses on the bridge.
    #[serde(default = "yes")]
    is_gateway: bool,
    /// Install a default route via the gateway in the container.
    #[serde(default = "yes")]
    is_default_gateway: bool,
    /// Masquerade traffic from the pods that leaves the pod subnets (nftables).
    #[serde(default)]
    ip_masq: bool,
    /// MTU of the bridge, the veth pair and the container interface.
    #[serde(default)]
    mtu: Option<u32>,
    /// Let traffic from a port go back out of the same port (hairpin).
    #[serde(default)]
    hairpin_mode: bool,
    /// DNS settings copied into the result.
    #[serde(default)]
    dns: crate::result::Dns,
    ipam: Option<Value>,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default)]
    runtime_config: RuntimeConfig,
    #[serde(default)]
    args: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Vec<Attachment>>,
}

/// Capabilities the runtime fills in (`runtimeConfig`).
#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(default)]
    ips: Vec<String>,
}

/// One attachment the runtime still wants (GC's `cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
pub struct Attachment {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// The built-in IPAM section.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawIpam {
    #[serde(rename = "type")]
    _type: String,
    /// Range sets: one address is allocated from each set (one set per family for dual stack).
    ranges: Vec<Vec<RawRange>>,
    /// Routes installed in the container besides the default route.
    #[serde(default)]
    routes: Vec<RawRoute>,
    /// Directory of the reservation store.
    #[serde(default)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRange {
    subnet: String,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gw: Option<IpAddr>,
}

fn default_bridge() -> String {
    "berth0".to_owned()
}

fn yes() -> bool {
    true
}

/// How addresses are obtained.
#[derive(Debug, Clone)]
pub enum IpamMode {
    /// The built-in allocator.
    Builtin(BuiltinIpam),
    /// An IPAM plugin of this type on `CNI_PATH`, run with the same configuration.
    Delegate(String),
}

/// The built-in allocator's validated settings.
#[derive(Debug, Clone)]
pub struct BuiltinIpam {
    /// Range sets, each giving one address.
    pub range_sets: Vec<RangeSet>,
    /// Extra routes for the container.
    pub routes: Vec<crate::result::Route>,
    /// Reservation store directory (the network's name is appended).
    pub data_dir: PathBuf,
}

/// A validated network configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// The version the runtime speaks; answers use it.
    pub version: Version,
    /// Network name (also names the reservation store and the host veth aliases).
    pub name: String,
    /// Bridge name.
    pub bridge: String,
    /// Gateway addresses on the bridge.
    pub is_gateway: bool,
    /// Default route in the container via the gateway.
    pub is_default_gateway: bool,
    /// Masquerade traffic leaving the pod subnets.
    pub ip_masq: bool,
    /// MTU for the bridge and both veth ends.
    pub mtu: u32,
    /// Hairpin mode on the bridge port.
    pub hairpin: bool,
    /// DNS copied into the result.
    pub dns: crate::result::Dns,
    /// Address management.
    pub ipam: IpamMode,
    /// The previous plugin's result (DEL, CHECK, chained ADD).
    pub prev_result: Option<Value>,
    /// Addresses asked for through `runtimeConfig.ips` or `args.cni.ips`.
    pub requested_ips: Vec<IpAddr>,
    /// GC's list of attachments to keep.
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// Reads only `cniVersion`, so that even a config that fails later is answered in its version.
pub fn peek_version(stdin: &[u8]) -> Option<Version> {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion")]
        v: String,
    }
    serde_json::from_slice::<V>(stdin)
        .ok()
        .and_then(|v| Version::parse(&v.v).ok())
}

/// Checks a network name as libcni does: letters, digits, `_`, `.`, `-`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name != "."
        && name != ".."
}

/// Checks a kernel interface name: 1-15 bytes, no `/`, `:` or whitespace.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

impl NetConf {
    /// Parses and validates stdin: bad JSON is error 6, unacceptable values error 7, an
    /// unknown version error 1.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let raw: RawConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                DECODE,
                "failed to decode network configuration",
                e.to_string(),
            )
        })?;
        let version = Version::parse(&raw.cni_version)?;
        if !valid_name(&raw.name) {
            return Err(CniError::config(format!(
                "name {:?}: must be 1-128 letters, digits, '_', '.' or '-'",
                raw.name
            )));
        }
        if !valid_ifname(&raw.bridge) {
            return Err(CniError::config(format!(
                "bridge {:?}: not a valid interface name (1-15 bytes, no '/', ':' or spaces)",
                raw.bridge
            )));
        }
        let mtu = raw.mtu.unwrap_or(1500);
        if !(576..=65535).contains(&mtu) {
            return Err(CniError::config(format!(
                "mtu {mtu}: must be between 576 and 65535"
            )));
        }
        let ipam = match raw.ipam {
            None => return Err(CniError::config("ipam: missing")),
            Some(v) => parse_ipam(v)?,
        };
        let mut requested_ips = Vec::new();
        let mut from_args = Vec::new();
        if let Some(ips) = raw
            .args
            .as_ref()
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("ips"))
        {
            let ips = ips
                .as_array()
                .ok_or_else(|| CniError::config("args.cni.ips: must be an array of addresses"))?;
            for ip in ips {
                from_args.push(
                    ip.as_str()
                        .ok_or_else(|| CniError::config("args.cni.ips: must hold strings"))?
                        .to_owned(),
                );
            }
        }
        for (field, ip) in raw
            .runtime_config
            .ips
            .iter()
            .map(|i| ("runtimeConfig.ips", i))
            .chain(from_args.iter().map(|i| ("args.cni.ips", i)))
        {
            // Both "10.1.0.5" and "10.1.0.5/24" are accepted, as host-local does.
            let addr = ip.split('/').next().unwrap_or(ip);
            let addr: IpAddr = addr
                .parse()
                .map_err(|e| CniError::config(format!("{field}: {ip:?}: {e}")))?;
            if !requested_ips.contains(&addr) {
                requested_ips.push(addr);
            }
        }
        Ok(NetConf {
            version,
            name: raw.name,
            bridge: raw.bridge,
            is_gateway: raw.is_gateway,
            is_default_gateway: raw.is_default_gateway,
            ip_masq: raw.ip_masq,
            mtu,
            hairpin: raw.hairpin_mode,
            dns: raw.dns,
            ipam,
            prev_result: raw.prev_result,
            requested_ips,
            valid_attachments: raw.valid_attachments,
        })
    }
}

fn parse_ipam(v: Value) -> Result<IpamMode, CniError> {
    let ty = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| CniError::config("ipam.type: missing"))?
        .to_owned();
    if ty != BUILTIN_IPAM {
        if !valid_name(&ty) {
            return Err(CniError::config(format!(
                "ipam.type {ty:?}: not a plugin name"
            )));
        }
        return Ok(IpamMode::Delegate(ty));
    }
    let raw: RawIpam =
        serde_json::from_value(v).map_err(|e| CniError::config(format!("ipam: {e}")))?;
    if raw.ranges.is_empty() {
        return Err(CniError::config(
            "ipam.ranges: at least one range set is needed",
        ));
    }
    let mut range_sets = Vec::new();
    for (s, set) in raw.ranges.iter().enumerate() {
        if set.is_empty() {
            return Err(CniError::config(format!(
                "ipam.ranges[{s}]: empty range set"
            )));
        }
        let mut ranges = Vec::new();
        for (r, range) in set.iter().enumerate() {
            let at = format!("ipam.ranges[{s}][{r}]");
            let subnet: IpNet = range
                .subnet
                .parse()
                .map_err(|e| CniError::config(format!("{at}.subnet {:?}: {e}", range.subnet)))?;
            let range = Range::new(subnet, range.range_start, range.range_end, range.gateway)
                .map_err(|e| CniError::config(format!("{at}: {e}")))?;
            ranges.push(range);
        }
        let set = RangeSet::new(ranges)
            .map_err(|e| CniError::config(format!("ipam.ranges[{s}]: {e}")))?;
        range_sets.push(set);
    }
    let mut routes = Vec::new();
    for (n, r) in raw.routes.iter().enumerate() {
        let dst: IpNet = r
            .dst
            .parse()
            .map_err(|e| CniError::config(format!("ipam.routes[{n}].dst {:?}: {e}", r.dst)))?;
        routes.push(crate::result::Route { dst, gw: r.gw });
    }
    Ok(IpamMode::Builtin(BuiltinIpam {
        range_sets,
        routes,
        data_dir: raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{INCOMPATIBLE_VERSION, INVALID_CONFIG};

    fn conf(extra: &str) -> String {
        format!(
            r#"{{"cniVersion":"1.1.0","name":"net","type":"berth-cni"{extra},
            "ipam":{{"type":"berth","ranges":[[{{"subnet":"10.1.0.0/24"}}]]}}}}"#
        )
    }

    #[test]
    fn defaults() {
        let c = NetConf::parse(conf("").as_bytes()).unwrap();
        assert_eq!(c.bridge, "berth0");
        assert_eq!(c.mtu, 1500);
        assert!(c.is_gateway && c.is_default_gateway && !c.ip_masq && !c.hairpin);
        let IpamMode::Builtin(b) = c.ipam else {
            panic!("builtin")
        };
        assert_eq!(b.range_sets.len(), 1);
    }

    #[test]
    fn requested_ips_from_both_places() {
        let c = NetConf::parse(
            conf(
                r#","runtimeConfig":{"ips":["10.1.0.9/24"]},"args":{"cni":{"ips":["10.1.0.10"]}}"#,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            c.requested_ips,
            vec![
                "10.1.0.9".parse::<IpAddr>().unwrap(),
                "10.1.0.10".parse().unwrap()
            ]
        );
    }

    #[test]
    fn each_bad_value_is_named() {
        let cases = [
            (r#"{"#.to_owned(), DECODE, "EOF"),
            (
                conf("").replace("1.1.0", "9.9.9"),
                INCOMPATIBLE_VERSION,
                "9.9.9",
            ),
            (conf(r#","mtu":10"#), INVALID_CONFIG, "mtu 10"),
            (conf(r#","bridge":"a/b""#), INVALID_CONFIG, "bridge"),
            (
                conf("").replace(r#""name":"net""#, r#""name":"a b""#),
                INVALID_CONFIG,
                "name",
            ),
            (
                conf("").replace("10.1.0.0/24", "10.1.0.0/33"),
                INVALID_CONFIG,
                "ipam.ranges[0][0].subnet",
            ),
            (
                conf("").replace(r#""ranges""#, r#""bogus":1,"ranges""#),
                INVALID_CONFIG,
                "bogus",
            ),
            (
                conf(r#","runtimeConfig":{"ips":["x"]}"#),
                INVALID_CONFIG,
                "runtimeConfig.ips",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"berth-cni"}"#.to_owned(),
                INVALID_CONFIG,
                "ipam: missing",
            ),
        ];
        for (input, code, needle) in cases {
            let e = NetConf::parse(input.as_bytes()).unwrap_err();
            assert_eq!(e.code, code, "{input}: {e}");
            assert!(e.to_string().contains(needle), "{input}: {e}");
        }
    }

    #[test]
    fn other_ipam_types_are_delegated() {
        let c = NetConf::parse(
            br#"{"cniVersion":"0.4.0","name":"n","type":"berth-cni","ipam":{"type":"host-local","ranges":[]}}"#,
        )
        .unwrap();
        assert!(matches!(c.ipam, IpamMode::Delegate(t) if t == "host-local"));
    }
}
