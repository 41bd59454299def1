//! The real kernel: rtnetlink for links, addresses and routes (through the small synchronous
//! client in `kernel/netlink.rs`), `/proc/sys` for forwarding, `nft` for masquerade. Host
//! operations use a socket opened in the plugin's own namespace; container operations use a
//! socket opened inside the container's namespace. A socket stays in the namespace it was
//! created in, so the calling thread is inside the container's namespace only for the
//! `socket()` call and does all its work from its own namespace (the CNI project's `pkg/ns`
//! README explains why work must never run on a thread left in another namespace).

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};

use super::netlink::{self as nl, Msg, Socket};
use super::{
    BridgeSpec, ContainerSpec, ContainerState, HostLink, Kernel, KernelError, LinkInfo, MasqSpec,
    VethSpec,
};

const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
const EEXIST: i32 = 17;

fn nl_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError::Netlink {
        what,
        errno: source.raw_os_error(),
        source,
    }
}

fn mac_string(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A locally administered unicast MAC derived from a link name.
fn host_mac(name: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02, b[0], b[1], b[2], b[3], b[4]]
}

/// The fields of a link message the plugin reads.
#[derive(Debug, Default)]
struct Link {
    index: u32,
    flags: u32,
    name: String,
    mac: Vec<u8>,
    mtu: u32,
    kind: String,
    alias: String,
    master: Option<u32>,
}

impl Link {
    /// Parses an `RTM_NEWLINK` payload (`ifinfomsg` and attributes).
    fn parse(p: &[u8]) -> Option<Link> {
        let mut l = Link {
            index: nl::u32_at(p, 4),
            flags: nl::u32_at(p, 8),
            ..Link::default()
        };
        for (ty, v) in nl::attrs(p.get(16..)?) {
            match ty {
                nl::IFLA_IFNAME => l.name = nl::str_of(v),
                nl::IFLA_ADDRESS => l.mac = v.to_vec(),
                nl::IFLA_MTU => l.mtu = nl::u32_at(v, 0),
                nl::IFLA_IFALIAS => l.alias = nl::str_of(v),
                nl::IFLA_MASTER => l.master = Some(nl::u32_at(v, 0)),
                nl::IFLA_LINKINFO => {
                    for (ity, iv) in nl::attrs(v) {
                        if ity == nl::IFLA_INFO_KIND {
                            l.kind = nl::str_of(iv);
                        }
                    }
                }
                _ => {}
            }
        }
        Some(l)
    }

    fn info(&self) -> LinkInfo {
        LinkInfo {
            index: self.index,
            mac: mac_string(&self.mac),
            mtu: self.mtu,
        }
    }

    fn host_link(self) -> HostLink {
        HostLink {
            index: self.index,
            name: self.name,
            alias: self.alias,
            master: self.master,
        }
    }
}

/// Sends a request that only needs the kernel's acknowledgement.
fn ack(sock: &mut Socket, msg: Msg, what: impl FnOnce() -> String) -> Result<(), KernelError> {
    sock.call(msg).map(|_| ()).map_err(|e| nl_err(what())(e))
}

/// A link by name; `None` if it does not exist.
fn get_link(sock: &mut Socket, name: &str) -> Result<Option<Link>, KernelError> {
    let mut m = Msg::new(nl::RTM_GETLINK, nl::NLM_F_ACK);
    m.ifinfo(nl::AF_UNSPEC, 0, 0, 0)
        .str(nl::IFLA_IFNAME, name)
        .u32(nl::IFLA_EXT_MASK, nl::RTEXT_FILTER_SKIP_STATS);
    match sock.call(m) {
        Ok(replies) => Ok(replies
            .iter()
            .filter(|r| r.ty == nl::RTM_NEWLINK)
            .find_map(|r| Link::parse(&r.payload))),
        Err(e) if e.raw_os_error() == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl_err(format!("looking up link {name}"))(e)),
    }
}

/// Every link of the socket's namespace.
fn all_links(sock: &mut Socket) -> Result<Vec<Link>, KernelError> {
    let mut m = Msg::new(nl::RTM_GETLINK, nl::NLM_F_DUMP);
    m.ifinfo(nl::AF_UNSPEC, 0, 0, 0)
        .u32(nl::IFLA_EXT_MASK, nl::RTEXT_FILTER_SKIP_STATS);
    let replies = sock.call(m).map_err(nl_err("listing links"))?;
    Ok(replies
        .iter()
        .filter(|r| r.ty == nl::RTM_NEWLINK)
        .filter_map(|r| Link::parse(&r.payload))
        .collect())
}

fn set_up(sock: &mut Socket, index: u32, what: &str) -> Result<(), KernelError> {
    let mut m = Msg::new(nl::RTM_SETLINK, nl::NLM_F_ACK);
    m.ifinfo(nl::AF_UNSPEC, index, nl::IFF_UP, nl::IFF_UP);
    ack(sock, m, || format!("setting {what} up"))
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn family(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        nl::AF_INET
    } else {
        nl::AF_INET6
    }
}

/// Adds an address without duplicate address detection (IPAM guarantees it is unique on the
/// bridge, so it is usable at once); one that is already there is success.
fn add_address(sock: &mut Socket, index: u32, addr: IpNet) -> Result<(), KernelError> {
    let ip = addr.addr();
    let bytes = ip_bytes(ip);
    let mut m = Msg::new(
        nl::RTM_NEWADDR,
        nl::NLM_F_ACK | nl::NLM_F_CREATE | nl::NLM_F_EXCL,
    );
    // ifa_flags holds the low 8 bits; IFA_FLAGS the whole word.
    m.ifaddr(family(ip), addr.prefix_len(), nl::IFA_F_NODAD as u8, index)
        .attr(nl::IFA_LOCAL, &bytes)
        .attr(nl::IFA_ADDRESS, &bytes);
    if let IpNet::V4(v4) = addr
        && v4.prefix_len() < 31
    {
        m.attr(nl::IFA_BROADCAST, &v4.broadcast().octets());
    }
    m.u32(nl::IFA_FLAGS, nl::IFA_F_NODAD);
    match sock.call(m) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(EEXIST) => Ok(()),
        Err(e) => Err(nl_err(format!("adding address {addr} to link {index}"))(e)),
    }
}

/// The global addresses of link `index`.
fn addresses(sock: &mut Socket, index: u32) -> Result<Vec<IpNet>, KernelError> {
    let mut m = Msg::new(nl::RTM_GETADDR, nl::NLM_F_DUMP);
    m.ifaddr(nl::AF_UNSPEC, 0, 0, 0);
    let replies = sock
        .call(m)
        .map_err(nl_err(format!("listing addresses of link {index}")))?;
    let mut out = Vec::new();
    for r in replies.iter().filter(|r| r.ty == nl::RTM_NEWADDR) {
        let p = &r.payload;
        if p.len() < 8 || nl::u32_at(p, 4) != index {
            continue;
        }
        let (fam, prefix) = (p[0], p[1]);
        // IFA_ADDRESS is the peer on point-to-point links; IFA_LOCAL, when present, is ours.
        let mut ip = None;
        for (ty, v) in nl::attrs(&p[8..]) {
            if ty == nl::IFA_LOCAL || (ty == nl::IFA_ADDRESS && ip.is_none()) {
                ip = ip_of(fam, v);
            }
        }
        let Some(ip) = ip else { continue };
        // Link-local addresses are the kernel's own, not the plugin's.
        let link_local = match ip {
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
            IpAddr::V4(v4) => v4.is_link_local(),
        };
        if !link_local && let Ok(net) = IpNet::new(ip, prefix) {
            out.push(net);
        }
    }
    Ok(out)
}

fn ip_of(fam: u8, v: &[u8]) -> Option<IpAddr> {
    match fam {
        nl::AF_INET => <[u8; 4]>::try_from(v).ok().map(IpAddr::from),
        nl::AF_INET6 => <[u8; 16]>::try_from(v).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The routes through link `index`, in every table: destination and next hop.
fn routes_via(sock: &mut Socket, index: u32) -> Result<Vec<(IpNet, Option<IpAddr>)>, KernelError> {
    let mut out = Vec::new();
    for fam in [nl::AF_INET, nl::AF_INET6] {
        let mut m = Msg::new(nl::RTM_GETROUTE, nl::NLM_F_DUMP);
        m.rtmsg(fam, 0);
        let replies = sock.call(m).map_err(nl_err("listing routes"))?;
        for r in replies.iter().filter(|r| r.ty == nl::RTM_NEWROUTE) {
            let p = &r.payload;
            if p.len() < 12 {
                continue;
            }
            let (rfam, dst_len) = (p[0], p[1]);
            let (mut dst, mut gw, mut oif) = (None, None, None);
            for (ty, v) in nl::attrs(&p[12..]) {
                match ty {
                    nl::RTA_DST => dst = ip_of(rfam, v),
                    nl::RTA_GATEWAY => gw = ip_of(rfam, v),
                    // struct rtvia: a 16-bit family, then the address.
                    nl::RTA_VIA if v.len() >= 2 => {
                        gw = ip_of(u8::try_from(nl::u16_at(v, 0)).unwrap_or(0), &v[2..]);
                    }
                    nl::RTA_OIF => oif = Some(nl::u32_at(v, 0)),
                    _ => {}
                }
            }
            if oif != Some(index) {
                continue;
            }
            let dst = dst.unwrap_or(if rfam == nl::AF_INET {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            });
            if let Ok(net) = IpNet::new(dst, dst_len) {
                out.push((net, gw));
            }
        }
    }
    Ok(out)
}

/// Adds a route through link `index`; one that is already there is success.
fn add_route(
    sock: &mut Socket,
    index: u32,
    dst: IpNet,
    gw: Option<IpAddr>,
) -> Result<(), KernelError> {
    let fam = family(dst.addr());
    let mut m = Msg::new(
        nl::RTM_NEWROUTE,
        nl::NLM_F_ACK | nl::NLM_F_CREATE | nl::NLM_F_EXCL,
    );
    m.rtmsg(fam, dst.prefix_len());
    if dst.prefix_len() > 0 {
        m.attr(nl::RTA_DST, &ip_bytes(dst.network()));
    }
    m.u32(nl::RTA_OIF, index);
    match gw {
        Some(g) if family(g) == fam => {
            m.attr(nl::RTA_GATEWAY, &ip_bytes(g));
        }
        // An IPv4 route via an IPv6 next hop (RFC 5549): struct rtvia.
        Some(IpAddr::V6(g6)) => {
            let mut via = u16::from(nl::AF_INET6).to_ne_bytes().to_vec();
            via.extend_from_slice(&g6.octets());
            m.attr(nl::RTA_VIA, &via);
        }
        Some(g) => {
            return Err(KernelError::State(format!(
                "route {dst} via {g}: an IPv6 route cannot have an IPv4 next hop"
            )));
        }
        None => {}
    }
    match sock.call(m) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(EEXIST) => Ok(()),
        Err(e) => Err(nl_err(format!("adding route {dst} via {gw:?}"))(e)),
    }
}

fn write_sysctl(path: &str, value: &str) -> Result<(), KernelError> {
    let io = |source| KernelError::Io {
        what: format!("writing {value} to {path}"),
        source,
    };
    // Read first: writing needs CAP_NET_ADMIN and dirties nothing when the value is already set.
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(io)
}

/// Opens a netlink socket inside the namespace at `path`: the calling thread enters it, opens
/// the socket (which stays in that namespace for its whole life) and returns to its own
/// namespace at once; nothing else runs while it is inside. Cheaper than the dedicated thread
/// this replaced, which strace showed paying for its start-up, a fresh 64 MiB malloc arena and
/// the join, and waiting for a CPU of its own on a busy machine.
fn socket_in(path: &Path) -> Result<Socket, KernelError> {
    let netns_err = |source| KernelError::Netns {
        path: path.to_owned(),
        source,
    };
    let own = File::open("/proc/thread-self/ns/net").map_err(|source| KernelError::Io {
        what: "opening this thread's network namespace".into(),
        source,
    })?;
    let target = File::open(path).map_err(netns_err)?;
    setns(&target, CloneFlags::CLONE_NEWNET).map_err(|e| netns_err(e.into()))?;
    let sock = Socket::open();
    // Returning cannot fail in practice (the namespace is held open by `own` and entering one
    // just worked); if it did, the error stops the command before anything else runs here.
    setns(&own, CloneFlags::CLONE_NEWNET).map_err(|e| KernelError::Io {
        what: "returning to the plugin's network namespace".into(),
        source: e.into(),
    })?;
    sock.map_err(|source| KernelError::Io {
        what: format!("opening a netlink socket in {}", path.display()),
        source,
    })
}

/// The real kernel. Host operations use a netlink socket of the plugin's own namespace.
pub struct RealKernel {
    host: RefCell<Socket>,
    /// The socket of the last container namespace used, kept for the next operation on it.
    container: RefCell<Option<(PathBuf, Socket)>>,
}

impl std::fmt::Debug for RealKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RealKernel")
    }
}

impl RealKernel {
    /// Opens the host netlink socket.
    pub fn new() -> Result<RealKernel, KernelError> {
        let host = Socket::open().map_err(|source| KernelError::Io {
            what: "opening a netlink socket".into(),
            source,
        })?;
        Ok(RealKernel {
            host: RefCell::new(host),
            container: RefCell::new(None),
        })
    }

    /// Runs `f` with a socket in the namespace at `path`, opened once per namespace.
    fn in_netns<T>(
        &self,
        path: &Path,
        f: impl FnOnce(&mut Socket) -> Result<T, KernelError>,
    ) -> Result<T, KernelError> {
        let mut cached = self.container.borrow_mut();
        let sock = match &mut *cached {
            Some((p, s)) if p == path => s,
            other => &mut other.insert((path.to_owned(), socket_in(path)?)).1,
        };
        f(sock)
    }
}

impl Kernel for RealKernel {
    fn netns_exists(&self, netns: &Path) -> bool {
        netns.exists()
    }

    fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<LinkInfo, KernelError> {
        let h = &mut *self.host.borrow_mut();
        let link = match get_link(h, &spec.name)? {
            Some(l) => l,
            None => {
                let mut m = Msg::new(
                    nl::RTM_NEWLINK,
                    nl::NLM_F_ACK | nl::NLM_F_CREATE | nl::NLM_F_EXCL,
                );
                m.ifinfo(nl::AF_UNSPEC, 0, 0, 0)
                    .str(nl::IFLA_IFNAME, &spec.name)
                    .attr(nl::IFLA_ADDRESS, &spec.mac)
                    .u32(nl::IFLA_MTU, spec.mtu)
                    .nest(nl::IFLA_LINKINFO)
                    .str(nl::IFLA_INFO_KIND, "bridge")
                    .end();
                if let Err(e) = h.call(m) {
                    // A concurrent invocation may have created it first.
                    if e.raw_os_error() != Some(EEXIST) {
                        return Err(nl_err(format!("creating bridge {}", spec.name))(e));
                    }
                }
                get_link(h, &spec.name)?.ok_or_else(|| {
                    KernelError::State(format!("bridge {} vanished after creation", spec.name))
                })?
            }
        };
        if link.kind != "bridge" {
            return Err(KernelError::State(format!(
                "link {} exists and is not a bridge",
                spec.name
            )));
        }
        if link.flags & nl::IFF_UP == 0 {
            set_up(h, link.index, &format!("bridge {}", spec.name))?;
        }
        // Adding an address the bridge has answers EEXIST: one request each, and no dump of
        // every address of the host (which grows with the number of pods).
        for a in &spec.addresses {
            add_address(h, link.index, *a)?;
        }
        Ok(link.info())
    }

    fn enable_forwarding(&self, v4: bool, v6: bool) -> Result<(), KernelError> {
        if v4 {
            write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        }
        if v6 {
            write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
        }
        Ok(())
    }

    fn create_veth(&self, spec: &VethSpec) -> Result<LinkInfo, KernelError> {
        let netns = File::open(&spec.netns).map_err(|source| KernelError::Netns {
            path: spec.netns.clone(),
            source,
        })?;
        let fd = u32::try_from(netns.as_raw_fd()).unwrap_or(u32::MAX);
        // The host end's MAC is derived from its name, so the result needs no lookup after
        // creation.
        let mac = host_mac(&spec.host_name);
        let h = &mut *self.host.borrow_mut();
        let mut m = Msg::new(
            nl::RTM_NEWLINK,
            nl::NLM_F_ACK | nl::NLM_F_CREATE | nl::NLM_F_EXCL,
        );
        // The host end is created up and on the bridge; the peer cannot be created up
        // (veth_open needs its peer registered first), setup_container does it.
        //
        // One TX and one RX queue, said explicitly for both ends: without them the kernel
        // allocates a queue per possible CPU and then cuts the real count down to one, and
        // that cut waits for an expedited RCU grace period (synchronize_net in
        // netif_set_real_num_tx_queues), once per end, with the RTNL lock held: two sleeps per
        // ADD that a loaded machine stretches to milliseconds (seen with `perf record -e
        // sched:sched_switch`). One queue is what a veth uses by default anyway.
        m.ifinfo(nl::AF_UNSPEC, 0, nl::IFF_UP, nl::IFF_UP)
            .str(nl::IFLA_IFNAME, &spec.host_name)
            .u32(nl::IFLA_MTU, spec.mtu)
            .attr(nl::IFLA_ADDRESS, &mac)
            .u32(nl::IFLA_MASTER, spec.bridge_index)
            .u32(nl::IFLA_NUM_TX_QUEUES, 1)
            .u32(nl::IFLA_NUM_RX_QUEUES, 1)
            .nest(nl::IFLA_LINKINFO)
            .str(nl::IFLA_INFO_KIND, "veth")
            .nest(nl::IFLA_INFO_DATA)
            .nest(nl::VETH_INFO_PEER)
            .ifinfo(nl::AF_UNSPEC, 0, 0, 0)
            .str(nl::IFLA_IFNAME, &spec.ifname)
            .u32(nl::IFLA_MTU, spec.mtu)
            .attr(nl::IFLA_ADDRESS, &spec.peer_mac)
            .u32(nl::IFLA_NUM_TX_QUEUES, 1)
            .u32(nl::IFLA_NUM_RX_QUEUES, 1)
            .u32(nl::IFLA_NET_NS_FD, fd)
            .end()
            .end()
            .end();
        ack(h, m, || {
            format!(
                "creating veth {} with peer {} in {}",
                spec.host_name,
                spec.ifname,
                spec.netns.display()
            )
        })?;
        drop(netns);
        // The alias names the attachment for operators (`ip link`) and for GC; the kernel
        // ignores an alias at creation, hence the second message, which also carries the
        // hairpin flag (a bridge port exists only once the link is enslaved).
        let mut m = Msg::new(nl::RTM_NEWLINK, nl::NLM_F_ACK);
        m.ifinfo(nl::AF_UNSPEC, 0, 0, 0)
            .str(nl::IFLA_IFNAME, &spec.host_name)
            .str(nl::IFLA_IFALIAS, &spec.alias);
        if spec.hairpin {
            m.nest(nl::IFLA_LINKINFO)
                .str(nl::IFLA_INFO_SLAVE_KIND, "bridge")
                .nest(nl::IFLA_INFO_SLAVE_DATA)
                .attr(nl::IFLA_BRPORT_MODE, &[1])
                .end()
                .end();
        }
        ack(h, m, || {
            format!("configuring bridge port {}", spec.host_name)
        })?;
        Ok(LinkInfo {
            index: 0,
            mac: mac_string(&mac),
            mtu: spec.mtu,
        })
    }

    fn setup_container(&self, netns: &Path, spec: &ContainerSpec) -> Result<LinkInfo, KernelError> {
        self.in_netns(netns, |c| {
            let link = get_link(c, &spec.ifname)?.ok_or_else(|| {
                KernelError::State(format!(
                    "{} is missing from {} after creation",
                    spec.ifname,
                    netns.display()
                ))
            })?;
            let index = link.index;
            if spec.addresses.iter().any(|a| a.addr().is_ipv4()) {
                // Announce the new MAC when the link comes up, so that neighbours' caches
                // follow a reused IP: net.ipv4.conf.<if>.arp_notify, set through netlink
                // (IFLA_AF_SPEC) on the namespace's socket, as the plugin's thread never has
                // the container's /proc/sys/net. Before the link goes up: the announcement is
                // sent on NETDEV_UP.
                let mut m = Msg::new(nl::RTM_SETLINK, nl::NLM_F_ACK);
                m.ifinfo(nl::AF_UNSPEC, index, 0, 0)
                    .nest(nl::IFLA_AF_SPEC)
                    .nest(u16::from(nl::AF_INET))
                    .nest(nl::IFLA_INET_CONF)
                    .u32(nl::IPV4_DEVCONF_ARP_NOTIFY, 1)
                    .end()
                    .end()
                    .end();
                ack(c, m, || format!("setting arp_notify on {}", spec.ifname))?;
            }
            for a in &spec.addresses {
                add_address(c, index, *a)?;
            }
            set_up(c, index, &spec.ifname)?;
            for (dst, gw) in &spec.routes {
                add_route(c, index, *dst, *gw)?;
            }
            Ok(link.info())
        })
    }

    fn container_has(&self, netns: &Path, ifname: &str) -> Result<bool, KernelError> {
        self.in_netns(netns, |c| Ok(get_link(c, ifname)?.is_some()))
    }

    fn container_state(
        &self,
        netns: &Path,
        ifname: &str,
    ) -> Result<Option<ContainerState>, KernelError> {
        self.in_netns(netns, |c| {
            let Some(link) = get_link(c, ifname)? else {
                return Ok(None);
            };
            Ok(Some(ContainerState {
                mac: mac_string(&link.mac),
                mtu: link.mtu,
                addresses: addresses(c, link.index)?,
                routes: routes_via(c, link.index)?,
            }))
        })
    }

    fn delete_link(&self, name: &str) -> Result<bool, KernelError> {
        let h = &mut *self.host.borrow_mut();
        let mut m = Msg::new(nl::RTM_DELLINK, nl::NLM_F_ACK);
        m.ifinfo(nl::AF_UNSPEC, 0, 0, 0).str(nl::IFLA_IFNAME, name);
        match h.call(m) {
            Ok(_) => Ok(true),
            Err(e) => match e.raw_os_error() {
                Some(ENODEV) | Some(ESRCH) => Ok(false),
                _ => Err(nl_err(format!("deleting link {name}"))(e)),
            },
        }
    }

    fn host_link(&self, name: &str) -> Result<Option<HostLink>, KernelError> {
        let h = &mut *self.host.borrow_mut();
        Ok(get_link(h, name)?.map(Link::host_link))
    }

    fn host_links(&self) -> Result<Vec<HostLink>, KernelError> {
        let h = &mut *self.host.borrow_mut();
        Ok(all_links(h)?.into_iter().map(Link::host_link).collect())
    }

    fn masquerade(&self, spec: &MasqSpec) -> Result<(), KernelError> {
        let script = nft_script(spec);
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| KernelError::Io { what, source }
        };
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("running nft (is the nftables package installed?)"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(io("writing the nft script"))?;
        }
        let out = child.wait_with_output().map_err(io("waiting for nft"))?;
        if !out.status.success() {
            return Err(KernelError::State(format!(
                "nft failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

/// The nftables table name of a network: letters, digits and `_` only.
pub fn nft_table(network: &str) -> String {
    let clean: String = network
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("berth_cni_{clean}")
}

/// One idempotent nft transaction: the table, chain, sets and rules are (re)declared, the rule
/// list is flushed and rewritten, and pod addresses are added to or removed from the sets
/// (removal adds first so that removing an absent element is not an error).
pub fn nft_script(spec: &MasqSpec) -> String {
    use std::fmt::Write as _;
    let t = nft_table(&spec.network);
    let mut s = String::new();
    let _ = writeln!(s, "table inet {t} {{}}");
    let _ = writeln!(
        s,
        "add chain inet {t} postrouting {{ type nat hook postrouting priority srcnat; }}"
    );
    let _ = writeln!(s, "add set inet {t} pods4 {{ type ipv4_addr; }}");
    let _ = writeln!(s, "add set inet {t} pods6 {{ type ipv6_addr; }}");
    let _ = writeln!(s, "flush chain inet {t} postrouting");
    let nets = |v4: bool| {
        spec.subnets
            .iter()
            .filter(|n| n.addr().is_ipv4() == v4)
            .map(|n| n.trunc().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (v4, fam, set) in [(true, "ip", "pods4"), (false, "ip6", "pods6")] {
        let nets = nets(v4);
        if !nets.is_empty() {
            let _ = writeln!(
                s,
                "add rule inet {t} postrouting {fam} saddr @{set} {fam} daddr != {{ {nets} }} masquerade"
            );
        }
    }
    if spec.reset {
        let _ = writeln!(s, "flush set inet {t} pods4");
        let _ = writeln!(s, "flush set inet {t} pods6");
    }
    for (ips, verb) in [(&spec.remove, "delete"), (&spec.add, "add")] {
        for ip in ips.iter() {
            let set = if ip.is_ipv4() { "pods4" } else { "pods6" };
            if verb == "delete" {
                let _ = writeln!(s, "add element inet {t} {set} {{ {ip} }}");
            }
            let _ = writeln!(s, "{verb} element inet {t} {set} {{ {ip} }}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_link_message_yields_what_the_plugin_reads() {
        let mut m = Msg::new(nl::RTM_NEWLINK, 0);
        m.ifinfo(nl::AF_UNSPEC, 42, nl::IFF_UP, 0)
            .str(nl::IFLA_IFNAME, "bv0123")
            .attr(nl::IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1])
            .u32(nl::IFLA_MTU, 1400)
            .u32(nl::IFLA_MASTER, 7)
            .str(nl::IFLA_IFALIAS, "berth-cni/n/c/eth0")
            .nest(nl::IFLA_LINKINFO)
            .str(nl::IFLA_INFO_KIND, "veth")
            .end();
        let bytes = m.into_bytes();
        let l = Link::parse(&bytes[16..]).unwrap();
        assert_eq!((l.index, l.flags, l.mtu, l.master), (42, 1, 1400, Some(7)));
        assert_eq!((l.name.as_str(), l.kind.as_str()), ("bv0123", "veth"));
        assert_eq!(l.alias, "berth-cni/n/c/eth0");
        assert_eq!(l.info().mac, "02:00:00:00:00:01");
    }

    proptest! {
        #[test]
        fn link_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Link::parse(&bytes);
            for (_, v) in nl::attrs(&bytes) {
                let _ = nl::attrs(v).count();
                let _ = nl::str_of(v);
            }
        }
    }

    #[test]
    fn nft_script_is_idempotent_in_shape() {
        let s = nft_script(&MasqSpec {
            network: "pod-net".into(),
            subnets: vec!["10.1.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
            add: vec!["10.1.0.5".parse().unwrap()],
            remove: vec!["fd00::5".parse().unwrap()],
            reset: false,
        });
        assert!(s.contains("table inet berth_cni_pod_net {}"));
        assert!(s.contains("ip saddr @pods4 ip daddr != { 10.1.0.0/24 } masquerade"));
        assert!(s.contains("ip6 saddr @pods6 ip6 daddr != { fd00::/64 } masquerade"));
        assert!(s.contains("add element inet berth_cni_pod_net pods6 { fd00::5 }\ndelete element"));
        assert!(s.contains("add element inet berth_cni_pod_net pods4 { 10.1.0.5 }"));
    }
}
