//! Which protocol a new plain-text connection speaks, seen with a peek at its first bytes.
//!
//! hyper-util's auto builder tells HTTP/1 from h2 prior knowledge by reading the first bytes
//! into a 24-byte buffer and replaying them through a wrapper (`Rewind`) under every later
//! read. hyper's read buffer then grows from that 24-byte first read with a realloc that copies
//! 8 KiB: callgrind counted ~10,000 instructions per new connection for the detection. A peek
//! leaves the bytes in the socket, so an HTTP/1 connection goes straight to hyper's HTTP/1
//! server, which reads them itself.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

/// What the client sends first on an h2 prior-knowledge connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a connection say.
#[derive(Debug)]
pub(crate) enum Sniffed {
    /// Not the h2 preface: HTTP/1 (or garbage, which hyper's HTTP/1 parser answers with 400).
    Http1,
    /// The h2 preface, or the start of it: the auto builder reads on and decides.
    Undecided,
    /// The client closed without sending a byte.
    Closed,
    /// Nothing arrived within the time allowed.
    TimedOut,
    /// The peek failed (a reset connection).
    Failed(io::Error),
}

/// Waits up to `timeout` for the first bytes of `stream` and classifies them, leaving them
/// in the socket.
pub(crate) async fn sniff(stream: &TcpStream, timeout: Duration) -> Sniffed {
    let mut first = [0u8; H2_PREFACE.len()];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Err(_) => Sniffed::TimedOut,
        Ok(Err(error)) => Sniffed::Failed(error),
        Ok(Ok(0)) => Sniffed::Closed,
        Ok(Ok(n)) => classify(&first[..n]),
    }
}

/// HTTP/1 as soon as a byte differs from the h2 preface, as hyper-util's detection decides.
fn classify(first: &[u8]) -> Sniffed {
    if H2_PREFACE.starts_with(first) {
        Sniffed::Undecided
    } else {
        Sniffed::Http1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_and_its_prefixes_are_undecided() {
        for n in 1..=H2_PREFACE.len() {
            assert!(
                matches!(classify(&H2_PREFACE[..n]), Sniffed::Undecided),
                "{n}"
            );
        }
        for first in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"P",
            b"PRI * HTTP/1.1",
            b"\r\n",
            b"\x16\x03",
        ] {
            let expected = if first == b"P" { "undecided" } else { "http1" };
            let got = match classify(first) {
                Sniffed::Http1 => "http1",
                Sniffed::Undecided => "undecided",
                other => panic!("{other:?}"),
            };
            assert_eq!(got, expected, "{first:?}");
        }
    }

    #[tokio::test]
    async fn peeked_bytes_stay_in_the_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let timeout = Duration::from_secs(5);

        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(matches!(sniff(&server, timeout).await, Sniffed::Http1));
        let mut read = [0u8; 16];
        server.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"GET / HTTP/1.1\r\n");

        drop(client);
        assert!(matches!(sniff(&server, timeout).await, Sniffed::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let sniffed = sniff(&server, Duration::from_millis(100)).await;
        assert!(matches!(sniffed, Sniffed::TimedOut));
    }
}
