//! TLS to upstreams: SNI, verification against configured CAs, client certificates, ALPN.
//! The upstream is a rustls server on loopback with rcgen certificates.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use berth_proxy::{Cluster, Config, Proxy, UpstreamProtocol, UpstreamTls};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::support::{Harness, TestClient, cluster, vhost};

/// A test CA.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) pem: String,
}

impl Ca {
    pub(crate) fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// (certificate PEM, key PEM) for these names (DNS names or IP addresses).
    pub(crate) fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS upstream that answers every request with what it saw of the connection:
/// `sni=<name or ->;alpn=<protocol or ->;client_cert=<yes|no>;version=<HTTP/x>`, and for
/// HTTP/2 `;authority=<its :authority>;host_header=<true|false>`.
async fn tls_backend(cert: &(String, String), client_ca: Option<&Ca>) -> SocketAddr {
    let chain = vec![CertificateDer::from_pem_slice(cert.0.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
                .unwrap();
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let (_, session) = stream.get_ref();
                let sni = session.server_name().unwrap_or("-").to_owned();
                let alpn = session
                    .alpn_protocol()
                    .map_or("-".to_owned(), |p| String::from_utf8_lossy(p).into_owned());
                let client_cert = if session.peer_certificates().is_some() {
                    "yes"
                } else {
                    "no"
                };
                let seen = format!("sni={sni};alpn={alpn};client_cert={client_cert}");
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let mut body = format!("{seen};version={:?}", request.version());
                    if request.version() == http::Version::HTTP_2 {
                        // What HTTP/2 carries the host in, and a Host header if any.
                        let authority = request.uri().authority().map_or("-", |a| a.as_str());
                        let host = request.headers().contains_key(http::header::HOST);
                        body += &format!(";authority={authority};host_header={host}");
                    }
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn serve(cluster: Cluster) -> TestClient {
    let proxy = Proxy::new(Config {
        virtual_hosts: vec![vhost("v", &["*"], &[("/", "c")])],
        clusters: vec![cluster],
        ..Config::default()
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { proxy.serve_http(listener, std::future::pending()).await });
    Harness::client_for(addr)
}

fn tls_cluster(addr: SocketAddr, tls: UpstreamTls) -> Cluster {
    Cluster {
        tls: Some(tls),
        ..cluster("c", &[addr])
    }
}

#[tokio::test]
async fn verified_tls_with_configured_sni_and_with_the_endpoint_ip() {
    let ca = Ca::new();
    let named = tls_backend(&ca.leaf(&["backend.test"]), None).await;
    let client = serve(tls_cluster(
        named,
        UpstreamTls {
            sni: Some("backend.test".into()),
            ca_pem: Some(ca.pem.clone()),
            ..UpstreamTls::default()
        },
    ))
    .await;
    let reply = client.get("any", "/").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (
            StatusCode::OK,
            "sni=backend.test;alpn=http/1.1;client_cert=no;version=HTTP/1.1"
        )
    );

    // Default name: the endpoint's IP address, verified against the certificate's IP SAN
    // and not sent as SNI (RFC 6066 allows only host names there).
    let by_ip = tls_backend(&ca.leaf(&["127.0.0.1"]), None).await;
    let client = serve(tls_cluster(
        by_ip,
        UpstreamTls {
            ca_pem: Some(ca.pem.clone()),
            ..UpstreamTls::default()
        },
    ))
    .await;
    let reply = client.get("any", "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.starts_with("sni=-;"), "{}", reply.body);
}

#[tokio::test]
async fn failed_verification_is_a_502() {
    let ca = Ca::new();
    let backend = tls_backend(&ca.leaf(&["backend.test"]), None).await;
    let cases = [
        // Signed by a CA the cluster does not trust.
        ("backend.test", Ca::new().pem),
        // Trusted CA, but the certificate is not for this name.
        ("other.test", ca.pem.clone()),
        // The endpoint's IP address, which the certificate does not name.
        ("", ca.pem.clone()),
    ];
    for (sni, ca_pem) in cases {
        let client = serve(tls_cluster(
            backend,
            UpstreamTls {
                sni: (!sni.is_empty()).then(|| sni.to_owned()),
                ca_pem: Some(ca_pem),
                ..UpstreamTls::default()
            },
        ))
        .await;
        let reply = client.get("any", "/").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::BAD_GATEWAY, "upstream connect error\n"),
            "sni {sni:?}"
        );
    }
}

#[tokio::test]
async fn client_certificate_is_presented_when_configured() {
    let ca = Ca::new();
    let backend = tls_backend(&ca.leaf(&["backend.test"]), Some(&ca)).await;
    let tls = UpstreamTls {
        sni: Some("backend.test".into()),
        ca_pem: Some(ca.pem.clone()),
        ..UpstreamTls::default()
    };
    let client = serve(tls_cluster(backend, tls.clone())).await;
    let reply = client.get("any", "/").await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_GATEWAY,
        "the upstream requires a client certificate"
    );

    let (cert, key) = ca.leaf(&["proxy.test"]);
    let client = serve(tls_cluster(
        backend,
        UpstreamTls {
            client_cert_pem: Some(cert),
            client_key_pem: Some(key),
            ..tls
        },
    ))
    .await;
    let reply = client.get("any", "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains(";client_cert=yes;"), "{}", reply.body);
}

#[tokio::test]
async fn h2_cluster_negotiates_h2_by_alpn() {
    let ca = Ca::new();
    let backend = tls_backend(&ca.leaf(&["backend.test"]), None).await;
    let mut c = tls_cluster(
        backend,
        UpstreamTls {
            sni: Some("backend.test".into()),
            ca_pem: Some(ca.pem.clone()),
            ..UpstreamTls::default()
        },
    );
    c.upstream_protocol = UpstreamProtocol::H2;
    let client = serve(c).await;
    for _ in 0..3 {
        let reply = client.get("any", "/").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (
                StatusCode::OK,
                "sni=backend.test;alpn=h2;client_cert=no;version=HTTP/2.0;authority=any;host_header=false"
            )
        );
    }
}

#[tokio::test]
async fn bad_tls_settings_are_refused_by_name() {
    let ca = Ca::new();
    let (cert, _) = ca.leaf(&["proxy.test"]);
    let cases = [
        (
            UpstreamTls {
                ca_pem: Some("not pem".into()),
                ..UpstreamTls::default()
            },
            "cluster \"c\": tls.ca_pem: no certificate in the bundle",
        ),
        (
            UpstreamTls {
                ca_pem: Some(ca.pem.clone()),
                client_cert_pem: Some(cert),
                ..UpstreamTls::default()
            },
            "cluster \"c\": tls.client_key_pem: a client certificate needs its key",
        ),
        (
            UpstreamTls {
                ca_pem: Some(ca.pem.clone()),
                sni: Some("bad name!".into()),
                ..UpstreamTls::default()
            },
            "cluster \"c\": tls.sni",
        ),
        (
            UpstreamTls {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..UpstreamTls::default()
            },
            "cannot read ca file /nonexistent/ca.pem",
        ),
    ];
    for (tls, want) in cases {
        let error = Proxy::new(Config {
            clusters: vec![tls_cluster("127.0.0.1:1".parse().unwrap(), tls)],
            ..Config::default()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains(want), "{error:?} should contain {want:?}");
    }
}

#[tokio::test]
async fn health_checks_of_tls_clusters_speak_tls() {
    use berth_proxy::HealthCheck;
    let ca = Ca::new();
    let backend = tls_backend(&ca.leaf(&["backend.test"]), None).await;
    let checked = |ca_pem: String, protocol: UpstreamProtocol| Cluster {
        health_check: Some(HealthCheck {
            interval_ms: 50,
            timeout_ms: 500,
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            http_path: Some("/healthz".into()),
        }),
        upstream_protocol: protocol,
        ..tls_cluster(
            backend,
            UpstreamTls {
                sni: Some("backend.test".into()),
                ca_pem: Some(ca_pem),
                ..UpstreamTls::default()
            },
        )
    };
    // A plaintext probe would fail and take the endpoint down within a few intervals.
    for protocol in [UpstreamProtocol::Http1, UpstreamProtocol::H2] {
        let client = serve(checked(ca.pem.clone(), protocol)).await;
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let reply = client.get("any", "/").await;
        assert_eq!(reply.status, StatusCode::OK, "{protocol:?}: {}", reply.body);
    }
    // Checks verify the certificate as requests do.
    let client = serve(checked(Ca::new().pem, UpstreamProtocol::Http1)).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let reply = client.get("any", "/").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n")
    );
}

/// A TLS echo server (no HTTP) for `names`.
async fn tls_echo(ca: &Ca, names: &[&str]) -> SocketAddr {
    let (cert, key) = ca.leaf(names);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    let (mut read, mut write) = tokio::io::split(stream);
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn tcp_listeners_originate_tls_to_tls_clusters() {
    use berth_proxy::{Listener, ListenerProtocol, Listeners};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let ca = Ca::new();
    let backend = tls_echo(&ca, &["backend.test"]).await;
    for (ca_pem, echoed) in [(ca.pem.clone(), true), (Ca::new().pem, false)] {
        let address = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let config = Config {
            clusters: vec![tls_cluster(
                backend,
                UpstreamTls {
                    sni: Some("backend.test".into()),
                    ca_pem: Some(ca_pem),
                    ..UpstreamTls::default()
                },
            )],
            listeners: vec![Listener {
                name: "tcp".into(),
                address,
                protocol: ListenerProtocol::Tcp,
                cluster: Some("c".into()),
                proxy_protocol: None,
                idle_timeout_ms: None,
                tls: None,
                virtual_host: None,
            }],
            ..Config::default()
        };
        let proxy = Proxy::new(config.clone()).unwrap();
        let mut listeners = Listeners::default();
        listeners.reconcile(&proxy, &config).await.unwrap();

        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let _ = stream.write_all(b"hello").await;
        let mut got = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            (&mut stream).take(5).read_to_end(&mut got),
        )
        .await
        .expect("neither echoed nor closed");
        if echoed {
            assert_eq!(got, b"hello", "{read:?}");
        } else {
            assert!(got.is_empty(), "a failed verification relays nothing");
        }
        drop(stream);
        listeners.stop_all().await;
    }
}
