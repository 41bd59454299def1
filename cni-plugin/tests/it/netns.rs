//! Namespaces and networks owned by one test, removed on drop even when the test fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_cni::{Exec, NetworkList, RuntimeConf};
use nix::sched::{CloneFlags, setns};
use serde_json::{Value, json};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace (`/run/netns/<name>`), deleted on drop.
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("bcni-{}-{n}-{tag}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip (iproute2) is needed");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns { name }
    }

    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <ns> ARGS` (read-only inspection of the test's own namespace).
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread inside this namespace (sockets it opens live there).
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let file = File::open(self.path()).unwrap();
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its links; a veth dies with either end.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A test network: a host namespace that holds the bridge, a data dir, and an [`Exec`] that
/// runs every plugin inside the host namespace.
pub(crate) struct Net {
    pub(crate) host: Netns,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) exec: Exec,
    pub(crate) name: String,
}

pub(crate) fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_berth-cni"))
        .parent()
        .unwrap()
        .to_owned()
}

impl Net {
    pub(crate) fn new(tag: &str) -> Net {
        let host = Netns::new(&format!("h{tag}"));
        let mut exec = Exec::new(vec![bin_dir(), PathBuf::from("/usr/lib/cni")]);
        exec.host_netns = Some(host.path());
        exec.timeout = std::time::Duration::from_secs(30);
        Net {
            host,
            dir: tempfile::tempdir().unwrap(),
            exec,
            name: format!("t{tag}"),
        }
    }

    /// The berth-cni plugin config for this network, with `extra` merged in.
    pub(crate) fn plugin(&self, subnets: &[&str], extra: Value) -> Value {
        let ranges: Vec<Value> = subnets.iter().map(|s| json!([{"subnet": s}])).collect();
        let mut p = json!({
            "type": "berth-cni",
            "bridge": "br0",
            "ipam": {"type": "berth", "ranges": ranges, "dataDir": self.dir.path()},
        });
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    }

    pub(crate) fn list(&self, version: &str, plugins: Vec<Value>) -> NetworkList {
        NetworkList::parse(
            json!({"cniVersion": version, "name": self.name, "plugins": plugins})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    }

    pub(crate) fn rt(&self, id: &str, ns: &Netns) -> RuntimeConf {
        RuntimeConf {
            container_id: id.into(),
            netns: ns.path(),
            ifname: "eth0".into(),
            ..RuntimeConf::default()
        }
    }

    /// Names of the host-side veths left in the host namespace.
    pub(crate) fn host_veths(&self) -> Vec<String> {
        self.host
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with("bv"))
            .collect()
    }

    /// Reservations left in the built-in IPAM store.
    pub(crate) fn reservations(&self) -> usize {
        let path = self.dir.path().join(&self.name).join("state.json");
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice::<Value>(&b).unwrap()["reservations"]
                .as_array()
                .map_or(0, Vec::len),
            Err(_) => 0,
        }
    }
}

/// The first address of a result, without its prefix.
pub(crate) fn addr(result: &Value, i: usize) -> std::net::IpAddr {
    let a = result["ips"][i]["address"].as_str().unwrap();
    a.split('/').next().unwrap().parse().unwrap()
}

/// Whether a program is on PATH.
pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}
