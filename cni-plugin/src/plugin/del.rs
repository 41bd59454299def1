//! DEL: remove the veth pair and free the reservation. Succeeds when the namespace, the
//! interface or the reservation is already gone, and when called twice.

use super::{Ctx, host_veth_name, prev_result, store_error};
use crate::config::IpamMode;
use crate::env::Command;
use crate::error::CniError;
use crate::kernel::MasqSpec;

pub(super) fn del(ctx: &Ctx<'_>) -> Result<(), CniError> {
    let env = ctx.env;
    let conf = ctx.conf;
    // Deleting the host end deletes the container end with it: no namespace switch needed,
    // and it works when the namespace is already gone.
    let host_name = host_veth_name(&conf.name, &env.container_id, &env.ifname);
    ctx.kernel
        .delete_link(&host_name)
        .map_err(|e| CniError::kernel(&e))?;

    let freed = match &conf.ipam {
        IpamMode::Builtin(ipam) => {
            let mut locked = ctx.store(ipam).lock().map_err(store_error)?;
            match locked.state.release(&env.container_id, &env.ifname) {
                Some(r) => {
                    locked.commit().map_err(store_error)?;
                    r.ips
                }
                None => Vec::new(),
            }
        }
        IpamMode::Delegate(ty) => {
            ctx.delegate(ty, Command::Del)?;
            prev_result(conf)
                .ok()
                .flatten()
                .map(|r| r.ips.iter().map(|i| i.address.addr()).collect())
                .unwrap_or_default()
        }
    };
    if conf.ip_masq && !freed.is_empty() {
        ctx.kernel
            .masquerade(&MasqSpec {
                network: conf.name.clone(),
                subnets: Vec::new(),
                add: Vec::new(),
                remove: freed,
                reset: false,
            })
            .map_err(|e| CniError::kernel(&e))?;
    }
    Ok(())
}
