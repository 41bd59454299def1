//! A bounded cache of upstream responses, honouring their TTLs (RFC 2308 for negative ones).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};

/// What a response is cached under: the question, lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    name: String,
    qtype: u16,
    qclass: u16,
}

impl CacheKey {
    /// The key of a one-question query; `None` for anything else (not cached).
    pub(crate) fn of(request: &Message) -> Option<Self> {
        let [query] = request.queries.as_slice() else {
            return None;
        };
        Some(Self {
            name: query.name().to_lowercase().to_ascii(),
            qtype: query.query_type().into(),
            qclass: query.query_class().into(),
        })
    }
}

#[derive(Debug)]
struct Entry {
    response: Message,
    stored: Instant,
    ttl: Duration,
}

#[derive(Debug)]
pub(crate) struct Cache {
    entries: Mutex<HashMap<CacheKey, Entry, ahash::RandomState>>,
    capacity: usize,
    max_ttl: u32,
}

impl Cache {
    pub(crate) fn new(capacity: usize, max_ttl: u32) -> Self {
        Self {
            entries: Mutex::new(HashMap::default()),
            capacity,
            max_ttl,
        }
    }

    /// The cached answer to `request`, TTLs reduced by the time spent in the cache.
    pub(crate) fn get(&self, key: &CacheKey, request: &Message) -> Option<Vec<u8>> {
        self.get_at(key, request, Instant::now())
    }

    pub(crate) fn get_at(
        &self,
        key: &CacheKey,
        request: &Message,
        now: Instant,
    ) -> Option<Vec<u8>> {
        // The map holds no invariant a panic could break half-way: recover from poisoning.
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(key)?;
        let age = now.saturating_duration_since(entry.stored);
        if age >= entry.ttl {
            entries.remove(key);
            return None;
        }
        let mut response = entry.response.clone();
        drop(entries);
        let elapsed = u32::try_from(age.as_secs()).unwrap_or(u32::MAX);
        for record in response
            .answers
            .iter_mut()
            .chain(response.authorities.iter_mut())
            .chain(response.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(elapsed);
        }
        response.metadata.id = request.metadata.id;
        response.queries = request.queries.clone();
        response.to_vec().ok()
    }

    /// Stores `response` for its TTL: the smallest answer TTL, or for a negative answer
    /// min(SOA TTL, SOA minimum); not stored when it has none, or the TTL is 0.
    pub(crate) fn insert(&self, key: CacheKey, response: &Message, now: Instant) {
        let Some(ttl) = cache_ttl(response).map(|t| t.min(self.max_ttl)) else {
            return;
        };
        if ttl == 0 || self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| now.saturating_duration_since(e.stored) < e.ttl);
            if entries.len() >= self.capacity {
                // Still full of live entries: make room by dropping one.
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(
            key,
            Entry {
                response: response.clone(),
                stored: now,
                ttl: Duration::from_secs(u64::from(ttl)),
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn cache_ttl(response: &Message) -> Option<u32> {
    let positive =
        response.metadata.response_code == ResponseCode::NoError && !response.answers.is_empty();
    if positive {
        return response.answers.iter().map(|r| r.ttl).min();
    }
    if !matches!(
        response.metadata.response_code,
        ResponseCode::NoError | ResponseCode::NXDomain
    ) {
        return None;
    }
    response
        .authorities
        .iter()
        .find_map(|r: &Record| match (&r.data, r.record_type()) {
            (RData::SOA(soa), RecordType::SOA) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::{A, SOA};

    use super::*;

    fn request(name: &str) -> Message {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m
    }

    fn positive(name: &str, ttl: u32) -> Message {
        let mut m = Message::response(1, hickory_proto::op::OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.add_answer(Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::A(A(Ipv4Addr::LOCALHOST)),
        ));
        m
    }

    #[test]
    fn honours_ttls_and_ages_them() {
        let cache = Cache::new(10, 3600);
        let req = request("Example.ORG.");
        let key = CacheKey::of(&req).unwrap();
        let t0 = Instant::now();
        cache.insert(key.clone(), &positive("example.org.", 30), t0);
        let hit = cache
            .get_at(&key, &req, t0 + Duration::from_secs(10))
            .unwrap();
        let hit = Message::from_vec(&hit).unwrap();
        assert_eq!(hit.metadata.id, 7);
        assert_eq!(hit.answers[0].ttl, 20);
        assert_eq!(hit.queries[0].name().to_ascii(), "Example.ORG.");
        assert!(
            cache
                .get_at(&key, &req, t0 + Duration::from_secs(30))
                .is_none()
        );
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn negative_answers_use_the_soa_minimum() {
        let mut m = Message::response(1, hickory_proto::op::OpCode::Query);
        m.metadata.response_code = ResponseCode::NXDomain;
        let apex = Name::from_ascii("org.").unwrap();
        m.add_authority(Record::from_rdata(
            apex.clone(),
            900,
            RData::SOA(SOA::new(apex.clone(), apex, 1, 1, 1, 1, 60)),
        ));
        assert_eq!(cache_ttl(&m), Some(60));
        m.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(cache_ttl(&m), None);
    }

    #[test]
    fn stays_bounded() {
        let cache = Cache::new(3, 3600);
        let t0 = Instant::now();
        for i in 0..10 {
            let name = format!("n{i}.org.");
            let key = CacheKey::of(&request(&name)).unwrap();
            cache.insert(key, &positive(&name, 60), t0);
        }
        assert_eq!(cache.len(), 3);
    }
}
