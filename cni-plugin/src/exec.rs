//! A small libcni: runs plugins through the CNI exec protocol, and whole conflists in order
//! (ADD forwards each result as the next `prevResult`; DEL runs in reverse). The agent uses it
//! to drive `berth-cni` and chained plugins; the tests and the benchmark use it to drive both
//! berth-cni and the reference plugins.
//!
//! [`Exec::host_netns`] runs every plugin inside that network namespace: the process is spawned
//! from a dedicated thread that entered it, and inherits the thread's namespace. Tests use it to
//! keep every bridge they create inside a namespace of their own.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use serde_json::{Map, Value, json};

use crate::config::Attachment;
use crate::error::CniError;
use crate::version::Version;

/// Why running a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The plugin answered with a CNI error.
    #[error("plugin {plugin} failed: {error} (code {})", error.code)]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// Its error object.
        error: CniError,
    },
    /// The plugin binary is on none of the search directories.
    #[error("plugin {0} not found in the CNI path {1:?}")]
    NotFound(String, Vec<PathBuf>),
    /// Spawning or talking to the plugin failed.
    #[error("running plugin {plugin}")]
    Io {
        /// The plugin type.
        plugin: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The plugin ran longer than the timeout and was killed.
    #[error("plugin {0} timed out after {1:?} and was killed")]
    Timeout(String, Duration),
    /// The plugin's output or the conflist is not what the protocol says.
    #[error("{0}")]
    Protocol(String),
}

impl ExecError {
    /// The CNI error code, if the plugin answered with one.
    pub fn code(&self) -> Option<u32> {
        match self {
            ExecError::Plugin { error, .. } => Some(error.code),
            _ => None,
        }
    }
}

/// A network configuration list (`.conflist`).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    /// The list's `cniVersion`, given to every plugin.
    pub cni_version: Version,
    /// Network name.
    pub name: String,
    /// Skip CHECK.
    pub disable_check: bool,
    /// Skip GC.
    pub disable_gc: bool,
    /// Plugin configurations, in order.
    pub plugins: Vec<Map<String, Value>>,
}

impl NetworkList {
    /// Parses a conflist.
    pub fn parse(bytes: &[u8]) -> Result<NetworkList, ExecError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| ExecError::Protocol(format!("conflist: {e}")))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        let version = s("cniVersion")
            .ok_or_else(|| ExecError::Protocol("conflist: cniVersion missing".into()))?;
        let cni_version =
            Version::parse(version).map_err(|e| ExecError::Protocol(format!("conflist: {e}")))?;
        let name = s("name")
            .ok_or_else(|| ExecError::Protocol("conflist: name missing".into()))?
            .to_owned();
        let plugins = v
            .get("plugins")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ExecError::Protocol("conflist: plugins missing or empty".into()))?
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p = p.as_object().cloned().ok_or_else(|| {
                    ExecError::Protocol(format!("conflist: plugins[{i}] is not an object"))
                })?;
                if !p.get("type").is_some_and(Value::is_string) {
                    return Err(ExecError::Protocol(format!(
                        "conflist: plugins[{i}].type missing"
                    )));
                }
                Ok(p)
            })
            .collect::<Result<_, _>>()?;
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        Ok(NetworkList {
            cni_version,
            name,
            disable_check: flag("disableCheck"),
            disable_gc: flag("disableGC"),
            plugins,
        })
    }
}

/// What identifies one attachment, and the runtime's capability arguments.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConf {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `ips`, `bandwidth`...), given as `runtimeConfig` to
    /// plugins that declare the capability.
    pub capability_args: Map<String, Value>,
}

/// Reads a child's stdout and stderr until both close or `timeout` passes, with one poll loop
/// on the calling thread (no helper threads: a plugin run is on the ADD latency path).
/// Returns (stdout, stderr, timed out).
fn collect(child: &mut Child, timeout: Duration) -> std::io::Result<(Vec<u8>, Vec<u8>, bool)> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    const MAX_STDOUT: usize = 16 << 20;
    const MAX_STDERR: usize = 64 << 10;
    let deadline = Instant::now() + timeout;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 16 * 1024];
    while out.is_some() || err.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok((stdout, stderr, true));
        }
        let wait = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let (out_ready, err_ready) = {
            let mut fds = Vec::with_capacity(2);
            if let Some(o) = &out {
                fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
            }
            if let Some(e) = &err {
                fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, wait) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            let o = out.is_some() && ready(&fds[0]);
            let e = err.is_some() && ready(&fds[usize::from(out.is_some())]);
            (o, e)
        };
        if out_ready && let Some(o) = out.as_mut() {
            let n = o.read(&mut buf)?;
            if n == 0 {
                out = None;
            } else if stdout.len() + n > MAX_STDOUT {
                return Err(std::io::Error::other(
                    "plugin wrote more than 16 MiB on stdout",
                ));
            } else {
                stdout.extend_from_slice(&buf[..n]);
            }
        }
        if err_ready && let Some(e) = err.as_mut() {
            let n = e.read(&mut buf)?;
            if n == 0 {
                err = None;
            } else if stderr.len() < MAX_STDERR {
                stderr.extend_from_slice(&buf[..n.min(MAX_STDERR - stderr.len())]);
            }
        }
    }
    Ok((stdout, stderr, false))
}

/// Runs CNI plugins.
#[derive(Debug, Clone)]
pub struct Exec {
    /// Directories searched for plugin binaries (`CNI_PATH`).
    pub path: Vec<PathBuf>,
    /// Run plugins inside this network namespace instead of the caller's.
    pub host_netns: Option<PathBuf>,
    /// Kill a plugin that runs longer than this.
    pub timeout: Duration,
    /// Extra environment for every plugin (tests use it for pause points).
    pub extra_env: Vec<(String, String)>,
}

impl Exec {
    /// Plugins searched in `path`, run in the caller's namespace, killed after 60 s.
    pub fn new(path: Vec<PathBuf>) -> Exec {
        Exec {
            path,
            host_netns: None,
            timeout: Duration::from_secs(60),
            extra_env: Vec::new(),
        }
    }

    /// The binary of plugin `ty`.
    pub fn find(&self, ty: &str) -> Result<PathBuf, ExecError> {
        if ty.contains('/') || ty.is_empty() {
            return Err(ExecError::Protocol(format!(
                "plugin type {ty:?} is not a name"
            )));
        }
        self.path
            .iter()
            .map(|d| d.join(ty))
            .find(|p| p.is_file())
            .ok_or_else(|| ExecError::NotFound(ty.to_owned(), self.path.clone()))
    }

    fn cni_path(&self) -> String {
        self.path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The `CNI_*` environment of one invocation.
    pub fn env(&self, command: &str, rt: Option<&RuntimeConf>) -> Vec<(String, String)> {
        let mut env = vec![
            ("CNI_COMMAND".to_owned(), command.to_owned()),
            ("CNI_PATH".to_owned(), self.cni_path()),
        ];
        if let Some(rt) = rt {
            env.push(("CNI_CONTAINERID".into(), rt.container_id.clone()));
            env.push(("CNI_NETNS".into(), rt.netns.display().to_string()));
            env.push(("CNI_IFNAME".into(), rt.ifname.clone()));
            let args: Vec<String> = rt.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            env.push(("CNI_ARGS".into(), args.join(";")));
        }
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// Spawns a plugin with `env` (on top of a cleared `CNI_*` environment), in the host netns
    /// if one is set, with stdin, stdout and stderr piped.
    pub fn spawn(&self, binary: &Path, env: &[(String, String)]) -> std::io::Result<Child> {
        let mut cmd = Command::new(binary);
        for var in [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_ARGS",
            "CNI_PATH",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match &self.host_netns {
            None => cmd.spawn(),
            Some(ns) => {
                let file = File::open(ns)?;
                // A child inherits the namespaces of the thread that forks it: enter the
                // namespace on a throwaway thread and spawn from there.
                std::thread::scope(|s| {
                    s.spawn(|| {
                        setns(&file, CloneFlags::CLONE_NEWNET)?;
                        cmd.spawn()
                    })
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("spawn thread panicked")))
                })
            }
        }
    }

    /// Runs a plugin binary to completion: `Ok(stdout)` on success, its CNI error otherwise.
    pub fn run(
        &self,
        binary: &Path,
        env: &[(String, String)],
        stdin: &[u8],
    ) -> Result<Vec<u8>, ExecError> {
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let io = |source| ExecError::Io {
            plugin: name.clone(),
            source,
        };
        let mut child = self.spawn(binary, env).map_err(io)?;
        if let Some(mut p) = child.stdin.take() {
            // A plugin that exits without reading stdin closes the pipe: not our failure.
            let _ = p.write_all(stdin);
        }
        let (stdout, stderr, timed_out) = match collect(&mut child, self.timeout) {
            Ok(out) => out,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io(e));
            }
        };
        if timed_out {
            let _ = child.kill(); // SIGKILL; the child is not reaped yet, so its pid is ours
            let _ = child.wait();
            return Err(ExecError::Timeout(name, self.timeout));
        }
        let status = child.wait().map_err(io)?;
        if status.success() {
            return Ok(stdout);
        }
        let parsed: Option<CniError> =
            serde_json::from_slice::<Value>(&stdout).ok().and_then(|v| {
                Some(CniError {
                    code: u32::try_from(v.get("code")?.as_u64()?).ok()?,
                    msg: v
                        .get("msg")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    details: v
                        .get("details")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                })
            });
        Err(ExecError::Plugin {
            plugin: name,
            error: parsed.unwrap_or_else(|| {
                CniError::new(
                    999,
                    format!("exited with {status} without a CNI error"),
                    String::from_utf8_lossy(&stderr).trim().to_owned(),
                )
            }),
        })
    }

    /// The stdin of plugin `i` of `list`.
    fn stdin_for(
        list: &NetworkList,
        i: usize,
        rt: Option<&RuntimeConf>,
        prev: Option<&Value>,
        extra: Option<(&str, Value)>,
    ) -> Vec<u8> {
        let mut conf = list.plugins[i].clone();
        conf.insert("cniVersion".into(), json!(list.cni_version.as_str()));
        conf.insert("name".into(), json!(list.name));
        if let Some(rt) = rt {
            let caps = conf
                .get("capabilities")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let mut runtime = Map::new();
            for (cap, on) in caps {
                if on.as_bool() == Some(true)
                    && let Some(v) = rt.capability_args.get(&cap)
                {
                    runtime.insert(cap, v.clone());
                }
            }
            if !runtime.is_empty() {
                conf.insert("runtimeConfig".into(), Value::Object(runtime));
            }
        }
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        if let Some((k, v)) = extra {
            conf.insert(k.into(), v);
        }
        // A map of JSON values always serialises.
        serde_json::to_vec(&conf).unwrap_or_default()
    }

    fn plugin_type(list: &NetworkList, i: usize) -> &str {
        list.plugins[i]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn run_plugin(
        &self,
        list: &NetworkList,
        i: usize,
        command: &str,
        rt: Option<&RuntimeConf>,
        stdin: &[u8],
    ) -> Result<Vec<u8>, ExecError> {
        let binary = self.find(Self::plugin_type(list, i))?;
        self.run(&binary, &self.env(command, rt), stdin)
    }

    /// ADD through every plugin in order; returns the last result. On failure it runs DEL
    /// through the list (as runtimes do) and returns the ADD error.
    pub fn add(&self, list: &NetworkList, rt: &RuntimeConf) -> Result<Value, ExecError> {
        let mut prev: Option<Value> = None;
        for i in 0..list.plugins.len() {
            let stdin = Self::stdin_for(list, i, Some(rt), prev.as_ref(), None);
            match self.run_plugin(list, i, "ADD", Some(rt), &stdin) {
                Ok(out) => {
                    prev = Some(serde_json::from_slice(&out).map_err(|e| {
                        ExecError::Protocol(format!(
                            "{}: ADD result is not JSON: {e}",
                            Self::plugin_type(list, i)
                        ))
                    })?);
                }
                Err(e) => {
                    let _ = self.del(list, rt, None);
                    return Err(e);
                }
            }
        }
        prev.ok_or_else(|| ExecError::Protocol("empty plugin list".into()))
    }

    /// DEL through every plugin in reverse order; every plugin runs even if one fails, and the
    /// first error is returned.
    pub fn del(
        &self,
        list: &NetworkList,
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) -> Result<(), ExecError> {
        let mut first = None;
        for i in (0..list.plugins.len()).rev() {
            let stdin = Self::stdin_for(list, i, Some(rt), prev, None);
            if let Err(e) = self.run_plugin(list, i, "DEL", Some(rt), &stdin) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// CHECK through every plugin with the cached ADD result (skipped before 0.4.0 or when the
    /// list disables it).
    pub fn check(
        &self,
        list: &NetworkList,
        rt: &RuntimeConf,
        prev: &Value,
    ) -> Result<(), ExecError> {
        if !list.cni_version.has_check() || list.disable_check {
            return Ok(());
        }
        for i in 0..list.plugins.len() {
            let stdin = Self::stdin_for(list, i, Some(rt), Some(prev), None);
            self.run_plugin(list, i, "CHECK", Some(rt), &stdin)?;
        }
        Ok(())
    }

    /// GC through every plugin, keeping `valid` (skipped before 1.1.0 or when disabled).
    pub fn gc(&self, list: &NetworkList, valid: &[Attachment]) -> Result<(), ExecError> {
        if !list.cni_version.has_gc_status() || list.disable_gc {
            return Ok(());
        }
        let mut first = None;
        for i in 0..list.plugins.len() {
            let stdin = Self::stdin_for(
                list,
                i,
                None,
                None,
                Some(("cni.dev/valid-attachments", json!(valid))),
            );
            if let Err(e) = self.run_plugin(list, i, "GC", None, &stdin) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// STATUS through every plugin (skipped before 1.1.0); the first failure is returned.
    pub fn status(&self, list: &NetworkList) -> Result<(), ExecError> {
        if !list.cni_version.has_gc_status() {
            return Ok(());
        }
        for i in 0..list.plugins.len() {
            let stdin = Self::stdin_for(list, i, None, None, None);
            self.run_plugin(list, i, "STATUS", None, &stdin)?;
        }
        Ok(())
    }

    /// VERSION of plugin `ty`, asked in `version`.
    pub fn version(&self, ty: &str, version: Version) -> Result<Value, ExecError> {
        let binary = self.find(ty)?;
        let out = self.run(
            &binary,
            &self.env("VERSION", None),
            json!({"cniVersion": version.as_str()})
                .to_string()
                .as_bytes(),
        )?;
        serde_json::from_slice(&out)
            .map_err(|e| ExecError::Protocol(format!("{ty}: VERSION answer is not JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_parsing_names_what_is_wrong() {
        let ok = br#"{"cniVersion":"1.1.0","name":"n","plugins":[{"type":"berth-cni"}]}"#;
        let l = NetworkList::parse(ok).unwrap();
        assert_eq!(l.plugins.len(), 1);
        for (bad, needle) in [
            (
                &br#"{"name":"n","plugins":[{"type":"x"}]}"#[..],
                "cniVersion",
            ),
            (
                br#"{"cniVersion":"1.1.0","name":"n","plugins":[]}"#,
                "plugins",
            ),
            (
                br#"{"cniVersion":"1.1.0","name":"n","plugins":[{}]}"#,
                "plugins[0].type",
            ),
        ] {
            let e = NetworkList::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn capabilities_become_runtime_config_and_prev_result_is_passed() {
        let l = NetworkList::parse(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        let mut rt = RuntimeConf::default();
        rt.capability_args
            .insert("portMappings".into(), json!([{"hostPort": 1}]));
        rt.capability_args.insert("bandwidth".into(), json!({}));
        let prev = json!({"cniVersion":"1.0.0"});
        let s: Value =
            serde_json::from_slice(&Exec::stdin_for(&l, 1, Some(&rt), Some(&prev), None)).unwrap();
        assert_eq!(
            s["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 1}]})
        );
        assert_eq!(s["prevResult"], prev);
        assert_eq!(s["name"], "n");
        let s: Value =
            serde_json::from_slice(&Exec::stdin_for(&l, 0, Some(&rt), None, None)).unwrap();
        assert!(s.get("runtimeConfig").is_none());
    }

    #[test]
    fn a_plugin_error_is_parsed_and_a_hang_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let fail = dir.path().join("fail");
        std::fs::write(
            &fail,
            "#!/bin/sh\necho '{\"cniVersion\":\"1.0.0\",\"code\":7,\"msg\":\"bad\",\"details\":\"why\"}'\nexit 1\n",
        )
        .unwrap();
        let hang = dir.path().join("hang");
        std::fs::write(&hang, "#!/bin/sh\nexec sleep 30\n").unwrap();
        for p in [&fail, &hang] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut exec = Exec::new(vec![dir.path().to_owned()]);
        let e = exec.run(&fail, &exec.env("ADD", None), b"{}").unwrap_err();
        assert_eq!(e.code(), Some(7));
        assert!(e.to_string().contains("bad: why"), "{e}");
        exec.timeout = Duration::from_millis(200);
        let e = exec.run(&hang, &exec.env("ADD", None), b"{}").unwrap_err();
        assert!(matches!(e, ExecError::Timeout(..)), "{e}");
    }
}
