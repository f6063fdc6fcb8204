//! Abuse controls: a governor rate limit on upstream queries per organizational domain, and a
//! watch for wildcard domains (one record answering for every subdomain) that would otherwise
//! let random subdomains flood the cache and upstream.
//!
//! Both are bounded: the limiter's key map is trimmed with `retain_recent()` on a timer, and the
//! wildcard windows live in a size-bounded moka cache with a bounded name set each.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::answer::{Answer, Kind};

/// Abuse-control settings.
#[derive(Clone, Debug)]
pub struct LimitConfig {
    /// Upstream queries per second per organizational domain.
    pub per_second: u32,
    /// Burst allowance.
    pub burst: u32,
    /// A wildcard needs at least this many distinct subdomain names in one window.
    pub wildcard_min_names: usize,
    /// ... of which at least this fraction carry byte-identical records.
    pub wildcard_identical: f64,
    /// The observation window.
    pub wildcard_window: Duration,
    /// How long a wildcard mark lasts.
    pub wildcard_mark: Duration,
    /// At most this many organizations are watched at once.
    pub wildcard_max_orgs: u64,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            per_second: 50,
            burst: 100,
            wildcard_min_names: 100,
            wildcard_identical: 0.95,
            wildcard_window: Duration::from_secs(600),
            wildcard_mark: Duration::from_secs(3600),
            wildcard_max_orgs: 10_000,
        }
    }
}

/// The per-organization upstream query limiter.
pub struct Limiter {
    inner: DefaultKeyedRateLimiter<String>,
    /// One token's refill time.
    interval: Duration,
}

impl Limiter {
    /// A limiter with `cfg`'s quota.
    pub fn new(cfg: &LimitConfig) -> Limiter {
        let per_second = NonZeroU32::new(cfg.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(cfg.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Limiter {
            inner: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            interval: Duration::from_secs(1) / per_second.get(),
        }
    }

    /// Whether one more upstream query for `org` is allowed now.
    pub fn allow(&self, org: &str) -> bool {
        self.inner.check_key(&org.to_owned()).is_ok()
    }

    /// Waits up to `max` for one query of `org`'s budget (polling once per refill interval,
    /// so at most `max / interval + 1` tries); whether it was granted.
    pub async fn wait(&self, org: &str, max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            if self.allow(org) {
                return true;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            tokio::time::sleep(self.interval.min(left)).await;
        }
    }

    /// Forgets organizations whose budget is full again (call periodically).
    pub fn retain_recent(&self) {
        self.inner.retain_recent();
    }

    /// How many organizations are tracked.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no organization is tracked.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// How many subdomains a window remembers, as a multiple of the marking threshold; past it the
/// verdict is decided and further names are not recorded.
const NAMES_PER_THRESHOLD: usize = 4;

/// How long an unanswered probe keeps other observations from starting another.
const PROBE_HOLD: Duration = Duration::from_secs(30);

struct Window {
    started: Instant,
    /// Each distinct subdomain seen (hashed) with its answer's fingerprint: a name whose own
    /// answer differed from the sample is never synthesized.
    names: HashMap<u64, u64>,
    fingerprints: HashMap<u64, (usize, Arc<Answer>)>,
    marked_until: Option<Instant>,
    sample: Option<Arc<Answer>>,
    /// A random-label probe is in flight since then (a probe never holds the window longer
    /// than [`PROBE_HOLD`], even if its task never reports).
    probing: Option<Instant>,
    /// The probe answered differently: not a DNS wildcard, no probe again in this window.
    refuted: bool,
    /// Probes started in this window.
    probes: u32,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            started: now,
            names: HashMap::new(),
            fingerprints: HashMap::new(),
            marked_until: None,
            sample: None,
            probing: None,
            refuted: false,
            probes: 0,
        }
    }
}

fn name_hash(subject: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    subject.hash(&mut h);
    h.finish()
}

/// Whether two answers are the same as far as a wildcard is concerned: the same response code
/// and byte-identical records.
pub fn same_answer(a: &Answer, b: &Answer) -> bool {
    a.rcode == b.rcode && a.fingerprint == b.fingerprint && a.is_positive() == b.is_positive()
}

/// Watches, per (organization, kind), how many distinct subdomains answered with
/// byte-identical records; such an organization becomes a *candidate*, and is marked wildcard
/// only when a random label under it (a probe the resolver asks) answers the same record: the
/// evidence of a real DNS wildcard (RFC 4592). While marked, a sample of names is still asked
/// upstream ([`WildcardWatch::claim_verification`]); a different answer ends the mark.
pub struct WildcardWatch {
    windows: moka::sync::Cache<(Arc<str>, Kind), Arc<Mutex<Window>>>,
    verify: DefaultKeyedRateLimiter<(Arc<str>, Kind)>,
    cfg: LimitConfig,
}

/// What an observation changed.
#[derive(Clone, Debug)]
pub enum Observed {
    /// Nothing notable.
    Counted,
    /// The threshold is reached with this sample: probe a random label before marking (then
    /// call [`WildcardWatch::probed`]). `first`: no probe was tried in this window yet.
    Candidate {
        /// The record most subdomains answered.
        sample: Arc<Answer>,
        /// The window's first probe.
        first: bool,
    },
}

impl WildcardWatch {
    /// A watch with `cfg`'s thresholds.
    pub fn new(cfg: &LimitConfig) -> WildcardWatch {
        // Verification under a mark: a tenth of the organization's rate (at least 1/s), so the
        // sample never starves the organization's other questions.
        let per_second = NonZeroU32::new((cfg.per_second / 10).max(1)).unwrap_or(NonZeroU32::MIN);
        WildcardWatch {
            windows: moka::sync::Cache::builder()
                .max_capacity(cfg.wildcard_max_orgs)
                .build(),
            verify: RateLimiter::keyed(Quota::per_second(per_second)),
            cfg: cfg.clone(),
        }
    }

    fn window(&self, org: &str, kind: Kind, now: Instant) -> Arc<Mutex<Window>> {
        self.windows.get_with((Arc::from(org), kind), || {
            Arc::new(Mutex::new(Window::new(now)))
        })
    }

    /// Records a positive upstream answer for a subdomain `subject` of `org`.
    pub fn observe(
        &self,
        org: &str,
        kind: Kind,
        subject: &str,
        answer: &Arc<Answer>,
        now: Instant,
    ) -> Observed {
        let w = self.window(org, kind, now);
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        let probing = w
            .probing
            .is_some_and(|t| now.saturating_duration_since(t) < PROBE_HOLD);
        if w.marked_until.is_some_and(|t| now < t) || probing {
            return Observed::Counted;
        }
        if now.saturating_duration_since(w.started) > self.cfg.wildcard_window
            || w.marked_until.is_some()
        {
            *w = Window::new(now);
        }
        // Bounded: past a few times the threshold the verdict is already decided.
        if w.names.len() >= self.cfg.wildcard_min_names * NAMES_PER_THRESHOLD {
            return Observed::Counted;
        }
        if w.names
            .insert(name_hash(subject), answer.fingerprint)
            .is_some()
        {
            return Observed::Counted;
        }
        let slot = w
            .fingerprints
            .entry(answer.fingerprint)
            .or_insert_with(|| (0, answer.clone()));
        slot.0 += 1;
        let total = w.names.len();
        if total < self.cfg.wildcard_min_names || w.refuted {
            return Observed::Counted;
        }
        let best = w
            .fingerprints
            .values()
            .max_by_key(|(n, _)| *n)
            .map(|(n, a)| (*n, a.clone()));
        if let Some((n, sample)) = best
            && n as f64 >= total as f64 * self.cfg.wildcard_identical
        {
            w.probing = Some(now);
            w.probes += 1;
            return Observed::Candidate {
                sample,
                first: w.probes == 1,
            };
        }
        Observed::Counted
    }

    /// The probe's outcome for a candidate: `Some(answer)` from the random label, or `None`
    /// when it could not be asked (budget, upstream failure: a later name may try again).
    /// Marks the organization when the probe answered the sample's record; returns whether it
    /// did.
    pub fn probed(
        &self,
        org: &str,
        kind: Kind,
        sample: &Arc<Answer>,
        probe: Option<&Answer>,
        now: Instant,
    ) -> bool {
        let w = self.window(org, kind, now);
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        w.probing = None;
        match probe {
            Some(p) if same_answer(p, sample) => {
                w.marked_until = Some(now + self.cfg.wildcard_mark);
                w.sample = Some(sample.clone());
                true
            }
            Some(_) => {
                w.refuted = true;
                false
            }
            None => false,
        }
    }

    /// The sample answer for a subdomain `subject` of `org` when `org` is marked wildcard for
    /// `kind`, unless `subject` was seen answering something else.
    pub fn synthesize(
        &self,
        org: &str,
        kind: Kind,
        subject: &str,
        now: Instant,
    ) -> Option<Arc<Answer>> {
        let w = self.windows.get(&(Arc::from(org), kind))?;
        let w = w.lock().unwrap_or_else(|p| p.into_inner());
        match (w.marked_until, &w.sample) {
            (Some(t), Some(s)) if now < t => match w.names.get(&name_hash(subject)) {
                Some(fp) if *fp != s.fingerprint => None,
                _ => Some(s.clone()),
            },
            _ => None,
        }
    }

    /// Whether this synthesizable question should be asked upstream instead, to verify the
    /// mark (a tenth of the organization's rate, at least one a second).
    pub fn claim_verification(&self, org: &str, kind: Kind) -> bool {
        self.verify.check_key(&(Arc::from(org), kind)).is_ok()
    }

    /// A verified name answered differently from the sample: the mark ends, and the window
    /// starts again (a new mark needs new evidence and a new probe).
    pub fn unmark(&self, org: &str, kind: Kind, now: Instant) {
        if let Some(w) = self.windows.get(&(Arc::from(org), kind)) {
            let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
            *w = Window::new(now);
        }
    }

    /// Forgets verification budgets that are full again (call periodically).
    pub fn retain_recent(&self) {
        self.verify.retain_recent();
    }
}
