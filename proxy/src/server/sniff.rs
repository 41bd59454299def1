//! Which protocol a new plain-text connection speaks, seen in its first bytes.
//!
//! hyper-util's auto builder tells HTTP/1 from h2 prior knowledge by reading the first bytes
//! into a 24-byte buffer and replaying them under every later read; hyper's read buffer then
//! grows from that 24-byte first read with a realloc that copies 8 KiB (callgrind: ~10,000
//! instructions per new connection). Here the first read takes whatever the client sent (its
//! whole request head, usually), the connection's wrapper (`head_timeout::Watched`) hands
//! those bytes to hyper's first read, and an HTTP/1 connection goes straight to hyper's
//! HTTP/1 server.
//!
//! The first read goes through tokio's `AsyncRead`, whose short reads clear the socket's
//! readiness: hyper's next read then waits for epoll instead of making a read(2) that can only
//! say EAGAIN. (A read(2) at once after accept(2), as HAProxy makes, found the request there
//! but left tokio's readiness to be cleared by such a read: one system call more, which costs
//! more than the timer of the wait.)

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// What the first read takes at most; the rest stays in the socket for hyper.
const FIRST_READ: usize = 2048;

/// What the client sends first on an h2 prior-knowledge connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a connection say; with them, to be read again.
#[derive(Debug)]
pub(crate) enum Sniffed {
    /// Not the h2 preface: HTTP/1 (or garbage, which hyper's HTTP/1 parser answers with 400).
    Http1(Bytes),
    /// The h2 preface, or the start of it: the auto builder reads on and decides.
    Undecided(Bytes),
    /// The client closed without sending a byte.
    Closed,
    /// Nothing arrived within the time allowed.
    TimedOut,
    /// The read failed (a reset connection).
    Failed(io::Error),
}

/// Reads the first bytes of `stream`, waiting up to `timeout` for them, and classifies them.
pub(crate) async fn sniff(stream: &mut TcpStream, timeout: Duration) -> Sniffed {
    // On the heap, not in the connection's future: an array there would be zeroed for every
    // connection and copied with the future each time the task moves it (~1,700 instructions
    // per new connection, callgrind).
    let mut first = BytesMut::with_capacity(FIRST_READ);
    match tokio::time::timeout(timeout, stream.read_buf(&mut first)).await {
        Err(_) => Sniffed::TimedOut,
        Ok(Err(error)) => Sniffed::Failed(error),
        Ok(Ok(0)) => Sniffed::Closed,
        Ok(Ok(_)) => {
            let whole_head = first.windows(4).any(|w| w == b"\r\n\r\n");
            let bodiless = first.starts_with(b"GET ") || first.starts_with(b"HEAD ");
            if !(whole_head && bodiless) {
                // A head in pieces, or a body to come: a client that writes them in several
                // calls with Nagle's algorithm on holds the rest until this part is
                // acknowledged, and the listener delays ACKs (see `serve_http`): acknowledge
                // now, not in 40 ms. (HAProxy, which also delays them, turns them back on for
                // requests with a body.)
                let _ = socket2::SockRef::from(&*stream).set_tcp_quickack(true);
            }
            classify(first.freeze())
        }
    }
}

/// HTTP/1 as soon as a byte differs from the h2 preface, as hyper-util's detection decides.
/// (The bytes may go on past the preface: the client's first frames.)
fn classify(first: Bytes) -> Sniffed {
    let common = first.len().min(H2_PREFACE.len());
    let h2 = first[..common] == H2_PREFACE[..common];
    if h2 {
        Sniffed::Undecided(first)
    } else {
        Sniffed::Http1(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_and_its_prefixes_are_undecided() {
        for n in 1..=H2_PREFACE.len() {
            assert!(
                matches!(
                    classify(Bytes::copy_from_slice(&H2_PREFACE[..n])),
                    Sniffed::Undecided(_)
                ),
                "{n}"
            );
        }
        let mut with_frames = H2_PREFACE.to_vec();
        with_frames.extend_from_slice(b"\0\0\0\x04\0\0\0\0\0");
        assert!(matches!(
            classify(with_frames.into()),
            Sniffed::Undecided(_)
        ));
        for first in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"P",
            b"PRI * HTTP/1.1",
            b"\r\n",
            b"\x16\x03",
        ] {
            let expected = if first == b"P" { "undecided" } else { "http1" };
            let got = match classify(Bytes::copy_from_slice(first)) {
                Sniffed::Http1(_) => "http1",
                Sniffed::Undecided(_) => "undecided",
                other => panic!("{other:?}"),
            };
            assert_eq!(got, expected, "{first:?}");
        }
    }

    #[tokio::test]
    async fn first_bytes_are_replayed_before_the_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let timeout = Duration::from_secs(5);

        // Read at once if there, else when they come.
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Sniffed::Http1(first) = sniff(&mut server, timeout).await else {
            panic!("not http/1");
        };
        assert_eq!(&first[..], b"GET / HTTP/1.1\r\n");
        let sniffing = tokio::spawn(async move {
            let sniffed = sniff(&mut server, timeout).await;
            (server, sniffed)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"Host: a\r\n").await.unwrap();
        let (server, sniffed) = sniffing.await.unwrap();
        let Sniffed::Http1(more) = sniffed else {
            panic!("not http/1");
        };
        assert_eq!(&more[..], b"Host: a\r\n");

        let (mut replay, _reclaim) =
            crate::head_timeout::watch_arrived(server, Bytes::from_static(b"0123"));
        let mut read = [0u8; 3];
        replay.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"012");
        let mut rest = [0u8; 5];
        client.write_all(b"tail").await.unwrap();
        replay.read_exact(&mut rest[..1]).await.unwrap();
        replay.read_exact(&mut rest[1..]).await.unwrap();
        assert_eq!(&rest[..1], b"3");
        assert_eq!(&rest[1..], b"tail", "what a sniff read is not read again");

        drop(client);
        let mut end = [0u8; 1];
        assert_eq!(replay.read(&mut end).await.unwrap(), 0);
    }

    /// With quick ACKs off on the listener (as `serve_http` sets it), a head in pieces or one
    /// that may have a body turns them back on, so that a client holding the rest for an ACK
    /// is not kept waiting.
    #[tokio::test]
    async fn a_head_in_pieces_is_acknowledged_at_once() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        socket2::SockRef::from(&listener)
            .set_tcp_quickack(false)
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let quickack = |s: &TcpStream| socket2::SockRef::from(s).tcp_quickack().unwrap();
        for (head, acknowledged) in [
            (&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], false),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", true),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n",
                true,
            ),
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            client.write_all(head).await.unwrap();
            assert!(!quickack(&server));
            assert!(matches!(
                sniff(&mut server, Duration::from_secs(5)).await,
                Sniffed::Http1(_)
            ));
            assert_eq!(quickack(&server), acknowledged, "{head:?}");
        }
    }

    #[tokio::test]
    async fn a_client_closing_first_is_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        drop(client);
        let sniffed = sniff(&mut server, Duration::from_secs(5)).await;
        assert!(matches!(sniffed, Sniffed::Closed), "{sniffed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let sniffed = sniff(&mut server, Duration::from_millis(100)).await;
        assert!(matches!(sniffed, Sniffed::TimedOut));
    }
}
