//! GC (free every reservation and host veth not in `cni.dev/valid-attachments`) and STATUS
//! (whether ADD can get an address).

use std::collections::HashSet;

use super::{Ctx, host_veth_name, is_builtin, store_error};
use crate::config::IpamMode;
use crate::env::Command;
use crate::error::{self, CniError};
use crate::kernel::MasqSpec;

fn needs_1_1(ctx: &Ctx<'_>, what: &str) -> Result<(), CniError> {
    if ctx.conf.version.has_gc_status() {
        Ok(())
    } else {
        Err(CniError::new(
            error::INCOMPATIBLE_VERSION,
            format!("{what} is not defined for this version"),
            format!("cniVersion {} predates {what} (1.1.0)", ctx.conf.version),
        ))
    }
}

pub(super) fn gc(ctx: &Ctx<'_>) -> Result<(), CniError> {
    needs_1_1(ctx, "GC")?;
    let conf = ctx.conf;
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::config("cni.dev/valid-attachments: GC needs the list of attachments to keep")
    })?;
    let keep: HashSet<(String, String)> = valid
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let kernel = |e: crate::kernel::KernelError| CniError::kernel(&e);

    // Host ends first, so that no veth outlives its reservation.
    let keep_names: HashSet<String> = valid
        .iter()
        .map(|a| host_veth_name(&conf.name, &a.container_id, &a.ifname))
        .collect();
    let bridge_idx = ctx
        .kernel
        .host_link(&conf.bridge)
        .map_err(kernel)?
        .map(|b| b.index);
    let links = ctx.kernel.host_links().map_err(kernel)?;
    let own_alias = format!("berth-cni/{}/", conf.name);
    for link in &links {
        let ours_by_alias = link.alias.starts_with(&own_alias);
        let foreign_alias = link.alias.starts_with("berth-cni/") && !ours_by_alias;
        // The alias is set just after creation: a link that crashed in between has none, and
        // is recognised by its name and its bridge.
        let ours_by_bridge = link.name.starts_with("bv")
            && link.name.len() == 14
            && bridge_idx.is_some()
            && link.master == bridge_idx;
        if (ours_by_alias || (ours_by_bridge && !foreign_alias)) && !keep_names.contains(&link.name)
        {
            ctx.kernel.delete_link(&link.name).map_err(kernel)?;
        }
    }

    match &conf.ipam {
        IpamMode::Builtin(ipam) => {
            let mut locked = ctx.store(ipam).lock().map_err(store_error)?;
            let freed = locked.state.retain(&keep);
            let remaining: Vec<_> = locked
                .state
                .reservations
                .iter()
                .flat_map(|r| r.ips.iter().copied())
                .collect();
            if !freed.is_empty() {
                locked.commit().map_err(store_error)?;
            } else {
                drop(locked);
            }
            if conf.ip_masq {
                ctx.kernel
                    .masquerade(&MasqSpec {
                        network: conf.name.clone(),
                        subnets: ipam
                            .range_sets
                            .iter()
                            .flat_map(|s| s.ranges().iter().map(|r| r.subnet))
                            .collect(),
                        add: remaining,
                        remove: Vec::new(),
                        reset: true,
                    })
                    .map_err(kernel)?;
            }
        }
        IpamMode::Delegate(ty) => {
            ctx.delegate(ty, Command::Gc)?;
        }
    }
    Ok(())
}

pub(super) fn status(ctx: &Ctx<'_>) -> Result<(), CniError> {
    needs_1_1(ctx, "STATUS")?;
    if let Some(ipam) = is_builtin(ctx.conf) {
        let locked = ctx.store(ipam).lock().map_err(store_error)?;
        if let Some(e) = locked.state.exhausted(&ipam.range_sets) {
            return Err(CniError::new(
                error::NOT_AVAILABLE,
                "no address available for new attachments",
                e.to_string(),
            ));
        }
        return Ok(());
    }
    if let IpamMode::Delegate(ty) = &ctx.conf.ipam {
        ctx.delegate(ty, Command::Status)?;
    }
    Ok(())
}
