//! A 3-node cluster end to end, as root, inside a sealed fabric (issue 8): `berth server` in its
//! own namespace and three namespaces each running `berth agent --network cni`. Instances get
//! their own namespace and address through berth-cni; they reach each other across nodes by
//! address, resolve services by name through the resolv.conf the agent gave them, reach them
//! through the VIP on their node's proxy; the SRV record lists every instance; every node's
//! ingress serves the TLS route; a node cut off the fabric has its instances rescheduled, and
//! the others stop sending to them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use berth_tests::netns::{Fabric, Host, can_create_namespaces, in_netns};
use berth_tests::{
    admin_token, berth_bin, dns_query, http_with_token, tempfile_dir::TempDir, wait_for,
};
use hickory_proto::rr::{RData, RecordType};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

const ZONE: &str = "berth.local";
const API_PORT: u16 = 7070;

struct Cluster {
    fabric: Fabric,
    server: Host,
    nodes: Vec<Host>,
    node_names: Vec<String>,
    /// Each node's agent: its command line and its process in the fabric.
    agents: Vec<(Vec<String>, usize)>,
    admin: String,
    _dir: TempDir,
}

impl Cluster {
    fn start_agent(&mut self, host: &Host, args: &[String]) -> Result<usize> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let a = self.fabric.spawn(host, &berth_bin(), &args)?;
        first_line(self.fabric.child(a))?;
        Ok(a)
    }

    fn api(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        let addr = SocketAddr::new(IpAddr::V4(self.server.address), API_PORT);
        in_netns(&self.fabric.netns, || {
            http_with_token(addr, method, "berth", path, body, Some(&self.admin))
        })?
    }

    fn get(&self, path: &str) -> Result<serde_json::Value> {
        let (status, body) = self.api("GET", path, None)?;
        ensure!(status == 200, "GET {path}: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// Ready instances: name -> (node, address, pid).
    fn ready(&self) -> Result<BTreeMap<String, (String, IpAddr, u32)>> {
        let v = self.get("/api/v1/instances")?;
        Ok(v["items"]
            .as_array()
            .context("items")?
            .iter()
            .filter(|i| i["status"]["state"] == "ready" && i["spec"]["stop"] != true)
            .filter_map(|i| {
                Some((
                    i["metadata"]["name"].as_str()?.to_owned(),
                    (
                        i["spec"]["node"].as_str()?.to_owned(),
                        i["status"]["address"].as_str()?.parse().ok()?,
                        u32::try_from(i["status"]["pid"].as_u64()?).ok()?,
                    ),
                ))
            })
            .collect())
    }
}

/// Starts the server and three agents on a fresh fabric.
fn start_cluster(tag: &str) -> Result<Cluster> {
    let dir = TempDir::new(&format!("berth-fabric-{tag}"))?;
    let prefix = format!("bf{}{tag}", std::process::id() % 100_000);
    let mut fabric = Fabric::new(&prefix)?;
    let server = fabric.add_host("srv", 1)?;
    let data = dir.path().join("server");
    let listen = format!("{}:{API_PORT}", server.address);
    let s = fabric.spawn(
        &server,
        &berth_bin(),
        &[
            "server",
            "--listen",
            &listen,
            "--data-dir",
            data.to_str().context("path")?,
            "--cluster-cidr",
            "10.244.0.0/16",
            "--service-cidr",
            "10.96.0.0/16",
            "--node-lease-seconds",
            "2",
            "--node-eviction-seconds",
            "2",
        ],
    )?;
    first_line(fabric.child(s))?;
    let admin = admin_token(&data)?;
    // A resolver for the world outside the cluster, on the fabric: the nodes forward to it.
    let zone = dir.path().join("upstream.yaml");
    std::fs::write(
        &zone,
        "origin: example.test\nservices:\n  - name: www\n    namespace: default\n    vip: 192.0.2.80\n",
    )?;
    let outside = Host {
        netns: fabric.netns.clone(),
        link: String::new(),
        address: std::net::Ipv4Addr::new(10, 250, 0, 254),
    };
    let u = fabric.spawn(
        &outside,
        &berth_bin(),
        &[
            "dns",
            "--zone",
            zone.to_str().context("path")?,
            "--listen",
            "10.250.0.254:53",
        ],
    )?;
    first_line(fabric.child(u)).context("upstream dns")?;
    let mut cluster = Cluster {
        server: server.clone(),
        nodes: Vec::new(),
        node_names: Vec::new(),
        agents: Vec::new(),
        admin,
        fabric,
        _dir: dir,
    };
    for i in 1..=3u8 {
        let name = format!("{prefix}n{i}");
        let host = cluster.fabric.add_host(&format!("n{i}"), 10 + i)?;
        cluster.fabric.nodes.push(name.clone());
        let body =
            serde_json::json!({"name": format!("node-{name}"), "role": "node", "node": name})
                .to_string();
        let (status, answer) = cluster.api("POST", "/api/v1/tokens", Some(&body))?;
        ensure!(status == 200, "token: {status} {answer}");
        let token: serde_json::Value = serde_json::from_str(&answer)?;
        let token = token["token"].as_str().context("token")?.to_owned();
        let node_dir = cluster._dir.path().join(&name);
        let (addr, server_url) = (
            host.address.to_string(),
            format!("http://{}:{API_PORT}", server.address),
        );
        let (ingress, ingress_tls, dns) = (
            format!("{addr}:80"),
            format!("{addr}:443"),
            format!("{addr}:53"),
        );
        let bin = node_dir.join("cni-bin");
        let conf = node_dir.join("cni-conf");
        let args: Vec<String> = [
            "--server",
            &server_url,
            "--token",
            &token,
            "agent",
            "--node",
            &name,
            "--address",
            &addr,
            "--ingress",
            &ingress,
            "--ingress-tls",
            &ingress_tls,
            "--dns",
            &dns,
            "--data-dir",
            node_dir.to_str().context("path")?,
            "--network",
            "cni",
            "--cni-bin-dir",
            bin.to_str().context("path")?,
            "--cni-conf-dir",
            conf.to_str().context("path")?,
            "--heartbeat-seconds",
            "1",
            "--drain-seconds",
            "1",
            "--vip-listeners",
            "--dns-upstream",
            "10.250.0.254:53",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain(["--label".to_owned(), format!("zone=z{i}")])
        .collect();
        let a = cluster.start_agent(&host, &args)?;
        cluster.agents.push((args, a));
        cluster.nodes.push(host);
        cluster.node_names.push(name);
    }
    Ok(cluster)
}

fn first_line(child: &mut std::process::Child) -> Result<String> {
    use std::io::BufRead;
    let out = child.stdout.take().context("stdout")?;
    let mut out = std::io::BufReader::new(out);
    let mut line = String::new();
    out.read_line(&mut line)?;
    ensure!(
        !line.is_empty(),
        "process exited before printing its banner"
    );
    // The rest is drained, so that later output never meets a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Ok(line)
}

/// A self-signed CA and a certificate for `host` signed by it: (ca pem, cert pem, key pem).
fn certificate(host: &str) -> Result<(String, String, String)> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec![host.to_owned()])?.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

fn manifest(cert: &str, key: &str) -> String {
    serde_json::json!([
        {"kind": "App", "metadata": {"name": "hello", "namespace": "default"}, "spec": {
            "replicas": 6,
            "template": {
                "command": "berth", "args": ["hello-server"],
                "resources": {"cpu": "50m", "memory": "64Mi"},
                "ports": [{"name": "http", "port": 8080}],
                "readinessProbe": {"http": {"path": "/healthz", "port": "http"}, "periodSeconds": 1}
            }
        }},
        {"kind": "Service", "metadata": {"name": "hello", "namespace": "default"}, "spec": {
            "app": "hello",
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "appProtocol": "http"}]
        }},
        {"kind": "Secret", "metadata": {"name": "hello-tls", "namespace": "default"},
         "type": "tls", "data": {"tls.crt": cert, "tls.key": key}},
        {"kind": "Secret", "metadata": {"name": "hello-sticky", "namespace": "default",
            "labels": {"berth.io/data-plane": "true"}},
         "data": {"key": "a sticky key every node shares"}},
        {"kind": "Route", "metadata": {"name": "hello", "namespace": "default"}, "spec": {
            "hosts": ["hello.example.com"],
            "tls": {"secret": "hello-tls"},
            "sticky": {"cookie": "hello", "secret": "hello-sticky"},
            "rules": [{"path": "/", "service": "hello", "port": "http"}]
        }}
    ])
    .to_string()
}

/// The instance a hello-server answer names ("hello from NAME").
fn instance_of(body: &str) -> String {
    body.trim().trim_start_matches("hello from ").to_owned()
}

/// GET / over plain HTTP from inside namespace `netns`; the body (an instance name).
fn get_in(netns: &str, addr: SocketAddr, host: &str) -> Result<String> {
    in_netns(netns, || -> Result<String> {
        let (status, body) = berth_tests::http(addr, "GET", host, "/", None)?;
        ensure!(status == 200, "{addr}: {status} {body}");
        Ok(instance_of(&body))
    })?
}

/// GET / over TLS with SNI `host`, trusting only `ca_pem`, from inside `netns`.
fn https_get_in(netns: &str, addr: SocketAddr, host: &str, ca_pem: &str) -> Result<String> {
    Ok(https_request(netns, addr, host, ca_pem, None)?.0)
}

/// GET / over TLS with an optional cookie: the instance that answered and the sticky cookie
/// set, if any.
fn https_request(
    netns: &str,
    addr: SocketAddr,
    host: &str,
    ca_pem: &str,
    cookie: Option<&str>,
) -> Result<(String, Option<String>)> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())?;
    in_netns(netns, || -> Result<(String, Option<String>)> {
        let conn = rustls::ClientConnection::new(Arc::new(config), name)?;
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let cookie = cookie
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default();
        write!(
            tls,
            "GET / HTTP/1.1\r\nHost: {host}\r\n{cookie}Connection: close\r\n\r\n"
        )?;
        let mut answer = Vec::new();
        // A close without close_notify is fine for a Connection: close answer.
        let _ = tls.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer).into_owned();
        ensure!(answer.starts_with("HTTP/1.1 200"), "{addr}: {answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let set_cookie = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("set-cookie: ")
                    .or(l.strip_prefix("Set-Cookie: "))
            })
            .and_then(|c| c.split(';').next())
            .map(str::to_owned);
        Ok((instance_of(body), set_cookie))
    })?
}

/// `getent hosts NAME` inside the mount and network namespaces of process `pid`: the system
/// resolver with the instance's own resolv.conf.
fn resolve_inside(pid: u32, name: &str) -> Result<Vec<IpAddr>> {
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "-m", "getent", "hosts", name])
        .output()
        .context("running nsenter (util-linux)")?;
    ensure!(
        out.status.success(),
        "getent hosts {name} inside pid {pid}: exit {:?} {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect())
}

#[test]
fn three_nodes_serve_a_service_by_address_name_vip_and_tls_ingress() -> Result<()> {
    if !can_create_namespaces() {
        eprintln!("skipped: needs root and iproute2 to create network namespaces");
        return Ok(());
    }
    let mut c = start_cluster("a")?;
    let names: BTreeSet<String> = c.node_names.iter().cloned().collect();
    wait_for(
        Duration::from_secs(30),
        "3 nodes ready with pod subnets",
        || {
            let v = c.get("/api/v1/nodes").ok()?;
            let ready: BTreeSet<String> = v["items"]
                .as_array()?
                .iter()
                .filter(|n| n["status"]["ready"] == true && n["spec"]["podSubnet"].is_string())
                .filter(|n| n["metadata"]["labels"]["zone"].is_string())
                .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
                .collect();
            (ready == names).then_some(())
        },
    )?;
    let (ca, cert, key) = certificate("hello.example.com")?;
    let (status, body) = c.api("POST", "/api/v1/apply", Some(&manifest(&cert, &key)))?;
    ensure!(status == 200, "apply: {status} {body}");

    let ready = wait_for(
        Duration::from_secs(60),
        "6 ready instances on 3 nodes",
        || {
            let r = c.ready().ok()?;
            let nodes: BTreeSet<&String> = r.values().map(|(n, _, _)| n).collect();
            (r.len() == 6 && nodes.len() == 3).then_some(r)
        },
    )?;

    // Across nodes, by address: from inside an instance on one node to one on another.
    let (a_name, (a_node, _, a_pid)) = ready.iter().next().context("an instance")?;
    let (b_name, (_, b_addr, _)) = ready
        .iter()
        .find(|(_, (n, _, _))| n != a_node)
        .context("an instance on another node")?;
    let a_netns = format!("berth-{a_node}-default-{a_name}");
    let answer = get_in(&a_netns, SocketAddr::new(*b_addr, 8080), "x")?;
    ensure!(answer == *b_name, "{b_name} answered {answer:?}");

    // CPU and memory limits through cgroups, where the machine has them (50m, 64Mi).
    let cgroup = format!("berth/{a_node}/default.{a_name}");
    let own = std::fs::read_to_string(format!("/proc/{a_pid}/cgroup"))?;
    let root = std::path::Path::new("/sys/fs/cgroup");
    let read = |p: std::path::PathBuf| std::fs::read_to_string(&p).map(|v| v.trim().to_owned());
    if root.join("cgroup.controllers").is_file() {
        ensure!(
            own.contains(&format!("0::/{cgroup}")),
            "not in {cgroup}: {own}"
        );
        ensure!(read(root.join(&cgroup).join("memory.max"))? == (64u64 << 20).to_string());
        ensure!(read(root.join(&cgroup).join("cpu.max"))? == "5000 100000");
    } else if root.join("memory/cgroup.procs").is_file() {
        ensure!(
            own.lines()
                .any(|l| l.contains(":memory:") && l.ends_with(&format!("/{cgroup}"))),
            "not in memory {cgroup}: {own}"
        );
        let mem = root
            .join("memory")
            .join(&cgroup)
            .join("memory.limit_in_bytes");
        ensure!(read(mem)? == (64u64 << 20).to_string());
        let cpu = root.join("cpu").join(&cgroup).join("cpu.cfs_quota_us");
        ensure!(read(cpu)? == "5000");
    } else {
        eprintln!("no cgroups on this machine: limits not checked");
    }

    // Its own host name, in its own UTS namespace, resolving to its own address.
    let out = std::process::Command::new("nsenter")
        .args(["-t", &a_pid.to_string(), "-u", "hostname"])
        .output()
        .context("running nsenter (util-linux)")?;
    let hostname = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure!(hostname == *a_name, "host name {hostname:?}, not {a_name}");
    let a_addr = ready[a_name].1;
    let own = resolve_inside(*a_pid, a_name)?;
    ensure!(
        own == vec![a_addr],
        "{a_name} resolved to {own:?} inside, not {a_addr}"
    );

    // By name, through the instance's resolv.conf and the system resolver; then via the VIP.
    let svc = c.get("/api/v1/namespaces/default/services/hello")?;
    let vip: IpAddr = svc["status"]["vip"]
        .as_str()
        .context("service has a VIP")?
        .parse()?;
    for name in ["hello", "hello.default", "hello.default.svc.berth.local"] {
        // Eventually, as everything the node learns by watches; the first try almost always
        // answers, and a late answer is reported.
        let started = std::time::Instant::now();
        let mut last = String::new();
        wait_for(
            Duration::from_secs(15),
            &format!("{name} resolving to {vip} inside an instance"),
            || match resolve_inside(*a_pid, name) {
                Ok(r) if r == vec![vip] => Some(()),
                Ok(r) => {
                    last = format!("resolved to {r:?}");
                    None
                }
                Err(e) => {
                    last = format!("{e:#}");
                    None
                }
            },
        )
        .with_context(|| format!("last try: {last}"))?;
        if started.elapsed() > Duration::from_secs(1) {
            eprintln!("{name} resolved after {:?} ({last})", started.elapsed());
        }
    }
    // Names outside the cluster zone: forwarded by the node's DNS to its upstream.
    let world = resolve_inside(*a_pid, "www.default.svc.example.test")?;
    ensure!(
        world == vec![IpAddr::from([192, 0, 2, 80])],
        "forwarded name resolved to {world:?}"
    );
    let mut via_vip = BTreeSet::new();
    for _ in 0..12 {
        via_vip.insert(get_in(&a_netns, SocketAddr::new(vip, 80), "hello")?);
    }
    ensure!(via_vip.len() >= 3, "the VIP spread over only {via_vip:?}");

    // SRV lists all 6, from the node's DNS on the pod gateway.
    let gateway = in_netns(&a_netns, || -> Result<IpAddr> {
        let out = std::process::Command::new("ip")
            .args(["-4", "route", "show", "default"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .nth(2)
            .and_then(|g| g.parse().ok())
            .with_context(|| format!("no default route: {text}"))
    })??;
    let srv = in_netns(&a_netns, || {
        dns_query(
            SocketAddr::new(gateway, 53),
            &format!("_http._tcp.hello.default.svc.{ZONE}"),
            RecordType::SRV,
        )
    })??;
    let targets: BTreeSet<String> = srv
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.target.to_string()),
            _ => None,
        })
        .collect();
    ensure!(targets.len() == 6, "SRV targets: {targets:?}");

    // Ingress with TLS on every node, from outside the nodes (the fabric).
    for host in &c.nodes {
        let body = https_get_in(
            &c.fabric.netns,
            SocketAddr::new(IpAddr::V4(host.address), 443),
            "hello.example.com",
            &ca,
        )?;
        ensure!(
            ready.contains_key(&body),
            "{} answered {body:?}",
            host.netns
        );
    }

    // Sticky sessions across nodes: the cookie node 1 issued pins the client on node 2 too.
    let ingress = |i: usize| SocketAddr::new(IpAddr::V4(c.nodes[i].address), 443);
    let (first, cookie) =
        https_request(&c.fabric.netns, ingress(0), "hello.example.com", &ca, None)?;
    let cookie = cookie.context("no sticky cookie")?;
    for i in [1, 2, 0, 1] {
        let (again, _) = https_request(
            &c.fabric.netns,
            ingress(i),
            "hello.example.com",
            &ca,
            Some(&cookie),
        )?;
        ensure!(
            again == first,
            "node {i} sent the client to {again}, not {first}"
        );
    }

    // Node 1's agent crashes and comes back: it adopts its running instances (same processes,
    // still ready, still served) instead of restarting them.
    let n1 = c.node_names[0].clone();
    let before: BTreeMap<String, u32> = c
        .ready()?
        .into_iter()
        .filter(|(_, (n, _, _))| *n == n1)
        .map(|(name, (_, _, pid))| (name, pid))
        .collect();
    ensure!(!before.is_empty(), "no instance on {n1}");
    let (args, child) = c.agents[0].clone();
    c.fabric.child(child).kill()?;
    c.fabric.child(child).wait()?;
    // While it is down, a sandbox no instance owns appears (a crash between CNI ADD and the
    // status report would leave one): the restarted agent removes it.
    let ghost = format!("berth-{n1}-default-ghost");
    berth_tests::netns::ip(&["netns", "add", &ghost])?;
    let host = c.nodes[0].clone();
    let restarted = c.start_agent(&host, &args)?;
    c.agents[0].1 = restarted;
    std::thread::sleep(Duration::from_secs(3));
    let after: BTreeMap<String, u32> = c
        .ready()?
        .into_iter()
        .filter(|(_, (n, _, _))| *n == n1)
        .map(|(name, (_, _, pid))| (name, pid))
        .collect();
    ensure!(
        before == after,
        "after the agent restart: {before:?} became {after:?}"
    );
    wait_for(
        Duration::from_secs(10),
        "the orphaned sandbox removed",
        || (!std::path::Path::new("/run/netns").join(&ghost).exists()).then_some(()),
    )?;
    for pid in after.values() {
        ensure!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is gone"
        );
    }
    let body = https_get_in(
        &c.fabric.netns,
        SocketAddr::new(IpAddr::V4(c.nodes[0].address), 443),
        "hello.example.com",
        &ca,
    )?;
    ensure!(
        ready.contains_key(&body),
        "after the restart, node 1 answered {body:?}"
    );

    // Node 3 loses its link: its instances move to the others, and every remaining node's
    // ingress stops sending to them.
    let lost = &c.node_names[2];
    c.fabric.cut(&c.nodes[2])?;
    let moved = wait_for(
        Duration::from_secs(60),
        "6 ready instances on the 2 others",
        || {
            let r = c.ready().ok()?;
            (r.len() == 6 && r.values().all(|(n, _, _)| n != lost)).then_some(r)
        },
    )?;
    for host in &c.nodes[..2] {
        let addr = SocketAddr::new(IpAddr::V4(host.address), 443);
        // Endpoints reach every node within the propagation time; then no error at all.
        wait_for(
            Duration::from_secs(10),
            "the ingress serves only moved instances",
            || {
                let b = https_get_in(&c.fabric.netns, addr, "hello.example.com", &ca).ok()?;
                moved.contains_key(&b).then_some(())
            },
        )?;
        // And its DNS lists exactly the moved instances.
        let dns = SocketAddr::new(IpAddr::V4(host.address), 53);
        let srv_name = format!("_http._tcp.hello.default.svc.{ZONE}");
        wait_for(
            Duration::from_secs(10),
            "DNS lists only moved instances",
            || {
                let m = in_netns(&c.fabric.netns, || {
                    dns_query(dns, &srv_name, RecordType::SRV)
                })
                .ok()?
                .ok()?;
                let targets: BTreeSet<String> = m
                    .answers
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(s) => s.target.to_string().split('.').next().map(str::to_owned),
                        _ => None,
                    })
                    .collect();
                (targets == moved.keys().cloned().collect()).then_some(())
            },
        )?;
        for _ in 0..20 {
            let body = https_get_in(&c.fabric.netns, addr, "hello.example.com", &ca)?;
            if !moved.contains_key(&body) {
                bail!(
                    "{} answered {body:?}, not one of the moved instances",
                    host.netns
                );
            }
        }
    }
    Ok(())
}

/// `berth dev --network cni` as root, inside a namespace of its own: the example app runs in
/// network sandboxes with pod addresses, and the ingress and the VIP both reach it.
#[test]
fn dev_with_cni_runs_instances_in_their_own_namespaces() -> Result<()> {
    if !can_create_namespaces() {
        eprintln!("skipped: needs root and iproute2 to create network namespaces");
        return Ok(());
    }
    let dir = TempDir::new("berth-dev-cni")?;
    let prefix = format!("bf{}d", std::process::id() % 100_000);
    let mut fabric = Fabric::new(&prefix)?;
    let host = fabric.add_host("dev", 1)?;
    let node = format!("{prefix}dev");
    fabric.nodes.push(node.clone());
    let manifest = berth_tests::repo_root().join("examples/hello.yaml");
    let data = dir.path().join("data");
    let config = dir.path().join("cli.yaml");
    let d = fabric.spawn_env(
        &host,
        &berth_bin(),
        &[
            "dev",
            "--network",
            "cni",
            "-f",
            manifest.to_str().context("path")?,
            "--data-dir",
            data.to_str().context("path")?,
            "--node",
            &node,
            "--api",
            "127.0.0.1:7070",
            "--ingress",
            "127.0.0.1:8080",
            "--dns",
            "127.0.0.1:5353",
        ],
        &[("BERTH_CONFIG", config.to_str().context("path")?)],
    )?;
    first_line(fabric.child(d))?;
    let admin = admin_token(&data)?;
    let api: SocketAddr = "127.0.0.1:7070".parse()?;
    let instances = wait_for(
        Duration::from_secs(60),
        "3 ready instances with pod addresses",
        || {
            let (_, body) = in_netns(&host.netns, || {
                http_with_token(api, "GET", "berth", "/api/v1/instances", None, Some(&admin))
            })
            .ok()?
            .ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let ready: BTreeMap<String, String> = v["items"]
                .as_array()?
                .iter()
                .filter(|i| i["status"]["state"] == "ready")
                .filter_map(|i| {
                    Some((
                        i["metadata"]["name"].as_str()?.to_owned(),
                        i["status"]["address"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            (ready.len() == 3 && ready.values().all(|a| a.starts_with("10.244."))).then_some(ready)
        },
    )?;
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let body = in_netns(&host.netns, || {
            berth_tests::http_get("127.0.0.1:8080".parse()?, "hello.localhost", "/")
        })??;
        ensure!(body.0 == 200, "ingress: {body:?}");
        seen.insert(instance_of(&body.1));
    }
    ensure!(
        seen == instances.keys().cloned().collect(),
        "ingress reached {seen:?} of {instances:?}"
    );

    ensure!(
        !reservations(&data.join("ipam")).is_empty(),
        "the IPAM store does not show reservations where this test looks"
    );

    // Deleting the app stops its instances: drain, SIGTERM, CNI DEL, namespace removed, and
    // the addresses go back to the pool.
    let (status, body) = in_netns(&host.netns, || {
        http_with_token(
            api,
            "DELETE",
            "berth",
            "/api/v1/namespaces/default/apps/hello",
            None,
            Some(&admin),
        )
    })??;
    ensure!(status == 200, "delete: {status} {body}");
    let sandboxes = || -> usize {
        std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("berth-{node}-"))
            })
            .count()
    };
    wait_for(Duration::from_secs(30), "every sandbox removed", || {
        (sandboxes() == 0).then_some(())
    })?;
    let reserved = reservations(&data.join("ipam"));
    ensure!(reserved.is_empty(), "reservations left: {reserved:?}");
    Ok(())
}

/// The IPAM files holding a reservation of the example app.
fn reservations(ipam: &std::path::Path) -> Vec<String> {
    walk(ipam)
        .into_iter()
        // Scratch files of the store's atomic replace are not state.
        .filter(|p| p.extension().is_none_or(|e| e != "tmp"))
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("default.hello-")))
        .map(|p| p.display().to_string())
        .collect()
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
