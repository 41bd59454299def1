//! `run_from_file`: listeners from the file, admin endpoints, reload on change, bad reloads.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::support::{Backend, Harness};

/// A loopback port the kernel just handed out and that is free again (the file needs a fixed
/// address; the race with another process taking it meanwhile is negligible in tests).
async fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn write_config(
    path: &Path,
    http: SocketAddr,
    tcp: Option<SocketAddr>,
    admin: SocketAddr,
    backend: SocketAddr,
) {
    let tcp = tcp.map_or(String::new(), |tcp| {
        format!("  - {{name: db, address: \"{tcp}\", protocol: tcp, cluster: app, proxy_protocol: v1}}\n")
    });
    let yaml = format!(
        "listeners:\n  - {{name: web, address: \"{http}\", protocol: http}}\n{tcp}\
         admin: {{address: \"{admin}\"}}\n\
         virtual_hosts:\n  - {{name: all, domains: [\"*\"], routes: [{{path_prefix: /, cluster: app}}]}}\n\
         clusters:\n  - {{name: app, lb_policy: least_request, endpoints: [{{address: \"{backend}\"}}]}}\n"
    );
    // Write then rename, as config management tools do, so the poller never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin_get(admin: SocketAddr, path: &str) -> (StatusCode, String) {
    let reply = Harness::client_for(admin).get("admin", path).await;
    (reply.status, reply.body)
}

#[tokio::test]
async fn serves_listeners_from_file_and_reloads_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    let (b0, b1) = (Backend::start("b0").await, Backend::start("b1").await);
    let (http, tcp, admin) = (free_port().await, free_port().await, free_port().await);
    write_config(&path, http, Some(tcp), admin, b0.addr);

    let (stop, stopped) = oneshot::channel::<()>();
    let run_path = path.clone();
    let running = tokio::spawn(async move {
        berth_proxy::run_from_file(&run_path, async move {
            let _ = stopped.await;
        })
        .await
    });
    let client = Harness::client_for(http);
    wait_for("the http listener", || async {
        TcpStream::connect(http).await.is_ok()
    })
    .await;
    assert_eq!(client.get("x", "/").await.body, "b0");

    // The TCP listener splices to the cluster and sends a PROXY v1 header first: the backend
    // (plain HTTP) sees "PROXY ..." as a bad request line, which proves the header went first.
    let mut stream = TcpStream::connect(tcp).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Admin endpoints.
    let (status, metrics) = admin_get(admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("berth_proxy_requests_total{cluster=\"app\",code=\"200\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_proxy_config_revision 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_proxy_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_proxy_connections_total{listener=\"db\"} 1"),
        "{metrics}"
    );
    let (_, config) = admin_get(admin, "/config").await;
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["clusters"][0]["lb_policy"], "least_request");
    let (_, endpoints) = admin_get(admin, "/endpoints").await;
    let endpoints: serde_json::Value = serde_json::from_str(&endpoints).unwrap();
    assert_eq!(
        endpoints["clusters"][0]["endpoints"][0]["address"],
        b0.addr.to_string()
    );
    assert!(
        endpoints["clusters"][0]["endpoints"][0]["requests"]
            .as_u64()
            .unwrap()
            >= 2
    );
    assert_eq!(admin_get(admin, "/nope").await.0, StatusCode::NOT_FOUND);

    // A bad file is refused and the running config keeps serving.
    std::fs::write(
        &path,
        "clusters: [{name: app, endpoints: [{address: nowhere}]}]\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(client.get("x", "/").await.body, "b0");
    assert!(
        TcpStream::connect(tcp).await.is_ok(),
        "the tcp listener stays"
    );

    // A good edit is picked up within the poll interval: new endpoint, TCP listener removed.
    write_config(&path, http, None, admin, b1.addr);
    wait_for("the reload", || async {
        client.get("x", "/").await.body == "b1"
    })
    .await;
    wait_for("the tcp listener to close", || async {
        TcpStream::connect(tcp).await.is_err()
    })
    .await;
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metrics.contains("berth_proxy_config_revision 2"),
        "{metrics}"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(http).await.is_err(),
        "listeners close on shutdown"
    );
}

#[tokio::test]
async fn start_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let err = berth_proxy::run_from_file(&missing, async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot read config file"), "{err}");

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"clusters": [{"name": "a", "lb_policy": "fastest"}]}"#,
    )
    .unwrap();
    let err = berth_proxy::run_from_file(&bad, async {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown variant `fastest`"),
        "{err}"
    );

    let invalid = dir.path().join("invalid.yaml");
    std::fs::write(
        &invalid,
        "listeners: [{name: t, address: \"127.0.0.1:1\", protocol: tcp, cluster: none}]\n",
    )
    .unwrap();
    let err = berth_proxy::run_from_file(&invalid, async {})
        .await
        .unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("unknown cluster \"none\""), "{chain}");

    // An address already taken by someone else.
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let busy = dir.path().join("busy.yaml");
    std::fs::write(
        &busy,
        format!("listeners: [{{name: web, address: \"{addr}\", protocol: http}}]\n"),
    )
    .unwrap();
    let err = berth_proxy::run_from_file(&busy, async {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot bind listener \"web\""),
        "{err}"
    );
}

#[tokio::test]
async fn udp_sessions_per_client_relay_and_expire() {
    // A UDP echo backend that prefixes its answers with "echo:".
    let backend = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = backend.recv_from(&mut buf).await {
            let mut answer = b"echo:".to_vec();
            answer.extend_from_slice(&buf[..n]);
            let _ = backend.send_to(&answer, from).await;
        }
    });
    let port = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp = port.local_addr().unwrap();
    drop(port);
    let admin = free_port().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("udp.yaml");
    std::fs::write(
        &path,
        format!(
            "listeners: [{{name: dns, address: \"{udp}\", protocol: udp, cluster: dns, idle_timeout_ms: 300}}]\n\
             admin: {{address: \"{admin}\"}}\n\
             clusters: [{{name: dns, lb_policy: ring_hash, endpoints: [{{address: \"{backend_addr}\"}}]}}]\n"
        ),
    )
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        berth_proxy::run_from_file(&path, async move {
            let _ = stopped.await;
        })
        .await
    });
    wait_for("the admin listener", || async {
        TcpStream::connect(admin).await.is_ok()
    })
    .await;

    let clients = [
        tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    ];
    for (i, client) in clients.iter().enumerate() {
        client.connect(udp).await.unwrap();
        for n in 0..3 {
            let message = format!("client {i} message {n}");
            client.send(message.as_bytes()).await.unwrap();
            let mut buf = [0u8; 1500];
            let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                .await
                .expect("no udp answer")
                .unwrap();
            assert_eq!(&buf[..len], format!("echo:{message}").as_bytes());
        }
    }
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metrics.contains("berth_proxy_connections_total{listener=\"dns\"} 2"),
        "one session per client: {metrics}"
    );
    // Idle sessions end after the idle timeout.
    wait_for("sessions to expire", || async {
        admin_get(admin, "/metrics")
            .await
            .1
            .contains("berth_proxy_connections_open{listener=\"dns\"} 0")
    })
    .await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
