//! Sticky-session cookies: `<id>.<expiry>.<mac>`, all lowercase hex.
//!
//! `id` is the first 8 bytes of HMAC-SHA256(key, "endpoint " + address): stable for an
//! endpoint, but neither the address nor another endpoint's id can be derived from it without
//! the key. `expiry` is Unix seconds. `mac` is the first 16 bytes of HMAC-SHA256(key, id ‖
//! expiry), so a client can neither forge a cookie nor extend its lifetime.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ahash::AHashMap;
use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::Sha256;

use crate::config::StickySessions;

type HmacSha256 = Hmac<Sha256>;

/// How long a session cookie (TTL 0) is honoured.
const SESSION_COOKIE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// An endpoint's identity in a cookie.
pub(crate) type EndpointId = [u8; 8];

/// A cluster's cookie settings and key; shared by snapshots while the settings are unchanged.
#[derive(Debug)]
pub(crate) struct StickyKey {
    /// Keyed once; cloned per use, which is cheaper than keying again.
    mac: HmacSha256,
    cookie_name: Box<str>,
    /// The attributes after the value: "; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax".
    attributes: Box<str>,
    lifetime: Duration,
    config: StickySessions,
}

impl StickyKey {
    /// Keys `config`; an empty secret takes `prev`'s key if the settings match, else a random
    /// one.
    pub(crate) fn new(config: &StickySessions, prev: Option<&Arc<StickyKey>>) -> Arc<Self> {
        if let Some(prev) = prev
            && prev.config == *config
        {
            return prev.clone();
        }
        let key: Box<[u8]> = if config.secret.is_empty() {
            // From the OS: a key guessed from a seeded PRNG would let clients forge cookies.
            let mut key = [0u8; 32];
            if getrandom::fill(&mut key).is_err() {
                // No OS randomness (never on Linux >= 3.17): still unique per process.
                key.iter_mut().for_each(|b| *b = fastrand::u8(..));
            }
            key.into()
        } else {
            config.secret.as_bytes().into()
        };
        let mut attributes = format!("; Path={}", config.path);
        if config.ttl_s > 0 {
            let _ = write!(attributes, "; Max-Age={}", config.ttl_s);
        }
        attributes.push_str("; HttpOnly; SameSite=Lax");
        if config.secure {
            attributes.push_str("; Secure");
        }
        // HMAC accepts keys of any length, so the fallback (a fixed all-zero key) is never
        // taken; it exists only to avoid a panic path.
        let mac = HmacSha256::new_from_slice(&key)
            .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()));
        Arc::new(Self {
            mac,
            cookie_name: config.cookie_name.as_str().into(),
            attributes: attributes.into(),
            lifetime: if config.ttl_s > 0 {
                Duration::from_secs(config.ttl_s)
            } else {
                SESSION_COOKIE_LIFETIME
            },
            config: config.clone(),
        })
    }

    pub(crate) fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }

    pub(crate) fn endpoint_id(&self, address: SocketAddr) -> EndpointId {
        let mut mac = self.mac();
        mac.update(b"endpoint ");
        mac.update(address.to_string().as_bytes());
        let out = mac.finalize().into_bytes();
        let mut id = [0; 8];
        id.copy_from_slice(&out[..8]);
        id
    }

    fn signature(&self, id: &EndpointId, expiry: u64) -> [u8; 16] {
        let mut mac = self.mac();
        mac.update(id);
        mac.update(&expiry.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let mut sig = [0; 16];
        sig.copy_from_slice(&out[..16]);
        sig
    }

    /// The `Set-Cookie` value pinning a client to endpoint `id`.
    pub(crate) fn set_cookie(&self, id: &EndpointId, now: SystemTime) -> Option<HeaderValue> {
        let expiry = unix(now) + self.lifetime.as_secs();
        let mut value = String::with_capacity(self.cookie_name.len() + 64 + self.attributes.len());
        value.push_str(&self.cookie_name);
        value.push('=');
        hex(&mut value, id);
        let _ = write!(value, ".{expiry:x}.");
        hex(&mut value, &self.signature(id, expiry));
        value.push_str(&self.attributes);
        HeaderValue::from_str(&value).ok()
    }

    /// The endpoint id a cookie value names, if it is authentic and not expired.
    pub(crate) fn verify(&self, value: &[u8], now: SystemTime) -> Option<EndpointId> {
        let mut parts = value.split(|&b| b == b'.');
        let (id, expiry, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || expiry.is_empty() || expiry.len() > 16 {
            return None;
        }
        let id: EndpointId = unhex(id)?;
        let expiry = u64::from_str_radix(std::str::from_utf8(expiry).ok()?, 16).ok()?;
        let sig: [u8; 16] = unhex(sig)?;
        let mut mac = self.mac();
        mac.update(&id);
        mac.update(&expiry.to_be_bytes());
        // Constant-time comparison of the truncated tag.
        mac.verify_truncated_left(&sig).ok()?;
        (expiry > unix(now)).then_some(id)
    }
}

/// The endpoints of one endpoint set by cookie id.
pub(crate) type StickyIndex = AHashMap<EndpointId, usize>;

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn unhex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> Arc<StickyKey> {
        StickyKey::new(
            &StickySessions {
                secret: secret.into(),
                ..StickySessions::default()
            },
            None,
        )
    }

    fn value_of(set_cookie: &HeaderValue) -> Vec<u8> {
        let s = set_cookie.to_str().unwrap();
        let value = s.split(';').next().unwrap().split_once('=').unwrap().1;
        value.as_bytes().to_vec()
    }

    #[test]
    fn round_trip_and_tamper() {
        let k = key("0123456789abcdef-secret");
        let now = SystemTime::now();
        let id = k.endpoint_id("10.0.0.1:80".parse().unwrap());
        let header = k.set_cookie(&id, now).unwrap();
        let text = header.to_str().unwrap();
        assert!(text.starts_with("berth_sticky="), "{text}");
        assert!(
            text.ends_with("; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"),
            "{text}"
        );
        assert!(!text.contains("10.0.0.1"), "no address exposed: {text}");
        let value = value_of(&header);
        assert_eq!(k.verify(&value, now), Some(id));

        // Another endpoint's id with this signature, a longer expiry, or another key: refused.
        let other = k.endpoint_id("10.0.0.2:80".parse().unwrap());
        let mut forged = value.clone();
        let mut other_hex = String::new();
        hex(&mut other_hex, &other);
        forged[..16].copy_from_slice(other_hex.as_bytes());
        assert_eq!(k.verify(&forged, now), None);
        let text = String::from_utf8(value.clone()).unwrap();
        let parts: Vec<&str> = text.split('.').collect();
        let extended = format!("{}.{}.{}", parts[0], "ffffffffff", parts[2]);
        assert_eq!(k.verify(extended.as_bytes(), now), None);
        assert_eq!(key("another-secret-of-16").verify(&value, now), None);
        // Expired.
        assert_eq!(k.verify(&value, now + Duration::from_secs(3601)), None);
        for junk in [
            &b""[..],
            b"..",
            b"zz.1.zz",
            b"0011223344556677..",
            b"\xff.\xff.\xff",
        ] {
            assert_eq!(k.verify(junk, now), None);
        }
    }

    #[test]
    fn key_kept_while_settings_match() {
        let config = StickySessions::default();
        let a = StickyKey::new(&config, None);
        assert!(Arc::ptr_eq(&a, &StickyKey::new(&config, Some(&a))));
        let other = StickySessions { ttl_s: 0, ..config };
        let b = StickyKey::new(&other, Some(&a));
        assert!(!Arc::ptr_eq(&a, &b));
        let header = b.set_cookie(&[0; 8], SystemTime::now()).unwrap();
        assert!(!header.to_str().unwrap().contains("Max-Age"));
    }
}
