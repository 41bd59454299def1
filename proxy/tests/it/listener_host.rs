//! An HTTP listener bound to one virtual host (a service VIP) sends every request there,
//! whatever its Host header; other listeners still choose by Host.

use std::net::SocketAddr;

use berth_proxy::{Config, Listener, ListenerProtocol, Listeners, Proxy};

use crate::support::{Backend, Harness, cluster, dead_addr, vhost};

fn http_listener(name: &str, address: SocketAddr, virtual_host: Option<&str>) -> Listener {
    Listener {
        name: name.into(),
        address,
        protocol: ListenerProtocol::Http,
        cluster: None,
        proxy_protocol: None,
        idle_timeout_ms: None,
        tls: None,
        virtual_host: virtual_host.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_listener_bound_to_a_virtual_host_ignores_the_host_header() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let (bound, open) = (dead_addr().await, dead_addr().await);
    let config = Config {
        clusters: vec![cluster("ca", &[a.addr]), cluster("cb", &[b.addr])],
        virtual_hosts: vec![
            vhost("va", &["a.example"], &[("/", "ca")]),
            vhost("vb", &["b.example"], &[("/", "cb")]),
        ],
        listeners: vec![
            http_listener("vip", bound, Some("vb")),
            http_listener("open", open, None),
        ],
        ..Config::default()
    };
    let proxy = Proxy::new(config.clone()).unwrap();
    let mut listeners = Listeners::default();
    listeners.reconcile(&proxy, &config).await.unwrap();

    for host in ["b", "b.shop", "a.example", "10.96.0.9", "anything"] {
        let reply = Harness::client_for(bound).get(host, "/").await;
        assert_eq!(reply.status, 200, "Host {host}");
        assert_eq!(reply.headers["x-backend"], "b", "Host {host}");
    }
    let reply = Harness::client_for(open).get("a.example", "/").await;
    assert_eq!(reply.headers["x-backend"], "a");
    let reply = Harness::client_for(open).get("anything", "/").await;
    assert_eq!(reply.status, 404);
    listeners.stop_all().await;
}

#[test]
fn a_bound_listener_must_name_a_virtual_host_and_be_http() {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let unknown = Proxy::new(Config {
        listeners: vec![http_listener("vip", addr, Some("nope"))],
        ..Config::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        unknown.contains("virtual_host names no configured virtual host"),
        "{unknown}"
    );
    let tcp = Proxy::new(Config {
        clusters: vec![cluster("c", &[addr])],
        virtual_hosts: vec![vhost("v", &["v"], &[("/", "c")])],
        listeners: vec![Listener {
            protocol: ListenerProtocol::Tcp,
            cluster: Some("c".into()),
            ..http_listener("vip", addr, Some("v"))
        }],
        ..Config::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        tcp.contains("virtual_host is only for http listeners"),
        "{tcp}"
    );
}
