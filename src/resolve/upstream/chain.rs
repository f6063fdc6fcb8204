//! The CNAME chain (RFC 2181 §5.4.1): only the records on the chain from the question name
//! are used, and a negative answer reached through CNAMEs keeps the CNAMEs' TTLs (they are
//! asked for one hop at a time when hickory did not report them).

use std::time::Instant;

use hickory_resolver::net::NoRecords;
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use super::records::{covered, proofs};
use super::{
    DnssecStatus, MAX_CNAME_HOPS, RawAnswer, Records, Upstream, encode_wire, error, lower_name,
    status, weaker,
};
use crate::resolve::ResolveError;

impl Upstream {
    /// A negative answer (NXDOMAIN or NODATA) for `qname`, as hickory reported it in `nr`.
    /// When hickory followed CNAMEs to get there, `nr` is about the chain's end and carries
    /// none of the CNAMEs: they are asked for ([`Upstream::cname_chain`]) so their TTLs (and,
    /// validating, their proofs) count.
    pub(super) async fn negative(
        &self,
        qname: &Name,
        nr: &NoRecords,
        validate: bool,
        started: Instant,
        until: tokio::time::Instant,
    ) -> Result<RawAnswer, ResolveError> {
        // RFC 2308 §5: the negative TTL is min(SOA TTL, SOA MINIMUM).
        let soa_ttl = nr.soa.as_ref().map(|soa| soa.ttl.min(soa.data.minimum));
        let mut ttl = soa_ttl.or(nr.negative_ttl).unwrap_or(0);
        let mut proof = nr.soa.as_ref().map(|soa| soa.proof);
        let end = nr.query.name();
        let negative_at = if same_name(end, qname) {
            qname
        } else {
            let chain = tokio::time::timeout_at(until, self.cname_chain(qname, end, validate))
                .await
                .unwrap_or(Err(ResolveError::Timeout));
            match chain {
                Ok((chain_ttl, chain_proof)) => {
                    ttl = ttl.min(chain_ttl);
                    proof = match (proof, chain_proof) {
                        (Some(a), Some(b)) => Some(weaker(a, b)),
                        (a, b) => a.or(b),
                    };
                }
                Err(ResolveError::DnssecBogus) => return Err(ResolveError::DnssecBogus),
                Err(e) => {
                    // The CNAMEs' TTLs are unknown: the floor, never the target's own TTL.
                    tracing::debug!(name = %qname, error = %e, "negative answer through CNAMEs: chain not confirmed, TTL 0");
                    ttl = 0;
                }
            }
            end
        };
        let dnssec = if !validate {
            DnssecStatus::Indeterminate
        } else {
            proof.map_or(DnssecStatus::Indeterminate, status)
        };
        if dnssec == DnssecStatus::Bogus {
            return Err(ResolveError::DnssecBogus);
        }
        let rcode = if nr.response_code == ResponseCode::NXDomain {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        };
        Ok(RawAnswer {
            found_at: None,
            negative_at: Some(lower_name(negative_at)),
            rcode,
            ttl,
            dnssec,
            records: Records::None,
            wire: encode_wire(
                [],
                nr.soa
                    .as_ref()
                    .map(|s| s.as_ref().clone().into_record_of_rdata())
                    .iter()
                    .chain(proofs(nr.authorities.as_deref().unwrap_or_default())),
            ),
            elapsed: started.elapsed(),
        })
    }

    /// Asks for the CNAMEs from `qname` to `end` one hop at a time (a `CNAME` question is not
    /// followed by hickory), at most [`MAX_CNAME_HOPS`]; returns the minimum TTL over them and
    /// their weakest proof. A hop without a CNAME, a loop, or a chain that does not reach `end`
    /// is an error.
    async fn cname_chain(
        &self,
        qname: &Name,
        end: &Name,
        validate: bool,
    ) -> Result<(u32, Option<Proof>), ResolveError> {
        let mut owner = qname.clone();
        let mut seen: Vec<Name> = Vec::new();
        let mut ttl = u32::MAX;
        let mut proof = None::<Proof>;
        for _ in 0..MAX_CNAME_HOPS {
            let lookup = self
                .hickory_lookup(validate, owner.clone(), RecordType::CNAME)
                .await
                .map_err(error)?;
            let chain = answer_chain(&owner, RecordType::CNAME, lookup.answers())?;
            let cname = chain.rrset[0];
            let RData::CNAME(target) = &cname.data else {
                return Err(ResolveError::Network("a CNAME without a target".into()));
            };
            if chain.rrset.iter().any(|other| other.data != cname.data) {
                return Err(ResolveError::Network(
                    format!("two different CNAMEs at {owner}").into(),
                ));
            }
            ttl = ttl.min(cname.ttl);
            proof = Some(proof.map_or(cname.proof, |p| weaker(p, cname.proof)));
            let target = target.0.clone();
            if same_name(&target, end) {
                return Ok((ttl, proof));
            }
            if same_name(&target, qname) || seen.iter().any(|n| same_name(n, &target)) {
                return Err(ResolveError::Network(
                    format!("a CNAME loop at {target}").into(),
                ));
            }
            seen.push(owner);
            owner = target;
        }
        Err(ResolveError::Network(
            format!("a CNAME chain from {qname} longer than {MAX_CNAME_HOPS}").into(),
        ))
    }
}

/// The part of an answer section that answers the question: the CNAMEs followed from the
/// question name and the RRset of the asked type at the chain's end.
pub(super) struct Chain<'a> {
    /// The chain's last name, where the RRset is.
    pub(super) owner: Name,
    /// The CNAMEs followed, in order.
    pub(super) cnames: Vec<&'a Record>,
    /// The records of the asked type owned by `owner` (never empty).
    pub(super) rrset: Vec<&'a Record>,
    /// The minimum TTL over `cnames` and `rrset`.
    pub(super) ttl: u32,
    /// The RRSIGs in the answer section over the chain's CNAMEs and over the RRset, for a
    /// client that set DO (empty when the upstream was asked without DO).
    pub(super) sigs: Vec<&'a Record>,
}

/// Walks the CNAME chain from `qname` through `answers` (RFC 2181 §5.4.1: only records on the
/// chain are believed; names compare case-insensitively). Records off the chain (another
/// owner, another type) are ignored, whatever the upstream put there. A loop, a chain longer
/// than [`MAX_CNAME_HOPS`], two different CNAMEs at one name, or a chain that ends without
/// records of the asked type is an error: the answer cannot be trusted.
pub(super) fn answer_chain<'a>(
    qname: &Name,
    rtype: RecordType,
    answers: &'a [Record],
) -> Result<Chain<'a>, ResolveError> {
    let bad = |why: String| {
        ResolveError::Network(format!("unusable answer for {qname} {rtype}: {why}").into())
    };
    let mut owner = qname.clone();
    let mut cnames: Vec<&Record> = Vec::new();
    let mut ttl = u32::MAX;
    for _ in 0..=MAX_CNAME_HOPS {
        let rrset: Vec<&Record> = answers
            .iter()
            .filter(|r| r.record_type() == rtype && same_name(&r.name, &owner))
            .collect();
        if !rrset.is_empty() {
            ttl = rrset.iter().fold(ttl, |t, r| t.min(r.ttl));
            let sigs = answers
                .iter()
                .filter(|r| match covered(r) {
                    Some(t) if t == rtype => same_name(&r.name, &owner),
                    Some(RecordType::CNAME) => cnames.iter().any(|c| same_name(&c.name, &r.name)),
                    _ => false,
                })
                .collect();
            return Ok(Chain {
                owner,
                cnames,
                rrset,
                ttl,
                sigs,
            });
        }
        let mut here = answers
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME && same_name(&r.name, &owner));
        let Some(cname) = here.next() else {
            return Err(bad(format!("no {rtype} records and no CNAME at {owner}")));
        };
        let RData::CNAME(target) = &cname.data else {
            return Err(bad(format!("a CNAME at {owner} without a target")));
        };
        if here.any(|other| other.data != cname.data) {
            return Err(bad(format!("two different CNAMEs at {owner}")));
        }
        let target = target.0.clone();
        if same_name(&target, qname) || cnames.iter().any(|c| same_name(&c.name, &target)) {
            return Err(bad(format!("a CNAME loop at {target}")));
        }
        ttl = ttl.min(cname.ttl);
        cnames.push(cname);
        owner = target;
    }
    Err(bad(format!("a CNAME chain longer than {MAX_CNAME_HOPS}")))
}

/// DNS name equality: case-insensitive, the final dot ignored.
pub(super) fn same_name(a: &Name, b: &Name) -> bool {
    a.num_labels() == b.num_labels()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.eq_ignore_ascii_case(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::upstream::lower_name;
    use hickory_resolver::proto::rr::rdata::{CNAME, TXT};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }
    fn cname(owner: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
    }
    fn txt(owner: &str, ttl: u32, text: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::TXT(TXT::new(vec![text.into()])))
    }

    #[test]
    fn the_chain_from_the_question_is_all_that_is_used() {
        let answers = [
            txt("victim.test.", 10, "v=spf1 +all"),
            cname("Q.example.test.", 40, "t.example.test."),
            txt("t.EXAMPLE.test.", 3600, "v=spf1 -all"),
            txt("q.example.test.", 5, "off the chain: q is a CNAME"),
        ];
        // An RRset at the question name itself wins (a CNAME beside it is off the chain).
        let c = answer_chain(&name("q.example.test."), RecordType::TXT, &answers).unwrap();
        assert_eq!(c.rrset.len(), 1);
        assert_eq!(c.ttl, 5);
        let answers = &answers[..3];
        let c = answer_chain(&name("q.example.test."), RecordType::TXT, answers).unwrap();
        assert_eq!(lower_name(&c.owner), "t.example.test");
        assert_eq!(c.cnames.len(), 1);
        assert_eq!(c.rrset.len(), 1, "victim.test is not on the chain");
        assert_eq!(c.ttl, 40, "min over the CNAME and the RRset");
    }

    #[test]
    fn loops_long_chains_conflicts_and_dead_ends_are_errors() {
        let looped = [
            cname("a.test.", 60, "b.test."),
            cname("b.test.", 60, "a.test."),
        ];
        assert!(answer_chain(&name("a.test."), RecordType::TXT, &looped).is_err());
        let long: Vec<Record> = (0..=MAX_CNAME_HOPS)
            .map(|i| cname(&format!("n{i}.test."), 60, &format!("n{}.test.", i + 1)))
            .chain([txt(&format!("n{}.test.", MAX_CNAME_HOPS + 1), 60, "x")])
            .collect();
        assert!(answer_chain(&name("n0.test."), RecordType::TXT, &long).is_err());
        let ok = &long[MAX_CNAME_HOPS - 15..];
        let start = format!("n{}.test.", MAX_CNAME_HOPS - 15);
        assert!(answer_chain(&name(&start), RecordType::TXT, ok).is_ok());
        let two = [
            cname("a.test.", 60, "b.test."),
            cname("a.test.", 60, "c.test."),
            txt("b.test.", 60, "x"),
        ];
        assert!(answer_chain(&name("a.test."), RecordType::TXT, &two).is_err());
        let dead = [txt("other.test.", 60, "x")];
        assert!(answer_chain(&name("a.test."), RecordType::TXT, &dead).is_err());
    }
}
