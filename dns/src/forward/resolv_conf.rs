//! The nameservers of a resolv.conf.

use std::net::{IpAddr, SocketAddr};

/// The `nameserver` addresses of resolv.conf text, on port 53, in order; lines that do not parse
/// are skipped (as the C library does). Link-local IPv6 zone ids (`fe80::1%eth0`) are not
/// supported and skipped.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|address| address.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers_in_order() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver   ::1 # v6\n\
                    nameserver fe80::1%eth0\nnameserver bogus\noptions ndots:5\n;nameserver 1.1.1.1\n";
        let expected: Vec<SocketAddr> =
            vec!["10.0.0.2:53".parse().unwrap(), "[::1]:53".parse().unwrap()];
        assert_eq!(parse_resolv_conf(text), expected);
        assert!(parse_resolv_conf("").is_empty());
    }
}
