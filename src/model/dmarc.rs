//! DMARC as the protocol carries it: how the policy was found (discovery) and the verdict for a
//! message, with its input.

use serde::{Deserialize, Serialize};

use crate::model::answer::{PolicyAnswer, Source};
use crate::model::spf::SpfResult;
use crate::policy::Parsed;
use crate::policy::dmarc::{Disposition, DmarcRecord};
use crate::policy::str_enum;

/// The outcome of DMARC discovery for one author domain: what the resolver finds and, as it is,
/// what the `dmarc` op answers (`proto::DmarcAnswer` is this type). The fields are in the wire
/// order (postcard is positional); `rate_limited_fallback` is the resolver's and not sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DmarcDiscovery {
    /// The author domain asked about, normalized.
    pub domain: String,
    /// The domain whose `_dmarc` record applies, if one does.
    pub found_at: Option<String>,
    /// Why it applies (author domain, organizational domain, public suffix domain).
    pub reason: Option<FoundAt>,
    /// The organizational domain, where discovery determined it.
    pub org_domain: Option<String>,
    /// The tag that governs (`p`, `sp`, `np`) and its disposition.
    pub applied: Option<(PolicyTag, Disposition)>,
    /// Whether the author domain exists (asked only to choose `sp` or `np`).
    pub domain_exists: Option<bool>,
    /// The least fresh source among the answers used ([`DmarcDiscovery::least_fresh_source`],
    /// set when discovery ends).
    pub source: Source,
    /// The answer holding the applied record, where it came from and its remaining TTL.
    pub record: Option<PolicyAnswer>,
    /// Every `_dmarc` name asked, in order, with where its answer came from.
    pub queries: Vec<(String, Source)>,
    /// Discarded invalid records, PSL/tree-walk disagreements, names skipped.
    pub notes: Vec<String>,
    /// The organization's upstream budget was spent: a longer name's own `_dmarc` record was
    /// not asked, and a shorter name's cached record answered (flagged in `queries` with
    /// [`Source::RateLimitedFallback`] and in `notes`), or the author domain's existence was
    /// not asked and came from the cache (or did not matter: `sp` = `np`). Counted once. Not
    /// on the wire (`source` says it).
    #[serde(skip)]
    pub rate_limited_fallback: bool,
}

impl DmarcDiscovery {
    /// The applied record.
    pub fn applied_record(&self) -> Option<&Parsed<DmarcRecord>> {
        self.record.as_ref().and_then(|r| r.answer.dmarc_record())
    }

    /// The `source` field: the least fresh source among the answers used, as discovery ended.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The least fresh source among the answers used (stale beats miss beats hit);
    /// [`Source::RateLimitedFallback`] whenever something was not asked because of the limit.
    pub fn least_fresh_source(&self) -> Source {
        if self.rate_limited_fallback {
            return Source::RateLimitedFallback;
        }
        let rank = |s: &Source| match s {
            Source::RateLimitedFallback => 0,
            Source::Stale => 0,
            Source::Wildcard => 1,
            Source::Miss => 2,
            Source::Prefetched => 3,
            Source::Hit => 4,
        };
        self.queries
            .iter()
            .map(|(_, s)| *s)
            .min_by_key(rank)
            .unwrap_or(Source::Hit)
    }
}

/// How the organizational domain is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryMode {
    /// RFC 7489: the Public Suffix List.
    Psl,
    /// RFC 9989: the DNS tree walk (the default).
    #[serde(rename = "treewalk")]
    TreeWalk,
    /// The tree walk, cross-checked against the PSL in the notes.
    Both,
}

/// Where the applied record was found, and so why it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundAt {
    /// At the author domain itself: `p` applies.
    AuthorDomain,
    /// At the organizational domain: `sp` or `np` applies to the subdomain.
    OrganizationalDomain,
    /// At a public suffix domain (`psd=y`, RFC 9989).
    PublicSuffixDomain,
}

/// Which policy tag governs the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyTag {
    /// `p`: the author domain's own record.
    P,
    /// `sp`: an existing subdomain.
    Sp,
    /// `np`: a non-existent subdomain (NXDOMAIN for the author domain, RFC 9989 §3.2.13).
    Np,
}

str_enum! {
    /// A DKIM verification result (RFC 8601 §2.7.1).
    pub enum DkimResult {
        /// The signature verified.
        Pass => "pass",
        /// It did not.
        Fail => "fail",
        /// No signature.
        None => "none",
        /// Verified but rejected by local policy.
        Policy => "policy",
        /// Not evaluated to a conclusion.
        Neutral => "neutral",
        /// A transient error (e.g. the key lookup timed out).
        TempError => "temperror",
        /// A permanent error (e.g. a malformed signature).
        PermError => "permerror",
    }
}

str_enum! {
    /// The DMARC result (RFC 9989 §4.8.2 / RFC 8601).
    pub enum DmarcResult {
        /// An aligned identifier passed (and any must-pass requirement is met).
        Pass => "pass",
        /// It did not.
        Fail => "fail",
        /// No DMARC policy applies to the author domain.
        None => "none",
        /// Discovery failed for a transient reason.
        TempError => "temperror",
        /// Discovery failed for a permanent reason: the From domain is not a valid domain
        /// name (never "none": the message cannot escape its domain's policy that way).
        PermError => "permerror",
    }
}

/// The SPF result for the RFC 5321.MailFrom (or HELO) identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpfIdentity {
    /// The domain SPF evaluated.
    pub domain: String,
    /// Its result.
    pub result: SpfResult,
}

/// One DKIM signature's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimIdentity {
    /// The `d=` domain.
    pub domain: String,
    /// The `s=` selector.
    pub selector: String,
    /// Its result.
    pub result: DkimResult,
}

/// What the filter knows about a message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmarcInput {
    /// The RFC 5322.From domain.
    pub from_domain: String,
    /// The SPF result, if SPF was evaluated.
    pub spf: Option<SpfIdentity>,
    /// The DKIM results, one per signature.
    pub dkim: Vec<DkimIdentity>,
    /// DKIM2 forwarder domains the message passed through (extension).
    pub forwarders: Vec<String>,
    /// Seed for RFC 7489 `pct` sampling (deterministic); without one the draw is random.
    pub seed: Option<u64>,
}

/// One identifier's alignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aligned {
    /// The identifier's domain.
    pub domain: String,
    /// Its authentication result passed.
    pub passed: bool,
    /// It aligns with the author domain under the record's mode.
    pub aligned: bool,
    /// `strict` or `relaxed`.
    pub mode: String,
    /// The identifier's organizational domain, when relaxed alignment needed it.
    pub org_domain: Option<String>,
}

/// A policy candidate (the author's, or a forwarder's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// `author` or the forwarder's domain.
    pub source: String,
    /// The disposition it asks for.
    pub disposition: Disposition,
    /// Where its record was found.
    pub found_at: Option<String>,
    /// Which tag gave it (`p`, `sp`, `np`, `fp`).
    pub tag: String,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmarcVerdict {
    /// The DMARC result.
    pub result: DmarcResult,
    /// What to do with the message.
    pub disposition: Disposition,
    /// The author domain.
    pub from_domain: String,
    /// Where the applied record was found, and why it applies.
    pub found_at: Option<String>,
    /// Author, organizational or public suffix domain.
    pub reason: Option<FoundAt>,
    /// The author domain's organizational domain.
    pub org_domain: Option<String>,
    /// The tag that applied (`p`, `sp`, `np`).
    pub applied: Option<PolicyTag>,
    /// The SPF identifier's alignment.
    pub spf: Option<Aligned>,
    /// Each DKIM signature's alignment.
    pub dkim: Vec<Aligned>,
    /// Must-pass requirements (extension): (SPF required, DKIM required, met).
    pub must_pass: Option<(bool, bool, bool)>,
    /// RFC 9989 `t=y` lowered the disposition one level.
    pub test_mode_downgrade: bool,
    /// RFC 7489 `pct`: whether this message was in the sampled share (None when pct = 100).
    pub pct_sampled: Option<bool>,
    /// Policy candidates (the author's first, then each forwarder's).
    pub candidates: Vec<Candidate>,
    /// Index of the winning candidate.
    pub winner: Option<usize>,
    /// Human notes.
    pub notes: Vec<String>,
}
