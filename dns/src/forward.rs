//! Forwarding of names outside the served zones to upstream resolvers, with a bounded cache.

mod cache;
mod resolv_conf;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;
use tracing::debug;

use self::cache::{Cache, CacheKey};
pub use self::resolv_conf::parse_resolv_conf;
use crate::answer::Transport;

/// Where and how names outside the served zones are resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Upstream resolvers, tried in order. Empty: the nameservers of the host's
    /// `/etc/resolv.conf`, read when the server starts.
    #[serde(default)]
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream may take before the next is tried, milliseconds. Default 1000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Most responses cached. Default 10000.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// Longest a response is cached, seconds, whatever its TTLs. Default 3600.
    #[serde(default = "default_max_ttl")]
    pub max_ttl: u32,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            timeout_ms: default_timeout_ms(),
            cache_size: default_cache_size(),
            max_ttl: default_max_ttl(),
        }
    }
}

fn default_timeout_ms() -> u64 {
    1000
}

fn default_cache_size() -> usize {
    10_000
}

fn default_max_ttl() -> u32 {
    3600
}

/// Most concurrent upstream exchanges; beyond, queries get SERVFAIL at once.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

/// A configured forwarder: upstreams and cache.
#[derive(Debug)]
pub(crate) struct Forwarder {
    config: ForwardConfig,
    upstreams: Vec<SocketAddr>,
    cache: Cache,
}

impl Forwarder {
    /// A forwarder for `config`; an empty upstream list is filled from `resolv_conf` (the
    /// text of the host's resolv.conf).
    pub(crate) fn new(config: ForwardConfig, resolv_conf: impl FnOnce() -> String) -> Self {
        let upstreams = if config.upstreams.is_empty() {
            parse_resolv_conf(&resolv_conf())
        } else {
            config.upstreams.clone()
        };
        Self {
            cache: Cache::new(config.cache_size, config.max_ttl),
            upstreams,
            config,
        }
    }

    pub(crate) fn config(&self) -> &ForwardConfig {
        &self.config
    }

    /// The response to `query` (wire format): from the cache, from an upstream, or SERVFAIL.
    /// `None` only for a query not even worth an error (unreadable).
    pub(crate) async fn resolve(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = Message::from_vec(query).ok()?;
        let key = CacheKey::of(&request)?;
        if let Some(cached) = self.cache.get(&key, &request) {
            return Some(cached);
        }
        let per_upstream = Duration::from_millis(self.config.timeout_ms);
        for upstream in &self.upstreams {
            match exchange(*upstream, &request, transport, per_upstream).await {
                Ok(response) => {
                    self.cache.insert(key, &response, Instant::now());
                    return reply(&request, response);
                }
                Err(error) => debug!(%upstream, %error, "upstream failed"),
            }
        }
        servfail(&request)
    }
}

/// `response` as the answer to `request`: its id and question as the client sent them.
fn reply(request: &Message, mut response: Message) -> Option<Vec<u8>> {
    response.metadata.id = request.metadata.id;
    response.queries = request.queries.clone();
    response.to_vec().ok()
}

/// SERVFAIL for `request`.
pub(crate) fn servfail(request: &Message) -> Option<Vec<u8>> {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.response_code = ResponseCode::ServFail;
    response.queries = request.queries.clone();
    response.to_vec().ok()
}

/// SERVFAIL for the wire query `query`, if readable.
pub(crate) fn servfail_bytes(query: &[u8]) -> Option<Vec<u8>> {
    servfail(&Message::from_vec(query).ok()?)
}

#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("timed out")]
    Timeout,
    #[error("i/o")]
    Io(#[from] std::io::Error),
    #[error("unreadable response")]
    Proto(#[from] hickory_proto::ProtoError),
    #[error("unreadable response")]
    Decode(#[from] hickory_proto::serialize::binary::DecodeError),
    #[error("response does not match the query")]
    Mismatch,
    #[error("upstream answered {0}")]
    Rcode(ResponseCode),
}

/// One query to one upstream, with a fresh random id, over `transport`.
async fn exchange(
    upstream: SocketAddr,
    request: &Message,
    transport: Transport,
    limit: Duration,
) -> Result<Message, ExchangeError> {
    let mut query = request.clone();
    query.metadata.id = fastrand::u16(..);
    query.metadata.message_type = MessageType::Query;
    query.metadata.recursion_desired = true;
    let bytes = query.to_vec()?;
    let response = timeout(limit, async {
        match transport {
            Transport::Udp => udp_exchange(upstream, &bytes, &query).await,
            Transport::Tcp => tcp_exchange(upstream, &bytes).await,
        }
    })
    .await
    .map_err(|_| ExchangeError::Timeout)??;
    if response.metadata.id != query.metadata.id || response.queries != query.queries {
        return Err(ExchangeError::Mismatch);
    }
    match response.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(response),
        rcode => Err(ExchangeError::Rcode(rcode)),
    }
}

async fn udp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    query: &Message,
) -> Result<Message, ExchangeError> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let len = socket.recv(&mut buf).await?;
        // Ignore stray datagrams (a late answer to an earlier id); the timeout bounds the wait.
        if let Ok(response) = Message::from_vec(&buf[..len])
            && response.metadata.id == query.metadata.id
        {
            return Ok(response);
        }
    }
}

async fn tcp_exchange(upstream: SocketAddr, bytes: &[u8]) -> Result<Message, ExchangeError> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len()).map_err(|_| ExchangeError::Mismatch)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(bytes).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(Message::from_vec(&buf)?)
}
