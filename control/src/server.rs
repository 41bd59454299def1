//! The API server: REST JSON over the store, apply, status subresources and NDJSON watches.
//!
//! Paths:
//! - `GET /healthz`
//! - `POST /api/v1/apply`: a JSON array of objects, validated, then created or updated atomically
//! - `GET /api/v1/{kind}`: list in every namespace; `?watch=1&revision=N` streams NDJSON events
//! - `GET /api/v1/namespaces/{ns}/{kind}` (same, one namespace)
//! - `GET|PUT|DELETE /api/v1/namespaces/{ns}/{kind}/{name}`, and `/api/v1/nodes/{name}`
//! - `PUT .../{kind}/{name}/status`: the status of an instance or node
//! - `PUT /api/v1/namespaces/{ns}/apps/{name}/scale`: `{"replicas": N}`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::api::{Kind, Object, Selector, user_kind};
use crate::auth::{Auth, Identity, Role, SecretAccess};
use crate::controller::Network;
use crate::events::{ClusterEvent, EventLog};
use crate::http_util::{Body, respond, serve_maybe_tls};
use crate::manifest::check_object;
use crate::store::{Event, Outcome, Store, StoreError};

mod metrics;

use metrics::{ApiMetrics, RequestLabels};

/// Largest request body accepted.
const MAX_BODY: usize = 8 << 20;
/// Events buffered per watch stream before the stream waits for its client.
const WATCH_BUFFER: usize = 256;
/// A watch with nothing to say sends a bookmark this often, so idle proxies keep it open and the
/// client learns the current revision.
const BOOKMARK_EVERY: Duration = Duration::from_secs(15);

/// A list response.
#[derive(Debug, Serialize, Deserialize)]
pub struct List {
    /// Revision the list is current at; watch from here.
    pub revision: u64,
    /// The objects.
    pub items: Vec<Object>,
}

/// One line of a watch stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "UPPERCASE")]
pub enum WatchLine {
    /// Created.
    Added {
        /// Revision of the change.
        revision: u64,
        /// The object.
        object: Object,
    },
    /// Changed.
    Modified {
        /// Revision of the change.
        revision: u64,
        /// The object.
        object: Object,
    },
    /// Deleted.
    Deleted {
        /// Revision of the change.
        revision: u64,
        /// The object as it was.
        object: Object,
    },
    /// Nothing new up to this revision.
    Bookmark {
        /// Current revision.
        revision: u64,
    },
    /// The watch ended; for `too old`, list again.
    Error {
        /// HTTP-like code: 410 for too old.
        code: u16,
        /// What happened.
        message: String,
    },
}

/// The result of one object of an apply.
#[derive(Debug, Serialize, Deserialize)]
pub struct Applied {
    /// `Kind namespace/name`.
    pub object: String,
    /// What happened.
    pub outcome: Outcome,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves the API on `listener` until `shutdown`. Every request but `/healthz` needs a token
/// from `auth`.
pub async fn run(
    store: Store,
    auth: Arc<Auth>,
    events: Arc<EventLog>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    network: Arc<Network>,
    shutdown: CancellationToken,
) {
    let stop = shutdown.clone();
    let metrics = Arc::new(ApiMetrics::new());
    serve_maybe_tls(
        listener,
        tls.map(tokio_rustls::TlsAcceptor::from),
        move |req| {
            let store = store.clone();
            let stop = stop.clone();
            let auth = auth.clone();
            let metrics = metrics.clone();
            let events = events.clone();
            let network = network.clone();
            async move {
                let started = Instant::now();
                let method = req.method().to_string();
                let ctx = Ctx {
                    store,
                    auth,
                    network,
                };
                let resp = handle(ctx, &metrics, &events, req, stop).await;
                let code = resp.status().as_u16();
                metrics
                    .requests
                    .get_or_create(&RequestLabels { method, code })
                    .inc();
                metrics.latency.observe(started.elapsed().as_secs_f64());
                resp
            }
        },
        shutdown,
        Duration::from_secs(2),
    )
    .await;
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding: {e}")),
    }
}

/// An error response: `{"code": 422, "error": "..."}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let body = serde_json::json!({"code": status.as_u16(), "error": message.into()});
    respond(status, "application/json", body.to_string())
}

fn store_error(e: StoreError) -> Response<Body> {
    let status = match &e {
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        StoreError::AlreadyExists(_) | StoreError::Conflict { .. } => StatusCode::CONFLICT,
        StoreError::TooOld { .. } => StatusCode::GONE,
        StoreError::Db(_) | StoreError::Corrupt { .. } => {
            tracing::error!(error = %e, "store failure");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error(status, e.to_string())
}

async fn body_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("reading body (limit {MAX_BODY} bytes): {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn forbidden(id: &Identity, method: &Method, path: &str, why: &str) -> Response<Body> {
    let role = serde_json::to_value(id.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    error(
        StatusCode::FORBIDDEN,
        format!(
            "token {:?} (role {role}) may not {method} {path}: {why}",
            id.name
        ),
    )
}

/// Whether `id` may do `method` on `target`; the reason when not.
fn authorize(
    store: &Store,
    id: &Identity,
    method: &Method,
    target: &Target<'_>,
) -> Result<(), String> {
    if *method == Method::GET || id.role == Role::Admin {
        return Ok(());
    }
    match (target.kind, target.sub) {
        (k, None | Some("scale" | "rollback")) if user_kind(k) => {
            if id.role == Role::Operator {
                Ok(())
            } else {
                Err("only admin and operator tokens deploy".into())
            }
        }
        (Kind::Node, None | Some("status")) if id.role == Role::Node => {
            if *method == Method::PUT && target.name.is_some() && target.name == id.node.as_deref()
            {
                Ok(())
            } else {
                Err("a node token changes only its own node".into())
            }
        }
        (Kind::Instance, Some("status")) if id.role == Role::Node => {
            let here = target
                .name
                .and_then(|n| store.get(Kind::Instance, target.namespace.unwrap_or(""), n))
                .is_some_and(|o| {
                    matches!(&*o, Object::Instance(i) if i.spec.node.is_some() && i.spec.node == id.node)
                });
            if here {
                Ok(())
            } else {
                Err("a node token reports only instances placed on its node".into())
            }
        }
        _ => Err("only admin tokens do this".into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: Role,
    #[serde(default)]
    node: Option<String>,
}

async fn create_token(auth: &Auth, req: Request<Incoming>) -> Response<Body> {
    let t: NewToken = match body_json(req).await.map(serde_json::from_value) {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("token: {e}")),
        Err(r) => return r,
    };
    if !crate::api::is_dns_label(&t.name) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("name: {:?} must be a DNS label", t.name),
        );
    }
    match auth.create(&t.name, t.role, t.node.as_deref()) {
        Ok(token) => {
            tracing::info!(name = %t.name, role = ?t.role, "token created");
            json(
                StatusCode::OK,
                &serde_json::json!({"name": t.name, "token": token}),
            )
        }
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")),
    }
}

/// Where a request points, once the path is parsed.
struct Target<'a> {
    kind: Kind,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

fn parse_path(path: &str) -> Result<Target<'_>, String> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let kind = |s: &str| s.parse::<Kind>().map_err(|e| e.to_string());
    let t = match segs.as_slice() {
        ["api", "v1", "namespaces", ns, k, rest @ ..] if rest.len() <= 2 => Target {
            kind: kind(k)?,
            namespace: Some(ns),
            name: rest.first().copied(),
            sub: rest.get(1).copied(),
        },
        ["api", "v1", k, rest @ ..] if rest.len() <= 2 => Target {
            kind: kind(k)?,
            namespace: None,
            name: rest.first().copied(),
            sub: rest.get(1).copied(),
        },
        _ => return Err(format!("no such path: {path}")),
    };
    if t.name.is_some() && t.namespace.is_none() && t.kind.namespaced() {
        return Err(format!(
            "{} are namespaced: use /api/v1/namespaces/{{ns}}/{}/{{name}}",
            t.kind.plural(),
            t.kind.plural()
        ));
    }
    Ok(t)
}

/// What every request handler may use.
struct Ctx {
    store: Store,
    auth: Arc<Auth>,
    network: Arc<Network>,
}

async fn handle(
    ctx: Ctx,
    metrics: &ApiMetrics,
    events: &EventLog,
    req: Request<Incoming>,
    shutdown: CancellationToken,
) -> Response<Body> {
    let Ctx {
        store,
        auth,
        network,
    } = ctx;
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if path == "/healthz" {
        return respond(StatusCode::OK, "text/plain", "ok\n");
    }
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let id = match auth.authenticate(header) {
        Ok(id) => id,
        Err(why) => {
            let mut r = error(StatusCode::UNAUTHORIZED, why);
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    };
    if path == "/metrics" {
        metrics.revision.set(store.revision());
        let (services, _) = store.list(Kind::Service, None);
        let (nodes, _) = store.list(Kind::Node, None);
        metrics.set_usage(network.usage(
            services.iter().filter_map(|o| match &**o {
                Object::Service(s) => s.status.vip,
                _ => None,
            }),
            nodes.iter().filter_map(|o| match &**o {
                Object::Node(n) => n.spec.pod_subnet.as_deref()?.parse().ok(),
                _ => None,
            }),
        ));
        return respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        );
    }
    if path == "/api/v1/events" {
        if query(&req)
            .get("watch")
            .is_some_and(|v| v == "1" || v == "true")
        {
            return event_stream(events.subscribe(), shutdown);
        }
        return json(StatusCode::OK, &events.recent());
    }
    if path == "/api/v1/apply" {
        return match method {
            Method::POST if matches!(id.role, Role::Admin | Role::Operator) => {
                apply(&store, &network, req).await
            }
            Method::POST => forbidden(&id, &method, &path, "only admin and operator tokens deploy"),
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "apply takes POST"),
        };
    }
    if path == "/api/v1/tokens" {
        return match method {
            Method::POST if id.role == Role::Admin => create_token(&auth, req).await,
            Method::POST => forbidden(&id, &method, &path, "only admin tokens manage tokens"),
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "tokens takes POST"),
        };
    }
    let target = match parse_path(&path) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::NOT_FOUND, e),
    };
    if let Err(why) = authorize(&store, &id, &method, &target) {
        return forbidden(&id, &method, &path, &why);
    }
    // Viewers see that secrets exist, not what they hold; nodes read TLS secrets only (their
    // ingress proxies terminate every route's TLS).
    let secrets = SecretAccess::of(id.role);
    let ns = target.namespace.unwrap_or("");
    match (method, target.name, target.sub) {
        (Method::GET, None, None) => {
            let q = query(&req);
            let selector: Selector = match q.get("labelSelector").map(|s| s.parse()).transpose() {
                Ok(s) => s.unwrap_or_default(),
                Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            };
            let fields = match q
                .get("fieldSelector")
                .map(|s| FieldSelector::parse(target.kind, s))
                .transpose()
            {
                Ok(f) => f.unwrap_or_default(),
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            if q.get("watch").is_some_and(|v| v == "1" || v == "true") {
                let from = match q.get("revision").map(|r| r.parse::<u64>()).transpose() {
                    Ok(r) => r,
                    Err(_) => return error(StatusCode::BAD_REQUEST, "revision must be a number"),
                };
                let query = WatchQuery {
                    kind: target.kind,
                    namespace: target.namespace,
                    selector,
                    fields,
                    from,
                    secrets,
                };
                watch(&store, query, metrics.watches.clone(), shutdown)
            } else {
                let (items, revision) = store.list(target.kind, target.namespace);
                let items = items
                    .iter()
                    .filter(|o| selector.matches(&o.meta().labels) && fields.matches(o))
                    .map(|o| secrets.view(o))
                    .collect();
                json(StatusCode::OK, &List { revision, items })
            }
        }
        (Method::GET, Some(name), None) => match store.get(target.kind, ns, name) {
            // A node asking for one opaque secret by name has no business with it.
            Some(o) if secrets == SecretAccess::TlsOnly && secrets.hides(&o) => forbidden(
                &id,
                &Method::GET,
                &path,
                "a node token reads only secrets of type tls or labelled berth.io/data-plane=true",
            ),
            Some(o) if secrets.hides(&o) => json(StatusCode::OK, &o.redacted()),
            Some(o) => json(StatusCode::OK, &*o),
            None => error(
                StatusCode::NOT_FOUND,
                format!("{} {ns}/{name} not found", target.kind),
            ),
        },
        (Method::DELETE, Some(name), None) => {
            if !user_kind(target.kind) && target.kind != Kind::Node {
                return error(
                    StatusCode::FORBIDDEN,
                    format!("{} are managed by berth", target.kind.plural()),
                );
            }
            match store.delete(target.kind, ns, name) {
                Ok(Some(o)) => json(StatusCode::OK, &o),
                Ok(None) => error(
                    StatusCode::NOT_FOUND,
                    format!("{} {ns}/{name} not found", target.kind),
                ),
                Err(e) => store_error(e),
            }
        }
        (Method::PUT, Some(name), None) if target.kind == Kind::Node => {
            put_node(&store, &network, &id, name, req).await
        }
        (Method::PUT, Some(name), None) => {
            put_object(&store, &network, target.kind, ns, name, req).await
        }
        (Method::GET, Some(name), Some("log")) if target.kind == Kind::Instance => {
            let q = req.uri().query().unwrap_or("").to_owned();
            instance_log(&store, &auth, ns, name, &q).await
        }
        (Method::PUT, Some(name), Some("status")) => {
            put_status(&store, target.kind, ns, name, req).await
        }
        (Method::PUT, Some(name), Some("scale")) if target.kind == Kind::App => {
            scale(&store, ns, name, req).await
        }
        (Method::PUT, Some(name), Some("rollback")) if target.kind == Kind::App => {
            rollback(&store, ns, name, req).await
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path}: method not allowed"),
        ),
    }
}

async fn apply(store: &Store, network: &Network, req: Request<Incoming>) -> Response<Body> {
    let values = match body_json(req).await {
        Ok(Value::Array(v)) => v,
        Ok(v) => vec![v],
        Err(r) => return r,
    };
    let mut objects = Vec::with_capacity(values.len());
    let mut errors = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        match check_object(v) {
            Ok(o) => objects.push(o),
            Err(msgs) => errors.extend(msgs.into_iter().map(|m| format!("object {}: {m}", i + 1))),
        }
    }
    for (i, o) in objects.iter_mut().enumerate() {
        if let Err(why) = admit_service(store, network, o) {
            errors.push(format!("object {}: {why}", i + 1));
        }
    }
    if !errors.is_empty() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, errors.join("\n"));
    }
    match store.apply(objects) {
        Ok(out) => {
            let out: Vec<_> = out
                .into_iter()
                .map(|(o, outcome)| {
                    let m = o.meta();
                    tracing::info!(kind = %o.kind(), namespace = %m.namespace, name = %m.name, ?outcome, "applied");
                    Applied {
                        object: format!("{} {}/{}", o.kind(), m.namespace, m.name),
                        outcome,
                    }
                })
                .collect();
            json(StatusCode::OK, &out)
        }
        Err(e) => store_error(e),
    }
}

async fn put_object(
    store: &Store,
    network: &Network,
    kind: Kind,
    ns: &str,
    name: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let mut value = match body_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let obj = if user_kind(kind) {
        if let Some(map) = value.as_object_mut() {
            map.entry("kind")
                .or_insert_with(|| Value::String(kind.name().to_owned()));
        }
        match check_object(value) {
            Ok(o) => o,
            Err(msgs) => return error(StatusCode::UNPROCESSABLE_ENTITY, msgs.join("\n")),
        }
    } else {
        return error(
            StatusCode::FORBIDDEN,
            format!("{} are managed by berth", kind.plural()),
        );
    };
    let mut obj = obj;
    if !kind.namespaced() {
        // Cluster-scoped: the namespace a manifest defaulted means nothing here.
        obj.meta_mut().namespace.clear();
    }
    if let Err(why) = admit_service(store, network, &mut obj) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, why);
    }
    let m = obj.meta();
    if m.name != name || (kind.namespaced() && m.namespace != ns) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "metadata names {}/{}, the path {ns}/{name}",
                m.namespace, m.name
            ),
        );
    }
    // With `metadata.revision` the write is a compare-and-swap against it (409 if the object
    // changed since it was read); without, create-or-update like `apply`.
    let expected = m.revision;
    let result = if expected > 0 {
        store.update(obj, expected)
    } else {
        store.apply(vec![obj]).and_then(|mut out| {
            out.pop()
                .map(|(o, _)| o)
                .ok_or_else(|| StoreError::NotFound(format!("{kind} {ns}/{name}")))
        })
    };
    match result {
        Ok(o) => json(StatusCode::OK, &o),
        Err(e) => store_error(e),
    }
}

/// Readies a declared service for the store: its status is control's (a VIP cannot be declared
/// there), and a requested `spec.clusterIP` must be in the service range and free, and cannot
/// change once given, as in Kubernetes. The VIP reconciler decides; this refuses what it would
/// refuse, with the reason, before anything is stored.
fn admit_service(store: &Store, network: &Network, obj: &mut Object) -> Result<(), String> {
    let Object::Service(svc) = obj else {
        return Ok(());
    };
    svc.status = crate::api::ServiceStatus::default();
    let Some(ip) = svc.spec.cluster_ip else {
        return Ok(());
    };
    let (ns, name) = (&svc.metadata.namespace, &svc.metadata.name);
    let current = match store.get(Kind::Service, ns, name).as_deref() {
        Some(Object::Service(s)) => s.status.vip,
        _ => None,
    };
    let who = |what: &str| format!("Service {ns}/{name}: spec.clusterIP: {what}");
    match current {
        Some(vip) if vip == ip => return Ok(()),
        Some(vip) => {
            return Err(who(&format!(
                "cannot change: the service has the VIP {vip} (delete and create it again for \
                 another)"
            )));
        }
        None => {}
    }
    let (services, _) = store.list(Kind::Service, None);
    let holder = |a: std::net::IpAddr| {
        services.iter().find_map(|o| match &**o {
            Object::Service(s)
                if (s.status.vip == Some(a) || s.spec.cluster_ip == Some(a))
                    && !(s.metadata.namespace == *ns && s.metadata.name == *name) =>
            {
                Some(format!("{}/{}", s.metadata.namespace, s.metadata.name))
            }
            _ => None,
        })
    };
    crate::controller::check_cluster_ip(network.service_cidr.as_ref(), ip, holder)
        .map_err(|e| who(&e))
}

/// Creates or updates a node: an agent registering, or an admin setting taints or a pod subnet.
///
/// Control owns the pod subnet once given: a PUT without one keeps it (an agent registering
/// again after a restart), a different one is refused. Taints and cordoning are the admin's: a
/// node token's PUT of an existing node keeps them, as a kubelet registers its taints only when
/// it creates its node, and adds its labels to the admin's. A node without a subnet gets one at
/// once, and a subnet set by an admin must not overlap another node's: the check and the write
/// are one transaction.
async fn put_node(
    store: &Store,
    network: &Network,
    id: &Identity,
    name: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let mut value = match body_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Some(map) = value.as_object_mut() {
        map.insert("kind".into(), Value::String("Node".into()));
    }
    let mut node = match serde_json::from_value::<Object>(value) {
        Ok(Object::Node(n)) => n,
        Ok(_) => return error(StatusCode::UNPROCESSABLE_ENTITY, "node: not a node"),
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("node: {e}")),
    };
    node.metadata.namespace.clear();
    if node.metadata.name != name {
        return error(
            StatusCode::BAD_REQUEST,
            format!("metadata names {}, the path {name}", node.metadata.name),
        );
    }
    if let Err(errs) = crate::api::validate_node(&node) {
        let msgs: Vec<String> = errs.iter().map(|e| format!("Node {name}: {e}")).collect();
        return error(StatusCode::UNPROCESSABLE_ENTITY, msgs.join("\n"));
    }
    let expected = node.metadata.revision;
    let by_agent = id.role == Role::Node;
    let mut refusal: Option<(StatusCode, String)> = None;
    let result = store.transaction(|tx| {
        let key = crate::api::key(Kind::Node, "", name);
        let current = match tx.get(&key) {
            Some(Object::Node(n)) => Some(n),
            _ => None,
        };
        if expected > 0 {
            let actual = current
                .as_ref()
                .ok_or_else(|| StoreError::NotFound(key.clone()))?
                .metadata
                .revision;
            if actual != expected {
                return Err(StoreError::Conflict {
                    key,
                    expected,
                    actual,
                });
            }
        }
        let mut next = match &current {
            Some(c) => {
                let mut spec = node.spec.clone();
                match (&c.spec.pod_subnet, &spec.pod_subnet) {
                    (Some(old), None) => spec.pod_subnet = Some(old.clone()),
                    (Some(old), Some(new)) if old != new => {
                        refusal = Some((
                            StatusCode::UNPROCESSABLE_ENTITY,
                            format!(
                                "Node {name}: spec.podSubnet: cannot change from {old} to {new} \
                                 (instances use it): delete the node to free it"
                            ),
                        ));
                        return Ok(());
                    }
                    _ => {}
                }
                let mut n = c.clone();
                if by_agent {
                    spec.taints = c.spec.taints.clone();
                    spec.unschedulable = c.spec.unschedulable;
                    // The agent's labels (from its flags) go over the admin's, which stay, as
                    // a kubelet's --node-labels do.
                    n.metadata.labels.extend(node.metadata.labels.clone());
                } else {
                    n.metadata.labels = node.metadata.labels.clone();
                }
                n.spec = spec;
                n
            }
            None => node.clone(),
        };
        next.metadata.namespace.clear();
        let new_subnet = next
            .spec
            .pod_subnet
            .clone()
            .filter(|s| current.as_ref().and_then(|c| c.spec.pod_subnet.as_ref()) != Some(s));
        let others: Vec<(String, ipnet::IpNet)> = tx
            .list(Kind::Node)
            .iter()
            .filter_map(|o| match o {
                Object::Node(n) if n.metadata.name != name => Some((
                    n.metadata.name.clone(),
                    n.spec.pod_subnet.as_deref()?.parse().ok()?,
                )),
                _ => None,
            })
            .collect();
        if next.spec.pod_subnet.is_none()
            && let Some(cidr) = network.cluster_cidr
        {
            // Allocated now, so that the agent's registration answer carries its subnet; the
            // node controller does the same for nodes this misses, and reports what it cannot.
            let taken: Vec<ipnet::IpNet> = others.iter().map(|(_, n)| *n).collect();
            if let Some(free) =
                crate::controller::network::first_free_subnet(&cidr, network.node_prefix, &taken)
            {
                tracing::info!(node = %name, subnet = %free, "pod subnet allocated");
                next.spec.pod_subnet = Some(free.to_string());
            }
        } else if let Some(net) = new_subnet.and_then(|s| s.parse::<ipnet::IpNet>().ok())
            && let Some((other, theirs)) = others
                .iter()
                .find(|(_, theirs)| crate::controller::network::overlaps(theirs, &net))
        {
            refusal = Some((
                StatusCode::CONFLICT,
                format!("Node {name}: spec.podSubnet: {net} overlaps {theirs} of node {other}"),
            ));
            return Ok(());
        }
        let unchanged = current
            .as_ref()
            .is_some_and(|c| c.spec == next.spec && c.metadata.labels == next.metadata.labels);
        if !unchanged {
            tx.put(Object::Node(next));
        }
        Ok(())
    });
    match (result, refusal) {
        (Ok(_), Some((status, why))) => error(status, why),
        // Read back for the revision the store stamped.
        (Ok(_), None) => match store.get(Kind::Node, "", name) {
            Some(o) => json(StatusCode::OK, &*o),
            None => error(
                StatusCode::CONFLICT,
                format!("node {name} was deleted meanwhile"),
            ),
        },
        (Err(e), _) => store_error(e),
    }
}

async fn put_status(
    store: &Store,
    kind: Kind,
    ns: &str,
    name: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let value = match body_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let result = match kind {
        Kind::Instance => match serde_json::from_value(value) {
            Ok(status) => store.modify(kind, ns, name, |o| match o {
                Object::Instance(i) if i.status != status => {
                    i.status = status;
                    true
                }
                _ => false,
            }),
            Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("status: {e}")),
        },
        Kind::Node => match serde_json::from_value::<crate::api::NodeStatus>(value) {
            // The agent says whether it is ready; the time is the server's, so that leases do
            // not depend on the nodes' clocks.
            Ok(reported) => store.modify(kind, ns, name, |o| match o {
                Object::Node(n) => {
                    let now = now_secs();
                    if n.status.ready != reported.ready {
                        n.status.since = now;
                    }
                    n.status.ready = reported.ready;
                    n.status.heartbeat_at = now;
                    n.status.message = reported.message;
                    true
                }
                _ => false,
            }),
            Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("status: {e}")),
        },
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("{} have no status subresource", kind.plural()),
            );
        }
    };
    match result {
        Ok(o) => json(StatusCode::OK, &o),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scale {
    replicas: u32,
}

async fn scale(store: &Store, ns: &str, name: &str, req: Request<Incoming>) -> Response<Body> {
    let scale: Scale = match body_json(req).await.map(serde_json::from_value) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("scale: {e}")),
        Err(r) => return r,
    };
    if scale.replicas > crate::api::MAX_REPLICAS {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "replicas: {} is more than the limit of {}",
                scale.replicas,
                crate::api::MAX_REPLICAS
            ),
        );
    }
    match store.modify(Kind::App, ns, name, |o| match o {
        Object::App(a) if a.spec.replicas != scale.replicas => {
            a.spec.replicas = scale.replicas;
            true
        }
        _ => false,
    }) {
        Ok(o) => json(StatusCode::OK, &o),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rollback {
    /// 0 or absent: the revision before the current one.
    #[serde(default)]
    to_revision: u32,
}

/// Puts a kept revision's template back; the controller rolls it out as a new revision.
async fn rollback(store: &Store, ns: &str, name: &str, req: Request<Incoming>) -> Response<Body> {
    let rb: Rollback = match body_json(req).await.map(serde_json::from_value) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("rollback: {e}")),
        Err(r) => return r,
    };
    let mut refusal = None;
    let result = store.modify(Kind::App, ns, name, |o| {
        let Object::App(a) = o else { return false };
        let h = &a.status.history;
        let kept: Vec<String> = h.iter().map(|r| r.revision.to_string()).collect();
        let target = if rb.to_revision == 0 {
            h.len().checked_sub(2).and_then(|i| h.get(i))
        } else {
            h.iter().find(|r| r.revision == rb.to_revision)
        };
        match target {
            Some(t) if t.template == a.spec.template => {
                refusal = Some(format!("revision {} is already current", t.revision));
                false
            }
            Some(t) => {
                a.spec.template = t.template.clone();
                true
            }
            None => {
                refusal = Some(match rb.to_revision {
                    0 => format!(
                        "app {ns}/{name} has no previous revision (kept: {})",
                        kept.join(", ")
                    ),
                    n => format!(
                        "app {ns}/{name} has no revision {n} (kept: {})",
                        kept.join(", ")
                    ),
                });
                false
            }
        }
    });
    match (result, refusal) {
        (Ok(_), Some(why)) => error(StatusCode::UNPROCESSABLE_ENTITY, why),
        (Ok(o), None) => json(StatusCode::OK, &o),
        (Err(e), _) => store_error(e),
    }
}

fn line(l: &WatchLine) -> Bytes {
    let mut v = serde_json::to_vec(l).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn event_line(e: &Event) -> WatchLine {
    let object = (*e.object).clone();
    let revision = e.revision;
    match e.kind {
        crate::store::EventType::Added => WatchLine::Added { revision, object },
        crate::store::EventType::Modified => WatchLine::Modified { revision, object },
        crate::store::EventType::Deleted => WatchLine::Deleted { revision, object },
    }
}

/// A field selector, as Kubernetes' `fieldSelector=spec.nodeName=NAME` with which kubelet
/// watches only its own pods: `spec.node=NAME` on instances. An instance's node is set once
/// (a moved instance is a new one), so filtering each event's object as it is then loses no
/// transition.
#[derive(Debug, Default)]
struct FieldSelector {
    node: Option<String>,
}

impl FieldSelector {
    fn parse(kind: Kind, s: &str) -> Result<FieldSelector, String> {
        let mut out = FieldSelector::default();
        for term in s.split(',').filter(|t| !t.is_empty()) {
            match term.split_once('=') {
                Some(("spec.node", node)) if kind == Kind::Instance => {
                    out.node = Some(node.to_owned());
                }
                _ => {
                    return Err(format!(
                        "field selector {term:?} is not supported: only spec.node=NAME, on instances"
                    ));
                }
            }
        }
        Ok(out)
    }

    fn matches(&self, o: &Object) -> bool {
        match (&self.node, o) {
            (None, _) => true,
            (Some(node), Object::Instance(i)) => i.spec.node.as_deref() == Some(node.as_str()),
            (Some(_), _) => false,
        }
    }
}

/// What a watch asks for.
struct WatchQuery<'a> {
    kind: Kind,
    namespace: Option<&'a str>,
    selector: Selector,
    fields: FieldSelector,
    /// Resume after this revision; `None` starts with a listing.
    from: Option<u64>,
    /// Which secret values the caller may read.
    secrets: SecretAccess,
}

/// Streams events of one kind (and namespace, and labels) as NDJSON. Without a revision it
/// starts with the current objects as ADDED, as a Kubernetes watch without resourceVersion does.
/// The selector applies to each event's object as it is then.
fn watch(
    store: &Store,
    query: WatchQuery<'_>,
    open_watches: prometheus_client::metrics::gauge::Gauge,
    shutdown: CancellationToken,
) -> Response<Body> {
    let WatchQuery {
        kind,
        namespace,
        selector,
        fields,
        from,
        secrets,
    } = query;
    let (initial, from) = match from {
        Some(rev) => (Vec::new(), rev),
        None => {
            let (items, rev) = store.list(kind, namespace);
            let items: Vec<_> = items
                .into_iter()
                .filter(|o| selector.matches(&o.meta().labels) && fields.matches(o))
                .collect();
            (items, rev)
        }
    };
    let mut watcher = match store.watch(from) {
        Ok(w) => w,
        Err(e) => return store_error(e),
    };
    let namespace = namespace.map(str::to_owned);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(WATCH_BUFFER);
    tokio::spawn(async move {
        // Counted while the stream lives, however it ends.
        struct Open(prometheus_client::metrics::gauge::Gauge);
        impl Drop for Open {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        open_watches.inc();
        let _open = Open(open_watches);
        for o in initial {
            let l = WatchLine::Added {
                revision: o.meta().revision,
                object: secrets.view(&o),
            };
            if tx.send(line(&l)).await.is_err() {
                return;
            }
        }
        let matches = |o: &Object| {
            o.kind() == kind
                && namespace
                    .as_deref()
                    .is_none_or(|ns| o.meta().namespace == ns)
                && selector.matches(&o.meta().labels)
                && fields.matches(o)
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                r = tokio::time::timeout(BOOKMARK_EVERY, watcher.next()) => r,
            };
            let events = match next {
                Err(_) => {
                    let l = WatchLine::Bookmark {
                        revision: watcher.revision(),
                    };
                    if tx.send(line(&l)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(Ok(events)) => events,
                Ok(Err(e)) => {
                    let _ = tx
                        .send(line(&WatchLine::Error {
                            code: 410,
                            message: e.to_string(),
                        }))
                        .await;
                    return;
                }
            };
            for e in events.iter().filter(|e| matches(&e.object)) {
                // The shared encoding carries secret values: redacted streams encode their own.
                let bytes = if secrets.hides(&e.object) {
                    let mut l = event_line(e);
                    if let WatchLine::Added { object, .. }
                    | WatchLine::Modified { object, .. }
                    | WatchLine::Deleted { object, .. } = &mut l
                    {
                        *object = object.redacted();
                    }
                    line(&l)
                } else {
                    e.encoded(|e| line(&event_line(e)))
                };
                if tx.send(bytes).await.is_err() {
                    return;
                }
            }
        }
    });
    crate::http_util::channel_response(rx, "application/x-ndjson")
}

/// Streams cluster events as NDJSON as they happen. A client too slow to keep up is told how
/// many it missed, rather than holding the server's memory.
fn event_stream(
    mut live: tokio::sync::broadcast::Receiver<Arc<ClusterEvent>>,
    shutdown: CancellationToken,
) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(WATCH_BUFFER);
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                e = live.recv() => e,
            };
            let bytes = match next {
                Ok(e) => {
                    let mut v = serde_json::to_vec(&*e).unwrap_or_default();
                    v.push(b'\n');
                    Bytes::from(v)
                }
                Err(RecvError::Lagged(n)) => Bytes::from(format!(
                    "{{\"reason\":\"EventsMissed\",\"message\":\"this stream fell {n} events behind\"}}\n"
                )),
                Err(RecvError::Closed) => return,
            };
            if tx.send(bytes).await.is_err() {
                return;
            }
        }
    });
    crate::http_util::channel_response(rx, "application/x-ndjson")
}

/// Proxies an instance's log from the agent of its node, with that node's token.
async fn instance_log(
    store: &Store,
    auth: &Auth,
    ns: &str,
    name: &str,
    query: &str,
) -> Response<Body> {
    let node = match store.get(Kind::Instance, ns, name).as_deref() {
        Some(Object::Instance(i)) => match &i.spec.node {
            Some(n) => n.clone(),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("instance {ns}/{name} is not placed yet"),
                );
            }
        },
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("instance {ns}/{name} not found"),
            );
        }
    };
    let (address, port) = match store.get(Kind::Node, "", &node).as_deref() {
        Some(Object::Node(n)) => match n.spec.log_port {
            Some(p) => (n.spec.address, p),
            None => return error(StatusCode::NOT_FOUND, format!("node {node} serves no logs")),
        },
        _ => return error(StatusCode::NOT_FOUND, format!("node {node} is gone")),
    };
    // Only what the agent understands goes through.
    let mut forwarded = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "tail" if v.parse::<u32>().is_ok() => forwarded.push(format!("tail={v}")),
            "follow" if v == "1" || v == "true" => forwarded.push("follow=1".to_owned()),
            _ => {}
        }
    }
    let uri = format!(
        "http://{}/logs/{ns}/{name}?{}",
        std::net::SocketAddr::new(address, port),
        forwarded.join("&")
    );
    let token = auth.token_for(Role::Node, Some(&node));
    let fetch = async {
        let stream = tokio::net::TcpStream::connect((address, port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::get(&uri).header(http::header::HOST, "berth-agent");
        if let Some(t) = &token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(http_body_util::Empty::<Bytes>::new())?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(sender.send_request(req).await?)
    };
    let resp = match tokio::time::timeout(Duration::from_secs(5), fetch).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return error(StatusCode::BAD_GATEWAY, format!("node {node}: {e}")),
        Err(_) => {
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                format!("node {node} did not answer within 5 s"),
            );
        }
    };
    let status = resp.status();
    let mut body = resp.into_body();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && tx.send(data).await.is_err()
            {
                return;
            }
        }
    });
    let mut r = crate::http_util::channel_response(rx, "text/plain; charset=utf-8");
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests;
