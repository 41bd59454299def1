//! Everything the plugin asks of the kernel, behind one small trait: the real implementation
//! speaks rtnetlink (and nftables for masquerade), the fake records calls for unit tests.

pub mod fake;
mod netlink;
pub mod real;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

/// A kernel operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A netlink request failed.
    #[error("{what}")]
    Netlink {
        /// What was being done, naming the link or address.
        what: String,
        /// The errno the kernel answered, if any.
        errno: Option<i32>,
        /// The cause (the kernel's errno, or the socket's failure).
        #[source]
        source: std::io::Error,
    },
    /// Opening or entering the container's network namespace failed.
    #[error("entering network namespace {path}")]
    Netns {
        /// The namespace path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O failure (sysctl files, the netlink socket, the nft process).
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel state is not what the operation needs.
    #[error("{0}")]
    State(String),
}

impl KernelError {
    /// The errno of a netlink failure.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Netlink { errno, .. } => *errno,
            KernelError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The bridge the plugin ensures in the host namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Bridge name.
    pub name: String,
    /// Fixed MAC, so that the bridge's address does not follow its ports.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u32,
    /// Gateway addresses to put on it (with the subnet's prefix length).
    pub addresses: Vec<IpNet>,
}

/// What the bridge looks like after [`Kernel::ensure_bridge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// MAC as `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// MTU.
    pub mtu: u32,
}

/// A veth pair: host end attached to the bridge, peer created directly in the container netns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    /// Host-side name.
    pub host_name: String,
    /// Alias on the host end naming its attachment, so that GC finds leftovers.
    pub alias: String,
    /// Bridge index to attach to.
    pub bridge_index: u32,
    /// MTU of both ends.
    pub mtu: u32,
    /// Hairpin mode on the bridge port.
    pub hairpin: bool,
    /// Container netns path.
    pub netns: PathBuf,
    /// Name of the container end.
    pub ifname: String,
    /// MAC of the container end.
    pub peer_mac: [u8; 6],
}

/// How the container end is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Interface name.
    pub ifname: String,
    /// Addresses (added without duplicate address detection).
    pub addresses: Vec<IpNet>,
    /// Routes: destination and optional next hop.
    pub routes: Vec<(IpNet, Option<IpAddr>)>,
}

/// The container interface as the kernel reports it (for CHECK).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerState {
    /// MAC.
    pub mac: String,
    /// MTU.
    pub mtu: u32,
    /// Global addresses on it.
    pub addresses: Vec<IpNet>,
    /// Routes through it in the main table: destination and next hop.
    pub routes: Vec<(IpNet, Option<IpAddr>)>,
}

/// A host link with an alias (GC input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Alias.
    pub alias: String,
    /// Index of its bridge, if enslaved.
    pub master: Option<u32>,
}

/// Masquerade state for one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqSpec {
    /// Network name (names the nftables table).
    pub network: String,
    /// Pod subnets: traffic to them is not masqueraded.
    pub subnets: Vec<IpNet>,
    /// Pod addresses to add.
    pub add: Vec<IpAddr>,
    /// Pod addresses to remove.
    pub remove: Vec<IpAddr>,
    /// Replace the whole set with `add` (GC).
    pub reset: bool,
}

/// The kernel operations of the plugin. Host operations act in the namespace the plugin runs
/// in; container operations take the netns path and run in it.
pub trait Kernel {
    /// Whether the namespace path exists (ADD answers code 3 when it does not).
    fn netns_exists(&self, netns: &Path) -> bool;
    /// Creates the bridge if missing (fixed MAC, MTU, up) and adds missing gateway addresses.
    fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<LinkInfo, KernelError>;
    /// Turns IP forwarding on for the families given, if not on already.
    fn enable_forwarding(&self, v4: bool, v6: bool) -> Result<(), KernelError>;
    /// Creates the veth pair; `EEXIST` comes back as an error with errno 17.
    fn create_veth(&self, spec: &VethSpec) -> Result<LinkInfo, KernelError>;
    /// Configures the container end: ARP notify, addresses, up, routes; returns its index.
    fn setup_container(&self, netns: &Path, spec: &ContainerSpec) -> Result<LinkInfo, KernelError>;
    /// Whether an interface of that name exists in the container.
    fn container_has(&self, netns: &Path, ifname: &str) -> Result<bool, KernelError>;
    /// The container interface's addresses and routes; `None` if it does not exist.
    fn container_state(
        &self,
        netns: &Path,
        ifname: &str,
    ) -> Result<Option<ContainerState>, KernelError>;
    /// Deletes a host link by name; `false` if it did not exist.
    fn delete_link(&self, name: &str) -> Result<bool, KernelError>;
    /// A host link by name: its alias and master, `None` if missing.
    fn host_link(&self, name: &str) -> Result<Option<HostLink>, KernelError>;
    /// Every host veth that carries an alias.
    fn host_links(&self) -> Result<Vec<HostLink>, KernelError>;
    /// Updates the masquerade rules of a network.
    fn masquerade(&self, spec: &MasqSpec) -> Result<(), KernelError>;
}

/// A MAC as `aa:bb:cc:dd:ee:ff`.
pub fn real_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
