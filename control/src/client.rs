//! The API client used by the CLI and the agent, and informers: local caches kept in step with
//! the server by list + watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::api::{Kind, Object};
use crate::server::{Applied, List, WatchLine};

/// Most bytes of one watch line; a longer one ends the watch (and the informer relists).
const MAX_LINE: usize = 16 << 20;

/// A client of the berth API.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<Arc<str>>,
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

fn path(kind: Kind, namespace: Option<&str>, name: Option<&str>) -> String {
    let mut p = match namespace {
        Some(ns) if kind.namespaced() => format!("/api/v1/namespaces/{ns}/{}", kind.plural()),
        _ => format!("/api/v1/{}", kind.plural()),
    };
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    p
}

impl Client {
    /// A client that sends `token` as its bearer token.
    pub fn with_token(base: &str, token: Option<&str>) -> Result<Client> {
        Self::with_tls(base, token, None)
    }

    /// A client of an `http://` server, or of an `https://` one whose certificate chains to a
    /// certificate in `ca`.
    pub fn with_tls(
        base: &str,
        token: Option<&str>,
        ca: Option<&std::path::Path>,
    ) -> Result<Client> {
        let base = base.trim_end_matches('/').to_owned();
        let tls = match (base.split_once("://").map(|(s, _)| s), ca) {
            (Some("http"), _) => None,
            (Some("https"), Some(ca)) => Some(crate::tls::client_config(ca)?),
            (Some("https"), None) => bail!(
                "{base}: https needs the server's CA certificate (--ca, BERTH_CA or `ca:` in the config file)"
            ),
            _ => bail!("server address {base:?} must start with http:// or https://"),
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.enforce_http(false);
        // Plain http needs no roots; an empty store makes any https attempt fail verification.
        let tls = tls.unwrap_or_else(|| {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            })
            .unwrap_or_else(|_| unreachable_config())
        });
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector);
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Client {
            base,
            token: token.map(Arc::from),
            http,
        })
    }

    /// The server address.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>> {
        let uri = format!("{}{}", self.base, path);
        let mut req = hyper::Request::builder().method(method.clone()).uri(&uri);
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        self.http
            .request(req)
            .await
            .with_context(|| format!("{method} {uri}: cannot reach the berth API"))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let (status, bytes) = self.call_raw(method.clone(), path, body).await?;
        if !status.is_success() {
            bail!("{}", api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{method} {path}: bad response"))
    }

    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes)> {
        let resp = tokio::time::timeout(Duration::from_secs(30), async {
            let resp = self.send(method.clone(), path, body).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, bytes))
        })
        .await
        .map_err(|_| anyhow!("{method} {path}: no answer within 30 s"))??;
        Ok(resp)
    }

    /// Lists objects of a kind.
    pub async fn list(&self, kind: Kind, namespace: Option<&str>) -> Result<List> {
        self.list_selected(kind, namespace, None).await
    }

    /// Lists objects of a kind whose labels match a selector (`app=hello,tier!=db`).
    pub async fn list_selected(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> Result<List> {
        let filter = Filter {
            labels: selector.map(str::to_owned),
            fields: None,
        };
        self.list_filtered(kind, namespace, &filter).await
    }

    /// Lists objects of a kind that pass `filter`.
    pub async fn list_filtered(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        filter: &Filter,
    ) -> Result<List> {
        let mut p = path(kind, namespace, None);
        filter.append(&mut p, '?');
        self.call(Method::GET, &p, None).await
    }

    /// One object, or `None`.
    pub async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Option<Object>> {
        let (status, bytes) = self
            .call_raw(Method::GET, &path(kind, Some(namespace), Some(name)), None)
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(serde_json::from_slice(&bytes)?)),
            s => bail!("{}", api_error(s, &bytes)),
        }
    }

    /// Creates or updates declared objects, all or none.
    pub async fn apply(&self, objects: &[Object]) -> Result<Vec<Applied>> {
        self.call(
            Method::POST,
            "/api/v1/apply",
            Some(serde_json::to_vec(objects)?),
        )
        .await
    }

    /// Creates or updates an object (nodes: by their agent).
    pub async fn put(&self, obj: &Object) -> Result<Object> {
        let m = obj.meta();
        self.call(
            Method::PUT,
            &path(obj.kind(), Some(&m.namespace), Some(&m.name)),
            Some(serde_json::to_vec(obj)?),
        )
        .await
    }

    /// Replaces the status of an instance or node.
    pub async fn put_status<S: Serialize>(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        status: &S,
    ) -> Result<()> {
        let p = format!("{}/status", path(kind, Some(namespace), Some(name)));
        let _: Object = self
            .call(Method::PUT, &p, Some(serde_json::to_vec(status)?))
            .await?;
        Ok(())
    }

    /// Deletes an object; `None` if it did not exist.
    pub async fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Option<Object>> {
        let (status, bytes) = self
            .call_raw(
                Method::DELETE,
                &path(kind, Some(namespace), Some(name)),
                None,
            )
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(serde_json::from_slice(&bytes)?)),
            s => bail!("{}", api_error(s, &bytes)),
        }
    }

    /// Sets an app's replicas.
    pub async fn scale(&self, namespace: &str, name: &str, replicas: u32) -> Result<Object> {
        let p = format!("{}/scale", path(Kind::App, Some(namespace), Some(name)));
        self.call(
            Method::PUT,
            &p,
            Some(serde_json::to_vec(
                &serde_json::json!({"replicas": replicas}),
            )?),
        )
        .await
    }

    /// An instance's log as it arrives (`follow`: until interrupted).
    pub async fn logs(
        &self,
        namespace: &str,
        name: &str,
        tail: Option<u32>,
        follow: bool,
    ) -> Result<Incoming> {
        let mut p = format!("{}/log?", path(Kind::Instance, Some(namespace), Some(name)));
        if let Some(t) = tail {
            p.push_str(&format!("tail={t}&"));
        }
        if follow {
            p.push_str("follow=1");
        }
        let resp = self.send(Method::GET, &p, None).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            bail!("{}", api_error(status, &bytes));
        }
        Ok(resp.into_body())
    }

    /// The recent cluster events.
    pub async fn events(&self) -> Result<Vec<crate::events::ClusterEvent>> {
        self.call(Method::GET, "/api/v1/events", None).await
    }

    /// The live cluster events, as raw NDJSON lines.
    pub async fn event_stream(&self) -> Result<Incoming> {
        let resp = self
            .send(Method::GET, "/api/v1/events?watch=1", None)
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            bail!("{}", api_error(status, &bytes));
        }
        Ok(resp.into_body())
    }

    /// Creates an API token (admin only); returns the secret.
    pub async fn create_token(
        &self,
        name: &str,
        role: crate::auth::Role,
        node: Option<&str>,
    ) -> Result<String> {
        let body = serde_json::json!({"name": name, "role": role, "node": node});
        let v: serde_json::Value = self
            .call(
                Method::POST,
                "/api/v1/tokens",
                Some(serde_json::to_vec(&body)?),
            )
            .await?;
        v["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token in the answer")
    }

    /// Rolls an app back to a kept revision (0: the one before the current).
    pub async fn rollback(&self, namespace: &str, name: &str, to_revision: u32) -> Result<Object> {
        let p = format!("{}/rollback", path(Kind::App, Some(namespace), Some(name)));
        let body = serde_json::json!({ "toRevision": to_revision });
        self.call(Method::PUT, &p, Some(serde_json::to_vec(&body)?))
            .await
    }

    /// Opens a watch of every change after `revision` (or of everything, from a listing).
    pub async fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        revision: Option<u64>,
    ) -> Result<WatchStream> {
        self.watch_selected(kind, namespace, None, revision).await
    }

    /// [`Client::watch`] of the objects whose labels match a selector.
    pub async fn watch_selected(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&str>,
        revision: Option<u64>,
    ) -> Result<WatchStream> {
        let filter = Filter {
            labels: selector.map(str::to_owned),
            fields: None,
        };
        self.watch_filtered(kind, namespace, &filter, revision)
            .await
    }

    /// [`Client::watch`] of the objects that pass `filter`.
    pub async fn watch_filtered(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        filter: &Filter,
        revision: Option<u64>,
    ) -> Result<WatchStream> {
        let mut p = format!("{}?watch=1", path(kind, namespace, None));
        filter.append(&mut p, '&');
        if let Some(r) = revision {
            p.push_str(&format!("&revision={r}"));
        }
        let resp = self.send(Method::GET, &p, None).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            bail!("{}", api_error(status, &bytes));
        }
        Ok(WatchStream {
            body: resp.into_body(),
            buf: BytesMut::new(),
        })
    }
}

/// The ring provider always supports the safe default versions; this is never reached.
fn unreachable_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

fn api_error(status: StatusCode, body: &[u8]) -> String {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    format!("{} ({})", msg.trim_end(), status.as_u16())
}

/// An open watch: NDJSON lines, read as they arrive.
pub struct WatchStream {
    body: Incoming,
    buf: BytesMut,
}

impl WatchStream {
    /// The complete lines that arrived with the next chunk; `None` when the stream ended.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<WatchLine>>> {
        loop {
            let mut out = Vec::new();
            while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                if line.len() > 1 {
                    out.push(
                        serde_json::from_slice(&line[..line.len() - 1])
                            .context("bad watch line")?,
                    );
                }
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
            if self.buf.len() > MAX_LINE {
                bail!("watch line longer than {MAX_LINE} bytes");
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Which objects of a kind a list or watch returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// A label selector (`app=hello,tier!=db`).
    pub labels: Option<String>,
    /// A field selector: `spec.node=NAME` on instances (what a node's agent runs).
    pub fields: Option<String>,
}

impl Filter {
    /// The instances placed on `node`.
    pub fn on_node(node: &str) -> Filter {
        Filter {
            labels: None,
            fields: Some(format!("spec.node={node}")),
        }
    }

    /// Appends the query parameters to `path`, the first after `sep`.
    fn append(&self, path: &mut String, mut sep: char) {
        for (name, value) in [
            ("labelSelector", &self.labels),
            ("fieldSelector", &self.fields),
        ] {
            if let Some(v) = value {
                path.push(sep);
                path.push_str(name);
                path.push('=');
                path.extend(form_urlencoded::byte_serialize(v.as_bytes()));
                sep = '&';
            }
        }
    }
}

/// A local copy of the objects of one kind.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    /// Revision the copy is current at.
    pub revision: u64,
    /// The objects by store key.
    pub objects: BTreeMap<String, Arc<Object>>,
    /// True once the first listing arrived.
    pub synced: bool,
}

impl Cache {
    /// The object of this kind, namespace and name, if cached.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Object> {
        self.objects
            .get(&crate::api::key(kind, namespace, name))
            .map(|o| &**o)
    }
}

/// Keeps a [`Cache`] of one kind in step with the server and publishes every new version.
pub fn informer(
    client: Client,
    kind: Kind,
    shutdown: CancellationToken,
) -> tokio::sync::watch::Receiver<Arc<Cache>> {
    informer_filtered(client, kind, Filter::default(), shutdown)
}

/// An [`informer`] of the objects that pass `filter`.
pub fn informer_filtered(
    client: Client,
    kind: Kind,
    filter: Filter,
    shutdown: CancellationToken,
) -> tokio::sync::watch::Receiver<Arc<Cache>> {
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(Cache::default()));
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            let run = run_informer(&client, kind, &filter, &tx);
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = run => r,
            };
            match result {
                Ok(()) => tracing::debug!(kind = %kind, "watch ended; relisting"),
                Err(e) => {
                    tracing::warn!(kind = %kind, error = %format!("{e:#}"), "watch failed; relisting")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    });
    rx
}

async fn run_informer(
    client: &Client,
    kind: Kind,
    filter: &Filter,
    tx: &tokio::sync::watch::Sender<Arc<Cache>>,
) -> Result<()> {
    let list = client.list_filtered(kind, None, filter).await?;
    let mut cache = Cache {
        revision: list.revision,
        objects: list
            .items
            .into_iter()
            .map(|o| (o.key(), Arc::new(o)))
            .collect(),
        synced: true,
    };
    tx.send_replace(Arc::new(cache.clone()));
    let mut stream = client
        .watch_filtered(kind, None, filter, Some(list.revision))
        .await?;
    while let Some(lines) = stream.next_batch().await? {
        let mut changed = false;
        for l in lines {
            match l {
                WatchLine::Added { revision, object }
                | WatchLine::Modified { revision, object } => {
                    cache.objects.insert(object.key(), Arc::new(object));
                    cache.revision = revision;
                    changed = true;
                }
                WatchLine::Deleted { revision, object } => {
                    cache.objects.remove(&object.key());
                    cache.revision = revision;
                    changed = true;
                }
                WatchLine::Bookmark { revision } => cache.revision = cache.revision.max(revision),
                WatchLine::Error { message, .. } => bail!("watch: {message}"),
            }
        }
        if changed {
            tx.send_replace(Arc::new(cache.clone()));
        }
    }
    Ok(())
}
