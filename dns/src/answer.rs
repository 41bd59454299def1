//! One query in, one response out: the whole DNS logic, without I/O.

mod request;
mod response;
#[cfg(test)]
mod tests;

use hickory_proto::op::{Metadata, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use tracing::{debug, warn};

use self::request::{Rejected, Request};
use self::response::{EDNS_PAYLOAD, Group, Owned, Response};
use crate::snapshot::{Lookup, RrSet, Snapshot};

/// The transport a query came over, which sets how large the response may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 octets, or the client's EDNS payload size capped at 1232.
    Udp,
    /// TCP: 65535 octets.
    Tcp,
}

/// The response to `query` in wire format, or `None` to send nothing.
pub(crate) fn answer(snapshot: &Snapshot, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    match request::parse(query) {
        Ok(request) => encode(&resolve(snapshot, &request), max_size(transport, &request)),
        Err(Rejected::Drop) => None,
        Err(Rejected::Error {
            metadata,
            query,
            edns,
            rcode,
        }) => {
            debug!(id = metadata.id, %rcode, "rejecting query");
            let response = Response {
                metadata: error_metadata(&metadata, rcode),
                query: query.as_ref(),
                answers: Vec::new(),
                authorities: Vec::new(),
                additionals: Vec::new(),
                edns,
            };
            // Header, question and OPT: within the smallest limit, whatever the transport.
            encode(&response, 512)
        }
    }
}

fn encode(response: &Response<'_>, max_size: u16) -> Option<Vec<u8>> {
    match response.encode(max_size) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            warn!(%error, "cannot encode a response, answering SERVFAIL");
            let servfail = Response {
                metadata: error_metadata(&response.metadata, ResponseCode::ServFail),
                answers: Vec::new(),
                authorities: Vec::new(),
                additionals: Vec::new(),
                ..*response
            };
            servfail.encode(max_size).ok()
        }
    }
}

/// How large the response to `request` may be over `transport`.
fn max_size(transport: Transport, request: &Request) -> u16 {
    match (transport, &request.edns) {
        (Transport::Tcp, _) => u16::MAX,
        (Transport::Udp, None) => 512,
        // RFC 6891 section 6.2.5: values below 512 are treated as 512.
        (Transport::Udp, Some(edns)) => edns.max_payload().clamp(512, EDNS_PAYLOAD),
    }
}

fn error_metadata(query: &Metadata, rcode: ResponseCode) -> Metadata {
    let mut metadata = Metadata::response_from_request(query);
    metadata.response_code = rcode;
    metadata
}

/// The answer to a well-formed query, from `snapshot`.
fn resolve<'a>(snapshot: &'a Snapshot, request: &'a Request) -> Response<'a> {
    let query = &request.query;
    let mut response = Response {
        metadata: Metadata::response_from_request(&request.metadata),
        query: Some(query),
        answers: Vec::new(),
        authorities: Vec::new(),
        additionals: Vec::new(),
        edns: request.edns.is_some(),
    };
    let refuse = |mut response: Response<'a>| {
        response.metadata.response_code = ResponseCode::Refused;
        response
    };
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return refuse(response);
    }
    let query_type = query.query_type();
    match query_type {
        // Zone transfers are not offered.
        RecordType::AXFR | RecordType::IXFR => return refuse(response),
        RecordType::OPT => {
            response.metadata.response_code = ResponseCode::FormErr;
            return response;
        }
        _ => {}
    }

    let node = match snapshot.lookup(query.name()) {
        Lookup::OutOfZone => return refuse(response),
        Lookup::NxDomain => {
            response.metadata.response_code = ResponseCode::NXDomain;
            None
        }
        Lookup::Found(node) => Some(node),
    };
    response.metadata.authoritative = true;
    if let Some(node) = node {
        if query_type == RecordType::ANY {
            for rrset in node.rrsets() {
                add_rrset(snapshot, &mut response, rrset);
            }
        } else if let Some(rrset) = node.rrset(query_type) {
            add_rrset(snapshot, &mut response, rrset);
        }
    }
    if response.answers.is_empty() {
        // NXDOMAIN or NODATA: the SOA tells resolvers how long to cache the negative answer.
        response.authorities.push(Owned {
            owner: snapshot.origin(),
            record: snapshot.soa(),
        });
    }
    response
}

/// Adds `rrset` to the answers, rotated, with its additional records.
fn add_rrset<'a>(snapshot: &Snapshot, response: &mut Response<'a>, rrset: &'a RrSet) {
    let records = rrset.records();
    let start = if rrset.rotates() && records.len() > 1 {
        snapshot.next_rotation() % records.len()
    } else {
        0
    };
    // `query` is always set on the answer path; the fallback keeps this total.
    let Some(owner) = response.query.map(|q| q.name()) else {
        return;
    };
    for index in (start..records.len()).chain(0..start) {
        let Some(record) = records.get(index) else {
            continue;
        };
        response.answers.push(Owned { owner, record });
        let additionals = rrset.additionals(index);
        if !additionals.is_empty() {
            response.additionals.push(Group(additionals));
        }
    }
}
