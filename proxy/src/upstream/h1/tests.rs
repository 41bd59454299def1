use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

fn head(raw: &str) -> Result<Option<Head>, Error> {
    parse_head(&mut BytesMut::from(raw.as_bytes()))
}

fn framing_of(raw: &str) -> Result<Framing, Error> {
    let head = head(raw).unwrap().unwrap();
    framing(head.status, false, &head.headers)
}

#[test]
fn encodes_the_request_line_and_fields() {
    let mut out = Vec::new();
    let request = Request::get("http://10.0.0.1:8080/a/b?c=d")
        .header("x-one", "1")
        .body(())
        .unwrap();
    encode(&mut out, &request, "10.0.0.1:8080");
    assert_eq!(
        out,
        b"GET /a/b?c=d HTTP/1.1\r\nhost: 10.0.0.1:8080\r\nx-one: 1\r\n\r\n"
    );

    // A Host the request has wins; an empty POST says its length.
    let request = Request::post("/")
        .header("host", "example.com")
        .body(())
        .unwrap();
    encode(&mut out, &request, "10.0.0.1:8080");
    assert_eq!(
        out,
        b"POST / HTTP/1.1\r\nhost: example.com\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn parses_heads_whole_and_only_whole() {
    let raw = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: a\r\nx-a: b\r\n\r\nok";
    for cut in 0..raw.len() - 2 {
        assert!(head(&raw[..cut]).unwrap().is_none(), "partial at {cut}");
    }
    let mut buf = BytesMut::from(raw.as_bytes());
    let parsed = parse_head(&mut buf).unwrap().unwrap();
    assert_eq!(parsed.status, StatusCode::CREATED);
    assert_eq!(parsed.version, Version::HTTP_11);
    assert_eq!(parsed.headers["content-length"], "2");
    let values: Vec<_> = parsed.headers.get_all("x-a").iter().collect();
    assert_eq!(values, ["a", "b"]);
    assert_eq!(&buf[..], b"ok", "the body stays in the buffer");

    let old = head("HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
    assert_eq!(old.version, Version::HTTP_10);
}

#[test]
fn bad_heads_are_errors() {
    assert!(matches!(
        head("HTTP/1.1 2000 OK\r\n\r\n"),
        Err(Error::Parse(_))
    ));
    assert!(matches!(head("SMTP ready\r\n\r\n"), Err(Error::Parse(_))));
    assert!(matches!(
        head("HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n"),
        Err(Error::Parse(_))
    ));
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    assert!(matches!(
        head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")),
        Err(Error::HeadTooLarge)
    ));
    let long = "x".repeat(MAX_HEAD_BYTES);
    assert!(matches!(
        head(&format!("HTTP/1.1 200 OK\r\nx-long: {long}\r\n\r\n")),
        Err(Error::HeadTooLarge)
    ));
}

#[test]
fn framing_follows_rfc_9112() {
    let length = |raw| match framing_of(raw) {
        Ok(Framing::Length(n)) => Some(n),
        _ => None,
    };
    assert_eq!(
        length("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
        Some(5)
    );
    assert_eq!(
        length("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n"),
        Some(5)
    );
    assert_eq!(
        length("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"),
        Some(0)
    );
    assert_eq!(length("HTTP/1.1 304 Not Modified\r\n\r\n"), Some(0));
    let head_only = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(matches!(
        framing(head_only.status, true, &head_only.headers),
        Ok(Framing::Length(0))
    ));
    // Transfer-Encoding wins over Content-Length; chunked only if it is the last coding.
    assert!(matches!(
        framing_of(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 5\r\n\r\n"
        ),
        Ok(Framing::Chunked(_))
    ));
    assert!(matches!(
        framing_of("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n"),
        Ok(Framing::Close)
    ));
    assert!(matches!(
        framing_of("HTTP/1.1 200 OK\r\n\r\n"),
        Ok(Framing::Close)
    ));
    for bad in ["5, 6", "-1", "", "0x10", "99999999999999999999"] {
        let raw = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
        assert!(framing_of(&raw).is_err(), "{bad:?}");
    }
    assert!(
        framing_of("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n").is_err()
    );
}

#[test]
fn keep_alive_by_version_and_connection() {
    let keep = |raw| {
        let head = head(raw).unwrap().unwrap();
        keep_alive(head.version, &head.headers)
    };
    assert!(keep("HTTP/1.1 200 OK\r\n\r\n"));
    assert!(!keep("HTTP/1.1 200 OK\r\nconnection: Close\r\n\r\n"));
    assert!(!keep("HTTP/1.1 200 OK\r\nconnection: foo, close\r\n\r\n"));
    assert!(!keep("HTTP/1.0 200 OK\r\n\r\n"));
    assert!(keep("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n"));
}

/// Feeds `wire` to the chunked decoder `step` bytes at a time; the data, or the error.
fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), Error> {
    let mut state = Chunked::Size;
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    loop {
        match decode_chunked(&mut state, &mut buf)? {
            Decoded::Data(bytes) => data.extend_from_slice(&bytes),
            Decoded::Done => return Ok((data, buf.len())),
            Decoded::NeedMore if fed < wire.len() => {
                let end = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
            Decoded::NeedMore => return Err(Error::Chunked("ran out")),
        }
    }
}

#[test]
fn chunked_bodies_decode_however_they_are_split() {
    let wire = b"5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nx-trailer: t\r\n\r\nNEXT";
    for step in 1..wire.len() {
        let (data, left) = dechunk(wire, step).unwrap();
        assert_eq!(data, b"hello, world!!!", "step {step}");
        // Bytes after the body stay for whoever reads next (they make the connection unusable).
        assert!(left <= 4);
    }
    assert_eq!(dechunk(b"0\r\n\r\n", 1).unwrap().0, b"");
}

#[test]
fn bad_chunked_bodies_are_errors() {
    for wire in [
        &b"g\r\nx\r\n0\r\n\r\n"[..],
        b"2\r\nabXY0\r\n\r\n",
        b"\r\n",
        b"fffffffffffffffff\r\n",
    ] {
        assert!(
            dechunk(wire, 3).is_err(),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
    let long = [b'1'; MAX_CHUNK_LINE + 1];
    assert!(dechunk(&long, long.len()).is_err());
    let mut trailers = b"0\r\n".to_vec();
    while trailers.len() <= MAX_TRAILER_BYTES {
        trailers.extend_from_slice(b"x-t: 0123456789012345678901234567890123456789\r\n");
    }
    assert!(dechunk(&trailers, 1000).is_err());
}

/// A server that answers the n-th request it reads (over all connections) with `answers[n]`
/// and closes the connection after it if `answers[n].1`; counts connections.
struct Script {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn script(answers: Vec<(&'static str, bool)>) -> Script {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let answers = Arc::new(answers);
    let (count, seen) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (answers, seen) = (answers.clone(), seen.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 1024];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let request: Vec<u8> = buf.drain(..end).collect();
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(String::from_utf8_lossy(&request).into_owned());
                        seen.len() - 1
                    };
                    let (answer, close) = answers[n.min(answers.len() - 1)];
                    if stream.write_all(answer.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    Script {
        addr,
        connections,
        requests,
    }
}

/// GETs `/` through `upstream` with `affinity`; the body, or the error.
async fn get(
    upstream: &crate::upstream::Upstream,
    addr: SocketAddr,
    affinity: &crate::upstream::Affinity,
    method: Method,
) -> Result<(StatusCode, Vec<u8>), String> {
    let authority: http::uri::Authority = addr.to_string().parse().unwrap();
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}/"))
        .body(crate::http::RequestBody::empty())
        .unwrap();
    let (response, mut lease) = upstream
        .send(request, addr, &authority, Some(affinity))
        .await
        .map_err(|e| format!("{:?}", anyhow_chain(&e)))?;
    let status = response.status();
    let mut body = response.into_body();
    let collected = (&mut body).collect().await.map_err(|e| e.to_string());
    lease.release(&mut body);
    Ok((status, collected?.to_bytes().to_vec()))
}

fn anyhow_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

fn upstream() -> crate::upstream::Upstream {
    crate::upstream::upstream(std::time::Duration::from_secs(1), false)
}

#[tokio::test]
async fn length_and_chunked_bodies_keep_the_connection() {
    let server = script(vec![
        ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            false,
        ),
        (
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", false),
        ("HTTP/1.1 204 No Content\r\n\r\n", false),
    ])
    .await;
    let (upstream, affinity) = (upstream(), crate::upstream::Affinity::default());
    let get = |method| get(&upstream, server.addr, &affinity, method);
    assert_eq!(
        get(Method::GET).await.unwrap(),
        (StatusCode::OK, b"hello".to_vec())
    );
    assert_eq!(
        get(Method::GET).await.unwrap(),
        (StatusCode::OK, b"abcde".to_vec())
    );
    assert_eq!(
        get(Method::GET).await.unwrap(),
        (StatusCode::OK, b"ok".to_vec())
    );
    // HEAD: the length of what a GET would get, and no body.
    assert_eq!(
        get(Method::HEAD).await.unwrap(),
        (StatusCode::OK, Vec::new())
    );
    assert_eq!(
        get(Method::DELETE).await.unwrap(),
        (StatusCode::NO_CONTENT, Vec::new())
    );
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "one connection for all"
    );
    let requests = server.requests.lock().unwrap();
    assert!(
        requests[3].starts_with("HEAD / HTTP/1.1\r\nhost: 127.0.0.1:"),
        "{}",
        requests[3]
    );
}

#[tokio::test]
async fn connections_that_cannot_go_on_are_not_reused() {
    let server = script(vec![
        // Delimited by the close.
        ("HTTP/1.1 200 OK\r\n\r\nuntil the end", true),
        (
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\na",
            false,
        ),
        ("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nb", false),
        // More bytes than the length says.
        ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\ncXYZ", false),
        ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nd", false),
    ])
    .await;
    let (upstream, affinity) = (upstream(), crate::upstream::Affinity::default());
    let get = || get(&upstream, server.addr, &affinity, Method::GET);
    assert_eq!(get().await.unwrap().1, b"until the end");
    assert_eq!(get().await.unwrap().1, b"a");
    assert_eq!(get().await.unwrap().1, b"b");
    assert_eq!(get().await.unwrap().1, b"c");
    assert_eq!(get().await.unwrap().1, b"d");
    assert_eq!(server.connections.load(Ordering::SeqCst), 5);
}

/// More interim responses than a request may get before its final one.
const INTERIM_FLOOD: &str = concat!(
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
);

#[tokio::test]
async fn a_body_cut_short_is_an_error() {
    let server = script(vec![
        ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", true),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            false,
        ),
        ("HTTP/1.1 200 OK\r\ncontent", true),
        (INTERIM_FLOOD, false),
        ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nk", false),
    ])
    .await;
    let (upstream, affinity) = (upstream(), crate::upstream::Affinity::default());
    let get = || get(&upstream, server.addr, &affinity, Method::GET);
    let error = get().await.unwrap_err();
    assert!(error.contains("5 bytes before the end"), "{error}");
    assert!(get().await.unwrap_err().contains("connection closed"));
    assert!(get().await.unwrap_err().contains("chunk size"));
    assert!(get().await.unwrap_err().contains("exchange failed"));
    let error = get().await.unwrap_err();
    assert!(error.contains("too many interim responses"), "{error}");
    assert_eq!(get().await.unwrap().1, b"k");
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        6,
        "none reused after an error"
    );
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_retried_on_a_new_one() {
    let server = script(vec![
        // Closed right after the answer, without saying so: as servers close idle
        // connections at their keep-alive timeout.
        ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na", true),
        ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb", false),
    ])
    .await;
    let (upstream, affinity) = (upstream(), crate::upstream::Affinity::default());
    assert_eq!(
        get(&upstream, server.addr, &affinity, Method::GET)
            .await
            .unwrap()
            .1,
        b"a"
    );
    // The close may or may not have been seen yet: either way the GET gets its answer.
    assert_eq!(
        get(&upstream, server.addr, &affinity, Method::GET)
            .await
            .unwrap()
            .1,
        b"b"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idle_connections_notice_the_close() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let conn = Conn::new(client);
    assert!(conn.is_open());
    drop(server);
    let mut open = true;
    for _ in 0..100 {
        open = conn.is_open();
        if !open {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!open, "a closed connection is not offered again");
}

#[test]
fn fuzz_entry_point_takes_anything() {
    for data in [
        &b""[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551616\r\n\r\n",
        b"\xff\xfe\r\n\r\n",
    ] {
        fuzz_response(data);
    }
}
