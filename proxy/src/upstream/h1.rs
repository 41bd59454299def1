//! A small HTTP/1.1 client for requests without a body on plain upstream connections, run in
//! the request's own task.
//!
//! hyper's client connection lives in a task of its own: each request crossed two channels
//! (request in, response out) and woke a second task, and the response body came back through
//! a third, ~11,500 of the ~34,000 instructions a proxied keep-alive request cost
//! (`INSTRUCTIONS=1 bench/proxy.sh`, callgrind). Here the request's task writes the head with
//! one send(2), parses the response head with httparse and reads the body itself, as the body
//! is polled. Requests with a body, and upgrades, still go through hyper's client, which sends
//! a body while it watches for an early response.
//!
//! Framing follows RFC 9112 section 6.3: no body for HEAD, 1xx, 204 and 304; chunked when it
//! is the last transfer coding (other codings: read to the close); else Content-Length (every
//! value equal, or the response is refused); else to the close. A connection is reused only
//! if the response was read to its end, said nothing against keep-alive and left no byte
//! behind.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Response head fields at most (as hyper's client).
const MAX_HEADERS: usize = 100;

/// Response head bytes at most, status line included (offsets into it fit in a `u16`).
const MAX_HEAD_BYTES: usize = 60 * 1024;

/// Fields a response may get from the proxy (request id, sticky cookie, route edits) without
/// its map growing.
const ADDED_FIELDS: usize = 4;

/// A chunk-size line (with extensions) or a trailer section at most.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// Interim (1xx) responses before the final one at most.
const MAX_INTERIM: usize = 16;

/// Read buffer growth: a small response fits whole, with its head, in one read.
const READ_CHUNK: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("writing the request failed")]
    Write(#[source] io::Error),
    #[error("reading the response failed")]
    Read(#[source] io::Error),
    #[error("connection closed before a response head")]
    Closed,
    #[error("response head larger than {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} fields")]
    HeadTooLarge,
    #[error("malformed response head")]
    Parse(#[source] httparse::Error),
    #[error("malformed response head: {0}")]
    Invalid(&'static str),
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    #[error("connection closed {0} bytes before the end of the body")]
    Truncated(u64),
}

impl Error {
    /// Whether the endpoint cannot have acted on the request: it closed the connection (as a
    /// server does with idle connections) before answering anything, or the write failed.
    /// Only then may a request on a reused connection go again on another one.
    fn unanswered(&self) -> bool {
        matches!(self, Self::Write(_) | Self::Closed)
            || matches!(self, Self::Read(error) if error.kind() == io::ErrorKind::ConnectionReset)
    }
}

/// An exchange that failed, with whether the request may be sent again (see
/// [`Error::unanswered`]).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: Error,
    pub(crate) unanswered: bool,
}

/// An idle HTTP/1.1 connection to an endpoint.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed; empty between exchanges.
    read: BytesMut,
    /// The request head being written; kept for its capacity.
    write: Vec<u8>,
}

/// Whether `request` is one this client sends: no body, no upgrade.
pub(crate) fn eligible<B: hyper::body::Body>(request: &Request<B>) -> bool {
    request.body().is_end_stream()
        && !request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_none_or(|length| length.as_bytes() == b"0")
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            read: BytesMut::new(),
            write: Vec::new(),
        }
    }

    /// Whether the connection still looks usable: the endpoint has not closed it nor sent
    /// anything unasked. Costs no system call unless the socket turned readable.
    pub(crate) fn is_open(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable while idle: end of stream, an error, or bytes nobody asked for.
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                matches!(self.stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends `request` (its body is not looked at: see [`eligible`]) and reads the response
    /// head. `authority` is the Host sent if the request has none.
    pub(crate) async fn send<B>(
        mut self,
        request: &Request<B>,
        authority: &str,
    ) -> Result<Response<Body>, Failure> {
        encode(&mut self.write, request, authority);
        if let Err(error) = self.stream.write_all(&self.write).await {
            return Err(failure(Error::Write(error)));
        }
        let head_only = request.method() == Method::HEAD;
        for _ in 0..=MAX_INTERIM {
            let head = match self.read_head().await {
                Ok(head) => head,
                Err(error) => return Err(failure(error)),
            };
            let Head {
                status,
                version,
                headers,
            } = head;
            if status.is_informational() {
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    // Only sent to a request asking for an upgrade, which go through hyper.
                    return Err(failure(Error::Invalid("101 to a request without upgrade")));
                }
                // 100 Continue, 103 Early Hints: the final answer follows.
                continue;
            }
            let framing = match framing(status, head_only, &headers) {
                Ok(framing) => framing,
                Err(error) => return Err(failure(error)),
            };
            let keep_alive = keep_alive(version, &headers) && !matches!(framing, Framing::Close);
            let mut response = Response::new(Body {
                conn: Some(self),
                framing,
                keep_alive,
            });
            *response.status_mut() = status;
            *response.version_mut() = version;
            *response.headers_mut() = headers;
            return Ok(response);
        }
        Err(failure(Error::Invalid("too many interim responses")))
    }

    /// Reads until a whole response head is buffered and parses it.
    async fn read_head(&mut self) -> Result<Head, Error> {
        loop {
            if !self.read.is_empty()
                && let Some(head) = parse_head(&mut self.read)?
            {
                return Ok(head);
            }
            if self.read.len() >= MAX_HEAD_BYTES {
                return Err(Error::HeadTooLarge);
            }
            let n = std::future::poll_fn(|cx| self.poll_fill(cx))
                .await
                .map_err(Error::Read)?;
            if n == 0 {
                return Err(if self.read.is_empty() {
                    Error::Closed
                } else {
                    Error::Read(io::ErrorKind::UnexpectedEof.into())
                });
            }
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            self.read.reserve(READ_CHUNK);
        }
        // Through AsyncRead, whose short reads clear the socket's readiness: no read(2) that
        // can only say EAGAIN before the next epoll_wait(2).
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read)
    }
}

fn failure(error: Error) -> Failure {
    let unanswered = error.unanswered();
    Failure { error, unanswered }
}

/// The request line and fields, into `out`.
fn encode<B>(out: &mut Vec<u8>, request: &Request<B>, authority: &str) {
    out.clear();
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let headers = request.headers();
    if !headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // Some servers answer 411 to a POST without a length, even an empty one.
    if matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    ) && !headers.contains_key(header::CONTENT_LENGTH)
    {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
}

/// Parses the response head at the front of `buf` and takes it out; `None` if incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Error> {
    // Offsets of each field's name and value in `buf`, so that the values can share one
    // allocation with the head instead of one each. Small, as it is zeroed per response.
    let mut fields = [[0u16; 4]; MAX_HEADERS];
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let base = buf.as_ptr() as usize;
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        &buf[..],
        &mut slots,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(error) => return Err(Error::Parse(error)),
    };
    let code = response.code.ok_or(Error::Invalid("no status code"))?;
    let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("status code"))?;
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    if len > MAX_HEAD_BYTES {
        return Err(Error::HeadTooLarge);
    }
    let count = response.headers.len();
    for (field, parsed) in fields.iter_mut().zip(response.headers.iter()) {
        let offset = |part: &[u8]| part.as_ptr() as usize - base;
        let (name, value) = (offset(parsed.name.as_bytes()), offset(parsed.value));
        // Within the head, whose length was checked to fit.
        *field = [
            name,
            name + parsed.name.len(),
            value,
            value + parsed.value.len(),
        ]
        .map(|at| u16::try_from(at).unwrap_or(u16::MAX));
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count + ADDED_FIELDS);
    for field in &fields[..count] {
        let [name_start, name_end, value_start, value_end] = field.map(usize::from);
        if name_end > head.len() || value_start > value_end || value_end > head.len() {
            return Err(Error::Invalid("field bounds"));
        }
        let name = HeaderName::from_bytes(&head[name_start..name_end])
            .map_err(|_| Error::Invalid("field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
            .map_err(|_| Error::Invalid("field value"))?;
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        version,
        headers,
    }))
}

/// How the response body is delimited.
#[derive(Debug)]
enum Framing {
    /// Bytes still to come.
    Length(u64),
    Chunked(Chunked),
    /// Until the endpoint closes.
    Close,
}

#[derive(Debug, Clone, Copy)]
enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: bytes left, then its CRLF.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, up to an empty line.
    Trailers {
        seen: usize,
    },
    Done,
}

fn framing(status: StatusCode, head_only: bool, headers: &HeaderMap) -> Result<Framing, Error> {
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Length(0));
    }
    if let Some(codings) = last_list_item(headers, &header::TRANSFER_ENCODING) {
        return Ok(if codings.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked(Chunked::Size)
        } else {
            Framing::Close
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let n = parse_decimal(trim(item)).ok_or(Error::Invalid("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Invalid("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

/// The last comma-separated item of the fields `name`, trimmed.
fn last_list_item<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    let last = headers.get_all(name).iter().next_back()?;
    last.as_bytes()
        .rsplit(|&b| b == b',')
        .map(trim)
        .find(|item| !item.is_empty())
}

fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep = false;
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = trim(token);
            close |= token.eq_ignore_ascii_case(b"close");
            keep |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    !close && (version == Version::HTTP_11 || keep)
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// A response body read from its connection as it is polled; the connection comes back
/// through [`Body::take_reusable`] once the body was read to its end.
#[derive(Debug)]
pub(crate) struct Body {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
}

impl Body {
    fn is_done(&self) -> bool {
        matches!(
            self.framing,
            Framing::Length(0) | Framing::Chunked(Chunked::Done)
        )
    }

    /// The connection, if the body was read to its end and it can carry another request.
    pub(crate) fn take_reusable(&mut self) -> Option<Conn> {
        if !self.is_done() || !self.keep_alive {
            return None;
        }
        self.conn.take().filter(|conn| conn.read.is_empty())
    }

    /// The next data from the buffer or the socket; `None` at the end.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match &mut self.framing {
                Framing::Length(0) => return Poll::Ready(None),
                Framing::Length(left) => {
                    if !conn.read.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.read.len());
                        *left -= n as u64;
                        return Poll::Ready(Some(Ok(conn.read.split_to(n).freeze())));
                    }
                    let left = *left;
                    if ready!(fill(conn, cx))? == 0 {
                        return Poll::Ready(Some(Err(Error::Truncated(left))));
                    }
                }
                Framing::Close => {
                    if !conn.read.is_empty() {
                        return Poll::Ready(Some(Ok(conn.read.split().freeze())));
                    }
                    if ready!(fill(conn, cx))? == 0 {
                        // The end of the body; the connection is done too.
                        self.conn = None;
                        return Poll::Ready(None);
                    }
                }
                Framing::Chunked(state) => {
                    match decode_chunked(state, &mut conn.read)? {
                        Decoded::Data(data) => return Poll::Ready(Some(Ok(data))),
                        Decoded::Done => return Poll::Ready(None),
                        Decoded::NeedMore => {}
                    }
                    if ready!(fill(conn, cx))? == 0 {
                        return Poll::Ready(Some(Err(Error::Chunked("connection closed"))));
                    }
                }
            }
        }
    }
}

/// [`Conn::poll_fill`], with errors as [`Error::Read`].
fn fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<usize, Error>> {
    conn.poll_fill(cx).map_err(Error::Read)
}

enum Decoded {
    Data(Bytes),
    Done,
    NeedMore,
}

/// Steps the chunked decoder over what `buf` holds (RFC 9112 section 7.1): data as it comes,
/// chunk extensions and trailer fields skipped.
fn decode_chunked(state: &mut Chunked, buf: &mut BytesMut) -> Result<Decoded, Error> {
    loop {
        match *state {
            Chunked::Size => {
                let Some(end) = find_crlf(buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(Error::Chunked("chunk-size line too long"));
                    }
                    return Ok(Decoded::NeedMore);
                };
                if end > MAX_CHUNK_LINE {
                    return Err(Error::Chunked("chunk-size line too long"));
                }
                let line = &buf[..end];
                let digits = line
                    .split(|&b| b == b';')
                    .next()
                    .map(trim)
                    .unwrap_or_default();
                let size = parse_hex(digits).ok_or(Error::Chunked("chunk size"))?;
                buf.advance(end + 2);
                *state = if size == 0 {
                    Chunked::Trailers { seen: 0 }
                } else {
                    Chunked::Data(size)
                };
            }
            Chunked::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let rest = left - n as u64;
                *state = if rest == 0 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(rest)
                };
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            Chunked::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Decoded::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Error::Chunked("no CRLF after chunk data"));
                }
                buf.advance(2);
                *state = Chunked::Size;
            }
            Chunked::Trailers { seen } => {
                let Some(end) = find_crlf(buf) else {
                    if seen + buf.len() > MAX_TRAILER_BYTES {
                        return Err(Error::Chunked("trailer section too large"));
                    }
                    return Ok(Decoded::NeedMore);
                };
                buf.advance(end + 2);
                *state = if end == 0 {
                    Chunked::Done
                } else if seen + end + 2 > MAX_TRAILER_BYTES {
                    return Err(Error::Chunked("trailer section too large"));
                } else {
                    Chunked::Trailers {
                        seen: seen + end + 2,
                    }
                };
            }
            Chunked::Done => return Ok(Decoded::Done),
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        Some(n << 4 | u64::from(v))
    })
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let data = ready!(this.poll_data(cx));
        if let Some(Err(_)) = &data {
            // Whatever is left on the wire cannot be told from the next response.
            this.conn = None;
        }
        Poll::Ready(data.map(|result| result.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.is_done() || self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            _ if self.is_end_stream() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Entry point for the fuzz target: parses `data` as what an endpoint sends back (response
/// heads, then a body of each framing), as the proxy would.
pub(crate) fn fuzz_response(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let Ok(Some(head)) = parse_head(&mut buf) else {
        return;
    };
    let _ = keep_alive(head.version, &head.headers);
    let Ok(framing) = framing(head.status, false, &head.headers) else {
        return;
    };
    if let Framing::Chunked(mut state) = framing {
        while let Ok(Decoded::Data(_)) = decode_chunked(&mut state, &mut buf) {}
    }
}

#[cfg(test)]
mod tests;
