//! The `CNI_*` environment (spec section "Parameters"), read through a lookup function so that
//! tests need not touch the process environment.

use std::path::PathBuf;

use crate::config::valid_ifname;
use crate::error::CniError;

/// The operation asked for by `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach a container.
    Del,
    /// Verify an attachment against `prevResult`.
    Check,
    /// Report supported versions.
    Version,
    /// Free everything not in `cni.dev/valid-attachments`.
    Gc,
    /// Report whether ADD can succeed.
    Status,
}

impl Command {
    /// The spec's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }
}

/// The validated environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// The operation.
    pub command: Command,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK).
    pub container_id: String,
    /// `CNI_NETNS`: required for ADD and CHECK, optional for DEL.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (ADD, DEL, CHECK).
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`: where delegated plugins are looked up.
    pub path: Vec<PathBuf>,
}

fn valid_container_id(id: &str) -> bool {
    // The spec: alphanumeric plus period, underscore and hyphen, starting alphanumeric.
    id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Env {
    /// Reads and validates the environment; each problem is error 4 naming the variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("GC") => Command::Gc,
            Some("STATUS") => Command::Status,
            Some(other) => {
                return Err(CniError::env(
                    "CNI_COMMAND",
                    format!("{other:?} is not ADD, DEL, CHECK, VERSION, GC or STATUS"),
                ));
            }
            None => return Err(CniError::env("CNI_COMMAND", "not set")),
        };
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let mut env = Env {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: Vec::new(),
            path: get("CNI_PATH")
                .map(|p| {
                    p.split(':')
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
        };
        if !per_attachment {
            return Ok(env);
        }
        env.container_id = get("CNI_CONTAINERID")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| CniError::env("CNI_CONTAINERID", "not set"))?;
        if !valid_container_id(&env.container_id) {
            return Err(CniError::env(
                "CNI_CONTAINERID",
                format!(
                    "{:?}: must start with a letter or digit and hold only letters, digits, '.', '_', '-'",
                    env.container_id
                ),
            ));
        }
        env.ifname = get("CNI_IFNAME")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| CniError::env("CNI_IFNAME", "not set"))?;
        if !valid_ifname(&env.ifname) {
            return Err(CniError::env(
                "CNI_IFNAME",
                format!(
                    "{:?}: not a valid interface name (1-15 bytes, no '/', ':' or spaces)",
                    env.ifname
                ),
            ));
        }
        env.netns = get("CNI_NETNS")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        if env.netns.is_none() && command != Command::Del {
            return Err(CniError::env("CNI_NETNS", "not set"));
        }
        if let Some(args) = get("CNI_ARGS").filter(|s| !s.is_empty()) {
            for pair in args.split(';').filter(|s| !s.is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    CniError::env("CNI_ARGS", format!("{pair:?} is not KEY=VALUE"))
                })?;
                env.args.push((k.to_owned(), v.to_owned()));
            }
        }
        if env.path.is_empty() {
            return Err(CniError::env("CNI_PATH", "not set"));
        }
        Ok(env)
    }

    /// The argument `key` of `CNI_ARGS`, if given.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::INVALID_ENVIRONMENT;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| m.get(k).cloned())
    }

    const OK: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc-1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    #[test]
    fn parses_a_full_add() {
        let e = env(&[&OK[..], &[("CNI_ARGS", "IP=10.1.0.9;K8S_POD_NAME=x")]].concat()).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.path.len(), 2);
        assert_eq!(e.arg("IP"), Some("10.1.0.9"));
    }

    #[test]
    fn each_bad_variable_is_named() {
        let cases: [(&str, Option<&str>); 7] = [
            ("CNI_COMMAND", None),
            ("CNI_COMMAND", Some("FROB")),
            ("CNI_CONTAINERID", None),
            ("CNI_CONTAINERID", Some("-bad/id")),
            ("CNI_IFNAME", Some("this-name-is-too-long")),
            ("CNI_NETNS", None),
            ("CNI_ARGS", Some("novalue")),
        ];
        for (var, value) in cases {
            let mut pairs: Vec<(&str, &str)> =
                OK.iter().copied().filter(|(k, _)| *k != var).collect();
            if let Some(v) = value {
                pairs.push((var, v));
            }
            let e = env(&pairs).unwrap_err();
            assert_eq!(e.code, INVALID_ENVIRONMENT, "{var}");
            assert!(e.details.starts_with(var), "{var}: {e}");
        }
    }

    #[test]
    fn del_without_netns_and_version_without_anything() {
        let mut pairs: Vec<_> = OK
            .iter()
            .copied()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        pairs[0] = ("CNI_COMMAND", "DEL");
        assert_eq!(env(&pairs).unwrap().netns, None);
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }
}
