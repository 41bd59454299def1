//! PROXY protocol headers (HAProxy's spec, versions 1 and 2) sent to upstreams, so that a
//! backend behind an L4 listener learns the client's address.

use std::net::SocketAddr;

use crate::config::ProxyProtocol;

/// The v2 signature: "\r\n\r\n\0\r\nQUIT\n".
const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// The header announcing a TCP connection from `source` to `destination`.
pub(crate) fn header(
    version: ProxyProtocol,
    source: SocketAddr,
    destination: SocketAddr,
) -> Vec<u8> {
    // A v4 client on a dual-stack socket shows up IPv4-mapped; both ends must be one family.
    let source = SocketAddr::new(source.ip().to_canonical(), source.port());
    let destination = SocketAddr::new(destination.ip().to_canonical(), destination.port());
    match version {
        ProxyProtocol::V1 => v1(source, destination),
        ProxyProtocol::V2 => v2(source, destination),
    }
}

fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => format!(
            "PROXY TCP4 {} {} {} {}\r\n",
            s.ip(),
            d.ip(),
            s.port(),
            d.port()
        ),
        (SocketAddr::V6(s), SocketAddr::V6(d)) => format!(
            "PROXY TCP6 {} {} {} {}\r\n",
            s.ip(),
            d.ip(),
            s.port(),
            d.port()
        ),
        // Mixed families cannot be described; the spec's answer is UNKNOWN.
        _ => "PROXY UNKNOWN\r\n".to_owned(),
    }
    .into_bytes()
}

fn v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    // Version 2, command PROXY.
    out.push(0x21);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            // AF_INET, STREAM.
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            // AF_INET6, STREAM.
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => {
            // AF_UNSPEC, no address block.
            out.push(0x00);
            out.extend_from_slice(&0u16.to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_headers() {
        let s: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        let d: SocketAddr = "[::ffff:10.0.0.2]:80".parse().unwrap();
        assert_eq!(
            header(ProxyProtocol::V1, s, d),
            b"PROXY TCP4 10.0.0.1 10.0.0.2 5555 80\r\n"
        );
        let s6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        let d6: SocketAddr = "[2001:db8::2]:2".parse().unwrap();
        assert_eq!(
            header(ProxyProtocol::V1, s6, d6),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"
        );
        assert_eq!(header(ProxyProtocol::V1, s, d6), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_headers() {
        let s: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        let d: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let h = header(ProxyProtocol::V2, s, d);
        assert_eq!(&h[..12], &V2_SIGNATURE);
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..20], &[10, 0, 0, 1]);
        assert_eq!(&h[20..24], &[10, 0, 0, 2]);
        assert_eq!(&h[24..], &[0x15, 0xB3, 0, 80]);
        let s6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        let d6: SocketAddr = "[2001:db8::2]:2".parse().unwrap();
        let h = header(ProxyProtocol::V2, s6, d6);
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
    }
}
