//! `X-Request-Id`: keep a valid incoming id or make one, with no system call per request.
//!
//! A generated id is UUID-shaped (version 4 and variant bits set, so tools that parse UUIDs
//! accept it): 60 random bits drawn once per process, then a 62-bit counter. Ids are unique
//! within a process and, with overwhelming probability, across processes; they are not
//! secrets.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::RequestIdPolicy;

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming id kept.
const MAX_LEN: usize = 128;

/// Makes sure `headers` carry exactly one valid id (unless the policy is `off`) and returns it.
pub(crate) fn ensure(policy: RequestIdPolicy, headers: &mut HeaderMap) -> Option<HeaderValue> {
    if policy == RequestIdPolicy::Off {
        return None;
    }
    if policy == RequestIdPolicy::Keep {
        let mut values = headers.get_all(&X_REQUEST_ID).iter();
        if let (Some(value), None) = (values.next(), values.next())
            && is_valid(value.as_bytes())
        {
            return Some(value.clone());
        }
    }
    let id = generate();
    headers.insert(X_REQUEST_ID, id.clone());
    Some(id)
}

/// 1 to 128 bytes of letters, digits and `- _ . : + / =`: what UUIDs, ULIDs, base64 and the
/// ids of common tracers use, and nothing that could smuggle log or header syntax.
fn is_valid(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(&b))
}

/// A new id, unique within this process.
pub(crate) fn generate() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Version 4 in bits 12..16 of the third group.
    let prefix = *PREFIX.get_or_init(|| (fastrand::u64(..) & !0xf000) | 0x4000);
    // Variant 0b10 in the top bits of the fourth group; the counter never reaches 2^62.
    let counter = (COUNTER.fetch_add(1, Ordering::Relaxed) & (u64::MAX >> 2)) | (1 << 63);
    let mut hex = [0u8; 32];
    for (i, byte) in prefix
        .to_be_bytes()
        .into_iter()
        .chain(counter.to_be_bytes())
        .enumerate()
    {
        hex[2 * i] = HEX[usize::from(byte >> 4)];
        hex[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    let mut out = [b'-'; 36];
    out[..8].copy_from_slice(&hex[..8]);
    out[9..13].copy_from_slice(&hex[8..12]);
    out[14..18].copy_from_slice(&hex[12..16]);
    out[19..23].copy_from_slice(&hex[16..20]);
    out[24..].copy_from_slice(&hex[20..]);
    // One allocation, shared by the request's and the response's header: `from_owner` makes
    // clones reference counts, where a copied slice is re-allocated on its first clone.
    // Only hex digits and dashes, always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(out))
        .unwrap_or(HeaderValue::from_static("-"))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_uuids() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        let a = a.to_str().unwrap();
        assert_eq!(a.len(), 36);
        let groups: Vec<_> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4", "version 4");
        assert!("89ab".contains(&a[19..20]), "RFC 4122 variant");
        assert!(is_valid(a.as_bytes()));
    }

    #[test]
    fn valid_incoming_kept_invalid_replaced() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ensure(RequestIdPolicy::Keep, &mut h).unwrap(), "abc-123");
        assert_eq!(h[X_REQUEST_ID], "abc-123");

        let fresh = ensure(RequestIdPolicy::Generate, &mut h).unwrap();
        assert_ne!(fresh, "abc-123");
        assert_eq!(h[X_REQUEST_ID], fresh);

        for bad in ["", "has space", "semi;colon", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = ensure(RequestIdPolicy::Keep, &mut h).unwrap();
            assert_ne!(id, bad);
            assert_eq!(h.get_all(X_REQUEST_ID).iter().count(), 1);
        }
        // Two ids: ambiguous, replaced by one.
        let mut h = HeaderMap::new();
        h.append(X_REQUEST_ID, HeaderValue::from_static("a"));
        h.append(X_REQUEST_ID, HeaderValue::from_static("b"));
        let id = ensure(RequestIdPolicy::Keep, &mut h).unwrap();
        assert_eq!(h.get_all(X_REQUEST_ID).iter().collect::<Vec<_>>(), [&id]);

        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("bad id"));
        assert!(ensure(RequestIdPolicy::Off, &mut h).is_none());
        assert_eq!(h[X_REQUEST_ID], "bad id", "off leaves the header alone");
    }
}
