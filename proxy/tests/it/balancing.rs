use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use berth_proxy::{Cluster, Config, HashPolicy, LbPolicy, Proxy};
use bytes::Bytes;
use http::StatusCode;
use tokio::net::TcpListener;

use crate::support::{Backend, Harness, cluster, vhost};

/// A proxy with one virtual host "*" in front of `cluster`, on 127.0.0.1:0.
async fn serve(cluster: Cluster) -> (Proxy, SocketAddr) {
    let name = cluster.name.clone();
    let proxy = Proxy::new(Config {
        virtual_hosts: vec![vhost("all", &["*"], &[("/", &name)])],
        clusters: vec![cluster],
        ..Config::default()
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let p = proxy.clone();
    tokio::spawn(async move { p.serve_http(listener, std::future::pending()).await });
    (proxy, addr)
}

async fn backends(n: usize) -> Vec<Backend> {
    const NAMES: [&str; 6] = ["b0", "b1", "b2", "b3", "b4", "b5"];
    let mut out = Vec::new();
    for name in &NAMES[..n] {
        out.push(Backend::start(name).await);
    }
    out
}

fn with_policy(backends: &[Backend], policy: LbPolicy, hash: HashPolicy) -> Cluster {
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    Cluster {
        lb_policy: policy,
        hash_policy: hash,
        ..cluster("c", &addrs)
    }
}

#[tokio::test]
async fn ring_hash_by_header_pins_each_key_and_spreads_keys() {
    let b = backends(3).await;
    let (_proxy, addr) = serve(with_policy(
        &b,
        LbPolicy::RingHash,
        HashPolicy::Header {
            name: "x-user".into(),
        },
    ))
    .await;
    let h = Harness::client_for(addr);
    let mut owners = HashMap::new();
    for user in 0..30 {
        let key = format!("user-{user}");
        let first = h
            .send("any", "GET", "/", Bytes::new(), &[("x-user", &key)])
            .await
            .body;
        for _ in 0..3 {
            let again = h
                .send("any", "GET", "/", Bytes::new(), &[("x-user", &key)])
                .await
                .body;
            assert_eq!(again, first, "key {key} moved");
        }
        *owners.entry(first).or_insert(0) += 1;
    }
    assert_eq!(
        owners.len(),
        3,
        "30 keys over 3 endpoints use them all: {owners:?}"
    );
}

#[tokio::test]
async fn source_ip_affinity_and_maglev_by_cookie() {
    let b = backends(3).await;
    let (_proxy, addr) = serve(with_policy(&b, LbPolicy::RingHash, HashPolicy::SourceIp)).await;
    let h = Harness::client_for(addr);
    let first = h.get("any", "/").await.body;
    for _ in 0..10 {
        assert_eq!(
            h.get("any", "/").await.body,
            first,
            "one client IP, one endpoint"
        );
    }

    let (_proxy, addr) = serve(with_policy(
        &b,
        LbPolicy::Maglev,
        HashPolicy::Cookie {
            name: "session".into(),
        },
    ))
    .await;
    let h = Harness::client_for(addr);
    let mut owners = HashMap::new();
    for s in 0..30 {
        let cookie = format!("theme=dark; session=s{s}");
        let first = h
            .send("any", "GET", "/", Bytes::new(), &[("cookie", &cookie)])
            .await
            .body;
        let again = h
            .send("any", "GET", "/", Bytes::new(), &[("cookie", &cookie)])
            .await
            .body;
        assert_eq!(first, again);
        *owners.entry(first).or_insert(0) += 1;
    }
    assert_eq!(owners.len(), 3, "{owners:?}");
}

#[tokio::test]
async fn least_request_avoids_the_endpoint_with_slow_requests() {
    let b = backends(2).await;
    let (proxy, addr) = serve(with_policy(
        &b,
        LbPolicy::LeastRequest,
        HashPolicy::SourceIp,
    ))
    .await;
    let h = Harness::client_for(addr);
    // Pin ten slow requests on b0: with only b0 listed, they all go there.
    proxy
        .update_endpoints("c", crate::support::endpoints(&[b[0].addr]))
        .unwrap();
    let slow: Vec<_> = (0..10)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.get("any", "/slow").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Both listed again: the in-flight counts of b0 survived the update.
    proxy
        .update_endpoints("c", crate::support::endpoints(&[b[0].addr, b[1].addr]))
        .unwrap();
    for _ in 0..10 {
        assert_eq!(h.get("any", "/").await.body, "b1");
    }
    for s in slow {
        assert_eq!(s.await.unwrap().status, StatusCode::OK);
    }
}

#[tokio::test]
async fn random_uses_every_endpoint() {
    let b = backends(3).await;
    let (_proxy, addr) = serve(with_policy(&b, LbPolicy::Random, HashPolicy::SourceIp)).await;
    let h = Harness::client_for(addr);
    let mut seen = HashMap::new();
    for _ in 0..60 {
        *seen.entry(h.get("any", "/").await.body).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[tokio::test]
async fn request_timeout_answers_504() {
    let b = backends(1).await;
    let (_proxy, addr) = serve(Cluster {
        request_timeout_ms: 100,
        ..cluster("c", &[b[0].addr])
    })
    .await;
    let h = Harness::client_for(addr);
    let reply = h.get("any", "/slow").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.body, "upstream timeout\n");
    assert_eq!(h.get("any", "/").await.status, StatusCode::OK);
}

fn cookie_of(reply: &crate::support::Reply) -> Option<String> {
    let set = reply.headers.get("set-cookie")?.to_str().unwrap();
    Some(set.split(';').next().unwrap().to_owned())
}

#[tokio::test]
async fn sticky_cookie_survives_scale_out_and_fails_over_on_removal() {
    let b = backends(5).await;
    let addrs: Vec<SocketAddr> = b.iter().map(|b| b.addr).collect();
    let (proxy, addr) = serve(Cluster {
        sticky: Some(berth_proxy::StickySessions {
            cookie_name: "srv".into(),
            ..Default::default()
        }),
        ..cluster("c", &addrs[..2])
    })
    .await;
    let h = Harness::client_for(addr);
    let first = h.get("any", "/").await;
    let cookie = cookie_of(&first).expect("first answer pins the client");
    assert!(cookie.starts_with("srv="), "{cookie}");
    let pinned = first.body.clone();
    let with_cookie = |cookie: String| {
        let h = h.clone();
        async move {
            h.send(
                "any",
                "GET",
                "/",
                Bytes::new(),
                &[("cookie", &format!("a=b; {cookie}"))],
            )
            .await
        }
    };
    for _ in 0..6 {
        let reply = with_cookie(cookie.clone()).await;
        assert_eq!(reply.body, pinned, "round robin alone would alternate");
        assert!(
            cookie_of(&reply).is_none(),
            "a valid cookie is not re-issued"
        );
    }

    // Scale out to five endpoints: the session stays.
    proxy
        .update_endpoints("c", crate::support::endpoints(&addrs))
        .unwrap();
    for _ in 0..6 {
        assert_eq!(with_cookie(cookie.clone()).await.body, pinned);
    }

    // Remove the pinned endpoint: the next request fails over and gets a new cookie.
    let remaining: Vec<SocketAddr> = b
        .iter()
        .filter(|x| x.name != pinned)
        .map(|x| x.addr)
        .collect();
    proxy
        .update_endpoints("c", crate::support::endpoints(&remaining))
        .unwrap();
    let moved = with_cookie(cookie.clone()).await;
    assert_eq!(moved.status, StatusCode::OK);
    assert_ne!(moved.body, pinned);
    let new_cookie = cookie_of(&moved).expect("re-issued after failover");
    for _ in 0..6 {
        assert_eq!(with_cookie(new_cookie.clone()).await.body, moved.body);
    }

    // A forged cookie is ignored and replaced.
    let forged = h
        .send(
            "any",
            "GET",
            "/",
            Bytes::new(),
            &[(
                "cookie",
                "srv=0011223344556677.ffffffff.00112233445566778899aabbccddeeff",
            )],
        )
        .await;
    assert_eq!(forged.status, StatusCode::OK);
    assert!(cookie_of(&forged).is_some());
}
