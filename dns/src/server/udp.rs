//! The UDP loop.

use std::future::Future;
use std::io::ErrorKind;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use super::DnsServer;
use crate::answer::Transport;

/// Largest datagram read; anything longer arrives cut and fails to parse.
const MAX_DATAGRAM: usize = 65535;

pub(super) async fn serve(
    server: &DnsServer,
    socket: UdpSocket,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    // Answering takes microseconds and never waits, so one loop answers inline; more sockets
    // (SO_REUSEPORT) would be the way to use more cores.
    let mut buf = vec![0u8; MAX_DATAGRAM];
    tokio::pin!(shutdown);
    loop {
        let (len, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) if is_transient(&error) => {
                    debug!(%error, "udp receive failed");
                    continue;
                }
                Err(error) => return Err(error),
            },
        };
        let Some(query) = buf.get(..len) else {
            continue;
        };
        let Some(response) = server.answer(query, Transport::Udp) else {
            continue;
        };
        if let Err(error) = socket.send_to(&response, peer).await {
            // A peer that went away or a full send buffer costs one answer, not the server.
            warn!(%error, %peer, "udp send failed");
        }
    }
}

/// Errors that concern one datagram or peer (an ICMP error reported on a later call), not the
/// socket.
fn is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
    )
}
