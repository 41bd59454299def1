//! Benchmark driver for `bench/cni.sh`: the reference bridge + host-local against berth-cni,
//! alternating in the same run, each ADD and DEL into a fresh namespace. Everything runs inside
//! a host namespace this driver creates (never the machine's own), and every namespace is
//! removed at the end, even on failure.
//!
//! Usage: cnibench <berth-cni bin dir> <reference plugin dir> [rounds]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_cni::ipam::store::Store;
use berth_cni::ipam::{Range, RangeSet};
use berth_cni::{Exec, NetworkList, RuntimeConf};
use serde_json::json;

struct Ns(String);

impl Ns {
    fn new(name: String) -> Ns {
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "ip netns add {name} failed");
        Ns(name)
    }
    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// CPU time (user + system) of every reaped child so far: a plugin's CPU cost, including its
/// own children (host-local under bridge), whatever the machine's load does to wall time.
fn children_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::new(
                    tv.tv_sec().max(0) as u64,
                    (tv.tv_usec().max(0) as u32) * 1000,
                )
            };
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn p99(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let idx = ((v.len() as f64) * 0.99).ceil() as usize;
    v[idx.saturating_sub(1).min(v.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let berth_dir = PathBuf::from(args.get(1).expect("berth-cni bin dir"));
    let ref_dir = PathBuf::from(args.get(2).expect("reference plugin dir"));
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(40);
    let pid = std::process::id();
    let host = Ns::new(format!("bcnibench-{pid}-host"));
    let tmp = tempfile::tempdir().expect("tempdir");

    let mut exec = Exec::new(vec![berth_dir, ref_dir]);
    exec.host_netns = Some(host.path());
    // Same subnet size (/24) and version for both; no masquerade for either.
    let reference = NetworkList::parse(
        json!({"cniVersion": "1.0.0", "name": "bench-ref", "plugins": [{
            "type": "bridge", "bridge": "cniref0", "isGateway": true, "ipMasq": false,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/24"}]],
                     "dataDir": tmp.path().join("ref")},
        }]})
        .to_string()
        .as_bytes(),
    )
    .expect("reference conflist");
    let berth = NetworkList::parse(
        json!({"cniVersion": "1.0.0", "name": "bench-berth", "plugins": [{
            "type": "berth-cni", "bridge": "berth0", "isGateway": true, "ipMasq": false,
            "ipam": {"type": "berth", "ranges": [[{"subnet": "10.251.0.0/24"}]],
                     "dataDir": tmp.path().join("berth")},
        }]})
        .to_string()
        .as_bytes(),
    )
    .expect("berth conflist");

    let lists = [&reference, &berth];
    let mut nss: [Vec<Ns>; 2] = [Vec::new(), Vec::new()];
    for (side, v) in nss.iter_mut().enumerate() {
        for i in 0..rounds {
            v.push(Ns::new(format!("bcnibench-{pid}-{side}-{i}")));
        }
    }
    let rt = |side: usize, i: usize| RuntimeConf {
        container_id: format!("bench-{side}-{i}"),
        netns: nss[side][i].path(),
        ifname: "eth0".into(),
        ..RuntimeConf::default()
    };
    let mut add = [Vec::new(), Vec::new()];
    let mut del = [Vec::new(), Vec::new()];
    let mut add_cpu = [Vec::new(), Vec::new()];
    let mut del_cpu = [Vec::new(), Vec::new()];
    let mut results = [Vec::new(), Vec::new()];
    for i in 0..rounds {
        // Alternate which side goes first so that neither always runs on a warmer cache.
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (t, c) = (Instant::now(), children_cpu());
            let r = exec.add(lists[side], &rt(side, i)).expect("ADD");
            add[side].push(ms(t.elapsed()));
            add_cpu[side].push(ms(children_cpu().saturating_sub(c)));
            results[side].push(r);
        }
    }
    for i in 0..rounds {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (t, c) = (Instant::now(), children_cpu());
            let prev = results[side].get(i);
            exec.del(lists[side], &rt(side, i), prev).expect("DEL");
            del[side].push(ms(t.elapsed()));
            del_cpu[side].push(ms(children_cpu().saturating_sub(c)));
        }
    }
    for (case, samples) in [("add", &mut add), ("del", &mut del)] {
        let [r, b] = samples;
        let (rm, bm) = (median(r), median(b));
        println!(
            "case={case} ref_median_ms={rm:.2} berth_median_ms={bm:.2} ref_p99_ms={:.2} berth_p99_ms={:.2} ratio_vs_ref={:.2}",
            p99(r),
            p99(b),
            rm / bm
        );
    }

    for (case, samples) in [("add", &mut add_cpu), ("del", &mut del_cpu)] {
        let [r, b] = samples;
        let (rm, bm) = (median(r), median(b));
        eprintln!(
            "cpu (user+sys of the plugin processes) case={case} ref_median_ms={rm:.2} berth_median_ms={bm:.2} ratio_vs_ref={:.2}",
            rm / bm
        );
    }

    // The reservation store alone: lock, allocate, write + exchange, then release the same way.
    let sets = [RangeSet::new(vec![
        Range::new("10.252.0.0/24".parse().expect("subnet"), None, None, None).expect("range"),
    ])
    .expect("set")];
    let store = Store::new(&tmp.path().join("ipam"), "bench");
    let mut cycle = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        let mut l = store.lock().expect("lock");
        l.state
            .allocate(&sets, &format!("x{i}"), "eth0", &[])
            .expect("allocate");
        l.commit().expect("commit");
        let mut l = store.lock().expect("lock");
        l.state.release(&format!("x{i}"), "eth0");
        l.commit().expect("commit");
        cycle.push(ms(t.elapsed()) / 2.0);
    }
    eprintln!(
        "ipam store (flock + write + exchange) per operation: median_ms={:.3} p99_ms={:.3}",
        median(&mut cycle),
        p99(&mut cycle)
    );
}
