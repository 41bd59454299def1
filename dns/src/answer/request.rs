//! Reading a query off the wire, deciding early what cannot be answered normally.

use hickory_proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// A well-formed standard query with exactly one question.
#[derive(Debug)]
pub(crate) struct Request {
    /// The query header (id, flags, opcode).
    pub(crate) metadata: Metadata,
    /// The one question, its name with the case as sent.
    pub(crate) query: Query,
    /// The client's OPT record, if any.
    pub(crate) edns: Option<Edns>,
}

/// A query answered with an error code, or not at all.
#[derive(Debug)]
pub(crate) enum Rejected {
    /// Send nothing: not a query, or not even a header.
    Drop,
    /// Answer `rcode` with the header (and the question, when it could be read).
    Error {
        /// The query header.
        metadata: Metadata,
        /// The question, when it was readable.
        query: Option<Query>,
        /// Whether the query carried an OPT record (so the response must carry one).
        edns: bool,
        /// The error to answer.
        rcode: ResponseCode,
    },
}

/// Reads one query message.
pub(crate) fn parse(bytes: &[u8]) -> Result<Request, Rejected> {
    let mut decoder = BinDecoder::new(bytes);
    let Ok(header) = Header::read(&mut decoder) else {
        return Err(Rejected::Drop);
    };
    let metadata = header.metadata;
    if metadata.message_type == MessageType::Response {
        return Err(Rejected::Drop);
    }
    let error = |rcode, query, edns| Rejected::Error {
        metadata,
        query,
        edns,
        rcode,
    };
    if metadata.op_code != OpCode::Query {
        return Err(error(ResponseCode::NotImp, None, false));
    }
    if header.counts.queries != 1 {
        return Err(error(ResponseCode::FormErr, None, false));
    }
    let Ok(query) = Query::read(&mut decoder) else {
        return Err(error(ResponseCode::FormErr, None, false));
    };

    // Answer and authority records have no meaning in a query; read past them all the same,
    // to reach the OPT record in the additional section.
    let counts = header.counts;
    let sections = [
        (counts.answers, false),
        (counts.authorities, false),
        (counts.additionals, true),
    ];
    let mut edns = None;
    for (count, is_additional) in sections {
        match Message::read_records(&mut decoder, count.into(), is_additional, OpCode::Query) {
            Ok((_, section_edns, _)) => edns = edns.or(section_edns),
            Err(_) => return Err(error(ResponseCode::FormErr, Some(query), false)),
        }
    }

    if edns.as_ref().is_some_and(|e| e.version() != 0) {
        return Err(error(ResponseCode::BADVERS, Some(query), true));
    }
    Ok(Request {
        metadata,
        query,
        edns,
    })
}
