//! A small synchronous rtnetlink client: one blocking `NETLINK_ROUTE` socket, requests built
//! byte by byte, replies walked attribute by attribute for the few fields the plugin reads.
//!
//! Why not the `rtnetlink` crate (issue 5, measured with `perf record` over a loop of ADDs):
//! ~12% of the plugin's CPU went to `netlink-packet-route` formatting payloads with `{:?}` into
//! error contexts built eagerly while it parses every attribute of a link message (the bridge's
//! `IFLA_LINKINFO` alone is ~1 KiB), and the two tokio runtimes with their connection tasks
//! (one on a namespace thread) added their own set-up to every run: epoll, eventfd, socketpair,
//! a thread and a fresh malloc arena (strace). The kernel answers a request on a netlink
//! socket before `sendto` returns, so a blocking socket does the same work with two system
//! calls per request. With this client (and no namespace thread) the plugin's CPU per ADD in
//! `bench/cni.sh` went from 3.2 ms to 2.1 ms.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

// Message types (linux/rtnetlink.h, linux/netlink.h).
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub(super) const RTM_NEWLINK: u16 = 16;
pub(super) const RTM_DELLINK: u16 = 17;
pub(super) const RTM_GETLINK: u16 = 18;
pub(super) const RTM_SETLINK: u16 = 19;
pub(super) const RTM_NEWADDR: u16 = 20;
pub(super) const RTM_GETADDR: u16 = 22;
pub(super) const RTM_NEWROUTE: u16 = 24;
pub(super) const RTM_GETROUTE: u16 = 26;

// Header flags.
const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_DUMP: u16 = 0x300;
pub(super) const NLM_F_EXCL: u16 = 0x200;
pub(super) const NLM_F_CREATE: u16 = 0x400;

// Link attributes (linux/if_link.h).
pub(super) const IFLA_ADDRESS: u16 = 1;
pub(super) const IFLA_IFNAME: u16 = 3;
pub(super) const IFLA_MTU: u16 = 4;
pub(super) const IFLA_MASTER: u16 = 10;
pub(super) const IFLA_LINKINFO: u16 = 18;
pub(super) const IFLA_IFALIAS: u16 = 20;
pub(super) const IFLA_AF_SPEC: u16 = 26;
pub(super) const IFLA_NET_NS_FD: u16 = 28;
pub(super) const IFLA_EXT_MASK: u16 = 29;
pub(super) const IFLA_NUM_TX_QUEUES: u16 = 31;
pub(super) const IFLA_NUM_RX_QUEUES: u16 = 32;
pub(super) const IFLA_INFO_KIND: u16 = 1;
pub(super) const IFLA_INFO_DATA: u16 = 2;
pub(super) const IFLA_INFO_SLAVE_KIND: u16 = 4;
pub(super) const IFLA_INFO_SLAVE_DATA: u16 = 5;
pub(super) const VETH_INFO_PEER: u16 = 1;
pub(super) const IFLA_BRPORT_MODE: u16 = 4;
pub(super) const IFLA_INET_CONF: u16 = 1;
pub(super) const IPV4_DEVCONF_ARP_NOTIFY: u16 = 22;
/// `RTEXT_FILTER_SKIP_STATS`: statistics are most of a link message and none of its use here.
pub(super) const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
pub(super) const IFF_UP: u32 = 1;

// Address attributes (linux/if_addr.h).
pub(super) const IFA_ADDRESS: u16 = 1;
pub(super) const IFA_LOCAL: u16 = 2;
pub(super) const IFA_BROADCAST: u16 = 4;
pub(super) const IFA_FLAGS: u16 = 8;
pub(super) const IFA_F_NODAD: u32 = 0x02;

// Route attributes and header values.
pub(super) const RTA_DST: u16 = 1;
pub(super) const RTA_OIF: u16 = 4;
pub(super) const RTA_GATEWAY: u16 = 5;
pub(super) const RTA_VIA: u16 = 18;
pub(super) const RT_TABLE_MAIN: u8 = 254;
pub(super) const RTPROT_STATIC: u8 = 4;
pub(super) const RT_SCOPE_UNIVERSE: u8 = 0;
pub(super) const RTN_UNICAST: u8 = 1;

pub(super) const AF_UNSPEC: u8 = 0;
pub(super) const AF_INET: u8 = 2;
pub(super) const AF_INET6: u8 = 10;

/// Largest datagram read at once. The kernel sizes dump parts to the largest buffer a socket
/// has read with (at least ~4 KiB, at most 32 KiB), a link message without statistics is
/// ~1.5 KiB, and a larger datagram is reported, not cut: 16 KiB is plenty, and cheaper than
/// zeroing and faulting in 64 KiB per socket.
const RECV_BUF: usize = 16 << 10;
/// A reply that takes longer than this is lost (the kernel drops replies on buffer overrun).
const RECV_TIMEOUT_S: i64 = 10;

/// One request being built: the 16-byte header, a family header, then attributes.
pub(super) struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    /// A request of type `ty`; `NLM_F_REQUEST` is added.
    pub(super) fn new(ty: u16, flags: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&[0; 8]);
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// `struct ifinfomsg`.
    pub(super) fn ifinfo(&mut self, family: u8, index: u32, flags: u32, change: u32) -> &mut Msg {
        self.buf.extend_from_slice(&[family, 0, 0, 0]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
        self
    }

    /// `struct ifaddrmsg`.
    pub(super) fn ifaddr(&mut self, family: u8, prefix: u8, flags: u8, index: u32) -> &mut Msg {
        self.buf
            .extend_from_slice(&[family, prefix, flags, RT_SCOPE_UNIVERSE]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self
    }

    /// `struct rtmsg` of a static unicast route in the main table.
    pub(super) fn rtmsg(&mut self, family: u8, dst_len: u8) -> &mut Msg {
        self.buf.extend_from_slice(&[
            family,
            dst_len,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_STATIC,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ]);
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self
    }

    /// An attribute with a raw payload.
    pub(super) fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Msg {
        // Attribute payloads here are names, addresses and integers: far below 64 KiB.
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    /// A `u32` attribute.
    pub(super) fn u32(&mut self, ty: u16, v: u32) -> &mut Msg {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// A NUL-terminated string attribute.
    pub(super) fn str(&mut self, ty: u16, s: &str) -> &mut Msg {
        let mut b = Vec::with_capacity(s.len() + 1);
        b.extend_from_slice(s.as_bytes());
        b.push(0);
        self.attr(ty, &b)
    }

    /// Opens a nested attribute, closed by [`Msg::end`].
    pub(super) fn nest(&mut self, ty: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self
    }

    /// Closes the innermost nested attribute.
    pub(super) fn end(&mut self) -> &mut Msg {
        if let Some(start) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// The finished message with sequence number 0 (tests build replies with it).
    #[cfg(test)]
    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.finish(0)
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        while let Some(_open) = self.nests.last() {
            self.end();
        }
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// A reply message: its type and its payload (family header and attributes).
#[derive(Debug)]
pub(super) struct Reply {
    /// `nlmsg_type`.
    pub(super) ty: u16,
    /// Everything after the netlink header.
    pub(super) payload: Vec<u8>,
}

/// A blocking `NETLINK_ROUTE` socket, in the network namespace of the thread that opened it.
pub(super) struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "netlink::Socket({})", self.fd.as_raw_fd())
    }
}

impl Socket {
    /// Opens a socket in the calling thread's network namespace.
    pub(super) fn open() -> io::Result<Socket> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        socket::setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::seconds(RECV_TIMEOUT_S),
        )?;
        Ok(Socket {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Sends `msg` and collects the replies up to its acknowledgement (requests with
    /// `NLM_F_ACK`) or the end of the dump (`NLM_F_DUMP`). The kernel's refusal comes back as
    /// an `io::Error` carrying its errno.
    pub(super) fn call(&mut self, msg: Msg) -> io::Result<Vec<Reply>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        let fd = self.fd.as_raw_fd();
        socket::sendto(fd, &bytes, &NetlinkAddr::new(0, 0), MsgFlags::empty())?;
        let mut out = Vec::new();
        loop {
            let n = match socket::recv(fd, &mut self.buf, MsgFlags::MSG_TRUNC) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if n > self.buf.len() {
                return Err(io::Error::other(format!(
                    "netlink reply of {n} bytes exceeds the {} byte buffer",
                    self.buf.len()
                )));
            }
            let mut off = 0;
            while off + 16 <= n {
                let b = &self.buf[off..n];
                let len = u32_at(b, 0) as usize;
                if len < 16 || len > b.len() {
                    return Err(io::Error::other("malformed netlink reply"));
                }
                let ty = u16_at(b, 4);
                let mseq = u32_at(b, 8);
                let payload = &b[16..len];
                off += align4(len);
                if mseq != seq || ty == NLMSG_NOOP {
                    // A late answer to an earlier request (none is expected): not ours.
                    continue;
                }
                match ty {
                    NLMSG_ERROR | NLMSG_DONE => {
                        let code = if payload.len() >= 4 {
                            i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]])
                        } else {
                            0
                        };
                        return if code < 0 {
                            Err(io::Error::from_raw_os_error(-code))
                        } else {
                            Ok(out)
                        };
                    }
                    _ => out.push(Reply {
                        ty,
                        payload: payload.to_vec(),
                    }),
                }
            }
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A native-endian `u16` at `off` (0 past the end).
pub(super) fn u16_at(b: &[u8], off: usize) -> u16 {
    match b.get(off..off + 2) {
        Some(s) => u16::from_ne_bytes([s[0], s[1]]),
        None => 0,
    }
}

/// A native-endian `u32` at `off` (0 past the end).
pub(super) fn u32_at(b: &[u8], off: usize) -> u32 {
    match b.get(off..off + 4) {
        Some(s) => u32::from_ne_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// The attributes in `b`: `(type, payload)`, the nested and byte-order flags masked off.
pub(super) fn attrs(b: &[u8]) -> Attrs<'_> {
    Attrs { b }
}

/// Iterator over netlink attributes; stops at the first malformed one.
pub(super) struct Attrs<'a> {
    b: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        if self.b.len() < 4 {
            return None;
        }
        let len = usize::from(u16_at(self.b, 0));
        let ty = u16_at(self.b, 2) & 0x3fff;
        if len < 4 || len > self.b.len() {
            self.b = &[];
            return None;
        }
        let payload = &self.b[4..len];
        self.b = self.b.get(align4(len)..).unwrap_or(&[]);
        Some((ty, payload))
    }
}

/// A NUL-terminated string payload.
pub(super) fn str_of(p: &[u8]) -> String {
    let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_nest_and_pad() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK);
        m.ifinfo(AF_UNSPEC, 7, IFF_UP, IFF_UP)
            .str(IFLA_IFNAME, "eth0")
            .nest(IFLA_LINKINFO)
            .str(IFLA_INFO_KIND, "veth")
            .end()
            .u32(IFLA_MTU, 1500);
        let b = m.finish(9);
        assert_eq!(u32_at(&b, 0) as usize, b.len());
        assert_eq!(b.len() % 4, 0);
        assert_eq!(u16_at(&b, 4), RTM_NEWLINK);
        assert_eq!(u16_at(&b, 6), NLM_F_ACK | NLM_F_REQUEST);
        assert_eq!(u32_at(&b, 8), 9);
        assert_eq!(u32_at(&b, 16 + 4), 7);
        let got: Vec<_> = attrs(&b[32..]).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (IFLA_IFNAME, &b"eth0\0"[..]));
        assert_eq!(got[1].0, IFLA_LINKINFO);
        let inner: Vec<_> = attrs(got[1].1).collect();
        assert_eq!(inner, vec![(IFLA_INFO_KIND, &b"veth\0"[..])]);
        assert_eq!(got[2], (IFLA_MTU, &1500u32.to_ne_bytes()[..]));
    }

    #[test]
    fn malformed_attributes_end_the_walk() {
        assert_eq!(attrs(&[8, 0, 1, 0, 1, 2]).count(), 0);
        assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0);
        assert_eq!(str_of(b"br0\0junk"), "br0");
    }

    #[test]
    fn kernel_answers_a_link_query() {
        // Loopback exists in every namespace; unprivileged GETLINK works.
        let mut s = Socket::open().unwrap();
        let mut m = Msg::new(RTM_GETLINK, NLM_F_ACK);
        m.ifinfo(AF_UNSPEC, 0, 0, 0)
            .str(IFLA_IFNAME, "lo")
            .u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        let r = s.call(m).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].ty, RTM_NEWLINK);
        let mut m = Msg::new(RTM_GETLINK, NLM_F_ACK);
        m.ifinfo(AF_UNSPEC, 0, 0, 0)
            .str(IFLA_IFNAME, "no-such-link0");
        let e = s.call(m).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(19));
    }
}
