//! Benchmark of the control plane through its API on loopback: create and update latency with
//! 10,000 objects stored, and the time for one change to reach 1,000 watchers.
//! Run by `bench/control.sh`; prints `case=<name> p50_ms=<x> p99_ms=<y>` lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use berth::api::{Kind, Metadata, Object, Route, RouteRule, RouteSpec};
use berth::client::Client;
use berth::server::WatchLine;
use berth::store::Store;
use tokio_util::sync::CancellationToken;

fn route(name: &str, host: &str) -> Object {
    Object::Route(Route {
        metadata: Metadata::new("bench", name),
        spec: RouteSpec {
            hosts: vec![host.to_owned()],
            tls: None,
            rules: vec![RouteRule {
                path: "/".into(),
                service: "s".into(),
                port: "http".into(),
                timeout_ms: None,
                retries: None,
            }],
            sticky: None,
        },
    })
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(case: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    println!(
        "case={case} p50_ms={:.3} p99_ms={:.3} samples={}",
        pct(0.50),
        pct(0.99),
        samples.len()
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let objects = arg("--objects", 10_000);
    let samples = arg("--samples", 1_000);
    let watchers = arg("--watchers", 1_000);
    let events = arg("--events", 50);

    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    for chunk in (0..objects).collect::<Vec<_>>().chunks(500) {
        store.apply(
            chunk
                .iter()
                .map(|i| route(&format!("pre-{i}"), &format!("pre-{i}.example")))
                .collect(),
        )?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    // Authentication on, as in production: every request carries and checks a token.
    let auth = std::sync::Arc::new(berth::auth::Auth::open(dir.path())?);
    let admin = auth
        .token_for(berth::auth::Role::Admin, None)
        .context("admin token")?;
    tokio::spawn(berth::server::run(
        store.clone(),
        auth,
        std::sync::Arc::new(berth::events::EventLog::default()),
        listener,
        None,
        std::sync::Arc::new(berth::controller::Network::default()),
        shutdown.clone(),
    ));
    let client = Client::with_token(&format!("http://{addr}"), Some(&admin))?;

    // Creates and updates, one at a time, each acknowledged (durable) before the next.
    let mut create = Vec::with_capacity(samples);
    for i in 0..samples {
        let o = route(&format!("new-{i}"), &format!("new-{i}.example"));
        let t = Instant::now();
        client.apply(std::slice::from_ref(&o)).await?;
        create.push(t.elapsed());
    }
    report(&format!("create_with_{objects}_stored"), create);
    let mut update = Vec::with_capacity(samples);
    for i in 0..samples {
        let o = route(&format!("new-{i}"), &format!("changed-{i}.example"));
        let t = Instant::now();
        client.apply(std::slice::from_ref(&o)).await?;
        update.push(t.elapsed());
    }
    report(&format!("update_with_{objects}_stored"), update);

    // Fan-out: every watcher notes when it sees each probe event.
    let rev = client.list(Kind::Route, Some("bench")).await?.revision;
    let seen: Arc<Vec<AtomicUsize>> = Arc::new((0..events).map(|_| AtomicUsize::new(0)).collect());
    let arrived = Arc::new(tokio::sync::Notify::new());
    for _ in 0..watchers {
        let mut stream = client
            .watch(Kind::Route, Some("bench"), Some(rev))
            .await
            .context("opening a watch")?;
        let seen = seen.clone();
        let arrived = arrived.clone();
        tokio::spawn(async move {
            while let Ok(Some(lines)) = stream.next_batch().await {
                for l in lines {
                    if let WatchLine::Added { object, .. } = l
                        && let Some(k) = object
                            .meta()
                            .name
                            .strip_prefix("probe-")
                            .and_then(|k| k.parse::<usize>().ok())
                        && let Some(c) = seen.get(k)
                    {
                        c.fetch_add(1, Ordering::Relaxed);
                        arrived.notify_one();
                    }
                }
            }
        });
    }
    let mut fanout = Vec::with_capacity(events);
    for k in 0..events {
        let o = route(&format!("probe-{k}"), &format!("probe-{k}.example"));
        let t = Instant::now();
        client.apply(std::slice::from_ref(&o)).await?;
        let deadline = t + Duration::from_secs(10);
        while seen[k].load(Ordering::Relaxed) < watchers {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "event {k} reached {} of {watchers} watchers in 10 s",
                    seen[k].load(Ordering::Relaxed)
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(5), arrived.notified()).await;
        }
        fanout.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report(&format!("watch_fanout_{watchers}"), fanout);
    shutdown.cancel();
    Ok(())
}
