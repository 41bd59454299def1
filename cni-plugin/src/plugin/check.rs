//! CHECK: compare the container interface, its addresses and routes, the host end and the
//! reservation with `prevResult`, and report the first drift.

use super::{Ctx, builtin_ips, host_veth_name, prev_result};
use crate::config::IpamMode;
use crate::env::Command;
use crate::error::{self, CniError};

fn drift(details: String) -> CniError {
    CniError::new(error::DRIFT, "attachment drifted from prevResult", details)
}

pub(super) fn check(ctx: &Ctx<'_>) -> Result<(), CniError> {
    let env = ctx.env;
    let conf = ctx.conf;
    if !conf.version.has_check() {
        return Err(CniError::new(
            error::INCOMPATIBLE_VERSION,
            "CHECK is not defined for this version",
            format!("cniVersion {} predates CHECK (0.4.0)", conf.version),
        ));
    }
    let prev = prev_result(conf)?
        .ok_or_else(|| CniError::config("prevResult: CHECK needs the ADD result"))?;
    let netns = env
        .netns
        .as_deref()
        .ok_or_else(|| CniError::env("CNI_NETNS", "not set"))?;
    let netns_s = netns.display().to_string();
    let ours = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && (i.sandbox.is_empty() || i.sandbox == netns_s))
        .ok_or_else(|| CniError::config(format!("prevResult: no interface {}", env.ifname)))?;
    let want_ips: Vec<_> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(ours))
        .map(|ip| ip.address)
        .collect();

    let kernel = |e: crate::kernel::KernelError| CniError::kernel(&e);
    let state = ctx
        .kernel
        .container_state(netns, &env.ifname)
        .map_err(kernel)?
        .ok_or_else(|| drift(format!("{} is missing from {netns_s}", env.ifname)))?;
    let mac = &prev.interfaces[ours].mac;
    if !mac.is_empty() && !mac.eq_ignore_ascii_case(&state.mac) {
        return Err(drift(format!(
            "{} has MAC {}, prevResult says {mac}",
            env.ifname, state.mac
        )));
    }
    for ip in &want_ips {
        if !state.addresses.contains(ip) {
            return Err(drift(format!("{} lacks address {ip}", env.ifname)));
        }
    }
    for r in &prev.routes {
        let found = state
            .routes
            .iter()
            .any(|(dst, gw)| *dst == r.dst && (r.gw.is_none() || r.gw == *gw));
        if !found {
            return Err(drift(format!(
                "route {} via {} is missing",
                r.dst,
                r.gw.map(|g| g.to_string()).unwrap_or_else(|| "-".into())
            )));
        }
    }
    let host_name = host_veth_name(&conf.name, &env.container_id, &env.ifname);
    let host = ctx
        .kernel
        .host_link(&host_name)
        .map_err(kernel)?
        .ok_or_else(|| drift(format!("host end {host_name} is missing")))?;
    let bridge = ctx
        .kernel
        .host_link(&conf.bridge)
        .map_err(kernel)?
        .ok_or_else(|| drift(format!("bridge {} is missing", conf.bridge)))?;
    if host.master != Some(bridge.index) {
        return Err(drift(format!(
            "host end {host_name} is not on bridge {}",
            conf.bridge
        )));
    }
    match &conf.ipam {
        IpamMode::Builtin(ipam) => {
            let mut have = builtin_ips(ctx, ipam)?;
            let mut want: Vec<_> = want_ips.iter().map(|n| n.addr()).collect();
            have.sort();
            want.sort();
            if have != want {
                return Err(drift(format!(
                    "reservation holds {have:?}, prevResult says {want:?}"
                )));
            }
        }
        IpamMode::Delegate(ty) => {
            ctx.delegate(ty, Command::Check)?;
        }
    }
    Ok(())
}
