//! Writing a response within a size limit: truncation and additional-section trimming.

use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, Query};
use hickory_proto::rr::{Name, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// The EDNS payload size this server advertises, and the most it sends over UDP (the DNS flag
/// day 2020 value, safe from IP fragmentation).
pub(crate) const EDNS_PAYLOAD: u16 = 1232;

/// Size of the OPT record we send: root name, type, class, TTL, empty RDATA.
const OPT_LEN: u16 = 11;

/// A record written under another owner name: answers are owned by the question's name as the
/// client spelled it, so that 0x20-randomised case comes back intact (and compresses to a
/// pointer to the question).
#[derive(Debug)]
pub(crate) struct Owned<'a> {
    pub(crate) owner: &'a Name,
    pub(crate) record: &'a Record,
}

/// Records that go into the ADDITIONAL section together or not at all (an SRV target's
/// addresses).
#[derive(Debug)]
pub(crate) struct Group<'a>(pub(crate) &'a [Record]);

/// Everything a response says, before it meets a size limit.
#[derive(Debug)]
pub(crate) struct Response<'a> {
    /// Header flags and response code; counts are computed.
    pub(crate) metadata: Metadata,
    pub(crate) query: Option<&'a Query>,
    pub(crate) answers: Vec<Owned<'a>>,
    pub(crate) authorities: Vec<Owned<'a>>,
    pub(crate) additionals: Vec<Group<'a>>,
    /// Whether to attach an OPT record (the query had one).
    pub(crate) edns: bool,
}

impl Response<'_> {
    /// The response in wire format, at most `max_size` octets.
    ///
    /// When the answer or authority sections do not fit, the response is truncated to header,
    /// question and OPT with TC set; when only some additional groups do not fit, they are
    /// left out without TC (RFC 2181 section 9).
    pub(crate) fn encode(&self, max_size: u16) -> Result<Vec<u8>, ProtoError> {
        self.encode_checked(max_size).map(|(bytes, _)| bytes)
    }

    /// As [`Response::encode`], and whether nothing was left out.
    pub(crate) fn encode_checked(&self, max_size: u16) -> Result<(Vec<u8>, bool), ProtoError> {
        match self.encode_with(max_size, false)? {
            Some(encoded) => Ok(encoded),
            None => self.encode_with(max_size, true)?.ok_or(ProtoError::Message(
                "header and question exceed the size limit",
            )),
        }
    }

    /// `None` when a section that cannot be trimmed does not fit; else the bytes and whether
    /// every record is in.
    fn encode_with(
        &self,
        max_size: u16,
        truncated: bool,
    ) -> Result<Option<(Vec<u8>, bool)>, ProtoError> {
        let mut complete = !truncated;
        let mut buffer = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut buffer);
        // Keep room for the OPT record, which must be present whatever else is left out.
        let opt_len = if self.edns { OPT_LEN } else { 0 };
        encoder.set_max_size(max_size.saturating_sub(opt_len));

        let place = encoder.place::<Header>()?;
        let mut counts = HeaderCounts::default();
        if let Some(query) = self.query {
            query.emit(&mut encoder)?;
            counts.queries = 1;
        }
        let mut metadata = self.metadata;
        if truncated {
            metadata.truncation = true;
        } else {
            let Some(answers) = emit_whole(&mut encoder, &self.answers)? else {
                return Ok(None);
            };
            let Some(authorities) = emit_whole(&mut encoder, &self.authorities)? else {
                return Ok(None);
            };
            counts.answers = answers;
            counts.authorities = authorities;
            let groups = match encoder.emit_all(self.additionals.iter()) {
                Ok(groups) => groups,
                Err(ProtoError::NotAllRecordsWritten { count, .. }) => count,
                Err(e) => return Err(e),
            };
            let records: usize = self
                .additionals
                .iter()
                .take(groups)
                .map(|g| g.0.len())
                .sum();
            counts.additionals = to_count(records)?;
            complete = groups == self.additionals.len();
        }

        if self.edns {
            encoder.set_max_size(max_size);
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD)
                .set_version(0)
                .set_rcode_high(metadata.response_code.high());
            edns.emit(&mut encoder)?;
            counts.additionals = counts.additionals.saturating_add(1);
        }
        place.replace(&mut encoder, Header { metadata, counts })?;
        Ok(Some((buffer, complete)))
    }
}

/// Emits all `records`; `None` if they do not all fit.
fn emit_whole(
    encoder: &mut BinEncoder<'_>,
    records: &[Owned<'_>],
) -> Result<Option<u16>, ProtoError> {
    match encoder.emit_all(records.iter()) {
        Ok(count) => to_count(count).map(Some),
        Err(ProtoError::NotAllRecordsWritten { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn to_count(count: usize) -> Result<u16, ProtoError> {
    u16::try_from(count).map_err(|_| ProtoError::Message("too many records for a header count"))
}

impl BinEncodable for Owned<'_> {
    fn emit(&self, encoder: &mut BinEncoder<'_>) -> Result<(), ProtoError> {
        self.owner.emit(encoder)?;
        self.record.record_type().emit(encoder)?;
        self.record.dns_class.emit(encoder)?;
        encoder.emit_u32(self.record.ttl)?;
        let place = encoder.place::<u16>()?;
        self.record.data.emit(encoder)?;
        let len = u16::try_from(encoder.len_since_place(&place))
            .map_err(|_| ProtoError::Message("record data longer than 65535 octets"))?;
        place.replace(encoder, len)
    }
}

impl BinEncodable for Group<'_> {
    fn emit(&self, encoder: &mut BinEncoder<'_>) -> Result<(), ProtoError> {
        self.0.iter().try_for_each(|record| record.emit(encoder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_len_matches_the_encoding() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        assert_eq!(edns.to_bytes().unwrap().len(), usize::from(OPT_LEN));
    }
}
