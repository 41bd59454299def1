//! DNS over TCP (RFC 7766): length-prefixed messages, pipelined queries answered in order.

use std::future::Future;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, warn};

use super::DnsServer;
use crate::answer::{Action, Transport};

/// A connection with no complete query for this long is closed (RFC 7766 section 6.2.3 leaves
/// the value to the server; CoreDNS and Unbound use about as much).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most time a response may wait for a peer that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once; beyond, new connections are closed at once.
const MAX_CONNECTIONS: usize = 512;
/// Read buffer per connection; a query larger than this is read in pieces.
const READ_BUFFER: usize = 4096;
/// Pause after an accept error such as EMFILE, which would otherwise repeat at once.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

pub(super) async fn serve(
    server: &DnsServer,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        debug!(%peer, "too many dns tcp connections, closing a new one");
                        continue;
                    }
                    let server = server.clone();
                    let stopped = stopped.clone();
                    connections.spawn(async move {
                        if let Err(error) = connection(&server, stream, stopped).await {
                            debug!(%error, %peer, "dns tcp connection failed");
                        }
                    });
                }
                Err(error) => {
                    warn!(%error, "dns tcp accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
    // Connections finish the query in hand, then close.
    // Sending fails only when every receiver is gone, that is when no connection is left.
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until the peer closes it, it idles, or the server stops.
///
/// Bounded per connection: one query is answered at a time, in order, with at most one 64 KiB
/// message and the read buffer in memory; a peer that stops reading is cut off by the write
/// timeout.
async fn connection(
    server: &DnsServer,
    stream: TcpStream,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let mut writer = BufWriter::new(writer);
    let mut query = Vec::new();
    let mut out = Vec::new();
    loop {
        let len = tokio::select! {
            _ = stopped.wait_for(|stopped| *stopped) => return Ok(()),
            len = timeout(IDLE_TIMEOUT, reader.read_u16()) => match len {
                Err(_idle) => return Ok(()),
                Ok(Err(error)) if error.kind() == ErrorKind::UnexpectedEof => return Ok(()),
                Ok(len) => len?,
            },
        };
        query.resize(usize::from(len), 0);
        timeout(IDLE_TIMEOUT, reader.read_exact(&mut query))
            .await
            .map_err(|_| ErrorKind::TimedOut)??;

        let start = Instant::now();
        let forwarded;
        let response: &[u8] = match server.answer_counted(&query, Transport::Tcp, &mut out) {
            Action::Send => &out,
            // Not even a header: nothing to answer, and nothing sensible to expect next.
            Action::Drop => return Ok(()),
            Action::Forward => {
                let resolved = match server.forwarder() {
                    Some(forwarder) => forwarder.resolve(&query, Transport::Tcp).await,
                    None => crate::forward::servfail_bytes(&query),
                };
                let Some(resolved) = resolved else {
                    return Ok(());
                };
                server.count(&resolved, start);
                forwarded = resolved;
                &forwarded
            }
        };
        // `answer` keeps TCP responses within 65535 octets.
        let len = u16::try_from(response.len()).map_err(|_| ErrorKind::InvalidData)?;
        let write = async {
            writer.write_all(&len.to_be_bytes()).await?;
            writer.write_all(response).await?;
            // Pipelined queries already read get their answers in one write.
            if reader.buffer().is_empty() {
                writer.flush().await?;
            }
            Ok::<_, std::io::Error>(())
        };
        timeout(WRITE_TIMEOUT, write)
            .await
            .map_err(|_| ErrorKind::TimedOut)??;
    }
}
