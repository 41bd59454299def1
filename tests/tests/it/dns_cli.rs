//! `berth dns --zone FILE`: the DNS server on its own, reloading its zone on SIGHUP.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use berth_tests::{berth_bin, dns_query, tempfile_dir::TempDir, wait_for};
use hickory_proto::rr::{RData, RecordType};

fn zone(address: &str) -> String {
    format!(
        "origin: berth.local\nservices:\n  - name: web\n    namespace: default\n    endpoints:\n      - {{hostname: web-a, address: {address}, ports: [{{name: http, port: 8080}}]}}\n"
    )
}

#[test]
fn serves_a_zone_file_and_reloads_it_on_sighup() -> Result<()> {
    let dir = TempDir::new("berth-dns-cli")?;
    let file = dir.path().join("zone.yaml");
    std::fs::write(&file, zone("10.1.0.5"))?;
    let mut child = Command::new(berth_bin())
        .args([
            "dns",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--zone",
        ])
        .arg(&file)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let mut metrics_line = String::new();
    out.read_line(&mut metrics_line)?;
    let addr = line
        .split(" on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no address in {line:?}"));
    let result = (|| -> Result<()> {
        let addr = addr?;
        let a = |dns| -> Option<String> {
            let m = dns_query(dns, "web-a.web.default.svc.berth.local.", RecordType::A).ok()?;
            m.answers.iter().find_map(|r| match &r.data {
                RData::A(ip) => Some(ip.0.to_string()),
                _ => None,
            })
        };
        assert_eq!(a(addr).as_deref(), Some("10.1.0.5"));
        std::fs::write(&file, zone("10.1.0.6"))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id())?),
            nix::sys::signal::Signal::SIGHUP,
        )?;
        wait_for(Duration::from_secs(5), "reloaded zone", || {
            (a(addr).as_deref() == Some("10.1.0.6")).then_some(())
        })?;
        let metrics: std::net::SocketAddr = metrics_line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("no metrics address in {metrics_line:?}"))?;
        let (status, body) = berth_tests::http_get(metrics, "x", "/metrics")?;
        assert_eq!(status, 200);
        assert!(body.contains("berth_dns_queries_total{"), "{body}");
        assert!(body.contains("berth_dns_zone_revision 2"), "{body}");
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}
