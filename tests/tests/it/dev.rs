//! `berth dev -f examples/hello.yaml`: everything the README promises, and the restart
//! behaviour of the agent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_tests::{Dev, dns_query, http_get, wait_for};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

const SRV_NAME: &str = "_http._tcp.hello.default.svc.berth.local.";

/// One row of `berth get instances -o json`.
#[derive(Debug)]
struct Row {
    state: String,
    node: String,
    address: String,
    port: u16,
    pid: u32,
}

/// Instance name -> its row.
fn instances(dev: &Dev) -> Result<BTreeMap<String, Row>> {
    let out = dev.cli(&["get", "instances", "-o", "json"])?;
    if !out.status.success() {
        bail!(
            "berth get instances: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let items: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut map = BTreeMap::new();
    for i in items.as_array().context("a list")? {
        let s = |p: &str| {
            i.pointer(p)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned()
        };
        let n = |p: &str| i.pointer(p).and_then(|v| v.as_u64()).unwrap_or(0);
        map.insert(
            s("/metadata/name"),
            Row {
                state: s("/status/state"),
                node: s("/spec/node"),
                address: s("/status/address"),
                port: n("/status/ports/http") as u16,
                pid: n("/status/pid") as u32,
            },
        );
    }
    Ok(map)
}

/// The SRV answer: (target instance name, port), sorted, and the A records in additionals.
fn srv(dev: &Dev) -> Result<(Vec<(String, u16)>, usize)> {
    let m = dns_query(dev.dns, SRV_NAME, RecordType::SRV)?;
    let mut out: Vec<(String, u16)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.target.to_string(), s.port)),
            _ => None,
        })
        .collect();
    out.sort();
    let a = m
        .additionals
        .iter()
        .filter(|r| matches!(r.data, RData::A(_)))
        .count();
    Ok((out, a))
}

fn served_by_proxy(dev: &Dev, n: usize) -> Result<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let (status, body) = http_get(dev.ingress, "hello.localhost", "/")?;
        if status != 200 {
            bail!("status {status}: {body}");
        }
        *seen.entry(body.trim().to_owned()).or_insert(0) += 1;
    }
    Ok(seen)
}

#[test]
fn dev_serves_the_hello_example_end_to_end() -> Result<()> {
    let mut dev = Dev::start(&["-f", "examples/hello.yaml"])?;

    // berth get instances lists the 3, ready, with node and address.
    let ready = wait_for(Duration::from_secs(30), "3 ready instances", || {
        let i = instances(&dev).ok()?;
        (i.len() == 3 && i.values().all(|v| v.state == "ready")).then_some(i)
    })?;
    let table = dev.cli(&["get", "instances"])?;
    let table = String::from_utf8(table.stdout)?;
    println!("{table}");
    for (
        name,
        Row {
            node,
            address,
            port,
            ..
        },
    ) in &ready
    {
        assert!(
            !node.is_empty() && address == "127.0.0.1" && *port > 0,
            "{name}: {node} {address} {port}"
        );
        let row = table
            .lines()
            .find(|l| l.starts_with(name.as_str()))
            .context("row")?;
        assert!(
            row.contains("ready") && row.contains(node.as_str()) && row.contains("127.0.0.1"),
            "{row}"
        );
    }

    // The proxy reaches all 3 round-robin: 6 requests, each instance twice.
    let seen = wait_for(Duration::from_secs(5), "all 3 behind the proxy", || {
        let s = served_by_proxy(&dev, 6).ok()?;
        (s.len() == 3).then_some(s)
    })?;
    for name in ready.keys() {
        assert_eq!(
            seen.get(&format!("hello from {name}")),
            Some(&2),
            "round robin: {seen:?}"
        );
    }
    let (status, _) = http_get(dev.ingress, "nobody.localhost", "/")?;
    assert_eq!(status, 404, "unknown virtual host");

    // DNS: A for the service, SRV with the instances' ports and their A records as additionals.
    let a = dns_query(dev.dns, "hello.default.svc.berth.local.", RecordType::A)?;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(
        a.answers
            .iter()
            .any(|r| matches!(&r.data, RData::A(ip) if ip.0 == std::net::Ipv4Addr::LOCALHOST)),
        "{a:?}"
    );
    let (records, additional_a) = wait_for(Duration::from_secs(5), "3 SRV records", || {
        let s = srv(&dev).ok()?;
        (s.0.len() == 3).then_some(s)
    })?;
    let want: Vec<(String, u16)> = ready
        .iter()
        .map(|(n, v)| (format!("{n}.hello.default.svc.berth.local."), v.port))
        .collect();
    assert_eq!(records, want);
    assert_eq!(additional_a, 3);
    let nx = dns_query(dev.dns, "nope.default.svc.berth.local.", RecordType::A)?;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);

    // A dead instance leaves the proxy and DNS within a second; the agent restarts it and it is
    // back within a second of being ready again.
    let (victim, Row { port, pid, .. }) = ready.iter().next().context("an instance")?;
    let target = format!("{victim}.hello.default.svc.berth.local.");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(*pid)?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let killed = Instant::now();
    wait_for(Duration::from_secs(1), "dead instance out of DNS", || {
        let (recs, _) = srv(&dev).ok()?;
        (!recs.iter().any(|(t, _)| *t == target)).then_some(())
    })?;
    let left_dns = killed.elapsed();
    wait_for(
        Duration::from_secs(1),
        "dead instance out of the proxy",
        || {
            let s = served_by_proxy(&dev, 4).ok()?;
            (!s.contains_key(&format!("hello from {victim}"))).then_some(())
        },
    )?;
    println!("dead instance left DNS after {left_dns:?}");

    // Ready again = its own health endpoint answers (the port is kept across restarts).
    let back = wait_for(
        Duration::from_secs(10),
        "restarted instance answering",
        || {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], *port));
            matches!(http_get(addr, "x", "/healthz"), Ok((200, _))).then(Instant::now)
        },
    )?;
    wait_for(
        Duration::from_secs(1),
        "restarted instance back in DNS",
        || {
            let (recs, _) = srv(&dev).ok()?;
            recs.iter().any(|(t, _)| *t == target).then_some(())
        },
    )?;
    wait_for(
        Duration::from_secs(1),
        "restarted instance back in the proxy",
        || {
            let s = served_by_proxy(&dev, 6).ok()?;
            (s.len() == 3).then_some(())
        },
    )?;
    println!(
        "restarted instance served {:?} after it was ready",
        back.elapsed()
    );
    let after = instances(&dev)?;
    assert_eq!(after.len(), 3, "restarted in place, not replaced");
    let restarts = dev.cli(&["get", "instances", victim, "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_slice(&restarts.stdout)?;
    assert_eq!(
        v.pointer("/0/status/restarts").and_then(|r| r.as_u64()),
        Some(1)
    );

    // An invalid manifest is refused whole, naming the file and the field; nothing changes.
    let bad = dev.data_dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: App\nmetadata: {name: other}\nspec: {template: {command: berth}}\n---\n\
         kind: Service\nmetadata: {name: broken}\nspec: {app: other, ports: [{name: http, port: 0}]}\n",
    )?;
    let out = dev.cli(&["apply", "-f", bad.to_str().context("path")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.yaml: document 2") && err.contains("spec.ports[0].port"),
        "{err}"
    );
    let other = dev.cli(&["get", "apps", "other"])?;
    assert!(
        !other.status.success(),
        "the valid document was not applied either"
    );

    // Ctrl-C stops every instance and exits cleanly.
    let pids: Vec<u32> = instances(&dev)?.values().map(|v| v.pid).collect();
    let status = dev.interrupt(Duration::from_secs(20))?;
    assert!(status.success(), "berth dev exited with {status}");
    for pid in pids {
        let alive =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid)?), None).is_ok();
        assert!(!alive, "instance process {pid} still running after Ctrl-C");
    }
    Ok(())
}

#[test]
fn dev_refuses_a_bad_manifest_before_starting() -> Result<()> {
    let dir = berth_tests::tempfile_dir::TempDir::new("berth-bad")?;
    let bad = dir.path().join("app.yaml");
    std::fs::write(
        &bad,
        "kind: App\nmetadata: {name: a}\nspec:\n  replicas: many\n  template: {command: x}\n",
    )?;
    let out = std::process::Command::new(berth_tests::berth_bin())
        .arg("dev")
        .args(berth_tests::EPHEMERAL_PORTS)
        .arg("-f")
        .arg(&bad)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("app.yaml: document 1: spec.replicas: invalid type"),
        "{err}"
    );
    Ok(())
}
