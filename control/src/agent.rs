//! The node agent: registers its node, runs the instances placed on it, and feeds the node's
//! proxy and DNS server from watches of services, endpoints and routes.

pub mod dataplane;
mod logs;
mod probe;
mod runtime;

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
use crate::client::{Cache, Client, informer};

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
}

/// The data plane the agent feeds.
#[derive(Clone)]
pub struct DataPlane {
    /// The node's L7 proxy.
    pub proxy: berth_proxy::Proxy,
    /// The node's DNS server.
    pub dns: berth_dns::DnsServer,
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
        metadata: Metadata::new("", &cfg.node),
        spec: NodeSpec {
            address: cfg.address,
            cpu_millis: cpus * 1000,
            memory_bytes: memory_bytes(),
            max_instances: 110,
            unschedulable: false,
            log_port: Some(log_port),
        },
        status: NodeStatus::default(),
    });
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
    let instances = informer(client.clone(), Kind::Instance, watches.clone());
    let services = informer(client.clone(), Kind::Service, watches.clone());
    let endpoints = informer(client.clone(), Kind::Endpoints, watches.clone());
    let routes = informer(client.clone(), Kind::Route, watches.clone());

    let feeder = tokio::spawn(feed_data_plane(
        plane,
        cfg.zone.clone(),
        services,
        endpoints,
        routes,
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
    let ctx = Arc::new(runtime::Ctx {
        client: client.clone(),
        node: cfg.node.clone(),
        address: cfg.address,
        path,
        log_dir: cfg.data_dir.join("logs"),
        drain: cfg.drain,
        grace: cfg.grace,
    });
    let mut runtime = Runtime {
        ctx,
        supervisors: HashMap::new(),
    };
    let mut instances = instances;
    loop {
        let cache = instances.borrow_and_update().clone();
        runtime.reconcile(&cache).await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = instances.changed() => if r.is_err() { break },
        }
    }
    tracing::info!(instances = runtime.supervisors.len(), "stopping instances");
    runtime.stop_all().await;
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
                    let task = tokio::spawn(runtime::supervise(self.ctx.clone(), inst.clone(), rx));
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

/// Rebuilds the proxy config and DNS zone whenever services, endpoints or routes change, and
/// swaps them in when they differ from what is served.
async fn feed_data_plane(
    plane: DataPlane,
    zone: String,
    mut services: watch::Receiver<Arc<Cache>>,
    mut endpoints: watch::Receiver<Arc<Cache>>,
    mut routes: watch::Receiver<Arc<Cache>>,
    shutdown: CancellationToken,
) {
    let mut last_proxy = None;
    let mut last_zone = None;
    loop {
        let (s, e, r) = (
            services.borrow_and_update().clone(),
            endpoints.borrow_and_update().clone(),
            routes.borrow_and_update().clone(),
        );
        let config = dataplane::proxy_config(&r, &s, &e);
        if last_proxy.as_ref() != Some(&config) {
            match plane.proxy.apply(config.clone()) {
                Ok(()) => {
                    tracing::debug!(revision = plane.proxy.revision(), "proxy config applied");
                    last_proxy = Some(config);
                }
                Err(err) => {
                    tracing::error!(error = %err, "proxy refused the config; keeping the previous one")
                }
            }
        }
        let z = dataplane::dns_zone(&zone, &s, &e);
        if last_zone.as_ref() != Some(&z) {
            match plane.dns.apply(z.clone()) {
                Ok(()) => {
                    tracing::debug!(revision = plane.dns.revision(), "dns zone applied");
                    last_zone = Some(z);
                }
                Err(err) => {
                    tracing::error!(error = %err, "dns refused the zone; keeping the previous one")
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = services.changed() => if r.is_err() { return },
            r = endpoints.changed() => if r.is_err() { return },
            r = routes.changed() => if r.is_err() { return },
        }
    }
}
