//! `berth dev`, `berth server` and `berth agent`: the parts wired into processes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::agent::{self, AgentConfig, DataPlane};
use crate::auth::{Auth, Role};
use crate::client::Client;
use crate::store::Store;
use crate::{controller, manifest, server, signals};

/// Options of `berth dev`.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Manifests applied at start.
    pub file: Option<PathBuf>,
    /// Store and logs; a temporary directory removed at exit when not given.
    pub data_dir: Option<PathBuf>,
    /// API address.
    pub api: SocketAddr,
    /// L7 ingress address.
    pub ingress: SocketAddr,
    /// HTTPS ingress address (routes with TLS), if any.
    pub ingress_tls: Option<SocketAddr>,
    /// DNS address, UDP and TCP.
    pub dns: SocketAddr,
    /// Node name.
    pub node: String,
    /// Cluster DNS zone.
    pub zone: String,
    /// Node subnets and service VIPs.
    pub network: controller::Network,
    /// CNI mode (root): instances in their own network namespaces on a bridge, VIPs served.
    pub cni: bool,
}

async fn bind_tcp(addr: SocketAddr, what: &str, flag: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} to {addr} (choose another with {flag})"))
}

/// Binds DNS (UDP worker sockets and TCP) on one port; with port 0, tries ports until UDP and
/// TCP are both free on the same one.
fn bind_dns(addr: SocketAddr) -> Result<berth_dns::Listeners> {
    let mut last = None;
    for _ in 0..20 {
        match berth_dns::DnsServer::bind(&[addr], 1) {
            Ok(l) => return Ok(l),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("binding DNS (UDP and TCP) to {addr} (choose another with --dns)")
                });
            }
        }
    }
    Err(last.map_or_else(
        || anyhow::anyhow!("no port free for DNS"),
        anyhow::Error::from,
    ))
}

/// The data plane of a node, serving until `shutdown`.
async fn start_data_plane(
    ingress: SocketAddr,
    dns: SocketAddr,
    zone: &str,
    shutdown: &CancellationToken,
) -> Result<(DataPlane, SocketAddr, SocketAddr)> {
    let ingress_listener = bind_tcp(ingress, "ingress proxy", "--ingress").await?;
    let ingress = ingress_listener.local_addr()?;
    let dns_listeners = bind_dns(dns)?;
    let dns_addr = *dns_listeners
        .local_addrs()
        .first()
        .context("DNS bound no address")?;
    let proxy = berth_proxy::Proxy::new(berth_proxy::Config::default())?;
    let dns = berth_dns::DnsServer::new(berth_dns::Zone {
        origin: zone.to_owned(),
        ..berth_dns::Zone::default()
    })?;
    let s = shutdown.clone();
    let p = proxy.clone();
    tokio::spawn(async move {
        if let Err(e) = p
            .serve_http(ingress_listener, async move { s.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "ingress proxy stopped");
        }
    });
    let s = shutdown.clone();
    let d = dns.clone();
    tokio::spawn(async move {
        // One SO_REUSEPORT worker answering from precomputed wire-format answers, and TCP.
        if let Err(e) = d
            .serve_listeners(dns_listeners, async move { s.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "dns stopped");
        }
    });
    Ok((
        DataPlane {
            proxy,
            dns,
            options: Default::default(),
        },
        ingress,
        dns_addr,
    ))
}

/// Serves HTTPS ingress on `addr` until `shutdown`: certificates chosen by SNI from the live
/// config (the routes' TLS secrets), so a secret change applies to the next handshake.
async fn serve_ingress_tls(
    plane: &DataPlane,
    addr: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<SocketAddr> {
    let listener = bind_tcp(addr, "HTTPS ingress", "--ingress-tls").await?;
    let bound = listener.local_addr()?;
    let (p, s) = (plane.proxy.clone(), shutdown.clone());
    tokio::spawn(async move {
        let tls = berth_proxy::ListenerTls::default();
        if let Err(e) = p
            .serve_https(listener, &tls, async move { s.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "HTTPS ingress stopped");
        }
    });
    Ok(bound)
}

/// Starts the API server and the controllers; returns the bound address.
async fn start_server(
    store: Store,
    auth: Arc<Auth>,
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    config: controller::Config,
    shutdown: &CancellationToken,
) -> Result<SocketAddr> {
    let listener = bind_tcp(listen, "API", "--api").await?;
    let addr = listener.local_addr()?;
    let events = Arc::new(crate::events::EventLog::default());
    tokio::spawn(crate::events::run(
        store.clone(),
        events.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(server::run(
        store.clone(),
        auth,
        events,
        listener,
        tls,
        Arc::new(config.network.clone()),
        shutdown.clone(),
    ));
    tokio::spawn(controller::run(store, config, shutdown.clone()));
    Ok(addr)
}

/// `berth dev`: server, one agent and the data plane in one process, until Ctrl-C.
pub async fn dev(opts: DevOptions) -> Result<()> {
    // Read the manifests first: a bad file is refused before anything starts.
    let objects = match &opts.file {
        Some(f) => manifest::load(f)?,
        None => Vec::new(),
    };
    let (data_dir, _temp) = match &opts.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("berth-dev-")
                .tempdir()
                .context("creating a temporary data directory")?;
            (t.path().to_owned(), Some(t))
        }
    };
    let store = Store::open(&data_dir.join("store"))
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    let auth = Arc::new(Auth::open(&data_dir)?);
    let admin = auth
        .token_for(Role::Admin, None)
        .context("the token file has no admin token")?;
    let node_token = match auth.token_for(Role::Node, Some(&opts.node)) {
        Some(t) => t,
        None => auth.create(&format!("node-{}", opts.node), Role::Node, Some(&opts.node))?,
    };
    let servers = CancellationToken::new();
    let api = start_server(
        store,
        auth.clone(),
        opts.api,
        None,
        controller::Config {
            network: opts.network.clone(),
            ..controller::Config::default()
        },
        &servers,
    )
    .await?;
    let (mut plane, ingress, dns) =
        start_data_plane(opts.ingress, opts.dns, &opts.zone, &servers).await?;
    let ingress_tls = match opts.ingress_tls {
        Some(addr) => Some(serve_ingress_tls(&plane, addr, &servers).await?),
        None => None,
    };
    let network = opts.cni.then(|| agent::network::NetworkOptions {
        cni_bin_dir: data_dir.join("cni/bin"),
        cni_conf_dir: data_dir.join("cni/net.d"),
        ..Default::default()
    });
    plane.options.vip_listeners = opts.cni;
    let agent_stop = CancellationToken::new();
    let agent_cfg = AgentConfig {
        server: format!("http://{api}"),
        token: Some(node_token),
        ca: None,
        node: opts.node.clone(),
        address: IpAddr::from([127, 0, 0, 1]),
        data_dir: data_dir.clone(),
        exec_dir: None,
        drain: Duration::from_secs(1),
        grace: Duration::from_secs(5),
        zone: opts.zone.clone(),
        heartbeat: Duration::from_secs(2),
        network,
        hollow: false,
        labels: Default::default(),
        leave_running: false,
    };
    let agent = tokio::spawn(agent::run(agent_cfg, plane, agent_stop.clone()));

    println!(
        "berth dev: API server, agent and data plane of node {:?}",
        opts.node
    );
    println!("  api      http://{api}");
    println!("  ingress  http://{ingress}");
    if let Some(addr) = ingress_tls {
        println!("  ingress  https://{addr} (routes with tls)");
    }
    println!("  dns      {dns} (udp and tcp), zone {}", opts.zone);
    println!("  data     {}", data_dir.display());
    let cli_config = crate::clientconfig::ClientConfig {
        server: Some(format!("http://{api}")),
        token: Some(admin.clone()),
        ca: None,
    };
    match crate::clientconfig::path() {
        Some(p) => match crate::clientconfig::write_for_dev(&p, &cli_config) {
            Ok(true) => println!(
                "  cli      {} (server and admin token for berth)",
                p.display()
            ),
            Ok(false) => println!(
                "  cli      {} holds other settings: pass --server http://{api} and the admin token from {}",
                p.display(),
                auth.path().display()
            ),
            Err(e) => println!("  cli      cannot write its config: {e:#}"),
        },
        None => println!("  cli      admin token in {}", auth.path().display()),
    }
    if !objects.is_empty() {
        let client = Client::with_token(&format!("http://{api}"), Some(&admin))?;
        for a in client.apply(&objects).await? {
            println!("  applied  {} {}", a.object, outcome(a.outcome));
        }
    }
    println!("try:");
    println!("  curl -H 'Host: hello.localhost' http://{ingress}/");
    println!(
        "  dig @{} -p {} _http._tcp.hello.default.svc.{} SRV",
        dns.ip(),
        dns.port(),
        opts.zone
    );
    println!("  berth get instances");
    println!("Ctrl-C stops everything.");

    let mut agent = agent;
    tokio::select! {
        _ = signals::terminated() => {}
        r = &mut agent => {
            // The agent ended on its own: report why, then shut the rest down.
            servers.cancel();
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.context("agent failed")),
                Err(e) => Err(anyhow::anyhow!("agent panicked: {e}")),
            };
        }
    }
    eprintln!("berth dev: stopping instances...");
    agent_stop.cancel();
    // The agent stops every instance (SIGTERM, then SIGKILL after the grace period) before it
    // returns; the servers go last so that it can still report.
    let result = match tokio::time::timeout(Duration::from_secs(15), agent).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(anyhow::anyhow!("agent panicked: {e}")),
        Err(_) => Err(anyhow::anyhow!("instances did not stop within 15 s")),
    };
    servers.cancel();
    // Let the servers close their listeners before the runtime goes away.
    tokio::time::sleep(Duration::from_millis(50)).await;
    eprintln!("berth dev: stopped");
    result
}

fn outcome(o: crate::store::Outcome) -> &'static str {
    match o {
        crate::store::Outcome::Created => "created",
        crate::store::Outcome::Configured => "configured",
        crate::store::Outcome::Unchanged => "unchanged",
    }
}

/// `berth server`: API server, store and controllers.
pub async fn server(
    data_dir: PathBuf,
    listen: SocketAddr,
    tls: Option<(PathBuf, PathBuf)>,
    config: controller::Config,
) -> Result<()> {
    let tls = match tls {
        Some((cert, key)) => Some(crate::tls::server_config(&cert, &key)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let store = Store::open(&data_dir.join("store"))
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    let auth = Arc::new(Auth::open(&data_dir)?);
    let shutdown = CancellationToken::new();
    let api = start_server(store, auth.clone(), listen, tls, config, &shutdown).await?;
    println!(
        "berth server: API on {scheme}://{api}, data in {}, tokens in {}",
        data_dir.display(),
        auth.path().display()
    );
    signals::terminated().await;
    shutdown.cancel();
    Ok(())
}

/// Options of `berth agent`.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The agent's settings.
    pub agent: AgentConfig,
    /// L7 ingress address.
    pub ingress: SocketAddr,
    /// DNS address.
    pub dns: SocketAddr,
    /// The proxy's admin listener, if any.
    pub proxy_admin: Option<SocketAddr>,
    /// HTTPS ingress address (routes with TLS), if any.
    pub ingress_tls: Option<SocketAddr>,
    /// Bind proxy listeners on service VIPs (they must be on a local interface).
    pub vip_listeners: bool,
}

/// `berth agent`: one node.
pub async fn agent(opts: AgentOptions) -> Result<()> {
    let servers = CancellationToken::new();
    let (mut plane, ingress, dns) =
        start_data_plane(opts.ingress, opts.dns, &opts.agent.zone, &servers).await?;
    plane.options.vip_listeners = opts.vip_listeners;
    let https = match opts.ingress_tls {
        Some(addr) => format!(
            ", ingress https://{}",
            serve_ingress_tls(&plane, addr, &servers).await?
        ),
        None => String::new(),
    };
    let admin = match opts.proxy_admin {
        Some(addr) => {
            let listener = bind_tcp(addr, "proxy admin", "--proxy-admin").await?;
            let bound = listener.local_addr()?;
            let (p, s) = (plane.proxy.clone(), servers.clone());
            tokio::spawn(async move {
                if let Err(e) = p
                    .serve_admin(listener, async move { s.cancelled().await })
                    .await
                {
                    tracing::error!(error = %e, "proxy admin stopped");
                }
            });
            format!(", proxy admin http://{bound}")
        }
        None => String::new(),
    };
    println!(
        "berth agent: node {:?}, server {}, ingress http://{ingress}{https}, dns {dns}{admin}",
        opts.agent.node, opts.agent.server
    );
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        signals::terminated().await;
        s.cancel();
    });
    let r = agent::run(opts.agent, plane, stop).await;
    servers.cancel();
    r
}
