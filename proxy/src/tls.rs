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
    Ok(Arc::new(config))
}
