//! Behaviour under load while endpoints change or die.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use berth_proxy::{Config, Limits, Proxy};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Backend, Harness, KillableBackend, TestClient, cluster, endpoints, vhost};

async fn serve(config: Config) -> (Proxy, SocketAddr) {
    let proxy = Proxy::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let p = proxy.clone();
    tokio::spawn(async move { p.serve_http(listener, std::future::pending()).await });
    (proxy, addr)
}

fn one_cluster(addrs: &[SocketAddr]) -> Config {
    Config {
        virtual_hosts: vec![vhost("all", &["*"], &[("/", "c")])],
        clusters: vec![cluster("c", addrs)],
        ..Config::default()
    }
}

/// Runs `workers` clients that each send up to `per_worker` GETs (every tenth to /slow) until
/// `stop` is set; returns (ok, failed) and the statuses of failures.
fn load(
    client: TestClient,
    workers: usize,
    per_worker: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let ok = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..workers {
            let (client, stop, ok) = (client.clone(), stop.clone(), ok.clone());
            tasks.push(tokio::spawn(async move {
                let mut failed = Vec::new();
                for i in 0..per_worker {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let path = if (i + w) % 10 == 0 { "/slow" } else { "/" };
                    let reply = client.get("any", path).await;
                    if reply.status == StatusCode::OK {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.push(format!("{} {}", reply.status, reply.body.trim()));
                    }
                }
                failed
            }));
        }
        let mut failed = Vec::new();
        for t in tasks {
            failed.extend(t.await.unwrap());
        }
        (ok.load(Ordering::Relaxed), failed)
    })
}

#[tokio::test]
async fn endpoint_churn_100_per_second_under_load_fails_no_request() {
    let backends = [
        Backend::start("b0").await,
        Backend::start("b1").await,
        Backend::start("b2").await,
        Backend::start("b3").await,
    ];
    let all: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let (proxy, addr) = serve(one_cluster(&all)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(Harness::client_for(addr), 8, 2000, stop.clone());
    // 150 updates at 100 per second, each a different non-empty subset of healthy endpoints.
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    for i in 0..150u32 {
        interval.tick().await;
        let subset: Vec<SocketAddr> = (0..4)
            .filter(|b| (i + 1) & (1 << b) != 0 || (i + 1) % 16 == 0)
            .map(|b| all[b as usize])
            .collect();
        let subset = if subset.is_empty() {
            all.clone()
        } else {
            subset
        };
        proxy.update_endpoints("c", endpoints(&subset)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = running.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests ran during the churn");
    assert_eq!(proxy.revision(), 151);
}

#[tokio::test]
async fn backend_killed_under_load_gets_are_retried_without_client_errors() {
    let victim = KillableBackend::start("victim").await;
    let b1 = Backend::start("b1").await;
    let b2 = Backend::start("b2").await;
    let (_proxy, addr) = serve(one_cluster(&[victim.addr, b1.addr, b2.addr])).await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(Harness::client_for(addr), 6, 2000, stop.clone());
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Some /slow requests are in flight on the victim now; they get reset.
    victim.kill().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = running.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests ran");
}

#[tokio::test]
async fn removed_endpoint_drains_in_flight_requests() {
    let (b0, b1) = (Backend::start("b0").await, Backend::start("b1").await);
    let (proxy, addr) = serve(one_cluster(&[b0.addr])).await;
    let client = Harness::client_for(addr);
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.get("any", "/slow").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.update_endpoints("c", endpoints(&[b1.addr])).unwrap();
    // New requests go to the new set at once ...
    assert_eq!(client.get("any", "/").await.body, "b1");
    // ... while the one in flight on the removed endpoint finishes there.
    let reply = slow.await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "b0"));
}

#[tokio::test]
async fn idempotent_request_answered_503_is_retried_elsewhere() {
    // A backend that always answers 503.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0
                        || s.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy",
                        )
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    let good = Backend::start("good").await;
    let mut config = one_cluster(&[bad, good.addr]);
    // Passive detection would eject the 503 backend after a few answers; this test is about
    // the retry itself.
    config.clusters[0].outlier_detection = None;
    let (_proxy, addr) = serve(config).await;
    let client = Harness::client_for(addr);
    for _ in 0..6 {
        let reply = client.get("any", "/").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "good")
        );
    }
    // POST is not idempotent: its 503 goes to the client as sent (on the requests that hit it).
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            client
                .send("any", "POST", "/", Default::default(), &[])
                .await
                .status,
        );
    }
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn slow_client_is_timed_out() {
    let b0 = Backend::start("b0").await;
    let (_proxy, addr) = serve(Config {
        limits: Limits {
            header_read_timeout_ms: 300,
            ..Limits::default()
        },
        ..one_cluster(&[b0.addr])
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Half a request head, then nothing: the slowloris pattern.
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed within 3 s");
}

#[tokio::test]
async fn removed_endpoint_is_cut_after_its_drain_timeout() {
    // A backend that streams one chunk, then a second one 3 s later.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let streaming = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
                    )
                    .await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                let _ = s.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await;
            });
        }
    });
    let other = Backend::start("other").await;
    let mut config = one_cluster(&[streaming]);
    config.clusters[0].drain_timeout_ms = 200;
    let (proxy, addr) = serve(config).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("first") {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    proxy
        .update_endpoints("c", endpoints(&[other.addr]))
        .unwrap();
    let started = std::time::Instant::now();
    // The drain timeout (200 ms) passes while the response is idle; the cut takes effect at
    // its next frame (the backend's second chunk, at ~3 s): the connection closes and the
    // client never sees "second".
    let rest = tokio::time::timeout(Duration::from_secs(6), async {
        let mut rest = Vec::new();
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return rest,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the cut connection was not closed");
    assert!(
        !String::from_utf8_lossy(&rest).contains("second"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // New requests went to the new endpoint at once.
    assert_eq!(Harness::client_for(addr).get("x", "/").await.body, "other");
}
