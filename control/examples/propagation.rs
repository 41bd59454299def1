//! Endpoint propagation benchmark (issue 8), run by `bench/propagation.sh` against a running
//! `berth server` and hollow agents (`berth agent --hollow --proxy-admin ...`).
//!
//! Creates `--services` apps and services of `--instances` instances each, waits until every
//! endpoint is ready, then makes `--rate` endpoint changes a second for `--seconds`: an
//! instance's status goes not-ready (Running), or a not-ready one goes Ready again. For each
//! change it measures the time from just before the status write to the moment EVERY node
//! serves the new state both in DNS (`<instance>.<service>.<ns>.svc.<zone>` A) and in the proxy
//! (the admin `/endpoints?cluster=` dump of the service's cluster). It also watches Endpoints
//! itself, to split each sample into control (status write -> endpoints event on a watch) and
//! the node side (event -> served).
//!
//! Prints `case=propagation endpoints=<n> changes_per_s=<r> p50_ms=<x> p99_ms=<y>` for
//! instances turning ready, then `#` lines with the rest.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth::api::{InstanceState, InstanceStatus, Kind, Object};
use berth::client::Client;
use berth::server::WatchLine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const NS: &str = "default";
/// How often a pending change is checked on every node.
const POLL: Duration = Duration::from_millis(2);
/// A change not served everywhere after this counts as lost.
const GIVE_UP: Duration = Duration::from_secs(30);

struct Args {
    server: String,
    token: Option<String>,
    dns: Vec<SocketAddr>,
    admin: Vec<SocketAddr>,
    zone: String,
    services: usize,
    instances: usize,
    rate: f64,
    seconds: f64,
    batch: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        server: String::new(),
        token: std::env::var("BERTH_TOKEN").ok(),
        dns: Vec::new(),
        admin: Vec::new(),
        zone: "berth.local".into(),
        services: 1000,
        instances: 10,
        rate: 100.0,
        seconds: 30.0,
        batch: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--server" => a.server = value,
            "--dns" => a.dns.push(value.parse().context("--dns")?),
            "--admin" => a.admin.push(value.parse().context("--admin")?),
            "--zone" => a.zone = value,
            "--services" => a.services = value.parse()?,
            "--instances" => a.instances = value.parse()?,
            "--rate" => a.rate = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            "--batch" => a.batch = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.server.is_empty() || a.dns.is_empty() || a.dns.len() != a.admin.len() {
        bail!(
            "usage: --server URL (--dns ADDR --admin ADDR)... [--services N] [--instances N] [--rate R] [--seconds S]"
        );
    }
    Ok(a)
}

fn app_and_service(i: usize, replicas: usize) -> Result<[Object; 2]> {
    let name = format!("s{i}");
    let app = serde_json::json!({
        "kind": "App",
        "metadata": {"namespace": NS, "name": name},
        "spec": {"replicas": replicas, "template": {"command": "true", "ports": [{"name": "http"}]}},
    });
    let svc = serde_json::json!({
        "kind": "Service",
        "metadata": {"namespace": NS, "name": name},
        "spec": {"app": name, "ports": [{"name": "http", "port": 80}]},
    });
    Ok([serde_json::from_value(app)?, serde_json::from_value(svc)?])
}

/// One instance the load toggles.
#[derive(Clone, Debug)]
struct Inst {
    name: String,
    service: String,
    status: InstanceStatus,
}

/// A DNS query for the A records of `name` (RFC 1035 4.1), id `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, A, IN
    q
}

/// Whether `name` has an A record of `address` on the DNS server at `server`.
async fn dns_has(
    sock: &tokio::net::UdpSocket,
    server: SocketAddr,
    name: &str,
    address: IpAddr,
) -> Result<bool> {
    let id = fastrand::u16(..);
    sock.send_to(&dns_query(id, name), server).await?;
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (n, from) = tokio::time::timeout(left, sock.recv_from(&mut buf))
            .await
            .context("dns timeout")??;
        if from != server || n < 12 || u16::from_be_bytes([buf[0], buf[1]]) != id {
            continue; // a late answer to an earlier query
        }
        let rcode = buf[3] & 0x0f;
        let answers = u16::from_be_bytes([buf[6], buf[7]]);
        let IpAddr::V4(v4) = address else {
            bail!("IPv4 only")
        };
        // The answer's RDATA is the address: look for it in the answer section's bytes.
        let found = rcode == 0 && answers > 0 && buf[12..n].windows(4).any(|w| w == v4.octets());
        return Ok(found);
    }
}

/// Whether the proxy whose admin listens at `admin` has `endpoint` in cluster `cluster`.
async fn proxy_has(
    http: &HttpClient<HttpConnector, Empty<Bytes>>,
    admin: SocketAddr,
    cluster: &str,
    endpoint: SocketAddr,
) -> Result<bool> {
    let encoded: String = form_urlencoded::byte_serialize(cluster.as_bytes()).collect();
    let uri = format!("http://{admin}/endpoints?cluster={encoded}");
    let resp = http.get(uri.parse()?).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let want = endpoint.to_string();
    Ok(v["clusters"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["name"] == cluster
                && c["endpoints"]
                    .as_array()
                    .is_some_and(|es| es.iter().any(|e| e["address"] == want.as_str()))
        })
    }))
}

/// One measured change.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    /// Ready (true) or not-ready.
    up: bool,
    /// Status write -> served by every node.
    total: Option<Duration>,
    /// Status write -> the endpoints event on our own watch.
    control: Option<Duration>,
}

/// When a change's status write started, whether it was an up change, and how long until its
/// endpoints event arrived.
type Pending = (Instant, bool, Option<Duration>);

struct Shared {
    /// Pending changes by instance name: when the status write started, and whether it was
    /// an up change; the watch task fills in when the endpoints event arrived.
    watched: Mutex<HashMap<String, Pending>>,
}

/// Waits until every node serves `inst` as `up` says; returns the time from `t0`.
async fn until_served(
    a: &Args,
    http: &HttpClient<HttpConnector, Empty<Bytes>>,
    inst: &Inst,
    up: bool,
    t0: Instant,
    give_up: Duration,
) -> Result<Option<Duration>> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let address = inst.status.address.context("instance without address")?;
    let port = *inst
        .status
        .ports
        .get("http")
        .context("instance without port")?;
    let name = format!("{}.{}.{NS}.svc.{}", inst.name, inst.service, a.zone);
    let cluster = format!("{NS}/{}:http", inst.service);
    let endpoint = SocketAddr::new(address, port);
    let mut dns_done = vec![false; a.dns.len()];
    let mut proxy_done = vec![false; a.admin.len()];
    loop {
        for (i, server) in a.dns.iter().enumerate() {
            if !dns_done[i] {
                dns_done[i] = dns_has(&sock, *server, &name, address).await.unwrap_or(!up) == up;
            }
        }
        for (i, admin) in a.admin.iter().enumerate() {
            if !proxy_done[i] {
                proxy_done[i] = proxy_has(http, *admin, &cluster, endpoint)
                    .await
                    .unwrap_or(!up)
                    == up;
            }
        }
        if dns_done.iter().chain(&proxy_done).all(|d| *d) {
            return Ok(Some(t0.elapsed()));
        }
        if t0.elapsed() > give_up {
            eprintln!(
                "# {} not served everywhere after {give_up:?}: dns {dns_done:?} proxy {proxy_done:?}",
                inst.name
            );
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Follows Endpoints and notes when each pending change shows up in them.
async fn watch_endpoints(client: Client, revision: u64, shared: Arc<Shared>) -> Result<()> {
    let mut stream = client.watch(Kind::Endpoints, None, Some(revision)).await?;
    while let Some(lines) = stream.next_batch().await? {
        let now = Instant::now();
        for l in lines {
            let (WatchLine::Added { object, .. } | WatchLine::Modified { object, .. }) = l else {
                continue;
            };
            let Object::Endpoints(e) = object else {
                continue;
            };
            let mut watched = shared.watched.lock().unwrap_or_else(|p| p.into_inner());
            for (name, (t0, up, seen)) in watched.iter_mut() {
                // Instance names are `<app>-<suffix>`, and app == service here.
                if seen.is_some() || !name.starts_with(&format!("{}-", e.metadata.name)) {
                    continue;
                }
                let present = e.addresses.iter().any(|a| a.instance == *name);
                if present == *up {
                    *seen = Some(now.duration_since(*t0));
                }
            }
        }
    }
    Ok(())
}

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort();
    let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Arc::new(args()?);
    let client = Client::with_token(&a.server, a.token.as_deref())?;

    // The cluster: apps and services in batches (each batch one transaction).
    let started = Instant::now();
    let mut objects = Vec::new();
    for i in 0..a.services {
        objects.extend(app_and_service(i, a.instances)?);
    }
    for chunk in objects.chunks(a.batch * 2) {
        client.apply(chunk).await.context("applying a batch")?;
    }
    let want = a.services * a.instances;
    eprintln!(
        "# created {} apps and services in {:?}",
        a.services,
        started.elapsed()
    );
    let mut last_report = Instant::now();
    let ready = loop {
        let list = client.list(Kind::Endpoints, Some(NS)).await?;
        let n: usize = list
            .items
            .iter()
            .map(|o| match o {
                Object::Endpoints(e) => e.addresses.len(),
                _ => 0,
            })
            .sum();
        if n >= want {
            break list.revision;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("# {n}/{want} endpoints ready after {:?}", started.elapsed());
            last_report = Instant::now();
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("only {n} of {want} endpoints ready after 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("# {want} endpoints ready after {:?}", started.elapsed());

    let mut ready_set: Vec<Inst> = Vec::new();
    for o in client.list(Kind::Instance, Some(NS)).await?.items {
        if let Object::Instance(i) = o
            && i.status.state == InstanceState::Ready
            && !i.spec.stop
        {
            ready_set.push(Inst {
                name: i.metadata.name,
                service: i.spec.app,
                status: i.status,
            });
        }
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: HttpClient<HttpConnector, Empty<Bytes>> =
        HttpClient::builder(TokioExecutor::new()).build(connector);
    // Every node caught up with the last instance before the clock starts.
    let last = ready_set.last().context("no ready instance")?.clone();
    until_served(
        &a,
        &http,
        &last,
        true,
        Instant::now(),
        Duration::from_secs(600),
    )
    .await?
    .context("nodes did not catch up with the initial endpoints")?;
    eprintln!("# every node serves them after {:?}", started.elapsed());

    let shared = Arc::new(Shared {
        watched: Mutex::new(HashMap::new()),
    });
    let watcher = tokio::spawn(watch_endpoints(client.clone(), ready, shared.clone()));

    // The load: each tick one status write; a down change takes a random ready instance out,
    // an up change brings back one whose removal every node already serves.
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let ticks = (a.seconds * a.rate) as usize;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(Inst, Sample)>();
    let mut down_confirmed: Vec<Inst> = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let load_started = Instant::now();
    let mut writes = 0usize;
    let mut in_flight = 0usize;
    let mut next_up = false;
    for _ in 0..ticks {
        interval.tick().await;
        while let Ok((inst, s)) = done_rx.try_recv() {
            in_flight -= 1;
            if !s.up && s.total.is_some() {
                down_confirmed.push(inst);
            } else if s.up {
                ready_set.push(inst);
            }
            samples.push(s);
        }
        let up = next_up && !down_confirmed.is_empty();
        next_up = !next_up;
        let inst = if up {
            down_confirmed.remove(0)
        } else {
            if ready_set.is_empty() {
                continue;
            }
            ready_set.swap_remove(fastrand::usize(..ready_set.len()))
        };
        let mut status = inst.status.clone();
        status.state = if up {
            InstanceState::Ready
        } else {
            InstanceState::Running
        };
        let (client, a, http, shared, tx) = (
            client.clone(),
            a.clone(),
            http.clone(),
            shared.clone(),
            done_tx.clone(),
        );
        writes += 1;
        in_flight += 1;
        tokio::spawn(async move {
            let t0 = Instant::now();
            shared
                .watched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(inst.name.clone(), (t0, up, None));
            let mut sample = Sample {
                up,
                ..Sample::default()
            };
            if let Err(e) = client
                .put_status(Kind::Instance, NS, &inst.name, &status)
                .await
            {
                eprintln!("# status write failed: {e:#}");
            } else {
                sample.total = until_served(&a, &http, &inst, up, t0, GIVE_UP)
                    .await
                    .ok()
                    .flatten();
            }
            sample.control = shared
                .watched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&inst.name)
                .and_then(|(_, _, seen)| seen);
            let _ = tx.send((inst, sample));
        });
    }
    let load_time = load_started.elapsed();
    while in_flight > 0 {
        let Some((_, s)) = done_rx.recv().await else {
            break;
        };
        in_flight -= 1;
        samples.push(s);
    }
    watcher.abort();

    let rate = writes as f64 / load_time.as_secs_f64();
    let mut up: Vec<Duration> = samples
        .iter()
        .filter(|s| s.up)
        .filter_map(|s| s.total)
        .collect();
    let mut down: Vec<Duration> = samples
        .iter()
        .filter(|s| !s.up)
        .filter_map(|s| s.total)
        .collect();
    let mut control: Vec<Duration> = samples.iter().filter_map(|s| s.control).collect();
    let mut node_side: Vec<Duration> = samples
        .iter()
        .filter_map(|s| Some(s.total?.saturating_sub(s.control?)))
        .collect();
    let lost = samples.iter().filter(|s| s.total.is_none()).count();
    println!(
        "case=propagation endpoints={want} changes_per_s={rate:.0} p50_ms={:.1} p99_ms={:.1}",
        pct(&mut up, 0.50),
        pct(&mut up, 0.99)
    );
    println!(
        "# ready samples={} not_ready samples={} lost={lost} (not served everywhere within {GIVE_UP:?})",
        up.len(),
        down.len()
    );
    println!(
        "# not-ready (removal) p50_ms={:.1} p99_ms={:.1}",
        pct(&mut down, 0.50),
        pct(&mut down, 0.99)
    );
    println!(
        "# control (status write -> endpoints event on a watch) p50_ms={:.1} p99_ms={:.1}",
        pct(&mut control, 0.50),
        pct(&mut control, 0.99)
    );
    println!(
        "# nodes (endpoints event -> served by every node's DNS and proxy) p50_ms={:.1} p99_ms={:.1}",
        pct(&mut node_side, 0.50),
        pct(&mut node_side, 0.99)
    );
    Ok(())
}
