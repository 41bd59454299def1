//! Sealed network fabrics for multi-node tests: a fabric namespace holding a bridge, and one
//! namespace per machine (server, nodes) with a veth on that bridge. The fabric has no link to
//! the machine's uplink: nothing a test sends can leave the machine. Everything is removed when
//! the [`Fabric`] is dropped, also when the test fails: first the processes it started (by pid),
//! then every process left in the fabric's namespaces and the namespaces of instances that the
//! agents created (their names start with `berth-<node>-`), then the namespaces.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

/// Runs `ip` with `args`; fails with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (apt-get install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` on a thread that entered the network namespace `name`: sockets it opens live there.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let path = Path::new("/run/netns").join(name);
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {name}"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {name} panicked"))?
    })
}

/// Whether this process may create network namespaces (root with CAP_SYS_ADMIN and iproute2).
pub fn can_create_namespaces() -> bool {
    static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("berth-probe-{}-{n}", std::process::id());
    let ok = ip(&["netns", "add", &probe]).is_ok();
    if ok {
        let _ = ip(&["netns", "delete", &probe]);
    }
    ok
}

/// One machine on the fabric.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its namespace.
    pub netns: String,
    /// The fabric-side veth (cut it to take the machine off the network).
    pub link: String,
    /// Its address on the fabric.
    pub address: Ipv4Addr,
}

/// A sealed fabric with its machines, and the processes started in them.
pub struct Fabric {
    /// The fabric namespace (the bridge).
    pub netns: String,
    /// The machines, in the order added.
    pub hosts: Vec<Host>,
    /// Node names whose instance namespaces (`berth-<node>-*`) the fabric cleans up.
    pub nodes: Vec<String>,
    children: Vec<Child>,
}

impl Fabric {
    /// Creates the fabric namespace `<prefix>-fab` with bridge `br0` on 10.250.0.0/24; the
    /// fabric namespace itself is 10.250.0.254, a client outside every machine.
    pub fn new(prefix: &str) -> Result<Fabric> {
        let netns = format!("{prefix}-fab");
        ip(&["netns", "add", &netns])?;
        let fabric = Fabric {
            netns,
            hosts: Vec::new(),
            nodes: Vec::new(),
            children: Vec::new(),
        };
        let n = fabric.netns.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "link", "add", "br0", "type", "bridge"])?;
        // The fabric itself is a client on the network (the test talks from here).
        ip(&["-n", n, "addr", "add", "10.250.0.254/24", "dev", "br0"])?;
        ip(&["-n", n, "link", "set", "br0", "up"])?;
        Ok(fabric)
    }

    /// Adds a machine `<fabric>-<name>` with address 10.250.0.`octet`/24 on `eth0`.
    pub fn add_host(&mut self, name: &str, octet: u8) -> Result<Host> {
        let prefix = self.netns.trim_end_matches("-fab");
        let netns = format!("{prefix}-{name}");
        ip(&["netns", "add", &netns])?;
        let link = format!("v{octet}");
        let host = Host {
            netns: netns.clone(),
            link: link.clone(),
            address: Ipv4Addr::new(10, 250, 0, octet),
        };
        self.hosts.push(host.clone());
        let fab = self.netns.as_str();
        ip(&[
            "-n", fab, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns",
            &netns,
        ])?;
        ip(&["-n", fab, "link", "set", &link, "master", "br0", "up"])?;
        let cidr = format!("{}/24", host.address);
        ip(&["-n", &netns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// Takes a machine off the fabric (its link down), as a cut cable would.
    pub fn cut(&self, host: &Host) -> Result<()> {
        ip(&["-n", &self.netns, "link", "set", &host.link, "down"])
    }

    /// Starts `command` inside `host`'s namespace with stdout piped; the fabric kills it when
    /// dropped. Returns its index for [`Fabric::child`].
    pub fn spawn(&mut self, host: &Host, program: &Path, args: &[&str]) -> Result<usize> {
        self.spawn_env(host, program, args, &[])
    }

    /// [`Fabric::spawn`] with extra environment variables.
    pub fn spawn_env(
        &mut self,
        host: &Host,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<usize> {
        // nsenter, not `ip netns exec`: only the network namespace changes, so the process
        // sees the machine's /sys (cgroups) and the namespaces it creates under /run/netns are
        // visible to the test (`ip netns exec` would give it a private mount namespace).
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", host.netns))
            .arg("--")
            .arg(program)
            .args(args)
            .env(
                "BERTH_LOG",
                std::env::var("BERTH_LOG").unwrap_or("warn".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} in {}", program.display(), host.netns))?;
        self.children.push(child);
        Ok(self.children.len() - 1)
    }

    /// A process started with [`Fabric::spawn`].
    pub fn child(&mut self, i: usize) -> &mut Child {
        &mut self.children[i]
    }

    fn namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> = std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                self.nodes
                    .iter()
                    .any(|node| n.starts_with(&format!("berth-{node}-")))
            })
            .collect();
        all.extend(self.hosts.iter().map(|h| h.netns.clone()));
        all.push(self.netns.clone());
        all
    }
}

fn kill_in(netns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // An `ip netns add` an agent started just before it died may still be finishing.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let all = self.namespaces();
        // Twice: a process may fork while the first round runs.
        for _ in 0..2 {
            for n in &all {
                kill_in(n);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for n in &all {
            let _ = ip(&["netns", "delete", n]);
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(n));
        }
        // resolv.conf directories of sandboxes whose namespace is already gone.
        for e in std::fs::read_dir("/etc/netns")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if self
                .nodes
                .iter()
                .any(|node| name.starts_with(&format!("berth-{node}-")))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        for node in &self.nodes {
            for c in ["cpu", "memory", "unified", ""] {
                let dir = Path::new("/sys/fs/cgroup").join(c).join("berth").join(node);
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for e in entries.flatten() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
                let _ = std::fs::remove_dir(&dir);
                // The shared parent goes when this was the last user (rmdir of a non-empty
                // cgroup fails).
                let _ = std::fs::remove_dir(dir.parent().unwrap_or(&dir));
            }
        }
    }
}
