//! Supervision of one instance: ports, the process, readiness, restarts with backoff, and the
//! graceful stop (drain, SIGTERM, grace period, SIGKILL).
//!
//! In host-port mode (unprivileged `berth dev`) every instance listens on the node's address on
//! ports the agent picks, passed as `PORT0`.. and `PORT_<NAME>`, as Marathon does.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{oneshot, watch};

use crate::api::{Instance, InstanceState, InstanceStatus, Kind, Protocol, Template};
use crate::client::Client;

use super::probe;

/// What every supervisor shares.
pub(super) struct Ctx {
    /// API client for status reports.
    pub(super) client: Client,
    /// This node's name.
    pub(super) node: String,
    /// The address instances listen on.
    pub(super) address: IpAddr,
    /// PATH given to instances (the berth binary's directory first).
    pub(super) path: String,
    /// Where instance logs go.
    pub(super) log_dir: PathBuf,
    /// How long a stopping instance keeps serving after it left endpoints, so that every
    /// node's proxy and DNS stopped sending to it first.
    pub(super) drain: Duration,
    /// How long after SIGTERM before SIGKILL.
    pub(super) grace: Duration,
    /// CNI mode: every instance in its own network namespace on the node's pod network.
    /// Host-port mode (unprivileged `berth dev`) when `None`.
    pub(super) network: Option<Arc<super::sandbox::CniNetwork>>,
    /// CPU and memory limits, where the machine has cgroups.
    pub(super) cgroups: super::cgroups::Cgroups,
}

/// Where one instance runs: its address, and its sandbox in CNI mode.
struct Place {
    address: IpAddr,
    sandbox: Option<super::sandbox::Sandbox>,
}

impl Place {
    /// The command line that runs `argv` here.
    fn argv(&self, argv: &[String]) -> Vec<String> {
        match &self.sandbox {
            Some(s) => s.wrap(argv),
            None => argv.to_vec(),
        }
    }
}

/// Why a supervisor is asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Keep running.
    No,
    /// Drain, stop and report it stopped (control asked).
    Report,
    /// Stop at once and report it stopped (the agent shuts down: nothing to drain for).
    Now,
    /// The instance was deleted: stop, nothing to report to.
    Silent,
}

/// First restart delay; doubled per consecutive failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A process that ran this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Probe interval until the first success.
const FAST_PROBE: Duration = Duration::from_millis(100);

/// Finds a free port on `address`, preferring `previous` so that a restarted instance keeps its
/// ports. The port is free when checked; the instance binds it right after.
fn pick_port(address: IpAddr, protocol: Protocol, previous: Option<u16>) -> Result<u16> {
    let bind = |port: u16| -> std::io::Result<u16> {
        let addr = SocketAddr::new(address, port);
        match protocol {
            Protocol::Tcp => Ok(std::net::TcpListener::bind(addr)?.local_addr()?.port()),
            Protocol::Udp => Ok(std::net::UdpSocket::bind(addr)?.local_addr()?.port()),
        }
    };
    if let Some(p) = previous
        && let Ok(p) = bind(p)
    {
        return Ok(p);
    }
    bind(0).with_context(|| format!("no free {protocol:?} port on {address}"))
}

fn port_env_name(name: &str) -> String {
    format!("PORT_{}", name.to_ascii_uppercase().replace('-', "_"))
}

struct Running {
    pid: u32,
    /// Taken once the exit arrived: a oneshot must not be polled after it completed.
    exited: Option<oneshot::Receiver<std::io::Result<ExitStatus>>>,
}

impl Running {
    /// Waits for the process to exit; cancel-safe, and returns at once if it already has.
    async fn wait(&mut self) -> Option<std::io::Result<ExitStatus>> {
        let rx = self.exited.as_mut()?;
        let r = rx
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("waiter gone")));
        self.exited = None;
        Some(r)
    }
}

/// A command run the way an instance runs: its environment (ports, names, the template's
/// variables, PATH with the berth binary first) and working directory. Used for the instance
/// itself and for its exec probes.
fn instance_command(
    ctx: &Ctx,
    place: &Place,
    inst: &Instance,
    ports: &BTreeMap<String, u16>,
    argv: &[String],
) -> tokio::process::Command {
    let t: &Template = &inst.spec.template;
    let argv = place.argv(argv);
    let program = argv.first().map_or("", String::as_str);
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(argv.iter().skip(1))
        .env_clear()
        .env("PATH", &ctx.path)
        .env("HOST", place.address.to_string())
        .env("BERTH_INSTANCE", &inst.metadata.name)
        .env("BERTH_APP", &inst.spec.app)
        .env("BERTH_NAMESPACE", &inst.metadata.namespace)
        .env("BERTH_NODE", &ctx.node);
    if let Ok(home) = std::env::var("HOME") {
        cmd.env("HOME", home);
    }
    for (i, p) in t.ports.iter().enumerate() {
        if let Some(port) = ports.get(&p.name) {
            cmd.env(format!("PORT{i}"), port.to_string());
            cmd.env(port_env_name(&p.name), port.to_string());
            if i == 0 {
                cmd.env("PORT", port.to_string());
            }
        }
    }
    cmd.envs(&t.env);
    if let Some(dir) = &t.working_dir {
        cmd.current_dir(dir);
    }
    cmd
}

async fn spawn(
    ctx: &Ctx,
    place: &Place,
    inst: &Instance,
    ports: &BTreeMap<String, u16>,
) -> Result<Running> {
    let t: &Template = &inst.spec.template;
    let argv: Vec<String> = std::iter::once(t.command.clone())
        .chain(t.args.iter().cloned())
        .collect();
    let mut cmd = instance_command(ctx, place, inst, ports, &argv);
    std::fs::create_dir_all(&ctx.log_dir)
        .with_context(|| format!("creating {}", ctx.log_dir.display()))?;
    let log_path =
        super::logs::log_path(&ctx.log_dir, &inst.metadata.namespace, &inst.metadata.name);
    cmd.stdin(Stdio::null()).process_group(0);
    let log = if place.sandbox.is_some() {
        // The file itself: the instance must outlive the agent (a restarted agent adopts it),
        // so nothing of the agent may sit between it and its log. The agent caps the file by
        // copy-and-truncate, as logrotate's copytruncate does.
        let file = super::logs::open_append(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        cmd.stdout(file.try_clone().context("duplicating the log file")?)
            .stderr(file);
        // Its own UTS namespace with its name as host name, as a pod has.
        let hostname = super::sandbox::hostname(inst);
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // unshare(2) and sethostname(2) system calls on memory prepared before the fork.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS)
                    .map_err(std::io::Error::from)?;
                nix::unistd::sethostname(&hostname).map_err(std::io::Error::from)
            });
        }
        None
    } else {
        let log = super::logs::LogFile::open(log_path.clone(), super::logs::MAX_LOG_BYTES)
            .await
            .with_context(|| format!("opening {}", log_path.display()))?;
        // Pipes, not the file itself: the agent caps and rotates the log as it writes.
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // which is async-signal-safe. It makes the kernel kill the instance if the agent dies,
        // so that a crashed host-port agent (or `berth dev` killed with SIGKILL) leaves no
        // process behind. (In CNI mode instances outlive the agent, which adopts them.)
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        Some(log)
    };
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {:?}", t.command))?;
    let pid = child.id().context("process exited at once")?;
    if ctx.cgroups.available() {
        let r = &t.resources;
        let cpu = crate::api::parse_cpu(&r.cpu).unwrap_or(0);
        let memory = crate::api::parse_memory(&r.memory).unwrap_or(0);
        if let Err(e) = ctx.cgroups.apply(&cgroup_name(inst), cpu, memory, pid) {
            tracing::warn!(instance = %inst.metadata.name, error = %format!("{e:#}"), "cgroup limits not applied");
        }
    }
    if let Some(log) = log {
        let log = std::sync::Arc::new(tokio::sync::Mutex::new(log));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(super::logs::copy(out, log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(super::logs::copy(err, log));
        }
    }
    let (tx, exited) = oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(child.wait().await);
    });
    Ok(Running {
        pid,
        exited: Some(exited),
    })
}

/// The start time of a process (field 22 of /proc/PID/stat, in clock ticks since boot): with
/// the pid, it names one process even after the pid is reused.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The network namespace identity (device, inode) of a path under /proc or /run/netns.
fn ns_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Adopts the process of `inst` that a previous agent started in CNI mode, when it still runs
/// in the instance's sandbox (a reused pid in another namespace is not it). Its exit is seen by
/// polling: it is not our child.
fn adopt(ctx: &Ctx, inst: &Instance) -> Option<(Place, Running)> {
    let net = ctx.network.as_ref()?;
    let pid = inst.status.pid?;
    let sandbox = net.existing(inst, inst.status.address?)?;
    let in_sandbox = ns_id(
        &std::path::Path::new("/proc")
            .join(pid.to_string())
            .join("ns/net"),
    )? == ns_id(&std::path::Path::new("/run/netns").join(&sandbox.name))?;
    if !in_sandbox {
        return None;
    }
    let started = start_time(pid)?;
    let (tx, exited) = oneshot::channel();
    tokio::spawn(async move {
        while start_time(pid) == Some(started) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = tx.send(Err(std::io::Error::other(
            "the adopted process exited (its status went to the agent that started it)",
        )));
    });
    Some((
        Place {
            address: sandbox.address,
            sandbox: Some(sandbox),
        },
        Running {
            pid,
            exited: Some(exited),
        },
    ))
}

/// The cgroup of an instance, unique on the node.
fn cgroup_name(inst: &Instance) -> String {
    format!("{}.{}", inst.metadata.namespace, inst.metadata.name)
}

/// The ports an instance listens on in its own namespace: the declared number, else the next
/// free one from 8080, as a pod's container ports.
fn sandbox_ports(inst: &Instance) -> BTreeMap<String, u16> {
    let ports = &inst.spec.template.ports;
    let declared: std::collections::HashSet<u16> = ports.iter().filter_map(|p| p.port).collect();
    let mut next = 8080u16;
    ports
        .iter()
        .map(|p| {
            let n = p.port.unwrap_or_else(|| {
                while declared.contains(&next) {
                    next += 1;
                }
                next += 1;
                next - 1
            });
            (p.name.clone(), n)
        })
        .collect()
}

/// Creates the sandbox of a CNI-mode instance, retrying with backoff (reported as failures)
/// until it exists or a stop is asked (then `None`).
async fn sandbox(
    ctx: &Ctx,
    rep: &mut Reporter<'_>,
    stop: &mut watch::Receiver<Stop>,
) -> Option<Place> {
    let Some(net) = &ctx.network else {
        return Some(Place {
            address: ctx.address,
            sandbox: None,
        });
    };
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow() != Stop::No {
            return None;
        }
        match net.create(rep.inst).await {
            Ok(s) => {
                tracing::info!(instance = %rep.inst.metadata.name, netns = %s.name, address = %s.address, "sandbox created");
                return Some(Place {
                    address: s.address,
                    sandbox: Some(s),
                });
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let message = format!("creating the network sandbox: {e:#}");
                tracing::warn!(instance = %rep.inst.metadata.name, error = %message, "sandbox failed");
                rep.report(|s| {
                    s.state = InstanceState::Failed;
                    s.message = Some(message);
                })
                .await;
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << failures.saturating_sub(1).min(10))
                    .min(MAX_BACKOFF);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop_asked(stop) => {}
                }
            }
        }
    }
}

fn describe(exit: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match exit {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(sig)) => format!(
                "killed by signal {}",
                Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?")
            ),
            _ => "exited".to_owned(),
        },
        Err(e) => format!("lost track of the process: {e}"),
    }
}

/// Signals the process group: SIGTERM, then SIGKILL after the grace period.
async fn terminate(ctx: &Ctx, running: &mut Running) {
    let group = Pid::from_raw(i32::try_from(running.pid).unwrap_or(i32::MAX));
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(ctx.grace, running.wait())
        .await
        .is_err()
    {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = running.wait().await;
    } else {
        // The leader exited; anything it left in its group goes too.
        let _ = killpg(group, Signal::SIGKILL);
    }
}

struct Reporter<'a> {
    ctx: &'a Ctx,
    inst: &'a Instance,
    status: InstanceStatus,
}

impl Reporter<'_> {
    async fn report(&mut self, change: impl FnOnce(&mut InstanceStatus)) {
        change(&mut self.status);
        let m = &self.inst.metadata;
        if let Err(e) = self
            .ctx
            .client
            .put_status(Kind::Instance, &m.namespace, &m.name, &self.status)
            .await
        {
            tracing::warn!(instance = %m.name, error = %format!("{e:#}"), "status report failed");
        }
    }
}

/// Runs an instance until told to stop.
pub(super) async fn supervise(ctx: Arc<Ctx>, inst: Instance, mut stop: watch::Receiver<Stop>) {
    let name = inst.metadata.name.clone();
    let mut rep = Reporter {
        ctx: &ctx,
        inst: &inst,
        status: inst.status.clone(),
    };
    let mut failures_in_row: u32 = 0;
    let (place, mut adopted) = match adopt(&ctx, &inst) {
        Some((place, running)) => {
            tracing::info!(instance = %name, pid = running.pid, "adopted a running instance");
            (Some(place), Some(running))
        }
        None => (sandbox(&ctx, &mut rep, &mut stop).await, None),
    };
    let capper = tokio_util::sync::CancellationToken::new();
    if matches!(&place, Some(p) if p.sandbox.is_some()) {
        let m = &inst.metadata;
        tokio::spawn(super::logs::cap_file(
            super::logs::log_path(&ctx.log_dir, &m.namespace, &m.name),
            super::logs::MAX_LOG_BYTES,
            capper.clone(),
        ));
    }
    let _capper = capper.drop_guard();
    while let Some(place) = &place {
        if *stop.borrow() != Stop::No {
            break;
        }
        let mut ports = BTreeMap::new();
        let mut port_error = None;
        if place.sandbox.is_some() {
            ports = sandbox_ports(&inst);
        } else {
            for p in &inst.spec.template.ports {
                match pick_port(
                    ctx.address,
                    p.protocol,
                    rep.status.ports.get(&p.name).copied(),
                ) {
                    Ok(port) => {
                        ports.insert(p.name.clone(), port);
                    }
                    Err(e) => port_error = Some(format!("{e:#}")),
                }
            }
        }
        let started = Instant::now();
        let was_adopted = adopted.is_some();
        if was_adopted {
            ports = rep.status.ports.clone();
        }
        let spawned = match (adopted.take(), port_error) {
            (Some(running), _) => Ok(running),
            (None, Some(e)) => Err(anyhow::anyhow!(e)),
            (None, None) => spawn(&ctx, place, &inst, &ports).await,
        };
        let exit_message = match spawned {
            Err(e) => format!("{e:#}"),
            Ok(mut running) => {
                // An adopted instance keeps its state (it may be ready, and in endpoints)
                // until its probes say otherwise.
                if !was_adopted {
                    tracing::info!(instance = %name, pid = running.pid, ?ports, "started");
                    let pid = running.pid;
                    rep.report(|s| {
                        s.state = InstanceState::Starting;
                        s.address = Some(place.address);
                        s.ports = ports.clone();
                        s.pid = Some(pid);
                        s.message = None;
                    })
                    .await;
                }
                match watch_running(&ctx, place, &mut rep, &mut running, &mut stop).await {
                    Some(exit) => exit,
                    None => {
                        // Told to stop.
                        terminate(&ctx, &mut running).await;
                        break;
                    }
                }
            }
        };
        tracing::warn!(instance = %name, reason = %exit_message, "instance exited; restarting");
        if started.elapsed() >= STABLE_AFTER {
            failures_in_row = 0;
        }
        failures_in_row = failures_in_row.saturating_add(1);
        rep.report(|s| {
            s.state = InstanceState::Failed;
            s.restarts = s.restarts.saturating_add(1);
            s.pid = None;
            s.message = Some(exit_message);
        })
        .await;
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << failures_in_row.saturating_sub(1).min(10))
            .min(MAX_BACKOFF);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop_asked(&mut stop) => {}
        }
    }
    if let Some(Place {
        sandbox: Some(s), ..
    }) = &place
    {
        s.kill_all().await;
        s.destroy().await;
    }
    if ctx.cgroups.available() {
        ctx.cgroups.remove(&cgroup_name(&inst));
    }
    if matches!(*stop.borrow(), Stop::Report | Stop::Now) {
        rep.report(|s| {
            s.state = InstanceState::Stopped;
            s.pid = None;
        })
        .await;
    }
    tracing::info!(instance = %name, "stopped");
}

/// Resolves when a stop is asked (the watch guard is dropped before returning, so that the
/// caller's future stays `Send`).
async fn stop_asked(stop: &mut watch::Receiver<Stop>) {
    let _ = stop.wait_for(|s| *s != Stop::No).await.map(|_| ());
}

/// Probes a running instance until it exits (returns why) or a stop is asked (returns None,
/// after draining).
async fn watch_running(
    ctx: &Ctx,
    place: &Place,
    rep: &mut Reporter<'_>,
    running: &mut Running,
    stop: &mut watch::Receiver<Stop>,
) -> Option<String> {
    let inst = rep.inst;
    let template = &inst.spec.template;
    let ports = rep.status.ports.clone();
    let exec = |argv: &[String]| instance_command(ctx, place, inst, &ports, argv);
    let (check, timeout) = probe::readiness(template, place.address, &ports, exec);
    let probe_timing = |p: Option<&crate::api::Probe>| {
        p.map_or((Duration::from_secs(5), 3, Duration::ZERO), |p| {
            (
                Duration::from_secs(u64::from(p.period_seconds)),
                p.failure_threshold,
                Duration::from_secs(u64::from(p.initial_delay_seconds)),
            )
        })
    };
    let (period, threshold, delay) = probe_timing(template.readiness_probe.as_ref());
    let liveness = template.liveness_probe.as_ref().map(|p| {
        (
            probe::check_for(p, place.address, &ports, exec),
            probe_timing(Some(p)),
        )
    });
    let mut ready = false;
    let mut failures = 0u32;
    let mut live_failures = 0u32;
    let started = tokio::time::Instant::now();
    let mut next = started + delay;
    let mut next_live = started
        + liveness
            .as_ref()
            .map_or(Duration::ZERO, |(_, (_, _, d))| *d);
    loop {
        let probe = async {
            tokio::time::sleep_until(next).await;
            probe::run(&check, timeout).await
        };
        let live_probe = async {
            match &liveness {
                Some(((check, timeout), _)) => {
                    tokio::time::sleep_until(next_live).await;
                    probe::run(check, *timeout).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            exit = running.wait() => {
                let exit = exit.unwrap_or_else(|| Err(std::io::Error::other("already reaped")));
                return Some(describe(&exit));
            }
            _ = stop_asked(stop) => {
                rep.report(|s| s.state = InstanceState::Terminating).await;
                // Endpoints dropped this instance when control asked it to stop; keep serving
                // while every node's data plane catches up, unless the process dies meanwhile.
                let drain = if *stop.borrow() == Stop::Now { Duration::ZERO } else { ctx.drain };
                tokio::select! {
                    _ = tokio::time::sleep(drain) => {}
                    _ = running.wait() => {}
                }
                return None;
            }
            ok = probe => {
                if ok {
                    failures = 0;
                    if !ready {
                        ready = true;
                        rep.report(|s| s.state = InstanceState::Ready).await;
                    }
                } else {
                    failures += 1;
                    if ready && failures >= threshold {
                        ready = false;
                        rep.report(|s| s.state = InstanceState::Running).await;
                    }
                }
                next = tokio::time::Instant::now() + if ready { period } else { FAST_PROBE };
            }
            ok = live_probe => {
                let (_, (live_period, live_threshold, _)) = liveness.as_ref()?;
                if ok {
                    live_failures = 0;
                } else {
                    live_failures += 1;
                    if live_failures >= *live_threshold {
                        // Out of endpoints first, then the restart.
                        if ready {
                            rep.report(|s| s.state = InstanceState::Running).await;
                        }
                        terminate(ctx, running).await;
                        return Some(format!("liveness probe failed {live_failures} times in a row"));
                    }
                }
                next_live = tokio::time::Instant::now() + *live_period;
            }
        }
    }
}
