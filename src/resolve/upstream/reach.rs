//! Whether the trust anchors can be reached through the upstream, for DKIM keys
//! (`[dnssec] mode = "validate"`).
//!
//! A DKIM key carries the DNSSEC status of its record, as OpenDKIM reports it ("key not
//! secure"), but DKIM does not need DNSSEC: most keys are in unsigned zones, and a key is used
//! whatever its status unless it is bogus. Validating a key needs the anchored zone's DNSKEY
//! RRset from the upstream. An upstream that cannot give it (an authoritative-only server, a
//! private root without the configured anchor, a split-horizon resolver answering only its own
//! zones) would make every key bogus, and every signature unverifiable, for a reason that is
//! not the key's. So before validating keys, the anchors' DNSKEY RRsets are asked through the
//! validator: when none of them validates, keys are answered `indeterminate` (asked without
//! validation, as with `mode = "off"`) and one WARN line says why; the finding is kept for
//! [`REACHED_FOR`] or [`UNREACHED_FOR`]. TLSA is never relaxed this way: DANE needs `secure`,
//! and a TLSA answer that cannot be validated stays an error.

use std::time::{Duration, Instant};

use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::{Name, RecordType};

use super::{DnssecMode, Upstream, guard};

/// How long an anchor found reachable is trusted to stay so.
pub const REACHED_FOR: Duration = Duration::from_secs(3600);
/// How long an anchor found unreachable is left before it is asked again.
pub const UNREACHED_FOR: Duration = Duration::from_secs(60);

/// The last finding: until when it holds, and whether an anchor was reached.
#[derive(Default)]
pub(super) struct Reach(tokio::sync::Mutex<Option<(Instant, bool)>>);

impl Upstream {
    /// Whether a DKIM key is asked with a DNSSEC status: with `upstream_ad` always (the status
    /// is the upstream's AD bit, free); with `validate` when an anchor's DNSKEY RRset validates
    /// through the upstream ([`Reach`]); with `off` never.
    pub async fn validates_dkim(&self) -> bool {
        match self.mode {
            DnssecMode::Off => false,
            DnssecMode::UpstreamAd => true,
            DnssecMode::Validate => self.anchors_reached().await,
        }
    }

    /// Whether an anchor's DNSKEY RRset validates, asked at most once per [`REACHED_FOR`] or
    /// [`UNREACHED_FOR`] (concurrent callers wait for one probe).
    async fn anchors_reached(&self) -> bool {
        let mut state = self.reach.0.lock().await;
        if let Some((until, reached)) = *state
            && Instant::now() < until
        {
            return reached;
        }
        let reached = self.probe_anchors().await;
        if !reached {
            tracing::warn!(
                retry_s = UNREACHED_FOR.as_secs(),
                "DNSSEC: no trust anchor's DNSKEY validates through the upstream; DKIM keys are answered without validation (dnssec indeterminate), TLSA stays validated"
            );
        }
        let hold = if reached { REACHED_FOR } else { UNREACHED_FOR };
        *state = Some((Instant::now() + hold, reached));
        reached
    }

    /// Asks each anchored zone's DNSKEY RRset through the validator (its budget and deadline
    /// as for any validating question) until one comes back secure.
    async fn probe_anchors(&self) -> bool {
        let owners = match self.validating_cfg.anchor_owners.as_slice() {
            [] => vec![Name::root()],
            owners => owners.to_vec(),
        };
        for owner in owners {
            let lookup = tokio::time::timeout(
                self.validating_deadline,
                self.hickory_lookup(true, owner.clone(), RecordType::DNSKEY),
            );
            let (result, spent) = guard::with_budget(lookup).await;
            let secure = matches!(&result, Ok(Ok(l)) if l.answers().iter().any(|r| {
                r.record_type() == RecordType::DNSKEY && r.proof == Proof::Secure
            }));
            tracing::debug!(%owner, secure, sent = spent.sent, "DNSSEC: trust anchor probe");
            if secure {
                return true;
            }
        }
        false
    }
}
