//! The access log, in a test binary of its own. tracing keeps which call sites are enabled,
//! and the highest level any subscriber wants, in process-wide caches; a subscriber set for
//! one thread (`set_default`) while other tests' threads register the same call sites can
//! lose a race that leaves its events filtered out (seen once in `cargo test`: one access
//! line of two). Alone in its process, this test's subscriber is the global one.

#[allow(dead_code)] // The helpers the other integration tests use, not all of them here.
#[path = "it/support.rs"]
mod support;

use std::sync::{Arc, Mutex};

use berth_proxy::{Config, Proxy, RequestIdPolicy};
use bytes::Bytes;
use http::StatusCode;
use tokio::net::TcpListener;

use support::{Backend, Harness, cluster, vhost};

/// Log lines written through `tracing`, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_access_log_carries_the_request_id() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let backend = Backend::start("b").await;
    let proxy = Proxy::new(Config {
        virtual_hosts: vec![vhost("v", &["app.test"], &[("/", "c")])],
        clusters: vec![cluster("c", &[backend.addr])],
        request_id: RequestIdPolicy::Keep,
        ..Config::default()
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = Harness::client_for(listener.local_addr().unwrap());
    tokio::spawn(async move { proxy.serve_http(listener, std::future::pending()).await });

    let kept = client
        .send(
            "app.test",
            "GET",
            "/",
            Bytes::new(),
            &[("x-request-id", "log-me-42")],
        )
        .await;
    assert_eq!(kept.status, StatusCode::OK);
    let fresh = client.get("app.test", "/").await;
    assert_eq!(fresh.status, StatusCode::OK);
    let generated = fresh.headers["x-request-id"].to_str().unwrap();

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("berth_proxy::access"))
        .collect();
    assert_eq!(access.len(), 2, "{log}");
    assert!(access[0].contains("request_id=\"log-me-42\""), "{log}");
    assert!(
        access[1].contains(&format!("request_id=\"{generated}\"")),
        "{log}"
    );
}
