//! The plugin's commands over a [`Kernel`]: what the binary runs for each `CNI_COMMAND`.

mod add;
mod check;
mod del;
mod gc;

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::config::{BuiltinIpam, IpamMode, NetConf};
use crate::env::{Command, Env};
use crate::error::{self, CniError};
use crate::exec::{Exec, ExecError};
use crate::ipam::IpamError;
use crate::ipam::store::{Store, StoreError};
use crate::kernel::Kernel;
use crate::version::{SUPPORTED, Version};

/// Runs one command; `Ok(Some(json))` is printed on stdout, `Ok(None)` prints nothing.
pub fn run(env: &Env, stdin: &[u8], kernel: &dyn Kernel) -> Result<Option<String>, CniError> {
    if env.command == Command::Version {
        return Ok(Some(version(stdin)));
    }
    let conf = NetConf::parse(stdin)?;
    let ctx = Ctx {
        env,
        conf: &conf,
        kernel,
        stdin,
    };
    match env.command {
        Command::Add => add::add(&ctx).map(|r| Some(r.to_value(conf.version).to_string())),
        Command::Del => del::del(&ctx).map(|()| None),
        Command::Check => check::check(&ctx).map(|()| None),
        Command::Gc => gc::gc(&ctx).map(|()| None),
        Command::Status => gc::status(&ctx).map(|()| None),
        Command::Version => Ok(Some(version(stdin))),
    }
}

/// The VERSION answer: the versions this plugin speaks, in the version asked (or the latest).
pub fn version(stdin: &[u8]) -> String {
    let asked = crate::config::peek_version(stdin).unwrap_or(Version::LATEST);
    json!({
        "cniVersion": asked.as_str(),
        "supportedVersions": SUPPORTED.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Everything a command needs.
struct Ctx<'a> {
    env: &'a Env,
    conf: &'a NetConf,
    kernel: &'a dyn Kernel,
    stdin: &'a [u8],
}

impl Ctx<'_> {
    fn store(&self, ipam: &BuiltinIpam) -> Store {
        Store::new(&ipam.data_dir, &self.conf.name)
    }

    /// Runs the delegated IPAM plugin with the same configuration and environment.
    fn delegate(&self, ty: &str, command: Command) -> Result<Vec<u8>, CniError> {
        let exec = Exec::new(self.env.path.clone());
        let binary = exec
            .find(ty)
            .map_err(|e| CniError::new(error::DELEGATE, "IPAM plugin not found", e.to_string()))?;
        let mut vars = vec![
            ("CNI_COMMAND".to_owned(), command.as_str().to_owned()),
            (
                "CNI_PATH".to_owned(),
                std::env::join_paths(&self.env.path)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        ];
        if matches!(command, Command::Add | Command::Del | Command::Check) {
            vars.push(("CNI_CONTAINERID".into(), self.env.container_id.clone()));
            vars.push((
                "CNI_NETNS".into(),
                self.env
                    .netns
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ));
            vars.push(("CNI_IFNAME".into(), self.env.ifname.clone()));
            let args: Vec<String> = self
                .env
                .args
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            vars.push(("CNI_ARGS".into(), args.join(";")));
        }
        exec.run(&binary, &vars, self.stdin).map_err(|e| match e {
            // The IPAM plugin's own error goes to the runtime as it is.
            ExecError::Plugin { error, .. } => error,
            other => CniError::new(error::DELEGATE, "IPAM plugin failed", other.to_string()),
        })
    }
}

/// The host end's name: `bv` and 12 hex digits of a hash of the attachment, so that DEL and GC
/// find it from the attachment alone, even after a crash.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    let h = fnv1a(&[network, container_id, ifname]);
    format!("bv{:012x}", h & 0xffff_ffff_ffff)
}

/// The host end's alias, naming the attachment for operators.
pub fn host_veth_alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("berth-cni/{network}/{container_id}/{ifname}")
}

/// The bridge's fixed MAC: locally administered, derived from its name.
pub fn bridge_mac(bridge: &str) -> [u8; 6] {
    let h = fnv1a(&[bridge]).to_be_bytes();
    [0x02, 0x62, h[0], h[1], h[2], h[3]]
}

/// The container end's MAC: `0a:58:` and its IPv4 address when it has one (as kubenet does:
/// unique on the bridge because the address is, and a reused address keeps its MAC, so
/// neighbours' caches stay right), else locally administered bytes of a hash of the host name.
pub fn container_mac(ips: impl IntoIterator<Item = IpAddr>, host_name: &str) -> [u8; 6] {
    for ip in ips {
        if let IpAddr::V4(v4) = ip {
            let o = v4.octets();
            return [0x0a, 0x58, o[0], o[1], o[2], o[3]];
        }
    }
    let h = fnv1a(&[host_name, "peer"]).to_be_bytes();
    [0x0a, 0x59, h[0], h[1], h[2], h[3]]
}

/// FNV-1a over the parts, `/`-separated: stable across builds, unlike std's hasher.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= u64::from(b'/');
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

fn store_error(e: StoreError) -> CniError {
    match e {
        StoreError::Busy(_) => CniError::new(error::TRY_AGAIN, "IPAM store busy", e.to_string()),
        other => {
            let mut details = other.to_string();
            if let Some(src) = std::error::Error::source(&other) {
                details.push_str(": ");
                details.push_str(&src.to_string());
            }
            CniError::new(error::IO_FAILURE, "IPAM store failure", details)
        }
    }
}

fn ipam_error(e: IpamError) -> CniError {
    match e {
        IpamError::Exhausted { .. } => {
            CniError::new(error::EXHAUSTED, "no address available", e.to_string())
        }
        IpamError::Taken { .. } | IpamError::Outside(_) => CniError::config(e.to_string()),
    }
}

/// The addresses the built-in IPAM reserved for this attachment, if any.
fn builtin_ips(ctx: &Ctx<'_>, ipam: &BuiltinIpam) -> Result<Vec<IpAddr>, CniError> {
    let locked = ctx.store(ipam).lock().map_err(store_error)?;
    Ok(locked
        .state
        .get(&ctx.env.container_id, &ctx.env.ifname)
        .map(|r| r.ips.clone())
        .unwrap_or_default())
}

fn prev_result(conf: &NetConf) -> Result<Option<crate::result::CniResult>, CniError> {
    conf.prev_result
        .as_ref()
        .filter(|v| !v.is_null())
        .map(crate::result::CniResult::from_value)
        .transpose()
}

fn is_builtin(conf: &NetConf) -> Option<&BuiltinIpam> {
    match &conf.ipam {
        IpamMode::Builtin(b) => Some(b),
        IpamMode::Delegate(_) => None,
    }
}

fn json_value(bytes: &[u8], what: &str) -> Result<Value, CniError> {
    serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(
            error::DECODE,
            format!("failed to decode {what}"),
            e.to_string(),
        )
    })
}

#[cfg(test)]
mod tests;
