//! Prometheus metrics: queries by type and response code, answer latency, zone revision.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Query types counted by name; the rest count as `other`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub(crate) enum QType {
    A,
    AAAA,
    SRV,
    PTR,
    SOA,
    NS,
    TXT,
    ANY,
    other,
}

impl QType {
    pub(crate) fn from_code(code: u16) -> Self {
        match code {
            1 => Self::A,
            28 => Self::AAAA,
            33 => Self::SRV,
            12 => Self::PTR,
            6 => Self::SOA,
            2 => Self::NS,
            16 => Self::TXT,
            255 => Self::ANY,
            _ => Self::other,
        }
    }
}

/// Response codes counted by name.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub(crate) enum Rcode {
    NOERROR,
    FORMERR,
    SERVFAIL,
    NXDOMAIN,
    NOTIMP,
    REFUSED,
    other,
    /// No response sent.
    dropped,
}

impl Rcode {
    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            0 => Self::NOERROR,
            1 => Self::FORMERR,
            2 => Self::SERVFAIL,
            3 => Self::NXDOMAIN,
            4 => Self::NOTIMP,
            5 => Self::REFUSED,
            _ => Self::other,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    qtype: QType,
    rcode: Rcode,
}

/// The server's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    queries: Family<QueryLabels, Counter>,
    latency: Histogram,
    revision: Gauge,
    records: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("berth_dns");
        let queries = Family::<QueryLabels, Counter>::default();
        registry.register(
            "queries",
            "Queries answered, by question type and response code",
            queries.clone(),
        );
        // 8 us .. ~1 s.
        let latency = Histogram::new(exponential_buckets(8e-6, 2.0, 18));
        registry.register(
            "answer_duration_seconds",
            "Time from reading a query to having its response",
            latency.clone(),
        );
        let revision = Gauge::<i64>::default();
        registry.register(
            "zone_revision",
            "Revision of the zone served",
            revision.clone(),
        );
        let records = Gauge::default();
        registry.register(
            "zone_records",
            "Records in the zone served",
            records.clone(),
        );
        Self {
            registry,
            queries,
            latency,
            revision,
            records,
        }
    }

    /// Counts one query.
    pub(crate) fn query(&self, qtype: QType, rcode: Rcode, took: Duration) {
        self.queries
            .get_or_create(&QueryLabels { qtype, rcode })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    pub(crate) fn zone(&self, revision: u64, records: usize) {
        self.revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
        self.records.set(i64::try_from(records).unwrap_or(i64::MAX));
    }

    /// The metrics in the Prometheus text format.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The question type and response code of a response (wire format), for counting.
pub(crate) fn summarize(response: &[u8]) -> (QType, Rcode) {
    let rcode = response
        .get(3)
        .map_or(Rcode::other, |b| Rcode::from_code(b & 0x0f));
    let mut at = 12;
    while let Some(&len) = response.get(at) {
        if len == 0 || len & 0xc0 != 0 {
            at += if len == 0 { 1 } else { 2 };
            break;
        }
        at += 1 + usize::from(len);
    }
    let qtype = response.get(at..at + 2).map_or(QType::other, |b| {
        QType::from_code(u16::from_be_bytes([b[0], b[1]]))
    });
    (qtype, rcode)
}
