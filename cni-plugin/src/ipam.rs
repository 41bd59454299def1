//! The built-in IPAM: range sets and round-robin allocation over a reservation table. Pure
//! logic; [`store`] persists the table under a lock.

pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Why an allocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Every address of a range set is reserved.
    #[error("no address left in range set {set} ({subnets})")]
    Exhausted {
        /// Index of the range set.
        set: usize,
        /// Its subnets, for the message.
        subnets: String,
    },
    /// A requested address is held by another attachment.
    #[error("requested address {ip} is already reserved by {holder}")]
    Taken {
        /// The address.
        ip: IpAddr,
        /// `containerID/ifname` of the holder.
        holder: String,
    },
    /// A requested address is in no range set.
    #[error("requested address {0} is in no configured range")]
    Outside(IpAddr),
}

/// One allocatable range inside a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet (host bits zero).
    pub subnet: IpNet,
    /// First allocatable address.
    pub start: IpAddr,
    /// Last allocatable address.
    pub end: IpAddr,
    /// The gateway, never allocated.
    pub gateway: IpAddr,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v4: bool, n: u128) -> IpAddr {
    if v4 {
        // Callers only pass values inside a v4 range, which fit in 32 bits.
        IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

impl Range {
    /// Validates a range: start, end and gateway inside the subnet; by default the range is the
    /// whole subnet minus the network address (and the v4 broadcast), the gateway its first host.
    pub fn new(
        subnet: IpNet,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        gateway: Option<IpAddr>,
    ) -> Result<Range, String> {
        if subnet.addr() != subnet.network() {
            return Err(format!(
                "subnet {subnet}: host bits set (did you mean {}?)",
                subnet.trunc()
            ));
        }
        let v4 = subnet.addr().is_ipv4();
        let max_prefix = if v4 { 30 } else { 126 };
        if subnet.prefix_len() > max_prefix {
            return Err(format!("subnet {subnet}: too small, at most /{max_prefix}"));
        }
        let net = to_u128(subnet.network());
        let last = to_u128(subnet.broadcast());
        let first_host = net + 1;
        let last_host = if v4 { last - 1 } else { last };
        let inside = |what: &str, ip: IpAddr| -> Result<u128, String> {
            let n = to_u128(ip);
            if ip.is_ipv4() != v4 || n < first_host || n > last_host {
                return Err(format!("{what} {ip} is not a host address of {subnet}"));
            }
            Ok(n)
        };
        let s = match start {
            Some(ip) => inside("rangeStart", ip)?,
            None => first_host,
        };
        let e = match end {
            Some(ip) => inside("rangeEnd", ip)?,
            None => last_host,
        };
        if s > e {
            return Err(format!(
                "rangeStart {} is after rangeEnd {}",
                from_u128(v4, s),
                from_u128(v4, e)
            ));
        }
        let g = match gateway {
            Some(ip) => inside("gateway", ip)?,
            None => first_host,
        };
        Ok(Range {
            subnet,
            start: from_u128(v4, s),
            end: from_u128(v4, e),
            gateway: from_u128(v4, g),
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let n = to_u128(ip);
        ip.is_ipv4() == self.subnet.addr().is_ipv4()
            && n >= to_u128(self.start)
            && n <= to_u128(self.end)
    }

    /// How many addresses the range can hand out.
    fn capacity(&self) -> u128 {
        let size = to_u128(self.end) - to_u128(self.start) + 1;
        size - u128::from(self.contains(self.gateway))
    }
}

/// Ranges of one family; one address is allocated from each set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range>,
}

impl RangeSet {
    /// Validates that the ranges share a family and do not overlap.
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet, String> {
        let v4 = ranges.first().map(|r| r.subnet.addr().is_ipv4());
        for (i, a) in ranges.iter().enumerate() {
            if Some(a.subnet.addr().is_ipv4()) != v4 {
                return Err("mixes IPv4 and IPv6 ranges".into());
            }
            for b in &ranges[i + 1..] {
                if to_u128(a.start) <= to_u128(b.end) && to_u128(b.start) <= to_u128(a.end) {
                    return Err(format!(
                        "ranges {}-{} and {}-{} overlap",
                        a.start, a.end, b.start, b.end
                    ));
                }
            }
        }
        Ok(RangeSet { ranges })
    }

    /// The ranges, in configuration order.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// The key under which the round-robin cursor of this set is stored.
    fn key(&self) -> String {
        self.ranges
            .iter()
            .map(|r| r.subnet.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn range_of(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    fn capacity(&self) -> u128 {
        self.ranges.iter().map(Range::capacity).sum()
    }

    /// The first free address after `last`, wrapping around through every range once.
    fn next_free(&self, last: Option<IpAddr>, taken: &HashSet<IpAddr>) -> Option<(IpAddr, &Range)> {
        let v4 = self.ranges.first()?.subnet.addr().is_ipv4();
        // Start in the range holding the cursor, just after it; else at the very beginning.
        let (mut ri, mut n) = match last.and_then(|l| {
            self.ranges
                .iter()
                .position(|r| r.contains(l))
                .map(|i| (i, to_u128(l)))
        }) {
            Some((i, l)) => (i, l.checked_add(1)),
            None => (0, Some(to_u128(self.ranges[0].start))),
        };
        // Bounded: every step either returns or passes one taken address (or a gateway), and
        // each range is entered at most twice.
        let mut budget = taken.len() as u128 + self.ranges.len() as u128 * 2 + 2;
        let mut entered = 0usize;
        loop {
            let r = &self.ranges[ri];
            match n {
                Some(x) if x <= to_u128(r.end) => {
                    let ip = from_u128(v4, x);
                    if ip != r.gateway && !taken.contains(&ip) {
                        return Some((ip, r));
                    }
                    budget = budget.checked_sub(1)?;
                    n = x.checked_add(1);
                }
                _ => {
                    entered += 1;
                    if entered > self.ranges.len() * 2 {
                        return None;
                    }
                    ri = (ri + 1) % self.ranges.len();
                    n = Some(to_u128(self.ranges[ri].start));
                }
            }
        }
    }
}

/// One reservation: the addresses of one (container ID, ifname).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
    /// Addresses, one per range set.
    pub ips: Vec<IpAddr>,
}

/// The persisted table of one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The last address handed out per range set, so that a released address is not reused
    /// at once.
    #[serde(default)]
    pub last: BTreeMap<String, IpAddr>,
    /// Every live reservation.
    #[serde(default)]
    pub reservations: Vec<Reservation>,
}

/// One allocated address with the range it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The address with the subnet's prefix length.
    pub address: IpNet,
    /// The range's gateway.
    pub gateway: IpAddr,
}

fn allocation(ip: IpAddr, r: &Range) -> Allocation {
    Allocation {
        // The prefix length comes from a valid IpNet of the same family.
        address: IpNet::new(ip, r.subnet.prefix_len()).unwrap_or(r.subnet),
        gateway: r.gateway,
    }
}

impl State {
    /// The reservation of (container ID, ifname), if any.
    pub fn get(&self, id: &str, ifname: &str) -> Option<&Reservation> {
        self.reservations
            .iter()
            .find(|r| r.container_id == id && r.ifname == ifname)
    }

    /// Allocates one address per range set for (id, ifname), honouring `requested` addresses;
    /// an existing reservation for the same attachment is returned again (a retried ADD).
    pub fn allocate(
        &mut self,
        sets: &[RangeSet],
        id: &str,
        ifname: &str,
        requested: &[IpAddr],
    ) -> Result<Vec<Allocation>, IpamError> {
        if let Some(existing) = self.get(id, ifname) {
            let found: Option<Vec<Allocation>> = sets
                .iter()
                .map(|s| {
                    existing
                        .ips
                        .iter()
                        .find_map(|ip| s.range_of(*ip).map(|r| allocation(*ip, r)))
                })
                .collect();
            if let Some(found) = found {
                return Ok(found);
            }
            self.release(id, ifname);
        }
        for ip in requested {
            if !sets.iter().any(|s| s.range_of(*ip).is_some()) {
                return Err(IpamError::Outside(*ip));
            }
        }
        let taken: HashSet<IpAddr> = self
            .reservations
            .iter()
            .flat_map(|r| r.ips.iter().copied())
            .collect();
        let mut out = Vec::with_capacity(sets.len());
        let mut ips = Vec::with_capacity(sets.len());
        for (i, set) in sets.iter().enumerate() {
            let wanted = requested
                .iter()
                .find_map(|ip| set.range_of(*ip).map(|r| (*ip, r)));
            let (ip, r) = match wanted {
                Some((ip, r)) => {
                    if taken.contains(&ip) || ip == r.gateway {
                        let holder = self
                            .reservations
                            .iter()
                            .find(|res| res.ips.contains(&ip))
                            .map(|res| format!("{}/{}", res.container_id, res.ifname))
                            .unwrap_or_else(|| "the gateway".into());
                        return Err(IpamError::Taken { ip, holder });
                    }
                    (ip, r)
                }
                None => {
                    let key = set.key();
                    let (ip, r) = set
                        .next_free(self.last.get(&key).copied(), &taken)
                        .ok_or_else(|| IpamError::Exhausted {
                            set: i,
                            subnets: key.clone(),
                        })?;
                    self.last.insert(key, ip);
                    (ip, r)
                }
            };
            ips.push(ip);
            out.push(allocation(ip, r));
        }
        self.reservations.push(Reservation {
            container_id: id.to_owned(),
            ifname: ifname.to_owned(),
            ips,
        });
        Ok(out)
    }

    /// Frees the reservation of (id, ifname); `None` when there was none (DEL is idempotent).
    pub fn release(&mut self, id: &str, ifname: &str) -> Option<Reservation> {
        let i = self
            .reservations
            .iter()
            .position(|r| r.container_id == id && r.ifname == ifname)?;
        Some(self.reservations.swap_remove(i))
    }

    /// Frees every reservation whose attachment is not in `keep`; returns what was freed.
    pub fn retain(&mut self, keep: &HashSet<(String, String)>) -> Vec<Reservation> {
        let (kept, freed) = std::mem::take(&mut self.reservations)
            .into_iter()
            .partition(|r| keep.contains(&(r.container_id.clone(), r.ifname.clone())));
        self.reservations = kept;
        freed
    }

    /// The first range set with no free address left, for STATUS.
    pub fn exhausted(&self, sets: &[RangeSet]) -> Option<IpamError> {
        sets.iter().enumerate().find_map(|(i, s)| {
            let used = self
                .reservations
                .iter()
                .flat_map(|r| r.ips.iter())
                .filter(|ip| s.range_of(**ip).is_some())
                .count() as u128;
            (used >= s.capacity()).then(|| IpamError::Exhausted {
                set: i,
                subnets: s.key(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(subnet: &str) -> RangeSet {
        RangeSet::new(vec![
            Range::new(subnet.parse().unwrap(), None, None, None).unwrap(),
        ])
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn round_robin_does_not_reuse_a_released_address_at_once() {
        let sets = [set("10.0.0.0/29")]; // hosts .1-.6, gateway .1
        let mut st = State::default();
        let a = st.allocate(&sets, "a", "eth0", &[]).unwrap();
        assert_eq!(a[0].address.to_string(), "10.0.0.2/29");
        assert_eq!(a[0].gateway, ip("10.0.0.1"));
        st.release("a", "eth0");
        let b = st.allocate(&sets, "b", "eth0", &[]).unwrap();
        assert_eq!(b[0].address.addr(), ip("10.0.0.3"));
        for (n, want) in ["10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.2"]
            .iter()
            .enumerate()
        {
            let got = st.allocate(&sets, &format!("c{n}"), "eth0", &[]).unwrap();
            assert_eq!(got[0].address.addr(), ip(want));
        }
        assert!(st.exhausted(&sets).is_some());
        assert!(matches!(
            st.allocate(&sets, "z", "eth0", &[]),
            Err(IpamError::Exhausted { set: 0, .. })
        ));
    }

    #[test]
    fn dual_stack_and_requested_addresses() {
        let sets = [set("10.0.0.0/24"), set("fd00::/120")];
        let mut st = State::default();
        let got = st
            .allocate(&sets, "a", "eth0", &[ip("10.0.0.50"), ip("fd00::50")])
            .unwrap();
        assert_eq!(got[0].address.to_string(), "10.0.0.50/24");
        assert_eq!(got[1].address.to_string(), "fd00::50/120");
        let err = st
            .allocate(&sets, "b", "eth0", &[ip("10.0.0.50")])
            .unwrap_err();
        assert_eq!(
            err,
            IpamError::Taken {
                ip: ip("10.0.0.50"),
                holder: "a/eth0".into()
            }
        );
        assert_eq!(
            st.allocate(&sets, "b", "eth0", &[ip("10.9.0.1")])
                .unwrap_err(),
            IpamError::Outside(ip("10.9.0.1"))
        );
        // The same attachment gets its reservation back.
        let again = st.allocate(&sets, "a", "eth0", &[]).unwrap();
        assert_eq!(again, got);
        assert_eq!(st.reservations.len(), 1);
    }

    #[test]
    fn ranges_are_validated() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        assert!(
            Range::new(n("10.0.0.1/24"), None, None, None)
                .unwrap_err()
                .contains("host bits")
        );
        assert!(Range::new(n("10.0.0.0/31"), None, None, None).is_err());
        assert!(Range::new(n("10.0.0.0/24"), Some(ip("10.0.1.1")), None, None).is_err());
        assert!(
            Range::new(
                n("10.0.0.0/24"),
                Some(ip("10.0.0.9")),
                Some(ip("10.0.0.8")),
                None
            )
            .is_err()
        );
        let a = Range::new(n("10.0.0.0/24"), None, Some(ip("10.0.0.100")), None).unwrap();
        let b = Range::new(n("10.0.0.0/24"), Some(ip("10.0.0.100")), None, None).unwrap();
        assert!(RangeSet::new(vec![a, b]).unwrap_err().contains("overlap"));
    }

    #[test]
    fn gc_keeps_only_valid_attachments() {
        let sets = [set("10.0.0.0/24")];
        let mut st = State::default();
        for id in ["a", "b", "c"] {
            st.allocate(&sets, id, "eth0", &[]).unwrap();
        }
        let keep: HashSet<_> = [("b".to_owned(), "eth0".to_owned())].into();
        let freed = st.retain(&keep);
        assert_eq!(freed.len(), 2);
        assert_eq!(st.reservations.len(), 1);
        assert_eq!(st.reservations[0].container_id, "b");
    }

    proptest! {
        /// Whatever the sequence of allocations and releases, no address is held twice, none is
        /// the gateway, and every one lies in its range.
        #[test]
        fn never_hands_out_an_address_twice(ops in proptest::collection::vec((0u8..40, any::<bool>()), 1..300)) {
            let r1 = Range::new("10.0.0.0/27".parse().unwrap(), Some(ip("10.0.0.5")), Some(ip("10.0.0.20")), None).unwrap();
            let r2 = Range::new("10.0.1.0/28".parse().unwrap(), None, None, Some(ip("10.0.1.14"))).unwrap();
            let sets = [RangeSet::new(vec![r1, r2]).unwrap()];
            let mut st = State::default();
            for (id, add) in ops {
                let id = id.to_string();
                if add {
                    match st.allocate(&sets, &id, "eth0", &[]) {
                        Ok(a) => {
                            prop_assert!(a[0].address.addr() != a[0].gateway);
                            prop_assert!(sets[0].range_of(a[0].address.addr()).is_some());
                        }
                        Err(IpamError::Exhausted { .. }) => prop_assert!(st.exhausted(&sets).is_some()),
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                } else {
                    st.release(&id, "eth0");
                }
                let all: Vec<IpAddr> = st.reservations.iter().flat_map(|r| r.ips.clone()).collect();
                let uniq: HashSet<IpAddr> = all.iter().copied().collect();
                prop_assert_eq!(all.len(), uniq.len());
            }
        }
    }
}
