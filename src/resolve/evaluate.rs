//! The DMARC verdict (RFC 7489 §6.6, RFC 9989 §4.4, §4.10, §5.3) over the cache: discover the
//! policy, align the SPF- and DKIM-authenticated identifiers with the author domain (strict:
//! identical; relaxed: the same organizational domain, by the configured discovery mode), and
//! choose the disposition: `p`, `sp` or `np`; one level lower under RFC 9989 `t=y`; RFC 7489
//! `pct` sampling (deterministic when a seed is given).
//!
//! Two proposed extensions, kept apart from the standard logic and reported as such:
//! - must-pass (`adkim`/`aspf` = `p`, `rp`, `sp`): that mechanism must pass aligned for DMARC to
//!   pass, so a domain can require both SPF and DKIM;
//! - DKIM2 forwarders: each forwarder's record is fetched; its `fp=` (else `p=`) is a candidate,
//!   and a failing message gets the strictest candidate; every candidate is listed.

use std::hash::BuildHasher;
use std::time::Instant;

use super::discover::{DiscoveryMode, PolicyTag};
use super::spf::SpfResult;
use super::{AsAuthor, AuthorDomain, ResolveError, Resolver};
pub use crate::model::dmarc::{
    Aligned, Candidate, DkimIdentity, DkimResult, DmarcInput, DmarcResult, DmarcVerdict,
    SpfIdentity,
};
use crate::policy::dmarc::{Alignment, Disposition, TestMode};

/// What relaxed alignment learns across one message's identifiers: the author domain's
/// organizational domain (found once), and whether a walk answered from a shorter name's cached
/// record because the limit refused a longer one (counted once per message).
struct AlignState {
    author_org: Option<String>,
    fallback: bool,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Resolver {
    /// The organizational domain for relaxed alignment, by the configured discovery mode.
    /// `fallback` is set when the walk answered from a shorter name's cached record because
    /// the limit refused a longer one.
    async fn alignment_org(
        &self,
        domain: &AuthorDomain,
        fallback: &mut bool,
        now: Instant,
    ) -> Result<String, ResolveError> {
        match self.config().discovery {
            DiscoveryMode::Psl => Ok(self.org_of(domain.as_str())),
            DiscoveryMode::TreeWalk | DiscoveryMode::Both => {
                let (org, limited) = self.org_domain_treewalk_flagged(domain, now).await?;
                *fallback |= limited;
                Ok(org)
            }
        }
    }

    async fn align(
        &self,
        id: &str,
        passed: bool,
        author: &AuthorDomain,
        st: &mut AlignState,
        mode: Alignment,
        now: Instant,
    ) -> Result<Aligned, ResolveError> {
        // A name beyond DNS's lengths aligns like any other (its org by the same walk).
        let id = id.to_author()?;
        let same = id == *author;
        if mode.is_strict() {
            return Ok(Aligned {
                aligned: same,
                domain: id.to_string(),
                passed,
                mode: "strict".into(),
                org_domain: None,
            });
        }
        if same {
            return Ok(Aligned {
                domain: id.to_string(),
                passed,
                aligned: true,
                mode: "relaxed".into(),
                org_domain: st.author_org.clone(),
            });
        }
        if st.author_org.is_none() {
            st.author_org = Some(self.alignment_org(author, &mut st.fallback, now).await?);
        }
        let org = self.alignment_org(&id, &mut st.fallback, now).await?;
        Ok(Aligned {
            aligned: Some(&org) == st.author_org.as_ref(),
            domain: id.to_string(),
            passed,
            mode: "relaxed".into(),
            org_domain: Some(org),
        })
    }

    /// Evaluates DMARC for a message (its From domain validated here).
    pub async fn dmarc_evaluate(&self, input: &DmarcInput, now: Instant) -> DmarcVerdict {
        self.verdict(input.from_domain.to_author(), input, now)
            .await
    }

    /// [`Resolver::dmarc_evaluate`] for a From domain the caller has validated (the serving
    /// layer does, once); `input.from_domain` is not read.
    pub async fn dmarc_evaluate_from(
        &self,
        from: &AuthorDomain,
        input: &DmarcInput,
        now: Instant,
    ) -> DmarcVerdict {
        self.verdict(Ok(from.clone()), input, now).await
    }

    async fn verdict(
        &self,
        from: Result<AuthorDomain, ResolveError>,
        input: &DmarcInput,
        now: Instant,
    ) -> DmarcVerdict {
        let mut v = DmarcVerdict {
            result: DmarcResult::None,
            disposition: Disposition::None,
            from_domain: input.from_domain.clone(),
            found_at: None,
            reason: None,
            org_domain: None,
            applied: None,
            spf: None,
            dkim: Vec::new(),
            must_pass: None,
            test_mode_downgrade: false,
            pct_sampled: None,
            candidates: Vec::new(),
            winner: None,
            notes: Vec::new(),
        };
        let found = match &from {
            Ok(author) => self.dmarc(author, now).await,
            Err(e) => Err(e.clone()),
        };
        let (author, disc) = match (from, found) {
            (Ok(author), Ok(d)) => (author, d),
            (_, Err(e)) | (Err(e), _) => {
                v.result = if e.is_temporary() {
                    DmarcResult::TempError
                } else {
                    DmarcResult::PermError
                };
                v.notes.push(format!("policy discovery: {e}"));
                return v;
            }
        };
        v.from_domain = disc.domain.clone();
        v.found_at = disc.found_at.clone();
        v.reason = disc.reason;
        v.notes.extend(disc.notes.iter().cloned());
        let (Some(record), Some((tag, published))) =
            (disc.applied_record().map(|r| &r.policy), disc.applied)
        else {
            v.notes
                .push("no DMARC policy applies: DMARC does not apply to this message".into());
            return v;
        };
        v.applied = Some(tag);
        let mut st = AlignState {
            author_org: disc
                .org_domain
                .clone()
                .filter(|_| self.config().discovery == DiscoveryMode::Psl),
            fallback: false,
        };

        // Identifier alignment (RFC 9989 §4.4).
        let mut temp = None;
        if let Some(s) = &input.spf {
            match self
                .align(
                    &s.domain,
                    s.result == SpfResult::Pass,
                    &author,
                    &mut st,
                    record.aspf,
                    now,
                )
                .await
            {
                Ok(a) => v.spf = Some(a),
                Err(e) => temp = Some(e),
            }
        }
        for d in &input.dkim {
            match self
                .align(
                    &d.domain,
                    d.result == DkimResult::Pass,
                    &author,
                    &mut st,
                    record.adkim,
                    now,
                )
                .await
            {
                Ok(a) => v.dkim.push(a),
                Err(e) => temp = Some(e),
            }
        }
        v.org_domain = st.author_org.or(disc.org_domain.clone());
        if st.fallback {
            v.notes.push("rate limited: an organizational domain for alignment was found from cached records (a longer name's _dmarc record was not asked)".into());
            // One message counts once, however many walks fell back.
            if !disc.rate_limited_fallback {
                self.inner.stats.rate_limited_fallback();
            }
        }
        if let Some(e) = temp
            && e.is_temporary()
        {
            v.result = DmarcResult::TempError;
            v.notes.push(format!("alignment: {e}"));
            return v;
        }
        let spf_ok = v.spf.as_ref().is_some_and(|a| a.passed && a.aligned);
        let dkim_ok = v.dkim.iter().any(|a| a.passed && a.aligned);
        let mut pass = spf_ok || dkim_ok;
        if record.aspf.must_pass() || record.adkim.must_pass() {
            let met =
                (!record.aspf.must_pass() || spf_ok) && (!record.adkim.must_pass() || dkim_ok);
            v.must_pass = Some((record.aspf.must_pass(), record.adkim.must_pass(), met));
            if pass && !met {
                v.notes.push("an aligned pass, but a must-pass mechanism (non-standard extension) did not pass: fail".into());
            }
            pass &= met;
        }
        if pass {
            v.result = DmarcResult::Pass;
            return v;
        }
        v.result = DmarcResult::Fail;

        // The author's disposition: the tag, then t=y, then pct.
        let mut disposition = published;
        if record.t == TestMode::Yes && disposition != Disposition::None {
            disposition = disposition.downgraded();
            v.test_mode_downgrade = true;
        }
        if record.pct < 100 {
            let draw = match input.seed {
                Some(seed) => splitmix(seed) % 100,
                None => std::collections::hash_map::RandomState::new().hash_one(&author) % 100,
            };
            let sampled = draw < u64::from(record.pct);
            v.pct_sampled = Some(sampled);
            if !sampled {
                // RFC 7489 §6.6.4: outside the sample, the next lower policy applies.
                disposition = disposition.downgraded();
            }
        }
        let tag_name = match tag {
            PolicyTag::P => "p",
            PolicyTag::Sp => "sp",
            PolicyTag::Np => "np",
        };
        v.candidates.push(Candidate {
            source: "author".into(),
            disposition,
            found_at: disc.found_at.clone(),
            tag: tag_name.into(),
        });

        // DKIM2 forwarders (extension): each one's fp= (else p=) is a candidate.
        for fwd in &input.forwarders {
            match self.dmarc(fwd, now).await {
                Ok(fd) => match fd.applied_record().map(|r| &r.policy) {
                    Some(fr) => {
                        let (disp, tag) = match fr.fp {
                            Some(fp) => (fp, "fp"),
                            None => (fr.p, "p"),
                        };
                        v.candidates.push(Candidate {
                            source: fd.domain.clone(),
                            disposition: disp,
                            found_at: fd.found_at.clone(),
                            tag: tag.into(),
                        });
                    }
                    None => v.notes.push(format!("forwarder {fwd}: no DMARC record")),
                },
                Err(e) => v.notes.push(format!("forwarder {fwd}: {e}")),
            }
        }
        let winner = v
            .candidates
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (c.disposition.strictness(), std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        v.winner = winner;
        v.disposition = winner.map_or(disposition, |i| v.candidates[i].disposition);
        v
    }
}
