//! Helpers for berth's end-to-end tests: the `berth` binary started as a real process, and small
//! HTTP and DNS clients over real sockets.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

pub mod netns;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

/// The `berth` binary of this build (target/<profile>/berth).
///
/// `cargo test --workspace` builds it, because the `berth` package has integration tests.
pub fn berth_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/it-<hash> -> target/<profile>/berth
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("berth"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p berth` first)",
        bin.display()
    );
    bin
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// `berth dev` arguments that put every listener on a free loopback port: tests never bind a
/// fixed port.
pub const EPHEMERAL_PORTS: [&str; 6] = [
    "--api",
    "127.0.0.1:0",
    "--ingress",
    "127.0.0.1:0",
    "--dns",
    "127.0.0.1:0",
];

/// A running `berth server`, killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    /// Its API address.
    pub addr: SocketAddr,
    /// The admin token it created on first start.
    pub admin: String,
}

impl Server {
    /// Starts `berth server` on a free loopback port with its store in `data_dir`.
    pub fn start(data_dir: &std::path::Path) -> Result<Server> {
        Self::start_with(data_dir, &[])
    }

    /// Starts `berth server` with extra arguments.
    pub fn start_with(data_dir: &std::path::Path, extra: &[&str]) -> Result<Server> {
        let mut command = Command::new(berth_bin());
        command
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("BERTH_LOG", "warn");
        let (mut child, line) = spawn_first_line(&mut command, "berth server")?;
        let addr = line
            .split("://")
            .nth(1)
            .and_then(|r| r.split([',', ' ']).next())
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => {
                let admin = admin_token(data_dir)?;
                Ok(Server { child, addr, admin })
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("berth server printed {line:?}, not its address")
            }
        }
    }

    /// An API request with the admin token.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        http_with_token(self.addr, method, "berth", path, body, Some(&self.admin))
    }

    /// Creates a token with a role (and node) and returns it.
    pub fn token(&self, name: &str, role: &str, node: Option<&str>) -> Result<String> {
        let body = serde_json::json!({"name": name, "role": role, "node": node}).to_string();
        let (status, answer) = self.api("POST", "/api/v1/tokens", Some(&body))?;
        anyhow::ensure!(status == 200, "creating token {name}: {status} {answer}");
        let v: serde_json::Value = serde_json::from_str(&answer)?;
        v["token"].as_str().map(str::to_owned).context("no token")
    }

    /// Kills it with SIGKILL, as a crash or an OOM kill would, and reaps it.
    pub fn kill9(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a process with stdout piped and reads its first line (its banner with addresses).
fn spawn_first_line(command: &mut Command, what: &str) -> Result<(Child, String)> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut line = String::new();
    let read = child
        .stdout
        .take()
        .context("stdout")
        .and_then(|out| Ok(BufReader::new(out).read_line(&mut line)?));
    if let Err(e) = read {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.context(format!("reading the banner of {what}")));
    }
    Ok((child, line))
}

/// The admin token in a server data directory's tokens.yaml.
pub fn admin_token(data_dir: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(data_dir.join("tokens.yaml"))?;
    let v: serde_json::Value = serde_yaml_ng::from_str(&text)?;
    v["tokens"]
        .as_array()
        .and_then(|t| t.iter().find(|e| e["role"] == "admin"))
        .and_then(|e| e["token"].as_str())
        .map(str::to_owned)
        .context("no admin token in tokens.yaml")
}

/// A running `berth agent` in unprivileged host-port mode on loopback, killed when dropped.
pub struct Agent {
    child: Child,
    /// Its node's ingress proxy.
    pub ingress: SocketAddr,
    /// Its node's DNS server.
    pub dns: SocketAddr,
    _data_dir: tempfile_dir::TempDir,
}

impl Agent {
    /// Starts `berth agent --node <node>` against `server` with a node token, with every
    /// listener on a free port.
    pub fn start(server: SocketAddr, token: &str, node: &str, extra: &[&str]) -> Result<Agent> {
        let data_dir = tempfile_dir::TempDir::new(&format!("berth-agent-{node}"))?;
        let mut command = Command::new(berth_bin());
        command
            .env("BERTH_TOKEN", token)
            .env("BERTH_CONFIG", data_dir.path().join("no-config.yaml"))
            .args([
                "--server",
                &format!("http://{server}"),
                "agent",
                "--node",
                node,
            ])
            .args([
                "--ingress",
                "127.0.0.1:0",
                "--dns",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir.path())
            .args(extra)
            .env("BERTH_LOG", "warn");
        let (mut child, line) = spawn_first_line(&mut command, "berth agent")?;
        let ingress = line
            .split("ingress http://")
            .nth(1)
            .and_then(|r| r.split([',', ' ']).next())
            .and_then(|a| a.parse().ok());
        let dns = line
            .split("dns ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        match (ingress, dns) {
            (Some(ingress), Some(dns)) => Ok(Agent {
                child,
                ingress,
                dns,
                _data_dir: data_dir,
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("berth agent printed {line:?}, not its addresses")
            }
        }
    }

    /// Kills the agent with SIGKILL, as a crashed machine would; its instances die with it.
    pub fn kill9(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `berth dev`, stopped (SIGINT, then SIGKILL) when dropped.
pub struct Dev {
    child: Child,
    /// API base URL.
    pub api: String,
    /// Ingress proxy address.
    pub ingress: SocketAddr,
    /// DNS address (UDP and TCP).
    pub dns: SocketAddr,
    /// Standard output lines after the banner.
    pub stdout: mpsc::Receiver<String>,
    /// The data directory (kept until the Dev is dropped).
    pub data_dir: tempfile_dir::TempDir,
}

/// A temporary directory removed on drop, without another dependency.
pub mod tempfile_dir {
    use std::path::{Path, PathBuf};

    /// A directory under the system temp dir, removed with its content on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        /// Creates a fresh directory.
        pub fn new(prefix: &str) -> std::io::Result<TempDir> {
            for i in 0..100u32 {
                let p = std::env::temp_dir().join(format!("{prefix}-{}-{i}", std::process::id()));
                if std::fs::create_dir(&p).is_ok() {
                    return Ok(TempDir(p));
                }
            }
            Err(std::io::Error::other("no free temporary directory name"))
        }

        /// Its path.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn field(line: &str, label: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix(label)?;
    rest.split_whitespace().next().map(str::to_owned)
}

impl Dev {
    /// Starts `berth dev` on free loopback ports with `extra` arguments, and waits for its banner.
    pub fn start(extra: &[&str]) -> Result<Dev> {
        let data_dir = tempfile_dir::TempDir::new("berth-e2e")?;
        let mut child = Command::new(berth_bin())
            .arg("dev")
            .args(EPHEMERAL_PORTS)
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(extra)
            .current_dir(repo_root())
            .env("BERTH_LOG", "info")
            .env("BERTH_CONFIG", data_dir.path().join("cli.yaml"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting berth dev")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut api, mut ingress, mut dns) = (None, None, None);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("berth dev printed no banner within 30 s");
                }
            };
            println!("berth dev> {line}");
            api = api.or_else(|| field(&line, "api"));
            ingress = ingress.or_else(|| field(&line, "ingress"));
            dns = dns.or_else(|| field(&line, "dns"));
            if line.starts_with("Ctrl-C") {
                break;
            }
        }
        let parse = |s: Option<String>, what: &str| -> Result<SocketAddr> {
            let s = s.ok_or_else(|| anyhow!("banner has no {what} line"))?;
            s.trim_start_matches("http://")
                .parse()
                .with_context(|| format!("{what} address {s:?}"))
        };
        let api_addr = parse(api, "api")?;
        Ok(Dev {
            child,
            api: format!("http://{api_addr}"),
            ingress: parse(ingress, "ingress")?,
            dns: parse(dns, "dns")?,
            stdout: rx,
            data_dir,
        })
    }

    /// Runs `berth <args>` with the config file `berth dev` wrote (server and admin token).
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new(berth_bin())
            .args(args)
            .env("BERTH_CONFIG", self.data_dir.path().join("cli.yaml"))
            .current_dir(repo_root())
            .output()
            .context("running berth")
    }

    /// The process id of `berth dev`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGINT (Ctrl-C) and waits up to `timeout` for a clean exit; returns its status.
    pub fn interrupt(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("berth dev did not exit within {timeout:?} of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.interrupt(Duration::from_secs(10));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain HTTP/1.1 GET with `Connection: close`; returns the status and the body.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String)> {
    http(addr, "GET", host, path, None)
}

/// A plain HTTP/1.1 request with `Connection: close` and an optional JSON body; returns the
/// status and the body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    http_with_token(addr, method, host, path, body, None)
}

/// [`http`] with a bearer token.
pub fn http_with_token(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    match body {
        Some(b) => write!(
            s,
            "{head}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )?,
        None => write!(s, "{head}\r\n")?,
    }
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no header end in {raw:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One DNS query over UDP with hickory's message types.
pub fn dns_query(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Message> {
    // Loopback for a server on loopback; any address otherwise (a test inside a namespace).
    let local: SocketAddr = match server {
        SocketAddr::V4(a) if a.ip().is_loopback() => "127.0.0.1:0".parse()?,
        SocketAddr::V4(_) => "0.0.0.0:0".parse()?,
        SocketAddr::V6(a) if a.ip().is_loopback() => "[::1]:0".parse()?,
        SocketAddr::V6(_) => "[::]:0".parse()?,
    };
    let sock = UdpSocket::bind(local)?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut q = Message::query();
    q.metadata.id = fastrand_id();
    q.add_query(Query::query(Name::from_ascii(name)?, rtype));
    sock.send_to(&q.to_vec()?, server)?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock
        .recv_from(&mut buf)
        .context("no DNS answer within 2 s")?;
    let m = Message::from_vec(&buf[..n])?;
    if m.metadata.id != q.metadata.id {
        bail!(
            "answer id {} does not match query id {}",
            m.metadata.id,
            q.metadata.id
        );
    }
    Ok(m)
}

fn fastrand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (nanos >> 16)) as u16
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
