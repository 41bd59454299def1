//! CPU and memory limits of instances through cgroups, where the machine has them: the unified
//! hierarchy (cgroup v2: `cpu.max`, `memory.max`) or the v1 `cpu` and `memory` controllers
//! (`cpu.cfs_quota_us`, `memory.limit_in_bytes`). Each instance gets `berth/<node>/<instance>`
//! under each hierarchy; the agent moves the process in right after it started.
//!
//! Without writable cgroups (an unprivileged `berth dev`, a container without them) instances
//! run unlimited and the agent says so once.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The CFS period the CPU quota is a share of (the kernel's default, as Kubernetes uses).
const CFS_PERIOD_US: u64 = 100_000;

/// Where instance cgroups go.
#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    /// cgroup v2: the parent directory in the unified hierarchy.
    unified: Option<PathBuf>,
    /// cgroup v1: parents in the cpu and memory hierarchies.
    cpu: Option<PathBuf>,
    memory: Option<PathBuf>,
}

fn writable_dir(parent: &Path) -> Option<PathBuf> {
    std::fs::create_dir_all(parent)
        .ok()
        .map(|()| parent.to_owned())
}

impl Cgroups {
    /// Finds the hierarchies under `root` (normally `/sys/fs/cgroup`) and creates this node's
    /// parent cgroups in them.
    pub fn detect(root: &Path, node: &str) -> Cgroups {
        let sub = Path::new("berth").join(node);
        if root.join("cgroup.controllers").is_file() {
            let top = root.join("berth");
            let enabled = writable_dir(&top).is_some()
                // Controllers must be enabled for children at every level down to ours.
                && std::fs::write(root.join("cgroup.subtree_control"), "+cpu +memory").is_ok()
                && std::fs::write(top.join("cgroup.subtree_control"), "+cpu +memory").is_ok();
            let node_dir = root.join(&sub);
            let unified = (enabled && writable_dir(&node_dir).is_some())
                .then(|| {
                    std::fs::write(node_dir.join("cgroup.subtree_control"), "+cpu +memory")
                        .ok()
                        .map(|()| node_dir)
                })
                .flatten();
            return Cgroups {
                unified,
                ..Cgroups::default()
            };
        }
        let v1 = |controller: &str| {
            let dir = root.join(controller);
            dir.join("cgroup.procs")
                .is_file()
                .then(|| writable_dir(&dir.join(&sub)))
                .flatten()
        };
        Cgroups {
            unified: None,
            cpu: v1("cpu"),
            memory: v1("memory"),
        }
    }

    /// Whether any limit can be applied.
    pub fn available(&self) -> bool {
        self.unified.is_some() || self.cpu.is_some() || self.memory.is_some()
    }

    /// Puts `pid` into the cgroups of `instance` with these limits (0: unlimited).
    pub fn apply(
        &self,
        instance: &str,
        cpu_millis: u64,
        memory_bytes: u64,
        pid: u32,
    ) -> Result<()> {
        let write = |dir: &Path, file: &str, value: String| -> Result<()> {
            std::fs::write(dir.join(file), &value)
                .with_context(|| format!("writing {value:?} to {}/{file}", dir.display()))
        };
        if let Some(parent) = &self.unified {
            let dir = parent.join(instance);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            if cpu_millis > 0 {
                write(
                    &dir,
                    "cpu.max",
                    format!("{} {CFS_PERIOD_US}", cpu_millis * CFS_PERIOD_US / 1000),
                )?;
            }
            if memory_bytes > 0 {
                write(&dir, "memory.max", memory_bytes.to_string())?;
            }
            write(&dir, "cgroup.procs", pid.to_string())?;
        }
        if let Some(parent) = &self.cpu {
            let dir = parent.join(instance);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            if cpu_millis > 0 {
                write(&dir, "cpu.cfs_period_us", CFS_PERIOD_US.to_string())?;
                write(
                    &dir,
                    "cpu.cfs_quota_us",
                    (cpu_millis * CFS_PERIOD_US / 1000).to_string(),
                )?;
            }
            write(&dir, "cgroup.procs", pid.to_string())?;
        }
        if let Some(parent) = &self.memory {
            let dir = parent.join(instance);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            if memory_bytes > 0 {
                write(&dir, "memory.limit_in_bytes", memory_bytes.to_string())?;
            }
            write(&dir, "cgroup.procs", pid.to_string())?;
        }
        Ok(())
    }

    /// Removes the cgroups of `instance` (they must be empty: call after the process is gone).
    pub fn remove(&self, instance: &str) {
        for parent in [&self.unified, &self.cpu, &self.memory]
            .into_iter()
            .flatten()
        {
            let _ = std::fs::remove_dir(parent.join(instance));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_layout_gets_quota_and_memory_limit() {
        // A fake v1 root: what matters is which files get which values.
        let root = tempfile::tempdir().unwrap();
        for c in ["cpu", "memory"] {
            std::fs::create_dir_all(root.path().join(c)).unwrap();
            std::fs::write(root.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        let cg = Cgroups::detect(root.path(), "n1");
        assert!(cg.available());
        cg.apply("default.web-1", 250, 64 << 20, 4242).unwrap();
        let cpu = root.path().join("cpu/berth/n1/default.web-1");
        let mem = root.path().join("memory/berth/n1/default.web-1");
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "25000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(
            read(mem.join("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(mem.join("cgroup.procs")), "4242");
    }

    #[test]
    fn v2_layout_gets_cpu_max_and_memory_max() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let cg = Cgroups::detect(root.path(), "n1");
        assert!(cg.available());
        cg.apply("default.web-1", 1500, 1 << 30, 7).unwrap();
        let dir = root.path().join("berth/n1/default.web-1");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("memory.max"), (1u64 << 30).to_string());
        assert_eq!(read("cgroup.procs"), "7");
    }

    #[test]
    fn nothing_there_means_unlimited() {
        let root = tempfile::tempdir().unwrap();
        let cg = Cgroups::detect(root.path(), "n1");
        assert!(!cg.available());
        cg.apply("x", 100, 100, 1).unwrap();
    }
}
