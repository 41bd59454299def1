//! Precomputed responses: what the general encoder would send for a query of a name (in
//! lowercase) and type, kept as bytes. Answering copies one and patches the query id, the RD and
//! CD flags and the question as the client spelled it; the owner names of the answers are
//! compression pointers to the question, so they follow its case.

use hickory_proto::op::{Metadata, Query};
use hickory_proto::rr::Name;

use super::RrSet;
use crate::answer::{EDNS_PAYLOAD, positive_response};

/// Most distinct rotations kept per record set.
pub(crate) const MAX_ROTATIONS: usize = 8;

/// The responses to one query, without and with EDNS.
#[derive(Debug)]
pub(crate) struct Template {
    /// Within 512 octets, no OPT record.
    plain: Encoded,
    /// Within [`EDNS_PAYLOAD`] octets, with our OPT record.
    edns: Encoded,
}

#[derive(Debug)]
struct Encoded {
    bytes: Box<[u8]>,
    /// Nothing was left out (no truncation, every additional record present), so the bytes are
    /// also right for any larger limit.
    complete: bool,
}

impl Template {
    /// The responses to a query of `owner` for `rrset`, rotated to start at `start`; `None` if
    /// the encoder fails, in which case queries take the general path.
    pub(crate) fn build(owner: &Name, rrset: &RrSet, start: usize) -> Option<Self> {
        let query = Query::query(owner.clone(), rrset.record_type);
        let metadata = Metadata::new(
            0,
            hickory_proto::op::MessageType::Query,
            hickory_proto::op::OpCode::Query,
        );
        let encode = |edns: bool, limit: u16| {
            let response = positive_response(metadata, &query, edns, rrset, start);
            let (bytes, complete) = response.encode_checked(limit).ok()?;
            Some(Encoded {
                bytes: bytes.into(),
                complete,
            })
        };
        Some(Self {
            plain: encode(false, 512)?,
            edns: encode(true, EDNS_PAYLOAD)?,
        })
    }

    /// The bytes to send for a response limited to `limit` octets, if a precomputed one is
    /// exactly what the general path would send.
    pub(crate) fn bytes(&self, edns: bool, limit: u16) -> Option<&[u8]> {
        let (encoded, built_for) = if edns {
            (&self.edns, EDNS_PAYLOAD)
        } else {
            (&self.plain, 512)
        };
        let fits = encoded.complete && encoded.bytes.len() <= usize::from(limit);
        (limit == built_for || fits).then_some(&encoded.bytes)
    }
}
