//! Bench-only: serves a zone file, optionally applying updates while it serves.
//!
//! `bench_serve ZONE.json ADDR WORKERS [UPDATES_PER_SEC ZONE2.json]` serves until stdin closes
//! or SIGTERM; `bench_serve --apply ZONE.json ZONE2.json` prints how long applying ZONE2 over
//! ZONE takes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_dns::{DnsServer, Zone};

fn load(path: &str) -> anyhow::Result<Zone> {
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--apply") {
        return apply_bench(&args[1], &args[2]);
    }
    let zone = load(&args[0])?;
    let listen: SocketAddr = args[1].parse()?;
    let workers: usize = args[2].parse()?;
    let updates: u32 = args.get(3).map_or(Ok(0), |a| a.parse())?;
    let second = args.get(4).map(|p| load(p)).transpose()?;
    let server = DnsServer::new(zone.clone())?;
    // The general (hickory) path alone, to measure it against the precomputed one.
    if std::env::var("BERTH_DNS_PRECOMPUTED").as_deref() == Ok("0") {
        server.set_precomputed(false);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        if updates > 0 {
            let server = server.clone();
            let zones = [zone, second.unwrap_or_default()];
            std::thread::spawn(move || update_loop(&server, &zones, updates));
        }
        let shutdown = async move {
            term.recv().await;
        };
        server.serve(&[listen], workers, shutdown).await?;
        Ok(())
    })
}

/// Applies `per_sec` updates a second, each one service's endpoints changed, until killed.
fn update_loop(server: &DnsServer, zones: &[Zone; 2], per_sec: u32) {
    let period = Duration::from_secs(1) / per_sec;
    let count = zones[0].services.len();
    let mut next = Instant::now();
    for n in 0usize.. {
        let generation = (n / count) % 2;
        let service = zones[generation].services[n % count].clone();
        if let Err(error) = server.apply_service(service) {
            eprintln!("update failed: {error}");
        }
        next += period;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

fn apply_bench(first: &str, second: &str) -> anyhow::Result<()> {
    let (first, second) = (load(first)?, load(second)?);
    let server = DnsServer::new(first.clone())?;
    let mut best = Duration::MAX;
    for round in 0..10 {
        let zone = if round % 2 == 0 { &second } else { &first };
        let start = Instant::now();
        server.apply(zone.clone())?;
        best = best.min(start.elapsed());
    }
    let records = server.record_count();
    // One service changed in the full zone: what an endpoint change costs.
    let mut one = Duration::MAX;
    for round in 0..50 {
        let zone = if round % 2 == 0 { &second } else { &first };
        let service = zone.services[round % zone.services.len()].clone();
        let start = Instant::now();
        server.apply_service(service)?;
        one = one.min(start.elapsed());
    }
    println!(
        "apply_ms={:.2} records={records} apply_service_ms={:.3}",
        best.as_secs_f64() * 1000.0,
        one.as_secs_f64() * 1000.0
    );
    Ok(())
}
