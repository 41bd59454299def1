//! The real kernel: rtnetlink for links, addresses and routes, `/proc/sys` for sysctls, `nft`
//! for masquerade. Host operations run on the calling thread in the plugin's own namespace;
//! container operations run on a dedicated thread that enters the container's namespace first
//! and only then opens its netlink socket (the CNI project's `pkg/ns` README explains why a
//! thread that switched namespaces must not be shared with other work).

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteVia};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::{
    BridgeSpec, ContainerSpec, ContainerState, HostLink, Kernel, KernelError, LinkInfo, MasqSpec,
    VethSpec,
};

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const ESRCH: i32 = 3;

/// A netlink connection with the single-threaded runtime that drives it.
struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    /// Opens a netlink socket in the calling thread's current network namespace.
    fn open() -> Result<Netlink, KernelError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|source| KernelError::Io {
                what: "building the netlink runtime".into(),
                source,
            })?;
        let (conn, handle, _) = {
            let _guard = rt.enter();
            rtnetlink::new_connection().map_err(|source| KernelError::Io {
                what: "opening a netlink socket".into(),
                source,
            })?
        };
        rt.spawn(conn);
        Ok(Netlink { rt, handle })
    }
}

fn nl_err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let what = what.into();
    move |source| {
        let errno = match &source {
            rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
            _ => None,
        };
        KernelError::Netlink {
            what,
            errno,
            source,
        }
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

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        mac: String::new(),
        mtu: 0,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::Address(m) => info.mac = mac_string(m),
            LinkAttribute::Mtu(m) => info.mtu = *m,
            _ => {}
        }
    }
    info
}

fn is_bridge(msg: &LinkMessage) -> bool {
    msg.attributes.iter().any(|a| {
        matches!(a, LinkAttribute::LinkInfo(infos)
            if infos.iter().any(|i| matches!(i, NlLinkInfo::Kind(InfoKind::Bridge))))
    })
}

async fn get_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, KernelError> {
    // Statistics are most of a link dump's bytes and none of its use here.
    let mut links = handle
        .link()
        .get()
        .set_filter_mask(
            rtnetlink::packet_route::AddressFamily::Unspec,
            vec![LinkExtentMask::SkipStats],
        )
        .match_name(name.to_owned())
        .execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) => {
            let e = nl_err(format!("looking up link {name}"))(e);
            if e.errno() == Some(ENODEV) {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

async fn addresses(handle: &Handle, index: u32) -> Result<Vec<IpNet>, KernelError> {
    let msgs: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err(format!("listing addresses of link {index}")))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.index == index)
        .filter_map(|m| {
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })?;
            // Link-local addresses are the kernel's own, not the plugin's.
            let link_local = match ip {
                IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
                IpAddr::V4(v4) => v4.is_link_local(),
            };
            (!link_local)
                .then(|| IpNet::new(ip, m.header.prefix_len).ok())
                .flatten()
        })
        .collect())
}

async fn add_address(handle: &Handle, index: u32, addr: IpNet) -> Result<(), KernelError> {
    let mut req = handle.address().add(index, addr.addr(), addr.prefix_len());
    // No duplicate address detection: the address is usable at once (IPAM guarantees it is
    // unique on the bridge).
    req.message_mut()
        .attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = nl_err(format!("adding address {addr} to link {index}"))(e);
            if e.errno() == Some(EEXIST) {
                Ok(())
            } else {
                Err(e)
            }
        }
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

fn route_of(msg: &RouteMessage) -> Option<(IpNet, Option<IpAddr>)> {
    let mut dst = None;
    let mut gw = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(v4)) => dst = Some(IpAddr::V4(*v4)),
            RouteAttribute::Destination(RouteAddress::Inet6(v6)) => dst = Some(IpAddr::V6(*v6)),
            RouteAttribute::Gateway(RouteAddress::Inet(v4)) => gw = Some(IpAddr::V4(*v4)),
            RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => gw = Some(IpAddr::V6(*v6)),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => gw = Some(IpAddr::V6(*v6)),
            _ => {}
        }
    }
    let v4 = msg.header.address_family == rtnetlink::packet_route::AddressFamily::Inet;
    let dst = dst.unwrap_or(if v4 {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    });
    Some((
        IpNet::new(dst, msg.header.destination_prefix_length).ok()?,
        gw,
    ))
}

/// A job for a namespace thread: it gets the thread's netlink connection, or why there is none.
type Job = Box<dyn FnOnce(Result<&Netlink, &str>) + Send>;

/// A dedicated thread inside a container's network namespace, with a netlink socket opened
/// after the switch. It can be started before it is needed, so that its start-up overlaps the
/// host-side work of ADD; it runs one job and exits.
struct NsWorker {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
}

impl NsWorker {
    fn spawn(path: &Path) -> Result<NsWorker, KernelError> {
        let netns_err = |source| KernelError::Netns {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(netns_err)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || {
                let nl = setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("entering network namespace {shown}: {e}"))
                    .and_then(|()| Netlink::open().map_err(|e| chain(&e)));
                drop(file);
                for job in rx {
                    job(nl.as_ref().map_err(String::as_str));
                }
            })
            .map_err(netns_err)?;
        Ok(NsWorker {
            path: path.to_owned(),
            jobs,
            thread,
        })
    }

    fn run<T: Send + 'static>(
        self,
        f: impl FnOnce(&Netlink) -> Result<T, KernelError> + Send + 'static,
    ) -> Result<T, KernelError> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |nl| {
            let r = match nl {
                Ok(nl) => f(nl),
                Err(e) => Err(KernelError::State(e.to_owned())),
            };
            let _ = tx.send(r);
        });
        let gone = || KernelError::State("netns thread exited early".into());
        self.jobs.send(job).map_err(|_| gone())?;
        drop(self.jobs);
        let r = rx.recv().unwrap_or_else(|_| Err(gone()));
        let _ = self.thread.join();
        r
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The real kernel. Host operations use a netlink socket of the plugin's own namespace.
pub struct RealKernel {
    host: Netlink,
    prepared: RefCell<Option<NsWorker>>,
}

impl std::fmt::Debug for RealKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RealKernel")
    }
}

impl RealKernel {
    /// Opens the host netlink socket.
    pub fn new() -> Result<RealKernel, KernelError> {
        Ok(RealKernel {
            host: Netlink::open()?,
            prepared: RefCell::new(None),
        })
    }

    /// Runs `f` on a dedicated thread inside the namespace at `path` (the prepared one if it
    /// is for that namespace).
    fn in_netns<T: Send + 'static>(
        &self,
        path: &Path,
        f: impl FnOnce(&Netlink) -> Result<T, KernelError> + Send + 'static,
    ) -> Result<T, KernelError> {
        let worker = match self.prepared.borrow_mut().take() {
            Some(w) if w.path == path => w,
            _ => NsWorker::spawn(path)?,
        };
        worker.run(f)
    }
}

impl Kernel for RealKernel {
    fn netns_exists(&self, netns: &Path) -> bool {
        netns.exists()
    }

    fn prepare_container(&self, netns: &Path) {
        // Best effort: if the thread cannot start now, the operation that needs it reports why.
        if let Ok(w) = NsWorker::spawn(netns) {
            *self.prepared.borrow_mut() = Some(w);
        }
    }

    fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<LinkInfo, KernelError> {
        let h = &self.host.handle;
        self.host.rt.block_on(async {
            let msg = match get_link(h, &spec.name).await? {
                Some(msg) => msg,
                None => {
                    let create = LinkBridge::new(&spec.name)
                        .address(spec.mac.to_vec())
                        .mtu(spec.mtu)
                        .build();
                    if let Err(e) = h.link().add(create).execute().await {
                        // A concurrent invocation may have created it first.
                        let e = nl_err(format!("creating bridge {}", spec.name))(e);
                        if e.errno() != Some(EEXIST) {
                            return Err(e);
                        }
                    }
                    get_link(h, &spec.name).await?.ok_or_else(|| {
                        KernelError::State(format!("bridge {} vanished after creation", spec.name))
                    })?
                }
            };
            if !is_bridge(&msg) {
                return Err(KernelError::State(format!(
                    "link {} exists and is not a bridge",
                    spec.name
                )));
            }
            let info = link_info(&msg);
            if !msg.header.flags.contains(LinkFlags::Up) {
                h.link()
                    .set(LinkUnspec::new_with_index(info.index).up().build())
                    .execute()
                    .await
                    .map_err(nl_err(format!("setting bridge {} up", spec.name)))?;
            }
            let have = addresses(h, info.index).await?;
            for a in &spec.addresses {
                if !have.contains(a) {
                    add_address(h, info.index, *a).await?;
                }
            }
            Ok(info)
        })
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
        let h = &self.host.handle;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(spec.ifname.clone())
            .mtu(spec.mtu)
            .address(spec.peer_mac.to_vec())
            .setns_by_fd(std::os::fd::AsRawFd::as_raw_fd(&netns))
            .build();
        // The host end's MAC is derived from its name, so the result needs no lookup after
        // creation.
        let mac = host_mac(&spec.host_name);
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(spec.host_name.clone())
            .mtu(spec.mtu)
            .address(mac.to_vec())
            .controller(spec.bridge_index)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.host.rt.block_on(async {
            h.link().add(msg).execute().await.map_err(nl_err(format!(
                "creating veth {} with peer {} in {}",
                spec.host_name,
                spec.ifname,
                spec.netns.display()
            )))?;
            // The alias names the attachment for operators (`ip link`); the kernel ignores an
            // alias at creation, hence the second message, which also carries the hairpin flag.
            let mut set = LinkUnspec::new_with_name(&spec.host_name)
                .append_extra_attribute(LinkAttribute::IfAlias(spec.alias.clone()));
            if spec.hairpin {
                set = set.set_port_kind(InfoPortKind::Bridge).set_port_data(
                    InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)]),
                );
            }
            h.link()
                .set_port(set.build())
                .execute()
                .await
                .map_err(nl_err(format!(
                    "configuring bridge port {}",
                    spec.host_name
                )))?;
            Ok(LinkInfo {
                index: 0,
                mac: mac_string(&mac),
                mtu: spec.mtu,
            })
        })
    }

    fn setup_container(&self, netns: &Path, spec: &ContainerSpec) -> Result<LinkInfo, KernelError> {
        let spec = spec.clone();
        self.in_netns(netns, move |nl| {
            if spec.addresses.iter().any(|a| a.addr().is_ipv4()) {
                // Announce the new MAC at once so that neighbours' caches follow a reused IP.
                write_sysctl(
                    &format!("/proc/sys/net/ipv4/conf/{}/arp_notify", spec.ifname),
                    "1",
                )?;
            }
            let h = &nl.handle;
            nl.rt.block_on(async {
                // The index by ioctl: a netlink lookup would return (and parse) the whole link.
                let index = nix::net::if_::if_nametoindex(spec.ifname.as_str()).map_err(|e| {
                    KernelError::Io {
                        what: format!("looking up {} in the container", spec.ifname),
                        source: e.into(),
                    }
                })?;
                let info = LinkInfo {
                    index,
                    mac: String::new(),
                    mtu: 0,
                };
                for a in &spec.addresses {
                    add_address(h, info.index, *a).await?;
                }
                // The peer cannot be created up (veth_open needs its peer registered first).
                h.link()
                    .set(LinkUnspec::new_with_index(info.index).up().build())
                    .execute()
                    .await
                    .map_err(nl_err(format!("setting {} up", spec.ifname)))?;
                for (dst, gw) in &spec.routes {
                    let mut b = RouteMessageBuilder::<IpAddr>::new()
                        .destination_prefix(dst.network(), dst.prefix_len())
                        .map_err(|e| KernelError::State(format!("route {dst}: {e}")))?
                        .output_interface(info.index);
                    if let Some(gw) = gw {
                        b = b.gateway(*gw).map_err(|e| {
                            KernelError::State(format!("route {dst} via {gw}: {e}"))
                        })?;
                    }
                    if let Err(e) = h.route().add(b.build()).execute().await {
                        let e = nl_err(format!("adding route {dst} via {gw:?}"))(e);
                        if e.errno() != Some(EEXIST) {
                            return Err(e);
                        }
                    }
                }
                Ok(info)
            })
        })
    }

    fn container_has(&self, netns: &Path, ifname: &str) -> Result<bool, KernelError> {
        let ifname = ifname.to_owned();
        self.in_netns(netns, move |nl| {
            nl.rt
                .block_on(async { Ok(get_link(&nl.handle, &ifname).await?.is_some()) })
        })
    }

    fn container_state(
        &self,
        netns: &Path,
        ifname: &str,
    ) -> Result<Option<ContainerState>, KernelError> {
        let ifname = ifname.to_owned();
        self.in_netns(netns, move |nl| {
            let h = &nl.handle;
            nl.rt.block_on(async {
                let Some(msg) = get_link(h, &ifname).await? else {
                    return Ok(None);
                };
                let info = link_info(&msg);
                let mut state = ContainerState {
                    mac: info.mac,
                    mtu: info.mtu,
                    addresses: addresses(h, info.index).await?,
                    routes: Vec::new(),
                };
                for v4 in [true, false] {
                    let filter = if v4 {
                        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
                    } else {
                        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
                    };
                    let routes: Vec<RouteMessage> = h
                        .route()
                        .get(filter)
                        .execute()
                        .try_collect()
                        .await
                        .map_err(nl_err("listing routes"))?;
                    for r in &routes {
                        let oif = r.attributes.contains(&RouteAttribute::Oif(info.index));
                        if oif && let Some(route) = route_of(r) {
                            state.routes.push(route);
                        }
                    }
                }
                Ok(Some(state))
            })
        })
    }

    fn delete_link(&self, name: &str) -> Result<bool, KernelError> {
        let h = &self.host.handle;
        self.host.rt.block_on(async {
            match h
                .link()
                .del_with_message(LinkUnspec::new_with_name(name).build())
                .execute()
                .await
            {
                Ok(()) => Ok(true),
                Err(e) => {
                    let e = nl_err(format!("deleting link {name}"))(e);
                    match e.errno() {
                        Some(ENODEV) | Some(ESRCH) => Ok(false),
                        _ => Err(e),
                    }
                }
            }
        })
    }

    fn host_link(&self, name: &str) -> Result<Option<HostLink>, KernelError> {
        let h = &self.host.handle;
        self.host
            .rt
            .block_on(async { Ok(get_link(h, name).await?.map(|m| host_link_of(&m))) })
    }

    fn host_links(&self) -> Result<Vec<HostLink>, KernelError> {
        let h = &self.host.handle;
        self.host.rt.block_on(async {
            let links: Vec<LinkMessage> = h
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(nl_err("listing links"))?;
            Ok(links.iter().map(host_link_of).collect())
        })
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

fn host_link_of(m: &LinkMessage) -> HostLink {
    let mut link = HostLink {
        index: m.header.index,
        name: String::new(),
        alias: String::new(),
        master: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::IfAlias(a) => link.alias = a.clone(),
            LinkAttribute::Controller(c) => link.master = Some(*c),
            _ => {}
        }
    }
    link
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
