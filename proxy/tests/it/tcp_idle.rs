//! The TCP listener's idle timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_proxy::{Config, Listener, ListenerProtocol, Listeners, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::cluster;

/// A TCP echo server.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

fn tcp_listener(address: SocketAddr, idle_timeout_ms: Option<u64>) -> Listener {
    Listener {
        name: "tcp".into(),
        address,
        protocol: ListenerProtocol::Tcp,
        cluster: Some("c".into()),
        proxy_protocol: None,
        idle_timeout_ms,
        tls: None,
        virtual_host: None,
    }
}

async fn serve(idle_timeout_ms: Option<u64>) -> (SocketAddr, Listeners, Proxy) {
    let backend = echo().await;
    let address = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let config = Config {
        clusters: vec![cluster("c", &[backend])],
        listeners: vec![tcp_listener(address, idle_timeout_ms)],
        ..Config::default()
    };
    let proxy = Proxy::new(config.clone()).unwrap();
    let mut listeners = Listeners::default();
    listeners.reconcile(&proxy, &config).await.unwrap();
    (address, listeners, proxy)
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut buf = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .expect("no echo")
        .unwrap();
    assert_eq!(buf, message);
}

#[tokio::test]
async fn idle_connections_are_closed_active_ones_kept() {
    let (address, _listeners, _proxy) = serve(Some(300)).await;

    // Active: a message every 100 ms for a second, three idle timeouts long.
    let mut active = TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    loop {
        round_trip(&mut active, b"ping").await;
        if started.elapsed() >= Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Then idle: closed by the proxy soon after 300 ms.
    let idle_since = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), active.read(&mut buf))
        .await
        .expect("the idle connection was not closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let idle = idle_since.elapsed();
    assert!(idle >= Duration::from_millis(250), "{idle:?}");
}

#[tokio::test]
async fn zero_turns_the_idle_timeout_off() {
    let (address, _listeners, _proxy) = serve(Some(0)).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    round_trip(&mut stream, b"hello").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    round_trip(&mut stream, b"still here").await;
}

#[tokio::test]
async fn idle_timeout_is_refused_on_http_listeners() {
    let error = Proxy::new(Config {
        listeners: vec![Listener {
            protocol: ListenerProtocol::Http,
            cluster: None,
            ..tcp_listener("127.0.0.1:1".parse().unwrap(), Some(1000))
        }],
        ..Config::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("listener \"tcp\": idle_timeout_ms is only for tcp and udp listeners"),
        "{error}"
    );
}
