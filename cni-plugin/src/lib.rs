//! berth's CNI 1.1 plugin: a bridge, a veth pair per attachment with its peer created directly
//! in the container's namespace, and a built-in IPAM (or any delegated IPAM plugin).
//!
//! The binary `berth-cni` runs [`plugin::run`]; the agent uses [`bootstrap`] to install it and
//! its conflist on a node, and [`exec`] to drive conflists the way libcni does.
//!
//! No `unsafe`: namespace switching goes through nix's safe `setns`, on the calling thread only
//! for the instant of opening a netlink socket in a container's namespace (see
//! [`kernel::real`]), and on dedicated threads in [`exec`].
//!
//! How the agent bootstraps a node and attaches an instance:
//!
//! ```no_run
//! use berth_cni::bootstrap::{NodeNetwork, install_binary, write_conflist};
//! use berth_cni::{Exec, NetworkList, RuntimeConf};
//! use std::path::{Path, PathBuf};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let net = NodeNetwork::new(vec!["10.42.3.0/24".parse()?]);
//! install_binary(Path::new("/usr/local/bin/berth-cni"), Path::new("/opt/cni/bin"))?;
//! let conflist = write_conflist(Path::new("/etc/cni/net.d"), &net)?;
//! let list = NetworkList::parse(&std::fs::read(conflist)?)?;
//! let exec = Exec::new(vec![PathBuf::from("/opt/cni/bin")]);
//! let rt = RuntimeConf {
//!     container_id: "web-1".into(),
//!     netns: "/run/netns/web-1".into(),
//!     ifname: "eth0".into(),
//!     ..RuntimeConf::default()
//! };
//! let result = exec.add(&list, &rt)?; // the CNI result: interfaces, ips, routes
//! exec.check(&list, &rt, &result)?;
//! exec.del(&list, &rt, Some(&result))?;
//! exec.gc(&list, &[])?; // keep nothing: frees leftovers of crashed ADDs
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bootstrap;
pub mod config;
pub mod env;
pub mod error;
pub mod exec;
pub mod ipam;
pub mod kernel;
pub mod pause;
pub mod plugin;
pub mod result;
pub mod version;

pub use error::CniError;
pub use exec::{Exec, ExecError, NetworkList, RuntimeConf};
pub use version::Version;
