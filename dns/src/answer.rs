//! One query in, one response out: the whole DNS logic, without I/O.
//!
//! Two paths give the same answers. The fast path reads the common query shape off the wire
//! (`crate::wire`) and copies a response precomputed in the snapshot; the general path parses
//! with hickory and encodes from the records. The general path handles everything the fast one
//! leaves: malformed queries, other opcodes and classes, zone transfers, small EDNS sizes that
//! need trimming.

mod request;
mod response;
#[cfg(test)]
mod tests;

use hickory_proto::op::{Metadata, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use tracing::{debug, warn};

use self::request::{Rejected, Request};
pub(crate) use self::response::EDNS_PAYLOAD;
use self::response::{Group, Owned, Response};
use crate::snapshot::{Lookup, Node, RrSet, Snapshot};
use crate::wire::{self, CLASS_IN, HEADER_LEN, QueryView};

/// The transport a query came over, which sets how large the response may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 octets, or the client's EDNS payload size capped at 1232.
    Udp,
    /// TCP: 65535 octets.
    Tcp,
}

/// What to do with a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send the response written to the output buffer.
    Send,
    /// Send nothing.
    Drop,
    /// The name is outside the served zones and forwarding is on: ask the upstream.
    Forward,
}

/// Type codes the fast path leaves to the general one.
const TYPE_OPT: u16 = 41;
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;
const TYPE_ANY: u16 = 255;

/// Answers `query` into `out` (cleared first).
pub(crate) fn answer_into(
    snapshot: &Snapshot,
    query: &[u8],
    transport: Transport,
    options: Options,
    out: &mut Vec<u8>,
) -> Action {
    out.clear();
    if options.precomputed
        && let Some(view) = wire::read(query)
        && let Some(action) = fast(snapshot, query, &view, transport, options, out)
    {
        return action;
    }
    out.clear();
    general(snapshot, query, transport, options, out)
}

/// How a server answers, beside its snapshot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    /// Answer from precomputed responses where possible.
    pub(crate) precomputed: bool,
    /// Names outside the served zones are forwarded rather than refused.
    pub(crate) forwarding: bool,
}

/// The fast path; `None` leaves the query to the general path.
fn fast(
    snapshot: &Snapshot,
    query: &[u8],
    view: &QueryView,
    transport: Transport,
    options: Options,
    out: &mut Vec<u8>,
) -> Option<Action> {
    if view.qclass != CLASS_IN || matches!(view.qtype, TYPE_OPT | TYPE_IXFR | TYPE_AXFR) {
        return None;
    }
    let edns = view.edns_payload.is_some();
    let limit = match (transport, view.edns_payload) {
        (Transport::Tcp, _) => u16::MAX,
        (Transport::Udp, None) => 512,
        // RFC 6891 section 6.2.5: values below 512 are treated as 512.
        (Transport::Udp, Some(payload)) => payload.clamp(512, EDNS_PAYLOAD),
    };
    let question = query.get(HEADER_LEN..view.question_end)?;
    let (node, rcode) = match snapshot.find(view.key()) {
        Lookup::OutOfZone if options.forwarding => return Some(Action::Forward),
        Lookup::OutOfZone => return None,
        Lookup::NxDomain => (None, ResponseCode::NXDomain),
        Lookup::Found(node) => (Some(node), ResponseCode::NoError),
    };
    let rrset = node.and_then(|node| {
        if view.qtype == TYPE_ANY {
            node.any_rrset()
        } else {
            node.rrset_by_code(view.qtype)
        }
    });
    if let Some(rrset) = rrset {
        let template = rrset.template(snapshot.next_rotation())?;
        let bytes = template.bytes(edns, limit)?;
        out.extend_from_slice(bytes);
        let patch = out.get_mut(..view.question_end)?;
        patch[0] = query[0];
        patch[1] = query[1];
        // RD (the low bit of octet 2) and CD (0x10 of octet 3) are copied from the query.
        patch[2] = (patch[2] & !0x01) | (query[2] & 0x01);
        patch[3] = (patch[3] & !0x10) | (query[3] & 0x10);
        patch[HEADER_LEN..].copy_from_slice(question);
        return Some(Action::Send);
    }

    // NXDOMAIN or NODATA: header, the question as sent, the SOA, and OPT if the query had one.
    let zone = node.map_or(crate::snapshot::ZoneIndex::Cluster, Node::zone);
    let soa = snapshot.apex(zone).negative_soa_wire();
    out.extend_from_slice(&[
        query[0],
        query[1],
        0x84 | (query[2] & 0x01),
        (query[3] & 0x10) | rcode.low(),
        0,
        1,
        0,
        0,
        0,
        u8::from(!soa.is_empty()),
        0,
        u8::from(edns),
    ]);
    out.extend_from_slice(question);
    out.extend_from_slice(soa);
    if edns {
        let [high, low] = EDNS_PAYLOAD.to_be_bytes();
        out.extend_from_slice(&[0, 0, 41, high, low, 0, 0, 0, 0, 0, 0]);
    }
    (out.len() <= usize::from(limit)).then_some(Action::Send)
}

/// The general path: hickory's parser and encoder.
fn general(
    snapshot: &Snapshot,
    query: &[u8],
    transport: Transport,
    options: Options,
    out: &mut Vec<u8>,
) -> Action {
    let response = match request::parse(query) {
        Ok(request) => match resolve(snapshot, &request, options) {
            Some(response) => encode(&response, max_size(transport, &request)),
            None => return Action::Forward,
        },
        Err(Rejected::Drop) => return Action::Drop,
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
    };
    match response {
        Some(bytes) => {
            out.extend_from_slice(&bytes);
            Action::Send
        }
        None => Action::Drop,
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

/// The answer to a well-formed query, from `snapshot`; `None` to forward it.
fn resolve<'a>(
    snapshot: &'a Snapshot,
    request: &'a Request,
    options: Options,
) -> Option<Response<'a>> {
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
        Some(response)
    };
    let lookup = snapshot.lookup(query.name());
    if matches!(lookup, Lookup::OutOfZone) {
        return if options.forwarding {
            None
        } else {
            refuse(response)
        };
    }
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return refuse(response);
    }
    let query_type = query.query_type();
    match query_type {
        // Zone transfers are not offered.
        RecordType::AXFR | RecordType::IXFR => return refuse(response),
        RecordType::OPT => {
            response.metadata.response_code = ResponseCode::FormErr;
            return Some(response);
        }
        _ => {}
    }

    let node = match lookup {
        Lookup::OutOfZone => return refuse(response),
        Lookup::NxDomain => {
            response.metadata.response_code = ResponseCode::NXDomain;
            None
        }
        Lookup::Found(node) => Some(node),
    };
    response.metadata.authoritative = true;
    let rrset = node.and_then(|node| {
        if query_type == RecordType::ANY {
            node.any_rrset()
        } else {
            node.rrset(query_type)
        }
    });
    match rrset {
        Some(rrset) => {
            let start = snapshot.next_rotation();
            add_rrset(&mut response, rrset, start);
        }
        None => {
            // NXDOMAIN or NODATA: the SOA tells resolvers how long to cache the negative answer.
            let zone = node.map_or(crate::snapshot::ZoneIndex::Cluster, Node::zone);
            let soa = snapshot.apex(zone).negative_soa();
            response.authorities.push(Owned {
                owner: &soa.name,
                record: soa,
            });
        }
    }
    Some(response)
}

/// The positive response to `query` with `rrset` rotated to start at `start`: what both paths
/// send (the fast path precomputes it).
pub(crate) fn positive_response<'a>(
    request: Metadata,
    query: &'a Query,
    edns: bool,
    rrset: &'a RrSet,
    start: usize,
) -> Response<'a> {
    let mut response = Response {
        metadata: Metadata::response_from_request(&request),
        query: Some(query),
        answers: Vec::new(),
        authorities: Vec::new(),
        additionals: Vec::new(),
        edns,
    };
    response.metadata.authoritative = true;
    add_rrset(&mut response, rrset, start);
    response
}

/// Adds `rrset` to the answers, rotated to start at `rotation` (modulo its length, for the sets
/// that rotate), with its additional records.
fn add_rrset<'a>(response: &mut Response<'a>, rrset: &'a RrSet, rotation: usize) {
    let records = rrset.records();
    let start = if rrset.rotates() {
        rotation % records.len()
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
