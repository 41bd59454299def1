//! Reading one cookie out of `Cookie` request headers (RFC 6265 §5.4 syntax), without
//! allocating.

use http::HeaderMap;
use http::header::COOKIE;

/// The value of the first cookie called `name` in the request's `Cookie` headers. Values in
/// double quotes are returned without them; malformed pairs are skipped.
pub(crate) fn find<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .find_map(|value| find_in(value.as_bytes(), name.as_bytes()))
}

/// The value of cookie `name` in one `Cookie` header value.
pub(crate) fn find_in<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (&pair[..eq], &pair[eq + 1..]);
        if key.trim_ascii() != name {
            return None;
        }
        let value = value.trim_ascii();
        Some(
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookies() {
        assert_eq!(find_in(b"a=1; b=2", b"b"), Some(&b"2"[..]));
        assert_eq!(find_in(b"a=1;b=2", b"a"), Some(&b"1"[..]));
        assert_eq!(find_in(b"a=\"q\"", b"a"), Some(&b"q"[..]));
        assert_eq!(find_in(b"a=", b"a"), Some(&b""[..]));
        assert_eq!(find_in(b"ab=1; a=2", b"a"), Some(&b"2"[..]));
        assert_eq!(find_in(b"junk; a=x=y", b"a"), Some(&b"x=y"[..]));
        assert_eq!(find_in(b"", b"a"), None);
        assert_eq!(find_in(b";;;=", b"a"), None);
        assert_eq!(find_in(b"\"", b"a"), None);
        let mut h = HeaderMap::new();
        h.append(COOKIE, "x=1".parse().unwrap());
        h.append(COOKIE, "s=2".parse().unwrap());
        assert_eq!(find(&h, "s"), Some(&b"2"[..]));
    }
}
