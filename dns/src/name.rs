//! DNS labels and the lookup key of a name.

use hickory_proto::rr::Name;

/// Longest lookup key: a wire-format name is at most 255 octets including the root label.
pub(crate) const MAX_KEY_LEN: usize = 255;

/// Whether `label` is an RFC 1123 label as Kubernetes requires of object names: 1 to 63
/// characters of `a-z`, `0-9` and `-`, starting and ending with a letter or digit.
pub(crate) fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= 63
                && alnum(first)
                && alnum(last)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// The key a name is stored under in a snapshot: its labels, lowercased, each prefixed by its
/// length (the wire format without the root label). Unambiguous, unlike dotted text, and built
/// on the stack on the query path.
pub(crate) struct NameKey {
    buf: [u8; MAX_KEY_LEN],
    len: usize,
}

impl NameKey {
    /// The key of `name`; `None` only if it were longer than DNS allows, which `Name` already
    /// prevents.
    pub(crate) fn new(name: &Name) -> Option<Self> {
        let mut key = Self {
            buf: [0; MAX_KEY_LEN],
            len: 0,
        };
        for label in name.iter() {
            let end = key.len + 1 + label.len();
            let len = u8::try_from(label.len()).ok()?;
            let slot = key.buf.get_mut(key.len..end)?;
            let (len_byte, rest) = slot.split_first_mut()?;
            *len_byte = len;
            for (out, byte) in rest.iter_mut().zip(label) {
                *out = byte.to_ascii_lowercase();
            }
            key.len = end;
        }
        Some(key)
    }

    /// The key bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "hello", "hello-x7k2p", "0", "a-b-c", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in [
            "",
            "Hello",
            "hello_",
            "-a",
            "a-",
            "a.b",
            "_http",
            &"a".repeat(64),
            "é",
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn key_ignores_case_and_keeps_label_boundaries() {
        let key = |s: &str| NameKey::new(&Name::from_ascii(s).unwrap()).unwrap();
        assert_eq!(
            key("HeLLo.Default.svc.berth.local.").as_bytes(),
            key("hello.default.svc.berth.local.").as_bytes()
        );
        assert_eq!(key("ab.c.").as_bytes(), b"\x02ab\x01c");
        assert_ne!(key("a.bc.").as_bytes(), key("ab.c.").as_bytes());
        assert_eq!(key(".").as_bytes(), b"");
    }
}
