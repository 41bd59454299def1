//! ADD: reserve addresses, ensure the bridge, create the veth pair with its peer directly in
//! the container, configure it; on any failure undo what this invocation did.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Ctx, host_veth_alias, host_veth_name, ipam_error, json_value, store_error};
use crate::config::IpamMode;
use crate::env::Command;
use crate::error::{self, CniError};
use crate::kernel::{BridgeSpec, ContainerSpec, KernelError, MasqSpec, VethSpec};
use crate::pause;
use crate::result::{CniResult, Interface, IpConfig, Route};

const EEXIST: i32 = 17;

/// One address with its gateway, from whichever IPAM.
struct Addr {
    address: IpNet,
    gateway: Option<IpAddr>,
}

pub(super) fn add(ctx: &Ctx<'_>) -> Result<CniResult, CniError> {
    let env = ctx.env;
    let conf = ctx.conf;
    let netns = env
        .netns
        .as_deref()
        .ok_or_else(|| CniError::env("CNI_NETNS", "not set"))?;
    if !ctx.kernel.netns_exists(netns) {
        return Err(CniError::new(
            error::UNKNOWN_CONTAINER,
            "container network namespace does not exist",
            format!("CNI_NETNS {}", netns.display()),
        ));
    }
    let host_name = host_veth_name(&conf.name, &env.container_id, &env.ifname);

    // Reserve addresses first: the reservation is what DEL and GC free after a crash.
    let (addrs, extra_routes, fresh) = match &conf.ipam {
        IpamMode::Builtin(ipam) => {
            let mut locked = ctx.store(ipam).lock().map_err(store_error)?;
            let fresh = locked.state.get(&env.container_id, &env.ifname).is_none();
            let mut requested = conf.requested_ips.clone();
            if let Some(ip) = env.arg("IP") {
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|e| CniError::env("CNI_ARGS", format!("IP={ip}: {e}")))?;
                requested.push(ip);
            }
            let allocs = locked
                .state
                .allocate(&ipam.range_sets, &env.container_id, &env.ifname, &requested)
                .map_err(ipam_error)?;
            locked.commit().map_err(store_error)?;
            let addrs = allocs
                .into_iter()
                .map(|a| Addr {
                    address: a.address,
                    gateway: Some(a.gateway),
                })
                .collect::<Vec<_>>();
            (addrs, ipam.routes.clone(), fresh)
        }
        IpamMode::Delegate(ty) => {
            let out = ctx.delegate(ty, Command::Add)?;
            let r = CniResult::from_value(&json_value(&out, "IPAM result")?)?;
            let addrs = r
                .ips
                .iter()
                .map(|ip| Addr {
                    address: ip.address,
                    gateway: ip.gateway,
                })
                .collect();
            (addrs, r.routes, true)
        }
    };
    pause::point("after-ipam");

    match setup(ctx, &host_name, &addrs, &extra_routes) {
        Ok(result) => Ok(result),
        Err(e) => {
            let interface_exists = e.code == error::INTERFACE_EXISTS;
            if !interface_exists {
                let _ = ctx.kernel.delete_link(&host_name);
            }
            if fresh {
                release(ctx);
            }
            Err(e)
        }
    }
}

fn exists(ifname: &str, netns: &std::path::Path) -> CniError {
    CniError::new(
        error::INTERFACE_EXISTS,
        "interface already exists",
        format!("{ifname} exists in {}", netns.display()),
    )
}

/// Undoes the reservation of a failed ADD (best effort: the error that made ADD fail matters
/// more, and GC frees what is left).
fn release(ctx: &Ctx<'_>) {
    match &ctx.conf.ipam {
        IpamMode::Builtin(ipam) => {
            if let Ok(mut locked) = ctx.store(ipam).lock() {
                locked.state.release(&ctx.env.container_id, &ctx.env.ifname);
                let _ = locked.commit();
            }
        }
        IpamMode::Delegate(ty) => {
            let _ = ctx.delegate(ty, Command::Del);
        }
    }
}

fn setup(
    ctx: &Ctx<'_>,
    host_name: &str,
    addrs: &[Addr],
    extra_routes: &[Route],
) -> Result<CniResult, CniError> {
    let env = ctx.env;
    let conf = ctx.conf;
    let k = ctx.kernel;
    let kernel = |e: KernelError| CniError::kernel(&e);
    let netns = env.netns.as_deref().unwrap_or(std::path::Path::new(""));
    let gateways: Vec<IpNet> = if conf.is_gateway {
        addrs
            .iter()
            .filter_map(|a| IpNet::new(a.gateway?, a.address.prefix_len()).ok())
            .collect()
    } else {
        Vec::new()
    };
    let bridge = k
        .ensure_bridge(&BridgeSpec {
            name: conf.bridge.clone(),
            mac: super::bridge_mac(&conf.bridge),
            mtu: conf.mtu,
            addresses: gateways,
        })
        .map_err(kernel)?;
    let v4 = addrs.iter().any(|a| a.address.addr().is_ipv4());
    let v6 = addrs.iter().any(|a| a.address.addr().is_ipv6());
    k.enable_forwarding(v4, v6).map_err(kernel)?;
    pause::point("after-bridge");

    let veth = VethSpec {
        host_name: host_name.to_owned(),
        alias: host_veth_alias(&conf.name, &env.container_id, &env.ifname),
        bridge_index: bridge.index,
        mtu: conf.mtu,
        hairpin: conf.hairpin,
        netns: netns.to_owned(),
        ifname: env.ifname.clone(),
        peer_mac: super::container_mac(addrs.iter().map(|a| a.address.addr()), host_name),
    };
    let host = match k.create_veth(&veth) {
        Ok(h) => h,
        Err(e) if e.errno() == Some(EEXIST) => {
            // Either the container has the interface (a second ADD: refuse it, touching
            // nothing), or a crashed ADD left the host end: remove it and try once more.
            if k.container_has(netns, &env.ifname).map_err(kernel)? {
                return Err(exists(&env.ifname, netns));
            }
            k.delete_link(host_name).map_err(kernel)?;
            match k.create_veth(&veth) {
                Ok(h) => h,
                Err(e) if e.errno() == Some(EEXIST) => return Err(exists(&env.ifname, netns)),
                Err(e) => return Err(kernel(e)),
            }
        }
        Err(e) => return Err(kernel(e)),
    };
    pause::point("after-veth");

    let mut routes: Vec<Route> = Vec::new();
    if conf.is_default_gateway {
        for a in addrs {
            if let Some(gw) = a.gateway {
                let dst: IpNet = if gw.is_ipv4() {
                    "0.0.0.0/0".parse().unwrap_or_default()
                } else {
                    "::/0".parse().unwrap_or_default()
                };
                if !routes.iter().any(|r| r.dst == dst) {
                    routes.push(Route { dst, gw: Some(gw) });
                }
            }
        }
    }
    routes.extend(extra_routes.iter().cloned());
    k.setup_container(
        netns,
        &ContainerSpec {
            ifname: env.ifname.clone(),
            addresses: addrs.iter().map(|a| a.address).collect(),
            routes: routes
                .iter()
                .map(|r| {
                    // A route without a next hop goes via the gateway of its family.
                    let gw = r.gw.or_else(|| {
                        addrs
                            .iter()
                            .filter_map(|a| a.gateway)
                            .find(|g| g.is_ipv4() == r.dst.addr().is_ipv4())
                    });
                    (r.dst, gw)
                })
                .collect(),
        },
    )
    .map_err(kernel)?;

    if conf.ip_masq {
        k.masquerade(&MasqSpec {
            network: conf.name.clone(),
            subnets: addrs.iter().map(|a| a.address.trunc()).collect(),
            add: addrs.iter().map(|a| a.address.addr()).collect(),
            remove: Vec::new(),
            reset: false,
        })
        .map_err(kernel)?;
    }

    Ok(CniResult {
        interfaces: vec![
            Interface {
                name: conf.bridge.clone(),
                mac: bridge.mac,
                mtu: Some(conf.mtu),
                sandbox: String::new(),
            },
            Interface {
                name: host_name.to_owned(),
                mac: host.mac,
                mtu: Some(conf.mtu),
                sandbox: String::new(),
            },
            Interface {
                name: env.ifname.clone(),
                mac: crate::kernel::real_mac(&veth.peer_mac),
                mtu: Some(conf.mtu),
                sandbox: netns.display().to_string(),
            },
        ],
        ips: addrs
            .iter()
            .map(|a| IpConfig {
                address: a.address,
                gateway: a.gateway,
                interface: Some(2),
            })
            .collect(),
        routes,
        dns: conf.dns.clone(),
    })
}
