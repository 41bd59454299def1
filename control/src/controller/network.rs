//! The cluster's address plan: the CIDR node subnets are carved from and the range service VIPs
//! come from, with the arithmetic both allocators share.
//!
//! Allocation state lives only in the objects (`Node.spec.podSubnet`, `Service.status.vip`):
//! every pass rebuilds the taken set from the store, so a restarted server never hands out an
//! address that is still held, and nothing can drift between a bitmap and the objects.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Kubernetes' node IPAM defaults: a /24 per node from an IPv4 cluster CIDR, a /64 from IPv6.
pub const DEFAULT_NODE_SIZE_V4: u8 = 24;
/// See [`DEFAULT_NODE_SIZE_V4`].
pub const DEFAULT_NODE_SIZE_V6: u8 = 64;

/// A bad address plan, named by its flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetworkError {
    /// Not a CIDR.
    #[error("{flag} {value:?}: not a CIDR such as 10.244.0.0/16")]
    NotCidr {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
    },
    /// Host bits set: `10.244.1.0/16` is ambiguous.
    #[error("{flag} {value}: host bits are set (did you mean {trunc}?)")]
    HostBits {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: IpNet,
        /// The network it lies in.
        trunc: IpNet,
    },
    /// Node subnets larger than the cluster CIDR, or too small to hold an instance.
    #[error(
        "--node-cidr-size {size}: node subnets of the cluster CIDR {cidr} must be between /{min} and /{max}"
    )]
    NodeSize {
        /// The size asked for.
        size: u8,
        /// The cluster CIDR.
        cidr: IpNet,
        /// Largest subnet allowed.
        min: u8,
        /// Smallest subnet allowed.
        max: u8,
    },
    /// A service range without an address to give.
    #[error(
        "--service-cidr {0}: too small: the network address and the first address are reserved, \
         so it needs at least a /30 (IPv4) or /126 (IPv6)"
    )]
    ServiceRange(IpNet),
}

/// Where instance subnets and service VIPs come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    /// Node pod subnets are carved from here; none: nodes get no subnet unless an admin sets one.
    pub cluster_cidr: Option<IpNet>,
    /// Prefix length of each node's subnet.
    pub node_prefix: u8,
    /// Service VIPs come from here; none: services get no VIP (unprivileged `berth dev`).
    pub service_cidr: Option<IpNet>,
}

/// Parses a CIDR flag; empty or `none` means none. Host bits must be clear.
pub fn parse_cidr(flag: &'static str, value: &str) -> Result<Option<IpNet>, NetworkError> {
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let net: IpNet = v.parse().map_err(|_| NetworkError::NotCidr {
        flag,
        value: value.to_owned(),
    })?;
    if net.trunc() != net {
        return Err(NetworkError::HostBits {
            flag,
            value: net,
            trunc: net.trunc(),
        });
    }
    Ok(Some(net))
}

impl Network {
    /// A checked plan. `node_size` defaults by family (/24 for IPv4, /64 for IPv6).
    pub fn new(
        cluster_cidr: Option<IpNet>,
        node_size: Option<u8>,
        service_cidr: Option<IpNet>,
    ) -> Result<Network, NetworkError> {
        let mut node_prefix = node_size.unwrap_or(DEFAULT_NODE_SIZE_V4);
        if let Some(c) = cluster_cidr {
            let default = match c {
                IpNet::V4(_) => DEFAULT_NODE_SIZE_V4,
                IpNet::V6(_) => DEFAULT_NODE_SIZE_V6,
            };
            node_prefix = node_size.unwrap_or(default);
            // At least two addresses per node (a gateway and an instance), and no more than
            // 2^16 nodes' worth of subnets, as Kubernetes limits IPv6 node masks.
            let max = c.max_prefix_len() - 1;
            let min = c.prefix_len().max(1);
            if node_prefix < min || node_prefix > max || node_prefix - c.prefix_len() > 16 {
                return Err(NetworkError::NodeSize {
                    size: node_prefix,
                    cidr: c,
                    min,
                    max: max.min(c.prefix_len().saturating_add(16)),
                });
            }
        }
        if let Some(s) = service_cidr
            && s.prefix_len() > s.max_prefix_len() - 2
        {
            return Err(NetworkError::ServiceRange(s));
        }
        Ok(Network {
            cluster_cidr,
            node_prefix,
            service_cidr,
        })
    }
}

/// The address-plan flags of `berth server` and `berth dev`.
#[derive(Clone, Debug, clap::Args)]
pub struct NetworkArgs {
    /// CIDR each node's instance subnet is allocated from (`none`: no allocation). IPv4 or IPv6.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// Prefix length of each node's subnet (Kubernetes' defaults: 24 for IPv4, 64 for IPv6).
    #[arg(long)]
    pub node_cidr_size: Option<u8>,
    /// CIDR service VIPs are allocated from (`none`: services get no VIP). Default: 10.96.0.0/16
    /// for `berth server`, none for `berth dev` (unprivileged, it cannot host VIPs).
    #[arg(long)]
    pub service_cidr: Option<String>,
}

impl NetworkArgs {
    /// The checked plan; `service_default` when `--service-cidr` is not given.
    pub fn network(&self, service_default: &str) -> Result<Network, NetworkError> {
        Network::new(
            parse_cidr("--cluster-cidr", &self.cluster_cidr)?,
            self.node_cidr_size,
            parse_cidr(
                "--service-cidr",
                self.service_cidr.as_deref().unwrap_or(service_default),
            )?,
        )
    }
}

/// How full the address plan is, for the API server's metrics (as Kubernetes'
/// `kube_apiserver_clusterip_allocator_*` and `cidrset_usage_cidrs`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Services holding a VIP of the service range.
    pub vips_allocated: u64,
    /// VIPs left to give (a float: an IPv6 range holds more than 2^64).
    pub vips_free: f64,
    /// Node-sized subnets of the cluster CIDR that nodes hold.
    pub subnets_allocated: u64,
    /// Node-sized subnets left to give.
    pub subnets_free: f64,
}

impl Network {
    /// How much of the plan `vips` and `subnets` (what services and nodes hold) use.
    pub fn usage(
        &self,
        vips: impl IntoIterator<Item = IpAddr>,
        subnets: impl IntoIterator<Item = IpNet>,
    ) -> Usage {
        let mut u = Usage::default();
        if let Some(r) = &self.service_cidr {
            u.vips_allocated = vips
                .into_iter()
                .filter(|v| r.contains(v) && !reserved(r, *v))
                .count() as u64;
            let bits = i32::from(r.max_prefix_len() - r.prefix_len());
            let unusable = if r.addr().is_ipv4() { 3.0 } else { 2.0 };
            u.vips_free = (2f64.powi(bits) - unusable - u.vips_allocated as f64).max(0.0);
        }
        if let Some(c) = &self.cluster_cidr {
            // A subnet larger than a node's blocks every node-sized subnet it covers.
            let blocks: u64 = subnets
                .into_iter()
                .filter(|n| overlaps(n, c))
                .map(|n| 1u64 << self.node_prefix.saturating_sub(n.prefix_len()).min(63))
                .sum();
            u.subnets_allocated = blocks;
            let total = 2f64.powi(i32::from(self.node_prefix - c.prefix_len()));
            u.subnets_free = (total - blocks as f64).max(0.0);
        }
        u
    }
}

/// An address as a number (IPv4 in the low 32 bits).
fn num(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address `n` of the same family as `like`; `None` past the family's end.
fn addr(like: IpAddr, n: u128) -> Option<IpAddr> {
    match like {
        IpAddr::V4(_) => u32::try_from(n).ok().map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        IpAddr::V6(_) => Some(IpAddr::V6(Ipv6Addr::from(n))),
    }
}

/// First and last address of a network, as numbers.
fn bounds(net: &IpNet) -> (u128, u128) {
    (num(net.network()), num(net.broadcast()))
}

/// Whether two networks share an address (networks of different families never do).
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    if a.addr().is_ipv4() != b.addr().is_ipv4() {
        return false;
    }
    let ((a0, a1), (b0, b1)) = (bounds(a), bounds(b));
    a0 <= b1 && b0 <= a1
}

/// The lowest subnet of `/prefix` inside `cidr` that overlaps none of `taken`.
pub fn first_free_subnet(cidr: &IpNet, prefix: u8, taken: &[IpNet]) -> Option<IpNet> {
    let (start, end) = bounds(cidr);
    let host_bits = u32::from(cidr.max_prefix_len().checked_sub(prefix)?);
    // Subnet size minus one, without overflowing for a /0.
    let span = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let mut ranges: Vec<(u128, u128)> = taken
        .iter()
        .filter(|t| overlaps(t, cidr))
        .map(bounds)
        .collect();
    ranges.sort_unstable();
    let mut candidate = start;
    for (t0, t1) in ranges {
        let last = candidate.checked_add(span)?;
        if last > end {
            return None;
        }
        if t1 < candidate {
            continue;
        }
        if t0 > last {
            break;
        }
        // Overlaps: the next aligned subnet after this taken range.
        candidate = t1.checked_add(1)?.checked_add(span)? & !span;
    }
    let last = candidate.checked_add(span)?;
    if last > end {
        return None;
    }
    IpNet::new(addr(cidr.addr(), candidate)?, prefix).ok()
}

/// The addresses of a service range that are never handed out: the network address, the first
/// address (Kubernetes keeps it for the API service), and for IPv4 the broadcast address.
pub fn reserved(range: &IpNet, a: IpAddr) -> bool {
    let (start, end) = bounds(range);
    let n = num(a);
    n == start || n == start + 1 || (range.addr().is_ipv4() && n == end)
}

/// The lowest address of `range` neither reserved nor in `taken`.
pub fn first_free_address(range: &IpNet, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let (start, end) = bounds(range);
    let last = if range.addr().is_ipv4() { end - 1 } else { end };
    let mut candidate = start + 2;
    let like = range.addr();
    let from = addr(like, candidate)?;
    // `taken` is sorted: walk it from the candidate on until a gap.
    for t in taken.range(from..) {
        if t.is_ipv4() != like.is_ipv4() {
            break;
        }
        match num(*t) {
            n if n == candidate => candidate += 1,
            n if n > candidate => break,
            _ => {}
        }
    }
    if candidate > last {
        return None;
    }
    addr(like, candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn flags_are_checked() {
        assert_eq!(parse_cidr("--cluster-cidr", "none"), Ok(None));
        assert_eq!(parse_cidr("--cluster-cidr", ""), Ok(None));
        assert_eq!(
            parse_cidr("--cluster-cidr", "10.244.0.0/16"),
            Ok(Some(net("10.244.0.0/16")))
        );
        let e = parse_cidr("--service-cidr", "10.96.0.1/16").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--service-cidr 10.96.0.1/16: host bits are set (did you mean 10.96.0.0/16?)"
        );
        let e = parse_cidr("--cluster-cidr", "10.244/16").unwrap_err();
        assert!(e.to_string().contains("not a CIDR"), "{e}");

        let n = Network::new(Some(net("10.244.0.0/16")), None, None).unwrap();
        assert_eq!(n.node_prefix, 24);
        let n = Network::new(Some(net("fd00:10:244::/56")), None, None).unwrap();
        assert_eq!(n.node_prefix, 64);
        let e = Network::new(Some(net("10.244.0.0/16")), Some(8), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--node-cidr-size 8: node subnets of the cluster CIDR 10.244.0.0/16 must be between /16 and /31"
        );
        assert!(Network::new(Some(net("10.0.0.0/8")), Some(25), None).is_err());
        assert!(Network::new(None, None, Some(net("10.96.0.0/31"))).is_err());
        assert!(Network::new(None, None, Some(net("10.96.0.0/30"))).is_ok());
    }

    #[test]
    fn subnets_are_the_lowest_free_and_skip_taken_ones_of_any_size() {
        let c = net("10.244.0.0/16");
        assert_eq!(first_free_subnet(&c, 24, &[]), Some(net("10.244.0.0/24")));
        let taken = [net("10.244.0.0/24"), net("10.244.2.0/24")];
        assert_eq!(
            first_free_subnet(&c, 24, &taken),
            Some(net("10.244.1.0/24"))
        );
        // A larger admin-set subnet blocks all the /24s it covers; one outside counts for
        // nothing; one of the other family neither.
        let taken = [
            net("10.244.0.0/20"),
            net("10.245.0.0/24"),
            net("fd00::/8"),
            net("10.244.16.0/25"),
        ];
        assert_eq!(
            first_free_subnet(&c, 24, &taken),
            Some(net("10.244.17.0/24"))
        );
        // Full.
        assert_eq!(first_free_subnet(&c, 24, &[net("10.244.0.0/16")]), None);
        let all: Vec<IpNet> = c.subnets(24).unwrap().collect();
        assert_eq!(first_free_subnet(&c, 24, &all), None);
        assert_eq!(
            first_free_subnet(&c, 24, &all[..255]),
            Some(net("10.244.255.0/24"))
        );
        // IPv6, and the edges of the address space.
        let c6 = net("fd00:10:244::/56");
        assert_eq!(
            first_free_subnet(&c6, 64, &[net("fd00:10:244::/64")]),
            Some(net("fd00:10:244:1::/64"))
        );
        let top = net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120");
        assert_eq!(first_free_subnet(&top, 121, &[top]), None);
        assert_eq!(
            first_free_subnet(
                &top,
                121,
                &[net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/121")]
            ),
            Some(net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff80/121"))
        );
    }

    #[test]
    fn usage_counts_what_is_held_and_left() {
        let n = Network::new(Some(net("10.244.0.0/16")), None, Some(net("10.96.0.0/24"))).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let u = n.usage(
            [ip("10.96.0.2"), ip("10.96.0.3"), ip("10.97.0.1")],
            [
                net("10.244.0.0/24"),
                net("10.244.16.0/20"),
                net("10.1.0.0/24"),
            ],
        );
        assert_eq!(u.vips_allocated, 2);
        assert_eq!(u.vips_free, 256.0 - 3.0 - 2.0);
        assert_eq!(u.subnets_allocated, 17);
        assert_eq!(u.subnets_free, 256.0 - 17.0);
        assert_eq!(Network::default().usage([], []), Usage::default());
    }

    #[test]
    fn addresses_skip_the_reserved_ones() {
        let r = net("10.96.0.0/30");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut taken = BTreeSet::new();
        assert_eq!(first_free_address(&r, &taken), Some(ip("10.96.0.2")));
        taken.insert(ip("10.96.0.2"));
        // .3 is the broadcast address.
        assert_eq!(first_free_address(&r, &taken), None);
        assert!(reserved(&r, ip("10.96.0.0")) && reserved(&r, ip("10.96.0.1")));
        assert!(reserved(&r, ip("10.96.0.3")) && !reserved(&r, ip("10.96.0.2")));

        let r = net("10.96.0.0/16");
        let taken: BTreeSet<IpAddr> = ["10.96.0.2", "10.96.0.3", "10.96.0.5", "10.95.0.0"]
            .iter()
            .map(|s| ip(s))
            .collect();
        assert_eq!(first_free_address(&r, &taken), Some(ip("10.96.0.4")));

        let r6 = net("fd00:96::/126");
        let mut taken = BTreeSet::new();
        assert_eq!(first_free_address(&r6, &taken), Some(ip("fd00:96::2")));
        taken.insert(ip("fd00:96::2"));
        assert_eq!(first_free_address(&r6, &taken), Some(ip("fd00:96::3")));
        taken.insert(ip("fd00:96::3"));
        assert_eq!(first_free_address(&r6, &taken), None);
    }
}
