//! TLS termination: certificates by SNI from the live snapshot, so that a config update swaps
//! them for new handshakes without touching open connections.

use std::fmt;
use std::sync::Arc;

use ahash::AHashMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{Certificate, ListenerTls};
use crate::error::ConfigError;
use crate::proxy::WeakProxy;

/// The certificates of one snapshot, by domain.
#[derive(Default)]
pub(crate) struct CertTable {
    by_name: AHashMap<Box<str>, Arc<CertifiedKey>>,
    exact: AHashMap<Box<str>, Arc<CertifiedKey>>,
    /// Keyed by the suffix with its leading dot: "*.example.com" is ".example.com".
    wildcard: AHashMap<Box<str>, Arc<CertifiedKey>>,
}

impl fmt::Debug for CertTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertTable")
            .field("certificates", &self.by_name.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl CertTable {
    pub(crate) fn build(certificates: &[Certificate]) -> Result<Self, ConfigError> {
        let mut table = Self::default();
        let provider = provider();
        for cert in certificates {
            let error = |reason: String| ConfigError::Certificate {
                certificate: cert.name.clone(),
                reason,
            };
            let chain_pem = pem_source(cert.cert_pem.as_deref(), cert.cert_file.as_deref(), "cert")
                .map_err(error)?;
            let key_pem = pem_source(cert.key_pem.as_deref(), cert.key_file.as_deref(), "key")
                .map_err(error)?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| error(format!("bad certificate PEM: {e}")))?;
            if chain.is_empty() {
                return Err(error("no certificate in the PEM".into()));
            }
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| error(format!("bad private key PEM: {e}")))?;
            let key = provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| error(format!("unusable private key: {e}")))?;
            let certified = Arc::new(CertifiedKey::new(chain, key));
            if let Err(e) = certified.keys_match() {
                return Err(error(format!("key does not match the certificate: {e}")));
            }
            if table
                .by_name
                .insert(cert.name.as_str().into(), certified.clone())
                .is_some()
            {
                return Err(error("duplicate certificate name".into()));
            }
            for domain in &cert.domains {
                let domain = domain.to_ascii_lowercase();
                let (map, key) = match domain.strip_prefix('*') {
                    Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
                        (&mut table.wildcard, suffix.to_owned())
                    }
                    Some(_) => return Err(error(format!("bad wildcard domain {domain:?}"))),
                    None if !domain.is_empty() => (&mut table.exact, domain.clone()),
                    None => return Err(error("empty domain".into())),
                };
                if map.insert(key.into(), certified.clone()).is_some() {
                    return Err(error(format!(
                        "domain {domain:?} is claimed by two certificates"
                    )));
                }
            }
        }
        Ok(table)
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Exact domain, then the wildcard for the parent domain, then the default.
    fn find(&self, sni: Option<&str>, default: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = sni {
            let sni = sni.to_ascii_lowercase();
            if let Some(c) = self.exact.get(sni.as_str()) {
                return Some(c.clone());
            }
            // As in X.509 (RFC 6125), a wildcard covers exactly one label: serving
            // "*.example.com" for "a.b.example.com" would only make the client refuse it.
            let found = sni
                .find('.')
                .filter(|&i| i > 0)
                .and_then(|i| self.wildcard.get(&sni[i..]));
            if let Some(c) = found {
                return Some(c.clone());
            }
        }
        self.by_name.get(default?).cloned()
    }
}

fn pem_source(
    inline: Option<&str>,
    file: Option<&std::path::Path>,
    what: &str,
) -> Result<Vec<u8>, String> {
    match (inline, file) {
        (Some(pem), None) => Ok(pem.as_bytes().to_vec()),
        (None, Some(path)) => std::fs::read(path)
            .map_err(|e| format!("cannot read {what} file {}: {e}", path.display())),
        (Some(_), Some(_)) => Err(format!("give {what}_pem or {what}_file, not both")),
        (None, None) => Err(format!("{what}_pem or {what}_file is required")),
    }
}

/// Picks the certificate from the live snapshot at each handshake.
struct Resolver {
    proxy: WeakProxy,
    default: Option<String>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let proxy = self.proxy.upgrade()?;
        let snapshot = proxy.snapshots().load();
        snapshot
            .certificates()
            .find(hello.server_name(), self.default.as_deref())
    }
}

/// The rustls config of a TLS listener: ALPN h2 and http/1.1, TLS 1.2 and 1.3, certificates
/// from the live snapshot, optional client-certificate verification.
pub(crate) fn server_config(
    proxy: WeakProxy,
    listener: &str,
    tls: &ListenerTls,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let error = |reason: String| ConfigError::Certificate {
        certificate: format!("client CA of listener {listener}"),
        reason,
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| error(e.to_string()))?;
    let builder = match &tls.client_ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| error(format!("bad PEM: {e}")))?;
                roots.add(cert).map_err(|e| error(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(error("no certificate in the bundle".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Resolver {
        proxy,
        default: tls.default_certificate.clone(),
    }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Stateless, reusable resumption tickets (keys rotated every 6 hours), as nginx and HAProxy
    // issue by default: a returning client skips the certificate signature. The default
    // stateful cache holds 256 single-use entries, so a busy listener mostly does full
    // handshakes (bench/proxy.sh tls_handshake: 0.39 of nginx's rate without tickets).
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| ConfigError::Certificate {
            certificate: format!("session tickets of listener {listener}"),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(config))
}

/// The system's trust anchors, loaded once per process: reading and parsing the bundle costs
/// milliseconds, too much for every config reload.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: std::sync::OnceLock<Result<Arc<RootCertStore>, String>> =
        std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "no system CA certificates found ({}); set ca_pem or ca_file",
                    errors.join("; ")
                ));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// A cluster's TLS settings, validated into a rustls client config: TLS 1.2 and 1.3, the
/// configured CAs (or the system's), optional client certificate, ALPN for `h2`/`http/1.1`.
/// Errors name the offending field (`tls.ca_pem`, ...).
pub(crate) fn upstream_client(
    tls: &crate::config::UpstreamTls,
    h2: bool,
) -> Result<crate::connector::UpstreamTls, (&'static str, String)> {
    use rustls::ClientConfig;
    use rustls::pki_types::ServerName;

    let ca_field = if tls.ca_file.is_some() {
        "tls.ca_file"
    } else {
        "tls.ca_pem"
    };
    let roots = match (&tls.ca_pem, &tls.ca_file) {
        (None, None) => system_roots().map_err(|e| ("tls", e))?,
        (pem, file) => {
            let pem =
                pem_source(pem.as_deref(), file.as_deref(), "ca").map_err(|e| (ca_field, e))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| (ca_field, format!("bad PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| (ca_field, format!("unusable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err((ca_field, "no certificate in the bundle".into()));
            }
            Arc::new(roots)
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ("tls", e.to_string()))?
        .with_root_certificates(roots);
    let client_cert = tls.client_cert_pem.is_some() || tls.client_cert_file.is_some();
    let client_key = tls.client_key_pem.is_some() || tls.client_key_file.is_some();
    let mut config = match (client_cert, client_key) {
        (false, false) => builder.with_no_client_auth(),
        (true, true) => {
            let chain_pem = pem_source(
                tls.client_cert_pem.as_deref(),
                tls.client_cert_file.as_deref(),
                "client_cert",
            )
            .map_err(|e| ("tls.client_cert_pem", e))?;
            let key_pem = pem_source(
                tls.client_key_pem.as_deref(),
                tls.client_key_file.as_deref(),
                "client_key",
            )
            .map_err(|e| ("tls.client_key_pem", e))?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| ("tls.client_cert_pem", format!("bad PEM: {e}")))?;
            if chain.is_empty() {
                return Err(("tls.client_cert_pem", "no certificate in the PEM".into()));
            }
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| ("tls.client_key_pem", format!("bad private key PEM: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ("tls.client_key_pem", e.to_string()))?
        }
        (true, false) => {
            return Err((
                "tls.client_key_pem",
                "a client certificate needs its key".into(),
            ));
        }
        (false, true) => {
            return Err((
                "tls.client_cert_pem",
                "a client key needs its certificate".into(),
            ));
        }
    };
    config.alpn_protocols = if tls.alpn.is_empty() {
        vec![if h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }]
    } else {
        tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
    };
    if config.alpn_protocols.iter().any(Vec::is_empty) {
        return Err(("tls.alpn", "empty protocol name".into()));
    }
    let server_name = match &tls.sni {
        Some(sni) => Some(ServerName::try_from(sni.clone()).map_err(|e| {
            (
                "tls.sni",
                format!("{sni:?} is not a DNS name or IP address: {e}"),
            )
        })?),
        None => None,
    };
    Ok(crate::connector::UpstreamTls {
        config: Arc::new(config),
        server_name,
    })
}
