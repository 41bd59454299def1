//! A recording fake kernel for unit tests: it keeps links, container interfaces and masquerade
//! sets in memory, records every call, and fails a named operation on demand.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{
    BridgeSpec, ContainerSpec, ContainerState, HostLink, Kernel, KernelError, LinkInfo, MasqSpec,
    VethSpec,
};

/// The in-memory kernel.
#[derive(Debug, Default)]
pub struct FakeKernel {
    /// Every call, in order, as `op arg`.
    pub calls: RefCell<Vec<String>>,
    /// Host links by name.
    pub host: RefCell<BTreeMap<String, HostLink>>,
    /// Container interfaces by (netns, ifname).
    pub containers: RefCell<BTreeMap<(PathBuf, String), ContainerState>>,
    /// Namespaces that "exist" (any path under them opens).
    pub netns: RefCell<BTreeSet<PathBuf>>,
    /// The container end of each host veth.
    pub peers: RefCell<BTreeMap<String, (PathBuf, String)>>,
    /// Masqueraded pod addresses.
    pub masq: RefCell<BTreeSet<IpAddr>>,
    /// An operation name that fails once with `EIO`.
    pub fail: RefCell<Option<&'static str>>,
}

impl FakeKernel {
    fn call(&self, op: &'static str, arg: String) -> Result<(), KernelError> {
        self.calls.borrow_mut().push(format!("{op} {arg}"));
        if *self.fail.borrow() == Some(op) {
            self.fail.borrow_mut().take();
            return Err(KernelError::Io {
                what: format!("fake {op} failure"),
                source: std::io::Error::from_raw_os_error(5),
            });
        }
        Ok(())
    }

    fn check_netns(&self, path: &Path) -> Result<(), KernelError> {
        if self.netns.borrow().contains(path) {
            Ok(())
        } else {
            Err(KernelError::Netns {
                path: path.to_owned(),
                source: std::io::Error::from_raw_os_error(2),
            })
        }
    }

    fn index_of(&self, name: &str) -> u32 {
        let mut h: u32 = 7;
        for b in name.bytes() {
            h = h.wrapping_mul(31).wrapping_add(u32::from(b));
        }
        h % 1000 + 2
    }
}

impl Kernel for FakeKernel {
    fn netns_exists(&self, netns: &Path) -> bool {
        self.netns.borrow().contains(netns)
    }

    fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<LinkInfo, KernelError> {
        self.call("ensure_bridge", spec.name.clone())?;
        self.host
            .borrow_mut()
            .entry(spec.name.clone())
            .or_insert_with(|| HostLink {
                index: self.index_of(&spec.name),
                name: spec.name.clone(),
                alias: String::new(),
                master: None,
            });
        Ok(LinkInfo {
            index: self.index_of(&spec.name),
            mac: super::real_mac(&spec.mac),
            mtu: spec.mtu,
        })
    }

    fn enable_forwarding(&self, v4: bool, v6: bool) -> Result<(), KernelError> {
        self.call("enable_forwarding", format!("{v4} {v6}"))
    }

    fn create_veth(&self, spec: &VethSpec) -> Result<LinkInfo, KernelError> {
        self.call("create_veth", format!("{} {}", spec.host_name, spec.ifname))?;
        self.check_netns(&spec.netns)?;
        let key = (spec.netns.clone(), spec.ifname.clone());
        if self.host.borrow().contains_key(&spec.host_name)
            || self.containers.borrow().contains_key(&key)
        {
            return Err(KernelError::Io {
                what: "fake veth exists".into(),
                source: std::io::Error::from_raw_os_error(17),
            });
        }
        self.host.borrow_mut().insert(
            spec.host_name.clone(),
            HostLink {
                index: self.index_of(&spec.host_name),
                name: spec.host_name.clone(),
                alias: spec.alias.clone(),
                master: Some(spec.bridge_index),
            },
        );
        self.peers
            .borrow_mut()
            .insert(spec.host_name.clone(), key.clone());
        self.containers.borrow_mut().insert(
            key,
            ContainerState {
                mac: super::real_mac(&spec.peer_mac),
                mtu: spec.mtu,
                ..ContainerState::default()
            },
        );
        Ok(LinkInfo {
            index: self.index_of(&spec.host_name),
            mac: "0a:00:00:00:00:01".into(),
            mtu: spec.mtu,
        })
    }

    fn setup_container(&self, netns: &Path, spec: &ContainerSpec) -> Result<LinkInfo, KernelError> {
        self.call("setup_container", spec.ifname.clone())?;
        self.check_netns(netns)?;
        let mut c = self.containers.borrow_mut();
        let state = c
            .get_mut(&(netns.to_owned(), spec.ifname.clone()))
            .ok_or_else(|| KernelError::State(format!("{} missing", spec.ifname)))?;
        state.addresses = spec.addresses.clone();
        state.routes = spec.routes.clone();
        Ok(LinkInfo {
            index: 2,
            mac: state.mac.clone(),
            mtu: state.mtu,
        })
    }

    fn container_has(&self, netns: &Path, ifname: &str) -> Result<bool, KernelError> {
        self.call("container_has", ifname.to_owned())?;
        self.check_netns(netns)?;
        Ok(self
            .containers
            .borrow()
            .contains_key(&(netns.to_owned(), ifname.to_owned())))
    }

    fn container_state(
        &self,
        netns: &Path,
        ifname: &str,
    ) -> Result<Option<ContainerState>, KernelError> {
        self.call("container_state", ifname.to_owned())?;
        self.check_netns(netns)?;
        Ok(self
            .containers
            .borrow()
            .get(&(netns.to_owned(), ifname.to_owned()))
            .cloned())
    }

    fn delete_link(&self, name: &str) -> Result<bool, KernelError> {
        self.call("delete_link", name.to_owned())?;
        let removed = self.host.borrow_mut().remove(name);
        // Deleting one end of a veth deletes its peer.
        if let Some(peer) = self.peers.borrow_mut().remove(name) {
            self.containers.borrow_mut().remove(&peer);
        }
        Ok(removed.is_some())
    }

    fn host_link(&self, name: &str) -> Result<Option<HostLink>, KernelError> {
        self.call("host_link", name.to_owned())?;
        Ok(self.host.borrow().get(name).cloned())
    }

    fn host_links(&self) -> Result<Vec<HostLink>, KernelError> {
        self.call("host_links", String::new())?;
        Ok(self.host.borrow().values().cloned().collect())
    }

    fn masquerade(&self, spec: &MasqSpec) -> Result<(), KernelError> {
        self.call("masquerade", format!("+{:?} -{:?}", spec.add, spec.remove))?;
        let mut m = self.masq.borrow_mut();
        if spec.reset {
            m.clear();
        }
        for ip in &spec.remove {
            m.remove(ip);
        }
        m.extend(spec.add.iter().copied());
        Ok(())
    }
}
