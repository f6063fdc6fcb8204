//! DMARC policy discovery: RFC 7489 §6.6.3 (the author domain, then the PSL organizational
//! domain) and RFC 9989 §4.10 (the DNS tree walk: at most eight queries, stopping at a record
//! with `psd=y` or `psd=n`).
//!
//! Every name is asked through the cache, so the org-level lookups of all subdomains of one
//! organization share one cached, coalesced entry: a thousand subdomains without their own
//! record cost a thousand `_dmarc.<sub>` queries and one `_dmarc.<org>` query.

use std::time::Instant;

use super::answer::Found;
use super::{
    Answer, AsAuthor, AuthorDomain, Data, Kind, Lookup, PolicyAnswer, Rcode, ResolveError,
    Resolver, Source,
};
pub use crate::model::dmarc::{DiscoveryMode, DmarcDiscovery, FoundAt, PolicyTag};
use crate::policy::Parsed;
use crate::policy::dmarc::{DmarcRecord, Psd};
use crate::policy::orgdomain;

/// The record of an answer when it is a valid DMARC policy record.
fn valid_record(a: &Answer) -> Option<&Parsed<DmarcRecord>> {
    a.dmarc_record()
}

impl Resolver {
    /// Discovers the DMARC policy that applies to mail from `domain`.
    ///
    /// A domain beyond DNS's lengths ([`AuthorDomain::Unformable`]) cannot exist: its `_dmarc`
    /// names that cannot be formed are skipped, and `np` applies without asking.
    pub async fn dmarc(
        &self,
        domain: &(impl AsAuthor + ?Sized),
        now: Instant,
    ) -> Result<DmarcDiscovery, ResolveError> {
        let author = domain.to_author()?;
        let domain = author.as_str();
        let mut d = DmarcDiscovery {
            domain: domain.to_owned(),
            found_at: None,
            reason: None,
            org_domain: None,
            applied: None,
            domain_exists: None,
            // Set below, once every answer is known.
            source: Source::Hit,
            record: None,
            queries: Vec::new(),
            notes: Vec::new(),
            rate_limited_fallback: false,
        };
        match self.config().discovery {
            DiscoveryMode::Psl => self.discover_psl(&mut d, &author, now).await?,
            DiscoveryMode::TreeWalk => self.discover_treewalk(&mut d, &author, now).await?,
            DiscoveryMode::Both => {
                self.discover_treewalk(&mut d, &author, now).await?;
                let psl = self.config().suffix_list.org_domain(domain);
                if d.reason == Some(FoundAt::OrganizationalDomain) && d.org_domain != psl {
                    d.notes.push(format!(
                        "tree walk found the organizational domain {:?}, the Public Suffix List says {:?}",
                        d.org_domain.as_deref().unwrap_or("-"),
                        psl.as_deref().unwrap_or("-")
                    ));
                }
                if d.org_domain.is_none() {
                    d.org_domain = psl;
                }
            }
        }
        self.choose_tag(&mut d, &author, now).await?;
        // Counted once per discovery, and only when its answer is used.
        if d.rate_limited_fallback {
            self.inner.stats.rate_limited_fallback();
        }
        d.source = d.least_fresh_source();
        Ok(d)
    }

    /// Asks `_dmarc.<name>` (`name`: `author` or a shorter name of it) and records the step.
    ///
    /// A name whose `_dmarc` form cannot be formed (over 253 octets) is skipped with a note
    /// (RFC 9989 §4.10). A question the organization's budget refuses is recorded as not asked
    /// ([`Step::Limited`]); the caller decides whether a shorter name's cached record may
    /// answer instead.
    async fn ask(
        &self,
        d: &mut DmarcDiscovery,
        author: &AuthorDomain,
        name: &str,
        now: Instant,
    ) -> Result<Step, ResolveError> {
        let Some(qname) = author.dmarc_query(name) else {
            d.notes.push(format!(
                "_dmarc.{name}: skipped, the query name would be longer than 253 octets (RFC 9989 §4.10)"
            ));
            return Ok(Step::Skipped);
        };
        let l = match self.lookup(Kind::Dmarc, &qname, now).await {
            Ok(l) => l,
            Err(ResolveError::RateLimited) => {
                d.notes.push(format!(
                    "{qname}: not asked, rate limited (the organization's upstream query budget is spent)"
                ));
                d.queries
                    .push((qname.to_string(), Source::RateLimitedFallback));
                return Ok(Step::Limited);
            }
            Err(e) => return Err(e),
        };
        if let Data::Dmarc(Found::Invalid(rejected)) = &l.answer.data {
            d.notes
                .push(format!("{qname}: record discarded: {}", rejected.error));
        }
        d.queries.push((qname.to_string(), l.source));
        Ok(Step::Asked(l))
    }

    fn apply(d: &mut DmarcDiscovery, l: &Lookup, found_at: &str, reason: FoundAt) {
        d.record = Some(PolicyAnswer {
            source: l.source,
            ttl: l.ttl_remaining,
            answer: l.answer.clone(),
        });
        d.found_at = Some(found_at.to_owned());
        d.reason = Some(reason);
    }

    /// A record found after a longer name was refused by the limiter: it answers, flagged (and
    /// counted once, by [`Resolver::dmarc`]).
    fn flag_fallback(d: &mut DmarcDiscovery, found_at: &str) {
        d.rate_limited_fallback = true;
        d.notes.push(format!(
            "rate limited: the subdomain's own _dmarc record was not asked; the cached record of {found_at} applies"
        ));
    }

    async fn discover_psl(
        &self,
        d: &mut DmarcDiscovery,
        author: &AuthorDomain,
        now: Instant,
    ) -> Result<(), ResolveError> {
        let domain = author.as_str();
        let first = self.ask(d, author, domain, now).await?;
        let org = self.config().suffix_list.org_domain(domain);
        d.org_domain = org.clone();
        let limited = matches!(first, Step::Limited);
        if let Step::Asked(first) = &first
            && valid_record(&first.answer).is_some()
        {
            Self::apply(d, first, domain, FoundAt::AuthorDomain);
            return Ok(());
        }
        // RFC 7489 §6.6.3: the organizational domain's record, also when the author domain's
        // query name could not be formed.
        let Some(org) = org.filter(|o| *o != domain) else {
            return if limited {
                Err(ResolveError::RateLimited)
            } else {
                Ok(())
            };
        };
        match self.ask(d, author, &org, now).await? {
            Step::Asked(second) if valid_record(&second.answer).is_some() => {
                Self::apply(d, &second, &org, FoundAt::OrganizationalDomain);
                if limited {
                    Self::flag_fallback(d, &org);
                }
                Ok(())
            }
            // The author domain's own record was not asked: "no policy" would be a guess.
            _ if limited => Err(ResolveError::RateLimited),
            Step::Limited => Err(ResolveError::RateLimited),
            _ => Ok(()),
        }
    }

    async fn discover_treewalk(
        &self,
        d: &mut DmarcDiscovery,
        author: &AuthorDomain,
        now: Instant,
    ) -> Result<(), ResolveError> {
        let walk = orgdomain::tree_walk(author.as_str());
        let mut found: Vec<(String, Lookup, Psd)> = Vec::new();
        let mut limited = false;
        for (i, name) in walk.iter().enumerate() {
            let lookup = match self.ask(d, author, name, now).await? {
                Step::Asked(l) => l,
                // RFC 9989 §4.10: a name that cannot be formed is skipped.
                Step::Skipped => continue,
                Step::Limited => {
                    limited = true;
                    continue;
                }
            };
            let Some(rec) = valid_record(&lookup.answer) else {
                continue;
            };
            let psd = rec.policy.psd;
            if i == 0 {
                // RFC 9989 §4.10.1: the author domain's own record applies.
                if psd != Psd::Unknown {
                    d.org_domain = Some(name.clone());
                }
                Self::apply(d, &lookup, name, FoundAt::AuthorDomain);
                return Ok(());
            }
            found.push((name.clone(), lookup, psd));
            if psd != Psd::Unknown {
                break;
            }
        }
        if found.is_empty() {
            // A name refused by the limiter might hold a record: not "no policy".
            return if limited {
                Err(ResolveError::RateLimited)
            } else {
                Ok(())
            };
        }
        let pairs: Vec<(&str, Psd)> = found.iter().map(|(n, _, p)| (n.as_str(), *p)).collect();
        let org = orgdomain::select_org_domain(&d.domain, &pairs);
        d.org_domain = Some(org.clone());
        if let Some((name, lookup, _)) = found.iter().find(|(n, _, _)| *n == org) {
            Self::apply(d, lookup, name, FoundAt::OrganizationalDomain);
        } else if let Some((name, lookup, _)) = found.iter().find(|(_, _, p)| *p == Psd::Yes) {
            Self::apply(d, lookup, name, FoundAt::PublicSuffixDomain);
        }
        if limited && let Some(at) = d.found_at.clone() {
            Self::flag_fallback(d, &at);
        } else if limited {
            return Err(ResolveError::RateLimited);
        }
        Ok(())
    }

    /// `p` for the author domain's own record; otherwise `sp` or `np` by whether the author
    /// domain exists (RFC 9989 §4.10.1, §3.2.13: NXDOMAIN for the domain itself).
    async fn choose_tag(
        &self,
        d: &mut DmarcDiscovery,
        author: &AuthorDomain,
        now: Instant,
    ) -> Result<(), ResolveError> {
        // The cached answer is shared (`Arc`), its record borrowed, never cloned.
        let Some(answer) = d.record.as_ref().map(|r| r.answer.clone()) else {
            return Ok(());
        };
        let Some(rec) = valid_record(&answer).map(|r| &r.policy) else {
            return Ok(());
        };
        if d.reason == Some(FoundAt::AuthorDomain) {
            d.applied = Some((PolicyTag::P, rec.p));
            return Ok(());
        }
        let exists = match author {
            // Over 253 octets or with a label over 63: no such name can exist in DNS.
            AuthorDomain::Unformable(_) => {
                d.notes.push(format!(
                "{}: cannot exist in DNS (longer than 253 octets or a label longer than 63): np applies, existence not asked",
                d.domain
            ));
                false
            }
            AuthorDomain::Dns(name) => {
                match self.lookup(Kind::Exists, name, now).await {
                    Ok(l) => l.answer.rcode != Rcode::NxDomain,
                    // Refused by the limiter. Existence known from the cache (an answer at the
                    // name, or a known NXDOMAIN at or above it) decides; so does nothing when `sp`
                    // and `np` agree. Otherwise which of them applies is unknown: the error stands
                    // (temperror), never a guess. A fallback used is flagged and counted.
                    Err(ResolveError::RateLimited) => {
                        d.rate_limited_fallback = true;
                        match self.cached_existence(name, now) {
                            Some(exists) => {
                                d.notes.push(format!(
                                "{}: existence not asked (rate limited); known from the cache: {}",
                                d.domain,
                                if exists { "exists" } else { "does not exist" }
                            ));
                                exists
                            }
                            None if rec.sp == rec.np => {
                                d.notes.push(format!(
                                    "{}: existence not asked (rate limited); sp and np are both {}",
                                    d.domain, rec.sp
                                ));
                                d.applied = Some((PolicyTag::Sp, rec.sp));
                                return Ok(());
                            }
                            None => {
                                d.notes.push(format!(
                                "{}: existence not asked (rate limited) and unknown, and sp={} differs from np={}",
                                d.domain, rec.sp, rec.np
                            ));
                                return Err(ResolveError::RateLimited);
                            }
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        d.domain_exists = Some(exists);
        d.applied = Some(if exists {
            (PolicyTag::Sp, rec.sp)
        } else {
            (PolicyTag::Np, rec.np)
        });
        Ok(())
    }

    /// The RFC 9989 §4.10.2 organizational domain of `domain` by a full tree walk (used for
    /// identifier alignment).
    pub async fn org_domain_treewalk(
        &self,
        domain: &(impl AsAuthor + ?Sized),
        now: Instant,
    ) -> Result<String, ResolveError> {
        let (org, limited) = self.org_domain_treewalk_flagged(domain, now).await?;
        if limited {
            self.inner.stats.rate_limited_fallback();
        }
        Ok(org)
    }

    /// [`Resolver::org_domain_treewalk`], not counting: with whether a name was not asked
    /// because of the limit (a shorter name's cached record decided). The caller counts it
    /// once per message.
    pub(crate) async fn org_domain_treewalk_flagged(
        &self,
        domain: &(impl AsAuthor + ?Sized),
        now: Instant,
    ) -> Result<(String, bool), ResolveError> {
        let author = domain.to_author()?;
        let domain = author.as_str();
        let mut found: Vec<(String, Psd)> = Vec::new();
        let mut limited = false;
        for name in orgdomain::tree_walk(domain) {
            // RFC 9989 §4.10: a query name that cannot be formed is skipped.
            let Some(qname) = author.dmarc_query(&name) else {
                continue;
            };
            let l = match self.lookup(Kind::Dmarc, &qname, now).await {
                Ok(l) => l,
                // Over the budget: a shorter name's cached record may still decide (as in
                // discovery); with none found, the error stands.
                Err(ResolveError::RateLimited) => {
                    limited = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(rec) = valid_record(&l.answer) {
                let psd = rec.policy.psd;
                found.push((name, psd));
                if psd != Psd::Unknown {
                    break;
                }
            }
        }
        if limited && found.is_empty() {
            return Err(ResolveError::RateLimited);
        }
        let pairs: Vec<(&str, Psd)> = found.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        Ok((orgdomain::select_org_domain(domain, &pairs), limited))
    }
}

/// One step of discovery.
enum Step {
    /// Asked (from the cache or upstream).
    Asked(Lookup),
    /// The `_dmarc` name cannot be formed (RFC 9989 §4.10): skipped.
    Skipped,
    /// Refused by the organization's upstream budget: not asked.
    Limited,
}
