//! The node agent: registers its node, runs the instances placed on it, and feeds the node's
//! proxy and DNS server from watches of services, endpoints and routes.

pub mod cgroups;
pub mod dataplane;
mod hollow;
mod logs;
pub mod network;
mod probe;
mod runtime;
pub mod sandbox;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{InstanceState, Kind, Metadata, Node, NodeSpec, NodeStatus, Object};
use crate::client::{Cache, Client, Filter, informer, informer_filtered};

pub use runtime::Stop;

/// How an agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// API server, e.g. `http://127.0.0.1:7070`.
    pub server: String,
    /// The node's API token.
    pub token: Option<String>,
    /// CA certificate of an https API server.
    pub ca: Option<PathBuf>,
    /// Node name.
    pub node: String,
    /// The node's address; instances listen on it in host-port mode.
    pub address: IpAddr,
    /// Where logs of instances go.
    pub data_dir: PathBuf,
    /// Directory put first on instances' PATH (the berth binary's own by default).
    pub exec_dir: Option<PathBuf>,
    /// Time between an instance leaving endpoints and its SIGTERM.
    pub drain: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// The cluster DNS zone.
    pub zone: String,
    /// Time between heartbeats (the server's node lease should be a few of them).
    pub heartbeat: Duration,
    /// CNI mode (root): instances in their own network namespaces through the CNI plugin,
    /// routes to other nodes' pods, service VIPs. Host-port mode when `None`.
    pub network: Option<network::NetworkOptions>,
    /// Labels of the node.
    pub labels: std::collections::BTreeMap<String, String>,
    /// In CNI mode, leave instances running when the agent stops (a restarted agent adopts
    /// them); otherwise they are stopped with it (`berth dev`).
    pub leave_running: bool,
    /// A hollow node (kubemark-like): instances are reported Ready with made-up addresses and
    /// no process runs; the proxy and DNS are fed as on a real node.
    pub hollow: bool,
}

/// The data plane the agent feeds.
#[derive(Clone)]
pub struct DataPlane {
    /// The node's L7 proxy.
    pub proxy: berth_proxy::Proxy,
    /// The node's DNS server.
    pub dns: berth_dns::DnsServer,
    /// What the proxy serves besides routes (VIP listeners).
    pub options: dataplane::Options,
}

/// The node's hostname, or `node` if it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| crate::api::is_dns_label(h))
        .unwrap_or_else(|| "node".to_owned())
}

fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(1 << 30, |kb| kb * 1024)
}

async fn register(
    client: &Client,
    cfg: &AgentConfig,
    log_port: u16,
    shutdown: &CancellationToken,
) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let node = Object::Node(Node {
        metadata: Metadata {
            labels: cfg.labels.clone(),
            ..Metadata::new("", &cfg.node)
        },
        spec: NodeSpec {
            address: cfg.address,
            cpu_millis: cpus * 1000,
            memory_bytes: memory_bytes(),
            max_instances: 110,
            unschedulable: false,
            log_port: Some(log_port),
            // Allocated (and kept across registrations) by control, unless given here.
            pod_subnet: cfg
                .network
                .as_ref()
                .and_then(|n| n.pod_subnet)
                .map(|s| s.to_string()),
            taints: Vec::new(),
        },
        status: NodeStatus::default(),
    });
    let mut node = node;
    if let (true, Object::Node(n)) = (cfg.hollow, &mut node) {
        hollow::capacity(&mut n.spec);
    }
    let mut delay = Duration::from_millis(50);
    loop {
        let attempt = async {
            client.put(&node).await?;
            client
                .put_status(Kind::Node, "", &cfg.node, &ready_status(true))
                .await
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if delay < Duration::from_secs(2) => {
                tracing::debug!(error = %format!("{e:#}"), "registering node; retrying");
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "registering node; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("shut down before the node registered"),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn ready_status(ready: bool) -> NodeStatus {
    NodeStatus {
        ready,
        message: (!ready).then(|| "agent stopped".to_owned()),
        ..NodeStatus::default()
    }
}

/// Reports the node ready every `every` until `shutdown`: the server's node lease expires when
/// these stop.
async fn heartbeat(client: Client, node: String, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = client
            .put_status(Kind::Node, "", &node, &ready_status(true))
            .await
        {
            tracing::warn!(error = %format!("{e:#}"), "heartbeat failed");
        }
    }
}

/// Runs the agent until `shutdown`; then stops every instance and marks the node not ready.
pub async fn run(cfg: AgentConfig, plane: DataPlane, shutdown: CancellationToken) -> Result<()> {
    let mut plane = plane;
    if let Some(n) = &cfg.network {
        // Instances have only the node's DNS: it answers the rest of the world too.
        plane.options.dns_forward = Some(berth_dns::ForwardConfig {
            upstreams: n.dns_upstreams.clone(),
            ..berth_dns::ForwardConfig::default()
        });
    }
    let client = Client::with_tls(&cfg.server, cfg.token.as_deref(), cfg.ca.as_deref())?;
    let log_listener = tokio::net::TcpListener::bind((cfg.address, 0))
        .await
        .with_context(|| format!("binding the log server on {}", cfg.address))?;
    let log_port = log_listener.local_addr()?.port();
    tokio::spawn(logs::serve_logs(
        log_listener,
        cfg.data_dir.join("logs"),
        cfg.token.clone(),
        shutdown.child_token(),
    ));
    register(&client, &cfg, log_port, &shutdown).await?;
    tracing::info!(node = %cfg.node, server = %cfg.server, "node registered");

    let watches = shutdown.child_token();
    tokio::spawn(heartbeat(
        client.clone(),
        cfg.node.clone(),
        cfg.heartbeat,
        watches.clone(),
    ));
    // Only this node's instances, as kubelet watches its pods: a cluster's every status change
    // is not every node's business.
    let instances = informer_filtered(
        client.clone(),
        Kind::Instance,
        Filter::on_node(&cfg.node),
        watches.clone(),
    );
    let services = informer(client.clone(), Kind::Service, watches.clone());
    let services_for_network = services.clone();
    let endpoints = informer(client.clone(), Kind::Endpoints, watches.clone());
    let routes = informer(client.clone(), Kind::Route, watches.clone());
    let secrets = informer(client.clone(), Kind::Secret, watches.clone());

    // The VIPs the node's interface holds: a VIP listener that could not be bound is retried
    // as soon as its address arrives.
    let (vips_tx, vips_rx) = watch::channel(std::collections::BTreeSet::new());
    let feeder = tokio::spawn(feed_data_plane(
        plane.clone(),
        cfg.zone.clone(),
        [services, endpoints, routes, secrets],
        vips_rx,
        watches.clone(),
    ));

    let exec_dir = match &cfg.exec_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .context("locating the berth binary")?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    };
    let path = match std::env::var("PATH") {
        Ok(p) if !p.is_empty() => format!("{}:{p}", exec_dir.display()),
        _ => format!("{}:/usr/local/bin:/usr/bin:/bin", exec_dir.display()),
    };
    let cni = match &cfg.network {
        None => None,
        Some(opts) => Some(
            start_network(
                &client,
                &cfg,
                opts,
                &plane,
                &services_for_network,
                vips_tx,
                &watches,
            )
            .await?,
        ),
    };
    let cgroups = if cni.is_some() {
        let cg = cgroups::Cgroups::detect(std::path::Path::new("/sys/fs/cgroup"), &cfg.node);
        if !cg.available() {
            tracing::warn!("no writable cgroups: instances run without CPU and memory limits");
        }
        cg
    } else {
        cgroups::Cgroups::default()
    };
    let ctx = Arc::new(runtime::Ctx {
        client: client.clone(),
        node: cfg.node.clone(),
        address: cfg.address,
        path,
        log_dir: cfg.data_dir.join("logs"),
        drain: cfg.drain,
        grace: cfg.grace,
        network: cni.clone(),
        cgroups,
    });
    let mut runtime = Runtime {
        ctx,
        supervisors: HashMap::new(),
        hollow: cfg.hollow.then(|| Arc::new(hollow::Hollow::new(&cfg.node))),
    };
    let mut instances = instances;
    let mut cleaned = cni.is_none();
    loop {
        let cache = instances.borrow_and_update().clone();
        if !cleaned && cache.synced {
            if let Some(net) = &cni {
                clean_orphans(net, &cache, &cfg.node).await;
            }
            cleaned = true;
        }
        runtime.reconcile(&cache).await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = instances.changed() => if r.is_err() { break },
        }
    }
    if cfg.leave_running && cni.is_some() {
        // As kubelet and Nomad's client do: the instances keep running and serving, and the
        // next agent adopts them.
        tracing::info!(
            instances = runtime.supervisors.len(),
            "leaving instances running"
        );
        for (_, s) in runtime.supervisors.drain() {
            s.task.abort();
        }
    } else {
        tracing::info!(instances = runtime.supervisors.len(), "stopping instances");
        runtime.stop_all().await;
    }
    watches.cancel();
    let _ = feeder.await;
    let _ = client
        .put_status(Kind::Node, "", &cfg.node, &ready_status(false))
        .await;
    Ok(())
}

struct Supervisor {
    stop: watch::Sender<Stop>,
    task: JoinHandle<()>,
}

struct Runtime {
    ctx: Arc<runtime::Ctx>,
    supervisors: HashMap<String, Supervisor>,
    /// Set on a hollow node: instances are reported, not run.
    hollow: Option<Arc<hollow::Hollow>>,
}

impl Runtime {
    /// Starts what should run here and is not running, stops what should not run.
    async fn reconcile(&mut self, cache: &Cache) {
        if !cache.synced {
            return;
        }
        self.supervisors.retain(|_, s| !s.task.is_finished());
        for (key, o) in &cache.objects {
            let Object::Instance(inst) = &**o else {
                continue;
            };
            if inst.spec.node.as_deref() != Some(self.ctx.node.as_str()) {
                continue;
            }
            match (self.supervisors.get(key), inst.spec.stop) {
                (None, false) => {
                    let (tx, rx) = watch::channel(Stop::No);
                    let task = match &self.hollow {
                        Some(h) => {
                            tokio::spawn(h.clone().supervise(self.ctx.clone(), inst.clone(), rx))
                        }
                        None => {
                            tokio::spawn(runtime::supervise(self.ctx.clone(), inst.clone(), rx))
                        }
                    };
                    self.supervisors
                        .insert(key.clone(), Supervisor { stop: tx, task });
                }
                (Some(s), true) => {
                    s.stop.send_if_modified(|v| {
                        let changed = *v == Stop::No;
                        *v = Stop::Report;
                        changed
                    });
                }
                (None, true) if inst.status.state != InstanceState::Stopped => {
                    // Nothing runs it here (say, the agent restarted): it is stopped already.
                    let mut status = inst.status.clone();
                    status.state = InstanceState::Stopped;
                    status.pid = None;
                    let m = &inst.metadata;
                    if let Err(e) = self
                        .ctx
                        .client
                        .put_status(Kind::Instance, &m.namespace, &m.name, &status)
                        .await
                    {
                        tracing::warn!(instance = %m.name, error = %format!("{e:#}"), "status report failed");
                    }
                }
                _ => {}
            }
        }
        for (key, s) in &self.supervisors {
            if !cache.objects.contains_key(key) {
                let _ = s.stop.send(Stop::Silent);
            }
        }
    }

    async fn stop_all(&mut self) {
        for s in self.supervisors.values() {
            let _ = s.stop.send(Stop::Now);
        }
        for (_, s) in self.supervisors.drain() {
            let _ = s.task.await;
        }
    }
}

/// Keeps the proxy and DNS server in step with services, endpoints, routes and secrets: a full
/// rebuild when services, routes or secrets change, per-service updates when only endpoints do.
/// The watch channels coalesce: a burst of changes that arrives while a step runs makes one
/// more step. With VIP listeners on, the proxy's listeners follow each new config; binds that
/// fail (a VIP not on the node's interface yet) are retried when the network task puts a VIP on
/// the interface, and every second.
async fn feed_data_plane(
    plane: DataPlane,
    zone: String,
    caches: [watch::Receiver<Arc<Cache>>; 4],
    mut vips: watch::Receiver<std::collections::BTreeSet<std::net::IpAddr>>,
    shutdown: CancellationToken,
) {
    let [mut services, mut endpoints, mut routes, mut secrets] = caches;
    let mut feeder = dataplane::Feeder::new(&zone, plane.options.clone());
    let mut listeners = berth_proxy::Listeners::default();
    let mut bind_failures = 0u32;
    let mut vips_open = true;
    loop {
        let inputs = dataplane::Inputs {
            services: services.borrow_and_update().clone(),
            endpoints: endpoints.borrow_and_update().clone(),
            routes: routes.borrow_and_update().clone(),
            secrets: secrets.borrow_and_update().clone(),
        };
        let started = std::time::Instant::now();
        let step = feeder.step(&plane.proxy, &plane.dns, inputs);
        if step != dataplane::Step::Unchanged {
            tracing::debug!(?step, elapsed = ?started.elapsed(), "data plane updated");
        }
        let reshaped = matches!(step, dataplane::Step::Full { proxy: true, .. });
        if plane.options.vip_listeners && (reshaped || bind_failures > 0) {
            match listeners
                .reconcile(&plane.proxy, &plane.proxy.config())
                .await
            {
                Ok(()) => bind_failures = 0,
                Err(e) => {
                    // Said once loudly; the retries every second quietly.
                    if bind_failures == 0 {
                        tracing::warn!(error = %format!("{:#}", anyhow::Error::from(e)), "a VIP listener could not be bound; retrying");
                    } else {
                        tracing::debug!(error = %e, "a VIP listener could not be bound; retrying");
                    }
                    bind_failures = bind_failures.saturating_add(1);
                }
            }
        }
        let retry = bind_failures > 0;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = services.changed() => if r.is_err() { break },
            r = endpoints.changed() => if r.is_err() { break },
            r = routes.changed() => if r.is_err() { break },
            r = secrets.changed() => if r.is_err() { break },
            // The network task put a new VIP on the interface; the sleep covers addresses
            // added by anyone else.
            r = vips.changed(), if retry && vips_open => vips_open = r.is_ok(),
            _ = tokio::time::sleep(Duration::from_secs(1)), if retry => {}
        }
    }
    listeners.stop_all().await;
}

/// Brings up the node's network in CNI mode: waits for the node's pod subnet, bootstraps CNI,
/// serves DNS on the pod gateway address, and keeps routes and VIPs in step.
async fn start_network(
    client: &Client,
    cfg: &AgentConfig,
    opts: &network::NetworkOptions,
    plane: &DataPlane,
    services: &watch::Receiver<Arc<Cache>>,
    vips_tx: watch::Sender<std::collections::BTreeSet<std::net::IpAddr>>,
    shutdown: &CancellationToken,
) -> Result<Arc<sandbox::CniNetwork>> {
    let subnet = match opts.pod_subnet {
        Some(s) => s,
        None => wait_for_subnet(client, &cfg.node, shutdown).await?,
    };
    let gateway = network::gateway(subnet)
        .with_context(|| format!("pod subnet {subnet} has no host address"))?;
    let net = network::bootstrap(opts, subnet, &cfg.data_dir, &cfg.node, gateway, &cfg.zone)?;
    tokio::spawn(serve_dns_on(
        plane.dns.clone(),
        std::net::SocketAddr::new(gateway, opts.dns_port),
        shutdown.clone(),
    ));
    let nodes = informer(client.clone(), Kind::Node, shutdown.clone());
    tokio::spawn(network::run(
        net.ip.clone(),
        cfg.node.clone(),
        opts.vip_interface.clone(),
        nodes,
        services.clone(),
        vips_tx,
        shutdown.clone(),
    ));
    Ok(net)
}

/// The pod subnet control allocated to this node.
async fn wait_for_subnet(
    client: &Client,
    node: &str,
    shutdown: &CancellationToken,
) -> Result<ipnet::IpNet> {
    let started = std::time::Instant::now();
    let mut warned = false;
    loop {
        if let Ok(Some(Object::Node(n))) = client.get(Kind::Node, "", node).await
            && let Some(s) = &n.spec.pod_subnet
        {
            return s
                .parse()
                .with_context(|| format!("node {node}: podSubnet {s:?} is not a CIDR"));
        }
        if !warned && started.elapsed() > Duration::from_secs(10) {
            tracing::warn!(
                node,
                "no pod subnet allocated yet: does the server have a --cluster-cidr?"
            );
            warned = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("shut down before the node got a pod subnet"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Serves the node's DNS on `addr` (the pod gateway) once the address exists: the plugin puts
/// it on the bridge with the first instance.
async fn serve_dns_on(
    dns: berth_dns::DnsServer,
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
) {
    let started = std::time::Instant::now();
    let mut warned = false;
    let listeners = loop {
        match berth_dns::DnsServer::bind(&[addr], 1) {
            Ok(l) => break l,
            Err(e) => {
                // Normal until the first instance brings the bridge up; said once if it lasts.
                if !warned && started.elapsed() > Duration::from_secs(60) {
                    tracing::warn!(%addr, error = %e, "dns not yet bound on the pod gateway; retrying");
                    warned = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    };
    tracing::info!(%addr, "dns serving on the pod gateway");
    if let Err(e) = dns
        .serve_listeners(listeners, async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, %addr, "dns on the pod gateway stopped");
    }
}

/// At start: removes sandboxes no instance of this node owns (a previous agent's leftovers),
/// then runs CNI GC with the attachments of the instances it knows.
async fn clean_orphans(net: &Arc<sandbox::CniNetwork>, cache: &Cache, node: &str) {
    let mine: Vec<crate::api::Instance> = cache
        .objects
        .values()
        .filter_map(|o| match &**o {
            Object::Instance(i) if i.spec.node.as_deref() == Some(node) && !i.spec.stop => {
                Some(i.clone())
            }
            _ => None,
        })
        .collect();
    let keep: std::collections::HashSet<String> = mine.iter().map(|i| net.netns_name(i)).collect();
    for orphan in net.orphans(&keep) {
        tracing::info!(netns = %orphan, "removing an orphaned sandbox");
        net.remove_orphan(&orphan).await;
    }
    if let Err(e) = net.gc(&mine).await {
        tracing::warn!(error = %format!("{e:#}"), "CNI GC");
    }
}
