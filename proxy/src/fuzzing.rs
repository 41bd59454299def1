//! Entry points for the fuzz targets in `proxy/fuzz/`; not part of the supported API.

use std::path::Path;
use std::time::SystemTime;

use crate::config::StickySessions;
use crate::http::cookie;
use crate::sticky::StickyKey;

/// Scans `data` as a `Cookie` header value for a few names and checks any value found as a
/// sticky-session token.
pub fn cookie(data: &[u8]) {
    let key = StickyKey::new(
        &StickySessions {
            secret: "fuzzing-secret-0123456789".into(),
            ..StickySessions::default()
        },
        None,
    );
    for name in [&b"berth_sticky"[..], b"a", b""] {
        if let Some(value) = cookie::find_in(data, name) {
            let _ = key.verify(value, SystemTime::now());
        }
    }
    let _ = key.verify(data, SystemTime::now());
}

/// Parses `data` as a YAML and as a JSON config file, and builds what parses.
pub fn config(data: &[u8]) {
    for name in ["proxy.yaml", "proxy.json"] {
        if let Ok(config) = crate::run::parse_config(Path::new(name), data) {
            let _ = crate::snapshot::Snapshot::build(&config, None);
        }
    }
}

/// Parses `data` as a response from an endpoint to berth's HTTP/1.1 client: head, framing,
/// keep-alive, and a chunked body.
pub fn upstream_response(data: &[u8]) {
    crate::upstream::fuzz_response(data);
}
