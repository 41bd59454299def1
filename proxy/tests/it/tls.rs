//! TLS termination: SNI selection, wildcard and default certificates, hot swap, ALPN h2,
//! client certificates. Certificates come from rcgen, signed by a CA made per test.

use std::net::SocketAddr;
use std::sync::Arc;

use berth_proxy::{Certificate, Config, ListenerTls, Proxy};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::{Backend, cluster, vhost};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// (certificate PEM, key PEM, certificate DER) for these names.
    fn leaf(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

fn certificate(name: &str, domains: &[&str], pem: &(String, String, Vec<u8>)) -> Certificate {
    Certificate {
        name: name.into(),
        domains: domains.iter().map(|&d| d.into()).collect(),
        cert_pem: Some(pem.0.clone()),
        key_pem: Some(pem.1.clone()),
        ..Certificate::default()
    }
}

fn connector(
    ca: &Ca,
    alpn: &[&[u8]],
    client_cert: Option<&(String, String, Vec<u8>)>,
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client_cert {
        Some((cert, key, _)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
}

fn served_der(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// GET /echo over an HTTP/1.1 connection; the backend's echo of the request.
async fn echo_http1(stream: TlsStream<TcpStream>, host: &str) -> String {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get("/echo")
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

async fn serve_tls(config: Config, tls: ListenerTls) -> (Proxy, SocketAddr) {
    let proxy = Proxy::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let p = proxy.clone();
    tokio::spawn(async move { p.serve_https(listener, &tls, std::future::pending()).await });
    (proxy, addr)
}

#[tokio::test]
async fn sni_picks_exact_wildcard_or_default_and_hot_swap_reaches_new_connections_only() {
    let backend = Backend::start("b0").await;
    let ca = Ca::new();
    let exact = ca.leaf(&["a.example.com"]);
    let wild = ca.leaf(&["*.wild.test"]);
    let default = ca.leaf(&["default.test"]);
    let config = Config {
        virtual_hosts: vec![vhost("all", &["*"], &[("/", "c")])],
        clusters: vec![cluster("c", &[backend.addr])],
        certificates: vec![
            certificate("exact", &["a.example.com"], &exact),
            certificate("wild", &["*.wild.test"], &wild),
            certificate("default", &[], &default),
        ],
        ..Config::default()
    };
    let tls = ListenerTls {
        default_certificate: Some("default".into()),
        client_ca_pem: None,
    };
    let (proxy, addr) = serve_tls(config.clone(), tls).await;
    let h1 = connector(&ca, &[b"http/1.1"], None);

    let open = connect(&h1, addr, "a.example.com").await.unwrap();
    assert_eq!(served_der(&open), exact.2);
    let s = connect(&h1, addr, "x.wild.test").await.unwrap();
    assert_eq!(served_der(&s), wild.2);
    // The client checks the name, so for the default certificate it asks for a name it holds
    // that no SNI entry claims.
    let s = connect(&h1, addr, "default.test").await.unwrap();
    assert_eq!(served_der(&s), default.2);
    let echo = echo_http1(s, "default.test").await;
    assert!(echo.contains("x-forwarded-proto: https"), "{echo}");

    // Swap the certificate of a.example.com.
    let renewed = ca.leaf(&["a.example.com"]);
    let mut swapped = config.clone();
    swapped.certificates[0] = certificate("exact", &["a.example.com"], &renewed);
    proxy.apply(swapped).unwrap();
    let fresh = connect(&h1, addr, "a.example.com").await.unwrap();
    assert_eq!(
        served_der(&fresh),
        renewed.2,
        "new connections get the new certificate"
    );
    // The connection opened before the swap still serves requests.
    let echo = echo_http1(open, "a.example.com").await;
    assert!(echo.starts_with("GET /echo"), "{echo}");

    // ALPN h2.
    let h2 = connector(&ca, &[b"h2", b"http/1.1"], None);
    let s = connect(&h2, addr, "a.example.com").await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = Request::get("https://a.example.com/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"b0");
}

#[tokio::test]
async fn client_certificates_are_verified_when_asked() {
    let backend = Backend::start("b0").await;
    let ca = Ca::new();
    let server = ca.leaf(&["a.example.com"]);
    let client_ca = Ca::new();
    let client = client_ca.leaf(&["client"]);
    let stranger = Ca::new().leaf(&["client"]);
    let config = Config {
        virtual_hosts: vec![vhost("all", &["*"], &[("/", "c")])],
        clusters: vec![cluster("c", &[backend.addr])],
        certificates: vec![certificate("a", &["a.example.com"], &server)],
        ..Config::default()
    };
    let (_proxy, addr) = serve_tls(
        config,
        ListenerTls {
            default_certificate: None,
            client_ca_pem: Some(client_ca.pem.clone()),
        },
    )
    .await;
    let with_cert = connector(&ca, &[b"http/1.1"], Some(&client));
    let s = connect(&with_cert, addr, "a.example.com").await.unwrap();
    assert!(
        echo_http1(s, "a.example.com")
            .await
            .starts_with("GET /echo")
    );

    // Without a certificate, or with one from another CA, no request gets through. With TLS
    // 1.3 the client learns of the refusal on its first read.
    for connector in [
        connector(&ca, &[b"http/1.1"], None),
        connector(&ca, &[b"http/1.1"], Some(&stranger)),
    ] {
        let refused = async {
            let s = connect(&connector, addr, "a.example.com").await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            let request = Request::get("/")
                .header("host", "a")
                .body(Full::new(Bytes::new()))
                .unwrap();
            sender
                .send_request(request)
                .await
                .map_err(std::io::Error::other)
        };
        assert!(refused.await.is_err());
    }
}

#[tokio::test]
async fn bad_certificates_are_refused_with_their_name() {
    let ca = Ca::new();
    let good = ca.leaf(&["a.test"]);
    let other = ca.leaf(&["b.test"]);
    let mismatched = (good.0.clone(), other.1.clone(), good.2.clone());
    let check = |cert: Certificate, want: &str| {
        let err = Proxy::new(Config {
            certificates: vec![cert],
            ..Config::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    };
    check(
        certificate("m", &["a.test"], &mismatched),
        "certificate \"m\": key does not match",
    );
    check(
        Certificate {
            cert_pem: Some("junk".into()),
            ..certificate("j", &[], &good)
        },
        "no certificate in the PEM",
    );
    check(
        Certificate {
            key_pem: None,
            ..certificate("k", &[], &good)
        },
        "key_pem or key_file is required",
    );
}
