//! The DNS front-end's fast path: answers kept in wire form, keyed by the question.
//!
//! A cached answer costs one hash lookup and one copy: the stored response has its ID, RD bit
//! and question bytes replaced by the query's (so 0x20 case randomization survives) and its
//! TTLs lowered by the time since it was stored. Everything unusual (more than one question,
//! EDNS options such as cookies, an EDNS version other than 0, opcodes other than QUERY, a
//! response that would not fit) takes the full path through hickory, which is also what fills
//! this cache.
//!
//! Entries live at most [`MAX_AGE`], and at most a tenth of their remaining TTL, so the resolver
//! behind still sees every hot question every few seconds, and ever more often as its entry
//! nears expiry: at least once inside its prefetch window (the last tenth of the TTL), so its
//! prefetch and serve-stale decisions, and its counters, stay in charge. The bytes are the resolver's answer re-encoded, never parsed here
//! beyond the framing (header, question, record headers for the TTL positions).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a wire answer is reused, at most, before the resolver is asked again. (1 s sent a
/// tenth of a 10,000-name load test through the full path; 5 s sends a fiftieth.)
pub const MAX_AGE: Duration = Duration::from_secs(5);

/// The cache's byte budget; past it, expired entries are swept, then everything is dropped
/// (every entry is at most a few seconds old, so a refill is cheap).
pub const MAX_BYTES: usize = 32 << 20;

/// DNS header length.
const HEADER: usize = 12;
/// RR type of the EDNS OPT pseudo-record.
const OPT: u16 = 41;
/// Class IN, as on the wire.
const CLASS_IN: [u8; 2] = [0, 1];

/// The largest key: a 255-byte name, type, class and one flags byte.
const MAX_KEY: usize = 255 + 5;

/// What the fast path needs from a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The cache key: the question's name lower-cased, its type and class, and the request
    /// bits that change the response (EDNS present, DO, CD).
    key: ([u8; MAX_KEY], usize),
    /// Where the question section ends (it starts at 12).
    pub question_end: usize,
    /// The most a UDP answer to this query may carry ([`super::udp_limit`]: 512 without EDNS,
    /// else the client's offer within 512..=1232).
    pub max_udp: usize,
}

impl Query {
    /// The cache key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key.0[..self.key.1]
    }

    /// The question's type (the key ends with type, class and the flags byte).
    pub fn qtype(&self) -> u16 {
        let k = self.key.1;
        u16::from_be_bytes([self.key.0[k - 5], self.key.0[k - 4]])
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Reads a plain standard query: QR=0, OPCODE=QUERY, TC=0, one class-IN question with an
/// uncompressed name, no answer or authority records, and at most an OPT record of version 0 without
/// options. `None` sends the message down the full path.
pub fn parse_query(msg: &[u8]) -> Option<Query> {
    if msg.len() < HEADER {
        return None;
    }
    let (flags1, flags2) = (msg[2], msg[3]);
    // QR, OPCODE (4 bits) and TC must all be zero.
    if flags1 & 0b1111_1010 != 0 {
        return None;
    }
    let qd = u16_at(msg, 4)?;
    let (an, ns, ar) = (u16_at(msg, 6)?, u16_at(msg, 8)?, u16_at(msg, 10)?);
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut key = [0u8; MAX_KEY];
    let mut k = 0usize;
    let mut at = HEADER;
    loop {
        let len = *msg.get(at)? as usize;
        if len > 63 {
            return None; // compression pointers or extended label types
        }
        let label = msg.get(at..at + 1 + len)?;
        if k + label.len() > 255 {
            return None;
        }
        for (dst, &src) in key[k..k + label.len()].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        // The length byte itself is below 64, so lower-casing left it unchanged.
        k += label.len();
        at += label.len();
        if len == 0 {
            break;
        }
    }
    let qtype_class = msg.get(at..at + 4)?;
    if qtype_class[2..] != CLASS_IN {
        return None; // the full path refuses it
    }
    key[k..k + 4].copy_from_slice(qtype_class);
    k += 4;
    at += 4;
    let question_end = at;
    // Bit 0: EDNS present; bit 1: DO; bit 2: CD; bit 3: AD (an answer's AD bit depends on
    // the query's DO and AD, RFC 6840 §5.7).
    let mut bits = (u8::from(flags2 & 0x10 != 0) << 2) | (u8::from(flags2 & 0x20 != 0) << 3);
    let mut max_udp = 512;
    if ar == 1 {
        // The OPT record: root name, type 41, class = payload size, TTL = extended RCODE,
        // version, flags; no options.
        if msg.get(at) != Some(&0) || u16_at(msg, at + 1)? != OPT {
            return None;
        }
        let payload = u16_at(msg, at + 3)?;
        let version = *msg.get(at + 6)?;
        let do_bit = msg.get(at + 7)? & 0x80 != 0;
        let rdlen = u16_at(msg, at + 9)?;
        if version != 0 || rdlen != 0 {
            return None;
        }
        at += 11;
        bits |= 1 | (u8::from(do_bit) << 1);
        max_udp = super::udp_limit(Some(payload));
    }
    if at != msg.len() {
        return None;
    }
    key[k] = bits;
    k += 1;
    Some(Query {
        key: (key, k),
        question_end,
        max_udp,
    })
}

/// Where the TTL fields of a response's records are, with their values (the OPT record's TTL
/// field holds flags, not a TTL, and is left out). `None` if the message is not well formed.
pub fn ttl_positions(msg: &[u8]) -> Option<Vec<(usize, u32)>> {
    let qd = u16_at(msg, 4)?;
    let records =
        u32::from(u16_at(msg, 6)?) + u32::from(u16_at(msg, 8)?) + u32::from(u16_at(msg, 10)?);
    let mut at = HEADER;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..records {
        at = skip_name(msg, at)?;
        let rtype = u16_at(msg, at)?;
        let ttl = msg.get(at + 4..at + 8)?;
        let rdlen = usize::from(u16_at(msg, at + 8)?);
        if rtype != OPT {
            out.push((at + 4, u32::from_be_bytes([ttl[0], ttl[1], ttl[2], ttl[3]])));
        }
        at += 10 + rdlen;
    }
    (at == msg.len()).then_some(out)
}

/// The offset just past a (possibly compressed) name.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            1..=63 => at += 1 + usize::from(len),
            0xC0..=0xFF => return msg.get(at + 1).map(|_| at + 2),
            _ => return None,
        }
    }
}

struct Entry {
    wire: Box<[u8]>,
    ttls: Box<[(usize, u32)]>,
    stored: Instant,
    expires: Instant,
}

/// Cached responses in wire form.
#[derive(Default)]
pub struct WireCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Box<[u8]>, Entry>,
    bytes: usize,
}

impl WireCache {
    /// Writes the cached response for `q` (asked as `query`) into `out`, or returns false.
    pub fn answer(&self, query: &[u8], q: &Query, now: Instant, out: &mut Vec<u8>) -> bool {
        let Ok(inner) = self.inner.lock() else {
            return false;
        };
        let Some(e) = inner.map.get(q.key()) else {
            return false;
        };
        if now >= e.expires || e.wire.len() > q.max_udp {
            return false;
        }
        out.clear();
        out.extend_from_slice(&e.wire);
        let elapsed =
            u32::try_from(now.saturating_duration_since(e.stored).as_secs()).unwrap_or(u32::MAX);
        drop_ttls(out, &e.ttls, elapsed);
        drop(inner);
        // The query's ID, its RD bit, and its question bytes (0x20 case and all).
        out[0] = query[0];
        out[1] = query[1];
        out[2] = (out[2] & !1) | (query[2] & 1);
        out[HEADER..q.question_end].copy_from_slice(&query[HEADER..q.question_end]);
        true
    }

    /// Stores `response` (the full-path answer to `q`, whose records have `ttl` left) for a tenth
    /// of `ttl`, at most [`MAX_AGE`]. Responses with a TC bit or that do not frame are not
    /// stored.
    pub fn store(&self, q: &Query, response: &[u8], ttl: Duration, now: Instant) {
        if response.len() < HEADER || response[2] & 0b10 != 0 || ttl.is_zero() {
            return;
        }
        let Some(ttls) = ttl_positions(response) else {
            return;
        };
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let size = response.len() + q.key().len() + ttls.len() * 16 + 64;
        if inner.bytes + size > MAX_BYTES {
            inner.map.retain(|_, e| e.expires > now);
            inner.bytes = inner.map.iter().map(|(k, e)| entry_size(k, e)).sum();
            if inner.bytes + size > MAX_BYTES {
                inner.map.clear();
                inner.bytes = 0;
            }
        }
        let entry = Entry {
            wire: response.into(),
            ttls: ttls.into(),
            stored: now,
            expires: now + (ttl / 10).min(MAX_AGE),
        };
        inner.bytes += size;
        if let Some(old) = inner.map.insert(q.key().into(), entry) {
            inner.bytes = inner.bytes.saturating_sub(entry_size(q.key(), &old));
        }
    }

    /// The number of stored responses.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn entry_size(key: &[u8], e: &Entry) -> usize {
    e.wire.len() + key.len() + e.ttls.len() * 16 + 64
}

fn drop_ttls(out: &mut [u8], ttls: &[(usize, u32)], elapsed: u32) {
    if elapsed == 0 {
        return;
    }
    for &(at, ttl) in ttls {
        out[at..at + 4].copy_from_slice(&ttl.saturating_sub(elapsed).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery};
    use hickory_resolver::proto::rr::rdata::TXT;
    use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

    fn query(name: &str, edns: Option<bool>) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(HQuery::query(
            Name::from_ascii(name).unwrap(),
            RecordType::TXT,
        ));
        if let Some(dnssec_ok) = edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            e.set_dnssec_ok(dnssec_ok);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn response(name: &str, ttl: u32) -> Vec<u8> {
        let mut m = Message::response(0x1234, OpCode::Query);
        let n = Name::from_ascii(name).unwrap();
        m.add_query(HQuery::query(n.clone(), RecordType::TXT));
        m.add_answer(Record::from_rdata(
            n,
            ttl,
            RData::TXT(TXT::new(vec!["v=spf1 -all".into()])),
        ));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
        m.to_vec().unwrap()
    }

    #[test]
    fn keys_ignore_case_and_separate_edns_and_do() {
        let a = parse_query(&query("Example.TEST.", None)).unwrap();
        let b = parse_query(&query("example.test.", None)).unwrap();
        let c = parse_query(&query("example.test.", Some(false))).unwrap();
        let d = parse_query(&query("example.test.", Some(true))).unwrap();
        assert_eq!(a.key(), b.key());
        assert_eq!(a.qtype(), u16::from(RecordType::TXT));
        assert_ne!(b.key(), c.key());
        assert_ne!(c.key(), d.key());
        assert_eq!(a.max_udp, 512);
        assert_eq!(c.max_udp, 1232);
    }

    #[test]
    fn udp_size_is_capped_at_what_we_advertise() {
        let mut q = query("example.test.", Some(false));
        let n = q.len();
        // The OPT record's class field (the payload size) is 8 bytes from the end.
        q[n - 8..n - 6].copy_from_slice(&4096u16.to_be_bytes());
        assert_eq!(parse_query(&q).unwrap().max_udp, 1232);
        q[n - 8..n - 6].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(parse_query(&q).unwrap().max_udp, 512);
    }

    #[test]
    fn other_classes_take_the_full_path() {
        let mut q = query("example.test.", None);
        let n = q.len();
        q[n - 1] = 3; // class CH
        assert!(parse_query(&q).is_none());
    }

    #[test]
    fn unusual_queries_take_the_full_path() {
        let q = query("example.test.", None);
        let mut resp = q.clone();
        resp[2] |= 0x80; // QR: a response
        assert!(parse_query(&resp).is_none());
        let mut two = q.clone();
        two[5] = 2; // QDCOUNT 2
        assert!(parse_query(&two).is_none());
        let mut trailing = q.clone();
        trailing.push(0);
        assert!(parse_query(&trailing).is_none());
        assert!(parse_query(&q[..q.len() - 1]).is_none());
        assert!(parse_query(&[0; 5]).is_none());
        let mut notify = q;
        notify[2] |= 4 << 3; // OPCODE NOTIFY
        assert!(parse_query(&notify).is_none());
    }

    #[test]
    fn ttl_positions_skip_opt() {
        let r = response("example.test.", 300);
        let t = ttl_positions(&r).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].1, 300);
        assert!(ttl_positions(&r[..r.len() - 1]).is_none());
    }

    #[test]
    fn hit_patches_id_case_rd_and_ttl() {
        let cache = WireCache::default();
        let now = Instant::now();
        let filler = query("example.test.", Some(false));
        let q = parse_query(&filler).unwrap();
        cache.store(
            &q,
            &response("example.test.", 300),
            Duration::from_secs(300),
            now,
        );
        assert_eq!(cache.len(), 1);

        let mut asked = query("eXaMpLe.TeSt.", Some(false));
        asked[0] = 0xAB;
        asked[1] = 0xCD;
        asked[2] &= !1; // RD off
        let q2 = parse_query(&asked).unwrap();
        let mut out = Vec::new();
        assert!(cache.answer(&asked, &q2, now, &mut out));
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 0xABCD);
        assert!(!m.metadata.recursion_desired);
        assert_eq!(m.queries[0].name().to_ascii(), "eXaMpLe.TeSt.");
        assert_eq!(m.answers[0].ttl, 300);

        // Half a second later the TTL is unchanged; two seconds later it is two lower; past
        // MAX_AGE the entry is not used.
        let later = now + Duration::from_millis(500);
        assert!(cache.answer(&asked, &q2, later, &mut out));
        assert_eq!(Message::from_vec(&out).unwrap().answers[0].ttl, 300);
        assert!(cache.answer(&asked, &q2, now + Duration::from_secs(2), &mut out));
        assert_eq!(Message::from_vec(&out).unwrap().answers[0].ttl, 298);
        assert!(!cache.answer(&asked, &q2, now + MAX_AGE, &mut out));
        // An answer with 20 s left is reused for 2 s only: the resolver is asked again well
        // inside its prefetch window.
        cache.store(
            &q,
            &response("example.test.", 20),
            Duration::from_secs(20),
            now,
        );
        assert!(cache.answer(&asked, &q2, now + Duration::from_millis(1900), &mut out));
        assert!(!cache.answer(&asked, &q2, now + Duration::from_secs(2), &mut out));
        // A client without EDNS has another key.
        let plain = query("example.test.", None);
        assert!(!cache.answer(&plain, &parse_query(&plain).unwrap(), now, &mut out));
    }

    #[test]
    fn ttls_count_down_and_truncated_answers_are_not_kept() {
        let mut out = response("example.test.", 300);
        let t = ttl_positions(&out).unwrap();
        drop_ttls(&mut out, &t, 1);
        assert_eq!(Message::from_vec(&out).unwrap().answers[0].ttl, 299);
        drop_ttls(&mut out, &t, 1000);
        assert_eq!(Message::from_vec(&out).unwrap().answers[0].ttl, 0);

        let cache = WireCache::default();
        let q = parse_query(&query("example.test.", Some(false))).unwrap();
        let mut tc = response("example.test.", 300);
        tc[2] |= 0b10;
        cache.store(&q, &tc, Duration::from_secs(300), Instant::now());
        assert!(cache.is_empty());
    }
}
