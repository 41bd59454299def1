//! The fast path's view of a query: the common shape (one question, no answer or authority
//! records, at most an OPT record) read straight off the wire without allocating. Anything else
//! goes to the general parser in `answer::request`, which answers it exactly.

use crate::name::MAX_KEY_LEN;

/// Header length.
pub(crate) const HEADER_LEN: usize = 12;
/// Type code of OPT (RFC 6891).
const TYPE_OPT: u16 = 41;
/// Class IN.
pub(crate) const CLASS_IN: u16 = 1;

/// A query in the common shape.
pub(crate) struct QueryView {
    /// The lookup key of the question name (lowercased, length-prefixed labels).
    key: [u8; MAX_KEY_LEN],
    key_len: usize,
    /// End of the question (header, name, type, class) in the query.
    pub(crate) question_end: usize,
    pub(crate) qtype: u16,
    pub(crate) qclass: u16,
    /// The client's EDNS payload size, when the query had an OPT record (version 0).
    pub(crate) edns_payload: Option<u16>,
}

impl QueryView {
    /// The lookup key of the question name.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key[..self.key_len]
    }
}

/// Reads `query` if it has the common shape: QR=0, opcode QUERY, one question without
/// compression, no answer or authority records, no additional record but an OPT of version 0
/// with no options we act on, and nothing after. `None` sends the query to the general path.
pub(crate) fn read(query: &[u8]) -> Option<QueryView> {
    let header = query.get(..HEADER_LEN)?;
    // QR (0x80) clear, opcode (0x78) QUERY.
    if header[2] & 0xf8 != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    let mut view = QueryView {
        key: [0; MAX_KEY_LEN],
        key_len: 0,
        question_end: 0,
        qtype: 0,
        qclass: 0,
        edns_payload: None,
    };
    let mut at = HEADER_LEN;
    loop {
        let len = usize::from(*query.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        // Compression pointers and extended label types: not in a first question we handle.
        if len > 63 {
            return None;
        }
        let label = query.get(at + 1..at + 1 + len)?;
        let slot = view.key.get_mut(view.key_len..view.key_len + 1 + len)?;
        slot[0] = len as u8; // len <= 63
        for (out, byte) in slot[1..].iter_mut().zip(label) {
            *out = byte.to_ascii_lowercase();
        }
        view.key_len += 1 + len;
        at += 1 + len;
    }
    let fixed = query.get(at..at + 4)?;
    view.qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    view.qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    at += 4;
    view.question_end = at;
    if count(10) == 1 {
        // OPT: root owner, type 41, class = payload, TTL = ext-rcode/version/flags, RDATA.
        let opt = query.get(at..at + 11)?;
        if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT || opt[6] != 0 {
            return None;
        }
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        at += 11 + rdlen;
        if at > query.len() {
            return None;
        }
        view.edns_payload = Some(u16::from_be_bytes([opt[3], opt[4]]));
    }
    (at == query.len()).then_some(view)
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;

    fn query(name: &str, edns: bool) -> Vec<u8> {
        let mut message = Message::query();
        message.add_query(Query::query(
            Name::from_ascii(name).unwrap(),
            RecordType::SRV,
        ));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            message.set_edns(e);
        }
        message.to_vec().unwrap()
    }

    #[test]
    fn reads_the_common_shape() {
        let bytes = query("_Http._tcp.A.b.", true);
        let view = read(&bytes).unwrap();
        assert_eq!(view.key(), b"\x05_http\x04_tcp\x01a\x01b");
        assert_eq!(view.qtype, 33);
        assert_eq!(view.qclass, CLASS_IN);
        assert_eq!(view.edns_payload, Some(4096));
        assert_eq!(view.question_end, 12 + 16 + 4);
        assert!(read(&query("a.b.", false)).unwrap().edns_payload.is_none());
    }

    #[test]
    fn leaves_the_rest_to_the_general_path() {
        let good = query("a.b.", false);
        let mut response = good.clone();
        response[2] |= 0x80;
        let mut trailing = good.clone();
        trailing.push(0);
        for bad in [&good[..5], &good[..good.len() - 1], &response, &trailing] {
            assert!(read(bad).is_none());
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = read(&bytes);
        }
    }
}
