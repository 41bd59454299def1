//! The API over HTTP, in process: a real listener on loopback port 0, the real client.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::Kind;
use crate::auth::{Auth, Role};
use crate::client::Client;
use crate::store::Store;

use super::WatchLine;

/// A server on loopback with its own store and token file, stopped on drop.
struct TestServer {
    base: String,
    auth: Arc<Auth>,
    store: Store,
    stop: CancellationToken,
}

impl TestServer {
    async fn start(dir: &std::path::Path) -> TestServer {
        Self::with_network(dir, crate::controller::Network::default()).await
    }

    /// With an address plan; the controllers run too, as in `berth server`.
    async fn with_network(
        dir: &std::path::Path,
        network: crate::controller::Network,
    ) -> TestServer {
        let store = Store::open(&dir.join("store")).unwrap();
        let auth = Arc::new(Auth::open(dir).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(super::run(
            store.clone(),
            auth.clone(),
            Arc::new(crate::events::EventLog::default()),
            listener,
            None,
            Arc::new(network.clone()),
            stop.clone(),
        ));
        tokio::spawn(crate::controller::run(
            store.clone(),
            crate::controller::Config {
                network,
                ..Default::default()
            },
            stop.clone(),
        ));
        TestServer {
            base,
            auth,
            store,
            stop,
        }
    }

    fn admin(&self) -> Client {
        let t = self.auth.token_for(Role::Admin, None).unwrap();
        Client::with_token(&self.base, Some(&t)).unwrap()
    }

    /// One request with the admin token; the status and body.
    async fn raw(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use http_body_util::BodyExt;
        let addr = self.base.trim_start_matches("http://").to_owned();
        let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (mut tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let t = self.auth.token_for(Role::Admin, None).unwrap();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, addr)
            .header(http::header::AUTHORIZATION, format!("Bearer {t}"))
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        (status, text)
    }

    fn client(&self, name: &str, role: Role, node: Option<&str>) -> Client {
        let t = self.auth.create(name, role, node).unwrap();
        Client::with_token(&self.base, Some(&t)).unwrap()
    }
}

impl TestServer {
    /// Stops this server and starts another on the same data directory, as a restart does.
    async fn restart(
        self,
        dir: &std::path::Path,
        network: crate::controller::Network,
    ) -> TestServer {
        drop(self);
        // The old tasks let go of the database as they notice the stop.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(&dir.join("store")) {
                Ok(s) => {
                    drop(s);
                    break;
                }
                Err(e) if std::time::Instant::now() > deadline => panic!("store still open: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
        Self::with_network(dir, network).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn yaml(text: &str) -> Vec<crate::api::Object> {
    crate::manifest::parse_str("test.yaml", text).unwrap()
}

/// The next object event of a watch, skipping bookmarks.
async fn next_object(w: &mut crate::client::WatchStream) -> crate::api::Object {
    loop {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(10), w.next_batch())
            .await
            .expect("a watch event within 10 s")
            .unwrap()
            .expect("the watch stays open");
        for l in batch {
            match l {
                WatchLine::Added { object, .. }
                | WatchLine::Modified { object, .. }
                | WatchLine::Deleted { object, .. } => return object,
                WatchLine::Bookmark { .. } => {}
                WatchLine::Error { message, .. } => panic!("watch error: {message}"),
            }
        }
    }
}

fn secret_data(o: &crate::api::Object) -> &std::collections::BTreeMap<String, String> {
    match o {
        crate::api::Object::Secret(s) => &s.data,
        o => panic!("not a secret: {o:?}"),
    }
}

#[tokio::test]
async fn node_tokens_read_tls_secrets_and_no_opaque_data() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let admin = s.admin();
    let node = s.client("node-a", Role::Node, Some("a"));
    let viewer = s.client("viewer", Role::Viewer, None);
    // Stored directly: the API would check that these are PEM, which is beside the point here.
    let (crt, key) = ("CERTIFICATE".to_owned(), "PRIVATE KEY".to_owned());
    let tls = crate::api::Object::Secret(crate::api::Secret {
        metadata: crate::api::Metadata {
            name: "cert".into(),
            namespace: "default".into(),
            ..Default::default()
        },
        kind: crate::api::SecretType::Tls,
        data: [
            ("tls.crt".to_owned(), crt.clone()),
            ("tls.key".to_owned(), key.clone()),
        ]
        .into(),
    });
    s.store.apply(vec![tls]).unwrap();
    admin
        .apply(&yaml(
            "kind: Secret\nmetadata: {name: db}\ntype: opaque\ndata: {password: hunter2hunter2}\n",
        ))
        .await
        .unwrap();

    // GET by name: the TLS secret whole, the opaque one refused with the reason.
    let got = node
        .get(Kind::Secret, "default", "cert")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(secret_data(&got)["tls.key"], key);
    let err = node
        .get(Kind::Secret, "default", "db")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("(403)") && err.contains("only secrets of type tls"),
        "{err}"
    );

    // An opaque secret labelled for the data plane (a sticky-cookie key): readable too.
    admin
        .apply(&yaml(
            "kind: Secret\nmetadata: {name: sticky, labels: {berth.io/data-plane: \"true\"}}\ntype: opaque\ndata: {key: 0123456789abcdef}\n",
        ))
        .await
        .unwrap();
    let got = node
        .get(Kind::Secret, "default", "sticky")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(secret_data(&got)["key"], "0123456789abcdef");
    admin
        .delete(Kind::Secret, "default", "sticky")
        .await
        .unwrap();

    // List: the TLS secret whole, the opaque one present but redacted.
    let list = node.list(Kind::Secret, None).await.unwrap();
    assert_eq!(list.items.len(), 2);
    for o in &list.items {
        match o.meta().name.as_str() {
            "cert" => assert_eq!(secret_data(o)["tls.crt"], crt),
            _ => assert_eq!(secret_data(o)["password"], "<redacted: 14 bytes>"),
        }
    }

    // Watch: the initial listing and later changes, same rules.
    let mut w = node.watch(Kind::Secret, None, None).await.unwrap();
    let mut initial = [next_object(&mut w).await, next_object(&mut w).await];
    initial.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    assert_eq!(secret_data(&initial[0])["tls.key"], key);
    assert_eq!(secret_data(&initial[1])["password"], "<redacted: 14 bytes>");
    admin
        .apply(&yaml(
            "kind: Secret\nmetadata: {name: db}\ntype: opaque\ndata: {password: swordfish}\n",
        ))
        .await
        .unwrap();
    let changed = next_object(&mut w).await;
    assert_eq!(secret_data(&changed)["password"], "<redacted: 9 bytes>");

    // Viewers still see no data at all, TLS keys included.
    let got = viewer
        .get(Kind::Secret, "default", "cert")
        .await
        .unwrap()
        .unwrap();
    assert!(secret_data(&got)["tls.key"].starts_with("<redacted"));
    let list = viewer.list(Kind::Secret, None).await.unwrap();
    assert!(
        list.items
            .iter()
            .all(|o| secret_data(o).values().all(|v| v.starts_with("<redacted")))
    );
    // Admins see everything.
    let got = admin
        .get(Kind::Secret, "default", "db")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(secret_data(&got)["password"], "swordfish");
}

/// Polls until `f` holds for the object, for at most 10 s; returns the object.
async fn until(
    c: &Client,
    kind: Kind,
    ns: &str,
    name: &str,
    f: impl Fn(&crate::api::Object) -> bool,
) -> crate::api::Object {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let o = c.get(kind, ns, name).await.unwrap();
        match o {
            Some(o) if f(&o) => return o,
            o if std::time::Instant::now() > deadline => panic!("never true: {o:?}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

fn vip_of(o: &crate::api::Object) -> Option<String> {
    match o {
        crate::api::Object::Service(s) => s.status.vip.map(|v| v.to_string()),
        _ => None,
    }
}

async fn vip(c: &Client, name: &str) -> String {
    let o = until(c, Kind::Service, "default", name, |o| vip_of(o).is_some()).await;
    vip_of(&o).unwrap_or_default()
}

fn service(name: &str, extra: &str) -> Vec<crate::api::Object> {
    yaml(&format!(
        "kind: Service\nmetadata: {{name: {name}}}\nspec:\n  app: web\n  ports: [{{name: http, port: 80, appProtocol: http}}]\n{extra}"
    ))
}

fn network(cluster: Option<&str>, services: Option<&str>) -> crate::controller::Network {
    crate::controller::Network::new(
        cluster.map(|c| c.parse().unwrap()),
        None,
        services.map(|c| c.parse().unwrap()),
    )
    .unwrap()
}

#[tokio::test]
async fn service_vips_are_allocated_kept_validated_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(None, Some("10.96.0.0/29"));
    let s = TestServer::with_network(dir.path(), net.clone()).await;
    let admin = s.admin();
    admin.apply(&service("a", "")).await.unwrap();
    assert_eq!(vip(&admin, "a").await, "10.96.0.2");
    admin
        .apply(&service("b", "  clusterIP: 10.96.0.4\n"))
        .await
        .unwrap();
    assert_eq!(vip(&admin, "b").await, "10.96.0.4");
    // A VIP in the declared status is not taken from the user.
    admin
        .apply(&service("c", "status: {vip: 10.96.0.6}\n"))
        .await
        .unwrap();
    assert_eq!(vip(&admin, "c").await, "10.96.0.3");
    admin
        .apply(&service("h", "  headless: true\n"))
        .await
        .unwrap();

    // Apply of a changed spec keeps the VIP, and appProtocol is stored.
    let changed = yaml(
        "kind: Service\nmetadata: {name: a}\nspec:\n  app: web\n  ports: [{name: http, port: 8080, appProtocol: tcp}]\n",
    );
    admin.apply(&changed).await.unwrap();
    let a = until(
        &admin,
        Kind::Service,
        "default",
        "a",
        |o| matches!(o, crate::api::Object::Service(s) if s.spec.ports[0].port == 8080),
    )
    .await;
    assert_eq!(vip_of(&a).as_deref(), Some("10.96.0.2"));
    let crate::api::Object::Service(a) = a else {
        panic!()
    };
    assert_eq!(a.spec.ports[0].app_protocol.as_deref(), Some("tcp"));

    // Refused with the reason: taken, outside, reserved, changed, headless, bad appProtocol.
    let refused = |extra: &str| {
        let objs = service("d", extra);
        let admin = admin.clone();
        async move { admin.apply(&objs).await.unwrap_err().to_string() }
    };
    let e = refused("  clusterIP: 10.96.0.4\n").await;
    assert!(
        e.contains("spec.clusterIP: 10.96.0.4 is already allocated to service default/b")
            && e.contains("(422)"),
        "{e}"
    );
    let e = refused("  clusterIP: 10.97.0.4\n").await;
    assert!(e.contains("not in the service range 10.96.0.0/29"), "{e}");
    let e = refused("  clusterIP: 10.96.0.1\n").await;
    assert!(e.contains("10.96.0.1 is reserved"), "{e}");
    let (status, e) = s
        .raw(
            "POST",
            "/api/v1/apply",
            r#"{"kind":"Service","metadata":{"name":"d"},"spec":{"app":"web","headless":true,"clusterIP":"10.96.0.5","ports":[{"name":"http","port":80}]}}"#,
        )
        .await;
    assert!(
        status == 422 && e.contains("spec.clusterIP: a headless service has no VIP"),
        "{e}"
    );
    let e = admin
        .apply(&service("b", "  clusterIP: 10.96.0.5\n"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot change: the service has the VIP 10.96.0.4"),
        "{e}"
    );
    let bad = serde_json::json!([{"kind": "Service", "metadata": {"name": "p"}, "spec": {"app": "web", "ports": [{"name": "http", "port": 80, "appProtocol": "grpc"}]}}]);
    let e = crate::manifest::check_object(bad[0].clone())
        .unwrap_err()
        .join("\n");
    assert!(
        e.contains("spec.ports[0].appProtocol: \"grpc\" must be http or tcp"),
        "{e}"
    );

    // Delete frees; after a restart the allocated set is rebuilt from the store: the freed
    // address is given again, the held ones never.
    admin.delete(Kind::Service, "default", "a").await.unwrap();
    let s = s.restart(dir.path(), net.clone()).await;
    let admin = s.admin();
    admin.apply(&service("e", "")).await.unwrap();
    assert_eq!(vip(&admin, "e").await, "10.96.0.2");
    admin.apply(&service("f", "")).await.unwrap();
    assert_eq!(vip(&admin, "f").await, "10.96.0.5");
    assert_eq!(vip(&admin, "b").await, "10.96.0.4");
    assert_eq!(vip(&admin, "c").await, "10.96.0.3");
    admin.apply(&service("g", "")).await.unwrap();
    assert_eq!(vip(&admin, "g").await, "10.96.0.6");
    // Full.
    admin.apply(&service("x", "")).await.unwrap();
    let g = until(
        &admin,
        Kind::Service,
        "default",
        "x",
        |o| matches!(o, crate::api::Object::Service(s) if s.status.message.is_some()),
    )
    .await;
    let crate::api::Object::Service(g) = g else {
        panic!()
    };
    assert!(
        g.status
            .message
            .unwrap()
            .contains("range 10.96.0.0/29 is full"),
        "and says so"
    );
    let h = admin
        .get(Kind::Service, "default", "h")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(vip_of(&h), None);
    // Operators see the range fill up.
    let (status, m) = s.raw("GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert!(m.contains("berth_api_service_vips_allocated 5\n"), "{m}");
    assert!(m.contains("berth_api_service_vips_free 0.0\n"), "{m}");
}

fn node_json(name: &str, extra: &str) -> crate::api::Object {
    let v: serde_json::Value = serde_json::from_str(&format!(
        r#"{{"kind":"Node","metadata":{{"name":"{name}"}},"spec":{{"address":"127.0.0.1","cpuMillis":1000,"memoryBytes":1073741824,"maxInstances":10{extra}}}}}"#
    ))
    .unwrap();
    serde_json::from_value(v).unwrap()
}

fn node_spec(o: &crate::api::Object) -> &crate::api::NodeSpec {
    match o {
        crate::api::Object::Node(n) => &n.spec,
        o => panic!("not a node: {o:?}"),
    }
}

async fn subnet(c: &Client, name: &str) -> String {
    let o = until(c, Kind::Node, "", name, |o| {
        node_spec(o).pod_subnet.is_some()
    })
    .await;
    node_spec(&o).pod_subnet.clone().unwrap_or_default()
}

#[tokio::test]
async fn nodes_keep_their_subnet_and_admin_taints_when_their_agent_registers_again() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(Some("10.244.0.0/16"), None);
    let s = TestServer::with_network(dir.path(), net.clone()).await;
    let admin = s.admin();
    let agent_a = s.client("node-a", Role::Node, Some("a"));
    let agent_b = s.client("node-b", Role::Node, Some("b"));
    // The registration's answer carries the subnet: the agent need not wait for it.
    let got = agent_a.put(&node_json("a", "")).await.unwrap();
    assert_eq!(node_spec(&got).pod_subnet.as_deref(), Some("10.244.0.0/24"));
    assert_eq!(subnet(&admin, "a").await, "10.244.0.0/24");
    agent_b.put(&node_json("b", "")).await.unwrap();
    assert_eq!(subnet(&admin, "b").await, "10.244.1.0/24");

    // The admin taints and cordons node a, without naming its subnet: the subnet stays.
    let taint = r#","unschedulable":true,"taints":[{"key":"dedicated","value":"gpu","effect":"NoSchedule"}]"#;
    let mut labelled = node_json("a", taint);
    labelled
        .meta_mut()
        .labels
        .insert("zone".into(), "z1".into());
    let got = admin.put(&labelled).await.unwrap();
    assert_eq!(node_spec(&got).pod_subnet.as_deref(), Some("10.244.0.0/24"));
    assert_eq!(
        node_spec(&got).taints[0].to_string(),
        "dedicated=gpu:NoSchedule"
    );
    // The agent restarts and registers with a full PUT: subnet, taints and cordon stay.
    let before = got.meta().revision;
    let got = agent_a.put(&node_json("a", "")).await.unwrap();
    let spec = node_spec(&got);
    assert_eq!(spec.pod_subnet.as_deref(), Some("10.244.0.0/24"));
    assert!(spec.unschedulable && spec.taints.len() == 1, "{spec:?}");
    assert_eq!(
        got.meta().labels.get("zone").map(String::as_str),
        Some("z1")
    );
    assert_eq!(got.meta().revision, before, "nothing changed: no write");

    // An admin-set subnet must not overlap another node's, nor change once given.
    let e = admin
        .put(&node_json("c", r#","podSubnet":"10.244.1.128/25""#))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("spec.podSubnet: 10.244.1.128/25 overlaps 10.244.1.0/24 of node b (409)"),
        "{e}"
    );
    let got = admin
        .put(&node_json("c", r#","podSubnet":"10.244.7.0/24""#))
        .await
        .unwrap();
    assert_eq!(node_spec(&got).pod_subnet.as_deref(), Some("10.244.7.0/24"));
    let e = admin
        .put(&node_json("a", r#","podSubnet":"10.244.9.0/24""#))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot change from 10.244.0.0/24 to 10.244.9.0/24"),
        "{e}"
    );
    // Bad input is named.
    for (extra, want) in [
        (
            r#","podSubnet":"10.244.9.1/24""#,
            "host bits are set (did you mean 10.244.9.0/24?)",
        ),
        (
            r#","podSubnet":"ten""#,
            "spec.podSubnet: \"ten\" is not a CIDR",
        ),
        (
            r#","taints":[{"key":"-x","effect":"NoSchedule"}]"#,
            "spec.taints[0].key: \"-x\" must be a label key",
        ),
        (
            r#","taints":[{"key":"x","effect":"NoSchedule"},{"key":"x","value":"y","effect":"NoSchedule"}]"#,
            "spec.taints[1]: duplicate taint \"x\" with effect NoSchedule",
        ),
        (
            r#","taints":[{"key":"x","effect":"Never"}]"#,
            "unknown variant `Never`",
        ),
    ] {
        let body = format!(
            r#"{{"metadata":{{"name":"d"}},"spec":{{"address":"127.0.0.1","cpuMillis":1000,"memoryBytes":1073741824,"maxInstances":10{extra}}}}}"#
        );
        let (status, e) = s.raw("PUT", "/api/v1/nodes/d", &body).await;
        assert!(status == 422 && e.contains(want), "{extra}: {status} {e}");
    }

    // Deleting a node frees its subnet; a restarted server rebuilds the taken set.
    admin.delete(Kind::Node, "", "b").await.unwrap();
    let s = s.restart(dir.path(), net.clone()).await;
    let admin = s.admin();
    let agent_d = s.client("node-d", Role::Node, Some("d"));
    agent_d.put(&node_json("d", "")).await.unwrap();
    assert_eq!(subnet(&admin, "d").await, "10.244.1.0/24");
    let agent_e = s.client("node-e", Role::Node, Some("e"));
    agent_e.put(&node_json("e", "")).await.unwrap();
    assert_eq!(subnet(&admin, "e").await, "10.244.2.0/24");
    assert_eq!(subnet(&admin, "a").await, "10.244.0.0/24");
    let (_, m) = s.raw("GET", "/metrics", "").await;
    assert!(m.contains("berth_api_node_subnets_allocated 4\n"), "{m}");
    assert!(m.contains("berth_api_node_subnets_free 252.0\n"), "{m}");
}

#[tokio::test]
async fn ipv6_plans_work_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(Some("fd00:10:244::/56"), Some("fd00:96::/112"));
    assert_eq!(net.node_prefix, 64, "Kubernetes' IPv6 default");
    let s = TestServer::with_network(dir.path(), net).await;
    let admin = s.admin();
    let agent = s.client("node-a", Role::Node, Some("a"));
    let got = agent.put(&node_json("a", "")).await.unwrap();
    assert_eq!(
        node_spec(&got).pod_subnet.as_deref(),
        Some("fd00:10:244::/64")
    );
    admin.put(&node_json("b", "")).await.unwrap();
    assert_eq!(subnet(&admin, "b").await, "fd00:10:244:1::/64");
    admin.apply(&service("a", "")).await.unwrap();
    assert_eq!(vip(&admin, "a").await, "fd00:96::2");
    let e = admin
        .apply(&service("b", "  clusterIP: 10.96.0.9\n"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("10.96.0.9 is not in the service range fd00:96::/112"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_and_services_never_share_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(Some("10.244.0.0/16"), Some("10.96.0.0/16"));
    let s = TestServer::with_network(dir.path(), net).await;
    let admin = s.admin();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let name = format!("n{i}");
        let agent = s.client(&format!("node-{name}"), Role::Node, Some(&name));
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            agent.put(&node_json(&name, "")).await.unwrap();
            // Services in the same breath, each its own apply.
            admin.apply(&service(&format!("s{i}"), "")).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut subnets = std::collections::BTreeSet::new();
    let mut vips = std::collections::BTreeSet::new();
    for i in 0..40 {
        assert!(subnets.insert(subnet(&admin, &format!("n{i}")).await));
        assert!(vips.insert(vip(&admin, &format!("s{i}")).await));
    }
    // The lowest ones, without gaps.
    assert_eq!(subnets.len(), 40);
    let expected: std::collections::BTreeSet<String> =
        (0..40).map(|i| format!("10.244.{i}.0/24")).collect();
    assert_eq!(subnets, expected);
    let expected: std::collections::BTreeSet<String> =
        (2..42).map(|i| format!("10.96.0.{i}")).collect();
    assert_eq!(vips, expected);
}

/// Not a check: prints how long allocation takes at scale, for the record
/// (`cargo test --release -p berth --lib -- --ignored --nocapture allocation_at_scale`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn allocation_at_scale() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(Some("10.244.0.0/16"), Some("10.96.0.0/16"));
    let s = TestServer::with_network(dir.path(), net).await;
    let admin = s.admin();
    let services: Vec<crate::api::Object> = (0..1000)
        .flat_map(|i| service(&format!("s{i}"), ""))
        .collect();
    let t = std::time::Instant::now();
    admin.apply(&services).await.unwrap();
    let applied = t.elapsed();
    loop {
        let list = admin.list(Kind::Service, None).await.unwrap();
        if list.items.iter().all(|o| vip_of(o).is_some()) {
            let vips: std::collections::BTreeSet<_> = list.items.iter().map(vip_of).collect();
            assert_eq!(vips.len(), 1000);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    println!(
        "case=vips services=1000 apply_ms={} all_allocated_ms={}",
        applied.as_millis(),
        t.elapsed().as_millis()
    );
    let mut lat = Vec::new();
    for i in 0..200 {
        let name = format!("n{i}");
        let agent = s.client(&format!("node-{name}"), Role::Node, Some(&name));
        let t = std::time::Instant::now();
        let got = agent.put(&node_json(&name, "")).await.unwrap();
        lat.push(t.elapsed());
        assert!(node_spec(&got).pod_subnet.is_some());
    }
    lat.sort();
    println!(
        "case=node_register nodes=200 p50_ms={:.2} p99_ms={:.2}",
        lat[100].as_secs_f64() * 1e3,
        lat[197].as_secs_f64() * 1e3
    );
}

fn instance_on(name: &str, node: Option<&str>) -> crate::api::Object {
    let node = node.map_or("null".to_owned(), |n| format!("{n:?}"));
    serde_json::from_str(&format!(
        r#"{{"kind": "Instance", "metadata": {{"name": "{name}", "namespace": "default"}},
            "spec": {{"app": "gone", "node": {node}, "template": {{"command": "true"}}}}}}"#
    ))
    .unwrap()
}

/// What an agent lists and watches: the instances of its own node only.
#[tokio::test]
async fn field_selectors_give_a_node_its_own_instances() {
    use crate::client::Filter;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server
        .store
        .transaction(|tx| {
            tx.put(instance_on("a-1", Some("n1")));
            tx.put(instance_on("b-1", Some("n2")));
            tx.put(instance_on("c-1", None));
            Ok(())
        })
        .unwrap();
    let c = server.admin();
    let list = c
        .list_filtered(Kind::Instance, None, &Filter::on_node("n1"))
        .await
        .unwrap();
    let names: Vec<&str> = list.items.iter().map(|o| o.meta().name.as_str()).collect();
    assert_eq!(names, ["a-1"]);

    let mut w = c
        .watch_filtered(
            Kind::Instance,
            None,
            &Filter::on_node("n1"),
            Some(list.revision),
        )
        .await
        .unwrap();
    for name in ["b-1", "c-1", "a-1"] {
        server
            .store
            .modify(Kind::Instance, "default", name, |o| {
                let crate::api::Object::Instance(i) = o else {
                    return false;
                };
                i.status.restarts += 1;
                true
            })
            .unwrap();
    }
    // Only a-1's changes arrive (the controllers may write it too, never the others).
    let mut seen = false;
    for _ in 0..5 {
        let o = next_object(&mut w).await;
        assert_eq!(o.meta().name, "a-1");
        if matches!(&o, crate::api::Object::Instance(i) if i.status.restarts == 1) {
            seen = true;
            break;
        }
    }
    assert!(seen, "a-1's status change never arrived");

    let (status, text) = server
        .raw("GET", "/api/v1/instances?fieldSelector=spec.app%3Dx", "")
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("spec.app=x"), "{text}");
    let (status, text) = server
        .raw("GET", "/api/v1/services?fieldSelector=spec.node%3Dn1", "")
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("only spec.node=NAME, on instances"), "{text}");
}
