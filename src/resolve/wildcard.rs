//! The glue between the lookup path and the wildcard watch ([`super::limit`]): answering a
//! miss from a marked window's sample (with verification of a sample of them), recording
//! upstream answers, and probing a candidate window with a random label.

use std::sync::Arc;
use std::time::Instant;

use super::answer;
use super::cache::{Key, Origin, State};
use super::limit::{self, Observed};
use super::lookup::upstream_outcome;
use super::{Answer, DomainName, Kind, Lookup, ResolveError, Resolver, Source};

impl Resolver {
    /// The wildcard sample that may answer `key` (a cache miss in the window `at`), unless
    /// anything known about the name says otherwise: it was seen answering differently (as
    /// any kind asking the same DNS type), it or an ancestor is known NXDOMAIN (a DNS wildcard
    /// never answers below an NXDOMAIN), or another kind asking the same DNS type at the name
    /// is cached with a different answer.
    pub(super) fn wildcard_sample(
        &self,
        key: &Key,
        at: &limit::Shaped,
        now: Instant,
    ) -> Option<Arc<Answer>> {
        let inner = &self.inner;
        let sample = inner.wildcard.synthesize(at, &key.name, now)?;
        if inner
            .nx
            .get(key.name.as_str())
            .is_some_and(|until| now < until)
            || self.nx_ancestor(&key.name, now).is_some()
        {
            return None;
        }
        let rtype = key.kind.record_type();
        for other in answer::KINDS {
            if other == key.kind || other.record_type() != rtype {
                continue;
            }
            let okey = Key {
                kind: other,
                name: key.name.clone(),
            };
            if let State::Fresh { answer, .. } | State::Stale { answer, .. } =
                inner.cache.peek_state(&okey, now)
                && !limit::same_answer(&answer, &sample)
            {
                return None;
            }
        }
        Some(sample)
    }

    /// Answers a miss in a window marked wildcard: from the sample, or, for a sample of
    /// questions within the budget, from upstream, ending the mark when the real answer
    /// differs.
    pub(super) async fn wildcard_answer(
        &self,
        key: Key,
        org: String,
        at: limit::Shaped,
        sample: Arc<Answer>,
        now: Instant,
    ) -> Result<Lookup, ResolveError> {
        let inner = &self.inner;
        let kind = key.kind;
        // Over the budget or upstream failed: the mark still stands and the sample answers.
        if inner.wildcard.claim_verification(&at.key)
            && let Ok(entry) = self
                .fetch(key.clone(), org, None, now, Origin::Fetched)
                .await
        {
            inner.stats.wildcard_verified();
            let answer = inner.cache.answer(&key, &entry);
            if !limit::same_answer(&answer, &sample) {
                inner.wildcard.unmark(&at.key, now);
                inner.stats.wildcard_unmarked();
                tracing::warn!(org = %at.key.org, kind = kind.label(), shape = %at.key.shape, name = %answer.name, "wildcard mark ended: a verified name answered differently from the sample");
            }
            inner.stats.miss(kind);
            return Ok(Lookup::of(answer, &entry, Source::Miss, now));
        }
        inner.stats.wildcard_synthesized();
        let ttl_remaining = sample.ttl;
        Ok(Lookup {
            answer: sample,
            source: Source::Wildcard,
            ttl_remaining,
        })
    }

    /// Records an upstream answer (positive or negative) in its wildcard window; when the
    /// window becomes a candidate, starts one probe in the background (the question that
    /// triggered it is answered at once): a random label of the same shape under the
    /// organization, marking the window only if it answers the same record, the evidence of a
    /// real DNS wildcard. One probe per window at a time (the window is *probing* until it
    /// reports, at most 30 s).
    pub(super) fn watch_wildcard(&self, key: &Key, org: &str, answer: &Arc<Answer>, now: Instant) {
        let inner = &self.inner;
        let Some(at) = limit::Shaped::of(key.kind, &key.name, org) else {
            return;
        };
        let Observed::Candidate { sample } = inner.wildcard.observe(&at, &key.name, answer, now)
        else {
            return;
        };
        let probe = at.probe_name(&key.name, &probe_label());
        let this = self.clone();
        tokio::spawn(async move { this.probe_wildcard(at, probe, sample, now).await });
    }

    /// The probe of a candidate window, paid from the organization's budget like any query:
    /// the organization is reserved (no other question of it admitted) until the probe has
    /// its token, so upstream queries never exceed the budget, and a flood that keeps the
    /// budget empty cannot starve the probe.
    async fn probe_wildcard(
        &self,
        at: limit::Shaped,
        probe: String,
        sample: Arc<Answer>,
        now: Instant,
    ) {
        let inner = &self.inner;
        let kind = at.key.kind;
        let wait = inner
            .cfg
            .cache
            .client_timeout
            .max(inner.limiter.interval() * 2);
        let mut probed = None;
        if DomainName::dns(&probe).is_ok() && inner.limiter.reserve(&at.key.org, wait).await {
            inner.stats.wildcard_probed();
            let started = Instant::now();
            // The probe is not cached and not observed.
            let result = inner
                .upstream
                .query(&probe, kind.record_type(), kind == Kind::Tlsa)
                .await;
            let elapsed = match &result {
                Ok(raw) => raw.elapsed,
                Err(_) => started.elapsed(),
            };
            inner.stats.upstream(upstream_outcome(&result), elapsed);
            if let Ok(raw) = result {
                probed = Some(Answer::from_raw(kind, &probe, raw));
            }
        }
        if inner
            .wildcard
            .probed(&at.key, &sample, probed.as_ref(), now)
        {
            inner.stats.wildcard_marked();
            tracing::warn!(org = %at.key.org, kind = kind.label(), shape = %at.key.shape, "marked wildcard (a random label of the same shape answers the same record): such names answered from a sample");
        }
    }
}

/// A random label of 20 letters and digits, for a wildcard probe.
fn probe_label() -> String {
    use std::hash::BuildHasher;
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let first = std::hash::RandomState::new().hash_one(Instant::now());
    let second = std::hash::RandomState::new().hash_one(first);
    let mut out = String::with_capacity(20);
    // Ten base-36 digits from each 64-bit value (36^10 < 2^64).
    for mut bits in [first, second] {
        for _ in 0..10 {
            out.push(char::from(ALPHABET[(bits % 36) as usize]));
            bits /= 36;
        }
    }
    out
}
