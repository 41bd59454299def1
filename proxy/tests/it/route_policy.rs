//! Route policy: header matches, host rewrite, header edits, per-route timeout and retries.

use std::net::SocketAddr;

use berth_proxy::{Config, HeaderMatch, HeaderToAdd, Proxy, RetryPolicy, Route, VirtualHost};
use bytes::Bytes;
use http::StatusCode;
use tokio::net::TcpListener;

use crate::support::{Backend, Harness, TestClient, cluster, dead_addr};

async fn serve(config: Config) -> (Proxy, TestClient) {
    let proxy = Proxy::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let p = proxy.clone();
    tokio::spawn(async move { p.serve_http(listener, std::future::pending()).await });
    (proxy, Harness::client_for(addr))
}

fn route(prefix: &str, cluster: &str) -> Route {
    Route {
        path_prefix: prefix.into(),
        cluster: cluster.into(),
        ..Route::default()
    }
}

fn header(name: &str) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        ..HeaderMatch::default()
    }
}

fn all_hosts(routes: Vec<Route>) -> Vec<VirtualHost> {
    vec![VirtualHost {
        name: "all".into(),
        domains: vec!["*".into()],
        routes,
    }]
}

async fn get(client: &TestClient, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let reply = client.send("any", "GET", path, Bytes::new(), headers).await;
    (reply.status, reply.body)
}

type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn header_matches_choose_among_routes_of_one_prefix() {
    let backends = [
        Backend::start("canary").await,
        Backend::start("v2").await,
        Backend::start("user").await,
        Backend::start("default").await,
        Backend::start("api").await,
    ];
    let canary = Route {
        headers: vec![HeaderMatch {
            exact: Some("1".into()),
            ..header("X-Canary")
        }],
        ..route("/", "canary")
    };
    // Both must hold.
    let v2 = Route {
        headers: vec![
            HeaderMatch {
                prefix: Some("v2".into()),
                ..header("x-version")
            },
            HeaderMatch {
                present: Some(false),
                ..header("x-debug")
            },
        ],
        ..route("/", "v2")
    };
    let user = Route {
        headers: vec![HeaderMatch {
            regex: Some("[0-9]{3}".into()),
            ..header("x-user")
        }],
        ..route("/", "user")
    };
    let api = Route {
        headers: vec![HeaderMatch {
            present: Some(true),
            ..header("x-api")
        }],
        ..route("/api", "api")
    };
    let config = Config {
        virtual_hosts: all_hosts(vec![canary, v2, user, route("/", "default"), api]),
        clusters: backends
            .iter()
            .map(|b| cluster(b.name, &[b.addr]))
            .collect(),
        ..Config::default()
    };
    let (_proxy, client) = serve(config).await;
    // (path, request headers, backend that should answer)
    let cases: &[Case<'_>] = &[
        ("/", &[], "default"),
        ("/", &[("x-canary", "1")], "canary"),
        ("/", &[("x-canary", "0")], "default"),
        ("/", &[("x-canary", "0"), ("x-canary", "1")], "canary"),
        ("/", &[("x-version", "v2.3")], "v2"),
        ("/", &[("x-version", "v2.3"), ("x-debug", "1")], "default"),
        ("/", &[("x-version", "v1")], "default"),
        ("/", &[("x-user", "123")], "user"),
        ("/", &[("x-user", "1234")], "default"),
        ("/", &[("x-canary", "1"), ("x-user", "123")], "canary"),
        // The longest prefix is tried first; when its headers do not match, shorter ones are.
        ("/api/x", &[("x-api", "")], "api"),
        ("/api/x", &[], "default"),
        ("/api/x", &[("x-user", "123")], "user"),
    ];
    for &(path, headers, want) in cases {
        let (status, body) = get(&client, path, headers).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, want),
            "{path} {headers:?}"
        );
    }
}

#[tokio::test]
async fn routes_rewrite_host_and_edit_headers_both_ways() {
    let b = Backend::start("b").await;
    let edited = Route {
        host_rewrite: Some("internal.svc:8080".into()),
        request_headers_to_remove: vec!["x-secret".into()],
        request_headers_to_add: vec![
            HeaderToAdd {
                name: "x-env".into(),
                value: "prod".into(),
                append: false,
            },
            HeaderToAdd {
                name: "x-tag".into(),
                value: "added".into(),
                append: true,
            },
        ],
        response_headers_to_remove: vec!["x-backend".into()],
        response_headers_to_add: vec![HeaderToAdd {
            name: "x-served-by".into(),
            value: "berth".into(),
            append: false,
        }],
        ..route("/echo", "c")
    };
    let config = Config {
        virtual_hosts: all_hosts(vec![edited, route("/", "c")]),
        clusters: vec![cluster("c", &[b.addr])],
        ..Config::default()
    };
    let (_proxy, client) = serve(config).await;
    let reply = client
        .send(
            "public.example",
            "GET",
            "/echo",
            Bytes::new(),
            &[("x-secret", "s"), ("x-env", "dev"), ("x-tag", "mine")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.body;
    assert!(body.contains("\nhost: internal.svc:8080\n"), "{body}");
    assert!(
        body.contains("\nx-forwarded-host: public.example\n"),
        "the client's host stays in X-Forwarded-Host: {body}"
    );
    assert!(!body.contains("x-secret"), "{body}");
    assert!(body.contains("\nx-env: prod\n"), "{body}");
    assert!(!body.contains("x-env: dev"), "{body}");
    assert!(
        body.contains("\nx-tag: mine\nx-tag: added\n"),
        "appended: {body}"
    );
    assert!(!reply.headers.contains_key("x-backend"));
    assert_eq!(reply.headers["x-served-by"], "berth");
    assert_eq!(reply.headers["x-kept"], "1");

    // A route without edits changes nothing.
    let reply = client
        .send("public.example", "GET", "/", Bytes::new(), &[])
        .await;
    assert_eq!(reply.headers["x-backend"], "b");
    assert!(!reply.headers.contains_key("x-served-by"));
}

#[tokio::test]
async fn route_timeout_overrides_the_clusters() {
    let b = Backend::start("b").await;
    // The backend answers "/slow" after 300 ms. `cluster_ms` and the route's `timeout_ms`.
    let cases = [
        (100, None, StatusCode::GATEWAY_TIMEOUT),
        (100, Some(2000), StatusCode::OK),
        (100, Some(0), StatusCode::OK),
        (15_000, Some(100), StatusCode::GATEWAY_TIMEOUT),
    ];
    for (cluster_ms, route_ms, want) in cases {
        let mut c = cluster("c", &[b.addr]);
        c.request_timeout_ms = cluster_ms;
        let config = Config {
            virtual_hosts: all_hosts(vec![Route {
                timeout_ms: route_ms,
                ..route("/", "c")
            }]),
            clusters: vec![c],
            ..Config::default()
        };
        let (_proxy, client) = serve(config).await;
        assert_eq!(
            get(&client, "/slow", &[]).await.0,
            want,
            "cluster {cluster_ms} ms, route {route_ms:?}"
        );
    }
}

#[tokio::test]
async fn route_retry_policy_overrides_the_clusters() {
    let b = Backend::start("b").await;
    let dead = dead_addr().await;
    let mut flaky = cluster("c", &[dead, b.addr]);
    flaky.retries = RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    };
    // Keep the dead endpoint in rotation, so that every other request meets it.
    flaky.outlier_detection = None;
    let config = Config {
        virtual_hosts: all_hosts(vec![
            route("/", "c"),
            Route {
                retries: Some(RetryPolicy::default()),
                ..route("/retried", "c")
            },
        ]),
        clusters: vec![flaky],
        ..Config::default()
    };
    let (_proxy, client) = serve(config).await;
    let mut plain = Vec::new();
    let mut retried = Vec::new();
    for _ in 0..6 {
        plain.push(get(&client, "/", &[]).await.0);
        retried.push(get(&client, "/retried", &[]).await.0);
    }
    assert!(
        plain.contains(&StatusCode::BAD_GATEWAY),
        "the cluster does not retry: {plain:?}"
    );
    assert!(
        retried.iter().all(|s| *s == StatusCode::OK),
        "the route retries connect failures: {retried:?}"
    );
}

#[tokio::test]
async fn bad_route_fields_are_refused_by_name() {
    let b: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let check = |routes: Vec<Route>, want: &str| {
        let config = Config {
            virtual_hosts: all_hosts(routes),
            clusters: vec![cluster("c", &[b])],
            ..Config::default()
        };
        let error = Proxy::new(config).unwrap_err().to_string();
        assert!(error.contains(want), "{error:?} should mention {want:?}");
    };
    check(
        vec![Route {
            headers: vec![HeaderMatch {
                regex: Some("(".into()),
                ..header("x")
            }],
            ..route("/", "c")
        }],
        "route \"/\" in virtual host \"all\": headers[0].regex",
    );
    check(
        vec![Route {
            headers: vec![header("x")],
            ..route("/", "c")
        }],
        "headers[0]: give exactly one",
    );
    check(
        vec![
            route("/", "c"),
            Route {
                headers: vec![HeaderMatch {
                    present: Some(true),
                    ..header("x")
                }],
                ..route("/", "c")
            },
        ],
        "headers: unreachable",
    );
    let canary = Route {
        headers: vec![HeaderMatch {
            exact: Some("1".into()),
            ..header("x-canary")
        }],
        ..route("/", "c")
    };
    check(
        vec![canary.clone(), canary],
        "has two routes with path prefix \"/\"",
    );
    check(
        vec![Route {
            request_headers_to_add: vec![HeaderToAdd {
                name: "content-length".into(),
                value: "1".into(),
                append: false,
            }],
            ..route("/", "c")
        }],
        "request_headers_to_add[0].name",
    );
    check(
        vec![Route {
            host_rewrite: Some("bad host".into()),
            ..route("/", "c")
        }],
        "host_rewrite",
    );
}
