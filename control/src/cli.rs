//! The command line: `berth <subcommand>`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::agent::{AgentConfig, hostname};
use crate::api::{Kind, Object};
use crate::client::Client;
use crate::dev::{AgentOptions, DevOptions};
use crate::manifest;

/// berth: a container orchestrator built around its networking layer.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about)]
pub struct Cli {
    /// API server address (default: the config file's, else http://127.0.0.1:7070).
    #[arg(long, global = true, env = "BERTH_SERVER")]
    pub server: Option<String>,
    /// API token (default: the config file's; see `berth dev` and the server's tokens.yaml).
    #[arg(long, global = true, env = "BERTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) that an https server's certificate chains to (default: the config
    /// file's).
    #[arg(long, global = true, env = "BERTH_CA")]
    pub ca: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats of `get`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    /// A table.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API server, one agent and the data plane in one process, for trying berth out.
    Dev {
        /// Manifest file or directory to apply at start.
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// Store and logs (a temporary directory, removed at exit, if not given).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// API address.
        #[arg(long, default_value = "127.0.0.1:7070")]
        api: SocketAddr,
        /// L7 ingress proxy address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        ingress: SocketAddr,
        /// HTTPS ingress address for routes with TLS (off unless given).
        #[arg(long)]
        ingress_tls: Option<SocketAddr>,
        /// DNS server address (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:5353")]
        dns: SocketAddr,
        /// Node name (the host name by default).
        #[arg(long)]
        node: Option<String>,
        /// Cluster DNS zone.
        #[arg(long, default_value = "berth.local")]
        zone: String,
        /// Node subnets and service VIPs.
        #[command(flatten)]
        network: crate::controller::network::NetworkArgs,
        /// `host`: instances on loopback ports, no root needed. `cni` (root): each instance in
        /// its own network namespace through berth-cni, service VIPs (10.96.0.0/16 unless
        /// --service-cidr says otherwise) served by the node's proxy.
        #[arg(long = "network", default_value = "host", value_parser = ["host", "cni"])]
        node_network: String,
    },
    /// Run the API server, store and controllers.
    Server {
        /// Store directory.
        #[arg(long, default_value = "/var/lib/berth")]
        data_dir: PathBuf,
        /// API address.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// Seconds without a heartbeat before a node is marked not ready.
        #[arg(long, default_value_t = 10)]
        node_lease_seconds: u64,
        /// Seconds a node stays not ready before its instances are replaced elsewhere.
        #[arg(long, default_value_t = 30)]
        node_eviction_seconds: u64,
        /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Node subnets and service VIPs.
        #[command(flatten)]
        network: crate::controller::network::NetworkArgs,
    },
    /// Run the agent of one node (the server address comes from --server).
    Agent {
        /// Node name (the host name by default).
        #[arg(long)]
        node: Option<String>,
        /// The node's address.
        #[arg(long, default_value = "127.0.0.1")]
        address: IpAddr,
        /// Logs of instances.
        #[arg(long, default_value = "/var/lib/berth-agent")]
        data_dir: PathBuf,
        /// L7 ingress proxy address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        ingress: SocketAddr,
        /// DNS server address (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:5353")]
        dns: SocketAddr,
        /// Cluster DNS zone.
        #[arg(long, default_value = "berth.local")]
        zone: String,
        /// Seconds a stopping instance keeps serving after it left endpoints.
        #[arg(long, default_value_t = 2)]
        drain_seconds: u64,
        /// Seconds between heartbeats to the server.
        #[arg(long, default_value_t = 2)]
        heartbeat_seconds: u64,
        /// `host`: instances share the node's network on ports the agent picks (no root
        /// needed). `cni`: each instance in its own network namespace through the CNI plugin,
        /// with routes to other nodes' pods and service VIPs (root).
        #[arg(long, default_value = "host", value_parser = ["host", "cni"])]
        network: String,
        /// CNI bin directory (CNI_PATH): berth-cni is installed there.
        #[arg(long, default_value = "/opt/cni/bin")]
        cni_bin_dir: PathBuf,
        /// CNI configuration directory: the node's conflist is written there, and the first
        /// conflist in it is the network instances join.
        #[arg(long, default_value = "/etc/cni/net.d")]
        cni_conf_dir: PathBuf,
        /// The berth-cni binary to install (default: next to berth).
        #[arg(long)]
        cni_plugin: Option<PathBuf>,
        /// The node's pod subnet (default: the one the server allocates).
        #[arg(long)]
        pod_subnet: Option<ipnet::IpNet>,
        /// Dummy interface that holds the service VIPs.
        #[arg(long, default_value = "berth-vip0")]
        vip_interface: String,
        /// Node labels, `key=value`, comma-separated or repeated (for nodeSelector and
        /// constraints).
        #[arg(long, value_delimiter = ',')]
        label: Vec<String>,
        /// In CNI mode, resolvers for names outside the cluster zone, `IP:PORT` (repeatable;
        /// default: the nameservers of /etc/resolv.conf).
        #[arg(long)]
        dns_upstream: Vec<SocketAddr>,
        /// A hollow node (for benchmarks, as Kubernetes' kubemark): run no process, report
        /// every instance Ready at once with a made-up 127.0.0.0/8 address.
        #[arg(long)]
        hollow: bool,
        /// Serve the proxy's admin endpoints (/metrics, /config, /endpoints) on this address.
        #[arg(long)]
        proxy_admin: Option<SocketAddr>,
        /// HTTPS ingress address for routes with TLS (off unless given).
        #[arg(long)]
        ingress_tls: Option<SocketAddr>,
        /// Bind proxy listeners on every service VIP and port (L7 for appProtocol http, else
        /// L4); the VIPs must be on a local interface (CNI mode puts them on the VIP dummy).
        #[arg(long)]
        vip_listeners: bool,
    },
    /// Create or update the objects of a manifest file or directory.
    Apply {
        /// YAML or JSON file (several documents allowed), or a directory.
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// List objects: apps, services, routes, instances, endpoints, nodes.
    Get {
        /// Kind of object.
        kind: String,
        /// One object by name.
        name: Option<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
        /// Only objects whose labels match: `app=hello,tier!=db,canary,!legacy`.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// After the listing, print every change until interrupted.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Print an instance's output (stdout and stderr).
    Logs {
        /// The instance.
        instance: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Only the last lines.
        #[arg(long)]
        tail: Option<u32>,
        /// Keep printing what it writes.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// What happened: instances scheduled, ready, failed; rollouts; nodes lost.
    Events {
        /// Keep printing events as they happen.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Print a shell completion script: `berth completion bash > /etc/bash_completion.d/berth`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Show one object in full, what belongs to it, and what happened to it.
    Describe {
        /// Kind of object.
        kind: String,
        /// Its name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Delete an object.
    Delete {
        /// Kind of object.
        kind: String,
        /// Its name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Set the number of instances of an app.
    Scale {
        /// The app.
        app: String,
        /// Instances wanted.
        #[arg(long)]
        replicas: u32,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Run the L4/L7 proxy alone from a config file (reloads it on SIGHUP and when it changes).
    Proxy {
        /// The config: YAML, or JSON when it ends in .json (berth_proxy::Config; see
        /// proxy/examples/proxy.yaml).
        #[arg(long)]
        config: PathBuf,
        /// Only check the file and say what is wrong with it.
        #[arg(long)]
        check: bool,
    },
    /// Serve a zone file with the DNS server alone (reloads it on SIGHUP).
    Dns {
        /// The zone: YAML or JSON (berth_dns::Zone).
        #[arg(long)]
        zone: PathBuf,
        /// Addresses to serve on, UDP and TCP (repeatable).
        #[arg(long, default_value = "127.0.0.1:5353")]
        listen: Vec<SocketAddr>,
        /// UDP workers, one SO_REUSEPORT socket and thread each.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long)]
        metrics: Option<SocketAddr>,
    },
    /// Manage API tokens (admin).
    Token {
        /// What to do.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Follow, list or undo an app's rollouts.
    Rollout {
        /// What to do.
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// The example app: an HTTP server answering with its instance name.
    HelloServer {
        /// Address to listen on (default: $HOST:$PORT0, as the agent sets them).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
}

/// `berth token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it.
    Create {
        /// Its name (a DNS label).
        name: String,
        /// What it may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// For node tokens: the node.
        #[arg(long)]
        node: Option<String>,
    },
}

/// Roles on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    /// Everything.
    Admin,
    /// Deploy.
    Operator,
    /// Read.
    Viewer,
    /// An agent.
    Node,
}

/// `berth rollout ...`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Follow the rollout of an app's current revision until it completes (exit 0) or fails
    /// (exit 1).
    Status {
        /// The app.
        app: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// The kept revisions of an app.
    History {
        /// The app.
        app: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Roll an app back to a kept revision (the previous one by default).
    Undo {
        /// The app.
        app: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The revision to go back to.
        #[arg(long, default_value_t = 0)]
        to_revision: u32,
    },
}

const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// A client for the server, token and CA the flags, environment or config file name.
fn client(server: &Option<String>, token: &Option<String>, ca: &Option<PathBuf>) -> Result<Client> {
    let config = crate::clientconfig::load()?;
    let server = server
        .clone()
        .or(config.server)
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let ca = ca.clone().or(config.ca);
    Client::with_tls(
        &server,
        token.as_deref().or(config.token.as_deref()),
        ca.as_deref(),
    )
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let (server, token, ca) = (cli.server.clone(), cli.token.clone(), cli.ca.clone());
    let client = || client(&server, &token, &ca);
    match cli.command {
        Command::Dev {
            file,
            data_dir,
            api,
            ingress,
            ingress_tls,
            dns,
            node,
            zone,
            network,
            node_network,
        } => {
            let cni = node_network == "cni";
            crate::dev::dev(DevOptions {
                file,
                data_dir,
                api,
                ingress,
                ingress_tls,
                dns,
                node: node.unwrap_or_else(hostname),
                zone,
                network: network.network(if cni { "10.96.0.0/16" } else { "none" })?,
                cni,
            })
            .await
        }
        Command::Server {
            data_dir,
            listen,
            node_lease_seconds,
            node_eviction_seconds,
            tls_cert,
            tls_key,
            network,
        } => {
            let config = crate::controller::Config {
                node_policy: crate::controller::NodePolicy {
                    lease_seconds: node_lease_seconds,
                    eviction_seconds: node_eviction_seconds,
                },
                network: network.network("10.96.0.0/16")?,
            };
            crate::dev::server(data_dir, listen, tls_cert.zip(tls_key), config).await
        }
        Command::Agent {
            node,
            address,
            data_dir,
            ingress,
            dns,
            zone,
            drain_seconds,
            heartbeat_seconds,
            network,
            cni_bin_dir,
            cni_conf_dir,
            cni_plugin,
            pod_subnet,
            vip_interface,
            label,
            dns_upstream,
            hollow,
            proxy_admin,
            ingress_tls,
            vip_listeners,
        } => {
            let c = client()?;
            let network = (network == "cni").then(|| crate::agent::network::NetworkOptions {
                cni_bin_dir,
                cni_conf_dir,
                plugin: cni_plugin,
                pod_subnet,
                vip_interface,
                dns_upstreams: dns_upstream,
                ..Default::default()
            });
            let mut labels = std::collections::BTreeMap::new();
            for l in &label {
                let (k, v) = l
                    .split_once('=')
                    .with_context(|| format!("--label {l:?}: expected key=value"))?;
                labels.insert(k.to_owned(), v.to_owned());
            }
            // In CNI mode instances reach services by VIP: the node's proxy listens on them.
            let vip_listeners = vip_listeners || network.is_some();
            crate::dev::agent(AgentOptions {
                agent: AgentConfig {
                    server: c.base().to_owned(),
                    token: token.clone(),
                    ca: ca.clone(),
                    node: node.unwrap_or_else(hostname),
                    address,
                    data_dir,
                    exec_dir: None,
                    drain: Duration::from_secs(drain_seconds),
                    grace: Duration::from_secs(10),
                    zone,
                    heartbeat: Duration::from_secs(heartbeat_seconds.max(1)),
                    network,
                    hollow,
                    labels,
                    leave_running: true,
                },
                ingress,
                dns,
                proxy_admin,
                ingress_tls,
                vip_listeners,
            })
            .await
        }
        Command::Apply { file } => {
            let objects = manifest::load(&file)?;
            let client = client()?;
            for a in client
                .apply(&objects)
                .await
                .with_context(|| format!("applying {}", file.display()))?
            {
                println!(
                    "{} {}",
                    a.object,
                    serde_json::to_value(a.outcome)?.as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        Command::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            output,
            selector,
            watch,
        } => {
            let kind: Kind = kind.parse()?;
            let client = client()?;
            let ns = (!all_namespaces && kind.namespaced()).then_some(namespace.as_str());
            let (items, revision) = match &name {
                Some(n) => match client.get(kind, &namespace, n).await? {
                    Some(o) => {
                        let rev = o.meta().revision;
                        (vec![o], rev)
                    }
                    None => bail!("{kind} {namespace}/{n} not found"),
                },
                None => {
                    let list = client.list_selected(kind, ns, selector.as_deref()).await?;
                    (list.items, list.revision)
                }
            };
            print_objects(kind, &items, output, all_namespaces, true)?;
            if watch {
                let mut stream = client
                    .watch_selected(kind, ns, selector.as_deref(), Some(revision))
                    .await?;
                while let Some(lines) = stream.next_batch().await? {
                    for l in lines {
                        use crate::server::WatchLine;
                        let (mut object, gone) = match l {
                            WatchLine::Added { object, .. }
                            | WatchLine::Modified { object, .. } => (object, false),
                            WatchLine::Deleted { object, .. } => (object, true),
                            WatchLine::Bookmark { .. } => continue,
                            WatchLine::Error { message, .. } => bail!("watch ended: {message}"),
                        };
                        if name.as_deref().is_some_and(|n| n != object.meta().name) {
                            continue;
                        }
                        if gone {
                            object.meta_mut().name.push_str(" (deleted)");
                        }
                        print_objects(kind, &[object], output, all_namespaces, false)?;
                    }
                }
            }
            Ok(())
        }
        Command::Describe {
            kind,
            name,
            namespace,
        } => {
            let kind: Kind = kind.parse()?;
            let client = client()?;
            let Some(obj) = client.get(kind, &namespace, &name).await? else {
                bail!("{kind} {namespace}/{name} not found");
            };
            print!("{}", serde_yaml_ng::to_string(&obj)?);
            let label = if kind.namespaced() {
                format!("{kind} {namespace}/{name}")
            } else {
                format!("{kind} {name}")
            };
            // What belongs to it: an app's instances, a service's endpoints.
            let mut related = vec![label.clone()];
            match kind {
                Kind::App => {
                    let sel = format!("app={name}");
                    let items = client
                        .list_selected(Kind::Instance, Some(&namespace), Some(&sel))
                        .await?
                        .items;
                    println!("\nInstances:");
                    print!("{}", table(Kind::Instance, &items, false));
                    related.extend(
                        items
                            .iter()
                            .map(|i| format!("Instance {namespace}/{}", i.meta().name)),
                    );
                }
                Kind::Service => {
                    if let Some(ep) = client.get(Kind::Endpoints, &namespace, &name).await? {
                        println!("\nEndpoints:");
                        print!("{}", table(Kind::Endpoints, &[ep], false));
                    }
                }
                _ => {}
            }
            let events: Vec<_> = client
                .events()
                .await?
                .into_iter()
                .filter(|e| related.contains(&e.object))
                .collect();
            println!("\nEvents:");
            if events.is_empty() {
                println!("  <none in the server's recent events>");
            }
            for e in events {
                println!(
                    "  {:<6} {:<22} {:<34} {}",
                    age(e.time),
                    e.reason,
                    e.object,
                    e.message
                );
            }
            Ok(())
        }
        Command::Logs {
            instance,
            namespace,
            tail,
            follow,
        } => {
            use std::io::Write;
            let mut body = client()?.logs(&namespace, &instance, tail, follow).await?;
            let mut out = std::io::stdout();
            while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                if let Ok(data) = frame?.into_data() {
                    out.write_all(&data)?;
                    out.flush()?;
                }
            }
            Ok(())
        }
        Command::Events { watch } => {
            let client = client()?;
            let print = |e: &crate::events::ClusterEvent| {
                println!(
                    "{:<8} {:<22} {:<40} {}",
                    age(e.time),
                    e.reason,
                    e.object,
                    e.message
                );
            };
            println!("{:<8} {:<22} {:<40} MESSAGE", "AGE", "REASON", "OBJECT");
            for e in client.events().await? {
                print(&e);
            }
            if watch {
                let mut body = client.event_stream().await?;
                let mut buf = Vec::new();
                while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                    if let Ok(data) = frame?.into_data() {
                        buf.extend_from_slice(&data);
                    }
                    while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        match serde_json::from_slice::<crate::events::ClusterEvent>(&line) {
                            Ok(e) => print(&e),
                            Err(_) => print!("{}", String::from_utf8_lossy(&line)),
                        }
                    }
                }
            }
            Ok(())
        }
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "berth", &mut std::io::stdout());
            Ok(())
        }
        Command::Delete {
            kind,
            name,
            namespace,
        } => {
            let kind: Kind = kind.parse()?;
            let client = client()?;
            match client.delete(kind, &namespace, &name).await? {
                Some(_) => println!("{kind} {namespace}/{name} deleted"),
                None => bail!("{kind} {namespace}/{name} not found"),
            }
            Ok(())
        }
        Command::Scale {
            app,
            replicas,
            namespace,
        } => {
            let client = client()?;
            client.scale(&namespace, &app, replicas).await?;
            println!("App {namespace}/{app} scaled to {replicas}");
            Ok(())
        }
        Command::Proxy { config, check } => {
            if check {
                let c = berth_proxy::load_config(&config)?;
                println!(
                    "{}: ok ({} listeners, {} virtual hosts, {} clusters)",
                    config.display(),
                    c.listeners.len(),
                    c.virtual_hosts.len(),
                    c.clusters.len()
                );
                return Ok(());
            }
            berth_proxy::run_from_file(&config, crate::signals::terminated()).await?;
            Ok(())
        }
        Command::Dns {
            zone,
            listen,
            workers,
            metrics,
        } => {
            let listeners = berth_dns::DnsServer::bind(&listen, workers.max(1))
                .with_context(|| format!("binding DNS on {listen:?}"))?;
            let addrs: Vec<String> = listeners
                .local_addrs()
                .iter()
                .map(|a| a.to_string())
                .collect();
            println!(
                "berth dns: {} on {} (udp and tcp), {} worker(s); SIGHUP reloads it",
                zone.display(),
                addrs.join(", "),
                workers.max(1)
            );
            let server = berth_dns::DnsServer::new(berth_dns::load_zone_file(&zone)?)
                .with_context(|| format!("zone {}", zone.display()))?;
            let stop = tokio_util::sync::CancellationToken::new();
            if let Some(addr) = metrics {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding metrics on {addr}"))?;
                println!(
                    "berth dns: metrics on http://{}/metrics",
                    listener.local_addr()?
                );
                let dns = server.clone();
                tokio::spawn(crate::http_util::serve(
                    listener,
                    move |req| {
                        let dns = dns.clone();
                        async move {
                            if req.uri().path() == "/metrics" {
                                crate::http_util::respond(
                                    http::StatusCode::OK,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                    dns.metrics_text(),
                                )
                            } else {
                                crate::http_util::respond(
                                    http::StatusCode::NOT_FOUND,
                                    "text/plain",
                                    "GET /metrics\n",
                                )
                            }
                        }
                    },
                    stop.clone(),
                    Duration::from_secs(1),
                ));
            }
            let served =
                berth_dns::serve_zone_file(server, &zone, listeners, crate::signals::terminated())
                    .await;
            stop.cancel();
            served?;
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Create { name, role, node },
        } => {
            let role = match role {
                RoleArg::Admin => crate::auth::Role::Admin,
                RoleArg::Operator => crate::auth::Role::Operator,
                RoleArg::Viewer => crate::auth::Role::Viewer,
                RoleArg::Node => crate::auth::Role::Node,
            };
            println!(
                "{}",
                client()?.create_token(&name, role, node.as_deref()).await?
            );
            Ok(())
        }
        Command::Rollout { command } => rollout(&client()?, command).await,
        Command::HelloServer { listen } => {
            crate::hello::run(crate::hello::listen_addr(listen)?).await
        }
    }
}

fn print_objects(
    kind: Kind,
    items: &[Object],
    output: Output,
    namespaces: bool,
    header: bool,
) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(items)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(items)?),
        Output::Table => {
            let t = table(kind, items, namespaces);
            let skip = usize::from(!header);
            for line in t.lines().skip(skip) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

fn age(created_at: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let s = now.saturating_sub(created_at);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Renders objects as an aligned table.
pub fn table(kind: Kind, items: &[Object], namespaces: bool) -> String {
    let header: &[&str] = match kind {
        Kind::Instance => &[
            "NAME", "APP", "REV", "STATE", "NODE", "ADDRESS", "PORTS", "RESTARTS", "AGE",
        ],
        Kind::App => &["NAME", "REPLICAS", "READY", "COMMAND", "AGE"],
        Kind::Service => &["NAME", "APP", "PORTS", "VIP", "AGE"],
        Kind::Route => &["NAME", "HOSTS", "RULES", "AGE"],
        Kind::Endpoints => &["NAME", "ENDPOINTS", "AGE"],
        Kind::Node => &[
            "NAME", "READY", "ADDRESS", "SUBNET", "TAINTS", "CPU", "MEMORY", "AGE",
        ],
        Kind::Secret => &["NAME", "TYPE", "KEYS", "AGE"],
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    for o in items {
        let m = o.meta();
        let mut row = vec![m.name.clone()];
        match o {
            Object::Instance(i) => {
                row.push(i.spec.app.clone());
                row.push(i.spec.revision.to_string());
                let mut state = i.status.state.as_str().to_owned();
                if i.spec.stop && !matches!(i.status.state, crate::api::InstanceState::Stopped) {
                    state.push_str(" (stopping)");
                }
                row.push(state);
                row.push(i.spec.node.clone().unwrap_or_else(|| "-".into()));
                row.push(i.status.address.map_or("-".into(), |a| a.to_string()));
                let ports: Vec<String> = i
                    .status
                    .ports
                    .iter()
                    .map(|(n, p)| format!("{n}:{p}"))
                    .collect();
                row.push(if ports.is_empty() {
                    "-".into()
                } else {
                    ports.join(",")
                });
                row.push(i.status.restarts.to_string());
            }
            Object::App(a) => {
                row.push(a.spec.replicas.to_string());
                row.push(format!("{}/{}", a.status.ready_replicas, a.spec.replicas));
                let mut cmd = a.spec.template.command.clone();
                for arg in &a.spec.template.args {
                    cmd.push(' ');
                    cmd.push_str(arg);
                }
                row.push(cmd);
            }
            Object::Service(s) => {
                row.push(s.spec.app.clone());
                let ports: Vec<String> = s
                    .spec
                    .ports
                    .iter()
                    .map(|p| format!("{}:{}", p.name, p.port))
                    .collect();
                row.push(ports.join(","));
                row.push(if s.spec.headless {
                    "None".into()
                } else {
                    s.status.vip.map_or("-".into(), |v| v.to_string())
                });
            }
            Object::Route(r) => {
                row.push(r.spec.hosts.join(","));
                let rules: Vec<String> = r
                    .spec
                    .rules
                    .iter()
                    .map(|x| format!("{}->{}:{}", x.path, x.service, x.port))
                    .collect();
                row.push(rules.join(","));
            }
            Object::Endpoints(e) => {
                let eps: Vec<String> = e
                    .addresses
                    .iter()
                    .flat_map(|a| {
                        a.ports
                            .values()
                            .map(move |p| std::net::SocketAddr::new(a.address, *p).to_string())
                    })
                    .collect();
                row.push(if eps.is_empty() {
                    "<none>".into()
                } else {
                    eps.join(",")
                });
            }
            Object::Secret(sec) => {
                row.push(format!("{:?}", sec.kind).to_lowercase());
                row.push(sec.data.keys().cloned().collect::<Vec<_>>().join(","));
            }
            Object::Node(n) => {
                row.push(if n.status.ready { "ready" } else { "not ready" }.into());
                row.push(n.spec.address.to_string());
                row.push(n.spec.pod_subnet.clone().unwrap_or_else(|| "-".into()));
                let taints: Vec<String> = n.spec.taints.iter().map(|t| t.to_string()).collect();
                row.push(if taints.is_empty() {
                    "-".into()
                } else {
                    taints.join(",")
                });
                row.push(format!("{}m", n.spec.cpu_millis));
                row.push(format!("{}Mi", n.spec.memory_bytes >> 20));
            }
        }
        row.push(age(m.created_at));
        if namespaces && kind.namespaced() {
            row.insert(0, m.namespace.clone());
        }
        rows.push(row);
    }
    let mut header: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    if namespaces && kind.namespaced() {
        header.insert(0, "NAMESPACE".into());
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

async fn get_app(client: &Client, namespace: &str, name: &str) -> Result<crate::api::App> {
    match client.get(Kind::App, namespace, name).await? {
        Some(Object::App(a)) => Ok(a),
        _ => bail!("App {namespace}/{name} not found"),
    }
}

async fn rollout(client: &Client, command: RolloutCommand) -> Result<()> {
    use crate::api::RolloutPhase;
    match command {
        RolloutCommand::Status {
            app,
            namespace,
            timeout,
        } => {
            let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
            let mut last = String::new();
            loop {
                let a = get_app(client, &namespace, &app).await?;
                let s = &a.status;
                // The controller has seen the current spec once its template is the newest kept.
                let observed = s.history.last().map(|r| &r.template) == Some(&a.spec.template);
                let line = if !observed {
                    "waiting for the controller to see the new template".to_owned()
                } else {
                    format!(
                        "revision {}: {} of {} updated instances ready, {} old",
                        s.revision,
                        s.updated_ready_replicas,
                        a.spec.replicas,
                        s.replicas.saturating_sub(s.updated_replicas)
                    )
                };
                if line != last {
                    println!("{line}");
                    last = line;
                }
                if observed {
                    match s.rollout.phase {
                        RolloutPhase::Complete => {
                            println!("app {namespace}/{app}: revision {} rolled out", s.revision);
                            return Ok(());
                        }
                        RolloutPhase::Failed => bail!(
                            "app {namespace}/{app}: rollout failed: {}",
                            s.rollout.message
                        ),
                        RolloutPhase::Progressing => {}
                    }
                }
                if std::time::Instant::now() > deadline {
                    bail!("app {namespace}/{app}: rollout not finished after {timeout} s");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        RolloutCommand::History { app, namespace } => {
            let a = get_app(client, &namespace, &app).await?;
            let mut rows = vec![["REVISION".to_owned(), "AGE".into(), "COMMAND".into()]];
            for r in &a.status.history {
                let mut cmd = r.template.command.clone();
                for arg in &r.template.args {
                    cmd.push(' ');
                    cmd.push_str(arg);
                }
                let rev = if r.revision == a.status.revision {
                    format!("{} (current)", r.revision)
                } else {
                    r.revision.to_string()
                };
                rows.push([rev, age(r.created_at), cmd]);
            }
            let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
            let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
            for r in rows {
                println!("{:<w0$}   {:<w1$}   {}", r[0], r[1], r[2]);
            }
            Ok(())
        }
        RolloutCommand::Undo {
            app,
            namespace,
            to_revision,
        } => {
            client.rollback(&namespace, &app, to_revision).await?;
            match to_revision {
                0 => println!("app {namespace}/{app} rolled back to the previous revision"),
                n => println!("app {namespace}/{app} rolled back to revision {n}"),
            }
            Ok(())
        }
    }
}
