//! Abuse controls: a governor rate limit on upstream queries per organizational domain, and a
//! watch for wildcard domains (one record answering for every subdomain) that would otherwise
//! let random subdomains flood the cache and upstream.
//!
//! Both are bounded: the limiter's key map is trimmed with `retain_recent()` on a timer, and the
//! wildcard windows live in a size-bounded moka cache with a bounded name set each.

use std::collections::{HashMap, HashSet};
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
}

impl Limiter {
    /// A limiter with `cfg`'s quota.
    pub fn new(cfg: &LimitConfig) -> Limiter {
        let per_second = NonZeroU32::new(cfg.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(cfg.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Limiter {
            inner: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
        }
    }

    /// Whether one more upstream query for `org` is allowed now.
    pub fn allow(&self, org: &str) -> bool {
        self.inner.check_key(&org.to_owned()).is_ok()
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

struct Window {
    started: Instant,
    names: HashSet<u64>,
    fingerprints: HashMap<u64, (usize, Arc<Answer>)>,
    marked_until: Option<Instant>,
    sample: Option<Arc<Answer>>,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            started: now,
            names: HashSet::new(),
            fingerprints: HashMap::new(),
            marked_until: None,
            sample: None,
        }
    }
}

/// Watches, per (organization, kind), how many distinct subdomains answered with
/// byte-identical records.
pub struct WildcardWatch {
    windows: moka::sync::Cache<(Arc<str>, Kind), Arc<Mutex<Window>>>,
    cfg: LimitConfig,
}

/// What an observation changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Nothing notable.
    Counted,
    /// This observation marked the organization wildcard.
    Marked,
}

impl WildcardWatch {
    /// A watch with `cfg`'s thresholds.
    pub fn new(cfg: &LimitConfig) -> WildcardWatch {
        WildcardWatch {
            windows: moka::sync::Cache::builder()
                .max_capacity(cfg.wildcard_max_orgs)
                .build(),
            cfg: cfg.clone(),
        }
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
        let w = self.windows.get_with((Arc::from(org), kind), || {
            Arc::new(Mutex::new(Window::new(now)))
        });
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        if w.marked_until.is_some_and(|t| now < t) {
            return Observed::Counted;
        }
        if now.saturating_duration_since(w.started) > self.cfg.wildcard_window
            || w.marked_until.is_some()
        {
            *w = Window::new(now);
        }
        // Bounded: past a few times the threshold the verdict is already decided.
        if w.names.len() >= self.cfg.wildcard_min_names * 4 {
            return Observed::Counted;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        subject.hash(&mut h);
        if !w.names.insert(h.finish()) {
            return Observed::Counted;
        }
        let slot = w
            .fingerprints
            .entry(answer.fingerprint)
            .or_insert_with(|| (0, answer.clone()));
        slot.0 += 1;
        let total = w.names.len();
        if total < self.cfg.wildcard_min_names {
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
            w.marked_until = Some(now + self.cfg.wildcard_mark);
            w.sample = Some(sample);
            return Observed::Marked;
        }
        Observed::Counted
    }

    /// The sample answer for a subdomain of `org` when `org` is marked wildcard for `kind`.
    pub fn synthesize(&self, org: &str, kind: Kind, now: Instant) -> Option<Arc<Answer>> {
        let w = self.windows.get(&(Arc::from(org), kind))?;
        let w = w.lock().unwrap_or_else(|p| p.into_inner());
        match (w.marked_until, &w.sample) {
            (Some(t), Some(s)) if now < t => Some(s.clone()),
            _ => None,
        }
    }
}
